//! Round trips, corruption and truncation of images, and manifest validation.

use std::io::Cursor;

use ferry_proto::image::v1 as pb;
use prost::Message;

use super::format::{
    END_PAYLOAD_LEN, EndPayload, FileHeader, SECTION_HEADER_LEN, SectionFields, SectionKind,
    section_digest,
};
use super::*;
use crate::state::*;

/// Deterministic xorshift generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn file(path: &str, ino: u64) -> FileRef {
    FileRef {
        path: path.into(),
        identity: FileIdentity {
            dev: 0x803,
            ino,
            mode: 0o100644,
            size: 4096 * ino,
            mtime_ns: 1_700_000_000_123_456_789,
            rdev: 0,
        },
    }
}

fn siginfo(signo: u32) -> SiginfoState {
    let mut raw = vec![0u8; 128];
    raw[0..4].copy_from_slice(&signo.to_le_bytes());
    raw[8..12].copy_from_slice(&(-6i32).to_le_bytes());
    raw[16..20].copy_from_slice(&1234u32.to_le_bytes());
    SiginfoState { signo, raw }
}

fn vma(start: u64, pages: u64, kind: VmaKind, runs: &[(u64, u64)]) -> VmaState {
    VmaState {
        start,
        end: start + pages * PAGE_SIZE,
        prot: prot::READ | prot::WRITE,
        shared: matches!(
            kind,
            VmaKind::SharedAnonymous { .. } | VmaKind::SysvShm { .. }
        ),
        pgoff: 0,
        kind,
        growsdown: false,
        maywrite: true,
        flags: 0,
        cow_shared_kb: 0,
        inherited: Vec::new(),
        precopied: Vec::new(),
        pages: runs
            .iter()
            .map(|&(off, count)| PageRun {
                start: start + off * PAGE_SIZE,
                count,
            })
            .collect(),
    }
}

/// A checkpoint with every kind of VMA and fd, pending signals and a full thread, whose page
/// stream holds `heap_pages + 7` pages.
fn rich_state(heap_pages: u64) -> ProcessState {
    let mut exe_vma = vma(
        0x5555_5555_4000,
        4,
        VmaKind::File(file("/usr/bin/victim", 11)),
        &[(1, 1)],
    );
    exe_vma.prot = prot::READ | prot::EXEC;
    exe_vma.pgoff = 0x2000;
    let mut guard = vma(0x7f00_0000_0000, 16, VmaKind::Anonymous, &[]);
    guard.prot = 0;
    let mut stack = vma(0x7ffd_0000_0000, 32, VmaKind::Stack, &[(28, 4)]);
    stack.growsdown = true;
    stack.flags = vmflag::LOCKED | vmflag::LOCKONFAULT | vmflag::DONTDUMP;
    guard.flags = vmflag::DONTFORK | vmflag::NOHUGEPAGE;
    let mut vdso = vma(0x7ffd_1000_6000, 2, VmaKind::Vdso, &[]);
    vdso.prot = prot::READ | prot::EXEC;
    let vsyscall = VmaState {
        start: 0xffff_ffff_ff60_0000,
        end: 0xffff_ffff_ff60_1000,
        prot: prot::EXEC,
        shared: false,
        pgoff: 0,
        kind: VmaKind::Vsyscall,
        growsdown: false,
        maywrite: false,
        flags: 0,
        cow_shared_kb: 0,
        inherited: Vec::new(),
        precopied: Vec::new(),
        pages: vec![],
    };
    let heap_runs = [
        (0, heap_pages.div_ceil(2)),
        (heap_pages.div_ceil(2) + 3, heap_pages / 2),
    ];
    let heap_runs: Vec<(u64, u64)> = heap_runs.into_iter().filter(|r| r.1 > 0).collect();
    let mut regs = Regs::default();
    for (i, r) in [
        &mut regs.r15,
        &mut regs.rax,
        &mut regs.orig_rax,
        &mut regs.rip,
        &mut regs.rsp,
        &mut regs.fs_base,
        &mut regs.gs,
    ]
    .into_iter()
    .enumerate()
    {
        *r = 0x1111_1111 * (i as u64 + 1);
    }
    ProcessState {
        pid: 4242,
        ppid: 1,
        pgid: 4242,
        sid: 4000,
        comm: "victim".into(),
        exe: file("/usr/bin/victim", 11),
        creds: CredsState {
            uids: [1000, 1000, 1000, 1000],
            gids: [100, 100, 100, 100],
            groups: vec![100, 24, 27],
        },
        umask: 0o022,
        cwd: "/home/user".into(),
        personality: 0,
        rlimits: vec![
            RlimitState {
                resource: 7,
                cur: 1024,
                max: 4096,
            },
            RlimitState {
                resource: 3,
                cur: 8 << 20,
                max: u64::MAX,
            },
        ],
        mm: MmState {
            vmas: vec![
                exe_vma,
                vma(0x5555_5560_0000, heap_pages + 8, VmaKind::Heap, &heap_runs),
                vma(
                    0x7eff_0000_0000,
                    4,
                    VmaKind::SharedAnonymous {
                        ino: 1229,
                        size: 6 * PAGE_SIZE,
                    },
                    &[(0, 1), (2, 1)],
                ),
                vma(0x7eff_0001_0000, 2, VmaKind::SysvShm { id: 3 }, &[]),
                guard,
                vma(
                    0x7f00_1000_0000,
                    8,
                    VmaKind::File(file("/usr/lib/libc.so.6", 12)),
                    &[],
                ),
                stack,
                vma(0x7ffd_1000_0000, 4, VmaKind::Vvar, &[]),
                vma(0x7ffd_1000_4000, 2, VmaKind::VvarVclock, &[]),
                vdso,
                vsyscall,
            ],
            start_code: 0x5555_5555_4000,
            end_code: 0x5555_5555_6000,
            start_data: 0x5555_5555_7000,
            end_data: 0x5555_5555_8000,
            start_brk: 0x5555_5560_0000,
            brk: 0x5555_5560_8000,
            start_stack: 0x7ffd_0001_f000,
            arg_start: 0x7ffd_0001_f100,
            arg_end: 0x7ffd_0001_f180,
            env_start: 0x7ffd_0001_f180,
            env_end: 0x7ffd_0001_fff0,
            auxv: vec![33, 0x7ffd_1000_6000, 6, 4096, 0, 0],
            lock_future: (libc::MCL_FUTURE | libc::MCL_ONFAULT) as u32,
            thp_disable: 3,
            merge_any: true,
            aio_rings: Vec::new(),
        },
        fds: vec![
            FdState {
                owner: Default::default(),
                fd: 0,
                cloexec: false,
                flags: 2,
                kind: FdKind::Tty {
                    file: file("/dev/pts/3", 6),
                },
            },
            FdState {
                owner: Default::default(),
                fd: 1,
                cloexec: false,
                flags: 1,
                kind: FdKind::Pipe { ino: 998877 },
            },
            FdState {
                owner: Default::default(),
                fd: 2,
                cloexec: false,
                flags: 0o2001,
                kind: FdKind::File {
                    file: file("/tmp/log", 13),
                    pos: 12345,
                },
            },
            FdState {
                owner: Default::default(),
                fd: 3,
                cloexec: true,
                flags: 0o200000,
                kind: FdKind::Directory {
                    file: file("/etc", 2),
                    pos: 77,
                },
            },
            FdState {
                owner: Default::default(),
                fd: 4,
                cloexec: true,
                flags: 2,
                kind: FdKind::CharDevice {
                    file: file("/dev/urandom", 9),
                },
            },
            FdState {
                owner: Default::default(),
                fd: 9,
                cloexec: true,
                flags: 2,
                kind: FdKind::Epoll {
                    targets: vec![
                        EpollTarget {
                            fd: 3,
                            events: 1,
                            data: 42,
                            file_fd: 3,
                            pending: false,
                        },
                        EpollTarget {
                            fd: 4,
                            events: 0x8000_0001,
                            data: u64::MAX,
                            file_fd: 3,
                            pending: true,
                        },
                    ],
                },
            },
            FdState {
                owner: Default::default(),
                fd: 10,
                cloexec: false,
                flags: 0o4000,
                kind: FdKind::LocalPipe {
                    ino: 5555,
                    queue: Some(PipeQueue {
                        size: 65536,
                        data: b"queued\0bytes".to_vec(),
                    }),
                },
            },
            FdState {
                owner: Default::default(),
                fd: 11,
                cloexec: true,
                flags: 1,
                kind: FdKind::LocalPipe {
                    ino: 5555,
                    queue: None,
                },
            },
            FdState {
                owner: Default::default(),
                fd: 12,
                cloexec: true,
                flags: 0o4000,
                kind: FdKind::Dup { of: 10 },
            },
            FdState {
                owner: Default::default(),
                fd: 13,
                cloexec: false,
                flags: 0,
                kind: FdKind::Fifo {
                    file: file("/tmp/fifo", 21),
                    queue: Some(PipeQueue {
                        size: 4096,
                        data: vec![7; 100],
                    }),
                },
            },
            FdState {
                owner: Default::default(),
                fd: 14,
                cloexec: false,
                flags: 0o2002,
                kind: FdKind::DeletedFile {
                    path: "/tmp/gone".into(),
                    ino: 77,
                    mode: 0o640,
                    uid: 1000,
                    gid: 100,
                    pos: 3,
                    atime_ns: 1_000_000_000_123,
                    mtime_ns: -5,
                    node: DeletedNode::Regular {
                        size: 1 << 20,
                        extents: vec![
                            MemfdExtent {
                                offset: 0,
                                data: (0..5000u32).map(|i| i as u8).collect(),
                            },
                            MemfdExtent {
                                offset: 1 << 19,
                                data: vec![9; 4096],
                            },
                        ],
                    },
                },
            },
            FdState {
                owner: Default::default(),
                fd: 20,
                cloexec: false,
                flags: 0o4002,
                kind: FdKind::Eventfd {
                    count: 1 << 40,
                    semaphore: true,
                },
            },
            FdState {
                owner: Default::default(),
                fd: 21,
                cloexec: true,
                flags: 2,
                kind: FdKind::Signalfd { mask: 0x4200 },
            },
            FdState {
                owner: Default::default(),
                fd: 22,
                cloexec: false,
                flags: 2,
                kind: FdKind::Timerfd(TimerfdState {
                    clockid: 0,
                    settime_flags: 3,
                    value_ns: 1_700_000_000_123_456_789,
                    interval_ns: 250_000_000,
                    ticks: 3,
                }),
            },
            FdState {
                owner: Default::default(),
                fd: 23,
                cloexec: false,
                flags: 0o4000,
                kind: FdKind::Inotify {
                    watches: vec![
                        InotifyWatch {
                            wd: 1,
                            mask: 0x300,
                            file: file("/tmp", 4),
                        },
                        InotifyWatch {
                            wd: 2,
                            mask: 2,
                            file: file("/etc/passwd", 5),
                        },
                    ],
                },
            },
            FdState {
                owner: Default::default(),
                fd: 24,
                cloexec: false,
                flags: 0o100002,
                kind: FdKind::Memfd { ino: 1035, pos: 3 },
            },
            FdState {
                owner: Default::default(),
                fd: 25,
                cloexec: false,
                flags: 0o2,
                kind: FdKind::DeletedFile {
                    path: "/tmp/gone-fifo".into(),
                    ino: 78,
                    mode: 0o620,
                    uid: 0,
                    gid: 0,
                    pos: 0,
                    atime_ns: 1,
                    mtime_ns: 2,
                    node: DeletedNode::Fifo {
                        queue: Some(PipeQueue {
                            size: 65536,
                            data: b"queued".to_vec(),
                        }),
                    },
                },
            },
            FdState {
                owner: Default::default(),
                fd: 26,
                cloexec: true,
                flags: 0o2,
                kind: FdKind::DeletedFile {
                    path: "/tmp/gone-zero".into(),
                    ino: 79,
                    mode: 0o640,
                    uid: 0,
                    gid: 0,
                    pos: 0,
                    atime_ns: 3,
                    mtime_ns: 4,
                    node: DeletedNode::CharDevice { rdev: 0x105 },
                },
            },
            FdState {
                owner: Default::default(),
                fd: 27,
                cloexec: false,
                flags: 0o200000,
                kind: FdKind::DeletedFile {
                    path: "/tmp/gone-dir".into(),
                    ino: 80,
                    mode: 0o750,
                    uid: 0,
                    gid: 0,
                    pos: 0,
                    atime_ns: 5,
                    mtime_ns: 6,
                    node: DeletedNode::Directory,
                },
            },
        ],
        locks: vec![
            LockState {
                fd: 2,
                kind: LockKind::Flock,
                write: true,
                start: 0,
                len: 0,
            },
            LockState {
                fd: 2,
                kind: LockKind::Posix,
                write: false,
                start: 10,
                len: 5,
            },
            LockState {
                fd: 14,
                kind: LockKind::Ofd,
                write: true,
                start: 0,
                len: 0,
            },
            LockState {
                fd: 14,
                kind: LockKind::Lease,
                write: false,
                start: 0,
                len: 0,
            },
        ],
        signals: SignalsState {
            actions: (1..=64)
                .filter(|s| *s != 9 && *s != 19)
                .map(|signo| SigactionState {
                    signo,
                    handler: if signo == 10 { 0x5555_5555_5123 } else { 0 },
                    flags: 0x0400_0000,
                    restorer: 0x7f00_1000_1230,
                    mask: 1 << 1,
                })
                .collect(),
            shared_pending: vec![siginfo(10), siginfo(34)],
        },
        threads: vec![ThreadState {
            tid: 4242,
            regs,
            xstate: (0..2696u32).map(|i| (i * 7) as u8).collect(),
            sigmask: 1 << 13,
            pending: vec![siginfo(12)],
            rseq: Some(RseqState {
                ptr: 0x7f00_1000_2000,
                len: 32,
                sig: 0x5305_3053,
            }),
            robust_list: (0x7f00_1000_3000, 24),
            clear_child_tid: 0x7f00_1000_3010,
            sigaltstack: SigaltstackState {
                sp: 0x7f00_0000_1000,
                flags: 2,
                size: 8192,
            },
            sched: SchedState {
                nice: 5,
                policy: 0,
                rt_priority: 0,
                reset_on_fork: true,
                affinity: vec![0b1011],
            },
            seccomp: SeccompState {
                mode: 2,
                filters: vec![vec![6, 0, 0, 0, 0, 0, 0xff, 0x7f]],
            },
            cgroups: vec![CgroupState {
                hierarchy: 3,
                controllers: "pids".into(),
                path: "/alone".into(),
            }],
            attrs: Some(crate::state::ThreadAttrsState {
                comm: "worker-1".into(),
                ioprio: (2 << 13) | 6,
                timer_slack_ns: 123_457,
                tsc: 2,
                mce_kill: 1,
                securebits: 0x2f,
            }),
        }],
        memfds: vec![MemfdState {
            ino: 1035,
            name: "hello world".into(),
            mode: 0o777,
            size: 1 << 20,
            seals: 4,
            extents: vec![
                MemfdExtent {
                    offset: 0,
                    data: b"abc".to_vec(),
                },
                MemfdExtent {
                    offset: 8192,
                    data: vec![7; 4096],
                },
            ],
        }],
        attrs: AttrsState {
            no_new_privs: true,
            caps: [0, 0x1ff, 0x1ff, 0x1ff_ffff_ffff, 0],
            dumpable: 1,
            pdeathsig: 0,
            child_subreaper: true,
            oom_score_adj: 500,
            loginuid: Some(1000),
            sessionid: Some(3),
            cgroups: vec![CgroupState {
                hierarchy: 4,
                controllers: "cpu,cpuacct".into(),
                path: "/ferry".into(),
            }],
            itimers: vec![ItimerState {
                which: 0,
                interval_us: 20_000,
                value_us: 7_000,
            }],
            posix_timers: vec![PosixTimerState {
                id: 3,
                clock: 1,
                signo: 34,
                value: 9,
                notify: 4,
                notify_tid: 4242,
                interval_ns: 10_000_000,
                value_ns: 3_000_000,
                overrun: 2,
            }],
            ctty: Some(CttyState {
                rdev: 0x8803,
                path: "/dev/pts/3".into(),
                fg_pgid: 4242,
            }),
            stop_signal: 20,
            membarrier: 16 | 256,
            shares_with_parent: libc::CLONE_FS as u32,
            coredump_filter: Some(0x7f),
        },
        cwd_removed: Some(CarriedDir {
            path: "/tmp/gone-wd".into(),
            mode: 0o751,
            uid: 7,
            gid: 8,
        }),
        mapped_deleted: vec![crate::state::MappedDeletedFile {
            ino: 4711,
            path: "/dev/shm/gone".into(),
            mode: 0o640,
            uid: 1000,
            gid: 100,
            size: 3 * PAGE_SIZE,
            mtime_ns: 1_700_000_000_123_456_789,
            extents: vec![MemfdExtent {
                offset: PAGE_SIZE,
                data: vec![7; 100],
            }],
        }],
        carried_files: vec![CarriedFile {
            file: FileRef {
                path: "/tmp/hsperfdata_u/42".into(),
                identity: FileIdentity {
                    dev: 2049,
                    ino: 99,
                    mode: 0o100600,
                    size: 32768,
                    mtime_ns: 1_700_000_000_000_000_001,
                    rdev: 0,
                },
            },
            mode: 0o600,
            uid: 1000,
            gid: 1000,
            extents: vec![MemfdExtent {
                offset: 4096,
                data: vec![3; 100],
            }],
            dirs: vec![CarriedDir {
                path: "/tmp/hsperfdata_u".into(),
                mode: 0o755,
                uid: 1000,
                gid: 1000,
            }],
        }],
        root: "/srv/jail".into(),
        ipc_ns: Some(crate::state::IpcNsState {
            sysctls: vec![
                ("kernel/msgmnb".into(), "12000".into()),
                ("kernel/sem".into(), "250 32000 100 128".into()),
            ],
            msg_queues: vec![crate::state::MsgQueueState {
                perm: crate::state::IpcPermState {
                    id: 32768,
                    key: 0x4647,
                    mode: 0o620,
                    uid: 1000,
                    gid: 100,
                    cuid: 1000,
                    cgid: 100,
                },
                qbytes: 9000,
                lspid: crate::state::IPC_PID_OTHER,
                lrpid: 4242,
                messages: vec![crate::state::SysvMsgState {
                    mtype: 7,
                    text: b"queued".to_vec(),
                }],
            }],
            sem_sets: vec![crate::state::SemSetState {
                perm: crate::state::IpcPermState {
                    id: 0,
                    key: 0,
                    mode: 0o600,
                    ..Default::default()
                },
                values: vec![5, 2, 9],
                pids: vec![4242, 4242, crate::state::IPC_PID_OTHER],
            }],
            sem_undo: vec![crate::state::SemUndoState {
                id: 0,
                adj: vec![0, -2, 0],
            }],
        }),
        sysv_shm: vec![SysvShmState {
            id: 3,
            key: 0x4646,
            mode: 0o600,
            size: 3 * PAGE_SIZE - 100,
            uid: 1000,
            gid: 100,
            cuid: 0,
            cgid: 0,
            removed: true,
            extents: vec![MemfdExtent {
                offset: 2 * PAGE_SIZE,
                data: vec![9; PAGE_SIZE as usize - 100],
            }],
        }],
    }
}

fn total_pages(s: &ProcessState) -> u64 {
    s.mm.vmas.iter().map(|v| v.stored_pages()).sum()
}

/// Page contents that look like a heap: mostly compressible, some random, some sparse.
fn realistic_pages(pages: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = vec![0u8; (pages * PAGE_SIZE) as usize];
    let words: [&[u8]; 8] = [
        b"object ",
        b"refcount ",
        b"0x7f00 ",
        b"name=",
        b"value ",
        b"\x00\x00\x00\x00",
        b"list ",
        b"None ",
    ];
    for page in out.chunks_mut(PAGE_SIZE as usize) {
        match rng.below(10) {
            // Incompressible.
            0 => page.iter_mut().for_each(|b| *b = rng.next() as u8),
            // Sparse: a few pointers in a mostly zero page.
            1 | 2 => {
                for _ in 0..8 {
                    let at = rng.below(PAGE_SIZE / 8) as usize * 8;
                    page[at..at + 8]
                        .copy_from_slice(&(0x7f00_0000_0000 + rng.below(1 << 20)).to_le_bytes());
                }
            }
            // Structured: words and pointer-like values.
            _ => {
                let mut i = 0;
                while i < page.len() {
                    if rng.below(3) == 0 {
                        let v = (0x5555_5560_0000 + rng.below(1 << 16) * 16).to_le_bytes();
                        let n = v.len().min(page.len() - i);
                        page[i..i + n].copy_from_slice(&v[..n]);
                        i += n;
                    } else {
                        let w = words[rng.below(words.len() as u64) as usize];
                        let n = w.len().min(page.len() - i);
                        page[i..i + n].copy_from_slice(&w[..n]);
                        i += n;
                    }
                }
            }
        }
    }
    out
}

/// Writes an image, feeding the pages in uneven chunks.
fn write_image(state: &ProcessState, pages: &[u8], codec: Codec) -> (Vec<u8>, WriteStats) {
    let mut w = ImageWriter::new(Vec::new(), state, codec).expect("writer");
    let mut rest = pages;
    let mut n = 1usize;
    while !rest.is_empty() {
        let take = (n * PAGE_SIZE as usize).min(rest.len());
        let (now, later) = rest.split_at(take);
        w.write_pages(now).expect("write pages");
        rest = later;
        n = n * 3 % 700 + 1;
    }
    w.finish().expect("finish")
}

/// Reads a whole image: the state and the concatenated pages.
fn read_image(bytes: &[u8]) -> Result<(ProcessState, Vec<u8>), ReadImageError> {
    let mut r = ImageReader::open(Cursor::new(bytes))?;
    let mut pages = Vec::new();
    while let Some(block) = r.next_pages()? {
        assert!(block.page_count() > 0 && block.page_count() <= BLOCK_PAGES);
        assert_eq!(block.first_page(), pages.len() as u64 / PAGE_SIZE);
        pages.extend_from_slice(&block.to_raw());
        // Exercise both fresh and recycled buffers.
        if pages.len() % (2 * BLOCK_BYTES) != 0 {
            r.recycle(block);
        }
    }
    // The end is sticky.
    assert!(r.next_pages()?.is_none());
    Ok((r.state().clone(), pages))
}

/// The offset of the section an error names, if it names one.
fn error_offset(e: &ReadImageError) -> Option<u64> {
    match e {
        ReadImageError::Io { offset, .. }
        | ReadImageError::Truncated { offset, .. }
        | ReadImageError::Defect { offset, .. } => Some(*offset),
        ReadImageError::BadMagic
        | ReadImageError::UnsupportedVersion { .. }
        | ReadImageError::UnsupportedArch { .. } => Some(0),
        _ => None,
    }
}

/// Offset of the section holding byte `at` (the header counts as offset 0).
fn section_at(summary: &ImageSummary, at: u64) -> u64 {
    summary
        .sections
        .iter()
        .rev()
        .find(|s| s.offset <= at)
        .map_or(0, |s| s.offset)
}

/// Pages that compress to almost nothing, to keep images small for byte-by-byte tests.
fn tiny_pages(pages: u64, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity((pages * PAGE_SIZE) as usize);
    for i in 0..pages {
        let word = (i * 0x9e37_79b9 + seed).to_le_bytes();
        for _ in 0..PAGE_SIZE / 8 {
            out.extend_from_slice(&word);
        }
    }
    out
}

fn small_image(codec: Codec) -> (ProcessState, Vec<u8>, Vec<u8>) {
    // Three blocks: 256 + 256 + the rest.
    let state = rich_state(600 - 7);
    let pages = tiny_pages(total_pages(&state), 7);
    let (image, _) = write_image(&state, &pages, codec);
    (state, pages, image)
}

#[test]
fn round_trip_every_codec() {
    let state = rich_state(1000);
    let pages = realistic_pages(total_pages(&state), 1);
    for codec in [Codec::Zstd, Codec::Lz4, Codec::None] {
        let (image, stats) = write_image(&state, &pages, codec);
        assert_eq!(stats.pages, total_pages(&state));
        assert_eq!(stats.raw_bytes, pages.len() as u64);
        assert_eq!(stats.image_bytes, image.len() as u64);
        let (got_state, got_pages) = read_image(&image).expect("read back");
        assert_eq!(got_state, state, "{codec}");
        assert!(got_pages == pages, "{codec}: pages differ");

        let summary = inspect(Cursor::new(&image)).expect("inspect");
        assert_eq!(summary.process, state);
        assert_eq!(summary.image_bytes, image.len() as u64);
        let blocks = total_pages(&state).div_ceil(BLOCK_PAGES);
        assert_eq!(summary.sections.len() as u64, blocks + 2);
        assert_eq!(summary.sections[0].kind, "manifest");
        assert_eq!(summary.sections.last().map(|s| s.kind), Some("end"));
        if codec == Codec::None {
            assert!(image.len() > pages.len());
        } else {
            assert!(
                image.len() < pages.len() / 2,
                "{codec}: {} bytes",
                image.len()
            );
            assert!(summary.sections.iter().any(|s| s.codec == codec));
        }
        let json = serde_json::to_string(&summary).expect("json");
        assert!(json.contains("\"digest\":\"blake3\""), "{json}");
    }
}

#[test]
fn a_memfd_mapping_round_trips() {
    let mut state = rich_state(0);
    let mut m = vma(0x7f00_2000_0000, 4, VmaKind::Memfd { ino: 1035 }, &[]);
    m.shared = true;
    state.mm.vmas.insert(5, m);
    state.mm.vmas.sort_by_key(|v| v.start);
    let pages = tiny_pages(total_pages(&state), 3);
    let (image, _) = write_image(&state, &pages, Codec::Zstd);
    let (got, _) = read_image(&image).expect("read back");
    assert_eq!(got, state);

    // A mapping of a memfd the image does not hold is refused.
    let mut bad = pb::Manifest::from(&state);
    let vmas = &mut bad.process.as_mut().unwrap().mm.as_mut().unwrap().vmas;
    let i = vmas.iter().position(|v| v.memfd_ino == 1035).unwrap();
    vmas[i].memfd_ino = 7;
    let (field, problem) = manifest_error(&bad);
    assert_eq!(field, format!("mm.vmas[{i}].memfd_ino"));
    assert!(problem.contains("not in memfds"), "{problem}");
}

#[test]
fn round_trip_without_pages() {
    let mut state = rich_state(0);
    for v in &mut state.mm.vmas {
        v.pages.clear();
    }
    let (image, stats) = write_image(&state, &[], Codec::Zstd);
    assert_eq!(stats.pages, 0);
    let (got, pages) = read_image(&image).expect("read back");
    assert_eq!(got, state);
    assert!(pages.is_empty());
}

/// A mapping of a deleted file names its carried file, and both come back; a mapping whose
/// file the image does not carry is refused.
#[test]
fn deleted_mapped_files_round_trip() {
    let mut state = rich_state(0);
    for v in &mut state.mm.vmas {
        v.pages.clear();
    }
    let libc = state
        .mm
        .vmas
        .iter_mut()
        .find(|v| matches!(v.kind, VmaKind::File(_)))
        .unwrap();
    libc.kind = VmaKind::DeletedFile {
        path: "/dev/shm/gone".into(),
        ino: 4711,
    };
    let (image, _) = write_image(&state, &[], Codec::Zstd);
    let (got, _) = read_image(&image).expect("read back");
    assert_eq!(got, state);
    state.mapped_deleted.clear();
    let e = super::validate::validate(&state).expect_err("an unknown deleted file");
    assert!(e.field.ends_with(".file.identity.ino"), "{e:?}");
}

#[test]
fn zero_pages_are_not_stored() {
    let state = rich_state(600);
    let total = total_pages(&state);
    // Every other page zero, the rest incompressible: with no codec, only the non-zero pages
    // and a bit per page reach the image.
    let mut rng = Rng(7);
    let mut pages = vec![0u8; (total * PAGE_SIZE) as usize];
    for (i, page) in pages.chunks_exact_mut(PAGE_SIZE as usize).enumerate() {
        if i % 2 == 1 {
            page.iter_mut().for_each(|b| *b = rng.next() as u8);
        }
    }
    let (image, stats) = write_image(&state, &pages, Codec::None);
    assert_eq!(stats.zero_pages, total.div_ceil(2));
    let stored = (total / 2) * PAGE_SIZE;
    assert!(
        stats.image_bytes < stored + 64 * 1024,
        "{} bytes for {stored} bytes of pages",
        stats.image_bytes
    );
    assert_eq!(read_image(&image).expect("read").1, pages);
}

#[test]
fn incompressible_blocks_are_stored_as_is() {
    let state = rich_state(300);
    let mut rng = Rng(99);
    let pages: Vec<u8> = (0..total_pages(&state) * PAGE_SIZE)
        .map(|_| rng.next() as u8)
        .collect();
    let (image, _) = write_image(&state, &pages, Codec::Zstd);
    let summary = inspect(Cursor::new(&image)).expect("inspect");
    assert!(
        summary.sections[1..summary.sections.len() - 1]
            .iter()
            .all(|s| s.codec == Codec::None && s.stored_size == s.raw_size)
    );
    assert!(read_image(&image).expect("read").1 == pages);
}

#[test]
fn bad_magic_is_refused() {
    let (_, _, mut image) = small_image(Codec::Zstd);
    image[0] = b'X';
    let e = read_image(&image).expect_err("bad magic");
    assert!(matches!(e, ReadImageError::BadMagic), "{e}");
    assert!(e.to_string().contains("bad magic"));
    let e = ImageReader::open(Cursor::new(b"#!/bin/sh\necho hi\n")).expect_err("script");
    assert!(matches!(e, ReadImageError::BadMagic), "{e}");
}

#[test]
fn other_versions_are_refused() {
    let (_, _, image) = small_image(Codec::Zstd);
    for (major, minor) in [(1u16, 1u16), (2, 2), (3, 0), (0, 9)] {
        let mut bad = image.clone();
        bad[8..10].copy_from_slice(&major.to_le_bytes());
        bad[10..12].copy_from_slice(&minor.to_le_bytes());
        let e = read_image(&bad).expect_err("version");
        assert_eq!(
            e.to_string(),
            format!(
                "image section \"header\" at offset 0: unsupported image version \
                 {major}.{minor} (this ferry reads 1.0 to 2.1)"
            )
        );
    }
    let mut bad = image.clone();
    bad[12..14].copy_from_slice(&183u16.to_le_bytes());
    let e = read_image(&bad).expect_err("arch");
    assert!(
        matches!(e, ReadImageError::UnsupportedArch { arch: 183 }),
        "{e}"
    );
}

#[test]
fn pages_filled_in_place_round_trip_and_bad_commits_are_refused() {
    // Small (one block, sealed on the caller's thread) and large (workers) images.
    for extra in [0u64, 40, 900] {
        let state = rich_state(extra);
        let pages = realistic_pages(total_pages(&state), 3);
        for codec in [Codec::Lz4, Codec::Zstd, Codec::None] {
            let mut w = ImageWriter::new(Vec::new(), &state, codec).expect("writer");
            let mut rest = pages.as_slice();
            let mut n = 5usize;
            while !rest.is_empty() {
                let room = w.page_room();
                assert!(!room.is_empty() && room.len() <= BLOCK_BYTES);
                let take = (n * PAGE_SIZE as usize).min(rest.len()).min(room.len());
                room[..take].copy_from_slice(&rest[..take]);
                w.commit_pages(take).expect("commit");
                rest = &rest[take..];
                n = n * 7 % 300 + 1;
            }
            let (image, stats) = w.finish().expect("finish");
            assert_eq!(stats.pages * PAGE_SIZE, pages.len() as u64);
            let (read, read_pages) = read_image(&image).expect("read");
            assert_eq!(read, state);
            assert!(read_pages == pages, "{codec}: pages differ");
        }
    }
    let state = rich_state(10);
    let mut w = ImageWriter::new(Vec::new(), &state, Codec::Lz4).expect("writer");
    let e = w.commit_pages(100).expect_err("unaligned");
    assert!(
        e.to_string().contains("not a multiple of the page size"),
        "{e}"
    );
    let e = w
        .commit_pages(BLOCK_BYTES + PAGE_SIZE as usize)
        .expect_err("beyond the block");
    assert!(matches!(e, WriteImageError::BeyondRoom { .. }), "{e}");
    let too_many = (total_pages(&state) + 1) as usize * PAGE_SIZE as usize;
    let mut committed = 0;
    let e = loop {
        let room = w.page_room().len();
        match w.commit_pages(room.min(too_many - committed)) {
            Ok(()) => committed += room,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(e, WriteImageError::PageCountMismatch { .. }),
        "{e}"
    );
}

/// Rewrites an image as version 1 wrote it: the same sections, digested with SHA-256.
fn as_version_1(image: &[u8]) -> Vec<u8> {
    use super::format::{DigestAlg, SECTION_FIELDS_LEN, section_digest_with};
    let mut out = image.to_vec();
    out[8..10].copy_from_slice(&1u16.to_le_bytes());
    let mut header = [0u8; 16];
    header.copy_from_slice(&out[..16]);
    let mut chain = super::format::Chain::new(&header);
    let mut at = 16;
    while at < out.len() {
        let mut fields = [0u8; SECTION_FIELDS_LEN];
        fields.copy_from_slice(&out[at..at + SECTION_FIELDS_LEN]);
        let kind = u32::from_le_bytes(fields[0..4].try_into().expect("4 bytes"));
        let stored = u64::from_le_bytes(fields[24..32].try_into().expect("8 bytes")) as usize;
        let start = at + SECTION_HEADER_LEN;
        if kind == 3 {
            let value = chain.value();
            out[start + 16..start + 48].copy_from_slice(&value);
        }
        let d = section_digest_with(DigestAlg::Sha256, &fields, &out[start..start + stored]);
        out[at + SECTION_FIELDS_LEN..start].copy_from_slice(&d);
        chain.push(&d);
        at = start + stored;
    }
    out
}

#[test]
fn version_1_images_digested_with_sha256_are_still_read() {
    for codec in [Codec::Zstd, Codec::Lz4, Codec::None] {
        let (state, pages, image) = small_image(codec);
        let old = as_version_1(&image);
        let (read, read_pages) = read_image(&old).expect("version 1 image");
        assert_eq!(read, state);
        assert_eq!(read_pages, pages);
        let summary = inspect(Cursor::new(&old)).expect("inspect");
        assert_eq!(
            (summary.version.as_str(), summary.digest),
            ("1.0", "sha256")
        );
        // A version 2 image merely relabelled: its BLAKE3 digests are not SHA-256 ones.
        let mut relabelled = image.clone();
        relabelled[8..10].copy_from_slice(&1u16.to_le_bytes());
        let e = read_image(&relabelled).expect_err("relabelled");
        assert!(
            e.to_string()
                .starts_with("image section \"manifest\" at offset 16: digest mismatch"),
            "{e}"
        );
        // A corrupt block of a version 1 image is refused by its SHA-256, naming it.
        let mut bad = old.clone();
        let block = summary.sections[1].offset as usize + SECTION_HEADER_LEN;
        bad[block + 5] ^= 0x40;
        let e = read_image(&bad).expect_err("corrupt v1 block");
        assert!(
            e.to_string().contains("pages block 0") && e.to_string().contains("digest mismatch"),
            "{e}"
        );
    }
}

#[test]
fn a_flipped_byte_anywhere_is_detected_and_named() {
    for codec in [Codec::Zstd, Codec::Lz4, Codec::None] {
        let (_, _, image) = small_image(codec);
        let summary = inspect(Cursor::new(&image)).expect("inspect");
        // Every 7th byte over the compressed images; a sample over the large uncompressed one.
        let step = if codec == Codec::None { 4999 } else { 7 };
        let mut checked = 0;
        let mut at = 0usize;
        while at < image.len() {
            let bit = 1u8 << (at % 8);
            let mut bad = image.clone();
            bad[at] ^= bit;
            let e = match read_image(&bad) {
                Ok(_) => panic!("{codec}: flip {bit:#x} at {at} went unnoticed"),
                Err(e) => e,
            };
            assert_eq!(
                error_offset(&e),
                Some(section_at(&summary, at as u64)),
                "{codec}: flip at {at}: {e}"
            );
            checked += 1;
            at += step;
        }
        assert!(checked > 20, "{codec}: only {checked} flips");
    }
}

#[test]
fn a_truncated_image_names_the_section() {
    let (_, _, image) = small_image(Codec::Zstd);
    let summary = inspect(Cursor::new(&image)).expect("inspect");
    let mut cuts: Vec<usize> = (0..image.len()).step_by(7).collect();
    for s in &summary.sections {
        let at = s.offset as usize;
        cuts.extend([
            at,
            at + 1,
            at + SECTION_HEADER_LEN,
            at + SECTION_HEADER_LEN + 1,
        ]);
    }
    cuts.push(image.len() - 1);
    for cut in cuts.into_iter().filter(|c| *c < image.len()) {
        let e = read_image(&image[..cut]).expect_err("truncated");
        let ReadImageError::Truncated { section, offset } = &e else {
            panic!("cut at {cut}: {e}");
        };
        // A cut on a section boundary is reported at the section that is missing.
        assert_eq!(
            *offset,
            section_at(&summary, cut as u64),
            "cut at {cut}: {e}"
        );
        assert!(
            e.to_string().starts_with("image truncated in section \""),
            "{e}"
        );
        if cut < FileHeader::CURRENT.encode().len() {
            assert_eq!(*section, Section::Header);
        }
    }
    // inspect also refuses data after the end.
    let mut long = image.clone();
    long.push(0);
    let e = inspect(Cursor::new(&long)).expect_err("trailing");
    assert!(
        e.to_string().contains("data follows the end section"),
        "{e}"
    );
}

/// Reassembles an image from the byte ranges of its sections in a new order.
fn splice(image: &[u8], summary: &ImageSummary, order: &[usize]) -> Vec<u8> {
    let bounds: Vec<(usize, usize)> = summary
        .sections
        .iter()
        .map(|s| {
            let start = s.offset as usize;
            (start, start + SECTION_HEADER_LEN + s.stored_size as usize)
        })
        .collect();
    let mut out = image[..bounds[0].0].to_vec();
    for &i in order {
        out.extend_from_slice(&image[bounds[i].0..bounds[i].1]);
    }
    out
}

#[test]
fn dropped_reordered_or_foreign_blocks_are_detected() {
    let (state, _, image) = small_image(Codec::Zstd);
    let summary = inspect(Cursor::new(&image)).expect("inspect");
    // Sections: 0 manifest, 1..=3 blocks, 4 end.
    assert_eq!(summary.sections.len(), 5);
    for (order, named) in [
        (vec![0, 2, 3, 4], "pages block 0"),
        (vec![0, 1, 3, 4], "pages block 1"),
        (vec![0, 1, 2, 4], "end"),
        (vec![0, 2, 1, 3, 4], "pages block 0"),
        (vec![0, 1, 3, 2, 4], "pages block 1"),
        (vec![0, 1, 2, 3, 3, 4], "pages block 3"),
        (vec![0, 1, 2, 3, 4, 4], ""),
        (vec![0, 4], "end"),
    ] {
        let bad = splice(&image, &summary, &order);
        if named.is_empty() {
            // A repeated end section is trailing data: the reader stops at the first.
            read_image(&bad).expect("reader stops at the end");
            inspect(Cursor::new(&bad)).expect_err("inspect sees trailing data");
            continue;
        }
        let e = read_image(&bad).expect_err("spliced");
        assert!(
            e.to_string().contains(&format!("\"{named}\"")),
            "{order:?}: {e}"
        );
    }

    // The same block positions from an image with other contents: each block is intact, only
    // the chain in the end section can tell.
    let other_pages = tiny_pages(total_pages(&state), 8);
    let (other, _) = write_image(&state, &other_pages, Codec::Zstd);
    let other_summary = inspect(Cursor::new(&other)).expect("inspect other");
    let s = &other_summary.sections[2];
    let foreign =
        &other[s.offset as usize..s.offset as usize + SECTION_HEADER_LEN + s.stored_size as usize];
    let mut bad = splice(&image, &summary, &[0, 1]);
    bad.extend_from_slice(foreign);
    let rest = splice(&image, &summary, &[3, 4]);
    bad.extend_from_slice(&rest[FileHeader::CURRENT.encode().len()..]);
    let e = read_image(&bad).expect_err("foreign block");
    assert_eq!(
        e.to_string(),
        format!(
            "image section \"end\" at offset {}: chain digest mismatch",
            bad.len() - SECTION_HEADER_LEN - END_PAYLOAD_LEN
        )
    );
}

#[test]
fn random_corruption_of_a_larger_image_never_passes() {
    let state = rich_state(3000);
    let pages = realistic_pages(total_pages(&state), 3);
    let (image, _) = write_image(&state, &pages, Codec::Zstd);
    let summary = inspect(Cursor::new(&image)).expect("inspect");
    let mut rng = Rng(0x5eed);
    for _ in 0..300 {
        let at = rng.below(image.len() as u64) as usize;
        let mut bad = image.clone();
        bad[at] ^= 1 << rng.below(8);
        let e = read_image(&bad).expect_err("corrupted");
        assert_eq!(
            error_offset(&e),
            Some(section_at(&summary, at as u64)),
            "at {at}: {e}"
        );
    }
    // Overwrite ranges with garbage.
    for _ in 0..50 {
        let at = rng.below(image.len() as u64) as usize;
        let len = (rng.below(64) as usize + 1).min(image.len() - at);
        let mut bad = image.clone();
        bad[at..at + len]
            .iter_mut()
            .for_each(|b| *b = rng.next() as u8);
        if bad == image {
            continue;
        }
        read_image(&bad).expect_err("garbage");
    }
}

/// Frames a manifest by hand, bypassing the writer's validation.
fn image_with_manifest(m: &pb::Manifest) -> Vec<u8> {
    image_with_raw_manifest(&m.encode_to_vec())
}

/// Frames manifest bytes by hand.
fn image_with_raw_manifest(payload: &[u8]) -> Vec<u8> {
    let header = FileHeader::CURRENT.encode();
    let mut chain = super::format::Chain::new(&header);
    let mut out = header.to_vec();
    let push = |out: &mut Vec<u8>, fields: SectionFields, payload: &[u8]| {
        let enc = fields.encode();
        let d = section_digest(&enc, payload);
        out.extend_from_slice(&enc);
        out.extend_from_slice(&d);
        out.extend_from_slice(payload);
        d
    };
    let len = payload.len() as u64;
    let d = push(
        &mut out,
        SectionFields {
            kind: SectionKind::Manifest,
            codec: Codec::None,
            seq: 0,
            raw_len: len,
            stored_len: len,
            first_page: 0,
            page_count: 0,
        },
        payload,
    );
    chain.push(&d);
    let end = EndPayload {
        total_pages: 0,
        blocks: 0,
        chain: chain.value(),
    };
    push(
        &mut out,
        SectionFields {
            kind: SectionKind::End,
            codec: Codec::None,
            seq: 1,
            raw_len: END_PAYLOAD_LEN as u64,
            stored_len: END_PAYLOAD_LEN as u64,
            first_page: 0,
            page_count: 0,
        },
        &end.encode(),
    );
    out
}

fn manifest_error(m: &pb::Manifest) -> (String, String) {
    let image = image_with_manifest(m);
    match ImageReader::open(Cursor::new(&image)) {
        Ok(_) => panic!("invalid manifest accepted"),
        Err(ReadImageError::Manifest(e)) => {
            let outer = ReadImageError::Manifest(e.clone()).to_string();
            assert_eq!(outer, "image section \"manifest\" is invalid");
            (e.field, e.problem.to_string())
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn the_hand_framed_manifest_is_readable() {
    let mut state = rich_state(0);
    for v in &mut state.mm.vmas {
        v.pages.clear();
    }
    let image = image_with_manifest(&pb::Manifest::from(&state));
    assert_eq!(read_image(&image).expect("valid").0, state);
}

#[test]
fn invalid_manifests_are_refused_naming_the_field() {
    let state = rich_state(10);
    let base = pb::Manifest::from(&state);
    type Edit = fn(&mut pb::ProcessState);
    let cases: Vec<(Edit, &str, &str)> = vec![
        (
            |p| p.mm.as_mut().unwrap().vmas[1].start += 1,
            "mm.vmas[1].start",
            "not page aligned",
        ),
        (
            |p| {
                let m = p.mm.as_mut().unwrap();
                m.vmas[2].start = m.vmas[1].end - PAGE_SIZE;
            },
            "mm.vmas[2].start",
            "before the previous entry ends",
        ),
        (
            |p| {
                let v = &mut p.mm.as_mut().unwrap().vmas[1];
                v.end = v.start;
            },
            "mm.vmas[1]",
            "empty or inverted",
        ),
        (
            |p| {
                let v = &mut p.mm.as_mut().unwrap().vmas[3];
                v.end = 0x8000_0000_0000;
            },
            "mm.vmas[3]",
            "above user space",
        ),
        (
            |p| {
                let v = &mut p.mm.as_mut().unwrap().vmas[10];
                v.start -= PAGE_SIZE;
            },
            "mm.vmas[10]",
            "not the kernel's",
        ),
        (
            |p| p.mm.as_mut().unwrap().vmas[1].pages[0].count = u64::MAX,
            "mm.vmas[1].pages[0]",
            "not inside the vma",
        ),
        (
            |p| p.mm.as_mut().unwrap().vmas[1].pages[1].start = 0x1000,
            "mm.vmas[1].pages[1]",
            "not inside the vma",
        ),
        (
            |p| p.mm.as_mut().unwrap().vmas[1].pages[1].count = 0,
            "mm.vmas[1].pages[1].count",
            "no pages",
        ),
        (
            |p| {
                let v = &mut p.mm.as_mut().unwrap().vmas[1];
                v.pages[1].start = v.pages[0].start;
            },
            "mm.vmas[1].pages[1].start",
            "before the previous entry ends",
        ),
        (
            |p| {
                p.mm.as_mut().unwrap().vmas[7].pages.push(pb::PageRun {
                    start: 0x7ffd_1000_0000,
                    count: 1,
                })
            },
            "mm.vmas[7].pages",
            "vvar",
        ),
        (
            |p| p.mm.as_mut().unwrap().vmas[0].kind = 99,
            "mm.vmas[0].kind",
            "unknown value 99",
        ),
        (
            |p| p.mm.as_mut().unwrap().vmas[0].file = None,
            "mm.vmas[0].file",
            "absent for a file",
        ),
        (
            |p| p.mm.as_mut().unwrap().vmas[1].prot = 8,
            "mm.vmas[1].prot",
            "bits outside",
        ),
        (
            |p| p.mm.as_mut().unwrap().vmas[1].flags = 1 << 11,
            "mm.vmas[1].flags",
            "bits outside",
        ),
        (
            |p| p.threads[0].attrs.as_mut().unwrap().securebits = 0x100,
            "threads[0].attrs.securebits",
            "is outside",
        ),
        (
            |p| p.mm.as_mut().unwrap().lock_future = 4,
            "mm.lock_future",
            "unknown value 4",
        ),
        (
            |p| p.mm.as_mut().unwrap().lock_future = 1,
            "mm.lock_future",
            "bits outside",
        ),
        (
            |p| p.mm.as_mut().unwrap().thp_disable = 2,
            "mm.thp_disable",
            "unknown value 2",
        ),
        (
            |p| p.mm.as_mut().unwrap().brk = 0,
            "mm.start_brk",
            "is above brk",
        ),
        (|p| p.mm.as_mut().unwrap().auxv.push(1), "mm.auxv", "pairs"),
        (
            |p| p.mm.as_mut().unwrap().auxv = vec![0; 2000],
            "mm.auxv",
            "more than 1024",
        ),
        (|p| p.fds[2].fd = 1, "fds[2].fd", "does not follow 1"),
        (|p| p.fds[0].fd = -1, "fds[0].fd", "outside 0..=1048576"),
        (|p| p.fds[1].kind = None, "fds[1].kind", "missing"),
        (
            |p| {
                if let Some(pb::fd::Kind::File(f)) = &mut p.fds[2].kind {
                    f.file.as_mut().unwrap().path = "relative/path".into();
                }
            },
            "fds[2].file.path",
            "not absolute",
        ),
        (
            |p| {
                if let Some(pb::fd::Kind::File(f)) = &mut p.fds[2].kind {
                    f.file.as_mut().unwrap().path = format!("/{}", "a".repeat(5000));
                }
            },
            "fds[2].file.path",
            "more than 4096",
        ),
        (
            |p| p.signals.as_mut().unwrap().actions[0].signo = 65,
            "signals.actions[0].signo",
            "outside 1..=64",
        ),
        (
            |p| p.signals.as_mut().unwrap().actions[1].signo = 1,
            "signals.actions[1].signo",
            "appears twice",
        ),
        (
            |p| p.signals.as_mut().unwrap().actions[0].signo = 9,
            "signals.actions[0].signo",
            "cannot have a disposition",
        ),
        (
            |p| {
                p.signals.as_mut().unwrap().shared_pending[1].raw.pop();
            },
            "signals.shared_pending[1].raw",
            "expected exactly 128",
        ),
        (
            |p| p.signals.as_mut().unwrap().shared_pending[0].signo = 11,
            "signals.shared_pending[0].raw",
            "differs from signo 11",
        ),
        (
            |p| p.threads[0].xstate = vec![0; 70_000],
            "threads[0].xstate",
            "more than 65536",
        ),
        (|p| p.threads[0].regs = None, "threads[0].regs", "missing"),
        (|p| p.threads[0].tid = 7, "threads[0].tid", "not the pid"),
        (|p| p.threads.clear(), "threads", "is empty"),
        (
            |p| {
                let t = p.threads[0].clone();
                p.threads.push(t);
            },
            "threads[*].tid",
            "appears twice",
        ),
        (|p| p.pid = 0, "pid", "outside 1..="),
        (|p| p.cwd = String::new(), "cwd", "not absolute"),
        (|p| p.comm = "a\0b".into(), "comm", "NUL"),
        (|p| p.umask = 0o1777, "umask", "bits outside"),
        (
            |p| p.creds.as_mut().unwrap().euid = u32::MAX,
            "creds.euid",
            "not a valid id",
        ),
        (
            |p| p.rlimits[0].cur = p.rlimits[0].max + 1,
            "rlimits[0]",
            "above hard limit",
        ),
        (
            |p| p.rlimits[1].resource = 7,
            "rlimits[1].resource",
            "appears twice",
        ),
        (
            |p| p.rlimits[1].resource = 16,
            "rlimits[1].resource",
            "outside 0..=15",
        ),
        (|p| p.exe = None, "exe", "missing"),
        (
            |p| p.exe.as_mut().unwrap().identity = None,
            "exe.identity",
            "missing",
        ),
        (|p| p.mm = None, "mm", "missing"),
        (
            |p| p.fds[15].kind = Some(pb::fd::Kind::Memfd(pb::MemfdFd { ino: 5, pos: 0 })),
            "fds[15].memfd.ino",
            "not in memfds",
        ),
        (
            |p| {
                let v = p.mm.as_mut().unwrap().vmas.iter_mut();
                for v in v.filter(|v| v.sysv_shm_id == 3) {
                    v.sysv_shm_id = 4;
                }
            },
            "mm.vmas[3].sysv_shm_id",
            "not in sysv_shm",
        ),
        (
            |p| p.sysv_shm[0].extents[0].offset = 3 * PAGE_SIZE,
            "sysv_shm[0].extents[0].offset",
            "outside 0..=12188",
        ),
        (
            |p| p.sysv_shm[0].mode = 0o1600,
            "sysv_shm[0].mode",
            "bits outside",
        ),
        (
            |p| p.sysv_shm[0].size = 0,
            "sysv_shm[0].size",
            "outside 1..",
        ),
        (
            |p| p.sysv_shm.push(p.sysv_shm[0].clone()),
            "sysv_shm[1].id",
            "appears twice",
        ),
        (|p| p.sysv_shm[0].id = -1, "sysv_shm[0].id", "outside 0.."),
        (|p| p.root = "jail".into(), "root", "not absolute"),
        (
            |p| p.ipc_ns.as_mut().unwrap().sysctls[0].name = "kernel/core_pattern".into(),
            "ipc_ns.sysctls[0].name",
            "not a sysctl of an IPC namespace",
        ),
        (
            |p| p.ipc_ns.as_mut().unwrap().sysctls[1].value = "250 32000 100".into(),
            "ipc_ns.sysctls[1].value",
            "is not 4 number(s)",
        ),
        (
            |p| p.ipc_ns.as_mut().unwrap().sysctls[0].value = "12000; rm".into(),
            "ipc_ns.sysctls[0].value",
            "is not 1 number(s)",
        ),
        (
            |p| {
                let ns = p.ipc_ns.as_mut().unwrap();
                ns.msg_queues.push(ns.msg_queues[0].clone());
            },
            "ipc_ns.msg_queues[1].perm.id",
            "appears twice",
        ),
        (
            |p| p.ipc_ns.as_mut().unwrap().msg_queues[0].messages[0].mtype = 0,
            "ipc_ns.msg_queues[0].messages[0].mtype",
            "outside 1..",
        ),
        (
            |p| p.ipc_ns.as_mut().unwrap().msg_queues[0].lspid = -2,
            "ipc_ns.msg_queues[0].lspid",
            "outside -1..",
        ),
        (
            |p| {
                let q = &mut p.ipc_ns.as_mut().unwrap().msg_queues[0];
                q.perm.as_mut().unwrap().mode = 0o1777;
            },
            "ipc_ns.msg_queues[0].perm.mode",
            "bits outside",
        ),
        (
            |p| p.ipc_ns.as_mut().unwrap().msg_queues[0].perm = None,
            "ipc_ns.msg_queues[0].perm",
            "missing",
        ),
        (
            |p| p.ipc_ns.as_mut().unwrap().sem_sets[0].values[1] = 40000,
            "ipc_ns.sem_sets[0].values[1]",
            "outside 0..=32767",
        ),
        (
            |p| {
                p.ipc_ns.as_mut().unwrap().sem_sets[0]
                    .pids
                    .pop()
                    .map(drop)
                    .unwrap_or(())
            },
            "ipc_ns.sem_sets[0].pids",
            "expected exactly 3",
        ),
        (
            |p| p.ipc_ns.as_mut().unwrap().sem_undo[0].id = 5,
            "ipc_ns.sem_undo[0].id",
            "not in ipc_ns.sem_sets",
        ),
        (
            |p| p.ipc_ns.as_mut().unwrap().sem_undo[0].adj[1] = -40000,
            "ipc_ns.sem_undo[0].adj[1]",
            "outside -32768..=32767",
        ),
        (
            |p| {
                p.sysv_shm[0].extents = vec![pb::MemfdExtent {
                    offset: 0,
                    data: vec![1; 33 << 20],
                }];
                p.sysv_shm[0].size = 64 << 20;
            },
            "sysv_shm[*].extents[*].data",
            "more than 33554432",
        ),
        (
            |p| p.memfds[0].extents[1].offset = 1,
            "memfds[0].extents[1].offset",
            "before the previous entry ends",
        ),
        (
            |p| p.memfds[0].extents[1].offset = (1 << 20) - 1,
            "memfds[0].extents[1].offset",
            "outside 0..=1048576",
        ),
        (
            |p| p.memfds[0].seals = 0x40,
            "memfds[0].seals",
            "bits outside",
        ),
        (
            |p| p.memfds[0].name = "x".repeat(250),
            "memfds[0].name",
            "more than 249",
        ),
        (
            |p| p.memfds.push(p.memfds[0].clone()),
            "memfds[1].ino",
            "appears twice",
        ),
        (
            |p| {
                p.memfds[0].extents = vec![pb::MemfdExtent {
                    offset: 0,
                    data: vec![1; 33 << 20],
                }];
                p.memfds[0].size = 64 << 20;
            },
            "memfds[*].extents[*].data",
            "more than 33554432",
        ),
        (
            |p| {
                if let Some(pb::fd::Kind::Timerfd(t)) = &mut p.fds[13].kind {
                    t.clockid = 3;
                }
            },
            "fds[13].timerfd.clockid",
            "unknown value 3",
        ),
        (
            |p| {
                if let Some(pb::fd::Kind::Eventfd(e)) = &mut p.fds[11].kind {
                    e.count = u64::MAX;
                }
            },
            "fds[11].eventfd.count",
            "outside",
        ),
        (
            |p| {
                if let Some(pb::fd::Kind::Inotify(n)) = &mut p.fds[14].kind {
                    n.watches[1].wd = 1;
                }
            },
            "fds[14].inotify.watches[1].wd",
            "does not follow",
        ),
        (
            |p| {
                if let Some(pb::fd::Kind::Inotify(n)) = &mut p.fds[14].kind {
                    n.watches[0].file = None;
                }
            },
            "fds[14].inotify.watches[0].file",
            "missing",
        ),
        (
            |p| p.fds[8].kind = Some(pb::fd::Kind::Dup(pb::Dup { of: 12 })),
            "fds[8].dup.of",
            "names fd 12",
        ),
        (
            |p| p.fds[8].kind = Some(pb::fd::Kind::Dup(pb::Dup { of: 7 })),
            "fds[8].dup.of",
            "names fd 7",
        ),
        (
            |p| {
                if let Some(pb::fd::Kind::LocalPipe(l)) = &mut p.fds[6].kind {
                    l.queue.as_mut().unwrap().size = 2;
                }
            },
            "fds[6].local_pipe.queue.data",
            "more than 2",
        ),
        (
            |p| p.fds[7].flags = 2,
            "fds[7].flags & O_ACCMODE",
            "outside 0..=1",
        ),
        (
            |p| {
                if let Some(pb::fd::Kind::DeletedFile(d)) = &mut p.fds[10].kind {
                    d.mode = 0o100644;
                }
            },
            "fds[10].deleted_file.mode",
            "bits outside",
        ),
        (
            |p| {
                if let Some(pb::fd::Kind::DeletedFile(d)) = &mut p.fds[10].kind {
                    d.extents[1].offset = 1 << 20;
                }
            },
            "fds[10].deleted_file.extents[1].offset",
            "outside",
        ),
        (
            |p| {
                if let Some(pb::fd::Kind::DeletedFile(d)) = &mut p.fds[10].kind {
                    d.node = 9;
                }
            },
            "fds[10].deleted_file.node",
            "unknown value 9",
        ),
        (
            |p| {
                if let Some(pb::fd::Kind::Fifo(f)) = &mut p.fds[9].kind {
                    f.file.as_mut().unwrap().path = "fifo".into();
                }
            },
            "fds[9].fifo.file.path",
            "not absolute",
        ),
        (
            |p| p.carried_files[0].dirs[0].path = "/var/other".into(),
            "carried_files[0].dirs[0].path",
            "not a parent",
        ),
        (
            |p| p.carried_files[0].extents[0].offset = 32760,
            "carried_files[0].extents[0].offset",
            "outside",
        ),
        (|p| p.locks[0].kind = 9, "locks[0].kind", "unknown value 9"),
        (|p| p.locks[1].fd = 12, "locks[1].fd", "names fd 12"),
        (|p| p.locks[1].start = u64::MAX, "locks[1].start", "outside"),
    ];
    for (edit, field, problem) in cases {
        let mut m = base.clone();
        edit(m.process.as_mut().unwrap());
        let (got_field, got_problem) = manifest_error(&m);
        assert_eq!(got_field, field, "{got_problem}");
        assert!(
            got_problem.contains(problem),
            "{field}: {got_problem:?} lacks {problem:?}"
        );
    }
    let e = manifest_error(&pb::Manifest {
        process: None,
        ..Default::default()
    });
    assert_eq!(e.0, "process");
}

#[test]
fn a_manifest_that_does_not_decode_is_refused() {
    // Valid framing around bytes that are not a manifest.
    let header = FileHeader::CURRENT.encode();
    let payload = vec![0xffu8; 40];
    let fields = SectionFields {
        kind: SectionKind::Manifest,
        codec: Codec::None,
        seq: 0,
        raw_len: 40,
        stored_len: 40,
        first_page: 0,
        page_count: 0,
    };
    let enc = fields.encode();
    let mut bad = header.to_vec();
    bad.extend_from_slice(&enc);
    bad.extend_from_slice(&section_digest(&enc, &payload));
    bad.extend_from_slice(&payload);
    let e = ImageReader::open(Cursor::new(&bad)).expect_err("garbage manifest");
    assert!(
        e.to_string()
            .starts_with("image section \"manifest\" at offset 16: manifest does not decode"),
        "{e}"
    );

    // A manifest length above the cap is refused before anything is read.
    let fields = SectionFields {
        raw_len: MAX_MANIFEST_BYTES + 1,
        stored_len: MAX_MANIFEST_BYTES + 1,
        ..fields
    };
    let enc = fields.encode();
    let mut bad = header.to_vec();
    bad.extend_from_slice(&enc);
    bad.extend_from_slice(&section_digest(&enc, &[]));
    let e = ImageReader::open(Cursor::new(&bad)).expect_err("huge manifest");
    assert!(e.to_string().contains("exceeds the cap"), "{e}");
}

#[test]
fn repeated_fields_are_counted_before_decoding() {
    let state = rich_state(0);
    // 70 000 empty VMAs: two bytes each on the wire, a whole struct each once decoded.
    let mut m = pb::Manifest::from(&state);
    let p = m.process.as_mut().unwrap();
    p.mm.as_mut().unwrap().vmas = vec![pb::Vma::default(); 70_000];
    let (field, problem) = manifest_error(&m);
    assert_eq!(field, "mm.vmas");
    assert_eq!(problem, "has 65537 entries, more than 65536");

    // Epoll targets are capped over all descriptors together.
    let mut m = pb::Manifest::from(&state);
    let p = m.process.as_mut().unwrap();
    let epoll = pb::Fd {
        fd: 0,
        kind: Some(pb::fd::Kind::Epoll(pb::Epoll {
            targets: vec![pb::EpollTarget::default(); 300_000],
        })),
        ..Default::default()
    };
    p.fds = vec![epoll; 4];
    let (field, _) = manifest_error(&m);
    assert_eq!(field, "fds[*].epoll.targets");

    // So are memfd extents and inotify watches.
    let mut m = pb::Manifest::from(&state);
    let p = m.process.as_mut().unwrap();
    p.memfds[0].extents = vec![pb::MemfdExtent::default(); (1 << 20) + 1];
    assert_eq!(manifest_error(&m).0, "memfds[*].extents");
    let mut m = pb::Manifest::from(&state);
    let p = m.process.as_mut().unwrap();
    p.sysv_shm[0].extents = vec![pb::MemfdExtent::default(); (1 << 20) + 1];
    assert_eq!(manifest_error(&m).0, "sysv_shm[*].extents");
    let mut m = pb::Manifest::from(&state);
    m.process.as_mut().unwrap().sysv_shm = vec![pb::SysvShm::default(); 4097];
    assert_eq!(manifest_error(&m).0, "sysv_shm");
    let mut m = pb::Manifest::from(&state);
    let p = m.process.as_mut().unwrap();
    p.fds[14].kind = Some(pb::fd::Kind::Inotify(pb::Inotify {
        watches: vec![pb::InotifyWatch::default(); (1 << 20) + 1],
    }));
    assert_eq!(manifest_error(&m).0, "fds[*].inotify.watches");

    // Packed and unpacked varints both count.
    let mut m = pb::Manifest::from(&state);
    m.process.as_mut().unwrap().mm.as_mut().unwrap().auxv = vec![7; 1025];
    assert_eq!(manifest_error(&m).0, "mm.auxv");

    // A group (wire type 3), which prost would skip, is refused.
    let mut m = pb::Manifest::from(&state).encode_to_vec();
    m.extend_from_slice(&[0x7b, 0x7c]); // field 15, start group / end group
    let image = image_with_raw_manifest(&m);
    let e = ImageReader::open(Cursor::new(&image)).expect_err("group");
    assert!(
        e.to_string().contains("malformed protobuf wire format"),
        "{e}"
    );
}

#[test]
fn the_writer_checks_pages_against_the_manifest() {
    let state = rich_state(20);
    let n = total_pages(&state);
    let pages = realistic_pages(n, 5);

    let mut w = ImageWriter::new(Vec::new(), &state, Codec::Zstd).expect("writer");
    w.write_pages(&pages[..pages.len() - PAGE_SIZE as usize])
        .expect("write");
    let e = w.finish().expect_err("one page short");
    assert!(
        matches!(e, WriteImageError::PageCountMismatch { written, expected } if written == n - 1 && expected == n),
        "{e}"
    );

    let mut w = ImageWriter::new(Vec::new(), &state, Codec::Zstd).expect("writer");
    w.write_pages(&pages).expect("write");
    let e = w
        .write_pages(&pages[..PAGE_SIZE as usize])
        .expect_err("one page too many");
    assert!(
        matches!(e, WriteImageError::PageCountMismatch { .. }),
        "{e}"
    );

    let mut w = ImageWriter::new(Vec::new(), &state, Codec::Zstd).expect("writer");
    let e = w.write_pages(&pages[..100]).expect_err("unaligned");
    assert!(
        matches!(e, WriteImageError::UnalignedPages { len: 100 }),
        "{e}"
    );

    let mut bad = state.clone();
    bad.mm.vmas.swap(0, 1);
    let e = ImageWriter::new(Vec::new(), &bad, Codec::Zstd).expect_err("unsorted vmas");
    let WriteImageError::InvalidState(inner) = &e else {
        panic!("{e}")
    };
    assert_eq!(inner.field, "mm.vmas[1].start");
}

#[test]
fn codec_names_parse() {
    assert_eq!("zstd".parse::<Codec>().ok(), Some(Codec::Zstd));
    assert_eq!("lz4".parse::<Codec>().ok(), Some(Codec::Lz4));
    assert_eq!("none".parse::<Codec>().ok(), Some(Codec::None));
    let e = "gzip".parse::<Codec>().expect_err("unknown");
    assert_eq!(
        e.to_string(),
        "unknown codec \"gzip\" (expected zstd, lz4 or none)"
    );
    for c in [Codec::Zstd, Codec::Lz4, Codec::None] {
        assert_eq!(c.to_string().parse::<Codec>().ok(), Some(c));
    }
}

/// Throughput of the writer against single-threaded zstd-1 on the same data. Run with
/// `cargo test --release -p ferry-agent -- --ignored --nocapture write_throughput`.
#[test]
#[ignore = "benchmark"]
fn write_throughput() {
    let mb = 256u64;
    let pages = mb * 256;
    let mut state = rich_state(0);
    let others = total_pages(&state);
    let heap = &mut state.mm.vmas[1];
    heap.end = heap.start + (pages + 8) * PAGE_SIZE;
    heap.pages = vec![PageRun {
        start: heap.start,
        count: pages - others,
    }];
    let data = realistic_pages(total_pages(&state), 11);

    let t = std::time::Instant::now();
    let mut c = zstd::bulk::Compressor::new(1).expect("zstd");
    let mut single = 0usize;
    for block in data.chunks(BLOCK_BYTES) {
        single += c.compress(block).expect("compress").len();
    }
    let single_s = t.elapsed().as_secs_f64();

    for codec in [Codec::Zstd, Codec::Lz4, Codec::None] {
        // Touch the output first: page faults of a fresh Vec are not the writer's cost.
        let mut out = vec![1u8; data.len() + (1 << 20)];
        out.clear();
        let t = std::time::Instant::now();
        let mut w = ImageWriter::new(out, &state, codec).expect("writer");
        for chunk in data.chunks(4 << 20) {
            w.write_pages(chunk).expect("write");
        }
        let (image, stats) = w.finish().expect("finish");
        let write_s = t.elapsed().as_secs_f64();

        let t = std::time::Instant::now();
        let mut r = ImageReader::open(Cursor::new(&image)).expect("open");
        let mut n = 0usize;
        while let Some(b) = r.next_pages().expect("read") {
            n += (b.page_count() * PAGE_SIZE) as usize;
            r.recycle(b);
        }
        let read_s = t.elapsed().as_secs_f64();
        assert_eq!(n, data.len());
        println!(
            "{codec}: write {:.0} MB/s, read {:.0} MB/s, image {:.1}% of raw ({} bytes)",
            data.len() as f64 / write_s / 1e6,
            data.len() as f64 / read_s / 1e6,
            100.0 * stats.image_bytes as f64 / data.len() as f64,
            stats.image_bytes
        );
    }
    println!(
        "single-thread zstd-1: {:.0} MB/s, {:.1}% of raw",
        data.len() as f64 / single_s / 1e6,
        100.0 * single as f64 / data.len() as f64
    );
}

fn with_sockets() -> ProcessState {
    let mut s = rich_state(10);
    let unix = |ino, peer_ino, queue: Vec<Vec<u8>>| SocketState {
        ino,
        family: libc::AF_UNIX as u32,
        sock_type: libc::SOCK_DGRAM as u32,
        opts: vec![SockOptState {
            level: libc::SOL_SOCKET,
            name: libc::SO_PASSCRED,
            value: 1i32.to_ne_bytes().to_vec(),
        }],
        filter: Vec::new(),
        kind: SocketKind::Unix(UnixSocketState {
            name: Vec::new(),
            file: None,
            owner: (0, 0),
            file_path: None,
            backlog: None,
            peer_ino,
            peer_external: false,
            peer_name: Vec::new(),
            shutdown: 0,
            in_flight: if queue.is_empty() {
                Vec::new()
            } else {
                vec![InFlight {
                    message: 0,
                    fds: vec![
                        PassedFd::Held { pid: 10, fd: 0 },
                        PassedFd::File {
                            file: FileRef {
                                path: "/etc/hostname".into(),
                                identity: FileIdentity {
                                    dev: 5,
                                    ino: 9,
                                    mode: 0o100644,
                                    ..FileIdentity::default()
                                },
                            },
                            flags: libc::O_RDONLY as u32,
                            pos: 3,
                        },
                        PassedFd::Pipe {
                            ino: 4242,
                            write: false,
                            flags: libc::O_NONBLOCK as u32,
                            pid: 10,
                            fd: 3,
                            queue: None,
                        },
                        PassedFd::Pipe {
                            ino: 4243,
                            write: true,
                            flags: 0,
                            pid: 0,
                            fd: 0,
                            queue: Some(PipeQueue {
                                size: 65536,
                                data: b"in the pipe".to_vec(),
                            }),
                        },
                    ],
                    creds: Some((10, 1000, 100)),
                }]
            },
            queue,
            queue_from: Vec::new(),
            pending: 0,
            sent_unaccepted: false,
            pending_sent: Vec::new(),
        }),
    };
    let listener = SocketState {
        ino: 503,
        family: libc::AF_UNIX as u32,
        sock_type: libc::SOCK_STREAM as u32,
        opts: Vec::new(),
        filter: Vec::new(),
        kind: SocketKind::Unix(UnixSocketState {
            name: b"/run/app.sock".to_vec(),
            file: Some(FileIdentity {
                dev: 5,
                ino: 77,
                mode: 0o140755,
                ..FileIdentity::default()
            }),
            owner: (1000, 1000),
            file_path: Some("/tmp/renamed.sock".into()),
            backlog: Some(128),
            peer_ino: 0,
            peer_external: false,
            peer_name: Vec::new(),
            shutdown: 0,
            queue: Vec::new(),
            queue_from: Vec::new(),
            pending: 2,
            in_flight: Vec::new(),
            sent_unaccepted: false,
            pending_sent: Vec::new(),
        }),
    };
    // A connection to the listener not accepted yet, holding what it wrote.
    let client = SocketState {
        ino: 506,
        family: libc::AF_UNIX as u32,
        sock_type: libc::SOCK_SEQPACKET as u32,
        opts: Vec::new(),
        filter: Vec::new(),
        kind: SocketKind::Unix(UnixSocketState {
            name: Vec::new(),
            file: None,
            owner: (0, 0),
            file_path: None,
            backlog: None,
            peer_ino: 0,
            peer_external: true,
            peer_name: b"/run/app.sock".to_vec(),
            shutdown: 0,
            queue: Vec::new(),
            queue_from: Vec::new(),
            pending: 0,
            in_flight: Vec::new(),
            sent_unaccepted: true,
            pending_sent: vec![b"rec-1".to_vec(), b"record-two".to_vec()],
        }),
    };
    let tcp = SocketState {
        ino: 504,
        family: libc::AF_INET6 as u32,
        sock_type: libc::SOCK_STREAM as u32,
        opts: vec![SockOptState {
            level: libc::IPPROTO_TCP,
            name: libc::TCP_NODELAY,
            value: 1i32.to_ne_bytes().to_vec(),
        }],
        filter: vec![0x06, 0, 0, 0, 0xff, 0xff, 0, 0],
        kind: SocketKind::Inet(InetSocketState {
            protocol: libc::IPPROTO_TCP as u32,
            local: "[::1]:6379".parse().expect("addr"),
            peer: Some("[::1]:40000".parse().expect("addr")),
            backlog: None,
            tcp: Some(TcpConnState {
                send_seq: 0xffff_fff0,
                recv_seq: 12345,
                send_queue: b"queued reply".to_vec(),
                unsent: 4,
                recv_queue: b"GET k\r\n".to_vec(),
                mss: 65483,
                snd_wscale: 7,
                rcv_wscale: 7,
                options: 7,
                timestamp: 99,
                window: [1, 2, 3, 4, 5],
                state: crate::state::TCP_CLOSE_WAIT,
                unaccepted: None,
            }),
            shutdown: 1,
            queue: Vec::new(),
            queue_from: Vec::new(),
        }),
    };
    let udp = SocketState {
        ino: 505,
        family: libc::AF_INET as u32,
        sock_type: libc::SOCK_DGRAM as u32,
        opts: Vec::new(),
        filter: Vec::new(),
        kind: SocketKind::Inet(InetSocketState {
            protocol: libc::IPPROTO_UDP as u32,
            local: "127.0.0.1:5353".parse().expect("addr"),
            peer: None,
            backlog: None,
            tcp: None,
            shutdown: 0,
            queue: vec![b"dgram".to_vec()],
            queue_from: vec!["127.0.0.1:9".parse().expect("address")],
        }),
    };
    let packet = SocketState {
        ino: 506,
        family: libc::AF_PACKET as u32,
        sock_type: libc::SOCK_RAW as u32,
        opts: vec![SockOptState {
            level: 263, // SOL_PACKET
            name: 8,    // PACKET_AUXDATA
            value: 1i32.to_ne_bytes().to_vec(),
        }],
        filter: Vec::new(),
        kind: SocketKind::Packet(PacketSocketState {
            protocol: 3, // ETH_P_ALL
            interface: "lo".into(),
            memberships: vec![PacketMembership {
                interface: "lo".into(),
                mr_type: 0,
                address: vec![1, 0, 0x5e, 0x7f, 0, 1],
                count: 2,
            }],
            fanout: 0x1000_0007,
            copy_thresh: 0,
        }),
    };
    let socks = [
        unix(501, 502, vec![b"a".to_vec(), Vec::new()]),
        unix(502, 501, Vec::new()),
        listener,
        tcp,
        udp,
        packet,
        client,
    ];
    for (i, sock) in socks.into_iter().enumerate() {
        s.fds.push(FdState {
            owner: Default::default(),
            fd: 100 + i as i32,
            cloexec: i % 2 == 0,
            flags: 2,
            kind: FdKind::Socket(Box::new(sock)),
        });
    }
    s
}

#[test]
fn sockets_round_trip() {
    let state = with_sockets();
    let pages = tiny_pages(total_pages(&state), 3);
    let (image, _) = write_image(&state, &pages, Codec::Zstd);
    let (got, _) = read_image(&image).expect("read back");
    assert_eq!(got, state);
}

#[test]
fn invalid_sockets_are_refused_naming_the_field() {
    let state = with_sockets();
    let base = pb::Manifest::from(&state);
    let at = state.fds.len() - 7;
    let socket = |p: &mut pb::ProcessState, i: usize| -> pb::Socket {
        match p.fds[i].kind.clone() {
            Some(pb::fd::Kind::Socket(s)) => s,
            _ => unreachable!("a socket fd"),
        }
    };
    let put = |p: &mut pb::ProcessState, i: usize, s: pb::Socket| {
        p.fds[i].kind = Some(pb::fd::Kind::Socket(s))
    };
    type Edit = Box<dyn Fn(&mut pb::ProcessState)>;
    let cases: Vec<(Edit, String, &str)> = vec![
        (
            Box::new(move |p| {
                let mut s = socket(p, at);
                s.opts[0].name = libc::SO_ATTACH_FILTER;
                put(p, at, s);
            }),
            format!("fds[{at}].socket.opts[0].name"),
            "unknown value",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 2);
                if let Some(pb::socket::Kind::Unix(u)) = s.kind.as_mut() {
                    u.name = b"relative.sock".to_vec();
                }
                put(p, at + 2, s);
            }),
            format!("fds[{}].socket.unix.name", at + 2),
            "",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 3);
                if let Some(pb::socket::Kind::Inet(i)) = s.kind.as_mut() {
                    i.tcp.as_mut().expect("tcp").window.pop();
                }
                put(p, at + 3, s);
            }),
            format!("fds[{}].socket.inet.tcp.window", at + 3),
            "outside",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 3);
                if let Some(pb::socket::Kind::Inet(i)) = s.kind.as_mut() {
                    i.tcp.as_mut().expect("tcp").unsent = 1000;
                }
                put(p, at + 3, s);
            }),
            format!("fds[{}].socket.inet.tcp.unsent", at + 3),
            "outside",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 3);
                if let Some(pb::socket::Kind::Inet(i)) = s.kind.as_mut() {
                    i.tcp.as_mut().expect("tcp").state = 2; // SYN-SENT: not kept in an image
                }
                put(p, at + 3, s);
            }),
            format!("fds[{}].socket.inet.tcp.state", at + 3),
            "unknown value",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 4);
                if let Some(pb::socket::Kind::Inet(i)) = s.kind.as_mut() {
                    i.local.as_mut().expect("local").ip = vec![1, 2, 3];
                }
                put(p, at + 4, s);
            }),
            format!("fds[{}].socket.inet.local.ip", at + 4),
            "outside",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 4);
                s.sock_type = 9; // no socket type (SOCK_RAW is one now: raw IP sockets)
                put(p, at + 4, s);
            }),
            format!("fds[{}].socket.sock_type", at + 4),
            "unknown value",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 5);
                if let Some(pb::socket::Kind::Packet(k)) = s.kind.as_mut() {
                    k.interface = "eth0/x".into();
                }
                put(p, at + 5, s);
            }),
            format!("fds[{}].socket.packet.interface", at + 5),
            "not an interface name",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 5);
                if let Some(pb::socket::Kind::Packet(k)) = s.kind.as_mut() {
                    k.interface = "an-interface-name-too-long".into();
                }
                put(p, at + 5, s);
            }),
            format!("fds[{}].socket.packet.interface", at + 5),
            "more than 15",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 5);
                if let Some(pb::socket::Kind::Packet(k)) = s.kind.as_mut() {
                    k.memberships[0].mr_type = 7;
                }
                put(p, at + 5, s);
            }),
            format!("fds[{}].socket.packet.memberships[0].mr_type", at + 5),
            "unknown value 7",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 5);
                if let Some(pb::socket::Kind::Packet(k)) = s.kind.as_mut() {
                    k.memberships[0].count = 0;
                }
                put(p, at + 5, s);
            }),
            format!("fds[{}].socket.packet.memberships[0].count", at + 5),
            "outside",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 5);
                if let Some(pb::socket::Kind::Packet(k)) = s.kind.as_mut() {
                    k.memberships[0].address = vec![0; 33];
                }
                put(p, at + 5, s);
            }),
            format!("fds[{}].socket.packet.memberships[0].address", at + 5),
            "more than 32",
        ),
        // The bytes of a pipe a process holds are that process's to carry.
        (
            Box::new(move |p| {
                let mut s = socket(p, at);
                if let Some(pb::socket::Kind::Unix(u)) = s.kind.as_mut() {
                    u.in_flight[0].fds[2].pipe.as_mut().expect("pipe").queue =
                        Some(pb::PipeQueue {
                            size: 4096,
                            data: Vec::new(),
                        });
                }
                put(p, at, s);
            }),
            format!("fds[{at}].socket.unix.in_flight[0].fds[2].pipe.queue"),
            "more than 0",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at);
                if let Some(pb::socket::Kind::Unix(u)) = s.kind.as_mut() {
                    u.in_flight[0].fds[3].pipe.as_mut().expect("pipe").queue =
                        Some(pb::PipeQueue {
                            size: 4,
                            data: b"in the pipe".to_vec(),
                        });
                }
                put(p, at, s);
            }),
            format!("fds[{at}].socket.unix.in_flight[0].fds[3].pipe.queue.data"),
            "more than 4",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at);
                if let Some(pb::socket::Kind::Unix(u)) = s.kind.as_mut() {
                    u.in_flight[0].fds[3].fd = -1;
                }
                put(p, at, s);
            }),
            format!("fds[{at}].socket.unix.in_flight[0].fds[3].pipe.fd"),
            "outside",
        ),
        // Bytes written into a pending connection: only by a connecting stream or seqpacket
        // socket that wrote some.
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 6);
                if let Some(pb::socket::Kind::Unix(u)) = s.kind.as_mut() {
                    u.sent_unaccepted = false;
                }
                put(p, at + 6, s);
            }),
            format!("fds[{}].socket.unix.pending_sent", at + 6),
            "more than 0",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 5);
                if let Some(pb::socket::Kind::Packet(k)) = s.kind.as_mut() {
                    k.fanout = 7 | (6 << 16); // PACKET_FANOUT_CBPF
                }
                put(p, at + 5, s);
            }),
            format!("fds[{}].socket.packet.fanout", at + 5),
            "outside 0..=5",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 5);
                if let Some(pb::socket::Kind::Packet(k)) = s.kind.as_mut() {
                    k.fanout = 7 | (0x20 << 24); // PACKET_FANOUT_FLAG_UNIQUEID
                }
                put(p, at + 5, s);
            }),
            format!("fds[{}].socket.packet.fanout", at + 5),
            "bits outside",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 5);
                s.sock_type = libc::SOCK_STREAM as u32;
                put(p, at + 5, s);
            }),
            format!("fds[{}].socket.sock_type", at + 5),
            "unknown value 1",
        ),
        (
            Box::new(move |p| {
                let mut s = socket(p, at + 6);
                s.sock_type = libc::SOCK_DGRAM as u32;
                put(p, at + 6, s);
            }),
            format!("fds[{}].socket.unix.pending_sent", at + 6),
            "more than 0",
        ),
    ];
    for (edit, field, text) in cases {
        let mut m = base.clone();
        edit(m.process.as_mut().expect("process"));
        let (got_field, message) = manifest_error(&m);
        assert_eq!(got_field, field, "{message}");
        assert!(message.contains(text), "{field}: {message}");
    }
}

/// A TCP connection of the process waiting in its own listener's accept queue: round trip
/// with its bytes and place in the queue, and bad values refused naming the field.
#[test]
fn unaccepted_tcp_connections_round_trip_and_are_checked() {
    let mut state = with_sockets();
    let at = state.fds.len() - 7 + 3;
    let FdKind::Socket(sock) = &mut state.fds[at].kind else {
        unreachable!("a socket fd")
    };
    let SocketKind::Inet(i) = &mut sock.kind else {
        unreachable!("the TCP socket")
    };
    let t = i.tcp.as_mut().expect("a connection");
    t.state = TCP_ESTABLISHED;
    t.unaccepted = Some(TcpUnaccepted {
        written: 7,
        data: b"client1".to_vec(),
        rank: 2,
    });
    let pages = tiny_pages(total_pages(&state), 3);
    let (image, _) = write_image(&state, &pages, Codec::Zstd);
    let (got, _) = read_image(&image).expect("read back");
    assert_eq!(got, state);

    let base = pb::Manifest::from(&state);
    let edit = |f: &dyn Fn(&mut pb::TcpUnaccepted, &mut pb::TcpConn)| {
        let mut m = base.clone();
        let p = m.process.as_mut().expect("process");
        let Some(pb::fd::Kind::Socket(s)) = p.fds[at].kind.as_mut() else {
            unreachable!("a socket fd")
        };
        let Some(pb::socket::Kind::Inet(i)) = s.kind.as_mut() else {
            unreachable!("an inet socket")
        };
        let t = i.tcp.as_mut().expect("a connection");
        let mut u = t.unaccepted.clone().expect("unaccepted");
        f(&mut u, t);
        t.unaccepted = Some(u);
        m
    };
    let field = |name: &str| format!("fds[{at}].socket.inet.tcp.{name}");
    let cases: Vec<(pb::Manifest, String, &str)> = vec![
        (
            edit(&|_, t| t.state = TCP_CLOSE_WAIT),
            field("state"),
            "unknown value 8",
        ),
        (
            edit(&|u, _| u.written = 8),
            field("unaccepted.written"),
            "8 is outside 7..=7",
        ),
        (
            edit(&|u, _| {
                u.data.clear();
                u.written = (MAX_SOCKET_QUEUE as u64) + 1;
            }),
            field("unaccepted.written"),
            "is outside 0..=",
        ),
        (
            edit(&|u, _| u.rank = (1 << 16) + 1),
            field("unaccepted.rank"),
            "65537 is outside 0..=65536",
        ),
        (
            edit(&|u, _| {
                u.data = vec![0; MAX_SOCKET_QUEUE + 1];
                u.written = u.data.len() as u64;
            }),
            field("unaccepted.data"),
            "more than",
        ),
    ];
    for (m, field, text) in cases {
        let (got_field, message) = manifest_error(&m);
        assert_eq!(got_field, field, "{message}");
        assert!(message.contains(text), "{field}: {message}");
    }
}

/// A member's pages inherited from its parent travel in the manifest (not in the page
/// stream) and are checked like page runs: inside the area, apart from the stored pages, in
/// private anonymous memory only.
#[test]
fn inherited_page_runs_travel_and_are_checked() {
    let mut s = rich_state(4);
    let heap =
        s.mm.vmas
            .iter_mut()
            .find(|v| v.kind == VmaKind::Heap)
            .expect("a heap");
    // The rich heap's runs leave pages 2..5 free.
    heap.inherited = vec![PageRun {
        start: heap.start + 2 * PAGE_SIZE,
        count: 3,
    }];
    heap.cow_shared_kb = 12;
    let pages = realistic_pages(total_pages(&s), 7);
    let (bytes, _) = write_image(&s, &pages, Codec::Zstd);
    let (back, back_pages) = read_image(&bytes).expect("read");
    assert_eq!(back, s);
    assert_eq!(back_pages, pages);

    let mut bad = s.clone();
    let heap = bad.mm.vmas.iter_mut().find(|v| v.kind == VmaKind::Heap);
    let heap = heap.expect("a heap");
    heap.inherited[0].start = heap.start;
    let e = validate::validate(&bad).expect_err("inherited over stored pages");
    assert!(e.to_string().contains("inherited"), "{e}");

    let mut bad = s.clone();
    let exe = &mut bad.mm.vmas[0];
    exe.inherited = vec![PageRun {
        start: exe.start,
        count: 1,
    }];
    let e = validate::validate(&bad).expect_err("inherited in a file mapping");
    assert!(e.to_string().contains("private anonymous"), "{e}");
}

/// A live migration's final image names the pages the destination has already
/// (`precopied`, not in the page stream); they are checked like page runs: inside the area,
/// apart from the stored and inherited pages, in private anonymous memory only.
#[test]
fn precopied_page_runs_travel_and_are_checked() {
    let mut s = rich_state(4);
    let heap =
        s.mm.vmas
            .iter_mut()
            .find(|v| v.kind == VmaKind::Heap)
            .expect("a heap");
    // The rich heap's runs leave pages 2..5 free.
    heap.precopied = vec![PageRun {
        start: heap.start + 2 * PAGE_SIZE,
        count: 3,
    }];
    let pages = realistic_pages(total_pages(&s), 7);
    let (bytes, _) = write_image(&s, &pages, Codec::Lz4);
    let (back, back_pages) = read_image(&bytes).expect("read");
    assert_eq!(back, s);
    assert_eq!(back_pages, pages);

    let mut bad = s.clone();
    let heap = bad.mm.vmas.iter_mut().find(|v| v.kind == VmaKind::Heap);
    let heap = heap.expect("a heap");
    heap.precopied[0].start = heap.start;
    let e = validate::validate(&bad).expect_err("precopied over stored pages");
    assert!(e.to_string().contains("precopied"), "{e}");

    let mut bad = s.clone();
    let heap = bad.mm.vmas.iter_mut().find(|v| v.kind == VmaKind::Heap);
    let heap = heap.expect("a heap");
    heap.inherited = heap.precopied.clone();
    let e = validate::validate(&bad).expect_err("precopied over inherited pages");
    assert!(e.to_string().contains("precopied"), "{e}");

    let mut bad = s.clone();
    let heap = bad.mm.vmas.iter_mut().find(|v| v.kind == VmaKind::Heap);
    let heap = heap.expect("a heap");
    heap.precopied[0].count = (heap.end - heap.start) / PAGE_SIZE;
    let e = validate::validate(&bad).expect_err("precopied beyond the area");
    assert!(e.to_string().contains("precopied"), "{e}");

    let mut bad = s.clone();
    let exe = &mut bad.mm.vmas[0];
    exe.precopied = vec![PageRun {
        start: exe.start,
        count: 1,
    }];
    let e = validate::validate(&bad).expect_err("precopied in a file mapping");
    assert!(e.to_string().contains("private anonymous"), "{e}");
}

/// The KiB shared copy-on-write that a tree restore cannot share again: a child's pages
/// inherited from its parent are shared again in both; sharing with nobody in the tree (or
/// only with a sibling) is not.
#[test]
fn copy_on_write_sharing_a_restore_cannot_make_is_counted() {
    let mut parent = rich_state(4);
    let mut child = parent.clone();
    child.pid = parent.pid + 1;
    child.ppid = parent.pid;
    let heap_of = |p: &mut ProcessState| -> usize {
        p.mm.vmas
            .iter()
            .position(|v| v.kind == VmaKind::Heap)
            .expect("a heap")
    };
    let (hp, hc) = (heap_of(&mut parent), heap_of(&mut child));
    let start = child.mm.vmas[hc].start;
    child.mm.vmas[hc].inherited = vec![PageRun {
        start: start + 2 * PAGE_SIZE,
        count: 3,
    }];
    // 3 pages shared with each other; the child 2 more with someone outside the tree.
    parent.mm.vmas[hp].cow_shared_kb = 12;
    child.mm.vmas[hc].cow_shared_kb = 20;
    assert_eq!(cow_unrestorable_kb(&[&parent, &child]), vec![0, 8]);
    // Alone (no parent in the image), nothing is shared again.
    assert_eq!(cow_unrestorable_kb(&[&parent]), vec![12]);
}

fn with_fanotify() -> ProcessState {
    let mut s = rich_state(10);
    s.fds.push(FdState {
        owner: Default::default(),
        fd: 120,
        cloexec: true,
        flags: 0o4002,
        kind: FdKind::Fanotify(FanotifyState {
            flags: 0x12,
            event_flags: 0x48000, // O_NOATIME | O_LARGEFILE
            marks: vec![
                FanotifyMark {
                    target: FanotifyTarget::Filesystem {
                        path: "/dev/shm".into(),
                    },
                    mflags: 0,
                    mask: 0x1000,
                    ignored_mask: 0,
                },
                FanotifyMark {
                    target: FanotifyTarget::Mount {
                        path: "/dev/shm".into(),
                    },
                    mflags: 0,
                    mask: 0x1000,
                    ignored_mask: 0,
                },
                FanotifyMark {
                    target: FanotifyTarget::Inode(file("/tmp/marked", 9)),
                    mflags: 0x40,
                    mask: 0xa,
                    ignored_mask: 2,
                },
            ],
        }),
    });
    s
}

#[test]
fn fanotify_groups_round_trip() {
    let state = with_fanotify();
    let pages = tiny_pages(total_pages(&state), 3);
    let (image, _) = write_image(&state, &pages, Codec::Zstd);
    let (got, _) = read_image(&image).expect("read back");
    assert_eq!(got, state);
}

#[test]
fn invalid_fanotify_groups_are_refused_naming_the_field() {
    let state = with_fanotify();
    let base = pb::Manifest::from(&state);
    let at = state.fds.len() - 1;
    type Edit = Box<dyn Fn(&mut pb::Fanotify)>;
    let cases: Vec<(Edit, String, &str)> = vec![
        (
            Box::new(|g| g.flags = 0x8000),
            format!("fds[{at}].fanotify.flags"),
            "bits outside",
        ),
        (
            Box::new(|g| g.flags = 0xc),
            format!("fds[{at}].fanotify.flags"),
            "outside 0..=8",
        ),
        (
            Box::new(|g| g.event_flags = 0o200), // O_EXCL
            format!("fds[{at}].fanotify.event_flags"),
            "bits outside",
        ),
        (
            Box::new(|g| g.marks[2].mflags = 0x1),
            format!("fds[{at}].fanotify.marks[2].mflags"),
            "bits outside",
        ),
        (
            Box::new(|g| {
                g.marks[1].target = Some(pb::fanotify_mark::Target::Mount("dev/shm".into()))
            }),
            format!("fds[{at}].fanotify.marks[1].mount"),
            "not absolute",
        ),
        (
            Box::new(|g| g.marks[0].target = None),
            format!("fds[{at}].fanotify.marks[0].target"),
            "missing",
        ),
        (
            Box::new(|g| {
                if let Some(pb::fanotify_mark::Target::Inode(f)) = &mut g.marks[2].target {
                    f.identity = None;
                }
            }),
            format!("fds[{at}].fanotify.marks[2].inode.identity"),
            "missing",
        ),
    ];
    for (edit, field, text) in cases {
        let mut m = base.clone();
        let p = m.process.as_mut().expect("process");
        if let Some(pb::fd::Kind::Fanotify(g)) = &mut p.fds[at].kind {
            edit(g);
        }
        let (got_field, message) = manifest_error(&m);
        assert_eq!(got_field, field, "{message}");
        assert!(message.contains(text), "{field}: {message}");
    }
    // Marks are counted before decoding, over all groups together.
    let mut m = base.clone();
    let p = m.process.as_mut().expect("process");
    if let Some(pb::fd::Kind::Fanotify(g)) = &mut p.fds[at].kind {
        g.marks = vec![pb::FanotifyMark::default(); (1 << 16) + 1];
    }
    assert_eq!(manifest_error(&m).0, "fds[*].fanotify.marks");
}

fn with_aio() -> ProcessState {
    let mut s = rich_state(10);
    let mut ring = vma(0x7eff_0002_0000, 1, VmaKind::AioRing, &[]);
    ring.shared = true;
    s.mm.vmas.push(ring);
    s.mm.vmas.sort_by_key(|v| v.start);
    let mut events = vec![0u8; 127 * 32];
    events[..8].copy_from_slice(&7u64.to_le_bytes());
    s.mm.aio_rings.push(AioRingState {
        start: 0x7eff_0002_0000,
        len: PAGE_SIZE,
        id: 0,
        nr: 127,
        head: 5,
        tail: 7,
        magic: 0xa10a_10a1,
        compat_features: 1,
        incompat_features: 0,
        header_length: 32,
        events,
    });
    s
}

#[test]
fn aio_rings_round_trip() {
    let state = with_aio();
    let pages = tiny_pages(total_pages(&state), 5);
    let (image, _) = write_image(&state, &pages, Codec::Zstd);
    let (got, _) = read_image(&image).expect("read back");
    assert_eq!(got, state);
}

#[test]
fn invalid_aio_rings_are_refused_naming_the_field() {
    let state = with_aio();
    let base = pb::Manifest::from(&state);
    let at = state
        .mm
        .vmas
        .iter()
        .position(|v| v.kind == VmaKind::AioRing)
        .expect("ring vma");
    type Edit = Box<dyn Fn(&mut pb::Mm)>;
    let cases: Vec<(Edit, String, &str)> = vec![
        (
            Box::new(|m| m.aio_rings[0].magic = 0x1234),
            "mm.aio_rings[0].magic".into(),
            "outside",
        ),
        (
            Box::new(|m| m.aio_rings[0].header_length = 64),
            "mm.aio_rings[0].header_length".into(),
            "outside 32..=32",
        ),
        (
            Box::new(|m| m.aio_rings[0].nr = 128),
            "mm.aio_rings[0].nr".into(),
            "outside 127..=127",
        ),
        (
            Box::new(|m| m.aio_rings[0].head = 127),
            "mm.aio_rings[0].head".into(),
            "outside 0..=126",
        ),
        (
            Box::new(|m| m.aio_rings[0].tail = u32::MAX),
            "mm.aio_rings[0].tail".into(),
            "outside 0..=126",
        ),
        (
            Box::new(|m| m.aio_rings[0].events.truncate(100)),
            "mm.aio_rings[0].events".into(),
            "expected exactly 4064",
        ),
        (
            Box::new(|m| m.aio_rings[0].len = 0),
            "mm.aio_rings[0].len".into(),
            "outside 4096..",
        ),
        (
            Box::new(|m| m.aio_rings[0].start += 1),
            "mm.aio_rings[0].start".into(),
            "not page aligned",
        ),
        (
            Box::new(|m| m.aio_rings[0].start += PAGE_SIZE),
            "mm.aio_rings[0].start".into(),
            "no AIO ring VMA",
        ),
        (
            Box::new(|m| m.aio_rings[0].id = 1 << 20),
            "mm.aio_rings[0].id".into(),
            "outside 0..=65535",
        ),
        (
            Box::new(|m| {
                let r = m.aio_rings[0].clone();
                m.aio_rings.push(r);
            }),
            "mm.aio_rings[1].start".into(),
            "increasing order",
        ),
        (
            Box::new(|m| m.aio_rings.clear()),
            format!("mm.vmas[{at}]"),
            "has no ring in mm.aio_rings",
        ),
        (
            Box::new(move |m| m.vmas[at].shared = false),
            format!("mm.vmas[{at}]"),
            "not a shared mapping",
        ),
        (
            Box::new(move |m| {
                m.vmas[at].pages = vec![pb::PageRun {
                    start: 0x7eff_0002_0000,
                    count: 1,
                }]
            }),
            format!("mm.vmas[{at}].pages"),
            "aio ring mapping cannot have stored pages",
        ),
    ];
    for (edit, field, text) in cases {
        let mut m = base.clone();
        edit(
            m.process
                .as_mut()
                .expect("process")
                .mm
                .as_mut()
                .expect("mm"),
        );
        let (got_field, message) = manifest_error(&m);
        assert_eq!(got_field, field, "{message}");
        assert!(message.contains(text), "{field}: {message}");
    }
    // Counted before decoding.
    let mut m = base.clone();
    let mm = m
        .process
        .as_mut()
        .expect("process")
        .mm
        .as_mut()
        .expect("mm");
    mm.aio_rings = vec![pb::AioRing::default(); 65537];
    assert_eq!(manifest_error(&m).0, "mm.aio_rings");
}

// Sealed images (seal.rs, docs/image-format.md "Sealed images").

fn sealed_image(state: &ProcessState, pages: &[u8], codec: Codec, key: &seal::Key) -> Vec<u8> {
    let tree = TreeState::single(state.clone());
    let mut w =
        ImageWriter::new_tree_sealed(Vec::new(), &tree, codec, Some(key)).expect("sealed writer");
    w.write_pages(pages).expect("write pages");
    w.finish().expect("finish").0
}

fn read_sealed(
    bytes: &[u8],
    key: Option<&seal::Key>,
) -> Result<(ProcessState, Vec<u8>), ReadImageError> {
    let mut r = ImageReader::open_with_key(Cursor::new(bytes), key)?;
    let mut pages = Vec::new();
    while let Some(block) = r.next_pages()? {
        pages.extend_from_slice(&block.to_raw());
        r.recycle(block);
    }
    Ok((r.state().clone(), pages))
}

/// Pages with a marker in each, so that the plain text can be looked for in the image.
fn marked_pages(pages: u64) -> Vec<u8> {
    let mut out = tiny_pages(pages, 3);
    for i in 0..pages as usize {
        out[i * PAGE_SIZE as usize..][..16].copy_from_slice(b"PLAINTEXT-MARKER");
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// (offset, stored length) of every section after the file and seal headers.
fn sealed_sections(image: &[u8]) -> Vec<(usize, usize)> {
    let mut at = format::FILE_HEADER_LEN + seal::SEAL_HEADER_LEN;
    let mut out = Vec::new();
    while at < image.len() {
        let stored = u64::from_le_bytes(image[at + 24..at + 32].try_into().unwrap()) as usize;
        out.push((at, stored));
        at += SECTION_HEADER_LEN + stored;
    }
    out
}

/// Rewrites the digest of the section at `at` so that only the seal can tell it changed.
fn redigest(image: &mut [u8], at: usize, stored: usize) {
    let mut fields = [0u8; format::SECTION_FIELDS_LEN];
    fields.copy_from_slice(&image[at..at + format::SECTION_FIELDS_LEN]);
    let payload = &image[at + SECTION_HEADER_LEN..at + SECTION_HEADER_LEN + stored];
    let d = section_digest(&fields, payload);
    image[at + format::SECTION_FIELDS_LEN..at + SECTION_HEADER_LEN].copy_from_slice(&d);
}

#[test]
fn sealed_images_round_trip_and_hide_their_contents() {
    let key = seal::Key::random().unwrap();
    let state = rich_state(600 - 7);
    let pages = marked_pages(total_pages(&state));
    for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
        let plain = write_image(&state, &pages, codec).0;
        let sealed = sealed_image(&state, &pages, codec, &key);
        assert_eq!(
            read_sealed(&sealed, Some(&key)).expect("sealed read"),
            (state.clone(), pages.clone()),
            "{codec}"
        );
        // The manifest names the executable; the pages carry the marker.
        let exe = state.exe.path.as_bytes();
        if codec == Codec::None {
            assert!(contains(&plain, b"PLAINTEXT-MARKER"), "{codec}: marker");
        }
        assert!(
            contains(&plain, exe),
            "{codec}: the plain image names the exe"
        );
        assert!(
            !contains(&sealed, b"PLAINTEXT-MARKER"),
            "{codec}: pages in clear"
        );
        assert!(!contains(&sealed, exe), "{codec}: manifest in clear");
        // An image that is not sealed still reads with a key given.
        read_sealed(&plain, Some(&key)).expect("plain image with a key");
    }
}

#[test]
fn a_sealed_image_needs_its_key() {
    let key = seal::Key::random().unwrap();
    let state = rich_state(10);
    let pages = tiny_pages(total_pages(&state), 1);
    let sealed = sealed_image(&state, &pages, Codec::Lz4, &key);
    let e = read_sealed(&sealed, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "image is sealed: no key given (--key KEYFILE)"
    );
    let other = seal::Key::random().unwrap();
    let e = read_sealed(&sealed, Some(&other)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "image is sealed: the key does not open it (wrong key?)"
    );
    // The clear header says what it is.
    assert_eq!(
        sealed_header(Cursor::new(&sealed)),
        Some(("2.1".to_string(), "aes-256-gcm"))
    );
    assert_eq!(
        sealed_header(Cursor::new(&write_image(&state, &pages, Codec::Lz4).0)),
        None
    );
    // A changed salt derives another key: taken for a wrong key, never read.
    let mut bad = sealed.clone();
    bad[format::FILE_HEADER_LEN + 9] ^= 1;
    assert!(matches!(
        read_sealed(&bad, Some(&key)),
        Err(ReadImageError::SealWrongKey)
    ));
    // The sealed flag cleared: the image is not taken for a plain one.
    let mut bad = sealed.clone();
    bad[14] = 0;
    read_sealed(&bad, Some(&key)).expect_err("flag cleared");
}

#[test]
fn a_changed_sealed_section_with_a_fixed_digest_does_not_open() {
    let key = seal::Key::random().unwrap();
    let state = rich_state(600 - 7);
    let pages = tiny_pages(total_pages(&state), 5);
    let sealed = sealed_image(&state, &pages, Codec::Zstd, &key);
    let sections = sealed_sections(&sealed);
    // manifest, three blocks, end
    assert_eq!(sections.len(), 5);
    let names = [
        "manifest",
        "pages block 0",
        "pages block 1",
        "pages block 2",
        "end",
    ];
    for (i, &(at, stored)) in sections.iter().enumerate() {
        for byte in [0, stored / 2, stored - 1] {
            let mut bad = sealed.clone();
            bad[at + SECTION_HEADER_LEN + byte] ^= 0x40;
            redigest(&mut bad, at, stored);
            let e = read_sealed(&bad, Some(&key)).expect_err("changed section");
            let text = e.to_string();
            assert!(
                text.contains(&format!("\"{}\"", names[i])) && text.contains("authenticate"),
                "section {i} byte {byte}: {text}"
            );
        }
    }
}

#[test]
fn sealed_blocks_cannot_be_moved_or_cut() {
    let key = seal::Key::random().unwrap();
    let state = rich_state(600 - 7);
    let pages = tiny_pages(total_pages(&state), 9);
    let sealed = sealed_image(&state, &pages, Codec::Zstd, &key);
    let s = sealed_sections(&sealed);
    let bytes = |i: usize| &sealed[s[i].0..s[i].0 + SECTION_HEADER_LEN + s[i].1];
    // Blocks 1 and 0 swapped, their headers' position fields (seq, first page) rewritten to
    // fit and their digests recomputed: only the seal's associated data can tell.
    let mut swapped = sealed[..s[1].0].to_vec();
    for (i, slot) in [(2usize, 1usize), (1, 2)] {
        let mut sec = bytes(i).to_vec();
        let own = bytes(slot);
        sec[8..16].copy_from_slice(&own[8..16]);
        sec[32..40].copy_from_slice(&own[32..40]);
        let stored = sec.len() - SECTION_HEADER_LEN;
        redigest(&mut sec, 0, stored);
        swapped.extend_from_slice(&sec);
    }
    swapped.extend_from_slice(&sealed[s[3].0..]);
    let e = read_sealed(&swapped, Some(&key)).expect_err("swapped blocks");
    assert!(
        e.to_string().contains("\"pages block 0\"") && e.to_string().contains("authenticate"),
        "{e}"
    );
    // Cut anywhere: refused.
    for cut in [s[1].0, s[2].0 + 100, s[4].0, sealed.len() - 1] {
        read_sealed(&sealed[..cut], Some(&key)).expect_err("truncated");
    }
    // The last block dropped, the end kept: the end's position no longer fits.
    let mut dropped = sealed[..s[3].0].to_vec();
    dropped.extend_from_slice(bytes(4));
    read_sealed(&dropped, Some(&key)).expect_err("block dropped");
}

#[test]
fn key_files_parse() {
    let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    assert!(seal::Key::parse(hex.as_bytes()).is_some());
    assert!(seal::Key::parse(format!("{hex}\n").as_bytes()).is_some());
    assert!(seal::Key::parse(&[7u8; 32]).is_some());
    assert!(seal::Key::parse(&hex.as_bytes()[1..]).is_none());
    assert!(seal::Key::parse(b"").is_none());
    assert!(seal::Key::parse(&[7u8; 33]).is_none());
    // The same key from hex and from raw bytes seals alike.
    let raw: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(17)).collect();
    let text: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let (a, b) = (
        seal::Key::parse(&raw).unwrap(),
        seal::Key::parse(text.as_bytes()).unwrap(),
    );
    assert_eq!(a.derive(b"s", b"i"), b.derive(b"s", b"i"));
}
