//! Moving bytes between descriptors and relay frames, the same on both hosts.
//!
//! Every descriptor is served by plain threads doing blocking I/O with `poll` (200 ms) in
//! between, so that they notice the end of the relay. None of them changes the descriptor's
//! status flags: on the origin the descriptions are the user's (a terminal, a pipe of the
//! shell), shared with the stub and maybe other processes. A description that happens to be
//! non-blocking is served the same way (`EAGAIN` waits for `poll`).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as smpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_proto::v1::{Datagram, RelayFrame, relay_frame::What};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::socket::{Shutdown, shutdown};
use tokio::sync::mpsc;

/// How long a poll waits before looking at the stop flag again.
const TICK: u16 = 200;
/// Bytes per read.
const CHUNK: usize = 64 * 1024;

/// A frame on `channel`.
pub fn frame(channel: u32, what: What) -> RelayFrame {
    RelayFrame {
        migration_id: String::new(),
        channel,
        what: Some(what),
    }
}

/// What a channel's writer does.
#[derive(Debug)]
pub enum Out {
    /// Write these bytes.
    Data(Vec<u8>),
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

/// The threads of one relay and the way out of them.
#[derive(Debug)]
pub struct Pumps {
    out: mpsc::Sender<RelayFrame>,
    stop: Arc<AtomicBool>,
    sinks: Mutex<HashMap<u32, smpsc::Sender<Out>>>,
    writers: Mutex<Vec<JoinHandle<()>>>,
    /// Connections ([`Pumps::connection`]): channel → how many of its two halves (reader,
    /// writer) still run. When none does, the channel is forgotten: its writer thread ends
    /// and the last descriptor closes.
    halves: Mutex<HashMap<u32, u8>>,
    /// Held by readers of the process's output until they reach its end.
    drain: Mutex<Option<smpsc::Sender<()>>>,
    drained: Mutex<Option<smpsc::Receiver<()>>>,
}

fn wait_ready(fd: BorrowedFd<'_>, flags: PollFlags, stop: &AtomicBool) -> Result<bool, Errno> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let mut fds = [PollFd::new(fd, flags)];
        match poll(&mut fds, TICK) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `data`, waiting with `poll` when the description is non-blocking.
pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8], stop: &AtomicBool) -> Result<(), Errno> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                if !wait_ready(fd, PollFlags::POLLOUT, stop)? {
                    return Err(Errno::ECANCELED);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Pumps {
    /// Pumps whose frames go to `out`.
    pub fn new(out: mpsc::Sender<RelayFrame>) -> Arc<Self> {
        let (tx, rx) = smpsc::channel();
        Arc::new(Self {
            out,
            stop: Arc::new(AtomicBool::new(false)),
            sinks: Mutex::new(HashMap::new()),
            writers: Mutex::new(Vec::new()),
            halves: Mutex::new(HashMap::new()),
            drain: Mutex::new(Some(tx)),
            drained: Mutex::new(Some(rx)),
        })
    }

    /// The flag that ends every thread.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
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

    /// Hands `out` to the writer of `channel`; false when there is none (any more).
    pub fn deliver(&self, channel: u32, out: Out) -> bool {
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        let done = sinks.get(&channel).is_some_and(|s| s.send(out).is_ok());
        if !done {
            tracing::debug!(channel, "relay: no writer for the channel (any more)");
        }
        done
    }

    /// Reads `fd` until its end and sends its bytes as `Data` frames on `channel`, then
    /// `Eof`. With `drain`, the end of the relay waits (a while) for this reader to finish:
    /// it carries the process's output.
    pub fn reader(self: &Arc<Self>, channel: u32, fd: OwnedFd, drain: bool) {
        let me = self.clone();
        let token = drain
            .then(|| me.drain.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .flatten();
        std::thread::spawn(move || {
            let _token = token;
            me.read_loop(channel, fd);
            me.half_done(channel);
        });
    }

    /// The body of a reader thread.
    fn read_loop(&self, channel: u32, fd: OwnedFd) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match wait_ready(fd.as_fd(), PollFlags::POLLIN, &self.stop) {
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
                    if !self.send(frame(channel, What::Data(buf[..n].to_vec()))) {
                        return;
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                // A pty master whose slave is closed everywhere: the end.
                Err(Errno::EIO) => break,
                Err(Errno::ECONNRESET) => {
                    self.send(frame(channel, What::Close(true)));
                    return;
                }
                Err(e) => {
                    tracing::debug!(channel, %e, "relay read");
                    break;
                }
            }
        }
        self.send(frame(channel, What::Eof(true)));
    }

    /// Writes what arrives for `channel` into `fd`.
    pub fn writer(self: &Arc<Self>, channel: u32, fd: OwnedFd, end: EndBy) {
        let (tx, rx) = smpsc::channel::<Out>();
        self.sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel, tx);
        let stop = self.stop.clone();
        let me = Arc::downgrade(self);
        let handle = std::thread::spawn(move || write_loop(channel, fd, end, rx, &stop, &me));
        self.keep_writer(handle);
    }

    /// A relayed TCP connection made after the start (one accepted on the origin, or made
    /// to the process's listener on the destination): its writer is registered before
    /// `announce` runs (it sends the `Accepted` frame, on the origin), so that no byte the
    /// remote sends for the channel can arrive before its writer; its reader starts after,
    /// so that no byte goes out on the channel before its announcement. Once both directions
    /// ended (the reader saw the end or a reset, the writer wrote the end, a close or failed),
    /// the channel is forgotten: both threads end and both descriptors close. Returns
    /// `announce`'s answer (false: the relay is ending, nothing was started). A connection
    /// that cannot be served (no descriptor left to duplicate it) is closed (the remote
    /// gets `close`).
    pub fn connection(
        self: &Arc<Self>,
        channel: u32,
        fd: OwnedFd,
        announce: impl FnOnce() -> bool,
    ) -> bool {
        let r = match fd.try_clone() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(channel, %e, "relay: cannot serve a connection; closing it");
                return self.send(frame(channel, What::Close(true)));
            }
        };
        self.halves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel, 2);
        self.writer(channel, fd, EndBy::Shutdown);
        if !announce() {
            return false;
        }
        self.reader(channel, r, false);
        true
    }

    /// One half of a [`Pumps::connection`] ended; after both, the channel's writer is
    /// forgotten (its thread ends when its queue is dropped).
    fn half_done(&self, channel: u32) {
        let mut halves = self.halves.lock().unwrap_or_else(|e| e.into_inner());
        let Some(left) = halves.get_mut(&channel) else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left == 0 {
            halves.remove(&channel);
            drop(halves);
            self.sinks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&channel);
        }
    }

    /// Keeps a writer's handle (for [`Pumps::finish`]), dropping those of writers that ended.
    fn keep_writer(&self, handle: JoinHandle<()>) {
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        writers.retain(|w| !w.is_finished());
        writers.push(handle);
    }

    /// A UDP socket: datagrams it receives go out as `Datagram` frames with their sender
    /// (mapped through `name`, e.g. a proxy socket → the peer it stands for); `Datagram`s
    /// that arrive are sent to their peer (mapped through `send`).
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
                match wait_ready(sock.as_fd(), PollFlags::POLLIN, &me.stop) {
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

    /// Registers `f` as the writer of a UDP channel: it gets each `Datagram` that arrives.
    pub fn udp_writer(
        self: &Arc<Self>,
        channel: u32,
        mut f: impl FnMut(&str, &[u8]) + Send + 'static,
    ) {
        let (tx, rx) = smpsc::channel::<Out>();
        self.sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel, tx);
        let handle = std::thread::spawn(move || {
            for out in rx {
                if let Out::Datagram(peer, data) = out {
                    f(&peer, &data);
                }
            }
        });
        self.keep_writer(handle);
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

    /// Lets every writer finish what it was given (up to `limit`), then stops every thread.
    pub fn finish(&self, limit: Duration) {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let writers: Vec<_> = self
            .writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        let deadline = Instant::now() + limit;
        for w in writers {
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The body of a writer thread: writes what arrives on `rx` into `fd` until the queue is
/// dropped. Once its direction ended (the end written, a close, a failed write), it tells
/// the pumps (`half_done`, for connections).
fn write_loop(
    channel: u32,
    fd: OwnedFd,
    end: EndBy,
    rx: smpsc::Receiver<Out>,
    stop: &AtomicBool,
    pumps: &Weak<Pumps>,
) {
    let mut fd = Some(fd);
    let mut ended = false;
    for out in rx {
        let Some(f) = fd.as_ref() else { continue };
        match out {
            Out::Data(d) => {
                if let Err(e) = write_all(f.as_fd(), &d, stop) {
                    tracing::debug!(channel, %e, "relay write");
                    fd = None;
                }
            }
            Out::Eof => match end {
                EndBy::Shutdown => {
                    let _ = shutdown(std::os::fd::AsRawFd::as_raw_fd(f), Shutdown::Write);
                    if !ended {
                        ended = true;
                        if let Some(p) = pumps.upgrade() {
                            p.half_done(channel);
                        }
                    }
                    continue;
                }
                EndBy::Closing => fd = None,
                EndBy::Nothing => continue,
            },
            Out::Close => {
                if end == EndBy::Shutdown {
                    let _ = shutdown(std::os::fd::AsRawFd::as_raw_fd(f), Shutdown::Both);
                }
                fd = None;
            }
            Out::Datagram(..) => continue,
        }
        if fd.is_none() && !ended {
            ended = true;
            if let Some(p) = pumps.upgrade() {
                p.half_done(channel);
            }
        }
    }
}

impl Drop for Pumps {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
