//! The destination of a migration: local endpoints in place of the descriptors that stayed
//! on the origin ([`Endpoints`]), and the relay ([`relay`]): bytes to and from them, signals
//! delivered with `kill(2)`, the process reaped and its exit status sent back.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::v1::{
    ExitStatus, RelayCheckpoint, RelayEndpoint, RelayFrame, RelayPosition, relay_frame::What,
};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Status, Streaming};

use super::ledger::Ledger;
use super::pump::{EndBy, Io, Out, Pumps, Serve, Stop, frame, set_nonblocking};
use super::{Kind, RelayError};
use crate::node::Node;
use crate::sys;

/// One local endpoint: what the process gets, and ferryd's end of it.
#[derive(Debug)]
struct Local {
    channel: u32,
    kind: Kind,
    fds: Vec<i32>,
    /// The process's end, until it holds it.
    process: Option<OwnedFd>,
    /// ferryd's end: a pty master, the other end of a pipe, the other end of a loopback TCP
    /// connection; for a listener or UDP socket a duplicate of the process's socket. `None`
    /// once a pipe the process reads was closed (end of its input).
    ours: Option<OwnedFd>,
    /// UDP: proxy sockets standing for the origin's peers, by peer ("ip:port").
    proxies: Vec<(String, UdpSocket)>,
    /// A listener whose connections start with a PROXY protocol header.
    proxy_protocol: bool,
}

/// Local endpoints made for the relayed descriptors of a `TransferHeader`.
#[derive(Debug)]
pub struct Endpoints {
    locals: Vec<Local>,
}

fn loopback_like(addr: Option<&str>) -> IpAddr {
    match addr.and_then(|a| a.parse::<SocketAddr>().ok()) {
        Some(SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Where to reach a socket bound to `addr` on this host (an unspecified address → loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

impl Endpoints {
    /// Makes a local endpoint of the same kind for each relayed descriptor: a pty (the
    /// process gets the slave, raw: the origin's terminal does the line discipline) for a
    /// terminal, a pipe for stdio read or written, a loopback TCP connection for an
    /// established one, a listening socket on loopback for a listening one, a UDP socket
    /// (connected to a proxy standing for its peer, when it was connected).
    pub fn make(relays: &[RelayEndpoint]) -> Result<Endpoints, RelayError> {
        let mut locals = Vec::with_capacity(relays.len());
        for r in relays {
            let bad = |why: String| RelayError::BadEndpoint {
                channel: r.channel,
                why,
            };
            let kind = Kind::parse(&r.kind).ok_or_else(|| bad(format!("kind {:?}", r.kind)))?;
            if r.fds.is_empty() || r.fds.iter().any(|fd| *fd < 0) {
                return Err(bad(format!("descriptors {:?}", r.fds)));
            }
            let io = |what: &str| RelayError::io(format!("relay channel {}: {what}", r.channel));
            let ip = loopback_like(Some(&r.local));
            let mut proxies = Vec::new();
            let (process, ours): (OwnedFd, OwnedFd) = match kind {
                Kind::Tty => {
                    let ws = nix::pty::Winsize {
                        ws_row: u16::try_from(r.rows).unwrap_or(24),
                        ws_col: u16::try_from(r.cols).unwrap_or(80),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let pty =
                        nix::pty::openpty(Some(&ws), None).map_err(|e| io("openpty")(e.into()))?;
                    // Not for ferryd's other children.
                    for fd in [&pty.master, &pty.slave] {
                        nix::fcntl::fcntl(
                            fd,
                            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                        )
                        .map_err(|e| io("close-on-exec")(e.into()))?;
                    }
                    let mut t = nix::sys::termios::tcgetattr(&pty.slave)
                        .map_err(|e| io("tcgetattr")(e.into()))?;
                    nix::sys::termios::cfmakeraw(&mut t);
                    nix::sys::termios::tcsetattr(
                        &pty.slave,
                        nix::sys::termios::SetArg::TCSANOW,
                        &t,
                    )
                    .map_err(|e| io("tcsetattr")(e.into()))?;
                    (pty.slave, pty.master)
                }
                Kind::Read => {
                    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                        .map_err(|e| io("pipe")(e.into()))?;
                    (rd, wr)
                }
                Kind::Write => {
                    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                        .map_err(|e| io("pipe")(e.into()))?;
                    (wr, rd)
                }
                Kind::Tcp => {
                    let l = TcpListener::bind((ip, 0)).map_err(io("bind a loopback listener"))?;
                    let addr = l.local_addr().map_err(io("getsockname"))?;
                    let client = TcpStream::connect(addr).map_err(io("connect on loopback"))?;
                    let (server, _) = l.accept().map_err(io("accept on loopback"))?;
                    client.set_nodelay(true).ok();
                    server.set_nodelay(true).ok();
                    (OwnedFd::from(client), OwnedFd::from(server))
                }
                Kind::TcpListen => {
                    let l = TcpListener::bind((ip, 0)).map_err(io("bind a loopback listener"))?;
                    let fd = OwnedFd::from(l);
                    let ours = fd.try_clone().map_err(io("dup"))?;
                    (fd, ours)
                }
                Kind::Udp => {
                    let s = UdpSocket::bind((unspecified_like(ip), 0))
                        .map_err(io("bind a UDP socket"))?;
                    if let Ok(peer) = r.remote.parse::<SocketAddr>() {
                        let proxy = UdpSocket::bind((loopback_like(Some(&r.remote)), 0))
                            .map_err(io("bind a UDP proxy"))?;
                        s.connect(proxy.local_addr().map_err(io("getsockname"))?)
                            .map_err(io("connect the UDP socket to its proxy"))?;
                        proxies.push((peer.to_string(), proxy));
                    }
                    let fd = OwnedFd::from(s);
                    let ours = fd.try_clone().map_err(io("dup"))?;
                    (fd, ours)
                }
            };
            locals.push(Local {
                channel: r.channel,
                kind,
                fds: r.fds.clone(),
                process: Some(process),
                ours: Some(ours),
                proxies,
                proxy_protocol: kind == Kind::TcpListen && r.proxy_protocol,
            });
        }
        Ok(Endpoints { locals })
    }

    /// (descriptor number in the image, ferryd's descriptor to install there) for the restore
    /// (`restore::restore_with`).
    pub fn substitutes(&self) -> Vec<(i32, RawFd)> {
        self.locals
            .iter()
            .filter_map(|l| l.process.as_ref().map(|p| (l, p.as_raw_fd())))
            .flat_map(|(l, p)| l.fds.iter().map(move |fd| (*fd, p)))
            .collect()
    }

    /// The process holds its ends now: close ferryd's copies, so that the ends of its pipes
    /// and terminal are seen when it closes them.
    pub fn release_process_side(&mut self) {
        for l in &mut self.locals {
            l.process = None;
        }
    }

    /// Duplicates of ferryd's ends, for one relay stream (the originals stay, for the next
    /// stream if this one breaks).
    fn duplicate(&self) -> Endpoints {
        let locals = self
            .locals
            .iter()
            .map(|l| Local {
                channel: l.channel,
                kind: l.kind,
                fds: l.fds.clone(),
                process: None,
                ours: l.ours.as_ref().and_then(|o| o.try_clone().ok()),
                proxies: l
                    .proxies
                    .iter()
                    .filter_map(|(p, s)| Some((p.clone(), s.try_clone().ok()?)))
                    .collect(),
                proxy_protocol: l.proxy_protocol,
            })
            .collect();
        Endpoints { locals }
    }

    /// Duplicates of ferryd's ends of the byte streams (pipes, pty, TCP connections), for the
    /// client-away watch.
    fn served(&self) -> Vec<super::away::Served> {
        self.locals
            .iter()
            .filter(|l| matches!(l.kind, Kind::Tty | Kind::Read | Kind::Write | Kind::Tcp))
            .filter_map(|l| {
                Some(super::away::Served {
                    channel: l.channel,
                    kind: l.kind,
                    fds: l.fds.clone(),
                    ours: l.ours.as_ref()?.try_clone().ok()?,
                })
            })
            .collect()
    }

    /// The input of the process on `channel` ended: ferryd's kept end goes.
    fn close(&mut self, channel: u32) {
        for l in &mut self.locals {
            if l.channel == channel {
                l.ours = None;
            }
        }
    }
}

/// A copy held on the destination: its endpoints (ferryd's ends, kept across relay streams),
/// its exit status once its reaper saw it end, and the stop flag of the relay stream serving it.
#[derive(Debug)]
pub(super) struct HeldCopy {
    pid: i32,
    endpoints: Endpoints,
    exit: watch::Receiver<Option<ExitStatus>>,
    run: Option<(u64, Arc<Stop>)>,
    /// While no stream serves it: the client-away watch.
    away: Option<super::away::Watch>,
    /// What its streams sent and received per channel, in the origin's session.
    ledger: Arc<Ledger>,
    /// The frames of the stream serving it (for checkpoint notices).
    out: Option<mpsc::Sender<RelayFrame>>,
    /// The newest checkpoint notice (sent again to each new stream).
    checkpoint: Option<RelayCheckpoint>,
}

impl HeldCopy {
    /// Holds the copy `pid` and starts its reaper (a thread): the process is ferryd's child
    /// (or its PID namespace's init is), reaped when it ends whether or not a relay is open,
    /// its status kept for the relay.
    pub(super) fn new(pid: i32, endpoints: Endpoints) -> HeldCopy {
        Self::new_after(pid, endpoints, Vec::new())
    }

    /// [`HeldCopy::new`], its exit status kept back until each of `after` holds one.
    pub(super) fn new_after(
        pid: i32,
        endpoints: Endpoints,
        after: Vec<watch::Receiver<Option<ExitStatus>>>,
    ) -> HeldCopy {
        let (tx, rx) = watch::channel(None);
        let spawned = std::thread::Builder::new()
            .name(format!("reap-{pid}"))
            .spawn(move || {
                let st = reap(pid);
                for a in after {
                    // Until that member ended (or its watcher is gone).
                    while a.borrow().is_none() && a.has_changed().is_ok() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                tracing::info!(
                    pid,
                    code = st.code,
                    signal = st.signal,
                    "migrated process ended"
                );
                tx.send_replace(Some(st));
            });
        if let Err(e) = spawned {
            tracing::warn!(pid, %e, "cannot start the reaper of the migrated process");
        }
        HeldCopy {
            pid,
            endpoints,
            exit: rx,
            run: None,
            away: None,
            ledger: Ledger::new(0),
            out: None,
            checkpoint: None,
        }
    }

    /// Holds the copy `pid` of a member of a migrated tree (not ferryd's child: its restored
    /// parent's) and starts its watcher ([`watch_member`]). Its pidfd is opened here, while the
    /// copy is still held stopped, so that the kernel keeps its exit status for us.
    pub(super) fn new_member(pid: i32, endpoints: Endpoints) -> HeldCopy {
        let (tx, rx) = watch::channel(None);
        let pidfd = sys::pidfd_open(Pid::from_raw(pid));
        let spawned = std::thread::Builder::new()
            .name(format!("watch-{pid}"))
            .spawn(move || {
                let st = match pidfd {
                    Ok(fd) => watch_member(pid, &fd),
                    Err(e) => {
                        tracing::warn!(pid, %e, "no pidfd for the migrated member: its exit status will not be known");
                        lost_status()
                    }
                };
                tracing::info!(
                    pid,
                    code = st.code,
                    signal = st.signal,
                    "migrated member ended"
                );
                tx.send_replace(Some(st));
            });
        if let Err(e) = spawned {
            tracing::warn!(pid, %e, "cannot start the watcher of the migrated member");
        }
        HeldCopy {
            pid,
            endpoints,
            exit: rx,
            run: None,
            away: None,
            ledger: Ledger::new(0),
            out: None,
            checkpoint: None,
        }
    }

    /// The PID and endpoints (given up, for an abort).
    pub(super) fn into_parts(self) -> (i32, Endpoints) {
        (self.pid, self.endpoints)
    }
}

static RUNS: AtomicU64 = AtomicU64::new(1);

/// What one relay stream gets of a held copy.
struct Attached {
    run: u64,
    pid: i32,
    endpoints: Endpoints,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// The stream that served it before, to stop.
    previous: Option<Arc<Stop>>,
    /// The client-away watch that served it since, to end.
    away: Option<super::away::Watch>,
    /// The ledger of the origin's session.
    ledger: Arc<Ledger>,
    /// The origin's session is the one counted before: what it did not credit goes again.
    again: bool,
}

impl super::Registry {
    /// Destination: the exit status of the copy of migration `id`, held `Some` once its
    /// reaper saw it end (the receiver keeps it after the copy is forgotten here).
    pub fn dest_exit(&self, id: &str) -> Option<watch::Receiver<Option<ExitStatus>>> {
        self.lock().dests.get(id).map(|h| h.exit.clone())
    }

    /// A stream of the origin's relay `session` (0: the origin does not count) attaches to
    /// the copy of `id`. A session other than the one counted so far (the first stream, an
    /// origin agent that restarted, an origin that does not count) starts the counts anew,
    /// keeping only bytes that never went out.
    fn attach_dest(&self, id: &str, session: u64) -> Option<Attached> {
        let mut inner = self.lock();
        let held = inner.dests.get_mut(id)?;
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let again = session != 0 && held.ledger.session() == session;
        if !again {
            held.ledger = held.ledger.renewed(session);
        }
        Some(Attached {
            run,
            pid: held.pid,
            endpoints: held.endpoints.duplicate(),
            exit: held.exit.clone(),
            previous: held.run.take().map(|(_, f)| f),
            away: held.away.take(),
            ledger: held.ledger.clone(),
            again,
        })
    }

    /// Destination: whether the copy `pid` is frozen because its client is away.
    pub fn frozen_away(&self, pid: i32) -> bool {
        self.lock()
            .dests
            .values()
            .any(|h| h.pid == pid && h.away.as_ref().is_some_and(|w| w.frozen()))
    }

    /// Stream `run` serves the copy of `id` now; returns the newest checkpoint notice, which
    /// it sends first.
    fn set_run(
        &self,
        id: &str,
        run: u64,
        stop: Arc<Stop>,
        out: mpsc::Sender<RelayFrame>,
    ) -> Option<RelayCheckpoint> {
        let mut inner = self.lock();
        let h = inner.dests.get_mut(id)?;
        h.run = Some((run, stop));
        h.out = Some(out);
        h.checkpoint.clone()
    }

    /// Destination: where the relayed streams of the copy of `id` stand; call it with the copy
    /// frozen. Per channel, in the relay session (returned first): the bytes of its input the
    /// process consumed (written into its pipe, less what the pipe still holds) and of its
    /// output it produced (read from its pipe, plus what the pipe holds). Also the endpoints
    /// (kind, descriptors) a restore makes again. Pipes and terminals (the input queued in
    /// the terminal's input queue, the output on its master) can be carried; a socket is
    /// refused by name.
    pub fn dest_positions(
        &self,
        id: &str,
    ) -> Result<(u64, Vec<RelayPosition>, Vec<RelayEndpoint>), String> {
        let inner = self.lock();
        let h = inner
            .dests
            .get(id)
            .ok_or_else(|| format!("no relay of migration {id} is held here"))?;
        let mut positions = Vec::new();
        let mut ends = Vec::new();
        for l in &h.endpoints.locals {
            // Bytes queued in the process's own end (a pipe's, or a terminal's input).
            let theirs = || -> Result<u64, String> {
                use std::os::unix::fs::OpenOptionsExt as _;
                let fd = l.fds.first().copied().unwrap_or(0);
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                    .open(format!("/proc/{}/fd/{fd}", h.pid))
                    .map_err(|e| format!("fd {fd} of pid {}: {e}", h.pid))?;
                sys::fionread(f.as_fd())
                    .map(|n| n as u64)
                    .map_err(|e| format!("FIONREAD on fd {fd} of pid {}: {e}", h.pid))
            };
            // Bytes queued in ferryd's end (its pipe, or a terminal's output on the master).
            let ours = || -> Result<u64, String> {
                match &l.ours {
                    Some(o) => sys::fionread(o.as_fd())
                        .map(|n| n as u64)
                        .map_err(|e| format!("FIONREAD on fd {:?}: {e}", l.fds)),
                    None => theirs(),
                }
            };
            let (consumed, produced) = match l.kind {
                Kind::Read => h
                    .ledger
                    .with_delivered(l.channel, |d| ours().map(|q| (d.saturating_sub(q), 0)))?,
                Kind::Write => (0, h.ledger.sent(l.channel) + ours()?),
                Kind::Tty => {
                    let consumed = h
                        .ledger
                        .with_delivered(l.channel, |d| theirs().map(|q| d.saturating_sub(q)))?;
                    (consumed, h.ledger.sent(l.channel) + ours()?)
                }
                k => {
                    return Err(format!(
                        "fd {:?} is relayed as {}: a failover cannot carry it yet (only pipes and terminals)",
                        l.fds,
                        k.as_str()
                    ));
                }
            };
            positions.push(RelayPosition {
                channel: l.channel,
                consumed,
                produced,
            });
            ends.push(RelayEndpoint {
                channel: l.channel,
                kind: l.kind.as_str().to_string(),
                fds: l.fds.clone(),
                ..Default::default()
            });
        }
        Ok((h.ledger.session(), positions, ends))
    }

    /// Destination: a checkpoint of the copy of `id` was kept: its origin hears it (now if a
    /// stream serves the copy, else first on the next one).
    pub fn dest_checkpointed(&self, id: &str, c: RelayCheckpoint) {
        let mut inner = self.lock();
        let Some(h) = inner.dests.get_mut(id) else {
            return;
        };
        h.checkpoint = Some(c.clone());
        if let Some(out) = &h.out {
            let _ = out.try_send(frame(0, What::Checkpoint(c)));
        }
    }

    /// Destination: the migration whose copy is `pid` here.
    pub fn dest_of_pid(&self, pid: i32) -> Option<String> {
        self.lock()
            .dests
            .iter()
            .find(|(_, h)| h.pid == pid)
            .map(|(id, _)| id.clone())
    }

    fn close_dest_channel(&self, id: &str, channel: u32) {
        if let Some(h) = self.lock().dests.get_mut(id) {
            h.endpoints.close(channel);
        }
    }

    /// The relay stream `run` ended: forget the copy if its exit status went out on it (the
    /// origin closed its side after it).
    fn end_run(&self, id: &str, run: u64, finished: bool) {
        let mut inner = self.lock();
        let ours = inner
            .dests
            .get(id)
            .is_some_and(|h| h.run.as_ref().is_some_and(|(r, _)| *r == run));
        if ours {
            if finished {
                inner.dests.remove(id);
            } else if let Some(h) = inner.dests.get_mut(id) {
                h.run = None;
                h.out = None;
                if h.exit.borrow().is_none() && h.away.is_none() {
                    // The stream broke with the copy running: its client is away.
                    let (registry, id2) = (self.clone(), id.to_string());
                    h.away = Some(super::away::Watch::start(
                        h.pid,
                        h.endpoints.served(),
                        super::away::give_up(),
                        Some(super::away::checkpoint_path(id)),
                        move || registry.give_up_dest(&id2),
                    ));
                }
            }
        }
    }

    /// The client of the copy of `id` stayed away too long: ferryd's ends of its relayed
    /// descriptors close (the copy runs on without them) and a relay for it is refused.
    fn give_up_dest(&self, id: &str) {
        let gone = self.lock().dests.remove(id);
        if let Some(h) = gone {
            tracing::warn!(migration = %id, pid = h.pid, "gave up waiting for the client");
        }
    }
}

/// `Peer.Relay` on the destination: the first frame names the migration whose copy
/// [`super::Registry::hold_dest`] keeps. Bytes go to and from the local endpoints, signals
/// are delivered with `kill(2)`, and once the process ended (it is ferryd's child: reaped
/// here) its exit status is the last frame.
pub async fn relay(
    node: &Node,
    peer: &str,
    mut inbound: Streaming<RelayFrame>,
) -> Result<Frames, Status> {
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty relay stream"))?;
    let id = first.migration_id;
    // Only the migration's origin may attach to its relay.
    match node.store.get(super::migration_of(&id)) {
        Ok(Some(rec)) if rec.role == "destination" && rec.peer == peer => {}
        _ => {
            return Err(Status::not_found(format!(
                "no relay for migration {id} of {peer}"
            )));
        }
    }
    let mut a = node
        .relays
        .attach_dest(&id, first.session)
        .ok_or_else(|| Status::not_found(format!("no relay for migration {id}")))?;
    let away = match a.away.take() {
        Some(w) => tokio::task::spawn_blocking(move || w.finish())
            .await
            .unwrap_or_default(),
        None => super::away::Outcome::default(),
    };
    if let Some(prev) = &a.previous {
        // The stream before this one broke (the origin's agent restarted, say): its threads
        // stop before ours read the same descriptors.
        prev.stop();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!(migration = %id, peer, pid = a.pid, again = a.previous.is_some(), resumed = a.again, "relay started");
    if let Some(why) = &away.frozen {
        tracing::info!(migration = %id, pid = a.pid, %why, "the client is back: the copy resumes");
    }
    Ok(run_attached(node.relays.clone(), id, a, away, inbound))
}

/// Runs the destination relay of process `pid` (ferryd's child, reaped here) with `endpoints`
/// over `inbound` (the frames from the origin); the frames for the origin come out of the
/// returned stream.
pub fn run<S>(pid: i32, endpoints: Endpoints, inbound: S) -> Frames
where
    S: tokio_stream::Stream<Item = Result<RelayFrame, Status>> + Send + Unpin + 'static,
{
    let registry = super::Registry::default();
    registry.hold_dest("local", pid, endpoints);
    let Some(a) = registry.attach_dest("local", 0) else {
        // Just held: always there.
        let (_tx, rx) = mpsc::channel(1);
        return Frames { rx, done: None };
    };
    run_attached(
        registry,
        "local".into(),
        a,
        super::away::Outcome::default(),
        inbound,
    )
}

fn run_attached<S>(
    registry: super::Registry,
    id: String,
    a: Attached,
    away: super::away::Outcome,
    mut inbound: S,
) -> Frames
where
    S: tokio_stream::Stream<Item = Result<RelayFrame, Status>> + Send + Unpin + 'static,
{
    let Attached {
        run,
        pid,
        endpoints,
        mut exit,
        previous: _,
        away: _,
        ledger,
        again,
    } = a;
    let (out_tx, out_rx) = mpsc::channel::<RelayFrame>(256);
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let session = ledger.session();
    if session != 0 {
        // The hello: we count in the origin's session (our data frames carry offsets), and
        // its frames' offsets are read.
        let mut hello = frame(0, What::Eof(false));
        hello.what = None;
        hello.session = session;
        let _ = out_tx.try_send(hello);
    }
    let super::away::Outcome {
        pending,
        frozen,
        checkpoint,
    } = away;
    // What the copy wrote while no stream was open goes out after what went before it.
    for (ch, bytes) in pending {
        ledger.chan(ch).out().hold(&bytes);
    }
    let notices = out_tx.clone();
    let pumps = Pumps::with_ledger(out_tx, ledger, again);
    if session != 0 {
        pumps.offsets_in();
    }
    if let Some(c) = registry.set_run(&id, run, pumps.stopper(), notices.clone()) {
        let _ = notices.try_send(frame(0, What::Checkpoint(c)));
    }
    let dest = Arc::new(Dest::begin(&pumps, pid, endpoints));
    if frozen.is_some() {
        // What it wrote while its client was away goes first (the readers send it before
        // anything they read): now it may go on.
        if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGCONT) {
            tracing::warn!(pid, %e, "cannot continue the copy frozen while its client was away");
        }
    }
    if let Some(p) = checkpoint {
        // It runs again: the checkpoint of its frozen state is stale.
        super::away::remove_checkpoint(&p);
    }

    tokio::spawn(async move {
        let mut exit_sent = false;
        let mut finished = false;
        loop {
            tokio::select! {
                f = tokio_stream::StreamExt::next(&mut inbound) => match f {
                    Some(Ok(f)) => {
                        if matches!(f.what, Some(What::Eof(_))) && dest.reads.contains(&f.channel) {
                            // The end of the process's input: ferryd's kept end goes too.
                            registry.close_dest_channel(&id, f.channel);
                        }
                        dest.deliver(f);
                    }
                    None => {
                        finished = exit_sent;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(pid, error = %e, "relay stream from the origin broke");
                        break;
                    }
                },
                st = exit.wait_for(Option::is_some), if !exit_sent => {
                    exit_sent = true;
                    let status = st.ok().and_then(|s| *s).unwrap_or_default();
                    let pumps = pumps.clone();
                    // Whatever it wrote before it ended goes first.
                    tokio::task::spawn_blocking(move || {
                        pumps.wait_drained(Duration::from_secs(3));
                        pumps.send(frame(0, What::Exit(status)));
                        pumps.stop_now();
                    });
                }
            }
        }
        // This stream is over: its threads stop. The copy stays held for another stream from
        // the origin, unless its exit status went out and the origin closed its side.
        pumps.stop_now();
        registry.end_run(&id, run, finished);
        drop(done_tx);
    });
    Frames {
        rx: out_rx,
        done: Some(done_rx),
    }
}

/// The frames of a destination relay for its origin: what the pumps send, until the relay
/// ended (then what was queued, and the end).
#[derive(Debug)]
pub struct Frames {
    rx: mpsc::Receiver<RelayFrame>,
    done: Option<oneshot::Receiver<()>>,
}

impl tokio_stream::Stream for Frames {
    type Item = Result<RelayFrame, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(f)) => return Poll::Ready(Some(Ok(f))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        let ended = match self.done.as_mut() {
            Some(d) => std::pin::Pin::new(d).poll(cx).is_ready(),
            None => true,
        };
        if ended {
            self.done = None;
            // What was queued before the end still goes.
            return match self.rx.try_recv() {
                Ok(f) => Poll::Ready(Some(Ok(f))),
                Err(_) => Poll::Ready(None),
            };
        }
        Poll::Pending
    }
}

/// Waits for `pid` to end. It is our child, or, when it was restored in a new PID
/// namespace, the namespace's init is, which ends with the same status.
fn reap(pid: i32) -> ExitStatus {
    // Our child, or the init of the namespace made for it.
    let ppid = crate::proc::read(pid, "stat")
        .ok()
        .and_then(|s| crate::proc::parse_stat(&s).ok())
        .map(|s| s.ppid);
    let mut target = match ppid {
        Some(p) if p > 1 && p != std::process::id() as i32 => Pid::from_raw(p),
        _ => Pid::from_raw(pid),
    };
    loop {
        match sys::wait_exit(target) {
            // The init of a PID namespace made for the copy reports its death by a signal
            // as 128 + the signal (an init cannot die by its own signal).
            Ok(WaitStatus::Exited(_, code))
                if target.as_raw() != pid && (129..129 + 64).contains(&code) =>
            {
                return ExitStatus {
                    code: 0,
                    signal: code - 128,
                    core_dumped: false,
                };
            }
            Ok(WaitStatus::Exited(_, code)) => {
                return ExitStatus {
                    code,
                    signal: 0,
                    core_dumped: false,
                };
            }
            Ok(WaitStatus::Signaled(_, sig, core)) => {
                return ExitStatus {
                    code: 0,
                    signal: sig as i32,
                    core_dumped: core,
                };
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) if target.as_raw() == pid => {
                let ppid = crate::proc::read(pid, "stat")
                    .ok()
                    .and_then(|s| crate::proc::parse_stat(&s).ok())
                    .map(|s| s.ppid);
                match ppid {
                    Some(p) if p > 1 => target = Pid::from_raw(p),
                    _ => break,
                }
            }
            Err(e) => {
                tracing::warn!(pid, %e, "cannot wait for the migrated process");
                break;
            }
        }
    }
    // Not ours to wait for: watch it go.
    while Pid::from_raw(pid).as_raw() > 0 && kill(Pid::from_raw(pid), None).is_ok() {
        std::thread::sleep(Duration::from_millis(100));
    }
    ExitStatus {
        code: 0,
        signal: 0,
        core_dumped: false,
    }
}

/// The status a stub exits with when its process's is not known ([`super::LOST_EXIT_CODE`]).
fn lost_status() -> ExitStatus {
    ExitStatus {
        code: super::LOST_EXIT_CODE,
        signal: 0,
        core_dumped: false,
    }
}

/// An exit status from a wait status (`waitpid`'s form).
fn from_wait_status(ws: i32) -> ExitStatus {
    if libc::WIFSIGNALED(ws) {
        ExitStatus {
            code: 0,
            signal: libc::WTERMSIG(ws),
            core_dumped: libc::WCOREDUMP(ws),
        }
    } else {
        ExitStatus {
            code: libc::WEXITSTATUS(ws),
            signal: 0,
            core_dumped: false,
        }
    }
}

/// Waits for the end of `pid`, a member of a migrated tree whose parent is another member
/// (only its parent may `wait` for it, and nothing of ferryd's may stay in it: no tracer),
/// through `pidfd`, opened before it could end, and gives its exit status. The pidfd polls
/// readable once the member has exited; then its status is the kernel's `PIDFD_INFO_EXIT`
/// if its parent reaped it already, or else, while it is a zombie, its `/proc/PID/stat`
/// `exit_code` (read between two looks through the pidfd, so that the PID cannot have passed
/// to another process meanwhile). Unknown (the stub then says so by exiting with 255) only on
/// kernels older than 6.15 when the parent reaps it before it is looked at.
pub fn watch_member(pid: i32, pidfd: &OwnedFd) -> ExitStatus {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(pid, %e, "watch: cannot poll the migrated member's pidfd");
                return lost_status();
            }
        }
    }
    let reaped = || sys::pidfd_exit_status(pidfd.as_fd());
    let zombie = || {
        crate::proc::read(pid, "stat")
            .ok()
            .and_then(|s| crate::proc::parse_stat(&s).ok())
            .filter(|s| s.state == 'Z' || s.state == 'X')
            .map(|s| s.exit_code)
    };
    let first = reaped();
    if let Ok(Some(ws)) = first {
        return from_wait_status(ws);
    }
    let seen = zombie();
    match (reaped(), seen) {
        (Ok(Some(ws)), _) => from_wait_status(ws),
        // Not reaped after the read: the PID was still the member's.
        (Ok(None), Some(ws)) => from_wait_status(ws),
        (r, _) => {
            tracing::warn!(pid, first = ?first, then = ?r, "watch: the migrated member's exit status is not known");
            lost_status()
        }
    }
}

struct Dest {
    pid: i32,
    pumps: Arc<Pumps>,
    /// Channels of pipes the process reads.
    reads: HashSet<u32>,
    /// Terminal channel → its master (window size).
    ttys: HashMap<u32, OwnedFd>,
    /// Listener channel → where to connect, and whether with a PROXY protocol header.
    listeners: HashMap<u32, (SocketAddr, bool)>,
    /// UDP channel → the process's socket address and the proxies by peer.
    udp: HashMap<u32, Arc<Udp>>,
}

struct Udp {
    channel: u32,
    target: SocketAddr,
    proxies: Mutex<HashMap<String, UdpSocket>>,
}

impl Dest {
    /// Serves `endpoints` (what the ledger of `pumps` kept of each channel goes first).
    fn begin(pumps: &Arc<Pumps>, pid: i32, endpoints: Endpoints) -> Dest {
        let mut d = Dest {
            pid,
            pumps: pumps.clone(),
            reads: HashSet::new(),
            ttys: HashMap::new(),
            listeners: HashMap::new(),
            udp: HashMap::new(),
        };
        for l in endpoints.locals {
            let ch = l.channel;
            if l.kind == Kind::Read {
                d.reads.insert(ch);
            }
            let Some(ours) = l.ours else { continue };
            // ferryd's own ends (pipes, the pty master): non-blocking, served by tasks.
            if matches!(l.kind, Kind::Tty | Kind::Read | Kind::Write)
                && let Err(e) = set_nonblocking(ours.as_fd())
            {
                tracing::warn!(channel = ch, %e, "relay: cannot make an endpoint non-blocking");
                continue;
            }
            let serve = |fd, io, read, write, end| Serve {
                fd,
                io,
                read,
                write,
                end,
                drain: read,
                prefix: Vec::new(),
                connecting: false,
            };
            match l.kind {
                Kind::Tty => {
                    if let Ok(m) = ours.try_clone() {
                        d.ttys.insert(ch, m);
                    }
                    pumps.serve(ch, serve(ours, Io::Own, true, true, EndBy::Nothing));
                }
                Kind::Read => pumps.serve(ch, serve(ours, Io::Own, false, true, EndBy::Closing)),
                Kind::Write => pumps.serve(ch, serve(ours, Io::Own, true, false, EndBy::Nothing)),
                Kind::Tcp => pumps.serve(ch, serve(ours, Io::Socket, true, true, EndBy::Shutdown)),
                Kind::TcpListen => {
                    if let Ok(a) = TcpListener::from(ours).local_addr() {
                        d.listeners.insert(ch, (reachable(a), l.proxy_protocol));
                    }
                }
                Kind::Udp => {
                    let Ok(a) = UdpSocket::from(ours).local_addr() else {
                        continue;
                    };
                    let u = Arc::new(Udp {
                        channel: ch,
                        target: reachable(a),
                        proxies: Mutex::new(HashMap::new()),
                    });
                    for (peer, proxy) in l.proxies {
                        u.start_proxy(pumps, peer, proxy);
                    }
                    let (u2, p2) = (u.clone(), pumps.clone());
                    pumps.udp_writer(ch, move |peer, data| u2.send(&p2, peer, data));
                    d.udp.insert(ch, u);
                }
            }
        }
        d
    }

    fn deliver(&self, mut f: RelayFrame) {
        let ch = f.channel;
        let at = self.pumps.offset_of(f.offset);
        let Some(what) = f.what.take() else { return };
        match what {
            What::Data(d) => {
                self.pumps.deliver(ch, Out::Data(at, d));
            }
            What::Eof(_) => {
                self.pumps.deliver(ch, Out::Eof);
            }
            What::Close(_) => {
                self.pumps.deliver(ch, Out::Close);
            }
            What::Datagram(d) => {
                self.pumps.deliver(ch, Out::Datagram(d.peer, d.data));
            }
            What::Signal(n) => match Signal::try_from(n) {
                Ok(sig) => {
                    if let Err(e) = kill(Pid::from_raw(self.pid), sig) {
                        tracing::debug!(pid = self.pid, %e, "relay kill");
                    }
                }
                Err(_) => tracing::debug!(
                    signal = n,
                    "relay: a signal without a name is not delivered"
                ),
            },
            What::Winsize(w) => {
                if let Some(m) = self.ttys.get(&ch) {
                    let rows = u16::try_from(w.rows).unwrap_or(u16::MAX);
                    let cols = u16::try_from(w.cols).unwrap_or(u16::MAX);
                    let same = sys::window_size(m.as_fd()).is_ok_and(|now| now == (rows, cols));
                    if !same && sys::set_window_size(m.as_fd(), rows, cols).is_ok() {
                        // The pty is not the process's controlling terminal: tell it (as a
                        // terminal does, only when the size changed).
                        let _ = kill(Pid::from_raw(self.pid), Signal::SIGWINCH);
                    }
                }
            }
            What::Accepted(new) => {
                let Some(&(addr, proxy)) = self.listeners.get(&ch) else {
                    return;
                };
                let prefix = if proxy {
                    proxy_header(&f.client, &f.server)
                } else {
                    Vec::new()
                };
                self.pumps.connect_to(new, addr, prefix);
            }
            What::Credit(n) => self.pumps.credit(ch, n),
            What::Exit(_) | What::Checkpoint(_) => {}
        }
    }
}

impl Udp {
    fn start_proxy(self: &Arc<Self>, pumps: &Arc<Pumps>, peer: String, proxy: UdpSocket) {
        if let Ok(r) = proxy.try_clone() {
            let name = peer.clone();
            pumps.udp_reader(self.channel, r, move |_| Some(name.clone()));
        }
        self.proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, proxy);
    }

    /// A datagram from `peer` on the origin: sent to the process from the proxy standing for
    /// that peer (made on first use).
    fn send(self: &Arc<Self>, pumps: &Arc<Pumps>, peer: &str, data: &[u8]) {
        let existing = self
            .proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .and_then(|p| p.try_clone().ok());
        let proxy = match existing {
            Some(p) => p,
            None => {
                let Ok(p) = UdpSocket::bind((loopback_like(Some(&self.target.to_string())), 0))
                else {
                    return;
                };
                let Ok(c) = p.try_clone() else { return };
                self.start_proxy(pumps, peer.to_string(), p);
                c
            }
        };
        let _ = proxy.send_to(data, self.target);
    }
}

/// The PROXY protocol (v1) header naming a relayed connection's client (`client`) and the
/// address it reached on the origin (`server`), both "ip:port"; `PROXY UNKNOWN` when they
/// are missing or of different families.
pub fn proxy_header(client: &str, server: &str) -> Vec<u8> {
    let (Ok(c), Ok(s)) = (client.parse::<SocketAddr>(), server.parse::<SocketAddr>()) else {
        return b"PROXY UNKNOWN\r\n".to_vec();
    };
    let unmapped = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    };
    let (c, s) = (unmapped(c), unmapped(s));
    let family = match (c.ip(), s.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => "TCP4",
        (IpAddr::V6(_), IpAddr::V6(_)) => "TCP6",
        _ => return b"PROXY UNKNOWN\r\n".to_vec(),
    };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        c.ip(),
        s.ip(),
        c.port(),
        s.port()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::proxy_header;

    #[test]
    fn proxy_headers_name_both_ends() {
        assert_eq!(
            proxy_header("10.77.0.3:40000", "10.77.0.1:6379"),
            b"PROXY TCP4 10.77.0.3 10.77.0.1 40000 6379\r\n"
        );
        assert_eq!(
            proxy_header("[::ffff:10.0.0.2]:5", "[::ffff:10.0.0.1]:80"),
            b"PROXY TCP4 10.0.0.2 10.0.0.1 5 80\r\n"
        );
        assert_eq!(
            proxy_header("[fe80::1]:5", "[::1]:80"),
            b"PROXY TCP6 fe80::1 ::1 5 80\r\n"
        );
        assert_eq!(proxy_header("", "10.0.0.1:80"), b"PROXY UNKNOWN\r\n");
        assert_eq!(proxy_header("[::1]:5", "10.0.0.1:80"), b"PROXY UNKNOWN\r\n");
    }
}
