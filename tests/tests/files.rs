//! Files and filesystem state: objects deleted while open (regular files with their holes,
//! times, mode and owner; FIFOs; device nodes; directories).

use ferry_tests::{Victim, image_path, setup};

/// A file deleted while open comes back with its mode, owner, atime and mtime, and its holes
/// kept as holes (not filled with zeros).
#[test]
fn a_deleted_file_keeps_its_holes_times_mode_and_owner() {
    let Some(ctx) = setup("files_deleted_file") else {
        return;
    };
    let mut v = Victim::c(&ctx, "files_deleted", &["file"]);
    v.check();
    let img = image_path(&ctx, "files_deleted_file");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.check();
    v.assert_no_bad();
}

/// A FIFO held by three descriptions, a device node and a directory, each removed while open,
/// come back as the same kind of object: one FIFO with its queued bytes, the same device.
#[test]
fn deleted_fifos_device_nodes_and_directories_come_back() {
    let Some(ctx) = setup("files_deleted_all") else {
        return;
    };
    let mut v = Victim::c(&ctx, "files_deleted", &[]);
    v.check();
    let img = image_path(&ctx, "files_deleted_all");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.check();
    // Nothing left behind where they were.
    let names: Vec<_> = std::fs::read_dir(&v.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !matches!(n.as_str(), "status" | "log" | "stderr" | "stdout"))
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
    // And once more from the restored process.
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.check();
    v.assert_no_bad();
}

/// A deleted FIFO that another process holds too cannot be made anew without leaving that
/// process on the old one: the dump refuses, naming it, and the process runs on.
#[test]
fn a_deleted_fifo_held_by_another_process_is_refused() {
    let Some(ctx) = setup("files_deleted_fifo_held") else {
        return;
    };
    let v = Victim::c(&ctx, "files_deleted", &[]);
    v.check();
    // This test holds the FIFO too (the victim's read-write end, reopened).
    let fifo = (3..64)
        .filter_map(|fd| {
            Some((
                fd,
                std::fs::read_link(format!("/proc/{}/fd/{fd}", v.pid)).ok()?,
            ))
        })
        .find(|(_, l)| l.to_string_lossy().ends_with("/fifo (deleted)"))
        .expect("the victim's deleted FIFO");
    let _held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{}/fd/{}", v.pid, fifo.0))
        .expect("open the FIFO");
    let img = image_path(&ctx, "files_deleted_fifo_held");
    let out = ctx.ferry(&["dump", &v.pid.to_string(), "-o", img.to_str().unwrap()]);
    out.assert_failed();
    assert!(
        out.stderr.contains("fifo (deleted)") && out.stderr.contains("held by another process"),
        "the refusal should name the FIFO: {}",
        out.stderr
    );
    v.assert_running_free();
    v.check();
}

/// A file only the process holds and keeps writing through a shared mapping (like a JVM's
/// perf-data file) is carried in the image: removed between dump and restore (another JVM's
/// `java -version` cleans such files), it is made again, contents, holes, mode and owner
/// kept, with its directory, and the process still writes through to it.
#[test]
fn a_private_shared_file_removed_after_the_dump_is_made_again() {
    let Some(ctx) = setup("files_private") else {
        return;
    };
    let mut v = Victim::c(&ctx, "files_private", &[]);
    v.check();
    let img = image_path(&ctx, "files_private");
    v.dump(&ctx, &img, &[]);
    std::fs::remove_dir_all(v.state.join("perf")).expect("remove the file");
    v.restore(&ctx, &img, &[]);
    let first = v.check();
    // The process writes on into the file made again.
    v.wait_tick_beyond(
        ferry_tests::field(&first, "counter")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            + 5,
    );
    v.check();
    // And when it is still there, it is used as it is.
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.check();
    v.assert_no_bad();
}

/// Cgroups made for a test, removed (after its processes are gone) on drop.
struct Cgroups(Vec<std::path::PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// A process in a cgroup of a v1 hierarchy, one of its threads in another: both cgroups are
/// removed between dump and restore. The restore makes them again and puts the process and
/// that thread back where each was.
#[test]
fn cgroups_removed_after_the_dump_are_made_again_per_thread() {
    let Some(ctx) = setup("files_cgroups") else {
        return;
    };
    let mount = std::path::Path::new("/sys/fs/cgroup/pids");
    if !mount.join("tasks").exists() {
        ferry_tests::skip("no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids");
        return;
    }
    let me = std::process::id();
    let (a, b) = (format!("ferry-test-{me}-a"), format!("ferry-test-{me}-b"));
    let cg = Cgroups(vec![mount.join(&a), mount.join(&b)]);
    for d in &cg.0 {
        std::fs::create_dir(d).expect("make the cgroup");
    }
    let mut v = Victim::c(&ctx, "threads", &["3"]);
    v.check();
    std::fs::write(cg.0[0].join("cgroup.procs"), v.pid.to_string()).expect("join a");
    let worker: i32 = std::fs::read_dir(format!("/proc/{}/task", v.pid))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .find(|&t| t != v.pid)
        .expect("a worker thread");
    std::fs::write(cg.0[1].join("tasks"), worker.to_string()).expect("move the worker to b");
    let pid = v.pid;
    let cgroup_of = |tid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/cgroup"))
            .unwrap()
            .lines()
            .find(|l| l.split(':').nth(1) == Some("pids"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(cgroup_of(pid).ends_with(&format!(":/{a}")));
    assert!(cgroup_of(worker).ends_with(&format!(":/{b}")));
    let img = image_path(&ctx, "files_cgroups");
    v.dump(&ctx, &img, &[]);
    for d in cg.0.iter().rev() {
        std::fs::remove_dir(d).expect("remove the cgroup");
    }
    v.restore(&ctx, &img, &[]);
    v.check();
    assert!(
        cgroup_of(pid).ends_with(&format!(":/{a}")),
        "{}",
        cgroup_of(pid)
    );
    assert!(
        cgroup_of(worker).ends_with(&format!(":/{b}")),
        "the worker is in {}",
        cgroup_of(worker)
    );
    v.assert_no_bad();
    v.kill();
}

/// A working directory removed while the process is in it is made again, entered and removed
/// (the restore used to fail on `chdir` after the dump had ended the process), and a
/// descriptor of the process's own `/proc` files reads the restored process (the restore
/// used to fail looking for the old process's `/proc/PID/status`).
#[test]
fn a_removed_working_directory_and_own_proc_files() {
    let Some(ctx) = setup("files_cwd_proc") else {
        return;
    };
    for name in ["compat/cwd_removed", "compat/proc_self_fd"] {
        let mut v = Victim::c(&ctx, name, &[]);
        v.check();
        let img = image_path(&ctx, &name.replace('/', "-"));
        v.dump(&ctx, &img, &[]);
        v.restore(&ctx, &img, &[]);
        v.check();
        v.assert_no_bad();
    }
}

/// The audit login uid a process set comes back (written by the restored task itself while
/// it still has `CAP_AUDIT_CONTROL`); its session id is a new one, which the checker names.
#[test]
fn the_audit_loginuid_comes_back() {
    let Some(ctx) = setup("files_loginuid") else {
        return;
    };
    if !std::path::Path::new("/proc/self/loginuid").exists() {
        ferry_tests::skip("no audit in this kernel (/proc/self/loginuid)");
        return;
    }
    let mut v = Victim::c(&ctx, "compat/loginuid", &[]);
    v.check();
    let img = image_path(&ctx, "files_loginuid");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let ok = v.check();
    assert_eq!(ferry_tests::field(&ok, "loginuid"), Some("4242"), "{ok}");
    v.assert_no_bad();
}

/// A write lease on a file the process holds open for writing under a temporary directory:
/// such a file would be carried, but opening it would break the lease (the dump blocked in
/// the lease break): it is left where it is, and the lease comes back.
#[test]
fn a_write_lease_is_kept_and_not_broken_by_the_dump() {
    let Some(ctx) = setup("files_lease") else {
        return;
    };
    let mut v = Victim::c(&ctx, "compat/lease_write", &[]);
    v.check();
    let img = image_path(&ctx, "files_lease");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.check();
    v.assert_no_bad();
}

/// A process in a chroot comes back in the same root; when that directory is gone at
/// restore, the restore refuses, naming it, and succeeds once it is back.
#[test]
fn a_chroot_whose_root_is_gone_is_refused_at_restore() {
    let Some(ctx) = setup("files_chroot_gone") else {
        return;
    };
    let mut v = Victim::c(&ctx, "compat/misc_chroot", &[]);
    v.check();
    let img = image_path(&ctx, "files_chroot_gone");
    v.dump(&ctx, &img, &[]);
    let root = v.state.join("root");
    let moved = v.state.join("root-moved");
    std::fs::rename(&root, &moved).unwrap();
    let out = ctx.ferry(&["restore", img.to_str().unwrap()]);
    out.assert_failed();
    assert!(
        out.stderr.contains(&format!(
            "its root directory {} (chroot) is gone",
            root.display()
        )),
        "{}",
        out.stderr
    );
    std::fs::rename(&moved, &root).unwrap();
    v.restore(&ctx, &img, &[]);
    v.check();
    v.assert_no_bad();
}

/// What the dump cannot carry yet is refused up front, naming it; the process runs on.
#[test]
fn unread_fanotify_events_and_a_write_lease_on_a_deleted_file_are_refused_by_name() {
    let Some(ctx) = setup("files_refused") else {
        return;
    };
    for (name, says) in [
        (
            "compat/fd_fanotify_unread",
            "a fanotify group with 24 bytes of unread events",
        ),
        ("compat/lease_deleted", "a write lease on"),
    ] {
        let v = Victim::c(&ctx, name, &[]);
        v.check();
        let img = image_path(&ctx, &name.replace('/', "-"));
        let out = ctx.ferry(&["dump", &v.pid.to_string(), "-o", img.to_str().unwrap()]);
        out.assert_failed();
        assert!(out.stderr.contains(says), "{name}: {}", out.stderr);
        v.assert_running_free();
        v.check();
    }
}
