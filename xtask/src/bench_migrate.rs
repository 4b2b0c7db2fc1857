//! `cargo xtask bench-migrate`: `ferry migrate` between two test hosts of a process with 64 MiB,
//! 256 MiB, 1 GiB and 4 GiB resident, writing 0, 10 and 100 MB/s of it, live (the default),
//! with `--stop-and-copy` and with `--lazy` (post-copy; its total is until every page
//! arrived) — total time, downtime (the victim writes a timestamp every millisecond; the
//! longest gap), pre-copy rounds, bytes on the wire — beside the raw mTLS throughput of the
//! same link (`Peer.Sink`, measured by the origin's `--compress auto` probe in the same run),
//! the time that link needs for the bytes sent, and the total time as a multiple of it
//! (target: at most 1.3). `FERRY_BENCH_MIB` (comma-separated), `FERRY_BENCH_WRITE` and
//! `FERRY_BENCH_MODES` (`live,stop-and-copy,lazy`) choose other sizes, rates and modes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util;

/// Runs the benchmark (root).
pub fn run(release: bool) -> Result<()> {
    util::require_root("the migration benchmark")?;
    let root = util::workspace_root();
    // Built beforehand (`cargo build --workspace --bins [--release]`): building from here
    // could relink this very executable, which the hosts' PID 1 runs.
    let ferry = util::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("ferry");
    if !ferry.is_file() {
        bail!(
            "{} is missing: cargo build --workspace --bins first",
            ferry.display()
        );
    }
    let dir = util::target_dir().join("bench-migrate");
    std::fs::create_dir_all(&dir)?;
    let src = std::fs::read_to_string(root.join("tests/workloads/migrate.c"))?.replace(
        "#include \"common.h\"",
        &std::fs::read_to_string(root.join("tests/workloads/common.h"))?,
    );
    let victim = util::compile_c(&src, "migrate", &dir)?;
    // The machine's test hosts are shared with test runs: wait for them as the tests do.
    let _tests = crate::bench_relay::lock("/run/ferry-tests.lock")?;
    let _hosts = crate::bench_relay::lock("/run/ferry-hosts.lock")?;
    let xtask = std::env::current_exe()?;
    let mut up = Command::new(&xtask);
    // Built beforehand (above): `hosts up` would build again (a release build takes long).
    up.args(["hosts", "up", "2", "--no-build"]);
    if release {
        up.arg("--release");
    }
    util::run(&mut up)?;
    let list = |var: &str, default: &[u32]| -> Vec<u32> {
        std::env::var(var)
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| default.to_vec())
    };
    let sizes = list("FERRY_BENCH_MIB", &[64, 256, 1024, 4096]);
    let rates = list("FERRY_BENCH_WRITE", &[0, 10, 100]);
    let modes: Vec<String> = std::env::var("FERRY_BENCH_MODES")
        .unwrap_or_else(|_| "live,stop-and-copy,lazy".into())
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| matches!(m.as_str(), "live" | "stop-and-copy" | "lazy"))
        .collect();
    if modes.is_empty() {
        bail!("FERRY_BENCH_MODES names no mode (live, stop-and-copy, lazy)");
    }
    let (first, again) = fresh_memory();
    println!(
        "fresh memory (512 MiB mapped anew, written once, then again): first write {first:.0} MB/s, \
         again {again:.0} MB/s; a destination writes a process's memory into pages it never \
         used: on a VM whose host backs a guest page at its first touch the first figure bounds \
         it"
    );
    let result = (|| -> Result<()> {
        let mut rows = Vec::new();
        for &mib in &sizes {
            for &rate in &rates {
                for mode in &modes {
                    rows.push(one(&ferry, &victim, &dir, mib, rate, mode)?);
                }
            }
        }
        println!(
            "\n| memory | writes | mode | downtime | total | rounds (MiB each) | final stop | wire | link (Sink, same run) | link time for the wire bytes | total / link time (target <= 1.3) | both agents' CPU (share of the cores over the migration) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!("{r}");
        }
        Ok(())
    })();
    let _ = Command::new(&xtask).args(["hosts", "down"]).status();
    result
}

fn one(ferry: &Path, victim: &Path, dir: &Path, mib: u32, rate: u32, mode: &str) -> Result<String> {
    let live = mode == "live";
    let state = dir.join(format!("v{mib}-{rate}-{mode}"));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let init = std::fs::read_to_string("/run/ferry-hosts/h1/init.pid")?;
    let mut child = Command::new("nsenter")
        .args(["-t", init.trim(), "-n", "-p", "-m", "-u", "--"])
        .arg(victim)
        .arg(&state)
        .arg(mib.to_string())
        .arg("--times")
        .args(if rate > 0 {
            vec!["--write".to_string(), rate.to_string()]
        } else {
            Vec::new()
        })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the victim in h1")?;
    let t = Instant::now();
    let pid = loop {
        let s = std::fs::read_to_string(state.join("status")).unwrap_or_default();
        if let Some(p) = s.lines().find_map(|l| l.strip_prefix("ready pid=")) {
            break p.trim().to_string();
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the victim did not start");
        }
        sleep(Duration::from_millis(20));
    };
    sleep(Duration::from_millis(500));
    let cpu_before = agents_cpu();
    let wall = Instant::now();
    let out = Command::new(ferry)
        .args(["migrate", &pid, "--to", "h2", "--compress", "auto"])
        .args(match mode {
            "live" => &[][..],
            "lazy" => &["--lazy"][..],
            _ => &["--stop-and-copy"][..],
        })
        .env("FERRY_SOCKET", "/run/ferry-hosts/h1/ferryd.sock")
        .output()?;
    let (wall, cpu_after) = (wall.elapsed().as_secs_f64(), agents_cpu());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("migrate: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    // Both agents share this machine's cores: how busy the migration kept them (CPU-bound
    // when near 100 %, and then the link alone is not the limit).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => {
            let (o, d) = (b[0] - a[0], b[1] - a[1]);
            format!(
                "{:.2} s ({:.0} %): origin {o:.2} s, destination {d:.2} s",
                o + d,
                100.0 * (o + d) / (wall * cores)
            )
        }
        _ => "?".to_string(),
    };
    sleep(Duration::from_millis(500));
    let times: Vec<i64> = std::fs::read_to_string(state.join("times"))?
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let field = |after: &str, until: char| {
        text.split(after)
            .nth(1)
            .and_then(|r| r.split(until).next())
            .unwrap_or("?")
            .trim()
            .to_string()
    };
    // The agents' logs of this run, for a closer look (FERRY_LOG=debug shows each phase).
    for n in [1, 2] {
        let _ = std::fs::copy(
            format!("/run/ferry-hosts/h{n}/ferryd.log"),
            state.join(format!("ferryd-h{n}.log")),
        );
    }
    // Each agent's phases of the stop (`stop timeline (origin|destination): …`, every mode).
    for n in [1, 2] {
        let log = std::fs::read_to_string(format!("/run/ferry-hosts/h{n}/ferryd.log"))
            .unwrap_or_default();
        if let Some(line) = log.lines().rev().find(|l| l.contains("stop timeline (")) {
            let t = line.split("stop timeline (").nth(1).unwrap_or(line);
            println!("  h{n} stop timeline ({t}");
        }
        // Post-copy: how long the destination spent putting the pages in (`UFFDIO_COPY`).
        if let Some(line) = log
            .lines()
            .rev()
            .find(|l| l.contains("lazy pages: all arrived"))
        {
            let of = |k: &str| {
                line.split(k)
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .unwrap_or("?")
                    .to_string()
            };
            println!(
                "  h{n} post-copy: all pages in after {}, of it {} in UFFDIO_COPY",
                of("elapsed="),
                of("copying=")
            );
        }
    }
    // The link as the origin's `--compress auto` probe measured it (`…; link 0.9 GB/s, …`).
    let link = text
        .split("link ")
        .nth(1)
        .and_then(|r| r.split(" GB/s").next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or("?".to_string(), |v| format!("{:.0} MB/s", v * 1000.0));
    // The time the link needs for the bytes sent, from the wire bytes ("…, 12.3 MiB on the
    // wire") and the link's speed, and the total time as a multiple of it.
    let wire_mib = text
        .split(" on the wire")
        .next()
        .and_then(|r| r.rsplit(", ").next())
        .and_then(|w| {
            let mut it = w.split_whitespace();
            let n: f64 = it.next()?.parse().ok()?;
            match it.next()? {
                "GiB" => Some(n * 1024.0),
                "MiB" => Some(n),
                "KiB" => Some(n / 1024.0),
                "B" => Some(n / 1048576.0),
                _ => None,
            }
        });
    let link_mbs = text
        .split("link ")
        .nth(1)
        .and_then(|r| r.split(" GB/s").next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v * 1000.0);
    let total_s: Option<f64> = field("total ", ' ').trim_end_matches('s').parse().ok();
    let (link_time, ratio) = match (wire_mib, link_mbs, total_s) {
        (Some(w), Some(l), Some(t)) if l > 0.0 => {
            let need = w * 1048576.0 / (l * 1e6);
            (
                format!("{need:.2} s"),
                format!(
                    "{:.2}{}",
                    t / need,
                    if t / need <= 1.3 { "" } else { " (over)" }
                ),
            )
        }
        _ => ("?".to_string(), "?".to_string()),
    };
    println!(
        "{mib} MiB writing {rate} MB/s, {mode}: downtime (longest gap between the victim's 1 ms \
         timestamps) {:.1} ms; raw mTLS link (Sink) {link}\n  ferry: {}",
        gap as f64 / 1e6,
        text.trim()
    );
    let rounds = if live {
        format!(
            "{} ({})",
            field("live: ", ' '),
            field("pre-copy round(s) (", ')')
        )
    } else {
        "-".to_string()
    };
    let final_stop = match mode {
        "live" => field("), then ", 'w').replace(" MiB ", " MiB"),
        // What stayed in the image; the rest followed (`lazy: … followed`).
        "lazy" => format!("image; {} followed", field("pages (", ')')),
        _ => "all".to_string(),
    };
    let row = format!(
        "| {mib} MiB | {rate} MB/s | {mode} | {:.1} ms | {} s | {rounds} | {} | {} | {link} | {link_time} | {ratio} | {cpu} |",
        gap as f64 / 1e6,
        field("total ", ' '),
        final_stop.trim(),
        text.split(" on the wire")
            .next()
            .and_then(|r| r.rsplit(", ").next())
            .unwrap_or("?"),
    );
    let _ = child.kill();
    let _ = child.wait();
    // End the migrated copy on h2 (PID after "as pid").
    let remote = field(" as pid ", ' ');
    let init2 = std::fs::read_to_string("/run/ferry-hosts/h2/init.pid")?;
    let _ = Command::new("nsenter")
        .args([
            "-t",
            init2.trim(),
            "-p",
            "-m",
            "--",
            "kill",
            "-KILL",
            &remote,
        ])
        .status();
    Ok(row)
}

/// Write speed (MB/s) of 512 MiB of fresh anonymous memory: its first write (each page faulted
/// in, and on some VMs backed by the host then), and a second.
fn fresh_memory() -> (f64, f64) {
    const N: usize = 512 << 20;
    let t = Instant::now();
    // Zeroed by mapping: no page is touched until written.
    let mut v = vec![0u8; N];
    v.fill(1);
    let first = N as f64 / t.elapsed().as_secs_f64() / 1e6;
    let t = Instant::now();
    v.fill(2);
    let again = N as f64 / t.elapsed().as_secs_f64() / 1e6;
    std::hint::black_box(&v);
    (first, again)
}

/// CPU time (user + system, seconds) each test host's agent (h1, h2) used so far.
fn agents_cpu() -> Option<[f64; 2]> {
    let tick = 100.0; // USER_HZ
    let mut sum = [0.0; 2];
    for (i, n) in [1, 2].into_iter().enumerate() {
        let pid = std::fs::read_to_string(format!("/run/ferry-hosts/h{n}/ferryd.pid")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
        // After the command name's closing parenthesis: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(") ")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        sum[i] = (utime + stime) / tick;
    }
    Some(sum)
}
