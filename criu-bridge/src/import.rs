//! CRIU image directory → Ferry image.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use ferry_agent::dump::identity_of;
use ferry_agent::image::{Codec, ImageWriter};
use ferry_agent::state::{
    AttrsState, CgroupState, CredsState, FdKind, FdOwner, FdState, FileIdentity, FileRef,
    ItimerState, MmState, PAGE_SIZE, PageRun, PipeQueue, PosixTimerState, ProcessState, Regs,
    RlimitState, RseqState, SchedState, SeccompState, SigactionState, SigaltstackState,
    SiginfoState, SignalsState, ThreadAttrsState, ThreadState, TreeState, VmaKind, VmaState,
    ZombieState, vmflag,
};

use crate::export::{IMG_VERSION, TASK_ALIVE, TASK_DEAD};
use crate::img::{ImgReader, magic};
use crate::{
    Error, MADV_BITS, MAP_GROWSDOWN, MAP_LOCKED, MAP_NORESERVE, MAP_SHARED, PE_PRESENT, Report,
    fdtype, pb, status,
};

/// `TASK_STOPPED` of `task_core_entry.task_state`.
const TASK_STOPPED: u32 = 3;
/// `PE_PARENT`, `PE_LAZY` of `pagemap_entry.flags`.
const PE_PARENT: u32 = 1;

/// Makes the Ferry image `out` from the CRIU image directory `dir`. With `strict`, refuses
/// (writing nothing) when anything of the directory cannot be expressed in Ferry's model.
pub fn import(dir: &Path, out: &Path, strict: bool) -> Result<Report, Error> {
    let mut report = Report::default();
    let (tree, stream) = read_dir(dir, &mut report)?;
    if strict && !report.losses.is_empty() {
        return Err(Error::Strict(report.losses));
    }
    let file = File::create(out).map_err(|e| Error::io(out, e))?;
    let result = (|| -> Result<(), Error> {
        let mut w = ImageWriter::new_tree(BufWriter::new(file), &tree, Codec::default())?;
        w.write_pages(&stream)?;
        let (mut f, _) = w.finish()?;
        std::io::Write::flush(&mut f).map_err(|e| Error::io(out, e))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    report.files.push(out.display().to_string());
    Ok(report)
}

/// Describes a CRIU image directory: its processes, memory areas and descriptors as Ferry
/// would import them, and what would not be carried.
pub fn summarize(dir: &Path, json: bool) -> Result<String, Error> {
    let mut report = Report::default();
    let (tree, stream) = read_dir(dir, &mut report)?;
    if json {
        let v = serde_json::json!({
            "criu_dir": dir.display().to_string(),
            "tree": tree,
            "stored_pages": stream.len() as u64 / PAGE_SIZE,
            "not_carried": report.losses,
        });
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n");
    }
    let mut o = String::new();
    let _ = writeln!(
        o,
        "CRIU image directory {} ({} processes, {} zombies, {} pages)",
        dir.display(),
        tree.processes.len(),
        tree.zombies.len(),
        stream.len() as u64 / PAGE_SIZE
    );
    for p in &tree.processes {
        let _ = writeln!(
            o,
            "process     pid {} ({}), parent {}, group {}, session {}, {} threads",
            p.pid,
            p.comm,
            p.ppid,
            p.pgid,
            p.sid,
            p.threads.len()
        );
        let _ = writeln!(o, "executable  {}", p.exe.path);
        let _ = writeln!(o, "cwd         {}  umask {:03o}", p.cwd, p.umask);
        let _ = writeln!(o, "vmas        {}", p.mm.vmas.len());
        for v in &p.mm.vmas {
            let _ = writeln!(
                o,
                "  {:012x}-{:012x} {}{}{}{} {:>6} pages  {}",
                v.start,
                v.end,
                if v.prot & 1 != 0 { 'r' } else { '-' },
                if v.prot & 2 != 0 { 'w' } else { '-' },
                if v.prot & 4 != 0 { 'x' } else { '-' },
                if v.shared { 's' } else { 'p' },
                v.stored_pages(),
                match &v.kind {
                    VmaKind::File(f) => f.path.clone(),
                    k => format!("{k:?}"),
                }
            );
        }
        let _ = writeln!(o, "fds         {}", p.fds.len());
        for f in &p.fds {
            let _ = writeln!(o, "  {:>4} {:?}", f.fd, f.kind);
        }
    }
    for z in &tree.zombies {
        let _ = writeln!(o, "zombie      pid {}, parent {}", z.pid, z.ppid);
    }
    for l in &report.losses {
        let _ = writeln!(o, "not carried {l}");
    }
    Ok(o)
}

fn open(dir: &Path, name: &str, magic: u32) -> Result<ImgReader, Error> {
    ImgReader::open(&dir.join(name), magic)
}

fn exists(dir: &Path, name: &str) -> bool {
    dir.join(name).is_file()
}

/// Reads the whole directory: the tree and its page stream in Ferry's order.
pub fn read_dir(dir: &Path, report: &mut Report) -> Result<(TreeState, Vec<u8>), Error> {
    let inv: pb::Inventory = open(dir, "inventory.img", magic::INVENTORY)?
        .entry()?
        .ok_or_else(|| Error::format("inventory.img", "no entry"))?;
    if inv.img_version != IMG_VERSION {
        return Err(Error::format(
            "inventory.img",
            format!(
                "image version {}, only {IMG_VERSION} (CRIU 3.x and 4.x) is read",
                inv.img_version
            ),
        ));
    }
    let pstree: Vec<pb::Pstree> = open(dir, "pstree.img", magic::PSTREE)?.all()?;
    if pstree.is_empty() {
        return Err(Error::format("pstree.img", "no process"));
    }
    let files: HashMap<u32, pb::File> = if exists(dir, "files.img") {
        open(dir, "files.img", magic::FILES)?
            .all::<pb::File>()?
            .into_iter()
            .map(|f| (f.id, f))
            .collect()
    } else {
        return Err(Error::format(
            "files.img",
            "missing (images of CRIU before 3.x keep files in per-kind tables, not read)",
        ));
    };
    // A pipe's queue by pipe id; `None` once given to a descriptor (one per pipe, over the
    // whole tree, as Ferry's restore makes each pipe once).
    let mut pipe_data: HashMap<u32, Option<PipeQueue>> = HashMap::new();
    if exists(dir, "pipes-data.img") {
        let mut r = open(dir, "pipes-data.img", magic::PIPES_DATA)?;
        while let Some(d) = r.entry::<pb::PipeData>()? {
            let data = r.raw(d.bytes as usize)?.to_vec();
            pipe_data.insert(
                d.pipe_id,
                Some(PipeQueue {
                    size: d.size.unwrap_or(65536),
                    data,
                }),
            );
        }
    }
    for name in list(dir)? {
        let known = [
            "inventory.img",
            "pstree.img",
            "files.img",
            "pipes-data.img",
            "stats-dump",
            "stats-restore",
        ];
        let per = [
            "core-", "ids-", "mm-", "pagemap-", "pages-", "fs-", "fdinfo-", "sigacts-",
        ];
        if !known.contains(&name.as_str()) && !per.iter().any(|p| name.starts_with(p)) {
            report.lose(format!("{name}: a table the bridge does not read"));
        }
    }

    let mut tree = TreeState {
        processes: Vec::new(),
        zombies: Vec::new(),
    };
    let mut stream = Vec::new();
    let mut ids_of: HashMap<u32, pb::TaskIds> = HashMap::new();
    let mut fs_of: HashMap<u32, pb::Fs> = HashMap::new();
    // files id → (pid, fd) of each description already given, by file id.
    let mut given: HashMap<u32, (i32, i32, FdState)> = HashMap::new();
    let mut mem_of: HashMap<u32, ProcessPages> = HashMap::new();
    for (i, e) in pstree.iter().enumerate() {
        let leader: pb::Core = open(dir, &format!("core-{}.img", e.pid), magic::CORE)?
            .entry()?
            .ok_or_else(|| Error::format(format!("core-{}.img", e.pid), "no entry"))?;
        let tc = leader
            .tc
            .clone()
            .ok_or_else(|| Error::format(format!("core-{}.img", e.pid), "no task core"))?;
        if tc.task_state == TASK_DEAD {
            tree.zombies.push(ZombieState {
                pid: e.pid as i32,
                ppid: e.ppid as i32,
                pgid: e.pgid as i32,
                sid: e.sid as i32,
                status: tc.exit_code as i32,
            });
            continue;
        }
        if tc.task_state != TASK_ALIVE && tc.task_state != TASK_STOPPED {
            return Err(Error::format(
                format!("core-{}.img", e.pid),
                format!("task state {} is not read", tc.task_state),
            ));
        }
        let p = process(
            dir,
            e,
            i,
            &leader,
            &tc,
            &files,
            &mut pipe_data,
            &mut ids_of,
            &mut fs_of,
            &mut given,
            &mut mem_of,
            &pstree,
            report,
            &mut stream,
        )?;
        tree.processes.push(p);
    }
    count_cow_shared(&mut tree.processes);
    Ok((tree, stream))
}

/// `cow_shared_kb` of each area from the pages shared again: those a process inherits and
/// those its children inherit from it (a dump of the restored tree finds exactly these).
fn count_cow_shared(processes: &mut [ProcessState]) {
    let mut shared: Vec<HashMap<u64, std::collections::HashSet<u64>>> =
        vec![HashMap::new(); processes.len()];
    for (i, p) in processes.iter().enumerate() {
        let parent = processes
            .iter()
            .position(|q| q.pid == p.ppid && q.pid != p.pid);
        for v in &p.mm.vmas {
            for r in &v.inherited {
                for k in 0..r.count {
                    let addr = r.start + k * PAGE_SIZE;
                    shared[i].entry(v.start).or_default().insert(addr);
                    if let Some(j) = parent {
                        shared[j].entry(v.start).or_default().insert(addr);
                    }
                }
            }
        }
    }
    for (p, s) in processes.iter_mut().zip(&shared) {
        for v in &mut p.mm.vmas {
            v.cow_shared_kb = s.get(&v.start).map_or(0, |a| a.len() as u64) * PAGE_SIZE / 1024;
        }
    }
}

fn list(dir: &Path) -> Result<Vec<String>, Error> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

fn file_ref(path: &str, size: Option<u64>, at: &str, report: &mut Report) -> FileRef {
    let identity = match identity_of(path) {
        // A file of the process's own /proc directory: a dump keeps only its type.
        Ok(id) if path == "/proc/self" || path.starts_with("/proc/self/") => FileIdentity {
            mode: id.mode,
            ..Default::default()
        },
        Ok(id) => {
            if let Some(s) = size
                && id.size != s
                && id.mode & 0o170_000 == 0o100_000
            {
                report.lose(format!(
                    "{at}: {path} is {} bytes now, {s} in the CRIU image",
                    id.size
                ));
            }
            id
        }
        Err(e) => {
            report.lose(format!("{at}: {path}: {e} (its identity is unknown)"));
            FileIdentity::default()
        }
    };
    FileRef {
        path: path.to_string(),
        identity,
    }
}

fn reg<'a>(
    files: &'a HashMap<u32, pb::File>,
    id: u32,
    what: &str,
) -> Result<&'a pb::RegFile, Error> {
    files
        .get(&id)
        .and_then(|f| f.reg.as_ref())
        .ok_or_else(|| Error::format("files.img", format!("{what}: no regular file with id {id}")))
}

fn caps(v: &[u32]) -> u64 {
    v.first().copied().map_or(0, u64::from) | v.get(1).copied().map_or(0, |h| u64::from(h) << 32)
}

#[allow(clippy::too_many_arguments)]
fn process(
    dir: &Path,
    e: &pb::Pstree,
    index: usize,
    leader: &pb::Core,
    tc: &pb::TaskCore,
    files: &HashMap<u32, pb::File>,
    pipe_data: &mut HashMap<u32, Option<PipeQueue>>,
    ids_of: &mut HashMap<u32, pb::TaskIds>,
    fs_of: &mut HashMap<u32, pb::Fs>,
    given: &mut HashMap<u32, (i32, i32, FdState)>,
    mem_of: &mut HashMap<u32, ProcessPages>,
    pstree: &[pb::Pstree],
    report: &mut Report,
    stream: &mut Vec<u8>,
) -> Result<ProcessState, Error> {
    let pid = e.pid;
    let at = format!("pid {pid}");
    let ids: pb::TaskIds = match &leader.ids {
        Some(ids) => *ids,
        None => open(dir, &format!("ids-{pid}.img"), magic::IDS)?
            .entry()?
            .ok_or_else(|| Error::format(format!("ids-{pid}.img"), "no entry"))?,
    };
    let parent_ids = ids_of.get(&e.ppid).copied();
    ids_of.insert(pid, ids);
    let mut shares = 0;
    if let Some(pi) = parent_ids {
        if pi.files_id == ids.files_id {
            shares |= 0x400;
        }
        if pi.fs_id == ids.fs_id {
            shares |= 0x200;
        }
        if pi.vm_id == ids.vm_id {
            return Err(Error::format(
                format!("ids-{pid}.img"),
                "shares its address space with its parent (CLONE_VM without threads): not supported",
            ));
        }
    }

    // Threads.
    let mut threads = Vec::new();
    for (k, &tid) in e.threads.iter().enumerate() {
        let core = if k == 0 || tid == pid {
            leader.clone()
        } else {
            open(dir, &format!("core-{tid}.img"), magic::CORE)?
                .entry()?
                .ok_or_else(|| Error::format(format!("core-{tid}.img"), "no entry"))?
        };
        threads.push(thread(&core, tid, tc, report)?);
    }
    if let Some(pos) = threads.iter().position(|t| t.tid == pid as i32) {
        let t = threads.remove(pos);
        threads.insert(0, t);
    }
    let first_tc = leader
        .thread_core
        .clone()
        .ok_or_else(|| Error::format(format!("core-{pid}.img"), "no thread core"))?;
    let cr = first_tc
        .creds
        .clone()
        .ok_or_else(|| Error::format(format!("core-{pid}.img"), "no credentials"))?;

    // Memory.
    let mm: pb::Mm = open(dir, &format!("mm-{pid}.img"), magic::MM)?
        .entry()?
        .ok_or_else(|| Error::format(format!("mm-{pid}.img"), "no entry"))?;
    let exe_reg = reg(files, mm.exe_file_id, "the executable")?;
    let exe = file_ref(&exe_reg.name, exe_reg.size, &at, report);
    let mut pm = open(dir, &format!("pagemap-{pid}.img"), magic::PAGEMAP)?;
    let head: pb::PagemapHead = pm
        .entry()?
        .ok_or_else(|| Error::format(format!("pagemap-{pid}.img"), "no head"))?;
    let pages_name = format!("pages-{}.img", head.pages_id);
    let pages =
        std::fs::read(dir.join(&pages_name)).map_err(|e| Error::io(&dir.join(&pages_name), e))?;
    let mut page_at: BTreeMap<u64, usize> = BTreeMap::new();
    let mut off = 0usize;
    while let Some(pe) = pm.entry::<pb::PagemapEntry>()? {
        let n = pe.nr_pages.unwrap_or(u64::from(pe.compat_nr_pages));
        let flags = pe.flags.unwrap_or(PE_PRESENT);
        if pe.in_parent == Some(true) || flags & PE_PARENT != 0 {
            return Err(Error::format(
                format!("pagemap-{pid}.img"),
                format!(
                    "pages at {:#x} are in a parent image (incremental dumps are not read)",
                    pe.vaddr
                ),
            ));
        }
        if flags & PE_PRESENT == 0 {
            continue;
        }
        for k in 0..n {
            if off + PAGE_SIZE as usize > pages.len() {
                return Err(Error::format(
                    pages_name.clone(),
                    format!("{} bytes, the pagemap asks for more", pages.len()),
                ));
            }
            page_at.insert(pe.vaddr + k * PAGE_SIZE, off);
            off += PAGE_SIZE as usize;
        }
    }
    let mut vmas = Vec::new();
    let mut prev_vvar_end = None;
    let mut own_pages: BTreeMap<u64, usize> = BTreeMap::new();
    let tls = leader.thread_info.as_ref().map(|t| t.gpregs.fs_base);
    let mut own_private: Vec<(u64, u64)> = Vec::new();
    for v in &mm.vmas {
        let vat = format!("{at} area {:#x}-{:#x}", v.start, v.end);
        let shared = v.flags & MAP_SHARED != 0;
        let st = v.status;
        let kind = if st & status::VSYSCALL != 0 {
            VmaKind::Vsyscall
        } else if st & status::VDSO != 0 {
            VmaKind::Vdso
        } else if st & status::VVAR != 0 {
            if prev_vvar_end == Some(v.start) {
                VmaKind::VvarVclock
            } else {
                VmaKind::Vvar
            }
        } else if st & status::HEAP != 0 {
            VmaKind::Heap
        } else if st & status::STACK != 0 {
            VmaKind::Stack
        } else if st & (status::FILE_PRIVATE | status::FILE_SHARED) != 0
            && st & (status::MEMFD | status::SYSVIPC | status::AIORING) == 0
        {
            let r = reg(files, v.shmid as u32, &vat)?;
            VmaKind::File(file_ref(&r.name, r.size, &vat, report))
        } else if st & status::ANON_PRIVATE != 0 && !shared {
            VmaKind::Anonymous
        } else if st & status::ANON_SHARED != 0 && st & (status::SYSVIPC | status::AIORING) == 0 {
            report.lose(format!(
                "{vat}: contents of shared anonymous memory (pagemap-shmem is not read)"
            ));
            VmaKind::SharedAnonymous {
                ino: v.shmid,
                size: v.end - v.start,
            }
        } else {
            return Err(Error::format(
                format!("mm-{pid}.img"),
                format!("{vat}: status {st:#x} is not read (memfd, SysV, AIO or an unknown kind)"),
            ));
        };
        prev_vvar_end = matches!(kind, VmaKind::Vvar | VmaKind::VvarVclock).then_some(v.end);
        let mut flags = 0;
        if v.flags & MAP_LOCKED != 0 {
            flags |= vmflag::LOCKED;
        }
        if v.flags & MAP_NORESERVE != 0 {
            flags |= vmflag::NORESERVE;
        }
        let madv = v.madv.unwrap_or(0);
        for (f, b) in MADV_BITS {
            if madv & (1 << b) != 0 {
                flags |= f;
            }
        }
        let maywrite = match &kind {
            VmaKind::File(_) if shared => v.fdflags.unwrap_or(0) & 3 != 0,
            VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall => false,
            _ => true,
        };
        // A private anonymous area of a child that its parent has at the same range: a page equal to
        // the parent's at the same address is shared with it copy-on-write again (as CRIU's
        // restore does), the others are stored.
        let private =
            !shared && matches!(kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack);
        let parent_pages = mem_of
            .get(&e.ppid)
            .filter(|m| private && m.private_areas.contains(&(v.start, v.end)))
            .map(|m| &m.page_at);
        // Runs of stored pages inside the area, in address order; their bytes join the stream.
        let mut runs: Vec<PageRun> = Vec::new();
        let mut inherited: Vec<PageRun> = Vec::new();
        for (&addr, &o) in page_at.range(v.start..v.end) {
            let page = &pages[o..o + PAGE_SIZE as usize];
            // The main thread's control block (at `fs_base`, about 2 KiB) is written by the
            // restore's own code after the fork: never shared again, so not inherited.
            let tcb = tls.is_some_and(|t| addr + PAGE_SIZE > t && addr < t + 2 * PAGE_SIZE);
            let same = !tcb
                && parent_pages
                    .and_then(|m| m.get(&addr))
                    .is_some_and(|&po| stream.get(po..po + PAGE_SIZE as usize) == Some(page));
            let list = if same {
                &mut inherited
            } else {
                own_pages.insert(addr, stream.len());
                stream.extend_from_slice(page);
                &mut runs
            };
            match list.last_mut() {
                Some(r) if r.start + r.count * PAGE_SIZE == addr => r.count += 1,
                _ => list.push(PageRun {
                    start: addr,
                    count: 1,
                }),
            }
        }
        if private {
            own_private.push((v.start, v.end));
        }
        vmas.push(VmaState {
            start: v.start,
            end: v.end,
            prot: v.prot,
            shared,
            pgoff: v.pgoff,
            kind,
            growsdown: v.flags & MAP_GROWSDOWN != 0,
            maywrite,
            flags,
            pages: runs,
            cow_shared_kb: 0,
            inherited,
            precopied: Vec::new(),
        });
    }
    let in_vmas: usize = vmas
        .iter()
        .map(|v| (v.stored_pages() + v.inherited.iter().map(|r| r.count).sum::<u64>()) as usize)
        .sum();
    if in_vmas != page_at.len() {
        return Err(Error::format(
            format!("pagemap-{pid}.img"),
            format!(
                "{} pages lie outside every memory area of mm-{pid}.img",
                page_at.len() - in_vmas
            ),
        ));
    }
    // Pages a child inherits are those of its parent at the time of the fork: its own stored
    // pages and, further up, what it inherited in turn.
    for v in &vmas {
        for r in &v.inherited {
            for k in 0..r.count {
                let addr = r.start + k * PAGE_SIZE;
                if let Some(&o) = mem_of.get(&e.ppid).and_then(|m| m.page_at.get(&addr)) {
                    own_pages.insert(addr, o);
                }
            }
        }
    }
    mem_of.insert(
        pid,
        ProcessPages {
            page_at: own_pages,
            private_areas: own_private,
        },
    );

    // Working directory, root, umask.
    let fs = match fs_of.get(&ids.fs_id) {
        Some(fs) => *fs,
        None => {
            let fs: pb::Fs = open(dir, &format!("fs-{pid}.img"), magic::FS)?
                .entry()?
                .ok_or_else(|| Error::format(format!("fs-{pid}.img"), "no entry"))?;
            fs_of.insert(ids.fs_id, fs);
            fs
        }
    };
    let cwd = reg(files, fs.cwd_id, "the working directory")?.name.clone();
    let root = reg(files, fs.root_id, "the root directory")?.name.clone();

    // Descriptors.
    let mut fds = Vec::new();
    let fdinfo: Vec<pb::Fdinfo> =
        open(dir, &format!("fdinfo-{}.img", ids.files_id), magic::FDINFO)?.all()?;
    let mut own: HashMap<u32, i32> = HashMap::new();
    // Descriptors that are another process's description, with what that description is.
    let mut shared_kinds: Vec<(i32, FdKind)> = Vec::new();
    let mut sorted = fdinfo.clone();
    sorted.sort_by_key(|f| f.fd);
    for fi in &sorted {
        let fd = fi.fd as i32;
        let fat = format!("{at} fd {fd}");
        let cloexec = fi.flags & 1 != 0;
        let owner = FdOwner::default();
        if let Some(&of) = own.get(&fi.id) {
            let flags = fds
                .iter()
                .find(|f: &&FdState| f.fd == of)
                .map_or(0, |f| f.flags);
            fds.push(FdState {
                fd,
                cloexec,
                flags,
                kind: FdKind::Dup { of },
                owner,
            });
            continue;
        }
        if let Some((opid, ofd, orig)) = given.get(&fi.id) {
            own.insert(fi.id, fd);
            shared_kinds.push((fd, orig.kind.clone()));
            let (opid, ofd, flags) = (*opid, *ofd, orig.flags);
            fds.push(FdState {
                fd,
                cloexec,
                flags,
                kind: FdKind::Shared { pid: opid, fd: ofd },
                owner,
            });
            continue;
        }
        let Some(f) = files.get(&fi.id) else {
            return Err(Error::format(
                format!("fdinfo-{}.img", ids.files_id),
                format!("fd {fd}: no file with id {}", fi.id),
            ));
        };
        let fown_of = |fo: &pb::Fown| FdOwner {
            kind: if fo.pid == 0 { 0 } else { fo.pid_type },
            pid: fo.pid as i32,
            sig: fo.signum,
        };
        let (flags, kind, owner) = match (fi.r#type, f) {
            (fdtype::REG, pb::File { reg: Some(r), .. }) => {
                let file = file_ref(&r.name, r.size, &fat, report);
                let fmt = file.identity.mode & 0o170_000;
                let kind = match fmt {
                    0o040_000 => FdKind::Directory { file, pos: r.pos },
                    0o020_000 => {
                        let major = (file.identity.rdev >> 8) & 0xfff;
                        if [4, 5, 136].contains(&major) {
                            FdKind::Tty { file }
                        } else {
                            FdKind::CharDevice { file }
                        }
                    }
                    0o010_000 => FdKind::Fifo { file, queue: None },
                    _ => FdKind::File { file, pos: r.pos },
                };
                (r.flags, kind, fown_of(&r.fown))
            }
            (fdtype::PIPE, pb::File { pipe: Some(pp), .. }) => {
                // The pipe's first descriptor in the tree carries its buffer, empty or not.
                let queue = match pipe_data.get_mut(&pp.pipe_id) {
                    Some(q) => q.take(),
                    None => {
                        pipe_data.insert(pp.pipe_id, None);
                        Some(PipeQueue {
                            size: 65536,
                            data: Vec::new(),
                        })
                    }
                };
                (
                    pp.flags,
                    FdKind::LocalPipe {
                        ino: u64::from(pp.pipe_id),
                        queue,
                    },
                    fown_of(&pp.fown),
                )
            }
            (fdtype::EVENTFD, pb::File { efd: Some(ef), .. }) => (
                ef.flags & !1,
                FdKind::Eventfd {
                    count: ef.counter,
                    semaphore: ef.flags & 1 != 0,
                },
                fown_of(&ef.fown),
            ),
            (ty, f) => match crate::fdkinds::import(f, files, &fat, report) {
                Some(Ok((flags, kind, fo))) => (flags, kind, fown_of(&fo)),
                Some(Err(why)) => {
                    report.lose(format!("{fat}: {why} (the descriptor is left closed)"));
                    continue;
                }
                None => {
                    report.lose(format!(
                        "{fat}: a descriptor of CRIU type {ty} (not read; the descriptor is left closed)"
                    ));
                    continue;
                }
            },
        };
        own.insert(fi.id, fd);
        let state = FdState {
            fd,
            cloexec,
            flags,
            kind,
            owner,
        };
        given.insert(fi.id, (pid as i32, fd, state.clone()));
        fds.push(state);
    }
    // A pipe with a queue: the queue goes on its lowest descriptor, which `sorted` gave first.

    // Signals.
    let sas: Vec<pb::Sigaction> = if !tc.sigactions.is_empty() {
        tc.sigactions.clone()
    } else {
        open(dir, &format!("sigacts-{pid}.img"), magic::SIGACT)?.all()?
    };
    let signos: Vec<u32> = (1..=64u32).filter(|&s| s != 9 && s != 19).collect();
    if sas.len() != signos.len() {
        return Err(Error::format(
            format!("sigacts-{pid}.img"),
            format!("{} actions, expected {}", sas.len(), signos.len()),
        ));
    }
    let actions = signos
        .iter()
        .zip(&sas)
        .map(|(&signo, a)| SigactionState {
            signo,
            handler: a.sigaction,
            flags: a.flags,
            restorer: a.restorer,
            mask: a.mask,
        })
        .collect();

    let timers = tc.timers.clone().unwrap_or(pb::TaskTimers {
        real: zero_itimer(),
        virt: zero_itimer(),
        prof: zero_itimer(),
        posix: Vec::new(),
    });
    let itimers = [(0, &timers.real), (1, &timers.virt), (2, &timers.prof)]
        .into_iter()
        .map(|(which, t)| ItimerState {
            which,
            interval_us: t.isec * 1_000_000 + t.iusec,
            value_us: t.vsec * 1_000_000 + t.vusec,
        })
        .collect();
    let posix_timers = timers
        .posix
        .iter()
        .map(|t| PosixTimerState {
            id: t.it_id as i32,
            clock: t.clock_id as i32,
            signo: t.si_signo,
            value: t.sival_ptr,
            notify: t.it_sigev_notify,
            notify_tid: t.notify_thread_id.unwrap_or(0),
            interval_ns: t.isec * 1_000_000_000 + t.insec,
            value_ns: t.vsec * 1_000_000_000 + t.vnsec,
            overrun: t.overrun as i32,
        })
        .collect();
    let rlimits = tc
        .rlimits
        .as_ref()
        .map(|r| {
            r.rlimits
                .iter()
                .enumerate()
                .map(|(i, l)| RlimitState {
                    resource: i as u32,
                    cur: l.cur,
                    max: l.max,
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = pstree;
    let mut p = ProcessState {
        pid: pid as i32,
        ppid: e.ppid as i32,
        pgid: e.pgid as i32,
        sid: e.sid as i32,
        comm: tc.comm.clone(),
        exe,
        creds: CredsState {
            uids: [cr.uid, cr.euid, cr.suid, cr.fsuid],
            gids: [cr.gid, cr.egid, cr.sgid, cr.fsgid],
            groups: cr.groups.clone(),
        },
        umask: fs.umask.unwrap_or(0o022),
        cwd,
        cwd_removed: None,
        root,
        personality: tc.personality,
        rlimits,
        mm: MmState {
            vmas,
            start_code: mm.mm_start_code,
            end_code: mm.mm_end_code,
            start_data: mm.mm_start_data,
            end_data: mm.mm_end_data,
            start_brk: mm.mm_start_brk,
            brk: mm.mm_brk,
            start_stack: mm.mm_start_stack,
            arg_start: mm.mm_arg_start,
            arg_end: mm.mm_arg_end,
            env_start: mm.mm_env_start,
            env_end: mm.mm_env_end,
            auxv: mm.mm_saved_auxv.clone(),
            lock_future: 0,
            thp_disable: u32::from(mm.thp_disabled.unwrap_or(false)),
            merge_any: false,
            aio_rings: Vec::new(),
        },
        fds,
        signals: SignalsState {
            actions,
            shared_pending: siginfos(tc.signals_s.as_ref()),
        },
        threads,
        locks: Vec::new(),
        memfds: Vec::new(),
        sysv_shm: Vec::new(),
        ipc_ns: None,
        carried_files: Vec::new(),
        mapped_deleted: Vec::new(),
        attrs: AttrsState {
            no_new_privs: cr.no_new_privs.unwrap_or(0) != 0,
            caps: [
                caps(&cr.cap_inh),
                caps(&cr.cap_prm),
                caps(&cr.cap_eff),
                caps(&cr.cap_bnd),
                caps(&cr.cap_amb),
            ],
            dumpable: mm.dumpable.unwrap_or(1) as u32,
            pdeathsig: first_tc.pdeath_sig.unwrap_or(0),
            child_subreaper: tc.child_subreaper.unwrap_or(false),
            oom_score_adj: tc.oom_score_adj.unwrap_or(0),
            loginuid: tc.loginuid,
            sessionid: None,
            // CRIU's cgroup.img is not read: the process gets the restorer's cgroups.
            cgroups: own_cgroups(),
            itimers,
            posix_timers,
            ctty: None,
            stop_signal: if tc.task_state == TASK_STOPPED {
                tc.stop_signo.unwrap_or(19)
            } else {
                0
            },
            membarrier: tc.membarrier_registration_mask.unwrap_or(0),
            shares_with_parent: if index == 0 { 0 } else { shares },
            // CRIU keeps none: the restorer's, which the process inherits.
            coredump_filter: std::fs::read_to_string("/proc/self/coredump_filter")
                .ok()
                .and_then(|s| u32::from_str_radix(s.trim(), 16).ok()),
        },
    };
    // Files Ferry carries whole (see `CarriedFile`) are taken from the disk as it is now.
    // A description shared with an earlier process counts as what it is, as at dump time.
    let mut seen = p.fds.clone();
    for f in seen.iter_mut() {
        if let Some((_, k)) = shared_kinds.iter().find(|(fd, _)| *fd == f.fd) {
            f.kind = k.clone();
        }
    }
    p.carried_files = ferry_agent::dump::carried(&p.mm.vmas, &seen, &p.locks, p.creds.uids[1])
        .map_err(|e| Error::format(at.clone(), format!("read the files it carries: {e}")))?;
    Ok(p)
}

/// Where an imported process's pages are in the page stream (by address) and its private
/// areas, for its children to share them again.
#[derive(Debug, Default)]
struct ProcessPages {
    page_at: BTreeMap<u64, usize>,
    private_areas: Vec<(u64, u64)>,
}

/// The cgroups of this process (`/proc/self/cgroup`).
pub(crate) fn own_cgroups() -> Vec<CgroupState> {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            Some(CgroupState {
                hierarchy: it.next()?.parse().ok()?,
                controllers: it.next()?.to_string(),
                path: it.next()?.to_string(),
            })
        })
        .collect()
}

/// The CPUs this process may run on (`Cpus_allowed` of `/proc/self/status`), 64 a word.
pub(crate) fn own_affinity() -> Vec<u64> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(hex) = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed:"))
        .map(|h| h.trim().replace(',', ""))
    else {
        return Vec::new();
    };
    let mut words = Vec::new();
    let mut end = hex.len();
    while end > 0 {
        let start = end.saturating_sub(16);
        words.push(u64::from_str_radix(&hex[start..end], 16).unwrap_or(0));
        end = start;
    }
    while words.len() > 1 && words.last() == Some(&0) {
        words.pop();
    }
    words
}

fn zero_itimer() -> pb::Itimer {
    pb::Itimer {
        isec: 0,
        iusec: 0,
        vsec: 0,
        vusec: 0,
    }
}

fn siginfos(q: Option<&pb::SignalQueue>) -> Vec<SiginfoState> {
    q.map(|q| {
        q.signals
            .iter()
            .map(|s| SiginfoState {
                signo: s
                    .siginfo
                    .get(..4)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default())),
                raw: s.siginfo.clone(),
            })
            .collect()
    })
    .unwrap_or_default()
}

fn thread(
    core: &pb::Core,
    tid: u32,
    tc: &pb::TaskCore,
    report: &mut Report,
) -> Result<ThreadState, Error> {
    let name = format!("core-{tid}.img");
    if core.mtype != 1 {
        return Err(Error::format(
            name,
            format!("architecture {} (only x86_64, 1, is read)", core.mtype),
        ));
    }
    let ti = core
        .thread_info
        .as_ref()
        .ok_or_else(|| Error::format(name.clone(), "no x86 thread info"))?;
    let th = core
        .thread_core
        .clone()
        .ok_or_else(|| Error::format(name.clone(), "no thread core"))?;
    let g = &ti.gpregs;
    if g.mode.unwrap_or(1) != 1 {
        return Err(Error::format(name, "a 32-bit (compat) task is not read"));
    }
    if th.seccomp_mode.unwrap_or(0) == 2 {
        report.lose(format!(
            "thread {tid}: its seccomp filters (seccomp.img is not read)"
        ));
    }
    let xstate = crate::xsave::from_criu(&ti.fpregs).map_err(|m| Error::format(name.clone(), m))?;
    Ok(ThreadState {
        tid: tid as i32,
        regs: Regs {
            r15: g.r15,
            r14: g.r14,
            r13: g.r13,
            r12: g.r12,
            rbp: g.bp,
            rbx: g.bx,
            r11: g.r11,
            r10: g.r10,
            r9: g.r9,
            r8: g.r8,
            rax: g.ax,
            rcx: g.cx,
            rdx: g.dx,
            rsi: g.si,
            rdi: g.di,
            orig_rax: g.orig_ax,
            rip: g.ip,
            cs: g.cs,
            eflags: g.flags,
            rsp: g.sp,
            ss: g.ss,
            fs_base: g.fs_base,
            gs_base: g.gs_base,
            ds: g.ds,
            es: g.es,
            fs: g.fs,
            gs: g.gs,
        },
        xstate,
        sigmask: th.blk_sigset.unwrap_or(tc.blk_sigset),
        pending: siginfos(th.signals_p.as_ref()),
        rseq: th.rseq_entry.map(|r| RseqState {
            ptr: r.rseq_abi_pointer,
            len: r.rseq_abi_size,
            sig: r.signature,
        }),
        robust_list: (th.futex_rla, u64::from(th.futex_rla_len)),
        clear_child_tid: ti.clear_tid_addr,
        sigaltstack: th
            .sas
            .map_or(SigaltstackState::default(), |s| SigaltstackState {
                sp: s.ss_sp,
                flags: s.ss_flags,
                size: s.ss_size,
            }),
        sched: SchedState {
            nice: th.sched_nice.unwrap_or(0),
            policy: th.sched_policy.unwrap_or(0),
            rt_priority: th.sched_prio.unwrap_or(0),
            reset_on_fork: false,
            // CRIU keeps none: the restorer's, which the process inherits.
            affinity: own_affinity(),
        },
        seccomp: SeccompState {
            mode: th.seccomp_mode.unwrap_or(0),
            filters: Vec::new(),
        },
        cgroups: Vec::new(),
        attrs: th.comm.clone().map(|comm| ThreadAttrsState {
            comm,
            ioprio: 0,
            timer_slack_ns: 50_000,
            tsc: 1,
            // PR_MCE_KILL_GET's answer for a thread that never set a policy.
            mce_kill: 2,
            securebits: th.creds.as_ref().map_or(0, |c| c.secbits),
        }),
    })
}
