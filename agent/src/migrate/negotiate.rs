//! What the two hosts compare before anything is frozen: kernel release, XSAVE features, the
//! vDSO and every file the process maps or holds open.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use ferry_proto::v1::{FileAnswer, FileCheck, FileVerdict, NegotiateReply, NegotiateRequest};

use crate::state::FileIdentity;

/// Files larger than this are compared by size and mtime only (their hash would cost more
/// than it tells, for files that have no ELF build-id).
pub const HASH_LIMIT: u64 = 64 << 20;

/// This host's kernel release (`uname -r`).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The XSAVE state components this CPU supports for user state (CPUID leaf 0xD, sub-leaf 0:
/// EDX:EAX), which Linux enables in XCR0. A process may use any of them, so the destination
/// must support every one.
pub fn xsave_features() -> u64 {
    let r = std::arch::x86_64::__cpuid_count(0xd, 0);
    (u64::from(r.edx) << 32) | u64::from(r.eax)
}

/// SHA-256 of this process's `[vdso]` (every process of one kernel has the same one).
pub fn vdso_sha256() -> Vec<u8> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let Some((start, end)) = maps.lines().find_map(|l| {
        if !l.ends_with("[vdso]") {
            return None;
        }
        let range = l.split_whitespace().next()?;
        let (a, b) = range.split_once('-')?;
        Some((
            u64::from_str_radix(a, 16).ok()?,
            u64::from_str_radix(b, 16).ok()?,
        ))
    }) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; (end - start) as usize];
    let read = File::open("/proc/self/mem").and_then(|mut f| {
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)
    });
    match read {
        Ok(()) => ring::digest::digest(&ring::digest::SHA256, &buf)
            .as_ref()
            .to_vec(),
        Err(_) => Vec::new(),
    }
}

/// The ELF build-id (`NT_GNU_BUILD_ID` note) of a 64-bit little-endian ELF file, if any.
pub fn build_id(path: &Path) -> Option<Vec<u8>> {
    let mut f = File::open(path).ok()?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh).ok()?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let phoff = u64_at(&eh, 32);
    let phentsize = usize::from(u16_at(&eh, 54));
    let phnum = usize::from(u16_at(&eh, 56));
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let mut ph = vec![0u8; phentsize * phnum];
    f.seek(SeekFrom::Start(phoff)).ok()?;
    f.read_exact(&mut ph).ok()?;
    for i in 0..phnum {
        let p = &ph[i * phentsize..(i + 1) * phentsize];
        if u32_at(p, 0) != 4 {
            continue; // PT_NOTE
        }
        let (off, size) = (u64_at(p, 8), u64_at(p, 32));
        if size > 1 << 16 {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        f.seek(SeekFrom::Start(off)).ok()?;
        f.read_exact(&mut notes).ok()?;
        let mut o = 0usize;
        while o + 12 <= notes.len() {
            let namesz = u32_at(&notes, o) as usize;
            let descsz = u32_at(&notes, o + 4) as usize;
            let typ = u32_at(&notes, o + 8);
            let name_at = o + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let next = desc_at + descsz.div_ceil(4) * 4;
            if next > notes.len() {
                break;
            }
            if typ == 3 && &notes[name_at..name_at + namesz] == b"GNU\0" {
                return Some(notes[desc_at..desc_at + descsz].to_vec());
            }
            o = next;
        }
    }
    None
}

/// SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish().as_ref().to_vec())
}

/// A path as the process `pid` sees it (through its root, whatever our mount namespace).
pub fn in_root(pid: i32, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

/// Every regular file and directory the process maps or holds open, its executable and its
/// working directory, each once, with what identifies its contents.
pub fn file_checks(pid: i32) -> Vec<FileCheck> {
    // Path → only held open for writing (not mapped, not the executable).
    let mut paths: BTreeMap<String, bool> = BTreeMap::new();
    if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        paths.insert(exe.to_string_lossy().into_owned(), false);
    }
    if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
        paths.insert(cwd.to_string_lossy().into_owned(), false);
    }
    if let Ok(maps) = crate::proc::read(pid, "maps")
        && let Ok(entries) = crate::proc::parse_maps(&maps)
    {
        for e in entries {
            if e.inode != 0 && e.name.starts_with('/') && !e.name.ends_with(" (deleted)") {
                paths.insert(e.name, false);
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(l) = std::fs::read_link(fd.path()) {
                let l = l.to_string_lossy().into_owned();
                if l.starts_with('/') && !l.ends_with(" (deleted)") && !l.starts_with("/dev/") {
                    let written = std::fs::read_to_string(format!(
                        "/proc/{pid}/fdinfo/{}",
                        fd.file_name().to_string_lossy()
                    ))
                    .ok()
                    .and_then(|info| {
                        info.lines()
                            .find_map(|l| l.strip_prefix("flags:"))
                            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                    })
                    .is_some_and(|f| f & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32);
                    let e = paths.entry(l).or_insert(written);
                    *e = *e && written;
                }
            }
        }
    }
    let mut out = Vec::new();
    for (path, written) in paths {
        let local = in_root(pid, &path);
        let Ok(meta) = std::fs::metadata(&local) else {
            continue;
        };
        if !meta.is_file() && !meta.is_dir() {
            continue;
        }
        let mut check = FileCheck {
            path,
            size: if meta.is_file() { meta.size() } else { 0 },
            mtime_ns: mtime_ns(&meta),
            build_id: Vec::new(),
            sha256: Vec::new(),
            written,
        };
        if meta.is_file() && !written {
            match build_id(&local) {
                Some(id) => check.build_id = id,
                None if meta.size() <= HASH_LIMIT => {
                    check.sha256 = sha256_file(&local).unwrap_or_default();
                }
                None => {}
            }
        }
        out.push(check);
    }
    out
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// The identity of the file at `path` (following symlinks).
pub fn identity(path: &Path) -> std::io::Result<FileIdentity> {
    let m = std::fs::metadata(path)?;
    Ok(FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        size: m.size(),
        mtime_ns: mtime_ns(&m),
        rdev: m.rdev(),
    })
}

/// A file the negotiation found the same here: its local identity then.
#[derive(Debug, Clone, Copy)]
pub struct Same {
    /// The local file's identity at the negotiation.
    pub identity: FileIdentity,
    /// Held open for writing: only device and inode must stay the same.
    pub written: bool,
}

/// The most files one negotiation may name (a process holds far fewer).
pub const MAX_FILES: usize = 1 << 16;

/// Whether `path` may be asked about: absolute, with no `.` or `..` component, no NUL.
pub fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('\0')
        && path.len() <= 4096
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path.split('/').any(|c| c == "." || c == "..")
}

/// The destination's answer: what cannot work here, and which files are missing or differ.
/// Returns the reply and the identity of every file found the same (the restore checks they
/// are still those files).
///
/// For the files, the answer is one verdict each (same, differs, missing) and nothing else:
/// never this host's size, mtime, build-id or hash, so the caller learns no more about a path
/// it names than whether it is there and whether it is the file the caller described.
pub fn check(req: &NegotiateRequest) -> (NegotiateReply, BTreeMap<String, Same>) {
    let mut reply = NegotiateReply {
        kernel_release: kernel_release(),
        xsave_features: xsave_features(),
        ..Default::default()
    };
    let missing = req.xsave_features & !reply.xsave_features;
    if missing != 0 {
        reply.problems.push(format!(
            "CPU: the origin's XSAVE features {:#x} include {missing:#x}, which this CPU lacks ({:#x})",
            req.xsave_features, reply.xsave_features
        ));
    }
    let vdso = vdso_sha256();
    if req.vdso_sha256 != vdso {
        reply.problems.push(format!(
            "vDSO: another kernel build (kernel {} there, {} here)",
            req.kernel_release, reply.kernel_release
        ));
    }
    if req.kernel_release != reply.kernel_release && req.vdso_sha256 == vdso {
        // Same vDSO, other release string: the restore only depends on the vDSO and the
        // system calls, so this is not fatal; it is said in the log.
        tracing::info!(
            origin = %req.kernel_release,
            here = %reply.kernel_release,
            "kernel releases differ, vDSO identical"
        );
    }
    let mut same = BTreeMap::new();
    for f in &req.files {
        match check_file(f) {
            Ok(identity) => {
                same.insert(
                    f.path.clone(),
                    Same {
                        identity,
                        written: f.written,
                    },
                );
            }
            Err(verdict) => reply.files.push(FileAnswer {
                path: f.path.clone(),
                verdict: verdict as i32,
            }),
        }
    }
    (reply, same)
}

/// Compares one file. Every way of not being the same collapses into [`FileVerdict::Differs`]
/// (or [`FileVerdict::Missing`]): which of size, build-id or hash differed is not said, so the
/// answer cannot be used to learn this host's size of a file, one property at a time.
fn check_file(f: &FileCheck) -> Result<FileIdentity, FileVerdict> {
    let path = Path::new(&f.path);
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => FileVerdict::Missing,
        _ => FileVerdict::Differs,
    })?;
    let id = identity(path).map_err(|_| FileVerdict::Differs)?;
    let is_dir = f.size == 0 && f.build_id.is_empty() && f.sha256.is_empty() && meta.is_dir();
    if is_dir {
        return Ok(id);
    }
    if !meta.is_file() {
        return Err(FileVerdict::Differs);
    }
    if f.written {
        return Ok(id);
    }
    if meta.size() != f.size {
        return Err(FileVerdict::Differs);
    }
    if !f.build_id.is_empty() {
        return match build_id(path) {
            Some(b) if b == f.build_id => Ok(id),
            _ => Err(FileVerdict::Differs),
        };
    }
    if !f.sha256.is_empty() {
        return match sha256_file(path) {
            Ok(here) if here == f.sha256 => Ok(id),
            _ => Err(FileVerdict::Differs),
        };
    }
    if id.mtime_ns != f.mtime_ns {
        // Too large to hash: size and mtime compared.
        return Err(FileVerdict::Differs);
    }
    Ok(id)
}
