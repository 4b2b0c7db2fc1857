//! Writing an image: header and manifest up front, then page blocks compressed on worker
//! threads and written strictly in order, then the end section.

use std::fmt;
use std::io::Write;

use ferry_proto::image::v1 as pb;
use prost::Message;

use super::codec::Compressor;
use super::format::{
    Chain, Digest, END_PAYLOAD_LEN, EndPayload, FileHeader, SECTION_HEADER_LEN, SectionFields,
    SectionKind, section_digest,
};
use super::pages;
use super::pool::{OrderedPool, WorkerLost, default_threads};
use super::validate::{validate, validate_tree};
use super::{BLOCK_BYTES, BLOCK_PAGES, Codec, MAX_MANIFEST_BYTES, WriteImageError, WriteStats};
use crate::state::{PAGE_SIZE, ProcessState, TreeState};

/// A block handed to a worker.
struct BlockJob {
    seq: u64,
    first_page: u64,
    raw: Vec<u8>,
    /// A recycled buffer for the compressed form.
    out: Vec<u8>,
}

/// A block ready to be written: section header with digest, and payload.
struct SealedBlock {
    header: [u8; SECTION_HEADER_LEN],
    digest: Digest,
    payload: Vec<u8>,
    /// The job's other buffer, for reuse.
    spare: Vec<u8>,
    /// Zero pages left out of the block.
    zero_pages: u64,
}

type BlockResult = Result<SealedBlock, std::io::Error>;

/// Streams a checkpoint into an image.
pub struct ImageWriter<W: Write + Send> {
    out: W,
    pool: OrderedPool<BlockJob, BlockResult>,
    /// The block being filled.
    block: Vec<u8>,
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
    /// Block buffers to reuse: fresh 1 MiB allocations would cost a page fault per page.
    free: Vec<Vec<u8>>,
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

fn seal(fields: SectionFields, payload: Vec<u8>, spare: Vec<u8>) -> SealedBlock {
    let encoded = fields.encode();
    let digest = section_digest(&encoded, &payload);
    let mut header = [0u8; SECTION_HEADER_LEN];
    header[..encoded.len()].copy_from_slice(&encoded);
    header[encoded.len()..].copy_from_slice(&digest);
    SealedBlock {
        header,
        digest,
        payload,
        spare,
        zero_pages: 0,
    }
}

impl<W: Write + Send> ImageWriter<W> {
    /// Validates `state`, then writes the header and the manifest.
    pub fn new(out: W, state: &ProcessState, codec: Codec) -> Result<Self, WriteImageError> {
        // An image the reader would refuse is useless: refuse it here, while the process is
        // still there to be dumped again.
        validate(state).map_err(WriteImageError::InvalidState)?;
        let expected_pages = state.mm.vmas.iter().map(|v| v.stored_pages()).sum();
        Self::start(out, pb::Manifest::from(state), expected_pages, codec)
    }

    /// Validates a process tree, then writes the header and the manifest. The pages of its
    /// processes follow one another, in the tree's order.
    pub fn new_tree(out: W, tree: &TreeState, codec: Codec) -> Result<Self, WriteImageError> {
        validate_tree(tree).map_err(WriteImageError::InvalidState)?;
        Self::start(out, pb::Manifest::from(tree), tree.stored_pages(), codec)
    }

    fn start(
        mut out: W,
        manifest: pb::Manifest,
        expected_pages: u64,
        codec: Codec,
    ) -> Result<Self, WriteImageError> {
        let manifest = manifest.encode_to_vec();
        if manifest.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(WriteImageError::ManifestTooLarge {
                len: manifest.len() as u64,
                max: MAX_MANIFEST_BYTES,
            });
        }
        let header = FileHeader::CURRENT.encode();
        out.write_all(&header).map_err(io("header"))?;
        let mut chain = Chain::new(&header);
        let len = manifest.len() as u64;
        let sealed = seal(
            SectionFields {
                kind: SectionKind::Manifest,
                codec: Codec::None,
                seq: 0,
                raw_len: len,
                stored_len: len,
                first_page: 0,
                page_count: 0,
            },
            manifest,
            Vec::new(),
        );
        out.write_all(&sealed.header).map_err(io("manifest"))?;
        out.write_all(&sealed.payload).map_err(io("manifest"))?;
        chain.push(&sealed.digest);

        let threads = default_threads();
        let pool = OrderedPool::new("ferry-compress", threads, 2 * threads, move || {
            let mut compressor = Compressor::new(codec);
            move |job: BlockJob| seal_block(&mut compressor, job)
        })
        .map_err(io("start compression workers"))?;
        Ok(ImageWriter {
            out,
            pool,
            block: Vec::with_capacity(BLOCK_BYTES),
            expected_pages,
            submitted_pages: 0,
            next_seq: 1,
            blocks: 0,
            chain,
            offset: (header.len() + SECTION_HEADER_LEN) as u64 + len,
            free: Vec::new(),
            zero_pages: 0,
        })
    }

    /// Appends page bytes (a multiple of `PAGE_SIZE`) in stream order.
    pub fn write_pages(&mut self, mut data: &[u8]) -> Result<(), WriteImageError> {
        if !(data.len() as u64).is_multiple_of(PAGE_SIZE) {
            return Err(WriteImageError::UnalignedPages {
                len: data.len() as u64,
            });
        }
        let buffered = self.block.len() as u64 / PAGE_SIZE;
        let after = self.submitted_pages + buffered + data.len() as u64 / PAGE_SIZE;
        if after > self.expected_pages {
            return Err(WriteImageError::PageCountMismatch {
                written: after,
                expected: self.expected_pages,
            });
        }
        while !data.is_empty() {
            let room = BLOCK_BYTES - self.block.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.block.extend_from_slice(now);
            data = rest;
            if self.block.len() == BLOCK_BYTES {
                self.submit_block()?;
            }
        }
        Ok(())
    }

    /// Writes the remaining blocks and the end section, flushes, and returns the output.
    /// Fails if the pages written are not the number the manifest announces.
    pub fn finish(mut self) -> Result<(W, WriteStats), WriteImageError> {
        let written = self.submitted_pages + self.block.len() as u64 / PAGE_SIZE;
        if written != self.expected_pages {
            return Err(WriteImageError::PageCountMismatch {
                written,
                expected: self.expected_pages,
            });
        }
        if !self.block.is_empty() {
            self.submit_block()?;
        }
        while self.pool.in_flight() > 0 {
            self.write_oldest()?;
        }
        let end = EndPayload {
            total_pages: self.expected_pages,
            blocks: self.blocks,
            chain: self.chain.value(),
        };
        let sealed = seal(
            SectionFields {
                kind: SectionKind::End,
                codec: Codec::None,
                seq: self.next_seq,
                raw_len: END_PAYLOAD_LEN as u64,
                stored_len: END_PAYLOAD_LEN as u64,
                first_page: 0,
                page_count: 0,
            },
            end.encode().to_vec(),
            Vec::new(),
        );
        self.out.write_all(&sealed.header).map_err(io("end"))?;
        self.out.write_all(&sealed.payload).map_err(io("end"))?;
        self.offset += (SECTION_HEADER_LEN + END_PAYLOAD_LEN) as u64;
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
        if self.pool.is_full() {
            self.write_oldest()?;
        }
        let next = self.take_buffer();
        let raw = std::mem::replace(&mut self.block, next);
        let pages = raw.len() as u64 / PAGE_SIZE;
        debug_assert!(pages <= BLOCK_PAGES);
        let job = BlockJob {
            seq: self.next_seq,
            first_page: self.submitted_pages,
            raw,
            out: self.take_buffer(),
        };
        self.pool
            .submit(job)
            .map_err(|WorkerLost| WriteImageError::WorkerLost)?;
        self.next_seq += 1;
        self.blocks += 1;
        self.submitted_pages += pages;
        Ok(())
    }

    fn write_oldest(&mut self) -> Result<(), WriteImageError> {
        let Some(result) = self.pool.next() else {
            return Ok(());
        };
        let sealed = result
            .map_err(|WorkerLost| WriteImageError::WorkerLost)?
            .map_err(|source| WriteImageError::Compress { source })?;
        self.out.write_all(&sealed.header).map_err(io("pages"))?;
        self.out.write_all(&sealed.payload).map_err(io("pages"))?;
        self.chain.push(&sealed.digest);
        self.zero_pages += sealed.zero_pages;
        self.offset += (SECTION_HEADER_LEN + sealed.payload.len()) as u64;
        self.recycle(sealed.payload);
        self.recycle(sealed.spare);
        Ok(())
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK_BYTES))
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        // Enough for every job in flight plus the block being filled.
        if self.free.len() < 2 * self.pool.depth() + 2 && buf.capacity() >= BLOCK_BYTES {
            buf.clear();
            self.free.push(buf);
        }
    }
}

/// Worker side: compress one block, then digest its header and payload.
fn seal_block(
    compressor: &mut std::io::Result<Compressor>,
    job: BlockJob,
) -> Result<SealedBlock, std::io::Error> {
    let compressor = compressor
        .as_mut()
        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
    let mut raw = job.raw;
    let page_count = raw.len() as u64 / PAGE_SIZE;
    let zero_pages = pages::pack(&mut raw);
    let raw_len = raw.len() as u64;
    let (codec, payload, spare) = compressor.compress(raw, job.out)?;
    let fields = SectionFields {
        kind: SectionKind::Pages,
        codec,
        seq: job.seq,
        raw_len,
        stored_len: payload.len() as u64,
        first_page: job.first_page,
        page_count,
    };
    let mut sealed = seal(fields, payload, spare);
    sealed.zero_pages = zero_pages;
    Ok(sealed)
}
