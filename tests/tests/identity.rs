//! Restore checks that every file the process had open is still the same file: a log replaced
//! by another file at the same path makes the restore fail with an error naming the fd and the
//! path, and nothing is left running; with the original file back, the restore works.

use ferry_tests::{Victim, alive, image_path, my_children, setup};

#[test]
fn a_replaced_file_is_refused_by_name() {
    let Some(ctx) = setup("identity") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    v.wait_tick_beyond(2);
    let img = image_path(&ctx, "identity");
    v.dump(&ctx, &img, &[]);

    // Another file takes the log's place.
    let log = v.state.join("log");
    let aside = v.state.join("log.orig");
    std::fs::rename(&log, &aside).expect("move the log aside");
    std::fs::write(&log, b"someone else's file\n").expect("new file at the log's path");

    let children_before = my_children();
    let out = ctx.ferry(&["restore".as_ref(), img.as_os_str()]);
    out.assert_failed();
    assert!(
        out.stderr
            .contains("is not the file the image was taken from")
            && out.stderr.contains(&log.display().to_string())
            && out.stderr.contains("fd "),
        "the error should name the fd and the path: {}",
        out.stderr
    );
    assert!(
        !alive(v.orig_pid),
        "a failed restore left the process running"
    );
    assert_eq!(
        my_children(),
        children_before,
        "a failed restore left a process behind"
    );

    // The original file back: the restore goes through and the log goes on.
    std::fs::rename(&aside, &log).expect("put the log back");
    v.restore(&ctx, &img, &[]);
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 2);
    v.check();
}
