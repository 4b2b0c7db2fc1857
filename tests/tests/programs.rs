//! Real programs nobody wrote for Ferry: python3 with a large heap, coreutils `sleep`, and a
//! `bash` loop of builtins.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::{
    Spawn, Victim, field, image_path, proc_bytes, proc_link, setup, skip, wait_in_syscall,
    workload_file,
};

fn python3() -> Option<PathBuf> {
    let usr = Path::new("/usr/bin/python3");
    if usr.is_file() {
        return Some(usr.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("python3"))
            .find(|p| p.is_file())
    })
}

#[test]
fn python_with_a_large_heap() {
    let Some(ctx) = setup("python") else {
        return;
    };
    let Some(py) = python3() else {
        skip("python3 is not installed");
        return;
    };
    let state = Victim::new_state_dir(&ctx, "python");
    let mut cmd = Command::new(py);
    cmd.arg(workload_file("bigheap.py")).arg(&state);
    let mut v = Victim::spawn(cmd, state, Spawn::default());
    let ready = v.wait_ready();
    let sha = field(&ready, "sha")
        .expect("ready line has the digest")
        .to_owned();
    let cmdline = proc_bytes(v.pid, "cmdline");
    let tick = v.wait_tick_beyond(2);
    let img = image_path(&ctx, "python");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    assert_eq!(v.pid, v.orig_pid);
    assert_eq!(proc_bytes(v.pid, "cmdline"), cmdline);
    v.wait_tick_beyond(tick + 3);
    let ok = v.check();
    assert_eq!(
        field(&ok, "sha"),
        Some(sha.as_str()),
        "the heap's digest changed"
    );
    v.assert_ticks_continuous();
}

#[test]
fn coreutils_sleep() {
    let Some(ctx) = setup("sleep") else {
        return;
    };
    let state = Victim::new_state_dir(&ctx, "sleep");
    let mut cmd = Command::new("sleep");
    cmd.arg("1000");
    let mut v = Victim::spawn(cmd, state, Spawn::default());
    const CLOCK_NANOSLEEP: i64 = 230;
    const NANOSLEEP: i64 = 35;
    wait_in_syscall(v.pid, &[CLOCK_NANOSLEEP, NANOSLEEP]);
    let cmdline = proc_bytes(v.pid, "cmdline");
    let exe = proc_link(v.pid, "exe");
    let img = image_path(&ctx, "sleep");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    assert_eq!(v.pid, v.orig_pid);
    assert_eq!(proc_bytes(v.pid, "cmdline"), cmdline);
    assert_eq!(proc_link(v.pid, "exe"), exe);
    wait_in_syscall(v.pid, &[CLOCK_NANOSLEEP, NANOSLEEP]);
    // Still sleeping a while later: the sleep was neither lost nor turned into an exit.
    std::thread::sleep(Duration::from_millis(1500));
    v.assert_running_free();
    wait_in_syscall(v.pid, &[CLOCK_NANOSLEEP, NANOSLEEP]);
}

fn read_count(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn bash_builtin_loop() {
    let Some(ctx) = setup("bash") else {
        return;
    };
    let state = Victim::new_state_dir(&ctx, "bash");
    let count = state.join("count");
    let mut cmd = Command::new("bash");
    // Builtins only: no child process ever.
    cmd.arg("-c")
        .arg("i=0; while :; do i=$((i+1)); if ((i % 200 == 0)); then echo $i > \"$1\"; fi; done")
        .arg("bash")
        .arg(&count);
    let mut v = Victim::spawn(cmd, state, Spawn::default());
    let start = Instant::now();
    let mut seen = 0;
    while seen < 4000 {
        seen = seen.max(read_count(&count).unwrap_or(0));
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "bash counts too slowly: {seen}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let cmdline = proc_bytes(v.pid, "cmdline");
    let img = image_path(&ctx, "bash");
    v.dump(&ctx, &img, &[]);
    // The last complete value written before the end (the file may be caught truncated).
    let at_dump = read_count(&count).unwrap_or(0).max(seen);
    v.restore(&ctx, &img, &[]);
    assert_eq!(v.pid, v.orig_pid);
    assert_eq!(proc_bytes(v.pid, "cmdline"), cmdline);
    let start = Instant::now();
    loop {
        if let Some(n) = read_count(&count) {
            assert!(n >= at_dump, "bash started over: {n} after {at_dump}");
            if n >= at_dump + 4000 {
                break;
            }
        }
        v.assert_running_free();
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "bash stopped counting after the restore"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
