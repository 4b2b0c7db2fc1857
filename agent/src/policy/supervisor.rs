//! The supervisor: every second, the policy's [`decide`](super::decide) on the gossiped view
//! of the members and the managed processes running here, and each decision carried out —
//! a managed live migration (`Offload`, as `ferry offload ID --to HOST`), or in a dry run a
//! record that says "would move". Each host decides only for the processes it runs: no
//! central store, no leader.
//!
//! Also, on every agent (with or without a policy): the members the gossip learned that
//! `[peers]` does not name are made dialable at their gossiped address.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ferry_proto::v1::migrate_event::Event;
use ferry_proto::v1::{Limits, LimitsRequest, MigrationRecord, OffloadRequest};
use tokio::sync::mpsc;

use super::{Decision, HostView, Memory, Policy, ProcView, decide};
use crate::cluster::State;
use crate::migrate::state::{OriginState, Role};
use crate::node::{NodeRef, now_ms};
use crate::transport::PeerCred;

/// How often the supervisor decides.
pub const PERIOD: Duration = Duration::from_secs(1);
/// A member's load older than this is not used (the member is not a destination).
pub const STALE_LOAD: Duration = Duration::from_secs(5);
/// The state text of a dry-run decision's record.
pub const WOULD_MOVE: &str = "would move";

/// The agent's own authority: the policy moves processes as root does.
const ROOT: PeerCred = PeerCred {
    uid: 0,
    gid: 0,
    pid: None,
};

/// Starts the address refresher, and the supervisor when the configuration names a policy.
pub fn start(node: NodeRef) {
    let n = node.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            learn_members(&n);
        }
    });
    if let Some(path) = node.config.policy.clone() {
        tokio::spawn(run(node, path));
    }
}

/// Makes the members the gossip knows dialable by name.
fn learn_members(node: &NodeRef) {
    for m in node.cluster.view().members {
        if !m.local {
            node.peers.learn(&m.name, &m.addr.to_string());
        }
    }
}

fn mtime(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The supervisor's loop: (re)reads the policy when the file changes, decides, acts.
async fn run(node: NodeRef, path: PathBuf) {
    let mut policy: Option<Policy> = None;
    let mut seen: Option<Option<SystemTime>> = None;
    let mut memory = Memory::default();
    let moving: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = mtime(&path);
        if seen != Some(m) {
            seen = Some(m);
            match Policy::load(&path) {
                Ok(p) => {
                    tracing::info!(path = %path.display(), dry_run = p.dry_run, "policy loaded");
                    policy = Some(p);
                    memory = Memory::default();
                }
                Err(e) => {
                    tracing::error!("{e}; no automatic migration until the file is fixed");
                    policy = None;
                }
            }
        }
        let Some(p) = &policy else { continue };
        if node.cluster.status().is_err() {
            continue;
        }
        let n = node.clone();
        let mv = moving.clone();
        let Ok((hosts, procs)) =
            tokio::task::spawn_blocking(move || (host_views(&n), proc_views(&n, &mv))).await
        else {
            continue;
        };
        enforce_quotas(&node, p).await;
        let decisions = decide(p, &node.config.name, &hosts, &procs, &mut memory, now_ms());
        for d in decisions {
            let Some(pv) = procs.iter().find(|v| v.id == d.id) else {
                continue;
            };
            carry_out(&node, d, pv.pid, &moving);
        }
    }
}

/// The members with a fresh load, as [`HostView`]s (this host first).
pub fn host_views(node: &NodeRef) -> Vec<HostView> {
    node.cluster
        .view()
        .members
        .into_iter()
        .filter_map(|m| {
            let l = m.load?;
            if !m.local && m.age > STALE_LOAD {
                return None;
            }
            Some(HostView {
                name: m.name,
                state: if m.local { State::Alive } else { m.state },
                cpus: l.cpus,
                cpu_busy: l.cpu_busy,
                mem_used: l.mem_used,
                mem_total: l.mem_total,
                managed: l.managed,
                managed_cpu: l.managed_cpu,
            })
        })
        .collect()
}

/// The managed processes whose home is this host and that run here, as [`ProcView`]s.
/// Processes hosted here for another home count in this host's load but are not the policy's
/// to move (a process moves from its home; docs/offload.md).
fn proc_views(node: &NodeRef, moving: &Mutex<BTreeSet<String>>) -> Vec<ProcView> {
    let moving = moving.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let me = std::process::id() as i32;
    super::usage::running(&node.managed)
        .into_iter()
        .filter(|(.., home)| *home)
        .filter(|(_, pid, ..)| *pid != me)
        .filter_map(|(id, pid, st, uid, _)| {
            let e = node.managed.get(&id, 0, true)?;
            let pinned = e.labels.iter().any(|l| l == super::PIN);
            Some(ProcView {
                cpu: super::usage::cpu_share(pid, st),
                mem: crate::managed::rss(pid),
                pinned,
                labels: e.labels,
                last_moved_ms: None,
                moving: moving.contains(&id),
                id,
                pid,
                uid,
            })
        })
        .collect()
}

/// Per-process quotas: a managed process of this host running here without a limit of a kind
/// the policy quotas gets the quota as its limit (as `ferry limits` sets it).
async fn enforce_quotas(node: &NodeRef, policy: &Policy) {
    if policy.process.cpu.is_none() && policy.process.memory.is_none() {
        return;
    }
    for e in node.managed.list(0, true) {
        if !e.runs_on.is_empty() || e.exit.is_some() || !crate::managed::alive(e.pid, e.start_time)
        {
            continue;
        }
        let cpu = match policy.process.cpu {
            Some(c) if e.cpu_millis == 0 => (c * 1000.0).round() as u64,
            _ => 0,
        };
        let mem = match policy.process.memory {
            Some(m) if e.mem_bytes == 0 => m,
            _ => 0,
        };
        if cpu == 0 && mem == 0 {
            continue;
        }
        let req = LimitsRequest {
            id: e.id.clone(),
            limits: Some(Limits {
                cpu_millis: cpu,
                mem_bytes: mem,
            }),
        };
        match crate::managed::local::limits_here(node, ROOT, req).await {
            Ok(_) => {
                tracing::info!(id = %e.id, cpu_millis = cpu, mem_bytes = mem, "policy: quota applied as limits")
            }
            Err(s) => {
                tracing::warn!(id = %e.id, error = %s.message(), "policy: cannot apply the quota")
            }
        }
    }
}

/// Logs decision `d` and carries it out: a dry run is recorded; a move runs in the background
/// (the process counts as moving until it ends).
fn carry_out(node: &NodeRef, d: Decision, pid: i32, moving: &Arc<Mutex<BTreeSet<String>>>) {
    if d.dry_run {
        tracing::info!(id = %d.id, to = %d.to, reason = %d.reason, "policy (dry run): would move");
        record_dry_run(node, &d, pid);
        return;
    }
    tracing::info!(id = %d.id, to = %d.to, reason = %d.reason, "policy: moving");
    moving
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(d.id.clone());
    let node = node.clone();
    let moving = moving.clone();
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::channel(64);
        let req = OffloadRequest {
            id: d.id.clone(),
            to: d.to.clone(),
            reason: d.reason.clone(),
            ..Default::default()
        };
        tokio::spawn(crate::managed::local::offload(node.clone(), ROOT, req, tx));
        while let Some(ev) = rx.recv().await {
            match ev {
                Ok(ev) => {
                    if let Some(Event::Done(sum)) = ev.event {
                        tracing::info!(id = %d.id, to = %d.to, migration = %sum.migration_id, pid = sum.remote_pid, reason = %d.reason, "policy: moved");
                    }
                }
                Err(s) => {
                    tracing::warn!(id = %d.id, to = %d.to, reason = %d.reason, error = %s.message(), "policy: the move failed; the process runs on here");
                }
            }
        }
        moving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&d.id);
    });
}

/// A dry-run decision's record: final (typed `aborted`: nothing was done), its state reading
/// "would move", with the reason.
fn record_dry_run(node: &NodeRef, d: &Decision, pid: i32) {
    let mut rec = MigrationRecord {
        migration_id: format!("dry-{}-{}", d.id, now_ms()),
        role: Role::Origin.as_str().into(),
        peer: d.to.clone(),
        pid,
        reason: d.reason.clone(),
        ..Default::default()
    };
    let detail = format!(
        "dry run: the policy would move {} (pid {pid}) to {}; nothing moved",
        d.id, d.to
    );
    let result = node
        .store
        .set(&mut rec, OriginState::Aborted, detail)
        .and_then(|()| {
            rec.state = WOULD_MOVE.into();
            node.store.put(&mut rec)
        });
    if let Err(e) = result {
        tracing::warn!(id = %d.id, error = %e, "policy: cannot record the dry-run decision");
    }
}
