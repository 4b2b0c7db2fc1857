//! Zero pages inside a page block. A block's raw payload is its non-zero pages, in order,
//! followed by a bitmap of `ceil(page_count / 8)` bytes in which bit `i` (LSB first) set means
//! "page `i` of the block is all zeros and not stored". Zero pages thus cost one bit, whatever
//! the codec, and a restore can skip them where fresh memory is zero anyway.

use crate::state::PAGE_SIZE;

use super::ImageDefect;

const PAGE: usize = PAGE_SIZE as usize;

/// Length of the bitmap of a block of `pages` pages.
pub(crate) fn bitmap_len(pages: u64) -> u64 {
    pages.div_ceil(8)
}

fn is_zero(page: &[u8]) -> bool {
    // OR 64 bytes at a time: branch once per cache line, which vectorizes well.
    page.chunks_exact(64).all(|line| {
        line.chunks_exact(8).fold(0u64, |acc, w| {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            acc | u64::from_ne_bytes(b)
        }) == 0
    })
}

/// Turns the first `len` bytes of `buf` (whole pages) into the packed form in place, the
/// bitmap right after the pages kept: `buf` must have room for the bitmap after `len`.
/// Returns the packed length and the number of zero pages.
pub(crate) fn pack_in(buf: &mut [u8], len: usize) -> (usize, u64) {
    let pages = len / PAGE;
    let mut bitmap = [0u8; (super::BLOCK_PAGES as usize).div_ceil(8)];
    let blen = bitmap_len(pages as u64) as usize;
    let mut kept = 0;
    for i in 0..pages {
        if is_zero(&buf[i * PAGE..(i + 1) * PAGE]) {
            bitmap[i / 8] |= 1 << (i % 8);
        } else {
            if kept != i {
                buf.copy_within(i * PAGE..(i + 1) * PAGE, kept * PAGE);
            }
            kept += 1;
        }
    }
    let at = kept * PAGE;
    buf[at..at + blen].copy_from_slice(&bitmap[..blen]);
    (at + blen, (pages - kept) as u64)
}

/// Turns `raw` (whole pages, at most a block) into the packed form; returns the number of
/// zero pages.
#[cfg(test)]
pub(crate) fn pack(raw: &mut Vec<u8>) -> u64 {
    let len = raw.len();
    raw.resize(len + bitmap_len((len / PAGE) as u64) as usize, 0);
    let (packed, zero) = pack_in(raw, len);
    raw.truncate(packed);
    zero
}

/// A block of pages read from an image.
#[derive(Debug)]
pub struct PageBlock {
    first_page: u64,
    page_count: u64,
    /// Non-zero pages, then the bitmap, in its first `len` bytes.
    data: Vec<u8>,
    len: usize,
}

impl PageBlock {
    /// Checks a decompressed payload of a block of `page_count` pages: its length must be the
    /// bitmap plus one page per clear bit, and the bitmap's padding bits must be clear.
    /// The payload is the first `len` bytes of `data` (at most its length).
    pub(crate) fn new(
        first_page: u64,
        page_count: u64,
        data: Vec<u8>,
        len: usize,
    ) -> Result<Self, (Vec<u8>, ImageDefect)> {
        let len = len.min(data.len());
        let blen = bitmap_len(page_count) as usize;
        let Some(stored_bytes) = len.checked_sub(blen) else {
            return Err((
                data,
                ImageDefect::ZeroMap {
                    stored: 0,
                    listed: page_count,
                },
            ));
        };
        let bitmap = &data[stored_bytes..len];
        let zero: u64 = bitmap.iter().map(|b| u64::from(b.count_ones())).sum();
        let padding_ok = page_count.is_multiple_of(8) || bitmap[blen - 1] >> (page_count % 8) == 0;
        let listed = page_count.saturating_sub(zero);
        if !padding_ok || zero > page_count || stored_bytes != listed as usize * PAGE {
            let stored = (stored_bytes / PAGE) as u64;
            return Err((data, ImageDefect::ZeroMap { stored, listed }));
        }
        Ok(Self {
            first_page,
            page_count,
            data,
            len,
        })
    }

    /// Index of the block's first page in the page stream.
    pub fn first_page(&self) -> u64 {
        self.first_page
    }

    /// Pages in the block, zero pages included.
    pub fn page_count(&self) -> u64 {
        self.page_count
    }

    fn zero(&self, i: u64) -> bool {
        let bitmap = &self.data[self.len - bitmap_len(self.page_count) as usize..self.len];
        bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// The block as runs of consecutive pages: `(pages, Some(offset))` for stored pages, whose
    /// bytes start at `offset` in [`Self::stored`], `(pages, None)` for zero pages.
    pub fn runs(&self) -> Vec<(u64, Option<usize>)> {
        let mut out: Vec<(u64, Option<usize>)> = Vec::new();
        let mut off = 0usize;
        let mut i = 0;
        while i < self.page_count {
            let zero = self.zero(i);
            let mut n = 1;
            while i + n < self.page_count && self.zero(i + n) == zero {
                n += 1;
            }
            if zero {
                out.push((n, None));
            } else {
                out.push((n, Some(off)));
                off += n as usize * PAGE;
            }
            i += n;
        }
        out
    }

    /// The stored (non-zero) pages, in order.
    pub fn stored(&self) -> &[u8] {
        &self.data[..self.len - bitmap_len(self.page_count) as usize]
    }

    /// The block as runs of consecutive pages: `(pages, Some(bytes))` for stored pages,
    /// `(pages, None)` for zero pages.
    pub fn segments(&self) -> Vec<(u64, Option<&[u8]>)> {
        let stored = self.stored();
        self.runs()
            .into_iter()
            .map(|(n, off)| (n, off.map(|o| &stored[o..o + n as usize * PAGE])))
            .collect()
    }

    /// The block's pages with zero pages filled in (for tests and tools).
    pub fn to_raw(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(self.page_count as usize * PAGE);
        for (n, data) in self.segments() {
            match data {
                Some(d) => raw.extend_from_slice(d),
                None => raw.resize(raw.len() + n as usize * PAGE, 0),
            }
        }
        raw
    }

    /// Gives the buffer back for reuse.
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_segments_round_trip() {
        let mut raw = vec![0u8; 11 * PAGE];
        for p in [1usize, 2, 5, 10] {
            raw[p * PAGE + 7] = p as u8;
        }
        let orig = raw.clone();
        let zeros = pack(&mut raw);
        assert_eq!(zeros, 7);
        assert_eq!(raw.len(), 4 * PAGE + 2);
        let len = raw.len();
        let block = PageBlock::new(0, 11, raw, len).map_err(|(_, d)| d).unwrap();
        let kinds: Vec<(u64, bool)> = block
            .segments()
            .iter()
            .map(|(n, d)| (*n, d.is_some()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (1, false),
                (2, true),
                (2, false),
                (1, true),
                (4, false),
                (1, true)
            ]
        );
        assert_eq!(block.to_raw(), orig);
    }

    #[test]
    fn inconsistent_maps_are_refused() {
        let mut raw = vec![1u8; 3 * PAGE];
        pack(&mut raw);
        // Claim a page is zero while its bytes are still there.
        let mut bad = raw.clone();
        *bad.last_mut().unwrap() |= 1;
        let n = bad.len();
        let _ = PageBlock::new(0, 3, bad, n).unwrap_err();
        // Padding bits set.
        let mut bad = raw.clone();
        *bad.last_mut().unwrap() |= 0x80;
        let _ = PageBlock::new(0, 3, bad, n).unwrap_err();
        let _ = PageBlock::new(0, 3, raw, n).unwrap();
        let _ = PageBlock::new(0, 3, Vec::new(), 0).unwrap_err();
    }
}
