//! A relay that breaks and resumes loses nothing (docs/relay.md "When a relay breaks"): a
//! process migrated from h1 to h2 writes a numbered stream to its relayed stdout, reads a
//! numbered stream from its relayed stdin and echoes a TCP connection that was established
//! before the migration, while h1's link is cut (long enough for both agents to see the relay
//! stream break) and restored several times. Every line and every byte arrives exactly once,
//! in order, both ways, those in flight at each cut included.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::hosts::Hosts;
use ferry_tests::{ferry_bin, setup, status_field};
use nix::sched::{CloneFlags, setns};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The job: listens, accepts one client and echoes it (a thread), answers each stdin line
/// "in N" with "got N" (a thread), and writes "out N" every 2 ms; at the end of its stdin it
/// writes "last N" (the number of "out" lines) and exits with 3. Each line is one `write`.
const JOB: &str = r#"
import os, socket, sys, threading, time
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(1)
os.write(1, b"port %d\n" % l.getsockname()[1])
c, _ = l.accept()
def echo():
    while True:
        d = c.recv(65536)
        if not d:
            return
        c.sendall(d)
threading.Thread(target=echo, daemon=True).start()
done = threading.Event()
def inputs():
    for line in sys.stdin.buffer:
        os.write(1, b"got " + line[3:])
    done.set()
threading.Thread(target=inputs, daemon=True).start()
os.write(1, b"ready\n")
i = 0
while not done.is_set():
    os.write(1, b"out %d\n" % i)
    i += 1
    time.sleep(0.002)
os.write(1, b"last %d\n" % i)
sys.exit(3)
"#;

/// Runs `f` on a thread inside host `n`'s network namespace.
fn in_host_net<T: Send + 'static>(
    hosts: &Hosts,
    n: u32,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", hosts.init_pid(n)))
        .context("open the host's network namespace")?;
    thread::spawn(move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).context("setns into the host")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in the host's namespace panicked"))?
}

fn lines_of(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn ns_pid(pid: i32) -> Result<i32> {
    status_field(pid, "NSpid")
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .context("no NSpid")
}

/// What the test saw of the job's stdout, checked as it arrives.
#[derive(Default)]
struct Seen {
    /// The next "out N" expected.
    out: u64,
    /// The next "got N" expected.
    got: u64,
    /// "last N", once seen.
    last: Option<u64>,
    /// The first line out of order, lost or repeated, with the lines before it.
    wrong: Option<String>,
    /// The last few lines, for the report of a wrong one.
    recent: std::collections::VecDeque<String>,
}

impl Seen {
    fn line(&mut self, l: &str) {
        let num = |s: &str| s.parse::<u64>().ok();
        let (what, want) = if let Some(n) = l.strip_prefix("out ") {
            let want = self.out;
            self.out = num(n).map_or(want, |n| n + 1);
            (num(n), want)
        } else if let Some(n) = l.strip_prefix("got ") {
            let want = self.got;
            self.got = num(n).map_or(want, |n| n + 1);
            (num(n), want)
        } else if let Some(n) = l.strip_prefix("last ") {
            self.last = num(n);
            (Some(0), 0)
        } else {
            (None, u64::MAX)
        };
        if what != Some(want) && self.wrong.is_none() {
            self.wrong = Some(format!(
                "{l:?} where the next was number {want} (after {:?})",
                self.recent
            ));
        }
        if self.recent.len() == 6 {
            self.recent.pop_front();
        }
        self.recent.push_back(l.to_string());
    }
}

#[test]
fn a_relay_cut_and_resumed_loses_nothing_either_way() -> Result<()> {
    let Some(_ctx) = setup("relay-resume") else {
        return Ok(());
    };
    let mut hosts = Hosts::up(2).context("hosts up")?;
    let r = scenario(&mut hosts, Break::Cut);
    if r.is_err() {
        eprintln!(
            "--- ferryd on h1:\n{}\n--- ferryd on h2:\n{}",
            hosts.ferryd_log(1),
            hosts.ferryd_log(2)
        );
    }
    r
}

/// An origin agent killed (SIGKILL) and started again in the middle of the transfer, three
/// times: its relay's ledger outlives it (the journal in its state directory), so the new
/// agent resumes in the same session and nothing in flight is lost or repeated. (A stream
/// broken by a killed agent ends at once, before the relay is stopped: a destination task
/// whose send failed used to forget its channel's ledger then, and the origin skipped what it
/// had written of the channel's new numbering: a chunk of stdout lost.)
#[test]
fn an_origin_agent_killed_mid_transfer_loses_and_repeats_nothing() -> Result<()> {
    let Some(_ctx) = setup("relay-resume-restart") else {
        return Ok(());
    };
    let mut hosts = Hosts::up(2).context("hosts up")?;
    let r = scenario(&mut hosts, Break::RestartOrigin);
    if r.is_err() {
        eprintln!(
            "--- ferryd on h1:\n{}\n--- ferryd on h2:\n{}",
            hosts.ferryd_log(1),
            hosts.ferryd_log(2)
        );
    }
    r
}

/// How the relay is broken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Break {
    /// h1's link is cut long enough for both agents to see the stream break.
    Cut,
    /// h1's ferryd is killed and started again.
    RestartOrigin,
}

fn scenario(hosts: &mut Hosts, how: Break) -> Result<()> {
    let mut child = hosts
        .command(1, "/usr/bin/python3")
        .args(["-c", JOB])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start the job in h1")?;
    let stdin = child.stdin.take().context("stdin")?;
    let out = lines_of(child.stdout.take().context("stdout")?);
    let outer = Hosts::inner_pid(&child)?;
    let pid = ns_pid(outer)?;
    let mut child = Reap(child);
    let first = out.recv_timeout(TIMEOUT).context("no port line")?;
    let port: u16 = first
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("not a port line: {first:?}"))?;
    let conn = in_host_net(hosts, 1, move || {
        Ok(TcpStream::connect(("127.0.0.1", port))?)
    })?;
    ensure!(out.recv_timeout(TIMEOUT)? == "ready", "no ready line");

    // The stdout lines, checked as they come; stdin lines and TCP bytes sent all along.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    thread::spawn(move || {
        while let Ok(l) = out.recv() {
            seen2.lock().unwrap().line(&l);
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (stop_in, mut stdin_w) = (stop.clone(), stdin);
    let inputs = thread::spawn(move || -> Result<(u64, std::process::ChildStdin)> {
        let mut n = 0;
        while !stop_in.load(Ordering::SeqCst) {
            stdin_w.write_all(format!("in {n}\n").as_bytes())?;
            n += 1;
            thread::sleep(Duration::from_millis(5));
        }
        Ok((n, stdin_w))
    });
    let (stop_tcp, mut tcp_w) = (stop.clone(), conn.try_clone()?);
    let sender = thread::spawn(move || -> Result<Vec<u8>> {
        let mut sent = Vec::new();
        let mut n = 0u64;
        while !stop_tcp.load(Ordering::SeqCst) {
            let msg = format!("<{n}>");
            tcp_w.write_all(msg.as_bytes())?;
            sent.extend_from_slice(msg.as_bytes());
            n += 1;
            thread::sleep(Duration::from_millis(3));
        }
        Ok(sent)
    });
    let echoed = Arc::new(Mutex::new(Vec::new()));
    let (echoed2, mut tcp_r) = (echoed.clone(), conn.try_clone()?);
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(k) = tcp_r.read(&mut buf) {
            if k == 0 {
                return;
            }
            echoed2.lock().unwrap().extend_from_slice(&buf[..k]);
        }
    });

    thread::sleep(Duration::from_millis(300));
    let migrate = Command::new(ferry_bin())
        .args(["migrate", &pid.to_string(), "--to", "h2"])
        .env("FERRY_SOCKET", hosts.socket(1))
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        migrate.status.success(),
        "ferry migrate failed: {}{}",
        String::from_utf8_lossy(&migrate.stdout),
        String::from_utf8_lossy(&migrate.stderr)
    );
    println!("{}", String::from_utf8_lossy(&migrate.stdout).trim());

    // Cut h1's link long enough for both agents to see the relay stream break (HTTP/2
    // keepalive: ~4 s), bring it back, wait for the stream to flow again; three times.
    let flowing = |what: &str| -> Result<()> {
        let at = seen.lock().unwrap().out;
        let start = Instant::now();
        while seen.lock().unwrap().out < at + 200 {
            ensure!(start.elapsed() < TIMEOUT, "the relay did not flow {what}");
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    flowing("after the migration")?;
    for cut in 1..=3 {
        match how {
            Break::Cut => {
                hosts.link_down(1).context("cut h1's link")?;
                thread::sleep(Duration::from_secs(7));
                hosts.link_up(1).context("bring h1's link back")?;
            }
            Break::RestartOrigin => {
                hosts.kill_ferryd(1).context("kill h1's ferryd")?;
                thread::sleep(Duration::from_millis(500));
                hosts
                    .start_ferryd(1, &[])
                    .context("start h1's ferryd again")?;
            }
        }
        flowing(&format!("after cut {cut}"))?;
        let s = seen.lock().unwrap();
        println!(
            "after cut {cut}: {} out lines, {} got lines, {} tcp bytes echoed",
            s.out,
            s.got,
            echoed.lock().unwrap().len()
        );
        if let Some(w) = &s.wrong {
            bail!("after cut {cut}: {w}");
        }
    }

    // Each cut broke the relay stream (the destination attached a new one in the same
    // session), or this test proves nothing.
    let resumed = hosts
        .ferryd_log(2)
        .lines()
        .filter(|l| l.contains("relay started") && l.contains("resumed=true"))
        .count();
    ensure!(
        resumed >= 3,
        "the relay stream was attached again {resumed} times for 3 cuts"
    );

    // The end: every stdin line answered, every TCP byte echoed, then the end of stdin ends
    // the job, whose "last" line says how many "out" lines there were.
    stop.store(true, Ordering::SeqCst);
    let (n_in, stdin) = inputs
        .join()
        .map_err(|_| anyhow::anyhow!("stdin writer"))??;
    let sent = sender.join().map_err(|_| anyhow::anyhow!("tcp sender"))??;
    let start = Instant::now();
    loop {
        let (got, echo_len) = (seen.lock().unwrap().got, echoed.lock().unwrap().len());
        if got >= n_in && echo_len >= sent.len() {
            break;
        }
        ensure!(
            start.elapsed() < TIMEOUT,
            "{got} of {n_in} stdin lines answered, {echo_len} of {} tcp bytes echoed; first wrong: {:?}",
            sent.len(),
            seen.lock().unwrap().wrong
        );
        thread::sleep(Duration::from_millis(50));
    }
    let echo = echoed.lock().unwrap().clone();
    if echo != sent {
        let at = echo
            .iter()
            .zip(&sent)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let from = at.saturating_sub(20);
        bail!(
            "tcp bytes lost, repeated or reordered at byte {at}: sent …{}…, echoed …{}…",
            String::from_utf8_lossy(&sent[from..(at + 40).min(sent.len())]),
            String::from_utf8_lossy(&echo[from..(at + 40).min(echo.len())])
        );
    }
    drop(stdin);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait()? {
            break s;
        }
        ensure!(start.elapsed() < TIMEOUT, "the stub did not exit");
        thread::sleep(Duration::from_millis(50));
    };
    thread::sleep(Duration::from_millis(300));
    let s = seen.lock().unwrap();
    println!(
        "{} out lines, {} stdin lines, {} tcp bytes: all arrived once, in order",
        s.out,
        n_in,
        sent.len()
    );
    if let Some(w) = &s.wrong {
        bail!("{w}");
    }
    ensure!(s.got == n_in, "{} of {n_in} stdin lines answered", s.got);
    ensure!(
        s.last == Some(s.out),
        "the job wrote {:?} out lines, {} arrived",
        s.last,
        s.out
    );
    assert_eq!(status.code(), Some(3), "the parent saw {status}");
    Ok(())
}

/// Kills the job's parent (nsenter) if the test failed before it ended.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
