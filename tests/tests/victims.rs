//! The victims themselves, without Ferry: each gets ready, answers its checks and reports no
//! problem. When a dump/restore test fails, these tell whether the victim or the engine is at
//! fault.

use ferry_tests::{Spawn, Victim, field, setup, write_line};
use nix::sys::signal::Signal;

#[test]
fn counting_victims_answer_checks() {
    let Some(ctx) = setup("victims") else {
        return;
    };
    for (name, args) in [
        ("counter", &[][..]),
        ("nanosleep", &[][..]),
        ("uid", &[][..]),
        ("mmap", &[][..]),
        ("refuse", &["eventfd"][..]),
        ("refuse", &["socket"][..]),
        ("refuse", &["thread"][..]),
        ("refuse", &["seccomp-filter"][..]),
        ("refuse", &["seccomp-strict"][..]),
    ] {
        let v = Victim::c(&ctx, name, args);
        let tick = v.wait_tick_beyond(0);
        let first = v.check();
        assert_eq!(
            field(&first, "pid"),
            Some(v.pid.to_string().as_str()),
            "{name}"
        );
        v.wait_tick_beyond(tick + 2);
        v.check();
        v.assert_ticks_continuous();
        v.assert_no_bad();
    }
}

#[test]
fn signal_and_register_victims_answer_checks() {
    let Some(ctx) = setup("victims_sig") else {
        return;
    };
    let v = Victim::c(&ctx, "signals", &[]);
    assert!(v.check().starts_with("ok pending-delivered"));
    v.signal(Signal::SIGUSR2);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(field(&v.check(), "usr2"), Some("1"));
    v.assert_no_bad();

    if std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" avx2")) {
        let x = Victim::c(&ctx, "xstate", &[]);
        std::thread::sleep(std::time::Duration::from_millis(100));
        x.check();
        x.check();
    }
}

#[test]
fn blocked_victims_work() {
    let Some(ctx) = setup("victims_blocked") else {
        return;
    };
    for name in ["read", "epoll", "select"] {
        let mut v = Victim::c_with(
            &ctx,
            name,
            Spawn {
                stdin_pipe: true,
                ..Spawn::default()
            },
        );
        write_line(v.stdin.as_mut().unwrap(), "hello").unwrap();
        v.wait_status("got hello", |l| l.starts_with("got hello"));
        v.stdin = None;
        v.wait_status("eof", |l| l.starts_with("eof"));
        v.assert_no_bad();
    }
    let v = Victim::c(&ctx, "futex", &["wait"]);
    v.signal(Signal::SIGUSR1);
    v.wait_nth("woken", 0);
    v.signal(Signal::SIGUSR1);
    v.wait_nth("woken", 1);
    v.assert_no_bad();
    let v = Victim::c(&ctx, "wait4", &[]);
    let child = v.wait_status("child", |l| l.starts_with("child pid="));
    let child: i32 = field(&child, "pid").unwrap().parse().unwrap();
    ferry_tests::kill_and_reap(child);
    let res = v.wait_status("wait4 result", |l| l.starts_with("wait4 "));
    assert!(res.starts_with("wait4 pid="), "{res}");
    v.check();
}

/// A descriptor the test runner inherited (here fd 10 on a file, opened by the shell that
/// started it, not close-on-exec) reaches no victim: victims get fds 0–2 and what the test
/// gives them. The test binary runs itself again under such a shell.
#[test]
fn victims_do_not_inherit_the_runners_descriptors() {
    const NAME: &str = "victims_do_not_inherit_the_runners_descriptors";
    if let Some(marker) = std::env::var_os("FERRY_TEST_STRAY_FD") {
        let marker = std::path::PathBuf::from(marker);
        let Some(ctx) = setup("stray-fd") else {
            return;
        };
        assert_eq!(
            std::fs::read_link("/proc/self/fd/10").ok().as_deref(),
            Some(marker.as_path()),
            "the runner should hold fd 10 on the marker"
        );
        let v = Victim::c(&ctx, "counter", &[]);
        let fds: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", v.pid))
            .expect("list the victim's fds")
            .filter_map(|e| {
                let e = e.ok()?;
                Some((e.file_name(), std::fs::read_link(e.path()).ok()?))
            })
            .collect();
        assert!(
            fds.iter().all(|(_, target)| target != &marker),
            "the victim inherited the runner's stray descriptor: {fds:?}"
        );
        return;
    }
    if !ferry_tests::require_root() {
        return;
    }
    let dir = ferry_tests::TempDir::new("stray-fd-outer").expect("temporary directory");
    let marker = dir.path().join("stray");
    std::fs::write(&marker, "stray").expect("write the marker");
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new("bash")
        .args(["-c", r#"exec 10<"$1"; shift; exec "$@""#, "bash"])
        .arg(&marker)
        .arg(&exe)
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env("FERRY_TEST_STRAY_FD", &marker)
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the inner run failed:\n{stdout}\n{stderr}"
    );
}
