//! Rebuild a process from an image by driving a new task from outside with ptrace. No code of
//! ours runs in the restored process except a transient `syscall; int3` page.
//!
//! Any failure kills the half-built task (and the PID namespace made for it): the image and
//! everything else stay as they were.

mod aio;
mod attrs;
mod fdkinds;
mod files;
mod inject;
mod ipc;
pub mod lazy;
mod mm;
mod pipeline;
mod premade;
mod pty;
mod shm;
mod sockets;
mod task;
mod tcp_fin;
mod tree;
mod tty;

use std::io::Read;

use nix::errno::Errno;

use crate::image::{ImageReader, ReadImageError};
use crate::ptrace::{PtraceError, Tracee};
use crate::state::{ProcessState, ThreadState};
use inject::Injector;
pub use premade::{Area as PremadeArea, Premade};
pub use task::PidNsMode;
pub use tree::{TreePrecopied, restore_tree_with, restore_tree_with_pages};

/// How to restore.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// What to do when the original PID is taken.
    pub pid_ns: PidNsMode,
    /// Give fds 0–2 the restoring command's own stdio.
    pub inherit_stdio: bool,
    /// Leave the process group-stopped (a `SIGSTOP` queued before the final detach) instead
    /// of running: a migrated copy waits so until its origin commits, and stays so, never
    /// running, if the restorer dies meanwhile. `SIGCONT` lets it go.
    pub stopped: bool,
    /// Leave the (root) process the restorer's child, for a restorer that waits for it and
    /// reports its end (a migration's destination). Its parent-death signal is then not set
    /// back: the restorer is not the parent it had (a migrated copy's original, a stub now,
    /// keeps it). Otherwise it is made by a short-lived intermediate process and adopted at
    /// once by the nearest child subreaper above the restorer, or init, on whom its
    /// parent-death signal is armed again: the restorer's exit does not fire it. (A restorer
    /// that is a child subreaper itself adopts it back, and its exit would fire it.)
    pub as_child: bool,
    /// Run on the rebuilt process before it runs (every task still traced and stopped, in
    /// its final state): an error ends the restore, and the process with it.
    pub check: Option<Check>,
}

/// What [`RestoreOptions::check`] is given for each process (one, or every member of a tree,
/// root first): the process as the restorer sees it, and what the image says of it.
#[derive(Debug)]
pub struct CheckInput<'a> {
    /// Its threads (in the restorer's PID namespace), the leader first.
    pub tids: &'a [nix::unistd::Pid],
    /// Its image.
    pub image: &'a ProcessState,
    /// Whether it lives in a PID namespace of its own (its PIDs seen from outside differ).
    pub new_pid_ns: bool,
    /// Whether its parent is the one the image names (a member of a restored tree) rather
    /// than the restorer.
    pub parent_restored: bool,
    /// Whether it was left the restorer's child ([`RestoreOptions::as_child`]), its
    /// parent-death signal not set back.
    pub as_child: bool,
    /// Descriptor numbers given something else than the image says: as asked (relay
    /// endpoints, the restorer's stdio) or with a warning (a pipe nobody holds any more
    /// became /dev/null).
    pub substituted_fds: &'a [i32],
    /// Carried files that were missing and were made again from the image: new inodes at
    /// the same paths.
    pub recreated_files: &'a [String],
    /// Its `smaps`, read once its areas had their flags and before its pages were written,
    /// when nothing the restore did after its memory steps could change them (no injected
    /// call that maps, advises, locks or forks): the check reads it instead of walking every
    /// page again, where it still holds (`dump::read_traced`).
    pub smaps_ahead: Option<&'a str>,
}

/// A check of rebuilt processes (one, or a whole tree); returns how long it took, or why they
/// are refused.
pub type Check = fn(&[CheckInput<'_>]) -> Result<std::time::Duration, String>;

/// The restored process.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    /// PID in the restorer's PID namespace.
    pub pid: i32,
    /// PID inside the process's own namespace when a new one was made.
    pub ns_pid: Option<i32>,
    /// Things the user should know (descriptors replaced by `/dev/null`, …).
    pub warnings: Vec<String>,
    /// The other processes of a tree, in tree order (PIDs in the restorer's namespace).
    pub others: Vec<i32>,
    /// How long [`RestoreOptions::check`] took, when there was one.
    pub checked: Option<std::time::Duration>,
    /// The (root) process was stopped by job control when dumped and is left stopped: a
    /// caller that holds it stopped must not let it go on.
    pub stopped: bool,
}

/// Why a restore failed. Nothing is left running in any case.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The image is unreadable or invalid.
    #[error(transparent)]
    Image(#[from] ReadImageError),
    /// A file the process needs changed or disappeared since the dump.
    #[error("{0}")]
    FileChanged(String),
    /// The rebuilt process is not what the image says (the restore checker).
    #[error("restore check: {0}")]
    Check(String),
    /// The network lock of the image's connections could not be removed.
    #[error(transparent)]
    NetLock(#[from] crate::netlock::NetLockError),
    /// The original PID is in use and `--pid-ns never` was given.
    #[error(
        "pid {pid} is in use (restore with --pid-ns auto to keep it inside a new PID namespace)"
    )]
    PidTaken {
        /// The PID.
        pid: i32,
    },
    /// Creating the new task failed.
    #[error("{step}")]
    Create {
        /// Which step.
        step: &'static str,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The address space cannot be laid out as the image needs.
    #[error("{0}")]
    Layout(String),
    /// Recreating a VMA failed.
    #[error("vma {start:#x}: {what}")]
    Vma {
        /// Start address.
        start: u64,
        /// Which step.
        what: String,
        /// Cause.
        #[source]
        source: Box<RestoreError>,
    },
    /// Recreating a descriptor failed.
    #[error("fd {fd}: {what}")]
    Fd {
        /// Descriptor number.
        fd: i32,
        /// Which step.
        what: String,
        /// Cause.
        #[source]
        source: Box<RestoreError>,
    },
    /// Rebuilding a socket failed.
    #[error("fd {fd}: {what}")]
    Socket {
        /// Descriptor number.
        fd: i32,
        /// Which step.
        what: String,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// Recreating a thread failed.
    #[error("thread {tid}")]
    Thread {
        /// Thread id.
        tid: i32,
        /// Cause.
        #[source]
        source: Box<RestoreError>,
    },
    /// A file operation of the restorer itself failed (writing pipe or file contents).
    #[error("{what}")]
    Io {
        /// Which step.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Making a memfd in the restorer failed.
    #[error("memfd {name:?}: {step}")]
    Memfd {
        /// Its name.
        name: String,
        /// Which step.
        step: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A SysV shared memory segment cannot be made or attached as the image needs.
    #[error("SysV shared memory id {id}: {what}")]
    SysvShm {
        /// Segment id.
        id: i32,
        /// What went wrong.
        what: String,
    },
    /// An AIO context cannot be made as the image has it.
    #[error("AIO context {start:#x}: {what}")]
    AioRing {
        /// Its ring's address in the image (the context id).
        start: u64,
        /// What went wrong.
        what: String,
    },
    /// Setting a resource limit failed.
    #[error("set resource limit {resource}")]
    Rlimit {
        /// `RLIMIT_*` number.
        resource: u32,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// Tracing the new task failed.
    #[error(transparent)]
    Ptrace(#[from] PtraceError),
    /// /proc of the new task could not be read.
    #[error(transparent)]
    Proc(#[from] crate::proc::ProcError),
}

/// Restores the process in `reader`'s image and lets it run.
pub fn restore<R: Read + Send>(
    reader: ImageReader<R>,
    opts: RestoreOptions,
) -> Result<RestoreSummary, RestoreError> {
    restore_with(reader, opts, &[])
}

/// [`restore`], with `substitutes`: pairs (descriptor number in the image, a descriptor of
/// the caller) whose descriptor the process gets at that number in place of what the image
/// says (a relay's local endpoint for a socket, a terminal or a pipe that stayed on another
/// host). Nothing the image says about those numbers is checked or built; the image's status
/// flags (`O_NONBLOCK`, `O_APPEND`) and close-on-exec flag are set. The caller keeps its
/// descriptors open until this returns. A process tree takes no substitutes.
pub fn restore_with<R: Read + Send>(
    reader: ImageReader<R>,
    opts: RestoreOptions,
    substitutes: &[(i32, std::os::fd::RawFd)],
) -> Result<RestoreSummary, RestoreError> {
    restore_with_pages(reader, opts, substitutes, None, None)
}

/// Writes the pages a live migration's destination had before the final image
/// ([`crate::state::VmaState::precopied`]) into the task (its PID), once its areas are mapped,
/// but for the areas whose ranges are listed (kept from the premade task, which has them).
pub type PrecopiedPages<'a> = &'a (
        dyn Fn(nix::unistd::Pid, &[crate::state::VmaState], &[(u64, u64)]) -> Result<(), String>
            + Sync
    );

/// [`restore_with`] of a live migration's final image, whose pre-copied pages `precopied`
/// writes. Without it an image with pre-copied pages is refused.
pub fn restore_with_pages<R: Read + Send>(
    reader: ImageReader<R>,
    opts: RestoreOptions,
    substitutes: &[(i32, std::os::fd::RawFd)],
    precopied: Option<PrecopiedPages<'_>>,
    premade: Option<Premade>,
) -> Result<RestoreSummary, RestoreError> {
    let has_precopied = reader
        .tree()
        .processes
        .iter()
        .any(|p| p.mm.vmas.iter().any(|v| !v.precopied.is_empty()));
    if has_precopied && (precopied.is_none() || reader.tree().processes.len() > 1) {
        return Err(RestoreError::Layout(
            "the image is the last part of a live migration: its pre-copied pages are only on \
             that migration's destination"
                .into(),
        ));
    }
    let tree = reader.tree();
    let lone = tree.processes.len() == 1 && tree.zombies.is_empty();
    if !lone && !substitutes.is_empty() {
        return Err(RestoreError::Layout(
            "a process tree cannot take substituted descriptors".into(),
        ));
    }
    // The one pipeline, this process a tree of one (a tree's pre-copied pages are refused
    // above; it takes no premade task).
    let root = tree.processes.first().map_or(0, |p| p.pid);
    let substitutes =
        std::collections::HashMap::from([(root, substitutes.iter().copied().collect())]);
    let write =
        |_: i32, pid: nix::unistd::Pid, vmas: &[crate::state::VmaState], kept: &[(u64, u64)]| {
            precopied.map_or(Ok(()), |w| w(pid, vmas, kept))
        };
    let precopied: Option<pipeline::Precopied<'_>> =
        precopied.filter(|_| lone).map(|_| &write as _);
    pipeline::run(reader, opts, &substitutes, precopied, premade)
}

/// The last step of the root of a restore, after the check: the restorer lets it go to the
/// parent it keeps (the nearest child subreaper above the restorer, or init; in a PID
/// namespace of its own, that namespace's init) and only then sets its parent-death signal,
/// so that this parent's death fires it, not the restorer's exit. Not for a process left the
/// restorer's child (a migrated copy, whose original — the stub — keeps the signal): warned.
pub(crate) fn arm_pdeathsig(
    tracee: &Tracee,
    task: &mut task::NewTask,
    state: &ProcessState,
    as_child: bool,
    warnings: &mut Vec<String>,
) -> Result<(), RestoreError> {
    task.release_parent()?;
    let sig = state.attrs.pdeathsig;
    if sig == 0 {
        return Ok(());
    }
    if as_child {
        warnings.push(format!(
            "parent-death signal {sig} not set back: the restored process stays the restorer's \
             child (a migrated copy; its original keeps it)"
        ));
        return Ok(());
    }
    // One call through a `syscall` instruction of the process (its injection area is gone),
    // every signal blocked meanwhile; registers and mask put back.
    let entry = crate::dump::find_syscall_instruction(tracee, &state.mm.vmas)
        .map_err(|e| RestoreError::Layout(format!("set the parent-death signal: {e}")))?;
    let (regs, mask) = (tracee.regs()?, tracee.sigmask()?);
    tracee.set_sigmask(!0)?;
    let r = tracee.inject_raw(
        crate::ptrace::Entry::SingleStep(entry),
        &regs,
        libc::SYS_prctl,
        [libc::PR_SET_PDEATHSIG as u64, u64::from(sig), 0, 0, 0, 0],
    );
    tracee.set_regs(&regs)?;
    tracee.set_sigmask(mask)?;
    match r? {
        0 => Ok(()),
        e => Err(RestoreError::Create {
            step: "prctl(PR_SET_PDEATHSIG)",
            source: Errno::from_raw(-e as i32),
        }),
    }
}

/// Refuses an image whose process had a root directory (chroot) that is not a directory
/// here any more: it would find another world under `/`.
pub(crate) fn check_root(state: &ProcessState) -> Result<(), RestoreError> {
    if state.root == "/" {
        return Ok(());
    }
    match std::fs::metadata(&state.root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(RestoreError::FileChanged(format!(
            "pid {}: its root directory {} (chroot) is not a directory any more",
            state.pid, state.root
        ))),
        Err(e) => Err(RestoreError::FileChanged(format!(
            "pid {}: its root directory {} (chroot) is gone: {e}",
            state.pid, state.root
        ))),
    }
}

/// Puts the process in its root directory (`chroot`), once everything that opens a path of
/// the image (all host paths) is done; the working directory stays as it was entered.
pub(crate) fn enter_root(inj: &Injector<'_>, state: &ProcessState) -> Result<(), RestoreError> {
    if state.root == "/" {
        return Ok(());
    }
    let path = inj.put_path(&state.root)?;
    inj.call("chroot", libc::SYS_chroot, [path, 0, 0, 0, 0, 0])
        .map_err(|e| {
            RestoreError::FileChanged(format!(
                "pid {}: enter its root directory {} (chroot): {e}",
                state.pid, state.root
            ))
        })?;
    Ok(())
}

/// The warning for memory a process shared copy-on-write with others (after a `fork`) that
/// comes back as its own copy: sharing with processes outside the image, or only between
/// siblings (see [`crate::state::cow_unrestorable_kb`]). A tree's sharing between parents and
/// children is made again.
pub(crate) fn cow_warning(states: &[&ProcessState], warnings: &mut Vec<String>) {
    let kb: u64 = crate::state::cow_unrestorable_kb(states).iter().sum();
    if kb > 0 {
        warnings.push(format!(
            "{kb} KiB of memory shared copy-on-write with processes outside the image, or only \
             between siblings, comes back as private copies"
        ));
    }
}

/// Waits until the process, let go with a `SIGSTOP` queued, is in its group stop (state `T`):
/// one that was stopped when dumped is handed over stopped, or the restore fails.
pub(crate) fn wait_group_stop(pid: nix::unistd::Pid) -> Result<(), RestoreError> {
    for _ in 0..400 {
        let stat = crate::proc::parse_stat(&crate::proc::read(pid.as_raw(), "stat")?)?;
        if stat.state == 'T' {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Err(RestoreError::Layout(format!(
        "pid {pid} was stopped when dumped but did not stop again (SIGSTOP queued)"
    )))
}

fn restore_process_attrs(inj: &Injector<'_>, state: &ProcessState) -> Result<(), RestoreError> {
    // Registrations belong to the mm, which is the image's from here on.
    for (_, register) in crate::dump::MEMBARRIER_PRIVATE {
        if state.attrs.membarrier & register != 0 {
            inj.call_raw(libc::SYS_membarrier, [u64::from(register), 0, 0, 0, 0, 0])?
                .map_err(|e| {
                    RestoreError::Layout(format!(
                        "membarrier registration (MEMBARRIER_CMD {register}) not made again: {e}"
                    ))
                })?;
        }
    }
    match &state.cwd_removed {
        Some(d) => files::enter_removed_dir(inj, state.pid, d)?,
        None => {
            let cwd = inj.put_path(&state.cwd)?;
            inj.call("chdir", libc::SYS_chdir, [cwd, 0, 0, 0, 0, 0])
                .map_err(|e| {
                    RestoreError::FileChanged(format!("working directory {}: {e}", state.cwd))
                })?;
        }
    }
    attrs::set_loginuid(inj, state.attrs.loginuid)?;
    inj.call(
        "umask",
        libc::SYS_umask,
        [u64::from(state.umask), 0, 0, 0, 0, 0],
    )?;
    // Every signal's action in one stop: the structures side by side in the scratch area,
    // then a batch of `rt_sigaction` calls.
    let mut acts = Vec::with_capacity(state.signals.actions.len() * 32);
    for a in &state.signals.actions {
        for w in [a.handler, a.flags, a.restorer, a.mask] {
            acts.extend_from_slice(&w.to_le_bytes());
        }
    }
    if !acts.is_empty() {
        let base = inj.put(4096, &acts)?;
        let calls: Vec<(i64, [u64; 6])> = state
            .signals
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let addr = base + 32 * i as u64;
                (
                    libc::SYS_rt_sigaction,
                    [u64::from(a.signo), addr, 0, 8, 0, 0],
                )
            })
            .collect();
        for (a, r) in state.signals.actions.iter().zip(inj.batch(&calls)?) {
            inj.tracee().checked("rt_sigaction", r).map_err(|e| {
                RestoreError::Layout(format!(
                    "the action of signal {} not set again: {e}",
                    a.signo
                ))
            })?;
        }
    }
    for si in &state.signals.shared_pending {
        let addr = inj.put(4096, &si.raw)?;
        inj.call(
            "rt_sigqueueinfo",
            libc::SYS_rt_sigqueueinfo,
            [state.pid as u64, u64::from(si.signo), addr, 0, 0, 0],
        )?;
    }
    inj.call(
        "personality",
        libc::SYS_personality,
        [u64::from(state.personality), 0, 0, 0, 0, 0],
    )?;
    // (Sessions are set as the tasks are created: `pipeline::root_session`.)
    // A stub made as our child asked for SIGKILL on our exit; the image's parent-death
    // signal is set after the credentials (which clear it).
    inj.call(
        "prctl(PR_SET_PDEATHSIG)",
        libc::SYS_prctl,
        [libc::PR_SET_PDEATHSIG as u64, 0, 0, 0, 0, 0],
    )?;
    Ok(())
}

fn restore_thread_attrs(
    inj: &Injector<'_>,
    state: &ProcessState,
    t: &ThreadState,
) -> Result<(), RestoreError> {
    for si in &t.pending {
        let addr = inj.put(4096, &si.raw)?;
        inj.call(
            "rt_tgsigqueueinfo",
            libc::SYS_rt_tgsigqueueinfo,
            [
                state.pid as u64,
                t.tid as u64,
                u64::from(si.signo),
                addr,
                0,
                0,
            ],
        )?;
    }
    let ss = &t.sigaltstack;
    let mut stack = Vec::with_capacity(24);
    stack.extend_from_slice(&ss.sp.to_le_bytes());
    // SS_ONSTACK is a report, not a request.
    stack.extend_from_slice(&(ss.flags & !(libc::SS_ONSTACK as u32)).to_le_bytes());
    stack.extend_from_slice(&0u32.to_le_bytes());
    stack.extend_from_slice(&ss.size.to_le_bytes());
    let addr = inj.put(4096, &stack)?;
    inj.call("sigaltstack", libc::SYS_sigaltstack, [addr, 0, 0, 0, 0, 0])?;
    if let Some(r) = t.rseq {
        inj.call(
            "rseq",
            libc::SYS_rseq,
            [r.ptr, u64::from(r.len), 0, u64::from(r.sig), 0, 0],
        )?;
    }
    if t.robust_list.1 != 0 {
        inj.call(
            "set_robust_list",
            libc::SYS_set_robust_list,
            [t.robust_list.0, t.robust_list.1, 0, 0, 0, 0],
        )?;
    }
    inj.call(
        "set_tid_address",
        libc::SYS_set_tid_address,
        [t.clear_child_tid, 0, 0, 0, 0, 0],
    )?;
    // The leader makes every other thread.
    let leader = state.threads.first().filter(|l| l.tid != t.tid);
    attrs::restore_thread_own(inj, t, leader)?;
    Ok(())
}

/// Creates every thread after the first with `clone3(CLONE_THREAD, set_tid = {TID})` run by the
/// leader, and gives each its own thread state. They arrive stopped through
/// `PTRACE_O_TRACECLONE`.
fn create_threads<'s>(
    inj: &Injector<'_>,
    state: &'s ProcessState,
) -> Result<Vec<(Tracee, &'s ThreadState)>, RestoreError> {
    let mut out = Vec::with_capacity(state.threads.len().saturating_sub(1));
    for ts in state.threads.iter().skip(1) {
        let flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        let tid_addr = inj.put(8192, &(ts.tid as u64).to_le_bytes())?;
        // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
        // stack_size, tls, set_tid, set_tid_size, cgroup.
        let args: Vec<u8> = [flags, 0, 0, 0, 0, 0, 0, 0, tid_addr, 1, 0]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let args_addr = inj.put(4096, &args)?;
        inj.call(
            "clone3(CLONE_THREAD)",
            libc::SYS_clone3,
            [args_addr, args.len() as u64, 0, 0, 0, 0],
        )
        .map_err(|e| RestoreError::Thread {
            tid: ts.tid,
            source: Box::new(e.into()),
        })?;
        let tid = inj
            .tracee()
            .take_new_thread()
            .ok_or_else(|| RestoreError::Layout(format!("thread {} did not report", ts.tid)))?;
        let t = Tracee::attached(tid)?;
        // Its first stop, from PTRACE_O_TRACECLONE.
        t.wait()?;
        let tinj = inj.for_thread(&t)?;
        restore_thread_attrs(&tinj, state, ts).map_err(|e| RestoreError::Thread {
            tid: ts.tid,
            source: Box::new(e),
        })?;
        out.push((t, ts));
    }
    Ok(out)
}

/// The last injected steps of one thread, in the order the kernel allows: seccomp while still
/// root, capabilities kept across the id change, the ids, then what an id change resets.
/// `pdeathsig` says whether the image's parent-death signal is set back (not on a process
/// left the restorer's child).
fn lock_down(
    inj: &Injector<'_>,
    state: &ProcessState,
    thread: &ThreadState,
    leader: bool,
    pdeathsig: bool,
    warnings: &mut Vec<String>,
) -> Result<(), RestoreError> {
    attrs::restore_seccomp(inj, &thread.seccomp)?;
    attrs::before_creds(inj, &state.attrs)?;
    restore_creds(inj, state)?;
    attrs::after_creds(inj, state, thread, leader, pdeathsig, warnings)
}

fn restore_creds(inj: &Injector<'_>, state: &ProcessState) -> Result<(), RestoreError> {
    let c = &state.creds;
    let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
    let addr = if groups.is_empty() {
        0
    } else {
        inj.put(4096, &groups)?
    };
    inj.call(
        "setgroups",
        libc::SYS_setgroups,
        [c.groups.len() as u64, addr, 0, 0, 0, 0],
    )?;
    inj.call(
        "setresgid",
        libc::SYS_setresgid,
        [
            u64::from(c.gids[0]),
            u64::from(c.gids[1]),
            u64::from(c.gids[2]),
            0,
            0,
            0,
        ],
    )?;
    inj.call(
        "setfsgid",
        libc::SYS_setfsgid,
        [u64::from(c.gids[3]), 0, 0, 0, 0, 0],
    )?;
    inj.call(
        "setresuid",
        libc::SYS_setresuid,
        [
            u64::from(c.uids[0]),
            u64::from(c.uids[1]),
            u64::from(c.uids[2]),
            0,
            0,
            0,
        ],
    )?;
    // setresuid made the filesystem uid the effective one; another one needs CAP_SETUID,
    // which leaving uid 0 took out of the effective set: raised again from what was kept.
    if c.uids[3] != c.uids[1] {
        attrs::raise_kept_caps(inj, &state.attrs)?;
    }
    inj.call(
        "setfsuid",
        libc::SYS_setfsuid,
        [u64::from(c.uids[3]), 0, 0, 0, 0, 0],
    )?;
    Ok(())
}
