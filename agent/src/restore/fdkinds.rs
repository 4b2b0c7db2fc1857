//! Kernel-object descriptors: eventfd, signalfd, timerfd and inotify are created inside the
//! task by injected calls; memfds are created and filled by the restorer, and the task opens
//! them through `/proc/RESTORER/fd/N` for its descriptors and mappings.

use std::fs::{File, Permissions};
use std::os::unix::fs::{FileExt, PermissionsExt};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use super::RestoreError;
use super::inject::Injector;
use crate::state::{FdKind, ProcessState, TimerfdState};

/// `_IOW('T', 0, u64)`: sets the expirations a timerfd reports (needs `CONFIG_CHECKPOINT_RESTORE`).
const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;

/// The image's memfds, made by the restorer, filled and not yet sealed.
#[derive(Debug, Default)]
pub struct Memfds {
    files: Vec<(u64, File, u32)>,
}

impl Memfds {
    /// Creates every memfd of the image with its name, mode, size and data.
    pub fn create(state: &ProcessState) -> Result<Self, RestoreError> {
        let mut files = Vec::with_capacity(state.memfds.len());
        for m in &state.memfds {
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
            files.push((m.ino, file, m.seals));
        }
        Ok(Self { files })
    }

    /// A path through which the task opens memfd `ino` (a new open file description).
    pub fn path(&self, ino: u64) -> Option<String> {
        let (_, file, _) = self.files.iter().find(|(i, _, _)| *i == ino)?;
        Some(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(file)
        ))
    }

    /// Applies the seals. Only once the task's mappings exist: `F_SEAL_FUTURE_WRITE` forbids
    /// new writable mappings that the process had made before sealing.
    pub fn seal(&self, state: &ProcessState) -> Result<(), RestoreError> {
        for (ino, file, seals) in &self.files {
            if *seals == 0 {
                continue;
            }
            fcntl(
                file,
                FcntlArg::F_ADD_SEALS(SealFlag::from_bits_retain(*seals as i32)),
            )
            .map_err(|e| RestoreError::Memfd {
                name: state
                    .memfds
                    .iter()
                    .find(|m| m.ino == *ino)
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
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
            for w in watches {
                let path = inj.put_path(&w.file.path)?;
                // The path names the very inode that was watched: never follow a symlink.
                let mask = u64::from(w.mask | libc::IN_DONT_FOLLOW);
                let wd = inj
                    .call(
                        "inotify_add_watch",
                        libc::SYS_inotify_add_watch,
                        [new, path, mask, 0, 0, 0],
                    )
                    .map_err(err(format!("watch {}", w.file.path)))?;
                if wd != w.wd as u64 {
                    return Err(RestoreError::Layout(format!(
                        "fd {fd}: inotify watch on {} got descriptor {wd}, not {}",
                        w.file.path, w.wd
                    )));
                }
            }
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
