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

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

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
    /// A file's PEM block does not decode to what it must hold.
    #[error("TLS file {} does not hold a usable {what}: {why}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What it should hold: "certificate" or "private key".
        what: &'static str,
        /// Why it cannot be used.
        why: String,
    },
    /// The key is not the certificate's.
    #[error("TLS key {} is not the key of the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
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
        // Decode each now, so that a damaged body is reported against its own file (the TLS
        // stack would only say the identity as a whole cannot be used).
        certificates(&ca_path, &ca)?;
        let chain = certificates(&cert_path, &cert)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key).map_err(|e| TlsConfigError::Invalid {
            path: key_path.clone(),
            what: "private key",
            why: e.to_string(),
        })?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| {
            TlsConfigError::Invalid {
                path: key_path.clone(),
                what: "private key",
                why: e.to_string(),
            }
        })?;
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
            certified.keys_match()
        {
            return Err(TlsConfigError::KeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        Ok(Self { ca, cert, key })
    }

    /// What is dubious but not fatal in the files of agent `name` in `dir` (already loaded):
    /// a key others may read, a certificate that does not name this host, one the cluster CA
    /// did not sign (or that is outside its validity period). One sentence each, for the log.
    pub fn warnings(&self, dir: &Path, name: &str) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let [ca_path, cert_path, key_path] = Self::required_files(dir, name);
        let mut out = Vec::new();
        if let Ok(meta) = fs::metadata(&key_path) {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o044 != 0 {
                out.push(format!(
                    "TLS key {} is readable by others (mode {mode:04o}): chmod 600 it",
                    key_path.display()
                ));
            }
        }
        let parse = |pem: &[u8]| -> Option<Vec<u8>> {
            let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
            Some(p.contents)
        };
        let (Some(cert_der), Some(ca_der)) = (parse(&self.cert), parse(&self.ca)) else {
            return out;
        };
        let (Ok((_, cert)), Ok((_, ca))) = (
            X509Certificate::from_der(&cert_der),
            X509Certificate::from_der(&ca_der),
        ) else {
            return out;
        };
        let names: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some((*d).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !names.iter().any(|n| n == name) {
            out.push(format!(
                "TLS certificate {} names {}, not this host {name}: peers dialing {name} will \
                 refuse it",
                cert_path.display(),
                if names.is_empty() {
                    "no host".to_string()
                } else {
                    names.join(", ")
                },
            ));
        }
        if cert.verify_signature(Some(ca.public_key())).is_err() {
            out.push(format!(
                "TLS certificate {} is not signed by the cluster CA {}: every peer will refuse \
                 this agent",
                cert_path.display(),
                ca_path.display()
            ));
        } else if !cert.validity().is_valid() {
            out.push(format!(
                "TLS certificate {} is outside its validity period ({} to {})",
                cert_path.display(),
                cert.validity().not_before,
                cert.validity().not_after
            ));
        }
        out
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

    /// The web page's server side: our certificate, no client certificate asked (browsers
    /// have none of the cluster's), HTTP/1.1.
    pub fn web_server_config(&self) -> Result<rustls::ServerConfig, rustls::Error> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key)
    }
}

/// The DER certificates of the PEM file `path`: at least one, each an X.509 certificate.
fn certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let invalid = |why: String| TlsConfigError::Invalid {
        path: path.to_path_buf(),
        what: "certificate",
        why,
    };
    let mut out = Vec::new();
    for pem in CertificateDer::pem_slice_iter(bytes) {
        let der = pem.map_err(|e| invalid(e.to_string()))?;
        X509Certificate::from_der(der.as_ref()).map_err(|e| invalid(e.to_string()))?;
        out.push(der);
    }
    if out.is_empty() {
        return Err(invalid("no certificate in it".into()));
    }
    Ok(out)
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
