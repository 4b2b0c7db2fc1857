//! What each side of a relay sent and received, per channel, across relay streams: the
//! bytes a stream that breaks must not lose (docs/relay.md "When a relay breaks").
//!
//! Per channel and direction the bytes are numbered from 0 (their offset in the channel's
//! stream, within a relay *session*: one origin agent's relay of one migration).
//!
//! - The sender keeps every byte it sent until the receiver acknowledged it ([`Outgoing`]:
//!   `kept` holds the bytes `[acked, sent)`). The `credit` frames the receiver sends as it
//!   writes bytes out are the acknowledgements: within a session their sum is the receiver's
//!   count. At most a window is unacknowledged, so at most a window is kept.
//! - Each `data` frame carries the offset of its first byte; the receiver counts what it
//!   wrote out ([`Incoming::delivered`]) and drops the part of a frame it wrote already,
//!   crediting it like bytes written.
//! - On a new stream of the same session the sender sends what it keeps first (from its
//!   oldest unacknowledged byte), then what it reads: the receiver drops what it had, and
//!   nothing is lost or repeated. The end of a direction (`eof`, `close`) is kept too and
//!   sent again after the kept bytes; the receiver acts on it once.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::journal::{Journal, Op};

/// The bytes of one relay: per channel, both directions.
#[derive(Debug)]
pub struct Ledger {
    session: u64,
    /// The peer said it counts in this session (its hello named it): kept bytes are sent
    /// again on a new stream, not dropped.
    peer_counts: AtomicBool,
    chans: Mutex<HashMap<u32, Arc<ChanLedger>>>,
    /// Where its changes are recorded (the origin's, [`Ledger::persistent`]).
    journal: Option<Arc<Journal>>,
}

/// One channel of a [`Ledger`].
#[derive(Debug)]
pub struct ChanLedger {
    out: Mutex<Outgoing>,
    inc: Mutex<Incoming>,
    ch: u32,
    journal: Option<Arc<Journal>>,
}

/// What this side sent on a channel.
#[derive(Debug, Default, Clone)]
pub struct Outgoing {
    /// Offset of the next byte read.
    pub(super) sent: u64,
    /// Bytes the receiver wrote out (the sum of its credits).
    pub(super) acked: u64,
    /// Bytes up to here went out on some stream; those after were read while no stream was
    /// open (the client-away watch).
    pub(super) transmitted: u64,
    /// The bytes `[acked, sent)`.
    pub(super) kept: VecDeque<u8>,
    /// The direction ended: `Some(false)` with `eof`, `Some(true)` with `close`.
    pub(super) end: Option<bool>,
    /// The origin's input of a checkpointed job: what was read since the last checkpoint's
    /// consumed position, for a replay after a failover (not journaled).
    pub(super) history: Option<History>,
}

/// At most this many bytes of input are kept for a replay per channel (16 MiB).
pub const REPLAY_LIMIT: usize = 16 << 20;

/// The input read on a channel since the newest checkpoint's consumed position.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// The offset of its first byte.
    pub from: u64,
    /// The bytes `[from, sent)`.
    pub bytes: VecDeque<u8>,
    /// Bytes were dropped for the limit since the last trim (logged once).
    pub overflowed: bool,
}

impl History {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend(data);
        if self.bytes.len() > REPLAY_LIMIT {
            let drop = self.bytes.len() - REPLAY_LIMIT;
            self.bytes.drain(..drop);
            self.from += drop as u64;
            if !self.overflowed {
                self.overflowed = true;
                tracing::error!(
                    limit = REPLAY_LIMIT,
                    from = self.from,
                    "relay: more input than the replay buffer keeps arrived since the last \
                     checkpoint: a failover now would lose the oldest bytes of it"
                );
            }
        }
    }

    /// The newest checkpoint's process had consumed `consumed` bytes: those go.
    pub fn trim(&mut self, consumed: u64) {
        if consumed <= self.from {
            return;
        }
        let n = usize::try_from(consumed - self.from)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        self.bytes.drain(..n);
        self.from = consumed;
        self.overflowed = false;
    }

    /// The bytes from `consumed` on, and how many before it are missing (dropped for the
    /// limit, or read before the history was kept).
    pub fn since(&self, consumed: u64) -> (Vec<u8>, u64) {
        if consumed < self.from {
            return (self.bytes.iter().copied().collect(), self.from - consumed);
        }
        let skip = usize::try_from(consumed - self.from).unwrap_or(usize::MAX);
        (self.bytes.iter().skip(skip).copied().collect(), 0)
    }
}

/// What this side received on a channel.
#[derive(Debug, Default, Clone)]
pub struct Incoming {
    /// Offset of the next byte to write out (bytes written, and bytes skipped over a gap).
    pub(super) delivered: u64,
    /// The end (`eof` or `close`) was acted on.
    pub(super) ended: bool,
}

/// A channel's sending direction, locked; its changes are recorded in the journal.
pub struct OutGuard<'a> {
    g: MutexGuard<'a, Outgoing>,
    c: &'a ChanLedger,
}

/// A channel's receiving direction, locked; its changes are recorded in the journal.
pub struct IncGuard<'a> {
    g: MutexGuard<'a, Incoming>,
    c: &'a ChanLedger,
}

impl Deref for OutGuard<'_> {
    type Target = Outgoing;
    fn deref(&self) -> &Outgoing {
        &self.g
    }
}

impl Deref for IncGuard<'_> {
    type Target = Incoming;
    fn deref(&self) -> &Incoming {
        &self.g
    }
}

impl Default for ChanLedger {
    /// A channel of no ledger (nothing recorded).
    fn default() -> Self {
        ChanLedger::new(0, None)
    }
}

impl ChanLedger {
    fn new(ch: u32, journal: Option<Arc<Journal>>) -> ChanLedger {
        ChanLedger {
            out: Mutex::default(),
            inc: Mutex::default(),
            ch,
            journal,
        }
    }

    fn note(&self, op: Op<'_>) {
        if let Some(j) = &self.journal {
            j.append(self.ch, op);
        }
    }
}

impl OutGuard<'_> {
    /// [`Outgoing::record`], recorded.
    pub fn record(&mut self, data: &[u8]) -> u64 {
        let at = self.g.record(data);
        self.c.note(Op::Record(data));
        at
    }

    /// [`Outgoing::hold`], recorded.
    pub fn hold(&mut self, data: &[u8]) {
        self.g.hold(data);
        self.c.note(Op::Hold(data));
    }

    /// [`Outgoing::end`], recorded.
    pub fn end(&mut self, close: bool) {
        self.g.end(close);
        self.c.note(Op::End(close));
    }

    /// [`Outgoing::ack`], recorded.
    pub fn ack(&mut self, n: u64) {
        self.g.ack(n);
        self.c.note(Op::Ack(n));
    }

    /// [`Outgoing::resend`], recorded.
    pub fn resend(&mut self, again: bool, chunk: usize) -> Resend {
        let r = self.g.resend(again, chunk);
        tracing::debug!(
            ch = self.c.ch,
            again,
            acked = self.g.acked,
            sent = self.g.sent,
            kept = r.kept,
            "relay ledger: a new stream sends the kept bytes first"
        );
        self.c.note(Op::Resend(again));
        r
    }
}

impl IncGuard<'_> {
    /// [`Incoming::put`], its new count recorded.
    pub fn put(
        &mut self,
        at: Option<u64>,
        data: &[u8],
        write: impl FnOnce(&[u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        let before = self.g.delivered;
        let r = self.g.put(at, data, write);
        if self.g.delivered != before {
            self.c.note(Op::Delivered(self.g.delivered));
        }
        r
    }

    /// [`Incoming::end`], recorded.
    pub fn end(&mut self) -> bool {
        let first = self.g.end();
        if first {
            self.c.note(Op::IncEnd);
        }
        first
    }
}

/// What a sender sends first on a new stream.
#[derive(Debug, Default)]
pub struct Resend {
    /// Kept bytes, by offset, in frames of at most `chunk` bytes.
    pub frames: Vec<(u64, Vec<u8>)>,
    /// The direction had ended: its end again (`Some(true)`: `close`).
    pub end: Option<bool>,
    /// Bytes kept (in flight again: the window's room is a window less these).
    pub kept: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ledger {
    /// A new session: nothing sent or received yet.
    pub fn new(session: u64) -> Arc<Ledger> {
        Arc::new(Ledger {
            session,
            peer_counts: AtomicBool::new(false),
            chans: Mutex::new(HashMap::new()),
            journal: None,
        })
    }

    /// The origin's ledger of a relay, recorded in the journal at `path`: the one a previous
    /// run of the agent left there (its session and counts go on), else a new session. In
    /// memory only when the journal cannot be written.
    pub fn persistent(path: &Path) -> Arc<Ledger> {
        let fresh = Ledger::fresh();
        let Some((journal, replica, loaded)) = Journal::open(path, fresh.session) else {
            return fresh;
        };
        let journal = Arc::new(journal);
        if loaded {
            tracing::info!(
                path = %path.display(),
                session = replica.session,
                channels = replica.chans.len(),
                "relay ledger taken back from the journal"
            );
        }
        let chans = replica
            .chans
            .into_iter()
            .map(|(ch, c)| {
                let l = ChanLedger::new(ch, Some(journal.clone()));
                *lock(&l.out) = c.out;
                *lock(&l.inc) = c.inc;
                (ch, Arc::new(l))
            })
            .collect();
        Arc::new(Ledger {
            session: replica.session,
            peer_counts: AtomicBool::new(replica.peer_counts),
            chans: Mutex::new(chans),
            journal: Some(journal),
        })
    }

    /// The relay ended for good: its journal goes.
    pub fn discard(&self) {
        if let Some(j) = &self.journal {
            j.remove();
        }
    }

    /// A new session numbered at random (the origin's, per agent run).
    pub fn fresh() -> Arc<Ledger> {
        let mut b = [0u8; 8];
        if getrandom(&mut b).is_err() {
            b = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                .to_le_bytes();
        }
        Ledger::new(u64::from_le_bytes(b).max(1))
    }

    /// A new session `session` that keeps, per channel, only the bytes that never went out
    /// (read while no stream was open): what went out before is not counted by the new
    /// session's peer, so it is not sent again (it may have arrived).
    pub fn renewed(&self, session: u64) -> Arc<Ledger> {
        let l = Ledger::new(session);
        for (ch, c) in lock(&self.chans).iter() {
            let o = lock(&c.out);
            let unsent = (o.sent - o.transmitted) as usize;
            if unsent == 0 && o.end.is_none() {
                continue;
            }
            let n = l.chan(*ch);
            let mut no = lock(&n.out);
            no.kept = o.kept.iter().skip(o.kept.len() - unsent).copied().collect();
            no.sent = unsent as u64;
            no.end = o.end;
        }
        l
    }

    /// The session number (sent in the hello frames).
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Whether the peer counts in this session (kept bytes go again on a new stream).
    pub fn peer_counts(&self) -> bool {
        self.peer_counts.load(Ordering::SeqCst)
    }

    /// The peer's hello named this session.
    pub fn set_peer_counts(&self) {
        if !self.peer_counts.swap(true, Ordering::SeqCst)
            && let Some(j) = &self.journal
        {
            j.append(0, Op::PeerCounts);
        }
    }

    /// Channel `ch` (made on first use).
    pub fn chan(&self, ch: u32) -> Arc<ChanLedger> {
        lock(&self.chans)
            .entry(ch)
            .or_insert_with(|| Arc::new(ChanLedger::new(ch, self.journal.clone())))
            .clone()
    }

    /// Channel `ch` anew (a connection accepted on a listener: nothing of an earlier channel
    /// of that number counts).
    pub fn fresh_chan(&self, ch: u32) -> Arc<ChanLedger> {
        let c = Arc::new(ChanLedger::new(ch, self.journal.clone()));
        lock(&self.chans).insert(ch, c.clone());
        c.note(Op::Fresh);
        c
    }

    /// The input read on channels `chs` from now on is kept for a replay (already kept: no
    /// change).
    pub fn keep_history(&self, chs: &[u32]) {
        for ch in chs {
            let c = self.chan(*ch);
            let mut o = lock(&c.out);
            if o.history.is_none() {
                let from = o.sent;
                o.history = Some(History {
                    from,
                    ..Default::default()
                });
            }
        }
    }

    /// A checkpoint's process had consumed `consumed` bytes of channel `ch`.
    pub fn trim_history(&self, ch: u32, consumed: u64) {
        if let Some(c) = lock(&self.chans).get(&ch)
            && let Some(h) = &mut lock(&c.out).history
        {
            h.trim(consumed);
        }
    }

    /// Per channel: (input kept since `consumed` of it, bytes missing before, its end), and
    /// the output received (bytes written out).
    pub fn replay_of(&self, ch: u32, consumed: u64) -> Option<(Vec<u8>, u64, Option<bool>)> {
        let c = lock(&self.chans).get(&ch)?.clone();
        let o = lock(&c.out);
        let h = o.history.as_ref()?;
        let (bytes, missing) = h.since(consumed);
        Some((bytes, missing, o.end))
    }

    /// Bytes of channel `ch` received and written out.
    pub fn delivered(&self, ch: u32) -> u64 {
        lock(&self.chans)
            .get(&ch)
            .map_or(0, |c| lock(&c.inc).delivered)
    }

    /// Bytes of channel `ch` sent (read here).
    pub fn sent(&self, ch: u32) -> u64 {
        lock(&self.chans).get(&ch).map_or(0, |c| lock(&c.out).sent)
    }

    /// Channel `ch`'s received count, under its lock, with `f` (which sees how many bytes were
    /// written out).
    pub fn with_delivered<T>(&self, ch: u32, f: impl FnOnce(u64) -> T) -> T {
        let c = self.chan(ch);
        let g = lock(&c.inc);
        f(g.delivered)
    }

    /// Forgets channel `ch` (a connection that ended both ways) if nothing it sent waits for
    /// an acknowledgement (true); a channel whose last bytes are still unacknowledged stays,
    /// to be sent again on a new stream.
    pub fn forget_if_acked(&self, ch: u32) -> bool {
        let mut chans = lock(&self.chans);
        let acked = chans.get(&ch).is_none_or(|c| lock(&c.out).kept.is_empty());
        if acked && let Some(c) = chans.remove(&ch) {
            c.note(Op::Forget);
        }
        acked
    }
}

impl ChanLedger {
    /// The sending direction.
    pub fn out(&self) -> OutGuard<'_> {
        OutGuard {
            g: lock(&self.out),
            c: self,
        }
    }

    /// The receiving direction.
    pub fn inc(&self) -> IncGuard<'_> {
        IncGuard {
            g: lock(&self.inc),
            c: self,
        }
    }
}

impl Outgoing {
    /// `data` was read and goes out now: its offset.
    pub fn record(&mut self, data: &[u8]) -> u64 {
        let at = self.sent;
        self.kept.extend(data);
        self.sent += data.len() as u64;
        self.transmitted = self.sent;
        if let Some(h) = &mut self.history {
            h.push(data);
        }
        at
    }

    /// What [`Outgoing::resend`] changes (a journal's replay of it).
    pub(super) fn replay_resend(&mut self, again: bool) {
        if !again {
            let gone = (self.transmitted - self.acked) as usize;
            self.kept.drain(..gone.min(self.kept.len()));
            self.acked = self.transmitted;
        }
        self.transmitted = self.sent;
    }

    /// `data` was read while no stream was open: it goes out first on the next one.
    pub fn hold(&mut self, data: &[u8]) {
        self.kept.extend(data);
        self.sent += data.len() as u64;
        if let Some(h) = &mut self.history {
            h.push(data);
        }
    }

    /// The direction ended (`close`: with a reset).
    pub fn end(&mut self, close: bool) {
        self.end = Some(close);
    }

    /// The receiver credited `n` more bytes: they are not kept any more.
    pub fn ack(&mut self, n: u64) {
        let n = n.min(self.kept.len() as u64);
        self.kept.drain(..n as usize);
        self.acked += n;
    }

    /// What a new stream sends first, in frames of at most `chunk` bytes. `again`: the peer
    /// counts in this session, so what went out unacknowledged goes again; otherwise that is
    /// dropped (the peer might repeat it) and only bytes that never went out are sent.
    pub fn resend(&mut self, again: bool, chunk: usize) -> Resend {
        self.replay_resend(again);
        let mut frames = Vec::new();
        let mut at = self.acked;
        let (a, b) = self.kept.as_slices();
        let mut buf = Vec::new();
        for part in [a, b] {
            for piece in part.chunks(chunk) {
                buf.extend_from_slice(piece);
                if buf.len() >= chunk {
                    let n = buf.len() as u64;
                    frames.push((at, std::mem::take(&mut buf)));
                    at += n;
                }
            }
        }
        if !buf.is_empty() {
            frames.push((at, buf));
        }
        Resend {
            frames,
            end: self.end,
            kept: self.kept.len(),
        }
    }
}

impl Incoming {
    /// Writes the bytes `data` that start at offset `at` (`None`: the peer sends no offsets,
    /// they follow what came before) with one call of `write`, skipping what was written
    /// already. Gives how many bytes of `data` are done (skipped or written).
    pub fn put(
        &mut self,
        at: Option<u64>,
        data: &[u8],
        write: impl FnOnce(&[u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        let skip = match at {
            Some(at) if at > self.delivered => {
                // Bytes the sender did not keep (it restarted in the same session: not
                // expected): counted as skipped so that offsets stay aligned.
                tracing::warn!(
                    from = self.delivered,
                    to = at,
                    "relay: bytes missing in a channel's stream"
                );
                self.delivered = at;
                0
            }
            Some(at) => usize::try_from(self.delivered - at)
                .unwrap_or(usize::MAX)
                .min(data.len()),
            None => 0,
        };
        if skip == data.len() {
            return Ok(skip);
        }
        let n = write(&data[skip..])?;
        self.delivered += n as u64;
        Ok(skip + n)
    }

    /// The end is to be acted on: true the first time.
    pub fn end(&mut self) -> bool {
        !std::mem::replace(&mut self.ended, true)
    }
}

fn getrandom(b: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(inc: &mut Incoming, at: Option<u64>, data: &[u8], sink: &mut Vec<u8>) -> usize {
        inc.put(at, data, |d| {
            sink.extend_from_slice(d);
            Ok(d.len())
        })
        .unwrap()
    }

    #[test]
    fn a_resent_stream_is_received_once() {
        let mut out = Outgoing::default();
        let mut inc = Incoming::default();
        let mut sink = Vec::new();
        let a = out.record(b"hello ");
        let b = out.record(b"world");
        // Only the first frame arrived and was credited; the second was lost with the stream.
        assert_eq!(written(&mut inc, Some(a), b"hello ", &mut sink), 6);
        out.ack(6);
        let r = out.resend(true, 4);
        assert_eq!(r.kept, 5);
        assert_eq!(r.frames, vec![(6, b"worl".to_vec()), (10, b"d".to_vec())]);
        let _ = b;
        for (at, d) in &r.frames {
            assert_eq!(written(&mut inc, Some(*at), d, &mut sink), d.len());
        }
        assert_eq!(sink, b"hello world");
    }

    #[test]
    fn bytes_written_but_not_credited_are_dropped_on_resend() {
        let mut out = Outgoing::default();
        let mut inc = Incoming::default();
        let mut sink = Vec::new();
        let a = out.record(b"abcdef");
        written(&mut inc, Some(a), b"abcdef", &mut sink);
        // The credit was lost: the whole frame goes again, and is skipped, credited whole.
        let r = out.resend(true, 64);
        assert_eq!(r.frames, vec![(0, b"abcdef".to_vec())]);
        assert_eq!(written(&mut inc, Some(0), b"abcdef", &mut sink), 6);
        out.ack(6);
        let c = out.record(b"gh");
        assert_eq!(c, 6);
        written(&mut inc, Some(c), b"gh", &mut sink);
        assert_eq!(sink, b"abcdefgh");
        assert!(out.kept.len() == 2);
    }

    #[test]
    fn a_peer_that_does_not_count_gets_only_what_never_went_out() {
        let mut out = Outgoing::default();
        out.record(b"in flight");
        out.hold(b"held");
        let r = out.resend(false, 64);
        assert_eq!(r.frames, vec![(9, b"held".to_vec())]);
        out.end(false);
        assert_eq!(out.resend(true, 64).end, Some(false));
    }

    #[test]
    fn a_renewed_session_keeps_only_unsent_bytes() {
        let l = Ledger::new(1);
        l.chan(3).out().record(b"sent");
        l.chan(3).out().hold(b"unsent");
        l.chan(4).out().record(b"x");
        let n = l.renewed(2);
        assert_eq!(n.session(), 2);
        let r = n.chan(3).out().resend(true, 64);
        assert_eq!(r.frames, vec![(0, b"unsent".to_vec())]);
        assert!(n.chan(4).out().resend(true, 64).frames.is_empty());
    }

    #[test]
    fn a_channel_with_unacknowledged_bytes_is_not_forgotten() {
        let l = Ledger::new(7);
        l.chan(2).out().record(b"out 1\n");
        l.chan(2).out().end(false);
        assert!(
            !l.forget_if_acked(2),
            "its last bytes were not acknowledged"
        );
        let r = l.chan(2).out().resend(true, 64);
        assert_eq!(r.frames, vec![(0, b"out 1\n".to_vec())]);
        assert_eq!(r.end, Some(false));
        l.chan(2).out().ack(6);
        assert!(l.forget_if_acked(2));
        assert_eq!(l.sent(2), 0, "forgotten: a new channel");
    }

    #[test]
    fn an_end_is_acted_on_once() {
        let mut inc = Incoming::default();
        assert!(inc.end());
        assert!(!inc.end());
    }

    #[test]
    fn the_input_since_the_checkpoint_is_kept_for_a_replay() {
        let l = Ledger::new(7);
        let c = l.chan(0);
        c.out().record(b"ab");
        // Kept from the moment it is asked for: what was read before is missing.
        l.keep_history(&[0]);
        c.out().record(b"cdef");
        c.out().hold(b"gh");
        c.out().ack(8);
        assert_eq!(l.replay_of(0, 2), Some((b"cdefgh".to_vec(), 0, None)));
        assert_eq!(l.replay_of(0, 0), Some((b"cdefgh".to_vec(), 2, None)));
        // A checkpoint consumed up to 5: the bytes before go.
        l.trim_history(0, 5);
        assert_eq!(l.replay_of(0, 5), Some((b"fgh".to_vec(), 0, None)));
        assert_eq!(l.replay_of(0, 6), Some((b"gh".to_vec(), 0, None)));
        c.out().end(false);
        assert_eq!(l.replay_of(0, 8), Some((Vec::new(), 0, Some(false))));
        assert_eq!(l.replay_of(1, 0), None, "no history for a channel not kept");
    }

    #[test]
    fn the_replay_buffer_is_bounded() {
        let mut h = History::default();
        h.push(&vec![1u8; REPLAY_LIMIT]);
        h.push(b"xy");
        assert_eq!(h.bytes.len(), REPLAY_LIMIT);
        assert_eq!(h.from, 2);
        assert!(h.overflowed);
        let (bytes, missing) = h.since(0);
        assert_eq!((bytes.len(), missing), (REPLAY_LIMIT, 2));
        h.trim(REPLAY_LIMIT as u64);
        assert_eq!(h.since(REPLAY_LIMIT as u64), (b"xy".to_vec(), 0));
        assert!(!h.overflowed);
    }
}
