//! Descriptors and credentials in flight: messages queued in a Unix socket's receive queue
//! that pass descriptors (`SCM_RIGHTS`) or carry the sender's credentials
//! (`SCM_CREDENTIALS`). The victim (`scm_inflight`) receives them after the restore and checks
//! bytes, descriptors (same file and offset, the very open file description it still holds)
//! and credentials itself.

use ferry_tests::{TestCtx, Victim, field, image_path, kill_and_reap, my_children, setup};

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
fn descriptors_and_credentials_in_flight_survive() {
    let Some(ctx) = setup("inflight") else {
        return;
    };
    let mut v = Victim::c(&ctx, "scm_inflight", &[]);
    v.check();
    // Reading the queues (peeked, the descriptors copied into ferry) leaves them as they were.
    let img0 = image_path(&ctx, "inflight-leave");
    v.dump(&ctx, &img0, &["--leave-running"]);
    v.check();
    let img = image_path(&ctx, "inflight");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.check();
    v.check();
    v.assert_ticks_continuous();
}

#[test]
fn a_descriptor_in_flight_no_process_holds_is_refused_by_name() {
    let Some(ctx) = setup("inflight-orphan") else {
        return;
    };
    let v = Victim::c(&ctx, "scm_inflight", &["orphan"]);
    let img = image_path(&ctx, "inflight-orphan");
    let pid = v.pid.to_string();
    let out = ctx.ferry(&["dump", pid.as_str(), "-o", img.to_str().expect("path")]);
    out.assert_failed();
    assert!(
        out.stderr.contains("descriptors in flight")
            && out.stderr.contains("anon_inode:[eventfd]")
            && out.stderr.contains("no process of the dump holds")
            && out.stderr.contains("not supported"),
        "{}",
        out.stderr
    );
    // Nothing was harmed: the other queues are still there.
    v.check();
}

/// Between two processes of a tree: the child passes the parent a pipe end it still holds,
/// with its credentials, over a socketpair split by fork (the parent's end autobound to an
/// abstract name by sending with `SO_PASSCRED`, which it keeps).
#[test]
fn descriptors_and_credentials_in_flight_between_members_survive() {
    let Some(ctx) = setup("inflight-tree") else {
        return;
    };
    let mut v = Victim::c(&ctx, "scm_tree", &[]);
    let ok = v.check();
    let child: i32 = field(&ok, "child")
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no child in {ok:?}"));
    v.track(child);
    let img0 = image_path(&ctx, "inflight-tree-leave");
    v.dump(&ctx, &img0, &["--tree", "--leave-running"]);
    v.check();
    let img = image_path(&ctx, "inflight-tree");
    v.dump(&ctx, &img, &["--tree"]);
    restore_tree(&ctx, &mut v, child, &img);
    v.check();
    v.check();
    v.assert_ticks_continuous();
}
