//! Kernel-object descriptors: eventfd, signalfd, timerfd, inotify and fanotify are created inside the
//! task by injected calls; memfds are created and filled by the restorer, and the task opens
//! them through `/proc/RESTORER/fd/N` for its descriptors and mappings.

use std::fs::{File, Permissions};
use std::os::unix::fs::{FileExt, PermissionsExt};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use super::RestoreError;
use super::inject::Injector;
use crate::image::MAX_INOTIFY_GAPS;
use crate::state::{FdKind, InotifyWatch, ProcessState, TimerfdState};

/// `_IOW('T', 0, u64)`: sets the expirations a timerfd reports (needs `CONFIG_CHECKPOINT_RESTORE`).
const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;

/// The image's memfds, made by the restorer, filled and not yet sealed.
#[derive(Debug, Default)]
pub struct Memfds {
    /// Inode at dump time, the file, its seals and its name.
    files: Vec<(u64, File, u32, String)>,
}

impl Memfds {
    /// Creates every memfd of the image with its name, mode, size and data, once per inode
    /// over all the processes of `states`: processes of a tree that held one memfd hold one
    /// again.
    pub fn create(states: &[&ProcessState]) -> Result<Self, RestoreError> {
        let mut files: Vec<(u64, File, u32, String)> = Vec::new();
        for m in states.iter().flat_map(|s| &s.memfds) {
            if files.iter().any(|(ino, ..)| *ino == m.ino) {
                continue;
            }
            let err = |step: &'static str| {
                let name = m.name.clone();
                move |e: std::io::Error| RestoreError::Memfd {
                    name,
                    step,
                    source: e,
                }
            };
            // Sealing comes last (`seal`), after the task has mapped it.
            let fd = memfd_create(
                m.name.as_str(),
                MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
            )
            .map_err(|e| err("memfd_create")(e.into()))?;
            let file = File::from(fd);
            file.set_len(m.size).map_err(err("set size"))?;
            for e in &m.extents {
                file.write_all_at(&e.data, e.offset).map_err(err("write"))?;
            }
            file.set_permissions(Permissions::from_mode(m.mode))
                .map_err(err("chmod"))?;
            files.push((m.ino, file, m.seals, m.name.clone()));
        }
        Ok(Self { files })
    }

    /// A path through which the task opens memfd `ino` (a new open file description).
    pub fn path(&self, ino: u64) -> Option<String> {
        let (_, file, ..) = self.files.iter().find(|(i, ..)| *i == ino)?;
        Some(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(file)
        ))
    }

    /// Applies the seals. Only once the task's mappings exist: `F_SEAL_FUTURE_WRITE` forbids
    /// new writable mappings that the process had made before sealing.
    pub fn seal(&self) -> Result<(), RestoreError> {
        for (_, file, seals, name) in &self.files {
            if *seals == 0 {
                continue;
            }
            fcntl(
                file,
                FcntlArg::F_ADD_SEALS(SealFlag::from_bits_retain(*seals as i32)),
            )
            .map_err(|e| RestoreError::Memfd {
                name: name.clone(),
                step: "seal",
                source: e.into(),
            })?;
        }
        Ok(())
    }
}

fn timespec(ns: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    b[8..].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
    b
}

/// Creates a descriptor of an injected `kind` in the task, set up as in the image, and
/// returns its number. `flags` are its file status flags (only `O_NONBLOCK` matters).
pub fn create(inj: &Injector<'_>, fd: i32, flags: u32, kind: &FdKind) -> Result<u64, RestoreError> {
    let err = |what: String| {
        move |e: crate::ptrace::PtraceError| RestoreError::Fd {
            fd,
            what,
            source: Box::new(e.into()),
        }
    };
    let nonblock = u64::from(flags & libc::O_NONBLOCK as u32);
    match kind {
        FdKind::Eventfd { count, semaphore } => {
            let efd_flags = nonblock
                | if *semaphore {
                    libc::EFD_SEMAPHORE as u64
                } else {
                    0
                };
            let new = inj
                .call("eventfd2", libc::SYS_eventfd2, [0, efd_flags, 0, 0, 0, 0])
                .map_err(err("eventfd2".into()))?;
            if *count > 0 {
                // The counter is 64 bits wide; eventfd2 takes only 32.
                let addr = inj.put(4096, &count.to_le_bytes())?;
                inj.call("write", libc::SYS_write, [new, addr, 8, 0, 0, 0])
                    .map_err(err(format!("set the counter to {count}")))?;
            }
            Ok(new)
        }
        // Every process of the tree exists by now (zombies too): the PID names the same one.
        FdKind::Pidfd { pid } => inj
            .call(
                "pidfd_open",
                libc::SYS_pidfd_open,
                [*pid as u64, 0, 0, 0, 0, 0],
            )
            .map_err(err(format!("pidfd_open({pid})"))),
        FdKind::Signalfd { mask } => {
            let addr = inj.put(4096, &mask.to_le_bytes())?;
            inj.call(
                "signalfd4",
                libc::SYS_signalfd4,
                [u64::MAX, addr, 8, nonblock, 0, 0],
            )
            .map_err(err("signalfd4".into()))
        }
        FdKind::Timerfd(t) => timerfd(inj, t, nonblock).map_err(|e| RestoreError::Fd {
            fd,
            what: "timerfd".into(),
            source: Box::new(e),
        }),
        FdKind::Inotify { watches } => {
            let new = inj
                .call(
                    "inotify_init1",
                    libc::SYS_inotify_init1,
                    [nonblock, 0, 0, 0, 0, 0],
                )
                .map_err(err("inotify_init1".into()))?;
            inotify_watches(inj, fd, new, watches)?;
            Ok(new)
        }
        FdKind::Fanotify(g) => {
            let new = inj
                .call(
                    "fanotify_init",
                    libc::SYS_fanotify_init,
                    [u64::from(g.flags), u64::from(g.event_flags), 0, 0, 0, 0],
                )
                .map_err(err(format!(
                    "fanotify_init({:#x}, {:#o})",
                    g.flags, g.event_flags
                )))?;
            fanotify_marks(inj, fd, new, g)?;
            // The group's flags say what the descriptor had at fanotify_init; the process may
            // have changed its status flags since.
            inj.call(
                "fcntl",
                libc::SYS_fcntl,
                [new, libc::F_SETFL as u64, u64::from(flags), 0, 0, 0],
            )
            .map_err(err("set status flags".into()))?;
            Ok(new)
        }
        _ => Err(RestoreError::Layout(format!(
            "fd {fd}: not a kind created by injection"
        ))),
    }
}

/// A timerfd on its clock: armed with the time that was left (or its absolute expiry), the
/// same period, and the expirations not read yet.
fn timerfd(inj: &Injector<'_>, t: &TimerfdState, nonblock: u64) -> Result<u64, RestoreError> {
    let new = inj.call(
        "timerfd_create",
        libc::SYS_timerfd_create,
        [t.clockid as u64, nonblock, 0, 0, 0, 0],
    )?;
    if t.value_ns != 0 {
        let mut spec = Vec::with_capacity(32);
        spec.extend_from_slice(&timespec(t.interval_ns));
        spec.extend_from_slice(&timespec(t.value_ns));
        let addr = inj.put(4096, &spec)?;
        inj.call(
            "timerfd_settime",
            libc::SYS_timerfd_settime,
            [new, u64::from(t.settime_flags), addr, 0, 0, 0],
        )?;
    }
    // After settime, which clears the count.
    if t.ticks > 0 {
        let addr = inj.put(4096, &t.ticks.to_le_bytes())?;
        inj.call(
            "ioctl(TFD_IOC_SET_TICKS)",
            libc::SYS_ioctl,
            [new, TFD_IOC_SET_TICKS, addr, 0, 0, 0],
        )?;
    }
    Ok(new)
}

/// Adds the watches so that each gets its old descriptor. Descriptors are handed out
/// increasing from 1 and never reused, so a watch removed before the dump left a gap. Every
/// number up to the last is taken in order, gaps by placeholder watches on files of a
/// temporary directory; no watch asks for events yet, so removing the placeholders queues
/// exactly one `IN_IGNORED` event (16 bytes) each, which are read away. Only then do the real
/// watches get their masks (adding a watch on the same inode again keeps its descriptor).
fn inotify_watches(
    inj: &Injector<'_>,
    fd: i32,
    ifd: u64,
    watches: &[InotifyWatch],
) -> Result<(), RestoreError> {
    let last = watches.last().map_or(0, |w| w.wd);
    let gaps = (last as usize).saturating_sub(watches.len());
    if gaps > MAX_INOTIFY_GAPS {
        return Err(RestoreError::Layout(format!(
            "fd {fd}: {gaps} removed inotify watches to fill"
        )));
    }
    let dir = Placeholders::new(gaps)?;
    let add = |path: &str, mask: u32, want: i32| -> Result<(), RestoreError> {
        let addr = inj.put_path(path)?;
        // The path names the very inode that was watched: never follow a symlink.
        let mask = u64::from(mask | libc::IN_DONT_FOLLOW);
        let wd = inj
            .call(
                "inotify_add_watch",
                libc::SYS_inotify_add_watch,
                [ifd, addr, mask, 0, 0, 0],
            )
            .map_err(|e| RestoreError::Fd {
                fd,
                what: format!("inotify watch {want} on {path}"),
                source: Box::new(e.into()),
            })?;
        if wd != want as u64 {
            return Err(RestoreError::Layout(format!(
                "fd {fd}: the inotify watch on {path} got descriptor {wd}, not {want}"
            )));
        }
        Ok(())
    };
    let mut real = watches.iter().peekable();
    let mut placeholders = Vec::with_capacity(gaps);
    for wd in 1..=last {
        match real.next_if(|w| w.wd == wd) {
            Some(w) => add(&w.file.path, 0, wd)?,
            None => {
                add(&dir.file(wd)?, 0, wd)?;
                placeholders.push(wd);
            }
        }
    }
    for wd in &placeholders {
        inj.call(
            "inotify_rm_watch",
            libc::SYS_inotify_rm_watch,
            [ifd, *wd as u64, 0, 0, 0, 0],
        )?;
    }
    let mut left = placeholders.len() as u64 * 16;
    while left > 0 {
        // Scratch memory of the injection area, from offset 4096.
        let n = inj.call(
            "read",
            libc::SYS_read,
            [ifd, inj.area + 4096, left.min(32 << 10), 0, 0, 0],
        )?;
        if n == 0 {
            return Err(RestoreError::Layout(format!(
                "fd {fd}: the placeholder watches left no events to read"
            )));
        }
        left = left.saturating_sub(n);
    }
    for w in watches {
        add(&w.file.path, w.mask, w.wd)?;
    }
    Ok(())
}

/// `FAN_MARK_*` flags.
const FAN_MARK_ADD: u32 = 0x1;
const FAN_MARK_DONT_FOLLOW: u32 = 0x4;
const FAN_MARK_IGNORED_MASK: u32 = 0x20;
const FAN_MARK_EVICTABLE: u32 = 0x200;
const FAN_MARK_IGNORE: u32 = 0x400;
const FAN_MARK_MOUNT: u32 = 0x10;
const FAN_MARK_FILESYSTEM: u32 = 0x100;
const FAN_MARK_IGNORED_SURV_MODIFY: u32 = 0x40;

/// Adds a group's marks: each with its mask, then its ignored mask (the old
/// `FAN_MARK_IGNORED_MASK` or the newer `FAN_MARK_IGNORE`, as the mark had), evictable as it
/// was. The kernel lists a group's marks newest first: they are added oldest first.
fn fanotify_marks(
    inj: &Injector<'_>,
    fd: i32,
    group: u64,
    g: &crate::state::FanotifyState,
) -> Result<(), RestoreError> {
    use crate::state::FanotifyTarget;
    for m in g.marks.iter().rev() {
        let (kind, path) = match &m.target {
            FanotifyTarget::Inode(f) => (FAN_MARK_DONT_FOLLOW, &f.path),
            FanotifyTarget::Mount { path } => (FAN_MARK_MOUNT, path),
            FanotifyTarget::Filesystem { path } => (FAN_MARK_FILESYSTEM, path),
        };
        let addr = inj.put_path(path)?;
        let mut first = FAN_MARK_ADD | kind | (m.mflags & FAN_MARK_EVICTABLE);
        let mark = |flags: u32, mask: u32| -> Result<(), RestoreError> {
            inj.call(
                "fanotify_mark",
                libc::SYS_fanotify_mark,
                [
                    group,
                    u64::from(flags),
                    u64::from(mask),
                    libc::AT_FDCWD as u64,
                    addr,
                    0,
                ],
            )
            .map_err(|e| RestoreError::Fd {
                fd,
                what: format!("fanotify mark on {path} (flags {flags:#x}, mask {mask:#x})"),
                source: Box::new(e.into()),
            })?;
            Ok(())
        };
        if m.mask != 0 {
            mark(first, m.mask)?;
            first = FAN_MARK_ADD | kind;
        }
        if m.ignored_mask != 0 || m.mflags & FAN_MARK_IGNORE != 0 {
            let style = if m.mflags & FAN_MARK_IGNORE != 0 {
                FAN_MARK_IGNORE
            } else {
                FAN_MARK_IGNORED_MASK
            };
            mark(
                first | style | (m.mflags & FAN_MARK_IGNORED_SURV_MODIFY),
                m.ignored_mask,
            )?;
        }
    }
    Ok(())
}

/// A temporary directory of empty files, one per placeholder watch, removed on drop.
struct Placeholders(Option<std::path::PathBuf>);

impl Placeholders {
    fn new(count: usize) -> Result<Self, RestoreError> {
        if count == 0 {
            return Ok(Self(None));
        }
        let dir = std::env::temp_dir().join(format!(".ferry-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| RestoreError::FileChanged(format!("create {}: {e}", dir.display())))?;
        Ok(Self(Some(dir)))
    }

    fn file(&self, wd: i32) -> Result<String, RestoreError> {
        let dir = self
            .0
            .as_ref()
            .ok_or_else(|| RestoreError::Layout("no placeholder directory".into()))?;
        let path = dir.join(wd.to_string());
        File::create(&path)
            .map_err(|e| RestoreError::FileChanged(format!("create {}: {e}", path.display())))?;
        Ok(path.to_string_lossy().into_owned())
    }
}

impl Drop for Placeholders {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
