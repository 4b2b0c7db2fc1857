//! The controlling terminal of a session leader: taken back with `TIOCSCTTY` right after its
//! `setsid()` (before its children are forked, so that they inherit it), and the foreground
//! process group set with `TIOCSPGRP` once the groups exist. Both run inside the task, on a
//! descriptor it opens for the purpose and closes again.
//!
//! A terminal that is gone, or that is now the controlling terminal of another session, is
//! not taken: the process runs without one, and a warning says so.

use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;

use super::RestoreError;
use super::inject::Injector;
use crate::state::CttyState;

/// Opens the terminal in the task (without making it the controlling terminal) and returns
/// the descriptor, or `None` (with a warning) when it is not the same device any more.
fn open(
    inj: &Injector<'_>,
    tty: &CttyState,
    warnings: &mut Vec<String>,
) -> Result<Option<u64>, RestoreError> {
    let pid = inj.tracee().pid();
    if !std::fs::metadata(&tty.path).is_ok_and(|m| m.rdev() == tty.rdev) {
        warnings.push(format!(
            "pid {pid}: its controlling terminal {} is gone; it has none now",
            tty.path
        ));
        return Ok(None);
    }
    let path = inj.put_path(&tty.path)?;
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC;
    match inj.call_raw(
        libc::SYS_openat,
        [libc::AT_FDCWD as u64, path, flags as u64, 0, 0, 0],
    )? {
        Ok(fd) => Ok(Some(fd)),
        Err(e) => {
            warnings.push(format!(
                "pid {pid}: its controlling terminal {} cannot be opened ({e}); it has none now",
                tty.path
            ));
            Ok(None)
        }
    }
}

/// Makes `tty` the controlling terminal of the task, a session leader without one.
pub fn take(
    inj: &Injector<'_>,
    tty: &CttyState,
    warnings: &mut Vec<String>,
) -> Result<bool, RestoreError> {
    let Some(fd) = open(inj, tty, warnings)? else {
        return Ok(false);
    };
    // 0: never steal a terminal that is another session's.
    let r = inj.call_raw(libc::SYS_ioctl, [fd, libc::TIOCSCTTY, 0, 0, 0, 0])?;
    inj.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    match r {
        Ok(_) => Ok(true),
        Err(e) => {
            let why = if e == Errno::EPERM {
                "it is the controlling terminal of another session".to_string()
            } else {
                e.to_string()
            };
            warnings.push(format!(
                "pid {}: its controlling terminal {} was not taken back ({why}); it has none now",
                inj.tracee().pid(),
                tty.path
            ));
            Ok(false)
        }
    }
}

/// Sets the foreground process group of the task's controlling terminal `tty` to `pgid`.
/// Signals are blocked in the task, so `SIGTTOU` does not get in the way.
pub fn set_foreground(
    inj: &Injector<'_>,
    tty: &CttyState,
    pgid: i32,
    warnings: &mut Vec<String>,
) -> Result<(), RestoreError> {
    let Some(fd) = open(inj, tty, warnings)? else {
        return Ok(());
    };
    let at = inj.put(4096, &pgid.to_le_bytes())?;
    let r = inj.call_raw(libc::SYS_ioctl, [fd, libc::TIOCSPGRP, at, 0, 0, 0])?;
    inj.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    if let Err(e) = r {
        warnings.push(format!(
            "pid {}: foreground process group {pgid} of {} not set ({e})",
            inj.tracee().pid(),
            tty.path
        ));
    }
    Ok(())
}
