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

    /// Compresses `raw`. Returns the codec actually used and the stored bytes: a block that
    /// does not shrink is stored as is, so a stored payload is never larger than its raw form.
    pub(crate) fn compress(&mut self, raw: Vec<u8>) -> std::io::Result<(Codec, Vec<u8>)> {
        let packed = match (self.codec, self.zstd.as_mut()) {
            (Codec::Zstd, Some(c)) => c.compress(&raw)?,
            (Codec::Lz4, _) => lz4_flex::block::compress(&raw),
            _ => return Ok((Codec::None, raw)),
        };
        if packed.len() < raw.len() {
            Ok((self.codec, packed))
        } else {
            Ok((Codec::None, raw))
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

    /// Decompresses `stored` into exactly `raw_len` bytes. `raw_len` must already be capped
    /// by the caller: it is the allocation size.
    pub(crate) fn decompress(
        &mut self,
        codec: Codec,
        stored: Vec<u8>,
        raw_len: usize,
    ) -> Result<Vec<u8>, ImageDefect> {
        let out = match codec {
            Codec::None => stored,
            Codec::Zstd => {
                let d = match &mut self.zstd {
                    Some(d) => d,
                    None => self
                        .zstd
                        .insert(zstd::bulk::Decompressor::new().map_err(|e| {
                            ImageDefect::Decompress {
                                codec,
                                detail: e.to_string(),
                            }
                        })?),
                };
                let mut out = Vec::with_capacity(raw_len);
                // Writes into the spare capacity only: more output than `raw_len` is an error.
                d.decompress_to_buffer(&stored, &mut out)
                    .map_err(|e| ImageDefect::Decompress {
                        codec,
                        detail: e.to_string(),
                    })?;
                out
            }
            Codec::Lz4 => {
                // Fails with "output too small" instead of growing past `raw_len`.
                lz4_flex::block::decompress(&stored, raw_len).map_err(|e| {
                    ImageDefect::Decompress {
                        codec,
                        detail: e.to_string(),
                    }
                })?
            }
        };
        if out.len() == raw_len {
            Ok(out)
        } else {
            Err(ImageDefect::RawLengthMismatch {
                found: out.len() as u64,
                expected: raw_len as u64,
            })
        }
    }
}
