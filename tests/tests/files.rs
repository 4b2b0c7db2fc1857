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
