//! The image format: one file (or one stream) holding a checkpoint.
//!
//! # Layout
//!
//! All integers are little-endian.
//!
//! ```text
//! +--------------------------------------------------------------+
//! | file header (16 bytes)                                       |
//! |   magic  b"FERRYIMG"                              8 bytes    |
//! |   major u16 = 2, minor u16 = 0                    4 bytes    |
//! |   arch u16 = 62 (EM_X86_64), reserved u16 = 0     4 bytes    |
//! +--------------------------------------------------------------+
//! | section 0: MANIFEST                                          |
//! | section 1 .. n: PAGES (one block each)                       |
//! | section n + 1: END                                           |
//! +--------------------------------------------------------------+
//!
//! section = header (80 bytes) + payload (stored_len bytes)
//!   kind        u32   1 = MANIFEST, 2 = PAGES, 3 = END
//!   codec       u32   0 = none, 1 = zstd, 2 = lz4
//!   seq         u64   position of the section: 0, 1, 2, ...
//!   raw_len     u64   payload length once decompressed
//!   stored_len  u64   payload length in the image
//!   first_page  u64   PAGES: index of the block's first page in the page stream, else 0
//!   page_count  u64   PAGES: pages in the block (1..=256), else 0
//!   digest      [32]  BLAKE3 over the 48 bytes above and the stored payload
//!                     (SHA-256 in a version 1 image)
//! ```
//!
//! - **MANIFEST**: the prost-encoded `ferry.image.v1.Manifest` (the whole [`ProcessState`]),
//!   stored uncompressed, at most [`MAX_MANIFEST_BYTES`].
//! - **PAGES**: the page stream, in the order of [`crate::state::VmaState::pages`] (VMAs in
//!   order, runs in order), cut into blocks of [`BLOCK_PAGES`] pages. A block's raw payload is
//!   its non-zero pages followed by a bitmap of `ceil(page_count / 8)` bytes, bit `i` (LSB
//!   first) set when page `i` is all zeros and therefore not stored. Each block is compressed
//!   on its own, so blocks compress in parallel; a block that does not shrink is stored as is
//!   (codec none), so a compressed payload is always shorter than its raw form.
//! - **END**: `total_pages u64, blocks u64, chain [32]`, where `chain` is BLAKE3 (SHA-256 in
//!   version 1) over the file header followed by the digest of every earlier section in order. It binds the blocks to
//!   this image and to each other: a truncated stream misses the end section, and dropped,
//!   reordered or foreign blocks break the sequence numbers, the page indices or the chain.
//!
//! # Compatibility
//!
//! A reader accepts its own major version and any minor version up to its own; anything else
//! is refused with an error naming both versions. Version 2 changed the digests from SHA-256
//! to BLAKE3 (four times faster here, so digesting keeps up with the codecs) and nothing
//! else: version 1 images are still read, their digests checked with SHA-256. The manifest
//! evolves by protobuf rules (new fields get new numbers); a change an older reader would
//! misread needs a new major.
//!
//! # Untrusted input
//!
//! The reader treats the image as hostile: every length is checked against a cap before
//! anything is allocated, every digest is checked before a payload is decompressed or decoded,
//! decompression never produces more than the declared length, the repeated fields of the
//! manifest are counted on the wire before prost decodes it (an empty entry is two bytes on
//! the wire but a whole struct once decoded), and the manifest is validated field by field
//! ([`ManifestError`] names the field) before the caller sees a [`ProcessState`]. Each
//! [`ReadImageError`] names the section and its offset; errors come in stream order.
//!
//! Page blocks are verified one by one, but only the end section proves that the blocks were
//! all there, in order, and from this image: a restore must not let the process run before
//! [`ImageReader::next_pages`] has returned `Ok(None)`.
//!
//! # Threads
//!
//! The writer takes page bytes straight into its block buffers, packs, compresses and
//! digests blocks on one worker per CPU (on the caller's thread for a one-block image) and
//! writes them in order from the caller's thread, one vectored write per section; the reader
//! reads ahead on the caller's thread and verifies and decompresses on workers into recycled
//! buffers, so a restore writing memory overlaps with decompression. At most two blocks per
//! worker are in flight, so memory stays bounded.

mod codec;
mod convert;
mod format;
mod pages;
mod pool;
mod reader;
pub mod seal;
mod sockets;
mod validate;
mod wire;
mod writer;

use std::fmt;
use std::io::Read;

use serde::Serialize;

pub use self::codec::ParseCodecError;
pub(crate) use self::codec::{Compressor as BlockCompressor, compress_bound};
pub use self::pages::PageBlock;
pub use self::reader::{ImageReader, ImageSummary};
pub use self::sockets::{
    ALLOWED_OPTS as ALLOWED_SOCKET_OPTS, MAX_FILTER as MAX_SOCKET_FILTER, MAX_SOCKET_MESSAGES,
    MAX_SOCKET_QUEUE, PACKET_FANOUT_FLAGS, PACKET_FANOUT_MODES, opt as sockopt,
};
pub use self::validate::{
    IPC_SYSCTLS, MAX_AIO_RING_BYTES, MAX_INOTIFY_GAPS, MAX_MEMFD_BYTES, MAX_SYSV_MSG_BYTES,
    MAX_SYSV_SHM_BYTES, ManifestError, ManifestProblem, validate, validate_tree,
};
pub use self::writer::ImageWriter;
use crate::state::PAGE_SIZE;
#[cfg(doc)]
use crate::state::ProcessState;

/// Worker threads an image writer compresses on (one per CPU).
pub(crate) fn compression_workers() -> usize {
    pool::default_threads()
}

/// Pages per page block (1 MiB of raw data).
pub const BLOCK_PAGES: u64 = 256;
/// Raw bytes per full page block.
pub const BLOCK_BYTES: usize = (BLOCK_PAGES * PAGE_SIZE) as usize;
/// Largest manifest accepted, checked before it is read.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Compression of page blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Stored as is.
    None,
    /// zstd level -1 (the first fast level).
    Zstd,
    /// LZ4 block format: the default, the fastest pipeline for a local image (see
    /// docs/engine.md "The page pipeline").
    #[default]
    Lz4,
}

/// Errors while writing an image.
#[derive(Debug, thiserror::Error)]
pub enum WriteImageError {
    /// No key could be made for a sealed image.
    #[error("seal the image")]
    Seal(#[source] seal::KeyError),
    /// Sealing a section failed.
    #[error("seal a section of the image")]
    SealFailed,
    /// Writing to the output failed.
    #[error("write {step}")]
    Io {
        /// Which step.
        step: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint breaks an invariant of the format; the reader would refuse it.
    #[error("checkpoint cannot be written")]
    InvalidState(#[source] ManifestError),
    /// The encoded manifest is larger than a reader accepts.
    #[error("manifest is {len} bytes, more than the {max} a reader accepts")]
    ManifestTooLarge {
        /// Encoded size.
        len: u64,
        /// Cap.
        max: u64,
    },
    /// Page data that is not a whole number of pages.
    #[error("page data of {len} bytes is not a multiple of the page size")]
    UnalignedPages {
        /// Length given.
        len: u64,
    },
    /// More page bytes committed than the room the block had.
    #[error("{len} bytes of pages committed, the block had room for {room}")]
    BeyondRoom {
        /// Bytes committed.
        len: u64,
        /// Room left in the block.
        room: u64,
    },
    /// More or fewer pages than the manifest announces.
    #[error("{written} pages written, the manifest announces {expected}")]
    PageCountMismatch {
        /// Pages written (so far, when too many).
        written: u64,
        /// Pages in the manifest.
        expected: u64,
    },
    /// Compressing a block failed.
    #[error("compress a page block")]
    Compress {
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A compression worker thread stopped.
    #[error("compression worker stopped")]
    WorkerLost,
}

/// A part of an image, as named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The file header.
    Header,
    /// A sealed image's seal header (after the file header).
    Seal,
    /// The manifest section.
    Manifest,
    /// Page block N (counted from 0).
    PagesBlock(u64),
    /// The section after page block N - 1, not yet known to be a page block or the end.
    BlockOrEnd(u64),
    /// The end section.
    End,
    /// Bytes after the end section.
    AfterEnd,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Header => f.write_str("header"),
            Section::Seal => f.write_str("seal header"),
            Section::Manifest => f.write_str("manifest"),
            Section::PagesBlock(n) => write!(f, "pages block {n}"),
            Section::BlockOrEnd(n) => write!(f, "pages block {n} or end"),
            Section::End => f.write_str("end"),
            Section::AfterEnd => f.write_str("after end"),
        }
    }
}

/// What is wrong with a section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageDefect {
    /// The stored digest does not match the section.
    #[error("digest mismatch")]
    DigestMismatch,
    /// A section kind this reader does not know.
    #[error("unknown section kind {0}")]
    UnknownKind(u32),
    /// A known section kind in the wrong place.
    #[error("expected a {expected} section, found kind {found}")]
    UnexpectedKind {
        /// What was expected.
        expected: &'static str,
        /// Kind found.
        found: u32,
    },
    /// A codec this reader does not know.
    #[error("unknown codec {0}")]
    UnknownCodec(u32),
    /// A codec not allowed for this section.
    #[error("codec {0} is not allowed here")]
    CodecNotAllowed(Codec),
    /// Sections out of order, missing or repeated.
    #[error("sequence number {found}, expected {expected}")]
    Sequence {
        /// Found.
        found: u64,
        /// Expected.
        expected: u64,
    },
    /// Reserved bytes are not zero.
    #[error("reserved fields are not zero")]
    ReservedNotZero,
    /// A sealed section does not authenticate under the image's key: changed, moved or cut.
    #[error("sealed section does not authenticate (changed, moved or cut short)")]
    SealBroken,
    /// A seal header naming an AEAD or key derivation this reader does not know.
    #[error("unknown sealing (AEAD or key derivation) or reserved bytes not zero")]
    UnknownSeal,
    /// A raw length above its cap.
    #[error("raw length {len} exceeds the cap of {max}")]
    RawTooLarge {
        /// Declared.
        len: u64,
        /// Cap.
        max: u64,
    },
    /// A stored length that does not fit the raw length and codec.
    #[error("stored length {stored} is invalid for raw length {raw} with codec {codec}")]
    StoredLength {
        /// Stored length.
        stored: u64,
        /// Raw length.
        raw: u64,
        /// Codec.
        codec: Codec,
    },
    /// A raw length that is not the block's pages.
    #[error("raw length {len} is not {pages} pages")]
    RawLength {
        /// Raw length.
        len: u64,
        /// Pages in the block.
        pages: u64,
    },
    /// The zero-page map does not agree with the pages stored.
    #[error("zero-page map lists {listed} stored pages, the block holds {stored}")]
    ZeroMap {
        /// Pages the payload holds.
        stored: u64,
        /// Pages the map says are stored.
        listed: u64,
    },
    /// A page count outside 1..=BLOCK_PAGES.
    #[error("page count {count} is outside 1..={max}")]
    PageCount {
        /// Found.
        count: u64,
        /// Most accepted.
        max: u64,
    },
    /// A block that does not start where the previous one ended.
    #[error("first page {found}, expected {expected}")]
    FirstPage {
        /// Found.
        found: u64,
        /// Expected.
        expected: u64,
    },
    /// A block with pages beyond the manifest's count.
    #[error("pages {first}..+{count} go beyond the manifest's {total} pages")]
    BeyondManifest {
        /// First page of the block.
        first: u64,
        /// Pages in the block.
        count: u64,
        /// Pages in the manifest.
        total: u64,
    },
    /// A payload that does not decompress.
    #[error("{codec} payload does not decompress: {detail}")]
    Decompress {
        /// Codec.
        codec: Codec,
        /// The decompressor's message.
        detail: String,
    },
    /// A payload that decompresses to another length than declared.
    #[error("decompressed to {found} bytes, expected {expected}")]
    RawLengthMismatch {
        /// Bytes produced.
        found: u64,
        /// Declared raw length.
        expected: u64,
    },
    /// A manifest that is not valid protobuf.
    #[error("manifest does not decode: {0}")]
    Decode(String),
    /// The end section's page count does not match.
    #[error("end section counts {end} pages, the manifest {manifest}, the blocks {read}")]
    EndPages {
        /// In the end section.
        end: u64,
        /// In the manifest.
        manifest: u64,
        /// In the blocks read.
        read: u64,
    },
    /// The end section's block count does not match.
    #[error("end section counts {end} blocks, {read} were read")]
    EndBlocks {
        /// In the end section.
        end: u64,
        /// Read.
        read: u64,
    },
    /// The chain digest does not match: blocks dropped, reordered or from another image.
    #[error("chain digest mismatch")]
    ChainMismatch,
    /// Bytes follow the end section.
    #[error("data follows the end section")]
    TrailingData,
}

/// Errors while reading an image. Every variant names the section that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReadImageError {
    /// The input failed.
    #[error("read image section \"{section}\" at offset {offset}")]
    Io {
        /// Section being read.
        section: Section,
        /// Offset of the section.
        offset: u64,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The input ended inside a section.
    #[error("image truncated in section \"{section}\" at offset {offset}")]
    Truncated {
        /// Section being read.
        section: Section,
        /// Offset of the section.
        offset: u64,
    },
    /// Not an image.
    #[error("image section \"header\" at offset 0: bad magic, not a ferry image")]
    BadMagic,
    /// A version this reader does not read.
    #[error(
        "image section \"header\" at offset 0: unsupported image version {major}.{minor} \
         (this ferry reads {}.0 to {}.{})",
        format::OLDEST_MAJOR,
        format::VERSION_MAJOR,
        format::SEALED_MINOR
    )]
    UnsupportedVersion {
        /// Major version of the image.
        major: u16,
        /// Minor version of the image.
        minor: u16,
    },
    /// A sealed image and no key.
    #[error("image is sealed: no key given (--key KEYFILE)")]
    SealedNoKey,
    /// A sealed image whose key is not the one given.
    #[error("image is sealed: the key does not open it (wrong key?)")]
    SealWrongKey,
    /// An image for another architecture.
    #[error(
        "image section \"header\" at offset 0: architecture {arch} is not supported \
         (this ferry reads x86_64, {})",
        format::ARCH_X86_64
    )]
    UnsupportedArch {
        /// ELF machine number in the image.
        arch: u16,
    },
    /// A section is malformed or corrupted.
    #[error("image section \"{section}\" at offset {offset}: {defect}")]
    Defect {
        /// The section.
        section: Section,
        /// Offset of the section.
        offset: u64,
        /// What is wrong.
        defect: ImageDefect,
    },
    /// The manifest decodes but describes an invalid checkpoint.
    #[error("image section \"manifest\" is invalid")]
    Manifest(#[source] ManifestError),
    /// Worker threads could not be started.
    #[error("start decompression workers")]
    StartWorkers {
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A decompression worker thread stopped.
    #[error("decompression worker stopped")]
    WorkerLost,
    /// An earlier call failed; the reader does not go on.
    #[error("image reader already failed")]
    AlreadyFailed,
}

/// Statistics of a written image.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct WriteStats {
    /// Pages written.
    pub pages: u64,
    /// Bytes of page data before compression.
    pub raw_bytes: u64,
    /// Bytes of the whole image.
    pub image_bytes: u64,
    /// Pages that were all zeros and are not stored (a bit each).
    pub zero_pages: u64,
}

/// One section of an image, as [`inspect`] describes it.
#[derive(Debug, Clone, Serialize)]
pub struct SectionSummary {
    /// `manifest`, `pages` or `end`.
    pub kind: &'static str,
    /// The name errors use, e.g. `pages block 3`.
    pub name: String,
    /// Offset of the section header.
    pub offset: u64,
    /// Payload bytes in the image.
    pub stored_size: u64,
    /// Payload bytes once decompressed.
    pub raw_size: u64,
    /// How the payload is stored.
    pub codec: Codec,
    /// Pages: index of the first page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_page: Option<u64>,
    /// Pages: number of pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_count: Option<u64>,
    /// Digest of the section (header fields and payload), hex: BLAKE3 (SHA-256 in a version 1
    /// image).
    pub digest: String,
}

/// Reads and verifies a whole image (every digest, every block decompressed, nothing after
/// the end section) and describes it.
pub fn inspect<R: Read + Send>(input: R) -> Result<ImageSummary, ReadImageError> {
    inspect_with_key(input, None)
}

/// [`inspect`], with the key of a sealed image.
pub fn inspect_with_key<R: Read + Send>(
    input: R,
    key: Option<&seal::Key>,
) -> Result<ImageSummary, ReadImageError> {
    let mut reader = ImageReader::open_inner(input, true, key)?.refuse_trailing_data();
    while let Some(block) = reader.next_pages()? {
        reader.recycle(block);
    }
    let offset = reader.offset();
    let pages = reader.total_pages();
    let sections = reader.take_sections();
    Ok(ImageSummary {
        version: format!("{}.{}", reader.header().major, reader.header().minor),
        sealed: reader.header().sealed().then_some("aes-256-gcm"),
        digest: format::DigestAlg::of_major(reader.header().major).name(),
        arch: "x86_64",
        process: reader.state().clone(),
        more: reader.tree().processes[1..].to_vec(),
        zombies: reader.tree().zombies.clone(),
        pages,
        raw_bytes: pages * PAGE_SIZE,
        image_bytes: offset,
        sections,
    })
}

/// What the clear part of a sealed image tells: its version and sealing. `None` for an image
/// that is not sealed (or not an image: [`inspect`] says what is wrong with it).
pub fn sealed_header<R: Read>(mut input: R) -> Option<(String, &'static str)> {
    let mut header = [0u8; format::FILE_HEADER_LEN];
    input.read_exact(&mut header).ok()?;
    let (magic_ok, h) = format::FileHeader::decode(&header);
    if !magic_ok || !h.sealed() {
        return None;
    }
    let mut raw = [0u8; seal::SEAL_HEADER_LEN];
    input.read_exact(&mut raw).ok()?;
    let sh = seal::SealHeader::decode(&raw)?;
    Some((format!("{}.{}", h.major, h.minor), sh.aead_name()))
}

#[cfg(test)]
mod tests;
