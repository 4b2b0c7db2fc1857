//! Transport: mutual TLS between agents under the cluster CA, and the local Unix socket.

/// Opens mutually authenticated channels to the configured peers, by name.
#[derive(Debug, Default)]
pub struct Connector {}
