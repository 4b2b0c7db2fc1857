//! Validation of a checkpoint against the invariants the image format promises: sorted,
//! non-overlapping, page aligned, inside user space, counts and sizes capped. The reader runs
//! it on every manifest before anyone acts on it; the writer runs it on every state it is
//! given, so a dump never produces an image the reader would refuse. Every error names the
//! offending field with its path, e.g. `mm.vmas[3].pages[0]`.

use std::fmt;

use crate::state::{AIO_EVENT_SIZE, AIO_RING_HEADER, AIO_RING_MAGIC, AioRingState};
use crate::state::{
    CarriedFile, CredsState, DeletedNode, FanotifyTarget, FdKind, FdState, LockKind, LockState,
    MemfdExtent, MemfdState, MmState, PAGE_SIZE, PageRun, PipeQueue, ProcessState, RlimitState,
    SiginfoState, SignalsState, SysvShmState, TreeState, VmaKind, VmaState, prot, vmflag,
};
use crate::state::{IPC_PID_OTHER, IpcNsState, IpcPermState};

/// One past the highest user-space address on x86_64 with 4-level paging (`TASK_SIZE_MAX`).
pub const USER_END: u64 = 0x7fff_ffff_f000;
/// Where the kernel puts `[vsyscall]`, the only mapping above user space.
pub const VSYSCALL_START: u64 = 0xffff_ffff_ff60_0000;
/// Highest PID the kernel can hand out (`PID_MAX_LIMIT`).
pub const MAX_PID: i32 = 1 << 22;
/// Most processes (and, separately, zombies) in one image.
pub const MAX_PROCESSES: usize = 1 << 16;
/// Highest descriptor number accepted (the default `fs.nr_open`).
pub const MAX_FD: i32 = 1 << 20;
/// Most VMAs accepted (the default `vm.max_map_count` is 65530).
pub const MAX_VMAS: usize = 65536;
/// Most page runs accepted over all VMAs.
pub const MAX_PAGE_RUNS: usize = 1 << 22;
/// Most descriptors accepted.
pub const MAX_FDS: usize = 1 << 20;
/// Most epoll interest-list entries accepted, per descriptor and over all of them.
pub const MAX_EPOLL_TARGETS: usize = 1 << 20;
/// Most control characters of a terminal's settings (the kernel has 19).
pub const MAX_TERMIOS_CC: usize = 32;
/// Most bytes queued one way in a pseudo-terminal pair (the kernel keeps 4 KiB in the line
/// discipline and up to 64 KiB in its buffers).
pub const MAX_PTY_QUEUE: usize = 1 << 20;
/// Most memfds accepted.
pub const MAX_MEMFDS: usize = 4096;
/// Most memfd extents accepted over all memfds.
pub const MAX_MEMFD_EXTENTS: usize = 1 << 20;
/// Most memfd bytes an image stores, over all memfds (the manifest holds them).
pub const MAX_MEMFD_BYTES: usize = 32 << 20;
/// Most AIO contexts accepted per process (each has a ring of at least one page).
pub const MAX_AIO_RINGS: usize = 65536;
/// Most bytes of AIO rings an image stores per process (the manifest holds them).
pub const MAX_AIO_RING_BYTES: usize = 32 << 20;
/// Most SysV shared memory segments accepted per process.
pub const MAX_SYSV_SHM: usize = 4096;
/// Most bytes of SysV shared memory an image stores per process (the manifest holds them).
pub const MAX_SYSV_SHM_BYTES: usize = 32 << 20;
/// Most SysV message queues, and semaphore sets, in an IPC namespace (the kernel's most,
/// `IPCMNI`).
pub const MAX_IPC_OBJECTS: usize = 32768;
/// Most sysctls of an IPC namespace.
pub const MAX_IPC_SYSCTLS: usize = 32;
/// Most queued SysV messages over all queues.
pub const MAX_SYSV_MSGS: usize = 1 << 20;
/// Most bytes of queued SysV messages an image stores (the manifest holds them).
pub const MAX_SYSV_MSG_BYTES: usize = 32 << 20;
/// Most semaphores over all sets (and `SEM_UNDO` adjustments over all sets).
pub const MAX_SEMS: usize = 1 << 20;
/// The sysctls of an IPC namespace that an image may set (relative to `/proc/sys`); no other
/// path is ever written.
pub const IPC_SYSCTLS: &[&str] = &[
    "kernel/msgmax",
    "kernel/msgmnb",
    "kernel/msgmni",
    "kernel/sem",
    "kernel/shmmax",
    "kernel/shmall",
    "kernel/shmmni",
    "kernel/shm_rmid_forced",
    "fs/mqueue/msg_max",
    "fs/mqueue/msgsize_max",
    "fs/mqueue/queues_max",
    "fs/mqueue/msg_default",
    "fs/mqueue/msgsize_default",
];
/// Most carried files accepted per process.
pub const MAX_CARRIED_FILES: usize = 256;
/// Largest carried file (holes included).
pub const MAX_CARRIED_SIZE: u64 = 1 << 40;
/// Largest memfd size accepted (holes included).
pub const MAX_MEMFD_SIZE: u64 = 1 << 46;
/// Longest memfd name (`memfd_create` accepts 249 bytes).
pub const MAX_MEMFD_NAME: usize = 249;
/// Every `F_SEAL_*` bit up to `F_SEAL_EXEC`.
pub const MEMFD_SEALS: u32 = 0x3f;
/// Most inotify watches accepted per instance.
pub const MAX_INOTIFY_WATCHES: usize = 1 << 20;
/// Most removed watches before the last inotify watch descriptor (each becomes a placeholder
/// watch at restore).
pub const MAX_INOTIFY_GAPS: usize = 4096;
/// Most marks accepted per fanotify group.
pub const MAX_FANOTIFY_MARKS: usize = 1 << 16;
/// `fanotify_init` flags a group may have (`FAN_CLOEXEC` … `FAN_REPORT_MNT`).
pub const FANOTIFY_INIT_FLAGS: u32 = 0x7fff;
/// `fanotify_init` event flags: `O_ACCMODE`, `O_APPEND`, `O_NONBLOCK`, `O_DSYNC`, `O_SYNC`,
/// `O_LARGEFILE`, `O_NOATIME`, `O_CLOEXEC`.
pub const FANOTIFY_EVENT_FLAGS: u32 =
    (libc::O_ACCMODE | libc::O_APPEND | libc::O_NONBLOCK | libc::O_DSYNC | libc::O_SYNC) as u32
        | (libc::O_NOATIME | libc::O_CLOEXEC) as u32
        | 0o100000; // O_LARGEFILE as the kernel has it (libc's is 0 on 64 bits)
/// Mark flags fdinfo shows: `FAN_MARK_IGNORED_SURV_MODIFY`, `FAN_MARK_EVICTABLE`,
/// `FAN_MARK_IGNORE`.
pub const FANOTIFY_MARK_FLAGS: u32 = 0x40 | 0x200 | 0x400;
/// Largest eventfd counter (`ULLONG_MAX - 1`).
pub const MAX_EVENTFD_COUNT: u64 = u64::MAX - 1;
/// Clocks a timerfd may use: `CLOCK_REALTIME`, `CLOCK_MONOTONIC`, `CLOCK_BOOTTIME`,
/// `CLOCK_REALTIME_ALARM`, `CLOCK_BOOTTIME_ALARM`.
pub const TIMERFD_CLOCKS: [i32; 5] = [0, 1, 7, 8, 9];
/// Most auxv words accepted.
pub const MAX_AUXV_WORDS: usize = 1024;
/// Most threads accepted.
pub const MAX_THREADS: usize = 65536;
/// Most supplementary groups (`NGROUPS_MAX`).
pub const MAX_GROUPS: usize = 65536;
/// Longest path accepted, in bytes (`PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Longest `comm` accepted, in bytes.
pub const MAX_COMM: usize = 64;
/// Largest `NT_X86_XSTATE` buffer accepted.
pub const MAX_XSTATE: usize = 64 * 1024;
/// Most queued signals accepted, per queue and over all threads' queues.
pub const MAX_PENDING: usize = 1 << 20;
/// Size of a `siginfo_t`.
pub const SIGINFO_LEN: usize = 128;
/// Most file locks and leases accepted.
pub const MAX_LOCKS: usize = 1 << 20;
/// Most seccomp filters of one thread.
pub const MAX_SECCOMP_FILTERS: usize = 256;
/// Most cgroup hierarchies.
pub const MAX_CGROUPS: usize = 64;
/// Most POSIX timers of one process.
pub const MAX_POSIX_TIMERS: usize = 1 << 16;
/// Most affinity words (64 CPUs each).
pub const MAX_AFFINITY_WORDS: usize = 128;
/// Largest pipe buffer accepted (`F_SETPIPE_SZ` allows up to 2 GiB for root).
pub const MAX_PIPE_SIZE: u32 = 1 << 31;
/// Number of `RLIMIT_*` resources (`RLIM_NLIMITS`).
pub const RLIM_NLIMITS: u32 = 16;

/// A manifest field that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ManifestError {
    /// Path of the field, e.g. `mm.vmas[3].pages[0]`.
    pub field: String,
    /// What is wrong with it.
    pub problem: ManifestProblem,
}

/// What is wrong with a manifest field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestProblem {
    /// A required message is absent.
    #[error("is missing")]
    Missing,
    /// A string or byte string is too long.
    #[error("is {len} bytes long, more than {max}")]
    TooLong {
        /// Length found.
        len: usize,
        /// Largest accepted.
        max: usize,
    },
    /// A list has too many entries.
    #[error("has {count} entries, more than {max}")]
    TooMany {
        /// Entries found.
        count: usize,
        /// Most accepted.
        max: usize,
    },
    /// A list that must not be empty is.
    #[error("is empty")]
    Empty,
    /// A number outside its range.
    #[error("{value} is outside {min}..={max}")]
    OutOfRange {
        /// Value found.
        value: i128,
        /// Smallest accepted.
        min: i128,
        /// Largest accepted.
        max: i128,
    },
    /// An enum value this reader does not know.
    #[error("unknown value {0}")]
    UnknownEnum(i32),
    /// Bits outside the accepted mask are set.
    #[error("{value:#o} has bits outside {allowed:#o}")]
    UnknownBits {
        /// Value found.
        value: u64,
        /// Bits accepted.
        allowed: u64,
    },
    /// An address or offset that must be page aligned is not.
    #[error("{0:#x} is not page aligned")]
    NotPageAligned(u64),
    /// A range whose start is not below its end.
    #[error("range {start:#x}..{end:#x} is empty or inverted")]
    EmptyRange {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// A VMA above user space (other than `[vsyscall]`).
    #[error("range {start:#x}..{end:#x} reaches above user space ({USER_END:#x})")]
    AboveUserSpace {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// An address above user space.
    #[error("{0:#x} is above user space")]
    AddressAboveUserSpace(u64),
    /// A `[vsyscall]` VMA somewhere else than where the kernel puts it.
    #[error("vsyscall range {start:#x}..{end:#x} is not the kernel's {VSYSCALL_START:#x}..+0x1000")]
    MisplacedVsyscall {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// A range that starts before the previous one ends.
    #[error("starts at {start:#x}, before the previous entry ends at {prev_end:#x}")]
    Overlap {
        /// Start of this entry.
        start: u64,
        /// End of the previous entry.
        prev_end: u64,
    },
    /// A page run that is not inside its VMA.
    #[error(
        "run of {count} pages at {start:#x} is not inside the vma {vma_start:#x}..{vma_end:#x}"
    )]
    RunOutsideVma {
        /// First page.
        start: u64,
        /// Pages.
        count: u64,
        /// VMA start.
        vma_start: u64,
        /// VMA end.
        vma_end: u64,
    },
    /// A page run of zero pages.
    #[error("run at {0:#x} has no pages")]
    EmptyRun(u64),
    /// Pages said to be inherited from the parent in a mapping that is not private anonymous
    /// memory.
    #[error("only private anonymous memory has pages inherited from the parent")]
    InheritedNotPrivateAnonymous,
    /// Pages said to be on the destination already (a live migration) in a mapping that is not
    /// private anonymous memory.
    #[error("only private anonymous memory has pre-copied pages")]
    PrecopiedNotPrivateAnonymous,
    /// Pages stored for a mapping the kernel provides.
    #[error("a {kind} mapping cannot have stored pages")]
    PagesInKernelMapping {
        /// The VMA kind.
        kind: &'static str,
    },
    /// A VMA's file is present or absent against its kind.
    #[error("file is {} for a {kind} mapping", if *.present { "present" } else { "absent" })]
    FileAgainstKind {
        /// The VMA kind.
        kind: &'static str,
        /// Whether a file was given.
        present: bool,
    },
    /// A VMA offset whose end overflows.
    #[error("offset {pgoff:#x} plus the mapping length overflows")]
    OffsetOverflow {
        /// The offset.
        pgoff: u64,
    },
    /// Entries that must be strictly increasing are not.
    #[error("{value} does not follow {prev} in increasing order")]
    NotIncreasing {
        /// This value.
        value: i64,
        /// The previous value.
        prev: i64,
    },
    /// A value that must be unique appears twice.
    #[error("{0} appears twice")]
    Duplicate(i64),
    /// A byte string of the wrong length.
    #[error("is {len} bytes long, expected exactly {expected}")]
    WrongLength {
        /// Length found.
        len: usize,
        /// Length required.
        expected: usize,
    },
    /// A siginfo whose `si_signo` differs from the signal number beside it.
    #[error("raw si_signo {raw} differs from signo {signo}")]
    SignoMismatch {
        /// `signo` field.
        signo: u32,
        /// First word of the raw siginfo.
        raw: i32,
    },
    /// A disposition for a signal whose disposition cannot be changed.
    #[error("signal {0} cannot have a disposition")]
    UncatchableSignal(u32),
    /// A path that is not absolute.
    #[error("path {0:?} is not absolute")]
    NotAbsolute(String),
    /// A carried file's directory that is not one of its parents.
    #[error("{0}")]
    NotAParent(String),
    /// A string with a NUL byte.
    #[error("contains a NUL byte")]
    ContainsNul,
    /// Two addresses that must be ordered are not.
    #[error("{low_name} {low:#x} is above {high_name} {high:#x}")]
    Inverted {
        /// Name of the lower bound.
        low_name: &'static str,
        /// Its value.
        low: u64,
        /// Name of the upper bound.
        high_name: &'static str,
        /// Its value.
        high: u64,
    },
    /// auxv with an odd number of words.
    #[error("has {0} words, not (type, value) pairs")]
    OddAuxv(usize),
    /// A soft limit above its hard limit.
    #[error("soft limit {cur} is above hard limit {max}")]
    SoftAboveHard {
        /// Soft.
        cur: u64,
        /// Hard.
        max: u64,
    },
    /// An id of -1, which the set*id calls read as "leave unchanged".
    #[error("{0} is not a valid id")]
    InvalidId(u32),
    /// A reference to a descriptor the image does not restore on its own.
    #[error("names fd {0}, which is not a descriptor of its own in the image")]
    NoSuchFd(i32),
    /// A PID that appears twice in a tree.
    #[error("pid {0} appears twice in the tree")]
    DuplicatePid(i32),
    /// A process whose parent does not come before it in the tree.
    #[error("parent {0} is not an earlier process of the tree")]
    NoSuchParent(i32),
    /// A reference to a descriptor of another process that is not restored before it.
    #[error("names fd {fd} of pid {pid}, which is not an earlier descriptor of its own")]
    NoSuchSharedFd {
        /// The process named.
        pid: i32,
        /// Its descriptor.
        fd: i32,
    },
    /// The first thread is not the thread-group leader.
    #[error("first thread has tid {tid}, not the pid {pid}")]
    LeaderNotFirst {
        /// TID of the first thread.
        tid: i32,
        /// PID.
        pid: i32,
    },
    /// A memfd inode that `memfds` does not list.
    #[error("memfd inode {0} is not in memfds")]
    UnknownMemfd(u64),
    /// A SysV shared memory id that `sysv_shm` does not list.
    #[error("SysV shared memory id {0} is not in sysv_shm")]
    UnknownSysvShm(i32),
    /// An AIO ring VMA with no ring in `mm.aio_rings`, or a ring with no VMA of its own.
    #[error("{0}")]
    AioRingMismatch(String),
    /// A semaphore set id that `ipc_ns.sem_sets` does not list.
    #[error("semaphore set id {0} is not in ipc_ns.sem_sets")]
    UnknownSemSet(i32),
    /// A sysctl that is not one of an IPC namespace's.
    #[error("{0:?} is not a sysctl of an IPC namespace")]
    NotAnIpcSysctl(String),
    /// A name that must be unique appears twice.
    #[error("{0:?} appears twice")]
    DuplicateName(String),
    /// A value that is not the numbers it must be.
    #[error("{value:?} is not {count} number(s)")]
    NotNumbers {
        /// The value.
        value: String,
        /// How many numbers it must be.
        count: usize,
    },
    /// A network interface name the kernel would not accept (`/`, whitespace or NUL).
    #[error("{0:?} is not an interface name")]
    NotAnInterfaceName(String),
}

pub(crate) fn err(field: impl Into<String>, problem: ManifestProblem) -> ManifestError {
    ManifestError {
        field: field.into(),
        problem,
    }
}

pub(crate) fn cap_count(field: &str, count: usize, max: usize) -> Result<(), ManifestError> {
    if count > max {
        return Err(err(field, ManifestProblem::TooMany { count, max }));
    }
    Ok(())
}

/// Checks a tree: each process on its own ([`validate`]), unique PIDs, every parent before
/// its children, zombies children of live processes, and descriptors shared with earlier
/// processes only. Field paths of the processes after the root start with `more[i].`.
pub fn validate_tree(t: &TreeState) -> Result<(), ManifestError> {
    cap_count("more", t.processes.len().saturating_sub(1), MAX_PROCESSES)?;
    cap_count("zombies", t.zombies.len(), MAX_PROCESSES)?;
    if t.processes.is_empty() {
        return Err(err("process", ManifestProblem::Missing));
    }
    let name = |i: usize| {
        if i == 0 {
            "process".to_string()
        } else {
            format!("more[{}]", i - 1)
        }
    };
    let mut seen = std::collections::HashSet::new();
    for (i, p) in t.processes.iter().enumerate() {
        validate(p).map_err(|mut e| {
            if i > 0 {
                e.field = format!("{}.{}", name(i), e.field);
            }
            e
        })?;
        if !seen.insert(p.pid) {
            return Err(err(
                format!("{}.pid", name(i)),
                ManifestProblem::DuplicatePid(p.pid),
            ));
        }
        if i > 0 && !t.processes[..i].iter().any(|q| q.pid == p.ppid) {
            return Err(err(
                format!("{}.ppid", name(i)),
                ManifestProblem::NoSuchParent(p.ppid),
            ));
        }
        for (j, f) in p.fds.iter().enumerate() {
            if let FdKind::Shared { pid, fd } = f.kind {
                let own = t.processes[..i]
                    .iter()
                    .find(|q| q.pid == pid)
                    .is_some_and(|q| {
                        q.fds.binary_search_by_key(&fd, |g| g.fd).is_ok_and(|k| {
                            !matches!(q.fds[k].kind, FdKind::Dup { .. } | FdKind::Shared { .. })
                        })
                    });
                if !own {
                    return Err(err(
                        format!("{}.fds[{j}].shared", name(i)),
                        ManifestProblem::NoSuchSharedFd { pid, fd },
                    ));
                }
            }
        }
    }
    for (i, z) in t.zombies.iter().enumerate() {
        let field = |f: &str| format!("zombies[{i}].{f}");
        check_range(field("pid"), z.pid, 1, MAX_PID)?;
        check_range(field("pgid"), z.pgid, 0, MAX_PID)?;
        check_range(field("sid"), z.sid, 0, MAX_PID)?;
        check_range(field("status"), z.status, 0, 0xffff)?;
        if !seen.insert(z.pid) {
            return Err(err(field("pid"), ManifestProblem::DuplicatePid(z.pid)));
        }
        if !t.processes.iter().any(|q| q.pid == z.ppid) {
            return Err(err(field("ppid"), ManifestProblem::NoSuchParent(z.ppid)));
        }
    }
    Ok(())
}

/// Checks every invariant of a checkpoint that the image format promises: the reader calls it
/// on each manifest, the writer on each state it is given.
pub fn validate(s: &ProcessState) -> Result<(), ManifestError> {
    check_range("pid", s.pid, 1, MAX_PID)?;
    check_range("ppid", s.ppid, 0, MAX_PID)?;
    check_range("pgid", s.pgid, 0, MAX_PID)?;
    check_range("sid", s.sid, 0, MAX_PID)?;
    check_string("comm", &s.comm, MAX_COMM)?;
    check_path("exe.path", &s.exe.path)?;
    validate_creds(&s.creds)?;
    if s.umask & !0o777 != 0 {
        return Err(err(
            "umask",
            ManifestProblem::UnknownBits {
                value: s.umask.into(),
                allowed: 0o777,
            },
        ));
    }
    check_path("cwd", &s.cwd)?;
    check_path("root", &s.root)?;
    if let Some(ns) = &s.ipc_ns {
        validate_ipc_ns(ns)?;
    }
    validate_rlimits(&s.rlimits)?;
    validate_memfds(&s.memfds)?;
    validate_mm(&s.mm)?;
    let memfd_known = |field: String, ino: u64| {
        if s.memfds.iter().any(|m| m.ino == ino) {
            Ok(())
        } else {
            Err(err(field, ManifestProblem::UnknownMemfd(ino)))
        }
    };
    validate_sysv_shm(&s.sysv_shm)?;
    validate_carried(&s.carried_files)?;
    let mut deleted_bytes = 0usize;
    for (i, m) in s.mapped_deleted.iter().enumerate() {
        check_path(&format!("mapped_deleted[{i}].path"), &m.path)?;
        check_range(format!("mapped_deleted[{i}].mode"), m.mode, 0, 0o7777)?;
        check_range(
            format!("mapped_deleted[{i}].size"),
            m.size,
            0,
            MAX_MEMFD_SIZE,
        )?;
        deleted_bytes += m.extents.iter().map(|e| e.data.len()).sum::<usize>();
        cap_count(
            "mapped_deleted[*].extents bytes",
            deleted_bytes,
            MAX_MEMFD_BYTES,
        )?;
    }
    for (i, v) in s.mm.vmas.iter().enumerate() {
        match v.kind {
            VmaKind::Memfd { ino } => memfd_known(format!("mm.vmas[{i}].memfd_ino"), ino)?,
            VmaKind::DeletedFile { ref path, ino } => {
                check_path(&format!("mm.vmas[{i}].file.path"), path)?;
                if !s.mapped_deleted.iter().any(|m| m.ino == ino) {
                    return Err(err(
                        format!("mm.vmas[{i}].file.identity.ino"),
                        ManifestProblem::UnknownMemfd(ino),
                    ));
                }
            }
            VmaKind::SysvShm { id } if !s.sysv_shm.iter().any(|m| m.id == id) => {
                return Err(err(
                    format!("mm.vmas[{i}].sysv_shm_id"),
                    ManifestProblem::UnknownSysvShm(id),
                ));
            }
            VmaKind::SharedAnonymous { size, .. } => {
                check_range(format!("mm.vmas[{i}].shmem_size"), size, 0, MAX_MEMFD_SIZE)?;
            }
            _ => {}
        }
    }
    for (i, f) in s.fds.iter().enumerate() {
        if let FdKind::Memfd { ino, .. } = f.kind {
            memfd_known(format!("fds[{i}].memfd.ino"), ino)?;
        }
    }
    validate_fds(&s.fds)?;
    validate_signals(&s.signals)?;
    validate_threads(s)?;
    validate_locks(&s.locks, &s.fds)?;
    validate_attrs(s)?;
    Ok(())
}

fn validate_attrs(s: &ProcessState) -> Result<(), ManifestError> {
    let a = &s.attrs;
    check_range("attrs.pdeathsig", a.pdeathsig, 0, 64)?;
    check_range("attrs.dumpable", a.dumpable, 0, 2)?;
    check_range("attrs.oom_score_adj", a.oom_score_adj, -1000, 1000)?;
    cap_count("attrs.cgroups", a.cgroups.len(), MAX_CGROUPS)?;
    for (i, c) in a.cgroups.iter().enumerate() {
        check_path(&format!("attrs.cgroups[{i}].path"), &c.path)?;
        check_string(
            &format!("attrs.cgroups[{i}].controllers"),
            &c.controllers,
            256,
        )?;
    }
    cap_count("attrs.itimers", a.itimers.len(), 3)?;
    for (i, t) in a.itimers.iter().enumerate() {
        check_range(format!("attrs.itimers[{i}].which"), t.which, 0, 2)?;
    }
    if ![0, 19, 20, 21, 22].contains(&a.stop_signal) {
        return Err(err(
            "attrs.stop_signal",
            ManifestProblem::UnknownEnum(a.stop_signal as i32),
        ));
    }
    if a.shares_with_parent & !((libc::CLONE_FS | libc::CLONE_FILES) as u32) != 0 {
        return Err(err(
            "attrs.shares_with_parent",
            ManifestProblem::UnknownEnum(a.shares_with_parent as i32),
        ));
    }
    if a.membarrier & !(16 | 64 | 256) != 0 {
        return Err(err(
            "attrs.membarrier",
            ManifestProblem::UnknownEnum(a.membarrier as i32),
        ));
    }
    cap_count("attrs.posix_timers", a.posix_timers.len(), MAX_POSIX_TIMERS)?;
    for (i, t) in a.posix_timers.iter().enumerate() {
        check_range(format!("attrs.posix_timers[{i}].id"), t.id, 0, i32::MAX)?;
        check_range(format!("attrs.posix_timers[{i}].signo"), t.signo, 0, 64)?;
        if ![0, 1, 2, 4].contains(&t.notify) {
            return Err(err(
                format!("attrs.posix_timers[{i}].notify"),
                ManifestProblem::UnknownEnum(t.notify as i32),
            ));
        }
        if t.notify == 4 && !s.threads.iter().any(|th| th.tid == t.notify_tid) {
            return Err(err(
                format!("attrs.posix_timers[{i}].notify_tid"),
                ManifestProblem::OutOfRange {
                    value: t.notify_tid.into(),
                    min: 1,
                    max: MAX_PID.into(),
                },
            ));
        }
    }
    for (i, t) in s.threads.iter().enumerate() {
        check_range(format!("threads[{i}].seccomp.mode"), t.seccomp.mode, 0, 2)?;
        cap_count(
            &format!("threads[{i}].seccomp.filters"),
            t.seccomp.filters.len(),
            MAX_SECCOMP_FILTERS,
        )?;
        for (j, f) in t.seccomp.filters.iter().enumerate() {
            if f.is_empty() || !f.len().is_multiple_of(8) || f.len() > 8 * 4096 {
                return Err(err(
                    format!("threads[{i}].seccomp.filters[{j}]"),
                    ManifestProblem::OutOfRange {
                        value: f.len() as i128,
                        min: 8,
                        max: 8 * 4096,
                    },
                ));
            }
        }
        check_range(format!("threads[{i}].sched.nice"), t.sched.nice, -20, 19)?;
        // SCHED_OTHER, FIFO, RR, BATCH, IDLE (SCHED_DEADLINE is refused at dump).
        if ![0, 1, 2, 3, 5].contains(&t.sched.policy) {
            return Err(err(
                format!("threads[{i}].sched.policy"),
                ManifestProblem::OutOfRange {
                    value: t.sched.policy.into(),
                    min: 0,
                    max: 5,
                },
            ));
        }
        let (lo, hi) = if matches!(t.sched.policy, 1 | 2) {
            (1, 99)
        } else {
            (0, 0)
        };
        check_range(
            format!("threads[{i}].sched.rt_priority"),
            t.sched.rt_priority,
            lo,
            hi,
        )?;
        cap_count(
            &format!("threads[{i}].sched.affinity"),
            t.sched.affinity.len(),
            MAX_AFFINITY_WORDS,
        )?;
        if let Some(a) = &t.attrs {
            check_string(&format!("threads[{i}].attrs.comm"), &a.comm, MAX_COMM)?;
            check_range(format!("threads[{i}].attrs.tsc"), a.tsc, 0, 2)?;
            check_range(format!("threads[{i}].attrs.mce_kill"), a.mce_kill, 0, 2)?;
            // SECURE_ALL_BITS and SECURE_ALL_LOCKS.
            check_range(
                format!("threads[{i}].attrs.securebits"),
                a.securebits,
                0,
                0xff,
            )?;
            // IOPRIO_CLASS_IDLE (3) is the highest class, 13 bits of data below it.
            check_range(
                format!("threads[{i}].attrs.ioprio"),
                a.ioprio,
                0,
                (4 << 13) - 1,
            )?;
        }
    }
    Ok(())
}

fn check_range<T: Into<i128> + Copy>(
    field: impl fmt::Display,
    value: T,
    min: T,
    max: T,
) -> Result<(), ManifestError> {
    let (value, min, max) = (value.into(), min.into(), max.into());
    if value < min || value > max {
        return Err(err(
            field.to_string(),
            ManifestProblem::OutOfRange { value, min, max },
        ));
    }
    Ok(())
}

fn check_string(field: &str, s: &str, max: usize) -> Result<(), ManifestError> {
    if s.len() > max {
        return Err(err(field, ManifestProblem::TooLong { len: s.len(), max }));
    }
    if s.contains('\0') {
        return Err(err(field, ManifestProblem::ContainsNul));
    }
    Ok(())
}

fn check_path(field: &str, path: &str) -> Result<(), ManifestError> {
    check_string(field, path, MAX_PATH)?;
    if !path.starts_with('/') {
        return Err(err(field, ManifestProblem::NotAbsolute(path.to_owned())));
    }
    Ok(())
}

fn validate_creds(c: &CredsState) -> Result<(), ManifestError> {
    const NAMES: [&str; 4] = ["ruid", "euid", "suid", "fsuid"];
    const GNAMES: [&str; 4] = ["rgid", "egid", "sgid", "fsgid"];
    for (name, id) in NAMES.iter().zip(c.uids).chain(GNAMES.iter().zip(c.gids)) {
        if id == u32::MAX {
            return Err(err(format!("creds.{name}"), ManifestProblem::InvalidId(id)));
        }
    }
    cap_count("creds.groups", c.groups.len(), MAX_GROUPS)?;
    if let Some((i, g)) = c.groups.iter().enumerate().find(|(_, g)| **g == u32::MAX) {
        return Err(err(
            format!("creds.groups[{i}]"),
            ManifestProblem::InvalidId(*g),
        ));
    }
    Ok(())
}

fn validate_rlimits(rlimits: &[RlimitState]) -> Result<(), ManifestError> {
    cap_count("rlimits", rlimits.len(), RLIM_NLIMITS as usize)?;
    let mut seen = 0u32;
    for (i, r) in rlimits.iter().enumerate() {
        let field = || format!("rlimits[{i}]");
        check_range(
            format!("{}.resource", field()),
            r.resource,
            0,
            RLIM_NLIMITS - 1,
        )?;
        let bit = 1u32 << r.resource;
        if seen & bit != 0 {
            return Err(err(
                format!("{}.resource", field()),
                ManifestProblem::Duplicate(r.resource.into()),
            ));
        }
        seen |= bit;
        if r.cur > r.max {
            return Err(err(
                field(),
                ManifestProblem::SoftAboveHard {
                    cur: r.cur,
                    max: r.max,
                },
            ));
        }
    }
    Ok(())
}

fn kind_name(k: &VmaKind) -> &'static str {
    match k {
        VmaKind::Anonymous => "anonymous",
        VmaKind::Heap => "heap",
        VmaKind::Stack => "stack",
        VmaKind::File(_) => "file",
        VmaKind::SharedAnonymous { .. } => "shared anonymous",
        VmaKind::SysvShm { .. } => "sysv shm",
        VmaKind::AioRing => "aio ring",
        VmaKind::Vdso => "vdso",
        VmaKind::Vvar => "vvar",
        VmaKind::VvarVclock => "vvar_vclock",
        VmaKind::Vsyscall => "vsyscall",
        VmaKind::Memfd { .. } => "memfd",
        VmaKind::DeletedFile { .. } => "deleted file",
    }
}

fn validate_carried(files: &[CarriedFile]) -> Result<(), ManifestError> {
    cap_count("carried_files", files.len(), MAX_CARRIED_FILES)?;
    let mut bytes = 0usize;
    for (i, c) in files.iter().enumerate() {
        let field = |f: &str| format!("carried_files[{i}].{f}");
        check_path(&field("file.path"), &c.file.path)?;
        for (j, d) in c.dirs.iter().enumerate() {
            check_path(&field(&format!("dirs[{j}].path")), &d.path)?;
            if !c.file.path.starts_with(&format!("{}/", d.path)) {
                return Err(err(
                    field(&format!("dirs[{j}].path")),
                    ManifestProblem::NotAParent(format!(
                        "{} is not a parent of {}",
                        d.path, c.file.path
                    )),
                ));
            }
        }
        for (what, mode) in std::iter::once(("mode".to_string(), c.mode)).chain(
            c.dirs
                .iter()
                .enumerate()
                .map(|(j, d)| (format!("dirs[{j}].mode"), d.mode)),
        ) {
            if mode & !0o7777 != 0 {
                return Err(err(
                    field(&what),
                    ManifestProblem::UnknownBits {
                        value: mode.into(),
                        allowed: 0o7777,
                    },
                ));
            }
        }
        check_range(
            field("file.identity.size"),
            c.file.identity.size,
            0,
            MAX_CARRIED_SIZE,
        )?;
        check_extents(
            &format!("carried_files[{i}]"),
            "carried_files[*].extents[*].data",
            &c.extents,
            c.file.identity.size,
            &mut bytes,
            MAX_MEMFD_BYTES,
        )?;
    }
    Ok(())
}

/// A pid of a SysV object's last operation: none, the process's own, or another's.
fn check_ipc_pid(field: String, pid: i32) -> Result<(), ManifestError> {
    check_range(field, pid, IPC_PID_OTHER, MAX_PID)
}

fn check_ipc_perm(field: &str, p: &IpcPermState, ids: &mut Vec<i32>) -> Result<(), ManifestError> {
    check_range(format!("{field}.id"), p.id, 0, i32::MAX)?;
    if ids.contains(&p.id) {
        return Err(err(
            format!("{field}.id"),
            ManifestProblem::Duplicate(p.id.into()),
        ));
    }
    ids.push(p.id);
    if p.mode & !0o777 != 0 {
        return Err(err(
            format!("{field}.mode"),
            ManifestProblem::UnknownBits {
                value: p.mode.into(),
                allowed: 0o777,
            },
        ));
    }
    for (name, id) in [
        ("uid", p.uid),
        ("gid", p.gid),
        ("cuid", p.cuid),
        ("cgid", p.cgid),
    ] {
        if id == u32::MAX {
            return Err(err(
                format!("{field}.{name}"),
                ManifestProblem::InvalidId(id),
            ));
        }
    }
    Ok(())
}

fn validate_ipc_ns(ns: &IpcNsState) -> Result<(), ManifestError> {
    cap_count("ipc_ns.sysctls", ns.sysctls.len(), MAX_IPC_SYSCTLS)?;
    for (i, (name, value)) in ns.sysctls.iter().enumerate() {
        if !IPC_SYSCTLS.contains(&name.as_str()) {
            return Err(err(
                format!("ipc_ns.sysctls[{i}].name"),
                ManifestProblem::NotAnIpcSysctl(name.clone()),
            ));
        }
        if ns.sysctls[..i].iter().any(|(n, _)| n == name) {
            return Err(err(
                format!("ipc_ns.sysctls[{i}].name"),
                ManifestProblem::DuplicateName(name.clone()),
            ));
        }
        check_string(&format!("ipc_ns.sysctls[{i}].value"), value, 64)?;
        let words: Vec<&str> = value.split_whitespace().collect();
        let want = if name == "kernel/sem" { 4 } else { 1 };
        if words.len() != want || words.iter().any(|w| w.parse::<i128>().is_err()) {
            return Err(err(
                format!("ipc_ns.sysctls[{i}].value"),
                ManifestProblem::NotNumbers {
                    value: value.clone(),
                    count: want,
                },
            ));
        }
    }
    cap_count("ipc_ns.msg_queues", ns.msg_queues.len(), MAX_IPC_OBJECTS)?;
    let (mut ids, mut messages, mut bytes) = (Vec::new(), 0usize, 0usize);
    for (i, q) in ns.msg_queues.iter().enumerate() {
        let field = format!("ipc_ns.msg_queues[{i}]");
        check_ipc_perm(&format!("{field}.perm"), &q.perm, &mut ids)?;
        check_range(format!("{field}.qbytes"), q.qbytes, 0, i32::MAX as u64)?;
        check_ipc_pid(format!("{field}.lspid"), q.lspid)?;
        check_ipc_pid(format!("{field}.lrpid"), q.lrpid)?;
        messages += q.messages.len();
        cap_count("ipc_ns.msg_queues[*].messages", messages, MAX_SYSV_MSGS)?;
        for (j, m) in q.messages.iter().enumerate() {
            check_range(format!("{field}.messages[{j}].mtype"), m.mtype, 1, i64::MAX)?;
            bytes += m.text.len();
            cap_count(
                "ipc_ns.msg_queues[*].messages[*].text bytes",
                bytes,
                MAX_SYSV_MSG_BYTES,
            )?;
        }
    }
    cap_count("ipc_ns.sem_sets", ns.sem_sets.len(), MAX_IPC_OBJECTS)?;
    let (mut ids, mut sems) = (Vec::new(), 0usize);
    for (i, s) in ns.sem_sets.iter().enumerate() {
        let field = format!("ipc_ns.sem_sets[{i}]");
        check_ipc_perm(&format!("{field}.perm"), &s.perm, &mut ids)?;
        // SEMMSL is at most 32000.
        check_range(format!("{field}.values"), s.values.len() as u64, 1, 32000)?;
        if s.pids.len() != s.values.len() {
            return Err(err(
                format!("{field}.pids"),
                ManifestProblem::WrongLength {
                    len: s.pids.len(),
                    expected: s.values.len(),
                },
            ));
        }
        sems += s.values.len();
        cap_count("ipc_ns.sem_sets[*].values", sems, MAX_SEMS)?;
        for (j, v) in s.values.iter().enumerate() {
            // SEMVMX.
            check_range(format!("{field}.values[{j}]"), *v, 0, 32767)?;
        }
        for (j, p) in s.pids.iter().enumerate() {
            check_ipc_pid(format!("{field}.pids[{j}]"), *p)?;
        }
    }
    cap_count("ipc_ns.sem_undo", ns.sem_undo.len(), MAX_IPC_OBJECTS)?;
    for (i, u) in ns.sem_undo.iter().enumerate() {
        let field = format!("ipc_ns.sem_undo[{i}]");
        if ns.sem_undo[..i].iter().any(|o| o.id == u.id) {
            return Err(err(
                format!("{field}.id"),
                ManifestProblem::Duplicate(u.id.into()),
            ));
        }
        let set = ns
            .sem_sets
            .iter()
            .find(|s| s.perm.id == u.id)
            .ok_or_else(|| err(format!("{field}.id"), ManifestProblem::UnknownSemSet(u.id)))?;
        if u.adj.len() != set.values.len() {
            return Err(err(
                format!("{field}.adj"),
                ManifestProblem::WrongLength {
                    len: u.adj.len(),
                    expected: set.values.len(),
                },
            ));
        }
        for (j, a) in u.adj.iter().enumerate() {
            // SEMAEM.
            check_range(format!("{field}.adj[{j}]"), *a, -32768, 32767)?;
        }
    }
    Ok(())
}

fn validate_sysv_shm(segs: &[SysvShmState]) -> Result<(), ManifestError> {
    cap_count("sysv_shm", segs.len(), MAX_SYSV_SHM)?;
    let (mut extents, mut bytes) = (0usize, 0usize);
    for (i, m) in segs.iter().enumerate() {
        let field = |f: &str| format!("sysv_shm[{i}].{f}");
        if segs[..i].iter().any(|o| o.id == m.id) {
            return Err(err(field("id"), ManifestProblem::Duplicate(m.id.into())));
        }
        check_range(field("id"), m.id, 0, i32::MAX)?;
        if m.mode & !0o777 != 0 {
            return Err(err(
                field("mode"),
                ManifestProblem::UnknownBits {
                    value: m.mode.into(),
                    allowed: 0o777,
                },
            ));
        }
        check_range(field("size"), m.size, 1, MAX_MEMFD_SIZE)?;
        extents = extents.saturating_add(m.extents.len());
        cap_count("sysv_shm[*].extents", extents, MAX_MEMFD_EXTENTS)?;
        check_extents(
            &format!("sysv_shm[{i}]"),
            "sysv_shm[*].extents[*].data",
            &m.extents,
            m.size,
            &mut bytes,
            MAX_SYSV_SHM_BYTES,
        )?;
    }
    Ok(())
}

/// The extents of a file of `size` bytes (`owner` names it in errors): in order, not
/// overlapping, inside the file, their data adding to `bytes` (over every file of a kind),
/// which may not pass `max_bytes` (`total` names that sum in errors).
fn check_extents(
    owner: &str,
    total: &str,
    extents: &[MemfdExtent],
    size: u64,
    bytes: &mut usize,
    max_bytes: usize,
) -> Result<(), ManifestError> {
    let mut prev_end = 0u64;
    for (j, e) in extents.iter().enumerate() {
        let field = format!("{owner}.extents[{j}]");
        *bytes = bytes.saturating_add(e.data.len());
        if *bytes > max_bytes {
            return Err(err(
                total,
                ManifestProblem::TooLong {
                    len: *bytes,
                    max: max_bytes,
                },
            ));
        }
        if e.offset < prev_end {
            return Err(err(
                format!("{field}.offset"),
                ManifestProblem::Overlap {
                    start: e.offset,
                    prev_end,
                },
            ));
        }
        // `size` is capped far below u64::MAX, so a sum that stays under it cannot wrap.
        let end = e.offset.saturating_add(e.data.len() as u64);
        check_range(format!("{field}.offset"), end, 0, size)?;
        prev_end = end;
    }
    Ok(())
}

fn validate_memfds(memfds: &[MemfdState]) -> Result<(), ManifestError> {
    cap_count("memfds", memfds.len(), MAX_MEMFDS)?;
    let (mut extents, mut bytes) = (0usize, 0usize);
    for (i, m) in memfds.iter().enumerate() {
        let field = |f: &str| format!("memfds[{i}].{f}");
        if memfds[..i].iter().any(|o| o.ino == m.ino) {
            return Err(err(field("ino"), ManifestProblem::Duplicate(m.ino as i64)));
        }
        check_string(&field("name"), &m.name, MAX_MEMFD_NAME)?;
        for (name, value, allowed) in [("mode", m.mode, 0o7777), ("seals", m.seals, MEMFD_SEALS)] {
            if value & !allowed != 0 {
                return Err(err(
                    field(name),
                    ManifestProblem::UnknownBits {
                        value: value.into(),
                        allowed: allowed.into(),
                    },
                ));
            }
        }
        check_range(field("size"), m.size, 0, MAX_MEMFD_SIZE)?;
        extents = extents.saturating_add(m.extents.len());
        cap_count("memfds[*].extents", extents, MAX_MEMFD_EXTENTS)?;
        check_extents(
            &format!("memfds[{i}]"),
            "memfds[*].extents[*].data",
            &m.extents,
            m.size,
            &mut bytes,
            MAX_MEMFD_BYTES,
        )?;
    }
    Ok(())
}

fn validate_mm(m: &MmState) -> Result<(), ManifestError> {
    cap_count("mm.vmas", m.vmas.len(), MAX_VMAS)?;
    let mut prev_end = 0u64;
    let mut runs = 0usize;
    let mut inherited = 0usize;
    let mut precopied = 0usize;
    for (i, v) in m.vmas.iter().enumerate() {
        let field = || format!("mm.vmas[{i}]");
        for (name, value) in [("start", v.start), ("end", v.end), ("pgoff", v.pgoff)] {
            if value % PAGE_SIZE != 0 {
                return Err(err(
                    format!("{}.{name}", field()),
                    ManifestProblem::NotPageAligned(value),
                ));
            }
        }
        if v.start >= v.end {
            return Err(err(
                field(),
                ManifestProblem::EmptyRange {
                    start: v.start,
                    end: v.end,
                },
            ));
        }
        if matches!(v.kind, VmaKind::Vsyscall) {
            if v.start != VSYSCALL_START || v.end != VSYSCALL_START + PAGE_SIZE {
                return Err(err(
                    field(),
                    ManifestProblem::MisplacedVsyscall {
                        start: v.start,
                        end: v.end,
                    },
                ));
            }
        } else if v.end > USER_END {
            return Err(err(
                field(),
                ManifestProblem::AboveUserSpace {
                    start: v.start,
                    end: v.end,
                },
            ));
        }
        if v.start < prev_end {
            return Err(err(
                format!("{}.start", field()),
                ManifestProblem::Overlap {
                    start: v.start,
                    prev_end,
                },
            ));
        }
        prev_end = v.end;
        if v.prot & !(prot::READ | prot::WRITE | prot::EXEC) != 0 {
            return Err(err(
                format!("{}.prot", field()),
                ManifestProblem::UnknownBits {
                    value: v.prot.into(),
                    allowed: (prot::READ | prot::WRITE | prot::EXEC).into(),
                },
            ));
        }
        if v.flags & !vmflag::ALL != 0 {
            return Err(err(
                format!("{}.flags", field()),
                ManifestProblem::UnknownBits {
                    value: v.flags.into(),
                    allowed: vmflag::ALL.into(),
                },
            ));
        }
        if v.pgoff.checked_add(v.end - v.start).is_none() {
            return Err(err(
                format!("{}.pgoff", field()),
                ManifestProblem::OffsetOverflow { pgoff: v.pgoff },
            ));
        }
        if let VmaKind::File(f) = &v.kind {
            check_path(&format!("{}.file.path", field()), &f.path)?;
        }
        runs = runs.saturating_add(v.pages.len());
        cap_count("mm.vmas[*].pages", runs, MAX_PAGE_RUNS)?;
        inherited = inherited.saturating_add(v.inherited.len());
        cap_count("mm.vmas[*].inherited", inherited, MAX_PAGE_RUNS)?;
        validate_runs(i, v, "pages", &v.pages)?;
        validate_runs(i, v, "inherited", &v.inherited)?;
        if !v.inherited.is_empty()
            && (v.shared || !matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack))
        {
            return Err(err(
                format!("{}.inherited", field()),
                ManifestProblem::InheritedNotPrivateAnonymous,
            ));
        }
        if let Some(r) = v.inherited.iter().find(|r| runs_meet(r, &v.pages)) {
            return Err(err(
                format!("{}.inherited", field()),
                ManifestProblem::Overlap {
                    start: r.start,
                    prev_end: r.start,
                },
            ));
        }
        precopied = precopied.saturating_add(v.precopied.len());
        cap_count("mm.vmas[*].precopied", precopied, MAX_PAGE_RUNS)?;
        validate_runs(i, v, "precopied", &v.precopied)?;
        if !v.precopied.is_empty()
            && (v.shared || !matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack))
        {
            return Err(err(
                format!("{}.precopied", field()),
                ManifestProblem::PrecopiedNotPrivateAnonymous,
            ));
        }
        if let Some(r) = v
            .precopied
            .iter()
            .find(|r| runs_meet(r, &v.pages) || runs_meet(r, &v.inherited))
        {
            return Err(err(
                format!("{}.precopied", field()),
                ManifestProblem::Overlap {
                    start: r.start,
                    prev_end: r.start,
                },
            ));
        }
    }
    let pairs = [
        ("start_code", m.start_code, "end_code", m.end_code),
        ("start_data", m.start_data, "end_data", m.end_data),
        ("start_brk", m.start_brk, "brk", m.brk),
        ("arg_start", m.arg_start, "arg_end", m.arg_end),
        ("env_start", m.env_start, "env_end", m.env_end),
    ];
    for (low_name, low, high_name, high) in pairs {
        for (name, value) in [(low_name, low), (high_name, high)] {
            if value > USER_END {
                return Err(err(
                    format!("mm.{name}"),
                    ManifestProblem::AddressAboveUserSpace(value),
                ));
            }
        }
        if low > high {
            return Err(err(
                format!("mm.{low_name}"),
                ManifestProblem::Inverted {
                    low_name,
                    low,
                    high_name,
                    high,
                },
            ));
        }
    }
    // mlockall takes MCL_FUTURE, optionally with MCL_ONFAULT; ONFAULT alone means nothing.
    let future = libc::MCL_FUTURE as u32;
    if m.lock_future & !(future | libc::MCL_ONFAULT as u32) != 0 {
        return Err(err(
            "mm.lock_future",
            ManifestProblem::UnknownBits {
                value: m.lock_future.into(),
                allowed: (future | libc::MCL_ONFAULT as u32).into(),
            },
        ));
    }
    if m.lock_future != 0 && m.lock_future & future == 0 {
        return Err(err(
            "mm.lock_future",
            ManifestProblem::UnknownEnum(m.lock_future as i32),
        ));
    }
    if !matches!(m.thp_disable, 0 | 1 | 3) {
        return Err(err(
            "mm.thp_disable",
            ManifestProblem::UnknownEnum(m.thp_disable as i32),
        ));
    }
    if m.start_stack > USER_END {
        return Err(err(
            "mm.start_stack",
            ManifestProblem::AddressAboveUserSpace(m.start_stack),
        ));
    }
    cap_count("mm.auxv", m.auxv.len(), MAX_AUXV_WORDS)?;
    if !m.auxv.len().is_multiple_of(2) {
        return Err(err("mm.auxv", ManifestProblem::OddAuxv(m.auxv.len())));
    }
    validate_aio_rings(m)
}

/// The AIO rings: one per `AioRing` VMA (same range), in address order, each with a header
/// the kernel makes (magic, header length, `nr` filling the mapping), head and tail inside
/// the ring, `nr` event slots, and a table index of its own.
fn validate_aio_rings(m: &MmState) -> Result<(), ManifestError> {
    cap_count("mm.aio_rings", m.aio_rings.len(), MAX_AIO_RINGS)?;
    let mut bytes = 0usize;
    for (i, r) in m.aio_rings.iter().enumerate() {
        let field = |f: &str| format!("mm.aio_rings[{i}].{f}");
        for (name, value) in [("start", r.start), ("len", r.len)] {
            if value % PAGE_SIZE != 0 {
                return Err(err(field(name), ManifestProblem::NotPageAligned(value)));
            }
        }
        check_range(field("len"), r.len, PAGE_SIZE, MAX_AIO_RING_BYTES as u64)?;
        if i > 0 && m.aio_rings[i - 1].start >= r.start {
            return Err(err(
                field("start"),
                ManifestProblem::NotIncreasing {
                    value: r.start as i64,
                    prev: m.aio_rings[i - 1].start as i64,
                },
            ));
        }
        if !m
            .vmas
            .iter()
            .any(|v| v.kind == VmaKind::AioRing && v.start == r.start && v.end == r.start + r.len)
        {
            return Err(err(
                field("start"),
                ManifestProblem::AioRingMismatch(format!(
                    "no AIO ring VMA {:#x}..{:#x} in mm.vmas",
                    r.start,
                    r.start + r.len
                )),
            ));
        }
        if m.aio_rings[..i].iter().any(|o| o.id == r.id) {
            return Err(err(field("id"), ManifestProblem::Duplicate(r.id.into())));
        }
        check_range(field("id"), r.id, 0, MAX_AIO_RINGS as u32 - 1)?;
        check_range(field("magic"), r.magic, AIO_RING_MAGIC, AIO_RING_MAGIC)?;
        check_range(
            field("header_length"),
            u64::from(r.header_length),
            AIO_RING_HEADER,
            AIO_RING_HEADER,
        )?;
        let slots = (r.len - AIO_RING_HEADER) / AIO_EVENT_SIZE;
        check_range(field("nr"), u64::from(r.nr), slots, slots)?;
        check_range(field("head"), r.head, 0, r.nr - 1)?;
        check_range(field("tail"), r.tail, 0, r.nr - 1)?;
        let expected = (slots * AIO_EVENT_SIZE) as usize;
        if r.events.len() != expected {
            return Err(err(
                field("events"),
                ManifestProblem::WrongLength {
                    len: r.events.len(),
                    expected,
                },
            ));
        }
        bytes = bytes.saturating_add(r.events.len());
        cap_count("mm.aio_rings[*].events bytes", bytes, MAX_AIO_RING_BYTES)?;
    }
    if let Some((i, v)) = m.vmas.iter().enumerate().find(|(_, v)| {
        v.kind == VmaKind::AioRing
            && !m
                .aio_rings
                .iter()
                .any(|r: &AioRingState| r.start == v.start)
    }) {
        return Err(err(
            format!("mm.vmas[{i}]"),
            ManifestProblem::AioRingMismatch(format!(
                "AIO ring VMA {:#x} has no ring in mm.aio_rings",
                v.start
            )),
        ));
    }
    if let Some((i, v)) = m
        .vmas
        .iter()
        .enumerate()
        .find(|(_, v)| v.kind == VmaKind::AioRing && (!v.shared || v.pgoff != 0))
    {
        return Err(err(
            format!("mm.vmas[{i}]"),
            ManifestProblem::AioRingMismatch(format!(
                "AIO ring VMA {:#x} is not a shared mapping at offset 0",
                v.start
            )),
        ));
    }
    Ok(())
}

/// Whether run `r` shares a page with one of `runs` (each within its VMA, so no overflow).
fn runs_meet(r: &PageRun, runs: &[PageRun]) -> bool {
    let end = r.start + r.count * PAGE_SIZE;
    runs.iter()
        .any(|o| o.start < end && r.start < o.start + o.count * PAGE_SIZE)
}

fn validate_runs(
    i: usize,
    v: &VmaState,
    name: &str,
    pages: &[PageRun],
) -> Result<(), ManifestError> {
    if !pages.is_empty()
        && matches!(
            v.kind,
            VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall | VmaKind::AioRing
        )
    {
        return Err(err(
            format!("mm.vmas[{i}].{name}"),
            ManifestProblem::PagesInKernelMapping {
                kind: kind_name(&v.kind),
            },
        ));
    }
    let mut prev_end = v.start;
    for (j, r) in pages.iter().enumerate() {
        let field = || format!("mm.vmas[{i}].{name}[{j}]");
        if r.start % PAGE_SIZE != 0 {
            return Err(err(
                format!("{}.start", field()),
                ManifestProblem::NotPageAligned(r.start),
            ));
        }
        if r.count == 0 {
            return Err(err(
                format!("{}.count", field()),
                ManifestProblem::EmptyRun(r.start),
            ));
        }
        // Checked without multiplying `count`, which could overflow.
        let inside =
            r.start >= v.start && r.start < v.end && r.count <= (v.end - r.start) / PAGE_SIZE;
        if !inside {
            return Err(err(
                field(),
                ManifestProblem::RunOutsideVma {
                    start: r.start,
                    count: r.count,
                    vma_start: v.start,
                    vma_end: v.end,
                },
            ));
        }
        if r.start < prev_end {
            return Err(err(
                format!("{}.start", field()),
                ManifestProblem::Overlap {
                    start: r.start,
                    prev_end,
                },
            ));
        }
        prev_end = r.start + r.count * PAGE_SIZE;
    }
    Ok(())
}

fn validate_fds(fds: &[FdState]) -> Result<(), ManifestError> {
    cap_count("fds", fds.len(), MAX_FDS)?;
    let mut prev: Option<i32> = None;
    for (i, f) in fds.iter().enumerate() {
        let field = || format!("fds[{i}]");
        check_range(format!("{}.fd", field()), f.fd, 0, MAX_FD)?;
        if let Some(p) = prev
            && f.fd <= p
        {
            return Err(err(
                format!("{}.fd", field()),
                ManifestProblem::NotIncreasing {
                    value: f.fd.into(),
                    prev: p.into(),
                },
            ));
        }
        prev = Some(f.fd);
        check_range(format!("{}.owner_type", field()), f.owner.kind, 0, 2)?;
        check_range(format!("{}.owner_pid", field()), f.owner.pid, 0, i32::MAX)?;
        check_range(format!("{}.signal", field()), f.owner.sig, 0, 64)?;
        match &f.kind {
            FdKind::File { file, .. } => check_path(&format!("{}.file.path", field()), &file.path)?,
            FdKind::Directory { file, .. } => {
                check_path(&format!("{}.directory.path", field()), &file.path)?
            }
            FdKind::CharDevice { file } => {
                check_path(&format!("{}.char_device.path", field()), &file.path)?
            }
            FdKind::Tty { file } => check_path(&format!("{}.tty.path", field()), &file.path)?,
            FdKind::PtySlave { file, .. } => {
                check_path(&format!("{}.pty_slave.file.path", field()), &file.path)?
            }
            FdKind::PtyMaster(p) => {
                cap_count(
                    &format!("{}.pty_master.termios.cc", field()),
                    p.termios.cc.len(),
                    MAX_TERMIOS_CC,
                )?;
                cap_count(
                    &format!("{}.pty_master.input", field()),
                    p.input.len(),
                    MAX_PTY_QUEUE,
                )?;
                cap_count(
                    &format!("{}.pty_master.output", field()),
                    p.output.len(),
                    MAX_PTY_QUEUE,
                )?;
            }
            FdKind::Pipe { .. } => {}
            FdKind::Epoll { targets } => {
                cap_count(
                    &format!("{}.epoll.targets", field()),
                    targets.len(),
                    MAX_EPOLL_TARGETS,
                )?;
                for (j, t) in targets.iter().enumerate() {
                    check_range(
                        format!("{}.epoll.targets[{j}].fd", field()),
                        t.fd,
                        0,
                        MAX_FD,
                    )?;
                    // A file whose number went elsewhere is reached through another descriptor
                    // of the process (not the instance itself).
                    if t.file_fd != t.fd
                        && (fds.binary_search_by_key(&t.file_fd, |f| f.fd).is_err()
                            || t.file_fd == fds[i].fd)
                    {
                        return Err(err(
                            format!("{}.epoll.targets[{j}].file_fd", field()),
                            ManifestProblem::OutOfRange {
                                value: t.file_fd.into(),
                                min: 0,
                                max: MAX_FD.into(),
                            },
                        ));
                    }
                }
            }
            FdKind::Socket(sock) => {
                super::sockets::validate_socket(sock, &format!("{}.socket", field()))?
            }
            FdKind::Dup { of } => {
                // The description's own descriptor comes first and is not a dup itself.
                let own = fds[..i]
                    .binary_search_by_key(of, |f| f.fd)
                    .is_ok_and(|j| !matches!(fds[j].kind, FdKind::Dup { .. }));
                if !own {
                    return Err(err(
                        format!("{}.dup.of", field()),
                        ManifestProblem::NoSuchFd(*of),
                    ));
                }
            }
            FdKind::LocalPipe { queue, .. } => {
                let acc = f.flags & libc::O_ACCMODE as u32;
                check_range(format!("{}.flags & O_ACCMODE", field()), acc, 0, 1)?;
                validate_queue(&format!("{}.local_pipe.queue", field()), queue.as_ref())?;
            }
            FdKind::Fifo { file, queue } => {
                check_path(&format!("{}.fifo.file.path", field()), &file.path)?;
                validate_queue(&format!("{}.fifo.queue", field()), queue.as_ref())?;
            }
            FdKind::Shared { pid, fd } => {
                check_range(format!("{}.shared.pid", field()), *pid, 1, MAX_PID)?;
                check_range(format!("{}.shared.fd", field()), *fd, 0, MAX_FD)?;
            }
            FdKind::DeletedFile {
                path, mode, node, ..
            } => {
                check_path(&format!("{}.deleted_file.path", field()), path)?;
                match node {
                    DeletedNode::Regular { size, extents } => {
                        check_range(
                            format!("{}.deleted_file.size", field()),
                            *size,
                            0,
                            MAX_MEMFD_SIZE,
                        )?;
                        let mut bytes = 0usize;
                        check_extents(
                            &format!("{}.deleted_file", field()),
                            &format!("{}.deleted_file.extents[*].data", field()),
                            extents,
                            *size,
                            &mut bytes,
                            usize::MAX,
                        )?;
                    }
                    DeletedNode::Fifo { queue } => {
                        validate_queue(&format!("{}.deleted_file.queue", field()), queue.as_ref())?
                    }
                    DeletedNode::CharDevice { .. } | DeletedNode::Directory => {}
                }
                if mode & !0o7777 != 0 {
                    return Err(err(
                        format!("{}.deleted_file.mode", field()),
                        ManifestProblem::UnknownBits {
                            value: (*mode).into(),
                            allowed: 0o7777,
                        },
                    ));
                }
            }
            FdKind::Eventfd { count, .. } => check_range(
                format!("{}.eventfd.count", field()),
                *count,
                0,
                MAX_EVENTFD_COUNT,
            )?,
            FdKind::Signalfd { .. } | FdKind::Memfd { .. } => {}
            FdKind::Pidfd { pid } => {
                check_range(format!("{}.pidfd_pid", field()), *pid, 1, MAX_PID)?
            }
            FdKind::Timerfd(t) => {
                if !TIMERFD_CLOCKS.contains(&t.clockid) {
                    return Err(err(
                        format!("{}.timerfd.clockid", field()),
                        ManifestProblem::UnknownEnum(t.clockid),
                    ));
                }
                let allowed = (libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET) as u32;
                if t.settime_flags & !allowed != 0 {
                    return Err(err(
                        format!("{}.timerfd.settime_flags", field()),
                        ManifestProblem::UnknownBits {
                            value: t.settime_flags.into(),
                            allowed: allowed.into(),
                        },
                    ));
                }
            }
            FdKind::Inotify { watches } => {
                let field = format!("{}.inotify.watches", field());
                cap_count(&field, watches.len(), MAX_INOTIFY_WATCHES)?;
                let mut prev = 0;
                for (j, w) in watches.iter().enumerate() {
                    if w.wd <= prev {
                        return Err(err(
                            format!("{field}[{j}].wd"),
                            ManifestProblem::NotIncreasing {
                                value: w.wd.into(),
                                prev: prev.into(),
                            },
                        ));
                    }
                    prev = w.wd;
                    let most = (j + 1 + MAX_INOTIFY_GAPS) as i32;
                    check_range(format!("{field}[{j}].wd"), w.wd, 1, most)?;
                    check_path(&format!("{field}[{j}].file.path"), &w.file.path)?;
                }
            }
            FdKind::Fanotify(g) => {
                let field = format!("{}.fanotify", field());
                let bits = |name: &str, value: u32, allowed: u32| {
                    if value & !allowed != 0 {
                        return Err(err(
                            format!("{field}.{name}"),
                            ManifestProblem::UnknownBits {
                                value: value.into(),
                                allowed: allowed.into(),
                            },
                        ));
                    }
                    Ok(())
                };
                bits("flags", g.flags, FANOTIFY_INIT_FLAGS)?;
                // FAN_CLASS_CONTENT and FAN_CLASS_PRE_CONTENT are one two-bit field.
                if g.flags & 0xc == 0xc {
                    return Err(err(
                        format!("{field}.flags"),
                        ManifestProblem::OutOfRange {
                            value: (g.flags & 0xc).into(),
                            min: 0,
                            max: 8,
                        },
                    ));
                }
                bits("event_flags", g.event_flags, FANOTIFY_EVENT_FLAGS)?;
                cap_count(&format!("{field}.marks"), g.marks.len(), MAX_FANOTIFY_MARKS)?;
                for (j, m) in g.marks.iter().enumerate() {
                    bits(&format!("marks[{j}].mflags"), m.mflags, FANOTIFY_MARK_FLAGS)?;
                    let (what, path) = match &m.target {
                        FanotifyTarget::Inode(f) => ("inode.path", &f.path),
                        FanotifyTarget::Mount { path } => ("mount", path),
                        FanotifyTarget::Filesystem { path } => ("filesystem", path),
                    };
                    check_path(&format!("{field}.marks[{j}].{what}"), path)?;
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn validate_queue(field: &str, queue: Option<&PipeQueue>) -> Result<(), ManifestError> {
    let Some(q) = queue else { return Ok(()) };
    check_range(format!("{field}.size"), q.size, 1, MAX_PIPE_SIZE)?;
    if q.data.len() > q.size as usize {
        return Err(err(
            format!("{field}.data"),
            ManifestProblem::TooLong {
                len: q.data.len(),
                max: q.size as usize,
            },
        ));
    }
    Ok(())
}

fn validate_locks(locks: &[LockState], fds: &[FdState]) -> Result<(), ManifestError> {
    cap_count("locks", locks.len(), MAX_LOCKS)?;
    for (i, l) in locks.iter().enumerate() {
        let own = fds
            .binary_search_by_key(&l.fd, |f| f.fd)
            .is_ok_and(|j| !matches!(fds[j].kind, FdKind::Dup { .. }));
        if !own {
            return Err(err(
                format!("locks[{i}].fd"),
                ManifestProblem::NoSuchFd(l.fd),
            ));
        }
        if matches!(l.kind, LockKind::Posix | LockKind::Ofd) {
            // struct flock's l_start and l_len are signed.
            check_range(format!("locks[{i}].start"), l.start, 0, i64::MAX as u64)?;
            check_range(format!("locks[{i}].len"), l.len, 0, i64::MAX as u64)?;
        }
    }
    Ok(())
}

fn validate_signals(s: &SignalsState) -> Result<(), ManifestError> {
    cap_count("signals.actions", s.actions.len(), 64)?;
    let mut seen = 0u64;
    for (i, a) in s.actions.iter().enumerate() {
        let field = format!("signals.actions[{i}].signo");
        check_range(field.as_str(), a.signo, 1, 64)?;
        // SIGKILL and SIGSTOP keep their default disposition; rt_sigaction refuses them.
        if a.signo == 9 || a.signo == 19 {
            return Err(err(field, ManifestProblem::UncatchableSignal(a.signo)));
        }
        let bit = 1u64 << (a.signo - 1);
        if seen & bit != 0 {
            return Err(err(field, ManifestProblem::Duplicate(a.signo.into())));
        }
        seen |= bit;
    }
    validate_siginfos("signals.shared_pending", &s.shared_pending)
}

fn validate_siginfos(field: &str, list: &[SiginfoState]) -> Result<(), ManifestError> {
    cap_count(field, list.len(), MAX_PENDING)?;
    for (i, s) in list.iter().enumerate() {
        check_range(format!("{field}[{i}].signo"), s.signo, 1, 64)?;
        if s.raw.len() != SIGINFO_LEN {
            return Err(err(
                format!("{field}[{i}].raw"),
                ManifestProblem::WrongLength {
                    len: s.raw.len(),
                    expected: SIGINFO_LEN,
                },
            ));
        }
        let raw = i32::from_le_bytes([s.raw[0], s.raw[1], s.raw[2], s.raw[3]]);
        if i64::from(raw) != i64::from(s.signo) {
            return Err(err(
                format!("{field}[{i}].raw"),
                ManifestProblem::SignoMismatch {
                    signo: s.signo,
                    raw,
                },
            ));
        }
    }
    Ok(())
}

fn validate_threads(s: &ProcessState) -> Result<(), ManifestError> {
    cap_count("threads", s.threads.len(), MAX_THREADS)?;
    let Some(leader) = s.threads.first() else {
        return Err(err("threads", ManifestProblem::Empty));
    };
    if leader.tid != s.pid {
        return Err(err(
            "threads[0].tid",
            ManifestProblem::LeaderNotFirst {
                tid: leader.tid,
                pid: s.pid,
            },
        ));
    }
    let mut tids: Vec<i32> = Vec::with_capacity(s.threads.len());
    for (i, t) in s.threads.iter().enumerate() {
        let field = || format!("threads[{i}]");
        check_range(format!("{}.tid", field()), t.tid, 1, MAX_PID)?;
        if t.xstate.len() > MAX_XSTATE {
            return Err(err(
                format!("{}.xstate", field()),
                ManifestProblem::TooLong {
                    len: t.xstate.len(),
                    max: MAX_XSTATE,
                },
            ));
        }
        validate_siginfos(&format!("{}.pending", field()), &t.pending)?;
        tids.push(t.tid);
    }
    tids.sort_unstable();
    if let Some(w) = tids.windows(2).find(|w| w[0] == w[1]) {
        return Err(err(
            "threads[*].tid",
            ManifestProblem::Duplicate(w[0].into()),
        ));
    }
    Ok(())
}
