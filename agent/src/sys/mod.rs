//! The only place with `unsafe`: raw system calls that `nix` does not wrap (ptrace register
//! sets and signal queries, `clone3` with `set_tid`, `prlimit`, robust lists, pidfds). Each
//! function is a thin, typed wrapper; policy lives elsewhere.
#![allow(unsafe_code)]

pub mod clone;
pub mod ptrace;
pub mod socket;

use std::os::fd::{FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::unistd::Pid;

/// `prlimit64(pid, resource, &new, NULL)`.
pub fn set_rlimit(pid: Pid, resource: u32, cur: u64, max: u64) -> Result<(), Errno> {
    let new = libc::rlimit64 {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: `new` is a valid rlimit64 that outlives the call; the old-limit pointer is null.
    let r = unsafe {
        libc::prlimit64(
            pid.as_raw(),
            resource as libc::__rlimit_resource_t,
            &new,
            std::ptr::null_mut(),
        )
    };
    Errno::result(r).map(drop)
}

/// `get_robust_list(tid)`: the head pointer and length registered by the thread.
pub fn get_robust_list(tid: Pid) -> Result<(u64, u64), Errno> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: both out-pointers are valid for writes of a pointer and a size_t.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid.as_raw(),
            &mut head as *mut u64,
            &mut len as *mut libc::size_t,
        )
    };
    Errno::result(r).map(|_| (head, len as u64))
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = Errno::result(r)?;
    // SAFETY: on success the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
