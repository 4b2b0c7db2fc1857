//! `ferry migrate PID --tree` between two test hosts: a parent with two forked children
//! (pages shared copy-on-write, a pipe between the children) moves as a whole and goes on;
//! every member's PID on h1 is its stub, in the same tree; the root's exit status reaches
//! its parent on h1 once the whole tree ended on h2; a restore failure leaves the whole tree
//! on h1; a shell pipeline's output reaches the caller through the stubs. `--tree` is live
//! (pre-copy) unless `--stop-and-copy` is given: members rewriting their heaps while the
//! rounds go keep them exact; a migration given up in a round leaves nothing of the write
//! tracking in any member; nginx with its workers serves over HTTP before and after.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_tests::hosts::Hosts;
use ferry_tests::{TestCtx, ferry_bin, setup, workload};
use ferry_tests::{status_file, wait_for};

fn up(name: &str) -> Option<(TestCtx, Hosts)> {
    let ctx = setup(name)?;
    let hosts = Hosts::up(2).context("hosts up").expect("two hosts");
    Some((ctx, hosts))
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

/// The tree victim in h1: the `nsenter` running it (its parent there), its state directory
/// and the PIDs of the parent and the two children (inside h1).
struct Tree {
    nsenter: Child,
    state: PathBuf,
    parent: i32,
    kids: [i32; 2],
}

impl Tree {
    /// Ends the tree on h1 (children first) and waits for its `nsenter`, which reaps it.
    fn end(&mut self, hosts: &Hosts) {
        for pid in [self.kids[0], self.kids[1], self.parent] {
            let _ = hosts.run(1, &["kill", "-KILL", &pid.to_string()]);
        }
        let _ = self.nsenter.wait();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = self.nsenter.kill();
        let _ = self.nsenter.wait();
    }
}

fn ready_pid(state: &Path, role: &str) -> Option<i32> {
    status_file(state).lines().find_map(|l| {
        l.strip_prefix(&format!("ready {role} pid="))
            .and_then(|p| p.trim().parse().ok())
    })
}

fn start_tree(hosts: &Hosts, ctx: &TestCtx, name: &str, stdout: Stdio) -> Tree {
    let state = ctx.path(name);
    std::fs::create_dir_all(&state).expect("state dir");
    let mut cmd = hosts.command(1, workload("migrate_tree"));
    cmd.arg(&state);
    let print = matches!(name, "print");
    if print {
        cmd.arg("--print");
    }
    let nsenter = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("start the tree in h1");
    wait_for("the tree to be ready", Duration::from_secs(20), || {
        ["parent", "child1", "child2"]
            .iter()
            .all(|r| ready_pid(&state, r).is_some())
    })
    .expect("tree ready");
    let pid = |r| ready_pid(&state, r).expect("ready line");
    Tree {
        parent: pid("parent"),
        kids: [pid("child1"), pid("child2")],
        state,
        nsenter,
    }
}

/// Asks the member `pid` (inside host `n`) playing `role` to check itself; returns its
/// answer, which must be "ok ...".
fn check(hosts: &Hosts, n: u32, t: &Tree, role: &str, pid: i32) -> String {
    let before = status_file(&t.state).lines().count();
    let out = hosts
        .run(n, &["kill", "-USR1", &pid.to_string()])
        .expect("kill -USR1");
    assert!(
        out.status.success(),
        "kill -USR1 {pid} ({role}) in h{n}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = format!(" {role} ");
    let mut line = String::new();
    wait_for(&format!("{role}'s answer"), Duration::from_secs(20), || {
        line = status_file(&t.state)
            .lines()
            .skip(before)
            .find(|l| l.contains(&prefix))
            .unwrap_or_default()
            .to_string();
        !line.is_empty()
    })
    .expect("answer");
    assert!(line.starts_with("ok "), "{role} says: {line}");
    line
}

/// PIDs of processes named `migrate_tree` inside host `n`.
fn members_in(hosts: &Hosts, n: u32) -> Vec<i32> {
    let out = hosts
        .run(n, &["pgrep", "-x", "migrate_tree"])
        .expect("pgrep");
    let mut v: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// `ps` fields of `pid` in host `n`: (command name, parent PID), if it exists.
fn ps(hosts: &Hosts, n: u32, pid: i32) -> Option<(String, i32)> {
    let out = hosts
        .run(n, &["ps", "-o", "comm=,ppid=", "-p", &pid.to_string()])
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let mut w = s.split_whitespace();
    Some((w.next()?.to_string(), w.next()?.parse().ok()?))
}

fn seq_of(line: &str) -> i64 {
    line.split("seq=")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no seq in {line:?}"))
}

fn records(hosts: &Hosts, n: u32) -> Vec<serde_json::Value> {
    let o = ferry(hosts, n, &["migrations", "--json"]);
    assert!(o.status.success(), "ferry migrations: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

fn wait_record(hosts: &Hosts, n: u32, state: &str) {
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
}

/// The tree moves as a whole: on h2 the three processes check their pages (shared
/// copy-on-write, each child's own page its own), PIDs, parent and the pipe's sequence,
/// which goes on; on h1 each PID is a stub in the same tree. Then SIGUSR2 to the root's stub
/// on h1 ends the job on h2 (the children exit 21 and 22, which the parent checks, then it
/// exits 42), and the root's parent on h1 sees 42, after the children ended.
#[test]
fn a_parent_with_two_children_moves_as_a_tree_and_its_status_comes_back() {
    let Some((ctx, hosts)) = up("migrate-tree") else {
        return;
    };
    let mut t = start_tree(&hosts, &ctx, "tree", Stdio::null());
    let mut seq = 0;
    for (role, pid) in [
        ("parent", t.parent),
        ("child1", t.kids[0]),
        ("child2", t.kids[1]),
    ] {
        let line = check(&hosts, 1, &t, role, pid);
        if role == "child2" {
            seq = seq_of(&line);
        }
    }
    // Without --tree: refused, naming the children.
    let pid = t.parent.to_string();
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h2"]);
    assert!(!o.status.success(), "migrated a parent alone: {}", text(&o));
    assert!(
        text(&o).contains("has children")
            && text(&o).contains(&format!("{} (migrate_tree)", t.kids[0]))
            && text(&o).contains(&format!("{} (migrate_tree)", t.kids[1]))
            && text(&o).contains("--tree"),
        "{}",
        text(&o)
    );
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h2", "--tree"]);
    assert!(
        o.status.success(),
        "migrate --tree: {}\n{}\n{}",
        text(&o),
        hosts.ferryd_log(1),
        hosts.ferryd_log(2)
    );
    eprintln!("migrate --tree: {}", text(&o));
    // On h2: the three, in one tree.
    let there = members_in(&hosts, 2);
    assert_eq!(there.len(), 3, "h2 runs {there:?}\n{}", hosts.ferryd_log(2));
    let root = there
        .iter()
        .copied()
        .find(|&p| ps(&hosts, 2, p).is_some_and(|(_, pp)| !there.contains(&pp)))
        .expect("a root on h2");
    let kids: Vec<i32> = there.iter().copied().filter(|&p| p != root).collect();
    for &k in &kids {
        assert_eq!(
            ps(&hosts, 2, k).map(|p| p.1),
            Some(root),
            "parent of {k} on h2"
        );
    }
    check(&hosts, 2, &t, "parent", root);
    // Which child is which: each answers with its own original PID.
    let mut after = 0;
    for &k in &kids {
        let before = status_file(&t.state).lines().count();
        hosts.run_ok(2, &["kill", "-USR1", &k.to_string()]).unwrap();
        wait_for("a child's answer", Duration::from_secs(20), || {
            status_file(&t.state)
                .lines()
                .skip(before)
                .any(|l| l.contains(" child"))
        })
        .unwrap();
        let line = status_file(&t.state)
            .lines()
            .skip(before)
            .find(|l| l.contains(" child"))
            .unwrap()
            .to_string();
        assert!(line.starts_with("ok "), "on h2: {line}");
        if line.contains("child2") {
            after = seq_of(&line);
        }
    }
    assert!(
        after > seq,
        "the pipe's sequence went on: {seq} then {after}"
    );
    // On h1: nothing of the program, each PID a stub, the tree's shape kept.
    assert!(
        members_in(&hosts, 1).is_empty(),
        "h1 still runs the program"
    );
    assert_eq!(
        ps(&hosts, 1, t.parent).map(|p| p.0),
        Some("ferry-stub".to_string())
    );
    for k in t.kids {
        assert_eq!(
            ps(&hosts, 1, k),
            Some(("ferry-stub".to_string(), t.parent)),
            "member {k} on h1"
        );
    }
    wait_record(&hosts, 1, "done");
    wait_record(&hosts, 2, "done");

    // A child ends on h2 (the parent reaps it there and goes on): its stub on h1 ends with
    // it and is reaped by the parent's stub, which goes on.
    hosts
        .run_ok(1, &["kill", "-HUP", &t.parent.to_string()])
        .unwrap();
    wait_for(
        "the parent to reap child 1 on h2",
        Duration::from_secs(20),
        || status_file(&t.state).contains("parent reaped child1 status=21"),
    )
    .unwrap();
    wait_for(
        "child 1's stub to be gone from h1",
        Duration::from_secs(20),
        || ps(&hosts, 1, t.kids[0]).is_none(),
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", ps(&hosts, 1, t.kids[0])));
    assert_eq!(
        ps(&hosts, 1, t.parent).map(|p| p.0),
        Some("ferry-stub".to_string()),
        "the root's stub goes on"
    );
    assert_eq!(
        ps(&hosts, 1, t.kids[1]),
        Some(("ferry-stub".to_string(), t.parent)),
        "child 2's stub goes on"
    );
    // The end of the job: its status reaches the root's parent on h1 (nsenter, which exits
    // with it) once every member ended on h2.
    hosts
        .run_ok(1, &["kill", "-USR2", &t.parent.to_string()])
        .unwrap();
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = t.nsenter.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the root's stub did not end\n{}",
            hosts.ferryd_log(1)
        );
        sleep(Duration::from_millis(50));
    };
    let s = status_file(&t.state);
    assert!(s.contains("parent exits 42"), "{s}");
    assert!(!s.contains("BAD"), "{s}");
    assert_eq!(code, Some(42), "the root's parent on h1 saw {code:?}");
    // Each member's stub ended with its member (only zombies of the root's stub, or gone).
    for k in t.kids {
        assert!(
            ps(&hosts, 1, k)
                .is_none_or(|(c, _)| c != "ferry-stub" || ferry_tests::proc_state(k) == Some('Z')),
            "member stub {k} still runs on h1"
        );
    }
    wait_for("nothing left on h2", Duration::from_secs(10), || {
        members_in(&hosts, 2).is_empty()
    })
    .unwrap();
    wait_record(&hosts, 1, "ended");
}

/// `TracerPid:` of `pid` in host `n`.
fn tracer_of(hosts: &Hosts, n: u32, pid: i32) -> String {
    hosts
        .run_ok(n, &["grep", "TracerPid", &format!("/proc/{pid}/status")])
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// Nothing of ferryd stays in a migrated member: on h2 no member has a tracer (the agent
/// learns a member's end through its pidfd), so a member can be migrated on from there (back
/// to h1, into a new PID namespace: its PID on h1 is its stub's). A member's exit status
/// still reaches its stub on h1: child 1, ended by its parent on h2 (through the chain stub
/// on h1 → stub on h2 → child 1 on h1), exits 21, and so does its stub on h1 (seen through a
/// pidfd of the stub, after its parent's stub reaped it). Also: the tree's PIDs, free on h2,
/// are kept there without a PID namespace of its own.
#[test]
fn a_migrated_member_has_no_tracer_moves_on_and_its_status_reaches_its_stub() {
    let Some((ctx, hosts)) = up("migrate-tree-untraced") else {
        return;
    };
    // The tree's PIDs on h1 are far above any in use on h2: free there, so the tree keeps
    // them on h2 with no PID namespace of its own.
    hosts
        .run_ok(
            1,
            &["sh", "-c", "echo 20000 > /proc/sys/kernel/ns_last_pid"],
        )
        .unwrap();
    let mut t = start_tree(&hosts, &ctx, "tree", Stdio::null());
    assert!(t.parent > 20000, "the tree's PIDs on h1: {}", t.parent);
    let pid = t.parent.to_string();
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h2", "--tree"]);
    assert!(
        o.status.success(),
        "migrate --tree: {}\n{}\n{}",
        text(&o),
        hosts.ferryd_log(1),
        hosts.ferryd_log(2)
    );
    assert!(!text(&o).contains("PID namespace"), "{}", text(&o));
    wait_record(&hosts, 1, "done");
    wait_record(&hosts, 2, "done");
    let mut kept = vec![t.parent, t.kids[0], t.kids[1]];
    kept.sort_unstable();
    assert_eq!(members_in(&hosts, 2), kept, "the PIDs on h2 (seen in h2)");
    for &k in &t.kids {
        assert_eq!(
            ps(&hosts, 2, k).map(|p| p.1),
            Some(t.parent),
            "parent of {k} on h2"
        );
    }
    for p in kept {
        assert_eq!(tracer_of(&hosts, 2, p), "0", "TracerPid of {p} on h2");
    }
    let seq0 = seq_of(&check(&hosts, 2, &t, "child2", t.kids[1]));
    sleep(Duration::from_millis(300));
    let seq1 = seq_of(&check(&hosts, 2, &t, "child2", t.kids[1]));
    assert!(
        seq1 > seq0,
        "the pipe's sequence went on on h2: {seq0} then {seq1}"
    );
    // Child 1 moves on, alone, back to h1.
    let kid = t.kids[0].to_string();
    let o = ferry(&hosts, 2, &["migrate", &kid, "--to", "h1"]);
    assert!(
        o.status.success(),
        "migrate child 1 on from h2: {}\n{}\n{}",
        text(&o),
        hosts.ferryd_log(2),
        hosts.ferryd_log(1)
    );
    assert!(text(&o).contains("new PID namespace"), "{}", text(&o));
    assert_eq!(
        ps(&hosts, 2, t.kids[0]).map(|p| p.0),
        Some("ferry-stub".to_string()),
        "child 1 on h2 is its stub"
    );
    assert_eq!(members_in(&hosts, 1).len(), 1, "child 1 runs on h1");
    // Moved alone, its end of the pipe to child 2 (not one of fds 0-2) is not relayed: it
    // is /dev/null on h1, and the summary says so (as for any process migrated alone).
    assert!(
        text(&o).contains("fd 6") && text(&o).contains("/dev/null"),
        "{}",
        text(&o)
    );
    // Child 1's stub on h1, watched through a pidfd.
    let out = t.state.join("stub-status");
    let mut watcher = hosts
        .command(1, "python3")
        .arg(ferry_tests::workload_file("exit_status_of.py"))
        .arg(&kid)
        .arg(&out)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the watcher in h1");
    wait_for("the watcher", Duration::from_secs(10), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains("watching"))
    })
    .unwrap();
    hosts
        .run_ok(1, &["kill", "-HUP", &t.parent.to_string()])
        .unwrap();
    wait_for(
        "the parent to reap child 1 on h2",
        Duration::from_secs(20),
        || status_file(&t.state).contains("parent reaped child1 status=21"),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", status_file(&t.state)));
    let _ = watcher.wait();
    let said = std::fs::read_to_string(&out).unwrap_or_default();
    eprintln!("child 1's stub on h1: {said}");
    assert!(
        said.contains(&format!("status {}", 21 << 8)),
        "child 1's stub on h1 ended with: {said}\n{}",
        hosts.ferryd_log(2)
    );
    // The job's end.
    hosts
        .run_ok(1, &["kill", "-USR2", &t.parent.to_string()])
        .unwrap();
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = t.nsenter.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the root's stub did not end\n{}",
            hosts.ferryd_log(1)
        );
        sleep(Duration::from_millis(50));
    };
    let s = status_file(&t.state);
    assert!(!s.contains("BAD"), "{s}");
    assert_eq!(code, Some(42), "the root's parent on h1 saw {code:?}");
}

/// A member whose stub cannot start after the commit point (FERRY_FAULT member-stub-fail: its
/// `execve` fails), in a tree stopped and copied (`--stop-and-copy`): the migration is done, its summary names the member; the member's
/// original is ended on h1 (its copy on h2 takes over), its place in the tree there is gone
/// (reaped by the root's stub), the other child's stub stays; on h2 the whole tree goes on
/// (the pipe between the children travels in the image); the job still ends with the root's
/// status reaching its parent on h1.
#[test]
fn a_member_whose_stub_fails_after_the_commit_point_is_ended_on_the_origin() {
    let Some((ctx, mut hosts)) = up("migrate-tree-member-stub") else {
        return;
    };
    hosts.kill_ferryd(1).expect("kill ferryd");
    hosts
        .start_ferryd(1, &[("FERRY_FAULT", "member-stub-fail")])
        .expect("start ferryd with the fault");
    let mut t = start_tree(&hosts, &ctx, "tree", Stdio::null());
    let seq = seq_of(&check(&hosts, 1, &t, "child2", t.kids[1]));
    let pid = t.parent.to_string();
    // Stopped and copied (the way a tree moved before it moved live).
    let o = ferry(
        &hosts,
        1,
        &["migrate", &pid, "--to", "h2", "--tree", "--stop-and-copy"],
    );
    assert!(
        o.status.success(),
        "migrate --tree --stop-and-copy: {}\n{}\n{}",
        text(&o),
        hosts.ferryd_log(1),
        hosts.ferryd_log(2)
    );
    assert!(
        text(&o).contains("stop-and-copy: downtime") && live_line(&text(&o)).is_none(),
        "{}",
        text(&o)
    );
    let lost = t
        .kids
        .into_iter()
        .find(|k| text(&o).contains(&format!("pid {k} could not become a stub")))
        .unwrap_or_else(|| panic!("the summary names no member: {}", text(&o)));
    let kept = t.kids.into_iter().find(|&k| k != lost).unwrap();
    assert!(text(&o).contains("its original was ended"), "{}", text(&o));
    wait_record(&hosts, 1, "done");
    wait_record(&hosts, 2, "done");
    wait_for(
        "the lost member gone from h1",
        Duration::from_secs(10),
        || ps(&hosts, 1, lost).is_none(),
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", ps(&hosts, 1, lost)));
    assert!(
        members_in(&hosts, 1).is_empty(),
        "h1 still runs the program"
    );
    assert_eq!(
        ps(&hosts, 1, kept),
        Some(("ferry-stub".to_string(), t.parent)),
        "the other child's stub on h1"
    );
    assert_eq!(members_in(&hosts, 2).len(), 3, "h2 runs the tree");
    let after = seq_of(&check(&hosts, 2, &t, "child2", t.kids[1]));
    assert!(
        after > seq,
        "the pipe's sequence went on: {seq} then {after}"
    );
    hosts
        .run_ok(1, &["kill", "-USR2", &t.parent.to_string()])
        .unwrap();
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = t.nsenter.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the root's stub did not end\n{}",
            hosts.ferryd_log(1)
        );
        sleep(Duration::from_millis(50));
    };
    let s = status_file(&t.state);
    assert!(!s.contains("BAD"), "{s}");
    assert_eq!(code, Some(42), "the root's parent on h1 saw {code:?}");
}

/// A restore that fails on h2 (FERRY_FAULT restore-fail, after every member was built)
/// leaves the whole tree running on h1 as it was, and nothing on h2.
#[test]
fn a_failed_restore_leaves_the_whole_tree_on_the_origin() {
    let Some((ctx, mut hosts)) = up("migrate-tree-fault") else {
        return;
    };
    hosts.kill_ferryd(2).expect("kill ferryd");
    hosts
        .start_ferryd(2, &[("FERRY_FAULT", "restore-fail")])
        .expect("start ferryd with the fault");
    let mut t = start_tree(&hosts, &ctx, "tree", Stdio::null());
    let seq = seq_of(&check(&hosts, 1, &t, "child2", t.kids[1]));
    let pid = t.parent.to_string();
    let o = ferry(
        &hosts,
        1,
        &[
            "migrate",
            &pid,
            "--to",
            "h2",
            "--tree",
            "--compress",
            "none",
        ],
    );
    assert!(
        !o.status.success(),
        "migrated despite the fault: {}",
        text(&o)
    );
    assert!(text(&o).contains("goes on here"), "{}", text(&o));
    wait_for("nothing on h2", Duration::from_secs(20), || {
        members_in(&hosts, 2).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}: h2 runs {:?}", members_in(&hosts, 2)));
    let mut here = vec![t.parent, t.kids[0], t.kids[1]];
    here.sort_unstable();
    assert_eq!(members_in(&hosts, 1), here, "the tree on h1");
    check(&hosts, 1, &t, "parent", t.parent);
    check(&hosts, 1, &t, "child1", t.kids[0]);
    let after = seq_of(&check(&hosts, 1, &t, "child2", t.kids[1]));
    assert!(
        after > seq,
        "the pipe's sequence went on: {seq} then {after}"
    );
    for k in t.kids {
        assert_eq!(
            ps(&hosts, 1, k).map(|p| p.1),
            Some(t.parent),
            "parent of {k}"
        );
    }
    wait_record(&hosts, 1, "aborted");
    wait_record(&hosts, 2, "aborted");
    t.end(&hosts);
}

/// `bash -c 'python3 … | cat; exit 7'`: the shell, the producer and `cat` move as one tree
/// while lines flow (the pipe between them travels in the image); every line reaches the
/// caller's stdout on h1 through the stubs, in order, none lost or twice; the shell's
/// status (7) reaches its parent on h1 once the pipeline ended.
#[test]
fn a_shell_pipeline_moves_and_its_output_reaches_the_caller() {
    let Some((_ctx, hosts)) = up("migrate-tree-pipeline") else {
        return;
    };
    const LINES: u32 = 400;
    let script = format!(
        "python3 -u -c 'import time\nfor i in range({LINES}):\n    print(\"line\", i, flush=True)\n    time.sleep(0.02)' | cat; exit 7"
    );
    let mut sh = hosts
        .command(1, "bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the pipeline in h1");
    let shell = Hosts::inner_pid(&sh).expect("the shell's pid");
    let stdout = sh.stdout.take().expect("stdout");
    let mut stderr = sh.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    while got.len() < 50 {
        got.push(
            rx.recv_timeout(Duration::from_secs(20))
                .expect("the first lines"),
        );
    }
    // The shell's PID inside h1: the one whose parent is outside (nsenter).
    let pid = hosts
        .run_ok(1, &["pgrep", "-x", "bash"])
        .unwrap()
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|&p| ps(&hosts, 1, p).is_some_and(|(_, pp)| pp == 0))
        .expect("the shell in h1");
    let _ = shell;
    let o = ferry(
        &hosts,
        1,
        &["migrate", &pid.to_string(), "--to", "h2", "--tree"],
    );
    assert!(
        o.status.success(),
        "migrate --tree: {}\n{}\n{}",
        text(&o),
        hosts.ferryd_log(1),
        hosts.ferryd_log(2)
    );
    let py = |n| {
        hosts
            .run(n, &["pgrep", "-x", "python3"])
            .map(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
            .unwrap_or(false)
    };
    assert!(!py(1), "the producer still runs on h1");
    assert!(
        py(2),
        "the producer does not run on h2\n{}",
        hosts.ferryd_log(2)
    );
    assert_eq!(ps(&hosts, 1, pid).map(|p| p.0), Some("ferry-stub".into()));
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(30)) {
        got.push(l);
    }
    let want: Vec<String> = (0..LINES).map(|i| format!("line {i}")).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "lines: first {:?}, last {:?}; stderr: {}",
        got.first(),
        got.last(),
        errors.join().unwrap_or_default()
    );
    assert_eq!(got, want);
    let st = sh.wait().expect("wait for the shell's nsenter");
    assert_eq!(st.code(), Some(7), "the shell's parent on h1 saw {st:?}");
    let _ = reader.join();
    wait_record(&hosts, 1, "ended");
}

/// The origin agent dies right after the whole tree became stubs (FERRY_FAULT
/// origin-exit-after-commit): the restarted agent sees the root's stub, commits, and serves
/// every member's stub again: a signal to a child's stub on h1 reaches that child on h2, and
/// the job's end still reaches the root's parent on h1.
#[test]
fn an_origin_agent_restart_after_the_commit_point_resumes_every_members_relay() {
    let Some((ctx, mut hosts)) = up("migrate-tree-restart") else {
        return;
    };
    let mut t = start_tree(&hosts, &ctx, "tree", Stdio::null());
    hosts.kill_ferryd(1).expect("kill ferryd");
    hosts
        .start_ferryd(1, &[("FERRY_FAULT", "origin-exit-after-commit")])
        .expect("start ferryd with the fault");
    let pid = t.parent.to_string();
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h2", "--tree"]);
    assert!(!o.status.success(), "{}", text(&o));
    let _ = hosts.kill_ferryd(1);
    hosts.start_ferryd(1, &[]).expect("restart ferryd");
    wait_record(&hosts, 1, "done");
    wait_record(&hosts, 2, "done");
    assert_eq!(members_in(&hosts, 2).len(), 3, "h2 runs the tree");
    assert!(
        members_in(&hosts, 1).is_empty(),
        "h1 still runs the program"
    );
    // Through the resumed relay of a member (not the root's).
    let line = check(&hosts, 1, &t, "child2", t.kids[1]);
    assert!(seq_of(&line) > 0, "{line}");
    hosts
        .run_ok(1, &["kill", "-USR2", &t.parent.to_string()])
        .unwrap();
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = t.nsenter.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the root's stub did not end\n{}",
            hosts.ferryd_log(1)
        );
        sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(42), "the root's parent on h1 saw {code:?}");
}

/// The `tree_heaps` victim in h1 (a parent and two children, each rewriting pages of its
/// own `mib` MiB heap and counting, every 10 ms).
fn start_heaps(hosts: &Hosts, ctx: &TestCtx, name: &str, mib: u32) -> Tree {
    let state = ctx.path(name);
    std::fs::create_dir_all(&state).expect("state dir");
    let nsenter = hosts
        .command(1, workload("tree_heaps"))
        .arg(&state)
        .arg(mib.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the tree in h1");
    wait_for("the tree to be ready", Duration::from_secs(20), || {
        ["parent", "child1", "child2"]
            .iter()
            .all(|r| ready_pid(&state, r).is_some())
    })
    .expect("tree ready");
    let pid = |r| ready_pid(&state, r).expect("ready line");
    Tree {
        parent: pid("parent"),
        kids: [pid("child1"), pid("child2")],
        state,
        nsenter,
    }
}

/// PIDs of processes named `name` inside host `n`.
fn named_in(hosts: &Hosts, n: u32, name: &str) -> Vec<i32> {
    let out = hosts.run(n, &["pgrep", "-x", name]).expect("pgrep");
    let mut v: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

fn counter_of(line: &str) -> u64 {
    line.split("counter=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {line:?}"))
}

/// The figures of the summary's live line: "live: N pre-copy round(s) (A MiB, B MiB, …),
/// then F MiB while stopped; downtime D ms; …": (MiB per round, MiB while stopped).
fn live_line(out: &str) -> Option<(Vec<f64>, f64)> {
    let l = out.lines().find(|l| l.starts_with("live: "))?;
    let per = l.split_once("round(s) (")?.1.split_once(')')?.0;
    let rounds = per
        .split(", ")
        .map(|x| x.trim_end_matches(" MiB").parse().ok())
        .collect::<Option<Vec<f64>>>()?;
    let stopped = l
        .split_once("then ")?
        .1
        .split_once(" MiB while stopped")?
        .0
        .parse()
        .ok()?;
    Some((rounds, stopped))
}

/// Asks every process in `pids` (inside host `n`) to check itself; returns the answers by
/// role, each of which must be "ok ...".
fn check_all(hosts: &Hosts, n: u32, t: &Tree, pids: &[i32]) -> Vec<(String, String)> {
    let before = status_file(&t.state).lines().count();
    for p in pids {
        hosts.run_ok(n, &["kill", "-USR1", &p.to_string()]).unwrap();
    }
    let mut lines = Vec::new();
    wait_for("every answer", Duration::from_secs(20), || {
        lines = status_file(&t.state)
            .lines()
            .skip(before)
            .filter(|l| l.starts_with("ok ") || l.starts_with("BAD "))
            .map(str::to_string)
            .collect();
        lines.len() >= pids.len()
    })
    .unwrap_or_else(|e| panic!("{e}: {lines:?}"));
    for l in &lines {
        assert!(l.starts_with("ok "), "on h{n}: {l}");
    }
    let mut by_role: Vec<(String, String)> = lines
        .into_iter()
        .map(|l| (l.split_whitespace().nth(1).unwrap_or("").to_string(), l))
        .collect();
    by_role.sort();
    by_role
}

/// `--tree` is live by default: a parent and two children, each rewriting pages of its own
/// 16 MiB heap (shared copy-on-write since the fork) and counting while the rounds go, move
/// with their pre-copied pages: the summary names the rounds and copies less while stopped
/// than in round 1; on h2 each member's heap adds up to the sum it kept (a page copied in an
/// older version than its last write would not) and its counter went on. The job's end (the
/// children check themselves and exit 21, 22, the parent reaps them, checks itself and
/// exits 42) reaches the root's parent on h1 only once every member ended on h2.
#[test]
fn a_tree_migrates_live_with_every_members_heap_and_its_status_comes_back() {
    let Some((ctx, hosts)) = up("migrate-tree-live") else {
        return;
    };
    let mut t = start_heaps(&hosts, &ctx, "heaps", 16);
    let pids = [t.parent, t.kids[0], t.kids[1]];
    let before = check_all(&hosts, 1, &t, &pids);
    let pid = t.parent.to_string();
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h2", "--tree"]);
    assert!(
        o.status.success(),
        "migrate --tree: {}\n{}\n{}",
        text(&o),
        hosts.ferryd_log(1),
        hosts.ferryd_log(2)
    );
    eprintln!("migrate --tree: {}", text(&o));
    let log = hosts.ferryd_log(1);
    // Per member: the pages its final image names as pre-copied instead of carrying them.
    let marked: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("on the destination already member="))
        .filter_map(|l| {
            l.split("precopied=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    eprintln!("pre-copied pages per member: {marked:?}");
    assert_eq!(marked.len(), 3, "one line per member\n{log}");
    let (rounds, stopped) =
        live_line(&text(&o)).unwrap_or_else(|| panic!("no live line: {}", text(&o)));
    assert!(!rounds.is_empty(), "{}", text(&o));
    // Round 1 sent the three heaps (each member reads its own, shared pages too).
    assert!(rounds[0] >= 40.0, "round 1 sent {} MiB", rounds[0]);
    // Far less went while stopped than in round 1: the pre-copied pages were left out (also
    // those the children shared with their parent when read: reading one gives the reader a
    // copy of its own; a page the kernel moved meanwhile, by compaction say, travels again).
    assert!(
        stopped < rounds[0] / 4.0 && marked.iter().all(|&n| n > 0),
        "{stopped} MiB while stopped, {} in round 1, pre-copied {marked:?}: the pre-copied \
         pages were not used\n{log}",
        rounds[0]
    );
    let there = named_in(&hosts, 2, "tree_heaps");
    assert_eq!(there.len(), 3, "h2 runs {there:?}\n{}", hosts.ferryd_log(2));
    let after = check_all(&hosts, 2, &t, &there);
    let roles: Vec<&str> = after.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["child1", "child2", "parent"], "{after:?}");
    for ((r, b), (_, a)) in before.iter().zip(&after) {
        assert!(counter_of(a) > counter_of(b), "{r}'s counter: {b} then {a}");
    }
    assert!(
        named_in(&hosts, 1, "tree_heaps").is_empty(),
        "h1 still runs it"
    );
    for p in pids {
        assert_eq!(
            ps(&hosts, 1, p).map(|p| p.0),
            Some("ferry-stub".to_string()),
            "{p} on h1"
        );
    }
    wait_record(&hosts, 1, "done");
    wait_record(&hosts, 2, "done");
    hosts
        .run_ok(1, &["kill", "-USR2", &t.parent.to_string()])
        .unwrap();
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = t.nsenter.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the root's stub did not end\n{}",
            hosts.ferryd_log(1)
        );
        sleep(Duration::from_millis(50));
    };
    let s = status_file(&t.state);
    assert!(!s.contains("BAD"), "{s}");
    for l in ["child1 exits 21", "child2 exits 22", "parent exits 42"] {
        assert!(s.contains(l), "no {l:?} in {s}");
    }
    assert_eq!(code, Some(42), "the root's parent on h1 saw {code:?}");
    assert!(
        named_in(&hosts, 2, "tree_heaps").is_empty(),
        "a member still runs on h2 after its root's status came back"
    );
    wait_record(&hosts, 1, "ended");
}

/// What of the write tracking a process of host `n` shows: areas still registered (`uw` in
/// smaps) and descriptors of a userfaultfd (in fd and fdinfo).
fn tracking_left(hosts: &Hosts, n: u32, pid: i32) -> String {
    let smaps = hosts
        .run_ok(n, &["cat", &format!("/proc/{pid}/smaps")])
        .unwrap_or_default();
    let uw = smaps
        .lines()
        .filter(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw"))
        .count();
    let fds = hosts
        .run_ok(
            n,
            &[
                "sh",
                "-c",
                &format!("ls -l /proc/{pid}/fd; cat /proc/{pid}/fdinfo/*"),
            ],
        )
        .unwrap_or_default();
    let mut out = String::new();
    if uw > 0 {
        out.push_str(&format!("{uw} area(s) with uw; "));
    }
    if fds.contains("userfaultfd") {
        out.push_str(&format!("a userfaultfd descriptor: {fds}"));
    }
    out
}

/// A live tree migration given up in round 1 (the destination's agent exits when the first
/// pre-copied pages arrive: FERRY_FAULT dest-exit-precopy-round-1): the whole tree runs on
/// on h1, each member's heap adding up and its counter going on, no member traced, and
/// nothing of the tracking left in any member (no area registered, no userfaultfd among its
/// descriptors); nothing runs on h2.
#[test]
fn a_live_tree_migration_given_up_in_a_round_leaves_nothing_in_any_member() {
    let Some((ctx, mut hosts)) = up("migrate-tree-live-abort") else {
        return;
    };
    hosts.kill_ferryd(2).expect("kill ferryd");
    hosts
        .start_ferryd(2, &[("FERRY_FAULT", "dest-exit-precopy-round-1")])
        .expect("start ferryd with the fault");
    let mut t = start_heaps(&hosts, &ctx, "heaps", 16);
    let pids = [t.parent, t.kids[0], t.kids[1]];
    for p in pids {
        assert_eq!(tracking_left(&hosts, 1, p), "", "pid {p} before");
    }
    let before = check_all(&hosts, 1, &t, &pids);
    let pid = t.parent.to_string();
    let o = ferry(&hosts, 1, &["migrate", &pid, "--to", "h2", "--tree"]);
    assert!(
        !o.status.success(),
        "migrated despite the fault: {}",
        text(&o)
    );
    assert!(text(&o).contains("goes on here"), "{}", text(&o));
    for p in pids {
        assert_eq!(
            tracking_left(&hosts, 1, p),
            "",
            "pid {p} after the abort\n{}",
            hosts.ferryd_log(1)
        );
        assert_eq!(tracer_of(&hosts, 1, p), "0", "TracerPid of {p}");
        assert_eq!(ps(&hosts, 1, p).map(|p| p.0), Some("tree_heaps".into()));
    }
    sleep(Duration::from_millis(200));
    let after = check_all(&hosts, 1, &t, &pids);
    for ((r, b), (_, a)) in before.iter().zip(&after) {
        assert!(counter_of(a) > counter_of(b), "{r}'s counter: {b} then {a}");
    }
    assert!(named_in(&hosts, 2, "tree_heaps").is_empty(), "h2 runs it");
    wait_record(&hosts, 1, "aborted");
    t.end(&hosts);
}

/// Debian's nginx (installed by .ci/run), or the one `FERRY_TEST_NGINX` names.
fn nginx_bin() -> Option<PathBuf> {
    let p = std::env::var_os("FERRY_TEST_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    p.exists().then_some(p)
}

/// The nginx master on h1 (run in the foreground by `nsenter`, its parent there).
struct Nginx {
    nsenter: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.nsenter.kill();
        let _ = self.nsenter.wait();
    }
}

/// One HTTP GET of `url` from inside host `n`, through curl: the body.
fn http_get(hosts: &Hosts, n: u32, url: &str) -> Result<String> {
    hosts.run_ok(n, &["curl", "-sS", "--fail", "--max-time", "10", url])
}

/// nginx (a master and two workers, run as root: the workers as nobody) serves a page over
/// HTTP on h1; `ferry migrate MASTER --tree` moves it live to h2 with its workers; the
/// listening socket stays on h1, relayed by the master's stubs to the copies: clients on h1
/// get the same page, on new connections, from the nginx now running on h2 (none runs on
/// h1 any more). SIGQUIT to the master's stub ends nginx gracefully on h2, and its exit
/// status (0) reaches its parent on h1.
#[test]
fn nginx_with_its_workers_serves_before_and_after_a_live_tree_migration() {
    let Some(nginx) = nginx_bin() else {
        let why = "SKIPPED: nginx is not installed (.ci/run installs it; or set FERRY_TEST_NGINX)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("{why}");
        return;
    };
    let Some((ctx, hosts)) = up("migrate-tree-nginx") else {
        return;
    };
    let state = ctx.path("nginx");
    for d in ["www", "tmp"] {
        std::fs::create_dir_all(state.join(d)).expect("nginx dirs");
    }
    // World-readable: the workers run as nobody.
    for d in [&state, &state.join("www"), &ctx.path("")] {
        let _ = std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    let page: String = (0..200)
        .map(|i| format!("ferry nginx line {i}\n"))
        .collect();
    std::fs::write(state.join("www/index.html"), &page).expect("the page");
    let _ = std::fs::set_permissions(
        state.join("www/index.html"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    );
    let addr = Hosts::addr(1);
    let s = state.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 2;\npid {s}/nginx.pid;\n\
         error_log {s}/error.log;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {s}/tmp/body;\n\
         proxy_temp_path {s}/tmp/proxy;\n  fastcgi_temp_path {s}/tmp/fastcgi;\n\
         uwsgi_temp_path {s}/tmp/uwsgi;\n  scgi_temp_path {s}/tmp/scgi;\n\
         server {{\n    listen {addr}:8080;\n    root {s}/www;\n  }}\n}}\n"
    );
    std::fs::write(state.join("nginx.conf"), conf).expect("nginx.conf");
    let mut n = Nginx {
        nsenter: hosts
            .command(1, &nginx)
            .arg("-p")
            .arg(&state)
            .arg("-e")
            .arg(state.join("error.log"))
            .arg("-c")
            .arg(state.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx in h1"),
    };
    let url = format!("http://{addr}:8080/index.html");
    wait_for("nginx to serve", Duration::from_secs(20), || {
        http_get(&hosts, 1, &url).is_ok_and(|b| b == page)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            std::fs::read_to_string(state.join("error.log")).unwrap_or_default()
        )
    });
    let on_h1 = named_in(&hosts, 1, "nginx");
    assert_eq!(on_h1.len(), 3, "nginx processes on h1: {on_h1:?}");
    let master = on_h1
        .iter()
        .copied()
        .find(|&p| ps(&hosts, 1, p).is_some_and(|(_, pp)| !on_h1.contains(&pp)))
        .expect("the master");
    for _ in 0..5 {
        assert_eq!(http_get(&hosts, 1, &url).unwrap(), page);
    }
    let o = ferry(
        &hosts,
        1,
        &["migrate", &master.to_string(), "--to", "h2", "--tree"],
    );
    assert!(
        o.status.success(),
        "migrate nginx --tree: {}\n{}\n{}",
        text(&o),
        hosts.ferryd_log(1),
        hosts.ferryd_log(2)
    );
    eprintln!("migrate nginx --tree: {}", text(&o));
    assert!(live_line(&text(&o)).is_some(), "not live: {}", text(&o));
    assert!(named_in(&hosts, 1, "nginx").is_empty(), "nginx still on h1");
    assert_eq!(
        named_in(&hosts, 2, "nginx").len(),
        3,
        "nginx on h2\n{}",
        hosts.ferryd_log(2)
    );
    for p in &on_h1 {
        assert_eq!(
            ps(&hosts, 1, *p).map(|p| p.0),
            Some("ferry-stub".to_string()),
            "{p} on h1"
        );
    }
    for i in 0..20 {
        let got = http_get(&hosts, 1, &url);
        assert_eq!(
            got.as_deref().ok(),
            Some(page.as_str()),
            "request {i} after the migration: {got:?}\n{}\n{}",
            hosts.ferryd_log(1),
            hosts.ferryd_log(2)
        );
    }
    hosts
        .run_ok(1, &["kill", "-QUIT", &master.to_string()])
        .unwrap();
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = n.nsenter.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "nginx's stub did not end\n{}",
            hosts.ferryd_log(1)
        );
        sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0), "nginx's parent on h1 saw {code:?}");
    assert!(named_in(&hosts, 2, "nginx").is_empty(), "nginx still on h2");
}
