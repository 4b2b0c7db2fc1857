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

/// The victims (copies or originals) alive in host `n` (zombies not counted).
fn victims_in(hosts: &Hosts, n: u32) -> Vec<i32> {
    let out = hosts
        .run(n, &["ps", "-C", "migrate", "-o", "pid=,stat="])
        .expect("ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let pid = w.next()?.parse().ok()?;
            (!w.next()?.starts_with('Z')).then_some(pid)
        })
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
    record_saying(hosts, n, state, "")
}

/// Waits until host `n`'s newest record is in `state` with `text` in its detail; returns it.
fn record_saying(hosts: &Hosts, n: u32, state: &str, text: &str) -> serde_json::Value {
    let mut last = None;
    let r = wait_for(
        &format!("h{n}'s last record to be {state} ({text:?})"),
        Duration::from_secs(40),
        || {
            last = records(hosts, n)
                .into_iter()
                .max_by_key(|r| r["started_unix_ms"].as_u64().unwrap_or(0));
            last.as_ref().is_some_and(|r| {
                r["state"] == state && r["detail"].as_str().unwrap_or_default().contains(text)
            })
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

/// The summary's `P pushed, F on fault` of a lazy migration.
fn pushed_and_asked(out: &str) -> (u64, u64) {
    let after = out
        .split(" followed: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no lazy summary in {out}"));
    let mut words = after.split_whitespace();
    let pushed = words.next().and_then(|n| n.parse().ok());
    let asked = after
        .split(" pushed, ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    match (pushed, asked) {
        (Some(p), Some(a)) => (p, a),
        _ => panic!("no pushed/on-fault counts in {out}"),
    }
}

/// The victim reads its 256 MiB back from the last page down (`--read-back`, 400 MB/s),
/// each page checked against what it wrote, while the origin pushes the pages from the
/// first one up: its first reads on h2 are of pages the push reaches last. They are served
/// on fault (the summary counts them), every page it read and every page of its own final
/// check holds what the original had, and it counts on.
#[test]
fn lazy_faults_ahead_of_the_push_are_served() {
    let Some((ctx, hosts)) = up("lazy-ahead") else {
        return;
    };
    let v = start_victim(
        &hosts,
        &ctx,
        "v",
        256,
        &["--write", "10", "--read-back", "400"],
    );
    check(&hosts, 1, &v, v.pid);
    let pid = v.pid.to_string();
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h2", "--lazy"]);
    let out = text(&o);
    assert!(o.status.success(), "migrate --lazy: {out}");
    eprintln!("{out}");
    let (pushed, asked) = pushed_and_asked(&out);
    assert!(
        asked > 0,
        "no page was served on fault ({pushed} pushed): the victim's reads from the top \
         should have come before the push got there: {out}"
    );
    let copy = remote_pid(&o);
    let first = check(&hosts, 2, &v, copy);
    sleep(Duration::from_millis(300));
    let second = check(&hosts, 2, &v, copy);
    assert!(counter(&second) > counter(&first), "{first} / {second}");
    let read = |line: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("read="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no read count in {line}"))
    };
    assert!(
        read(&second) > read(&first),
        "it reads back no more on h2: {first} / {second}"
    );
    assert_eq!(victims_in(&hosts, 2), vec![copy]);
    assert!(victims_in(&hosts, 1).is_empty(), "a victim left on h1");
    last_record_state(&hosts, 1, "done");
}

/// Starts `ferry migrate PID --to h2 --lazy` on h1 in the background; returns once h1's
/// record says the copy runs with its pages following (after the commit).
fn migrate_lazy_in_background(hosts: &Hosts, pid: i32) -> Child {
    let child = Command::new(ferry_bin())
        .args(["migrate", &pid.to_string(), "--to", "h2", "--lazy"])
        .env("FERRY_SOCKET", hosts.socket(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry migrate");
    record_saying(hosts, 1, "committed", "pages following");
    child
}

/// The original on h1: there, and (once resumed) passing its own check and counting on.
fn original_runs_on(hosts: &Hosts, v: &Victim) {
    assert_eq!(victims_in(hosts, 1), vec![v.pid], "the original on h1");
    let first = check(hosts, 1, v, v.pid);
    sleep(Duration::from_millis(300));
    let second = check(hosts, 1, v, v.pid);
    assert!(counter(&second) > counter(&first), "{first} / {second}");
}

/// h2's link is cut while the copy runs there with pages still to come (the push slowed
/// by FERRY_FAULT lazy-slow-push): h2 says the copy could not be completed and ends it
/// ("lazy migration lost its origin with N pages missing"); h1 keeps the original frozen,
/// not ended, as its record says, until h2 answers again; once the link is back, h2's
/// answer (its copy ended) resumes the original: exactly one copy runs, the original, with
/// its memory intact. `ferry migrate` fails saying so.
#[test]
fn lazy_link_cut_in_the_window_keeps_exactly_one_copy() {
    let Some((ctx, mut hosts)) = up("lazy-link-cut") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 256, &["--write", "10"]);
    check(&hosts, 1, &v, v.pid);
    hosts.kill_ferryd(1).expect("kill ferryd");
    hosts
        .start_ferryd(1, &[("FERRY_FAULT", "lazy-slow-push")])
        .expect("start ferryd with the fault");
    let migrate = migrate_lazy_in_background(&hosts, v.pid);
    hosts.cut_link(2).expect("cut h2's link");
    let lost = last_record_state(&hosts, 2, "lost");
    let detail = lost["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("lazy migration lost its origin with") && detail.contains("pages missing"),
        "{lost}"
    );
    wait_for("no copy on h2", Duration::from_secs(10), || {
        victims_in(&hosts, 2).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", victims_in(&hosts, 2)));
    // The original is held, not ended, while h2 cannot be asked.
    record_saying(&hosts, 1, "committed", "the original is held frozen here");
    assert_eq!(victims_in(&hosts, 1), vec![v.pid], "the original on h1");
    hosts.restore_link(2).expect("restore h2's link");
    record_saying(&hosts, 1, "aborted", "the original resumed here");
    let o = migrate.wait_with_output().expect("ferry migrate");
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("lazy migration lost") && out.contains("the original resumed here"),
        "{out}"
    );
    original_runs_on(&hosts, &v);
    assert!(victims_in(&hosts, 2).is_empty(), "a copy on h2 too");
}

/// h2's agent is killed while the copy runs there with pages still to come: the copy's
/// guard ends it at once (it never runs on zeros where its memory had not arrived); h1
/// keeps the original frozen until h2's agent is back, whose record then says the copy was
/// lost with it; h1 resumes the original, and both hosts' `ferry migrations` say so.
#[test]
fn lazy_destination_killed_in_the_window_resumes_the_original() {
    let Some((ctx, mut hosts)) = up("lazy-dest-killed") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 256, &["--write", "10"]);
    check(&hosts, 1, &v, v.pid);
    hosts.kill_ferryd(1).expect("kill ferryd");
    hosts
        .start_ferryd(1, &[("FERRY_FAULT", "lazy-slow-push")])
        .expect("start ferryd with the fault");
    let migrate = migrate_lazy_in_background(&hosts, v.pid);
    assert_eq!(victims_in(&hosts, 2).len(), 1, "the copy runs on h2");
    hosts.kill_ferryd(2).expect("kill h2's ferryd");
    wait_for("the copy on h2 to end", Duration::from_secs(10), || {
        victims_in(&hosts, 2).is_empty()
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: the copy outlived its agent: {:?}",
            victims_in(&hosts, 2)
        )
    });
    record_saying(&hosts, 1, "committed", "the original is held frozen here");
    assert_eq!(victims_in(&hosts, 1), vec![v.pid], "the original on h1");
    hosts.start_ferryd(2, &[]).expect("restart h2's ferryd");
    let lost = last_record_state(&hosts, 2, "lost");
    assert!(
        lost["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("this agent stopped while the copy's pages were still arriving"),
        "{lost}"
    );
    record_saying(&hosts, 1, "aborted", "the original resumed here");
    let o = migrate.wait_with_output().expect("ferry migrate");
    assert!(!o.status.success(), "{}", text(&o));
    original_runs_on(&hosts, &v);
    assert!(victims_in(&hosts, 2).is_empty(), "a copy on h2 too");
}

/// KiB resident in the victim's buffer (the area of `mib` MiB) of `pid` in host `n`, from
/// its `smaps`.
fn buffer_rss_kb(hosts: &Hosts, n: u32, pid: i32, mib: u64) -> u64 {
    let smaps = hosts
        .run_ok(n, &["cat", &format!("/proc/{pid}/smaps")])
        .expect("smaps");
    let size = format!("{} kB", mib * 1024);
    let mut in_buffer = false;
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Size:") {
            in_buffer = v.trim() == size;
        } else if in_buffer && let Some(v) = line.strip_prefix("Rss:") {
            return v.trim().trim_end_matches("kB").trim().parse().expect("Rss");
        }
    }
    panic!("no {mib} MiB area in h{n}'s pid {pid}: {smaps}");
}

/// The pages the original never had, counted in the summary ("N pages of the areas that
/// followed were never there"), if it says so.
fn named_absent(out: &str) -> Option<u64> {
    out.split("; ")
        .find(|p| p.contains("pages of the areas that followed were never there"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A 64 MiB buffer with 16 pages of every 64 dropped (`--holes`: zeros when read; the
/// victim's own checksum reads them at once, which maps the shared zero page there)
/// migrated with `--lazy`: the origin walks the buffer only once the copy runs and names
/// the dropped pages absent instead of sending them (the summary counts them);
/// once every page arrived the copy has no more of the buffer resident than the original
/// had (the holes were not filled), its own check finds the dropped pages zero and every
/// other page holding its generation, and it counts on.
#[test]
fn lazy_pages_the_original_never_had_are_named_absent() {
    let Some((ctx, hosts)) = up("lazy-absent") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 64, &["--write", "1", "--holes"]);
    check(&hosts, 1, &v, v.pid);
    let before = buffer_rss_kb(&hosts, 1, v.pid, 64);
    assert!(
        before < 56 * 1024,
        "the holes are resident on h1: {before} kB"
    );
    let pid = v.pid.to_string();
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h2", "--lazy"]);
    let out = text(&o);
    assert!(o.status.success(), "migrate --lazy: {out}");
    eprintln!("{out}");
    let absent = named_absent(&out).unwrap_or_else(|| panic!("no absent pages named: {out}"));
    // 4096 dropped, less those the writer (1 MB/s) filled again since.
    assert!(absent >= 2048, "only {absent} pages named absent: {out}");
    let copy = remote_pid(&o);
    record_saying(&hosts, 2, "done", "pages arrived");
    let after = buffer_rss_kb(&hosts, 2, copy, 64);
    // The writer's pages since (1 MB/s) and 2 MiB of slack; the holes are 16 MiB.
    assert!(
        after <= before + 6 * 1024,
        "the copy has {after} kB of its buffer resident, the original had {before} kB"
    );
    let first = check(&hosts, 2, &v, copy);
    sleep(Duration::from_millis(300));
    let second = check(&hosts, 2, &v, copy);
    assert!(counter(&second) > counter(&first), "{first} / {second}");
    assert_eq!(victims_in(&hosts, 2), vec![copy]);
    assert!(victims_in(&hosts, 1).is_empty(), "a victim left on h1");
}

/// A destination that speaks migration protocol 1.2 (FERRY_FAULT protocol-minor-2), from
/// before the absent runs: the origin walks the pages under the freeze as then and names no
/// page absent (the holes, where the zero page is mapped, are sent as pages); the copy
/// passes its own check and counts on.
#[test]
fn lazy_to_a_destination_of_protocol_1_2_walks_under_the_freeze() {
    let Some((ctx, mut hosts)) = up("lazy-1-2") else {
        return;
    };
    hosts.kill_ferryd(2).expect("kill ferryd");
    hosts
        .start_ferryd(2, &[("FERRY_FAULT", "protocol-minor-2")])
        .expect("start ferryd announcing 1.2");
    let v = start_victim(&hosts, &ctx, "v", 64, &["--write", "1", "--holes"]);
    let pid = v.pid.to_string();
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h2", "--lazy"]);
    let out = text(&o);
    assert!(o.status.success(), "migrate --lazy: {out}");
    eprintln!("{out}");
    assert_eq!(named_absent(&out), None, "absent pages named to 1.2: {out}");
    let (pushed, asked) = pushed_and_asked(&out);
    assert!(
        pushed + asked >= 16_000,
        "{pushed} pushed, {asked} on fault: {out}"
    );
    let copy = remote_pid(&o);
    let first = check(&hosts, 2, &v, copy);
    sleep(Duration::from_millis(300));
    let second = check(&hosts, 2, &v, copy);
    assert!(counter(&second) > counter(&first), "{first} / {second}");
    assert!(victims_in(&hosts, 1).is_empty(), "a victim left on h1");
}
