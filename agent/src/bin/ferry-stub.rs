//! `ferry-stub MIGRATION_ID SOCKET`: what a migrated process becomes on its origin host.
//!
//! ferryd injects its `execve` into the frozen original, so the stub keeps the PID, parent,
//! session, terminal and descriptors (the relayed ones are served by ferryd through its own
//! duplicates). It starts with every signal blocked (the original's mask was set so before the
//! `execve`), takes them all through a signalfd, connects to ferryd's stub socket and forwards
//! each signal; on `SIGTSTP`, `SIGTTIN` and `SIGTTOU` it also stops itself, as the process
//! would have; it reaps its own children (the stubs of a migrated tree's members). It exits
//! with the remote process's status: the same code, or the same signal
//! (core dumps off). If the connection to ferryd breaks it reconnects with backoff. When ferryd
//! says the process is lost (`LOST host`), it exits with `LOST_EXIT_CODE` (255), saying so
//! on its stderr if that is a terminal.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ferry_agent::relay::StubCommand;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, raise, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(id), Some(socket)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: ferry-stub MIGRATION_ID SOCKET (ferryd runs it; not for use by hand)");
        std::process::exit(2);
    };
    // Everything blocked (it already is, from before the execve), then every disposition the
    // original ignored back to the default: such a signal must still be queued for the
    // signalfd. Only those (the execve reset every handler already): setting `SIG_DFL` on a
    // signal whose default is to be ignored discards it if pending (a member stub's
    // `SIGCHLD`, sent between the execve and here, was lost so, and its zombie stayed).
    let all = SigSet::all();
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), None);
    let ignored = ignored_signals();
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL
            && sig != Signal::SIGSTOP
            && ignored & (1 << (sig as i32 - 1)) != 0
        {
            let _ = ferry_agent::sys::set_default_action(sig);
        }
    }
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    let sfd = match SignalFd::with_flags(&all, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferry-stub: signalfd: {e}");
            std::process::exit(125);
        }
    };
    // Children that ended before the signalfd was there (their SIGCHLD discarded).
    reap_children();
    let mut backoff = Duration::from_millis(10);
    let mut pending: Vec<i32> = Vec::new();
    loop {
        let conn = match UnixStream::connect(socket) {
            Ok(c) => c,
            Err(_) => {
                collect_signals(&sfd, &mut pending, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        match serve(&conn, id, &sfd, &mut pending) {
            Some(cmd) => finish(cmd),
            None => {
                // ferryd went away (or refused us): try again.
                collect_signals(&sfd, &mut pending, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Waits up to `wait` for signals, keeping them to forward once connected (stopping at once
/// on a stop signal).
fn collect_signals(sfd: &SignalFd, pending: &mut Vec<i32>, wait: Duration) {
    let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    if poll(&mut fds, ms).unwrap_or(0) > 0 {
        while let Ok(Some(si)) = sfd.read_signal() {
            let n = si.ssi_signo as i32;
            if forwarded(n) && !pending.contains(&n) {
                pending.push(n);
            }
            stop_if_asked(n);
        }
    }
}

/// Whether a signal is forwarded (`SIGCHLD` is about the stub's own children: the stubs of
/// the members of a tree migrated with `--tree`, which exit with their members; reaped here,
/// as their real parent on the destination reaped their members).
fn forwarded(n: i32) -> bool {
    if n == libc::SIGCHLD {
        reap_children();
    }
    n != libc::SIGCHLD
}

/// The signals this process ignores (`SigIgn:` of /proc/self/status; all, if unreadable).
fn ignored_signals() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Reaps every child of the stub that has ended.
fn reap_children() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    while let Ok(st) = waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
        if st == WaitStatus::StillAlive {
            break;
        }
    }
}

/// After forwarding a stop signal, stops itself too, so the shell sees the job stop.
fn stop_if_asked(n: i32) {
    let Ok(sig) = Signal::try_from(n) else { return };
    if matches!(sig, Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU) {
        let mut one = SigSet::empty();
        one.add(sig);
        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&one), None);
        let _ = raise(sig);
        let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&one), None);
    }
}

/// One connection: announces itself, forwards signals, and returns the exit command when
/// ferryd sends it (`None` when the connection ends first).
fn serve(
    conn: &UnixStream,
    id: &str,
    sfd: &SignalFd,
    pending: &mut Vec<i32>,
) -> Option<StubCommand> {
    let mut w = conn;
    w.write_all(StubCommand::Hello(id.to_string()).line().as_bytes())
        .ok()?;
    for n in pending.drain(..) {
        w.write_all(StubCommand::Signal(n).line().as_bytes()).ok()?;
    }
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        let mut fds = [
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(conn.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
        let sig_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let conn_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        if sig_ready {
            while let Ok(Some(si)) = sfd.read_signal() {
                let n = si.ssi_signo as i32;
                if forwarded(n)
                    && w.write_all(StubCommand::Signal(n).line().as_bytes())
                        .is_err()
                {
                    pending.push(n);
                    return None;
                }
                stop_if_asked(n);
            }
        }
        if conn_ready {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {
                    if let Some(
                        cmd @ (StubCommand::ExitCode(_)
                        | StubCommand::ExitSignal(_)
                        | StubCommand::Lost(_)),
                    ) = StubCommand::parse(line.trim_end())
                    {
                        return Some(cmd);
                    }
                }
            }
        }
    }
}

/// Ends the stub as the remote process ended (or was lost).
fn finish(cmd: StubCommand) -> ! {
    if let StubCommand::Lost(host) = &cmd {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!(
                "ferry-stub: the migrated process on {host} is lost; exiting with {}",
                ferry_agent::relay::LOST_EXIT_CODE
            );
        }
        std::process::exit(ferry_agent::relay::LOST_EXIT_CODE);
    }
    if let StubCommand::ExitSignal(n) = cmd
        && let Ok(sig) = Signal::try_from(n)
    {
        let _ = ferry_agent::sys::set_default_action(sig);
        let mut one = SigSet::empty();
        one.add(sig);
        let _ = raise(sig);
        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&one), None);
        // A signal whose default is to be ignored (SIGCHLD, SIGWINCH, …) leaves us here.
        std::process::exit(128 + n);
    }
    let code = match cmd {
        StubCommand::ExitCode(c) => c,
        StubCommand::ExitSignal(n) => 128 + n,
        _ => 1,
    };
    std::process::exit(code);
}
