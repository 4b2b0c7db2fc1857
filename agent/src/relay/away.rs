//! The client goes away (issue 12, item 4; Dropcycle §3.3): on the destination, while no relay
//! stream from the origin is open, a copy runs on until it needs its client, then it is
//! frozen until the client is back.
//!
//! A [`Watch`] starts when a relay stream ends without the copy's exit status having gone out
//! (the stream broke: the link, the origin's agent). It serves ferryd's kept ends of the
//! copy's relayed descriptors with one thread:
//!
//! - **output** (stdout/stderr pipes, the pty master, TCP connections): it reads what the
//!   process writes into a buffer per channel, up to the relay's credit window
//!   ([`super::pump::WINDOW`]): the bytes the origin would have accepted unacknowledged. When a
//!   channel's buffer holds a window, the next write would have to wait for the client: the
//!   process needs it. The buffers are sent first by the next stream, before anything newer.
//! - **input** (stdin pipes, the pty): the relay holds nothing for the process (no stream
//!   brings anything); the process needs its client once a thread of it waits in a read of
//!   one of the channel's descriptors. The kernel gives the writer of a pipe no event when
//!   its reader blocks on it empty (`O_ASYNC` signals the writer after a read that got bytes,
//!   not before one that waits), so this is the one thing learnt from the process itself:
//!   `/proc/PID/task/TID/syscall`, read twice a second, only while the client is away and
//!   the copy runs.
//!
//! Frozen means stopped with `SIGSTOP` (a group stop of every thread): no tracer is held, the
//! kernel keeps the stop across an agent restart, and the process's memory, descriptors and
//! timers stay exactly as they are (nothing is dumped and restored, so nothing can differ).
//! When the next stream attaches, the buffers go out and the process gets `SIGCONT`.
//!
//! The client may be away `FERRY_RELAY_GIVE_UP` seconds (the bound after which the origin's
//! relay gives up and its stub exits 255): after as long without a stream, the destination
//! gives up too: the copy is continued and ferryd's ends of its relayed descriptors close
//! (it sees the end of its input, `EPIPE` on its output), as any copy whose origin is gone.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::MsgFlags;
use nix::unistd::Pid;

use super::Kind;
use super::pump::WINDOW;

/// How often the input side is looked at (and the stop flag).
const TICK: Duration = Duration::from_millis(250);

/// One descriptor of the copy the watch serves.
#[derive(Debug)]
pub(super) struct Served {
    /// The channel.
    pub channel: u32,
    /// Its kind.
    pub kind: Kind,
    /// Its descriptor numbers in the process.
    pub fds: Vec<i32>,
    /// ferryd's end (a duplicate).
    pub ours: OwnedFd,
}

/// What a watch learnt, for the next stream.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Per channel, what the process wrote meanwhile (at most a window each).
    pub pending: HashMap<u32, Vec<u8>>,
    /// Why the copy was frozen (it waits for `SIGCONT`).
    pub frozen: Option<String>,
    /// The checkpoint taken of the frozen copy, to remove once it runs again.
    pub checkpoint: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct State {
    out: Outcome,
    /// The watch is over: read nothing more.
    taken: bool,
}

/// The watch over a copy whose client is away.
#[derive(Debug)]
pub(super) struct Watch {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    /// Starts watching copy `pid` through `served`. After `give_up` without a stream,
    /// `on_give_up` is called (from the watch's thread; the copy was continued). When it
    /// freezes the copy, its checkpoint is written at `image` (none: no checkpoint).
    pub(super) fn start(
        pid: i32,
        served: Vec<Served>,
        give_up: Duration,
        image: Option<PathBuf>,
        on_give_up: impl FnOnce() + Send + 'static,
    ) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::default()));
        let (s2, st2) = (stop.clone(), state.clone());
        let thread = std::thread::Builder::new()
            .name(format!("away-{pid}"))
            .spawn(move || {
                if watch(pid, &served, &s2, &st2, give_up, image.as_deref()) {
                    on_give_up();
                }
            })
            .map_err(|e| tracing::warn!(pid, %e, "cannot start the client-away watch"))
            .ok();
        tracing::info!(
            pid,
            "client away: the copy runs on until it needs its client"
        );
        Watch {
            stop,
            state,
            thread,
        }
    }

    /// Whether the copy is frozen, waiting for its client.
    pub(super) fn frozen(&self) -> bool {
        lock(&self.state).out.frozen.is_some()
    }

    /// Ends the watch (a stream attached): what it read and whether it froze the copy.
    pub(super) fn finish(mut self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut st = lock(&self.state);
        st.taken = true;
        std::mem::take(&mut st.out)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn reads_output(kind: Kind) -> bool {
    matches!(kind, Kind::Write | Kind::Tty | Kind::Tcp)
}

fn takes_input(kind: Kind) -> bool {
    matches!(kind, Kind::Read | Kind::Tty | Kind::Tcp)
}

/// The watch's loop; true when it gave up (the client stayed away too long).
fn watch(
    pid: i32,
    served: &[Served],
    stop: &AtomicBool,
    state: &Mutex<State>,
    give_up: Duration,
    image: Option<&Path>,
) -> bool {
    let since = Instant::now();
    let mut full: HashMap<u32, bool> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        if since.elapsed() >= give_up {
            let frozen = lock(state).out.frozen.take();
            if frozen.is_some() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            }
            if let Some(p) = lock(state).out.checkpoint.take() {
                remove_checkpoint(&p);
            }
            tracing::warn!(
                pid,
                secs = give_up.as_secs(),
                "client away too long: the copy runs on without it"
            );
            return true;
        }
        // Output: read while a channel's buffer has room.
        let outs: Vec<&Served> = served
            .iter()
            .filter(|s| reads_output(s.kind) && !full.get(&s.channel).copied().unwrap_or(false))
            .collect();
        let mut fds: Vec<PollFd> = outs
            .iter()
            .map(|s| PollFd::new(s.ours.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(
            &mut fds,
            PollTimeout::try_from(TICK).unwrap_or(PollTimeout::NONE),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(pid, %e, "client-away watch: poll");
                std::thread::sleep(TICK);
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| r.intersects(PollFlags::POLLIN)))
            .collect();
        drop(fds);
        let mut need: Option<String> = None;
        {
            let mut st = lock(state);
            if st.taken || stop.load(Ordering::SeqCst) {
                return false;
            }
            for (s, r) in outs.iter().zip(ready) {
                if !r {
                    continue;
                }
                let have = st.out.pending.get(&s.channel).map_or(0, Vec::len);
                let room = usize::try_from(WINDOW)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(have);
                let n = room.min(buf.len());
                let got = if n == 0 {
                    Ok(0)
                } else if s.kind == Kind::Tcp {
                    nix::sys::socket::recv(
                        s.ours.as_raw_fd(),
                        &mut buf[..n],
                        MsgFlags::MSG_DONTWAIT,
                    )
                } else {
                    nix::unistd::read(s.ours.as_fd(), &mut buf[..n])
                };
                match got {
                    Ok(0) if n > 0 => {
                        // The process closed it: nothing more to read.
                        full.insert(s.channel, true);
                    }
                    Ok(k) => {
                        let p = st.out.pending.entry(s.channel).or_default();
                        p.extend_from_slice(&buf[..k]);
                        if p.len() as i64 >= WINDOW {
                            full.insert(s.channel, true);
                            need.get_or_insert_with(|| {
                                format!(
                                    "its output on channel {} filled the relay's window",
                                    s.channel
                                )
                            });
                        }
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(e) => {
                        tracing::debug!(pid, channel = s.channel, %e, "client-away watch: read");
                        full.insert(s.channel, true);
                    }
                }
            }
            if st.out.frozen.is_some() {
                if st.out.checkpoint.is_some() && !alive(pid) {
                    // Killed while frozen: nothing to bring back.
                    if let Some(p) = st.out.checkpoint.take() {
                        remove_checkpoint(&p);
                    }
                }
                continue;
            }
        }
        // Input: a thread waits, without a bound, for a relayed descriptor that nothing but
        // the client can fill.
        if need.is_none() {
            need = waiting_for_client(pid, served);
        }
        if let Some(why) = need {
            match kill(Pid::from_raw(pid), Signal::SIGSTOP) {
                Ok(()) => {
                    tracing::info!(pid, why = %why, "client away: the copy needs it and is frozen");
                    lock(state).out.frozen = Some(why);
                    if let Some(path) = image
                        && checkpoint(pid, path)
                    {
                        lock(state).out.checkpoint = Some(path.to_path_buf());
                    }
                }
                Err(e) => tracing::warn!(pid, %e, "client away: cannot stop the copy"),
            }
        }
    }
}

/// The directory of the checkpoints of copies frozen for their client:
/// `$FERRY_STATE_DIR/away`.
pub fn checkpoint_dir() -> PathBuf {
    crate::node::state_dir().join("away")
}

/// Where the checkpoint of the copy of relay `id` is kept while it is frozen:
/// `away/ID.img` in the state directory (the id's characters other than letters, digits,
/// `-` and `_` as `_`).
pub fn checkpoint_path(id: &str) -> PathBuf {
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    checkpoint_dir().join(format!("{name}.img"))
}

/// Checkpoints the frozen copy `pid` into `path` (ferry's dump, as a migration takes it, the
/// process left stopped where it is), once its group stop took hold. False when no checkpoint
/// was written (said in the log; the copy stays frozen all the same).
fn checkpoint(pid: i32, path: &Path) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        match crate::proc::read(pid, "stat")
            .ok()
            .and_then(|s| crate::proc::parse_stat(&s).ok())
        {
            Some(st) if st.state == 'T' => break,
            Some(_) => std::thread::sleep(Duration::from_millis(10)),
            None => return false,
        }
    }
    if let Some(dir) = path.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        tracing::warn!(pid, dir = %dir.display(), %e, "client away: no checkpoint of the frozen copy");
        return false;
    }
    let opts = crate::dump::DumpOptions {
        leave_running: true,
        // Its relayed descriptors are recorded as they are, as a migration records them.
        relay_sockets: true,
        ..crate::dump::DumpOptions::default()
    };
    match crate::dump::dump(Pid::from_raw(pid), path, opts) {
        Ok(s) => {
            tracing::info!(
                pid,
                image = %path.display(),
                bytes = s.stats.image_bytes,
                elapsed = ?start.elapsed(),
                "client away: the frozen copy is checkpointed"
            );
            true
        }
        Err(e) => {
            tracing::warn!(pid, image = %path.display(), error = %e, "client away: the frozen copy could not be checkpointed");
            remove_checkpoint(path);
            false
        }
    }
}

/// Whether `pid` still exists and has not ended (a zombie has).
fn alive(pid: i32) -> bool {
    crate::proc::read(pid, "stat")
        .ok()
        .and_then(|s| crate::proc::parse_stat(&s).ok())
        .is_some_and(|st| st.state != 'Z' && st.state != 'X')
}

/// Removes the checkpoint of a copy that runs again (or ended).
pub(super) fn remove_checkpoint(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!(image = %path.display(), "checkpoint of the frozen copy removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(image = %path.display(), %e, "cannot remove the checkpoint of the frozen copy")
        }
    }
}

/// Why a thread of `pid` waits for its client, if one does: it waits, with no timeout, in a
/// read of a relayed input (stdin, terminal, connection), or in `poll`, `select` or
/// `epoll_wait` (and their variants) on descriptors that are all relayed, one of them an
/// input waited for reading. A wait that also covers a descriptor of the host (a file, a
/// local socket, a timer) or that has a timeout ends without the client: not frozen.
fn waiting_for_client(pid: i32, served: &[Served]) -> Option<String> {
    let inputs: Vec<i32> = served
        .iter()
        .filter(|s| takes_input(s.kind))
        .flat_map(|s| s.fds.iter().copied())
        .collect();
    let relayed: Vec<i32> = served.iter().flat_map(|s| s.fds.iter().copied()).collect();
    let channel_of = |fd: i32| {
        served
            .iter()
            .find(|s| s.fds.contains(&fd))
            .map_or(0, |s| s.channel)
    };
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(line) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) else {
            continue;
        };
        let Some(wait) = parse_wait(&line) else {
            continue;
        };
        let Some(waited) = waited_fds(pid, &wait) else {
            continue;
        };
        if waited.is_empty() || !waited.iter().all(|(fd, _)| relayed.contains(fd)) {
            continue;
        }
        if let Some((fd, _)) = waited
            .iter()
            .find(|(fd, reads)| *reads && inputs.contains(fd))
        {
            return Some(format!(
                "thread {tid} waits in {} on fd {fd} (relay channel {}), which only its client can fill",
                wait.call(),
                channel_of(*fd)
            ));
        }
    }
    None
}

/// An unbounded wait a task is in, from its `/proc/…/syscall` line ("NR ARG1 … ARG6 SP PC";
/// "running" or "-1 …" when not in a system call).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wait {
    /// `read` and kin of descriptor `fd`.
    Read(i32),
    /// `poll`/`ppoll` of `n` `struct pollfd` at `at` (no timeout).
    Poll { at: u64, n: u64, ppoll: bool },
    /// `select`/`pselect6` with `nfds` and the three `fd_set` addresses (0: none), no timeout.
    Select { nfds: u64, sets: [u64; 3], p6: bool },
    /// `epoll_wait` and kin on the epoll descriptor `epfd`, no timeout.
    Epoll(i32),
}

impl Wait {
    fn call(&self) -> &'static str {
        match self {
            Wait::Read(_) => "a read",
            Wait::Poll { ppoll: false, .. } => "poll",
            Wait::Poll { ppoll: true, .. } => "ppoll",
            Wait::Select { p6: false, .. } => "select",
            Wait::Select { p6: true, .. } => "pselect6",
            Wait::Epoll(_) => "epoll_wait",
        }
    }
}

/// The wait of a `/proc/…/syscall` line, when it is one with no timeout: `read`, `readv`,
/// `pread64`, `preadv`, `preadv2`, `recvfrom`, `recvmsg`; `poll` with a negative timeout,
/// `ppoll`, `select`, `pselect6` and `epoll_pwait2` with a null one; `epoll_wait` and
/// `epoll_pwait` with -1.
fn parse_wait(line: &str) -> Option<Wait> {
    let mut it = line.split_whitespace();
    let nr: libc::c_long = it.next()?.parse().ok()?;
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    let fd = |v: u64| i32::try_from(v).ok();
    // An `int` argument, as the kernel reads it (the low 32 bits).
    let int = |v: u64| v as u32 as i32;
    let reads = [
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_pread64,
        libc::SYS_preadv,
        libc::SYS_preadv2,
        libc::SYS_recvfrom,
        libc::SYS_recvmsg,
    ];
    if reads.contains(&nr) {
        return fd(args[0]).map(Wait::Read);
    }
    match nr {
        libc::SYS_poll if int(args[2]) < 0 => Some(Wait::Poll {
            at: args[0],
            n: args[1],
            ppoll: false,
        }),
        libc::SYS_ppoll if args[2] == 0 => Some(Wait::Poll {
            at: args[0],
            n: args[1],
            ppoll: true,
        }),
        libc::SYS_select | libc::SYS_pselect6 if args[4] == 0 => Some(Wait::Select {
            nfds: args[0],
            sets: [args[1], args[2], args[3]],
            p6: nr == libc::SYS_pselect6,
        }),
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait if int(args[3]) == -1 => {
            fd(args[0]).map(Wait::Epoll)
        }
        libc::SYS_epoll_pwait2 if args[3] == 0 => fd(args[0]).map(Wait::Epoll),
        _ => None,
    }
}

/// The descriptors a wait covers, each with whether it is waited for reading; `None` when
/// they cannot be read (the process's memory or its epoll's `fdinfo`).
fn waited_fds(pid: i32, wait: &Wait) -> Option<Vec<(i32, bool)>> {
    match *wait {
        Wait::Read(fd) => Some(vec![(fd, true)]),
        Wait::Poll { at, n, .. } => {
            // Bounded like the kernel's RLIMIT_NOFILE check; a larger array is not looked at.
            if n > 4096 {
                return None;
            }
            let bytes = read_mem(pid, at, n as usize * 8)?;
            Some(
                bytes
                    .chunks_exact(8)
                    .filter_map(|p| {
                        let fd = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                        let events = i16::from_ne_bytes([p[4], p[5]]);
                        let reads = events & (libc::POLLIN | libc::POLLPRI | libc::POLLRDNORM) != 0;
                        // A negative fd is skipped by poll.
                        (fd >= 0).then_some((fd, reads))
                    })
                    .collect(),
            )
        }
        Wait::Select { nfds, sets, .. } => {
            if nfds > 4096 {
                return None;
            }
            let len = (nfds as usize).div_ceil(64) * 8;
            let mut out: Vec<(i32, bool)> = Vec::new();
            for (i, at) in sets.iter().enumerate() {
                if *at == 0 || len == 0 {
                    continue;
                }
                let bytes = read_mem(pid, *at, len)?;
                for fd in 0..nfds as usize {
                    if bytes[fd / 8] & (1 << (fd % 8)) != 0 {
                        let fd = fd as i32;
                        match out.iter_mut().find(|(f, _)| *f == fd) {
                            Some(e) => e.1 |= i == 0,
                            None => out.push((fd, i == 0)),
                        }
                    }
                }
            }
            Some(out)
        }
        Wait::Epoll(epfd) => {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{epfd}")).ok()?;
            Some(epoll_targets(&info))
        }
    }
}

/// The descriptors registered in an epoll instance, from its `fdinfo` ("tfd: N events: HEX
/// …" lines), each with whether it is watched for reading.
fn epoll_targets(info: &str) -> Vec<(i32, bool)> {
    info.lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("tfd:")?;
            let mut it = rest.split_whitespace();
            let fd = it.next()?.parse::<i32>().ok()?;
            let events = match (it.next(), it.next()) {
                (Some("events:"), Some(e)) => u32::from_str_radix(e, 16).ok()?,
                _ => return None,
            };
            let reads = events & (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDNORM) as u32 != 0;
            Some((fd, reads))
        })
        .collect()
}

/// `len` bytes of `pid`'s memory at `at` (`/proc/PID/mem`; ferryd runs as root).
fn read_mem(pid: i32, at: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, at).ok()?;
    Some(buf)
}

/// How long a client may be away: `FERRY_RELAY_GIVE_UP` seconds (the origin's bound too),
/// default [`GIVE_UP_DEFAULT`] s.
pub fn give_up() -> Duration {
    let secs = match std::env::var("FERRY_RELAY_GIVE_UP") {
        Ok(v) => v.trim().parse::<u64>().unwrap_or_else(|_| {
            tracing::warn!(value = %v, "FERRY_RELAY_GIVE_UP is not a number of seconds; using {GIVE_UP_DEFAULT}");
            GIVE_UP_DEFAULT
        }),
        Err(_) => GIVE_UP_DEFAULT,
    };
    Duration::from_secs(secs)
}

/// The default of `FERRY_RELAY_GIVE_UP`: one hour.
pub const GIVE_UP_DEFAULT: u64 = 3600;

#[cfg(test)]
mod tests {
    use super::{Wait, epoll_targets, parse_wait};

    fn line(nr: libc::c_long, args: &[u64]) -> String {
        let mut l = nr.to_string();
        for a in args {
            l.push_str(&format!(" {a:#x}"));
        }
        l + " 0x7ffd0000 0x7f000000"
    }

    #[test]
    fn syscall_lines_name_the_descriptor_read() {
        let read = line(libc::SYS_read, &[3, 0x7ffd, 0x1000, 0, 0, 0]);
        assert_eq!(parse_wait(&read), Some(Wait::Read(3)));
        let readv = line(libc::SYS_readv, &[0, 0x7ffd, 2, 0, 0, 0]);
        assert_eq!(parse_wait(&readv), Some(Wait::Read(0)));
        let write = line(libc::SYS_write, &[1, 0x7ffd, 0x10, 0, 0, 0]);
        assert_eq!(parse_wait(&write), None);
        assert_eq!(parse_wait("running"), None);
        assert_eq!(parse_wait("-1 0x7ffd 0x7f00"), None);
        assert_eq!(parse_wait(""), None);
    }

    #[test]
    fn only_waits_without_a_timeout_count() {
        // poll(fds, 2, -1): the timeout is an int, its upper half not looked at.
        let p = line(libc::SYS_poll, &[0x7ffd10, 2, 0xffff_ffff, 0, 0, 0]);
        assert_eq!(
            parse_wait(&p),
            Some(Wait::Poll {
                at: 0x7ffd10,
                n: 2,
                ppoll: false
            })
        );
        let p = line(libc::SYS_poll, &[0x7ffd10, 2, 100, 0, 0, 0]);
        assert_eq!(parse_wait(&p), None, "poll with a 100 ms timeout");
        let pp = line(libc::SYS_ppoll, &[0x7ffd10, 1, 0, 0, 8, 0]);
        assert!(matches!(
            parse_wait(&pp),
            Some(Wait::Poll { ppoll: true, .. })
        ));
        let pp = line(libc::SYS_ppoll, &[0x7ffd10, 1, 0x7ffd40, 0, 8, 0]);
        assert_eq!(parse_wait(&pp), None, "ppoll with a timeout");
        let sel = line(libc::SYS_select, &[1, 0x7ffd20, 0, 0, 0, 0]);
        assert_eq!(
            parse_wait(&sel),
            Some(Wait::Select {
                nfds: 1,
                sets: [0x7ffd20, 0, 0],
                p6: false
            })
        );
        let sel = line(libc::SYS_pselect6, &[1, 0x7ffd20, 0, 0, 0x7ffd30, 0]);
        assert_eq!(parse_wait(&sel), None, "pselect6 with a timeout");
        let ep = line(libc::SYS_epoll_wait, &[5, 0x7ffd20, 8, 0xffff_ffff, 0, 0]);
        assert_eq!(parse_wait(&ep), Some(Wait::Epoll(5)));
        let ep = line(libc::SYS_epoll_pwait, &[5, 0x7ffd20, 8, 0, 0, 8]);
        assert_eq!(parse_wait(&ep), None, "epoll_pwait that does not wait");
        let ep = line(libc::SYS_epoll_pwait2, &[5, 0x7ffd20, 8, 0, 0, 8]);
        assert_eq!(parse_wait(&ep), Some(Wait::Epoll(5)));
    }

    #[test]
    fn epoll_fdinfo_names_the_registered_descriptors() {
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n\
tfd:        0 events:       19 data:                0  pos:0 ino:4 sdev:d\n\
tfd:        7 events:        4 data:                7  pos:0 ino:5 sdev:d\n";
        assert_eq!(epoll_targets(info), vec![(0, true), (7, false)]);
    }
}
