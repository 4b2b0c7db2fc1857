//! Sockets in the manifest: conversion between [`SocketState`] and its protobuf message, and
//! the checks an untrusted manifest's sockets must pass.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ferry_proto::image::v1 as pb;

use super::convert::{identity_from_pb, identity_to_pb, queue_from_pb, queue_to_pb};
use super::validate::{ManifestError, ManifestProblem, cap_count, err};
use crate::state::{
    FileRef, InFlight, InetSocketState, NetlinkSocketState, PacketMembership, PacketSocketState,
    PassedFd, SockOptState, SocketKind, SocketState, TcpConnState, TcpUnaccepted, UnixSocketState,
};

/// Most bytes queued in one socket queue accepted (the manifest itself is capped at 64 MiB).
pub const MAX_SOCKET_QUEUE: usize = 32 << 20;
/// Most descriptors one queued message passes (the kernel's `SCM_MAX_FD`).
pub const MAX_PASSED_FDS: usize = 253;
/// Most datagrams or records queued in one socket accepted.
pub const MAX_SOCKET_MESSAGES: usize = 1 << 16;
/// Most options per socket accepted.
pub const MAX_SOCKET_OPTS: usize = 64;
/// Largest option value accepted (`struct timeval` is 16 bytes).
pub const MAX_SOCKOPT_LEN: usize = 64;
/// Largest classic BPF socket filter accepted, in bytes (`BPF_MAXINSNS` instructions of 8).
pub const MAX_FILTER: usize = 4096 * 8;
/// Most words of netlink group membership accepted (1024 groups).
pub const MAX_NETLINK_GROUP_WORDS: usize = 32;
/// Most memberships of one packet socket accepted.
pub const MAX_PACKET_MEMBERSHIPS: usize = 1024;
/// Longest interface name (`IFNAMSIZ` less the NUL).
pub const MAX_IFNAME: usize = 15;
/// Longest link-layer address of a membership (`MAX_ADDR_LEN`).
pub const MAX_LINK_ADDR: usize = 32;
/// Longest Unix socket name (`sun_path`).
pub const MAX_UNIX_NAME: usize = 108;

/// Option numbers `libc` does not name on every target.
pub mod opt {
    /// `SO_LOCK_FILTER`.
    pub const SO_LOCK_FILTER: i32 = 44;
    /// `SO_BUF_LOCK` (Linux 5.14): which of the buffer sizes the user fixed.
    pub const SO_BUF_LOCK: i32 = 72;
    /// `SOL_RAW`.
    pub const SOL_RAW: i32 = 255;
    /// `ICMP_FILTER` (`SOL_RAW`, raw ICMP sockets).
    pub const ICMP_FILTER: i32 = 1;
    /// `SOL_UDPLITE`.
    pub const SOL_UDPLITE: i32 = 136;
    /// `UDPLITE_SEND_CSCOV`.
    pub const UDPLITE_SEND_CSCOV: i32 = 10;
    /// `UDPLITE_RECV_CSCOV`.
    pub const UDPLITE_RECV_CSCOV: i32 = 11;
    /// `SOL_NETLINK`.
    pub const SOL_NETLINK: i32 = 270;
    /// `SOL_PACKET`.
    pub const SOL_PACKET: i32 = 263;
    /// `PACKET_ADD_MEMBERSHIP`.
    pub const PACKET_ADD_MEMBERSHIP: i32 = 1;
    /// `PACKET_AUXDATA`.
    pub const PACKET_AUXDATA: i32 = 8;
    /// `PACKET_ORIGDEV`.
    pub const PACKET_ORIGDEV: i32 = 9;
    /// `PACKET_VERSION`.
    pub const PACKET_VERSION: i32 = 10;
    /// `PACKET_RESERVE`.
    pub const PACKET_RESERVE: i32 = 12;
    /// `PACKET_LOSS`.
    pub const PACKET_LOSS: i32 = 14;
    /// `PACKET_VNET_HDR`.
    pub const PACKET_VNET_HDR: i32 = 15;
    /// `PACKET_TIMESTAMP`.
    pub const PACKET_TIMESTAMP: i32 = 17;
    /// `PACKET_FANOUT`.
    pub const PACKET_FANOUT: i32 = 18;
    /// `PACKET_TX_HAS_OFF`.
    pub const PACKET_TX_HAS_OFF: i32 = 19;
    /// `PACKET_QDISC_BYPASS`.
    pub const PACKET_QDISC_BYPASS: i32 = 20;
    /// `PACKET_COPY_THRESH` (set only).
    pub const PACKET_COPY_THRESH: i32 = 7;
    /// `PACKET_IGNORE_OUTGOING`.
    pub const PACKET_IGNORE_OUTGOING: i32 = 23;
    /// `PACKET_VNET_HDR_SZ` (Linux 6.2).
    pub const PACKET_VNET_HDR_SZ: i32 = 24;
    /// `NETLINK_PKTINFO`.
    pub const NETLINK_PKTINFO: i32 = 3;
    /// `NETLINK_BROADCAST_ERROR`.
    pub const NETLINK_BROADCAST_ERROR: i32 = 4;
    /// `NETLINK_NO_ENOBUFS`.
    pub const NETLINK_NO_ENOBUFS: i32 = 5;
    /// `NETLINK_LIST_MEMBERSHIPS` (read only).
    pub const NETLINK_LIST_MEMBERSHIPS: i32 = 9;
    /// `NETLINK_ADD_MEMBERSHIP`.
    pub const NETLINK_ADD_MEMBERSHIP: i32 = 1;
    /// `NETLINK_LISTEN_ALL_NSID`.
    pub const NETLINK_LISTEN_ALL_NSID: i32 = 8;
    /// `NETLINK_CAP_ACK`.
    pub const NETLINK_CAP_ACK: i32 = 10;
    /// `NETLINK_EXT_ACK`.
    pub const NETLINK_EXT_ACK: i32 = 11;
    /// `NETLINK_GET_STRICT_CHK`.
    pub const NETLINK_GET_STRICT_CHK: i32 = 12;
    /// `IP_RECVTTL`.
    pub const IP_RECVTTL: i32 = 12;
    /// `IP_RECVTOS`.
    pub const IP_RECVTOS: i32 = 13;
    /// `IP_BIND_ADDRESS_NO_PORT`.
    pub const IP_BIND_ADDRESS_NO_PORT: i32 = 24;
    /// `IPV6_TRANSPARENT`.
    pub const IPV6_TRANSPARENT: i32 = 75;
    /// `IPV6_FREEBIND`.
    pub const IPV6_FREEBIND: i32 = 78;
    /// `TCP_DEFER_ACCEPT`.
    pub const TCP_DEFER_ACCEPT: i32 = 9;
    /// `TCP_USER_TIMEOUT`.
    pub const TCP_USER_TIMEOUT: i32 = 18;
    /// `TCP_FASTOPEN`.
    pub const TCP_FASTOPEN: i32 = 23;
    /// `TCP_NOTSENT_LOWAT`.
    pub const TCP_NOTSENT_LOWAT: i32 = 25;
}

/// The socket options a restore sets again, in the order it sets them (the device, address
/// reuse and transparency before `bind`; the buffer sizes before `SO_BUF_LOCK`, which says
/// which of them the user fixed); an image naming any other is refused.
pub const ALLOWED_OPTS: &[(i32, i32)] = &[
    (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT),
    (libc::SOL_SOCKET, libc::SO_BINDTODEVICE),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::SOL_SOCKET, libc::SO_BROADCAST),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE),
    (libc::SOL_SOCKET, libc::SO_PASSCRED),
    (libc::SOL_SOCKET, libc::SO_RCVLOWAT),
    (libc::SOL_SOCKET, libc::SO_MARK),
    (libc::SOL_SOCKET, libc::SO_LINGER),
    (libc::SOL_SOCKET, libc::SO_RCVTIMEO),
    (libc::SOL_SOCKET, libc::SO_SNDTIMEO),
    (libc::SOL_SOCKET, libc::SO_RCVBUF),
    (libc::SOL_SOCKET, libc::SO_SNDBUF),
    (libc::SOL_SOCKET, opt::SO_BUF_LOCK),
    (libc::SOL_SOCKET, opt::SO_LOCK_FILTER),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    (libc::IPPROTO_TCP, libc::TCP_CORK),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
    (libc::IPPROTO_TCP, opt::TCP_DEFER_ACCEPT),
    (libc::IPPROTO_TCP, opt::TCP_USER_TIMEOUT),
    (libc::IPPROTO_TCP, opt::TCP_FASTOPEN),
    (libc::IPPROTO_TCP, opt::TCP_NOTSENT_LOWAT),
    (libc::IPPROTO_IP, libc::IP_TOS),
    (libc::IPPROTO_IP, libc::IP_TTL),
    (libc::IPPROTO_IP, libc::IP_HDRINCL),
    (libc::IPPROTO_IP, libc::IP_RECVERR),
    (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
    (libc::IPPROTO_IP, libc::IP_PKTINFO),
    (libc::IPPROTO_IP, opt::IP_RECVTTL),
    (libc::IPPROTO_IP, opt::IP_RECVTOS),
    (libc::IPPROTO_IP, libc::IP_FREEBIND),
    (libc::IPPROTO_IP, libc::IP_TRANSPARENT),
    (libc::IPPROTO_IP, opt::IP_BIND_ADDRESS_NO_PORT),
    (libc::IPPROTO_IP, libc::IP_MULTICAST_TTL),
    (libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP),
    (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
    (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS),
    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS),
    (libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
    (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
    (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    (libc::IPPROTO_IPV6, opt::IPV6_FREEBIND),
    (libc::IPPROTO_IPV6, opt::IPV6_TRANSPARENT),
    (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS),
    (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP),
    // After IP_TOS, which sets the priority as well.
    (libc::SOL_SOCKET, libc::SO_PRIORITY),
    (opt::SOL_RAW, opt::ICMP_FILTER),
    (opt::SOL_UDPLITE, opt::UDPLITE_SEND_CSCOV),
    (opt::SOL_UDPLITE, opt::UDPLITE_RECV_CSCOV),
    (opt::SOL_NETLINK, opt::NETLINK_PKTINFO),
    (opt::SOL_NETLINK, opt::NETLINK_BROADCAST_ERROR),
    (opt::SOL_NETLINK, opt::NETLINK_NO_ENOBUFS),
    (opt::SOL_NETLINK, opt::NETLINK_LISTEN_ALL_NSID),
    (opt::SOL_NETLINK, opt::NETLINK_CAP_ACK),
    (opt::SOL_NETLINK, opt::NETLINK_EXT_ACK),
    (opt::SOL_NETLINK, opt::NETLINK_GET_STRICT_CHK),
    // Before bind; the header size after PACKET_VNET_HDR, which sets one of its own.
    (opt::SOL_PACKET, opt::PACKET_VERSION),
    (opt::SOL_PACKET, opt::PACKET_RESERVE),
    (opt::SOL_PACKET, opt::PACKET_AUXDATA),
    (opt::SOL_PACKET, opt::PACKET_ORIGDEV),
    (opt::SOL_PACKET, opt::PACKET_LOSS),
    (opt::SOL_PACKET, opt::PACKET_VNET_HDR),
    (opt::SOL_PACKET, opt::PACKET_VNET_HDR_SZ),
    (opt::SOL_PACKET, opt::PACKET_TIMESTAMP),
    (opt::SOL_PACKET, opt::PACKET_TX_HAS_OFF),
    (opt::SOL_PACKET, opt::PACKET_QDISC_BYPASS),
    (opt::SOL_PACKET, opt::PACKET_IGNORE_OUTGOING),
];

/// Fanout modes a packet socket may have in an image (`PACKET_FANOUT_HASH` …
/// `PACKET_FANOUT_QM`; the BPF modes, whose program no call reads back, are refused at dump).
pub const PACKET_FANOUT_MODES: u32 = 5;
/// Fanout flags (`getsockopt` layout, bits 24–31): `ROLLOVER`, `IGNORE_OUTGOING`, `DEFRAG`
/// (`UNIQUEID` is refused at dump: the kernel picks that group's id).
pub const PACKET_FANOUT_FLAGS: u32 = 0x10 | 0x40 | 0x80;

fn addr_to_pb(a: &SocketAddr) -> pb::InetAddr {
    let ip = match a.ip() {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    pb::InetAddr {
        ip,
        port: u32::from(a.port()),
    }
}

/// Model -> protobuf.
pub(crate) fn socket_to_pb(s: &SocketState) -> pb::Socket {
    let kind = match &s.kind {
        SocketKind::Unix(u) => pb::socket::Kind::Unix(pb::UnixSocket {
            name: u.name.clone(),
            file: u.file.as_ref().map(identity_to_pb),
            owner_uid: u.owner.0,
            owner_gid: u.owner.1,
            file_path: u.file_path.clone().unwrap_or_default(),
            listening: u.backlog.is_some(),
            backlog: u.backlog.unwrap_or(0),
            peer_ino: u.peer_ino,
            peer_external: u.peer_external,
            peer_name: u.peer_name.clone(),
            shutdown: u.shutdown,
            queue: u.queue.clone(),
            queue_from: u.queue_from.clone(),
            pending: u.pending,
            in_flight: u
                .in_flight
                .iter()
                .map(|m| pb::InFlight {
                    message: m.message,
                    fds: m
                        .fds
                        .iter()
                        .map(|f| match f {
                            PassedFd::Held { pid, fd } => pb::PassedFd {
                                pid: *pid,
                                fd: *fd,
                                ..Default::default()
                            },
                            PassedFd::File { file, flags, pos } => pb::PassedFd {
                                file: Some(pb::FileRef {
                                    path: file.path.clone(),
                                    identity: Some(identity_to_pb(&file.identity)),
                                }),
                                flags: *flags,
                                pos: *pos,
                                ..Default::default()
                            },
                            PassedFd::Pipe {
                                ino,
                                write,
                                flags,
                                pid,
                                fd,
                                queue,
                            } => pb::PassedFd {
                                pid: *pid,
                                fd: *fd,
                                flags: *flags,
                                pipe: Some(pb::PassedPipe {
                                    ino: *ino,
                                    write: *write,
                                    queue: queue.as_ref().map(queue_to_pb),
                                }),
                                ..Default::default()
                            },
                        })
                        .collect(),
                    has_creds: m.creds.is_some(),
                    pid: m.creds.map_or(0, |c| c.0),
                    uid: m.creds.map_or(0, |c| c.1),
                    gid: m.creds.map_or(0, |c| c.2),
                })
                .collect(),
            sent_unaccepted: u.sent_unaccepted,
            pending_sent: u.pending_sent.clone(),
        }),
        SocketKind::Inet(i) => pb::socket::Kind::Inet(pb::InetSocket {
            protocol: i.protocol,
            local: Some(addr_to_pb(&i.local)),
            peer: i.peer.as_ref().map(addr_to_pb),
            listening: i.backlog.is_some(),
            backlog: i.backlog.unwrap_or(0),
            tcp: i.tcp.as_ref().map(|t| pb::TcpConn {
                send_seq: t.send_seq,
                recv_seq: t.recv_seq,
                send_queue: t.send_queue.clone(),
                unsent: t.unsent,
                recv_queue: t.recv_queue.clone(),
                mss: t.mss,
                snd_wscale: t.snd_wscale,
                rcv_wscale: t.rcv_wscale,
                options: t.options,
                timestamp: t.timestamp,
                window: t.window.to_vec(),
                state: t.state,
                unaccepted: t.unaccepted.as_ref().map(|u| pb::TcpUnaccepted {
                    written: u.written,
                    data: u.data.clone(),
                    rank: u.rank,
                }),
            }),
            shutdown: i.shutdown,
            queue: i.queue.clone(),
            queue_from: i.queue_from.iter().map(addr_to_pb).collect(),
        }),
        SocketKind::Netlink(n) => pb::socket::Kind::Netlink(pb::NetlinkSocket {
            protocol: n.protocol,
            port_id: n.port_id,
            groups: n.groups.clone(),
            dst_pid: n.dst_pid,
            dst_group: n.dst_group,
        }),
        SocketKind::Packet(p) => pb::socket::Kind::Packet(pb::PacketSocket {
            protocol: p.protocol,
            interface: p.interface.clone(),
            memberships: p
                .memberships
                .iter()
                .map(|m| pb::PacketMembership {
                    interface: m.interface.clone(),
                    mr_type: m.mr_type,
                    address: m.address.clone(),
                    count: m.count,
                })
                .collect(),
            fanout: p.fanout,
            copy_thresh: p.copy_thresh,
        }),
    };
    pb::Socket {
        ino: s.ino,
        family: s.family,
        sock_type: s.sock_type,
        opts: s
            .opts
            .iter()
            .map(|o| pb::SockOpt {
                level: o.level,
                name: o.name,
                value: o.value.clone(),
            })
            .collect(),
        filter: s.filter.clone(),
        kind: Some(kind),
    }
}

fn addr_from_pb(a: Option<pb::InetAddr>, field: &str) -> Result<SocketAddr, ManifestError> {
    let a = a.ok_or_else(|| err(field, ManifestProblem::Missing))?;
    let port = u16::try_from(a.port).map_err(|_| {
        err(
            format!("{field}.port"),
            ManifestProblem::OutOfRange {
                value: a.port.into(),
                min: 0,
                max: 65535,
            },
        )
    })?;
    let ip = if let Ok(b) = <[u8; 4]>::try_from(a.ip.as_slice()) {
        IpAddr::V4(Ipv4Addr::from(b))
    } else if let Ok(b) = <[u8; 16]>::try_from(a.ip.as_slice()) {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        return Err(err(
            format!("{field}.ip"),
            ManifestProblem::OutOfRange {
                value: a.ip.len() as i128,
                min: 4,
                max: 16,
            },
        ));
    };
    Ok(SocketAddr::new(ip, port))
}

/// Protobuf -> model; `field` names the socket (`fds[3].socket`).
pub(crate) fn socket_from_pb(s: pb::Socket, field: &str) -> Result<SocketState, ManifestError> {
    cap_count(&format!("{field}.opts"), s.opts.len(), MAX_SOCKET_OPTS)?;
    let kind = match s
        .kind
        .ok_or_else(|| err(format!("{field}.kind"), ManifestProblem::Missing))?
    {
        pb::socket::Kind::Unix(u) => {
            cap_count(
                &format!("{field}.unix.queue"),
                u.queue.len(),
                MAX_SOCKET_MESSAGES,
            )?;
            SocketKind::Unix(UnixSocketState {
                name: u.name,
                file: u.file.map(identity_from_pb),
                owner: (u.owner_uid, u.owner_gid),
                file_path: Some(u.file_path).filter(|p| !p.is_empty()),
                backlog: u.listening.then_some(u.backlog),
                peer_ino: u.peer_ino,
                peer_external: u.peer_external,
                peer_name: u.peer_name,
                shutdown: u.shutdown,
                queue: u.queue,
                queue_from: u.queue_from,
                pending: u.pending,
                in_flight: u
                    .in_flight
                    .into_iter()
                    .enumerate()
                    .map(|(i, m)| {
                        cap_count(
                            &format!("{field}.unix.in_flight[{i}].fds"),
                            m.fds.len(),
                            MAX_PASSED_FDS,
                        )?;
                        let fds = m
                            .fds
                            .into_iter()
                            .map(|f| match (f.file, f.pipe) {
                                (_, Some(p)) => Ok(PassedFd::Pipe {
                                    ino: p.ino,
                                    write: p.write,
                                    flags: f.flags,
                                    pid: f.pid,
                                    fd: f.fd,
                                    queue: p.queue.map(queue_from_pb),
                                }),
                                (Some(r), None) => Ok(PassedFd::File {
                                    file: FileRef {
                                        path: r.path,
                                        identity: r.identity.map(identity_from_pb).ok_or_else(
                                            || {
                                                err(
                                                    format!(
                                                        "{field}.unix.in_flight[{i}].fds.file.identity"
                                                    ),
                                                    ManifestProblem::Missing,
                                                )
                                            },
                                        )?,
                                    },
                                    flags: f.flags,
                                    pos: f.pos,
                                }),
                                (None, None) => Ok(PassedFd::Held {
                                    pid: f.pid,
                                    fd: f.fd,
                                }),
                            })
                            .collect::<Result<Vec<_>, ManifestError>>()?;
                        Ok(InFlight {
                            message: m.message,
                            fds,
                            creds: m.has_creds.then_some((m.pid, m.uid, m.gid)),
                        })
                    })
                    .collect::<Result<Vec<_>, ManifestError>>()?,
                sent_unaccepted: u.sent_unaccepted,
                pending_sent: u.pending_sent,
            })
        }
        pb::socket::Kind::Inet(i) => {
            cap_count(
                &format!("{field}.inet.queue"),
                i.queue.len(),
                MAX_SOCKET_MESSAGES,
            )?;
            cap_count(
                &format!("{field}.inet.queue_from"),
                i.queue_from.len(),
                MAX_SOCKET_MESSAGES,
            )?;
            let local = addr_from_pb(i.local, &format!("{field}.inet.local"))?;
            let peer = match i.peer {
                Some(p) => Some(addr_from_pb(Some(p), &format!("{field}.inet.peer"))?),
                None => None,
            };
            let tcp = match i.tcp {
                Some(t) => {
                    let window: [u32; 5] = t.window.as_slice().try_into().map_err(|_| {
                        err(
                            format!("{field}.inet.tcp.window"),
                            ManifestProblem::OutOfRange {
                                value: t.window.len() as i128,
                                min: 5,
                                max: 5,
                            },
                        )
                    })?;
                    Some(TcpConnState {
                        send_seq: t.send_seq,
                        recv_seq: t.recv_seq,
                        send_queue: t.send_queue,
                        unsent: t.unsent,
                        recv_queue: t.recv_queue,
                        mss: t.mss,
                        snd_wscale: t.snd_wscale,
                        rcv_wscale: t.rcv_wscale,
                        options: t.options,
                        timestamp: t.timestamp,
                        window,
                        // Images written before the state was kept held established
                        // connections only.
                        state: if t.state == 0 {
                            crate::state::TCP_ESTABLISHED
                        } else {
                            t.state
                        },
                        unaccepted: t.unaccepted.map(|u| TcpUnaccepted {
                            written: u.written,
                            data: u.data,
                            rank: u.rank,
                        }),
                    })
                }
                None => None,
            };
            SocketKind::Inet(InetSocketState {
                protocol: i.protocol,
                local,
                peer,
                backlog: i.listening.then_some(i.backlog),
                tcp,
                shutdown: i.shutdown,
                queue: i.queue,
                queue_from: i
                    .queue_from
                    .into_iter()
                    .enumerate()
                    .map(|(n, a)| addr_from_pb(Some(a), &format!("{field}.inet.queue_from[{n}]")))
                    .collect::<Result<_, _>>()?,
            })
        }
        pb::socket::Kind::Netlink(n) => {
            cap_count(
                &format!("{field}.netlink.groups"),
                n.groups.len(),
                MAX_NETLINK_GROUP_WORDS,
            )?;
            SocketKind::Netlink(NetlinkSocketState {
                protocol: n.protocol,
                port_id: n.port_id,
                groups: n.groups,
                dst_pid: n.dst_pid,
                dst_group: n.dst_group,
            })
        }
        pb::socket::Kind::Packet(p) => {
            cap_count(
                &format!("{field}.packet.memberships"),
                p.memberships.len(),
                MAX_PACKET_MEMBERSHIPS,
            )?;
            SocketKind::Packet(PacketSocketState {
                protocol: p.protocol,
                interface: p.interface,
                memberships: p
                    .memberships
                    .into_iter()
                    .map(|m| PacketMembership {
                        interface: m.interface,
                        mr_type: m.mr_type,
                        address: m.address,
                        count: m.count,
                    })
                    .collect(),
                fanout: p.fanout,
                copy_thresh: p.copy_thresh,
            })
        }
    };
    Ok(SocketState {
        ino: s.ino,
        family: s.family,
        sock_type: s.sock_type,
        opts: s
            .opts
            .into_iter()
            .map(|o| SockOptState {
                level: o.level,
                name: o.name,
                value: o.value,
            })
            .collect(),
        filter: s.filter,
        kind,
    })
}

fn check_len(field: String, len: usize, max: usize) -> Result<(), ManifestError> {
    if len > max {
        return Err(err(field, ManifestProblem::TooLong { len, max }));
    }
    Ok(())
}

fn check_value(field: String, value: u32, allowed: &[i32]) -> Result<(), ManifestError> {
    if allowed.iter().any(|a| i64::from(*a) == i64::from(value)) {
        Ok(())
    } else {
        Err(err(field, ManifestProblem::UnknownEnum(value as i32)))
    }
}

/// The invariants of one socket; `field` names it (`fds[3].socket`).
pub(crate) fn validate_socket(s: &SocketState, field: &str) -> Result<(), ManifestError> {
    cap_count(&format!("{field}.opts"), s.opts.len(), MAX_SOCKET_OPTS)?;
    for (i, o) in s.opts.iter().enumerate() {
        if !ALLOWED_OPTS.contains(&(o.level, o.name)) {
            return Err(err(
                format!("{field}.opts[{i}].name"),
                ManifestProblem::UnknownEnum(o.name),
            ));
        }
        check_len(
            format!("{field}.opts[{i}].value"),
            o.value.len(),
            MAX_SOCKOPT_LEN,
        )?;
    }
    if !s.filter.len().is_multiple_of(8) {
        return Err(err(
            format!("{field}.filter"),
            ManifestProblem::OutOfRange {
                value: s.filter.len() as i128,
                min: 0,
                max: MAX_FILTER as i128,
            },
        ));
    }
    check_len(format!("{field}.filter"), s.filter.len(), MAX_FILTER)?;
    let types = [
        libc::SOCK_STREAM,
        libc::SOCK_DGRAM,
        libc::SOCK_SEQPACKET,
        libc::SOCK_RAW,
    ];
    check_value(format!("{field}.sock_type"), s.sock_type, &types)?;
    match &s.kind {
        SocketKind::Unix(u) => {
            check_value(format!("{field}.family"), s.family, &[libc::AF_UNIX])?;
            check_len(format!("{field}.unix.name"), u.name.len(), MAX_UNIX_NAME)?;
            check_len(
                format!("{field}.unix.peer_name"),
                u.peer_name.len(),
                MAX_UNIX_NAME,
            )?;
            if let Some(first) = u.name.first()
                && *first != 0
                && *first != b'/'
            {
                return Err(err(
                    format!("{field}.unix.name"),
                    ManifestProblem::NotAbsolute(String::from_utf8_lossy(&u.name).into_owned()),
                ));
            }
            if u.name.iter().skip(1).any(|b| *b == 0) && u.name.first() != Some(&0) {
                return Err(err(
                    format!("{field}.unix.name"),
                    ManifestProblem::ContainsNul,
                ));
            }
            cap_count(
                &format!("{field}.unix.queue"),
                u.queue.len(),
                MAX_SOCKET_MESSAGES,
            )?;
            if !u.queue_from.is_empty() && u.queue_from.len() != u.queue.len() {
                return Err(err(
                    format!("{field}.unix.queue_from"),
                    ManifestProblem::OutOfRange {
                        value: u.queue_from.len() as i128,
                        min: u.queue.len() as i128,
                        max: u.queue.len() as i128,
                    },
                ));
            }
            for (n, f) in u.queue_from.iter().enumerate() {
                check_len(
                    format!("{field}.unix.queue_from[{n}]"),
                    f.len(),
                    MAX_UNIX_NAME,
                )?;
            }
            let total: usize = u.queue.iter().map(Vec::len).sum();
            check_len(format!("{field}.unix.queue"), total, MAX_SOCKET_QUEUE)?;
            for (i, m) in u.in_flight.iter().enumerate() {
                if m.message as usize >= u.queue.len() {
                    return Err(err(
                        format!("{field}.unix.in_flight[{i}].message"),
                        ManifestProblem::OutOfRange {
                            value: m.message.into(),
                            min: 0,
                            max: u.queue.len() as i128 - 1,
                        },
                    ));
                }
                cap_count(
                    &format!("{field}.unix.in_flight[{i}].fds"),
                    m.fds.len(),
                    MAX_PASSED_FDS,
                )?;
                for (j, f) in m.fds.iter().enumerate() {
                    if let PassedFd::Pipe { pid, fd, queue, .. } = f {
                        let at = format!("{field}.unix.in_flight[{i}].fds[{j}].pipe");
                        for (name, v) in [("pid", *pid), ("fd", *fd)] {
                            if v < 0 {
                                return Err(err(
                                    format!("{at}.{name}"),
                                    ManifestProblem::OutOfRange {
                                        value: v.into(),
                                        min: 0,
                                        max: i32::MAX.into(),
                                    },
                                ));
                            }
                        }
                        // The bytes of a pipe a process holds are that process's to carry.
                        if *pid != 0 && queue.is_some() {
                            return Err(err(
                                format!("{at}.queue"),
                                ManifestProblem::TooMany { count: 1, max: 0 },
                            ));
                        }
                        super::validate::validate_queue(&format!("{at}.queue"), queue.as_ref())?;
                    }
                }
            }
            // Bytes written into a connection not accepted yet: only by a connecting stream
            // or seqpacket socket that did write (a read-back has the flag without them).
            if !u.pending_sent.is_empty()
                && (!u.sent_unaccepted || s.sock_type == libc::SOCK_DGRAM as u32)
            {
                return Err(err(
                    format!("{field}.unix.pending_sent"),
                    ManifestProblem::TooMany {
                        count: u.pending_sent.len(),
                        max: 0,
                    },
                ));
            }
            cap_count(
                &format!("{field}.unix.pending_sent"),
                u.pending_sent.len(),
                MAX_SOCKET_MESSAGES,
            )?;
            let sent: usize = u.pending_sent.iter().map(Vec::len).sum();
            check_len(format!("{field}.unix.pending_sent"), sent, MAX_SOCKET_QUEUE)?;
            if u.shutdown & !3 != 0 {
                return Err(err(
                    format!("{field}.unix.shutdown"),
                    ManifestProblem::UnknownBits {
                        value: u.shutdown.into(),
                        allowed: 3,
                    },
                ));
            }
        }
        SocketKind::Packet(p) => validate_packet(s, p, field)?,
        SocketKind::Netlink(n) => {
            check_value(format!("{field}.family"), s.family, &[libc::AF_NETLINK])?;
            check_value(
                format!("{field}.sock_type"),
                s.sock_type,
                &[libc::SOCK_RAW, libc::SOCK_DGRAM],
            )?;
            if n.protocol >= 32 {
                return Err(err(
                    format!("{field}.netlink.protocol"),
                    ManifestProblem::OutOfRange {
                        value: n.protocol.into(),
                        min: 0,
                        max: 31,
                    },
                ));
            }
            cap_count(
                &format!("{field}.netlink.groups"),
                n.groups.len(),
                MAX_NETLINK_GROUP_WORDS,
            )?;
        }
        SocketKind::Inet(i) => {
            cap_count(
                &format!("{field}.inet.queue"),
                i.queue.len(),
                MAX_SOCKET_MESSAGES,
            )?;
            let total: usize = i.queue.iter().map(Vec::len).sum();
            check_len(format!("{field}.inet.queue"), total, MAX_SOCKET_QUEUE)?;
            if i.queue_from.len() != i.queue.len() {
                return Err(err(
                    format!("{field}.inet.queue_from"),
                    ManifestProblem::OutOfRange {
                        value: i.queue_from.len() as i128,
                        min: i.queue.len() as i128,
                        max: i.queue.len() as i128,
                    },
                ));
            }
            if i.shutdown & !3 != 0 {
                return Err(err(
                    format!("{field}.inet.shutdown"),
                    ManifestProblem::UnknownBits {
                        value: i.shutdown.into(),
                        allowed: 3,
                    },
                ));
            }
            check_value(
                format!("{field}.family"),
                s.family,
                &[libc::AF_INET, libc::AF_INET6],
            )?;
            let tcp = libc::IPPROTO_TCP as u32;
            let datagram = [
                libc::IPPROTO_UDP,
                libc::IPPROTO_UDPLITE,
                libc::IPPROTO_ICMP,
                libc::IPPROTO_ICMPV6,
            ];
            let ok = (i.protocol == tcp && s.sock_type == libc::SOCK_STREAM as u32)
                || (datagram.iter().any(|p| *p as u32 == i.protocol)
                    && s.sock_type == libc::SOCK_DGRAM as u32)
                || (i.protocol <= 255 && s.sock_type == libc::SOCK_RAW as u32);
            if !ok {
                return Err(err(
                    format!("{field}.inet.protocol"),
                    ManifestProblem::UnknownEnum(i.protocol as i32),
                ));
            }
            if (i.backlog.is_some() || i.tcp.is_some()) && i.protocol != tcp {
                return Err(err(
                    format!("{field}.inet.protocol"),
                    ManifestProblem::UnknownEnum(i.protocol as i32),
                ));
            }
            if let Some(t) = &i.tcp {
                if i.peer.is_none() {
                    return Err(err(format!("{field}.inet.peer"), ManifestProblem::Missing));
                }
                check_len(
                    format!("{field}.inet.tcp.send_queue"),
                    t.send_queue.len(),
                    MAX_SOCKET_QUEUE,
                )?;
                check_len(
                    format!("{field}.inet.tcp.recv_queue"),
                    t.recv_queue.len(),
                    MAX_SOCKET_QUEUE,
                )?;
                if t.unsent as usize > t.send_queue.len() {
                    return Err(err(
                        format!("{field}.inet.tcp.unsent"),
                        ManifestProblem::OutOfRange {
                            value: t.unsent.into(),
                            min: 0,
                            max: t.send_queue.len() as i128,
                        },
                    ));
                }
                if !crate::state::TCP_CONN_STATES.contains(&t.state) {
                    return Err(err(
                        format!("{field}.inet.tcp.state"),
                        ManifestProblem::UnknownEnum(t.state as i32),
                    ));
                }
                if let Some(u) = &t.unaccepted {
                    validate_unaccepted(t, u, field)?;
                }
                for (name, v) in [("snd_wscale", t.snd_wscale), ("rcv_wscale", t.rcv_wscale)] {
                    if v > 14 {
                        return Err(err(
                            format!("{field}.inet.tcp.{name}"),
                            ManifestProblem::OutOfRange {
                                value: v.into(),
                                min: 0,
                                max: 14,
                            },
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The most connections an accept queue holds (`net.core.somaxconn` is at most 65535 and a
/// queue may hold one more).
const MAX_ACCEPT_RANK: u32 = 1 << 16;

/// A connection not accepted yet: established (the only state such a connection is dumped
/// in), its bytes no more than a queue holds and as many as it counts, a place in a queue.
fn validate_unaccepted(
    t: &TcpConnState,
    u: &TcpUnaccepted,
    field: &str,
) -> Result<(), ManifestError> {
    let f = format!("{field}.inet.tcp.unaccepted");
    if t.state != crate::state::TCP_ESTABLISHED {
        return Err(err(
            format!("{field}.inet.tcp.state"),
            ManifestProblem::UnknownEnum(t.state as i32),
        ));
    }
    check_len(format!("{f}.data"), u.data.len(), MAX_SOCKET_QUEUE)?;
    if u.written > MAX_SOCKET_QUEUE as u64
        || (!u.data.is_empty() && u.data.len() as u64 != u.written)
    {
        return Err(err(
            format!("{f}.written"),
            ManifestProblem::OutOfRange {
                value: u.written.into(),
                min: u.data.len() as i128,
                max: if u.data.is_empty() {
                    MAX_SOCKET_QUEUE as i128
                } else {
                    u.data.len() as i128
                },
            },
        ));
    }
    if u.rank > MAX_ACCEPT_RANK {
        return Err(err(
            format!("{f}.rank"),
            ManifestProblem::OutOfRange {
                value: u.rank.into(),
                min: 0,
                max: MAX_ACCEPT_RANK.into(),
            },
        ));
    }
    Ok(())
}

fn validate_packet(
    s: &SocketState,
    p: &PacketSocketState,
    field: &str,
) -> Result<(), ManifestError> {
    check_value(format!("{field}.family"), s.family, &[libc::AF_PACKET])?;
    check_value(
        format!("{field}.sock_type"),
        s.sock_type,
        &[libc::SOCK_RAW, libc::SOCK_DGRAM],
    )?;
    if p.protocol > 0xffff {
        return Err(err(
            format!("{field}.packet.protocol"),
            ManifestProblem::OutOfRange {
                value: p.protocol.into(),
                min: 0,
                max: 0xffff,
            },
        ));
    }
    let ifname = |name: String, v: &str| {
        check_len(name.clone(), v.len(), MAX_IFNAME)?;
        if v.contains(['/', '\0']) || v.chars().any(char::is_whitespace) {
            return Err(err(name, ManifestProblem::NotAnInterfaceName(v.to_owned())));
        }
        Ok(())
    };
    ifname(format!("{field}.packet.interface"), &p.interface)?;
    cap_count(
        &format!("{field}.packet.memberships"),
        p.memberships.len(),
        MAX_PACKET_MEMBERSHIPS,
    )?;
    for (i, m) in p.memberships.iter().enumerate() {
        let f = format!("{field}.packet.memberships[{i}]");
        if m.interface.is_empty() {
            return Err(err(format!("{f}.interface"), ManifestProblem::Empty));
        }
        ifname(format!("{f}.interface"), &m.interface)?;
        check_value(format!("{f}.mr_type"), m.mr_type, &[0, 1, 2, 3])?;
        check_len(format!("{f}.address"), m.address.len(), MAX_LINK_ADDR)?;
        if m.count == 0 || m.count > MAX_PACKET_MEMBERSHIPS as u32 {
            return Err(err(
                format!("{f}.count"),
                ManifestProblem::OutOfRange {
                    value: m.count.into(),
                    min: 1,
                    max: MAX_PACKET_MEMBERSHIPS as i128,
                },
            ));
        }
    }
    if p.fanout != 0 {
        let mode = (p.fanout >> 16) & 0xff;
        if mode > PACKET_FANOUT_MODES {
            return Err(err(
                format!("{field}.packet.fanout"),
                ManifestProblem::OutOfRange {
                    value: mode.into(),
                    min: 0,
                    max: PACKET_FANOUT_MODES.into(),
                },
            ));
        }
        let flags = p.fanout >> 24;
        if flags & !PACKET_FANOUT_FLAGS != 0 {
            return Err(err(
                format!("{field}.packet.fanout"),
                ManifestProblem::UnknownBits {
                    value: flags.into(),
                    allowed: PACKET_FANOUT_FLAGS.into(),
                },
            ));
        }
    }
    Ok(())
}
