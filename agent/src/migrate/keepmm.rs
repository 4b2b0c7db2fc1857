//! The original's memory is freed after the copy runs, not inside the downtime
//! (docs/migration.md, "Live migration", the final stop).
//!
//! The stub's `execve` is the commit point; it drops the original's address space, and the
//! kernel frees an address space when its last user drops it: 1 GiB of pages took 90–200 ms
//! there, with the process stopped on both hosts. So, just before the `execve`, a second user
//! of the same address space is made: an injected `clone(CLONE_VM | CLONE_PTRACE)` with no
//! exit signal. Traced from birth (`CLONE_PTRACE` on a seized task: it stops before it runs a
//! single instruction) and killed with its tracer (`PTRACE_O_EXITKILL`), it never runs; its
//! copy of the descriptor table is emptied at once (`close_range`), so it holds no file. The
//! `execve` then only drops one reference; once the destination has the copy running
//! ([`release`]), or after [`HOLD_AT_MOST`], the helper is killed and its exit frees the
//! memory. Its zombie is the stub's child: the stub reaps it when told (`SIGCHLD`).
//!
//! When the `execve` does not happen, the helper is killed before the original runs again
//! and reaped inside it (an injected `wait4`), so that the original is left as it was.
//! Without a helper (the `clone` refused, e.g. by a `pids` limit) the migration goes on as
//! before: the `execve` frees the memory.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use crate::dump::Held;
use crate::ptrace::{Entry, Tracee};
use crate::state::VmaKind;

/// How long the old memory is kept at most when nobody says the copy runs.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(60);

/// Migrations whose helper waits for [`release`].
static WAITING: Mutex<Option<HashMap<String, Sender<()>>>> = Mutex::new(None);

/// The second user of the original's address space, until the copy runs.
#[derive(Debug)]
pub struct Keeper {
    id: String,
    helper: Tracee,
    /// The original (then the stub), to tell it of its child's end.
    pidfd: Option<OwnedFd>,
    released: Receiver<()>,
}

/// Says that the copy of migration `id` runs: its original's old memory can go.
pub fn release(id: &str) {
    let tx = WAITING
        .lock()
        .ok()
        .and_then(|mut w| w.as_mut().and_then(|m| m.remove(id)));
    if let Some(tx) = tx {
        let _ = tx.send(());
    }
}

fn forget(id: &str) {
    if let Ok(mut w) = WAITING.lock()
        && let Some(m) = w.as_mut()
    {
        m.remove(id);
    }
}

impl Keeper {
    /// Makes the helper in the frozen process `held` (before its `execve`), or says why not
    /// (the migration goes on without one).
    pub fn spawn(held: &Held, id: &str) -> Result<Self, String> {
        let leader = &held.tasks()[0];
        let t = &leader.tracee;
        let vdso = held
            .state
            .mm
            .vmas
            .iter()
            .find(|v| v.kind == VmaKind::Vdso)
            .ok_or("no [vdso]")?;
        let mut code = vec![0u8; (vdso.end - vdso.start) as usize];
        t.read_mem(vdso.start, &mut code)
            .map_err(|e| e.to_string())?;
        let at = code
            .windows(2)
            .position(|w| w == [0x0f, 0x05])
            .ok_or("no syscall instruction in the [vdso]")?;
        let entry = Entry::SingleStep(vdso.start + at as u64);
        let pidfd = crate::sys::pidfd_open(t.pid()).ok();
        // No exit signal (the low byte): the original, or the stub, hears nothing of it.
        let flags = (libc::CLONE_VM | libc::CLONE_PTRACE) as u64;
        let n = t
            .inject(
                entry,
                &leader.regs,
                "clone",
                libc::SYS_clone,
                [flags, 0, 0, 0, 0, 0],
            )
            .map_err(|e| e.to_string())?;
        let helper = Tracee::attached(Pid::from_raw(n as i32));
        let helper = match helper {
            Ok(h) => h,
            Err(e) => {
                // Unusable: killed and reaped now (it never ran).
                let _ = nix::sys::signal::kill(Pid::from_raw(n as i32), Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(n as i32), Some(WaitPidFlag::__WALL));
                reap_in(held, n as i32);
                return Err(e.to_string());
            }
        };
        let (tx, released) = channel();
        let k = Keeper {
            id: id.to_string(),
            helper,
            pidfd,
            released,
        };
        let ready = (|| -> Result<(), String> {
            // Its first stop (`CLONE_PTRACE` of a seized task: before any instruction).
            k.helper.wait().map_err(|e| e.to_string())?;
            ptrace::setoptions(
                k.helper.pid(),
                ptrace::Options::PTRACE_O_EXITKILL
                    | ptrace::Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP),
            )
            .map_err(|e| format!("setoptions: {e}"))?;
            let regs = k.helper.regs().map_err(|e| e.to_string())?;
            k.helper
                .inject(
                    entry,
                    &regs,
                    "close_range",
                    libc::SYS_close_range,
                    [0, u64::from(u32::MAX), 0, 0, 0, 0],
                )
                .map_err(|e| e.to_string())?;
            Ok(())
        })();
        if let Err(e) = ready {
            k.abandon(held);
            return Err(e);
        }
        if let Ok(mut w) = WAITING.lock() {
            w.get_or_insert_with(HashMap::new)
                .insert(id.to_string(), tx);
        }
        Ok(k)
    }

    /// The PID of the helper.
    pub fn pid(&self) -> Pid {
        self.helper.pid()
    }

    /// The `execve` did not happen: ends the helper and reaps it inside the original
    /// (`held`, still frozen), which is then as it was.
    pub fn abandon(self, held: &Held) {
        forget(&self.id);
        let pid = self.end();
        reap_in(held, pid.as_raw());
    }

    /// After the `execve`: waits until [`release`] (or [`HOLD_AT_MOST`]), then ends the helper,
    /// whose exit frees the old memory, and has the stub reap it. Returns how long the end
    /// took (the freeing).
    pub fn hold_until_released(self) -> Duration {
        let _ = self.released.recv_timeout(HOLD_AT_MOST);
        forget(&self.id);
        let t = std::time::Instant::now();
        self.end();
        let took = t.elapsed();
        if let Some(fd) = &self.pidfd {
            let _ = crate::sys::pidfd_send_signal(fd.as_fd(), libc::SIGCHLD);
        }
        took
    }

    /// Kills the helper and waits until it is gone (its memory freed): a zombie then, for its
    /// parent to reap.
    fn end(&self) -> Pid {
        let pid = self.helper.pid();
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        loop {
            match waitpid(pid, Some(WaitPidFlag::__WALL)) {
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(
                    nix::sys::wait::WaitStatus::Exited(..)
                    | nix::sys::wait::WaitStatus::Signaled(..),
                )
                | Err(_) => break,
                Ok(_) => continue,
            }
        }
        pid
    }
}

/// Reaps the dead helper `pid` inside the frozen original (its parent).
fn reap_in(held: &Held, pid: i32) {
    let leader = &held.tasks()[0];
    let Some(vdso) = held.state.mm.vmas.iter().find(|v| v.kind == VmaKind::Vdso) else {
        return;
    };
    let mut code = vec![0u8; (vdso.end - vdso.start) as usize];
    if leader.tracee.read_mem(vdso.start, &mut code).is_err() {
        return;
    }
    let Some(at) = code.windows(2).position(|w| w == [0x0f, 0x05]) else {
        return;
    };
    let r = leader.tracee.inject_raw(
        Entry::SingleStep(vdso.start + at as u64),
        &leader.regs,
        libc::SYS_wait4,
        [pid as u64, 0, libc::__WALL as u64, 0, 0, 0],
    );
    tracing::debug!(helper = pid, result = ?r, "helper reaped in the original");
}

/// [`Keeper::spawn`], or `None` with a warning (the `execve` then frees the memory).
pub fn spawn_or_warn(held: &Held, id: &str) -> Option<Keeper> {
    if let Some(why) = not_for(held) {
        tracing::debug!(migration = %id, "no helper to keep the old memory ({why}): the stub's execve frees it");
        return None;
    }
    let t = std::time::Instant::now();
    match Keeper::spawn(held, id) {
        Ok(k) => {
            tracing::debug!(migration = %id, helper = k.pid().as_raw(), elapsed = ?t.elapsed(), "old memory kept by a helper");
            Some(k)
        }
        Err(e) => {
            tracing::warn!(migration = %id, error = %e, "no helper to keep the old memory: the stub's execve frees it");
            None
        }
    }
}

/// Why no helper is made for `held`, if one is not: a stopped original (its stub stays
/// stopped and could not reap the helper, whose zombie would look like a second copy), or one
/// in a PID namespace below the agent's (the commit was seen to hang there).
fn not_for(held: &Held) -> Option<&'static str> {
    if held.state.attrs.stop_signal != 0 {
        return Some("the process is stopped");
    }
    let depth = |path: &str| {
        std::fs::read_to_string(path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|v| v.split_whitespace().count())
        })
    };
    let pid = held.tasks()[0].tracee.pid();
    if depth(&format!("/proc/{pid}/status")) != depth("/proc/self/status") {
        return Some("the process is in a PID namespace of its own");
    }
    None
}

/// [`Keeper::hold_until_released`] of `keeper`, if any.
pub fn hold(keeper: Option<Keeper>, id: &str) {
    if let Some(k) = keeper {
        let took = k.hold_until_released();
        tracing::debug!(migration = %id, elapsed = ?took, "old memory freed");
    }
}

/// [`Keeper::abandon`] of `keeper`, if any.
pub fn abandon(keeper: Option<Keeper>, held: &Held) {
    if let Some(k) = keeper {
        k.abandon(held);
    }
}
