//! Rebuilding the address space: wipe the new task's own mappings, move its vDSO to where the
//! image had it, recreate every VMA, fill in the pages, set the final protections and the mm
//! metadata.

use std::collections::HashMap;
use std::io::{IoSlice, Read};

use nix::sys::uio::{RemoteIoVec, process_vm_writev};
use nix::unistd::Pid;

use super::RestoreError;
use super::fdkinds::Memfds;
use super::inject::{AREA_LEN, Injector};
use super::shm::SharedMemory;
use crate::image::{ImageReader, PageBlock};
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

/// A free range for the injection area: outside every mapping of the new task and `ranges`
/// (the image's areas, of every member of a tree; a live migration's task made before its
/// image is known: the origin's mappings).
pub fn pick_area_avoiding(maps: &[MapsEntry], ranges: &[(u64, u64)]) -> Result<u64, RestoreError> {
    let mut used: Vec<(u64, u64)> = maps
        .iter()
        .map(|m| (m.start, m.end))
        .chain(ranges.iter().copied())
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

/// Unmaps everything of the new task except the injection area, its vDSO block and the areas
/// `from_parent` it keeps from its parent (see [`kept_from_parent`]), then moves
/// the vDSO block to the image's addresses (same kernel ⇒ same vDSO; glibc has cached pointers
/// into it, so it must land exactly where it was).
pub fn wipe_and_place_vdso(
    inj: &Injector<'_>,
    maps: &[MapsEntry],
    mm: &MmState,
    from_parent: &[(u64, u64)],
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
    let mut keep = vec![(inj.area, inj.area + AREA_LEN), (cur_start, cur_end)];
    keep.extend_from_slice(from_parent);
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

/// The areas of a process of a tree that keep pages of its parent (see
/// [`VmaState::inherited`]): the process was just forked from its restored parent, whose area
/// of the same range and kind it has now (`maps`). An image that says so of an area the
/// parent does not have is refused.
pub fn kept_from_parent(
    mm: &MmState,
    parent: Option<&MmState>,
    maps: &[MapsEntry],
) -> Result<Vec<(u64, u64)>, RestoreError> {
    let mut kept = Vec::new();
    for v in mm.vmas.iter().filter(|v| !v.inherited.is_empty()) {
        let in_parent = parent.is_some_and(|p| {
            p.vmas
                .iter()
                .any(|pv| pv.start == v.start && pv.end == v.end && pv.kind == v.kind && !pv.shared)
        });
        let here = maps.iter().any(|m| m.start <= v.start && v.end <= m.end);
        if v.shared || !in_parent || !here {
            return Err(RestoreError::Layout(format!(
                "vma {:#x}-{:#x}: the image says its pages are inherited from the parent, which \
                 has no such private area",
                v.start, v.end
            )));
        }
        kept.push((v.start, v.end));
    }
    Ok(kept)
}

/// The areas kept from the parent made the process's own: the protection its pages are
/// written with, and every page that is not inherited dropped (it reads as zero, or is
/// written from the page stream next).
pub fn trim_kept(inj: &Injector<'_>, mm: &MmState) -> Result<(), RestoreError> {
    for v in mm.vmas.iter().filter(|v| !v.inherited.is_empty()) {
        let vma_err = |what: &str, e: RestoreError| RestoreError::Vma {
            start: v.start,
            what: what.into(),
            source: Box::new(e),
        };
        inj.call(
            "mprotect",
            libc::SYS_mprotect,
            [v.start, v.end - v.start, u64::from(write_prot(v)), 0, 0, 0],
        )
        .map_err(|e| vma_err("mprotect", e.into()))?;
        let mut at = v.start;
        for r in v
            .inherited
            .iter()
            .map(|r| (r.start, r.start + r.count * PAGE_SIZE))
            .chain(std::iter::once((v.end, v.end)))
        {
            if r.0 > at {
                inj.call(
                    "madvise(MADV_DONTNEED)",
                    libc::SYS_madvise,
                    [at, r.0 - at, libc::MADV_DONTNEED as u64, 0, 0, 0],
                )
                .map_err(|e| vma_err("madvise(MADV_DONTNEED)", e.into()))?;
            }
            at = at.max(r.1);
        }
    }
    Ok(())
}

/// A live migration's areas kept from the premade task (see `premade.rs`): made its own
/// like [`trim_kept`] does for a parent's, with every page dropped that the destination did
/// not have already ([`VmaState::precopied`]): it reads as zero, or is written from the page
/// stream next (which skips pages of zeros, so none of the old contents may stay).
pub fn trim_precopied(
    inj: &Injector<'_>,
    mm: &MmState,
    kept: &[(u64, u64)],
) -> Result<(), RestoreError> {
    for v in mm.vmas.iter().filter(|v| kept.contains(&(v.start, v.end))) {
        let vma_err = |what: &str, e: RestoreError| RestoreError::Vma {
            start: v.start,
            what: what.into(),
            source: Box::new(e),
        };
        inj.call(
            "mprotect",
            libc::SYS_mprotect,
            [v.start, v.end - v.start, u64::from(write_prot(v)), 0, 0, 0],
        )
        .map_err(|e| vma_err("mprotect", e.into()))?;
        let mut at = v.start;
        for r in v
            .precopied
            .iter()
            .map(|r| (r.start, r.start + r.count * PAGE_SIZE))
            .chain(std::iter::once((v.end, v.end)))
        {
            if r.0 > at {
                inj.call(
                    "madvise(MADV_DONTNEED)",
                    libc::SYS_madvise,
                    [at, r.0 - at, libc::MADV_DONTNEED as u64, 0, 0, 0],
                )
                .map_err(|e| vma_err("madvise(MADV_DONTNEED)", e.into()))?;
            }
            at = at.max(r.1);
        }
    }
    Ok(())
}

/// What a child forked from its restored parent has of the parent's address space that
/// belongs to the whole mm and that the image of the child does not have: merging of every
/// area (`PR_SET_MEMORY_MERGE`) and the THP setting, both kept across `fork`, are cleared.
pub fn unset_inherited_mm_flags(
    inj: &Injector<'_>,
    mm: &MmState,
    parent: &MmState,
) -> Result<(), RestoreError> {
    if parent.merge_any && !mm.merge_any {
        inj.call(
            "prctl(PR_SET_MEMORY_MERGE, 0)",
            libc::SYS_prctl,
            [PR_SET_MEMORY_MERGE, 0, 0, 0, 0, 0],
        )?;
    }
    if parent.thp_disable != 0 && mm.thp_disable == 0 {
        inj.call(
            "prctl(PR_SET_THP_DISABLE, 0)",
            libc::SYS_prctl,
            [libc::PR_SET_THP_DISABLE as u64, 0, 0, 0, 0, 0],
        )?;
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

/// The image's regular files deleted while mapped, made again by the restorer under the path
/// each had (or, when that path is taken, beside it or in `/tmp`: the restore checker then
/// names the other path), filled, given owner, mode and mtime, and removed again at once; the
/// restorer holds them open and the tasks map them through `/proc/RESTORER/fd/N`, so their
/// mappings show `PATH (deleted)` as they did. Once per inode over the processes of a tree:
/// processes that shared one share it again.
#[derive(Debug, Default)]
pub struct DeletedFiles {
    files: Vec<(u64, std::fs::File)>,
}

impl DeletedFiles {
    /// Makes every file of `states`.
    pub fn create(states: &[&ProcessState]) -> Result<Self, RestoreError> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
        let mut files: Vec<(u64, std::fs::File)> = Vec::new();
        for m in states.iter().flat_map(|s| &s.mapped_deleted) {
            if files.iter().any(|(ino, _)| *ino == m.ino) {
                continue;
            }
            let io = |what: &str| {
                let what = format!("{what} the copy of the deleted mapped file {}", m.path);
                move |source: std::io::Error| RestoreError::Io { what, source }
            };
            let dir = std::path::Path::new(&m.path)
                .parent()
                .and_then(|p| p.to_str())
                .unwrap_or("/");
            let spare = format!(".ferry-deleted-{}-{}", std::process::id(), m.ino);
            let names = [
                m.path.clone(),
                format!("{}/{spare}", dir.trim_end_matches('/')),
                format!("/tmp/{spare}"),
            ];
            let mut made = None;
            let mut last = None;
            for name in &names {
                match std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(name)
                {
                    Ok(f) => {
                        made = Some((name.clone(), f));
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let Some((name, file)) = made else {
                return Err(io("make")(last.unwrap_or_else(|| {
                    std::io::Error::from(std::io::ErrorKind::AlreadyExists)
                })));
            };
            let filled = (|| {
                for e in &m.extents {
                    file.write_all_at(&e.data, e.offset).map_err(io("write"))?;
                }
                file.set_len(m.size).map_err(io("size"))?;
                std::os::unix::fs::fchown(&file, Some(m.uid), Some(m.gid)).map_err(io("chown"))?;
                // After chown, which clears set-id bits.
                file.set_permissions(std::fs::Permissions::from_mode(m.mode))
                    .map_err(io("chmod"))?;
                let ts = nix::sys::time::TimeSpec::new(
                    m.mtime_ns.div_euclid(1_000_000_000),
                    m.mtime_ns.rem_euclid(1_000_000_000),
                );
                nix::sys::stat::futimens(&file, &nix::sys::time::TimeSpec::UTIME_OMIT, &ts)
                    .map_err(|e| io("set the mtime of")(e.into()))
            })();
            let removed = std::fs::remove_file(&name).map_err(io("remove"));
            filled?;
            removed?;
            files.push((m.ino, file));
        }
        Ok(Self { files })
    }

    /// A path through which a task opens the copy of file `ino`.
    pub fn path(&self, ino: u64) -> Option<String> {
        let (_, file) = self.files.iter().find(|(i, _)| *i == ino)?;
        Some(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(file)
        ))
    }
}

/// Recreates every VMA of the image at its address.
pub fn map_vmas(
    inj: &Injector<'_>,
    mm: &MmState,
    memfds: &Memfds,
    deleted: &DeletedFiles,
    shared: &SharedMemory,
    kept: &[(u64, u64)],
) -> Result<(), RestoreError> {
    let mut files: HashMap<(String, bool), u64> = HashMap::new();
    let result =
        (|| {
            for v in mm.vmas.iter().filter(|v| {
                !is_vdso_block(&v.kind)
                    && v.kind != VmaKind::Vsyscall
                    // Made by `aio::restore_rings`.
                    && v.kind != VmaKind::AioRing
                    && !kept.contains(&(v.start, v.end))
            }) {
                let mut flags = libc::MAP_FIXED
                    | if v.shared {
                        libc::MAP_SHARED
                    } else {
                        libc::MAP_PRIVATE
                    };
                if v.growsdown {
                    flags |= libc::MAP_GROWSDOWN;
                }
                if v.flags & crate::state::vmflag::NORESERVE != 0 {
                    flags |= libc::MAP_NORESERVE;
                }
                if let VmaKind::SysvShm { id } = v.kind {
                    shared.attach(inj, v, id)?;
                    continue;
                }
                let path = match &v.kind {
                VmaKind::File(f) => Some(f.path.clone()),
                VmaKind::DeletedFile { path, ino } => Some(deleted.path(*ino).ok_or_else(|| {
                    RestoreError::Layout(format!(
                        "vma {:#x}: the deleted file {path} (inode {ino}) is not in the image",
                        v.start
                    ))
                })?),
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
                                let mode = if rw { libc::O_RDWR } else { libc::O_RDONLY }
                                    | libc::O_CLOEXEC;
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
    /// Index of the process it belongs to (in [`PageStream`]).
    target: usize,
    addr: u64,
    count: u64,
    /// Zero pages must be written here: a private file mapping has the file's bytes beneath,
    /// whereas fresh anonymous memory is zero already.
    write_zeros: bool,
}

static ZERO_PAGE: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

/// The page stream of a tree written process by process: the stream holds each process's
/// pages in turn, in the tree's order, and a block may straddle two processes, so the part of
/// a block that belongs to processes not made yet waits here.
pub struct PageStream {
    spans: Vec<Span>,
    /// The span being written, and how many of its pages are written.
    si: usize,
    used: u64,
    /// A block begun, with how many of its pages are written.
    pending: Option<(PageBlock, u64)>,
}

impl PageStream {
    /// The stream of `states` (a tree's processes, in order).
    pub fn new(states: &[&ProcessState]) -> Self {
        // Pages a child keeps from each process: written even when they hold only zeros, so
        // that the child has them, shared, as the original had.
        let mut inherited: Vec<std::collections::HashSet<u64>> =
            vec![Default::default(); states.len()];
        for c in states {
            let Some(p) = states
                .iter()
                .position(|p| p.pid == c.ppid && p.pid != c.pid)
            else {
                continue;
            };
            for r in c.mm.vmas.iter().flat_map(|v| &v.inherited) {
                inherited[p].extend((0..r.count).map(|k| r.start + k * PAGE_SIZE));
            }
        }
        let mut spans: Vec<Span> = Vec::new();
        for (target, state) in states.iter().enumerate() {
            let kept = &inherited[target];
            for v in &state.mm.vmas {
                let file = matches!(
                    v.kind,
                    VmaKind::File(_) | VmaKind::Memfd { .. } | VmaKind::DeletedFile { .. }
                );
                for r in &v.pages {
                    if kept.is_empty() {
                        spans.push(Span {
                            target,
                            addr: r.start,
                            count: r.count,
                            write_zeros: file,
                        });
                        continue;
                    }
                    for k in 0..r.count {
                        let addr = r.start + k * PAGE_SIZE;
                        let write_zeros = file || kept.contains(&addr);
                        match spans.last_mut() {
                            Some(s)
                                if s.target == target
                                    && s.write_zeros == write_zeros
                                    && s.addr + s.count * PAGE_SIZE == addr
                                    && k > 0 =>
                            {
                                s.count += 1;
                            }
                            _ => spans.push(Span {
                                target,
                                addr,
                                count: 1,
                                write_zeros,
                            }),
                        }
                    }
                }
            }
        }
        Self {
            spans,
            si: 0,
            used: 0,
            pending: None,
        }
    }

    /// Writes the pages of the first `targets.len()` processes (the rest of the stream is
    /// read when they are given). With every process given, reads the stream to its end.
    ///
    /// Writing into fresh memory costs a page fault per page, as much as the decompression:
    /// a helper thread writes two blocks of every three while this one reads, plans and
    /// writes the third (the blocks go to distinct pages, so their order does not matter),
    /// and the reader's workers decompress meanwhile.
    pub fn write<R: Read + Send>(
        &mut self,
        targets: &[&Injector<'_>],
        reader: &mut ImageReader<R>,
    ) -> Result<(), RestoreError> {
        let pids: Vec<Pid> = targets.iter().map(|t| t.tracee().pid()).collect();
        let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<(PageBlock, Vec<Piece>)>(1);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(PageBlock, Vec<Piece>, bool)>();
        std::thread::scope(|scope| {
            let helper_pids = &pids;
            let helper = std::thread::Builder::new()
                .name("ferry-pages".into())
                .spawn_scoped(scope, move || {
                    for (block, pieces) in job_rx {
                        let ok = write_pieces(helper_pids, &block, &pieces);
                        if done_tx.send((block, pieces, ok)).is_err() {
                            return;
                        }
                    }
                });
            let mut helper_tx = helper.is_ok().then_some(job_tx);
            let mut in_flight = 0usize;
            // A block the helper could not write whole goes through the fallback here.
            let settle = |block: PageBlock,
                          pieces: Vec<Piece>,
                          ok: bool,
                          reader: &mut ImageReader<R>|
             -> Result<(), RestoreError> {
                if !ok {
                    write_pieces_slowly(targets, &block, &pieces)?;
                }
                reader.recycle(block);
                Ok(())
            };
            let result = (|| {
                loop {
                    while let Ok((block, pieces, ok)) = done_rx.try_recv() {
                        in_flight -= 1;
                        settle(block, pieces, ok, reader)?;
                    }
                    let Some((block, pieces, stop)) = self.next_block(targets.len(), reader)?
                    else {
                        return Ok(());
                    };
                    if let Some(at) = stop {
                        // Part of the block belongs to processes not made yet: it waits here.
                        if !write_pieces(&pids, &block, &pieces) {
                            write_pieces_slowly(targets, &block, &pieces)?;
                        }
                        self.pending = Some((block, at));
                        return Ok(());
                    }
                    match helper_tx.as_ref() {
                        // The helper takes two blocks for each this thread writes: this
                        // thread also reads the image and plans every block.
                        Some(tx) if in_flight < 2 => match tx.send((block, pieces)) {
                            Ok(()) => in_flight += 1,
                            Err(std::sync::mpsc::SendError((block, pieces))) => {
                                helper_tx = None;
                                settle(block, pieces, false, reader)?;
                            }
                        },
                        _ => {
                            let ok = write_pieces(&pids, &block, &pieces);
                            settle(block, pieces, ok, reader)?;
                        }
                    }
                }
            })();
            // Every block handed out is written (or given up) before this returns.
            drop(helper_tx);
            while in_flight > 0 {
                let Ok((block, pieces, ok)) = done_rx.recv() else {
                    break;
                };
                in_flight -= 1;
                if result.is_ok() {
                    settle(block, pieces, ok, reader)?;
                }
            }
            result
        })
    }

    /// The next block and where its pages go: pieces for the first `upto` processes, and
    /// where in the block a process not given yet begins, if it does. `None` at the end.
    #[allow(clippy::type_complexity)]
    fn next_block<R: Read + Send>(
        &mut self,
        upto: usize,
        reader: &mut ImageReader<R>,
    ) -> Result<Option<(PageBlock, Vec<Piece>, Option<u64>)>, RestoreError> {
        if self.spans.get(self.si).is_some_and(|s| s.target >= upto) {
            return Ok(None);
        }
        let (block, skip) = match self.pending.take() {
            Some(b) => b,
            None => match reader.next_pages()? {
                Some(b) => (b, 0),
                None => return Ok(None),
            },
        };
        let mut pieces = Vec::with_capacity(64);
        let mut stop = None;
        let mut pos = 0u64;
        'runs: for (n, data) in block.runs() {
            let seg_start = pos;
            pos += n;
            if pos <= skip {
                continue;
            }
            let first = skip.saturating_sub(seg_start);
            let (mut left, mut doff) = (n - first, (first * PAGE_SIZE) as usize);
            while left > 0 {
                let span = self.spans.get(self.si).ok_or_else(|| {
                    RestoreError::Layout(
                        "the image holds more pages than its manifest lists".into(),
                    )
                })?;
                if span.target >= upto {
                    stop = Some(seg_start + (n - left));
                    break 'runs;
                }
                let take = left.min(span.count - self.used);
                let addr = span.addr + self.used * PAGE_SIZE;
                let len = (take * PAGE_SIZE) as usize;
                match data {
                    Some(off) => {
                        pieces.push(Piece {
                            target: span.target,
                            addr,
                            len,
                            data: Some(off + doff),
                        });
                        doff += len;
                    }
                    None if span.write_zeros => pieces.push(Piece {
                        target: span.target,
                        addr,
                        len,
                        data: None,
                    }),
                    None => {}
                }
                self.used += take;
                left -= take;
                if self.used == span.count {
                    self.si += 1;
                    self.used = 0;
                }
            }
        }
        Ok(Some((block, pieces, stop)))
    }

    /// Fails unless every page the manifest lists was written.
    pub fn finish(&self) -> Result<(), RestoreError> {
        if self.si != self.spans.len() || self.pending.is_some() {
            return Err(RestoreError::Layout(
                "the image holds fewer pages than its manifest lists".into(),
            ));
        }
        Ok(())
    }
}

/// Pages of a block bound for one place: `len` bytes at `addr` in process `target`, from
/// offset `data` of the block's stored pages, or zeros.
#[derive(Debug, Clone, Copy)]
struct Piece {
    target: usize,
    addr: u64,
    len: usize,
    data: Option<usize>,
}

/// Writes `pieces` of `block` with `process_vm_writev`, up to 1024 iovecs a call; false if
/// any call wrote less (the caller then takes the slow path).
fn write_pieces(pids: &[Pid], block: &PageBlock, pieces: &[Piece]) -> bool {
    let stored = block.stored();
    let mut local: Vec<IoSlice<'_>> = Vec::with_capacity(256);
    let mut remote: Vec<RemoteIoVec> = Vec::with_capacity(256);
    let mut target = None;
    let mut ok = true;
    let mut flush =
        |pid: Option<Pid>, local: &mut Vec<IoSlice<'_>>, remote: &mut Vec<RemoteIoVec>| {
            if let Some(pid) = pid
                && !local.is_empty()
            {
                let want: usize = remote.iter().map(|r| r.len).sum();
                ok &= process_vm_writev(pid, local, remote).ok() == Some(want);
            }
            local.clear();
            remote.clear();
        };
    for p in pieces {
        if target != Some(p.target) || local.len() + (p.len / PAGE_SIZE as usize) > 1024 {
            flush(target.map(|t| pids[t]), &mut local, &mut remote);
            target = Some(p.target);
        }
        match p.data {
            Some(off) => {
                local.push(IoSlice::new(&stored[off..off + p.len]));
                remote.push(RemoteIoVec {
                    base: p.addr as usize,
                    len: p.len,
                });
            }
            None => {
                for i in 0..p.len / PAGE_SIZE as usize {
                    local.push(IoSlice::new(&ZERO_PAGE));
                    remote.push(RemoteIoVec {
                        base: p.addr as usize + i * PAGE_SIZE as usize,
                        len: PAGE_SIZE as usize,
                    });
                }
            }
        }
    }
    flush(target.map(|t| pids[t]), &mut local, &mut remote);
    ok
}

/// Writes `pieces` of `block` through each task's `/proc/PID/mem`, which a tracer may write
/// on any mapped page (the path for pages `process_vm_writev` refused).
fn write_pieces_slowly(
    targets: &[&Injector<'_>],
    block: &PageBlock,
    pieces: &[Piece],
) -> Result<(), RestoreError> {
    let stored = block.stored();
    for p in pieces {
        let t = targets[p.target].tracee();
        match p.data {
            Some(off) => t.write_mem(p.addr, &stored[off..off + p.len])?,
            None => {
                for i in 0..(p.len / PAGE_SIZE as usize) as u64 {
                    t.write_mem(p.addr + i * PAGE_SIZE, &ZERO_PAGE)?;
                }
            }
        }
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
    // The rings of AIO contexts are made later (`aio::restore_rings`), which advises them.
    for v in mm
        .vmas
        .iter()
        .filter(|v| restorable(v) && v.kind != VmaKind::AioRing)
    {
        advise_vma(inj, v, mm.merge_any)?;
    }
    Ok(())
}

/// The `madvise` flags of one VMA (see [`advise`]); `merge_any`: the process merges every
/// eligible mapping, so one the image has unmarked is unmarked.
pub fn advise_vma(inj: &Injector<'_>, v: &VmaState, merge_any: bool) -> Result<(), RestoreError> {
    use crate::state::vmflag;
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
    if merge_any && v.flags & vmflag::MERGEABLE == 0 {
        inj.call(
            "madvise(MADV_UNMERGEABLE)",
            libc::SYS_madvise,
            [v.start, len, MADV_UNMERGEABLE, 0, 0, 0],
        )?;
    }
    Ok(())
}

/// Whether every VMA has the flags `smaps` tells (and the check compares) once [`advise`]
/// has run: no VMA is locked (that comes after the pages, [`lock`]) and there is no AIO ring
/// (made after the pages). [`protect`], the other memory step after them, changes none.
pub fn flags_set_before_pages(mm: &MmState) -> bool {
    use crate::state::vmflag;
    mm.aio_rings.is_empty()
        && mm
            .vmas
            .iter()
            .all(|v| v.flags & vmflag::LOCKED == 0 && v.kind != VmaKind::AioRing)
}

/// Test fault `restore-late-madvise` (`FERRY_FAULT`): a restore step that gives a VMA a flag
/// the image does not have after the memory steps (`MADV_DONTDUMP` on the first private
/// anonymous VMA without it), which the restore checker must name.
pub fn late_madvise_fault(inj: &Injector<'_>, mm: &MmState) -> Result<(), RestoreError> {
    use crate::state::vmflag;
    if !crate::migrate::fault("restore-late-madvise") {
        return Ok(());
    }
    if let Some(v) = mm.vmas.iter().find(|v| {
        !v.shared
            && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap)
            && v.flags & vmflag::DONTDUMP == 0
    }) {
        tracing::warn!(
            start = v.start,
            "FERRY_FAULT restore-late-madvise: MADV_DONTDUMP"
        );
        inj.call(
            "madvise(MADV_DONTDUMP)",
            libc::SYS_madvise,
            [
                v.start,
                v.end - v.start,
                libc::MADV_DONTDUMP as u64,
                0,
                0,
                0,
            ],
        )?;
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
