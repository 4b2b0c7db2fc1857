//! The only place with `unsafe`: raw system calls that `nix` does not wrap (ptrace register
//! sets and signal queries, `clone3` with `set_tid`, `prlimit`, robust lists, pidfds,
//! timerfds, file handles). Each function is a thin, typed wrapper; policy lives elsewhere.
#![allow(unsafe_code)]

pub mod clone;
pub mod pagemap;
pub mod ptrace;
pub mod socket;
pub mod tty;
pub mod uffd;

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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

/// Marks every descriptor from `first` up close-on-exec (`close_range(first, ~0,
/// CLOSE_RANGE_CLOEXEC)`): what a program inherited without asking (a shell's stray
/// descriptors) is not handed on to the programs it starts.
pub fn cloexec_from(first: u32) -> Result<(), Errno> {
    // SAFETY: plain syscall with integer arguments; no descriptor is closed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
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

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`: a signal to the process behind `pidfd` (never
/// to another that took its PID).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> Result<(), Errno> {
    // SAFETY: plain syscall: a descriptor, a signal number, a null siginfo and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(r).map(drop)
}

/// `struct pidfd_info` (include/uapi/linux/pidfd.h) in its first published size (64 bytes,
/// `PIDFD_INFO_SIZE_VER0`), whose last field became `exit_code` in 6.15; the kernel copies
/// only as much as the size in the ioctl number says.
#[repr(C)]
#[derive(Debug, Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    /// pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid.
    ids: [u32; 11],
    exit_code: i32,
}

const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 64);

/// `PIDFD_INFO_EXIT`: the exit status, known once the process has been reaped.
const PIDFD_INFO_EXIT: u64 = 1 << 3;

/// `PIDFD_GET_INFO` = `_IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info)` for the 64-byte
/// struct: direction read|write (3) in bits 30–31, size in 16–29, type in 8–15, number in 0–7.
const PIDFD_GET_INFO: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as libc::c_ulong) << 16) | (0xFF << 8) | 11;

/// The wait status (as `waitpid` gives it) of the process behind `pidfd`, from the kernel's
/// `PIDFD_GET_INFO` with `PIDFD_INFO_EXIT` (Linux 6.15): known to any holder of a pidfd
/// opened before the process was reaped, also after its parent reaped it. `Ok(None)` while
/// it has not been reaped (running, or a zombie), or when the kernel kept no status.
/// `ENOTTY`/`EINVAL` on kernels without the ioctl; `ESRCH` on 6.13–6.14 once it is reaped.
pub fn pidfd_exit_status(pidfd: BorrowedFd<'_>) -> Result<Option<i32>, Errno> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: `info` is a valid, writable 64-byte `struct pidfd_info` that outlives the call,
    // and the ioctl number names exactly that size, so the kernel writes at most 64 bytes.
    let r = unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_INFO as _,
            &mut info as *mut PidfdInfo,
        )
    };
    Errno::result(r)?;
    Ok((info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code))
}

/// Waits until our child `pid` has ended and reaps it, without ever consuming a ptrace stop:
/// the child may be traced meanwhile by another thread of this process (a migration of the
/// child onwards), and `waitpid` from any thread of the tracer's process would take that
/// thread's ptrace events. The pidfd becomes readable only once the process has exited.
pub fn wait_exit(pid: Pid) -> Result<nix::sys::wait::WaitStatus, Errno> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    use std::os::fd::AsFd;
    let pidfd = pidfd_open(pid)?;
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    loop {
        match waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// `kcmp(pid, pid, KCMP_FILE, fd1, fd2) == 0`: whether two descriptors of `pid` are the same
/// open file description.
pub fn same_file_description(pid: Pid, fd1: i32, fd2: i32) -> Result<bool, Errno> {
    const KCMP_FILE: libc::c_int = 0;
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid.as_raw(),
            pid.as_raw(),
            KCMP_FILE,
            fd1 as libc::c_ulong,
            fd2 as libc::c_ulong,
        )
    };
    Errno::result(r).map(|r| r == 0)
}

/// `kcmp(pid1, pid2, KCMP_FILE, fd1, fd2) == 0`: whether descriptors of two processes are
/// the same open file description.
pub fn same_file_description_in(pid1: Pid, fd1: i32, pid2: Pid, fd2: i32) -> Result<bool, Errno> {
    const KCMP_FILE: libc::c_int = 0;
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            KCMP_FILE,
            fd1 as libc::c_ulong,
            fd2 as libc::c_ulong,
        )
    };
    Errno::result(r).map(|r| r == 0)
}

/// What [`same_kernel_object`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kcmp {
    /// The address space (`KCMP_VM`).
    Vm = 1,
    /// The descriptor table (`KCMP_FILES`).
    Files = 2,
    /// Root, working directory and umask (`KCMP_FS`).
    Fs = 3,
    /// The list of SysV semaphore undo adjustments (`KCMP_SYSVSEM`; a process without one has
    /// none to compare, the same as any other without one).
    Sysvsem = 6,
}

/// `kcmp(pid1, pid2, what, 0, 0) == 0`: whether two processes share that kernel object.
pub fn same_kernel_object(pid1: Pid, pid2: Pid, what: Kcmp) -> Result<bool, Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            what as libc::c_int,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    Errno::result(r).map(|r| r == 0)
}

/// `kcmp(pid, pid, KCMP_EPOLL_TFD, fd, {efd, tfd, toff}) == 0`: whether descriptor `fd` of
/// `pid` is the file of the `toff`-th entry added under number `tfd` to its epoll instance
/// `efd`.
pub fn epoll_target_is(pid: Pid, fd: i32, efd: i32, tfd: i32, toff: u32) -> Result<bool, Errno> {
    const KCMP_EPOLL_TFD: libc::c_int = 7;
    // struct kcmp_epoll_slot { __u32 efd, tfd, toff; }
    let slot: [u32; 3] = [efd as u32, tfd as u32, toff];
    // SAFETY: the kernel only reads the 12-byte slot, which lives across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid.as_raw(),
            pid.as_raw(),
            KCMP_EPOLL_TFD,
            fd as libc::c_ulong,
            slot.as_ptr(),
        )
    };
    Errno::result(r).map(|r| r == 0)
}

/// `ioctl(fd, FIONREAD)`: bytes queued in a pipe.
pub fn fionread(fd: BorrowedFd<'_>) -> Result<usize, Errno> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid for that write.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    Errno::result(r)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `tee(from, to, len, SPLICE_F_NONBLOCK)`: copies up to `len` queued bytes of the pipe `from`
/// into the pipe `to` without consuming them. An empty pipe gives `Ok(0)`.
pub fn tee(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> Result<usize, Errno> {
    // SAFETY: plain syscall on two descriptors that stay open for the call.
    let r = unsafe {
        libc::tee(
            from.as_raw_fd(),
            to.as_raw_fd(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    match Errno::result(r) {
        Ok(n) => Ok(n as usize),
        Err(Errno::EAGAIN) => Ok(0),
        Err(e) => Err(e),
    }
}

/// `pidfd_getfd(pidfd, fd, 0)`: a copy of another process's descriptor (the same open file
/// description), which needs ptrace access to that process.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    let fd = Errno::result(r)?;
    // SAFETY: on success the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `timerfd_gettime`: time left and period, in nanoseconds. For a periodic timer that expired
/// unread, this also moves the timer on and counts the missed periods into its ticks.
pub fn timerfd_gettime(fd: BorrowedFd<'_>) -> Result<(u64, u64), Errno> {
    let mut it = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    };
    // SAFETY: `it` is a valid itimerspec for the kernel to write.
    let r = unsafe { libc::timerfd_gettime(fd.as_raw_fd(), &mut it) };
    Errno::result(r)?;
    let ns = |t: libc::timespec| {
        (t.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec as u64)
    };
    Ok((ns(it.it_value), ns(it.it_interval)))
}

/// `open_by_handle_at(mount_fd, {handle_type, handle}, O_PATH)`: the file a handle names,
/// on the filesystem of `mount_fd`. Needs `CAP_DAC_READ_SEARCH`.
pub fn open_by_handle(
    mount_fd: BorrowedFd<'_>,
    handle_type: i32,
    handle: &[u8],
) -> Result<OwnedFd, Errno> {
    // struct file_handle { unsigned int handle_bytes; int handle_type; unsigned char f_handle[]; }
    let mut buf = Vec::with_capacity(8 + handle.len());
    buf.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&handle_type.to_ne_bytes());
    buf.extend_from_slice(handle);
    // SAFETY: `buf` is a complete struct file_handle whose handle_bytes matches its length; the
    // kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            buf.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    let fd = Errno::result(r)?;
    // SAFETY: on success the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `clock_gettime(clockid)` in nanoseconds.
pub fn clock_gettime_ns(clockid: i32) -> Result<u64, Errno> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the kernel to write.
    let r = unsafe { libc::clock_gettime(clockid, &mut t) };
    Errno::result(r)?;
    Ok((t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64))
}

/// `setpriority(PRIO_PROCESS, tid, nice)`: the nice value of one thread.
pub fn set_nice(tid: Pid, nice: i32) -> Result<(), Errno> {
    // SAFETY: plain syscall wrapper with integer arguments.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid.as_raw() as libc::id_t, nice) };
    Errno::result(r).map(drop)
}

/// `sched_getscheduler(tid)`: the policy, with `SCHED_RESET_ON_FORK` or'ed in when set.
pub fn get_scheduler(tid: Pid) -> Result<i32, Errno> {
    // SAFETY: plain syscall wrapper with an integer argument.
    let r = unsafe { libc::sched_getscheduler(tid.as_raw()) };
    Errno::result(r)
}

/// `sched_setscheduler(tid, policy, {priority})`; `policy` may carry `SCHED_RESET_ON_FORK`.
pub fn set_scheduler(tid: Pid, policy: u32, priority: u32) -> Result<(), Errno> {
    let param = libc::sched_param {
        sched_priority: priority as i32,
    };
    // SAFETY: `param` is a valid sched_param that outlives the call.
    let r = unsafe { libc::sched_setscheduler(tid.as_raw(), policy as i32, &param) };
    Errno::result(r).map(drop)
}

/// `IOPRIO_WHO_PROCESS`: `ioprio_get`/`ioprio_set` name one thread.
const IOPRIO_WHO_PROCESS: libc::c_long = 1;

/// `ioprio_get(IOPRIO_WHO_PROCESS, tid)`: class << 13 | level.
pub fn ioprio_get(tid: Pid) -> Result<u32, Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_get,
            IOPRIO_WHO_PROCESS,
            libc::c_long::from(tid.as_raw()),
        )
    };
    Errno::result(r).map(|v| v as u32)
}

/// `ioprio_set(IOPRIO_WHO_PROCESS, tid, prio)`.
pub fn ioprio_set(tid: Pid, prio: u32) -> Result<(), Errno> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            libc::c_long::from(tid.as_raw()),
            libc::c_long::from(prio),
        )
    };
    Errno::result(r).map(drop)
}

/// `shmctl(id, IPC_RMID, NULL)`: marks a SysV shared memory segment for removal.
pub fn shm_remove(id: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID reads no buffer; the pointer argument is null.
    let r = unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    Errno::result(r).map(drop)
}

/// `msgctl(id, IPC_STAT)`: a message queue's `msg_qbytes`, in the caller's IPC namespace.
pub fn msg_qbytes(id: i32) -> Result<u64, Errno> {
    // SAFETY: an all-zero msqid_ds is valid plain data.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one struct msqid_ds through the pointer, valid for it.
    let r = unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) };
    Errno::result(r)?;
    Ok(ds.msg_qbytes as u64)
}

/// `msgrcv(id, buf, max, index, MSG_COPY | IPC_NOWAIT)`: a copy of the message at `index`
/// (from 0) of a queue, which stays queued; its type and text. `ENOMSG`: no such message.
pub fn msg_copy(id: i32, index: usize, max: usize) -> Result<(i64, Vec<u8>), Errno> {
    const MSG_COPY: libc::c_int = 0o40000;
    let mut buf = vec![0u8; 8 + max];
    // SAFETY: the kernel writes at most 8 + max bytes (mtype, then up to max bytes of text)
    // into buf, which holds that many.
    let r = unsafe {
        libc::msgrcv(
            id,
            buf.as_mut_ptr().cast(),
            max,
            index as libc::c_long,
            MSG_COPY | libc::IPC_NOWAIT,
        )
    };
    let n = Errno::result(r)? as usize;
    let mtype = i64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
    buf.truncate(8 + n.min(max));
    Ok((mtype, buf.split_off(8)))
}

/// `semctl(id, 0, GETALL)` of a set of `n` semaphores.
pub fn sem_getall(id: i32, n: usize) -> Result<Vec<u16>, Errno> {
    let mut v = vec![0u16; n];
    // SAFETY: GETALL writes the set's (n) values, as unsigned shorts, into v, which holds n.
    let r = unsafe { libc::semctl(id, 0, libc::GETALL, v.as_mut_ptr()) };
    Errno::result(r)?;
    Ok(v)
}

/// `semctl(id, num, GETPID)`: the last process to operate on semaphore `num` (0: none), in
/// the caller's PID namespace.
pub fn sem_getpid(id: i32, num: usize) -> Result<i32, Errno> {
    // SAFETY: GETPID reads and writes no buffer.
    let r = unsafe { libc::semctl(id, num as libc::c_int, libc::GETPID) };
    Errno::result(r)
}

/// The first `size` bytes of SysV segment `id` (attached read-only in the caller's address
/// space for the copy, then detached).
pub fn shm_read(id: i32, size: usize) -> Result<Vec<u8>, Errno> {
    // SAFETY: a read-only attach anywhere the kernel chooses touches no memory of ours.
    let p = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
    if p as isize == -1 {
        return Err(Errno::last());
    }
    // SAFETY: the attach maps at least `size` bytes (the segment's size) readable at p.
    let data = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), size) }.to_vec();
    // SAFETY: p is the address shmat returned; nothing refers to the mapping any more.
    unsafe { libc::shmdt(p) };
    Ok(data)
}

/// `ioctl(fd, TIOCGWINSZ)`: a terminal's window size as (rows, columns).
pub fn window_size(fd: BorrowedFd<'_>) -> Result<(u16, u16), Errno> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize through the pointer, which is valid for it.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            &mut ws as *mut libc::winsize,
        )
    };
    Errno::result(r)?;
    Ok((ws.ws_row, ws.ws_col))
}

/// `ioctl(fd, TIOCSWINSZ)`: sets a terminal's window size.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<(), Errno> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one struct winsize through the pointer, valid for the call.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            &ws as *const libc::winsize,
        )
    };
    Errno::result(r).map(drop)
}

/// Sets the disposition of `sig` back to its default (`SIG_DFL`), with no flags or mask.
pub fn set_default_action(sig: nix::sys::signal::Signal) -> Result<(), Errno> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let act = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_DFL runs no code of ours in signal context.
    unsafe { sigaction(sig, &act) }.map(drop)
}

/// Ignores `sig` (`SIG_IGN`), as a shell does for the keyboard's signals while it waits.
pub fn set_ignore(sig: nix::sys::signal::Signal) -> Result<(), Errno> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let act = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_IGN runs no code of ours in signal context.
    unsafe { sigaction(sig, &act) }.map(drop)
}

/// `fcntl` commands for signal-driven I/O that the libc crate does not name.
pub const F_SETSIG: i32 = 10;
/// See [`F_SETSIG`].
pub const F_GETSIG: i32 = 11;
/// See [`F_SETSIG`].
pub const F_SETOWN_EX: i32 = 15;
/// See [`F_SETSIG`].
pub const F_GETOWN_EX: i32 = 16;

/// Registers a descriptor ferryd owns with the tokio reactor (epoll), for readiness.
pub fn async_fd(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd owns its descriptor until dropped, and the AsyncFd owns the OwnedFd:
    // the descriptor stays open and the same for the AsyncFd's whole life.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::other)
}

/// [`async_fd`] for a listening socket ferryd owns (`accept` through the `AsyncFd`).
pub fn async_listener(
    l: std::net::TcpListener,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::net::TcpListener>> {
    // SAFETY: a TcpListener owns its descriptor until dropped, and the AsyncFd owns the
    // listener: the descriptor stays open and the same for the AsyncFd's whole life.
    unsafe { tokio::io::unix::AsyncFd::register(l) }.map_err(std::io::Error::other)
}

/// `malloc_trim(0)`: gives the heap's free memory back to the kernel (a migration's
/// pre-copied pages, once dropped, would otherwise stay in this agent's heap, and every
/// task it forks next would copy their page tables). Returns whether any was released.
pub fn malloc_trim() -> bool {
    // SAFETY: takes no pointer; glibc's allocator locks its arenas itself.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// `getpriority(PRIO_PROCESS, tid)`: the thread's nice value.
pub fn get_nice(tid: Pid) -> Result<i32, Errno> {
    Errno::clear();
    // SAFETY: plain syscall wrapper with integer arguments.
    let r = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid.as_raw() as libc::id_t) };
    // -1 is a valid nice value: only errno tells a failure.
    if r == -1 && Errno::last_raw() != 0 {
        return Err(Errno::last());
    }
    Ok(r)
}
