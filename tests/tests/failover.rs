//! Leases, fencing and failover (issue 13 items 3–5; docs/cluster.md "Leases and fencing",
//! "Failover") on 3 test hosts, with jobs checkpointed every second to 2 replicas:
//!
//! - a partition h1 | h2 h3: h1 freezes its replicated job (SIGSTOP: state `T`), h2 or h3
//!   restores it from the newest checkpoint at a higher epoch, and once the link is back the
//!   copy on h1 is gone (killed on learning the higher epoch) and exactly one copy runs; an
//!   unreplicated job on h1 keeps counting through the whole partition;
//! - h1 killed whole: the job runs again on h2 or h3 from its newest checkpoint within 10 s
//!   of h1 being declared down; `ferry ps` there shows it, with the reason (`failover: h1
//!   down` in `ferry migrations`). The time from the kill to the copy running is printed (the failover row of the
//!   bench). The restored copy is checkpointed on (same period and replica count) to the
//!   surviving member: a checkpoint of a higher seq and epoch appears there.

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ferry_tests::hosts::Hosts;
use ferry_tests::{ferry_bin, poll, replica_count, setup, workload};
use serde_json::Value;

fn ferry(hosts: &Hosts, n: u32, args: &[&str]) -> Result<String> {
    let bin = ferry_bin();
    let out = hosts
        .command(n, &bin)
        .args(args)
        .env("FERRY_SOCKET", hosts.socket(n))
        .stdin(std::process::Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "ferry {args:?} on h{n}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ferry hosts --json` of host `n` (empty while its membership starts).
fn members(hosts: &Hosts, n: u32) -> Result<Vec<Value>> {
    let Ok(out) = ferry(hosts, n, &["hosts", "--json"]) else {
        return Ok(Vec::new());
    };
    let v: Value = serde_json::from_str(&out)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

fn state_of(hosts: &Hosts, n: u32, name: &str) -> Result<String> {
    Ok(members(hosts, n)?
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["state"].as_str().map(str::to_owned))
        .unwrap_or_default())
}

/// Job `id` in `ferry ps --json` of host `n` (root sees every job).
fn ps_job(hosts: &Hosts, n: u32, id: &str) -> Result<Option<Value>> {
    let v: Value = serde_json::from_str(&ferry(hosts, n, &["ps", "--json"])?)?;
    Ok(v.as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == id).cloned()))
}

/// The state letter of `pid` in host `n`'s PID namespace (`None`: no such process).
fn proc_state(hosts: &Hosts, n: u32, pid: i64) -> Option<char> {
    let out = hosts.run(n, &["cat", &format!("/proc/{pid}/stat")]).ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.rsplit(')').next()?.trim().chars().next()
}

/// The lines of the agents' logs about leases and take-overs (for a failure's message).
fn lease_logs(hosts: &Hosts) -> String {
    let mut out = String::new();
    for n in 1..=3 {
        for l in hosts.ferryd_log(n).lines() {
            if ["lease", "take", "failover", "majority", "epoch", "frozen"]
                .iter()
                .any(|w| l.contains(w))
            {
                out.push_str(&format!("h{n}: {l}\n"));
            }
        }
    }
    for n in 2..=3 {
        let ps = ferry(hosts, n, &["ps", "--json"]).unwrap_or_else(|e| format!("{e:#}"));
        out.push_str(&format!("h{n} ps: {ps}\n"));
    }
    out
}

/// The meta of the checkpoint of `id` kept on host `n` (`Null`: none).
fn replica_meta(hosts: &Hosts, n: u32, id: &str) -> Value {
    let p = hosts
        .state_dir(n)
        .join("replicas")
        .join(id)
        .join("meta.json");
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null)
}

fn replica_seq(hosts: &Hosts, n: u32, id: &str) -> u64 {
    replica_meta(hosts, n, id)["seq"].as_u64().unwrap_or(0)
}

/// Starts `replica_counter DIR 4 100 MARK` on h1 (replicated with `ckpt`), returns its id.
fn start_job(hosts: &Hosts, dir: &Path, ckpt: bool) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    let prog = workload("replica_counter");
    let mut args = vec!["run", "--detach"];
    if ckpt {
        args.extend(["--checkpoint-every", "1s", "--replicas", "2"]);
    }
    let d = dir.to_str().context("path")?.to_string();
    let p = prog.to_str().context("path")?.to_string();
    args.extend(["--", &p, &d, "4", "100", "FAILOVER-MARK"]);
    let out = ferry(hosts, 1, &args)?;
    let id = out.lines().next().context("no job id")?.trim().to_string();
    poll(Duration::from_secs(10), "the job ready", || {
        Ok(dir.join("ready").exists().then_some(()))
    })?;
    Ok(id)
}

/// Waits until h2 and h3 both keep a checkpoint of `id` and h1 runs it unfenced.
fn replicated(hosts: &Hosts, id: &str) -> Result<()> {
    poll(Duration::from_secs(30), "checkpoints on h2 and h3", || {
        Ok((replica_seq(hosts, 2, id) >= 2 && replica_seq(hosts, 3, id) >= 2).then_some(()))
    })?;
    poll(Duration::from_secs(10), "the job leased on h1", || {
        Ok(ps_job(hosts, 1, id)?.filter(|p| p["status"] == "running"))
    })?;
    Ok(())
}

/// Where `id` runs as a job of its own host on h2 or h3: (host, pid).
fn running_elsewhere(hosts: &Hosts, id: &str) -> Result<Vec<(u32, i64)>> {
    let mut out = Vec::new();
    for n in [2u32, 3] {
        if let Some(p) = ps_job(hosts, n, id)?
            && p["host"] == Hosts::name(n).as_str()
            && p["status"] == "running"
        {
            out.push((n, p["pid"].as_i64().unwrap_or(0)));
        }
    }
    Ok(out)
}

#[test]
fn partition_fences_h1_h2_h3_take_over_and_one_copy_is_left() {
    let Some(ctx) = setup("failover-partition") else {
        return;
    };
    let run = || -> Result<()> {
        let hosts = Hosts::up(3)?;
        poll(Duration::from_secs(20), "all three alive on h1", || {
            Ok((members(&hosts, 1)?
                .iter()
                .filter(|m| m["state"] == "alive")
                .count()
                == 3)
                .then_some(()))
        })?;
        let rdir: PathBuf = ctx.dir.path().join("replicated");
        let udir: PathBuf = ctx.dir.path().join("unreplicated");
        let id = start_job(&hosts, &rdir, true)?;
        let plain = start_job(&hosts, &udir, false)?;
        replicated(&hosts, &id)?;
        let pid1 = ps_job(&hosts, 1, &id)?.context("ps")?["pid"]
            .as_i64()
            .context("pid")?;

        hosts.cut_link(1)?;
        let cut = Instant::now();
        let mut plain_samples = vec![replica_count(&udir).context("count")?];
        // h1 freezes its replicated job (a lease lasts 2.85 s on the holder's side).
        let frozen = poll(
            Duration::from_secs(8),
            "h1 freezes its replicated job",
            || {
                plain_samples.extend(replica_count(&udir));
                Ok((proc_state(&hosts, 1, pid1) == Some('T')).then(|| cut.elapsed()))
            },
        )?;
        eprintln!("h1 froze its replicated job {frozen:?} after the cut");
        // h2 or h3 restores it.
        let taken = poll(Duration::from_secs(30), "h2 or h3 restores the job", || {
            plain_samples.extend(replica_count(&udir));
            let r = running_elsewhere(&hosts, &id)?;
            Ok((!r.is_empty()).then_some(r))
        })
        .with_context(|| lease_logs(&hosts))?;
        eprintln!("restored {taken:?} {:?} after the cut", cut.elapsed());
        ensure!(taken.len() == 1, "restored twice: {taken:?}");
        let (n_new, pid_new) = taken[0];
        let m = ferry(&hosts, n_new, &["migrations"])?;
        ensure!(
            m.contains("failover: h1 down"),
            "ferry migrations on h{n_new} does not show the failover: {m}"
        );
        // The copy counts on (from its checkpoint).
        let c0 = replica_count(&rdir).context("count")?;
        poll(
            Duration::from_secs(10),
            "the restored copy counting",
            || Ok(replica_count(&rdir).filter(|c| c.0 != c0.0).map(|_| ())),
        )?;
        // h1's copy is still frozen.
        ensure!(
            proc_state(&hosts, 1, pid1) == Some('T'),
            "h1's copy runs while cut off"
        );
        for _ in 0..10 {
            plain_samples.extend(replica_count(&udir));
            sleep(Duration::from_millis(100));
        }

        hosts.restore_link(1)?;
        // The stale copy on h1 is killed once h1 learns the higher epoch.
        poll(Duration::from_secs(20), "h1's stale copy gone", || {
            plain_samples.extend(replica_count(&udir));
            Ok(matches!(proc_state(&hosts, 1, pid1), None | Some('Z')).then_some(()))
        })?;
        // Exactly one copy runs, and keeps running.
        sleep(Duration::from_secs(3));
        let now = running_elsewhere(&hosts, &id)?;
        ensure!(
            now == vec![(n_new, pid_new)],
            "copies after the heal: {now:?}"
        );
        ensure!(
            matches!(proc_state(&hosts, 1, pid1), None | Some('Z')),
            "h1's copy came back"
        );
        let where1 = ps_job(&hosts, 1, &id)?.context("h1 ps")?;
        ensure!(
            where1["host"] == Hosts::name(n_new).as_str(),
            "h1's ps says {where1}"
        );

        // The unreplicated job counted all along: no gap of a second.
        plain_samples.extend(replica_count(&udir));
        ensure!(plain_samples.len() > 40, "samples: {}", plain_samples.len());
        // (The job counts every 10 ms: over any stretch of a second or more it must have
        // counted at least a quarter of the elapsed time's ticks — a loaded machine slows its
        // ticks, a freeze of a second stops them.)
        for (i, a) in plain_samples.iter().enumerate() {
            let Some(b) = plain_samples[i..].iter().find(|b| b.1 >= a.1 + 1000) else {
                break;
            };
            let (dc, dt) = (b.0.saturating_sub(a.0), b.1 - a.1);
            ensure!(
                dc * 40 >= dt,
                "the unreplicated job counted {dc} in {dt} ms during the partition"
            );
        }
        let span = plain_samples.last().context("no sample")?.1 - plain_samples[0].1;
        ensure!(span > 10_000, "the samples span only {span} ms");
        let p = ps_job(&hosts, 1, &plain)?.context("ps")?;
        ensure!(p["status"] == "running", "unreplicated job: {p}");
        let _ = hosts.run(n_new, &["kill", "-KILL", &pid_new.to_string()]);
        Ok(())
    };
    if let Err(e) = run() {
        panic!("{e:#}");
    }
}

#[test]
fn host_killed_the_job_runs_on_from_its_newest_checkpoint_within_10s_of_down() {
    let Some(ctx) = setup("failover-kill") else {
        return;
    };
    let run = || -> Result<()> {
        let mut hosts = Hosts::up(3)?;
        poll(Duration::from_secs(20), "all three alive on h1", || {
            Ok((members(&hosts, 1)?
                .iter()
                .filter(|m| m["state"] == "alive")
                .count()
                == 3)
                .then_some(()))
        })?;
        let dir: PathBuf = ctx.dir.path().join("job");
        let id = start_job(&hosts, &dir, true)?;
        replicated(&hosts, &id)?;
        let seq = replica_seq(&hosts, 2, &id).max(replica_seq(&hosts, 3, &id));
        let before = replica_count(&dir).context("count")?;
        let epoch_before = [2u32, 3]
            .map(|n| replica_meta(&hosts, n, &id)["epoch"].as_u64().unwrap_or(0))
            .into_iter()
            .max()
            .unwrap_or(0);
        hosts.kill_host(1)?;
        let killed = Instant::now();
        let killed_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        let down = poll(Duration::from_secs(15), "h1 down on h2 and h3", || {
            Ok(
                (state_of(&hosts, 2, "h1")? == "down" && state_of(&hosts, 3, "h1")? == "down")
                    .then(|| killed.elapsed()),
            )
        })?;
        // Running again: the copy ticks (its count file, in a directory every host shares,
        // carries the time of its last tick).
        let first = poll(
            Duration::from_secs(25),
            "a copy ticking after the kill",
            || Ok(replica_count(&dir).filter(|c| c.1 > killed_ms + 500)),
        )
        .with_context(|| lease_logs(&hosts))?;
        let up = killed.elapsed();
        let taken = running_elsewhere(&hosts, &id)?;
        ensure!(
            !taken.is_empty(),
            "no host lists the job: {}",
            lease_logs(&hosts)
        );
        eprintln!(
            "failover: h1 killed → down after {down:?} → running on h{} after {up:?} (checkpoint seq ≥ {seq})",
            taken[0].0
        );
        ensure!(taken.len() == 1, "restored twice: {taken:?}");
        ensure!(
            up < down + Duration::from_secs(10),
            "restored {:?} after h1 was declared down",
            up - down
        );
        ensure!(
            first.0 + 500 >= before.0,
            "the copy counts from {} far behind {} before the kill",
            first.0,
            before.0
        );
        let m = ferry(&hosts, taken[0].0, &["migrations"])?;
        ensure!(
            m.contains("failover: h1 down"),
            "ferry migrations does not show the failover: {m}"
        );
        // The restored copy is checkpointed on, with the same period, to the surviving
        // member: a checkpoint of a higher seq, at the new epoch, taken by the new holder.
        let (n_new, other) = (taken[0].0, if taken[0].0 == 2 { 3 } else { 2 });
        let restored = replica_seq(&hosts, n_new, &id);
        let again = Instant::now();
        let meta = poll(
            Duration::from_secs(15),
            "a new checkpoint from the new holder on the other host",
            || {
                let m = replica_meta(&hosts, other, &id);
                Ok((m["seq"].as_u64().unwrap_or(0) > restored
                    && m["host"] == Hosts::name(n_new).as_str())
                .then_some(m))
            },
        )
        .with_context(|| lease_logs(&hosts))?;
        eprintln!(
            "checkpointed again: seq {} (restored {restored}) on h{other} {:?} after the copy ran; every {} ms, {} replicas",
            meta["seq"],
            again.elapsed(),
            meta["every_ms"],
            meta["replicas"]
        );
        ensure!(
            meta["epoch"].as_u64().unwrap_or(0) > epoch_before,
            "the new checkpoint is not at a higher epoch: {meta}"
        );
        ensure!(
            meta["every_ms"] == 1000 && meta["replicas"] == 2,
            "the period or replica count changed: {meta}"
        );
        let _ = hosts.run(taken[0].0, &["kill", "-KILL", &taken[0].1.to_string()]);
        Ok(())
    };
    if let Err(e) = run() {
        panic!("{e:#}");
    }
}
