//! Write tracking of a running process, for live migration (docs/migration.md, "Live
//! migration"): this kernel has no soft-dirty bits, so the process is given a userfaultfd in
//! async write-protect mode (`UFFD_FEATURE_WP_ASYNC`): the kernel resolves each write fault
//! itself, only noting the page as written, and `PAGEMAP_SCAN` reports the written pages and
//! write-protects them again in one step.
//!
//! The userfaultfd is made inside the process (an injected `userfaultfd(2)`, user-mode-only so
//! that it needs no privilege), taken out with `pidfd_getfd` and closed there again: the
//! process keeps nothing of it but the registration of its private anonymous areas (`uw` in
//! smaps), which ends when [`Tracker`] is dropped (ferryd closes the only descriptor: the
//! kernel unregisters every area), also when ferryd dies.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use nix::unistd::Pid;

use super::DumpError;
use super::freeze::Frozen;
use crate::proc::{self, MapsEntry};
use crate::ptrace::Entry;
use crate::state::PAGE_SIZE;
use crate::sys::{self, uffd};

/// A page's pagemap entry: present, with its page frame number (readable by root).
const PM_PRESENT: u64 = 1 << 63;
const PM_PFN: u64 = (1 << 55) - 1;

/// The write tracking of one running process.
#[derive(Debug)]
pub struct Tracker {
    pid: Pid,
    /// Held, never read: closing it ends the tracking.
    _uffd: OwnedFd,
    pagemap: File,
    /// The areas registered (private anonymous, at registration time).
    areas: Vec<(u64, u64)>,
}

/// A private anonymous area (heap, stack, anonymous mmap) with some access.
pub(crate) fn trackable(e: &MapsEntry) -> bool {
    !e.shared
        && e.inode == 0
        && e.prot != 0
        && (e.name.is_empty()
            || e.name == "[heap]"
            || e.name == "[stack]"
            || e.name.starts_with("[anon:"))
}

fn bad(pid: Pid, why: String) -> DumpError {
    DumpError::BadTarget {
        pid: pid.as_raw(),
        why,
    }
}

impl Tracker {
    /// Starts tracking the writes of `pid` to its private anonymous memory: every such page
    /// counts as not written from here on. The process is stopped only for the two injected
    /// calls (tens of microseconds).
    pub fn start(pid: Pid) -> Result<Self, DumpError> {
        let maps = proc::parse_maps(&proc::read(pid.as_raw(), "maps")?)?;
        let vdso = maps
            .iter()
            .find(|e| e.name == "[vdso]")
            .map(|e| (e.start, e.end))
            .ok_or_else(|| {
                bad(
                    pid,
                    "no [vdso] to inject the userfaultfd call through".into(),
                )
            })?;
        let pagemap = File::open(format!("/proc/{pid}/pagemap"))
            .map_err(|e| bad(pid, format!("open /proc/{pid}/pagemap: {e}")))?;
        let pidfd = sys::pidfd_open(pid).map_err(|e| bad(pid, format!("pidfd_open: {e}")))?;
        let frozen = Frozen::seize(pid)?;
        let leader = &frozen.leader().tracee;
        let regs = frozen.leader().regs;
        let mut code = vec![0u8; (vdso.1 - vdso.0) as usize];
        leader.read_mem(vdso.0, &mut code)?;
        let at = code
            .windows(2)
            .position(|w| w == [0x0f, 0x05])
            .ok_or_else(|| bad(pid, "no syscall instruction in its [vdso]".into()))?;
        let entry = Entry::SingleStep(vdso.0 + at as u64);
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | uffd::UFFD_USER_MODE_ONLY;
        let n = leader.inject(
            entry,
            &regs,
            "userfaultfd",
            libc::SYS_userfaultfd,
            [flags, 0, 0, 0, 0, 0],
        )?;
        let taken = sys::pidfd_getfd(pidfd.as_fd(), n as i32);
        // Closed in the process whatever happened: it keeps no descriptor of ours.
        let closed = leader.inject(entry, &regs, "close", libc::SYS_close, [n, 0, 0, 0, 0, 0]);
        frozen.release()?;
        closed?;
        let fd = taken.map_err(|e| bad(pid, format!("pidfd_getfd of its userfaultfd: {e}")))?;
        let features = uffd::FEATURE_WP_ASYNC | uffd::FEATURE_WP_UNPOPULATED;
        uffd::api(fd.as_fd(), features).map_err(|e| {
            bad(
                pid,
                format!("UFFDIO_API with WP_ASYNC|WP_UNPOPULATED: {e} (kernel 6.7+ needed)"),
            )
        })?;
        let mut areas = Vec::new();
        for e in maps.iter().filter(|e| trackable(e)) {
            // An area unmapped or changed since maps was read is not tracked: its pages
            // travel in the final stop.
            if uffd::register_wp(fd.as_fd(), e.start, e.end - e.start).is_ok() {
                areas.push((e.start, e.end));
            }
        }
        for &(s, e) in &areas {
            // Same: a failure leaves pages unprotected, which then count as written.
            let _ = uffd::write_protect(fd.as_fd(), s, e - s);
        }
        tracing::debug!(
            pid = pid.as_raw(),
            areas = areas.len(),
            "write tracking started"
        );
        Ok(Tracker {
            pid,
            _uffd: fd,
            pagemap,
            areas,
        })
    }

    /// The areas registered at the start.
    pub fn areas(&self) -> &[(u64, u64)] {
        &self.areas
    }

    /// Page ranges of the tracked areas that are present or swapped out now.
    pub fn present(&self) -> Result<Vec<(u64, u64)>, DumpError> {
        self.scan(0, 0, uffd::PAGE_IS_PRESENT | uffd::PAGE_IS_SWAPPED)
    }

    /// Page ranges written since the last call (or the start), write-protected again in the
    /// same step.
    pub fn written(&self) -> Result<Vec<(u64, u64)>, DumpError> {
        self.scan(uffd::PM_SCAN_WP_MATCHING, uffd::PAGE_IS_WRITTEN, 0)
    }

    fn scan(&self, flags: u64, mask: u64, anyof: u64) -> Result<Vec<(u64, u64)>, DumpError> {
        let mut out = Vec::new();
        for &(s, e) in &self.areas {
            let mut at = s;
            while at < e {
                let end = uffd::pagemap_scan(
                    self.pagemap.as_fd(),
                    at,
                    e,
                    flags,
                    mask,
                    anyof,
                    &mut out,
                )
                .map_err(|err| bad(self.pid, format!("PAGEMAP_SCAN {at:#x}-{e:#x}: {err}")))?;
                if end <= at {
                    break;
                }
                at = end;
            }
        }
        Ok(out)
    }

    /// The page frame number of each page of `[start, start + n pages)`, or `None` where a
    /// page is not present.
    pub fn pfns(&self, start: u64, n: usize) -> Result<Vec<Option<u64>>, DumpError> {
        pfns(self.pid, &self.pagemap, start, n)
    }

    /// Stops tracking: the kernel unregisters every area (no `uw` stays in the process).
    pub fn close(self) {
        drop(self);
    }
}

/// The page frame numbers of `[start, start + n pages)` from `pagemap` (of `pid`).
pub fn pfns(pid: Pid, pagemap: &File, start: u64, n: usize) -> Result<Vec<Option<u64>>, DumpError> {
    let mut buf = vec![0u8; n * 8];
    pagemap
        .read_exact_at(&mut buf, start / PAGE_SIZE * 8)
        .map_err(|e| bad(pid, format!("read /proc/{pid}/pagemap: {e}")))?;
    Ok(buf
        .chunks_exact(8)
        .map(|b| {
            let e = u64::from_le_bytes(b.try_into().unwrap_or_default());
            (e & PM_PRESENT != 0).then_some(e & PM_PFN)
        })
        .collect())
}

/// Per PID, the areas its tracker registered.
type Owned = Vec<(i32, Vec<(u64, u64)>)>;

thread_local! {
    /// The areas each tracker of this thread registered, by PID, while a dump on this thread
    /// reads the process: `uw` there is the tracking's, not the process's own userfaultfd.
    static OURS: std::cell::RefCell<Owned> = const { std::cell::RefCell::new(Vec::new()) };
    /// The process a dump on this thread is reading now ([`collecting`]).
    static CURRENT: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// Tells the tracking which process the dumps on this thread read from now on (a tree's
/// members are read one after another: each has areas of its own).
pub fn collecting(pid: i32) {
    CURRENT.with(|c| c.set(pid));
}

/// Whether `[start, end)` lies in an area registered by the tracker of this thread that
/// [`Tracker::own_areas`] declared for the process being read (see [`collecting`]); a VMA
/// there cannot be registered by another userfaultfd.
pub fn is_ours(start: u64, end: u64) -> bool {
    let pid = CURRENT.with(std::cell::Cell::get);
    OURS.with(|o| {
        o.borrow()
            .iter()
            .any(|(p, areas)| *p == pid && areas.iter().any(|&(s, e)| s <= start && end <= e))
    })
}

impl Tracker {
    /// Declares the tracker's areas as its own to the dumps run on this thread (see
    /// [`is_ours`]), until [`Tracker::close`] or drop.
    pub fn own_areas(&self) {
        let pid = self.pid.as_raw();
        OURS.with(|o| {
            let mut o = o.borrow_mut();
            o.retain(|(p, _)| *p != pid);
            o.push((pid, self.areas.clone()));
        });
    }

    /// The page ranges still registered for async write-protection (an area mapped anew or
    /// moved since the start lost it): under the freeze, the ranges whose writes were all
    /// seen.
    pub fn still_tracked(&self) -> Result<Vec<(u64, u64)>, DumpError> {
        let mut r = self.scan(0, uffd::PAGE_IS_WPALLOWED, 0)?;
        // Adjacent ranges are one.
        r.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
        for (s, e) in r {
            match out.last_mut() {
                Some(l) if l.1 == s => l.1 = e,
                _ => out.push((s, e)),
            }
        }
        Ok(out)
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let pid = self.pid.as_raw();
        OURS.with(|o| o.borrow_mut().retain(|(p, _)| *p != pid));
    }
}
