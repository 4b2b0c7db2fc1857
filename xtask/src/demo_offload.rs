//! The offload client's part of `cargo xtask demo` (issue 12): a job started with
//! `ferry run --detach --auto` on h1 runs on the peer `--auto` picks, `ferry ps` shows where,
//! and `ferry output` reads what it printed there once it finished.

use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::hosts;

/// `ferry ARGS` against h1's ferryd, its output captured.
fn ferry_h1(ferry: &Path, args: &[&str]) -> Result<std::process::Output> {
    let out = Command::new(ferry)
        .args(args)
        .env("FERRY_SOCKET", hosts::host_dir(1).join("ferryd.sock"))
        .current_dir("/")
        .output()
        .with_context(|| format!("run ferry {args:?}"))?;
    if !out.status.success() {
        bail!(
            "ferry {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn show(text: &[u8]) {
    for line in String::from_utf8_lossy(text).lines() {
        println!("   | {line}");
    }
}

/// Runs the part: `counter` prints `lines` lines and exits 0.
pub fn run(ferry: &Path, counter: &Path, lines: u32) -> Result<()> {
    let counter = counter
        .to_str()
        .context("the counter's path is not UTF-8")?;
    let count = lines.to_string();
    println!("   $ id=$(ferry run --detach --auto -- hostcounter {count})   (on h1)");
    let out = ferry_h1(ferry, &["run", "--detach", "--auto", "--", counter, &count])?;
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .context("ferry run --detach printed no id")?
        .trim()
        .to_string();
    show(&out.stdout);
    show(&out.stderr);
    sleep(Duration::from_millis(800));
    println!("   $ ferry ps");
    show(&ferry_h1(ferry, &["ps"])?.stdout);
    // Until it has finished where it runs.
    let start = Instant::now();
    loop {
        let out = ferry_h1(ferry, &["ps", "--json"])?;
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).context("parse `ferry ps --json`")?;
        let status = list
            .iter()
            .find(|p| p["id"] == id.as_str())
            .and_then(|p| p["status"].as_str())
            .unwrap_or("")
            .to_string();
        if status.starts_with("finished") {
            if status != "finished 0" {
                bail!("job {id} ended as {status}");
            }
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("job {id} did not finish within a minute (status {status:?})");
        }
        sleep(Duration::from_millis(300));
    }
    println!("   $ ferry ps   (it has finished)");
    show(&ferry_h1(ferry, &["ps"])?.stdout);
    println!("   $ ferry output {id}   (what it printed on the host where it ran; then forgotten)");
    let out = ferry_h1(ferry, &["output", &id])?;
    show(&out.stdout);
    let text = String::from_utf8_lossy(&out.stdout);
    if text.lines().count() != lines as usize || !text.contains(" on h2") {
        bail!("the output of {id} should be {lines} lines printed on h2, got:\n{text}");
    }
    Ok(())
}
