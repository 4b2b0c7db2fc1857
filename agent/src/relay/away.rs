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
    /// `on_give_up` is called (from the watch's thread; the copy was continued).
    pub(super) fn start(
        pid: i32,
        served: Vec<Served>,
        give_up: Duration,
        on_give_up: impl FnOnce() + Send + 'static,
    ) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::default()));
        let (s2, st2) = (stop.clone(), state.clone());
        let thread = std::thread::Builder::new()
            .name(format!("away-{pid}"))
            .spawn(move || {
                if watch(pid, &served, &s2, &st2, give_up) {
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
                continue;
            }
        }
        // Input: a thread waits reading a relayed descriptor that nothing can fill.
        if need.is_none() {
            for s in served.iter().filter(|s| takes_input(s.kind)) {
                if let Some(tid) = reading(pid, &s.fds) {
                    need = Some(format!(
                        "thread {tid} reads fd {} (relay channel {}), which only its client can fill",
                        s.fds.first().copied().unwrap_or(-1),
                        s.channel
                    ));
                    break;
                }
            }
        }
        if let Some(why) = need {
            match kill(Pid::from_raw(pid), Signal::SIGSTOP) {
                Ok(()) => {
                    tracing::info!(pid, why = %why, "client away: the copy needs it and is frozen");
                    lock(state).out.frozen = Some(why);
                }
                Err(e) => tracing::warn!(pid, %e, "client away: cannot stop the copy"),
            }
        }
    }
}

/// A thread of `pid` waiting in a read of one of `fds`, if any.
fn reading(pid: i32, fds: &[i32]) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) else {
            continue;
        };
        if let Some(fd) = read_syscall_fd(&s)
            && fds.contains(&fd)
        {
            return Some(tid);
        }
    }
    None
}

/// The descriptor a task waits to read from, from its `/proc/…/syscall` line ("NR ARG1 …";
/// "running" or "-1 …" when not in a system call): `read`, `readv`, `pread64`, `preadv`,
/// `preadv2`, `recvfrom`, `recvmsg`.
fn read_syscall_fd(line: &str) -> Option<i32> {
    let mut it = line.split_whitespace();
    let nr: libc::c_long = it.next()?.parse().ok()?;
    let reads = [
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_pread64,
        libc::SYS_preadv,
        libc::SYS_preadv2,
        libc::SYS_recvfrom,
        libc::SYS_recvmsg,
    ];
    if !reads.contains(&nr) {
        return None;
    }
    let arg = it.next()?.trim_start_matches("0x");
    let fd = u64::from_str_radix(arg, 16).ok()?;
    i32::try_from(fd).ok()
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
    use super::read_syscall_fd;

    #[test]
    fn syscall_lines_name_the_descriptor_read() {
        let read = format!(
            "{} 0x3 0x7ffd 0x1000 0x0 0x0 0x0 0x7ffd 0x7f00",
            libc::SYS_read
        );
        assert_eq!(read_syscall_fd(&read), Some(3));
        let readv = format!(
            "{} 0x0 0x7ffd 0x2 0x0 0x0 0x0 0x7ffd 0x7f00",
            libc::SYS_readv
        );
        assert_eq!(read_syscall_fd(&readv), Some(0));
        let write = format!(
            "{} 0x1 0x7ffd 0x10 0x0 0x0 0x0 0x7ffd 0x7f00",
            libc::SYS_write
        );
        assert_eq!(read_syscall_fd(&write), None);
        assert_eq!(read_syscall_fd("running"), None);
        assert_eq!(read_syscall_fd("-1 0x7ffd 0x7f00"), None);
        assert_eq!(read_syscall_fd(""), None);
    }
}
