//! The cluster key (`cluster.key`, beside the CA's `ca.pem`) and the sealing of every gossip
//! datagram with it.
//!
//! The file holds 32 random bytes as 64 hexadecimal digits and a newline, mode 0600; `ferry ca
//! init` makes it with the CA and it is installed wherever `ca.pem` is (each agent reads
//! `tls_dir/cluster.key`). The gossip key is derived from it with HKDF-SHA256 (salt
//! [`HKDF_SALT`], info `gossip`), so that other uses (sealed checkpoints) derive keys of their
//! own from the same file.
//!
//! A datagram is
//!
//! ```text
//! "FRG1" | len (1 byte) | sender name (len bytes) | nonce (12 bytes) | ciphertext | tag (16 bytes)
//! ```
//!
//! sealed with ChaCha20-Poly1305 under a random nonce per datagram; the associated data is
//! everything before the nonce (the magic and the sender's name), so a datagram opens only
//! with the name it was sealed with, and the receiver then checks that the SWIM header inside
//! names the same sender.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// The key's file name, in the CA directory and in each agent's `tls_dir`.
pub const CLUSTER_KEY: &str = "cluster.key";
/// The first bytes of every datagram.
pub const MAGIC: &[u8; 4] = b"FRG1";
/// The HKDF salt of every key derived from the cluster key.
pub const HKDF_SALT: &[u8] = b"ferry cluster key v1";
/// Bytes a sealed datagram adds to its plaintext, besides the sender's name.
pub const OVERHEAD: usize = MAGIC.len() + 1 + NONCE_LEN + 16;
/// The longest sender name a datagram carries.
pub const MAX_NAME: usize = 255;

/// `cluster.key` could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{} {}", if *.writing { "write" } else { "read" }, path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Writing (else reading).
        writing: bool,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file exists already (creation never replaces one).
    #[error("{} already exists: refusing to replace the cluster key", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file's contents are not 64 hexadecimal digits.
    #[error("{} is not a cluster key: {why}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// The 32 bytes of `cluster.key`.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(Self(bytes))
    }

    /// The file's text: 64 lowercase hexadecimal digits and a newline.
    pub fn to_text(&self) -> String {
        let mut s: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        s.push('\n');
        s
    }

    /// Parses the file's text (surrounding white space ignored).
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex = text.trim();
        if hex.len() != 64 {
            return Err(format!(
                "{} characters where 64 hexadecimal digits were expected",
                hex.chars().count()
            ));
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
                .map_err(|_| format!("not hexadecimal near character {}", 2 * i + 1))?;
        }
        Ok(Self(bytes))
    }

    /// Reads `path`. A file readable by group or others is used, with a warning in the log.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            writing: false,
            source,
        })?;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the cluster key is readable by others than its owner: make it 0600"
            );
        }
        Self::parse(&text).map_err(|why| KeyError::Malformed {
            path: path.to_path_buf(),
            why,
        })
    }

    /// Writes a new key to `path` (mode 0600, synced), never replacing a file.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            return Err(KeyError::Exists {
                path: path.to_path_buf(),
            });
        }
        let key = Self::generate()?;
        let wrap = |source| KeyError::Io {
            path: path.to_path_buf(),
            writing: true,
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(wrap)?;
        file.write_all(key.to_text().as_bytes()).map_err(wrap)?;
        file.sync_all().map_err(wrap)?;
        Ok(key)
    }

    /// A 32-byte key for `purpose` derived with HKDF-SHA256 (an AEAD key for ChaCha20-Poly1305
    /// or AES-256-GCM).
    pub fn derive(&self, purpose: &[u8], alg: &'static ring::aead::Algorithm) -> UnboundKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&self.0);
        let info = [purpose];
        let okm = prk
            .expand(&info, alg)
            .expect("an AEAD key length is a valid HKDF-SHA256 output length");
        UnboundKey::from(okm)
    }
}

/// Seals and opens gossip datagrams under the gossip key derived from the cluster key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// The sealer of `key`.
    pub fn new(key: &ClusterKey) -> Self {
        Self {
            key: LessSafeKey::new(key.derive(b"gossip", &CHACHA20_POLY1305)),
            rng: SystemRandom::new(),
        }
    }

    /// The datagram carrying `plain` from `sender`. `None` when the name is longer than
    /// [`MAX_NAME`] or the random generator fails.
    pub fn seal(&self, sender: &str, plain: &[u8]) -> Option<Vec<u8>> {
        let name = sender.as_bytes();
        let len = u8::try_from(name.len()).ok()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(OVERHEAD + name.len() + plain.len());
        out.extend_from_slice(MAGIC);
        out.push(len);
        out.extend_from_slice(name);
        let aad_len = out.len();
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&out[..aad_len]),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    /// Opens `datagram` in place: the sender's name and the plaintext, or `None` when it is
    /// not a sealed datagram or does not open under this key.
    pub fn open<'a>(&self, datagram: &'a mut [u8]) -> Option<(String, &'a [u8])> {
        if datagram.len() < OVERHEAD || &datagram[..MAGIC.len()] != MAGIC {
            return None;
        }
        let len = usize::from(datagram[MAGIC.len()]);
        let aad_len = MAGIC.len() + 1 + len;
        if datagram.len() < aad_len + NONCE_LEN + 16 {
            return None;
        }
        let (head, rest) = datagram.split_at_mut(aad_len);
        let name = std::str::from_utf8(&head[MAGIC.len() + 1..])
            .ok()?
            .to_owned();
        let (nonce, body) = rest.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(&head[..]), body)
            .ok()?;
        Some((name, plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_refusals() {
        let key = ClusterKey::generate().unwrap();
        let sealer = Sealer::new(&key);
        let mut d = sealer.seal("h1", b"hello swim").unwrap();
        let mut copy = d.clone();
        let (name, plain) = sealer.open(&mut copy).unwrap();
        assert_eq!((name.as_str(), plain), ("h1", &b"hello swim"[..]));
        // Two seals of the same text differ (random nonce).
        assert_ne!(d, sealer.seal("h1", b"hello swim").unwrap());
        // Another key: does not open.
        let other = Sealer::new(&ClusterKey::generate().unwrap());
        assert!(other.open(&mut d.clone()).is_none());
        // The name is bound: renaming the sender breaks it.
        let mut renamed = d.clone();
        renamed[MAGIC.len() + 2] = b'2';
        assert!(sealer.open(&mut renamed).is_none());
        // A flipped bit anywhere, truncation, garbage: refused, never a panic.
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x40;
            assert!(sealer.open(&mut bad).is_none(), "bit flipped at {i}");
        }
        for n in 0..d.len() {
            assert!(sealer.open(&mut d[..n].to_vec()).is_none(), "cut at {n}");
        }
        let mut junk = b"FRG1\xffshort".to_vec();
        assert!(sealer.open(&mut junk).is_none());
        assert!(sealer.open(&mut d[..0]).is_none());
        assert!(sealer.seal(&"x".repeat(256), b"").is_none());
    }

    #[test]
    fn key_file_text_and_refusals() {
        let key = ClusterKey::generate().unwrap();
        let back = ClusterKey::parse(&key.to_text()).unwrap();
        assert_eq!(key.0, back.0);
        let err = ClusterKey::parse("abc").unwrap_err();
        assert!(err.contains("64 hexadecimal"), "{err}");
        let err = ClusterKey::parse(&"g".repeat(64)).unwrap_err();
        assert!(err.contains("not hexadecimal"), "{err}");
        let dir = std::env::temp_dir().join(format!("ferry-ckey-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(CLUSTER_KEY);
        let made = ClusterKey::create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(ClusterKey::load(&path).unwrap().0, made.0);
        assert!(matches!(
            ClusterKey::create(&path),
            Err(KeyError::Exists { .. })
        ));
        fs::write(&path, "nonsense\n").unwrap();
        let err = ClusterKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not a cluster key"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
