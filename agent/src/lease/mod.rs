//! Quorum leases with bounded clock drift: who may run a replicated process (issue 13 item 3,
//! "never two copies"; docs/cluster.md "Leases and fencing").
//!
//! This module is pure: no clock, no I/O. Times are milliseconds on the caller's own clock
//! (any monotonic clock; only intervals on one clock are ever compared), passed in.
//!
//! A replicated process has a **group**: the host running it (the *holder*) and its replica
//! holders. Every member keeps a [`Grantor`]: it grants the holder a lease on the process for
//! [`LeaseConfig::duration_ms`] measured on its own clock, at an **epoch** that grows with
//! every take-over. The holder keeps a [`Holder`]: it may run the process only while grants
//! from a majority of the group are unexpired, each counted from the moment *it sent* the
//! request and shortened by the drift margin (`duration · (1 − max_drift)`). A grantor counts
//! its grant expired only `duration · (1 + max_drift)` after it gave it, and grants another
//! holder only once the grant it gave last expired on its clock. Any two majorities of a group
//! share a member, so while one holder may still run, that member's grant to it is unexpired
//! and the member grants no one else: **two copies never run**, whatever the epochs.
//!
//! Epochs decide which copy is **stale**. A take-over at epoch `e + 1` needs grants at `e + 1`
//! from a majority ([`may_take_over`]); those grants are **tentative** until the new holder,
//! having held the majority, renews with `committed` (its copy ran at `e + 1`). A member that
//! saw `e + 1` committed refuses `e` as [`Refused::Stale`]: that copy is discarded. A member
//! whose tentative grant expires uncommitted grants the old holder at `e` again (a failed
//! take-over leaves no one refused for good); a member refuses a take-over at an epoch it
//! already gave another candidate ([`Refused::Superseded`]), so one epoch has one holder.
//! A holder therefore discards its copy only when a copy at a higher epoch has run.
//!
//! The bound: every clock measures any interval within a factor `1 ± max_drift` of real time.
//! Then the holder stops (real time) at most `duration` after it sent its last successful
//! request, and the grantor expires the grant at least `duration` after it gave it, which is
//! after the request was sent.

pub mod run;
pub mod takeover;

use std::collections::BTreeMap;

/// How leases are timed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseConfig {
    /// How long a grant lasts, on the grantor's clock.
    pub duration_ms: u64,
    /// The bound on clock rate error: every clock measures an interval of real length `L`
    /// between `L · (1 − max_drift)` and `L · (1 + max_drift)`. 0 ≤ max_drift < 0.5.
    pub max_drift: f64,
    /// How often the holder renews (well under the duration, so a lost request or two does
    /// not fence).
    pub renew_every_ms: u64,
}

impl Default for LeaseConfig {
    /// 3 s leases, 5 % drift, renewed every 500 ms.
    fn default() -> Self {
        LeaseConfig {
            duration_ms: 3000,
            max_drift: 0.05,
            renew_every_ms: 500,
        }
    }
}

/// A [`LeaseConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease configuration: {0}")]
pub struct ConfigError(pub String);

impl LeaseConfig {
    /// Checks the values: a duration, a drift in [0, 0.5), renewals at least twice per
    /// holder-side lease.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.duration_ms < 10 {
            return Err(ConfigError(format!(
                "duration_ms {} is too short (at least 10)",
                self.duration_ms
            )));
        }
        if !(0.0..0.5).contains(&self.max_drift) {
            return Err(ConfigError(format!(
                "max_drift {} is not in [0, 0.5)",
                self.max_drift
            )));
        }
        if self.renew_every_ms == 0 || self.renew_every_ms * 2 > self.holder_span() {
            return Err(ConfigError(format!(
                "renew_every_ms {} must be > 0 and at most half of the holder's lease ({} ms)",
                self.renew_every_ms,
                self.holder_span()
            )));
        }
        Ok(())
    }

    /// How long the holder counts a grant, from the moment it sent the request:
    /// `duration · (1 − max_drift)`, rounded down, less 1 ms for the rounding of clocks.
    pub fn holder_span(&self) -> u64 {
        ((self.duration_ms as f64) * (1.0 - self.max_drift)).floor() as u64 - 1
    }

    /// How long a grantor counts its grant, from the moment it gave it:
    /// `duration · (1 + max_drift)`, rounded up, plus 1 ms.
    pub fn grantor_span(&self) -> u64 {
        ((self.duration_ms as f64) * (1.0 + self.max_drift)).ceil() as u64 + 1
    }
}

/// The smallest majority of a group of `group_size` members.
pub fn majority(group_size: usize) -> usize {
    group_size / 2 + 1
}

/// Whether a take-over may go ahead: `expired_votes` members of the group (the candidate
/// included) saw the old lease expired and granted the candidate the next epoch.
pub fn may_take_over(expired_votes: usize, group_size: usize) -> bool {
    group_size > 0 && expired_votes >= majority(group_size)
}

/// A member's grant of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The process.
    pub id: String,
    /// Who may run it.
    pub holder: String,
    /// At which epoch.
    pub epoch: u64,
    /// The member that granted it.
    pub member: String,
}

/// Why a member refused a grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The member has seen a higher epoch (or the same epoch held by another) **committed**:
    /// a copy at that epoch ran with a majority's grants. The asker's copy is stale and must
    /// be discarded before it runs.
    #[error("{id}: epoch {asked} is stale: {holder} holds epoch {epoch}")]
    Stale {
        /// The process.
        id: String,
        /// The epoch asked for.
        asked: u64,
        /// The committed epoch the member knows.
        epoch: u64,
        /// Its holder.
        holder: String,
    },
    /// A take-over asked for an epoch the member already gave (tentatively) to another
    /// candidate, or a lower one: the candidate must ask for a higher epoch. Nothing is
    /// discarded for it.
    #[error("{id}: epoch {asked} is superseded: {holder} asked for epoch {epoch}")]
    Superseded {
        /// The process.
        id: String,
        /// The epoch asked for.
        asked: u64,
        /// The highest epoch the member gave.
        epoch: u64,
        /// To whom.
        holder: String,
    },
    /// Another holder's lease has not expired on the member's clock.
    #[error("{id}: {holder} holds epoch {epoch} for {remaining_ms} ms more")]
    Held {
        /// The process.
        id: String,
        /// The holder.
        holder: String,
        /// Its epoch.
        epoch: u64,
        /// Time left, on the member's clock (grantor's span).
        remaining_ms: u64,
    },
    /// The member started less than a grantor's span ago: it may have granted leases it has
    /// forgotten, so it grants nothing yet.
    #[error("{id}: the member started {since_ms} ms ago and grants nothing before {span_ms} ms")]
    Starting {
        /// The process.
        id: String,
        /// Time since it started.
        since_ms: u64,
        /// The quiet time.
        span_ms: u64,
    },
}

impl Refused {
    /// The higher committed epoch the refusal reveals, if any: only then is the asker's copy
    /// stale.
    pub fn stale_epoch(&self) -> Option<u64> {
        match self {
            Refused::Stale { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }
}

/// The lease a grantor gave last for one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    /// Its holder.
    pub holder: String,
    /// Its epoch.
    pub epoch: u64,
    /// When it was given (the member's clock).
    pub at_ms: u64,
}

/// An epoch and the one holder it was given to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochOf {
    /// The epoch.
    pub epoch: u64,
    /// Its holder.
    pub holder: String,
}

/// What a grantor knows of one process.
#[derive(Debug, Clone, Default)]
struct Known {
    /// The grant given last (to whichever holder).
    cur: Option<Given>,
    /// The highest epoch given, tentatively or not (or learned), and to whom.
    top: Option<EpochOf>,
    /// The highest epoch seen committed: asked for by a holder that had held a majority's
    /// grants at it (or learned from a member that saw it so).
    committed: Option<EpochOf>,
}

/// The epoch a candidate `me` asks for, given the highest epoch `epoch` a member gave and its
/// `holder`: the same one when it is the candidate's own (a take-over asked again), else the
/// next.
pub fn next_epoch(epoch: u64, holder: &str, me: &str) -> u64 {
    if holder == me { epoch } else { epoch + 1 }
}

/// One member's side: the leases it gives.
#[derive(Debug, Clone)]
pub struct Grantor {
    cfg: LeaseConfig,
    me: String,
    started_ms: u64,
    known: BTreeMap<String, Known>,
}

impl Grantor {
    /// The grantor of member `me`, started at `now_ms`. For a grantor's span after that it
    /// grants nothing (a restarted member does not remember what it granted before).
    pub fn new(cfg: LeaseConfig, me: &str, now_ms: u64) -> Self {
        Grantor {
            cfg,
            me: me.to_string(),
            started_ms: now_ms,
            known: BTreeMap::new(),
        }
    }

    /// The lease given last for `id`, if any.
    pub fn given(&self, id: &str) -> Option<&Given> {
        self.known.get(id).and_then(|k| k.cur.as_ref())
    }

    /// The highest epoch this member gave or learned for `id` (0 when it knows none).
    pub fn epoch(&self, id: &str) -> u64 {
        self.top(id).map_or(0, |t| t.epoch)
    }

    /// The highest epoch this member gave or learned for `id`, with its holder.
    pub fn top(&self, id: &str) -> Option<&EpochOf> {
        self.known.get(id).and_then(|k| k.top.as_ref())
    }

    /// The highest epoch this member saw committed for `id`, with its holder.
    pub fn committed(&self, id: &str) -> Option<&EpochOf> {
        self.known.get(id).and_then(|k| k.committed.as_ref())
    }

    /// Grants (or renews) `holder`'s lease on `id` at `epoch`, for a holder that has not (yet)
    /// held a majority at that epoch: a take-over's request. See [`Grantor::grant_as`].
    pub fn grant(
        &mut self,
        id: &str,
        holder: &str,
        epoch: u64,
        now_ms: u64,
    ) -> Result<Grant, Refused> {
        self.grant_as(id, holder, epoch, false, now_ms)
    }

    /// Grants (or renews) `holder`'s lease on `id` at `epoch`. `committed`: the holder says it
    /// has held a majority's grants at `epoch` (its copy ran at it).
    /// - an epoch below the highest one seen committed, or that epoch for another holder:
    ///   [`Refused::Stale`] (the asker's copy is stale);
    /// - a request not committed, at an epoch below the highest one given, or at that epoch
    ///   for another holder: [`Refused::Superseded`] — except the committed holder at its
    ///   committed epoch, which gets its lease back once a take-over's tentative grant expired;
    /// - another holder than the one granted last while that grant is unexpired on this
    ///   clock: [`Refused::Held`] (whatever the epochs: a member never grants two holders at
    ///   once);
    /// - else granted; a committed request marks its epoch committed here, and from then on
    ///   lower epochs are stale.
    pub fn grant_as(
        &mut self,
        id: &str,
        holder: &str,
        epoch: u64,
        committed: bool,
        now_ms: u64,
    ) -> Result<Grant, Refused> {
        let since = now_ms.saturating_sub(self.started_ms);
        if since < self.cfg.grantor_span() {
            return Err(Refused::Starting {
                id: id.to_string(),
                since_ms: since,
                span_ms: self.cfg.grantor_span(),
            });
        }
        let span = self.cfg.grantor_span();
        let k = self.known.entry(id.to_string()).or_default();
        if let Some(c) = &k.committed
            && (epoch < c.epoch || (epoch == c.epoch && holder != c.holder))
        {
            return Err(Refused::Stale {
                id: id.to_string(),
                asked: epoch,
                epoch: c.epoch,
                holder: c.holder.clone(),
            });
        }
        let is_committed_holder = k
            .committed
            .as_ref()
            .is_some_and(|c| c.epoch == epoch && c.holder == holder);
        if !committed
            && !is_committed_holder
            && let Some(t) = &k.top
            && (epoch < t.epoch || (epoch == t.epoch && holder != t.holder))
        {
            return Err(Refused::Superseded {
                id: id.to_string(),
                asked: epoch,
                epoch: t.epoch,
                holder: t.holder.clone(),
            });
        }
        if let Some(g) = &k.cur
            && g.holder != holder
            && now_ms < g.at_ms + span
        {
            return Err(Refused::Held {
                id: id.to_string(),
                holder: g.holder.clone(),
                epoch: g.epoch,
                remaining_ms: (g.at_ms + span).saturating_sub(now_ms),
            });
        }
        k.cur = Some(Given {
            holder: holder.to_string(),
            epoch,
            at_ms: now_ms,
        });
        let this = EpochOf {
            epoch,
            holder: holder.to_string(),
        };
        if k.top.as_ref().is_none_or(|t| epoch >= t.epoch) {
            k.top = Some(this.clone());
        }
        if committed && k.committed.as_ref().is_none_or(|c| epoch > c.epoch) {
            k.committed = Some(this);
        }
        Ok(Grant {
            id: id.to_string(),
            holder: holder.to_string(),
            epoch,
            member: self.me.clone(),
        })
    }

    /// Whether the lease this member gave last on `id` has expired on its clock (also when it
    /// gave none, once its starting quiet time is over).
    pub fn expired(&self, id: &str, now_ms: u64) -> bool {
        match self.given(id) {
            Some(g) => now_ms >= g.at_ms + self.cfg.grantor_span(),
            None => now_ms >= self.started_ms + self.cfg.grantor_span(),
        }
    }

    /// Notes that `id` is known **committed** at `epoch` held by `holder` (learned from a
    /// member that saw it committed, or this member's own take-over), without granting
    /// anything: lower epochs are stale here from now on. A lower or equal epoch than the
    /// committed one known changes nothing.
    pub fn learn(&mut self, id: &str, holder: &str, epoch: u64) {
        let k = self.known.entry(id.to_string()).or_default();
        let this = EpochOf {
            epoch,
            holder: holder.to_string(),
        };
        if k.committed.as_ref().is_none_or(|c| epoch > c.epoch) {
            k.committed = Some(this.clone());
        }
        if k.top.as_ref().is_none_or(|t| epoch >= t.epoch) {
            k.top = Some(this);
        }
    }

    /// Forgets `id` (the process ended).
    pub fn forget(&mut self, id: &str) {
        self.known.remove(id);
    }
}

/// What a holder has for one process.
#[derive(Debug, Clone)]
struct Held {
    /// The epoch it runs at.
    epoch: u64,
    /// Per member, the end of its grant (local clock).
    grants: BTreeMap<String, u64>,
    /// Whether it has held a majority's grants at this epoch (its copy ran at it): its
    /// renewals say so, and members that hear it refuse lower epochs from then on.
    committed: bool,
}

/// The holder's side: the grants it has for the processes it runs.
#[derive(Debug, Clone)]
pub struct Holder {
    cfg: LeaseConfig,
    me: String,
    held: BTreeMap<String, Held>,
}

impl Holder {
    /// The holder side of member `me`.
    pub fn new(cfg: LeaseConfig, me: &str) -> Self {
        Holder {
            cfg,
            me: me.to_string(),
            held: BTreeMap::new(),
        }
    }

    /// This host runs `id` at `epoch`: grants of other epochs do not count. Changing the epoch
    /// drops the grants counted so far.
    pub fn set_epoch(&mut self, id: &str, epoch: u64) {
        let fresh = || Held {
            epoch,
            grants: BTreeMap::new(),
            committed: false,
        };
        let e = self.held.entry(id.to_string()).or_insert_with(fresh);
        if e.epoch != epoch {
            *e = fresh();
        }
    }

    /// The epoch this host runs `id` at.
    pub fn epoch(&self, id: &str) -> Option<u64> {
        self.held.get(id).map(|h| h.epoch)
    }

    /// Counts `grant` from `from_member`. `now_ms` must be the time (this clock) at which the
    /// request was **sent**, not when the answer came: the grant is counted until
    /// `now_ms + holder_span`. A grant for another holder or epoch is ignored.
    pub fn record(&mut self, from_member: &str, grant: &Grant, now_ms: u64) {
        if grant.holder != self.me || grant.member != from_member {
            return;
        }
        let Some(h) = self.held.get_mut(&grant.id) else {
            return;
        };
        if h.epoch != grant.epoch {
            return;
        }
        let until = now_ms + self.cfg.holder_span();
        let e = h.grants.entry(from_member.to_string()).or_insert(0);
        *e = (*e).max(until);
    }

    /// Members whose grants on `id` are unexpired at `now_ms`.
    pub fn granted_by(&self, id: &str, now_ms: u64) -> usize {
        self.held.get(id).map_or(0, |h| {
            h.grants.values().filter(|&&until| now_ms < until).count()
        })
    }

    /// Whether this host may run `id` at `now_ms`: unexpired grants from a majority of the
    /// group of `group_size` members.
    pub fn may_run(&self, id: &str, group_size: usize, now_ms: u64) -> bool {
        group_size > 0 && self.granted_by(id, now_ms) >= majority(group_size)
    }

    /// Whether this host has held a majority's grants on `id` at its epoch, now (`now_ms`) or
    /// before: what its renewals carry as `committed`. Remembered until the epoch changes.
    pub fn committed(&mut self, id: &str, group_size: usize, now_ms: u64) -> bool {
        let run = self.may_run(id, group_size, now_ms);
        match self.held.get_mut(id) {
            Some(h) => {
                h.committed |= run;
                h.committed
            }
            None => false,
        }
    }

    /// Until when (this clock) a majority's grants last: when the process must be frozen at
    /// the latest. `None` when it may not run now.
    pub fn runs_until(&self, id: &str, group_size: usize) -> Option<u64> {
        let h = self.held.get(id)?;
        let mut ends: Vec<u64> = h.grants.values().copied().collect();
        ends.sort_unstable_by(|a, b| b.cmp(a));
        ends.get(majority(group_size).checked_sub(1)?).copied()
    }

    /// Forgets `id` (ended, discarded or moved away).
    pub fn forget(&mut self, id: &str) {
        self.held.remove(id);
    }
}

#[cfg(test)]
mod tests;
