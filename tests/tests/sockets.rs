//! Sockets on one host: Unix socketpairs with queued data, listening Unix sockets, a Unix
//! socket whose peer is outside the process, UDP, a TCP listener, and an established TCP
//! connection carried over with `--tcp-established` (no byte lost or duplicated either way).

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use ferry_tests::{TestCtx, Victim, alive, field, image_path, setup};
use nix::sys::signal::Signal;

const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn ping_unix(addr: &std::os::unix::net::SocketAddr) -> String {
    let mut s = UnixStream::connect_addr(addr).expect("connect to the restored Unix listener");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.write_all(b"hi").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the reply");
    out
}

fn dump_fails(ctx: &TestCtx, v: &Victim, extra: &[&str]) -> String {
    let pid = v.pid.to_string();
    let img = image_path(ctx, "refused");
    let mut args = vec![
        "dump",
        pid.as_str(),
        "-o",
        img.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let out = ctx.ferry(&args);
    out.assert_failed();
    assert!(!img.exists(), "a refused dump left an image behind");
    assert!(alive(v.pid), "a refused dump ended the process");
    out.stderr.clone()
}

#[test]
fn unix_socketpairs_and_listeners() {
    let Some(ctx) = setup("sockets-unix") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_unix", &[]);
    let abs = v
        .status_lines()
        .iter()
        .find_map(|l| field(l, "abstract").map(str::to_owned))
        .expect("abstract name");
    let img = image_path(&ctx, "unix");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    // The queued data, with its message boundaries, and the pairs still working.
    v.check();
    let path =
        std::os::unix::net::SocketAddr::from_pathname(v.state.join("listen.sock")).expect("path");
    assert_eq!(ping_unix(&path), "pong hi");
    let abstract_addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            abs.as_bytes(),
        )
        .expect("abstract address");
    assert_eq!(ping_unix(&abstract_addr), "pong hi");
    // With the original still running, its socket file is still bound: the restore refuses to
    // take it over. (After the check: a zero-length datagram peeked once is skipped by later
    // peeks, see docs/engine.md.)
    let img = image_path(&ctx, "unix-left");
    v.dump(&ctx, &img, &["--leave-running"]);
    let out = ctx.ferry(&["restore", img.to_str().expect("utf-8 path")]);
    out.assert_failed();
    assert!(
        out.stderr.contains("still bound by a live socket"),
        "{}",
        out.stderr
    );
    // A second cycle: the socket file now belongs to the restored process.
    let img2 = image_path(&ctx, "unix2");
    v.dump(&ctx, &img2, &[]);
    v.restore(&ctx, &img2, &[]);
    v.check();
    assert_eq!(ping_unix(&path), "pong hi");
}

#[test]
fn unix_external_peer() {
    let Some(ctx) = setup("sockets-unix-ext") else {
        return;
    };
    let sock = ctx.path("outside.sock");
    let listener = UnixListener::bind(&sock).expect("bind the outside listener");
    let mut v = Victim::c(
        &ctx,
        "sockets_unix",
        &["connect", sock.to_str().expect("utf-8")],
    );
    let (_first, _) = listener.accept().expect("accept the victim");

    let err = dump_fails(&ctx, &v, &[]);
    assert!(
        err.contains("outside the process") && err.contains("--ext-unix-sk"),
        "{err}"
    );
    assert!(
        err.contains("outside.sock") && err.contains("fd "),
        "the refusal should name the fd and the peer: {err}"
    );

    let img = image_path(&ctx, "ext");
    v.dump(&ctx, &img, &["--ext-unix-sk"]);
    v.restore(&ctx, &img, &[]);
    // Reconnected by name: a new connection reaches our listener.
    listener.set_nonblocking(true).expect("nonblocking");
    let start = Instant::now();
    let mut again = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < IO_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the restored process did not reconnect: {e}"),
        }
    };
    again.set_nonblocking(false).expect("blocking");
    again.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    v.check();
    let mut line = [0u8; 64];
    let n = again
        .read(&mut line)
        .expect("read from the reconnected victim");
    assert_eq!(
        String::from_utf8_lossy(&line[..n]),
        format!("hello from {}\n", v.orig_pid)
    );
}

fn ports(v: &Victim) -> (u16, u16) {
    let line = v
        .status_lines()
        .into_iter()
        .find(|l| l.starts_with("ports"))
        .expect("ports line");
    let p = |k| field(&line, k).and_then(|s| s.parse().ok()).expect("port");
    (p("udp"), p("tcp"))
}

fn udp_echo(port: u16, msg: &[u8]) -> Vec<u8> {
    let u = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    u.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    u.send_to(msg, ("127.0.0.1", port)).expect("send");
    let mut buf = [0u8; 512];
    let n = u.recv(&mut buf).expect("the UDP echo answers");
    buf[..n].to_vec()
}

fn tcp_ping(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the restored listener");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.write_all(b"hey").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the reply");
    out
}

#[test]
fn udp_and_tcp_listener() {
    let Some(ctx) = setup("sockets-inet") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_inet", &["0"]);
    let (udp, tcp) = ports(&v);
    assert_eq!(udp_echo(udp, b"one"), b"echo:one");
    assert_eq!(tcp_ping(tcp), "pong hey");
    let before = v.check();
    let img = image_path(&ctx, "inet-left");
    v.dump(&ctx, &img, &["--leave-running"]);
    let out = ctx.ferry(&["restore", img.to_str().expect("utf-8 path")]);
    out.assert_failed();
    let want = format!(
        "bind 127.0.0.1:{tcp} (is the dumped process still running, e.g. after --leave-running?)"
    );
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    assert_eq!(tcp_ping(tcp), "pong hey", "the original serves on");
    let img = image_path(&ctx, "inet");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    assert_eq!(udp_echo(udp, b"two"), b"echo:two");
    assert_eq!(tcp_ping(tcp), "pong hey");
    assert_eq!(tcp_ping(tcp), "pong hey");
    let after = v.check();
    for key in ["rcvbuf", "reuse"] {
        assert_eq!(
            field(&before, key),
            field(&after, key),
            "{key}: {before} / {after}"
        );
    }
    assert_eq!(field(&after, "reuse"), Some("1"));
}

fn pattern(seed: u64, start: u64, len: usize, mul: u64) -> Vec<u8> {
    (start..start + len as u64)
        .map(|i| (i.wrapping_mul(mul).wrapping_add(seed) & 0xff) as u8)
        .collect()
}

#[test]
fn tcp_established_connection() {
    let Some(ctx) = setup("sockets-tcp") else {
        return;
    };
    const TX: usize = 1_000_000; // victim -> us, mostly still queued in the victim at dump time
    const RX1: usize = 65536; // us -> victim before the dump, unread by the victim
    const RX2: usize = 100_000; // us -> victim after the restore
    let mut v = Victim::c(&ctx, "sockets_inet", &[&TX.to_string()]);
    let (_, tcp) = ports(&v);
    let mut c = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
    c.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    v.wait_status("accepted", |l| l == "accepted");
    c.write_all(&pattern(5, 0, RX1, 13))
        .expect("write before the dump");
    // Let the victim fill our receive window and its own send queue.
    std::thread::sleep(Duration::from_millis(500));

    let err = dump_fails(&ctx, &v, &[]);
    let local = c.peer_addr().expect("peer");
    let mine = c.local_addr().expect("local");
    let want = format!("established TCP connection {local} -> {mine} (use --tcp-established)");
    assert!(
        err.contains(&want) && err.contains("fd "),
        "refusal should say {want:?}: {err}"
    );
    let err = dump_fails(&ctx, &v, &["--tcp-established", "--leave-running"]);
    assert!(err.contains("--leave-running"), "{err}");

    let img = image_path(&ctx, "tcp");
    v.dump(&ctx, &img, &["--tcp-established"]);
    v.restore(&ctx, &img, &[]);
    v.signal(Signal::SIGUSR2); // the victim starts reading
    let writer = {
        let mut w = c.try_clone().expect("clone");
        std::thread::spawn(move || w.write_all(&pattern(5, RX1 as u64, RX2, 13)))
    };
    let mut got = Vec::with_capacity(TX);
    let mut buf = vec![0u8; 65536];
    while got.len() < TX {
        let n = c.read(&mut buf).expect("read from the restored victim");
        assert!(
            n > 0,
            "the restored victim closed the connection after {} bytes",
            got.len()
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got.len(), TX);
    assert!(
        got == pattern(3, 0, TX, 7),
        "the bytes from the victim differ from what it sent"
    );
    writer
        .join()
        .expect("writer thread")
        .expect("write after the restore");
    let want_rx = (RX1 + RX2).to_string();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let ok = v.check();
        if field(&ok, "rx") == Some(want_rx.as_str()) {
            assert_eq!(field(&ok, "tx"), Some(TX.to_string().as_str()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the victim received {ok}, want rx={want_rx}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The listener takes new clients too.
    assert_eq!(tcp_ping(tcp), "pong hey");
}

/// The names of the nftables tables of this network namespace that the network lock made.
fn lock_tables() -> Vec<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("run nft (Debian package nftables)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table inet ferry_lock_"))
        .map(|s| format!("ferry_lock_{s}"))
        .collect()
}

#[test]
fn tcp_peer_writing_between_dump_and_restore_keeps_its_connection() {
    let Some(ctx) = setup("sockets-tcp-lock") else {
        return;
    };
    const TX: usize = 4096; // victim -> us
    const GAP: usize = 30_000; // us -> victim while it exists only as an image
    const AFTER: usize = 20_000; // us -> victim after the restore
    let before = lock_tables();
    let mut v = Victim::c(&ctx, "sockets_inet", &[&TX.to_string()]);
    let (_, tcp) = ports(&v);
    let mut c = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
    c.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    v.wait_status("accepted", |l| l == "accepted");
    let img = image_path(&ctx, "tcp-lock");
    v.dump(&ctx, &img, &["--tcp-established"]);
    let locked: Vec<String> = lock_tables()
        .into_iter()
        .filter(|t| !before.contains(t))
        .collect();
    assert_eq!(
        locked.len(),
        1,
        "one lock table for the connection: {locked:?}"
    );
    // Without the lock the kernel answers these segments with RST (no socket has the port)
    // and the connection is gone for good.
    c.write_all(&pattern(5, 0, GAP, 13))
        .expect("write between dump and restore");
    std::thread::sleep(Duration::from_millis(300));
    v.restore(&ctx, &img, &[]);
    assert!(
        !lock_tables().contains(&locked[0]),
        "the restore removes the lock"
    );
    v.signal(Signal::SIGUSR2); // the victim starts reading
    c.write_all(&pattern(5, GAP as u64, AFTER, 13))
        .expect("write after the restore");
    let mut got = Vec::with_capacity(TX);
    let mut buf = vec![0u8; 65536];
    while got.len() < TX {
        let n = c.read(&mut buf).expect("read from the restored victim");
        assert!(n > 0, "the restored victim closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got == pattern(3, 0, TX, 7),
        "the bytes from the victim differ"
    );
    let want_rx = (GAP + AFTER).to_string();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let ok = v.check();
        if field(&ok, "rx") == Some(want_rx.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the victim received {ok}, want rx={want_rx}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Options set away from their defaults on TCP (a listener and both ends of an established
/// connection), UDP, IPv6 UDP and Unix sockets come back with the values the process set;
/// SO_REUSEADDR of an established connection among them (repair mode used to reset it).
#[test]
fn socket_options_come_back() {
    let Some(ctx) = setup("sockets-opts") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_opts", &["opts"]);
    let before = v.check();
    let img = image_path(&ctx, "opts");
    v.dump(&ctx, &img, &["--tcp-established"]);
    v.restore(&ctx, &img, &[]);
    let after = v.check();
    assert_eq!(field(&before, "n"), field(&after, "n"));
    // A second cycle: what the first restore made is dumped the same way.
    let img2 = image_path(&ctx, "opts2");
    v.dump(&ctx, &img2, &["--tcp-established"]);
    v.restore(&ctx, &img2, &[]);
    v.check();
}

/// Classic BPF filters (SO_ATTACH_FILTER) on a UDP socket and on an established TCP
/// connection (which the dump puts behind a filter of its own meanwhile) come back and still
/// filter.
#[test]
fn socket_filters_come_back() {
    let Some(ctx) = setup("sockets-filter") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_opts", &["filter"]);
    v.check();
    let img = image_path(&ctx, "filter");
    v.dump(&ctx, &img, &["--tcp-established"]);
    v.restore(&ctx, &img, &[]);
    v.check();
}

/// Shutdown bits of UDP, Unix datagram and established TCP sockets come back.
#[test]
fn shutdown_state_comes_back() {
    let Some(ctx) = setup("sockets-shut") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_state", &["shut"]);
    v.check();
    let img = image_path(&ctx, "shut");
    v.dump(&ctx, &img, &["--tcp-established"]);
    v.restore(&ctx, &img, &[]);
    v.check();
}

/// Unix sockets whose peer closed (a socketpair end, an accepted connection), a datagram
/// socketpair end whose peer closed, a named datagram socket connected one way, each with
/// queued data; a listener whose socket file was removed; a connection from the process not
/// accepted yet.
#[test]
fn unix_queues_without_a_live_peer() {
    let Some(ctx) = setup("sockets-queues") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_state", &["queues"]);
    v.check();
    let img = image_path(&ctx, "queues");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.check();
    let img2 = image_path(&ctx, "queues2");
    v.dump(&ctx, &img2, &[]);
    v.restore(&ctx, &img2, &[]);
    v.check();
}

/// A connection from the process not accepted yet, holding data its client wrote: its data
/// can only be read by accepting it, which the original would not survive. A dump that lets
/// the process run on (`--leave-running`) refuses it, naming it, and leaves the connection
/// waiting; a dump that ends the process carries it (and the restore checker accepts it).
#[test]
fn unix_pending_connection_with_data() {
    let Some(ctx) = setup("sockets-pending") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_state", &["pending"]);
    v.check();
    let err = dump_fails(&ctx, &v, &["--leave-running"]);
    assert!(
        err.contains("not accepted yet")
            && err.contains("ferry-state-")
            && err.contains("--leave-running"),
        "{err}"
    );
    // Still waiting on the listener.
    v.check();
    let img = image_path(&ctx, "pending");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.check();
}

/// Netlink sockets come back with their protocol, port id (chosen or given by the kernel),
/// groups (also beyond the first 32) and flags, and answer requests at that port id.
#[test]
fn netlink_sockets_come_back() {
    let Some(ctx) = setup("sockets-netlink") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_kinds", &["netlink"]);
    v.check();
    let img = image_path(&ctx, "netlink");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.check();
}

/// A netlink socket with a message not read yet is refused, named.
#[test]
fn netlink_socket_with_queued_messages_is_refused() {
    let Some(ctx) = setup("sockets-netlink-queued") else {
        return;
    };
    let v = Victim::c(&ctx, "sockets_kinds", &["netlink-queued"]);
    let err = dump_fails(&ctx, &v, &[]);
    assert!(
        err.contains("netlink socket") && err.contains("messages queued") && err.contains("fd "),
        "{err}"
    );
}

/// A raw ICMP socket with its ICMP_FILTER and a UDP-Lite socket with its checksum coverage
/// come back bound and working (a ping socket too where the host allows one).
#[test]
fn raw_and_udplite_sockets_come_back() {
    let Some(ctx) = setup("sockets-raw") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_kinds", &["raw"]);
    v.check();
    let img = image_path(&ctx, "raw");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.check();
}

/// A packet socket with a receive ring is refused at dump, named.
#[test]
fn packet_socket_with_a_ring_is_refused() {
    let Some(ctx) = setup("sockets-packet") else {
        return;
    };
    let v = Victim::c(&ctx, "sockets_kinds", &["packet"]);
    let err = dump_fails(&ctx, &v, &[]);
    assert!(
        err.contains("packet socket") && err.contains("PACKET_RX_RING") && err.contains("fd "),
        "{err}"
    );
}

/// A link made for a test (a veth pair: deleting one end deletes both), deleted when
/// dropped.
struct Link(String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

/// A packet socket is bound again to its interface by name; an interface this host no longer
/// has fails the restore, naming it, before the process exists.
#[test]
fn packet_socket_on_a_missing_interface_fails_the_restore_naming_it() {
    let Some(ctx) = setup("sockets-packet-if") else {
        return;
    };
    let name = format!("fry{}", std::process::id() % 100_000);
    let made = std::process::Command::new("ip")
        .args(["link", "add", &name, "type", "veth", "peer", "name"])
        .arg(format!("{name}p"))
        .status()
        .expect("run ip");
    assert!(made.success(), "ip link add {name} type veth");
    let link = Link(name.clone());
    let mut v = Victim::c(&ctx, "sockets_kinds", &["packet-on", &name]);
    let img = image_path(&ctx, "packet-if");
    v.dump(&ctx, &img, &[]);
    drop(link);
    let out = ctx.ferry(&["restore", img.to_str().expect("utf-8 path")]);
    out.assert_failed();
    assert!(
        out.stderr.contains(&format!(
            "interface \"{name}\", which this host does not have"
        )),
        "{}",
        out.stderr
    );
}

/// TCP connections in states other than listening, closed and established (here CLOSE-WAIT
/// and FIN-WAIT-2) are refused at dump, naming the state.
/// A TCP connection inside the process shut down one way (the client in FIN-WAIT-2, the
/// accepted end in CLOSE-WAIT) comes back half-closed: end of stream on one end, EPIPE on the
/// other, bytes still flowing the open way (checked before and after).
#[test]
fn tcp_half_closed_connection_comes_back() {
    let Some(ctx) = setup("sockets-closewait") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_state", &["closewait"]);
    v.check();
    let img = image_path(&ctx, "closewait");
    v.dump(&ctx, &img, &["--tcp-established"]);
    v.restore(&ctx, &img, &[]);
    v.check();
}

/// A TCP connect in progress (SYN-SENT) is refused at dump, naming the state.
#[test]
fn tcp_connect_in_progress_is_refused_naming_its_state() {
    let Some(ctx) = setup("sockets-synsent") else {
        return;
    };
    let v = Victim::c(&ctx, "sockets_state", &["synsent"]);
    let err = dump_fails(&ctx, &v, &["--tcp-established"]);
    assert!(
        err.contains("in state SYN-SENT") && err.contains("fd "),
        "{err}"
    );
}

/// A TCP connection from the process to its own listener that was not accepted yet (its other
/// end is no socket yet, it waits in the accept queue): `--leave-running` refuses it, naming
/// it (as every TCP connection); a dump that ends the process carries it, and the
/// restore makes it again by a handshake (the restore checker agrees).
#[test]
fn tcp_connection_not_accepted_yet_is_carried() {
    let Some(ctx) = setup("sockets-tcppending") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_state", &["tcppending"]);
    let err = dump_fails(&ctx, &v, &["--tcp-established", "--leave-running"]);
    assert!(
        err.contains("fd ") && err.contains("TCP connection") && err.contains("--leave-running"),
        "{err}"
    );
    v.check();
    let img = image_path(&ctx, "tcppending");
    let out = v.dump(&ctx, &img, &["--tcp-established"]);
    assert!(
        !out.stderr.contains("are dropped"),
        "the connection from the process is not dropped: {}",
        out.stderr
    );
    v.restore(&ctx, &img, &[]);
    v.check();
}

/// Datagrams queued on a UDP socket and on a Unix datagram socket come back with their
/// senders' addresses: senders of the process, and senders closed since.
#[test]
fn queued_datagrams_keep_their_senders() {
    let Some(ctx) = setup("sockets-dgramfrom") else {
        return;
    };
    let mut v = Victim::c(&ctx, "sockets_state", &["dgramfrom"]);
    let ext: u16 = v
        .status_lines()
        .iter()
        .find_map(|l| l.strip_prefix("ext=").and_then(|p| p.parse().ok()))
        .expect("ext port");
    // From a sender that stays open outside the process: its address cannot be taken at
    // restore, so that queue is dropped with a warning (and the restore check agrees).
    let outside = UdpSocket::bind("127.0.0.1:0").expect("bind");
    outside
        .send_to(b"from outside", ("127.0.0.1", ext))
        .expect("send");
    v.check();
    let img = image_path(&ctx, "dgramfrom");
    let out = v.dump(&ctx, &img, &[]);
    let from = outside.local_addr().expect("address");
    assert!(
        out.stderr.contains(&format!(
            "some from {from} outside the process, are dropped"
        )),
        "{}",
        out.stderr
    );
    v.restore(&ctx, &img, &[]);
    v.check();
}
