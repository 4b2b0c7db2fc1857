//! Pseudo-terminal pairs whose master is in the image, made anew by the restorer before any
//! task exists: `/dev/ptmx` opened again (with the same number when it is free; otherwise the
//! slave is `/dev/pts/M` for another `M`, which a warning names and the checker accepts),
//! settings, window size, the bytes queued both ways, packet mode and the lock put back.
//! The tasks take the master with `pidfd_getfd` and open the slave by its path. The
//! restorer keeps its copies until the restore ends (its slave only when descriptors of the
//! image hold the slave), so that such a slave is never closed by everyone in between (which
//! the master would see as a hangup).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::RestoreError;
use crate::dump::pty::{push_queues, termios_to};
use crate::state::{CttyState, FdKind, ProcessState, PtyState};
use crate::sys::tty as st;

/// Most extra masters opened while looking for the pair's old number.
const MAX_TRIES: usize = 64;

#[derive(Debug)]
struct Pair {
    master: OwnedFd,
    _slave: Option<OwnedFd>,
    /// Its number now.
    index: u32,
    rdev: u64,
}

/// The pairs of an image, by their number at dump time.
#[derive(Debug, Default)]
pub struct Ptys {
    pairs: HashMap<u32, Pair>,
}

fn io(what: String) -> impl FnOnce(Errno) -> RestoreError {
    move |e| RestoreError::Io {
        what,
        source: e.into(),
    }
}

fn open_ptmx() -> Result<(OwnedFd, u32), RestoreError> {
    let m: OwnedFd = nix::fcntl::open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("open /dev/ptmx".into()))?;
    let i = st::get_int(m.as_fd(), libc::TIOCGPTN).map_err(io("TIOCGPTN".into()))?;
    Ok((m, i as u32))
}

/// A new master, numbered `want` if that number is free (the kernel hands out the lowest
/// free one: masters are opened, and the extra ones closed, until it comes or is passed).
fn open_numbered(want: u32) -> Result<(OwnedFd, u32), RestoreError> {
    let mut extra = Vec::new();
    loop {
        let (m, i) = open_ptmx()?;
        if i == want {
            return Ok((m, i));
        }
        extra.push((m, i));
        if i > want || extra.len() >= MAX_TRIES {
            return Ok(extra.swap_remove(0));
        }
    }
}

fn setup(
    st_: &PtyState,
    need_slave: bool,
    warnings: &mut Vec<String>,
) -> Result<Pair, RestoreError> {
    let (master, index) = open_numbered(st_.index)?;
    let m = master.as_fd();
    let what = |s: &str| format!("/dev/pts/{index} (was {}): {s}", st_.index);
    if index != st_.index {
        warnings.push(format!(
            "pseudo-terminal /dev/pts/{} is taken: the pair is /dev/pts/{index} now",
            st_.index
        ));
    }
    st::set_int(m, libc::TIOCSPTLCK, 0).map_err(io(what("unlock")))?;
    let slave = if need_slave {
        Some(
            st::open_peer(
                m,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
            .map_err(io(what("TIOCGPTPEER")))?,
        )
    } else {
        None
    };
    let t = termios_to(&st_.termios);
    st::set_termios(m, &t).map_err(io(what("TCSETS2")))?;
    push_queues(
        m,
        slave.as_ref().map(AsFd::as_fd),
        &t,
        &st_.input,
        &st_.output,
    )
    .map_err(io(what("put the queued bytes back (TIOCSTI)")))?;
    st::set_winsize(m, st_.winsize).map_err(io(what("TIOCSWINSZ")))?;
    // Last: settings changed while in packet mode would queue a status for the master.
    if st_.packet {
        st::set_int(m, libc::TIOCPKT, 1).map_err(io(what("TIOCPKT")))?;
    }
    if st_.locked {
        st::set_int(m, libc::TIOCSPTLCK, 1).map_err(io(what("lock")))?;
    }
    let rdev = std::fs::metadata(format!("/dev/pts/{index}"))
        .map(|m| std::os::unix::fs::MetadataExt::rdev(&m))
        .unwrap_or(0);
    Ok(Pair {
        master,
        _slave: slave,
        index,
        rdev,
    })
}

impl Ptys {
    /// Makes every pair whose master one of `procs` holds.
    pub fn create(
        procs: &[&ProcessState],
        warnings: &mut Vec<String>,
    ) -> Result<Self, RestoreError> {
        // Pairs whose slave a descriptor of the image holds: the restorer keeps its own slave
        // open until the tasks have opened theirs. Of the others it closes its slave at once:
        // the master sees that (a hangup), as it did at the dump when nobody held the slave.
        let mut slaves: HashSet<u32> = HashSet::new();
        for p in procs {
            for f in &p.fds {
                if let FdKind::PtySlave { index, .. } = f.kind {
                    slaves.insert(index);
                }
            }
        }
        let mut pairs = HashMap::new();
        for p in procs {
            for f in &p.fds {
                if let FdKind::PtyMaster(s) = &f.kind {
                    if pairs.contains_key(&s.index) {
                        return Err(RestoreError::Layout(format!(
                            "pid {} fd {}: a second master of /dev/pts/{}",
                            p.pid, f.fd, s.index
                        )));
                    }
                    let held = slaves.contains(&s.index);
                    let need = held || s.hangup || !s.input.is_empty();
                    let mut pair = setup(s, need, warnings)?;
                    if !held {
                        pair._slave = None;
                    }
                    pairs.insert(s.index, pair);
                }
            }
        }
        Ok(Self { pairs })
    }

    /// The restorer's master of the pair numbered `old` at dump time.
    pub fn master(&self, old: u32) -> Option<RawFd> {
        self.pairs.get(&old).map(|p| p.master.as_raw_fd())
    }

    /// The slave's path now of the pair numbered `old` at dump time.
    pub fn slave_path(&self, old: u32) -> Option<String> {
        self.pairs
            .get(&old)
            .map(|p| format!("/dev/pts/{}", p.index))
    }

    /// A controlling terminal that is the slave of a pair made anew, as it is now.
    pub fn ctty(&self, c: &CttyState) -> CttyState {
        match crate::dump::pty::slave_index(c.rdev).and_then(|i| self.pairs.get(&i)) {
            Some(p) => CttyState {
                rdev: p.rdev,
                path: format!("/dev/pts/{}", p.index),
                fg_pgid: c.fg_pgid,
            },
            None => c.clone(),
        }
    }
}
