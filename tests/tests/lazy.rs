//! Post-copy migration (`ferry migrate --lazy`, docs/migration.md "Post-copy (--lazy)")
//! between two test hosts: the copy runs before its memory has arrived, its faults are
//! served from the origin while the rest is pushed; afterwards nothing of Ferry's is left in
//! it. A lost origin during that window is reported by the destination and no copy runs on.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::Duration;

use anyhow::Context;
use ferry_tests::hosts::Hosts;
use ferry_tests::{TestCtx, ferry_bin, setup, workload};
use ferry_tests::{status_file, wait_for};

/// A victim (tests/workloads/migrate.c) started inside host 1.
struct Victim {
    state: PathBuf,
    pid: i32,
    nsenter: Child,
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.nsenter.kill();
        let _ = self.nsenter.wait();
    }
}

fn start_victim(hosts: &Hosts, ctx: &TestCtx, name: &str, mib: u32, extra: &[&str]) -> Victim {
    let state = ctx.path(name);
    std::fs::create_dir_all(&state).expect("state dir");
    let nsenter = hosts
        .command(1, workload("migrate"))
        .arg(&state)
        .arg(mib.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the victim in h1");
    wait_for("the victim to be ready", Duration::from_secs(60), || {
        status_file(&state).contains("ready pid=")
    })
    .expect("victim ready");
    let pid = status_file(&state)
        .lines()
        .find_map(|l| l.strip_prefix("ready pid="))
        .and_then(|p| p.trim().parse().ok())
        .expect("ready line");
    Victim {
        state,
        pid,
        nsenter,
    }
}

/// Asks the victim (`pid` in host `n`) to verify itself; returns its answer.
fn check(hosts: &Hosts, n: u32, v: &Victim, pid: i32) -> String {
    let before = status_file(&v.state).lines().count();
    let out = hosts
        .run(n, &["kill", "-USR1", &pid.to_string()])
        .expect("kill -USR1");
    assert!(out.status.success(), "kill -USR1 {pid} in h{n}");
    wait_for("the victim's answer", Duration::from_secs(30), || {
        status_file(&v.state).lines().count() > before
    })
    .expect("answer");
    let line = status_file(&v.state)
        .lines()
        .nth(before)
        .unwrap_or_default()
        .to_string();
    assert!(line.starts_with("ok "), "the victim says: {line}");
    line
}

fn counter(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("counter="))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {line}"))
}

fn victims_in(hosts: &Hosts, n: u32) -> Vec<i32> {
    let out = hosts.run(n, &["pgrep", "-x", "migrate"]).expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn ferry(hosts: &Hosts, n: u32, args: &[&str]) -> Output {
    Command::new(ferry_bin())
        .args(args)
        .env("FERRY_SOCKET", hosts.socket(n))
        .stdin(Stdio::null())
        .output()
        .expect("run ferry")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn records(hosts: &Hosts, n: u32) -> Vec<serde_json::Value> {
    let o = ferry(hosts, n, &["migrations", "--json"]);
    assert!(o.status.success(), "ferry migrations: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

/// Waits until host `n`'s newest record is in `state`; returns it.
fn last_record_state(hosts: &Hosts, n: u32, state: &str) -> serde_json::Value {
    let mut last = None;
    let r = wait_for(
        &format!("h{n}'s last record to be {state}"),
        Duration::from_secs(40),
        || {
            last = records(hosts, n)
                .into_iter()
                .max_by_key(|r| r["started_unix_ms"].as_u64().unwrap_or(0));
            last.as_ref().is_some_and(|r| r["state"] == state)
        },
    );
    if let Err(e) = r {
        panic!("{e}: h{n} has {last:?}\n{}", hosts.ferryd_log(n));
    }
    last.unwrap_or_default()
}

fn remote_pid(o: &Output) -> i32 {
    let s = String::from_utf8_lossy(&o.stdout);
    s.split(" as pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no remote pid in {s:?}"))
}

fn up(name: &str) -> Option<(TestCtx, Hosts)> {
    let ctx = setup(name)?;
    let hosts = Hosts::up(2).context("hosts up").expect("two hosts");
    Some((ctx, hosts))
}

/// 256 MiB, rewritten at 10 MB/s (its faults on pages not there yet are writes too),
/// migrated with `--lazy`: it keeps counting on h2, its own check of every page passes,
/// every page followed after the copy started, and afterwards no area of the copy is
/// registered with a userfaultfd (`um` in smaps), it holds none, and no mapping of Ferry's.
#[test]
fn lazy_migration_of_a_large_heap() {
    let Some((ctx, hosts)) = up("lazy-heap") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 256, &["--write", "10"]);
    check(&hosts, 1, &v, v.pid);
    let pid = v.pid.to_string();
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h2", "--lazy"]);
    let out = text(&o);
    assert!(o.status.success(), "migrate --lazy: {out}");
    eprintln!("{out}");
    let followed: u64 = out
        .split("lazy: downtime ")
        .nth(1)
        .and_then(|r| r.split("; ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no lazy summary in {out}"));
    // The buffer's 65536 pages (less what travelled in the image: nothing of the buffer).
    assert!(followed >= 65536, "only {followed} pages followed: {out}");
    let copy = remote_pid(&o);
    let first = check(&hosts, 2, &v, copy);
    sleep(Duration::from_millis(300));
    let second = check(&hosts, 2, &v, copy);
    assert!(
        counter(&second) > counter(&first),
        "it does not count on: {first} / {second}"
    );
    assert!(victims_in(&hosts, 1).is_empty(), "a victim left on h1");
    assert_eq!(victims_in(&hosts, 2), vec![copy]);
    // Nothing of Ferry's in the copy.
    let smaps = hosts
        .run_ok(2, &["cat", &format!("/proc/{copy}/smaps")])
        .expect("smaps");
    let registered: Vec<&str> = smaps
        .lines()
        .filter(|l| {
            l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "um" || f == "uw")
        })
        .collect();
    assert!(
        registered.is_empty(),
        "areas still registered: {registered:?}"
    );
    let fds = hosts
        .run_ok(2, &["ls", "-l", &format!("/proc/{copy}/fd")])
        .expect("ls fd");
    assert!(!fds.contains("userfaultfd"), "{fds}");
    let fdinfo = hosts
        .run_ok(
            2,
            &[
                "sh",
                "-c",
                &format!("cat /proc/{copy}/fdinfo/* 2>/dev/null"),
            ],
        )
        .expect("fdinfo");
    assert!(
        !fdinfo.contains("API:") && !fdinfo.contains("pending:"),
        "a userfaultfd in the copy's fdinfo: {fdinfo}"
    );
    let maps = hosts
        .run_ok(2, &["cat", &format!("/proc/{copy}/maps")])
        .expect("maps");
    // Neither the stub nor the restorer's injection area (private anonymous rwx).
    let ours: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains("ferry-stub") || l.contains("ferryd") || l.contains(" rwxp "))
        .collect();
    assert!(ours.is_empty(), "mappings of Ferry's in the copy: {ours:?}");
    let dest = last_record_state(&hosts, 2, "done");
    let detail = dest["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("pages arrived"), "{dest}");
    last_record_state(&hosts, 1, "done");
}

/// The origin's agent dies (FERRY_FAULT origin-exit-lazy, once 16 MiB were pushed) while the
/// copy runs on h2 with pages missing: h2 says so in its record and its log ("lazy migration
/// lost its origin with N pages missing") and ends the copy; the original ended with its
/// agent; no copy runs anywhere; the restarted origin agent records the loss too.
#[test]
fn lazy_lost_origin_is_reported_and_no_copy_runs() {
    let Some((ctx, mut hosts)) = up("lazy-lost-origin") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 256, &["--write", "10"]);
    check(&hosts, 1, &v, v.pid);
    hosts.kill_ferryd(1).expect("kill ferryd");
    hosts
        .start_ferryd(1, &[("FERRY_FAULT", "origin-exit-lazy")])
        .expect("start ferryd with the fault");
    let pid = v.pid.to_string();
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h2", "--lazy"]);
    assert!(
        !o.status.success(),
        "migrated despite the fault: {}",
        text(&o)
    );
    let rec = last_record_state(&hosts, 2, "lost");
    let detail = rec["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.contains("lazy migration lost its origin with") && detail.contains("pages missing"),
        "{rec}"
    );
    let missing: u64 = detail
        .split("lost its origin with ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(missing > 0, "{detail}");
    assert!(
        hosts
            .ferryd_log(2)
            .contains("lazy migration lost its origin with"),
        "{}",
        hosts.ferryd_log(2)
    );
    wait_for("no copy anywhere", Duration::from_secs(20), || {
        victims_in(&hosts, 1).is_empty() && victims_in(&hosts, 2).is_empty()
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: h1 {:?}, h2 {:?}",
            victims_in(&hosts, 1),
            victims_in(&hosts, 2)
        )
    });
    let _ = hosts.kill_ferryd(1);
    hosts.start_ferryd(1, &[]).expect("restart ferryd");
    let origin = last_record_state(&hosts, 1, "lost");
    assert!(
        origin["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("lazy"),
        "{origin}"
    );
    // Still none, a while later.
    sleep(Duration::from_secs(1));
    assert!(victims_in(&hosts, 1).is_empty() && victims_in(&hosts, 2).is_empty());
}
