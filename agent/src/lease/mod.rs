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
//! its grant expired only `duration · (1 + max_drift)` after it gave it. A take-over at epoch
//! `e + 1` needs grants at `e + 1` from a majority ([`may_take_over`]); a grantor gives one only
//! once its lease at `e` expired as it sees it, and from then on refuses `e`. Any two
//! majorities of a group share a member, so while the old holder may still run, that member's
//! grant to it is unexpired on the member's clock and the member refuses the take-over.
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
    /// The member knows a higher epoch (or the same epoch held by another): the asker's copy
    /// is stale and must be discarded before it runs.
    #[error("{id}: epoch {asked} is stale: {holder} holds epoch {epoch}")]
    Stale {
        /// The process.
        id: String,
        /// The epoch asked for.
        asked: u64,
        /// The epoch the member knows.
        epoch: u64,
        /// Its holder.
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
    /// The higher epoch the refusal reveals, if any.
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

/// One member's side: the leases it gives.
#[derive(Debug, Clone)]
pub struct Grantor {
    cfg: LeaseConfig,
    me: String,
    started_ms: u64,
    given: BTreeMap<String, Given>,
}

impl Grantor {
    /// The grantor of member `me`, started at `now_ms`. For a grantor's span after that it
    /// grants nothing (a restarted member does not remember what it granted before).
    pub fn new(cfg: LeaseConfig, me: &str, now_ms: u64) -> Self {
        Grantor {
            cfg,
            me: me.to_string(),
            started_ms: now_ms,
            given: BTreeMap::new(),
        }
    }

    /// The lease given last for `id`, if any.
    pub fn given(&self, id: &str) -> Option<&Given> {
        self.given.get(id)
    }

    /// The highest epoch this member knows for `id` (0 when it knows none).
    pub fn epoch(&self, id: &str) -> u64 {
        self.given.get(id).map_or(0, |g| g.epoch)
    }

    /// Grants (or renews) `holder`'s lease on `id` at `epoch`:
    /// - a lower epoch than the one known, or the same epoch for another holder: [`Refused::Stale`];
    /// - the same holder and epoch: renewed;
    /// - a higher epoch: only once the lease known has expired on this clock (or it is the same
    ///   holder's), else [`Refused::Held`]; from then on the lower epoch is refused.
    pub fn grant(
        &mut self,
        id: &str,
        holder: &str,
        epoch: u64,
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
        if let Some(g) = self.given.get(id) {
            if epoch < g.epoch || (epoch == g.epoch && holder != g.holder) {
                return Err(Refused::Stale {
                    id: id.to_string(),
                    asked: epoch,
                    epoch: g.epoch,
                    holder: g.holder.clone(),
                });
            }
            if epoch > g.epoch && holder != g.holder && !self.expired(id, now_ms) {
                return Err(Refused::Held {
                    id: id.to_string(),
                    holder: g.holder.clone(),
                    epoch: g.epoch,
                    remaining_ms: (g.at_ms + self.cfg.grantor_span()).saturating_sub(now_ms),
                });
            }
        }
        self.given.insert(
            id.to_string(),
            Given {
                holder: holder.to_string(),
                epoch,
                at_ms: now_ms,
            },
        );
        Ok(Grant {
            id: id.to_string(),
            holder: holder.to_string(),
            epoch,
            member: self.me.clone(),
        })
    }

    /// Whether the lease this member gave on `id` has expired on its clock (also when it gave
    /// none, once its starting quiet time is over).
    pub fn expired(&self, id: &str, now_ms: u64) -> bool {
        match self.given.get(id) {
            Some(g) => now_ms >= g.at_ms + self.cfg.grantor_span(),
            None => now_ms >= self.started_ms + self.cfg.grantor_span(),
        }
    }

    /// Notes that `id` is known at `epoch` held by `holder` (learned from a peer), without
    /// granting anything: lower epochs are refused from now on. A lower or equal epoch than
    /// the one known changes nothing.
    pub fn learn(&mut self, id: &str, holder: &str, epoch: u64) {
        let known = self.given.get(id).map(|g| g.epoch);
        if known.is_none_or(|k| epoch > k) {
            self.given.insert(
                id.to_string(),
                Given {
                    holder: holder.to_string(),
                    epoch,
                    // Counts as given at time 0: expired, so it keeps no one out.
                    at_ms: 0,
                },
            );
        }
    }

    /// Forgets `id` (the process ended).
    pub fn forget(&mut self, id: &str) {
        self.given.remove(id);
    }
}

/// The holder's side: the grants it has for the processes it runs.
#[derive(Debug, Clone)]
pub struct Holder {
    cfg: LeaseConfig,
    me: String,
    /// Per process: the epoch it runs at, and per member the end of its grant (local clock).
    held: BTreeMap<String, (u64, BTreeMap<String, u64>)>,
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
        let e = self
            .held
            .entry(id.to_string())
            .or_insert_with(|| (epoch, BTreeMap::new()));
        if e.0 != epoch {
            *e = (epoch, BTreeMap::new());
        }
    }

    /// The epoch this host runs `id` at.
    pub fn epoch(&self, id: &str) -> Option<u64> {
        self.held.get(id).map(|h| h.0)
    }

    /// Counts `grant` from `from_member`. `now_ms` must be the time (this clock) at which the
    /// request was **sent**, not when the answer came: the grant is counted until
    /// `now_ms + holder_span`. A grant for another holder or epoch is ignored.
    pub fn record(&mut self, from_member: &str, grant: &Grant, now_ms: u64) {
        if grant.holder != self.me || grant.member != from_member {
            return;
        }
        let Some((epoch, grants)) = self.held.get_mut(&grant.id) else {
            return;
        };
        if *epoch != grant.epoch {
            return;
        }
        let until = now_ms + self.cfg.holder_span();
        let e = grants.entry(from_member.to_string()).or_insert(0);
        *e = (*e).max(until);
    }

    /// Members whose grants on `id` are unexpired at `now_ms`.
    pub fn granted_by(&self, id: &str, now_ms: u64) -> usize {
        self.held.get(id).map_or(0, |(_, g)| {
            g.values().filter(|&&until| now_ms < until).count()
        })
    }

    /// Whether this host may run `id` at `now_ms`: unexpired grants from a majority of the
    /// group of `group_size` members.
    pub fn may_run(&self, id: &str, group_size: usize, now_ms: u64) -> bool {
        group_size > 0 && self.granted_by(id, now_ms) >= majority(group_size)
    }

    /// Until when (this clock) a majority's grants last: when the process must be frozen at
    /// the latest. `None` when it may not run now.
    pub fn runs_until(&self, id: &str, group_size: usize) -> Option<u64> {
        let (_, g) = self.held.get(id)?;
        let mut ends: Vec<u64> = g.values().copied().collect();
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
