//! Sealed images (docs/image-format.md, "Sealed images"): every section's stored payload is
//! encrypted and authenticated with AES-256-GCM under a key of its own image, derived with
//! HKDF-SHA256 from the key file and a random salt the image carries in clear.
//!
//! The nonce of a section is its sequence number (the manifest 0, the blocks 1, 2, …, the end
//! section last), unique inside one image, and the key is unique to the image, so no nonce is
//! ever used twice under one key. Each section's header fields (kind, codec, position,
//! lengths, pages) are the AEAD's associated data: a block moved, swapped, shortened or taken
//! from another image does not open. The end section, sealed too, holds the block count and
//! the chain digest, so a truncated image is refused. A key check (the tag of an empty message
//! under a nonce no section uses, over the file and seal headers) tells a wrong key apart from
//! a damaged section.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use super::format::FILE_HEADER_LEN;

/// Bytes of a key file's key.
pub const KEY_LEN: usize = 32;
/// Bytes the AEAD adds to each sealed payload.
pub const TAG_LEN: usize = 16;
/// Bytes of the seal header that follows the file header of a sealed image.
pub const SEAL_HEADER_LEN: usize = 64;
/// The AEAD's number in the seal header.
const AEAD_AES_256_GCM: u32 = 1;
/// The key derivation's number in the seal header.
const KDF_HKDF_SHA256: u32 = 1;
/// HKDF's `info`: binds the derived key to this use.
const INFO: &[u8] = b"ferry image seal v1 aes-256-gcm";
/// Bit 0 of the file header's flags: the image is sealed.
pub const FLAG_SEALED: u16 = 1;

/// What is wrong with a key file or a sealed image's key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read.
    #[error("key file {path}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error(
        "key file {path}: not a key (expected {KEY_LEN} bytes, or {} hex digits and an optional newline; found {len} bytes)",
        2 * KEY_LEN
    )]
    Format {
        /// The file.
        path: String,
        /// Its size.
        len: usize,
    },
    /// The key file is readable by others than its owner.
    #[error("key file {path}: mode {mode:o} lets others read it (chmod 600)")]
    Mode {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// No random bytes.
    #[error("no random bytes from the system")]
    Random,
}

/// A key for sealing images (also the cluster key's format): 32 bytes.
#[derive(Clone, Copy)]
pub struct Key([u8; KEY_LEN]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A new random key.
    pub fn random() -> Result<Self, KeyError> {
        let mut k = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| KeyError::Random)?;
        Ok(Key(k))
    }

    /// The key of a key file: 64 hex digits (a trailing newline allowed) or 32 raw bytes.
    /// A file others may read is refused.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        use std::os::unix::fs::MetadataExt as _;
        let name = path.display().to_string();
        let read = |source| KeyError::Read {
            path: name.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.mode() & 0o077 != 0 {
            return Err(KeyError::Mode {
                path: name,
                mode: meta.mode() & 0o7777,
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        Self::parse(&bytes).ok_or(KeyError::Format {
            path: name,
            len: bytes.len(),
        })
    }

    /// A key from a key file's bytes.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let mut k = [0u8; KEY_LEN];
        if text.len() == 2 * KEY_LEN && text.iter().all(u8::is_ascii_hexdigit) {
            for (i, pair) in text.chunks(2).enumerate() {
                let s = std::str::from_utf8(pair).ok()?;
                k[i] = u8::from_str_radix(s, 16).ok()?;
            }
            return Some(Key(k));
        }
        if bytes.len() == KEY_LEN {
            k.copy_from_slice(bytes);
            return Some(Key(k));
        }
        None
    }

    /// Writes a new random key to `path` (hex, mode 0600); refuses to replace a file.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let key = Self::random()?;
        key.save(path)?;
        Ok(key)
    }

    /// Writes this key to the new file `path` (hex, mode 0600); refuses to replace a file.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let key = self;
        let read = |source| KeyError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(read)?;
        let hex: String = key.0.iter().map(|b| format!("{b:02x}")).collect();
        f.write_all(format!("{hex}\n").as_bytes()).map_err(read)?;
        f.sync_all().map_err(read)?;
        Ok(())
    }

    /// Keys derived from this one for other uses (HKDF-SHA256, `info` naming the use).
    pub fn derive(&self, salt: &[u8], info: &[u8]) -> [u8; KEY_LEN] {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&self.0);
        let info = [info];
        let mut out = [0u8; KEY_LEN];
        // HKDF-SHA256 yields up to 255 * 32 bytes: 32 always fit.
        if let Ok(okm) = prk.expand(&info, Len32) {
            let _ = okm.fill(&mut out);
        }
        out
    }
}

/// HKDF output length of 32 bytes.
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

/// The clear part of a sealed image after its file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealHeader {
    /// The AEAD (1: AES-256-GCM).
    pub aead: u32,
    /// The key derivation (1: HKDF-SHA256).
    pub kdf: u32,
    /// Random, per image: the derived key differs in every image.
    pub salt: [u8; 32],
    /// The key check.
    pub check: [u8; TAG_LEN],
}

impl SealHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEAL_HEADER_LEN] {
        let mut b = [0u8; SEAL_HEADER_LEN];
        b[0..4].copy_from_slice(&self.aead.to_le_bytes());
        b[4..8].copy_from_slice(&self.kdf.to_le_bytes());
        b[8..40].copy_from_slice(&self.salt);
        b[40..56].copy_from_slice(&self.check);
        // b[56..64]: reserved, zero.
        b
    }

    /// Decodes a header; `None` for an AEAD, derivation or reserved bytes this code does not
    /// know.
    pub fn decode(b: &[u8; SEAL_HEADER_LEN]) -> Option<Self> {
        let aead = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let kdf = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if aead != AEAD_AES_256_GCM || kdf != KDF_HKDF_SHA256 || b[56..].iter().any(|&x| x != 0) {
            return None;
        }
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&b[8..40]);
        let mut check = [0u8; TAG_LEN];
        check.copy_from_slice(&b[40..56]);
        Some(SealHeader {
            aead,
            kdf,
            salt,
            check,
        })
    }

    /// The AEAD's name, as `inspect` shows it.
    pub fn aead_name(&self) -> &'static str {
        "aes-256-gcm"
    }
}

/// One image's sealing key.
pub struct Sealer(LessSafeKey);

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// The nonce of section `seq`.
fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&seq.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The key check's nonce: no section has it (its first bytes are never set by [`nonce`]).
fn check_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0xff; NONCE_LEN])
}

/// The key check's associated data: the file header and the seal header without the check.
fn check_aad(file_header: &[u8; FILE_HEADER_LEN], seal: &[u8; SEAL_HEADER_LEN]) -> Vec<u8> {
    let mut aad = file_header.to_vec();
    aad.extend_from_slice(&seal[..40]);
    aad
}

impl Sealer {
    fn with_salt(key: &Key, salt: &[u8; 32]) -> Self {
        let k = key.derive(salt, INFO);
        // AES-256 takes any 32 bytes.
        let unbound = UnboundKey::new(&AES_256_GCM, &k).unwrap_or_else(|_| unreachable!());
        Sealer(LessSafeKey::new(unbound))
    }

    /// A new image's sealer and its seal header (random salt), for `file_header`.
    pub fn new_image(
        key: &Key,
        file_header: &[u8; FILE_HEADER_LEN],
    ) -> Result<(Self, SealHeader), KeyError> {
        let mut salt = [0u8; 32];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| KeyError::Random)?;
        let sealer = Self::with_salt(key, &salt);
        let mut header = SealHeader {
            aead: AEAD_AES_256_GCM,
            kdf: KDF_HKDF_SHA256,
            salt,
            check: [0; TAG_LEN],
        };
        let aad = check_aad(file_header, &header.encode());
        let tag = sealer
            .0
            .seal_in_place_separate_tag(check_nonce(), Aad::from(&aad), &mut [])
            .map_err(|_| KeyError::Random)?;
        header.check.copy_from_slice(tag.as_ref());
        Ok((sealer, header))
    }

    /// The sealer of an existing image, if `key` is its key.
    pub fn open_image(
        key: &Key,
        file_header: &[u8; FILE_HEADER_LEN],
        header: &SealHeader,
    ) -> Option<Self> {
        let sealer = Self::with_salt(key, &header.salt);
        let encoded = header.encode();
        let aad = check_aad(file_header, &encoded);
        let mut tag_only = header.check;
        sealer
            .0
            .open_in_place(check_nonce(), Aad::from(&aad), &mut tag_only)
            .ok()?;
        Some(sealer)
    }

    /// Seals `buf[..len]` in place as section `seq` with header fields `fields`, and writes
    /// the tag into `buf[len..len + TAG_LEN]`; returns the sealed length.
    pub fn seal(
        &self,
        seq: u64,
        fields: &[u8],
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, SealFailed> {
        if buf.len() < len + TAG_LEN {
            return Err(SealFailed);
        }
        let tag: Tag = self
            .0
            .seal_in_place_separate_tag(nonce(seq), Aad::from(fields), &mut buf[..len])
            .map_err(|_| SealFailed)?;
        buf[len..len + TAG_LEN].copy_from_slice(tag.as_ref());
        Ok(len + TAG_LEN)
    }

    /// Opens section `seq` in place (`buf` is the payload and its tag); returns the length of
    /// the opened payload at the start of `buf`.
    pub fn open(&self, seq: u64, fields: &[u8], buf: &mut [u8]) -> Result<usize, SealFailed> {
        let plain = self
            .0
            .open_in_place(nonce(seq), Aad::from(fields), buf)
            .map_err(|_| SealFailed)?;
        Ok(plain.len())
    }
}

/// A section that does not authenticate (or one too short to hold a tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealFailed;
