//! The origin's side of a failover of an offloaded job (docs/cluster.md "Failover"): the
//! destination tells the origin each checkpoint's relay positions (a `checkpoint` frame), so
//! the origin keeps only the input read since the newest checkpoint's consumed position;
//! when a member restores the job after its host died (`Peer.RelayMoved`), the origin's relay
//! goes on with that member in a new relay session whose first bytes are that kept input.

use ferry_proto::v1::RelayCheckpoint;

use super::journal;
use super::ledger::Ledger;

/// Where the copy of a relay runs after a failover.
#[derive(Debug, Clone)]
pub struct Relocation {
    /// The member that restored it.
    pub host: String,
    /// Its PID there.
    pub pid: i32,
    /// The take-over's epoch.
    pub epoch: u64,
    /// The checkpoint it was restored from.
    pub checkpoint: RelayCheckpoint,
}

impl super::Registry {
    /// Origin: the input read on channels `chs` of relay `id` is kept from now on for a
    /// replay (a checkpointed job; at most [`super::ledger::REPLAY_LIMIT`] bytes per channel
    /// since the newest checkpoint).
    pub fn keep_replay(&self, id: &str, chs: &[u32]) {
        self.origin_ledger(id).keep_history(chs);
    }

    /// Origin: the destination of relay `id` (counting in `ledger`'s session or not) kept a
    /// checkpoint with positions `c`: the input before them goes.
    pub(super) fn origin_checkpointed(&self, id: &str, ledger: &Ledger, c: RelayCheckpoint) {
        if c.session == ledger.session() {
            for p in &c.positions {
                ledger.trim_history(p.channel, p.consumed);
            }
        }
        tracing::debug!(migration = %id, seq = c.seq, epoch = c.epoch, "checkpoint of the relayed copy");
        self.lock().checkpoints.insert(id.to_string(), c);
    }

    /// Origin: the newest checkpoint notice of relay `id`.
    pub fn last_checkpoint(&self, id: &str) -> Option<RelayCheckpoint> {
        self.lock().checkpoints.get(id).cloned()
    }

    /// Origin: the copy of relay `id` runs on `r.host` now; its next stream goes there.
    pub fn relocate(&self, id: &str, r: Relocation) {
        self.lock().relocations.insert(id.to_string(), r);
        self.moved.notify_waiters();
    }

    /// Origin: whether relay `id` has a relocation waiting.
    pub fn relocation_pending(&self, id: &str) -> bool {
        self.lock().relocations.contains_key(id)
    }

    /// Origin: waits until some relay is relocated (check [`Self::relocation_pending`]).
    pub fn moved(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.moved.clone()
    }

    /// Origin: takes the relocation of relay `id` (its last stream ended) and makes the
    /// ledger of its next stream: a new session in which the input kept since the
    /// checkpoint's consumed position goes first (and the end of that input, if it ended).
    /// Returns it with what the failover costs the client, in words.
    pub fn take_relocation(&self, id: &str) -> Option<(Relocation, String)> {
        let r = self.lock().relocations.remove(id)?;
        let old = self.origin_ledger(id);
        let same = r.checkpoint.session == old.session();
        let new = {
            let mut inner = self.lock();
            old.discard();
            let l = match &inner.journals {
                Some(d) => Ledger::persistent(&journal::path(d, id)),
                None => Ledger::fresh(),
            };
            inner.ledgers.insert(id.to_string(), l.clone());
            l
        };
        let mut notes = Vec::new();
        for p in &r.checkpoint.positions {
            let ch = p.channel;
            match old.replay_of(ch, p.consumed) {
                Some((bytes, missing, end)) => {
                    new.keep_history(&[ch]);
                    if !same {
                        notes.push(format!(
                            "channel {ch}: the input since the checkpoint cannot be replayed (the relay session changed since)"
                        ));
                        continue;
                    }
                    let c = new.chan(ch);
                    let mut o = c.out();
                    o.hold(&bytes);
                    if let Some(close) = end {
                        o.end(close);
                    }
                    notes.push(format!("{} bytes of input replayed", bytes.len()));
                    if missing > 0 {
                        tracing::error!(migration = %id, channel = ch, missing, "input read before the checkpoint's position was not kept: lost in the failover");
                        notes.push(format!("{missing} bytes of input lost (not kept)"));
                    }
                }
                None if p.produced > 0 || old.delivered(ch) > 0 => {
                    let got = old.delivered(ch);
                    if !same {
                        notes.push(format!(
                            "channel {ch}: output since the checkpoint may be seen again"
                        ));
                    } else if got > p.produced {
                        notes.push(format!(
                            "{} bytes of output produced again",
                            got - p.produced
                        ));
                    } else if got < p.produced {
                        tracing::error!(migration = %id, channel = ch, lost = p.produced - got, "output written before the checkpoint never reached the client: lost with its host");
                        notes.push(format!(
                            "{} bytes of output lost with the host",
                            p.produced - got
                        ));
                    }
                }
                None => {}
            }
        }
        Some((r, notes.join(", ")))
    }
}
