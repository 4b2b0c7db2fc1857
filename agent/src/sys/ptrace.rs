//! ptrace requests beyond what `nix` offers: register sets, signal mask, queued siginfo, rseq.

use nix::errno::Errno;
use nix::unistd::Pid;

const PTRACE_GETREGSET: libc::c_uint = 0x4204;
const PTRACE_SETREGSET: libc::c_uint = 0x4205;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const NT_PRSTATUS: usize = 1;
const NT_X86_XSTATE: usize = 0x202;
/// Flag of `PTRACE_PEEKSIGINFO`: read the thread group's shared queue.
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
/// Size of `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;
/// Largest xsave area we accept (AMX tiles included fit in 12 KiB; leave room).
const XSTATE_MAX: usize = 64 * 1024;

fn regset_get(tid: Pid, nt: usize, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which is valid for writes of `buf.len()` bytes; the kernel
    // writes at most that many and updates `iov_len`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GETREGSET,
            tid.as_raw(),
            nt,
            &mut iov as *mut libc::iovec,
        )
    };
    Errno::result(r).map(|_| iov.iov_len)
}

fn regset_set(tid: Pid, nt: usize, buf: &[u8]) -> Result<(), Errno> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, valid for reads of `buf.len()` bytes; the kernel only reads.
    let r = unsafe {
        libc::ptrace(
            PTRACE_SETREGSET,
            tid.as_raw(),
            nt,
            &mut iov as *mut libc::iovec,
        )
    };
    Errno::result(r).map(drop)
}

/// General registers (`NT_PRSTATUS`).
pub fn get_regs(tid: Pid) -> Result<libc::user_regs_struct, Errno> {
    let mut regs = std::mem::MaybeUninit::<libc::user_regs_struct>::zeroed();
    let size = std::mem::size_of::<libc::user_regs_struct>();
    let mut iov = libc::iovec {
        iov_base: regs.as_mut_ptr().cast(),
        iov_len: size,
    };
    // SAFETY: `iov` covers exactly one user_regs_struct, which the kernel fills.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GETREGSET,
            tid.as_raw(),
            NT_PRSTATUS,
            &mut iov as *mut libc::iovec,
        )
    };
    Errno::result(r)?;
    if iov.iov_len != size {
        return Err(Errno::EIO);
    }
    // SAFETY: zero-initialised and then completely written by the kernel (length checked).
    Ok(unsafe { regs.assume_init() })
}

/// Sets the general registers.
pub fn set_regs(tid: Pid, regs: &libc::user_regs_struct) -> Result<(), Errno> {
    let size = std::mem::size_of::<libc::user_regs_struct>();
    let mut iov = libc::iovec {
        iov_base: (regs as *const libc::user_regs_struct).cast_mut().cast(),
        iov_len: size,
    };
    // SAFETY: `iov` covers one initialised user_regs_struct that the kernel only reads.
    let r = unsafe {
        libc::ptrace(
            PTRACE_SETREGSET,
            tid.as_raw(),
            NT_PRSTATUS,
            &mut iov as *mut libc::iovec,
        )
    };
    Errno::result(r).map(drop)
}

/// The extended FPU state (`NT_X86_XSTATE`), exactly as long as the kernel reports.
pub fn get_xstate(tid: Pid) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; XSTATE_MAX];
    let n = regset_get(tid, NT_X86_XSTATE, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Sets the extended FPU state.
pub fn set_xstate(tid: Pid, xstate: &[u8]) -> Result<(), Errno> {
    regset_set(tid, NT_X86_XSTATE, xstate)
}

/// Blocked signals of a stopped tracee.
pub fn get_sigmask(tid: Pid) -> Result<u64, Errno> {
    let mut mask: u64 = 0;
    // SAFETY: `mask` is a writable u64, matching the size passed as `addr`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GETSIGMASK,
            tid.as_raw(),
            8usize,
            &mut mask as *mut u64,
        )
    };
    Errno::result(r).map(|_| mask)
}

/// Sets the blocked signals of a stopped tracee.
pub fn set_sigmask(tid: Pid, mask: u64) -> Result<(), Errno> {
    // SAFETY: `mask` is a readable u64, matching the size passed as `addr`.
    let r = unsafe { libc::ptrace(PTRACE_SETSIGMASK, tid.as_raw(), 8usize, &mask as *const u64) };
    Errno::result(r).map(drop)
}

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// All queued signals of a tracee without dequeuing them: the thread's private queue, or the
/// thread group's shared queue when `shared`.
pub fn peek_siginfo(tid: Pid, shared: bool) -> Result<Vec<[u8; SIGINFO_SIZE]>, Errno> {
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: BATCH as i32,
        };
        let mut buf = [[0u8; SIGINFO_SIZE]; BATCH];
        // SAFETY: `args` is a valid PeekSiginfoArgs; `buf` holds room for `nr` siginfo records.
        let r = unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                tid.as_raw(),
                &args as *const PeekSiginfoArgs,
                buf.as_mut_ptr(),
            )
        };
        let n = Errno::result(r)? as usize;
        out.extend_from_slice(&buf[..n.min(BATCH)]);
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// The rseq registration of a tracee: `(pointer, length, signature)`, or `None`.
pub fn get_rseq(tid: Pid) -> Result<Option<(u64, u32, u32)>, Errno> {
    #[repr(C)]
    #[derive(Default)]
    struct RseqConf {
        ptr: u64,
        len: u32,
        sig: u32,
        flags: u32,
        pad: u32,
    }
    let mut conf = RseqConf::default();
    let size = std::mem::size_of::<RseqConf>();
    // SAFETY: `conf` is writable and `size` bytes long, as passed in `addr`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid.as_raw(),
            size,
            &mut conf as *mut RseqConf,
        )
    };
    Errno::result(r)?;
    Ok((conf.ptr != 0).then_some((conf.ptr, conf.len, conf.sig)))
}

const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;

/// The `index`-th seccomp filter of a stopped tracee (0 = the most recently installed) as raw
/// `struct sock_filter` instructions, or `None` past the last one.
pub fn get_seccomp_filter(tid: Pid, index: u64) -> Result<Option<Vec<u8>>, Errno> {
    // SAFETY: with a null buffer the kernel only returns the number of instructions.
    let n = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid.as_raw(),
            index as usize,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    let n = match Errno::result(n) {
        Ok(n) => n as usize,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; n * 8];
    // SAFETY: `buf` holds room for the `n` eight-byte instructions the kernel reported.
    let got = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid.as_raw(),
            index as usize,
            buf.as_mut_ptr(),
        )
    };
    let got = Errno::result(got)? as usize;
    buf.truncate(got.min(n) * 8);
    Ok(Some(buf))
}
