//! The tracer thread: everything that traces the process runs on it, from the freeze to the
//! process's end here (the execve of the stub) or its release. The async side talks to it
//! through channels: it reports [`TracerEvent`]s and obeys [`TracerCommand`]s (the pattern of
//! Firecracker's vCPU events and responses).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_proto::v1::transfer_chunk::Part;
use ferry_proto::v1::{TransferChunk, TransferHeader};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::stream::send_image;
use crate::dump::{self, DumpOptions, Held};
use crate::image::{Codec, WriteStats};
use crate::migrate::{chain, live};
use crate::node::NodeRef;
use crate::relay::origin::{Plan, become_stub};
use crate::timeline::{self, Side};
use crate::transport::PeerCred;

/// What the tracer thread reports.
#[derive(Debug)]
pub(crate) enum TracerEvent {
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
    /// Live migration: the rounds are over; the tracer waits for [`TracerCommand::Freeze`].
    Precopied(live::Rounds),
    /// Lazy migration: the original dies with this agent from now on; so many pages follow.
    LazyArmed(u64),
    /// Lazy migration: the destination was lost after the copy ran; the original is held
    /// frozen until told what became of the copy (`migrate::lazy::Decision`).
    LazyLost(String),
}

/// What the async side tells the tracer after the image went out.
#[derive(Debug)]
pub(crate) enum TracerCommand {
    Commit,
    Thaw,
    /// Live migration: the frozen phase is ours; stop the process for the rest.
    Freeze,
    /// Lazy migration: the commit (`migrate/lazy.rs`).
    Lazy(crate::migrate::lazy::TracerLazy),
}

/// Everything the tracer thread needs.
pub(crate) struct TracerJob {
    pub(crate) node: NodeRef,
    pub(crate) pid: i32,
    pub(crate) id: String,
    pub(crate) codec: Codec,
    pub(crate) socket: PathBuf,
    pub(crate) ship: Vec<String>,
    pub(crate) chunks: mpsc::Sender<TransferChunk>,
    pub(crate) events: mpsc::UnboundedSender<TracerEvent>,
    pub(crate) cmds: std::sync::mpsc::Receiver<TracerCommand>,
    pub(crate) wire: Arc<AtomicU64>,
    /// Raw bytes of pre-copied pages handed to the stream (what the destination takes in).
    pub(crate) precopied: Arc<AtomicU64>,
    pub(crate) raw: Arc<AtomicU64>,
    /// A non-root caller: authorized again once the process is frozen.
    pub(crate) as_user: Option<PeerCred>,
    /// Listening ports whose relayed connections get a PROXY protocol header.
    pub(crate) proxy_protocol: Vec<u32>,
    /// Live migration, with the downtime aimed at; `None`: stop and copy.
    pub(crate) live: Option<Duration>,
    /// Set when the migration is given up: the rounds stop sending (a broken stream may not
    /// close the channel at once).
    pub(crate) cancel: Arc<std::sync::atomic::AtomicBool>,
    /// Post-copy (`--lazy`): the private anonymous pages follow once the copy runs.
    pub(crate) lazy: bool,
    /// Post-copy to a destination that takes absent runs (protocol 1.3): the large areas
    /// whose pages follow are not walked under the freeze (`DumpOptions::pages_follow`).
    pub(crate) absent_runs: bool,
}

/// The tracer: (a live migration's rounds,) freeze, header, shipped files, image; then wait
/// for the decision. Whatever fails before the execve of the stub gives the process back
/// (thawed), then says why.
pub(crate) fn tracer(job: TracerJob) {
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
        precopied,
        raw,
        as_user,
        proxy_protocol,
        live: live_downtime,
        cancel,
        lazy,
        absent_runs,
    } = job;
    let opts = DumpOptions {
        codec,
        // Sockets stay on the origin and are relayed: no TCP_REPAIR.
        relay_sockets: true,
        pages_follow: lazy && absent_runs,
        ..DumpOptions::default()
    };
    // Live migration: the rounds while it runs, then the final stop when our turn comes.
    let mut pre = None;
    if let Some(max_downtime) = live_downtime {
        let sent = Sent {
            wire: &wire,
            raw: &precopied,
        };
        match precopy(
            pid,
            &id,
            opts,
            max_downtime,
            &chunks,
            &events,
            sent,
            &cancel,
        ) {
            Ok(p) => pre = Some(p),
            Err(why) => {
                let _ = events.send(TracerEvent::Failed(why));
                return;
            }
        }
        if !matches!(cmds.recv(), Ok(TracerCommand::Freeze)) {
            // Given up before the freeze: the tracking ends, the process ran on.
            drop(pre.take());
            let _ = events.send(TracerEvent::Thawed);
            return;
        }
        drained(&chunks, &cancel, &id);
    }
    // From here to the commit every moment is the process's downtime.
    let urgent = crate::migrate::urgent::Urgent::now();
    // A live or post-copy migration reads `smaps` (a walk of every page table) while the
    // process still runs, its system calls watched from before the reading to the freeze:
    // under the freeze the areas take their flags from it unless a call may have changed
    // one (`dump::SmapsAhead`). (Post-copy checks first what a dump would refuse, as
    // `dump::hold` would, before anything is read.)
    if lazy && let Err(e) = dump::precheck_only(Pid::from_raw(pid), opts) {
        let _ = events.send(TracerEvent::Failed(format!("freeze: {}", chain(&e))));
        return;
    }
    let ahead = (pre.is_some() || lazy)
        .then(|| match dump::SmapsAhead::read(Pid::from_raw(pid)) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::debug!(migration = %id, error = %chain(&e), "smaps not read ahead");
                None
            }
        })
        .flatten()
        .map(crate::migrate::final_stop::madvise_fault);
    let at_us = now_us();
    timeline::begin(Side::Origin, &id, Instant::now());
    timeline::enter(Side::Origin, &id);
    let finish = |p: &mut live::Precopy, f: &dump::freeze::Frozen| {
        let t = Instant::now();
        let r = p.finish(f);
        timeline::part("of it the last scan", t.elapsed());
        r
    };
    let held = match (&mut pre, ahead) {
        (Some(p), Some(a)) => dump::hold_with_smaps(Pid::from_raw(pid), opts, a, |f| finish(p, f)),
        (Some(p), None) => dump::hold_with(Pid::from_raw(pid), opts, |f| finish(p, f)),
        (None, Some(a)) => dump::hold_with_smaps(Pid::from_raw(pid), opts, a, |_| Ok(())),
        (None, None) => dump::hold(Pid::from_raw(pid), opts),
    };
    crate::metrics::dump(held.is_ok());
    let mut held = match held {
        Ok(h) => h,
        Err(e) => {
            let _ = events.send(TracerEvent::Failed(format!("freeze: {}", chain(&e))));
            return;
        }
    };
    let image = Image {
        node: &node,
        pid,
        id: &id,
        codec,
        ship: &ship,
        wire: &wire,
        raw: &raw,
        events: &events,
        at_us,
        lazy,
    };
    // Post-copy: the pages of the large private anonymous areas stay out of the image.
    let mut following = crate::migrate::lazy::Following::default();
    let sent = check_frozen(pid, &mut held, pre.as_ref(), as_user, &id, at_us).and_then(|()| {
        timeline::mark("checks");
        if lazy {
            let threads = &held.state.threads;
            let keep: Vec<u64> = threads
                .iter()
                .filter_map(|t| t.rseq)
                .flat_map(|r| [r.ptr, r.ptr + u64::from(r.len.max(1)) - 1])
                .chain(crate::migrate::lazy::first_touched(
                    threads.iter().map(|t| &t.regs),
                ))
                .collect();
            following =
                crate::migrate::lazy::mark(Pid::from_raw(pid), &mut held.state.mm.vmas, &keep)
                    .map_err(|why| TracerEvent::Failed(format!("post-copy: {why}")))?;
            timeline::mark("lazy areas");
        }
        image.send(&held, &proxy_protocol, chunks)
    });
    timeline::leave();
    let failed = match sent {
        Err(ev) => ev,
        Ok(plan) => match cmds.recv() {
            Ok(TracerCommand::Commit) => {
                // A second user of the old memory, so that the execve does not free it.
                let keeper = crate::migrate::keepmm::spawn_or_warn(&held, &id);
                match become_stub(&held, &plan, &id, &socket) {
                    Ok(()) => {
                        if let Err(e) = held.detach_as_is() {
                            tracing::warn!(migration = %id, error = %chain(&e), "detach the stub");
                        }
                        let _ = events.send(TracerEvent::Stubbed(plan));
                        // The old memory is freed once the copy runs (then the tracking ends).
                        crate::migrate::keepmm::hold(keeper, &id);
                        drop(pre.take());
                        return;
                    }
                    Err(e) => {
                        crate::migrate::keepmm::abandon(keeper, &held);
                        TracerEvent::StubFailed(chain(&e))
                    }
                }
            }
            Ok(TracerCommand::Lazy(job)) => {
                // The pages that follow are pushed at the usual priority.
                urgent.end();
                crate::migrate::lazy::tracer_commit(
                    held, plan, &id, &socket, job, following, &events,
                );
                drop(pre.take());
                return;
            }
            // Told to, or the migration was dropped (the agent is going away): give it back.
            Ok(TracerCommand::Thaw | TracerCommand::Freeze) | Err(_) => TracerEvent::Thawed,
        },
    };
    let _ = held.thaw();
    drop(pre.take());
    let _ = events.send(failed);
}

/// Once frozen, before anything goes out: no child was made since the first check, the
/// caller may still migrate it, and the pre-copied pages are marked as on the destination.
/// The error is what to report once the process is given back.
fn check_frozen(
    pid: i32,
    held: &mut Held,
    pre: Option<&live::Precopy>,
    as_user: Option<PeerCred>,
    id: &str,
    at_us: u64,
) -> Result<(), TracerEvent> {
    // Checked again now that it cannot fork: a child made since the first check refuses too.
    if let Some(why) = has_children(pid) {
        return Err(TracerEvent::Refused { why, at_us });
    }
    // The caller was authorized when the request came; the process may have changed its
    // credentials since (a set-user-ID exec, PR_SET_DUMPABLE). Frozen, it cannot any more:
    // check again, with the dumpable flag the process itself reported (PR_GET_DUMPABLE).
    if let Some(caller) = as_user {
        let refused = match crate::node::authorize_migrate(caller, pid) {
            Err(s) => Some(s.message().to_string()),
            Ok(()) if held.state.attrs.dumpable != 1 => Some(format!(
                "permission denied: process {pid} is not dumpable (PR_GET_DUMPABLE {}): the \
                 kernel lets only a tracer with CAP_SYS_PTRACE at it",
                held.state.attrs.dumpable
            )),
            Ok(()) => None,
        };
        if let Some(why) = refused {
            return Err(TracerEvent::Refused { why, at_us });
        }
    }
    if let Some(p) = pre {
        let kept = p
            .mark(&mut held.state.mm.vmas)
            .map_err(|e| TracerEvent::Failed(format!("pre-copied pages: {}", chain(&e))))?;
        tracing::debug!(migration = %id, pages = kept, "pages on the destination already");
        timeline::mark("mark pre-copied");
    }
    Ok(())
}

/// What writing the image of one frozen process needs.
struct Image<'a> {
    node: &'a NodeRef,
    pid: i32,
    id: &'a str,
    codec: Codec,
    ship: &'a [String],
    wire: &'a Arc<AtomicU64>,
    raw: &'a Arc<AtomicU64>,
    events: &'a mpsc::UnboundedSender<TracerEvent>,
    /// The wall-clock time just before the freeze.
    at_us: u64,
    /// Post-copy: the header says so.
    lazy: bool,
}

impl Image<'_> {
    /// Says frozen, records the relay's endpoints, sends header, shipped files and image on
    /// `chunks` (whose end the destination sees when this returns). Returns the relay's plan.
    fn send(
        &self,
        held: &Held,
        proxy_protocol: &[u32],
        chunks: mpsc::Sender<TransferChunk>,
    ) -> Result<Plan, TracerEvent> {
        let (pid, id) = (self.pid, self.id);
        let total: u64 = held
            .state
            .mm
            .vmas
            .iter()
            .map(|v| v.stored_pages() * 4096)
            .sum();
        let _ = self.events.send(TracerEvent::Frozen {
            since: held.since,
            total,
            at_us: self.at_us,
        });
        let failed = |why: String| TracerEvent::Failed(why);
        let mut plan = Plan::capture(held).map_err(|e| failed(format!("relay: {}", chain(&e))))?;
        plan.proxy_protocol(proxy_protocol)
            .map_err(|e| failed(e.to_string()))?;
        timeline::mark("relay plan");
        let header = TransferHeader {
            migration_id: id.to_string(),
            relays: plan.endpoints(),
            image_bytes_hint: total,
            origin_pid: pid,
            members: Vec::new(),
            lazy: self.lazy,
        };
        let (codec, raw) = (self.codec, self.raw);
        let stats = send_image(
            header,
            pid,
            self.ship,
            &chunks,
            self.wire,
            raw,
            total,
            |out| {
                held.write_counting(out, codec, Some(raw))
                    .map_err(|e| chain(&e))
            },
        )
        .map_err(failed)?;
        // The stream ends here (the destination sees its end).
        drop(chunks);
        timeline::mark("image sent");
        // What the relay needs, kept (durably) before the stub can exist: a restarted agent
        // serves the stub again with it. Written while the destination restores.
        self.node
            .store
            .put_relay(id, &plan.endpoints())
            .map_err(|e| failed(format!("record the relay: {}", chain(&e))))?;
        tracing::debug!(migration = %id, "relay recorded");
        let _ = self.events.send(TracerEvent::Written(stats));
        Ok(plan)
    }
}

/// The pre-copy rounds of a live migration (see [`live::precopy_rounds`]): checked first as a
/// dump would be (nothing is tracked in a process that would be refused), then the tracking
/// starts and the rounds go out on the transfer stream.
#[allow(clippy::too_many_arguments)]
fn precopy(
    pid: i32,
    id: &str,
    opts: DumpOptions,
    max_downtime: Duration,
    chunks: &mpsc::Sender<TransferChunk>,
    events: &mpsc::UnboundedSender<TracerEvent>,
    sent: Sent<'_>,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<live::Precopy, String> {
    let pid = Pid::from_raw(pid);
    dump::precheck_only(pid, opts).map_err(|e| format!("freeze: {}", chain(&e)))?;
    let mut pre = live::Precopy::start(pid, opts.codec)
        .map_err(|e| format!("start write tracking: {}", chain(&e)))?;
    let send = |mut p: ferry_proto::v1::PrecopyPages| {
        p.migration_id = id.to_string();
        send_precopy(chunks, sent, cancel, p)
    };
    let mut report = |n: u32, r: &live::Round| {
        let _ = events.send(TracerEvent::Round { n, raw: r.raw });
    };
    let rounds = live::precopy_rounds(&mut pre, max_downtime, &send, &mut report)?;
    let _ = events.send(TracerEvent::Precopied(rounds));
    Ok(pre)
}

/// Waits, while the process still runs, until the transfer stream took every pre-copied
/// message queued for it (at most 5 s): what is still queued at the freeze goes out, and is
/// written into the destination's task, before the final image can — inside the stop. (The
/// destination keeps few messages in hand: the stream's flow control holds the rest here.)
fn drained(chunks: &mpsc::Sender<TransferChunk>, cancel: &std::sync::atomic::AtomicBool, id: &str) {
    let t = Instant::now();
    while chunks.capacity() < chunks.max_capacity()
        && !chunks.is_closed()
        && !cancel.load(Ordering::Relaxed)
        && t.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_micros(500));
    }
    tracing::debug!(migration = %id, elapsed = ?t.elapsed(), "pre-copied pages handed to the stream");
}

/// What went out of the pre-copy rounds: bytes on the wire, raw bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent<'a> {
    pub(crate) wire: &'a AtomicU64,
    pub(crate) raw: &'a AtomicU64,
}

/// Hands one message of pre-copied pages to the transfer stream (from any thread), waiting
/// while it is full, and counts it in `sent`; fails once the migration was given up or the
/// stream closed.
pub(crate) fn send_precopy(
    chunks: &mpsc::Sender<TransferChunk>,
    sent: Sent<'_>,
    cancel: &std::sync::atomic::AtomicBool,
    p: ferry_proto::v1::PrecopyPages,
) -> Result<(), String> {
    use tokio::sync::mpsc::error::TrySendError;
    let (n, raw) = (p.data.len() as u64, p.raw_len);
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
    sent.wire.fetch_add(n, Ordering::Relaxed);
    sent.raw.fetch_add(raw, Ordering::Release);
    Ok(())
}

/// Microseconds since the epoch (the records' frozen interval).
pub(crate) fn now_us() -> u64 {
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
pub(crate) fn has_children(pid: i32) -> Option<String> {
    let kids = children(pid);
    (!kids.is_empty()).then(|| {
        format!(
            "pid {pid} has children, which would stay behind on this host: {}; --tree \
             moves it with all its descendants",
            kids.join(", ")
        )
    })
}
