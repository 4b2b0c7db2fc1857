//! Live migration (pre-copy, docs/migration.md "Live migration"): the origin sends the
//! process's private anonymous memory while it runs, then again what it wrote, round after
//! round, and stops it only for what is left; the destination keeps what arrived and puts it
//! into the copy.
//!
//! A page counts as already sent only if it was present when it was read, no scan saw it
//! written since (write tracking, `dump/track.rs`; the last scan runs under the freeze), it
//! is present under the freeze, and its area stayed registered for tracking until the freeze
//! (an area mapped anew, or moved by `mremap`, loses it: all its pages travel again). Its page
//! frame is not compared: what the kernel does to a page of a registered area without a write
//! either keeps its contents and its write-protection (swap, migration, compaction, THP
//! split; KSM and THP collapse skip or drop write-protected pages, which then count as
//! written) or drops it (`MADV_DONTNEED`, a reclaimed `MADV_FREE` page: absent, or mapped
//! again without the protection, i.e. written) — docs/migration.md "What counts as sent".

use std::collections::{HashMap, HashSet};
use std::io::{IoSlice, IoSliceMut};
use std::time::{Duration, Instant};

use ferry_proto::v1::PrecopyPages;
use nix::sys::uio::{RemoteIoVec, process_vm_readv, process_vm_writev};
use nix::unistd::Pid;

use crate::dump::DumpError;
use crate::dump::freeze::Frozen;
use crate::dump::track::Tracker;
use crate::image::Codec;
use crate::state::{PAGE_SIZE, PageRun, VmaKind, VmaState};

/// At most this many pre-copy rounds (the first copies everything present).
pub const MAX_ROUNDS: u32 = 8;
/// The downtime aimed at when none is asked for.
pub const DEFAULT_MAX_DOWNTIME_MS: u32 = 50;
/// Pages per message (1 MiB).
const BATCH: u64 = 256;

/// The origin's side: the write tracking and what was sent.
#[derive(Debug)]
pub struct Precopy {
    pid: Pid,
    tracker: Option<Tracker>,
    /// Per tracked area (by start, sorted): whether each page was read and sent and not
    /// written since.
    sent: Vec<(u64, Vec<bool>)>,
    /// The areas still registered for tracking at the freeze.
    tracked: Vec<(u64, u64)>,
    codec: Codec,
    /// For the first message: the PID, the areas (with `MAP_NORESERVE`) and the others.
    layout: Option<Layout>,
}

#[derive(Debug, Clone, Default)]
struct Layout {
    pid: i32,
    areas: Vec<(u64, u64, bool)>,
    avoid: Vec<(u64, u64)>,
}

impl Layout {
    fn read(pid: Pid, tracked: &[(u64, u64)]) -> Result<Self, DumpError> {
        let maps = crate::proc::parse_maps(&crate::proc::read(pid.as_raw(), "maps")?)?;
        Self::of(pid, &maps, tracked)
    }

    /// [`Layout::read`] with `maps` read already.
    fn of(
        pid: Pid,
        maps: &[crate::proc::MapsEntry],
        tracked: &[(u64, u64)],
    ) -> Result<Self, DumpError> {
        let raw = pid.as_raw();
        let flags = crate::proc::parse_smaps_vmflags(&crate::proc::read(raw, "smaps")?);
        let ns_pid = crate::proc::parse_status(&crate::proc::read(raw, "status")?)?.ns_pid;
        let nr = |start: u64| {
            flags
                .iter()
                .any(|(s, f)| *s == start && f.iter().any(|x| x == "nr"))
        };
        Ok(Layout {
            pid: ns_pid,
            areas: tracked.iter().map(|&(s, e)| (s, e, nr(s))).collect(),
            avoid: maps
                .iter()
                .filter(|m| !tracked.contains(&(m.start, m.end)))
                .map(|m| (m.start, m.end))
                .collect(),
        })
    }
}

/// What one round sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Round {
    /// Raw page bytes.
    pub raw: u64,
    /// Bytes on the wire (compressed).
    pub wire: u64,
    /// How long it took.
    pub took: Duration,
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::None => "none",
        Codec::Zstd => "zstd",
        Codec::Lz4 => "lz4",
    }
}

fn compress(c: Codec, raw: &[u8]) -> Result<Vec<u8>, String> {
    match c {
        Codec::None => Ok(raw.to_vec()),
        Codec::Lz4 => lz4::block::compress(raw, None, false).map_err(|e| format!("lz4: {e}")),
        Codec::Zstd => zstd::bulk::compress(raw, 1).map_err(|e| format!("zstd: {e}")),
    }
}

/// One message of round `round`: the pages of `runs`, read into `raw`.
fn message(
    codec: Codec,
    round: u32,
    raw: &[u8],
    runs: &[(u64, u32)],
    layout: &Layout,
) -> Result<PrecopyPages, String> {
    Ok(PrecopyPages {
        round,
        starts: runs.iter().map(|r| r.0).collect(),
        counts: runs.iter().map(|r| r.1).collect(),
        codec: codec_name(codec).into(),
        raw_len: raw.len() as u64,
        data: compress(codec, raw)?,
        blake3: blake3::hash(raw).as_bytes().to_vec(),
        pid: layout.pid,
        area_starts: layout.areas.iter().map(|a| a.0).collect(),
        area_ends: layout.areas.iter().map(|a| a.1).collect(),
        area_noreserve: layout.areas.iter().map(|a| a.2).collect(),
        avoid_starts: layout.avoid.iter().map(|a| a.0).collect(),
        avoid_ends: layout.avoid.iter().map(|a| a.1).collect(),
        member: 0,
        // Set by the sender.
        migration_id: String::new(),
    })
}

/// A message with no pages that only describes the task to make ahead: sent before a
/// post-copy migration freezes `pid`, so that the destination makes its task while the
/// origin is still running (the same task a live migration's first round describes). The
/// areas are the private anonymous ones but the stack; one the image does not have as it
/// is now is simply not kept (`restore::pipeline`).
pub fn plan_only(pid: Pid) -> Result<PrecopyPages, DumpError> {
    let maps = crate::proc::parse_maps(&crate::proc::read(pid.as_raw(), "maps")?)?;
    let areas: Vec<(u64, u64)> = maps
        .iter()
        .filter(|e| crate::dump::track::trackable(e) && e.name != "[stack]")
        .map(|e| (e.start, e.end))
        .collect();
    let layout = Layout::of(pid, &maps, &areas)?;
    message(Codec::None, 0, &[], &[], &layout).map_err(|why| DumpError::BadTarget {
        pid: pid.as_raw(),
        why,
    })
}

/// Page ranges `ranges` as (start, pages) pieces of at most [`BATCH`] pages.
fn batches(ranges: &[(u64, u64)]) -> impl Iterator<Item = (u64, u64)> + '_ {
    ranges.iter().flat_map(|&(s, e)| {
        let n = (e - s) / PAGE_SIZE;
        (0..n.div_ceil(BATCH)).map(move |i| (s + i * BATCH * PAGE_SIZE, BATCH.min(n - i * BATCH)))
    })
}

/// Bytes of `ranges`.
pub fn bytes_of(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|(s, e)| e - s).sum()
}

impl Precopy {
    /// Starts tracking the writes of `pid` (checked by `dump::precheck_only` already).
    pub fn start(pid: Pid, codec: Codec) -> Result<Self, DumpError> {
        let tracker = Tracker::start(pid)?;
        let layout = Layout::read(pid, tracker.areas())?;
        let mut sent: Vec<(u64, Vec<bool>)> = tracker
            .areas()
            .iter()
            .map(|&(s, e)| (s, vec![false; ((e - s) / PAGE_SIZE) as usize]))
            .collect();
        sent.sort_by_key(|a| a.0);
        Ok(Precopy {
            pid,
            tracker: Some(tracker),
            sent,
            tracked: Vec::new(),
            codec,
            layout: Some(layout),
        })
    }

    /// The slot of page `addr` in [`Self::sent`].
    fn slot(&mut self, addr: u64) -> Option<&mut bool> {
        let i = self
            .sent
            .partition_point(|(s, v)| s + v.len() as u64 * PAGE_SIZE <= addr);
        let (s, v) = self.sent.get_mut(i)?;
        if addr < *s {
            return None;
        }
        v.get_mut(((addr - *s) / PAGE_SIZE) as usize)
    }

    /// Whether page `addr` was sent and not written since.
    fn was_sent(&self, addr: u64) -> bool {
        let i = self
            .sent
            .partition_point(|(s, v)| s + v.len() as u64 * PAGE_SIZE <= addr);
        let Some((s, v)) = self.sent.get(i) else {
            return false;
        };
        addr >= *s
            && v.get(((addr - *s) / PAGE_SIZE) as usize)
                .copied()
                .unwrap_or(false)
    }

    fn forget(&mut self, addr: u64) {
        if let Some(p) = self.slot(addr) {
            *p = false;
        }
    }

    fn tracker(&self) -> Result<&Tracker, String> {
        self.tracker
            .as_ref()
            .ok_or_else(|| "write tracking ended".to_string())
    }

    /// What the first round reads: every present (or swapped) page of the tracked areas.
    pub fn present(&self) -> Result<Vec<(u64, u64)>, String> {
        self.tracker()?.present().map_err(|e| e.to_string())
    }

    /// Pages written since the last scan, protected again; they no longer count as sent.
    pub fn written(&mut self) -> Result<Vec<(u64, u64)>, String> {
        let ranges = self.tracker()?.written().map_err(|e| e.to_string())?;
        for &(s, e) in &ranges {
            let mut a = s;
            while a < e {
                self.forget(a);
                a += PAGE_SIZE;
            }
        }
        Ok(ranges)
    }

    /// Reads the pages of `ranges` that are present and hands them to `send` as messages of
    /// round `round`. This thread reads (and notes each page's frame); compression and `send`
    /// run on one worker per core (messages of a round name disjoint pages: their order does
    /// not matter).
    pub fn round(
        &mut self,
        round: u32,
        ranges: &[(u64, u64)],
        send: &(dyn Fn(PrecopyPages) -> Result<(), String> + Sync),
    ) -> Result<Round, String> {
        let t0 = Instant::now();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let (jobs, rx) =
            std::sync::mpsc::sync_channel::<(Vec<u8>, Vec<(u64, u32)>, Layout)>(workers * 2);
        let rx = std::sync::Mutex::new(rx);
        let failed: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        let wire = std::sync::atomic::AtomicU64::new(0);
        let codec = self.codec;
        let mut raw_total = 0u64;
        std::thread::scope(|sc| -> Result<(), String> {
            for _ in 0..workers {
                sc.spawn(|| {
                    loop {
                        let job = rx.lock().map(|r| r.recv());
                        let Ok(Ok((raw, runs, layout))) = job else {
                            return;
                        };
                        // After a failure the rest is only drained (the reader stops soon).
                        if failed.lock().map_or(true, |f| f.is_some()) {
                            continue;
                        }
                        let r = message(codec, round, &raw, &runs, &layout).and_then(|m| {
                            wire.fetch_add(
                                m.data.len() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            send(m)
                        });
                        if let Err(e) = r
                            && let Ok(mut f) = failed.lock()
                        {
                            f.get_or_insert(e);
                        }
                    }
                });
            }
            let result = (|| -> Result<(), String> {
                for (start, n) in batches(ranges) {
                    if failed.lock().map_or(true, |f| f.is_some()) {
                        break;
                    }
                    let Some((raw, runs)) = self.read_batch(start, n)? else {
                        continue;
                    };
                    raw_total += raw.len() as u64;
                    // The first message tells the destination about the task to make: sent
                    // from here, before any other.
                    if let Some(layout) = self.layout.take() {
                        let m = message(codec, round, &raw, &runs, &layout)?;
                        wire.fetch_add(m.data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        send(m)?;
                        continue;
                    }
                    if jobs.send((raw, runs, Layout::default())).is_err() {
                        // Every worker stopped: one failed, said below.
                        break;
                    }
                }
                Ok(())
            })();
            drop(jobs);
            result
        })?;
        if let Some(e) = failed.lock().ok().and_then(|mut f| f.take()) {
            return Err(e);
        }
        Ok(Round {
            raw: raw_total,
            wire: wire.into_inner(),
            took: t0.elapsed(),
        })
    }

    /// Reads the present pages of `[start, start + n pages)`, noting each one as sent;
    /// `None` if none could be read (absent, or unmapped meanwhile: they travel in the final
    /// stop).
    #[allow(clippy::type_complexity)]
    fn read_batch(
        &mut self,
        start: u64,
        n: u64,
    ) -> Result<Option<(Vec<u8>, Vec<(u64, u32)>)>, String> {
        let pfns = self
            .tracker()?
            .pfns(start, n as usize)
            .map_err(|e| e.to_string())?;
        let mut runs: Vec<(u64, u32)> = Vec::new();
        for (i, pfn) in pfns.iter().enumerate() {
            let addr = start + i as u64 * PAGE_SIZE;
            if pfn.is_none() {
                self.forget(addr);
                continue;
            }
            match runs.last_mut() {
                Some((s, c)) if *s + u64::from(*c) * PAGE_SIZE == addr => *c += 1,
                _ => runs.push((addr, 1)),
            }
        }
        if runs.is_empty() {
            return Ok(None);
        }
        let len: usize = runs.iter().map(|r| r.1 as usize).sum::<usize>() * PAGE_SIZE as usize;
        let remote: Vec<RemoteIoVec> = runs
            .iter()
            .map(|&(s, c)| RemoteIoVec {
                base: s as usize,
                len: c as usize * PAGE_SIZE as usize,
            })
            .collect();
        let mut buf = vec![0u8; len];
        let got = {
            let mut local = [IoSliceMut::new(&mut buf)];
            process_vm_readv(self.pid, &mut local, &remote).unwrap_or(0)
        };
        if got != len {
            for &(s, c) in &runs {
                for k in 0..u64::from(c) {
                    self.forget(s + k * PAGE_SIZE);
                }
            }
            return Ok(None);
        }
        for (i, pfn) in pfns.iter().enumerate() {
            if pfn.is_some()
                && let Some(slot) = self.slot(start + i as u64 * PAGE_SIZE)
            {
                *slot = true;
            }
        }
        Ok(Some((buf, runs)))
    }

    /// Under the freeze, before the dump reads the areas: the last scan of written pages and
    /// which ranges stayed tracked. The tracking itself ends when this is dropped — after the
    /// commit (the stub's `execve` took the old memory: nothing to unregister any more) or
    /// once the process runs again: unregistering write-protected memory costs time
    /// (~0.1 s/GiB here), which is not spent while the process is stopped. Until then the
    /// dumps of this thread know the `uw` of these areas as the tracking's.
    pub fn finish(&mut self, _frozen: &Frozen) -> Result<(), DumpError> {
        let pid = self.pid.as_raw();
        let bad = |why| DumpError::BadTarget { pid, why };
        self.written().map_err(bad)?;
        let t = self.tracker().map_err(bad)?;
        let tracked = t.still_tracked()?;
        t.own_areas();
        self.tracked = tracked;
        Ok(())
    }

    /// Ends the tracking (the migration goes no further, or it is not needed any more).
    pub fn stop(&mut self) {
        if let Some(t) = self.tracker.take() {
            t.close();
        }
    }

    /// After the dump collected `vmas` (under the same freeze as [`Precopy::finish`]): moves
    /// every page the destination has already from `pages` to `precopied`. Returns how many.
    /// Nothing is read from the process: `pages` are the present pages under the freeze, and
    /// the last scan of written pages ran under it (module comment: no page frame compared).
    pub fn mark(&self, vmas: &mut [VmaState]) -> Result<u64, DumpError> {
        let mut kept = 0;
        for v in vmas.iter_mut() {
            let private_anon =
                !v.shared && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack);
            // The ranges of this area whose writes were all seen (still registered).
            let tracked: Vec<(u64, u64)> = self
                .tracked
                .iter()
                .filter(|&&(s, e)| s < v.end && v.start < e)
                .map(|&(s, e)| (s.max(v.start), e.min(v.end)))
                .collect();
            if !private_anon || tracked.is_empty() || v.pages.is_empty() {
                continue;
            }
            let seen = |addr: u64| tracked.iter().any(|&(s, e)| s <= addr && addr < e);
            let mut pages = Vec::new();
            let mut precopied = Vec::new();
            let push = |runs: &mut Vec<PageRun>, addr: u64| match runs.last_mut() {
                Some(r) if r.start + r.count * PAGE_SIZE == addr => r.count += 1,
                _ => runs.push(PageRun {
                    start: addr,
                    count: 1,
                }),
            };
            for r in &v.pages {
                for k in 0..r.count {
                    let addr = r.start + k * PAGE_SIZE;
                    if self.was_sent(addr) && seen(addr) {
                        kept += 1;
                        push(&mut precopied, addr);
                    } else {
                        push(&mut pages, addr);
                    }
                }
            }
            v.pages = pages;
            v.precopied = precopied;
        }
        Ok(kept)
    }
}

/// The task to make ahead: the PID, the areas to map, the ranges its injection area must avoid.
pub type PremadePlan = (i32, Vec<crate::restore::PremadeArea>, Vec<(u64, u64)>);

/// One message checked and decompressed.
#[derive(Debug)]
pub struct Decoded {
    /// Its round.
    pub round: u32,
    runs: Vec<(u64, u32)>,
    raw: Vec<u8>,
    /// The first message's task to make ahead.
    pub plan: Option<PremadePlan>,
    /// `--tree`: the member whose pages these are (its PID in the image); 0 for a single
    /// process.
    pub member: i32,
}

impl Decoded {
    /// Raw bytes of its pages.
    pub fn raw_len(&self) -> u64 {
        self.raw.len() as u64
    }

    /// Its runs of pages (start, count).
    pub fn runs(&self) -> &[(u64, u32)] {
        &self.runs
    }

    /// Its pages, in the order of the runs.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// The destination's side: the pages that arrived, newest first, until the final image says
/// which of them the copy gets.
#[derive(Debug, Default)]
pub struct Received {
    blocks: Vec<Vec<u8>>,
    /// Page address → (block, offset in the block).
    index: HashMap<u64, (u32, u32)>,
    /// Raw bytes received.
    pub bytes: u64,
    /// Rounds seen.
    pub rounds: HashSet<u32>,
    /// The runs of the last message.
    last_runs: Vec<(u64, u32)>,
}

impl Received {
    /// Whether no page was received.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Writes the pages of the last message kept into `premade`'s areas (those inside one).
    pub fn write_last(&self, premade: &crate::restore::Premade) -> Result<(), String> {
        let Some(block) = self.blocks.last() else {
            return Ok(());
        };
        let mut local = Vec::new();
        let mut remote = Vec::new();
        let mut off = 0usize;
        for &(s, c) in &self.last_runs {
            let len = c as usize * PAGE_SIZE as usize;
            if premade.covers(s, s + len as u64) {
                local.push(IoSlice::new(&block[off..off + len]));
                remote.push(RemoteIoVec {
                    base: s as usize,
                    len,
                });
            }
            off += len;
        }
        for (l, r) in local.chunks(1024).zip(remote.chunks(1024)) {
            let want: usize = r.iter().map(|r| r.len).sum();
            let n = process_vm_writev(premade.pid(), l, r)
                .map_err(|e| format!("write pre-copied pages into the premade task: {e}"))?;
            if n != want {
                return Err(format!(
                    "write pre-copied pages into the premade task: {n} of {want} bytes"
                ));
            }
        }
        Ok(())
    }

    /// The task to make ahead that the first message describes (none if it names no PID).
    pub fn premade_of(p: &PrecopyPages) -> Option<PremadePlan> {
        let n = p.area_starts.len();
        if p.pid <= 0 || p.area_ends.len() != n || p.area_noreserve.len() != n {
            return None;
        }
        let ok = |s: u64, e: u64| {
            s < e && s.is_multiple_of(PAGE_SIZE) && e.is_multiple_of(PAGE_SIZE) && e <= 1 << 47
        };
        let areas: Vec<_> = (0..n)
            .map(|i| crate::restore::PremadeArea {
                start: p.area_starts[i],
                end: p.area_ends[i],
                noreserve: p.area_noreserve[i],
            })
            .filter(|a| ok(a.start, a.end))
            .collect();
        let avoid = p
            .avoid_starts
            .iter()
            .copied()
            .zip(p.avoid_ends.iter().copied())
            .collect();
        Some((p.pid, areas, avoid))
    }

    /// Checks and keeps one message.
    pub fn add(&mut self, p: PrecopyPages) -> Result<(), String> {
        let d = Self::decode(p)?;
        self.insert(d);
        Ok(())
    }

    /// Checks one message and decompresses it (any thread; [`Received::insert`] keeps the
    /// results in the order they came).
    pub fn decode(p: PrecopyPages) -> Result<Decoded, String> {
        let plan = Self::premade_of(&p);
        let member = p.member;
        if p.starts.len() != p.counts.len() {
            return Err("pre-copied pages: starts and counts differ in length".into());
        }
        let pages: u64 = p.counts.iter().map(|&c| u64::from(c)).sum();
        if pages * PAGE_SIZE != p.raw_len || p.raw_len > 64 << 20 {
            return Err(format!(
                "pre-copied pages: {} bytes for {pages} pages",
                p.raw_len
            ));
        }
        if let Some(s) = p
            .starts
            .iter()
            .find(|&&s| s % PAGE_SIZE != 0 || s >= 1 << 47)
        {
            return Err(format!("pre-copied pages: bad address {s:#x}"));
        }
        let raw = match p.codec.as_str() {
            "none" => p.data,
            "lz4" => lz4::block::decompress(&p.data, Some(p.raw_len as i32))
                .map_err(|e| format!("pre-copied pages: lz4: {e}"))?,
            "zstd" => zstd::bulk::decompress(&p.data, p.raw_len as usize)
                .map_err(|e| format!("pre-copied pages: zstd: {e}"))?,
            other => return Err(format!("pre-copied pages: unknown codec {other:?}")),
        };
        if raw.len() as u64 != p.raw_len || blake3::hash(&raw).as_bytes()[..] != p.blake3[..] {
            return Err(format!(
                "pre-copied pages of round {} at {:#x}: digest mismatch",
                p.round,
                p.starts.first().copied().unwrap_or(0)
            ));
        }
        Ok(Decoded {
            round: p.round,
            runs: p
                .starts
                .iter()
                .copied()
                .zip(p.counts.iter().copied())
                .collect(),
            raw,
            plan,
            member,
        })
    }

    /// Keeps one decoded message (a later one for the same page replaces it).
    pub fn insert(&mut self, d: Decoded) {
        if d.runs.is_empty() {
            // A plan without pages (post-copy's, [`plan_only`]).
            return;
        }
        let block = self.blocks.len() as u32;
        let mut off = 0u32;
        for &(s, c) in &d.runs {
            for k in 0..u64::from(c) {
                self.index.insert(s + k * PAGE_SIZE, (block, off));
                off += 1;
            }
        }
        self.bytes += d.raw.len() as u64;
        self.rounds.insert(d.round);
        self.last_runs = d.runs;
        self.blocks.push(d.raw);
    }

    /// Writes the pre-copied pages the final image names (`precopied` runs of `vmas`) into
    /// process `pid`, whose areas are mapped and writable. Returns the pages written.
    pub fn write(&self, pid: Pid, vmas: &[VmaState], skip: &[(u64, u64)]) -> Result<u64, String> {
        const MAX_IOV: usize = 1024;
        const PAGE: usize = PAGE_SIZE as usize;
        // Pieces: (block, byte offset, remote address, length), contiguous on both sides.
        let mut pieces: Vec<(u32, usize, u64, usize)> = Vec::with_capacity(MAX_IOV);
        let mut written = 0u64;
        let flush = |pieces: &mut Vec<(u32, usize, u64, usize)>| -> Result<(), String> {
            if pieces.is_empty() {
                return Ok(());
            }
            let local: Vec<IoSlice<'_>> = pieces
                .iter()
                .map(|&(b, o, _, len)| IoSlice::new(&self.blocks[b as usize][o..o + len]))
                .collect();
            let remote: Vec<RemoteIoVec> = pieces
                .iter()
                .map(|&(_, _, addr, len)| RemoteIoVec {
                    base: addr as usize,
                    len,
                })
                .collect();
            let want: usize = pieces.iter().map(|p| p.3).sum();
            let n = process_vm_writev(pid, &local, &remote)
                .map_err(|e| format!("write the pre-copied pages: {e}"))?;
            if n != want {
                return Err(format!(
                    "write the pre-copied pages: {n} of {want} bytes written"
                ));
            }
            pieces.clear();
            Ok(())
        };
        for r in vmas
            .iter()
            .filter(|v| !skip.contains(&(v.start, v.end)))
            .flat_map(|v| v.precopied.iter())
        {
            for k in 0..r.count {
                let addr = r.start + k * PAGE_SIZE;
                let &(b, o) = self
                    .index
                    .get(&addr)
                    .ok_or_else(|| format!("pre-copied page {addr:#x} never arrived"))?;
                let o = o as usize * PAGE;
                match pieces.last_mut() {
                    Some(p) if p.0 == b && p.1 + p.3 == o && p.2 + p.3 as u64 == addr => {
                        p.3 += PAGE
                    }
                    _ => {
                        if pieces.len() == MAX_IOV {
                            flush(&mut pieces)?;
                        }
                        pieces.push((b, o, addr, PAGE));
                    }
                }
                written += 1;
            }
        }
        flush(&mut pieces)?;
        Ok(written)
    }
}

/// What a final stop costs with no page to copy (the process's state collected, sent,
/// restored, checked and committed): 17–28 ms for 64 MiB with nothing written in
/// `cargo xtask bench-migrate --release` on the 2 cores both test hosts share. Rounds go on
/// until the pages left fit in the downtime target less this.
const STOP_FLOOR: Duration = Duration::from_millis(20);

/// How the pre-copy rounds went.
#[derive(Debug, Clone, Default)]
pub struct Rounds {
    /// Raw bytes of each round.
    pub bytes: Vec<u64>,
    /// Why they stopped: "converged: …" or "did not converge: …".
    pub why: String,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// Runs the pre-copy rounds of `pid` (tracking started in `pre`): the first sends every
/// present page of its private anonymous memory, each next one what was written meanwhile.
/// Stops when what is left would travel within `max_downtime` at the rate the rounds went,
/// after [`MAX_ROUNDS`], or when a round saw as much written as it sent (writing outpaces the
/// link); what is left travels in the final stop. `report` hears of each round.
pub fn precopy_rounds(
    pre: &mut Precopy,
    max_downtime: Duration,
    send: &(dyn Fn(PrecopyPages) -> Result<(), String> + Sync),
    report: &mut dyn FnMut(u32, &Round),
) -> Result<Rounds, String> {
    let mut out = Rounds::default();
    let mut ranges = pre.present()?;
    // Bytes per second through the whole pipeline (read, compress, send): the best round's.
    let mut rate: f64 = 0.0;
    for n in 1..=MAX_ROUNDS {
        if super::fault(&format!("origin-exit-precopy-round-{n}")) {
            tracing::error!(
                round = n,
                "FERRY_FAULT origin-exit-precopy-round-{n}: exiting"
            );
            std::process::exit(70);
        }
        if super::fault(&format!("pause-precopy-round-{n}")) {
            tracing::warn!(
                round = n,
                "FERRY_FAULT pause-precopy-round-{n}: sleeping 5 s"
            );
            std::thread::sleep(Duration::from_secs(5));
        }
        let r = pre.round(n, &ranges, send)?;
        out.bytes.push(r.raw);
        report(n, &r);
        if r.raw >= 4 << 20 || rate == 0.0 {
            rate = rate.max(r.raw as f64 / r.took.as_secs_f64().max(1e-6));
        }
        ranges = pre.written()?;
        let left = bytes_of(&ranges);
        // In the stop the pages are collected, sent, written and checked one step after the
        // other, not streamed: about half the rounds' rate (15 MiB took ~40 ms after rounds
        // at 560 MB/s, `bench-migrate`, 1 GiB writing 10 MB/s).
        let need = Duration::from_secs_f64(left as f64 / (rate / 2.0).max(1.0));
        tracing::debug!(round = n, sent = r.raw, left, ?need, rate, "pre-copy round");
        // The stop costs its own time besides the pages (collect, restore, check, commit):
        // what is left must fit in the rest of the target (a target below that cost gets a
        // quarter of itself for the pages).
        let budget = max_downtime
            .saturating_sub(STOP_FLOOR)
            .max(max_downtime / 4);
        if need <= budget {
            out.why = format!(
                "converged: {} left after round {n}, ~{} ms at {:.0} MB/s (+ ~{} ms for the \
                 stop itself)",
                mib(left),
                need.as_millis(),
                rate / 2e6,
                STOP_FLOOR.as_millis()
            );
            break;
        }
        if left >= r.raw && r.raw > 0 {
            out.why = format!(
                "did not converge: {} written during round {n}, which sent {}; stopped and \
                 copied the rest",
                mib(left),
                mib(r.raw)
            );
            break;
        }
        if n == MAX_ROUNDS {
            out.why = format!(
                "did not converge: {} still written after {MAX_ROUNDS} rounds; stopped and \
                 copied the rest",
                mib(left)
            );
        }
    }
    Ok(out)
}
