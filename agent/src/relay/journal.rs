//! The origin's relay ledger kept on disk, so that an origin agent that restarts (killed, or
//! crashed) resumes its relay in the same session and nothing in flight is lost or repeated
//! (docs/relay.md "What survives which failure").
//!
//! One file per relay, `$FERRY_STATE_DIR/ledgers/ID`: a header (`FLJ1`, the session number),
//! then records, each appended with one `write` as the ledger changes, under the channel's
//! lock (so a channel's records are in the order of its changes): what a reader read and
//! sent, an acknowledgement, an end, a new stream's resend, the count of bytes written out,
//! a channel made anew or forgotten, the peer counting in the session. Each record is
//! `len: u32` then `tag: u8`, `channel: u32` and its payload (little endian). Replaying the
//! records through the ledger's own code ([`Outgoing`], [`Incoming`]) gives its state back.
//!
//! The file is not synced: it must outlive ferryd, not the machine (a machine that stops
//! takes the stub with it). A record cut short by the kill is ignored. The journal keeps a
//! replica of the ledger, applied with each record; when the file exceeds [`COMPACT_AT`] it
//! is rewritten from the replica (one state record per channel) and renamed over.
//!
//! What it cannot keep: bytes a reader took out of a descriptor in the instant before their
//! record was written, and bytes written out in the instant before the count's record was
//! (repeated after a restart) — a kill must land between two system calls of a pump thread.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::ledger::{Incoming, Outgoing};

/// Size of the file after which it is rewritten from the replica.
const COMPACT_AT: u64 = 8 << 20;

const MAGIC: &[u8; 4] = b"FLJ1";

/// One change of a ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op<'a> {
    /// A reader read `data` and sent it.
    Record(&'a [u8]),
    /// `data` was read while no stream was open.
    Hold(&'a [u8]),
    /// The receiver credited bytes.
    Ack(u64),
    /// The direction ended (`true`: close).
    End(bool),
    /// A new stream's resend (`true`: the peer counts in the session).
    Resend(bool),
    /// The receiving side's count of bytes written out (or skipped).
    Delivered(u64),
    /// The receiving side acted on the end.
    IncEnd,
    /// The channel was made anew.
    Fresh,
    /// The channel was forgotten.
    Forget,
    /// The peer counts in the session.
    PeerCounts,
}

impl Op<'_> {
    fn tag(&self) -> u8 {
        match self {
            Op::Record(_) => 1,
            Op::Hold(_) => 2,
            Op::Ack(_) => 3,
            Op::End(_) => 4,
            Op::Resend(_) => 5,
            Op::Delivered(_) => 6,
            Op::IncEnd => 7,
            Op::Fresh => 8,
            Op::Forget => 9,
            Op::PeerCounts => 10,
        }
    }
}

/// A channel's state, both directions.
#[derive(Debug, Default)]
pub(super) struct ChanState {
    pub out: Outgoing,
    pub inc: Incoming,
}

/// What a journal holds: the session and each channel's state.
#[derive(Debug, Default)]
pub(super) struct Replica {
    pub session: u64,
    pub peer_counts: bool,
    pub chans: BTreeMap<u32, ChanState>,
}

impl Replica {
    fn apply(&mut self, ch: u32, op: &Op<'_>) {
        match op {
            Op::Fresh => {
                self.chans.insert(ch, ChanState::default());
                return;
            }
            Op::Forget => {
                self.chans.remove(&ch);
                return;
            }
            Op::PeerCounts => {
                self.peer_counts = true;
                return;
            }
            _ => {}
        }
        let c = self.chans.entry(ch).or_default();
        match *op {
            Op::Record(d) => {
                c.out.record(d);
            }
            Op::Hold(d) => c.out.hold(d),
            Op::Ack(n) => c.out.ack(n),
            Op::End(close) => c.out.end(close),
            Op::Resend(again) => c.out.replay_resend(again),
            Op::Delivered(n) => c.inc.delivered = n,
            Op::IncEnd => {
                c.inc.end();
            }
            Op::Fresh | Op::Forget | Op::PeerCounts => {}
        }
    }
}

/// The journal of one relay's ledger.
#[derive(Debug)]
pub(super) struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None` once writing failed (the file was removed: a restart starts a new session).
    file: Option<File>,
    len: u64,
    replica: Replica,
}

fn encode(ch: u32, op: &Op<'_>, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.push(op.tag());
    buf.extend_from_slice(&ch.to_le_bytes());
    match *op {
        Op::Record(d) | Op::Hold(d) => buf.extend_from_slice(d),
        Op::Ack(n) | Op::Delivered(n) => buf.extend_from_slice(&n.to_le_bytes()),
        Op::End(b) | Op::Resend(b) => buf.push(u8::from(b)),
        Op::IncEnd | Op::Fresh | Op::Forget | Op::PeerCounts => {}
    }
    let len = (buf.len() - start - 4) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// A state record (tag 11): the channel's whole state, for a rewritten file.
fn encode_state(ch: u32, c: &ChanState, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.push(11);
    buf.extend_from_slice(&ch.to_le_bytes());
    let o = &c.out;
    for v in [o.sent, o.acked, o.transmitted, c.inc.delivered] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.push(match o.end {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    });
    buf.push(u8::from(c.inc.ended));
    let (a, b) = o.kept.as_slices();
    buf.extend_from_slice(a);
    buf.extend_from_slice(b);
    let len = (buf.len() - start - 4) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Replays a journal's bytes; `None` when it is not one.
fn replay(bytes: &[u8]) -> Option<Replica> {
    if bytes.len() < 12 || &bytes[..4] != MAGIC {
        return None;
    }
    let mut r = Replica {
        session: u64::from_le_bytes(bytes[4..12].try_into().ok()?),
        ..Replica::default()
    };
    let mut at = 12;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().ok()?) as usize;
        let Some(body) = bytes.get(at + 4..at + 4 + len) else {
            // Cut short by the kill: what it recorded never happened for the peer.
            break;
        };
        at += 4 + len;
        if body.len() < 5 {
            return None;
        }
        let (tag, ch) = (body[0], u32::from_le_bytes(body[1..5].try_into().ok()?));
        let p = &body[5..];
        let u64_at = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(p.get(i..i + 8)?.try_into().ok()?))
        };
        let flag = || p.first().map(|b| *b != 0);
        let op = match tag {
            1 => Op::Record(p),
            2 => Op::Hold(p),
            3 => Op::Ack(u64_at(0)?),
            4 => Op::End(flag()?),
            5 => Op::Resend(flag()?),
            6 => Op::Delivered(u64_at(0)?),
            7 => Op::IncEnd,
            8 => Op::Fresh,
            9 => Op::Forget,
            10 => Op::PeerCounts,
            11 => {
                let mut c = ChanState::default();
                c.out.sent = u64_at(0)?;
                c.out.acked = u64_at(8)?;
                c.out.transmitted = u64_at(16)?;
                c.inc.delivered = u64_at(24)?;
                c.out.end = match p.get(32)? {
                    0 => None,
                    1 => Some(false),
                    _ => Some(true),
                };
                c.inc.ended = *p.get(33)? != 0;
                c.out.kept = p.get(34..)?.iter().copied().collect();
                r.chans.insert(ch, c);
                continue;
            }
            _ => return None,
        };
        r.apply(ch, &op);
    }
    Some(r)
}

impl Journal {
    /// The journal at `path`: the one there (its replica, to rebuild the ledger from, and
    /// `true`), or a new one of `session` (`false`). `None` when no file can be written (the
    /// ledger is then kept in memory only).
    pub(super) fn open(path: &Path, session: u64) -> Option<(Journal, Replica, bool)> {
        let found = std::fs::read(path).ok().and_then(|b| replay(&b));
        let (replica, loaded) = match found {
            Some(r) => (r, true),
            None => (
                Replica {
                    session,
                    ..Replica::default()
                },
                false,
            ),
        };
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), %e, "relay ledger kept in memory only");
            return None;
        }
        let j = Journal {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file: None,
                len: 0,
                replica: Replica::default(),
            }),
        };
        // Written anew from the replica (a record cut short goes).
        let mut inner = j.lock();
        inner.replica = replica;
        if let Err(e) = j.rewrite(&mut inner) {
            tracing::warn!(path = %path.display(), %e, "relay ledger kept in memory only");
            return None;
        }
        let copy = Replica {
            session: inner.replica.session,
            peer_counts: inner.replica.peer_counts,
            chans: inner
                .replica
                .chans
                .iter()
                .map(|(ch, c)| {
                    (
                        *ch,
                        ChanState {
                            out: c.out.clone(),
                            inc: c.inc.clone(),
                        },
                    )
                })
                .collect(),
        };
        drop(inner);
        Some((j, copy, loaded))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the file from the replica (a temporary file renamed over it).
    fn rewrite(&self, inner: &mut Inner) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(64 << 10);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&inner.replica.session.to_le_bytes());
        if inner.replica.peer_counts {
            encode(0, &Op::PeerCounts, &mut buf);
        }
        for (ch, c) in &inner.replica.chans {
            encode_state(*ch, c, &mut buf);
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        std::fs::rename(&tmp, &self.path)?;
        inner.file = Some(OpenOptions::new().append(true).open(&self.path)?);
        inner.len = buf.len() as u64;
        Ok(())
    }

    /// Records `op` on channel `ch`.
    pub(super) fn append(&self, ch: u32, op: Op<'_>) {
        let mut inner = self.lock();
        if inner.file.is_none() {
            return;
        }
        inner.replica.apply(ch, &op);
        let mut buf = Vec::new();
        encode(ch, &op, &mut buf);
        let r = match inner.file.as_mut() {
            Some(f) => f.write_all(&buf),
            None => Ok(()),
        };
        inner.len += buf.len() as u64;
        let r = r.and_then(|()| {
            if inner.len > COMPACT_AT {
                self.rewrite(&mut inner)
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            tracing::warn!(path = %self.path.display(), %e, "relay ledger: cannot write its journal; an agent restart will lose what is in flight");
            inner.file = None;
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// The relay ended for good: the file goes.
    pub(super) fn remove(&self) {
        let mut inner = self.lock();
        inner.file = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The journal of relay `id` in `dir` (the id's characters other than letters, digits, `-`,
/// `_` and `.` as `_`).
pub(super) fn path(dir: &Path, id: &str) -> PathBuf {
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_journal_gives_the_state_back_and_ignores_a_cut_record() {
        let mut buf = Vec::new();
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&7u64.to_le_bytes());
        encode(3, &Op::Record(b"hello "), &mut buf);
        encode(3, &Op::Record(b"world"), &mut buf);
        encode(3, &Op::Ack(6), &mut buf);
        encode(3, &Op::Delivered(42), &mut buf);
        encode(0, &Op::PeerCounts, &mut buf);
        let whole = buf.len();
        encode(3, &Op::Record(b"lost"), &mut buf);
        buf.truncate(whole + 6);
        let r = replay(&buf).expect("a journal");
        assert_eq!(r.session, 7);
        assert!(r.peer_counts);
        let c = &r.chans[&3];
        assert_eq!(c.out.sent, 11);
        assert_eq!(c.out.acked, 6);
        assert_eq!(c.out.kept.iter().copied().collect::<Vec<_>>(), b"world");
        assert_eq!(c.inc.delivered, 42);
        // A rewritten state record says the same.
        let mut again = Vec::new();
        again.extend_from_slice(MAGIC);
        again.extend_from_slice(&7u64.to_le_bytes());
        encode_state(3, c, &mut again);
        let r2 = replay(&again).expect("a journal");
        let c2 = &r2.chans[&3];
        assert_eq!((c2.out.sent, c2.out.acked, c2.inc.delivered), (11, 6, 42));
        assert_eq!(c2.out.kept, c.out.kept);
        assert!(replay(b"not a journal").is_none());
    }
}
