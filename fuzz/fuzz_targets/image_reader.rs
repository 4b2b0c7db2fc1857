//! Feeds arbitrary bytes to the image reader: opening, draining every page block and
//! inspecting must fail cleanly or succeed, never panic, hang or allocate without bound.
#![no_main]

use std::io::Cursor;

use ferry_agent::image::{ImageReader, inspect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = ImageReader::open(Cursor::new(data)) {
        let total = reader.total_pages();
        let mut pages = 0u64;
        loop {
            match reader.next_pages() {
                Ok(Some(block)) => {
                    pages += block.page_count();
                    reader.recycle(block);
                }
                Ok(None) => {
                    // A verified end means exactly the manifest's pages came out.
                    assert_eq!(pages, total);
                    break;
                }
                Err(_) => break,
            }
        }
    }
    let _ = inspect(Cursor::new(data));
});
