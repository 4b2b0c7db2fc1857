//! End to end through two agents: a process with stdio pipes, an established TCP connection, a
//! listening socket and a UDP socket is migrated from h1 to h2 with `ferry migrate`; on h1 its
//! PID becomes the stub, and everything the process's peers see keeps working: the connected
//! client loses no byte (not even those sent while the process was frozen), new connections to
//! the original port reach it, UDP is echoed from the original port, stdin and stdout still
//! flow, a signal sent to the stub reaches the process, and the parent's `wait` sees the
//! process's real exit status.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::hosts::Hosts;
use ferry_tests::{ferry_bin, setup, status_field, workload};
use nix::sched::{CloneFlags, setns};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `f` on a thread inside host `n`'s network namespace: the sockets it makes live there.
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

/// Lines of the victim's stdout, as they arrive.
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

/// Waits for a line of the victim's stdout that satisfies `want`, skipping others.
fn expect_line(
    rx: &mpsc::Receiver<String>,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> Result<String> {
    let start = Instant::now();
    loop {
        let left = TIMEOUT
            .checked_sub(start.elapsed())
            .with_context(|| format!("no line {what} within {TIMEOUT:?}"))?;
        let line = rx
            .recv_timeout(left)
            .with_context(|| format!("no line {what}"))?;
        if want(&line) {
            return Ok(line);
        }
    }
}

/// Sends `msg` on `conn` and reads until `reply` has arrived whole.
fn round_trip(conn: &mut TcpStream, msg: &str, reply: &str) -> Result<()> {
    conn.write_all(msg.as_bytes())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while got.len() < reply.len() {
        ensure!(start.elapsed() < TIMEOUT, "no reply {reply:?}, got {got:?}");
        let k = conn.read(&mut buf)?;
        ensure!(k > 0, "the connection closed; got {got:?}");
        got.extend_from_slice(&buf[..k]);
    }
    ensure!(
        got == reply.as_bytes(),
        "expected {reply:?}, got {:?}",
        String::from_utf8_lossy(&got)
    );
    Ok(())
}

/// `migrate`, the symlink to `ferry` that `cargo xtask` makes (made here when missing).
fn migrate_bin() -> Result<std::path::PathBuf> {
    let link = ferry_bin().with_file_name("migrate");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("ferry", &link).context("make the migrate symlink")?;
    }
    Ok(link)
}

fn ns_pid(pid: i32) -> Result<i32> {
    status_field(pid, "NSpid")
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .context("no NSpid")
}

/// Waits (at most [`TIMEOUT`]) for the parent's view of the stub's end.
fn wait_child(child: &mut std::process::Child) -> Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        ensure!(start.elapsed() < TIMEOUT, "the stub did not exit");
        thread::sleep(Duration::from_millis(20));
    }
}

/// `ferry migrate PID --to TO`, asked of host `from`'s agent.
fn ferry_migrate(hosts: &Hosts, from: u32, pid: i32, to: &str) -> Result<std::process::Output> {
    Ok(Command::new(ferry_bin())
        .args(["migrate", &pid.to_string(), "--to", to])
        .env("FERRY_SOCKET", hosts.socket(from))
        .stdin(Stdio::null())
        .output()?)
}

#[test]
fn clients_parent_and_terminal_keep_working_through_a_migration() -> Result<()> {
    let Some(_ctx) = setup("migrate-relay") else {
        return Ok(());
    };
    let hosts = Hosts::up(2).context("hosts up")?;

    // The server of the victim's established connection, on h1's loopback.
    let listener = in_host_net(&hosts, 1, || Ok(TcpListener::bind("127.0.0.1:0")?))?;
    let port = listener.local_addr()?.port();
    let bin = workload("relay_echo");
    let mut child = hosts
        .command(1, &bin)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the victim in h1")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let out = lines_of(child.stdout.take().context("stdout")?);
    let outer = Hosts::inner_pid(&child)?;
    let pid = ns_pid(outer)?;
    let lport: u16 = expect_line(&out, "listen", |l| l.starts_with("listen "))?[7..].parse()?;
    let uport: u16 = expect_line(&out, "udp", |l| l.starts_with("udp "))?[4..].parse()?;
    expect_line(&out, "ready", |l| l == "ready")?;
    let (mut conn, _) = listener.accept()?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    round_trip(&mut conn, "before", "tcp: before")?;
    let mut client = in_host_net(&hosts, 1, move || {
        Ok(TcpStream::connect(("127.0.0.1", lport))?)
    })?;
    client.set_read_timeout(Some(TIMEOUT))?;
    round_trip(&mut client, "hello", "acc: hello")?;

    // While the migration runs, the connected peer keeps sending: every byte must come back
    // exactly once, in order, those sent while the process was frozen included.
    let mut writer = conn.try_clone()?;
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let sender = thread::spawn(move || -> Result<String> {
        let mut sent = String::new();
        for i in 0.. {
            if stop_rx.try_recv().is_ok() {
                break;
            }
            let msg = format!("<{i}>");
            writer.write_all(msg.as_bytes())?;
            sent.push_str(&msg);
            thread::sleep(Duration::from_millis(3));
        }
        Ok(sent)
    });
    thread::sleep(Duration::from_millis(100));
    // As the user types it: the `migrate` command (ferry under another name).
    let migrate = Command::new(migrate_bin()?)
        .args([&pid.to_string(), "--to", "h2"])
        .env("FERRY_SOCKET", hosts.socket(1))
        .stdin(Stdio::null())
        .output()?;
    thread::sleep(Duration::from_millis(200));
    stop_tx.send(()).ok();
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    ensure!(
        migrate.status.success(),
        "ferry migrate failed: {}{}",
        String::from_utf8_lossy(&migrate.stdout),
        String::from_utf8_lossy(&migrate.stderr)
    );
    println!("{}", String::from_utf8_lossy(&migrate.stdout).trim());

    // The echoes of everything sent: "tcp: " before each chunk the process read.
    let mut echoed = String::new();
    let mut buf = [0u8; 65536];
    let start = Instant::now();
    while echoed.replace("tcp: ", "").len() < sent.len() {
        if start.elapsed() > TIMEOUT {
            bail!(
                "after the migration only {} of {} bytes came back",
                echoed.replace("tcp: ", "").len(),
                sent.len()
            );
        }
        let k = conn.read(&mut buf)?;
        ensure!(k > 0, "the connection closed during the migration");
        echoed.push_str(&String::from_utf8_lossy(&buf[..k]));
    }
    assert_eq!(
        echoed.replace("tcp: ", ""),
        sent,
        "bytes lost, duplicated or reordered"
    );

    // On h1 the PID is the stub now, still our (nsenter's) child; the process runs on h2.
    let exe = std::fs::read_link(format!("/proc/{outer}/exe"))?;
    assert!(
        exe.ends_with("ferry-stub"),
        "pid {outer} runs {}",
        exe.display()
    );
    let on_h2 = hosts.run_ok(2, &["pgrep", "-x", "relay_echo"])?;
    assert_eq!(
        on_h2.split_whitespace().count(),
        1,
        "relay_echo on h2: {on_h2:?}"
    );
    let on_h1 = hosts.run(1, &["pgrep", "-x", "relay_echo"])?;
    assert!(on_h1.stdout.is_empty(), "still on h1: {:?}", on_h1.stdout);

    // Everything still works from the peers' side.
    round_trip(&mut conn, "after", "tcp: after")?;
    round_trip(&mut client, "again", "acc: again")?;
    let mut second = in_host_net(&hosts, 1, move || {
        Ok(TcpStream::connect(("127.0.0.1", lport))?)
    })?;
    second.set_read_timeout(Some(TIMEOUT))?;
    round_trip(&mut second, "new", "acc: new")?;
    let udp = in_host_net(&hosts, 1, || Ok(UdpSocket::bind("127.0.0.1:0")?))?;
    udp.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reply = None;
    for _ in 0..5 {
        udp.send_to(b"ping", ("127.0.0.1", uport))?;
        let mut b = [0u8; 64];
        if let Ok((k, from)) = udp.recv_from(&mut b) {
            reply = Some((b[..k].to_vec(), from.port()));
            break;
        }
    }
    let (data, from) = reply.context("no UDP echo after the migration")?;
    assert_eq!(data, b"udp: ping");
    assert_eq!(from, uport, "the UDP echo must come from the original port");

    // Stdin and stdout are the parent's pipes still; a signal to the stub reaches the process.
    stdin.write_all(b"through the stub\n")?;
    expect_line(&out, "echo", |l| l == "echo: through the stub")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(outer),
        nix::sys::signal::Signal::SIGUSR1,
    )?;
    expect_line(&out, "usr1", |l| l == "usr1")?;

    // The process exits 7 on h2; the parent (nsenter, which passes it on) sees 7 on h1.
    stdin.write_all(b"exit 7\n")?;
    let status = wait_child(&mut child)?;
    assert_eq!(status.code(), Some(7), "the parent saw {status}");
    Ok(())
}

/// Reads the pty master until `want` appears in what came out.
fn read_until(master: &mut std::fs::File, seen: &mut String, want: &str) -> Result<()> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        ensure!(
            start.elapsed() < TIMEOUT,
            "the terminal never showed {want:?}; it showed {seen:?}"
        );
        match master.read(&mut buf) {
            Ok(0) => bail!("the terminal closed; it showed {seen:?}"),
            Ok(k) => seen.push_str(&String::from_utf8_lossy(&buf[..k])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[test]
fn a_process_in_a_terminal_keeps_its_terminal_through_a_migration() -> Result<()> {
    let Some(_ctx) = setup("migrate-relay-tty") else {
        return Ok(());
    };
    let hosts = Hosts::up(2).context("hosts up")?;
    let listener = in_host_net(&hosts, 1, || Ok(TcpListener::bind("127.0.0.1:0")?))?;
    let port = listener.local_addr()?.port();
    // The user's terminal: we hold the master, the process gets the slave as fds 0-2.
    let pty = nix::pty::openpty(None, None)?;
    let mut master = std::fs::File::from(pty.master);
    // openpty does not set close-on-exec: the process must not inherit the master.
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let slave = std::fs::File::from(pty.slave);
    nix::fcntl::fcntl(
        &slave,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    let mut child = hosts
        .command(1, workload("relay_echo"))
        .arg(port.to_string())
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave)
        .spawn()
        .context("start the victim in h1")?;
    let outer = Hosts::inner_pid(&child)?;
    let pid = ns_pid(outer)?;
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "ready")?;
    let _conn = listener.accept()?;

    migrate_via(&hosts, 1, pid, "h2")?;
    let exe = std::fs::read_link(format!("/proc/{outer}/exe"))?;
    assert!(
        exe.ends_with("ferry-stub"),
        "pid {outer} runs {}",
        exe.display()
    );

    // Keystrokes reach the process on h2, and what it prints appears on this terminal.
    master.write_all(b"typed on h1\n")?;
    read_until(&mut master, &mut seen, "echo: typed on h1")?;
    // A window-size change (the kernel signals the terminal's foreground group; here we
    // signal the stub as it would) reaches the process with the new size.
    ferry_agent::sys::set_window_size(master.as_fd(), 33, 111)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(outer),
        nix::sys::signal::Signal::SIGWINCH,
    )?;
    read_until(&mut master, &mut seen, "winch 33x111 tty=1")?;

    master.write_all(b"exit 3\n")?;
    let status = wait_child(&mut child)?;
    assert_eq!(status.code(), Some(3), "the parent saw {status}");
    Ok(())
}

/// The PID on the destination from `ferry migrate`'s summary ("… as pid N …").
fn copy_pid(stdout: &[u8]) -> Result<i32> {
    let s = String::from_utf8_lossy(stdout);
    s.split(" as pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no copy pid in {s:?}"))
}

fn migrate_via(hosts: &Hosts, from: u32, pid: i32, to: &str) -> Result<i32> {
    let out = ferry_migrate(hosts, from, pid, to)?;
    ensure!(
        out.status.success(),
        "ferry migrate {pid} --to {to} on h{from} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    copy_pid(&out.stdout)
}

#[test]
fn there_and_back_again() -> Result<()> {
    let Some(_ctx) = setup("migrate-relay-back") else {
        return Ok(());
    };
    let hosts = Hosts::up(2).context("hosts up")?;
    let listener = in_host_net(&hosts, 1, || Ok(TcpListener::bind("127.0.0.1:0")?))?;
    let port = listener.local_addr()?.port();
    let mut child = hosts
        .command(1, workload("relay_echo"))
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the victim in h1")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let out = lines_of(child.stdout.take().context("stdout")?);
    let pid = ns_pid(Hosts::inner_pid(&child)?)?;
    expect_line(&out, "ready", |l| l == "ready")?;
    let (mut conn, _) = listener.accept()?;
    conn.set_read_timeout(Some(TIMEOUT))?;

    let on_h2 = migrate_via(&hosts, 1, pid, "h2")?;
    round_trip(&mut conn, "on h2", "tcp: on h2")?;
    // The stub itself cannot move: it says where the process is.
    let stub = ferry_migrate(&hosts, 1, pid, "h2")?;
    let err = String::from_utf8_lossy(&stub.stderr);
    assert!(!stub.status.success(), "migrating the stub succeeded");
    assert!(
        err.contains(&format!("pid {pid} is a relay stub"))
            && err.contains(&format!("runs on h2 as pid {on_h2}")),
        "{err}"
    );
    // Back to h1 (where its PID is the stub's now, so it lands in a new PID namespace, which
    // the summary says): the chain stub (h1) → stub (h2) → process (h1) keeps every path
    // working.
    let back = ferry_migrate(&hosts, 2, on_h2, "h1")?;
    let said = String::from_utf8_lossy(&back.stdout);
    ensure!(back.status.success(), "migrate back: {said}");
    ensure!(
        said.contains(&format!("in a new PID namespace, where it is pid {pid}")),
        "the summary should say the copy is in a new PID namespace: {said}"
    );
    round_trip(&mut conn, "back", "tcp: back")?;
    stdin.write_all(b"still here\n")?;
    expect_line(&out, "echo", |l| l == "echo: still here")?;
    let count = |n| -> Result<usize> {
        Ok(
            String::from_utf8_lossy(&hosts.run(n, &["pgrep", "-x", "relay_echo"])?.stdout)
                .split_whitespace()
                .count(),
        )
    };
    assert_eq!((count(1)?, count(2)?), (1, 0), "relay_echo on (h1, h2)");

    stdin.write_all(b"exit 5\n")?;
    let status = wait_child(&mut child)?;
    assert_eq!(status.code(), Some(5), "the parent saw {status}");
    Ok(())
}

/// The origin's agent exits right after the stub took the original's place, before Commit
/// (FERRY_FAULT origin-exit-after-commit); the restarted agent commits and serves the stub
/// again: stdin and stdout, the established TCP connection and a signal to the stub reach
/// the process on h2, and its exit status reaches the parent on h1. The destination's agent
/// took the second relay stream for the same migration.
#[test]
fn the_relay_resumes_after_the_origin_agent_restarts() -> Result<()> {
    let Some(_ctx) = setup("migrate-relay-resume") else {
        return Ok(());
    };
    let mut hosts = Hosts::up(2).context("hosts up")?;
    let listener = in_host_net(&hosts, 1, || Ok(TcpListener::bind("127.0.0.1:0")?))?;
    let port = listener.local_addr()?.port();
    let mut child = hosts
        .command(1, workload("relay_echo"))
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the victim in h1")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let out = lines_of(child.stdout.take().context("stdout")?);
    let outer = Hosts::inner_pid(&child)?;
    let pid = ns_pid(outer)?;
    expect_line(&out, "ready", |l| l == "ready")?;
    let (mut conn, _) = listener.accept()?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    round_trip(&mut conn, "before", "tcp: before")?;

    hosts.kill_ferryd(1)?;
    hosts.start_ferryd(1, &[("FERRY_FAULT", "origin-exit-after-commit")])?;
    let migrate = ferry_migrate(&hosts, 1, pid, "h2")?;
    ensure!(
        !migrate.status.success(),
        "the faulty agent finished the migration"
    );
    let exe = std::fs::read_link(format!("/proc/{outer}/exe"))?;
    ensure!(
        exe.ends_with("ferry-stub"),
        "pid {outer} runs {}",
        exe.display()
    );
    let _ = hosts.kill_ferryd(1);
    hosts.start_ferryd(1, &[])?;

    // Everything goes through the stub again.
    stdin.write_all(b"after the restart\n")?;
    expect_line(&out, "echo", |l| l == "echo: after the restart")?;
    round_trip(&mut conn, "after", "tcp: after")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(outer),
        nix::sys::signal::Signal::SIGUSR1,
    )?;
    expect_line(&out, "usr1", |l| l == "usr1")?;
    let on_h1 = hosts.run(1, &["pgrep", "-x", "relay_echo"])?;
    ensure!(on_h1.stdout.is_empty(), "still on h1: {:?}", on_h1.stdout);

    stdin.write_all(b"exit 9\n")?;
    let status = wait_child(&mut child)?;
    assert_eq!(status.code(), Some(9), "the parent saw {status}");
    let on_h2 = hosts.run(2, &["pgrep", "-x", "relay_echo"])?;
    ensure!(on_h2.stdout.is_empty(), "still on h2: {:?}", on_h2.stdout);
    Ok(())
}

/// `prog < in > out.log`: stdout is a file, stdin a pipe. After the migration what the process
/// prints still lands in the origin's file, after what it printed before (one offset), and
/// the file's own descriptor on the origin is the stub's.
#[test]
fn output_to_a_file_keeps_landing_in_it() -> Result<()> {
    let Some(ctx) = setup("migrate-relay-file") else {
        return Ok(());
    };
    let hosts = Hosts::up(2).context("hosts up")?;
    let listener = in_host_net(&hosts, 1, || Ok(TcpListener::bind("127.0.0.1:0")?))?;
    let port = listener.local_addr()?.port();
    let log = ctx.path("out.log");
    let file = std::fs::File::create(&log)?;
    let mut child = hosts
        .command(1, workload("relay_echo"))
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .context("start the victim in h1")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let pid = ns_pid(Hosts::inner_pid(&child)?)?;
    let wait_log = |want: &str| -> Result<String> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log)?;
            if text.contains(want) {
                return Ok(text);
            }
            ensure!(
                start.elapsed() < TIMEOUT,
                "{want:?} never reached the file: {text:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    wait_log("ready")?;
    let _conn = listener.accept()?;
    stdin.write_all(b"before\n")?;
    wait_log("echo: before")?;
    migrate_via(&hosts, 1, pid, "h2")?;
    stdin.write_all(b"after\n")?;
    let text = wait_log("echo: after")?;
    assert!(
        text.ends_with("echo: before\necho: after\n"),
        "the file after the migration: {text:?}"
    );
    stdin.write_all(b"exit 0\n")?;
    let status = wait_child(&mut child)?;
    assert!(status.success(), "the parent saw {status}");
    Ok(())
}

/// Threads (`/proc/PID/task`) and descriptors (`/proc/PID/fd`) of process `pid`.
fn threads_and_fds(pid: i32) -> Result<(usize, usize)> {
    let count = |what: &str| -> Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .with_context(|| format!("read /proc/{pid}/{what}"))?
            .count())
    };
    Ok((count("task")?, count("fd")?))
}

/// Waits (up to 20 s) until the threads and descriptors of `pid` are back to at most
/// `baseline` (+ `slack` each); returns the last counts, and whether they got there.
fn settle(pid: i32, baseline: (usize, usize), slack: usize) -> Result<((usize, usize), bool)> {
    let start = Instant::now();
    loop {
        let now = threads_and_fds(pid)?;
        if now.0 <= baseline.0 + slack && now.1 <= baseline.1 + slack {
            return Ok((now, true));
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Ok((now, false));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Reads one line (up to its `\n`) from `conn`.
fn read_line(conn: &mut TcpStream) -> Result<String> {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while got.last() != Some(&b'\n') {
        let k = conn.read(&mut b).context("read a reply")?;
        ensure!(
            k > 0,
            "the connection ended after {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// One short connection: a request, its reply checked; odd `i` ask the server to close
/// ("bye"), and its end is read too; even ones are closed by the client.
fn short_request(addr: std::net::SocketAddr, i: usize) -> Result<()> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("connection {i}: connect"))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = if i % 2 == 1 {
        format!("bye{i}\n")
    } else {
        format!("s{i}\n")
    };
    c.write_all(req.as_bytes())?;
    let reply =
        read_line(&mut c).with_context(|| format!("connection {i} from {:?}", c.local_addr()))?;
    ensure!(
        reply == format!("re: {req}"),
        "connection {i}: {reply:?} for {req:?}"
    );
    if i % 2 == 1 {
        let mut rest = Vec::new();
        c.read_to_end(&mut rest)
            .with_context(|| format!("connection {i}: the server's end"))?;
        ensure!(
            rest.is_empty(),
            "connection {i}: more after the reply: {rest:?}"
        );
    }
    Ok(())
}

/// Items 9 and 10 of the tracker. A line server migrated from h1 to h2 gets, through h1's
/// address from h3, thousands of short connections (half closed by the client, half by the
/// server) and, at the same time, keep-alive clients sending request after request: every
/// reply must arrive, and once all connections ended, the threads and descriptors of both
/// agents are back to what they were before the load (a finished connection leaves nothing).
#[test]
fn many_connections_through_the_origin_lose_no_reply_and_leak_nothing() -> Result<()> {
    let Some(_ctx) = setup("migrate-relay-many") else {
        return Ok(());
    };
    const SHORT: usize = 6000;
    const SHORT_THREADS: usize = 12;
    const KEEPALIVE: usize = 4;
    let hosts = Hosts::up(3).context("hosts up")?;
    let mut child = hosts
        .command(1, workload("relay_serve"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the server in h1")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let out = lines_of(child.stdout.take().context("stdout")?);
    let pid = ns_pid(Hosts::inner_pid(&child)?)?;
    let port: u16 = expect_line(&out, "listen", |l| l.starts_with("listen "))?[7..].parse()?;
    expect_line(&out, "ready", |l| l == "ready")?;
    migrate_via(&hosts, 1, pid, "h2")?;
    let addr = std::net::SocketAddr::from((Hosts::addr(1), port));
    let h3 = std::fs::File::open(format!("/proc/{}/ns/net", hosts.init_pid(3)))?;
    let in_h3 = move |f: Box<dyn FnOnce() -> Result<Vec<String>> + Send>| {
        let ns = h3.try_clone();
        thread::spawn(move || -> Result<Vec<String>> {
            setns(ns?.as_fd(), CloneFlags::CLONE_NEWNET).context("setns into h3")?;
            f()
        })
    };

    // A first connection through the relay, then the baseline of both agents.
    in_h3(Box::new(move || {
        short_request(addr, 0).map(|()| Vec::new())
    }))
    .join()
    .map_err(|_| anyhow::anyhow!("client panicked"))??;
    thread::sleep(Duration::from_millis(500));
    let agents = [
        hosts.ferryd_pid(1).context("h1's ferryd")?,
        hosts.ferryd_pid(2).context("h2's ferryd")?,
    ];
    let baseline = [threads_and_fds(agents[0])?, threads_and_fds(agents[1])?];

    let t0 = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut keepalive = Vec::new();
    for k in 0..KEEPALIVE {
        let stop = stop.clone();
        keepalive.push(in_h3(Box::new(move || {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut j = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = format!("k{k}-{j}\n");
                c.write_all(req.as_bytes())?;
                let reply = read_line(&mut c).with_context(|| format!("keep-alive {k}, {j}"))?;
                ensure!(
                    reply == format!("re: {req}"),
                    "keep-alive {k}: {reply:?} for {req:?}"
                );
                j += 1;
            }
            Ok(vec![format!("{j}")])
        })));
    }
    let mut short = Vec::new();
    for t in 0..SHORT_THREADS {
        short.push(in_h3(Box::new(move || {
            let mut errors = Vec::new();
            for i in (1 + t..=SHORT).step_by(SHORT_THREADS) {
                if let Err(e) = short_request(addr, i) {
                    errors.push(format!("{e:#}"));
                }
            }
            Ok(errors)
        })));
    }
    let mut errors = Vec::new();
    for s in short {
        errors.extend(s.join().map_err(|_| anyhow::anyhow!("client panicked"))??);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut kept = 0;
    for k in keepalive {
        match k.join().map_err(|_| anyhow::anyhow!("client panicked"))? {
            Ok(v) => kept += v[0].parse::<usize>()?,
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let took = t0.elapsed();
    stdin.write_all(b"count\n")?;
    let handled = expect_line(&out, "handled", |l| l.starts_with("handled "))?;
    println!(
        "{SHORT} short connections and {kept} keep-alive requests in {took:?}: {} failed; \
         the server {handled} (of {} answered here)",
        errors.len(),
        1 + SHORT - errors.len() + kept
    );
    ensure!(
        errors.is_empty(),
        "{} of {SHORT} short connections (or a keep-alive client) lost their reply: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    ensure!(kept > 0, "the keep-alive clients got no reply");

    // Every connection ended: both agents are back to their baseline.
    for (n, (&agent, &base)) in agents.iter().zip(&baseline).enumerate() {
        let (now, back) = settle(agent, base, 2)?;
        println!(
            "h{}'s ferryd: threads {} -> {}, fds {} -> {}",
            n + 1,
            base.0,
            now.0,
            base.1,
            now.1
        );
        ensure!(
            back,
            "h{}'s ferryd kept threads/fds after {SHORT} connections ended: {base:?} before, {now:?} after",
            n + 1
        );
    }

    // The server still answers and ends as asked; the parent sees its status.
    stdin.write_all(b"exit 4\n")?;
    let status = wait_child(&mut child)?;
    assert_eq!(status.code(), Some(4), "the parent saw {status}");
    Ok(())
}

/// Issue 10, item 3. The process on the destination sees 127.0.0.1 for every relayed
/// client; with `--proxy-protocol PORT` each connection relayed to its listener on PORT starts
/// with a PROXY v1 line naming the client as the origin saw it. A C server that parses the
/// line answers with the addresses it got: h3's address and port through h1's relay. A port
/// the process does not listen on refuses the migration by name, the process running on.
#[test]
fn a_proxy_protocol_listener_sees_its_clients_address() -> Result<()> {
    let Some(_ctx) = setup("migrate-relay-proxy") else {
        return Ok(());
    };
    let hosts = Hosts::up(3).context("hosts up")?;
    let mut child = hosts
        .command(1, workload("proxy_serve"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the server in h1")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let out = lines_of(child.stdout.take().context("stdout")?);
    let pid = ns_pid(Hosts::inner_pid(&child)?)?;
    let port: u16 = expect_line(&out, "listen", |l| l.starts_with("listen "))?[7..].parse()?;
    expect_line(&out, "ready", |l| l == "ready")?;
    let addr = std::net::SocketAddr::from((Hosts::addr(1), port));
    let ask = move |msg: &'static str| -> Result<(String, std::net::SocketAddr)> {
        let mut c = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        c.set_read_timeout(Some(TIMEOUT))?;
        let me = c.local_addr()?;
        c.write_all(msg.as_bytes())?;
        Ok((read_line(&mut c)?.trim_end().to_string(), me))
    };

    let (reply, me) = in_host_net(&hosts, 3, move || ask("before\n"))?;
    ensure!(
        reply == format!("before from {me} direct"),
        "before the migration: {reply:?} (client {me})"
    );

    // A port the process does not listen on: refused, named; the process runs on here.
    let wrong = if port == 65535 { port - 1 } else { port + 1 };
    let refused = Command::new(ferry_bin())
        .args(["migrate", &pid.to_string(), "--to", "h2"])
        .args(["--proxy-protocol", &wrong.to_string()])
        .env("FERRY_SOCKET", hosts.socket(1))
        .stdin(Stdio::null())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    ensure!(
        !refused.status.success(),
        "migrated with --proxy-protocol {wrong}: {text}"
    );
    ensure!(
        text.contains(&format!("--proxy-protocol {wrong}"))
            && text.contains("no listening TCP socket")
            && text.contains(&port.to_string()),
        "the refusal does not name the port: {text}"
    );
    let (reply, me) = in_host_net(&hosts, 3, move || ask("still\n"))?;
    ensure!(
        reply == format!("still from {me} direct"),
        "after the refusal: {reply:?}"
    );

    let out2 = Command::new(ferry_bin())
        .args(["migrate", &pid.to_string(), "--to", "h2"])
        .args(["--proxy-protocol", &port.to_string()])
        .env("FERRY_SOCKET", hosts.socket(1))
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        out2.status.success(),
        "ferry migrate --proxy-protocol {port}: {}{}",
        String::from_utf8_lossy(&out2.stdout),
        String::from_utf8_lossy(&out2.stderr)
    );
    for i in 0..3 {
        let (reply, me) = in_host_net(&hosts, 3, move || ask("after\n"))?;
        println!("through the relay: {reply}");
        ensure!(
            reply == format!("after from {me} to {addr}"),
            "connection {i} through the relay: {reply:?}, the client being {me}"
        );
    }
    stdin.write_all(b"exit 3\n")?;
    let status = wait_child(&mut child)?;
    assert_eq!(status.code(), Some(3), "the parent saw {status}");
    Ok(())
}

/// Issue 10, item 3: back-pressure end to end. A migrated server that does not read (it does
/// not even accept until told) stops its client's writes through the relay once the socket
/// buffers and the relay's window per channel are full: the client gets only a bounded
/// amount written, the agents' memory does not grow with what it tries to send, and once the
/// server reads, every byte written arrives, the client's half-close with it.
#[test]
fn a_server_that_does_not_read_stops_its_client_through_the_relay() -> Result<()> {
    use std::os::fd::AsRawFd;
    let Some(_ctx) = setup("migrate-relay-backpressure") else {
        return Ok(());
    };
    // Socket buffers on the way (client, origin, loopback on the destination; up to ~6 MiB
    // each by default) and the relay's window: far below this. Unbounded buffering reaches
    // it within the time given.
    const BOUND: u64 = 48 << 20;
    let hosts = Hosts::up(3).context("hosts up")?;
    let mut child = hosts
        .command(1, workload("hold_serve"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the server in h1")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let out = lines_of(child.stdout.take().context("stdout")?);
    let pid = ns_pid(Hosts::inner_pid(&child)?)?;
    let port: u16 = expect_line(&out, "listen", |l| l.starts_with("listen "))?[7..].parse()?;
    expect_line(&out, "ready", |l| l == "ready")?;
    migrate_via(&hosts, 1, pid, "h2")?;
    let agents = [
        hosts.ferryd_pid(1).context("h1's ferryd")?,
        hosts.ferryd_pid(2).context("h2's ferryd")?,
    ];
    let rss = |pid: i32| -> Result<u64> {
        let kb: u64 = status_field(pid, "VmRSS")
            .context("VmRSS")?
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb << 10)
    };
    let before = [rss(agents[0])?, rss(agents[1])?];
    let addr = std::net::SocketAddr::from((Hosts::addr(1), port));

    // Write until nothing more goes for a second (or the bound is passed).
    let conn = in_host_net(&hosts, 3, move || {
        Ok(TcpStream::connect_timeout(&addr, TIMEOUT)?)
    })?;
    conn.set_nonblocking(true)?;
    let chunk = vec![7u8; 1 << 16];
    let mut written = 0u64;
    let mut last = Instant::now();
    let t0 = Instant::now();
    while last.elapsed() < Duration::from_secs(1) && written <= BOUND && t0.elapsed() < TIMEOUT {
        match (&conn).write(&chunk) {
            Ok(n) => {
                written += n as u64;
                last = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => bail!("write through the relay: {e}"),
        }
    }
    let after = [rss(agents[0])?, rss(agents[1])?];
    println!(
        "the client got {} KiB written before the relay stopped it; agents' RSS {} -> {} KiB, {} -> {} KiB",
        written >> 10,
        before[0] >> 10,
        after[0] >> 10,
        before[1] >> 10,
        after[1] >> 10
    );
    ensure!(
        written <= BOUND,
        "the relay kept taking bytes nobody reads: {written} bytes written"
    );
    for i in 0..2 {
        ensure!(
            after[i] < before[i] + (32 << 20),
            "h{}'s ferryd grew from {} to {} bytes while holding what nobody reads",
            i + 1,
            before[i],
            after[i]
        );
    }

    // The server reads now: every byte written arrives, then the end of the stream.
    nix::sys::socket::shutdown(conn.as_raw_fd(), nix::sys::socket::Shutdown::Write)?;
    stdin.write_all(b"read\n")?;
    let got = expect_line(&out, "got", |l| l.starts_with("got "))?;
    ensure!(
        got == format!("got {written}"),
        "the server {got}, the client wrote {written}"
    );
    drop(conn);
    stdin.write_all(b"exit 5\n")?;
    let status = wait_child(&mut child)?;
    assert_eq!(status.code(), Some(5), "the parent saw {status}");
    Ok(())
}

/// `ferry migrations` on host `n`: the line of migration `id`.
fn migrations_line(hosts: &Hosts, n: u32, id: &str) -> Result<String> {
    let out = Command::new(ferry_bin())
        .arg("migrations")
        .env("FERRY_SOCKET", hosts.socket(n))
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "ferry migrations: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(id))
        .map(str::to_string)
        .with_context(|| format!("no migration {id} in ferry migrations on h{n}"))
}

/// The id of the newest migration host `n` recorded (`ferry migrations --json`).
fn migration_id(hosts: &Hosts, n: u32) -> Result<String> {
    let out = Command::new(ferry_bin())
        .args(["migrations", "--json"])
        .env("FERRY_SOCKET", hosts.socket(n))
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().context("no migration recorded")?;
    let v: serde_json::Value = serde_json::from_str(last)?;
    v["migration_id"]
        .as_str()
        .map(str::to_string)
        .context("no migration_id")
}

/// Waits (up to `limit`) for the parent's view of the stub's end.
fn wait_child_for(
    child: &mut std::process::Child,
    limit: Duration,
) -> Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        ensure!(
            start.elapsed() < limit,
            "the stub did not exit within {limit:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Starts relay_echo on h1 (stdin and stdout piped) and migrates it to h2; returns the
/// parent (nsenter), its stdin, the stub's PID outside the hosts, the copy's PID on h2.
fn echo_migrated(
    hosts: &Hosts,
    listener: &TcpListener,
) -> Result<(std::process::Child, std::process::ChildStdin, i32, i32)> {
    let port = listener.local_addr()?.port();
    let mut child = hosts
        .command(1, workload("relay_echo"))
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the victim in h1")?;
    let stdin = child.stdin.take().context("stdin")?;
    let out = lines_of(child.stdout.take().context("stdout")?);
    let outer = Hosts::inner_pid(&child)?;
    let pid = ns_pid(outer)?;
    expect_line(&out, "ready", |l| l == "ready")?;
    let copy = migrate_via(hosts, 1, pid, "h2")?;
    Ok((child, stdin, outer, copy))
}

/// Item 6 of the tracker. The copy dies while the destination's agent is down; the
/// restarted agent holds no copy for the migration: the stub (and so its parent) ends with
/// the lost status (255) at once, and `ferry migrations` on the origin says `lost`.
#[test]
fn a_stub_whose_copy_is_gone_ends_with_the_lost_status() -> Result<()> {
    let Some(_ctx) = setup("migrate-relay-lost") else {
        return Ok(());
    };
    let mut hosts = Hosts::up(2).context("hosts up")?;
    let listener = in_host_net(&hosts, 1, || Ok(TcpListener::bind("127.0.0.1:0")?))?;
    let (mut child, _stdin, _outer, copy) = echo_migrated(&hosts, &listener)?;
    let id = migration_id(&hosts, 1)?;
    hosts.kill_ferryd(2)?;
    let _ = hosts.run(2, &["kill", "-KILL", &copy.to_string()]);
    hosts.start_ferryd(2, &[])?;
    let t0 = Instant::now();
    let status = wait_child_for(&mut child, Duration::from_secs(40))?;
    println!(
        "the stub ended {:?} after the agent restart: {status}",
        t0.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(ferry_agent::relay::LOST_EXIT_CODE),
        "the parent saw {status}"
    );
    let line = migrations_line(&hosts, 1, &id)?;
    println!("{line}");
    ensure!(
        line.contains(" lost ") && line.contains("holds no copy"),
        "ferry migrations on h1: {line}"
    );
    Ok(())
}

/// Item 6 of the tracker. The destination's agent goes down and stays down: the origin keeps
/// trying for `FERRY_RELAY_GIVE_UP` seconds (3 here), then ends the stub with the lost status
/// and `ferry migrations` says why.
#[test]
fn a_stub_gives_up_on_a_destination_that_stays_down() -> Result<()> {
    let Some(_ctx) = setup("migrate-relay-give-up") else {
        return Ok(());
    };
    let mut hosts = Hosts::up(2).context("hosts up")?;
    hosts.kill_ferryd(1)?;
    hosts.start_ferryd(1, &[("FERRY_RELAY_GIVE_UP", "3")])?;
    let listener = in_host_net(&hosts, 1, || Ok(TcpListener::bind("127.0.0.1:0")?))?;
    let (mut child, _stdin, _outer, _copy) = echo_migrated(&hosts, &listener)?;
    let id = migration_id(&hosts, 1)?;
    hosts.kill_ferryd(2)?;
    let t0 = Instant::now();
    let status = wait_child_for(&mut child, Duration::from_secs(40))?;
    let took = t0.elapsed();
    println!("the stub ended {took:?} after the destination's agent went down: {status}");
    assert_eq!(
        status.code(),
        Some(ferry_agent::relay::LOST_EXIT_CODE),
        "the parent saw {status}"
    );
    ensure!(
        took >= Duration::from_secs(3),
        "the stub ended before the bound: {took:?}"
    );
    let line = migrations_line(&hosts, 1, &id)?;
    println!("{line}");
    ensure!(
        line.contains(" lost ") && line.contains("did not answer"),
        "ferry migrations on h1: {line}"
    );
    Ok(())
}
