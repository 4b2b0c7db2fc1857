//! The origin of a migration: which descriptors stay here ([`Plan`]), turning the frozen
//! original into the stub ([`become_stub`]) and the relay itself ([`start`]).

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ferry_proto::v1::peer_client::PeerClient;
use ferry_proto::v1::{ExitStatus, RelayEndpoint, RelayFrame, Winsize, relay_frame::What};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::ledger::Ledger;
use super::pump::{EndBy, Io, Out, Pumps, Serve, frame};
use super::stub::{Expected, StubCommand, StubEvent, stub_socket_path};
use super::{Kind, RelayError};
use crate::dump::Held;
use crate::dump::freeze::FrozenTask;
use crate::node::NodeRef;
use crate::ptrace::Entry;
use crate::state::{FdKind, ProcessState, SocketKind, VmaKind};
use crate::sys;

/// One relayed open file description: ferryd's own duplicate of it, and the descriptor
/// numbers the process had for it.
#[derive(Debug)]
pub struct Endpoint {
    /// Channel number on the relay stream (1, 2, …).
    pub channel: u32,
    /// What it is.
    pub kind: Kind,
    /// The descriptor numbers in the process (one open file description).
    pub fds: Vec<i32>,
    /// ferryd's duplicate (`pidfd_getfd`).
    pub fd: OwnedFd,
    /// Window size of a terminal (rows, columns).
    pub winsize: Option<(u16, u16)>,
    /// Socket addresses.
    pub local: Option<SocketAddr>,
    /// Peer address of a connected socket.
    pub remote: Option<SocketAddr>,
    /// A listener whose relayed connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
}

/// The descriptors of a frozen process that stay on the origin and are relayed.
#[derive(Debug)]
pub struct Plan {
    /// The endpoints, by channel.
    pub endpoints: Vec<Endpoint>,
}

impl Plan {
    /// Decides which descriptors of the frozen process stay here and takes ferryd's own
    /// duplicates of them: fds 0–2 whatever they are (a terminal, a pipe, a file, a socket;
    /// `/dev/null` and other character devices excepted: the destination has them), every
    /// TCP socket listening or connected, and every UDP socket; with every other descriptor
    /// of the same open file description.
    pub fn capture(held: &Held) -> Result<Plan, RelayError> {
        Self::capture_of(held.tasks()[0].tracee.pid(), &held.state, None)
    }

    /// [`Plan::capture`] for the frozen process `pid` whose state is `state`. `within`: it is
    /// a member of a migrated tree (`--tree`), and these pipes have both ends in the tree
    /// ([`pipes_within`]): they travel in the image, not relayed. (Descriptions shared with
    /// an earlier member are relayed with that member, if at all.)
    pub fn capture_of(
        pid: Pid,
        state: &ProcessState,
        within: Option<&HashSet<u64>>,
    ) -> Result<Plan, RelayError> {
        let fds = &state.fds;
        let root = |mut fd: i32| {
            for _ in 0..fds.len() {
                match fds.iter().find(|f| f.fd == fd).map(|f| &f.kind) {
                    Some(FdKind::Dup { of }) => fd = *of,
                    _ => break,
                }
            }
            fd
        };
        let mut groups: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for f in fds {
            groups.entry(root(f.fd)).or_default().push(f.fd);
        }
        let mut endpoints = Vec::new();
        let mut pidfd = None;
        for (r, members) in groups {
            let Some(f) = fds.iter().find(|f| f.fd == r) else {
                continue;
            };
            let stdio = members.iter().any(|fd| (0..=2).contains(fd));
            let direction = || {
                let acc = f.flags & libc::O_ACCMODE as u32;
                if acc == libc::O_RDONLY as u32
                    || (acc == libc::O_RDWR as u32 && members.contains(&0))
                {
                    Kind::Read
                } else {
                    Kind::Write
                }
            };
            let (kind, local, remote) = match &f.kind {
                FdKind::Socket(s) => match &s.kind {
                    SocketKind::Inet(i) if i.protocol == libc::IPPROTO_UDP as u32 => {
                        (Kind::Udp, Some(i.local), i.peer)
                    }
                    SocketKind::Inet(i) if i.backlog.is_some() => {
                        (Kind::TcpListen, Some(i.local), None)
                    }
                    SocketKind::Inet(i)
                        if i.protocol == libc::IPPROTO_TCP as u32 && i.peer.is_some() =>
                    {
                        (Kind::Tcp, Some(i.local), i.peer)
                    }
                    _ if stdio => (direction(), None, None),
                    _ => continue,
                },
                FdKind::Tty { .. } if stdio => (Kind::Tty, None, None),
                FdKind::LocalPipe { ino, .. } | FdKind::Pipe { ino }
                    if within.is_some_and(|w| w.contains(ino)) =>
                {
                    continue;
                }
                FdKind::File { .. }
                | FdKind::Pipe { .. }
                | FdKind::LocalPipe { .. }
                | FdKind::Fifo { .. }
                | FdKind::DeletedFile { .. }
                    if stdio =>
                {
                    (direction(), None, None)
                }
                _ => continue,
            };
            let pidfd = match &pidfd {
                Some(p) => p,
                None => pidfd.insert(sys::pidfd_open(pid).map_err(|source| RelayError::Fd {
                    fd: r,
                    what: "pidfd_open".into(),
                    source,
                })?),
            };
            let dup = sys::pidfd_getfd(pidfd.as_fd(), r).map_err(|source| RelayError::Fd {
                fd: r,
                what: "pidfd_getfd".into(),
                source,
            })?;
            let winsize = if kind == Kind::Tty {
                sys::window_size(dup.as_fd()).ok()
            } else {
                None
            };
            endpoints.push(Endpoint {
                channel: endpoints.len() as u32 + 1,
                kind,
                fds: members,
                fd: dup,
                winsize,
                local,
                remote,
                proxy_protocol: false,
            });
        }
        Ok(Plan { endpoints })
    }

    /// Asks for a PROXY protocol header on the connections relayed to the listeners on
    /// `ports`; a port on which the process has no listening TCP socket is refused, named.
    pub fn proxy_protocol(&mut self, ports: &[u32]) -> Result<(), RelayError> {
        for &port in ports {
            let listener = self.endpoints.iter_mut().find(|e| {
                e.kind == Kind::TcpListen && e.local.is_some_and(|a| u32::from(a.port()) == port)
            });
            match listener {
                Some(e) => e.proxy_protocol = true,
                None => {
                    let listening: Vec<String> = self
                        .endpoints
                        .iter()
                        .filter(|e| e.kind == Kind::TcpListen)
                        .filter_map(|e| e.local.map(|a| a.port().to_string()))
                        .collect();
                    return Err(RelayError::Stub(format!(
                        "--proxy-protocol {port}: the process has no listening TCP socket on \
                         port {port} (it listens on: {})",
                        if listening.is_empty() {
                            "none".to_string()
                        } else {
                            listening.join(", ")
                        }
                    )));
                }
            }
        }
        Ok(())
    }

    /// The plan of a stub that is already running (after an agent restart), from the
    /// endpoints recorded for it: ferryd's duplicates are taken again from the stub
    /// (`pidfd_getfd`), which keeps every relayed descriptor at its number. The caller made
    /// sure `stub_pid` is the stub of this migration.
    pub fn reacquire(stub_pid: i32, recorded: &[RelayEndpoint]) -> Result<Plan, RelayError> {
        let pidfd = sys::pidfd_open(Pid::from_raw(stub_pid)).map_err(|source| RelayError::Fd {
            fd: -1,
            what: format!("pidfd_open of the stub {stub_pid}"),
            source,
        })?;
        let mut endpoints = Vec::with_capacity(recorded.len());
        for r in recorded {
            let bad = |why: String| RelayError::BadEndpoint {
                channel: r.channel,
                why,
            };
            let kind = Kind::parse(&r.kind).ok_or_else(|| bad(format!("kind {:?}", r.kind)))?;
            let first = *r.fds.first().ok_or_else(|| bad("no descriptor".into()))?;
            let fd = sys::pidfd_getfd(pidfd.as_fd(), first).map_err(|source| RelayError::Fd {
                fd: first,
                what: "pidfd_getfd from the stub".into(),
                source,
            })?;
            let winsize = if kind == Kind::Tty {
                sys::window_size(fd.as_fd()).ok()
            } else {
                None
            };
            endpoints.push(Endpoint {
                channel: r.channel,
                kind,
                fds: r.fds.clone(),
                fd,
                winsize,
                local: r.local.parse().ok(),
                remote: r.remote.parse().ok(),
                proxy_protocol: r.proxy_protocol,
            });
        }
        Ok(Plan { endpoints })
    }

    /// The endpoints for the `TransferHeader`.
    pub fn endpoints(&self) -> Vec<RelayEndpoint> {
        self.endpoints
            .iter()
            .map(|e| RelayEndpoint {
                fds: e.fds.clone(),
                channel: e.channel,
                kind: e.kind.as_str().into(),
                rows: e.winsize.map_or(0, |w| u32::from(w.0)),
                cols: e.winsize.map_or(0, |w| u32::from(w.1)),
                termios: Vec::new(),
                local: e.local.map(|a| a.to_string()).unwrap_or_default(),
                remote: e.remote.map(|a| a.to_string()).unwrap_or_default(),
                proxy_protocol: e.proxy_protocol,
            })
            .collect()
    }

    /// Every descriptor number that is relayed.
    pub fn fds(&self) -> Vec<i32> {
        self.endpoints
            .iter()
            .flat_map(|e| e.fds.iter().copied())
            .collect()
    }
}

/// The pipes of which the processes of a tree (`processes`) hold both a read end and a write
/// end (by inode): they join members and travel in the image. (A pipe the dump calls local
/// may still have a holder the dump could not see, outside the agent's PID namespace: a
/// tree's stdout read by its caller there.)
pub fn pipes_within(processes: &[ProcessState]) -> HashSet<u64> {
    let mut reads = HashSet::new();
    let mut writes = HashSet::new();
    for p in processes {
        for f in &p.fds {
            if let FdKind::LocalPipe { ino, .. } | FdKind::Pipe { ino } = &f.kind {
                match f.flags & libc::O_ACCMODE as u32 {
                    a if a == libc::O_RDONLY as u32 => reads.insert(*ino),
                    a if a == libc::O_WRONLY as u32 => writes.insert(*ino),
                    _ => false,
                };
            }
        }
    }
    reads.intersection(&writes).copied().collect()
}

/// Turns the frozen original into the stub, in place: clears close-on-exec on the relayed
/// descriptors, blocks every signal (the mask survives `execve`, so nothing reaches the stub
/// before it listens), then injects `execve(ferry-stub, [ferry-stub, MIGRATION_ID,
/// STUB_SOCKET])` into the leader. Other threads die in the `execve`; as their tracer we reap
/// them. Returns once the `execve` has happened (`PTRACE_EVENT_EXEC`); the caller then calls
/// `held.detach_as_is()`.
///
/// `socket` is ferryd's local socket; the stub connects to [`stub_socket_path`] of it.
/// On any error the `execve` did not happen and the original is intact (close-on-exec flags
/// put back; registers and mask are put back when `held` is thawed).
pub fn become_stub(
    held: &Held,
    plan: &Plan,
    migration_id: &str,
    socket: &Path,
) -> Result<(), RelayError> {
    let stub = super::stub_path()?;
    become_stub_at(held, plan, &stub, migration_id, socket)
}

/// [`become_stub`] with the stub's path given.
pub fn become_stub_at(
    held: &Held,
    plan: &Plan,
    stub: &Path,
    migration_id: &str,
    socket: &Path,
) -> Result<(), RelayError> {
    become_stub_of(
        held.tasks(),
        &held.state,
        plan,
        stub,
        migration_id,
        socket,
        false,
    )
}

/// [`become_stub_at`] for a frozen process given by its threads (`tasks`, leader first) and
/// state (a member of a held tree). `exit_kill`: the process must die with its tracer, even
/// during the injection (`PTRACE_O_EXITKILL` kept on the leader; a tree member whose root is
/// a stub already, whose copy takes over if we die).
pub fn become_stub_of(
    tasks: &[FrozenTask],
    state: &ProcessState,
    plan: &Plan,
    stub: &Path,
    migration_id: &str,
    socket: &Path,
    exit_kill: bool,
) -> Result<(), RelayError> {
    let exit_kill = if exit_kill {
        ptrace::Options::PTRACE_O_EXITKILL
    } else {
        ptrace::Options::empty()
    };
    if migration_id.is_empty() || migration_id.contains(char::is_whitespace) {
        return Err(RelayError::Stub(format!(
            "migration id {migration_id:?} cannot be passed to the stub"
        )));
    }
    let leader = &tasks[0];
    let t = &leader.tracee;
    let pid = t.pid();
    let vdso = state
        .mm
        .vmas
        .iter()
        .find(|v| v.kind == VmaKind::Vdso)
        .ok_or_else(|| RelayError::Stub("a process without a [vdso]".into()))?;
    let mut code = vec![0u8; (vdso.end - vdso.start) as usize];
    t.read_mem(vdso.start, &mut code)?;
    let at = code
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .ok_or_else(|| RelayError::Stub("a [vdso] without a syscall instruction".into()))?;
    let syscall_at = vdso.start + at as u64;
    let entry = Entry::SingleStep(syscall_at);
    let regs = &leader.regs;
    t.set_sigmask(u64::MAX)?;

    // The strings and argv in a scratch mapping of the process.
    let stub_str = stub.to_string_lossy().into_owned();
    let sock_str = stub_socket_path(socket).to_string_lossy().into_owned();
    let strings = [stub_str.as_str(), migration_id, sock_str.as_str()];
    let mut blob = Vec::new();
    let mut offsets = Vec::new();
    for s in strings {
        offsets.push(blob.len() as u64);
        blob.extend_from_slice(s.as_bytes());
        blob.push(0);
    }
    while blob.len() % 8 != 0 {
        blob.push(0);
    }
    let size = (blob.len() as u64 + 8 * 5).div_ceil(4096) * 4096;
    let scratch = t.inject(
        entry,
        regs,
        "mmap",
        libc::SYS_mmap,
        [
            0,
            size,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    )?;
    let argv_at = scratch + blob.len() as u64;
    for o in &offsets {
        blob.extend_from_slice(&(scratch + o).to_le_bytes());
    }
    blob.extend_from_slice(&0u64.to_le_bytes()); // argv's NULL, also the empty envp
    let envp_at = scratch + blob.len() as u64 - 8;

    let mut cleared = Vec::new();
    let result = (|| -> Result<(), RelayError> {
        t.write_mem(scratch, &blob)?;
        let keep: HashSet<i32> = plan.fds().into_iter().collect();
        for f in &state.fds {
            if f.cloexec && keep.contains(&f.fd) {
                t.inject(
                    entry,
                    regs,
                    "fcntl(F_SETFD)",
                    libc::SYS_fcntl,
                    [f.fd as u64, libc::F_SETFD as u64, 0, 0, 0, 0],
                )?;
                cleared.push(f.fd);
            }
        }
        ptrace::setoptions(
            pid,
            ptrace::Options::PTRACE_O_TRACEEXEC
                | exit_kill
                | ptrace::Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP),
        )
        .map_err(|source| crate::ptrace::PtraceError::Request {
            op: "setoptions",
            pid: pid.as_raw(),
            source,
        })?;
        exec(tasks, syscall_at, &stub_str, [scratch, argv_at, envp_at])
    })();
    if result.is_err() {
        // The execve did not happen: put back what we changed.
        let _ = ptrace::setoptions(
            pid,
            exit_kill | ptrace::Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP),
        );
        for fd in cleared {
            let _ = t.inject(
                entry,
                regs,
                "fcntl(F_SETFD)",
                libc::SYS_fcntl,
                [
                    fd as u64,
                    libc::F_SETFD as u64,
                    libc::FD_CLOEXEC as u64,
                    0,
                    0,
                    0,
                ],
            );
        }
        let _ = t.inject(
            entry,
            regs,
            "munmap",
            libc::SYS_munmap,
            [scratch, size, 0, 0, 0, 0],
        );
    }
    result
}

/// Runs the `execve` in the leader and waits for its `PTRACE_EVENT_EXEC`, reaping the other
/// threads as they die (the `execve` waits for them, and traced threads stay until their
/// tracer reaps them).
fn exec(
    tasks: &[FrozenTask],
    syscall_at: u64,
    path: &str,
    args: [u64; 3],
) -> Result<(), RelayError> {
    let leader = &tasks[0];
    let pid = leader.tracee.pid();
    let req = |op: &'static str| {
        move |source| crate::ptrace::PtraceError::Request {
            op,
            pid: pid.as_raw(),
            source,
        }
    };
    let mut regs = leader.regs;
    regs.rax = libc::SYS_execve as u64;
    regs.orig_rax = u64::MAX;
    regs.rdi = args[0];
    regs.rsi = args[1];
    regs.rdx = args[2];
    regs.rip = syscall_at;
    leader.tracee.set_regs(&regs)?;
    ptrace::step(pid, None).map_err(req("singlestep"))?;
    let mut others: Vec<Pid> = tasks[1..].iter().map(|t| t.tracee.pid()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG;
    loop {
        others.retain(|&tid| match waitpid(tid, Some(flags)) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => false,
            Ok(WaitStatus::StillAlive) => true,
            Ok(_) => {
                // Some other stop on its way out: let it go on dying.
                let _ = ptrace::cont(tid, None);
                true
            }
        });
        match waitpid(pid, Some(flags)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_EXEC)) => {
                // Any thread not reaped yet is gone with the exec; reap what is left.
                for tid in others {
                    let _ = waitpid(tid, Some(flags));
                }
                return Ok(());
            }
            Ok(WaitStatus::Stopped(_, nix::sys::signal::Signal::SIGTRAP)) => {
                // The step ended after the syscall instruction: the execve returned, i.e. failed.
                let after = leader.tracee.regs()?;
                let r = after.rax as i64;
                return Err(RelayError::Exec {
                    path: path.into(),
                    pid: pid.as_raw(),
                    source: if (-4095..0).contains(&r) {
                        Errno::from_raw(-r as i32)
                    } else {
                        Errno::EINVAL
                    },
                });
            }
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                return Err(RelayError::Stub(format!(
                    "pid {pid} died during the execve of the stub"
                )));
            }
            Ok(_) => {
                ptrace::step(pid, None).map_err(req("singlestep"))?;
            }
            Err(Errno::EINTR) => {}
            Err(source) => return Err(req("wait")(source).into()),
        }
        if Instant::now() > deadline {
            return Err(RelayError::Stub(format!(
                "pid {pid}: the execve of the stub did not complete"
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The relay of one migration, origin side.
struct Origin {
    pumps: Arc<Pumps>,
    tty: Option<(u32, OwnedFd)>,
}

/// Starts the relay of `migration_id` (after Commit was acknowledged): opens `Peer.Relay` on
/// `channel`, pumps the relayed descriptors of `plan`, forwards the signals the stub
/// `stub_pid` reports, and delivers the remote exit status to the stub. When the stub dies
/// first, the remote process gets `SIGKILL`. Runs until the remote process ended and the stub
/// was told, or the stub died; gives the remote process's exit status.
pub fn start(
    node: NodeRef,
    plan: Plan,
    stub_pid: i32,
    migration_id: String,
    channel: tonic::transport::Channel,
) -> tokio::task::JoinHandle<Result<Option<ExitStatus>, RelayError>> {
    tokio::spawn(async move {
        let (out_tx, out_rx) = mpsc::channel::<RelayFrame>(256);
        if checkpointed(&node, stub_pid) {
            // Its input since the newest checkpoint is kept for a replay after a failover.
            let inputs: Vec<u32> = plan
                .endpoints
                .iter()
                .filter(|e| matches!(e.kind, Kind::Read | Kind::Tty))
                .map(|e| e.channel)
                .collect();
            node.relays.keep_replay(&migration_id, &inputs);
        }
        let session = node.relays.origin_ledger(&migration_id).session();
        out_tx
            .send(RelayFrame {
                migration_id: migration_id.clone(),
                session,
                ..Default::default()
            })
            .await
            .ok();
        let mut client = PeerClient::new(channel);
        let inbound = client
            .relay(ReceiverStream::new(out_rx))
            .await
            .map_err(RelayError::Rpc)?
            .into_inner();
        start_with(
            &node.relays,
            &node.config.socket,
            plan,
            stub_pid,
            migration_id,
            out_tx,
            inbound,
        )
        .await
        .map_err(|e| RelayError::Stub(format!("relay task: {e}")))?
    })
}

/// Whether the stub `stub_pid` (it keeps the job's PID) is of a managed job of this host
/// checkpointed where it runs.
fn checkpointed(node: &NodeRef, stub_pid: i32) -> bool {
    node.managed.list(0, true).iter().any(|e| {
        e.pid == stub_pid && e.exit.is_none() && e.checkpoint_every_ms.is_some_and(|ms| ms > 0)
    })
}

/// [`start`] over any transport: frames for the destination go to `out` (the first one,
/// naming the migration, is the caller's business), frames from it come from `inbound`.
/// `socket` is ferryd's local socket: the stub socket next to it is served by `registry`.
pub fn start_with<S>(
    registry: &super::Registry,
    socket: &Path,
    plan: Plan,
    stub_pid: i32,
    migration_id: String,
    out: mpsc::Sender<RelayFrame>,
    inbound: S,
) -> tokio::task::JoinHandle<Result<Option<ExitStatus>, RelayError>>
where
    S: tokio_stream::Stream<Item = Result<RelayFrame, tonic::Status>> + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    registry
        .lock()
        .stubs
        .insert(migration_id.clone(), Expected { pid: stub_pid, tx });
    let listening = super::stub::ensure_listening(registry, socket);
    let ledger = registry.origin_ledger(&migration_id);
    let registry = registry.clone();
    tokio::spawn(async move {
        listening?;
        let r = run(
            plan,
            stub_pid,
            &migration_id,
            out,
            inbound,
            rx,
            ledger,
            &registry,
        )
        .await;
        registry.lock().stubs.remove(&migration_id);
        if r.is_ok() {
            // The remote process ended or the stub died: no stream follows.
            registry.drop_ledger(&migration_id);
        }
        if let Err(e) = &r {
            tracing::warn!(migration = %migration_id, error = %e, "relay ended");
        }
        r
    })
}

/// Ends the stub `stub_pid` of `migration_id` whose process on `host` is lost (the
/// destination holds no copy any more, or could not be reached for too long): serves the
/// stub socket (`socket`'s) until the stub, which reconnects on its own, connects, and
/// tells it `LOST host` (it exits with [`super::LOST_EXIT_CODE`]). Returns true once told,
/// false when `alive` (asked every second) says the stub is gone first.
pub async fn end_lost_stub(
    registry: &super::Registry,
    socket: &Path,
    stub_pid: i32,
    migration_id: &str,
    host: &str,
    alive: impl Fn() -> bool,
) -> Result<bool, RelayError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    registry
        .lock()
        .stubs
        .insert(migration_id.to_string(), Expected { pid: stub_pid, tx });
    let result = async {
        super::stub::ensure_listening(registry, socket)?;
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(StubEvent::Connected(mut conn)) = ev else { return Ok(false) };
                    let line = StubCommand::Lost(host.to_string()).line();
                    if conn.write_all(line.as_bytes()).await.is_ok() {
                        conn.shutdown().await.ok();
                        return Ok(true);
                    }
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if !alive() {
                        return Ok(false);
                    }
                }
            }
        }
    }
    .await;
    registry.lock().stubs.remove(migration_id);
    registry.drop_ledger(migration_id);
    result
}

enum Event {
    Moved,
    Frame(Option<RelayFrame>),
    Stub(Option<StubEvent>),
    Line(Option<StubCommand>),
    StubDied,
}

#[allow(clippy::too_many_arguments)]
async fn run<S>(
    plan: Plan,
    stub_pid: i32,
    migration_id: &str,
    out_tx: mpsc::Sender<RelayFrame>,
    mut inbound: S,
    mut stub_rx: mpsc::UnboundedReceiver<StubEvent>,
    ledger: Arc<Ledger>,
    registry: &super::Registry,
) -> Result<Option<ExitStatus>, RelayError>
where
    S: tokio_stream::Stream<Item = Result<RelayFrame, tonic::Status>> + Unpin,
{
    let origin = Origin::begin(plan, out_tx.clone(), ledger.clone());
    let pumps = origin.pumps.clone();
    // The terminal's size now, on every stream: a copy restored elsewhere (a failover makes
    // its pty anew) or a resize while the stream was down takes it (the destination changes
    // nothing, and signals nothing, when the size is the same).
    if let Some((ch, fd)) = &origin.tty
        && let Ok((rows, cols)) = sys::window_size(fd.as_fd())
    {
        let w = Winsize {
            rows: u32::from(rows),
            cols: u32::from(cols),
        };
        pumps.send_async(frame(*ch, What::Winsize(w))).await;
    }

    // The stub's death, seen through its pidfd (readable once the process ended).
    let died = sys::pidfd_open(Pid::from_raw(stub_pid))
        .ok()
        .and_then(|fd| sys::async_fd(fd).ok());
    let mut stub_died = false;

    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<Option<StubCommand>>();
    let mut stub_writer: Option<tokio::net::unix::OwnedWriteHalf> = None;
    let mut exit: Option<ExitStatus> = None;
    let mut killed = false;
    let moved = registry.moved();
    loop {
        let relocated = moved.notified();
        if registry.relocation_pending(migration_id) && exit.is_none() {
            pumps.stop_now();
            return Err(RelayError::Stub(
                "the copy was restored on another host".into(),
            ));
        }
        let ev = tokio::select! {
            () = relocated => Event::Moved,
            f = tokio_stream::StreamExt::next(&mut inbound) => Event::Frame(match f {
                Some(Ok(f)) => Some(f),
                Some(Err(e)) => {
                    tracing::warn!(migration = %migration_id, error = %e, "relay stream broke");
                    None
                }
                None => None,
            }),
            s = stub_rx.recv() => Event::Stub(s),
            l = line_rx.recv() => Event::Line(l.flatten()),
            () = async {
                match &died {
                    Some(d) => {
                        let _ = d.readable().await;
                    }
                    None => std::future::pending().await,
                }
            }, if !stub_died => {
                stub_died = true;
                Event::StubDied
            }
        };
        match ev {
            // Looked at on the next turn.
            Event::Moved => {}
            Event::Frame(Some(f)) => match f.what {
                Some(What::Exit(st)) => {
                    // Whatever the process wrote before it ended is written out first.
                    pumps.finish(Duration::from_secs(5)).await;
                    exit = Some(st);
                    if stub_writer.is_some() || killed {
                        break;
                    }
                }
                Some(What::Accepted(_)) | Some(What::Signal(_)) | Some(What::Winsize(_)) => {}
                Some(What::Credit(n)) => pumps.credit(f.channel, n),
                Some(What::Checkpoint(c)) => {
                    registry.origin_checkpointed(migration_id, &ledger, c);
                }
                Some(w) => origin.deliver(f.channel, pumps.offset_of(f.offset), w),
                // The destination's hello: it counts in our session (its data frames carry
                // offsets, and what it did not credit goes again on a later stream).
                None if f.session != 0 && f.session == ledger.session() => {
                    ledger.set_peer_counts();
                    pumps.offsets_in();
                }
                None => {}
            },
            Event::Frame(None) => {
                pumps.stop_now();
                return Err(RelayError::Stub(
                    "the relay stream ended before the remote process".into(),
                ));
            }
            Event::Stub(Some(StubEvent::Connected(conn))) => {
                let (r, w) = conn.into_split();
                stub_writer = Some(w);
                let line_tx = line_tx.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        if let Some(c) = StubCommand::parse(&l) {
                            let _ = line_tx.send(Some(c));
                        }
                    }
                    let _ = line_tx.send(None);
                });
                if exit.is_some() {
                    break;
                }
            }
            Event::Stub(None) => {}
            Event::Line(Some(StubCommand::Signal(n))) => {
                if n == libc::SIGWINCH
                    && let Some((ch, fd)) = &origin.tty
                    && let Ok((rows, cols)) = sys::window_size(fd.as_fd())
                {
                    // The destination sets the size and sends SIGWINCH itself.
                    let w = Winsize {
                        rows: u32::from(rows),
                        cols: u32::from(cols),
                    };
                    pumps.send_async(frame(*ch, What::Winsize(w))).await;
                } else {
                    pumps.send_async(frame(0, What::Signal(n))).await;
                }
            }
            Event::Line(Some(_)) => {}
            // The stub's connection closed or the stub died without being told to exit: the
            // remote process goes too.
            Event::Line(None) | Event::StubDied => {
                if exit.is_some() {
                    break;
                }
                if !killed {
                    killed = true;
                    tracing::info!(migration = %migration_id, stub_pid, "the stub is gone: killing the remote process");
                    pumps
                        .send_async(frame(0, What::Signal(libc::SIGKILL)))
                        .await;
                }
                stub_writer = None;
            }
        }
    }
    pumps.stop_now();
    if let (Some(st), Some(mut w)) = (exit, stub_writer) {
        let cmd = if st.signal != 0 {
            StubCommand::ExitSignal(st.signal)
        } else {
            StubCommand::ExitCode(st.code)
        };
        w.write_all(cmd.line().as_bytes())
            .await
            .map_err(RelayError::io("tell the stub the exit status"))?;
        w.shutdown().await.ok();
    }
    Ok(exit)
}

impl Origin {
    /// Starts the tasks and threads of every endpoint: a task per socket (a listener's
    /// accept loop, each connection), threads for the descriptors whose flags are the user's
    /// (terminal, pipes, files) and for UDP.
    fn begin(plan: Plan, out: mpsc::Sender<RelayFrame>, ledger: Arc<Ledger>) -> Origin {
        // Kept bytes go again if the destination said (on an earlier stream) that it counts.
        let again = ledger.peer_counts();
        let pumps = Pumps::with_ledger(out, ledger, again);
        let next_channel = Arc::new(AtomicU32::new(
            plan.endpoints.iter().map(|e| e.channel).max().unwrap_or(0) + 1,
        ));
        let mut tty = None;
        for e in plan.endpoints {
            let ch = e.channel;
            let dup = |fd: &OwnedFd| fd.try_clone();
            match e.kind {
                Kind::Tty => {
                    if let (Ok(r), Ok(t)) = (dup(&e.fd), dup(&e.fd)) {
                        pumps.thread_reader(ch, r, false);
                        tty = Some((ch, t));
                    }
                    pumps.thread_writer(ch, e.fd, EndBy::Nothing);
                }
                Kind::Read => pumps.thread_reader(ch, e.fd, false),
                Kind::Write => pumps.thread_writer(ch, e.fd, EndBy::Nothing),
                Kind::Tcp => pumps.serve(
                    ch,
                    Serve {
                        fd: e.fd,
                        io: Io::Socket,
                        read: true,
                        write: true,
                        end: EndBy::Shutdown,
                        drain: false,
                        prefix: Vec::new(),
                        connecting: false,
                    },
                ),
                Kind::TcpListen => {
                    tokio::spawn(accept_loop(
                        pumps.clone(),
                        ch,
                        e.fd,
                        next_channel.clone(),
                        e.proxy_protocol,
                    ));
                }
                Kind::Udp => {
                    let sock = UdpSocket::from(e.fd);
                    if let Ok(s) = sock.try_clone() {
                        pumps.udp_reader(ch, s, |from| Some(from.to_string()));
                    }
                    pumps.udp_writer(ch, move |peer, data| {
                        if let Ok(to) = peer.parse::<SocketAddr>() {
                            let _ = sock.send_to(data, to);
                        }
                    });
                }
            }
        }
        Origin { pumps, tty }
    }

    fn deliver(&self, channel: u32, at: Option<u64>, what: What) {
        let out = match what {
            What::Data(d) => Out::Data(at, d),
            What::Eof(_) => Out::Eof,
            What::Close(_) => Out::Close,
            What::Datagram(d) => Out::Datagram(d.peer, d.data),
            _ => return,
        };
        self.pumps.deliver(channel, out);
    }
}

/// Accepts connections on the process's listening socket (the connections already waiting
/// at the freeze first), woken by epoll: each becomes a new channel, announced with `accepted`
/// (with the client's address when `proxy`: a PROXY protocol listener) on the listener's channel, served by a task of its own and
/// forgotten once it ended both ways ([`Pumps::connection`]). The listener is made
/// non-blocking (`accept` has no per-call flag); the stub never uses it.
async fn accept_loop(
    pumps: Arc<Pumps>,
    channel: u32,
    fd: OwnedFd,
    next: Arc<AtomicU32>,
    proxy: bool,
) {
    let listener = TcpListener::from(fd);
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| sys::async_listener(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(channel, %e, "relay: cannot watch the listening socket");
            return;
        }
    };
    let stop = pumps.stopper();
    loop {
        let accepted = tokio::select! {
            g = listener.readable() => match g {
                Ok(mut g) => match g.try_io(|l| l.get_ref().accept()) {
                    Ok(r) => r,
                    Err(_would_block) => continue,
                },
                Err(e) => {
                    tracing::debug!(%e, "relay accept");
                    return;
                }
            },
            () = stop.wait() => return,
        };
        let (conn, client) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: the connection waits in the queue a moment.
                tracing::debug!(%e, "relay accept");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(10)) => continue,
                    () = stop.wait() => return,
                }
            }
        };
        conn.set_nodelay(true).ok();
        let ch = next.fetch_add(1, Ordering::Relaxed);
        let mut announce = frame(channel, What::Accepted(ch));
        if proxy {
            // The addresses for the destination's PROXY protocol header.
            announce.client = client.to_string();
            announce.server = conn.local_addr().map(|a| a.to_string()).unwrap_or_default();
        }
        // Its writer exists before the destination hears of it (what the process answers
        // may come back at once), its reader starts after (no byte before `accepted`).
        if !pumps
            .connection(ch, OwnedFd::from(conn), Some(announce), Vec::new())
            .await
        {
            return;
        }
    }
}
