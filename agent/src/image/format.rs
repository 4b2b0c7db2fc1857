//! The byte layout of an image: the file header, section headers and their digests. Only
//! encoding and decoding of fixed-size records lives here; the rules that tie sections
//! together are in the reader and the writer.

use std::fmt;

use ring::digest;

use super::{Codec, ImageDefect};

/// First bytes of every image.
pub const MAGIC: [u8; 8] = *b"FERRYIMG";
/// Major version this code writes. Version 2 digests with BLAKE3; version 1 (read, never
/// written) with SHA-256; the layout is otherwise the same.
pub const VERSION_MAJOR: u16 = 2;
/// Oldest major version this code still reads.
pub const OLDEST_MAJOR: u16 = 1;
/// Minor version this code writes for an image that is not sealed.
pub const VERSION_MINOR: u16 = 0;
/// Minor version of a sealed image (version 2.1: header flag 1 and a seal header); images
/// with a newer minor are refused.
pub const SEALED_MINOR: u16 = 1;
/// ELF machine number of x86_64 (`EM_X86_64`), the only architecture images are made for.
pub const ARCH_X86_64: u16 = 62;
/// Size of the file header.
pub const FILE_HEADER_LEN: usize = 16;
/// Size of the digested fields of a section header.
pub const SECTION_FIELDS_LEN: usize = 48;
/// Size of a section header: fields plus their digest.
pub const SECTION_HEADER_LEN: usize = SECTION_FIELDS_LEN + DIGEST_LEN;
/// Size of a digest (BLAKE3 and SHA-256 alike).
pub const DIGEST_LEN: usize = 32;
/// Payload size of the end section.
pub const END_PAYLOAD_LEN: usize = 16 + DIGEST_LEN;

/// A section or chain digest.
pub type Digest = [u8; DIGEST_LEN];

/// The hash of an image's digests, fixed by its major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlg {
    /// Version 1.
    Sha256,
    /// Version 2: BLAKE3 (256-bit output), about four times SHA-256's speed here with
    /// SHA extensions, and it keeps up with the codecs.
    Blake3,
}

impl DigestAlg {
    /// The hash of images of major version `major` (a version this code reads).
    pub fn of_major(major: u16) -> Self {
        if major == 1 {
            DigestAlg::Sha256
        } else {
            DigestAlg::Blake3
        }
    }

    /// Its name, as `ferry image inspect` shows it.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlg::Sha256 => "sha256",
            DigestAlg::Blake3 => "blake3",
        }
    }
}

/// The file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// ELF machine number.
    pub arch: u16,
    /// Flags (version 2.1): bit 0, the image is sealed. Zero before.
    pub flags: u16,
}

impl FileHeader {
    /// The header this code writes.
    pub const CURRENT: FileHeader = FileHeader {
        major: VERSION_MAJOR,
        minor: VERSION_MINOR,
        arch: ARCH_X86_64,
        flags: 0,
    };

    /// The header of a sealed image.
    pub const SEALED: FileHeader = FileHeader {
        major: VERSION_MAJOR,
        minor: SEALED_MINOR,
        arch: ARCH_X86_64,
        flags: super::seal::FLAG_SEALED,
    };

    /// Whether the image is sealed.
    pub fn sealed(&self) -> bool {
        self.flags & super::seal::FLAG_SEALED != 0
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        let mut b = [0u8; FILE_HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.major.to_le_bytes());
        b[10..12].copy_from_slice(&self.minor.to_le_bytes());
        b[12..14].copy_from_slice(&self.arch.to_le_bytes());
        b[14..16].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// Decodes a header; magic, version, architecture and flags are checked by the caller so
    /// each gets its own error.
    pub fn decode(b: &[u8; FILE_HEADER_LEN]) -> (bool, FileHeader) {
        let magic_ok = b[0..8] == MAGIC;
        let header = FileHeader {
            major: u16::from_le_bytes([b[8], b[9]]),
            minor: u16::from_le_bytes([b[10], b[11]]),
            arch: u16::from_le_bytes([b[12], b[13]]),
            flags: u16::from_le_bytes([b[14], b[15]]),
        };
        (magic_ok, header)
    }
}

/// What a section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// The prost-encoded manifest.
    Manifest,
    /// One block of pages.
    Pages,
    /// The end marker with totals and the chain digest.
    End,
}

impl SectionKind {
    /// On-disk number.
    pub fn to_u32(self) -> u32 {
        match self {
            SectionKind::Manifest => 1,
            SectionKind::Pages => 2,
            SectionKind::End => 3,
        }
    }

    /// From the on-disk number.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(SectionKind::Manifest),
            2 => Some(SectionKind::Pages),
            3 => Some(SectionKind::End),
            _ => None,
        }
    }
}

impl Codec {
    /// On-disk number.
    pub(crate) fn to_u32(self) -> u32 {
        match self {
            Codec::None => 0,
            Codec::Zstd => 1,
            Codec::Lz4 => 2,
        }
    }

    /// From the on-disk number.
    pub(crate) fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Codec::None),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::Lz4),
            _ => None,
        }
    }
}

/// The digested fields of a section header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionFields {
    /// What the section holds.
    pub kind: SectionKind,
    /// How the payload is stored.
    pub codec: Codec,
    /// Position of the section in the image: 0 for the manifest, then 1, 2, …
    pub seq: u64,
    /// Payload size once decompressed.
    pub raw_len: u64,
    /// Payload size in the image.
    pub stored_len: u64,
    /// Pages: index of the first page in the page stream; otherwise 0.
    pub first_page: u64,
    /// Pages: number of pages; otherwise 0.
    pub page_count: u64,
}

impl SectionFields {
    /// Encodes the fields.
    pub fn encode(&self) -> [u8; SECTION_FIELDS_LEN] {
        let mut b = [0u8; SECTION_FIELDS_LEN];
        b[0..4].copy_from_slice(&self.kind.to_u32().to_le_bytes());
        b[4..8].copy_from_slice(&self.codec.to_u32().to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.raw_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.stored_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.first_page.to_le_bytes());
        b[40..48].copy_from_slice(&self.page_count.to_le_bytes());
        b
    }

    /// Decodes the fields, refusing unknown kinds and codecs.
    pub fn decode(b: &[u8; SECTION_FIELDS_LEN]) -> Result<Self, ImageDefect> {
        let kind_raw = le_u32(&b[0..4]);
        let codec_raw = le_u32(&b[4..8]);
        let kind = SectionKind::from_u32(kind_raw).ok_or(ImageDefect::UnknownKind(kind_raw))?;
        let codec = Codec::from_u32(codec_raw).ok_or(ImageDefect::UnknownCodec(codec_raw))?;
        Ok(SectionFields {
            kind,
            codec,
            seq: le_u64(&b[8..16]),
            raw_len: le_u64(&b[16..24]),
            stored_len: le_u64(&b[24..32]),
            first_page: le_u64(&b[32..40]),
            page_count: le_u64(&b[40..48]),
        })
    }
}

/// The digest of the current version (BLAKE3) over encoded section fields and the stored
/// payload.
pub fn section_digest(fields: &[u8; SECTION_FIELDS_LEN], payload: &[u8]) -> Digest {
    section_digest_with(DigestAlg::Blake3, fields, payload)
}

/// `alg` over encoded section fields and the stored payload.
pub fn section_digest_with(
    alg: DigestAlg,
    fields: &[u8; SECTION_FIELDS_LEN],
    payload: &[u8],
) -> Digest {
    let mut h = Hasher::new(alg);
    h.update(fields);
    h.update(payload);
    h.finish()
}

/// Converts a ring digest into an array.
pub fn to_digest(d: digest::Digest) -> Digest {
    let mut out = [0u8; DIGEST_LEN];
    // SHA-256 always yields 32 bytes.
    out.copy_from_slice(d.as_ref());
    out
}

/// An incremental hash of either kind.
#[derive(Clone)]
enum Hasher {
    Sha256(Box<digest::Context>),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    fn new(alg: DigestAlg) -> Self {
        match alg {
            DigestAlg::Sha256 => Hasher::Sha256(Box::new(digest::Context::new(&digest::SHA256))),
            DigestAlg::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(c) => c.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(c) => to_digest((*c).finish()),
            Hasher::Blake3(h) => *h.finalize().as_bytes(),
        }
    }
}

/// The running digest that binds every section to the file header and to its neighbours:
/// the image's hash over the file header followed by each section digest in order. The end
/// section stores its final value, so dropped, reordered or foreign blocks are detected.
#[derive(Clone)]
pub struct Chain(Hasher);

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Chain")
    }
}

impl Chain {
    /// Starts the chain from the encoded file header, with the hash its version names.
    pub fn new(header: &[u8; FILE_HEADER_LEN]) -> Self {
        let (_, h) = FileHeader::decode(header);
        let mut hasher = Hasher::new(DigestAlg::of_major(h.major));
        hasher.update(header);
        Chain(hasher)
    }

    /// Adds one section digest.
    pub fn push(&mut self, d: &Digest) {
        self.0.update(d);
    }

    /// Adds a sealed image's seal header (right after the file header).
    pub fn bind(&mut self, seal_header: &[u8]) {
        self.0.update(seal_header);
    }

    /// The value stored in the end section.
    pub fn value(&self) -> Digest {
        self.0.clone().finish()
    }
}

/// The payload of the end section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndPayload {
    /// Pages in the page stream.
    pub total_pages: u64,
    /// Number of page blocks.
    pub blocks: u64,
    /// Final value of the [`Chain`].
    pub chain: Digest,
}

impl EndPayload {
    /// Encodes the payload.
    pub fn encode(&self) -> [u8; END_PAYLOAD_LEN] {
        let mut b = [0u8; END_PAYLOAD_LEN];
        b[0..8].copy_from_slice(&self.total_pages.to_le_bytes());
        b[8..16].copy_from_slice(&self.blocks.to_le_bytes());
        b[16..].copy_from_slice(&self.chain);
        b
    }

    /// Decodes the payload.
    pub fn decode(b: &[u8; END_PAYLOAD_LEN]) -> Self {
        let mut chain = [0u8; DIGEST_LEN];
        chain.copy_from_slice(&b[16..]);
        EndPayload {
            total_pages: le_u64(&b[0..8]),
            blocks: le_u64(&b[8..16]),
            chain,
        }
    }
}

/// Lower-case hex of a digest.
pub fn hex(d: &Digest) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(2 * DIGEST_LEN);
    for b in d {
        // Writing into a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
