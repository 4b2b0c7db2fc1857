//! The kept output of detached processes: `$FERRY_STATE_DIR/output/ID.log`. The process's
//! stdout and stderr are one pipe, which ferryd drains into that file ([`drain`]). A pipe,
//! because a migration relays it (the stub keeps the pipe on the home host, the copy gets a
//! pipe of its own on the destination and the relay carries what it writes back here), where
//! a file would have to exist at the same path on the destination. The cost: a restarted
//! ferryd has lost the pipe's read end, and the process's next write gets `EPIPE`.
//!
//! It is bounded by punching a hole (`fallocate(PUNCH_HOLE)`) over its beginning whenever it
//! holds more than [`cap`] bytes (checked every second by the janitor): the file keeps its
//! size and offsets, the disk blocks of the old output are freed, and the first byte still
//! kept is the file's first data (`SEEK_DATA`). A reader is told how much was dropped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::fcntl::{FallocateFlags, fallocate};
use nix::unistd::{Whence, lseek};

/// The default bound of a process's kept output.
pub const DEFAULT_CAP: u64 = 64 << 20;

/// The bound: `FERRY_OUTPUT_CAP` (bytes) when set, else [`DEFAULT_CAP`].
pub fn cap() -> u64 {
    std::env::var("FERRY_OUTPUT_CAP")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(DEFAULT_CAP)
}

/// The output file of managed process `id`.
pub fn path(id: &str) -> PathBuf {
    crate::node::state_dir()
        .join("output")
        .join(format!("{id}.log"))
}

/// Creates the output file of `id` (mode 0600, its directory 0700) opened for appending.
pub fn create(id: &str) -> std::io::Result<File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let p = path(id);
    if let Some(dir) = p.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(p)
}

/// Frees the beginning of the file at `p` so that at most `cap` bytes (rounded up to a page)
/// are kept.
pub fn trim(p: &std::path::Path, cap: u64) {
    let Ok(f) = std::fs::OpenOptions::new().write(true).open(p) else {
        return;
    };
    let Ok(size) = f.metadata().map(|m| m.len()) else {
        return;
    };
    let end = size.saturating_sub(cap) & !4095;
    if end == 0 || first_data(&f) >= end {
        return;
    }
    let len = i64::try_from(end).unwrap_or(i64::MAX);
    if let Err(e) = fallocate(
        f.as_fd(),
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        0,
        len,
    ) {
        tracing::warn!(path = %p.display(), %e, "cannot drop old output");
    }
}

/// The offset of the first byte still kept (the end of the file when it holds none).
fn first_data(f: &File) -> u64 {
    match lseek(f.as_fd(), 0, Whence::SeekData) {
        Ok(off) => u64::try_from(off).unwrap_or(0),
        // ENXIO: no data at all (empty, or everything dropped).
        Err(_) => f.metadata().map_or(0, |m| m.len()),
    }
}

/// What one read of the output gave.
#[derive(Debug, Default)]
pub struct Piece {
    /// The bytes from the position on (at most a chunk).
    pub data: Vec<u8>,
    /// Bytes between the position asked for and the first kept one (dropped).
    pub dropped: u64,
    /// The position after `data`.
    pub next: u64,
}

/// Reads at most `max` bytes of the output of `id` from offset `pos` (skipping what was
/// dropped).
pub fn read(id: &str, pos: u64, max: usize) -> std::io::Result<Piece> {
    let mut f = File::open(path(id))?;
    let start = first_data(&f);
    let (pos, dropped) = if pos < start {
        (start, start - pos)
    } else {
        (pos, 0)
    };
    f.seek(SeekFrom::Start(pos))?;
    let mut data = Vec::new();
    f.take(max as u64).read_to_end(&mut data)?;
    Ok(Piece {
        next: pos + data.len() as u64,
        data,
        dropped,
    })
}

/// Copies everything read from `pipe` to the end of `file` until the pipe's end (every writer
/// closed it: the process, and after a migration its stub and the relay), then marks the
/// entry drained. On a thread of its own (blocking reads).
pub fn drain(node: crate::node::NodeRef, id: String, pipe: std::os::fd::OwnedFd, file: File) {
    use std::io::Write;
    std::thread::spawn(move || {
        let mut pipe = File::from(pipe);
        let mut file = file;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = file.write_all(&buf[..n]) {
                        tracing::warn!(%id, %e, "cannot keep output");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(%id, %e, "reading the output pipe failed");
                    break;
                }
            }
        }
        node.managed.update(&id, |e| e.drained = true);
    });
}
