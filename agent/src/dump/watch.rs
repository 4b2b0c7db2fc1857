//! Watching a running process's system calls for a moment: what may change its areas' flags
//! between a reading of `smaps` taken while it runs and the freeze that follows.
//!
//! Only `smaps` tells an area's flags (`VmFlags`), and reading it walks every page table
//! (~8.5 ms per GiB of present pages). A live or post-copy migration reads it while the
//! process still runs, and the dump under the freeze takes each area's flags from that
//! reading (its `maps`, read under the freeze, give the ranges). What could make that reading
//! wrong by the freeze is a call of the process's own in between — `madvise`, `mlock`, an
//! `mmap` over part of an area, a `userfaultfd` registration — so every thread is seized
//! before the reading and stopped at each system call (`PTRACE_SYSCALL`) until the watch
//! becomes the freeze ([`Watch::freeze`]). A call that may change a flag is named, and the
//! dump then reads `smaps` under the freeze, as it does without a reading ahead. Calls that
//! only remove memory or make areas elsewhere (`munmap`, `brk`, `mprotect`) need no
//! watching: an area that is not inside one area of the reading makes the dump read again.
//!
//! The watch suspends nothing of the process's own: its seccomp filters apply (the freeze
//! suspends them, for the calls the dump injects), its signals are delivered, a job-control
//! stop holds its threads (they stay stopped until the freeze, which records the stop).

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::DumpError;
use super::freeze::{Frozen, task_ids, tracer_of};
use crate::ptrace::{PtraceError, Tracee};

/// One watched thread.
#[derive(Debug)]
struct Watched {
    tracee: Tracee,
    /// In a job-control stop of its process (the stop's signal): held there, not resumed.
    held: Option<Signal>,
}

/// A call the test fault `origin-madvise-in-window` has the process make, in place of its
/// next return from a system call (see [`Watch::call_in_window`]).
type Injected = (i64, [u64; 6]);

/// The threads of a running process, seized and stopped at each system call; what they
/// called that may change an area's flags.
#[derive(Debug)]
pub struct Watch {
    pid: Pid,
    tasks: Vec<Watched>,
    /// The first call seen that may change an area's flags.
    changed: Option<String>,
    /// Syscall stops served.
    stops: u64,
    /// The test fault's call, until made.
    inject: Option<Injected>,
    since: Instant,
    done: bool,
}

/// `-ENOSYS` in `rax`: how x86-64 shows a syscall-entry stop.
const ENTRY_RAX: u64 = (-(libc::ENOSYS as i64)) as u64;

impl Watch {
    /// Seizes every thread of `pid` and lets each run on, stopping at each system call. A
    /// thread made meanwhile is found by reading the task list again (made by a thread not
    /// seized yet) or arrives seized (`PTRACE_O_TRACECLONE`).
    pub fn start(pid: Pid) -> Result<Self, DumpError> {
        let me = nix::unistd::gettid();
        let mut w = Watch {
            pid,
            tasks: Vec::new(),
            changed: None,
            stops: 0,
            inject: None,
            since: Instant::now(),
            done: false,
        };
        // Set once the thread is in our stop: a clone event before it would end the interrupt.
        let options = Options::PTRACE_O_TRACESYSGOOD | Options::PTRACE_O_TRACECLONE;
        loop {
            let mut found_new = false;
            for tid in task_ids(pid)? {
                if w.knows(tid) {
                    continue;
                }
                found_new = true;
                let tracee = match Tracee::seize(tid, Options::empty()) {
                    Ok(t) => t,
                    Err(PtraceError::Request {
                        source: Errno::ESRCH,
                        ..
                    }) if tid != pid => continue,
                    // Made by a thread we watch: it arrives seized, its first stop is ahead.
                    Err(PtraceError::Request {
                        source: Errno::EPERM,
                        ..
                    }) if tracer_of(tid) == Some(me.as_raw()) => {
                        w.tasks.push(Watched {
                            tracee: Tracee::attached(tid)?,
                            held: None,
                        });
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let held = match tracee.interrupt() {
                    Ok(stop) => stop,
                    Err(PtraceError::Gone { .. }) if tid != pid => continue,
                    Err(e) => {
                        let _ = tracee.detach(None);
                        return Err(e.into());
                    }
                };
                if let Err(source) = ptrace::setoptions(tid, options) {
                    let _ = tracee.detach(None);
                    return Err(PtraceError::Request {
                        op: "setoptions",
                        pid: tid.as_raw(),
                        source,
                    }
                    .into());
                }
                w.tasks.push(Watched { tracee, held });
                if held.is_none() {
                    w.resume(tid, None);
                }
            }
            if !found_new {
                break;
            }
        }
        if w.tasks.first().is_none_or(|t| t.tracee.pid() != pid) {
            return Err(DumpError::BadTarget {
                pid: pid.as_raw(),
                why: "its main thread has exited".into(),
            });
        }
        Ok(w)
    }

    /// Reads `smaps` of the process on another thread while this one serves the stops.
    pub fn read_smaps(&mut self) -> Result<String, DumpError> {
        let pid = self.pid.as_raw();
        std::thread::scope(|s| {
            let reader = s.spawn(move || crate::proc::read(pid, "smaps"));
            let mut served = Ok(());
            while !reader.is_finished() {
                served = served.and_then(|()| self.serve());
                std::thread::sleep(Duration::from_micros(50));
            }
            let text = reader
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))?;
            served.map(|()| text)
        })
    }

    /// The first call seen that may change an area's flags, if any.
    pub fn changed(&self) -> Option<&str> {
        self.changed.as_deref()
    }

    /// Stops every thread (each in a `PTRACE_EVENT_STOP`, as [`Frozen::seize`] leaves it),
    /// with the options of a freeze, and returns the freeze and what the watch saw.
    pub fn freeze(mut self) -> Result<(Frozen, Option<String>), DumpError> {
        self.done = true;
        let mut i = 0;
        while i < self.tasks.len() {
            let tid = self.tasks[i].tracee.pid();
            if self.tasks[i].held.is_none() {
                match self.stop(tid) {
                    Ok(stop) => self.tasks[i].held = stop,
                    Err(PtraceError::Gone { .. }) if tid != self.pid => {
                        self.tasks.remove(i);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            i += 1;
        }
        if self
            .tasks
            .first()
            .is_none_or(|t| t.tracee.pid() != self.pid)
        {
            return Err(DumpError::BadTarget {
                pid: self.pid.as_raw(),
                why: "its main thread has exited".into(),
            });
        }
        for t in &self.tasks {
            let options = Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP);
            ptrace::setoptions(t.tracee.pid(), options).map_err(|source| PtraceError::Request {
                op: "setoptions",
                pid: t.tracee.pid().as_raw(),
                source,
            })?;
        }
        let group_stop = self.tasks.first().and_then(|t| t.held);
        let tasks = std::mem::take(&mut self.tasks)
            .into_iter()
            .map(|t| t.tracee)
            .collect();
        tracing::debug!(
            pid = self.pid.as_raw(),
            elapsed = ?self.since.elapsed(),
            stops = self.stops,
            changed = ?self.changed,
            "system calls watched until the freeze"
        );
        Ok((Frozen::stopped(tasks, group_stop)?, self.changed.take()))
    }

    /// Test fault `origin-madvise-in-window`: the leader's next return from a system call
    /// becomes `nr(args)` and then that return, as if the process made the call itself
    /// between the reading and the freeze; the watch sees it as any other (at most 2 s).
    pub fn call_in_window(&mut self, nr: i64, args: [u64; 6]) -> Result<(), DumpError> {
        self.inject = Some((nr, args));
        let t = Instant::now();
        while self.inject.is_some() && t.elapsed() < Duration::from_secs(2) {
            self.serve()?;
            std::thread::sleep(Duration::from_micros(50));
        }
        match self.inject.take() {
            None => Ok(()),
            Some(_) => Err(DumpError::BadTarget {
                pid: self.pid.as_raw(),
                why: "no system call in 2 s to make the fault's call in place of".into(),
            }),
        }
    }

    /// Whether a syscall-exit stop at `regs` returns to a `syscall` instruction's end with no
    /// restart pending (a call made in its place can return the same way).
    fn returns_plainly(&self, regs: &libc::user_regs_struct) -> bool {
        let restart = (-516..=-512).contains(&(regs.rax as i64));
        let mut insn = [0u8; 2];
        let at = regs.rip.wrapping_sub(2);
        !restart && self.tasks[0].tracee.read_mem(at, &mut insn).is_ok() && insn == [0x0f, 0x05]
    }

    /// Makes the stopped thread `tid` (at a syscall-exit stop `regs`) run `call` through the
    /// `syscall` instruction it just ran, then puts `regs` back.
    fn make_call(
        &mut self,
        tid: Pid,
        regs: &libc::user_regs_struct,
        (nr, a): Injected,
    ) -> Result<(), DumpError> {
        let tracee = self.task(tid)?;
        let mut r = *regs;
        r.rip -= 2;
        r.rax = nr as u64;
        (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) = (a[0], a[1], a[2], a[3], a[4], a[5]);
        tracee.set_regs(&r)?;
        for step in ["entry", "exit"] {
            ptrace::syscall(tid, None).map_err(|source| PtraceError::Request {
                op: "syscall",
                pid: tid.as_raw(),
                source,
            })?;
            match self.task(tid)?.wait()? {
                WaitStatus::PtraceSyscall(_) => {}
                other => {
                    return Err(PtraceError::Unexpected {
                        pid: tid.as_raw(),
                        status: format!("{other:?} at the {step} of the fault's call"),
                    }
                    .into());
                }
            }
            if step == "entry" {
                let at_entry = self.task(tid)?.regs()?;
                self.note_call(tid, &at_entry);
            }
        }
        self.task(tid)?.set_regs(regs)?;
        Ok(())
    }

    fn knows(&self, tid: Pid) -> bool {
        self.tasks.iter().any(|t| t.tracee.pid() == tid)
    }

    fn task(&self, tid: Pid) -> Result<&Tracee, PtraceError> {
        self.tasks
            .iter()
            .find(|t| t.tracee.pid() == tid)
            .map(|t| &t.tracee)
            .ok_or(PtraceError::Unexpected {
                pid: tid.as_raw(),
                status: "a stop of a task not watched".into(),
            })
    }

    /// Serves every stop waiting now.
    fn serve(&mut self) -> Result<(), DumpError> {
        loop {
            let flags = WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD | WaitPidFlag::WNOHANG;
            match waitpid(None, Some(flags)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Ok(status) => self.handle(status),
                Err(Errno::EINTR) => {}
                Err(source) => {
                    return Err(PtraceError::Request {
                        op: "wait",
                        pid: self.pid.as_raw(),
                        source,
                    }
                    .into());
                }
            }
        }
    }

    /// One stop: noted, and the thread resumed (a job-control stop is held).
    fn handle(&mut self, status: WaitStatus) {
        match status {
            WaitStatus::PtraceSyscall(tid) => {
                self.stops += 1;
                if let Ok(regs) = self.task(tid).and_then(Tracee::regs) {
                    self.note_call(tid, &regs);
                    if tid == self.pid
                        && regs.rax != ENTRY_RAX
                        && self.returns_plainly(&regs)
                        && let Some(call) = self.inject.take()
                        && let Err(e) = self.make_call(tid, &regs, call)
                    {
                        tracing::warn!(error = %e, "the fault's call");
                    }
                }
                self.resume(tid, None);
            }
            WaitStatus::PtraceEvent(tid, _, libc::PTRACE_EVENT_CLONE) => {
                if let Ok(child) = ptrace::getevent(tid) {
                    self.adopt(Pid::from_raw(child as i32));
                }
                self.resume(tid, None);
            }
            WaitStatus::PtraceEvent(tid, sig, libc::PTRACE_EVENT_STOP) => {
                // A new thread's first stop (it may come before its parent's clone event).
                if !self.knows(tid) {
                    self.adopt(tid);
                }
                if sig == Signal::SIGTRAP {
                    self.resume(tid, None);
                } else if let Some(t) = self.tasks.iter_mut().find(|t| t.tracee.pid() == tid) {
                    t.held = Some(sig);
                }
            }
            // A signal on its way in: delivered as it would have been.
            WaitStatus::Stopped(tid, sig) => self.resume(tid, Some(sig)),
            WaitStatus::Exited(tid, _) | WaitStatus::Signaled(tid, _, _) => {
                self.tasks.retain(|t| t.tracee.pid() != tid);
            }
            _ => {}
        }
    }

    /// A task made by a watched thread: a thread of the process is watched too; another
    /// process (a `clone` without `CLONE_THREAD`, already named at its call) is let go.
    fn adopt(&mut self, tid: Pid) {
        if self.knows(tid) {
            return;
        }
        let tgid = crate::proc::read(tid.as_raw(), "status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Tgid:"))
                    .and_then(|v| v.trim().parse::<i32>().ok())
            });
        if tgid == Some(self.pid.as_raw()) {
            if let Ok(tracee) = Tracee::attached(tid) {
                self.tasks.push(Watched { tracee, held: None });
            }
            return;
        }
        self.changed
            .get_or_insert_with(|| format!("a process {tid} made sharing its memory"));
        // Its first stop, then it goes its way.
        if let Ok(WaitStatus::PtraceEvent(..)) = waitpid(tid, Some(WaitPidFlag::__WALL)) {
            let _ = ptrace::detach(tid, None);
        }
    }

    /// Lets `tid` run on: stopping at its next system call while nothing was seen yet, else
    /// only when told to (a thread gone meanwhile is forgotten at its exit's report).
    fn resume(&self, tid: Pid, sig: Option<Signal>) {
        let _ = if self.changed.is_none() {
            ptrace::syscall(tid, sig)
        } else {
            ptrace::cont(tid, sig)
        };
    }

    /// Stops `tid` in a `PTRACE_EVENT_STOP`: any other stop met first (a system call, a
    /// signal, a clone) satisfies an interrupt, so it is served and the thread interrupted
    /// again. Returns the job-control stop's signal if the stop is one.
    fn stop(&mut self, tid: Pid) -> Result<Option<Signal>, PtraceError> {
        let req = |op| {
            move |source| PtraceError::Request {
                op,
                pid: tid.as_raw(),
                source,
            }
        };
        // A stop already waiting comes first: an interrupt sent to a task in a stop would take
        // effect after it, as a second stop.
        let mut status = match waitpid(tid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                return Err(PtraceError::Gone {
                    pid: tid.as_raw(),
                    how: "exited".into(),
                });
            }
            Ok(s) => Some(s),
            Err(source) => return Err(req("wait")(source)),
        };
        loop {
            let status = match status.take() {
                Some(s) => s,
                None => {
                    ptrace::interrupt(tid).map_err(req("interrupt"))?;
                    self.task(tid)?.wait()?
                }
            };
            match status {
                WaitStatus::PtraceEvent(_, sig, libc::PTRACE_EVENT_STOP) => {
                    return Ok((sig != Signal::SIGTRAP).then_some(sig));
                }
                WaitStatus::PtraceSyscall(_) => {
                    let regs = self.task(tid)?.regs()?;
                    self.note_call(tid, &regs);
                    ptrace::cont(tid, None).map_err(req("cont"))?;
                }
                WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_CLONE) => {
                    if let Ok(child) = ptrace::getevent(tid) {
                        self.adopt(Pid::from_raw(child as i32));
                    }
                    ptrace::cont(tid, None).map_err(req("cont"))?;
                }
                WaitStatus::Stopped(_, sig) => {
                    ptrace::cont(tid, Some(sig)).map_err(req("cont"))?;
                }
                other => {
                    return Err(PtraceError::Unexpected {
                        pid: tid.as_raw(),
                        status: format!("{other:?}"),
                    });
                }
            }
        }
    }

    /// Notes the call `tid` is entering (`regs` at a syscall-entry stop) if it may change an
    /// area's flags.
    fn note_call(&mut self, tid: Pid, regs: &libc::user_regs_struct) {
        if regs.rax != ENTRY_RAX || self.changed.is_some() {
            return;
        }
        let clone3_flags = |at: u64| {
            let mut b = [0u8; 8];
            self.task(tid).ok()?.read_mem(at, &mut b).ok()?;
            Some(u64::from_ne_bytes(b))
        };
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10];
        if let Some(what) = flag_changer(regs.orig_rax as i64, args, clone3_flags) {
            self.changed = Some(format!("{what} by thread {tid}"));
        }
    }
}

impl Drop for Watch {
    /// Given up before the freeze: every thread stopped, then let go as it was.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let this = Watch {
            pid: self.pid,
            tasks: std::mem::take(&mut self.tasks),
            changed: self.changed.take(),
            stops: self.stops,
            inject: None,
            since: self.since,
            done: false,
        };
        self.done = true;
        match this.freeze() {
            Ok((frozen, _)) => {
                if let Err(e) = frozen.release() {
                    tracing::warn!(error = %e, "let the watched process go");
                }
            }
            Err(e) => tracing::warn!(error = %e, "stop the watched process to let it go"),
        }
    }
}

/// `madvise` advice that changes no area's flags: it drops, reads ahead, pages out or
/// populates memory.
const PLAIN_ADVICE: [i32; 10] = [
    libc::MADV_WILLNEED,
    libc::MADV_DONTNEED,
    libc::MADV_FREE,
    libc::MADV_REMOVE,
    20, // MADV_COLD
    21, // MADV_PAGEOUT
    22, // MADV_POPULATE_READ
    23, // MADV_POPULATE_WRITE
    24, // MADV_DONTNEED_LOCKED
    25, // MADV_COLLAPSE
];

/// `prctl` options that change areas or their flags: `PR_SET_MM`, `PR_SET_THP_DISABLE`,
/// `PR_SET_MDWE`, `PR_SET_MEMORY_MERGE`, `PR_SET_VMA`.
const AREA_PRCTL: [u64; 5] = [35, 41, 65, 67, 0x5356_4d41];

/// `UFFDIO_REGISTER` and `UFFDIO_UNREGISTER`: they set and clear `um`, `uw`, `ui`.
const UFFD_AREA_IOCTL: [u64; 2] = [0xc020_aa00, 0x8010_aa01];

/// The system call `nr` entered with its first four arguments `a`, named if it may change the
/// flags an area had in `smaps` (or map an area in the range of another): `clone3_flags`
/// reads the flags of `clone3`'s arguments at an address of the process.
pub(crate) fn flag_changer(
    nr: i64,
    a: [u64; 4],
    clone3_flags: impl FnOnce(u64) -> Option<u64>,
) -> Option<String> {
    let thread = libc::CLONE_THREAD as u64;
    match nr {
        libc::SYS_madvise if PLAIN_ADVICE.contains(&(a[2] as i32)) => None,
        libc::SYS_madvise => Some(format!("madvise(advice {})", a[2])),
        libc::SYS_prctl if AREA_PRCTL.contains(&a[0]) => Some(format!("prctl({:#x})", a[0])),
        libc::SYS_ioctl if UFFD_AREA_IOCTL.contains(&a[1]) => {
            Some("a userfaultfd registration".into())
        }
        libc::SYS_arch_prctl if (0x5001..=0x5005).contains(&a[0]) => {
            Some(format!("arch_prctl({:#x}) (shadow stack)", a[0]))
        }
        libc::SYS_clone if a[0] & thread == 0 => Some("clone of a process".into()),
        libc::SYS_clone3 if clone3_flags(a[0]).is_none_or(|f| f & thread == 0) => {
            Some("clone3 of a process".into())
        }
        libc::SYS_fork | libc::SYS_vfork => Some("fork".into()),
        _ => {
            let name = match nr {
                libc::SYS_process_madvise => "process_madvise",
                libc::SYS_mlock => "mlock",
                libc::SYS_mlock2 => "mlock2",
                libc::SYS_munlock => "munlock",
                libc::SYS_mlockall => "mlockall",
                libc::SYS_munlockall => "munlockall",
                libc::SYS_mmap => "mmap",
                libc::SYS_mremap => "mremap",
                libc::SYS_remap_file_pages => "remap_file_pages",
                libc::SYS_shmat => "shmat",
                libc::SYS_execve => "execve",
                libc::SYS_execveat => "execveat",
                libc::SYS_io_uring_enter => "io_uring_enter",
                453 => "map_shadow_stack",
                462 => "mseal",
                _ => return None,
            };
            Some(name.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::mm::victim::Victim;

    /// Runs `f` (which talks to the watched victim) on another thread while this one, the
    /// tracer, serves the victim's stops.
    fn serve_while(w: &mut Watch, f: impl FnOnce() + Send) {
        std::thread::scope(|s| {
            let h = s.spawn(f);
            while !h.is_finished() {
                w.serve().expect("serve");
                std::thread::sleep(Duration::from_micros(50));
            }
        });
    }

    /// Waits (2 s at most) until `pid`'s state in `/proc/PID/stat` is `want`.
    fn wait_state(pid: Pid, want: char) {
        let t = Instant::now();
        loop {
            let stat = crate::proc::read(pid.as_raw(), "stat").expect("stat");
            let state = crate::proc::parse_stat(&stat).expect("stat").state;
            if state == want {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "state {state}, not {want}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn root() -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            println!("SKIPPED: the freeze suspends seccomp filters, which needs CAP_SYS_ADMIN");
            assert!(std::env::var_os("CI").is_none(), "skipped under CI");
        }
        root
    }

    /// Reads and writes of a running process are served and let through; its `madvise`
    /// (`MADV_DONTDUMP`) is named; the freeze that follows holds every thread with its
    /// registers, and the process runs on once let go.
    #[test]
    fn a_madvise_while_watched_is_named_and_the_freeze_holds() {
        if !root() {
            return;
        }
        let mut v = Victim::start();
        let mut w = Watch::start(v.pid()).expect("watch");
        serve_while(&mut w, || v.touch());
        assert!(w.stops >= 2, "{} stops", w.stops);
        assert_eq!(w.changed(), None, "a read and a write change no flag");
        let text = w.read_smaps().expect("smaps while watched");
        assert!(text.contains("VmFlags:"));
        serve_while(&mut w, || v.dontdump());
        let why = w.changed().expect("the madvise seen").to_string();
        assert!(why.contains("madvise(advice 16)"), "{why}");
        let (frozen, changed) = w.freeze().expect("freeze");
        assert_eq!(changed.as_deref(), Some(why.as_str()));
        assert_eq!(frozen.leader().tracee.pid(), v.pid());
        assert_eq!(frozen.group_stop, None);
        let status = crate::proc::read(v.pid().as_raw(), "status").expect("status");
        assert!(status.contains("State:\tt (tracing stop)"), "{status}");
        frozen.release().expect("release");
        // Let go as it was: it answers again, untraced.
        v.touch();
        let status = crate::proc::read(v.pid().as_raw(), "status").expect("status");
        assert!(status.contains("TracerPid:\t0"), "{status}");
    }

    /// A process stopped by job control stays stopped through the watch and the freeze (which
    /// records the stop), and after it; a watch given up lets a running process go.
    #[test]
    fn a_stopped_process_stays_stopped_and_a_dropped_watch_lets_go() {
        if !root() {
            return;
        }
        let mut v = Victim::start();
        let pid = v.pid();
        nix::sys::signal::kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        wait_state(pid, 'T');
        let w = Watch::start(pid).expect("watch");
        let (frozen, changed) = w.freeze().expect("freeze");
        assert_eq!(changed, None);
        assert_eq!(frozen.group_stop, Some(Signal::SIGSTOP));
        frozen.release().expect("release");
        wait_state(pid, 'T');
        nix::sys::signal::kill(pid, Signal::SIGCONT).expect("SIGCONT");
        v.touch();
        // Dropped before any freeze: every thread is let go, untraced.
        let mut w = Watch::start(pid).expect("watch");
        serve_while(&mut w, || v.touch());
        drop(w);
        v.touch();
        let status = crate::proc::read(pid.as_raw(), "status").expect("status");
        assert!(status.contains("TracerPid:\t0"), "{status}");
    }

    /// Which calls may change an area's flags: by number, advice, option, request, flags.
    #[test]
    fn the_calls_that_change_flags() {
        let named = |nr, a| flag_changer(nr, a, |_| None);
        let madvise = |advice: i32| named(libc::SYS_madvise, [0, 4096, advice as u64, 0]);
        assert_eq!(madvise(libc::MADV_DONTNEED), None);
        assert_eq!(madvise(libc::MADV_FREE), None);
        assert_eq!(madvise(21), None, "MADV_PAGEOUT");
        for flagging in [
            libc::MADV_DONTDUMP,
            libc::MADV_HUGEPAGE,
            libc::MADV_DONTFORK,
            libc::MADV_WIPEONFORK,
            libc::MADV_MERGEABLE,
            libc::MADV_RANDOM,
            libc::MADV_NORMAL,
        ] {
            assert!(madvise(flagging).is_some(), "advice {flagging}");
        }
        for nr in [
            libc::SYS_mlock,
            libc::SYS_mlockall,
            libc::SYS_munlock,
            libc::SYS_mmap,
            libc::SYS_mremap,
            libc::SYS_execve,
            libc::SYS_shmat,
            462,
        ] {
            assert!(named(nr, [0; 4]).is_some(), "call {nr}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_munmap,
            libc::SYS_brk,
            libc::SYS_mprotect,
            libc::SYS_futex,
        ] {
            assert_eq!(named(nr, [0; 4]), None, "call {nr}");
        }
        // ioctl: only a userfaultfd's registration; prctl: only the options on areas.
        assert!(named(libc::SYS_ioctl, [3, 0xc020_aa00, 0, 0]).is_some());
        assert_eq!(named(libc::SYS_ioctl, [3, libc::FIONREAD, 0, 0]), None);
        assert!(named(libc::SYS_prctl, [0x5356_4d41, 0, 0, 0]).is_some());
        assert!(named(libc::SYS_prctl, [67, 1, 0, 0]).is_some());
        assert_eq!(named(libc::SYS_prctl, [15, 0, 0, 0]), None, "PR_SET_NAME");
        // A thread shares the address space; a new process shares pages copy-on-write.
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(named(libc::SYS_clone, [thread, 0, 0, 0]), None);
        assert!(named(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0]).is_some());
        let clone3 = |flags: Option<u64>| flag_changer(libc::SYS_clone3, [0; 4], |_| flags);
        assert_eq!(clone3(Some(thread)), None);
        assert!(clone3(Some(0)).is_some());
        assert!(clone3(None).is_some(), "unreadable arguments count");
    }
}
