//! Pseudo-terminal pairs with both ends in the dumped tree: made anew at restore with their
//! settings, window size, packet mode, lock and the bytes queued both ways, the slave still the
//! controlling terminal of the session that had it. The victim (`pty_pair`) checks all of it
//! itself; the tests add what only the outside sees.

use std::os::unix::fs::MetadataExt;

use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_tests::{
    Spawn, TestCtx, Victim, field, image_path, kill_and_reap, my_children, setup, wait_until,
    write_line,
};

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

/// A real program: Python's `pty.spawn` (the standard library's `script`) runs `cat` on a new
/// pseudo-terminal and relays its stdin (a pipe the test writes) to the master and the
/// master to its stdout (a file). After the tree is restored, a line written to the pipe comes
/// back twice (the terminal's echo and `cat`'s copy).
#[test]
fn python_pty_spawn_keeps_relaying_after_restore() {
    let Some(ctx) = setup("pty-spawn") else {
        return;
    };
    let state = Victim::new_state_dir(&ctx, "pty-spawn");
    let out_path = state.join("out");
    let out = std::fs::File::create(&out_path).expect("create out");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import pty; pty.spawn(['cat'])"]);
    let mut v = Victim::spawn(
        cmd,
        state,
        Spawn {
            stdin_pipe: true,
            stdout: Some(Stdio::from(out)),
            ..Spawn::default()
        },
    );
    let twice = |line: &str| {
        let want = format!("{line}\r\n{line}\r\n");
        wait_until(
            Duration::from_secs(10),
            &format!("{line} echoed and copied"),
            || {
                std::fs::read_to_string(&out_path)
                    .ok()
                    .filter(|t| t.contains(&want))
                    .map(drop)
            },
        );
    };
    let mut stdin = v.stdin.take().expect("stdin pipe");
    write_line(&mut stdin, "before").expect("write");
    twice("before");
    let child = wait_until(Duration::from_secs(10), "the child on the terminal", || {
        let kids =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", v.pid, v.pid)).ok()?;
        kids.split_whitespace().next()?.parse::<i32>().ok()
    });
    v.track(child);
    assert_ne!(tty_nr(child), 0, "cat has a controlling terminal");
    let img = image_path(&ctx, "pty-spawn");
    v.dump(&ctx, &img, &["--tree"]);
    restore_tree(&ctx, &mut v, child, &img);
    write_line(&mut stdin, "after").expect("write");
    twice("after");
    assert_ne!(tty_nr(child), 0, "cat keeps its controlling terminal");
}

/// A master shared after `fork` with a process left out of the dump (here: the dumped
/// process's parent, which keeps only the master) is refused: a pair made anew would leave
/// the parent on the old one.
#[test]
fn pty_master_shared_with_a_process_outside_is_refused() {
    let Some(ctx) = setup("pty-master-outside") else {
        return;
    };
    let state = Victim::new_state_dir(&ctx, "pty-master-outside");
    let child_file = state.join("child");
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(format!(
        "import os, pty, time\n\
         m, s = pty.openpty()\n\
         if os.fork() == 0:\n    open('{}', 'w').write(str(os.getpid()))\n\
         else:\n    os.close(s)\n\
         time.sleep(600)\n",
        child_file.display()
    ));
    let mut v = Victim::spawn(cmd, state, Spawn::default());
    let child: i32 = wait_until(Duration::from_secs(10), "the child's pid", || {
        std::fs::read_to_string(&child_file).ok()?.parse().ok()
    });
    v.track(child);
    let img = image_path(&ctx, "pty-master-outside");
    let pid = child.to_string();
    let out = ctx.ferry(&["dump", pid.as_str(), "-o", img.to_str().expect("path")]);
    out.assert_failed();
    assert!(
        out.stderr.contains("pseudo-terminal master")
            && out.stderr.contains("outside the dump holds too")
            && out.stderr.contains("not supported"),
        "{}",
        out.stderr
    );
    assert!(ferry_tests::alive(child), "the child was harmed");
}

/// A pair whose slave was closed after writing (no process holds it): the master still has
/// the bytes to read, then reads EIO (the hangup). Both come back as they were.
#[test]
fn pty_pair_with_its_slave_closed_keeps_its_bytes_and_its_hangup() {
    let Some(ctx) = setup("pty-hangup") else {
        return;
    };
    let state = Victim::new_state_dir(&ctx, "pty-hangup");
    let (ready, go, out) = (state.join("ready"), state.join("go"), state.join("out"));
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(format!(
        "import os, pty, time\n\
         m, s = pty.openpty()\n\
         os.write(s, b'bye\\n')\n\
         os.close(s)\n\
         open({ready:?}, 'w').close()\n\
         while not os.path.exists({go:?}): time.sleep(0.01)\n\
         r = []\n\
         for i in range(2):\n    \
             try: r.append(os.read(m, 100).decode())\n    \
             except OSError as e: r.append('errno %d' % e.errno)\n\
         open({out:?}, 'w').write(' '.join(repr(x) for x in r))\n\
         time.sleep(600)\n",
        ready = ready.to_str().expect("path"),
        go = go.to_str().expect("path"),
        out = out.to_str().expect("path"),
    ));
    let mut v = Victim::spawn(cmd, state, Spawn::default());
    wait_until(Duration::from_secs(10), "the pair set up", || {
        ready.exists().then_some(())
    });
    let img = image_path(&ctx, "pty-hangup");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    std::fs::write(&go, "").expect("go");
    let got = wait_until(Duration::from_secs(10), "the reads", || {
        std::fs::read_to_string(&out).ok().filter(|t| !t.is_empty())
    });
    assert_eq!(got, "'bye\\r\\n' 'errno 5'");
}
