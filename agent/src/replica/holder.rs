//! The replica holder's side of `Peer.Replica`: receives a checkpoint (complete, or a delta
//! on the checkpoint it keeps), makes it a complete image, and keeps only the newest.

use std::io::Write as _;
use std::path::Path;

use ferry_proto::v1::{ReplicaChunk, ReplicaReply, replica_chunk};
use tonic::{Status, Streaming};

use super::{ReplicaMeta, dir, image_path, newest, sync_dir, tmp_name, valid_id, write_durably};
use crate::node::NodeRef;

/// Receives one checkpoint from `peer` (the host that took it).
pub async fn serve(
    node: &NodeRef,
    peer: &str,
    mut stream: Streaming<ReplicaChunk>,
) -> Result<ReplicaReply, Status> {
    let header = match stream.message().await?.and_then(|c| c.part) {
        Some(replica_chunk::Part::Header(h)) => h,
        _ => {
            return Err(Status::invalid_argument(
                "a replica stream begins with its header",
            ));
        }
    };
    let mut meta: ReplicaMeta = serde_json::from_str(&header.meta_json)
        .map_err(|e| Status::invalid_argument(format!("replica meta: {e}")))?;
    if !valid_id(&meta.id) {
        return Err(Status::invalid_argument(format!(
            "replica id {:?} is not a managed id",
            meta.id
        )));
    }
    if meta.host != peer {
        return Err(Status::permission_denied(format!(
            "{peer} sent a checkpoint taken by {:?}",
            meta.host
        )));
    }
    let key = super::open_key(node).map_err(|e| Status::failed_precondition(e.to_string()))?;
    let state_dir = crate::node::state_dir();
    let d = dir(&state_dir, &meta.id);
    std::fs::create_dir_all(&d).map_err(|e| Status::internal(format!("{}: {e}", d.display())))?;
    if let Some(cur) = newest(&state_dir, &meta.id)
        && cur.epoch > meta.epoch
    {
        return Err(Status::failed_precondition(format!(
            "replica {} is at epoch {}, this checkpoint of epoch {} is stale",
            meta.id, cur.epoch, meta.epoch
        )));
    }
    // The bytes as they come (sealed: the disk sees no memory), then checked and applied.
    let incoming = d.join(".incoming");
    let mut f = std::fs::File::create(&incoming)
        .map_err(|e| Status::internal(format!("{}: {e}", incoming.display())))?;
    let mut got: u64 = 0;
    while let Some(chunk) = stream.message().await? {
        if let Some(replica_chunk::Part::Data(b)) = chunk.part {
            got += b.len() as u64;
            f.write_all(&b)
                .map_err(|e| Status::internal(format!("{}: {e}", incoming.display())))?;
        }
    }
    if got != header.image_bytes {
        let _ = std::fs::remove_file(&incoming);
        return Err(Status::aborted(format!(
            "replica {}: {got} bytes arrived of {}",
            meta.id, header.image_bytes
        )));
    }
    let base_seq = header.base_seq;
    // The fsync and the merge off the runtime's threads: a replica holder answers lease
    // renewals meanwhile (a worker blocked in a long fsync under load would hold them up).
    let result = tokio::task::spawn_blocking(move || {
        if let Err(e) = f.sync_all() {
            let _ = std::fs::remove_file(&incoming);
            return Err(Status::internal(format!("{}: {e}", incoming.display())));
        }
        drop(f);
        let r = keep(&state_dir, &mut meta, base_seq, &incoming, &key);
        let _ = std::fs::remove_file(&incoming);
        r.map(|()| meta)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))??;
    tracing::info!(
        id = %result.id, seq = result.seq, base = base_seq, bytes = got,
        image = result.image_bytes, from = %peer, "replica kept"
    );
    Ok(ReplicaReply {
        seq: result.seq,
        image_bytes: result.image_bytes,
    })
}

/// Makes `incoming` the complete image of `meta` (applied on the kept one when it is a
/// delta on `base_seq`) and writes its meta.
fn keep(
    state_dir: &Path,
    meta: &mut ReplicaMeta,
    base_seq: u64,
    incoming: &Path,
    key: &crate::image::seal::Key,
) -> Result<(), Status> {
    let image = image_path(state_dir, &meta.id);
    let fresh = tmp_name(&image);
    if base_seq == 0 {
        // Complete: it must open under the key (header, key check, manifest).
        let f = std::fs::File::open(incoming).map_err(|e| Status::internal(e.to_string()))?;
        crate::image::ImageReader::open_with_key(std::io::BufReader::new(f), Some(key))
            .map_err(|e| Status::invalid_argument(format!("replica {}: {e:#}", meta.id)))?;
        std::fs::rename(incoming, &fresh).map_err(|e| Status::internal(e.to_string()))?;
    } else {
        match newest(state_dir, &meta.id) {
            Some(cur) if cur.seq == base_seq => {}
            other => {
                return Err(Status::failed_precondition(format!(
                    "replica {}: the delta is on checkpoint {base_seq}, this host keeps {}",
                    meta.id,
                    other.map_or("none".into(), |m| m.seq.to_string())
                )));
            }
        }
        super::merge::apply(&image, incoming, &fresh, key).map_err(|e| {
            let _ = std::fs::remove_file(&fresh);
            Status::failed_precondition(format!("replica {}: {e}", meta.id))
        })?;
    }
    meta.image_bytes = std::fs::metadata(&fresh)
        .map_err(|e| Status::internal(e.to_string()))?
        .len();
    std::fs::rename(&fresh, &image).map_err(|e| Status::internal(e.to_string()))?;
    let d = dir(state_dir, &meta.id);
    let json = serde_json::to_vec_pretty(meta).map_err(|e| Status::internal(e.to_string()))?;
    write_durably(&d.join("meta.json"), &json).map_err(|e| Status::internal(e.to_string()))?;
    sync_dir(&d).map_err(|e| Status::internal(e.to_string()))?;
    Ok(())
}
