//! The shared context of one running agent, below every service that uses it.
//!
//! Layering (docs/architecture.md, "Layers"): `node` is imported by `daemon`, `migrate`,
//! `relay`, `managed` and `web`, and imports none of their functions, only the types of the
//! state each keeps in the [`Node`]. `daemon` (the gRPC services and `serve`) is the top:
//! nothing imports it. `migrate` uses `relay`; `relay` uses neither `migrate` nor `daemon`.

pub mod access;
pub mod config;
pub mod db;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use access::authorize_migrate;
pub use config::Config;

use crate::transport::{Connector, TlsMaterial};

/// Everything one running agent shares between its services.
#[derive(Debug)]
pub struct Node {
    /// The configuration it was started with.
    pub config: Config,
    /// Connections to the other agents, by name.
    pub peers: crate::transport::Connector,
    /// The migration records (embedded transactional store).
    pub store: crate::migrate::records::Store,
    /// Copies restored on this host and held stopped until their origin commits.
    pub copies: crate::migrate::dest::Copies,
    /// Relays between stubs on this host and processes elsewhere, and the reverse.
    pub relays: crate::relay::Registry,
    /// Managed processes (`ferry run`, `ps` ...): those of this host, and those it hosts.
    pub managed: crate::managed::Managed,
    /// Web page logins: token hashes and sessions.
    pub web: crate::web::Auth,
    /// Cluster membership and load gossip (agent/src/cluster).
    pub cluster: crate::cluster::Cluster,
    /// Quorum leases of replicated processes (agent/src/lease).
    pub leases: crate::lease::run::Leases,
}

/// A shared handle to the node.
pub type NodeRef = Arc<Node>;

impl Node {
    /// The node for `config`, dialing peers with `tls`.
    pub fn new(config: Config, tls: TlsMaterial) -> Self {
        let peers = Connector::new(tls, config.peers.clone());
        Self {
            config,
            peers,
            store: Default::default(),
            copies: Default::default(),
            relays: Default::default(),
            managed: Default::default(),
            web: Default::default(),
            cluster: Default::default(),
            leases: Default::default(),
        }
    }
}

/// The directory of the agent's state: `$FERRY_STATE_DIR`, default `/var/lib/ferry`.
pub fn state_dir() -> PathBuf {
    match std::env::var_os("FERRY_STATE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/var/lib/ferry"),
    }
}

/// Milliseconds since the epoch, for the records' timestamps.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
