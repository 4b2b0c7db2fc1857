//! Process and tree state (issue 9): timers aimed at one thread, epoll entries whose
//! descriptor number was reused, stopped processes, membarrier, a missing vDSO, file tables
//! shared between processes and pidfds — each restored exactly or refused at dump by name.

use ferry_tests::{VICTIM_TIMEOUT, Victim, field, image_path, proc_state, setup, wait_until};
use nix::sys::signal::Signal;

/// A POSIX timer with SIGEV_THREAD_ID keeps signalling the worker thread it was aimed at
/// (restored as process-directed before, its signals went to the main thread).
#[test]
fn posix_timer_aimed_at_one_thread_keeps_its_thread() {
    let Some(ctx) = setup("process-timer-thread") else {
        return;
    };
    let mut v = Victim::c(&ctx, "proc_timer_thread", &[]);
    let ok = v.check();
    let worker = field(&ok, "worker").map(str::to_owned);
    let img = image_path(&ctx, "timer-thread");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let ok = v.check();
    assert_eq!(field(&ok, "worker").map(str::to_owned), worker, "{ok}");
    v.assert_ticks_continuous();
}

/// An epoll instance with an entry whose number went to another file (which was added under
/// it too) and one whose number was closed, the files kept by dups: every entry wakes with
/// its own data. Before, the dump refused the closed number, and the restore added the
/// reused number twice (EEXIST, one entry lost, the other watching the wrong file).
#[test]
fn epoll_entries_under_reused_numbers_survive() {
    let Some(ctx) = setup("process-epoll-reused") else {
        return;
    };
    let mut v = Victim::c(&ctx, "proc_epoll_reused", &[]);
    v.check();
    let img = image_path(&ctx, "epoll-reused");
    v.dump(&ctx, &img, &[]);
    let out = v.restore(&ctx, &img, &[]);
    assert!(!out.stderr.contains("EEXIST"), "{}", out.stderr);
    v.check();
    v.assert_ticks_continuous();
}

/// An epoll entry whose file no descriptor of the process holds any more (only a child keeps
/// it open) cannot be added again: refused at dump, naming the instance and the number.
#[test]
fn epoll_entry_of_a_file_held_elsewhere_is_refused() {
    let Some(ctx) = setup("process-epoll-elsewhere") else {
        return;
    };
    let v = Victim::c(&ctx, "proc_epoll_reused", &["elsewhere"]);
    let line = v.wait_status("the pipe line", |l| l.starts_with("elsewhere "));
    let fd = field(&line, "fd").unwrap().to_owned();
    let img = image_path(&ctx, "epoll-elsewhere");
    let out = ctx.ferry(&["dump", &v.pid.to_string(), "-o", img.to_str().unwrap()]);
    out.assert_failed();
    assert!(
        out.stderr.contains(&format!(
            "epoll watches a file added as fd {fd} that no descriptor"
        )),
        "{}",
        out.stderr
    );
    v.check();
}

/// A process stopped by job control (SIGSTOP) when dumped comes back stopped (state T, not
/// counting), and goes on from where it was on SIGCONT. Before, it came back running.
#[test]
fn a_stopped_process_comes_back_stopped() {
    let Some(ctx) = setup("process-stopped") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    v.check();
    v.signal(Signal::SIGSTOP);
    wait_until(VICTIM_TIMEOUT, "the victim stopped", || {
        (proc_state(v.pid) == Some('T')).then_some(())
    });
    let img = image_path(&ctx, "stopped");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    assert_eq!(proc_state(v.pid), Some('T'), "the restored process runs");
    let tick = v.last_tick();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(v.last_tick(), tick, "a stopped process counted on");
    v.signal(Signal::SIGCONT);
    v.wait_tick_beyond(tick);
    v.check();
    v.assert_ticks_continuous();
}

/// A process that unmapped its [vdso] (and one that unmapped the whole block, [vvar] too)
/// comes back without it. Before, the dump refused "a process without a [vdso]".
#[test]
fn a_process_without_its_vdso_comes_back_without() {
    let Some(ctx) = setup("process-no-vdso") else {
        return;
    };
    for (i, args) in [&[][..], &["all"][..]].into_iter().enumerate() {
        let mut v = Victim::c(&ctx, "proc_no_vdso", args);
        let ok = v.check();
        let img = image_path(&ctx, &format!("no-vdso-{i}"));
        v.dump(&ctx, &img, &[]);
        v.restore(&ctx, &img, &[]);
        assert_eq!(v.check(), ok, "{args:?}");
        v.assert_ticks_continuous();
    }
}

/// membarrier(2) private expedited registrations (and RSEQ where the kernel has it) are made
/// again; an unregistered kind stays unregistered. Before, the restored process got EPERM.
#[test]
fn membarrier_registrations_survive() {
    let Some(ctx) = setup("process-membarrier") else {
        return;
    };
    let mut v = Victim::c(&ctx, "proc_membarrier", &[]);
    let ok = v.check();
    let img = image_path(&ctx, "membarrier");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    assert_eq!(v.check(), ok);
    v.assert_ticks_continuous();
}

/// Processes that share a descriptor table, a filesystem context or an address space without
/// being threads (clone without CLONE_THREAD) are refused, naming what they share, unless
/// both are dumped (`--tree`) and it is not an address space: the restore would make each its
/// own, silently. Before, the dump went through and the restored child's open() no longer
/// showed in its parent's table. (A tree with a shared table or context is restored: see
/// `trees.rs`.)
#[test]
fn processes_sharing_tables_are_refused_by_name() {
    let Some(ctx) = setup("process-clone-shared") else {
        return;
    };
    for (kind, what) in [
        ("files", "file descriptor table"),
        ("fs", "filesystem context"),
        ("vm", "address space"),
    ] {
        let v = Victim::c(&ctx, "proc_clone_files", &[kind]);
        v.check();
        let img = image_path(&ctx, &format!("clone-{kind}"));
        let pid = v.pid.to_string();
        let args: &[&str] = if kind == "vm" {
            &["dump", "--tree", &pid, "-o", img.to_str().unwrap()]
        } else {
            // Without its child.
            &["dump", &pid, "-o", img.to_str().unwrap()]
        };
        let out = ctx.ferry(args);
        out.assert_failed();
        assert!(
            out.stderr.contains(&format!("shares its {what}"))
                && out.stderr.contains("with its child"),
            "{kind}: {}",
            out.stderr
        );
        // Nothing was touched: the pair still shares.
        v.check();
        // Dumped alone, the child is refused the same way (naming its parent).
        let child =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let child = child
            .split_whitespace()
            .next()
            .expect("the child")
            .to_owned();
        let out = ctx.ferry(&["dump", &child, "-o", img.to_str().unwrap()]);
        out.assert_failed();
        assert!(
            out.stderr.contains(&format!("shares its {what}"))
                && out.stderr.contains(&format!("with its parent pid {pid}")),
            "{kind}: {}",
            out.stderr
        );
    }
}

/// A pidfd of a process outside the tree, or of one already reaped, cannot be made again:
/// refused, naming the descriptor and what it refers to.
#[test]
fn pidfds_that_cannot_be_made_again_are_refused() {
    let Some(ctx) = setup("process-pidfd-refused") else {
        return;
    };
    for (mode, want) in [
        ("outside", "which is outside the process tree"),
        (
            "reaped",
            "a pidfd of a process that has exited and been reaped",
        ),
    ] {
        let v = Victim::c(&ctx, "proc_pidfd", &[mode]);
        let line = v.wait_status("the extra pidfd", |l| l.starts_with(mode));
        let fd = field(&line, "fd").unwrap().to_owned();
        v.check();
        let img = image_path(&ctx, &format!("pidfd-{mode}"));
        let pid = v.pid.to_string();
        let out = ctx.ferry(&["dump", "--tree", &pid, "-o", img.to_str().unwrap()]);
        out.assert_failed();
        assert!(
            out.stderr.contains(&format!("fd {fd}: ")) && out.stderr.contains(want),
            "{mode}: {}",
            out.stderr
        );
        v.check();
    }
}

/// A process with a parent-death signal keeps it, armed on the parent it has after the
/// restore (the nearest child subreaper above `ferry restore`, here a helper standing in for a
/// service manager): the exit of `ferry restore` does not fire it, the death of that parent
/// does. Before, it came back with none (its parent during the restore was the restoring
/// command, whose exit would have fired it).
#[test]
fn parent_death_signal_is_armed_on_the_parent_after_the_restore() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let Some(ctx) = setup("process-pdeathsig") else {
        return;
    };
    let mut v = Victim::c(&ctx, "pdeathsig_restored", &[]);
    let ok = v.check();
    assert_eq!(field(&ok, "pdeathsig"), Some("12"), "{ok}");
    let img = image_path(&ctx, "pdeathsig");
    v.dump(&ctx, &img, &[]);
    // The helper: a child subreaper that runs `ferry restore`, says how it went, then lives
    // until its stdin closes.
    const HELPER: &str = "import ctypes, subprocess, sys\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        if libc.prctl(36, 1, 0, 0, 0):\n    sys.exit('PR_SET_CHILD_SUBREAPER failed')\n\
        r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)\n\
        print(r.returncode, r.stdout.strip(), '|', r.stderr.replace('\\n', ' '), flush=True)\n\
        sys.stdin.read()\n";
    let mut helper = Command::new("python3")
        .arg("-c")
        .arg(HELPER)
        .arg(ferry_tests::ferry_bin())
        .arg("restore")
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the subreaper helper");
    let helper_pid = i32::try_from(helper.id()).expect("pid");
    let mut line = String::new();
    BufReader::new(helper.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the helper's report");
    let pid: i32 = line
        .strip_prefix("0 restored pid ")
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("ferry restore failed: {line}"));
    v.restored_as(pid);
    let fired = || {
        ferry_tests::read_lines(&v.state.join("status"))
            .into_iter()
            .find(|l| l.starts_with("fired"))
    };
    // `ferry restore` has exited: that must not have fired it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(fired(), None, "fired when the restoring command exited");
    let ok = v.check();
    assert_eq!(field(&ok, "pdeathsig"), Some("12"), "{ok}");
    assert_eq!(
        field(&ok, "ppid"),
        Some(helper_pid.to_string().as_str()),
        "{ok}"
    );
    // Its parent dies: the kernel sends SIGUSR2, and the process comes to us.
    drop(helper.stdin.take());
    helper.wait().expect("the helper's exit");
    let line = wait_until(VICTIM_TIMEOUT, "the parent-death signal", fired);
    assert_eq!(line, "fired 12");
    let ok = v.check();
    assert_eq!(
        field(&ok, "ppid"),
        Some(std::process::id().to_string().as_str()),
        "{ok}"
    );
    v.assert_ticks_continuous();
}
