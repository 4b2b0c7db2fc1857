//! The simulation's process registry: where each process runs, the policy's moves, the
//! leases of replicated processes, take-overs, and the two-copies check.

use std::collections::HashMap;

use rand::RngExt;
use rand::rngs::StdRng;

use super::{SimConfig, SimError, TICK_MS, Violation, World};
use crate::cluster::State;
use crate::lease::{self, Grantor, Holder};
use crate::policy::supervisor::STALE_LOAD;
use crate::policy::{self, HostView, Memory, Policy, ProcView};

/// How long a policy move takes from decision to commit (live migration), ms.
const MOVE_MS: u64 = 2000;
/// How often replica holders look for a process to take over, ms.
const TAKEOVER_EVERY_MS: u64 = 500;

/// A copy of a process on a host.
#[derive(Debug, Clone)]
pub(super) struct Inst {
    host: usize,
    /// The host's incarnation: a copy dies with its host.
    inc: u32,
    epoch: u64,
    /// Stopped because its host cannot renew a majority of its lease.
    frozen: bool,
}

#[derive(Debug, Clone)]
struct Move {
    to: usize,
    to_inc: u32,
    from: usize,
    from_inc: u32,
    done_at: u64,
}

#[derive(Debug)]
struct Proc {
    id: String,
    cpu: f64,
    mem: u64,
    /// The group of a replicated process: its host and its replica holders; empty when it is
    /// not replicated.
    group: Vec<usize>,
    /// The host of the newest epoch, as its replica holders know it.
    holder: usize,
    /// The newest epoch.
    epoch: u64,
    copies: Vec<Inst>,
    moving: Option<Move>,
    /// Moves: when, from, to.
    moves: Vec<(u64, usize, usize)>,
    /// Since when its holder is dead or cut off (for the take-over time).
    lost_since: Option<u64>,
    gone: bool,
}

pub(super) struct Registry {
    procs: Vec<Proc>,
    by_id: HashMap<String, usize>,
    policy: Policy,
    memories: Vec<Memory>,
    grantors: Vec<Grantor>,
    holders: Vec<Holder>,
    lease: lease::LeaseConfig,
    unsafe_takeover: bool,
    cut_at: Option<u64>,
    pub(super) cooldown_ms: u64,
    pub(super) initial: usize,
    pub(super) initial_replicated: usize,
    pub(super) decisions: usize,
    pub(super) migrations: usize,
    pub(super) failed_moves: usize,
    pub(super) moved_again: usize,
    pub(super) oscillated: usize,
    pub(super) lost: usize,
    pub(super) takeovers: usize,
    pub(super) takeover_times: Vec<f64>,
    pub(super) frozen_count: usize,
    pub(super) discarded: usize,
    pub(super) failed_takeovers: usize,
    pub(super) lost_by_fencing: usize,
}

impl Registry {
    pub(super) fn new(cfg: &SimConfig, rng: &mut StdRng, n: usize) -> Result<Registry, SimError> {
        let policy = Policy::parse(&cfg.policy).map_err(|e| SimError::Policy(e.to_string()))?;
        let cooldown_ms = policy.cooldown_ms;
        let mut procs = Vec::new();
        let mut by_id = HashMap::new();
        for host in 0..n {
            for k in 0..cfg.procs_per_member {
                let idx = procs.len();
                let replicated = cfg.replicated_every > 0 && idx % cfg.replicated_every == 0;
                let mut group = Vec::new();
                if replicated {
                    group.push(host);
                    while group.len() < cfg.replicas + 1 {
                        let r = rng.random_range(0..n);
                        if !group.contains(&r) {
                            group.push(r);
                        }
                    }
                }
                let id = format!("p{host}.{k}");
                by_id.insert(id.clone(), idx);
                procs.push(Proc {
                    id,
                    cpu: rng.random_range(0.2..0.9),
                    mem: rng.random_range(256u64 << 20..2u64 << 30),
                    group,
                    holder: host,
                    epoch: 1,
                    copies: vec![Inst {
                        host,
                        inc: 1,
                        epoch: 1,
                        frozen: replicated,
                    }],
                    moving: None,
                    moves: Vec::new(),
                    lost_since: None,
                    gone: false,
                });
            }
        }
        let initial = procs.len();
        let initial_replicated = procs.iter().filter(|p| !p.group.is_empty()).count();
        Ok(Registry {
            procs,
            by_id,
            policy,
            memories: (0..n).map(|_| Memory::default()).collect(),
            // Replaced when each member starts.
            grantors: (0..n)
                .map(|i| Grantor::new(cfg.lease, &format!("m{i}"), 0))
                .collect(),
            holders: (0..n)
                .map(|i| Holder::new(cfg.lease, &format!("m{i}")))
                .collect(),
            lease: cfg.lease,
            unsafe_takeover: cfg.unsafe_takeover,
            cut_at: None,
            cooldown_ms,
            initial,
            initial_replicated,
            decisions: 0,
            migrations: 0,
            failed_moves: 0,
            moved_again: 0,
            oscillated: 0,
            lost: 0,
            takeovers: 0,
            takeover_times: Vec::new(),
            frozen_count: 0,
            discarded: 0,
            failed_takeovers: 0,
            lost_by_fencing: 0,
        })
    }

    /// Whether `v` hosts a replicated process.
    pub(super) fn hosts_replicated(&self, v: usize) -> bool {
        self.procs
            .iter()
            .any(|p| !p.group.is_empty() && p.holder == v)
    }

    /// A (re)started member has lost its memory: its grants, the grants it held, the
    /// policy's memory.
    /// A grantor that starts grants nothing for a grantor's span (it may have forgotten
    /// grants). The processes it hosts (at its first start) run at their epoch.
    pub(super) fn node_started(&mut self, i: usize, name: &str, local_ms: u64) {
        self.grantors[i] = Grantor::new(self.lease, name, local_ms);
        self.holders[i] = Holder::new(self.lease, name);
        self.memories[i] = Memory::default();
        for p in &self.procs {
            if p.group.is_empty() {
                continue;
            }
            for c in &p.copies {
                if c.host == i {
                    self.holders[i].set_epoch(&p.id, c.epoch);
                }
            }
        }
    }

    /// Member `i` died: its copies die with it.
    pub(super) fn node_killed(&mut self, i: usize, now: u64) {
        for p in &mut self.procs {
            if p.gone {
                continue;
            }
            let before = p.copies.len();
            p.copies.retain(|c| c.host != i);
            if p.copies.len() == before {
                continue;
            }
            if p.group.is_empty() {
                if p.copies.is_empty() {
                    p.gone = true;
                    self.lost += 1;
                }
            } else if p.holder == i {
                p.lost_since.get_or_insert(now);
            }
        }
    }

    /// The partition began.
    pub(super) fn cut(&mut self, now: u64) {
        self.cut_at = Some(now);
    }

    /// CPU cores, memory and count of the processes running on `i` (frozen ones use no CPU).
    pub(super) fn usage(&self, i: usize) -> (f64, u64, u32) {
        let mut cpu = 0.0;
        let mut mem = 0;
        let mut n = 0;
        for p in &self.procs {
            for c in &p.copies {
                if c.host == i {
                    if !c.frozen {
                        cpu += p.cpu;
                    }
                    mem += p.mem;
                    n += 1;
                }
            }
        }
        (cpu, mem, n)
    }
}

impl World {
    fn live(&self, c: &Inst) -> bool {
        let n = &self.nodes[c.host];
        n.alive && n.inc == c.inc
    }

    /// Whether a message from `a` reaches `b` and its answer comes back.
    fn reachable(&mut self, a: usize, b: usize) -> bool {
        if a == b {
            return true;
        }
        let (x, y) = (&self.nodes[a], &self.nodes[b]);
        if !x.alive || !y.alive || x.side != y.side {
            return false;
        }
        self.rng.random::<f64>() >= self.cfg.loss && self.rng.random::<f64>() >= self.cfg.loss
    }

    /// Member `i` runs the policy for its own processes with the view its foca instance has,
    /// and starts the moves it decides.
    pub(super) fn decide(&mut self, i: usize) -> Result<(), SimError> {
        let now = self.now;
        let local_now = self.nodes[i].clock(now);
        let node = &self.nodes[i];
        let Some(swim) = node.swim.as_ref() else {
            return Ok(());
        };
        let mut hosts = Vec::new();
        let mut ages = Vec::new();
        {
            let shared = node.cluster.lock();
            let view = |name: &str, state: State| {
                shared.loads.get(name).map(|(l, _)| {
                    (
                        HostView {
                            name: name.to_owned(),
                            state,
                            cpus: l.cpus,
                            cpu_busy: l.cpu_busy,
                            mem_used: l.mem_used,
                            mem_total: l.mem_total,
                            managed: l.managed,
                            managed_cpu: l.managed_cpu,
                        },
                        l.seq,
                    )
                })
            };
            if let Some((h, _)) = view(&node.name, State::Alive) {
                hosts.push(h);
            }
            for m in swim.iter_membership_state() {
                let state = match m.state() {
                    foca::State::Alive => State::Alive,
                    foca::State::Suspect => State::Suspect,
                    foca::State::Down => State::Down,
                };
                if let Some((h, seq)) = view(&m.id().name, state) {
                    // The supervisor leaves out loads older than STALE_LOAD (here: since
                    // they were sampled).
                    let sampled = self.by_ip.get(&match m.id().addr.ip() {
                        std::net::IpAddr::V4(ip) => ip,
                        std::net::IpAddr::V6(_) => continue,
                    });
                    if let Some(&j) = sampled {
                        let o = &self.nodes[j];
                        let at = (seq.saturating_sub(o.offset)) as f64 / o.rate;
                        if now as f64 - at > STALE_LOAD.as_millis() as f64 {
                            continue;
                        }
                    }
                    if state != State::Down
                        && let Some(&j) = self.by_ip.get(&match m.id().addr.ip() {
                            std::net::IpAddr::V4(ip) => ip,
                            std::net::IpAddr::V6(_) => continue,
                        })
                    {
                        // The sample's time on the virtual clock, from its member's clock.
                        let o = &self.nodes[j];
                        let sampled = (seq.saturating_sub(o.offset)) as f64 / o.rate;
                        ages.push((now as f64 - sampled).max(0.0) / 1000.0);
                    }
                    hosts.push(h);
                }
            }
        }
        let alive_others = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .count()
            .saturating_sub(1);
        // Sampled: 1 decision in 10 (the figures need no more).
        if self.rng.random_range(0..10) == 0 {
            if alive_others > 0 {
                self.loads_known
                    .push((hosts.len().saturating_sub(1)) as f64 / alive_others as f64);
            }
            self.load_ages.extend(ages);
        }
        let r = &self.registry;
        let mut procs = Vec::new();
        for p in &r.procs {
            if p.gone {
                continue;
            }
            let here = p
                .copies
                .iter()
                .any(|c| c.host == i && !c.frozen && self.live(c));
            if !here {
                continue;
            }
            procs.push(ProcView {
                id: p.id.clone(),
                pid: 1000,
                uid: 1000,
                labels: Vec::new(),
                cpu: p.cpu,
                mem: p.mem,
                // Replicated processes are not moved by the policy here: the lease API has no
                // hand-over yet (docs/cluster.md, "Simulation").
                pinned: !p.group.is_empty(),
                last_moved_ms: p.moves.last().map(|(t, ..)| self.nodes[i].clock(*t)),
                moving: p.moving.is_some(),
            });
        }
        let name = self.nodes[i].name.clone();
        let decisions = policy::decide(
            &self.registry.policy,
            &name,
            &hosts,
            &procs,
            &mut self.registry.memories[i],
            local_now,
        );
        for d in decisions {
            if d.dry_run {
                continue;
            }
            self.registry.decisions += 1;
            let Some(&pi) = self.registry.by_id.get(&d.id) else {
                return Err(SimError::Config(format!(
                    "the policy moved {} which {name} does not run",
                    d.id
                )));
            };
            let Some(to) = d.to.strip_prefix('m').and_then(|s| s.parse::<usize>().ok()) else {
                return Err(SimError::Config(format!(
                    "the policy named an unknown member {}",
                    d.to
                )));
            };
            if to >= self.nodes.len() || to == i {
                return Err(SimError::Config(format!(
                    "{name}: the policy named a bad destination {}",
                    d.to
                )));
            }
            let to_inc = self.nodes[to].inc;
            let from_inc = self.nodes[i].inc;
            let p = &mut self.registry.procs[pi];
            if p.moving.is_none() {
                p.moving = Some(Move {
                    to,
                    to_inc,
                    from: i,
                    from_inc,
                    done_at: now + MOVE_MS,
                });
            }
        }
        Ok(())
    }

    /// Commits the moves due, renews leases, freezes and unfreezes, takes over, and checks
    /// that no process has two live copies.
    pub(super) fn leases_and_moves(&mut self) -> Result<(), SimError> {
        let now = self.now;
        for pi in 0..self.registry.procs.len() {
            self.commit_move(pi);
            if self.registry.procs[pi].group.is_empty() || self.registry.procs[pi].gone {
                continue;
            }
            let renew = self.registry.lease.renew_every_ms.max(TICK_MS);
            let phase = (pi as u64 * 37 % (renew / TICK_MS)) * TICK_MS;
            if now % renew == phase {
                self.renew(pi);
            }
            self.freeze(pi);
            if now.is_multiple_of(TAKEOVER_EVERY_MS) {
                self.try_take_over(pi);
            }
        }
        self.check_copies()
    }

    fn commit_move(&mut self, pi: usize) {
        let now = self.now;
        let Some(m) = self.registry.procs[pi].moving.clone() else {
            return;
        };
        if m.done_at > now {
            return;
        }
        self.registry.procs[pi].moving = None;
        let (src, dst) = (&self.nodes[m.from], &self.nodes[m.to]);
        let ok = src.alive
            && src.inc == m.from_inc
            && dst.alive
            && dst.inc == m.to_inc
            && src.side == dst.side;
        let p = &mut self.registry.procs[pi];
        let Some(c) = p
            .copies
            .iter_mut()
            .find(|c| c.host == m.from && c.inc == m.from_inc && !c.frozen)
        else {
            self.registry.failed_moves += 1;
            return;
        };
        if !ok {
            self.registry.failed_moves += 1;
            return;
        }
        // The commit: the copy on the origin ends as the one on the destination starts.
        c.host = m.to;
        c.inc = m.to_inc;
        if p.holder == m.from {
            p.holder = m.to;
        }
        let cooldown = self.registry.cooldown_ms;
        if let Some(&(t, from, _)) = p.moves.last()
            && now - t < cooldown
        {
            self.registry.moved_again += 1;
            if from == m.to {
                self.registry.oscillated += 1;
            }
        }
        p.moves.push((now, m.from, m.to));
        self.registry.migrations += 1;
    }

    /// Each host of a copy of replicated process `pi` asks its group to renew its lease; a
    /// copy that learns of a higher epoch (or of its epoch held by another) is discarded.
    fn renew(&mut self, pi: usize) {
        let group = self.registry.procs[pi].group.clone();
        let id = self.registry.procs[pi].id.clone();
        let copies = self.registry.procs[pi].copies.clone();
        let mut stale = Vec::new();
        for c in copies {
            if !self.live(&c) {
                continue;
            }
            let h = c.host;
            // Counted from when the request was sent (the holder's clock).
            let asked = self.nodes[h].clock(self.now);
            let holder_name = self.nodes[h].name.clone();
            // The copy ran at its epoch with a majority: its renewals commit the epoch.
            let committed = self.registry.holders[h].committed(&id, group.len(), asked);
            for &g in &group {
                if !self.reachable(h, g) {
                    continue;
                }
                let g_now = self.nodes[g].clock(self.now);
                match self.registry.grantors[g].grant_as(
                    &id,
                    &holder_name,
                    c.epoch,
                    committed,
                    g_now,
                ) {
                    Ok(grant) => {
                        let from = self.nodes[g].name.clone();
                        self.registry.holders[h].record(&from, &grant, asked);
                    }
                    Err(e) if e.stale_epoch().is_some() => {
                        stale.push((h, c.epoch));
                        break;
                    }
                    Err(_) => {}
                }
            }
        }
        let p = &mut self.registry.procs[pi];
        for (h, e) in stale {
            let before = p.copies.len();
            p.copies.retain(|c| !(c.host == h && c.epoch == e));
            self.registry.discarded += before - p.copies.len();
            self.registry.holders[h].forget(&p.id);
            if before > p.copies.len() && p.copies.iter().all(|c| c.epoch <= e) && p.epoch <= e {
                // Discarded while no copy of a higher epoch ever ran (`p.epoch` is the highest
                // epoch taken over): the process is lost by the fencing. The lease rules
                // (stale only once a higher epoch is committed) must keep this at 0.
                self.registry.lost_by_fencing += 1;
                p.lost_since.get_or_insert(self.now);
            }
        }
    }

    /// A copy runs only while its host holds a majority of unexpired grants.
    fn freeze(&mut self, pi: usize) {
        if self.registry.unsafe_takeover {
            for c in &mut self.registry.procs[pi].copies {
                c.frozen = false;
            }
            return;
        }
        let size = self.registry.procs[pi].group.len();
        let id = self.registry.procs[pi].id.clone();
        let mut newly = 0;
        let clocks: Vec<u64> = self.registry.procs[pi]
            .copies
            .iter()
            .map(|c| self.nodes[c.host].clock(self.now))
            .collect();
        let p = &mut self.registry.procs[pi];
        for (c, t) in p.copies.iter_mut().zip(clocks) {
            let run = self.registry.holders[c.host].may_run(&id, size, t);
            // Copies start frozen until their first grants: only a running copy that stops
            // counts as frozen.
            if !c.frozen && !run {
                newly += 1;
            }
            c.frozen = !run;
        }
        self.registry.frozen_count += newly;
    }

    /// A replica holder that sees the process's host down (or cannot reach it) takes the
    /// process over once a majority of its group sees the lease expired, with the next epoch.
    fn try_take_over(&mut self, pi: usize) {
        let now = self.now;
        let group = self.registry.procs[pi].group.clone();
        let holder = self.registry.procs[pi].holder;
        let holder_name = self.nodes[holder].name.clone();
        let id = self.registry.procs[pi].id.clone();
        for &r in &group {
            if r == holder || !self.nodes[r].alive {
                continue;
            }
            // Down or not an active member in r's own view.
            let sees_down = self.nodes[r].swim.as_ref().is_some_and(|s| {
                !s.iter_members()
                    .any(|m| m.id().name == holder_name && m.state() != foca::State::Down)
            });
            if !sees_down {
                continue;
            }
            let mut epoch = self.registry.procs[pi].epoch + 1;
            if !self.registry.unsafe_takeover {
                // First ask (changing nothing) whether a majority sees the lease expired, and
                // the highest epoch each gave, then ask that majority for grants at the next
                // epoch.
                let mut expired = 0;
                let r_name = self.nodes[r].name.clone();
                for &g in &group {
                    if self.reachable(r, g) {
                        let t = self.nodes[g].clock(now);
                        let gr = &self.registry.grantors[g];
                        if gr.expired(&id, t) {
                            expired += 1;
                        }
                        if let Some(top) = gr.top(&id) {
                            epoch = epoch.max(lease::next_epoch(top.epoch, &top.holder, &r_name));
                        }
                    }
                }
                if !lease::may_take_over(expired, group.len()) {
                    continue;
                }
                let asked = self.nodes[r].clock(now);
                self.registry.holders[r].set_epoch(&id, epoch);
                let mut granted = 0;
                for &g in &group {
                    if self.reachable(r, g) {
                        let t = self.nodes[g].clock(now);
                        if let Ok(grant) = self.registry.grantors[g].grant(&id, &r_name, epoch, t) {
                            let from = self.nodes[g].name.clone();
                            self.registry.holders[r].record(&from, &grant, asked);
                            granted += 1;
                        }
                    }
                }
                if !lease::may_take_over(granted, group.len())
                    || !self.registry.holders[r].may_run(&id, group.len(), asked)
                {
                    self.registry.failed_takeovers += 1;
                    continue;
                }
            }
            let inc = self.nodes[r].inc;
            let cut_at = self.registry.cut_at;
            let p = &mut self.registry.procs[pi];
            p.epoch = epoch;
            p.holder = r;
            p.copies.push(Inst {
                host: r,
                inc,
                epoch,
                frozen: false,
            });
            p.moving = None;
            if let Some(since) = p.lost_since.take().or(cut_at) {
                self.registry
                    .takeover_times
                    .push((now - since) as f64 / 1000.0);
            }
            self.registry.takeovers += 1;
            return;
        }
    }

    /// No process has two live copies.
    fn check_copies(&self) -> Result<(), SimError> {
        for p in &self.registry.procs {
            if p.copies.len() < 2 {
                continue;
            }
            let live: Vec<(String, u64)> = p
                .copies
                .iter()
                .filter(|c| !c.frozen && self.live(c))
                .map(|c| (self.nodes[c.host].name.clone(), c.epoch))
                .collect();
            if live.len() > 1 {
                return Err(SimError::Violation(Box::new(Violation {
                    at_ms: self.now,
                    process: p.id.clone(),
                    copies: live,
                })));
            }
        }
        Ok(())
    }
}
