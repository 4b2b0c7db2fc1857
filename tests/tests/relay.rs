//! The stub and the relay, on one host and in-process: a C victim (our child) is held, its
//! relayed descriptors captured, and it becomes `ferry-stub` in place (same PID, same parent,
//! its descriptors kept). Its image is restored on this host with substituted local endpoints
//! (in a new PID namespace, since the stub keeps the PID), and the origin and destination
//! relays are joined by in-process channels instead of `Peer.Relay`. Then, through the stub's
//! descriptors only: stdin lines written while it was frozen, a TCP byte sent while it was
//! frozen, new connections to its listening port, UDP, SIGUSR1 sent to the stub, and the exit
//! status (code, signal) and SIGKILL of the stub.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_agent::dump::{DumpOptions, hold};
use ferry_agent::image::{Codec, ImageReader};
use ferry_agent::relay::{Registry, dest, origin};
use ferry_agent::restore::{RestoreOptions, restore_with};
use ferry_tests::{TestCtx, setup, target_dir, workload};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn stub_bin() -> PathBuf {
    let p = target_dir().join("debug").join("ferry-stub");
    assert!(p.is_file(), "{} is missing: cargo build first", p.display());
    p
}

/// The migrated pair: the stub (our child) and the remote copy.
struct Migrated {
    child: Child,
    out: Box<dyn BufRead + Send>,
    stdin: Box<dyn Write + Send>,
    /// With a terminal: its master.
    master: Option<std::fs::File>,
    server_side: TcpStream,
    listen_port: u16,
    udp_port: u16,
    remote: i32,
    rt: tokio::runtime::Runtime,
    relay: Option<
        tokio::task::JoinHandle<
            Result<Option<ferry_proto::v1::ExitStatus>, ferry_agent::relay::RelayError>,
        >,
    >,
}

impl Drop for Migrated {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.remote), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn line(out: &mut Box<dyn BufRead + Send>) -> String {
    let mut l = String::new();
    out.read_line(&mut l)
        .expect("read a line of the victim's stdout");
    l.trim_end().to_string()
}

/// The next line starting with `prefix` (a terminal also shows the echo of what is typed).
fn line_starting(out: &mut Box<dyn BufRead + Send>, prefix: &str) -> String {
    loop {
        let l = line(out);
        if l.starts_with(prefix) {
            return l;
        }
    }
}

fn read_some(s: &mut impl Read) -> String {
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn fd_link(pid: i32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn migrate(ctx: &TestCtx, id: &str, tty: bool) -> Migrated {
    migrate_with(ctx, id, tty, false)
}

fn migrate_with(ctx: &TestCtx, id: &str, tty: bool, threads: bool) -> Migrated {
    let server = TcpListener::bind("127.0.0.1:0").expect("test server");
    let port = server.local_addr().expect("addr").port().to_string();
    let mut cmd = Command::new(workload("relay_echo"));
    cmd.arg(&port);
    if threads {
        cmd.arg("threads");
    }
    let mut master = None;
    if tty {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .expect("close-on-exec");
        }
        cmd.stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
            .stdout(Stdio::from(pty.slave));
        master = Some(std::fs::File::from(pty.master));
    } else {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("start the victim");
    let pid = child.id() as i32;
    let mut guard = KillOnDrop(Some(pid));
    let (mut out, mut stdin): (Box<dyn BufRead + Send>, Box<dyn Write + Send>) = match &master {
        Some(m) => (
            Box::new(BufReader::new(m.try_clone().expect("dup"))),
            Box::new(m.try_clone().expect("dup")),
        ),
        None => (
            Box::new(BufReader::new(child.stdout.take().expect("stdout"))),
            Box::new(child.stdin.take().expect("stdin")),
        ),
    };
    let listen_port: u16 = line(&mut out)
        .strip_prefix("listen ")
        .and_then(|p| p.parse().ok())
        .expect("listen PORT");
    let udp_port: u16 = line(&mut out)
        .strip_prefix("udp ")
        .and_then(|p| p.parse().ok())
        .expect("udp PORT");
    assert_eq!(line_starting(&mut out, "ready"), "ready");
    let (mut server_side, _) = server.accept().expect("the victim connects");
    server_side.set_read_timeout(Some(IO_TIMEOUT)).ok();
    let before: Vec<String> = (0..3).map(|fd| fd_link(pid, fd)).collect();

    // Origin: freeze, capture, image, then the stub.
    let opts = DumpOptions {
        relay_sockets: true,
        ..DumpOptions::default()
    };
    let held = hold(Pid::from_raw(pid), opts).expect("hold the victim");
    assert_eq!(held.tasks().len(), if threads { 4 } else { 1 });
    // Sent while it is frozen: these stay queued in the original pipe and socket.
    stdin.write_all(b"while-frozen\n").expect("write stdin");
    server_side.write_all(b"inflight").expect("write tcp");
    let plan = origin::Plan::capture(&held).expect("capture the relayed fds");
    let kinds: Vec<String> = plan.endpoints().iter().map(|e| e.kind.clone()).collect();
    let want: &[&str] = if tty {
        &["tty", "tcp", "tcp-listen", "udp"]
    } else {
        &["read", "write", "tcp", "tcp-listen", "udp"]
    };
    for k in want {
        assert!(kinds.iter().any(|x| x == k), "no {k} endpoint in {kinds:?}");
    }
    let (image, _) = held
        .write_to(Vec::new(), Codec::default())
        .expect("write the image");
    let socket = ctx.dir.path().join("ferryd.sock");
    origin::become_stub_at(&held, &plan, &stub_bin(), id, &socket).expect("become the stub");
    held.detach_as_is().expect("detach");

    // Same PID, same parent (us), the stub's program, the stdio kept.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
    assert!(exe.ends_with("ferry-stub"), "exe is {}", exe.display());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let ppid: u32 = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("ppid");
    assert_eq!(ppid, std::process::id(), "the stub's parent changed");
    let after: Vec<String> = (0..3).map(|fd| fd_link(pid, fd)).collect();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .count();
    assert_eq!(tasks, 1, "threads left in the stub");
    assert_eq!(before, after, "the stub lost its stdio");

    // Destination: local endpoints in place of the relayed fds.
    let mut endpoints = dest::Endpoints::make(&plan.endpoints()).expect("endpoints");
    let subs = endpoints.substitutes();
    let reader = ImageReader::open(std::io::Cursor::new(image)).expect("read the image");
    // Like a migration's destination, the copy stays the restorer's child.
    let opts = RestoreOptions {
        as_child: true,
        ..RestoreOptions::default()
    };
    let restored = restore_with(reader, opts, &subs).expect("restore the copy");
    endpoints.release_process_side();
    let remote = restored.pid;

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let relay = {
        let _g = rt.enter();
        let (o2d_tx, o2d_rx) = tokio::sync::mpsc::channel(256);
        let d2o = dest::run(remote, endpoints, ReceiverStream::new(o2d_rx).map(Ok));
        origin::start_with(
            &Registry::default(),
            &socket,
            plan,
            pid,
            id.to_string(),
            o2d_tx,
            d2o,
        )
    };
    guard.0 = None;
    Migrated {
        child,
        out,
        stdin,
        master,
        server_side,
        listen_port,
        udp_port,
        remote,
        rt,
        relay: Some(relay),
    }
}

/// Kills (and reaps) the victim if the test fails before [`Migrated`] owns it.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        }
    }
}

fn wait_exit(m: &mut Migrated) -> std::process::ExitStatus {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Some(st) = m.child.try_wait().expect("wait for the stub") {
            return st;
        }
        assert!(Instant::now() < deadline, "the stub did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stub_relays_stdio_tcp_udp_signals_and_exit_code() {
    let Some(ctx) = setup("relay-stub") else {
        return;
    };
    let mut m = migrate(&ctx, "relay-test-1", false);
    // What was queued while frozen is not lost.
    assert_eq!(line(&mut m.out), "echo: while-frozen");
    assert_eq!(read_some(&mut m.server_side), "tcp: inflight");
    // Both ways, now.
    m.stdin.write_all(b"hello\n").expect("stdin");
    assert_eq!(line(&mut m.out), "echo: hello");
    m.server_side.write_all(b"more").expect("tcp");
    assert_eq!(read_some(&mut m.server_side), "tcp: more");
    // A new connection to the origin's listening port reaches the remote process.
    let mut c = TcpStream::connect(("127.0.0.1", m.listen_port)).expect("connect");
    c.set_read_timeout(Some(IO_TIMEOUT)).ok();
    c.write_all(b"new").expect("write");
    assert_eq!(read_some(&mut c), "acc: new");
    // UDP, with the reply going back to the sender.
    let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
    u.set_read_timeout(Some(IO_TIMEOUT)).ok();
    u.send_to(b"dgram", ("127.0.0.1", m.udp_port))
        .expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = u.recv_from(&mut buf).expect("udp reply");
    assert_eq!(&buf[..n], b"udp: dgram");
    assert_eq!(from.port(), m.udp_port);
    // A signal sent to the stub reaches the remote handler.
    kill(Pid::from_raw(m.child.id() as i32), Signal::SIGUSR1).expect("kill");
    assert_eq!(line(&mut m.out), "usr1");
    // The remote's exit code is the stub's.
    m.stdin.write_all(b"exit 7\n").expect("stdin");
    let st = wait_exit(&mut m);
    assert_eq!(st.code(), Some(7), "stub status {st:?}");
    if let Some(r) = m.relay.take() {
        m.rt.block_on(r).expect("join").expect("relay");
    }
}

#[test]
fn stub_dies_by_the_remote_signal_and_sigkill_ends_the_remote() {
    let Some(ctx) = setup("relay-signals") else {
        return;
    };
    let mut m = migrate(&ctx, "relay-test-2", false);
    assert_eq!(line(&mut m.out), "echo: while-frozen");
    kill(Pid::from_raw(m.child.id() as i32), Signal::SIGTERM).expect("kill");
    let st = wait_exit(&mut m);
    assert_eq!(st.signal(), Some(libc::SIGTERM), "stub status {st:?}");
    assert!(!st.core_dumped());
    drop(m);

    let mut m = migrate(&ctx, "relay-test-3", false);
    assert_eq!(line(&mut m.out), "echo: while-frozen");
    let remote = m.remote;
    kill(Pid::from_raw(m.child.id() as i32), Signal::SIGKILL).expect("kill");
    let st = wait_exit(&mut m);
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    let deadline = Instant::now() + IO_TIMEOUT;
    while std::fs::read_to_string(format!("/proc/{remote}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "the remote process outlived its SIGKILLed stub"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stub_keeps_the_terminal_and_its_window_size() {
    let Some(ctx) = setup("relay-tty") else {
        return;
    };
    let mut m = migrate(&ctx, "relay-test-4", true);
    assert_eq!(
        line_starting(&mut m.out, "echo:"),
        "echo: while-frozen",
        "typed while frozen"
    );
    m.stdin.write_all(b"typed\n").expect("type");
    assert_eq!(line_starting(&mut m.out, "echo:"), "echo: typed");
    // The window changes on the origin's terminal; the stub gets SIGWINCH (sent by hand: the
    // victim's terminal is not its controlling one here) and the remote sees the new size on
    // its own terminal.
    let master = m.master.as_ref().expect("master");
    ferry_agent::sys::set_window_size(std::os::fd::AsFd::as_fd(master), 33, 111)
        .expect("TIOCSWINSZ");
    kill(Pid::from_raw(m.child.id() as i32), Signal::SIGWINCH).expect("kill");
    assert_eq!(line_starting(&mut m.out, "winch"), "winch 33x111 tty=1");
    m.stdin.write_all(b"exit 3\n").expect("type");
    assert_eq!(wait_exit(&mut m).code(), Some(3));
}

#[test]
fn a_threaded_process_becomes_a_single_threaded_stub() {
    let Some(ctx) = setup("relay-threads") else {
        return;
    };
    let mut m = migrate_with(&ctx, "relay-test-5", false, true);
    assert_eq!(line(&mut m.out), "echo: while-frozen");
    m.stdin.write_all(b"exit 9\n").expect("stdin");
    assert_eq!(wait_exit(&mut m).code(), Some(9));
}

#[test]
fn a_failed_execve_leaves_the_original_intact() {
    let Some(ctx) = setup("relay-exec-fails") else {
        return;
    };
    let server = TcpListener::bind("127.0.0.1:0").expect("test server");
    let port = server.local_addr().expect("addr").port().to_string();
    let mut child = Command::new(workload("relay_echo"))
        .args([port.as_str(), "threads"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the victim");
    let pid = child.id() as i32;
    let mut guard = KillOnDrop(Some(pid));
    let mut out: Box<dyn BufRead + Send> =
        Box::new(BufReader::new(child.stdout.take().expect("stdout")));
    let mut stdin = child.stdin.take().expect("stdin");
    assert_eq!(line_starting(&mut out, "ready"), "ready");
    let _conn = server.accept().expect("the victim connects");
    let opts = DumpOptions {
        relay_sockets: true,
        ..DumpOptions::default()
    };
    let held = hold(Pid::from_raw(pid), opts).expect("hold the victim");
    let plan = origin::Plan::capture(&held).expect("capture");
    // An executable that is not there: the execve fails inside the process.
    let missing = ctx.dir.path().join("no-such-stub");
    let err = origin::become_stub_at(
        &held,
        &plan,
        &missing,
        "relay-test-6",
        &ctx.dir.path().join("ferryd.sock"),
    )
    .expect_err("an execve of a missing file must fail");
    assert!(err.to_string().contains("execve"), "{err}");
    held.thaw().expect("thaw");
    drop(plan);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
    assert!(exe.ends_with("relay_echo"), "exe is {}", exe.display());
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .count();
    assert_eq!(tasks, 4, "its threads are still there");
    stdin.write_all(b"still here\n").expect("stdin");
    assert_eq!(line(&mut out), "echo: still here");
    stdin.write_all(b"exit 0\n").expect("stdin");
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    guard.0 = None;
}
