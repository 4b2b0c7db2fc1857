//! The agent's TOML configuration.
//!
//! ```toml
//! name = "h1"                       # this host; its certificate is tls_dir/h1.pem
//! listen = "10.77.0.1:7411"         # peer API (mutual TLS)
//! socket = "/run/ferry/ferryd.sock" # local API (the default)
//! tls_dir = "/etc/ferry/tls"        # ca.pem, h1.pem, h1.key
//! web = "10.77.0.1:8443"            # the web page and /metrics (HTTPS); off when absent
//! cluster_key = "/etc/ferry/tls/cluster.key" # gossip key (the default: tls_dir/cluster.key)
//! policy = "/etc/ferry/policy.toml" # automatic migration (docs/cluster.md); off when absent
//!
//! [peers]
//! h2 = "10.77.0.2:7411"
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::transport::ca::valid_node_name;

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
    /// The web page and `/metrics` (HTTPS with this host's certificate): `addr:port`; none
    /// when absent.
    #[serde(default)]
    pub web: Option<String>,
    /// The cluster key sealing the membership gossip (docs/cluster.md); `tls_dir/cluster.key`
    /// when absent.
    #[serde(default)]
    pub cluster_key: Option<PathBuf>,
    /// The policy file (docs/cluster.md, "Policy"); no automatic migration when absent.
    #[serde(default)]
    pub policy: Option<PathBuf>,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/ferry/ferryd.sock")
}

/// `Config::load` failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    /// The file could not be read.
    #[error("read the configuration {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The TOML is malformed, has an unknown key or lacks a required one.
    #[error("parse the configuration {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why (with the line and column).
        #[source]
        source: toml::de::Error,
    },
    /// A value is not acceptable.
    #[error("configuration {}: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        problem: String,
    },
}

impl Config {
    /// Reads, parses and checks the configuration file at `path`. Relative paths inside it
    /// (`socket`, `tls_dir`) are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, LoadConfigError> {
        let text = fs::read_to_string(path).map_err(|source| LoadConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config =
            toml::from_str(&text).map_err(|source| LoadConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        config.check().map_err(|problem| LoadConfigError::Invalid {
            path: path.to_path_buf(),
            problem,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.socket = base.join(&config.socket);
        config.tls_dir = base.join(&config.tls_dir);
        config.cluster_key = config.cluster_key.as_ref().map(|k| base.join(k));
        config.policy = config.policy.as_ref().map(|k| base.join(k));
        Ok(config)
    }

    /// The listen address, checked by `load`.
    pub fn listen_addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        self.listen.parse()
    }

    /// The web listener's address, when configured (checked by `load`).
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_deref().and_then(|w| w.parse().ok())
    }

    fn check(&self) -> Result<(), String> {
        if !valid_node_name(&self.name) {
            return Err(format!(
                "name {:?} is not a host name (letters, digits, '-' and '.')",
                self.name
            ));
        }
        if self.listen_addr().is_err() {
            return Err(format!(
                "listen {:?} is not an address:port such as 10.77.0.1:7411",
                self.listen
            ));
        }
        if let Some(web) = &self.web {
            let addr: SocketAddr = web.parse().map_err(|_| {
                format!("web {web:?} is not an address:port such as 10.77.0.1:8443")
            })?;
            if self.listen_addr().is_ok_and(|l| l == addr) {
                return Err(format!("web {web:?} is the listen address of the peer API"));
            }
        }
        if self.socket.as_os_str().is_empty() {
            return Err("socket is empty".to_owned());
        }
        for (peer, addr) in &self.peers {
            if !valid_node_name(peer) {
                return Err(format!("[peers] {peer:?} is not a host name"));
            }
            if peer == &self.name {
                return Err(format!("[peers] names this host itself ({peer})"));
            }
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(format!(
                    "[peers] {peer} = {addr:?} is not an address:port such as 10.77.0.2:7411"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn full_and_defaults() {
        let c = parse(
            "name = \"h1\"\nlisten = \"10.77.0.1:7411\"\ntls_dir = \"/etc/ferry/tls\"\n\
             [peers]\nh2 = \"10.77.0.2:7411\"\n",
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/ferry/ferryd.sock"));
        assert_eq!(c.peers["h2"], "10.77.0.2:7411");
        assert_eq!(c.web, None);
        let c = parse(
            "name = \"h1\"\nlisten = \"10.77.0.1:7411\"\ntls_dir = \"t\"\nweb = \"10.77.0.1:8443\"\n",
        )
        .unwrap();
        assert_eq!(c.web_addr(), Some("10.77.0.1:8443".parse().unwrap()));
    }

    #[test]
    fn refuses_a_bad_web_address() {
        let base = "name = \"a\"\nlisten = \"127.0.0.1:7411\"\ntls_dir = \"t\"\n";
        let err = parse(&format!("{base}web = \"localhost\"\n")).unwrap_err();
        assert!(err.contains("web \"localhost\""), "{err}");
        let err = parse(&format!("{base}web = \"127.0.0.1:7411\"\n")).unwrap_err();
        assert!(err.contains("listen address"), "{err}");
    }

    #[test]
    fn refuses_unknown_missing_and_bad_values() {
        let base = "listen = \"127.0.0.1:1\"\ntls_dir = \"t\"\n";
        parse(&format!("name = \"a\"\n{base}extra = 1\n")).unwrap_err();
        parse(base).unwrap_err();
        parse(&format!("name = \"a/b\"\n{base}")).unwrap_err();
        parse("name = \"a\"\nlisten = \"nowhere\"\ntls_dir = \"t\"\n").unwrap_err();
        parse(&format!("name = \"a\"\n{base}[peers]\nb = \"10.0.0.1\"\n")).unwrap_err();
        parse(&format!(
            "name = \"a\"\n{base}[peers]\na = \"10.0.0.1:1\"\n"
        ))
        .unwrap_err();
    }
}
