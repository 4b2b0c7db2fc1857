//! `cargo xtask bench`: dump and restore a process holding 1 GiB of touched, heap-like anonymous
//! memory with each codec, beside the machine's limits measured in the same run: the raw
//! `process_vm_readv` copy, a write of the same size into a file of the image directory (tmpfs by
//! default), and writes into fresh pages (what a restore must do), on one thread and on two.
//!
//! Per codec a fresh victim is started, dumped (which ends it), and restored with its own PID;
//! the restored copy then checksums its memory (SIGUSR1) before it is killed.

use std::fs;
use std::io::{BufRead, BufReader, IoSliceMut, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use crate::util::{self, Owned, ScratchDir};

const MIB: u64 = 1 << 20;
const FERRY_TIMEOUT: Duration = Duration::from_secs(300);
/// Raw copy: bytes per `process_vm_readv` call, into one reused, resident buffer.
const RAW_CHUNK: usize = 64 << 20;
/// Issue 10's targets for 1 GiB with the default codec.
const TARGET_DUMP_MS: f64 = 400.0;
const TARGET_RESTORE_MS: f64 = 400.0;
const TARGET_IMAGE_PCT: f64 = 40.0;
/// The codec `ferry dump` uses unless told otherwise.
const DEFAULT_CODEC: &str = "lz4";

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Memory of the victim, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Codecs to measure, in order; `CODEC+seal` dumps a sealed image (`--seal`) and
    /// restores it with its key.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "lz4,lz4+seal,zstd,none,auto"
    )]
    codecs: Vec<String>,
    /// Directory for the images (default: `/dev/shm/ferry-bench`, a tmpfs; else the target
    /// directory's `bench/`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Measure only the raw `process_vm_readv` speed (no ferry).
    #[arg(long)]
    raw_only: bool,
    /// Use this `ferry` binary instead of building one (e.g. another version, to compare
    /// both in the same conditions).
    #[arg(long)]
    ferry: Option<PathBuf>,
}

/// One codec's figures.
#[derive(Debug)]
struct Row {
    codec: String,
    rss: u64,
    frozen: Option<Duration>,
    dump_wall: Duration,
    image_bytes: u64,
    restore: Duration,
    /// The restore checker's share of the restore (its debug line).
    check: Option<Duration>,
    memory_ok: bool,
}

pub fn run(options: &Options) -> Result<()> {
    util::require_root("the benchmark")?;
    util::require_tools(&["cc"])?;
    let ferry = if options.raw_only {
        None
    } else if let Some(ferry) = &options.ferry {
        println!("Using {}", ferry.display());
        Some(ferry.clone())
    } else {
        println!("Building ferry (cargo build --release -p ferry)…");
        Some(util::build_ferry(true)?)
    };
    util::become_subreaper()?;
    let scratch = ScratchDir::new("bench")?;
    let heap = util::compile_c(include_str!("c/heap.c"), "heap", scratch.path())?;
    let image_dir = options.dir.clone().unwrap_or_else(|| {
        if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm/ferry-bench")
        } else {
            util::target_dir().join("bench")
        }
    });
    fs::create_dir_all(&image_dir).with_context(|| format!("create {}", image_dir.display()))?;

    println!(
        "Starting a victim with {} MiB of heap-like memory…",
        options.size_mib
    );
    let victim = Victim::start(&heap, options.size_mib, scratch.path())?;
    let rss = util::rss_bytes(victim.pid)?;
    let raw = raw_copy_time(victim.pid, victim.addr, victim.len)?;
    drop(victim);
    let size = options.size_mib * MIB;
    let limits = Limits {
        readv: raw,
        file_write: file_write_time(&image_dir, size)?,
        fresh: fresh_write_time(size, 1),
        fresh2: fresh_write_time(size, 2),
        aead: aead_time(size),
    };
    println!(
        "raw process_vm_readv: {} MiB in {:.0} ms = {:.2} GB/s (best of 3, {} MiB per call)",
        options.size_mib,
        ms(raw),
        gbs(size, raw),
        RAW_CHUNK >> 20
    );
    limits.print(size, &image_dir);
    let Some(ferry) = ferry else {
        println!("(resident: {} MiB)", rss / MIB);
        return Ok(());
    };

    let mut rows = Vec::new();
    for codec in &options.codecs {
        println!("Measuring --compress {codec}…");
        let image = image_dir.join(format!("bench-{codec}.ferry"));
        let row = measure(
            &ferry,
            &heap,
            options.size_mib,
            codec,
            &image,
            scratch.path(),
        );
        let _ = fs::remove_file(&image);
        rows.push(row?);
    }
    util::reap_ended_children();
    print_table(&rows, &limits, options.size_mib * MIB);
    crate::bench_tasks::run(&ferry, scratch.path())?;
    util::reap_ended_children();
    print_load();
    Ok(())
}

/// The machine's limits, measured in the same run as the figures they stand beside.
struct Limits {
    /// The victim's memory copied with `process_vm_readv`.
    readv: Duration,
    /// The same size written into a file of the image directory.
    file_write: Duration,
    /// The same size copied into fresh anonymous memory (page faults and all), 1 and 2 threads.
    fresh: Duration,
    fresh2: Duration,
    /// The same size sealed with AES-256-GCM (ring) on one thread, 1 MiB per call.
    aead: Duration,
}

impl Limits {
    fn print(&self, size: u64, dir: &Path) {
        println!(
            "write of the same size into {}: {:.0} ms = {:.2} GB/s",
            dir.display(),
            ms(self.file_write),
            gbs(size, self.file_write)
        );
        println!(
            "writes into fresh pages: {:.0} ms = {:.2} GB/s on one thread, {:.0} ms = {:.2} GB/s on two",
            ms(self.fresh),
            gbs(size, self.fresh),
            ms(self.fresh2),
            gbs(size, self.fresh2)
        );
        println!(
            "AES-256-GCM (ring) of the same size on one thread: {:.0} ms = {:.2} GB/s",
            ms(self.aead),
            gbs(size, self.aead)
        );
    }
}

/// Best of 3: `size` bytes sealed with AES-256-GCM in 1 MiB calls on one thread (the cost a
/// sealed image adds, before it is spread over the compression workers).
fn aead_time(size: u64) -> Duration {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let Ok(unbound) = UnboundKey::new(&AES_256_GCM, &[7u8; 32]) else {
        return Duration::MAX;
    };
    let key = LessSafeKey::new(unbound);
    let mut buf = vec![0x5au8; 1 << 20];
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut seq = 0u64;
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&seq.to_le_bytes());
            let tag = key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut buf[..n],
            );
            std::hint::black_box(&tag);
            seq += 1;
            left -= n as u64;
        }
        best = best.min(start.elapsed());
    }
    best
}

fn print_load() {
    if let Ok(load) = fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("load average at the end of the run: {}", load.join(" "));
    }
}

/// Best of 3: `size` bytes written into a new file in `dir` (1 MiB per write), then removed.
fn file_write_time(dir: &Path, size: u64) -> Result<Duration> {
    let chunk = vec![0x5au8; 1 << 20];
    let path = dir.join(format!(".bench-write-{}", std::process::id()));
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut f =
            fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])
                .with_context(|| format!("write {}", path.display()))?;
            left -= n as u64;
        }
        f.sync_all().ok();
        best = best.min(start.elapsed());
        drop(f);
        let _ = fs::remove_file(&path);
    }
    Ok(best)
}

/// Best of 3: `size` bytes copied from a resident buffer into freshly allocated (never
/// touched) memory by `threads` threads, each its own share.
fn fresh_write_time(size: u64, threads: usize) -> Duration {
    let src = vec![0xa5u8; 1 << 20];
    let share = (size as usize / threads).max(1);
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        thread::scope(|scope| {
            for _ in 0..threads {
                let src = &src;
                scope.spawn(move || {
                    let mut dst: Vec<u8> = Vec::with_capacity(share);
                    while dst.len() < share {
                        let n = src.len().min(share - dst.len());
                        dst.extend_from_slice(&src[..n]);
                    }
                    std::hint::black_box(&dst);
                    // Freed outside the timing would be fairer; the free is cheap next to
                    // the faults.
                });
            }
        });
        best = best.min(start.elapsed());
    }
    best
}

/// Start a victim, dump it (ending it), restore it with its PID, check its memory, end it.
fn measure(
    ferry: &Path,
    heap: &Path,
    size_mib: u64,
    codec: &str,
    image: &Path,
    scratch: &Path,
) -> Result<Row> {
    let mut victim = Victim::start(heap, size_mib, scratch)?;
    let rss = util::rss_bytes(victim.pid)?;
    // `CODEC+seal`: a sealed image, under a key made for the run.
    let (name, key) = match codec.strip_suffix("+seal") {
        Some(c) => {
            let key = scratch.join("bench.key");
            if !key.exists() {
                util::run_captured(
                    Command::new(ferry).args(["key", "new"]).arg(&key),
                    FERRY_TIMEOUT,
                )?
                .success("ferry key new")?;
            }
            (c, Some(key))
        }
        None => (codec, None),
    };
    let mut dump = Command::new(ferry);
    dump.arg("dump")
        .arg(victim.pid.to_string())
        .arg("-o")
        .arg(image)
        .args(["--compress", name]);
    if let Some(key) = &key {
        dump.arg("--seal").arg(key);
    }
    let dump = util::run_captured(&mut dump, FERRY_TIMEOUT)?.success("ferry dump")?;
    let frozen = frozen_time(&format!("{}{}", dump.stdout, dump.stderr));
    print!("  dump: {}{}", dump.stdout, dump.stderr);
    // ferry dump killed it once the image was durable; reap it so its PID is free again.
    victim
        .process
        .reap(Duration::from_secs(10))
        .context("ferry dump returned, but the victim is still there")?;
    let image_bytes = fs::metadata(image)
        .with_context(|| format!("stat {}", image.display()))?
        .len();

    // The checker reports its own cost on a debug line.
    let mut restore = Command::new(ferry);
    restore
        .arg("restore")
        .arg(image)
        .env("FERRY_LOG", "warn,ferry_agent::verify=debug");
    if let Some(key) = &key {
        restore.arg("--key").arg(key);
    }
    let restore = util::run_captured(&mut restore, FERRY_TIMEOUT)?.success("ferry restore")?;
    let check = check_time(&restore.stderr);
    let (pid, restored_at) = util::restored_pid(&restore)?;
    let mut restored = Owned::new(pid);
    if pid != victim.pid {
        println!(
            "  note: restored as PID {pid}, not {} (PID namespace)",
            victim.pid
        );
    }
    let memory_ok = victim.check_memory(pid)?;
    restored.end()?;

    Ok(Row {
        codec: codec.to_owned(),
        rss,
        frozen,
        dump_wall: dump.wall,
        image_bytes,
        restore: restored_at,
        check,
        memory_ok,
    })
}

/// A running heap victim, killed and reaped on drop.
struct Victim {
    process: Owned,
    pid: Pid,
    addr: usize,
    len: usize,
    report: PathBuf,
    /// Kept open so the victim's stdout is never a pipe without a reader.
    _stdout: BufReader<ChildStdout>,
}

impl Victim {
    fn start(heap: &Path, size_mib: u64, scratch: &Path) -> Result<Self> {
        let report = scratch.join("report");
        let mut child = Command::new(heap)
            .arg(size_mib.to_string())
            .arg(&report)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the heap victim")?;
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        let process = Owned::new(pid);
        let stdout = child.stdout.take().context("victim stdout")?;

        // It prints `ready ADDR LEN` once its memory is filled.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let ok = reader.read_line(&mut line).is_ok();
            let _ = tx.send((ok, line, reader));
        });
        let (_, line, reader) = rx
            .recv_timeout(Duration::from_secs(120))
            .context("victim did not get ready")?;
        let mut words = line.split_whitespace();
        let (Some("ready"), Some(addr), Some(len)) = (words.next(), words.next(), words.next())
        else {
            bail!("unexpected line from the victim: {line:?}");
        };
        let addr = usize::from_str_radix(addr, 16).context("victim address")?;
        let len = len.parse().context("victim length")?;
        Ok(Self {
            process,
            pid,
            addr,
            len,
            report,
            _stdout: reader,
        })
    }

    /// Asks the (restored) process `pid` to checksum its memory; true when it is unchanged.
    fn check_memory(&self, pid: Pid) -> Result<bool> {
        let _ = fs::remove_file(&self.report);
        kill(pid, Signal::SIGUSR1).with_context(|| format!("signal {pid}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match fs::read_to_string(&self.report) {
                Ok(text) if text.ends_with('\n') => return Ok(text.trim() == "ok"),
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
        bail!("the restored process {pid} did not answer the memory check");
    }
}

/// Best of 3 full passes copying the victim's memory with `process_vm_readv`.
fn raw_copy_time(pid: Pid, addr: usize, len: usize) -> Result<Duration> {
    // Resident before timing, so the copy does not pay for page faults in our buffer.
    let mut buf = vec![1u8; RAW_CHUNK.min(len)];
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut off = 0;
        while off < len {
            let n = buf.len().min(len - off);
            let remote = [RemoteIoVec {
                base: addr + off,
                len: n,
            }];
            let got = process_vm_readv(pid, &mut [IoSliceMut::new(&mut buf[..n])], &remote)
                .with_context(|| format!("process_vm_readv from {pid}"))?;
            if got == 0 {
                bail!("process_vm_readv read nothing at {:#x}", addr + off);
            }
            off += got;
        }
        best = best.min(start.elapsed());
    }
    Ok(best)
}

/// The "frozen" duration from `ferry dump`'s summary line: the `N ms` (or `Nms`) nearest to the
/// word "frozen", or the number after a `frozen_ms` key.
fn frozen_time(output: &str) -> Option<Duration> {
    let line = output.lines().find(|line| line.contains("frozen"))?;
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || ",;:=()[]".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    let frozen_at = words.iter().position(|w| w.contains("frozen"))?;
    if words[frozen_at].contains("ms") {
        let millis: f64 = words.get(frozen_at + 1)?.parse().ok()?;
        return Some(Duration::from_secs_f64(millis / 1000.0));
    }
    words
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let number = match w.strip_suffix("ms") {
                Some(n) if !n.is_empty() => n,
                _ if words.get(i + 1) == Some(&"ms") => w,
                _ => return None,
            };
            Some((i.abs_diff(frozen_at), number.parse::<f64>().ok()?))
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, millis)| Duration::from_secs_f64(millis / 1000.0))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The restore checker's time from its debug lines (`restore checked elapsed=3.1ms …`, plus
/// `smaps read ahead for the check elapsed=…` where the restore read it before the pages).
fn check_time(stderr: &str) -> Option<Duration> {
    let elapsed = |line: &str| -> Option<Duration> {
        let v = line.split("elapsed=").nth(1)?.split_whitespace().next()?;
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic() || c == 'µ')?);
        let n: f64 = num.parse().ok()?;
        let secs = match unit {
            "s" => n,
            "ms" => n / 1e3,
            "µs" | "us" => n / 1e6,
            "ns" => n / 1e9,
            _ => return None,
        };
        Some(Duration::from_secs_f64(secs))
    };
    let checked = elapsed(stderr.lines().find(|l| l.contains("restore checked"))?)?;
    let ahead = stderr
        .lines()
        .filter(|l| l.contains("smaps read ahead for the check"))
        .filter_map(elapsed)
        .sum::<Duration>();
    Some(checked + ahead)
}

#[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
fn gbs(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

#[allow(clippy::cast_precision_loss)]
fn print_table(rows: &[Row], limits: &Limits, size: u64) {
    println!();
    println!(
        "codec     frozen ms  dump wall ms  dump GB/s  image MiB  image %  restore ms  restore GB/s  check ms  check %  memory"
    );
    for r in rows {
        let dump_time = r.frozen.unwrap_or(r.dump_wall);
        println!(
            "{:<9} {:>9} {:>13.0} {:>10.2} {:>10.1} {:>8.1} {:>11.0} {:>13.2} {:>9} {:>8}  {}",
            r.codec,
            r.frozen.map_or("?".to_owned(), |f| format!("{:.0}", ms(f))),
            ms(r.dump_wall),
            gbs(r.rss, dump_time),
            r.image_bytes as f64 / MIB as f64,
            100.0 * r.image_bytes as f64 / r.rss as f64,
            ms(r.restore),
            gbs(r.rss, r.restore),
            r.check.map_or("?".to_owned(), |c| format!("{:.1}", ms(c))),
            r.check.map_or("?".to_owned(), |c| format!(
                "{:.1}",
                100.0 * c.as_secs_f64() / r.restore.as_secs_f64()
            )),
            if r.memory_ok { "same" } else { "DIFFERENT" },
        );
    }
    if let Some(r) = rows.first() {
        println!("resident (VmRSS): {} MiB", r.rss / MIB);
    }
    println!(
        "limits in this run, for {} MiB: process_vm_readv {:.0} ms ({:.2} GB/s); file write {:.0} ms \
         ({:.2} GB/s); fresh-page writes {:.0} ms on one thread, {:.0} ms on two; AES-256-GCM {:.0} ms \
         on one thread",
        size / MIB,
        ms(limits.readv),
        gbs(size, limits.readv),
        ms(limits.file_write),
        gbs(size, limits.file_write),
        ms(limits.fresh),
        ms(limits.fresh2),
        ms(limits.aead),
    );
    println!(
        "targets ({DEFAULT_CODEC}, the default): dump ≤ {TARGET_DUMP_MS:.0} ms frozen, restore ≤ \
         {TARGET_RESTORE_MS:.0} ms, image ≤ {TARGET_IMAGE_PCT}% of resident"
    );
    if let Some(r) = rows.iter().find(|r| r.codec == DEFAULT_CODEC) {
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        let dump = ms(r.frozen.unwrap_or(r.dump_wall));
        let restore = ms(r.restore);
        let image = 100.0 * r.image_bytes as f64 / r.rss as f64;
        println!(
            "{DEFAULT_CODEC}: dump {dump:.0} ms {} (readv alone: {:.0} ms), restore {restore:.0} ms {} \
             (fresh-page writes alone: {:.0} ms on two threads), image {image:.1}% {}",
            verdict(dump <= TARGET_DUMP_MS),
            ms(limits.readv),
            verdict(restore <= TARGET_RESTORE_MS),
            ms(limits.fresh2),
            verdict(image <= TARGET_IMAGE_PCT),
        );
    }
    print_load();
    println!(
        "GB = 10^9 bytes; dump GB/s = VmRSS / frozen time; restore = until `restored pid N` (the \
         restore checker included; check = its share, target ≤ 3% for 1 GiB)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_time_is_found_near_the_word() {
        let d = |ms: f64| Some(Duration::from_secs_f64(ms / 1000.0));
        assert_eq!(
            frozen_time("dumped 262144 pages (1024 MiB) in 900 ms, 812 ms frozen"),
            d(812.0)
        );
        assert_eq!(
            frozen_time("pid 5: 10 pages, 40960 bytes, frozen 3.5ms"),
            d(3.5)
        );
        assert_eq!(frozen_time("pages=10 bytes=40960 frozen_ms=7"), d(7.0));
        assert_eq!(frozen_time("no summary"), None);
    }
}
