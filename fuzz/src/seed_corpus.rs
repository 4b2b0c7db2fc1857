//! Writes a few valid images into `corpus/image_reader/` so fuzzing starts from inputs that get
//! past the header and the digests: `cargo run --release --bin seed_corpus` in `fuzz/`.

use std::fs;

use ferry_agent::image::{Codec, ImageWriter};
use ferry_agent::state::{
    CredsState, FileIdentity, FileRef, MmState, PAGE_SIZE, PageRun, ProcessState, Regs,
    SigaltstackState, SignalsState, ThreadState, VmaKind, VmaState, prot,
};

fn state(pages: u64) -> ProcessState {
    let heap = 0x5555_5560_0000;
    ProcessState {
        pid: 100,
        ppid: 1,
        pgid: 100,
        sid: 100,
        comm: "seed".into(),
        exe: FileRef {
            path: "/bin/seed".into(),
            identity: FileIdentity::default(),
        },
        creds: CredsState::default(),
        umask: 0o022,
        cwd: "/".into(),
        personality: 0,
        rlimits: vec![],
        mm: MmState {
            vmas: vec![VmaState {
                start: heap,
                end: heap + (pages + 1) * PAGE_SIZE,
                prot: prot::READ | prot::WRITE,
                shared: false,
                pgoff: 0,
                kind: VmaKind::Heap,
                growsdown: false,
                maywrite: true,
                flags: 0,
                pages: if pages == 0 {
                    vec![]
                } else {
                    vec![PageRun {
                        start: heap,
                        count: pages,
                    }]
                },
            }],
            ..MmState::default()
        },
        fds: vec![],
        signals: SignalsState::default(),
        threads: vec![ThreadState {
            tid: 100,
            regs: Regs::default(),
            xstate: vec![0; 64],
            sigmask: 0,
            pending: vec![],
            rseq: None,
            robust_list: (0, 0),
            clear_child_tid: 0,
            sigaltstack: SigaltstackState::default(),
            sched: Default::default(),
            seccomp: Default::default(),
        }],
        locks: vec![],
        memfds: vec![],
        sysv_shm: vec![],
        attrs: Default::default(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "corpus/image_reader";
    fs::create_dir_all(dir)?;
    for (name, pages, codec) in [
        ("empty-none", 0, Codec::None),
        ("one-none", 1, Codec::None),
        ("two-zstd", 2, Codec::Zstd),
        ("two-lz4", 2, Codec::Lz4),
        ("blocks-zstd", 300, Codec::Zstd),
    ] {
        let s = state(pages);
        let data: Vec<u8> = (0..pages * PAGE_SIZE).map(|i| (i / 512) as u8).collect();
        let mut w = ImageWriter::new(Vec::new(), &s, codec)?;
        w.write_pages(&data)?;
        let (image, _) = w.finish()?;
        fs::write(format!("{dir}/{name}"), image)?;
    }
    Ok(())
}
