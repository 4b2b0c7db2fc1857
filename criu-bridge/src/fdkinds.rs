//! Descriptor kinds beyond files, pipes and eventfds, both ways: Unix and inet sockets,
//! signalfds, timerfds and epoll instances (`files.img` entries of `fd_types` UNIXSK, INETSK,
//! SIGNALFD, TIMERFD, EVENTPOLL).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use ferry_agent::state::{
    EpollTarget, FdKind, FileIdentity, InetSocketState, SocketKind, SocketState, TimerfdState,
    UnixSocketState,
};

use crate::{Report, pb};

const NS: u64 = 1_000_000_000;
/// `unix_sk_entry.uflags`: the peer is outside the image.
const USK_EXTERN: u32 = 1;
/// `TCP_LISTEN`, `TCP_ESTABLISHED`.
const LISTEN: u32 = 10;
const ESTABLISHED: u32 = 1;

/// A signalfd's entry.
pub(crate) fn signalfd(id: u32, flags: u32, fown: pb::Fown, mask: u64) -> pb::File {
    pb::File {
        r#type: crate::fdtype::SIGNALFD,
        id,
        sgfd: Some(pb::SignalfdFile {
            id,
            flags,
            fown,
            sigmask: mask,
        }),
        ..Default::default()
    }
}

/// A timerfd's entry.
pub(crate) fn timerfd(id: u32, flags: u32, fown: pb::Fown, t: &TimerfdState) -> pb::File {
    pb::File {
        r#type: crate::fdtype::TIMERFD,
        id,
        tfd: Some(pb::TimerfdFile {
            id,
            flags,
            fown,
            clockid: t.clockid as u32,
            ticks: t.ticks,
            settime_flags: t.settime_flags,
            vsec: t.value_ns / NS,
            vnsec: t.value_ns % NS,
            isec: t.interval_ns / NS,
            insec: t.interval_ns % NS,
        }),
        ..Default::default()
    }
}

/// An epoll instance's entry; `at` names it in losses.
pub(crate) fn epoll(
    id: u32,
    flags: u32,
    fown: pb::Fown,
    targets: &[EpollTarget],
    at: &str,
    report: &mut Report,
) -> pb::File {
    let mut tfd = Vec::new();
    for t in targets {
        if t.file_fd != t.fd {
            report.lose(format!(
                "{at}: watch of fd {} whose file is now at fd {} (CRIU names a watch by its descriptor only)",
                t.fd, t.file_fd
            ));
            continue;
        }
        if t.pending {
            report.lose(format!(
                "{at}: the untaken edge-triggered event of fd {} (CRIU keeps no ready list)",
                t.fd
            ));
        }
        tfd.push(pb::EventpollTfd {
            id,
            tfd: t.fd as u32,
            events: t.events,
            data: t.data,
            dev: None,
            inode: None,
            pos: None,
        });
    }
    pb::File {
        r#type: crate::fdtype::EVENTPOLL,
        id,
        epfd: Some(pb::EventpollFile {
            id,
            flags,
            fown,
            tfd,
        }),
        ..Default::default()
    }
}

/// The kind and status flags of a CRIU entry this module reads, or `None` for other types;
/// `Err` names why the descriptor is not carried.
pub(crate) fn import(
    f: &pb::File,
    files: &HashMap<u32, pb::File>,
    at: &str,
    report: &mut Report,
) -> Option<Result<(u32, FdKind, pb::Fown), String>> {
    if let Some(s) = &f.sgfd {
        return Some(Ok((s.flags, FdKind::Signalfd { mask: s.sigmask }, s.fown)));
    }
    if let Some(t) = &f.tfd {
        return Some(Ok((
            t.flags,
            FdKind::Timerfd(TimerfdState {
                clockid: t.clockid as i32,
                settime_flags: t.settime_flags,
                value_ns: t.vsec * NS + t.vnsec,
                interval_ns: t.isec * NS + t.insec,
                ticks: t.ticks,
            }),
            t.fown,
        )));
    }
    if let Some(e) = &f.epfd {
        let targets = e
            .tfd
            .iter()
            .map(|t| EpollTarget {
                fd: t.tfd as i32,
                events: t.events,
                data: t.data,
                file_fd: t.tfd as i32,
                pending: false,
            })
            .collect();
        return Some(Ok((e.flags, FdKind::Epoll { targets }, e.fown)));
    }
    if let Some(u) = &f.usk {
        return Some(unix(u, files, at, report));
    }
    if let Some(i) = &f.isk {
        return Some(inet(i, at, report));
    }
    None
}

fn lost_opts(at: &str, lost: &[&str], report: &mut Report) {
    for l in lost {
        report.lose(format!("{at}: socket option {l} (Ferry does not carry it)"));
    }
}

fn unix(
    u: &pb::UnixSk,
    files: &HashMap<u32, pb::File>,
    at: &str,
    report: &mut Report,
) -> Result<(u32, FdKind, pb::Fown), String> {
    let (opts, filter, lost) = crate::sockopts::from_criu(&u.opts);
    lost_opts(at, &lost, report);
    let path_name = !u.name.is_empty() && u.name[0] != 0;
    let path = String::from_utf8_lossy(&u.name).into_owned();
    let (file, owner) = if path_name {
        match std::fs::symlink_metadata(&path) {
            // As a dump keeps a socket file: its device, inode and mode.
            Ok(m) if m.file_type().is_socket() => (
                Some(FileIdentity {
                    dev: m.dev(),
                    ino: m.ino(),
                    mode: m.mode(),
                    ..Default::default()
                }),
                (m.uid(), m.gid()),
            ),
            _ => (
                None,
                u.file_perms.as_ref().map_or((0, 0), |p| (p.uid, p.gid)),
            ),
        }
    } else {
        (None, (0, 0))
    };
    let external = u.uflags & USK_EXTERN != 0;
    let peer_name = if u.peer != 0 {
        files
            .values()
            .filter_map(|f| f.usk.as_ref())
            .find(|p| p.ino == u.peer)
            .map(|p| p.name.clone())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let kind = SocketKind::Unix(UnixSocketState {
        name: u.name.clone(),
        file,
        owner,
        file_path: None,
        backlog: (u.state == LISTEN).then_some(u.backlog),
        peer_ino: u64::from(u.peer),
        peer_external: external,
        peer_name,
        shutdown: u.shutdown.unwrap_or(0),
        queue: Vec::new(),
        queue_from: Vec::new(),
        pending: 0,
        in_flight: Vec::new(),
        sent_unaccepted: false,
        pending_sent: Vec::new(),
    });
    Ok((
        u.flags,
        FdKind::Socket(Box::new(SocketState {
            ino: u64::from(u.ino),
            family: libc::AF_UNIX as u32,
            sock_type: u.r#type,
            opts,
            filter,
            kind,
        })),
        u.fown,
    ))
}

fn addr(family: u32, words: &[u32], port: u32) -> Result<SocketAddr, String> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match (family as i32, bytes.len()) {
        (libc::AF_INET, 4) => IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(&bytes[..4]).unwrap_or_default(),
        )),
        (libc::AF_INET, 0) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (libc::AF_INET6, 16) => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&bytes[..]).unwrap_or_default(),
        )),
        (libc::AF_INET6, 0) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (f, n) => return Err(format!("an address of {n} bytes for family {f}")),
    };
    let port = u16::try_from(port).map_err(|_| format!("port {port}"))?;
    Ok(SocketAddr::new(ip, port))
}

fn inet(i: &pb::InetSk, at: &str, report: &mut Report) -> Result<(u32, FdKind, pb::Fown), String> {
    if i.r#type == libc::SOCK_STREAM as u32 && i.state != LISTEN && i.state != 7 {
        return Err(format!(
            "a TCP connection in state {} (tcp-stream is not read)",
            i.state
        ));
    }
    let (mut opts, filter, lost) = crate::sockopts::from_criu(&i.opts);
    lost_opts(at, &lost, report);
    if i.v6only == Some(true) && i.family == libc::AF_INET6 as u32 {
        opts.push(ferry_agent::state::SockOptState {
            level: libc::IPPROTO_IPV6,
            name: libc::IPV6_V6ONLY,
            value: 1u32.to_ne_bytes().to_vec(),
        });
    }
    let local = addr(i.family, &i.src_addr, i.src_port)?;
    let peer = if i.dst_port != 0 || i.state == ESTABLISHED {
        Some(addr(i.family, &i.dst_addr, i.dst_port)?)
    } else {
        None
    };
    let kind = SocketKind::Inet(InetSocketState {
        protocol: i.proto,
        local,
        peer,
        backlog: (i.state == LISTEN).then_some(i.backlog),
        tcp: None,
        shutdown: i.shutdown.unwrap_or(0),
        queue: Vec::new(),
        queue_from: Vec::new(),
    });
    Ok((
        i.flags,
        FdKind::Socket(Box::new(SocketState {
            ino: u64::from(i.ino),
            family: i.family,
            sock_type: i.r#type,
            opts,
            filter,
            kind,
        })),
        i.fown,
    ))
}
