//! The restore checker: after a process is rebuilt and before it runs, read it back from the
//! kernel with the very code that dumps (so every field an image holds is read the same way)
//! and compare the result with the image, field by field. A difference fails the restore,
//! naming the process, the object and the field, unless a rule below names it as an expected
//! change of a restore (a PID seen from outside a new PID namespace, the inode of a pipe made
//! anew, time that passed on a timer, …).
//!
//! It sits above `dump` and `restore` and uses both; neither knows of it.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dump::{self, DumpError};
use crate::restore::CheckInput;
use crate::state::{
    FdKind, FdState, IPC_PID_OTHER, MmState, PageRun, ProcessState, SocketKind, VmaKind, VmaState,
};

/// `TFD_TIMER_ABSTIME`.
const TFD_TIMER_ABSTIME: u32 = 1;

/// Counts `n` fields changed as `rule` says a restore changes them.
fn note(expected: &mut Vec<(&'static str, usize)>, rule: &'static str, n: usize) {
    if n == 0 {
        return;
    }
    match expected.iter_mut().find(|(r, _)| *r == rule) {
        Some((_, count)) => *count += n,
        None => expected.push((rule, n)),
    }
}

/// `runs` (sorted) with adjacent runs joined.
fn coalesce(runs: &[PageRun]) -> Vec<PageRun> {
    let mut out: Vec<PageRun> = Vec::with_capacity(runs.len());
    for r in runs {
        match out.last_mut() {
            Some(l)
                if l.start
                    .saturating_add(l.count.saturating_mul(crate::state::PAGE_SIZE))
                    == r.start =>
            {
                l.count = l.count.saturating_add(r.count);
            }
            _ => out.push(*r),
        }
    }
    out
}

/// Whether every page of `inner` is in one of the runs of `outer` (both sorted).
fn runs_within(inner: &[PageRun], outer: &[PageRun]) -> bool {
    const PAGE: u64 = crate::state::PAGE_SIZE;
    let mut o = outer.iter().peekable();
    for r in inner {
        let (start, end) = (
            r.start,
            r.start.saturating_add(r.count.saturating_mul(PAGE)),
        );
        loop {
            match o.peek() {
                Some(x) if x.start.saturating_add(x.count.saturating_mul(PAGE)) <= start => {
                    o.next();
                }
                Some(x)
                    if x.start <= start
                        && end <= x.start.saturating_add(x.count.saturating_mul(PAGE)) =>
                {
                    break;
                }
                _ => return false,
            }
        }
    }
    true
}

/// Why a restored process was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The restored process could not be read back.
    #[error("read back pid {pid}")]
    ReadBack {
        /// The restored process.
        pid: i32,
        /// Why.
        #[source]
        source: DumpError,
    },
    /// The restored process differs from its image.
    #[error("pid {pid} differs from its image: {}", differences.join("; "))]
    Differs {
        /// The restored process (in the restorer's PID namespace).
        pid: i32,
        /// `field: image X, restored Y`, one per difference.
        differences: Vec<String>,
    },
}

/// What the check found and what it cost.
#[derive(Debug, Clone)]
pub struct Report {
    /// Fields that differ as a restore must make them differ (counted per rule).
    pub expected: Vec<(&'static str, usize)>,
    /// How long reading back and comparing took.
    pub elapsed: Duration,
}

/// A restored process's `smaps`, being read ahead for the check on a thread of its own
/// ([`smaps_ahead`]).
#[derive(Debug)]
pub struct SmapsAhead(std::thread::JoinHandle<Option<String>>);

/// Starts reading `pid`'s `smaps` for the check, once its areas have their flags: the restore
/// goes on meanwhile (its later steps change nothing `smaps` tells the check; the check
/// verifies that no area was made or moved since, see [`crate::dump`]'s `smaps_ahead`).
pub fn smaps_ahead(pid: i32) -> SmapsAhead {
    SmapsAhead(std::thread::spawn(move || {
        let t = Instant::now();
        let smaps = crate::proc::read(pid, "smaps").ok();
        // Part of the checker's cost (`cargo xtask bench` adds it to the check's).
        tracing::debug!(elapsed = ?t.elapsed(), "smaps read ahead for the check");
        smaps
    }))
}

impl SmapsAhead {
    /// The text, once read (`None` if it could not be: the check reads `smaps` itself).
    pub fn join(self) -> Option<String> {
        self.0.join().ok().flatten()
    }
}

/// The restore checker in the shape [`crate::restore::RestoreOptions::check`] takes.
pub fn restore_check(input: &[CheckInput<'_>]) -> Result<Duration, String> {
    match check(input) {
        Ok(report) => {
            tracing::debug!(elapsed = ?report.elapsed, expected = ?report.expected, "restore checked");
            Ok(report.elapsed)
        }
        Err(e) => Err(crate::transport::error_chain(&e)),
    }
}

/// Reads the rebuilt processes back (one, or a whole tree read as a tree; their tasks traced
/// and stopped by the restorer, which gets them back as they were) and compares each with its
/// image.
pub fn check(input: &[CheckInput<'_>]) -> Result<Report, VerifyError> {
    let t0 = Instant::now();
    let pid_of = |i: &CheckInput<'_>| i.tids.first().map_or(0, |p| p.as_raw());
    let root = input.first().map_or(0, pid_of);
    let restored = match input {
        [one] => dump::read_traced(one.tids, one.smaps_ahead).map(|s| vec![s]),
        _ => dump::read_traced_tree(&input.iter().map(|i| i.tids).collect::<Vec<_>>()),
    }
    .map_err(|source| VerifyError::ReadBack { pid: root, source })?;
    tracing::debug!(elapsed = ?t0.elapsed(), "restored processes read back");
    let mut expected = Vec::new();
    let images: Vec<&crate::state::ProcessState> = input.iter().map(|i| i.image).collect();
    let unrestorable = crate::state::cow_unrestorable_kb(&images);
    for ((i, now), lost) in input.iter().zip(&restored).zip(unrestorable) {
        let mut differences = Vec::new();
        compare(i, &input[0], now, lost, &mut differences, &mut expected);
        if !differences.is_empty() {
            return Err(VerifyError::Differs {
                pid: pid_of(i),
                differences,
            });
        }
    }
    Ok(Report {
        expected,
        elapsed: t0.elapsed(),
    })
}

/// Compares two states field by field (through their serialized form, so that a field added
/// to the model is compared without anyone remembering to).
pub fn compare(
    input: &CheckInput<'_>,
    root: &CheckInput<'_>,
    restored: &ProcessState,
    cow_unrestorable_kb: u64,
    differences: &mut Vec<String>,
    expected: &mut Vec<(&'static str, usize)>,
) {
    // What the restore was asked to make of the image, where that is not the image itself,
    // and the changes a running kernel makes meanwhile: each rule brings the two states
    // together where it applies, and counts.
    let mut image = input.image.clone();
    let mut restored = restored.clone();
    let (image, restored) = (&mut image, &mut restored);
    note(
        expected,
        "memory shared copy-on-write with processes outside the image, or only between \
         siblings, comes back as private copies (KiB)",
        cow_sharing_lost(&mut image.mm, &mut restored.mm, cow_unrestorable_kb) as usize,
    );
    note(
        expected,
        "a descriptor the restore was told to substitute",
        substituted(input, image, restored),
    );
    note(
        expected,
        "a file the process alone kept writing, carried in the image and made again at restore \
         (a new inode at the same path)",
        recreated(input, image, restored),
    );
    note(
        expected,
        "a carried file still there at restore, written by others since the dump",
        carried_kept(input, image, restored),
    );
    note(
        expected,
        "time left on a running timer, which counts on",
        timers_ran(image, restored),
    );
    note(
        expected,
        "a TCP connection's traffic since it left repair mode (bytes acknowledged or received, \
         windows, timestamp clock)",
        tcp_traffic(image, restored),
    );
    note(
        expected,
        "what a Unix socket wrote into a connection not accepted yet, which a read-back cannot \
         read without accepting it (that the socket wrote some is compared)",
        unaccepted_data(image, restored),
    );
    note(
        expected,
        "a TCP connection that waited in an accept queue of the process, made again by a new \
         handshake: its sequence numbers, windows, options and timestamp clock are new ones, \
         its place in the queue and its bytes are read only by accepting it (its addresses, \
         state, shutdown bits and how many bytes it carries are compared)",
        tcp_unaccepted(image, restored),
    );
    epoll_as_sets(image, restored);
    note(
        expected,
        "an edge-triggered epoll watch whose file had a new event meanwhile",
        epoll_new_edges(image, restored),
    );
    // A live migration's pages the destination had already are present like the others.
    precopied_as_pages(image);
    note(
        expected,
        "adjacent anonymous areas alike in all but their range, merged by the kernel",
        merged_areas(image, restored),
    );
    note(
        expected,
        "pages that held only zeros are not written (not present until touched)",
        unwritten_pages(&mut image.mm, &mut restored.mm),
    );
    note(
        expected,
        "the last process to operate on a SysV object of the IPC namespace was another one, \
         which is not there after a restore: it reads as the restored process or none",
        ipc_other_pids(image, restored),
    );
    compare_pages(&mut image.mm, &mut restored.mm, differences);
    note(
        expected,
        "a thread stopped in a system call resumes as the kernel would have it (restarted, \
         or EINTR for ERESTART_RESTARTBLOCK)",
        resumed_syscalls(image),
    );
    note(
        expected,
        "a timer that ran out during the restore queued its signal",
        timers_fired(image, restored),
    );
    note(
        expected,
        "an XSAVE component in its initial state, which the processor may mark as such",
        xstate_init(image, restored),
    );
    let a = serde_json::to_value(&*image).unwrap_or(Value::Null);
    let b = serde_json::to_value(&*restored).unwrap_or(Value::Null);
    let mut raw = Vec::new();
    diff("", &a, &b, &mut raw);
    for d in raw {
        match expected_change(&d.path, &d.image, &d.restored, input, root) {
            Some(rule) => note(expected, rule, 1),
            None => differences.push(format!(
                "{}: image {}, restored {}",
                d.path,
                short(&d.image),
                short(&d.restored)
            )),
        }
    }
}

/// Memory shared copy-on-write between a parent and its child in the tree is shared again (the
/// pages each child inherits are compared as `inherited` runs, read back the same way); what
/// the restore cannot share again (`unrestorable` KiB of the process, see
/// [`crate::state::cow_unrestorable_kb`]) comes back as private copies and is counted under a
/// named rule. Any other loss of sharing, and sharing the image did not have, is a
/// difference.
fn cow_sharing_lost(image: &mut MmState, restored: &mut MmState, unrestorable: u64) -> u64 {
    let before: u64 = image.vmas.iter().map(|v| v.cow_shared_kb).sum();
    let after: u64 = restored.vmas.iter().map(|v| v.cow_shared_kb).sum();
    if after > before || after.saturating_add(unrestorable) < before {
        return 0;
    }
    for v in image.vmas.iter_mut().chain(restored.vmas.iter_mut()) {
        v.cow_shared_kb = 0;
    }
    before - after
}

/// In a private IPC namespace, a message queue's last sender or receiver, or a semaphore's
/// last operator, that was another process than the dumped one ([`IPC_PID_OTHER`]) cannot
/// be that process again: the restore leaves the restored process there, or none.
fn ipc_other_pids(image: &ProcessState, restored: &mut ProcessState) -> usize {
    let (Some(a), Some(b)) = (&image.ipc_ns, &mut restored.ipc_ns) else {
        return 0;
    };
    let own = image.pid;
    let mut n = 0;
    let mut take = |was: i32, now: &mut i32| {
        if was == IPC_PID_OTHER && (*now == own || *now == 0) {
            *now = was;
            n += 1;
        }
    };
    for (qa, qb) in a.msg_queues.iter().zip(b.msg_queues.iter_mut()) {
        take(qa.lspid, &mut qb.lspid);
        take(qa.lrpid, &mut qb.lrpid);
    }
    for (sa, sb) in a.sem_sets.iter().zip(b.sem_sets.iter_mut()) {
        for (pa, pb) in sa.pids.iter().zip(sb.pids.iter_mut()) {
            take(*pa, pb);
        }
    }
    n
}

/// The image's descriptors with the restored descriptor of the same number.
fn same_fds<'a>(
    image: &'a mut ProcessState,
    restored: &'a ProcessState,
) -> impl Iterator<Item = (&'a mut FdState, &'a FdState)> {
    image.fds.iter_mut().filter_map(|a| {
        let b = restored.fds.iter().find(|b| b.fd == a.fd)?;
        Some((a, b))
    })
}

/// Descriptors the restore was told to fill with something else take what it gave them.
/// A file the process held only through such descriptors is no longer its own to carry.
fn substituted(input: &CheckInput<'_>, image: &mut ProcessState, restored: &ProcessState) -> usize {
    let mut n = 0;
    let (mut given_up, mut given) = (Vec::new(), Vec::new());
    for (a, b) in same_fds(image, restored) {
        if input.substituted_fds.contains(&a.fd) {
            if let FdKind::File { file, .. } = &a.kind {
                given_up.push(file.path.clone());
            }
            if let FdKind::File { file, .. } = &b.kind {
                given.push(file.path.clone());
            }
            *a = b.clone();
            n += 1;
        }
    }
    if given_up.is_empty() && given.is_empty() {
        return n;
    }
    // The carried files in the restored order: the image's own, the ones the substitutes
    // brought; then what only the image has (a difference unless given up).
    let mut old = std::mem::take(&mut image.carried_files);
    for r in &restored.carried_files {
        if let Some(i) = old.iter().position(|c| c.file.path == r.file.path) {
            image.carried_files.push(old.remove(i));
        } else if given.contains(&r.file.path) {
            image.carried_files.push(r.clone());
            n += 1;
        }
    }
    for c in old {
        if given_up.contains(&c.file.path) {
            n += 1;
        } else {
            image.carried_files.push(c);
        }
    }
    n
}

/// A carried file that was still there at restore is used as it is: like any open file, others
/// may have written to it since the dump (the restore does not overwrite it), so its size,
/// mtime and contents may differ; the inode must be the same.
fn carried_kept(
    input: &CheckInput<'_>,
    image: &mut ProcessState,
    restored: &ProcessState,
) -> usize {
    let mut n = 0;
    for a in &mut image.carried_files {
        if input.recreated_files.contains(&a.file.path) {
            continue;
        }
        if let Some(b) = restored
            .carried_files
            .iter()
            .find(|b| b.file.path == a.file.path)
            && (a.file.identity.dev, a.file.identity.ino)
                == (b.file.identity.dev, b.file.identity.ino)
            && (a.extents != b.extents || a.file.identity != b.file.identity)
        {
            a.extents = b.extents.clone();
            a.file.identity.size = b.file.identity.size;
            a.file.identity.mtime_ns = b.file.identity.mtime_ns;
            n += 1;
        }
    }
    n
}

/// Carried files made again at restore are new inodes at the same paths: every reference
/// to one (the carried file itself, mappings, descriptors) takes the restored device and
/// inode; everything else of it (size, mtime, mode, contents) is still compared.
fn recreated(input: &CheckInput<'_>, image: &mut ProcessState, restored: &ProcessState) -> usize {
    if input.recreated_files.is_empty() {
        return 0;
    }
    let remade = |p: &str| input.recreated_files.iter().any(|r| r == p);
    let mut n = 0;
    let mut take = |a: &mut crate::state::FileRef, b: &crate::state::FileRef| {
        if a.path == b.path
            && remade(&a.path)
            && (a.identity.dev, a.identity.ino) != (b.identity.dev, b.identity.ino)
        {
            a.identity.dev = b.identity.dev;
            a.identity.ino = b.identity.ino;
            n += 1;
        }
    };
    for a in &mut image.carried_files {
        if let Some(b) = restored
            .carried_files
            .iter()
            .find(|b| b.file.path == a.file.path)
        {
            take(&mut a.file, &b.file);
        }
    }
    for a in &mut image.mm.vmas {
        if let Some(b) = restored.mm.vmas.iter().find(|b| b.start == a.start)
            && let (VmaKind::File(fa), VmaKind::File(fb)) = (&mut a.kind, &b.kind)
        {
            take(fa, fb);
        }
    }
    for a in &mut image.fds {
        if let Some(b) = restored.fds.iter().find(|b| b.fd == a.fd)
            && let (FdKind::File { file: fa, .. }, FdKind::File { file: fb, .. }) =
                (&mut a.kind, &b.kind)
        {
            take(fa, fb);
        }
    }
    n
}

/// Timers count down from what they had left at the dump once they are set again; the
/// read-back comes a little later. Armed stays armed, disarmed stays disarmed, and no timer
/// has more left than it had (or than its period, once it fired and reloaded).
fn timers_ran(image: &mut ProcessState, restored: &ProcessState) -> usize {
    let mut ran = 0;
    for (a, b) in image.attrs.itimers.iter_mut().zip(&restored.attrs.itimers) {
        // ITIMER_VIRTUAL and ITIMER_PROF count CPU time, which the kernel samples per tick: a
        // value set again reads up to one tick (at most 10 ms) more.
        let tick = if a.which == 0 { 0 } else { 10_000 };
        if a.which == b.which
            && a.interval_us == b.interval_us
            && a.value_us != b.value_us
            && (a.value_us == 0) == (b.value_us == 0)
            && b.value_us <= a.value_us.max(a.interval_us) + tick
        {
            a.value_us = b.value_us;
            ran += 1;
        }
    }
    for (a, b) in image
        .attrs
        .posix_timers
        .iter_mut()
        .zip(&restored.attrs.posix_timers)
    {
        if a.id == b.id
            && a.interval_ns == b.interval_ns
            && a.value_ns != b.value_ns
            && (a.value_ns == 0) == (b.value_ns == 0)
            && b.value_ns <= a.value_ns.max(a.interval_ns)
        {
            a.value_ns = b.value_ns;
            ran += 1;
        }
    }
    for (a, b) in same_fds(image, restored) {
        if let (FdKind::Timerfd(a), FdKind::Timerfd(b)) = (&mut a.kind, &b.kind)
            && (a.value_ns != b.value_ns || a.ticks != b.ticks)
            && timerfd_ran(a, b)
        {
            a.value_ns = b.value_ns;
            a.ticks = b.ticks;
            ran += 1;
        }
    }
    ran
}

/// XSAVE's init optimization: a processor may clear a component's bit in the header's
/// `XSTATE_BV` when the component holds its initial values, and leave stale bytes in its area.
/// Where only that bit differs between image and restore, the thread is the same if the side
/// with the bit set holds zeros there (the initial SSE and AVX registers); the component is
/// then counted as initial on both sides. Only the x86 SSE (bit 1, the XMM registers at
/// 160..416) and AVX (bit 2, the upper YMM halves at 576..832, standard format) components.
fn xstate_init(image: &mut ProcessState, restored: &ProcessState) -> usize {
    const BV: std::ops::Range<usize> = 512..520;
    let mut n = 0;
    for (a, b) in image.threads.iter_mut().zip(&restored.threads) {
        let (x, y) = (&mut a.xstate, &b.xstate);
        if x.len() != y.len() || x.len() < 832 || x[BV] == y[BV] {
            continue;
        }
        let bv = |v: &[u8]| u64::from_le_bytes(v[BV].try_into().unwrap_or_default());
        let (bx, by) = (bv(x), bv(y));
        let differ = bx ^ by;
        if differ & !0b110 != 0 {
            continue;
        }
        let mut fixed = x.clone();
        let mut all_init = true;
        for (bit, range) in [(1u64, 160..416), (2, 576..832)] {
            if differ & (1 << bit) == 0 {
                continue;
            }
            let set_side = if bx & (1 << bit) != 0 { &x[..] } else { &y[..] };
            if set_side[range.clone()].iter().any(|&c| c != 0) {
                all_init = false;
                break;
            }
            fixed[range.clone()].copy_from_slice(&y[range]);
        }
        if all_init {
            fixed[BV].copy_from_slice(&y[BV]);
            *x = fixed;
            n += 1;
        }
    }
    n
}

/// Whether timerfd `b` (read back) is `a` (the image) some time later: the same clock, flags
/// and period; expirations only added (never fewer: a restore must not lose one); a one-shot
/// timer that fired has nothing left; otherwise armed stays armed with no more time left than
/// it had (or than its period, once it fired and reloaded).
fn timerfd_ran(a: &crate::state::TimerfdState, b: &crate::state::TimerfdState) -> bool {
    if a.clockid != b.clockid
        || a.settime_flags != b.settime_flags
        || a.interval_ns != b.interval_ns
        || b.ticks < a.ticks
    {
        return false;
    }
    let fired = b.ticks > a.ticks;
    if fired && a.value_ns == 0 {
        // A disarmed timer does not fire.
        return false;
    }
    if a.interval_ns == 0 && fired {
        // A one-shot timer fires once, and is disarmed by it.
        return a.value_ns != 0 && b.value_ns == 0 && b.ticks == a.ticks + 1;
    }
    if (a.value_ns == 0) != (b.value_ns == 0) {
        return false;
    }
    if a.settime_flags & TFD_TIMER_ABSTIME != 0 {
        // An absolute expiry is read as time left plus now, twice: the two agree within the
        // clock's reading jitter; each expiration meanwhile moved it on by one period.
        let jitter = 10_000_000;
        if fired {
            b.value_ns.saturating_add(jitter) >= a.value_ns
        } else {
            a.value_ns.abs_diff(b.value_ns) < jitter
        }
    } else {
        b.value_ns <= a.value_ns.max(a.interval_ns)
    }
}

/// A TCP connection runs on as soon as it leaves repair mode: the peer acknowledges queued
/// bytes (the send queue loses its head), sends more (the receive queue grows at its tail)
/// and moves the windows; the peer's FIN may come (established becomes CLOSE-WAIT,
/// FIN-WAIT-1 CLOSING, the receive side shut), and the acknowledgement of the process's FIN
/// (FIN-WAIT-1 becomes FIN-WAIT-2). What the process has queued is never lost or changed.
fn tcp_traffic(image: &mut ProcessState, restored: &ProcessState) -> usize {
    use crate::state::{
        TCP_CLOSE_WAIT, TCP_CLOSING, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2,
    };
    let mut flowed = 0;
    for (a, b) in same_fds(image, restored) {
        let (FdKind::Socket(a), FdKind::Socket(b)) = (&mut a.kind, &b.kind) else {
            continue;
        };
        let (SocketKind::Inet(ai), SocketKind::Inet(bi)) = (&mut a.kind, &b.kind) else {
            continue;
        };
        let (Some(a), Some(b)) = (ai.tcp.as_mut(), bi.tcp.as_ref()) else {
            continue;
        };
        let fin_came = matches!(
            (a.state, b.state),
            (TCP_ESTABLISHED, TCP_CLOSE_WAIT) | (TCP_FIN_WAIT1, TCP_CLOSING)
        ) && bi.shutdown == ai.shutdown | 1;
        let fin_acked = a.state == TCP_FIN_WAIT1
            && b.state == TCP_FIN_WAIT2
            && b.send_queue.is_empty()
            && bi.shutdown == ai.shutdown;
        if a.state != b.state && !fin_came && !fin_acked {
            continue;
        }
        let sent_on = a.send_seq == b.send_seq
            && a.send_queue.ends_with(&b.send_queue)
            && b.unsent <= a.unsent;
        let more_in = b.recv_queue.starts_with(&a.recv_queue)
            && b.recv_seq.wrapping_sub(a.recv_seq) as usize
                == b.recv_queue.len() - a.recv_queue.len() + usize::from(fin_came);
        if sent_on
            && more_in
            && (a.send_queue != b.send_queue
                || a.recv_queue != b.recv_queue
                || a.window != b.window
                || a.timestamp != b.timestamp
                || a.state != b.state)
        {
            a.state = b.state;
            ai.shutdown = bi.shutdown;
            a.send_queue = b.send_queue.clone();
            a.unsent = b.unsent;
            a.recv_queue = b.recv_queue.clone();
            a.recv_seq = b.recv_seq;
            a.window = b.window;
            a.timestamp = b.timestamp;
            flowed += 1;
        }
    }
    flowed
}

/// The bytes a connecting Unix socket wrote into a connection its listener has not accepted
/// yet are read at dump by accepting it; reading the restored process back must not accept
/// (it would take the connection away), so it sees only that there are some
/// (`sent_unaccepted`, compared as a field).
fn unaccepted_data(image: &mut ProcessState, restored: &ProcessState) -> usize {
    let mut n = 0;
    for (a, b) in same_fds(image, restored) {
        let (FdKind::Socket(a), FdKind::Socket(b)) = (&mut a.kind, &b.kind) else {
            continue;
        };
        let (SocketKind::Unix(a), SocketKind::Unix(b)) = (&mut a.kind, &b.kind) else {
            continue;
        };
        if a.sent_unaccepted && b.sent_unaccepted && b.pending_sent.is_empty() {
            if !a.pending_sent.is_empty() {
                n += 1;
            }
            a.pending_sent.clear();
        }
    }
    n
}

/// A TCP connection not accepted yet is made again at restore by a handshake (see
/// `restore::sockets::connect_again`): everything `TCP_REPAIR` reads of it is new but the
/// state and the count of bytes the process wrote into it, which the listener's accept reads.
fn tcp_unaccepted(image: &mut ProcessState, restored: &ProcessState) -> usize {
    let mut n = 0;
    for (a, b) in same_fds(image, restored) {
        let (FdKind::Socket(a), FdKind::Socket(b)) = (&mut a.kind, &b.kind) else {
            continue;
        };
        let (SocketKind::Inet(a), SocketKind::Inet(b)) = (&mut a.kind, &b.kind) else {
            continue;
        };
        let (Some(at), Some(bt)) = (a.tcp.as_mut(), b.tcp.as_ref()) else {
            continue;
        };
        let (Some(au), Some(bu)) = (&at.unaccepted, &bt.unaccepted) else {
            continue;
        };
        if au.written == bu.written && at.state == bt.state {
            *at = bt.clone();
            n += 1;
        }
    }
    n
}

/// An epoll instance lists its interest set in the order of its tree, which is by the
/// kernel addresses of the watched files: compared as a set.
fn epoll_as_sets(image: &mut ProcessState, restored: &mut ProcessState) {
    for f in image.fds.iter_mut().chain(restored.fds.iter_mut()) {
        if let FdKind::Epoll { targets, .. } = &mut f.kind {
            targets.sort_by_key(|t| (t.fd, t.data, t.events));
        }
    }
}

/// An edge-triggered watch with no event pending in the image may have one once restored: its
/// file had a new event meanwhile (a timer expired, a peer wrote). The other way round would
/// be an event lost.
fn epoll_new_edges(image: &mut ProcessState, restored: &ProcessState) -> usize {
    let mut came = 0;
    for (a, b) in same_fds(image, restored) {
        if let (FdKind::Epoll { targets: a }, FdKind::Epoll { targets: b }) = (&mut a.kind, &b.kind)
        {
            for t in a.iter_mut().filter(|t| !t.pending) {
                let now = crate::state::EpollTarget {
                    pending: true,
                    ..*t
                };
                if b.contains(&now) && !b.contains(t) {
                    t.pending = true;
                    came += 1;
                }
            }
        }
    }
    came
}

/// Two adjacent anonymous areas alike in everything but their range were apart only
/// because their memory came from different places (a parent's before a fork); mapped
/// again side by side, the kernel merges them into one.
fn merged_areas(image: &mut ProcessState, restored: &ProcessState) -> usize {
    let mut merged = 0;
    let mut i = 0;
    while i + 1 < image.mm.vmas.len() {
        let (a, b) = (&image.mm.vmas[i], &image.mm.vmas[i + 1]);
        let alike = a.end == b.start
            && a.kind == VmaKind::Anonymous
            && VmaState {
                start: 0,
                end: 0,
                pages: Vec::new(),
                ..a.clone()
            } == VmaState {
                start: 0,
                end: 0,
                pages: Vec::new(),
                ..b.clone()
            };
        if alike
            && restored
                .mm
                .vmas
                .iter()
                .any(|v| v.start == a.start && v.end == b.end)
        {
            let b = image.mm.vmas.remove(i + 1);
            let a = &mut image.mm.vmas[i];
            a.end = b.end;
            a.pages.extend(b.pages);
            merged += 1;
        } else {
            i += 1;
        }
    }
    merged
}

/// A live migration's pre-copied pages ([`VmaState::precopied`]) are present pages like those
/// of the page stream: compared with them.
fn precopied_as_pages(image: &mut ProcessState) {
    for v in image.mm.vmas.iter_mut().filter(|v| !v.precopied.is_empty()) {
        let mut all = std::mem::take(&mut v.precopied);
        all.extend_from_slice(&v.pages);
        all.sort_by_key(|r| r.start);
        v.pages = coalesce(&all);
    }
}

/// Pages that were all zeros are not written, so not present: the restored process may
/// have fewer pages present than the image lists, never others.
fn unwritten_pages(image: &mut MmState, restored: &mut MmState) -> usize {
    let mut unwritten = 0;
    for a in &mut image.vmas {
        let Some(b) = restored.vmas.iter_mut().find(|b| b.start == a.start) else {
            continue;
        };
        // Runs are compared as page sets: adjacent runs are one.
        a.pages = coalesce(&a.pages);
        b.pages = coalesce(&b.pages);
        if a.end == b.end && a.pages != b.pages && runs_within(&b.pages, &a.pages) {
            a.pages = b.pages.clone();
            unwritten += 1;
        }
        // The same for pages inherited from the parent: one that was a zero page in both is
        // not present in either.
        a.inherited = coalesce(&a.inherited);
        b.inherited = coalesce(&b.inherited);
        if a.end == b.end && a.inherited != b.inherited && runs_within(&b.inherited, &a.inherited) {
            a.inherited = b.inherited.clone();
            unwritten += 1;
        }
    }
    unwritten
}

/// Page runs can number hundreds of thousands: compared here, then cleared so that the
/// serialized comparison leaves them out.
fn compare_pages(image: &mut MmState, restored: &mut MmState, differences: &mut Vec<String>) {
    for a in &image.vmas {
        if let Some(b) = restored.vmas.iter().find(|b| b.start == a.start)
            && a.pages != b.pages
        {
            differences.push(format!(
                "mm.vmas[start={:#x}].pages: image {} pages in {} runs, restored {} pages in {} \
                 runs, not all of them the image's",
                a.start,
                a.stored_pages(),
                a.pages.len(),
                b.stored_pages(),
                b.pages.len()
            ));
        }
    }
    for v in image.vmas.iter_mut().chain(restored.vmas.iter_mut()) {
        v.pages.clear();
    }
}

/// The registers the restore gives a thread stopped in a system call (see [`crate::state::Regs::resumed`]).
fn resumed_syscalls(image: &mut ProcessState) -> usize {
    let mut resumed = 0;
    for t in &mut image.threads {
        let r = t.regs.resumed();
        resumed += usize::from(r != t.regs);
        t.regs = r;
    }
    resumed
}

/// One field whose values differ.
#[derive(Debug)]
struct Diff {
    path: String,
    image: Value,
    restored: Value,
}

fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<Diff>) {
    // Most of a state is as it was: an equal part is left before any path is made for it.
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(&p, va, y.get(k).unwrap_or(&Value::Null), out);
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    diff(&format!("{path}.{k}"), &Value::Null, vb, out);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        // Lists of VMAs (by start) or descriptors (by number) that differ in length: name the
        // entries each side lacks, and compare those both have.
        (Value::Array(x), Value::Array(y)) if keyed(x).is_some() && keyed(y) == keyed(x) => {
            let key = keyed(x).unwrap_or("start");
            let k = |v: &Value| v.get(key).cloned().unwrap_or(Value::Null);
            for (i, va) in x.iter().enumerate() {
                match y.iter().find(|vb| k(vb) == k(va)) {
                    Some(vb) => diff(&format!("{path}[{i}]"), va, vb, out),
                    None => out.push(Diff {
                        path: format!("{path}[{key}={}]", k(va)),
                        image: va.clone(),
                        restored: Value::Null,
                    }),
                }
            }
            for vb in y {
                if !x.iter().any(|va| k(va) == k(vb)) {
                    out.push(Diff {
                        path: format!("{path}[{key}={}]", k(vb)),
                        image: Value::Null,
                        restored: vb.clone(),
                    });
                }
            }
        }
        _ if a != b => out.push(Diff {
            path: path.to_owned(),
            image: a.clone(),
            restored: b.clone(),
        }),
        _ => {}
    }
}

/// Timers are running while a process is restored: a one-shot timer with a little time left
/// may run out before the check, leaving 0 left and its signal pending (`SI_KERNEL` for an
/// itimer, `SI_TIMER` for a POSIX timer); a periodic one reloads and queues it. Such signals
/// are taken out of the restored process's pending list (once per timer) and the expired
/// timers counted as expected; returns how many.
fn timers_fired(image: &mut ProcessState, restored: &mut ProcessState) -> usize {
    const SI_KERNEL: i32 = 0x80;
    const SI_TIMER: i32 = -2;
    let code = |s: &crate::state::SiginfoState| {
        s.raw
            .get(8..12)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_ne_bytes)
    };
    // (signal, si_code) of every timer armed in the image.
    let mut armed: Vec<(u32, i32)> = Vec::new();
    for t in &image.attrs.itimers {
        if t.value_us > 0 {
            let sig = match t.which {
                0 => libc::SIGALRM,
                1 => libc::SIGVTALRM,
                _ => libc::SIGPROF,
            };
            armed.push((sig as u32, SI_KERNEL));
        }
    }
    for t in &image.attrs.posix_timers {
        if t.value_ns > 0 && t.notify != 1 {
            armed.push((t.signo, SI_TIMER));
        }
    }
    let mut fired = 0;
    for (sig, c) in armed {
        let is = |s: &crate::state::SiginfoState| s.signo == sig && code(s) == Some(c);
        let pairs = std::iter::once((
            &image.signals.shared_pending,
            &mut restored.signals.shared_pending,
        ))
        .chain(
            image
                .threads
                .iter()
                .map(|t| &t.pending)
                .zip(restored.threads.iter_mut().map(|t| &mut t.pending)),
        );
        for (before, now) in pairs {
            // One more than the image had: queued by the timer meanwhile.
            if now.iter().filter(|s| is(s)).count() > before.iter().filter(|s| is(s)).count()
                && let Some(i) = now.iter().rposition(&is)
            {
                now.remove(i);
                fired += 1;
                break;
            }
        }
    }
    // The one-shot timers that fired have nothing left.
    if fired > 0 {
        // A periodic ITIMER_REAL is armed again only when its signal is taken: until then it
        // reads 0 too.
        for (a, b) in image.attrs.itimers.iter_mut().zip(&restored.attrs.itimers) {
            if b.value_us == 0 {
                a.value_us = 0;
            }
        }
        for (a, b) in image
            .attrs
            .posix_timers
            .iter_mut()
            .zip(&restored.attrs.posix_timers)
        {
            if b.value_ns == 0 {
                a.value_ns = 0;
            }
            a.overrun = b.overrun;
        }
    }
    fired
}

/// The field that identifies the entries of a list (`start` of VMAs, `fd` of descriptors).
fn keyed(list: &[Value]) -> Option<&'static str> {
    ["start", "fd"]
        .into_iter()
        .find(|k| !list.is_empty() && list.iter().all(|v| v.get(*k).is_some()))
}

/// A value for a message: long arrays and objects are cut.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(117).collect::<String>())
    } else {
        s
    }
}

/// Whether the controlling terminal of `input` is the slave of a pair whose master the
/// process itself or the tree's root holds (made anew at restore).
fn ctty_of_pair_made_anew(input: &CheckInput<'_>, root: &CheckInput<'_>) -> bool {
    let Some(index) = input
        .image
        .attrs
        .ctty
        .as_ref()
        .and_then(|c| crate::dump::pty::slave_index(c.rdev))
    else {
        return false;
    };
    [input.image, root.image].iter().any(|p| {
        p.fds
            .iter()
            .any(|f| matches!(&f.kind, FdKind::PtyMaster(m) if m.index == index))
    })
}

/// The rule that names `path`'s change as one a restore makes, if any.
fn expected_change(
    path: &str,
    image: &Value,
    restored: &Value,
    input: &CheckInput<'_>,
    root: &CheckInput<'_>,
) -> Option<&'static str> {
    let (field, leaf) = path.rsplit_once('.').unwrap_or(("", path));
    // The parent is the restorer, or whoever adopts the process, not the dumped one's.
    if path == "ppid" && !input.parent_restored {
        return Some("the parent is the restorer, or whoever adopts the process");
    }
    // A process restored alone, or a tree's root, leads a new session and process group (the
    // ones it was in are another session's, which it cannot join); the members of a tree that
    // were in the root's old ones are in its new ones.
    if matches!(path, "pgid" | "sid")
        && restored.as_i64() == root.tids.first().map(|p| i64::from(p.as_raw()))
        && image.as_i64()
            == Some(i64::from(if path == "pgid" {
                root.image.pgid
            } else {
                root.image.sid
            }))
    {
        return Some("a restored process (a tree's root) leads a new session and process group");
    }
    // Objects made anew (pipes, memfds, objects deleted while open or while mapped, shared
    // anonymous memory, sockets and the socket files their bind makes) have new inode
    // numbers.
    if (leaf == "ino"
        && (field.starts_with("memfds[")
            || field.starts_with("mapped_deleted[")
            || [
                ".Pipe",
                ".LocalPipe",
                ".Memfd",
                ".DeletedFile",
                ".SharedAnonymous",
                ".Socket",
            ]
            .iter()
            .any(|k| field.ends_with(k))))
        || (leaf == "peer_ino" && field.ends_with(".Unix"))
        // The socket file a restored Unix socket is bound to (or, accepted, shares with its
        // listener) is made anew.
        || (leaf == "ino" && field.ends_with(".Unix.file"))
    {
        return Some("the inode number of an object made anew");
    }
    // A pseudo-terminal pair is made anew: its slave is another inode, with its own times, and
    // has another number when the old one was taken (the restore warns).
    if (field.ends_with(".PtySlave.file.identity") && matches!(leaf, "ino" | "mtime_ns" | "rdev"))
        || (field.ends_with(".PtySlave.file") && leaf == "path")
        || (field.ends_with(".PtySlave") && leaf == "index")
        || (field.ends_with(".PtyMaster") && leaf == "index")
        || (field == "attrs.ctty"
            && matches!(leaf, "path" | "rdev")
            && ctty_of_pair_made_anew(input, root))
    {
        return Some(
            "a pseudo-terminal pair made anew (its slave's inode and times; its number when the old one was taken)",
        );
    }
    // A file made with O_TMPFILE is named `DIR/#INO` by its inode, which a restore makes anew.
    if field.starts_with("fds[") && field.ends_with(".DeletedFile") && leaf == "path" {
        let tmpname = |v: &Value| {
            let (dir, name) = v.as_str()?.rsplit_once('/')?;
            let ino = name.strip_prefix('#')?;
            (!ino.is_empty() && ino.bytes().all(|b| b.is_ascii_digit())).then_some(dir.to_owned())
        };
        if let (Some(a), Some(b)) = (tmpname(image), tmpname(restored))
            && a == b
        {
            return Some("the inode number in the name of an O_TMPFILE file (`DIR/#INO`)");
        }
    }
    // An open file or FIFO is shared with others, who may have written to it since the dump.
    if field.starts_with("fds[")
        && (field.ends_with(".File.file.identity") || field.ends_with(".Fifo.file.identity"))
        && matches!(leaf, "size" | "mtime_ns")
    {
        return Some("the size or mtime of an open file written by others since the dump");
    }
    // The root's parent-death signal is set after the check, once the restorer is no longer
    // its parent (`restore::arm_pdeathsig`, which fails the restore if it cannot); never for a
    // process left the restorer's child (a migrated copy, whose original keeps it; warned).
    if path == "attrs.pdeathsig" && !input.parent_restored && restored.as_u64() == Some(0) {
        return Some(if input.as_child {
            "no parent-death signal for a process left the restorer's child (a migrated copy; \
             warned)"
        } else {
            "the root's parent-death signal, set after the check once the restorer is no \
             longer its parent"
        });
    }
    // `timer_getoverrun` answers for the timer's last delivered signal; no call sets that
    // count, and the timer's next signal replaces it (a signal still queued keeps its own
    // `si_overrun`).
    if field.starts_with("attrs.posix_timers[") && leaf == "overrun" && restored.as_i64() == Some(0)
    {
        return Some("the overrun count of a POSIX timer's last delivered signal starts at 0");
    }
    // A process stopped by job control is read back before it is let go: the stop comes with
    // it (a SIGSTOP queued as its tasks are detached; the restore waits for state T).
    if path == "attrs.stop_signal" && restored.as_u64() == Some(0) {
        return Some("a process stopped when dumped stops again (SIGSTOP) once let go");
    }
    // No process can set its audit session id: a restored one has the restorer's, or a new
    // one once its login uid is written.
    if path == "attrs.sessionid" {
        return Some("the audit session id, which no process can set");
    }
    // PIDs read from outside the process's new PID namespace.
    if input.new_pid_ns
        && (matches!(path, "ppid" | "pgid" | "sid" | "attrs.ctty.fg_pgid")
            // A descriptor in flight held by a process, and a sender's credentials.
            || ((field.ends_with(".Held") || field.ends_with(".Pipe")) && leaf == "pid")
            || (field.contains(".in_flight[") && leaf == "creds[0]"))
    {
        return Some("a PID seen from outside the new PID namespace");
    }
    // open(2) on 64 bits always adds O_LARGEFILE, which means nothing there; F_SETFL cannot
    // take it away.
    if field.starts_with("fds[") && leaf == "flags" {
        let (a, b) = (image.as_u64()?, restored.as_u64()?);
        // The kernel's value: libc's is 0 on x86_64.
        const O_LARGEFILE: u64 = 0o100000;
        if a ^ b == O_LARGEFILE && b & O_LARGEFILE != 0 {
            return Some("O_LARGEFILE, which open(2) adds on 64 bits");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u64, count: u64) -> PageRun {
        PageRun { start, count }
    }

    fn heap(cow_shared_kb: u64) -> MmState {
        MmState {
            vmas: vec![VmaState {
                start: 0x1000_0000,
                end: 0x1080_0000,
                prot: 3,
                shared: false,
                pgoff: 0,
                kind: VmaKind::Heap,
                growsdown: false,
                maywrite: true,
                flags: 0,
                pages: Vec::new(),
                cow_shared_kb,
                inherited: Vec::new(),
                precopied: Vec::new(),
            }],
            ..Default::default()
        }
    }

    /// Sharing lost is a difference again, but for what the restore cannot share (with
    /// processes outside the image, or only between siblings); more sharing than the image
    /// had always is.
    #[test]
    fn only_sharing_the_restore_cannot_make_may_be_lost() {
        let (mut image, mut restored) = (heap(8192), heap(0));
        assert_eq!(cow_sharing_lost(&mut image, &mut restored, 0), 0);
        assert_ne!(image, restored, "left for the comparison to name");
        assert_eq!(cow_sharing_lost(&mut image, &mut restored, 4096), 0);
        assert_ne!(image, restored);
        assert_eq!(cow_sharing_lost(&mut image, &mut restored, 8192), 8192);
        assert_eq!(image, restored);
        let (mut image, mut restored) = (heap(8192), heap(8192));
        assert_eq!(cow_sharing_lost(&mut image, &mut restored, 0), 0);
        assert_eq!(image, restored);
        let (mut image, mut restored) = (heap(0), heap(4));
        cow_sharing_lost(&mut image, &mut restored, 0);
        assert_ne!(image, restored);
    }

    #[test]
    fn fewer_pages_within_the_image_runs_pass_others_fail() {
        let image = [run(0x1000, 4), run(0x10000, 2)];
        assert!(runs_within(&[run(0x1000, 1), run(0x3000, 2)], &image));
        assert!(runs_within(&[run(0x11000, 1)], &image));
        assert!(runs_within(&[], &image));
        // A page the image did not have, or a run across a gap.
        assert!(!runs_within(&[run(0x5000, 1)], &image));
        assert!(!runs_within(&[run(0x4000, 13)], &image));
        assert!(!runs_within(&[run(u64::MAX - 0xfff, 2)], &image));
    }

    #[test]
    fn lists_of_different_lengths_name_the_missing_and_extra_entries() {
        let a = serde_json::json!({"fds": [{"fd": 0, "flags": 2}, {"fd": 3, "flags": 0}]});
        let b = serde_json::json!({"fds": [{"fd": 0, "flags": 0}, {"fd": 4, "flags": 0}, {"fd": 5, "flags": 1}]});
        let mut out = Vec::new();
        diff("", &a, &b, &mut out);
        let paths: Vec<&str> = out.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            ["fds[0].flags", "fds[fd=3]", "fds[fd=4]", "fds[fd=5]"],
            "{out:?}"
        );
        let same = serde_json::json!({"x": [1, 2], "y": {"z": "w"}});
        let mut none = Vec::new();
        diff("", &same, &same.clone(), &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn timerfd_expirations_may_only_accrue() {
        let t = |value_ns, interval_ns, ticks| crate::state::TimerfdState {
            clockid: libc::CLOCK_MONOTONIC,
            settime_flags: 0,
            value_ns,
            interval_ns,
            ticks,
        };
        // A fast periodic timer fired twice more meanwhile.
        assert!(timerfd_ran(
            &t(40_000_000, 50_000_000, 2),
            &t(10_000_000, 50_000_000, 4)
        ));
        // Fewer expirations than the image: lost.
        assert!(!timerfd_ran(
            &t(40_000_000, 50_000_000, 2),
            &t(10_000_000, 50_000_000, 1)
        ));
        // More time left than the period.
        assert!(!timerfd_ran(
            &t(40_000_000, 50_000_000, 2),
            &t(60_000_000, 50_000_000, 3)
        ));
        // A one-shot fires once and is disarmed; twice is impossible, and armed after firing too.
        assert!(timerfd_ran(&t(1_000, 0, 0), &t(0, 0, 1)));
        assert!(!timerfd_ran(&t(1_000, 0, 0), &t(0, 0, 2)));
        assert!(!timerfd_ran(&t(1_000, 0, 0), &t(500, 0, 1)));
        // A disarmed timer stays disarmed, with its count.
        assert!(!timerfd_ran(&t(0, 0, 3), &t(0, 0, 4)));
        // Another period.
        assert!(!timerfd_ran(&t(10, 50, 0), &t(10, 60, 0)));
    }

    /// Read back from a real process (`PAGEMAP_SCAN`), a page present that the image did not
    /// have is a difference naming the area; fewer pages (not written because all zeros) are
    /// not.
    #[test]
    fn a_page_the_image_did_not_have_is_a_difference() {
        let mut v = crate::dump::mm::victim::Victim::start();
        let read = |pid, start| {
            let (vmas, _) = crate::dump::mm::read_maps(pid).unwrap();
            let mut vmas: Vec<VmaState> = vmas.into_iter().filter(|x| x.start == start).collect();
            crate::dump::mm::find_pages(pid, &mut vmas).unwrap();
            MmState {
                vmas,
                ..Default::default()
            }
        };
        let before = read(v.pid(), v.anon);
        assert_eq!(before.vmas.len(), 1);
        v.touch();
        let after = read(v.pid(), v.anon);
        assert_eq!(
            after.vmas[0].stored_pages(),
            before.vmas[0].stored_pages() + 1
        );

        let (mut image, mut restored) = (before.clone(), after.clone());
        assert_eq!(unwritten_pages(&mut image, &mut restored), 0);
        let mut differences = Vec::new();
        compare_pages(&mut image, &mut restored, &mut differences);
        assert_eq!(differences.len(), 1, "{differences:?}");
        assert!(
            differences[0].starts_with(&format!(
                "mm.vmas[start={:#x}].pages: image 6 pages",
                v.anon
            )),
            "{differences:?}"
        );

        let (mut image, mut restored) = (after, before);
        assert_eq!(unwritten_pages(&mut image, &mut restored), 1);
        let mut differences = Vec::new();
        compare_pages(&mut image, &mut restored, &mut differences);
        assert!(differences.is_empty(), "{differences:?}");
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let v = Value::String("x".repeat(500));
        let s = short(&v);
        assert_eq!(s.chars().count(), 118);
        assert!(s.ends_with('…'));
        assert_eq!(short(&Value::from(7)), "7");
    }
}
