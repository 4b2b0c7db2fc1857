//! File descriptors: checked against the filesystem before anything is created, then opened
//! inside the task at their numbers, with offsets and flags.

use super::RestoreError;
use super::fdkinds::{self, Memfds};
use super::inject::Injector;
use crate::dump::identity_of;
use crate::state::{EpollTarget, FdKind, FileRef, ProcessState, VmaKind};

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
    /// An eventfd, signalfd, timerfd or inotify instance, made by injected calls.
    Injected { flags: u32, kind: FdKind },
}

/// The descriptors to create, in order, plus warnings for the user.
#[derive(Debug)]
pub struct FdPlan {
    fds: Vec<(i32, bool, Action)>,
    inherit_stdio: bool,
    /// The memfds, made by the restorer for the task's descriptors and mappings.
    pub memfds: Memfds,
}

fn changed(what: String, file: &FileRef) -> Result<(), RestoreError> {
    let now = identity_of(&file.path)
        .map_err(|e| RestoreError::FileChanged(format!("{what}: {}: {e}", file.path)))?;
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

/// Checks that every file the process needs is still the same file, and decides how each
/// descriptor will be recreated.
pub fn plan(
    state: &ProcessState,
    inherit_stdio: bool,
    warnings: &mut Vec<String>,
) -> Result<FdPlan, RestoreError> {
    changed("executable".into(), &state.exe)?;
    for v in &state.mm.vmas {
        if let VmaKind::File(f) = &v.kind {
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
    for f in &state.fds {
        let devnull = |why: String, warnings: &mut Vec<String>| {
            warnings.push(format!("fd {}: {why}; it is /dev/null now", f.fd));
            Action::Open {
                path: "/dev/null".into(),
                flags: libc::O_RDWR as u32,
                pos: None,
            }
        };
        let action = if inherit_stdio && f.fd <= 2 {
            Action::Inherit
        } else {
            match &f.kind {
                FdKind::File { file, pos } | FdKind::Directory { file, pos } => {
                    changed(format!("fd {}", f.fd), file)?;
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
                FdKind::Inotify { watches } => {
                    for w in watches {
                        changed(format!("fd {}: inotify watch {}", f.fd, w.wd), &w.file)?;
                    }
                    Action::Injected {
                        flags: f.flags,
                        kind: f.kind.clone(),
                    }
                }
                FdKind::Eventfd { .. } | FdKind::Signalfd { .. } | FdKind::Timerfd(_) => {
                    Action::Injected {
                        flags: f.flags,
                        kind: f.kind.clone(),
                    }
                }
                // Replaced below, once the memfds exist.
                FdKind::Memfd { .. } => Action::Inherit,
            }
        };
        fds.push((f.fd, f.cloexec, action));
    }
    // Only now that every check has passed is anything created.
    let memfds = Memfds::create(state)?;
    for ((_, _, action), f) in fds.iter_mut().zip(&state.fds) {
        if let FdKind::Memfd { ino, pos } = f.kind
            && !(inherit_stdio && f.fd <= 2)
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
    Ok(FdPlan {
        fds,
        inherit_stdio,
        memfds,
    })
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
    inj.call(
        "close_range",
        libc::SYS_close_range,
        [first_closed, u64::from(u32::MAX), 0, 0, 0, 0],
    )?;
    for std in 0..first_closed as i32 {
        if !plan.fds.iter().any(|(fd, _, _)| *fd == std) {
            inj.call("close", libc::SYS_close, [std as u64, 0, 0, 0, 0, 0])?;
        }
    }
    // Epoll instances last: their interest lists name the other descriptors.
    let (epolls, others): (Vec<_>, Vec<_>) = plan
        .fds
        .iter()
        .partition(|(_, _, a)| matches!(a, Action::Epoll(_)));
    for (fd, cloexec, action) in others.into_iter().chain(epolls) {
        let fd = *fd;
        let err = |what: String| {
            move |e: crate::ptrace::PtraceError| RestoreError::Fd {
                fd,
                what,
                source: Box::new(e.into()),
            }
        };
        let tmp = match action {
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
                let addr = inj.put_path(path)?;
                let open_flags =
                    (flags & !((libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC) as u32)) as u64;
                inj.call(
                    "openat",
                    libc::SYS_openat,
                    [libc::AT_FDCWD as u64, addr, open_flags, 0, 0, 0],
                )
                .map_err(err(format!("open {path}")))?
            }
            Action::Epoll(_) => inj
                .call("epoll_create1", libc::SYS_epoll_create1, [0, 0, 0, 0, 0, 0])
                .map_err(err("epoll_create1".into()))?,
            Action::Injected { flags, kind } => fdkinds::create(inj, fd, *flags, kind)?,
        };
        if tmp != fd as u64 {
            let flags = if *cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            inj.call("dup3", libc::SYS_dup3, [tmp, fd as u64, flags, 0, 0, 0])
                .map_err(err("dup3".into()))?;
            inj.call("close", libc::SYS_close, [tmp, 0, 0, 0, 0, 0])?;
        } else if *cloexec {
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
        match action {
            Action::Open { pos: Some(pos), .. } if *pos != 0 => {
                inj.call(
                    "lseek",
                    libc::SYS_lseek,
                    [fd as u64, *pos, libc::SEEK_SET as u64, 0, 0, 0],
                )
                .map_err(err(format!("seek to {pos}")))?;
            }
            Action::Open { flags, path, .. } if path.starts_with("/proc/") => {
                // Put back the status flags the reopen had to change (O_NONBLOCK).
                let orig = state
                    .fds
                    .iter()
                    .find(|f| f.fd == fd)
                    .map_or(*flags, |f| f.flags);
                inj.call(
                    "fcntl",
                    libc::SYS_fcntl,
                    [fd as u64, libc::F_SETFL as u64, u64::from(orig), 0, 0, 0],
                )
                .map_err(err("set status flags".into()))?;
            }
            Action::Epoll(targets) => {
                for t in targets {
                    let mut ev = Vec::with_capacity(12);
                    ev.extend_from_slice(&t.events.to_le_bytes());
                    ev.extend_from_slice(&t.data.to_le_bytes());
                    let addr = inj.put(4096, &ev)?;
                    if let Err(e) = inj.call_raw(
                        libc::SYS_epoll_ctl,
                        [
                            fd as u64,
                            libc::EPOLL_CTL_ADD as u64,
                            t.fd as u64,
                            addr,
                            0,
                            0,
                        ],
                    )? {
                        warnings.push(format!(
                            "fd {fd}: epoll could not watch fd {} again ({e})",
                            t.fd
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
