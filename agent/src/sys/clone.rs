//! `clone3` with `set_tid`, and the tiny bodies a new task runs before the restorer takes
//! it over. After `clone3` in a multi-threaded program the child may only make raw system
//! calls (no allocation, no locks), so the bodies below are straight-line libc calls.

use nix::errno::Errno;
use nix::unistd::Pid;

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What the new task does until the restorer seizes it.
#[derive(Debug, Clone, Copy)]
pub enum ChildBody {
    /// A stub that is the restorer's child: ask for `SIGKILL` when the restorer dies, check
    /// the parent is still the one expected (`getppid()` is 0 when the parent is outside the
    /// child's PID namespace), then pause forever. The restorer seizes it and replaces
    /// everything.
    Stub {
        /// `getppid()` the child must see, else it exits at once.
        expected_ppid: i32,
    },
    /// A stub that is not the restorer's child: it watches the restorer through the pidfd
    /// `restorer_pidfd` (inherited) and exits as soon as the restorer has exited, else pauses
    /// until the restorer seizes it and replaces everything. No parent-death signal ties it to
    /// anyone, so the restored process can be given its own, armed on the parent it ends up
    /// with.
    Orphan {
        /// The restorer's pidfd, a descriptor the child inherited.
        restorer_pidfd: i32,
    },
    /// The stand-in parent of an [`ChildBody::Orphan`] stub: creates it with PID `want` (exits
    /// 100 + errno when it cannot), then stays its parent while the restore runs: it reaps the
    /// stub and exits should the restore fail, and is killed by the restorer once the restore
    /// succeeded, so that the stub is adopted by the nearest child subreaper above the
    /// restorer, or init. Killed with the restorer (parent-death signal).
    Detacher {
        /// The PID the stub gets.
        want: i32,
        /// The restorer's pidfd, passed on to the stub.
        restorer_pidfd: i32,
    },
    /// Init of a fresh PID namespace: create the stub with PID `want` as its own child (so
    /// that the namespace, which dies with its init, lives exactly as long as the restored
    /// process), close every descriptor it inherited, then reap children until there are none
    /// and exit with the status of that process (orphans of a restored tree are reaped too,
    /// and waited for). Exits with 100 + errno if the stub cannot be
    /// created.
    NsInit {
        /// The PID the stub gets inside the namespace.
        want: i32,
    },
    /// A post-copy copy's guard (`migrate/lazy.rs`): closes every descriptor it inherited
    /// but `watch`, `victim` and `keep`, then waits until the process of pidfd `watch` (the
    /// agent) has exited and kills the process of pidfd `victim` (the copy) with `SIGKILL`.
    /// Holding `keep` (the copy's userfaultfd) meanwhile, it keeps the copy's faults on its
    /// missing pages waiting: the agent's death does not unregister the areas, so the copy
    /// never reads zeros where its memory had not arrived. The agent kills it once every page
    /// arrived.
    Guard {
        /// The agent's pidfd.
        watch: i32,
        /// The copy's pidfd.
        victim: i32,
        /// The copy's userfaultfd.
        keep: i32,
    },
}

/// `clone3` into a new task that runs `body`. `set_tid` asks for that PID in the innermost
/// namespace the child is created in; `new_pid_ns` creates a PID namespace with the child as
/// its init. Returns the child's PID as seen by the caller.
pub fn clone3(body: ChildBody, set_tid: Option<i32>, new_pid_ns: bool) -> Result<Pid, Errno> {
    let tid_array: [libc::pid_t; 1] = [set_tid.unwrap_or(0)];
    let args = CloneArgs {
        flags: if new_pid_ns {
            libc::CLONE_NEWPID as u64
        } else {
            0
        },
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if set_tid.is_some() {
            tid_array.as_ptr() as u64
        } else {
            0
        },
        set_tid_size: u64::from(set_tid.is_some()),
        ..Default::default()
    };
    // SAFETY: `args` is a fully initialised clone_args of the size passed; `tid_array` outlives
    // the call. Without CLONE_VM the child gets a copy of our memory and continues on a copy of
    // this stack, running only `child_main`, which never returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match Errno::result(r)? {
        0 => child_main(body),
        pid => Ok(Pid::from_raw(pid as i32)),
    }
}

fn child_main(body: ChildBody) -> ! {
    match body {
        ChildBody::Stub { expected_ppid } => stub_main(expected_ppid),
        ChildBody::NsInit { want } => ns_init_main(want),
        ChildBody::Orphan { restorer_pidfd } => orphan_main(restorer_pidfd),
        ChildBody::Detacher {
            want,
            restorer_pidfd,
        } => detacher_main(want, restorer_pidfd),
        ChildBody::Guard {
            watch,
            victim,
            keep,
        } => guard_main(watch, victim, keep),
    }
}

fn guard_main(watch: i32, victim: i32, keep: i32) -> ! {
    let mut fds = [watch, victim, keep];
    fds.sort_unstable();
    // SAFETY: raw, async-signal-safe syscalls on our own stack variables only; the
    // descriptors closed are this child's copies.
    unsafe {
        let mut from: u32 = 3;
        for fd in fds {
            let fd = fd as u32;
            if fd > from {
                libc::syscall(libc::SYS_close_range, from, fd - 1, 0);
            }
            from = from.max(fd + 1);
        }
        libc::syscall(libc::SYS_close_range, from, u32::MAX, 0);
        libc::prctl(
            libc::PR_SET_NAME,
            c"ferry-lazy-guard".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        loop {
            let mut p = libc::pollfd {
                fd: watch,
                events: libc::POLLIN,
                revents: 0,
            };
            // A pidfd polls readable once its process has exited.
            let r = libc::poll(&mut p, 1, -1);
            if r > 0 || (r < 0 && *libc::__errno_location() != libc::EINTR) {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    victim,
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
                libc::_exit(0);
            }
        }
    }
}

fn orphan_main(restorer_pidfd: i32) -> ! {
    // SAFETY: raw, async-signal-safe syscalls on our own stack variables only.
    unsafe {
        loop {
            let mut p = libc::pollfd {
                fd: restorer_pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            // A pidfd polls readable once its process has exited (POLLNVAL if it is none).
            let r = libc::poll(&mut p, 1, -1);
            if r > 0 || (r < 0 && *libc::__errno_location() != libc::EINTR) {
                libc::_exit(1);
            }
        }
    }
}

fn detacher_main(want: i32, restorer_pidfd: i32) -> ! {
    let tid_array: [libc::pid_t; 1] = [want];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid_array.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: raw, async-signal-safe calls on our own stack variables only: gone with the
    // restorer; a valid clone_args on our stack (as in `clone3`), the child runs
    // `orphan_main`; errno is this task's copy.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        let r = libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        );
        if r == 0 {
            orphan_main(restorer_pidfd);
        }
        if r < 0 {
            libc::_exit(100 + *libc::__errno_location());
        }
        // The stub has its copy of the restorer's descriptors (the restore takes what it needs
        // from them); this process keeps none: it lives on while the restore runs, and a
        // descriptor it kept (a pipe end the restorer made) would be one held outside the
        // restored processes.
        libc::syscall(libc::SYS_close_range, 0, libc::c_uint::MAX, 0);
        // The stub's parent until the restorer lets it go (SIGKILL: the stub is adopted) or
        // ends it (reaped here, then exit).
        loop {
            let w = libc::wait4(-1, std::ptr::null_mut(), libc::__WALL, std::ptr::null_mut());
            if w >= 0 || *libc::__errno_location() != libc::EINTR {
                libc::_exit(0);
            }
        }
    }
}

fn stub_main(expected_ppid: i32) -> ! {
    // SAFETY: raw, async-signal-safe syscalls only; no memory is touched.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != expected_ppid {
            libc::_exit(1);
        }
        loop {
            libc::pause();
        }
    }
}

fn ns_init_main(want: i32) -> ! {
    let tid_array: [libc::pid_t; 1] = [want];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid_array.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: as in `clone3`: a valid clone_args on our stack; the child runs `stub_main`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        stub_main(1);
    }
    // SAFETY: raw, async-signal-safe syscalls on our own stack variables only.
    unsafe {
        // The init needs no descriptor: holding the restorer's (an agent's listener, its
        // records database, a caller's stdout) would outlive the restorer for as long as the
        // restored process runs.
        libc::syscall(libc::SYS_close_range, 0, u32::MAX, 0);
        libc::prctl(libc::PR_SET_NAME, c"ferry-ns-init".as_ptr(), 0, 0, 0);
        if r < 0 {
            libc::_exit(100 + *libc::__errno_location());
        }
        // The stub has its copy of the restorer's descriptors (the restore takes what it needs
        // from them); this process keeps none: it lives on while the restore runs, and a
        // descriptor it kept (a pipe end the restorer made) would be one held outside the
        // restored processes.
        libc::syscall(libc::SYS_close_range, 0, libc::c_uint::MAX, 0);
        // The status of the process it made (the root of a restored tree), once every
        // process of the namespace has ended: orphans of the tree end up here too.
        let mut last: libc::c_int = 0;
        loop {
            let mut status: libc::c_int = 0;
            let w = libc::waitpid(-1, &mut status, libc::__WALL);
            if w == want {
                last = status;
            } else if w < 0 && *libc::__errno_location() != libc::EINTR {
                break;
            }
        }
        let code = if libc::WIFEXITED(last) {
            libc::WEXITSTATUS(last)
        } else {
            128 + libc::WTERMSIG(last)
        };
        libc::_exit(code)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

    use super::{ChildBody, clone3};

    /// An orphan stub waits while the process it watches (the restorer) lives, and exits as
    /// soon as that process has exited: a restorer that dies before seizing it leaves nothing.
    #[test]
    fn orphan_stub_exits_when_the_watched_process_ends() {
        let mut watched = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("start sleep");
        let pid = nix::unistd::Pid::from_raw(watched.id() as i32);
        let pidfd = crate::sys::pidfd_open(pid).expect("pidfd_open");
        let stub = clone3(
            ChildBody::Orphan {
                restorer_pidfd: pidfd.as_raw_fd(),
            },
            None,
            false,
        )
        .expect("clone3");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            waitpid(stub, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive),
            "the stub left while the watched process lives"
        );
        watched.kill().expect("kill sleep");
        watched.wait().expect("reap sleep");
        let start = Instant::now();
        loop {
            match waitpid(stub, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, 1)) => break,
                Ok(WaitStatus::StillAlive) if start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => panic!("the stub did not exit once the watched process ended: {other:?}"),
            }
        }
    }
}
