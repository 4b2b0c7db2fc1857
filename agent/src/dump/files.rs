//! File descriptors: `/proc/PID/fd` links, `fdinfo`, and `stat` of what they point to.

use std::os::unix::fs::FileTypeExt;

use nix::unistd::Pid;

use super::DumpError;
use super::fdkinds;
use super::mm::identity_of;
use crate::proc;
use crate::state::{FdKind, FdState, FileRef};

const O_CLOEXEC: u32 = libc::O_CLOEXEC as u32;

/// Major numbers of terminal devices: `/dev/ttyN` (4), `/dev/tty` and `/dev/console` (5),
/// pseudo-terminal slaves (136–143).
fn is_tty_major(major: u64) -> bool {
    major == 4 || major == 5 || (136..=143).contains(&major)
}

/// Every open descriptor of `pid`, refusing kinds not supported yet.
pub fn collect_fds(pid: Pid) -> Result<Vec<FdState>, DumpError> {
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
    for fd in fds {
        let link_path = format!("{dir}/{fd}");
        let Ok(target) = std::fs::read_link(&link_path) else {
            continue;
        }; // closed meanwhile
        let target = target.to_string_lossy().into_owned();
        let text = proc::read(pid.as_raw(), &format!("fdinfo/{fd}"))?;
        let info = proc::parse_fdinfo(&text)?;
        let unsupported =
            |what: &str| DumpError::Unsupported(format!("fd {fd}: {what} is not supported yet"));
        let kind = if let Some(rest) = target.strip_prefix("anon_inode:") {
            if rest == "[eventpoll]" {
                FdKind::Epoll {
                    targets: info.epoll.clone(),
                }
            } else {
                match fdkinds::anon_kind(pid, fd, rest, &text)? {
                    Some(kind) => kind,
                    None => return Err(unsupported(rest.trim_matches(['[', ']']))),
                }
            }
        } else if target.starts_with("socket:") {
            return Err(unsupported("a socket"));
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
            let ino = identity_of(&link_path)
                .map_err(|e| unsupported(&format!("{target} ({e})")))?
                .ino;
            FdKind::Memfd { ino, pos: info.pos }
        } else if target.ends_with(" (deleted)") {
            return Err(unsupported(&format!(
                "{target}, a file deleted while open,"
            )));
        } else if !target.starts_with('/') {
            return Err(unsupported(&format!("{target:?}")));
        } else {
            let identity =
                identity_of(&link_path).map_err(|e| unsupported(&format!("{target} ({e})")))?;
            let meta = std::fs::metadata(&link_path)
                .map_err(|e| unsupported(&format!("{target} ({e})")))?;
            let ft = meta.file_type();
            let file = FileRef {
                path: target.clone(),
                identity,
            };
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
                if target == "/dev/ptmx" || target.starts_with("/dev/pts/ptmx") {
                    return Err(unsupported("a pseudo-terminal master"));
                }
                if is_tty_major(major) {
                    FdKind::Tty { file }
                } else {
                    FdKind::CharDevice { file }
                }
            } else if ft.is_fifo() {
                return Err(unsupported("a FIFO"));
            } else if ft.is_block_device() {
                return Err(unsupported("a block device"));
            } else {
                return Err(unsupported(&format!("{target}")));
            }
        };
        out.push(FdState {
            fd,
            cloexec: info.flags & O_CLOEXEC != 0,
            flags: info.flags & !O_CLOEXEC,
            kind,
        });
    }
    check_pipes_and_epoll(&out)?;
    Ok(out)
}

/// Both ends of one pipe inside the process would need the queued bytes; epoll interest lists
/// must name descriptors we restore.
fn check_pipes_and_epoll(fds: &[FdState]) -> Result<(), DumpError> {
    let acc = |f: &FdState| f.flags & libc::O_ACCMODE as u32;
    for a in fds {
        match &a.kind {
            FdKind::Pipe { ino } => {
                if let Some(b) = fds.iter().find(|b| {
                    matches!(b.kind, FdKind::Pipe { ino: i } if i == *ino) && acc(b) != acc(a)
                }) {
                    return Err(DumpError::Unsupported(format!(
                        "fd {} and fd {}: a pipe with both ends in the process is not supported yet",
                        a.fd.min(b.fd),
                        a.fd.max(b.fd)
                    )));
                }
            }
            FdKind::Epoll { targets } => {
                for t in targets {
                    if !fds.iter().any(|f| f.fd == t.fd) {
                        return Err(DumpError::Unsupported(format!(
                            "fd {}: epoll watches fd {} which is no longer open; not supported yet",
                            a.fd, t.fd
                        )));
                    }
                    if fds
                        .iter()
                        .any(|f| f.fd == t.fd && matches!(f.kind, FdKind::Epoll { .. }))
                    {
                        return Err(DumpError::Unsupported(format!(
                            "fd {}: nested epoll is not supported yet",
                            a.fd
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
