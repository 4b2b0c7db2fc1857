//! Dump and restore of the general C victim (`workloads/counter.c`): what the process can
//! observe, what /proc shows, cycles, `--leave-running`, codecs, stdio, PID namespaces, and
//! `ferry image inspect`.

use std::ffi::OsStr;
use std::fs::File;
use std::process::Stdio;
use std::time::Duration;

use ferry_tests::{
    ProcSnapshot, Spawn, TestCtx, Victim, alive, assert_same_maps, field, image_path, my_children,
    normalized_maps, proc_bytes, proc_link, proc_stat_field, setup, status_field, wait_until,
};
use nix::fcntl::OFlag;

fn num(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key}= in {line:?}"))
}

/// One dump → restore with the given extra dump arguments, checking everything the counter
/// victim and /proc can tell. Returns the victim's check line after the restore.
fn round_trip(ctx: &TestCtx, v: &mut Victim, image_name: &str, dump_args: &[&str]) -> String {
    let before = v.check();
    let snap = ProcSnapshot::of(v.pid).expect("read /proc before dump");
    let auxv = proc_bytes(v.pid, "auxv");
    let maps = normalized_maps(v.pid);
    let pid = v.pid;
    let img = image_path(ctx, image_name);

    let dump = v.dump(ctx, &img, dump_args);
    let summary = dump.stdout.to_lowercase();
    assert!(
        summary.contains("page") && summary.contains("ms"),
        "dump summary should give pages and milliseconds frozen: {:?}",
        dump.stdout
    );
    assert!(
        !alive(pid),
        "dump without --leave-running must end the process"
    );
    let tick_at_dump = v.last_tick();

    let out = v.restore(ctx, &img, &[]);
    assert_eq!(v.pid, pid, "restore must reuse the free original PID");
    assert!(
        !out.stderr.contains("/dev/null"),
        "stdio of this victim is /dev/null and a file: nothing to warn about, got: {}",
        out.stderr
    );
    v.assert_running_free();
    assert_eq!(
        status_field(v.pid, "PPid"),
        Some(std::process::id().to_string()),
        "once `ferry restore` exited, the detached process belongs to the subreaper"
    );
    assert_same_maps(&maps, &normalized_maps(v.pid));
    assert_eq!(
        ProcSnapshot::of(v.pid).expect("read /proc after restore"),
        snap
    );
    assert_eq!(proc_bytes(v.pid, "auxv"), auxv, "/proc/PID/auxv changed");

    v.wait_tick_beyond(tick_at_dump + 3);
    let after = v.check();
    assert_eq!(
        field(&after, "sum"),
        field(&before, "sum"),
        "memory checksum"
    );
    assert_eq!(
        num(&after, "pid"),
        u64::try_from(v.orig_pid).unwrap(),
        "getpid() inside"
    );
    assert!(
        num(&after, "counter") > num(&before, "counter"),
        "counter went back"
    );
    assert_eq!(
        num(&after, "off"),
        num(&before, "off") + 16,
        "the data file offset did not carry on where it was"
    );
    assert_eq!(
        num(&after, "usr1"),
        num(&before, "usr1") + 1,
        "handler count"
    );
    v.assert_ticks_continuous();
    v.assert_no_bad();
    after
}

#[test]
fn counter_round_trip() {
    let Some(ctx) = setup("counter_round_trip") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &["an-argument", "with spaces"]);
    v.wait_tick_beyond(3);
    let exe = proc_link(v.pid, "exe");
    round_trip(&ctx, &mut v, "counter", &[]);
    assert_eq!(proc_link(v.pid, "exe"), exe);
    assert_eq!(
        proc_link(v.pid, "cwd"),
        v.state,
        "the victim chdir'ed into its state directory"
    );
    let environ = proc_bytes(v.pid, "environ");
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|e| e == b"FERRY_TEST_MARK=environ-survives-restore"),
        "environ lost the test's marker"
    );
    assert_eq!(status_field(v.pid, "Umask").as_deref(), Some("0027"));
    let limits = String::from_utf8(proc_bytes(v.pid, "limits")).unwrap();
    assert!(
        limits.lines().any(|l| l.starts_with("Max open files")
            && l.split_whitespace()
                .eq(["Max", "open", "files", "777", "4096", "files"])),
        "RLIMIT_NOFILE is not 777/4096:\n{limits}"
    );
}

#[test]
fn three_cycles() {
    let Some(ctx) = setup("three_cycles") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    v.wait_tick_beyond(3);
    let first = v.check();
    let mut last_counter = num(&first, "counter");
    for cycle in 0..3 {
        let after = round_trip(&ctx, &mut v, &format!("cycle{cycle}"), &[]);
        assert_eq!(
            field(&after, "sum"),
            field(&first, "sum"),
            "cycle {cycle}: checksum"
        );
        assert!(
            num(&after, "counter") > last_counter,
            "cycle {cycle}: counter"
        );
        last_counter = num(&after, "counter");
    }
    assert_eq!(v.pid, v.orig_pid);
}

#[test]
fn leave_running_is_undisturbed() {
    let Some(ctx) = setup("leave_running") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    v.wait_tick_beyond(3);
    let before = v.check();
    let start_time = proc_stat_field(v.pid, 22);
    let snap = ProcSnapshot::of(v.pid).unwrap();
    let maps = normalized_maps(v.pid);
    let img = image_path(&ctx, "leave");
    v.dump(&ctx, &img, &["--leave-running"]);
    assert!(alive(v.pid), "--leave-running ended the process");
    v.assert_running_free();
    assert_eq!(
        proc_stat_field(v.pid, 22),
        start_time,
        "the process was restarted"
    );
    assert_eq!(ProcSnapshot::of(v.pid).unwrap(), snap);
    assert_same_maps(&maps, &normalized_maps(v.pid));
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 5);
    let after = v.check();
    assert_eq!(field(&after, "sum"), field(&before, "sum"));
    assert_eq!(num(&after, "off"), num(&before, "off") + 16);
    assert!(num(&after, "counter") > num(&before, "counter"));
    v.assert_ticks_continuous();
    v.assert_no_bad();
    assert!(
        my_children().contains(&v.pid),
        "the victim is still the test's own child"
    );
}

#[test]
fn compress_lz4_round_trip() {
    let Some(ctx) = setup("compress_lz4") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    round_trip(&ctx, &mut v, "lz4", &["--compress", "lz4"]);
}

#[test]
fn compress_none_round_trip() {
    let Some(ctx) = setup("compress_none") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    let after = round_trip(&ctx, &mut v, "none", &["--compress", "none"]);
    // Uncompressed, the image holds at least the 24 MiB of non-zero pages of the buffer.
    let size = std::fs::metadata(image_path(&ctx, "none")).unwrap().len();
    assert!(size > 24 << 20, "uncompressed image is only {size} bytes");
    assert!(after.starts_with("ok"));
}

/// `--compress auto` measures the codecs on the process's memory and the output before the
/// freeze, says why in the summary, and the image holds the codec it named.
#[test]
fn compress_auto_says_why_and_round_trips() {
    let Some(ctx) = setup("compress_auto") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    v.wait_tick_beyond(3);
    let before = v.check();
    let img = image_path(&ctx, "auto");
    let out = v.dump(&ctx, &img, &["--compress", "auto"]);
    let line = out.stdout.trim();
    let why = line
        .split("; auto: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no `auto:` reason in the summary: {line}"));
    let picked = why.split(',').next().unwrap_or_default().to_owned();
    assert!(
        ["lz4", "zstd", "none"].contains(&picked.as_str()),
        "auto picked {picked:?}: {line}"
    );
    assert!(
        line.contains(&format!("{}, {picked})", img.display())),
        "the summary names another codec than the reason: {line}"
    );
    for codec in ["lz4", "zstd", "none"] {
        assert!(
            why.contains(&format!("{codec} ")),
            "no estimate for {codec}: {line}"
        );
    }
    assert!(
        why.contains("file write") && why.contains("ms/GB"),
        "{line}"
    );
    // The image's page blocks use the codec picked (or none for a block that did not shrink).
    let inspect = ctx.ferry(&[
        OsStr::new("image"),
        OsStr::new("inspect"),
        OsStr::new("--json"),
        img.as_os_str(),
    ]);
    inspect.assert_ok();
    let codecs: std::collections::BTreeSet<&str> = inspect
        .stdout
        .split("\"codec\": \"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(
        codecs.iter().all(|c| *c == picked || *c == "none"),
        "picked {picked}, the image holds {codecs:?}"
    );
    v.restore(&ctx, &img, &[]);
    let after = v.check();
    assert_eq!(field(&after, "sum"), field(&before, "sum"));
}

#[test]
fn compress_zstd_explicit_round_trip() {
    let Some(ctx) = setup("compress_zstd") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    round_trip(&ctx, &mut v, "zstd", &["--compress", "zstd"]);
}

#[test]
fn stdio_pipes_become_dev_null_with_a_warning() {
    let Some(ctx) = setup("stdio_default") else {
        return;
    };
    let (stdout_r, stdout_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    let mut v = Victim::c_with(
        &ctx,
        "counter",
        Spawn {
            stdin_pipe: true,
            stdout: Some(Stdio::from(stdout_w)),
            ..Spawn::default()
        },
    );
    let before = v.check();
    let img = image_path(&ctx, "stdio");
    v.dump(&ctx, &img, &[]);
    // The other ends of both pipes go away with their holder.
    v.stdin = None;
    drop(stdout_r);
    let out = v.restore(&ctx, &img, &[]);
    for fd in ["fd 0", "fd 1"] {
        assert!(
            out.stderr.contains(fd),
            "restore should warn that {fd} (a pipe) became /dev/null; stderr: {}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("fd 2"),
        "fd 2 is a regular file and needs no warning; stderr: {}",
        out.stderr
    );
    for fd in [0, 1] {
        assert_eq!(
            proc_link(v.pid, &format!("fd/{fd}")).to_str(),
            Some("/dev/null"),
            "fd {fd}"
        );
    }
    assert_eq!(proc_link(v.pid, "fd/2"), v.state.join("stderr"));
    let after = v.check();
    assert_eq!(field(&after, "sum"), field(&before, "sum"));
}

#[test]
fn pid_namespace_when_the_pid_is_taken() {
    let Some(ctx) = setup("pid_ns") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    let before = v.check();
    let img = image_path(&ctx, "pidns");
    v.dump(&ctx, &img, &["--leave-running"]);
    assert!(alive(v.pid));

    // never: a clear error, and no process left behind.
    let children = my_children();
    let out = ctx.ferry(&[
        "restore".as_ref(),
        img.as_os_str(),
        "--pid-ns".as_ref(),
        "never".as_ref(),
    ]);
    let leftovers: Vec<i32> = my_children().difference(&children).copied().collect();
    for &pid in &leftovers {
        ferry_tests::kill_and_reap(pid);
    }
    out.assert_failed();
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains(&v.pid.to_string())
            && ["taken", "in use", "exists", "busy", "used"]
                .iter()
                .any(|w| err.contains(w)),
        "--pid-ns never with PID {} taken should say so; stderr: {}",
        v.pid,
        out.stderr
    );
    assert!(
        leftovers.is_empty(),
        "failed restore left processes behind: {leftovers:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout of a failed restore: {:?}",
        out.stdout
    );

    // auto: a new PID namespace in which the process keeps its PID.
    let mut copy = v.sibling();
    let out = copy.restore(&ctx, &img, &["--pid-ns", "auto"]);
    assert_ne!(
        copy.pid, v.pid,
        "the PID was taken, so the copy cannot have it outside"
    );
    assert!(
        out.stderr.to_lowercase().contains("namespace"),
        "restore into a new PID namespace should say so on stderr: {}",
        out.stderr
    );
    let nspid = status_field(copy.pid, "NSpid").unwrap_or_default();
    assert_eq!(
        nspid.split_whitespace().collect::<Vec<_>>(),
        [copy.pid.to_string(), v.pid.to_string()],
        "NSpid of the restored copy"
    );
    copy.assert_running_free();

    // The default is auto too.
    let mut copy2 = v.sibling();
    let out2 = copy2.restore(&ctx, &img, &[]);
    assert!(
        out2.stderr.to_lowercase().contains("namespace"),
        "{}",
        out2.stderr
    );
    assert_ne!(copy2.pid, v.pid);

    // The namespace's init holds no descriptor of the restorer's (it once kept `ferry
    // restore`'s stdout, stderr and image open for as long as the process ran).
    let init: i32 = ferry_tests::proc_stat_field(copy.pid, 4)
        .and_then(|p| p.parse().ok())
        .expect("the copy's parent, its namespace's init");
    assert_eq!(
        status_field(init, "NSpid")
            .as_deref()
            .and_then(|s| s.split_whitespace().last()),
        Some("1"),
        "the copy's parent should be its namespace's init"
    );
    let held: Vec<_> = std::fs::read_dir(format!("/proc/{init}/fd"))
        .expect("list the init's fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    assert!(held.is_empty(), "the namespace's init holds {held:?}");

    // So `out=$(ferry restore IMG)` returns as soon as ferry does, not when the process ends.
    let children = my_children();
    let shell = std::process::Command::new("timeout")
        .args([
            "30",
            "bash",
            "-c",
            r#"out=$("$0" restore "$1" 2>/dev/null); echo "$out""#,
        ])
        .arg(ferry_tests::ferry_bin())
        .arg(&img)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run bash");
    let printed = String::from_utf8_lossy(&shell.stdout).into_owned();
    let copy3 = ferry_tests::parse_restored_pid(&printed);
    for pid in my_children().difference(&children) {
        ferry_tests::kill_and_reap(*pid);
    }
    assert!(
        shell.status.success() && copy3.is_some(),
        "out=$(ferry restore) should return at once with the PID ({:?}): {printed:?}",
        shell.status
    );

    // End the original and the second copy; the first copy carries on alone.
    v.kill();
    copy2.kill();
    wait_until(Duration::from_secs(5), "the original to end", || {
        (!alive(v.pid)).then_some(())
    });
    let after = copy.check();
    assert_eq!(
        num(&after, "pid"),
        u64::try_from(v.orig_pid).unwrap(),
        "getpid() inside"
    );
    assert_eq!(field(&after, "sum"), field(&before, "sum"));
    let tick = copy.last_tick();
    copy.wait_tick_beyond(tick + 3);
}

#[test]
fn image_inspect() {
    let Some(ctx) = setup("inspect") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    let pid = v.pid;
    let exe = proc_link(pid, "exe");
    let img = image_path(&ctx, "inspect");
    v.dump(&ctx, &img, &[]);

    let text = ctx.ferry(&["image".as_ref(), "inspect".as_ref(), img.as_os_str()]);
    text.assert_ok();
    let t = &text.stdout;
    for want in [
        pid.to_string(),
        exe.display().to_string(),
        "[heap]".to_owned(),
        "[stack]".to_owned(),
        v.state.join("log").display().to_string(),
        v.state.join("data").display().to_string(),
    ] {
        assert!(t.contains(&want), "inspect output lacks {want:?}:\n{t}");
    }
    let lower = t.to_lowercase();
    assert!(
        lower.contains("manifest") && (lower.contains("sha") || lower.contains("digest")),
        "inspect should list the sections with their digests:\n{t}"
    );

    // A reader that is gone before the output comes (`| head`, here `| true`): ferry ends
    // quietly with success, as Unix tools do, instead of panicking on the broken pipe.
    let err = ctx.path("inspect-epipe.err");
    let piped = std::process::Command::new("bash")
        .args([
            "-c",
            r#""$0" image inspect "$1" 2>"$2" | true; exit "${PIPESTATUS[0]}""#,
        ])
        .arg(ferry_tests::ferry_bin())
        .arg(&img)
        .arg(&err)
        .status()
        .expect("run bash");
    let err = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        piped.success() && err.is_empty(),
        "`ferry image inspect | true` ended with {piped}: {err}"
    );

    let json = ctx.ferry(&[
        "image".as_ref(),
        "inspect".as_ref(),
        img.as_os_str(),
        "--json".as_ref(),
    ]);
    json.assert_ok();
    let value: serde_json::Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON ({e}):\n{}", json.stdout));
    assert!(
        has_key_value(&value, "pid", i64::from(pid)),
        "inspect --json has no \"pid\": {pid}:\n{}",
        json.stdout
    );
    assert!(
        json.stdout.contains(&exe.display().to_string()),
        "inspect --json lacks the executable"
    );
    // Inspecting must not need or start a process.
    assert!(!alive(pid));
    let _ = File::open(&img).expect("the image is still there");
}

fn has_key_value(v: &serde_json::Value, key: &str, want: i64) -> bool {
    match v {
        serde_json::Value::Object(map) => map.iter().any(|(k, val)| {
            (k == key && val.as_i64() == Some(want)) || has_key_value(val, key, want)
        }),
        serde_json::Value::Array(items) => items.iter().any(|i| has_key_value(i, key, want)),
        _ => false,
    }
}

/// A restore whose PID is still held by a zombie (the dumped process, which its parent, the
/// test, has not reaped yet) says so while it waits, and takes the PID once it is reaped.
#[test]
fn restore_says_it_waits_for_a_zombie_holding_the_pid() {
    let Some(ctx) = setup("zombie-pid") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    let before = v.check();
    let img = image_path(&ctx, "zombie");
    let pid = v.pid;
    let out = ctx.ferry(&[
        "dump".as_ref(),
        pid.to_string().as_ref(),
        "-o".as_ref(),
        img.as_os_str(),
    ]);
    out.assert_ok();
    wait_until(
        Duration::from_secs(5),
        "the dumped victim to be a zombie",
        || (ferry_tests::proc_state(pid) == Some('Z')).then_some(()),
    );
    // Reap it only once the restore has said it waits (its stderr goes to a file in the
    // test's directory).
    let dir = ctx.dir.path().to_path_buf();
    let reaper = std::thread::spawn(move || {
        let said = |dir: &std::path::Path| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    e.file_name().to_string_lossy().ends_with(".err")
                        && std::fs::read_to_string(e.path())
                            .is_ok_and(|t| t.contains("still held by an exited process"))
                })
        };
        let start = std::time::Instant::now();
        while !said(&dir) && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        ferry_tests::reap(pid, Duration::from_secs(5))
    });
    let out = v.restore(&ctx, &img, &[]);
    let reaped = reaper.join().expect("the reaper thread");
    assert!(
        matches!(
            reaped,
            nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
        ),
        "{reaped:?}"
    );
    assert!(
        out.stderr
            .contains(&format!("pid {pid} is still held by an exited process"))
            && out.stderr.contains("waiting"),
        "the restore should say it waits for the zombie: {}",
        out.stderr
    );
    assert_eq!(v.pid, pid, "the PID, once free, is the process's again");
    let after = v.check();
    assert_eq!(field(&after, "sum"), field(&before, "sum"));
}
