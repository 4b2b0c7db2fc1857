//! Sockets at dump. Each socket descriptor is pulled into ferry with `pidfd_getfd` (the same
//! open file description, so the same socket) and examined there: `getsockopt`,
//! `getsockname`/`getpeername`, `sock_diag` for Unix sockets, queued data read with `MSG_PEEK`
//! (nothing is consumed), established TCP connections through `TCP_REPAIR`.
//!
//! An established connection stays in repair mode, with a socket filter that drops every
//! incoming segment, from the moment its queues are read until the process is dead: nothing
//! arriving meanwhile is acknowledged (the peer sends it again to the restored socket), and the
//! copy ferry holds is closed in repair mode, which tells the peer nothing. Should the dump
//! fail, [`Held`] takes the sockets out of repair mode and removes the filter.

use std::collections::{HashMap, HashSet};
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, UnixAddr, getpeername,
    getsockname, recv, recvmsg,
};
use nix::unistd::Pid;

use super::DumpError;
use super::sockdiag::{self, STATE_ESTABLISHED, STATE_LISTEN, UnixDiag};
use crate::image::sockopt as opt;
use crate::image::{MAX_SOCKET_FILTER as MAX_FILTER, MAX_SOCKET_QUEUE};
use crate::state::{
    FileIdentity, FileRef, InFlight, InetSocketState, NetlinkSocketState, PacketMembership,
    PacketSocketState, PassedFd, SockOptState, SocketKind, SocketState, TcpConnState,
    UnixSocketState,
};
use crate::sys::socket as ss;

const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
const TCP_NO_QUEUE: i32 = 0;
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;
/// Largest datagram we expect to peek; a bigger one is refused.
const MAX_DATAGRAM: usize = 4 << 20;

/// How sockets are treated, from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketOptions {
    /// Checkpoint established TCP connections with `TCP_REPAIR`.
    pub tcp_established: bool,
    /// Keep Unix sockets whose peer is outside the process (reconnected by name at restore).
    pub ext_unix_sk: bool,
    /// The process runs on after the dump.
    pub leave_running: bool,
    /// TCP and UDP sockets, and fds 0–2, stay on this host and are relayed (migration):
    /// recorded as they are, never put in repair mode, their queues left in place.
    pub relay: bool,
    /// What to do with data a connecting Unix socket wrote into a connection that a listener
    /// of the process has not accepted yet.
    pub unaccepted_data: UnacceptedData,
}

/// Data written into a Unix connection that is not accepted yet can only be read by
/// accepting it, which the original process does not survive: its listener loses the
/// connection for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnacceptedData {
    /// Refuse it (the original may run on: `--leave-running`, a migration).
    #[default]
    Refuse,
    /// Accept such connections once the whole state is read and keep their data (a dump
    /// that ends the process).
    Take,
    /// Note that it is there without reading it (the restore checker's read-back).
    Note,
}

/// Established TCP sockets ferry holds in repair mode during the dump.
#[derive(Debug, Default)]
pub struct Held {
    repaired: Vec<Repaired>,
}

/// One connection in repair mode, with what leaving it must put back.
#[derive(Debug)]
struct Repaired {
    fd: OwnedFd,
    /// `SO_REUSEADDR` before repair mode, which sets it to "forced" and resets it to 0 on
    /// leaving.
    reuse: i32,
    /// The process's own socket filter, which ferry's drop-everything filter replaced.
    filter: Vec<u8>,
}

impl Held {
    /// The process is dead: close ferry's copies still in repair mode, which discards the
    /// connections without a FIN or RST.
    pub fn close_silently(mut self) {
        self.repaired.clear();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for r in &self.repaired {
            let fd = r.fd.as_fd();
            if let Err(err) = ss::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, 0) {
                tracing::error!(%err, "could not take a TCP socket out of repair mode");
            }
            if let Err(err) = ss::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, r.reuse)
            {
                tracing::error!(%err, "could not set SO_REUSEADDR of a TCP socket back");
            }
            let back = if r.filter.is_empty() {
                ss::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, 0)
            } else {
                ss::attach_filter(fd, &r.filter)
            };
            if let Err(err) = back {
                tracing::error!(%err, "could not put a TCP socket's own filter back");
            }
        }
    }
}

/// What the socket part of a dump works with.
#[derive(Debug)]
pub struct SocketDump {
    /// Command-line choices.
    pub opts: SocketOptions,
    /// Read queues and enter repair mode (after the freeze), or only classify (before it).
    pub capture: bool,
    /// Sockets in repair mode.
    pub held: Held,
    /// Things the user should know.
    pub warnings: Vec<String>,
    /// Socket inodes the other processes of a dumped tree hold: a Unix socket connected to
    /// one of them is a socketpair between members, not an outside peer.
    pub member_sockets: HashSet<u64>,
    /// Before a tree is frozen its members are not known yet: a peer outside the process is
    /// judged at capture, once they are.
    pub peers_judged_later: bool,
    /// The processes of a dumped tree (empty for one process): a descriptor in flight may be
    /// one they hold.
    pub members: Vec<i32>,
    /// Connections waiting in the accept queue of each TCP listener, by socket inode.
    tcp_pending: HashMap<u64, u32>,
    /// Pipes no process holds whose bytes an end in flight carries already.
    flown_pipes: HashSet<u64>,
    /// Listeners of the dump (by socket inode) whose pending connections hold data their
    /// connecting sockets (of the dump) wrote: accepted by [`take_pending`] once the whole
    /// state is read.
    to_accept: Vec<u64>,
    /// TCP listeners of the dump (by socket inode) with connections from the dump waiting
    /// in their accept queues: accepted by [`take_pending`] once the whole state is read.
    tcp_to_accept: Vec<u64>,
    /// `tcpi_bytes_acked` of the TCP connections read in repair mode, by socket inode.
    bytes_acked: HashMap<u64, u64>,
}

impl SocketDump {
    /// Classification only, for the checks before the freeze.
    pub fn check(opts: SocketOptions) -> Self {
        Self {
            opts,
            capture: false,
            held: Held::default(),
            warnings: Vec::new(),
            member_sockets: HashSet::new(),
            peers_judged_later: false,
            members: Vec::new(),
            tcp_pending: HashMap::new(),
            flown_pipes: HashSet::new(),
            to_accept: Vec::new(),
            tcp_to_accept: Vec::new(),
            bytes_acked: HashMap::new(),
        }
    }

    /// Full capture, once the process is frozen.
    pub fn capture(opts: SocketOptions) -> Self {
        Self {
            opts,
            capture: true,
            held: Held::default(),
            warnings: Vec::new(),
            member_sockets: HashSet::new(),
            peers_judged_later: false,
            members: Vec::new(),
            tcp_pending: HashMap::new(),
            flown_pipes: HashSet::new(),
            to_accept: Vec::new(),
            tcp_to_accept: Vec::new(),
            bytes_acked: HashMap::new(),
        }
    }
}

/// A socket known only by its inode, until [`collect`] examines it.
pub fn unexamined(ino: u64) -> SocketState {
    SocketState {
        ino,
        family: 0,
        sock_type: 0,
        opts: Vec::new(),
        filter: Vec::new(),
        kind: SocketKind::Inet(InetSocketState {
            protocol: 0,
            local: SocketAddr::from(([0, 0, 0, 0], 0)),
            peer: None,
            backlog: None,
            tcp: None,
            shutdown: 0,
            queue: Vec::new(),
            queue_from: Vec::new(),
        }),
    }
}

fn unsupported(fd: i32, what: impl std::fmt::Display) -> DumpError {
    DumpError::Unsupported(format!("fd {fd}: {what}"))
}

fn sock_err(fd: i32, what: impl Into<String>) -> impl FnOnce(Errno) -> DumpError {
    let what = what.into();
    move |source| DumpError::Socket { fd, what, source }
}

/// The state of every socket descriptor `(fd, inode)` of `pid`, in the same order.
pub fn collect(
    pid: Pid,
    socks: &[(i32, u64)],
    ctx: &mut SocketDump,
) -> Result<Vec<SocketState>, DumpError> {
    if socks.is_empty() {
        return Ok(Vec::new());
    }
    let pidfd = crate::sys::pidfd_open(pid).map_err(sock_err(socks[0].0, "pidfd_open"))?;
    let inos: HashSet<u64> = socks.iter().map(|s| s.1).collect();
    let mut unix: Option<HashMap<u64, UnixDiag>> = None;
    let mut packet: Option<HashMap<u64, sockdiag::PacketDiag>> = None;
    let mut inet_shut: HashMap<(i32, i32), HashMap<u64, u8>> = HashMap::new();
    let mut done: HashMap<u64, SocketState> = HashMap::new();
    let mut out = Vec::with_capacity(socks.len());
    for &(fd, ino) in socks {
        if let Some(s) = done.get(&ino) {
            out.push(s.clone()); // another descriptor of the same socket
            continue;
        }
        let copy = ss::pidfd_getfd(pidfd.as_fd(), fd).map_err(sock_err(fd, "pidfd_getfd"))?;
        let c = copy.as_fd();
        let family = ss::getsockopt_int(c, libc::SOL_SOCKET, libc::SO_DOMAIN)
            .map_err(sock_err(fd, "SO_DOMAIN"))?;
        let sock_type = ss::getsockopt_int(c, libc::SOL_SOCKET, libc::SO_TYPE)
            .map_err(sock_err(fd, "SO_TYPE"))?;
        let protocol = ss::getsockopt_int(c, libc::SOL_SOCKET, libc::SO_PROTOCOL)
            .map_err(sock_err(fd, "SO_PROTOCOL"))?;
        // Options and the filter first: an established TCP connection is read in repair mode,
        // which changes SO_REUSEADDR, behind a filter of ferry's own.
        let opts = changed_options(fd, c, family, sock_type, protocol)?;
        let filter = ss::get_filter(c).map_err(sock_err(fd, "SO_GET_FILTER"))?;
        if filter.len() > MAX_FILTER {
            return Err(unsupported(
                fd,
                format!(
                    "a socket filter of {} instructions, more than an image holds",
                    filter.len() / 8
                ),
            ));
        }
        let kind = match family {
            libc::AF_UNIX => {
                if unix.is_none() {
                    unix = Some(
                        sockdiag::unix_sockets()
                            .map_err(sock_err(fd, "sock_diag of Unix sockets"))?,
                    );
                }
                let all = unix.as_ref().expect("read above");
                let diag = all.get(&ino).cloned().unwrap_or_default();
                SocketKind::Unix(unix_socket(pid, fd, ino, c, &diag, all, &inos, ctx)?)
            }
            libc::AF_INET | libc::AF_INET6 => match (sock_type, protocol) {
                (
                    libc::SOCK_DGRAM,
                    libc::IPPROTO_UDP
                    | libc::IPPROTO_UDPLITE
                    | libc::IPPROTO_ICMP
                    | libc::IPPROTO_ICMPV6,
                )
                | (libc::SOCK_RAW, _) => {
                    SocketKind::Inet(datagram_socket(fd, c, sock_type, protocol, ctx)?)
                }
                (libc::SOCK_STREAM, libc::IPPROTO_TCP) => {
                    SocketKind::Inet(tcp_socket(fd, ino, &copy, &opts, &filter, ctx)?)
                }
                _ => {
                    return Err(unsupported(
                        fd,
                        format!(
                            "an IP socket of type {sock_type}, protocol {protocol} (SCTP, MPTCP, …) is not supported yet"
                        ),
                    ));
                }
            },
            libc::AF_NETLINK => SocketKind::Netlink(netlink_socket(fd, c, protocol, ctx)?),
            libc::AF_PACKET => {
                if packet.is_none() {
                    packet = Some(
                        sockdiag::packet_sockets()
                            .map_err(sock_err(fd, "sock_diag of packet sockets"))?,
                    );
                }
                let diag = packet
                    .as_ref()
                    .and_then(|m| m.get(&ino))
                    .cloned()
                    .unwrap_or_default();
                SocketKind::Packet(packet_socket(fd, c, sock_type, &diag, ctx)?)
            }
            _ => {
                return Err(unsupported(
                    fd,
                    format!("a socket of address family {family} is not supported yet"),
                ));
            }
        };
        let mut kind = kind;
        if let SocketKind::Inet(i) = &mut kind {
            let m = match inet_shut.entry((family, protocol)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    sockdiag::inet_shutdown(family, protocol)
                        .map_err(sock_err(fd, "sock_diag of the shutdown state"))?,
                ),
            };
            i.shutdown = m.get(&ino).map_or(0, |b| u32::from(*b & 3));
        }
        let state = SocketState {
            ino,
            family: family as u32,
            sock_type: sock_type as u32,
            opts,
            filter,
            kind,
        };
        done.insert(ino, state.clone());
        out.push(state);
    }
    if !ctx.opts.relay {
        unaccepted_tcp(socks, &mut out, ctx)?;
    }
    senders_outside(socks, &mut out, &mut ctx.warnings);
    Ok(out)
}

/// Reads what connecting sockets of the dump wrote into connections that listeners of the
/// dump had not accepted yet ([`UnacceptedData::Take`]), into their states' `pending_sent`.
/// Only accepting such a connection reads its data: every pending connection of such a
/// listener is accepted by ferry (those before the one wanted too, and those from outside,
/// which the end of the process drops anyway), so the original's listener loses them for
/// good. Called once the whole state is read and judged, just before the image is written,
/// by a dump that ends the process; `procs`: each process of the dump with its state.
pub fn take_pending(
    socks: &mut [&mut SocketDump],
    procs: &mut [(Pid, &mut crate::state::ProcessState)],
) -> Result<(), DumpError> {
    take_pending_tcp(socks, procs)?;
    let mut listeners: Vec<u64> = socks
        .iter()
        .flat_map(|s| s.to_accept.iter().copied())
        .collect();
    listeners.sort_unstable();
    listeners.dedup();
    let mut taken: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    for l in listeners {
        let Some((pid, fd)) = procs.iter().find_map(|(p, st)| {
            st.fds
                .iter()
                .find(|f| matches!(&f.kind, crate::state::FdKind::Socket(s) if s.ino == l))
                .map(|f| (*p, f.fd))
        }) else {
            continue;
        };
        let pidfd = crate::sys::pidfd_open(pid).map_err(sock_err(fd, "pidfd_open"))?;
        let copy = ss::pidfd_getfd(pidfd.as_fd(), fd).map_err(sock_err(fd, "pidfd_getfd"))?;
        let record = ss::getsockopt_int(copy.as_fd(), libc::SOL_SOCKET, libc::SO_TYPE)
            .map_err(sock_err(fd, "SO_TYPE"))?
            == libc::SOCK_SEQPACKET;
        let waiting = sockdiag::unix_sockets()
            .map_err(sock_err(fd, "sock_diag of Unix sockets"))?
            .get(&l)
            .map_or(0, |d| d.icons.len());
        let mut accepted = Vec::with_capacity(waiting);
        for _ in 0..waiting {
            // Never blocks: the process is frozen and the connection waits.
            let mut pfd = [nix::poll::PollFd::new(
                copy.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut pfd, nix::poll::PollTimeout::ZERO).unwrap_or(0) != 1 {
                break;
            }
            accepted.push(
                ss::accept(copy.as_fd())
                    .map_err(sock_err(fd, "accept a pending connection to read its data"))?,
            );
        }
        let diag = sockdiag::unix_sockets().map_err(sock_err(fd, "sock_diag of Unix sockets"))?;
        for a in &accepted {
            let ino = nix::sys::stat::fstat(a.as_fd())
                .map_err(sock_err(fd, "fstat an accepted connection"))?
                .st_ino;
            let Some(d) = diag.get(&ino) else { continue };
            let (queue, _, peeked) =
                peek_queue::<UnixAddr>(fd, a.as_fd(), !record, record && d.shutdown & 1 != 0)?;
            if peeked.iter().any(|p| !p.fds.is_empty()) {
                return Err(unsupported(
                    fd,
                    format!(
                        "the connection Unix socket {} made to this listener, not accepted yet, passes descriptors (SCM_RIGHTS), \
                         which was found only by accepting it: not supported (the process keeps running, \
                         without that pending connection)",
                        d.peer
                    ),
                ));
            }
            taken.insert(d.peer, queue);
        }
    }
    for (_, st) in procs.iter_mut() {
        for f in &mut st.fds {
            if let crate::state::FdKind::Socket(s) = &mut f.kind
                && let SocketKind::Unix(u) = &mut s.kind
                && u.sent_unaccepted
                && let Some(q) = taken.get(&s.ino)
            {
                u.pending_sent = q.clone();
            }
        }
    }
    Ok(())
}

/// The descriptor (`pid`, fd) of socket `ino` among the processes of the dump.
fn holder(procs: &[(Pid, &mut crate::state::ProcessState)], ino: u64) -> Option<(Pid, i32)> {
    procs.iter().find_map(|(p, st)| {
        st.fds
            .iter()
            .find(|f| matches!(&f.kind, crate::state::FdKind::Socket(s) if s.ino == ino))
            .map(|f| (*p, f.fd))
    })
}

/// The TCP part of [`take_pending`]: every connection waiting in the accept queue of a
/// listener with connections from the dump is accepted by ferry, in the queue's order. Those
/// from the dump are put in repair mode behind a filter that drops everything (closed
/// without a word once the process is dead, like the connections themselves) and their
/// receive queues read; with the bytes their connecting sockets have not had acknowledged
/// beyond those, that is what the process wrote into them (`tcp.unaccepted.data`), and their
/// place in the queue is kept. Those from outside are closed: the end of the process would
/// have dropped them.
fn take_pending_tcp(
    socks: &mut [&mut SocketDump],
    procs: &mut [(Pid, &mut crate::state::ProcessState)],
) -> Result<(), DumpError> {
    use crate::state::{FdKind, TcpUnaccepted};
    for sd in socks.iter_mut() {
        let listeners = sd.tcp_to_accept.clone();
        for l in listeners {
            let Some((pid, fd)) = holder(procs, l) else {
                continue;
            };
            let pidfd = crate::sys::pidfd_open(pid).map_err(sock_err(fd, "pidfd_open"))?;
            let copy = ss::pidfd_getfd(pidfd.as_fd(), fd).map_err(sock_err(fd, "pidfd_getfd"))?;
            let waiting = sd.tcp_pending.get(&l).copied().unwrap_or(0);
            // (client address, rank, data)
            let mut taken: Vec<(SocketAddr, SocketAddr, u32, u32, Vec<u8>)> = Vec::new();
            for rank in 1..=waiting {
                // Never blocks: the process is frozen and the connection waits.
                let mut pfd = [nix::poll::PollFd::new(
                    copy.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                if nix::poll::poll(&mut pfd, nix::poll::PollTimeout::ZERO).unwrap_or(0) != 1 {
                    break;
                }
                let a = ss::accept(copy.as_fd())
                    .map_err(sock_err(fd, "accept a pending connection to read its data"))?;
                let (Some(client), Ok(local)) = (peer_addr(a.as_fd()), local_addr(fd, a.as_fd()))
                else {
                    continue;
                };
                let ours = procs.iter().any(|(_, st)| {
                    st.fds.iter().any(|f| {
                        matches!(&f.kind, FdKind::Socket(s) if matches!(&s.kind,
                            SocketKind::Inet(i) if i.tcp.as_ref().is_some_and(|t| t.unaccepted.is_some())
                                && same_addr(&i.local, &client)
                                && i.peer.is_some_and(|p| same_addr(&p, &local))))
                    })
                });
                if !ours {
                    continue; // from outside: dropped, as the end of the process would
                }
                let (rcv_nxt, data) = accepted_queue(fd, a, &mut sd.held)?;
                taken.push((client, local, rank, rcv_nxt, data));
            }
            for (client, local, rank, rcv_nxt, received) in taken {
                for (_, st) in procs.iter_mut() {
                    for f in &mut st.fds {
                        let FdKind::Socket(s) = &mut f.kind else {
                            continue;
                        };
                        let SocketKind::Inet(i) = &mut s.kind else {
                            continue;
                        };
                        if !(same_addr(&i.local, &client)
                            && i.peer.is_some_and(|p| same_addr(&p, &local)))
                        {
                            continue;
                        }
                        let Some(t) = &mut i.tcp else { continue };
                        let Some(u) = &t.unaccepted else { continue };
                        // The send queue starts at snd_una; what the listener's side received
                        // ends at rcv_nxt, which may lie inside it (an acknowledgement the
                        // filter dropped).
                        let snd_una = t.send_seq.wrapping_sub(t.send_queue.len() as u32);
                        let beyond = rcv_nxt.wrapping_sub(snd_una) as usize;
                        if beyond > t.send_queue.len() {
                            return Err(unsupported(
                                f.fd,
                                format!(
                                    "TCP connection {} -> {local}, not accepted yet: its accepted side received up to \
                                     sequence {rcv_nxt}, outside its send queue ({snd_una}, {} bytes)",
                                    i.local,
                                    t.send_queue.len()
                                ),
                            ));
                        }
                        let mut data = received.clone();
                        data.extend_from_slice(&t.send_queue[beyond..]);
                        if data.len() as u64 != u.written {
                            tracing::debug!(
                                fd = f.fd,
                                counted = u.written,
                                read = data.len(),
                                "bytes of a pending TCP connection: acknowledged count and read differ"
                            );
                        }
                        t.unaccepted = Some(TcpUnaccepted {
                            written: data.len() as u64,
                            data,
                            rank,
                        });
                    }
                }
            }
        }
    }
    // A connection marked but not found in the queue cannot be made again with its data.
    for (_, st) in procs.iter() {
        for f in &st.fds {
            if let FdKind::Socket(s) = &f.kind
                && let SocketKind::Inet(i) = &s.kind
                && let Some(t) = &i.tcp
                && let Some(u) = &t.unaccepted
                && u.rank == 0
            {
                return Err(unsupported(
                    f.fd,
                    format!(
                        "TCP connection {} -> {} seemed to wait in the accept queue of the process's own listener, \
                         but accepting that queue did not find it (the process keeps running without the \
                         connections accepted)",
                        i.local,
                        i.peer.map_or_else(|| "?".into(), |p| p.to_string())
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A connection ferry accepted for the process: into repair mode behind a drop-everything
/// filter (so that closing it later sends nothing), its receive queue read. Returns
/// `rcv_nxt` (the sequence number after the queue) and the queue.
fn accepted_queue(fd: i32, a: OwnedFd, held: &mut Held) -> Result<(u32, Vec<u8>), DumpError> {
    let c = a.as_fd();
    ss::attach_drop_filter(c).map_err(sock_err(fd, "attach a socket filter"))?;
    ss::setsockopt_int(c, libc::IPPROTO_TCP, libc::TCP_REPAIR, 1)
        .map_err(sock_err(fd, "TCP_REPAIR of an accepted pending connection"))?;
    let len = ss::ioctl_int(c, ss::SIOCINQ)
        .map_err(sock_err(fd, "size of a pending connection's receive queue"))?;
    let len = usize::try_from(len).unwrap_or(0);
    if len > MAX_SOCKET_QUEUE {
        return Err(unsupported(
            fd,
            format!("{len} bytes waiting in a pending TCP connection, more than an image holds"),
        ));
    }
    ss::setsockopt_int(c, libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        .map_err(sock_err(fd, "TCP_REPAIR_QUEUE"))?;
    let seq = ss::getsockopt_int(c, libc::IPPROTO_TCP, libc::TCP_QUEUE_SEQ)
        .map_err(sock_err(fd, "TCP_QUEUE_SEQ"))? as u32;
    let mut data = vec![0u8; len];
    if len > 0 {
        let n = recv(
            c.as_raw_fd(),
            &mut data,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        )
        .map_err(sock_err(fd, "peek at a pending connection's receive queue"))?;
        data.truncate(n);
    }
    ss::setsockopt_int(c, libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE, TCP_NO_QUEUE)
        .map_err(sock_err(fd, "TCP_REPAIR_QUEUE"))?;
    held.repaired.push(Repaired {
        fd: a,
        reuse: 0,
        filter: Vec::new(),
    });
    Ok((seq, data))
}

/// Queued datagrams are sent again at restore from their senders: the process's own sockets,
/// or an address (an abstract Unix name) free now, which a socket is bound to for the
/// purpose. Another process's address is taken and a remote one is not this host's: a UDP
/// queue with a datagram from such a sender is dropped (warned), as before; Unix datagrams
/// from one keep their data and lose their sender's name (warned).
fn senders_outside(socks: &[(i32, u64)], out: &mut [SocketState], warnings: &mut Vec<String>) {
    let inet_locals: Vec<(u32, SocketAddr)> = out
        .iter()
        .filter_map(|s| match &s.kind {
            SocketKind::Inet(i) if i.tcp.is_none() && i.backlog.is_none() => {
                Some((i.protocol, i.local))
            }
            _ => None,
        })
        .collect();
    let unix_names: Vec<Vec<u8>> = out
        .iter()
        .filter_map(|s| match &s.kind {
            SocketKind::Unix(u) if !u.name.is_empty() => Some(u.name.clone()),
            _ => None,
        })
        .collect();
    // Every descriptor of a socket holds a copy of its state: each is changed alike, the
    // warning given once.
    let mut warned = HashSet::new();
    for (&(fd, _), s) in socks.iter().zip(out.iter_mut()) {
        let first = warned.insert(s.ino);
        match &mut s.kind {
            SocketKind::Inet(i) if !i.queue.is_empty() => {
                let protocol = i.protocol as i32;
                let ours = |from: &SocketAddr| {
                    inet_locals.iter().any(|(p, l)| {
                        *p == i.protocol
                            && l.port() == from.port()
                            && (l.ip() == from.ip() || l.ip().is_unspecified())
                    }) || inet_free(from, protocol)
                };
                if let Some(from) = i.queue_from.iter().find(|f| !ours(f)) {
                    first.then(|| warnings.push(format!(
                        "fd {fd}: {} datagram(s) queued on {}, some from {from} outside the process, are dropped",
                        i.queue.len(),
                        i.local
                    )));
                    i.queue.clear();
                    i.queue_from.clear();
                }
            }
            SocketKind::Unix(u) if !u.queue_from.is_empty() => {
                let outside = u
                    .queue_from
                    .iter()
                    .filter(|f| !f.is_empty() && !unix_names.contains(f) && !abstract_free(f))
                    .count();
                // An unnamed socket gets its queue through a pair's other end (unnamed).
                let outside = if u.name.is_empty() {
                    u.queue_from.iter().filter(|f| !f.is_empty()).count()
                } else {
                    outside
                };
                if outside > 0 {
                    first.then(|| warnings.push(format!(
                        "fd {fd}: {outside} datagram(s) queued on {} from named sockets outside the process come back from an unnamed one",
                        sockdiag::display_name(&u.name)
                    )));
                    u.queue_from.clear();
                }
            }
            _ => {}
        }
    }
}

/// TCP connections of the process to one of its own listeners that the listener has not
/// accepted yet: their other end is no socket yet, it waits in the accept queue with what the
/// connection carried, which only accepting it reads — and the original would not survive
/// that. A dump that ends the process marks them (`tcp.unaccepted`, with how many bytes the
/// process wrote into them) and has [`take_pending`] accept them last; the restore makes each
/// again by a handshake with the restored listener and writes those bytes again. A read-back
/// marks them alike without accepting; `--leave-running` refuses them.
fn unaccepted_tcp(
    socks: &[(i32, u64)],
    out: &mut [SocketState],
    ctx: &mut SocketDump,
) -> Result<(), DumpError> {
    let inet = |s: &SocketState| match &s.kind {
        SocketKind::Inet(i) if i.protocol == libc::IPPROTO_TCP as u32 => Some(i.clone()),
        _ => None,
    };
    // (index in `out`, fd, the listener's fd and inode)
    let mut found: Vec<(usize, i32, i32, u64)> = Vec::new();
    for (k, (&(fd, _), s)) in socks.iter().zip(out.iter()).enumerate() {
        let Some(conn) = inet(s) else { continue };
        let Some(peer) = conn.peer else { continue };
        if conn.backlog.is_some() {
            continue;
        }
        let listener = socks.iter().zip(out.iter()).find(|(_, l)| {
            ctx.tcp_pending.get(&l.ino).is_some_and(|n| *n > 0)
                && inet(l).is_some_and(|l| {
                    l.backlog.is_some()
                        && l.local.port() == peer.port()
                        && (same_ip(&l.local, &peer) || l.local.ip().is_unspecified())
                })
        });
        let Some((&(lfd, _), l)) = listener else {
            continue;
        };
        let accepted = out.iter().any(|a| {
            inet(a).is_some_and(|a| {
                a.backlog.is_none()
                    && same_addr(&a.local, &peer)
                    && a.peer.is_some_and(|p| same_addr(&p, &conn.local))
            })
        });
        if !accepted {
            found.push((k, fd, lfd, l.ino));
        }
    }
    if ctx.capture {
        let mut warned = HashSet::new();
        for (&(lfd, _), l) in socks.iter().zip(out.iter()) {
            let Some(n) = ctx.tcp_pending.get(&l.ino).copied() else {
                continue;
            };
            let ours = found.iter().filter(|f| f.3 == l.ino).count() as u32;
            if n > ours && warned.insert(l.ino) {
                let local = inet(l).map_or_else(|| "?".into(), |i| i.local.to_string());
                ctx.warnings.push(format!(
                    "fd {lfd}: {} connection(s) from outside the process waiting to be accepted on {local} are dropped",
                    n - ours
                ));
            }
        }
    }
    for (k, fd, lfd, lino) in found {
        let s = &mut out[k];
        let ino = s.ino;
        let SocketKind::Inet(i) = &mut s.kind else {
            continue;
        };
        let what = format!(
            "TCP connection {} -> {} waits in the accept queue of the process's own listener (fd {lfd}), not accepted yet",
            i.local,
            i.peer.map_or_else(|| "?".into(), |p| p.to_string())
        );
        if ctx.opts.unaccepted_data == UnacceptedData::Refuse {
            return Err(unsupported(
                fd,
                format!(
                    "{what}: reading what it carries means accepting it, which the original would not survive \
                     (supported by a dump that ends the process: not with --leave-running)"
                ),
            ));
        }
        let Some(t) = &mut i.tcp else {
            continue; // not read yet (the checks before the freeze)
        };
        if t.state != crate::state::TCP_ESTABLISHED {
            return Err(unsupported(
                fd,
                format!(
                    "{what}, in state {}: only an established one is supported",
                    crate::state::tcp_state_name(t.state)
                ),
            ));
        }
        // tcpi_bytes_acked counts the SYN, then every byte the listener's side received.
        let acked = ctx.bytes_acked.get(&ino).copied().unwrap_or(1);
        t.unaccepted = Some(crate::state::TcpUnaccepted {
            written: acked.saturating_sub(1) + t.send_queue.len() as u64,
            data: Vec::new(),
            rank: 0,
        });
        let marked = t.clone();
        for o in out.iter_mut().filter(|o| o.ino == ino) {
            if let SocketKind::Inet(oi) = &mut o.kind {
                oi.tcp = Some(marked.clone());
            }
        }
        if ctx.opts.unaccepted_data == UnacceptedData::Take && !ctx.tcp_to_accept.contains(&lino) {
            ctx.tcp_to_accept.push(lino);
        }
    }
    Ok(())
}

/// In a tree: a TCP connection of one member waiting in the accept queue of another
/// member's listener is refused, naming it (connecting it again at restore would need that
/// listener built first, which the restore of a tree does not order). `socks[i]` and
/// `processes[i]` belong to member `members[i]`.
pub fn refuse_unaccepted_across(
    socks: &[SocketDump],
    processes: &[crate::state::ProcessState],
    members: &[i32],
) -> Result<(), DumpError> {
    use crate::state::FdKind;
    let tcp = |st: &crate::state::ProcessState| -> Vec<(i32, InetSocketState, u64)> {
        st.fds
            .iter()
            .filter_map(|f| match &f.kind {
                FdKind::Socket(s) => match &s.kind {
                    SocketKind::Inet(i) if i.protocol == libc::IPPROTO_TCP as u32 => {
                        Some((f.fd, i.clone(), s.ino))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    let all: Vec<Vec<(i32, InetSocketState, u64)>> = processes.iter().map(tcp).collect();
    for (a, conns) in all.iter().enumerate() {
        for (fd, c, _) in conns {
            let Some(peer) = c.peer else { continue };
            if c.backlog.is_some() || c.tcp.as_ref().is_some_and(|t| t.unaccepted.is_some()) {
                continue;
            }
            for (b, ls) in all.iter().enumerate().filter(|(b, _)| *b != a) {
                let Some((lfd, _, _)) = ls.iter().find(|(_, l, lino)| {
                    l.backlog.is_some()
                        && socks
                            .get(b)
                            .and_then(|s| s.tcp_pending.get(lino))
                            .is_some_and(|n| *n > 0)
                        && l.local.port() == peer.port()
                        && (same_ip(&l.local, &peer) || l.local.ip().is_unspecified())
                }) else {
                    continue;
                };
                let accepted = all.iter().flatten().any(|(_, x, _)| {
                    x.backlog.is_none()
                        && same_addr(&x.local, &peer)
                        && x.peer.is_some_and(|p| same_addr(&p, &c.local))
                });
                if !accepted {
                    return Err(DumpError::Unsupported(format!(
                        "process {}: fd {fd}: TCP connection {} -> {peer} waits in the accept queue of the listener \
                         of process {} (fd {lfd}), not accepted yet: not supported between two processes of a tree \
                         (within one process it is)",
                        members.get(a).copied().unwrap_or(0),
                        c.local,
                        members.get(b).copied().unwrap_or(0),
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The same IP address, an IPv4 one also as IPv4-mapped IPv6.
fn same_ip(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical()
}

/// The same address and port, an IPv4 address also as IPv4-mapped IPv6.
fn same_addr(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && same_ip(a, b)
}

/// Whether the socket is a TCP connection (established, half-closed or closing).
fn is_established_tcp(c: BorrowedFd<'_>, family: i32, sock_type: i32, protocol: i32) -> bool {
    if family == libc::AF_UNIX || sock_type != libc::SOCK_STREAM || protocol != libc::IPPROTO_TCP {
        return false;
    }
    let mut info = [0u8; 8];
    ss::getsockopt_bytes(c, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info).is_ok()
        && is_conn_state(info[0])
}

/// Whether options at `level` apply to a socket of this kind.
fn level_applies(level: i32, family: i32, sock_type: i32, protocol: i32) -> bool {
    let inet = family == libc::AF_INET || family == libc::AF_INET6;
    match level {
        libc::SOL_SOCKET => true,
        libc::IPPROTO_TCP => {
            inet && sock_type == libc::SOCK_STREAM && protocol == libc::IPPROTO_TCP
        }
        libc::IPPROTO_IP => inet,
        libc::IPPROTO_IPV6 => family == libc::AF_INET6,
        opt::SOL_RAW => inet && sock_type == libc::SOCK_RAW,
        opt::SOL_UDPLITE => inet && protocol == libc::IPPROTO_UDPLITE,
        opt::SOL_NETLINK => family == libc::AF_NETLINK,
        opt::SOL_PACKET => family == libc::AF_PACKET,
        _ => false,
    }
}

/// The allowed options whose value differs from that of a fresh socket of the same kind.
fn changed_options(
    fd: i32,
    c: BorrowedFd<'_>,
    family: i32,
    sock_type: i32,
    protocol: i32,
) -> Result<Vec<SockOptState>, DumpError> {
    let fresh = ss::socket(family, sock_type, protocol).map_err(|e| {
        unsupported(
            fd,
            format!(
                "a socket of address family {family}, type {sock_type}, protocol {protocol}, of which ferry \
                 cannot make one ({e}): not supported"
            ),
        )
    })?;
    // An established connection's buffers were sized by autotuning, unless the user fixed
    // them (SO_BUF_LOCK reports which): setting them would turn autotuning off.
    let autotuned = if is_established_tcp(c, family, sock_type, protocol) {
        let locked = ss::getsockopt_int(c, libc::SOL_SOCKET, opt::SO_BUF_LOCK).unwrap_or(0);
        (locked & 2 == 0, locked & 1 == 0)
    } else {
        (false, false)
    };
    let mut out = Vec::new();
    for &(level, name) in crate::image::ALLOWED_SOCKET_OPTS {
        if !level_applies(level, family, sock_type, protocol) {
            continue;
        }
        // Multicast options mean nothing to a stream socket, which cannot set them; an
        // accepted connection reports the TTL of the packet that opened it there.
        let multicast = [
            libc::IP_MULTICAST_TTL,
            libc::IP_MULTICAST_LOOP,
            libc::IPV6_MULTICAST_HOPS,
            libc::IPV6_MULTICAST_LOOP,
        ];
        if sock_type == libc::SOCK_STREAM
            && (level == libc::IPPROTO_IP || level == libc::IPPROTO_IPV6)
            && multicast.contains(&name)
        {
            continue;
        }
        if level == libc::SOL_SOCKET
            && ((name == libc::SO_RCVBUF && autotuned.0)
                || (name == libc::SO_SNDBUF && autotuned.1))
        {
            continue;
        }
        let mut now = [0u8; 32];
        let mut then = [0u8; 32];
        let Ok(n) = ss::getsockopt_bytes(c, level, name, &mut now) else {
            continue;
        };
        let m = ss::getsockopt_bytes(fresh.as_fd(), level, name, &mut then).unwrap_or(0);
        if now[..n] != then[..m] {
            out.push(SockOptState {
                level,
                name,
                value: now[..n].to_vec(),
            });
        }
    }
    // Setting a buffer size locks it: SO_BUF_LOCK goes with the sizes, even when unlocked
    // again, so that the restore ends with the lock the process had.
    let has = |name: i32| {
        out.iter()
            .any(|o| o.level == libc::SOL_SOCKET && o.name == name)
    };
    if (has(libc::SO_RCVBUF) || has(libc::SO_SNDBUF)) && !has(opt::SO_BUF_LOCK) {
        let mut v = [0u8; 4];
        if let Ok(4) = ss::getsockopt_bytes(c, libc::SOL_SOCKET, opt::SO_BUF_LOCK, &mut v) {
            out.push(SockOptState {
                level: libc::SOL_SOCKET,
                name: opt::SO_BUF_LOCK,
                value: v.to_vec(),
            });
        }
    }
    Ok(out)
}

fn unix_name(addr: Option<UnixAddr>) -> Vec<u8> {
    let Some(a) = addr else { return Vec::new() };
    if let Some(p) = a.path() {
        return p.as_os_str().as_encoded_bytes().to_vec();
    }
    if let Some(abs) = a.as_abstract() {
        let mut v = vec![0];
        v.extend_from_slice(abs);
        return v;
    }
    Vec::new()
}

#[allow(clippy::too_many_arguments)]
fn unix_socket(
    pid: Pid,
    fd: i32,
    ino: u64,
    c: BorrowedFd<'_>,
    diag: &UnixDiag,
    all: &HashMap<u64, UnixDiag>,
    in_process: &HashSet<u64>,
    ctx: &mut SocketDump,
) -> Result<UnixSocketState, DumpError> {
    let mut name = diag.name.clone();
    // A path name is reported with its terminating NUL.
    if name.first().is_some_and(|b| *b != 0)
        && let Some(end) = name.iter().position(|b| *b == 0)
    {
        name.truncate(end);
    }
    // A path is reported as it was given to bind(): make a relative one absolute.
    if !name.is_empty() && name[0] != 0 && name[0] != b'/' {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let mut abs = cwd.into_os_string().into_encoded_bytes();
        abs.push(b'/');
        abs.extend_from_slice(&name);
        name = abs;
    }
    let mut file = None;
    let mut owner = (0, 0);
    let mut file_path = None;
    if name.first().is_some_and(|b| *b != 0) {
        let path = String::from_utf8_lossy(&name).into_owned();
        let socket_file = |p: &std::path::Path| {
            let m = std::fs::symlink_metadata(p).ok()?;
            let (vino, _) = diag.vfs?;
            (m.file_type().is_socket() && m.ino() == vino).then_some(m)
        };
        // At its name, else renamed within its directory.
        let found = socket_file(std::path::Path::new(&path))
            .map(|m| (m, None))
            .or_else(|| {
                let dir = std::path::Path::new(&path).parent()?;
                std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
                    let m = socket_file(&e.path())?;
                    Some((m, Some(e.path().to_string_lossy().into_owned())))
                })
            });
        match found {
            Some((m, renamed)) => {
                owner = (m.uid(), m.gid());
                file = Some(FileIdentity {
                    dev: m.dev(),
                    ino: m.ino(),
                    mode: m.mode(),
                    size: 0,
                    mtime_ns: 0,
                    rdev: 0,
                });
                file_path = renamed;
            }
            None => match (std::fs::symlink_metadata(&path), diag.vfs) {
                // Removed: the restore binds the name again and removes the file, as it was.
                (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => {}
                (Ok(m), Some((vino, _))) => {
                    return Err(unsupported(
                        fd,
                        format!(
                            "the socket file {path} of Unix socket {ino} was replaced (inode {vino} then, {} now): \
                             its name cannot be bound again",
                            m.ino()
                        ),
                    ));
                }
                (r, _) => {
                    return Err(unsupported(
                        fd,
                        format!(
                            "the socket file {path} of Unix socket {ino} cannot be identified ({})",
                            r.err().map_or_else(
                                || "no inode from sock_diag".into(),
                                |e| e.to_string()
                            )
                        ),
                    ));
                }
            },
        }
    }
    let stream = diag.sock_type as i32 != libc::SOCK_DGRAM;
    let listening = diag.state == STATE_LISTEN;
    let backlog = listening.then_some(diag.rqlen.1);
    // Pending connections whose connecting socket is the process's (or a member's) come back
    // when that socket connects again at restore; those from outside are dropped.
    let inside = |i: &u64| *i != 0 && (in_process.contains(i) || ctx.member_sockets.contains(i));
    let pending = diag.icons.iter().filter(|i| inside(i)).count() as u32;
    let outside = diag.rqlen.0.saturating_sub(pending);
    if listening && outside > 0 && ctx.capture {
        ctx.warnings.push(format!(
            "fd {fd}: {outside} connection(s) from outside the process waiting to be accepted on {} are dropped",
            sockdiag::display_name(&name)
        ));
    }
    // A stream socket whose peer closed keeps its connected state with no peer left.
    let connected = if stream {
        diag.state == STATE_ESTABLISHED
    } else {
        diag.peer != 0
    };
    let peer_ino = diag.peer;
    let mut peer_external = false;
    let mut sent_unaccepted = false;
    let mut peer_name = Vec::new();
    // A stream socket whose peer closed: the peer's release shut it both ways, and the dead
    // peer has no inode. It is restored as one end of a pair whose other end is closed, never
    // connected again by the dead peer's name (an accepted socket's is its listener's).
    let peer_closed = stream && connected && peer_ino == 0 && diag.shutdown == 3;
    if connected && !in_process.contains(&peer_ino) && !ctx.member_sockets.contains(&peer_ino) {
        peer_external = true;
        // Also while the peer is not accepted yet (it has no inode then, so `peer_ino` is 0).
        if !peer_closed {
            peer_name = unix_name(getpeername::<UnixAddr>(c.as_raw_fd()).ok());
        }
        if peer_ino == 0 && !peer_closed && ctx.capture {
            // Connecting again at restore brings the pending connection back, but not what
            // this socket already wrote into it, which only accepting the connection reads.
            let unread = ss::ioctl_int(c, ss::SIOCOUTQ).unwrap_or(0);
            if unread > 0 {
                sent_unaccepted = true;
                // The listener holding the connection: its pending connections list this
                // socket.
                let listener = all
                    .iter()
                    .find(|(_, d)| d.state == STATE_LISTEN && d.icons.contains(&ino))
                    .map(|(l, _)| *l);
                let ours =
                    listener.filter(|l| in_process.contains(l) || ctx.member_sockets.contains(l));
                let why = match (ctx.opts.unaccepted_data, listener, ours) {
                    (UnacceptedData::Note, _, _) => None,
                    (UnacceptedData::Take, _, Some(l)) => {
                        // Accepted once the whole state is read (`take_pending`), by the
                        // process's descriptor of that listener.
                        if !ctx.to_accept.contains(&l) {
                            ctx.to_accept.push(l);
                        }
                        None
                    }
                    (UnacceptedData::Take, _, None) => Some(format!(
                        "its listener ({}) is {}",
                        listener.map_or_else(|| "not found".into(), |l| format!("socket {l}")),
                        listener
                            .and_then(|l| sockdiag::holder_of(l, pid.as_raw()))
                            .map_or_else(|| "not in the process".into(), |h| format!("held by {h}, outside the dump"))
                    )),
                    (UnacceptedData::Refuse, _, _) => Some(
                        "reading it means accepting the connection, which the original would not survive \
                         (supported by a dump that ends the process: not with --leave-running, not in a migration)"
                            .into(),
                    ),
                };
                if let Some(why) = why {
                    return Err(unsupported(
                        fd,
                        format!(
                            "Unix socket {ino} has a connection to {} not accepted yet, holding data it wrote \
                             ({unread} bytes with overhead): {why}",
                            sockdiag::display_name(&peer_name)
                        ),
                    ));
                }
            }
        }
        if peer_ino != 0 {
            // Relayed stdio (fds 0–2) stays here whatever its peer.
            let relayed = ctx.opts.relay && fd <= 2;
            if !ctx.opts.ext_unix_sk && !ctx.peers_judged_later && !relayed {
                let holder = sockdiag::holder_of(peer_ino, pid.as_raw())
                    .unwrap_or_else(|| "no process".into());
                return Err(unsupported(
                    fd,
                    format!(
                        "Unix socket {ino} is connected to socket {peer_ino} ({}, held by {holder}) outside the process \
                         (use --ext-unix-sk to restore it reconnected by name)",
                        sockdiag::display_name(&peer_name)
                    ),
                ));
            }
        }
    }
    // Peeked as Unix addresses: nix reads a Unix address into a SockaddrStorage without its
    // length, so that it reports no address.
    let (queue, from, peeked) = if ctx.capture && !listening {
        peek_queue::<UnixAddr>(
            fd,
            c,
            stream && diag.sock_type as i32 == libc::SOCK_STREAM,
            diag.shutdown & 1 != 0 && diag.sock_type as i32 == libc::SOCK_SEQPACKET,
        )?
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    // The senders of datagrams, by name, where any has one.
    let queue_from: Vec<Vec<u8>> = if stream {
        Vec::new()
    } else {
        from.iter()
            // An unnamed sender is reported with no address at all (length 0), which nix's
            // UnixAddr cannot be asked about.
            .map(|a| unix_name(a.filter(|a| a.len() as usize > std::mem::size_of::<u16>())))
            .collect()
    };
    let queue_from = if queue_from.iter().all(Vec::is_empty) {
        Vec::new()
    } else {
        queue_from
    };
    if !peeked.is_empty() && diag.shutdown & 1 != 0 {
        return Err(unsupported(
            fd,
            "a Unix socket shut down for receiving, with descriptors or credentials in flight (SCM_RIGHTS, SCM_CREDENTIALS) in its queue, is not supported yet",
        ));
    }
    if !peeked.is_empty() && (peer_external || peer_ino == 0) {
        return Err(unsupported(
            fd,
            format!(
                "a Unix socket whose peer is not in the dump, with descriptors or credentials in flight (SCM_RIGHTS, SCM_CREDENTIALS) in its queue, is not supported yet ({} message(s))",
                peeked.len()
            ),
        ));
    }
    let in_flight = peeked
        .into_iter()
        .map(|p| in_flight(pid, fd, p, &ctx.members, &mut ctx.flown_pipes))
        .collect::<Result<Vec<_>, _>>()?;
    if ctx.capture
        && peer_external
        && peer_ino != 0
        && !queue.is_empty()
        && diag.sock_type as i32 == libc::SOCK_STREAM
    {
        ctx.warnings.push(format!(
            "fd {fd}: {} queued bytes from the external peer are dropped (the restored socket is a new connection)",
            queue.iter().map(Vec::len).sum::<usize>()
        ));
    }
    Ok(UnixSocketState {
        name,
        file,
        owner,
        file_path,
        backlog,
        peer_ino: if peer_external { 0 } else { peer_ino },
        peer_external,
        peer_name,
        shutdown: u32::from(diag.shutdown),
        queue,
        queue_from,
        pending: if listening { pending } else { 0 },
        in_flight,
        sent_unaccepted,
        pending_sent: Vec::new(),
    })
}

/// What one queued message carries besides its bytes, as peeked: its index, the descriptors
/// (ferry's copies) and the credentials.
struct Peeked {
    message: u32,
    fds: Vec<OwnedFd>,
    creds: Option<(i32, u32, u32)>,
}

/// Names each descriptor in flight: a description the process or a member holds, else a
/// regular file or directory opened again at restore, else a pipe end (of a pipe the dump
/// holds, or of one nobody else holds, with its bytes: `flown_pipes`, the pipes whose bytes
/// an end in flight carries already); anything else is refused.
fn in_flight(
    pid: Pid,
    fd: i32,
    p: Peeked,
    members: &[i32],
    flown_pipes: &mut HashSet<u64>,
) -> Result<InFlight, DumpError> {
    let me = nix::unistd::getpid();
    let mut holders: Vec<i32> = vec![pid.as_raw()];
    holders.extend(members.iter().filter(|&&m| m != pid.as_raw()));
    if let Some((cpid, _, _)) = p.creds
        && !holders.contains(&cpid)
    {
        return Err(unsupported(
            fd,
            format!(
                "credentials in flight (SCM_CREDENTIALS) from pid {cpid}, which is not in the dump, in queued message {}; not supported yet",
                p.message + 1
            ),
        ));
    }
    let mut fds = Vec::with_capacity(p.fds.len());
    'passed: for copy in &p.fds {
        let raw = copy.as_raw_fd();
        for &h in &holders {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{h}/fd")) else {
                continue;
            };
            let mut theirs: Vec<i32> = dir
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            theirs.sort_unstable();
            for t in theirs {
                if crate::sys::same_file_description_in(me, raw, Pid::from_raw(h), t)
                    .unwrap_or(false)
                {
                    fds.push(PassedFd::Held { pid: h, fd: t });
                    continue 'passed;
                }
            }
        }
        let link = format!("/proc/self/fd/{raw}");
        let target = std::fs::read_link(&link)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta = std::fs::metadata(&link).ok();
        if let Some(ino) = target
            .strip_prefix("pipe:[")
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
        {
            fds.push(pipe_in_flight(
                pid,
                fd,
                &p,
                raw,
                ino,
                &holders,
                flown_pipes,
            )?);
            continue;
        }
        let plain = meta
            .as_ref()
            .is_some_and(|m| (m.is_file() || m.is_dir()) && m.nlink() > 0)
            && target.starts_with('/')
            && !target.ends_with(" (deleted)");
        if !plain {
            return Err(unsupported(
                fd,
                format!(
                    "a Unix socket with descriptors in flight (SCM_RIGHTS): queued message {} carries {target}, which no process of the dump holds; not supported yet",
                    p.message + 1
                ),
            ));
        }
        let info = crate::proc::parse_fdinfo(
            &std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}")).unwrap_or_default(),
        )
        .map_err(|e| unsupported(fd, format!("descriptors in flight: fdinfo ({e})")))?;
        let identity = super::mm::identity_of(&link)
            .map_err(|e| unsupported(fd, format!("descriptors in flight: {target} ({e})")))?;
        fds.push(PassedFd::File {
            file: FileRef {
                path: target,
                identity,
            },
            flags: info.flags & !(libc::O_CLOEXEC as u32),
            pos: info.pos,
        });
    }
    Ok(InFlight {
        message: p.message,
        fds,
        creds: p.creds,
    })
}

/// A pipe end in flight (ferry's copy `raw`, pipe `ino`): another description of a pipe a
/// process of the dump (`holders`) holds, reopened through it at restore; or of a pipe that
/// nobody holds, made anew with its bytes (read without consuming them). One that a
/// process outside the dump holds is refused.
fn pipe_in_flight(
    pid: Pid,
    fd: i32,
    p: &Peeked,
    raw: i32,
    ino: u64,
    holders: &[i32],
    flown_pipes: &mut HashSet<u64>,
) -> Result<PassedFd, DumpError> {
    let target = format!("pipe:[{ino}]");
    let info = crate::proc::parse_fdinfo(
        &std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}")).unwrap_or_default(),
    )
    .map_err(|e| unsupported(fd, format!("descriptors in flight: fdinfo ({e})")))?;
    let write = info.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32;
    let flags = info.flags & !((libc::O_ACCMODE | libc::O_CLOEXEC) as u32);
    // Packet mode keeps write boundaries that the bytes written again would not have.
    if flags & libc::O_DIRECT as u32 != 0 {
        return Err(unsupported(
            fd,
            format!(
                "a Unix socket with descriptors in flight (SCM_RIGHTS): queued message {} carries {target} in packet mode (O_DIRECT); not supported yet",
                p.message + 1
            ),
        ));
    }
    for &h in holders {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{h}/fd")) else {
            continue;
        };
        let lowest = dir
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
            })
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .min();
        if let Some(hfd) = lowest {
            return Ok(PassedFd::Pipe {
                ino,
                write,
                flags,
                pid: h,
                fd: hfd,
                queue: None,
            });
        }
    }
    let outside = super::files::holders_outside(pid, &target, holders);
    if let Some(o) = outside.first() {
        return Err(unsupported(
            fd,
            format!(
                "a Unix socket with descriptors in flight (SCM_RIGHTS): queued message {} carries {target}, whose other end process {o} outside the dump holds; not supported yet",
                p.message + 1
            ),
        ));
    }
    let queue = if flown_pipes.insert(ino) {
        Some(super::files::read_queue(nix::unistd::getpid(), raw)?)
    } else {
        None
    };
    Ok(PassedFd::Pipe {
        ino,
        write,
        flags,
        pid: 0,
        fd: 0,
        queue,
    })
}

/// Reads the receive queue without consuming it: `SO_PEEK_OFF` walks through it one datagram
/// or record at a time (a stream as runs of bytes), and is put back afterwards. Also the
/// sender's address of each datagram, where the kernel reports one, and what messages carry
/// besides their bytes (descriptors, credentials).
fn peek_queue<S: SockaddrLike + Copy>(
    fd: i32,
    c: BorrowedFd<'_>,
    byte_stream: bool,
    seqpacket_shut_for_reading: bool,
) -> Result<Queue<S>, DumpError> {
    let old = ss::getsockopt_int(c, libc::SOL_SOCKET, libc::SO_PEEK_OFF)
        .map_err(sock_err(fd, "SO_PEEK_OFF"))?;
    ss::setsockopt_int(c, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
        .map_err(sock_err(fd, "set SO_PEEK_OFF"))?;
    let end_after = if seqpacket_shut_for_reading {
        Some(usize::try_from(ss::ioctl_int(c, ss::SIOCINQ).unwrap_or(0)).unwrap_or(0))
    } else {
        None
    };
    let result = peek_loop(fd, c, byte_stream, end_after);
    ss::setsockopt_int(c, libc::SOL_SOCKET, libc::SO_PEEK_OFF, old)
        .map_err(sock_err(fd, "reset SO_PEEK_OFF"))?;
    result
}

/// A stream is read as runs of bytes: one `MSG_PEEK` stops after a message that passes
/// descriptors, and never joins messages with different credentials, so each run that comes
/// with descriptors or credentials is an element of its own. `end_after`: for a record socket
/// shut for reading, the bytes queued (`SIOCINQ`): a zero-length read once they are all read
/// is the end, not a record.
fn peek_loop<S: SockaddrLike + Copy>(
    fd: i32,
    c: BorrowedFd<'_>,
    byte_stream: bool,
    end_after: Option<usize>,
) -> Result<Queue<S>, DumpError> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut senders = Vec::new();
    let mut ancillary: Vec<Peeked> = Vec::new();
    let mut total = 0usize;
    let mut buf = vec![
        0u8;
        if byte_stream {
            256 * 1024
        } else {
            MAX_DATAGRAM
        }
    ];
    loop {
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 253], libc::ucred);
        let (n, truncated, passed, creds, sender) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = recvmsg::<S>(
                c.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            );
            match r {
                Ok(msg) => {
                    let mut passed = Vec::new();
                    let mut creds = None;
                    for m in msg.cmsgs().map_err(sock_err(fd, "control message"))? {
                        match m {
                            ControlMessageOwned::ScmRights(fds) => {
                                passed.extend(ss::adopt_received(&fds))
                            }
                            ControlMessageOwned::ScmCredentials(u) => {
                                creds = Some((u.pid(), u.uid(), u.gid()))
                            }
                            _ => {}
                        }
                    }
                    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                        return Err(unsupported(
                            fd,
                            "a queued message whose control data (descriptors in flight) does not fit; not supported",
                        ));
                    }
                    (
                        msg.bytes,
                        msg.flags.contains(MsgFlags::MSG_TRUNC),
                        passed,
                        creds,
                        msg.address,
                    )
                }
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(sock_err(fd, "peek at the queue")(e)),
            }
        };
        if truncated {
            return Err(unsupported(
                fd,
                format!("a queued datagram larger than {MAX_DATAGRAM} bytes"),
            ));
        }
        total += n;
        if total > MAX_SOCKET_QUEUE || out.len() >= crate::image::MAX_SOCKET_MESSAGES {
            return Err(unsupported(fd, "more queued data than an image holds"));
        }
        if n == 0 && (byte_stream || end_after.is_some_and(|t| total >= t)) {
            break; // end of stream: the peer shut down (after every queued byte)
        }
        let carries = !passed.is_empty() || creds.is_some();
        if byte_stream {
            // Runs without anything in flight join the run before when it has none either.
            let last_plain = !out.is_empty()
                && ancillary
                    .last()
                    .is_none_or(|a| a.message as usize + 1 != out.len());
            match out.last_mut() {
                Some(v) if !carries && last_plain => v.extend_from_slice(&buf[..n]),
                _ => out.push(buf[..n].to_vec()),
            }
        } else {
            out.push(buf[..n].to_vec());
            senders.push(sender);
        }
        if carries {
            ancillary.push(Peeked {
                message: (out.len() - 1) as u32,
                fds: passed,
                creds,
            });
        }
    }
    Ok((out, senders, ancillary))
}

/// Queued messages, the sender of each datagram, and what messages carry besides bytes.
type Queue<S> = (Vec<Vec<u8>>, Vec<Option<S>>, Vec<Peeked>);

fn sockaddr(s: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

fn local_addr(fd: i32, c: BorrowedFd<'_>) -> Result<SocketAddr, DumpError> {
    getsockname::<SockaddrStorage>(c.as_raw_fd())
        .map_err(sock_err(fd, "getsockname"))
        .and_then(|s| {
            sockaddr(s)
                .ok_or_else(|| unsupported(fd, "a socket address that is neither IPv4 nor IPv6"))
        })
}

fn peer_addr(c: BorrowedFd<'_>) -> Option<SocketAddr> {
    getpeername::<SockaddrStorage>(c.as_raw_fd())
        .ok()
        .and_then(sockaddr)
}

/// What to call a datagram-like IP socket in messages.
fn datagram_kind(sock_type: i32, protocol: i32) -> String {
    match (sock_type, protocol) {
        (libc::SOCK_RAW, p) => format!("raw socket (protocol {p})"),
        (_, libc::IPPROTO_UDPLITE) => "UDP-Lite socket".into(),
        (_, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6) => "ICMP (ping) socket".into(),
        _ => "UDP socket".into(),
    }
}

/// A UDP, UDP-Lite, ICMP ("ping") or raw socket: its addresses.
fn datagram_socket(
    fd: i32,
    c: BorrowedFd<'_>,
    sock_type: i32,
    protocol: i32,
    ctx: &mut SocketDump,
) -> Result<InetSocketState, DumpError> {
    let local = local_addr(fd, c)?;
    let peer = peer_addr(c);
    let mut queue = Vec::new();
    let mut queue_from = Vec::new();
    if ctx.capture && !ctx.opts.relay {
        if sock_type == libc::SOCK_DGRAM
            && matches!(protocol, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE)
        {
            // Carried with their senders: sent again from them at restore.
            // (A UDP socket has no descriptors or credentials in flight.)
            let (q, from, _) = peek_queue::<SockaddrStorage>(fd, c, false, false)?;
            queue_from = from
                .into_iter()
                .map(|a| {
                    a.and_then(sockaddr)
                        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
                })
                .collect();
            queue = q;
        } else {
            // SIOCINQ is the first datagram's size: peek whether there is any.
            let mut one = [0u8; 1];
            let queued = recv(
                c.as_raw_fd(),
                &mut one,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
            )
            .is_ok();
            if queued {
                ctx.warnings.push(format!(
                    "fd {fd}: datagrams queued on {} {local} are dropped",
                    datagram_kind(sock_type, protocol)
                ));
            }
        }
    }
    Ok(InetSocketState {
        protocol: protocol as u32,
        local,
        peer,
        backlog: None,
        tcp: None,
        shutdown: 0,
        queue,
        queue_from,
    })
}

/// `struct tcp_info` up to `tcpi_sacked`.
fn tcp_info(fd: i32, c: BorrowedFd<'_>) -> Result<[u8; 32], DumpError> {
    let mut info = [0u8; 32];
    ss::getsockopt_bytes(c, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info)
        .map_err(sock_err(fd, "TCP_INFO"))?;
    Ok(info)
}

/// `tcpi_bytes_acked` (0 when the kernel does not report it).
fn tcp_bytes_acked(c: BorrowedFd<'_>) -> u64 {
    let mut info = [0u8; 128];
    match ss::getsockopt_bytes(c, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info) {
        Ok(n) if n >= 128 => u64::from_ne_bytes(info[120..128].try_into().unwrap_or([0; 8])),
        _ => 0,
    }
}

fn tcp_state_name(state: u8) -> &'static str {
    crate::state::tcp_state_name(u32::from(state))
}

/// A connection in a state an image holds: established, or half-closed or closing.
fn is_conn_state(state: u8) -> bool {
    crate::state::TCP_CONN_STATES.contains(&u32::from(state))
}

fn tcp_socket(
    fd: i32,
    ino: u64,
    copy: &OwnedFd,
    opts: &[SockOptState],
    filter: &[u8],
    ctx: &mut SocketDump,
) -> Result<InetSocketState, DumpError> {
    let c = copy.as_fd();
    let info = tcp_info(fd, c)?;
    let local = local_addr(fd, c)?;
    let tcp = |peer, backlog, conn| InetSocketState {
        protocol: libc::IPPROTO_TCP as u32,
        local,
        peer,
        backlog,
        tcp: conn,
        shutdown: 0,
        queue: Vec::new(),
        queue_from: Vec::new(),
    };
    match info[0] {
        TCP_CLOSE => Ok(tcp(None, None, None)),
        TCP_LISTEN => {
            let u32_at = |at: usize| {
                u32::from_ne_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]])
            };
            // For a listener, tcpi_unacked is the accept queue length, tcpi_sacked the backlog.
            let (pending, backlog) = (u32_at(24), u32_at(28));
            // Those from outside the process are dropped (warned by `unaccepted_tcp`).
            ctx.tcp_pending.insert(ino, pending);
            Ok(tcp(None, Some(backlog), None))
        }
        // Established, or half-closed or closing (FIN-WAIT-1/2, CLOSE-WAIT, CLOSING,
        // LAST-ACK): read alike through TCP_REPAIR, the FINs counted in the sequence numbers.
        state if is_conn_state(state) => {
            let what = if state == TCP_ESTABLISHED {
                "established TCP connection".to_string()
            } else {
                format!("TCP connection in state {}", tcp_state_name(state))
            };
            let peer = peer_addr(c)
                .ok_or_else(|| unsupported(fd, format!("an {what} without a peer address")))?;
            if ctx.opts.relay {
                // It stays here, relayed: its queues are read by the relay, not the image.
                return Ok(tcp(Some(peer), None, None));
            }
            if !ctx.opts.tcp_established {
                return Err(unsupported(
                    fd,
                    format!("{what} {local} -> {peer} (use --tcp-established)"),
                ));
            }
            if ctx.opts.leave_running {
                return Err(unsupported(
                    fd,
                    format!(
                        "{what} {local} -> {peer} cannot be kept with --leave-running (both processes would own it)"
                    ),
                ));
            }
            if !ctx.capture {
                return Ok(tcp(Some(peer), None, None));
            }
            let reuse = opts
                .iter()
                .find(|o| o.level == libc::SOL_SOCKET && o.name == libc::SO_REUSEADDR)
                .and_then(|o| o.value.get(..4))
                .map_or(0, |v| i32::from_ne_bytes([v[0], v[1], v[2], v[3]]));
            let conn = repair(fd, copy, reuse, filter, &mut ctx.held, u32::from(state))?;
            ctx.bytes_acked.insert(ino, tcp_bytes_acked(c));
            if conn.state == crate::state::TCP_CLOSING && conn.unsent > 0 {
                // Its FIN waits behind bytes never sent while the peer's came: a restore
                // sends those bytes and the FIN after the peer's, which makes LAST-ACK.
                return Err(unsupported(
                    fd,
                    format!(
                        "{what} {local} -> {peer} with {} bytes never sent before its FIN: not supported",
                        conn.unsent
                    ),
                ));
            }
            Ok(tcp(Some(peer), None, Some(conn)))
        }
        // A relayed connection in any other state (its peer closed, say) is relayed as well.
        _ if ctx.opts.relay => Ok(tcp(peer_addr(c), None, None)),
        other => {
            let peer = peer_addr(c).map_or_else(|| "?".to_string(), |p| p.to_string());
            Err(unsupported(
                fd,
                format!(
                    "TCP connection {local} -> {peer} in state {} is not supported (established, \
                     FIN-WAIT-1/2, CLOSE-WAIT, CLOSING and LAST-ACK ones are)",
                    tcp_state_name(other)
                ),
            ))
        }
    }
}

/// Reads a connection (established, half-closed or closing: `state`) through `TCP_REPAIR`,
/// leaving it in repair mode with a drop-everything filter (see the module documentation).
fn repair(
    fd: i32,
    copy: &OwnedFd,
    reuse: i32,
    filter: &[u8],
    held: &mut Held,
    state: u32,
) -> Result<TcpConnState, DumpError> {
    use crate::state::{TCP_CLOSING, TCP_FIN_WAIT1, TCP_LAST_ACK};
    // A FIN the process sent and the peer has not acknowledged is counted by SIOCOUTQ (it
    // takes a sequence number) but is no byte of the queue; SIOCOUTQNSD counts it too while
    // it waits behind bytes never sent.
    let fin_queued = [TCP_FIN_WAIT1, TCP_LAST_ACK, TCP_CLOSING].contains(&state);
    let c = copy.as_fd();
    // The filter first: from now on nothing more is received, so the queues we read stay
    // exactly what the peer believes it delivered.
    ss::attach_drop_filter(c).map_err(|e| {
        let why = if e == Errno::EPERM {
            "attach a socket filter (the process locked its own with SO_LOCK_FILTER)"
        } else {
            "attach a socket filter"
        };
        sock_err(fd, why)(e)
    })?;
    held.repaired.push(Repaired {
        fd: copy
            .try_clone()
            .map_err(|e| sock_err(fd, "dup")(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?,
        reuse,
        filter: filter.to_vec(),
    });
    ss::setsockopt_int(c, libc::IPPROTO_TCP, libc::TCP_REPAIR, 1)
        .map_err(sock_err(fd, "TCP_REPAIR"))?;

    let queue = |which: i32, what: &str| -> Result<(u32, Vec<u8>), DumpError> {
        ss::setsockopt_int(c, libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE, which)
            .map_err(sock_err(fd, "TCP_REPAIR_QUEUE"))?;
        let seq = ss::getsockopt_int(c, libc::IPPROTO_TCP, libc::TCP_QUEUE_SEQ)
            .map_err(sock_err(fd, "TCP_QUEUE_SEQ"))? as u32;
        let req = if which == TCP_RECV_QUEUE {
            ss::SIOCINQ
        } else {
            ss::SIOCOUTQ
        };
        let len =
            ss::ioctl_int(c, req).map_err(sock_err(fd, format!("size of the {what} queue")))?;
        let mut len = usize::try_from(len).unwrap_or(0);
        if which == TCP_SEND_QUEUE && fin_queued {
            len = len.saturating_sub(1);
        }
        if len > MAX_SOCKET_QUEUE {
            return Err(unsupported(
                fd,
                format!("{len} bytes in the TCP {what} queue, more than an image holds"),
            ));
        }
        let mut data = vec![0u8; len];
        if len > 0 {
            let n = recv(
                c.as_raw_fd(),
                &mut data,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(sock_err(fd, format!("peek at the {what} queue")))?;
            if n != len {
                return Err(sock_err(
                    fd,
                    format!("peek at the {what} queue: {n} of {len} bytes"),
                )(Errno::EIO));
            }
        }
        Ok((seq, data))
    };
    let (recv_seq, recv_queue) = queue(TCP_RECV_QUEUE, "receive")?;
    let (send_seq, send_queue) = queue(TCP_SEND_QUEUE, "send")?;
    let mut unsent = ss::ioctl_int(c, ss::SIOCOUTQNSD).map_err(sock_err(fd, "SIOCOUTQNSD"))?;
    if fin_queued && unsent > 0 {
        unsent -= 1;
    }
    ss::setsockopt_int(c, libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE, TCP_NO_QUEUE)
        .map_err(sock_err(fd, "TCP_REPAIR_QUEUE"))?;

    let info = tcp_info(fd, c)?;
    let mss = ss::getsockopt_int(c, libc::IPPROTO_TCP, libc::TCP_MAXSEG)
        .map_err(sock_err(fd, "TCP_MAXSEG"))?;
    let timestamp = ss::getsockopt_int(c, libc::IPPROTO_TCP, libc::TCP_TIMESTAMP)
        .map_err(sock_err(fd, "TCP_TIMESTAMP"))?;
    let mut w = [0u8; 20];
    ss::getsockopt_bytes(c, libc::IPPROTO_TCP, libc::TCP_REPAIR_WINDOW, &mut w)
        .map_err(sock_err(fd, "TCP_REPAIR_WINDOW"))?;
    let word = |i: usize| u32::from_ne_bytes([w[i * 4], w[i * 4 + 1], w[i * 4 + 2], w[i * 4 + 3]]);
    Ok(TcpConnState {
        send_seq,
        recv_seq,
        unsent: u32::try_from(unsent)
            .unwrap_or(0)
            .min(send_queue.len() as u32),
        send_queue,
        recv_queue,
        mss: mss as u32,
        // tcpi_snd_wscale is the low nibble, tcpi_rcv_wscale the high one.
        snd_wscale: u32::from(info[6] & 0xf),
        rcv_wscale: u32::from(info[6] >> 4),
        options: u32::from(info[5]),
        timestamp: timestamp as u32,
        window: [word(0), word(1), word(2), word(3), word(4)],
        state,
        unaccepted: None,
    })
}

/// A netlink socket: protocol, port id, groups, destination. Queued messages (replies or
/// notifications not read yet) are refused: a program waiting for a reply would wait forever.
fn netlink_socket(
    fd: i32,
    c: BorrowedFd<'_>,
    protocol: i32,
    ctx: &mut SocketDump,
) -> Result<NetlinkSocketState, DumpError> {
    let (port_id, _) = ss::netlink_name(c, false).map_err(sock_err(fd, "getsockname"))?;
    let (dst_pid, dst_group) = ss::netlink_name(c, true).unwrap_or((0, 0));
    let mut words = [0u8; 128];
    let n = ss::getsockopt_bytes(
        c,
        opt::SOL_NETLINK,
        opt::NETLINK_LIST_MEMBERSHIPS,
        &mut words,
    )
    .map_err(sock_err(fd, "NETLINK_LIST_MEMBERSHIPS"))?;
    let mut groups: Vec<u32> = words[..n]
        .chunks_exact(4)
        .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if ctx.capture {
        let mut one = [0u8; 1];
        if recv(
            c.as_raw_fd(),
            &mut one,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        )
        .is_ok()
        {
            return Err(unsupported(
                fd,
                format!(
                    "a netlink socket (protocol {protocol}, port id {port_id}) with messages queued: not supported yet"
                ),
            ));
        }
    }
    Ok(NetlinkSocketState {
        protocol: protocol as u32,
        port_id,
        groups,
        dst_pid,
        dst_group,
    })
}

/// The name of interface `index` (in ferry's network namespace, which is the process's).
fn interface_name(fd: i32, index: i32) -> Result<String, DumpError> {
    nix::net::if_::if_indextoname(index as libc::c_uint)
        .map(|n| n.to_string_lossy().into_owned())
        .map_err(|e| {
            unsupported(
                fd,
                format!("a packet socket on interface {index}, which has no name ({e})"),
            )
        })
}

/// A packet socket: the protocol and interface it is bound to, its memberships, fanout group
/// and copy threshold (its options are read with the other sockets'). Rings are refused: the
/// process maps them, and their frames belong to both. Packets queued at the dump are not
/// carried (warned): they are copies of traffic, which no call puts back into one socket's
/// queue, and sending them again would put them on the network a second time.
fn packet_socket(
    fd: i32,
    c: BorrowedFd<'_>,
    sock_type: i32,
    diag: &sockdiag::PacketDiag,
    ctx: &mut SocketDump,
) -> Result<PacketSocketState, DumpError> {
    if sock_type != libc::SOCK_RAW && sock_type != libc::SOCK_DGRAM {
        return Err(unsupported(
            fd,
            format!("a packet socket of type {sock_type} (SOCK_PACKET) is not supported yet"),
        ));
    }
    for (ring, on) in [
        ("receive ring (PACKET_RX_RING)", diag.rx_ring),
        ("transmit ring (PACKET_TX_RING)", diag.tx_ring),
    ] {
        if on {
            return Err(unsupported(
                fd,
                format!("a packet socket with a {ring} is not supported yet"),
            ));
        }
    }
    let (protocol, ifindex) = ss::packet_name(c).map_err(sock_err(fd, "getsockname"))?;
    let interface = if ifindex == 0 {
        String::new()
    } else {
        interface_name(fd, ifindex)?
    };
    let fanout = ss::getsockopt_int(c, opt::SOL_PACKET, opt::PACKET_FANOUT)
        .map_err(sock_err(fd, "PACKET_FANOUT"))? as u32;
    if fanout != 0 {
        let (id, mode, flags) = (fanout & 0xffff, (fanout >> 16) & 0xff, fanout >> 24);
        if mode > crate::image::PACKET_FANOUT_MODES {
            return Err(unsupported(
                fd,
                format!(
                    "a packet socket in fanout group {id} of mode {mode} (a BPF program chooses, which no call reads back) is not supported yet"
                ),
            ));
        }
        if flags & !crate::image::PACKET_FANOUT_FLAGS != 0 {
            return Err(unsupported(
                fd,
                format!(
                    "a packet socket in fanout group {id} with flags {flags:#x} (PACKET_FANOUT_FLAG_UNIQUEID: the kernel picks the id) is not supported yet"
                ),
            ));
        }
    }
    let mut memberships = Vec::with_capacity(diag.memberships.len());
    for (index, mr_type, address, count) in &diag.memberships {
        memberships.push(PacketMembership {
            interface: interface_name(fd, *index)?,
            mr_type: u32::from(*mr_type),
            address: address.clone(),
            count: *count,
        });
    }
    if ctx.capture {
        let mut one = [0u8; 1];
        if recv(
            c.as_raw_fd(),
            &mut one,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        )
        .is_ok()
        {
            ctx.warnings.push(format!(
                "fd {fd}: packets queued on a packet socket are not carried (copies of traffic: they \
                 cannot be put back into one socket's queue)"
            ));
        }
    }
    Ok(PacketSocketState {
        protocol: u32::from(protocol),
        interface,
        memberships,
        fanout,
        copy_thresh: diag.copy_thresh,
    })
}

/// Whether a datagram socket of `protocol` can be bound to `a` now (a port nobody holds, an
/// address of this host).
fn inet_free(a: &SocketAddr, protocol: i32) -> bool {
    let family = if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    a.port() != 0
        && ss::socket(family, libc::SOCK_DGRAM, protocol).is_ok_and(|s| {
            let r = match a {
                SocketAddr::V4(v4) => {
                    nix::sys::socket::bind(s.as_raw_fd(), &nix::sys::socket::SockaddrIn::from(*v4))
                }
                SocketAddr::V6(v6) => {
                    nix::sys::socket::bind(s.as_raw_fd(), &nix::sys::socket::SockaddrIn6::from(*v6))
                }
            };
            r.is_ok()
        })
}

/// Whether an abstract Unix name is free now (a path name's file stays behind its closed
/// socket, and is not ferry's to remove).
fn abstract_free(name: &[u8]) -> bool {
    let Some((0, rest)) = name.split_first() else {
        return false;
    };
    let Ok(addr) = UnixAddr::new_abstract(rest) else {
        return false;
    };
    ss::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0)
        .is_ok_and(|s| nix::sys::socket::bind(s.as_raw_fd(), &addr).is_ok())
}
