//! The task part of `cargo xtask bench`: a process with 1, 8 and 64 threads — the freeze
//! (first seize until every thread is stopped), the dump and the restore — to show the freeze
//! grows no worse than linearly with the number of tasks.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::unistd::Pid;

use crate::util::{self, Owned};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the thread benchmark with `ferry` and prints its table.
pub fn run(ferry: &Path, scratch: &Path) -> Result<()> {
    let victim = util::compile_c(include_str!("c/threads.c"), "threads", scratch)?;
    println!("\nThreads: freeze (seize until all stopped), dump and restore");
    println!(
        "{:>8} {:>12} {:>14} {:>11} {:>11}",
        "threads", "freeze µs", "µs per task", "dump ms", "restore ms"
    );
    let mut per_task = Vec::new();
    for n in [1usize, 8, 64] {
        let (freeze_us, dump, restore) = once(ferry, &victim, n, scratch)?;
        per_task.push(freeze_us as f64 / n as f64);
        println!(
            "{n:>8} {freeze_us:>12} {:>14.1} {:>11.1} {:>11.1}",
            freeze_us as f64 / n as f64,
            dump.as_secs_f64() * 1000.0,
            restore.as_secs_f64() * 1000.0
        );
    }
    let (first, last) = (per_task[1], per_task[2]);
    println!(
        "freeze per task: {first:.1} µs at 8 threads, {last:.1} µs at 64 — {}",
        if last <= first * 1.5 {
            "linear or better: met"
        } else {
            "worse than linear: MISSED"
        }
    );
    Ok(())
}

fn once(
    ferry: &Path,
    victim: &Path,
    threads: usize,
    scratch: &Path,
) -> Result<(u64, Duration, Duration)> {
    let mut child = Command::new(victim)
        .arg(threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the threads victim")?;
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    let mut process = Owned::new(pid);
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("victim stdout")?)
        .read_line(&mut line)
        .context("victim did not get ready")?;
    let image = scratch.join(format!("threads-{threads}.ferry"));
    let dump = util::run_captured(
        Command::new(ferry)
            .arg("dump")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&image),
        TIMEOUT,
    )?
    .success("ferry dump")?;
    let freeze_us =
        stopped_in(&dump.stdout).with_context(|| format!("no freeze time in {:?}", dump.stdout))?;
    process.reap(Duration::from_secs(10))?;
    let restore = util::run_captured(Command::new(ferry).arg("restore").arg(&image), TIMEOUT)?
        .success("ferry restore")?;
    let (restored, at) = util::restored_pid(&restore)?;
    let tasks = std::fs::read_dir(format!("/proc/{restored}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    Owned::new(restored).end()?;
    let _ = std::fs::remove_file(&image);
    if tasks != threads {
        bail!("restored {tasks} threads, expected {threads}");
    }
    Ok((freeze_us, dump.wall, at))
}

/// `… (N tasks stopped in X us)` from the dump's summary line.
fn stopped_in(summary: &str) -> Option<u64> {
    let rest = summary.split("stopped in ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}
