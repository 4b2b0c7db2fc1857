//! The take-over (issue 13 item 3, interface (d); docs/cluster.md "Failover"): restores a
//! replicated process here from the newest complete checkpoint this host keeps, at a new
//! epoch, and registers it as a managed process of this host (same id), which checkpoints it
//! on and holds its lease from now on.

use std::fs::File;
use std::io::BufReader;
use std::os::fd::AsRawFd;

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
    let mut rec = ferry_proto::v1::MigrationRecord {
        migration_id: id.clone(),
        peer: lost.to_string(),
        pid,
        start_time,
        ..Default::default()
    };
    let detail = format!(
        "failover: {lost} down; {} restored from checkpoint {} (epoch {epoch})",
        meta.id, meta.seq
    );
    if let Err(e) = node
        .store
        .set(&mut rec, crate::migrate::state::DestState::Done, detail)
    {
        tracing::warn!(%id, %e, "cannot record the failover");
    }
    id
}
