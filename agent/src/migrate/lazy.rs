//! Post-copy migration (`ferry migrate --lazy`, docs/migration.md "Post-copy (--lazy)"): the
//! copy runs on the destination before its private anonymous memory has arrived; its faults
//! on the missing pages are answered from the origin over `Peer.Lazy` while the origin
//! pushes every other page in the background.
//!
//! The origin keeps the original frozen (traced, `PTRACE_O_EXITKILL` from before the copy
//! runs: it can never run again, also if this agent dies) and reads the pages from it; once
//! the destination has them all, the original becomes the stub and the relay starts. The
//! destination's copy holds a userfaultfd made in it by the restore (`restore/lazy.rs`),
//! served by a thread of ferryd and closed when the last page arrived. Until then the copy
//! depends on both hosts: if the origin is lost, the copy is ended (it cannot run without
//! its memory) and both records say so.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ferry_proto::v1::migrate_event::Event;
use ferry_proto::v1::peer_client::PeerClient;
use ferry_proto::v1::{
    LazyPages, LazyWant, MigrateEvent, MigrateSummary, MigrationRecord, PrecopyPages, Progress,
};
use nix::sys::signal::{Signal, kill};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::dest_error::DestError;
use super::origin::{Cmd, Ev};
use super::state::{DestState, OriginState};
use super::{chain, start_time};
use crate::daemon::NodeRef;
use crate::dump::Held;
use crate::dump::mm;
use crate::image::Codec;
use crate::relay::origin::Plan;
use crate::restore::lazy::Armed;
use crate::state::{PAGE_SIZE, PageRun, VmaState};
use crate::sys::uffd;

/// Pages per pushed message (256 KiB): a fault's answer waits at most for the one being sent.
const BATCH: usize = 64;
/// Pushed messages queued for the stream.
const PUSHES_QUEUED: usize = 2;
/// Pages sent for one fault: the page and those after it not sent yet (64 KiB).
const AROUND: usize = 16;
/// How long a committed copy waits for its origin's page stream.
const STREAM_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- the origin's side

/// Under the freeze, after the dump collected `vmas` of `pid`: every present page of the
/// areas whose contents can follow (`mm::can_follow`, at least `mm::FOLLOW_MIN_PAGES`
/// present) moves from `pages` to `precopied`: the image leaves them out, the destination
/// leaves them missing. An area the dump left unwalked (`DumpOptions::pages_follow`: its
/// whole range `precopied`) follows whole, pages the original never had included: they are
/// named absent once the copy runs ([`serve`]). Returns the pages that follow.
///
/// The pages at `keep` (addresses) stay in the image: those the kernel writes on the task's
/// behalf while the restorer still runs it, before the missing pages are registered (a
/// thread's `struct rseq`, updated on each return to user space after it was moved or
/// preempted: such a page would be made present with nothing but those fields), and those
/// the copy is likely to touch first ([`first_touched`]).
pub fn mark(pid: Pid, vmas: &mut [VmaState], keep: &[u64]) -> Result<Following, String> {
    let mut keep: Vec<u64> = keep.iter().map(|a| a & !(PAGE_SIZE - 1)).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut out = Following::default();
    for v in vmas.iter_mut() {
        if !v.precopied.is_empty() {
            out.walk = true;
            // Left out of the dump's walk, its whole range named (`mm::follow_unwalked`):
            // of the pages kept, those that hold data stay in the image (the others stay
            // absent, as in an area walked); the rest follows, the pages the original never
            // had named absent once the copy runs.
            let ranges = page_ranges(&keep, v.start, v.end);
            v.pages = mm::present_runs(pid, &ranges)
                .map_err(|e| format!("the pages kept in the image: {}", chain(&e)))?;
            let kept: Vec<PageRun> = ranges
                .iter()
                .map(|&(s, e)| PageRun {
                    start: s,
                    count: (e - s) / PAGE_SIZE,
                })
                .collect();
            v.precopied = gaps(v.start, v.end, &kept);
        } else if mm::can_follow(v) && v.stored_pages() >= mm::FOLLOW_MIN_PAGES {
            let (stay, follow) = split_runs(&v.pages, &keep);
            v.pages = stay;
            v.precopied = follow;
        } else {
            continue;
        }
        out.runs.extend(
            v.precopied
                .iter()
                .map(|r| (r.start, r.start + r.count * PAGE_SIZE)),
        );
    }
    Ok(out)
}

/// The pages that follow a lazy copy ([`mark`]).
#[derive(Debug, Default)]
pub struct Following {
    /// Runs (start, end), sorted.
    pub runs: Vec<(u64, u64)>,
    /// An area the dump left unwalked follows whole: the runs hold pages the original never
    /// had, found by a walk once the copy runs.
    pub walk: bool,
}

/// The sorted page addresses `pages` inside `[start, end)`, as ranges (adjacent joined).
fn page_ranges(pages: &[u64], start: u64, end: u64) -> Vec<(u64, u64)> {
    let first = pages.partition_point(|&p| p < start);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &p in pages[first..].iter().take_while(|&&p| p < end) {
        match out.last_mut() {
            Some((_, e)) if *e == p => *e += PAGE_SIZE,
            _ => out.push((p, p + PAGE_SIZE)),
        }
    }
    out
}

/// The pages of `[start, end)` outside the sorted runs `runs`, as runs.
fn gaps(start: u64, end: u64, runs: &[PageRun]) -> Vec<PageRun> {
    let mut out = Vec::new();
    let mut at = start;
    for r in runs {
        if r.start > at {
            out.push(PageRun {
                start: at,
                count: (r.start - at) / PAGE_SIZE,
            });
        }
        at = at.max(r.start + r.count * PAGE_SIZE);
    }
    if end > at {
        out.push(PageRun {
            start: at,
            count: (end - at) / PAGE_SIZE,
        });
    }
    out
}

/// At most this many pages stay in the image for [`first_touched`].
const FIRST_TOUCHED_MAX: usize = 2048;

/// The pages a thread is likely to touch first when it runs again, kept in the image so
/// that its first steps do not each wait for a page from the origin: around its stack
/// pointer (the frames it returns into, and those it calls next), its thread pointer (its
/// TLS and thread control block), and the pages its registers point at with the three
/// after each (the buffers and cursors it is working on). At most
/// [`FIRST_TOUCHED_MAX`] pages; pages outside the areas that follow cost nothing.
pub fn first_touched<'a>(regs: impl IntoIterator<Item = &'a crate::state::Regs>) -> Vec<u64> {
    fn around(out: &mut Vec<u64>, a: u64, below: u64, above: u64) {
        let page = a & !(PAGE_SIZE - 1);
        for k in 0..below + above {
            if let Some(p) = page
                .checked_add(k * PAGE_SIZE)
                .and_then(|p| p.checked_sub(below * PAGE_SIZE))
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for r in regs {
        around(&mut out, r.rsp, 2, 8);
        around(&mut out, r.fs_base, 2, 2);
        for a in [
            r.rip, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ] {
            if (PAGE_SIZE..1 << 47).contains(&a) {
                around(&mut out, a, 0, 4);
            }
        }
        if out.len() >= FIRST_TOUCHED_MAX {
            break;
        }
    }
    out.truncate(FIRST_TOUCHED_MAX);
    out
}

/// Splits sorted page runs into the pages at `keep` (sorted page addresses) and the rest,
/// both as sorted runs (adjacent pages joined).
fn split_runs(runs: &[PageRun], keep: &[u64]) -> (Vec<PageRun>, Vec<PageRun>) {
    fn push(v: &mut Vec<PageRun>, start: u64, count: u64) {
        if count == 0 {
            return;
        }
        match v.last_mut() {
            Some(l) if l.start + l.count * PAGE_SIZE == start => l.count += count,
            _ => v.push(PageRun { start, count }),
        }
    }
    let (mut stay, mut follow) = (Vec::new(), Vec::new());
    for r in runs {
        let end = r.start + r.count * PAGE_SIZE;
        let mut at = r.start;
        let first = keep.partition_point(|&k| k < r.start);
        for &k in keep[first..].iter().take_while(|&&k| k < end) {
            push(&mut follow, at, (k - at) / PAGE_SIZE);
            push(&mut stay, k, 1);
            at = k + PAGE_SIZE;
        }
        push(&mut follow, at, (end - at) / PAGE_SIZE);
    }
    (stay, follow)
}

/// What the async side hears from the destination.
#[derive(Debug)]
pub enum Want {
    /// The copy runs (the commit was acknowledged): the pages may be pushed.
    Running,
    /// Pages it faulted on.
    Pages(Vec<u64>),
    /// It has every page.
    Complete,
    /// The stream broke.
    Lost(String),
}

/// What becomes of an original whose destination was lost during the window, once the
/// destination said what became of its copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The copy was ended (or never ran): the original resumes here.
    Resume,
    /// Every page had arrived: the copy is whole, the original becomes the stub.
    Stub,
}

/// What the tracer needs to serve the pages after the commit.
#[derive(Debug)]
pub struct TracerLazy {
    /// The pages pushed in the background (and the last message, `done`).
    pages: mpsc::Sender<LazyPages>,
    /// The answers to faults: sent ahead of any push still queued ([`Prioritized`]).
    answers: mpsc::Sender<LazyPages>,
    wants: std::sync::mpsc::Receiver<Want>,
    decide: std::sync::mpsc::Receiver<Decision>,
    codec: Codec,
    runs: Vec<(u64, u64)>,
    pushed: Arc<AtomicU64>,
    asked: Arc<AtomicU64>,
    /// Pages of `runs` the original never had (named absent, not sent).
    absent: Arc<AtomicU64>,
    /// Compressed bytes sent.
    wire: Arc<AtomicU64>,
}

/// Two channels as one stream: whatever `first` has goes ahead of what `then` has; it ends
/// when both are closed.
struct Prioritized<T> {
    first: Option<mpsc::Receiver<T>>,
    then: Option<mpsc::Receiver<T>>,
}

impl<T> tokio_stream::Stream for Prioritized<T> {
    type Item = T;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        use std::task::Poll;
        // A message of `slot`, if it has one; a closed channel leaves its slot.
        fn take<T>(
            slot: &mut Option<mpsc::Receiver<T>>,
            cx: &mut std::task::Context<'_>,
        ) -> Option<T> {
            match slot.as_mut()?.poll_recv(cx) {
                Poll::Ready(Some(m)) => Some(m),
                Poll::Ready(None) => {
                    *slot = None;
                    None
                }
                Poll::Pending => None,
            }
        }
        let this = &mut *self;
        if let Some(m) = take(&mut this.first, cx).or_else(|| take(&mut this.then, cx)) {
            Poll::Ready(Some(m))
        } else if this.first.is_none() && this.then.is_none() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

/// Which of the pages to send went out: one bit per page of each run.
#[derive(Debug)]
struct Sent {
    runs: Vec<(u64, u64)>,
    /// Per run: the index of its first page.
    first: Vec<usize>,
    bits: Vec<bool>,
    left: usize,
}

impl Sent {
    fn new(runs: &[(u64, u64)]) -> Self {
        let mut first = Vec::with_capacity(runs.len());
        let mut n = 0usize;
        for &(s, e) in runs {
            first.push(n);
            n += ((e - s) / PAGE_SIZE) as usize;
        }
        Sent {
            runs: runs.to_vec(),
            first,
            bits: vec![false; n],
            left: n,
        }
    }

    /// The index of page `addr`, if it is one to send.
    fn index(&self, addr: u64) -> Option<usize> {
        let i = self.runs.partition_point(|&(_, e)| e <= addr);
        let &(s, _) = self.runs.get(i).filter(|&&(s, _)| s <= addr)?;
        Some(self.first[i] + ((addr - s) / PAGE_SIZE) as usize)
    }

    fn addr(&self, idx: usize) -> u64 {
        let i = self.first.partition_point(|&f| f <= idx) - 1;
        self.runs[i].0 + (idx - self.first[i]) as u64 * PAGE_SIZE
    }

    /// Takes every unsent page of the runs outside the sorted runs `present`: the pages the
    /// original never had, as runs.
    fn absent(&mut self, present: &[PageRun]) -> Vec<(u64, u32)> {
        let mut out: Vec<(u64, u32)> = Vec::new();
        let mut p = 0;
        for (i, &(s, e)) in self.runs.iter().enumerate() {
            let mut at = s;
            while at < e {
                while present
                    .get(p)
                    .is_some_and(|r| r.start + r.count * PAGE_SIZE <= at)
                {
                    p += 1;
                }
                let next = present.get(p).map_or(e, |r| r.start.clamp(at, e));
                for a in (at..next).step_by(PAGE_SIZE as usize) {
                    let idx = self.first[i] + ((a - s) / PAGE_SIZE) as usize;
                    if self.bits[idx] {
                        continue;
                    }
                    self.bits[idx] = true;
                    self.left -= 1;
                    match out.last_mut() {
                        Some((st, c)) if *st + u64::from(*c) * PAGE_SIZE == a && *c < u32::MAX => {
                            *c += 1
                        }
                        _ => out.push((a, 1)),
                    }
                }
                at = match present.get(p) {
                    Some(r) if next < e => (r.start + r.count * PAGE_SIZE).min(e),
                    _ => e,
                };
            }
        }
        out
    }

    /// Takes up to `n` unsent pages among the `span` from index `from` on.
    fn take(&mut self, from: usize, n: usize, span: usize) -> Vec<(u64, u32)> {
        let mut out: Vec<(u64, u32)> = Vec::new();
        let mut idx = from;
        let end = from.saturating_add(span).min(self.bits.len());
        let mut taken = 0;
        while idx < end && taken < n {
            if !self.bits[idx] {
                self.bits[idx] = true;
                self.left -= 1;
                taken += 1;
                let a = self.addr(idx);
                match out.last_mut() {
                    Some((s, c)) if *s + u64::from(*c) * PAGE_SIZE == a => *c += 1,
                    _ => out.push((a, 1)),
                }
            }
            idx += 1;
        }
        out
    }
}

fn compress(c: Codec, raw: &[u8]) -> Result<(&'static str, Vec<u8>), String> {
    match c {
        Codec::None => Ok(("none", raw.to_vec())),
        Codec::Lz4 => lz4::block::compress(raw, None, false)
            .map(|d| ("lz4", d))
            .map_err(|e| format!("lz4: {e}")),
        Codec::Zstd => zstd::bulk::compress(raw, 1)
            .map(|d| ("zstd", d))
            .map_err(|e| format!("zstd: {e}")),
    }
}

/// Reads the pages of `runs` from the frozen original and makes them one message.
fn pack(pid: Pid, codec: Codec, runs: &[(u64, u32)]) -> Result<LazyPages, String> {
    let len: usize = runs.iter().map(|r| r.1 as usize).sum::<usize>() * PAGE_SIZE as usize;
    let mut raw = vec![0u8; len];
    let remote: Vec<RemoteIoVec> = runs
        .iter()
        .map(|&(s, c)| RemoteIoVec {
            base: s as usize,
            len: c as usize * PAGE_SIZE as usize,
        })
        .collect();
    let got = {
        let mut local = [IoSliceMut::new(&mut raw)];
        process_vm_readv(pid, &mut local, &remote)
            .map_err(|e| format!("read the pages of pid {pid}: {e}"))?
    };
    if got != len {
        return Err(format!("read the pages of pid {pid}: {got} of {len} bytes"));
    }
    let (name, data) = compress(codec, &raw)?;
    Ok(LazyPages {
        pages: Some(PrecopyPages {
            round: 0,
            starts: runs.iter().map(|r| r.0).collect(),
            counts: runs.iter().map(|r| r.1).collect(),
            codec: name.into(),
            raw_len: len as u64,
            data,
            blake3: blake3::hash(&raw).as_bytes().to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Absent runs per message (12 bytes each on the wire).
const ABSENT_RUNS: usize = 65_536;

/// How often the loop of [`serve`] looks whether the walk is done while it waits for faults.
const WALK_POLL: Duration = Duration::from_micros(200);

/// Sends every page of `job.runs` of the frozen `pid`: the pages asked for first (with a few
/// after each), the rest in order; then waits until the destination has them all. With
/// `walk` (areas the dump left unwalked, `mm::follow_unwalked`) the runs hold pages the
/// original never had: a thread walks them for the pages that hold data while the first
/// faults are answered (such a page reads as zeros there too), the others are named absent
/// to the destination, and the pushing starts once the walk is done.
fn serve(pid: Pid, job: &TracerLazy, walk: bool) -> Result<(), String> {
    let mut sent = Sent::new(&job.runs);
    let mut walking = if walk {
        let (tx, rx) = std::sync::mpsc::channel();
        let runs = job.runs.clone();
        std::thread::Builder::new()
            .name("lazy-walk".into())
            .spawn(move || {
                let t = Instant::now();
                let found = mm::present_runs(pid, &runs).map_err(|e| chain(&e));
                let _ = tx.send((found, t.elapsed()));
            })
            .map_err(|e| format!("start the walk of the pages that follow: {e}"))?;
        Some(rx)
    } else {
        None
    };
    let mut cursor = 0usize;
    let send_on = |to: &mpsc::Sender<LazyPages>, m: LazyPages| {
        let n = m.pages.as_ref().map_or(0, |p| p.data.len() as u64);
        job.wire.fetch_add(n, Ordering::Relaxed);
        to.blocking_send(m)
            .map_err(|_| "the page stream closed".to_string())
    };
    let send = |m: LazyPages| send_on(&job.pages, m);
    // Answers the faults; returns where the last answer ended: the push goes on from there
    // (a process working through its memory finds the pages after its fault on their way).
    let answer = |sent: &mut Sent, addrs: Vec<u64>| -> Result<Option<usize>, String> {
        let mut after = None;
        for a in addrs {
            let Some(idx) = sent.index(a & !(PAGE_SIZE - 1)) else {
                continue;
            };
            if sent.bits[idx] {
                continue;
            }
            let runs = sent.take(idx, AROUND, AROUND);
            let n: u64 = runs.iter().map(|r| u64::from(r.1)).sum();
            job.asked.fetch_add(n, Ordering::Relaxed);
            let mut m = pack(pid, job.codec, &runs)?;
            m.asked = true;
            send_on(&job.answers, m)?;
            after = Some(idx + AROUND);
        }
        Ok(after)
    };
    // Nothing is pushed before the copy runs (it cannot fault before, and the pushing
    // would slow the commit down on the same cores and link, which is downtime): until
    // then each message is waited for.
    let mut running = false;
    loop {
        if let Some(rx) = &walking {
            match rx.try_recv() {
                Ok((found, took)) => {
                    let present =
                        found.map_err(|e| format!("the walk of the pages that follow: {e}"))?;
                    let absent = sent.absent(&present);
                    let n: u64 = absent.iter().map(|r| u64::from(r.1)).sum();
                    job.absent.fetch_add(n, Ordering::Relaxed);
                    tracing::debug!(pid = pid.as_raw(), elapsed = ?took, absent = n, runs = absent.len(), "lazy: the pages that follow walked");
                    for part in absent.chunks(ABSENT_RUNS) {
                        send_on(
                            &job.answers,
                            LazyPages {
                                absent_starts: part.iter().map(|r| r.0).collect(),
                                absent_counts: part.iter().map(|r| r.1).collect(),
                                ..Default::default()
                            },
                        )?;
                    }
                    walking = None;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err("the walk of the pages that follow ended without a result".into());
                }
            }
        }
        // Faults first; nothing is pushed until the walk is done.
        let want = if walking.is_some() {
            match job.wants.recv_timeout(WALK_POLL) {
                Ok(w) => Some(w),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("the page stream ended".into());
                }
            }
        } else if running {
            match job.wants.try_recv() {
                Ok(w) => Some(w),
                Err(std::sync::mpsc::TryRecvError::Empty) => None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err("the page stream ended".into());
                }
            }
        } else {
            Some(
                job.wants
                    .recv()
                    .map_err(|_| "the page stream ended".to_string())?,
            )
        };
        if let Some(want) = want {
            match want {
                Want::Running => running = true,
                Want::Pages(a) => {
                    if let Some(after) = answer(&mut sent, a)? {
                        cursor = after;
                    }
                }
                Want::Complete => return Ok(()),
                Want::Lost(why) => return Err(why),
            }
            continue;
        }
        if sent.left == 0 {
            break;
        }
        while cursor < sent.bits.len() && sent.bits[cursor] {
            cursor += 1;
        }
        if cursor >= sent.bits.len() {
            // The pages before the last fault's.
            cursor = 0;
            continue;
        }
        let runs = sent.take(cursor, BATCH, usize::MAX);
        let n: u64 = runs.iter().map(|r| u64::from(r.1)).sum();
        send(pack(pid, job.codec, &runs)?)?;
        job.pushed.fetch_add(n, Ordering::Relaxed);
        // FERRY_FAULT lazy-slow-push: 50 ms per message pushed (a window the tests can act in).
        if super::fault("lazy-slow-push") {
            std::thread::sleep(Duration::from_millis(50));
        }
        // FERRY_FAULT origin-exit-lazy: this agent exits once 16 MiB went out.
        if job.pushed.load(Ordering::Relaxed) >= 4096 && super::fault("origin-exit-lazy") {
            tracing::error!("FERRY_FAULT origin-exit-lazy: exiting");
            std::process::exit(70);
        }
    }
    send(LazyPages {
        done: true,
        ..Default::default()
    })?;
    loop {
        match job.wants.recv() {
            Ok(Want::Running) => {}
            Ok(Want::Pages(a)) => {
                answer(&mut sent, a)?;
            }
            Ok(Want::Complete) => return Ok(()),
            Ok(Want::Lost(why)) => return Err(why),
            Err(_) => return Err("the page stream ended".into()),
        }
    }
}

/// The tracer's part of the commit of a lazy migration, the original frozen in `held`:
/// makes it die with this agent, reports [`Ev::LazyArmed`] (the async side then lets the
/// copy run), serves the pages, and once the destination has them all turns the original
/// into the stub ([`Ev::Stubbed`]). If the destination is lost first ([`Ev::LazyLost`]),
/// the copy may have run: the original stays frozen until the async side learned from the
/// destination what became of its copy ([`Decision`]): resumed ([`Ev::Thawed`]) if it was
/// ended, the stub if it had every page; ended if this agent goes first (`EXITKILL`).
pub(crate) fn tracer_commit(
    held: Held,
    plan: Plan,
    id: &str,
    socket: &std::path::Path,
    mut job: TracerLazy,
    following: Following,
    events: &mpsc::UnboundedSender<Ev>,
) {
    job.runs = following.runs;
    let walk = following.walk;
    let pid = held.tasks()[0].tracee.pid();
    let armed: Result<(), String> = held.tasks().iter().try_for_each(|t| {
        nix::sys::ptrace::setoptions(
            t.tracee.pid(),
            nix::sys::ptrace::Options::PTRACE_O_EXITKILL
                | nix::sys::ptrace::Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP),
        )
        .map_err(|e| format!("PTRACE_O_EXITKILL on thread {}: {e}", t.tracee.pid()))
    });
    if let Err(why) = armed {
        // Before the copy ran: the original is given back.
        let _ = held.thaw();
        let _ = events.send(Ev::StubFailed(why));
        return;
    }
    let _ = events.send(Ev::LazyArmed(pages_of(&job.runs)));
    if let Err(why) = serve(pid, &job, walk) {
        let missing = held_missing(&job);
        tracing::error!(migration = %id, %why, missing, "lazy migration lost its destination; the original is held frozen until it says what became of its copy");
        let _ = events.send(Ev::LazyLost(why));
        match job.decide.recv() {
            Ok(Decision::Stub) => {}
            Ok(Decision::Resume) => {
                let thawed = held.thaw();
                if let Err(e) = &thawed {
                    tracing::error!(migration = %id, error = %chain(e), "resume the original");
                }
                let _ = events.send(match thawed {
                    Ok(()) => Ev::Thawed,
                    Err(e) => Ev::StubFailed(format!("resume the original: {}", chain(&e))),
                });
                return;
            }
            // The async side is gone (the agent is going away): the original goes with it.
            Err(_) => {
                let _ = held.end();
                return;
            }
        }
    }
    // Every page is there: the original's memory is needed no more.
    let stub = match crate::relay::stub_path() {
        Ok(s) => s,
        Err(e) => {
            let _ = held.end();
            let _ = events.send(Ev::StubFailed(format!("the stub: {}", chain(&e))));
            return;
        }
    };
    match crate::relay::origin::become_stub_of(
        held.tasks(),
        &held.state,
        &plan,
        &stub,
        id,
        socket,
        true,
    ) {
        Ok(()) => {
            if let Err(e) = held.detach_as_is() {
                tracing::warn!(migration = %id, error = %chain(&e), "detach the stub");
            }
            let _ = events.send(Ev::Stubbed(plan));
        }
        Err(e) => {
            // The copy runs with all its memory; the original must not: ended, and its
            // relayed descriptors with it.
            let _ = held.end();
            let _ = events.send(Ev::StubFailed(format!(
                "the stub could not be injected ({}); the copy runs on without its relayed \
                 descriptors",
                chain(&e)
            )));
        }
    }
}

/// Pages not pushed yet (for the log).
fn held_missing(job: &TracerLazy) -> u64 {
    let total: u64 = job.runs.iter().map(|(s, e)| (e - s) / PAGE_SIZE).sum();
    let gone = [&job.pushed, &job.asked, &job.absent].map(|n| n.load(Ordering::Relaxed));
    total.saturating_sub(gone.iter().sum())
}

/// The origin's commit of a lazy migration, from `prepared` on; returns the summary.
#[allow(clippy::too_many_arguments)]
pub(super) async fn origin_commit(
    node: &NodeRef,
    rec: &mut MigrationRecord,
    client: &mut PeerClient<Channel>,
    cmd_tx: &std::sync::mpsc::Sender<Cmd>,
    ev_rx: &mut mpsc::UnboundedReceiver<Ev>,
    codec: Codec,
    since: Instant,
    t0: Instant,
    progress: &mpsc::Sender<Result<MigrateEvent, Status>>,
    turn: Option<tokio::sync::MutexGuard<'static, ()>>,
    mut summary: MigrateSummary,
) -> Result<MigrateSummary, Status> {
    let id = rec.migration_id.clone();
    let to = rec.peer.clone();
    let pid = rec.pid;
    let record = |rec: &mut MigrationRecord, state: OriginState, detail: String| {
        node.store
            .set(rec, state, detail)
            .map_err(|e| Status::internal(format!("migration records: {}", chain(&e))))
    };
    let (pages_tx, pages_rx) = mpsc::channel::<LazyPages>(PUSHES_QUEUED);
    let (answers_tx, answers_rx) = mpsc::channel::<LazyPages>(16);
    let (wants_tx, wants_rx) = std::sync::mpsc::channel::<Want>();
    let (decide_tx, decide_rx) = std::sync::mpsc::channel::<Decision>();
    let pushed = Arc::new(AtomicU64::new(0));
    let asked = Arc::new(AtomicU64::new(0));
    let absent = Arc::new(AtomicU64::new(0));
    let wire = Arc::new(AtomicU64::new(0));
    record(
        rec,
        OriginState::Committing,
        format!(
            "lazy: the copy on {to} is to run while its memory follows; the original is held \
             frozen and ends with this agent"
        ),
    )?;
    crate::timeline::mark_of(crate::timeline::Side::Origin, &id, "record committing");
    let _ = cmd_tx.send(Cmd::Lazy(TracerLazy {
        pages: pages_tx,
        answers: answers_tx,
        wants: wants_rx,
        decide: decide_rx,
        codec,
        runs: Vec::new(),
        pushed: pushed.clone(),
        asked: asked.clone(),
        absent: absent.clone(),
        wire: wire.clone(),
    }));
    let total = match ev_rx.recv().await {
        Some(Ev::LazyArmed(total)) => {
            crate::timeline::mark_of(crate::timeline::Side::Origin, &id, "EXITKILL");
            total
        }
        Some(Ev::StubFailed(why)) => {
            super::origin::abort_remote(node.clone(), to.clone(), id.clone());
            let _ = record(rec, OriginState::Aborted, why.clone());
            return Err(Status::aborted(format!(
                "lazy commit failed, pid {pid} goes on here: {why}"
            )));
        }
        other => {
            super::origin::abort_remote(node.clone(), to.clone(), id.clone());
            let why = format!("tracer: unexpected {other:?}");
            let _ = record(rec, OriginState::Aborted, why.clone());
            return Err(Status::internal(why));
        }
    };
    // The page stream first, so that the first faults find it.
    let first = LazyPages {
        migration_id: id.clone(),
        ..Default::default()
    };
    let outbound = tokio_stream::once(first).chain(Prioritized {
        first: Some(answers_rx),
        then: Some(pages_rx),
    });
    let go = wants_tx.clone();
    let mut lazy_client = client.clone();
    let stream_task = tokio::spawn(async move {
        let mut inbound = match lazy_client.lazy(outbound).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                let _ = wants_tx.send(Want::Lost(crate::transport::status_detail(&s)));
                return;
            }
        };
        loop {
            match inbound.message().await {
                Ok(Some(w)) if w.complete => {
                    let _ = wants_tx.send(Want::Complete);
                    return;
                }
                Ok(Some(w)) => {
                    if wants_tx.send(Want::Pages(w.addrs)).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ =
                        wants_tx.send(Want::Lost("the destination ended the page stream".into()));
                    return;
                }
                Err(s) => {
                    let _ = wants_tx.send(Want::Lost(crate::transport::status_detail(&s)));
                    return;
                }
            }
        }
    });
    if super::fault("origin-exit-lazy-commit") {
        tracing::error!(migration = %id, "FERRY_FAULT origin-exit-lazy-commit: exiting");
        std::process::exit(70);
    }
    // The copy runs from here; the original never will again, unless the destination
    // refuses the commit (its copy is gone: it never ran).
    if let Err(why) = super::origin::commit_remote(node, client, &id, &to).await {
        let _ = go.send(Want::Lost(why.clone()));
        drop(go);
        let _ = decide_tx.send(Decision::Resume);
        stream_task.abort();
        loop {
            match ev_rx.recv().await {
                Some(Ev::LazyLost(_)) => continue,
                Some(Ev::Thawed) => {
                    let why = format!(
                        "lazy migration: {why}; the copy never ran; the original resumed here"
                    );
                    let _ = node.store.set(rec, OriginState::Aborted, why.clone());
                    return Err(Status::aborted(why));
                }
                other => {
                    let why = format!("lazy migration: {why}; then {other:?}");
                    let _ = node.store.set(rec, OriginState::Lost, why.clone());
                    return Err(Status::data_loss(why));
                }
            }
        }
    }
    let _ = go.send(Want::Running);
    drop(go);
    let frozen = since.elapsed();
    let running = Instant::now();
    crate::timeline::mark_of(crate::timeline::Side::Origin, &id, "commit acknowledged");
    let timeline = crate::timeline::finish(crate::timeline::Side::Origin, &id);
    rec.frozen_end_unix_us = super::origin::now_us();
    // The frozen phase is over: the next migration may freeze.
    drop(turn);
    record(
        rec,
        OriginState::Committed,
        format!(
            "lazy: running on {to} as pid {}; {total} pages following",
            rec.remote_pid
        ),
    )?;
    tracing::info!(migration = %id, frozen = ?frozen, pages = total, "lazy copy running");
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let outcome = loop {
        tokio::select! {
            ev = ev_rx.recv() => break ev,
            _ = tick.tick() => {
                // Pages named absent count as done (total counts them too).
                let done = [&pushed, &asked, &absent].map(|n| n.load(Ordering::Relaxed));
                let done: u64 = done.iter().sum();
                let _ = progress.send(Ok(MigrateEvent {
                    event: Some(Event::Progress(Progress {
                        migration_id: id.clone(),
                        phase: "lazy".into(),
                        bytes: done * PAGE_SIZE,
                        total: total * PAGE_SIZE,
                        wire_bytes: wire.load(Ordering::Relaxed),
                    })),
                })).await;
            }
        }
    };
    stream_task.abort();
    let (pushed, asked, absent) = (
        pushed.load(Ordering::Relaxed),
        asked.load(Ordering::Relaxed),
        absent.load(Ordering::Relaxed),
    );
    let outcome = match outcome {
        Some(Ev::LazyLost(why)) => {
            let missing = total.saturating_sub(pushed + asked + absent);
            let why = format!(
                "lazy: the destination {to} was lost with {missing} pages not sent ({why}); the \
                 original is held frozen here until {to} says what became of its copy"
            );
            tracing::error!(migration = %id, "{why}");
            let _ = node.store.set(rec, OriginState::Committed, why);
            let decision = decide_after_loss(node, &to, &id).await;
            let _ = decide_tx.send(decision.0);
            match (decision.0, ev_rx.recv().await) {
                (Decision::Resume, Some(Ev::Thawed)) => {
                    let why = format!(
                        "lazy migration lost: the copy on {to} could not be completed ({}); the \
                         original resumed here",
                        decision.1
                    );
                    tracing::error!(migration = %id, "{why}");
                    let _ = node.store.set(rec, OriginState::Aborted, why.clone());
                    return Err(Status::aborted(why));
                }
                (_, other) => other,
            }
        }
        other => other,
    };
    let plan = match outcome {
        Some(Ev::Stubbed(plan)) => plan,
        Some(Ev::StubFailed(why) | Ev::LazyLost(why)) => {
            let why = format!("lazy migration: {why}; the original was ended");
            tracing::error!(migration = %id, %why);
            let _ = node.store.set(rec, OriginState::Lost, why.clone());
            return Err(Status::data_loss(why));
        }
        other => {
            let why = format!("tracer: unexpected {other:?}; the original was ended");
            let _ = node.store.set(rec, OriginState::Lost, why.clone());
            return Err(Status::data_loss(why));
        }
    };
    let took = t0.elapsed();
    record(
        rec,
        OriginState::Done,
        format!("running on {to} as pid {}; relaying", rec.remote_pid),
    )?;
    super::origin::keep_relaying(
        node.clone(),
        Some(plan),
        pid,
        rec.start_time,
        id.clone(),
        to.clone(),
    );
    super::origin::moved_on(node, pid, rec.start_time, &to, rec.remote_pid, &id);
    summary.total_us = took.as_micros() as u64;
    summary.frozen_us = frozen.as_micros() as u64;
    // Pages the original never had were named absent, not sent.
    let followed = total.saturating_sub(absent);
    summary.raw_bytes += followed * PAGE_SIZE;
    summary.wire_bytes += wire.load(Ordering::Relaxed);
    summary.lazy = format!(
        "{followed} pages ({:.1} MiB) followed: {pushed} pushed, {asked} on fault; all there \
         {:.3} s after the copy started",
        (followed * PAGE_SIZE) as f64 / (1 << 20) as f64,
        running.elapsed().as_secs_f64()
    );
    if absent > 0 {
        summary.lazy.push_str(&format!(
            "; {absent} pages of the areas that followed were never there (named absent)"
        ));
    }
    if let Some(t) = timeline {
        summary.lazy.push_str("; the origin's stop: ");
        summary.lazy.push_str(&t);
    }
    Ok(summary)
}

/// The destination of lazy migration `id` was lost during the window (its agent, the link):
/// asks it until it says what became of its copy. Ended, aborted or unknown there: the
/// original resumes; every page there (its record no longer `lazy:`): the stub. A copy
/// still running with pages missing (it has not seen the loss yet) is asked about again.
/// Returns the decision and what the destination said.
async fn decide_after_loss(node: &NodeRef, to: &str, id: &str) -> (Decision, String) {
    let mut delay = Duration::from_millis(200);
    loop {
        let answer = match node.peers.channel(to) {
            Ok(ch) => super::origin::peer_client(ch)
                .query(ferry_proto::v1::MigrationRef {
                    migration_id: id.to_string(),
                })
                .await
                .map(|r| Some(r.into_inner()))
                .or_else(|s| match s.code() {
                    tonic::Code::NotFound => Ok(None),
                    _ => Err(crate::transport::status_detail(&s)),
                }),
            Err(e) => Err(chain(&e)),
        };
        match answer {
            Ok(None) => return (Decision::Resume, format!("{to} has no record of it")),
            Ok(Some(r)) => match DestState::of(&r) {
                Some(DestState::Lost | DestState::Aborted) | None => {
                    return (Decision::Resume, format!("{to} says: {}", r.detail));
                }
                Some(DestState::Committed | DestState::Done | DestState::Ended)
                    if !r.detail.starts_with("lazy:") =>
                {
                    return (Decision::Stub, r.detail);
                }
                Some(_) => {
                    tracing::info!(migration = %id, %to, state = %r.state, "the copy's pages are still missing there; asking again");
                }
            },
            Err(e) => {
                tracing::info!(migration = %id, %to, error = %e, "destination unreachable; the original stays frozen");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Whether an origin record is a lazy migration's between its commit and the stub.
pub(crate) fn is_lazy(rec: &MigrationRecord) -> bool {
    rec.detail.starts_with("lazy:")
}

/// On start, an origin record of a lazy migration that was committing or committed when
/// this agent stopped, its original not a stub: if the original lives, its tracer died
/// before it was tied to it (before the copy could run): aborted as usual. Otherwise it
/// ended with this agent (`PTRACE_O_EXITKILL`) while the copy's pages were following: lost.
pub(crate) async fn resolve_origin(node: &NodeRef, mut rec: MigrationRecord) {
    let id = rec.migration_id.clone();
    let to = rec.peer.clone();
    if OriginState::of(&rec) == Some(OriginState::Committing)
        && start_time(rec.pid) == Some(rec.start_time)
    {
        let _ = node.store.set(
            &mut rec,
            OriginState::Aborted,
            "the agent stopped before the commit; the original went on here",
        );
        super::origin::abort_remote(node.clone(), to, id);
        return;
    }
    let why = format!(
        "lazy migration lost: this agent stopped while the copy's pages were following; the \
         original ended with it; the copy on {to} cannot run without its pages (see its \
         record there)"
    );
    tracing::error!(migration = %id, "{why}");
    let _ = node.store.set(&mut rec, OriginState::Lost, why);
    // A copy still held stopped goes; one that runs is ended by its own agent.
    if let Ok(ch) = node.peers.channel(&to) {
        let _ = super::origin::peer_client(ch)
            .abort(ferry_proto::v1::MigrationRef {
                migration_id: id.clone(),
            })
            .await;
    }
}

// ---------------------------------------------------------------- the destination's side

/// A copy armed and waiting for its page stream: its start time, userfaultfd and guard.
#[derive(Debug)]
struct Kept {
    start: u64,
    armed: Armed,
    guard: Guard,
}

/// Copies restored for a lazy migration, armed and waiting for their page stream, by PID.
fn armed() -> &'static Mutex<HashMap<i32, Kept>> {
    static A: OnceLock<Mutex<HashMap<i32, Kept>>> = OnceLock::new();
    A.get_or_init(Mutex::default)
}

/// A copy's guard (`sys::clone::ChildBody::Guard`), a child process of this agent from the
/// copy's restore until every page arrived: should this agent die meanwhile (killed, its
/// host's OOM killer), the guard ends the copy, which cannot run without the pages. Holding
/// the copy's userfaultfd, it keeps the areas registered until then: the copy's faults wait
/// instead of reading zeros. Dropped (killed and reaped) once it is needed no more.
#[derive(Debug)]
struct Guard {
    pid: Pid,
}

impl Guard {
    fn spawn(a: &Armed) -> Result<Self, String> {
        use std::os::fd::AsRawFd;
        let me = crate::sys::pidfd_open(nix::unistd::getpid())
            .map_err(|e| format!("pidfd_open of this agent: {e}"))?;
        let copy =
            crate::sys::pidfd_open(a.pid).map_err(|e| format!("pidfd_open of the copy: {e}"))?;
        let body = crate::sys::clone::ChildBody::Guard {
            watch: me.as_raw_fd(),
            victim: copy.as_raw_fd(),
            keep: a.uffd.as_raw_fd(),
        };
        // The child has its own copies of the descriptors; ours close here.
        let pid = crate::sys::clone::clone3(body, None, false)
            .map_err(|e| format!("start the copy's guard: {e}"))?;
        Ok(Guard { pid })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Migrations whose copy has every page (this run of the agent), so that the record of a
/// copy committed meanwhile no longer says `lazy:`; [`record_lock`] orders the writes.
fn arrived() -> &'static Mutex<std::collections::HashSet<String>> {
    static A: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    A.get_or_init(Mutex::default)
}

/// Held while a lazy copy's destination record is written (commit, all pages arrived).
pub(crate) fn record_lock() -> std::sync::MutexGuard<'static, ()> {
    static L: Mutex<()> = Mutex::new(());
    lock(&L)
}

/// The prefix of a destination record's detail while its copy's pages are arriving:
/// `lazy: ` (a restarted agent ends such a copy: [`resolve_dest`]), else nothing. Called
/// under [`record_lock`].
pub(crate) fn dest_prefix(rec: &MigrationRecord) -> &'static str {
    if rec.detail.starts_with("lazy:") && !lock(arrived()).contains(&rec.migration_id) {
        "lazy: "
    } else {
        ""
    }
}

/// Whether a destination record is a lazy copy's whose pages had not all arrived (`done`
/// included, which is final otherwise).
pub(crate) fn unfinished_dest(rec: &MigrationRecord) -> bool {
    rec.detail.starts_with("lazy:")
        && matches!(
            DestState::of(rec),
            Some(DestState::Prepared | DestState::Committed | DestState::Done)
        )
}

/// On start, a destination record whose copy's pages were still arriving when this agent
/// stopped: the copy was ended by its guard (else here); recorded `lost`. Returns whether
/// it was one.
pub(crate) fn resolve_dest(node: &NodeRef, rec: &mut MigrationRecord) -> bool {
    if !unfinished_dest(rec) {
        return false;
    }
    if rec.pid > 0 && start_time(rec.pid) == Some(rec.start_time) {
        let _ = kill(Pid::from_raw(rec.pid), Signal::SIGKILL);
    }
    let msg = "lazy migration lost: this agent stopped while the copy's pages were still \
               arriving; the copy cannot run without them and was ended with it";
    tracing::error!(migration = %rec.migration_id, pid = rec.pid, "{msg}");
    let _ = node.store.set(rec, DestState::Lost, msg);
    true
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// After a lazy copy's restore (its restorer's thread): keeps its userfaultfd until the
/// origin's page stream comes, and starts its guard.
pub fn keep(a: Armed) -> Result<(), String> {
    let pid = a.pid.as_raw();
    let start = start_time(pid).unwrap_or(0);
    let guard = Guard::spawn(&a)?;
    lock(armed()).insert(
        pid,
        Kept {
            start,
            armed: a,
            guard,
        },
    );
    Ok(())
}

/// Once the copy of lazy migration `id` is prepared: until its page stream takes it, its
/// userfaultfd is watched over. An aborted copy's goes; a copy committed (running) that
/// gets no stream within [`STREAM_WAIT`] lost its origin.
pub fn watch(node: NodeRef, id: String, pid: i32) {
    tokio::spawn(async move {
        let mut running_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !lock(armed()).contains_key(&pid) {
                return;
            }
            let rec = node.store.get(&id).ok().flatten();
            match rec.as_ref().and_then(DestState::of) {
                Some(DestState::Committed | DestState::Done) => {
                    let t = running_since.get_or_insert_with(Instant::now);
                    if t.elapsed() >= STREAM_WAIT {
                        let kept = lock(armed()).remove(&pid);
                        let missing = kept.as_ref().map_or(0, |k| pages_of(&k.armed.missing));
                        lost(
                            &node,
                            &id,
                            pid,
                            missing,
                            &format!("no page stream came within {} s", STREAM_WAIT.as_secs()),
                        );
                        // Its userfaultfd closes only now that it is ended.
                        drop(kept);
                        return;
                    }
                }
                Some(DestState::Prepared | DestState::Receiving) => {}
                _ => {
                    lock(armed()).remove(&pid);
                    return;
                }
            }
        }
    });
}

fn pages_of(runs: &[(u64, u64)]) -> u64 {
    runs.iter().map(|(s, e)| (e - s) / PAGE_SIZE).sum()
}

/// The copy of `id` cannot go on: said in the log and the record, and the copy ended.
fn lost(node: &NodeRef, id: &str, pid: i32, missing: u64, why: &str) {
    let msg = format!(
        "lazy migration lost its origin with {missing} pages missing ({why}); the copy cannot \
         run without them and was ended"
    );
    tracing::error!(migration = %id, pid, "{msg}");
    if let Ok(Some(mut rec)) = node.store.get(id) {
        let _ = node.store.set(&mut rec, DestState::Lost, msg);
        if rec.pid == pid && start_time(pid) == Some(rec.start_time) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The pages still missing in a copy, by their address on the origin, and how its areas
/// moved since (`mremap`).
#[derive(Debug)]
struct Missing {
    uffd: Option<OwnedFd>,
    /// Dropped before `uffd` is closed (it holds the userfaultfd too).
    guard: Option<Guard>,
    pid: Pid,
    /// Sorted runs (start, end) on the origin; a page leaves when it arrived or was dropped
    /// by the copy.
    bits: Sent,
    /// (from, to, len) in the order they happened.
    remaps: Vec<(u64, u64, u64)>,
    warnings: Vec<String>,
    /// Time spent in `UFFDIO_COPY` (for the log: writing fresh memory is what bounds the
    /// rate on some machines).
    copying: Duration,
}

impl Missing {
    fn is_missing(&self, origin: u64) -> bool {
        self.bits.index(origin).is_some_and(|i| !self.bits.bits[i])
    }

    fn drop_page(&mut self, origin: u64) -> bool {
        match self.bits.index(origin) {
            Some(i) if !self.bits.bits[i] => {
                self.bits.bits[i] = true;
                self.bits.left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Where a page of the origin is in the copy now.
    fn here(&self, mut a: u64) -> u64 {
        for &(from, to, len) in &self.remaps {
            if from <= a && a < from + len {
                a = a - from + to;
            }
        }
        a
    }

    /// Which page of the origin a page of the copy is.
    fn origin(&self, mut a: u64) -> u64 {
        for &(from, to, len) in self.remaps.iter().rev() {
            if to <= a && a < to + len {
                a = a - to + from;
            }
        }
        a
    }

    /// Handles the pending events; returns the origin's pages to ask for.
    fn events(&mut self) -> Result<Vec<u64>, String> {
        let Some(fd) = self.uffd.as_ref() else {
            return Ok(Vec::new());
        };
        let msgs = uffd::read_msgs(fd.as_fd()).map_err(|e| format!("read its userfaultfd: {e}"))?;
        let mut want = Vec::new();
        for m in msgs {
            match m.event {
                uffd::EVENT_PAGEFAULT => {
                    let at = m.arg[1] & !(PAGE_SIZE - 1);
                    let o = self.origin(at);
                    if self.is_missing(o) {
                        want.push(o);
                    } else if let Some(fd) = self.uffd.as_ref() {
                        // Never present on the origin (or arrived meanwhile): zeros.
                        match uffd::zeropage(fd.as_fd(), at, PAGE_SIZE) {
                            Ok(()) => {}
                            Err(nix::errno::Errno::EEXIST) => {
                                let _ = uffd::wake(fd.as_fd(), at, PAGE_SIZE);
                            }
                            Err(e) => return Err(format!("UFFDIO_ZEROPAGE {at:#x}: {e}")),
                        }
                    }
                }
                uffd::EVENT_REMOVE | uffd::EVENT_UNMAP => {
                    // Dropped by the copy: what comes later for them is not its any more.
                    let (s, e) = (m.arg[0], m.arg[1]);
                    let mut a = s & !(PAGE_SIZE - 1);
                    while a < e {
                        let o = self.origin(a);
                        self.drop_page(o);
                        a += PAGE_SIZE;
                    }
                }
                uffd::EVENT_REMAP => self.remaps.push((m.arg[0], m.arg[1], m.arg[2])),
                uffd::EVENT_FORK => {
                    let child_fd = m.arg[0] as u32 as i32;
                    // The kernel installed the child's userfaultfd in ferryd: not kept.
                    let w = "the copy forked while its memory was still arriving: the child \
                             reads zeros for the pages that had not arrived yet"
                        .to_string();
                    tracing::warn!(pid = self.pid.as_raw(), "{w}");
                    self.warnings.push(w);
                    let _ = nix::unistd::close(child_fd);
                }
                other => tracing::debug!(event = other, "userfaultfd event ignored"),
            }
        }
        Ok(want)
    }

    /// Takes the runs (`starts`, `counts`) of pages the origin never had: none will come, a
    /// fault on one is answered with a zero page ([`Self::events`]). A thread already
    /// waiting on one (it asked the origin, which answers only pages it has) is woken: it
    /// faults again and gets its zero page.
    fn absent(&mut self, starts: &[u64], counts: &[u32]) -> Result<(), String> {
        if starts.len() != counts.len() {
            return Err(format!(
                "absent runs: {} starts for {} counts",
                starts.len(),
                counts.len()
            ));
        }
        for (&s, &c) in starts.iter().zip(counts) {
            let end = u64::from(c)
                .checked_mul(PAGE_SIZE)
                .and_then(|l| s.checked_add(l))
                .filter(|_| s % PAGE_SIZE == 0)
                .ok_or_else(|| format!("absent run {s:#x} of {c} pages is not a page range"))?;
            for o in (s..end).step_by(PAGE_SIZE as usize) {
                self.drop_page(o);
            }
            let Some(fd) = self.uffd.as_ref() else {
                continue;
            };
            let woken = if self.remaps.is_empty() {
                uffd::wake(fd.as_fd(), s, end - s)
            } else {
                (s..end)
                    .step_by(PAGE_SIZE as usize)
                    .try_for_each(|o| uffd::wake(fd.as_fd(), self.here(o), PAGE_SIZE))
            };
            woken.map_err(|e| format!("UFFDIO_WAKE of absent run {s:#x}: {e}"))?;
        }
        Ok(())
    }

    /// Puts the pages of one message into the copy (runs, and their pages in order).
    /// Returns those to try again once the pending events were read (`EAGAIN`: the copy's
    /// address space is changing), by (page, offset in `raw`).
    fn put(&mut self, runs: &[(u64, u32)], raw: &[u8]) -> Result<Vec<(u64, usize)>, String> {
        let mut pages = Vec::new();
        let mut off = 0usize;
        for &(s, c) in runs {
            for k in 0..u64::from(c) {
                pages.push((s + k * PAGE_SIZE, off));
                off += PAGE_SIZE as usize;
            }
        }
        self.put_pages(&pages, raw)
    }

    fn put_pages(
        &mut self,
        pages: &[(u64, usize)],
        raw: &[u8],
    ) -> Result<Vec<(u64, usize)>, String> {
        const PAGE: usize = PAGE_SIZE as usize;
        let mut again = Vec::new();
        let mut i = 0;
        while i < pages.len() {
            let (o, off) = pages[i];
            if off + PAGE > raw.len() {
                return Err("a page beyond its message".into());
            }
            if !self.is_missing(o) {
                i += 1;
                continue;
            }
            // A run of missing pages, contiguous here and in the message: one ioctl.
            let at = self.here(o);
            let mut n = 1;
            while let Some(&(o2, off2)) = pages.get(i + n) {
                if off2 != off + n * PAGE
                    || off2 + PAGE > raw.len()
                    || !self.is_missing(o2)
                    || self.here(o2) != at + (n * PAGE) as u64
                {
                    break;
                }
                n += 1;
            }
            let Some(fd) = self.uffd.as_ref() else {
                return Ok(Vec::new());
            };
            let tq = Instant::now();
            let got = uffd::copy(fd.as_fd(), at, &raw[off..off + n * PAGE]);
            self.copying += tq.elapsed();
            match got {
                // Part of the run (the rest is tried next, one page at least).
                Ok(b) if b >= PAGE_SIZE => n = (b / PAGE_SIZE) as usize,
                Ok(_) => return Err(format!("UFFDIO_COPY {at:#x}: nothing copied")),
                // EEXIST: there already (a zero page it faulted on after the copy
                // dropped the area, …); ENOENT: no longer mapped.
                Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENOENT) => n = 1,
                Err(nix::errno::Errno::ESRCH) => {
                    // The copy is gone: nothing more to put.
                    self.bits.left = 0;
                    return Ok(Vec::new());
                }
                Err(nix::errno::Errno::EAGAIN) => {
                    // Its address space is changing: once the events are read.
                    again.extend_from_slice(&pages[i..i + n]);
                    i += n;
                    continue;
                }
                Err(e) => return Err(format!("UFFDIO_COPY {at:#x}: {e}")),
            }
            for &(o, _) in &pages[i..i + n] {
                self.drop_page(o);
            }
            i += n;
        }
        Ok(again)
    }
}

/// Messages received and waiting to be put into the copy.
const PUTS_QUEUED: usize = 8;

/// Checks and puts into the copy every message of `rx`, until every page is in or `rx` ends.
fn put_all(state: &Mutex<Missing>, mut rx: mpsc::Receiver<PrecopyPages>) -> Result<(), String> {
    while let Some(p) = rx.blocking_recv() {
        put_one(state, p)?;
        if lock(state).bits.left == 0 {
            return Ok(());
        }
    }
    Ok(())
}

/// Checks one message and puts its pages into the copy.
fn put_one(state: &Mutex<Missing>, p: PrecopyPages) -> Result<(), String> {
    let d = super::live::Received::decode(p)?;
    let mut again = lock(state).put(d.runs(), d.raw())?;
    for _ in 0..10_000 {
        if again.is_empty() {
            return Ok(());
        }
        // The fault thread reads the events meanwhile.
        std::thread::sleep(Duration::from_millis(1));
        again = lock(state).put_pages(&again, d.raw())?;
    }
    if !again.is_empty() {
        return Err(format!(
            "{} pages could not be put in (its address space kept changing)",
            again.len()
        ));
    }
    Ok(())
}

/// The response stream of `Peer.Lazy`.
pub type WantStream = ReceiverStream<Result<LazyWant, Status>>;

/// `Peer.Lazy` on the destination: the origin of migration `id` (named by the first
/// message) streams the pages of its running copy.
pub async fn serve_dest(
    node: &NodeRef,
    peer: &str,
    mut inbound: Streaming<LazyPages>,
) -> Result<WantStream, DestError> {
    use super::dest_error::{DecideError, ReceiveError};
    let first = inbound
        .message()
        .await
        .map_err(ReceiveError::Stream)?
        .ok_or(ReceiveError::EmptyPageStream)?;
    let id = first.migration_id;
    let rec = node
        .store
        .get(&id)?
        .filter(|r| r.role == "destination" && r.peer == peer)
        .ok_or_else(|| DecideError::NotOfPeer {
            id: id.clone(),
            peer: peer.to_string(),
        })?;
    let Kept {
        armed: a, guard, ..
    } = lock(armed())
        .remove(&rec.pid)
        .filter(|k| k.start == rec.start_time)
        .ok_or_else(|| ReceiveError::NoCopyWaiting(id.clone()))?;
    let total = pages_of(&a.missing);
    let state = Arc::new(Mutex::new(Missing {
        pid: a.pid,
        bits: Sent::new(&a.missing),
        guard: Some(guard),
        uffd: Some(a.uffd),
        remaps: Vec::new(),
        warnings: Vec::new(),
        copying: Duration::ZERO,
    }));
    let (tx, rx) = mpsc::channel::<Result<LazyWant, Status>>(64);
    let t0 = Instant::now();
    tracing::info!(migration = %id, pid = rec.pid, pages = total, "lazy pages: the origin's stream came");
    // The fault thread: reads the userfaultfd, answers what it can, asks for the rest.
    let faults = {
        let state = state.clone();
        let tx = tx.clone();
        let id = id.clone();
        std::thread::Builder::new()
            .name(format!("lazy-{id}"))
            .spawn(move || {
                loop {
                    let fd = {
                        let s = lock(&state);
                        match s.uffd.as_ref().map(|f| f.try_clone()) {
                            Some(Ok(f)) => f,
                            _ => return,
                        }
                    };
                    match uffd::poll_in(fd.as_fd(), 100) {
                        Ok(false) => continue,
                        Ok(true) => {}
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(e) => {
                            tracing::warn!(migration = %id, error = %e, "poll its userfaultfd");
                            return;
                        }
                    }
                    // Read and noted under the lock: no page goes in between a drop the
                    // copy made and our noting it.
                    let want = lock(&state).events();
                    match want {
                        Ok(w) if w.is_empty() => {}
                        Ok(addrs) => {
                            if tx
                                .blocking_send(Ok(LazyWant {
                                    addrs,
                                    ..Default::default()
                                }))
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(why) => {
                            tracing::warn!(migration = %id, %why, "lazy faults");
                            return;
                        }
                    }
                }
            })
            .map_err(|e| ReceiveError::Task(format!("start the fault thread: {e}")))?
    };
    let node = node.clone();
    let pid = rec.pid;
    tokio::spawn(async move {
        let result: Result<(), String> = async {
            // Received here, put in on a thread of its own meanwhile: the stream goes on
            // while the pages of the messages before are written.
            let (put_tx, put_rx) = mpsc::channel::<PrecopyPages>(PUTS_QUEUED);
            let mut putter = {
                let state = state.clone();
                tokio::task::spawn_blocking(move || put_all(&state, put_rx))
            };
            let mut put_tx = Some(put_tx);
            loop {
                tokio::select! {
                    // It ends once every page is in, on a failure, or when its input ends.
                    r = &mut putter => {
                        r.map_err(|e| e.to_string())??;
                        if lock(&state).bits.left > 0 {
                            return Err(
                                "the origin sent everything it had, yet pages are missing".into()
                            );
                        }
                        return Ok(());
                    }
                    msg = inbound.message(), if put_tx.is_some() => {
                        let msg = match msg {
                            Ok(Some(m)) => m,
                            Ok(None) => return Err("the origin ended the page stream".into()),
                            Err(s) => return Err(crate::transport::status_detail(&s)),
                        };
                        if !msg.absent_starts.is_empty() {
                            // Pages the original never had: none will come.
                            let state = state.clone();
                            tokio::task::spawn_blocking(move || {
                                lock(&state).absent(&msg.absent_starts, &msg.absent_counts)
                            })
                            .await
                            .map_err(|e| e.to_string())??;
                            continue;
                        }
                        if msg.asked
                            && let Some(p) = msg.pages
                        {
                            // A fault waits for these: put in now, ahead of the queue.
                            let state = state.clone();
                            tokio::task::spawn_blocking(move || put_one(&state, p))
                                .await
                                .map_err(|e| e.to_string())??;
                        } else if let (Some(p), Some(tx)) = (msg.pages, put_tx.as_ref())
                            && tx.send(p).await.is_err()
                        {
                            // The putter ended: its result is next.
                            put_tx = None;
                        }
                        if msg.done {
                            put_tx = None;
                        }
                    }
                }
            }
        }
        .await;
        let (left, warnings, copying) = {
            let mut s = lock(&state);
            (
                s.bits.left as u64,
                std::mem::take(&mut s.warnings),
                s.copying,
            )
        };
        // A copy that cannot be completed is ended first: once the userfaultfd is closed,
        // its missing pages would read as zeros.
        if let Err(why) = &result {
            lost(&node, &id, pid, left, why);
        }
        {
            let mut s = lock(&state);
            // Closed (the guard's copy first): the kernel unregisters every area; nothing of
            // ours stays in the copy.
            s.guard = None;
            s.uffd = None;
        }
        let _ = faults.join();
        if result.is_ok() {
            tracing::info!(migration = %id, pid, pages = total, elapsed = ?t0.elapsed(), copying = ?copying, "lazy pages: all arrived; userfaultfd closed");
            {
                let _order = record_lock();
                lock(arrived()).insert(id.clone());
                if let Ok(Some(mut rec)) = node.store.get(&id)
                    && let Some(
                        state @ (DestState::Prepared | DestState::Committed | DestState::Done),
                    ) = DestState::of(&rec)
                {
                    let mut detail = match state {
                        DestState::Prepared => "copy stopped, waiting for commit".to_string(),
                        _ => format!("running as pid {pid}"),
                    };
                    detail.push_str(&format!(
                        "; all {total} pages arrived after {:.3} s",
                        t0.elapsed().as_secs_f64()
                    ));
                    for w in warnings {
                        detail.push_str("; ");
                        detail.push_str(&w);
                    }
                    let _ = node.store.set(&mut rec, state, detail);
                }
            }
            let _ = tx
                .send(Ok(LazyWant {
                    complete: true,
                    ..Default::default()
                }))
                .await;
        }
    });
    Ok(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u64, count: u64) -> PageRun {
        PageRun { start, count }
    }

    #[test]
    fn first_touched_pages_are_around_the_stack_and_the_registers() {
        let p = PAGE_SIZE;
        let regs = crate::state::Regs {
            rsp: 0x7000_0000 + 0x10,
            fs_base: 0x6000_0000 + 0x800,
            rdi: 0x5000_0000 + 0x123,
            // Not addresses: left out.
            rax: 7,
            rbx: u64::MAX,
            ..Default::default()
        };
        let got = first_touched([&regs]);
        // Two pages below the stack pointer's, eight from it on.
        for k in 0..8 {
            assert!(got.contains(&(0x7000_0000 + k * p)), "stack page {k}");
        }
        assert!(got.contains(&(0x7000_0000 - 2 * p)));
        assert!(!got.contains(&(0x7000_0000 - 3 * p)));
        assert!(!got.contains(&(0x7000_0000 + 8 * p)));
        for a in [0x6000_0000 - 2 * p, 0x6000_0000 + p] {
            assert!(got.contains(&a), "thread pointer {a:#x}");
        }
        // The page a register points at and the three after it.
        for k in 0..4 {
            assert!(got.contains(&(0x5000_0000 + k * p)));
        }
        assert!(!got.contains(&(0x5000_0000 + 4 * p)));
        assert!(got.iter().all(|a| a % p == 0 && *a < 1 << 47));
        // Bounded, however many threads.
        let many = vec![regs; 1000];
        assert_eq!(first_touched(&many).len(), FIRST_TOUCHED_MAX);
    }

    #[tokio::test]
    async fn answers_go_ahead_of_queued_pushes() {
        let (atx, arx) = mpsc::channel(4);
        let (ptx, prx) = mpsc::channel(4);
        ptx.send(1).await.unwrap();
        ptx.send(2).await.unwrap();
        atx.send(10).await.unwrap();
        let mut s = Prioritized {
            first: Some(arx),
            then: Some(prx),
        };
        assert_eq!(s.next().await, Some(10));
        assert_eq!(s.next().await, Some(1));
        atx.send(11).await.unwrap();
        assert_eq!(s.next().await, Some(11));
        drop(atx);
        assert_eq!(s.next().await, Some(2));
        drop(ptx);
        // Both closed: the stream ends.
        assert_eq!(s.next().await, None);
    }

    #[test]
    fn kernel_written_pages_stay_in_the_image() {
        let p = PAGE_SIZE;
        let runs = [run(0x10000, 8), run(0x20000, 2)];
        // The 3rd and 4th pages of the first run, and a page outside every run.
        let (stay, follow) = split_runs(&runs, &[0x10000 + 2 * p, 0x10000 + 3 * p, 0x30000]);
        assert_eq!(stay, vec![run(0x10000 + 2 * p, 2)]);
        assert_eq!(
            follow,
            vec![run(0x10000, 2), run(0x10000 + 4 * p, 4), run(0x20000, 2)]
        );
        let (stay, follow) = split_runs(&runs, &[0x10000, 0x20000 + p]);
        assert_eq!(stay, vec![run(0x10000, 1), run(0x20000 + p, 1)]);
        assert_eq!(follow, vec![run(0x10000 + p, 7), run(0x20000, 1)]);
        let (stay, follow) = split_runs(&runs, &[]);
        assert!(stay.is_empty());
        assert_eq!(follow, runs.to_vec());
    }

    #[test]
    fn absent_pages_are_those_outside_the_present_runs_not_sent_yet() {
        let p = PAGE_SIZE;
        let (a, b) = (0x10000, 0x40000);
        // Two areas of 8 and 4 pages.
        let mut sent = Sent::new(&[(a, a + 8 * p), (b, b + 4 * p)]);
        // Page 6 of the first area answered a fault before the walk was done.
        assert_eq!(
            sent.take(sent.index(a + 6 * p).unwrap(), 1, 1),
            vec![(a + 6 * p, 1)]
        );
        // Present: pages 1-2 and 5 of the first area, page 0 and a run that ends beyond
        // the second.
        let present = [
            run(a + p, 2),
            run(a + 5 * p, 1),
            run(b, 1),
            run(b + 3 * p, 9),
        ];
        let absent = sent.absent(&present);
        assert_eq!(
            absent,
            vec![(a, 1), (a + 3 * p, 2), (a + 7 * p, 1), (b + p, 2),]
        );
        // Left: the present pages not sent (1, 2, 5 of the first, 0 and 3 of the second).
        assert_eq!(sent.left, 5);
        // Nothing present: everything not sent is absent; a second walk finds nothing more.
        let mut all = Sent::new(&[(a, a + 4 * p)]);
        assert_eq!(all.absent(&[]), vec![(a, 4)]);
        assert_eq!(all.left, 0);
        assert!(all.absent(&[]).is_empty());
    }

    #[test]
    fn an_unwalked_area_keeps_its_present_pages_out_of_what_follows() {
        let p = PAGE_SIZE;
        let (s, e) = (0x10000, 0x10000 + 10 * p);
        assert_eq!(
            page_ranges(&[0x1000, s, s + p, s + 4 * p, e], s, e),
            vec![(s, s + 2 * p), (s + 4 * p, s + 5 * p)]
        );
        assert_eq!(
            gaps(s, e, &[run(s, 2), run(s + 4 * p, 1)]),
            vec![run(s + 2 * p, 2), run(s + 5 * p, 5)]
        );
        assert_eq!(gaps(s, e, &[]), vec![run(s, 10)]);
        assert_eq!(gaps(s, e, &[run(s, 10)]), Vec::<PageRun>::new());
    }
}
