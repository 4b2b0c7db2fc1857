//! userfaultfd write-protection and the `PAGEMAP_SCAN` ioctl, for write tracking during a live
//! migration (`dump/track.rs`). Constants are the kernel's ABI (linux/userfaultfd.h and
//! linux/fs.h of 6.7+; the system headers here are older).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// `userfaultfd(2)` flag: only faults from user mode are handled (needs no privilege).
pub const UFFD_USER_MODE_ONLY: u64 = 1;
/// Write-protect faults are resolved by the kernel itself, which only notes the page as written.
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;
/// Pages not populated yet are write-protected too (their first write counts as written).
pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;

const UFFD_API: u64 = 0xaa;
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xc018_aa06;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;

/// `PAGEMAP_SCAN` on `/proc/PID/pagemap` (`_IOWR('f', 16, struct pm_scan_arg)`).
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
/// Write-protect the matching pages (atomically with reporting them).
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// Fail unless every area of the range is registered for async write-protection.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
/// Category: the area is registered for async write-protection.
pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
/// Category: written since last write-protected.
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// Category: present.
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
/// Category: swapped out.
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    start: u64,
    len: u64,
    mode: u64,
}

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `UFFDIO_API` with `features`; returns the features the kernel offers.
pub fn api(uffd: BorrowedFd<'_>, features: u64) -> Result<u64, Errno> {
    let mut a = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: `a` is a valid uffdio_api the kernel reads and writes during the call.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut a) };
    Errno::result(r)?;
    Ok(a.features)
}

/// `UFFDIO_REGISTER` of `[start, start + len)` for write-protection.
pub fn register_wp(uffd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), Errno> {
    let mut a = UffdioRegister {
        start,
        len,
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: `a` is a valid uffdio_register the kernel reads and writes during the call.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &mut a) };
    Errno::result(r).map(drop)
}

/// `UFFDIO_WRITEPROTECT` of `[start, start + len)`.
pub fn write_protect(uffd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), Errno> {
    let mut a = UffdioWriteprotect {
        start,
        len,
        mode: UFFDIO_WRITEPROTECT_MODE_WP,
    };
    // SAFETY: `a` is a valid uffdio_writeprotect the kernel reads during the call.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_WRITEPROTECT, &mut a) };
    Errno::result(r).map(drop)
}

/// `PAGEMAP_SCAN` over `[start, end)` of the process whose `/proc/PID/pagemap` is `pagemap`:
/// appends the ranges of pages in every category of `mask` (any of `anyof`, if not 0) to
/// `out`, with `flags` ([`PM_SCAN_WP_MATCHING`]…). Returns where the walk ended (before `end`
/// when `out` had no more room in this call; call again from there).
pub fn pagemap_scan(
    pagemap: BorrowedFd<'_>,
    start: u64,
    end: u64,
    flags: u64,
    mask: u64,
    anyof: u64,
    out: &mut Vec<(u64, u64)>,
) -> Result<u64, Errno> {
    let mut regions = vec![PageRegion::default(); 512];
    let mut a = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags,
        start,
        end,
        walk_end: 0,
        vec: regions.as_mut_ptr() as u64,
        vec_len: regions.len() as u64,
        max_pages: 0,
        category_inverted: 0,
        category_mask: mask,
        category_anyof_mask: anyof,
        return_mask: mask | anyof,
    };
    // SAFETY: `a` is a valid pm_scan_arg whose `vec` points at `regions`, `vec_len` entries
    // long, which outlives the call; the kernel writes at most that many.
    let r = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut a) };
    let n = Errno::result(r)? as usize;
    out.extend(
        regions[..n.min(regions.len())]
            .iter()
            .map(|g| (g.start, g.end)),
    );
    Ok(a.walk_end)
}

// Post-copy (`migrate/lazy.rs`): missing-page faults served by ferryd.

/// Events of the process's own address-space changes in the registered areas.
pub const FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `MADV_DONTNEED`/`MADV_REMOVE` in a registered area.
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `munmap` of a registered area.
pub const FEATURE_EVENT_UNMAP: u64 = 1 << 4;
/// `fork` of the process (a new userfaultfd for the child's copy of the areas).
pub const FEATURE_EVENT_FORK: u64 = 1 << 1;

const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
const UFFDIO_ZEROPAGE: libc::c_ulong = 0xc020_aa04;
const UFFDIO_WAKE: libc::c_ulong = 0x8010_aa02;

/// `uffd_msg.event` values.
pub const EVENT_PAGEFAULT: u8 = 0x12;
/// The child's userfaultfd is in `arg0` (`FEATURE_EVENT_FORK`).
pub const EVENT_FORK: u8 = 0x13;
/// `arg0` from, `arg1` to, `arg2` length.
pub const EVENT_REMAP: u8 = 0x14;
/// `arg0` start, `arg1` end.
pub const EVENT_REMOVE: u8 = 0x15;
/// `arg0` start, `arg1` end.
pub const EVENT_UNMAP: u8 = 0x16;

/// One `struct uffd_msg`: the event and its first three 64-bit arguments (for a page fault:
/// flags, address, thread id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Msg {
    /// `EVENT_*`.
    pub event: u8,
    /// The event's arguments.
    pub arg: [u64; 3],
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioZeropage {
    start: u64,
    len: u64,
    mode: u64,
    zeropage: i64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

/// `UFFDIO_REGISTER` of `[start, start + len)` for missing-page faults.
pub fn register_missing(uffd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), Errno> {
    let mut a = UffdioRegister {
        start,
        len,
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: `a` is a valid uffdio_register the kernel reads and writes during the call.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &mut a) };
    Errno::result(r).map(drop)
}

/// `UFFDIO_COPY` of `src` (whole pages) to `dst` in the registered process, waking the
/// threads that wait there. Returns the bytes copied: fewer than `src.len()` when a page was
/// there already (the error then is `EEXIST` for the first page).
pub fn copy(uffd: BorrowedFd<'_>, dst: u64, src: &[u8]) -> Result<u64, Errno> {
    let mut a = UffdioCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: `a` is a valid uffdio_copy whose `src` points at `src.len()` readable bytes
    // that outlive the call; the kernel writes only `a.copy`.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_COPY, &mut a) };
    match Errno::result(r) {
        Ok(_) => Ok(a.copy.max(0) as u64),
        // Partly done: the caller goes on from there.
        Err(_) if a.copy > 0 => Ok(a.copy as u64),
        Err(e) => Err(e),
    }
}

/// `UFFDIO_ZEROPAGE` of `[start, start + len)`, waking the threads that wait there.
pub fn zeropage(uffd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), Errno> {
    let mut a = UffdioZeropage {
        start,
        len,
        mode: 0,
        zeropage: 0,
    };
    // SAFETY: `a` is a valid uffdio_zeropage the kernel reads and writes during the call.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_ZEROPAGE, &mut a) };
    Errno::result(r).map(drop)
}

/// `UFFDIO_WAKE` of `[start, start + len)`: threads waiting on a page that is there.
pub fn wake(uffd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), Errno> {
    let mut a = UffdioRange { start, len };
    // SAFETY: `a` is a valid uffdio_range the kernel reads during the call.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_WAKE, &mut a) };
    Errno::result(r).map(drop)
}

/// Waits up to `timeout_ms` for `uffd` to be readable.
pub fn poll_in(uffd: BorrowedFd<'_>, timeout_ms: i32) -> Result<bool, Errno> {
    let mut p = libc::pollfd {
        fd: uffd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    Ok(Errno::result(r)? > 0)
}

/// Reads the pending messages of a non-blocking `uffd` (none: empty).
pub fn read_msgs(uffd: BorrowedFd<'_>) -> Result<Vec<Msg>, Errno> {
    const N: usize = 64;
    let mut buf = [0u8; 32 * N];
    // SAFETY: `buf` is writable for its whole length for the duration of the call.
    let r = unsafe { libc::read(uffd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = match Errno::result(r) {
        Ok(n) => n as usize,
        Err(Errno::EAGAIN) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let word =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
    Ok(buf[..n]
        .chunks_exact(32)
        .map(|m| Msg {
            event: m[0],
            arg: [word(m, 8), word(m, 16), word(m, 24)],
        })
        .collect())
}
