//! Like `image_reader`, but first rewrites every section digest and the end section's chain so
//! they match the mutated bytes: random inputs then get past the integrity checks and reach
//! the decompressors, the manifest decoder and the validation behind them.
#![no_main]

use std::io::Cursor;

use ferry_agent::image::ImageReader;
use libfuzzer_sys::fuzz_target;
use ring::digest::{Context, SHA256};

/// The hash an image's major version names: SHA-256 for version 1, BLAKE3 after.
#[derive(Clone)]
enum Hash {
    Sha256(Context),
    Blake3(Box<blake3::Hasher>),
}

impl Hash {
    fn new(major: u16) -> Self {
        if major == 1 {
            Hash::Sha256(Context::new(&SHA256))
        } else {
            Hash::Blake3(Box::new(blake3::Hasher::new()))
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hash::Sha256(c) => c.update(data),
            Hash::Blake3(h) => {
                h.update(data);
            }
        }
    }

    fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        match self {
            Hash::Sha256(c) => out.copy_from_slice(c.finish().as_ref()),
            Hash::Blake3(h) => out = *h.finalize().as_bytes(),
        }
        out
    }
}

const FILE_HEADER: usize = 16;
const FIELDS: usize = 48;
const SECTION_HEADER: usize = FIELDS + 32;
const END_KIND: u32 = 3;

/// Recomputes the digests in place, following the framing as far as it goes.
fn fix_digests(data: &mut [u8]) {
    if data.len() < FILE_HEADER {
        return;
    }
    let major = u16::from_le_bytes([data[8], data[9]]);
    let mut chain = Hash::new(major);
    chain.update(&data[..FILE_HEADER]);
    let mut at = FILE_HEADER;
    while data.len() - at >= SECTION_HEADER {
        let fields = at..at + FIELDS;
        let kind = u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or([0; 4]));
        let stored = u64::from_le_bytes(data[at + 24..at + 32].try_into().unwrap_or([0; 8]));
        let start = at + SECTION_HEADER;
        let end = start
            .saturating_add(usize::try_from(stored).unwrap_or(usize::MAX))
            .min(data.len());
        if kind == END_KIND && end - start >= 48 {
            let value = chain.clone().finish();
            data[start + 16..start + 48].copy_from_slice(&value);
        }
        let mut ctx = Hash::new(major);
        ctx.update(&data[fields]);
        ctx.update(&data[start..end]);
        let d = ctx.finish();
        data[at + FIELDS..at + SECTION_HEADER].copy_from_slice(&d);
        chain.update(&d);
        at = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut data = data.to_vec();
    fix_digests(&mut data);
    if let Ok(mut reader) = ImageReader::open(Cursor::new(&data)) {
        let total = reader.total_pages();
        let mut pages = 0u64;
        loop {
            match reader.next_pages() {
                Ok(Some(block)) => {
                    assert!(block.page_count() > 0 && block.page_count() <= 256);
                    let _ = block.segments();
                    pages += block.page_count();
                    reader.recycle(block);
                }
                Ok(None) => {
                    assert_eq!(pages, total);
                    break;
                }
                Err(_) => break,
            }
        }
    }
});
