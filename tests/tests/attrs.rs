//! Process attributes and timers: interval and POSIX timers keep firing (a POSIX timer keeps
//! its id), and no_new_privs, capabilities, dumpable, child subreaper, nice, CPU affinity and
//! oom_score_adj are as they were.

use ferry_tests::{Victim, field, image_path, setup, status_field};

#[test]
fn attributes_and_timers_survive() {
    let Some(ctx) = setup("attrs") else {
        return;
    };
    let mut v = Victim::c(&ctx, "attrs", &[]);
    std::fs::write(format!("/proc/{}/oom_score_adj", v.pid), "500").expect("oom_score_adj");
    let ok = v.check();
    let before: Vec<String> = [
        "CapBnd",
        "CapEff",
        "CapPrm",
        "NoNewPrivs",
        "Cpus_allowed_list",
    ]
    .iter()
    .map(|k| status_field(v.pid, k).unwrap_or_default())
    .collect();
    let timer = field(&ok, "timer").map(str::to_owned);
    let img = image_path(&ctx, "attrs");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.assert_running_free();
    let ok = v.check();
    assert_eq!(field(&ok, "timer").map(str::to_owned), timer, "{ok}");
    let after: Vec<String> = [
        "CapBnd",
        "CapEff",
        "CapPrm",
        "NoNewPrivs",
        "Cpus_allowed_list",
    ]
    .iter()
    .map(|k| status_field(v.pid, k).unwrap_or_default())
    .collect();
    assert_eq!(after, before);
    let oom = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", v.pid)).unwrap_or_default();
    assert_eq!(oom.trim(), "500");
    v.assert_ticks_continuous();
}

/// Every thread's scheduling policy (SCHED_OTHER, BATCH, IDLE, FIFO, RR), real-time priority,
/// SCHED_RESET_ON_FORK and nice value come back; the victim checks each thread by TID.
#[test]
fn scheduling_policies_per_thread_survive() {
    let Some(ctx) = setup("attrs-sched") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sched", &[]);
    v.check();
    let img = image_path(&ctx, "sched");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let ok = v.check();
    assert_eq!(field(&ok, "checks"), Some("2"), "{ok}");
    v.assert_ticks_continuous();
}

/// SCHED_DEADLINE (runtime, deadline, period) is not kept: refused, naming the thread.
#[test]
fn sched_deadline_is_refused() {
    let Some(ctx) = setup("attrs-deadline") else {
        return;
    };
    let v = Victim::c(&ctx, "sched", &["deadline"]);
    let line = v.wait_status("deadline line", |l| l.starts_with("deadline "));
    let tid = field(&line, "tid").unwrap().to_owned();
    let img = image_path(&ctx, "deadline");
    let pid = v.pid.to_string();
    let out = ctx.ferry(&["dump", &pid, "-o", img.to_str().unwrap()]);
    out.assert_failed();
    assert!(
        out.stderr
            .contains(&format!("thread {tid}: SCHED_DEADLINE")),
        "{}",
        out.stderr
    );
    assert!(!img.exists());
    v.assert_running_free();
    v.check();
}

/// The audit login uid of the calling thread (inherited by what it starts) is `value` until
/// dropped; then it is cleared again.
struct ThreadLoginuid;

impl ThreadLoginuid {
    fn set(value: &str) -> Self {
        std::fs::write("/proc/thread-self/loginuid", value).expect("write our loginuid");
        ThreadLoginuid
    }
}

impl Drop for ThreadLoginuid {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/thread-self/loginuid", "4294967295");
    }
}

/// A process without an audit login uid, restored by a ferry that has one (and an audit
/// session): it comes back without either.
#[test]
fn unset_audit_login_uid_comes_back_unset() {
    let Some(ctx) = setup("attrs-loginuid") else {
        return;
    };
    let mut v = Victim::c(&ctx, "loginuid", &["clear"]);
    let ok = v.check();
    assert_eq!(field(&ok, "loginuid"), Some("4294967295"), "{ok}");
    let img = image_path(&ctx, "loginuid");
    v.dump(&ctx, &img, &[]);
    let ours = ThreadLoginuid::set("1000");
    v.restore(&ctx, &img, &[]);
    drop(ours);
    let now = v.check();
    assert_eq!(field(&now, "loginuid"), Some("4294967295"), "{now}");
    assert_eq!(field(&now, "sessionid"), Some("4294967295"), "{now}");
    v.assert_ticks_continuous();
}

/// A process in an audit session other than the restorer's cannot come back exactly (a
/// session id is only ever inherited): the restore is refused, naming it, and nothing runs.
#[test]
fn process_of_another_audit_session_is_refused_at_restore() {
    let Some(ctx) = setup("attrs-sessionid") else {
        return;
    };
    let mut v = Victim::c(&ctx, "loginuid", &["set"]);
    let ok = v.check();
    assert_eq!(field(&ok, "loginuid"), Some("1000"), "{ok}");
    let session = field(&ok, "sessionid").unwrap().to_owned();
    let img = image_path(&ctx, "sessionid");
    v.dump(&ctx, &img, &[]);
    let ours = ThreadLoginuid::set("4294967295");
    let out = ctx.ferry(&["restore", img.to_str().unwrap()]);
    drop(ours);
    if let Some(pid) = ferry_tests::parse_restored_pid(&out.stdout) {
        ferry_tests::kill_and_reap(pid); // restored after all: not left behind
    }
    out.assert_failed();
    assert!(
        out.stderr
            .contains(&format!("audit login uid 1000 in audit session {session}")),
        "{}",
        out.stderr
    );
    assert!(!ferry_tests::alive(v.pid), "pid {} runs", v.pid);
}
