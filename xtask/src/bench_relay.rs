//! `cargo xtask bench-relay`: the same servers and clients direct and through the relay of a
//! migration, in one run. Three test hosts: a server starts on h1 and is migrated to h2; its
//! twin (same program, same options) starts on h2 and stays. The clients run on h3: against
//! h2's address (direct) and against h1's (through the stub's relay to the migrated copy on
//! h2), in alternating rounds, since the machine's other load varies; each figure is the best
//! of its rounds, printed beside the direct one with its target and met/MISSED. A missing tool
//! skips its rows (a bench, not a test).
//!
//! The rows: redis-benchmark SET and GET pipelined (`-P 16`); SET with a new connection per
//! request (`-k 0`); keep-alive HTTP against a node server (this program's own client:
//! `xtask relay-client http`); the round trip of one redis `PING` at p50 (`xtask relay-client
//! ping`), whose difference is the latency the relay adds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::hosts;
use crate::util;

/// h1's address, where the clients connect (the server there, then its stub).
const H1: &str = "10.77.0.1";
/// h2's address: the migrated copy runs there, and the twin that is measured direct.
const H2: &str = "10.77.0.2";
/// Rounds of direct and relayed runs, alternated.
const ROUNDS: usize = 3;
const REDIS_PORT: u16 = 6379;
const HTTP_PORT: u16 = 8080;

/// Options of the hidden `xtask relay-client` (run inside h3).
#[derive(Debug, Args)]
pub struct ClientOptions {
    /// `http` (keep-alive GETs) or `ping` (redis PING round trips).
    mode: String,
    /// The server's address.
    addr: SocketAddr,
    /// http: connections; ping: round trips.
    n: usize,
    /// http: seconds.
    #[arg(default_value_t = 5)]
    secs: u64,
}

/// The figures of one side (direct or relayed).
#[derive(Debug, Default, Clone)]
struct Figures {
    set_p16: Option<f64>,
    get_p16: Option<f64>,
    new_conn: Option<f64>,
    http: Option<f64>,
    ping_p50_ms: Option<f64>,
}

pub fn run() -> Result<()> {
    util::require_root("the relay benchmark")?;
    util::require_tools(&["ip", "nsenter"])?;
    let ferry = util::target_dir().join("debug").join("ferry");
    if !ferry.is_file() {
        bail!(
            "{} is missing: cargo build --workspace --bins first",
            ferry.display()
        );
    }
    let have = |t: &str| which(t).is_some();
    let redis = have("redis-server") && have("redis-benchmark");
    let node = have("node");
    if !redis {
        println!("skipped: redis-server or redis-benchmark is not installed (the redis rows)");
    }
    if !node {
        println!("skipped: node is not installed (the HTTP row)");
    }
    // The machine's test hosts are shared with test runs: wait for them as the tests do.
    let _tests = lock("/run/ferry-tests.lock")?;
    let _hosts = lock("/run/ferry-hosts.lock")?;
    let xtask = std::env::current_exe()?;
    util::run(Command::new(&xtask).args(["hosts", "up", "3", "--no-build"]))?;
    let result = (|| -> Result<(Figures, Figures)> {
        let mut direct = Figures::default();
        let mut relay = Figures::default();
        // Many short connections from h3: let its ports be reused.
        let _ = in_host(3, &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]).status();
        if redis {
            redis_rows(&ferry, &xtask, &mut direct, &mut relay)?;
        }
        if node {
            http_rows(&ferry, &xtask, &mut direct, &mut relay)?;
        }
        Ok((direct, relay))
    })();
    let _ = Command::new(&xtask).args(["hosts", "down"]).status();
    let (direct, relay) = result?;
    report(&direct, &relay);
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

pub(crate) fn lock(path: &str) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("open {path}"))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("flock {path}: {e}"))
}

fn init_pid(n: u32) -> Result<String> {
    Ok(std::fs::read_to_string(hosts::host_dir(n).join("init.pid"))
        .with_context(|| format!("h{n} is not up"))?
        .trim()
        .to_string())
}

/// A command in host `n`'s network namespace (only).
fn in_host(n: u32, argv: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["-t", &init_pid(n).unwrap_or_default(), "-n", "--"]);
    c.args(argv);
    c
}

/// Starts a server in host `n` (all its namespaces), in a directory of its own; returns the
/// nsenter child and the server's PID inside the host.
fn start_server(n: u32, argv: &[&str], log: &Path) -> Result<(Child, i32)> {
    let out = std::fs::File::create(log)?;
    let dir = util::target_dir().join(format!("bench-relay/h{n}"));
    std::fs::create_dir_all(&dir)?;
    let child = Command::new("nsenter")
        .args(["-t", &init_pid(n)?, "-n", "-p", "-m", "-u", "--"])
        .args(argv)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("start {} in h{n}", argv[0]))?;
    let t = Instant::now();
    let inner = loop {
        if let Some(p) = hosts::only_child(child.id() as i32) {
            break p;
        }
        if t.elapsed() > Duration::from_secs(10) {
            bail!("{} did not start", argv[0]);
        }
        sleep(Duration::from_millis(10));
    };
    let status = std::fs::read_to_string(format!("/proc/{inner}/status"))?;
    let ns_pid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|p| p.parse().ok())
        .context("the server's pid in its host")?;
    Ok((child, ns_pid))
}

/// Waits until `addr` answers from h3 (a connection accepted).
fn wait_listening(xtask: &Path, addr: &str) -> Result<()> {
    let t = Instant::now();
    loop {
        let ok = in_host(
            3,
            &[
                &xtask.to_string_lossy(),
                "relay-client",
                "connect",
                addr,
                "1",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!("nothing listens on {addr}");
        }
        sleep(Duration::from_millis(100));
    }
}

fn migrate(ferry: &Path, pid: i32) -> Result<()> {
    let out = Command::new(ferry)
        .args(["migrate", &pid.to_string(), "--to", "h2"])
        .env("FERRY_SOCKET", hosts::host_dir(1).join("ferryd.sock"))
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "ferry migrate {pid} --to h2: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("  {}", String::from_utf8_lossy(&out.stdout).trim());
    Ok(())
}

/// Runs redis-benchmark in h3 against `host` and returns requests per second by test name.
fn redis_benchmark(host: &str, args: &[&str]) -> Result<Vec<(String, f64)>> {
    let port = REDIS_PORT.to_string();
    let mut argv = vec!["redis-benchmark", "-h", host, "-p", &port, "--csv"];
    argv.extend_from_slice(args);
    let out = in_host(3, &argv).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!(
            "redis-benchmark {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split(',').map(|f| f.trim_matches('"')).collect();
        if f.len() >= 2
            && let Ok(rps) = f[1].parse::<f64>()
        {
            rows.push((f[0].to_string(), rps));
        }
    }
    if rows.is_empty() {
        bail!(
            "redis-benchmark {} printed no figures: {text}",
            args.join(" ")
        );
    }
    Ok(rows)
}

fn client(xtask: &Path, mode: &str, addr: &str, n: usize, secs: u64) -> Result<f64> {
    let out = in_host(
        3,
        &[
            &xtask.to_string_lossy(),
            "relay-client",
            mode,
            addr,
            &n.to_string(),
            &secs.to_string(),
        ],
    )
    .stdin(Stdio::null())
    .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "relay-client {mode} {addr}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    text.trim()
        .parse()
        .with_context(|| format!("relay-client {mode} printed {text:?}"))
}

/// Keeps the best of the rounds: the highest rate, the lowest latency.
fn best(slot: &mut Option<f64>, v: f64, higher: bool) {
    *slot = Some(match *slot {
        Some(old) if higher => old.max(v),
        Some(old) => old.min(v),
        None => v,
    });
}

/// One round of the redis rows against `host`.
fn redis_round(xtask: &Path, host: &str, f: &mut Figures) -> Result<()> {
    let addr = format!("{host}:{REDIS_PORT}");
    let rows = redis_benchmark(
        host,
        &["-t", "set,get", "-P", "16", "-n", "1000000", "-c", "50"],
    )?;
    for (name, rps) in rows {
        match name.as_str() {
            "SET" => best(&mut f.set_p16, rps, true),
            "GET" => best(&mut f.get_p16, rps, true),
            _ => {}
        }
    }
    let rows = redis_benchmark(host, &["-t", "set", "-k", "0", "-n", "10000", "-c", "20"])?;
    if let Some(r) = rows.first() {
        best(&mut f.new_conn, r.1, true);
    }
    best(
        &mut f.ping_p50_ms,
        client(xtask, "ping", &addr, 5000, 0)?,
        false,
    );
    Ok(())
}

/// The twin of the migrated server, started on h2 and never migrated, is "direct"; the
/// migrated one, reached at h1's address, is "relay". Rounds alternate (the machine's other
/// load varies); each figure is the best of its rounds.
fn redis_rows(ferry: &Path, xtask: &Path, direct: &mut Figures, relay: &mut Figures) -> Result<()> {
    let port = REDIS_PORT.to_string();
    let argv = [
        "redis-server",
        "--port",
        &port,
        "--bind",
        "0.0.0.0",
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    let dir = util::target_dir().join("bench-relay");
    std::fs::create_dir_all(&dir)?;
    let (mut a, pid) = start_server(1, &argv, &dir.join("redis-h1.log"))?;
    let twin = start_server(2, &argv, &dir.join("redis-h2.log"));
    let r = (|| -> Result<()> {
        let (_, _) = twin.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        wait_listening(xtask, &format!("{H1}:{REDIS_PORT}"))?;
        wait_listening(xtask, &format!("{H2}:{REDIS_PORT}"))?;
        println!("redis-server (pid {pid} in h1) migrated to h2; its twin started on h2");
        migrate(ferry, pid)?;
        for round in 1..=ROUNDS {
            println!(
                "redis round {round}/{ROUNDS}: direct (the twin on h2), then through the relay (h1)"
            );
            redis_round(xtask, H2, direct)?;
            redis_round(xtask, H1, relay)?;
        }
        Ok(())
    })();
    let _ = a.kill();
    let _ = a.wait();
    if let Ok((mut t, _)) = twin {
        let _ = t.kill();
        let _ = t.wait();
    }
    r
}

fn http_rows(ferry: &Path, xtask: &Path, direct: &mut Figures, relay: &mut Figures) -> Result<()> {
    let dir = util::target_dir().join("bench-relay");
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("server.js");
    std::fs::write(
        &script,
        format!(
            "require('http').createServer((q, s) => s.end('ok\\n')).listen({HTTP_PORT}, '0.0.0.0');\n"
        ),
    )?;
    let argv = ["node", &*script.to_string_lossy()];
    let (mut a, pid) = start_server(1, &argv, &dir.join("node-h1.log"))?;
    let twin = start_server(2, &argv, &dir.join("node-h2.log"));
    let r = (|| -> Result<()> {
        let (_, _) = twin.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        wait_listening(xtask, &format!("{H1}:{HTTP_PORT}"))?;
        wait_listening(xtask, &format!("{H2}:{HTTP_PORT}"))?;
        println!("node http server (pid {pid} in h1) migrated to h2; its twin started on h2");
        migrate(ferry, pid)?;
        for round in 1..=ROUNDS {
            println!("http round {round}/{ROUNDS}: direct, then through the relay");
            let d = client(xtask, "http", &format!("{H2}:{HTTP_PORT}"), 16, 3)?;
            best(&mut direct.http, d, true);
            let r = client(xtask, "http", &format!("{H1}:{HTTP_PORT}"), 16, 3)?;
            best(&mut relay.http, r, true);
        }
        Ok(())
    })();
    let _ = a.kill();
    let _ = a.wait();
    if let Ok((mut t, _)) = twin {
        let _ = t.kill();
        let _ = t.wait();
    }
    r
}

fn report(direct: &Figures, relay: &Figures) {
    println!();
    println!(
        "{:<44} {:>12} {:>12} {:>8} {:>9}  result",
        "", "direct", "relay", "ratio", "target"
    );
    let ratio_row = |name: &str, d: Option<f64>, r: Option<f64>, target: f64| {
        let (Some(d), Some(r)) = (d, r) else {
            println!("{name:<44} {:>12}", "skipped");
            return;
        };
        let ratio = r / d;
        println!(
            "{name:<44} {d:>12.0} {r:>12.0} {:>7.0}% {:>8.0}%  {}",
            ratio * 100.0,
            target * 100.0,
            if ratio >= target { "met" } else { "MISSED" }
        );
    };
    ratio_row(
        "redis SET -P 16, 50 clients (req/s)",
        direct.set_p16,
        relay.set_p16,
        0.7,
    );
    ratio_row(
        "redis GET -P 16, 50 clients (req/s)",
        direct.get_p16,
        relay.get_p16,
        0.7,
    );
    ratio_row(
        "redis SET, new connection per request (req/s)",
        direct.new_conn,
        relay.new_conn,
        0.5,
    );
    ratio_row(
        "HTTP keep-alive, node, 16 connections (req/s)",
        direct.http,
        relay.http,
        0.7,
    );
    match (direct.ping_p50_ms, relay.ping_p50_ms) {
        (Some(d), Some(r)) => {
            let added = r - d;
            println!(
                "{:<44} {:>10.3}ms {:>10.3}ms {:>+7.3}ms {:>7}ms  {}",
                "round trip p50, redis PING, 1 client (added)",
                d,
                r,
                added,
                "≤0.3",
                if added <= 0.3 { "met" } else { "MISSED" }
            );
        }
        _ => println!("{:<44} {:>12}", "round trip p50 (added)", "skipped"),
    }
}

/// `xtask relay-client MODE ADDR N [SECS]` (inside h3): prints one number.
/// - `connect`: succeeds once a connection to ADDR is accepted;
/// - `ping`: N redis `PING`s one after the other on one connection: the p50 round trip in ms;
/// - `http`: N keep-alive connections sending `GET /` one after the other for SECS seconds:
///   requests answered per second.
pub fn client_main(o: &ClientOptions) -> Result<()> {
    match o.mode.as_str() {
        "connect" => {
            TcpStream::connect_timeout(&o.addr, Duration::from_secs(2))?;
            Ok(())
        }
        "ping" => {
            let mut c = TcpStream::connect(o.addr)?;
            c.set_nodelay(true)?;
            let mut r = BufReader::new(c.try_clone()?);
            let mut times = Vec::with_capacity(o.n);
            let mut line = String::new();
            for i in 0..o.n + 100 {
                let t = Instant::now();
                c.write_all(b"PING\r\n")?;
                line.clear();
                r.read_line(&mut line)?;
                if line != "+PONG\r\n" {
                    bail!("PING answered {line:?}");
                }
                if i >= 100 {
                    times.push(t.elapsed());
                }
            }
            times.sort();
            println!("{}", times[times.len() / 2].as_secs_f64() * 1e3);
            Ok(())
        }
        "http" => {
            let end = Instant::now() + Duration::from_secs(o.secs);
            let addr = o.addr;
            let workers: Vec<_> = (0..o.n)
                .map(|_| std::thread::spawn(move || http_worker(addr, end)))
                .collect();
            let mut total = 0u64;
            for w in workers {
                total += w
                    .join()
                    .map_err(|_| anyhow::anyhow!("a client panicked"))??;
            }
            println!("{}", total as f64 / o.secs as f64);
            Ok(())
        }
        m => bail!("relay-client: unknown mode {m:?} (connect, ping, http)"),
    }
}

/// One keep-alive connection: GET after GET until `end`; the number answered.
fn http_worker(addr: SocketAddr, end: Instant) -> Result<u64> {
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut n = 0u64;
    while Instant::now() < end {
        c.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n")?;
        // Headers, then Content-Length bytes of body.
        let need = loop {
            if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .context("a response without Content-Length")?;
                break h + 4 + len;
            }
            let k = c.read(&mut chunk)?;
            if k == 0 {
                bail!("the server closed the connection");
            }
            buf.extend_from_slice(&chunk[..k]);
        };
        while buf.len() < need {
            let k = c.read(&mut chunk)?;
            if k == 0 {
                bail!("the server closed the connection");
            }
            buf.extend_from_slice(&chunk[..k]);
        }
        buf.drain(..need);
        n += 1;
    }
    Ok(n)
}
