//! `cargo xtask demo`: two test hosts; a counting process in this terminal on h1 is migrated
//! to h2 while it keeps printing into the same terminal, then migrated back; then a managed job
//! goes where `ferry run --auto` sends it, and `ferry ps` and `ferry output` follow it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::hosts::{self, UpOptions};
use crate::util::{self, ScratchDir};

/// Lines the counter prints before it exits (one every 300 ms).
const COUNT: u32 = 50;

/// Takes the hosts down however the demo ends.
struct HostsUp;

impl Drop for HostsUp {
    fn drop(&mut self) {
        if let Err(err) = hosts::down() {
            eprintln!("warning: taking the demo hosts down: {err:#}");
        }
    }
}

pub fn run() -> Result<()> {
    util::require_root("the demo")?;
    util::require_tools(&["cc", "ip", "nsenter"])?;
    say("Building ferry, ferryd and ferry-stub (cargo build --workspace --bins --exclude xtask)…");
    let mut build = util::cargo();
    build.args([
        "build",
        "--quiet",
        "--workspace",
        "--bins",
        "--exclude",
        "xtask",
    ]);
    util::run(&mut build)?;
    util::link_migrate("debug")?;
    let ferry = util::target_dir().join("debug").join("ferry");
    util::become_subreaper()?;
    let dir = ScratchDir::new("demo-hosts")?;
    let counter = util::compile_c(include_str!("c/hostcounter.c"), "hostcounter", dir.path())?;

    step(1, "Two hosts on this machine: cargo xtask hosts up 2");
    say("   h1 = 10.77.0.1 and h2 = 10.77.0.2, each its own network, PID and mount namespace,");
    say("   each running its own ferryd; certificates from `ferry ca` under /run/ferry-hosts/tls.");
    hosts::up(&UpOptions {
        count: 2,
        no_agents: false,
        no_build: true,
        release: false,
    })?;
    let _down = HostsUp;

    step(
        2,
        "On h1, a program prints a count, its PID and its host into this terminal:",
    );
    let init1 = hosts::read_pid(&hosts::host_dir(1), "init")?;
    let mut launcher = Command::new("nsenter")
        .arg("--target")
        .arg(init1.to_string())
        .args(["--net", "--pid", "--mount", "--uts", "--"])
        .arg(&counter)
        .arg(COUNT.to_string())
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start the counter on h1")?;
    let outer = child_of(i32::try_from(launcher.id()).context("pid out of range")?)?;
    let pid = ns_pid(outer)?;
    sleep(Duration::from_millis(2000));

    step(
        3,
        &format!("Move it to h2: ferry migrate {pid} --to h2   (asked of h1's ferryd)"),
    );
    migrate(&ferry, 1, pid, "h2")?;
    say("   Same terminal, same count: only the host has changed. On h1, its PID is now the");
    say("   relay stub (same parent, same terminal), which `ps` shows as ferry-stub:");
    show_comm(outer);
    sleep(Duration::from_millis(2500));

    let remote = remote_pid(&ferry, 2)?;
    step(
        4,
        &format!("And back: ferry migrate {remote} --to h1   (asked of h2's ferryd)"),
    );
    migrate(&ferry, 2, remote, "h1")?;
    sleep(Duration::from_millis(1500));

    step(
        5,
        &format!("It counts to {COUNT} and exits; its parent on h1 sees the real exit status:"),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = launcher.try_wait().context("wait for the counter")? {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = launcher.kill();
            bail!("the counter did not end within a minute");
        }
        sleep(Duration::from_millis(100));
    };
    say(&format!("   the parent's wait(): {status}"));
    if !status.success() {
        bail!("the migrated process should have exited 0, the parent saw {status}");
    }
    step(
        6,
        "A managed job: `ferry run --auto` sends it to the freest peer, `ferry ps` follows it:",
    );
    crate::demo_offload::run(&ferry, &counter, 10)?;
    step(7, "Take the hosts down: cargo xtask hosts down");
    drop(_down);
    say("Done.");
    Ok(())
}

/// `ferry migrate PID --to HOST` against host `from`'s ferryd, its progress on this terminal.
fn migrate(ferry: &Path, from: u32, pid: i32, to: &str) -> Result<()> {
    let socket = hosts::host_dir(from).join("ferryd.sock");
    let status = Command::new(ferry)
        .arg("migrate")
        .arg(pid.to_string())
        .args(["--to", to])
        .arg("--socket")
        .arg(&socket)
        .status()
        .context("run ferry migrate")?;
    if !status.success() {
        bail!("ferry migrate {pid} --to {to} failed ({status})");
    }
    Ok(())
}

/// The PID on host `n` of the copy its ferryd restored last (from `ferry migrations --json`).
fn remote_pid(ferry: &Path, n: u32) -> Result<i32> {
    let socket = hosts::host_dir(n).join("ferryd.sock");
    let out = Command::new(ferry)
        .args(["migrations", "--json", "--socket"])
        .arg(&socket)
        .output()
        .context("run ferry migrations")?;
    // One JSON object per line.
    let text = String::from_utf8_lossy(&out.stdout);
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parse `ferry migrations --json`: {text}"))?;
    records
        .iter()
        .filter(|r| r["role"] == "destination")
        .max_by_key(|r| r["started_unix_ms"].as_u64().unwrap_or(0))
        .and_then(|r| r["pid"].as_i64())
        .and_then(|p| i32::try_from(p).ok())
        .with_context(|| format!("h{n} has no record of the copy it restored"))
}

/// The program nsenter `pid` forked, once it has.
fn child_of(pid: i32) -> Result<i32> {
    let start = Instant::now();
    loop {
        if let Some(child) = hosts::only_child(pid) {
            return Ok(child);
        }
        if start.elapsed() > Duration::from_secs(5) {
            bail!("nsenter started nothing");
        }
        sleep(Duration::from_millis(10));
    }
}

/// `pid`'s PID inside its own PID namespace.
fn ns_pid(pid: i32) -> Result<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|p| p.parse().ok())
        .context("no NSpid")
}

fn show_comm(pid: i32) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    say(&format!("   | {} ({})", comm.trim(), exe.display()));
}

fn step(n: u32, what: &str) {
    println!("\n==> {n}. {what}");
}

fn say(what: &str) {
    println!("{what}");
}
