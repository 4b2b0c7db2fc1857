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
use nix::sys::ptrace::Options;

use crate::image::{ImageReader, ReadImageError};
use crate::ptrace::{PtraceError, Tracee};
use crate::state::{ProcessState, ThreadState};
use crate::sys;
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

/// Address ranges.
type Ranges = Vec<(u64, u64)>;

/// The areas of `premade` the final image has as they are (a run of private anonymous areas
/// covering exactly one premade area, with the same `MAP_NORESERVE`): kept, with the pages
/// written into them. Returns the image's areas kept and the premade areas they cover.
fn premade_kept(mm: &crate::state::MmState, premade: &[PremadeArea]) -> (Ranges, Ranges) {
    use crate::state::{VmaKind, vmflag};
    let mut vmas = Vec::new();
    let mut areas = Vec::new();
    for p in premade {
        let over: Vec<_> = mm
            .vmas
            .iter()
            .filter(|v| v.start < p.end && p.start < v.end)
            .collect();
        let fits = over.first().is_some_and(|v| v.start == p.start)
            && over.last().is_some_and(|v| v.end == p.end)
            && over.windows(2).all(|w| w[0].end == w[1].start)
            && over.iter().all(|v| {
                !v.shared
                    && !v.growsdown
                    && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap)
                    && (v.flags & vmflag::NORESERVE != 0) == p.noreserve
            });
        if fits {
            vmas.extend(over.iter().map(|v| (v.start, v.end)));
            areas.push((p.start, p.end));
        }
    }
    (vmas, areas)
}

/// [`restore_with`] of a live migration's final image, whose pre-copied pages `precopied`
/// writes. Without it an image with pre-copied pages is refused.
pub fn restore_with_pages<R: Read + Send>(
    mut reader: ImageReader<R>,
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
    if reader.tree().processes.len() > 1 || !reader.tree().zombies.is_empty() {
        if !substitutes.is_empty() {
            return Err(RestoreError::Layout(
                "a process tree cannot take substituted descriptors".into(),
            ));
        }
        return tree::restore_tree(reader, opts);
    }
    let start = std::time::Instant::now();
    let substitutes: std::collections::HashMap<i32, std::os::fd::RawFd> =
        substitutes.iter().copied().collect();
    let state = reader.state().clone();
    let mut warnings = Vec::new();
    let thread = state
        .threads
        .first()
        .ok_or_else(|| RestoreError::Layout("the image has no thread".into()))?;
    // The restorer's own memfds, which the task's descriptors and mappings open.
    let memfds = fdkinds::Memfds::create(&[&state])?;
    let deleted_maps = mm::DeletedFiles::create(&[&state])?;
    // Pseudo-terminal pairs made anew, held by the restorer until the restore ends.
    let ptys = pty::Ptys::create(&[&state], &mut warnings)?;
    cow_warning(&[&state], &mut warnings);
    // Every file the process needs is checked before a task exists.
    let fd_plan = files::plan_with(
        &state,
        opts.inherit_stdio,
        &std::collections::HashMap::new(),
        files::Made {
            memfds: &memfds,
            ptys: &ptys,
        },
        &mut std::collections::HashMap::new(),
        &substitutes,
        &mut warnings,
    )?;

    check_root(&state)?;
    tracing::debug!(elapsed = ?start.elapsed(), "files checked");
    // A live migration's task made ahead, if it is the one this image needs (else dropped:
    // it dies).
    let premade = premade.filter(|p| {
        p.want == state.pid
            && !state
                .mm
                .vmas
                .iter()
                .any(|v| v.start < p.area + inject::AREA_LEN && p.area < v.end)
    });
    let mut premade_pidfd = None;
    let (mut task, tracee, premade_at, premade_areas) = match premade {
        Some(Premade {
            task,
            tracee,
            area,
            areas,
            pidfd_in_task,
            ..
        }) => {
            attrs::join_cgroups(task.pid, &state.attrs.cgroups, &mut warnings);
            tracing::debug!(elapsed = ?start.elapsed(), areas = areas.len(), "premade task taken");
            premade_pidfd = Some(pidfd_in_task);
            (task, tracee, Some(area), areas)
        }
        None => {
            let task = task::create(state.pid, opts.pid_ns, false, opts.as_child)?;
            tracing::debug!(elapsed = ?start.elapsed(), "task created");
            // Into its cgroups before any memory is touched, so that it is charged where it belongs.
            attrs::join_cgroups(task.pid, &state.attrs.cgroups, &mut warnings);
            // EXITKILL: should the restorer die half-way, the half-built task dies with it.
            // TRACECLONE: the threads we create arrive traced and stopped.
            let tracee = Tracee::seize(
                task.pid,
                Options::PTRACE_O_EXITKILL
                    | Options::PTRACE_O_TRACESYSGOOD
                    | Options::PTRACE_O_TRACECLONE
                    // The filters restored near the end must not apply to the restore's own calls.
                    | Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP),
            )?;
            tracing::trace!(elapsed = ?start.elapsed(), "task seize requested");
            tracee.interrupt()?;
            tracing::trace!(elapsed = ?start.elapsed(), "task stopped");
            // Nothing may be delivered while the task is being built; the image's mask comes last.
            tracee.set_sigmask(u64::MAX)?;
            tracing::trace!(elapsed = ?start.elapsed(), "task seized");
            (task, tracee, None, Vec::new())
        }
    };

    let maps = mm::current_maps(task.pid.as_raw())?;
    let inj = match premade_at {
        Some(area) => {
            let inj = Injector::attach(&tracee, area)?;
            // Made before the descriptor plan, the task has our pidfd at another number.
            if let (Some(q), Some(p)) = (premade_pidfd, fd_plan.pidfd())
                && q != p
            {
                inj.call(
                    "dup3(pidfd)",
                    libc::SYS_dup3,
                    [q as u64, p as u64, libc::O_CLOEXEC as u64, 0, 0, 0],
                )?;
            }
            inj
        }
        None => {
            let vdso_syscall = mm::find_vdso_syscall(&tracee, &maps)?;
            let area = mm::pick_area(&maps, &state.mm)?;
            let inj = Injector::bootstrap(&tracee, vdso_syscall, area)?;
            tracing::trace!(elapsed = ?start.elapsed(), "injector bootstrapped");
            // The task is a copy of us, with our thread's rseq area registered; unregister it
            // before its memory goes, or the next return to user mode faults beyond repair.
            if let Some((ptr, len, sig)) = tracee.rseq()? {
                inj.call(
                    "rseq(unregister)",
                    libc::SYS_rseq,
                    [ptr, u64::from(len), 1, u64::from(sig), 0, 0],
                )?;
            }
            inj
        }
    };
    // Shared memory objects are made by the task while it still has a whole address space
    // of its own to make them in.
    // Its own IPC namespace first: its shared memory segments are made in it.
    let ipc_ns = ipc::make(&inj, &state)?;
    let shared = shm::SharedMemory::prepare(&inj, &[&state], ipc_ns.as_ref())?;
    let t0 = std::time::Instant::now();
    tracing::debug!(elapsed = ?start.elapsed(), "injector ready");
    // A lone process has no parent to keep pages from; a live migration's keeps the areas
    // of its premade task that the image has as they are, with their pages.
    mm::kept_from_parent(&state.mm, None, &maps)?;
    let (kept, kept_areas) = premade_kept(&state.mm, &premade_areas);
    mm::wipe_and_place_vdso(&inj, &maps, &state.mm, &kept_areas)?;
    mm::map_vmas(&inj, &state.mm, &memfds, &deleted_maps, &shared, &kept)?;
    mm::trim_precopied(&inj, &state.mm, &kept)?;
    mm::advise(&inj, &state.mm)?;
    tracing::debug!(elapsed = ?t0.elapsed(), kept = kept.len(), "vmas mapped");
    // For the check: `smaps` before the pages, when the memory steps after them (protect;
    // lock and AIO rings not: the image has none) change nothing it tells.
    // Read on a thread of its own while the restore goes on (no later step changes what it
    // tells; a live migration's kept areas hold their pages already, so it walks them all).
    let smaps_ahead = match opts.check {
        Some(_) if mm::flags_set_before_pages(&state.mm) => {
            Some(crate::verify::smaps_ahead(task.pid.as_raw()))
        }
        _ => None,
    };
    mm::write_pages(&inj, &state, &mut reader)?;
    if let Some(write) = precopied {
        write(task.pid, &state.mm.vmas, &kept).map_err(RestoreError::Layout)?;
    }
    tracing::debug!(elapsed = ?t0.elapsed(), "pages written");
    aio::restore_rings(&inj, &state.mm)?;
    mm::protect(&inj, &state.mm)?;
    mm::lock(&inj, &state.mm)?;
    let address_space_calls = crate::ptrace::address_space_calls();
    // After the wipe: PR_SET_MM_MAP refuses a new exe while the old executable is mapped.
    mm::set_mm(&inj, &state)?;

    files::restore(&inj, &fd_plan, &state, &mut warnings)?;
    sockets::send_in_flight(&[(&state, task.pid)])?;
    // Seals after the mappings and descriptors: they may forbid what those needed.
    memfds.seal()?;
    // A process that led a process group of a session it did not lead is put back so when
    // that session is the restorer's own (a restore from the session it was dumped in):
    // its own group again, in the same session. Otherwise (another session, which it
    // cannot join, or a new PID namespace) it leads a new session, an expected change the
    // restore checker names. A process in a group it did not lead leads a new session too:
    // joining the restorer's group would tie it to a job it was not part of.
    let same_session = state.pgid == state.pid
        && state.sid != state.pid
        && task.ns_init.is_none()
        && nix::unistd::getsid(None).is_ok_and(|sid| sid.as_raw() == state.sid);
    restore_process_attrs(&inj, &state, !same_session)?;
    if same_session {
        inj.call("setpgid", libc::SYS_setpgid, [0; 6])?;
    }
    // A session leader whose terminal is still there takes it back (it leads a new session
    // now, with the same PID); it can be the foreground only of its own group.
    if let Some(tty) = state.attrs.ctty.as_ref().filter(|_| state.sid == state.pid)
        && let tty = ptys.ctty(tty)
        && tty::take(&inj, &tty, &mut warnings)?
        && tty.fg_pgid == state.pgid
    {
        tty::set_foreground(&inj, &tty, state.pid, &mut warnings)?;
    }
    restore_thread_attrs(&inj, &state, thread)?;
    // The other threads share everything set so far (memory, fds, handlers).
    let threads = create_threads(&inj, &state)?;
    for (t, ts) in &threads {
        attrs::join_thread_cgroups(t.pid(), &ts.cgroups, &mut warnings);
    }
    // Timers and I/O signals may go to any thread: all of them exist now.
    attrs::restore_timers(&inj, &state.attrs)?;
    attrs::restore_fd_owners(&inj, &state)?;
    // The restore maps nothing more of its own: new mappings may be locked from here on.
    mm::lock_future(&inj, &state.mm)?;
    mm::late_madvise_fault(&inj, &state.mm)?;
    // Post-copy: the missing pages' userfaultfd, while the task still has our privileges.
    lazy::arm(&inj, task.pid, &state.mm)?;
    // Limits late, so that none of them (RLIMIT_AS, RLIMIT_NOFILE) gets in the way of the
    // restore's own calls.
    for r in &state.rlimits {
        sys::set_rlimit(task.pid, r.resource, r.cur, r.max).map_err(|source| {
            RestoreError::Rlimit {
                resource: r.resource,
                source,
            }
        })?;
    }
    // Its root last of all that opens paths (they are the host's).
    enter_root(&inj, &state)?;
    // Credentials last: once they drop, the task could no longer do the privileged steps.
    // They belong to each thread, not to the process.
    for (t, ts) in &threads {
        lock_down(&inj.for_thread(t)?, &state, ts, false, false, &mut warnings)?;
    }
    // The root's parent-death signal waits for its parent (see `arm_pdeathsig`).
    lock_down(&inj, &state, thread, true, false, &mut warnings)?;
    attrs::set_oom_score_adj(task.pid, &state.attrs, &mut warnings);
    attrs::set_coredump_filter(task.pid, &state.attrs, &mut warnings);
    attrs::set_sched(task.pid, &thread.sched, &mut warnings)?;
    attrs::set_ioprio(task.pid, thread, &mut warnings);
    for (t, ts) in &threads {
        attrs::set_sched(t.pid(), &ts.sched, &mut warnings)?;
        attrs::set_ioprio(t.pid(), ts, &mut warnings);
    }

    // The threads go first: their registers no longer point into the injection area, which
    // the leader unmaps last.
    for (t, ts) in &threads {
        t.set_xstate(&ts.xstate)?;
        t.set_sigmask(ts.sigmask)?;
        t.set_regs(&ts.regs.resumed().into())?;
    }
    tracee.set_xstate(&thread.xstate)?;
    inj.finish()?;
    // The mask only now: a signal it lets through (a timer that fired meanwhile) must not
    // stop the last injected call; it is delivered once the task runs.
    tracee.set_sigmask(thread.sigmask)?;
    tracee.set_regs(&thread.regs.resumed().into())?;
    shared.mark_removed()?;
    // Nothing since the memory steps changed an area (the injection area's own `munmap` by
    // `finish` is not counted: it is gone, and no other area lies in its range).
    let smaps_ahead = smaps_ahead
        .and_then(crate::verify::SmapsAhead::join)
        .filter(|_| crate::ptrace::address_space_calls() == address_space_calls);
    let checked = match opts.check {
        Some(check) => {
            let tids: Vec<_> = std::iter::once(tracee.pid())
                .chain(threads.iter().map(|(t, _)| t.pid()))
                .collect();
            Some(
                check(&[CheckInput {
                    tids: &tids,
                    image: &state,
                    new_pid_ns: task.ns_init.is_some(),
                    parent_restored: false,
                    as_child: opts.as_child,
                    substituted_fds: &fd_plan.replaced_fds,
                    recreated_files: &fd_plan.recreated_files,
                    smaps_ahead: smaps_ahead.as_deref(),
                }])
                .map_err(RestoreError::Check)?,
            )
        }
        None => None,
    };
    arm_pdeathsig(&tracee, &mut task, &state, opts.as_child, &mut warnings)?;
    // Stopped by job control when dumped: stopped again, the same way.
    let stop = opts.stopped || state.attrs.stop_signal != 0;
    if !stop {
        for (t, _) in &threads {
            t.detach(None)?;
        }
    }
    if stop {
        // Queued while every thread is still in a ptrace stop: the first thread back on its
        // way to user mode takes it and stops the whole group before any of them runs a
        // single instruction. Not traced any more, it stays stopped whatever happens to us.
        nix::sys::signal::kill(task.pid, nix::sys::signal::Signal::SIGSTOP).map_err(|source| {
            RestoreError::Create {
                step: "queue SIGSTOP",
                source,
            }
        })?;
        for (t, _) in &threads {
            t.detach(None)?;
        }
    }
    tracee.detach(None)?;
    if state.attrs.stop_signal != 0 {
        wait_group_stop(task.pid)?;
    }
    shared.finish();
    task.disarm();
    tracing::debug!(elapsed = ?t0.elapsed(), "restored");

    Ok(RestoreSummary {
        pid: task.pid.as_raw(),
        ns_pid: task.ns_init.map(|_| state.pid),
        warnings,
        others: Vec::new(),
        checked,
        stopped: state.attrs.stop_signal != 0,
    })
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

fn restore_process_attrs(
    inj: &Injector<'_>,
    state: &ProcessState,
    setsid: bool,
) -> Result<(), RestoreError> {
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
    for a in &state.signals.actions {
        let mut act = Vec::with_capacity(32);
        for w in [a.handler, a.flags, a.restorer, a.mask] {
            act.extend_from_slice(&w.to_le_bytes());
        }
        let addr = inj.put(4096, &act)?;
        inj.call(
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            [u64::from(a.signo), addr, 0, 8, 0, 0],
        )?;
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
    // A restored process leads its own session: it is detached from the restoring command's
    // terminal and job control, like a daemon. (A tree sets its sessions as it is created.)
    if setsid {
        inj.call("setsid", libc::SYS_setsid, [0; 6])?;
    }
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
