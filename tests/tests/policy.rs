//! Policy and automatic migration (issue 13 item 2; docs/cluster.md, "Policy") on 2 test hosts,
//! each agent with `policy = "policy.toml"`:
//!
//! - dry run: a CPU-bound managed job on h1, over the threshold for `for` → `ferry migrations`
//!   on h1 shows "would move" with the reason, and the job stays on h1;
//! - the same policy without `dry_run` (the supervisor reads the file again when it changes):
//!   the job moves to h2 with `reason: policy cpu>2% 2s` in `ferry migrations`, and is not
//!   moved again (back) within the test window; a pinned job (`ferry run --pin`), just as
//!   busy, stays on h1 throughout.
//!
//! The test hosts share one kernel, so `/proc/stat` is the same on all of them: the policy
//! measures the managed processes' CPU (`cpu_measure = "managed"`), which is each host's own.

use std::fs;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::hosts::Hosts;
use ferry_tests::{ferry_bin, setup, workload};
use serde_json::Value;

/// How long the move (or the dry-run decision) may take: `for` (2 s), a gossip round or two,
/// the migration itself on a loaded machine.
const DECIDE_WITHIN: Duration = Duration::from_secs(40);
/// How long the test watches that nothing moves back.
const WATCH: Duration = Duration::from_secs(8);

fn policy(dry_run: bool) -> String {
    format!(
        "dry_run = {dry_run}\n\
         cpu_measure = \"managed\"\n\
         cpu_above = 2\n\
         for = \"2s\"\n\
         target_below = 99\n\
         cooldown = \"10m\"\n\
         max_moves = 1\n"
    )
}

/// `ferry ARGS` inside host `n`, as root.
fn ferry(hosts: &Hosts, n: u32, args: &[&str]) -> Result<Output> {
    Command::new("nsenter")
        .arg("--target")
        .arg(hosts.init_pid(n).to_string())
        .args(["--net", "--pid", "--mount", "--uts", "--"])
        .arg(ferry_bin())
        .args(args)
        .env("FERRY_SOCKET", hosts.socket(n))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run ferry {args:?}"))
}

fn ferry_ok(hosts: &Hosts, n: u32, args: &[&str]) -> Result<String> {
    let out = ferry(hosts, n, args)?;
    ensure!(
        out.status.success(),
        "ferry {args:?} on h{n} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where job `id` runs and its status, as `ferry ps --json` on h1 says.
fn where_is(hosts: &Hosts, id: &str) -> Result<(String, String)> {
    let v: Value = serde_json::from_str(&ferry_ok(hosts, 1, &["ps", "--json"])?)?;
    let p = v
        .as_array()
        .context("ps --json")?
        .iter()
        .find(|p| p["id"] == id)
        .with_context(|| format!("job {id} not in ps: {v}"))?;
    let status = p["status"].as_str().unwrap_or_default().to_owned();
    ensure!(
        status == "running" || status == "frozen",
        "job {id} ended: {p}"
    );
    Ok((p["host"].as_str().unwrap_or_default().to_owned(), status))
}

/// Where job `id` runs.
fn host_of(hosts: &Hosts, id: &str) -> Result<String> {
    Ok(where_is(hosts, id)?.0)
}

fn poll(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    loop {
        if f()? {
            eprintln!("{what}: after {:?}", start.elapsed());
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        sleep(Duration::from_millis(200));
    }
}

/// Whether both agents see each other alive with a load.
fn joined(hosts: &Hosts) -> Result<bool> {
    for n in 1..=2 {
        let v: Value = serde_json::from_str(&ferry_ok(hosts, n, &["hosts", "--json"])?)?;
        let ok = v.as_array().is_some_and(|ms| {
            ms.len() == 2
                && ms
                    .iter()
                    .all(|m| m["state"] == "alive" && m["load"].is_object())
        });
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The tail of both agents' logs, for a failure's message.
fn logs(hosts: &Hosts) -> String {
    let mut out = String::new();
    for n in 1..=2 {
        let log = hosts.ferryd_log(n);
        let lines: Vec<&str> = log.lines().collect();
        out.push_str(&format!(
            "--- h{n} ferryd.log (tail)\n{}\n",
            lines[lines.len().saturating_sub(30)..].join("\n")
        ));
    }
    out
}

#[test]
fn a_busy_job_moves_once_by_policy_with_its_reason_a_pinned_one_stays_dry_run_moves_nothing()
-> Result<()> {
    let Some(_ctx) = setup("policy") else {
        return Ok(());
    };
    let mut hosts = Hosts::up(2).context("hosts up")?;
    let result = body(&mut hosts);
    result.map_err(|e| anyhow::anyhow!("{e:#}\n{}", logs(&hosts)))
}

fn body(hosts: &mut Hosts) -> Result<()> {
    // Both agents with the policy, dry run first.
    for n in 1..=2 {
        fs::write(hosts.dir(n).join("policy.toml"), policy(true))?;
        let path = hosts.config(n);
        let text = fs::read_to_string(&path)?;
        fs::write(&path, format!("policy = \"policy.toml\"\n{text}"))?;
        hosts.kill_ferryd(n)?;
        hosts.start_ferryd(n, &[])?;
    }
    poll(
        Duration::from_secs(20),
        "both agents see each other",
        || joined(hosts),
    )?;
    let spin = workload("spin");
    let spin = spin.to_str().context("path")?;
    let pinned = ferry_ok(hosts, 1, &["run", "--detach", "--pin", "--", spin])?
        .lines()
        .next()
        .context("no id")?
        .trim()
        .to_owned();
    let job = ferry_ok(hosts, 1, &["run", "--detach", "--", spin])?
        .lines()
        .next()
        .context("no id")?
        .trim()
        .to_owned();

    // Dry run: recorded, nothing moved.
    let mut text = String::new();
    poll(
        DECIDE_WITHIN,
        "a dry-run decision in ferry migrations",
        || {
            text = ferry_ok(hosts, 1, &["migrations"])?;
            Ok(text.contains("would move"))
        },
    )?;
    let line = text
        .lines()
        .find(|l| l.contains("would move"))
        .context("no line")?;
    ensure!(
        line.contains(&format!("would move {job} ")) && line.contains("reason: policy cpu>2% 2s"),
        "the dry-run record: {line:?}"
    );
    ensure!(
        !text.contains(&format!("would move {pinned} ")),
        "the pinned job was named: {text}"
    );
    sleep(Duration::from_secs(3));
    ensure!(host_of(hosts, &job)? == "h1", "a dry run moved {job}");
    ensure!(host_of(hosts, &pinned)? == "h1", "a dry run moved {pinned}");
    let out = ferry_ok(hosts, 1, &["migrations"])?;
    ensure!(
        !out.lines()
            .any(|l| l.contains(" done ") || l.contains("committed")),
        "a migration ran in the dry run: {out}"
    );

    // For real: the supervisors read the changed file.
    for n in 1..=2 {
        fs::write(hosts.dir(n).join("policy.toml"), policy(false))?;
    }
    poll(
        DECIDE_WITHIN,
        "the busy job moved to h2 and runs there",
        || Ok(where_is(hosts, &job)? == ("h2".to_owned(), "running".to_owned())),
    )?;
    let text = ferry_ok(hosts, 1, &["migrations"])?;
    ensure!(
        text.lines().any(|l| l.contains(" h2 ")
            && !l.contains("would move")
            && l.contains("reason: policy cpu>2% 2s")),
        "no migration with the reason in:\n{text}"
    );
    // Not moved again, and the pinned one stays.
    let start = Instant::now();
    while start.elapsed() < WATCH {
        ensure!(host_of(hosts, &job)? == "h2", "{job} moved on from h2");
        ensure!(
            host_of(hosts, &pinned)? == "h1",
            "the pinned {pinned} moved"
        );
        sleep(Duration::from_millis(500));
    }
    let on_h2 = ferry_ok(hosts, 2, &["migrations"])?;
    ensure!(
        !on_h2.lines().any(|l| l.contains("origin")),
        "h2 moved something on:\n{on_h2}"
    );
    let moves = ferry_ok(hosts, 1, &["migrations"])?
        .lines()
        .filter(|l| l.contains("reason: policy") && !l.contains("would move"))
        .count();
    ensure!(moves == 1, "{moves} policy moves from h1");
    for id in [&job, &pinned] {
        ferry_ok(hosts, 1, &["kill", "--signal", "KILL", id])?;
    }
    Ok(())
}
