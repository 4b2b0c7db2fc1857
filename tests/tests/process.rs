//! Process and tree state (issue 9): timers aimed at one thread, epoll entries whose
//! descriptor number was reused, stopped processes, membarrier, a missing vDSO, file tables
//! shared between processes and pidfds — each restored exactly or refused at dump by name.

use ferry_tests::{Victim, field, image_path, setup};

/// A POSIX timer with SIGEV_THREAD_ID keeps signalling the worker thread it was aimed at
/// (restored as process-directed before, its signals went to the main thread).
#[test]
fn posix_timer_aimed_at_one_thread_keeps_its_thread() {
    let Some(ctx) = setup("process-timer-thread") else {
        return;
    };
    let mut v = Victim::c(&ctx, "proc_timer_thread", &[]);
    let ok = v.check();
    let worker = field(&ok, "worker").map(str::to_owned);
    let img = image_path(&ctx, "timer-thread");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let ok = v.check();
    assert_eq!(field(&ok, "worker").map(str::to_owned), worker, "{ok}");
    v.assert_ticks_continuous();
}
