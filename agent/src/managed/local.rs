//! The local API's managed-process calls (`Register`, `Spawn`, `Offload`, `Exited`,
//! `ListManaged`, `Output`, `Kill`, `Limits`), for the caller `SO_PEERCRED` names.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_proto::v1::migrate_event::Event;
use ferry_proto::v1::peer_client::PeerClient;
use ferry_proto::v1::{
    ExitedReply, ExitedRequest, HostingRequest, KillReply, KillRequest, Limits, LimitsRequest,
    ListManagedReply, ManagedKillRequest, ManagedLimitsRequest, ManagedProcess, ManagedRequest,
    MigrateEvent, MigrateRequest, OffloadRequest, OutputChunk, OutputRequest, ProcStatsRequest,
    RegisterRequest, SignalRequest, SpawnRequest,
};
use tokio::sync::mpsc;
use tonic::Status;

use super::{Entry, cgroup, load, output};
use crate::node::NodeRef;
use crate::node::now_ms;
use crate::transport::PeerCred;

/// How long a peer may take to answer a `ps`.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often `output --follow` looks for more.
const FOLLOW_PERIOD: Duration = Duration::from_millis(100);
/// The most bytes one output chunk carries.
const CHUNK: usize = 1 << 20;

fn not_found(id: &str) -> Status {
    Status::not_found(format!("no managed process {id:?} of yours on this host"))
}

/// The entry `id` of the caller (root: anyone's), or `not found` (also when it is another
/// user's: its existence is not told).
fn entry(node: &NodeRef, caller: PeerCred, id: &str) -> Result<Entry, Status> {
    node.managed
        .get(id, caller.uid, caller.is_root())
        .ok_or_else(|| not_found(id))
}

fn check_limits(l: &Limits) -> Result<(), Status> {
    if l.mem_bytes != 0 && l.mem_bytes < (1 << 20) {
        return Err(Status::invalid_argument(format!(
            "memory limit {} bytes: below the least that makes sense (1 MiB)",
            l.mem_bytes
        )));
    }
    if l.cpu_millis != 0 && l.cpu_millis < 10 {
        return Err(Status::invalid_argument(format!(
            "CPU limit {} thousandths of a CPU: below the least the scheduler keeps (0.01)",
            l.cpu_millis
        )));
    }
    Ok(())
}

/// Applies the entry's limits here when it has any (or had: `made` says cgroups exist).
fn apply_local(node: &NodeRef, e: &Entry) -> Result<bool, Status> {
    if e.cpu_millis == 0 && e.mem_bytes == 0 && !e.cgroup {
        return Ok(false);
    }
    cgroup::apply(&cgroup::name(&e.id, &node.config.name), e.pid, &e.limits())
        .map_err(|why| Status::failed_precondition(format!("limits of {}: {why}", e.id)))?;
    Ok(true)
}

/// `Register`: a process of the caller's (its child, for `ferry run`, or any of its
/// processes, for `ferry offload PID`) becomes managed.
pub fn register(
    node: &NodeRef,
    caller: PeerCred,
    req: RegisterRequest,
) -> Result<ManagedProcess, Status> {
    crate::node::authorize_migrate(caller, req.pid)?;
    let limits = req.limits.unwrap_or_default();
    check_limits(&limits)?;
    crate::policy::check_labels(&req.labels).map_err(Status::invalid_argument)?;
    let stat = super::proc_stat(req.pid)
        .ok_or_else(|| Status::not_found(format!("no process {}", req.pid)))?;
    if let Some(other) = node
        .managed
        .list(0, true)
        .into_iter()
        .find(|e| e.pid == req.pid && e.start_time == stat.start_time && e.exit.is_none())
    {
        return Err(Status::already_exists(format!(
            "pid {} is managed already, as {}",
            req.pid, other.id
        )));
    }
    let owner_uid = if caller.is_root() {
        // Root registers processes as their owner's.
        proc_uid(req.pid).unwrap_or(0)
    } else {
        caller.uid
    };
    let e = node.managed.insert(Entry {
        owner_uid,
        pid: req.pid,
        start_time: stat.start_time,
        command: super::cmdline(req.pid),
        started_unix_ms: now_ms(),
        cpu_millis: limits.cpu_millis,
        mem_bytes: limits.mem_bytes,
        attached: req.attached,
        checkpoint_every_ms: (req.checkpoint_every_ms > 0).then_some(req.checkpoint_every_ms),
        replicas: req.replicas,
        labels: req.labels.clone(),
        ..Default::default()
    });
    if let Err(s) = apply_local(node, &e) {
        node.managed.remove(&e.id);
        return Err(s);
    }
    let e = if e.cpu_millis != 0 || e.mem_bytes != 0 {
        node.managed.update(&e.id, |e| e.cgroup = true).unwrap_or(e)
    } else {
        e
    };
    tracing::info!(id = %e.id, pid = e.pid, uid = e.owner_uid, "managed process registered");
    crate::replica::checkpoint::start(node, &e.id);
    Ok(describe_local(node, &e))
}

fn proc_uid(pid: i32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// `Spawn`: starts `argv` for the caller, detached, as its uid and gid (no supplementary
/// groups), in its directory with its environment; stdin is `/dev/null`, stdout and stderr
/// the output file. This agent is its parent and records how it ends.
pub fn spawn(
    node: &NodeRef,
    caller: PeerCred,
    req: SpawnRequest,
) -> Result<ManagedProcess, Status> {
    use std::os::unix::process::CommandExt;
    let limits = req.limits.unwrap_or_default();
    check_limits(&limits)?;
    crate::policy::check_labels(&req.labels).map_err(Status::invalid_argument)?;
    let (program, args) = req
        .argv
        .split_first()
        .ok_or_else(|| Status::invalid_argument("no command to run"))?;
    if req.cwd.is_empty() || !req.cwd.starts_with('/') {
        return Err(Status::invalid_argument(format!(
            "the working directory {:?} is not an absolute path",
            req.cwd
        )));
    }
    // A relative path with a slash is the caller's: relative to its directory.
    let program = if program.contains('/') && !program.starts_with('/') {
        format!("{}/{program}", req.cwd)
    } else {
        program.clone()
    };
    // Reserve the id first: it names the output file.
    let e = node.managed.insert(Entry {
        owner_uid: caller.uid,
        command: req.argv.join(" "),
        started_unix_ms: now_ms(),
        cpu_millis: limits.cpu_millis,
        mem_bytes: limits.mem_bytes,
        detached: true,
        spawned: true,
        checkpoint_every_ms: (req.checkpoint_every_ms > 0).then_some(req.checkpoint_every_ms),
        replicas: req.replicas,
        labels: req.labels.clone(),
        ..Default::default()
    });
    let fail = |s: Status| {
        node.managed.remove(&e.id);
        let _ = std::fs::remove_file(output::path(&e.id));
        s
    };
    let file = output::create(&e.id)
        .map_err(|err| fail(Status::internal(format!("make the output file: {err}"))))?;
    // A pipe, not the file itself: a migration relays a pipe (the destination gives the copy
    // a pipe of its own), while it restores a file at the same path on the destination.
    let (rd, out) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|err| fail(Status::internal(format!("make the output pipe: {err}"))))?;
    let err_out = out
        .try_clone()
        .map_err(|err| fail(Status::internal(format!("output pipe: {err}"))))?;
    output::drain(node.clone(), e.id.clone(), rd, file);
    let mut cmd = std::process::Command::new(&program);
    cmd.args(args)
        .env_clear()
        .current_dir(&req.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err_out)
        .process_group(0);
    for kv in &req.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    if !caller.is_root() {
        cmd.uid(caller.uid).gid(caller.gid);
    }
    let child = cmd.spawn().map_err(|err| {
        fail(Status::failed_precondition(format!(
            "cannot start {program:?} in {}: {err}",
            req.cwd
        )))
    })?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    let start_time = super::proc_stat(pid).map_or(0, |s| s.start_time);
    let e = node
        .managed
        .update(&e.id, |e| {
            e.pid = pid;
            e.start_time = start_time;
        })
        .unwrap_or(e);
    // The reaper: the exit status of the process (or, once it moved, of its stub, which ends
    // as the process did).
    let n = node.clone();
    let id = e.id.clone();
    tokio::task::spawn_blocking(move || {
        let status = crate::sys::wait_exit(nix::unistd::Pid::from_raw(pid));
        drop(child);
        let exit = match status {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Some((code, 0)),
            Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => Some((0, sig as i32)),
            _ => None,
        };
        n.managed.update(&id, |e| {
            if e.exit.is_none() {
                e.exit = exit;
            }
            e.ended_unix_ms = now_ms();
        });
        tracing::info!(%id, ?exit, "managed process ended");
    });
    if let Err(s) = apply_local(node, &e) {
        // Limits that cannot be applied: the process is not left running without them.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        return Err(s);
    }
    let e = if e.cpu_millis != 0 || e.mem_bytes != 0 {
        node.managed.update(&e.id, |e| e.cgroup = true).unwrap_or(e)
    } else {
        e
    };
    tracing::info!(id = %e.id, pid, uid = caller.uid, command = %e.command, "managed process started");
    crate::replica::checkpoint::start(node, &e.id);
    Ok(describe_local(node, &e))
}

/// `Offload`: moves managed process `id` to `to` (or the peer `--auto` picks) by the ordinary
/// migration, then tells the destination it hosts it (with its limits).
pub async fn offload(
    node: NodeRef,
    caller: PeerCred,
    req: OffloadRequest,
    tx: mpsc::Sender<Result<MigrateEvent, Status>>,
) {
    let result = offload_inner(&node, caller, req, &tx).await;
    if let Err(s) = result {
        let _ = tx.send(Err(s)).await;
    }
}

async fn offload_inner(
    node: &NodeRef,
    caller: PeerCred,
    req: OffloadRequest,
    tx: &mpsc::Sender<Result<MigrateEvent, Status>>,
) -> Result<(), Status> {
    let e = entry(node, caller, &req.id)?;
    if req.checkpoint_every_ms > 0 {
        // Kept with the job; the host it moves to takes them (`Hosting`).
        node.managed.update(&e.id, |x| {
            x.checkpoint_every_ms = Some(req.checkpoint_every_ms);
            x.replicas = req.replicas;
        });
    }
    if e.exit.is_some() || !super::alive(e.pid, e.start_time) {
        return Err(Status::failed_precondition(format!(
            "{} has ended: nothing to move",
            e.id
        )));
    }
    if !e.runs_on.is_empty() {
        return Err(Status::failed_precondition(format!(
            "{} runs on {} already (pid {}); it moves from its home host only once",
            e.id, e.runs_on, e.remote_pid
        )));
    }
    let to = if req.auto {
        load::pick(node, &e.limits())
            .await
            .map_err(Status::unavailable)?
    } else if req.to.is_empty() {
        return Err(Status::invalid_argument(
            "no destination: name a host or ask for auto",
        ));
    } else {
        req.to.clone()
    };
    let (mtx, mut mrx) = mpsc::channel(64);
    let as_user = (!caller.is_root()).then_some(caller);
    tokio::spawn(crate::migrate::origin::migrate(
        node.clone(),
        MigrateRequest {
            pid: e.pid,
            to: to.clone(),
            compress: if req.compress.is_empty() {
                "auto".into()
            } else {
                req.compress.clone()
            },
            reason: req.reason.clone(),
            ..Default::default()
        },
        as_user,
        mtx,
    ));
    while let Some(ev) = mrx.recv().await {
        if let Ok(MigrateEvent {
            event: Some(Event::Done(sum)),
        }) = &ev
        {
            let e = node
                .managed
                .update(&e.id, |e| {
                    e.runs_on = to.clone();
                    e.remote_pid = sum.remote_pid;
                    e.migration_id = sum.migration_id.clone();
                })
                .unwrap_or_else(|| e.clone());
            tracing::info!(id = %e.id, %to, pid = sum.remote_pid, "managed process moved");
            // Its load changed: the next `--auto` asks again.
            node.managed
                .load_cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&to);
            hosting(node, &e).await?;
        }
        if tx.send(ev).await.is_err() {
            // The client went away: the migration goes on regardless.
            continue;
        }
    }
    Ok(())
}

/// Tells the host where `e` runs that it hosts it, with its limits (applied there).
async fn hosting(node: &NodeRef, e: &Entry) -> Result<(), Status> {
    let channel = node
        .peers
        .channel(&e.runs_on)
        .map_err(|err| Status::unavailable(err.to_string()))?;
    PeerClient::new(channel)
        .hosting(HostingRequest {
            id: e.id.clone(),
            pid: e.remote_pid,
            limits: Some(e.limits()),
            owner_uid: e.owner_uid,
            checkpoint_every_ms: e.checkpoint_every_ms.unwrap_or(0),
            replicas: e.replicas,
            migration_id: e.migration_id.clone(),
        })
        .await
        .map_err(|s| {
            Status::new(
                s.code(),
                format!("{} on {}: {}", e.id, e.runs_on, s.message()),
            )
        })?;
    Ok(())
}

/// `Exited`: the caller's child `id` ended.
pub fn exited(node: &NodeRef, caller: PeerCred, req: ExitedRequest) -> Result<ExitedReply, Status> {
    entry(node, caller, &req.id)?;
    node.managed.update(&req.id, |e| {
        if e.exit.is_none() {
            e.exit = Some((req.code, req.signal));
        }
        if e.ended_unix_ms == 0 {
            e.ended_unix_ms = now_ms();
        }
    });
    Ok(ExitedReply {})
}

/// A managed process of this host as `ps` shows it, when it runs here (or ended).
fn describe_local(node: &NodeRef, e: &Entry) -> ManagedProcess {
    let me = &node.config.name;
    let mut p = skeleton(node, e);
    if let Some(status) = ended(node, e) {
        p.status = status;
        return p;
    }
    if !e.runs_on.is_empty() {
        return p;
    }
    let s = load::proc_stat(&node.managed, e.pid);
    if !super::alive(e.pid, e.start_time) {
        p.status = "lost".into();
        p.pid = 0;
    } else {
        p.status = if node.leases.fenced(&e.id) {
            "fenced"
        } else if s.frozen {
            "frozen"
        } else {
            "running"
        }
        .into();
        p.curr_cpu = s.cpu;
        p.curr_mem = s.mem;
    }
    p.host = me.clone();
    p
}

fn skeleton(node: &NodeRef, e: &Entry) -> ManagedProcess {
    let end = if e.ended_unix_ms != 0 {
        e.ended_unix_ms
    } else {
        now_ms()
    };
    let (host, pid) = where_now(node, e);
    ManagedProcess {
        id: e.id.clone(),
        pid,
        host,
        status: String::new(),
        limits: Some(e.limits()),
        curr_cpu: 0.0,
        curr_mem: 0,
        uptime_s: end.saturating_sub(e.started_unix_ms) / 1000,
        command: e.command.clone(),
        owner_uid: e.owner_uid,
        home: node.config.name.clone(),
        detached: e.detached,
    }
}

/// Where `e` runs now: this host, or the last host along its migrations (the origin's record
/// follows it when it moves on) and its PID there.
fn where_now(node: &NodeRef, e: &Entry) -> (String, i32) {
    if e.runs_on.is_empty() {
        return (node.config.name.clone(), e.pid);
    }
    if let Ok(Some(rec)) = node.store.get(&e.migration_id)
        && !rec.moved_to.is_empty()
    {
        return (rec.moved_to, rec.moved_pid);
    }
    (e.runs_on.clone(), e.remote_pid)
}

/// The status of `e` if it ended: its own record, else the migration record's.
fn ended(node: &NodeRef, e: &Entry) -> Option<String> {
    if let Some((code, sig)) = e.exit {
        return Some(super::exit_text(code, sig));
    }
    if e.migration_id.is_empty() {
        return None;
    }
    let rec = node.store.get(&e.migration_id).ok().flatten()?;
    match rec.state.as_str() {
        "ended" if rec.exit_known => Some(super::exit_text(rec.exit_code, rec.exit_signal)),
        "ended" | "lost" => Some("lost".into()),
        _ => None,
    }
}

/// The managed processes of this host that `uid` may see, with their current state (asking
/// the hosts where they run).
pub async fn describe_all(node: &NodeRef, uid: u32, root: bool) -> ListManagedReply {
    let entries = node.managed.list(uid, root);
    let mut remote: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for e in &entries {
        let p = describe_local(node, e);
        if p.status.is_empty() {
            remote.entry(p.host.clone()).or_default().push(p.pid);
            pending.push(p);
        } else {
            out.push(p);
        }
    }
    let answers = load::futures_join(remote.into_iter().map(|(host, pids)| async move {
        let r = async {
            let channel = node.peers.channel(&host).map_err(|e| e.to_string())?;
            tokio::time::timeout(
                PEER_TIMEOUT,
                PeerClient::new(channel).proc_stats(ProcStatsRequest { pids }),
            )
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|s| s.message().to_string())
            .map(|r| r.into_inner().stats)
        }
        .await;
        (host, r)
    }))
    .await;
    let answers: BTreeMap<String, _> = answers.into_iter().collect();
    for mut p in pending {
        match answers.get(&p.host) {
            Some(Ok(stats)) => match stats.iter().find(|s| s.pid == p.pid) {
                Some(s) if s.alive => {
                    p.status = super::away::status(s.frozen, s.away).into();
                    p.curr_cpu = s.cpu;
                    p.curr_mem = s.mem;
                }
                // Ended there, and the status has not come back (yet).
                _ => p.status = "lost".into(),
            },
            _ => p.status = format!("unknown ({} unreachable)", p.host),
        }
        out.push(p);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    ListManagedReply {
        processes: out,
        unreachable: Vec::new(),
    }
}

/// `ListManaged`: this host's and every peer's managed processes of the caller.
pub async fn list(node: &NodeRef, caller: PeerCred) -> ListManagedReply {
    let mut reply = describe_all(node, caller.uid, caller.is_root()).await;
    let names: Vec<String> = node.peers.peers().keys().cloned().collect();
    let answers = load::futures_join(names.into_iter().map(|name| async move {
        let r = async {
            let channel = node.peers.channel(&name).map_err(|e| e.to_string())?;
            tokio::time::timeout(
                PEER_TIMEOUT,
                PeerClient::new(channel).managed(ManagedRequest {
                    uid: caller.uid,
                    all: caller.is_root(),
                }),
            )
            .await
            .map_err(|_| format!("no answer within {PEER_TIMEOUT:?}"))?
            .map_err(|s| s.message().to_string())
            .map(|r| r.into_inner())
        }
        .await;
        (name, r)
    }))
    .await;
    let mut away = Vec::new();
    for (name, r) in answers {
        match r {
            Ok(more) => reply.processes.extend(more.processes),
            Err(why) => {
                reply.unreachable.push(format!("{name}: {why}"));
                away.push(name);
            }
        }
    }
    // What runs here for a home out of reach (its client is away, say).
    reply.processes.extend(super::away::hosted_for(
        node,
        caller.uid,
        caller.is_root(),
        &away,
    ));
    reply
}

/// The peer that manages `id` for the caller, asked when this host does not (`Managed`).
async fn home_of(node: &NodeRef, caller: PeerCred, id: &str) -> Option<String> {
    list(node, caller)
        .await
        .processes
        .into_iter()
        .find(|p| p.id == id && p.home != node.config.name)
        .map(|p| p.home)
}

/// `Kill` for a process another host manages: forwarded to that host.
pub async fn kill(node: &NodeRef, caller: PeerCred, req: KillRequest) -> Result<KillReply, Status> {
    if node
        .managed
        .get(&req.id, caller.uid, caller.is_root())
        .is_none()
        && let Some(home) = home_of(node, caller, &req.id).await
    {
        let channel = node
            .peers
            .channel(&home)
            .map_err(|err| Status::unavailable(err.to_string()))?;
        let r = PeerClient::new(channel)
            .managed_kill(ManagedKillRequest {
                id: req.id.clone(),
                signal: req.signal,
                uid: caller.uid,
                root: caller.is_root(),
            })
            .await
            .map_err(|s| Status::new(s.code(), format!("{home}: {}", s.message())))?
            .into_inner();
        return Ok(KillReply {
            host: r.host,
            pid: r.pid,
        });
    }
    kill_here(node, caller, req).await
}

/// `Kill`: a signal to managed process `id` of this host, where it runs.
pub async fn kill_here(
    node: &NodeRef,
    caller: PeerCred,
    req: KillRequest,
) -> Result<KillReply, Status> {
    let e = entry(node, caller, &req.id)?;
    let sig = nix::sys::signal::Signal::try_from(req.signal)
        .map_err(|_| Status::invalid_argument(format!("no signal {}", req.signal)))?;
    if ended(node, &e).is_some() {
        return Err(Status::failed_precondition(format!("{} has ended", e.id)));
    }
    let (host, pid) = where_now(node, &e);
    if e.runs_on.is_empty() {
        if !super::alive(e.pid, e.start_time) {
            return Err(Status::failed_precondition(format!("{} has ended", e.id)));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(e.pid), sig)
            .map_err(|err| Status::internal(format!("kill {}: {err}", e.pid)))?;
    } else {
        let channel = node
            .peers
            .channel(&host)
            .map_err(|err| Status::unavailable(err.to_string()))?;
        PeerClient::new(channel)
            .signal(SignalRequest {
                pid,
                signal: req.signal,
                uid: caller.uid,
                root: caller.is_root(),
            })
            .await
            .map_err(|s| Status::new(s.code(), format!("{host}: {}", s.message())))?;
    }
    tracing::info!(id = %e.id, %host, pid, signal = %sig, uid = caller.uid, "managed process signalled");
    Ok(KillReply { host, pid })
}

/// `Limits`, forwarded to the host that manages `id` when this one does not.
pub async fn limits(
    node: &NodeRef,
    caller: PeerCred,
    req: LimitsRequest,
) -> Result<ManagedProcess, Status> {
    if node
        .managed
        .get(&req.id, caller.uid, caller.is_root())
        .is_none()
        && let Some(home) = home_of(node, caller, &req.id).await
    {
        let channel = node
            .peers
            .channel(&home)
            .map_err(|err| Status::unavailable(err.to_string()))?;
        return PeerClient::new(channel)
            .managed_limits(ManagedLimitsRequest {
                id: req.id.clone(),
                limits: req.limits,
                uid: caller.uid,
                root: caller.is_root(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Status::new(s.code(), format!("{home}: {}", s.message())));
    }
    limits_here(node, caller, req).await
}

/// `Limits`: changes the limits of `id` of this host (fields left 0 keep their value) where
/// it runs.
pub async fn limits_here(
    node: &NodeRef,
    caller: PeerCred,
    req: LimitsRequest,
) -> Result<ManagedProcess, Status> {
    let e = entry(node, caller, &req.id)?;
    let l = req.limits.unwrap_or_default();
    check_limits(&l)?;
    if ended(node, &e).is_some() {
        return Err(Status::failed_precondition(format!("{} has ended", e.id)));
    }
    let mut new = e.clone();
    if l.cpu_millis != 0 {
        new.cpu_millis = l.cpu_millis;
    }
    if l.mem_bytes != 0 {
        new.mem_bytes = l.mem_bytes;
    }
    if new.runs_on.is_empty() {
        apply_local(node, &new)?;
        new.cgroup = true;
    } else {
        hosting(node, &new).await?;
    }
    let e = node
        .managed
        .update(&e.id, |x| {
            x.cpu_millis = new.cpu_millis;
            x.mem_bytes = new.mem_bytes;
            x.cgroup = new.cgroup;
        })
        .unwrap_or(new);
    Ok(describe_all(node, caller.uid, caller.is_root())
        .await
        .processes
        .into_iter()
        .find(|p| p.id == e.id)
        .unwrap_or_else(|| describe_local(node, &e)))
}

/// `Output`: what detached process `id` wrote, from the first byte kept; with `follow`, then
/// what it writes until it ends. Once a finished process's output was read to its end it is
/// forgotten (entry and file).
pub async fn output(
    node: NodeRef,
    caller: PeerCred,
    req: OutputRequest,
    tx: mpsc::Sender<Result<OutputChunk, Status>>,
) {
    let e = match entry(&node, caller, &req.id) {
        Ok(e) => e,
        Err(s) => {
            let _ = tx.send(Err(s)).await;
            return;
        }
    };
    let finished = |node: &NodeRef| {
        node.managed.get(&e.id, 0, true).is_none_or(|x| {
            ended(node, &x).is_some()
                && !super::alive(x.pid, x.start_time)
                && (!x.detached || x.drained)
        })
    };
    if !e.detached {
        // Its output went to the terminal of `ferry run`: nothing is kept.
        if finished(&node) {
            node.managed.remove(&e.id);
        }
        let _ = tx
            .send(Err(Status::failed_precondition(format!(
                "{} was not started with --detach: its output went to the terminal of `ferry \
                 run`, nothing is kept{}",
                e.id,
                if finished(&node) {
                    " (it has ended: forgotten now)"
                } else {
                    ""
                }
            ))))
            .await;
        return;
    }
    // The bound holds for what is read, even before the janitor's next round.
    output::trim(&output::path(&e.id), output::cap());
    let mut pos = 0u64;
    loop {
        // Whether it had ended before this read: then the read sees everything.
        let done = finished(&node);
        let piece = match output::read(&e.id, pos, CHUNK) {
            Ok(p) => p,
            Err(err) => {
                let _ = tx
                    .send(Err(Status::internal(format!(
                        "read the output of {}: {err}",
                        e.id
                    ))))
                    .await;
                return;
            }
        };
        let note = if piece.dropped > 0 {
            format!(
                "{} bytes of older output were dropped (the last {} MiB are kept)",
                piece.dropped,
                output::cap() >> 20
            )
        } else {
            String::new()
        };
        let got = piece.data.len();
        pos = piece.next;
        if (got > 0 || !note.is_empty())
            && tx
                .send(Ok(OutputChunk {
                    data: piece.data,
                    note,
                }))
                .await
                .is_err()
        {
            return;
        }
        if got == CHUNK {
            continue;
        }
        if done {
            node.managed.remove(&e.id);
            let _ = std::fs::remove_file(output::path(&e.id));
            tracing::info!(id = %e.id, "finished managed process read and forgotten");
            return;
        }
        if !req.follow {
            return;
        }
        tokio::time::sleep(FOLLOW_PERIOD).await;
    }
}
