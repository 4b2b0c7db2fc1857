//! Pseudo-terminal pairs with both ends in the dumped tree: made anew at restore with their
//! settings, window size, packet mode, lock and the bytes queued both ways, the slave still the
//! controlling terminal of the session that had it. The victim (`pty_pair`) checks all of it
//! itself; the tests add what only the outside sees.

use std::os::unix::fs::MetadataExt;

use ferry_tests::{TestCtx, Victim, field, image_path, kill_and_reap, my_children, setup};

/// `tty_nr` of `/proc/PID/stat`.
fn tty_nr(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let f: Vec<&str> = s[s.rfind(')').expect("stat") + 1..]
        .split_whitespace()
        .collect();
    f[4].parse().expect("tty_nr")
}

/// The child's PID and the slave's path from an `ok` line, the child tracked for cleanup.
fn child_and_slave(v: &mut Victim, ok: &str) -> (i32, String) {
    let child: i32 = field(ok, "child")
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no child in {ok:?}"));
    v.track(child);
    let slave = field(ok, "slave")
        .unwrap_or_else(|| panic!("no slave in {ok:?}"))
        .to_owned();
    (child, slave)
}

/// `ferry restore IMAGE` of the victim's tree (the dump ended it: its child is reaped first,
/// so that its PID is free), which must come back with the same PIDs; all tracked.
fn restore_tree(ctx: &TestCtx, v: &mut Victim, child: i32, image: &std::path::Path) {
    kill_and_reap(child);
    let before = my_children();
    let out = ctx.ferry(&["restore", image.to_str().expect("path")]);
    for p in my_children().difference(&before) {
        v.track(*p);
    }
    out.assert_ok();
    assert_eq!(
        out.stdout.trim_end(),
        format!("restored pid {} and its descendants {child}", v.pid),
        "{}",
        out.stderr
    );
    let root = v.pid;
    v.restored_as(root);
    v.track(child);
}

#[test]
fn pty_pair_in_a_tree_survives_with_queues_settings_and_controlling_terminal() {
    let Some(ctx) = setup("pty-pair") else {
        return;
    };
    let mut v = Victim::c(&ctx, "pty_pair", &[]);
    let first = v.check();
    let (child, slave) = child_and_slave(&mut v, &first);
    let rdev = std::fs::metadata(&slave).expect("slave").rdev();
    assert_eq!(tty_nr(child), rdev, "the child's controlling terminal");

    // A dump that leaves the tree running reads the queues out and puts them back: the
    // victim finds every byte where it was.
    let img0 = image_path(&ctx, "pty-leave");
    v.dump(&ctx, &img0, &["--tree", "--leave-running"]);
    v.check();

    let img = image_path(&ctx, "pty");
    v.dump(&ctx, &img, &["--tree"]);
    restore_tree(&ctx, &mut v, child, &img);
    let inspect = ctx.ferry(&["image", "inspect", img.to_str().expect("path")]);
    inspect.assert_ok();
    assert!(
        inspect.stdout.contains("pseudo-terminal master of")
            && inspect.stdout.contains("packet mode")
            && inspect.stdout.contains("locked"),
        "{}",
        inspect.stdout
    );
    // Queued bytes both ways, settings, window size, packet mode, locks and the controlling
    // terminal: the victim checks them against what it set up.
    let ok = v.check();
    let (child2, slave2) = child_and_slave(&mut v, &ok);
    assert_eq!(child2, child, "the child keeps its PID");
    let rdev2 = std::fs::metadata(&slave2).expect("slave").rdev();
    assert_eq!(
        tty_nr(child),
        rdev2,
        "the child's controlling terminal after"
    );
    v.check();
    v.assert_ticks_continuous();
}

#[test]
fn pty_master_whose_slave_is_outside_the_dump_is_refused() {
    let Some(ctx) = setup("pty-outside") else {
        return;
    };
    let mut v = Victim::c(&ctx, "pty_pair", &[]);
    let ok = v.check();
    child_and_slave(&mut v, &ok);
    let img = image_path(&ctx, "pty-outside");
    let pid = v.pid.to_string();
    // Without --tree the child, which holds the slave, stays outside.
    let out = ctx.ferry(&["dump", pid.as_str(), "-o", img.to_str().expect("path")]);
    out.assert_failed();
    assert!(
        out.stderr.contains("pseudo-terminal master")
            && out.stderr.contains("outside the dump")
            && out.stderr.contains("not supported"),
        "{}",
        out.stderr
    );
    // Nothing was harmed.
    v.check();
}
