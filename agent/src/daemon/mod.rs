//! `ferryd`, the agent every host runs: the local API on a Unix socket (the `ferry` command of
//! this host) and the peer API over mutual TLS (the agents of the other hosts).

pub mod config;
pub mod local;
pub mod peer;

use std::sync::Arc;

pub use config::Config;

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
}

/// A shared handle to the node.
pub type NodeRef = Arc<Node>;
