//! Compression of one page block, and bounded decompression that never produces more than the
//! declared raw length.

use std::fmt;
use std::str::FromStr;

use super::{Codec, ImageDefect};

/// zstd level used for page blocks: level 1 is the fastest of the regular levels and already
/// compresses heap contents well.
const ZSTD_LEVEL: i32 = 1;

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::None => "none",
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
        })
    }
}

/// A codec name that is not `zstd`, `lz4` or `none`.
#[derive(Debug, thiserror::Error)]
#[error("unknown codec {name:?} (expected zstd, lz4 or none)")]
pub struct ParseCodecError {
    /// The name given.
    pub name: String,
}

impl FromStr for Codec {
    type Err = ParseCodecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Codec::None),
            "zstd" => Ok(Codec::Zstd),
            "lz4" => Ok(Codec::Lz4),
            _ => Err(ParseCodecError { name: s.to_owned() }),
        }
    }
}

/// Per-thread compression state.
pub(crate) struct Compressor {
    codec: Codec,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl Compressor {
    /// A compressor for `codec`.
    pub(crate) fn new(codec: Codec) -> std::io::Result<Self> {
        let zstd = match codec {
            Codec::Zstd => {
                let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
                // The section header carries the sizes and a digest; the frame needs neither.
                c.include_checksum(false)?;
                c.include_contentsize(false)?;
                c.include_dictid(false)?;
                Some(c)
            }
            Codec::None | Codec::Lz4 => None,
        };
        Ok(Compressor { codec, zstd })
    }

    /// Compresses `raw` into `out` (a recycled buffer, any contents). Returns the codec
    /// actually used, the stored bytes and the buffer left over: a block that does not shrink
    /// is stored as is, so a stored payload is never larger than its raw form.
    pub(crate) fn compress(
        &mut self,
        raw: Vec<u8>,
        mut out: Vec<u8>,
    ) -> std::io::Result<(Codec, Vec<u8>, Vec<u8>)> {
        match (self.codec, self.zstd.as_mut()) {
            (Codec::Zstd, Some(c)) => {
                out.clear();
                out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                // Writes into the spare capacity, which holds the worst case.
                c.compress_to_buffer(&raw, &mut out)?;
            }
            (Codec::Lz4, _) => {
                let max = lz4_flex::block::get_maximum_output_size(raw.len());
                if out.len() < max {
                    out.resize(max, 0);
                }
                let n = lz4_flex::block::compress_into(&raw, &mut out)
                    .map_err(std::io::Error::other)?;
                out.truncate(n);
            }
            _ => return Ok((Codec::None, raw, out)),
        }
        if out.len() < raw.len() {
            Ok((self.codec, out, raw))
        } else {
            Ok((Codec::None, raw, out))
        }
    }
}

/// Per-thread decompression state.
pub(crate) struct Decompressor {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor").finish_non_exhaustive()
    }
}

impl Decompressor {
    /// A decompressor; the zstd context is made on first use.
    pub(crate) fn new() -> Self {
        Decompressor { zstd: None }
    }

    /// Decompresses `stored` into exactly `raw_len` bytes, using `out` (a recycled buffer, any
    /// contents) when the codec needs one. Returns the data and the buffer left over.
    /// `raw_len` must already be capped by the caller: it is the allocation size.
    pub(crate) fn decompress(
        &mut self,
        codec: Codec,
        stored: Vec<u8>,
        mut out: Vec<u8>,
        raw_len: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), ImageDefect> {
        let failed = |detail: String| ImageDefect::Decompress { codec, detail };
        let (data, spare) = match codec {
            Codec::None => (stored, out),
            Codec::Zstd => {
                let d = match &mut self.zstd {
                    Some(d) => d,
                    None => self.zstd.insert(
                        zstd::bulk::Decompressor::new().map_err(|e| failed(e.to_string()))?,
                    ),
                };
                out.clear();
                out.reserve(raw_len);
                // Writes into the spare capacity only, so the output is bounded by the
                // buffer; the length check below refuses anything but exactly `raw_len`.
                d.decompress_to_buffer(&stored, &mut out)
                    .map_err(|e| failed(e.to_string()))?;
                (out, stored)
            }
            Codec::Lz4 => {
                out.resize(raw_len, 0);
                // Fails with "output too small" instead of writing past `raw_len`.
                let n = lz4_flex::block::decompress_into(&stored, &mut out)
                    .map_err(|e| failed(e.to_string()))?;
                out.truncate(n);
                (out, stored)
            }
        };
        if data.len() == raw_len {
            Ok((data, spare))
        } else {
            Err(ImageDefect::RawLengthMismatch {
                found: data.len() as u64,
                expected: raw_len as u64,
            })
        }
    }
}
