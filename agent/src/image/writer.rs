//! Writing an image: header and manifest up front, then page blocks compressed on worker
//! threads and written strictly in order, then the end section.

use std::fmt;
use std::io::{IoSlice, Write};
use std::sync::Arc;

use ferry_proto::image::v1 as pb;
use prost::Message;

use super::codec::{Compressor, compress_bound};
use super::format::{
    Chain, Digest, END_PAYLOAD_LEN, EndPayload, FileHeader, SECTION_HEADER_LEN, SectionFields,
    SectionKind, section_digest,
};
use super::pages;
use super::pool::{OrderedPool, WorkerLost, default_threads};
use super::seal::{Key, Sealer, TAG_LEN};
use super::validate::{validate, validate_tree};
use super::{BLOCK_BYTES, BLOCK_PAGES, Codec, MAX_MANIFEST_BYTES, WriteImageError, WriteStats};
use crate::state::{PAGE_SIZE, ProcessState, TreeState};

/// Bytes of a block buffer: a whole block and room for its zero-page bitmap behind it, so a
/// block is packed in place.
const BLOCK_BUF: usize = BLOCK_BYTES + (BLOCK_PAGES as usize).div_ceil(8);
/// Bytes allocated for a block buffer: room for a seal's tag behind the packed block.
const BLOCK_ALLOC: usize = BLOCK_BUF + TAG_LEN;

/// A block handed to a worker.
struct BlockJob {
    seq: u64,
    first_page: u64,
    /// `BLOCK_BUF` bytes, the pages in the first `len`.
    raw: Vec<u8>,
    len: usize,
    /// A recycled buffer for the compressed form (`compress_bound(BLOCK_BUF)` bytes and a
    /// tag).
    out: Vec<u8>,
    /// The image's sealer, for a sealed image.
    seal: Option<Arc<Sealer>>,
}

/// A block ready to be written: section header with digest, and payload.
struct SealedBlock {
    header: [u8; SECTION_HEADER_LEN],
    digest: Digest,
    raw: Vec<u8>,
    out: Vec<u8>,
    /// The payload: `out[..n]` when compressed, `raw[..n]` when stored as is.
    compressed: bool,
    payload_len: usize,
    /// Zero pages left out of the block.
    zero_pages: u64,
}

impl SealedBlock {
    fn payload(&self) -> &[u8] {
        if self.compressed {
            &self.out[..self.payload_len]
        } else {
            &self.raw[..self.payload_len]
        }
    }
}

type BlockResult = Result<SealedBlock, std::io::Error>;

/// Streams a checkpoint into an image.
///
/// Page bytes go straight into the block being filled ([`ImageWriter::page_room`], then
/// [`ImageWriter::commit_pages`]): a dump reads the process's memory into it with no copy in
/// between. Full blocks are packed, compressed and digested on worker threads while the
/// caller fills the next; the caller's thread writes them in order, header and payload in one
/// vectored write.
pub struct ImageWriter<W: Write + Send> {
    out: W,
    /// Workers, for an image of more than one block.
    pool: Option<OrderedPool<BlockJob, BlockResult>>,
    /// Without workers: the compressor of the caller's thread.
    inline: Option<std::io::Result<Compressor>>,
    /// The block being filled (`BLOCK_BUF` bytes) and how many bytes of it are.
    block: Vec<u8>,
    filled: usize,
    /// Pages the manifest announces.
    expected_pages: u64,
    /// Pages already handed to workers.
    submitted_pages: u64,
    /// Sequence number of the next section.
    next_seq: u64,
    blocks: u64,
    chain: Chain,
    /// Bytes written so far.
    offset: u64,
    /// Zero pages left out so far.
    zero_pages: u64,
    /// Raw and output buffers to reuse: fresh 1 MiB allocations would cost a page fault per
    /// page.
    free_raw: Vec<Vec<u8>>,
    free_out: Vec<Vec<u8>>,
    /// The image's sealer, for a sealed image.
    seal: Option<Arc<Sealer>>,
}

impl<W: Write + Send> fmt::Debug for ImageWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageWriter")
            .field("expected_pages", &self.expected_pages)
            .field("submitted_pages", &self.submitted_pages)
            .field("blocks", &self.blocks)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> WriteImageError {
    move |source| WriteImageError::Io { step, source }
}

/// Writes every byte of `bufs` with as few calls as the output allows.
fn write_all_vectored<W: Write>(out: &mut W, mut bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn header_of(fields: &SectionFields, payload: &[u8]) -> ([u8; SECTION_HEADER_LEN], Digest) {
    let encoded = fields.encode();
    let digest = section_digest(&encoded, payload);
    let mut header = [0u8; SECTION_HEADER_LEN];
    header[..encoded.len()].copy_from_slice(&encoded);
    header[encoded.len()..].copy_from_slice(&digest);
    (header, digest)
}

impl<W: Write + Send> ImageWriter<W> {
    /// Validates `state`, then writes the header and the manifest.
    pub fn new(out: W, state: &ProcessState, codec: Codec) -> Result<Self, WriteImageError> {
        // An image the reader would refuse is useless: refuse it here, while the process is
        // still there to be dumped again.
        validate(state).map_err(WriteImageError::InvalidState)?;
        let expected_pages = state.mm.vmas.iter().map(|v| v.stored_pages()).sum();
        Self::start(out, pb::Manifest::from(state), expected_pages, codec, None)
    }

    /// Validates a process tree, then writes the header and the manifest. The pages of its
    /// processes follow one another, in the tree's order.
    pub fn new_tree(out: W, tree: &TreeState, codec: Codec) -> Result<Self, WriteImageError> {
        Self::new_tree_sealed(out, tree, codec, None)
    }

    /// [`Self::new_tree`], sealed under `key` when one is given (docs/image-format.md,
    /// "Sealed images").
    pub fn new_tree_sealed(
        out: W,
        tree: &TreeState,
        codec: Codec,
        key: Option<&Key>,
    ) -> Result<Self, WriteImageError> {
        validate_tree(tree).map_err(WriteImageError::InvalidState)?;
        Self::start(
            out,
            pb::Manifest::from(tree),
            tree.stored_pages(),
            codec,
            key,
        )
    }

    fn start(
        mut out: W,
        manifest: pb::Manifest,
        expected_pages: u64,
        codec: Codec,
        key: Option<&Key>,
    ) -> Result<Self, WriteImageError> {
        let mut manifest = manifest.encode_to_vec();
        if manifest.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(WriteImageError::ManifestTooLarge {
                len: manifest.len() as u64,
                max: MAX_MANIFEST_BYTES,
            });
        }
        // A sealed image says so in its header: version 2.1, flag 1, and the seal header.
        let header = match key {
            Some(_) => FileHeader::SEALED,
            None => FileHeader::CURRENT,
        }
        .encode();
        let mut chain = Chain::new(&header);
        let (seal, seal_header) = match key {
            Some(key) => {
                let (sealer, h) = Sealer::new_image(key, &header).map_err(WriteImageError::Seal)?;
                let encoded = h.encode();
                chain.bind(&encoded);
                (Some(Arc::new(sealer)), Some(encoded))
            }
            None => (None, None),
        };
        let len = manifest.len() as u64;
        let fields = SectionFields {
            kind: SectionKind::Manifest,
            codec: Codec::None,
            seq: 0,
            raw_len: len,
            stored_len: len + if seal.is_some() { TAG_LEN as u64 } else { 0 },
            first_page: 0,
            page_count: 0,
        };
        if let Some(sealer) = &seal {
            manifest.resize(manifest.len() + TAG_LEN, 0);
            sealer
                .seal(0, &fields.encode(), &mut manifest, len as usize)
                .map_err(|_| WriteImageError::SealFailed)?;
        }
        let (section, digest) = header_of(&fields, &manifest);
        let seal_bytes: &[u8] = seal_header.as_ref().map_or(&[], |h| &h[..]);
        write_all_vectored(
            &mut out,
            &mut [
                IoSlice::new(&header),
                IoSlice::new(seal_bytes),
                IoSlice::new(&section),
                IoSlice::new(&manifest),
            ],
        )
        .map_err(io("manifest"))?;
        chain.push(&digest);

        // Workers start only for a process with more than one block: for a small one the
        // caller's thread does the work itself (no thread to start and join).
        let (pool, inline) = if expected_pages > BLOCK_PAGES {
            let threads = default_threads();
            let pool = OrderedPool::new("ferry-compress", threads, 2 * threads, move || {
                let mut compressor = Compressor::new(codec);
                move |job: BlockJob| pack_block(&mut compressor, job)
            })
            .map_err(io("start compression workers"))?;
            (Some(pool), None)
        } else {
            (None, Some(Compressor::new(codec)))
        };
        Ok(ImageWriter {
            out,
            pool,
            inline,
            block: Vec::new(),
            filled: 0,
            expected_pages,
            submitted_pages: 0,
            next_seq: 1,
            blocks: 0,
            chain,
            offset: (header.len() + seal_bytes.len() + manifest.len() + SECTION_HEADER_LEN) as u64,
            free_raw: Vec::new(),
            free_out: Vec::new(),
            zero_pages: 0,
            seal,
        })
    }

    /// Room for page bytes in the block being filled: at most one block, never empty.
    /// Fill a prefix of whole pages, then [`Self::commit_pages`] it.
    pub fn page_room(&mut self) -> &mut [u8] {
        if self.block.is_empty() {
            self.block = self.take_raw();
        }
        &mut self.block[self.filled..BLOCK_BYTES]
    }

    /// Adds the first `len` bytes of [`Self::page_room`] (whole pages) to the page stream.
    pub fn commit_pages(&mut self, len: usize) -> Result<(), WriteImageError> {
        if !(len as u64).is_multiple_of(PAGE_SIZE) {
            return Err(WriteImageError::UnalignedPages { len: len as u64 });
        }
        if len > BLOCK_BYTES - self.filled {
            return Err(WriteImageError::BeyondRoom {
                len: len as u64,
                room: (BLOCK_BYTES - self.filled) as u64,
            });
        }
        let after = self.submitted_pages + (self.filled + len) as u64 / PAGE_SIZE;
        if after > self.expected_pages {
            return Err(WriteImageError::PageCountMismatch {
                written: after,
                expected: self.expected_pages,
            });
        }
        self.filled += len;
        if self.filled == BLOCK_BYTES {
            self.submit_block()?;
        }
        Ok(())
    }

    /// Appends page bytes (a multiple of `PAGE_SIZE`) in stream order.
    pub fn write_pages(&mut self, mut data: &[u8]) -> Result<(), WriteImageError> {
        if !(data.len() as u64).is_multiple_of(PAGE_SIZE) {
            return Err(WriteImageError::UnalignedPages {
                len: data.len() as u64,
            });
        }
        let buffered = self.filled as u64 / PAGE_SIZE;
        let after = self.submitted_pages + buffered + data.len() as u64 / PAGE_SIZE;
        if after > self.expected_pages {
            return Err(WriteImageError::PageCountMismatch {
                written: after,
                expected: self.expected_pages,
            });
        }
        while !data.is_empty() {
            let room = self.page_room();
            let n = room.len().min(data.len());
            room[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            self.commit_pages(n)?;
        }
        Ok(())
    }

    /// Writes the remaining blocks and the end section, flushes, and returns the output.
    /// Fails if the pages written are not the number the manifest announces.
    pub fn finish(mut self) -> Result<(W, WriteStats), WriteImageError> {
        let written = self.submitted_pages + self.filled as u64 / PAGE_SIZE;
        if written != self.expected_pages {
            return Err(WriteImageError::PageCountMismatch {
                written,
                expected: self.expected_pages,
            });
        }
        if self.filled > 0 {
            self.submit_block()?;
        }
        while self.pool.as_ref().is_some_and(|p| p.in_flight() > 0) {
            self.write_oldest()?;
        }
        let mut end = [0u8; END_PAYLOAD_LEN + TAG_LEN];
        end[..END_PAYLOAD_LEN].copy_from_slice(
            &EndPayload {
                total_pages: self.expected_pages,
                blocks: self.blocks,
                chain: self.chain.value(),
            }
            .encode(),
        );
        let tag = if self.seal.is_some() { TAG_LEN } else { 0 };
        let fields = SectionFields {
            kind: SectionKind::End,
            codec: Codec::None,
            seq: self.next_seq,
            raw_len: END_PAYLOAD_LEN as u64,
            stored_len: (END_PAYLOAD_LEN + tag) as u64,
            first_page: 0,
            page_count: 0,
        };
        if let Some(sealer) = &self.seal {
            sealer
                .seal(self.next_seq, &fields.encode(), &mut end, END_PAYLOAD_LEN)
                .map_err(|_| WriteImageError::SealFailed)?;
        }
        let end = &end[..END_PAYLOAD_LEN + tag];
        let (section, _) = header_of(&fields, end);
        write_all_vectored(
            &mut self.out,
            &mut [IoSlice::new(&section), IoSlice::new(end)],
        )
        .map_err(io("end"))?;
        self.offset += (SECTION_HEADER_LEN + end.len()) as u64;
        self.out.flush().map_err(io("flush"))?;
        let stats = WriteStats {
            pages: self.expected_pages,
            raw_bytes: self.expected_pages * PAGE_SIZE,
            image_bytes: self.offset,
            zero_pages: self.zero_pages,
        };
        let ImageWriter { out, .. } = self;
        Ok((out, stats))
    }

    fn submit_block(&mut self) -> Result<(), WriteImageError> {
        if self.pool.as_ref().is_some_and(|p| p.is_full()) {
            self.write_oldest()?;
        }
        let raw = std::mem::take(&mut self.block);
        let len = std::mem::take(&mut self.filled);
        let pages = len as u64 / PAGE_SIZE;
        debug_assert!(pages <= BLOCK_PAGES);
        let job = BlockJob {
            seq: self.next_seq,
            first_page: self.submitted_pages,
            raw,
            len,
            out: self.take_out(),
            seal: self.seal.clone(),
        };
        self.next_seq += 1;
        self.blocks += 1;
        self.submitted_pages += pages;
        match (self.pool.as_mut(), self.inline.as_mut()) {
            (Some(pool), _) => pool
                .submit(job)
                .map_err(|WorkerLost| WriteImageError::WorkerLost),
            (None, Some(compressor)) => {
                // A small image: sealed here, written at once.
                let sealed = pack_block(compressor, job);
                self.write_sealed(sealed)
            }
            (None, None) => Err(WriteImageError::WorkerLost),
        }
    }

    fn write_oldest(&mut self) -> Result<(), WriteImageError> {
        let Some(result) = self.pool.as_mut().and_then(OrderedPool::next) else {
            return Ok(());
        };
        let sealed = result.map_err(|WorkerLost| WriteImageError::WorkerLost)?;
        self.write_sealed(sealed)
    }

    fn write_sealed(&mut self, sealed: BlockResult) -> Result<(), WriteImageError> {
        let sealed = sealed.map_err(|source| WriteImageError::Compress { source })?;
        write_all_vectored(
            &mut self.out,
            &mut [IoSlice::new(&sealed.header), IoSlice::new(sealed.payload())],
        )
        .map_err(io("pages"))?;
        self.chain.push(&sealed.digest);
        self.zero_pages += sealed.zero_pages;
        self.offset += (SECTION_HEADER_LEN + sealed.payload_len) as u64;
        // Enough for every job in flight plus the block being filled.
        let keep = self.pool.as_ref().map_or(0, OrderedPool::depth) + 2;
        if self.free_raw.len() < keep {
            self.free_raw.push(sealed.raw);
        }
        if self.free_out.len() < keep {
            self.free_out.push(sealed.out);
        }
        Ok(())
    }

    fn take_raw(&mut self) -> Vec<u8> {
        self.free_raw
            .pop()
            .unwrap_or_else(|| vec![0u8; BLOCK_ALLOC])
    }

    fn take_out(&mut self) -> Vec<u8> {
        self.free_out
            .pop()
            .unwrap_or_else(|| vec![0u8; compress_bound(BLOCK_BUF) + TAG_LEN])
    }
}

/// Worker side: pack one block (zero pages out), compress it, seal it in a sealed image, then
/// digest its header and payload.
fn pack_block(
    compressor: &mut std::io::Result<Compressor>,
    job: BlockJob,
) -> Result<SealedBlock, std::io::Error> {
    let compressor = compressor
        .as_mut()
        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
    let BlockJob {
        seq,
        first_page,
        mut raw,
        len,
        mut out,
        seal,
    } = job;
    let page_count = len as u64 / PAGE_SIZE;
    let (packed, zero_pages) = pages::pack_in(&mut raw, len);
    let compressed = compressor.compress(&raw[..packed], &mut out)?;
    let (codec, payload_len) = match compressed {
        Some(n) => (compressor.codec(), n),
        None => (Codec::None, packed),
    };
    let tag = if seal.is_some() { TAG_LEN } else { 0 };
    let fields = SectionFields {
        kind: SectionKind::Pages,
        codec,
        seq,
        raw_len: packed as u64,
        stored_len: (payload_len + tag) as u64,
        first_page,
        page_count,
    };
    let buf = if compressed.is_some() {
        &mut out
    } else {
        &mut raw
    };
    let payload_len = match &seal {
        Some(sealer) => sealer
            .seal(seq, &fields.encode(), buf, payload_len)
            .map_err(|_| std::io::Error::other("sealing a block failed"))?,
        None => payload_len,
    };
    let payload = &buf[..payload_len];
    let (header, digest) = header_of(&fields, payload);
    Ok(SealedBlock {
        header,
        digest,
        raw,
        out,
        compressed: compressed.is_some(),
        payload_len,
        zero_pages,
    })
}
