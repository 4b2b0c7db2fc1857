//! `cargo xtask bench-migrate`: `ferry migrate` of a process with 1 GiB and one with 8 MiB
//! resident between two test hosts — total time, downtime (the victim writes a timestamp every
//! millisecond; the longest gap), bytes on the wire — beside the raw mTLS throughput of the
//! same link (`Peer.Sink`, measured by the origin's `--compress auto` probe in the same run).

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
    let xtask = std::env::current_exe()?;
    let mut up = Command::new(&xtask);
    up.args(["hosts", "up", "2"]);
    if release {
        up.arg("--release");
    }
    util::run(&mut up)?;
    let result = (|| -> Result<()> {
        for mib in [1024u32, 8] {
            one(&ferry, &victim, &dir, mib)?;
        }
        Ok(())
    })();
    let _ = Command::new(&xtask).args(["hosts", "down"]).status();
    result
}

fn one(ferry: &Path, victim: &Path, dir: &Path, mib: u32) -> Result<()> {
    let state = dir.join(format!("v{mib}"));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let init = std::fs::read_to_string("/run/ferry-hosts/h1/init.pid")?;
    let mut child = Command::new("nsenter")
        .args(["-t", init.trim(), "-n", "-p", "-m", "-u", "--"])
        .arg(victim)
        .arg(&state)
        .arg(mib.to_string())
        .arg("--times")
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
    let out = Command::new(ferry)
        .args(["migrate", &pid, "--to", "h2", "--compress", "auto"])
        .env("FERRY_SOCKET", "/run/ferry-hosts/h1/ferryd.sock")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("migrate: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
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
    let log = std::fs::read_to_string("/run/ferry-hosts/h1/ferryd.log").unwrap_or_default();
    let link = log
        .lines()
        .rev()
        .find_map(|l| l.split("link_mb_s=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or("?".to_string(), |v| format!("{v:.0} MB/s"));
    println!(
        "{mib} MiB: downtime (longest gap between the victim's 1 ms timestamps) {:.1} ms; \
         raw mTLS link (Sink) {link}\n  ferry: {}",
        gap as f64 / 1e6,
        text.trim()
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
    Ok(())
}
