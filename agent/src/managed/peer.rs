//! The peer API's managed-process calls: `Load`, `Managed`, `ProcStats`, `Hosting`, `Signal`.
//! The caller is a listed peer (checked by `PeerService::authorize`); the uid in a request is
//! the one its agent took from `SO_PEERCRED`, trusted as peers trust each other's agents.

use ferry_proto::v1::{
    HostingReply, HostingRequest, KillRequest, LimitsRequest, ListManagedReply, LoadReply,
    ManagedKillReply, ManagedKillRequest, ManagedLimitsRequest, ManagedProcess, ManagedRequest,
    ProcStat, ProcStatsReply, ProcStatsRequest, SignalReply, SignalRequest,
};
use tonic::Status;

use super::{Hosted, cgroup, load};
use crate::node::NodeRef;

/// `Load`.
pub async fn load(node: &NodeRef) -> LoadReply {
    load::host_load(&node.managed).await
}

/// `Managed`: the processes this host manages for the user.
pub async fn managed(node: &NodeRef, req: ManagedRequest) -> ListManagedReply {
    super::local::describe_all(node, req.uid, req.all).await
}

/// `ProcStats`.
pub fn proc_stats(node: &NodeRef, req: ProcStatsRequest) -> Result<ProcStatsReply, Status> {
    if req.pids.len() > 4096 {
        return Err(Status::invalid_argument("at most 4096 pids at once"));
    }
    Ok(ProcStatsReply {
        stats: req
            .pids
            .iter()
            .map(|&pid| ProcStat {
                away: node.relays.frozen_away(pid),
                ..load::proc_stat(&node.managed, pid)
            })
            .collect(),
    })
}

/// `Hosting`: the copy `req.pid` here is managed process `req.id` of the caller; its limits
/// apply here (cgroups `ferry/ID@THIS_HOST`, removed once it ends).
pub fn hosting(node: &NodeRef, peer: &str, req: HostingRequest) -> Result<HostingReply, Status> {
    let Some(stat) = super::proc_stat(req.pid) else {
        return Err(Status::not_found(format!("no process {}", req.pid)));
    };
    if req.id.is_empty() || req.id.len() > 32 || !req.id.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(Status::invalid_argument(format!(
            "bad managed process id {:?}",
            req.id
        )));
    }
    let limits = req.limits.unwrap_or_default();
    let had = node
        .managed
        .hosted_by_pid(req.pid)
        .is_some_and(|h| h.cgroup);
    let cgroup = limits.cpu_millis != 0 || limits.mem_bytes != 0 || had;
    if cgroup {
        cgroup::apply(&cgroup::name(&req.id, &node.config.name), req.pid, &limits)
            .map_err(|why| Status::failed_precondition(format!("limits of {}: {why}", req.id)))?;
    }
    let before = node.managed.hosted(&req.id).filter(|h| h.pid == req.pid);
    node.managed.host(Hosted {
        id: req.id.clone(),
        pid: req.pid,
        start_time: stat.start_time,
        owner_uid: req.owner_uid,
        cgroup,
        home: peer.to_string(),
        limits,
        checkpoint_every_ms: req.checkpoint_every_ms,
        replicas: req.replicas,
        replica_hosts: before
            .as_ref()
            .map(|h| h.replica_hosts.clone())
            .unwrap_or_default(),
        epoch: before.as_ref().map_or(0, |h| h.epoch),
        migration_id: req.migration_id.clone(),
    });
    tracing::info!(%peer, id = %req.id, pid = req.pid, ?limits, every_ms = req.checkpoint_every_ms, "hosting a managed process");
    if req.checkpoint_every_ms > 0 && before.is_none() {
        // Checkpointed here now (docs/cluster.md "Checkpoints and replicas").
        crate::replica::checkpoint::start_hosted(node, &req.id);
    }
    Ok(HostingReply {})
}

/// `Signal`: only to a managed process hosted here, of the user (or any, for root).
pub fn signal(node: &NodeRef, req: SignalRequest) -> Result<SignalReply, Status> {
    let h = node
        .managed
        .hosted_by_pid(req.pid)
        .filter(|h| req.root || h.owner_uid == req.uid)
        .ok_or_else(|| {
            Status::not_found(format!(
                "no managed process of yours runs here as pid {}",
                req.pid
            ))
        })?;
    let sig = nix::sys::signal::Signal::try_from(req.signal)
        .map_err(|_| Status::invalid_argument(format!("no signal {}", req.signal)))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(h.pid), sig)
        .map_err(|e| Status::internal(format!("kill {}: {e}", h.pid)))?;
    Ok(SignalReply {})
}

/// The user a peer acts for: the uid its agent took from `SO_PEERCRED` (root as uid 0).
fn user(uid: u32, root: bool) -> crate::transport::PeerCred {
    crate::transport::PeerCred {
        uid: if root { 0 } else { uid },
        gid: u32::MAX,
        pid: None,
    }
}

/// `ManagedKill`: `ferry kill` asked on the caller for a process this host manages.
pub async fn managed_kill(
    node: &NodeRef,
    req: ManagedKillRequest,
) -> Result<ManagedKillReply, Status> {
    let r = super::local::kill_here(
        node,
        user(req.uid, req.root),
        KillRequest {
            id: req.id,
            signal: req.signal,
        },
    )
    .await?;
    Ok(ManagedKillReply {
        host: r.host,
        pid: r.pid,
    })
}

/// `ManagedLimits`: `ferry limits` asked on the caller for a process this host manages.
pub async fn managed_limits(
    node: &NodeRef,
    req: ManagedLimitsRequest,
) -> Result<ManagedProcess, Status> {
    super::local::limits_here(
        node,
        user(req.uid, req.root),
        LimitsRequest {
            id: req.id,
            limits: req.limits,
        },
    )
    .await
}
