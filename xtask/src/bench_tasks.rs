//! The task part of `cargo xtask bench`: a process with 1, 8 and 64 threads — the freeze
//! (first seize until every thread is stopped), the dump and the restore — to show the freeze
//! grows no worse than linearly with the number of tasks; then a tree of 100 processes
//! (`dump --tree`).

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
    let mut small = None;
    for n in [1usize, 8, 64] {
        let (freeze_us, dump, restore) = once(ferry, &victim, n, scratch)?;
        if n == 1 {
            small = Some((dump, restore));
        }
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
    if let Some((dump, restore)) = small {
        let verdict = |d: Duration| {
            if d <= SMALL_TARGET { "met" } else { "MISSED" }
        };
        println!(
            "a small process (1 thread, under 1 MiB stored): dump {:.1} ms {}, restore {:.1} ms {} \
             (target ≤ {} ms each, ferry's own start included)",
            dump.as_secs_f64() * 1000.0,
            verdict(dump),
            restore.as_secs_f64() * 1000.0,
            verdict(restore),
            SMALL_TARGET.as_millis()
        );
    }
    run_tree(ferry, scratch)
}

/// Issue 10: a process under 1 MiB dumped and restored in this time each.
const SMALL_TARGET: Duration = Duration::from_millis(15);
/// Issue 10: the tree of [`TREE_SIZE`] processes dumped in this time.
const TREE_TARGET: Duration = Duration::from_millis(300);

/// Processes in the tree benchmark.
const TREE_SIZE: usize = 100;

/// A tree of [`TREE_SIZE`] processes: freeze, dump and restore with `--tree`, every process
/// back with its PID.
fn run_tree(ferry: &Path, scratch: &Path) -> Result<()> {
    let victim = util::compile_c(include_str!("c/forest.c"), "forest", scratch)?;
    println!("\nProcess tree: freeze (seize until all stopped), dump and restore (--tree)");
    println!(
        "{:>10} {:>12} {:>14} {:>11} {:>11}",
        "processes", "freeze µs", "µs per proc", "dump ms", "restore ms"
    );
    let mut child = Command::new(&victim)
        .arg(TREE_SIZE.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the forest victim")?;
    let root = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    let mut owned = vec![Owned::new(root)];
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("victim stdout")?)
        .read_line(&mut line)
        .context("victim did not get ready")?;
    let pids = tree_of(root);
    owned.extend(pids.iter().skip(1).map(|p| Owned::new(*p)));
    if pids.len() != TREE_SIZE {
        bail!(
            "the victim made {} processes, expected {TREE_SIZE}",
            pids.len()
        );
    }
    let image = scratch.join("forest.ferry");
    let dump = util::run_captured(
        Command::new(ferry)
            .arg("dump")
            .arg("--tree")
            .arg(root.to_string())
            .arg("-o")
            .arg(&image),
        TIMEOUT,
    )?
    .success("ferry dump --tree")?;
    let freeze_us =
        stopped_in(&dump.stdout).with_context(|| format!("no freeze time in {:?}", dump.stdout))?;
    // Every original is reaped (the others come to us, a subreaper, as their parents die), so
    // that their PIDs are free for the restore.
    for o in &mut owned {
        o.reap(Duration::from_secs(10))?;
    }
    owned.clear();
    let restore = util::run_captured(Command::new(ferry).arg("restore").arg(&image), TIMEOUT)?
        .success("ferry restore")?;
    let at = restore
        .stdout_lines
        .iter()
        .find(|(_, l)| l.starts_with("restored pid "))
        .map(|(at, _)| *at)
        .with_context(|| format!("no `restored pid` line in {:?}", restore.stdout))?;
    let restored: Vec<Pid> = restore
        .stdout
        .split_whitespace()
        .filter_map(|w| w.parse::<i32>().ok())
        .map(Pid::from_raw)
        .collect();
    owned.extend(restored.iter().map(|p| Owned::new(*p)));
    let _ = std::fs::remove_file(&image);
    let sorted = |v: &[Pid]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    };
    if sorted(&restored) != sorted(&pids) {
        bail!(
            "restored pids {:?}…, expected the tree's {:?}…",
            &restored[..restored.len().min(5)],
            &pids[..pids.len().min(5)]
        );
    }
    let back = tree_of(root).len();
    for o in &mut owned {
        o.end()?;
    }
    if back != TREE_SIZE {
        bail!("{back} processes running after the restore, expected {TREE_SIZE}");
    }
    println!(
        "{TREE_SIZE:>10} {freeze_us:>12} {:>14.1} {:>11.1} {:>11.1}",
        freeze_us as f64 / TREE_SIZE as f64,
        dump.wall.as_secs_f64() * 1000.0,
        at.as_secs_f64() * 1000.0
    );
    println!(
        "tree of {TREE_SIZE}: dump {:.0} ms {} (target ≤ {} ms)",
        dump.wall.as_secs_f64() * 1000.0,
        if dump.wall <= TREE_TARGET {
            "met"
        } else {
            "MISSED"
        },
        TREE_TARGET.as_millis()
    );
    Ok(())
}

/// `pid` and its descendants, parents first (children in PID order).
fn tree_of(pid: Pid) -> Vec<Pid> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        let mut kids: Vec<i32> = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|s| {
                s.split_whitespace()
                    .filter_map(|k| k.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        kids.sort_unstable();
        out.extend(kids.into_iter().map(Pid::from_raw));
        i += 1;
    }
    out
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
