//! File descriptors: `/proc/PID/fd` links, `fdinfo`, and `stat` of what they point to.
//!
//! Two passes. [`collect_fds`] classifies every descriptor from `/proc` alone (it also runs
//! before the freeze, to refuse early): which descriptors share an open file description
//! (`kcmp`), which pipes no outside process holds. [`capture`] runs while the process is
//! frozen and reads what travels in the image: the bytes queued in local pipes and FIFOs
//! (without consuming them), the contents of files deleted while open, and the locks held.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::Pid;

use super::DumpError;
use super::fdkinds;
use super::mm::identity_of;
use super::pty;
use super::sockets::{self, SocketDump};
use crate::image::MAX_MANIFEST_BYTES;
use crate::proc;
use crate::state::{
    CarriedDir, CarriedFile, DeletedNode, FdKind, FdState, FileRef, LockKind, LockState,
    MemfdExtent, PipeQueue, VmaKind, VmaState,
};
use crate::sys;

const O_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
/// The flags of a descriptor of a symbolic link itself.
pub const O_PATH_NOFOLLOW: u32 = (libc::O_PATH | libc::O_NOFOLLOW) as u32;

/// Default for [`super::DumpOptions::max_deleted_file_size`]: files deleted while open are
/// stored whole in the manifest, which a reader caps at [`MAX_MANIFEST_BYTES`].
pub const DEFAULT_MAX_DELETED_FILE_SIZE: u64 = 32 << 20;

/// Most bytes of file and pipe contents one image stores: the manifest that holds them is
/// capped at [`MAX_MANIFEST_BYTES`], and the rest of it needs room too.
pub const STORED_BUDGET: u64 = MAX_MANIFEST_BYTES - (8 << 20);

/// Major numbers of terminal devices: `/dev/ttyN` (4), `/dev/tty` and `/dev/console` (5),
/// pseudo-terminal slaves (136–143).
fn is_tty_major(major: u64) -> bool {
    major == 4 || major == 5 || (136..=143).contains(&major)
}

fn unsupported(fd: i32, what: &str) -> DumpError {
    DumpError::Unsupported(format!("fd {fd}: {what} is not supported yet"))
}

/// A pidfd, of the process itself, of another process of the tree, or of a child not reaped
/// yet (a zombie of the tree). fdinfo's `Pid:` is in our namespace (-1 once the process was
/// reaped); the image keeps the PID as the process sees it. `judged_later`: a tree's
/// precheck, before its members are known.
fn pidfd(
    pid: Pid,
    fd: i32,
    info: &str,
    members: &[i32],
    judged_later: bool,
) -> Result<FdKind, DumpError> {
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let target: i32 =
        field("Pid:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| proc::ProcError::Parse {
                file: "fdinfo",
                what: format!("fd {fd}: pidfd Pid"),
            })?;
    // PIDFD_THREAD (O_EXCL in the flags): a pidfd of one thread.
    let flags = field("flags:")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0);
    if flags & libc::O_EXCL as u32 != 0 {
        return Err(unsupported(fd, "a pidfd of a single thread (PIDFD_THREAD)"));
    }
    if target <= 0 {
        return Err(unsupported(
            fd,
            "a pidfd of a process that has exited and been reaped",
        ));
    }
    let stat = proc::parse_stat(&proc::read(target, "stat")?)?;
    let zombie_child = stat.state == 'Z' && stat.ppid == pid.as_raw();
    let ours = target == pid.as_raw() || members.contains(&target) || zombie_child;
    if !ours && !judged_later {
        return Err(DumpError::Unsupported(format!(
            "fd {fd}: a pidfd of pid {target}, which is outside the process{} (dump with --tree \
             to take its children along)",
            if members.is_empty() { "" } else { " tree" }
        )));
    }
    let ns_pid = proc::parse_status(&proc::read(target, "status")?)?.ns_pid;
    Ok(FdKind::Pidfd { pid: ns_pid })
}

/// Fills in each socket (one per open file description: a dup is not examined again).
fn examine_sockets(pid: Pid, out: &mut [FdState], socks: &mut SocketDump) -> Result<(), DumpError> {
    let list: Vec<(i32, u64)> = out
        .iter()
        .filter_map(|f| match &f.kind {
            FdKind::Socket(s) => Some((f.fd, s.ino)),
            _ => None,
        })
        .collect();
    let mut states = sockets::collect(pid, &list, socks)?.into_iter();
    for f in out.iter_mut() {
        if let FdKind::Socket(s) = &mut f.kind
            && let Some(state) = states.next()
        {
            **s = state;
        }
    }
    Ok(())
}

/// Whether `path` (a `/proc/PID/fd/N` link) is on the mqueue file system: a POSIX message
/// queue (`mq_open`), whose link shows its name as if it were a file at `/`.
fn is_mqueue(path: &str) -> bool {
    const MQUEUE_MAGIC: u64 = 0x1980_0202;
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as u64 == MQUEUE_MAGIC)
}

/// Every open descriptor of `pid`, refusing kinds not supported yet. Contents (pipe queues,
/// deleted files) are left empty: [`capture`] fills them while the process is frozen.
/// Sockets are examined as `socks` says (classified only, or captured).
///
/// `members` are the other processes of a dumped tree: a pipe only they hold is local.
pub fn collect_fds(
    pid: Pid,
    max_deleted_file_size: u64,
    socks: &mut SocketDump,
    members: &[i32],
) -> Result<Vec<FdState>, DumpError> {
    let dir = format!("/proc/{pid}/fd");
    let read_err = |source| proc::ProcError::Read {
        path: dir.clone().into(),
        source,
    };
    let mut fds: Vec<i32> = std::fs::read_dir(&dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let mut out = Vec::with_capacity(fds.len());
    // (st_dev, st_ino) of what each descriptor points to: descriptors of one open file
    // description always share it.
    let mut inodes = Vec::with_capacity(fds.len());
    let mut sizes = Vec::with_capacity(fds.len());
    // Pseudo-terminal pairs whose master is in the dump: their slaves are opened on the pair
    // made anew. Looked for only once a slave is found (a scan of every member's descriptors).
    let masters = std::cell::OnceCell::new();
    for fd in fds {
        let link_path = format!("{dir}/{fd}");
        let Ok(target) = std::fs::read_link(&link_path) else {
            continue;
        }; // closed meanwhile
        let Ok(meta) = std::fs::metadata(&link_path) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let text = proc::read(pid.as_raw(), &format!("fdinfo/{fd}"))?;
        let info = proc::parse_fdinfo(&text)?;
        let unsupported = |what: &str| unsupported(fd, what);
        if target.starts_with('/') && is_mqueue(&link_path) {
            return Err(unsupported(&format!(
                "a POSIX message queue ({})",
                target.strip_suffix(" (deleted)").unwrap_or(&target)
            )));
        }
        let kind = if let Some(rest) = target.strip_prefix("anon_inode:") {
            if rest == "[eventpoll]" {
                FdKind::Epoll {
                    targets: info.epoll.clone(),
                }
            } else if rest == "[pidfd]" {
                pidfd(pid, fd, &text, members, socks.peers_judged_later)?
            } else {
                match fdkinds::anon_kind(pid, fd, rest, &text)? {
                    Some(kind) => kind,
                    None => return Err(unsupported(rest.trim_matches(['[', ']']))),
                }
            }
        } else if let Some(ino) = target
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
        {
            // Examined below, once descriptors sharing a socket are known.
            FdKind::Socket(Box::new(sockets::unexamined(
                ino.parse()
                    .map_err(|_| unsupported(&format!("socket {target:?}")))?,
            )))
        } else if let Some(ino) = target
            .strip_prefix("pipe:[")
            .and_then(|r| r.strip_suffix(']'))
        {
            FdKind::Pipe {
                ino: ino
                    .parse()
                    .map_err(|_| unsupported(&format!("pipe {target:?}")))?,
            }
        } else if fdkinds::memfd_name(&target).is_some() {
            if let Some(what) = fdkinds::memfd_problem(&link_path) {
                return Err(unsupported(&what));
            }
            FdKind::Memfd {
                ino: meta.ino(),
                pos: info.pos,
            }
        } else if let Some(path) = target
            .strip_suffix(" (deleted)")
            .filter(|_| meta.nlink() == 0)
        {
            let ft = meta.file_type();
            let node = if ft.is_file() {
                // What travels: the data, not the holes.
                let stored = meta.size().min(meta.blocks().saturating_mul(512));
                if stored > max_deleted_file_size {
                    return Err(DumpError::DeletedFileTooLarge {
                        fd,
                        path: path.to_string(),
                        size: stored,
                        max: max_deleted_file_size,
                    });
                }
                DeletedNode::Regular {
                    size: meta.size(),
                    extents: Vec::new(),
                }
            } else if ft.is_fifo() {
                DeletedNode::Fifo { queue: None }
            } else if ft.is_char_device() {
                if is_tty_major(u64::from(libc::major(meta.rdev()))) {
                    return Err(unsupported(&format!(
                        "{target}, a terminal device node deleted while open,"
                    )));
                }
                DeletedNode::CharDevice { rdev: meta.rdev() }
            } else if ft.is_dir() {
                DeletedNode::Directory
            } else {
                let what = if ft.is_block_device() {
                    "a block device node"
                } else {
                    "a socket file"
                };
                return Err(unsupported(&format!(
                    "{target}, {what} deleted while open,"
                )));
            };
            FdKind::DeletedFile {
                path: path.to_string(),
                ino: meta.ino(),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                pos: info.pos,
                atime_ns: meta
                    .atime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(meta.atime_nsec()),
                mtime_ns: meta
                    .mtime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(meta.mtime_nsec()),
                node,
            }
        } else if !target.starts_with('/') {
            return Err(unsupported(&format!("{target:?}")));
        } else {
            let mut identity =
                identity_of(&link_path).map_err(|e| unsupported(&format!("{target} ({e})")))?;
            // A file of the process's own /proc directory is its own, whatever its PID is
            // at restore: kept as /proc/self/…, which the restored task opens itself. Its
            // inode, size and times are the process's, not the file's: only its type kept.
            let own = format!("/proc/{pid}");
            let path = match target.strip_prefix(&own) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    identity = crate::state::FileIdentity {
                        mode: identity.mode,
                        ..Default::default()
                    };
                    format!("/proc/self{rest}")
                }
                _ => target.clone(),
            };
            let ft = meta.file_type();
            let file = FileRef { path, identity };
            if ft.is_file() {
                FdKind::File {
                    file,
                    pos: info.pos,
                }
            } else if ft.is_dir() {
                FdKind::Directory {
                    file,
                    pos: info.pos,
                }
            } else if ft.is_char_device() {
                let major = u64::from(libc::major(identity.rdev));
                if pty::is_ptmx(&target) {
                    let index = pty::index_from_fdinfo(&text).ok_or_else(|| {
                        unsupported("a pseudo-terminal master without tty-index in its fdinfo")
                    })?;
                    // Filled in by `capture`.
                    FdKind::PtyMaster(crate::state::PtyState {
                        index,
                        termios: Default::default(),
                        winsize: [0; 4],
                        packet: false,
                        locked: false,
                        hangup: false,
                        input: Vec::new(),
                        output: Vec::new(),
                    })
                } else if let Some(index) = pty::slave_index(identity.rdev).filter(|i| {
                    masters
                        .get_or_init(|| pty::masters_in(pid, members))
                        .contains(i)
                }) {
                    FdKind::PtySlave { file, index }
                } else if is_tty_major(major) {
                    FdKind::Tty { file }
                } else {
                    FdKind::CharDevice { file }
                }
            } else if ft.is_fifo() {
                FdKind::Fifo { file, queue: None }
            } else if ft.is_symlink() && info.flags & O_PATH_NOFOLLOW == O_PATH_NOFOLLOW {
                // A symbolic link itself, opened `O_PATH | O_NOFOLLOW`: reopened the same way.
                FdKind::File {
                    file,
                    pos: info.pos,
                }
            } else if ft.is_block_device() {
                return Err(unsupported("a block device"));
            } else {
                return Err(unsupported(&target));
            }
        };
        inodes.push((meta.dev(), meta.ino()));
        sizes.push(meta.size().min(meta.blocks().saturating_mul(512)));
        out.push(FdState {
            fd,
            cloexec: info.flags & O_CLOEXEC != 0,
            flags: info.flags & !O_CLOEXEC,
            kind,
            // Asked of the process itself, later.
            owner: Default::default(),
        });
    }
    mark_dups(pid, &mut out, &inodes)?;
    examine_sockets(pid, &mut out, socks)?;
    // A deleted FIFO is made anew at restore: another process holding it would be left on
    // the old one.
    let deleted_fifos: HashSet<String> = out
        .iter()
        .filter_map(|f| match &f.kind {
            FdKind::DeletedFile {
                path,
                node: DeletedNode::Fifo { .. },
                ..
            } => Some(format!("{path} (deleted)")),
            _ => None,
        })
        .collect();
    if let Some(held) = held_outside(pid, &deleted_fifos, members)
        .into_iter()
        .next()
    {
        let fd = out
            .iter()
            .find(|f| matches!(&f.kind, FdKind::DeletedFile { path, .. } if format!("{path} (deleted)") == held))
            .map_or(-1, |f| f.fd);
        return Err(unsupported(
            fd,
            &format!("the FIFO {held}, deleted while open and held by another process too,"),
        ));
    }
    mark_local_pipes(pid, &mut out, members);
    if !socks.peers_judged_later {
        let slaves: HashSet<String> = out
            .iter()
            .filter_map(|f| match &f.kind {
                FdKind::PtyMaster(p) => Some(format!("/dev/pts/{}", p.index)),
                _ => None,
            })
            .collect();
        pty::check_outside(pid, members, &out, &held_outside(pid, &slaves, members))?;
    }
    // Refused early on the sizes; `capture` checks again on what it actually read.
    let deleted: u64 = out
        .iter()
        .zip(&sizes)
        .filter(|(f, _)| matches!(f.kind, FdKind::DeletedFile { .. }))
        .map(|(_, s)| s)
        .sum();
    if deleted > STORED_BUDGET {
        return Err(DumpError::StoredContentsTooLarge {
            total: deleted,
            max: STORED_BUDGET,
        });
    }
    resolve_epoll(pid, &mut out)?;
    Ok(out)
}

/// Turns every descriptor that is the same open file description as a lower one into
/// [`FdKind::Dup`]. Only descriptors of the same inode can share a description, so `kcmp`
/// runs only within those groups, and only against each group's distinct descriptions.
fn mark_dups(pid: Pid, fds: &mut [FdState], inodes: &[(u64, u64)]) -> Result<(), DumpError> {
    let mut owners: HashMap<(u64, u64), Vec<i32>> = HashMap::new();
    for (f, key) in fds.iter_mut().zip(inodes) {
        let group = owners.entry(*key).or_default();
        let mut of = None;
        for &other in group.iter() {
            let same = sys::same_file_description(pid, other, f.fd)
                .map_err(|e| DumpError::Unsupported(format!("fd {}: kcmp failed ({e}), so shared descriptions cannot be told apart; not supported", f.fd)))?;
            if same {
                of = Some(other);
                break;
            }
        }
        match of {
            Some(of) => f.kind = FdKind::Dup { of },
            None => group.push(f.fd),
        }
    }
    Ok(())
}

/// Link targets (`pipe:[INO]`, FIFO paths) among `wanted` that some other process holds open:
/// a process other than `pid`, the `members` of its tree and ferry itself.
fn held_outside(pid: Pid, wanted: &HashSet<String>, members: &[i32]) -> HashSet<String> {
    if wanted.is_empty() {
        return HashSet::new();
    }
    let outside = |holders: &HashMap<String, Vec<i32>>, w: &str| {
        holders.get(w).is_some_and(|hs| {
            hs.iter()
                .any(|&h| h != pid.as_raw() && !members.contains(&h))
        })
    };
    OUTSIDE_SCAN.with(|cell| {
        let mut cache = cell.borrow_mut();
        let scan = cache.get_or_insert_with(OutsideScan::start);
        // Only as far as it takes to find a holder outside for each: a pipe's other end is
        // most often held by a recent process (the parent, the shell), read first.
        while wanted.iter().any(|w| !outside(&scan.holders, w)) && scan.step() {}
        wanted
            .iter()
            .filter(|w| outside(&scan.holders, w))
            .cloned()
            .collect()
    })
}

thread_local! {
    /// Who holds which pipe and path, from one scan of every process's descriptors per dump
    /// (a tree's members each ask; one scan each made a 100-process dump quadratic), made as
    /// far as the questions asked so far needed.
    static OUTSIDE_SCAN: std::cell::RefCell<Option<OutsideScan>> =
        const { std::cell::RefCell::new(None) };
}

/// The processes other than `pid`, the `members` of its tree and ferry that hold `target`
/// (`pipe:[INO]`, a path) open.
pub(super) fn holders_outside(pid: Pid, target: &str, members: &[i32]) -> Vec<i32> {
    OUTSIDE_SCAN.with(|cell| {
        let mut cache = cell.borrow_mut();
        let scan = cache.get_or_insert_with(OutsideScan::start);
        while scan.step() {}
        scan.holders
            .get(target)
            .map(|hs| {
                hs.iter()
                    .copied()
                    .filter(|&h| h != pid.as_raw() && !members.contains(&h))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Forgets the scan of [`held_outside`]: every dump (or read-back) starts with a fresh one.
pub fn forget_outside_scan() {
    OUTSIDE_SCAN.with(|cell| cell.borrow_mut().take());
}

/// The pipe and path descriptor targets of every process but ferry, with their holders, read
/// one process at a time, newest first.
struct OutsideScan {
    /// Processes not read yet, the next one last.
    left: Vec<i32>,
    holders: HashMap<String, Vec<i32>>,
}

impl OutsideScan {
    fn start() -> Self {
        let me = std::process::id() as i32;
        let mut left: Vec<i32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|p| p.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| p != me)
            .collect();
        left.sort_unstable();
        OutsideScan {
            left,
            holders: HashMap::new(),
        }
    }

    /// Reads the next process's descriptors; false when none is left.
    fn step(&mut self) -> bool {
        let Some(other) = self.left.pop() else {
            return false;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{other}/fd")) else {
            return true;
        };
        for fd in fds.flatten() {
            if let Ok(l) = std::fs::read_link(fd.path())
                && let Some(l) = l.to_str()
                && (l.starts_with("pipe:") || l.starts_with('/'))
            {
                let holders = self.holders.entry(l.to_string()).or_default();
                if holders.last() != Some(&other) {
                    holders.push(other);
                }
            }
        }
        true
    }
}

/// A pipe that no other process holds is restored as a new pipe with its bytes
/// ([`FdKind::LocalPipe`]); one that another process holds stays [`FdKind::Pipe`] and is
/// reopened through that process at restore, its bytes staying in the live pipe.
fn mark_local_pipes(pid: Pid, fds: &mut [FdState], members: &[i32]) {
    let wanted: HashSet<String> = fds
        .iter()
        .filter_map(|f| {
            if let FdKind::Pipe { ino } = f.kind {
                Some(format!("pipe:[{ino}]"))
            } else {
                None
            }
        })
        .collect();
    let outside = held_outside(pid, &wanted, members);
    for f in fds.iter_mut() {
        if let FdKind::Pipe { ino } = f.kind
            && !outside.contains(&format!("pipe:[{ino}]"))
        {
            f.kind = FdKind::LocalPipe { ino, queue: None };
        }
    }
}

/// `EPOLLET`, `EPOLLONESHOT`, `EPOLLWAKEUP`, `EPOLLEXCLUSIVE`: the bits of a watch's `events`
/// that are not events (`EP_PRIVATE_BITS`).
pub const EPOLLET: u32 = 1 << 31;
/// See [`EPOLLET`].
pub const EPOLLONESHOT: u32 = 1 << 30;
/// See [`EPOLLET`].
pub const EPOLLEXCLUSIVE: u32 = 1 << 28;
/// See [`EPOLLET`].
pub const EPOLL_PRIVATE_BITS: u32 = EPOLLET | EPOLLONESHOT | (1 << 29) | EPOLLEXCLUSIVE;

/// A one-shot watch that fired: the kernel cleared its events, leaving only the private bits.
pub fn epoll_disarmed(events: u32) -> bool {
    events & EPOLLONESHOT != 0 && events & !EPOLL_PRIVATE_BITS == 0
}

/// Finds the descriptor that holds each watched file of every epoll instance, and refuses
/// what cannot be rebuilt. An entry is keyed by the file and the number it was added under;
/// it stays while the file is open, even when that number was closed or given to another file
/// since (which may then be added too: two entries under one number). `kcmp(KCMP_EPOLL_TFD)`
/// compares each descriptor with the file of an entry (the `toff`-th one under its number, in
/// the order fdinfo lists them): the number itself is tried first, then every other one.
fn resolve_epoll(pid: Pid, fds: &mut [FdState]) -> Result<(), DumpError> {
    let numbers: Vec<i32> = fds.iter().map(|f| f.fd).collect();
    let open: HashSet<i32> = numbers.iter().copied().collect();
    for f in fds.iter_mut() {
        let efd = f.fd;
        let FdKind::Epoll { targets } = &mut f.kind else {
            continue;
        };
        // How many entries under each number came before.
        let mut seen: HashMap<i32, u32> = HashMap::new();
        for t in targets.iter_mut() {
            let tfd = t.fd;
            let count = seen.entry(tfd).or_default();
            let toff = *count;
            *count += 1;
            let candidates =
                std::iter::once(tfd).chain(numbers.iter().copied().filter(|&n| n != tfd));
            let mut found = None;
            for c in candidates.filter(|&c| c != efd && open.contains(&c)) {
                match sys::epoll_target_is(pid, c, efd, tfd, toff) {
                    Ok(true) => {
                        found = Some(c);
                        break;
                    }
                    Ok(false) | Err(nix::errno::Errno::EBADF) => {}
                    Err(e) => {
                        return Err(DumpError::Unsupported(format!(
                            "fd {efd}: epoll entry for fd {tfd}: kcmp(KCMP_EPOLL_TFD) failed \
                             ({e}); the kernel needs CONFIG_CHECKPOINT_RESTORE"
                        )));
                    }
                }
            }
            let Some(file_fd) = found else {
                return Err(DumpError::Unsupported(format!(
                    "fd {efd}: epoll watches a file added as fd {tfd} that no descriptor of the \
                     process holds any more (only a mapping, another process or a message in \
                     flight keeps it open); not supported yet"
                )));
            };
            if file_fd != tfd && tfd == efd {
                return Err(DumpError::Unsupported(format!(
                    "fd {efd}: epoll watches a file under the instance's own number {tfd}; not \
                     supported yet"
                )));
            }
            t.file_fd = file_fd;
        }
    }
    Ok(())
}

/// A watch the dump took an event from, to put back on its instance's ready list.
#[derive(Debug, Clone, Copy)]
pub struct Requeue {
    /// The epoll instance.
    pub epfd: i32,
    /// The watch.
    pub target: crate::state::EpollTarget,
}

/// Which edge-triggered watches have an event the process has not taken yet. Nothing shows
/// it but `epoll_wait`, which takes the events: so the dump takes them on a copy of the
/// instance (`pidfd_getfd`, the same instance), notes them, and returns the watches whose
/// event must be put back (edge-triggered and one-shot ones; a level-triggered one is put
/// back by the kernel itself) with `EPOLL_CTL_MOD`, which the caller injects into the
/// process (a watch is keyed by the process's descriptor number). Runs while the process is
/// frozen. Refused where an event could not be told apart or put back: two such watches with
/// one data word; a watch on a file whose number was closed; an instance watched
/// edge-triggered by another instance (putting events back would be a new edge there).
/// A fired one-shot watch is made again at restore by firing it, so its file must be ready
/// for some event.
pub fn epoll_edges(pid: Pid, fds: &mut [FdState]) -> Result<Vec<Requeue>, DumpError> {
    let dups: HashMap<i32, i32> = fds
        .iter()
        .filter_map(|f| match f.kind {
            FdKind::Dup { of } => Some((f.fd, of)),
            _ => None,
        })
        .collect();
    let resolve = |fd: i32| dups.get(&fd).copied().unwrap_or(fd);
    // Epoll instances watched edge-triggered by another.
    let mut watched_et = HashSet::new();
    for f in fds.iter() {
        if let FdKind::Epoll { targets } = &f.kind {
            for t in targets.iter().filter(|t| t.events & EPOLLET != 0) {
                watched_et.insert(resolve(t.file_fd));
            }
        }
    }
    let mut pidfd = None;
    // First every check, so that a refusal comes before any event is taken: the copies of
    // the instances to read.
    let mut to_read = Vec::new();
    for (i, f) in fds.iter().enumerate() {
        let epfd = f.fd;
        let FdKind::Epoll { targets } = &f.kind else {
            continue;
        };
        let fail = |what: String| DumpError::Unsupported(format!("fd {epfd}: {what}"));
        let edges = targets
            .iter()
            .any(|t| t.events & (EPOLLET | EPOLLONESHOT) != 0);
        if !edges {
            continue;
        }
        let pidfd = match &mut pidfd {
            Some(p) => p,
            None => pidfd.insert(
                sys::pidfd_open(pid).map_err(|e| fail(format!("pidfd_open failed ({e})")))?,
            ),
        };
        let copy = |fd: i32| {
            sys::pidfd_getfd(pidfd.as_fd(), fd)
                .map_err(|e| fail(format!("copying fd {fd} failed ({e}); not supported")))
        };
        for t in targets.iter().filter(|t| epoll_disarmed(t.events)) {
            let file = copy(t.file_fd)?;
            if ready_for(&file)? == 0 {
                return Err(fail(format!(
                    "a fired EPOLLONESHOT watch of fd {} is made again by firing it, and that \
                     descriptor is ready for no event now; not supported yet",
                    t.fd
                )));
            }
        }
        let own = copy(epfd)?;
        if ready_for(&own)? & libc::POLLIN == 0 {
            // Nothing on the ready list is ready: no event to take.
            continue;
        }
        if watched_et.contains(&epfd) {
            return Err(fail(
                "an epoll instance with events ready, watched edge-triggered by another epoll \
                 instance (nested epoll): its events cannot be read without a new edge there; \
                 not supported yet"
                    .into(),
            ));
        }
        // The first watch with each data word.
        let mut by_data: HashMap<u64, &crate::state::EpollTarget> = HashMap::new();
        for t in targets {
            let taken = t.events & (EPOLLET | EPOLLONESHOT) != 0;
            if taken && t.file_fd != t.fd {
                return Err(fail(format!(
                    "an edge-triggered or one-shot epoll watch added as fd {}, a number that \
                     no longer holds its file, while events are ready; not supported yet",
                    t.fd
                )));
            }
            let u = *by_data.entry(t.data).or_insert(t);
            if !std::ptr::eq(u, t) && (taken || u.events & (EPOLLET | EPOLLONESHOT) != 0) {
                return Err(fail(format!(
                    "epoll watches of fd {} and fd {} share the data word {:#x} while events are \
                     ready: which one an edge-triggered or one-shot event is for cannot be told; \
                     not supported yet",
                    u.fd, t.fd, t.data
                )));
            }
        }
        to_read.push((i, own));
    }
    // Then the events are taken, noted, and listed to be put back.
    let mut requeue = Vec::new();
    for (i, own) in to_read {
        let epfd = fds[i].fd;
        let FdKind::Epoll { targets } = &mut fds[i].kind else {
            continue;
        };
        let ep = nix::sys::epoll::Epoll(own);
        let mut events = vec![nix::sys::epoll::EpollEvent::empty(); targets.len() + 1];
        // Cannot fail on a valid instance and buffer; should it, nothing was taken.
        let n = ep
            .wait(&mut events, nix::sys::epoll::EpollTimeout::ZERO)
            .unwrap_or(0);
        for ev in &events[..n] {
            let Some(t) = targets.iter_mut().find(|t| t.data == ev.data()) else {
                continue;
            };
            if t.events & EPOLLET != 0 {
                t.pending = true;
            }
            if t.events & (EPOLLET | EPOLLONESHOT) != 0 {
                requeue.push(Requeue { epfd, target: *t });
            }
        }
    }
    Ok(requeue)
}

/// The events a descriptor is ready for now (`poll` with every event asked, no wait).
fn ready_for(fd: &impl AsFd) -> Result<i16, DumpError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let all = PollFlags::POLLIN
        | PollFlags::POLLPRI
        | PollFlags::POLLOUT
        | PollFlags::POLLRDNORM
        | PollFlags::POLLRDBAND
        | PollFlags::POLLWRNORM
        | PollFlags::POLLWRBAND
        | PollFlags::from_bits_retain(0x400 | 0x2000); // POLLMSG, POLLRDHUP
    let mut p = [PollFd::new(fd.as_fd(), all)];
    poll(&mut p, PollTimeout::ZERO)
        .map_err(|e| DumpError::Unsupported(format!("poll of an epoll target failed ({e})")))?;
    Ok(p[0].revents().map_or(0, |r| r.bits()) & !libc::POLLNVAL)
}

/// Reads what travels with the descriptors, while the process is frozen: queued pipe and FIFO
/// bytes (copied with `tee`, never consumed, so a failed dump loses nothing), the contents
/// of files deleted while open, and the locks held. Returns the locks.
pub fn capture(
    pid: Pid,
    fds: &mut [FdState],
    members: &[i32],
) -> Result<Vec<LockState>, DumpError> {
    capture_pipes(pid, fds, members)?;
    pty::capture_all(pid, fds, members)?;
    // Locks first: reading a deleted file that has a write lease would break the lease.
    let locks = collect_locks(pid, fds)?;
    for l in locks
        .iter()
        .filter(|l| l.kind == LockKind::Lease && l.write)
    {
        if let Some(FdKind::DeletedFile { path, .. }) =
            fds.iter().find(|f| f.fd == l.fd).map(|f| &f.kind)
        {
            return Err(unsupported(
                l.fd,
                &format!("a write lease on {path} (deleted), a file deleted while open,"),
            ));
        }
    }
    capture_deleted(pid, fds)?;
    Ok(locks)
}

fn capture_pipes(pid: Pid, fds: &mut [FdState], members: &[i32]) -> Result<(), DumpError> {
    let fifo_paths: HashSet<String> = fds
        .iter()
        .filter_map(|f| {
            if let FdKind::Fifo { file, .. } = &f.kind {
                Some(file.path.clone())
            } else {
                None
            }
        })
        .collect();
    let fifos_outside = held_outside(pid, &fifo_paths, members);
    // Packet mode (O_DIRECT) keeps write boundaries that a restore would merge.
    let packet: HashSet<String> = fds
        .iter()
        .filter(|f| f.flags & libc::O_DIRECT as u32 != 0)
        .filter_map(pipe_key)
        .collect();
    let mut seen = HashSet::new();
    for f in fds.iter_mut() {
        let Some(key) = pipe_key(f) else { continue };
        let local = match &f.kind {
            FdKind::LocalPipe { .. } | FdKind::DeletedFile { .. } => true,
            FdKind::Fifo { file, .. } => !fifos_outside.contains(&file.path),
            _ => false,
        };
        // The lowest descriptor of each pipe carries its queue.
        if !local || !seen.insert(key.clone()) {
            continue;
        }
        let q = read_queue(pid, f.fd)?;
        if !q.data.is_empty() && packet.contains(&key) {
            return Err(unsupported(
                f.fd,
                "a packet-mode pipe (O_DIRECT) with queued data",
            ));
        }
        match &mut f.kind {
            FdKind::LocalPipe { queue, .. }
            | FdKind::Fifo { queue, .. }
            | FdKind::DeletedFile {
                node: DeletedNode::Fifo { queue },
                ..
            } => *queue = Some(q),
            _ => {}
        }
    }
    Ok(())
}

/// What identifies a pipe among the descriptors: its inode or its FIFO path.
fn pipe_key(f: &FdState) -> Option<String> {
    match &f.kind {
        FdKind::LocalPipe { ino, .. } => Some(format!("pipe:[{ino}]")),
        FdKind::Fifo { file, .. } => Some(file.path.clone()),
        FdKind::DeletedFile {
            ino,
            node: DeletedNode::Fifo { .. },
            ..
        } => Some(format!("deleted FIFO {ino}")),
        _ => None,
    }
}

/// The bytes queued in the pipe behind `pid`'s `fd`, left in place: a new read end is opened
/// through `/proc` (whatever end `fd` is), and `tee` copies the queue into a scratch pipe of
/// the same size.
pub(super) fn read_queue(pid: Pid, fd: i32) -> Result<PipeQueue, DumpError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        DumpError::Unsupported(format!(
            "fd {fd}: reading the queued pipe bytes failed ({what}: {e}); not supported"
        ))
    };
    let path = format!("/proc/{pid}/fd/{fd}");
    let src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| failed("open", &e))?;
    let size =
        fcntl(src.as_fd(), FcntlArg::F_GETPIPE_SZ).map_err(|e| failed("F_GETPIPE_SZ", &e))?;
    let queued = sys::fionread(src.as_fd()).map_err(|e| failed("FIONREAD", &e))?;
    let mut data = vec![0u8; queued];
    if queued > 0 {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| failed("pipe2", &e))?;
        fcntl(w.as_fd(), FcntlArg::F_SETPIPE_SZ(size)).map_err(|e| failed("F_SETPIPE_SZ", &e))?;
        let copied = sys::tee(src.as_fd(), w.as_fd(), queued).map_err(|e| failed("tee", &e))?;
        if copied != queued {
            return Err(failed("tee", &format!("{copied} of {queued} bytes copied")));
        }
        File::from(r)
            .read_exact(&mut data)
            .map_err(|e| failed("read", &e))?;
    }
    Ok(PipeQueue {
        size: u32::try_from(size).unwrap_or(u32::MAX),
        data,
    })
}

/// The data of each regular file deleted while open, without its holes, on its lowest
/// descriptor. Read with `O_NOATIME`: the dump must not change the access time it carries.
fn capture_deleted(pid: Pid, fds: &mut [FdState]) -> Result<(), DumpError> {
    let budget = STORED_BUDGET;
    let mut total = 0u64;
    let mut seen = HashSet::new();
    for f in fds.iter_mut() {
        let fd = f.fd;
        match &mut f.kind {
            FdKind::DeletedFile {
                path,
                ino,
                node: DeletedNode::Regular { size, extents },
                ..
            } => {
                if !seen.insert(*ino) {
                    continue;
                }
                let link = format!("/proc/{pid}/fd/{fd}");
                let failed = |e: &dyn std::fmt::Display| {
                    unsupported(fd, &format!("reading {path} (deleted) failed ({e}); it"))
                };
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOATIME | libc::O_CLOEXEC)
                    .open(&link)
                    .or_else(|_| File::open(&link))
                    .map_err(|e| failed(&e))?;
                *extents = fdkinds::read_extents(&file, *size).map_err(|e| failed(&e))?;
                total += extents
                    .iter()
                    .map(|e: &MemfdExtent| e.data.len() as u64)
                    .sum::<u64>();
                if total > budget {
                    return Err(DumpError::StoredContentsTooLarge { total, max: budget });
                }
            }
            FdKind::LocalPipe { queue: Some(q), .. }
            | FdKind::Fifo { queue: Some(q), .. }
            | FdKind::DeletedFile {
                node: DeletedNode::Fifo { queue: Some(q) },
                ..
            } => total += q.data.len() as u64,
            _ => {}
        }
    }
    if total > budget {
        return Err(DumpError::StoredContentsTooLarge { total, max: budget });
    }
    Ok(())
}

/// Locks from each descriptor's `fdinfo`: flock, OFD locks and leases belong to the open file
/// description they are listed on; POSIX locks belong to the process and are listed on every
/// descriptor of the inode, so they are kept once and taken through a descriptor whose
/// access mode allows them.
fn collect_locks(pid: Pid, fds: &[FdState]) -> Result<Vec<LockState>, DumpError> {
    let mut locks = Vec::new();
    let mut posix: BTreeMap<(String, u64, u64, bool), Vec<&FdState>> = BTreeMap::new();
    for f in fds {
        if !matches!(
            f.kind,
            FdKind::File { .. }
                | FdKind::Directory { .. }
                | FdKind::DeletedFile { .. }
                | FdKind::Fifo { .. }
        ) {
            continue;
        }
        let Ok(text) = proc::read(pid.as_raw(), &format!("fdinfo/{}", f.fd)) else {
            continue;
        };
        for l in proc::parse_fdinfo_locks(&text)? {
            let whole = |kind| LockState {
                fd: f.fd,
                kind,
                write: l.write,
                start: 0,
                len: 0,
            };
            let len = l.end.map_or(0, |e| e.saturating_sub(l.start) + 1);
            match (l.kind.as_str(), l.state.as_str()) {
                ("FLOCK", _) => locks.push(whole(LockKind::Flock)),
                ("OFDLCK", _) => locks.push(LockState {
                    kind: LockKind::Ofd,
                    start: l.start,
                    len,
                    ..whole(LockKind::Ofd)
                }),
                ("POSIX", _) => posix
                    .entry((l.inode.clone(), l.start, len, l.write))
                    .or_default()
                    .push(f),
                ("LEASE", "ACTIVE") => locks.push(whole(LockKind::Lease)),
                ("LEASE", _) => {
                    return Err(unsupported(
                        f.fd,
                        &format!("a lease being broken ({})", l.line),
                    ));
                }
                _ => return Err(unsupported(f.fd, &format!("the lock {:?}", l.line))),
            }
        }
    }
    for ((_, start, len, write), holders) in posix {
        let fits = |f: &&FdState| {
            let acc = f.flags & libc::O_ACCMODE as u32;
            acc == libc::O_RDWR as u32
                || acc
                    == if write {
                        libc::O_WRONLY as u32
                    } else {
                        libc::O_RDONLY as u32
                    }
        };
        let Some(f) = holders.iter().copied().find(fits) else {
            let fd = holders.first().map_or(-1, |f| f.fd);
            return Err(unsupported(
                fd,
                "a POSIX lock with no descriptor open in a fitting mode",
            ));
        };
        locks.push(LockState {
            fd: f.fd,
            kind: LockKind::Posix,
            write,
            start,
            len,
        });
    }
    Ok(locks)
}

/// Temporary directories whose files may be a process's own state. A file under
/// `/run/user` is below the user's directory (`/run/user/UID`).
const TEMP_DIRS: [&str; 4] = ["/tmp", "/var/tmp", "/dev/shm", "/run/user"];

/// Largest file carried in the image (data stored, holes left out); a bigger one is left
/// where it is, and the restore needs it there as before.
pub const MAX_CARRIED_FILE: u64 = 8 << 20;

/// Most bytes of carried files in one image.
const MAX_CARRIED_TOTAL: u64 = 16 << 20;

/// The temporary directory `path` lies under (for `/run/user`, the user's own directory).
fn temp_root(path: &str) -> Option<String> {
    let root = TEMP_DIRS
        .iter()
        .find(|d| path.starts_with(&format!("{d}/")))?;
    if *root == "/run/user" {
        let uid = path["/run/user/".len()..].split('/').next()?;
        return Some(format!("/run/user/{uid}"));
    }
    Some(root.to_string())
}

/// The files that belong to the process's state (see [`CarriedFile`]): regular files it maps
/// shared or holds open for writing, under a temporary directory, owned by its effective uid
/// `euid`, with one link, of at most [`MAX_CARRIED_FILE`] bytes of data. Read while the
/// process is frozen, with `O_NOATIME`.
pub fn carried(
    vmas: &[VmaState],
    fds: &[FdState],
    locks: &[LockState],
    euid: u32,
) -> Result<Vec<CarriedFile>, DumpError> {
    // Opening a file that has a lease breaks the lease: such files are left where they are.
    let leased: HashSet<(u64, u64)> = locks
        .iter()
        .filter(|l| l.kind == LockKind::Lease)
        .filter_map(|l| match &fds.iter().find(|f| f.fd == l.fd)?.kind {
            FdKind::File { file, .. } => Some((file.identity.dev, file.identity.ino)),
            _ => None,
        })
        .collect();
    let mut candidates: Vec<&FileRef> = Vec::new();
    for v in vmas {
        if let VmaKind::File(f) = &v.kind
            && v.shared
        {
            candidates.push(f);
        }
    }
    for f in fds {
        if let FdKind::File { file, .. } = &f.kind
            && f.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
        {
            candidates.push(file);
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut total = 0u64;
    for f in candidates {
        if !seen.insert((f.identity.dev, f.identity.ino))
            || leased.contains(&(f.identity.dev, f.identity.ino))
        {
            continue;
        }
        let Some(root) = temp_root(&f.path) else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(&f.path) else {
            continue;
        };
        let stored = meta.size().min(meta.blocks().saturating_mul(512));
        if !meta.file_type().is_file()
            || (meta.dev(), meta.ino()) != (f.identity.dev, f.identity.ino)
            || meta.nlink() != 1
            || meta.uid() != euid
            || stored > MAX_CARRIED_FILE
            || total + stored > MAX_CARRIED_TOTAL
        {
            continue;
        }
        let failed = |e: &dyn std::fmt::Display| {
            DumpError::Unsupported(format!(
                "{}: reading the file the process keeps writing failed ({e}); not supported",
                f.path
            ))
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&f.path)
            .or_else(|_| File::open(&f.path))
            .map_err(|e| failed(&e))?;
        let now = file.metadata().map_err(|e| failed(&e))?;
        if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
            continue;
        }
        let extents = fdkinds::read_extents(&file, now.size()).map_err(|e| failed(&e))?;
        total += extents.iter().map(|e| e.data.len() as u64).sum::<u64>();
        let mut dirs = Vec::new();
        let mut at = std::path::Path::new(&f.path).parent();
        while let Some(d) = at.and_then(|d| d.to_str()).filter(|d| d.len() > root.len()) {
            let m = std::fs::symlink_metadata(d).map_err(|e| failed(&e))?;
            dirs.push(CarriedDir {
                path: d.to_string(),
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            });
            at = std::path::Path::new(d).parent();
        }
        dirs.reverse();
        out.push(CarriedFile {
            file: FileRef {
                path: f.path.clone(),
                identity: identity_of(&f.path).map_err(|e| failed(&e))?,
            },
            mode: now.mode() & 0o7777,
            uid: now.uid(),
            gid: now.gid(),
            extents,
            dirs,
        });
    }
    Ok(out)
}
