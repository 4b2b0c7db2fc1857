//! The agent's threads that work inside a migration's stop (the origin's tracer from the
//! freeze to the commit, the destination's restorer from the final image to the copy held
//! stopped) run at a higher priority meanwhile: every millisecond they wait for a CPU is a
//! millisecond of the process's downtime, and on a busy host (builds on every core) each of
//! the stop's hundreds of ptrace round trips would otherwise wait its turn.
//!
//! `SCHED_RESET_ON_FORK` goes with it: a task the thread creates (the destination's copy,
//! cloned from the restorer) starts at nice 0, not at ours. Without the privilege
//! (`CAP_SYS_NICE`) nothing changes.

use nix::unistd::Pid;

/// The nice value of a thread inside a stop.
pub const STOP_NICE: i32 = -10;
const SCHED_OTHER: u32 = 0;
const SCHED_RESET_ON_FORK: u32 = 0x4000_0000;

/// This thread's priority raised until dropped, when it is set back.
#[derive(Debug)]
pub struct Urgent {
    tid: Pid,
    /// The nice value before, if it was changed.
    before: Option<i32>,
}

impl Urgent {
    /// Raises this thread's priority (nothing if it cannot).
    pub fn now() -> Self {
        let tid = nix::unistd::gettid();
        let before = crate::sys::get_nice(tid).ok().filter(|&n| n > STOP_NICE);
        let before = before.filter(|_| {
            crate::sys::set_scheduler(tid, SCHED_OTHER | SCHED_RESET_ON_FORK, 0).is_ok()
                && crate::sys::set_nice(tid, STOP_NICE).is_ok()
        });
        Urgent { tid, before }
    }

    /// Sets the priority back now.
    pub fn end(self) {}
}

impl Drop for Urgent {
    fn drop(&mut self) {
        if let Some(n) = self.before.take() {
            let _ = crate::sys::set_nice(self.tid, n);
            let _ = crate::sys::set_scheduler(self.tid, SCHED_OTHER, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_inside_and_set_back_after() {
        let tid = nix::unistd::gettid();
        let before = crate::sys::get_nice(tid).expect("nice");
        let u = Urgent::now();
        let raised = u.before.is_some();
        if raised {
            assert_eq!(crate::sys::get_nice(tid).expect("nice"), STOP_NICE);
        } else if nix::unistd::geteuid().is_root() {
            panic!("root could not raise the priority");
        } else {
            println!("SKIPPED: raising a thread's priority needs CAP_SYS_NICE");
            assert!(std::env::var_os("CI").is_none(), "skipped under CI");
        }
        u.end();
        assert_eq!(crate::sys::get_nice(tid).expect("nice"), before);
        // A child of a raised thread starts at nice 0 (reset on fork) — checked in the kernel's
        // terms: the policy of this thread is plain SCHED_OTHER again.
        assert_eq!(crate::sys::get_scheduler(tid).expect("policy"), 0);
    }
}
