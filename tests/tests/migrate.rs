//! `ferry migrate` between two test hosts: the happy path, refusal and shipping of files the
//! destination lacks, and each injected fault (FERRY_FAULT) — after every one, the process runs
//! exactly once with its state intact (its own verification), and `ferry migrations` on both
//! hosts says what happened.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_tests::hosts::Hosts;
use ferry_tests::{TestCtx, alive, ferry_bin, setup, workload};
use ferry_tests::{status_file, wait_for};

/// A victim started inside host 1.
struct Victim {
    state: PathBuf,
    /// Its PID inside host 1.
    pid: i32,
    nsenter: Child,
    /// Its descriptors at the start (nothing of Ferry's may stay in it).
    fds: usize,
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.nsenter.kill();
        let _ = self.nsenter.wait();
    }
}

/// Starts the victim in host 1 with `mib` MiB of memory and `extra` arguments.
fn start_victim(hosts: &Hosts, ctx: &TestCtx, name: &str, mib: u32, extra: &[&str]) -> Victim {
    let state = ctx.path(name);
    std::fs::create_dir_all(&state).expect("state dir");
    let bin = workload("migrate");
    let nsenter = hosts
        .command(1, &bin)
        .arg(&state)
        .arg(mib.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the victim in h1");
    wait_for("the victim to be ready", Duration::from_secs(20), || {
        status_file(&state).contains("ready pid=")
    })
    .expect("victim ready");
    let s = status_file(&state);
    let pid = s
        .lines()
        .find_map(|l| l.strip_prefix("ready pid="))
        .and_then(|p| p.trim().parse().ok())
        .expect("ready line");
    let fds = fd_count(hosts, 1, pid);
    Victim {
        state,
        pid,
        nsenter,
        fds,
    }
}

/// The number of descriptors of `pid` inside host `n`.
fn fd_count(hosts: &Hosts, n: u32, pid: i32) -> usize {
    hosts
        .run_ok(n, &["ls", &format!("/proc/{pid}/fd")])
        .expect("ls fd")
        .split_whitespace()
        .count()
}

/// Nothing of a live migration's write tracking stayed in the original (host 1): no area
/// registered with a userfaultfd (`uw` in smaps), no descriptor more than it had.
fn nothing_of_ferry_left(hosts: &Hosts, v: &Victim, pid: i32) {
    let smaps = hosts
        .run_ok(1, &["cat", &format!("/proc/{pid}/smaps")])
        .expect("smaps");
    assert!(
        !smaps
            .lines()
            .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw")),
        "an area of the original is still registered for write tracking (uw)"
    );
    // A copy that came back has the relay's descriptors in place of its stdio.
    if pid == v.pid {
        assert_eq!(
            fd_count(hosts, 1, pid),
            v.fds,
            "the original's descriptors changed"
        );
    }
}

/// Asks the victim (PID `pid` inside host `n`) to verify itself; returns its answer.
fn check(hosts: &Hosts, n: u32, v: &Victim, pid: i32) -> String {
    let before = status_file(&v.state).lines().count();
    let out = hosts
        .run(n, &["kill", "-USR1", &pid.to_string()])
        .expect("kill -USR1");
    assert!(
        out.status.success(),
        "kill -USR1 {pid} in h{n}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the victim's answer", Duration::from_secs(20), || {
        status_file(&v.state).lines().count() > before
    })
    .expect("answer");
    let s = status_file(&v.state);
    let line = s.lines().nth(before).unwrap_or_default().to_string();
    assert!(line.starts_with("ok "), "the victim says: {line}");
    line
}

/// PIDs of processes named `migrate` (the victim) inside host `n`.
fn victims_in(hosts: &Hosts, n: u32) -> Vec<i32> {
    let out = hosts.run(n, &["pgrep", "-x", "migrate"]).expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The process runs exactly once, on host `n`, as `pid`, and says its state is intact.
fn exactly_once(hosts: &Hosts, v: &Victim, n: u32, pid: i32) {
    let other = 3 - n;
    // A copy being discarded may take a moment to go.
    wait_for("no copy on the other host", Duration::from_secs(20), || {
        victims_in(hosts, other).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}: h{other} has {:?}", victims_in(hosts, other)));
    assert_eq!(victims_in(hosts, n), vec![pid], "the victim on h{n}");
    check(hosts, n, v, pid);
    if n == 1 {
        nothing_of_ferry_left(hosts, v, pid);
    }
}

fn ferry(hosts: &Hosts, n: u32, args: &[&str]) -> Output {
    Command::new(ferry_bin())
        .args(args)
        .env("FERRY_SOCKET", hosts.socket(n))
        .stdin(Stdio::null())
        .output()
        .expect("run ferry")
}

fn migrate(hosts: &Hosts, v: &Victim, extra: &[&str]) -> Output {
    let pid = v.pid.to_string();
    let mut args = vec!["migrate", pid.as_str(), "--to", "h2"];
    args.extend_from_slice(extra);
    ferry(hosts, 1, &args)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `ferry migrations --json` on host `n`.
fn records(hosts: &Hosts, n: u32) -> Vec<serde_json::Value> {
    let o = ferry(hosts, n, &["migrations", "--json"]);
    assert!(o.status.success(), "ferry migrations: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

/// Waits until host `n`'s only record is in `state`; returns it.
fn record_state(hosts: &Hosts, n: u32, state: &str) -> serde_json::Value {
    let mut last = Vec::new();
    let r = wait_for(
        &format!("h{n}'s record to be {state}"),
        Duration::from_secs(30),
        || {
            last = records(hosts, n);
            last.len() == 1 && last[0]["state"] == state
        },
    );
    if let Err(e) = r {
        panic!("{e}: h{n} has {last:?}\n{}", hosts.ferryd_log(n));
    }
    last.remove(0)
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

#[test]
fn migrates_and_keeps_state() {
    let Some((ctx, hosts)) = up("migrate-happy") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 64, &[]);
    check(&hosts, 1, &v, v.pid);
    // To the host itself: named as such, not as an unknown peer; nothing happens.
    let pid = v.pid.to_string();
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h1"]);
    assert!(
        !o.status.success() && text(&o).contains("h1 is this host"),
        "{}",
        text(&o)
    );
    let o = migrate(&hosts, &v, &[]);
    assert!(o.status.success(), "migrate: {}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("frozen") && out.contains("on the wire"),
        "{out}"
    );
    let pid = remote_pid(&o);
    let first = check(&hosts, 2, &v, pid);
    // The counter goes on from where it was (it was checked once before).
    assert!(first.contains("counter="), "{first}");
    exactly_once(&hosts, &v, 2, pid);
    assert_eq!(record_state(&hosts, 1, "done")["role"], "origin");
    assert_eq!(record_state(&hosts, 2, "done")["role"], "destination");
    let table = text(&ferry(&hosts, 1, &["migrations"]));
    assert!(
        table.contains("MIGRATION") && table.contains("done"),
        "{table}"
    );
}

/// A process that keeps writing its memory migrates live: several pre-copy rounds, then a
/// short stop; every page it wrote is there on the destination (it verifies each page against
/// its generation), it runs once, and the summary says how the rounds went.
#[test]
fn live_migration_of_a_writer() {
    let Some((ctx, hosts)) = up("migrate-live-writer") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 64, &["--write", "20"]);
    check(&hosts, 1, &v, v.pid);
    // A tight downtime target, so that the rounds go on while the process writes.
    let o = migrate(&hosts, &v, &["--max-downtime", "1"]);
    assert!(o.status.success(), "migrate: {}", text(&o));
    let out = text(&o);
    let rounds: u32 = out
        .split("live: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no live summary in {out}"));
    eprintln!("{out}");
    assert!(rounds >= 2, "one round only: {out}");
    assert!(
        out.contains("downtime") && out.contains("converge"),
        "{out}"
    );
    let pid = remote_pid(&o);
    exactly_once(&hosts, &v, 2, pid);
    // Nothing of the tracking came along (no `uw` area, no userfaultfd).
    let smaps = hosts
        .run_ok(2, &["cat", &format!("/proc/{pid}/smaps")])
        .expect("smaps");
    assert!(
        !smaps
            .lines()
            .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw")),
        "a tracked area on the destination"
    );
    assert_eq!(record_state(&hosts, 1, "done")["role"], "origin");
}

/// Pages the kernel drops during the pre-copy rounds travel again: the victim drops pages
/// behind its writer (`MADV_DONTNEED`, half of them read again as the zero page) without
/// writing them; on the destination it finds every dropped page zero and every other one at
/// its generation. On the origin,
/// the helper that kept the old memory past the stub's `execve` is gone, reaped (the stub
/// has no child left).
#[test]
fn live_migration_of_pages_the_kernel_dropped() {
    let Some((ctx, hosts)) = up("migrate-live-dropped") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 64, &["--write", "20", "--drop"]);
    // Some drops and moves before the migration, and more during the rounds.
    sleep(Duration::from_millis(300));
    check(&hosts, 1, &v, v.pid);
    let o = migrate(&hosts, &v, &["--max-downtime", "1"]);
    assert!(o.status.success(), "migrate: {}", text(&o));
    let out = text(&o);
    eprintln!("{out}");
    assert!(out.contains("pre-copy round"), "not live: {out}");
    let pid = remote_pid(&o);
    exactly_once(&hosts, &v, 2, pid);
    // Still right after it dropped more pages on the destination.
    sleep(Duration::from_millis(200));
    check(&hosts, 2, &v, pid);
    let children = || {
        hosts
            .run_ok(
                1,
                &["cat", &format!("/proc/{}/task/{}/children", v.pid, v.pid)],
            )
            .unwrap_or_default()
    };
    wait_for("the stub to have no child", Duration::from_secs(20), || {
        children().trim().is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}: the stub's children: {}", children()));
}

#[test]
fn each_codec_works() {
    let Some((ctx, hosts)) = up("migrate-codecs") else {
        return;
    };
    for (i, codec) in ["zstd", "lz4", "none"].iter().enumerate() {
        let v = start_victim(&hosts, &ctx, &format!("v{i}"), 8, &[]);
        // The last one on a terminal (`script` gives it a pty), where the progress display
        // shows: never a full bar before the size is known (it once drew `[=====…] 0 B/0 B`
        // through the negotiation).
        let o = if *codec == "none" {
            let cmd = format!(
                "FERRY_SOCKET={} {} migrate {} --to h2 --compress none --stop-and-copy",
                hosts.socket(1).display(),
                ferry_bin().display(),
                v.pid
            );
            Command::new("script")
                .args(["-qfec", &cmd, "/dev/null"])
                .stdin(Stdio::null())
                .output()
                .expect("run ferry migrate under script")
        } else {
            migrate(&hosts, &v, &["--compress", codec])
        };
        assert!(
            !text(&o).contains("0 B/0 B"),
            "a full progress bar before the size was known: {}",
            text(&o)
        );
        assert!(
            o.status.success(),
            "migrate --compress {codec}: {}",
            text(&o)
        );
        assert!(text(&o).contains(&format!("({codec},")), "{}", text(&o));
        // Live by default; --stop-and-copy (the last one) as before.
        let mode = if *codec == "none" {
            "stop-and-copy: downtime"
        } else {
            "pre-copy round"
        };
        assert!(text(&o).contains(mode), "{}", text(&o));
        let pid = remote_pid(&o);
        check(&hosts, 2, &v, pid);
        let _ = hosts.run(2, &["kill", "-KILL", &pid.to_string()]);
    }
}

/// A file only host 1 has (its private /srv/ferry-host) refuses the migration with the list;
/// with --ship-files it travels and the process maps it from the private directory.
#[test]
fn missing_file_refused_then_shipped() {
    let Some((ctx, hosts)) = up("migrate-files") else {
        return;
    };
    hosts
        .run_ok(
            1,
            &[
                "sh",
                "-c",
                "head -c 300000 /dev/urandom > /srv/ferry-host/data.bin",
            ],
        )
        .expect("make the file");
    let v = start_victim(&hosts, &ctx, "v", 8, &["--map", "/srv/ferry-host/data.bin"]);
    let o = migrate(&hosts, &v, &[]);
    assert!(!o.status.success(), "migrated without the file");
    let out = text(&o);
    assert!(
        out.contains("/srv/ferry-host/data.bin: missing") && out.contains("--ship-files"),
        "{out}"
    );
    exactly_once(&hosts, &v, 1, v.pid);
    record_state(&hosts, 1, "aborted");

    let o = migrate(&hosts, &v, &["--ship-files"]);
    assert!(o.status.success(), "migrate --ship-files: {}", text(&o));
    let pid = remote_pid(&o);
    exactly_once(&hosts, &v, 2, pid);
    let maps = hosts
        .run_ok(2, &["cat", &format!("/proc/{pid}/maps")])
        .expect("maps");
    assert!(maps.contains("/shipped/"), "{maps}");
}

/// Runs one migration under a fault; returns ferry's output.
fn with_fault(hosts: &mut Hosts, n: u32, fault: &str, v: &Victim) -> Output {
    hosts.kill_ferryd(n).expect("kill ferryd");
    hosts
        .start_ferryd(n, &[("FERRY_FAULT", fault)])
        .expect("start ferryd with the fault");
    migrate(hosts, v, &["--compress", "none"])
}

/// The last record of host `n` (the newest migration's).
fn last_record(hosts: &Hosts, n: u32) -> Option<serde_json::Value> {
    records(hosts, n)
        .into_iter()
        .max_by_key(|r| r["started_unix_ms"].as_u64().unwrap_or(0))
}

/// Waits until host `n`'s newest record is in `state`.
fn last_record_state(hosts: &Hosts, n: u32, state: &str) {
    let mut last = None;
    let r = wait_for(
        &format!("h{n}'s last record to be {state}"),
        Duration::from_secs(30),
        || {
            last = last_record(hosts, n);
            last.as_ref().is_some_and(|r| r["state"] == state)
        },
    );
    if let Err(e) = r {
        panic!("{e}: h{n} has {last:?}\n{}", hosts.ferryd_log(n));
    }
}

/// A live migration of a writer (so that there is a second round) under `fault` on host
/// `n`, for rounds 1 and 2: it fails, the original runs on with nothing of Ferry's left in
/// it, and the destination holds nothing (no record for rounds that came before the header,
/// no task: the premade one died with its thread).
fn live_fault_in_rounds(name: &str, n: u32, fault: &str, cut_link: bool) {
    let Some((ctx, mut hosts)) = up(name) else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 64, &["--write", "20"]);
    for round in [1, 2] {
        let f = format!("{fault}-{round}");
        hosts.kill_ferryd(n).expect("kill ferryd");
        hosts
            .start_ferryd(n, &[("FERRY_FAULT", f.as_str())])
            .expect("start ferryd with the fault");
        let pid = v.pid.to_string();
        let cli = Command::new(ferry_bin())
            .args(["migrate", &pid, "--to", "h2", "--compress", "none"])
            .args(["--max-downtime", "1"])
            .env("FERRY_SOCKET", hosts.socket(1))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferry migrate");
        if cut_link {
            // Into the pause before the round (5 s), then cut the link.
            wait_for("the pause", Duration::from_secs(20), || {
                hosts
                    .ferryd_log(1)
                    .contains(&format!("pause-precopy-round-{round}"))
            })
            .expect("paused");
            hosts.link_down(2).expect("link down");
        }
        let o = cli.wait_with_output().expect("ferry migrate");
        assert!(!o.status.success(), "migrated despite {f}: {}", text(&o));
        if cut_link {
            hosts.link_up(2).expect("link up");
        }
        restart_clean(&mut hosts, n);
        exactly_once(&hosts, &v, 1, v.pid);
        last_record_state(&hosts, 1, "aborted");
        // Nothing on the destination: no copy (checked above), no record.
        assert!(records(&hosts, 2).is_empty(), "{:?}", records(&hosts, 2));
    }
    // And it still migrates live afterwards.
    restart_clean(&mut hosts, 1);
    restart_clean(&mut hosts, 2);
    let o = migrate(&hosts, &v, &["--max-downtime", "1"]);
    assert!(o.status.success(), "migrate: {}", text(&o));
    exactly_once(&hosts, &v, 2, remote_pid(&o));
}

#[test]
fn live_fault_dest_exits_in_rounds() {
    live_fault_in_rounds(
        "migrate-live-dest-exit",
        2,
        "dest-exit-precopy-round",
        false,
    );
}

#[test]
fn live_fault_origin_agent_exits_in_rounds() {
    live_fault_in_rounds(
        "migrate-live-origin-exit",
        1,
        "origin-exit-precopy-round",
        false,
    );
}

#[test]
fn live_fault_link_cut_in_rounds() {
    live_fault_in_rounds("migrate-live-link-cut", 1, "pause-precopy-round", true);
}

/// The command's error when its agent died at the commit point: said so, with where the
/// process may be, not the broken connection's `h2 protocol error`.
fn assert_agent_lost_at_commit(o: &Output) {
    let t = text(o);
    assert!(
        t.contains("lost the local ferryd")
            && t.contains("at its commit point")
            && t.contains("ferry migrations")
            && !t.contains("h2 protocol error"),
        "{t}"
    );
}

fn restart_clean(hosts: &mut Hosts, n: u32) {
    let _ = hosts.kill_ferryd(n);
    hosts.start_ferryd(n, &[]).expect("restart ferryd");
}

#[test]
fn fault_dest_exits_mid_stream() {
    let Some((ctx, mut hosts)) = up("migrate-fault-dest-exit") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 64, &[]);
    let o = with_fault(&mut hosts, 2, "dest-exit-mid-stream", &v);
    assert!(
        !o.status.success(),
        "migrated despite the fault: {}",
        text(&o)
    );
    exactly_once(&hosts, &v, 1, v.pid);
    record_state(&hosts, 1, "aborted");
    restart_clean(&mut hosts, 2);
    let r = record_state(&hosts, 2, "aborted");
    assert!(
        r["detail"].as_str().unwrap_or("").contains("stopped"),
        "{r}"
    );
}

#[test]
fn fault_corrupt_chunk() {
    let Some((ctx, mut hosts)) = up("migrate-fault-corrupt") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 64, &[]);
    let o = with_fault(&mut hosts, 1, "corrupt-chunk", &v);
    assert!(
        !o.status.success(),
        "migrated a corrupt image: {}",
        text(&o)
    );
    assert!(text(&o).contains("goes on here"), "{}", text(&o));
    exactly_once(&hosts, &v, 1, v.pid);
    record_state(&hosts, 1, "aborted");
    record_state(&hosts, 2, "aborted");
}

/// The protocol version in the negotiation: a destination announcing another major version,
/// or none (an agent from before the version), is refused by name before anything is frozen;
/// the process runs on here, once, and the destination's agent keeps serving.
#[test]
fn protocol_version_mismatch_refused() {
    let Some((ctx, mut hosts)) = up("migrate-protocol-version") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 16, &[]);
    for (fault, refusal) in [
        (
            "protocol-version-next",
            "h2 speaks migration protocol 2.3, this agent 1.3",
        ),
        (
            "protocol-version-none",
            "h2 runs an older ferryd that announces no migration protocol version",
        ),
    ] {
        let o = with_fault(&mut hosts, 2, fault, &v);
        assert!(!o.status.success(), "{fault}: migrated: {}", text(&o));
        assert!(text(&o).contains(refusal), "{fault}: {}", text(&o));
        assert!(
            text(&o).contains("same major version"),
            "{fault}: {}",
            text(&o)
        );
        exactly_once(&hosts, &v, 1, v.pid);
        last_record_state(&hosts, 1, "aborted");
        // The destination recorded nothing and still answers.
        assert!(
            records(&hosts, 2).is_empty(),
            "{fault}: {:?}",
            records(&hosts, 2)
        );
    }
    // Both agents of this version again: the migration goes through.
    restart_clean(&mut hosts, 2);
    let o = migrate(&hosts, &v, &["--stop-and-copy"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// A live migration's final stop takes each area's flags from the `smaps` read just before
/// the freeze (its page-table walk is not in the downtime), every thread's system calls
/// watched from before that reading to the freeze: a call in between that may change a flag
/// (`FERRY_FAULT origin-madvise-in-window`: the victim's main thread calls
/// `madvise(MADV_DONTDUMP)` on its largest anonymous area after the reading, in place of a
/// return from one of its system calls) makes the dump read `smaps` again under the freeze,
/// and the copy carries the flag. (Taken from the reading, the copy would run without it,
/// and its checker, comparing it with the image, would see nothing.) Before that freeze the
/// origin waited until the destination had taken in every pre-copied byte (`Peer.Applied`).
#[test]
fn live_madvise_between_reading_and_freeze_is_carried() {
    let Some((ctx, mut hosts)) = up("migrate-live-flags") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 16, &[]);
    let o = with_fault(&mut hosts, 1, "origin-madvise-in-window", &v);
    assert!(o.status.success(), "{}", text(&o));
    let log = hosts.ferryd_log(1);
    let line = log
        .lines()
        .find(|l| l.contains("FERRY_FAULT origin-madvise-in-window: MADV_DONTDUMP"))
        .unwrap_or_else(|| panic!("the fault's call was not made:\n{log}"));
    assert!(!log.contains("the fault's call"), "{log}");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let (start, end) = (field("start"), field("end"));
    // Before the freeze the origin waited until the destination took in every pre-copied
    // byte (`Peer.Applied`): all of them, well before the 5 s it waits at most.
    let taken = log
        .lines()
        .find(|l| l.contains("pre-copied pages taken in by the destination"))
        .unwrap_or_else(|| panic!("no wait for the pre-copied pages:\n{log}"));
    let value = |name: &str| {
        taken
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {taken}"))
            .to_string()
    };
    let sent: u64 = value("sent").parse().expect("sent");
    assert!(sent >= 16 << 20, "{taken}");
    assert_eq!(value("applied"), format!("Some({sent})"), "{taken}");
    let waited = value("elapsed");
    assert!(
        ["ms", "µs", "ns"].iter().any(|u| waited.ends_with(u)),
        "waited {waited}: {taken}"
    );
    let r = record_state(&hosts, 2, "done");
    let pid = r["pid"].as_i64().expect("pid") as i32;
    exactly_once(&hosts, &v, 2, pid);
    let smaps = hosts
        .run_ok(2, &["cat", &format!("/proc/{pid}/smaps")])
        .expect("the copy's smaps");
    let flags = smaps
        .split("\nVmFlags:")
        .zip(smaps.split("\nVmFlags:").skip(1))
        .find_map(|(head, tail)| {
            let range = head.lines().rev().find(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.contains('-') && !w.ends_with(':'))
            })?;
            let (s, e) = range.split_whitespace().next()?.split_once('-')?;
            let (s, e) = (
                u64::from_str_radix(s, 16).ok()?,
                u64::from_str_radix(e, 16).ok()?,
            );
            (s <= start && end <= e).then(|| tail.lines().next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("no area {start:#x}-{end:#x} in the copy:\n{smaps}"));
    assert!(
        flags.split_whitespace().any(|f| f == "dd"),
        "the copy's area {start:#x}-{end:#x} lost MADV_DONTDUMP: {flags}"
    );
}

#[test]
fn fault_restore_fails() {
    let Some((ctx, mut hosts)) = up("migrate-fault-restore") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 16, &[]);
    let o = with_fault(&mut hosts, 2, "restore-fail", &v);
    assert!(
        !o.status.success(),
        "migrated despite the fault: {}",
        text(&o)
    );
    exactly_once(&hosts, &v, 1, v.pid);
    record_state(&hosts, 1, "aborted");
    record_state(&hosts, 2, "aborted");
}

#[test]
fn fault_origin_exits_before_commit() {
    let Some((ctx, mut hosts)) = up("migrate-fault-before-commit") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 16, &[]);
    let o = with_fault(&mut hosts, 1, "origin-exit-before-commit", &v);
    assert!(!o.status.success(), "{}", text(&o));
    assert_agent_lost_at_commit(&o);
    // The original was given back when its tracer died; the copy waits, stopped.
    restart_clean(&mut hosts, 1);
    record_state(&hosts, 1, "aborted");
    record_state(&hosts, 2, "aborted");
    exactly_once(&hosts, &v, 1, v.pid);
}

#[test]
fn fault_origin_exits_after_commit() {
    let Some((ctx, mut hosts)) = up("migrate-fault-after-commit") else {
        return;
    };
    let mut v = start_victim(&hosts, &ctx, "v", 16, &[]);
    let o = with_fault(&mut hosts, 1, "origin-exit-after-commit", &v);
    assert!(!o.status.success(), "{}", text(&o));
    assert_agent_lost_at_commit(&o);
    // The stub replaced the original: the restarted origin commits.
    restart_clean(&mut hosts, 1);
    record_state(&hosts, 1, "done");
    let r = record_state(&hosts, 2, "done");
    let pid = r["pid"].as_i64().expect("pid") as i32;
    exactly_once(&hosts, &v, 2, pid);
    // ... and serves the stub again: a signal sent to the stub on h1 reaches the remote
    // process (it answers SIGUSR1 with a verification)...
    check(&hosts, 1, &v, v.pid);
    // ... and the remote's end comes back to the stub, whose parent sees it.
    let out = hosts
        .run(1, &["kill", "-TERM", &v.pid.to_string()])
        .expect("kill -TERM");
    assert!(out.status.success(), "kill -TERM the stub");
    let t = Instant::now();
    let status = loop {
        if let Some(st) = v.nsenter.try_wait().expect("wait for the victim's parent") {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the stub did not end with the remote process"
        );
        sleep(Duration::from_millis(50));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "the stub's parent saw {status:?}"
    );
    wait_for("the remote process to end", Duration::from_secs(20), || {
        victims_in(&hosts, 2).is_empty()
    })
    .expect("remote gone");
}

#[test]
fn origin_agent_restart_while_relaying() {
    let Some((ctx, mut hosts)) = up("migrate-relay-restart") else {
        return;
    };
    let mut v = start_victim(&hosts, &ctx, "v", 16, &[]);
    let o = migrate(&hosts, &v, &["--compress", "none"]);
    assert!(o.status.success(), "{}", text(&o));
    let pid = remote_pid(&o);
    check(&hosts, 1, &v, v.pid);
    // The origin's agent goes while it relays; the process ends on h2 meanwhile: h2's agent
    // reaps it (no zombie) and keeps its status for the next relay stream.
    hosts.kill_ferryd(1).expect("kill ferryd");
    let out = hosts
        .run(2, &["kill", "-TERM", &pid.to_string()])
        .expect("kill -TERM");
    assert!(out.status.success(), "kill -TERM the remote process");
    wait_for(
        "the remote process to be reaped",
        Duration::from_secs(20),
        || victims_in(&hosts, 2).is_empty(),
    )
    .expect("reaped on h2");
    assert!(
        v.nsenter.try_wait().expect("try_wait").is_none(),
        "the stub ended without its agent"
    );
    // The restarted agent serves the stub again, which gets the status and ends with it.
    restart_clean(&mut hosts, 1);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = v.nsenter.try_wait().expect("wait for the victim's parent") {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the stub did not end with the remote process\nh1:\n{}\nh2:\n{}",
            hosts.ferryd_log(1),
            hosts.ferryd_log(2)
        );
        sleep(Duration::from_millis(50));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "the stub's parent saw {status:?}"
    );
}

#[test]
fn fault_link_cut_mid_stream() {
    let Some((ctx, mut hosts)) = up("migrate-fault-link") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 64, &[]);
    hosts.kill_ferryd(1).expect("kill ferryd");
    hosts
        .start_ferryd(1, &[("FERRY_FAULT", "pause-mid-stream")])
        .expect("start ferryd");
    let pid = v.pid.to_string();
    let cli = Command::new(ferry_bin())
        .args(["migrate", &pid, "--to", "h2", "--compress", "none"])
        .env("FERRY_SOCKET", hosts.socket(1))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferry migrate");
    // Into the pause (the image is half sent), then cut the link.
    wait_for("the stream to begin", Duration::from_secs(20), || {
        records(&hosts, 2)
            .first()
            .is_some_and(|r| r["state"] == "receiving")
    })
    .expect("receiving");
    sleep(Duration::from_millis(500));
    hosts.link_down(2).expect("link down");
    let o = cli.wait_with_output().expect("ferry migrate");
    assert!(
        !o.status.success(),
        "migrated over a cut link: {}",
        text(&o)
    );
    exactly_once(&hosts, &v, 1, v.pid);
    record_state(&hosts, 1, "aborted");
    record_state(&hosts, 2, "aborted");
    hosts.link_up(2).expect("link up");
}

/// Host `n`'s records of role `role`.
fn records_of(hosts: &Hosts, n: u32, role: &str) -> Vec<serde_json::Value> {
    records(hosts, n)
        .into_iter()
        .filter(|r| r["role"] == role)
        .collect()
}

/// Waits until host `n` has a record of `role` for which `f` holds; returns it.
fn wait_record(
    hosts: &Hosts,
    n: u32,
    role: &str,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = Vec::new();
    let mut found = None;
    let r = wait_for(&format!("h{n}: {what}"), Duration::from_secs(30), || {
        last = records_of(hosts, n, role);
        found = last.iter().find(|r| f(r)).cloned();
        found.is_some()
    });
    if let Err(e) = r {
        panic!("{e}: h{n} has {last:#?}\n{}", hosts.ferryd_log(n));
    }
    found.unwrap_or_default()
}

fn int(v: &serde_json::Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Three migrations started at once from one agent take turns for their frozen phase: the
/// frozen intervals the origin recorded (freeze → Commit acknowledged) never overlap, so no
/// process is stopped while the others' images travel; all three arrive intact.
#[test]
fn concurrent_migrations_are_frozen_one_at_a_time() {
    let Some((ctx, hosts)) = up("migrate-concurrent") else {
        return;
    };
    let victims: Vec<Victim> = (0..3)
        .map(|i| start_victim(&hosts, &ctx, &format!("v{i}"), 64, &[]))
        .collect();
    let clis: Vec<Child> = victims
        .iter()
        .map(|v| {
            Command::new(ferry_bin())
                .args(["migrate", &v.pid.to_string(), "--to", "h2"])
                .args(["--compress", "none"])
                .env("FERRY_SOCKET", hosts.socket(1))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start ferry migrate")
        })
        .collect();
    let outs: Vec<Output> = clis
        .into_iter()
        .map(|c| c.wait_with_output().expect("ferry migrate"))
        .collect();
    for o in &outs {
        assert!(o.status.success(), "migrate: {}", text(o));
    }
    let mut frozen: Vec<(i64, i64)> = records_of(&hosts, 1, "origin")
        .iter()
        .map(|r| {
            let (a, b) = (int(r, "frozen_unix_us"), int(r, "frozen_end_unix_us"));
            assert!(a > 0 && b >= a, "frozen interval of {r}");
            (a, b)
        })
        .collect();
    assert_eq!(frozen.len(), 3, "{frozen:?}");
    frozen.sort();
    for w in frozen.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "two processes were frozen at once: {:?} and {:?} (µs since the epoch)\n{}",
            w[0],
            w[1],
            hosts.ferryd_log(1)
        );
    }
    let mut pids: Vec<i32> = outs.iter().map(remote_pid).collect();
    for (v, &pid) in victims.iter().zip(&pids) {
        check(&hosts, 2, v, pid);
    }
    pids.sort();
    let mut on_h2 = victims_in(&hosts, 2);
    on_h2.sort();
    assert_eq!(on_h2, pids, "the victims on h2");
    assert!(victims_in(&hosts, 1).is_empty(), "victims left on h1");
}

/// A process with a child is refused before anything is frozen or recorded, naming the
/// child: the child would stay behind (nginx's workers, a script's pipeline).
#[test]
fn a_parent_is_refused_with_its_children_named() {
    let Some((ctx, hosts)) = up("migrate-children") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 8, &["--child"]);
    let child: i32 = status_file(&v.state)
        .lines()
        .find_map(|l| l.strip_prefix("forked pid="))
        .and_then(|p| p.trim().parse().ok())
        .expect("the child's pid");
    let o = migrate(&hosts, &v, &["--compress", "none"]);
    assert!(!o.status.success(), "migrated a parent: {}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("has children") && out.contains(&format!("{child} (migrate-child)")),
        "{out}"
    );
    exactly_once(&hosts, &v, 1, v.pid);
    assert!(records(&hosts, 1).is_empty(), "h1 recorded a migration");
    assert!(records(&hosts, 2).is_empty(), "h2 recorded a migration");
}

/// A child forked after the first check (here while the origin pauses before the freeze,
/// FERRY_FAULT pause-before-freeze) is found under the freeze: refused, the process thawed
/// and intact.
#[test]
fn a_child_forked_before_the_freeze_is_refused_under_it() {
    let Some((ctx, mut hosts)) = up("migrate-children-late") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 8, &["--fork-on-usr2"]);
    hosts.kill_ferryd(1).expect("kill ferryd");
    hosts
        .start_ferryd(1, &[("FERRY_FAULT", "pause-before-freeze")])
        .expect("start ferryd");
    let cli = Command::new(ferry_bin())
        .args([
            "migrate",
            &v.pid.to_string(),
            "--to",
            "h2",
            "--compress",
            "none",
        ])
        .env("FERRY_SOCKET", hosts.socket(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferry migrate");
    wait_record(&hosts, 1, "origin", "negotiated", |r| {
        r["state"] == "negotiated"
    });
    let out = hosts
        .run(1, &["kill", "-USR2", &v.pid.to_string()])
        .expect("kill -USR2");
    assert!(out.status.success(), "kill -USR2");
    wait_for("the child", Duration::from_secs(10), || {
        status_file(&v.state).contains("forked pid=")
    })
    .expect("forked");
    let o = cli.wait_with_output().expect("ferry migrate");
    assert!(!o.status.success(), "migrated a parent: {}", text(&o));
    assert!(text(&o).contains("(migrate-child)"), "{}", text(&o));
    exactly_once(&hosts, &v, 1, v.pid);
    let r = record_state(&hosts, 1, "aborted");
    assert!(int(&r, "frozen_unix_us") > 0, "it was never frozen: {r}");
    assert!(records(&hosts, 2).is_empty(), "h2 recorded a transfer");
}

/// The records follow the process: the destination's REMOTE is the origin's PID (the stub's);
/// when the copy moves on from h2 to h3, h1's record says where it went; when it ends, every
/// record on the way says so with its exit status, and the files shipped for it are gone.
#[test]
fn records_follow_the_process_to_its_end() {
    let Some(ctx) = setup("migrate-records") else {
        return;
    };
    let hosts = Hosts::up(3).context("hosts up").expect("three hosts");
    hosts
        .run_ok(
            1,
            &[
                "sh",
                "-c",
                "head -c 300000 /dev/urandom > /srv/ferry-host/data.bin",
            ],
        )
        .expect("make the file");
    let v = start_victim(&hosts, &ctx, "v", 8, &["--map", "/srv/ferry-host/data.bin"]);
    let o = migrate(&hosts, &v, &["--compress", "none", "--ship-files"]);
    assert!(o.status.success(), "migrate to h2: {}", text(&o));
    let on_h2 = remote_pid(&o);
    let x = wait_record(&hosts, 2, "destination", "done", |r| r["state"] == "done");
    let id = x["migration_id"].as_str().expect("id").to_string();
    assert_eq!(int(&x, "pid"), i64::from(on_h2), "{x}");
    assert_eq!(int(&x, "remote_pid"), i64::from(v.pid), "h2's REMOTE: {x}");
    let h1 = wait_record(&hosts, 1, "origin", "done", |r| r["state"] == "done");
    assert_eq!(
        int(&h1, "remote_pid"),
        i64::from(on_h2),
        "h1's REMOTE: {h1}"
    );
    let shipped = hosts.state_dir(2).join("shipped").join(&id);
    assert!(shipped.exists(), "{} is not there", shipped.display());

    let o = ferry(
        &hosts,
        2,
        &[
            "migrate",
            &on_h2.to_string(),
            "--to",
            "h3",
            "--compress",
            "none",
            "--ship-files",
        ],
    );
    assert!(o.status.success(), "migrate to h3: {}", text(&o));
    let on_h3 = remote_pid(&o);
    check(&hosts, 3, &v, on_h3);
    let h1 = wait_record(&hosts, 1, "origin", "moved on to h3", |r| {
        r["moved_to"] == "h3" && r["state"] == "done"
    });
    assert_eq!(int(&h1, "moved_pid"), i64::from(on_h3), "{h1}");
    assert!(h1["detail"].as_str().unwrap_or("").contains("h3"), "{h1}");
    let x = wait_record(&hosts, 2, "destination", "moved on", |r| {
        r["moved_to"] == "h3"
    });
    assert_eq!(int(&x, "moved_pid"), i64::from(on_h3), "{x}");

    let out = hosts
        .run(3, &["kill", "-TERM", &on_h3.to_string()])
        .expect("kill -TERM");
    assert!(out.status.success(), "kill -TERM on h3");
    let ended = |r: &serde_json::Value| {
        r["state"] == "ended" && r["exit_known"] == true && r["exit_signal"] == libc::SIGTERM
    };
    for (n, role) in [
        (3, "destination"),
        (2, "origin"),
        (2, "destination"),
        (1, "origin"),
    ] {
        let r = wait_record(&hosts, n, role, "ended by SIGTERM", ended);
        assert!(
            r["detail"].as_str().unwrap_or("").contains("signal 15"),
            "h{n}: {r}"
        );
    }
    let h1 = wait_record(&hosts, 1, "origin", "ended", ended);
    assert!(
        h1["detail"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("on h3 as pid {on_h3}")),
        "{h1}"
    );
    wait_for("h2's shipped files to go", Duration::from_secs(20), || {
        !shipped.exists()
    })
    .unwrap_or_else(|e| panic!("{e}: {}", shipped.display()));
}

/// The destination's agent exits on Commit (FERRY_FAULT dest-exit-at-commit) while its copy
/// waits, stopped, in a new PID namespace (the migration back to h1, where the stub holds the
/// PID). The namespace's init holds none of the agent's descriptors, so the agent starts
/// again (it once failed: listener address in use, records database locked), asks the origin
/// and releases the copy: the process runs exactly once, on h1, intact, and the agent serves.
#[test]
fn dest_exit_at_commit_with_the_copy_in_a_new_pid_namespace() {
    let Some((ctx, mut hosts)) = up("migrate-fault-dest-commit") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 16, &[]);
    let o = migrate(&hosts, &v, &[]);
    assert!(o.status.success(), "migrate: {}", text(&o));
    let on_h2 = remote_pid(&o).to_string();
    hosts.kill_ferryd(1).expect("kill ferryd");
    hosts
        .start_ferryd(1, &[("FERRY_FAULT", "dest-exit-at-commit")])
        .expect("start ferryd with the fault");
    // The origin (h2) commits until the destination answers: run it in the background.
    let mut back = Command::new(ferry_bin())
        .args(["migrate", &on_h2, "--to", "h1", "--compress", "none"])
        .env("FERRY_SOCKET", hosts.socket(2))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferry migrate on h2");
    wait_for(
        "h1's agent to exit at the commit",
        Duration::from_secs(60),
        || {
            hosts
                .ferryd_log(1)
                .contains("FERRY_FAULT dest-exit-at-commit")
                && hosts.ferryd_pid(1).is_none_or(|p| !alive(p))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", hosts.ferryd_log(1)));
    let _ = hosts.kill_ferryd(1);
    hosts.start_ferryd(1, &[]).expect("the agent starts again");
    let t = Instant::now();
    while back.try_wait().expect("wait for ferry migrate").is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = back.kill();
            let _ = back.wait();
            panic!("ferry migrate on h2 did not end\n{}", hosts.ferryd_log(1));
        }
        sleep(Duration::from_millis(50));
    }
    let mut copy = 0;
    wait_for(
        "h1's destination record to be done",
        Duration::from_secs(30),
        || {
            records(&hosts, 1).iter().any(|r| {
                let done = r["role"] == "destination" && r["state"] == "done";
                if done {
                    copy = r["pid"].as_i64().unwrap_or(0) as i32;
                }
                done
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", records(&hosts, 1), hosts.ferryd_log(1)));
    exactly_once(&hosts, &v, 1, copy);
    let nspid = hosts
        .run_ok(1, &["grep", "NSpid", &format!("/proc/{copy}/status")])
        .expect("NSpid");
    assert_eq!(
        nspid.split_whitespace().count(),
        3,
        "the copy should be in a PID namespace of its own inside h1: {nspid}"
    );
}

/// A user's process that turns non-dumpable after the user's request was authorized but
/// before the freeze (it calls `prctl(PR_SET_DUMPABLE, 0)` as soon as the origin opens a file
/// it maps to identify it, during the negotiation) is refused once frozen, and runs on.
#[test]
fn a_process_turning_non_dumpable_before_the_freeze_is_refused() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let Some((ctx, hosts)) = up("migrate-nondumpable-late") else {
        return;
    };
    // Readable by nobody, the same files on both hosts. Eight sparse files just under the
    // hashing limit: after the victim's trigger (the first file opened) both agents hash
    // them all before anything is frozen, which leaves the victim a second or more to act,
    // even on a loaded machine.
    std::fs::set_permissions(ctx.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the test directory");
    let files: Vec<PathBuf> = (0..8).map(|i| ctx.path(&format!("f{i}.bin"))).collect();
    for f in &files {
        std::fs::File::create(f)
            .and_then(|file| file.set_len(60 << 20))
            .expect("make a mapped file");
    }
    let script = "import ctypes, mmap, os, sys, time\n\
                  libc = ctypes.CDLL(None)\n\
                  files = [open(p, 'rb') for p in sys.argv[1:]]\n\
                  maps = [mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) for f in files]\n\
                  fd = libc.inotify_init1(0)\n\
                  assert libc.inotify_add_watch(fd, sys.argv[1].encode(), 0x20) >= 0\n\
                  print(os.getpid(), flush=True)\n\
                  os.read(fd, 4096)\n\
                  os.close(fd)\n\
                  assert libc.prctl(4, 0, 0, 0, 0) == 0\n\
                  print('non-dumpable', flush=True)\n\
                  time.sleep(120)\n";
    let mut victim = hosts
        .command(1, "setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            // Not a PATH lookup: root's PATH may lead where nobody cannot go.
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .args(&files)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the victim in h1");
    let mut lines = std::io::BufReader::new(victim.stdout.take().expect("stdout")).lines();
    let pid = lines.next().expect("the victim's pid").expect("read");
    let out = Command::new(ferry_bin())
        .args(["migrate", pid.trim(), "--to", "h2", "--compress", "none"])
        .env("FERRY_SOCKET", hosts.socket(1))
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .expect("run ferry migrate as nobody");
    let t = text(&out);
    let became = lines.next().and_then(Result::ok);
    let alive = hosts
        .run(1, &["kill", "-0", pid.trim()])
        .expect("kill -0")
        .status
        .success();
    // Killed inside the host first: killing nsenter first would hand the victim to this
    // (subreaper) process as a zombie nobody reaps.
    let _ = hosts.run(1, &["kill", "-KILL", pid.trim()]);
    let _ = victim.wait();
    assert_eq!(became.as_deref(), Some("non-dumpable"), "{t}");
    assert!(
        !out.status.success() && t.contains("permission denied") && t.contains("not dumpable"),
        "nobody migrated a process that is no longer dumpable: {t}"
    );
    assert!(alive, "the victim does not run on h1 any more: {t}");
}

/// A process stopped by job control (SIGSTOP) migrates stopped: the copy on h2 stays in state
/// T once committed (no SIGCONT from the destination), and goes on with its state on SIGCONT.
#[test]
fn a_stopped_process_migrates_stopped() {
    let Some((ctx, hosts)) = up("migrate-stopped") else {
        return;
    };
    let v = start_victim(&hosts, &ctx, "v", 16, &[]);
    check(&hosts, 1, &v, v.pid);
    let pid = v.pid.to_string();
    let o = hosts.run(1, &["kill", "-STOP", &pid]).expect("kill -STOP");
    assert!(o.status.success());
    let state = |n: u32, p: i32| {
        let o = hosts
            .run(n, &["cat", &format!("/proc/{p}/stat")])
            .expect("cat stat");
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        s.rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default()
    };
    wait_for("the victim stopped", Duration::from_secs(10), || {
        state(1, v.pid) == "T"
    })
    .expect("stopped");
    let o = migrate(&hosts, &v, &[]);
    assert!(o.status.success(), "migrate: {}", text(&o));
    let remote = remote_pid(&o);
    record_state(&hosts, 2, "done");
    sleep(Duration::from_millis(300));
    assert_eq!(state(2, remote), "T", "the copy runs after commit");
    let o = hosts
        .run(2, &["kill", "-CONT", &remote.to_string()])
        .expect("kill -CONT");
    assert!(o.status.success());
    exactly_once(&hosts, &v, 2, remote);
}
