//! The take-over (issue 13 item 3, interface (d); docs/cluster.md "Failover"): restores a
//! replicated process here from the newest complete checkpoint this host keeps, at a new
//! epoch, and registers it as a managed process of this host (same id), which checkpoints it
//! on and holds its lease from now on.

use std::fs::File;
use std::io::BufReader;
use std::os::fd::AsRawFd;

use ferry_proto::v1::{RelayCheckpoint, RelayEndpoint, RelayMovedRequest, RelayPosition};

use crate::image::ImageReader;
use crate::managed::Entry;
use crate::node::{NodeRef, now_ms, state_dir};
use crate::replica::{ReplicaMeta, image_path, newest};
use crate::restore::{PidNsMode, RestoreOptions};

/// Why a take-over failed (nothing runs here then).
#[derive(Debug, thiserror::Error)]
pub enum TakeOverError {
    /// No complete checkpoint of the process here.
    #[error("no complete checkpoint of {0} is kept here")]
    NoReplica(String),
    /// The replica key cannot be had.
    #[error(transparent)]
    Key(#[from] crate::replica::KeyError),
    /// The image cannot be read or restored.
    #[error("restore {id} from its checkpoint {seq}: {why}")]
    Restore {
        /// The process.
        id: String,
        /// The checkpoint.
        seq: u64,
        /// What failed.
        why: String,
    },
}

/// The seq of the newest complete checkpoint of `id` kept here (0: none).
pub fn newest_seq(id: &str) -> u64 {
    newest(&state_dir(), id).map_or(0, |m| m.seq)
}

/// Restores `id` here from its newest replica at `new_epoch` (its holder `lost` is down) and
/// registers it; returns its pid. Its stdout and stderr go to the job's output file here
/// (`ferry output ID` on this host), its stdin is `/dev/null`.
pub async fn take_over(
    node: NodeRef,
    id: &str,
    new_epoch: u64,
    lost: &str,
) -> Result<i32, TakeOverError> {
    let sd = state_dir();
    let meta = newest(&sd, id).ok_or_else(|| TakeOverError::NoReplica(id.to_string()))?;
    let key = crate::replica::open_key(&node)?;
    let path = image_path(&sd, id);
    let err = |why: String| TakeOverError::Restore {
        id: id.to_string(),
        seq: meta.seq,
        why,
    };
    if !meta.migration.is_empty() {
        return take_over_relayed(node, meta, key, new_epoch, lost).await;
    }
    // The image moves aside first: the next checkpoints (at the new epoch, from here) go to
    // other holders, and a second take-over must not find the same image.
    let started = std::time::Instant::now();
    let (pid, start_time) = tokio::task::spawn_blocking({
        let id = id.to_string();
        move || restore_here(&id, &path, &key)
    })
    .await
    .map_err(|e| err(e.to_string()))?
    .map_err(err)?;
    let restore_ms = started.elapsed().as_millis() as u64;
    let me = node.config.name.clone();
    let others: Vec<String> = meta
        .group
        .iter()
        .filter(|m| **m != me && *m != lost)
        .cloned()
        .collect();
    adopt(&node, &meta, pid, start_time, new_epoch, others, lost);
    crate::replica::checkpoint::start(&node, id);
    tracing::warn!(
        %id, pid, seq = meta.seq, new_epoch, %lost, restore_ms,
        "failover: restored from the newest checkpoint kept here"
    );
    Ok(pid)
}

/// The take-over of a job offloaded from its home (`meta.home`, where its stub is): the copy
/// is restored with its relayed stdio as relay ends (pipes, as a migration's destination
/// makes them), held for the home's relay of the same migration, hosted here for its home
/// (checkpointed on), and the home is told where it runs now (`Peer.RelayMoved`), until it
/// hears it.
async fn take_over_relayed(
    node: NodeRef,
    meta: ReplicaMeta,
    key: crate::image::seal::Key,
    new_epoch: u64,
    lost: &str,
) -> Result<i32, TakeOverError> {
    let id = meta.id.clone();
    let err = |why: String| TakeOverError::Restore {
        id: meta.id.clone(),
        seq: meta.seq,
        why,
    };
    let relays: Vec<RelayEndpoint> = meta
        .relays
        .iter()
        .map(|r| RelayEndpoint {
            channel: r.channel,
            kind: r.kind.clone(),
            fds: if r.fds.is_empty() {
                vec![r.fd]
            } else {
                r.fds.clone()
            },
            ..Default::default()
        })
        .collect();
    let path = image_path(&state_dir(), &id);
    let started = std::time::Instant::now();
    let (pid, start_time, endpoints) = tokio::task::spawn_blocking(move || {
        let endpoints =
            crate::relay::dest::Endpoints::make(&relays).map_err(|e| format!("{e:#}"))?;
        let subs = endpoints.substitutes();
        let (pid, st) = restore_with_subs(&path, &key, &subs)?;
        Ok::<_, String>((pid, st, endpoints))
    })
    .await
    .map_err(|e| err(e.to_string()))?
    .map_err(err)?;
    let restore_ms = started.elapsed().as_millis() as u64;
    let me = node.config.name.clone();
    let others: Vec<String> = meta
        .group
        .iter()
        .filter(|m| **m != me && *m != lost)
        .cloned()
        .collect();
    // The home's relay of the migration attaches to it here.
    node.relays.hold_dest(&meta.migration, pid, endpoints);
    let detail = format!(
        "failover: {lost} down; {id} restored from checkpoint {} (epoch {new_epoch}), relayed for {}",
        meta.seq, meta.home
    );
    set_done(&node, &meta.migration, &meta.home, pid, start_time, detail);
    let limits = ferry_proto::v1::Limits {
        cpu_millis: meta.limits.cpu_millis,
        mem_bytes: meta.limits.mem_bytes,
    };
    let cgroup = limits.cpu_millis != 0 || limits.mem_bytes != 0;
    if cgroup
        && let Err(why) =
            crate::managed::cgroup::apply(&crate::managed::cgroup::name(&id, &me), pid, &limits)
    {
        tracing::warn!(%id, "limits not applied after the failover: {why}");
    }
    node.managed.host(crate::managed::Hosted {
        id: id.clone(),
        pid,
        start_time,
        owner_uid: meta.uid,
        cgroup,
        home: meta.home.clone(),
        limits,
        checkpoint_every_ms: meta.every_ms,
        replicas: u32::try_from(others.len()).unwrap_or(0),
        replica_hosts: others,
        epoch: new_epoch,
        migration_id: meta.migration.clone(),
    });
    crate::replica::checkpoint::start_hosted(&node, &id);
    tracing::warn!(
        %id, pid, seq = meta.seq, new_epoch, %lost, restore_ms, home = %meta.home,
        "failover: restored from the newest checkpoint kept here; telling its home"
    );
    let req = RelayMovedRequest {
        migration_id: meta.migration.clone(),
        id: id.clone(),
        epoch: new_epoch,
        pid,
        checkpoint: Some(RelayCheckpoint {
            session: meta.relay_session,
            positions: meta
                .relays
                .iter()
                .map(|r| RelayPosition {
                    channel: r.channel,
                    consumed: r.consumed,
                    produced: r.produced,
                })
                .collect(),
            seq: meta.seq,
            epoch: meta.epoch,
            group: meta.group.clone(),
        }),
    };
    tokio::spawn(tell_home(node.clone(), meta.home.clone(), req));
    Ok(pid)
}

/// Tells `home` where its job runs now, until it acknowledges (or for 10 minutes).
async fn tell_home(node: NodeRef, home: String, req: RelayMovedRequest) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        let r = match node.peers.channel(&home) {
            Ok(ch) => crate::migrate::origin::peer_client(ch)
                .relay_moved(req.clone())
                .await
                .map(|_| ())
                .map_err(|s| s.message().to_string()),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(()) => {
                tracing::info!(id = %req.id, %home, "the home's relay follows the copy here");
                return;
            }
            Err(why) if std::time::Instant::now() < deadline => {
                tracing::info!(id = %req.id, %home, %why, "the home did not take the failover yet; retrying");
            }
            Err(why) => {
                tracing::warn!(id = %req.id, %home, %why, "the home never took the failover");
                return;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(2));
    }
}

/// Restores the checkpoint at `path` with `subs` in place of its descriptors (ferryd's
/// child, continued); gives its pid and start time.
fn restore_with_subs(
    path: &std::path::Path,
    key: &crate::image::seal::Key,
    subs: &[(i32, std::os::fd::RawFd)],
) -> Result<(i32, u64), String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = ImageReader::open_with_key(BufReader::with_capacity(1 << 20, file), Some(key))
        .map_err(|e| format!("{e:#}"))?;
    let opts = RestoreOptions {
        pid_ns: PidNsMode::Auto,
        inherit_stdio: false,
        stopped: false,
        // Ours to reap (the relay's reaper).
        as_child: true,
        check: Some(crate::verify::restore_check),
    };
    let summary = crate::restore::restore_with(reader, opts, subs).map_err(|e| format!("{e:#}"))?;
    // A checkpoint taken while the fence held it stopped restores it stopped (as below).
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(summary.pid),
        nix::sys::signal::Signal::SIGCONT,
    );
    let st = crate::managed::proc_stat(summary.pid).map_or(0, |s| s.start_time);
    Ok((summary.pid, st))
}

fn restore_here(
    id: &str,
    path: &std::path::Path,
    key: &crate::image::seal::Key,
) -> Result<(i32, u64), String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = ImageReader::open_with_key(BufReader::with_capacity(1 << 20, file), Some(key))
        .map_err(|e| format!("{e:#}"))?;
    let null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let out = crate::managed::output::create(id).map_err(|e| format!("output file: {e}"))?;
    let opts = RestoreOptions {
        pid_ns: PidNsMode::Auto,
        inherit_stdio: false,
        stopped: false,
        // Ours to reap.
        as_child: true,
        check: Some(crate::verify::restore_check),
    };
    let subs = [
        (0, null.as_raw_fd()),
        (1, out.as_raw_fd()),
        (2, out.as_raw_fd()),
    ];
    let summary =
        crate::restore::restore_with(reader, opts, &subs).map_err(|e| format!("{e:#}"))?;
    // A checkpoint taken while the fence held the process stopped restores it stopped: the
    // fence is the only one that stops a replicated process, and the copy here has its lease.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(summary.pid),
        nix::sys::signal::Signal::SIGCONT,
    );
    let st = crate::managed::proc_stat(summary.pid).map_or(0, |s| s.start_time);
    Ok((summary.pid, st))
}

/// Registers the restored copy under the same id as a job of this host, at `epoch`, and
/// starts its reaper.
fn adopt(
    node: &NodeRef,
    meta: &ReplicaMeta,
    pid: i32,
    start_time: u64,
    epoch: u64,
    replica_hosts: Vec<String>,
    lost: &str,
) {
    let e = Entry {
        id: meta.id.clone(),
        owner_uid: meta.uid,
        pid,
        start_time,
        command: meta.cmdline.clone(),
        started_unix_ms: now_ms(),
        cpu_millis: meta.limits.cpu_millis,
        mem_bytes: meta.limits.mem_bytes,
        detached: true,
        spawned: true,
        // No pipe: it writes into the output file itself.
        drained: true,
        migration_id: record(node, meta, pid, start_time, epoch, lost),
        // Checkpointed on as before: the same period and replica count (older metas carry
        // neither: then not checkpointed, and its group is the surviving members).
        checkpoint_every_ms: (meta.every_ms > 0).then_some(meta.every_ms),
        replicas: if meta.replicas > 0 {
            meta.replicas
        } else {
            u32::try_from(replica_hosts.len()).unwrap_or(0)
        },
        replica_hosts,
        epoch,
        ..Default::default()
    };
    node.managed.adopt(e);
    let (node, id) = (node.clone(), meta.id.clone());
    tokio::task::spawn_blocking(move || {
        let status = crate::sys::wait_exit(nix::unistd::Pid::from_raw(pid));
        let exit = match status {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Some((code, 0)),
            Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => Some((0, sig as i32)),
            _ => None,
        };
        node.managed.update(&id, |e| {
            if e.exit.is_none() && e.pid == pid {
                e.exit = exit;
                e.ended_unix_ms = now_ms();
            }
        });
    });
}

/// Notes the take-over in the migration records (`ferry migrations`): a destination record
/// `failover-ID-EPOCH`, done, with the reason `failover: HOST down`. Returns its id.
fn record(
    node: &NodeRef,
    meta: &ReplicaMeta,
    pid: i32,
    start_time: u64,
    epoch: u64,
    lost: &str,
) -> String {
    let id = format!("failover-{}-{epoch}", meta.id);
    let detail = format!(
        "failover: {lost} down; {} restored from checkpoint {} (epoch {epoch})",
        meta.id, meta.seq
    );
    set_done(node, &id, lost, pid, start_time, detail);
    id
}

/// Writes the destination record `migration` (from `peer`) of a take-over as done.
fn set_done(
    node: &NodeRef,
    migration: &str,
    peer: &str,
    pid: i32,
    start_time: u64,
    detail: String,
) {
    let mut rec = ferry_proto::v1::MigrationRecord {
        migration_id: migration.to_string(),
        peer: peer.to_string(),
        pid,
        start_time,
        ..Default::default()
    };
    if let Err(e) = node
        .store
        .set(&mut rec, crate::migrate::state::DestState::Done, detail)
    {
        tracing::warn!(%migration, %e, "cannot record the failover");
    }
}
