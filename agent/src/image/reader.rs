//! Reading an image: the header and manifest are read and verified in `open`; page blocks are
//! read ahead by the caller's thread and verified and decompressed on worker threads, so a
//! restore writing memory overlaps with decompression; the end section closes the stream.

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use ferry_proto::image::v1 as pb;
use prost::Message;
use serde::Serialize;

use super::codec::Decompressor;
use super::format::{
    self, Chain, DIGEST_LEN, Digest, DigestAlg, END_PAYLOAD_LEN, EndPayload, FILE_HEADER_LEN,
    FileHeader, SECTION_FIELDS_LEN, SECTION_HEADER_LEN, SectionFields, SectionKind,
    section_digest_with,
};
use super::pages::{self, PageBlock};
use super::pool::{OrderedPool, WorkerLost, default_threads};
use super::seal::{FLAG_SEALED, Key, SEAL_HEADER_LEN, SealHeader, Sealer, TAG_LEN};
use super::wire::{PrescanError, prescan};
use super::{
    BLOCK_BYTES, BLOCK_PAGES, Codec, ImageDefect, MAX_MANIFEST_BYTES, ReadImageError, Section,
    SectionSummary,
};
use crate::state::{PAGE_SIZE, ProcessState, TreeState};

/// A block handed to a worker.
struct BlockJob {
    alg: DigestAlg,
    seq: u64,
    /// The image's sealer, for a sealed image.
    seal: Option<Arc<Sealer>>,
    section: Section,
    offset: u64,
    fields: [u8; SECTION_FIELDS_LEN],
    digest: Digest,
    codec: Codec,
    raw_len: usize,
    first_page: u64,
    page_count: u64,
    stored: Vec<u8>,
    /// A recycled buffer for the decompressed form (empty, or of `OUT_BUF` bytes).
    out: Vec<u8>,
}

/// Bytes of a buffer for a decompressed block: a block and its bitmap. Buffers keep this
/// length while they are reused, so none is filled with zeros again.
const OUT_BUF: usize = BLOCK_BYTES + (BLOCK_PAGES as usize).div_ceil(8);

/// The block's pages, and a buffer to reuse.
type BlockResult = Result<(PageBlock, Vec<u8>), ReadImageError>;

/// Where the reader is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading page blocks.
    Blocks,
    /// The end section was read and verified; blocks may still be in flight.
    EndRead,
    /// Everything was delivered.
    Done,
    /// An error was returned; the reader refuses to go on.
    Failed,
}

/// Reads a checkpoint from an image.
pub struct ImageReader<R: Read + Send> {
    input: R,
    /// Version and architecture from the file header.
    header: FileHeader,
    /// The hash of the image's digests (by its version).
    alg: DigestAlg,
    tree: TreeState,
    /// Pages the manifest announces.
    total_pages: u64,
    /// Offset of the next unread byte.
    offset: u64,
    /// Sequence number of the next section.
    next_seq: u64,
    /// Page blocks read so far (index of the next block).
    blocks: u64,
    /// Pages of the blocks read so far (index of the next page).
    pages: u64,
    chain: Chain,
    pool: Option<OrderedPool<BlockJob, BlockResult>>,
    phase: Phase,
    /// An error met while reading ahead, returned once the blocks before it are delivered,
    /// so errors come in stream order.
    deferred: Option<ReadImageError>,
    /// Section descriptions, kept only by `inspect`.
    sections: Option<Vec<SectionSummary>>,
    /// Buffers to reuse: fresh 1 MiB allocations would cost a page fault per page.
    free_stored: Vec<Vec<u8>>,
    /// Buffers for decompressed blocks, `OUT_BUF` bytes long.
    free_out: Vec<Vec<u8>>,
    /// Whether bytes after the end section are an error (a whole file is read; a stream that
    /// stays open after the image, as a migration's, is not probed).
    refuse_trailing: bool,
    /// The image's sealer, for a sealed image.
    seal: Option<Arc<Sealer>>,
}

impl<R: Read + Send> fmt::Debug for ImageReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageReader")
            .field("total_pages", &self.total_pages)
            .field("offset", &self.offset)
            .field("blocks", &self.blocks)
            .field("pages", &self.pages)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// Reads exactly `buf.len()` bytes, telling truncation apart from other I/O errors.
fn read_exact_at<R: Read>(
    input: &mut R,
    buf: &mut [u8],
    section: Section,
    offset: u64,
) -> Result<(), ReadImageError> {
    input.read_exact(buf).map_err(|source| {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            ReadImageError::Truncated { section, offset }
        } else {
            ReadImageError::Io {
                section,
                offset,
                source,
            }
        }
    })
}

/// Reads a payload of `len` bytes (already capped by the caller). The buffer grows with the
/// data actually read, so a truncated stream that claims a large payload costs little.
fn read_payload<R: Read>(
    input: &mut R,
    len: u64,
    section: Section,
    offset: u64,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, ReadImageError> {
    const FIRST_CHUNK: u64 = 4 << 20;
    buf.clear();
    buf.reserve(usize::try_from(len.min(FIRST_CHUNK)).unwrap_or(0));
    input
        .take(len)
        .read_to_end(&mut buf)
        .map_err(|source| ReadImageError::Io {
            section,
            offset,
            source,
        })?;
    if buf.len() as u64 != len {
        return Err(ReadImageError::Truncated { section, offset });
    }
    Ok(buf)
}

impl<R: Read + Send> ImageReader<R> {
    /// Reads and verifies the header and the manifest, and validates the checkpoint.
    /// A sealed image is refused (no key).
    pub fn open(input: R) -> Result<Self, ReadImageError> {
        Self::open_inner(input, false, None)
    }

    /// [`Self::open`], with the key of a sealed image (an image that is not sealed needs none
    /// and is read as is).
    pub fn open_with_key(input: R, key: Option<&Key>) -> Result<Self, ReadImageError> {
        Self::open_inner(input, false, key)
    }

    pub(super) fn open_inner(
        mut input: R,
        record: bool,
        key: Option<&Key>,
    ) -> Result<Self, ReadImageError> {
        let mut header = [0u8; FILE_HEADER_LEN];
        read_exact_at(&mut input, &mut header, Section::Header, 0)?;
        let (magic_ok, h) = FileHeader::decode(&header);
        if !magic_ok {
            return Err(ReadImageError::BadMagic);
        }
        // Version 1 had only 1.0; 2.1 added the header's flags (a sealed image).
        let max_minor = if h.major == format::VERSION_MAJOR {
            format::SEALED_MINOR
        } else {
            0
        };
        if !(format::OLDEST_MAJOR..=format::VERSION_MAJOR).contains(&h.major) || h.minor > max_minor
        {
            return Err(ReadImageError::UnsupportedVersion {
                major: h.major,
                minor: h.minor,
            });
        }
        if h.arch != format::ARCH_X86_64 {
            return Err(ReadImageError::UnsupportedArch { arch: h.arch });
        }
        // Flags came with version 2.1: bit 0 (sealed) is the only one.
        if h.flags & !FLAG_SEALED != 0 || (h.flags != 0 && (h.major, h.minor) < (2, 1)) {
            return Err(ReadImageError::Defect {
                section: Section::Header,
                offset: 0,
                defect: ImageDefect::ReservedNotZero,
            });
        }
        let mut chain = Chain::new(&header);
        let alg = DigestAlg::of_major(h.major);
        let mut offset = FILE_HEADER_LEN as u64;
        let seal = if h.sealed() {
            let mut raw = [0u8; SEAL_HEADER_LEN];
            read_exact_at(&mut input, &mut raw, Section::Seal, offset)?;
            let sh = SealHeader::decode(&raw).ok_or(ReadImageError::Defect {
                section: Section::Seal,
                offset,
                defect: ImageDefect::UnknownSeal,
            })?;
            let key = key.ok_or(ReadImageError::SealedNoKey)?;
            let sealer =
                Sealer::open_image(key, &header, &sh).ok_or(ReadImageError::SealWrongKey)?;
            chain.bind(&raw);
            offset += SEAL_HEADER_LEN as u64;
            Some(Arc::new(sealer))
        } else {
            None
        };
        let tag = if seal.is_some() { TAG_LEN as u64 } else { 0 };

        let section = Section::Manifest;
        let defect = |defect| ReadImageError::Defect {
            section,
            offset,
            defect,
        };
        let (fields_raw, fields, digest) = read_section_header(&mut input, section, offset)?;
        if fields.kind != SectionKind::Manifest {
            return Err(defect(ImageDefect::UnexpectedKind {
                expected: "manifest",
                found: fields.kind.to_u32(),
            }));
        }
        check_seq(&fields, 0).map_err(defect)?;
        if fields.codec != Codec::None {
            return Err(defect(ImageDefect::CodecNotAllowed(fields.codec)));
        }
        if fields.first_page != 0 || fields.page_count != 0 {
            return Err(defect(ImageDefect::ReservedNotZero));
        }
        if fields.raw_len > MAX_MANIFEST_BYTES {
            return Err(defect(ImageDefect::RawTooLarge {
                len: fields.raw_len,
                max: MAX_MANIFEST_BYTES,
            }));
        }
        if fields.stored_len != fields.raw_len + tag {
            return Err(defect(ImageDefect::StoredLength {
                stored: fields.stored_len,
                raw: fields.raw_len,
                codec: fields.codec,
            }));
        }
        let mut payload = read_payload(&mut input, fields.stored_len, section, offset, Vec::new())?;
        if section_digest_with(alg, &fields_raw, &payload) != digest {
            return Err(defect(ImageDefect::DigestMismatch));
        }
        if let Some(sealer) = &seal {
            let n = sealer
                .open(0, &fields_raw, &mut payload)
                .map_err(|_| defect(ImageDefect::SealBroken))?;
            payload.truncate(n);
        }
        chain.push(&digest);
        // Count repeated fields before prost allocates a struct for each.
        match prescan(&payload) {
            Ok(()) => {}
            Err(PrescanError::TooMany(e)) => return Err(ReadImageError::Manifest(e)),
            // Refused even where prost would be lenient (groups), so nothing skips the count.
            Err(PrescanError::Malformed) => {
                return Err(defect(ImageDefect::Decode(
                    "malformed protobuf wire format".into(),
                )));
            }
        }
        let manifest = pb::Manifest::decode(payload.as_slice())
            .map_err(|e| defect(ImageDefect::Decode(e.to_string())))?;
        let tree = TreeState::try_from(manifest).map_err(ReadImageError::Manifest)?;
        let total_pages = tree.stored_pages();
        let sections = record.then(|| {
            vec![SectionSummary {
                kind: "manifest",
                name: Section::Manifest.to_string(),
                offset,
                stored_size: fields.stored_len,
                raw_size: fields.raw_len,
                codec: fields.codec,
                first_page: None,
                page_count: None,
                digest: format::hex(&digest),
            }]
        });
        Ok(ImageReader {
            input,
            header: h,
            alg,
            tree,
            total_pages,
            offset: offset + SECTION_HEADER_LEN as u64 + fields.stored_len,
            next_seq: 1,
            blocks: 0,
            pages: 0,
            chain,
            pool: None,
            phase: Phase::Blocks,
            deferred: None,
            free_stored: Vec::new(),
            free_out: Vec::new(),
            sections,
            refuse_trailing: false,
            seal,
        })
    }

    /// The validated checkpoint of the (root) process.
    pub fn state(&self) -> &ProcessState {
        // A validated tree is never empty.
        &self.tree.processes[0]
    }

    /// The checkpoint of the (root) process, to adapt it to the host it is restored on (a
    /// migration points its files at their local copies). Validated once, when the image was
    /// opened.
    pub fn state_mut(&mut self) -> &mut ProcessState {
        &mut self.tree.processes[0]
    }

    /// The validated checkpoint of the whole tree (one process unless dumped with `--tree`).
    pub fn tree(&self) -> &TreeState {
        &self.tree
    }

    /// Pages the manifest announces (the sum of every VMA's page runs).
    pub fn total_pages(&self) -> u64 {
        self.total_pages
    }

    /// Gives back the input, positioned after the last section read.
    pub fn into_inner(self) -> R {
        self.input
    }

    /// The next block of decompressed, verified pages (at most `BLOCK_PAGES` pages) in stream
    /// order; `None` after the verified end section. After an error every later call fails too.
    pub fn next_pages(&mut self) -> Result<Option<PageBlock>, ReadImageError> {
        match self.phase {
            Phase::Done => return Ok(None),
            Phase::Failed => return Err(ReadImageError::AlreadyFailed),
            Phase::Blocks | Phase::EndRead => {}
        }
        let result = self.next_inner();
        match &result {
            Err(_) => {
                self.phase = Phase::Failed;
                // Stop the workers now rather than when the reader is dropped.
                self.pool = None;
            }
            Ok(None) => self.phase = Phase::Done,
            Ok(Some(_)) => {}
        }
        result
    }

    /// Hands back a block returned by [`Self::next_pages`] once it is no longer needed, so the
    /// reader can reuse its memory for later blocks. Optional; it only saves page faults.
    pub fn recycle(&mut self, block: PageBlock) {
        self.recycle_buffer(block.into_buffer());
    }

    fn recycle_buffer(&mut self, buf: Vec<u8>) {
        const KEEP: usize = 16;
        if buf.len() == OUT_BUF {
            if self.free_out.len() < KEEP {
                self.free_out.push(buf);
            }
        } else if self.free_stored.len() < KEEP && buf.capacity() >= OUT_BUF {
            self.free_stored.push(buf);
        }
    }

    /// A buffer to read a stored payload into (read without filling it first).
    fn take_stored(&mut self) -> Vec<u8> {
        self.free_stored
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(OUT_BUF))
    }

    /// A buffer for a decompressed block (empty: the worker makes one).
    fn take_out(&mut self) -> Vec<u8> {
        self.free_out.pop().unwrap_or_default()
    }

    /// Makes any byte after the end section an error (for an image read from a file: its end
    /// must be the file's end, as `inspect` checks). The error comes with the end section,
    /// before [`ImageReader::next_pages`] reports the end.
    pub fn refuse_trailing_data(mut self) -> Self {
        self.refuse_trailing = true;
        self
    }

    /// Fails if the input holds anything after the end section.
    fn check_no_trailing(&mut self) -> Result<(), ReadImageError> {
        let offset = self.offset;
        let mut probe = [0u8; 1];
        let trailing = loop {
            match self.input.read(&mut probe) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ReadImageError::Io {
                        section: Section::AfterEnd,
                        offset,
                        source,
                    });
                }
            }
        };
        if trailing != 0 {
            return Err(ReadImageError::Defect {
                section: Section::AfterEnd,
                offset,
                defect: ImageDefect::TrailingData,
            });
        }
        Ok(())
    }

    pub(super) fn take_sections(&mut self) -> Vec<SectionSummary> {
        self.sections.take().unwrap_or_default()
    }

    pub(super) fn header(&self) -> FileHeader {
        self.header
    }

    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    fn next_inner(&mut self) -> Result<Option<PageBlock>, ReadImageError> {
        if self.pool.is_none() {
            let threads = default_threads();
            let pool = OrderedPool::new("ferry-decompress", threads, 2 * threads, || {
                let mut d = Decompressor::new();
                move |job: BlockJob| open_block(&mut d, job)
            })
            .map_err(|source| ReadImageError::StartWorkers { source })?;
            self.pool = Some(pool);
        }
        // Read ahead until the workers have enough to do, the end section is reached, or
        // reading fails.
        while self.phase == Phase::Blocks
            && self.deferred.is_none()
            && !self.pool.as_ref().is_some_and(|p| p.is_full())
        {
            if let Err(e) = self.read_ahead() {
                self.deferred = Some(e);
            }
        }
        let Some(pool) = self.pool.as_mut() else {
            return Err(ReadImageError::WorkerLost);
        };
        match pool.next() {
            Some(result) => {
                let (data, spare) = result.map_err(|WorkerLost| ReadImageError::WorkerLost)??;
                self.recycle_buffer(spare);
                Ok(Some(data))
            }
            None => match self.deferred.take() {
                Some(e) => Err(e),
                // Nothing in flight and the end section is verified.
                None => Ok(None),
            },
        }
    }

    /// Reads the next section: a page block goes to a worker, the end section is verified.
    fn read_ahead(&mut self) -> Result<(), ReadImageError> {
        let offset = self.offset;
        let index = self.blocks;
        let (fields_raw, fields, digest) =
            read_section_header(&mut self.input, Section::BlockOrEnd(index), offset)?;
        match fields.kind {
            SectionKind::Pages => {
                let section = Section::PagesBlock(index);
                let raw_len =
                    self.check_block(&fields)
                        .map_err(|defect| ReadImageError::Defect {
                            section,
                            offset,
                            defect,
                        })?;
                let buf = self.take_stored();
                let stored =
                    read_payload(&mut self.input, fields.stored_len, section, offset, buf)?;
                self.offset += SECTION_HEADER_LEN as u64 + fields.stored_len;
                self.chain.push(&digest);
                if let Some(sections) = &mut self.sections {
                    sections.push(SectionSummary {
                        kind: "pages",
                        name: section.to_string(),
                        offset,
                        stored_size: fields.stored_len,
                        raw_size: fields.raw_len,
                        codec: fields.codec,
                        first_page: Some(fields.first_page),
                        page_count: Some(fields.page_count),
                        digest: format::hex(&digest),
                    });
                }
                self.next_seq += 1;
                self.blocks += 1;
                self.pages += fields.page_count;
                let job = BlockJob {
                    alg: self.alg,
                    seq: fields.seq,
                    seal: self.seal.clone(),
                    section,
                    offset,
                    fields: fields_raw,
                    digest,
                    codec: fields.codec,
                    raw_len,
                    first_page: fields.first_page,
                    page_count: fields.page_count,
                    stored,
                    out: self.take_out(),
                };
                let Some(pool) = self.pool.as_mut() else {
                    return Err(ReadImageError::WorkerLost);
                };
                pool.submit(job)
                    .map_err(|WorkerLost| ReadImageError::WorkerLost)?;
                Ok(())
            }
            SectionKind::End => self.read_end(offset, fields_raw, fields, digest),
            SectionKind::Manifest => Err(ReadImageError::Defect {
                section: Section::BlockOrEnd(index),
                offset,
                defect: ImageDefect::UnexpectedKind {
                    expected: "pages or end",
                    found: fields.kind.to_u32(),
                },
            }),
        }
    }

    /// Checks a page block's header against the stream so far; returns its raw length.
    fn check_block(&self, f: &SectionFields) -> Result<usize, ImageDefect> {
        check_seq(f, self.next_seq)?;
        if f.page_count == 0 || f.page_count > BLOCK_PAGES {
            return Err(ImageDefect::PageCount {
                count: f.page_count,
                max: BLOCK_PAGES,
            });
        }
        if f.first_page != self.pages {
            return Err(ImageDefect::FirstPage {
                found: f.first_page,
                expected: self.pages,
            });
        }
        if f.page_count > self.total_pages - self.pages {
            return Err(ImageDefect::BeyondManifest {
                first: f.first_page,
                count: f.page_count,
                total: self.total_pages,
            });
        }
        // The non-zero pages and the zero-page bitmap; page_count <= BLOCK_PAGES, so this
        // cannot overflow.
        let bitmap = pages::bitmap_len(f.page_count);
        let stored_pages = f
            .raw_len
            .checked_sub(bitmap)
            .filter(|b| b % PAGE_SIZE == 0)
            .map(|b| b / PAGE_SIZE);
        if stored_pages.is_none_or(|n| n > f.page_count) {
            return Err(ImageDefect::RawLength {
                len: f.raw_len,
                pages: f.page_count,
            });
        }
        // A sealed block carries its tag behind the payload.
        let tag = if self.seal.is_some() {
            TAG_LEN as u64
        } else {
            0
        };
        let stored_ok = match f.stored_len.checked_sub(tag) {
            None => false,
            Some(payload) => match f.codec {
                Codec::None => payload == f.raw_len,
                // The writer stores a block that does not shrink as is.
                Codec::Zstd | Codec::Lz4 => payload < f.raw_len,
            },
        };
        if !stored_ok {
            return Err(ImageDefect::StoredLength {
                stored: f.stored_len,
                raw: f.raw_len,
                codec: f.codec,
            });
        }
        usize::try_from(f.raw_len).map_err(|_| ImageDefect::RawTooLarge {
            len: f.raw_len,
            max: BLOCK_BYTES as u64,
        })
    }

    fn read_end(
        &mut self,
        offset: u64,
        fields_raw: [u8; SECTION_FIELDS_LEN],
        fields: SectionFields,
        digest: Digest,
    ) -> Result<(), ReadImageError> {
        let section = Section::End;
        let defect = |defect| ReadImageError::Defect {
            section,
            offset,
            defect,
        };
        check_seq(&fields, self.next_seq).map_err(defect)?;
        if fields.codec != Codec::None {
            return Err(defect(ImageDefect::CodecNotAllowed(fields.codec)));
        }
        if fields.first_page != 0 || fields.page_count != 0 {
            return Err(defect(ImageDefect::ReservedNotZero));
        }
        let tag = if self.seal.is_some() { TAG_LEN } else { 0 };
        let len = (END_PAYLOAD_LEN + tag) as u64;
        if fields.raw_len != END_PAYLOAD_LEN as u64 || fields.stored_len != len {
            return Err(defect(ImageDefect::StoredLength {
                stored: fields.stored_len,
                raw: fields.raw_len,
                codec: fields.codec,
            }));
        }
        let mut stored = [0u8; END_PAYLOAD_LEN + TAG_LEN];
        let stored = &mut stored[..END_PAYLOAD_LEN + tag];
        read_exact_at(&mut self.input, stored, section, offset)?;
        if section_digest_with(self.alg, &fields_raw, stored) != digest {
            return Err(defect(ImageDefect::DigestMismatch));
        }
        if let Some(sealer) = &self.seal {
            sealer
                .open(fields.seq, &fields_raw, stored)
                .map_err(|_| defect(ImageDefect::SealBroken))?;
        }
        let mut payload = [0u8; END_PAYLOAD_LEN];
        payload.copy_from_slice(&stored[..END_PAYLOAD_LEN]);
        let end = EndPayload::decode(&payload);
        if end.total_pages != self.total_pages || self.pages != self.total_pages {
            return Err(defect(ImageDefect::EndPages {
                end: end.total_pages,
                manifest: self.total_pages,
                read: self.pages,
            }));
        }
        if end.blocks != self.blocks {
            return Err(defect(ImageDefect::EndBlocks {
                end: end.blocks,
                read: self.blocks,
            }));
        }
        if end.chain != self.chain.value() {
            return Err(defect(ImageDefect::ChainMismatch));
        }
        self.offset += SECTION_HEADER_LEN as u64 + len;
        if let Some(sections) = &mut self.sections {
            sections.push(SectionSummary {
                kind: "end",
                name: section.to_string(),
                offset,
                stored_size: len,
                raw_size: len,
                codec: Codec::None,
                first_page: None,
                page_count: None,
                digest: format::hex(&digest),
            });
        }
        self.phase = Phase::EndRead;
        if self.refuse_trailing {
            self.check_no_trailing()?;
        }
        Ok(())
    }
}

/// Reads a section header: the encoded fields, their decoded form, and the stored digest.
fn read_section_header<R: Read>(
    input: &mut R,
    section: Section,
    offset: u64,
) -> Result<([u8; SECTION_FIELDS_LEN], SectionFields, Digest), ReadImageError> {
    let mut buf = [0u8; SECTION_HEADER_LEN];
    read_exact_at(input, &mut buf, section, offset)?;
    let mut fields_raw = [0u8; SECTION_FIELDS_LEN];
    fields_raw.copy_from_slice(&buf[..SECTION_FIELDS_LEN]);
    let mut digest = [0u8; DIGEST_LEN];
    digest.copy_from_slice(&buf[SECTION_FIELDS_LEN..]);
    let fields = SectionFields::decode(&fields_raw).map_err(|defect| ReadImageError::Defect {
        section,
        offset,
        defect,
    })?;
    Ok((fields_raw, fields, digest))
}

fn check_seq(f: &SectionFields, expected: u64) -> Result<(), ImageDefect> {
    if f.seq != expected {
        return Err(ImageDefect::Sequence {
            found: f.seq,
            expected,
        });
    }
    Ok(())
}

/// Worker side: verify the digest of one block, then decompress it.
fn open_block(d: &mut Decompressor, job: BlockJob) -> BlockResult {
    let defect = |defect| ReadImageError::Defect {
        section: job.section,
        offset: job.offset,
        defect,
    };
    // The digest covers the stored bytes, so nothing unverified reaches the decompressor.
    if section_digest_with(job.alg, &job.fields, &job.stored) != job.digest {
        return Err(defect(ImageDefect::DigestMismatch));
    }
    let mut stored = job.stored;
    // Sealed: opened in place; nothing that does not authenticate reaches the decompressor.
    let payload_len = match &job.seal {
        Some(sealer) => sealer
            .open(job.seq, &job.fields, &mut stored)
            .map_err(|_| defect(ImageDefect::SealBroken))?,
        None => stored.len(),
    };
    let (data, spare) = match job.codec {
        Codec::None => (stored, job.out),
        codec => {
            let mut out = job.out;
            if out.len() < OUT_BUF {
                out = vec![0u8; OUT_BUF];
            }
            // raw_len <= OUT_BUF: checked against the block's pages before.
            d.decompress(codec, &stored[..payload_len], &mut out[..job.raw_len])
                .map_err(defect)?;
            (out, stored)
        }
    };
    match PageBlock::new(job.first_page, job.page_count, data, job.raw_len) {
        Ok(block) => Ok((block, spare)),
        Err((_, d)) => Err(defect(d)),
    }
}

/// A description of an image, made by [`super::inspect`].
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    /// Format version `major.minor`.
    pub version: String,
    /// The hash of the section digests and the chain: `blake3` (`sha256` in version 1).
    pub digest: &'static str,
    /// The AEAD of a sealed image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed: Option<&'static str>,
    /// Architecture the image is for.
    pub arch: &'static str,
    /// The checkpoint (of the root process, with `--tree`).
    pub process: ProcessState,
    /// The root's descendants, with `--tree`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<ProcessState>,
    /// Exited children not waited for yet, with `--tree`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zombies: Vec<crate::state::ZombieState>,
    /// Pages in the page stream.
    pub pages: u64,
    /// Bytes of page data before compression.
    pub raw_bytes: u64,
    /// Bytes of the whole image.
    pub image_bytes: u64,
    /// Every section in order.
    pub sections: Vec<SectionSummary>,
}
