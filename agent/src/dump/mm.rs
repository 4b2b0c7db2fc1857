//! Memory: VMAs from `/proc/PID/maps` + `smaps`, present pages from `pagemap`, contents with
//! `process_vm_readv` (and `/proc/PID/mem` for pages the process itself may not read).

use std::fs::File;
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;

use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use super::DumpError;
use crate::image::{ImageWriter, WriteImageError};
use crate::proc::{self, MapsEntry};
use crate::ptrace::{Entry, Tracee};
use crate::state::{
    FileIdentity, FileRef, PAGE_SIZE, PageRun, ProcessState, VmaKind, VmaState, vmflag,
};
use crate::sys::pagemap as scan;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

/// smaps `VmFlags` of flags a process can set on its memory that the restore cannot set again,
/// with what they are.
const UNRESTORABLE_FLAGS: [(&str, &str); 5] = [
    (
        "um",
        "userfaultfd registration (VmFlags um, VM_UFFD_MISSING)",
    ),
    (
        "uw",
        "userfaultfd write protection (VmFlags uw, VM_UFFD_WP)",
    ),
    (
        "ui",
        "userfaultfd minor-fault registration (VmFlags ui, VM_UFFD_MINOR)",
    ),
    ("sl", "a sealed mapping (VmFlags sl, mseal)"),
    ("ss", "a shadow stack (VmFlags ss)"),
];

/// Reads the VMAs of `pid` and classifies them, refusing kinds not supported yet. Page runs are
/// left empty; [`find_pages`] fills them.
pub fn collect_vmas(pid: Pid) -> Result<Vec<VmaState>, DumpError> {
    let (mut vmas, names) = read_maps(pid)?;
    apply_smaps(&mut vmas, &names, &proc::read(pid.as_raw(), "smaps")?)?;
    Ok(vmas)
}

/// The VMAs of `pid` from `maps`, classified, without what only `smaps` tells
/// ([`apply_smaps`] adds it): enough to find their pages. Refuses kinds not supported yet.
/// Beside them, the name `maps` gives each (for messages).
pub fn read_maps(pid: Pid) -> Result<(Vec<VmaState>, Vec<String>), DumpError> {
    let maps = proc::parse_maps(&proc::read(pid.as_raw(), "maps")?)?;
    let vmas = maps
        .iter()
        .map(|e| {
            let kind = classify(pid, e).map_err(|what| refuse(e.start, e.end, &e.name, &what))?;
            Ok(VmaState {
                start: e.start,
                end: e.end,
                prot: e.prot,
                shared: e.shared,
                pgoff: e.offset,
                kind,
                growsdown: false,
                maywrite: false,
                flags: 0,
                pages: Vec::new(),
                cow_shared_kb: 0,
                inherited: Vec::new(),
                precopied: Vec::new(),
            })
        })
        .collect::<Result<_, DumpError>>()?;
    Ok((vmas, maps.into_iter().map(|e| e.name).collect()))
}

fn refuse(start: u64, end: u64, name: &str, what: &str) -> DumpError {
    DumpError::Unsupported(format!(
        "vma {start:#x}-{end:#x} {name}: {what} is not supported yet"
    ))
}

/// Adds to `vmas` (from [`read_maps`]) what `smaps` says of each: its `VmFlags` (refusing
/// flags the restore could not give back) and the private anonymous memory it shares
/// copy-on-write.
pub fn apply_smaps(vmas: &mut [VmaState], names: &[String], smaps: &str) -> Result<(), DumpError> {
    let flags = proc::parse_smaps_vmflags(smaps);
    let shared_kb = proc::parse_smaps_shared(smaps);
    apply_vmflags(vmas, names, |v| {
        let vmflags = flags
            .iter()
            .find(|(s, _)| *s == v.start)
            .map(|(_, f)| f.as_slice())
            .unwrap_or(&[]);
        let kb = shared_kb
            .iter()
            .find(|(s, _)| *s == v.start)
            .map_or(0, |(_, kb)| *kb);
        (vmflags, kb)
    })
}

/// [`apply_smaps`] for a restored process with the `smaps` the restore read once the areas
/// had their flags and before any page was written (its page-table walk then costs nothing;
/// after the pages, ~10 ms per GiB). What the restore did to the areas since (`mprotect`,
/// which changes no flag `smaps` tells here, and may split or join areas) is taken as it
/// is: each area takes the flags of the one that held its range then. Returns false, with
/// nothing applied, when an area lies in none of them (made or moved since). The caller
/// has made sure that nothing since changed a flag (see [`smaps_ahead_holds`]) and that
/// no page can be shared copy-on-write: no memory is counted shared.
pub fn apply_smaps_ahead(
    vmas: &mut [VmaState],
    names: &[String],
    smaps: &str,
) -> Result<bool, DumpError> {
    let areas = proc::parse_smaps_areas(smaps);
    let holder = |v: &VmaState| {
        areas
            .iter()
            .find(|(s, e, _)| *s <= v.start && v.end <= *e)
            .map(|(_, _, f)| f.as_slice())
    };
    if vmas.iter().any(|v| holder(v).is_none()) {
        return Ok(false);
    }
    apply_vmflags(vmas, names, |v| (holder(v).unwrap_or(&[]), 0))?;
    Ok(true)
}

/// Whether a restored process, about to be read back, can have changed none of what
/// `smaps` tells since its areas were given their flags and before its pages were written,
/// apart from what [`apply_smaps_ahead`] takes from its maps of now: no area is locked
/// (`VmLck` 0: the flags the restore sets after the pages), and none of its pages can be
/// shared, which takes another process mapping them (a child forked from it; none) or KSM
/// (no page merged).
pub fn smaps_ahead_holds(pid: Pid) -> Result<bool, DumpError> {
    if locked_kb(pid)? != 0 {
        return Ok(false);
    }
    let raw = pid.as_raw();
    let tasks =
        std::fs::read_dir(format!("/proc/{raw}/task")).map_err(|source| proc::ProcError::Read {
            path: format!("/proc/{raw}/task").into(),
            source,
        })?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        if !children.trim().is_empty() {
            return Ok(false);
        }
    }
    Ok(
        std::fs::read_to_string(format!("/proc/{raw}/ksm_merging_pages"))
            .is_ok_and(|n| n.trim() == "0"),
    )
}

/// Post-copy: whether the pages of `v` can follow the copy once it runs: a private
/// anonymous area (the heap too), not a stack, with some access, not locked, none of its
/// pages a parent's or pre-copied.
pub fn can_follow(v: &VmaState) -> bool {
    !v.shared
        && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap)
        && !v.growsdown
        && v.prot != 0
        && v.flags & (vmflag::LOCKED | vmflag::LOCKONFAULT) == 0
        && v.inherited.is_empty()
        && v.precopied.is_empty()
}

/// Fewest pages (resident or swapped, as `smaps` counted them) of an area whose pages
/// follow; a smaller one travels in the image (its faults would come at once).
pub const FOLLOW_MIN_PAGES: u64 = 256;

/// Post-copy to a destination that takes absent runs ([`super::DumpOptions::pages_follow`]):
/// each area whose pages can follow ([`can_follow`]), unchanged since `smaps` (same range),
/// with at least [`FOLLOW_MIN_PAGES`] pages resident or swapped there and at least half of
/// its range, has its whole range named `precopied`: [`find_pages`] leaves it out, its pages
/// are looked for once the copy runs. The others are walked as in any dump (a sparse area
/// would cost the destination a bit per page of its range for few pages).
pub fn follow_unwalked(vmas: &mut [VmaState], smaps: &str) {
    let kb = proc::parse_smaps_kb(smaps, &["Rss:", "Swap:"]);
    for v in vmas.iter_mut().filter(|v| can_follow(v)) {
        let Some(&(_, _, kb)) = kb.iter().find(|(s, e, _)| *s == v.start && *e == v.end) else {
            continue;
        };
        let (held, range) = (kb * 1024 / PAGE_SIZE, (v.end - v.start) / PAGE_SIZE);
        if held >= FOLLOW_MIN_PAGES && held * 2 >= range {
            v.precopied = vec![PageRun {
                start: v.start,
                count: range,
            }];
        }
    }
}

/// The pages of the private anonymous ranges `ranges` (sorted, page aligned) of the frozen
/// `pid` that hold data (present or swapped, the shared zero page not counted: a page only
/// read maps it, and a copy's fault on a page named absent maps it again), as sorted runs:
/// the post-copy's walk of the areas [`follow_unwalked`] left out, and of the few pages
/// kept in the image. (Where the kernel has no `PAGEMAP_SCAN`, the zero page counts.)
pub fn present_runs(pid: Pid, ranges: &[(u64, u64)]) -> Result<Vec<PageRun>, DumpError> {
    use scan::category::{PFNZERO, PRESENT, SWAPPED};
    let pagemap = Pagemap::open(pid)?;
    let m = scan::Match {
        inverted: PFNZERO,
        all: PFNZERO,
        any: PRESENT | SWAPPED,
    };
    let mut out: Vec<PageRun> = Vec::new();
    let mut how = PagemapRead::Scan;
    let wanted: EntryTest = |e| e & (PM_PRESENT | PM_SWAP) != 0;
    for &(start, end) in ranges {
        let runs = pagemap.runs(start, end, wanted, m, &mut how)?;
        for r in runs {
            match out.last_mut() {
                Some(l) if l.start + l.count * PAGE_SIZE == r.start => l.count += r.count,
                _ => out.push(r),
            }
        }
    }
    Ok(out)
}

/// [`apply_smaps`] with each VMA's `VmFlags` and shared KiB from `of`.
fn apply_vmflags<'s>(
    vmas: &mut [VmaState],
    names: &[String],
    of: impl Fn(&VmaState) -> (&'s [String], u64),
) -> Result<(), DumpError> {
    for (v, name) in vmas.iter_mut().zip(names) {
        let (vmflags, shared_kb) = of(v);
        let has = |f: &str| vmflags.iter().any(|x| x == f);
        let special = matches!(
            v.kind,
            VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall
        );
        if !special && (has("io") || has("pf")) {
            return Err(refuse(
                v.start,
                v.end,
                name,
                "a device (VM_IO/VM_PFNMAP) mapping",
            ));
        }
        // Flags the restore could not give back. The kernel's own special mappings come back
        // from the kernel as they were, whatever their flags.
        // A live migration's own write tracking (`uw` inside the areas it registered, which
        // no other userfaultfd can register too) is not the process's: it ends with the
        // migration.
        let ours = |f: &str| f == "uw" && super::track::is_ours(v.start, v.end);
        if !special
            && let Some((_, what)) = UNRESTORABLE_FLAGS
                .iter()
                .find(|(name, _)| has(name) && !ours(name))
        {
            return Err(refuse(v.start, v.end, name, what));
        }
        v.flags = vmflag::NAMES
            .iter()
            .filter(|(name, _)| has(name))
            .fold(0, |acc, (_, bit)| acc | bit);
        v.growsdown = has("gd");
        v.maywrite = has("mw");
        // Private anonymous memory only: a file's pages are shared through the file anyway.
        v.cow_shared_kb =
            if !v.shared && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack) {
                shared_kb
            } else {
                0
            };
    }
    Ok(())
}

fn classify(pid: Pid, e: &MapsEntry) -> Result<VmaKind, String> {
    let name = e.name.as_str();
    let link = || format!("/proc/{pid}/map_files/{:x}-{:x}", e.start, e.end);
    // The shmem object behind a shared anonymous mapping: its inode identifies it across
    // mappings and processes, its size may exceed this mapping.
    let shmem = || VmaKind::SharedAnonymous {
        ino: e.inode,
        size: std::fs::metadata(link()).map_or(0, |m| {
            use std::os::unix::fs::MetadataExt;
            m.size()
        }),
    };
    Ok(match name {
        "" if e.shared => shmem(),
        "" => VmaKind::Anonymous,
        "[heap]" => VmaKind::Heap,
        "[stack]" => VmaKind::Stack,
        "[vdso]" => VmaKind::Vdso,
        "[vvar]" => VmaKind::Vvar,
        "[vvar_vclock]" => VmaKind::VvarVclock,
        "[vsyscall]" => VmaKind::Vsyscall,
        n if n.starts_with("[anon:") => VmaKind::Anonymous,
        n if n.starts_with("[anon_shmem:") => shmem(),
        "/dev/zero (deleted)" if e.shared => shmem(),
        // The inode of a SysV mapping is the segment's id.
        n if n.starts_with("/SYSV") && e.shared => VmaKind::SysvShm {
            id: i32::try_from(e.inode).map_err(|_| "SysV shared memory with this id")?,
        },
        n if super::fdkinds::memfd_name(n).is_some() => {
            if let Some(what) = super::fdkinds::memfd_problem(&link()) {
                return Err(what);
            }
            VmaKind::Memfd { ino: e.inode }
        }
        // The ring of a Linux AIO context is a mapping of the kernel's internal aio file;
        // [`collect_aio_rings`] reads it, once the process is frozen.
        "/[aio] (deleted)" if e.shared => VmaKind::AioRing,
        // A regular file deleted while mapped travels whole (see `collect_mapped_deleted`);
        // the kernel's own objects (`/[aio]`, …) and hugetlbfs files do not.
        n if n.ends_with(" (deleted)") => {
            use std::os::unix::fs::MetadataExt;
            let regular = std::fs::metadata(link())
                .ok()
                .filter(|m| m.is_file() && m.nlink() == 0 && m.ino() == e.inode);
            let hugetlb = nix::sys::statfs::statfs(link().as_str())
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::HUGETLBFS_MAGIC);
            match regular {
                Some(m) if !n.starts_with("/[") && !hugetlb => VmaKind::DeletedFile {
                    path: n.trim_end_matches(" (deleted)").to_string(),
                    ino: m.ino(),
                },
                _ => return Err("a mapping of a deleted file".into()),
            }
        }
        n if n.starts_with('/') => {
            let identity =
                identity_of(&link()).map_err(|err| format!("the mapped file ({err})"))?;
            if identity.ino != e.inode {
                return Err("a mapped file that changed during the dump".into());
            }
            VmaKind::File(FileRef {
                path: n.to_string(),
                identity,
            })
        }
        _ => return Err("this kind of mapping".into()),
    })
}

/// `stat` of a path (following links), as a [`FileIdentity`].
pub fn identity_of(path: &str) -> std::io::Result<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        size: m.size(),
        mtime_ns: m
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.mtime_nsec()),
        rdev: m.rdev(),
    })
}

/// A test of a `pagemap` entry.
type EntryTest = fn(u64) -> bool;

/// Which pages of a VMA travel in the image, as a test of a `pagemap` entry and as the same
/// test in `PAGEMAP_SCAN` categories; `None` for a VMA none of whose pages travel.
fn wanted_pages(vma: &VmaState) -> Option<(EntryTest, scan::Match)> {
    use scan::category::{FILE, PRESENT, SWAPPED};
    Some(match (&vma.kind, vma.shared) {
        (VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall, _) => {
            return None;
        }
        // The ring travels whole in `mm.aio_rings`.
        (VmaKind::AioRing, _) => return None,
        // The file's; SysV segments travel whole in the manifest.
        (VmaKind::File(_) | VmaKind::Memfd { .. } | VmaKind::DeletedFile { .. }, true)
        | (VmaKind::SysvShm { .. }, _) => return None,
        // Private file mapping: only pages that are no longer the file's (COW copies).
        (VmaKind::File(_) | VmaKind::Memfd { .. } | VmaKind::DeletedFile { .. }, false) => (
            |e| e & PM_PRESENT != 0 && e & PM_FILE == 0,
            scan::Match {
                inverted: FILE,
                all: PRESENT | FILE,
                any: 0,
            },
        ),
        (VmaKind::SharedAnonymous { .. }, _) => (
            |e| e & PM_PRESENT != 0,
            scan::Match {
                inverted: 0,
                all: PRESENT,
                any: 0,
            },
        ),
        _ => (
            |e| e & (PM_PRESENT | PM_SWAP) != 0,
            scan::Match {
                inverted: 0,
                all: 0,
                any: PRESENT | SWAPPED,
            },
        ),
    })
}

/// How [`find_pages`] reads `pagemap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagemapRead {
    /// `ioctl(PAGEMAP_SCAN)`, where the kernel has it (else as [`PagemapRead::Entries`]):
    /// runs of pages, the kernel's walk alone.
    Scan,
    /// 8 bytes per page, sifted here.
    Entries,
}

/// Fills each VMA's page runs from `/proc/PID/pagemap`: the pages that must travel in the image.
pub fn find_pages(pid: Pid, vmas: &mut [VmaState]) -> Result<(), DumpError> {
    find_pages_with(pid, vmas, PagemapRead::Scan)
}

/// [`find_pages`], reading `pagemap` as `how` says.
pub fn find_pages_with(
    pid: Pid,
    vmas: &mut [VmaState],
    mut how: PagemapRead,
) -> Result<(), DumpError> {
    let pagemap = Pagemap::open(pid)?;
    // Areas named `precopied` whole before the walk are left to the post-copy's walk.
    for vma in vmas.iter_mut().filter(|v| v.precopied.is_empty()) {
        let Some((wanted, m)) = wanted_pages(vma) else {
            continue;
        };
        let runs = pagemap.runs(vma.start, vma.end, wanted, m, &mut how)?;
        // A page of a shmem object may hold data without being mapped in this process (another
        // process wrote it): its data ranges count too.
        vma.pages = match vma.kind {
            VmaKind::SharedAnonymous { .. } => {
                let mut held = shmem_data_pages(pid, vma);
                held.resize(((vma.end - vma.start) / PAGE_SIZE) as usize, false);
                for r in &runs {
                    let first = ((r.start - vma.start) / PAGE_SIZE) as usize;
                    for slot in held.iter_mut().skip(first).take(r.count as usize) {
                        *slot = true;
                    }
                }
                runs_of(vma.start, held.into_iter())
            }
            _ => runs,
        };
    }
    Ok(())
}

/// Which pages of a shared anonymous VMA the shmem object holds data for (`SEEK_DATA` on the
/// object through `/proc/PID/map_files`); empty when the object cannot be opened.
fn shmem_data_pages(pid: Pid, vma: &VmaState) -> Vec<bool> {
    use nix::unistd::{Whence, lseek};
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", vma.start, vma.end);
    let Ok(file) = File::open(link) else {
        return Vec::new();
    };
    let npages = ((vma.end - vma.start) / PAGE_SIZE) as usize;
    let (first, last) = (vma.pgoff, vma.pgoff + (vma.end - vma.start));
    let mut out = vec![false; npages];
    let mut at = first;
    while at < last {
        let Ok(start) = lseek(&file, at as i64, Whence::SeekData) else {
            break;
        };
        let start = start as u64;
        if start >= last {
            break;
        }
        let end =
            lseek(&file, start as i64, Whence::SeekHole).map_or(last, |e| (e as u64).min(last));
        for page in (start / PAGE_SIZE)..end.div_ceil(PAGE_SIZE) {
            if let Some(slot) = out.get_mut((page - first / PAGE_SIZE) as usize) {
                *slot = true;
            }
        }
        at = end.max(start + PAGE_SIZE);
    }
    out
}

/// Drops the pages of shared anonymous memory that an earlier VMA (of this process or of an
/// earlier process of the tree) already stores: the object is restored once, so its pages
/// need to travel once.
pub fn drop_repeated_shmem_pages(processes: &mut [crate::state::ProcessState]) {
    let mut stored: std::collections::HashSet<(u64, u64)> = std::collections::HashSet::new();
    for v in processes.iter_mut().flat_map(|p| p.mm.vmas.iter_mut()) {
        let VmaKind::SharedAnonymous { ino, .. } = v.kind else {
            continue;
        };
        if ino == 0 {
            continue;
        }
        let mut runs: Vec<PageRun> = Vec::new();
        for r in &v.pages {
            for i in 0..r.count {
                let addr = r.start + i * PAGE_SIZE;
                let page = (v.pgoff + addr - v.start) / PAGE_SIZE;
                if stored.insert((ino, page)) {
                    push_page(&mut runs, addr);
                }
            }
        }
        v.pages = runs;
    }
}

/// Most iovecs per `process_vm_readv` call (the kernel's `UIO_MAXIOV` is 1024).
const MAX_IOV: usize = 1024;

/// Streams the contents of every page run, in order, into the image: each
/// `process_vm_readv` reads straight into the image's block buffer (up to a block at a time),
/// so the pages are copied once, from the process into the block the workers compress.
pub fn write_pages<W: std::io::Write + Send>(
    tracee: &Tracee,
    vmas: &[VmaState],
    writer: &mut ImageWriter<W>,
    progress: Option<&std::sync::atomic::AtomicU64>,
) -> Result<(), DumpError> {
    let mut remote: Vec<RemoteIoVec> = Vec::with_capacity(MAX_IOV);
    let mut runs = vmas
        .iter()
        .flat_map(|v| v.pages.iter())
        .map(|r| (r.start, (r.count * PAGE_SIZE) as usize));
    let mut current = runs.next();
    while current.is_some() {
        let room = writer.page_room();
        let mut filled = 0usize;
        remote.clear();
        while let Some((addr, left)) = current {
            if filled == room.len() || remote.len() == MAX_IOV {
                break;
            }
            let take = left.min(room.len() - filled);
            remote.push(RemoteIoVec {
                base: addr as usize,
                len: take,
            });
            filled += take;
            current = if take == left {
                runs.next()
            } else {
                Some((addr + take as u64, left - take))
            };
        }
        read_remote(tracee, &remote, &mut room[..filled])?;
        writer.commit_pages(filled).map_err(DumpError::Image)?;
        if let Some(p) = progress {
            p.fetch_add(filled as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(())
}

fn read_remote(tracee: &Tracee, remote: &[RemoteIoVec], buf: &mut [u8]) -> Result<(), DumpError> {
    let want = buf.len();
    let got = {
        let mut local = [IoSliceMut::new(buf)];
        process_vm_readv(tracee.pid(), &mut local, remote).unwrap_or(0)
    };
    if got == want {
        return Ok(());
    }
    // Some page refused a plain read (PROT_NONE, or a race): read every piece through
    // /proc/PID/mem, which the kernel lets a tracer use on any mapped page.
    let mut off = 0;
    for r in remote {
        tracee
            .read_mem(r.base as u64, &mut buf[off..off + r.len])
            .map_err(DumpError::Ptrace)?;
        off += r.len;
    }
    Ok(())
}

impl From<WriteImageError> for DumpError {
    fn from(e: WriteImageError) -> Self {
        DumpError::Image(e)
    }
}

/// The address-space settings that belong to the whole process rather than to one VMA.
pub struct MmFlags {
    /// `MCL_FUTURE` (with `MCL_ONFAULT`) when new mappings are locked, else 0.
    pub lock_future: u32,
    /// `prctl(PR_GET_THP_DISABLE)`.
    pub thp_disable: u32,
    /// `prctl(PR_GET_MEMORY_MERGE)`.
    pub merge_any: bool,
}

/// `VmLck` of `/proc/PID/status` in kB: the size of the locked VMAs (`mm->locked_vm`).
pub fn locked_kb(pid: Pid) -> Result<u64, DumpError> {
    let text = proc::read(pid.as_raw(), "status")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| {
            proc::ProcError::Parse {
                file: "status",
                what: "no VmLck".into(),
            }
            .into()
        })
}

/// Reads the process-wide settings by injected calls. `scratch` is a page the process has
/// just mapped (`MAP_PRIVATE|MAP_ANONYMOUS`, not touched yet) and `locked_before` the
/// [`locked_kb`] from before that `mmap`.
///
/// `mlockall(MCL_FUTURE)` sets the mm's `def_flags`, which nothing in `/proc` shows, but
/// every new mapping gets them: the scratch page was locked (`VmLck` grew) if it is in force,
/// and was populated by its `mmap` unless `MCL_ONFAULT` came with it.
pub fn query_flags(
    t: &Tracee,
    entry: Entry,
    regs: &libc::user_regs_struct,
    scratch: u64,
    locked_before: u64,
) -> Result<MmFlags, DumpError> {
    let pid = t.pid();
    let lock_future = if locked_kb(pid)? > locked_before {
        let pm = Pagemap::open(pid)?.entries(scratch, scratch + PAGE_SIZE)?;
        if pm.first().is_some_and(|e| e & PM_PRESENT != 0) {
            libc::MCL_FUTURE as u32
        } else {
            (libc::MCL_FUTURE | libc::MCL_ONFAULT) as u32
        }
    } else {
        0
    };
    let thp_disable = t.inject(
        entry,
        regs,
        "prctl(PR_GET_THP_DISABLE)",
        libc::SYS_prctl,
        [libc::PR_GET_THP_DISABLE as u64, 0, 0, 0, 0, 0],
    )? as u32;
    // EINVAL: a kernel without KSM, where nothing can be merged.
    let merge = t.inject_raw(
        entry,
        regs,
        libc::SYS_prctl,
        [PR_GET_MEMORY_MERGE, 0, 0, 0, 0, 0],
    )?;
    Ok(MmFlags {
        lock_future,
        thp_disable,
        merge_any: merge > 0,
    })
}

/// `PR_GET_MEMORY_MERGE` (Linux 6.4).
const PR_GET_MEMORY_MERGE: u64 = 68;

/// Largest AIO ring read (the kernel's largest, 0x10000000 / 32 events, is 256 MiB; the image
/// carries at most [`crate::image::MAX_AIO_RING_BYTES`] over all rings).
const MAX_AIO_RING_LEN: u64 = crate::image::MAX_AIO_RING_BYTES as u64;

/// The rings' `/[aio]` VMAs that are not an AIO context of the process itself, asked by an
/// injected `io_submit(ring, 0, NULL)`: 0 for a context of the process, `EINVAL` for a ring
/// it only maps — inherited across `fork` (the context stays the parent's) or a context
/// destroyed under a mapping moved away. Refused, naming it.
pub fn check_own_aio_rings(
    t: &Tracee,
    entry: Entry,
    regs: &libc::user_regs_struct,
    vmas: &[VmaState],
) -> Result<(), DumpError> {
    for v in vmas.iter().filter(|v| v.kind == VmaKind::AioRing) {
        let r = t.inject_raw(entry, regs, libc::SYS_io_submit, [v.start, 0, 0, 0, 0, 0])?;
        if r != 0 {
            return Err(refuse(
                v.start,
                v.end,
                "/[aio] (deleted)",
                &format!(
                    "the ring of an AIO context (io_setup) that is not the process's own \
                     (inherited across fork, the context is its parent's; io_submit on it: {})",
                    nix::errno::Errno::from_raw(-r as i32)
                ),
            ));
        }
    }
    Ok(())
}

/// Reads the ring of every AIO context (`/[aio]` VMA) of the frozen process: its header and
/// every event slot. Refuses a ring whose header is not one the kernel made (its magic,
/// header length and size; a head or tail the process moved outside the ring), naming it.
pub fn collect_aio_rings(
    t: &Tracee,
    vmas: &[VmaState],
) -> Result<Vec<crate::state::AioRingState>, DumpError> {
    use crate::state::{AIO_EVENT_SIZE, AIO_RING_HEADER, AIO_RING_MAGIC, AioRingState};
    let mut out = Vec::new();
    for v in vmas.iter().filter(|v| v.kind == VmaKind::AioRing) {
        let len = v.end - v.start;
        let bad = |what: String| {
            refuse(
                v.start,
                v.end,
                "/[aio] (deleted)",
                &format!("the ring of an AIO context (io_setup) {what}"),
            )
        };
        if len > MAX_AIO_RING_LEN {
            return Err(bad(format!(
                "of {len} bytes (more than {MAX_AIO_RING_LEN})"
            )));
        }
        let mut header = [0u8; AIO_RING_HEADER as usize];
        t.read_mem(v.start, &mut header)?;
        let word =
            |i: usize| u32::from_le_bytes(header[i * 4..i * 4 + 4].try_into().unwrap_or_default());
        let mut ring = AioRingState {
            start: v.start,
            len,
            id: word(0),
            nr: word(1),
            head: word(2),
            tail: word(3),
            magic: word(4),
            compat_features: word(5),
            incompat_features: word(6),
            header_length: word(7),
            events: Vec::new(),
        };
        let slots = (len - AIO_RING_HEADER) / AIO_EVENT_SIZE;
        if ring.magic != AIO_RING_MAGIC
            || u64::from(ring.header_length) != AIO_RING_HEADER
            || u64::from(ring.nr) != slots
        {
            return Err(bad(format!(
                "whose header is not the kernel's (magic {:#x}, header length {}, {} events \
                 in {len} bytes)",
                ring.magic, ring.header_length, ring.nr
            )));
        }
        if ring.head >= ring.nr || ring.tail >= ring.nr {
            return Err(bad(format!(
                "whose head {} or tail {} is outside its {} events",
                ring.head, ring.tail, ring.nr
            )));
        }
        ring.events = vec![0u8; (slots * AIO_EVENT_SIZE) as usize];
        t.read_mem(v.start + AIO_RING_HEADER, &mut ring.events)?;
        out.push(ring);
    }
    Ok(out)
}

/// Reads each ring's header again, late in the dump: a tail that moved since
/// [`collect_aio_rings`] means requests completed while the process was frozen — they were in
/// flight, which the kernel shows nowhere else, and their completions (and the data of reads)
/// would be lost. Refused, naming the context.
pub fn check_aio_rings_still(
    t: &Tracee,
    rings: &[crate::state::AioRingState],
) -> Result<(), DumpError> {
    for r in rings {
        let mut header = [0u8; 16];
        t.read_mem(r.start, &mut header)?;
        let tail = u32::from_le_bytes(header[12..16].try_into().unwrap_or_default());
        if tail != r.tail {
            return Err(DumpError::Unsupported(format!(
                "AIO context {:#x} (io_setup) with requests in flight (its ring's tail moved \
                 from {} to {tail} while the process was frozen): requests submitted and not \
                 completed are not supported",
                r.start, r.tail
            )));
        }
    }
    Ok(())
}

/// pagemap: the page frame number (bits 0–54; 0 without `CAP_SYS_ADMIN`).
const PM_PFN: u64 = (1 << 55) - 1;
/// pagemap: the page is mapped exactly once.
const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;

/// A process's `/proc/PID/pagemap`, opened once and read one range at a time.
struct Pagemap {
    file: File,
    path: String,
}

impl Pagemap {
    fn open(pid: impl std::fmt::Display) -> Result<Self, DumpError> {
        let path = format!("/proc/{pid}/pagemap");
        let file = File::open(&path).map_err(|source| proc::ProcError::Read {
            path: path.clone().into(),
            source,
        })?;
        Ok(Self { file, path })
    }

    /// The runs of pages of `[start, end)` that `m` matches (`PAGEMAP_SCAN`).
    fn scan(&self, start: u64, end: u64, m: scan::Match) -> Result<Vec<PageRun>, proc::ProcError> {
        use std::os::fd::AsFd;
        let mut runs = Vec::new();
        scan::scan(self.file.as_fd(), start, end, m, |s, e| {
            runs.push(PageRun {
                start: s,
                count: (e - s) / PAGE_SIZE,
            });
        })
        .map_err(|errno| proc::ProcError::Read {
            path: self.path.clone().into(),
            source: errno.into(),
        })?;
        Ok(runs)
    }

    /// The runs of pages of `[start, end)` that `m` matches (`PAGEMAP_SCAN`), or that
    /// `wanted` takes of their entries where the kernel has no `PAGEMAP_SCAN` (then `how`
    /// becomes [`PagemapRead::Entries`] for the calls after).
    fn runs(
        &self,
        start: u64,
        end: u64,
        wanted: EntryTest,
        m: scan::Match,
        how: &mut PagemapRead,
    ) -> Result<Vec<PageRun>, DumpError> {
        if *how == PagemapRead::Scan {
            match self.scan(start, end, m) {
                Ok(r) => return Ok(r),
                // A kernel before 6.7.
                Err(proc::ProcError::Read { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) =>
                {
                    *how = PagemapRead::Entries;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(runs_of(
            start,
            self.entries(start, end)?.into_iter().map(wanted),
        ))
    }

    /// The entries of the pages of `[start, end)`.
    fn entries(&self, start: u64, end: u64) -> Result<Vec<u64>, DumpError> {
        let mut raw = vec![0u8; ((end - start) / PAGE_SIZE) as usize * 8];
        self.file
            .read_exact_at(&mut raw, start / PAGE_SIZE * 8)
            .map_err(|source| proc::ProcError::Read {
                path: self.path.clone().into(),
                source,
            })?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect())
    }
}

/// `/proc/kpageflags`: `KPF_ZERO_PAGE` (the zero page or the huge zero page).
const KPF_ZERO_PAGE: u64 = 1 << 24;

/// What is known of the kernel's zero pages: `/proc/kpageflags` (opened once) and the page
/// frames found to be, or not to be, a zero page.
#[derive(Default)]
struct ZeroPage {
    flags: Option<Option<File>>,
    known: std::collections::HashMap<u64, bool>,
}

/// Whether page frame `pfn` is a zero page (false when `/proc/kpageflags` cannot say).
fn zero_page(z: &mut ZeroPage, pfn: u64) -> bool {
    if let Some(&known) = z.known.get(&pfn) {
        return known;
    }
    let flags = z
        .flags
        .get_or_insert_with(|| File::open("/proc/kpageflags").ok());
    let mut raw = [0u8; 8];
    let zero = flags.as_ref().is_some_and(|f| {
        f.read_exact_at(&mut raw, pfn * 8).is_ok() && u64::from_le_bytes(raw) & KPF_ZERO_PAGE != 0
    });
    // Only the zero pages are remembered: there are at most two, and the other frames many.
    if zero {
        z.known.insert(pfn, true);
    }
    zero
}

/// Whether a VMA's pages can be kept from the parent at restore: private anonymous memory that
/// a fork copies as it is (not `MADV_DONTFORK`/`MADV_WIPEONFORK`), not locked (locking a
/// writable private area breaks the sharing: the restore locks after the children are forked).
fn inheritable(v: &VmaState) -> bool {
    !v.shared
        && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack)
        && v.flags & (vmflag::DONTFORK | vmflag::WIPEONFORK | vmflag::LOCKED) == 0
}

/// Page runs of the pages `yes` marks in the VMA starting at `start`.
fn runs_of(start: u64, yes: impl Iterator<Item = bool>) -> Vec<PageRun> {
    let mut runs: Vec<PageRun> = Vec::new();
    for (i, y) in yes.enumerate() {
        if y {
            push_page(&mut runs, start + i as u64 * PAGE_SIZE);
        }
    }
    runs
}

/// Adds the page at `addr` (after every page already in `runs`) to the last run or a new one.
fn push_page(runs: &mut Vec<PageRun>, addr: u64) {
    match runs.last_mut() {
        Some(r) if r.start + r.count * PAGE_SIZE == addr => r.count += 1,
        _ => runs.push(PageRun {
            start: addr,
            count: 1,
        }),
    }
}

/// Memory a member of a tree shares copy-on-write with its parent since a `fork`: in each
/// private anonymous area that the parent has too (same range, kind and flags), the pages
/// both map with the same page frame (present, not mapped exclusively) become the child's
/// [`VmaState::inherited`] runs and leave its page stream. `members` are the host PIDs of
/// `processes` (root first, parents before children). Without the right to read page frame
/// numbers (they read 0), nothing is marked and every page travels.
pub fn mark_inherited(members: &[i32], processes: &mut [ProcessState]) -> Result<(), DumpError> {
    let mut zero = ZeroPage::default();
    for c in 1..processes.len() {
        let Some(p) = members[..c].iter().position(|&m| m == processes[c].ppid) else {
            continue;
        };
        let (before, after) = processes.split_at_mut(c);
        let parent = &before[p];
        for v in after[0].mm.vmas.iter_mut().filter(|v| inheritable(v)) {
            let Some(pv) = parent.mm.vmas.iter().find(|pv| {
                pv.start == v.start
                    && pv.end == v.end
                    && pv.kind == v.kind
                    && pv.flags == v.flags
                    && inheritable(pv)
            }) else {
                continue;
            };
            let mine = Pagemap::open(members[c])?.entries(v.start, v.end)?;
            let theirs = Pagemap::open(members[p])?.entries(pv.start, pv.end)?;
            let same = |(a, b): (&u64, &u64)| {
                let shared = |e: u64| {
                    e & PM_PRESENT != 0
                        && e & (PM_SWAP | PM_FILE | PM_MMAP_EXCLUSIVE) == 0
                        && e & PM_PFN != 0
                };
                shared(*a) && shared(*b) && a & PM_PFN == b & PM_PFN
            };
            let mut same: Vec<bool> = mine.iter().zip(&theirs).map(same).collect();
            // The kernel's zero page, which every untouched page read maps, is nobody's:
            // such a page is not present after the restore, in either.
            for (s, e) in same.iter_mut().zip(&mine) {
                if *s && zero_page(&mut zero, e & PM_PFN) {
                    *s = false;
                }
            }
            if !same.contains(&true) {
                continue;
            }
            let mut stored = vec![false; same.len()];
            for r in &v.pages {
                let first = ((r.start - v.start) / PAGE_SIZE) as usize;
                for slot in stored.iter_mut().skip(first).take(r.count as usize) {
                    *slot = true;
                }
            }
            let inherited = runs_of(v.start, same.iter().copied());
            let pages = runs_of(v.start, stored.iter().zip(&same).map(|(s, i)| *s && !*i));
            v.pages = pages;
            v.inherited = inherited;
        }
    }
    Ok(())
}

/// Most bytes of files deleted while mapped one process carries.
const MAX_MAPPED_DELETED_BYTES: u64 = crate::image::MAX_MEMFD_BYTES as u64;

/// The regular files `vmas` map that were deleted, once per inode, with their contents (read
/// through `/proc/PID/map_files`, holes left out). One that a descriptor of the process also
/// holds is refused: the mapping and the descriptor would come back as two files.
pub fn collect_mapped_deleted(
    pid: Pid,
    vmas: &[VmaState],
    fds: &[crate::state::FdState],
    max_file_size: u64,
) -> Result<Vec<crate::state::MappedDeletedFile>, DumpError> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<crate::state::MappedDeletedFile> = Vec::new();
    let mut bytes = 0u64;
    for v in vmas {
        let VmaKind::DeletedFile { path, ino } = &v.kind else {
            continue;
        };
        if out.iter().any(|m| m.ino == *ino) {
            continue;
        }
        let refuse = |what: String| {
            DumpError::Unsupported(format!(
                "vma {:#x}-{:#x} {path} (deleted): {what}",
                v.start, v.end
            ))
        };
        if let Some(f) = fds.iter().find(
            |f| matches!(&f.kind, crate::state::FdKind::DeletedFile { ino: i, .. } if i == ino),
        ) {
            return Err(refuse(format!(
                "a mapping of a deleted file that fd {} holds too is not supported yet",
                f.fd
            )));
        }
        let link = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
        let file = File::open(&link).map_err(|e| refuse(format!("cannot be read ({e})")))?;
        let meta = file
            .metadata()
            .map_err(|e| refuse(format!("cannot be read ({e})")))?;
        if meta.ino() != *ino {
            return Err(refuse("changed during the dump".into()));
        }
        let stored = meta.size().min(meta.blocks().saturating_mul(512));
        if stored > max_file_size {
            return Err(refuse(format!(
                "{stored} bytes, more than --max-deleted-file-size {max_file_size}"
            )));
        }
        bytes += stored;
        if bytes > MAX_MAPPED_DELETED_BYTES {
            return Err(refuse(format!(
                "more than {} MiB of deleted mapped files in one process is not supported yet",
                MAX_MAPPED_DELETED_BYTES >> 20
            )));
        }
        let extents = super::fdkinds::read_extents(&file, meta.len())
            .map_err(|e| refuse(format!("cannot be read ({e})")))?;
        out.push(crate::state::MappedDeletedFile {
            ino: *ino,
            path: path.clone(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            extents,
        });
    }
    Ok(out)
}

/// A process (python3) with areas whose pages are known, for tests of the page read-back.
#[cfg(test)]
pub(crate) mod victim {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

    /// Maps 16 private anonymous pages (0, 1, 5, 9, 10 and 11 written), 8 shared anonymous
    /// ones (3 written) and 8 pages of a file privately (0 read, 2 written: a copy), prints
    /// their addresses, then writes anonymous page 7 on each line it reads (`dontdump`:
    /// `MADV_DONTDUMP` of the anonymous area instead).
    const SCRIPT: &str = r#"
import ctypes, mmap, sys
pg = mmap.PAGESIZE
anon = mmap.mmap(-1, 16 * pg, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in (0, 1, 5, 9, 10, 11):
    anon[i * pg] = 1
shared = mmap.mmap(-1, 8 * pg, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
shared[3 * pg] = 1
with open(sys.argv[1], "wb") as f:
    f.write(b"x" * 8 * pg)
f = open(sys.argv[1], "r+b")
priv = mmap.mmap(f.fileno(), 8 * pg, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
_ = priv[0]
priv[2 * pg] = 0x41
addr = lambda m: ctypes.addressof(ctypes.c_char.from_buffer(m))
print(addr(anon), addr(shared), addr(priv), flush=True)
for line in sys.stdin:
    if line.strip() == "dontdump":
        anon.madvise(mmap.MADV_DONTDUMP)
    else:
        anon[7 * pg] = 1
    print("done", flush=True)
"#;

    /// The running victim (killed on drop) and the start of its three areas.
    pub(crate) struct Victim {
        child: Child,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
        pub(crate) anon: u64,
        pub(crate) shared: u64,
        pub(crate) private_file: u64,
        file: std::path::PathBuf,
    }

    impl Victim {
        pub(crate) fn start() -> Victim {
            let file = std::env::temp_dir().join(format!(
                "ferry-pages-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let mut child = Command::new("python3")
                .args(["-c", SCRIPT])
                .arg(&file)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3");
            let stdin = child.stdin.take().expect("stdin");
            let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
            let mut line = String::new();
            stdout.read_line(&mut line).expect("victim's addresses");
            let a: Vec<u64> = line
                .split_whitespace()
                .map(|w| w.parse().expect("an address"))
                .collect();
            assert_eq!(a.len(), 3, "victim said {line:?}");
            Victim {
                child,
                stdin,
                stdout,
                anon: a[0],
                shared: a[1],
                private_file: a[2],
                file,
            }
        }

        pub(crate) fn pid(&self) -> nix::unistd::Pid {
            nix::unistd::Pid::from_raw(self.child.id() as i32)
        }

        /// Has the victim write anonymous page 7, and waits until it has.
        pub(crate) fn touch(&mut self) {
            self.say("touch");
        }

        /// Has the victim `madvise(MADV_DONTDUMP)` its anonymous area, and waits until it has.
        pub(crate) fn dontdump(&mut self) {
            self.say("dontdump");
        }

        fn say(&mut self, what: &str) {
            writeln!(self.stdin, "{what}").expect("to the victim");
            let mut line = String::new();
            self.stdout.read_line(&mut line).expect("from the victim");
            assert_eq!(line.trim(), "done");
        }
    }

    impl Drop for Victim {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_large_mostly_resident_private_anonymous_areas_follow_unwalked() {
        let area = |start: u64, pages: u64, kind: VmaKind| VmaState {
            start,
            end: start + pages * PAGE_SIZE,
            prot: 3,
            shared: false,
            pgoff: 0,
            kind,
            growsdown: false,
            maywrite: true,
            flags: 0,
            pages: Vec::new(),
            cow_shared_kb: 0,
            inherited: Vec::new(),
            precopied: Vec::new(),
        };
        let mut vmas = vec![
            // 4 MiB, 3 MiB resident: follows.
            area(0x1000_0000, 1024, VmaKind::Anonymous),
            // 4 MiB, 1 MiB resident (sparse): walked.
            area(0x2000_0000, 1024, VmaKind::Anonymous),
            // 512 KiB, all resident (too few pages): walked.
            area(0x3000_0000, 128, VmaKind::Heap),
            // Locked: walked.
            area(0x4000_0000, 1024, VmaKind::Anonymous),
            // 4 MiB heap, 2 MiB resident and 1 MiB swapped: follows.
            area(0x5000_0000, 1024, VmaKind::Heap),
            // Its range changed since smaps: walked.
            area(0x6000_0000, 2048, VmaKind::Anonymous),
        ];
        vmas[3].flags = vmflag::LOCKED;
        let smaps = "\
10000000-10400000 rw-p 00000000 00:00 0
Rss:                3072 kB
Swap:                  0 kB
20000000-20400000 rw-p 00000000 00:00 0
Rss:                1024 kB
30000000-30080000 rw-p 00000000 00:00 0 [heap]
Rss:                 512 kB
40000000-40400000 rw-p 00000000 00:00 0
Rss:                4096 kB
50000000-50400000 rw-p 00000000 00:00 0
Rss:                2048 kB
Swap:               1024 kB
60000000-60400000 rw-p 00000000 00:00 0
Rss:                4096 kB
";
        follow_unwalked(&mut vmas, smaps);
        let whole: Vec<bool> = vmas
            .iter()
            .map(|v| {
                v.precopied
                    == [PageRun {
                        start: v.start,
                        count: (v.end - v.start) / PAGE_SIZE,
                    }]
            })
            .collect();
        assert_eq!(whole, [true, false, false, false, true, false]);
        // The others are left as they were.
        assert!(
            vmas.iter()
                .zip(&whole)
                .all(|(v, w)| *w || v.precopied.is_empty())
        );
    }

    fn run(start: u64, count: u64) -> PageRun {
        PageRun { start, count }
    }

    /// `PAGEMAP_SCAN` finds exactly the pages the 8-byte entries do, area by area, and the
    /// ones the victim wrote.
    #[test]
    fn the_scan_finds_the_pages_the_entries_do() {
        let v = victim::Victim::start();
        let (vmas, _) = read_maps(v.pid()).unwrap();
        let mut scanned = vmas.clone();
        find_pages_with(v.pid(), &mut scanned, PagemapRead::Scan).unwrap();
        let mut read = vmas;
        find_pages_with(v.pid(), &mut read, PagemapRead::Entries).unwrap();
        // The interpreter's own areas change as it runs: compared where it has stopped
        // touching them (its heap may not have), the victim's areas exactly.
        let area = |vmas: &[VmaState], start: u64| {
            vmas.iter()
                .find(|x| x.start == start)
                .unwrap_or_else(|| panic!("no area at {start:#x}"))
                .pages
                .clone()
        };
        let p = PAGE_SIZE;
        assert_eq!(
            area(&scanned, v.anon),
            [
                run(v.anon, 2),
                run(v.anon + 5 * p, 1),
                run(v.anon + 9 * p, 3)
            ]
        );
        assert_eq!(area(&scanned, v.shared), [run(v.shared + 3 * p, 1)]);
        assert_eq!(
            area(&scanned, v.private_file),
            [run(v.private_file + 2 * p, 1)]
        );
        for start in [v.anon, v.shared, v.private_file] {
            assert_eq!(area(&scanned, start), area(&read, start));
        }
        let files = |vmas: &[VmaState]| -> Vec<(u64, Vec<PageRun>)> {
            vmas.iter()
                .filter(|x| matches!(x.kind, VmaKind::File(_)))
                .map(|x| (x.start, x.pages.clone()))
                .collect()
        };
        assert_eq!(files(&scanned), files(&read));
    }
}

/// Joins the areas a live migration's write tracking split: memory that grew next to a
/// registered area (the heap's `brk`, an adjacent `mmap`) stays a separate VMA only because
/// the registered one carries the tracking's flag. Without the tracking they are one area, and
/// the restore makes them one (the kernel merges them), so the image says one. Only private
/// anonymous neighbours of the same kind, protection and flags, one tracked and one not.
pub fn join_tracking_splits(vmas: &mut Vec<VmaState>) {
    let mut out: Vec<VmaState> = Vec::with_capacity(vmas.len());
    for v in vmas.drain(..) {
        if let Some(a) = out.last_mut()
            && a.end == v.start
            && a.kind == v.kind
            && matches!(a.kind, VmaKind::Anonymous | VmaKind::Heap)
            && !a.shared
            && !v.shared
            && a.prot == v.prot
            && a.flags == v.flags
            && a.growsdown == v.growsdown
            && a.maywrite == v.maywrite
            && super::track::is_ours(a.start, a.end) != super::track::is_ours(v.start, v.end)
        {
            a.end = v.end;
            a.cow_shared_kb += v.cow_shared_kb;
            for (to, from) in [
                (&mut a.pages, v.pages),
                (&mut a.inherited, v.inherited),
                (&mut a.precopied, v.precopied),
            ] {
                for r in from {
                    match to.last_mut() {
                        Some(l) if l.start + l.count * PAGE_SIZE == r.start => l.count += r.count,
                        _ => to.push(r),
                    }
                }
            }
            continue;
        }
        out.push(v);
    }
    *vmas = out;
}
