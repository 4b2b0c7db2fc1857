//! Restoring a process tree (`ferry dump --tree`): the entry points of the one restore
//! pipeline ([`super::pipeline`]) for a tree, and the steps only a tree takes (forking a
//! member from its restored parent, recreating zombies, pipes shared between members).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::inject::Injector;
use super::{RestoreError, RestoreOptions, RestoreSummary, pipeline, task};
use crate::image::ImageReader;
use crate::ptrace::{PtraceError, Tracee};
use crate::state::{FdKind, PipeQueue, TreeState};
use crate::sys;

/// Kills every member created so far unless disarmed (the root has its own guard).
pub(super) struct Created {
    pub(super) pids: Vec<Pid>,
    pub(super) armed: bool,
}

impl Drop for Created {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pid in self.pids.iter().rev() {
            task::kill_traced(*pid);
        }
    }
}

/// Restores every process of `reader`'s tree and lets them run, with `substitutes` per member (by its PID in the image): descriptor
/// number → a descriptor of the caller that the member gets at that number, as
/// [`super::restore_with`] does for one process (a migrated tree's relay endpoints). With
/// [`RestoreOptions::stopped`] every member is left group-stopped.
pub fn restore_tree_with<R: Read + Send>(
    reader: ImageReader<R>,
    opts: RestoreOptions,
    substitutes: &HashMap<i32, HashMap<i32, std::os::fd::RawFd>>,
) -> Result<RestoreSummary, RestoreError> {
    restore_tree_with_pages(reader, opts, substitutes, None)
}

/// Writes a live migration's pre-copied pages of one member of a tree
/// ([`crate::state::VmaState::precopied`]) into its task: called with the member's PID in
/// the image, its task's PID and its areas, once they are mapped and writable, before any
/// child of it is forked (which inherits them).
pub type TreePrecopied<'a> =
    &'a (dyn Fn(i32, Pid, &[crate::state::VmaState]) -> Result<(), String> + Sync);

/// [`restore_tree_with`] of a live migration's final image, whose pre-copied pages
/// `precopied` writes. Without it an image with pre-copied pages is refused.
pub fn restore_tree_with_pages<R: Read + Send>(
    reader: ImageReader<R>,
    opts: RestoreOptions,
    substitutes: &HashMap<i32, HashMap<i32, std::os::fd::RawFd>>,
    precopied: Option<TreePrecopied<'_>>,
) -> Result<RestoreSummary, RestoreError> {
    let write = |image_pid: i32, pid: Pid, vmas: &[crate::state::VmaState], _: &[(u64, u64)]| {
        precopied.map_or(Ok(()), |w| w(image_pid, pid, vmas))
    };
    let precopied: Option<pipeline::Precopied<'_>> = precopied.map(|_| &write as _);
    pipeline::run(reader, opts, substitutes, precopied, None)
}

/// Forks a child with PID `pid` (in the parent's PID namespace) from the task behind `inj`,
/// with the `clone` `flags` given (`CLONE_FS`, `CLONE_FILES`); it arrives traced and stopped,
/// a copy of the parent (injection area included).
pub(super) fn fork(inj: &Injector<'_>, pid: i32, flags: u64) -> Result<Tracee, RestoreError> {
    let tid_addr = inj.put(8192, &(pid as u64).to_le_bytes())?;
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
    // stack_size, tls, set_tid, set_tid_size, cgroup.
    let args: Vec<u8> = [
        flags,
        0,
        0,
        0,
        libc::SIGCHLD as u64,
        0,
        0,
        0,
        tid_addr,
        1,
        0,
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .collect();
    let args_addr = inj.put(4096, &args)?;
    inj.call_raw(libc::SYS_clone3, [args_addr, args.len() as u64, 0, 0, 0, 0])?
        .map_err(|source| RestoreError::Create {
            step: if source == nix::errno::Errno::EEXIST {
                "clone3 with set_tid in the parent (pid taken)"
            } else {
                "clone3 with set_tid in the parent"
            },
            source,
        })?;
    let child = inj
        .tracee()
        .take_new_thread()
        .ok_or_else(|| RestoreError::Layout(format!("process {pid} did not report")))?;
    let t = Tracee::attached(child)?;
    // Its first stop, from PTRACE_O_TRACEFORK.
    t.wait()?;
    Ok(t)
}

/// Ends a recreated zombie the way the original ended: `exit_group(code)`, or death by its
/// signal (without a core dump).
pub(super) fn exit_as(t: &Tracee, area: u64, status: i32) -> Result<(), RestoreError> {
    let pid = t.pid();
    let mut regs = t.regs()?;
    regs.orig_rax = u64::MAX;
    regs.rip = area;
    let sig = status & 0x7f;
    if sig == 0 {
        regs.rax = libc::SYS_exit_group as u64;
        regs.rdi = ((status >> 8) & 0xff) as u64;
        t.set_regs(&regs)?;
        nix::sys::ptrace::cont(pid, None).map_err(|source| PtraceError::Request {
            op: "cont",
            pid: pid.as_raw(),
            source,
        })?;
    } else {
        sys::set_rlimit(pid, libc::RLIMIT_CORE, 0, 0).map_err(|source| RestoreError::Rlimit {
            resource: libc::RLIMIT_CORE,
            source,
        })?;
        // Default action for the signal, and nothing blocked.
        let inj = Injector::attach(t, area)?;
        let act = inj.put(4096, &[0u8; 32])?;
        inj.call(
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            [sig as u64, act, 0, 8, 0, 0],
        )?;
        t.set_sigmask(0)?;
        regs.rax = libc::SYS_getpid as u64;
        t.set_regs(&regs)?;
        let signal = Signal::try_from(sig).map_err(|source| RestoreError::Create {
            step: "zombie's signal",
            source,
        })?;
        nix::sys::ptrace::cont(pid, Some(signal)).map_err(|source| PtraceError::Request {
            op: "cont",
            pid: pid.as_raw(),
            source,
        })?;
    }
    // The tracer hears of the death first; once it has, the parent can wait for the zombie.
    loop {
        match t.wait() {
            Err(PtraceError::Gone { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(nix::sys::wait::WaitStatus::Stopped(_, s)) => {
                nix::sys::ptrace::cont(pid, Some(s)).map_err(|source| PtraceError::Request {
                    op: "cont",
                    pid: pid.as_raw(),
                    source,
                })?;
            }
            Ok(_) => {
                nix::sys::ptrace::cont(pid, None).map_err(|source| PtraceError::Request {
                    op: "cont",
                    pid: pid.as_raw(),
                    source,
                })?;
            }
        }
    }
}

/// Pipes whose descriptors are spread over several processes: made here, sized, filled with
/// their queued bytes, and reopened by each process through `/proc/RESTORER/fd/N`.
pub(super) fn make_tree_pipes(
    tree: &TreeState,
) -> Result<HashMap<u64, (OwnedFd, OwnedFd)>, RestoreError> {
    let mut holders: HashMap<u64, (Vec<i32>, Option<&PipeQueue>)> = HashMap::new();
    for p in &tree.processes {
        for f in &p.fds {
            if let FdKind::LocalPipe { ino, queue } = &f.kind {
                let e = holders.entry(*ino).or_default();
                if !e.0.contains(&p.pid) {
                    e.0.push(p.pid);
                }
                if e.1.is_none() {
                    e.1 = queue.as_ref();
                }
            }
        }
    }
    let mut out = HashMap::new();
    for (ino, (pids, queue)) in holders {
        if pids.len() < 2 {
            continue;
        }
        let what = |s: &str| format!("pipe:[{ino}]: {s}");
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| {
            RestoreError::Io {
                what: what("pipe2"),
                source: e.into(),
            }
        })?;
        if let Some(q) = queue {
            let size = i32::try_from(q.size).unwrap_or(i32::MAX);
            fcntl(w.as_fd(), FcntlArg::F_SETPIPE_SZ(size)).map_err(|e| RestoreError::Io {
                what: what("set its buffer size"),
                source: e.into(),
            })?;
            std::fs::File::from(w.try_clone().map_err(|source| RestoreError::Io {
                what: what("dup"),
                source,
            })?)
            .write_all(&q.data)
            .map_err(|source| RestoreError::Io {
                what: what(&format!("write its {} queued bytes", q.data.len())),
                source,
            })?;
        }
        out.insert(ino, (r, w));
    }
    Ok(out)
}
