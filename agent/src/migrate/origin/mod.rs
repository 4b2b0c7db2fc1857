//! The origin's side of a migration (docs/migration.md): record, negotiate, freeze, stream,
//! and at the commit point turn the original into the stub, or give it back untouched.
//!
//! By job: this file runs the phases ([`migrate`], each phase a method of `Origin`, its
//! errors those of [`super::error`]); [`tracer`] is the thread that traces the process from
//! the freeze to its end (the async side talks to it through channels); [`stream`] sends the
//! image; [`codec_probe`] is `--compress auto`; [`recovery`] keeps relaying after the commit
//! and resolves what a previous run left unfinished.

mod codec_probe;
mod recovery;
mod stream;
mod tracer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_proto::v1::migrate_event::Event;
use ferry_proto::v1::peer_client::PeerClient;
use ferry_proto::v1::{
    FileAnswer, FileCheck, FileVerdict, MigrateEvent, MigrateRequest, MigrateSummary,
    MigrationRecord, MigrationRef, NegotiateRequest, Progress, TransferChunk, TransferReply,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

pub use recovery::moved;
pub(crate) use recovery::{
    is_stub, keep_relaying, moved_on, relay_moved, resolve_record, resume_relay,
};
pub(crate) use stream::send_image;
pub(crate) use tracer::{Sent, TracerCommand, TracerEvent, TracerJob, now_us, send_precopy};

use super::error::{CommitError, MigrateError, NegotiateError, TransferError};
use super::state::{OriginState, Role};
use super::{chain, fault, live, negotiate, start_time, version};
use crate::image::{Codec, WriteStats};
use crate::node::NodeRef;
use crate::relay::origin::Plan;
use crate::timeline::{self, Side};
use crate::transport::PeerCred;

/// The tracer's events under their old name (the tree's tracer uses it).
pub(crate) type Ev = TracerEvent;
/// The tracer's commands under their old name (the tree's tracer uses it).
pub(crate) type Cmd = TracerCommand;

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
        b = (u64::from(std::process::id()) ^ super::records::now_ms()).to_le_bytes()
    });
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The frozen phase (freeze → commit acknowledged, or the original given back) of one
/// migration at a time: concurrent migrations would share the link and the CPUs, each
/// process frozen for all their transfers. What comes before (negotiation) runs
/// concurrently; the link probe of `--compress auto` runs inside, so that it measures the
/// link alone.
static FROZEN_PHASE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a live migration waits at most for the destination to take in its pre-copied
/// pages before it freezes ([`Origin::wait_applied`]).
const APPLIED_WAIT: Duration = Duration::from_secs(5);

/// The task that runs the `Peer.Transfer` call.
type TransferTask = tokio::task::JoinHandle<Result<tonic::Response<TransferReply>, Status>>;

/// One migration as the origin runs it.
struct Origin {
    node: NodeRef,
    req: MigrateRequest,
    tx: mpsc::Sender<Result<MigrateEvent, Status>>,
    rec: MigrationRecord,
    t0: Instant,
    wire: Arc<AtomicU64>,
    /// A live migration: raw bytes of pre-copied pages handed to the transfer stream.
    precopied: Arc<AtomicU64>,
    raw: Arc<AtomicU64>,
    total: u64,
    as_user: Option<PeerCred>,
    /// The destination was asked to make the copy's task at the negotiation (post-copy).
    made_ahead: bool,
    /// Post-copy: the destination takes absent runs (protocol 1.3), so the areas that follow
    /// are walked once the copy runs, not under the freeze.
    absent_runs: bool,
}

/// What the negotiation settled.
struct Negotiated {
    channel: Channel,
    client: PeerClient<Channel>,
    /// The files to send along (`--ship-files`).
    ship: Vec<String>,
}

/// The tracer thread, seen from the async side.
struct Tracer {
    events: mpsc::UnboundedReceiver<TracerEvent>,
    cmds: std::sync::mpsc::Sender<TracerCommand>,
    /// The transfer stream's receiving end, until the `Peer.Transfer` call takes it.
    chunks: Option<mpsc::Receiver<TransferChunk>>,
    /// Set when the migration is given up during the pre-copy rounds.
    cancel: Arc<AtomicBool>,
    /// `--tree`: what the tree's tracer shares (empty otherwise).
    shared: Arc<super::tree::Shared>,
}

impl Tracer {
    /// Tells the tracer to give the process back and waits until it did, so that nothing of
    /// the migration is left in the process when the caller says it goes on.
    async fn thaw(&mut self) {
        let _ = self.cmds.send(TracerCommand::Thaw);
        while let Some(ev) = self.events.recv().await {
            if matches!(ev, TracerEvent::Thawed | TracerEvent::Failed(_)) {
                break;
            }
        }
    }
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
            role: Role::Origin.as_str().into(),
            peer: req.to.clone(),
            pid: req.pid,
            reason: req.reason.clone(),
            ..Default::default()
        },
        node,
        req,
        tx: tx.clone(),
        t0: Instant::now(),
        made_ahead: false,
        absent_runs: false,
        wire: Arc::default(),
        precopied: Arc::default(),
        raw: Arc::default(),
        total: 0,
        as_user,
    };
    let result = m.run().await.map_err(Status::from);
    timeline::forget(Side::Origin, &m.rec.migration_id);
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

    fn record(
        &mut self,
        state: OriginState,
        detail: impl Into<String>,
    ) -> Result<(), MigrateError> {
        self.node
            .store
            .set(&mut self.rec, state, detail)
            .map_err(MigrateError::Records)
    }

    /// Records the end of a migration that failed before the commit point, and says so.
    fn fail(&mut self, e: impl Into<MigrateError>) -> MigrateError {
        let e = e.into();
        if self.made_ahead {
            // The destination may hold a task made at the negotiation: ended now, not when
            // it expires.
            abort_remote(
                self.node.clone(),
                self.req.to.clone(),
                self.rec.migration_id.clone(),
            );
        }
        if self.rec.frozen_unix_us != 0 && self.rec.frozen_end_unix_us == 0 {
            // Given back (thawed) by now.
            self.rec.frozen_end_unix_us = now_us();
        }
        let _ = self.record(OriginState::Aborted, e.to_string());
        e
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

    /// The phases, in order. Each failure before the commit point is recorded (`aborted`) and
    /// leaves the original running.
    async fn run(&mut self) -> Result<MigrateSummary, MigrateError> {
        let (pid, to) = (self.req.pid, self.req.to.clone());
        let codec = self.check_request()?;
        self.record(OriginState::Started, format!("to {to}"))?;
        tracing::info!(migration = %self.rec.migration_id, pid, %to, "migration started");

        // Negotiation, before anything is frozen.
        let mut neg = match self.negotiate().await {
            Ok(n) => n,
            Err(e) => return Err(self.fail(e)),
        };
        let shipping = match neg.ship.len() {
            0 => String::new(),
            n => format!("shipping {n} file(s)"),
        };
        self.record(OriginState::Negotiated, shipping)?;

        // One frozen phase at a time on this agent: wait for the others' to end. A live
        // migration's rounds run before (the process runs meanwhile): it waits after them.
        // A tree is live too: every member's writes are tracked (migrate/tree_live.rs).
        let live_downtime = (!self.req.stop_and_copy && !self.req.lazy).then(|| {
            Duration::from_millis(u64::from(match self.req.max_downtime_ms {
                0 => live::DEFAULT_MAX_DOWNTIME_MS,
                ms => ms,
            }))
        });
        let mut turn = None;
        if live_downtime.is_none() {
            turn = Some(self.frozen_turn().await);
        }
        let (codec, codec_why) = match codec {
            Some(c) => (c, String::new()),
            None => codec_probe::choose_codec(&mut neg.client, pid).await,
        };

        // Freeze (a live migration: pre-copy first), stream.
        self.progress("freeze").await;
        let mut tr = match self.start_tracer(codec, &neg.ship, live_downtime) {
            Ok(t) => t,
            Err(e) => return Err(self.fail(e)),
        };
        let mut rounds = live::Rounds::default();
        let mut early = None;
        if live_downtime.is_some() {
            let (r, transfer) = match self.precopy(&neg.client, &mut tr).await {
                Ok(p) => p,
                Err(e) => return Err(self.fail(e)),
            };
            rounds = r;
            self.wait_applied(&neg.client, self.precopied.load(Ordering::Acquire))
                .await;
            turn = Some(self.frozen_turn().await);
            self.progress("freeze").await;
            let _ = tr.cmds.send(TracerCommand::Freeze);
            early = Some(transfer);
        }
        let since = match self.wait_frozen(&mut tr).await {
            Ok(s) => s,
            Err(e) => return Err(self.fail(e)),
        };
        // From here until the commit point, a failure gives the process back (the tracer
        // thaws it) and discards the copy.
        self.record(OriginState::Frozen, "streaming")?;
        let transfer = early.unwrap_or_else(|| start_transfer(&neg.client, tr.chunks.take()));
        let (reply, stats) = match self.stream(&mut tr, transfer).await {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e)),
        };
        let id = self.rec.migration_id.clone();
        timeline::mark_of(Side::Origin, &id, "destination's reply");
        self.rec.remote_pid = reply.pid;
        for (m, r) in self.rec.members.iter_mut().zip(&reply.members) {
            m.remote_pid = r.pid;
        }
        self.record(
            OriginState::Prepared,
            format!("copy held stopped on {to} as pid {}", reply.pid),
        )?;
        timeline::mark_of(Side::Origin, &id, "record prepared");

        // The commit point (post-copy: migrate/lazy.rs).
        if self.req.lazy {
            let summary = MigrateSummary {
                migration_id: self.rec.migration_id.clone(),
                remote_pid: reply.pid,
                remote_ns_pid: reply.ns_pid,
                wire_bytes: self.wire.load(Ordering::Relaxed),
                raw_bytes: stats.raw_bytes,
                codec: codec.to_string(),
                codec_why,
                warnings: reply.warnings,
                final_bytes: stats.raw_bytes,
                ..Default::default()
            };
            self.progress("commit").await;
            return super::lazy::origin_commit(
                &self.node,
                &mut self.rec,
                &mut neg.client,
                &tr.cmds,
                &mut tr.events,
                codec,
                since,
                self.t0,
                &self.tx,
                turn,
                summary,
            )
            .await
            .map_err(MigrateError::Lazy);
        }
        let plan = self.commit(&mut tr, &mut neg.client).await?;
        let frozen = since.elapsed();
        let mut downtime_phases = timeline::finish(Side::Origin, &id).unwrap_or_default();
        if !reply.phases.is_empty() {
            downtime_phases.push_str(&format!("; on the destination: {}", reply.phases));
        }
        tracing::info!(migration = %id, frozen = ?frozen, phases = %downtime_phases, "downtime phases");
        self.rec.frozen_end_unix_us = now_us();
        let running = format!("running on {to} as pid {}", reply.pid);
        self.record(OriginState::Committed, running.clone())?;
        drop(turn);
        self.record(OriginState::Done, format!("{running}; relaying"))?;
        drop(neg.channel);
        let summary = MigrateSummary {
            migration_id: self.rec.migration_id.clone(),
            remote_pid: reply.pid,
            remote_ns_pid: reply.ns_pid,
            total_us: u64::try_from(self.t0.elapsed().as_micros()).unwrap_or(u64::MAX),
            frozen_us: u64::try_from(frozen.as_micros()).unwrap_or(u64::MAX),
            wire_bytes: self.wire.load(Ordering::Relaxed),
            raw_bytes: stats.raw_bytes + rounds.bytes.iter().sum::<u64>(),
            codec: codec.to_string(),
            codec_why,
            warnings: Vec::new(),
            rounds: u32::try_from(rounds.bytes.len()).unwrap_or(u32::MAX),
            round_bytes: rounds.bytes,
            live: rounds.why,
            final_bytes: stats.raw_bytes,
            lazy: String::new(),
            downtime_phases,
        };
        Ok(self.relay(plan, &tr.shared, &neg.ship, reply.warnings, summary))
    }

    /// Before anything is recorded: the request is sound and the process can move. Returns
    /// the codec asked for (`None`: `auto`).
    fn check_request(&mut self) -> Result<Option<Codec>, NegotiateError> {
        let (pid, to) = (self.req.pid, self.req.to.clone());
        if pid <= 1 {
            return Err(NegotiateError::BadPid(pid));
        }
        if to == self.node.config.name {
            return Err(NegotiateError::ThisHost { to, pid });
        }
        if self.req.lazy && (self.req.tree || self.req.stop_and_copy) {
            return Err(NegotiateError::LazyWith);
        }
        let codec = match self.req.compress.as_str() {
            "" | "auto" => None,
            c => Some(
                c.parse::<Codec>()
                    .map_err(|_| NegotiateError::BadCodec(c.to_string()))?,
            ),
        };
        self.rec.start_time = start_time(pid).ok_or(NegotiateError::NoProcess(pid))?;
        // A stub relays for a process that runs elsewhere: that process is what can move.
        if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("ferry-stub")) {
            let start = self.rec.start_time;
            let elsewhere = self
                .node
                .store
                .list()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| Role::of(r) == Role::Origin && r.pid == pid && r.start_time == start)
                .max_by_key(|r| r.started_unix_ms)
                .map(|r| {
                    format!(
                        " of migration {}: the process runs on {} as pid {}",
                        r.migration_id, r.peer, r.remote_pid
                    )
                })
                .unwrap_or_default();
            return Err(NegotiateError::Stub { pid, elsewhere });
        }
        // Before anything is frozen (and again once it is: see the tracer). `--tree` takes
        // them along.
        if !self.req.tree
            && let Some(why) = tracer::has_children(pid)
        {
            return Err(NegotiateError::Children(why));
        }
        Ok(codec)
    }

    /// Asks the destination whether it can run the process (and which files it lacks),
    /// announcing the protocol version; refuses an incompatible answer.
    async fn negotiate(&mut self) -> Result<Negotiated, NegotiateError> {
        let (pid, to) = (self.req.pid, self.req.to.clone());
        let channel = self
            .node
            .peers
            .channel(&to)
            .map_err(|e| NegotiateError::UnknownPeer(chain(&e)))?;
        let mut client = peer_client(channel.clone());
        self.progress("negotiate").await;
        let (tree, lazy) = (self.req.tree, self.req.lazy);
        let (files, premade) = tokio::task::spawn_blocking(move || {
            let files = if tree {
                super::tree::file_checks(pid)
            } else {
                negotiate::file_checks(pid)
            };
            // Post-copy: the destination makes the copy's task now (else in the stop).
            let premade = lazy
                .then(|| live::plan_only(nix::unistd::Pid::from_raw(pid)))
                .and_then(|r| {
                    r.inspect_err(|e| tracing::debug!(error = %chain(e), "no task made ahead"))
                        .ok()
                });
            (files, premade)
        })
        .await
        .map_err(|e| NegotiateError::Internal(e.to_string()))?;
        let neg = NegotiateRequest {
            migration_id: self.rec.migration_id.clone(),
            kernel_release: negotiate::kernel_release(),
            xsave_features: negotiate::xsave_features(),
            vdso_sha256: negotiate::vdso_sha256(),
            files: files.clone(),
            protocol: version::announced(),
            premade,
        };
        self.made_ahead = neg.premade.is_some();
        let reply = match client.negotiate(neg).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                let addr = self.node.peers.peers().get(&to).cloned();
                return Err(NegotiateError::Unreachable {
                    to,
                    addr: addr.unwrap_or_default(),
                    detail: crate::transport::status_detail(&s),
                });
            }
        };
        version::check(&to, reply.protocol.as_ref()).map_err(NegotiateError::Version)?;
        self.absent_runs = version::takes_absent_runs(reply.protocol.as_ref());
        if !reply.problems.is_empty() {
            return Err(NegotiateError::Incompatible {
                to,
                pid,
                problems: reply.problems,
            });
        }
        let ship = self.files_to_ship(&files, &reply.files)?;
        Ok(Negotiated {
            channel,
            client,
            ship,
        })
    }

    /// Starts the tracer thread (the tree's for `--tree`), which freezes the process (after
    /// the pre-copy rounds of a live migration) and writes the stream.
    fn start_tracer(
        &self,
        codec: Codec,
        ship: &[String],
        live_downtime: Option<Duration>,
    ) -> Result<Tracer, TransferError> {
        let id = self.rec.migration_id.clone();
        let (chunk_tx, chunk_rx) = mpsc::channel::<TransferChunk>(8);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = TracerJob {
            node: self.node.clone(),
            pid: self.req.pid,
            id: id.clone(),
            codec,
            socket: self.node.config.socket.clone(),
            ship: ship.to_vec(),
            chunks: chunk_tx,
            events: ev_tx,
            cmds: cmd_rx,
            wire: self.wire.clone(),
            precopied: self.precopied.clone(),
            raw: self.raw.clone(),
            as_user: self.as_user,
            proxy_protocol: self.req.proxy_protocol.clone(),
            live: live_downtime,
            cancel: cancel.clone(),
            lazy: self.req.lazy,
            absent_runs: self.absent_runs,
        };
        let shared = Arc::new(super::tree::Shared::default());
        let tree_shared = self.req.tree.then(|| shared.clone());
        std::thread::Builder::new()
            .name(format!("migrate-{id}"))
            .spawn(move || match tree_shared {
                Some(s) => super::tree::tracer(job, s),
                None => tracer::tracer(job),
            })
            .map_err(|e| TransferError::Tracer(format!("start the tracer thread: {e}")))?;
        Ok(Tracer {
            events: ev_rx,
            cmds: cmd_tx,
            chunks: Some(chunk_rx),
            cancel,
            shared,
        })
    }

    /// A live migration's pre-copy rounds, the process running; the transfer stream carries
    /// them. On failure the process ran on (never stopped) and the destination forgets.
    async fn precopy(
        &self,
        client: &PeerClient<Channel>,
        tr: &mut Tracer,
    ) -> Result<(live::Rounds, TransferTask), TransferError> {
        let (pid, to, id) = (self.req.pid, &self.req.to, &self.rec.migration_id);
        let mut transfer = start_transfer(client, tr.chunks.take());
        self.progress("precopy").await;
        let why = loop {
            tokio::select! {
                r = &mut transfer => {
                    let why = match r {
                        Ok(Ok(_)) => "the destination ended the transfer early".to_string(),
                        Ok(Err(s)) => crate::transport::status_detail(&s),
                        Err(e) => e.to_string(),
                    };
                    break format!("{to}: {why}");
                }
                ev = tr.events.recv() => match ev {
                    Some(TracerEvent::Round { n, raw }) => {
                        tracing::info!(migration = %id, round = n, raw, "pre-copy round sent");
                        self.progress(&format!("round {n}")).await;
                    }
                    Some(TracerEvent::Precopied(r)) => return Ok((r, transfer)),
                    Some(TracerEvent::Failed(why)) => break why,
                    other => break format!("tracer: unexpected {other:?}"),
                },
            }
        };
        // Not frozen: the process ran on; the tracking ends with the tracer (waited for, so
        // that nothing of it is left when this says the process goes on). The destination
        // recorded nothing yet; it forgets the negotiation.
        tr.cancel.store(true, Ordering::Relaxed);
        tr.thaw().await;
        abort_remote(self.node.clone(), to.clone(), id.clone());
        Err(TransferError::Precopy { pid, why })
    }

    /// A live migration, its rounds over: waits (5 s at most), while the process still runs,
    /// until the destination has taken in all `sent` raw bytes of pre-copied pages. What it
    /// has not taken in at the freeze is written inside the stop, before the image: the
    /// stream's flow control and the few messages the destination keeps in hand left up to
    /// ~8 MiB behind, ~12 ms of a 1 GiB stop here. A destination before protocol 1.2 cannot
    /// say (`Applied` unimplemented): nothing is waited for.
    async fn wait_applied(&self, client: &PeerClient<Channel>, sent: u64) {
        let t = Instant::now();
        let mut client = client.clone();
        let id = &self.rec.migration_id;
        let req = MigrationRef {
            migration_id: id.clone(),
        };
        let mut asked = 0u32;
        let applied = loop {
            asked += 1;
            match client.applied(req.clone()).await {
                Ok(r) if r.get_ref().raw_bytes >= sent || t.elapsed() > APPLIED_WAIT => {
                    break Some(r.into_inner().raw_bytes);
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(s) => {
                    tracing::debug!(migration = %id, status = %s.message(), "the destination does not say what it took in");
                    break None;
                }
            }
        };
        tracing::info!(migration = %id, elapsed = ?t.elapsed(), asked, sent, ?applied, "pre-copied pages taken in by the destination");
    }

    /// Until the tracer says the process is frozen (and the image on its way); returns when
    /// the freeze began.
    async fn wait_frozen(&mut self, tr: &mut Tracer) -> Result<Instant, TransferError> {
        match tr.events.recv().await {
            Some(TracerEvent::Frozen {
                since,
                total,
                at_us,
            }) => {
                self.total = total;
                self.rec.frozen_unix_us = at_us;
                self.rec.members = tr.shared.members();
                Ok(since)
            }
            Some(TracerEvent::Failed(why)) => Err(TransferError::Refused(why)),
            Some(TracerEvent::Refused { why, at_us }) => {
                self.rec.frozen_unix_us = at_us;
                Err(TransferError::Refused(why))
            }
            other => Err(TransferError::Tracer(format!(
                "tracer: unexpected {other:?}"
            ))),
        }
    }

    /// The image streams and the destination restores it, holding the copy stopped; returns
    /// its answer and what the image writer counted. On failure the original is given back
    /// (before this returns) and the copy discarded.
    async fn stream(
        &mut self,
        tr: &mut Tracer,
        mut transfer: TransferTask,
    ) -> Result<(TransferReply, WriteStats), TransferError> {
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
                ev = tr.events.recv(), if stats.is_none() && tracer_failed.is_none() => match ev {
                    Some(TracerEvent::Written(s)) => {
                        stats = Some(s);
                        self.progress("restore").await;
                    }
                    Some(TracerEvent::Failed(why)) => tracer_failed = Some(why),
                    _ => tracer_failed = Some("the tracer thread ended".into()),
                },
                _ = tick.tick() => {
                    let phase = if stats.is_some() { "restore" } else { "stream" };
                    self.progress(phase).await;
                }
            }
        };
        // The stream may have ended because the tracer refused once frozen (it drops the
        // stream, and the destination answers a stream without a header): its reason, which
        // comes a moment later, is the one to give.
        if reply.is_err() && stats.is_none() && tracer_failed.is_none() {
            let later = tokio::time::timeout(Duration::from_secs(2), tr.events.recv()).await;
            if let Ok(Some(TracerEvent::Failed(why))) = later {
                tracer_failed = Some(why);
            }
        }
        let to = &self.req.to;
        let why = match (reply, tracer_failed) {
            (Ok(r), None) => {
                let stats = match stats {
                    Some(s) => s,
                    None => match tr.events.recv().await {
                        Some(TracerEvent::Written(s)) => s,
                        _ => WriteStats::default(),
                    },
                };
                return Ok((r, stats));
            }
            (Err(s), Some(f)) => format!("{f}; {to}: {}", crate::transport::status_detail(&s)),
            (Ok(_), Some(f)) => f,
            (Err(s), None) => format!("{to}: {}", crate::transport::status_detail(&s)),
        };
        // Wait until the process runs again before saying so.
        tr.thaw().await;
        abort_remote(self.node.clone(), to.clone(), self.rec.migration_id.clone());
        Err(TransferError::Failed {
            pid: self.req.pid,
            why,
        })
    }

    /// The commit point: the original becomes the stub (the copy is the only one from the
    /// execve on), then Commit until the destination acknowledges. Returns the relay's plan.
    async fn commit(
        &mut self,
        tr: &mut Tracer,
        client: &mut PeerClient<Channel>,
    ) -> Result<Plan, MigrateError> {
        let (pid, to, id) = (
            self.req.pid,
            self.req.to.clone(),
            self.rec.migration_id.clone(),
        );
        self.progress("commit").await;
        self.record(
            OriginState::Committing,
            "turning the original into the stub",
        )?;
        timeline::mark_of(Side::Origin, &id, "record committing");
        if fault("origin-exit-before-commit") {
            tracing::error!(migration = %id, "FERRY_FAULT origin-exit-before-commit: exiting");
            // The progress "commit" reaches the CLI first (the records before the execve no
            // longer wait for the disk, which gave it the time).
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::process::exit(70);
        }
        let _ = tr.cmds.send(TracerCommand::Commit);
        let plan = loop {
            let failed = match tr.events.recv().await {
                Some(TracerEvent::Stubbed(plan)) => {
                    timeline::mark_of(Side::Origin, &id, "stub execve");
                    break plan;
                }
                Some(TracerEvent::StubFailed(why)) => CommitError::StubFailed { pid, why },
                Some(TracerEvent::Written(_)) => continue,
                // The tracer is gone without a word: it cannot have done the execve without
                // reporting it, so the original was given back.
                other => CommitError::Tracer(format!("tracer: unexpected {other:?}")),
            };
            abort_remote(self.node.clone(), to, id);
            return Err(self.fail(failed));
        };
        if fault("origin-exit-after-commit") {
            tracing::error!(migration = %id, "FERRY_FAULT origin-exit-after-commit: exiting");
            std::process::exit(70);
        }
        // Past the commit point: the copy is the only one. Never abort now; Commit until
        // the destination acknowledges.
        let committed = commit_remote(&self.node, client, &id, &to).await;
        timeline::mark_of(Side::Origin, &id, "Commit acknowledged");
        // The copy runs (or never will): the original's old memory can be freed.
        crate::migrate::keepmm::release(&id);
        if let Err(why) = committed {
            let _ = self.record(OriginState::Aborted, why.clone());
            return Err(CommitError::Lost(why).into());
        }
        Ok(plan)
    }

    /// Done: the relay runs on its own (it ends with the remote process or the stub), the
    /// tree's members' too; an earlier origin hears where the process went. Returns the
    /// summary with its warnings.
    fn relay(
        &self,
        plan: Plan,
        shared: &super::tree::Shared,
        ship: &[String],
        mut warnings: Vec<String>,
        mut summary: MigrateSummary,
    ) -> MigrateSummary {
        let (pid, to, id) = (self.req.pid, &self.req.to, &self.rec.migration_id);
        let start = self.rec.start_time;
        keep_relaying(
            self.node.clone(),
            Some(plan),
            pid,
            start,
            id.clone(),
            to.clone(),
        );
        super::tree::relay_members(&self.node, shared, id, to);
        // A copy that came here moved on: its origin hears where it went.
        moved_on(&self.node, pid, start, to, summary.remote_pid, id);
        warnings.extend(super::tree::summary_warnings(shared));
        if !ship.is_empty() {
            warnings.push(format!(
                "shipped {} file(s): {}",
                ship.len(),
                ship.join(", ")
            ));
        }
        tracing::info!(migration = %id, frozen_us = summary.frozen_us, "migration done");
        summary.warnings = warnings;
        summary
    }

    /// The files to send along: those the destination lacks, with `--ship-files`; without
    /// it, any such file refuses the migration with the list. The destination says per file
    /// only "differs" or "missing"; what is known of it is said from this host's side.
    fn files_to_ship(
        &self,
        files: &[FileCheck],
        answers: &[FileAnswer],
    ) -> Result<Vec<String>, NegotiateError> {
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
            return Err(NegotiateError::FilesDiffer {
                to,
                lines: problems,
            });
        }
        if !unshippable.is_empty() {
            return Err(NegotiateError::Unshippable {
                to,
                lines: unshippable,
            });
        }
        Ok(ship)
    }
}

/// Starts the `Peer.Transfer` call on the stream `rx` (an empty stream once taken).
fn start_transfer(
    client: &PeerClient<Channel>,
    rx: Option<mpsc::Receiver<TransferChunk>>,
) -> TransferTask {
    let mut client = client.clone();
    let rx = rx.unwrap_or_else(|| mpsc::channel(1).1);
    tokio::spawn(async move { client.transfer(ReceiverStream::new(rx)).await })
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

/// Sends Commit until the destination acknowledges it. Gives up only when the destination
/// says the copy is gone (then nothing can bring the process back; it is said loudly).
pub(crate) async fn commit_remote(
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
pub(crate) fn abort_remote(node: NodeRef, to: String, id: String) {
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
