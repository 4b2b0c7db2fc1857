//! Socket options between Ferry's raw `(level, name, value)` triples (the options that
//! differ from a fresh socket's) and CRIU's `sk_opts_entry`, one field per option.
//!
//! CRIU's six required fields (buffer sizes, timeouts) are 0 here when the socket had the
//! default (Ferry does not record a default), and 0 reads back as "the default".

use ferry_agent::image::sockopt as opt;
use ferry_agent::state::SockOptState;

use crate::pb;

const SOL_SOCKET: i32 = libc::SOL_SOCKET;
const TCP: i32 = libc::IPPROTO_TCP;

fn int(v: &[u8]) -> u32 {
    v.get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn i64_at(v: &[u8], at: usize) -> u64 {
    v.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// CRIU's options of a socket with Ferry's `opts` and BPF `filter`; what has no field is
/// returned as `(level, name)` pairs, lost.
pub(crate) fn to_criu(opts: &[SockOptState], filter: &[u8]) -> (pb::SkOpts, Vec<(i32, i32)>) {
    let mut o = pb::SkOpts {
        so_sndbuf: 0,
        so_rcvbuf: 0,
        so_snd_tmo_sec: 0,
        so_snd_tmo_usec: 0,
        so_rcv_tmo_sec: 0,
        so_rcv_tmo_usec: 0,
        ..Default::default()
    };
    let mut lost = Vec::new();
    for s in opts {
        let v = int(&s.value);
        match (s.level, s.name) {
            (SOL_SOCKET, libc::SO_REUSEADDR) => o.reuseaddr = Some(v != 0),
            (SOL_SOCKET, libc::SO_REUSEPORT) => o.so_reuseport = Some(v != 0),
            (SOL_SOCKET, libc::SO_KEEPALIVE) => o.so_keepalive = Some(v != 0),
            (SOL_SOCKET, libc::SO_BROADCAST) => o.so_broadcast = Some(v != 0),
            (SOL_SOCKET, libc::SO_PASSCRED) => o.so_passcred = Some(v != 0),
            (SOL_SOCKET, libc::SO_OOBINLINE) => o.so_oobinline = Some(v),
            (SOL_SOCKET, libc::SO_RCVLOWAT) => o.so_rcvlowat = Some(v),
            (SOL_SOCKET, libc::SO_MARK) => o.so_mark = Some(v),
            (SOL_SOCKET, libc::SO_SNDBUF) => o.so_sndbuf = v,
            (SOL_SOCKET, libc::SO_RCVBUF) => o.so_rcvbuf = v,
            (SOL_SOCKET, opt::SO_BUF_LOCK) => o.so_buf_lock = Some(v),
            (SOL_SOCKET, libc::SO_BINDTODEVICE) => {
                let name = s.value.split(|&b| b == 0).next().unwrap_or_default();
                o.so_bound_dev = Some(String::from_utf8_lossy(name).into_owned());
            }
            // `struct linger`: CRIU keeps the time of a lingering socket.
            (SOL_SOCKET, libc::SO_LINGER) if v != 0 => {
                o.so_linger = Some(int(s.value.get(4..).unwrap_or_default()));
            }
            // `struct timeval`.
            (SOL_SOCKET, libc::SO_RCVTIMEO) => {
                o.so_rcv_tmo_sec = i64_at(&s.value, 0);
                o.so_rcv_tmo_usec = i64_at(&s.value, 8);
            }
            (SOL_SOCKET, libc::SO_SNDTIMEO) => {
                o.so_snd_tmo_sec = i64_at(&s.value, 0);
                o.so_snd_tmo_usec = i64_at(&s.value, 8);
            }
            (TCP, libc::TCP_KEEPCNT) => o.tcp_keepcnt = Some(v),
            (TCP, libc::TCP_KEEPIDLE) => o.tcp_keepidle = Some(v),
            (TCP, libc::TCP_KEEPINTVL) => o.tcp_keepintvl = Some(v),
            other => lost.push(other),
        }
    }
    o.so_filter = filter
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect();
    (o, lost)
}

/// Ferry's options (in the order a dump reads them) and filter from CRIU's, and the names of
/// the options CRIU set that Ferry has no room for.
pub(crate) fn from_criu(o: &pb::SkOpts) -> (Vec<SockOptState>, Vec<u8>, Vec<&'static str>) {
    let mut out = Vec::new();
    let mut put = |level: i32, name: i32, value: Vec<u8>| {
        out.push(SockOptState { level, name, value });
    };
    let b = |x: bool| u32::from(x).to_ne_bytes().to_vec();
    let u = |x: u32| x.to_ne_bytes().to_vec();
    if let Some(true) = o.reuseaddr {
        put(SOL_SOCKET, libc::SO_REUSEADDR, b(true));
    }
    if let Some(true) = o.so_reuseport {
        put(SOL_SOCKET, libc::SO_REUSEPORT, b(true));
    }
    if let Some(d) = o.so_bound_dev.as_ref().filter(|d| !d.is_empty()) {
        let mut v = d.as_bytes().to_vec();
        v.push(0);
        put(SOL_SOCKET, libc::SO_BINDTODEVICE, v);
    }
    if let Some(true) = o.so_keepalive {
        put(SOL_SOCKET, libc::SO_KEEPALIVE, b(true));
    }
    if let Some(true) = o.so_broadcast {
        put(SOL_SOCKET, libc::SO_BROADCAST, b(true));
    }
    if let Some(x) = o.so_oobinline.filter(|&x| x != 0) {
        put(SOL_SOCKET, libc::SO_OOBINLINE, u(x));
    }
    if let Some(true) = o.so_passcred {
        put(SOL_SOCKET, libc::SO_PASSCRED, b(true));
    }
    if let Some(x) = o.so_rcvlowat.filter(|&x| x > 1) {
        put(SOL_SOCKET, libc::SO_RCVLOWAT, u(x));
    }
    if let Some(x) = o.so_mark.filter(|&x| x != 0) {
        put(SOL_SOCKET, libc::SO_MARK, u(x));
    }
    if let Some(x) = o.so_linger {
        let mut v = u(1);
        v.extend(u(x));
        put(SOL_SOCKET, libc::SO_LINGER, v);
    }
    let tv = |s: u64, us: u64| {
        let mut v = s.to_ne_bytes().to_vec();
        v.extend(us.to_ne_bytes());
        v
    };
    if o.so_rcv_tmo_sec != 0 || o.so_rcv_tmo_usec != 0 {
        put(
            SOL_SOCKET,
            libc::SO_RCVTIMEO,
            tv(o.so_rcv_tmo_sec, o.so_rcv_tmo_usec),
        );
    }
    if o.so_snd_tmo_sec != 0 || o.so_snd_tmo_usec != 0 {
        put(
            SOL_SOCKET,
            libc::SO_SNDTIMEO,
            tv(o.so_snd_tmo_sec, o.so_snd_tmo_usec),
        );
    }
    if o.so_rcvbuf != 0 {
        put(SOL_SOCKET, libc::SO_RCVBUF, u(o.so_rcvbuf));
    }
    if o.so_sndbuf != 0 {
        put(SOL_SOCKET, libc::SO_SNDBUF, u(o.so_sndbuf));
    }
    if let Some(x) = o
        .so_buf_lock
        .filter(|&x| x != 0 || o.so_rcvbuf != 0 || o.so_sndbuf != 0)
    {
        put(SOL_SOCKET, opt::SO_BUF_LOCK, u(x));
    }
    if let Some(x) = o.tcp_keepidle {
        put(TCP, libc::TCP_KEEPIDLE, u(x));
    }
    if let Some(x) = o.tcp_keepintvl {
        put(TCP, libc::TCP_KEEPINTVL, u(x));
    }
    if let Some(x) = o.tcp_keepcnt {
        put(TCP, libc::TCP_KEEPCNT, u(x));
    }
    let filter = o.so_filter.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut lost = Vec::new();
    if o.so_priority.is_some_and(|x| x != 0) {
        lost.push("SO_PRIORITY");
    }
    if o.so_passsec == Some(true) {
        lost.push("SO_PASSSEC");
    }
    if o.so_dontroute == Some(true) {
        lost.push("SO_DONTROUTE");
    }
    if o.so_no_check == Some(true) {
        lost.push("SO_NO_CHECK");
    }
    (out, filter, lost)
}
