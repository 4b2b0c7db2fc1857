//! Process state beyond memory: vector registers, credentials, every kind of mapping, signal
//! state, and a terminal.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ferry_tests::{
    Spawn, Victim, assert_same_maps, field, image_path, normalized_maps, proc_link,
    proc_stat_field, setup, skip, status_field, wait_until,
};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::Signal;

fn cpu_has(flag: &str) -> bool {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == flag))
}

fn utime(pid: i32) -> u64 {
    proc_stat_field(pid, 14)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn vector_registers_survive() {
    let Some(ctx) = setup("xstate") else {
        return;
    };
    if !cpu_has("avx2") {
        skip("the CPU has no AVX2");
        return;
    }
    let mut v = Victim::c(&ctx, "xstate", &[]);
    // Let the register loop run, then checkpoint it in the middle.
    let t0 = utime(v.pid);
    wait_until(Duration::from_secs(10), "the vector loop to run", || {
        (utime(v.pid) > t0 + 5).then_some(())
    });
    let img = image_path(&ctx, "xstate");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.assert_running_free();
    let t1 = utime(v.pid);
    wait_until(
        Duration::from_secs(10),
        "the restored vector loop to run",
        || (utime(v.pid) > t1 + 5).then_some(()),
    );
    let ok = v.check();
    let want_avx512 = if cpu_has("avx512f") { "1" } else { "0" };
    assert_eq!(field(&ok, "avx512"), Some(want_avx512), "{ok}");
    assert_eq!(field(&ok, "pid"), Some(v.orig_pid.to_string().as_str()));
    // Once more, with registers loaded after the restore.
    v.check();
}

#[test]
fn unprivileged_credentials_survive() {
    let Some(ctx) = setup("uid") else {
        return;
    };
    let mut v = Victim::c(&ctx, "uid", &[]);
    let creds = |pid| {
        ["Uid", "Gid", "Groups", "CapEff", "CapPrm", "NoNewPrivs"]
            .map(|k| status_field(pid, k).unwrap_or_default())
    };
    let before = creds(v.pid);
    assert_eq!(before[0], "65534\t65534\t65534\t65534");
    let img = image_path(&ctx, "uid");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    assert_eq!(
        creds(v.pid),
        before,
        "credentials changed across the restore"
    );
    let ok = v.check();
    assert_eq!(field(&ok, "uid"), Some("65534"));
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 3);
    v.assert_ticks_continuous();
}

#[test]
fn every_kind_of_mapping() {
    let Some(ctx) = setup("mmap") else {
        return;
    };
    let mut v = Victim::c(&ctx, "mmap", &[]);
    let first = v.check();
    assert_eq!(field(&first, "checks"), Some("2"));
    let maps = normalized_maps(v.pid);
    let img = image_path(&ctx, "mmap");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    assert_same_maps(&maps, &normalized_maps(v.pid));
    let ok = v.check();
    assert_eq!(field(&ok, "checks"), Some("3"), "{ok}");
    // The private mapping's file is untouched; the shared one has what the process wrote.
    let mapped = fs::read(v.state.join("mapped")).unwrap();
    assert_eq!(
        mapped[4096 + 7],
        ((4096u64 + 7) * 7 + (4096 + 7) / 251) as u8
    );
    let shared = fs::read(v.state.join("shared")).unwrap();
    assert_eq!(shared[2 * 4096], b'S');
    assert_eq!(
        shared[3 * 4096 + 1],
        3,
        "the restored process wrote through its shared mapping"
    );
    v.check();
    v.assert_no_bad();
}

/// Each VMA's range and smaps `VmFlags`.
fn vm_flags(pid: i32) -> Vec<(String, String)> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut out = Vec::new();
    let mut range = String::new();
    for line in smaps.lines() {
        let first = line.split(' ').next().unwrap_or_default();
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            out.push((range.clone(), flags.trim().to_string()));
        } else if first.contains('-') && !first.contains(':') {
            range = first.to_string();
        }
    }
    out
}

/// mlock/mlock2(MLOCK_ONFAULT), madvise flags (DONTFORK, DONTDUMP, WIPEONFORK, HUGEPAGE,
/// NOHUGEPAGE, MERGEABLE, SEQUENTIAL, RANDOM) on sub-ranges of one mapping, mlockall and the
/// THP/KSM prctls: every VMA comes back with its bounds and flags, and the victim finds them
/// by itself (smaps, VmLck of a fresh mapping, prctl, what a forked child sees).
fn vma_flags_survive(mode: &str) {
    let name = format!("vmaflags-{mode}");
    let Some(ctx) = setup(&name) else {
        return;
    };
    let mut v = Victim::c(&ctx, "vmaflags", &[mode]);
    let first = v.check();
    assert_eq!(field(&first, "checks"), Some("2"), "{first}");
    let before = vm_flags(v.pid);
    let status = |pid| ["VmLck", "THP_enabled"].map(|k| status_field(pid, k).unwrap_or_default());
    let status_before = status(v.pid);
    let img = image_path(&ctx, &name);
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    assert_eq!(vm_flags(v.pid), before, "VMAs or their VmFlags changed");
    assert_eq!(status(v.pid), status_before);
    let ok = v.check();
    assert_eq!(field(&ok, "checks"), Some("3"), "{ok}");
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 3);
    v.assert_no_bad();
}

#[test]
fn vma_flags_survive_mlockall_future() {
    vma_flags_survive("future");
}

#[test]
fn vma_flags_survive_mlockall_current_onfault() {
    vma_flags_survive("all");
}

/// The restore checker takes the VMA flags from `smaps` read before the pages were written
/// (its page-table walk then costs nothing) only when nothing the restore ran in the process
/// since could have changed them: a restore step that sets a flag late (test fault
/// `restore-late-madvise`: `MADV_DONTDUMP` on a private area after the memory steps) is still
/// named, and the restore leaves nothing behind. Without it, the check uses that read.
#[test]
fn a_vma_flag_set_late_in_the_restore_is_named() {
    let Some(ctx) = setup("vmaflag_late") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    v.check();
    let img = image_path(&ctx, "vmaflag_late");
    v.dump(&ctx, &img, &[]);
    let log = "warn,ferry_agent::verify=debug,ferry_agent::dump=debug";
    let restore = |fault: &str| {
        let before = ferry_tests::my_children();
        let out = ctx.ferry_with_env(
            &["restore", img.to_str().unwrap()],
            Stdio::null(),
            &[("FERRY_LOG", log), ("FERRY_FAULT", fault)],
        );
        let new: Vec<i32> = ferry_tests::my_children()
            .difference(&before)
            .copied()
            .collect();
        (out, new)
    };
    let (out, left) = restore("restore-late-madvise");
    for &p in &left {
        ferry_tests::kill_and_reap(p);
    }
    out.assert_failed();
    assert!(
        out.stderr.contains("differs from its image") && out.stderr.contains("].flags"),
        "the checker should name the flags: {}",
        out.stderr
    );
    assert!(left.is_empty(), "a refused restore left {left:?}");

    let out = v.restore_with_env(&ctx, &img, &[], Stdio::null(), &[("FERRY_LOG", log)]);
    assert!(
        out.stderr.contains("smaps read ahead for the check") && !out.stderr.contains("read again"),
        "the check should use the smaps read before the pages: {}",
        out.stderr
    );
    v.check();
}

#[test]
fn signal_state_survives() {
    let Some(ctx) = setup("signals") else {
        return;
    };
    let mut v = Victim::c(&ctx, "signals", &[]);
    let sig_lines = |pid| {
        ["SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"]
            .map(|k| status_field(pid, k).unwrap_or_default())
    };
    let before = sig_lines(v.pid);
    assert_ne!(
        before[0], "0000000000000000",
        "the victim has thread-pending signals"
    );
    assert_ne!(
        before[1], "0000000000000000",
        "the victim has process-pending signals"
    );
    let tick = v.wait_tick_beyond(2);
    let img = image_path(&ctx, "signals");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    assert_eq!(sig_lines(v.pid), before, "signal state in /proc/PID/status");
    v.wait_tick_beyond(tick + 2);
    let first = v.check();
    assert!(
        first.starts_with("ok pending-delivered"),
        "pending signals were not delivered as they should: {first}"
    );
    v.signal(Signal::SIGUSR2);
    wait_until(Duration::from_secs(5), "SIGUSR2 handled", || {
        (status_field(v.pid, "SigPnd").as_deref() == Some("0000000000000000")).then_some(())
    });
    let second = v.check();
    assert_eq!(field(&second, "usr2"), Some("1"), "{second}");
    v.assert_no_bad();
}

/// Reads from the pty master until `needle` shows up.
fn read_until(master: &mut File, needle: &str) -> String {
    let mut seen = String::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        match master.read(&mut buf) {
            Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the terminal never showed {needle:?}; it showed {seen:?}"
        );
    }
    seen
}

#[test]
fn terminal_is_reopened_by_path() {
    let Some(ctx) = setup("tty") else {
        return;
    };
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let master_fd: OwnedFd = pty.master;
    // openpty does not set close-on-exec: the victim must not inherit the master.
    for fd in [master_fd.as_fd(), pty.slave.as_fd()] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    }
    fcntl(master_fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let mut master = File::from(master_fd);
    let slave = pty.slave;
    let stdio = || Stdio::from(slave.try_clone().unwrap());
    let mut v = Victim::c_with(
        &ctx,
        "counter",
        Spawn {
            stdin: Some(stdio()),
            stdout: Some(stdio()),
            stderr: Some(stdio()),
            ..Spawn::default()
        },
    );
    let tty = proc_link(v.pid, "fd/0");
    assert!(tty.starts_with("/dev/pts/"), "{}", tty.display());
    v.check();
    read_until(&mut master, &format!("tty-ok pid={}", v.pid));
    let img = image_path(&ctx, "tty");
    v.dump(&ctx, &img, &[]);
    let out = v.restore(&ctx, &img, &[]);
    for fd in 0..3 {
        assert_eq!(
            proc_link(v.pid, &format!("fd/{fd}")),
            tty,
            "fd {fd} after restore"
        );
    }
    assert!(
        !out.stderr.contains("/dev/null"),
        "the terminal exists, so it is reopened, not replaced: {}",
        out.stderr
    );
    v.check();
    read_until(&mut master, &format!("tty-ok pid={}", v.pid));
    v.assert_no_bad();
    drop(v);
    drop(slave);
}
