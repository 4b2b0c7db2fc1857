//! A live migration's task made before its image (docs/migration.md, "Live migration"): at
//! the first pre-copy round the destination creates the task with the PID the process has,
//! seizes it, maps the origin's private anonymous areas at their addresses and writes each
//! round's pages into them while the origin runs. The final restore then goes on from this
//! task ([`super::restore_with_pages`]): the areas that match the final image are kept, so that
//! the pages already there are not written again while the process is stopped.
//!
//! The task is traced with `PTRACE_O_EXITKILL` by the thread that made it, which is the one
//! that restores it: if the migration is given up (the [`Premade`] dropped) or the restorer
//! dies, the task dies with it, and nothing is left.

use nix::sys::ptrace::Options;
use nix::unistd::Pid;

use super::inject::{AREA_LEN, Injector};
use super::task::{self, NewTask};
use super::{PidNsMode, RestoreError, mm};
use crate::ptrace::Tracee;

/// One area mapped in the premade task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Mapped with `MAP_NORESERVE` (smaps `nr` on the origin).
    pub noreserve: bool,
}

/// The task made ahead of the image.
#[derive(Debug)]
pub struct Premade {
    /// The PID asked for (the process's, as its image will name it).
    pub want: i32,
    pub(super) task: NewTask,
    pub(super) tracee: Tracee,
    /// The injection area.
    pub(super) area: u64,
    /// The areas mapped, sorted.
    pub areas: Vec<Area>,
    /// A pidfd of the restorer the task inherited, and its number there: the final restore
    /// puts it where the descriptor plan wants it (made later, it was not there to inherit).
    pub(super) pidfd_in_task: i32,
    _pidfd: std::os::fd::OwnedFd,
}

impl Premade {
    /// Makes the task (PID `want`, or in a new PID namespace when it is taken, as the final
    /// restore would), stops it and maps `areas`. `avoid`: the origin's other mappings, where
    /// the injection area must not go. An area that would cover the task's vDSO is left out
    /// (its pages are written at the final restore).
    pub fn make(want: i32, areas: &[Area], avoid: &[(u64, u64)]) -> Result<Self, RestoreError> {
        // Inherited by the task (a copy of our descriptor table), for the final restore's
        // pidfd_getfd of the descriptors it gets from us.
        let pidfd = crate::sys::pidfd_open(nix::unistd::getpid()).map_err(|source| {
            RestoreError::Create {
                step: "pidfd_open of the restorer",
                source,
            }
        })?;
        // The task starts as a copy of this agent: what the heap holds free (the pages of a
        // migration before) would be copied into it, and unmapped again in the stop.
        crate::sys::malloc_trim();
        let task = task::create(want, PidNsMode::Auto, false, true)?;
        let tracee = Tracee::seize(
            task.pid,
            Options::PTRACE_O_EXITKILL
                | Options::PTRACE_O_TRACESYSGOOD
                | Options::PTRACE_O_TRACECLONE
                | Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP),
        )?;
        tracee.interrupt()?;
        tracee.set_sigmask(u64::MAX)?;
        let maps = mm::current_maps(task.pid.as_raw())?;
        let vdso_syscall = mm::find_vdso_syscall(&tracee, &maps)?;
        let mut used: Vec<(u64, u64)> = avoid.to_vec();
        used.extend(areas.iter().map(|a| (a.start, a.end)));
        let area = mm::pick_area_avoiding(&maps, &used)?;
        let inj = Injector::bootstrap(&tracee, vdso_syscall, area)?;
        if let Some((ptr, len, sig)) = tracee.rseq()? {
            inj.call(
                "rseq(unregister)",
                libc::SYS_rseq,
                [ptr, u64::from(len), 1, u64::from(sig), 0, 0],
            )?;
        }
        // The kernel's special mappings of the task (its vDSO block) and the injection area
        // stay; whatever else of the restorer's copy an area covers is replaced (the task runs
        // none of it: every call goes through the injection area).
        let special: Vec<(u64, u64)> = maps
            .iter()
            .filter(|m| m.name.starts_with("[v"))
            .map(|m| (m.start, m.end))
            .chain(std::iter::once((area, area + AREA_LEN)))
            .collect();
        let mut mapped = Vec::new();
        for a in areas {
            if special.iter().any(|&(s, e)| s < a.end && a.start < e) {
                continue;
            }
            let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
            if a.noreserve {
                flags |= libc::MAP_NORESERVE;
            }
            let got = inj.call(
                "mmap",
                libc::SYS_mmap,
                [
                    a.start,
                    a.end - a.start,
                    (libc::PROT_READ | libc::PROT_WRITE) as u64,
                    flags as u64,
                    u64::MAX,
                    0,
                ],
            )?;
            if got != a.start {
                return Err(RestoreError::Layout(format!(
                    "premade area {:#x} landed at {got:#x}",
                    a.start
                )));
            }
            mapped.push(*a);
        }
        mapped.sort_by_key(|a| a.start);
        Ok(Premade {
            want,
            task,
            tracee,
            area,
            areas: mapped,
            pidfd_in_task: std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            _pidfd: pidfd,
        })
    }

    /// The task's PID (in the restorer's namespace).
    pub fn pid(&self) -> Pid {
        self.task.pid
    }

    /// Whether `[start, end)` lies inside one premade area.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        self.areas.iter().any(|a| a.start <= start && end <= a.end)
    }
}
