//! The transfer stream's sending side: the header, the shipped files and the image, in
//! `TransferChunk`s (the faults that act on the stream act here).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_proto::v1::transfer_chunk::Part;
use ferry_proto::v1::{ShippedFile, TransferChunk, TransferHeader};
use tokio::sync::mpsc;

use crate::image::WriteStats;
use crate::migrate::{fault, negotiate};

/// Image bytes per `TransferChunk`.
pub(crate) const CHUNK: usize = 1 << 20;

/// Sends the image in `TransferChunk`s of about [`CHUNK`] bytes; the faults that act on the
/// stream act here.
pub(crate) struct ChunkWriter {
    pub(crate) tx: mpsc::Sender<TransferChunk>,
    pub(crate) buf: Vec<u8>,
    pub(crate) wire: Arc<AtomicU64>,
    pub(crate) raw: Arc<AtomicU64>,
    pub(crate) half: u64,
    pub(crate) corrupt: bool,
    pub(crate) pause: bool,
}

impl ChunkWriter {
    pub(crate) fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let past_half = self.raw.load(Ordering::Relaxed) >= self.half;
        if self.corrupt && past_half {
            // After the image writer made its digests: the destination must notice.
            let i = data.len() / 2;
            data[i] ^= 0x5a;
            self.corrupt = false;
            tracing::warn!("FERRY_FAULT corrupt-chunk: flipped a byte");
        }
        if self.pause && past_half {
            self.pause = false;
            tracing::warn!("FERRY_FAULT pause-mid-stream: sleeping 5 s");
            std::thread::sleep(Duration::from_secs(5));
        }
        let n = data.len() as u64;
        self.tx
            .blocking_send(TransferChunk {
                part: Some(Part::Image(data)),
            })
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stream closed"))?;
        self.wire.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_chunk()
    }
}

/// Sends the header, the shipped files, then the image that `write` makes into a
/// [`ChunkWriter`] (the stream faults act there), and flushes its last chunk.
#[allow(clippy::too_many_arguments)]
pub(crate) fn send_image(
    header: TransferHeader,
    pid: i32,
    ship: &[String],
    chunks: &mpsc::Sender<TransferChunk>,
    wire: &Arc<AtomicU64>,
    raw: &Arc<AtomicU64>,
    total: u64,
    write: impl FnOnce(ChunkWriter) -> Result<(ChunkWriter, WriteStats), String>,
) -> Result<WriteStats, String> {
    let closed = || "the transfer stream closed".to_string();
    chunks
        .blocking_send(TransferChunk {
            part: Some(Part::Header(header)),
        })
        .map_err(|_| closed())?;
    for path in ship {
        ship_file(pid, path, chunks, wire)?;
    }
    let out = ChunkWriter {
        tx: chunks.clone(),
        buf: Vec::with_capacity(CHUNK),
        wire: wire.clone(),
        raw: raw.clone(),
        half: total / 2,
        corrupt: fault("corrupt-chunk"),
        pause: fault("pause-mid-stream"),
    };
    let (mut out, stats) = write(out)?;
    out.flush_chunk().map_err(|_| closed())?;
    Ok(stats)
}

/// Sends one file the destination lacks, in pieces.
pub(crate) fn ship_file(
    pid: i32,
    path: &str,
    chunks: &mpsc::Sender<TransferChunk>,
    wire: &AtomicU64,
) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let local = negotiate::in_root(pid, path);
    let mut f = std::fs::File::open(&local).map_err(|e| format!("ship {path}: {e}"))?;
    let mode = f
        .metadata()
        .map_err(|e| format!("ship {path}: {e}"))?
        .mode();
    loop {
        let mut data = vec![0u8; CHUNK];
        let mut n = 0;
        while n < CHUNK {
            match f.read(&mut data[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(format!("ship {path}: {e}")),
            }
        }
        data.truncate(n);
        let last = n < CHUNK;
        wire.fetch_add(n as u64, Ordering::Relaxed);
        chunks
            .blocking_send(TransferChunk {
                part: Some(Part::File(ShippedFile {
                    path: path.to_string(),
                    mode,
                    data,
                    last,
                })),
            })
            .map_err(|_| "the transfer stream closed".to_string())?;
        if last {
            return Ok(());
        }
    }
}
