//! `ioctl(PAGEMAP_SCAN)` on `/proc/PID/pagemap` (Linux 6.7): the kernel walks the page tables
//! of a range and returns the runs of pages in the asked categories, instead of 8 bytes per
//! page for the caller to sift (the walk then costs a fraction of a `pagemap` read).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// Page categories (`PAGE_IS_*` of `linux/fs.h`).
pub mod category {
    /// Not anonymous memory: a page of a file (or of shmem) mapped or in its swap cache.
    pub const FILE: u64 = 1 << 2;
    /// Present in memory (the zero page included).
    pub const PRESENT: u64 = 1 << 3;
    /// A swap entry (swapped out, under migration, or a marker).
    pub const SWAPPED: u64 = 1 << 4;
    /// The shared zero page (an anonymous page read, never written).
    pub const PFNZERO: u64 = 1 << 5;
    /// Part of a huge page (a transparent huge page or hugetlb).
    pub const HUGE: u64 = 1 << 6;
}

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Default)]
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

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = (3 << 30)
    | ((std::mem::size_of::<PmScanArg>() as libc::c_ulong) << 16)
    | ((b'f' as libc::c_ulong) << 8)
    | 16;

/// Regions asked for per call.
const REGIONS: usize = 512;

/// Which pages a scan matches: with `inverted` categories flipped first, every category of
/// `all` and (unless it is 0) one of `any`.
#[derive(Debug, Clone, Copy)]
pub struct Match {
    /// Categories taken as their opposite.
    pub inverted: u64,
    /// Categories a page must all have.
    pub all: u64,
    /// Categories of which a page must have one (0: no such condition).
    pub any: u64,
}

/// Calls `found(start, end)` for each run of pages of `[start, end)` that `m` matches, in
/// address order (adjacent runs joined). `pagemap` is an open `/proc/PID/pagemap`. Fails with
/// `ENOTTY` or `EINVAL` where the kernel has no `PAGEMAP_SCAN`.
pub fn scan(
    pagemap: BorrowedFd<'_>,
    start: u64,
    end: u64,
    m: Match,
    mut found: impl FnMut(u64, u64),
) -> Result<(), Errno> {
    let mut regions = vec![PageRegion::default(); REGIONS];
    let mut pending: Option<(u64, u64)> = None;
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: at,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_inverted: m.inverted,
            category_mask: m.all,
            category_anyof_mask: m.any,
            return_mask: m.all | m.any,
            ..PmScanArg::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg that outlives the call; the kernel writes at
        // most `vec_len` regions into `regions`, which holds that many, and `walk_end` into
        // `arg`.
        let n = unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                PAGEMAP_SCAN,
                &mut arg as *mut PmScanArg,
            )
        };
        let n = Errno::result(n)? as usize;
        for r in &regions[..n.min(regions.len())] {
            pending = match pending {
                Some((s, e)) if e == r.start => Some((s, r.end)),
                Some((s, e)) => {
                    found(s, e);
                    Some((r.start, r.end))
                }
                None => Some((r.start, r.end)),
            };
        }
        // The walk stops where the regions ran out, or at `end`.
        if arg.walk_end <= at || arg.walk_end > end {
            return Err(Errno::EIO);
        }
        at = arg.walk_end;
    }
    if let Some((s, e)) = pending {
        found(s, e);
    }
    Ok(())
}
