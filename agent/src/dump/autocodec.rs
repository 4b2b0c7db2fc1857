//! `--compress auto`: picks the codec under which the whole page pipeline moves the process's
//! memory fastest, from throughputs measured just before the freeze (the process runs on
//! meanwhile; nothing here stops or changes it):
//!
//! - how fast `process_vm_readv` reads a sample of the process's present anonymous pages (spread
//!   over all its anonymous memory, only pages `pagemap` shows present, so none is faulted in);
//! - how fast each codec packs that sample on one core, and how small (per 1 MiB block, as the
//!   image writer compresses; all-zero pages are left out, as the writer does);
//! - how fast the output takes bytes: a probe file written and fsynced beside the image, or the
//!   link speed the caller measured (a migration's burst).
//!
//! The pipeline reads on the caller's thread, compresses on one worker per core and writes on
//! the caller's thread. Per byte of memory, for codec `k` with ratio `r` and speed `c`:
//! the caller's thread spends `1/read + r/out` (a file; a link's sending is not the caller's
//! CPU), the workers `1/(c × workers)`, all CPUs together `(1/read + 1/c + r/out) / cores`, and
//! a link `r/link`. The slowest of these bounds the time; the codec with the least wins, and
//! among those within 10 % of it the one with the smallest image.

use std::fs::File;
use std::io::{IoSliceMut, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use crate::image::Codec;
use crate::state::PAGE_SIZE;

/// Bytes of memory sampled.
const SAMPLE: usize = 8 << 20;
/// Contiguous pages per sampled piece (so codecs see real neighbourhoods).
const PIECE_PAGES: usize = 16;
/// Bytes written by the output probe.
const PROBE: usize = 16 << 20;
/// Block size the writer compresses at.
const BLOCK: usize = 1 << 20;

/// Where the image goes.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// A file in this directory.
    File(&'a Path),
    /// A link measured at this many bytes per second.
    Link(f64),
}

/// One codec's measured figures and estimate.
#[derive(Debug, Clone, Copy)]
pub struct Estimate {
    /// The codec.
    pub codec: Codec,
    /// Compressed size / raw size of the non-zero sample.
    pub ratio: f64,
    /// Compression speed on one core, bytes per second (infinite for none).
    pub speed: f64,
    /// Estimated seconds per GB of the process's memory through the whole pipeline.
    pub secs_per_gb: f64,
    /// CPU seconds per GB it costs (all threads).
    pub cpu_per_gb: f64,
}

/// The pick and why.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The codec picked.
    pub codec: Codec,
    /// Every codec's estimate.
    pub estimates: Vec<Estimate>,
    /// Read speed of the sample, bytes per second.
    pub read: f64,
    /// Output speed, bytes per second.
    pub out: f64,
    /// Fraction of sampled pages that were all zeros.
    pub zero: f64,
    /// Why, in one line (for the summary).
    pub why: String,
}

/// Measures and picks; `fallback` when the process has too little memory to sample (a small
/// process: any codec is quick) or something cannot be measured.
pub fn choose(pid: Pid, output: Output<'_>, fallback: Codec) -> Choice {
    let sample = sample_memory(pid);
    let fallback_choice = |why: String| Choice {
        codec: fallback,
        estimates: Vec::new(),
        read: 0.0,
        out: 0.0,
        zero: 0.0,
        why,
    };
    let Some((data, read_secs)) = sample else {
        return fallback_choice(format!(
            "auto: {fallback} (too little memory to measure the codecs on)"
        ));
    };
    let pages = data.len() / PAGE_SIZE as usize;
    let nonzero: Vec<u8> = data
        .chunks_exact(PAGE_SIZE as usize)
        .filter(|p| p.iter().any(|b| *b != 0))
        .flatten()
        .copied()
        .collect();
    let zero = 1.0 - (nonzero.len() / PAGE_SIZE as usize) as f64 / pages.max(1) as f64;
    let read = data.len() as f64 / read_secs.max(1e-6);
    let (out, file) = match output {
        Output::File(dir) => match probe_file(dir) {
            Some(speed) => (speed, true),
            None => {
                return fallback_choice(format!(
                    "auto: {fallback} (the output directory {} could not be probed)",
                    dir.display()
                ));
            }
        },
        Output::Link(speed) => (speed, false),
    };
    let machine = Machine {
        read,
        out,
        file,
        workers: crate::image::compression_workers() as f64,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
    };
    let mut estimates = Vec::new();
    for codec in [Codec::Zstd, Codec::Lz4, Codec::None] {
        let (ratio, speed) = if nonzero.is_empty() {
            (0.0, f64::INFINITY)
        } else {
            measure_codec(codec, &nonzero)
        };
        estimates.push(estimate(codec, ratio, speed, zero, &machine));
    }
    let (workers, cores) = (machine.workers, machine.cores);
    let pick = pick(&estimates).unwrap_or(fallback);
    let best = estimates
        .iter()
        .map(|e| e.secs_per_gb)
        .fold(f64::INFINITY, f64::min);
    let list: Vec<String> = estimates
        .iter()
        .map(|e| {
            let speed = if e.speed.is_finite() {
                format!(" at {:.0} MB/s/core", e.speed / 1e6)
            } else {
                String::new()
            };
            format!(
                "{} {:.0} ms/GB ({:.0}%{speed})",
                e.codec,
                e.secs_per_gb * 1e3,
                e.ratio * 100.0
            )
        })
        .collect();
    let picked = estimates
        .iter()
        .find(|e| e.codec == pick)
        .map_or(best, |e| e.secs_per_gb);
    let why = format!(
        "auto: {pick}, {} — {}; read {:.1} GB/s, {} {:.1} GB/s, {:.0}% zero pages, {} \
         workers on {} cores",
        if picked > best {
            "within 10% of the fastest pipeline with a smaller image"
        } else {
            "the fastest pipeline"
        },
        list.join(", "),
        read / 1e9,
        if file { "file write" } else { "link" },
        out / 1e9,
        zero * 100.0,
        workers,
        cores
    );
    Choice {
        codec: pick,
        estimates,
        read,
        out,
        zero,
        why,
    }
}

/// What the pipeline runs on.
#[derive(Debug, Clone, Copy)]
struct Machine {
    /// Read speed, bytes per second.
    read: f64,
    /// Output speed, bytes per second.
    out: f64,
    /// The output is a file (written by the caller's thread), not a link.
    file: bool,
    workers: f64,
    cores: f64,
}

/// The estimate for `codec` packing non-zero pages to `ratio` at `speed` bytes per second on
/// one core, with a fraction `zero` of the memory in all-zero pages.
fn estimate(codec: Codec, ratio: f64, speed: f64, zero: f64, m: &Machine) -> Estimate {
    // Per byte of memory: a zero page costs the read only.
    let nz = 1.0 - zero;
    let read_cost = 1.0 / m.read;
    let compress_cost = if speed.is_finite() { nz / speed } else { 0.0 };
    let out_cost = nz * ratio / m.out;
    let file_cost = if m.file { out_cost } else { 0.0 };
    let bounds = [
        // The caller's thread: reading, and writing a file.
        read_cost + file_cost,
        // The workers.
        compress_cost / m.workers,
        // Every CPU together.
        (read_cost + compress_cost + file_cost) / m.cores,
        // A link.
        if m.file { 0.0 } else { out_cost },
    ];
    Estimate {
        codec,
        ratio: ratio * nz,
        speed,
        secs_per_gb: bounds.into_iter().fold(0.0, f64::max) * 1e9,
        cpu_per_gb: (read_cost + compress_cost + file_cost) * 1e9,
    }
}

/// The codec with the least time, or of those within 10 % of it the one with the smallest
/// image; images within 5 % of each other count as the same size, and then the one that
/// costs the least CPU wins.
fn pick(estimates: &[Estimate]) -> Option<Codec> {
    let best = estimates
        .iter()
        .map(|e| e.secs_per_gb)
        .fold(f64::INFINITY, f64::min);
    let near: Vec<&Estimate> = estimates
        .iter()
        .filter(|e| e.secs_per_gb <= best * 1.1)
        .collect();
    let smallest = near.iter().map(|e| e.ratio).fold(f64::INFINITY, f64::min);
    near.into_iter()
        .filter(|e| e.ratio <= smallest * 1.05)
        .min_by(|a, b| a.cpu_per_gb.total_cmp(&b.cpu_per_gb))
        .map(|e| e.codec)
}

/// Compression ratio and one-core speed of `codec` on `data`, compressed in writer blocks.
fn measure_codec(codec: Codec, data: &[u8]) -> (f64, f64) {
    let mut c = match crate::image::BlockCompressor::new(codec) {
        Ok(c) => c,
        Err(_) => return (1.0, f64::INFINITY),
    };
    let mut out = vec![0u8; crate::image::compress_bound(BLOCK)];
    let start = Instant::now();
    let mut stored = 0usize;
    for block in data.chunks(BLOCK) {
        stored += match c.compress(block, &mut out) {
            Ok(Some(n)) => n,
            _ => block.len(),
        };
    }
    let secs = start.elapsed().as_secs_f64().max(1e-6);
    let speed = if codec == Codec::None {
        f64::INFINITY
    } else {
        data.len() as f64 / secs
    };
    (stored as f64 / data.len() as f64, speed)
}

/// Present pages of the process's private anonymous memory, read in pieces spread evenly
/// over it, with the time the reads took; `None` below one block.
fn sample_memory(pid: Pid) -> Option<(Vec<u8>, f64)> {
    let maps = crate::proc::parse_maps(&crate::proc::read(pid.as_raw(), "maps").ok()?).ok()?;
    let pagemap = File::open(format!("/proc/{pid}/pagemap")).ok()?;
    // Starts of runs of PIECE_PAGES present pages.
    let mut pieces: Vec<u64> = Vec::new();
    for e in maps.iter().filter(|e| {
        e.inode == 0
            && !e.shared
            && e.prot & libc::PROT_READ as u32 != 0
            && !e.name.starts_with("[v")
    }) {
        let n = ((e.end - e.start) / PAGE_SIZE) as usize;
        let mut raw = vec![0u8; n * 8];
        if pagemap
            .read_exact_at(&mut raw, e.start / PAGE_SIZE * 8)
            .is_err()
        {
            continue;
        }
        let present: Vec<bool> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()) & (1 << 63) != 0)
            .collect();
        let mut i = 0;
        while i + PIECE_PAGES <= n {
            if present[i..i + PIECE_PAGES].iter().all(|p| *p) {
                pieces.push(e.start + i as u64 * PAGE_SIZE);
                i += PIECE_PAGES;
            } else {
                i += 1;
            }
        }
    }
    let piece = PIECE_PAGES * PAGE_SIZE as usize;
    let want = SAMPLE / piece;
    if pieces.len() * piece < BLOCK {
        return None;
    }
    let step = (pieces.len() as f64 / want as f64).max(1.0);
    let chosen: Vec<u64> = (0..want.min(pieces.len()))
        .map(|k| pieces[((k as f64 * step) as usize).min(pieces.len() - 1)])
        .collect();
    let mut data = vec![0u8; chosen.len() * piece];
    let remote: Vec<RemoteIoVec> = chosen
        .iter()
        .map(|a| RemoteIoVec {
            base: *a as usize,
            len: piece,
        })
        .collect();
    let start = Instant::now();
    let mut done = 0;
    for batch in remote.chunks(1024) {
        let len = batch.len() * piece;
        let got = process_vm_readv(
            pid,
            &mut [IoSliceMut::new(&mut data[done..done + len])],
            batch,
        )
        .ok()?;
        if got != len {
            return None;
        }
        done += len;
    }
    Some((data, start.elapsed().as_secs_f64()))
}

/// Bytes per second a file in `dir` takes, written and fsynced, then removed.
fn probe_file(dir: &Path) -> Option<f64> {
    let path = dir.join(format!(".ferry-probe-{}", std::process::id()));
    let chunk = vec![0x5au8; BLOCK];
    let start = Instant::now();
    let result = (|| {
        let mut f = File::create(&path).ok()?;
        for _ in 0..PROBE / BLOCK {
            f.write_all(&chunk).ok()?;
        }
        f.sync_all().ok()?;
        Some(())
    })();
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    result.map(|()| PROBE as f64 / secs.max(1e-6))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Measured on this project's machine (2 cores, heap-like memory): zstd -1 packs to 19 %
    /// at ~750 MB/s per core, lz4 to 31 % at ~900 MB/s; `process_vm_readv` reads ~8 GB/s.
    fn heap_like(m: &Machine) -> Vec<Estimate> {
        vec![
            estimate(Codec::Zstd, 0.19, 750e6, 0.25, m),
            estimate(Codec::Lz4, 0.31, 900e6, 0.25, m),
            estimate(Codec::None, 1.0, f64::INFINITY, 0.25, m),
        ]
    }

    #[test]
    fn a_slow_link_gets_the_smallest_image() {
        let m = Machine {
            read: 8e9,
            out: 100e6,
            file: false,
            workers: 2.0,
            cores: 2.0,
        };
        assert_eq!(pick(&heap_like(&m)), Some(Codec::Zstd));
    }

    #[test]
    fn a_fast_file_gets_the_cheapest_codec_and_a_middling_one_lz4() {
        let mut m = Machine {
            read: 8e9,
            out: 3e9,
            file: true,
            workers: 2.0,
            cores: 2.0,
        };
        // Writing 75 % of the memory at 3 GB/s costs less than compressing it on two cores.
        assert_eq!(pick(&heap_like(&m)), Some(Codec::None));
        // A link of 1 GB/s: lz4's image goes out faster than zstd compresses.
        m.out = 1e9;
        m.file = false;
        assert_eq!(pick(&heap_like(&m)), Some(Codec::Lz4));
        // Incompressible memory: compressing only costs.
        let m = Machine { out: 1e9, ..m };
        let random = [
            estimate(Codec::Zstd, 1.0, 800e6, 0.0, &m),
            estimate(Codec::Lz4, 1.0, 3e9, 0.0, &m),
            estimate(Codec::None, 1.0, f64::INFINITY, 0.0, &m),
        ];
        assert_eq!(pick(&random), Some(Codec::None));
    }

    #[test]
    fn the_process_memory_is_measured() {
        // This test process's own memory: a heap-like buffer, the pages all present.
        let mut buf = vec![0u8; 16 << 20];
        for (i, w) in buf.chunks_exact_mut(8).enumerate() {
            let v = if i % 7 == 0 {
                i as u64 * 2_654_435_761
            } else {
                (i % 64) as u64
            };
            w.copy_from_slice(&v.to_le_bytes());
        }
        std::hint::black_box(&buf);
        let me = Pid::this();
        let slow = choose(me, Output::Link(2e6), Codec::None);
        assert_eq!(slow.codec, Codec::Zstd, "{}", slow.why);
        assert!(slow.why.starts_with("auto: zstd, "), "{}", slow.why);
        assert_eq!(slow.estimates.len(), 3);
        for codec in ["zstd", "lz4", "none"] {
            assert!(slow.why.contains(&format!("{codec} ")), "{}", slow.why);
        }
        assert!(slow.read > 0.0 && slow.out == 2e6, "{slow:?}");
        let dir = std::env::temp_dir();
        let file = choose(me, Output::File(&dir), Codec::None);
        assert!(file.why.contains("file write"), "{}", file.why);
        assert!(file.out > 0.0);
    }
}
