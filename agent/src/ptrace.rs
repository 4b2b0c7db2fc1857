//! Tracing one task: seize and interrupt it, wait for its stops, read and write its memory,
//! and run system calls inside it ("injection") by pointing its registers at a `syscall`
//! instruction.

use std::fs::File;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::sys;

/// Injected system calls, in any task of this process's tracing, that may change an address
/// space's areas or their `smaps` fields: map, unmap, protect, advise, lock, fork. A restore
/// that read a process's VMA flags before its pages were written (see
/// `restore::RestoreOptions::check`) uses them only if none ran after its own memory steps;
/// counted over every task, a call elsewhere only costs that shortcut.
static ADDRESS_SPACE_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many injected calls [`ADDRESS_SPACE_CALLS`] has counted so far.
pub fn address_space_calls() -> u64 {
    ADDRESS_SPACE_CALLS.load(std::sync::atomic::Ordering::SeqCst)
}

/// `PR_SET_MEMORY_MERGE`, `PR_SET_VMA`.
const PR_SET_MEMORY_MERGE: u64 = 67;
const PR_SET_VMA: u64 = 0x5356_4d41;
/// `ARCH_MAP_VDSO_*` (0x2001-0x2003) and `ARCH_SHSTK_ENABLE` map areas.
const ARCH_MAPS: [u64; 4] = [0x2001, 0x2002, 0x2003, 0x5001];
/// `mseal` (Linux 6.10).
const SYS_MSEAL: i64 = 462;

/// A ptrace operation on a task failed.
#[derive(Debug, thiserror::Error)]
pub enum PtraceError {
    /// A ptrace request or a wait failed.
    #[error("{op} on pid {pid}")]
    Request {
        /// The request (`seize`, `getregs`, …).
        op: &'static str,
        /// The task.
        pid: i32,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The task exited or was killed while we traced it.
    #[error("pid {pid} is gone: {how}")]
    Gone {
        /// The task.
        pid: i32,
        /// Its exit status or signal.
        how: String,
    },
    /// The task stopped in a way the tracer did not ask for.
    #[error("pid {pid} stopped unexpectedly: {status}")]
    Unexpected {
        /// The task.
        pid: i32,
        /// The wait status.
        status: String,
    },
    /// Accessing the task's memory failed.
    #[error("{op} {len} bytes at {addr:#x} of pid {pid}")]
    Memory {
        /// `read` or `write`.
        op: &'static str,
        /// The task.
        pid: i32,
        /// Address.
        addr: u64,
        /// Length.
        len: usize,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An injected system call returned an error.
    #[error("injected {call} in pid {pid} failed")]
    Syscall {
        /// The system call's name.
        call: &'static str,
        /// The task.
        pid: i32,
        /// The error it returned.
        #[source]
        source: Errno,
    },
}

/// A task we have seized.
#[derive(Debug)]
pub struct Tracee {
    pid: Pid,
    mem: File,
    /// The thread or process the last injected `clone3` created (from `PTRACE_EVENT_CLONE`
    /// or `PTRACE_EVENT_FORK`).
    new_thread: std::cell::Cell<Option<Pid>>,
}

/// Bytes of one record of [`Tracee::inject_batch`]: number, six arguments, result.
pub const BATCH_RECORD: usize = 64;

/// x86-64 code that runs the system calls described by records at `rbx` until a number of -1,
/// storing each result in its record, then traps:
///
/// ```text
///  0: mov rax, [rbx]        3: cmp rax, -1         7: je 45
///  9: mov rdi, [rbx+8]     13: mov rsi, [rbx+16]  17: mov rdx, [rbx+24]
/// 21: mov r10, [rbx+32]    25: mov r8, [rbx+40]   29: mov r9, [rbx+48]
/// 33: syscall              35: mov [rbx+56], rax  39: add rbx, 64    43: jmp 0
/// 45: int3
/// ```
pub const BATCH_CODE: [u8; 46] = [
    0x48, 0x8b, 0x03, 0x48, 0x83, 0xf8, 0xff, 0x74, 0x24, 0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73,
    0x10, 0x48, 0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b,
    0x30, 0x0f, 0x05, 0x48, 0x89, 0x43, 0x38, 0x48, 0x83, 0xc3, 0x40, 0xeb, 0xd3, 0xcc,
];

/// How injected system calls reach a `syscall` instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Single-step over a `syscall` instruction at this address (found in the `[vdso]`): no
    /// change to the task's memory.
    SingleStep(u64),
    /// Continue at a page holding `syscall; int3` at this address.
    Trap(u64),
}

impl Tracee {
    /// `PTRACE_SEIZE` with `options`, then opens `/proc/PID/mem`.
    pub fn seize(pid: Pid, options: ptrace::Options) -> Result<Self, PtraceError> {
        ptrace::seize(pid, options).map_err(|source| PtraceError::Request {
            op: "seize",
            pid: pid.as_raw(),
            source,
        })?;
        Self::attached(pid)
    }

    /// A task we trace already (a thread that arrived through `PTRACE_O_TRACECLONE`).
    pub fn attached(pid: Pid) -> Result<Self, PtraceError> {
        let mem = File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| PtraceError::Request {
                op: "open /proc/PID/mem",
                pid: pid.as_raw(),
                source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        Ok(Self {
            pid,
            mem,
            new_thread: std::cell::Cell::new(None),
        })
    }

    /// The task's PID.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    fn req(&self, op: &'static str) -> impl FnOnce(Errno) -> PtraceError + '_ {
        move |source| PtraceError::Request {
            op,
            pid: self.pid.as_raw(),
            source,
        }
    }

    /// Waits for the next stop of this task.
    pub fn wait(&self) -> Result<WaitStatus, PtraceError> {
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
                Err(Errno::EINTR) => continue,
                Err(source) => {
                    return Err(PtraceError::Request {
                        op: "wait",
                        pid: self.pid.as_raw(),
                        source,
                    });
                }
                Ok(WaitStatus::Exited(_, code)) => {
                    return Err(PtraceError::Gone {
                        pid: self.pid.as_raw(),
                        how: format!("exited with status {code}"),
                    });
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    return Err(PtraceError::Gone {
                        pid: self.pid.as_raw(),
                        how: format!("killed by {sig}"),
                    });
                }
                Ok(status) => return Ok(status),
            }
        }
    }

    /// `PTRACE_INTERRUPT` and wait until the task sits in the interrupt's stop. Signals that
    /// arrive first are delivered as the kernel would have without us. Returns the signal of
    /// the group stop the task's process is in (stopped by job control: the stop reports it
    /// instead of `SIGTRAP`), if it is.
    pub fn interrupt(&self) -> Result<Option<Signal>, PtraceError> {
        ptrace::interrupt(self.pid).map_err(self.req("interrupt"))?;
        loop {
            match self.wait()? {
                WaitStatus::PtraceEvent(_, sig, libc::PTRACE_EVENT_STOP) => {
                    return Ok((sig != Signal::SIGTRAP).then_some(sig));
                }
                WaitStatus::Stopped(_, sig) => {
                    ptrace::cont(self.pid, sig).map_err(self.req("cont"))?;
                }
                other => {
                    return Err(PtraceError::Unexpected {
                        pid: self.pid.as_raw(),
                        status: format!("{other:?}"),
                    });
                }
            }
        }
    }

    /// General registers.
    pub fn regs(&self) -> Result<libc::user_regs_struct, PtraceError> {
        sys::ptrace::get_regs(self.pid).map_err(self.req("getregs"))
    }

    /// Sets the general registers.
    pub fn set_regs(&self, regs: &libc::user_regs_struct) -> Result<(), PtraceError> {
        sys::ptrace::set_regs(self.pid, regs).map_err(self.req("setregs"))
    }

    /// Extended FPU state.
    pub fn xstate(&self) -> Result<Vec<u8>, PtraceError> {
        sys::ptrace::get_xstate(self.pid).map_err(self.req("getregset xstate"))
    }

    /// Sets the extended FPU state.
    pub fn set_xstate(&self, xstate: &[u8]) -> Result<(), PtraceError> {
        sys::ptrace::set_xstate(self.pid, xstate).map_err(self.req("setregset xstate"))
    }

    /// Blocked signals.
    pub fn sigmask(&self) -> Result<u64, PtraceError> {
        sys::ptrace::get_sigmask(self.pid).map_err(self.req("getsigmask"))
    }

    /// Sets the blocked signals.
    pub fn set_sigmask(&self, mask: u64) -> Result<(), PtraceError> {
        sys::ptrace::set_sigmask(self.pid, mask).map_err(self.req("setsigmask"))
    }

    /// Queued signals (private or shared queue).
    pub fn pending(
        &self,
        shared: bool,
    ) -> Result<Vec<[u8; sys::ptrace::SIGINFO_SIZE]>, PtraceError> {
        sys::ptrace::peek_siginfo(self.pid, shared).map_err(self.req("peeksiginfo"))
    }

    /// rseq registration.
    pub fn rseq(&self) -> Result<Option<(u64, u32, u32)>, PtraceError> {
        sys::ptrace::get_rseq(self.pid).map_err(self.req("get rseq configuration"))
    }

    /// The thread the last injected `clone3` created, if any (in the tracer's PID namespace).
    pub fn take_new_thread(&self) -> Option<Pid> {
        self.new_thread.take()
    }

    /// Reads memory through `/proc/PID/mem` (works on pages the task cannot read itself).
    pub fn read_mem(&self, addr: u64, buf: &mut [u8]) -> Result<(), PtraceError> {
        self.mem
            .read_exact_at(buf, addr)
            .map_err(|source| PtraceError::Memory {
                op: "read",
                pid: self.pid.as_raw(),
                addr,
                len: buf.len(),
                source,
            })
    }

    /// Writes memory through `/proc/PID/mem` (works on read-only pages).
    pub fn write_mem(&self, addr: u64, data: &[u8]) -> Result<(), PtraceError> {
        self.mem
            .write_all_at(data, addr)
            .map_err(|source| PtraceError::Memory {
                op: "write",
                pid: self.pid.as_raw(),
                addr,
                len: data.len(),
                source,
            })
    }

    /// Detaches, delivering `sig` if given.
    pub fn detach(&self, sig: Option<Signal>) -> Result<(), PtraceError> {
        ptrace::detach(self.pid, sig).map_err(|source| PtraceError::Request {
            op: "detach",
            pid: self.pid.as_raw(),
            source,
        })
    }

    /// Counts `nr(args)` in [`ADDRESS_SPACE_CALLS`] when it may change an address space.
    fn note_call(&self, nr: i64, args: &[u64; 6]) {
        let changes = match nr {
            libc::SYS_mmap
            | libc::SYS_munmap
            | libc::SYS_mprotect
            | libc::SYS_pkey_mprotect
            | libc::SYS_mremap
            | libc::SYS_madvise
            | libc::SYS_process_madvise
            | libc::SYS_mlock
            | libc::SYS_mlock2
            | libc::SYS_munlock
            | libc::SYS_mlockall
            | libc::SYS_munlockall
            | libc::SYS_brk
            | libc::SYS_shmat
            | libc::SYS_shmdt
            | libc::SYS_remap_file_pages
            | libc::SYS_io_setup
            | libc::SYS_io_destroy
            | libc::SYS_mbind
            | libc::SYS_userfaultfd
            | libc::SYS_execve
            | libc::SYS_execveat
            | libc::SYS_fork
            | libc::SYS_vfork
            | SYS_MSEAL => true,
            libc::SYS_prctl => {
                matches!(args[0], PR_SET_MEMORY_MERGE | PR_SET_VMA)
                    || args[0] == libc::PR_SET_THP_DISABLE as u64
            }
            libc::SYS_arch_prctl => ARCH_MAPS.contains(&args[0]),
            // A new process shares the pages copy-on-write (threads share the address space).
            libc::SYS_clone => args[0] & libc::CLONE_VM as u64 == 0,
            libc::SYS_clone3 => {
                let mut flags = [0u8; 8];
                self.read_mem(args[0], &mut flags).is_err()
                    || u64::from_le_bytes(flags) & libc::CLONE_VM as u64 == 0
            }
            _ => false,
        };
        if changes {
            ADDRESS_SPACE_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Runs one system call inside the task and returns its raw result (`rax`). The task must
    /// be in a ptrace stop; `template` supplies the segment registers and flags. `orig_rax` is
    /// set to -1 so the kernel applies no syscall-restart logic to the injected call.
    pub fn inject_raw(
        &self,
        entry: Entry,
        template: &libc::user_regs_struct,
        nr: i64,
        args: [u64; 6],
    ) -> Result<i64, PtraceError> {
        self.note_call(nr, &args);
        let mut regs = *template;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX;
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        let expect_rip = match entry {
            Entry::SingleStep(addr) => {
                regs.rip = addr;
                self.set_regs(&regs)?;
                ptrace::step(self.pid, None).map_err(self.req("singlestep"))?;
                addr + 2
            }
            Entry::Trap(addr) => {
                regs.rip = addr;
                self.set_regs(&regs)?;
                ptrace::cont(self.pid, None).map_err(self.req("cont"))?;
                addr + 3
            }
        };
        loop {
            match self.wait()? {
                WaitStatus::Stopped(_, Signal::SIGTRAP) => break,
                WaitStatus::PtraceEvent(
                    _,
                    _,
                    libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK,
                ) => {
                    let tid = ptrace::getevent(self.pid).map_err(self.req("getevent"))?;
                    self.new_thread.set(Some(Pid::from_raw(tid as i32)));
                    ptrace::cont(self.pid, None).map_err(self.req("resume"))?;
                }
                // A stop signal or an interrupt arriving meanwhile: let the call proceed; the
                // signal stays the kernel's business (a stop is re-reported on resume).
                WaitStatus::Stopped(_, _) | WaitStatus::PtraceEvent(..) => {
                    match entry {
                        Entry::SingleStep(_) => ptrace::step(self.pid, None),
                        Entry::Trap(_) => ptrace::cont(self.pid, None),
                    }
                    .map_err(self.req("resume"))?;
                }
                other => {
                    return Err(PtraceError::Unexpected {
                        pid: self.pid.as_raw(),
                        status: format!("{other:?}"),
                    });
                }
            }
        }
        Ok(self.trapped_at(expect_rip)?.rax as i64)
    }

    /// The registers after an injected call's trap, which must be at `expect_rip`.
    fn trapped_at(&self, expect_rip: u64) -> Result<libc::user_regs_struct, PtraceError> {
        let after = self.regs()?;
        if after.rip != expect_rip {
            return Err(PtraceError::Unexpected {
                pid: self.pid.as_raw(),
                status: format!("trap at {:#x}, expected {expect_rip:#x}", after.rip),
            });
        }
        Ok(after)
    }

    /// Runs `calls` in one go: the task executes [`BATCH_CODE`] (written by the caller at
    /// `code`, in an executable page of the task) over records written at `records`, 64 bytes
    /// each, `(nr, six arguments, result)`, and a trap after the last. Returns each call's raw
    /// result (`-errno` on failure). One stop instead of one per call: the dump asks the
    /// process dozens of questions (every signal's action, every descriptor's owner).
    pub fn inject_batch(
        &self,
        code: u64,
        records: u64,
        template: &libc::user_regs_struct,
        calls: &[(i64, [u64; 6])],
    ) -> Result<Vec<i64>, PtraceError> {
        let mut buf = Vec::with_capacity(calls.len() * BATCH_RECORD + 8);
        for (nr, args) in calls {
            self.note_call(*nr, args);
            buf.extend_from_slice(&nr.to_le_bytes());
            for a in args {
                buf.extend_from_slice(&a.to_le_bytes());
            }
            buf.extend_from_slice(&(-1i64).to_le_bytes());
        }
        buf.extend_from_slice(&(-1i64).to_le_bytes());
        self.write_mem(records, &buf)?;
        let mut regs = *template;
        regs.rip = code;
        regs.rbx = records;
        regs.orig_rax = u64::MAX;
        self.set_regs(&regs)?;
        ptrace::cont(self.pid, None).map_err(self.req("cont"))?;
        loop {
            match self.wait()? {
                WaitStatus::Stopped(_, Signal::SIGTRAP) => break,
                // A stop signal or an interrupt arriving meanwhile: let the calls proceed.
                WaitStatus::PtraceEvent(..) => {
                    ptrace::cont(self.pid, None).map_err(self.req("resume"))?;
                }
                WaitStatus::Stopped(_, sig)
                    if !matches!(sig, Signal::SIGSEGV | Signal::SIGBUS | Signal::SIGILL) =>
                {
                    ptrace::cont(self.pid, None).map_err(self.req("resume"))?;
                }
                other => {
                    return Err(PtraceError::Unexpected {
                        pid: self.pid.as_raw(),
                        status: format!("{other:?} in a batch of injected calls"),
                    });
                }
            }
        }
        self.trapped_at(code + BATCH_CODE.len() as u64)?;
        self.read_mem(records, &mut buf[..calls.len() * BATCH_RECORD])?;
        Ok(buf
            .chunks_exact(BATCH_RECORD)
            .map(|r| i64::from_le_bytes(r[56..64].try_into().unwrap_or_default()))
            .collect())
    }

    /// [`Tracee::inject_batch`] for any number of `calls`, `per_run` at a time (as many
    /// records as fit at `records`).
    pub fn inject_batches(
        &self,
        code: u64,
        records: u64,
        template: &libc::user_regs_struct,
        calls: &[(i64, [u64; 6])],
        per_run: usize,
    ) -> Result<Vec<i64>, PtraceError> {
        let mut out = Vec::with_capacity(calls.len());
        for chunk in calls.chunks(per_run.max(1)) {
            out.extend(self.inject_batch(code, records, template, chunk)?);
        }
        Ok(out)
    }

    /// Like [`Tracee::inject_raw`], turning `-errno` results into errors named after `call`.
    pub fn inject(
        &self,
        entry: Entry,
        template: &libc::user_regs_struct,
        call: &'static str,
        nr: i64,
        args: [u64; 6],
    ) -> Result<u64, PtraceError> {
        let r = self.inject_raw(entry, template, nr, args)?;
        self.checked(call, r)
    }

    /// A raw result of a system call run in this task: `-errno` becomes an error named after
    /// `call`, anything else the value.
    pub fn checked(&self, call: &'static str, r: i64) -> Result<u64, PtraceError> {
        if (-4095..0).contains(&r) {
            return Err(PtraceError::Syscall {
                call,
                pid: self.pid.as_raw(),
                source: Errno::from_raw(-r as i32),
            });
        }
        Ok(r as u64)
    }

    /// Runs the last injected system call, `munmap` of the injection page itself, stopping at
    /// syscall exit (a trap after it would fault in the unmapped page). The task is left in the
    /// syscall-exit stop, ready for its final registers.
    pub fn inject_final_munmap(
        &self,
        template: &libc::user_regs_struct,
        addr: u64,
        len: u64,
    ) -> Result<(), PtraceError> {
        let mut regs = *template;
        regs.rax = libc::SYS_munmap as u64;
        regs.orig_rax = u64::MAX;
        regs.rdi = addr;
        regs.rsi = len;
        regs.rip = addr;
        self.set_regs(&regs)?;
        for _ in 0..2 {
            ptrace::syscall(self.pid, None).map_err(self.req("syscall"))?;
            match self.wait()? {
                WaitStatus::PtraceSyscall(_) => {}
                other => {
                    return Err(PtraceError::Unexpected {
                        pid: self.pid.as_raw(),
                        status: format!("{other:?}"),
                    });
                }
            }
        }
        let r = self.regs()?.rax as i64;
        if r != 0 {
            return Err(PtraceError::Syscall {
                call: "munmap",
                pid: self.pid.as_raw(),
                source: Errno::from_raw(-r as i32),
            });
        }
        Ok(())
    }
}
