//! The image format: one file (or one stream) holding a checkpoint.
//!
//! CONTRACT (the API dump/restore use; the implementation fills in the bodies):
//! - `ImageWriter::new(out, &state, codec)` writes the header and the manifest.
//! - `write_pages(&[u8])` appends page bytes (a multiple of `PAGE_SIZE`) in stream order; the
//!   writer cuts them into blocks and compresses blocks on worker threads, writing in order.
//! - `finish()` writes the remaining blocks and the end section, flushes, and returns the
//!   writer's output (the caller fsyncs a file) plus statistics. It fails if the number of pages
//!   written differs from the manifest's count.
//! - `ImageReader::open(input)` reads and verifies the header and the manifest and converts it
//!   into a validated `ProcessState`; `next_pages()` yields the decompressed, verified page
//!   blocks in stream order and `Ok(None)` after a verified end section.
//! - `inspect(input)` reads and verifies the whole image and describes every section.

use std::io::{Read, Write};

use serde::Serialize;

use crate::state::ProcessState;

/// Compression of page blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum Codec {
    /// Stored as is.
    None,
    /// zstd level 1.
    #[default]
    Zstd,
    /// LZ4 block format.
    Lz4,
}

/// Errors while writing an image.
#[derive(Debug, thiserror::Error)]
pub enum WriteImageError {
    /// Writing to the output failed.
    #[error("write {step}")]
    Io {
        /// Which step.
        step: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Errors while reading an image. Every variant names the section that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReadImageError {
    /// Placeholder until the reader lands.
    #[error("image section {section}: {what}")]
    Invalid {
        /// Which section.
        section: String,
        /// What is wrong.
        what: String,
    },
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
}

/// Streams a checkpoint into an image.
#[derive(Debug)]
pub struct ImageWriter<W: Write + Send> {
    _out: W,
}

impl<W: Write + Send> ImageWriter<W> {
    /// Writes the header and manifest.
    pub fn new(_out: W, _state: &ProcessState, _codec: Codec) -> Result<Self, WriteImageError> {
        todo!()
    }
    /// Appends page bytes in stream order.
    pub fn write_pages(&mut self, _data: &[u8]) -> Result<(), WriteImageError> {
        todo!()
    }
    /// Writes the rest and the end section.
    pub fn finish(self) -> Result<(W, WriteStats), WriteImageError> {
        todo!()
    }
}

/// Reads a checkpoint from an image.
#[derive(Debug)]
pub struct ImageReader<R: Read + Send> {
    _input: R,
}

impl<R: Read + Send> ImageReader<R> {
    /// Reads and verifies header and manifest.
    pub fn open(_input: R) -> Result<Self, ReadImageError> {
        todo!()
    }
    /// The validated checkpoint.
    pub fn state(&self) -> &ProcessState {
        todo!()
    }
    /// The next block of decompressed, verified pages; `None` after the verified end.
    pub fn next_pages(&mut self) -> Result<Option<Vec<u8>>, ReadImageError> {
        todo!()
    }
}
