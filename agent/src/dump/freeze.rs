//! Freezing every thread of a process under ptrace, and undoing it.

use nix::errno::Errno;
use nix::sys::ptrace::Options;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::DumpError;
use crate::ptrace::{PtraceError, Tracee};

/// One stopped thread and what the dump may change in it.
#[derive(Debug)]
pub struct FrozenTask {
    /// The thread.
    pub tracee: Tracee,
    /// Its registers at the freeze.
    pub regs: libc::user_regs_struct,
    /// Its signal mask at the freeze.
    pub sigmask: u64,
}

impl FrozenTask {
    /// A stopped thread with its registers and signal mask as they are now.
    fn of(tracee: Tracee) -> Result<Self, PtraceError> {
        let regs = tracee.regs()?;
        let sigmask = tracee.sigmask()?;
        Ok(FrozenTask {
            tracee,
            regs,
            sigmask,
        })
    }
}

/// Every thread of a process, stopped. Dropping it puts back what the dump changed
/// (registers, signal masks) and detaches, so the process carries on as if nothing happened.
#[derive(Debug)]
pub struct Frozen {
    /// The threads; the thread-group leader first.
    pub tasks: Vec<FrozenTask>,
    /// The signal of the group stop the process was in when seized (job control), if any.
    pub group_stop: Option<Signal>,
    done: bool,
}

pub(super) fn task_ids(pid: Pid) -> Result<Vec<Pid>, DumpError> {
    let dir = format!("/proc/{pid}/task");
    let mut tids: Vec<i32> = std::fs::read_dir(&dir)
        .map_err(|source| crate::proc::ProcError::Read {
            path: dir.into(),
            source,
        })?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // Leader first, then by TID.
    tids.sort_unstable_by_key(|t| (*t != pid.as_raw(), *t));
    Ok(tids.into_iter().map(Pid::from_raw).collect())
}

/// `err` happened while `pid` was frozen: if the process died meanwhile (killed: a frozen
/// process does not exit by itself), that is what is said, not the read that failed because
/// of it (`failed to fill whole buffer` from its vanished memory, `ESRCH` from ptrace).
pub(crate) fn explain_death(pid: Pid, err: DumpError) -> DumpError {
    if matches!(err, DumpError::Died { .. }) {
        return err;
    }
    // A killed task loses its memory (what made the dump fail) a moment before it becomes a
    // zombie: while it is exiting, wait for it.
    for _ in 0..100 {
        if let Some(how) = death(pid) {
            tracing::debug!(pid = pid.as_raw(), error = %err, "the process died during the dump");
            return DumpError::Died {
                pid: pid.as_raw(),
                how,
            };
        }
        if !exiting(pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    err
}

/// Whether `pid` is on its way out: its memory is gone (`/proc/PID/status` shows no `VmSize`
/// without an mm) or SIGKILL is pending for it.
fn exiting(pid: Pid) -> bool {
    let Ok(status) = crate::proc::read(pid.as_raw(), "status") else {
        return false;
    };
    let sigkill = 1u64 << (libc::SIGKILL - 1);
    let pending = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|m| m & sigkill != 0)
    };
    !status.lines().any(|l| l.starts_with("VmSize:")) || pending("SigPnd:") || pending("ShdPnd:")
}

/// How `pid` ended, if it did: gone, or a zombie (with what killed it, when /proc says).
fn death(pid: Pid) -> Option<String> {
    let Ok(text) = crate::proc::read(pid.as_raw(), "stat") else {
        return Some("it is gone".into());
    };
    let stat = crate::proc::parse_stat(&text).ok()?;
    if !matches!(stat.state, 'Z' | 'X') {
        return None;
    }
    let c = stat.exit_code;
    Some(if c & 0x7f != 0 {
        let sig = c & 0x7f;
        let name = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
        format!("killed by {name}")
    } else {
        format!("it exited with code {}", (c >> 8) & 0xff)
    })
}

/// The PID tracing task `tid` (`TracerPid` of its status), if one does.
pub(super) fn tracer_of(tid: Pid) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let pid = status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse::<i32>()
        .ok()?;
    (pid > 0).then_some(pid)
}

/// ` (NAME)` of process `pid`, or nothing when it cannot be read.
fn comm_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| format!(" ({})", c.trim()))
        .unwrap_or_default()
}

impl Frozen {
    /// Seizes and stops every thread. A running thread may create another until it is stopped
    /// itself, so the task list is read again until a pass finds no new thread.
    pub fn seize(pid: Pid) -> Result<Self, DumpError> {
        let mut frozen = Frozen {
            tasks: Vec::new(),
            group_stop: None,
            done: false,
        };
        loop {
            let mut found_new = false;
            for tid in task_ids(pid)? {
                if frozen.tasks.iter().any(|t| t.tracee.pid() == tid) {
                    continue;
                }
                found_new = true;
                // SUSPEND_SECCOMP: a filter must not block (or kill on) our injected calls.
                let options = Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP);
                let tracee = match Tracee::seize(tid, options) {
                    Ok(t) => t,
                    // The thread exited meanwhile: nothing to freeze.
                    Err(PtraceError::Request {
                        source: Errno::ESRCH,
                        ..
                    }) if tid != pid => continue,
                    Err(PtraceError::Request {
                        source: Errno::EPERM,
                        ..
                    }) if tracer_of(tid).is_some() => {
                        let tracer = tracer_of(tid).unwrap_or_default();
                        return Err(DumpError::BadTarget {
                            pid: pid.as_raw(),
                            why: format!(
                                "{} is traced by pid {tracer}{} (a debugger or strace?): a task \
                                 has one tracer at a time; detach it first",
                                if tid == pid {
                                    "it".to_string()
                                } else {
                                    format!("its thread {tid}")
                                },
                                comm_of(tracer)
                            ),
                        });
                    }
                    Err(e) => return Err(e.into()),
                };
                match tracee.interrupt() {
                    Ok(stop) => {
                        if tid == pid {
                            frozen.group_stop = stop;
                        }
                    }
                    Err(PtraceError::Gone { .. }) if tid != pid => continue,
                    Err(e) => {
                        let _ = tracee.detach(None);
                        return Err(e.into());
                    }
                }
                frozen.tasks.push(FrozenTask::of(tracee)?);
            }
            if !found_new {
                break;
            }
        }
        if frozen.tasks.first().is_none_or(|t| t.tracee.pid() != pid) {
            return Err(DumpError::BadTarget {
                pid: pid.as_raw(),
                why: "its main thread has exited".into(),
            });
        }
        Ok(frozen)
    }

    /// Tasks a [`super::watch::Watch`] seized and stopped, leader first, with the signal of
    /// the job-control stop the leader is in, if any.
    pub(super) fn stopped(
        tasks: Vec<Tracee>,
        group_stop: Option<Signal>,
    ) -> Result<Self, DumpError> {
        let mut frozen = Frozen {
            tasks: Vec::with_capacity(tasks.len()),
            group_stop,
            done: false,
        };
        for tracee in tasks {
            frozen.tasks.push(FrozenTask::of(tracee)?);
        }
        Ok(frozen)
    }

    /// Tasks the caller traces already and holds in a ptrace stop (a restorer before it lets
    /// the process go), leader first: nothing is seized. [`Frozen::hand_back`] returns them.
    pub fn adopt(tids: &[Pid]) -> Result<Self, DumpError> {
        let mut frozen = Frozen {
            tasks: Vec::with_capacity(tids.len()),
            group_stop: None,
            done: false,
        };
        for &tid in tids {
            frozen.tasks.push(FrozenTask::of(Tracee::attached(tid)?)?);
        }
        if frozen.tasks.is_empty() {
            return Err(DumpError::BadTarget {
                pid: 0,
                why: "no task to read".into(),
            });
        }
        Ok(frozen)
    }

    /// Puts registers and signal masks back and leaves every task traced and stopped, for the
    /// caller that lent them to [`Frozen::adopt`].
    pub fn hand_back(mut self) -> Result<(), DumpError> {
        self.done = true;
        self.restore_tasks()?;
        Ok(())
    }

    /// The thread-group leader.
    pub fn leader(&self) -> &FrozenTask {
        &self.tasks[0]
    }

    /// Puts every thread's registers and signal mask back.
    pub fn restore_tasks(&self) -> Result<(), PtraceError> {
        for t in &self.tasks {
            t.tracee.set_sigmask(t.sigmask)?;
            t.tracee.set_regs(&t.regs)?;
        }
        Ok(())
    }

    /// Lets the process go on, untouched.
    pub fn release(mut self) -> Result<(), DumpError> {
        self.done = true;
        self.restore_tasks()?;
        for t in &self.tasks {
            t.tracee.detach(None)?;
        }
        Ok(())
    }

    /// Detaches every thread still there without putting registers back: the caller changed
    /// the program (an `execve` replaced it), so the saved registers mean nothing any more.
    pub fn detach_as_is(mut self) -> Result<(), DumpError> {
        self.done = true;
        for t in &self.tasks {
            match t.tracee.detach(None) {
                Ok(()) | Err(PtraceError::Gone { .. }) => {}
                Err(PtraceError::Request {
                    source: Errno::ESRCH,
                    ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Ends the process (the image is durable) and waits until its threads are gone.
    pub fn kill(mut self) -> Result<(), DumpError> {
        self.done = true;
        let pid = self.leader().tracee.pid();
        kill(pid, Signal::SIGKILL).map_err(|source| DumpError::Kill {
            pid: pid.as_raw(),
            source,
        })?;
        // As their tracer we are told of each thread's death; reaping is the parent's business.
        // The leader's death is reported only after every other thread's: wait for it last.
        for t in self.tasks.iter().rev() {
            loop {
                match t.tracee.wait() {
                    Err(PtraceError::Gone { .. }) => break,
                    Err(PtraceError::Request {
                        source: Errno::ECHILD,
                        ..
                    }) => break,
                    Err(e) => return Err(e.into()),
                    Ok(_) => {
                        let _ = nix::sys::ptrace::cont(t.tracee.pid(), None);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Err(err) = self.restore_tasks() {
            match self.tasks.first().and_then(|t| death(t.tracee.pid())) {
                // Nothing to give back: the error that ended the dump says so.
                Some(how) => tracing::debug!(%err, %how, "the process died while frozen"),
                None => tracing::error!(%err, "could not put the registers back"),
            }
        }
        for t in &self.tasks {
            let _ = t.tracee.detach(None);
        }
    }
}
