//! The gossip task: one foca instance driven by a UDP socket, timers and a load tick.

use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foca::{
    AccumulatingRuntime, Codec, Config, Foca, Invalidates, OwnedNotification, PostcardCodec,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::key::{ClusterKey, Sealer};
use super::load::Sampler;
use super::{
    CLUSTER_KEY, Cluster, Id, LOAD_PERIOD, MAX_PACKET, MemberLoad, PROBE_PERIOD, PROBE_RTT,
    REANNOUNCE_PERIOD, SUSPECT_TIMEOUT, Shared, State,
};
use crate::daemon::NodeRef;

/// The foca configuration of every agent (docs/cluster.md, "Failure detection").
pub fn foca_config() -> Config {
    Config {
        probe_period: PROBE_PERIOD,
        probe_rtt: PROBE_RTT,
        num_indirect_probes: NonZeroUsize::new(3).expect("3 > 0"),
        max_transmissions: NonZeroU8::new(6).expect("6 > 0"),
        suspect_to_down_after: SUSPECT_TIMEOUT,
        remove_down_after: Some(Duration::from_secs(24 * 3600)),
        max_packet_size: NonZeroUsize::new(MAX_PACKET).expect("> 0"),
        notify_down_members: true,
        periodic_announce: Some(foca::PeriodicParams {
            frequency: Duration::from_secs(10),
            num_members: NonZeroUsize::new(1).expect("1 > 0"),
        }),
        periodic_announce_to_down_members: Some(foca::PeriodicParams {
            frequency: REANNOUNCE_PERIOD,
            num_members: NonZeroUsize::new(3).expect("3 > 0"),
        }),
        periodic_gossip: Some(foca::PeriodicParams {
            frequency: Duration::from_millis(200),
            num_members: NonZeroUsize::new(3).expect("3 > 0"),
        }),
    }
}

/// A gossiped load: whose, and the sample.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LoadNote {
    pub(super) name: String,
    pub(super) load: MemberLoad,
}

/// A load note's key: a newer sample of the same member replaces an older one in foca's
/// dissemination backlog.
#[derive(Debug)]
pub struct LoadKey {
    name: String,
    seq: u64,
}

impl Invalidates for LoadKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.name == other.name && self.seq > other.seq
    }
}

/// A load note that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("undecodable load note: {0}")]
pub struct NoteError(String);

/// Keeps the newest load of each member in the shared state.
pub(super) struct LoadGossip {
    pub(super) shared: Arc<std::sync::Mutex<Shared>>,
    pub(super) me: String,
}

impl foca::BroadcastHandler<Id> for LoadGossip {
    type Key = LoadKey;
    type Error = NoteError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Id>,
    ) -> Result<Option<LoadKey>, NoteError> {
        let note: LoadNote = postcard::from_bytes(data).map_err(|e| NoteError(e.to_string()))?;
        // Our own notes come back through others: ours is set where it is made.
        if sender.is_some() && note.name == self.me {
            return Ok(None);
        }
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let newer = s
            .loads
            .get(&note.name)
            .is_none_or(|(old, _)| note.load.seq > old.seq);
        if !newer {
            return Ok(None);
        }
        let key = LoadKey {
            name: note.name.clone(),
            seq: note.load.seq,
        };
        s.loads.insert(note.name, (note.load, Instant::now()));
        Ok(Some(key))
    }
}

pub(super) type Swim = Foca<Id, PostcardCodec, StdRng, LoadGossip>;

/// Runs membership until the agent stops; an error says why it cannot run.
pub(super) async fn run(node: NodeRef) -> Result<(), String> {
    let config = &node.config;
    let cluster: &Cluster = &node.cluster;
    let key_path = config
        .cluster_key
        .clone()
        .unwrap_or_else(|| config.tls_dir.join(CLUSTER_KEY));
    let key = ClusterKey::load(&key_path).map_err(|e| {
        format!("{e:#} (`ferry ca init` makes cluster.key beside ca.pem; every agent needs the same one)")
    })?;
    let sealer = Sealer::new(&key);
    let addr = config
        .listen_addr()
        .map_err(|e| format!("listen {:?}: {e}", config.listen))?;
    if addr.ip().is_unspecified() {
        return Err(format!(
            "listen {addr} is not an address other members can reach"
        ));
    }
    let socket = UdpSocket::bind(addr)
        .await
        .map_err(|e| format!("bind UDP {addr}: {e}"))?;
    let mut swim = fresh(&config.name, addr, cluster)?;
    let me_name = config.name.clone();
    // Timers carry the generation of the foca instance that set them: a fresh instance (see
    // `start_over`) ignores its predecessor's.
    let mut generation = 0u64;
    let mut started_over = Instant::now();
    tracing::info!(%addr, seeds = ?config.peers.keys().collect::<Vec<_>>(), "cluster membership started");

    let (timer_tx, mut timer_rx) = mpsc::unbounded_channel();
    let mut rt = AccumulatingRuntime::new();
    let mut sampler = Sampler::default();
    let mut load_tick = tokio::time::interval(LOAD_PERIOD);
    let mut seed_tick = tokio::time::interval(REANNOUNCE_PERIOD);
    let mut buf = vec![0u8; 65536];
    loop {
        let result = tokio::select! {
            got = socket.recv_from(&mut buf) => match got {
                Ok((len, from)) => receive(&mut swim, &sealer, cluster, &mut buf[..len], from, &mut rt),
                Err(err) => {
                    tracing::debug!(%err, "cluster: receive");
                    Ok(())
                }
            },
            Some((g, timer)) = timer_rx.recv() => {
                if g == generation { swim.handle_timer(timer, &mut rt) } else { Ok(()) }
            }
            _ = load_tick.tick() => {
                let mut load = sampler.sample(node.managed.running_here());
                load.managed_cpu = crate::policy::usage::managed_cpu(&node.managed);
                // The handler keeps it as our newest load (sender None) and queues it.
                let note = LoadNote { name: me_name.clone(), load };
                match postcard::to_allocvec(&note) {
                    Ok(bytes) => swim.add_broadcast(&bytes).and_then(|_| swim.broadcast(&mut rt)),
                    Err(err) => {
                        tracing::warn!(%err, "cluster: encode the load");
                        Ok(())
                    }
                }
            }
            _ = seed_tick.tick() => {
                // Alone after having known others (a cut link, a partition): they have
                // declared us down, and we them, and down is final for an identity in SWIM.
                // Start over with a new identity and no stale knowledge, and announce it to
                // the seeds and to every member we knew.
                if swim.num_members() == 0
                    && swim.iter_membership_state().len() > 0
                    && started_over.elapsed() >= REANNOUNCE_PERIOD
                {
                    swim = fresh(&me_name, addr, cluster)?;
                    generation += 1;
                    started_over = Instant::now();
                    tracing::info!(bump = swim.identity().bump, "cluster: alone: rejoining with a new identity");
                }
                expire_stale_suspects(&mut swim, cluster, &mut rt)
                    .and(announce_to_seeds(&mut swim, &node, &mut rt).await)
            }
        };
        if let Err(err) = result {
            tracing::debug!(%err, "cluster: foca");
        }
        flush(&mut rt, &socket, &sealer, &me_name, &timer_tx, generation).await;
        // Our identity changes when we rejoin after being declared down.
        let current = swim.identity().clone();
        snapshot(cluster, &swim, &current);
    }
}

/// A new foca instance for this agent, with a new identity (the clock in ms: larger than any
/// earlier one of this agent, so it wins over them).
fn fresh(name: &str, addr: SocketAddr, cluster: &Cluster) -> Result<Swim, String> {
    let bump = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        .max(1);
    let me = Id {
        name: name.to_owned(),
        addr,
        bump,
    };
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| "the system random generator failed".to_owned())?;
    let handler = LoadGossip {
        shared: cluster.shared.clone(),
        me: name.to_owned(),
    };
    let swim = Foca::with_custom_broadcast(
        me.clone(),
        foca_config(),
        StdRng::from_seed(seed),
        PostcardCodec,
        handler,
    );
    let mut s = cluster.lock();
    s.me = Some(me);
    s.running = true;
    s.off = None;
    Ok(swim)
}

/// Opens a datagram and hands it to foca; counts it when it does not open or when the
/// sender it was sealed by is not the sender inside.
fn receive(
    swim: &mut Swim,
    sealer: &Sealer,
    cluster: &Cluster,
    datagram: &mut [u8],
    from: SocketAddr,
    rt: &mut AccumulatingRuntime<Id>,
) -> Result<(), foca::Error> {
    let Some((name, plain)) = sealer.open(datagram) else {
        tracing::debug!(%from, "cluster: dropped a datagram that does not open under the cluster key");
        cluster.count_bad();
        return Ok(());
    };
    let header: Result<foca::Header<Id>, _> = PostcardCodec.decode_header(plain);
    match header {
        Ok(h) if h.src.name == name => swim.handle_data(plain, rt),
        _ => {
            tracing::debug!(%from, %name, "cluster: dropped a datagram whose sender is not the one it was sealed by");
            cluster.count_bad();
            Ok(())
        }
    }
}

/// Declares down the members suspected for longer than their timeout allows. foca's
/// suspect-to-down timer is lost when this agent renews its identity (a rejoin resets its
/// timers), which would leave a suspicion standing forever; the member, told it is down,
/// rejoins with a new identity if it is alive.
fn expire_stale_suspects(
    swim: &mut Swim,
    cluster: &Cluster,
    rt: &mut AccumulatingRuntime<Id>,
) -> Result<(), foca::Error> {
    let limit = SUSPECT_TIMEOUT + 2 * PROBE_PERIOD;
    let stale: Vec<foca::Member<Id>> = {
        let s = cluster.lock();
        swim.iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .filter(|m| {
                s.members
                    .get(&m.id().addr)
                    .is_some_and(|(id, state, since)| {
                        id == m.id() && *state == State::Suspect && since.elapsed() > limit
                    })
            })
            .map(|m| foca::Member::down(m.id().clone()))
            .collect()
    };
    if stale.is_empty() {
        return Ok(());
    }
    for m in &stale {
        tracing::info!(member = %m.id().name, "cluster: suspected past its timeout: declaring it down");
    }
    swim.apply_many(stale.into_iter(), true, &mut *rt)
}

/// Announces this agent to every seed (`[peers]`) that is not an active member.
async fn announce_to_seeds(
    swim: &mut Swim,
    node: &NodeRef,
    rt: &mut AccumulatingRuntime<Id>,
) -> Result<(), foca::Error> {
    let active: Vec<SocketAddr> = swim.iter_members().map(|m| m.id().addr).collect();
    let own = swim.identity().addr;
    for (name, target) in &node.config.peers {
        let Ok(mut addrs) = tokio::net::lookup_host(target.as_str()).await else {
            continue;
        };
        let Some(addr) = addrs.next() else { continue };
        if addr == own || active.contains(&addr) {
            continue;
        }
        let seed = Id {
            name: name.clone(),
            addr,
            bump: 0,
        };
        swim.announce(seed, &mut *rt)?;
    }
    // Members we knew (learned, not seeds) that foca does not count active: a fresh instance
    // knows nothing of them.
    let known: Vec<Id> = {
        let s = node.cluster.lock();
        s.members.values().map(|(id, ..)| id.clone()).collect()
    };
    for id in known {
        if id.addr != own && !active.contains(&id.addr) && !node.config.peers.contains_key(&id.name)
        {
            swim.announce(id, &mut *rt)?;
        }
    }
    Ok(())
}

/// Sends what foca queued (sealed), schedules its timers.
async fn flush(
    rt: &mut AccumulatingRuntime<Id>,
    socket: &UdpSocket,
    sealer: &Sealer,
    me: &str,
    timers: &mpsc::UnboundedSender<(u64, foca::Timer<Id>)>,
    generation: u64,
) {
    while let Some((to, data)) = rt.to_send() {
        if let Some(sealed) = sealer.seal(me, &data)
            && let Err(err) = socket.send_to(&sealed, to.addr).await
        {
            tracing::debug!(%err, to = %to.addr, "cluster: send");
        }
    }
    while let Some((after, timer)) = rt.to_schedule() {
        let tx = timers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send((generation, timer));
        });
    }
    while let Some(n) = rt.to_notify() {
        match n {
            OwnedNotification::MemberUp(id) => {
                tracing::info!(member = %id.name, addr = %id.addr, "cluster: member up")
            }
            OwnedNotification::MemberDown(id) => {
                tracing::info!(member = %id.name, addr = %id.addr, "cluster: member down")
            }
            OwnedNotification::Rejoin(id) => tracing::info!(
                bump = id.bump,
                "cluster: rejoined after being declared down"
            ),
            OwnedNotification::Idle => tracing::info!("cluster: no other member is reachable"),
            OwnedNotification::Active => tracing::info!("cluster: connected"),
            OwnedNotification::Defunct => tracing::info!("cluster: declared down, cannot rejoin"),
            OwnedNotification::Rename(a, b) => {
                tracing::info!(member = %a.name, from = a.bump, to = b.bump, "cluster: member renamed")
            }
        }
    }
}

/// Copies foca's membership into the shared state, noting when each state began.
fn snapshot(cluster: &Cluster, swim: &Swim, me: &Id) {
    let mut s = cluster.lock();
    s.me = Some(me.clone());
    let now = Instant::now();
    let mut seen = Vec::new();
    for m in swim.iter_membership_state() {
        let state = match m.state() {
            foca::State::Alive => State::Alive,
            foca::State::Suspect => State::Suspect,
            foca::State::Down => State::Down,
        };
        let id = m.id().clone();
        seen.push(id.addr);
        match s.members.get_mut(&id.addr) {
            Some((old_id, old_state, since)) => {
                if *old_state != state || old_id.bump != id.bump {
                    *since = now;
                }
                *old_id = id;
                *old_state = state;
            }
            None => {
                s.members.insert(id.addr, (id, state, now));
            }
        }
    }
    // A member a fresh instance does not know (yet) stays, shown down.
    for (addr, (_, state, since)) in s.members.iter_mut() {
        if !seen.contains(addr) && *state != State::Down {
            *state = State::Down;
            *since = now;
        }
    }
}
