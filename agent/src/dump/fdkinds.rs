//! Kernel-object descriptors: eventfd, signalfd, timerfd, inotify, fanotify and memfd.
//! Everything comes from `fdinfo`, except a timer's exact state (read through a copy of the
//! descriptor), the paths inotify watches and fanotify marks (from their file handles, mount
//! ids and devices) and memfd contents (read from the file).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::statfs::{HUGETLBFS_MAGIC, fstatfs};
use nix::unistd::{Pid, Whence, lseek};

use super::DumpError;
use super::mm::identity_of;
use crate::image::{MAX_INOTIFY_GAPS, MAX_MEMFD_BYTES};
use crate::state::{
    FanotifyMark, FanotifyState, FanotifyTarget, FdKind, FdState, FileRef, InotifyWatch,
    MemfdExtent, MemfdState, TimerfdState, VmaKind, VmaState,
};
use crate::sys;

fn unsupported(fd: i32, what: impl std::fmt::Display) -> DumpError {
    DumpError::Unsupported(format!("fd {fd}: {what} is not supported yet"))
}

/// The value after `key` in an fdinfo text (`key` includes its colon).
fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

fn hex(info: &str, key: &str) -> Option<u64> {
    field(info, key).and_then(|v| u64::from_str_radix(v, 16).ok())
}

fn bad(fd: i32, what: &str) -> DumpError {
    crate::proc::ProcError::Parse {
        file: "fdinfo",
        what: format!("fd {fd}: {what}"),
    }
    .into()
}

/// The kind of an `anon_inode:` descriptor this module handles, `None` for other kinds.
pub fn anon_kind(pid: Pid, fd: i32, name: &str, info: &str) -> Result<Option<FdKind>, DumpError> {
    Ok(Some(match name {
        "[eventfd]" => FdKind::Eventfd {
            count: hex(info, "eventfd-count:").ok_or_else(|| bad(fd, "eventfd-count"))?,
            semaphore: field(info, "eventfd-semaphore:") == Some("1"),
        },
        "[signalfd]" => FdKind::Signalfd {
            mask: hex(info, "sigmask:").ok_or_else(|| bad(fd, "sigmask"))?,
        },
        "[timerfd]" => FdKind::Timerfd(timerfd(pid, fd)?),
        "inotify" => inotify(pid, fd, info)?,
        "[fanotify]" => FdKind::Fanotify(fanotify(pid, fd, info)?),
        _ => return Ok(None),
    }))
}

/// A copy of the process's descriptor: the same open file description.
fn steal(pid: Pid, fd: i32) -> Result<OwnedFd, DumpError> {
    let fail = |what: &str, e| DumpError::Unsupported(format!("fd {fd}: cannot {what} ({e})"));
    let pidfd = sys::pidfd_open(pid).map_err(|e| fail("open a pidfd", e))?;
    sys::pidfd_getfd(pidfd.as_fd(), fd).map_err(|e| fail("copy the descriptor", e))
}

/// `it_value: (SEC, NSEC)` in nanoseconds.
fn timespec(info: &str, key: &str) -> Option<u64> {
    let (s, ns) = field(info, key)?.trim_matches(['(', ')']).split_once(',')?;
    Some(
        s.trim()
            .parse::<u64>()
            .ok()?
            .saturating_mul(1_000_000_000)
            .saturating_add(ns.trim().parse().ok()?),
    )
}

/// Parses a timerfd's fdinfo; `None` while a periodic timer has expired unread (fdinfo then
/// shows no time left although the timer runs on).
pub fn parse_timerfd(info: &str) -> Option<Option<TimerfdState>> {
    let t = TimerfdState {
        clockid: field(info, "clockid:")?.parse().ok()?,
        settime_flags: u32::from_str_radix(field(info, "settime flags:")?, 8).ok()?,
        value_ns: timespec(info, "it_value:")?,
        interval_ns: timespec(info, "it_interval:")?,
        ticks: field(info, "ticks:")?.parse().ok()?,
    };
    Some(if t.interval_ns != 0 && t.value_ns == 0 {
        None
    } else {
        Some(t)
    })
}

/// A timer's state. A periodic timer that expired unread has not counted its missed periods
/// yet; `timerfd_gettime` on a copy of the descriptor makes the kernel do so (as a `read`
/// would, without consuming them), after which fdinfo is exact.
fn timerfd(pid: Pid, fd: i32) -> Result<TimerfdState, DumpError> {
    let own = steal(pid, fd)?;
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    // Each try can only lose a race with one more expiry; a period shorter than the time
    // between two system calls is hopeless.
    for _ in 0..100 {
        sys::timerfd_gettime(own.as_fd())
            .map_err(|e| unsupported(fd, format!("a timerfd that cannot be read ({e})")))?;
        let info =
            std::fs::read_to_string(&path).map_err(|source| crate::proc::ProcError::Read {
                path: path.clone().into(),
                source,
            })?;
        let Some(t) = parse_timerfd(&info).ok_or_else(|| bad(fd, "timerfd"))? else {
            continue;
        };
        let mut t = t;
        if t.settime_flags & libc::TFD_TIMER_ABSTIME as u32 != 0 && t.value_ns != 0 {
            // fdinfo shows the time left; an absolute timer keeps its absolute expiry.
            let now = sys::clock_gettime_ns(t.clockid)
                .map_err(|e| unsupported(fd, format!("timerfd clock {} ({e})", t.clockid)))?;
            t.value_ns = t.value_ns.saturating_add(now);
        }
        return Ok(t);
    }
    Err(unsupported(
        fd,
        "a timerfd whose period is too short to read its state",
    ))
}

/// One `inotify wd:` line of fdinfo.
#[derive(Debug, PartialEq, Eq)]
pub struct WatchLine {
    /// Watch descriptor.
    pub wd: i32,
    /// Kernel `dev_t` of the filesystem.
    pub sdev: u64,
    /// Event mask.
    pub mask: u32,
    /// `fhandle-type`, absent when the filesystem has no file handles.
    pub handle_type: Option<i32>,
    /// `f_handle` bytes.
    pub handle: Vec<u8>,
}

/// Parses the `inotify wd:` lines (numbers in hex).
pub fn parse_inotify(info: &str) -> Option<Vec<WatchLine>> {
    let mut out = Vec::new();
    for line in info.lines().filter_map(|l| l.strip_prefix("inotify ")) {
        let get = |key: &str| line.split_whitespace().find_map(|t| t.strip_prefix(key));
        let num = |key: &str| u64::from_str_radix(get(key)?, 16).ok();
        let handle = match get("f_handle:") {
            Some(h) if h.len() % 2 == 0 => (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?,
            Some(_) => return None,
            None => Vec::new(),
        };
        out.push(WatchLine {
            wd: i32::try_from(num("wd:")?).ok()?,
            sdev: num("sdev:")?,
            mask: u32::try_from(num("mask:")?).ok()?,
            handle_type: get("fhandle-type:")
                .and_then(|t| u32::from_str_radix(t, 16).ok())
                .map(|t| t as i32),
            handle,
        });
    }
    out.sort_by_key(|w| w.wd);
    Some(out)
}

fn inotify(pid: Pid, fd: i32, info: &str) -> Result<FdKind, DumpError> {
    // Queued events cannot be put back into a new instance.
    let queued = sys::fionread(steal(pid, fd)?.as_fd()).map_err(|e| {
        unsupported(
            fd,
            format!("an inotify instance whose queue cannot be read ({e})"),
        )
    })?;
    if queued > 0 {
        return Err(unsupported(
            fd,
            format!("an inotify instance with {queued} bytes of unread events"),
        ));
    }
    let lines = parse_inotify(info).ok_or_else(|| bad(fd, "inotify"))?;
    let mut watches = Vec::with_capacity(lines.len());
    for (i, w) in lines.iter().enumerate() {
        // A restore fills each gap left by a removed watch with a placeholder watch.
        if w.wd as usize > i + 1 + MAX_INOTIFY_GAPS {
            return Err(unsupported(
                fd,
                format!(
                    "inotify watch descriptor {} after more than {MAX_INOTIFY_GAPS} removed watches",
                    w.wd
                ),
            ));
        }
        let path = watch_path(w)
            .map_err(|why| unsupported(fd, format!("inotify watch {} ({why})", w.wd)))?;
        let identity = identity_of(&path)
            .map_err(|e| unsupported(fd, format!("inotify watch {} on {path} ({e})", w.wd)))?;
        watches.push(InotifyWatch {
            wd: w.wd,
            mask: w.mask,
            file: FileRef { path, identity },
        });
    }
    Ok(FdKind::Inotify { watches })
}

/// The mount point of the first mount of kernel device `sdev` in ferry's mount namespace.
fn mount_of_dev(sdev: u64) -> Result<String, String> {
    // Kernel dev_t: major in the top 12 bits, minor in the low 20.
    let dev = format!("{}:{}", sdev >> 20, sdev & 0xf_ffff);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    mountinfo
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(2) == Some(&dev.as_str())).then(|| f.get(4).map(|p| unescape(p)))?
        })
        .ok_or_else(|| format!("no mount of device {dev}"))
}

/// The path of the inode a watch is on: its file handle opened on a mount of its filesystem.
fn watch_path(w: &WatchLine) -> Result<String, String> {
    let Some(handle_type) = w.handle_type else {
        return Err("its filesystem has no file handles".into());
    };
    let mount = mount_of_dev(w.sdev)?;
    let mount_fd = File::open(&mount).map_err(|e| format!("open {mount}: {e}"))?;
    let file = sys::open_by_handle(mount_fd.as_fd(), handle_type, &w.handle)
        .map_err(|e| format!("open its file handle: {e}"))?;
    let path = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ))
    .map_err(|e| e.to_string())?;
    let path = path.to_string_lossy().into_owned();
    if !path.starts_with('/') || path.ends_with(" (deleted)") {
        return Err(format!("the watched file is no longer reachable: {path}"));
    }
    Ok(path)
}

/// One `fanotify` mark line of fdinfo (numbers in hex).
#[derive(Debug, PartialEq, Eq)]
pub struct MarkLine {
    /// `ino:` (inode marks).
    pub ino: Option<u64>,
    /// `mnt_id:` (mount marks).
    pub mnt_id: Option<u64>,
    /// `sdev:` (inode and filesystem marks).
    pub sdev: Option<u64>,
    /// `mflags:`.
    pub mflags: u32,
    /// `mask:`.
    pub mask: u32,
    /// `ignored_mask:`.
    pub ignored_mask: u32,
    /// `fhandle-type:` and `f_handle:` of an inode mark.
    pub handle: Option<(i32, Vec<u8>)>,
}

/// Parses a fanotify group's fdinfo: `(flags, event flags, marks)` from its `fanotify flags:`
/// and `fanotify …` mark lines, in the kernel's order.
pub fn parse_fanotify(info: &str) -> Option<(u32, u32, Vec<MarkLine>)> {
    let mut head = None;
    let mut marks = Vec::new();
    for line in info.lines().filter_map(|l| l.strip_prefix("fanotify ")) {
        let get = |key: &str| line.split_whitespace().find_map(|t| t.strip_prefix(key));
        let num = |key: &str| get(key).map(|v| u64::from_str_radix(v, 16).ok());
        // Absent: `Some(None)`; present but not a number: `None`.
        let opt = |key: &str| match num(key) {
            None => Some(None),
            Some(v) => v.map(Some),
        };
        if line.starts_with("flags:") {
            head = Some((
                u32::try_from(num("flags:")??).ok()?,
                u32::try_from(num("event-flags:")??).ok()?,
            ));
            continue;
        }
        let handle = match (get("fhandle-type:"), get("f_handle:")) {
            (Some(t), Some(h)) if h.len() % 2 == 0 => Some((
                u32::from_str_radix(t, 16).ok()? as i32,
                (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?,
            )),
            (_, Some(_)) => return None,
            _ => None,
        };
        let mark = MarkLine {
            ino: opt("ino:")?,
            mnt_id: opt("mnt_id:")?,
            sdev: opt("sdev:")?,
            mflags: u32::try_from(num("mflags:")??).ok()?,
            mask: u32::try_from(num("mask:")??).ok()?,
            ignored_mask: u32::try_from(num("ignored_mask:")??).ok()?,
            handle,
        };
        if mark.ino.is_none() && mark.mnt_id.is_none() && mark.sdev.is_none() {
            return None;
        }
        marks.push(mark);
    }
    let (flags, event_flags) = head?;
    Some((flags, event_flags, marks))
}

/// The mount point of mount `mnt_id` of process `pid`, checked to still lead to that mount
/// (not covered by a later mount).
fn mount_point(pid: Pid, mnt_id: u64) -> Result<String, String> {
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).map_err(|e| e.to_string())?;
    let path = mountinfo
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.first()?.parse::<u64>().ok()? == mnt_id).then(|| f.get(4).map(|p| unescape(p)))?
        })
        .ok_or_else(|| format!("no mount with id {mnt_id}"))?;
    let dir = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    let info = std::fs::read_to_string(format!(
        "/proc/self/fdinfo/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    ))
    .map_err(|e| e.to_string())?;
    match field(&info, "mnt_id:").and_then(|v| v.parse::<u64>().ok()) {
        Some(id) if id == mnt_id => Ok(path),
        _ => Err(format!("{path} leads to another mount now (covered)")),
    }
}

/// A fanotify group: its init flags, event flags and marks. Events queued and not read yet
/// cannot be put back into a new group: a non-empty queue is refused.
fn fanotify(pid: Pid, fd: i32, info: &str) -> Result<FanotifyState, DumpError> {
    let queued = sys::fionread(steal(pid, fd)?.as_fd()).map_err(|e| {
        unsupported(
            fd,
            format!("a fanotify group whose queue cannot be read ({e})"),
        )
    })?;
    if queued > 0 {
        return Err(unsupported(
            fd,
            format!("a fanotify group with {queued} bytes of unread events"),
        ));
    }
    let (flags, event_flags, lines) = parse_fanotify(info).ok_or_else(|| bad(fd, "fanotify"))?;
    let mut marks = Vec::with_capacity(lines.len());
    for m in &lines {
        let fail = |what: String| unsupported(fd, format!("fanotify mark on {what}"));
        let target = match (m.ino, m.mnt_id, m.sdev) {
            (Some(ino), _, Some(sdev)) => {
                let w = WatchLine {
                    wd: 0,
                    sdev,
                    mask: m.mask,
                    handle_type: m.handle.as_ref().map(|h| h.0),
                    handle: m.handle.as_ref().map(|h| h.1.clone()).unwrap_or_default(),
                };
                let path = watch_path(&w).map_err(|why| fail(format!("inode {ino} ({why})")))?;
                let identity =
                    identity_of(&path).map_err(|e| fail(format!("inode {ino}, {path} ({e})")))?;
                if identity.ino != ino {
                    return Err(fail(format!(
                        "inode {ino}: its path {path} leads to inode {} now",
                        identity.ino
                    )));
                }
                FanotifyTarget::Inode(FileRef { path, identity })
            }
            (None, Some(id), _) => FanotifyTarget::Mount {
                path: mount_point(pid, id).map_err(|why| fail(format!("mount {id} ({why})")))?,
            },
            (None, None, Some(sdev)) => FanotifyTarget::Filesystem {
                path: mount_of_dev(sdev)
                    .map_err(|why| fail(format!("filesystem {sdev:#x} ({why})")))?,
            },
            _ => return Err(bad(fd, "fanotify mark")),
        };
        marks.push(FanotifyMark {
            target,
            mflags: m.mflags,
            mask: m.mask,
            ignored_mask: m.ignored_mask,
        });
    }
    Ok(FanotifyState {
        flags,
        event_flags,
        marks,
    })
}

/// Undoes the `\ooo` escapes of `/proc/*/mountinfo` (space, tab, newline, backslash).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok());
        match (b[i], oct) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The memfd name in a link target or maps name `/memfd:NAME (deleted)`.
pub fn memfd_name(target: &str) -> Option<&str> {
    target.strip_prefix("/memfd:")?.strip_suffix(" (deleted)")
}

/// Reads every memfd the descriptors and mappings name, once per inode.
pub fn collect_memfds(
    pid: Pid,
    fds: &[FdState],
    vmas: &[VmaState],
) -> Result<Vec<MemfdState>, DumpError> {
    let from_fds = fds.iter().filter_map(|f| match f.kind {
        FdKind::Memfd { ino, .. } => Some((
            ino,
            format!("/proc/{pid}/fd/{}", f.fd),
            format!("fd {}", f.fd),
        )),
        _ => None,
    });
    let from_vmas = vmas.iter().filter_map(|v| match v.kind {
        VmaKind::Memfd { ino } => Some((
            ino,
            format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end),
            format!("vma {:#x}-{:#x}", v.start, v.end),
        )),
        _ => None,
    });
    let mut out: Vec<MemfdState> = Vec::new();
    let mut bytes = 0usize;
    for (ino, path, who) in from_fds.chain(from_vmas) {
        if out.iter().any(|m| m.ino == ino) {
            continue;
        }
        let fail = |what: String| DumpError::Unsupported(format!("{who}: memfd {what}"));
        let file = File::open(&path).map_err(|e| fail(format!("cannot be read ({e})")))?;
        let meta = file
            .metadata()
            .map_err(|e| fail(format!("cannot be read ({e})")))?;
        if meta.ino() != ino {
            return Err(fail("changed during the dump".into()));
        }
        let name = std::fs::read_link(&path)
            .ok()
            .and_then(|l| memfd_name(&l.to_string_lossy()).map(str::to_owned))
            .unwrap_or_default();
        let seals = fcntl(&file, FcntlArg::F_GET_SEALS)
            .map_err(|e| fail(format!("seals cannot be read ({e})")))?;
        let extents =
            read_extents(&file, meta.len()).map_err(|e| fail(format!("cannot be read ({e})")))?;
        bytes += extents.iter().map(|e| e.data.len()).sum::<usize>();
        if bytes > MAX_MEMFD_BYTES {
            return Err(DumpError::Unsupported(format!(
                "{who}: memfd {name:?}: more than {} MiB of memfd data in one process is not supported yet",
                MAX_MEMFD_BYTES >> 20
            )));
        }
        out.push(MemfdState {
            ino,
            name,
            mode: meta.mode() & 0o7777,
            size: meta.len(),
            seals: seals as u32,
            extents,
        });
    }
    Ok(out)
}

/// The data of a file without its holes (`SEEK_DATA`/`SEEK_HOLE`).
pub(super) fn read_extents(file: &File, size: u64) -> Result<Vec<MemfdExtent>, nix::Error> {
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match lseek(file, at as i64, Whence::SeekData) {
            Ok(s) => s as u64,
            Err(nix::Error::ENXIO) => break, // only a hole is left
            Err(e) => return Err(e),
        };
        let end = (lseek(file, start as i64, Whence::SeekHole)? as u64).min(size);
        let mut data = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut data, start)
            .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        out.push(MemfdExtent {
            offset: start,
            data,
        });
        at = end;
    }
    Ok(out)
}

/// What is not supported about the memfd at `path`: hugetlbfs ones, or one we cannot open.
pub fn memfd_problem(path: &str) -> Option<String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(format!("a memfd that cannot be opened ({e})")),
    };
    match fstatfs(&file) {
        Ok(s) if s.filesystem_type() == HUGETLBFS_MAGIC => Some("a hugetlb memfd".into()),
        Ok(_) => None,
        Err(e) => Some(format!("a memfd that cannot be opened ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timerfd_fdinfo() {
        let t = "pos:\t0\nflags:\t02\nclockid: 1\nticks: 4\nsettime flags: 01\nit_value: (0, 29805587)\nit_interval: (1, 5)\n";
        let s = parse_timerfd(t).unwrap().unwrap();
        assert_eq!((s.clockid, s.ticks, s.settime_flags), (1, 4, 1));
        assert_eq!((s.value_ns, s.interval_ns), (29_805_587, 1_000_000_005));
        // Expired periodic timer, not moved on yet.
        assert_eq!(
            parse_timerfd(
                "clockid: 1\nticks: 1\nsettime flags: 00\nit_value: (0, 0)\nit_interval: (0, 100)\n"
            ),
            Some(None)
        );
    }

    #[test]
    fn inotify_fdinfo() {
        let t = "flags:\t04000\ninotify wd:a ino:2e1 sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:e102000000000000\n\
                 inotify wd:1 ino:3c4a7 sdev:fe00001 mask:300 ignored_mask:0\n";
        let w = parse_inotify(t).unwrap();
        assert_eq!(
            w[0],
            WatchLine {
                wd: 1,
                sdev: 0xfe00001,
                mask: 0x300,
                handle_type: None,
                handle: vec![]
            }
        );
        assert_eq!(w[1].wd, 10);
        assert_eq!(w[1].handle_type, Some(1));
        assert_eq!(w[1].handle, vec![0xe1, 2, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn fanotify_fdinfo() {
        let t = "pos:\t0\nflags:\t04002\nfanotify flags:12 event-flags:48000\n\
                 fanotify sdev:1b mflags:0 mask:1000 ignored_mask:0\n\
                 fanotify mnt_id:1e mflags:0 mask:1000 ignored_mask:0\n\
                 fanotify ino:98c065 sdev:fe00000 mflags:40 mask:a ignored_mask:2 fhandle-bytes:8 fhandle-type:1 f_handle:65c0980052ca556e\n";
        let (flags, event_flags, marks) = parse_fanotify(t).unwrap();
        assert_eq!((flags, event_flags, marks.len()), (0x12, 0x48000, 3));
        assert_eq!(
            (marks[0].sdev, marks[0].ino, marks[0].mask),
            (Some(0x1b), None, 0x1000)
        );
        assert_eq!((marks[1].mnt_id, marks[1].sdev), (Some(0x1e), None));
        let m = &marks[2];
        assert_eq!(
            (m.ino, m.sdev, m.mflags, m.mask, m.ignored_mask),
            (Some(0x98c065), Some(0xfe00000), 0x40, 0xa, 2)
        );
        assert_eq!(
            m.handle,
            Some((1, vec![0x65, 0xc0, 0x98, 0, 0x52, 0xca, 0x55, 0x6e]))
        );
        // No group line, or a mark on nothing: not fanotify fdinfo.
        assert!(parse_fanotify("fanotify mnt_id:1e mflags:0 mask:1 ignored_mask:0\n").is_none());
        assert!(
            parse_fanotify(
                "fanotify flags:0 event-flags:0\nfanotify mflags:0 mask:1 ignored_mask:0\n"
            )
            .is_none()
        );
        assert!(
            parse_fanotify(
                "fanotify flags:0 event-flags:0\nfanotify sdev:zz mflags:0 mask:1 ignored_mask:0\n"
            )
            .is_none()
        );
    }

    #[test]
    fn names_and_escapes() {
        assert_eq!(
            memfd_name("/memfd:hello world (deleted)"),
            Some("hello world")
        );
        assert_eq!(memfd_name("/tmp/x (deleted)"), None);
        assert_eq!(unescape("/mnt/a\\040b\\134"), "/mnt/a b\\");
    }
}
