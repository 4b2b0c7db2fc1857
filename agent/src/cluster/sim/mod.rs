//! A deterministic in-memory simulation of a Ferry cluster (issue 13 item 6, `cargo xtask sim`;
//! docs/cluster.md, "Simulation").
//!
//! N members each run the agent's own foca instance (the same [`Id`], [`foca_config`], load
//! notes and broadcast handler as `ferryd`) on a virtual clock: datagrams go through an event
//! queue with seeded random loss and delay, and are dropped across a partition or to a dead
//! member. Members are started over the first seconds, some are killed and revived, and the
//! members are cut in two for a while and healed. Each member gossips a synthetic
//! [`MemberLoad`] (hot spots that move over time) and runs the policy's `decide` for its own
//! processes with the view its own foca instance has; each decision is a move in a process
//! registry that takes effect at once on commit (never a copy). Replicated processes hold
//! quorum leases; a member takes one over only per the lease rule, and the registry is checked
//! at every tick: a process with two live copies ends the run with a [`Violation`].
//!
//! Nothing sleeps and nothing reads the real clock or the system's random generator: the same
//! [`SimConfig`] gives the same run.

mod procs;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::run::{LoadGossip, LoadNote, Swim, foca_config};
use super::{Cluster, Id, MemberLoad, REANNOUNCE_PERIOD, SUSPECT_TIMEOUT, key};
pub use crate::lease::LeaseConfig;
use procs::Registry;

/// The world advances in ticks of this many virtual milliseconds (loads, policy, leases and
/// the two-copies check run on tick boundaries; datagrams and foca timers at their own times).
pub const TICK_MS: u64 = 100;
/// The port of every simulated member's address.
const PORT: u16 = 7000;
/// Members every member announces itself to (its `[peers]`).
const SEEDS: usize = 3;

/// The knobs of a run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Members.
    pub members: usize,
    /// Virtual seconds to run (at least [`SimConfig::MIN_SECONDS`]).
    pub seconds: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Share of datagrams lost, 0..1.
    pub loss: f64,
    /// One-way delay of a datagram, uniform in this range, ms.
    pub delay_ms: (u64, u64),
    /// Members killed (each revived [`SimConfig::revive_after_s`] later).
    pub kills: usize,
    /// Seconds a killed member stays dead.
    pub revive_after_s: u64,
    /// Cut the members in two (a third of them on one side) for [`SimConfig::partition_s`].
    pub partition: bool,
    /// Seconds the partition lasts.
    pub partition_s: u64,
    /// Managed processes each member starts with.
    pub procs_per_member: usize,
    /// One process in this many is replicated (0: none).
    pub replicated_every: usize,
    /// Replica holders of a replicated process (its group is its host and these).
    pub replicas: usize,
    /// The lease settings of replicated processes.
    pub lease: LeaseConfig,
    /// Bound of each member's clock rate error: a clock runs at a rate drawn from
    /// `1 ± clock_drift` (the leases are safe while it is at most `lease.max_drift`).
    pub clock_drift: f64,
    /// The policy file's text.
    pub policy: String,
    /// Seconds between moves of the load's hot spots.
    pub hot_spot_every_s: u64,
    /// Test only: take over a replicated process as soon as foca says its host is down,
    /// ignoring leases (the two-copies check must catch it).
    pub unsafe_takeover: bool,
}

impl SimConfig {
    /// The schedule (start, kills, partition, heal, settle) needs this many seconds.
    pub const MIN_SECONDS: u64 = 150;
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            members: 50,
            seconds: 180,
            seed: 1,
            loss: 0.01,
            delay_ms: (1, 20),
            kills: 5,
            revive_after_s: 25,
            partition: true,
            partition_s: 25,
            procs_per_member: 4,
            replicated_every: 4,
            replicas: 2,
            lease: LeaseConfig::default(),
            // Every clock as far off as the leases allow.
            clock_drift: LeaseConfig::default().max_drift,
            policy: DEFAULT_POLICY.to_owned(),
            hot_spot_every_s: 40,
            unsafe_takeover: false,
        }
    }
}

/// The policy the simulation runs unless told otherwise.
pub const DEFAULT_POLICY: &str = r#"# The simulation's policy (docs/cluster.md, "Simulation").
cpu_above = 85
for = "30s"
target_below = 70
cooldown = "2m"
max_moves = 1
"#;

/// A run that could not start: a knob out of range.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A knob out of range.
    #[error("{0}")]
    Config(String),
    /// The policy text does not parse.
    #[error("policy: {0}")]
    Policy(String),
    /// The invariant broke.
    #[error("{0}")]
    Violation(Box<Violation>),
}

/// A process found with two live copies.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Virtual time, ms.
    pub at_ms: u64,
    /// The process.
    pub process: String,
    /// Its live copies: host and epoch.
    pub copies: Vec<(String, u64)>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "two live copies of {} at t={:.1}s (tick {}):",
            self.process,
            self.at_ms as f64 / 1000.0,
            self.at_ms / TICK_MS
        )?;
        for (host, epoch) in &self.copies {
            write!(f, " {host} (epoch {epoch})")?;
        }
        Ok(())
    }
}

/// min / median / max of some durations, seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Spread {
            min: v[0],
            median: v[v.len() / 2],
            max: v[v.len() - 1],
        })
    }
}

fn spread(s: &Option<Spread>) -> String {
    match s {
        Some(s) => format!(
            "min {:.1} s, median {:.1} s, max {:.1} s",
            s.min, s.median, s.max
        ),
        None => "none".to_owned(),
    }
}

/// The figures of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The knobs.
    pub members: usize,
    /// Virtual seconds.
    pub seconds: u64,
    /// Seed.
    pub seed: u64,
    /// Seconds from the last start until every member saw every other alive.
    pub joined_s: Option<f64>,
    /// Members killed.
    pub kills: usize,
    /// Time from a kill until every live member has it down, over the kills known by all.
    pub failure_known: Option<Spread>,
    /// Kills that some live member had not declared down by the end of the run.
    pub failures_unknown: usize,
    /// Time from a kill until the first member suspects it.
    pub first_suspect: Option<Spread>,
    /// Seconds from the heal until every live member saw every other alive again.
    pub healed_s: Option<f64>,
    /// Sealed gossip bytes sent per live member per second.
    pub gossip_bytes_per_member_s: f64,
    /// Datagrams sent per live member per second.
    pub datagrams_per_member_s: f64,
    /// Age of the loads the policy saw (since they were sampled): median, and the 95th
    /// percentile, seconds.
    pub load_age_s: (f64, f64),
    /// Share of the other live members whose load a member knew when it decided (median).
    pub loads_known: f64,
    /// Moves the policy decided.
    pub decisions: usize,
    /// Moves committed.
    pub migrations: usize,
    /// Moves that failed (destination dead or unreachable at commit; origin died).
    pub failed_moves: usize,
    /// Processes moved again within the cool-down.
    pub moved_again: usize,
    /// Processes moved back to a host they left within the cool-down.
    pub oscillated: usize,
    /// The cool-down used for the two figures above, seconds.
    pub cooldown_s: u64,
    /// Processes at the start, and how many of them are replicated.
    pub processes: (usize, usize),
    /// Unreplicated processes that died with their host.
    pub lost_with_host: usize,
    /// Replicated processes restored elsewhere after their host died or was cut off.
    pub takeovers: usize,
    /// Time from the host's death (or the cut) to the process running elsewhere.
    pub takeover_time: Option<Spread>,
    /// Copies frozen at some time because their host could not renew the lease.
    pub frozen: usize,
    /// Stale copies discarded on learning of a higher epoch.
    pub discarded: usize,
    /// Take-overs that got grants from some members but not a majority.
    pub failed_takeovers: usize,
    /// Copies discarded as stale while no copy at a higher epoch ran (the process stops until
    /// a replica holder takes it over).
    pub lost_by_fencing: usize,
    /// Ticks at which the two-copies invariant was checked.
    pub checks: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<f64>| v.map_or("never".to_owned(), |s| format!("{s:.1} s"));
        writeln!(
            f,
            "simulation: {} members, {} virtual seconds, seed {}",
            self.members, self.seconds, self.seed
        )?;
        writeln!(f, "joined (all see all alive): {}", opt(self.joined_s))?;
        writeln!(
            f,
            "failure known by all ({} kills): {}{}",
            self.kills,
            spread(&self.failure_known),
            if self.failures_unknown > 0 {
                format!(" ({} never known by all)", self.failures_unknown)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "first suspicion after a kill: {}",
            spread(&self.first_suspect)
        )?;
        writeln!(
            f,
            "partition healed (all see all alive): {}",
            opt(self.healed_s)
        )?;
        writeln!(
            f,
            "gossip: {:.0} bytes/s per member ({:.1} datagrams/s)",
            self.gossip_bytes_per_member_s, self.datagrams_per_member_s
        )?;
        writeln!(
            f,
            "loads seen by the policy: {:.0} % of the members, age median {:.1} s, p95 {:.1} s",
            self.loads_known * 100.0,
            self.load_age_s.0,
            self.load_age_s.1
        )?;
        writeln!(
            f,
            "processes: {} ({} replicated); lost with their host: {}",
            self.processes.0, self.processes.1, self.lost_with_host
        )?;
        writeln!(
            f,
            "migrations: {} (decided {}, failed {}); moved again within {} s: {}; oscillated (moved back within {} s): {}",
            self.migrations,
            self.decisions,
            self.failed_moves,
            self.cooldown_s,
            self.moved_again,
            self.cooldown_s,
            self.oscillated
        )?;
        writeln!(
            f,
            "take-overs: {} ({}); incomplete: {}; copies frozen: {}; stale copies discarded: {} (fenced with no newer copy: {})",
            self.takeovers,
            spread(&self.takeover_time),
            self.failed_takeovers,
            self.frozen,
            self.discarded,
            self.lost_by_fencing
        )?;
        writeln!(f, "two live copies: never ({} ticks checked)", self.checks)
    }
}

/// Runs the simulation.
pub fn run(cfg: &SimConfig) -> Result<Report, SimError> {
    check(cfg)?;
    let mut world = World::new(cfg)?;
    world.run()?;
    Ok(world.report())
}

fn check(cfg: &SimConfig) -> Result<(), SimError> {
    let bad = |s: String| Err(SimError::Config(s));
    if cfg.members < 5 || cfg.members > 60_000 {
        return bad(format!("--members {}: from 5 to 60000", cfg.members));
    }
    if cfg.seconds < SimConfig::MIN_SECONDS {
        return bad(format!(
            "--seconds {}: at least {} (start, kills, partition, heal)",
            cfg.seconds,
            SimConfig::MIN_SECONDS
        ));
    }
    if !(0.0..1.0).contains(&cfg.loss) {
        return bad(format!("loss {}: from 0 to below 1", cfg.loss));
    }
    if cfg.delay_ms.0 > cfg.delay_ms.1 {
        return bad(format!("delay {:?}: min above max", cfg.delay_ms));
    }
    if cfg.replicas + 1 > cfg.members {
        return bad(format!("{} replicas need more members", cfg.replicas));
    }
    if let Err(e) = cfg.lease.validate() {
        return bad(e.to_string());
    }
    if !(0.0..0.5).contains(&cfg.clock_drift) {
        return bad(format!(
            "clock drift {}: from 0 to below 0.5",
            cfg.clock_drift
        ));
    }
    Ok(())
}

/// An event of the queue.
enum Ev {
    /// A datagram arrives at `to` (dropped if `to` died or restarted since it was sent, or if
    /// the two are on different sides of a partition then).
    Deliver {
        to: usize,
        inc: u32,
        from: usize,
        data: Vec<u8>,
    },
    /// A foca timer of `node`'s incarnation `inc` fires.
    Timer {
        node: usize,
        inc: u32,
        timer: foca::Timer<Id>,
    },
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One simulated member.
struct Node {
    name: String,
    addr: SocketAddr,
    /// Started (its start time passed) and not killed.
    alive: bool,
    /// Grows at each (re)start: events of an older incarnation are dropped.
    inc: u32,
    swim: Option<Swim>,
    /// What its foca instance learned (the agent's own shared state: loads).
    cluster: Cluster,
    /// Its clock: `offset + rate · t`.
    rate: f64,
    offset: u64,
    /// Side of the partition (0 when there is none).
    side: u8,
    /// When it became suspect, per member it suspects (the agent's `expire_stale_suspects`).
    suspect_since: HashMap<SocketAddr, (u64, u64)>,
    cpus: u32,
    mem_total: u64,
    /// Load not from managed processes, cores.
    external: f64,
}

impl Node {
    fn clock(&self, t: u64) -> u64 {
        self.offset + (t as f64 * self.rate) as u64
    }
}

/// A kill and what each member saw of it.
struct Kill {
    node: usize,
    at: u64,
    id: Id,
    /// Members alive at the kill, on its side.
    observers: Vec<usize>,
    /// When each observer declared it down.
    down_at: HashMap<usize, u64>,
    first_suspect: Option<u64>,
}

/// Scheduled changes of the world.
#[derive(Debug, Clone, Copy)]
enum Change {
    Kill(usize),
    Revive(usize),
    Cut,
    Heal,
    MoveHotSpots,
}

struct World {
    cfg: SimConfig,
    now: u64,
    end: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    rng: StdRng,
    nodes: Vec<Node>,
    by_ip: HashMap<Ipv4Addr, usize>,
    start_at: Vec<u64>,
    schedule: Vec<(u64, Change)>,
    hot_spots: Vec<usize>,
    registry: Registry,
    kills: Vec<Kill>,
    last_start: u64,
    joined_at: Option<u64>,
    healed: Option<u64>,
    healed_at: Option<u64>,
    sent_bytes: u64,
    sent_datagrams: u64,
    /// Σ live members × ticks, for the per-member rates.
    member_ticks: u64,
    load_ages: Vec<f64>,
    loads_known: Vec<f64>,
    checks: u64,
}

fn addr_of(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8);
    SocketAddr::new(ip.into(), PORT)
}

impl World {
    fn new(cfg: &SimConfig) -> Result<World, SimError> {
        let n = cfg.members;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut nodes = Vec::with_capacity(n);
        let mut by_ip = HashMap::new();
        for i in 0..n {
            let addr = addr_of(i);
            if let std::net::IpAddr::V4(ip) = addr.ip() {
                by_ip.insert(ip, i);
            }
            nodes.push(Node {
                name: format!("m{i}"),
                addr,
                alive: false,
                inc: 0,
                swim: None,
                cluster: Cluster::default(),
                rate: 1.0 + cfg.clock_drift * (2.0 * rng.random::<f64>() - 1.0),
                offset: rng.random_range(1_000_000..1_000_000_000u64),
                side: 0,
                suspect_since: HashMap::new(),
                cpus: 4,
                mem_total: 16 << 30,
                external: 0.0,
            });
        }
        // Members start over the first 5 s.
        let start_at: Vec<u64> = (0..n)
            .map(|i| (i as u64 * 5000 / n as u64) / TICK_MS * TICK_MS)
            .collect();
        let last_start = *start_at.iter().max().unwrap_or(&0);
        let registry = Registry::new(cfg, &mut rng, n)?;
        let mut w = World {
            cfg: cfg.clone(),
            now: 0,
            end: cfg.seconds * 1000,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            nodes,
            by_ip,
            start_at,
            schedule: Vec::new(),
            hot_spots: Vec::new(),
            registry,
            kills: Vec::new(),
            last_start,
            joined_at: None,
            healed: None,
            healed_at: None,
            sent_bytes: 0,
            sent_datagrams: 0,
            member_ticks: 0,
            load_ages: Vec::new(),
            loads_known: Vec::new(),
            checks: 0,
        };
        w.plan();
        w.move_hot_spots();
        Ok(w)
    }

    /// The schedule: kills from 30 s, one every 8 s (each revived later), then the partition,
    /// then the heal and time to settle; the hot spots move every `hot_spot_every_s`.
    fn plan(&mut self) {
        let cfg = &self.cfg;
        let mut s = Vec::new();
        let first_kill = 30_000u64;
        let gap = 8_000u64;
        let kills_end = first_kill + gap * cfg.kills as u64;
        let cut_at = if cfg.partition {
            let at = kills_end.max(cfg.seconds * 1000 / 2);
            let heal = at + cfg.partition_s * 1000;
            s.push((at, Change::Cut));
            s.push((heal, Change::Heal));
            Some((at, heal))
        } else {
            None
        };
        let mut victims: Vec<usize> = Vec::new();
        for k in 0..cfg.kills {
            let at = first_kill + gap * k as u64;
            // A member that hosts a replicated process (when there is one not yet chosen).
            let candidates: Vec<usize> = (0..cfg.members)
                .filter(|v| !victims.contains(v))
                .filter(|v| self.registry.hosts_replicated(*v))
                .collect();
            let v = if candidates.is_empty() {
                self.rng.random_range(0..cfg.members)
            } else {
                candidates[self.rng.random_range(0..candidates.len())]
            };
            victims.push(v);
            s.push((at, Change::Kill(v)));
            let mut back = at + cfg.revive_after_s * 1000;
            // Not revived inside the partition (its kill was before it).
            if let Some((cut, heal)) = cut_at
                && back >= cut
                && back < heal
            {
                back = heal + 2000;
            }
            s.push((back, Change::Revive(v)));
        }
        let every = cfg.hot_spot_every_s.max(1) * 1000;
        let mut t = every;
        while t < self.end {
            s.push((t, Change::MoveHotSpots));
            t += every;
        }
        s.sort_by_key(|(t, _)| *t);
        self.schedule = s;
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn run(&mut self) -> Result<(), SimError> {
        let mut next_tick = 0u64;
        while next_tick <= self.end {
            while let Some(Reverse(q)) = self.queue.peek() {
                if q.at >= next_tick {
                    break;
                }
                let Some(Reverse(q)) = self.queue.pop() else {
                    break;
                };
                self.now = q.at;
                self.handle(q.ev);
            }
            self.now = next_tick;
            self.tick()?;
            next_tick += TICK_MS;
        }
        Ok(())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                to,
                inc,
                from,
                data,
            } => {
                let (a, b) = (&self.nodes[from], &self.nodes[to]);
                if !b.alive || b.inc != inc || a.side != b.side {
                    return;
                }
                let mut rt = AccumulatingRuntime::new();
                if let Some(swim) = self.nodes[to].swim.as_mut() {
                    let _ = swim.handle_data(&data, &mut rt);
                }
                self.drain(to, &mut rt);
            }
            Ev::Timer { node, inc, timer } => {
                let n = &self.nodes[node];
                if !n.alive || n.inc != inc {
                    return;
                }
                let mut rt = AccumulatingRuntime::new();
                if let Some(swim) = self.nodes[node].swim.as_mut() {
                    let _ = swim.handle_timer(timer, &mut rt);
                }
                self.drain(node, &mut rt);
            }
        }
    }

    /// Sends what `i`'s foca queued, schedules its timers, notes its notifications.
    fn drain(&mut self, i: usize, rt: &mut AccumulatingRuntime<Id>) {
        let inc = self.nodes[i].inc;
        let name_len = self.nodes[i].name.len();
        while let Some((to, data)) = rt.to_send() {
            self.sent_datagrams += 1;
            self.sent_bytes += (data.len() + key::OVERHEAD + name_len) as u64;
            if self.rng.random::<f64>() < self.cfg.loss {
                continue;
            }
            let std::net::IpAddr::V4(ip) = to.addr.ip() else {
                continue;
            };
            let Some(&j) = self.by_ip.get(&ip) else {
                continue;
            };
            let (lo, hi) = self.cfg.delay_ms;
            let delay = self.rng.random_range(lo..=hi);
            let to_inc = self.nodes[j].inc;
            self.push(
                self.now + delay,
                Ev::Deliver {
                    to: j,
                    inc: to_inc,
                    from: i,
                    data: data.to_vec(),
                },
            );
        }
        while let Some((after, timer)) = rt.to_schedule() {
            // Timers fire on the member's clock: a fast clock fires them early.
            let after = (after.as_millis() as f64 / self.nodes[i].rate) as u64;
            self.push(
                self.now + after,
                Ev::Timer {
                    node: i,
                    inc,
                    timer,
                },
            );
        }
        while let Some(n) = rt.to_notify() {
            if let OwnedNotification::MemberDown(id) = n {
                let now = self.now;
                for k in &mut self.kills {
                    if k.id == id && k.observers.contains(&i) {
                        k.down_at.entry(i).or_insert(now);
                    }
                }
            }
        }
    }

    /// Starts (or revives) member `i`: a fresh foca instance with a new identity, announced
    /// to its seeds.
    fn start(&mut self, i: usize) {
        let inc = self.nodes[i].inc + 1;
        let node = &mut self.nodes[i];
        node.inc = inc;
        node.alive = true;
        node.cluster = Cluster::default();
        node.suspect_since.clear();
        let me = Id {
            name: node.name.clone(),
            addr: node.addr,
            // The agent uses its clock in ms: larger at each restart.
            bump: node.clock(self.now).max(1),
        };
        let handler = LoadGossip {
            shared: node.cluster.shared.clone(),
            me: node.name.clone(),
        };
        let seed = self.cfg.seed ^ ((i as u64) << 20) ^ u64::from(inc);
        node.swim = Some(Foca::with_custom_broadcast(
            me,
            foca_config(),
            StdRng::seed_from_u64(seed),
            PostcardCodec,
            handler,
        ));
        let (name, local) = (self.nodes[i].name.clone(), self.nodes[i].clock(self.now));
        self.registry.node_started(i, &name, local);
        self.announce_to_seeds(i);
    }

    fn kill(&mut self, i: usize) {
        let Some(swim) = self.nodes[i].swim.take() else {
            return;
        };
        let id = swim.identity().clone();
        self.nodes[i].alive = false;
        let side = self.nodes[i].side;
        let observers: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].alive && self.nodes[j].side == side)
            .collect();
        self.kills.push(Kill {
            node: i,
            at: self.now,
            id,
            observers,
            down_at: HashMap::new(),
            first_suspect: None,
        });
        self.registry.node_killed(i, self.now);
    }

    /// Announces `i` to each seed that is not an active member of its view (the agent does it
    /// every [`REANNOUNCE_PERIOD`]).
    fn announce_to_seeds(&mut self, i: usize) {
        let mut rt = AccumulatingRuntime::new();
        let seeds: Vec<Id> = (0..SEEDS.min(self.nodes.len()))
            .filter(|&s| s != i)
            .map(|s| Id {
                name: self.nodes[s].name.clone(),
                addr: self.nodes[s].addr,
                bump: 0,
            })
            .collect();
        if let Some(swim) = self.nodes[i].swim.as_mut() {
            let active: Vec<SocketAddr> = swim.iter_members().map(|m| m.id().addr).collect();
            for seed in seeds {
                if !active.contains(&seed.addr) {
                    let _ = swim.announce(seed, &mut rt);
                }
            }
        }
        self.drain(i, &mut rt);
    }

    /// Declares down the members suspected for longer than their timeout allows, as the
    /// agent does (foca loses its suspect-to-down timer when the member renews its identity).
    fn expire_stale_suspects(&mut self, i: usize) {
        let now = self.now;
        let limit = (SUSPECT_TIMEOUT + 2 * super::PROBE_PERIOD).as_millis() as u64;
        let node = &mut self.nodes[i];
        let Some(swim) = node.swim.as_mut() else {
            return;
        };
        let mut stale = Vec::new();
        let mut still = HashMap::new();
        for m in swim.iter_membership_state() {
            if m.state() != foca::State::Suspect {
                continue;
            }
            let since = match node.suspect_since.get(&m.id().addr) {
                Some((bump, since)) if *bump == m.id().bump => *since,
                _ => now,
            };
            still.insert(m.id().addr, (m.id().bump, since));
            if now.saturating_sub(since) > limit {
                stale.push(foca::Member::down(m.id().clone()));
            }
        }
        node.suspect_since = still;
        if stale.is_empty() {
            return;
        }
        let mut rt = AccumulatingRuntime::new();
        let _ = swim.apply_many(stale.into_iter(), true, &mut rt);
        self.drain(i, &mut rt);
    }

    /// Member `i` samples and gossips its synthetic load.
    fn gossip_load(&mut self, i: usize) {
        let load = self.load_of(i);
        let note = LoadNote {
            name: self.nodes[i].name.clone(),
            load,
        };
        let Ok(bytes) = postcard::to_allocvec(&note) else {
            return;
        };
        let mut rt = AccumulatingRuntime::new();
        if let Some(swim) = self.nodes[i].swim.as_mut() {
            let _ = swim
                .add_broadcast(&bytes)
                .and_then(|_| swim.broadcast(&mut rt));
        }
        self.drain(i, &mut rt);
    }

    /// The synthetic load of `i` now: a base, the hot spots near it (by index, on a ring),
    /// a little noise, and its managed processes that run.
    fn load_of(&mut self, i: usize) -> MemberLoad {
        let n = self.nodes.len();
        let mut external = 0.6;
        for &c in &self.hot_spots {
            let d = (i as i64 - c as i64).unsigned_abs() as usize;
            let d = d.min(n - d);
            external += (3.0 - d as f64).max(0.0);
        }
        external += 0.2 * (self.rng.random::<f64>() - 0.5);
        let node = &mut self.nodes[i];
        node.external = external;
        let (cpu, mem, managed) = self.registry.usage(i);
        let node = &self.nodes[i];
        let busy = ((external + cpu) / f64::from(node.cpus)).clamp(0.0, 1.0);
        let mem_used = (2u64 << 30) + mem;
        let mem_free = 1.0 - (mem_used as f64 / node.mem_total as f64).min(1.0);
        MemberLoad {
            seq: node.clock(self.now),
            cpus: node.cpus,
            cpu_busy: busy,
            mem_used: mem_used.min(node.mem_total),
            mem_total: node.mem_total,
            net_rx_bps: 0.0,
            net_tx_bps: 0.0,
            managed,
            free: (1.0 - busy).min(mem_free).clamp(0.0, 1.0),
            xsave_features: 0x2ff,
            kernel: "6.12.0-sim".to_owned(),
            managed_cpu: cpu,
        }
    }

    fn move_hot_spots(&mut self) {
        let n = self.nodes.len();
        let count = (n / 50).max(1);
        self.hot_spots = (0..count).map(|_| self.rng.random_range(0..n)).collect();
    }

    fn tick(&mut self) -> Result<(), SimError> {
        let now = self.now;
        // Starts.
        for i in 0..self.nodes.len() {
            if self.start_at[i] == now && self.nodes[i].inc == 0 {
                self.start(i);
            }
        }
        // Scheduled changes.
        while let Some(&(at, change)) = self.schedule.first() {
            if at > now {
                break;
            }
            self.schedule.remove(0);
            match change {
                Change::Kill(v) => self.kill(v),
                Change::Revive(v) => self.start(v),
                Change::Cut => {
                    let n = self.nodes.len();
                    let mut order: Vec<usize> = (0..n).collect();
                    for k in (1..n).rev() {
                        let j = self.rng.random_range(0..=k);
                        order.swap(k, j);
                    }
                    for &i in order.iter().take(n / 3) {
                        self.nodes[i].side = 1;
                    }
                    self.registry.cut(now);
                }
                Change::Heal => {
                    for node in &mut self.nodes {
                        node.side = 0;
                    }
                    self.healed = Some(now);
                }
                Change::MoveHotSpots => self.move_hot_spots(),
            }
        }
        // Per member, once a second at its own phase: load, policy, seeds, stale suspects.
        let n = self.nodes.len();
        let period = super::LOAD_PERIOD.as_millis() as u64;
        for i in 0..n {
            if !self.nodes[i].alive {
                continue;
            }
            let phase = (i as u64 * 7919 % (period / TICK_MS)) * TICK_MS;
            if now % period == phase {
                self.gossip_load(i);
                self.decide(i)?;
            }
            let re = REANNOUNCE_PERIOD.as_millis() as u64;
            if now % re == phase % re {
                self.announce_to_seeds(i);
                self.expire_stale_suspects(i);
            }
        }
        self.member_ticks += self.nodes.iter().filter(|n| n.alive).count() as u64;
        self.watch_failures();
        self.watch_convergence();
        self.leases_and_moves()?;
        self.checks += 1;
        Ok(())
    }

    /// Notes the first suspicion of each killed member.
    fn watch_failures(&mut self) {
        let now = self.now;
        for k in &mut self.kills {
            if k.first_suspect.is_some() || now > k.at + 60_000 {
                continue;
            }
            let suspected = k.observers.iter().any(|&j| {
                self.nodes[j].swim.as_ref().is_some_and(|s| {
                    s.iter_membership_state()
                        .any(|m| m.id() == &k.id && m.state() != foca::State::Alive)
                })
            });
            if suspected {
                k.first_suspect = Some(now);
            }
        }
    }

    /// Whether every live member sees every other live member active.
    fn converged(&self) -> bool {
        let alive: Vec<&Node> = self.nodes.iter().filter(|n| n.alive).collect();
        let want = alive.len().saturating_sub(1);
        alive.iter().all(|n| {
            n.swim.as_ref().is_some_and(|s| {
                s.num_members() == want && s.iter_members().all(|m| m.state() == foca::State::Alive)
            })
        })
    }

    fn watch_convergence(&mut self) {
        let now = self.now;
        if self.joined_at.is_none()
            && now >= self.last_start
            && now.is_multiple_of(500)
            && self.kills.is_empty()
            && self.converged()
        {
            self.joined_at = Some(now);
        }
        if let Some(h) = self.healed
            && self.healed_at.is_none()
            && now.is_multiple_of(500)
            && self.converged()
        {
            self.healed_at = Some(now.max(h));
        }
    }

    fn report(&self) -> Report {
        let mut known = Vec::new();
        let mut unknown = 0;
        let mut suspect = Vec::new();
        for k in &self.kills {
            // Observers that died themselves before knowing do not count.
            let obs: Vec<usize> = k
                .observers
                .iter()
                .copied()
                .filter(|j| k.down_at.contains_key(j) || self.survived(*j, k.at))
                .collect();
            if obs.iter().all(|j| k.down_at.contains_key(j)) {
                let last = obs.iter().filter_map(|j| k.down_at.get(j)).max();
                if let Some(t) = last {
                    known.push((t - k.at) as f64 / 1000.0);
                }
            } else {
                unknown += 1;
            }
            if let Some(t) = k.first_suspect {
                suspect.push((t - k.at) as f64 / 1000.0);
            }
        }
        let secs = self.member_ticks as f64 * TICK_MS as f64 / 1000.0;
        let mut ages = self.load_ages.clone();
        ages.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if ages.is_empty() {
                0.0
            } else {
                ages[((ages.len() - 1) as f64 * p) as usize]
            }
        };
        let mut lk = self.loads_known.clone();
        lk.sort_by(f64::total_cmp);
        let r = &self.registry;
        Report {
            members: self.cfg.members,
            seconds: self.cfg.seconds,
            seed: self.cfg.seed,
            joined_s: self
                .joined_at
                .map(|t| t.saturating_sub(self.last_start) as f64 / 1000.0),
            kills: self.kills.len(),
            failure_known: Spread::of(known),
            failures_unknown: unknown,
            first_suspect: Spread::of(suspect),
            healed_s: self
                .healed_at
                .zip(self.healed)
                .map(|(a, h)| (a - h) as f64 / 1000.0),
            gossip_bytes_per_member_s: self.sent_bytes as f64 / secs.max(1.0),
            datagrams_per_member_s: self.sent_datagrams as f64 / secs.max(1.0),
            load_age_s: (pct(0.5), pct(0.95)),
            loads_known: lk.get(lk.len() / 2).copied().unwrap_or(0.0),
            decisions: r.decisions,
            migrations: r.migrations,
            failed_moves: r.failed_moves,
            moved_again: r.moved_again,
            oscillated: r.oscillated,
            cooldown_s: r.cooldown_ms / 1000,
            processes: (r.initial, r.initial_replicated),
            lost_with_host: r.lost,
            takeovers: r.takeovers,
            takeover_time: Spread::of(r.takeover_times.clone()),
            frozen: r.frozen_count,
            discarded: r.discarded,
            failed_takeovers: r.failed_takeovers,
            lost_by_fencing: r.lost_by_fencing,
            checks: self.checks,
        }
    }

    /// Whether `j` was not killed during the minute after `t`.
    fn survived(&self, j: usize, t: u64) -> bool {
        !self
            .kills
            .iter()
            .any(|k| k.node == j && k.at >= t && k.at <= t + 60_000)
    }
}
