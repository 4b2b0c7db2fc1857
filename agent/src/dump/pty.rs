//! Pseudo-terminal pairs whose master is in the dump (this process or a member of its tree).
//!
//! The master's descriptor is taken into ferry with `pidfd_getfd`; its settings are read with
//! ioctls (on a master they act on the slave). The bytes queued both ways are read out and put
//! back at once, so the process finds them as they were:
//! - output (written to the slave, not read by the master yet): read from the master, then
//!   pushed back into the master's input with `TIOCSTI`;
//! - input (written to the master, not read by the slave yet): read from a slave ferry opens
//!   (`TIOCGPTPEER`) after switching it to non-canonical mode (a partial line included), then
//!   pushed back into the slave with `TIOCSTI` under the settings with echo, signals and
//!   input mapping off and the editing characters disabled (so each byte is stored as is and
//!   lines end where they ended), then the settings are put back.
//!
//! [`push_queues`] is the same step at restore, on the pair made anew.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;

use super::DumpError;
use crate::state::{FdKind, FdState, PtyState, Termios};
use crate::sys;
use crate::sys::tty::{self as st, Termios2};

/// Most bytes pushed back one way: the line discipline holds 4095.
pub const MAX_QUEUE: usize = 4095;

fn unsupported(fd: i32, what: impl std::fmt::Display) -> DumpError {
    DumpError::Unsupported(format!("fd {fd}: {what}"))
}

fn failed(fd: i32, what: &str) -> impl FnOnce(Errno) -> DumpError + '_ {
    move |e| {
        DumpError::Unsupported(format!(
            "fd {fd}: reading the pseudo-terminal pair failed ({what}: {e}); not supported"
        ))
    }
}

/// Whether a link target is the pseudo-terminal multiplexer.
pub fn is_ptmx(target: &str) -> bool {
    target == "/dev/ptmx" || target.starts_with("/dev/pts/ptmx")
}

/// The pair's number a master descriptor's `fdinfo` shows (`tty-index:`).
pub fn index_from_fdinfo(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("tty-index:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The pair number of a slave device (`/dev/pts/N`: majors 136–143).
pub fn slave_index(rdev: u64) -> Option<u32> {
    let major = libc::major(rdev);
    let minor = libc::minor(rdev);
    (136..144)
        .contains(&major)
        .then(|| minor + (major - 136) * 256)
}

/// The numbers of the pairs whose master `pid` or one of `members` holds.
pub fn masters_in(pid: Pid, members: &[i32]) -> HashSet<u32> {
    let mut out = HashSet::new();
    for p in std::iter::once(pid.as_raw()).chain(members.iter().copied()) {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            if !target.to_str().is_some_and(is_ptmx) {
                continue;
            }
            let info = format!("/proc/{p}/fdinfo/{}", e.file_name().to_string_lossy());
            if let Some(i) = std::fs::read_to_string(info)
                .ok()
                .and_then(|t| index_from_fdinfo(&t))
            {
                out.insert(i);
            }
        }
    }
    out
}

/// Whether `pid` or one of `members` has `/dev/pts/index` open.
fn slave_held(pid: Pid, members: &[i32], index: u32) -> bool {
    let want = format!("/dev/pts/{index}");
    std::iter::once(pid.as_raw())
        .chain(members.iter().copied())
        .any(|p| {
            std::fs::read_dir(format!("/proc/{p}/fd")).is_ok_and(|d| {
                d.flatten().any(|e| {
                    std::fs::read_link(e.path()).is_ok_and(|t| t.to_str() == Some(want.as_str()))
                })
            })
        })
}

/// The model's settings from the kernel's.
pub fn termios_from(t: &Termios2) -> Termios {
    Termios {
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        line: t.c_line,
        cc: t.c_cc.to_vec(),
        ispeed: t.c_ispeed,
        ospeed: t.c_ospeed,
    }
}

/// The kernel's settings from the model's.
pub fn termios_to(t: &Termios) -> Termios2 {
    let mut out = st::zeroed_termios();
    out.c_iflag = t.iflag;
    out.c_oflag = t.oflag;
    out.c_cflag = t.cflag;
    out.c_lflag = t.lflag;
    out.c_line = t.line;
    for (d, s) in out.c_cc.iter_mut().zip(&t.cc) {
        *d = *s;
    }
    out.c_ispeed = t.ispeed;
    out.c_ospeed = t.ospeed;
    out
}

/// The settings bytes are pushed back into the slave under: no echo, no signals, no input
/// mapping, no editing characters; canonical mode (so lines end where they ended) and flow
/// control as they were (changing flow control would queue a packet-mode status).
fn push_settings(t: &Termios2) -> Termios2 {
    let mut w = *t;
    w.c_lflag &= !(libc::ECHO
        | libc::ECHOE
        | libc::ECHOK
        | libc::ECHONL
        | libc::ECHOCTL
        | libc::ECHOPRT
        | libc::ECHOKE
        | libc::ISIG);
    w.c_iflag &= !(libc::ICRNL
        | libc::INLCR
        | libc::IGNCR
        | libc::IUCLC
        | libc::ISTRIP
        | libc::PARMRK
        | libc::IGNPAR);
    for c in [
        libc::VERASE,
        libc::VKILL,
        libc::VEOF,
        libc::VWERASE,
        libc::VREPRINT,
        libc::VLNEXT,
    ] {
        w.c_cc[c] = 0;
    }
    w
}

/// Puts `input` back in the slave's input queue and `output` in the master's, then sets
/// the slave's settings to `t`.
pub fn push_queues(
    master: BorrowedFd<'_>,
    slave: Option<BorrowedFd<'_>>,
    t: &Termios2,
    input: &[u8],
    output: &[u8],
) -> Result<(), Errno> {
    if !input.is_empty() {
        let slave = slave.ok_or(Errno::EBADF)?;
        st::set_termios(slave, &push_settings(t))?;
        let pushed = st::push_input(slave, input);
        st::set_termios(master, t)?;
        pushed?;
    }
    st::push_input(master, output)
}

/// Reads everything readable from a terminal without blocking (its descriptor may be a
/// blocking one: `poll` says first). In packet mode each read starts with a status byte,
/// which is dropped: a status other than data is returned apart.
fn drain(fd: BorrowedFd<'_>, packet: bool) -> Result<(Vec<u8>, u8), Errno> {
    let mut out = Vec::new();
    let mut status = 0u8;
    let mut buf = vec![0u8; 8192];
    loop {
        let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
        poll(&mut p, PollTimeout::ZERO)?;
        if !p[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
        {
            break;
        }
        let n = sys::fionread(fd)?;
        if n == 0 && !packet {
            break;
        }
        let want = (n + usize::from(packet)).min(buf.len());
        let got = nix::unistd::read(fd, &mut buf[..want])?;
        if got == 0 {
            break;
        }
        if packet {
            if buf[0] != 0 {
                status |= buf[0];
            }
            out.extend_from_slice(&buf[1..got]);
        } else {
            out.extend_from_slice(&buf[..got]);
        }
        if out.len() > MAX_QUEUE + 8192 {
            break;
        }
    }
    Ok((out, status))
}

/// Reads the pair behind `pid`'s master descriptor `fd` and leaves it as it was.
pub fn capture(pid: Pid, fd: i32, members: &[i32]) -> Result<PtyState, DumpError> {
    let pidfd = sys::pidfd_open(pid).map_err(failed(fd, "pidfd_open"))?;
    let master = sys::pidfd_getfd(pidfd.as_fd(), fd).map_err(failed(fd, "pidfd_getfd"))?;
    let m = master.as_fd();
    let index = st::get_int(m, libc::TIOCGPTN).map_err(failed(fd, "TIOCGPTN"))? as u32;
    let t = st::get_termios(m).map_err(failed(fd, "TCGETS2"))?;
    let winsize = st::get_winsize(m).map_err(failed(fd, "TIOCGWINSZ"))?;
    let packet = st::get_int(m, libc::TIOCGPKT).map_err(failed(fd, "TIOCGPKT"))? != 0;
    let locked = st::get_int(m, libc::TIOCGPTLCK).map_err(failed(fd, "TIOCGPTLCK"))? != 0;
    let held = slave_held(pid, members, index);
    if locked && held {
        return Err(unsupported(
            fd,
            format!(
                "a locked pseudo-terminal pair (/dev/pts/{index}) whose slave is open is not supported"
            ),
        ));
    }
    // The slave was opened and closed again: the master reads EIO.
    let mut p = [PollFd::new(m, PollFlags::POLLIN)];
    poll(&mut p, PollTimeout::ZERO).map_err(failed(fd, "poll"))?;
    let hangup = p[0]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLHUP));
    // Bytes written to the master wait in the slave's line discipline even before anyone
    // opened the slave; reading them would need opening it, which the master would see
    // (it reads EIO once the slave is closed again).
    if !held && !hangup && !locked {
        return Err(unsupported(
            fd,
            format!(
                "a pseudo-terminal pair (/dev/pts/{index}) unlocked but whose slave was never opened is not supported (its input queue cannot be read unseen)"
            ),
        ));
    }
    let (output, status) = drain(m, packet).map_err(failed(fd, "read the output queue"))?;
    if status != 0 {
        tracing::warn!(
            fd,
            status,
            "a packet-mode status was pending on a pseudo-terminal master; it is not carried"
        );
    }
    // The input queue, through a slave of ferry's own, switched to non-canonical mode.
    let mut input = Vec::new();
    let mut slave: Option<OwnedFd> = None;
    if (held || hangup) && !locked {
        let s = st::open_peer(
            m,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
        .map_err(failed(fd, "TIOCGPTPEER"))?;
        let mut raw = t;
        raw.c_lflag &=
            !(libc::ICANON | libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL | libc::ISIG);
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        let read =
            st::set_termios(s.as_fd(), &raw).and_then(|()| drain(s.as_fd(), false).map(|(d, _)| d));
        // The settings come back whatever was read (`push_queues` sets them again).
        let back = st::set_termios(m, &t);
        input = read.map_err(failed(fd, "read the input queue"))?;
        back.map_err(failed(fd, "put the settings back"))?;
        slave = Some(s);
    }
    let too_much = input.len() > MAX_QUEUE || output.len() > MAX_QUEUE;
    // In canonical mode an end-of-file typed at the start of a line is kept as a NUL byte
    // that ends a line; read out it is a NUL like any other, and would come back as one.
    let eof = t.c_lflag & libc::ICANON != 0 && input.contains(&0);
    push_queues(
        m,
        slave.as_ref().map(AsFd::as_fd),
        &t,
        &input[..input.len().min(MAX_QUEUE)],
        &output[..output.len().min(MAX_QUEUE)],
    )
    .map_err(failed(fd, "put the queued bytes back"))?;
    if eof {
        return Err(unsupported(
            fd,
            format!(
                "a pseudo-terminal pair (/dev/pts/{index}) with an end-of-file or a NUL byte queued in its canonical input is not supported"
            ),
        ));
    }
    if too_much {
        return Err(unsupported(
            fd,
            format!(
                "a pseudo-terminal pair (/dev/pts/{index}) with more than {MAX_QUEUE} bytes queued one way is not supported"
            ),
        ));
    }
    Ok(PtyState {
        index,
        termios: termios_from(&t),
        winsize,
        packet,
        locked,
        hangup,
        input,
        output,
    })
}

/// Fills each pseudo-terminal master's state while the process is frozen.
pub fn capture_all(pid: Pid, fds: &mut [FdState], members: &[i32]) -> Result<(), DumpError> {
    for f in fds.iter_mut() {
        if let FdKind::PtyMaster(p) = &mut f.kind {
            *p = capture(pid, f.fd, members)?;
        }
    }
    Ok(())
}

/// The pair numbers of masters that processes other than `pid`, `members` and ferry hold.
fn masters_outside(pid: Pid, members: &[i32]) -> HashSet<u32> {
    let me = std::process::id() as i32;
    let mut out = HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(other) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if other == pid.as_raw() || other == me || members.contains(&other) {
            continue;
        }
        out.extend(masters_in(Pid::from_raw(other), &[]));
    }
    out
}

/// Refuses a master whose slave (or the master itself, shared after a `fork`) a process
/// outside the dump holds: a pair made anew would leave that process on the old one.
pub fn check_outside(
    pid: Pid,
    members: &[i32],
    fds: &[FdState],
    outside: &HashSet<String>,
) -> Result<(), DumpError> {
    let masters = if fds.iter().any(|f| matches!(f.kind, FdKind::PtyMaster(_))) {
        masters_outside(pid, members)
    } else {
        HashSet::new()
    };
    for f in fds {
        if let FdKind::PtyMaster(p) = &f.kind {
            if masters.contains(&p.index) {
                return Err(unsupported(
                    f.fd,
                    format!(
                        "the pseudo-terminal master of /dev/pts/{}, which a process outside the dump holds too (dump that process too, with --tree, or end it), is not supported",
                        p.index
                    ),
                ));
            }
            let path = format!("/dev/pts/{}", p.index);
            if outside.contains(&path) {
                return Err(unsupported(
                    f.fd,
                    format!(
                        "the pseudo-terminal master of {path}, whose slave a process outside the dump holds (dump that process too, with --tree, or end it), is not supported"
                    ),
                ));
            }
        }
    }
    Ok(())
}
