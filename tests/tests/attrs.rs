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

/// What each thread has of its own — its name, I/O priority, timer slack, machine-check kill
/// policy, `PR_SET_TSC`, securebits (with a lock, and KEEP_CAPS) — and the process's
/// coredump_filter and a `MAP_NORESERVE` mapping come back; the victim reads each thread's
/// values in that thread and compares.
#[test]
fn per_thread_attributes_survive() {
    let Some(ctx) = setup("attrs-thread") else {
        return;
    };
    let mut v = Victim::c(&ctx, "thread_attrs", &[]);
    v.check();
    let img = image_path(&ctx, "thread_attrs");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let ok = v.check();
    assert_eq!(field(&ok, "checks"), Some("2"), "{ok}");
    v.assert_ticks_continuous();
}

/// Filesystem ids that are none of the real, effective and saved ones (fsuid 1002 with
/// euid 1001, fsgid 2002 with egid 2001) come back as they were.
#[test]
fn filesystem_ids_survive() {
    let Some(ctx) = setup("attrs-fsids") else {
        return;
    };
    let mut v = Victim::c(&ctx, "fsids", &[]);
    v.check();
    let img = image_path(&ctx, "fsids");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let ok = v.check();
    assert_eq!(field(&ok, "checks"), Some("2"), "{ok}");
    v.assert_ticks_continuous();
}

/// A process that leads a process group in a session it does not lead (`setpgid(0, 0)`, as a
/// shell makes a job) comes back leading its own group in the same session when the restore
/// runs in that session; the session the victim started in is this test's.
#[test]
fn a_group_leader_stays_in_its_session() {
    let Some(ctx) = setup("attrs-pgrp") else {
        return;
    };
    let mut v = Victim::c(&ctx, "pgrp_leader", &[]);
    let before = v.check();
    let img = image_path(&ctx, "pgrp_leader");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let ok = v.check();
    assert_eq!(field(&ok, "checks"), Some("2"), "{ok}");
    assert_eq!(field(&ok, "sid"), field(&before, "sid"), "{ok}");
    assert_eq!(field(&ok, "pgrp"), Some(v.pid.to_string().as_str()), "{ok}");
    v.assert_ticks_continuous();
}
