//! Regular files deleted while mapped (a POSIX shm object unlinked after `mmap`, a data file
//! removed, a library replaced on disk) travel with the image: shared mappings of one file stay
//! one object, private ones keep both the file's pages and the process's own, and the file
//! keeps its mode and mtime. One that a descriptor still holds is refused, naming both.

use std::os::unix::fs::MetadataExt;

use ferry_tests::{Victim, alive, field, image_path, setup};

/// `(path, start-end)` of each line of `/proc/PID/maps` naming a deleted file.
fn deleted_maps(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(" (deleted)"))
        .filter_map(|l| {
            let range = l.split_whitespace().next()?.to_string();
            let path = l.split_whitespace().nth(5)?.to_string();
            Some((path, range))
        })
        .collect()
}

#[test]
fn deleted_mapped_files_survive() {
    let Some(ctx) = setup("deleted-maps") else {
        return;
    };
    let mut v = Victim::c(&ctx, "deleted_maps", &[]);
    v.check();
    let before: Vec<String> = deleted_maps(v.pid).into_iter().map(|(p, _)| p).collect();
    assert_eq!(before.len(), 3, "{before:?}");
    let img = image_path(&ctx, "deleted_maps");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let ok = v.check();
    assert_eq!(field(&ok, "checks"), Some("2"), "{ok}");
    let after = deleted_maps(v.pid);
    let paths: Vec<String> = after.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(paths, before);
    // The shared file again: its mode as it was (its mtime the restore checker compared before
    // the process ran; the victim's writes since move it), and nothing left at its path.
    let (path, range) = &after[0];
    let meta = std::fs::metadata(format!("/proc/{}/map_files/{range}", v.pid)).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.nlink(), 0);
    assert!(!std::path::Path::new(path).exists());
    v.assert_ticks_continuous();
}

#[test]
fn a_deleted_mapped_file_also_held_by_a_descriptor_is_refused() {
    let Some(ctx) = setup("deleted-maps-fd") else {
        return;
    };
    let v = Victim::c(&ctx, "deleted_maps", &["with-fd"]);
    let fd = v
        .status_lines()
        .iter()
        .find_map(|l| field(l, "fd").map(str::to_owned))
        .expect("fd=N");
    let img = image_path(&ctx, "deleted_maps_fd");
    let pid = v.pid.to_string();
    let out = ctx.ferry(&["dump", &pid, "-o", img.to_str().unwrap()]);
    out.assert_failed();
    assert!(
        out.stderr.contains("shared.bin (deleted)")
            && out.stderr.contains(&format!("fd {fd} holds too"))
            && out.stderr.contains("not supported"),
        "{}",
        out.stderr
    );
    assert!(!img.exists());
    assert!(alive(v.pid));
    v.assert_running_free();
    v.check();
}
