//! Descriptors and credentials in flight: messages queued in a Unix socket's receive queue
//! that pass descriptors (`SCM_RIGHTS`) or carry the sender's credentials
//! (`SCM_CREDENTIALS`). The victim (`scm_inflight`) receives them after the restore and checks
//! bytes, descriptors (same file and offset, the very open file description it still holds)
//! and credentials itself.

use ferry_tests::{Victim, image_path, setup};

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
            && out.stderr.contains("pipe:[")
            && out.stderr.contains("no process of the dump holds")
            && out.stderr.contains("not supported"),
        "{}",
        out.stderr
    );
    // Nothing was harmed: the other queues are still there.
    v.check();
}
