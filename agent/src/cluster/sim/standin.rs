//! Stand-ins for the policy (`crate::policy`) and the lease state machine (`crate::lease`),
//! with the names and shapes of the shared interface (issue 13), until their branches are
//! merged. Replaced by the real modules when they land.

#![allow(dead_code)]

/// A stand-in for `crate::policy`: one rule, "CPU above `cpu_high` for `sustain_ms`", a
/// cool-down per process, one move per decision, to the member with the most headroom.
pub mod policy {
    use std::collections::HashMap;

    use crate::cluster::State;

    /// A policy.
    #[derive(Debug, Clone)]
    pub struct Policy {
        /// Busy share above which a host is overloaded.
        pub cpu_high: f64,
        /// How long it must stay above.
        pub sustain_ms: u64,
        /// A process moved is not moved again for this long.
        pub cooldown_ms: u64,
        /// A destination must stay below `cpu_high - hysteresis` with the process.
        pub hysteresis: f64,
        /// Moves at once per host.
        pub max_moves: u32,
    }

    /// A policy that does not parse.
    #[derive(Debug, thiserror::Error)]
    #[error("policy: {0}")]
    pub struct PolicyError(String);

    impl Policy {
        /// The stand-in ignores the text (the real one parses TOML).
        pub fn parse(_text: &str) -> Result<Policy, PolicyError> {
            Ok(Policy {
                cpu_high: 0.85,
                sustain_ms: 30_000,
                cooldown_ms: 120_000,
                hysteresis: 0.10,
                max_moves: 1,
            })
        }
    }

    /// A member as the deciding host sees it.
    #[derive(Debug, Clone)]
    pub struct HostView {
        /// Name.
        pub name: String,
        /// State.
        pub state: State,
        /// CPUs.
        pub cpus: u32,
        /// Busy share 0..1.
        pub cpu_busy: f64,
        /// Bytes.
        pub mem_used: u64,
        /// Bytes.
        pub mem_total: u64,
        /// Managed processes.
        pub managed: u32,
    }

    /// A process of the deciding host.
    #[derive(Debug, Clone)]
    pub struct ProcView {
        /// Id.
        pub id: String,
        /// Pid.
        pub pid: i32,
        /// Owner.
        pub uid: u32,
        /// Labels.
        pub labels: Vec<String>,
        /// Share of one core.
        pub cpu: f64,
        /// Bytes.
        pub mem: u64,
        /// Never moved.
        pub pinned: bool,
        /// When it last moved.
        pub last_moved_ms: Option<u64>,
        /// Moving now.
        pub moving: bool,
    }

    /// A move.
    #[derive(Debug, Clone)]
    pub struct Decision {
        /// Process.
        pub id: String,
        /// Destination.
        pub to: String,
        /// Why.
        pub reason: String,
        /// Only said, not done.
        pub dry_run: bool,
    }

    /// State kept between calls: since when this host is over the threshold.
    #[derive(Debug, Default)]
    pub struct Memory {
        over_since: HashMap<String, u64>,
    }

    /// Decides the moves of `me`'s processes.
    pub fn decide(
        policy: &Policy,
        me: &str,
        hosts: &[HostView],
        procs: &[ProcView],
        memory: &mut Memory,
        now_ms: u64,
    ) -> Vec<Decision> {
        let Some(mine) = hosts.iter().find(|h| h.name == me) else {
            return Vec::new();
        };
        if mine.cpu_busy <= policy.cpu_high {
            memory.over_since.remove(me);
            return Vec::new();
        }
        let since = *memory.over_since.entry(me.to_owned()).or_insert(now_ms);
        if now_ms.saturating_sub(since) < policy.sustain_ms || procs.iter().any(|p| p.moving) {
            return Vec::new();
        }
        let mut movable: Vec<&ProcView> = procs
            .iter()
            .filter(|p| !p.pinned)
            .filter(|p| {
                p.last_moved_ms
                    .is_none_or(|t| now_ms.saturating_sub(t) >= policy.cooldown_ms)
            })
            .collect();
        movable.sort_by(|a, b| b.cpu.total_cmp(&a.cpu).then(a.id.cmp(&b.id)));
        let mut out = Vec::new();
        for p in movable.into_iter().take(policy.max_moves as usize) {
            let best = hosts
                .iter()
                .filter(|h| h.name != me && h.state == State::Alive)
                .filter(|h| {
                    h.cpu_busy + p.cpu / f64::from(h.cpus.max(1))
                        < policy.cpu_high - policy.hysteresis
                })
                .min_by(|a, b| a.cpu_busy.total_cmp(&b.cpu_busy).then(a.name.cmp(&b.name)));
            if let Some(h) = best {
                out.push(Decision {
                    id: p.id.clone(),
                    to: h.name.clone(),
                    reason: format!(
                        "policy cpu>{:.0}% {}s",
                        policy.cpu_high * 100.0,
                        policy.sustain_ms / 1000
                    ),
                    dry_run: false,
                });
            }
        }
        if !out.is_empty() {
            memory.over_since.remove(me);
        }
        out
    }
}

/// A stand-in for `crate::lease`: quorum leases with bounded clock drift.
pub mod lease {
    use std::collections::HashMap;

    /// Lease settings.
    #[derive(Debug, Clone, Copy)]
    pub struct LeaseConfig {
        /// Lease length on the grantor's clock.
        pub duration_ms: u64,
        /// Bound on the clock rate difference (0.01 = 1 %).
        pub max_drift: f64,
        /// How often the holder renews.
        pub renew_every_ms: u64,
    }

    /// A grant.
    #[derive(Debug, Clone)]
    pub struct Grant {
        /// Process.
        pub id: String,
        /// To whom.
        pub holder: String,
        /// For which epoch.
        pub epoch: u64,
        /// Length.
        pub duration_ms: u64,
    }

    /// A refusal.
    #[derive(Debug, Clone)]
    pub enum Refused {
        /// Another holder's lease is unexpired.
        Held {
            /// Its holder.
            holder: String,
            /// Its epoch.
            epoch: u64,
        },
        /// A higher epoch was granted: the asker's copy is stale.
        Stale {
            /// The highest epoch seen.
            epoch: u64,
        },
    }

    /// One member's grants.
    #[derive(Debug)]
    pub struct Grantor {
        cfg: LeaseConfig,
        leases: HashMap<String, (String, u64, u64)>,
    }

    impl Grantor {
        /// A grantor.
        pub fn new(cfg: LeaseConfig) -> Self {
            Grantor {
                cfg,
                leases: HashMap::new(),
            }
        }

        /// Grants `holder` the lease on `id` at `epoch`, or refuses.
        pub fn grant(
            &mut self,
            id: &str,
            holder: &str,
            epoch: u64,
            now_ms: u64,
        ) -> Result<Grant, Refused> {
            let margin = (self.cfg.max_drift * self.cfg.duration_ms as f64) as u64;
            if let Some((h, e, until)) = self.leases.get(id) {
                if *e > epoch {
                    return Err(Refused::Stale { epoch: *e });
                }
                if h != holder && now_ms < until + margin {
                    return Err(Refused::Held {
                        holder: h.clone(),
                        epoch: *e,
                    });
                }
            }
            self.leases.insert(
                id.to_owned(),
                (holder.to_owned(), epoch, now_ms + self.cfg.duration_ms),
            );
            Ok(Grant {
                id: id.to_owned(),
                holder: holder.to_owned(),
                epoch,
                duration_ms: self.cfg.duration_ms,
            })
        }

        /// Whether this member's grant on `id` has expired (counted later by the drift
        /// margin).
        pub fn expired(&self, id: &str, now_ms: u64) -> bool {
            let margin = (self.cfg.max_drift * self.cfg.duration_ms as f64) as u64;
            self.leases
                .get(id)
                .is_none_or(|(_, _, until)| now_ms >= until + margin)
        }
    }

    /// The grants a holder has.
    #[derive(Debug)]
    pub struct Holder {
        cfg: LeaseConfig,
        grants: HashMap<String, HashMap<String, (u64, u64)>>,
    }

    impl Holder {
        /// A holder.
        pub fn new(cfg: LeaseConfig) -> Self {
            Holder {
                cfg,
                grants: HashMap::new(),
            }
        }

        /// Notes `grant` from `from_member`, asked at `now_ms` on the holder's clock.
        pub fn record(&mut self, from_member: &str, grant: Grant, now_ms: u64) {
            let margin = (self.cfg.max_drift * grant.duration_ms as f64) as u64;
            let until = (now_ms + grant.duration_ms).saturating_sub(margin);
            let by = self.grants.entry(grant.id).or_default();
            let e = by
                .entry(from_member.to_owned())
                .or_insert((grant.epoch, until));
            if grant.epoch > e.0 || (grant.epoch == e.0 && until > e.1) {
                *e = (grant.epoch, until);
            }
        }

        /// Whether a majority of the group's grants for the newest epoch are unexpired.
        pub fn may_run(&self, id: &str, group_size: usize, now_ms: u64) -> bool {
            let Some(by) = self.grants.get(id) else {
                return false;
            };
            let top = by.values().map(|(e, _)| *e).max().unwrap_or(0);
            let live = by
                .values()
                .filter(|(e, until)| *e == top && now_ms < *until)
                .count();
            live * 2 > group_size
        }
    }

    /// Whether `expired_votes` of `group_size` are a majority.
    pub fn may_take_over(expired_votes: usize, group_size: usize) -> bool {
        expired_votes * 2 > group_size
    }
}
