//! Kernel-object descriptors: eventfd, signalfd, timerfd, inotify and memfd (as descriptors
//! and as mappings). Each victim checks what it observes after the restore; the tests add what
//! only the outside sees (fdinfo, maps) and the timing of timers.

use std::fs;
use std::time::{Duration, Instant};

use ferry_tests::{Victim, alive, assert_same_maps, field, image_path, normalized_maps, setup};
use nix::sys::signal::Signal;

/// The fdinfo lines of `pid`'s descriptor `fd` that start with one of `keys`.
fn fdinfo(pid: i32, fd: &str, keys: &[&str]) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .unwrap_or_else(|e| panic!("fdinfo {fd} of {pid}: {e}"))
        .lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(k)))
        .map(str::to_owned)
        .collect()
}

/// The `fds ...` status line of a victim.
fn fds_line(v: &Victim) -> String {
    v.wait_status("fds line", |l| l.starts_with("fds "))
}

fn num(line: &str, key: &str) -> i64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key} in {line:?}"))
}

#[test]
fn eventfd_counters_survive() {
    let Some(ctx) = setup("fdkinds-eventfd") else {
        return;
    };
    let mut v = Victim::c(&ctx, "fdkinds_eventfd", &[]);
    let fds = fds_line(&v);
    let first = v.check();
    let keys = ["flags", "eventfd-count", "eventfd-semaphore"];
    let before: Vec<Vec<String>> = ["plain", "sem", "big"]
        .iter()
        .map(|k| fdinfo(v.pid, field(&fds, k).unwrap(), &keys))
        .collect();
    let img = image_path(&ctx, "eventfd");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let after: Vec<Vec<String>> = ["plain", "sem", "big"]
        .iter()
        .map(|k| fdinfo(v.pid, field(&fds, k).unwrap(), &keys))
        .collect();
    assert_eq!(before, after, "fdinfo of the eventfds changed");
    // The victim read every counter back and compared it with what it had written.
    let ok = v.check();
    assert_eq!(num(&ok, "checks"), num(&first, "checks") + 1, "{ok}");
    assert_eq!(num(&ok, "big"), (1i64 << 40) + 13);
    v.check();
    v.assert_ticks_continuous();
}

#[test]
fn signalfd_reads_signals_after_restore() {
    let Some(ctx) = setup("fdkinds-signalfd") else {
        return;
    };
    let mut v = Victim::c(&ctx, "fdkinds_signalfd", &[]);
    let fds = fds_line(&v);
    let img = image_path(&ctx, "signalfd");
    // SIGRTMIN+1 with its value is still pending (unread) at the dump.
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let sfd2 = field(&fds, "sfd2").unwrap();
    assert_eq!(
        fdinfo(v.pid, sfd2, &["sigmask"]),
        vec![format!(
            "sigmask:\t{:016x}",
            1u64 << (libc::SIGRTMIN() + 2 - 1)
        )]
    );
    v.signal(Signal::SIGUSR2);
    // nix's Signal has no real-time signals.
    // SAFETY: kill() takes plain integers and touches no memory of ours.
    let r = unsafe { libc::kill(v.pid, libc::SIGRTMIN() + 2) };
    assert_eq!(r, 0, "kill SIGRTMIN+2");
    let ok = v.check();
    assert_eq!(field(&ok, "usr2"), Some("1"), "{ok}");
    assert_eq!(field(&ok, "rt"), Some("1"), "the pending RT signal: {ok}");
    assert_eq!(field(&ok, "rtval"), Some("77"), "{ok}");
    assert_eq!(field(&ok, "rt2"), Some("1"), "the blocking signalfd: {ok}");
    assert_eq!(field(&ok, "mask"), field(&fds, "mask"), "{ok}");
    v.assert_ticks_continuous();
}

#[test]
fn timerfd_keeps_its_schedule() {
    let Some(ctx) = setup("fdkinds-timerfd") else {
        return;
    };
    let started = Instant::now();
    let mut v = Victim::c(&ctx, "fdkinds_timerfd", &[]);
    // The timers were armed between `started` and now (on a busy machine, long after
    // `started`): the lower bound counts from here, the upper from `started`.
    let ready = Instant::now();
    let fds = fds_line(&v);
    std::thread::sleep(Duration::from_millis(500));
    let keys = ["flags", "clockid", "settime flags", "it_interval"];
    let names = ["tick", "once", "wall", "expired", "burst"];
    let before: Vec<Vec<String>> = names
        .iter()
        .map(|k| fdinfo(v.pid, field(&fds, k).unwrap(), &keys))
        .collect();
    let t_check = Instant::now();
    let first = v.check();
    assert_eq!(field(&first, "expired"), Some("1"), "{first}");
    assert_eq!(field(&first, "interval_ms"), Some("100"), "{first}");
    let once_left = num(&first, "once_left_ms");
    let img = image_path(&ctx, "timerfd");
    v.dump(&ctx, &img, &[]);
    let t_dumped = Instant::now();
    // A long gap: a relative timer must not count it, the absolute one must.
    std::thread::sleep(Duration::from_millis(1500));
    let t_restore = Instant::now();
    v.restore(&ctx, &img, &[]);
    let t_restored = Instant::now();
    let after: Vec<Vec<String>> = names
        .iter()
        .map(|k| fdinfo(v.pid, field(&fds, k).unwrap(), &keys))
        .collect();
    assert_eq!(before, after, "timerfd clocks, flags or periods changed");

    let second = v.check();
    let t_second = Instant::now();
    assert_eq!(
        field(&second, "expired"),
        Some("1"),
        "the unread expiration: {second}"
    );
    // The 50 ms timer ran unread: its count covers the time before the dump and after the
    // restore, not the gap.
    let ms = |d: Duration| d.as_millis() as i64;
    let burst = num(&second, "burst");
    let lo = ms(t_check - ready) / 50 - 3;
    let hi = (ms(t_dumped - started) + ms(t_second - t_restore)) / 50 + 3;
    assert!(
        (lo..=hi).contains(&burst),
        "burst {burst} not in {lo}..={hi}: {second}"
    );

    // The periodic timer goes on at 10 per second.
    let p0 = num(&second, "periodic");
    std::thread::sleep(Duration::from_secs(1));
    let third = v.check();
    let rate = num(&third, "periodic") - p0;
    assert!(
        (8..=12).contains(&rate),
        "{rate} expirations of a 100 ms timer in 1 s"
    );

    // The relative one-shot fires when the time left at the dump has run out after the restore.
    v.wait_status("the one-shot timer", |l| l == "fired once");
    let fired = Instant::now();
    let after_restore = ms(fired - t_restored);
    let want_lo = once_left - ms(t_dumped - t_check) - ms(t_restored - t_restore) - 100;
    assert!(
        (want_lo..=once_left + 300).contains(&after_restore),
        "one-shot fired {after_restore} ms after the restore; {once_left} ms were left at the check"
    );
    // The absolute realtime timer fires at its wall-clock time.
    let wall = v.wait_status("the wall-clock timer", |l| l.starts_with("fired wall"));
    let late = num(&wall, "late_ms");
    assert!((0..300).contains(&late), "{wall}");
    assert!(alive(v.pid));
    v.assert_ticks_continuous();
}

/// A timerfd firing every millisecond keeps firing while the restore checker reads it back:
/// the checker accepts expirations that accrued meanwhile (it failed the restore on
/// `Timerfd.ticks: image N, restored N+k`), and the victim still reads them.
#[test]
fn a_fast_timerfd_keeps_firing_through_the_checker() {
    let Some(ctx) = setup("fdkinds-timerfd-fast") else {
        return;
    };
    let mut v = Victim::c(&ctx, "fdkinds_timerfd_fast", &[]);
    let fds = fds_line(&v);
    let fast = field(&fds, "fast").unwrap().to_owned();
    let first = v.check();
    // Unread expirations pile up before the dump.
    std::thread::sleep(Duration::from_millis(150));
    let img = image_path(&ctx, "timerfd-fast");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    assert_eq!(
        fdinfo(v.pid, &fast, &["it_interval"]),
        vec!["it_interval: (0, 1000000)".to_owned()]
    );
    let ok = v.check();
    assert_eq!(num(&ok, "checks"), num(&first, "checks") + 1, "{ok}");
    // Everything that accrued before the dump is still there (at least 100 ms of it).
    assert!(num(&ok, "first") >= 100, "{ok}");
    v.assert_ticks_continuous();
}

/// Starts `fdkinds_epoll MODE`, which checks its epoll state itself, and checks it again
/// after a dump and a restore (the restore checker on).
fn epoll_survives(mode: &str) {
    survives("fdkinds_epoll", mode);
}

/// Starts victim `name MODE`, which checks its state itself, and has it check again after a
/// dump and a restore (the restore checker on), and once more.
fn survives(name: &str, mode: &str) {
    let Some(ctx) = setup(&format!("{name}-{mode}")) else {
        return;
    };
    let mut v = Victim::c(&ctx, name, &[mode]);
    let first = v.check();
    let img = image_path(&ctx, mode);
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let ok = v.check();
    assert_eq!(num(&ok, "checks"), num(&first, "checks") + 1, "{ok}");
    // It set its state up again after each check: once more.
    v.check();
    v.assert_ticks_continuous();
}

/// An edge-triggered watch whose event the process took before the dump does not report it
/// again after the restore (re-adding a ready file used to), and one whose event it had not
/// taken still does.
#[test]
fn epoll_edge_taken_before_the_dump_does_not_come_again() {
    epoll_survives("edge");
}

/// A one-shot watch that fired comes back disarmed (events 0x40000000, as the kernel left it:
/// re-adding it armed it with EPOLLERR|EPOLLHUP), an armed one still reports once.
#[test]
fn epoll_fired_oneshot_watch_stays_disarmed() {
    epoll_survives("oneshot");
}

/// An epoll instance watching another (was refused as nested epoll).
#[test]
fn epoll_nested_instances_survive() {
    epoll_survives("nested");
}

/// A watch added as fd N whose number was closed (a dup keeping the file) and reused by another
/// file: still reports, still keyed by N (was refused).
#[test]
fn epoll_watch_of_a_closed_number_survives() {
    epoll_survives("closed");
}

/// Two edge-triggered watches with one data word, both with an event not taken: which one had
/// it cannot be told, so the dump refuses naming them — before taking any event: the process
/// carries on with both events still there.
#[test]
fn epoll_events_that_cannot_be_told_apart_are_refused() {
    let Some(ctx) = setup("fdkinds-epoll-ambiguous") else {
        return;
    };
    let v = Victim::c(&ctx, "fdkinds_epoll", &["ambiguous"]);
    let ep = field(&fds_line(&v), "ep").unwrap().to_owned();
    let img = image_path(&ctx, "ambiguous");
    let pid = v.pid.to_string();
    let out = ctx.ferry(&["dump", &pid, "-o", img.to_str().unwrap()]);
    out.assert_failed();
    assert!(out.stderr.contains(&format!("fd {ep}: ")), "{}", out.stderr);
    assert!(
        out.stderr.contains("share the data word 0x7"),
        "{}",
        out.stderr
    );
    assert!(!img.exists());
    v.assert_running_free();
    // Both events are still there (the check takes them, and makes them again).
    v.check();
    v.check();
}

/// A file made with `O_TMPFILE` (never named: `/proc` shows `DIR/#INO`) comes back unnamed in
/// the same directory, with its bytes, mode, offset and `O_TMPFILE` flags, still linkable (it
/// was reopened by its `#INO` name, which failed with ENOTDIR).
#[test]
fn o_tmpfile_file_survives() {
    let Some(ctx) = setup("fdkinds-paths-tmpfile") else {
        return;
    };
    let mut v = Victim::c(&ctx, "fdkinds_paths", &["tmpfile"]);
    let fds = fds_line(&v);
    let fd = field(&fds, "fd").unwrap().to_owned();
    let first = v.check();
    let img = image_path(&ctx, "tmpfile");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let link = fs::read_link(format!("/proc/{}/fd/{fd}", v.pid)).unwrap();
    let link = link.to_str().unwrap();
    // Unnamed, in the same directory.
    assert!(
        link.starts_with(&format!("{}/#", v.state.display())) && link.ends_with(" (deleted)"),
        "{link}"
    );
    let ok = v.check();
    assert_eq!(num(&ok, "checks"), num(&first, "checks") + 1, "{ok}");
    // Never linked, made without O_EXCL: it can be given a name (once).
    let named = v.state.join("named");
    nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        format!("/proc/{}/fd/{fd}", v.pid).as_str(),
        nix::fcntl::AT_FDCWD,
        &named,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    )
    .expect("linkat of the restored O_TMPFILE file");
    assert_eq!(fs::read(&named).unwrap().len(), 5000);
    fs::remove_file(&named).unwrap();
    v.check();
    v.assert_ticks_continuous();
}

/// A symbolic link itself held with `O_PATH | O_NOFOLLOW` comes back as the link, not what it
/// points to (was refused).
#[test]
fn symlink_opened_o_path_nofollow_survives() {
    survives("fdkinds_paths", "symlink");
}

/// Same watch descriptors, masks and inodes (file handles aside).
fn watch_lines(pid: i32, fd: &str) -> Vec<String> {
    fdinfo(pid, fd, &["flags", "inotify"])
        .into_iter()
        .map(|l| l.split(" fhandle").next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn inotify_watches_survive() {
    let Some(ctx) = setup("fdkinds-inotify") else {
        return;
    };
    let mut v = Victim::c(&ctx, "fdkinds_inotify", &[]);
    let fds = fds_line(&v);
    fs::write(v.state.join("watched/before"), b"x").unwrap();
    v.wait_status("the event before the dump", |l| {
        l.starts_with("event wd=1 mask=100 name=before")
    });
    let in_fd = field(&fds, "in").unwrap();
    let before = watch_lines(v.pid, in_fd);
    let img = image_path(&ctx, "inotify");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    assert_eq!(before, watch_lines(v.pid, in_fd));
    fs::write(v.state.join("watched/after"), b"x").unwrap();
    v.wait_status("the create event after the restore", |l| {
        l.starts_with("event wd=1 mask=100 name=after")
    });
    fs::remove_file(v.state.join("watched/before")).unwrap();
    v.wait_status("the delete event", |l| {
        l.starts_with("event wd=1 mask=200 name=before")
    });
    fs::write(v.state.join("watched-file"), b"more").unwrap();
    v.wait_status("the modify event", |l| l.starts_with("event wd=2 mask=2 "));
    v.wait_status("the close-write event", |l| {
        l.starts_with("event wd=2 mask=8 ")
    });
    let ok = v.check();
    assert!(num(&ok, "events") >= 5, "{ok}");
    v.assert_ticks_continuous();
}

/// Starts the inotify victim in `mode` and checks that a dump is refused naming `what`, with
/// the process left running untraced.
fn inotify_refused(mode: &str, what: &str) {
    let Some(ctx) = setup(&format!("fdkinds-inotify-{mode}")) else {
        return;
    };
    let v = Victim::c(&ctx, "fdkinds_inotify", &[mode]);
    let fd = field(&fds_line(&v), "fd").unwrap().to_owned();
    if mode == "unread" {
        fs::write(v.state.join("watched/new"), b"x").unwrap();
    }
    let img = image_path(&ctx, mode);
    let pid = v.pid.to_string();
    let out = ctx.ferry(&["dump", &pid, "-o", img.to_str().unwrap()]);
    out.assert_failed();
    assert!(out.stderr.contains(&format!("fd {fd}: ")), "{}", out.stderr);
    assert!(out.stderr.contains(what), "{}", out.stderr);
    assert!(out.stderr.contains("not supported yet"), "{}", out.stderr);
    assert!(!img.exists());
    v.assert_running_free();
    v.check();
}

#[test]
fn inotify_with_unread_events_is_refused() {
    inotify_refused("unread", "unread events");
}

#[test]
fn inotify_keeps_watch_descriptors_after_a_removed_watch() {
    let Some(ctx) = setup("fdkinds-inotify-gap") else {
        return;
    };
    let mut v = Victim::c(&ctx, "fdkinds_inotify", &["gap"]);
    let in_fd = field(&fds_line(&v), "in").unwrap().to_owned();
    let before = watch_lines(v.pid, &in_fd);
    assert_eq!(before.len(), 3, "{before:?}");
    let first = v.check();
    let img = image_path(&ctx, "inotify-gap");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    // Watches 1 and 3, and no placeholder left behind.
    assert_eq!(before, watch_lines(v.pid, &in_fd));
    fs::write(v.state.join("watched-file"), b"not watched any more").unwrap();
    fs::write(v.state.join("other/new"), b"x").unwrap();
    v.wait_status("the event of watch 3", |l| {
        l.starts_with("event wd=3 mask=100 name=new")
    });
    fs::write(v.state.join("watched/new"), b"x").unwrap();
    v.wait_status("the event of watch 1", |l| {
        l.starts_with("event wd=1 mask=100 name=new")
    });
    let ok = v.check();
    // Exactly those two events since the first check: no IN_IGNORED of a placeholder, nothing
    // from the removed watch.
    assert_eq!(num(&ok, "events"), num(&first, "events") + 2, "{ok}");
    v.assert_ticks_continuous();
}

#[test]
fn memfd_contents_seals_and_shared_mappings_survive() {
    let Some(ctx) = setup("fdkinds-memfd") else {
        return;
    };
    let mut v = Victim::c(&ctx, "fdkinds_memfd", &[]);
    let fds = fds_line(&v);
    let shared = field(&fds, "shared").unwrap().to_owned();
    let first = v.check();
    let maps = normalized_maps(v.pid);
    let names = |pid: i32| -> Vec<String> {
        let mut n: Vec<String> = fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap()
            .lines()
            .filter_map(|l| l.find("/memfd:").map(|i| l[i..].to_owned()))
            .collect();
        n.sort();
        n
    };
    let memfd_maps = names(v.pid);
    assert_eq!(memfd_maps.len(), 3, "{memfd_maps:?}");
    // Twice: the second dump takes memfds the restorer made.
    for round in 0..2 {
        let img = image_path(&ctx, &format!("memfd-{round}"));
        v.dump(&ctx, &img, &[]);
        v.restore(&ctx, &img, &[]);
        assert_same_maps(&maps, &normalized_maps(v.pid));
        assert_eq!(names(v.pid), memfd_maps);
        let link = fs::read_link(format!("/proc/{}/fd/{shared}", v.pid)).unwrap();
        assert_eq!(link.to_str(), Some("/memfd:ferry shared (deleted)"));
        assert_eq!(
            fdinfo(v.pid, &shared, &["pos"]),
            vec!["pos:\t1234".to_owned()]
        );
        let ok = v.check();
        assert_eq!(field(&ok, "seals"), field(&first, "seals"), "{ok}");
        assert_eq!(field(&ok, "sealed_seals"), Some("9"), "{ok}");
    }
    v.check();
    v.assert_ticks_continuous();
}

#[test]
fn sigio_owners_and_signals_survive() {
    let Some(ctx) = setup("fdkinds-sigio") else {
        return;
    };
    let mut v = Victim::c(&ctx, "fdkinds_sigio", &[]);
    let fds = fds_line(&v);
    let first = v.check();
    let img = image_path(&ctx, "sigio");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    // The victim read owners, signals and O_ASYNC back, and saw each signal arrive where it
    // should on I/O.
    let ok = v.check();
    assert_eq!(num(&ok, "checks"), num(&first, "checks") + 1, "{ok}");
    for k in ["pid", "tid", "pgrp"] {
        let flags = fdinfo(v.pid, field(&fds, k).unwrap(), &["flags"]);
        let f = flags
            .first()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("0");
        let f = i64::from_str_radix(f, 8).unwrap_or(0);
        assert_ne!(f & 0o20000, 0, "O_ASYNC gone from {k}: {flags:?}");
    }
    v.assert_ticks_continuous();
}

#[test]
fn sigio_owner_outside_the_process_is_refused() {
    let Some(ctx) = setup("fdkinds-sigio-outside") else {
        return;
    };
    let v = Victim::c(&ctx, "fdkinds_sigio", &["outside"]);
    let fd = field(
        &v.wait_status("outside line", |l| l.starts_with("fds outside=")),
        "outside",
    )
    .unwrap()
    .to_owned();
    let img = image_path(&ctx, "outside");
    let pid = v.pid.to_string();
    let out = ctx.ferry(&["dump", &pid, "-o", img.to_str().unwrap()]);
    out.assert_failed();
    assert!(out.stderr.contains(&format!("fd {fd}: ")), "{}", out.stderr);
    assert!(out.stderr.contains("F_SETOWN"), "{}", out.stderr);
    assert!(!img.exists());
    v.assert_running_free();
    v.check();
}
