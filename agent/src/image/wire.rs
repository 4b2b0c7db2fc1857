//! A pass over the manifest's protobuf wire format, before it is decoded, that counts the
//! entries of every repeated field. Decoding allocates a whole struct for each entry, which
//! can be fifty times the two bytes an empty entry takes on the wire; counting first keeps
//! what a hostile manifest can make the reader allocate within the caps of
//! [`super::validate`], whatever the manifest's size.

use super::validate::{
    MAX_AFFINITY_WORDS, MAX_AUXV_WORDS, MAX_CGROUPS, MAX_EPOLL_TARGETS, MAX_FANOTIFY_MARKS,
    MAX_FDS, MAX_GROUPS, MAX_INOTIFY_WATCHES, MAX_LOCKS, MAX_MEMFD_EXTENTS, MAX_MEMFDS,
    MAX_PAGE_RUNS, MAX_PENDING, MAX_POSIX_TIMERS, MAX_PROCESSES, MAX_SECCOMP_FILTERS, MAX_SYSV_SHM,
    MAX_THREADS, MAX_VMAS, ManifestError, ManifestProblem, RLIM_NLIMITS,
};
use super::validate::{MAX_IPC_OBJECTS, MAX_IPC_SYSCTLS, MAX_SEMS, MAX_SYSV_MSGS};

/// Where a field's entries are counted, and the most allowed over the whole manifest.
#[derive(Debug, Clone, Copy)]
struct Counter {
    /// Index into the count table.
    slot: usize,
    /// Field path for errors.
    field: &'static str,
    /// Most entries over the whole manifest.
    max: usize,
}

/// What a length-delimited field holds.
#[derive(Debug, Clone, Copy)]
enum Child {
    /// A message (possibly repeated, then counted).
    Message(&'static [Field], Option<Counter>),
    /// Repeated varints (packed or not), counted.
    Varints(Counter),
}

/// A field of a message whose contents matter to the count.
type Field = (u32, Child);

const fn counter(slot: usize, field: &'static str, max: usize) -> Counter {
    Counter { slot, field, max }
}

const LEAF: &[Field] = &[];
const FILE_REF: &[Field] = &[(2, Child::Message(LEAF, None))];
const OPEN_FILE: &[Field] = &[(1, Child::Message(FILE_REF, None))];
const EPOLL: &[Field] = &[(
    1,
    Child::Message(
        LEAF,
        Some(counter(0, "fds[*].epoll.targets", MAX_EPOLL_TARGETS)),
    ),
)];
const INOTIFY: &[Field] = &[(
    1,
    Child::Message(
        &[(3, Child::Message(FILE_REF, None))],
        Some(counter(18, "fds[*].inotify.watches", MAX_INOTIFY_WATCHES)),
    ),
)];
const FANOTIFY: &[Field] = &[(
    3,
    Child::Message(
        &[(1, Child::Message(FILE_REF, None))],
        Some(counter(30, "fds[*].fanotify.marks", MAX_FANOTIFY_MARKS)),
    ),
)];
const MEMFD: &[Field] = &[(
    6,
    Child::Message(
        LEAF,
        Some(counter(17, "memfds[*].extents", MAX_MEMFD_EXTENTS)),
    ),
)];
const SYSV_SHM: &[Field] = &[(
    10,
    Child::Message(
        LEAF,
        Some(counter(23, "sysv_shm[*].extents", MAX_MEMFD_EXTENTS)),
    ),
)];
const MSG_QUEUE: &[Field] = &[(
    5,
    Child::Message(
        LEAF,
        Some(counter(25, "ipc_ns.msg_queues[*].messages", MAX_SYSV_MSGS)),
    ),
)];
const SEMS: Counter = counter(27, "ipc_ns.sem_sets[*].values", MAX_SEMS);
const SEM_SET: &[Field] = &[(2, Child::Varints(SEMS)), (3, Child::Varints(SEMS))];
const SEM_UNDO: &[Field] = &[(2, Child::Varints(SEMS))];
const IPC_NS: &[Field] = &[
    (
        1,
        Child::Message(LEAF, Some(counter(28, "ipc_ns.sysctls", MAX_IPC_SYSCTLS))),
    ),
    (
        2,
        Child::Message(
            MSG_QUEUE,
            Some(counter(24, "ipc_ns.msg_queues", MAX_IPC_OBJECTS)),
        ),
    ),
    (
        3,
        Child::Message(
            SEM_SET,
            Some(counter(26, "ipc_ns.sem_sets", MAX_IPC_OBJECTS)),
        ),
    ),
    (
        4,
        Child::Message(
            SEM_UNDO,
            Some(counter(29, "ipc_ns.sem_undo", MAX_IPC_OBJECTS)),
        ),
    ),
];
const FD: &[Field] = &[
    (4, Child::Message(OPEN_FILE, None)),
    (5, Child::Message(OPEN_FILE, None)),
    (6, Child::Message(FILE_REF, None)),
    (7, Child::Message(FILE_REF, None)),
    (8, Child::Message(LEAF, None)),
    (9, Child::Message(EPOLL, None)),
    (20, Child::Message(LEAF, None)),
    (22, Child::Message(LEAF, None)),
    (23, Child::Message(INOTIFY, None)),
    (24, Child::Message(LEAF, None)),
    (26, Child::Message(FANOTIFY, None)),
];
const VMA: &[Field] = &[
    (7, Child::Message(FILE_REF, None)),
    (
        10,
        Child::Message(LEAF, Some(counter(1, "mm.vmas[*].pages", MAX_PAGE_RUNS))),
    ),
];
const MM: &[Field] = &[
    (
        1,
        Child::Message(VMA, Some(counter(2, "mm.vmas", MAX_VMAS))),
    ),
    (13, Child::Varints(counter(3, "mm.auxv", MAX_AUXV_WORDS))),
];
const CREDS: &[Field] = &[(9, Child::Varints(counter(4, "creds.groups", MAX_GROUPS)))];
const SIGNALS: &[Field] = &[
    (
        1,
        Child::Message(LEAF, Some(counter(5, "signals.actions", 64))),
    ),
    (
        2,
        Child::Message(
            LEAF,
            Some(counter(6, "signals.shared_pending", MAX_PENDING)),
        ),
    ),
];
const SCHED: &[Field] = &[(
    4,
    Child::Varints(counter(
        12,
        "threads[*].sched.affinity",
        MAX_AFFINITY_WORDS * MAX_THREADS,
    )),
)];
const ATTRS: &[Field] = &[
    (
        7,
        Child::Message(LEAF, Some(counter(13, "attrs.cgroups", MAX_CGROUPS))),
    ),
    (
        8,
        Child::Message(LEAF, Some(counter(14, "attrs.itimers", 3))),
    ),
    (
        9,
        Child::Message(
            LEAF,
            Some(counter(15, "attrs.posix_timers", MAX_POSIX_TIMERS)),
        ),
    ),
];
const SECCOMP: &[Field] = &[(
    2,
    Child::Message(
        LEAF,
        Some(counter(
            19,
            "threads[*].seccomp.filters",
            MAX_SECCOMP_FILTERS * MAX_THREADS,
        )),
    ),
)];
const THREAD: &[Field] = &[
    (201, Child::Message(SECCOMP, None)),
    (200, Child::Message(SCHED, None)),
    (2, Child::Message(LEAF, None)),
    (
        5,
        Child::Message(LEAF, Some(counter(7, "threads[*].pending", MAX_PENDING))),
    ),
    (6, Child::Message(LEAF, None)),
    (7, Child::Message(LEAF, None)),
    (9, Child::Message(LEAF, None)),
];
const PROCESS: &[Field] = &[
    (6, Child::Message(FILE_REF, None)),
    (7, Child::Message(CREDS, None)),
    (
        11,
        Child::Message(LEAF, Some(counter(8, "rlimits", RLIM_NLIMITS as usize))),
    ),
    (12, Child::Message(MM, None)),
    (13, Child::Message(FD, Some(counter(9, "fds", MAX_FDS)))),
    (14, Child::Message(SIGNALS, None)),
    (
        15,
        Child::Message(THREAD, Some(counter(10, "threads", MAX_THREADS))),
    ),
    (
        120,
        Child::Message(LEAF, Some(counter(11, "locks", MAX_LOCKS))),
    ),
    (
        100,
        Child::Message(MEMFD, Some(counter(16, "memfds", MAX_MEMFDS))),
    ),
    (
        170,
        Child::Message(SYSV_SHM, Some(counter(22, "sysv_shm", MAX_SYSV_SHM))),
    ),
    (200, Child::Message(ATTRS, None)),
    (451, Child::Message(IPC_NS, None)),
];
// Caps count over the whole manifest: the processes of a tree share them.
const MANIFEST: &[Field] = &[
    (1, Child::Message(PROCESS, None)),
    (
        160,
        Child::Message(PROCESS, Some(counter(20, "more", MAX_PROCESSES))),
    ),
    (
        161,
        Child::Message(LEAF, Some(counter(21, "zombies", MAX_PROCESSES))),
    ),
];
const SLOTS: usize = 31;
/// Short lists each process has on its own (at most a few dozen entries), not summed over a
/// tree: `signals.actions`, `rlimits`, `attrs.cgroups`, `attrs.itimers`.
const PER_PROCESS_SLOTS: [usize; 4] = [5, 8, 13, 14];
/// The caps that also hold over all the processes of a tree together.
const TREE_WIDE: [Counter; 25] = [
    counter(0, "fds[*].epoll.targets", MAX_EPOLL_TARGETS),
    counter(1, "mm.vmas[*].pages", MAX_PAGE_RUNS),
    counter(2, "mm.vmas", MAX_VMAS),
    counter(3, "mm.auxv", MAX_AUXV_WORDS * 64),
    counter(4, "creds.groups", MAX_GROUPS),
    counter(6, "signals.shared_pending", MAX_PENDING),
    counter(7, "threads[*].pending", MAX_PENDING),
    counter(9, "fds", MAX_FDS),
    counter(10, "threads", MAX_THREADS),
    counter(11, "locks", MAX_LOCKS),
    counter(
        12,
        "threads[*].sched.affinity",
        MAX_AFFINITY_WORDS * MAX_THREADS,
    ),
    counter(15, "attrs.posix_timers", MAX_POSIX_TIMERS),
    counter(16, "memfds", MAX_MEMFDS),
    counter(17, "memfds[*].extents", MAX_MEMFD_EXTENTS),
    counter(18, "fds[*].inotify.watches", MAX_INOTIFY_WATCHES),
    counter(30, "fds[*].fanotify.marks", MAX_FANOTIFY_MARKS),
    counter(22, "sysv_shm", MAX_SYSV_SHM),
    counter(23, "sysv_shm[*].extents", MAX_MEMFD_EXTENTS),
    counter(24, "ipc_ns.msg_queues", MAX_IPC_OBJECTS),
    counter(25, "ipc_ns.msg_queues[*].messages", MAX_SYSV_MSGS),
    counter(26, "ipc_ns.sem_sets", MAX_IPC_OBJECTS),
    SEMS,
    counter(28, "ipc_ns.sysctls", MAX_IPC_SYSCTLS),
    counter(29, "ipc_ns.sem_undo", MAX_IPC_OBJECTS),
    counter(
        19,
        "threads[*].seccomp.filters",
        MAX_SECCOMP_FILTERS * MAX_THREADS,
    ),
];

/// What the pass found.
#[derive(Debug)]
pub(crate) enum PrescanError {
    /// Not valid protobuf (prost would refuse it too).
    Malformed,
    /// A repeated field over its cap.
    TooMany(ManifestError),
}

/// Counts the repeated fields of an encoded manifest against their caps.
pub(crate) fn prescan(buf: &[u8]) -> Result<(), PrescanError> {
    let mut counts = [0usize; SLOTS];
    walk(buf, MANIFEST, &mut counts)
}

fn bump(counts: &mut [usize; SLOTS], c: Counter, n: usize) -> Result<(), PrescanError> {
    let slot = &mut counts[c.slot];
    *slot = slot.saturating_add(n);
    if *slot > c.max {
        return Err(PrescanError::TooMany(ManifestError {
            field: c.field.into(),
            problem: ManifestProblem::TooMany {
                count: *slot,
                max: c.max,
            },
        }));
    }
    Ok(())
}

fn walk(mut buf: &[u8], schema: &[Field], counts: &mut [usize; SLOTS]) -> Result<(), PrescanError> {
    while !buf.is_empty() {
        let key = varint(&mut buf).ok_or(PrescanError::Malformed)?;
        let wire_type = key & 7;
        let number = u32::try_from(key >> 3).map_err(|_| PrescanError::Malformed)?;
        let child = schema.iter().find(|(n, _)| *n == number).map(|(_, c)| *c);
        match wire_type {
            0 => {
                varint(&mut buf).ok_or(PrescanError::Malformed)?;
                if let Some(Child::Varints(c)) = child {
                    bump(counts, c, 1)?;
                }
            }
            1 => buf = buf.get(8..).ok_or(PrescanError::Malformed)?,
            5 => buf = buf.get(4..).ok_or(PrescanError::Malformed)?,
            2 => {
                let len = varint(&mut buf).ok_or(PrescanError::Malformed)?;
                let len = usize::try_from(len).map_err(|_| PrescanError::Malformed)?;
                if len > buf.len() {
                    return Err(PrescanError::Malformed);
                }
                let (inner, rest) = buf.split_at(len);
                buf = rest;
                match child {
                    Some(Child::Message(fields, counter)) => {
                        if let Some(c) = counter {
                            bump(counts, c, 1)?;
                        }
                        if std::ptr::eq(fields, PROCESS) {
                            walk_process(inner, counts)?;
                        } else if !fields.is_empty() {
                            walk(inner, fields, counts)?;
                        }
                    }
                    Some(Child::Varints(c)) => {
                        // Packed: one entry per byte without the continuation bit.
                        let n = inner.iter().filter(|b| **b & 0x80 == 0).count();
                        bump(counts, c, n)?;
                    }
                    None => {}
                }
            }
            _ => return Err(PrescanError::Malformed),
        }
    }
    Ok(())
}

/// Counts one process of a tree. Each process has the caps of a single process; the lists
/// that can be long (all but [`PER_PROCESS_SLOTS`]) also count toward the same caps over the
/// whole manifest.
fn walk_process(buf: &[u8], counts: &mut [usize; SLOTS]) -> Result<(), PrescanError> {
    let mut own = [0usize; SLOTS];
    walk(buf, PROCESS, &mut own)?;
    for (slot, n) in own.iter().enumerate() {
        if PER_PROCESS_SLOTS.contains(&slot) {
            continue;
        }
        counts[slot] = counts[slot].saturating_add(*n);
    }
    for c in TREE_WIDE {
        bump(counts, c, 0)?;
    }
    Ok(())
}

/// Reads a base-128 varint of at most ten bytes.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}
