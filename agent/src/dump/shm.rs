//! SysV shared memory (`shmget`/`shmat`): the segments a process has attached, from
//! `/proc/sysvipc/shm`, and their contents, read through the process's own mappings.

use std::fs::File;
use std::os::unix::fs::FileExt;

use nix::unistd::Pid;

use super::DumpError;
use crate::image::MAX_SYSV_SHM_BYTES;
use crate::proc;
use crate::state::{MemfdExtent, PAGE_SIZE, SysvShmState, VmaKind, VmaState};

/// `SHM_DEST` in `shm_perm.mode`: marked for removal.
const SHM_DEST: u32 = 0o1000;

/// Every segment the VMAs of `pid` attach, with the contents those VMAs show (zero pages left
/// out). The process is frozen: its memory is read through `/proc/PID/mem`.
pub fn collect_sysv(pid: Pid, vmas: &[VmaState]) -> Result<Vec<SysvShmState>, DumpError> {
    let ids: Vec<i32> = vmas
        .iter()
        .filter_map(|v| match v.kind {
            VmaKind::SysvShm { id } => Some(id),
            _ => None,
        })
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let all = proc::sysv_segments()?;
    let path = format!("/proc/{pid}/mem");
    let mem = File::open(&path).map_err(|source| proc::ProcError::Read {
        path: path.clone().into(),
        source,
    })?;
    let mut out: Vec<SysvShmState> = Vec::new();
    let mut bytes = 0usize;
    for id in ids {
        if out.iter().any(|s| s.id == id) {
            continue;
        }
        let info = all.iter().find(|s| s.id == id).ok_or_else(|| {
            DumpError::Unsupported(format!(
                "SysV shared memory id {id} is not in /proc/sysvipc/shm (another IPC namespace?)"
            ))
        })?;
        // Page by page, from the first VMA that shows it.
        let pages = info.size.div_ceil(PAGE_SIZE) as usize;
        let mut seen = vec![false; pages];
        let mut data: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut page = vec![0u8; PAGE_SIZE as usize];
        for v in vmas.iter().filter(|v| v.kind == VmaKind::SysvShm { id }) {
            for addr in (v.start..v.end).step_by(PAGE_SIZE as usize) {
                let off = v.pgoff + (addr - v.start);
                let Some(slot) = seen.get_mut((off / PAGE_SIZE) as usize) else {
                    continue;
                };
                if *slot {
                    continue;
                }
                *slot = true;
                mem.read_exact_at(&mut page, addr)
                    .map_err(|source| proc::ProcError::Read {
                        path: path.clone().into(),
                        source,
                    })?;
                if page.iter().all(|b| *b == 0) {
                    continue;
                }
                bytes += page.len();
                if bytes > MAX_SYSV_SHM_BYTES {
                    return Err(DumpError::Unsupported(format!(
                        "SysV shared memory id {id}: more than {MAX_SYSV_SHM_BYTES} bytes of SysV shared memory in one process is not supported yet"
                    )));
                }
                data.push((off, page.clone()));
            }
        }
        data.sort_by_key(|(off, _)| *off);
        let mut extents: Vec<MemfdExtent> = Vec::new();
        for (off, d) in data {
            match extents.last_mut() {
                Some(e) if e.offset + e.data.len() as u64 == off => e.data.extend_from_slice(&d),
                _ => extents.push(MemfdExtent {
                    offset: off,
                    data: d,
                }),
            }
        }
        // The last page may be partly beyond the segment.
        if let Some(e) = extents.last_mut() {
            let max = info.size.saturating_sub(e.offset) as usize;
            e.data.truncate(max);
        }
        out.push(SysvShmState {
            id,
            key: info.key,
            mode: info.perms & 0o777,
            size: info.size,
            uid: info.uid,
            gid: info.gid,
            cuid: info.cuid,
            cgid: info.cgid,
            removed: info.perms & SHM_DEST != 0,
            extents,
        });
    }
    Ok(out)
}

/// Refuses a process in an IPC namespace other than ferry's own (`unshare(CLONE_NEWIPC)`): its
/// SysV message queues, semaphore sets and shared memory segments, and its POSIX message
/// queues, are that namespace's, which the restore does not make again; restored in ferry's
/// namespace the process would find other objects under its ids, silently. The refusal says
/// what the namespace holds (read from a thread that joins it for the purpose).
pub fn check_ipc_namespace(pid: Pid) -> Result<(), DumpError> {
    let ns = |p: &str| std::fs::read_link(p).ok();
    let theirs = ns(&format!("/proc/{pid}/ns/ipc"));
    if theirs.is_none() || theirs == ns("/proc/self/ns/ipc") {
        return Ok(());
    }
    let held = ipc_objects_of(pid)
        .map(|(msg, sem, shm)| {
            let n = |k: usize, one: &str, many: &str| {
                format!("{k} {}", if k == 1 { one } else { many })
            };
            format!(
                " holding {}, {} and {}",
                n(msg, "SysV message queue", "SysV message queues"),
                n(sem, "semaphore set", "semaphore sets"),
                n(shm, "shared memory segment", "shared memory segments"),
            )
        })
        .unwrap_or_default();
    Err(DumpError::Unsupported(format!(
        "a private IPC namespace (unshare CLONE_NEWIPC){held} is not supported yet"
    )))
}

/// How many SysV message queues, semaphore sets and shared memory segments the IPC namespace
/// of `pid` holds: `/proc/sysvipc/*` shows the reader's namespace, so a thread of ours joins
/// theirs (`setns`, which affects that thread only) and reads them.
fn ipc_objects_of(pid: Pid) -> Option<(usize, usize, usize)> {
    let file = File::open(format!("/proc/{pid}/ns/ipc")).ok()?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWIPC).ok()?;
        let count = |what: &str| {
            std::fs::read_to_string(format!("/proc/sysvipc/{what}"))
                .ok()
                .map(|t| t.lines().skip(1).filter(|l| !l.trim().is_empty()).count())
        };
        Some((count("msg")?, count("sem")?, count("shm")?))
    })
    .join()
    .ok()
    .flatten()
}
