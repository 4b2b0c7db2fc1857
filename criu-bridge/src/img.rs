//! The framing of a CRIU image file: magic numbers, then entries each prefixed by its length
//! (`u32`, little-endian). Most files start with `IMG_COMMON` then their own magic; the
//! inventory has only its own; `pages-N.img` is raw page data with no framing at all.

use std::path::{Path, PathBuf};

use prost::Message;

use crate::Error;

/// The first magic of every image file but the inventory.
pub const IMG_COMMON: u32 = 0x5456_4319;
/// The first magic of CRIU's service files (stats, irmap cache).
pub const IMG_SERVICE: u32 = 0x5510_5940;

/// The per-image magics of the files the bridge reads and writes.
pub mod magic {
    /// `inventory.img`.
    pub const INVENTORY: u32 = 0x5831_3116;
    /// `pstree.img`.
    pub const PSTREE: u32 = 0x5027_3030;
    /// `fdinfo-ID.img`.
    pub const FDINFO: u32 = 0x5621_3732;
    /// `pagemap-PID.img`.
    pub const PAGEMAP: u32 = 0x5608_4025;
    /// `core-TID.img`.
    pub const CORE: u32 = 0x5505_3847;
    /// `ids-PID.img`.
    pub const IDS: u32 = 0x5443_2030;
    /// `pipes-data.img`.
    pub const PIPES_DATA: u32 = 0x5645_3709;
    /// `sigacts-PID.img`.
    pub const SIGACT: u32 = 0x5534_4201;
    /// `fs-PID.img`.
    pub const FS: u32 = 0x5140_3912;
    /// `mm-PID.img`.
    pub const MM: u32 = 0x5749_2820;
    /// `files.img`.
    pub const FILES: u32 = 0x5630_3138;
}

/// Largest entry the reader accepts (a CRIU entry is a few KiB; an `mm` with thousands of
/// VMAs stays far below this).
pub const MAX_ENTRY: usize = 64 << 20;

/// An image file being built in memory.
#[derive(Debug)]
pub struct ImgWriter {
    buf: Vec<u8>,
}

impl ImgWriter {
    /// A file with the given magic (`IMG_COMMON` first, except for the inventory).
    pub fn new(magic: u32) -> Self {
        let mut buf = Vec::new();
        if magic != magic::INVENTORY {
            buf.extend_from_slice(&IMG_COMMON.to_le_bytes());
        }
        buf.extend_from_slice(&magic.to_le_bytes());
        Self { buf }
    }

    /// Appends one entry.
    pub fn entry<M: Message>(&mut self, m: &M) -> &mut Self {
        let len = m.encoded_len() as u32;
        self.buf.extend_from_slice(&len.to_le_bytes());
        m.encode_raw(&mut self.buf);
        self
    }

    /// Appends raw bytes (the payload that follows a `pipes-data` entry).
    pub fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, &self.buf).map_err(|e| Error::io(path, e))
    }
}

/// An image file read whole, taken apart entry by entry.
#[derive(Debug)]
pub struct ImgReader {
    path: PathBuf,
    data: Vec<u8>,
    at: usize,
}

impl ImgReader {
    /// Opens `path`, which must carry `magic`.
    pub fn open(path: &Path, magic: u32) -> Result<Self, Error> {
        let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let mut r = Self {
            path: path.to_path_buf(),
            data,
            at: 0,
        };
        let mut first = r.u32("magic")?;
        if first == IMG_COMMON || first == IMG_SERVICE {
            first = r.u32("magic")?;
        }
        if first != magic {
            return Err(r.bad(format!(
                "magic {first:#010x}, expected {magic:#010x} for this file"
            )));
        }
        Ok(r)
    }

    fn bad(&self, msg: String) -> Error {
        Error::Format {
            file: self.path.display().to_string(),
            msg,
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32, Error> {
        let b = self
            .data
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.bad(format!("truncated {what} at offset {}", self.at)))?;
        self.at += 4;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    /// The next entry, or `None` at the end of the file.
    pub fn entry<M: Message + Default>(&mut self) -> Result<Option<M>, Error> {
        if self.at == self.data.len() {
            return Ok(None);
        }
        let at = self.at;
        let len = self.u32("entry length")? as usize;
        if len > MAX_ENTRY {
            return Err(self.bad(format!(
                "entry at offset {at} of {len} bytes, more than {MAX_ENTRY}"
            )));
        }
        let body = self.raw(len)?;
        M::decode(body)
            .map(Some)
            .map_err(|e| self.bad(format!("entry at offset {at}: {e}")))
    }

    /// Every remaining entry.
    pub fn all<M: Message + Default>(&mut self) -> Result<Vec<M>, Error> {
        let mut out = Vec::new();
        while let Some(m) = self.entry()? {
            out.push(m);
        }
        Ok(out)
    }

    /// The next `len` raw bytes.
    pub fn raw(&mut self, len: usize) -> Result<&[u8], Error> {
        let at = self.at;
        if self.data.len() - at < len {
            return Err(self.bad(format!(
                "{len} bytes announced at offset {at}, only {} left",
                self.data.len() - at
            )));
        }
        self.at += len;
        Ok(&self.data[at..at + len])
    }
}
