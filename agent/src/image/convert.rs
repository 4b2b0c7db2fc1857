//! Conversion between the manifest's protobuf messages and the checkpoint model.
//!
//! The reader converts with [`TryFrom`], which checks the structure (required messages present,
//! enum values known) and then calls [`validate`]. Every error names the offending field with
//! its path, e.g. `mm.vmas[3].file`.

use ferry_proto::image::v1 as pb;

use super::validate::{
    MAX_AFFINITY_WORDS, MAX_AIO_RINGS, MAX_AUXV_WORDS, MAX_CARRIED_FILES, MAX_CGROUPS,
    MAX_EPOLL_TARGETS, MAX_FANOTIFY_MARKS, MAX_FDS, MAX_INOTIFY_WATCHES, MAX_LOCKS,
    MAX_MEMFD_EXTENTS, MAX_MEMFDS, MAX_PAGE_RUNS, MAX_PENDING, MAX_POSIX_TIMERS, MAX_PROCESSES,
    MAX_SYSV_SHM, MAX_THREADS, MAX_VMAS, ManifestError, ManifestProblem, RLIM_NLIMITS, validate,
    validate_tree,
};
use super::validate::{MAX_IPC_OBJECTS, MAX_IPC_SYSCTLS, MAX_SEMS, MAX_SYSV_MSGS};
use crate::state::AioRingState;
use crate::state::{
    AttrsState, CgroupState, CredsState, EpollTarget, FdKind, FdState, FileIdentity, FileRef,
    InotifyWatch, ItimerState, LockKind, LockState, MemfdExtent, MemfdState, MmState, PageRun,
    PipeQueue, PosixTimerState, ProcessState, PtyState, Regs, RlimitState, RseqState, SchedState,
    SeccompState, SigactionState, SigaltstackState, SiginfoState, SignalsState, SysvShmState,
    Termios, ThreadState, TimerfdState, TreeState, VmaKind, VmaState, ZombieState,
};
use crate::state::{
    CarriedDir, CarriedFile, CttyState, DeletedNode, FanotifyMark, FanotifyState, FanotifyTarget,
    MappedDeletedFile, ThreadAttrsState,
};
use crate::state::{
    IpcNsState, IpcPermState, MsgQueueState, SemSetState, SemUndoState, SysvMsgState,
};

use super::validate::{cap_count, err};

fn required<T>(v: Option<T>, field: impl FnOnce() -> String) -> Result<T, ManifestError> {
    v.ok_or_else(|| err(field(), ManifestProblem::Missing))
}

// Model -> protobuf (infallible: the writer validates the model separately).

impl From<&ProcessState> for pb::Manifest {
    fn from(s: &ProcessState) -> Self {
        pb::Manifest {
            process: Some(process_to_pb(s)),
            ..Default::default()
        }
    }
}

impl From<&TreeState> for pb::Manifest {
    fn from(t: &TreeState) -> Self {
        pb::Manifest {
            process: t.processes.first().map(process_to_pb),
            more: t.processes.iter().skip(1).map(process_to_pb).collect(),
            zombies: t
                .zombies
                .iter()
                .map(|z| pb::Zombie {
                    pid: z.pid,
                    ppid: z.ppid,
                    pgid: z.pgid,
                    sid: z.sid,
                    status: z.status,
                })
                .collect(),
        }
    }
}

fn process_to_pb(s: &ProcessState) -> pb::ProcessState {
    pb::ProcessState {
        pid: s.pid,
        ppid: s.ppid,
        pgid: s.pgid,
        sid: s.sid,
        comm: s.comm.clone(),
        exe: Some(file_ref_to_pb(&s.exe)),
        creds: Some(creds_to_pb(&s.creds)),
        umask: s.umask,
        cwd: s.cwd.clone(),
        personality: s.personality,
        rlimits: s
            .rlimits
            .iter()
            .map(|r| pb::Rlimit {
                resource: r.resource,
                cur: r.cur,
                max: r.max,
            })
            .collect(),
        mm: Some(mm_to_pb(&s.mm)),
        fds: s.fds.iter().map(fd_to_pb).collect(),
        signals: Some(pb::Signals {
            actions: s.signals.actions.iter().map(sigaction_to_pb).collect(),
            shared_pending: s.signals.shared_pending.iter().map(siginfo_to_pb).collect(),
        }),
        threads: s.threads.iter().map(thread_to_pb).collect(),
        locks: s.locks.iter().map(lock_to_pb).collect(),
        memfds: s.memfds.iter().map(memfd_to_pb).collect(),
        sysv_shm: s.sysv_shm.iter().map(sysv_shm_to_pb).collect(),
        root: s.root.clone(),
        ipc_ns: s.ipc_ns.as_ref().map(ipc_ns_to_pb),
        cwd_removed: s.cwd_removed.as_ref().map(|d| pb::CarriedDir {
            path: d.path.clone(),
            mode: d.mode,
            uid: d.uid,
            gid: d.gid,
        }),
        mapped_deleted: s
            .mapped_deleted
            .iter()
            .map(|m| pb::MappedDeletedFile {
                ino: m.ino,
                path: m.path.clone(),
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                size: m.size,
                mtime_ns: m.mtime_ns,
                extents: m
                    .extents
                    .iter()
                    .map(|e| pb::MemfdExtent {
                        offset: e.offset,
                        data: e.data.clone(),
                    })
                    .collect(),
            })
            .collect(),
        carried_files: s
            .carried_files
            .iter()
            .map(|c| pb::CarriedFile {
                file: Some(file_ref_to_pb(&c.file)),
                mode: c.mode,
                uid: c.uid,
                gid: c.gid,
                extents: c
                    .extents
                    .iter()
                    .map(|e| pb::MemfdExtent {
                        offset: e.offset,
                        data: e.data.clone(),
                    })
                    .collect(),
                dirs: c
                    .dirs
                    .iter()
                    .map(|d| pb::CarriedDir {
                        path: d.path.clone(),
                        mode: d.mode,
                        uid: d.uid,
                        gid: d.gid,
                    })
                    .collect(),
            })
            .collect(),
        attrs: Some(attrs_to_pb(&s.attrs)),
    }
}

fn file_ref_to_pb(f: &FileRef) -> pb::FileRef {
    pb::FileRef {
        path: f.path.clone(),
        identity: Some(identity_to_pb(&f.identity)),
    }
}

pub(super) fn identity_to_pb(i: &FileIdentity) -> pb::FileIdentity {
    pb::FileIdentity {
        dev: i.dev,
        ino: i.ino,
        mode: i.mode,
        size: i.size,
        mtime_ns: i.mtime_ns,
        rdev: i.rdev,
    }
}

pub(super) fn identity_from_pb(i: pb::FileIdentity) -> FileIdentity {
    FileIdentity {
        dev: i.dev,
        ino: i.ino,
        mode: i.mode,
        size: i.size,
        mtime_ns: i.mtime_ns,
        rdev: i.rdev,
    }
}

fn creds_to_pb(c: &CredsState) -> pb::Creds {
    pb::Creds {
        ruid: c.uids[0],
        euid: c.uids[1],
        suid: c.uids[2],
        fsuid: c.uids[3],
        rgid: c.gids[0],
        egid: c.gids[1],
        sgid: c.gids[2],
        fsgid: c.gids[3],
        groups: c.groups.clone(),
    }
}

fn mm_to_pb(m: &MmState) -> pb::Mm {
    pb::Mm {
        vmas: m.vmas.iter().map(vma_to_pb).collect(),
        start_code: m.start_code,
        end_code: m.end_code,
        start_data: m.start_data,
        end_data: m.end_data,
        start_brk: m.start_brk,
        brk: m.brk,
        start_stack: m.start_stack,
        arg_start: m.arg_start,
        arg_end: m.arg_end,
        env_start: m.env_start,
        env_end: m.env_end,
        auxv: m.auxv.clone(),
        lock_future: m.lock_future,
        thp_disable: m.thp_disable,
        merge_any: m.merge_any,
        aio_rings: m
            .aio_rings
            .iter()
            .map(|r| pb::AioRing {
                start: r.start,
                len: r.len,
                id: r.id,
                nr: r.nr,
                head: r.head,
                tail: r.tail,
                magic: r.magic,
                compat_features: r.compat_features,
                incompat_features: r.incompat_features,
                header_length: r.header_length,
                events: r.events.clone(),
            })
            .collect(),
    }
}

fn vma_to_pb(v: &VmaState) -> pb::Vma {
    let (kind, file) = match &v.kind {
        VmaKind::Anonymous => (pb::VmaKind::Anonymous, None),
        VmaKind::Heap => (pb::VmaKind::Heap, None),
        VmaKind::Stack => (pb::VmaKind::Stack, None),
        VmaKind::File(f) => (pb::VmaKind::File, Some(file_ref_to_pb(f))),
        VmaKind::SharedAnonymous { .. } => (pb::VmaKind::SharedAnonymous, None),
        VmaKind::Vdso => (pb::VmaKind::Vdso, None),
        VmaKind::Vvar => (pb::VmaKind::Vvar, None),
        VmaKind::VvarVclock => (pb::VmaKind::VvarVclock, None),
        VmaKind::Vsyscall => (pb::VmaKind::Vsyscall, None),
        VmaKind::AioRing => (pb::VmaKind::AioRing, None),
        VmaKind::Memfd { .. } => (pb::VmaKind::Memfd, None),
        VmaKind::SysvShm { .. } => (pb::VmaKind::SysvShm, None),
        VmaKind::DeletedFile { path, ino } => (
            pb::VmaKind::DeletedFile,
            Some(pb::FileRef {
                path: path.clone(),
                identity: Some(pb::FileIdentity {
                    ino: *ino,
                    ..Default::default()
                }),
            }),
        ),
    };
    let memfd_ino = match v.kind {
        VmaKind::Memfd { ino } => ino,
        _ => 0,
    };
    let (shmem_ino, shmem_size) = match v.kind {
        VmaKind::SharedAnonymous { ino, size } => (ino, size),
        _ => (0, 0),
    };
    let sysv_shm_id = match v.kind {
        VmaKind::SysvShm { id } => id,
        _ => 0,
    };
    pb::Vma {
        start: v.start,
        end: v.end,
        prot: v.prot,
        shared: v.shared,
        pgoff: v.pgoff,
        kind: kind.into(),
        file,
        growsdown: v.growsdown,
        maywrite: v.maywrite,
        flags: v.flags,
        cow_shared_kb: v.cow_shared_kb,
        inherited: v
            .inherited
            .iter()
            .map(|r| pb::PageRun {
                start: r.start,
                count: r.count,
            })
            .collect(),
        precopied: v
            .precopied
            .iter()
            .map(|r| pb::PageRun {
                start: r.start,
                count: r.count,
            })
            .collect(),
        pages: v
            .pages
            .iter()
            .map(|r| pb::PageRun {
                start: r.start,
                count: r.count,
            })
            .collect(),
        memfd_ino,
        shmem_ino,
        shmem_size,
        sysv_shm_id,
    }
}

fn sysv_shm_to_pb(m: &SysvShmState) -> pb::SysvShm {
    pb::SysvShm {
        id: m.id,
        key: m.key,
        mode: m.mode,
        size: m.size,
        uid: m.uid,
        gid: m.gid,
        cuid: m.cuid,
        cgid: m.cgid,
        removed: m.removed,
        extents: m
            .extents
            .iter()
            .map(|e| pb::MemfdExtent {
                offset: e.offset,
                data: e.data.clone(),
            })
            .collect(),
    }
}

fn ipc_perm_to_pb(p: &IpcPermState) -> pb::IpcPerm {
    pb::IpcPerm {
        id: p.id,
        key: p.key,
        mode: p.mode,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
    }
}

fn ipc_perm_from_pb(
    p: Option<pb::IpcPerm>,
    field: impl Fn() -> String,
) -> Result<IpcPermState, ManifestError> {
    let p = required(p, field)?;
    Ok(IpcPermState {
        id: p.id,
        key: p.key,
        mode: p.mode,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
    })
}

fn ipc_ns_to_pb(n: &IpcNsState) -> pb::IpcNs {
    pb::IpcNs {
        sysctls: n
            .sysctls
            .iter()
            .map(|(name, value)| pb::IpcSysctl {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        msg_queues: n
            .msg_queues
            .iter()
            .map(|q| pb::MsgQueue {
                perm: Some(ipc_perm_to_pb(&q.perm)),
                qbytes: q.qbytes,
                lspid: q.lspid,
                lrpid: q.lrpid,
                messages: q
                    .messages
                    .iter()
                    .map(|m| pb::SysvMsg {
                        mtype: m.mtype,
                        text: m.text.clone(),
                    })
                    .collect(),
            })
            .collect(),
        sem_sets: n
            .sem_sets
            .iter()
            .map(|s| pb::SemSet {
                perm: Some(ipc_perm_to_pb(&s.perm)),
                values: s.values.clone(),
                pids: s.pids.clone(),
            })
            .collect(),
        sem_undo: n
            .sem_undo
            .iter()
            .map(|u| pb::SemUndo {
                id: u.id,
                adj: u.adj.clone(),
            })
            .collect(),
    }
}

fn ipc_ns_from_pb(n: pb::IpcNs) -> Result<IpcNsState, ManifestError> {
    cap_count("ipc_ns.sysctls", n.sysctls.len(), MAX_IPC_SYSCTLS)?;
    cap_count("ipc_ns.msg_queues", n.msg_queues.len(), MAX_IPC_OBJECTS)?;
    cap_count("ipc_ns.sem_sets", n.sem_sets.len(), MAX_IPC_OBJECTS)?;
    cap_count("ipc_ns.sem_undo", n.sem_undo.len(), MAX_IPC_OBJECTS)?;
    let messages: usize = n.msg_queues.iter().map(|q| q.messages.len()).sum();
    cap_count("ipc_ns.msg_queues[*].messages", messages, MAX_SYSV_MSGS)?;
    let sems: usize = n
        .sem_sets
        .iter()
        .map(|s| s.values.len().max(s.pids.len()))
        .sum::<usize>()
        + n.sem_undo.iter().map(|u| u.adj.len()).sum::<usize>();
    cap_count("ipc_ns.sem_sets[*].values", sems, MAX_SEMS)?;
    Ok(IpcNsState {
        sysctls: n.sysctls.into_iter().map(|s| (s.name, s.value)).collect(),
        msg_queues: n
            .msg_queues
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                Ok(MsgQueueState {
                    perm: ipc_perm_from_pb(q.perm, || format!("ipc_ns.msg_queues[{i}].perm"))?,
                    qbytes: q.qbytes,
                    lspid: q.lspid,
                    lrpid: q.lrpid,
                    messages: q
                        .messages
                        .into_iter()
                        .map(|m| SysvMsgState {
                            mtype: m.mtype,
                            text: m.text,
                        })
                        .collect(),
                })
            })
            .collect::<Result<_, ManifestError>>()?,
        sem_sets: n
            .sem_sets
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(SemSetState {
                    perm: ipc_perm_from_pb(s.perm, || format!("ipc_ns.sem_sets[{i}].perm"))?,
                    values: s.values,
                    pids: s.pids,
                })
            })
            .collect::<Result<_, ManifestError>>()?,
        sem_undo: n
            .sem_undo
            .into_iter()
            .map(|u| SemUndoState {
                id: u.id,
                adj: u.adj,
            })
            .collect(),
    })
}

fn sysv_shm_from_pb(m: pb::SysvShm) -> SysvShmState {
    SysvShmState {
        id: m.id,
        key: m.key,
        mode: m.mode,
        size: m.size,
        uid: m.uid,
        gid: m.gid,
        cuid: m.cuid,
        cgid: m.cgid,
        removed: m.removed,
        extents: m
            .extents
            .into_iter()
            .map(|e| MemfdExtent {
                offset: e.offset,
                data: e.data,
            })
            .collect(),
    }
}

fn memfd_to_pb(m: &MemfdState) -> pb::Memfd {
    pb::Memfd {
        ino: m.ino,
        name: m.name.clone(),
        mode: m.mode,
        size: m.size,
        seals: m.seals,
        extents: m
            .extents
            .iter()
            .map(|e| pb::MemfdExtent {
                offset: e.offset,
                data: e.data.clone(),
            })
            .collect(),
    }
}

fn fd_to_pb(f: &FdState) -> pb::Fd {
    use pb::fd::Kind;
    let kind = match &f.kind {
        FdKind::File { file, pos } => Kind::File(pb::OpenFile {
            file: Some(file_ref_to_pb(file)),
            pos: *pos,
        }),
        FdKind::Directory { file, pos } => Kind::Directory(pb::OpenFile {
            file: Some(file_ref_to_pb(file)),
            pos: *pos,
        }),
        FdKind::CharDevice { file } => Kind::CharDevice(file_ref_to_pb(file)),
        FdKind::Tty { file } => Kind::Tty(file_ref_to_pb(file)),
        FdKind::PtyMaster(p) => Kind::PtyMaster(pb::PtyMaster {
            index: p.index,
            termios: Some(pb::Termios {
                iflag: p.termios.iflag,
                oflag: p.termios.oflag,
                cflag: p.termios.cflag,
                lflag: p.termios.lflag,
                line: p.termios.line.into(),
                cc: p.termios.cc.clone(),
                ispeed: p.termios.ispeed,
                ospeed: p.termios.ospeed,
            }),
            rows: p.winsize[0].into(),
            cols: p.winsize[1].into(),
            xpixel: p.winsize[2].into(),
            ypixel: p.winsize[3].into(),
            packet: p.packet,
            locked: p.locked,
            hangup: p.hangup,
            input: p.input.clone(),
            output: p.output.clone(),
        }),
        FdKind::PtySlave { file, index } => Kind::PtySlave(pb::PtySlave {
            file: Some(file_ref_to_pb(file)),
            index: *index,
        }),
        FdKind::Pipe { ino } => Kind::Pipe(pb::Pipe { ino: *ino }),
        FdKind::Epoll { targets } => Kind::Epoll(pb::Epoll {
            targets: targets
                .iter()
                .map(|t| pb::EpollTarget {
                    fd: t.fd,
                    events: t.events,
                    data: t.data,
                    file_fd: (t.file_fd != t.fd).then_some(t.file_fd),
                    pending: t.pending,
                })
                .collect(),
        }),
        FdKind::Socket(sock) => Kind::Socket(super::sockets::socket_to_pb(sock)),
        FdKind::Dup { of } => Kind::Dup(pb::Dup { of: *of }),
        FdKind::LocalPipe { ino, queue } => Kind::LocalPipe(pb::LocalPipe {
            ino: *ino,
            queue: queue.as_ref().map(queue_to_pb),
        }),
        FdKind::Fifo { file, queue } => Kind::Fifo(pb::Fifo {
            file: Some(file_ref_to_pb(file)),
            queue: queue.as_ref().map(queue_to_pb),
        }),
        FdKind::DeletedFile {
            path,
            ino,
            mode,
            uid,
            gid,
            pos,
            atime_ns,
            mtime_ns,
            node,
        } => {
            let mut d = pb::DeletedFile {
                path: path.clone(),
                ino: *ino,
                mode: *mode,
                uid: *uid,
                gid: *gid,
                pos: *pos,
                atime_ns: *atime_ns,
                mtime_ns: *mtime_ns,
                ..Default::default()
            };
            match node {
                DeletedNode::Regular { size, extents } => {
                    d.set_node(pb::DeletedNodeType::Regular);
                    d.size = *size;
                    d.extents = extents
                        .iter()
                        .map(|e| pb::MemfdExtent {
                            offset: e.offset,
                            data: e.data.clone(),
                        })
                        .collect();
                }
                DeletedNode::Fifo { queue } => {
                    d.set_node(pb::DeletedNodeType::Fifo);
                    d.queue = queue.as_ref().map(queue_to_pb);
                }
                DeletedNode::CharDevice { rdev } => {
                    d.set_node(pb::DeletedNodeType::CharDevice);
                    d.rdev = *rdev;
                }
                DeletedNode::Directory => d.set_node(pb::DeletedNodeType::Directory),
            }
            Kind::DeletedFile(d)
        }
        FdKind::Eventfd { count, semaphore } => Kind::Eventfd(pb::Eventfd {
            count: *count,
            semaphore: *semaphore,
        }),
        FdKind::Signalfd { mask } => Kind::SignalfdMask(*mask),
        FdKind::Pidfd { pid } => Kind::PidfdPid(*pid),
        FdKind::Timerfd(t) => Kind::Timerfd(pb::Timerfd {
            clockid: t.clockid,
            settime_flags: t.settime_flags,
            value_ns: t.value_ns,
            interval_ns: t.interval_ns,
            ticks: t.ticks,
        }),
        FdKind::Inotify { watches } => Kind::Inotify(pb::Inotify {
            watches: watches
                .iter()
                .map(|w| pb::InotifyWatch {
                    wd: w.wd,
                    mask: w.mask,
                    file: Some(file_ref_to_pb(&w.file)),
                })
                .collect(),
        }),
        FdKind::Fanotify(g) => Kind::Fanotify(pb::Fanotify {
            flags: g.flags,
            event_flags: g.event_flags,
            marks: g
                .marks
                .iter()
                .map(|m| pb::FanotifyMark {
                    target: Some(match &m.target {
                        FanotifyTarget::Inode(f) => {
                            pb::fanotify_mark::Target::Inode(file_ref_to_pb(f))
                        }
                        FanotifyTarget::Mount { path } => {
                            pb::fanotify_mark::Target::Mount(path.clone())
                        }
                        FanotifyTarget::Filesystem { path } => {
                            pb::fanotify_mark::Target::Filesystem(path.clone())
                        }
                    }),
                    mflags: m.mflags,
                    mask: m.mask,
                    ignored_mask: m.ignored_mask,
                })
                .collect(),
        }),
        FdKind::Memfd { ino, pos } => Kind::Memfd(pb::MemfdFd {
            ino: *ino,
            pos: *pos,
        }),
        FdKind::Shared { pid, fd } => Kind::Shared(pb::SharedFd { pid: *pid, fd: *fd }),
    };
    pb::Fd {
        fd: f.fd,
        cloexec: f.cloexec,
        flags: f.flags,
        kind: Some(kind),
        owner_type: f.owner.kind,
        owner_pid: f.owner.pid,
        signal: f.owner.sig,
    }
}

pub(crate) fn queue_to_pb(q: &PipeQueue) -> pb::PipeQueue {
    pb::PipeQueue {
        size: q.size,
        data: q.data.clone(),
    }
}

fn lock_to_pb(l: &LockState) -> pb::Lock {
    let kind = match l.kind {
        LockKind::Flock => pb::LockKind::Flock,
        LockKind::Posix => pb::LockKind::Posix,
        LockKind::Ofd => pb::LockKind::Ofd,
        LockKind::Lease => pb::LockKind::Lease,
    };
    pb::Lock {
        fd: l.fd,
        kind: kind.into(),
        write: l.write,
        start: l.start,
        len: l.len,
    }
}

fn lock_from_pb(i: usize, l: pb::Lock) -> Result<LockState, ManifestError> {
    let kind = match pb::LockKind::try_from(l.kind) {
        Ok(pb::LockKind::Flock) => LockKind::Flock,
        Ok(pb::LockKind::Posix) => LockKind::Posix,
        Ok(pb::LockKind::Ofd) => LockKind::Ofd,
        Ok(pb::LockKind::Lease) => LockKind::Lease,
        Ok(pb::LockKind::Unspecified) | Err(_) => {
            return Err(err(
                format!("locks[{i}].kind"),
                ManifestProblem::UnknownEnum(l.kind),
            ));
        }
    };
    Ok(LockState {
        fd: l.fd,
        kind,
        write: l.write,
        start: l.start,
        len: l.len,
    })
}

fn sigaction_to_pb(a: &SigactionState) -> pb::Sigaction {
    pb::Sigaction {
        signo: a.signo,
        handler: a.handler,
        flags: a.flags,
        restorer: a.restorer,
        mask: a.mask,
    }
}

fn siginfo_to_pb(s: &SiginfoState) -> pb::Siginfo {
    pb::Siginfo {
        signo: s.signo,
        raw: s.raw.clone(),
    }
}

fn thread_to_pb(t: &ThreadState) -> pb::Thread {
    pb::Thread {
        tid: t.tid,
        regs: Some(regs_to_pb(&t.regs)),
        xstate: t.xstate.clone(),
        sigmask: t.sigmask,
        pending: t.pending.iter().map(siginfo_to_pb).collect(),
        rseq: t.rseq.map(|r| pb::Rseq {
            ptr: r.ptr,
            len: r.len,
            sig: r.sig,
        }),
        robust_list: Some(pb::RobustList {
            head: t.robust_list.0,
            len: t.robust_list.1,
        }),
        clear_child_tid: t.clear_child_tid,
        sigaltstack: Some(pb::Sigaltstack {
            sp: t.sigaltstack.sp,
            flags: t.sigaltstack.flags,
            size: t.sigaltstack.size,
        }),
        sched: Some(pb::Sched {
            nice: t.sched.nice,
            policy: t.sched.policy,
            rt_priority: t.sched.rt_priority,
            affinity: t.sched.affinity.clone(),
            reset_on_fork: t.sched.reset_on_fork,
        }),
        seccomp: Some(pb::Seccomp {
            mode: t.seccomp.mode,
            filters: t.seccomp.filters.clone(),
        }),
        cgroups: t
            .cgroups
            .iter()
            .map(|c| pb::Cgroup {
                hierarchy: c.hierarchy,
                controllers: c.controllers.clone(),
                path: c.path.clone(),
            })
            .collect(),
        attrs: t.attrs.as_ref().map(|a| pb::ThreadAttrs {
            comm: a.comm.clone(),
            ioprio: a.ioprio,
            timer_slack_ns: a.timer_slack_ns,
            tsc: a.tsc,
            mce_kill: a.mce_kill,
            securebits: a.securebits,
        }),
    }
}

/// Copies every register field between the model and the message; one list so the two
/// directions cannot drift apart.
macro_rules! regs_fields {
    ($from:expr, $to:ident) => {
        $to {
            r15: $from.r15,
            r14: $from.r14,
            r13: $from.r13,
            r12: $from.r12,
            rbp: $from.rbp,
            rbx: $from.rbx,
            r11: $from.r11,
            r10: $from.r10,
            r9: $from.r9,
            r8: $from.r8,
            rax: $from.rax,
            rcx: $from.rcx,
            rdx: $from.rdx,
            rsi: $from.rsi,
            rdi: $from.rdi,
            orig_rax: $from.orig_rax,
            rip: $from.rip,
            cs: $from.cs,
            eflags: $from.eflags,
            rsp: $from.rsp,
            ss: $from.ss,
            fs_base: $from.fs_base,
            gs_base: $from.gs_base,
            ds: $from.ds,
            es: $from.es,
            fs: $from.fs,
            gs: $from.gs,
        }
    };
}

fn attrs_to_pb(a: &AttrsState) -> pb::Attrs {
    pb::Attrs {
        no_new_privs: a.no_new_privs,
        caps: a.caps.to_vec(),
        dumpable: a.dumpable,
        pdeathsig: a.pdeathsig,
        child_subreaper: a.child_subreaper,
        oom_score_adj: a.oom_score_adj,
        stop_signal: a.stop_signal,
        membarrier: a.membarrier,
        loginuid: a.loginuid,
        sessionid: a.sessionid,
        shares_with_parent: a.shares_with_parent,
        cgroups: a
            .cgroups
            .iter()
            .map(|c| pb::Cgroup {
                hierarchy: c.hierarchy,
                controllers: c.controllers.clone(),
                path: c.path.clone(),
            })
            .collect(),
        itimers: a
            .itimers
            .iter()
            .map(|t| pb::Itimer {
                which: t.which,
                interval_us: t.interval_us,
                value_us: t.value_us,
            })
            .collect(),
        posix_timers: a
            .posix_timers
            .iter()
            .map(|t| pb::PosixTimer {
                id: t.id,
                clock: t.clock,
                signo: t.signo,
                value: t.value,
                notify: t.notify,
                notify_tid: t.notify_tid,
                interval_ns: t.interval_ns,
                value_ns: t.value_ns,
                overrun: t.overrun,
            })
            .collect(),
        ctty: a.ctty.as_ref().map(|c| pb::Ctty {
            rdev: c.rdev,
            path: c.path.clone(),
            fg_pgid: c.fg_pgid,
        }),
        coredump_filter: a.coredump_filter,
    }
}

/// Attributes are optional in the manifest: an image without them restores with defaults.
fn attrs_from_pb(a: Option<pb::Attrs>) -> Result<AttrsState, ManifestError> {
    let Some(a) = a else {
        return Ok(AttrsState::default());
    };
    cap_count("attrs.cgroups", a.cgroups.len(), MAX_CGROUPS)?;
    cap_count("attrs.itimers", a.itimers.len(), 3)?;
    cap_count("attrs.posix_timers", a.posix_timers.len(), MAX_POSIX_TIMERS)?;
    let caps: [u64; 5] = match a.caps.len() {
        0 => [0; 5],
        n => a.caps.try_into().map_err(|_| {
            err(
                "attrs.caps",
                ManifestProblem::OutOfRange {
                    value: n as i128,
                    min: 5,
                    max: 5,
                },
            )
        })?,
    };
    Ok(AttrsState {
        no_new_privs: a.no_new_privs,
        caps,
        dumpable: a.dumpable,
        pdeathsig: a.pdeathsig,
        child_subreaper: a.child_subreaper,
        oom_score_adj: a.oom_score_adj,
        stop_signal: a.stop_signal,
        membarrier: a.membarrier,
        loginuid: a.loginuid,
        sessionid: a.sessionid,
        shares_with_parent: a.shares_with_parent,
        cgroups: a
            .cgroups
            .into_iter()
            .map(|c| CgroupState {
                hierarchy: c.hierarchy,
                controllers: c.controllers,
                path: c.path,
            })
            .collect(),
        itimers: a
            .itimers
            .into_iter()
            .map(|t| ItimerState {
                which: t.which,
                interval_us: t.interval_us,
                value_us: t.value_us,
            })
            .collect(),
        posix_timers: a
            .posix_timers
            .into_iter()
            .map(|t| PosixTimerState {
                id: t.id,
                clock: t.clock,
                signo: t.signo,
                value: t.value,
                notify: t.notify,
                notify_tid: t.notify_tid,
                interval_ns: t.interval_ns,
                value_ns: t.value_ns,
                overrun: t.overrun,
            })
            .collect(),
        ctty: a.ctty.map(|c| CttyState {
            rdev: c.rdev,
            path: c.path,
            fg_pgid: c.fg_pgid,
        }),
        coredump_filter: a.coredump_filter,
    })
}

fn sched_from_pb(field: &str, s: Option<pb::Sched>) -> Result<SchedState, ManifestError> {
    let Some(s) = s else {
        return Ok(SchedState::default());
    };
    cap_count(
        &format!("{field}.sched.affinity"),
        s.affinity.len(),
        MAX_AFFINITY_WORDS,
    )?;
    Ok(SchedState {
        nice: s.nice,
        policy: s.policy,
        rt_priority: s.rt_priority,
        reset_on_fork: s.reset_on_fork,
        affinity: s.affinity,
    })
}

fn regs_to_pb(r: &Regs) -> pb::Regs {
    use pb::Regs as Out;
    regs_fields!(r, Out)
}

fn regs_from_pb(r: &pb::Regs) -> Regs {
    regs_fields!(r, Regs)
}

// Protobuf -> model: structure first, then `validate`.

impl TryFrom<pb::Manifest> for ProcessState {
    type Error = ManifestError;

    fn try_from(m: pb::Manifest) -> Result<Self, ManifestError> {
        process_from_pb(required(m.process, || "process".into())?)
    }
}

impl TryFrom<pb::Manifest> for TreeState {
    type Error = ManifestError;

    fn try_from(m: pb::Manifest) -> Result<Self, ManifestError> {
        cap_count("more", m.more.len(), MAX_PROCESSES)?;
        cap_count("zombies", m.zombies.len(), MAX_PROCESSES)?;
        let mut processes = Vec::with_capacity(1 + m.more.len());
        processes.push(process_from_pb(required(m.process, || "process".into())?)?);
        for (i, p) in m.more.into_iter().enumerate() {
            processes.push(process_from_pb(p).map_err(|mut e| {
                e.field = format!("more[{i}].{}", e.field);
                e
            })?);
        }
        let tree = TreeState {
            processes,
            zombies: m
                .zombies
                .into_iter()
                .map(|z| ZombieState {
                    pid: z.pid,
                    ppid: z.ppid,
                    pgid: z.pgid,
                    sid: z.sid,
                    status: z.status,
                })
                .collect(),
        };
        validate_tree(&tree)?;
        Ok(tree)
    }
}

fn process_from_pb(p: pb::ProcessState) -> Result<ProcessState, ManifestError> {
    // Count caps come before any per-entry work so a huge list costs nothing more.
    cap_count("rlimits", p.rlimits.len(), RLIM_NLIMITS as usize)?;
    cap_count("fds", p.fds.len(), MAX_FDS)?;
    cap_count("threads", p.threads.len(), MAX_THREADS)?;
    cap_count("memfds", p.memfds.len(), MAX_MEMFDS)?;
    let extents: usize = p.memfds.iter().map(|m| m.extents.len()).sum();
    cap_count("memfds[*].extents", extents, MAX_MEMFD_EXTENTS)?;
    cap_count("carried_files", p.carried_files.len(), MAX_CARRIED_FILES)?;
    let extents: usize = p.carried_files.iter().map(|c| c.extents.len()).sum();
    cap_count("carried_files[*].extents", extents, MAX_MEMFD_EXTENTS)?;
    let mut carried_files = Vec::with_capacity(p.carried_files.len());
    for (i, c) in p.carried_files.into_iter().enumerate() {
        cap_count(&format!("carried_files[{i}].dirs"), c.dirs.len(), 64)?;
        carried_files.push(CarriedFile {
            file: file_ref_from_pb(c.file, || format!("carried_files[{i}].file"))?,
            mode: c.mode,
            uid: c.uid,
            gid: c.gid,
            extents: c
                .extents
                .into_iter()
                .map(|e| MemfdExtent {
                    offset: e.offset,
                    data: e.data,
                })
                .collect(),
            dirs: c
                .dirs
                .into_iter()
                .map(|d| CarriedDir {
                    path: d.path,
                    mode: d.mode,
                    uid: d.uid,
                    gid: d.gid,
                })
                .collect(),
        });
    }
    cap_count("mapped_deleted", p.mapped_deleted.len(), MAX_MEMFDS)?;
    let extents: usize = p.mapped_deleted.iter().map(|m| m.extents.len()).sum();
    cap_count("mapped_deleted[*].extents", extents, MAX_MEMFD_EXTENTS)?;
    let mapped_deleted = p
        .mapped_deleted
        .into_iter()
        .map(|m| MappedDeletedFile {
            ino: m.ino,
            path: m.path,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            size: m.size,
            mtime_ns: m.mtime_ns,
            extents: m
                .extents
                .into_iter()
                .map(|e| MemfdExtent {
                    offset: e.offset,
                    data: e.data,
                })
                .collect(),
        })
        .collect();
    cap_count("sysv_shm", p.sysv_shm.len(), MAX_SYSV_SHM)?;
    let extents: usize = p.sysv_shm.iter().map(|m| m.extents.len()).sum();
    cap_count("sysv_shm[*].extents", extents, MAX_MEMFD_EXTENTS)?;
    cap_count("locks", p.locks.len(), MAX_LOCKS)?;
    let mm = required(p.mm, || "mm".into())?;
    let signals = required(p.signals, || "signals".into())?;
    let creds = required(p.creds, || "creds".into())?;
    let state = ProcessState {
        pid: p.pid,
        ppid: p.ppid,
        pgid: p.pgid,
        sid: p.sid,
        comm: p.comm,
        exe: file_ref_from_pb(p.exe, || "exe".into())?,
        creds: CredsState {
            uids: [creds.ruid, creds.euid, creds.suid, creds.fsuid],
            gids: [creds.rgid, creds.egid, creds.sgid, creds.fsgid],
            groups: creds.groups,
        },
        umask: p.umask,
        cwd: p.cwd,
        personality: p.personality,
        rlimits: p
            .rlimits
            .into_iter()
            .map(|r| RlimitState {
                resource: r.resource,
                cur: r.cur,
                max: r.max,
            })
            .collect(),
        mm: mm_from_pb(mm)?,
        fds: p
            .fds
            .into_iter()
            .enumerate()
            .map(|(i, f)| fd_from_pb(i, f))
            .collect::<Result<_, _>>()?,
        signals: signals_from_pb(signals)?,
        threads: p
            .threads
            .into_iter()
            .enumerate()
            .map(|(i, t)| thread_from_pb(i, t))
            .collect::<Result<_, _>>()?,
        attrs: attrs_from_pb(p.attrs)?,
        locks: p
            .locks
            .into_iter()
            .enumerate()
            .map(|(i, l)| lock_from_pb(i, l))
            .collect::<Result<_, _>>()?,
        memfds: p.memfds.into_iter().map(memfd_from_pb).collect(),
        sysv_shm: p.sysv_shm.into_iter().map(sysv_shm_from_pb).collect(),
        // Images from before the field: the host's root.
        root: if p.root.is_empty() {
            "/".to_string()
        } else {
            p.root
        },
        ipc_ns: p.ipc_ns.map(ipc_ns_from_pb).transpose()?,
        carried_files,
        cwd_removed: p.cwd_removed.map(|d| CarriedDir {
            path: d.path,
            mode: d.mode,
            uid: d.uid,
            gid: d.gid,
        }),
        mapped_deleted,
    };
    validate(&state)?;
    Ok(state)
}

fn file_ref_from_pb(
    f: Option<pb::FileRef>,
    field: impl Fn() -> String,
) -> Result<FileRef, ManifestError> {
    let f = required(f, &field)?;
    let i = required(f.identity, || format!("{}.identity", field()))?;
    Ok(FileRef {
        path: f.path,
        identity: identity_from_pb(i),
    })
}

fn mm_from_pb(m: pb::Mm) -> Result<MmState, ManifestError> {
    cap_count("mm.vmas", m.vmas.len(), MAX_VMAS)?;
    let runs: usize = m.vmas.iter().map(|v| v.pages.len()).sum();
    cap_count("mm.vmas[*].pages", runs, MAX_PAGE_RUNS)?;
    cap_count("mm.auxv", m.auxv.len(), MAX_AUXV_WORDS)?;
    cap_count("mm.aio_rings", m.aio_rings.len(), MAX_AIO_RINGS)?;
    let vmas = m
        .vmas
        .into_iter()
        .enumerate()
        .map(|(i, v)| vma_from_pb(i, v))
        .collect::<Result<_, _>>()?;
    Ok(MmState {
        vmas,
        start_code: m.start_code,
        end_code: m.end_code,
        start_data: m.start_data,
        end_data: m.end_data,
        start_brk: m.start_brk,
        brk: m.brk,
        start_stack: m.start_stack,
        arg_start: m.arg_start,
        arg_end: m.arg_end,
        env_start: m.env_start,
        env_end: m.env_end,
        auxv: m.auxv,
        lock_future: m.lock_future,
        thp_disable: m.thp_disable,
        merge_any: m.merge_any,
        aio_rings: m
            .aio_rings
            .into_iter()
            .map(|r| AioRingState {
                start: r.start,
                len: r.len,
                id: r.id,
                nr: r.nr,
                head: r.head,
                tail: r.tail,
                magic: r.magic,
                compat_features: r.compat_features,
                incompat_features: r.incompat_features,
                header_length: r.header_length,
                events: r.events,
            })
            .collect(),
    })
}

fn vma_from_pb(i: usize, v: pb::Vma) -> Result<VmaState, ManifestError> {
    let field = || format!("mm.vmas[{i}]");
    let kind = pb::VmaKind::try_from(v.kind).map_err(|_| {
        err(
            format!("{}.kind", field()),
            ManifestProblem::UnknownEnum(v.kind),
        )
    })?;
    let simple = |k: VmaKind, name: &'static str| match &v.file {
        None => Ok(k),
        Some(_) => Err(err(
            format!("{}.file", field()),
            ManifestProblem::FileAgainstKind {
                kind: name,
                present: true,
            },
        )),
    };
    let kind = match kind {
        pb::VmaKind::Unspecified => {
            return Err(err(
                format!("{}.kind", field()),
                ManifestProblem::UnknownEnum(v.kind),
            ));
        }
        pb::VmaKind::Anonymous => simple(VmaKind::Anonymous, "anonymous")?,
        pb::VmaKind::Heap => simple(VmaKind::Heap, "heap")?,
        pb::VmaKind::Stack => simple(VmaKind::Stack, "stack")?,
        pb::VmaKind::SharedAnonymous => simple(
            VmaKind::SharedAnonymous {
                ino: v.shmem_ino,
                size: v.shmem_size,
            },
            "shared anonymous",
        )?,
        pb::VmaKind::SysvShm => simple(VmaKind::SysvShm { id: v.sysv_shm_id }, "sysv shm")?,
        pb::VmaKind::Vdso => simple(VmaKind::Vdso, "vdso")?,
        pb::VmaKind::Vvar => simple(VmaKind::Vvar, "vvar")?,
        pb::VmaKind::VvarVclock => simple(VmaKind::VvarVclock, "vvar_vclock")?,
        pb::VmaKind::Vsyscall => simple(VmaKind::Vsyscall, "vsyscall")?,
        pb::VmaKind::AioRing => simple(VmaKind::AioRing, "aio ring")?,
        pb::VmaKind::Memfd => simple(VmaKind::Memfd { ino: v.memfd_ino }, "memfd")?,
        pb::VmaKind::File => {
            if v.file.is_none() {
                return Err(err(
                    format!("{}.file", field()),
                    ManifestProblem::FileAgainstKind {
                        kind: "file",
                        present: false,
                    },
                ));
            }
            VmaKind::File(file_ref_from_pb(v.file, || format!("{}.file", field()))?)
        }
        pb::VmaKind::DeletedFile => {
            let f = file_ref_from_pb(v.file, || format!("{}.file", field()))?;
            VmaKind::DeletedFile {
                path: f.path,
                ino: f.identity.ino,
            }
        }
    };
    Ok(VmaState {
        start: v.start,
        end: v.end,
        prot: v.prot,
        shared: v.shared,
        pgoff: v.pgoff,
        kind,
        growsdown: v.growsdown,
        maywrite: v.maywrite,
        flags: v.flags,
        cow_shared_kb: v.cow_shared_kb,
        inherited: v
            .inherited
            .into_iter()
            .map(|r| PageRun {
                start: r.start,
                count: r.count,
            })
            .collect(),
        precopied: v
            .precopied
            .into_iter()
            .map(|r| PageRun {
                start: r.start,
                count: r.count,
            })
            .collect(),
        pages: v
            .pages
            .into_iter()
            .map(|r| PageRun {
                start: r.start,
                count: r.count,
            })
            .collect(),
    })
}

fn fd_from_pb(i: usize, f: pb::Fd) -> Result<FdState, ManifestError> {
    use pb::fd::Kind;
    let field = || format!("fds[{i}]");
    let kind = match required(f.kind, || format!("{}.kind", field()))? {
        Kind::File(o) => FdKind::File {
            file: file_ref_from_pb(o.file, || format!("{}.file.file", field()))?,
            pos: o.pos,
        },
        Kind::Directory(o) => FdKind::Directory {
            file: file_ref_from_pb(o.file, || format!("{}.directory.file", field()))?,
            pos: o.pos,
        },
        Kind::CharDevice(r) => FdKind::CharDevice {
            file: file_ref_from_pb(Some(r), || format!("{}.char_device", field()))?,
        },
        Kind::Tty(r) => FdKind::Tty {
            file: file_ref_from_pb(Some(r), || format!("{}.tty", field()))?,
        },
        Kind::PtyMaster(p) => {
            let t = p.termios.unwrap_or_default();
            let small = |name: &str, v: u32| {
                u16::try_from(v).map_err(|_| {
                    err(
                        format!("{}.pty_master.{name}", field()),
                        ManifestProblem::OutOfRange {
                            value: v.into(),
                            min: 0,
                            max: u16::MAX.into(),
                        },
                    )
                })
            };
            FdKind::PtyMaster(PtyState {
                index: p.index,
                termios: Termios {
                    iflag: t.iflag,
                    oflag: t.oflag,
                    cflag: t.cflag,
                    lflag: t.lflag,
                    line: u8::try_from(t.line).map_err(|_| {
                        err(
                            format!("{}.pty_master.termios.line", field()),
                            ManifestProblem::OutOfRange {
                                value: t.line.into(),
                                min: 0,
                                max: 255,
                            },
                        )
                    })?,
                    cc: t.cc,
                    ispeed: t.ispeed,
                    ospeed: t.ospeed,
                },
                winsize: [
                    small("rows", p.rows)?,
                    small("cols", p.cols)?,
                    small("xpixel", p.xpixel)?,
                    small("ypixel", p.ypixel)?,
                ],
                packet: p.packet,
                locked: p.locked,
                hangup: p.hangup,
                input: p.input,
                output: p.output,
            })
        }
        Kind::PtySlave(s) => FdKind::PtySlave {
            file: file_ref_from_pb(s.file, || format!("{}.pty_slave.file", field()))?,
            index: s.index,
        },
        Kind::Pipe(p) => FdKind::Pipe { ino: p.ino },
        Kind::Epoll(e) => {
            cap_count(
                &format!("{}.epoll.targets", field()),
                e.targets.len(),
                MAX_EPOLL_TARGETS,
            )?;
            FdKind::Epoll {
                targets: e
                    .targets
                    .into_iter()
                    .map(|t| EpollTarget {
                        fd: t.fd,
                        events: t.events,
                        data: t.data,
                        file_fd: t.file_fd.unwrap_or(t.fd),
                        pending: t.pending,
                    })
                    .collect(),
            }
        }
        Kind::Socket(sock) => FdKind::Socket(Box::new(super::sockets::socket_from_pb(
            sock,
            &format!("{}.socket", field()),
        )?)),
        Kind::Dup(d) => FdKind::Dup { of: d.of },
        Kind::LocalPipe(p) => FdKind::LocalPipe {
            ino: p.ino,
            queue: p.queue.map(queue_from_pb),
        },
        Kind::Fifo(p) => FdKind::Fifo {
            file: file_ref_from_pb(p.file, || format!("{}.fifo.file", field()))?,
            queue: p.queue.map(queue_from_pb),
        },
        Kind::DeletedFile(d) => {
            let node = match pb::DeletedNodeType::try_from(d.node) {
                Ok(pb::DeletedNodeType::Regular) => {
                    cap_count(
                        &format!("{}.deleted_file.extents", field()),
                        d.extents.len(),
                        MAX_MEMFD_EXTENTS,
                    )?;
                    let mut extents: Vec<MemfdExtent> = d
                        .extents
                        .into_iter()
                        .map(|e| MemfdExtent {
                            offset: e.offset,
                            data: e.data,
                        })
                        .collect();
                    let mut size = d.size;
                    // An image from before extents: the whole contents in `data`.
                    if extents.is_empty() && !d.data.is_empty() {
                        size = d.data.len() as u64;
                        extents.push(MemfdExtent {
                            offset: 0,
                            data: d.data,
                        });
                    }
                    DeletedNode::Regular { size, extents }
                }
                Ok(pb::DeletedNodeType::Fifo) => DeletedNode::Fifo {
                    queue: d.queue.map(queue_from_pb),
                },
                Ok(pb::DeletedNodeType::CharDevice) => DeletedNode::CharDevice { rdev: d.rdev },
                Ok(pb::DeletedNodeType::Directory) => DeletedNode::Directory,
                Err(_) => {
                    return Err(err(
                        format!("{}.deleted_file.node", field()),
                        ManifestProblem::UnknownEnum(d.node),
                    ));
                }
            };
            FdKind::DeletedFile {
                path: d.path,
                ino: d.ino,
                mode: d.mode,
                uid: d.uid,
                gid: d.gid,
                pos: d.pos,
                atime_ns: d.atime_ns,
                mtime_ns: d.mtime_ns,
                node,
            }
        }
        Kind::Eventfd(e) => FdKind::Eventfd {
            count: e.count,
            semaphore: e.semaphore,
        },
        Kind::SignalfdMask(mask) => FdKind::Signalfd { mask },
        Kind::PidfdPid(pid) => FdKind::Pidfd { pid },
        Kind::Timerfd(t) => FdKind::Timerfd(TimerfdState {
            clockid: t.clockid,
            settime_flags: t.settime_flags,
            value_ns: t.value_ns,
            interval_ns: t.interval_ns,
            ticks: t.ticks,
        }),
        Kind::Inotify(n) => {
            let watches = format!("{}.inotify.watches", field());
            cap_count(&watches, n.watches.len(), MAX_INOTIFY_WATCHES)?;
            FdKind::Inotify {
                watches: n
                    .watches
                    .into_iter()
                    .enumerate()
                    .map(|(j, w)| {
                        Ok(InotifyWatch {
                            wd: w.wd,
                            mask: w.mask,
                            file: file_ref_from_pb(w.file, || format!("{watches}[{j}].file"))?,
                        })
                    })
                    .collect::<Result<_, ManifestError>>()?,
            }
        }
        Kind::Fanotify(g) => {
            let marks = format!("{}.fanotify.marks", field());
            cap_count(&marks, g.marks.len(), MAX_FANOTIFY_MARKS)?;
            FdKind::Fanotify(FanotifyState {
                flags: g.flags,
                event_flags: g.event_flags,
                marks: g
                    .marks
                    .into_iter()
                    .enumerate()
                    .map(|(j, m)| {
                        let target = match required(m.target, || format!("{marks}[{j}].target"))? {
                            pb::fanotify_mark::Target::Inode(f) => {
                                FanotifyTarget::Inode(file_ref_from_pb(Some(f), || {
                                    format!("{marks}[{j}].inode")
                                })?)
                            }
                            pb::fanotify_mark::Target::Mount(path) => {
                                FanotifyTarget::Mount { path }
                            }
                            pb::fanotify_mark::Target::Filesystem(path) => {
                                FanotifyTarget::Filesystem { path }
                            }
                        };
                        Ok(FanotifyMark {
                            target,
                            mflags: m.mflags,
                            mask: m.mask,
                            ignored_mask: m.ignored_mask,
                        })
                    })
                    .collect::<Result<_, ManifestError>>()?,
            })
        }
        Kind::Memfd(m) => FdKind::Memfd {
            ino: m.ino,
            pos: m.pos,
        },
        Kind::Shared(d) => FdKind::Shared {
            pid: d.pid,
            fd: d.fd,
        },
    };
    Ok(FdState {
        fd: f.fd,
        cloexec: f.cloexec,
        flags: f.flags,
        kind,
        owner: crate::state::FdOwner {
            kind: f.owner_type,
            pid: f.owner_pid,
            sig: f.signal,
        },
    })
}

pub(crate) fn queue_from_pb(q: pb::PipeQueue) -> PipeQueue {
    PipeQueue {
        size: q.size,
        data: q.data,
    }
}

fn memfd_from_pb(m: pb::Memfd) -> MemfdState {
    MemfdState {
        ino: m.ino,
        name: m.name,
        mode: m.mode,
        size: m.size,
        seals: m.seals,
        extents: m
            .extents
            .into_iter()
            .map(|e| MemfdExtent {
                offset: e.offset,
                data: e.data,
            })
            .collect(),
    }
}

fn signals_from_pb(s: pb::Signals) -> Result<SignalsState, ManifestError> {
    cap_count("signals.actions", s.actions.len(), 64)?;
    cap_count(
        "signals.shared_pending",
        s.shared_pending.len(),
        MAX_PENDING,
    )?;
    Ok(SignalsState {
        actions: s
            .actions
            .into_iter()
            .map(|a| SigactionState {
                signo: a.signo,
                handler: a.handler,
                flags: a.flags,
                restorer: a.restorer,
                mask: a.mask,
            })
            .collect(),
        shared_pending: s.shared_pending.into_iter().map(siginfo_from_pb).collect(),
    })
}

fn siginfo_from_pb(s: pb::Siginfo) -> SiginfoState {
    SiginfoState {
        signo: s.signo,
        raw: s.raw,
    }
}

fn thread_from_pb(i: usize, t: pb::Thread) -> Result<ThreadState, ManifestError> {
    let field = || format!("threads[{i}]");
    cap_count(
        &format!("{}.pending", field()),
        t.pending.len(),
        MAX_PENDING,
    )?;
    let regs = required(t.regs, || format!("{}.regs", field()))?;
    let robust = required(t.robust_list, || format!("{}.robust_list", field()))?;
    let alt = required(t.sigaltstack, || format!("{}.sigaltstack", field()))?;
    cap_count(
        &format!("{}.cgroups", field()),
        t.cgroups.len(),
        MAX_CGROUPS,
    )?;
    Ok(ThreadState {
        tid: t.tid,
        regs: regs_from_pb(&regs),
        xstate: t.xstate,
        sigmask: t.sigmask,
        pending: t.pending.into_iter().map(siginfo_from_pb).collect(),
        rseq: t.rseq.map(|r| RseqState {
            ptr: r.ptr,
            len: r.len,
            sig: r.sig,
        }),
        robust_list: (robust.head, robust.len),
        clear_child_tid: t.clear_child_tid,
        sigaltstack: SigaltstackState {
            sp: alt.sp,
            flags: alt.flags,
            size: alt.size,
        },
        sched: sched_from_pb(&field(), t.sched)?,
        seccomp: t
            .seccomp
            .map(|s| SeccompState {
                mode: s.mode,
                filters: s.filters,
            })
            .unwrap_or_default(),
        cgroups: t
            .cgroups
            .into_iter()
            .map(|c| CgroupState {
                hierarchy: c.hierarchy,
                controllers: c.controllers,
                path: c.path,
            })
            .collect(),
        attrs: t.attrs.map(|a| ThreadAttrsState {
            comm: a.comm,
            ioprio: a.ioprio,
            timer_slack_ns: a.timer_slack_ns,
            tsc: a.tsc,
            mce_kill: a.mce_kill,
            securebits: a.securebits,
        }),
    })
}
