//! Transport: mutual TLS between agents under the cluster CA, and the local Unix socket.
//!
//! - Peer API: every agent serves over TLS and requires a client certificate of the cluster CA
//!   ([`tls::TlsMaterial::server_config`]); when it dials a peer it trusts only that CA and
//!   requires the server's certificate to name the peer ([`Connector::channel`]). Inside a
//!   handler, [`peer_name`] is the caller's verified name.
//! - Local API: a Unix socket that anyone may connect to; each request is authorized by the
//!   caller's `SO_PEERCRED` ([`caller`]).
//! - Both keep HTTP/2 keepalive at [`KEEPALIVE_INTERVAL`] / [`KEEPALIVE_TIMEOUT`], so a cut link
//!   is noticed in seconds.

pub mod ca;
pub mod local;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub use local::{PeerCred, caller};
pub use tls::{TlsConfigError, TlsMaterial};

/// HTTP/2 PING interval on every channel and server.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long an unanswered PING may wait before the connection counts as dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long opening a TCP connection to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `Connector::channel` failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The name is not in the `[peers]` table, nor a member learned by gossip.
    #[error(
        "unknown peer {name:?}: the [peers] table of the configuration does not name it, nor \
         is it a member of the cluster"
    )]
    UnknownPeer {
        /// The name asked for.
        name: String,
    },
    /// The configured address or the TLS settings were refused.
    #[error("cannot set up a channel to peer {name} at {addr}")]
    Endpoint {
        /// The peer.
        name: String,
        /// Its configured address.
        addr: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Opens mutually authenticated channels to the configured peers, by name. Channels are made
/// once per peer and shared (a tonic channel reconnects by itself).
pub struct Connector {
    tls: TlsMaterial,
    peers: BTreeMap<String, String>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Addresses of members learned by gossip that `[peers]` does not name.
    learned: Mutex<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector presenting `tls`'s certificate to the peers `name → addr:port`.
    pub fn new(tls: TlsMaterial, peers: BTreeMap<String, String>) -> Self {
        Self {
            tls,
            peers,
            channels: Mutex::new(HashMap::new()),
            learned: Mutex::new(BTreeMap::new()),
        }
    }

    /// The configured peers, `name → addr:port`.
    pub fn peers(&self) -> &BTreeMap<String, String> {
        &self.peers
    }

    /// Notes the address of member `name` as the cluster gossip gave it, for a member that
    /// `[peers]` does not name (a configured peer keeps its configured address). The server's
    /// certificate must still name `name`.
    pub fn learn(&self, name: &str, addr: &str) {
        if self.peers.contains_key(name) {
            return;
        }
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if learned.get(name).is_some_and(|a| a == addr) {
            return;
        }
        learned.insert(name.to_owned(), addr.to_owned());
        drop(learned);
        // A member back at another address: the next channel dials it there.
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// A channel to peer `name` (a configured peer, or a member learned by gossip): mutual TLS under the cluster CA, the server's certificate must
    /// name `name`, keepalive 1 s / 3 s. The connection is made lazily: a refused handshake or
    /// an unreachable peer shows as the first RPC's error.
    pub fn channel(&self, name: &str) -> Result<Channel, TransportError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(name) {
            return Ok(channel.clone());
        }
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        let addr = self
            .peers
            .get(name)
            .or_else(|| learned.get(name))
            .ok_or_else(|| TransportError::UnknownPeer {
                name: name.to_owned(),
            })?
            .clone();
        drop(learned);
        let addr = &addr;
        let endpoint_err = |source| TransportError::Endpoint {
            name: name.to_owned(),
            addr: addr.clone(),
            source,
        };
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(endpoint_err)?
            .tls_config(self.tls.client_config(name))
            .map_err(endpoint_err)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(name.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// The caller's name on the peer API: the DNS name in the subject alternative names of the
/// client certificate the TLS layer verified against the cluster CA. Fails with
/// `unauthenticated` when there is none (which the server's TLS config should already have
/// made impossible).
pub fn peer_name<T>(request: &Request<T>) -> Result<String, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    dns_name(leaf.as_ref()).ok_or_else(|| {
        Status::unauthenticated("the client certificate names no host (no DNS subject alt name)")
    })
}

/// The first DNS name among the subject alternative names of a DER certificate.
fn dns_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
        _ => None,
    })
}

/// A status's message followed by the causes it carries (a status made from a transport error
/// says only `transport error` or `tcp connect error`; the cause says `Connection refused (os
/// error 111)`), each said once.
pub fn status_detail(status: &Status) -> String {
    let mut msg = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = cause.source();
    }
    msg
}

/// Maps a library error to a gRPC status carrying its whole chain, outermost first.
pub fn internal_status(err: &(dyn std::error::Error + 'static)) -> Status {
    Status::internal(error_chain(err))
}

/// `err: cause: cause…`, each layer naming its step.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    msg
}
