//! The FINs of a half-closed or closing TCP connection, set again at restore.
//!
//! `TCP_REPAIR` rebuilds a connection as established; the kernel has no option for the FIN
//! of either direction. A FIN the process sent is put back with `shutdown(SHUT_WR)` in repair
//! mode, on the send queue, so that it counts as sent without leaving the host. A FIN (or the
//! acknowledgement of the process's FIN) that the peer had sent is put back as the kernel got
//! it: one TCP segment from the peer's address to the socket, written on a raw IP socket
//! (the way CRIU's libsoccr does it). The network lock of the dump lets these segments
//! through by their mark ([`crate::netlock::MARK`]) while it drops the peer's own.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, SockaddrIn, SockaddrIn6, sendto};

use crate::sys::socket as ss;

/// TCP header flags.
pub const FIN: u8 = 0x01;
/// TCP header flags.
pub const ACK: u8 = 0x10;
/// `IPV6_HDRINCL`.
const IPV6_HDRINCL: i32 = 36;

/// One segment from `from` to `to` without data or options: `seq`, `ack`, `flags`, the
/// window field as sent (already scaled).
pub struct Segment {
    /// The peer's end (the sender).
    pub from: SocketAddr,
    /// The restored socket's end.
    pub to: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// [`FIN`], [`ACK`].
    pub flags: u8,
    /// The window field.
    pub window: u16,
}

/// The 16-bit ones' complement sum of `data`, folded.
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The TCP header of `s` with its checksum over the pseudo-header of `src` and `dst`.
fn tcp_header(s: &Segment, src: IpAddr, dst: IpAddr) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0..2].copy_from_slice(&s.from.port().to_be_bytes());
    h[2..4].copy_from_slice(&s.to.port().to_be_bytes());
    h[4..8].copy_from_slice(&s.seq.to_be_bytes());
    h[8..12].copy_from_slice(&s.ack.to_be_bytes());
    h[12] = 5 << 4; // 20 bytes, no options
    h[13] = s.flags;
    h[14..16].copy_from_slice(&s.window.to_be_bytes());
    let mut acc = 0;
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            acc = sum(acc, &a.octets());
            acc = sum(acc, &b.octets());
            acc = sum(acc, &[0, libc::IPPROTO_TCP as u8, 0, 20]);
        }
        (a, b) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            acc = sum(acc, &v6(a).octets());
            acc = sum(acc, &v6(b).octets());
            acc = sum(acc, &[0, 0, 0, 20, 0, 0, 0, libc::IPPROTO_TCP as u8]);
        }
    }
    acc = sum(acc, &h);
    h[16..18].copy_from_slice(&fold(acc).to_be_bytes());
    h
}

/// Sends `s` on a raw IP socket (IPv4 also for IPv4-mapped IPv6 addresses), marked so that
/// the network lock lets it through.
pub fn send(s: &Segment) -> Result<(), Errno> {
    let canon = |ip: IpAddr| ip.to_canonical();
    let (src, dst) = (canon(s.from.ip()), canon(s.to.ip()));
    let tcp = tcp_header(s, src, dst);
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let raw = ss::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
            ss::setsockopt_int(
                raw.as_fd(),
                libc::SOL_SOCKET,
                libc::SO_MARK,
                crate::netlock::MARK,
            )?;
            let mut p = Vec::with_capacity(40);
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&40u16.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, libc::IPPROTO_TCP as u8, 0, 0]);
            p.extend_from_slice(&a.octets());
            p.extend_from_slice(&b.octets());
            p.extend_from_slice(&tcp);
            let to = SockaddrIn::from(std::net::SocketAddrV4::new(b, 0));
            send_all(raw.as_fd(), &p, &to)
        }
        (a, b) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            let raw = ss::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
            ss::setsockopt_int(
                raw.as_fd(),
                libc::SOL_SOCKET,
                libc::SO_MARK,
                crate::netlock::MARK,
            )?;
            ss::setsockopt_int(raw.as_fd(), libc::IPPROTO_IPV6, IPV6_HDRINCL, 1)?;
            let mut p = Vec::with_capacity(60);
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&20u16.to_be_bytes());
            p.extend_from_slice(&[libc::IPPROTO_TCP as u8, 64]);
            p.extend_from_slice(&v6(a).octets());
            p.extend_from_slice(&v6(b).octets());
            p.extend_from_slice(&tcp);
            let to = SockaddrIn6::from(std::net::SocketAddrV6::new(v6(b), 0, 0, 0));
            send_all(raw.as_fd(), &p, &to)
        }
    }
}

fn send_all(
    raw: BorrowedFd<'_>,
    p: &[u8],
    to: &dyn nix::sys::socket::SockaddrLike,
) -> Result<(), Errno> {
    let n = sendto(raw.as_raw_fd(), p, to, MsgFlags::empty())?;
    if n == p.len() {
        Ok(())
    } else {
        Err(Errno::EIO)
    }
}

/// `tcpi_state` of a socket.
pub fn state_of(c: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut info = [0u8; 8];
    ss::getsockopt_bytes(c, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info)?;
    Ok(u32::from(info[0]))
}

/// Waits (up to a second) for the socket to reach `want` once a segment was sent to it.
pub fn wait_state(c: BorrowedFd<'_>, want: u32) -> Result<bool, Errno> {
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        if state_of(c)? == want {
            return Ok(true);
        }
        if Instant::now() > until {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_segment() {
        // A header whose checksum field holds the right sum adds up to 0xffff with it.
        let s = Segment {
            from: "10.0.0.2:40000".parse().unwrap(),
            to: "10.0.0.1:6379".parse().unwrap(),
            seq: 0x1234_5678,
            ack: 0x9abc_def0,
            flags: FIN | ACK,
            window: 512,
        };
        let (a, b) = (s.from.ip(), s.to.ip());
        let h = tcp_header(&s, a, b);
        let mut acc = sum(0, &[10, 0, 0, 2, 10, 0, 0, 1, 0, 6, 0, 20]);
        acc = sum(acc, &h);
        assert_eq!(fold(acc), 0, "{h:?}");
        let v6 = Segment {
            from: "[::1]:1".parse().unwrap(),
            to: "[::1]:2".parse().unwrap(),
            ..s
        };
        let h6 = tcp_header(&v6, v6.from.ip(), v6.to.ip());
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        pseudo.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
        assert_eq!(fold(sum(sum(0, &pseudo), &h6)), 0);
    }
}
