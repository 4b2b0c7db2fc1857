//! Pipes with both ends in the process (queued bytes kept), FIFOs, descriptors sharing one
//! open file description, files deleted while open, and file locks and leases.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

use ferry_tests::{Victim, field, image_path, proc_link, setup};
use nix::fcntl::{FcntlArg, fcntl};

/// The other process's view of a record lock on `path` over `start..start+len`: the PID that
/// holds a conflicting one (-1 for an OFD lock), or `None` when it is free.
fn lock_holder(path: &Path, start: i64, len: i64, ofd: bool) -> Option<i32> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the locked file");
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: start,
        l_len: len,
        l_pid: 0,
    };
    let arg = if ofd {
        FcntlArg::F_OFD_GETLK(&mut fl)
    } else {
        FcntlArg::F_GETLK(&mut fl)
    };
    fcntl(f.as_fd(), arg).expect("F_GETLK");
    (fl.l_type != libc::F_UNLCK as i16).then_some(fl.l_pid)
}

/// Every lock the victim took is held by it, as a second process sees.
fn assert_locks_held(v: &Victim) {
    let flocked = v.state.join("flocked");
    let status = Command::new("flock")
        .arg("-n")
        .arg(&flocked)
        .arg("true")
        .status()
        .expect("run flock(1)");
    assert_eq!(
        status.code(),
        Some(1),
        "flock -n {} got the lock: the victim's flock is gone",
        flocked.display()
    );
    let posix = v.state.join("posix");
    assert_eq!(
        lock_holder(&posix, 100, 100, false),
        Some(v.orig_pid),
        "POSIX write lock on bytes 100..199"
    );
    assert_eq!(lock_holder(&posix, 150, 1, false), Some(v.orig_pid));
    assert_eq!(
        lock_holder(&posix, 500, 0, false),
        Some(v.orig_pid),
        "POSIX read lock from byte 500"
    );
    assert_eq!(
        lock_holder(&posix, 200, 300, false),
        None,
        "bytes 200..499 were never locked"
    );
    assert_eq!(
        lock_holder(&v.state.join("ofd"), 0, 1, true),
        Some(-1),
        "OFD lock on byte 0"
    );
    assert_eq!(lock_holder(&v.state.join("ofd"), 1, 1, true), None);
    let locks = fs::read_to_string("/proc/locks").unwrap();
    assert!(
        locks.lines().any(|l| l.contains("LEASE")
            && l.contains("ACTIVE")
            && l.contains(&format!(" {} ", v.orig_pid))),
        "no lease of pid {} in /proc/locks:\n{locks}",
        v.orig_pid
    );
}

#[test]
fn pipes_keep_their_queued_bytes_and_descriptions() {
    let Some(ctx) = setup("pipes_pipe") else {
        return;
    };
    let mut v = Victim::c(&ctx, "pipes_pipe", &[]);
    let img = image_path(&ctx, "pipes_pipe");
    // Twice: the second image is of a process that was itself restored.
    for round in 0..2 {
        v.dump(&ctx, &img, &[]);
        v.restore(&ctx, &img, &[]);
        let ok = v.check();
        assert_eq!(field(&ok, "a"), Some("200000"), "round {round}: {ok}");
        assert_eq!(
            field(&ok, "b"),
            Some(if round == 0 { "3000" } else { "0" }),
            "round {round}: {ok}"
        );
        // Both ends of pipe A are one pipe again, shared by the four descriptors.
        let ends: Vec<_> = [5, 6, 40, 9]
            .iter()
            .map(|fd| proc_link(v.pid, &format!("fd/{fd}")))
            .collect();
        assert!(ends[0].to_string_lossy().starts_with("pipe:["), "{ends:?}");
        assert!(
            ends.iter().all(|e| *e == ends[0]),
            "pipe A's descriptors name different pipes: {ends:?}"
        );
        // Refilled by the check, drained and checked again.
        let again = v.check();
        assert_eq!(field(&again, "a"), Some("200000"), "{again}");
    }
    v.assert_no_bad();
}

#[test]
fn fifos_keep_their_queued_bytes() {
    let Some(ctx) = setup("pipes_fifo") else {
        return;
    };
    let state = Victim::new_state_dir(&ctx, "pipes_fifo");
    let fifo3 = state.join("fifo3");
    nix::unistd::mkfifo(&fifo3, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // The test holds fifo3's read end: its bytes stay in the live FIFO across the restore.
    let mut reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo3)
        .expect("open fifo3");
    let mut cmd = Command::new(ferry_tests::workload("pipes_fifo"));
    cmd.arg(&state);
    let mut v = Victim::spawn(cmd, state.clone(), ferry_tests::Spawn::default());
    v.wait_ready();
    let img = image_path(&ctx, "pipes_fifo");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    for _ in 0..2 {
        let ok = v.check();
        assert_eq!(field(&ok, "fifo1"), Some("70000"), "{ok}");
        assert_eq!(field(&ok, "fifo2"), Some("3000"), "{ok}");
    }
    assert_eq!(proc_link(v.pid, "fd/5"), state.join("fifo1"));
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got);
    let mut want = vec![b'A'; 1000];
    want.extend(vec![b'B'; 2000]);
    assert!(
        got == want,
        "fifo3 carried {} bytes, not 1000 'A' then 2000 'B'",
        got.len()
    );
    v.assert_no_bad();
}

#[test]
fn shared_descriptions_deleted_files_and_locks() {
    let Some(ctx) = setup("pipes_files") else {
        return;
    };
    let mut v = Victim::c(&ctx, "pipes_files", &[]);
    v.check();
    assert_locks_held(&v);
    let img = image_path(&ctx, "pipes_files");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let ok = v.check();
    assert!(field(&ok, "deleted").is_some(), "{ok}");
    assert!(ok.ends_with(" (deleted)"), "{ok}");
    assert_locks_held(&v);
    // No copy of the deleted file is left anywhere in its directory.
    let names: Vec<String> = fs::read_dir(&v.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("deleted") || n.starts_with('.')),
        "files left behind: {names:?}"
    );
    // And once more from the restored process.
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.check();
    assert_locks_held(&v);
    v.assert_no_bad();
}

#[test]
fn a_deleted_file_over_the_limit_is_refused() {
    let Some(ctx) = setup("pipes_deleted_limit") else {
        return;
    };
    let v = Victim::c(&ctx, "pipes_files", &[]);
    let img = image_path(&ctx, "pipes_limit");
    let pid = v.pid.to_string();
    let out = ctx.ferry(&[
        "dump",
        &pid,
        "-o",
        img.to_str().unwrap(),
        "--max-deleted-file-size",
        "100000",
    ]);
    out.assert_failed();
    assert!(
        out.stderr.contains("fd 7:")
            && out.stderr.contains("300000 bytes")
            && out.stderr.contains("--max-deleted-file-size 100000"),
        "the refusal should name the fd, the size and the limit: {}",
        out.stderr
    );
    assert!(!img.exists());
    v.assert_running_free();
    v.check();
    assert_locks_held(&v);
}

/// The restore checker refuses a process that would come back different: a file deleted while
/// open whose name another file has taken since the dump can only come back under another
/// name (`/proc/PID/fd` would show it). The restore fails naming the field, leaves no process
/// behind, and succeeds once the name is free again.
#[test]
fn the_restore_checker_refuses_a_deleted_file_under_another_name() {
    let Some(ctx) = setup("pipes_checker") else {
        return;
    };
    let mut v = Victim::c(&ctx, "pipes_files", &[]);
    v.check();
    let img = image_path(&ctx, "pipes_checker");
    v.dump(&ctx, &img, &[]);
    let taken = v.state.join("deleted");
    fs::write(&taken, "another file now").expect("take the name");
    let before = ferry_tests::my_children();
    let out = ctx.ferry(&["restore", img.to_str().unwrap()]);
    let left: Vec<i32> = ferry_tests::my_children()
        .difference(&before)
        .copied()
        .collect();
    for &p in &left {
        ferry_tests::kill_and_reap(p);
    }
    out.assert_failed();
    assert!(
        out.stderr.contains("differs from its image") && out.stderr.contains("DeletedFile.path"),
        "the checker should name the field: {}",
        out.stderr
    );
    assert!(left.is_empty(), "a refused restore left {left:?}");
    assert_eq!(
        fs::read_to_string(&taken).unwrap(),
        "another file now",
        "the other file was touched"
    );
    fs::remove_file(&taken).expect("free the name");
    v.restore(&ctx, &img, &[]);
    let ok = v.check();
    assert!(ok.ends_with(" (deleted)"), "{ok}");
    v.assert_no_bad();
}
