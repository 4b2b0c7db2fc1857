//! The origin's side of a migration (docs/migration.md): record, negotiate, freeze, stream,
//! and at the commit point turn the original into the stub, or give it back untouched.
//!
//! Everything that traces the process runs on one dedicated thread (the tracer), which owns
//! the frozen process from the freeze to its end; the async side talks to it through
//! channels.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_proto::v1::migrate_event::Event;
use ferry_proto::v1::peer_client::PeerClient;
use ferry_proto::v1::transfer_chunk::Part;
use ferry_proto::v1::{
    FileAnswer, FileCheck, FileVerdict, MigrateEvent, MigrateRequest, MigrateSummary,
    MigrationRecord, MigrationRef, MovedOn, MovedReply, NegotiateRequest, Progress, ShippedFile,
    SinkChunk, TransferChunk, TransferHeader, TransferReply,
};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

use super::records::is_final;
use super::{chain, fault, live, negotiate, start_time};
use crate::daemon::NodeRef;
use crate::dump::{self, DumpOptions, autocodec};
use crate::image::{Codec, WriteStats};
use crate::relay::origin::{Plan, become_stub};
use crate::transport::PeerCred;

/// Image bytes per `TransferChunk`.
const CHUNK: usize = 1 << 20;
/// Largest gRPC message either side accepts.
pub const MAX_MESSAGE: usize = 64 << 20;

/// A client of a peer agent, with room for our chunks.
pub fn peer_client(ch: Channel) -> PeerClient<Channel> {
    PeerClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// A new migration id: 16 random hex digits.
fn new_id() -> String {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap_or_else(|_| {
        b = (std::process::id() as u64 ^ super::records::now_ms()).to_le_bytes()
    });
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the tracer thread reports.
#[derive(Debug)]
pub(super) enum Ev {
    /// Frozen and collected: the header is on its way. `at_us`: the wall-clock time just
    /// before the freeze (microseconds since the epoch).
    Frozen {
        since: Instant,
        total: u64,
        at_us: u64,
    },
    /// The whole image was handed to the stream.
    Written(WriteStats),
    /// Freezing or writing failed; the process was given back (thawed).
    Failed(String),
    /// Refused once frozen (at `at_us`), before anything went out; given back (thawed).
    Refused { why: String, at_us: u64 },
    /// The execve of the stub happened: the copy on the destination is the only one.
    Stubbed(Plan),
    /// The stub could not be injected; the process was given back (thawed).
    StubFailed(String),
    /// Thawed on request.
    Thawed,
    /// Live migration: pre-copy round `n` went out (raw bytes).
    Round { n: u32, raw: u64 },
    /// Live migration: the rounds are over; the tracer waits for [`Cmd::Freeze`].
    Precopied(live::Rounds),
    /// Lazy migration: the original dies with this agent from now on; so many pages follow.
    LazyArmed(u64),
    /// Lazy migration: the destination was lost after the copy ran; the original was ended.
    LazyLost(String),
}

/// What the async side tells the tracer after the image went out.
#[derive(Debug)]
pub(super) enum Cmd {
    Commit,
    Thaw,
    /// Live migration: the frozen phase is ours; stop the process for the rest.
    Freeze,
    /// Lazy migration: the commit (`migrate/lazy.rs`).
    Lazy(super::lazy::TracerLazy),
}

/// Sends the image in `TransferChunk`s of about [`CHUNK`] bytes; the faults that act on the
/// stream act here.
pub(super) struct ChunkWriter {
    pub(super) tx: mpsc::Sender<TransferChunk>,
    pub(super) buf: Vec<u8>,
    pub(super) wire: Arc<AtomicU64>,
    pub(super) raw: Arc<AtomicU64>,
    pub(super) half: u64,
    pub(super) corrupt: bool,
    pub(super) pause: bool,
}

impl ChunkWriter {
    pub(super) fn flush_chunk(&mut self) -> std::io::Result<()> {
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
pub(super) fn send_image(
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

/// Everything the tracer thread needs.
pub(super) struct TracerJob {
    pub(super) node: NodeRef,
    pub(super) pid: i32,
    pub(super) id: String,
    pub(super) codec: Codec,
    pub(super) socket: PathBuf,
    pub(super) ship: Vec<String>,
    pub(super) chunks: mpsc::Sender<TransferChunk>,
    pub(super) events: mpsc::UnboundedSender<Ev>,
    pub(super) cmds: std::sync::mpsc::Receiver<Cmd>,
    pub(super) wire: Arc<AtomicU64>,
    pub(super) raw: Arc<AtomicU64>,
    /// A non-root caller: authorized again once the process is frozen.
    pub(super) as_user: Option<PeerCred>,
    /// Listening ports whose relayed connections get a PROXY protocol header.
    pub(super) proxy_protocol: Vec<u32>,
    /// Live migration, with the downtime aimed at; `None`: stop and copy.
    pub(super) live: Option<Duration>,
    /// Set when the migration is given up: the rounds stop sending (a broken stream may not
    /// close the channel at once).
    pub(super) cancel: Arc<std::sync::atomic::AtomicBool>,
    /// Post-copy (`--lazy`): the private anonymous pages follow once the copy runs.
    pub(super) lazy: bool,
}

/// The tracer: freeze, header, shipped files, image; then wait for the decision.
fn tracer(job: TracerJob) {
    let TracerJob {
        node,
        pid,
        id,
        codec,
        socket,
        ship,
        chunks,
        events,
        cmds,
        wire,
        raw,
        as_user,
        proxy_protocol,
        live: live_downtime,
        cancel,
        lazy,
    } = job;
    let opts = DumpOptions {
        codec,
        // Sockets stay on the origin and are relayed: no TCP_REPAIR.
        relay_sockets: true,
        ..DumpOptions::default()
    };
    // Live migration: the rounds while it runs, then the final stop when our turn comes.
    let mut pre = None;
    if let Some(max_downtime) = live_downtime {
        match precopy(pid, opts, max_downtime, &chunks, &events, &wire, &cancel) {
            Ok(p) => pre = Some(p),
            Err(why) => {
                let _ = events.send(Ev::Failed(why));
                return;
            }
        }
        match cmds.recv() {
            Ok(Cmd::Freeze) => {}
            // Given up before the freeze: the tracking ends, the process ran on.
            _ => {
                drop(pre.take());
                let _ = events.send(Ev::Thawed);
                return;
            }
        }
    }
    let at_us = now_us();
    let held = match &mut pre {
        Some(p) => dump::hold_with(Pid::from_raw(pid), opts, |f| p.finish(f)),
        None => dump::hold(Pid::from_raw(pid), opts),
    };
    crate::metrics::dump(held.is_ok());
    let mut held = match held {
        Ok(h) => h,
        Err(e) => {
            let _ = events.send(Ev::Failed(format!("freeze: {}", chain(&e))));
            return;
        }
    };
    // Checked again now that it cannot fork: a child made since the first check refuses too.
    if let Some(why) = has_children(pid) {
        let _ = held.thaw();
        drop(pre.take());
        let _ = events.send(Ev::Refused { why, at_us });
        return;
    }
    // The caller was authorized when the request came; the process may have changed its
    // credentials since (a set-user-ID exec, PR_SET_DUMPABLE). Frozen, it cannot any more:
    // check again, with the dumpable flag the process itself reported (PR_GET_DUMPABLE).
    if let Some(caller) = as_user {
        let refused = match crate::daemon::local::authorize_migrate(caller, pid) {
            Err(s) => Some(s.message().to_string()),
            Ok(()) if held.state.attrs.dumpable != 1 => Some(format!(
                "permission denied: process {pid} is not dumpable (PR_GET_DUMPABLE {}): the \
                 kernel lets only a tracer with CAP_SYS_PTRACE at it",
                held.state.attrs.dumpable
            )),
            Ok(()) => None,
        };
        if let Some(why) = refused {
            let _ = held.thaw();
            drop(pre.take());
            let _ = events.send(Ev::Refused { why, at_us });
            return;
        }
    }
    if let Some(p) = &pre {
        match p.mark(&mut held.state.mm.vmas) {
            Ok(kept) => {
                tracing::debug!(migration = %id, pages = kept, "pages on the destination already")
            }
            Err(e) => {
                let _ = held.thaw();
                drop(pre.take());
                let _ = events.send(Ev::Failed(format!("pre-copied pages: {}", chain(&e))));
                return;
            }
        }
    }
    let lazy_runs = if lazy {
        super::lazy::mark(&mut held.state.mm.vmas)
    } else {
        Vec::new()
    };
    let total: u64 = held
        .state
        .mm
        .vmas
        .iter()
        .map(|v| v.stored_pages() * 4096)
        .sum();
    let _ = events.send(Ev::Frozen {
        since: held.since,
        total,
        at_us,
    });
    let mut plan = match Plan::capture(&held) {
        Ok(p) => p,
        Err(e) => {
            let _ = held.thaw();
            drop(pre.take());
            let _ = events.send(Ev::Failed(format!("relay: {}", chain(&e))));
            return;
        }
    };
    if let Err(e) = plan.proxy_protocol(&proxy_protocol) {
        let _ = held.thaw();
        drop(pre.take());
        let _ = events.send(Ev::Failed(e.to_string()));
        return;
    }
    // What the relay needs, kept before the stub can exist: a restarted agent serves the
    // stub again with it.
    if let Err(e) = node.store.put_relay(&id, &plan.endpoints()) {
        let _ = held.thaw();
        drop(pre.take());
        let _ = events.send(Ev::Failed(format!("record the relay: {}", chain(&e))));
        return;
    }
    let header = TransferHeader {
        migration_id: id.clone(),
        relays: plan.endpoints(),
        image_bytes_hint: total,
        origin_pid: pid,
        members: Vec::new(),
        lazy,
    };
    let sent = send_image(header, pid, &ship, &chunks, &wire, &raw, total, |out| {
        held.write_counting(out, codec, Some(&raw))
            .map_err(|e| chain(&e))
    });
    // The stream ends here (the destination sees its end).
    drop(chunks);
    match sent {
        Ok(stats) => {
            let _ = events.send(Ev::Written(stats));
        }
        Err(why) => {
            let _ = held.thaw();
            drop(pre.take());
            let _ = events.send(Ev::Failed(why));
            return;
        }
    }
    match cmds.recv() {
        Ok(Cmd::Commit) => match become_stub(&held, &plan, &id, &socket) {
            Ok(()) => {
                if let Err(e) = held.detach_as_is() {
                    tracing::warn!(migration = %id, error = %chain(&e), "detach the stub");
                }
                let _ = events.send(Ev::Stubbed(plan));
            }
            Err(e) => {
                let _ = held.thaw();
                drop(pre.take());
                let _ = events.send(Ev::StubFailed(chain(&e)));
            }
        },
        Ok(Cmd::Lazy(job)) => {
            super::lazy::tracer_commit(held, plan, &id, &socket, job, lazy_runs, &events)
        }
        // Told to, or the migration was dropped (the agent is going away): give it back.
        Ok(Cmd::Thaw | Cmd::Freeze) | Err(_) => {
            let _ = held.thaw();
            drop(pre.take());
            let _ = events.send(Ev::Thawed);
        }
    }
}

/// The pre-copy rounds of a live migration (see [`live::precopy_rounds`]): checked first as a
/// dump would be (nothing is tracked in a process that would be refused), then the tracking
/// starts and the rounds go out on the transfer stream.
fn precopy(
    pid: i32,
    opts: DumpOptions,
    max_downtime: Duration,
    chunks: &mpsc::Sender<TransferChunk>,
    events: &mpsc::UnboundedSender<Ev>,
    wire: &AtomicU64,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<live::Precopy, String> {
    let pid = Pid::from_raw(pid);
    dump::precheck_only(pid, opts).map_err(|e| format!("freeze: {}", chain(&e)))?;
    let mut pre = live::Precopy::start(pid, opts.codec)
        .map_err(|e| format!("start write tracking: {}", chain(&e)))?;
    let send = |p: ferry_proto::v1::PrecopyPages| {
        use tokio::sync::mpsc::error::TrySendError;
        let n = p.data.len() as u64;
        let mut chunk = TransferChunk {
            part: Some(Part::Precopy(p)),
        };
        let mut wait = Duration::from_micros(50);
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err("the migration was given up".to_string());
            }
            match chunks.try_send(chunk) {
                Ok(()) => break,
                Err(TrySendError::Full(c)) => {
                    chunk = c;
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(1));
                }
                Err(TrySendError::Closed(_)) => {
                    return Err("the transfer stream closed".to_string());
                }
            }
        }
        wire.fetch_add(n, Ordering::Relaxed);
        Ok(())
    };
    let mut report = |n: u32, r: &live::Round| {
        let _ = events.send(Ev::Round { n, raw: r.raw });
    };
    let rounds = live::precopy_rounds(&mut pre, max_downtime, &send, &mut report)?;
    let _ = events.send(Ev::Precopied(rounds));
    Ok(pre)
}

/// Sends one file the destination lacks, in pieces.
pub(super) fn ship_file(
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

/// Microseconds since the epoch (the records' frozen interval).
pub(super) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The children of `pid` (forked by any of its threads), each as "PID (name)".
fn children(pid: i32) -> Vec<String> {
    let mut kids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|l| {
            l.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    kids.sort_unstable();
    kids.dedup();
    kids.into_iter()
        .map(|c| match crate::proc::read(c, "comm") {
            Ok(name) => format!("{c} ({})", name.trim()),
            Err(_) => c.to_string(),
        })
        .collect()
}

/// Why `pid` cannot move alone, if it has children: they would stay behind on this host
/// (its workers, its pipeline), and it would lose them.
fn has_children(pid: i32) -> Option<String> {
    let kids = children(pid);
    (!kids.is_empty()).then(|| {
        format!(
            "pid {pid} has children, which would stay behind on this host: {}; --tree \
             moves it with all its descendants",
            kids.join(", ")
        )
    })
}

/// The frozen phase (freeze → commit acknowledged, or the original given back) of one
/// migration at a time: concurrent migrations would share the link and the CPUs, each
/// process frozen for all their transfers. What comes before (negotiation) runs
/// concurrently; the link probe of `--compress auto` runs inside, so that it measures the
/// link alone.
static FROZEN_PHASE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One migration as the origin runs it.
struct Origin {
    node: NodeRef,
    req: MigrateRequest,
    tx: mpsc::Sender<Result<MigrateEvent, Status>>,
    rec: MigrationRecord,
    t0: Instant,
    wire: Arc<AtomicU64>,
    raw: Arc<AtomicU64>,
    total: u64,
    as_user: Option<PeerCred>,
}

/// Moves `req.pid` to `req.to`, reporting progress on `tx`, which ends with the summary or an
/// error status.
///
/// `as_user` is a non-root caller (already authorized): it is authorized again once the
/// process is frozen.
pub async fn migrate(
    node: NodeRef,
    req: MigrateRequest,
    as_user: Option<PeerCred>,
    tx: mpsc::Sender<Result<MigrateEvent, Status>>,
) {
    let mut m = Origin {
        rec: MigrationRecord {
            migration_id: new_id(),
            role: "origin".into(),
            peer: req.to.clone(),
            pid: req.pid,
            ..Default::default()
        },
        node,
        req,
        tx: tx.clone(),
        t0: Instant::now(),
        wire: Arc::default(),
        raw: Arc::default(),
        total: 0,
        as_user,
    };
    let result = m.run().await;
    crate::metrics::migration(result.as_ref());
    if let Err(s) = &result {
        tracing::warn!(migration = %m.rec.migration_id, error = %s.message(), "migration failed");
    }
    let _ = tx
        .send(result.map(|s| MigrateEvent {
            event: Some(Event::Done(s)),
        }))
        .await;
}

impl Origin {
    async fn progress(&self, phase: &str) {
        let _ = self
            .tx
            .send(Ok(MigrateEvent {
                event: Some(Event::Progress(Progress {
                    migration_id: self.rec.migration_id.clone(),
                    phase: phase.into(),
                    bytes: self.raw.load(Ordering::Relaxed),
                    total: self.total,
                    wire_bytes: self.wire.load(Ordering::Relaxed),
                })),
            }))
            .await;
    }

    fn record(&mut self, state: &str, detail: impl Into<String>) -> Result<(), Status> {
        self.node
            .store
            .set(&mut self.rec, state, detail)
            .map_err(|e| Status::internal(format!("migration records: {}", chain(&e))))
    }

    /// Records the end of a migration that failed before the commit point, and says so.
    fn fail(&mut self, status: Status) -> Status {
        if self.rec.frozen_unix_us != 0 && self.rec.frozen_end_unix_us == 0 {
            // Given back (thawed) by now.
            self.rec.frozen_end_unix_us = now_us();
        }
        let _ = self.record("aborted", status.message().to_string());
        status
    }

    /// Waits for this agent's frozen phase (one migration at a time, see [`FROZEN_PHASE`]).
    async fn frozen_turn(&self) -> tokio::sync::MutexGuard<'static, ()> {
        let id = &self.rec.migration_id;
        let turn = match FROZEN_PHASE.try_lock() {
            Ok(g) => g,
            Err(_) => {
                tracing::info!(migration = %id, "queued behind another migration's frozen phase");
                self.progress("queued").await;
                FROZEN_PHASE.lock().await
            }
        };
        if fault("pause-before-freeze") {
            tracing::warn!(migration = %id, "FERRY_FAULT pause-before-freeze: sleeping 3 s");
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        turn
    }

    async fn run(&mut self) -> Result<MigrateSummary, Status> {
        let pid = self.req.pid;
        let to = self.req.to.clone();
        if pid <= 1 {
            return Err(Status::invalid_argument(format!("bad pid {pid}")));
        }
        if to == self.node.config.name {
            return Err(Status::invalid_argument(format!(
                "{to} is this host: pid {pid} already runs here (name another peer of [peers])"
            )));
        }
        let codec_req = self.req.compress.clone();
        if !matches!(codec_req.as_str(), "" | "auto" | "zstd" | "lz4" | "none") {
            return Err(Status::invalid_argument(format!(
                "--compress {codec_req}: expected auto, zstd, lz4 or none"
            )));
        }
        self.rec.start_time =
            start_time(pid).ok_or_else(|| Status::not_found(format!("no process {pid}")))?;
        // A stub relays for a process that runs elsewhere: that process is what can move.
        if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("ferry-stub")) {
            let elsewhere = self
                .node
                .store
                .list()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| {
                    r.role == "origin" && r.pid == pid && r.start_time == self.rec.start_time
                })
                .max_by_key(|r| r.started_unix_ms)
                .map(|r| {
                    format!(
                        " of migration {}: the process runs on {} as pid {}",
                        r.migration_id, r.peer, r.remote_pid
                    )
                })
                .unwrap_or_default();
            return Err(Status::failed_precondition(format!(
                "pid {pid} is a relay stub{elsewhere}; migrate it there"
            )));
        }
        if self.req.lazy && (self.req.tree || self.req.stop_and_copy) {
            return Err(Status::invalid_argument(
                "--lazy is a mode of its own: not with --tree or --stop-and-copy",
            ));
        }
        // Before anything is frozen (and again once it is: see the tracer). `--tree` takes
        // them along.
        if !self.req.tree
            && let Some(why) = has_children(pid)
        {
            return Err(Status::failed_precondition(why));
        }
        self.record("started", format!("to {to}"))?;
        let id = self.rec.migration_id.clone();
        tracing::info!(migration = %id, pid, %to, "migration started");

        let channel = self
            .node
            .peers
            .channel(&to)
            .map_err(|e| Status::invalid_argument(chain(&e)))
            .map_err(|s| self.fail(s))?;
        let mut client = peer_client(channel.clone());

        // Negotiation, before anything is frozen.
        self.progress("negotiate").await;
        let tree = self.req.tree;
        let files = tokio::task::spawn_blocking(move || {
            if tree {
                super::tree::file_checks(pid)
            } else {
                negotiate::file_checks(pid)
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let neg = NegotiateRequest {
            migration_id: id.clone(),
            kernel_release: negotiate::kernel_release(),
            xsave_features: negotiate::xsave_features(),
            vdso_sha256: negotiate::vdso_sha256(),
            files: files.clone(),
        };
        let reply = client
            .negotiate(neg)
            .await
            .map_err(|s| {
                let addr = self
                    .node
                    .peers
                    .peers()
                    .get(&to)
                    .cloned()
                    .unwrap_or_default();
                Status::unavailable(format!(
                    "{to} at {addr}: negotiation: {}",
                    crate::transport::status_detail(&s)
                ))
            })
            .map_err(|s| self.fail(s))?
            .into_inner();
        if !reply.problems.is_empty() {
            return Err(self.fail(Status::failed_precondition(format!(
                "{to} cannot run pid {pid}:\n  {}",
                reply.problems.join("\n  ")
            ))));
        }
        let ship = self.files_to_ship(&files, &reply.files)?;
        self.record(
            "negotiated",
            if ship.is_empty() {
                String::new()
            } else {
                format!("shipping {} file(s)", ship.len())
            },
        )?;

        // One frozen phase at a time on this agent: wait for the others' to end. A live
        // migration's rounds run before (the process runs meanwhile): it waits after them.
        // A tree is stopped and copied: its members are not tracked (yet).
        let live_downtime =
            (!self.req.stop_and_copy && !self.req.tree && !self.req.lazy).then(|| {
                Duration::from_millis(u64::from(match self.req.max_downtime_ms {
                    0 => live::DEFAULT_MAX_DOWNTIME_MS,
                    ms => ms,
                }))
            });
        let mut turn = None;
        if live_downtime.is_none() {
            turn = Some(self.frozen_turn().await);
        }

        let (codec, codec_why) = match codec_req.as_str() {
            "zstd" => (Codec::Zstd, String::new()),
            "lz4" => (Codec::Lz4, String::new()),
            "none" => (Codec::None, String::new()),
            _ => choose_codec(&mut client, pid).await,
        };
        let codec_name = codec_name(codec);

        // Freeze, stream.
        self.progress("freeze").await;
        let (chunk_tx, chunk_rx) = mpsc::channel::<TransferChunk>(8);
        let mut chunk_rx = Some(chunk_rx);
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let job = TracerJob {
            node: self.node.clone(),
            pid,
            id: id.clone(),
            codec,
            socket: self.node.config.socket.clone(),
            ship: ship.clone(),
            chunks: chunk_tx,
            events: ev_tx,
            cmds: cmd_rx,
            wire: self.wire.clone(),
            raw: self.raw.clone(),
            as_user: self.as_user,
            proxy_protocol: self.req.proxy_protocol.clone(),
            live: live_downtime,
            cancel: cancel.clone(),
            lazy: self.req.lazy,
        };
        let shared = Arc::new(super::tree::Shared::default());
        let tree_shared = self.req.tree.then(|| shared.clone());
        std::thread::Builder::new()
            .name(format!("migrate-{id}"))
            .spawn(move || match tree_shared {
                Some(s) => super::tree::tracer(job, s),
                None => tracer(job),
            })
            .map_err(|e| self.fail(Status::internal(format!("start the tracer thread: {e}"))))?;
        let start_transfer = |client: &PeerClient<Channel>, rx: Option<mpsc::Receiver<_>>| {
            let mut client = client.clone();
            let rx = rx.unwrap_or_else(|| mpsc::channel(1).1);
            tokio::spawn(async move { client.transfer(ReceiverStream::new(rx)).await })
        };
        let mut rounds = live::Rounds::default();
        let mut early = None;
        if live_downtime.is_some() {
            // The stream carries the rounds while the process runs.
            let mut transfer = start_transfer(&client, chunk_rx.take());
            self.progress("precopy").await;
            let failed = loop {
                tokio::select! {
                    r = &mut transfer => {
                        let why = match r {
                            Ok(Ok(_)) => "the destination ended the transfer early".to_string(),
                            Ok(Err(s)) => crate::transport::status_detail(&s),
                            Err(e) => e.to_string(),
                        };
                        break Some(format!("{to}: {why}"));
                    }
                    ev = ev_rx.recv() => match ev {
                        Some(Ev::Round { n, raw }) => {
                            tracing::info!(migration = %id, round = n, raw, "pre-copy round sent");
                            self.progress(&format!("round {n}")).await;
                        }
                        Some(Ev::Precopied(r)) => { rounds = r; break None; }
                        Some(Ev::Failed(why)) => break Some(why),
                        other => break Some(format!("tracer: unexpected {other:?}")),
                    },
                }
            };
            if let Some(why) = failed {
                // Not frozen: the process ran on; the tracking ends with the tracer. The
                // destination recorded nothing yet; it forgets the negotiation.
                cancel.store(true, Ordering::Relaxed);
                let _ = cmd_tx.send(Cmd::Thaw);
                // Until the tracer is done, so that nothing of the tracking is left when this
                // says the process goes on.
                while let Some(ev) = ev_rx.recv().await {
                    if matches!(ev, Ev::Thawed | Ev::Failed(_)) {
                        break;
                    }
                }
                abort_remote(self.node.clone(), to.clone(), id.clone());
                return Err(self.fail(Status::aborted(format!(
                    "live migration failed, pid {pid} goes on here: {why}"
                ))));
            }
            turn = Some(self.frozen_turn().await);
            self.progress("freeze").await;
            let _ = cmd_tx.send(Cmd::Freeze);
            early = Some(transfer);
        }

        let since = match ev_rx.recv().await {
            Some(Ev::Frozen {
                since,
                total,
                at_us,
            }) => {
                self.total = total;
                self.rec.frozen_unix_us = at_us;
                self.rec.members = shared.members();
                since
            }
            Some(Ev::Failed(why)) => return Err(self.fail(Status::failed_precondition(why))),
            Some(Ev::Refused { why, at_us }) => {
                self.rec.frozen_unix_us = at_us;
                return Err(self.fail(Status::failed_precondition(why)));
            }
            other => {
                return Err(self.fail(Status::internal(format!("tracer: unexpected {other:?}"))));
            }
        };
        // From here until the commit point, a failure gives the process back (the tracer
        // thaws it) and discards the copy.
        self.record("frozen", "streaming")?;
        let mut transfer = match early {
            Some(t) => t,
            None => start_transfer(&client, chunk_rx.take()),
        };
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut stats = None;
        let mut tracer_failed = None;
        let reply: Result<TransferReply, Status> = loop {
            tokio::select! {
                r = &mut transfer => {
                    break match r {
                        Ok(Ok(r)) => Ok(r.into_inner()),
                        Ok(Err(s)) => Err(s),
                        Err(e) => Err(Status::internal(e.to_string())),
                    };
                }
                ev = ev_rx.recv(), if stats.is_none() && tracer_failed.is_none() => match ev {
                    Some(Ev::Written(s)) => {
                        stats = Some(s);
                        self.progress("restore").await;
                    }
                    Some(Ev::Failed(why)) => tracer_failed = Some(why),
                    _ => tracer_failed = Some("the tracer thread ended".into()),
                },
                _ = tick.tick() => {
                    let phase = if stats.is_some() { "restore" } else { "stream" };
                    self.progress(phase).await;
                }
            }
        };
        let reply = match (reply, tracer_failed) {
            (Ok(r), None) => r,
            (r, failed) => {
                let _ = cmd_tx.send(Cmd::Thaw);
                let why = match (failed, r) {
                    (Some(f), Err(s)) => {
                        format!("{f}; {to}: {}", crate::transport::status_detail(&s))
                    }
                    (Some(f), Ok(_)) => f,
                    (None, Err(s)) => format!("{to}: {}", crate::transport::status_detail(&s)),
                    (None, Ok(_)) => unreachable!("handled above"),
                };
                // Wait until the process runs again before saying so.
                while let Some(ev) = ev_rx.recv().await {
                    if matches!(ev, Ev::Thawed | Ev::Failed(_)) {
                        break;
                    }
                }
                abort_remote(self.node.clone(), to.clone(), id.clone());
                return Err(self.fail(Status::aborted(format!(
                    "migration failed, pid {pid} goes on here: {why}"
                ))));
            }
        };
        let stats = match stats {
            Some(s) => s,
            None => match ev_rx.recv().await {
                Some(Ev::Written(s)) => s,
                _ => WriteStats::default(),
            },
        };
        self.rec.remote_pid = reply.pid;
        for (m, r) in self.rec.members.iter_mut().zip(&reply.members) {
            m.remote_pid = r.pid;
        }
        self.record(
            "prepared",
            format!("copy held stopped on {to} as pid {}", reply.pid),
        )?;

        // The commit point.
        self.progress("commit").await;
        if self.req.lazy {
            let summary = MigrateSummary {
                migration_id: id.clone(),
                remote_pid: reply.pid,
                remote_ns_pid: reply.ns_pid,
                wire_bytes: self.wire.load(Ordering::Relaxed),
                raw_bytes: stats.raw_bytes,
                codec: codec_name.into(),
                codec_why,
                warnings: reply.warnings,
                final_bytes: stats.raw_bytes,
                ..Default::default()
            };
            return super::lazy::origin_commit(
                &self.node,
                &mut self.rec,
                &mut client,
                &cmd_tx,
                &mut ev_rx,
                codec,
                since,
                self.t0,
                &self.tx,
                turn,
                summary,
            )
            .await;
        }
        self.record("committing", "turning the original into the stub")?;
        if fault("origin-exit-before-commit") {
            tracing::error!(migration = %id, "FERRY_FAULT origin-exit-before-commit: exiting");
            std::process::exit(70);
        }
        let _ = cmd_tx.send(Cmd::Commit);
        let plan = loop {
            match ev_rx.recv().await {
                Some(Ev::Stubbed(plan)) => break plan,
                Some(Ev::StubFailed(why)) => {
                    abort_remote(self.node.clone(), to.clone(), id.clone());
                    return Err(self.fail(Status::aborted(format!(
                        "the stub could not be injected, pid {pid} goes on here: {why}"
                    ))));
                }
                Some(Ev::Written(_)) => continue,
                other => {
                    // The tracer is gone without a word: it cannot have done the execve
                    // without reporting it, so the original was given back.
                    abort_remote(self.node.clone(), to.clone(), id.clone());
                    return Err(
                        self.fail(Status::internal(format!("tracer: unexpected {other:?}")))
                    );
                }
            }
        };
        if fault("origin-exit-after-commit") {
            tracing::error!(migration = %id, "FERRY_FAULT origin-exit-after-commit: exiting");
            std::process::exit(70);
        }
        // Past the commit point: the copy is the only one. Never abort now; Commit until
        // the destination acknowledges.
        commit_remote(&self.node, &mut client, &id, &to)
            .await
            .map_err(|why| {
                let _ = self.record("aborted", why.clone());
                Status::data_loss(why)
            })?;
        let frozen = since.elapsed();
        self.rec.frozen_end_unix_us = now_us();
        self.record("committed", format!("running on {to} as pid {}", reply.pid))?;
        drop(turn);
        self.record(
            "done",
            format!("running on {to} as pid {}; relaying", reply.pid),
        )?;
        // The relay runs on its own; it ends with the remote process or the stub.
        drop(channel);
        keep_relaying(
            self.node.clone(),
            Some(plan),
            pid,
            self.rec.start_time,
            id.clone(),
            to.clone(),
        );
        super::tree::relay_members(&self.node, &shared, &id, &to);
        // A copy that came here moved on: its origin hears where it went.
        moved_on(&self.node, pid, self.rec.start_time, &to, reply.pid, &id);
        let mut warnings = reply.warnings;
        warnings.extend(super::tree::summary_warnings(&shared));
        if !ship.is_empty() {
            warnings.push(format!(
                "shipped {} file(s): {}",
                ship.len(),
                ship.join(", ")
            ));
        }
        tracing::info!(migration = %id, frozen = ?frozen, "migration done");
        Ok(MigrateSummary {
            migration_id: id,
            remote_pid: reply.pid,
            remote_ns_pid: reply.ns_pid,
            total_us: self.t0.elapsed().as_micros() as u64,
            frozen_us: frozen.as_micros() as u64,
            wire_bytes: self.wire.load(Ordering::Relaxed),
            raw_bytes: stats.raw_bytes + rounds.bytes.iter().sum::<u64>(),
            codec: codec_name.into(),
            codec_why,
            warnings,
            rounds: rounds.bytes.len() as u32,
            round_bytes: rounds.bytes,
            live: rounds.why,
            final_bytes: stats.raw_bytes,
            lazy: String::new(),
        })
    }

    /// The files to send along: those the destination lacks, with `--ship-files`; without
    /// it, any such file refuses the migration with the list. The destination says per file
    /// only "differs" or "missing"; what is known of it is said from this host's side.
    fn files_to_ship(
        &mut self,
        files: &[FileCheck],
        answers: &[FileAnswer],
    ) -> Result<Vec<String>, Status> {
        let to = self.req.to.clone();
        let mut problems = Vec::new();
        let mut ship = Vec::new();
        let mut unshippable = Vec::new();
        for a in answers {
            // Only files this host asked about count (a destination cannot add any).
            let Some(f) = files.iter().find(|f| f.path == a.path) else {
                continue;
            };
            let is_file = f.written || f.size > 0 || !f.build_id.is_empty() || !f.sha256.is_empty();
            let line = match FileVerdict::try_from(a.verdict) {
                Ok(FileVerdict::Same) => continue,
                Ok(FileVerdict::Missing) => format!("{}: missing", f.path),
                _ => format!("{}: differs ({})", f.path, describe(f)),
            };
            if is_file {
                ship.push(f.path.clone());
            } else {
                unshippable.push(line.clone());
            }
            problems.push(line);
        }
        if problems.is_empty() {
            return Ok(Vec::new());
        }
        if !self.req.ship_files {
            return Err(self.fail(Status::failed_precondition(format!(
                "files missing or different on {to} (--ship-files sends them along):\n  {}",
                problems.join("\n  ")
            ))));
        }
        if !unshippable.is_empty() {
            return Err(self.fail(Status::failed_precondition(format!(
                "directories missing or different on {to} (only files can be shipped):\n  {}",
                unshippable.join("\n  ")
            ))));
        }
        Ok(ship)
    }
}

/// What this host's copy of a file is, for a "differs" line.
fn describe(f: &FileCheck) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    if f.written {
        "not a regular file there".to_string()
    } else if !f.build_id.is_empty() {
        format!("here {} bytes, build-id {}", f.size, hex(&f.build_id))
    } else if !f.sha256.is_empty() {
        format!("here {} bytes, SHA-256 {}", f.size, hex(&f.sha256))
    } else if f.size > 0 {
        format!("here {} bytes, compared by size and mtime", f.size)
    } else {
        "here a directory".to_string()
    }
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::None => "none",
        Codec::Zstd => "zstd",
        Codec::Lz4 => "lz4",
    }
}

/// Sends Commit until the destination acknowledges it. Gives up only when the destination
/// says the copy is gone (then nothing can bring the process back; it is said loudly).
pub(super) async fn commit_remote(
    _node: &NodeRef,
    client: &mut PeerClient<Channel>,
    id: &str,
    to: &str,
) -> Result<(), String> {
    let mut delay = Duration::from_millis(200);
    loop {
        match client
            .commit(MigrationRef {
                migration_id: id.to_string(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::NotFound
                ) =>
            {
                return Err(format!(
                    "after the stub took the original's place, {to} refused to commit: {}",
                    s.message()
                ));
            }
            Err(s) => {
                tracing::warn!(migration = %id, %to, error = %crate::transport::status_detail(&s), "commit not acknowledged; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Tells the destination to discard its copy, in the background, until it acknowledges.
pub(super) fn abort_remote(node: NodeRef, to: String, id: String) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(500);
        loop {
            let r = match node.peers.channel(&to) {
                Ok(ch) => peer_client(ch)
                    .abort(MigrationRef {
                        migration_id: id.clone(),
                    })
                    .await
                    .map(|_| ())
                    .map_err(|s| s.message().to_string()),
                Err(e) => Err(chain(&e)),
            };
            match r {
                Ok(()) => return,
                Err(e) => {
                    tracing::info!(migration = %id, %to, error = %e, "abort not acknowledged; retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    });
}

/// `--compress auto`: measures the link (a burst through `Peer.Sink`), then lets
/// [`autocodec::choose`] measure each codec on a sample of the process's own memory and pick
/// the codec under which the whole pipeline (read, compress on every core, send) is fastest.
/// Returns the codec and why.
async fn choose_codec(client: &mut PeerClient<Channel>, pid: i32) -> (Codec, String) {
    const PROBE: usize = 16 << 20;
    let t = Instant::now();
    let burst = futures_burst(PROBE);
    let link = match client.sink(burst).await {
        Ok(_) => PROBE as f64 / t.elapsed().as_secs_f64(),
        Err(s) => {
            tracing::info!(error = %s.message(), "link probe failed; using zstd");
            return (
                Codec::Zstd,
                format!("auto: zstd (the link probe failed: {})", s.message()),
            );
        }
    };
    let choice = tokio::task::spawn_blocking(move || {
        autocodec::choose(
            Pid::from_raw(pid),
            autocodec::Output::Link(link),
            Codec::Lz4,
        )
    })
    .await;
    match choice {
        Ok(c) => {
            tracing::info!(why = %c.why, "compression chosen");
            (c.codec, c.why)
        }
        Err(e) => (
            Codec::Lz4,
            format!("auto: lz4 (the measurement failed: {e})"),
        ),
    }
}

fn futures_burst(bytes: usize) -> impl tokio_stream::Stream<Item = SinkChunk> + Send + 'static {
    let piece = vec![0x5au8; 1 << 20];
    tokio_stream::iter((0..bytes / piece.len()).map(move |_| SinkChunk {
        data: piece.clone(),
    }))
}

/// Whether `pid` is still the stub of a migration: the process that started at `start`, now
/// running `ferry-stub`.
pub(super) fn is_stub(pid: i32, start: u64) -> bool {
    pid > 0
        && start_time(pid) == Some(start)
        && std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|p| p.file_name().is_some_and(|n| n == "ferry-stub"))
}

/// How long the relay of a stub keeps trying to reach a destination that does not answer
/// before the process counts as lost: `FERRY_RELAY_GIVE_UP` seconds, default 3600 (how long
/// a client may be away: the destination keeps a copy frozen for its client as long).
fn relay_give_up() -> Duration {
    const DEFAULT: u64 = crate::relay::GIVE_UP_DEFAULT;
    let secs = match std::env::var("FERRY_RELAY_GIVE_UP") {
        Ok(v) => v.trim().parse::<u64>().unwrap_or_else(|_| {
            tracing::warn!(value = %v, "FERRY_RELAY_GIVE_UP is not a number of seconds; using {DEFAULT}");
            DEFAULT
        }),
        Err(_) => DEFAULT,
    };
    Duration::from_secs(secs)
}

/// Runs the relay of migration `id` (stub `stub_pid`, destination `to`) until it ends for
/// good: the remote process ended and the stub was told, or the stub died. While the stub
/// lives, a relay that broke (the stream, the link, the destination's agent) starts again,
/// with ferryd's duplicates of the stub's descriptors taken again from the stub. `first` is
/// the plan of the migration that just committed; after an agent restart it is `None`.
/// The process is lost when the destination answers that it holds no copy for the
/// migration, or does not answer for [`relay_give_up`]: then the stub is told (it exits with
/// `relay::LOST_EXIT_CODE`) and the record says `lost`. Then the relay's entry in the store
/// goes.
pub(crate) fn keep_relaying(
    node: NodeRef,
    first: Option<Plan>,
    stub_pid: i32,
    stub_start: u64,
    id: String,
    to: String,
) {
    tokio::spawn(async move {
        let mut plan = first;
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0u32;
        let give_up = relay_give_up();
        // Since when the destination did not answer (none of the attempts reached it).
        let mut unanswered: Option<Instant> = None;
        let mut lost: Option<String> = None;
        loop {
            if attempt > 0 {
                if let Some(t) = unanswered
                    && t.elapsed() >= give_up
                {
                    lost = Some(format!(
                        "{to} did not answer for {} s",
                        t.elapsed().as_secs()
                    ));
                    break;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            attempt += 1;
            if !is_stub(stub_pid, stub_start) {
                tracing::info!(migration = %id, stub_pid, "the stub is gone: the relay ends");
                break;
            }
            let p = match plan.take() {
                Some(p) => p,
                None => {
                    let recorded = match node.store.relay(&id) {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            tracing::warn!(migration = %id, "no relay recorded for the stub");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(migration = %id, error = %chain(&e), "read the relay record");
                            continue;
                        }
                    };
                    match Plan::reacquire(stub_pid, &recorded) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(migration = %id, error = %chain(&e), "take the stub's descriptors");
                            continue;
                        }
                    }
                }
            };
            let ch = match node.peers.channel(&to) {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(migration = %id, %to, error = %chain(&e), "no channel for the relay; retrying");
                    unanswered.get_or_insert_with(Instant::now);
                    continue;
                }
            };
            tracing::info!(migration = %id, stub_pid, attempt, "relay starting");
            match crate::relay::origin::start(node.clone(), p, stub_pid, id.clone(), ch).await {
                Ok(Ok(exit)) => {
                    record_ended(&node, &id, exit.as_ref());
                    break;
                }
                Ok(Err(crate::relay::RelayError::Rpc(s))) if s.code() == tonic::Code::NotFound => {
                    tracing::warn!(migration = %id, %to, error = %s.message(), "the destination has no relay for this migration any more");
                    lost = Some(format!(
                        "{to} holds no copy any more (its agent restarted, or the copy ended while it was down)"
                    ));
                    break;
                }
                Ok(Err(crate::relay::RelayError::Rpc(s))) => {
                    // The stream could not be opened: the destination did not answer.
                    tracing::warn!(migration = %id, %to, error = %s.message(), "relay not accepted; retrying");
                    unanswered.get_or_insert_with(Instant::now);
                }
                Ok(Err(e)) => {
                    tracing::warn!(migration = %id, error = %chain(&e), "relay broke; starting it again");
                    unanswered = None;
                    // The stream worked: the next one is tried soon (what it kept waits).
                    delay = Duration::from_millis(500);
                }
                Err(e) => {
                    tracing::warn!(migration = %id, error = %e, "relay task failed; starting it again");
                }
            }
        }
        if let Some(why) = lost {
            stub_lost(&node, stub_pid, stub_start, &id, &to, &why).await;
        }
        if let Err(e) = node.store.remove_relay(&id) {
            tracing::warn!(migration = %id, error = %chain(&e), "remove the relay record");
        }
    });
}

/// The relay of migration `id` ended with the remote process: its record says so, with the
/// exit status.
fn record_ended(node: &NodeRef, id: &str, exit: Option<&ferry_proto::v1::ExitStatus>) {
    let mut rec = match node.store.get(id) {
        Ok(Some(r)) if r.state == "done" => r,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(migration = %id, error = %chain(&e), "read the record");
            return;
        }
    };
    let where_ = if rec.moved_to.is_empty() {
        format!("on {} as pid {}", rec.peer, rec.remote_pid)
    } else {
        format!("on {} as pid {}", rec.moved_to, rec.moved_pid)
    };
    match node.store.ended(&mut rec, exit, &where_) {
        Ok(()) => tracing::info!(migration = %id, detail = %rec.detail, "migrated process ended"),
        Err(e) => tracing::warn!(migration = %id, error = %chain(&e), "record the end"),
    }
}

/// The process `pid` (started at `start`) just moved from here to `to` (as `remote_pid`, by
/// migration `by`). If it was itself the copy of an earlier migration to this host, that
/// record and the earlier migration's origin (told in the background, until it
/// acknowledges) say where it went.
pub(crate) fn moved_on(node: &NodeRef, pid: i32, start: u64, to: &str, remote_pid: i32, by: &str) {
    let records = match node.store.list() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %chain(&e), "read the records");
            return;
        }
    };
    for mut rec in records.into_iter().filter(|r| {
        r.role == "destination" && r.pid == pid && r.start_time == start && r.state == "done"
    }) {
        rec.moved_to = to.to_string();
        rec.moved_pid = remote_pid;
        let detail =
            format!("moved on to {to} as pid {remote_pid} (migration {by}); pid {pid} here relays");
        let state = rec.state.clone();
        if let Err(e) = node.store.set(&mut rec, &state, detail) {
            tracing::warn!(migration = %rec.migration_id, error = %chain(&e), "record the move");
        }
        let note = MovedOn {
            migration_id: rec.migration_id.clone(),
            to: to.to_string(),
            pid: remote_pid,
            by_migration_id: by.to_string(),
        };
        let (node, origin) = (node.clone(), rec.peer.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            for _ in 0..20 {
                let r = match node.peers.channel(&origin) {
                    Ok(ch) => peer_client(ch)
                        .moved(note.clone())
                        .await
                        .map(|_| ())
                        .map_err(|s| s.message().to_string()),
                    Err(e) => Err(chain(&e)),
                };
                match r {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::info!(migration = %note.migration_id, %origin, error = %e, "the origin did not hear of the move; retrying")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        });
    }
}

/// `Peer.Moved`: the copy of our migration on `peer` moved on to another host. The record
/// says where; if this host's process was itself a copy, its origin hears it too.
pub async fn moved(node: &NodeRef, peer: &str, req: MovedOn) -> Result<MovedReply, Status> {
    let id = &req.migration_id;
    let bad = req.to.is_empty()
        || req.to.len() > 253
        || req.to.chars().any(|c| c.is_control() || c.is_whitespace());
    if bad {
        return Err(Status::invalid_argument(format!(
            "bad host name {:?}",
            req.to
        )));
    }
    let store_err = |e: super::records::RecordsError| {
        Status::internal(format!("migration records: {}", chain(&e)))
    };
    let mut rec = node
        .store
        .get(id)
        .map_err(store_err)?
        .ok_or_else(|| Status::not_found(format!("no migration {id}")))?;
    if rec.role != "origin" || rec.peer != peer {
        return Err(Status::permission_denied(format!(
            "migration {id} is not one of ours to {peer}"
        )));
    }
    rec.moved_to = req.to.clone();
    rec.moved_pid = req.pid;
    let state = rec.state.clone();
    let detail = if state == "done" {
        format!(
            "running on {} as pid {} (moved on from {peer}, its migration {}); relaying via {peer}",
            req.to, req.pid, req.by_migration_id
        )
    } else {
        rec.detail.clone()
    };
    node.store
        .set(&mut rec, &state, detail)
        .map_err(store_err)?;
    tracing::info!(migration = %id, to = %req.to, pid = req.pid, "the process moved on");
    moved_on(
        node,
        rec.pid,
        rec.start_time,
        &req.to,
        req.pid,
        &req.by_migration_id,
    );
    Ok(MovedReply {})
}

/// The process of migration `id` is lost (`why`): its stub is told (it exits with
/// `relay::LOST_EXIT_CODE`), then the record says `lost`.
async fn stub_lost(node: &NodeRef, stub_pid: i32, stub_start: u64, id: &str, to: &str, why: &str) {
    let code = crate::relay::LOST_EXIT_CODE;
    tracing::warn!(migration = %id, stub_pid, reason = %why, "the migrated process is lost: ending its stub with exit code {code}");
    let told = crate::relay::origin::end_lost_stub(
        &node.relays,
        &node.config.socket,
        stub_pid,
        id,
        to,
        || is_stub(stub_pid, stub_start),
    )
    .await;
    let detail = match told {
        Ok(true) => format!("{why}; the stub (pid {stub_pid}) exited with code {code}"),
        Ok(false) => format!("{why}; the stub (pid {stub_pid}) was gone"),
        Err(e) => {
            tracing::warn!(migration = %id, error = %chain(&e), "tell the stub");
            format!("{why}; the stub (pid {stub_pid}) could not be told: {e}")
        }
    };
    match node.store.get(id) {
        Ok(Some(mut rec)) => {
            if let Err(e) = node.store.set(&mut rec, "lost", detail) {
                tracing::warn!(migration = %id, error = %chain(&e), "record the loss");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(migration = %id, error = %chain(&e), "read the record"),
    }
}

/// On start: serves again the stubs of migrations this agent committed whose relay had not
/// ended (the record is `done`, the relay is still recorded and the stub lives).
pub(crate) fn resume_relay(node: NodeRef, rec: &MigrationRecord) {
    super::tree::resume_member_relays(&node, rec);
    match node.store.relay(&rec.migration_id) {
        Ok(Some(_)) if is_stub(rec.pid, rec.start_time) => {
            tracing::info!(migration = %rec.migration_id, stub_pid = rec.pid, "resuming the relay");
            keep_relaying(
                node.clone(),
                None,
                rec.pid,
                rec.start_time,
                rec.migration_id.clone(),
                rec.peer.clone(),
            );
        }
        Ok(Some(_)) => {
            let _ = node.store.remove_relay(&rec.migration_id);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(migration = %rec.migration_id, error = %chain(&e), "read the relay record");
        }
    }
}

/// On start: resolves a migration this agent was the origin of (rule 3).
pub(crate) async fn resolve_record(node: NodeRef, mut rec: MigrationRecord) {
    let id = rec.migration_id.clone();
    let to = rec.peer.clone();
    let stubbed = || is_stub(rec.pid, rec.start_time);
    let state = rec.state.clone();
    let remote_pid = rec.remote_pid;
    match state.as_str() {
        "committing" | "committed" if !stubbed() && super::lazy::is_lazy(&rec) => {
            super::lazy::resolve_origin(&node, rec).await;
        }
        "committing" | "committed" if stubbed() => {
            super::tree::end_unstubbed_members(&rec);
            let _ = node.store.set(
                &mut rec,
                "committing",
                "the stub replaced the original before the agent stopped; committing",
            );
            let mut delay = Duration::from_millis(500);
            loop {
                let r = match node.peers.channel(&to) {
                    Ok(ch) => commit_remote(&node, &mut peer_client(ch), &id, &to).await,
                    Err(e) => {
                        tracing::info!(migration = %id, error = %chain(&e), "no channel; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                        continue;
                    }
                };
                let _ = match r {
                    Ok(()) => {
                        let set = node.store.set(
                            &mut rec,
                            "done",
                            format!(
                                "committed after an agent restart; running on {to} as pid {}; \
                                 relaying",
                                remote_pid
                            ),
                        );
                        resume_relay(node.clone(), &rec);
                        set
                    }
                    Err(why) => node.store.set(&mut rec, "aborted", why),
                };
                return;
            }
        }
        s if !is_final(s) => {
            // Before the execve: the original was given back by the kernel when its tracer
            // died (PTRACE_SEIZE without EXITKILL), or never frozen.
            let _ = node.store.set(
                &mut rec,
                "aborted",
                format!("the agent stopped at {s}; the original went on here"),
            );
            abort_remote(node.clone(), to, id);
        }
        _ => {}
    }
}
