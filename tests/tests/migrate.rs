//! `ferry migrate` between two test hosts: the happy path, refusal and shipping of files the
//! destination lacks, and each injected fault (FERRY_FAULT) — after every one, the process runs
//! exactly once with its state intact (its own verification), and `ferry migrations` on both
//! hosts says what happened.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_tests::hosts::Hosts;
use ferry_tests::{TestCtx, ferry_bin, setup, workload};

/// A victim started inside host 1.
struct Victim {
    state: PathBuf,
    /// Its PID inside host 1.
    pid: i32,
    nsenter: Child,
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.nsenter.kill();
        let _ = self.nsenter.wait();
    }
}

fn status(state: &Path) -> String {
    std::fs::read_to_string(state.join("status")).unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > timeout {
            bail!("timed out waiting for {what}");
        }
        sleep(Duration::from_millis(50));
    }
    Ok(())
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
        status(&state).contains("ready pid=")
    })
    .expect("victim ready");
    let s = status(&state);
    let pid = s
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

/// Asks the victim (PID `pid` inside host `n`) to verify itself; returns its answer.
fn check(hosts: &Hosts, n: u32, v: &Victim, pid: i32) -> String {
    let before = status(&v.state).lines().count();
    let out = hosts
        .run(n, &["kill", "-USR1", &pid.to_string()])
        .expect("kill -USR1");
    assert!(
        out.status.success(),
        "kill -USR1 {pid} in h{n}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the victim's answer", Duration::from_secs(20), || {
        status(&v.state).lines().count() > before
    })
    .expect("answer");
    let s = status(&v.state);
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

#[test]
fn each_codec_works() {
    let Some((ctx, hosts)) = up("migrate-codecs") else {
        return;
    };
    for (i, codec) in ["zstd", "lz4", "none"].iter().enumerate() {
        let v = start_victim(&hosts, &ctx, &format!("v{i}"), 8, &[]);
        let o = migrate(&hosts, &v, &["--compress", codec]);
        assert!(
            o.status.success(),
            "migrate --compress {codec}: {}",
            text(&o)
        );
        assert!(text(&o).contains(&format!("({codec},")), "{}", text(&o));
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
