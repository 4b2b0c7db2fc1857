//! The destination side of a migration: answer the negotiation, receive the image and restore
//! it as it streams in, hold the copy stopped, and let it run on Commit or end it on Abort.

use crate::timeline::{self, Side};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::v1::peer_client::PeerClient;
use ferry_proto::v1::transfer_chunk::Part;
use ferry_proto::v1::{
    AbortReply, AppliedReply, CommitReply, ExitStatus, MigrationRecord, MigrationRef,
    NegotiateReply, NegotiateRequest, ShippedFile, TransferChunk, TransferReply,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::Streaming;

use super::dest_error::{
    DecideError as DE, DestError, NegotiateError as NE, ReceiveError, ReceiveError as RE,
};

use super::state::{DestState, OriginState, Role, is_dest};
use super::{chain, fault, negotiate, start_time};
use crate::image::ImageReader;
use crate::node::NodeRef;
use crate::node::state_dir;
use crate::relay::dest::Endpoints;
use crate::restore::{PidNsMode, RestoreError, RestoreOptions};
use crate::state::{FdKind, FileRef, ProcessState, VmaKind};

/// The origin sends without pause while it streams: this long without a message means the
/// link or the origin failed (HTTP/2 keepalive usually says so sooner).
const STREAM_IDLE: Duration = Duration::from_secs(10);

/// How long a prepared copy waits for its origin's Commit or Abort before asking the origin.
const WATCH_AFTER: Duration = Duration::from_secs(10);

/// Copies restored here and held stopped until their origin commits, and what each
/// negotiation found identical here (the restore checks those files did not change since).
#[derive(Debug, Default)]
pub struct Copies {
    held: Mutex<HashMap<String, Held>>,
    /// By migration id: the peer that negotiated it and the files found the same.
    negotiated: Mutex<HashMap<String, Negotiated>>,
    /// Migrations aborted while their image was still arriving.
    aborted: Mutex<HashSet<String>>,
    /// Post-copy: the restore threads whose task was made at the negotiation, by migration
    /// id, until their transfer takes them (or [`FREE_AFTER`] passed).
    ahead: Mutex<HashMap<String, Ahead>>,
}

/// A restore thread made at the negotiation, and the peer it is for.
struct Ahead {
    peer: String,
    thread: LiveThread,
}

impl std::fmt::Debug for Ahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ahead").field("peer", &self.peer).finish()
    }
}

/// One negotiation: who made it, and what it found identical here.
#[derive(Debug)]
struct Negotiated {
    peer: String,
    same: BTreeMap<String, negotiate::Same>,
    /// A live migration: raw bytes of pre-copied pages taken in so far (`Applied`).
    applied: Arc<AtomicU64>,
}

/// One copy: the PID and its start time name it unambiguously.
#[derive(Debug, Clone, Copy)]
struct Held {
    pid: i32,
    start_time: u64,
}

impl Copies {
    /// The copy held for a migration: its PID and start time.
    pub fn held(&self, id: &str) -> Option<(i32, u64)> {
        lock(&self.held).get(id).map(|h| (h.pid, h.start_time))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn store_err(e: super::records::RecordsError) -> DestError {
    DestError::Records(e)
}

/// A migration id is a short token of letters, digits and dashes (it names a directory).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `Peer.Negotiate`: can this host run the process?
///
/// The caller is a peer of `[peers]` (checked by the service). The negotiation belongs to a new
/// migration of that caller: an id this agent already has a record of, or one another peer is
/// negotiating, is refused. The paths must be plain absolute paths; the answer says per file
/// only same, differs or missing ([`negotiate::check`]).
pub async fn negotiate(
    node: &NodeRef,
    peer: &str,
    mut req: NegotiateRequest,
) -> Result<NegotiateReply, DestError> {
    if !valid_id(&req.migration_id) {
        return Err(NE::BadId.into());
    }
    if req.files.len() > negotiate::MAX_FILES {
        return Err(NE::TooManyFiles {
            n: req.files.len(),
            max: negotiate::MAX_FILES,
        }
        .into());
    }
    if let Some(f) = req.files.iter().find(|f| !negotiate::valid_path(&f.path)) {
        return Err(NE::BadPath(f.path.clone()).into());
    }
    let id = req.migration_id.clone();
    if node.store.get(&id).map_err(store_err)?.is_some() {
        return Err(NE::Exists(id).into());
    }
    if lock(&node.copies.negotiated)
        .get(&id)
        .is_some_and(|n| n.peer != peer)
    {
        return Err(NE::OtherPeer(id).into());
    }
    let theirs = req.protocol;
    let premade = req.premade.take();
    let (mut reply, same) = tokio::task::spawn_blocking(move || negotiate::check(&req))
        .await
        .map_err(|e| NE::Task(e.to_string()))?;
    super::version::answer(peer, theirs.as_ref(), &mut reply);
    tracing::info!(
        migration = %id, %peer,
        problems = reply.problems.len(),
        files_not_same = reply.files.len(),
        "negotiated"
    );
    if let Some(plan) = premade.filter(|_| reply.problems.is_empty()) {
        make_ahead(node, peer, &id, plan).await;
    }
    lock(&node.copies.negotiated).insert(
        id,
        Negotiated {
            peer: peer.to_string(),
            same,
            applied: Arc::default(),
        },
    );
    Ok(reply)
}

/// Post-copy: makes the copy's task now, while the process still runs on the origin (the
/// restore thread that will restore it, with its task made ahead), and keeps it for the
/// transfer of migration `id`; waits until the task is made (a few ms). Without it (no plan,
/// or the task could not be made) the task is made in the stop, as before.
async fn make_ahead(node: &NodeRef, peer: &str, id: &str, plan: ferry_proto::v1::PrecopyPages) {
    let made: Result<LiveThread, String> = async {
        let d = tokio::task::spawn_blocking(move || super::live::Received::decode(plan))
            .await
            .map_err(|e| e.to_string())??;
        if d.plan.is_none() {
            return Err("the plan names no task".into());
        }
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        let t = LiveThread::spawn(Some(ready), Arc::default())?;
        t.pages
            .send(d)
            .await
            .map_err(|_| "the restore thread ended".to_string())?;
        let _ = tokio::time::timeout(Duration::from_secs(1), is_ready).await;
        Ok(t)
    }
    .await;
    let thread = match made {
        Ok(t) => t,
        Err(why) => {
            tracing::debug!(migration = %id, %why, "no task made ahead");
            return;
        }
    };
    lock(&node.copies.ahead).insert(
        id.to_string(),
        Ahead {
            peer: peer.to_string(),
            thread,
        },
    );
    // Not taken by a transfer in time (the origin gave up): the thread and its task end.
    let (node, id) = (node.clone(), id.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(FREE_AFTER).await;
        let left = lock(&node.copies.ahead).remove(&id);
        if let Some(a) = left {
            tracing::debug!(migration = %id, "the task made ahead was not taken: ended");
            end_live(Some(a.thread)).await;
        }
    });
}

/// A `Read` over the image chunks arriving on the Transfer stream.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What the restorer thread gives back: the copy's PID and start time, warnings, and the
/// local endpoints now installed in it.
type Restored = Result<Made, String>;

/// A copy the restorer made, stopped.
struct Made {
    /// Its PID here.
    pid: i32,
    /// Its start time (with the PID, it names the process).
    start: u64,
    /// Its PID inside a PID namespace of its own, when its PID was taken here.
    ns_pid: Option<i32>,
    warnings: Vec<String>,
    endpoints: Endpoints,
    /// Stopped by job control when dumped: it stays stopped at commit.
    keep_stopped: bool,
    /// `--tree`: the other members, stopped too.
    members: Vec<super::tree::MadeMember>,
}

/// The private directory of one migration's shipped files.
fn shipped_dir(id: &str) -> PathBuf {
    state_dir().join("shipped").join(id)
}

/// Where a shipped file of path `path` goes (only plain absolute paths are accepted).
fn shipped_path(dir: &Path, path: &str) -> Result<PathBuf, ReceiveError> {
    let p = Path::new(path);
    let mut out = dir.to_path_buf();
    let mut any = false;
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => {
                out.push(n);
                any = true;
            }
            _ => return Err(ReceiveError::BadShippedPath(path.to_string())),
        }
    }
    if !p.is_absolute() || !any {
        return Err(ReceiveError::BadShippedPath(path.to_string()));
    }
    Ok(out)
}

/// Writes one piece of a shipped file.
fn ship_piece(
    dir: &Path,
    f: &ShippedFile,
    open: &mut HashMap<String, std::fs::File>,
    map: &mut BTreeMap<String, PathBuf>,
) -> Result<(), ReceiveError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |error: std::io::Error| ReceiveError::Shipped {
        path: f.path.clone(),
        error,
    };
    if !open.contains_key(&f.path) {
        let to = shipped_path(dir, &f.path)?;
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(f.mode & 0o7777)
            .open(&to)
            .map_err(io)?;
        map.insert(f.path.clone(), to);
        open.insert(f.path.clone(), file);
    }
    let file = open
        .get_mut(&f.path)
        .ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))?;
    file.write_all(&f.data).map_err(io)?;
    if f.last {
        open.remove(&f.path);
    }
    Ok(())
}

/// Points the checkpoint's files at this host's: shipped files at their private copies, the
/// others at the local file of the same path, which must be the one the negotiation found
/// identical (or, for a file the process opened since, have the same size and mtime). The
/// restore then checks device and inode against these local identities.
fn localize(
    state: &mut ProcessState,
    shipped: &BTreeMap<String, PathBuf>,
    same: &BTreeMap<String, negotiate::Same>,
) -> Result<(), RestoreError> {
    let fix = |f: &mut FileRef, what: &str| -> Result<(), RestoreError> {
        if let Some(local) = shipped.get(&f.path) {
            let now = negotiate::identity(local).map_err(|e| {
                RestoreError::FileChanged(format!("{what}: shipped {}: {e}", f.path))
            })?;
            f.path = local.to_string_lossy().into_owned();
            f.identity = now;
            return Ok(());
        }
        let now = negotiate::identity(Path::new(&f.path))
            .map_err(|e| RestoreError::FileChanged(format!("{what}: {}: {e}", f.path)))?;
        let ok = match same.get(&f.path) {
            Some(s) => {
                let then = s.identity;
                then.dev == now.dev
                    && then.ino == now.ino
                    && (s.written || (then.size == now.size && then.mtime_ns == now.mtime_ns))
            }
            None => {
                (now.mode & libc::S_IFMT == libc::S_IFDIR)
                    || (now.size == f.identity.size && now.mtime_ns == f.identity.mtime_ns)
            }
        };
        if !ok {
            return Err(RestoreError::FileChanged(format!(
                "{what}: {} is not the file the process had (changed since the negotiation, or \
                 another size or mtime)",
                f.path
            )));
        }
        f.identity = now;
        Ok(())
    };
    fix(&mut state.exe, "executable")?;
    for v in &mut state.mm.vmas {
        if let VmaKind::File(f) = &mut v.kind {
            fix(f, &format!("vma {:#x}", v.start))?;
        }
    }
    for fd in &mut state.fds {
        let what = format!("fd {}", fd.fd);
        match &mut fd.kind {
            FdKind::File { file, .. } | FdKind::Directory { file, .. } => fix(file, &what)?,
            FdKind::Fifo { file, .. } => {
                if let Ok(now) = negotiate::identity(Path::new(&file.path)) {
                    file.identity = now;
                }
            }
            FdKind::Inotify { watches } => {
                for w in watches {
                    fix(&mut w.file, &what)?;
                }
            }
            FdKind::Fanotify(g) => {
                for m in &mut g.marks {
                    if let crate::state::FanotifyTarget::Inode(file) = &mut m.target {
                        fix(file, &what)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What the restorer needs once the image begins.
struct StartArgs {
    /// The migration (its destination timeline becomes the restorer thread's).
    id: String,
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    shipped: BTreeMap<String, PathBuf>,
    same: BTreeMap<String, negotiate::Same>,
    endpoints: Endpoints,
    /// `--tree`: the other members and their relay endpoints.
    members: Vec<(i32, Endpoints)>,
    /// Post-copy: the `precopied` pages follow once the copy runs (`migrate/lazy.rs`).
    lazy: bool,
}

/// Messages of pre-copied pages (1 MiB each) being decoded, and queued for the restore
/// thread, at most.
const PAGES_IN_HAND: usize = 2;

/// A live migration's restore thread, from the first pre-copied pages on: it makes the task
/// ahead and writes the pages into it as they come ([`live_restorer`]).
struct LiveThread {
    pages: tokio::sync::mpsc::Sender<super::live::Decoded>,
    start: std::sync::mpsc::Sender<StartArgs>,
    done: tokio::sync::oneshot::Receiver<Restored>,
}

impl LiveThread {
    /// `ready`: told once the task of the first message is made (or could not be).
    /// `applied`: counts the raw bytes of pre-copied pages taken in.
    fn spawn(
        ready: Option<tokio::sync::oneshot::Sender<()>>,
        applied: Arc<AtomicU64>,
    ) -> Result<Self, String> {
        // Few messages in hand: what is queued here when the origin freezes is written into
        // the task inside the stop (the stream's flow control keeps the rest on the origin,
        // which waits for it before the freeze).
        let (pages, pages_rx) = tokio::sync::mpsc::channel(PAGES_IN_HAND);
        let (start, start_rx) = std::sync::mpsc::channel();
        let (dtx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("restore-live".into())
            .spawn(move || {
                let _ = dtx.send(live_restorer(pages_rx, start_rx, ready, &applied));
            })
            .map_err(|e| format!("start the restorer thread: {e}"))?;
        Ok(LiveThread { pages, start, done })
    }
}

/// Ends a live migration's restore thread before its image (its premade task dies with it)
/// and waits for it; returns its error, if it failed.
async fn end_live(live: Option<LiveThread>) -> Option<String> {
    let t = live?;
    drop(t.pages);
    drop(t.start);
    match t.done.await {
        Ok(Err(why)) => Some(why),
        _ => None,
    }
}

/// A live migration's restorer: keeps the pre-copied pages, writes them into a task made
/// ahead at the first of them (premade; without one, if it cannot be made, every pre-copied
/// page is written at the final restore), then restores the image from that task.
fn live_restorer(
    mut pages: tokio::sync::mpsc::Receiver<super::live::Decoded>,
    start: std::sync::mpsc::Receiver<StartArgs>,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
    applied: &AtomicU64,
) -> Restored {
    let mut received = super::live::Received::default();
    let mut premade: Option<crate::restore::Premade> = None;
    let mut first = true;
    // A tree's pages, by member, for its final restore (no task made ahead).
    let mut staged = super::tree_live::Staging::default();
    while let Some(p) = pages.blocking_recv() {
        let raw = p.raw_len();
        if p.member != 0 {
            staged.insert(p);
            applied.fetch_add(raw, Ordering::Release);
            continue;
        }
        if std::mem::take(&mut first)
            && let Some((pid, areas, avoid)) = &p.plan
        {
            let (pid, areas, avoid) = (*pid, areas.clone(), avoid.clone());
            let t = std::time::Instant::now();
            match crate::restore::Premade::make(pid, &areas, &avoid) {
                Ok(m) => {
                    tracing::debug!(pid = m.pid().as_raw(), areas = m.areas.len(), elapsed = ?t.elapsed(), "premade task");
                    premade = Some(m);
                }
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "no premade task: the pre-copied pages are written at the final restore");
                }
            }
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
        }
        received.insert(p);
        if let Some(m) = &premade
            && let Err(e) = received.write_last(m)
        {
            tracing::warn!(error = %e, "the premade task is given up");
            premade = None;
        }
        applied.fetch_add(raw, Ordering::Release);
    }
    let args = start
        .recv()
        .map_err(|_| "the transfer ended before the image".to_string())?;
    restorer(args, received, premade, staged)
}

/// The threads waiting to free the pre-copied pages of a migration, by its id.
static TO_FREE: Mutex<Option<HashMap<String, std::sync::mpsc::Sender<()>>>> = Mutex::new(None);

/// How long pre-copied pages are kept at most when no commit comes (an aborted migration).
const FREE_AFTER: Duration = Duration::from_secs(30);

/// Frees what the rounds kept of migration `id` on a thread of its own, once its copy runs
/// ([`release_precopied`]; after [`FREE_AFTER`] without), and gives the memory back to the
/// kernel (else every task made here next copies its page tables at its `fork`).
fn free_later(id: &str, received: super::live::Received, staged: super::tree_live::Staging) {
    if received.is_empty() && staged.is_empty() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    lock(&TO_FREE)
        .get_or_insert_with(HashMap::new)
        .insert(id.to_string(), tx);
    let free = move || {
        let _ = rx.recv_timeout(FREE_AFTER);
        let t = std::time::Instant::now();
        drop(received);
        drop(staged);
        let trimmed = crate::sys::malloc_trim();
        tracing::debug!(elapsed = ?t.elapsed(), trimmed, "pre-copied pages freed");
    };
    if let Err(e) = std::thread::Builder::new()
        .name("free-precopied".into())
        .spawn(free)
    {
        tracing::warn!(error = %e, "no thread to free the pre-copied pages: freed in the stop");
    }
}

/// The copy of migration `id` runs: its pre-copied pages are freed now.
fn release_precopied(id: &str) {
    if let Some(tx) = lock(&TO_FREE).as_mut().and_then(|m| m.remove(id)) {
        let _ = tx.send(());
    }
}

/// The restorer: reads the image as it arrives and builds the copy, leaving it stopped.
fn restorer(
    args: StartArgs,
    received: super::live::Received,
    premade: Option<crate::restore::Premade>,
    mut staged: super::tree_live::Staging,
) -> Restored {
    let StartArgs {
        id,
        rx,
        shipped,
        same,
        endpoints,
        members,
        lazy,
    } = args;
    timeline::enter(Side::Destination, &id);
    // From the final image to the copy held stopped every moment is the process's downtime.
    let _urgent = super::urgent::Urgent::now();
    let input = ChunkReader {
        rx,
        cur: Vec::new(),
        pos: 0,
    };
    let mut reader = ImageReader::open(input).map_err(|e| chain(&e))?;
    localize(reader.state_mut(), &shipped, &same).map_err(|e| chain(&e))?;
    let opts = RestoreOptions {
        pid_ns: PidNsMode::Auto,
        inherit_stdio: false,
        stopped: true,
        // Ours to wait for: its exit status is the migration's.
        as_child: true,
        // The destination always checks the copy against the image before reporting it.
        check: Some(crate::verify::restore_check),
    };
    if !members.is_empty() {
        // A tree has no task made ahead: its members' pre-copied pages are written into
        // each during the restore.
        drop(premade);
        let restored =
            super::tree::restore(reader, opts, &endpoints, members, &staged).map_err(|e| chain(&e));
        crate::metrics::restore(restored.is_ok());
        let (summary, members) = restored?;
        let st = start_time(summary.pid).unwrap_or(0);
        return Ok(Made {
            pid: summary.pid,
            start: st,
            ns_pid: summary.ns_pid,
            warnings: summary.warnings,
            endpoints,
            keep_stopped: summary.stopped,
            members,
        });
    }
    // `--tree` of a process without children: its pages were staged as the root's.
    let root = reader.tree().processes.first().map_or(0, |p| p.pid);
    let received = staged.take(root).unwrap_or(received);
    let write = |pid: Pid, vmas: &[crate::state::VmaState], kept: &[(u64, u64)]| {
        let t = std::time::Instant::now();
        let n = received.write(pid, vmas, kept)?;
        tracing::debug!(pages = n, elapsed = ?t.elapsed(), "pre-copied pages written");
        Ok(())
    };
    // Post-copy: the pages not in the image stay missing, armed for faults.
    let missing = |_: Pid, _: &[crate::state::VmaState], _: &[(u64, u64)]| Ok(());
    crate::restore::lazy::want(lazy);
    let restored = crate::restore::restore_with_pages(
        reader,
        opts,
        &endpoints.substitutes(),
        Some(if lazy { &missing } else { &write }),
        premade,
    );
    // The pre-copied pages are in the copy now: freeing them (a GiB takes tens of ms, and
    // holds this agent's address space lock meanwhile) is no part of the stop.
    free_later(&id, received, staged);
    let armed = crate::restore::lazy::take();
    crate::restore::lazy::want(false);
    crate::metrics::restore(restored.is_ok());
    let summary = restored.map_err(|e| chain(&e))?;
    let members = Vec::new();
    let st = start_time(summary.pid).unwrap_or(0);
    if let Some(a) = armed {
        // Registered once the restore and its checker are done with the copy's memory.
        if let Err(why) = crate::restore::lazy::register(&a) {
            kill_copy(summary.pid, st);
            return Err(why);
        }
        timeline::mark("uffd register");
        if let Err(why) = super::lazy::keep(a) {
            kill_copy(summary.pid, st);
            return Err(why);
        }
    }
    Ok(Made {
        pid: summary.pid,
        start: st,
        ns_pid: summary.ns_pid,
        warnings: summary.warnings,
        endpoints,
        keep_stopped: summary.stopped,
        members,
    })
}

/// Ends a held copy (SIGKILL) and reaps it, if it is still the process we made.
fn kill_copy(pid: i32, start: u64) {
    if pid <= 0 || start_time(pid) != Some(start) {
        return;
    }
    // Restored in a PID namespace of its own, its parent is the namespace's init, our child:
    // it goes too (with every member of a tree), and is reaped here.
    let parent = crate::proc::read(pid, "stat")
        .ok()
        .and_then(|s| crate::proc::parse_stat(&s).ok())
        .map(|s| s.ppid)
        .filter(|&pp| {
            pp > 1
                && pp != std::process::id() as i32
                && crate::proc::read(pp, "stat")
                    .ok()
                    .and_then(|s| crate::proc::parse_stat(&s).ok())
                    .is_some_and(|s| s.ppid == std::process::id() as i32)
        });
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
    if let Some(init) = parent {
        let _ = kill(Pid::from_raw(init), Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(init), None);
    }
}

/// `Peer.Transfer`: receive the header, the shipped files and the image; restore it as it
/// streams; reply once the copy is complete and stopped.
pub async fn transfer(
    node: &NodeRef,
    peer: &str,
    stream: Streaming<TransferChunk>,
) -> Result<TransferReply, DestError> {
    // In a task of its own: if the connection breaks, the server drops this call's future,
    // but the transfer must still see the broken stream, end the half-built copy and record
    // it.
    let (node, peer) = (node.clone(), peer.to_string());
    tokio::spawn(async move { transfer_task(&node, &peer, stream).await })
        .await
        .map_err(|e| RE::Task(format!("transfer task: {e}")))?
}

/// A message of pre-copied pages as its decoding on the blocking pool ended.
fn decoded(
    r: Result<Result<super::live::Decoded, String>, tokio::task::JoinError>,
) -> Result<super::live::Decoded, ReceiveError> {
    match r {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(why)) => Err(RE::BadPages(why)),
        Err(e) => Err(RE::Task(e.to_string())),
    }
}

async fn transfer_task(
    node: &NodeRef,
    peer: &str,
    mut stream: Streaming<TransferChunk>,
) -> Result<TransferReply, DestError> {
    // A live migration's pre-copy rounds come first, while the process runs on the origin;
    // nothing is recorded for them (nothing exists here but what arrived).
    // They go to the thread that makes the task ahead and later restores it.
    let mut live: Option<LiveThread> = None;
    let mut rounds = HashSet::new();
    let mut decoding = std::collections::VecDeque::new();
    let header = loop {
        // Each message's pages go on to the restore thread as soon as they are decoded (the
        // origin waits until it took them all in before it freezes: `Peer.Applied`); the
        // stream is read on while few are in hand.
        let msg = tokio::select! {
            biased;
            d = async {
                match decoding.front_mut() {
                    Some(next) => next.await,
                    None => std::future::pending::<Result<Result<_, String>, tokio::task::JoinError>>().await,
                }
            } => {
                decoding.pop_front();
                let d = match decoded(d) {
                    Ok(d) => d,
                    Err(e) => {
                        end_live(live.take()).await;
                        return Err(e.into());
                    }
                };
                let Some(thread) = &live else {
                    return Err(RE::Task("pages without a restore thread".into()).into());
                };
                if thread.pages.send(d).await.is_err() {
                    // The thread stopped taking pages: it failed; its error says why.
                    let why = end_live(live.take()).await;
                    return Err(RE::Precopy(
                        why.unwrap_or_else(|| "the restore thread ended".into()),
                    )
                    .into());
                }
                continue;
            }
            m = stream.message(), if decoding.len() < PAGES_IN_HAND => m,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(s) => {
                end_live(live.take()).await;
                return Err(RE::Stream(s).into());
            }
        };
        match msg {
            Some(TransferChunk {
                part: Some(Part::Header(h)),
            }) => break h,
            Some(TransferChunk {
                part: Some(Part::Precopy(p)),
            }) => {
                let round = p.round;
                if rounds.insert(round) && fault(&format!("dest-exit-precopy-round-{round}")) {
                    tracing::error!(
                        round,
                        "FERRY_FAULT dest-exit-precopy-round-{round}: exiting"
                    );
                    std::process::exit(70);
                }
                if live.is_none() {
                    let applied = applied_count(node, peer, &p.migration_id);
                    live = Some(LiveThread::spawn(None, applied).map_err(RE::Task)?);
                }
                // Checked and decompressed on the blocking pool, a few at a time; handed on
                // in the order they came.
                decoding.push_back(tokio::task::spawn_blocking(move || {
                    super::live::Received::decode(p)
                }));
            }
            _ => {
                end_live(live.take()).await;
                return Err(RE::BadStart.into());
            }
        }
    };
    // The rounds are over: the thread gets the last pages and waits for the image.
    if let Some(t) = &live {
        for next in decoding {
            let d = match decoded(next.await) {
                Ok(d) => d,
                Err(e) => {
                    end_live(live.take()).await;
                    return Err(e.into());
                }
            };
            if t.pages.send(d).await.is_err() {
                let why = end_live(live.take()).await;
                return Err(
                    RE::Precopy(why.unwrap_or_else(|| "the restore thread ended".into())).into(),
                );
            }
        }
    }
    // Post-copy: the thread made at the negotiation, with its task.
    if live.is_none()
        && let Some(a) = lock(&node.copies.ahead).remove(&header.migration_id)
        && a.peer == peer
    {
        live = Some(a.thread);
    }
    let live = live.map(|t| {
        drop(t.pages);
        (t.start, t.done)
    });
    let id = header.migration_id.clone();
    let header_at = std::time::Instant::now();
    if !valid_id(&id) {
        return Err(RE::BadId.into());
    }
    if node.store.get(&id).map_err(store_err)?.is_some() {
        return Err(RE::Exists(id).into());
    }
    timeline::begin(Side::Destination, &id, header_at);
    let mut rec = MigrationRecord {
        migration_id: id.clone(),
        role: Role::Destination.as_str().into(),
        peer: peer.to_string(),
        remote_pid: header.origin_pid,
        ..Default::default()
    };
    node.store
        .set(&mut rec, DestState::Receiving, "image arriving")
        .map_err(store_err)?;
    timeline::mark_of(Side::Destination, &id, "record receiving");
    // Only the caller's own negotiation counts (another peer's stays for that peer).
    let same = {
        let mut negotiated = lock(&node.copies.negotiated);
        match negotiated.get(&id) {
            Some(n) if n.peer == peer => negotiated.remove(&id).map(|n| n.same),
            _ => None,
        }
        .unwrap_or_default()
    };
    let dir = shipped_dir(&id);
    let result = receive(node, &id, &header, &dir, same, live, &mut stream).await;
    let aborted = lock(&node.copies.aborted).remove(&id);
    if result.is_err() || aborted {
        timeline::forget(Side::Destination, &id);
    }
    match result {
        Ok(Made {
            pid,
            start,
            ns_pid,
            warnings,
            endpoints,
            keep_stopped,
            members,
            ..
        }) if !aborted => {
            rec.pid = pid;
            rec.start_time = start;
            rec.keep_stopped = keep_stopped;
            rec.members = super::tree::record_members(&members);
            // `lazy:` while the pages are still to come (migrate/lazy.rs).
            let lazy = if header.lazy { "lazy: " } else { "" };
            if let Err(e) = node.store.set(
                &mut rec,
                DestState::Prepared,
                format!("{lazy}copy stopped, waiting for commit"),
            ) {
                super::tree::kill_members(node, &id, &rec.members);
                kill_copy(pid, start);
                return Err(store_err(e));
            }
            lock(&node.copies.held).insert(
                id.clone(),
                Held {
                    pid,
                    start_time: start,
                },
            );
            // The members first: the root's exit status goes out once they all ended too.
            super::tree::hold_members(node, &id, members);
            let after = rec
                .members
                .iter()
                .filter_map(|m| {
                    node.relays
                        .dest_exit(&crate::relay::member_id(&id, m.remote_pid))
                })
                .collect();
            node.relays.hold_dest_after(&id, pid, endpoints, after);
            if let Some(exit) = node.relays.dest_exit(&id) {
                watch_end(node.clone(), id.clone(), exit);
            }
            if header.lazy {
                super::lazy::watch(node.clone(), id.clone(), pid);
            }
            timeline::mark_of(Side::Destination, &id, "record prepared");
            // Its Commit is still to come: the timeline goes on until the copy runs.
            let phases = timeline::so_far(Side::Destination, &id);
            tracing::info!(migration = %id, pid, %phases, "copy prepared");
            watch(node.clone(), id);
            Ok(TransferReply {
                pid,
                warnings,
                ns_pid: ns_pid.unwrap_or(0),
                members: rec.members.clone(),
                phases,
            })
        }
        Ok(Made {
            pid,
            start,
            members,
            ..
        }) => {
            super::tree::kill_members(node, &id, &super::tree::record_members(&members));
            kill_copy(pid, start);
            let _ = std::fs::remove_dir_all(&dir);
            let _ = node.store.set(
                &mut rec,
                DestState::Aborted,
                "aborted by the origin during the transfer",
            );
            Err(RE::AbortedByOrigin.into())
        }
        Err(why) => {
            let _ = std::fs::remove_dir_all(&dir);
            tracing::warn!(migration = %id, %why, "transfer failed");
            let _ = node.store.set(&mut rec, DestState::Aborted, why.clone());
            Err(RE::Restore(why).into())
        }
    }
}

async fn receive(
    _node: &NodeRef,
    id: &str,
    header: &ferry_proto::v1::TransferHeader,
    dir: &Path,
    same: BTreeMap<String, negotiate::Same>,
    live: Option<(
        std::sync::mpsc::Sender<StartArgs>,
        tokio::sync::oneshot::Receiver<Restored>,
    )>,
    stream: &mut Streaming<TransferChunk>,
) -> Restored {
    // A live migration's restore thread exists already (with its premade task): it is handed
    // the image; any failure before ends it (and its task) and is waited for.
    let (mut live_start, mut done) = match live {
        Some((start, done)) => (Some(start), Some(done)),
        None => (None, None),
    };
    let mut endpoints = Some(
        Endpoints::make(&header.relays).map_err(|e| format!("relay endpoints: {}", chain(&e)))?,
    );
    let mut members = Some(super::tree::member_endpoints(header)?);
    let mut open = HashMap::new();
    let mut shipped = BTreeMap::new();
    let mut same = Some(same);
    let mut tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>> = None;
    let mut got = 0u64;
    let half = header.image_bytes_hint / 2;
    let exit_mid = fault("dest-exit-mid-stream");
    loop {
        let next = tokio::time::timeout(STREAM_IDLE, stream.message()).await;
        let msg = match next
            .map_err(|_| format!("nothing arrived for {} s", STREAM_IDLE.as_secs()))
            .and_then(|r| r.map_err(|s| s.message().to_string()))
        {
            Ok(m) => m,
            Err(why) => {
                drop(tx);
                drop(live_start);
                if let Some(d) = done {
                    // The restorer sees the end of its input and gives up; wait for it so the
                    // half-built task is gone before we answer.
                    let _ = d.await;
                }
                return Err(format!("the image stream broke: {why}"));
            }
        };
        match msg.and_then(|m| m.part) {
            Some(Part::File(f)) => {
                if tx.is_some() {
                    return Err("a shipped file after the image began".into());
                }
                if let Err(s) = ship_piece(dir, &f, &mut open, &mut shipped) {
                    drop(live_start);
                    if let Some(d) = done {
                        let _ = d.await;
                    }
                    return Err(s.to_string());
                }
            }
            Some(Part::Image(bytes)) => {
                if tx.is_none() {
                    let (t, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
                    let args = StartArgs {
                        id: id.to_string(),
                        rx,
                        shipped: std::mem::take(&mut shipped),
                        same: same.take().unwrap_or_default(),
                        endpoints: endpoints.take().ok_or("restorer started twice")?,
                        members: members.take().unwrap_or_default(),
                        lazy: header.lazy,
                    };
                    match live_start.take() {
                        Some(start) => {
                            // The thread is gone if it failed: its error comes with `done`.
                            let _ = start.send(args);
                        }
                        None => {
                            let (dtx, drx) = tokio::sync::oneshot::channel();
                            let id = id.to_string();
                            std::thread::Builder::new()
                                .name(format!("restore-{id}"))
                                .spawn(move || {
                                    let _ = dtx.send(restorer(
                                        args,
                                        super::live::Received::default(),
                                        None,
                                        super::tree_live::Staging::default(),
                                    ));
                                })
                                .map_err(|e| format!("start the restorer thread: {e}"))?;
                            done = Some(drx);
                        }
                    }
                    tx = Some(t);
                }
                got += bytes.len() as u64;
                if exit_mid && half > 0 && got >= half {
                    tracing::error!(migration = %id, got, "FERRY_FAULT dest-exit-mid-stream: exiting");
                    std::process::exit(70);
                }
                if let Some(t) = &tx
                    && t.send(bytes).await.is_err()
                {
                    // The restorer stopped reading: it failed; its error is below.
                    break;
                }
            }
            Some(Part::Header(_)) => return Err("a second header".into()),
            Some(Part::Precopy(_)) => return Err("pre-copied pages after the header".into()),
            None => break,
        }
    }
    if exit_mid {
        tracing::error!(migration = %id, "FERRY_FAULT dest-exit-mid-stream: exiting");
        std::process::exit(70);
    }
    drop(tx);
    drop(live_start);
    timeline::mark_of(Side::Destination, id, "image received");
    let Some(done) = done else {
        return Err("the transfer ended without an image".into());
    };
    let restored = done
        .await
        .map_err(|_| "the restorer thread died".to_string())??;
    timeline::mark_of(Side::Destination, id, "restorer done");
    if fault("restore-fail") {
        for m in &restored.members {
            if start_time(m.pid) == Some(m.start) {
                let _ = kill(Pid::from_raw(m.pid), Signal::SIGKILL);
            }
        }
        kill_copy(restored.pid, restored.start);
        return Err("FERRY_FAULT restore-fail: the restore failed after the pages".into());
    }
    Ok(restored)
}

/// The copy of a prepared or committed migration, if it is still the process we made.
fn copy_of(rec: &MigrationRecord) -> Option<(i32, u64)> {
    (rec.pid > 0 && start_time(rec.pid) == Some(rec.start_time))
        .then_some((rec.pid, rec.start_time))
}

/// Lets the copy run: record `committed` (a restarted agent sends SIGCONT again), SIGCONT,
/// record `done`.
pub(crate) fn commit_local(node: &NodeRef, rec: &mut MigrationRecord) -> Result<(), DestError> {
    let Some((pid, _)) = copy_of(rec) else {
        let _ = node.store.set(
            rec,
            DestState::Aborted,
            "the held copy is gone (killed from outside?)",
        );
        return Err(DE::CopyGone.into());
    };
    // A lazy copy's pages may arrive meanwhile (migrate/lazy.rs).
    let _order = super::lazy::record_lock();
    let lazy = super::lazy::dest_prefix(rec);
    node.store
        .set(
            rec,
            DestState::Committed,
            format!("{lazy}resuming the copy"),
        )
        .map_err(store_err)?;
    timeline::mark_of(
        Side::Destination,
        &rec.migration_id,
        "commit: record committed",
    );
    // The members of a tree first, deepest first.
    super::tree::cont_members(&rec.members);
    // A process stopped by job control when dumped stays stopped (its own SIGCONT is for
    // whoever stopped it to send).
    if !rec.keep_stopped {
        kill(Pid::from_raw(pid), Signal::SIGCONT).map_err(|error| DE::Resume { pid, error })?;
    }
    timeline::mark_of(Side::Destination, &rec.migration_id, "commit: running");
    timeline::finish(Side::Destination, &rec.migration_id);
    release_precopied(&rec.migration_id);
    lock(&node.copies.held).remove(&rec.migration_id);
    let lazy = super::lazy::dest_prefix(rec);
    node.store
        .set(rec, DestState::Done, format!("{lazy}running as pid {pid}"))
        .map_err(store_err)?;
    drop(_order);
    tracing::info!(migration = %rec.migration_id, pid, "copy running");
    // A copy whose relay endpoints are held is reaped by the relay registry (its exit
    // status goes to the origin); one held by an earlier run of this agent is not our child.
    if !node.relays.holds_dest(&rec.migration_id) {
        reap(node.clone(), rec.migration_id.clone(), pid);
    }
    Ok(())
}

/// The copy is our child: reap it when it ends, so it leaves no zombie. (One made by an
/// earlier run of this agent is not: its end is seen, its status is not.)
fn reap(node: NodeRef, id: String, pid: i32) {
    tokio::task::spawn_blocking(move || {
        use nix::sys::wait::WaitStatus;
        let status = match crate::sys::wait_exit(Pid::from_raw(pid)) {
            Ok(WaitStatus::Exited(_, code)) => Some(ExitStatus {
                code,
                ..Default::default()
            }),
            Ok(WaitStatus::Signaled(_, sig, core)) => Some(ExitStatus {
                code: 0,
                signal: sig as i32,
                core_dumped: core,
            }),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(migration = %id, pid, error = %e, "not reaped here");
                None
            }
        };
        tracing::info!(migration = %id, pid, status = ?status, "migrated process ended");
        copy_ended(&node, &id, status.as_ref());
    });
}

/// Waits for the end of the copy of migration `id` (its reaper fills `exit`), then records
/// it.
fn watch_end(
    node: NodeRef,
    id: String,
    mut exit: tokio::sync::watch::Receiver<Option<ExitStatus>>,
) {
    tokio::spawn(async move {
        let status = match exit.wait_for(Option::is_some).await {
            Ok(s) => *s,
            // The reaper could not start: nothing will tell.
            Err(_) => return,
        };
        // `committed` is on its way to `done` (a copy may end as soon as it runs).
        for _ in 0..100 {
            match node.store.get(&id) {
                Ok(Some(r)) if is_dest(&r, DestState::Committed) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => break,
            }
        }
        copy_ended(&node, &id, status.as_ref());
    });
}

/// The copy of migration `id` ended (`status` when known): a running copy's record says
/// so, and the files shipped for it go. A copy that ended before it ran (aborted, or gone
/// while held) is the business of the abort.
fn copy_ended(node: &NodeRef, id: &str, status: Option<&ExitStatus>) {
    let mut rec = match node.store.get(id) {
        Ok(Some(r))
            if matches!(
                DestState::of(&r),
                Some(DestState::Committed | DestState::Done)
            ) =>
        {
            r
        }
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(migration = %id, error = %chain(&e), "read the record");
            return;
        }
    };
    let where_ = if rec.moved_to.is_empty() {
        format!("here as pid {}", rec.pid)
    } else {
        format!("on {} as pid {}", rec.moved_to, rec.moved_pid)
    };
    if let Err(e) = node.store.ended(&mut rec, status, &where_) {
        tracing::warn!(migration = %id, error = %chain(&e), "record the end");
    }
    let dir = shipped_dir(id);
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        tracing::warn!(migration = %id, error = %e, dir = %dir.display(), "remove the shipped files");
    }
}

/// Ends the copy and records why.
pub(crate) fn abort_local(
    node: &NodeRef,
    rec: &mut MigrationRecord,
    why: &str,
) -> Result<(), DestError> {
    super::tree::kill_members(node, &rec.migration_id, &rec.members);
    if let Some((pid, start)) = copy_of(rec) {
        kill_copy(pid, start);
    }
    lock(&node.copies.held).remove(&rec.migration_id);
    timeline::forget(Side::Destination, &rec.migration_id);
    release_precopied(&rec.migration_id);
    drop(node.relays.take_dest(&rec.migration_id));
    let _ = std::fs::remove_dir_all(shipped_dir(&rec.migration_id));
    node.store
        .set(rec, DestState::Aborted, why)
        .map_err(store_err)?;
    tracing::info!(migration = %rec.migration_id, %why, "copy discarded");
    Ok(())
}

fn own_record(node: &NodeRef, peer: &str, id: &str) -> Result<Option<MigrationRecord>, DestError> {
    let rec = node.store.get(id).map_err(store_err)?;
    match rec {
        Some(r) if Role::of(&r) != Role::Destination || r.peer != peer => Err(DE::NotYours {
            id: id.to_string(),
            peer: peer.to_string(),
        }
        .into()),
        r => Ok(r),
    }
}

/// `Peer.Commit`: the origin has turned its original into the stub; let the copy run.
/// Idempotent: a repeated Commit of a running copy succeeds.
pub async fn commit(node: &NodeRef, peer: &str, r: MigrationRef) -> Result<CommitReply, DestError> {
    let Some(mut rec) = own_record(node, peer, &r.migration_id)? else {
        return Err(DE::NoMigration(r.migration_id).into());
    };
    timeline::mark_of(Side::Destination, &r.migration_id, "commit received");
    if fault("dest-exit-at-commit") {
        tracing::error!(migration = %rec.migration_id, "FERRY_FAULT dest-exit-at-commit: exiting");
        std::process::exit(70);
    }
    match DestState::of(&rec) {
        Some(DestState::Done | DestState::Ended) => Ok(CommitReply {}),
        Some(DestState::Prepared | DestState::Committed) => {
            commit_local(node, &mut rec).map(|()| CommitReply {})
        }
        Some(DestState::Aborted) => Err(DE::WasAborted {
            id: rec.migration_id,
            detail: rec.detail,
        }
        .into()),
        Some(DestState::Lost) => Err(DE::WasLost {
            id: rec.migration_id,
            detail: rec.detail,
        }
        .into()),
        Some(DestState::Receiving) | None => Err(DE::NotPrepared {
            id: rec.migration_id,
            state: rec.state,
        }
        .into()),
    }
}

/// `Peer.Abort`: discard the copy (before Commit only). Aborting an unknown migration is a
/// success: there is nothing to discard.
pub async fn abort(node: &NodeRef, peer: &str, r: MigrationRef) -> Result<AbortReply, DestError> {
    let ahead = {
        let mut ahead = lock(&node.copies.ahead);
        match ahead.get(&r.migration_id) {
            Some(a) if a.peer == peer => ahead.remove(&r.migration_id),
            _ => None,
        }
    };
    if let Some(a) = ahead {
        end_live(Some(a.thread)).await;
    }
    let Some(mut rec) = own_record(node, peer, &r.migration_id)? else {
        let mut negotiated = lock(&node.copies.negotiated);
        if negotiated
            .get(&r.migration_id)
            .is_some_and(|n| n.peer == peer)
        {
            negotiated.remove(&r.migration_id);
        }
        return Ok(AbortReply {});
    };
    match DestState::of(&rec) {
        Some(DestState::Aborted) => Ok(AbortReply {}),
        Some(DestState::Receiving) => {
            lock(&node.copies.aborted).insert(rec.migration_id.clone());
            Ok(AbortReply {})
        }
        Some(DestState::Prepared) => {
            abort_local(node, &mut rec, "aborted by the origin").map(|()| AbortReply {})
        }
        _ => Err(DE::Running {
            id: rec.migration_id,
            state: rec.state,
        }
        .into()),
    }
}

/// The counter of pre-copied bytes taken in for migration `id`, negotiated by `peer` (a
/// counter nobody asks for when there is no such negotiation, or an origin before 1.2 sent
/// no id).
fn applied_count(node: &NodeRef, peer: &str, id: &str) -> Arc<AtomicU64> {
    lock(&node.copies.negotiated)
        .get(id)
        .filter(|n| n.peer == peer)
        .map(|n| n.applied.clone())
        .unwrap_or_default()
}

/// A live migration's pre-copied bytes taken in so far (`Peer.Applied`), for the peer that
/// negotiated it.
pub fn applied(node: &NodeRef, peer: &str, r: MigrationRef) -> Result<AppliedReply, DestError> {
    lock(&node.copies.negotiated)
        .get(&r.migration_id)
        .filter(|n| n.peer == peer)
        .map(|n| AppliedReply {
            raw_bytes: n.applied.load(Ordering::Acquire),
        })
        .ok_or_else(|| {
            DE::NotOfPeer {
                id: r.migration_id,
                peer: peer.to_string(),
            }
            .into()
        })
}

/// `Peer.Query`: this agent's record of a migration (either role), only when the caller is
/// the other side of it. Another peer's migration is answered as unknown, like one that does
/// not exist, so a caller cannot even learn which ids exist.
pub async fn query(
    node: &NodeRef,
    peer: &str,
    r: MigrationRef,
) -> Result<MigrationRecord, DestError> {
    let rec = node.store.get(&r.migration_id).map_err(store_err)?;
    rec.filter(|rec| rec.peer == peer).ok_or_else(|| {
        DE::NotOfPeer {
            id: r.migration_id,
            peer: peer.to_string(),
        }
        .into()
    })
}

/// Watches a prepared copy: if neither Commit nor Abort came after a while (the link or the
/// origin's agent failed at the commit point), asks the origin until its record decides.
pub(crate) fn watch(node: NodeRef, id: String) {
    tokio::spawn(async move {
        tokio::time::sleep(WATCH_AFTER).await;
        resolve_prepared(node, id).await;
    });
}

/// Asks the origin about a prepared copy until its answer decides: committed → run it,
/// aborted (or unknown there) → end it. Meanwhile the copy stays stopped.
pub(crate) async fn resolve_prepared(node: NodeRef, id: String) {
    let mut delay = Duration::from_secs(1);
    loop {
        let Ok(Some(mut rec)) = node.store.get(&id) else {
            return;
        };
        let state = DestState::of(&rec);
        if !matches!(state, Some(DestState::Prepared | DestState::Committed)) {
            return;
        }
        if state == Some(DestState::Committed) {
            let _ = commit_local(&node, &mut rec);
            return;
        }
        match ask(&node, &rec.peer, &id).await {
            Ok(Some(origin)) => match OriginState::of(&origin) {
                Some(OriginState::Committed | OriginState::Done | OriginState::Ended) => {
                    let _ = commit_local(&node, &mut rec);
                    return;
                }
                // `lost`: a lazy migration's origin that ended its original before Commit.
                Some(OriginState::Aborted | OriginState::Lost) => {
                    let _ = abort_local(
                        &node,
                        &mut rec,
                        &format!("the origin aborted: {}", origin.detail),
                    );
                    return;
                }
                _ => {
                    tracing::info!(migration = %id, origin = %origin.state, "copy held, origin undecided")
                }
            },
            Ok(None) => {
                let _ = abort_local(&node, &mut rec, "the origin has no record of it");
                return;
            }
            Err(e) => tracing::info!(migration = %id, error = %e, "origin unreachable, copy held"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn ask(node: &NodeRef, peer: &str, id: &str) -> Result<Option<MigrationRecord>, String> {
    let ch = node.peers.channel(peer).map_err(|e| chain(&e))?;
    let mut client = PeerClient::new(ch);
    match client
        .query(MigrationRef {
            migration_id: id.to_string(),
        })
        .await
    {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(crate::transport::status_detail(&s)),
    }
}

/// On start: resolve what this agent held as a destination.
pub(crate) async fn resolve_record(node: NodeRef, mut rec: MigrationRecord) {
    if super::lazy::resolve_dest(&node, &mut rec) {
        return;
    }
    match DestState::of(&rec) {
        // The half-built task died with us (PTRACE_O_EXITKILL).
        Some(DestState::Receiving) => {
            let _ = std::fs::remove_dir_all(shipped_dir(&rec.migration_id));
            let _ = node.store.set(
                &mut rec,
                DestState::Aborted,
                "the agent stopped while the image arrived; the half-built copy died with it",
            );
        }
        Some(DestState::Prepared) => {
            if let Some((pid, start_time)) = copy_of(&rec) {
                lock(&node.copies.held).insert(rec.migration_id.clone(), Held { pid, start_time });
            }
            resolve_prepared(node, rec.migration_id).await;
        }
        Some(DestState::Committed) => {
            let _ = commit_local(&node, &mut rec);
        }
        None => {
            tracing::warn!(migration = %rec.migration_id, state = %rec.state, "unknown state")
        }
        Some(_) => {}
    }
}
