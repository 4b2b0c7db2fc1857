//! Rebuilding the address space: wipe the new task's own mappings, move its vDSO to where the
//! image had it, recreate every VMA, fill in the pages, set the final protections and the mm
//! metadata.

use std::collections::HashMap;
use std::io::{IoSlice, Read};

use nix::sys::uio::{RemoteIoVec, process_vm_writev};

use super::RestoreError;
use super::fdkinds::Memfds;
use super::inject::{AREA_LEN, Injector};
use super::shm::SharedMemory;
use crate::image::ImageReader;
use crate::proc::{self, MapsEntry};
use crate::state::{MmState, PAGE_SIZE, ProcessState, VmaKind, VmaState};

/// Top of the x86_64 user address space with 4-level page tables.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// Lowest address an mmap may use by default (`vm.mmap_min_addr`).
const LOW: u64 = 0x10000;

fn is_vdso_block(k: &VmaKind) -> bool {
    matches!(k, VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock)
}

/// The new task's current mappings.
pub fn current_maps(pid: i32) -> Result<Vec<MapsEntry>, RestoreError> {
    Ok(proc::parse_maps(&proc::read(pid, "maps")?)?)
}

/// Address of a `syscall` instruction in the task's `[vdso]`.
pub fn find_vdso_syscall(
    t: &crate::ptrace::Tracee,
    maps: &[MapsEntry],
) -> Result<u64, RestoreError> {
    let vdso = maps
        .iter()
        .find(|m| m.name == "[vdso]")
        .ok_or_else(|| RestoreError::Layout("the new task has no [vdso]".into()))?;
    let mut code = vec![0u8; (vdso.end - vdso.start) as usize];
    t.read_mem(vdso.start, &mut code)?;
    let at = code
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .ok_or_else(|| RestoreError::Layout("no syscall instruction in the [vdso]".into()))?;
    Ok(vdso.start + at as u64)
}

/// A free range for the injection area: outside every mapping of the new task and of the image.
pub fn pick_area(maps: &[MapsEntry], mm: &MmState) -> Result<u64, RestoreError> {
    let mut used: Vec<(u64, u64)> = maps
        .iter()
        .map(|m| (m.start, m.end))
        .chain(mm.vmas.iter().map(|v| (v.start, v.end)))
        .filter(|(s, _)| *s < TASK_SIZE)
        .collect();
    used.sort_unstable();
    // Walk the gaps from the top down; keep a guard page on each side.
    let mut ceiling = TASK_SIZE - PAGE_SIZE;
    for &(start, end) in used.iter().rev() {
        if end < ceiling && ceiling - end >= AREA_LEN + 2 * PAGE_SIZE {
            return Ok(ceiling - AREA_LEN - PAGE_SIZE);
        }
        ceiling = ceiling.min(start);
    }
    if ceiling > LOW + AREA_LEN + PAGE_SIZE {
        return Ok(ceiling - AREA_LEN - PAGE_SIZE);
    }
    Err(RestoreError::Layout(
        "no free address range for the injection area".into(),
    ))
}

/// One part of the vDSO block: kind, start, end.
type VdsoPart = (VmaKind, u64, u64);

/// Start and end of the `[vvar]`/`[vvar_vclock]`/`[vdso]` block, with each part's size.
fn vdso_block(
    parts: impl Iterator<Item = (VmaKind, u64, u64)>,
) -> Option<(u64, u64, Vec<VdsoPart>)> {
    let mut v: Vec<VdsoPart> = parts.filter(|(k, _, _)| is_vdso_block(k)).collect();
    v.sort_by_key(|(_, s, _)| *s);
    let start = v.first()?.1;
    let end = v.last()?.2;
    Some((start, end, v))
}

fn maps_kind(name: &str) -> VmaKind {
    match name {
        "[vdso]" => VmaKind::Vdso,
        "[vvar]" => VmaKind::Vvar,
        "[vvar_vclock]" => VmaKind::VvarVclock,
        _ => VmaKind::Anonymous,
    }
}

/// Unmaps everything of the new task except the injection area and its vDSO block, then moves
/// the vDSO block to the image's addresses (same kernel ⇒ same vDSO; glibc has cached pointers
/// into it, so it must land exactly where it was).
pub fn wipe_and_place_vdso(
    inj: &Injector<'_>,
    maps: &[MapsEntry],
    mm: &MmState,
) -> Result<(), RestoreError> {
    let (cur_start, cur_end, cur) =
        vdso_block(maps.iter().map(|m| (maps_kind(&m.name), m.start, m.end)))
            .ok_or_else(|| RestoreError::Layout("the new task has no vDSO".into()))?;
    // The image's parts, each matched with this kernel's part of its kind and size, all at
    // one distance: a process that unmapped part of the block (its `[vdso]`, say) or all of it
    // comes back without it.
    let img: Vec<VdsoPart> = {
        let mut v: Vec<VdsoPart> = mm
            .vmas
            .iter()
            .filter(|v| is_vdso_block(&v.kind))
            .map(|v| (v.kind.clone(), v.start, v.end))
            .collect();
        v.sort_by_key(|(_, s, _)| *s);
        v
    };
    let mut delta: Option<u64> = None;
    let mut kept: Vec<VdsoPart> = Vec::with_capacity(img.len());
    for p in &img {
        let matched = cur
            .iter()
            .find(|c| c.0 == p.0 && c.2 - c.1 == p.2 - p.1)
            .filter(|c| delta.is_none_or(|d| p.1.wrapping_sub(c.1) == d));
        let Some(c) = matched else {
            return Err(RestoreError::Layout(format!(
                "the vDSO of this kernel ({cur:x?}) differs from the image's ({img:x?}); a different vDSO is not supported yet"
            )));
        };
        delta = Some(p.1.wrapping_sub(c.1));
        kept.push(c.clone());
    }
    let mut keep = [(inj.area, inj.area + AREA_LEN), (cur_start, cur_end)];
    keep.sort_unstable();
    let mut from = 0u64;
    for (s, e) in keep
        .iter()
        .copied()
        .chain(std::iter::once((TASK_SIZE, TASK_SIZE)))
    {
        if s > from {
            inj.call("munmap", libc::SYS_munmap, [from, s - from, 0, 0, 0, 0])?;
        }
        from = from.max(e);
    }

    for (_, s, e) in cur.iter().filter(|c| !kept.contains(c)) {
        inj.call("munmap", libc::SYS_munmap, [*s, e - s, 0, 0, 0, 0])?;
    }
    let delta = delta.unwrap_or(0);
    if delta != 0 {
        // Move part by part (mremap works on one VMA), in the order that never overlaps a part
        // not yet moved.
        let mut parts = kept;
        if delta < (1u64 << 63) {
            parts.reverse();
        }
        for (_, s, e) in parts {
            let to = s.wrapping_add(delta);
            let got = inj.call(
                "mremap",
                libc::SYS_mremap,
                [
                    s,
                    e - s,
                    e - s,
                    (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                    to,
                    0,
                ],
            )?;
            if got != to {
                return Err(RestoreError::Layout(format!(
                    "vDSO part moved to {got:#x}, not {to:#x}"
                )));
            }
        }
    }
    Ok(())
}

/// The protection a VMA is mapped with while its pages are written.
fn write_prot(v: &VmaState) -> u32 {
    if v.pages.is_empty() {
        v.prot
    } else {
        v.prot | crate::state::prot::READ | crate::state::prot::WRITE
    }
}

/// Recreates every VMA of the image at its address.
pub fn map_vmas(
    inj: &Injector<'_>,
    mm: &MmState,
    memfds: &Memfds,
    shared: &SharedMemory,
) -> Result<(), RestoreError> {
    let mut files: HashMap<(String, bool), u64> = HashMap::new();
    let result = (|| {
        for v in mm
            .vmas
            .iter()
            .filter(|v| !is_vdso_block(&v.kind) && v.kind != VmaKind::Vsyscall)
        {
            let mut flags = libc::MAP_FIXED
                | if v.shared {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE
                };
            if v.growsdown {
                flags |= libc::MAP_GROWSDOWN;
            }
            if let VmaKind::SysvShm { id } = v.kind {
                shared.attach(inj, v, id)?;
                continue;
            }
            let path = match &v.kind {
                VmaKind::File(f) => Some(f.path.clone()),
                VmaKind::Memfd { ino } => Some(memfds.path(*ino).ok_or_else(|| {
                    RestoreError::Layout(format!(
                        "vma {:#x}: memfd inode {ino} is not in the image",
                        v.start
                    ))
                })?),
                _ => shared.shmem_source(v)?,
            };
            let fd = match path {
                Some(path) => {
                    let rw = v.shared
                        && (v.maywrite || matches!(v.kind, VmaKind::SharedAnonymous { .. }));
                    let key = (path, rw);
                    match files.get(&key) {
                        Some(fd) => *fd,
                        None => {
                            let addr = inj.put_path(&key.0)?;
                            let mode =
                                if rw { libc::O_RDWR } else { libc::O_RDONLY } | libc::O_CLOEXEC;
                            let fd = inj
                                .call(
                                    "openat",
                                    libc::SYS_openat,
                                    [libc::AT_FDCWD as u64, addr, mode as u64, 0, 0, 0],
                                )
                                .map_err(|e| RestoreError::Vma {
                                    start: v.start,
                                    what: format!("open {}", key.0),
                                    source: Box::new(e.into()),
                                })?;
                            files.insert(key, fd);
                            fd
                        }
                    }
                }
                None => {
                    flags |= libc::MAP_ANONYMOUS;
                    u64::MAX
                }
            };
            let got = inj
                .call(
                    "mmap",
                    libc::SYS_mmap,
                    [
                        v.start,
                        v.end - v.start,
                        u64::from(write_prot(v)),
                        flags as u64,
                        fd,
                        v.pgoff,
                    ],
                )
                .map_err(|e| RestoreError::Vma {
                    start: v.start,
                    what: "mmap".into(),
                    source: Box::new(e.into()),
                })?;
            if got != v.start {
                return Err(RestoreError::Layout(format!(
                    "vma {:#x} mapped at {got:#x}",
                    v.start
                )));
            }
        }
        Ok(())
    })();
    for fd in files.values() {
        inj.call("close", libc::SYS_close, [*fd, 0, 0, 0, 0, 0])?;
    }
    result
}

/// Where the page stream goes: consecutive pages of the stream at consecutive addresses.
struct Span {
    /// Index of the process it belongs to.
    target: usize,
    addr: u64,
    count: u64,
    /// Zero pages must be written here: a private file mapping has the file's bytes beneath,
    /// whereas fresh anonymous memory is zero already.
    write_zeros: bool,
}

static ZERO_PAGE: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

/// Streams the image's pages into the task, in stream order.
pub fn write_pages<R: Read + Send>(
    inj: &Injector<'_>,
    state: &ProcessState,
    reader: &mut ImageReader<R>,
) -> Result<(), RestoreError> {
    write_pages_tree(&[(inj, state)], reader)
}

/// Streams the image's pages into the processes of a tree: the stream holds each process's
/// pages in turn, in the tree's order, and a block may straddle two processes.
pub fn write_pages_tree<R: Read + Send>(
    targets: &[(&Injector<'_>, &ProcessState)],
    reader: &mut ImageReader<R>,
) -> Result<(), RestoreError> {
    let spans: Vec<Span> = targets
        .iter()
        .enumerate()
        .flat_map(|(target, (_, state))| {
            state.mm.vmas.iter().flat_map(move |v| {
                let write_zeros = matches!(v.kind, VmaKind::File(_) | VmaKind::Memfd { .. });
                v.pages.iter().map(move |r| Span {
                    target,
                    addr: r.start,
                    count: r.count,
                    write_zeros,
                })
            })
        })
        .collect();
    let (mut si, mut used) = (0usize, 0u64);
    let mut remote: Vec<RemoteIoVec> = Vec::with_capacity(1024);
    while let Some(block) = reader.next_pages()? {
        let mut local: Vec<IoSlice<'_>> = Vec::with_capacity(256);
        remote.clear();
        let mut current = spans.get(si).map_or(0, |s| s.target);
        for (n, data) in block.segments() {
            let (mut left, mut doff) = (n, 0usize);
            while left > 0 {
                let span = spans.get(si).ok_or_else(|| {
                    RestoreError::Layout(
                        "the image holds more pages than its manifest lists".into(),
                    )
                })?;
                if span.target != current || local.len() >= 768 {
                    flush(targets[current].0, &local, &remote)?;
                    local.clear();
                    remote.clear();
                    current = span.target;
                }
                let take = left.min(span.count - used);
                let addr = span.addr + used * PAGE_SIZE;
                let len = (take * PAGE_SIZE) as usize;
                match data {
                    Some(d) => {
                        local.push(IoSlice::new(&d[doff..doff + len]));
                        remote.push(RemoteIoVec {
                            base: addr as usize,
                            len,
                        });
                        doff += len;
                    }
                    None if span.write_zeros => {
                        for i in 0..take {
                            local.push(IoSlice::new(&ZERO_PAGE));
                            remote.push(RemoteIoVec {
                                base: (addr + i * PAGE_SIZE) as usize,
                                len: PAGE_SIZE as usize,
                            });
                        }
                    }
                    None => {}
                }
                used += take;
                left -= take;
                if used == span.count {
                    si += 1;
                    used = 0;
                }
            }
        }
        if let Some((inj, _)) = targets.get(current) {
            flush(inj, &local, &remote)?;
        }
        drop(local);
        reader.recycle(block);
    }
    if si != spans.len() {
        return Err(RestoreError::Layout(
            "the image holds fewer pages than its manifest lists".into(),
        ));
    }
    Ok(())
}

fn flush(
    inj: &Injector<'_>,
    local: &[IoSlice<'_>],
    remote: &[RemoteIoVec],
) -> Result<(), RestoreError> {
    if local.is_empty() {
        return Ok(());
    }
    let pid = inj.tracee().pid();
    let want: usize = remote.iter().map(|r| r.len).sum();
    if process_vm_writev(pid, local, remote).ok() == Some(want) {
        return Ok(());
    }
    for (l, r) in local.iter().zip(remote) {
        inj.tracee().write_mem(r.base as u64, l)?;
    }
    Ok(())
}

/// Gives every VMA its final protection.
pub fn protect(inj: &Injector<'_>, mm: &MmState) -> Result<(), RestoreError> {
    for v in mm.vmas.iter().filter(|v| write_prot(v) != v.prot) {
        inj.call(
            "mprotect",
            libc::SYS_mprotect,
            [v.start, v.end - v.start, u64::from(v.prot), 0, 0, 0],
        )?;
    }
    Ok(())
}

/// `PR_SET_MM_MAP`: code/data/brk/stack/arguments/environment bounds, auxv and the executable,
/// so that `/proc/PID/{cmdline,environ,exe,auxv}` and `brk()` behave as before. Then the name.
pub fn set_mm(inj: &Injector<'_>, state: &ProcessState) -> Result<(), RestoreError> {
    let mm = &state.mm;
    let path = inj.put_path(&state.exe.path)?;
    let exe_fd = inj
        .call(
            "openat",
            libc::SYS_openat,
            [
                libc::AT_FDCWD as u64,
                path,
                (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
                0,
                0,
                0,
            ],
        )
        .map_err(|e| RestoreError::Vma {
            start: 0,
            what: format!("open executable {}", state.exe.path),
            source: Box::new(e.into()),
        })?;
    let auxv: Vec<u8> = mm.auxv.iter().flat_map(|w| w.to_le_bytes()).collect();
    let auxv_addr = inj.put(8192, &auxv)?;
    let mut map = Vec::with_capacity(104);
    for w in [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_addr,
    ] {
        map.extend_from_slice(&w.to_le_bytes());
    }
    map.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    map.extend_from_slice(&(exe_fd as u32).to_le_bytes());
    let map_addr = inj.put(4096 * 6, &map)?;
    let r = inj.call(
        "prctl(PR_SET_MM_MAP)",
        libc::SYS_prctl,
        [
            libc::PR_SET_MM as u64,
            libc::PR_SET_MM_MAP as u64,
            map_addr,
            map.len() as u64,
            0,
            0,
        ],
    );
    inj.call("close", libc::SYS_close, [exe_fd, 0, 0, 0, 0, 0])?;
    r?;
    let mut comm = state.comm.as_bytes().to_vec();
    comm.truncate(15);
    comm.push(0);
    let comm_addr = inj.put(4096, &comm)?;
    inj.call(
        "prctl(PR_SET_NAME)",
        libc::SYS_prctl,
        [libc::PR_SET_NAME as u64, comm_addr, 0, 0, 0, 0],
    )?;
    Ok(())
}

/// `PR_SET_MEMORY_MERGE` (Linux 6.4).
const PR_SET_MEMORY_MERGE: u64 = 67;
/// `MADV_UNMERGEABLE`.
const MADV_UNMERGEABLE: u64 = 13;

fn restorable(v: &VmaState) -> bool {
    !is_vdso_block(&v.kind) && v.kind != VmaKind::Vsyscall
}

/// The `madvise` flags of every VMA and the process-wide THP and KSM settings, once the VMAs
/// are mapped and before their pages are written (so that the pages land as the flags say:
/// huge or not). A VMA whose flags differ from its neighbour's is split from it here again.
pub fn advise(inj: &Injector<'_>, mm: &MmState) -> Result<(), RestoreError> {
    use crate::state::vmflag;
    if mm.thp_disable != 0 {
        inj.call(
            "prctl(PR_SET_THP_DISABLE)",
            libc::SYS_prctl,
            [
                libc::PR_SET_THP_DISABLE as u64,
                1,
                u64::from(mm.thp_disable & !1),
                0,
                0,
                0,
            ],
        )?;
    }
    // Merging every eligible VMA marks them all; those the image has unmarked are unmarked
    // below.
    if mm.merge_any {
        inj.call(
            "prctl(PR_SET_MEMORY_MERGE)",
            libc::SYS_prctl,
            [PR_SET_MEMORY_MERGE, 1, 0, 0, 0, 0],
        )?;
    }
    let advice = [
        (
            vmflag::DONTFORK,
            libc::MADV_DONTFORK,
            "madvise(MADV_DONTFORK)",
        ),
        (
            vmflag::DONTDUMP,
            libc::MADV_DONTDUMP,
            "madvise(MADV_DONTDUMP)",
        ),
        (
            vmflag::WIPEONFORK,
            libc::MADV_WIPEONFORK,
            "madvise(MADV_WIPEONFORK)",
        ),
        (
            vmflag::HUGEPAGE,
            libc::MADV_HUGEPAGE,
            "madvise(MADV_HUGEPAGE)",
        ),
        (
            vmflag::NOHUGEPAGE,
            libc::MADV_NOHUGEPAGE,
            "madvise(MADV_NOHUGEPAGE)",
        ),
        (
            vmflag::MERGEABLE,
            libc::MADV_MERGEABLE,
            "madvise(MADV_MERGEABLE)",
        ),
        (
            vmflag::SEQ_READ,
            libc::MADV_SEQUENTIAL,
            "madvise(MADV_SEQUENTIAL)",
        ),
        (vmflag::RAND_READ, libc::MADV_RANDOM, "madvise(MADV_RANDOM)"),
    ];
    for v in mm.vmas.iter().filter(|v| restorable(v)) {
        let len = v.end - v.start;
        for (bit, adv, call) in advice {
            if v.flags & bit != 0 {
                inj.call(call, libc::SYS_madvise, [v.start, len, adv as u64, 0, 0, 0])
                    .map_err(|e| RestoreError::Vma {
                        start: v.start,
                        what: call.into(),
                        source: Box::new(e.into()),
                    })?;
            }
        }
        if mm.merge_any && v.flags & vmflag::MERGEABLE == 0 {
            inj.call(
                "madvise(MADV_UNMERGEABLE)",
                libc::SYS_madvise,
                [v.start, len, MADV_UNMERGEABLE, 0, 0, 0],
            )?;
        }
    }
    Ok(())
}

/// Locks the VMAs the image has locked (`mlock2`, with `MLOCK_ONFAULT` where it was so), after
/// their pages are written and protected: locking faults in whatever is not on fault only.
pub fn lock(inj: &Injector<'_>, mm: &MmState) -> Result<(), RestoreError> {
    use crate::state::vmflag;
    for v in mm
        .vmas
        .iter()
        .filter(|v| restorable(v) && v.flags & vmflag::LOCKED != 0)
    {
        let onfault = if v.flags & vmflag::LOCKONFAULT != 0 {
            libc::MLOCK_ONFAULT as u64
        } else {
            0
        };
        inj.call(
            "mlock2",
            libc::SYS_mlock2,
            [v.start, v.end - v.start, onfault, 0, 0, 0],
        )
        .map_err(|e| RestoreError::Vma {
            start: v.start,
            what: "mlock2".into(),
            source: Box::new(e.into()),
        })?;
    }
    Ok(())
}

/// `mlockall(MCL_FUTURE[|MCL_ONFAULT])` when the image's new mappings were locked: last of the
/// memory steps, once the restore maps nothing more of its own.
pub fn lock_future(inj: &Injector<'_>, mm: &MmState) -> Result<(), RestoreError> {
    if mm.lock_future != 0 {
        inj.call(
            "mlockall",
            libc::SYS_mlockall,
            [u64::from(mm.lock_future), 0, 0, 0, 0, 0],
        )?;
    }
    Ok(())
}
