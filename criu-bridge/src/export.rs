//! Ferry image → CRIU image directory.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use ferry_agent::image::ImageReader;
use ferry_agent::state::{
    FdKind, FdState, PAGE_SIZE, ProcessState, SocketKind, ThreadState, TreeState, VmaKind,
    VmaState, vmflag,
};

use crate::img::{ImgWriter, magic};
use crate::{
    Error, MADV_BITS, MAP_ANONYMOUS, MAP_GROWSDOWN, MAP_LOCKED, MAP_NORESERVE, MAP_PRIVATE,
    MAP_SHARED, PE_PRESENT, Report, fdtype, pb, status,
};

/// `CRTOOLS_IMAGES_V1_1`: the image version CRIU 3.x and 4.x write.
pub const IMG_VERSION: u32 = 2;
/// `TASK_ALIVE` and `TASK_DEAD` of `task_core_entry.task_state`.
pub(crate) const TASK_ALIVE: u32 = 1;
pub(crate) const TASK_DEAD: u32 = 2;
/// `CLONE_FS`, `CLONE_FILES`.
const CLONE_FS: u32 = 0x200;
const CLONE_FILES: u32 = 0x400;

/// Writes the CRIU image directory `dir` (made if missing; must be empty) from the Ferry
/// image `image`. With `strict`, refuses (writing nothing) when anything of the image cannot
/// be expressed in CRIU's tables; otherwise the report names it.
pub fn export(image: &Path, dir: &Path, strict: bool) -> Result<Report, Error> {
    export_with_key(image, dir, strict, None)
}

/// [`export`] of an image that may be sealed (`ferry dump --seal`): without its key a sealed
/// image is refused by name.
pub fn export_with_key(
    image: &Path,
    dir: &Path,
    strict: bool,
    key: Option<&ferry_agent::image::seal::Key>,
) -> Result<Report, Error> {
    let file = File::open(image).map_err(|e| Error::io(image, e))?;
    let mut reader = ImageReader::open_with_key(BufReader::with_capacity(1 << 20, file), key)?;
    let tree = reader.tree().clone();
    let mut stream = Vec::with_capacity((tree.stored_pages() * PAGE_SIZE) as usize);
    while let Some(block) = reader.next_pages()? {
        stream.extend_from_slice(&block.to_raw());
        reader.recycle(block);
    }
    let files = convert(&tree, &stream)?;
    if strict && !files.report.losses.is_empty() {
        return Err(Error::Strict(files.report.losses));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .next()
        .is_some()
    {
        return Err(Error::format(
            dir.display().to_string(),
            "the directory is not empty: export writes a whole image directory",
        ));
    }
    let mut report = files.report;
    for (name, w) in &files.images {
        w.save(&dir.join(name))?;
        report.files.push(name.clone());
    }
    for (name, data) in &files.raw {
        let p = dir.join(name);
        std::fs::write(&p, data).map_err(|e| Error::io(&p, e))?;
        report.files.push(name.clone());
    }
    Ok(report)
}

/// The directory's files, built in memory.
#[derive(Debug, Default)]
pub(crate) struct Files {
    pub images: Vec<(String, ImgWriter)>,
    pub raw: Vec<(String, Vec<u8>)>,
    pub report: Report,
}

/// Ids of `files.img` entries.
#[derive(Debug, Default)]
struct FileTable {
    next: u32,
    entries: Vec<pb::File>,
    by_path: HashMap<String, u32>,
    /// (pid, fd) → id of the description.
    by_fd: HashMap<(i32, i32), u32>,
    pipe_data: Vec<(pb::PipeData, Vec<u8>)>,
}

fn fown(fd: &FdState, p: &ProcessState) -> pb::Fown {
    pb::Fown {
        uid: p.creds.uids[0],
        euid: p.creds.uids[1],
        signum: fd.owner.sig,
        pid_type: match (fd.owner.pid, fd.owner.kind) {
            (0, _) => 0,
            // CRIU's pid_type: PIDTYPE_PID (0), PIDTYPE_TGID (1), PIDTYPE_PGID (2)
            (_, k) => k,
        },
        pid: fd.owner.pid as u32,
    }
}

fn no_fown() -> pb::Fown {
    pb::Fown {
        uid: 0,
        euid: 0,
        signum: 0,
        pid_type: 0,
        pid: 0,
    }
}

impl FileTable {
    fn id(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    /// A path CRIU refers to by id (executable, cwd, root, mapped file), opened read-only.
    fn path(&mut self, path: &str, size: u64, mode: u32, flags: u32) -> u32 {
        let key = format!("{flags}:{path}");
        if let Some(&id) = self.by_path.get(&key) {
            return id;
        }
        let id = self.id();
        self.entries.push(pb::File {
            r#type: fdtype::REG,
            id,
            reg: Some(pb::RegFile {
                id,
                flags,
                pos: 0,
                fown: no_fown(),
                name: path.to_string(),
                mnt_id: None,
                size: Some(size),
                ext: None,
                mode: Some(mode),
            }),
            ..Default::default()
        });
        self.by_path.insert(key, id);
        id
    }

    /// The `files.img` entry of one descriptor; `None` (and a loss) when CRIU has no table
    /// the bridge writes for its kind.
    fn fd(&mut self, p: &ProcessState, fd: &FdState, report: &mut Report) -> Option<(u32, u32)> {
        let at = format!("pid {} fd {}", p.pid, fd.fd);
        let reg = |id: u32, name: &str, pos: u64, size: u64, mode: u32| pb::File {
            r#type: fdtype::REG,
            id,
            reg: Some(pb::RegFile {
                id,
                flags: fd.flags,
                pos,
                fown: fown(fd, p),
                name: name.to_string(),
                mnt_id: None,
                size: Some(size),
                ext: None,
                mode: Some(mode),
            }),
            ..Default::default()
        };
        let (ty, entry) = match &fd.kind {
            FdKind::Dup { of } => {
                let id = *self.by_fd.get(&(p.pid, *of))?;
                let ty = self.entries.iter().find(|e| e.id == id).map(|e| e.r#type)?;
                self.by_fd.insert((p.pid, fd.fd), id);
                return Some((ty, id));
            }
            FdKind::Shared { pid, fd: of } => {
                let Some(&id) = self.by_fd.get(&(*pid, *of)) else {
                    report.lose(format!(
                        "{at}: shares fd {of} of pid {pid}, which is not expressed"
                    ));
                    return None;
                };
                let ty = self.entries.iter().find(|e| e.id == id).map(|e| e.r#type)?;
                self.by_fd.insert((p.pid, fd.fd), id);
                return Some((ty, id));
            }
            FdKind::File { file, pos } | FdKind::Directory { file, pos } => {
                let id = self.id();
                (
                    fdtype::REG,
                    reg(id, &file.path, *pos, file.identity.size, file.identity.mode),
                )
            }
            FdKind::CharDevice { file } => {
                let id = self.id();
                (
                    fdtype::REG,
                    reg(id, &file.path, 0, file.identity.size, file.identity.mode),
                )
            }
            FdKind::Tty { file } => {
                // CRIU's tty table describes terminals it makes again (ptys) or keeps outside
                // the image (`ext`); a terminal Ferry reopens by its path is the latter.
                report.lose(format!(
                    "{at}: terminal {} written as an external file (CRIU's tty tables are not written)",
                    file.path
                ));
                let id = self.id();
                let mut e = reg(id, &file.path, 0, 0, file.identity.mode);
                if let Some(r) = e.reg.as_mut() {
                    r.ext = Some(true);
                }
                (fdtype::REG, e)
            }
            FdKind::Pipe { ino } | FdKind::LocalPipe { ino, .. } => {
                let id = self.id();
                // Every queue, empty ones too: the buffer size travels with it.
                if let FdKind::LocalPipe {
                    queue: Some(q),
                    ino,
                } = &fd.kind
                {
                    self.pipe_data.push((
                        pb::PipeData {
                            pipe_id: *ino as u32,
                            bytes: q.data.len() as u32,
                            size: Some(q.size),
                        },
                        q.data.clone(),
                    ));
                }
                if *ino > u64::from(u32::MAX) {
                    report.lose(format!(
                        "{at}: pipe inode {ino} does not fit CRIU's 32 bits"
                    ));
                }
                (
                    fdtype::PIPE,
                    pb::File {
                        r#type: fdtype::PIPE,
                        id,
                        pipe: Some(pb::Pipe {
                            id,
                            pipe_id: *ino as u32,
                            flags: fd.flags,
                            fown: fown(fd, p),
                        }),
                        ..Default::default()
                    },
                )
            }
            FdKind::Eventfd { count, semaphore } => {
                let id = self.id();
                let efd_semaphore = 1;
                (
                    fdtype::EVENTFD,
                    pb::File {
                        r#type: fdtype::EVENTFD,
                        id,
                        efd: Some(pb::EventfdFile {
                            id,
                            flags: fd.flags | if *semaphore { efd_semaphore } else { 0 },
                            fown: fown(fd, p),
                            counter: *count,
                        }),
                        ..Default::default()
                    },
                )
            }
            FdKind::Socket(s) => {
                let id = self.id();
                let (opts, mut unmapped) = crate::sockopts::to_criu(&s.opts, &s.filter);
                // IPV6_V6ONLY has a field of the inet entry itself.
                let v6only = s
                    .opts
                    .iter()
                    .find(|o| o.level == libc::IPPROTO_IPV6 && o.name == libc::IPV6_V6ONLY)
                    .map(|o| o.value.first().is_some_and(|&b| b != 0));
                if matches!(s.kind, SocketKind::Inet(_)) {
                    unmapped.retain(|&o| o != (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY));
                }
                for (level, name) in unmapped {
                    report.lose(format!(
                        "{at}: socket option level {level} name {name} (sk_opts has no field for it)"
                    ));
                }
                match &s.kind {
                    SocketKind::Unix(u) => {
                        if u.pending > 0 || u.sent_unaccepted || !u.pending_sent.is_empty() {
                            report.lose(format!(
                                "{at}: a Unix connection not accepted yet (CRIU's embryo sockets are not written)"
                            ));
                        }
                        if !u.queue.is_empty() || !u.in_flight.is_empty() {
                            report.lose(format!(
                                "{at}: queued data and descriptors in flight of a Unix socket (sk-queues is not written)"
                            ));
                        }
                        let listening = u.backlog.is_some();
                        (
                            fdtype::UNIXSK,
                            pb::File {
                                r#type: fdtype::UNIXSK,
                                id,
                                usk: Some(pb::UnixSk {
                                    id,
                                    ino: s.ino as u32,
                                    r#type: s.sock_type,
                                    // TCP_LISTEN (10), TCP_ESTABLISHED (1), TCP_CLOSE (7)
                                    state: if listening {
                                        10
                                    } else if u.peer_ino != 0 {
                                        1
                                    } else {
                                        7
                                    },
                                    flags: fd.flags,
                                    uflags: if u.peer_external { 1 } else { 0 },
                                    backlog: u.backlog.unwrap_or(0),
                                    peer: u.peer_ino as u32,
                                    fown: fown(fd, p),
                                    opts,
                                    name: u.name.clone(),
                                    shutdown: Some(u.shutdown),
                                    file_perms: None,
                                }),
                                ..Default::default()
                            },
                        )
                    }
                    SocketKind::Inet(i) => {
                        if i.tcp.is_some() || !i.queue.is_empty() {
                            report.lose(format!(
                                "{at}: TCP connection state and queued data (tcp-stream is not written)"
                            ));
                        }
                        let words = |a: std::net::IpAddr| -> Vec<u32> {
                            match a {
                                std::net::IpAddr::V4(v) => {
                                    vec![u32::from_ne_bytes(v.octets())]
                                }
                                std::net::IpAddr::V6(v) => v
                                    .octets()
                                    .chunks_exact(4)
                                    .map(|c| u32::from_ne_bytes(c.try_into().unwrap_or_default()))
                                    .collect(),
                            }
                        };
                        let state = if i.backlog.is_some() {
                            10
                        } else if let Some(t) = &i.tcp {
                            t.state
                        } else if i.peer.is_some() {
                            1
                        } else {
                            7
                        };
                        (
                            fdtype::INETSK,
                            pb::File {
                                r#type: fdtype::INETSK,
                                id,
                                isk: Some(pb::InetSk {
                                    id,
                                    ino: s.ino as u32,
                                    family: s.family,
                                    r#type: s.sock_type,
                                    proto: i.protocol,
                                    state,
                                    src_port: u32::from(i.local.port()),
                                    dst_port: i.peer.map_or(0, |a| u32::from(a.port())),
                                    flags: fd.flags,
                                    backlog: i.backlog.unwrap_or(0),
                                    src_addr: words(i.local.ip()),
                                    dst_addr: i.peer.map(|a| words(a.ip())).unwrap_or_default(),
                                    fown: fown(fd, p),
                                    opts,
                                    v6only,
                                    shutdown: Some(i.shutdown),
                                }),
                                ..Default::default()
                            },
                        )
                    }
                    _ => {
                        report.lose(format!("{at}: a netlink or packet socket (not written)"));
                        return None;
                    }
                }
            }
            FdKind::Signalfd { mask } => {
                let id = self.id();
                let e = crate::fdkinds::signalfd(id, fd.flags, fown(fd, p), *mask);
                (fdtype::SIGNALFD, e)
            }
            FdKind::Timerfd(t) => {
                let id = self.id();
                let e = crate::fdkinds::timerfd(id, fd.flags, fown(fd, p), t);
                (fdtype::TIMERFD, e)
            }
            FdKind::Epoll { targets } => {
                let id = self.id();
                let e = crate::fdkinds::epoll(id, fd.flags, fown(fd, p), targets, &at, report);
                (fdtype::EVENTPOLL, e)
            }
            other => {
                report.lose(format!("{at}: {} (not written)", fd_kind_name(other)));
                return None;
            }
        };
        let id = entry.id;
        self.entries.push(entry);
        self.by_fd.insert((p.pid, fd.fd), id);
        Some((ty, id))
    }
}

/// A short name of a descriptor kind, for losses.
pub(crate) fn fd_kind_name(k: &FdKind) -> &'static str {
    match k {
        FdKind::File { .. } => "a regular file",
        FdKind::Directory { .. } => "a directory",
        FdKind::CharDevice { .. } => "a character device",
        FdKind::Tty { .. } => "a terminal",
        FdKind::PtyMaster(_) => "a pseudo-terminal master",
        FdKind::PtySlave { .. } => "a pseudo-terminal slave",
        FdKind::Pipe { .. } | FdKind::LocalPipe { .. } => "a pipe",
        FdKind::Epoll { .. } => "an epoll instance",
        FdKind::Dup { .. } => "a duplicate",
        FdKind::Fifo { .. } => "a FIFO",
        FdKind::DeletedFile { .. } => "a file deleted while open",
        FdKind::Socket(_) => "a socket",
        FdKind::Pidfd { .. } => "a pidfd",
        FdKind::Eventfd { .. } => "an eventfd",
        FdKind::Signalfd { .. } => "a signalfd",
        FdKind::Timerfd(_) => "a timerfd",
        FdKind::Inotify { .. } => "an inotify instance",
        FdKind::Fanotify(_) => "a fanotify group",
        FdKind::Memfd { .. } => "a memfd",
        FdKind::Shared { .. } => "a description shared with another process",
    }
}

fn regs(t: &ThreadState) -> pb::X86Regs {
    let r = &t.regs;
    pb::X86Regs {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        bp: r.rbp,
        bx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        ax: r.rax,
        cx: r.rcx,
        dx: r.rdx,
        si: r.rsi,
        di: r.rdi,
        orig_ax: r.orig_rax,
        ip: r.rip,
        cs: r.cs,
        flags: r.eflags,
        sp: r.rsp,
        ss: r.ss,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
        ds: r.ds,
        es: r.es,
        fs: r.fs,
        gs: r.gs,
        mode: Some(1),
    }
}

fn caps(v: u64) -> Vec<u32> {
    vec![v as u32, (v >> 32) as u32]
}

fn creds(p: &ProcessState, t: &ThreadState) -> pb::Creds {
    let c = &p.creds;
    pb::Creds {
        uid: c.uids[0],
        gid: c.gids[0],
        euid: c.uids[1],
        egid: c.gids[1],
        suid: c.uids[2],
        sgid: c.gids[2],
        fsuid: c.uids[3],
        fsgid: c.gids[3],
        cap_inh: caps(p.attrs.caps[0]),
        cap_prm: caps(p.attrs.caps[1]),
        cap_eff: caps(p.attrs.caps[2]),
        cap_bnd: caps(p.attrs.caps[3]),
        secbits: t.attrs.as_ref().map_or(0, |a| a.securebits),
        groups: c.groups.clone(),
        no_new_privs: Some(u32::from(p.attrs.no_new_privs)),
        cap_amb: caps(p.attrs.caps[4]),
    }
}

fn siginfo_queue(q: &[ferry_agent::state::SiginfoState]) -> Option<pb::SignalQueue> {
    (!q.is_empty()).then(|| pb::SignalQueue {
        signals: q
            .iter()
            .map(|s| pb::Siginfo {
                siginfo: s.raw.clone(),
            })
            .collect(),
    })
}

fn itimer(p: &ProcessState, which: u32) -> pb::Itimer {
    let t = p.attrs.itimers.iter().find(|t| t.which == which);
    let (i, v) = t.map_or((0, 0), |t| (t.interval_us, t.value_us));
    pb::Itimer {
        isec: i / 1_000_000,
        iusec: i % 1_000_000,
        vsec: v / 1_000_000,
        vusec: v % 1_000_000,
    }
}

fn task_core(p: &ProcessState, leader: &ThreadState) -> pb::TaskCore {
    let mut rl: Vec<_> = p.rlimits.clone();
    rl.sort_by_key(|r| r.resource);
    pb::TaskCore {
        // TASK_STOPPED (3) for a process in a group stop.
        task_state: if p.attrs.stop_signal != 0 {
            3
        } else {
            TASK_ALIVE
        },
        exit_code: 0,
        personality: p.personality,
        flags: 0,
        blk_sigset: leader.sigmask,
        comm: p.comm.clone(),
        timers: Some(pb::TaskTimers {
            real: itimer(p, 0),
            virt: itimer(p, 1),
            prof: itimer(p, 2),
            posix: p
                .attrs
                .posix_timers
                .iter()
                .map(|t| pb::PosixTimer {
                    it_id: t.id as u32,
                    clock_id: t.clock as u32,
                    si_signo: t.signo,
                    it_sigev_notify: t.notify,
                    sival_ptr: t.value,
                    overrun: t.overrun as u32,
                    isec: t.interval_ns / 1_000_000_000,
                    insec: t.interval_ns % 1_000_000_000,
                    vsec: t.value_ns / 1_000_000_000,
                    vnsec: t.value_ns % 1_000_000_000,
                    notify_thread_id: (t.notify == 4).then_some(t.notify_tid),
                })
                .collect(),
        }),
        rlimits: Some(pb::TaskRlimits {
            rlimits: rl
                .iter()
                .map(|r| pb::Rlimit {
                    cur: r.cur,
                    max: r.max,
                })
                .collect(),
        }),
        cg_set: None,
        signals_s: siginfo_queue(&p.signals.shared_pending),
        loginuid: p.attrs.loginuid,
        oom_score_adj: Some(p.attrs.oom_score_adj),
        sigactions: sigactions(p),
        child_subreaper: Some(p.attrs.child_subreaper),
        stop_signo: (p.attrs.stop_signal != 0).then_some(p.attrs.stop_signal),
        membarrier_registration_mask: (p.attrs.membarrier != 0).then_some(p.attrs.membarrier),
    }
}

fn sigactions(p: &ProcessState) -> Vec<pb::Sigaction> {
    (1..=64u32)
        .filter(|&s| s != 9 && s != 19)
        .map(|s| {
            let a = p.signals.actions.iter().find(|a| a.signo == s);
            pb::Sigaction {
                sigaction: a.map_or(0, |a| a.handler),
                flags: a.map_or(0, |a| a.flags),
                restorer: a.map_or(0, |a| a.restorer),
                mask: a.map_or(0, |a| a.mask),
                compat_sigaction: None,
            }
        })
        .collect()
}

fn thread_core(p: &ProcessState, t: &ThreadState, report: &mut Report) -> pb::ThreadCore {
    let at = format!("pid {} thread {}", p.pid, t.tid);
    if !t.seccomp.filters.is_empty() {
        report.lose(format!(
            "{at}: seccomp filters (seccomp.img is not written)"
        ));
    }
    // What CRIU keeps none of is lost only when it differs from what an import gives: the
    // importing ferry's affinity (taken to be this one's), the kernel's defaults otherwise.
    if t.sched.reset_on_fork {
        report.lose(format!("{at}: SCHED_RESET_ON_FORK (CRIU keeps none)"));
    }
    if trim_words(&t.sched.affinity) != trim_words(&crate::import::own_affinity()) {
        report.lose(format!(
            "{at}: CPU affinity (CRIU keeps none; an import gives the importing ferry's)"
        ));
    }
    // PR_TSC_ENABLE (1); PR_MCE_KILL_DEFAULT (2); the default timer slack.
    if let Some(a) = &t.attrs
        && (a.ioprio != 0 || a.tsc != 1 || a.mce_kill != 2 || a.timer_slack_ns != 50_000)
    {
        report.lose(format!(
            "{at}: I/O priority, timer slack, PR_SET_TSC and PR_MCE_KILL (CRIU keeps none)"
        ));
    }
    if !t.cgroups.is_empty() {
        report.lose(format!("{at}: its cgroups (cgroup.img is not written)"));
    }
    pb::ThreadCore {
        futex_rla: t.robust_list.0,
        futex_rla_len: t.robust_list.1 as u32,
        sched_nice: Some(t.sched.nice),
        sched_policy: Some(t.sched.policy),
        sched_prio: Some(t.sched.rt_priority),
        blk_sigset: Some(t.sigmask),
        sas: Some(pb::ThreadSas {
            ss_sp: t.sigaltstack.sp,
            ss_size: t.sigaltstack.size,
            ss_flags: t.sigaltstack.flags,
        }),
        pdeath_sig: Some(p.attrs.pdeathsig),
        signals_p: siginfo_queue(&t.pending),
        creds: Some(creds(p, t)),
        seccomp_mode: Some(t.seccomp.mode),
        seccomp_filter: None,
        comm: t.attrs.as_ref().map(|a| a.comm.clone()),
        rseq_entry: t.rseq.map(|r| pb::Rseq {
            rseq_abi_pointer: r.ptr,
            rseq_abi_size: r.len,
            signature: r.sig,
        }),
    }
}

/// CRIU's VMA entry; `None` (and a loss) for kinds CRIU's tables here cannot carry.
fn vma(
    p: &ProcessState,
    v: &VmaState,
    files: &mut FileTable,
    report: &mut Report,
    vvar_seen: &mut bool,
) -> pb::Vma {
    let at = format!("pid {} area {:#x}-{:#x}", p.pid, v.start, v.end);
    let share = if v.shared { MAP_SHARED } else { MAP_PRIVATE };
    let (st, flags, shmid, fdflags) = match &v.kind {
        VmaKind::Anonymous => (status::ANON_PRIVATE, share | MAP_ANONYMOUS, 0, None),
        VmaKind::Heap => (
            status::ANON_PRIVATE | status::HEAP,
            share | MAP_ANONYMOUS,
            0,
            None,
        ),
        VmaKind::Stack => (
            status::ANON_PRIVATE | status::STACK,
            share | MAP_ANONYMOUS,
            0,
            None,
        ),
        VmaKind::File(f) => {
            let rw = v.shared && v.maywrite;
            let oflags = if rw { 2 } else { 0 };
            let id = files.path(&f.path, f.identity.size, f.identity.mode, oflags);
            let st = if v.shared {
                status::FILE_SHARED
            } else {
                status::FILE_PRIVATE
            };
            (st, share, u64::from(id), Some(oflags))
        }
        VmaKind::SharedAnonymous { ino, .. } => {
            report.lose(format!(
                "{at}: contents of shared anonymous memory (pagemap-shmem is not written)"
            ));
            (status::ANON_SHARED, MAP_SHARED | MAP_ANONYMOUS, *ino, None)
        }
        VmaKind::Vdso => (status::VDSO, MAP_PRIVATE | MAP_ANONYMOUS, 0, None),
        VmaKind::Vvar | VmaKind::VvarVclock => {
            *vvar_seen = true;
            (status::VVAR, MAP_PRIVATE | MAP_ANONYMOUS, 0, None)
        }
        VmaKind::Vsyscall => (status::VSYSCALL, MAP_PRIVATE | MAP_ANONYMOUS, 0, None),
        VmaKind::Memfd { ino } => {
            report.lose(format!("{at}: a memfd mapping (memfd.img is not written)"));
            (status::MEMFD | status::FILE_SHARED, share, *ino, None)
        }
        VmaKind::SysvShm { id } => {
            report.lose(format!(
                "{at}: SysV shared memory (ipcns-shm is not written)"
            ));
            (
                status::SYSVIPC | status::ANON_SHARED,
                MAP_SHARED,
                *id as u64,
                None,
            )
        }
        VmaKind::DeletedFile { path, .. } => {
            report.lose(format!(
                "{at}: mapping of {path}, deleted (ghost files are not written)"
            ));
            (status::FILE_PRIVATE, share, 0, None)
        }
        VmaKind::AioRing => {
            report.lose(format!("{at}: an AIO ring (not written)"));
            (
                status::AIORING | status::ANON_SHARED,
                MAP_SHARED | MAP_ANONYMOUS,
                0,
                None,
            )
        }
    };
    let st = if matches!(v.kind, VmaKind::Vsyscall) {
        st
    } else {
        st | status::REGULAR
    };
    let mut flags = flags;
    if v.growsdown {
        flags |= MAP_GROWSDOWN;
    }
    if v.flags & vmflag::LOCKED != 0 {
        flags |= MAP_LOCKED;
    }
    if v.flags & vmflag::NORESERVE != 0 {
        flags |= MAP_NORESERVE;
    }
    if v.flags & vmflag::LOCKONFAULT != 0 {
        report.lose(format!(
            "{at}: mlock2(MLOCK_ONFAULT) (CRIU keeps VM_LOCKED only)"
        ));
    }
    let madv = MADV_BITS
        .iter()
        .filter(|(f, _)| v.flags & f != 0)
        .fold(0u64, |m, (_, b)| m | 1 << b);
    pb::Vma {
        start: v.start,
        end: v.end,
        pgoff: v.pgoff,
        shmid,
        prot: v.prot,
        flags,
        status: st,
        fd: -1,
        madv: (madv != 0).then_some(madv),
        fdflags,
    }
}

/// A CPU mask without its trailing zero words.
fn trim_words(w: &[u64]) -> &[u64] {
    let n = w.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    &w[..n]
}

/// Losses of process-wide state CRIU's tables written here have no room for.
fn process_losses(p: &ProcessState, report: &mut Report) {
    let at = format!("pid {}", p.pid);
    let mut lose = |cond: bool, what: &str| {
        if cond {
            report.lose(format!("{at}: {what}"));
        }
    };
    lose(
        !p.locks.is_empty(),
        "file locks (filelocks.img is not written)",
    );
    lose(
        !p.memfds.is_empty(),
        "memfd contents (memfd.img is not written)",
    );
    lose(
        !p.sysv_shm.is_empty() || p.ipc_ns.is_some(),
        "SysV IPC objects and the IPC namespace (ipcns images are not written)",
    );
    lose(
        !p.carried_files.is_empty(),
        "files carried whole (CRIU keeps no file contents)",
    );
    lose(
        !p.mapped_deleted.is_empty(),
        "files deleted while mapped (ghost files are not written)",
    );
    lose(
        p.cwd_removed.is_some(),
        "a removed working directory (ghost directories are not written)",
    );
    lose(
        !p.attrs.cgroups.is_empty() && p.attrs.cgroups != crate::import::own_cgroups(),
        "its cgroups (cgroup.img is not written; an import gives the importing ferry's)",
    );
    lose(
        p.attrs.ctty.is_some(),
        "its controlling terminal (tty-info is not written)",
    );
    lose(
        p.mm.lock_future != 0,
        "mlockall(MCL_FUTURE) (CRIU keeps none)",
    );
    lose(p.mm.merge_any, "PR_SET_MEMORY_MERGE (CRIU keeps none)");
    lose(
        p.mm.thp_disable == 3,
        "PR_THP_DISABLE_EXCEPT_ADVISED (CRIU keeps a bool)",
    );
    lose(!p.mm.aio_rings.is_empty(), "AIO contexts (not written)");
    lose(
        p.attrs.coredump_filter.is_some_and(|f| f != 0x33),
        "coredump_filter (CRIU keeps none)",
    );
    lose(
        p.attrs.shares_with_parent & !(CLONE_FS | CLONE_FILES) != 0,
        "sharing with its parent",
    );
}

/// Builds every file of the directory.
pub(crate) fn convert(tree: &TreeState, stream: &[u8]) -> Result<Files, Error> {
    let mut out = Files::default();
    let mut files = FileTable::default();
    let page = PAGE_SIZE as usize;
    // Page index of each process's first page in the stream, and its page map.
    let mut maps: Vec<BTreeMap<u64, usize>> = Vec::new();
    let mut offset = 0usize;
    for (i, p) in tree.processes.iter().enumerate() {
        let mut map = BTreeMap::new();
        for v in &p.mm.vmas {
            for r in &v.pages {
                for k in 0..r.count {
                    if offset + page > stream.len() {
                        return Err(Error::format(
                            "pages",
                            "the image holds fewer pages than its manifest announces",
                        ));
                    }
                    map.insert(r.start + k * PAGE_SIZE, offset);
                    offset += page;
                }
            }
        }
        // Pages inherited from the parent are its pages at the same address.
        let parent = tree.processes[..i].iter().position(|q| q.pid == p.ppid);
        for v in &p.mm.vmas {
            for r in &v.inherited {
                for k in 0..r.count {
                    let addr = r.start + k * PAGE_SIZE;
                    let from = parent.and_then(|j| maps[j].get(&addr).copied());
                    match from {
                        Some(o) => {
                            map.insert(addr, o);
                        }
                        None => {
                            return Err(Error::format(
                                format!("pid {}", p.pid),
                                format!("page {addr:#x} is inherited from a parent that lacks it"),
                            ));
                        }
                    }
                }
            }
        }
        maps.push(map);
    }

    let mut pstree = ImgWriter::new(magic::PSTREE);
    let mut root_ids = None;
    let mut pipes_data = ImgWriter::new(magic::PIPES_DATA);
    let mut ids_of: HashMap<i32, pb::TaskIds> = HashMap::new();
    for (i, p) in tree.processes.iter().enumerate() {
        process_losses(p, &mut out.report);
        let n = i as u32 + 1;
        let parent = tree.processes[..i]
            .iter()
            .find(|q| q.pid == p.ppid)
            .and_then(|q| ids_of.get(&q.pid));
        let share = p.attrs.shares_with_parent;
        let ids = pb::TaskIds {
            vm_id: n,
            files_id: match parent {
                Some(pi) if share & CLONE_FILES != 0 => pi.files_id,
                _ => n,
            },
            fs_id: match parent {
                Some(pi) if share & CLONE_FS != 0 => pi.fs_id,
                _ => n,
            },
            sighand_id: n,
            pid_ns_id: Some(1),
            net_ns_id: Some(2),
            ipc_ns_id: Some(3),
            uts_ns_id: Some(4),
            mnt_ns_id: Some(5),
            user_ns_id: None,
            cgroup_ns_id: Some(6),
            time_ns_id: None,
        };
        ids_of.insert(p.pid, ids);
        if i == 0 {
            root_ids = Some(ids);
        }
        pstree.entry(&pb::Pstree {
            pid: p.pid as u32,
            ppid: if i == 0 { 0 } else { p.ppid as u32 },
            pgid: p.pgid as u32,
            sid: p.sid as u32,
            threads: p.threads.iter().map(|t| t.tid as u32).collect(),
        });
        let mut w = ImgWriter::new(magic::IDS);
        w.entry(&ids);
        out.images.push((format!("ids-{}.img", p.pid), w));

        // Threads.
        for (k, t) in p.threads.iter().enumerate() {
            let (fpregs, lost) = crate::xsave::to_criu(&t.xstate);
            if let Some(l) = lost {
                out.report
                    .lose(format!("pid {} thread {}: {l}", p.pid, t.tid));
            }
            let core = pb::Core {
                mtype: 1,
                thread_info: Some(pb::ThreadInfoX86 {
                    clear_tid_addr: t.clear_child_tid,
                    gpregs: regs(t),
                    fpregs,
                }),
                tc: (k == 0).then(|| task_core(p, t)),
                ids: (k == 0).then_some(ids),
                thread_core: Some(thread_core(p, t, &mut out.report)),
            };
            let mut w = ImgWriter::new(magic::CORE);
            w.entry(&core);
            out.images.push((format!("core-{}.img", t.tid), w));
        }

        // Memory.
        let exe = files.path(&p.exe.path, p.exe.identity.size, p.exe.identity.mode, 0);
        let mut vvar_seen = false;
        let vmas =
            p.mm.vmas
                .iter()
                .map(|v| vma(p, v, &mut files, &mut out.report, &mut vvar_seen))
                .collect();
        let m = &p.mm;
        let mm = pb::Mm {
            mm_start_code: m.start_code,
            mm_end_code: m.end_code,
            mm_start_data: m.start_data,
            mm_end_data: m.end_data,
            mm_start_stack: m.start_stack,
            mm_start_brk: m.start_brk,
            mm_brk: m.brk,
            mm_arg_start: m.arg_start,
            mm_arg_end: m.arg_end,
            mm_env_start: m.env_start,
            mm_env_end: m.env_end,
            exe_file_id: exe,
            mm_saved_auxv: m.auxv.clone(),
            vmas,
            dumpable: Some(p.attrs.dumpable as i32),
            thp_disabled: Some(m.thp_disable != 0),
        };
        let mut w = ImgWriter::new(magic::MM);
        w.entry(&mm);
        out.images.push((format!("mm-{}.img", p.pid), w));

        // Pages: every page of the process, in address order, as runs.
        let shared_anon: Vec<(u64, u64)> =
            p.mm.vmas
                .iter()
                .filter(|v| {
                    !matches!(
                        v.kind,
                        VmaKind::Anonymous
                            | VmaKind::Heap
                            | VmaKind::Stack
                            | VmaKind::File(_)
                            | VmaKind::Vdso
                            | VmaKind::Vvar
                            | VmaKind::VvarVclock
                            | VmaKind::Vsyscall
                    )
                })
                .map(|v| (v.start, v.end))
                .collect();
        let mut pm = ImgWriter::new(magic::PAGEMAP);
        pm.entry(&pb::PagemapHead { pages_id: n });
        let mut data = Vec::with_capacity(maps[i].len() * page);
        let mut run: Option<(u64, u64)> = None;
        let flush = |pm: &mut ImgWriter, run: Option<(u64, u64)>| {
            if let Some((start, count)) = run {
                pm.entry(&pb::PagemapEntry {
                    vaddr: start,
                    compat_nr_pages: count.min(u64::from(u32::MAX)) as u32,
                    in_parent: None,
                    flags: Some(PE_PRESENT),
                    nr_pages: Some(count),
                });
            }
        };
        for (&addr, &off) in &maps[i] {
            if shared_anon.iter().any(|&(s, e)| addr >= s && addr < e) {
                continue;
            }
            data.extend_from_slice(&stream[off..off + page]);
            run = match run {
                Some((s, c)) if s + c * PAGE_SIZE == addr => Some((s, c + 1)),
                r => {
                    flush(&mut pm, r);
                    Some((addr, 1))
                }
            };
        }
        flush(&mut pm, run);
        out.images.push((format!("pagemap-{}.img", p.pid), pm));
        out.raw.push((format!("pages-{n}.img"), data));

        // Files.
        let dirmode = 0o040_755;
        let cwd = files.path(&p.cwd, 0, dirmode, 0o200_000);
        let root = files.path(&p.root, 0, dirmode, 0o200_000);
        let mut w = ImgWriter::new(magic::FS);
        w.entry(&pb::Fs {
            cwd_id: cwd,
            root_id: root,
            umask: Some(p.umask),
        });
        if share & CLONE_FS == 0 || i == 0 {
            out.images.push((format!("fs-{}.img", p.pid), w));
        }
        let mut fdinfo = ImgWriter::new(magic::FDINFO);
        for fd in &p.fds {
            if let Some((ty, id)) = files.fd(p, fd, &mut out.report) {
                fdinfo.entry(&pb::Fdinfo {
                    id,
                    flags: u32::from(fd.cloexec),
                    r#type: ty,
                    fd: fd.fd as u32,
                });
            }
        }
        if ids.files_id == n {
            out.images.push((format!("fdinfo-{n}.img"), fdinfo));
        }

        let mut w = ImgWriter::new(magic::SIGACT);
        for sa in sigactions(p) {
            w.entry(&sa);
        }
        out.images.push((format!("sigacts-{}.img", p.pid), w));
    }
    for z in &tree.zombies {
        pstree.entry(&pb::Pstree {
            pid: z.pid as u32,
            ppid: z.ppid as u32,
            pgid: z.pgid as u32,
            sid: z.sid as u32,
            threads: vec![z.pid as u32],
        });
        let core = pb::Core {
            mtype: 1,
            thread_info: None,
            tc: Some(pb::TaskCore {
                task_state: TASK_DEAD,
                exit_code: z.status as u32,
                personality: 0,
                flags: 0,
                blk_sigset: 0,
                comm: String::new(),
                ..Default::default()
            }),
            ids: None,
            thread_core: None,
        };
        let mut w = ImgWriter::new(magic::CORE);
        w.entry(&core);
        out.images.push((format!("core-{}.img", z.pid), w));
    }
    for (d, bytes) in files.pipe_data.drain(..) {
        pipes_data.entry(&d).raw(&bytes);
    }
    let mut inv = ImgWriter::new(magic::INVENTORY);
    inv.entry(&pb::Inventory {
        img_version: IMG_VERSION,
        fdinfo_per_id: Some(true),
        root_ids,
        ns_per_id: Some(true),
        root_cg_set: None,
        lsmtype: Some(0),
        dump_uptime: None,
    });
    out.images.push(("inventory.img".into(), inv));
    out.images.push(("pstree.img".into(), pstree));
    out.images.push(("pipes-data.img".into(), pipes_data));
    let mut w = ImgWriter::new(magic::FILES);
    for e in &files.entries {
        w.entry(e);
    }
    out.images.push(("files.img".into(), w));
    Ok(out)
}
