//! The TLS material of one agent: the cluster CA and this host's certificate and key, read from
//! fixed file names in `tls_dir` and checked before anything listens.
//!
//! ```text
//! tls_dir/ca.pem      the cluster CA's certificate (trust anchor for both directions)
//! tls_dir/NAME.pem    this host's certificate: SAN = NAME, server and client auth
//! tls_dir/NAME.key    its private key (PKCS#8 PEM, mode 0600)
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The CA certificate's file name in `tls_dir`.
pub const CA_CERT: &str = "ca.pem";

/// How long a TLS handshake may take: a client that stalls in it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS configuration cannot be used. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A required file does not exist.
    #[error("TLS file {} is missing", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A required file could not be read.
    #[error("cannot read TLS file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file does not hold the PEM block it must hold.
    #[error("TLS file {} holds no PEM {what}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What it should hold: "certificate" or "private key".
        what: &'static str,
    },
}

/// The three files of one agent, read and checked.
#[derive(Clone)]
pub struct TlsMaterial {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &format_args!("{} bytes", self.ca.len()))
            .field("cert", &format_args!("{} bytes", self.cert.len()))
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// The paths an agent named `name` needs in `dir`: CA certificate, own certificate, own key.
    pub fn required_files(dir: &Path, name: &str) -> [PathBuf; 3] {
        [
            dir.join(CA_CERT),
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        ]
    }

    /// Reads and checks the files of agent `name` in `dir`. Refuses a partial configuration
    /// (any file missing, unreadable or without its PEM block), naming the file.
    pub fn load(dir: &Path, name: &str) -> Result<Self, TlsConfigError> {
        let [ca_path, cert_path, key_path] = Self::required_files(dir, name);
        // Check all three exist first, so the message names the first missing one even when a
        // later one is also absent.
        for path in [&ca_path, &cert_path, &key_path] {
            if !path.exists() {
                return Err(TlsConfigError::Missing { path: path.clone() });
            }
        }
        let ca = read_pem(&ca_path, "CERTIFICATE", "certificate")?;
        let cert = read_pem(&cert_path, "CERTIFICATE", "certificate")?;
        let key = read_pem(&key_path, "PRIVATE KEY", "private key")?;
        Ok(Self { ca, cert, key })
    }

    /// The server side: present our certificate and require a client certificate signed by
    /// the cluster CA (`client_ca_root` makes it mandatory).
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The client side towards `peer`: present our certificate, trust only the cluster CA, and
    /// require the server's certificate to name `peer`.
    pub fn client_config(&self, peer: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(self.identity())
            .domain_name(peer)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key)
    }
}

/// Reads `path` and checks that it holds a PEM block whose label ends with `label`
/// (`PRIVATE KEY` also matches `EC PRIVATE KEY` and `RSA PRIVATE KEY`).
fn read_pem(path: &Path, label: &str, what: &'static str) -> Result<Vec<u8>, TlsConfigError> {
    let bytes = fs::read(path).map_err(|source| TlsConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text.lines().any(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|l| l.ends_with(label))
    });
    if !has_block {
        return Err(TlsConfigError::NotPem {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(bytes)
}
