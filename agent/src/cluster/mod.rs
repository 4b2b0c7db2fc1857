//! Cluster membership and load gossip (issue 13 item 1; docs/cluster.md).
//!
//! Every agent runs SWIM with the `foca` crate over UDP on its peer address (the port of the
//! gRPC listener): the `[peers]` of its configuration are seeds it announces itself to, other
//! members are learned from them. Every datagram is sealed with ChaCha20-Poly1305 under a key
//! derived from `tls_dir/cluster.key` ([`key`]); one that does not open is dropped and counted
//! (`ferry_cluster_bad_datagrams_total`). Each member gossips its [`MemberLoad`] every
//! [`LOAD_PERIOD`] as a foca custom broadcast. [`Cluster::view`] is the membership as this agent
//! sees it, which `ferry hosts` shows and the policy reads.

pub mod key;
pub mod load;
pub mod local;
mod run;
pub mod sim;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use key::{CLUSTER_KEY, ClusterKey, KeyError, Sealer};

use crate::daemon::NodeRef;

/// How often a member probes another (foca `probe_period`).
pub const PROBE_PERIOD: Duration = Duration::from_millis(1000);
/// How long a probe waits for the direct answer before asking others to probe (`probe_rtt`).
pub const PROBE_RTT: Duration = Duration::from_millis(300);
/// How long a suspect member has to refute the suspicion before it is down
/// (`suspect_to_down_after`).
pub const SUSPECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a member gossips its load.
pub const LOAD_PERIOD: Duration = Duration::from_secs(1);
/// How often members known down are announced to (a healed link or a restarted host rejoins),
/// and seeds that are not members are announced to again.
pub const REANNOUNCE_PERIOD: Duration = Duration::from_secs(2);
/// The largest plaintext foca makes (a sealed datagram adds [`key::OVERHEAD`] and the name).
pub const MAX_PACKET: usize = 1200;

/// What a member gossips about itself every [`LOAD_PERIOD`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberLoad {
    /// When it was sampled, milliseconds since the Unix epoch on the member's clock; a newer
    /// sample replaces an older one.
    pub seq: u64,
    /// CPUs.
    pub cpus: u32,
    /// Busy share of all CPUs over the last period, 0..1.
    pub cpu_busy: f64,
    /// Memory in use (total less available), bytes.
    pub mem_used: u64,
    /// Memory, bytes.
    pub mem_total: u64,
    /// Bytes received per second by every interface but `lo`.
    pub net_rx_bps: f64,
    /// Bytes sent per second by every interface but `lo`.
    pub net_tx_bps: f64,
    /// Managed processes running there (its own and those it hosts).
    pub managed: u32,
    /// Free capacity, 0..1: the smaller of the idle CPU share and the available memory share.
    pub free: f64,
    /// The XSAVE features of its CPU (what the migration negotiation compares).
    pub xsave_features: u64,
    /// Its kernel release (also compared by the negotiation).
    pub kernel: String,
    /// CPUs its managed processes use together (the policy's `cpu_measure = "managed"`).
    pub managed_cpu: f64,
}

/// A member's state as this agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Answers probes.
    Alive,
    /// Missed a probe; down unless it refutes within [`SUSPECT_TIMEOUT`].
    Suspect,
    /// Declared down (it rejoins with a new identity when it comes back).
    Down,
}

impl State {
    /// `alive`, `suspect` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Alive => "alive",
            State::Suspect => "suspect",
            State::Down => "down",
        }
    }
}

/// One member of [`View`].
#[derive(Debug, Clone)]
pub struct Member {
    /// Its name (its ferryd's `name`).
    pub name: String,
    /// Its peer address (UDP for gossip, TCP for gRPC).
    pub addr: SocketAddr,
    /// Alive, suspect or down.
    pub state: State,
    /// The newest load it gossiped, if one came.
    pub load: Option<MemberLoad>,
    /// Time since that load arrived (since its state last changed when none came).
    pub age: Duration,
    /// This agent itself.
    pub local: bool,
}

/// The membership as this agent sees it: itself first, then the others by name.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The members.
    pub members: Vec<Member>,
}

/// A member's identity in foca: its name, address, and a number that grows each time it
/// (re)joins, so a restarted or rejoining member replaces its previous self.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Id {
    /// The member's name.
    pub name: String,
    /// Its peer address.
    pub addr: SocketAddr,
    /// Milliseconds since the epoch at its start, plus one per rejoin; 0 for a seed not yet
    /// heard from.
    pub bump: u64,
}

impl foca::Identity for Id {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            name: self.name.clone(),
            addr: self.addr,
            bump: self.bump.wrapping_add(1).max(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// The cluster of one agent: what the gossip task learned, read by `ferry hosts`.
#[derive(Debug, Default)]
pub struct Cluster {
    shared: Arc<Mutex<Shared>>,
    bad: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Why membership does not run; `None` once it runs.
    off: Option<String>,
    running: bool,
    me: Option<Id>,
    /// By address: the member's identity, state, and when that state began.
    members: BTreeMap<SocketAddr, (Id, State, Instant)>,
    /// Newest load by member name, and when it arrived.
    loads: HashMap<String, (MemberLoad, Instant)>,
}

impl Cluster {
    /// Whether membership runs, or why not.
    pub fn status(&self) -> Result<(), String> {
        let s = self.lock();
        if s.running {
            Ok(())
        } else {
            Err(s
                .off
                .clone()
                .unwrap_or_else(|| "membership has not started".to_owned()))
        }
    }

    /// Datagrams dropped because they did not open under the cluster key or named another
    /// sender than the one inside.
    pub fn bad_datagrams(&self) -> u64 {
        self.bad.load(Ordering::Relaxed)
    }

    /// The members as this agent sees them now.
    pub fn view(&self) -> View {
        let s = self.lock();
        let now = Instant::now();
        let mut members = Vec::new();
        let load_of = |name: &str| s.loads.get(name).cloned();
        if let Some(me) = &s.me {
            let (load, age) = match load_of(&me.name) {
                Some((l, t)) => (Some(l), now.duration_since(t)),
                None => (None, Duration::ZERO),
            };
            members.push(Member {
                name: me.name.clone(),
                addr: me.addr,
                state: State::Alive,
                load,
                age,
                local: true,
            });
        }
        let mut others: Vec<Member> = s
            .members
            .values()
            // A seed never heard from (bump 0) is not a member.
            .filter(|(id, ..)| id.bump != 0)
            .map(|(id, state, since)| {
                let (load, age) = match load_of(&id.name) {
                    Some((l, t)) => (Some(l), now.duration_since(t)),
                    None => (None, now.duration_since(*since)),
                };
                Member {
                    name: id.name.clone(),
                    addr: id.addr,
                    state: *state,
                    load,
                    age,
                    local: false,
                }
            })
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name).then(a.addr.cmp(&b.addr)));
        members.extend(others);
        View { members }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_off(&self, why: String) {
        tracing::warn!("cluster membership is off: {why}");
        let mut s = self.lock();
        s.off = Some(why);
        s.running = false;
    }

    fn count_bad(&self) {
        self.bad.fetch_add(1, Ordering::Relaxed);
        crate::metrics::cluster_bad_datagram();
    }
}

/// Starts membership for `node` in the background: reads `tls_dir/cluster.key`, binds UDP on
/// the peer address and gossips until the agent stops. Without a key (or when the port cannot
/// be bound) the agent runs on without a cluster, and says why in its log and in `ferry hosts`.
pub fn start(node: NodeRef) {
    tokio::spawn(async move {
        if let Err(why) = run::run(node.clone()).await {
            node.cluster.set_off(why);
        }
    });
}
