//! `NETLINK_SOCK_DIAG` for Unix sockets: the kernel's own view of every Unix socket (name,
//! bound file, peer, queue lengths, shutdown state), which no `getsockopt` reports; for
//! packet sockets their memberships, rings and copy threshold; for IP sockets the shutdown
//! bits, and the orphans of closed connections (TIME-WAIT, FIN-WAIT-2, …) a restore removes
//! from a listener's port
//! ([`destroy_orphans`]).

use std::collections::HashMap;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLM_F_ACK: u16 = 4;
const TCP_TIME_WAIT: u32 = 6;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_VFS: u32 = 2;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_ICONS: u32 = 8;
const UDIAG_SHOW_RQLEN: u32 = 16;
const UNIX_DIAG_ICONS: u16 = 3;
const INET_DIAG_SHUTDOWN: u16 = 8;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

/// `TCP_ESTABLISHED` as Unix sockets use it: connected.
pub const STATE_ESTABLISHED: u8 = 1;
/// `TCP_LISTEN`.
pub const STATE_LISTEN: u8 = 10;

/// One Unix socket as `sock_diag` reports it.
#[derive(Debug, Clone, Default)]
pub struct UnixDiag {
    /// `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_SEQPACKET`.
    pub sock_type: u8,
    /// [`STATE_ESTABLISHED`], [`STATE_LISTEN`] or `TCP_CLOSE`.
    pub state: u8,
    /// Bound name as `sun_path` bytes (a leading NUL for abstract names); empty if unbound.
    pub name: Vec<u8>,
    /// Inode and device (userspace encoding) of the bound socket file.
    pub vfs: Option<(u64, u64)>,
    /// Peer socket inode, 0 if none.
    pub peer: u64,
    /// Receive queue length (pending connections for a listener) and, for a listener, the
    /// backlog.
    pub rqlen: (u32, u32),
    /// `sk_shutdown` bits.
    pub shutdown: u8,
    /// For a listener: the inodes of the sockets whose connections wait to be accepted, in
    /// the order they arrived.
    pub icons: Vec<u64>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_ne_bytes)
}

/// Sends one `SOCK_DIAG_BY_FAMILY` dump request (`body` after the netlink header) and hands
/// each answer's payload to `each`.
fn diag_dump(body: &[u8], mut each: impl FnMut(&[u8])) -> Result<(), Errno> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let len = 16 + body.len();
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    req.extend_from_slice(body);
    sendto(
        sock.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        let mut at = 0;
        while at + 16 <= n {
            let len = u32_at(&buf, at) as usize;
            let kind = u16_at(&buf, at + 4);
            if len < 16 || at + len > n {
                return Err(Errno::EBADMSG);
            }
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let code = u32_at(&buf, at + 16) as i32;
                    return Err(Errno::from_raw(-code));
                }
                _ => each(&buf[at + 16..at + len]),
            }
            at += (len + 3) & !3;
        }
        if n == 0 {
            return Err(Errno::EBADMSG);
        }
    }
}

/// Every Unix socket of the network namespace, by inode.
pub fn unix_sockets() -> Result<HashMap<u64, UnixDiag>, Errno> {
    let mut req = Vec::with_capacity(24);
    req.push(libc::AF_UNIX as u8);
    req.push(0);
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&0u32.to_ne_bytes()); // every inode
    let show =
        UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
    req.extend_from_slice(&show.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // no cookie
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    let mut out = HashMap::new();
    diag_dump(&req, |m| {
        let (ino, d) = parse_unix(m);
        out.insert(ino, d);
    })?;
    Ok(out)
}

/// The `sk_shutdown` bits of every socket of `family` (`AF_INET`, `AF_INET6`) and `protocol`
/// (`IPPROTO_TCP`, `IPPROTO_UDP`, `IPPROTO_UDPLITE`) in the network namespace, by inode.
pub fn inet_shutdown(family: i32, protocol: i32) -> Result<HashMap<u64, u8>, Errno> {
    let mut req = vec![0u8; 56];
    req[0] = family as u8;
    req[1] = protocol as u8;
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req[48..56].copy_from_slice(&[0xff; 8]); // no cookie
    let mut out = HashMap::new();
    diag_dump(&req, |m| {
        // struct inet_diag_msg: the inode at 68, attributes from 72.
        let ino = u64::from(u32_at(m, 68));
        let mut at = 72;
        while at + 4 <= m.len() {
            let len = usize::from(u16_at(m, at));
            let kind = u16_at(m, at + 2);
            if len < 4 || at + len > m.len() {
                break;
            }
            if kind == INET_DIAG_SHUTDOWN {
                out.insert(ino, m.get(at + 4).copied().unwrap_or(0));
            }
            at += (len + 3) & !3;
        }
    })?;
    Ok(out)
}

const PACKET_SHOW_INFO: u32 = 1;
const PACKET_SHOW_MCLIST: u32 = 2;
const PACKET_SHOW_RING_CFG: u32 = 4;
const PACKET_DIAG_INFO: u16 = 0;
const PACKET_DIAG_MCLIST: u16 = 1;
const PACKET_DIAG_RX_RING: u16 = 2;
const PACKET_DIAG_TX_RING: u16 = 3;

/// One packet socket as `packet_diag` reports it.
#[derive(Debug, Clone, Default)]
pub struct PacketDiag {
    /// `pdi_copy_thresh`.
    pub copy_thresh: u32,
    /// `(ifindex, type, address, count)` of each membership (`struct packet_diag_mclist`).
    pub memberships: Vec<(i32, u16, Vec<u8>, u32)>,
    /// A receive ring (`PACKET_RX_RING`) is set up.
    pub rx_ring: bool,
    /// A transmit ring (`PACKET_TX_RING`) is set up.
    pub tx_ring: bool,
}

/// Every packet socket of the network namespace, by inode.
pub fn packet_sockets() -> Result<HashMap<u64, PacketDiag>, Errno> {
    // struct packet_diag_req: family, protocol, pad, ino, show, cookie[2].
    let mut req = vec![0u8; 20];
    req[0] = libc::AF_PACKET as u8;
    let show = PACKET_SHOW_INFO | PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG;
    req[8..12].copy_from_slice(&show.to_ne_bytes());
    req[12..20].copy_from_slice(&[0xff; 8]); // no cookie
    let mut out = HashMap::new();
    diag_dump(&req, |m| {
        let (ino, d) = parse_packet(m);
        out.insert(ino, d);
    })?;
    Ok(out)
}

/// One `packet_diag_msg` (16 bytes: family, type, num, ino, cookie) and its attributes.
fn parse_packet(m: &[u8]) -> (u64, PacketDiag) {
    let ino = u64::from(u32_at(m, 4));
    let mut d = PacketDiag::default();
    let mut at = 16;
    while at + 4 <= m.len() {
        let len = usize::from(u16_at(m, at));
        let kind = u16_at(m, at + 2);
        if len < 4 || at + len > m.len() {
            break;
        }
        let data = &m[at + 4..at + len];
        match kind {
            // struct packet_diag_info: index, version, reserve, copy_thresh, tstamp, flags.
            PACKET_DIAG_INFO => d.copy_thresh = u32_at(data, 12),
            // struct packet_diag_mclist: index, count, type (u16), alen (u16), addr[32].
            PACKET_DIAG_MCLIST => {
                for e in data.chunks_exact(44) {
                    let alen = usize::from(u16_at(e, 10)).min(32);
                    d.memberships.push((
                        u32_at(e, 0) as i32,
                        u16_at(e, 8),
                        e[12..12 + alen].to_vec(),
                        u32_at(e, 4),
                    ));
                }
            }
            PACKET_DIAG_RX_RING => d.rx_ring = true,
            PACKET_DIAG_TX_RING => d.tx_ring = true,
            _ => {}
        }
        at += (len + 3) & !3;
    }
    (ino, d)
}

/// The states of a TCP connection closed by its process and not gone yet: FIN-WAIT-1,
/// FIN-WAIT-2, TIME-WAIT, LAST-ACK, CLOSING.
const CLOSING_STATES: [u32; 5] = [4, 5, TCP_TIME_WAIT, 9, 11];

/// Removes the orphans of TCP connections whose local end is `local` (any local address of
/// either family when `local`'s is unspecified; an IPv4-mapped address counts as IPv4), as
/// `ss -K` does (`SOCK_DESTROY`): sockets in a closing state (FIN-WAIT-1/2, TIME-WAIT,
/// LAST-ACK, CLOSING) that no process holds (inode 0 — never a socket with a descriptor).
/// Such orphans, left by connections a listener without `SO_REUSEADDR` had accepted and that
/// were closed from its side, keep its port from being bound or listened on again until
/// they are gone (a FIN-WAIT-2 one as long as its peer stays open, up to `tcp_fin_timeout`);
/// neither `SO_REUSEADDR` on the new socket nor a bind in repair mode passes them at
/// `listen`. Returns how many were removed.
pub fn destroy_orphans(local: std::net::SocketAddr) -> Result<usize, Errno> {
    let mask: u32 = CLOSING_STATES.iter().map(|s| 1u32 << s).sum();
    let mut ids: Vec<(i32, [u8; 48])> = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        let mut req = vec![0u8; 56];
        req[0] = family as u8;
        req[1] = libc::IPPROTO_TCP as u8;
        req[4..8].copy_from_slice(&mask.to_ne_bytes());
        req[48..56].copy_from_slice(&[0xff; 8]); // no cookie
        diag_dump(&req, |m| {
            // struct inet_diag_msg: family, state, timer, retrans, then the socket id (48
            // bytes: ports in network order, addresses, interface, cookie), expires,
            // rqueue, wqueue, uid, inode.
            let (Some(&state), Some(id)) = (m.get(1), m.get(4..52)) else {
                return;
            };
            if !CLOSING_STATES.contains(&u32::from(state)) || m.len() < 72 || u32_at(m, 68) != 0 {
                return;
            }
            let sport = u16::from_be_bytes([id[0], id[1]]);
            let ip: std::net::IpAddr = if family == libc::AF_INET {
                std::net::Ipv4Addr::new(id[4], id[5], id[6], id[7]).into()
            } else {
                let mut a = [0u8; 16];
                a.copy_from_slice(&id[4..20]);
                std::net::Ipv6Addr::from(a).to_canonical()
            };
            let ours = local.ip().to_canonical();
            if sport == local.port() && (local.ip().is_unspecified() || ip == ours) {
                let mut whole = [0u8; 48];
                whole.copy_from_slice(id);
                ids.push((family, whole));
            }
        })?;
    }
    let mut removed = 0;
    for (family, id) in ids {
        let mut req = vec![0u8; 56];
        req[0] = family as u8;
        req[1] = libc::IPPROTO_TCP as u8;
        req[4..8].copy_from_slice(&mask.to_ne_bytes());
        req[8..56].copy_from_slice(&id);
        match diag_request(SOCK_DESTROY, &req) {
            Ok(()) => removed += 1,
            // Gone meanwhile.
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Sends one `sock_diag` request of `kind` that is answered with an acknowledgement.
fn diag_request(kind: u16, body: &[u8]) -> Result<(), Errno> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let len = 16 + body.len();
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&kind.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(body);
    sendto(
        sock.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = vec![0u8; 4096];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    if n < 20 || u16_at(&buf, 4) != NLMSG_ERROR {
        return Err(Errno::EBADMSG);
    }
    match u32_at(&buf, 16) as i32 {
        0 => Ok(()),
        code => Err(Errno::from_raw(-code)),
    }
}

/// One `unix_diag_msg` and its attributes.
fn parse_unix(m: &[u8]) -> (u64, UnixDiag) {
    let mut d = UnixDiag {
        sock_type: m.get(1).copied().unwrap_or(0),
        state: m.get(2).copied().unwrap_or(0),
        ..UnixDiag::default()
    };
    let ino = u64::from(u32_at(m, 4));
    let mut at = 16;
    while at + 4 <= m.len() {
        let len = usize::from(u16_at(m, at));
        let kind = u16_at(m, at + 2);
        if len < 4 || at + len > m.len() {
            break;
        }
        let data = &m[at + 4..at + len];
        match kind {
            UNIX_DIAG_NAME => d.name = data.to_vec(),
            UNIX_DIAG_VFS => {
                // The kernel's dev_t: major in the top 12 bits, minor in the low 20.
                let dev = u32_at(data, 4);
                d.vfs = Some((
                    u64::from(u32_at(data, 0)),
                    libc::makedev(dev >> 20, dev & 0xf_ffff),
                ));
            }
            UNIX_DIAG_PEER => d.peer = u64::from(u32_at(data, 0)),
            UNIX_DIAG_RQLEN => d.rqlen = (u32_at(data, 0), u32_at(data, 4)),
            UNIX_DIAG_SHUTDOWN => d.shutdown = data.first().copied().unwrap_or(0),
            UNIX_DIAG_ICONS => {
                d.icons = data
                    .chunks_exact(4)
                    .map(|c| u64::from(u32_at(c, 0)))
                    .collect();
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    (ino, d)
}

/// The process and descriptor holding socket `ino`, other than `exclude`, as `pid P (comm)`.
pub fn holder_of(ino: u64, exclude: i32) -> Option<String> {
    let want = format!("socket:[{ino}]");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == exclude {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim_end()));
            }
        }
    }
    None
}

/// A Unix name for messages: a path as is, an abstract name as `@name`.
pub fn display_name(name: &[u8]) -> String {
    match name.split_first() {
        None => "no name".into(),
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        Some(_) => String::from_utf8_lossy(name).into_owned(),
    }
}
