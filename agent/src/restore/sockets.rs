//! Sockets at restore. Every socket is rebuilt in ferry itself (bound, listening, connected,
//! queued data written back, established TCP connections through `TCP_REPAIR`), then handed
//! to the task: the task inherits a pidfd of ferry when it is created, and an injected
//! `pidfd_getfd` copies each socket into it (see `files::restore`).
//!
//! Established connections stay in repair mode (silent) until the task holds them; only then
//! does [`Built::finish`] leave repair mode and send the bytes that had never been sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, Shutdown, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    UnixAddr, UnixCredentials, bind, connect, send, sendmsg, sendto, shutdown, socket, socketpair,
};

use super::RestoreError;
use super::tcp_fin;
use crate::dump::sockdiag;
use crate::state::{
    FdKind, FileRef, InetSocketState, PassedFd, ProcessState, SockOptState, SocketKind,
    SocketState, TcpConnState, TreeState, UnixSocketState,
};
use crate::sys::socket as ss;

const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
const TCPOPT_MSS: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
const TCPI_OPT_TIMESTAMPS: u32 = 1;
const TCPI_OPT_SACK: u32 = 2;
const TCPI_OPT_WSCALE: u32 = 4;
/// Bytes per write when queueing data back.
const CHUNK: usize = 64 * 1024;

/// The sockets ferry built for the task, by socket inode.
#[derive(Debug)]
pub struct Built {
    /// A pidfd of ferry; the task inherits it at the same number.
    pub pidfd: OwnedFd,
    by_ino: HashMap<u64, OwnedFd>,
    /// Established connections in repair mode, with the bytes that were never sent.
    repaired: Vec<(u64, Vec<u8>)>,
    /// Their recorded state, for the options leaving repair mode resets.
    repaired_state: HashMap<u64, SocketState>,
    /// Socket files ferry created by binding (path, inode): removed again should the restore
    /// fail before the task holds its sockets, so that a retry finds the path as the dump left
    /// it.
    created: Vec<(String, u64)>,
    /// The task holds its sockets.
    handed_over: std::cell::Cell<bool>,
}

impl Drop for Built {
    fn drop(&mut self) {
        if self.handed_over.get() {
            return;
        }
        for (path, ino) in &self.created {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == *ino) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Built {
    /// Ferry's descriptor of socket `ino`.
    pub fn fd_of(&self, ino: u64) -> Option<RawFd> {
        self.by_ino.get(&ino).map(AsRawFd::as_raw_fd)
    }

    /// The task holds its sockets: established connections leave repair mode (the kernel
    /// sends a window probe, the peer answers, traffic resumes) and the bytes never sent go
    /// out as ordinary writes.
    pub fn finish(&self, state: &ProcessState) -> Result<(), RestoreError> {
        self.handed_over.set(true);
        // The restored sockets hold the ports: the peers' segments may come in again.
        if !self.repaired.is_empty() {
            crate::netlock::unlock(state)?;
        }
        for (ino, unsent) in &self.repaired {
            let fd = fd_number(state, *ino);
            let Some(s) = self.by_ino.get(ino) else {
                continue;
            };
            ss::setsockopt_int(s.as_fd(), libc::IPPROTO_TCP, libc::TCP_REPAIR, 0)
                .map_err(err(fd, "leave TCP repair mode"))?;
            if let Some(st) = self.repaired_state.get(ino) {
                // Buffers enlarged by force to hold the queues are locked by that: unlocked
                // again unless the process had locked them, so that autotuning goes on.
                let lock = crate::image::sockopt::SO_BUF_LOCK;
                if !st
                    .opts
                    .iter()
                    .any(|o| o.level == libc::SOL_SOCKET && o.name == lock)
                {
                    let _ = ss::setsockopt_int(s.as_fd(), libc::SOL_SOCKET, lock, 0);
                }
                set_opts_where(fd, s.as_fd(), st, changed_by_repair)?;
            }
            send_all(fd, s.as_fd(), unsent, "send the bytes never sent")?;
            // After those bytes: a FIN the process sent behind bytes never sent goes out now.
            if let Some(SocketKind::Inet(i)) = self.repaired_state.get(ino).map(|st| &st.kind) {
                inet_shutdown(fd, s.as_fd(), i.shutdown)?;
            }
        }
        Ok(())
    }
}

fn err(fd: i32, what: impl Into<String>) -> impl FnOnce(Errno) -> RestoreError {
    let what = what.into();
    move |source| RestoreError::Socket { fd, what, source }
}

fn fd_number(state: &ProcessState, ino: u64) -> i32 {
    state
        .fds
        .iter()
        .find(|f| matches!(&f.kind, FdKind::Socket(s) if s.ino == ino))
        .map_or(-1, |f| f.fd)
}

fn send_all(fd: i32, s: BorrowedFd<'_>, data: &[u8], what: &str) -> Result<(), RestoreError> {
    for chunk in data.chunks(CHUNK) {
        let mut off = 0;
        while off < chunk.len() {
            off += send(
                s.as_raw_fd(),
                &chunk[off..],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            )
            .map_err(err(fd, what))?;
        }
    }
    Ok(())
}

/// Builds every socket of the image, or `None` when there is none. Runs before the task is
/// created, after every file check passed.
/// Unix sockets of a tree connected to a socket of another process of the tree (a
/// socketpair split by `fork`): one socketpair each, made here with both queues and shutdown
/// bits, by socket inode; [`build`] hands each process its end.
pub fn tree_pairs(tree: &TreeState) -> Result<HashMap<u64, OwnedFd>, RestoreError> {
    let mut all: Vec<(i32, i32, &SocketState, &UnixSocketState)> = Vec::new();
    for p in &tree.processes {
        for f in &p.fds {
            if let FdKind::Socket(s) = &f.kind
                && let SocketKind::Unix(u) = &s.kind
                && !all.iter().any(|(_, _, o, _)| o.ino == s.ino)
            {
                all.push((p.pid, f.fd, s, u));
            }
        }
    }
    let mut out = HashMap::new();
    for &(pid, fd, s, u) in &all {
        if u.peer_ino == 0 || out.contains_key(&s.ino) {
            continue;
        }
        let Some(&(_, pfd, ps, pu)) = all
            .iter()
            .find(|(ppid, _, o, _)| o.ino == u.peer_ino && *ppid != pid)
        else {
            continue;
        };
        if pu.peer_ino != s.ino {
            continue;
        }
        let (a, p) = pair(fd, s)?;
        set_opts(fd, a.as_fd(), s)?;
        set_opts(pfd, p.as_fd(), ps)?;
        bind_abstract(fd, a.as_fd(), u)?;
        bind_abstract(pfd, p.as_fd(), pu)?;
        queue_through(fd, p.as_fd(), u)?;
        queue_through(pfd, a.as_fd(), pu)?;
        apply_shutdown(fd, a.as_fd(), u)?;
        apply_shutdown(pfd, p.as_fd(), pu)?;
        out.insert(s.ino, a);
        out.insert(ps.ino, p);
    }
    Ok(out)
}

/// Builds every socket of `state` in ferry. `tree_pairs` holds the ends of pairs between
/// processes of a tree ([`tree_pairs`]): this process takes its own from there.
pub fn build(
    state: &ProcessState,
    tree_pairs: &mut HashMap<u64, OwnedFd>,
    warnings: &mut Vec<String>,
) -> Result<Option<Built>, RestoreError> {
    // One entry per socket (several descriptors may share one), with its first descriptor.
    let mut socks: Vec<(i32, u32, &SocketState)> = Vec::new();
    for f in &state.fds {
        if let FdKind::Socket(s) = &f.kind
            && !socks.iter().any(|(_, _, o)| o.ino == s.ino)
        {
            socks.push((f.fd, f.flags, s));
        }
    }
    if socks.is_empty() {
        return Ok(None);
    }
    let pidfd = crate::sys::pidfd_open(nix::unistd::getpid())
        .map_err(err(socks[0].0, "pidfd_open of ferry"))?;
    let mut b = Built {
        pidfd,
        by_ino: HashMap::new(),
        repaired: Vec::new(),
        repaired_state: HashMap::new(),
        created: Vec::new(),
        handed_over: std::cell::Cell::new(false),
    };
    for &(_, _, s) in &socks {
        if let Some(end) = tree_pairs.remove(&s.ino) {
            b.by_ino.insert(s.ino, end);
        }
    }
    let unix_of = |ino: u64| {
        socks.iter().find_map(|(fd, _, s)| match &s.kind {
            SocketKind::Unix(u) if s.ino == ino => Some((*fd, *s, u)),
            _ => None,
        })
    };

    // Unix listeners first: an accepted connection is made again through its listener (so it
    // keeps the listener's name), and connections pending on one connect again.
    let mut unix_diag = None;
    let mut listeners: HashMap<Vec<u8>, OwnedFd> = HashMap::new();
    for &(fd, _, s) in &socks {
        if let SocketKind::Unix(u) = &s.kind
            && u.backlog.is_some()
            && !b.by_ino.contains_key(&s.ino)
        {
            let sock = unix_socket(
                fd,
                s,
                u,
                &listeners,
                &mut unix_diag,
                &mut b.created,
                warnings,
            )?;
            if !u.name.is_empty() {
                let dup = sock
                    .try_clone()
                    .map_err(|e| err(fd, "dup")(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
                listeners.insert(u.name.clone(), dup);
            }
            b.by_ino.insert(s.ino, sock);
        }
    }
    // Unix sockets connected to each other inside the process: one socketpair each (or a
    // connection through the listener of the end that was accepted).
    for &(fd, _, s) in &socks {
        let SocketKind::Unix(u) = &s.kind else {
            continue;
        };
        if u.peer_ino == 0 || b.by_ino.contains_key(&s.ino) {
            continue;
        }
        let Some((pfd, ps, pu)) = unix_of(u.peer_ino) else {
            continue;
        };
        if pu.peer_ino != s.ino {
            continue; // a datagram socket sending to a bound one: connected by name below
        }
        let (a, p) = match (
            accepted_end(fd, s, u, &listeners)?,
            accepted_end(pfd, ps, pu, &listeners)?,
        ) {
            (Some((a, p)), _) => (a, p),
            (None, Some((p, a))) => (a, p),
            (None, None) => pair(fd, s)?,
        };
        set_opts(fd, a.as_fd(), s)?;
        set_opts(pfd, p.as_fd(), ps)?;
        bind_abstract(fd, a.as_fd(), u)?;
        bind_abstract(pfd, p.as_fd(), pu)?;
        queue_through(fd, p.as_fd(), u)?;
        queue_through(pfd, a.as_fd(), pu)?;
        apply_shutdown(fd, a.as_fd(), u)?;
        apply_shutdown(pfd, p.as_fd(), pu)?;
        b.by_ino.insert(s.ino, a);
        b.by_ino.insert(ps.ino, p);
    }
    // Listening sockets before the rest: an established connection restored in repair mode
    // binds its port with forced reuse, which a listener without SO_REUSEADDR would then
    // collide with.
    let mut rest: Vec<&(i32, u32, &SocketState)> = socks
        .iter()
        .filter(|(_, _, s)| !b.by_ino.contains_key(&s.ino))
        .collect();
    // Connections that waited in an accept queue connect again in the queue's order.
    rest.sort_by_key(|(_, _, s)| (!is_listening(s), unaccepted_rank(s)));
    for &&(fd, _, s) in &rest {
        let sock = match &s.kind {
            SocketKind::Unix(u) => unix_socket(
                fd,
                s,
                u,
                &listeners,
                &mut unix_diag,
                &mut b.created,
                warnings,
            )?,
            SocketKind::Netlink(n) => netlink_socket(fd, s, n)?,
            SocketKind::Packet(p) => packet_socket(fd, s, p)?,
            SocketKind::Inet(i) => {
                let (sock, unsent) = inet_socket(fd, s, i)?;
                if let Some(unsent) = unsent {
                    b.repaired.push((s.ino, unsent));
                    b.repaired_state.insert(s.ino, s.clone());
                }
                sock
            }
        };
        b.by_ino.insert(s.ino, sock);
    }
    // Queued datagrams whose senders are known, sent again from them (or from their names),
    // once every socket exists.
    for &(fd, _, s) in &socks {
        match &s.kind {
            SocketKind::Unix(u) if senders_named(u) && !u.name.is_empty() => {
                unix_queue_from_senders(fd, s, u, &socks, &b.by_ino, warnings)?;
            }
            SocketKind::Inet(i) if !i.queue.is_empty() => {
                inet_queue_from_senders(fd, s, i, &socks, &b.by_ino, warnings)?;
            }
            _ => {}
        }
    }
    // Datagram sockets connected to a socket of the process that is not connected back.
    for &&(fd, _, s) in &rest {
        let SocketKind::Unix(u) = &s.kind else {
            continue;
        };
        if u.peer_ino == 0 {
            continue;
        }
        let Some(name) = unix_of(u.peer_ino).map(|(_, _, pu)| pu.name.clone()) else {
            warnings.push(format!(
                "fd {fd}: the peer of this Unix socket is not in the image; it is left unconnected"
            ));
            continue;
        };
        match (unix_addr(&name), b.by_ino.get(&s.ino)) {
            (Some(addr), Some(sock)) => connect(sock.as_raw_fd(), &addr).map_err(err(
                fd,
                format!("connect to {}", sockdiag::display_name(&name)),
            ))?,
            _ => warnings.push(format!(
                "fd {fd}: the peer of this Unix datagram socket has no name; it is left unconnected"
            )),
        }
    }
    // File status flags belong to the open file description, which the task will share.
    for &(fd, flags, s) in &socks {
        if let Some(sock) = b.by_ino.get(&s.ino) {
            fcntl(
                sock,
                FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags as i32)),
            )
            .map_err(err(fd, "set status flags"))?;
        }
    }
    Ok(Some(b))
}

/// The place in its listener's accept queue of a connection that waited there (0 else).
fn unaccepted_rank(s: &SocketState) -> u32 {
    match &s.kind {
        SocketKind::Inet(i) => i
            .tcp
            .as_ref()
            .and_then(|t| t.unaccepted.as_ref())
            .map_or(0, |u| u.rank),
        _ => 0,
    }
}

fn is_listening(s: &SocketState) -> bool {
    match &s.kind {
        SocketKind::Unix(u) => u.backlog.is_some(),
        SocketKind::Inet(i) => i.backlog.is_some(),
        SocketKind::Netlink(_) | SocketKind::Packet(_) => false,
    }
}

/// The index of interface `name` on this host, or an error naming it.
fn interface_index(fd: i32, name: &str) -> Result<i32, RestoreError> {
    nix::net::if_::if_nametoindex(name)
        .map(|i| i as i32)
        .map_err(err(
            fd,
            format!("a packet socket needs interface {name:?}, which this host does not have"),
        ))
}

/// A packet socket: its options (before the bind, as `PACKET_VERSION` must be), bound to the
/// same protocol and interface (by name), its memberships (each as many times as it was
/// added, in the order the kernel lists them), then its fanout group (which only a bound
/// socket can join) and copy threshold.
fn packet_socket(
    fd: i32,
    s: &SocketState,
    p: &crate::state::PacketSocketState,
) -> Result<OwnedFd, RestoreError> {
    use crate::image::sockopt as opt;
    // Protocol 0: it receives nothing until bound, like a socket made with the protocol and
    // bound to it (`SO_PROTOCOL` reads 0 either way).
    let sock =
        ss::socket(libc::AF_PACKET, s.sock_type as i32, 0).map_err(err(fd, "packet socket"))?;
    let c = sock.as_fd();
    set_opts(fd, c, s)?;
    let ifindex = if p.interface.is_empty() {
        0
    } else {
        interface_index(fd, &p.interface)?
    };
    if p.protocol != 0 || ifindex != 0 {
        ss::packet_bind(c, p.protocol as u16, ifindex).map_err(err(
            fd,
            format!(
                "bind the packet socket to protocol {:#06x} on {}",
                p.protocol,
                if p.interface.is_empty() {
                    "every interface"
                } else {
                    &p.interface
                }
            ),
        ))?;
    }
    // The kernel lists memberships newest first.
    for m in p.memberships.iter().rev() {
        let mut mreq = [0u8; 40]; // struct packet_mreq_max
        mreq[..4].copy_from_slice(&interface_index(fd, &m.interface)?.to_ne_bytes());
        mreq[4..6].copy_from_slice(&(m.mr_type as u16).to_ne_bytes());
        mreq[6..8].copy_from_slice(&(m.address.len() as u16).to_ne_bytes());
        mreq[8..8 + m.address.len()].copy_from_slice(&m.address);
        for _ in 0..m.count {
            ss::setsockopt_bytes(c, opt::SOL_PACKET, opt::PACKET_ADD_MEMBERSHIP, &mreq).map_err(
                err(
                    fd,
                    format!("packet membership of type {} on {}", m.mr_type, m.interface),
                ),
            )?;
        }
    }
    if p.fanout != 0 {
        ss::setsockopt_int(c, opt::SOL_PACKET, opt::PACKET_FANOUT, p.fanout as i32).map_err(
            err(
                fd,
                format!("join packet fanout group {}", p.fanout & 0xffff),
            ),
        )?;
    }
    if p.copy_thresh != 0 {
        ss::setsockopt_int(
            c,
            opt::SOL_PACKET,
            opt::PACKET_COPY_THRESH,
            p.copy_thresh as i32,
        )
        .map_err(err(fd, "PACKET_COPY_THRESH"))?;
    }
    Ok(sock)
}

/// A netlink socket of the same protocol, bound to the same port id, in the same groups,
/// connected to the same destination.
fn netlink_socket(
    fd: i32,
    s: &SocketState,
    n: &crate::state::NetlinkSocketState,
) -> Result<OwnedFd, RestoreError> {
    let sock = ss::socket(libc::AF_NETLINK, s.sock_type as i32, n.protocol as i32).map_err(err(
        fd,
        format!("netlink socket of protocol {}", n.protocol),
    ))?;
    let c = sock.as_fd();
    set_opts(fd, c, s)?;
    if n.port_id != 0 {
        ss::netlink_address(c, n.port_id, 0, false).map_err(|e| {
            let hint = if e == Errno::EADDRINUSE {
                " (is the dumped process still running, e.g. after --leave-running?)"
            } else {
                ""
            };
            err(fd, format!("bind netlink port id {}{hint}", n.port_id))(e)
        })?;
    }
    for (w, word) in n.groups.iter().enumerate() {
        for bit in 0..32 {
            if word & (1 << bit) != 0 {
                let group = (w * 32 + bit + 1) as i32;
                ss::setsockopt_int(
                    c,
                    crate::image::sockopt::SOL_NETLINK,
                    crate::image::sockopt::NETLINK_ADD_MEMBERSHIP,
                    group,
                )
                .map_err(err(fd, format!("join netlink group {group}")))?;
            }
        }
    }
    if n.dst_pid != 0 || n.dst_group != 0 {
        ss::netlink_address(c, n.dst_pid, n.dst_group, true).map_err(err(
            fd,
            format!(
                "connect to netlink port id {} group {}",
                n.dst_pid, n.dst_group
            ),
        ))?;
    }
    Ok(sock)
}

fn sock_type(fd: i32, s: &SocketState) -> Result<SockType, RestoreError> {
    SockType::try_from(s.sock_type as i32).map_err(err(fd, "socket type"))
}

fn pair(fd: i32, s: &SocketState) -> Result<(OwnedFd, OwnedFd), RestoreError> {
    socketpair(
        AddressFamily::Unix,
        sock_type(fd, s)?,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(err(fd, "socketpair"))
}

/// Attaches the recorded socket filter and sets the recorded options, only those the image
/// format allows, in its order.
fn set_opts(fd: i32, sock: BorrowedFd<'_>, s: &SocketState) -> Result<(), RestoreError> {
    if !s.filter.is_empty() {
        ss::attach_filter(sock, &s.filter).map_err(err(fd, "attach the socket filter"))?;
    }
    set_opts_where(fd, sock, s, |_| true)
}

/// Sets the recorded options that `pick` selects.
fn set_opts_where(
    fd: i32,
    sock: BorrowedFd<'_>,
    s: &SocketState,
    pick: impl Fn(&SockOptState) -> bool,
) -> Result<(), RestoreError> {
    for o in s.opts.iter().filter(|o| pick(o)) {
        if !crate::image::ALLOWED_SOCKET_OPTS.contains(&(o.level, o.name)) {
            continue;
        }
        let mut value = o.value.clone();
        let mut name = o.name;
        // getsockopt reports twice what setsockopt asks for (the kernel's bookkeeping share);
        // the forcing variants take a size beyond net.core.[rw]mem_max, as the process may
        // have had.
        if o.level == libc::SOL_SOCKET
            && (o.name == libc::SO_RCVBUF || o.name == libc::SO_SNDBUF)
            && value.len() == 4
        {
            let v = i32::from_ne_bytes([value[0], value[1], value[2], value[3]]) / 2;
            value = v.to_ne_bytes().to_vec();
            name = if o.name == libc::SO_RCVBUF {
                libc::SO_RCVBUFFORCE
            } else {
                libc::SO_SNDBUFFORCE
            };
        }
        ss::setsockopt_bytes(sock, o.level, name, &value).map_err(err(
            fd,
            format!("setsockopt level {} option {}", o.level, o.name),
        ))?;
    }
    Ok(())
}

/// The options leaving TCP repair mode resets (`SO_REUSEADDR`), and the buffer sizes the
/// repair may have enlarged to hold the queues.
fn changed_by_repair(o: &SockOptState) -> bool {
    o.level == libc::SOL_SOCKET
        && [
            libc::SO_REUSEADDR,
            libc::SO_RCVBUF,
            libc::SO_SNDBUF,
            crate::image::sockopt::SO_BUF_LOCK,
        ]
        .contains(&o.name)
}

/// Writes `u`'s queued messages from `other`, so they land in `u`'s socket's receive queue.
fn queue_through(fd: i32, other: BorrowedFd<'_>, u: &UnixSocketState) -> Result<(), RestoreError> {
    // A queue with descriptors or credentials in flight is sent once the tasks hold their
    // descriptors ([`send_in_flight`]).
    if !u.in_flight.is_empty() {
        return Ok(());
    }
    for m in &u.queue {
        let n = send(
            other.as_raw_fd(),
            m,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        )
        .map_err(err(fd, "queue data"))?;
        if n != m.len() {
            return Err(err(fd, format!("queue data: {n} of {} bytes", m.len()))(
                Errno::EAGAIN,
            ));
        }
    }
    Ok(())
}

/// An end of a pair that had an abstract name (bound, or autobound when it sent with
/// `SO_PASSCRED`) gets it again.
fn bind_abstract(fd: i32, sock: BorrowedFd<'_>, u: &UnixSocketState) -> Result<(), RestoreError> {
    if u.name.first() != Some(&0) {
        return Ok(());
    }
    let Some(addr) = unix_addr(&u.name) else {
        return Ok(());
    };
    bind(sock.as_raw_fd(), &addr).map_err(|e| {
        let hint = if e == Errno::EADDRINUSE {
            " (is the dumped process still running, e.g. after --leave-running?)"
        } else {
            ""
        };
        err(
            fd,
            format!("bind {}{hint}", sockdiag::display_name(&u.name)),
        )(e)
    })
}

fn apply_shutdown(fd: i32, sock: BorrowedFd<'_>, u: &UnixSocketState) -> Result<(), RestoreError> {
    let how = match u.shutdown & 3 {
        1 => Shutdown::Read,
        2 => Shutdown::Write,
        3 => Shutdown::Both,
        _ => return Ok(()),
    };
    shutdown(sock.as_raw_fd(), how).map_err(err(fd, "shutdown"))
}

fn unix_addr(name: &[u8]) -> Option<UnixAddr> {
    match name.split_first()? {
        (0, rest) => UnixAddr::new_abstract(rest).ok(),
        _ => {
            UnixAddr::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name)).ok()
        }
    }
}

/// Makes way for binding `path` again: a socket file left behind by the dumped process (same
/// inode) is removed; anything else there is an error, and so is a socket still bound to it.
fn clear_socket_path(
    fd: i32,
    path: &str,
    u: &UnixSocketState,
    diag: &mut Option<HashMap<u64, sockdiag::UnixDiag>>,
) -> Result<(), RestoreError> {
    let Some(then) = u.file else { return Ok(()) };
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RestoreError::FileChanged(format!("fd {fd}: {path}: {e}"))),
    };
    if !m.file_type().is_socket() || m.ino() != then.ino || m.dev() != then.dev {
        return Err(RestoreError::FileChanged(format!(
            "fd {fd}: {path} is not the socket file of the dump (inode {} then, {} now); not removing it",
            then.ino,
            m.ino()
        )));
    }
    if diag.is_none() {
        *diag = Some(sockdiag::unix_sockets().map_err(err(fd, "sock_diag of Unix sockets"))?);
    }
    if diag.as_ref().is_some_and(|d| {
        d.values().any(|x| {
            x.vfs
                .is_some_and(|(ino, dev)| ino == then.ino && dev == then.dev)
        })
    }) {
        return Err(RestoreError::FileChanged(format!(
            "fd {fd}: {path} is still bound by a live socket (is the dumped process still running, e.g. after --leave-running?)"
        )));
    }
    std::fs::remove_file(path).map_err(|e| {
        RestoreError::FileChanged(format!("fd {fd}: remove the stale socket file {path}: {e}"))
    })
}

/// A stream socket that was accepted (it bears the name of a listener of the process, as
/// accepted sockets do) is made by connecting to that listener and accepting: the accepted
/// end and the connecting one.
fn accepted_end(
    fd: i32,
    s: &SocketState,
    u: &UnixSocketState,
    listeners: &HashMap<Vec<u8>, OwnedFd>,
) -> Result<Option<(OwnedFd, OwnedFd)>, RestoreError> {
    if s.sock_type == libc::SOCK_DGRAM as u32 || u.backlog.is_some() || u.name.is_empty() {
        return Ok(None);
    }
    let (Some(l), Some(addr)) = (listeners.get(&u.name), unix_addr(&u.name)) else {
        return Ok(None);
    };
    let client = socket(
        AddressFamily::Unix,
        sock_type(fd, s)?,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err(fd, "socket"))?;
    connect(client.as_raw_fd(), &addr).map_err(err(
        fd,
        format!("connect to {} to accept", sockdiag::display_name(&u.name)),
    ))?;
    let accepted = ss::accept(l.as_fd()).map_err(err(
        fd,
        format!("accept on {}", sockdiag::display_name(&u.name)),
    ))?;
    Ok(Some((accepted, client)))
}

fn unix_socket(
    fd: i32,
    s: &SocketState,
    u: &UnixSocketState,
    listeners: &HashMap<Vec<u8>, OwnedFd>,
    diag: &mut Option<HashMap<u64, sockdiag::UnixDiag>>,
    created: &mut Vec<(String, u64)>,
    warnings: &mut Vec<String>,
) -> Result<OwnedFd, RestoreError> {
    let ty = sock_type(fd, s)?;
    let dgram = s.sock_type == libc::SOCK_DGRAM as u32;
    let named = |n: &[u8]| sockdiag::display_name(n);
    // Connected to something outside the process: reconnect by name where possible, else a
    // socket whose peer is gone (queued data, then end of stream).
    if u.peer_external && !dgram {
        if let Some(addr) = unix_addr(&u.peer_name) {
            let sock = socket(AddressFamily::Unix, ty, SockFlag::SOCK_CLOEXEC, None)
                .map_err(err(fd, "socket"))?;
            set_opts(fd, sock.as_fd(), s)?;
            match connect(sock.as_raw_fd(), &addr) {
                Ok(()) => {
                    // What it had written into the connection before it was accepted.
                    for m in &u.pending_sent {
                        if ty == SockType::SeqPacket {
                            let n = send(
                                sock.as_raw_fd(),
                                m,
                                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                            )
                            .map_err(err(fd, "write into the pending connection"))?;
                            if n != m.len() {
                                return Err(err(
                                    fd,
                                    format!("write into the pending connection: {n} of {} bytes", m.len()),
                                )(Errno::EAGAIN));
                            }
                        } else {
                            send_all(fd, sock.as_fd(), m, "write into the pending connection")?;
                        }
                    }
                    apply_shutdown(fd, sock.as_fd(), u)?;
                    return Ok(sock);
                }
                Err(e) => warnings.push(format!(
                    "fd {fd}: could not reconnect to {} ({e}); the socket reads its queued data, then end of stream{}",
                    named(&u.peer_name),
                    if u.pending_sent.is_empty() {
                        ""
                    } else {
                        " (what it had written into its connection not accepted yet is dropped)"
                    }
                )),
            }
        }
        let (a, other) = match accepted_end(fd, s, u, listeners)? {
            Some(p) => p,
            None => pair(fd, s)?,
        };
        set_opts(fd, a.as_fd(), s)?;
        queue_through(fd, other.as_fd(), u)?;
        drop(other);
        apply_shutdown(fd, a.as_fd(), u)?;
        return Ok(a);
    }
    let path_name = u.name.first().is_some_and(|b| *b != 0);
    // Datagrams queued on a socket without a name to send them to: written through the other
    // end of a pair, which is then closed (the socket keeps no peer it could send to).
    let through_pair = dgram && !u.queue.is_empty() && u.name.is_empty();
    let sock = if through_pair {
        let (a, other) = pair(fd, s)?;
        queue_through(fd, other.as_fd(), u)?;
        drop(other);
        a
    } else {
        socket(AddressFamily::Unix, ty, SockFlag::SOCK_CLOEXEC, None).map_err(err(fd, "socket"))?
    };
    set_opts(fd, sock.as_fd(), s)?;
    if let Some(addr) = unix_addr(&u.name) {
        if !path_name {
            bind(sock.as_raw_fd(), &addr).map_err(err(fd, format!("bind {}", named(&u.name))))?;
            if dgram && !through_pair && !senders_named(u) {
                resend_queue(fd, ty, &addr, u)?;
            }
        } else {
            let bound_name = String::from_utf8_lossy(&u.name).into_owned();
            // The socket file is where the process had it: at its name, or renamed (a JVM's
            // attach socket is bound as .attach_pidN and renamed .java_pidN).
            let path = u.file_path.clone().unwrap_or_else(|| bound_name.clone());
            clear_socket_path(fd, &path, u, diag)?;
            bind(sock.as_raw_fd(), &addr).map_err(|e| {
                let why = if u.file.is_none() && e == Errno::EADDRINUSE {
                    format!(
                        "bind {bound_name} (its file had been removed at dump; something else is there now)"
                    )
                } else {
                    format!("bind {bound_name}")
                };
                err(fd, why)(e)
            })?;
            if dgram && !through_pair && !senders_named(u) {
                resend_queue(fd, ty, &addr, u)?;
            }
            match u.file {
                Some(file) => {
                    if path != bound_name {
                        std::fs::rename(&bound_name, &path).map_err(|e| {
                            RestoreError::FileChanged(format!(
                                "fd {fd}: move the socket file {bound_name} to {path}: {e}"
                            ))
                        })?;
                    }
                    if let Ok(m) = std::fs::symlink_metadata(&path) {
                        created.push((path.clone(), m.ino()));
                    }
                    std::fs::set_permissions(
                        &path,
                        std::fs::Permissions::from_mode(file.mode & 0o7777),
                    )
                    .and_then(|()| {
                        std::os::unix::fs::lchown(&path, Some(u.owner.0), Some(u.owner.1))
                    })
                    .map_err(|e| {
                        RestoreError::FileChanged(format!("fd {fd}: owner and mode of {path}: {e}"))
                    })?;
                }
                // The file was removed while the socket kept its name: removed again.
                None => {
                    std::fs::remove_file(&bound_name).map_err(|e| {
                        RestoreError::FileChanged(format!(
                            "fd {fd}: remove {bound_name} again (it had been removed at dump): {e}"
                        ))
                    })?;
                }
            }
        }
    }
    if let Some(backlog) = u.backlog {
        ss::listen(sock.as_fd(), backlog.min(i32::MAX as u32) as i32).map_err(err(fd, "listen"))?;
    }
    if u.peer_external
        && dgram
        && !senders_named(u)
        && let Some(addr) = unix_addr(&u.peer_name)
        && let Err(e) = connect(sock.as_raw_fd(), &addr)
    {
        warnings.push(format!(
            "fd {fd}: could not reconnect to {} ({e}); the socket is left unconnected",
            named(&u.peer_name)
        ));
    }
    apply_shutdown(fd, sock.as_fd(), u)?;
    Ok(sock)
}

/// Whether the queued datagrams of `u` came from named senders: they are sent again from
/// those names once every socket exists (see [`unix_queue_from_senders`]).
fn senders_named(u: &UnixSocketState) -> bool {
    !u.queue_from.is_empty()
}

/// A datagram socket's queue, each datagram sent from its sender: the process's own socket of
/// that name, else a socket bound to the name for the purpose (a path one removed again), else
/// an unnamed one (warned). Then the socket connects to its outside peer, as
/// [`unix_socket`] leaves it to do here.
fn unix_queue_from_senders(
    fd: i32,
    s: &SocketState,
    u: &UnixSocketState,
    socks: &[(i32, u32, &SocketState)],
    by_ino: &HashMap<u64, OwnedFd>,
    warnings: &mut Vec<String>,
) -> Result<(), RestoreError> {
    let (Some(to), Some(me)) = (unix_addr(&u.name), by_ino.get(&s.ino)) else {
        return Ok(());
    };
    let ty = sock_type(fd, s)?;
    for (m, from) in u.queue.iter().zip(&u.queue_from) {
        let own = socks.iter().find_map(|(_, _, o)| match &o.kind {
            SocketKind::Unix(ou)
                if !from.is_empty() && ou.name == *from && o.sock_type == s.sock_type =>
            {
                by_ino.get(&o.ino)
            }
            _ => None,
        });
        let sent = match own {
            Some(sender) => sendto(sender.as_raw_fd(), m, &to, MsgFlags::MSG_DONTWAIT),
            None => {
                let tmp = socket(AddressFamily::Unix, ty, SockFlag::SOCK_CLOEXEC, None)
                    .map_err(err(fd, "socket"))?;
                let named = unix_addr(from).is_some_and(|a| bind(tmp.as_raw_fd(), &a).is_ok());
                if !named && !from.is_empty() {
                    warnings.push(format!(
                        "fd {fd}: a datagram queued from {} comes from an unnamed socket (that name is taken)",
                        sockdiag::display_name(from)
                    ));
                }
                let r = sendto(tmp.as_raw_fd(), m, &to, MsgFlags::MSG_DONTWAIT);
                if named && from.first().is_some_and(|b| *b != 0) {
                    let _ = std::fs::remove_file(
                        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(from),
                    );
                }
                r
            }
        };
        sent.map_err(err(fd, "queue a datagram from its sender"))?;
    }
    if u.peer_external
        && let Some(addr) = unix_addr(&u.peer_name)
        && let Err(e) = connect(me.as_raw_fd(), &addr)
    {
        warnings.push(format!(
            "fd {fd}: could not reconnect to {} ({e}); the socket is left unconnected",
            sockdiag::display_name(&u.peer_name)
        ));
    }
    Ok(())
}

/// A UDP socket's queue, each datagram sent from its sender: the process's own socket bound
/// to that address, else a socket bound there for the purpose, else an unbound one (warned).
fn inet_queue_from_senders(
    fd: i32,
    s: &SocketState,
    i: &InetSocketState,
    socks: &[(i32, u32, &SocketState)],
    by_ino: &HashMap<u64, OwnedFd>,
    warnings: &mut Vec<String>,
) -> Result<(), RestoreError> {
    let mut to = i.local;
    if to.ip().is_unspecified() {
        to.set_ip(if to.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    for (m, from) in i.queue.iter().zip(&i.queue_from) {
        let own = socks.iter().find_map(|(_, _, o)| match &o.kind {
            SocketKind::Inet(oi)
                if oi.protocol == i.protocol
                    && o.ino != s.ino
                    && from.port() != 0
                    && oi.local.port() == from.port()
                    && (oi.local.ip() == from.ip() || oi.local.ip().is_unspecified()) =>
            {
                by_ino.get(&o.ino)
            }
            _ => None,
        });
        let tmp;
        let sender = match own {
            Some(sender) => sender.as_fd(),
            None => {
                tmp = ss::socket(s.family as i32, s.sock_type as i32, i.protocol as i32)
                    .map_err(err(fd, "socket"))?;
                let _ = ss::setsockopt_int(tmp.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
                if from.port() == 0 || bind_inet(fd, tmp.as_fd(), from).is_err() {
                    warnings.push(format!(
                        "fd {fd}: a datagram queued from {from} comes from another address (that one is taken)"
                    ));
                }
                tmp.as_fd()
            }
        };
        let r = match to {
            SocketAddr::V4(v4) => sendto(
                sender.as_raw_fd(),
                m,
                &SockaddrIn::from(v4),
                MsgFlags::MSG_DONTWAIT,
            ),
            SocketAddr::V6(v6) => sendto(
                sender.as_raw_fd(),
                m,
                &SockaddrIn6::from(v6),
                MsgFlags::MSG_DONTWAIT,
            ),
        };
        r.map_err(err(fd, format!("queue a datagram from {from} to {to}")))?;
    }
    Ok(())
}

/// Queued datagrams of a named socket, sent again to its own name from an unnamed socket
/// (their senders' addresses are not kept), before it connects anywhere (a connected datagram
/// socket takes datagrams from its peer only).
fn resend_queue(
    fd: i32,
    ty: SockType,
    addr: &UnixAddr,
    u: &UnixSocketState,
) -> Result<(), RestoreError> {
    if u.queue.is_empty() {
        return Ok(());
    }
    let tmp =
        socket(AddressFamily::Unix, ty, SockFlag::SOCK_CLOEXEC, None).map_err(err(fd, "socket"))?;
    for m in &u.queue {
        sendto(tmp.as_raw_fd(), m, addr, MsgFlags::MSG_DONTWAIT).map_err(err(fd, "queue data"))?;
    }
    Ok(())
}

fn inet_family(a: &SocketAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn bind_inet(fd: i32, sock: BorrowedFd<'_>, a: &SocketAddr) -> Result<(), RestoreError> {
    let r = match a {
        SocketAddr::V4(v4) => bind(sock.as_raw_fd(), &SockaddrIn::from(*v4)),
        SocketAddr::V6(v6) => bind(sock.as_raw_fd(), &SockaddrIn6::from(*v6)),
    };
    r.map_err(|e| {
        let hint = if e == Errno::EADDRINUSE {
            " (is the dumped process still running, e.g. after --leave-running?)"
        } else {
            ""
        };
        err(fd, format!("bind {a}{hint}"))(e)
    })
}

fn connect_inet(fd: i32, sock: BorrowedFd<'_>, a: &SocketAddr) -> Result<(), RestoreError> {
    let r = match a {
        SocketAddr::V4(v4) => connect(sock.as_raw_fd(), &SockaddrIn::from(*v4)),
        SocketAddr::V6(v6) => connect(sock.as_raw_fd(), &SockaddrIn6::from(*v6)),
    };
    r.map_err(err(fd, format!("connect to {a}")))
}

/// A UDP or TCP socket; for an established connection also the bytes to send once it leaves
/// repair mode.
fn inet_socket(
    fd: i32,
    s: &SocketState,
    i: &InetSocketState,
) -> Result<(OwnedFd, Option<Vec<u8>>), RestoreError> {
    let family = if s.family == libc::AF_INET6 as u32 {
        AddressFamily::Inet6
    } else {
        inet_family(&i.local)
    };
    let sock = ss::socket(family as i32, s.sock_type as i32, i.protocol as i32)
        .map_err(err(fd, format!("socket of protocol {}", i.protocol)))?;
    let c = sock.as_fd();
    if let (Some(conn), Some(peer)) = (&i.tcp, &i.peer)
        && let Some(u) = &conn.unaccepted
    {
        connect_again(fd, c, s, i, peer, u)?;
        return Ok((sock, None));
    }
    if let (Some(conn), Some(peer)) = (&i.tcp, &i.peer) {
        // The process's own filter once the FINs are set again: it might drop the segments
        // that set them.
        set_opts_where(fd, c, s, |_| true)?;
        let unsent = repair_connection(fd, c, &i.local, peer, conn)?;
        if !s.filter.is_empty() {
            ss::attach_filter(c, &s.filter).map_err(err(fd, "attach the socket filter"))?;
        }
        return Ok((sock, Some(unsent)));
    }
    set_opts(fd, c, s)?;
    // A raw socket reports its protocol as its port, and binds to an address only.
    let raw = s.sock_type == libc::SOCK_RAW as u32;
    let tcp = i.protocol == libc::IPPROTO_TCP as u32;
    if (!raw && i.local.port() != 0) || !i.local.ip().is_unspecified() {
        match bind_inet(fd, c, &i.local) {
            Err(RestoreError::Socket {
                source: Errno::EADDRINUSE,
                ..
            }) if tcp && orphans_removed(fd, &i.local)? => {
                bind_inet(fd, c, &i.local)?;
            }
            r => r?,
        }
    }
    if let Some(backlog) = i.backlog {
        let backlog = backlog.min(i32::MAX as u32) as i32;
        match ss::listen(c, backlog) {
            Err(Errno::EADDRINUSE) if orphans_removed(fd, &i.local)? => ss::listen(c, backlog),
            r => r,
        }
        .map_err(|e| {
            let hint = if e == Errno::EADDRINUSE {
                " (is the dumped process still running, e.g. after --leave-running?)"
            } else {
                ""
            };
            err(fd, format!("listen on {}{hint}", i.local))(e)
        })?;
    } else if let Some(peer) = &i.peer {
        connect_inet(fd, c, peer)?;
    }
    inet_shutdown(fd, c, i.shutdown)?;
    Ok((sock, None))
}

/// How long a connection made again to a listener of the process may take, and its bytes
/// to go out.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection that waited in the accept queue of a listener of the process, not accepted
/// yet: made again by a real handshake with the restored listener (built before it, and
/// before any later connection of that queue), from its own address, and the bytes the
/// process had written into it written again; the listener's side waits in the queue for
/// the process's own `accept`. Its sequence numbers, windows and options are new ones.
fn connect_again(
    fd: i32,
    c: BorrowedFd<'_>,
    s: &SocketState,
    i: &InetSocketState,
    peer: &SocketAddr,
    u: &crate::state::TcpUnaccepted,
) -> Result<(), RestoreError> {
    set_opts_where(fd, c, s, |_| true)?;
    match bind_inet(fd, c, &i.local) {
        Err(RestoreError::Socket {
            source: Errno::EADDRINUSE,
            ..
        }) if orphans_removed(fd, &i.local)? => bind_inet(fd, c, &i.local)?,
        r => r?,
    }
    let deadline = std::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let wait_out = |what: &str| -> Result<(), RestoreError> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut pfd = [nix::poll::PollFd::new(c, nix::poll::PollFlags::POLLOUT)];
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)) {
            Ok(1) => Ok(()),
            Ok(_) => Err(err(
                fd,
                format!("{what} within {} s", HANDSHAKE_TIMEOUT.as_secs()),
            )(Errno::ETIMEDOUT)),
            Err(e) => Err(err(fd, what.to_string())(e)),
        }
    };
    let flags = fcntl(c, FcntlArg::F_GETFL).map_err(err(fd, "F_GETFL"))?;
    fcntl(
        c,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(err(fd, "F_SETFL"))?;
    match connect_inet(fd, c, peer) {
        Ok(()) => {}
        Err(RestoreError::Socket {
            source: Errno::EINPROGRESS,
            ..
        }) => {
            wait_out(&format!("connect to the restored listener {peer}"))?;
            let e = ss::getsockopt_int(c, libc::SOL_SOCKET, libc::SO_ERROR)
                .map_err(err(fd, "SO_ERROR"))?;
            if e != 0 {
                return Err(err(fd, format!("connect to the restored listener {peer}"))(
                    Errno::from_raw(e),
                ));
            }
        }
        Err(e) => return Err(e),
    }
    let mut off = 0;
    while off < u.data.len() {
        match send(
            c.as_raw_fd(),
            &u.data[off..(off + CHUNK).min(u.data.len())],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => off += n,
            Err(Errno::EAGAIN) => wait_out("write what the connection carried")?,
            Err(e) => return Err(err(fd, "write what the connection carried")(e)),
        }
    }
    // The process's own filter last: it might drop the handshake's segments.
    if !s.filter.is_empty() {
        ss::attach_filter(c, &s.filter).map_err(err(fd, "attach the socket filter"))?;
    }
    inet_shutdown(fd, c, i.shutdown)
}

/// A TCP port the image binds is taken: the orphans of connections on that address that no
/// process holds (TIME-WAIT, FIN-WAIT-2, … left by connections the dumped process closed)
/// are removed, which neither `SO_REUSEADDR` nor a bind in repair mode gets past at `listen`
/// (see [`sockdiag::destroy_orphans`]). Whether any was removed (then binding again may
/// succeed).
fn orphans_removed(fd: i32, local: &SocketAddr) -> Result<bool, RestoreError> {
    let n = sockdiag::destroy_orphans(*local).map_err(err(
        fd,
        format!("remove the closed connections no process holds that keep {local}"),
    ))?;
    if n > 0 {
        tracing::debug!(fd, %local, removed = n, "orphaned closing TCP sockets removed from a port to bind");
    }
    Ok(n > 0)
}

/// Sets the shutdown bits of an inet socket. An unconnected one reports `ENOTCONN` but takes
/// them all the same.
fn inet_shutdown(fd: i32, c: BorrowedFd<'_>, bits: u32) -> Result<(), RestoreError> {
    let how = match bits & 3 {
        1 => Shutdown::Read,
        2 => Shutdown::Write,
        3 => Shutdown::Both,
        _ => return Ok(()),
    };
    match shutdown(c.as_raw_fd(), how) {
        Ok(()) | Err(Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(err(fd, "shutdown")(e)),
    }
}

/// Rebuilds a connection in repair mode, as the dump read it, and leaves it in repair mode.
/// Returns the bytes that had never been sent.
///
/// A half-closed or closing connection is built established first, its sequence numbers
/// short of the FINs (each takes one); then the FINs are set in the order the connection saw
/// them (see [`tcp_fin`]): the process's own with `shutdown(SHUT_WR)` on the send queue
/// (counted as sent, nothing leaves the host), the peer's as a segment from the peer, and the
/// peer's acknowledgement of the process's FIN (FIN-WAIT-2) the same way. A FIN that waited
/// behind bytes never sent is sent after them, once out of repair mode ([`Built::finish`]).
fn repair_connection(
    fd: i32,
    c: BorrowedFd<'_>,
    local: &SocketAddr,
    peer: &SocketAddr,
    t: &TcpConnState,
) -> Result<Vec<u8>, RestoreError> {
    use crate::state::{TCP_CLOSE_WAIT, TCP_CLOSING, TCP_ESTABLISHED, TCP_LAST_ACK};
    let tcp = |name: i32, v: i32, what: &'static str| {
        ss::setsockopt_int(c, libc::IPPROTO_TCP, name, v).map_err(err(fd, what))
    };
    let recv_seq = t.recv_seq.wrapping_sub(u32::from(t.fin_received()));
    let send_seq = t.send_seq.wrapping_sub(u32::from(t.fin_sent()));
    tcp(libc::TCP_REPAIR, 1, "enter TCP repair mode")?;
    // Sequence numbers only while the socket is closed: they are those of the queues' first
    // bytes; writing the queues back advances them to what the dump read.
    tcp(libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE")?;
    tcp(
        libc::TCP_QUEUE_SEQ,
        recv_seq.wrapping_sub(t.recv_queue.len() as u32) as i32,
        "set the receive sequence",
    )?;
    tcp(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE")?;
    let snd_una = send_seq.wrapping_sub(t.send_queue.len() as u32);
    tcp(libc::TCP_QUEUE_SEQ, snd_una as i32, "set the send sequence")?;
    // In repair mode bind reuses the port by force and connect sends nothing.
    bind_inet(fd, c, local)?;
    connect_inet(fd, c, peer)?;

    let mut opts: Vec<u8> = Vec::new();
    let mut opt = |code: u32, val: u32| {
        opts.extend_from_slice(&code.to_ne_bytes());
        opts.extend_from_slice(&val.to_ne_bytes());
    };
    opt(TCPOPT_MSS, t.mss);
    if t.options & TCPI_OPT_WSCALE != 0 {
        opt(TCPOPT_WINDOW, t.snd_wscale | (t.rcv_wscale << 16));
    }
    if t.options & TCPI_OPT_SACK != 0 {
        opt(TCPOPT_SACK_PERM, 0);
    }
    if t.options & TCPI_OPT_TIMESTAMPS != 0 {
        opt(TCPOPT_TIMESTAMP, 0);
    }
    ss::setsockopt_bytes(c, libc::IPPROTO_TCP, libc::TCP_REPAIR_OPTIONS, &opts)
        .map_err(err(fd, "TCP_REPAIR_OPTIONS"))?;
    tcp(libc::TCP_TIMESTAMP, t.timestamp as i32, "TCP_TIMESTAMP")?;

    // Room for the queues: the original's buffers may have grown by autotuning.
    let sol = |name: i32, v: usize, what: &'static str| {
        ss::setsockopt_int(
            c,
            libc::SOL_SOCKET,
            name,
            i32::try_from(v).unwrap_or(i32::MAX),
        )
        .map_err(err(fd, what))
    };
    if t.recv_queue.len() > CHUNK {
        sol(
            libc::SO_RCVBUFFORCE,
            t.recv_queue.len() * 2,
            "SO_RCVBUFFORCE",
        )?;
    }
    if t.send_queue.len() > CHUNK {
        sol(
            libc::SO_SNDBUFFORCE,
            t.send_queue.len() * 2,
            "SO_SNDBUFFORCE",
        )?;
    }
    let sent_len = t.send_queue.len() - (t.unsent as usize).min(t.send_queue.len());
    tcp(libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE")?;
    send_all(fd, c, &t.recv_queue, "restore the receive queue")?;
    // Bytes the peer may have seen go back in repair mode (they count as sent and are
    // retransmitted if need be); the never-sent rest goes out normally after repair mode.
    tcp(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE")?;
    send_all(fd, c, &t.send_queue[..sent_len], "restore the send queue")?;
    tcp(libc::TCP_REPAIR_QUEUE, 0, "TCP_REPAIR_QUEUE")?;

    let mut window = t.window;
    if t.fin_received() {
        // rcv_wup may count the peer's FIN, which the connection has not received yet.
        window[4] = window[4].wrapping_sub(1);
        window[3] = window[3].wrapping_add(1);
    }
    let mut w = Vec::with_capacity(20);
    for v in window {
        w.extend_from_slice(&v.to_ne_bytes());
    }
    ss::setsockopt_bytes(c, libc::IPPROTO_TCP, libc::TCP_REPAIR_WINDOW, &w)
        .map_err(err(fd, "TCP_REPAIR_WINDOW"))?;

    // The FINs, in the order the connection took them.
    let fin_now = t.fin_sent() && t.unsent == 0;
    let our_fin = || -> Result<(), RestoreError> {
        tcp(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE")?;
        shutdown(c.as_raw_fd(), Shutdown::Write).map_err(err(fd, "shutdown in repair mode"))?;
        tcp(libc::TCP_REPAIR_QUEUE, 0, "TCP_REPAIR_QUEUE")
    };
    let wscale = if t.options & TCPI_OPT_WSCALE != 0 {
        t.snd_wscale.min(14)
    } else {
        0
    };
    let from_peer = |seq: u32, ack: u32, flags: u8, want: u32, what: &str| {
        let segment = tcp_fin::Segment {
            from: *peer,
            to: *local,
            seq,
            ack,
            flags,
            window: (t.window[1] >> wscale).min(u32::from(u16::MAX)) as u16,
        };
        tcp_fin::send(&segment).map_err(err(fd, format!("send {what} on a raw socket")))?;
        if !tcp_fin::wait_state(c, want).map_err(err(fd, "TCP_INFO"))? {
            let now = tcp_fin::state_of(c).unwrap_or(0);
            return Err(err(
                fd,
                format!(
                    "the restored connection did not take {what}: state {}, not {}",
                    crate::state::tcp_state_name(now),
                    crate::state::tcp_state_name(want)
                ),
            )(Errno::EPROTO));
        }
        Ok(())
    };
    if fin_now && t.state != TCP_LAST_ACK {
        our_fin()?;
    }
    if t.fin_received() {
        let want = if fin_now && t.state == TCP_CLOSING {
            TCP_CLOSING
        } else {
            TCP_CLOSE_WAIT
        };
        from_peer(
            recv_seq,
            snd_una,
            tcp_fin::FIN | tcp_fin::ACK,
            want,
            "the peer's FIN",
        )?;
    }
    if fin_now && t.state == TCP_LAST_ACK {
        our_fin()?;
    }
    if t.fin_acked() {
        from_peer(
            t.recv_seq,
            t.send_seq,
            tcp_fin::ACK,
            t.state,
            "the peer's acknowledgement of the FIN",
        )?;
    }
    let want = if t.fin_sent() && !fin_now {
        // The FIN goes out after the bytes never sent.
        if t.fin_received() {
            TCP_CLOSE_WAIT
        } else {
            TCP_ESTABLISHED
        }
    } else {
        t.state
    };
    let now = tcp_fin::state_of(c).map_err(err(fd, "TCP_INFO"))?;
    if now != want {
        return Err(err(
            fd,
            format!(
                "the restored connection is in state {}, not {}",
                crate::state::tcp_state_name(now),
                crate::state::tcp_state_name(want)
            ),
        )(Errno::EPROTO));
    }
    Ok(t.send_queue[sent_len..].to_vec())
}

/// A copy of descriptor `fd` of the process ferry sees as `pid`.
fn take_from(pid: nix::unistd::Pid, fd: i32) -> Result<OwnedFd, RestoreError> {
    let pidfd = crate::sys::pidfd_open(pid).map_err(err(fd, format!("pidfd_open of {pid}")))?;
    crate::sys::pidfd_getfd(pidfd.as_fd(), fd).map_err(err(fd, format!("pidfd_getfd of pid {pid}")))
}

/// A file in flight that no process held, opened again where it was.
fn reopen_passed(fd: i32, file: &FileRef, flags: u32, pos: u64) -> Result<OwnedFd, RestoreError> {
    let now = crate::dump::identity_of(&file.path).map_err(|e| {
        RestoreError::FileChanged(format!("fd {fd}: {} (in flight): {e}", file.path))
    })?;
    if (now.dev, now.ino) != (file.identity.dev, file.identity.ino) {
        return Err(RestoreError::FileChanged(format!(
            "fd {fd}: {} (a descriptor in flight) is another file now",
            file.path
        )));
    }
    let oflags = OFlag::from_bits_truncate(flags as i32)
        & !(OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_TRUNC)
        | OFlag::O_CLOEXEC;
    let f: OwnedFd = nix::fcntl::open(file.path.as_str(), oflags, nix::sys::stat::Mode::empty())
        .map_err(err(fd, format!("open {} (in flight)", file.path)))?;
    if pos != 0 {
        nix::unistd::lseek(&f, pos as i64, nix::unistd::Whence::SeekSet)
            .map_err(err(fd, format!("seek {} (in flight)", file.path)))?;
    }
    Ok(f)
}

/// The open flags of a new description of a pipe end, opened through `/proc`.
fn pipe_end_flags(write: bool) -> OFlag {
    (if write {
        OFlag::O_WRONLY
    } else {
        OFlag::O_RDONLY
    }) | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC
}

/// A new description of an end of the pipe `path` (`/proc/PID/fd/N`) leads to, with the
/// status flags `flags`. A write end is opened while ferry holds a read end (a pipe opened
/// for writing without a reader fails with `ENXIO`).
fn open_pipe_end(fd: i32, path: &str, write: bool, flags: u32) -> Result<OwnedFd, RestoreError> {
    let what = || format!("open {path} (a pipe end in flight)");
    let _reader = if write {
        Some(
            nix::fcntl::open(path, pipe_end_flags(false), nix::sys::stat::Mode::empty())
                .map_err(err(fd, what()))?,
        )
    } else {
        None
    };
    let end: OwnedFd = nix::fcntl::open(path, pipe_end_flags(write), nix::sys::stat::Mode::empty())
        .map_err(err(fd, what()))?;
    fcntl(
        &end,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags as i32)),
    )
    .map_err(err(
        fd,
        format!("status flags of a pipe end in flight ({path})"),
    ))?;
    Ok(end)
}

/// An end in flight of the pipe that descriptor `held` of the restored process `pid` holds:
/// another description of it.
fn pipe_end_through(
    fd: i32,
    pid: nix::unistd::Pid,
    held: i32,
    write: bool,
    flags: u32,
) -> Result<OwnedFd, RestoreError> {
    open_pipe_end(fd, &format!("/proc/{pid}/fd/{held}"), write, flags)
}

/// An end in flight of a pipe no process holds: made here (once per pipe of the dump), its
/// buffer size and bytes set once, each end in flight a new description of it.
fn pipe_made_anew(
    fd: i32,
    pipes: &mut HashMap<u64, (OwnedFd, OwnedFd, bool)>,
    ino: u64,
    write: bool,
    flags: u32,
    queue: &Option<crate::state::PipeQueue>,
) -> Result<OwnedFd, RestoreError> {
    if let std::collections::hash_map::Entry::Vacant(e) = pipes.entry(ino) {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(err(fd, "pipe2 (a pipe in flight)"))?;
        e.insert((r, w, false));
    }
    let (r, w, filled) = pipes.get_mut(&ino).expect("inserted above");
    if let Some(q) = queue
        && !*filled
    {
        fcntl(&*w, FcntlArg::F_SETPIPE_SZ(q.size as i32))
            .map_err(err(fd, "F_SETPIPE_SZ (a pipe in flight)"))?;
        let mut off = 0;
        while off < q.data.len() {
            off += nix::unistd::write(&*w, &q.data[off..])
                .map_err(err(fd, "write the bytes of a pipe in flight"))?;
        }
        *filled = true;
    }
    let end = if write { &*w } else { &*r };
    open_pipe_end(
        fd,
        &format!("/proc/self/fd/{}", end.as_raw_fd()),
        write,
        flags,
    )
}

/// Queues that carry descriptors or credentials (`SCM_RIGHTS`, `SCM_CREDENTIALS`), sent once
/// every process holds its descriptors: each message goes through a copy of its socket's
/// peer, with copies of the descriptors it passed (taken from the restored processes) or the
/// files opened again, and the sender's credentials (its PID as ferry sees it now).
/// `procs`: each image with the PID ferry sees its restored process under.
pub fn send_in_flight(procs: &[(&ProcessState, nix::unistd::Pid)]) -> Result<(), RestoreError> {
    let actual = |fd: i32, image_pid: i32| {
        procs
            .iter()
            .find(|(p, _)| p.pid == image_pid)
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                RestoreError::Layout(format!(
                    "fd {fd}: pid {image_pid} of a message in flight is not in the image"
                ))
            })
    };
    let mut done = std::collections::HashSet::new();
    // Pipes no process holds, made here: both ends by pipe inode of the dump, and whether
    // their bytes are in.
    let mut pipes: HashMap<u64, (OwnedFd, OwnedFd, bool)> = HashMap::new();
    for (p, _) in procs {
        for f in &p.fds {
            let FdKind::Socket(s) = &f.kind else {
                continue;
            };
            let SocketKind::Unix(u) = &s.kind else {
                continue;
            };
            if u.in_flight.is_empty() || !done.insert(s.ino) {
                continue;
            }
            let fd = f.fd;
            let (ppid, pfd) = procs
                .iter()
                .find_map(|(q, _)| {
                    q.fds
                        .iter()
                        .find(|g| matches!(&g.kind, FdKind::Socket(x) if x.ino == u.peer_ino))
                        .map(|g| (q.pid, g.fd))
                })
                .ok_or_else(|| {
                    RestoreError::Layout(format!(
                        "fd {fd}: the peer socket:[{}] of a queue with descriptors in flight is not in the image",
                        u.peer_ino
                    ))
                })?;
            let peer = take_from(actual(fd, ppid)?, pfd)?;
            for (i, m) in u.queue.iter().enumerate() {
                let extra = u.in_flight.iter().find(|a| a.message as usize == i);
                let mut owned: Vec<OwnedFd> = Vec::new();
                let mut creds = None;
                if let Some(a) = extra {
                    for pf in &a.fds {
                        owned.push(match pf {
                            PassedFd::Held { pid, fd: held } => {
                                take_from(actual(fd, *pid)?, *held)?
                            }
                            PassedFd::File { file, flags, pos } => {
                                reopen_passed(fd, file, *flags, *pos)?
                            }
                            PassedFd::Pipe {
                                ino,
                                write,
                                flags,
                                pid: 0,
                                queue,
                                ..
                            } => pipe_made_anew(fd, &mut pipes, *ino, *write, *flags, queue)?,
                            PassedFd::Pipe {
                                write,
                                flags,
                                pid,
                                fd: held,
                                ..
                            } => pipe_end_through(fd, actual(fd, *pid)?, *held, *write, *flags)?,
                        });
                    }
                    if let Some((cpid, uid, gid)) = a.creds {
                        creds = Some(UnixCredentials::from(libc::ucred {
                            pid: actual(fd, cpid)?.as_raw(),
                            uid,
                            gid,
                        }));
                    }
                }
                let raws: Vec<RawFd> = owned.iter().map(AsRawFd::as_raw_fd).collect();
                let mut cmsgs = Vec::new();
                if !raws.is_empty() {
                    cmsgs.push(ControlMessage::ScmRights(&raws));
                }
                if let Some(c) = &creds {
                    cmsgs.push(ControlMessage::ScmCredentials(c));
                }
                let n = sendmsg::<()>(
                    peer.as_raw_fd(),
                    &[std::io::IoSlice::new(m)],
                    &cmsgs,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(err(
                    fd,
                    "queue a message with descriptors or credentials in flight",
                ))?;
                if n != m.len() {
                    return Err(err(fd, format!("queue data: {n} of {} bytes", m.len()))(
                        Errno::EAGAIN,
                    ));
                }
            }
        }
    }
    Ok(())
}
