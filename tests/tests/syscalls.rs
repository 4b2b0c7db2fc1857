//! A process blocked in a system call at the checkpoint carries on after the restore as the
//! kernel would have it: the call restarts (or fails with EINTR where the kernel would), no
//! sleep is lost, and the process keeps working.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use ferry_tests::{
    Spawn, TestCtx, Victim, field, image_path, proc_link, setup, wait_in_syscall, write_line,
};
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;

// x86_64 system call numbers.
const SYS_READ: i64 = 0;
const SYS_SELECT: i64 = 23;
const SYS_NANOSLEEP: i64 = 35;
const SYS_WAIT4: i64 = 61;
const SYS_FUTEX: i64 = 202;
const SYS_CLOCK_NANOSLEEP: i64 = 230;
const SYS_EPOLL_WAIT: i64 = 232;
const SYS_PSELECT6: i64 = 270;
const SYS_EPOLL_PWAIT: i64 = 281;
const SYS_EPOLL_PWAIT2: i64 = 441;

/// Dumps the victim (which must be blocked in one of `nrs`), restores it with `restore_args`
/// and `stdin` for `ferry restore`, and checks it has its PID back.
fn dump_blocked_and_restore(
    ctx: &TestCtx,
    v: &mut Victim,
    nrs: &[i64],
    restore_args: &[&str],
    stdin: Stdio,
) {
    wait_in_syscall(v.pid, nrs);
    let img = image_path(ctx, "blocked");
    let pid = v.pid;
    v.dump(ctx, &img, &[]);
    v.restore_with_stdin(ctx, &img, restore_args, stdin);
    assert_eq!(v.pid, pid);
    v.assert_running_free();
}

/// A new pipe for the restored process's stdin: (read end for `ferry restore`, write end).
fn new_stdin() -> (Stdio, File, u64) {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
    let w = File::from(w);
    let ino = w.metadata().expect("fstat pipe").ino();
    (Stdio::from(r), w, ino)
}

fn assert_stdin_is_pipe(v: &Victim, ino: u64) {
    let link = proc_link(v.pid, "fd/0");
    assert_eq!(
        link.to_str(),
        Some(format!("pipe:[{ino}]").as_str()),
        "--stdio inherit should give the process the restoring command's stdin"
    );
}

#[test]
fn nanosleep() {
    let Some(ctx) = setup("nanosleep") else {
        return;
    };
    let mut v = Victim::c(&ctx, "nanosleep", &[]);
    v.wait_tick_beyond(1);
    dump_blocked_and_restore(
        &ctx,
        &mut v,
        &[SYS_NANOSLEEP, SYS_CLOCK_NANOSLEEP],
        &[],
        Stdio::null(),
    );
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 3);
    let ok = v.check();
    assert_eq!(field(&ok, "pid"), Some(v.orig_pid.to_string().as_str()));
    wait_in_syscall(v.pid, &[SYS_NANOSLEEP, SYS_CLOCK_NANOSLEEP]);
    v.assert_ticks_continuous();
    v.assert_no_bad();
}

#[test]
fn read_stdin_pipe_with_stdio_inherit() {
    let Some(ctx) = setup("read") else {
        return;
    };
    let mut v = Victim::c_with(
        &ctx,
        "read",
        Spawn {
            stdin_pipe: true,
            ..Spawn::default()
        },
    );
    write_line(v.stdin.as_mut().unwrap(), "before").unwrap();
    v.wait_status("got before", |l| l.starts_with("got before"));
    let (stdin, mut w, ino) = new_stdin();
    dump_blocked_and_restore(&ctx, &mut v, &[SYS_READ], &["--stdio", "inherit"], stdin);
    v.stdin = None;
    assert_stdin_is_pipe(&v, ino);
    // The handler runs and read() restarts (SA_RESTART).
    v.signal(Signal::SIGUSR1);
    v.wait_nth("usr1", 0);
    wait_in_syscall(v.pid, &[SYS_READ]);
    write_line(&mut w, "after").unwrap();
    let got = v.wait_status("got after", |l| l.starts_with("got after"));
    assert_eq!(field(&got, "pid"), Some(v.orig_pid.to_string().as_str()));
    drop(w);
    v.wait_status("eof", |l| l.starts_with("eof"));
    v.assert_no_bad();
}

#[test]
fn wait4_for_a_child_that_is_gone() {
    let Some(ctx) = setup("wait4") else {
        return;
    };
    let mut v = Victim::c(&ctx, "wait4", &[]);
    let child = v.wait_status("child pid", |l| l.starts_with("child pid="));
    let child: i32 = field(&child, "pid").unwrap().parse().unwrap();
    v.track(child);
    // A handled signal restarts wait4 before the checkpoint too.
    wait_in_syscall(v.pid, &[SYS_WAIT4]);
    v.signal(Signal::SIGUSR1);
    v.wait_nth("usr1", 0);
    dump_blocked_and_restore(&ctx, &mut v, &[SYS_WAIT4], &[], Stdio::null());
    let res = v.wait_status("the result of wait4", |l| l.starts_with("wait4 "));
    assert_eq!(
        res, "wait4 errno=ECHILD",
        "restored alone, the process has no child: the kernel's answer is ECHILD"
    );
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 3);
    v.check();
    v.assert_no_bad();
}

#[test]
fn futex_wait_without_timeout() {
    let Some(ctx) = setup("futex") else {
        return;
    };
    let mut v = Victim::c(&ctx, "futex", &["wait"]);
    wait_in_syscall(v.pid, &[SYS_FUTEX]);
    v.signal(Signal::SIGUSR1);
    v.wait_nth("woken", 0);
    dump_blocked_and_restore(&ctx, &mut v, &[SYS_FUTEX], &[], Stdio::null());
    // Still waiting: the call was restarted, not failed.
    wait_in_syscall(v.pid, &[SYS_FUTEX]);
    v.signal(Signal::SIGUSR1);
    let woken = v.wait_nth("woken", 1);
    assert_eq!(field(&woken, "n"), Some("2"));
    assert_eq!(field(&woken, "pid"), Some(v.orig_pid.to_string().as_str()));
    wait_in_syscall(v.pid, &[SYS_FUTEX]);
    v.signal(Signal::SIGUSR1);
    v.wait_nth("woken", 2);
    v.assert_no_bad();
}

#[test]
fn futex_wait_with_timeout() {
    let Some(ctx) = setup("futex_timed") else {
        return;
    };
    let mut v = Victim::c(&ctx, "futex", &["timed"]);
    v.wait_tick_beyond(1);
    dump_blocked_and_restore(&ctx, &mut v, &[SYS_FUTEX], &[], Stdio::null());
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 3);
    wait_in_syscall(v.pid, &[SYS_FUTEX]);
    v.signal(Signal::SIGUSR1);
    v.wait_nth("woken", 0);
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 2);
    v.assert_ticks_continuous();
    v.assert_no_bad();
}

/// epoll and select victims: a line before, a dump while blocked, a restore with a new stdin.
fn poll_victim(name: &str, nrs: &[i64]) {
    let Some(ctx) = setup(name) else {
        return;
    };
    let mut v = Victim::c_with(
        &ctx,
        name,
        Spawn {
            stdin_pipe: true,
            ..Spawn::default()
        },
    );
    write_line(v.stdin.as_mut().unwrap(), "one").unwrap();
    v.wait_status("got one", |l| l.starts_with("got one"));
    v.wait_tick_beyond(1);
    let (stdin, mut w, ino) = new_stdin();
    dump_blocked_and_restore(&ctx, &mut v, nrs, &["--stdio", "inherit"], stdin);
    v.stdin = None;
    assert_stdin_is_pipe(&v, ino);
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 2);
    write_line(&mut w, "two").unwrap();
    let got = v.wait_status("got two", |l| l.starts_with("got two"));
    assert_eq!(field(&got, "pid"), Some(v.orig_pid.to_string().as_str()));
    v.check();
    drop(w);
    v.wait_status("eof", |l| l.starts_with("eof"));
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 1);
    v.assert_ticks_continuous();
    v.assert_no_bad();
}

#[test]
fn epoll_wait_on_stdin() {
    poll_victim(
        "epoll",
        &[SYS_EPOLL_WAIT, SYS_EPOLL_PWAIT, SYS_EPOLL_PWAIT2],
    );
}

#[test]
fn select_on_stdin() {
    poll_victim("select", &[SYS_SELECT, SYS_PSELECT6]);
}
