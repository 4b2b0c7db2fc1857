//! The take-over (docs/cluster.md "Failover"): restore a replicated process here from the
//! newest checkpoint kept here, at a new epoch.
//!
//! Stand-in until the replica store (`agent/src/replica/`) is merged: it reads the seq of
//! `$FERRY_STATE_DIR/replicas/<ID>/meta.json` and refuses the restore.

use crate::node::NodeRef;

/// Why a take-over failed.
#[derive(Debug, thiserror::Error)]
pub enum TakeOverError {
    /// No complete checkpoint of the process here.
    #[error("no complete checkpoint of {0} is kept here")]
    NoReplica(String),
}

/// The seq of the newest complete checkpoint of `id` kept here (0: none).
pub fn newest_seq(id: &str) -> u64 {
    let p = crate::node::state_dir().join("replicas").join(id).join("meta.json");
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("seq")?.as_u64())
        .unwrap_or(0)
}

/// Restores `id` here from its newest replica at `new_epoch` (the holder `lost` is down).
pub async fn take_over(_node: NodeRef, id: &str, _new_epoch: u64, _lost: &str) -> Result<i32, TakeOverError> {
    Err(TakeOverError::NoReplica(id.to_string()))
}
