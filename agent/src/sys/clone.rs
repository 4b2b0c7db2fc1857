//! `clone3` with `set_tid`, and the two tiny bodies a new task runs before the restorer takes
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
    /// Ask for `SIGKILL` when the restorer dies, check the parent is still the one expected
    /// (`getppid()` is 0 when the parent is outside the child's PID namespace), then pause
    /// forever. The restorer seizes it and replaces everything.
    Stub {
        /// `getppid()` the child must see, else it exits at once.
        expected_ppid: i32,
    },
    /// Init of a fresh PID namespace: create the stub with PID `want` as its own child (so
    /// that the namespace, which dies with its init, lives exactly as long as the restored
    /// process), close every descriptor it inherited, then reap children until there are none
    /// and exit with the status of the last one. Exits with 100 + errno if the stub cannot be
    /// created.
    NsInit {
        /// The PID the stub gets inside the namespace.
        want: i32,
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
        let mut last: libc::c_int = 0;
        loop {
            let mut status: libc::c_int = 0;
            let r = libc::waitpid(-1, &mut status, libc::__WALL);
            if r > 0 {
                last = status;
            } else if *libc::__errno_location() != libc::EINTR {
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
