//! The agent's side of leases (docs/cluster.md "Leases and fencing"): renewals over
//! `Peer.Lease`, fencing (freeze a replicated process without a majority, thaw it when one
//! grants again, kill it when a higher epoch shows), and the watch that starts a take-over
//! when a group's holder is down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_proto::v1::peer_client::PeerClient;
use ferry_proto::v1::{LeaseReply, LeaseRequest};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::Status;

use super::{Grant, Grantor, Holder, LeaseConfig, Refused, may_take_over};
use crate::cluster::State;
use crate::managed::{Entry, alive};
use crate::node::NodeRef;

/// How often the fence is checked.
pub const FENCE_PERIOD: Duration = Duration::from_millis(100);
/// How far ahead the fence looks: a process is frozen this long before its majority's grants
/// expire (a check period, and time for the signal).
pub const FENCE_AHEAD_MS: u64 = 200;

/// What a member knows of a replicated process's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Who runs it.
    pub holder: String,
    /// The holder, then its replica holders.
    pub group: Vec<String>,
    /// Its home.
    pub home: String,
    /// Its epoch.
    pub epoch: u64,
}

#[derive(Debug)]
struct Inner {
    grantor: Grantor,
    holder: Holder,
    /// Processes frozen by the fence: id → pid.
    fenced: BTreeMap<String, i32>,
    /// Groups learned from renewals (as a member) or run here (as the holder).
    known: BTreeMap<String, Known>,
    /// Take-overs under way here.
    taking: BTreeSet<String>,
    /// Ids whose copy here was discarded (a higher epoch runs elsewhere).
    discarded: BTreeSet<String>,
    /// Ids of which a checkpoint may be on a replica holder (one was sent, in this agent's
    /// life): only those can be restored elsewhere, so only those are fenced.
    armed: BTreeSet<String>,
    /// This agent's start, clock ticks after boot: a process started before it may have had
    /// checkpoints sent by the agent before, so it counts as armed.
    agent_start: u64,
}

/// The lease state of one agent.
#[derive(Debug)]
pub struct Leases {
    cfg: LeaseConfig,
    origin: Instant,
    inner: Mutex<Option<Inner>>,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            cfg: LeaseConfig::default(),
            origin: Instant::now(),
            inner: Mutex::new(None),
        }
    }
}

impl Leases {
    /// Milliseconds on this agent's monotonic clock.
    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// The configuration.
    pub fn config(&self) -> LeaseConfig {
        self.cfg
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Option<T> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.as_mut().map(f)
    }

    /// Whether the fence holds `id` frozen here.
    pub fn fenced(&self, id: &str) -> bool {
        self.with(|i| i.fenced.contains_key(id)).unwrap_or(false)
    }

    /// Notes that a checkpoint of `id` is about to be sent to its holders: from now on the
    /// fence holds it to its lease.
    pub fn arm(&self, id: &str) {
        self.with(|i| i.armed.insert(id.to_string()));
    }

    /// What this agent knows of `id`'s group.
    pub fn known(&self, id: &str) -> Option<Known> {
        self.with(|i| i.known.get(id).cloned()).flatten()
    }

    /// Notes that this host now runs `id` at `epoch` with `group` (after a take-over).
    pub fn now_holding(&self, id: &str, group: Vec<String>, home: &str, epoch: u64, me: &str) {
        self.with(|i| {
            i.holder.set_epoch(id, epoch);
            i.grantor.learn(id, me, epoch);
            i.discarded.remove(id);
            i.known.insert(
                id.to_string(),
                Known {
                    holder: me.to_string(),
                    group,
                    home: home.to_string(),
                    epoch,
                },
            );
        });
    }
}

/// The group of a replicated process running here: this host, then its replica holders.
pub fn group_of(me: &str, e: &Rep) -> Vec<String> {
    let mut g = vec![me.to_string()];
    for h in &e.replica_hosts {
        if !g.contains(h) {
            g.push(h.clone());
        }
    }
    g
}

/// A replicated process running here: a managed job of this host, or one hosted for its
/// home (offloaded here).
#[derive(Debug, Clone)]
pub struct Rep {
    /// The job's id.
    pub id: String,
    /// Its PID here.
    pub pid: i32,
    /// That PID's start time.
    pub start_time: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Its replica holders.
    pub replica_hosts: Vec<String>,
    /// Its home (this host for its own jobs).
    pub home: String,
    /// Hosted for `home`.
    pub hosted: bool,
}

impl Rep {
    fn of(e: &Entry, me: &str) -> Rep {
        Rep {
            id: e.id.clone(),
            pid: e.pid,
            start_time: e.start_time,
            epoch: e.epoch,
            replica_hosts: e.replica_hosts.clone(),
            home: me.to_string(),
            hosted: false,
        }
    }
}

/// The replicated processes running here (not discarded): those with replica holders.
fn replicated_here(node: &NodeRef) -> Vec<Rep> {
    let me = &node.config.name;
    let mut out: Vec<Rep> = node
        .managed
        .list(0, true)
        .into_iter()
        .filter(|e| {
            e.runs_on.is_empty()
                && e.exit.is_none()
                && e.replicas > 0
                && !e.replica_hosts.is_empty()
                && alive(e.pid, e.start_time)
        })
        .map(|e| Rep::of(&e, me))
        .collect();
    out.extend(
        node.managed
            .hosted_list()
            .into_iter()
            .filter(|h| h.replicas > 0 && !h.replica_hosts.is_empty() && alive(h.pid, h.start_time))
            .map(|h| Rep {
                id: h.id,
                pid: h.pid,
                start_time: h.start_time,
                epoch: h.epoch,
                replica_hosts: h.replica_hosts,
                home: h.home,
                hosted: true,
            }),
    );
    out
}

/// Starts the renewals, the fence and the take-over watch.
pub fn start(node: NodeRef) {
    let me = node.config.name.clone();
    {
        let l = &node.leases;
        let mut g = l.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g = Some(Inner {
            grantor: Grantor::new(l.cfg, &me, l.now()),
            holder: Holder::new(l.cfg, &me),
            fenced: BTreeMap::new(),
            known: BTreeMap::new(),
            taking: BTreeSet::new(),
            discarded: BTreeSet::new(),
            armed: BTreeSet::new(),
            agent_start: crate::managed::proc_stat(std::process::id() as i32)
                .map_or(0, |s| s.start_time),
        });
    }
    let n = node.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(n.leases.cfg.renew_every_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            renew_all(&n).await;
            watch(&n).await;
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FENCE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            fence(&node);
        }
    });
}

/// Asks `member` for `req`, within a renewal period.
async fn ask(node: &NodeRef, member: &str, req: LeaseRequest) -> Result<LeaseReply, String> {
    let channel = node.peers.channel(member).map_err(|e| e.to_string())?;
    let wait = Duration::from_millis(node.leases.cfg.renew_every_ms);
    match tokio::time::timeout(wait, PeerClient::new(channel).lease(req)).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(s.message().to_string()),
        Err(_) => Err(format!("no answer within {wait:?}")),
    }
}

/// One renewal round for every replicated process running here.
async fn renew_all(node: &NodeRef) {
    // Every process's renewal at once: a member that does not answer costs each of them one
    // wait, not one wait per process in turn (which would let the later ones' leases lapse).
    let renewals = replicated_here(node)
        .into_iter()
        .map(|e| {
            let node = node.clone();
            async move { renew(&node, e).await }
        })
        .collect();
    futures_join(renewals).await;
}

/// Renews the lease of one replicated process running here.
async fn renew(node: &NodeRef, e: Rep) {
    let me = node.config.name.clone();
    let group = group_of(&me, &e);
    let skip = node
        .leases
        .with(|i| {
            if i.discarded.contains(&e.id) {
                return true;
            }
            i.holder.set_epoch(&e.id, e.epoch);
            i.known.insert(
                e.id.clone(),
                Known {
                    holder: me.clone(),
                    group: group.clone(),
                    home: e.home.clone(),
                    epoch: e.epoch,
                },
            );
            false
        })
        .unwrap_or(true);
    if skip {
        return;
    }
    let sent = node.leases.now();
    // Whether this copy has held a majority at its epoch: the renewals commit it.
    let committed = node
        .leases
        .with(|i| i.holder.committed(&e.id, group.len(), sent))
        .unwrap_or(false);
    // Its own grant.
    let Some(own) = node
        .leases
        .with(|i| i.grantor.grant_as(&e.id, &me, e.epoch, committed, sent))
    else {
        return;
    };
    match own {
        Ok(g) => {
            node.leases.with(|i| i.holder.record(&me, &g, sent));
        }
        Err(r) => {
            if let Some(epoch) = r.stale_epoch() {
                discard(node, &e, epoch, &stale_holder(&r)).await;
                return;
            }
        }
    }
    let req = LeaseRequest {
        id: e.id.clone(),
        holder: me.clone(),
        epoch: e.epoch,
        group: group.clone(),
        home: e.home.clone(),
        query: false,
        committed,
    };
    let asks = group
        .iter()
        .filter(|m| **m != me)
        .map(|m| {
            let (n, req, m) = (node.clone(), req.clone(), m.clone());
            async move { (m.clone(), ask(&n, &m, req).await) }
        })
        .collect::<Vec<_>>();
    for (m, r) in futures_join(asks).await {
        match r {
            Ok(r) if r.granted => {
                let g = Grant {
                    id: e.id.clone(),
                    holder: me.clone(),
                    epoch: e.epoch,
                    member: m.clone(),
                };
                node.leases.with(|i| i.holder.record(&m, &g, sent));
            }
            // Only a member that saw a higher epoch committed makes this copy stale; any
            // other refusal is a missing grant (the fence counts the majority).
            Ok(r) if r.stale => {
                discard(node, &e, r.epoch, &r.holder).await;
                break;
            }
            Ok(r) => {
                tracing::debug!(id = %e.id, member = %m, refused = %r.refused, "lease refused")
            }
            Err(why) => tracing::debug!(id = %e.id, member = %m, %why, "lease not renewed"),
        }
    }
}

fn stale_holder(r: &Refused) -> String {
    match r {
        Refused::Stale { holder, .. } => holder.clone(),
        _ => String::new(),
    }
}

/// Runs the futures at once and returns their results in order.
async fn futures_join<F>(fs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// A higher epoch runs on `holder`: the copy here is killed (it is frozen, or about to be:
/// the kill comes first) and the registry notes where the process is.
async fn discard(node: &NodeRef, e: &Rep, epoch: u64, holder: &str) {
    node.leases.with(|i| {
        i.discarded.insert(e.id.clone());
        i.fenced.remove(&e.id);
        i.holder.forget(&e.id);
        i.grantor.learn(&e.id, holder, epoch);
    });
    if alive(e.pid, e.start_time) {
        let _ = kill(Pid::from_raw(e.pid), Signal::SIGKILL);
    }
    tracing::warn!(
        id = %e.id, pid = e.pid, epoch, %holder,
        "a copy of a higher epoch runs elsewhere: the stale copy here is discarded"
    );
    if e.hosted {
        // Its home follows the copy that runs (it heard of it from that member).
        node.managed.unhost(&e.id);
        return;
    }
    node.managed.update(&e.id, |x| {
        x.runs_on = holder.to_string();
        x.remote_pid = 0;
        x.epoch = epoch;
        x.migration_id = format!("failover-{}-{epoch}", e.id);
    });
}

/// The fence: freezes the replicated processes here that lost their majority, thaws those
/// that have it again.
fn fence(node: &NodeRef) {
    let now = node.leases.now();
    let me = node.config.name.clone();
    for e in replicated_here(node) {
        let group = group_of(&me, &e);
        let Some((ok, was)) = node.leases.with(|i| {
            if i.discarded.contains(&e.id) {
                return (false, true);
            }
            i.holder.set_epoch(&e.id, e.epoch);
            // No checkpoint of it can be anywhere else yet (none sent, never taken over,
            // started after this agent): no other member can restore it, so it runs whatever
            // the grants — a process is not frozen at the start because the group's agents
            // are still in their quiet time. Its first checkpoint waits for the majority.
            let unarmed = e.epoch == 0 && !i.armed.contains(&e.id) && e.start_time > i.agent_start;
            let ok = unarmed || i.holder.may_run(&e.id, group.len(), now + FENCE_AHEAD_MS);
            let was = i.fenced.contains_key(&e.id);
            if ok {
                i.fenced.remove(&e.id);
            } else {
                i.fenced.insert(e.id.clone(), e.pid);
            }
            (ok, was)
        }) else {
            continue;
        };
        let pid = Pid::from_raw(e.pid);
        if !ok {
            // Sent again every check: a stray SIGCONT thaws it for one period at most.
            let _ = kill(pid, Signal::SIGSTOP);
            if !was {
                tracing::warn!(id = %e.id, pid = e.pid, ?group, "no majority of the group grants the lease: frozen");
            }
        } else if was {
            let _ = kill(pid, Signal::SIGCONT);
            tracing::info!(id = %e.id, pid = e.pid, "the lease is renewed: thawed");
        }
    }
}

/// Whether a checkpoint of `id` may be sent now: it is not replicated (no lease), or this
/// host holds grants from a majority of its group (a checkpoint sent without them could be
/// restored elsewhere while this copy runs unfenced).
pub fn may_checkpoint(node: &NodeRef, id: &str) -> bool {
    let me = node.config.name.clone();
    let Some(e) = replicated_here(node).into_iter().find(|e| e.id == id) else {
        return true;
    };
    let group = group_of(&me, &e);
    let now = node.leases.now();
    node.leases
        .with(|i| {
            !i.discarded.contains(id)
                && !i.fenced.contains_key(id)
                && i.holder.may_run(id, group.len(), now + FENCE_AHEAD_MS)
        })
        .unwrap_or(false)
}

/// `Peer.Lease` on the member's side.
pub fn serve(node: &NodeRef, peer: &str, req: LeaseRequest) -> Result<LeaseReply, Status> {
    if req.id.is_empty() || req.id.len() > 64 || !req.id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(Status::invalid_argument(format!(
            "bad managed process id {:?}",
            req.id
        )));
    }
    if req.group.len() > 64 || !req.group.contains(&req.holder) {
        return Err(Status::invalid_argument(
            "a lease group names its holder and at most 64 members",
        ));
    }
    if req.holder != peer {
        return Err(Status::permission_denied(format!(
            "{peer} asked for a lease for {:?}",
            req.holder
        )));
    }
    let now = node.leases.now();
    let seq = replica_seq(&req.id);
    node.leases
        .with(|i| {
            let mut reply = LeaseReply {
                replica_seq: seq,
                ..Default::default()
            };
            if let Some(t) = i.grantor.top(&req.id) {
                reply.epoch = t.epoch;
                reply.holder = t.holder.clone();
            }
            if !req.query {
                match i
                    .grantor
                    .grant_as(&req.id, &req.holder, req.epoch, req.committed, now)
                {
                    Ok(_) => {
                        reply.granted = true;
                        // The group as its committed holder runs it (a take-over's tentative
                        // request does not replace it until the new holder commits).
                        if req.committed || !i.known.contains_key(&req.id) {
                            i.known.insert(
                                req.id.clone(),
                                Known {
                                    holder: req.holder.clone(),
                                    group: req.group.clone(),
                                    home: req.home.clone(),
                                    epoch: req.epoch,
                                },
                            );
                        }
                    }
                    Err(r) => {
                        if let Refused::Stale { epoch, holder, .. } = &r {
                            reply.stale = true;
                            reply.epoch = *epoch;
                            reply.holder = holder.clone();
                        }
                        reply.refused = r.to_string();
                    }
                }
            }
            reply.expired = i.grantor.expired(&req.id, now);
            reply
        })
        .ok_or_else(|| Status::unavailable("the agent is starting"))
}

/// The seq of the newest complete checkpoint of `id` kept here (0: none).
pub fn replica_seq(id: &str) -> u64 {
    super::takeover::newest_seq(id)
}

/// The take-over watch: for every group this member belongs to whose holder is down here and
/// whose lease expired here, the member with the newest checkpoint (highest seq, ties by
/// name) asks the others for the next epoch and, with a majority, restores the process.
async fn watch(node: &NodeRef) {
    let me = node.config.name.clone();
    let view = node.cluster.view();
    let state = |name: &str| {
        view.members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.state)
    };
    let now = node.leases.now();
    let groups: Vec<(String, Known)> = node
        .leases
        .with(|i| {
            i.known
                .iter()
                .filter(|(id, k)| {
                    k.holder != me
                        && k.group.contains(&me)
                        && !i.taking.contains(*id)
                        && i.grantor.expired(id, now)
                })
                .map(|(id, k)| (id.clone(), k.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (id, k) in groups {
        if state(&k.holder) != Some(State::Down) {
            continue;
        }
        let others: Vec<String> = k
            .group
            .iter()
            .filter(|m| **m != me && **m != k.holder && state(m) == Some(State::Alive))
            .cloned()
            .collect();
        // Who keeps the newest checkpoint (and the highest epoch any of them knows).
        let mut best = (replica_seq(&id), std::cmp::Reverse(me.clone()));
        // The epoch to ask for: above every epoch a member gave another candidate (or the one
        // it gave this member's own earlier attempt), above the group's committed one.
        let mut new_epoch = node
            .leases
            .with(|i| {
                i.grantor
                    .top(&id)
                    .map_or(0, |t| super::next_epoch(t.epoch, &t.holder, &me))
            })
            .unwrap_or(0)
            .max(k.epoch + 1);
        let query = LeaseRequest {
            id: id.clone(),
            holder: me.clone(),
            epoch: 0,
            group: k.group.clone(),
            home: k.home.clone(),
            query: true,
            committed: false,
        };
        for m in &others {
            if let Ok(r) = ask(node, m, query.clone()).await {
                if r.epoch > 0 || !r.holder.is_empty() {
                    new_epoch = new_epoch.max(super::next_epoch(r.epoch, &r.holder, &me));
                }
                best = best.max((r.replica_seq, std::cmp::Reverse(m.clone())));
            }
        }
        if best.1.0 != me || best.0 == 0 {
            continue;
        }
        let mut votes = 0;
        let sent = node.leases.now();
        let mut granted_by = Vec::new();
        if node
            .leases
            .with(|i| i.grantor.grant(&id, &me, new_epoch, sent).is_ok())
            .unwrap_or(false)
        {
            votes += 1;
            granted_by.push(me.clone());
        }
        for m in &others {
            let req = LeaseRequest {
                epoch: new_epoch,
                query: false,
                ..query.clone()
            };
            if let Ok(r) = ask(node, m, req).await
                && r.granted
            {
                votes += 1;
                granted_by.push(m.clone());
            }
        }
        if !may_take_over(votes, k.group.len()) {
            tracing::info!(%id, votes, group = ?k.group, "take-over: no majority yet");
            continue;
        }
        node.leases.with(|i| i.taking.insert(id.clone()));
        tracing::warn!(%id, holder = %k.holder, new_epoch, ?granted_by, "the holder is down and its lease expired: taking over");
        let n = node.clone();
        let (idc, k2) = (id.clone(), k.clone());
        let r = super::takeover::take_over(n.clone(), &idc, new_epoch, &k2.holder).await;
        match r {
            Ok(pid) => {
                let group: Vec<String> =
                    std::iter::once(me.clone()).chain(others.clone()).collect();
                n.leases.now_holding(&id, group, &k.home, new_epoch, &me);
                // The grants at the new epoch count for the holder from their request.
                n.leases.with(|i| {
                    for m in &granted_by {
                        let g = Grant {
                            id: id.clone(),
                            holder: me.clone(),
                            epoch: new_epoch,
                            member: m.clone(),
                        };
                        i.holder.record(m, &g, sent);
                    }
                });
                tracing::warn!(%id, pid, new_epoch, "taken over");
            }
            Err(e) => tracing::warn!(%id, "take-over failed: {e}"),
        }
        node.leases.with(|i| i.taking.remove(&id));
    }
}
