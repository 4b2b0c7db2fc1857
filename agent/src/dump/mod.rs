//! Checkpoint one running process: freeze it with ptrace, read its state, stream it into an
//! image, then end it (or let it go on).
//!
//! Nothing is written before every check has passed: what the engine cannot restore is refused
//! while the process is untouched, and any failure after the freeze gives the process back
//! exactly as it was.

mod attrs;
pub mod autocodec;
mod fdkinds;
mod files;
pub mod freeze;
pub(crate) mod mm;
pub(crate) mod pty;
mod shm;
pub(crate) mod sockdiag;
mod sockets;
pub mod track;
mod tree;
pub mod watch;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::image::{Codec, ImageWriter, WriteImageError, WriteStats};
use crate::proc::{self, ProcError};
use crate::ptrace::{Entry, PtraceError, Tracee};
use crate::state::{
    CarriedDir, CredsState, FdOwner, FileRef, MmState, ProcessState, RlimitState, RseqState,
    SigactionState, SigaltstackState, SiginfoState, SignalsState, ThreadState, TreeState, VmaKind,
};
use crate::sys;
use freeze::Frozen;

pub use attrs::MEMBARRIER_PRIVATE;
pub use files::{
    DEFAULT_MAX_DELETED_FILE_SIZE, EPOLL_PRIVATE_BITS, EPOLLET, EPOLLEXCLUSIVE, EPOLLONESHOT,
    STORED_BUDGET, carried, epoll_disarmed,
};
pub use mm::identity_of;
pub use sockets::{SocketOptions, UnacceptedData};
pub use tree::{HeldTree, dump_tree, hold_tree, hold_tree_with, precheck_tree};

/// What `dump` may be asked to do besides the default.
#[derive(Debug, Clone, Copy)]
pub struct DumpOptions {
    /// Let the process run on after the image is written instead of ending it.
    pub leave_running: bool,
    /// Page compression.
    pub codec: Codec,
    /// Largest file deleted while open whose contents are stored; a larger one is refused.
    pub max_deleted_file_size: u64,
    /// Checkpoint established TCP connections (`TCP_REPAIR`).
    pub tcp_established: bool,
    /// Keep Unix sockets whose peer is outside the process.
    pub ext_unix_sk: bool,
    /// The process is being migrated and its TCP and UDP sockets (and fds 0–2 of any kind)
    /// stay on this host, relayed: record them as they are, without `TCP_REPAIR` and without
    /// refusing established connections; their queued bytes stay in the sockets.
    pub relay_sockets: bool,
    /// What to do with data a Unix socket wrote into a connection its listener (of the dump)
    /// has not accepted yet: `dump` and `dump --tree` take it when they end the process.
    pub unaccepted_data: sockets::UnacceptedData,
    /// Apply what `smaps` says of the VMAs (flags, memory shared copy-on-write) last, after
    /// everything else is read: its page-table walk then runs beside all of that. A dump
    /// applies it before it runs anything in the process (the flags it refuses, it refuses
    /// first); a read-back of a restored process, whose image had nothing to refuse, last.
    pub vma_flags_last: bool,
    /// Seal the image file under this key (docs/image-format.md, "Sealed images").
    pub seal: Option<crate::image::seal::Key>,
    /// Post-copy to a destination that takes absent runs: the large private anonymous areas
    /// whose pages can follow the copy ([`mm::follow_unwalked`]) are not walked for their
    /// present pages; their whole range is named `precopied` (the walk runs once the copy
    /// does, `migrate/lazy.rs`).
    pub pages_follow: bool,
}

impl DumpOptions {
    fn sockets(&self) -> SocketOptions {
        SocketOptions {
            tcp_established: self.tcp_established,
            ext_unix_sk: self.ext_unix_sk,
            leave_running: self.leave_running,
            relay: self.relay_sockets,
            unaccepted_data: self.unaccepted_data,
        }
    }
}

impl Default for DumpOptions {
    fn default() -> Self {
        Self {
            leave_running: false,
            codec: Codec::default(),
            max_deleted_file_size: DEFAULT_MAX_DELETED_FILE_SIZE,
            tcp_established: false,
            ext_unix_sk: false,
            relay_sockets: false,
            unaccepted_data: sockets::UnacceptedData::Refuse,
            vma_flags_last: false,
            seal: None,
            pages_follow: false,
        }
    }
}

impl DumpOptions {
    /// For a dump that writes an image and ends the process (`ferry dump` without
    /// `--leave-running`): it may accept the process's pending Unix connections to read
    /// their data once everything else is read.
    pub fn ending(mut self) -> Self {
        if !self.leave_running {
            self.unaccepted_data = sockets::UnacceptedData::Take;
        }
        self
    }
}

/// What a dump produced.
#[derive(Debug, Clone)]
pub struct DumpSummary {
    /// The process.
    pub pid: i32,
    /// Image statistics.
    pub stats: WriteStats,
    /// How long the process was stopped.
    pub frozen: Duration,
    /// From the first seize until every task was stopped.
    pub seize: Duration,
    /// Tasks (threads) stopped.
    pub tasks: usize,
    /// Things the user should know (children left behind, …).
    pub warnings: Vec<String>,
    /// Processes in the image (with `--tree`; 1 otherwise), zombies not counted.
    pub processes: usize,
}

/// Why a dump failed. The process keeps running in every case.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The process uses something the engine cannot checkpoint yet.
    #[error("{0}")]
    Unsupported(String),
    /// The process died while it was dumped (a frozen process does not exit by itself: it was
    /// killed). What failed because of it is not the point, so it is not the message.
    #[error("pid {pid} died during the dump ({how})")]
    Died {
        /// The PID.
        pid: i32,
        /// What is known of its end.
        how: String,
    },
    /// The target is not a process we may dump.
    #[error("pid {pid}: {why}")]
    BadTarget {
        /// The PID.
        pid: i32,
        /// Why not.
        why: String,
    },
    /// Reading `/proc` failed.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// Tracing the process failed.
    #[error(transparent)]
    Ptrace(#[from] PtraceError),
    /// Writing the image failed.
    #[error("write image")]
    Image(#[source] WriteImageError),
    /// A file operation on the image failed.
    #[error("{step} {path}")]
    ImageFile {
        /// `create`, `fsync`, `rename`.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Examining a socket failed.
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
    /// A file deleted while open is larger than the image may store.
    #[error("fd {fd}: {path} (deleted) is {size} bytes, more than --max-deleted-file-size {max}")]
    DeletedFileTooLarge {
        /// Descriptor.
        fd: i32,
        /// The path it had.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Deleted files and queued pipe bytes together exceed what one image holds.
    #[error(
        "files deleted while open and queued pipe bytes add up to {total} bytes, more than the {max} an image holds"
    )]
    StoredContentsTooLarge {
        /// Bytes to store.
        total: u64,
        /// Most an image holds.
        max: u64,
    },
    /// What failed concerns a member of a dumped tree other than its root.
    #[error("pid {pid} (a member of the tree)")]
    Member {
        /// The member.
        pid: i32,
        /// What failed.
        #[source]
        source: Box<DumpError>,
    },
    /// The image path names something that is not a regular file.
    #[error("{}: {kind} exists there; refusing to replace it with an image (give the path of a new or regular file)", path.display())]
    BadOutput {
        /// The path.
        path: PathBuf,
        /// What is there (`a directory`, `a character device`, …).
        kind: &'static str,
    },
    /// The network lock could not be installed.
    #[error(transparent)]
    NetLock(#[from] crate::netlock::NetLockError),
    /// Ending the process after the dump failed.
    #[error("end pid {pid} after the dump")]
    Kill {
        /// The PID.
        pid: i32,
        /// Cause.
        #[source]
        source: Errno,
    },
}

/// Checkpoints `pid` into the image file `out`.
pub fn dump(pid: Pid, out: &Path, opts: DumpOptions) -> Result<DumpSummary, DumpError> {
    check_output(out)?;
    let opts = opts.ending();
    let held = hold(pid, opts)?;
    let tree = held.tree();
    let stats = write_image(
        &[&held.frozen.leader().tracee],
        &tree,
        out,
        opts.codec,
        opts.seal.as_ref(),
    )
    .map_err(|e| freeze::explain_death(pid, e))?;
    tracing::debug!(elapsed = ?held.since.elapsed(), "image written");
    // The image is durable: only now may the original go.
    let frozen_for = held.since.elapsed();
    let (seize, tasks) = (held.seize, held.frozen.tasks.len());
    let warnings = held.warnings.clone();
    if opts.leave_running {
        held.thaw()?;
    } else {
        held.end()?;
    }
    Ok(DumpSummary {
        pid: pid.as_raw(),
        stats,
        frozen: frozen_for,
        seize,
        tasks,
        warnings,
        processes: 1,
    })
}

/// A process frozen with its state collected, held until the caller decides: write its image
/// (any number of times, to any writer), then [`Held::thaw`] it or [`Held::end`] it. Dropping
/// it thaws the process, so any failure in between gives it back untouched.
///
/// The thread that called [`hold`] is the tracer: every method must be called from it.
#[derive(Debug)]
pub struct Held {
    /// The collected state.
    pub state: ProcessState,
    /// Things the user should know.
    pub warnings: Vec<String>,
    /// From the first seize until every task was stopped.
    pub seize: Duration,
    /// When the freeze began.
    pub since: Instant,
    // Declared before `frozen`, so dropped first: the sockets leave repair mode before the
    // process runs again.
    socks: sockets::SocketDump,
    frozen: Frozen,
}

/// Freezes `pid` and collects its state; see [`Held`].
pub fn hold(pid: Pid, opts: DumpOptions) -> Result<Held, DumpError> {
    // Refuse what /proc already shows before stopping anything, so a refused process is never
    // even frozen.
    precheck_only(pid, opts)?;
    // The scan of other processes' descriptors the check made is used again.
    hold_inner(pid, opts, |_| Ok(()), None)
}

/// What [`hold`] refuses before it freezes anything (a live migration asks before it starts
/// tracking writes, which leaves marks in /proc that the check would take for the process's
/// own).
pub fn precheck_only(pid: Pid, opts: DumpOptions) -> Result<(), DumpError> {
    files::forget_outside_scan();
    precheck(pid, &opts, false, false)
}

/// [`hold`] without its check before the freeze (the caller made it: [`precheck_only`]), and
/// with `under_freeze` run once every thread is stopped, before anything is collected (a live
/// migration's last scan of written pages, and the end of its write tracking).
pub fn hold_with(
    pid: Pid,
    opts: DumpOptions,
    under_freeze: impl FnOnce(&Frozen) -> Result<(), DumpError>,
) -> Result<Held, DumpError> {
    files::forget_outside_scan();
    hold_inner(pid, opts, under_freeze, None)
}

/// `smaps` read while the process still ran, with the [`watch::Watch`] that saw its system
/// calls since: [`SmapsAhead::read`].
#[derive(Debug)]
pub struct SmapsAhead {
    text: String,
    watch: watch::Watch,
}

impl SmapsAhead {
    /// Seizes the running process's threads, watching their system calls, and reads its
    /// `smaps` meanwhile (the threads run on; each stops only at its system calls).
    pub fn read(pid: Pid) -> Result<Self, DumpError> {
        let mut watch = watch::Watch::start(pid)?;
        let text = watch.read_smaps()?;
        Ok(SmapsAhead { text, watch })
    }

    /// The reading.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The watch, for the test fault that makes the process call `madvise` after the reading.
    pub fn watch(&mut self) -> &mut watch::Watch {
        &mut self.watch
    }
}

/// [`hold_with`] from a [`SmapsAhead`]: its watch becomes the freeze, and each area takes its
/// `smaps` flags from the reading ahead instead of a walk of every page table under the
/// freeze (~8.5 ms per GiB, several times that on a busy machine) — unless the watch saw a
/// call that may have changed one since (`madvise`, `mlock`, `mmap`, …), an area lies in
/// none of the reading's areas, or the process has locked memory, children or merged pages:
/// then `smaps` is read under the freeze as usual. No memory is counted shared copy-on-write
/// with another process.
pub fn hold_with_smaps(
    pid: Pid,
    opts: DumpOptions,
    ahead: SmapsAhead,
    under_freeze: impl FnOnce(&Frozen) -> Result<(), DumpError>,
) -> Result<Held, DumpError> {
    files::forget_outside_scan();
    hold_inner(pid, opts, under_freeze, Some(ahead))
}

fn hold_inner(
    pid: Pid,
    opts: DumpOptions,
    under_freeze: impl FnOnce(&Frozen) -> Result<(), DumpError>,
    ahead: Option<SmapsAhead>,
) -> Result<Held, DumpError> {
    let since = Instant::now();
    let died = move |e| freeze::explain_death(pid, e);
    let (frozen, smaps_before) = match ahead {
        Some(SmapsAhead { text, watch }) => match watch.freeze().map_err(died)? {
            (frozen, None) => (frozen, Some(text)),
            (frozen, Some(call)) => {
                tracing::debug!(pid = pid.as_raw(), %call, "smaps read again under the freeze");
                (frozen, None)
            }
        },
        None => (Frozen::seize(pid).map_err(died)?, None),
    };
    under_freeze(&frozen).map_err(died)?;
    let seize = since.elapsed();
    crate::timeline::mark("seize");
    tracing::debug!(elapsed = ?seize, tasks = frozen.tasks.len(), "frozen");
    // Checked again now that the process cannot change under us; its fds and VMAs (which may
    // have changed between the first check and the freeze) are checked again by `collect`,
    // which reads them anyway.
    check_process(pid).map_err(died)?;
    let mut warnings = Vec::new();
    let mut socks = sockets::SocketDump::capture(opts.sockets());
    let mut state = collect(
        &frozen,
        &opts,
        &[],
        &mut warnings,
        &mut socks,
        smaps_before.as_deref(),
    )
    .map_err(died)?;
    warnings.append(&mut socks.warnings);
    crate::timeline::mark("collect");
    settle(&frozen).map_err(died)?;
    check_aio_in_flight(&frozen, &state).map_err(died)?;
    // Last, once nothing else can refuse: what only accepting pending connections reads
    // (a dump that ends the process only).
    sockets::take_pending(&mut [&mut socks], &mut [(pid, &mut state)]).map_err(died)?;
    crate::timeline::mark("settle");
    tracing::debug!(elapsed = ?since.elapsed(), "state collected");
    Ok(Held {
        state,
        warnings,
        seize,
        since,
        socks,
        frozen,
    })
}

/// How long the dump waits, once it has read the rings of AIO contexts, before it reads them
/// again (see [`mm::check_aio_rings_still`]): a request in flight on a disk completes within it.
const AIO_GRACE: Duration = Duration::from_millis(20);

/// Refuses a process with AIO requests in flight, as far as they can be seen: a ring whose
/// tail moved since it was read, [`AIO_GRACE`] later or more.
pub(super) fn check_aio_in_flight(frozen: &Frozen, state: &ProcessState) -> Result<(), DumpError> {
    if state.mm.aio_rings.is_empty() {
        return Ok(());
    }
    std::thread::sleep(AIO_GRACE);
    mm::check_aio_rings_still(&frozen.leader().tracee, &state.mm.aio_rings)
}

/// Reads the state of a process whose tasks (`tids`, leader first) the caller traces already
/// and holds in a ptrace stop — a restored process before it runs — with the same collection
/// as a dump, and hands the tasks back as they were (registers and masks put back, still
/// traced and stopped). Used to check a restore against its image. `smaps_ahead`: the
/// process's `smaps` as the restore read it before its pages were written, to be used in
/// place of a new read (its page-table walk) where it still holds (see
/// [`mm::apply_smaps_ahead`]).
pub fn read_traced(tids: &[Pid], smaps_ahead: Option<&str>) -> Result<ProcessState, DumpError> {
    files::forget_outside_scan();
    let frozen = Frozen::adopt(tids)?;
    let pid = frozen.leader().tracee.pid();
    check_process(pid)?;
    let opts = read_back_options();
    let mut warnings = Vec::new();
    let mut socks = sockets::SocketDump::capture(opts.sockets());
    let state = collect(&frozen, &opts, &[], &mut warnings, &mut socks, smaps_ahead)?;
    settle(&frozen)?;
    // The sockets leave repair mode before the tasks go back.
    drop(socks);
    frozen.hand_back()?;
    // As its image holds it (shared memory pages once).
    let mut one = [state];
    mm::drop_repeated_shmem_pages(&mut one);
    let [state] = one;
    Ok(state)
}

/// [`read_traced`] for every process of a restored tree (`processes`: each one's tasks,
/// leader first; the root first), read as a tree the way `dump --tree` reads one.
pub fn read_traced_tree(processes: &[&[Pid]]) -> Result<Vec<ProcessState>, DumpError> {
    files::forget_outside_scan();
    let frozen = processes
        .iter()
        .map(|tids| Frozen::adopt(tids))
        .collect::<Result<Vec<_>, _>>()?;
    let root = frozen
        .first()
        .map(|f| f.leader().tracee.pid())
        .ok_or_else(|| DumpError::BadTarget {
            pid: 0,
            why: "no process to read".into(),
        })?;
    let opts = read_back_options();
    let mut warnings = Vec::new();
    let (states, socks) = tree::collect_tree(&frozen, &opts, root, &mut warnings)?;
    for f in &frozen {
        settle(f)?;
    }
    // The sockets leave repair mode before the tasks go back.
    drop(socks);
    for f in frozen {
        f.hand_back()?;
    }
    Ok(states)
}

/// What a read-back collects: everything, refusing nothing for the sake of a later restore
/// (an established connection is read in repair mode, left again before the tasks go back,
/// though the process runs on).
fn read_back_options() -> DumpOptions {
    DumpOptions {
        leave_running: false,
        tcp_established: true,
        ext_unix_sk: true,
        unaccepted_data: sockets::UnacceptedData::Note,
        vma_flags_last: true,
        ..DumpOptions::default()
    }
}

impl Held {
    /// Writes the image (manifest, then the pages read from the frozen process) into `out`.
    pub fn write_to<W: Write + Send>(
        &self,
        out: W,
        codec: Codec,
    ) -> Result<(W, WriteStats), DumpError> {
        self.write_counting(out, codec, None)
    }

    /// [`Held::write_to`], adding to `progress` the raw page bytes as they are handed to the
    /// image writer (for a progress display while the image streams).
    pub fn write_counting<W: Write + Send>(
        &self,
        out: W,
        codec: Codec,
        progress: Option<&std::sync::atomic::AtomicU64>,
    ) -> Result<(W, WriteStats), DumpError> {
        let tree = self.tree();
        let mut writer = ImageWriter::new_tree(out, &tree, codec).map_err(DumpError::Image)?;
        let leader = &self.frozen.leader().tracee;
        mm::write_pages(leader, &self.state.mm.vmas, &mut writer, progress)
            .map_err(|e| freeze::explain_death(leader.pid(), e))?;
        writer.finish().map_err(DumpError::Image)
    }

    /// [`Held::write_to`], sealed under `key` (a periodic checkpoint's image, whose VMAs the
    /// caller may have changed in [`Held::state`]: `precopied` pages are not read).
    pub fn write_sealed<W: Write + Send>(
        &self,
        out: W,
        codec: Codec,
        key: &crate::image::seal::Key,
    ) -> Result<(W, WriteStats), DumpError> {
        let tree = self.tree();
        let mut writer =
            ImageWriter::new_tree_sealed(out, &tree, codec, Some(key)).map_err(DumpError::Image)?;
        let leader = &self.frozen.leader().tracee;
        mm::write_pages(leader, &self.state.mm.vmas, &mut writer, None)
            .map_err(|e| freeze::explain_death(leader.pid(), e))?;
        writer.finish().map_err(DumpError::Image)
    }

    /// The image's contents: one process, shared memory pages stored once.
    fn tree(&self) -> TreeState {
        let mut tree = TreeState::single(self.state.clone());
        mm::drop_repeated_shmem_pages(&mut tree.processes);
        tree
    }

    /// The frozen threads, leader first.
    pub fn tasks(&self) -> &[freeze::FrozenTask] {
        &self.frozen.tasks
    }

    /// Lets the process go on as if nothing happened.
    pub fn thaw(self) -> Result<(), DumpError> {
        let Held { socks, frozen, .. } = self;
        drop(socks);
        frozen.release()
    }

    /// Ends the process and waits until its threads are gone. Its connections are discarded
    /// without a word to the peers (they live on in the image).
    pub fn end(self) -> Result<(), DumpError> {
        // Before the sockets go, so no peer gets RST before the restore (on failure the
        // process is thawed as it was).
        crate::netlock::lock(self.frozen.leader().tracee.pid(), &self.state)?;
        let Held { socks, frozen, .. } = self;
        frozen.kill()?;
        socks.held.close_silently();
        Ok(())
    }

    /// Gives up the process without putting anything back (the caller has replaced its
    /// program, e.g. by the stub): detaches every thread that still exists.
    pub fn detach_as_is(self) -> Result<(), DumpError> {
        let Held { socks, frozen, .. } = self;
        drop(socks);
        frozen.detach_as_is()
    }
}

/// Leaves every task in an interrupt stop (`PTRACE_EVENT_STOP`) rather than the `SIGTRAP`
/// signal-delivery stop of the last injected single step: should the tracer die while it
/// holds the process (an agent crash during a migration), the kernel detaches each task and
/// would deliver that `SIGTRAP`, killing the process; from an interrupt stop it just goes on.
/// `PTRACE_INTERRUPT` first, then `PTRACE_CONT` with no signal: the task drops the `SIGTRAP`
/// and traps again before it returns to user mode, without running an instruction.
fn settle(frozen: &Frozen) -> Result<(), DumpError> {
    use nix::sys::ptrace;
    use nix::sys::wait::WaitStatus;
    for t in &frozen.tasks {
        let pid = t.tracee.pid();
        let req = |op: &'static str| {
            move |source| PtraceError::Request {
                op,
                pid: pid.as_raw(),
                source,
            }
        };
        ptrace::interrupt(pid).map_err(req("interrupt"))?;
        ptrace::cont(pid, None).map_err(req("cont"))?;
        match t.tracee.wait()? {
            WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP) => {}
            other => {
                return Err(PtraceError::Unexpected {
                    pid: pid.as_raw(),
                    status: format!("{other:?} instead of the interrupt stop"),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// Everything that can be refused from `/proc` alone: the process itself, its fds, its VMAs.
/// `in_tree`: the process is one of a tree (`--tree`), whose Unix sockets may be connected
/// to other members, which are known only once the tree is frozen.
fn precheck(
    pid: Pid,
    opts: &DumpOptions,
    in_tree: bool,
    parent_in_tree: bool,
) -> Result<(), DumpError> {
    check_process(pid)?;
    shm::check_ipc_namespace(pid, in_tree)?;
    if !in_tree {
        check_not_namespace_init(pid)?;
    }
    check_nothing_shared_with_kin(pid, in_tree, parent_in_tree)?;
    let mut socks = sockets::SocketDump::check(opts.sockets());
    socks.peers_judged_later = in_tree;
    files::collect_fds(pid, opts.max_deleted_file_size, &mut socks, &[])?;
    mm::collect_vmas(pid)?;
    Ok(())
}

/// Refuses a process that shares its address space, descriptor table or filesystem context
/// (root, working directory, umask) with its parent or a child without being a thread of it
/// (`clone(CLONE_VM | CLONE_FILES | CLONE_FS)` without `CLONE_THREAD`, `vfork`): the restore
/// makes each process its own, so the sharing would be lost without a word. Siblings made so
/// share with the parent too. Where `kcmp` cannot tell (another user's process), nothing is
/// said. In a tree (`in_tree`: every child is dumped too), descriptor tables and filesystem
/// contexts shared with a parent or child that is dumped with it are restored (see
/// [`tree::mark_shared_with_parent`]); an address space never is.
fn check_nothing_shared_with_kin(
    pid: Pid,
    in_tree: bool,
    parent_in_tree: bool,
) -> Result<(), DumpError> {
    let raw = pid.as_raw();
    let ppid = proc::parse_stat(&proc::read(raw, "stat")?)?.ppid;
    let kin = std::iter::once(ppid)
        .filter(|&p| p > 0)
        .map(|p| (p, "its parent"))
        .chain(tree::children(raw).into_iter().map(|c| (c, "its child")));
    for (other, who) in kin {
        let kin_dumped = if who == "its parent" {
            parent_in_tree
        } else {
            in_tree
        };
        for (what, name, flag) in [
            (sys::Kcmp::Vm, "address space", "CLONE_VM"),
            (sys::Kcmp::Files, "file descriptor table", "CLONE_FILES"),
            (
                sys::Kcmp::Fs,
                "filesystem context (cwd, root, umask)",
                "CLONE_FS",
            ),
        ] {
            if kin_dumped && flag != "CLONE_VM" {
                continue;
            }
            if sys::same_kernel_object(pid, Pid::from_raw(other), what).unwrap_or(false) {
                let how = if flag == "CLONE_VM" {
                    "restoring that sharing between processes is not supported yet"
                } else {
                    "that sharing is restored only when both are dumped (--tree from the \
                     parent)"
                };
                return Err(DumpError::Unsupported(format!(
                    "pid {raw} shares its {name} with {who} pid {other} (clone({flag}) without \
                     CLONE_THREAD); {how}"
                )));
            }
        }
    }
    Ok(())
}

/// Refuses the init of a PID namespace as a single process: when it ends, the kernel kills
/// every other process of its namespace, and restored alone it would be an init without them.
/// Its whole tree (`--tree`) is every process of the namespace and may go.
fn check_not_namespace_init(pid: Pid) -> Result<(), DumpError> {
    let status = proc::parse_status(&proc::read(pid.as_raw(), "status")?)?;
    if status.ns_pid == 1 {
        return Err(DumpError::BadTarget {
            pid: pid.as_raw(),
            why: "it is the init of a PID namespace (pid 1 inside it): when it ends, the kernel \
                  kills every process of that namespace, and restored alone it would have none of \
                  them; dump it with --tree to take the whole namespace"
                .into(),
        });
    }
    Ok(())
}

/// Refuses an image path that exists and is not a regular file (following symbolic links): the
/// image is renamed into place, which would replace a device node, FIFO, socket or directory.
pub fn check_output(out: &Path) -> Result<(), DumpError> {
    let meta = match std::fs::metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(DumpError::ImageFile {
                step: "stat",
                path: out.to_path_buf(),
                source,
            });
        }
    };
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "something other than a regular file"
    };
    Err(DumpError::BadOutput {
        path: out.to_path_buf(),
        kind,
    })
}

/// What happens to the children of a process dumped alone, as the kernel does it: they are not
/// in the image; when the process ends they are reparented (to the nearest subreaper or init),
/// each one that asked for a parent-death signal receives it, and a session leader's end hangs
/// up its terminal's foreground process group (`SIGHUP`).
fn children_warning(pid: i32, children: &str, stat: &proc::Stat, leave_running: bool) -> String {
    let mut w = format!("pid {pid} has children ({children}) that are not part of the image");
    if leave_running {
        w.push_str("; they keep running with it");
        return w;
    }
    w.push_str(
        "; when it ends they are reparented to the nearest subreaper or init, and any that set a \
         parent-death signal (PR_SET_PDEATHSIG) receives it (and stopped ones whose process group \
         is orphaned by its end get SIGHUP and SIGCONT)",
    );
    if stat.session == pid && stat.tty_nr != 0 && stat.tpgid > 0 {
        w.push_str(&format!(
            "; it leads a session with a controlling terminal, so when it ends the kernel sends \
             SIGHUP to the terminal's foreground process group {}",
            stat.tpgid
        ));
    }
    w
}

/// Whether `pid` is a process we may dump at all.
fn check_process(pid: Pid) -> Result<(), DumpError> {
    let bad = |why: &str| DumpError::BadTarget {
        pid: pid.as_raw(),
        why: why.to_string(),
    };
    if pid.as_raw() <= 1 {
        return Err(bad("refusing to dump init"));
    }
    if pid == nix::unistd::getpid() {
        return Err(bad("refusing to dump ferry itself"));
    }
    let stat =
        proc::parse_stat(&proc::read(pid.as_raw(), "stat").map_err(|_| bad("no such process"))?)?;
    if stat.state == 'Z' || stat.state == 'X' {
        return Err(bad("the process has exited (zombie)"));
    }
    if proc::read(pid.as_raw(), "maps")?.is_empty() {
        return Err(bad("a kernel thread has no memory to dump"));
    }
    let root =
        std::fs::read_link(format!("/proc/{pid}/root")).map_err(|_| bad("cannot read its root"))?;
    // A root directory other than / (chroot) is carried; one that was removed is not.
    if root.to_string_lossy().ends_with(" (deleted)") {
        return Err(DumpError::Unsupported(format!(
            "its root directory {} (chroot) was removed: not supported",
            root.display()
        )));
    }
    Ok(())
}

/// Everything about the process, read while it is frozen.
/// `members` are the other processes of a dumped tree (empty for one process);
/// `smaps_ahead` as [`read_traced`] takes it.
fn collect(
    frozen: &Frozen,
    opts: &DumpOptions,
    members: &[i32],
    warnings: &mut Vec<String>,
    socks: &mut sockets::SocketDump,
    smaps_ahead: Option<&str>,
) -> Result<ProcessState, DumpError> {
    let leader = frozen.leader();
    let pid = leader.tracee.pid();
    let raw = pid.as_raw();
    track::collecting(raw);

    let t0 = Instant::now();
    let stat = proc::parse_stat(&proc::read(raw, "stat")?)?;
    let status = proc::parse_status(&proc::read(raw, "status")?)?;
    let (vmas, names) = mm::read_maps(pid)?;
    crate::timeline::mark("collect: stat, maps");
    // The kernel walks every page table twice, for `smaps` (~10 ms per GiB) and for the
    // present pages (`PAGEMAP_SCAN`, a few ms): both walks run on threads of their own while
    // this one reads the descriptors and queries the process (nothing here touches the pages
    // they look at).
    // A restored process whose `smaps` the restore read before the pages may need no walk.
    let mut ahead = match smaps_ahead {
        Some(text) if mm::smaps_ahead_holds(pid)? => Some(text),
        Some(_) => {
            tracing::debug!(
                pid = raw,
                "smaps read before the pages no longer holds: read again"
            );
            None
        }
        None => None,
    };
    let read_smaps = move || std::thread::spawn(move || proc::read(raw, "smaps"));
    let mut smaps = ahead.is_none().then(read_smaps);
    let follow = opts.pages_follow;
    let mut apply_smaps = |vmas: &mut Vec<crate::state::VmaState>| -> Result<(), DumpError> {
        if let Some(text) = ahead.take() {
            if mm::apply_smaps_ahead(vmas, &names, text)? {
                if follow {
                    mm::follow_unwalked(vmas, text);
                }
                tracing::trace!(elapsed = ?t0.elapsed(), "vmas read (smaps read before the pages)");
                return Ok(());
            }
            tracing::debug!(
                pid = raw,
                "an area was made or moved since smaps was read before the pages: read again"
            );
            smaps = Some(read_smaps());
        }
        if let Some(smaps) = smaps.take() {
            let smaps = smaps
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))?;
            mm::apply_smaps(vmas, &names, &smaps)?;
            if follow {
                mm::follow_unwalked(vmas, &smaps);
            }
            tracing::trace!(elapsed = ?t0.elapsed(), "vmas read");
        }
        Ok(())
    };
    // Post-copy: the flags first, which say which areas the walk leaves out.
    let flags_first = follow && !opts.vma_flags_last;
    let (mut vmas, mut fds, locks, injected, ipc) = std::thread::scope(|scope| {
        let mut vmas = vmas;
        if flags_first {
            apply_smaps(&mut vmas)?;
            crate::timeline::mark("collect: smaps");
        }
        let mut paged = vmas.clone();
        let pages = scope.spawn(move || mm::find_pages(pid, &mut paged).map(|()| paged));
        let mut fds = files::collect_fds(pid, opts.max_deleted_file_size, socks, members)?;
        // Pipe queues, deleted files' contents and locks: read only now that nothing can change.
        let locks = files::capture(pid, &mut fds, members)?;
        // Events taken from epoll instances, put back by `inject_queries`.
        let requeue = files::epoll_edges(pid, &mut fds)?;
        tracing::trace!(elapsed = ?t0.elapsed(), "fds read");
        crate::timeline::mark("collect: fds");
        if !opts.vma_flags_last && !flags_first {
            apply_smaps(&mut vmas)?;
            crate::timeline::mark("collect: smaps");
        }

        // State only the process itself can report is read by running system calls inside it
        // (in a scratch area of its own, gone again before this returns; the pages of its
        // other areas stay as they are).
        let fd_numbers: Vec<i32> = fds.iter().map(|f| f.fd).collect();
        // A private IPC namespace: all of it, read before the injected queries, which read the
        // process's SEM_UNDO adjustments on its semaphore sets.
        let ipc = match crate::ipcns::private_ns(raw) {
            Some(ns) => Some(shm::collect_ipc_ns(&ns, raw, status.ns_pid)?),
            None => None,
        };
        let undo_sets: Vec<(i32, Vec<u32>)> = match &ipc {
            Some((ns, _)) if shm::has_sem_undo(pid) => {
                let sems: usize = ns.sem_sets.iter().map(|s| s.values.len()).sum();
                if sems > MAX_UNDO_PROBED {
                    return Err(DumpError::Unsupported(format!(
                        "pid {raw} has SEM_UNDO adjustments and its IPC namespace {sems} \
                         semaphores: reading the adjustments of more than {MAX_UNDO_PROBED} is \
                         not supported"
                    )));
                }
                ns.sem_sets
                    .iter()
                    .map(|s| (s.perm.id, s.values.clone()))
                    .collect()
            }
            Some(_) => Vec::new(),
            None => shm::host_undo_sets(pid, &status)?,
        };
        let injected = inject_queries(frozen, &vmas, &fd_numbers, &requeue, &undo_sets)?;
        if ipc.is_none() {
            shm::refuse_host_undo(pid, &injected.sem_undo)?;
        }
        tracing::trace!(elapsed = ?t0.elapsed(), "queries injected");
        crate::timeline::mark("collect: injected queries");

        let paged = pages
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))?;
        for (v, p) in vmas.iter_mut().zip(paged) {
            v.pages = p.pages;
        }
        tracing::trace!(elapsed = ?t0.elapsed(), "pages found");
        crate::timeline::mark("collect: pagemap");
        Ok::<_, DumpError>((vmas, fds, locks, injected, ipc))
    })?;
    mm::join_tracking_splits(&mut vmas);
    let aio_rings = mm::collect_aio_rings(&leader.tracee, &vmas)?;
    let memfds = fdkinds::collect_memfds(pid, &fds, &vmas)?;
    let (ipc_ns, sysv_shm) = match ipc {
        Some((mut ns, segs)) => {
            ns.sem_undo = injected.sem_undo;
            (Some(ns), segs)
        }
        None => (None, shm::collect_sysv(pid, &vmas)?),
    };
    let mapped_deleted = mm::collect_mapped_deleted(pid, &vmas, &fds, opts.max_deleted_file_size)?;
    let carried_files = files::carried(&vmas, &fds, &locks, status.uids[1])?;
    let cwd = link(raw, "cwd")?;
    let root = link(raw, "root")?;
    check_chrooted_sockets(&root, &fds)?;

    let children =
        std::fs::read_to_string(format!("/proc/{raw}/task/{raw}/children")).unwrap_or_default();
    if members.is_empty() && !children.trim().is_empty() {
        warnings.push(children_warning(
            raw,
            children.trim(),
            &stat,
            opts.leave_running,
        ));
    }

    let auxv_raw =
        std::fs::read(format!("/proc/{raw}/auxv")).map_err(|source| ProcError::Read {
            path: format!("/proc/{raw}/auxv").into(),
            source,
        })?;
    let auxv = auxv_raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let exe_path = link(raw, "exe")?;
    let exe = FileRef {
        identity: identity_of(&format!("/proc/{raw}/exe")).map_err(|source| ProcError::Read {
            path: exe_path.clone().into(),
            source,
        })?,
        path: exe_path,
    };

    // Read from /proc: prlimit() on another user's process needs CAP_SYS_RESOURCE.
    let rlimits: Vec<RlimitState> = proc::parse_limits(&proc::read(raw, "limits")?)?
        .into_iter()
        .zip(0..)
        .map(|((cur, max), resource)| RlimitState { resource, cur, max })
        .collect();
    if rlimits.len() != RLIMIT_COUNT as usize {
        return Err(ProcError::Parse {
            file: "limits",
            what: format!("{} limits, expected {RLIMIT_COUNT}", rlimits.len()),
        }
        .into());
    }

    let mut threads = Vec::with_capacity(frozen.tasks.len());
    let process_cgroups = attrs::cgroups_of(&proc::read(raw, "cgroup")?)?;
    for (task, per_thread) in frozen.tasks.iter().zip(&injected.threads) {
        let t = &task.tracee;
        let tid = t.pid().as_raw();
        let mut cgroups = attrs::cgroups_of(&proc::read(raw, &format!("task/{tid}/cgroup"))?)?;
        if cgroups == process_cgroups {
            cgroups.clear();
        }
        let tstatus = proc::parse_status(&proc::read(raw, &format!("task/{tid}/status"))?)?;
        threads.push(ThreadState {
            tid: tstatus.ns_pid,
            regs: crate::state::Regs::from(task.regs),
            xstate: t.xstate()?,
            sigmask: task.sigmask,
            pending: siginfos(t.pending(false)?),
            rseq: t.rseq()?.map(|(ptr, len, sig)| RseqState { ptr, len, sig }),
            robust_list: sys::get_robust_list(t.pid()).map_err(|source| PtraceError::Request {
                op: "get_robust_list",
                pid: tid,
                source,
            })?,
            clear_child_tid: per_thread.clear_child_tid,
            sigaltstack: per_thread.sigaltstack,
            sched: attrs::sched(pid, t.pid())?,
            seccomp: attrs::seccomp(t.pid(), tstatus.seccomp)?,
            cgroups,
            attrs: Some(attrs::thread_attrs(pid, t.pid(), per_thread.attrs)?),
        });
    }
    let tids: Vec<(i32, i32)> = frozen
        .tasks
        .iter()
        .zip(&threads)
        .map(|(task, ts)| (task.tracee.pid().as_raw(), ts.tid))
        .collect();
    for (f, owner) in fds.iter_mut().zip(&injected.fd_owners) {
        f.owner = *owner;
    }
    let own: Vec<i32> = threads.iter().map(|t| t.tid).collect();
    // The other processes of a tree, as this one sees them, and whether each leads its group:
    // read only when a descriptor has an owner to look for among them (for every member of a
    // tree of N that is N reads of two files: quadratic).
    let mut others = Vec::with_capacity(members.len());
    let owned = fds.iter().any(|f| f.owner.pid != 0);
    for &m in members.iter().filter(|&&m| owned && m != raw) {
        let st = proc::parse_stat(&proc::read(m, "stat")?)?;
        let ns = proc::parse_status(&proc::read(m, "status")?)?.ns_pid;
        others.push((ns, st.pgrp == m));
    }
    check_dnotify(&fds)?;
    check_fd_owners(&fds, status.ns_pid, &own, &others)?;
    let mut attrs = attrs::collect(pid, &status, injected.attrs, &tids)?;
    attrs.ctty = ctty(raw, &stat, &fds, warnings);
    attrs.stop_signal = frozen.group_stop.map_or(0, |s| s as u32);
    apply_smaps(&mut vmas)?;

    Ok(ProcessState {
        pid: status.ns_pid,
        ppid: stat.ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        comm: proc::read(raw, "comm")?.trim_end_matches('\n').to_string(),
        exe,
        creds: CredsState {
            uids: status.uids,
            gids: status.gids,
            groups: status.groups,
        },
        umask: status.umask,
        cwd_removed: removed_cwd(raw, &cwd),
        cwd,
        root,
        personality: injected.personality,
        rlimits,
        mm: MmState {
            vmas,
            start_code: stat.start_code,
            end_code: stat.end_code,
            start_data: stat.start_data,
            end_data: stat.end_data,
            start_brk: stat.start_brk,
            brk: injected.brk,
            start_stack: stat.start_stack,
            arg_start: stat.arg_start,
            arg_end: stat.arg_end,
            env_start: stat.env_start,
            env_end: stat.env_end,
            auxv,
            lock_future: injected.mm_flags.lock_future,
            thp_disable: injected.mm_flags.thp_disable,
            merge_any: injected.mm_flags.merge_any,
            aio_rings,
        },
        fds,
        signals: SignalsState {
            actions: injected.actions,
            shared_pending: siginfos(leader.tracee.pending(true)?),
        },
        threads,
        locks,
        memfds,
        sysv_shm,
        ipc_ns,
        carried_files,
        mapped_deleted,
        attrs,
    })
}

/// A process in a chroot (`root` other than `/`) named its Unix sockets' paths from its own
/// root, and the kernel shows them so (unlike the host paths of its files): binding or
/// reconnecting them at restore, which happens from the host's root, would take another
/// file. Refused, naming the socket, until those paths are resolved inside the root.
fn check_chrooted_sockets(root: &str, fds: &[crate::state::FdState]) -> Result<(), DumpError> {
    if root == "/" {
        return Ok(());
    }
    let named = |n: &[u8]| !n.is_empty() && n[0] != 0;
    for f in fds {
        if let crate::state::FdKind::Socket(s) = &f.kind
            && let crate::state::SocketKind::Unix(u) = &s.kind
            && (named(&u.name) || named(&u.peer_name))
        {
            let name = if named(&u.name) {
                &u.name
            } else {
                &u.peer_name
            };
            return Err(DumpError::Unsupported(format!(
                "fd {}: a Unix socket with the path {} in a process whose root directory is {} \
                 (chroot): not supported yet",
                f.fd,
                String::from_utf8_lossy(name),
                root
            )));
        }
    }
    Ok(())
}

/// The mode and owner of the working directory `cwd` of `pid` when it was removed.
fn removed_cwd(pid: i32, cwd: &str) -> Option<CarriedDir> {
    use std::os::unix::fs::MetadataExt;
    let path = cwd.strip_suffix(" (deleted)")?;
    let m = std::fs::metadata(format!("/proc/{pid}/cwd")).ok()?;
    (m.nlink() == 0).then(|| CarriedDir {
        path: path.to_string(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
    })
}

/// The controlling terminal of a session leader: its device, a path to it (a descriptor of
/// the process that is that terminal, else `/dev/pts/N` for a pty slave) and the foreground
/// group. `None` for other processes: the terminal belongs to the session, and only its
/// leader can take it back.
fn ctty(
    pid: i32,
    stat: &proc::Stat,
    fds: &[crate::state::FdState],
    warnings: &mut Vec<String>,
) -> Option<crate::state::CttyState> {
    if stat.session != pid || stat.tty_nr == 0 {
        return None;
    }
    let rdev = stat.tty_nr;
    let from_fd = fds.iter().find_map(|f| match &f.kind {
        crate::state::FdKind::Tty { file } | crate::state::FdKind::PtySlave { file, .. }
            if file.identity.rdev == rdev =>
        {
            Some(file.path.clone())
        }
        _ => None,
    });
    let major = (rdev >> 8) & 0xfff;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    let pts = (136..144)
        .contains(&major)
        .then(|| format!("/dev/pts/{}", minor + (major - 136) * 256));
    let path = from_fd.or(pts).filter(|p| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).is_ok_and(|m| m.rdev() == rdev)
    });
    let Some(path) = path else {
        warnings.push(format!(
            "pid {pid}: its controlling terminal (device {major}:{minor}) has no path ferry knows; it will have none after the restore"
        ));
        return None;
    };
    Some(crate::state::CttyState {
        rdev,
        path,
        fg_pgid: stat.tpgid.max(0),
    })
}

fn link(pid: i32, name: &str) -> Result<String, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/{name}"));
    std::fs::read_link(&path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|source| ProcError::Read { path, source })
}

fn siginfos(raw: Vec<[u8; sys::ptrace::SIGINFO_SIZE]>) -> Vec<SiginfoState> {
    raw.into_iter()
        .map(|r| SiginfoState {
            signo: u32::from_le_bytes([r[0], r[1], r[2], r[3]]),
            raw: r.to_vec(),
        })
        .collect()
}

/// Most semaphores whose SEM_UNDO adjustments a dump reads (up to 18 injected calls each).
pub(crate) const MAX_UNDO_PROBED: usize = 4096;

struct Injected {
    /// The process's SEM_UNDO adjustments on the sets asked about.
    sem_undo: Vec<crate::state::SemUndoState>,
    attrs: attrs::Queried,
    mm_flags: mm::MmFlags,
    /// Per descriptor, in the order asked.
    fd_owners: Vec<FdOwner>,
    actions: Vec<SigactionState>,
    brk: u64,
    personality: u32,
    /// Per thread, in the order of `Frozen::tasks`.
    threads: Vec<InjectedThread>,
}

struct InjectedThread {
    sigaltstack: SigaltstackState,
    clear_child_tid: u64,
    attrs: attrs::ThreadQueried,
}

/// The address of a `syscall` instruction (`0f 05`) in the process: in its `[vdso]`, or, for
/// a process that unmapped it, in any executable mapping (the CPU decodes from wherever it is
/// sent, so the two bytes need not start an instruction of the program's own stream).
pub(crate) fn find_syscall_instruction(
    leader: &crate::ptrace::Tracee,
    vmas: &[crate::state::VmaState],
) -> Result<u64, DumpError> {
    const CHUNK: u64 = 64 << 10;
    let candidates = vmas
        .iter()
        .filter(|v| v.kind == VmaKind::Vdso)
        .chain(vmas.iter().filter(|v| {
            v.kind != VmaKind::Vdso
                && v.kind != VmaKind::Vsyscall
                && v.prot & crate::state::prot::EXEC != 0
        }));
    for v in candidates {
        let mut at = v.start;
        while at < v.end {
            // One byte of overlap, so that a pair across two chunks is found.
            let len = CHUNK.min(v.end - at);
            let mut code = vec![0u8; len as usize];
            if leader.read_mem(at, &mut code).is_err() {
                break;
            }
            if let Some(i) = code.windows(2).position(|w| w == [0x0f, 0x05]) {
                return Ok(at + i as u64);
            }
            at += len.saturating_sub(1).max(1);
        }
    }
    Err(DumpError::Unsupported(
        "a process without a [vdso] or any executable mapping holding a syscall instruction".into(),
    ))
}

/// Runs the queries only the process can answer (`rt_sigaction`, `brk`, `personality`, and per
/// thread `sigaltstack` and `PR_GET_TID_ADDRESS`) by single-stepping its threads over a
/// `syscall` instruction of its own vDSO, with a scratch page for the answers.
fn inject_queries(
    frozen: &Frozen,
    vmas: &[crate::state::VmaState],
    fds: &[i32],
    requeue: &[files::Requeue],
    undo_sets: &[(i32, Vec<u32>)],
) -> Result<Injected, DumpError> {
    let leader = &frozen.leader().tracee;
    let entry = Entry::SingleStep(find_syscall_instruction(leader, vmas)?);
    // No handler may run while we borrow the threads: block everything (SIGKILL/SIGSTOP
    // excepted). `Frozen` puts the masks back.
    for t in &frozen.tasks {
        t.tracee.set_sigmask(u64::MAX)?;
    }
    let regs = &frozen.leader().regs;

    let page = 4096u64;
    let locked_before = mm::locked_kb(leader.pid())?;
    // The scratch area: page 0 for single calls' answers; with execute permission (refused
    // under memory-deny-write-execute) page 1 holds the batch code and its records, pages 2–3
    // the batched calls' answers.
    let map = |len: u64, prot: i32| {
        leader.inject_raw(
            entry,
            regs,
            libc::SYS_mmap,
            [
                0,
                len,
                prot as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
    };
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let (scratch, scratch_len, batched) = match map(4 * page, rw | libc::PROT_EXEC)? {
        r if (-4095..0).contains(&r) => (leader.checked("mmap", map(page, rw)?)?, page, false),
        r => (r as u64, 4 * page, true),
    };
    let result = (|| -> Result<Injected, DumpError> {
        // First, while the scratch page is as its mmap left it.
        let mm_flags = mm::query_flags(leader, entry, regs, scratch, locked_before)?;
        // Every AIO ring mapped must be a context of the process's own.
        mm::check_own_aio_rings(leader, entry, regs, vmas)?;
        // Next, the epoll events the dump took: back on their ready lists.
        requeue_epoll(leader, entry, regs, scratch, requeue)?;
        let batch = if batched {
            leader.write_mem(scratch + page, &crate::ptrace::BATCH_CODE)?;
            Some(Batch {
                tracee: leader,
                regs,
                code: scratch + page,
                records: scratch + page + 64,
                out: scratch + 2 * page,
            })
        } else {
            None
        };
        let actions = sigactions(leader, entry, regs, scratch, batch.as_ref())?;
        let brk = leader.inject(entry, regs, "brk", libc::SYS_brk, [0; 6])?;
        let personality = leader.inject(
            entry,
            regs,
            "personality",
            libc::SYS_personality,
            [0xffff_ffff, 0, 0, 0, 0, 0],
        )? as u32;
        let mut threads = Vec::with_capacity(frozen.tasks.len());
        for task in &frozen.tasks {
            let (t, regs) = (&task.tracee, &task.regs);
            t.inject(
                entry,
                regs,
                "sigaltstack",
                libc::SYS_sigaltstack,
                [0, scratch, 0, 0, 0, 0],
            )?;
            let mut ss = [0u8; 24];
            t.read_mem(scratch, &mut ss)?;
            let sigaltstack = SigaltstackState {
                sp: u64::from_le_bytes(ss[0..8].try_into().unwrap_or_default()),
                flags: u32::from_le_bytes(ss[8..12].try_into().unwrap_or_default()),
                size: u64::from_le_bytes(ss[16..24].try_into().unwrap_or_default()),
            };
            t.inject(
                entry,
                regs,
                "prctl(PR_GET_TID_ADDRESS)",
                libc::SYS_prctl,
                [libc::PR_GET_TID_ADDRESS as u64, scratch, 0, 0, 0, 0],
            )?;
            let mut ctid = [0u8; 8];
            t.read_mem(scratch, &mut ctid)?;
            threads.push(InjectedThread {
                sigaltstack,
                clear_child_tid: u64::from_le_bytes(ctid),
                attrs: attrs::query_thread(t, entry, regs, scratch)?,
            });
        }
        let attrs = attrs::query(leader, entry, regs, scratch)?;
        let sem_undo = shm::probe_sem_undo(undo_sets, &mut |id, ops| {
            let sops: Vec<u8> = ops
                .iter()
                .flat_map(|&(num, op, flg)| {
                    let mut b = [0u8; 6];
                    b[0..2].copy_from_slice(&num.to_le_bytes());
                    b[2..4].copy_from_slice(&op.to_le_bytes());
                    b[4..6].copy_from_slice(&flg.to_le_bytes());
                    b
                })
                .collect();
            leader.write_mem(scratch, &sops)?;
            Ok(leader.inject_raw(
                entry,
                regs,
                libc::SYS_semop,
                [id as u64, scratch, ops.len() as u64, 0, 0, 0],
            )?)
        })?;
        let fd_owners = match &batch {
            Some(b) => fd_owners_batched(b, fds)?,
            None => fds
                .iter()
                .map(|&fd| fd_owner(leader, entry, regs, scratch, fd))
                .collect::<Result<_, _>>()?,
        };
        Ok(Injected {
            sem_undo,
            attrs,
            mm_flags,
            fd_owners,
            actions,
            brk,
            personality,
            threads,
        })
    })();
    leader.inject(
        entry,
        regs,
        "munmap",
        libc::SYS_munmap,
        [scratch, scratch_len, 0, 0, 0, 0],
    )?;
    frozen.restore_tasks()?;
    result
}

/// Puts back the events [`files::epoll_edges`] took: `EPOLL_CTL_MOD` of a watch with its own
/// events and data polls its file and, as it is ready, puts it on the ready list again (and
/// arms a one-shot watch again). An `EPOLLEXCLUSIVE` watch cannot be modified: it is removed
/// and added again, which does the same.
fn requeue_epoll(
    leader: &Tracee,
    entry: Entry,
    regs: &libc::user_regs_struct,
    scratch: u64,
    requeue: &[files::Requeue],
) -> Result<(), DumpError> {
    for r in requeue {
        let t = &r.target;
        let mut ev = [0u8; 12];
        ev[..4].copy_from_slice(&t.events.to_le_bytes());
        ev[4..].copy_from_slice(&t.data.to_le_bytes());
        leader.write_mem(scratch, &ev)?;
        let ctl = |call, op: i32, ev: u64| {
            leader.inject(
                entry,
                regs,
                call,
                libc::SYS_epoll_ctl,
                [r.epfd as u64, op as u64, t.fd as u64, ev, 0, 0],
            )
        };
        if t.events & EPOLLEXCLUSIVE != 0 {
            ctl("epoll_ctl(EPOLL_CTL_DEL)", libc::EPOLL_CTL_DEL, 0)?;
            ctl("epoll_ctl(EPOLL_CTL_ADD)", libc::EPOLL_CTL_ADD, scratch)?;
        } else {
            ctl("epoll_ctl(EPOLL_CTL_MOD)", libc::EPOLL_CTL_MOD, scratch)?;
        }
    }
    Ok(())
}

/// A batch of injected calls in the scratch area (see [`Tracee::inject_batch`]).
struct Batch<'a> {
    tracee: &'a Tracee,
    regs: &'a libc::user_regs_struct,
    code: u64,
    records: u64,
    /// Two pages for the calls' answers.
    out: u64,
}

impl Batch<'_> {
    /// Records that fit between the records' start and the end of the code page.
    const MAX: usize = (4096 - 64) / crate::ptrace::BATCH_RECORD - 1;

    fn run(&self, calls: &[(i64, [u64; 6])]) -> Result<Vec<i64>, DumpError> {
        Ok(self
            .tracee
            .inject_batches(self.code, self.records, self.regs, calls, Self::MAX)?)
    }
}

/// Every signal's action (`rt_sigaction` of 1–64 but SIGKILL and SIGSTOP), asked of the
/// process: in one batch when there is one, else one call each.
fn sigactions(
    leader: &Tracee,
    entry: Entry,
    regs: &libc::user_regs_struct,
    scratch: u64,
    batch: Option<&Batch<'_>>,
) -> Result<Vec<SigactionState>, DumpError> {
    const SIZE: usize = 32;
    let sigs: Vec<u32> = (1..=64u32)
        .filter(|&s| s != libc::SIGKILL as u32 && s != libc::SIGSTOP as u32)
        .collect();
    let mut raw = vec![0u8; sigs.len() * SIZE];
    match batch {
        Some(b) => {
            let calls: Vec<(i64, [u64; 6])> = sigs
                .iter()
                .enumerate()
                .map(|(i, &sig)| {
                    let at = b.out + (i * SIZE) as u64;
                    (libc::SYS_rt_sigaction, [u64::from(sig), 0, at, 8, 0, 0])
                })
                .collect();
            for r in b.run(&calls)? {
                leader.checked("rt_sigaction", r)?;
            }
            leader.read_mem(b.out, &mut raw)?;
        }
        None => {
            for (i, &sig) in sigs.iter().enumerate() {
                leader.inject(
                    entry,
                    regs,
                    "rt_sigaction",
                    libc::SYS_rt_sigaction,
                    [u64::from(sig), 0, scratch, 8, 0, 0],
                )?;
                leader.read_mem(scratch, &mut raw[i * SIZE..(i + 1) * SIZE])?;
            }
        }
    }
    Ok(sigs
        .iter()
        .zip(raw.chunks_exact(SIZE))
        .map(|(&sig, buf)| {
            let w =
                |i: usize| u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap_or_default());
            SigactionState {
                signo: sig,
                handler: w(0),
                flags: w(1),
                restorer: w(2),
                mask: w(3),
            }
        })
        .collect())
}

/// [`fd_owner`] of every descriptor, in batches: `F_GETOWN_EX` into 8 bytes of the answer
/// pages and `F_GETSIG` for each.
fn fd_owners_batched(b: &Batch<'_>, fds: &[i32]) -> Result<Vec<FdOwner>, DumpError> {
    // Answers for up to 1024 descriptors fit in the two pages.
    let mut owners = Vec::with_capacity(fds.len());
    for chunk in fds.chunks(1024) {
        b.tracee.write_mem(b.out, &vec![0u8; chunk.len() * 8])?;
        let mut calls = Vec::with_capacity(chunk.len() * 2);
        for (i, &fd) in chunk.iter().enumerate() {
            let at = b.out + (i * 8) as u64;
            calls.push((
                libc::SYS_fcntl,
                [fd as u64, sys::F_GETOWN_EX as u64, at, 0, 0, 0],
            ));
            calls.push((
                libc::SYS_fcntl,
                [fd as u64, sys::F_GETSIG as u64, 0, 0, 0, 0],
            ));
        }
        let results = b.run(&calls)?;
        let mut ex = vec![0u8; chunk.len() * 8];
        b.tracee.read_mem(b.out, &mut ex)?;
        for (i, r) in results.chunks_exact(2).enumerate() {
            // EBADF: an `O_PATH` descriptor, which has no owner.
            if r.iter().all(|&v| v == -libc::EBADF as i64) {
                owners.push(FdOwner::default());
                continue;
            }
            for (call, &v) in ["fcntl(F_GETOWN_EX)", "fcntl(F_GETSIG)"].iter().zip(r) {
                b.tracee.checked(call, v)?;
            }
            let kind = u32::from_le_bytes(ex[i * 8..i * 8 + 4].try_into().unwrap_or_default());
            let pid = i32::from_le_bytes(ex[i * 8 + 4..i * 8 + 8].try_into().unwrap_or_default());
            owners.push(FdOwner {
                kind: if pid == 0 { 0 } else { kind },
                pid,
                sig: r[1] as u32,
            });
        }
    }
    Ok(owners)
}

/// `F_GETOWN_EX` and `F_GETSIG` of descriptor `fd`, asked of the process (the owner's id is
/// then as the process sees it).
fn fd_owner(
    leader: &Tracee,
    entry: Entry,
    regs: &libc::user_regs_struct,
    scratch: u64,
    fd: i32,
) -> Result<FdOwner, DumpError> {
    // struct f_owner_ex { int type; pid_t pid; }
    leader.write_mem(scratch, &[0u8; 8])?;
    let r = leader.inject_raw(
        entry,
        regs,
        libc::SYS_fcntl,
        [fd as u64, sys::F_GETOWN_EX as u64, scratch, 0, 0, 0],
    )?;
    // EBADF: an `O_PATH` descriptor, which has no owner.
    if r == -libc::EBADF as i64 {
        return Ok(FdOwner::default());
    }
    leader.checked("fcntl(F_GETOWN_EX)", r)?;
    let mut ex = [0u8; 8];
    leader.read_mem(scratch, &mut ex)?;
    let kind = u32::from_le_bytes(ex[0..4].try_into().unwrap_or_default());
    let pid = i32::from_le_bytes(ex[4..8].try_into().unwrap_or_default());
    let sig = leader.inject(
        entry,
        regs,
        "fcntl(F_GETSIG)",
        libc::SYS_fcntl,
        [fd as u64, sys::F_GETSIG as u64, 0, 0, 0, 0],
    )? as u32;
    Ok(FdOwner {
        // Without an owner the type means nothing (and F_SETOWN_EX could not set it alone).
        kind: if pid == 0 { 0 } else { kind },
        pid,
        sig,
    })
}

/// A dnotify watch (`F_NOTIFY`) shows nowhere (not in fdinfo, and no call reads it back), but
/// setting one makes the process the I/O signal owner of the directory's open file
/// description, and nothing else gives a directory an owner but `F_SETOWN` itself (leases
/// are for regular files only): such a directory is refused, naming dnotify.
fn check_dnotify(fds: &[crate::state::FdState]) -> Result<(), DumpError> {
    match fds
        .iter()
        .find(|f| f.owner.pid != 0 && matches!(f.kind, crate::state::FdKind::Directory { .. }))
    {
        Some(f) => Err(DumpError::Unsupported(format!(
            "fd {}: a directory with an I/O signal owner, as a dnotify watch (F_NOTIFY) sets \
             one: the kernel does not show the watch (its events), so dnotify is not supported",
            f.fd
        ))),
        None => Ok(()),
    }
}

/// An I/O signal owner can be restored when it is the process itself, one of its threads, or
/// the process group it leads, or in a tree another member (`others`: PID as this process
/// sees it, whether it leads its group), which exists by the time the owners are set (its
/// threads may not: a thread of another member is not accepted). Any other process or group
/// is not part of the restore (it would be another one there, or none): refused, naming the
/// descriptor.
fn check_fd_owners(
    fds: &[crate::state::FdState],
    pid: i32,
    tids: &[i32],
    others: &[(i32, bool)],
) -> Result<(), DumpError> {
    const F_OWNER_TID: u32 = 0;
    const F_OWNER_PID: u32 = 1;
    const F_OWNER_PGRP: u32 = 2;
    for f in fds.iter().filter(|f| f.owner.pid != 0) {
        let (kind, id) = (f.owner.kind, f.owner.pid);
        let ok = match kind {
            F_OWNER_TID => tids.contains(&id),
            F_OWNER_PID => id == pid || others.iter().any(|&(p, _)| p == id),
            F_OWNER_PGRP => id == pid || others.iter().any(|&(p, leads)| p == id && leads),
            _ => false,
        };
        if !ok {
            let what = match kind {
                F_OWNER_TID => "thread",
                F_OWNER_PID => "process",
                F_OWNER_PGRP => "process group",
                _ => "owner of unknown type",
            };
            return Err(DumpError::Unsupported(format!(
                "fd {}: its I/O signals (F_SETOWN) go to {what} {id}, which is not this \
                 process{}: it would not be there after a restore",
                f.fd,
                if kind == F_OWNER_PGRP {
                    " (only a group the process or a member of its tree leads can be restored)"
                } else {
                    ", one of its threads or a member of its tree"
                },
            )));
        }
    }
    Ok(())
}

/// `RLIMIT_CPU` (0) … `RLIMIT_RTTIME` (15).
const RLIMIT_COUNT: u32 = 16;

/// Writes the image to `out` through a temporary file, fsyncs it and renames it into place, so
/// that a file at `out` is always a complete image.
fn write_image(
    tracees: &[&Tracee],
    tree: &TreeState,
    out: &Path,
    codec: Codec,
    seal: Option<&crate::image::seal::Key>,
) -> Result<WriteStats, DumpError> {
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let file_err = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| DumpError::ImageFile { step, path, source }
    };
    let file = File::create(&tmp).map_err(file_err("create", &tmp))?;
    let result = (|| {
        // Unbuffered: the writer hands each section to the file in one vectored write.
        let mut writer = ImageWriter::new_tree_sealed(file, tree, codec, seal)?;
        // The processes' pages one after the other, in tree order.
        for (t, state) in tracees.iter().zip(&tree.processes) {
            mm::write_pages(t, &state.mm.vmas, &mut writer, None)?;
        }
        let (file, stats) = writer.finish()?;
        file.sync_all().map_err(file_err("fsync", &tmp))?;
        // Checked again: something may have appeared at `out` while the image was written.
        check_output(out)?;
        std::fs::rename(&tmp, out).map_err(file_err("rename", out))?;
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(file_err("fsync", dir))?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
