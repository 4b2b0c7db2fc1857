//! Periodic checkpoints and their replicas (docs/cluster.md "Checkpoints and replicas").
//!
//! The host running a managed process started with `--checkpoint-every DUR --replicas K`
//! checkpoints it while it runs ([`checkpoint`]) and streams each checkpoint, sealed, to K
//! other members ([`holder`]), which keep only the newest complete one:
//!
//! ```text
//! $FERRY_STATE_DIR/replicas/<ID>/image      a complete sealed Ferry image
//! $FERRY_STATE_DIR/replicas/<ID>/meta.json  ReplicaMeta of that image
//! ```
//!
//! Both are written under a temporary name, synced and renamed (the image first, then its
//! meta, which names the image's size: a pair that does not match is not a checkpoint).
//! The key is derived from the cluster key ([`open_key`]), so a replica holder's disk does
//! not show the process's memory.

pub mod checkpoint;
pub mod holder;
pub mod merge;

pub(crate) use merge::push as merge_push;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::image::seal::Key;
use crate::node::NodeRef;

/// HKDF's `info` for the replica sealing key (salt: the cluster key's, `ferry cluster key v1`).
pub const KEY_INFO: &[u8] = b"ferry replica v1";

/// Where a relayed stream stood at the checkpoint: what the process had consumed of its
/// input and produced on its output, in bytes of the relay's channel (for the stdin replay
/// after a take-over).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayPos {
    /// The descriptor number in the process (its first, when it has several).
    pub fd: i32,
    /// Every descriptor number of it in the process.
    #[serde(default)]
    pub fds: Vec<i32>,
    /// Its relay kind (`read`, `write`).
    #[serde(default)]
    pub kind: String,
    /// The relay channel.
    pub channel: u32,
    /// Bytes the process had read from it.
    pub consumed: u64,
    /// Bytes it had written to it.
    pub produced: u64,
}

/// The limits of the process, as its home gave them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLimits {
    /// Thousandths of a CPU (0: none).
    pub cpu_millis: u64,
    /// Bytes (0: none).
    pub mem_bytes: u64,
}

/// What a replica holder knows of the checkpoint it keeps (`meta.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaMeta {
    /// The managed process's id (at its home).
    pub id: String,
    /// Its home (the agent that manages it).
    pub home: String,
    /// The host that ran it and took the checkpoint.
    pub host: String,
    /// Its epoch (raised by every take-over).
    pub epoch: u64,
    /// The checkpoint's number: 1, 2, … for one run of the process.
    pub seq: u64,
    /// When the process was stopped for it, ms since the epoch on `host`'s clock.
    pub taken_ms: u64,
    /// Bytes of the complete image.
    pub image_bytes: u64,
    /// The replica group: `host`, then the replica holders.
    pub group: Vec<String>,
    /// The relayed streams at the checkpoint.
    #[serde(default)]
    pub relays: Vec<RelayPos>,
    /// The migration whose relay serves its stdio (a job offloaded from `home`; empty: it ran
    /// at its home).
    #[serde(default)]
    pub migration: String,
    /// The relay session `relays` count in.
    #[serde(default)]
    pub relay_session: u64,
    /// The checkpoint period the process runs with, ms (a take-over checkpoints the restored
    /// copy on with it; 0: unknown, from an older agent).
    #[serde(default)]
    pub every_ms: u64,
    /// The command line.
    pub cmdline: String,
    /// The owner.
    pub uid: u32,
    /// Its limits.
    #[serde(default)]
    pub limits: ReplicaLimits,
    /// The checkpoint this one was sent as a delta on (0: it was sent complete).
    #[serde(default)]
    pub base_seq: u64,
    /// Bytes sent for it (the delta's, or the complete image's).
    #[serde(default)]
    pub sent_bytes: u64,
    /// How long the process was stopped for it, microseconds.
    #[serde(default)]
    pub stop_us: u64,
    /// How many replica holders it asks for.
    #[serde(default)]
    pub replicas: u32,
}

/// The directory of the replicas kept on this host.
pub fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("replicas")
}

/// The directory of process `id`'s replica. `id` must be a managed id (letters and digits):
/// anything else could name another directory.
pub fn dir(state_dir: &Path, id: &str) -> PathBuf {
    root(state_dir).join(id)
}

/// Whether `id` may name a replica directory.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The complete image of `id`'s newest checkpoint kept here.
pub fn image_path(state_dir: &Path, id: &str) -> PathBuf {
    dir(state_dir, id).join("image")
}

/// The meta of `id`'s newest complete checkpoint kept here, if there is one whose image is
/// there with the size the meta names.
pub fn newest(state_dir: &Path, id: &str) -> Option<ReplicaMeta> {
    if !valid_id(id) {
        return None;
    }
    let text = std::fs::read(dir(state_dir, id).join("meta.json")).ok()?;
    let meta: ReplicaMeta = serde_json::from_slice(&text).ok()?;
    let len = std::fs::metadata(image_path(state_dir, id)).ok()?.len();
    (meta.id == id && len == meta.image_bytes).then_some(meta)
}

/// Every replica kept here (ids with a complete checkpoint).
pub fn list(state_dir: &Path) -> Vec<ReplicaMeta> {
    let Ok(rd) = std::fs::read_dir(root(state_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<ReplicaMeta> = rd
        .flatten()
        .filter_map(|e| newest(state_dir, &e.file_name().to_string_lossy()))
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Why the replica key cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("the replica key: cluster key {path}: {why}")]
pub struct KeyError {
    /// The cluster key file.
    pub path: String,
    /// What is wrong.
    pub why: String,
}

/// The key replicas are sealed with, from the cluster key file at `path`: HKDF-SHA256 with
/// the cluster key's salt and the info [`KEY_INFO`].
pub fn key_from_cluster_key(path: &Path) -> Result<Key, KeyError> {
    let err = |why: String| KeyError {
        path: path.display().to_string(),
        why,
    };
    let ck = crate::cluster::ClusterKey::load(path).map_err(|e| err(format!("{e:#}")))?;
    derive(&ck).ok_or_else(|| err("not a key".into()))
}

fn derive(ck: &crate::cluster::ClusterKey) -> Option<Key> {
    let base = Key::parse(ck.to_text().as_bytes())?;
    Key::parse(&base.derive(crate::cluster::key::HKDF_SALT, KEY_INFO))
}

/// The cluster key file of this agent.
pub fn cluster_key_path(node: &NodeRef) -> PathBuf {
    node.config
        .cluster_key
        .clone()
        .unwrap_or_else(|| node.config.tls_dir.join(crate::cluster::CLUSTER_KEY))
}

/// The replica key of this agent (from its cluster key).
pub fn open_key(node: &NodeRef) -> Result<Key, KeyError> {
    key_from_cluster_key(&cluster_key_path(node))
}

/// Writes `bytes` to `path` through a temporary file in the same directory, synced, renamed.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_name(path);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// `.NAME.tmp` beside `path`.
pub(crate) fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Syncs a directory (after renames in it).
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replica_key_is_derived_apart_from_the_cluster_key() {
        let ck = crate::cluster::ClusterKey::generate().unwrap();
        let k = derive(&ck).unwrap();
        let again = derive(&crate::cluster::ClusterKey::parse(&ck.to_text()).unwrap()).unwrap();
        assert_eq!(k.derive(b"s", b"i"), again.derive(b"s", b"i"));
        let plain = Key::parse(ck.to_text().as_bytes()).unwrap();
        assert_ne!(plain.derive(b"s", b"i"), k.derive(b"s", b"i"));
    }

    #[test]
    fn newest_needs_a_matching_image() {
        let d = std::env::temp_dir().join(format!("ferry-replica-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(dir(&d, "ab12")).unwrap();
        let meta = ReplicaMeta {
            id: "ab12".into(),
            seq: 3,
            image_bytes: 5,
            ..Default::default()
        };
        write_durably(
            &dir(&d, "ab12").join("meta.json"),
            &serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        assert_eq!(newest(&d, "ab12"), None, "no image");
        write_durably(&image_path(&d, "ab12"), b"1234").unwrap();
        assert_eq!(newest(&d, "ab12"), None, "image of another size");
        write_durably(&image_path(&d, "ab12"), b"12345").unwrap();
        assert_eq!(newest(&d, "ab12"), Some(meta.clone()));
        assert_eq!(list(&d), vec![meta]);
        assert_eq!(newest(&d, "../x"), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
