//! The checkpoint model: everything a dump captures about one process, shared by `dump`,
//! `image` and `restore`. Types here are plain data; they never hold kernel handles.
//!
//! Addresses are absolute virtual addresses in the checkpointed process. Page data is not part
//! of the model: it travels as a separate stream whose order is given by [`VmaState::pages`]
//! (VMAs in order, runs in order, pages in order).

use serde::Serialize;

/// Size of a page on every supported architecture.
pub const PAGE_SIZE: u64 = 4096;

/// A whole checkpoint of one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessState {
    /// PID as the process sees itself (the innermost entry of `NSpid`).
    pub pid: i32,
    /// Parent, process group and session at dump time (informational).
    pub ppid: i32,
    /// Process group id at dump time.
    pub pgid: i32,
    /// Session id at dump time.
    pub sid: i32,
    /// `/proc/PID/comm`.
    pub comm: String,
    /// The executable (`/proc/PID/exe`).
    pub exe: FileRef,
    /// Real, effective, saved and filesystem ids.
    pub creds: CredsState,
    /// File mode creation mask.
    pub umask: u32,
    /// Working directory (`PATH (deleted)` when it was removed).
    pub cwd: String,
    /// The working directory's mode and owner when it was removed while the process was in
    /// it: made again at restore, entered, and removed again.
    pub cwd_removed: Option<CarriedDir>,
    /// The root directory (`/proc/PID/root`, a path from the host's `/`): `/` unless the
    /// process was put in a `chroot`. Every other path of the image is a host path too (the
    /// kernel shows paths from the reader's root), so the restore opens them all first and
    /// enters this root last.
    pub root: String,
    /// `personality(2)` value.
    pub personality: u32,
    /// Resource limits, one per resource the kernel reports.
    pub rlimits: Vec<RlimitState>,
    /// Address space.
    pub mm: MmState,
    /// Open file descriptors, sorted by number.
    pub fds: Vec<FdState>,
    /// Signal dispositions and process-wide pending signals.
    pub signals: SignalsState,
    /// Threads; the first is the thread-group leader.
    pub threads: Vec<ThreadState>,
    /// File locks and leases the process holds, re-taken once every descriptor is back.
    pub locks: Vec<LockState>,
    /// memfd files the process holds through a descriptor or a mapping, by inode.
    pub memfds: Vec<MemfdState>,
    /// SysV shared memory segments the process has attached, by id; in a private IPC
    /// namespace ([`ProcessState::ipc_ns`]), every segment of that namespace.
    pub sysv_shm: Vec<SysvShmState>,
    /// The process's own IPC namespace (`unshare(CLONE_NEWIPC)`, shared with no process
    /// outside the image): made again at restore with its SysV objects, ids and limits.
    /// `None` in the host's (ferry's) namespace.
    pub ipc_ns: Option<IpcNsState>,
    /// Files only this process holds and keeps writing, carried whole and made again at
    /// restore when missing (see [`CarriedFile`]).
    pub carried_files: Vec<CarriedFile>,
    /// Regular files deleted while mapped (and held by no descriptor), by inode, with their
    /// contents: made again at restore under their path and removed once mapped.
    pub mapped_deleted: Vec<MappedDeletedFile>,
    /// Attributes beyond credentials, and timers.
    pub attrs: AttrsState,
}

/// A regular file that was deleted while mapped (a POSIX shm object unlinked after `mmap`, a
/// library replaced on disk), carried whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappedDeletedFile {
    /// Its inode at dump time, the key of [`VmaKind::DeletedFile`].
    pub ino: u64,
    /// The path it had (`/proc/PID/maps` without ` (deleted)`).
    pub path: String,
    /// `st_mode & 07777`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// The data; gaps between extents are holes.
    pub extents: Vec<MemfdExtent>,
}

/// Process attributes and timers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct AttrsState {
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// Capability sets: inheritable, permitted, effective, bounding, ambient.
    pub caps: [u64; 5],
    /// `PR_GET_DUMPABLE`.
    pub dumpable: u32,
    /// `PR_GET_PDEATHSIG` (0 = none).
    pub pdeathsig: u32,
    /// `PR_GET_CHILD_SUBREAPER`.
    pub child_subreaper: bool,
    /// `/proc/PID/oom_score_adj`.
    pub oom_score_adj: i32,
    /// The audit login uid (`/proc/PID/loginuid`, `u32::MAX` when unset); `None` without
    /// audit in the kernel.
    pub loginuid: Option<u32>,
    /// The audit session id (`/proc/PID/sessionid`); no process can set it, a restore
    /// changes it.
    pub sessionid: Option<u32>,
    /// `/proc/PID/cgroup`, one entry per hierarchy.
    pub cgroups: Vec<CgroupState>,
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`.
    pub itimers: Vec<ItimerState>,
    /// POSIX timers (`timer_create`).
    pub posix_timers: Vec<PosixTimerState>,
    /// The controlling terminal of a session leader that has one.
    pub ctty: Option<CttyState>,
    /// The signal of the group stop the process was in (`SIGSTOP`, `SIGTSTP`, `SIGTTIN`,
    /// `SIGTTOU`: stopped by job control, state `T`); 0 when it was not stopped.
    pub stop_signal: u32,
    /// `membarrier(2)` private expedited registrations of its mm, as the `REGISTER` commands
    /// that made them (`MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED` 16, `_SYNC_CORE` 64,
    /// `_RSEQ` 256, or-ed).
    pub membarrier: u32,
    /// What a member of a tree shares with its parent (made with `clone` without
    /// `CLONE_THREAD`): `CLONE_FS` (root, working directory, umask) and `CLONE_FILES` (the
    /// descriptor table) bits; 0 for none (and for a root).
    pub shares_with_parent: u32,
    /// `/proc/PID/coredump_filter` (a property of the address space); `None` in an image
    /// that does not have it.
    pub coredump_filter: Option<u32>,
}

/// A session leader's controlling terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CttyState {
    /// Its device number (`/proc/PID/stat` field `tty_nr`).
    pub rdev: u64,
    /// Its path (`/dev/pts/N`, ...).
    pub path: String,
    /// The foreground process group (`/proc/PID/stat` field `tpgid`); 0 when none.
    pub fg_pgid: i32,
}

/// One line of `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupState {
    /// Hierarchy id (0 for cgroup v2).
    pub hierarchy: u32,
    /// Controllers of the hierarchy (`cpu,cpuacct`; empty for v2).
    pub controllers: String,
    /// Path inside the hierarchy.
    pub path: String,
}

/// An interval timer (`getitimer`), in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct ItimerState {
    /// `ITIMER_*`.
    pub which: u32,
    /// Interval.
    pub interval_us: u64,
    /// Time left.
    pub value_us: u64,
}

/// A POSIX timer, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct PosixTimerState {
    /// Timer id.
    pub id: i32,
    /// Clock id.
    pub clock: i32,
    /// Signal number.
    pub signo: u32,
    /// `sigev_value`.
    pub value: u64,
    /// `SIGEV_SIGNAL` (0), `SIGEV_NONE` (1), `SIGEV_THREAD` (2) or `SIGEV_THREAD_ID` (4).
    pub notify: u32,
    /// Thread id the signal goes to with `SIGEV_THREAD_ID` (as the process sees it).
    pub notify_tid: i32,
    /// Interval.
    pub interval_ns: u64,
    /// Time left (0 = disarmed).
    pub value_ns: u64,
    /// Overruns of the last expiry.
    pub overrun: i32,
}

/// Scheduling of one thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SchedState {
    /// Nice value.
    pub nice: i32,
    /// `SCHED_*` policy.
    pub policy: u32,
    /// Real-time priority.
    pub rt_priority: u32,
    /// `SCHED_RESET_ON_FORK`: children start with the default policy and nice 0.
    pub reset_on_fork: bool,
    /// CPU affinity as a bit mask, 64 CPUs a word.
    pub affinity: Vec<u64>,
}

/// A checkpoint of a process tree: a process and its descendants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeState {
    /// Live processes: the root first, every parent before its children. Their pages follow
    /// one another in the page stream in this order.
    pub processes: Vec<ProcessState>,
    /// Children that had exited and not been waited for (zombies), recreated so that their
    /// parent can still wait for them.
    pub zombies: Vec<ZombieState>,
}

impl TreeState {
    /// A tree of one process.
    pub fn single(process: ProcessState) -> Self {
        Self {
            processes: vec![process],
            zombies: Vec::new(),
        }
    }

    /// The root process.
    pub fn root(&self) -> Option<&ProcessState> {
        self.processes.first()
    }

    /// How sessions and process groups are rebuilt, per live process in tree order: whether
    /// it calls `setsid()` (the root, and every session leader), and the PID of the leader of
    /// the group it joins. The root leads a new session and group, as a single restored
    /// process does; a member of the root's original session or group follows the root.
    /// A session or group whose leader is outside the tree (other than the root's) cannot be
    /// rebuilt: the error names it.
    pub fn session_layout(&self) -> Result<Vec<SessionPlace>, String> {
        let Some(root) = self.processes.first() else {
            return Ok(Vec::new());
        };
        let mut out: Vec<SessionPlace> = Vec::with_capacity(self.processes.len());
        for (i, p) in self.processes.iter().enumerate() {
            if i == 0 {
                out.push(SessionPlace {
                    setsid: true,
                    sid: p.pid,
                    pgid: p.pid,
                });
                continue;
            }
            let parent = self.processes[..i]
                .iter()
                .position(|q| q.pid == p.ppid)
                .ok_or_else(|| {
                    format!("pid {}: its parent {} is not in the tree", p.pid, p.ppid)
                })?;
            let setsid = p.sid == p.pid;
            let sid = if setsid {
                p.pid
            } else if p.sid == self.processes[parent].sid {
                out[parent].sid
            } else {
                return Err(format!(
                    "pid {}: its session {} is neither its own nor its parent's; not supported",
                    p.pid, p.sid
                ));
            };
            let pgid = if p.pgid == p.pid {
                p.pid
            } else if let Some(j) = self.processes[..i].iter().position(|q| q.pid == p.pgid) {
                if out[j].sid != sid {
                    return Err(format!(
                        "pid {}: its process group {} belongs to another session",
                        p.pid, p.pgid
                    ));
                }
                p.pgid
            } else if p.pgid == root.pgid && sid == root.pid {
                root.pid
            } else {
                return Err(format!(
                    "pid {}: the leader of its process group {} is not in the tree; not supported",
                    p.pid, p.pgid
                ));
            };
            out.push(SessionPlace { setsid, sid, pgid });
        }
        Ok(out)
    }

    /// Stored pages of every process.
    pub fn stored_pages(&self) -> u64 {
        self.processes
            .iter()
            .flat_map(|p| &p.mm.vmas)
            .map(VmaState::stored_pages)
            .sum()
    }
}

/// Where a process of a tree goes in sessions and process groups (see
/// [`TreeState::session_layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPlace {
    /// It leads a session: `setsid()` as soon as it exists, before its children.
    pub setsid: bool,
    /// PID of its session's leader after the restore.
    pub sid: i32,
    /// PID of its group's leader after the restore.
    pub pgid: i32,
}

/// A child that had exited but was not waited for yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ZombieState {
    /// Its PID.
    pub pid: i32,
    /// Its parent (a live process of the tree).
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// Session.
    pub sid: i32,
    /// Wait status as `waitpid` reports it (`/proc/PID/stat` field 52).
    pub status: i32,
}

/// A path plus the identity of the file that was there at dump time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRef {
    /// Absolute path.
    pub path: String,
    /// What the file was.
    pub identity: FileIdentity,
}

/// Enough of `stat(2)` to tell whether the file at a path is still the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct FileIdentity {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// `st_size`.
    pub size: u64,
    /// `st_mtime` in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// `st_rdev` (device files).
    pub rdev: u64,
}

/// Credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct CredsState {
    /// Real, effective, saved, filesystem uid.
    pub uids: [u32; 4],
    /// Real, effective, saved, filesystem gid.
    pub gids: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// One `getrlimit` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RlimitState {
    /// `RLIMIT_*` number.
    pub resource: u32,
    /// Soft limit (`u64::MAX` = infinity).
    pub cur: u64,
    /// Hard limit.
    pub max: u64,
}

/// Address space: VMAs and the `mm_struct` fields `/proc/PID/stat` exposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct MmState {
    /// VMAs sorted by start address, non-overlapping.
    pub vmas: Vec<VmaState>,
    /// `start_code`.
    pub start_code: u64,
    /// `end_code`.
    pub end_code: u64,
    /// `start_data`.
    pub start_data: u64,
    /// `end_data`.
    pub end_data: u64,
    /// `start_brk`.
    pub start_brk: u64,
    /// Current program break.
    pub brk: u64,
    /// `start_stack`.
    pub start_stack: u64,
    /// `arg_start`.
    pub arg_start: u64,
    /// `arg_end`.
    pub arg_end: u64,
    /// `env_start`.
    pub env_start: u64,
    /// `env_end`.
    pub env_end: u64,
    /// `/proc/PID/auxv` as (type, value) words, terminated by `AT_NULL`.
    pub auxv: Vec<u64>,
    /// `mlockall(MCL_FUTURE)` in force (the mm's `def_flags`): the `MCL_FUTURE` and
    /// `MCL_ONFAULT` bits to give `mlockall` again, 0 when new mappings are not locked.
    pub lock_future: u32,
    /// `prctl(PR_GET_THP_DISABLE)`: 0, 1 (no THP at all) or 3 (`PR_THP_DISABLE_EXCEPT_ADVISED`:
    /// THP only where `MADV_HUGEPAGE` asks for it).
    pub thp_disable: u32,
    /// `prctl(PR_SET_MEMORY_MERGE)`: KSM merges every eligible mapping, new ones too.
    pub merge_any: bool,
    /// Linux native AIO contexts (`io_setup`), one per [`VmaKind::AioRing`] VMA, by address.
    pub aio_rings: Vec<AioRingState>,
}

/// A Linux native AIO context (`io_setup`): its ring, mapped at [`AioRingState::start`], whose
/// address is the context id the process holds. The ring's header and every event slot are
/// carried; the completed events not reaped yet are those from `head` up to `tail`. Requests
/// submitted and not completed are not (the kernel shows none of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AioRingState {
    /// Address of the ring: the context id (`aio_context_t`).
    pub start: u64,
    /// Length of the ring's mapping in bytes (whole pages).
    pub len: u64,
    /// `struct aio_ring` `id`: the context's index in the process's table of contexts, which
    /// the kernel reads back from the ring to find the context.
    pub id: u32,
    /// `nr`: event slots in the ring.
    pub nr: u32,
    /// `head`: the next event to reap.
    pub head: u32,
    /// `tail`: where the kernel puts the next completed event.
    pub tail: u32,
    /// `magic` (`AIO_RING_MAGIC`, 0xa10a10a1).
    pub magic: u32,
    /// `compat_features`.
    pub compat_features: u32,
    /// `incompat_features`.
    pub incompat_features: u32,
    /// `header_length`: the header's size, 32.
    pub header_length: u32,
    /// The `nr` event slots (`struct io_event`, 32 bytes each) as they are in the ring, reaped
    /// or not.
    pub events: Vec<u8>,
}

/// `AIO_RING_MAGIC`.
pub const AIO_RING_MAGIC: u32 = 0xa10a_10a1;
/// `sizeof(struct aio_ring)`: the ring's header.
pub const AIO_RING_HEADER: u64 = 32;
/// `sizeof(struct io_event)`.
pub const AIO_EVENT_SIZE: u64 = 32;

/// Per-VMA flags set by `madvise`/`mlock` (smaps `VmFlags`), restored by the same calls.
pub mod vmflag {
    /// `VM_LOCKED` (`lo`): `mlock`, `mlockall(MCL_CURRENT)`.
    pub const LOCKED: u32 = 1;
    /// `VM_LOCKONFAULT` (`lf`): `mlock2(MLOCK_ONFAULT)`, `mlockall(MCL_ONFAULT)`.
    pub const LOCKONFAULT: u32 = 1 << 1;
    /// `VM_DONTCOPY` (`dc`): `MADV_DONTFORK`.
    pub const DONTFORK: u32 = 1 << 2;
    /// `VM_DONTDUMP` (`dd`): `MADV_DONTDUMP`.
    pub const DONTDUMP: u32 = 1 << 3;
    /// `VM_WIPEONFORK` (`wf`): `MADV_WIPEONFORK`.
    pub const WIPEONFORK: u32 = 1 << 4;
    /// `VM_HUGEPAGE` (`hg`): `MADV_HUGEPAGE`.
    pub const HUGEPAGE: u32 = 1 << 5;
    /// `VM_NOHUGEPAGE` (`nh`): `MADV_NOHUGEPAGE`.
    pub const NOHUGEPAGE: u32 = 1 << 6;
    /// `VM_MERGEABLE` (`mg`): `MADV_MERGEABLE` (KSM).
    pub const MERGEABLE: u32 = 1 << 7;
    /// `VM_SEQ_READ` (`sr`): `MADV_SEQUENTIAL`.
    pub const SEQ_READ: u32 = 1 << 8;
    /// `VM_RAND_READ` (`rr`): `MADV_RANDOM`.
    pub const RAND_READ: u32 = 1 << 9;
    /// `VM_NORESERVE` (`nr`): `mmap(MAP_NORESERVE)`, no swap space accounted.
    pub const NORESERVE: u32 = 1 << 10;
    /// Every flag above.
    pub const ALL: u32 = (1 << 11) - 1;
    /// The smaps mnemonic of each flag.
    pub const NAMES: [(&str, u32); 11] = [
        ("lo", LOCKED),
        ("lf", LOCKONFAULT),
        ("dc", DONTFORK),
        ("dd", DONTDUMP),
        ("wf", WIPEONFORK),
        ("hg", HUGEPAGE),
        ("nh", NOHUGEPAGE),
        ("mg", MERGEABLE),
        ("sr", SEQ_READ),
        ("rr", RAND_READ),
        ("nr", NORESERVE),
    ];
}

/// Protection bits of a VMA (the `PROT_*` values).
pub mod prot {
    /// Readable.
    pub const READ: u32 = 1;
    /// Writable.
    pub const WRITE: u32 = 2;
    /// Executable.
    pub const EXEC: u32 = 4;
}

/// One mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmaState {
    /// First byte (page aligned).
    pub start: u64,
    /// One past the last byte (page aligned).
    pub end: u64,
    /// `PROT_*` bits (see [`prot`]).
    pub prot: u32,
    /// `MAP_SHARED` (true) or `MAP_PRIVATE`.
    pub shared: bool,
    /// Offset into the backing file, in bytes.
    pub pgoff: u64,
    /// What backs the mapping.
    pub kind: VmaKind,
    /// `VM_GROWSDOWN` (from smaps VmFlags `gd`).
    pub growsdown: bool,
    /// `VM_MAYWRITE` (smaps `mw`): a shared file mapping needs the file opened read-write.
    pub maywrite: bool,
    /// `madvise`/`mlock` flags (see [`vmflag`]).
    pub flags: u32,
    /// Present pages whose contents are stored in the page stream, as sorted, non-overlapping,
    /// non-adjacent runs inside `[start, end)`.
    pub pages: Vec<PageRun>,
    /// KiB of a private anonymous area mapped by other processes too (smaps `Shared_Clean` +
    /// `Shared_Dirty`): pages shared copy-on-write since a `fork`.
    pub cow_shared_kb: u64,
    /// Pages of a process of a tree that are its parent's very pages (the same page frame at
    /// the same address of an area of the same range and kind: shared copy-on-write since
    /// the `fork`), as sorted, non-overlapping runs inside `[start, end)` disjoint from
    /// [`Self::pages`]. They are not in the page stream: the restore forks the process from its
    /// restored parent and keeps the area, so that it shares them again.
    pub inherited: Vec<PageRun>,
    /// A live migration's final image: present pages the destination has already (sent in a
    /// pre-copy round and unchanged since), as sorted, non-overlapping runs inside
    /// `[start, end)` disjoint from [`Self::pages`] and [`Self::inherited`]. Not in the page
    /// stream.
    pub precopied: Vec<PageRun>,
}

impl VmaState {
    /// Number of stored pages.
    pub fn stored_pages(&self) -> u64 {
        self.pages.iter().map(|r| r.count).sum()
    }
}

/// KiB of each process's memory shared copy-on-write (`cow_shared_kb`) that a restore cannot
/// share again: all but the pages a process inherits from its parent in the tree and those a
/// child of it inherits from it ([`VmaState::inherited`]). What is left was shared with
/// processes outside the tree, or only between siblings, or in areas whose range differs
/// between the two (a stack grown since the fork).
pub fn cow_unrestorable_kb(processes: &[&ProcessState]) -> Vec<u64> {
    use std::collections::{HashMap, HashSet};
    let mut kept: Vec<HashMap<u64, HashSet<u64>>> = vec![HashMap::new(); processes.len()];
    for (i, p) in processes.iter().enumerate() {
        let parent = processes
            .iter()
            .position(|q| q.pid == p.ppid && q.pid != p.pid);
        for v in p.mm.vmas.iter().filter(|v| !v.inherited.is_empty()) {
            let pages = v
                .inherited
                .iter()
                .flat_map(|r| (0..r.count).map(move |k| r.start + k * PAGE_SIZE));
            for addr in pages {
                kept[i].entry(v.start).or_default().insert(addr);
                if let Some(j) = parent {
                    kept[j].entry(v.start).or_default().insert(addr);
                }
            }
        }
    }
    processes
        .iter()
        .zip(&kept)
        .map(|(p, kept)| {
            p.mm.vmas
                .iter()
                .map(|v| {
                    let n = kept.get(&v.start).map_or(0, |s| s.len() as u64);
                    v.cow_shared_kb.saturating_sub(n * PAGE_SIZE / 1024)
                })
                .sum()
        })
        .collect()
}

/// A run of consecutive pages whose contents are in the page stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PageRun {
    /// Address of the first page.
    pub start: u64,
    /// Number of pages.
    pub count: u64,
}

/// What backs a VMA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum VmaKind {
    /// Anonymous memory with no name.
    Anonymous,
    /// `[heap]`.
    Heap,
    /// `[stack]`.
    Stack,
    /// A regular file.
    File(FileRef),
    /// `MAP_SHARED|MAP_ANONYMOUS` (`/dev/zero (deleted)`): a shmem object. Mappings with the
    /// same `ino` (in one process, or in several processes of a tree after `fork`) are one
    /// object and come back as one.
    SharedAnonymous {
        /// Inode of the shmem object at dump time; 0 when unknown (an older image): the
        /// mapping then gets an object of its own.
        ino: u64,
        /// Size of the object in bytes (0 when unknown).
        size: u64,
    },
    /// `[vdso]`: provided by the kernel, moved into place at restore.
    Vdso,
    /// `[vvar]`.
    Vvar,
    /// `[vvar_vclock]`.
    VvarVclock,
    /// `[vsyscall]`: fixed by the kernel, never touched.
    Vsyscall,
    /// A memfd (`/memfd:NAME (deleted)`), one of [`ProcessState::memfds`].
    Memfd {
        /// Its inode number, the key into [`ProcessState::memfds`].
        ino: u64,
    },
    /// SysV shared memory attached with `shmat` (`/SYSV<key> (deleted)`), one of
    /// [`ProcessState::sysv_shm`].
    SysvShm {
        /// The segment's id.
        id: i32,
    },
    /// A regular file deleted while mapped (`PATH (deleted)`), one of
    /// [`ProcessState::mapped_deleted`].
    DeletedFile {
        /// The path it had.
        path: String,
        /// Its inode at dump time.
        ino: u64,
    },
    /// The ring of a Linux native AIO context (`/[aio] (deleted)`), one of
    /// [`MmState::aio_rings`] (same start): made by `io_setup` at restore and moved here.
    AioRing,
}

/// One open file descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FdState {
    /// Descriptor number.
    pub fd: i32,
    /// `FD_CLOEXEC`.
    pub cloexec: bool,
    /// File status flags from fdinfo (`O_ACCMODE`, `O_APPEND`, `O_NONBLOCK`, … without
    /// `O_CLOEXEC`).
    pub flags: u32,
    /// What the descriptor refers to.
    pub kind: FdKind,
    /// Signal-driven I/O: the owner (`F_GETOWN_EX`) and the signal (`F_GETSIG`) of the open
    /// file description. `O_ASYNC` itself is in `flags`.
    pub owner: FdOwner,
}

/// Who gets the I/O signals of a descriptor, and which signal (`fcntl(F_GETOWN_EX)`,
/// `fcntl(F_GETSIG)`). All zeros: none and `SIGIO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct FdOwner {
    /// `F_OWNER_TID` (0), `F_OWNER_PID` (1) or `F_OWNER_PGRP` (2); 0 when there is no owner.
    pub kind: u32,
    /// The owner's TID, PID or process group as the process sees it (0 = none).
    pub pid: i32,
    /// The signal sent instead of `SIGIO` (0 = `SIGIO`).
    pub sig: u32,
}

/// What a descriptor refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FdKind {
    /// A regular file, with its offset.
    File {
        /// The file.
        file: FileRef,
        /// `lseek` position.
        pos: u64,
    },
    /// A directory.
    Directory {
        /// The directory.
        file: FileRef,
        /// `lseek` position (getdents cookie).
        pos: u64,
    },
    /// A character device that is not a terminal (`/dev/null`, `/dev/urandom`, …).
    CharDevice {
        /// The device node.
        file: FileRef,
    },
    /// A terminal (`/dev/pts/N`, `/dev/ttyN`, `/dev/tty`).
    Tty {
        /// The device node.
        file: FileRef,
    },
    /// The master of a pseudo-terminal pair (`/dev/ptmx`), re-created at restore with its
    /// settings and the bytes queued both ways.
    PtyMaster(PtyState),
    /// The slave `/dev/pts/N` of a pair whose master is in the image (this process or a member
    /// of its tree): opened on the re-created pair, whose number may differ.
    PtySlave {
        /// The device node at dump time.
        file: FileRef,
        /// The pair's number (`N`).
        index: u32,
    },
    /// A pipe whose other end is outside the process.
    Pipe {
        /// Pipe inode (`pipe:[INO]`).
        ino: u64,
    },
    /// An epoll instance whose interest list names descriptors of this process.
    Epoll {
        /// The interest list, in fdinfo order.
        targets: Vec<EpollTarget>,
    },
    /// The same open file description as the lower descriptor `of` (made by `dup`, `dup2`,
    /// `F_DUPFD`): one offset, one set of status flags. Restored with `dup3`.
    Dup {
        /// The lowest descriptor of the description; never itself a `Dup`.
        of: i32,
    },
    /// A pipe that no process outside this one held at dump time (both ends here, or one end
    /// whose peer is gone): recreated with `pipe2`, with the bytes that were queued in it.
    /// Which end is in `FdState::flags` (`O_RDONLY` or `O_WRONLY`).
    LocalPipe {
        /// Pipe inode (`pipe:[INO]`) at dump time; the descriptors of one pipe share it.
        ino: u64,
        /// The pipe's buffer and contents; on the pipe's lowest descriptor only.
        queue: Option<PipeQueue>,
    },
    /// A FIFO (named pipe), reopened by its path.
    Fifo {
        /// The FIFO.
        file: FileRef,
        /// The buffer and contents, when no process outside this one held the FIFO at dump
        /// time (otherwise the bytes stay in the live FIFO); on its lowest descriptor only.
        queue: Option<PipeQueue>,
    },
    /// A file, FIFO, device node or directory deleted while open, made again at restore
    /// (and unlinked at once) with its mode, owner and times.
    DeletedFile {
        /// The path it had (without ` (deleted)`).
        path: String,
        /// Its inode number at dump time: the descriptions of one deleted object share it
        /// (the lowest descriptor carries the contents, the others reopen it).
        ino: u64,
        /// `st_mode` permission bits (`07777`).
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// `lseek` position.
        pos: u64,
        /// `st_atime` in nanoseconds since the epoch.
        atime_ns: i64,
        /// `st_mtime` in nanoseconds since the epoch.
        mtime_ns: i64,
        /// What it is, with what it holds.
        node: DeletedNode,
    },
    /// A socket (Unix, UDP or TCP).
    Socket(Box<SocketState>),
    /// A pidfd of the process itself or of another process of the tree (a zombie included).
    Pidfd {
        /// The PID it refers to, as the process sees it.
        pid: i32,
    },
    /// An eventfd.
    Eventfd {
        /// The counter.
        count: u64,
        /// `EFD_SEMAPHORE`.
        semaphore: bool,
    },
    /// A signalfd.
    Signalfd {
        /// The signals it reads.
        mask: u64,
    },
    /// A timerfd.
    Timerfd(TimerfdState),
    /// An inotify instance.
    Inotify {
        /// Its watches, by ascending watch descriptor.
        watches: Vec<InotifyWatch>,
    },
    /// A fanotify group (with no unread events: those are refused at dump).
    Fanotify(FanotifyState),
    /// A memfd, one of [`ProcessState::memfds`].
    Memfd {
        /// Its inode number, the key into [`ProcessState::memfds`].
        ino: u64,
        /// `lseek` position.
        pos: u64,
    },
    /// The same open file description as descriptor `fd` of the tree member `pid`, which
    /// comes earlier in the tree (shared after `fork`, or passed on): one offset, one set of
    /// status flags. Restored by taking it from that process (`pidfd_getfd`).
    Shared {
        /// The process holding the description first, in tree order.
        pid: i32,
        /// Its descriptor (never itself `Shared` or `Dup`).
        fd: i32,
    },
}

/// A regular file that belongs to the process's state: mapped shared or open for writing by
/// it, under a temporary directory (`/tmp`, `/var/tmp`, `/dev/shm`, `/run/user`), owned by its
/// effective uid, with one link (a JVM's `/tmp/hsperfdata_USER/PID`). Carried whole; made
/// again at restore when it is missing (another program may clean such files meanwhile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CarriedFile {
    /// Its path and what it was (size and mtime included).
    pub file: FileRef,
    /// Permission bits (`07777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Its data; what lies between extents is a hole.
    pub extents: Vec<MemfdExtent>,
    /// Its parent directories below the temporary directory, outermost first.
    pub dirs: Vec<CarriedDir>,
}

/// A directory made again, when missing, for a [`CarriedFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CarriedDir {
    /// Its path.
    pub path: String,
    /// Permission bits (`07777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// What a [`FdKind::DeletedFile`] is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum DeletedNode {
    /// A regular file.
    Regular {
        /// `st_size`.
        size: u64,
        /// Its data (what lies between extents is a hole); on the lowest descriptor of the
        /// file only, empty on the others.
        extents: Vec<MemfdExtent>,
    },
    /// A FIFO.
    Fifo {
        /// Its buffer and queued bytes; on the lowest descriptor of the FIFO only.
        queue: Option<PipeQueue>,
    },
    /// A character device node.
    CharDevice {
        /// `st_rdev`: the device opened again.
        rdev: u64,
    },
    /// A directory (empty: a removed directory holds nothing).
    Directory,
}

/// A pseudo-terminal pair, as its master sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PtyState {
    /// The pair's number (`TIOCGPTN`): its slave is `/dev/pts/N`.
    pub index: u32,
    /// The slave's settings (`TCGETS2`).
    pub termios: Termios,
    /// Window size (`TIOCGWINSZ`): rows, columns, width and height in pixels.
    pub winsize: [u16; 4],
    /// Packet mode (`TIOCPKT`).
    pub packet: bool,
    /// The slave is locked (`TIOCGPTLCK`): it cannot be opened.
    pub locked: bool,
    /// The slave was opened and closed again (the master polls `POLLHUP`, reads `EIO` once
    /// drained).
    pub hangup: bool,
    /// Bytes written to the master that the slave has not read (its input queue, after input
    /// processing; a partial line included).
    pub input: Vec<u8>,
    /// Bytes written to the slave that the master has not read (after output processing).
    pub output: Vec<u8>,
}

/// A terminal's settings (`struct termios2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Termios {
    /// Input modes.
    pub iflag: u32,
    /// Output modes.
    pub oflag: u32,
    /// Control modes.
    pub cflag: u32,
    /// Local modes.
    pub lflag: u32,
    /// Line discipline.
    pub line: u8,
    /// Control characters (`NCCS` = 19).
    pub cc: Vec<u8>,
    /// Input speed.
    pub ispeed: u32,
    /// Output speed.
    pub ospeed: u32,
}

/// A timerfd's clock and setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimerfdState {
    /// `CLOCK_*` id.
    pub clockid: i32,
    /// `timerfd_settime` flags (`TFD_TIMER_ABSTIME`, `TFD_TIMER_CANCEL_ON_SET`).
    pub settime_flags: u32,
    /// Next expiration in nanoseconds, 0 when disarmed: the time left at the dump, or with
    /// `TFD_TIMER_ABSTIME` the absolute time on the timer's clock.
    pub value_ns: u64,
    /// Period in nanoseconds (0: one-shot).
    pub interval_ns: u64,
    /// Expirations not read yet.
    pub ticks: u64,
}

/// A fanotify group, as its fdinfo shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FanotifyState {
    /// `fanotify_init` flags (`FAN_CLASS_*`, `FAN_REPORT_*`, `FAN_UNLIMITED_*`,
    /// `FAN_NONBLOCK`, `FAN_CLOEXEC` as given then): fdinfo's `fanotify flags`.
    pub flags: u32,
    /// `fanotify_init` `event_f_flags`, the status flags of the descriptors events carry
    /// (fdinfo's `event-flags`, with the `O_LARGEFILE` the kernel adds).
    pub event_flags: u32,
    /// Its marks, in fdinfo's order.
    pub marks: Vec<FanotifyMark>,
}

/// One fanotify mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FanotifyMark {
    /// What is marked.
    pub target: FanotifyTarget,
    /// The mark's flags as fdinfo's `mflags` shows them (`FAN_MARK_IGNORED_SURV_MODIFY`,
    /// `FAN_MARK_EVICTABLE`, `FAN_MARK_IGNORE`).
    pub mflags: u32,
    /// Events reported (`FAN_*`, with `FAN_ONDIR`/`FAN_EVENT_ON_CHILD`).
    pub mask: u32,
    /// Events ignored.
    pub ignored_mask: u32,
}

/// What a fanotify mark is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FanotifyTarget {
    /// One inode (`FAN_MARK_INODE`): the file or directory, found from its file handle.
    Inode(FileRef),
    /// A mount (`FAN_MARK_MOUNT`), by its mount point.
    Mount {
        /// The mount point.
        path: String,
    },
    /// A filesystem (`FAN_MARK_FILESYSTEM`), by the mount point of one of its mounts.
    Filesystem {
        /// A mount point of the filesystem.
        path: String,
    },
}

/// One inotify watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InotifyWatch {
    /// Watch descriptor.
    pub wd: i32,
    /// `IN_*` event mask.
    pub mask: u32,
    /// The watched file or directory, found from its file handle at dump time.
    pub file: FileRef,
}

/// A memfd: name, size, contents and seals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemfdState {
    /// Inode number at dump time (the key descriptors and mappings use).
    pub ino: u64,
    /// The name given to `memfd_create` (without `memfd:`).
    pub name: String,
    /// File mode bits (`st_mode & 07777`).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// `F_GET_SEALS`.
    pub seals: u32,
    /// The data; what lies between extents is a hole (zeros).
    pub extents: Vec<MemfdExtent>,
}

/// A SysV shared memory segment (`shmget`): what `/proc/sysvipc/shm` says of it, and its
/// contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysvShmState {
    /// Segment id (`shmid`); restored with the same id.
    pub id: i32,
    /// Key (`IPC_PRIVATE` is 0).
    pub key: i32,
    /// Permission bits (`shm_perm.mode & 0777`).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Owner uid and gid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Creator uid.
    pub cuid: u32,
    /// Creator gid.
    pub cgid: u32,
    /// Marked for removal (`IPC_RMID`): it goes once the last process detaches.
    pub removed: bool,
    /// Its non-zero pages, as read through the mappings of the dumped processes; what lies
    /// between extents is zero.
    pub extents: Vec<MemfdExtent>,
}

/// A private IPC namespace: its limits and its SysV message queues and semaphore sets (its
/// shared memory segments are [`ProcessState::sysv_shm`]), and the process's `SEM_UNDO`
/// adjustments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct IpcNsState {
    /// Its sysctls (`kernel/msgmax`, `kernel/sem`, `fs/mqueue/msg_max`, … relative to
    /// `/proc/sys`), with their text.
    pub sysctls: Vec<(String, String)>,
    /// Message queues, by id.
    pub msg_queues: Vec<MsgQueueState>,
    /// Semaphore sets, by id.
    pub sem_sets: Vec<SemSetState>,
    /// The process's `SEM_UNDO` adjustments (`semadj`), per set with any that is not zero.
    pub sem_undo: Vec<SemUndoState>,
}

/// What SysV IPC objects of every kind have: id, key, permissions and owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct IpcPermState {
    /// The id (`msqid`, `semid`); restored with the same id.
    pub id: i32,
    /// Key (`IPC_PRIVATE` is 0).
    pub key: i32,
    /// Permission bits (`mode & 0777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Creator uid.
    pub cuid: u32,
    /// Creator gid.
    pub cgid: u32,
}

/// Which process did the last operation on a SysV object, as the process sees it: none
/// (0), the process itself (its PID), or another process ([`IPC_PID_OTHER`]), which does not
/// exist after a restore.
pub const IPC_PID_OTHER: i32 = -1;

/// A SysV message queue and its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MsgQueueState {
    /// Id, key, permissions.
    pub perm: IpcPermState,
    /// `msg_qbytes`: the most bytes it holds.
    pub qbytes: u64,
    /// The last sender and receiver (`msg_lspid`, `msg_lrpid`; see [`IPC_PID_OTHER`]).
    pub lspid: i32,
    /// See `lspid`.
    pub lrpid: i32,
    /// The queued messages, oldest first.
    pub messages: Vec<SysvMsgState>,
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysvMsgState {
    /// `mtype` (positive).
    pub mtype: i64,
    /// The text.
    #[serde(serialize_with = "byte_count")]
    pub text: Vec<u8>,
}

/// A SysV semaphore set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SemSetState {
    /// Id, key, permissions.
    pub perm: IpcPermState,
    /// The values (`GETALL`), one per semaphore.
    pub values: Vec<u32>,
    /// The last process to operate on each (`GETPID`; see [`IPC_PID_OTHER`]).
    pub pids: Vec<i32>,
}

/// The process's `SEM_UNDO` adjustments on one set, one per semaphore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SemUndoState {
    /// The set's id.
    pub id: i32,
    /// `semadj` of each semaphore: what its exit adds back.
    pub adj: Vec<i32>,
}

/// Bytes of a memfd at an offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemfdExtent {
    /// Offset in the file.
    pub offset: u64,
    /// The bytes.
    #[serde(serialize_with = "byte_count")]
    pub data: Vec<u8>,
}

/// The buffer of a pipe and the bytes queued in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipeQueue {
    /// `F_GETPIPE_SZ`.
    pub size: u32,
    /// The queued bytes, oldest first (at most `size`).
    #[serde(serialize_with = "byte_count")]
    pub data: Vec<u8>,
}

/// Bulk contents appear in JSON as their length and a digest (the restore checker compares
/// contents through it; `ferry image inspect` stays short).
fn byte_count<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{} bytes, {}", data.len(), short_digest(data)))
}

/// The first 8 bytes of the SHA-256 of `data`, in hex.
fn short_digest(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What kind of lock a [`LockState`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LockKind {
    /// `flock(2)`: belongs to the open file description.
    Flock,
    /// POSIX record lock (`F_SETLK`): belongs to the process.
    Posix,
    /// Open file description record lock (`F_OFD_SETLK`).
    Ofd,
    /// Lease (`F_SETLEASE`).
    Lease,
}

/// A lock held at dump time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LockState {
    /// The descriptor it is taken through (for a POSIX lock, one open with a fitting mode).
    pub fd: i32,
    /// Which kind.
    pub kind: LockKind,
    /// Exclusive (`LOCK_EX`, `F_WRLCK`) rather than shared.
    pub write: bool,
    /// First byte (record locks; 0 otherwise).
    pub start: u64,
    /// Length in bytes, 0 = to the end of the file (record locks; 0 otherwise).
    pub len: u64,
}

/// One entry of an epoll interest list (fdinfo `tfd:` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EpollTarget {
    /// The watched descriptor number.
    pub fd: i32,
    /// `events` mask (`EPOLLIN`, `EPOLLET`, …).
    pub events: u32,
    /// `data` given back with each event.
    pub data: u64,
    /// The descriptor that holds the watched file: `fd` itself, unless that number was closed
    /// or given to another file since the entry was added (an entry lives as long as its file,
    /// keyed by the file and the number it was added under). Found with
    /// `kcmp(KCMP_EPOLL_TFD)`: `fd` when it matches, else the lowest descriptor that does.
    pub file_fd: i32,
    /// An edge-triggered watch whose event the process has not taken yet (it is on the
    /// instance's ready list: `epoll_wait` would report it). False for every other watch.
    pub pending: bool,
}

/// Signal dispositions and process-wide pending signals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SignalsState {
    /// One entry per signal 1..=64 except `SIGKILL` and `SIGSTOP`.
    pub actions: Vec<SigactionState>,
    /// Pending signals of the whole thread group, oldest first.
    pub shared_pending: Vec<SiginfoState>,
}

/// A kernel `struct sigaction` (x86_64 layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SigactionState {
    /// Signal number.
    pub signo: u32,
    /// `sa_handler` (0 = `SIG_DFL`, 1 = `SIG_IGN`).
    pub handler: u64,
    /// `sa_flags`.
    pub flags: u64,
    /// `sa_restorer`.
    pub restorer: u64,
    /// `sa_mask`.
    pub mask: u64,
}

/// A raw 128-byte `siginfo_t`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiginfoState {
    /// Signal number (`si_signo`), kept apart for validation and display.
    pub signo: u32,
    /// The whole `siginfo_t`, exactly 128 bytes.
    pub raw: Vec<u8>,
}

/// One thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadState {
    /// TID as the thread sees itself.
    pub tid: i32,
    /// General registers.
    pub regs: Regs,
    /// `NT_X86_XSTATE` contents (FPU/SSE/AVX…), as the kernel returned them.
    pub xstate: Vec<u8>,
    /// Blocked signals.
    pub sigmask: u64,
    /// Signals pending for this thread only, oldest first.
    pub pending: Vec<SiginfoState>,
    /// rseq registration, if any.
    pub rseq: Option<RseqState>,
    /// `set_robust_list` head and length.
    pub robust_list: (u64, u64),
    /// `set_tid_address` value.
    pub clear_child_tid: u64,
    /// Alternate signal stack.
    pub sigaltstack: SigaltstackState,
    /// Scheduling: nice, policy, affinity.
    pub sched: SchedState,
    /// seccomp mode and filters.
    pub seccomp: SeccompState,
    /// The thread's cgroups (`/proc/PID/task/TID/cgroup`) when they differ from the
    /// process's (a thread moved alone, cgroup v1 or threaded v2); empty when the same.
    pub cgroups: Vec<CgroupState>,
    /// Attributes each thread has of its own (name, I/O priority, timer slack, ...); `None`
    /// in an image that does not have them.
    pub attrs: Option<ThreadAttrsState>,
}

/// What each thread has of its own beyond registers, signals and scheduling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ThreadAttrsState {
    /// The thread's name (`/proc/PID/task/TID/comm`, `PR_SET_NAME`).
    pub comm: String,
    /// `ioprio_get(IOPRIO_WHO_PROCESS, tid)`: class << 13 | level.
    pub ioprio: u32,
    /// `PR_GET_TIMERSLACK`, in nanoseconds.
    pub timer_slack_ns: u64,
    /// `PR_GET_TSC`: `PR_TSC_ENABLE` (1) or `PR_TSC_SIGSEGV` (2).
    pub tsc: u32,
    /// `PR_MCE_KILL_GET`: `PR_MCE_KILL_LATE` (0), `_EARLY` (1) or `_DEFAULT` (2).
    pub mce_kill: u32,
    /// `PR_GET_SECUREBITS` (`SECBIT_*`, with their locks); `PR_GET_KEEPCAPS` is one of them.
    pub securebits: u32,
}

/// seccomp state of one thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SeccompState {
    /// 0 none, 1 strict, 2 filter.
    pub mode: u32,
    /// BPF programs (raw `struct sock_filter` arrays), oldest first.
    #[serde(serialize_with = "filter_sizes")]
    pub filters: Vec<Vec<u8>>,
}

/// seccomp programs appear as their length in instructions and a digest.
fn filter_sizes<S: serde::Serializer>(f: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        f.iter()
            .map(|p| format!("{} instructions, {}", p.len() / 8, short_digest(p))),
    )
}

/// rseq registration (`PTRACE_GET_RSEQ_CONFIGURATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RseqState {
    /// Address of `struct rseq`.
    pub ptr: u64,
    /// Registered length.
    pub len: u32,
    /// Signature.
    pub sig: u32,
}

/// `stack_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct SigaltstackState {
    /// `ss_sp`.
    pub sp: u64,
    /// `ss_flags` (`SS_DISABLE`, `SS_AUTODISARM`).
    pub flags: u32,
    /// `ss_size`.
    pub size: u64,
}

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

impl Regs {
    /// The registers a restored task resumes with. A task frozen inside a system call has
    /// `-ERESTART*` in `rax`; the kernel would have restarted the call (rewinding `rip` over
    /// the 2-byte `syscall`) or failed it with `EINTR` on the way back to user mode. A restored
    /// task resumes from a syscall-exit stop where that logic does not run, so it is applied
    /// here, as a signal without a handler would: restart, except `ERESTART_RESTARTBLOCK`,
    /// whose restart state lived in the old kernel task and becomes `EINTR`.
    pub fn resumed(mut self) -> Regs {
        if (self.orig_rax as i64) >= 0 {
            match -(self.rax as i64) {
                ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                    self.rax = self.orig_rax;
                    self.rip = self.rip.wrapping_sub(2);
                }
                ERESTART_RESTARTBLOCK => self.rax = (-i64::from(libc::EINTR)) as u64,
                _ => {}
            }
        }
        self.orig_rax = u64::MAX;
        self
    }
}

/// x86_64 `struct user_regs_struct`, field for field.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

impl From<libc::user_regs_struct> for Regs {
    fn from(r: libc::user_regs_struct) -> Self {
        Self {
            r15: r.r15,
            r14: r.r14,
            r13: r.r13,
            r12: r.r12,
            rbp: r.rbp,
            rbx: r.rbx,
            r11: r.r11,
            r10: r.r10,
            r9: r.r9,
            r8: r.r8,
            rax: r.rax,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            orig_rax: r.orig_rax,
            rip: r.rip,
            cs: r.cs,
            eflags: r.eflags,
            rsp: r.rsp,
            ss: r.ss,
            fs_base: r.fs_base,
            gs_base: r.gs_base,
            ds: r.ds,
            es: r.es,
            fs: r.fs,
            gs: r.gs,
        }
    }
}

impl From<Regs> for libc::user_regs_struct {
    fn from(r: Regs) -> Self {
        Self {
            r15: r.r15,
            r14: r.r14,
            r13: r.r13,
            r12: r.r12,
            rbp: r.rbp,
            rbx: r.rbx,
            r11: r.r11,
            r10: r.r10,
            r9: r.r9,
            r8: r.r8,
            rax: r.rax,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            orig_rax: r.orig_rax,
            rip: r.rip,
            cs: r.cs,
            eflags: r.eflags,
            rsp: r.rsp,
            ss: r.ss,
            fs_base: r.fs_base,
            gs_base: r.gs_base,
            ds: r.ds,
            es: r.es,
            fs: r.fs,
            gs: r.gs,
        }
    }
}

/// A socket. Several descriptors may name the same socket (same `ino`); it is rebuilt once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketState {
    /// Socket inode (`socket:[INO]`).
    pub ino: u64,
    /// `AF_UNIX`, `AF_INET` or `AF_INET6`.
    pub family: u32,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub sock_type: u32,
    /// Options that differ from a fresh socket's, set again first at restore.
    pub opts: Vec<SockOptState>,
    /// The classic BPF program attached with `SO_ATTACH_FILTER` (`struct sock_filter`s, 8
    /// bytes each), empty when none is.
    pub filter: Vec<u8>,
    /// Family-specific state.
    pub kind: SocketKind,
}

/// One socket option as raw bytes (`int`, `struct linger`, `struct timeval`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SockOptState {
    /// `SOL_SOCKET`, `IPPROTO_TCP`, `IPPROTO_IPV6`.
    pub level: i32,
    /// Option name (`SO_REUSEADDR`, …).
    pub name: i32,
    /// Value as `getsockopt` returned it.
    pub value: Vec<u8>,
}

/// Family-specific socket state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SocketKind {
    /// `AF_UNIX`.
    Unix(UnixSocketState),
    /// `AF_INET` / `AF_INET6`: TCP, UDP, UDP-Lite, ICMP ("ping") and raw sockets.
    Inet(InetSocketState),
    /// `AF_NETLINK`.
    Netlink(NetlinkSocketState),
    /// `AF_PACKET` (`SOCK_RAW` or `SOCK_DGRAM`).
    Packet(PacketSocketState),
}

/// A packet socket (without rings: those are refused at dump). Packets queued at the dump
/// are not carried (see docs/engine.md, "Sockets").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PacketSocketState {
    /// The protocol it receives, an `ETH_P_*` number in host order (`sll_protocol` of
    /// `getsockname`: the one given to `socket`, or to a later `bind`); 0: none. (`SO_PROTOCOL`
    /// reads 0 on packet sockets.)
    pub protocol: u32,
    /// The interface it is bound to, by name; empty: every interface.
    pub interface: String,
    /// `PACKET_ADD_MEMBERSHIP`s, as `packet_diag` lists them.
    pub memberships: Vec<PacketMembership>,
    /// `PACKET_FANOUT` as `getsockopt` reads it (group id, mode << 16, flags << 24); 0: not
    /// in a fanout group.
    pub fanout: u32,
    /// `PACKET_COPY_THRESH` (`packet_diag`: no `getsockopt` reads it).
    pub copy_thresh: u32,
}

/// One membership of a packet socket (`struct packet_mreq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PacketMembership {
    /// The interface, by name.
    pub interface: String,
    /// `PACKET_MR_MULTICAST`, `_PROMISC`, `_ALLMULTI` or `_UNICAST`.
    pub mr_type: u32,
    /// The link-layer address (multicast and unicast memberships).
    pub address: Vec<u8>,
    /// How many times it was added.
    pub count: u32,
}

/// A netlink socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetlinkSocketState {
    /// The netlink family (`NETLINK_ROUTE`, …), the socket's protocol.
    pub protocol: u32,
    /// Port id (`nl_pid` of `getsockname`); 0 while unbound.
    pub port_id: u32,
    /// Multicast groups joined, as `NETLINK_LIST_MEMBERSHIPS` reports them (bit `g - 1` of
    /// word `(g - 1) / 32` for group `g`).
    pub groups: Vec<u32>,
    /// Destination port id and group of `connect` (0, 0 when not connected).
    pub dst_pid: u32,
    /// See `dst_pid`.
    pub dst_group: u32,
}

/// A Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnixSocketState {
    /// Bound name: empty when unbound, a leading NUL byte for an abstract name, else an
    /// absolute path.
    pub name: Vec<u8>,
    /// For a path name: the socket file at dump time (`None` when it is gone: the socket is
    /// bound to its name again and the name removed at once).
    pub file: Option<FileIdentity>,
    /// Owner of the socket file (uid, gid).
    pub owner: (u32, u32),
    /// Where the socket file is when the process renamed it after binding (a JVM binds
    /// `/tmp/.java_pidPID.tmp`, then renames it to `/tmp/.java_pidPID`); `None` when it is
    /// at the bound name, or gone.
    pub file_path: Option<String>,
    /// `listen` backlog when listening.
    pub backlog: Option<u32>,
    /// Inode of the connected peer socket, 0 when not connected.
    pub peer_ino: u64,
    /// The peer is not in the process (kept under `--ext-unix-sk`).
    pub peer_external: bool,
    /// The peer's name (`getpeername`), used to reconnect to an external peer.
    pub peer_name: Vec<u8>,
    /// `sk_shutdown` bits: 1 = no more receives, 2 = no more sends.
    pub shutdown: u32,
    /// Queued incoming data: one element per datagram or record; for a stream one element,
    /// or one per run of bytes that ends with descriptors or starts with other credentials.
    pub queue: Vec<Vec<u8>>,
    /// For datagrams: the name of each one's sender (empty when unnamed), or no element at
    /// all when none has a name.
    pub queue_from: Vec<Vec<u8>>,
    /// For a listener: connections waiting to be accepted whose connecting socket is in the
    /// process (or the tree); they come back by connecting again. Others are dropped.
    pub pending: u32,
    /// Descriptors (`SCM_RIGHTS`) and credentials (`SCM_CREDENTIALS`) queued with messages
    /// of `queue`, by ascending message index.
    pub in_flight: Vec<InFlight>,
    /// A connecting stream or seqpacket socket whose connection a listener of the process
    /// (or tree) had not accepted yet, which had written into it (`SIOCOUTQ` above 0): the
    /// connection holds data that only accepting it can read.
    pub sent_unaccepted: bool,
    /// What it had written, one element per record (seqpacket) or one for a stream: read at
    /// dump by accepting the connection (only a dump that ends the process may), written
    /// again after it connects at restore. A read-back cannot accept, so has none.
    pub pending_sent: Vec<Vec<u8>>,
}

/// What a queued Unix socket message carries besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InFlight {
    /// Index of the message in [`UnixSocketState::queue`].
    pub message: u32,
    /// The descriptors passed with it, in order.
    pub fds: Vec<PassedFd>,
    /// The sender's credentials, when the socket reports them (`SO_PASSCRED`): the PID as
    /// the dumped process sees it, the uid and gid.
    pub creds: Option<(i32, u32, u32)>,
}

/// A descriptor in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PassedFd {
    /// The same open file description as descriptor `fd` of process `pid` (the dumped
    /// process or a member of its tree).
    Held {
        /// The process holding it.
        pid: i32,
        /// Its descriptor there.
        fd: i32,
    },
    /// A regular file or directory no process of the dump holds: opened again.
    File {
        /// The file.
        file: FileRef,
        /// File status flags (`O_ACCMODE`, `O_APPEND`, …).
        flags: u32,
        /// `lseek` position.
        pos: u64,
    },
    /// An end of a pipe: of one a descriptor of the dump holds (`pid`, `fd`: another
    /// description of that pipe, opened through it at restore), or of a pipe no process of
    /// the dump holds (`pid` 0), made anew with its bytes.
    Pipe {
        /// Pipe inode (`pipe:[INO]`) at dump time.
        ino: u64,
        /// The write end (else the read end).
        write: bool,
        /// File status flags (`O_NONBLOCK`, …), without the access mode.
        flags: u32,
        /// The process holding a descriptor of the pipe (either end), 0 when none does.
        pid: i32,
        /// Its lowest such descriptor.
        fd: i32,
        /// For a pipe no process holds: its buffer and bytes, on its first end in flight only.
        queue: Option<PipeQueue>,
    },
}

/// A UDP or TCP socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InetSocketState {
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, `IPPROTO_UDPLITE`, `IPPROTO_ICMP`/`ICMPV6` (a ping
    /// socket) or a raw socket's protocol.
    pub protocol: u32,
    /// Local address (unspecified address and port 0 when unbound).
    pub local: std::net::SocketAddr,
    /// Peer address when connected.
    pub peer: Option<std::net::SocketAddr>,
    /// `listen` backlog of a listening TCP socket.
    pub backlog: Option<u32>,
    /// Repair state of an established TCP connection.
    pub tcp: Option<TcpConnState>,
    /// `sk_shutdown` bits: 1 = no more receives, 2 = no more sends.
    pub shutdown: u32,
    /// Queued datagrams (UDP, UDP-Lite), oldest first.
    pub queue: Vec<Vec<u8>>,
    /// The sender of each queued datagram (unspecified address, port 0, when unknown).
    pub queue_from: Vec<std::net::SocketAddr>,
}

/// An established TCP connection, as `TCP_REPAIR` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpConnState {
    /// `write_seq`: sequence number after the last byte of the send queue.
    pub send_seq: u32,
    /// `rcv_nxt`: sequence number after the last byte of the receive queue.
    pub recv_seq: u32,
    /// Send queue: bytes sent but not acknowledged, then bytes not sent yet.
    pub send_queue: Vec<u8>,
    /// How many bytes at the end of `send_queue` were never sent.
    pub unsent: u32,
    /// Receive queue: bytes received and acknowledged that the process has not read.
    pub recv_queue: Vec<u8>,
    /// `mss_clamp`.
    pub mss: u32,
    /// Send window scale.
    pub snd_wscale: u32,
    /// Receive window scale.
    pub rcv_wscale: u32,
    /// `tcpi_options` (`TCPI_OPT_TIMESTAMPS` 1, `_SACK` 2, `_WSCALE` 4).
    pub options: u32,
    /// `TCP_TIMESTAMP`: the connection's timestamp clock.
    pub timestamp: u32,
    /// `struct tcp_repair_window`: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    pub window: [u32; 5],
    /// The TCP state: [`TCP_ESTABLISHED`] or one of a half-closed or closing connection
    /// ([`TCP_CONN_STATES`]). In those, `send_seq` counts the FIN the process sent and
    /// `recv_seq` the FIN it received (each takes a sequence number); the queues hold data
    /// only.
    pub state: u32,
    /// The connection waits in the accept queue of a listener of the process (or tree), not
    /// accepted yet: its other end is no socket yet, so the restore makes it again by a
    /// handshake with the restored listener instead of `TCP_REPAIR`.
    pub unaccepted: Option<TcpUnaccepted>,
}

/// A TCP connection of the process to one of its own listeners, not accepted yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpUnaccepted {
    /// How many bytes the process wrote into it that the listener's accept reads: those the
    /// pending (accepted) side holds and those still in the send queue.
    pub written: u64,
    /// Those bytes, read by accepting the connection at the end of a dump that ends the
    /// process; empty in a read-back, which must not accept.
    pub data: Vec<u8>,
    /// Its place in the listener's accept queue, 1 first; 0 when not known (a read-back).
    pub rank: u32,
}

/// `TCP_ESTABLISHED`.
pub const TCP_ESTABLISHED: u32 = 1;
/// `TCP_FIN_WAIT1`: the process shut down its side, its FIN not acknowledged yet.
pub const TCP_FIN_WAIT1: u32 = 4;
/// `TCP_FIN_WAIT2`: the process shut down its side, its FIN acknowledged.
pub const TCP_FIN_WAIT2: u32 = 5;
/// `TCP_CLOSE_WAIT`: the peer shut down its side.
pub const TCP_CLOSE_WAIT: u32 = 8;
/// `TCP_LAST_ACK`: both shut down, the peer first; the process's FIN not acknowledged.
pub const TCP_LAST_ACK: u32 = 9;
/// `TCP_CLOSING`: both shut down at once; the process's FIN not acknowledged.
pub const TCP_CLOSING: u32 = 11;
/// The states of a connection an image holds (through `TCP_REPAIR`).
pub const TCP_CONN_STATES: [u32; 6] = [
    TCP_ESTABLISHED,
    TCP_FIN_WAIT1,
    TCP_FIN_WAIT2,
    TCP_CLOSE_WAIT,
    TCP_LAST_ACK,
    TCP_CLOSING,
];

impl TcpConnState {
    /// The process sent a FIN (shut down its sending side).
    pub fn fin_sent(&self) -> bool {
        [TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK, TCP_CLOSING].contains(&self.state)
    }

    /// The peer acknowledged the process's FIN.
    pub fn fin_acked(&self) -> bool {
        self.state == TCP_FIN_WAIT2
    }

    /// The process received the peer's FIN.
    pub fn fin_received(&self) -> bool {
        [TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING].contains(&self.state)
    }
}

/// A TCP state's name as RFC 793 spells it.
pub fn tcp_state_name(state: u32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN-SENT",
        3 => "SYN-RECEIVED",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        6 => "TIME-WAIT",
        7 => "CLOSED",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "an unknown state",
    }
}
