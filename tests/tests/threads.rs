//! Multi-threaded processes: every thread comes back with its TID, registers, TLS, signal mask
//! and blocked system call, and they go on working together.

use ferry_tests::{Victim, field, image_path, setup};

fn tids(pid: i32) -> Vec<i32> {
    let mut t: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    t.sort_unstable();
    t
}

fn round_trips(threads: usize, cycles: usize) {
    let Some(ctx) = setup(&format!("threads-{threads}")) else {
        return;
    };
    let mut v = Victim::c(&ctx, "threads", &[&threads.to_string()]);
    let ok = v.check();
    assert_eq!(
        field(&ok, "tasks"),
        Some((threads + 1).to_string().as_str()),
        "{ok}"
    );
    let before = tids(v.pid);
    for cycle in 0..cycles {
        let img = image_path(&ctx, &format!("threads-{cycle}"));
        v.dump(&ctx, &img, &[]);
        v.restore(&ctx, &img, &[]);
        v.assert_running_free();
        let ok = v.check();
        assert_eq!(
            field(&ok, "tasks"),
            Some((threads + 1).to_string().as_str()),
            "{ok}"
        );
        assert_eq!(
            field(&ok, "pid"),
            Some(v.orig_pid.to_string().as_str()),
            "{ok}"
        );
        assert_eq!(tids(v.pid), before, "thread ids changed");
    }
    v.assert_ticks_continuous();
}

#[test]
fn eight_threads_keep_working() {
    round_trips(8, 1);
}

#[test]
fn threads_survive_three_cycles() {
    round_trips(3, 3);
}
