//! Post-copy (`ferry migrate --lazy`, docs/migration.md "Post-copy"): the restore of a copy
//! whose private anonymous pages named `precopied` in the image are not there yet. Those
//! areas are left without their pages. A userfaultfd is made inside the task (an injected
//! `userfaultfd(2)`, while the task still has the restorer's privileges), taken out with
//! `pidfd_getfd` and closed in the task again: the task keeps no descriptor of it. Once the
//! restore and its checker are done, the areas are registered with it ([`register`]; the
//! copy is held stopped) and ferryd serves the copy's missing-page faults
//! (`migrate/lazy.rs`) until every page arrived, then closes it.
//!
//! The caller asks for it on its own thread ([`want`]) and takes the result there
//! ([`take`]), so that the restore's signature stays the one every restore uses.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, OwnedFd};

use nix::unistd::Pid;

use super::RestoreError;
use super::inject::Injector;
use crate::state::{MmState, PAGE_SIZE};
use crate::sys::{self, pagemap, uffd};

/// A restored copy's missing pages and the userfaultfd that reports faults on them.
#[derive(Debug)]
pub struct Armed {
    /// The copy (in the restorer's PID namespace).
    pub pid: Pid,
    /// Registered for missing-page faults (non-blocking).
    pub uffd: OwnedFd,
    /// The registered areas.
    pub areas: Vec<(u64, u64)>,
    /// The pages that are not there yet (runs: start, end), sorted.
    pub missing: Vec<(u64, u64)>,
}

thread_local! {
    static WANT: Cell<bool> = const { Cell::new(false) };
    static ARMED: RefCell<Option<Armed>> = const { RefCell::new(None) };
}

/// Whether the restores on this thread leave the `precopied` pages missing and arm a
/// userfaultfd for them.
pub fn want(on: bool) {
    WANT.with(|w| w.set(on));
    ARMED.with(|a| a.borrow_mut().take());
}

/// The userfaultfd of the last restore on this thread, if it armed one.
pub fn take() -> Option<Armed> {
    ARMED.with(|a| a.borrow_mut().take())
}

/// The features asked for: the process's own changes to the registered areas are reported
/// (a page it dropped must not be filled later with what the origin had; an area it moved
/// takes its missing pages along; a child it forks is named).
pub const FEATURES: u64 = uffd::FEATURE_EVENT_REMAP
    | uffd::FEATURE_EVENT_REMOVE
    | uffd::FEATURE_EVENT_UNMAP
    | uffd::FEATURE_EVENT_FORK;

/// In the restore, while the task still has the restorer's privileges: makes the
/// userfaultfd (when asked on this thread). The areas are registered by [`register`] once
/// the restore and its checker are done with the task's memory (a read of a registered
/// missing page by the restorer would wait for a fault handler that does not exist yet).
pub(crate) fn arm(inj: &Injector<'_>, pid: Pid, mm: &MmState) -> Result<(), RestoreError> {
    if !WANT.with(Cell::get) {
        return Ok(());
    }
    let bad = |why: String| RestoreError::Layout(format!("post-copy: {why}"));
    let areas: Vec<(u64, u64)> = mm
        .vmas
        .iter()
        .filter(|v| !v.precopied.is_empty())
        .map(|v| (v.start, v.end))
        .collect();
    let missing: Vec<(u64, u64)> = mm
        .vmas
        .iter()
        .flat_map(|v| v.precopied.iter())
        .map(|r| (r.start, r.start + r.count * PAGE_SIZE))
        .collect();
    let pidfd = sys::pidfd_open(pid).map_err(|e| bad(format!("pidfd_open: {e}")))?;
    // Not user-mode-only: a system call of the copy that reads or writes a missing page
    // (read(2) into it, write(2) from it) must wait for it too, not fail with EFAULT.
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let n = inj.call("userfaultfd", libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?;
    let taken = sys::pidfd_getfd(pidfd.as_fd(), n as i32);
    inj.call("close", libc::SYS_close, [n, 0, 0, 0, 0, 0])?;
    let fd = taken.map_err(|e| bad(format!("pidfd_getfd of its userfaultfd: {e}")))?;
    uffd::api(fd.as_fd(), FEATURES).map_err(|e| {
        bad(format!(
            "UFFDIO_API with the remap, remove, unmap and fork events: {e}"
        ))
    })?;
    tracing::debug!(pid = pid.as_raw(), "post-copy userfaultfd made");
    ARMED.with(|a| {
        *a.borrow_mut() = Some(Armed {
            pid,
            uffd: fd,
            areas,
            missing,
        })
    });
    Ok(())
}

/// Registers the areas of `a` for missing-page faults, in the restored copy (held stopped:
/// nothing runs in it). Fails if a missing page is present (something touched it since the
/// restore left it out: it would read zeros).
pub fn register(a: &Armed) -> Result<(), String> {
    let pid = a.pid;
    let bad = |why: String| format!("post-copy: {why}");
    for &(s, e) in &a.areas {
        uffd::register_missing(a.uffd.as_fd(), s, e - s)
            .map_err(|err| bad(format!("UFFDIO_REGISTER of {s:#x}-{e:#x}: {err}")))?;
    }
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| bad(format!("open /proc/{pid}/pagemap: {e}")))?;
    // The kernel walks only the page tables there are (`PAGEMAP_SCAN`): a missing area of
    // any size costs next to nothing.
    let any = pagemap::Match {
        inverted: 0,
        all: 0,
        any: pagemap::category::PRESENT | pagemap::category::SWAPPED,
    };
    let scan = |s: u64, e: u64, m: pagemap::Match| {
        let mut first = None;
        pagemap::scan(pagemap.as_fd(), s, e, m, |at, end| {
            first.get_or_insert((at, end));
        })
        .map(|()| first)
        .map_err(|err| bad(format!("PAGEMAP_SCAN of /proc/{pid}/pagemap: {err}")))
    };
    for &(s, e) in &a.missing {
        if let Some((at, end)) = scan(s, e, any)? {
            // What kind of page it is says who touched it: the zero page (read), a huge
            // page (a fault nearby filled its 2 MiB), or a page written.
            let is = |c: u64| {
                let m = pagemap::Match {
                    inverted: 0,
                    all: c,
                    any: 0,
                };
                scan(at, end, m).map(|f| f.is_some())
            };
            let kind = if is(pagemap::category::PFNZERO)? {
                "the zero page"
            } else if is(pagemap::category::HUGE)? {
                "part of a huge page"
            } else {
                "a page of its own"
            };
            let area = a.areas.iter().find(|(as_, ae)| (*as_..*ae).contains(&at));
            return Err(bad(format!(
                "page {at:#x} is present before its contents arrived ({} page(s) to {end:#x}, \
                 {kind}; missing run {s:#x}-{e:#x}, area {:x?})",
                (end - at) / PAGE_SIZE,
                area
            )));
        }
    }
    tracing::debug!(
        pid = pid.as_raw(),
        areas = a.areas.len(),
        runs = a.missing.len(),
        "post-copy areas registered"
    );
    Ok(())
}
