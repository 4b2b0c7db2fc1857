//! Moving bytes between descriptors and relay frames, the same on both hosts.
//!
//! Sockets, and ferryd's own ends on the destination (pipes, the pty master), are served by
//! one tokio task per channel, woken by epoll readiness (`AsyncFd`): no polling interval.
//! Sockets are read and written with `MSG_DONTWAIT`, so their descriptions keep their flags
//! (the origin's are shared with the stub). Descriptors whose flags are the user's and that
//! have no per-call non-blocking mode (the origin's terminal, the shell's pipes and files) get
//! a thread per direction doing blocking I/O, waiting in `poll` on the descriptor and a stop
//! eventfd (no timeout).
//!
//! Flow control: per channel, a sender keeps at most [`WINDOW`] bytes in flight; the
//! receiving side sends `credit` frames as it writes bytes out (every [`CREDIT_STEP`]). A slow
//! reader on one host so stops the reader of the same channel on the other host, nothing else;
//! the queue of each channel's writer holds at most a window. The frame queue to the stream
//! is bounded; the dispatcher of incoming frames never waits for it (a credit it must send
//! when the queue is full goes from a task of its own), so two hosts sending to each other
//! cannot wait on each other.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc as smpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_proto::v1::{Datagram, RelayFrame, relay_frame::What};

use super::ledger::{ChanLedger, Ledger, Resend};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{MsgFlags, Shutdown, shutdown};
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, mpsc, watch};

/// Bytes a sender may have in flight per channel, not yet written out by the receiver.
pub const WINDOW: i64 = 256 * 1024;
/// The receiver credits its writes in steps of this many bytes.
const CREDIT_STEP: u64 = 64 * 1024;
/// Bytes per read (one read makes one frame: whatever is queued in the descriptor, up to this).
const CHUNK: usize = 64 * 1024;
/// A read of more than this hands its buffer over instead of copying it.
const HAND_OVER: usize = 16 * 1024;
/// Datagrams queued per UDP channel before new ones are dropped.
const DATAGRAMS: usize = 1024;

/// A frame on `channel`.
pub fn frame(channel: u32, what: What) -> RelayFrame {
    RelayFrame {
        migration_id: String::new(),
        channel,
        what: Some(what),
        client: String::new(),
        server: String::new(),
        offset: 0,
        session: 0,
    }
}

/// A `data` frame on `channel` whose first byte is at `offset` of the channel's stream.
pub fn data_frame(channel: u32, offset: u64, data: Vec<u8>) -> RelayFrame {
    let mut f = frame(channel, What::Data(data));
    f.offset = offset;
    f
}

/// What a channel's writer does.
#[derive(Debug)]
pub enum Out {
    /// Write these bytes, which start at this offset of the channel's stream (`None`: the
    /// peer sends no offsets).
    Data(Option<u64>, Vec<u8>),
    /// No more bytes will come: shut the socket's write side, or close the pipe end.
    Eof,
    /// Close the channel entirely.
    Close,
    /// Send a datagram (UDP channels; the peer as the origin knows it).
    Datagram(String, Vec<u8>),
}

/// How a writer ends a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndBy {
    /// `shutdown(SHUT_WR)` (a socket).
    Shutdown,
    /// Closing our descriptor (a pipe's write end).
    Closing,
    /// Nothing (a terminal or file: the description stays).
    Nothing,
}

/// How a descriptor served by a task is read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// A socket: `recv`/`send` with `MSG_DONTWAIT` (its flags stay as they are).
    Socket,
    /// A descriptor of ferryd's own made non-blocking (a pipe end, a pty master).
    Own,
}

/// The end of a relay: a watch for tasks and an eventfd for threads.
#[derive(Debug)]
pub struct Stop {
    flag: AtomicBool,
    tx: watch::Sender<bool>,
    efd: Option<EventFd>,
}

impl Stop {
    fn new() -> Stop {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| tracing::warn!(%e, "relay: eventfd"))
            .ok();
        Stop {
            flag: AtomicBool::new(false),
            tx: watch::channel(false).0,
            efd,
        }
    }

    /// Ends every task and thread of the relay.
    pub fn stop(&self) {
        if !self.flag.swap(true, Ordering::SeqCst) {
            self.tx.send_replace(true);
            if let Some(e) = &self.efd {
                let _ = e.write(1);
            }
        }
    }

    /// Whether [`Stop::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Returns once stopped.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Waits in `poll` until `fd` has `flags` (true) or the relay stopped (false).
    fn poll(&self, fd: BorrowedFd<'_>, flags: PollFlags) -> Result<bool, Errno> {
        loop {
            if self.is_stopped() {
                return Ok(false);
            }
            let mut fds = vec![PollFd::new(fd, flags)];
            if let Some(e) = &self.efd {
                fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {
                    if self.is_stopped() {
                        return Ok(false);
                    }
                    if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                        return Ok(true);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The bytes a sender may still put in flight on one channel.
#[derive(Debug)]
struct Window {
    avail: AtomicI64,
    notify: Notify,
}

impl Window {
    /// A window with `kept` bytes in flight already (sent again from the ledger).
    fn new(kept: usize) -> Arc<Window> {
        Arc::new(Window {
            avail: AtomicI64::new(WINDOW - i64::try_from(kept).unwrap_or(WINDOW)),
            notify: Notify::new(),
        })
    }

    fn credit(&self, n: u64) {
        self.avail
            .fetch_add(i64::try_from(n).unwrap_or(WINDOW), Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn take(&self, n: usize) {
        crate::metrics::relay_bytes(true, n);
        self.avail.fetch_sub(n as i64, Ordering::SeqCst);
    }

    /// Returns once there is room.
    async fn room(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.avail.load(Ordering::SeqCst) > 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Where the frames of one channel go on this host.
#[derive(Debug)]
enum Sink {
    /// A byte stream's writer thread.
    Bytes(mpsc::UnboundedSender<Out>),
    /// A byte stream served by a task ([`Feed`]).
    Feed(Arc<Feed>),
    /// A UDP channel's sender (bounded: datagrams beyond it are dropped).
    Datagrams(mpsc::Sender<Out>),
}

/// The writing side of a channel served by a task, shared with the dispatcher of incoming
/// frames: while nothing is queued and the task is not writing, the dispatcher writes bytes
/// to the descriptor itself (without blocking), so that a frame costs no wake-up of the
/// task; what does not go at once is queued for the task, which waits for the descriptor.
#[derive(Debug, Default)]
struct Feed {
    state: Mutex<FeedState>,
    notify: Notify,
    /// What was written out of the channel (across streams).
    ledger: Arc<ChanLedger>,
}

#[derive(Debug, Default)]
struct FeedState {
    q: VecDeque<Out>,
    /// The task took items of `q` and is writing them: the dispatcher queues behind them.
    busy: bool,
    /// The descriptor, once the task serves it and until its writing direction ended.
    direct: Option<(Arc<AsyncFd<OwnedFd>>, Io)>,
    /// No more input (the relay is finishing): the task ends after what is queued.
    closed: bool,
    /// Bytes written out and not yet credited to the remote.
    unreported: u64,
}

impl Feed {
    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }
}

/// One channel: its writer's queue and its reader's window.
#[derive(Debug, Default)]
struct Chan {
    sink: Option<Sink>,
    window: Option<Arc<Window>>,
}

/// The tasks and threads of one relay and the way out of them.
#[derive(Debug)]
pub struct Pumps {
    out: mpsc::Sender<RelayFrame>,
    stop: Arc<Stop>,
    rt: tokio::runtime::Handle,
    chans: Mutex<HashMap<u32, Chan>>,
    /// What was sent and received per channel, across streams.
    ledger: Arc<Ledger>,
    /// Kept bytes go again on this stream (the peer counts in this session); otherwise what
    /// went out before is dropped.
    again: bool,
    /// The peer's `data` frames carry offsets (its hello named the session).
    offsets_in: AtomicBool,
    /// Writers that have not finished (for [`Pumps::finish`]).
    writers: watch::Sender<usize>,
    /// Held by readers of the process's output until they reach its end.
    drain: Mutex<Option<smpsc::Sender<()>>>,
    drained: Mutex<Option<smpsc::Receiver<()>>>,
}

/// Counts a writer until dropped.
struct WriterGuard(Arc<Pumps>);

impl WriterGuard {
    fn new(p: &Arc<Pumps>) -> WriterGuard {
        p.writers.send_modify(|n| *n += 1);
        WriterGuard(p.clone())
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.0.writers.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Writes all of `data` (at offset `at` of the channel's stream) to a blocking (or
/// non-blocking) descriptor from a thread, skipping what `ledger` says was written already.
fn write_all_blocking(
    fd: BorrowedFd<'_>,
    ledger: &ChanLedger,
    mut at: Option<u64>,
    mut data: &[u8],
    stop: &Stop,
) -> Result<(), Errno> {
    while !data.is_empty() {
        let r = ledger.inc().put(at, data, |d| {
            nix::unistd::write(fd, d).map_err(std::io::Error::from)
        });
        match r.map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))) {
            Ok(n) => {
                data = &data[n..];
                at = at.map(|a| a + n as u64);
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                if !stop.poll(fd, PollFlags::POLLOUT)? {
                    return Err(Errno::ECANCELED);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes a descriptor of ferryd's own non-blocking.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let fl = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).map(drop)
}

/// One read without blocking.
fn read_now(fd: &OwnedFd, io: Io, buf: &mut [u8]) -> std::io::Result<usize> {
    let r = match io {
        Io::Socket => nix::sys::socket::recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT),
        Io::Own => nix::unistd::read(fd.as_fd(), buf),
    };
    r.map_err(std::io::Error::from)
}

/// One write without blocking.
fn write_now(fd: &OwnedFd, io: Io, buf: &[u8]) -> std::io::Result<usize> {
    let r = match io {
        Io::Socket => nix::sys::socket::send(
            fd.as_raw_fd(),
            buf,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ),
        Io::Own => nix::unistd::write(fd.as_fd(), buf),
    };
    r.map_err(std::io::Error::from)
}

async fn read_async(fd: &AsyncFd<OwnedFd>, io: Io, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match read_now(fd.get_ref(), io, buf) {
            Ok(n) => {
                // A short read emptied the queue: wait for epoll next time rather than
                // asking again only to hear EAGAIN (an event since the wait keeps it ready).
                if n < buf.len() {
                    guard.clear_ready();
                }
                return Ok(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => guard.clear_ready(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

async fn write_all_async(fd: &AsyncFd<OwnedFd>, io: Io, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        // Try first: a socket with room takes it without a trip through epoll.
        match write_now(fd.get_ref(), io, data) {
            Ok(n) => {
                data = &data[n..];
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return Err(e),
            Err(_) => {}
        }
        let mut guard = fd.writable().await?;
        match guard.try_io(|f| write_now(f.get_ref(), io, data)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

/// [`write_all_async`] of the bytes at offset `at` of a channel's stream, skipping what
/// `ledger` says was written already (each write counted there as it happens, so that a
/// writer stopped between two writes leaves the count right).
async fn write_counted(
    fd: &AsyncFd<OwnedFd>,
    io: Io,
    ledger: &ChanLedger,
    mut at: Option<u64>,
    mut data: &[u8],
) -> std::io::Result<()> {
    let mut wait = false;
    while !data.is_empty() {
        let r = if wait {
            let mut guard = fd.writable().await?;
            match guard.try_io(|f| {
                ledger
                    .inc()
                    .put(at, data, |d| write_now(f.get_ref(), io, d))
            }) {
                Ok(r) => r,
                Err(_would_block) => continue,
            }
        } else {
            // Try first: a socket with room takes it without a trip through epoll.
            ledger
                .inc()
                .put(at, data, |d| write_now(fd.get_ref(), io, d))
        };
        match r {
            Ok(n) => {
                data = &data[n..];
                at = at.map(|a| a + n as u64);
                wait = false;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait = true,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the writer of a task works with.
struct Writing<'a> {
    channel: u32,
    fd: &'a Arc<AsyncFd<OwnedFd>>,
    io: Io,
    end: EndBy,
    feed: &'a Feed,
    reader_done: &'a Notify,
}

/// An `Eof` or `Close` for a task's writer (or `Data` it drops): (its direction ended, its
/// descriptor is not to be written any more).
fn end_write(
    channel: u32,
    fd: &AsyncFd<OwnedFd>,
    end: EndBy,
    out: Out,
    dropped: &mut u64,
    ledger: &ChanLedger,
) -> (bool, bool) {
    // An end sent again after a relay stream broke is acted on once.
    let first = matches!(out, Out::Eof | Out::Close) && ledger.inc().end();
    match out {
        Out::Data(_, d) => {
            *dropped += d.len() as u64;
            (false, false)
        }
        Out::Eof => match end {
            EndBy::Shutdown => {
                if first {
                    let _ = shutdown(fd.get_ref().as_raw_fd(), Shutdown::Write);
                }
                (true, false)
            }
            // The descriptor closes when the task ends (nothing reads it).
            EndBy::Closing => (true, true),
            EndBy::Nothing => (false, false),
        },
        Out::Close => {
            if end == EndBy::Shutdown && first {
                let _ = shutdown(fd.get_ref().as_raw_fd(), Shutdown::Both);
            }
            (true, true)
        }
        Out::Datagram(..) => {
            tracing::debug!(channel, "relay: a datagram on a byte stream");
            (false, false)
        }
    }
}

/// What a channel served by a task does.
pub struct Serve {
    /// The descriptor.
    pub fd: OwnedFd,
    /// How it is read and written.
    pub io: Io,
    /// Read it and send its bytes (false: only written).
    pub read: bool,
    /// Write what arrives for the channel into it (false: only read).
    pub write: bool,
    /// How the writer ends the stream.
    pub end: EndBy,
    /// The reader carries the process's output: the end of the relay waits for it.
    pub drain: bool,
    /// Bytes written before anything that arrives (a PROXY protocol header).
    pub prefix: Vec<u8>,
    /// A non-blocking `connect` is under way: the channel is closed if it fails.
    pub connecting: bool,
}

/// Starts a non-blocking connection to `addr` (`TCP_NODELAY`): the socket, and whether the
/// connection is still under way.
fn start_connect(addr: SocketAddr) -> Result<(OwnedFd, bool), Errno> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, connect, setsockopt, socket, sockopt,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => Ok((fd, false)),
        Err(Errno::EINPROGRESS) => Ok((fd, true)),
        Err(e) => Err(e),
    }
}

impl Pumps {
    /// Pumps whose frames go to `out` (call from within the runtime), counting in `ledger` (kept across the streams of a
    /// relay). `again`: the peer counts in this session, so the bytes kept unacknowledged
    /// go again first; otherwise they are dropped (only those that never went out go).
    pub fn with_ledger(
        out: mpsc::Sender<RelayFrame>,
        ledger: Arc<Ledger>,
        again: bool,
    ) -> Arc<Self> {
        let (tx, rx) = smpsc::channel();
        Arc::new(Self {
            out,
            stop: Arc::new(Stop::new()),
            rt: tokio::runtime::Handle::current(),
            chans: Mutex::new(HashMap::new()),
            ledger,
            again,
            offsets_in: AtomicBool::new(false),
            writers: watch::channel(0).0,
            drain: Mutex::new(Some(tx)),
            drained: Mutex::new(Some(rx)),
        })
    }

    fn chans(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Chan>> {
        self.chans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What ends every task and thread.
    pub fn stopper(&self) -> Arc<Stop> {
        self.stop.clone()
    }

    /// Sends a frame from a thread (blocking while the stream is full).
    pub fn send(&self, f: RelayFrame) -> bool {
        self.out.blocking_send(f).is_ok()
    }

    /// Sends a frame from async code.
    pub async fn send_async(&self, f: RelayFrame) -> bool {
        self.out.send(f).await.is_ok()
    }

    /// Sends a frame without waiting: when the queue is full, a task of its own waits.
    fn send_soon(&self, f: RelayFrame) {
        match self.out.try_send(f) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(f)) => {
                let out = self.out.clone();
                self.rt.spawn(async move { out.send(f).await });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Registers the writer's queue of `channel`.
    fn sink(&self, channel: u32) -> mpsc::UnboundedReceiver<Out> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.chans().entry(channel).or_default().sink = Some(Sink::Bytes(tx));
        rx
    }

    /// Registers the reader's window of `channel`, with `kept` bytes in flight already.
    fn window(&self, channel: u32, kept: usize) -> Arc<Window> {
        let w = Window::new(kept);
        self.chans().entry(channel).or_default().window = Some(w.clone());
        w
    }

    /// The peer's `data` frames carry offsets from now on (its hello named our session).
    pub fn offsets_in(&self) {
        self.offsets_in.store(true, Ordering::SeqCst);
    }

    /// The offset of a `data` frame from the peer (its `offset`), if it sends them.
    pub fn offset_of(&self, offset: u64) -> Option<u64> {
        self.offsets_in.load(Ordering::SeqCst).then_some(offset)
    }

    /// What a reader of `channel` sends first on this stream.
    fn resend(&self, channel: u32) -> Resend {
        self.ledger.chan(channel).out().resend(self.again, CHUNK)
    }

    /// Sends what [`Pumps::resend`] gave, from async code; false when the stream is gone.
    async fn send_resend(&self, channel: u32, r: Resend) -> bool {
        for (at, d) in r.frames {
            if !self.send_async(data_frame(channel, at, d)).await {
                return false;
            }
        }
        true
    }

    /// Bytes read from `channel`'s descriptor: counted and kept until acknowledged.
    fn read_frame(&self, ledger: &ChanLedger, channel: u32, data: Vec<u8>) -> RelayFrame {
        let at = ledger.out().record(&data);
        data_frame(channel, at, data)
    }

    /// The end of what `channel`'s reader sends (`close`: a reset), kept to be sent again.
    fn end_frame(&self, ledger: &ChanLedger, channel: u32, close: bool) -> RelayFrame {
        ledger.out().end(close);
        frame(
            channel,
            if close {
                What::Close(true)
            } else {
                What::Eof(true)
            },
        )
    }

    /// Forgets `channel`: frames that come for it later are dropped (and credited).
    fn forget(&self, channel: u32) {
        self.chans().remove(&channel);
    }

    /// The remote wrote out `n` more bytes of `channel`: they are not kept any more.
    pub fn credit(&self, channel: u32, n: u64) {
        if self.stop.is_stopped() {
            // A frame of a stream that was replaced: the new one counts.
            return;
        }
        self.ledger.chan(channel).out().ack(n);
        if let Some(w) = self.chans().get(&channel).and_then(|c| c.window.clone()) {
            w.credit(n);
        }
    }

    /// Hands `out` to the writer of `channel`; false when there is none (any more). Bytes
    /// for no writer are credited back at once: the remote's reader must not wait for them.
    /// Never waits.
    pub fn deliver(&self, channel: u32, out: Out) -> bool {
        if self.stop.is_stopped() {
            // A frame of a stream that was replaced: it comes again on the new one.
            return false;
        }
        if let Out::Data(_, d) = &out {
            crate::metrics::relay_bytes(false, d.len());
        }
        let rejected = {
            let mut chans = self.chans();
            match chans.get_mut(&channel).and_then(|c| c.sink.as_ref()) {
                Some(Sink::Bytes(tx)) => match tx.send(out) {
                    Ok(()) => None,
                    Err(mpsc::error::SendError(out)) => {
                        if let Some(c) = chans.get_mut(&channel) {
                            c.sink = None;
                        }
                        Some(out)
                    }
                },
                Some(Sink::Feed(feed)) => {
                    let feed = feed.clone();
                    drop(chans);
                    self.feed(channel, &feed, out)
                }
                Some(Sink::Datagrams(tx)) => {
                    // A full queue drops the datagram, as a socket buffer would.
                    let _ = tx.try_send(out);
                    None
                }
                None => Some(out),
            }
        };
        match rejected {
            None => true,
            Some(out) => {
                tracing::debug!(channel, "relay: no writer for the channel (any more)");
                if let Out::Data(_, d) = out {
                    self.send_soon(frame(channel, What::Credit(d.len() as u64)));
                }
                false
            }
        }
    }

    /// Hands `out` to a task's writer: bytes written at once when nothing is queued before
    /// them, the rest queued for the task. Gives `out` back when the writer takes no more.
    fn feed(&self, channel: u32, feed: &Feed, out: Out) -> Option<Out> {
        let mut st = feed.lock();
        if st.closed {
            return Some(out);
        }
        let out = match out {
            Out::Data(at, d) if !st.busy && st.q.is_empty() => match &st.direct {
                Some((fd, io)) => match feed
                    .ledger
                    .inc()
                    .put(at, &d, |b| write_now(fd.get_ref(), *io, b))
                {
                    Ok(n) => {
                        st.unreported += n as u64;
                        if n == d.len() {
                            if st.unreported >= CREDIT_STEP {
                                let n = std::mem::take(&mut st.unreported);
                                drop(st);
                                self.send_soon(frame(channel, What::Credit(n)));
                            }
                            return None;
                        }
                        let mut d = d;
                        d.drain(..n);
                        Out::Data(at.map(|a| a + n as u64), d)
                    }
                    // Would block, or failed: the task waits, or meets the error itself.
                    Err(_) => Out::Data(at, d),
                },
                None => Out::Data(at, d),
            },
            o => o,
        };
        st.q.push_back(out);
        drop(st);
        feed.notify.notify_one();
        None
    }

    fn drain_token(&self, drain: bool) -> Option<smpsc::Sender<()>> {
        drain
            .then(|| self.drain.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .flatten()
    }

    /// Serves a descriptor whose flags are not ours to change with threads: reads it until
    /// its end and sends its bytes as `Data` frames on `channel`, then `Eof`. With `drain`,
    /// the end of the relay waits (a while) for this reader: it carries the process's output.
    pub fn thread_reader(self: &Arc<Self>, channel: u32, fd: OwnedFd, drain: bool) {
        let me = self.clone();
        let token = self.drain_token(drain);
        let resend = self.resend(channel);
        let window = self.window(channel, resend.kept);
        std::thread::spawn(move || {
            let _token = token;
            let ledger = me.ledger.chan(channel);
            let end = resend.end;
            let resent = resend
                .frames
                .into_iter()
                .all(|(at, d)| me.send(data_frame(channel, at, d)));
            match end {
                _ if !resent => {}
                // Its end went out before: again, and nothing more is read.
                Some(close) => {
                    me.send(me.end_frame(&ledger, channel, close));
                }
                None => me.thread_read_loop(channel, &fd, &window, &ledger),
            }
        });
    }

    fn thread_read_loop(&self, channel: u32, fd: &OwnedFd, window: &Window, ledger: &ChanLedger) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            if window.avail.load(Ordering::SeqCst) <= 0 {
                let stop = self.stop.clone();
                self.rt.block_on(async {
                    tokio::select! {
                        () = window.room() => {}
                        () = stop.wait() => {}
                    }
                });
            }
            match self.stop.poll(fd.as_fd(), PollFlags::POLLIN) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::debug!(channel, %e, "relay poll");
                    break;
                }
            }
            match nix::unistd::read(fd.as_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    window.take(n);
                    let f = self.read_frame(ledger, channel, buf[..n].to_vec());
                    if !self.send(f) {
                        return;
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                // A pty master whose slave is closed everywhere: the end.
                Err(Errno::EIO) => break,
                Err(Errno::ECONNRESET) => {
                    self.send(self.end_frame(ledger, channel, true));
                    return;
                }
                Err(e) => {
                    tracing::debug!(channel, %e, "relay read");
                    break;
                }
            }
        }
        self.send(self.end_frame(ledger, channel, false));
    }

    /// Writes what arrives for `channel` into `fd` from a thread (a descriptor whose flags
    /// are not ours: blocking writes; a non-blocking one waits in `poll`).
    pub fn thread_writer(self: &Arc<Self>, channel: u32, fd: OwnedFd, end: EndBy) {
        let mut rx = self.sink(channel);
        let me = self.clone();
        let guard = WriterGuard::new(self);
        let ledger = self.ledger.chan(channel);
        std::thread::spawn(move || {
            let _guard = guard;
            let mut fd = Some(fd);
            let mut unreported = 0u64;
            while let Some(out) = rx.blocking_recv() {
                let Some(f) = fd.as_ref() else {
                    if let Out::Data(_, d) = out {
                        unreported += d.len() as u64;
                    }
                    continue;
                };
                if matches!(out, Out::Eof | Out::Close) && !ledger.inc().end() {
                    // Acted on before this stream.
                    continue;
                }
                match out {
                    Out::Data(at, d) => {
                        match write_all_blocking(f.as_fd(), &ledger, at, &d, &me.stop) {
                            Ok(()) => {}
                            // Its stream stopped: what is left of the frame comes again on
                            // the next one, which counts from the ledger (no credit here).
                            Err(Errno::ECANCELED) => return,
                            Err(e) => {
                                tracing::debug!(channel, %e, "relay write");
                                fd = None;
                            }
                        }
                        unreported += d.len() as u64;
                    }
                    Out::Eof => match end {
                        EndBy::Shutdown => {
                            let _ = shutdown(f.as_raw_fd(), Shutdown::Write);
                        }
                        EndBy::Closing => fd = None,
                        EndBy::Nothing => {}
                    },
                    Out::Close => {
                        if end == EndBy::Shutdown {
                            let _ = shutdown(f.as_raw_fd(), Shutdown::Both);
                        }
                        fd = None;
                    }
                    Out::Datagram(..) => {}
                }
                if unreported >= CREDIT_STEP || (unreported > 0 && rx.is_empty()) {
                    if !me.send(frame(channel, What::Credit(unreported))) {
                        return;
                    }
                    unreported = 0;
                }
            }
        });
    }

    /// Registers the writing side of a channel served by a task.
    fn feed_of(&self, channel: u32) -> Arc<Feed> {
        let f = Arc::new(Feed {
            ledger: self.ledger.chan(channel),
            ..Feed::default()
        });
        self.chans().entry(channel).or_default().sink = Some(Sink::Feed(f.clone()));
        f
    }

    /// Serves `s` on `channel` with a task: the reader sends what it reads (then `Eof`, or
    /// `Close` on a reset), the writer writes what arrives (then ends the stream as `s.end`
    /// says). Once both directions ended the channel is forgotten and the descriptor closes.
    pub fn serve(self: &Arc<Self>, channel: u32, s: Serve) {
        let feed = s.write.then(|| self.feed_of(channel));
        let resend = s.read.then(|| self.resend(channel));
        let window = resend.as_ref().map(|r| self.window(channel, r.kept));
        self.spawn_serve(channel, s, feed, window.zip(resend));
    }

    fn spawn_serve(
        self: &Arc<Self>,
        channel: u32,
        s: Serve,
        feed: Option<Arc<Feed>>,
        window: Option<(Arc<Window>, Resend)>,
    ) {
        let me = self.clone();
        let token = self.drain_token(s.drain && s.read);
        let guard = feed.as_ref().map(|_| WriterGuard::new(self));
        self.rt.spawn(async move {
            let _token = token;
            let ended = me.run_serve(channel, s, feed.clone(), window, guard).await;
            if let Some(f) = feed {
                f.lock().direct = None;
            }
            me.forget(channel);
            if ended && !me.stop.is_stopped() {
                // Ended both ways, its ends sent (not cut off by a stream that went away):
                // nothing to send again once the peer acknowledged it all.
                me.ledger.forget_if_acked(channel);
            }
        });
    }

    async fn run_serve(
        self: &Arc<Self>,
        channel: u32,
        s: Serve,
        feed: Option<Arc<Feed>>,
        window: Option<(Arc<Window>, Resend)>,
        guard: Option<WriterGuard>,
    ) -> bool {
        let io = s.io;
        let fd = match crate::sys::async_fd(s.fd) {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                tracing::warn!(channel, %e, "relay: cannot watch a descriptor; closing the channel");
                return self.send_async(frame(channel, What::Close(true))).await;
            }
        };
        if s.connecting {
            let connected = async {
                let _ = fd.writable().await?;
                match nix::sys::socket::getsockopt(
                    fd.get_ref(),
                    nix::sys::socket::sockopt::SocketError,
                )? {
                    0 => Ok(()),
                    e => Err(std::io::Error::from_raw_os_error(e)),
                }
            };
            let r: std::io::Result<()> = tokio::select! {
                r = connected => r,
                () = self.stop.wait() => return false,
            };
            if let Err(e) = r {
                tracing::debug!(channel, %e, "relay: connect to the process's listener");
                return self.send_async(frame(channel, What::Close(true))).await;
            }
        }
        let reader_done = Notify::new();
        let reading = async {
            let mut ended = true;
            if let Some((w, resend)) = window {
                // What went out unacknowledged before (or was read while no stream was open)
                // goes first; a direction that had ended ends again.
                let ledger = self.ledger.chan(channel);
                let end = resend.end;
                ended = self.send_resend(channel, resend).await
                    && match end {
                        Some(close) => {
                            self.send_async(self.end_frame(&ledger, channel, close))
                                .await
                        }
                        None => self.read_loop(channel, &fd, io, &w, &ledger).await,
                    };
            }
            reader_done.notify_one();
            ended
        };
        let writing = async {
            let mut ended = true;
            if let Some(feed) = &feed {
                let w = Writing {
                    channel,
                    fd: &fd,
                    io,
                    end: s.end,
                    feed,
                    reader_done: &reader_done,
                };
                ended = self.write_loop(w, &s.prefix, s.read).await;
            }
            drop(guard);
            ended
        };
        tokio::select! {
            (r, w) = async { tokio::join!(reading, writing) } => r && w,
            () = self.stop.wait() => false,
        }
    }

    async fn read_loop(
        &self,
        channel: u32,
        fd: &AsyncFd<OwnedFd>,
        io: Io,
        window: &Window,
        ledger: &ChanLedger,
    ) -> bool {
        let mut buf = vec![0u8; CHUNK];
        loop {
            window.room().await;
            match read_async(fd, io, &mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    window.take(n);
                    let data = if n > HAND_OVER {
                        let mut b = std::mem::replace(&mut buf, vec![0u8; CHUNK]);
                        b.truncate(n);
                        b
                    } else {
                        buf[..n].to_vec()
                    };
                    let f = self.read_frame(ledger, channel, data);
                    if !self.send_async(f).await {
                        return false;
                    }
                }
                // A pty master whose slave is closed everywhere: the end.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return self.send_async(self.end_frame(ledger, channel, true)).await;
                }
                Err(e) => {
                    tracing::debug!(channel, %e, "relay read");
                    break;
                }
            }
        }
        self.send_async(self.end_frame(ledger, channel, false))
            .await
    }

    /// The writer of a task: writes what the dispatcher queued (several `Data` at once as one
    /// write), and lets the dispatcher write directly while nothing waits. Once its direction
    /// ended (the end written, a close, a failed write) it drops what still comes, crediting
    /// it, until the reader is done too.
    async fn write_loop(&self, w: Writing<'_>, prefix: &[u8], has_reader: bool) -> bool {
        let Writing {
            channel,
            fd,
            io,
            end,
            feed,
            reader_done,
        } = w;
        let mut ended = false;
        let mut closed = false;
        if !prefix.is_empty()
            && let Err(e) = write_all_async(fd, io, prefix).await
        {
            tracing::debug!(channel, %e, "relay write");
            ended = true;
            closed = true;
        }
        if !closed {
            feed.lock().direct = Some((fd.clone(), io));
        }
        let mut reader_finished = !has_reader;
        let mut batch: Vec<u8> = Vec::new();
        loop {
            let items = {
                let mut st = feed.lock();
                if st.q.is_empty() {
                    st.busy = false;
                    if st.closed || (ended && reader_finished) {
                        None
                    } else {
                        Some(VecDeque::new())
                    }
                } else {
                    st.busy = true;
                    Some(std::mem::take(&mut st.q))
                }
            };
            let Some(mut items) = items else { break };
            if items.is_empty() {
                if ended {
                    tokio::select! {
                        () = feed.notify.notified() => {}
                        () = reader_done.notified() => reader_finished = true,
                    }
                } else {
                    feed.notify.notified().await;
                }
                continue;
            }
            let mut written = 0u64;
            while let Some(out) = items.pop_front() {
                match out {
                    Out::Data(_, d) if closed => written += d.len() as u64,
                    Out::Data(at, d) => {
                        // Whatever else is queued for the channel (and follows it) goes in
                        // the same write.
                        let mut n = d.len();
                        let mut batched = false;
                        let follows = |i: Option<&Out>, n: usize| match i {
                            Some(Out::Data(next, _)) => *next == at.map(|a| a + n as u64),
                            _ => false,
                        };
                        while n < CHUNK && follows(items.front(), n) {
                            if let Some(Out::Data(_, m)) = items.pop_front() {
                                if !batched {
                                    batch.clear();
                                    batch.extend_from_slice(&d);
                                    batched = true;
                                }
                                n += m.len();
                                batch.extend_from_slice(&m);
                            }
                        }
                        let data: &[u8] = if batched { &batch } else { &d };
                        if let Err(e) = write_counted(fd, io, &feed.ledger, at, data).await {
                            tracing::debug!(channel, %e, "relay write");
                            closed = true;
                            ended = true;
                        }
                        written += n as u64;
                    }
                    o => {
                        let (e, c) = end_write(channel, fd, end, o, &mut written, &feed.ledger);
                        ended |= e;
                        closed |= c;
                    }
                }
            }
            let credit = {
                let mut st = feed.lock();
                if ended {
                    // Nothing more is written directly.
                    st.direct = None;
                }
                st.unreported += written;
                if st.unreported >= CREDIT_STEP || (st.unreported > 0 && ended) {
                    std::mem::take(&mut st.unreported)
                } else {
                    0
                }
            };
            if credit > 0 && !self.send_async(frame(channel, What::Credit(credit))).await {
                return false;
            }
        }
        true
    }

    /// A relayed TCP connection made after the start: one accepted on the origin (its
    /// `announce` frame, `accepted` on the listener's channel, goes out after its writer is
    /// registered and before its reader starts: what the remote sends for the channel has a
    /// writer, and no byte goes out before the announcement), or one made to the process's
    /// listener on the destination (`announce` None: the caller registered nothing before).
    /// Returns false when the relay is ending (nothing was started).
    pub async fn connection(
        self: &Arc<Self>,
        channel: u32,
        fd: OwnedFd,
        announce: Option<RelayFrame>,
        prefix: Vec<u8>,
    ) -> bool {
        self.ledger.fresh_chan(channel);
        let feed = self.feed_of(channel);
        let window = (self.window(channel, 0), Resend::default());
        if let Some(f) = announce
            && !self.send_async(f).await
        {
            self.forget(channel);
            return false;
        }
        let s = Serve {
            fd,
            io: Io::Socket,
            read: true,
            write: true,
            end: EndBy::Shutdown,
            drain: false,
            prefix,
            connecting: false,
        };
        self.spawn_serve(channel, s, Some(feed), Some(window));
        true
    }

    /// Destination: a connection announced by the origin, to be made to `addr` (the
    /// process's listener). Its writer's queue exists from now on (bytes that arrive before
    /// the connection is made wait in it); a connection that cannot be made closes the
    /// channel. Never waits.
    pub fn connect_to(self: &Arc<Self>, channel: u32, addr: SocketAddr, prefix: Vec<u8>) {
        self.ledger.fresh_chan(channel);
        let feed = self.feed_of(channel);
        let window = (self.window(channel, 0), Resend::default());
        match start_connect(addr) {
            Ok((fd, connecting)) => {
                let s = Serve {
                    fd,
                    io: Io::Socket,
                    read: true,
                    write: true,
                    end: EndBy::Shutdown,
                    drain: false,
                    prefix,
                    connecting,
                };
                self.spawn_serve(channel, s, Some(feed), Some(window));
            }
            Err(e) => {
                tracing::debug!(%e, "relay: connect to the process's listener");
                self.forget(channel);
                self.send_soon(frame(channel, What::Close(true)));
            }
        }
    }

    /// A UDP socket: datagrams it receives go out as `Datagram` frames with their sender
    /// (mapped through `name`, e.g. a proxy socket → the peer it stands for). A thread: the
    /// origin's socket keeps its flags.
    pub fn udp_reader(
        self: &Arc<Self>,
        channel: u32,
        sock: UdpSocket,
        name: impl Fn(SocketAddr) -> Option<String> + Send + 'static,
    ) {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match me.stop.poll(sock.as_fd(), PollFlags::POLLIN) {
                    Ok(true) => {}
                    _ => return,
                }
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let Some(peer) = name(from) else { continue };
                        let d = Datagram {
                            peer,
                            data: buf[..n].to_vec(),
                        };
                        if !me.send(frame(channel, What::Datagram(d))) {
                            return;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) => {}
                    // An ICMP error from an earlier send: not the socket's end.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => {
                        tracing::debug!(channel, %e, "relay recv_from");
                        return;
                    }
                }
            }
        });
    }

    /// Registers `f` as the writer of a UDP channel: it gets each `Datagram` that arrives
    /// (a thread; at most [`DATAGRAMS`] wait, newer ones are dropped).
    pub fn udp_writer(
        self: &Arc<Self>,
        channel: u32,
        mut f: impl FnMut(&str, &[u8]) + Send + 'static,
    ) {
        let (tx, mut rx) = mpsc::channel::<Out>(DATAGRAMS);
        self.chans().entry(channel).or_default().sink = Some(Sink::Datagrams(tx));
        let guard = WriterGuard::new(self);
        std::thread::spawn(move || {
            let _guard = guard;
            while let Some(out) = rx.blocking_recv() {
                if let Out::Datagram(peer, data) = out {
                    f(&peer, &data);
                }
            }
        });
    }

    /// Waits (up to `limit`) until every draining reader reached the end of its descriptor.
    pub fn wait_drained(&self, limit: Duration) {
        self.drain.lock().unwrap_or_else(|e| e.into_inner()).take();
        let rx = self
            .drained
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = rx {
            let deadline = Instant::now() + limit;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(()) => continue,
                    Err(smpsc::RecvTimeoutError::Disconnected) => return,
                    Err(smpsc::RecvTimeoutError::Timeout) => {
                        tracing::debug!("relay: output readers did not finish in time");
                        return;
                    }
                }
            }
        }
    }

    /// Lets every writer finish what it was given (up to `limit`), then stops every task
    /// and thread.
    pub async fn finish(&self, limit: Duration) {
        for c in self.chans().values_mut() {
            if let Some(Sink::Feed(f)) = c.sink.take() {
                f.close();
            }
        }
        let mut rx = self.writers.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
        self.stop_now();
    }

    /// Stops every task and thread now (the writers' queues go: their threads end).
    pub fn stop_now(&self) {
        self.stop.stop();
        self.chans().clear();
    }
}

impl Drop for Pumps {
    fn drop(&mut self) {
        self.stop_now();
    }
}
