//! The host's side of periodic checkpoints: every `checkpoint_every_ms`, freeze the process,
//! write its state (all of it the first time, then only the pages written since the last
//! checkpoint plus the whole non-memory state), let it go on, and stream the sealed image to
//! the replica holders.
//!
//! The write tracking of live migration (`dump/track.rs`) stays armed from the first
//! checkpoint on: the scan of written pages runs under each freeze and write-protects them
//! again in the same step, so the next scan reports exactly what was written since this
//! freeze. A page goes into a delta unless the previous checkpoint stored it, its area stayed
//! registered for the tracking, and no scan saw it written (then it is `precopied`: the
//! holder takes it from its previous image). The tracking ends (ferryd closes the only
//! descriptor: the kernel unregisters every area) when checkpointing stops: the job ended,
//! moved, or its checkpoints were turned off.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferry_proto::v1::{ReplicaChunk, ReplicaHeader, replica_chunk};
use nix::unistd::Pid;

use super::{ReplicaLimits, ReplicaMeta};
use crate::dump::track::Tracker;
use crate::dump::{DumpOptions, hold_with, precheck_only};
use crate::image::Codec;
use crate::image::seal::Key;
use crate::node::{NodeRef, now_ms};
use crate::state::{PAGE_SIZE, VmaKind, VmaState};

/// Bytes per `data` message.
const CHUNK: usize = 1 << 20;

/// Sorted, non-overlapping, non-adjacent address ranges.
#[derive(Debug, Default, Clone)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    fn from(mut r: Vec<(u64, u64)>) -> Self {
        r.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
        for (s, e) in r {
            match out.last_mut() {
                Some(l) if s <= l.1 => l.1 = l.1.max(e),
                _ => out.push((s, e)),
            }
        }
        Ranges(out)
    }

    fn contains(&self, addr: u64) -> bool {
        let i = self.0.partition_point(|&(s, _)| s <= addr);
        i > 0 && addr < self.0[i - 1].1
    }
}

/// What the checkpoints of one process carry from one to the next.
#[derive(Debug, Default)]
struct Chain {
    tracker: Option<Tracker>,
    /// The pages of the last checkpoint every holder has (empty: the next one is complete).
    prev: Ranges,
    /// Its seq (0: none yet).
    seq: u64,
    /// The holders, in the order chosen (kept while they stay alive).
    holders: Vec<String>,
}

/// One checkpoint, as the host saw it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Taken {
    /// Its seq.
    pub seq: u64,
    /// Whether it was a delta.
    pub delta: bool,
    /// How long the process was stopped.
    pub stopped: Duration,
    /// Bytes of the (sealed) image sent to each holder.
    pub bytes: u64,
    /// Holders that took it.
    pub holders: usize,
}

/// A job this host checkpoints: one of its own managed jobs running here, or one it hosts
/// for its home (offloaded here).
#[derive(Debug, Clone, Default)]
struct Job {
    id: String,
    pid: i32,
    every_ms: u64,
    replicas: u32,
    epoch: u64,
    command: String,
    uid: u32,
    limits: ReplicaLimits,
    /// The home (this host for its own jobs).
    home: String,
    /// The migration whose relay serves its stdio (hosted jobs).
    migration: String,
}

/// Starts the checkpoints of managed process `id` if it asks for them (its entry's
/// `checkpoint_every_ms`); they stop by themselves when it ends or stops asking.
pub fn start(node: &NodeRef, id: &str) {
    spawn(node, id, false);
}

/// Starts the checkpoints of process `id` hosted here for its home, if it asks for them.
pub fn start_hosted(node: &NodeRef, id: &str) {
    spawn(node, id, true);
}

fn spawn(node: &NodeRef, id: &str, hosted: bool) {
    let Some(j) = wanted(node, id, hosted) else {
        return;
    };
    let node = node.clone();
    let id = id.to_string();
    let handle = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name(format!("ckpt-{id}"))
        .spawn(move || run(&node, &id, hosted, j.every_ms, &handle));
    if let Err(e) = spawned {
        tracing::warn!(%e, "cannot start the checkpoint thread");
    }
}

/// Whether the job still wants checkpoints here: it runs here, has not ended, asks for them.
fn wanted(node: &NodeRef, id: &str, hosted: bool) -> Option<Job> {
    if hosted {
        let h = node.managed.hosted(id)?;
        let ok = h.checkpoint_every_ms > 0 && crate::managed::alive(h.pid, h.start_time);
        return ok.then(|| Job {
            id: h.id.clone(),
            pid: h.pid,
            every_ms: h.checkpoint_every_ms,
            replicas: h.replicas,
            epoch: h.epoch,
            command: crate::managed::cmdline(h.pid),
            uid: h.owner_uid,
            limits: ReplicaLimits {
                cpu_millis: h.limits.cpu_millis,
                mem_bytes: h.limits.mem_bytes,
            },
            home: h.home.clone(),
            migration: h.migration_id.clone(),
        });
    }
    let e = node.managed.get(id, 0, true)?;
    let ok = e.exit.is_none()
        && e.runs_on.is_empty()
        && e.checkpoint_every_ms.is_some_and(|ms| ms > 0)
        && crate::managed::alive(e.pid, e.start_time);
    ok.then(|| Job {
        id: e.id.clone(),
        pid: e.pid,
        every_ms: e.checkpoint_every_ms.unwrap_or(0),
        replicas: e.replicas,
        epoch: e.epoch,
        command: e.command.clone(),
        uid: e.owner_uid,
        limits: ReplicaLimits {
            cpu_millis: e.cpu_millis,
            mem_bytes: e.mem_bytes,
        },
        home: node.config.name.clone(),
        migration: String::new(),
    })
}

fn run(node: &NodeRef, id: &str, hosted: bool, every: u64, handle: &tokio::runtime::Handle) {
    let key = match super::open_key(node) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(%id, "no checkpoints: {e}");
            return;
        }
    };
    if let Some(j) = wanted(node, id, hosted)
        && !j.migration.is_empty()
        && let Err(why) = node.relays.dest_positions(&j.migration)
    {
        // Refused by name: a failover could not carry its relayed descriptors.
        tracing::warn!(%id, migration = %j.migration, "no checkpoints: {why}");
        return;
    }
    // After a take-over: the numbering goes on from the checkpoint restored here (holders
    // keep the highest seq), and the surviving members of the group are asked first.
    let mut chain = Chain {
        seq: super::newest(&crate::node::state_dir(), id).map_or(0, |m| m.seq),
        holders: node
            .managed
            .get(id, 0, true)
            .map(|e| e.replica_hosts)
            .unwrap_or_default(),
        ..Chain::default()
    };
    let mut next = Instant::now() + Duration::from_millis(every);
    loop {
        // Woken often enough to stop soon after the job ends.
        while Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
            if wanted(node, id, hosted).is_none() {
                break;
            }
        }
        let Some(j) = wanted(node, id, hosted) else {
            break;
        };
        let every = j.every_ms.max(1);
        next = Instant::now() + Duration::from_millis(every);
        if node.leases.fenced(id) || !crate::lease::run::may_checkpoint(node, id) {
            // Frozen by the fence: it does not change, and an image of it would carry the
            // fence's pending SIGSTOP (which a restore cannot give back). Or no majority
            // grants this host the lease (yet): a checkpoint sent now could be restored
            // elsewhere while this copy runs.
            continue;
        }
        node.leases.arm(id);
        match checkpoint(node, &j, &key, &mut chain, handle) {
            Ok(t) => tracing::info!(
                %id, seq = t.seq, delta = t.delta, stopped_us = t.stopped.as_micros() as u64,
                bytes = t.bytes, holders = t.holders, "checkpoint"
            ),
            Err(why) => {
                tracing::warn!(%id, "checkpoint failed: {why}");
                // The next one is complete (and the tracking armed again).
                chain.prev = Ranges::default();
                if let Some(t) = chain.tracker.take() {
                    t.close();
                }
            }
        }
    }
    if let Some(t) = chain.tracker.take() {
        t.close();
    }
    tracing::info!(%id, "checkpoints stopped; write tracking removed");
}

/// The replica holders: the alive members (with a peer address in the configuration) with
/// the most free capacity; those chosen before stay while they are alive.
fn choose(node: &NodeRef, k: usize, before: &[String], home: &str) -> Vec<String> {
    let view = node.cluster.view();
    let known = node.peers.peers();
    let mut cand: Vec<(f64, String)> = view
        .members
        .iter()
        .filter(|m| {
            !m.local && m.state == crate::cluster::State::Alive && known.contains_key(&m.name)
        })
        .map(|m| (m.load.as_ref().map_or(0.0, |l| l.free), m.name.clone()))
        .collect();
    cand.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    // The home of an offloaded job (the client host) comes last: only when no other
    // member is left to hold a replica.
    cand.sort_by_key(|(_, n)| n == home);
    let mut out: Vec<String> = before
        .iter()
        .filter(|h| cand.iter().any(|(_, n)| n == *h) && (*h != home || cand.len() <= k))
        .take(k)
        .cloned()
        .collect();
    for (_, n) in cand {
        if out.len() >= k {
            break;
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

fn private_anon(v: &VmaState) -> bool {
    !v.shared && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack)
}

/// Moves to `precopied` every page of `vmas` the previous checkpoint has that was not
/// written since (its area still tracked). Returns the pages kept.
fn mark(vmas: &mut [VmaState], prev: &Ranges, written: &Ranges, tracked: &Ranges) -> u64 {
    let mut kept = 0;
    for v in vmas.iter_mut().filter(|v| private_anon(v)) {
        let mut pages = Vec::new();
        let mut precopied = Vec::new();
        for r in &v.pages {
            for k in 0..r.count {
                let a = r.start + k * PAGE_SIZE;
                if prev.contains(a) && tracked.contains(a) && !written.contains(a) {
                    kept += 1;
                    super::merge_push(&mut precopied, a);
                } else {
                    super::merge_push(&mut pages, a);
                }
            }
        }
        v.pages = pages;
        v.precopied = precopied;
    }
    kept
}

fn checkpoint(
    node: &NodeRef,
    e: &Job,
    key: &Key,
    chain: &mut Chain,
    handle: &tokio::runtime::Handle,
) -> Result<Taken, String> {
    let pid = Pid::from_raw(e.pid);
    let holders = choose(node, e.replicas.max(1) as usize, &chain.holders, &e.home);
    if holders.is_empty() {
        return Err("no alive member to hold a replica".into());
    }
    if holders != chain.holders {
        // A new holder has no previous checkpoint: this one is complete.
        chain.prev = Ranges::default();
        chain.holders = holders.clone();
    }
    let opts = DumpOptions {
        leave_running: true,
        relay_sockets: true,
        codec: Codec::Lz4,
        ..DumpOptions::default()
    };
    if chain.tracker.is_none() {
        precheck_only(pid, opts).map_err(|e| format!("{e:#}"))?;
        chain.tracker = Some(Tracker::start(pid).map_err(|e| format!("{e:#}"))?);
        chain.prev = Ranges::default();
    }
    let tracker = chain.tracker.as_ref().ok_or("no tracking")?;
    let mut written = Vec::new();
    let mut tracked = Vec::new();
    let mut held = hold_with(pid, opts, |_frozen| {
        written = tracker.written()?;
        tracked = tracker.still_tracked()?;
        tracker.own_areas();
        Ok(())
    })
    .map_err(|e| format!("{e:#}"))?;
    let taken_ms = now_ms();
    // Every page this checkpoint has (the holders' next base).
    let all = Ranges::from(
        held.state
            .mm
            .vmas
            .iter()
            .flat_map(|v| v.pages.iter())
            .map(|r| (r.start, r.start + r.count * PAGE_SIZE))
            .collect(),
    );
    let delta = !chain.prev.0.is_empty();
    if delta {
        mark(
            &mut held.state.mm.vmas,
            &chain.prev,
            &Ranges::from(written),
            &Ranges::from(tracked),
        );
    }
    let dir = crate::node::state_dir().join("checkpoints");
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let path: PathBuf = dir.join(format!("{}.img", e.id));
    let file = File::create(&path).map_err(|err| format!("{}: {err}", path.display()))?;
    let written = held.write_sealed(
        std::io::BufWriter::with_capacity(1 << 20, file),
        Codec::Lz4,
        key,
    );
    // Where its relayed stdio stands, while it is still frozen.
    let positions = if e.migration.is_empty() {
        Ok((0, Vec::new(), Vec::new()))
    } else {
        node.relays.dest_positions(&e.migration)
    };
    let stopped = held.since.elapsed();
    held.thaw().map_err(|e| format!("{e:#}"))?;
    let (relay_session, positions, ends) = positions?;
    let relays: Vec<super::RelayPos> = positions
        .iter()
        .zip(&ends)
        .map(|(p, end)| super::RelayPos {
            fd: end.fds.first().copied().unwrap_or(-1),
            fds: end.fds.clone(),
            kind: end.kind.clone(),
            channel: p.channel,
            consumed: p.consumed,
            produced: p.produced,
        })
        .collect();
    let (_, stats) = written.map_err(|e| format!("{e:#}"))?;
    let seq = chain.seq + 1;
    let base_seq = if delta { chain.seq } else { 0 };
    let mut group = vec![node.config.name.clone()];
    group.extend(holders.iter().cloned());
    let meta = ReplicaMeta {
        id: e.id.clone(),
        home: e.home.clone(),
        host: node.config.name.clone(),
        epoch: e.epoch,
        seq,
        taken_ms,
        image_bytes: 0,
        group: group.clone(),
        relays,
        migration: e.migration.clone(),
        relay_session,
        every_ms: e.every_ms,
        cmdline: e.command.clone(),
        uid: e.uid,
        limits: e.limits,
        base_seq,
        sent_bytes: stats.image_bytes,
        stop_us: stopped.as_micros() as u64,
        replicas: e.replicas,
    };
    let meta_json = serde_json::to_string(&meta).map_err(|e| e.to_string())?;
    let bytes = stats.image_bytes;
    let results = handle.block_on(async {
        let tasks: Vec<_> = holders
            .iter()
            .map(|h| {
                let (node, h, m, p) = (node.clone(), h.clone(), meta_json.clone(), path.clone());
                tokio::spawn(async move { send(&node, &h, &m, base_seq, &p, bytes).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
        }
        out
    });
    let _ = std::fs::remove_file(&path);
    let mut ok = 0;
    let mut failed = Vec::new();
    for (h, r) in holders.iter().zip(results) {
        match r {
            Ok(()) => ok += 1,
            Err(why) => failed.push(format!("{h}: {why}")),
        }
    }
    if failed.is_empty() {
        chain.prev = all;
        chain.seq = seq;
        if !e.migration.is_empty() {
            // Every holder keeps it: the origin may forget the input before it.
            node.relays.dest_checkpointed(
                &e.migration,
                ferry_proto::v1::RelayCheckpoint {
                    session: relay_session,
                    positions,
                    seq,
                    epoch: e.epoch,
                    group,
                },
            );
        }
    } else {
        // Someone lacks this one: the next is complete for all.
        chain.prev = Ranges::default();
        chain.seq = seq;
        tracing::warn!(id = %e.id, seq, "replica not kept by {}", failed.join("; "));
    }
    if e.migration.is_empty() {
        let _ = node
            .managed
            .update(&e.id, |x| x.replica_hosts = holders.clone());
    } else {
        let _ = node
            .managed
            .update_hosted(&e.id, |x| x.replica_hosts = holders.clone());
    }
    Ok(Taken {
        seq,
        delta,
        stopped,
        bytes: stats.image_bytes,
        holders: ok,
    })
}

async fn send(
    node: &NodeRef,
    holder: &str,
    meta_json: &str,
    base_seq: u64,
    path: &std::path::Path,
    image_bytes: u64,
) -> Result<(), String> {
    let channel = node.peers.channel(holder).map_err(|e| format!("{e:#}"))?;
    let mut client = crate::migrate::origin::peer_client(channel);
    let (tx, rx) = tokio::sync::mpsc::channel::<ReplicaChunk>(4);
    let header = ReplicaChunk {
        part: Some(replica_chunk::Part::Header(ReplicaHeader {
            meta_json: meta_json.to_string(),
            base_seq,
            image_bytes,
        })),
    };
    let path = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let f = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut f = BufReader::new(f);
        if tx.blocking_send(header).is_err() {
            return Ok(());
        }
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = f
                .read(&mut buf)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            let chunk = ReplicaChunk {
                part: Some(replica_chunk::Part::Data(buf)),
            };
            if tx.blocking_send(chunk).is_err() {
                return Ok(());
            }
        }
    });
    let reply = client
        .replica(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| crate::transport::status_detail(&s));
    reader.await.map_err(|e| e.to_string()).and_then(|r| r)?;
    reply.map(|_| ())
}
