//! File descriptors: checked against the filesystem before anything is created, then opened
//! inside the task at their numbers, with offsets and flags; locks are taken back last.
//!
//! Contents travel from outside: the restorer writes queued pipe bytes and deleted files'
//! contents through `/proc/TASK/fd/N` of descriptors the task has just created.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use nix::fcntl::{FcntlArg, fcntl};

use super::RestoreError;
use super::fdkinds::{self, Memfds};
use super::inject::Injector;
use super::pty::Ptys;
use super::sockets;
use crate::dump::identity_of;
use crate::state::{
    DeletedNode, EpollTarget, FanotifyTarget, FdKind, FileRef, LockKind, LockState, PipeQueue,
    ProcessState, VmaKind,
};

/// How one descriptor will be recreated.
#[derive(Debug, Clone)]
enum Action {
    /// Keep the restoring command's own descriptor (fds 0–2 with `--stdio inherit`).
    Inherit,
    /// `openat` this path with these flags, then seek.
    Open {
        path: String,
        flags: u32,
        pos: Option<u64>,
    },
    /// A fresh epoll instance with this interest list.
    Epoll(Vec<EpollTarget>),
    /// `dup3` of a descriptor restored before it.
    Dup(i32),
    /// One end of a pipe the restore creates (see [`FdPlan::pipes`]).
    PipeEnd { ino: u64, write: bool, flags: u32 },
    /// A FIFO reopened by path, never blocking (the restorer holds it open meanwhile).
    Fifo { path: String, flags: u32 },
    /// A file, FIFO, device node or directory deleted while open, made again and unlinked
    /// (its contents and attributes are in the state), or, when an earlier descriptor `same_as`
    /// holds the same deleted object, reopened through it.
    Deleted {
        path: String,
        flags: u32,
        pos: u64,
        same_as: Option<i32>,
    },
    /// The socket with this inode, built by ferry, copied in with `pidfd_getfd`.
    Socket(u64),
    /// The master of a pseudo-terminal pair ferry made anew (by its number at dump time),
    /// copied in with `pidfd_getfd`; the image's status flags are set on it.
    PtyMaster { ours: RawFd, index: u32, flags: u32 },
    /// An eventfd, signalfd, timerfd or inotify instance, made by injected calls.
    Injected { flags: u32, kind: Box<FdKind> },
    /// The description behind descriptor `fd` of tree member `pid`, restored before this
    /// process, taken with `pidfd_getfd`.
    Shared { pid: i32, fd: i32 },
    /// A descriptor of ferry the caller gives in place of the image's (a relay's local
    /// endpoint), copied in with `pidfd_getfd`; the image's status flags are set on it.
    Substitute { ours: RawFd, flags: u32 },
}

/// The descriptors to create, in order, plus warnings for the user.
#[derive(Debug)]
pub struct FdPlan {
    fds: Vec<(i32, bool, Action)>,
    /// Descriptors given something else than the image says, as asked (substitutes, the
    /// restorer's stdio) or with a warning (a pipe nobody holds any more became /dev/null).
    pub replaced_fds: Vec<i32>,
    inherit_stdio: bool,
    /// Pipes to create, each with its buffer and queued bytes.
    pipes: Vec<(u64, Option<PipeQueue>)>,
    /// FIFOs to hold open while the task opens them: path, identity, buffer and bytes.
    fifos: Vec<(FileRef, Option<PipeQueue>)>,
    locks: Vec<LockState>,
    /// The sockets, built before the task exists (it inherits ferry's pidfd).
    sockets: Option<sockets::Built>,
    /// Carried files that were missing and were made again from the image (by this restore
    /// or, for a tree, an earlier member's): new inodes at the same paths.
    pub recreated_files: Vec<String>,
    /// A pidfd of ferry for the substitutes when no socket is built (which brings its own).
    own_pidfd: Option<OwnedFd>,
}

impl FdPlan {
    /// The pidfd of ferry the task inherits, to fetch sockets and substitutes.
    pub(super) fn pidfd(&self) -> Option<RawFd> {
        self.sockets
            .as_ref()
            .map(|b| b.pidfd.as_raw_fd())
            .or(self.own_pidfd.as_ref().map(AsRawFd::as_raw_fd))
    }
}

fn changed(what: String, file: &FileRef) -> Result<(), RestoreError> {
    let now = identity_of(&file.path)
        .map_err(|e| RestoreError::FileChanged(format!("{what}: {}: {e}", file.path)))?;
    same_file(what, file, now)
}

/// [`changed`] for a descriptor of a symbolic link itself (`O_PATH | O_NOFOLLOW`): the link,
/// not what it points to.
fn link_changed(what: String, file: &FileRef) -> Result<(), RestoreError> {
    let m = std::fs::symlink_metadata(&file.path)
        .map_err(|e| RestoreError::FileChanged(format!("{what}: {}: {e}", file.path)))?;
    let mut now = file.identity;
    now.dev = m.dev();
    now.ino = m.ino();
    same_file(what, file, now)
}

fn same_file(
    what: String,
    file: &FileRef,
    now: crate::state::FileIdentity,
) -> Result<(), RestoreError> {
    let then = file.identity;
    if now.dev != then.dev || now.ino != then.ino {
        return Err(RestoreError::FileChanged(format!(
            "{what}: {} is not the file the image was taken from (inode {} then, {} now)",
            file.path, then.ino, now.ino
        )));
    }
    Ok(())
}

/// A live descriptor of some other process holding the pipe `ino`, to reopen it through
/// `/proc/PID/fd/N`; `None` when no process holds it any more.
fn pipe_holder(ino: u64, exclude: i32) -> Option<String> {
    let want = format!("pipe:[{ino}]");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == exclude || pid == std::process::id() as i32 {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return Some(fd.path().to_string_lossy().into_owned());
            }
        }
    }
    None
}

/// What the restorer made for the whole image before the plans: memfds and pseudo-terminal
/// pairs, which the tasks open or take.
#[derive(Debug, Clone, Copy)]
pub struct Made<'a> {
    /// The memfds.
    pub memfds: &'a Memfds,
    /// The pseudo-terminal pairs.
    pub ptys: &'a Ptys,
}

/// Checks that every file the process needs is still the same file, and decides how each
/// descriptor will be recreated.
///
/// `tree_pipes` holds the pipes that join several processes of a tree: the restorer made
/// them and holds both ends (read, write), which the processes reopen through `/proc`.
/// `substitutes` (descriptor number → a descriptor of ferry) take the place of what the image
/// says for those numbers: nothing of theirs is checked or built.
pub fn plan_with(
    state: &ProcessState,
    inherit_stdio: bool,
    tree_pipes: &HashMap<u64, (i32, i32)>,
    made: Made<'_>,
    tree_socks: &mut HashMap<u64, std::os::fd::OwnedFd>,
    substitutes: &HashMap<i32, RawFd>,
    warnings: &mut Vec<String>,
) -> Result<FdPlan, RestoreError> {
    let recreated_files = recreate_carried(state)?;
    let remade = |path: &str| recreated_files.iter().any(|p| p == path);
    let Made { memfds, ptys } = made;
    changed("executable".into(), &state.exe)?;
    for v in &state.mm.vmas {
        if let VmaKind::File(f) = &v.kind
            && !remade(&f.path)
        {
            changed(format!("vma {:#x}-{:#x}", v.start, v.end), f)?;
            let now = identity_of(&f.path)
                .map_err(|e| RestoreError::FileChanged(format!("{}: {e}", f.path)))?;
            if now.size != f.identity.size || now.mtime_ns != f.identity.mtime_ns {
                return Err(RestoreError::FileChanged(format!(
                    "vma {:#x}-{:#x}: {} was modified since the dump (size or mtime differ)",
                    v.start, v.end, f.path
                )));
            }
        }
    }
    let mut fds = Vec::with_capacity(state.fds.len());
    let mut replaced_fds = Vec::new();
    let mut pipes: Vec<(u64, Option<PipeQueue>)> = Vec::new();
    let mut fifos: Vec<(FileRef, Option<PipeQueue>)> = Vec::new();
    // The lowest descriptor of each deleted object (by its inode at dump time).
    let mut deleted_seen: HashMap<u64, i32> = HashMap::new();
    for f in &state.fds {
        let devnull = |why: String, warnings: &mut Vec<String>| {
            warnings.push(format!("fd {}: {why}; it is /dev/null now", f.fd));
            Action::Open {
                path: "/dev/null".into(),
                flags: libc::O_RDWR as u32,
                pos: None,
            }
        };
        let action = if let Some(&ours) = substitutes.get(&f.fd) {
            Action::Substitute {
                ours,
                flags: f.flags,
            }
        } else if inherit_stdio && f.fd <= 2 {
            Action::Inherit
        } else {
            match &f.kind {
                FdKind::File { file, pos } | FdKind::Directory { file, pos } => {
                    // The task's own /proc files are opened by the task itself.
                    let own_proc =
                        file.path == "/proc/self" || file.path.starts_with("/proc/self/");
                    const LINK: u32 = (libc::O_PATH | libc::O_NOFOLLOW) as u32;
                    if f.flags & LINK == LINK && !own_proc {
                        link_changed(format!("fd {}", f.fd), file)?;
                    } else if !remade(&file.path) && !own_proc {
                        changed(format!("fd {}", f.fd), file)?;
                    }
                    Action::Open {
                        path: file.path.clone(),
                        flags: f.flags,
                        pos: Some(*pos),
                    }
                }
                FdKind::CharDevice { file } => {
                    let now = identity_of(&file.path).map_err(|e| {
                        RestoreError::FileChanged(format!("fd {}: {}: {e}", f.fd, file.path))
                    })?;
                    if now.rdev != file.identity.rdev {
                        return Err(RestoreError::FileChanged(format!(
                            "fd {}: {} is another device now",
                            f.fd, file.path
                        )));
                    }
                    Action::Open {
                        path: file.path.clone(),
                        flags: f.flags,
                        pos: None,
                    }
                }
                FdKind::Tty { file } => match identity_of(&file.path) {
                    Ok(now) if now.rdev == file.identity.rdev => Action::Open {
                        path: file.path.clone(),
                        flags: f.flags | libc::O_NOCTTY as u32,
                        pos: None,
                    },
                    _ => devnull(format!("terminal {} is gone", file.path), warnings),
                },
                FdKind::PtyMaster(p) => {
                    let Some(ours) = ptys.master(p.index) else {
                        return Err(RestoreError::Layout(format!(
                            "fd {}: the pseudo-terminal pair /dev/pts/{} was not made",
                            f.fd, p.index
                        )));
                    };
                    Action::PtyMaster {
                        ours,
                        index: p.index,
                        flags: f.flags,
                    }
                }
                FdKind::PtySlave { index, .. } => Action::Open {
                    path: ptys.slave_path(*index).ok_or_else(|| {
                        RestoreError::Layout(format!(
                            "fd {}: /dev/pts/{index} is the slave of no master in the image",
                            f.fd
                        ))
                    })?,
                    flags: f.flags | libc::O_NOCTTY as u32,
                    pos: None,
                },
                FdKind::Pipe { ino } => match pipe_holder(*ino, state.pid) {
                    // Reopening a pipe end through /proc must not block waiting for a peer.
                    Some(path) => Action::Open {
                        path,
                        flags: f.flags | libc::O_NONBLOCK as u32,
                        pos: None,
                    },
                    None => devnull(format!("pipe:[{ino}] has no other end left"), warnings),
                },
                FdKind::Epoll { targets } => Action::Epoll(targets.clone()),
                FdKind::Socket(s) => Action::Socket(s.ino),
                FdKind::Dup { of } => Action::Dup(*of),
                FdKind::LocalPipe { ino, .. } if tree_pipes.contains_key(ino) => {
                    let (r, w) = tree_pipes[ino];
                    let write = f.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32;
                    Action::Open {
                        path: format!(
                            "/proc/{}/fd/{}",
                            std::process::id(),
                            if write { w } else { r }
                        ),
                        flags: f.flags | libc::O_NONBLOCK as u32,
                        pos: None,
                    }
                }
                FdKind::Shared { pid, fd } => Action::Shared { pid: *pid, fd: *fd },
                FdKind::LocalPipe { ino, queue } => {
                    match pipes.iter_mut().find(|(i, _)| i == ino) {
                        Some((_, q)) => *q = q.take().or_else(|| queue.clone()),
                        None => pipes.push((*ino, queue.clone())),
                    }
                    let write = f.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32;
                    Action::PipeEnd {
                        ino: *ino,
                        write,
                        flags: f.flags,
                    }
                }
                FdKind::Fifo { file, queue } => {
                    changed(format!("fd {}", f.fd), file)?;
                    if identity_of(&file.path)
                        .is_ok_and(|now| now.mode & libc::S_IFMT != libc::S_IFIFO)
                    {
                        return Err(RestoreError::FileChanged(format!(
                            "fd {}: {} is no longer a FIFO",
                            f.fd, file.path
                        )));
                    }
                    match fifos.iter_mut().find(|(r, _)| r.path == file.path) {
                        Some((_, q)) => *q = q.take().or_else(|| queue.clone()),
                        None => fifos.push((file.clone(), queue.clone())),
                    }
                    Action::Fifo {
                        path: file.path.clone(),
                        flags: f.flags,
                    }
                }
                FdKind::DeletedFile {
                    path,
                    pos,
                    ino,
                    node,
                    ..
                } => {
                    let same_as = deleted_seen.get(ino).copied();
                    deleted_seen.entry(*ino).or_insert(f.fd);
                    // FIFOs and devices have no offset to seek to.
                    let seekable =
                        matches!(node, DeletedNode::Regular { .. } | DeletedNode::Directory);
                    Action::Deleted {
                        path: path.clone(),
                        flags: f.flags,
                        pos: if seekable { *pos } else { 0 },
                        same_as,
                    }
                }
                FdKind::Inotify { watches } => {
                    for w in watches {
                        changed(format!("fd {}: inotify watch {}", f.fd, w.wd), &w.file)?;
                    }
                    Action::Injected {
                        flags: f.flags,
                        kind: Box::new(f.kind.clone()),
                    }
                }
                FdKind::Fanotify(g) => {
                    for (j, m) in g.marks.iter().enumerate() {
                        let what = format!("fd {}: fanotify mark {j}", f.fd);
                        match &m.target {
                            FanotifyTarget::Inode(file) => changed(what, file)?,
                            FanotifyTarget::Mount { path }
                            | FanotifyTarget::Filesystem { path } => {
                                if !std::path::Path::new(path).is_dir() {
                                    return Err(RestoreError::FileChanged(format!(
                                        "{what}: the mount point {path} is not a directory here"
                                    )));
                                }
                            }
                        }
                    }
                    Action::Injected {
                        flags: f.flags,
                        kind: Box::new(f.kind.clone()),
                    }
                }
                FdKind::Eventfd { .. }
                | FdKind::Signalfd { .. }
                | FdKind::Timerfd(_)
                | FdKind::Pidfd { .. } => Action::Injected {
                    flags: f.flags,
                    kind: Box::new(f.kind.clone()),
                },
                // Replaced below, once the memfds exist.
                FdKind::Memfd { .. } => Action::Inherit,
            }
        };
        let replaced = match &action {
            Action::Substitute { .. } => true,
            Action::Inherit => inherit_stdio && f.fd <= 2,
            Action::Open { path, .. } => {
                path == "/dev/null" && !matches!(f.kind, FdKind::CharDevice { .. })
            }
            _ => false,
        };
        if replaced {
            replaced_fds.push(f.fd);
        }
        fds.push((f.fd, f.cloexec, action));
    }
    // The memfds (made by the restorer before the plans, see `Memfds::create`) give the
    // paths the task opens.
    for ((_, _, action), f) in fds.iter_mut().zip(&state.fds) {
        if let FdKind::Memfd { ino, pos } = f.kind
            && !(inherit_stdio && f.fd <= 2)
            && !substitutes.contains_key(&f.fd)
        {
            let path = memfds.path(ino).ok_or_else(|| {
                RestoreError::Layout(format!(
                    "fd {}: memfd inode {ino} is not in the image",
                    f.fd
                ))
            })?;
            *action = Action::Open {
                path,
                flags: f.flags,
                pos: Some(pos),
            };
        }
    }
    // Sockets last, once every file check passed: building them binds addresses. A
    // substituted socket is not built.
    let sockets = if substitutes.is_empty() {
        sockets::build(state, tree_socks, warnings)?
    } else {
        let mut kept = state.clone();
        kept.fds.retain(|f| !substitutes.contains_key(&f.fd));
        sockets::build(&kept, tree_socks, warnings)?
    };
    let masters = state
        .fds
        .iter()
        .any(|f| matches!(f.kind, FdKind::PtyMaster(_)));
    let own_pidfd = if sockets.is_none() && (!substitutes.is_empty() || masters) {
        Some(
            crate::sys::pidfd_open(nix::unistd::getpid()).map_err(|e| RestoreError::Io {
                what: "pidfd_open of ferry".into(),
                source: e.into(),
            })?,
        )
    } else {
        None
    };
    let mut locks = state.locks.clone();
    locks.retain(|l| !substitutes.contains_key(&l.fd));
    Ok(FdPlan {
        fds,
        replaced_fds,
        inherit_stdio,
        pipes,
        fifos,
        locks,
        sockets,
        own_pidfd,
        recreated_files,
    })
}

/// The carried files this restorer made again: path and (device, inode) of what it made.
static RECREATED: std::sync::Mutex<Vec<(String, (u64, u64))>> = std::sync::Mutex::new(Vec::new());

/// Makes again each carried file of the image that is missing (with the parent directories
/// it lacks), with its contents, mode, owner and mtime. Returns the paths of the carried
/// files that are copies this restorer made (now or for an earlier process of a tree).
fn recreate_carried(state: &ProcessState) -> Result<Vec<String>, RestoreError> {
    let mut out = Vec::new();
    let mut made = RECREATED.lock().unwrap_or_else(|e| e.into_inner());
    for c in &state.carried_files {
        let path = &c.file.path;
        let what = |s: &str| format!("carried file {path}: {s}");
        match std::fs::symlink_metadata(path) {
            Ok(m) => {
                if made
                    .iter()
                    .any(|(p, id)| p == path && *id == (m.dev(), m.ino()))
                {
                    out.push(path.clone());
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(what("stat"))(e)),
        }
        for d in &c.dirs {
            match std::fs::create_dir(&d.path) {
                Ok(()) => {
                    std::os::unix::fs::lchown(&d.path, Some(d.uid), Some(d.gid))
                        .map_err(io_err(what(&format!("chown {}", d.path))))?;
                    std::fs::set_permissions(
                        &d.path,
                        std::os::unix::fs::PermissionsExt::from_mode(d.mode),
                    )
                    .map_err(io_err(what(&format!("chmod {}", d.path))))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(what(&format!("make {}", d.path)))(e)),
            }
        }
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err(what("create")))?;
        for e in &c.extents {
            std::os::unix::fs::FileExt::write_all_at(&f, &e.data, e.offset)
                .map_err(io_err(what("write")))?;
        }
        f.set_len(c.file.identity.size)
            .map_err(io_err(what("set its size")))?;
        std::os::unix::fs::fchown(&f, Some(c.uid), Some(c.gid)).map_err(io_err(what("chown")))?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(c.mode))
            .map_err(io_err(what("chmod")))?;
        let ns = c.file.identity.mtime_ns;
        let mtime = nix::sys::time::TimeSpec::new(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000),
        );
        nix::sys::stat::futimens(f.as_fd(), &nix::sys::time::TimeSpec::UTIME_OMIT, &mtime)
            .map_err(|e| RestoreError::Io {
                what: what("set its mtime"),
                source: e.into(),
            })?;
        let m = f.metadata().map_err(io_err(what("stat")))?;
        made.retain(|(p, _)| p != path);
        made.push((path.clone(), (m.dev(), m.ino())));
        out.push(path.clone());
    }
    Ok(out)
}

/// The order descriptors are made in: a dup after what it duplicates, epoll instances after
/// what they watch (dups included), an epoll instance watching others after them and their
/// dups (by nesting depth).
fn phase(plan: &FdPlan, action: &Action) -> (u8, u32) {
    match action {
        Action::Dup(of) if is_epoll(plan, *of) => (2, 2 * epoll_depth(plan, *of, 0) + 1),
        Action::Epoll(targets) => (2, 2 * epoll_depth_of(plan, targets, 0)),
        Action::Dup(_) => (1, 0),
        _ => (0, 0),
    }
}

fn is_epoll(plan: &FdPlan, fd: i32) -> bool {
    plan.fds
        .iter()
        .any(|(f, _, a)| *f == fd && matches!(a, Action::Epoll(_)))
}

/// How deep the epoll instance at `fd` nests others: 0 for any other descriptor, 1 for an
/// instance watching none. The kernel allows 4 levels; a deeper chain (a damaged image) stops
/// counting.
fn epoll_depth(plan: &FdPlan, fd: i32, level: u32) -> u32 {
    match plan
        .fds
        .iter()
        .find(|(f, _, _)| *f == fd)
        .map(|(_, _, a)| a)
    {
        Some(Action::Dup(of)) if *of != fd => epoll_depth(plan, *of, level),
        Some(Action::Epoll(targets)) => epoll_depth_of(plan, targets, level),
        _ => 0,
    }
}

fn epoll_depth_of(plan: &FdPlan, targets: &[EpollTarget], level: u32) -> u32 {
    if level > 8 {
        return 1;
    }
    1 + targets
        .iter()
        .map(|t| epoll_depth(plan, t.file_fd, level + 1))
        .max()
        .unwrap_or(0)
}

/// Recreates the descriptors inside the task. The task starts with a copy of the restorer's
/// descriptor table; all of it goes except what `--stdio inherit` keeps.
pub fn restore(
    inj: &Injector<'_>,
    plan: &FdPlan,
    state: &ProcessState,
    warnings: &mut Vec<String>,
) -> Result<(), RestoreError> {
    let first_closed = if plan.inherit_stdio { 3 } else { 0 };
    let pidfd = close_inherited(inj, plan, first_closed)?;
    for std in 0..first_closed as i32 {
        if !plan.fds.iter().any(|(fd, _, _)| *fd == std) {
            inj.call("close", libc::SYS_close, [std as u64, 0, 0, 0, 0, 0])?;
        }
    }
    let task = inj.tracee().pid();
    // Temporary descriptors live above every number the process uses, so that putting a
    // descriptor at its number never closes one still needed.
    let spare = plan
        .fds
        .iter()
        .map(|(fd, _, _)| *fd)
        .max()
        .map_or(3, |m| m + 1);
    let pipes = create_pipes(inj, plan, spare)?;
    // Held by the restorer until every FIFO end is open: an end opened without blocking
    // needs a peer, and the queued bytes need a holder.
    let _fifo_holders = hold_fifos(plan)?;

    let mut order: Vec<&(i32, bool, Action)> = plan.fds.iter().collect();
    order.sort_by_key(|(_, _, a)| phase(plan, a));
    let mut ends_used = HashSet::new();
    for (fd, cloexec, action) in order {
        let fd = *fd;
        let err = |what: String| {
            move |e: crate::ptrace::PtraceError| RestoreError::Fd {
                fd,
                what,
                source: Box::new(e.into()),
            }
        };
        let open_flags = |flags: u32| {
            u64::from(flags & !((libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC) as u32))
        };
        let reopen = |path: &str, flags: u32| -> Result<u64, RestoreError> {
            let addr = inj.put_path(path)?;
            inj.call(
                "openat",
                libc::SYS_openat,
                [libc::AT_FDCWD as u64, addr, open_flags(flags), 0, 0, 0],
            )
            .map_err(err(format!("open {path}")))
        };
        // (descriptor to put at `fd`, whether to close it afterwards, status flags to set)
        let (tmp, close_tmp, setfl) = match action {
            Action::Inherit => {
                if *cloexec {
                    inj.call(
                        "fcntl",
                        libc::SYS_fcntl,
                        [
                            fd as u64,
                            libc::F_SETFD as u64,
                            libc::FD_CLOEXEC as u64,
                            0,
                            0,
                            0,
                        ],
                    )
                    .map_err(err("set close-on-exec".into()))?;
                }
                continue;
            }
            Action::Open { path, flags, .. } => {
                // Put back the status flags a reopen through /proc had to change (O_NONBLOCK).
                let setfl = path.starts_with("/proc/").then(|| {
                    state
                        .fds
                        .iter()
                        .find(|f| f.fd == fd)
                        .map_or(*flags, |f| f.flags)
                });
                (reopen(path, *flags)?, true, setfl)
            }
            Action::Epoll(_) => (
                inj.call("epoll_create1", libc::SYS_epoll_create1, [0, 0, 0, 0, 0, 0])
                    .map_err(err("epoll_create1".into()))?,
                true,
                None,
            ),
            Action::Dup(of) => (*of as u64, false, None),
            Action::Socket(ino) => {
                let Some((ours, pidfd)) =
                    plan.sockets.as_ref().and_then(|b| b.fd_of(*ino)).zip(pidfd)
                else {
                    return Err(RestoreError::Layout(format!(
                        "fd {fd}: socket:[{ino}] was not built, or ferry's pidfd is not in the task"
                    )));
                };
                let tmp = inj
                    .call(
                        "pidfd_getfd",
                        libc::SYS_pidfd_getfd,
                        [pidfd, ours as u64, 0, 0, 0, 0],
                    )
                    .map_err(err("pidfd_getfd".into()))?;
                // pidfd_getfd sets close-on-exec; dup3 below sets the image's flag, but when
                // the copy already has the right number it must be cleared here.
                if tmp == fd as u64 && !*cloexec {
                    inj.call(
                        "fcntl",
                        libc::SYS_fcntl,
                        [tmp, libc::F_SETFD as u64, 0, 0, 0, 0],
                    )
                    .map_err(err("clear close-on-exec".into()))?;
                }
                // Status flags were set on ferry's copy: the description is shared.
                (tmp, true, None)
            }
            Action::PipeEnd { ino, write, flags } => {
                let (r, w) = pipes.get(ino).copied().ok_or_else(|| {
                    RestoreError::Layout(format!("fd {fd}: pipe:[{ino}] was not created"))
                })?;
                let end = if *write { w } else { r };
                if ends_used.insert((*ino, *write)) {
                    (end, false, Some(*flags))
                } else {
                    // Another open file description of the same end.
                    (
                        reopen(
                            &format!("/proc/{task}/fd/{end}"),
                            flags | libc::O_NONBLOCK as u32,
                        )?,
                        true,
                        Some(*flags),
                    )
                }
            }
            Action::Fifo { path, flags } => (
                reopen(path, flags | libc::O_NONBLOCK as u32)?,
                true,
                Some(*flags),
            ),
            Action::Deleted {
                path,
                flags,
                pos: _,
                same_as,
            } => {
                let (tmp, setfl) = recreate_deleted(inj, state, fd, path, *flags, *same_as)?;
                (tmp, true, setfl)
            }
            Action::Injected { flags, kind } => {
                (fdkinds::create(inj, fd, *flags, kind)?, true, None)
            }
            Action::Shared { pid, fd: from } => (take_shared(inj, *pid, *from)?, true, None),
            Action::PtyMaster { ours, index, flags } => {
                let Some(pidfd) = pidfd else {
                    return Err(RestoreError::Layout(format!(
                        "fd {fd}: ferry's pidfd is not in the task for the master of /dev/pts/{index}"
                    )));
                };
                let tmp = inj
                    .call(
                        "pidfd_getfd",
                        libc::SYS_pidfd_getfd,
                        [pidfd, *ours as u64, 0, 0, 0, 0],
                    )
                    .map_err(err("pidfd_getfd of the pseudo-terminal master".into()))?;
                if tmp == fd as u64 && !*cloexec {
                    inj.call(
                        "fcntl",
                        libc::SYS_fcntl,
                        [tmp, libc::F_SETFD as u64, 0, 0, 0, 0],
                    )
                    .map_err(err("clear close-on-exec".into()))?;
                }
                (tmp, true, Some(*flags))
            }
            Action::Substitute { ours, flags } => {
                let Some(pidfd) = pidfd else {
                    return Err(RestoreError::Layout(format!(
                        "fd {fd}: ferry's pidfd is not in the task for its substitute"
                    )));
                };
                let tmp = inj
                    .call(
                        "pidfd_getfd",
                        libc::SYS_pidfd_getfd,
                        [pidfd, *ours as u64, 0, 0, 0, 0],
                    )
                    .map_err(err("pidfd_getfd of its substitute".into()))?;
                if tmp == fd as u64 && !*cloexec {
                    inj.call(
                        "fcntl",
                        libc::SYS_fcntl,
                        [tmp, libc::F_SETFD as u64, 0, 0, 0, 0],
                    )
                    .map_err(err("clear close-on-exec".into()))?;
                }
                (tmp, true, Some(*flags))
            }
        };
        if tmp != fd as u64 {
            let flags = if *cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            inj.call("dup3", libc::SYS_dup3, [tmp, fd as u64, flags, 0, 0, 0])
                .map_err(err("dup3".into()))?;
            if close_tmp {
                inj.call("close", libc::SYS_close, [tmp, 0, 0, 0, 0, 0])?;
            }
        } else {
            // Made at its number already: the flag as the image says, whatever the call that
            // made it set (pidfd_getfd and pidfd_open always set close-on-exec).
            let flag = if *cloexec { libc::FD_CLOEXEC as u64 } else { 0 };
            inj.call(
                "fcntl",
                libc::SYS_fcntl,
                [fd as u64, libc::F_SETFD as u64, flag, 0, 0, 0],
            )
            .map_err(err("set close-on-exec".into()))?;
        }
        if let Some(flags) = setfl {
            inj.call(
                "fcntl",
                libc::SYS_fcntl,
                [fd as u64, libc::F_SETFL as u64, u64::from(flags), 0, 0, 0],
            )
            .map_err(err("set status flags".into()))?;
        }
        match action {
            Action::Open { pos: Some(pos), .. } | Action::Deleted { pos, .. } if *pos != 0 => {
                inj.call(
                    "lseek",
                    libc::SYS_lseek,
                    [fd as u64, *pos, libc::SEEK_SET as u64, 0, 0, 0],
                )
                .map_err(err(format!("seek to {pos}")))?;
            }
            Action::Epoll(targets) => restore_epoll(inj, fd, targets, warnings)?,
            _ => {}
        }
    }
    for (r, w) in pipes.values() {
        inj.call("close", libc::SYS_close, [*r, 0, 0, 0, 0, 0])?;
        inj.call("close", libc::SYS_close, [*w, 0, 0, 0, 0, 0])?;
    }
    if let Some(p) = pidfd {
        inj.call("close", libc::SYS_close, [p, 0, 0, 0, 0, 0])?;
    }
    if let Some(built) = &plan.sockets {
        // Every socket is in the task now: connections may come out of repair mode.
        built.finish(state)?;
    }
    // Last: closing any descriptor of a file drops the process's POSIX locks on it, and the
    // steps above close temporary descriptors.
    take_locks(inj, &plan.locks)
}

/// Fills the interest list of the new epoll instance at `epfd`. `EPOLL_CTL_ADD` puts a watch
/// whose file is ready on the ready list, as if an event had just come: right for a
/// level-triggered watch, and for an edge-triggered one whose event the process had not taken
/// (`pending`), but an edge the process had taken must not come again, and a one-shot watch
/// that fired is disarmed, which no `epoll_ctl` makes (`EPOLL_CTL_MOD` adds `EPOLLERR |
/// EPOLLHUP`). So those watches are added first — a fired one-shot watch with the events its
/// file is ready for — and their events taken with one `epoll_wait` in the task, as the
/// process had; then the others are added.
fn restore_epoll(
    inj: &Injector<'_>,
    epfd: i32,
    targets: &[EpollTarget],
    warnings: &mut Vec<String>,
) -> Result<(), RestoreError> {
    use crate::dump::{EPOLL_PRIVATE_BITS, EPOLLET, EPOLLONESHOT, epoll_disarmed};
    let taken = |t: &EpollTarget| {
        epoll_disarmed(t.events)
            || (t.events & EPOLLET != 0 && t.events & EPOLLONESHOT == 0 && !t.pending)
    };
    let first: Vec<&EpollTarget> = targets.iter().filter(|t| taken(t)).collect();
    for t in &first {
        let events = if epoll_disarmed(t.events) {
            let ready = ready_in_task(inj, t.file_fd)?;
            if ready == 0 {
                return Err(RestoreError::Layout(format!(
                    "fd {epfd}: the fired EPOLLONESHOT watch of fd {} is made again by firing \
                     it, and that descriptor is ready for no event now",
                    t.fd
                )));
            }
            (t.events & EPOLL_PRIVATE_BITS) | ready
        } else {
            t.events
        };
        epoll_add(inj, epfd, t, events, warnings)?;
    }
    if !first.is_empty() {
        // struct epoll_event is 12 bytes, packed.
        let max = first.len().min(4096) + 1;
        let buf = inj.put(8192, &vec![0u8; 12 * max])?;
        loop {
            let n = inj
                .call(
                    "epoll_wait",
                    libc::SYS_epoll_wait,
                    [epfd as u64, buf, max as u64, 0, 0, 0],
                )
                .map_err(|e| RestoreError::Fd {
                    fd: epfd,
                    what: "take the events its watches had taken".into(),
                    source: Box::new(e.into()),
                })?;
            if (n as usize) < max {
                break;
            }
        }
    }
    for t in targets.iter().filter(|t| !taken(t)) {
        epoll_add(inj, epfd, t, t.events, warnings)?;
    }
    Ok(())
}

/// The events descriptor `fd` of the task is ready for (`poll`, no wait), as epoll bits.
fn ready_in_task(inj: &Injector<'_>, fd: i32) -> Result<u32, RestoreError> {
    // struct pollfd { int fd; short events, revents; }: every event asked.
    let asked: i16 = libc::POLLIN
        | libc::POLLPRI
        | libc::POLLOUT
        | libc::POLLRDNORM
        | libc::POLLRDBAND
        | libc::POLLWRNORM
        | libc::POLLWRBAND
        | 0x400 // POLLMSG
        | 0x2000; // POLLRDHUP
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&fd.to_le_bytes());
    p[4..6].copy_from_slice(&asked.to_le_bytes());
    let addr = inj.put(8192, &p)?;
    inj.call("poll", libc::SYS_poll, [addr, 1, 0, 0, 0, 0])?;
    inj.tracee().read_mem(addr, &mut p)?;
    let revents = u16::from_le_bytes([p[6], p[7]]) & !(libc::POLLNVAL as u16);
    Ok(u32::from(revents))
}

/// `EPOLL_CTL_ADD` of watch `t` with `events` (one whose number no longer holds its file:
/// see [`add_under_other_number`]).
fn epoll_add(
    inj: &Injector<'_>,
    epfd: i32,
    t: &EpollTarget,
    events: u32,
    warnings: &mut Vec<String>,
) -> Result<(), RestoreError> {
    let mut ev = Vec::with_capacity(12);
    ev.extend_from_slice(&events.to_le_bytes());
    ev.extend_from_slice(&t.data.to_le_bytes());
    let addr = inj.put(4096, &ev)?;
    if t.file_fd != t.fd {
        return add_under_other_number(inj, epfd, t, addr);
    }
    if let Err(e) = inj.call_raw(
        libc::SYS_epoll_ctl,
        [
            epfd as u64,
            libc::EPOLL_CTL_ADD as u64,
            t.fd as u64,
            addr,
            0,
            0,
        ],
    )? {
        warnings.push(format!(
            "fd {epfd}: epoll could not watch fd {} again ({e})",
            t.fd
        ));
    }
    Ok(())
}

/// Closes every descriptor the task inherited from ferry from `first_closed` on, except
/// ferry's pidfd when there are sockets to fetch; that one is moved out of the way of the
/// image's descriptor numbers. Returns its number in the task.
fn close_inherited(
    inj: &Injector<'_>,
    plan: &FdPlan,
    first_closed: u64,
) -> Result<Option<u64>, RestoreError> {
    let pidfd = plan.pidfd().map(|p| p as u64);
    let close_range =
        |from: u64, to: u64| inj.call("close_range", libc::SYS_close_range, [from, to, 0, 0, 0, 0]);
    let Some(p) = pidfd.filter(|p| *p >= first_closed) else {
        close_range(first_closed, u64::from(u32::MAX))?;
        return Ok(None);
    };
    if p > first_closed {
        close_range(first_closed, p - 1)?;
    }
    close_range(p + 1, u64::from(u32::MAX))?;
    if !plan.fds.iter().any(|(fd, _, _)| *fd as u64 == p) {
        return Ok(Some(p));
    }
    let spare = plan
        .fds
        .iter()
        .map(|(fd, _, _)| *fd as u64)
        .max()
        .unwrap_or(0)
        .max(p)
        + 1;
    inj.call(
        "dup3",
        libc::SYS_dup3,
        [p, spare, libc::O_CLOEXEC as u64, 0, 0, 0],
    )?;
    inj.call("close", libc::SYS_close, [p, 0, 0, 0, 0, 0])?;
    Ok(Some(spare))
}

/// Takes the open file description behind `fd` of tree member `pid` (already restored) into
/// the task: `pidfd_open` + `pidfd_getfd`, run inside the task. Returns the new descriptor.
fn take_shared(inj: &Injector<'_>, pid: i32, fd: i32) -> Result<u64, RestoreError> {
    let pidfd = inj.call(
        "pidfd_open",
        libc::SYS_pidfd_open,
        [pid as u64, 0, 0, 0, 0, 0],
    )?;
    let got = inj.call(
        "pidfd_getfd",
        libc::SYS_pidfd_getfd,
        [pidfd, fd as u64, 0, 0, 0, 0],
    );
    inj.call("close", libc::SYS_close, [pidfd, 0, 0, 0, 0, 0])?;
    Ok(got?)
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> RestoreError {
    move |source| RestoreError::Io { what, source }
}

/// Creates each pipe inside the task (both ends moved to spare numbers), sizes its buffer and
/// writes its queued bytes through a write end the restorer opens via `/proc`.
fn create_pipes(
    inj: &Injector<'_>,
    plan: &FdPlan,
    spare: i32,
) -> Result<HashMap<u64, (u64, u64)>, RestoreError> {
    let task = inj.tracee().pid();
    let mut out = HashMap::new();
    for (ino, queue) in &plan.pipes {
        let what = |s: &str| format!("pipe:[{ino}]: {s}");
        let addr = inj.put(4096, &[0u8; 8])?;
        inj.call(
            "pipe2",
            libc::SYS_pipe2,
            [addr, libc::O_CLOEXEC as u64, 0, 0, 0, 0],
        )?;
        let mut ends = [0u8; 8];
        inj.tracee().read_mem(addr, &mut ends)?;
        let mut moved = [0u64; 2];
        for (i, raw) in ends.chunks_exact(4).enumerate() {
            let fd = u64::from(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]));
            moved[i] = inj.call(
                "fcntl(F_DUPFD_CLOEXEC)",
                libc::SYS_fcntl,
                [fd, libc::F_DUPFD_CLOEXEC as u64, spare as u64, 0, 0, 0],
            )?;
            inj.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
        }
        let (r, w) = (moved[0], moved[1]);
        out.insert(*ino, (r, w));
        if let Some(q) = queue {
            if let Err(e) = inj.call_raw(
                libc::SYS_fcntl,
                [w, libc::F_SETPIPE_SZ as u64, u64::from(q.size), 0, 0, 0],
            )? {
                return Err(RestoreError::Io {
                    what: what(&format!("set its buffer to {} bytes", q.size)),
                    source: e.into(),
                });
            }
            if !q.data.is_empty() {
                let path = format!("/proc/{task}/fd/{w}");
                let mut end = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(io_err(what("open its write end")))?;
                end.write_all(&q.data).map_err(io_err(what(&format!(
                    "write its {} queued bytes",
                    q.data.len()
                ))))?;
            }
        }
    }
    Ok(out)
}

/// Opens every FIFO read-write in the restorer (never blocks), sizes it and writes the bytes
/// that were queued in it.
fn hold_fifos(plan: &FdPlan) -> Result<Vec<File>, RestoreError> {
    let mut held = Vec::with_capacity(plan.fifos.len());
    for (file, queue) in &plan.fifos {
        let what = |s: &str| format!("FIFO {}: {s}", file.path);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&file.path)
            .map_err(io_err(what("open")))?;
        let meta = f.metadata().map_err(io_err(what("stat")))?;
        if meta.dev() != file.identity.dev || meta.ino() != file.identity.ino {
            return Err(RestoreError::FileChanged(format!(
                "{} is not the FIFO the image was taken from",
                file.path
            )));
        }
        if let Some(q) = queue {
            let size = i32::try_from(q.size).unwrap_or(i32::MAX);
            fcntl(f.as_fd(), FcntlArg::F_SETPIPE_SZ(size)).map_err(|e| RestoreError::Io {
                what: what("set its buffer size"),
                source: e.into(),
            })?;
            (&f).write_all(&q.data).map_err(io_err(what(&format!(
                "write its {} queued bytes",
                q.data.len()
            ))))?;
        }
        held.push(f);
    }
    Ok(held)
}

/// Makes again an object deleted while open, inside the task, and returns the descriptor
/// with the status flags still to set on it. A descriptor of an object made earlier
/// (`same_as`) reopens it through `/proc`. Otherwise the object is made under its old name
/// when that is free and unlinked at once (so `/proc/PID/fd` shows the name the process
/// knew), else under a temporary name in its old directory or in `/tmp` (`O_TMPFILE` for a
/// regular file); the restorer then writes its contents and sets owner, mode and times
/// through `/proc`; a regular file or FIFO is then reopened with the original flags.
fn recreate_deleted(
    inj: &Injector<'_>,
    state: &ProcessState,
    fd: i32,
    path: &str,
    flags: u32,
    same_as: Option<i32>,
) -> Result<(u64, Option<u32>), RestoreError> {
    let Some(FdKind::DeletedFile {
        mode,
        uid,
        gid,
        atime_ns,
        mtime_ns,
        node,
        ..
    }) = state.fds.iter().find(|f| f.fd == fd).map(|f| &f.kind)
    else {
        return Err(RestoreError::Layout(format!(
            "fd {fd}: no contents for {path}"
        )));
    };
    let err = |what: String| {
        move |e: RestoreError| RestoreError::Fd {
            fd,
            what,
            source: Box::new(e),
        }
    };
    let task = inj.tracee().pid();
    let fifo = matches!(node, DeletedNode::Fifo { .. });
    // A FIFO end opened again must not wait for a peer; its flags are set afterwards.
    let open_flags = u64::from(
        (flags & !((libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC) as u32))
            | if fifo { libc::O_NONBLOCK as u32 } else { 0 },
    );
    let setfl = fifo.then_some(flags);
    let reopen = |from: u64| -> Result<u64, RestoreError> {
        let p = format!("/proc/{task}/fd/{from}");
        let addr = inj.put_path(&p)?;
        inj.call(
            "openat",
            libc::SYS_openat,
            [libc::AT_FDCWD as u64, addr, open_flags, 0, 0, 0],
        )
        .map_err(|e| err(format!("reopen the copy of {path}"))(e.into()))
    };
    if let Some(first) = same_as {
        return Ok((reopen(first as u64)?, setfl));
    }
    let dir = std::path::Path::new(path)
        .parent()
        .and_then(|p| p.to_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    // A directory of its path removed since (a job's log directory cleaned up, …) is made
    // for the moment the object is made and unlinked, so that it gets its own name back.
    let _dirs = MadeDirs::make(dir);
    // Where the object may be made: its own name, then a temporary one beside it, in /tmp,
    // and for a device node in /dev (a filesystem mounted nodev would refuse to open it).
    let spare_name = format!(".ferry-deleted-{}-{fd}", state.pid);
    let mut names = vec![
        path.to_string(),
        format!("{}/{spare_name}", dir.trim_end_matches('/')),
        format!("/tmp/{spare_name}"),
    ];
    if matches!(node, DeletedNode::CharDevice { .. }) {
        names.push(format!("/dev/{spare_name}"));
    }
    let creat = (libc::O_RDWR | libc::O_CLOEXEC) as u64;
    let (tmp, reopened) = match node {
        // A file made with O_TMPFILE never had a name (`/proc` shows `DIR/#INO`), and its
        // flags say so (a reopen with them fails, ENOTDIR): made again the same way in the
        // same directory with its own flags (so still linkable with `linkat`), kept as made.
        DeletedNode::Regular { .. } if flags & O_TMPFILE_ONLY != 0 => {
            let addr = inj.put_path(dir)?;
            let made = inj
                .call(
                    "openat(O_TMPFILE)",
                    libc::SYS_openat,
                    [
                        libc::AT_FDCWD as u64,
                        addr,
                        u64::from(flags & !(libc::O_CLOEXEC as u32)),
                        0o600,
                        0,
                        0,
                    ],
                )
                .map_err(|e| err(format!("make an O_TMPFILE file in {dir}"))(e.into()))?;
            (made, false)
        }
        DeletedNode::Regular { .. } => (create_regular(inj, path, dir, &names, creat, fd)?, true),
        DeletedNode::Fifo { .. } => {
            let mknod = (libc::S_IFIFO | 0o600) as u64;
            (
                make_node(
                    inj,
                    path,
                    &names,
                    fd,
                    |name| {
                        (
                            libc::SYS_mknodat,
                            [libc::AT_FDCWD as u64, name, mknod, 0, 0, 0],
                        )
                    },
                    creat | libc::O_NONBLOCK as u64,
                    0,
                )?,
                true,
            )
        }
        DeletedNode::CharDevice { rdev } => {
            let mknod = (libc::S_IFCHR | 0o600) as u64;
            (
                make_node(
                    inj,
                    path,
                    &names,
                    fd,
                    |name| {
                        (
                            libc::SYS_mknodat,
                            [libc::AT_FDCWD as u64, name, mknod, *rdev, 0, 0],
                        )
                    },
                    open_flags | libc::O_NOCTTY as u64,
                    0,
                )?,
                false,
            )
        }
        DeletedNode::Directory => (
            make_node(
                inj,
                path,
                &names,
                fd,
                |name| {
                    (
                        libc::SYS_mkdirat,
                        [libc::AT_FDCWD as u64, name, 0o700, 0, 0, 0],
                    )
                },
                open_flags,
                libc::AT_REMOVEDIR as u64,
            )?,
            false,
        ),
    };
    let proc_path = format!("/proc/{task}/fd/{tmp}");
    let io = |what: &str| io_err(format!("fd {fd}: {what} the copy of {path}"));
    match node {
        DeletedNode::Regular { size, extents } => {
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&proc_path)
                .map_err(io("open"))?;
            for e in extents {
                std::os::unix::fs::FileExt::write_all_at(&f, &e.data, e.offset)
                    .map_err(io("write"))?;
            }
            f.set_len(*size).map_err(io("size"))?;
        }
        DeletedNode::Fifo { queue: Some(q) } => {
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&proc_path)
                .map_err(io("open"))?;
            let size = i32::try_from(q.size).unwrap_or(i32::MAX);
            fcntl(f.as_fd(), FcntlArg::F_SETPIPE_SZ(size)).map_err(|e| RestoreError::Io {
                what: format!("fd {fd}: size the buffer of the copy of {path}"),
                source: e.into(),
            })?;
            (&f).write_all(&q.data)
                .map_err(io("write the queued bytes of"))?;
        }
        _ => {}
    }
    std::os::unix::fs::chown(&proc_path, Some(*uid), Some(*gid)).map_err(io("chown"))?;
    // After chown, which clears set-id bits.
    std::fs::set_permissions(
        &proc_path,
        std::os::unix::fs::PermissionsExt::from_mode(*mode),
    )
    .map_err(io("chmod"))?;
    // Last: writing moved the times.
    let ts = |ns: i64| {
        nix::sys::time::TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
    };
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        proc_path.as_str(),
        &ts(*atime_ns),
        &ts(*mtime_ns),
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    )
    .map_err(|e| RestoreError::Io {
        what: format!("fd {fd}: set the times of the copy of {path}"),
        source: e.into(),
    })?;
    if !reopened {
        return Ok((tmp, None));
    }
    // A new open file description with the original flags (O_RDONLY, O_APPEND, …).
    let fresh = reopen(tmp)?;
    inj.call("close", libc::SYS_close, [tmp, 0, 0, 0, 0, 0])?;
    Ok((fresh, setfl))
}

fn fd_err(fd: i32, what: String) -> impl FnOnce(RestoreError) -> RestoreError {
    move |e| RestoreError::Fd {
        fd,
        what,
        source: Box::new(e),
    }
}

/// A regular file made unlinked in the task: under one of `names` (the first, its own name,
/// when free) unlinked at once, else with `O_TMPFILE` in `dir` or `/tmp`.
/// Directories made for the time an object deleted while open is made again under its own
/// name; removed again (deepest first, only if still empty) when dropped.
struct MadeDirs(Vec<std::path::PathBuf>);

impl MadeDirs {
    /// Makes the directories of `dir` that do not exist (mode 0700, as root); whatever fails
    /// leaves the object to its other names.
    fn make(dir: &str) -> Self {
        let mut missing = Vec::new();
        let mut at = Some(std::path::Path::new(dir));
        while let Some(d) = at {
            if d.as_os_str().is_empty() || std::fs::symlink_metadata(d).is_ok() {
                break;
            }
            missing.push(d.to_path_buf());
            at = d.parent();
        }
        let mut made = Vec::new();
        for d in missing.into_iter().rev() {
            use std::os::unix::fs::DirBuilderExt;
            if std::fs::DirBuilder::new().mode(0o700).create(&d).is_err() {
                break;
            }
            made.push(d);
        }
        MadeDirs(made)
    }
}

impl Drop for MadeDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn create_regular(
    inj: &Injector<'_>,
    path: &str,
    dir: &str,
    names: &[String],
    creat: u64,
    fd: i32,
) -> Result<u64, RestoreError> {
    let own = inj.put_path(path)?;
    if let Ok(t) = inj.call_raw(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            own,
            creat | (libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW) as u64,
            0o600,
            0,
            0,
        ],
    )? {
        inj.call(
            "unlinkat",
            libc::SYS_unlinkat,
            [libc::AT_FDCWD as u64, own, 0, 0, 0, 0],
        )
        .map_err(|e| fd_err(fd, format!("unlink {path}"))(e.into()))?;
        return Ok(t);
    }
    for d in [dir, "/tmp"] {
        let addr = inj.put_path(d)?;
        if let Ok(t) = inj.call_raw(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as u64,
                addr,
                creat | libc::O_TMPFILE as u64,
                0o600,
                0,
                0,
            ],
        )? {
            return Ok(t);
        }
    }
    make_node(
        inj,
        path,
        &names[1..],
        fd,
        |_| (libc::SYS_openat, [0; 6]),
        creat | (libc::O_CREAT | libc::O_EXCL) as u64,
        0,
    )
}

/// Makes a node under the first of `names` that `make` (given the name's address, it returns
/// the system call and its arguments) succeeds with, opens it with `open_flags` and removes
/// the name (`unlink_flags`: `AT_REMOVEDIR` for a directory). A `make` of `SYS_openat` means
/// the open itself creates it.
fn make_node(
    inj: &Injector<'_>,
    path: &str,
    names: &[String],
    fd: i32,
    make: impl Fn(u64) -> (i64, [u64; 6]),
    open_flags: u64,
    unlink_flags: u64,
) -> Result<u64, RestoreError> {
    let mut last = None;
    for name in names {
        let addr = inj.put_path(name)?;
        let (nr, args) = make(addr);
        let opened = if nr == libc::SYS_openat {
            inj.call_raw(
                libc::SYS_openat,
                [libc::AT_FDCWD as u64, addr, open_flags, 0o600, 0, 0],
            )?
        } else {
            if let Err(e) = inj.call_raw(nr, args)? {
                last = Some((name, e));
                continue;
            }
            inj.call_raw(
                libc::SYS_openat,
                [libc::AT_FDCWD as u64, addr, open_flags, 0, 0, 0],
            )?
        };
        if nr == libc::SYS_openat && opened.is_err() {
            last = opened.err().map(|e| (name, e));
            continue;
        }
        // The name goes whether the open worked or not.
        let removed = inj.call(
            "unlinkat",
            libc::SYS_unlinkat,
            [libc::AT_FDCWD as u64, addr, unlink_flags, 0, 0, 0],
        );
        let t = match opened {
            Ok(t) => t,
            Err(e) => {
                last = Some((name, e));
                continue;
            }
        };
        removed.map_err(|e| fd_err(fd, format!("remove {name}"))(e.into()))?;
        return Ok(t);
    }
    let (name, e) = last.map_or((path, nix::errno::Errno::ENOENT), |(n, e)| (n.as_str(), e));
    Err(fd_err(
        fd,
        format!("make a copy of {path} (last tried at {name})"),
    )(RestoreError::Io {
        what: "create".into(),
        source: e.into(),
    }))
}

/// Adds epoll entry `t` of instance `epfd`, whose file (held at `t.file_fd`) was added under a
/// number that was closed or given to another file since: that number is made the file's for
/// the `epoll_ctl` only, and then given back to what holds it now (kept meanwhile under a
/// temporary number, so closing the number removes no entry and no description). No lock is
/// held yet: they are taken last.
fn add_under_other_number(
    inj: &Injector<'_>,
    epfd: i32,
    t: &EpollTarget,
    event: u64,
) -> Result<(), RestoreError> {
    let err = |what: &'static str| {
        move |e: crate::ptrace::PtraceError| RestoreError::Fd {
            fd: epfd,
            what: format!(
                "epoll entry added as fd {} (its file now at fd {}): {what}",
                t.fd, t.file_fd
            ),
            source: Box::new(e.into()),
        }
    };
    let fd = t.fd as u64;
    let cloexec = inj.call_raw(libc::SYS_fcntl, [fd, libc::F_GETFD as u64, 0, 0, 0, 0])?;
    let saved = match cloexec {
        Ok(flags) => Some((
            inj.call(
                "fcntl(F_DUPFD_CLOEXEC)",
                libc::SYS_fcntl,
                [fd, libc::F_DUPFD_CLOEXEC as u64, 0, 0, 0, 0],
            )
            .map_err(err("keep what holds the number"))?,
            flags,
        )),
        Err(_) => None,
    };
    inj.call("dup3", libc::SYS_dup3, [t.file_fd as u64, fd, 0, 0, 0, 0])
        .map_err(err("put the file at the number"))?;
    inj.call(
        "epoll_ctl(EPOLL_CTL_ADD)",
        libc::SYS_epoll_ctl,
        [epfd as u64, libc::EPOLL_CTL_ADD as u64, fd, event, 0, 0],
    )
    .map_err(err("watch it"))?;
    match saved {
        Some((tmp, flags)) => {
            let o_cloexec = if flags & libc::FD_CLOEXEC as u64 != 0 {
                libc::O_CLOEXEC as u64
            } else {
                0
            };
            inj.call("dup3", libc::SYS_dup3, [tmp, fd, o_cloexec, 0, 0, 0])
                .map_err(err("give the number back"))?;
            inj.call("close", libc::SYS_close, [tmp, 0, 0, 0, 0, 0])
                .map_err(err("close the temporary number"))?;
        }
        None => {
            inj.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])
                .map_err(err("close the number"))?;
        }
    }
    Ok(())
}

/// Makes the task's working directory a directory removed while it is in it: made under its
/// old name when that is free (so `/proc/PID/cwd` shows `PATH (deleted)`), else under a
/// temporary name beside it or in `/tmp`, given its mode and owner, entered, and removed.
pub fn enter_removed_dir(
    inj: &Injector<'_>,
    pid: i32,
    d: &crate::state::CarriedDir,
) -> Result<(), RestoreError> {
    let what = |s: &str| format!("working directory {} (deleted): {s}", d.path);
    let parent = std::path::Path::new(&d.path)
        .parent()
        .and_then(|p| p.to_str())
        .unwrap_or("/")
        .trim_end_matches('/')
        .to_string();
    let spare = format!(".ferry-cwd-{pid}");
    let names = [
        d.path.clone(),
        format!("{parent}/{spare}"),
        format!("/tmp/{spare}"),
    ];
    let mut last = nix::errno::Errno::ENOENT;
    for name in &names {
        let addr = inj.put_path(name)?;
        if let Err(e) = inj.call_raw(
            libc::SYS_mkdirat,
            [libc::AT_FDCWD as u64, addr, 0o700, 0, 0, 0],
        )? {
            last = e;
            continue;
        }
        let task = inj.tracee().pid();
        let entered = inj.call_raw(libc::SYS_chdir, [addr, 0, 0, 0, 0, 0])?;
        let here = format!("/proc/{task}/cwd");
        let attrs = std::os::unix::fs::lchown(name, Some(d.uid), Some(d.gid)).and_then(|()| {
            std::fs::set_permissions(&here, std::os::unix::fs::PermissionsExt::from_mode(d.mode))
        });
        inj.call(
            "unlinkat",
            libc::SYS_unlinkat,
            [
                libc::AT_FDCWD as u64,
                addr,
                libc::AT_REMOVEDIR as u64,
                0,
                0,
                0,
            ],
        )
        .map_err(|e| RestoreError::FileChanged(what(&format!("remove {name}: {e}"))))?;
        entered.map_err(|e| RestoreError::FileChanged(what(&format!("chdir {name}: {e}"))))?;
        attrs.map_err(io_err(what("owner and mode")))?;
        return Ok(());
    }
    Err(RestoreError::FileChanged(what(&format!(
        "no place to make it again ({last})"
    ))))
}

/// `__O_TMPFILE` without `O_DIRECTORY` (which `O_TMPFILE` includes).
const O_TMPFILE_ONLY: u32 = (libc::O_TMPFILE & !libc::O_DIRECTORY) as u32;

/// Takes back every lock and lease, inside the task (they belong to it or its descriptors).
fn take_locks(inj: &Injector<'_>, locks: &[LockState]) -> Result<(), RestoreError> {
    for l in locks {
        let fd = l.fd as u64;
        let mode = if l.write { "write" } else { "read" };
        let (what, r) = match l.kind {
            LockKind::Flock => {
                let op = if l.write {
                    libc::LOCK_EX
                } else {
                    libc::LOCK_SH
                } | libc::LOCK_NB;
                (
                    format!("flock ({mode})"),
                    inj.call_raw(libc::SYS_flock, [fd, op as u64, 0, 0, 0, 0])?,
                )
            }
            LockKind::Posix | LockKind::Ofd => {
                // struct flock: l_type, l_whence (i16 each), padding, l_start, l_len (i64), l_pid.
                let mut fl = [0u8; 32];
                let ty: i16 = if l.write {
                    libc::F_WRLCK as i16
                } else {
                    libc::F_RDLCK as i16
                };
                fl[0..2].copy_from_slice(&ty.to_le_bytes());
                fl[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_le_bytes());
                fl[8..16].copy_from_slice(&l.start.to_le_bytes());
                fl[16..24].copy_from_slice(&l.len.to_le_bytes());
                let addr = inj.put(4096, &fl)?;
                let (cmd, name) = if l.kind == LockKind::Posix {
                    (libc::F_SETLK, "POSIX")
                } else {
                    (libc::F_OFD_SETLK, "OFD")
                };
                let range = if l.len == 0 {
                    format!("{}..EOF", l.start)
                } else {
                    format!("{}..+{}", l.start, l.len)
                };
                (
                    format!("{name} lock ({mode}, bytes {range})"),
                    inj.call_raw(libc::SYS_fcntl, [fd, cmd as u64, addr, 0, 0, 0])?,
                )
            }
            LockKind::Lease => {
                let ty = if l.write {
                    libc::F_WRLCK
                } else {
                    libc::F_RDLCK
                };
                (
                    format!("lease ({mode})"),
                    inj.call_raw(
                        libc::SYS_fcntl,
                        [fd, libc::F_SETLEASE as u64, ty as u64, 0, 0, 0],
                    )?,
                )
            }
        };
        match r {
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(RestoreError::FileChanged(format!(
                    "fd {}: its {what} is held by another process now",
                    l.fd
                )));
            }
            Err(e) => {
                return Err(RestoreError::Io {
                    what: format!("fd {}: take back its {what}", l.fd),
                    source: e.into(),
                });
            }
        }
    }
    Ok(())
}
