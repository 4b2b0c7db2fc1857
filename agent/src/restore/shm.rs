//! Shared memory that the restored processes map together.
//!
//! - **Shared anonymous memory** (`MAP_SHARED|MAP_ANONYMOUS`) is a shmem object. One is made
//!   per object of the image, by an injected `mmap` in the first new task; ferry keeps it open
//!   through `/proc/TASK/map_files/…` and every mapping of it, in any process of the image, is
//!   an `mmap` of `/proc/FERRY/fd/N`: one object again, shown as `/dev/zero (deleted)`. Its
//!   pages travel in the page stream once and are written through whichever mapping comes
//!   first.
//! - **SysV segments** keep their id. A segment that is still there (same id, key and size:
//!   SysV memory outlives its processes unless removed) is attached as it is, with the
//!   contents it has now, as a shared file mapping would be. One that is gone is made again
//!   with the same id (`/proc/sys/kernel/shm_next_id`), key, mode and owner, filled from the
//!   image, and marked for removal again if it was. Segments are made and filled by injected
//!   calls in the first new task (`shmget`, `shmat` at a scratch address, `shmdt`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use nix::sys::uio::{RemoteIoVec, process_vm_writev};

use super::RestoreError;
use super::inject::Injector;
use crate::state::{PAGE_SIZE, ProcessState, SysvShmState, VmaKind, VmaState, prot};
use crate::sys;

const SHM_RDONLY: u64 = 0o10000;
const SHM_EXEC: u64 = 0o100000;

/// Shared memory objects of the image, made once for all its processes.
#[derive(Debug)]
pub struct SharedMemory {
    /// Shmem objects by their inode at dump time.
    shmem: HashMap<u64, File>,
    /// SysV segments: id, size, whether made here, whether to mark removed at the end.
    sysv: Vec<Segment>,
    /// Disarmed once the restore succeeded: segments made here are removed on failure.
    armed: bool,
    /// The process's own IPC namespace, where its segments are made (`None`: ferry's).
    ns: Option<File>,
}

#[derive(Debug)]
struct Segment {
    id: i32,
    size: u64,
    made: bool,
    removed: bool,
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // A private namespace goes with the task.
        if !self.armed || self.ns.is_some() {
            return;
        }
        for s in self.sysv.iter().filter(|s| s.made) {
            let _ = sys::shm_remove(s.id);
        }
    }
}

fn sysv_err(id: i32, what: impl Into<String>) -> RestoreError {
    RestoreError::SysvShm {
        id,
        what: what.into(),
    }
}

impl SharedMemory {
    /// Makes every shared object that the processes of `states` map, through `inj` (a new
    /// task that is still a copy of the restorer). `ns`: the task's own IPC namespace, new
    /// and empty, where every segment of the image is made (attached or not).
    pub fn prepare(
        inj: &Injector<'_>,
        states: &[&ProcessState],
        ns: Option<&File>,
    ) -> Result<Self, RestoreError> {
        let ns = ns
            .map(|f| {
                f.try_clone().map_err(|source| RestoreError::Io {
                    what: "keep the IPC namespace open".into(),
                    source,
                })
            })
            .transpose()?;
        let mut out = SharedMemory {
            shmem: HashMap::new(),
            sysv: Vec::new(),
            armed: true,
            ns,
        };
        // Shmem objects: as large as the largest extent any mapping of them reaches.
        let mut sizes: Vec<(u64, u64)> = Vec::new();
        for v in states.iter().flat_map(|p| &p.mm.vmas) {
            if let VmaKind::SharedAnonymous { ino, size } = v.kind
                && ino != 0
            {
                let need = size.max(v.pgoff + (v.end - v.start));
                match sizes.iter_mut().find(|(i, _)| *i == ino) {
                    Some((_, s)) => *s = (*s).max(need),
                    None => sizes.push((ino, need)),
                }
            }
        }
        for (ino, size) in sizes {
            let size = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
            out.shmem.insert(ino, make_shmem(inj, size)?);
        }
        // SysV segments, once each; their contents may be spread over several processes.
        let mut segs: Vec<(&SysvShmState, Vec<&SysvShmState>)> = Vec::new();
        for s in states.iter().flat_map(|p| &p.sysv_shm) {
            match segs.iter_mut().find(|(f, _)| f.id == s.id) {
                Some((_, all)) => all.push(s),
                None => segs.push((s, vec![s])),
            }
        }
        if segs.is_empty() {
            return Ok(out);
        }
        let live = match &out.ns {
            Some(_) => Vec::new(),
            None => crate::proc::sysv_segments()?,
        };
        for (s, all) in segs {
            let made = match live.iter().find(|l| l.id == s.id) {
                Some(l) if l.key == s.key && l.size == s.size => false,
                Some(l) => {
                    return Err(sysv_err(
                        s.id,
                        format!(
                            "the id is taken by another segment (key {:#x}, {} bytes; the image's has key {:#x}, {} bytes)",
                            l.key, l.size, s.key, s.size
                        ),
                    ));
                }
                None => {
                    make_segment(inj, s, &all, out.ns.as_ref())?;
                    true
                }
            };
            out.sysv.push(Segment {
                id: s.id,
                size: s.size,
                made,
                removed: s.removed,
            });
        }
        Ok(out)
    }

    /// The path through which a task opens shmem object `ino`.
    fn shmem_path(&self, ino: u64) -> Option<String> {
        let f = self.shmem.get(&ino)?;
        Some(format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd()))
    }

    /// Maps a shared anonymous VMA: its object when the image names one, else a fresh one.
    /// Returns `None` for a VMA of another kind.
    pub fn shmem_source(&self, v: &VmaState) -> Result<Option<String>, RestoreError> {
        match v.kind {
            VmaKind::SharedAnonymous { ino, .. } if ino != 0 => {
                self.shmem_path(ino).map(Some).ok_or_else(|| {
                    RestoreError::Layout(format!(
                        "vma {:#x}: shared memory object {ino} was not made",
                        v.start
                    ))
                })
            }
            _ => Ok(None),
        }
    }

    /// Attaches SysV segment `id` where the VMA `v` was, with its protection.
    pub fn attach(&self, inj: &Injector<'_>, v: &VmaState, id: i32) -> Result<(), RestoreError> {
        let seg = self
            .sysv
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| sysv_err(id, "not in the image"))?;
        let mut flags = 0;
        if v.prot & prot::WRITE == 0 && !v.maywrite {
            flags |= SHM_RDONLY;
        }
        if v.prot & prot::EXEC != 0 {
            flags |= SHM_EXEC;
        }
        let len = v.end - v.start;
        let whole = seg.size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let fail = |what: &str, e: crate::ptrace::PtraceError| RestoreError::Vma {
            start: v.start,
            what: format!("SysV shared memory id {id}: {what}"),
            source: Box::new(e.into()),
        };
        if v.pgoff == 0 && len == whole {
            inj.call(
                "shmat",
                libc::SYS_shmat,
                [id as u64, v.start, flags, 0, 0, 0],
            )
            .map_err(|e| fail("shmat", e))?;
        } else {
            // Part of the segment: attached anywhere, the part moved into place, the rest
            // detached.
            let base = inj
                .call("shmat", libc::SYS_shmat, [id as u64, 0, flags, 0, 0, 0])
                .map_err(|e| fail("shmat", e))?;
            inj.call(
                "mremap",
                libc::SYS_mremap,
                [
                    base + v.pgoff,
                    len,
                    len,
                    (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                    v.start,
                    0,
                ],
            )
            .map_err(|e| fail("mremap", e))?;
            inj.call("munmap", libc::SYS_munmap, [base, whole, 0, 0, 0, 0])
                .map_err(|e| fail("munmap", e))?;
        }
        let given = prot::READ
            | if flags & SHM_RDONLY == 0 {
                prot::WRITE
            } else {
                0
            }
            | if flags & SHM_EXEC != 0 { prot::EXEC } else { 0 };
        if given != v.prot {
            inj.call(
                "mprotect",
                libc::SYS_mprotect,
                [v.start, len, u64::from(v.prot), 0, 0, 0],
            )
            .map_err(|e| fail("mprotect", e))?;
        }
        Ok(())
    }

    /// Once every process has attached: segments that were marked for removal are marked
    /// again (they go with their last process). Before the restore checker, which compares
    /// the mark.
    pub fn mark_removed(&self) -> Result<(), RestoreError> {
        for s in self.sysv.iter().filter(|s| s.removed) {
            let id = s.id;
            let remove = move || sys::shm_remove(id).map_err(|e| e.to_string());
            match &self.ns {
                Some(ns) => super::ipc::in_ns(ns, remove),
                None => remove().map_err(|e| sysv_err(id, e)),
            }
            .map_err(|e| sysv_err(id, format!("mark removed: {e}")))?;
        }
        Ok(())
    }

    /// The restore succeeded: nothing is undone any more.
    pub fn finish(mut self) {
        self.armed = false;
    }
}

/// A new shmem object of `size` bytes: mapped shared and anonymous in the task, opened by
/// ferry through `/proc/TASK/map_files`, unmapped again.
fn make_shmem(inj: &Injector<'_>, size: u64) -> Result<File, RestoreError> {
    let addr = inj.call(
        "mmap(shared anonymous)",
        libc::SYS_mmap,
        [
            0,
            size,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    )?;
    let path = format!(
        "/proc/{}/map_files/{addr:x}-{:x}",
        inj.tracee().pid(),
        addr + size
    );
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| RestoreError::Io {
            what: format!("open the shared memory object {path}"),
            source,
        });
    inj.call("munmap", libc::SYS_munmap, [addr, size, 0, 0, 0, 0])?;
    file
}

/// Makes SysV segment `s` with its id, fills it from every copy's extents, sets owner and
/// mode.
fn make_segment(
    inj: &Injector<'_>,
    s: &SysvShmState,
    all: &[&SysvShmState],
    ns: Option<&File>,
) -> Result<(), RestoreError> {
    let id = s.id;
    match ns {
        Some(ns) => super::ipc::in_ns(ns, move || crate::ipcns::set_next_id("shm", id))?,
        None => crate::ipcns::set_next_id("shm", id).map_err(|e| sysv_err(id, e))?,
    }
    let perm = crate::state::IpcPermState {
        id,
        key: s.key,
        mode: s.mode,
        uid: s.uid,
        gid: s.gid,
        cuid: s.cuid,
        cgid: s.cgid,
    };
    let flags = (libc::IPC_CREAT | libc::IPC_EXCL) as u64 | u64::from(s.mode);
    let got = super::ipc::create_as(inj, &perm, &|| {
        inj.call_raw(
            libc::SYS_shmget,
            [s.key as u32 as u64, s.size, flags, 0, 0, 0],
        )
    })
    .map_err(|e| sysv_err(id, e))?;
    let filled = (|| {
        let base = inj.call("shmat", libc::SYS_shmat, [got as u64, 0, 0, 0, 0, 0])?;
        for e in all.iter().flat_map(|c| &c.extents) {
            let remote = [RemoteIoVec {
                base: (base + e.offset) as usize,
                len: e.data.len(),
            }];
            if process_vm_writev(
                inj.tracee().pid(),
                &[std::io::IoSlice::new(&e.data)],
                &remote,
            )
            .ok()
                != Some(e.data.len())
            {
                inj.tracee().write_mem(base + e.offset, &e.data)?;
            }
        }
        inj.call("shmdt", libc::SYS_shmdt, [base, 0, 0, 0, 0, 0])?;
        // struct shmid64_ds: IPC_SET takes uid (offset 4), gid (8) and mode (20) of its
        // ipc64_perm.
        let mut ds = [0u8; 128];
        ds[4..8].copy_from_slice(&s.uid.to_le_bytes());
        ds[8..12].copy_from_slice(&s.gid.to_le_bytes());
        ds[20..24].copy_from_slice(&s.mode.to_le_bytes());
        let at = inj.put(4096, &ds)?;
        inj.call(
            "shmctl(IPC_SET)",
            libc::SYS_shmctl,
            [got as u64, libc::IPC_SET as u64, at, 0, 0, 0],
        )?;
        Ok::<(), RestoreError>(())
    })();
    if let Err(e) = filled {
        // In a private namespace it goes with the task.
        if ns.is_none() {
            let _ = sys::shm_remove(got);
        }
        return Err(e);
    }
    Ok(())
}
