//! The agent's TOML configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `ferryd --config FILE`: exactly these keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This host's name; its certificate is `tls_dir/NAME.pem`.
    pub name: String,
    /// Peer gRPC address, e.g. `10.77.0.1:7411`.
    pub listen: String,
    /// Local Unix socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Holds `ca.pem`, `NAME.pem`, `NAME.key`.
    pub tls_dir: PathBuf,
    /// The other agents: name → `addr:port`.
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/ferry/ferryd.sock")
}
