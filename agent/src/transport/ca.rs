//! The cluster CA: one self-signed CA per cluster, and one certificate per node signed by it
//! whose only subject alternative name is the node's name and which serves for both server and
//! client authentication (every agent is both).
//!
//! Files in the CA directory: `ca.pem`, `ca.key`, `cluster.key` (the key sealing the cluster's
//! gossip, which goes wherever `ca.pem` goes: docs/cluster.md), and `NAME.pem`, `NAME.key` per
//! node. Keys are written with mode 0600, and nothing existing is ever overwritten.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::tls::CA_CERT;

/// The CA key's file name.
pub const CA_KEY: &str = "ca.key";

/// `init_ca` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitCaError {
    /// The directory already holds a CA.
    #[error("{} already exists: refusing to replace a cluster CA", path.display())]
    Exists {
        /// The file that exists.
        path: PathBuf,
    },
    /// Key or certificate generation failed.
    #[error("generate the CA {what}")]
    Generate {
        /// "key" or "certificate".
        what: &'static str,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// Writing a file failed.
    #[error(transparent)]
    Write(#[from] WriteFileError),
    /// The cluster key could not be made.
    #[error("create the cluster key")]
    ClusterKey(#[source] crate::cluster::KeyError),
}

/// `issue_node` failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueNodeError {
    /// The name cannot be a node name.
    #[error(
        "invalid node name {0:?}: use letters, digits, '-' and '.' (a DNS name, not an IP address)"
    )]
    InvalidName(String),
    /// The node's files already exist.
    #[error("{} already exists: remove it first to issue a new certificate", path.display())]
    Exists {
        /// The file that exists.
        path: PathBuf,
    },
    /// The CA could not be read.
    #[error("read the CA file {}", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The CA files could not be used.
    #[error("load the CA from {}", dir.display())]
    LoadCa {
        /// The CA directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// Key or certificate generation failed.
    #[error("generate the certificate of {name}")]
    Generate {
        /// The node.
        name: String,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// Writing a file failed.
    #[error(transparent)]
    Write(#[from] WriteFileError),
}

/// A file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("write {}", path.display())]
pub struct WriteFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// Creates a cluster CA in `dir` (created if needed): `ca.pem`, `ca.key` (0600) and the cluster
/// key `cluster.key` (0600). Returns the certificate's path.
pub fn init_ca(dir: &Path) -> Result<PathBuf, InitCaError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let cluster_key = dir.join(crate::cluster::CLUSTER_KEY);
    for path in [&cert_path, &key_path, &cluster_key] {
        if path.exists() {
            return Err(InitCaError::Exists { path: path.clone() });
        }
    }
    let key = KeyPair::generate().map_err(|source| InitCaError::Generate {
        what: "key",
        source,
    })?;
    let cert = ca_params()
        .self_signed(&key)
        .map_err(|source| InitCaError::Generate {
            what: "certificate",
            source,
        })?;
    create_dir(dir)?;
    // Key first: a CA certificate without its key would block a retry for nothing.
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    crate::cluster::ClusterKey::create(&cluster_key).map_err(InitCaError::ClusterKey)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(cert_path)
}

/// Issues the certificate of node `name` with the CA in `dir`: `NAME.pem` (SAN = NAME, server
/// and client auth) and `NAME.key` (0600). Returns the certificate's path.
pub fn issue_node(dir: &Path, name: &str) -> Result<PathBuf, IssueNodeError> {
    if !valid_node_name(name) {
        return Err(IssueNodeError::InvalidName(name.to_owned()));
    }
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(IssueNodeError::Exists { path: path.clone() });
        }
    }
    let read = |path: PathBuf| {
        fs::read_to_string(&path).map_err(|source| IssueNodeError::ReadCa { path, source })
    };
    let ca_pem = read(dir.join(CA_CERT))?;
    let ca_key_pem = read(dir.join(CA_KEY))?;
    let load_err = |source| IssueNodeError::LoadCa {
        dir: dir.to_path_buf(),
        source,
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(load_err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(load_err)?;

    let gen_err = |source| IssueNodeError::Generate {
        name: name.to_owned(),
        source,
    };
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = node_params(name)
        .map_err(gen_err)?
        .signed_by(&key, &issuer)
        .map_err(gen_err)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(cert_path)
}

/// A node name is a DNS name (it is the certificate's SAN and a file name): labels of ASCII
/// letters, digits and '-', not starting or ending with '-', and not an IP address.
pub fn valid_node_name(name: &str) -> bool {
    name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Ferry cluster CA");
    params.distinguished_name = dn;
    // Signs node certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn node_params(name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn create_dir(dir: &Path) -> Result<(), WriteFileError> {
    fs::create_dir_all(dir).map_err(|source| WriteFileError {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes a new file with `mode` (never replacing one), synced to disk.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteFileError> {
    let wrap = |source| WriteFileError {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(wrap)?;
    file.write_all(bytes).map_err(wrap)?;
    file.sync_all().map_err(wrap)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    use super::*;
    use crate::transport::TlsMaterial;

    #[test]
    fn ca_and_node_certificates() {
        let dir = std::env::temp_dir().join(format!("ferry-ca-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        init_ca(&dir).unwrap();
        issue_node(&dir, "h1").unwrap();
        for key in ["ca.key", "h1.key", "cluster.key"] {
            let mode = fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
        // Never replaced.
        assert!(matches!(init_ca(&dir), Err(InitCaError::Exists { .. })));
        assert!(matches!(
            issue_node(&dir, "h1"),
            Err(IssueNodeError::Exists { .. })
        ));

        let pem = fs::read(dir.join("h1.pem")).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let (_, cert) = X509Certificate::from_der(&block.contents).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names, vec![GeneralName::DNSName("h1")]);
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth && eku.value.client_auth);
        assert!(!cert.is_ca());
        TlsMaterial::load(&dir, "h1").unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn node_names() {
        for ok in ["h1", "alpha", "node-2.example", "a"] {
            assert!(valid_node_name(ok), "{ok}");
        }
        for bad in [
            "", "-a", "a-", "a..b", "a/b", "../x", "10.0.0.1", "::1", "a b", "é",
        ] {
            assert!(!valid_node_name(bad), "{bad}");
        }
    }
}
