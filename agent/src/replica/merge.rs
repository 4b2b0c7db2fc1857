//! A delta checkpoint applied to the previous complete one (docs/cluster.md "Checkpoints and
//! replicas", the incremental rule).
//!
//! A delta is an ordinary image whose manifest is the process's whole state at the new
//! checkpoint, but whose VMAs list as `precopied` the pages the previous checkpoint has and
//! the process did not write since (the write tracking of live migration); only the other
//! pages are in its page stream. The holder writes a new complete image: the delta's
//! manifest with each VMA's `precopied` pages moved back into `pages`, and the page stream
//! taken from the delta where it has the page and from the previous image otherwise. Both
//! images are read in one pass, in address order.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::image::seal::Key;
use crate::image::{Codec, ImageReader, ImageWriter};
use crate::state::{PAGE_SIZE, PageRun, TreeState};

/// Why a delta cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// An image could not be read or written.
    #[error("{what}: {why}")]
    Image {
        /// Which image.
        what: &'static str,
        /// What failed.
        why: String,
    },
    /// The delta names a page the previous image does not have.
    #[error("the delta keeps page {addr:#x} from the previous checkpoint, which does not have it")]
    MissingPage {
        /// The page.
        addr: u64,
    },
}

fn img(what: &'static str) -> impl Fn(String) -> MergeError {
    move |why| MergeError::Image { what, why }
}

/// The pages of an image in stream order, by address (the addresses must rise).
struct Pages<R: Read + Send> {
    reader: ImageReader<R>,
    /// Page addresses in stream order.
    addrs: Vec<u64>,
    next: usize,
    /// The current block, decompressed, zero pages filled in, and its first stream index.
    block: Vec<u8>,
    block_first: usize,
}

impl<R: Read + Send> Pages<R> {
    fn new(reader: ImageReader<R>, what: &'static str) -> Result<Self, MergeError> {
        let tree = reader.tree();
        if tree.processes.len() != 1 {
            return Err(img(what)("a checkpoint of one process was expected".into()));
        }
        let addrs: Vec<u64> = tree.processes[0]
            .mm
            .vmas
            .iter()
            .flat_map(|v| v.pages.iter())
            .flat_map(|r| (0..r.count).map(move |k| r.start + k * PAGE_SIZE))
            .collect();
        if addrs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(img(what)("its pages are not in address order".into()));
        }
        Ok(Self {
            reader,
            addrs,
            next: 0,
            block: Vec::new(),
            block_first: 0,
        })
    }

    /// The bytes of the page at stream index `i` (every index at most once, rising).
    fn page(&mut self, i: usize, what: &'static str) -> Result<&[u8], MergeError> {
        let page = PAGE_SIZE as usize;
        while i >= self.block_first + self.block.len() / page {
            self.block_first += self.block.len() / page;
            let b = self
                .reader
                .next_pages()
                .map_err(|e| img(what)(format!("{e:#}")))?
                .ok_or_else(|| img(what)("its page stream ends early".into()))?;
            self.block = b.to_raw();
            self.reader.recycle(b);
        }
        let at = (i - self.block_first) * page;
        Ok(&self.block[at..at + page])
    }

    /// The bytes of the page at `addr`, skipping the pages before it.
    fn at(&mut self, addr: u64, what: &'static str) -> Result<Option<&[u8]>, MergeError> {
        while self.next < self.addrs.len() && self.addrs[self.next] < addr {
            self.next += 1;
        }
        if self.addrs.get(self.next) != Some(&addr) {
            return Ok(None);
        }
        let i = self.next;
        self.next += 1;
        self.page(i, what).map(Some)
    }

    /// Reads to the end section (which checks the chain and the block count).
    fn finish(mut self, what: &'static str) -> Result<(), MergeError> {
        while self
            .reader
            .next_pages()
            .map_err(|e| img(what)(format!("{e:#}")))?
            .is_some()
        {}
        Ok(())
    }
}

/// Adds page `addr` to sorted runs.
pub(crate) fn push(runs: &mut Vec<PageRun>, addr: u64) {
    match runs.last_mut() {
        Some(r) if r.start + r.count * PAGE_SIZE == addr => r.count += 1,
        _ => runs.push(PageRun {
            start: addr,
            count: 1,
        }),
    }
}

/// What a merge wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Merged {
    /// Pages taken from the delta.
    pub from_delta: u64,
    /// Pages taken from the previous image.
    pub from_base: u64,
    /// Bytes of the new image.
    pub image_bytes: u64,
}

/// Writes into `out` the complete image made of the complete image `base` and the delta
/// `delta` (both sealed under `key`), sealed under `key` too.
pub fn apply(base: &Path, delta: &Path, out: &Path, key: &Key) -> Result<Merged, MergeError> {
    let open = |p: &Path, what: &'static str| -> Result<ImageReader<BufReader<File>>, MergeError> {
        let f = File::open(p).map_err(|e| img(what)(format!("open {}: {e}", p.display())))?;
        ImageReader::open_with_key(BufReader::with_capacity(1 << 20, f), Some(key))
            .map_err(|e| img(what)(format!("{e:#}")))
    };
    let delta_reader = open(delta, "the delta")?;
    let base_reader = open(base, "the previous checkpoint")?;
    // The new manifest: the delta's, with the kept pages stored again.
    let mut tree: TreeState = delta_reader.tree().clone();
    let mut plan: Vec<(u64, bool)> = Vec::new();
    for p in &mut tree.processes {
        for v in &mut p.mm.vmas {
            let mut all: Vec<(u64, bool)> = v
                .pages
                .iter()
                .flat_map(|r| (0..r.count).map(move |k| (r.start + k * PAGE_SIZE, true)))
                .chain(
                    v.precopied
                        .iter()
                        .flat_map(|r| (0..r.count).map(move |k| (r.start + k * PAGE_SIZE, false))),
                )
                .collect();
            all.sort_unstable();
            let mut runs = Vec::new();
            for &(a, _) in &all {
                push(&mut runs, a);
            }
            v.pages = runs;
            v.precopied.clear();
            plan.extend(all);
        }
    }
    let mut delta_pages = Pages::new(delta_reader, "the delta")?;
    let mut base_pages = Pages::new(base_reader, "the previous checkpoint")?;
    let file = File::create(out).map_err(|e| img("the new image")(format!("create: {e}")))?;
    let mut writer = ImageWriter::new_tree_sealed(file, &tree, Codec::Lz4, Some(key))
        .map_err(|e| img("the new image")(format!("{e:#}")))?;
    let mut merged = Merged::default();
    for (addr, in_delta) in plan {
        let page = if in_delta {
            merged.from_delta += 1;
            delta_pages.at(addr, "the delta")?
        } else {
            merged.from_base += 1;
            base_pages.at(addr, "the previous checkpoint")?
        }
        .ok_or(MergeError::MissingPage { addr })?;
        writer
            .write_pages(page)
            .map_err(|e| img("the new image")(format!("{e:#}")))?;
    }
    delta_pages.finish("the delta")?;
    let (file, stats) = writer
        .finish()
        .map_err(|e| img("the new image")(format!("{e:#}")))?;
    file.sync_all()
        .map_err(|e| img("the new image")(format!("fsync: {e}")))?;
    merged.image_bytes = stats.image_bytes;
    Ok(merged)
}
