//! The offload client end to end through two agents (issue 12): `ferry run --on h2` keeps
//! printing into the caller's stdout, shows in `ferry ps` on h1 with HOST h2 and its limits
//! (read back from its cgroups on h2, changed while it runs there), another user can neither
//! see nor kill it, and `ferry kill` ends it with the parent seeing the signal. A `--detach`ed
//! job's output is complete after it finished, and reading it forgets the job; kept output is
//! bounded with a note of what was dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::hosts::Hosts;
use ferry_tests::{ferry_bin, setup, workload};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);
/// The uid of "another user".
const OTHER_UID: u32 = 65534;

/// `ferry ARGS` inside host `n`, as root or as `uid`.
fn ferry(hosts: &Hosts, n: u32, uid: Option<u32>, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg("--target")
        .arg(hosts.init_pid(n).to_string())
        .args(["--net", "--pid", "--mount", "--uts"]);
    if let Some(uid) = uid {
        cmd.arg(format!("--setuid={uid}"))
            .arg(format!("--setgid={uid}"));
    }
    cmd.arg("--")
        .arg(ferry_bin())
        .args(args)
        .env("FERRY_SOCKET", hosts.socket(n))
        .stdin(Stdio::null());
    cmd
}

fn ferry_out(hosts: &Hosts, n: u32, uid: Option<u32>, args: &[&str]) -> Result<Output> {
    ferry(hosts, n, uid, args)
        .output()
        .with_context(|| format!("run ferry {args:?}"))
}

fn ferry_ok(hosts: &Hosts, n: u32, args: &[&str]) -> Result<String> {
    let out = ferry_out(hosts, n, None, args)?;
    ensure!(
        out.status.success(),
        "ferry {args:?} on h{n} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ferry ps --json` on host `n` as `uid`: the objects.
fn ps(hosts: &Hosts, n: u32, uid: Option<u32>) -> Result<Vec<Value>> {
    let out = ferry_out(hosts, n, uid, &["ps", "--json"])?;
    ensure!(
        out.status.success(),
        "ferry ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).context("ps --json is not JSON")?;
    Ok(v.as_array().context("ps --json is not an array")?.clone())
}

fn job<'a>(list: &'a [Value], id: &str) -> Option<&'a Value> {
    list.iter().find(|p| p["id"] == id)
}

/// Polls `ps` on h1 until job `id` satisfies `want`.
fn wait_ps(hosts: &Hosts, id: &str, what: &str, want: impl Fn(&Value) -> bool) -> Result<Value> {
    let start = Instant::now();
    loop {
        let list = ps(hosts, 1, None)?;
        if let Some(p) = job(&list, id)
            && want(p)
        {
            return Ok(p.clone());
        }
        ensure!(
            start.elapsed() < TIMEOUT,
            "job {id} never {what}: ps says {list:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
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

fn wait_child(child: &mut Child) -> Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        ensure!(start.elapsed() < TIMEOUT, "ferry run did not end");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A file of host `n` (read inside its mount namespace).
fn cat(hosts: &Hosts, n: u32, path: &str) -> Result<String> {
    Ok(hosts.run_ok(n, &["cat", path])?.trim().to_string())
}

/// Kills the nsenter of a `ferry run` that a failed test left.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn run_on_h2_prints_here_shows_in_ps_keeps_limits_and_dies_by_kill() -> Result<()> {
    let Some(_ctx) = setup("offload-run") else {
        return Ok(());
    };
    let hosts = Hosts::up(2).context("hosts up")?;
    let ticker = workload("ticker");
    let ticker = ticker.to_str().context("path")?;
    let mut child = ferry(
        &hosts,
        1,
        None,
        &[
            "run", "--on", "h2", "--cpu", "0.5", "--mem", "64M", "--", ticker,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .context("start ferry run")?;
    let out = lines_of(child.stdout.take().context("stdout")?);
    let err = lines_of(child.stderr.take().context("stderr")?);
    let mut child = Reap(child);
    let line = expect_line(&err, "naming the job", |l| l.starts_with("ferry: job "))?;
    let id = line.split_whitespace().nth(2).context("no id")?.to_string();
    expect_line(&err, "saying it moved", |l| {
        l.contains(" moved (migration ")
    })?;
    // The job keeps printing into our stdout from h2: a tick numbered after the move.
    let moved_at: u64 = expect_line(&out, "tick", |l| l.starts_with("tick "))?[5..].parse()?;
    let next = expect_line(&out, "a later tick", |l| {
        l[5..].parse::<u64>().is_ok_and(|n| n > moved_at + 3)
    })?;
    ensure!(next.starts_with("tick "), "{next}");

    let p = wait_ps(&hosts, &id, "ran on h2", |p| {
        p["host"] == "h2" && p["status"] == "running"
    })?;
    assert_eq!(p["max_cpu"], 0.5, "{p}");
    assert_eq!(p["max_mem"], 64u64 << 20, "{p}");
    assert!(
        p["command"].as_str().unwrap_or("").contains("ticker"),
        "{p}"
    );
    let pid = p["pid"].as_i64().context("no pid")?;
    let comm = cat(&hosts, 2, &format!("/proc/{pid}/comm"))?;
    assert_eq!(comm, "ticker", "pid {pid} on h2");

    // Its limits, where it runs.
    let cg = format!("ferry/{id}@h2");
    let groups = cat(&hosts, 2, &format!("/proc/{pid}/cgroup"))?;
    ensure!(groups.contains(&cg), "pid {pid} is not in {cg}: {groups}");
    let (cpu_dir, mem_dir) = cgroup_dirs(&cg)?;
    assert_eq!(
        cat(&hosts, 2, &format!("{cpu_dir}/cpu.cfs_quota_us"))?,
        "50000"
    );
    assert_eq!(
        cat(&hosts, 2, &format!("{mem_dir}/memory.limit_in_bytes"))?,
        (64u64 << 20).to_string()
    );
    // Changed while it runs there.
    ferry_ok(&hosts, 1, &["limits", &id, "--mem", "128M", "--cpu", "1.5"])?;
    assert_eq!(
        cat(&hosts, 2, &format!("{mem_dir}/memory.limit_in_bytes"))?,
        (128u64 << 20).to_string()
    );
    assert_eq!(
        cat(&hosts, 2, &format!("{cpu_dir}/cpu.cfs_quota_us"))?,
        "150000"
    );
    let p = wait_ps(&hosts, &id, "showed the new limits", |p| {
        p["max_cpu"] == 1.5
    })?;
    assert_eq!(p["max_mem"], 128u64 << 20, "{p}");

    // Another user sees nothing of it and cannot kill it.
    let theirs = ps(&hosts, 1, Some(OTHER_UID))?;
    ensure!(
        job(&theirs, &id).is_none(),
        "uid {OTHER_UID} sees {id}: {theirs:?}"
    );
    let k = ferry_out(
        &hosts,
        1,
        Some(OTHER_UID),
        &["kill", &id, "--signal", "KILL"],
    )?;
    ensure!(!k.status.success(), "uid {OTHER_UID} killed {id}");
    let msg = String::from_utf8_lossy(&k.stderr);
    ensure!(msg.contains("no managed process"), "{msg}");
    expect_line(&out, "a tick after the refused kill", |l| {
        l.starts_with("tick ")
    })?;

    // The owner's kill ends it; `ferry run` (its parent) dies by the signal.
    ferry_ok(&hosts, 1, &["kill", &id, "--signal", "TERM"])?;
    let status = wait_child(&mut child.0)?;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "ferry run ended with {status}"
    );
    wait_ps(&hosts, &id, "showed killed", |p| {
        p["status"] == "killed SIGTERM"
    })?;
    // Its cgroups go once it ended (the copy's on h2, the stub's on h1), and the agents'
    // `ferry` parent with them (no other managed process is left).
    let start = Instant::now();
    while std::path::Path::new(&cpu_dir).exists()
        || std::path::Path::new(&cpu_dir.replace("@h2", "@h1")).exists()
    {
        ensure!(start.elapsed() < TIMEOUT, "{cpu_dir} (or @h1) still exists");
        thread::sleep(Duration::from_millis(100));
    }
    wait_no_parent_cgroup()?;
    Ok(())
}

/// The cpu and memory directories of cgroup `name` (cgroup v1 hierarchies, as on this
/// machine, or v2).
fn cgroup_dirs(name: &str) -> Result<(String, String)> {
    let v1 = |c: &str| format!("/sys/fs/cgroup/{c}/{name}");
    if std::path::Path::new(&v1("cpu")).exists() && std::path::Path::new(&v1("memory")).exists() {
        return Ok((v1("cpu"), v1("memory")));
    }
    let v2 = format!("/sys/fs/cgroup/{name}");
    if std::path::Path::new(&v2).exists() {
        bail!("cgroup v2 only: this test reads the v1 files (cpu.cfs_quota_us)");
    }
    bail!("no cgroup {name} under /sys/fs/cgroup")
}

#[test]
fn detached_output_is_complete_after_it_finished_and_then_forgotten() -> Result<()> {
    let Some(_ctx) = setup("offload-detach") else {
        return Ok(());
    };
    let hosts = Hosts::up(2).context("hosts up")?;
    let ticker = workload("ticker");
    let ticker = ticker.to_str().context("path")?;
    let out = ferry_ok(
        &hosts,
        1,
        &[
            "run", "--detach", "--on", "h2", "--", ticker, "40", "7", "50",
        ],
    )?;
    let id = out.lines().next().context("no id")?.trim().to_string();
    ensure!(
        id.len() == 4 && id.chars().all(|c| c.is_ascii_alphanumeric()),
        "the first line is not an id: {out:?}"
    );
    let p = wait_ps(&hosts, &id, "finished", |p| p["status"] == "finished 7")?;
    assert_eq!(p["host"], "h2", "{p}");
    let text = ferry_ok(&hosts, 1, &["output", &id])?;
    let want: String = (1..=40).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(text, want, "the output of {id}");
    // Read whole once finished: forgotten.
    ensure!(
        job(&ps(&hosts, 1, None)?, &id).is_none(),
        "{id} still listed"
    );
    let again = ferry_out(&hosts, 1, None, &["output", &id])?;
    ensure!(
        !again.status.success(),
        "output of a forgotten job succeeded"
    );
    Ok(())
}

#[test]
fn kept_output_is_bounded_with_a_note_and_followed_to_the_end() -> Result<()> {
    let Some(_ctx) = setup("offload-bound") else {
        return Ok(());
    };
    let mut hosts = Hosts::up(1).context("hosts up")?;
    hosts.kill_ferryd(1)?;
    hosts.start_ferryd(1, &[("FERRY_OUTPUT_CAP", "65536")])?;
    let id = ferry_ok(
        &hosts,
        1,
        &[
            "run",
            "--detach",
            "--",
            "sh",
            "-c",
            "head -c 1048576 /dev/zero | tr '\\0' x; echo END",
        ],
    )?
    .trim()
    .to_string();
    wait_ps(&hosts, &id, "finished", |p| p["status"] == "finished 0")?;
    let out = ferry_out(&hosts, 1, None, &["output", &id])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let note = String::from_utf8_lossy(&out.stderr);
    ensure!(
        note.contains("bytes of older output were dropped"),
        "no note: {note:?}"
    );
    let kept = out.stdout.len();
    ensure!(
        (65536..65536 + 4096).contains(&kept),
        "{kept} bytes kept for a bound of 65536"
    );
    ensure!(
        out.stdout.ends_with(b"xxxxEND\n"),
        "the end of the output was lost"
    );

    // `--follow` from the start of a running job: everything, then it ends with the job.
    let ticker = workload("ticker");
    let ticker = ticker.to_str().context("path")?;
    let id = ferry_ok(
        &hosts,
        1,
        &["run", "--detach", "--", ticker, "20", "0", "50"],
    )?
    .trim()
    .to_string();
    let text = ferry_ok(&hosts, 1, &["output", "--follow", &id])?;
    let want: String = (1..=20).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(text, want, "output --follow of {id}");
    ensure!(
        job(&ps(&hosts, 1, None)?, &id).is_none(),
        "{id} still listed"
    );
    Ok(())
}

#[test]
fn auto_picks_a_peer_ps_names_hosts_that_do_not_answer_and_another_host_controls_it() -> Result<()>
{
    let Some(_ctx) = setup("offload-auto") else {
        return Ok(());
    };
    let hosts = Hosts::up(3).context("hosts up")?;
    let ticker = workload("ticker");
    let ticker = ticker.to_str().context("path")?;
    // More memory than any peer has free: refused, naming each peer, and the job stays here.
    let out = ferry_out(
        &hosts,
        1,
        None,
        &["run", "--detach", "--auto", "--mem", "64T", "--", ticker],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a 64 TiB job found a peer");
    ensure!(
        err.contains("no peer can take the job") && err.contains("h2:") && err.contains("h3:"),
        "{err}"
    );
    let here = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_ps(&hosts, &here, "ran on h1", |p| {
        p["host"] == "h1" && p["status"] == "running"
    })?;
    ferry_ok(&hosts, 1, &["kill", &here])?;

    let id = ferry_ok(&hosts, 1, &["run", "--detach", "--auto", "--", ticker])?
        .trim()
        .to_string();
    let p = wait_ps(&hosts, &id, "ran on a peer", |p| p["status"] == "running")?;
    let on = p["host"].as_str().unwrap_or("").to_string();
    ensure!(on == "h2" || on == "h3", "--auto put it on {on:?}");
    let other = if on == "h2" { 3 } else { 2 };
    // A host that does not answer is shown as such; the job on the other one still is.
    hosts.link_down(other)?;
    let list = ps(&hosts, 1, None)?;
    hosts.link_up(other)?;
    ensure!(
        job(&list, &id).is_some_and(|p| p["status"] == "running"),
        "{list:?}"
    );
    ensure!(
        list.iter().any(|p| p["host"] == format!("h{other}")
            && p["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("unreachable"))),
        "h{other} is not shown unreachable: {list:?}"
    );
    // Asked on another host than its home (h2), `limits` and `kill` go to h1, which
    // manages it.
    ferry_ok(&hosts, 2, &["limits", &id, "--mem", "96M"])?;
    wait_ps(&hosts, &id, "showed the limit set from h2", |p| {
        p["max_mem"] == 96u64 << 20
    })?;
    ferry_ok(&hosts, 2, &["kill", &id, "--signal", "KILL"])?;
    wait_ps(&hosts, &id, "was killed", |p| {
        p["status"] == "killed SIGKILL"
    })?;
    // Its cgroups go once it ended (the copy's where it ran, the stub's on h1).
    let cpu_dir = format!("/sys/fs/cgroup/cpu/ferry/{id}@{on}");
    let start = Instant::now();
    while std::path::Path::new(&cpu_dir).exists()
        || std::path::Path::new(&cpu_dir.replace(&format!("@{on}"), "@h1")).exists()
    {
        ensure!(start.elapsed() < TIMEOUT, "{cpu_dir} (or @h1) still exists");
        thread::sleep(Duration::from_millis(100));
    }
    wait_no_parent_cgroup()?;
    Ok(())
}

/// Waits until the agents removed the `ferry` cgroups they made under the cpu and memory
/// hierarchies (cgroup v1 on this project's machine; v2: its root), once they are empty.
fn wait_no_parent_cgroup() -> Result<()> {
    let parents = [
        "/sys/fs/cgroup/cpu/ferry",
        "/sys/fs/cgroup/memory/ferry",
        "/sys/fs/cgroup/ferry",
    ];
    let start = Instant::now();
    while let Some(p) = parents.iter().find(|p| std::path::Path::new(p).exists()) {
        let left: Vec<String> = std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            start.elapsed() < TIMEOUT,
            "{p} is left behind (cgroups in it: {left:?})"
        );
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The processes a host runs for a peer are in its agent's store: after h2's agent restarts,
/// a job it hosts for h1 is still known there (with h1 out of reach, `ps` on h2 lists it, as
/// it lists every job it hosts for a home that does not answer).
#[test]
fn a_hosted_job_is_still_known_after_its_hosts_agent_restarts() -> Result<()> {
    let Some(_ctx) = setup("offload-hosted-restart") else {
        return Ok(());
    };
    let mut hosts = Hosts::up(2).context("hosts up")?;
    let out = ferry_ok(
        &hosts,
        1,
        &["run", "--detach", "--on", "h2", "--", "/bin/sleep", "300"],
    )?;
    let id = out.lines().next().context("no id")?.trim().to_string();
    let p = wait_ps(&hosts, &id, "ran on h2", |p| {
        p["host"] == "h2" && p["status"] == "running"
    })?;
    let pid = p["pid"].as_i64().context("no pid")?;
    hosts.kill_ferryd(2).context("kill h2's ferryd")?;
    hosts
        .start_ferryd(2, &[])
        .context("start h2's ferryd again")?;
    hosts.link_down(1).context("cut h1's link")?;
    let start = Instant::now();
    let r = loop {
        let list = ps(&hosts, 2, None)?;
        if job(&list, &id).is_some_and(|p| p["host"] == "h2" && p["pid"].as_i64() == Some(pid)) {
            break Ok(());
        }
        if start.elapsed() > TIMEOUT {
            break Err(anyhow::anyhow!(
                "the restarted h2 does not know {id} (pid {pid}) it hosts: {list:?}"
            ));
        }
        thread::sleep(Duration::from_millis(300));
    };
    hosts.link_up(1).context("bring h1's link back")?;
    r
}
