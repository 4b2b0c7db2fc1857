//! `ferry image inspect IMAGE [--json]`, `ferry image export-criu`, `ferry image import-criu`

use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context;
use ferry_agent::image::{ImageSummary, inspect_with_key, sealed_header};
use ferry_agent::state::{DeletedNode, FdKind, PAGE_SIZE, ProcessState, VmaKind, prot};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify an image and summarise it: the process, its VMAs, fds, signal state and the
    /// image's sections with their sizes and digests.
    /// A CRIU image directory (one holding `inventory.img`) is described too.
    Inspect {
        /// Image file, or a CRIU image directory.
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The key of a sealed image; without it a sealed image shows only that it is sealed.
        #[arg(long, value_name = "KEYFILE")]
        key: Option<PathBuf>,
    },
    /// Write a CRIU image directory (CRIU 4.x tables: inventory, pstree, core, mm, pagemap,
    /// pages, files, fdinfo, fs, ids, sigacts) from a Ferry image. What CRIU's tables cannot
    /// express is named in a warning.
    ExportCriu(crate::criu::ExportArgs),
    /// Make a Ferry image from a CRIU image directory. What Ferry's model cannot take is
    /// named in a warning.
    ImportCriu(crate::criu::ImportArgs),
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    let (image, json, key) = match cmd {
        Command::Inspect { image, json, key } => (image, json, key),
        Command::ExportCriu(a) => return crate::criu::export(a),
        Command::ImportCriu(a) => return crate::criu::import(a),
    };
    if ferry_criu::is_criu_dir(&image) {
        return crate::criu::inspect(&image, json);
    }
    let key = crate::key::load(key.as_deref())?;
    let file = File::open(&image).with_context(|| format!("open {}", image.display()))?;
    if key.is_none()
        && let Some((version, aead)) = sealed_header(BufReader::new(&file))
    {
        // Only the clear header can be read: say what it is, and fail like a restore would.
        let text = if json {
            format!("{{\"version\": \"{version}\", \"sealed\": \"{aead}\"}}\n")
        } else {
            format!(
                "image       version {version}, sealed ({aead}): give --key KEYFILE to read and verify it\n"
            )
        };
        return crate::write_stdout(&text);
    }
    let file = File::open(&image).with_context(|| format!("open {}", image.display()))?;
    let summary = inspect_with_key(BufReader::with_capacity(1 << 20, file), key.as_ref())
        .with_context(|| format!("inspect {}", image.display()))?;
    let text = if json {
        serde_json::to_string_pretty(&summary)? + "\n"
    } else {
        render(&summary)
    };
    crate::write_stdout(&text)
}

fn queued(q: Option<&ferry_agent::state::PipeQueue>) -> String {
    q.map(|q| {
        format!(
            ", {} bytes queued, buffer {}",
            q.data.len(),
            mib(u64::from(q.size))
        )
    })
    .unwrap_or_default()
}

fn mib(bytes: u64) -> String {
    match bytes {
        0 => "0".into(),
        b if b < 1 << 20 => format!("{} KiB", b >> 10),
        b if b < 1 << 30 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
    }
}

fn render(s: &ImageSummary) -> String {
    let p = &s.process;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "image       version {} ({}{}), {} in all",
        s.version,
        s.arch,
        s.sealed
            .map(|a| format!(", sealed {a}"))
            .unwrap_or_default(),
        mib(s.image_bytes)
    );
    let _ = writeln!(
        o,
        "process     pid {} ({}), parent {}, group {}, session {}",
        p.pid, p.comm, p.ppid, p.pgid, p.sid
    );
    let _ = writeln!(o, "executable  {}", p.exe.path);
    let _ = writeln!(o, "cwd         {}  umask {:03o}", p.cwd, p.umask);
    let _ = writeln!(
        o,
        "credentials uid {:?} gid {:?} groups {:?}",
        p.creds.uids, p.creds.gids, p.creds.groups
    );
    let _ = writeln!(
        o,
        "memory      {} pages stored ({})",
        s.pages,
        mib(s.raw_bytes)
    );

    let _ = writeln!(o, "\nVMAs ({}):", p.mm.vmas.len());
    for v in &p.mm.vmas {
        let perms = format!(
            "{}{}{}{}",
            if v.prot & prot::READ != 0 { 'r' } else { '-' },
            if v.prot & prot::WRITE != 0 { 'w' } else { '-' },
            if v.prot & prot::EXEC != 0 { 'x' } else { '-' },
            if v.shared { 's' } else { 'p' }
        );
        let what = match &v.kind {
            VmaKind::File(f) => f.path.clone(),
            VmaKind::Anonymous => "anonymous".into(),
            VmaKind::SharedAnonymous { ino, .. } => format!("shared anonymous (inode {ino})"),
            VmaKind::SysvShm { id } => format!("SysV shm id {id}"),
            VmaKind::Heap => "[heap]".into(),
            VmaKind::Stack => "[stack]".into(),
            VmaKind::Vdso => "[vdso]".into(),
            VmaKind::Vvar => "[vvar]".into(),
            VmaKind::VvarVclock => "[vvar_vclock]".into(),
            VmaKind::Vsyscall => "[vsyscall]".into(),
            VmaKind::Memfd { ino } => memfd_name(p, *ino),
            VmaKind::DeletedFile { path, .. } => format!("{path} (deleted, carried)"),
            VmaKind::AioRing => match p.mm.aio_rings.iter().find(|r| r.start == v.start) {
                Some(r) => format!(
                    "AIO context ring ({} events, {} not reaped)",
                    r.nr,
                    (u64::from(r.tail) + u64::from(r.nr) - u64::from(r.head))
                        % u64::from(r.nr.max(1))
                ),
                None => "AIO context ring".into(),
            },
        };
        let inherited: u64 = v.inherited.iter().map(|r| r.count).sum();
        let from_parent = if inherited == 0 {
            String::new()
        } else {
            format!(" ({} shared with the parent)", mib(inherited * PAGE_SIZE))
        };
        let _ = writeln!(
            o,
            "  {:012x}-{:012x} {perms} {:>10} {:>8} stored  {what}{from_parent}",
            v.start,
            v.end,
            mib(v.end - v.start),
            mib(v.stored_pages() * PAGE_SIZE)
        );
    }

    let _ = writeln!(o, "\nfds ({}):", p.fds.len());
    for f in &p.fds {
        let what = match &f.kind {
            FdKind::File { file, pos } => format!("file {} at offset {pos}", file.path),
            FdKind::Directory { file, .. } => format!("directory {}", file.path),
            FdKind::CharDevice { file } => format!("device {}", file.path),
            FdKind::Tty { file } => format!("terminal {}", file.path),
            FdKind::PtyMaster(t) => format!(
                "pseudo-terminal master of /dev/pts/{} ({}x{}{}{}), {} B queued in, {} B out",
                t.index,
                t.winsize[0],
                t.winsize[1],
                if t.packet { ", packet mode" } else { "" },
                if t.locked { ", locked" } else { "" },
                t.input.len(),
                t.output.len()
            ),
            FdKind::PtySlave { file, .. } => {
                format!("pseudo-terminal slave {} (pair in the image)", file.path)
            }
            FdKind::Pipe { ino } => format!("pipe:[{ino}]"),
            FdKind::Epoll { targets } => {
                let fds: Vec<String> = targets.iter().map(|t| t.fd.to_string()).collect();
                format!("epoll watching fds {}", fds.join(", "))
            }
            FdKind::Socket(s) => describe_socket(s),
            FdKind::Dup { of } => format!("same open file as fd {of}"),
            FdKind::LocalPipe { ino, queue } => {
                format!("pipe:[{ino}] (recreated){}", queued(queue.as_ref()))
            }
            FdKind::Fifo { file, queue } => format!("FIFO {}{}", file.path, queued(queue.as_ref())),
            FdKind::DeletedFile {
                path, node, pos, ..
            } => match node {
                DeletedNode::Regular { size, extents } => format!(
                    "file {path} (deleted), {} of {} stored, at offset {pos}",
                    mib(extents.iter().map(|e| e.data.len() as u64).sum()),
                    mib(*size)
                ),
                DeletedNode::Fifo { queue } => {
                    format!("FIFO {path} (deleted){}", queued(queue.as_ref()))
                }
                DeletedNode::CharDevice { rdev } => {
                    format!("device {rdev:#x} {path} (deleted)")
                }
                DeletedNode::Directory => format!("directory {path} (removed)"),
            },
            FdKind::Eventfd { count, semaphore } => {
                format!(
                    "eventfd count {count}{}",
                    if *semaphore { " semaphore" } else { "" }
                )
            }
            FdKind::Signalfd { mask } => format!("signalfd mask {mask:#018x}"),
            FdKind::Pidfd { pid } => format!("pidfd of pid {pid}"),
            FdKind::Timerfd(t) => format!(
                "timerfd clock {} value {} ns{} interval {} ns, {} unread",
                t.clockid,
                t.value_ns,
                if t.settime_flags & 1 != 0 {
                    " (absolute)"
                } else {
                    ""
                },
                t.interval_ns,
                t.ticks
            ),
            FdKind::Inotify { watches } => {
                let w: Vec<String> = watches
                    .iter()
                    .map(|w| format!("{}={} mask {:#x}", w.wd, w.file.path, w.mask))
                    .collect();
                format!("inotify {}", w.join(", "))
            }
            FdKind::Fanotify(g) => {
                use ferry_agent::state::FanotifyTarget;
                let m: Vec<String> = g
                    .marks
                    .iter()
                    .map(|m| {
                        let on = match &m.target {
                            FanotifyTarget::Inode(f) => f.path.clone(),
                            FanotifyTarget::Mount { path } => format!("mount {path}"),
                            FanotifyTarget::Filesystem { path } => format!("filesystem {path}"),
                        };
                        format!(
                            "{on} mask {:#x} ignored {:#x} mflags {:#x}",
                            m.mask, m.ignored_mask, m.mflags
                        )
                    })
                    .collect();
                format!(
                    "fanotify flags {:#x} event flags {:#o}: {}",
                    g.flags,
                    g.event_flags,
                    m.join(", ")
                )
            }
            FdKind::Memfd { ino, pos } => format!("{} at offset {pos}", memfd_name(p, *ino)),
            FdKind::Shared { pid, fd } => format!("shared with pid {pid} fd {fd}"),
        };
        let _ = writeln!(
            o,
            "  {:>4}  flags {:#o}{}  {what}",
            f.fd,
            f.flags,
            if f.cloexec { " cloexec" } else { "" }
        );
    }
    if !p.locks.is_empty() {
        let _ = writeln!(o, "\nlocks ({}):", p.locks.len());
        for l in &p.locks {
            let mode = if l.write { "write" } else { "read" };
            let range = if l.len == 0 {
                format!("{}..EOF", l.start)
            } else {
                format!("{}..+{}", l.start, l.len)
            };
            let _ = writeln!(o, "  fd {:>4}  {:?} {mode} {range}", l.fd, l.kind);
        }
    }

    let _ = writeln!(o, "\nsignals:");
    let caught: Vec<String> = p
        .signals
        .actions
        .iter()
        .filter(|a| a.handler > 1)
        .map(|a| a.signo.to_string())
        .collect();
    let ignored: Vec<String> = p
        .signals
        .actions
        .iter()
        .filter(|a| a.handler == 1)
        .map(|a| a.signo.to_string())
        .collect();
    let _ = writeln!(
        o,
        "  handled  {}",
        if caught.is_empty() {
            "-".into()
        } else {
            caught.join(" ")
        }
    );
    let _ = writeln!(
        o,
        "  ignored  {}",
        if ignored.is_empty() {
            "-".into()
        } else {
            ignored.join(" ")
        }
    );
    for t in &p.threads {
        let pending: Vec<String> = t
            .pending
            .iter()
            .chain(&p.signals.shared_pending)
            .map(|s| s.signo.to_string())
            .collect();
        let _ = writeln!(
            o,
            "  thread {}: blocked {:#018x}, pending {}",
            t.tid,
            t.sigmask,
            if pending.is_empty() {
                "-".into()
            } else {
                pending.join(" ")
            }
        );
        if t.sigaltstack.flags & libc_ss_disable() == 0 {
            let _ = writeln!(
                o,
                "  thread {}: alternate stack at {:#x}, {} bytes",
                t.tid, t.sigaltstack.sp, t.sigaltstack.size
            );
        }
    }

    if !s.more.is_empty() || !s.zombies.is_empty() {
        let _ = writeln!(o, "\ntree: {} more processes", s.more.len());
        for m in &s.more {
            let inherited: u64 =
                m.mm.vmas
                    .iter()
                    .flat_map(|v| &v.inherited)
                    .map(|r| r.count)
                    .sum();
            let from_parent = if inherited == 0 {
                String::new()
            } else {
                format!(", {} shared with its parent", mib(inherited * PAGE_SIZE))
            };
            let _ = writeln!(
                o,
                "  pid {} ({}), parent {}, group {}, session {}, {} threads, {} vmas, {} fds{from_parent}",
                m.pid,
                m.comm,
                m.ppid,
                m.pgid,
                m.sid,
                m.threads.len(),
                m.mm.vmas.len(),
                m.fds.len()
            );
        }
        for z in &s.zombies {
            let _ = writeln!(
                o,
                "  pid {} (zombie), parent {}, wait status {:#x}",
                z.pid, z.ppid, z.status
            );
        }
    }
    let _ = writeln!(o, "\nsections ({}):", s.sections.len());
    for sec in &s.sections {
        let _ = writeln!(
            o,
            "  {:<16} at {:>12}  {:>10} stored  {:>10} raw  {:<5} digest {} {}",
            sec.name,
            sec.offset,
            sec.stored_size,
            sec.raw_size,
            format!("{:?}", sec.codec).to_lowercase(),
            s.digest,
            sec.digest
        );
    }
    o
}

/// `SS_DISABLE`.
fn libc_ss_disable() -> u32 {
    2
}

fn describe_socket(s: &ferry_agent::state::SocketState) -> String {
    use ferry_agent::state::SocketKind;
    let ty = match s.sock_type as i32 {
        nix::libc::SOCK_STREAM => "stream",
        nix::libc::SOCK_DGRAM => "dgram",
        nix::libc::SOCK_RAW => "raw",
        _ => "seqpacket",
    };
    match &s.kind {
        SocketKind::Packet(p) => format!(
            "packet {ty} socket:[{}] protocol {:#06x} on {}{}{}",
            s.ino,
            p.protocol,
            if p.interface.is_empty() {
                "every interface"
            } else {
                &p.interface
            },
            if p.memberships.is_empty() {
                String::new()
            } else {
                format!(", {} membership(s)", p.memberships.len())
            },
            if p.fanout == 0 {
                String::new()
            } else {
                format!(", fanout group {}", p.fanout & 0xffff)
            }
        ),
        SocketKind::Netlink(n) => format!(
            "netlink {ty} socket:[{}] protocol {} port id {}, groups {:x?}",
            s.ino, n.protocol, n.port_id, n.groups
        ),
        SocketKind::Unix(u) => {
            let name = |n: &[u8]| match n.split_first() {
                None => "unnamed".to_string(),
                Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
                Some(_) => String::from_utf8_lossy(n).into_owned(),
            };
            let state = if let Some(b) = u.backlog {
                format!(" listening (backlog {b})")
            } else if u.peer_external {
                format!(" connected to external {}", name(&u.peer_name))
            } else if u.peer_ino != 0 {
                format!(" connected to socket:[{}]", u.peer_ino)
            } else {
                String::new()
            };
            let queued: usize = u.queue.iter().map(Vec::len).sum();
            format!(
                "unix {ty} socket:[{}] {}{state}, {} message(s) / {queued} bytes queued",
                s.ino,
                name(&u.name),
                u.queue.len()
            )
        }
        SocketKind::Inet(i) => {
            let proto = match (s.sock_type as i32, i.protocol as i32) {
                (nix::libc::SOCK_RAW, p) => format!("raw({p})"),
                (_, nix::libc::IPPROTO_TCP) => "tcp".into(),
                (_, nix::libc::IPPROTO_UDPLITE) => "udplite".into(),
                (_, nix::libc::IPPROTO_ICMP | nix::libc::IPPROTO_ICMPV6) => "ping".into(),
                _ => "udp".into(),
            };
            let state = match (&i.backlog, &i.peer, &i.tcp) {
                (Some(b), _, _) => format!(" listening (backlog {b})"),
                (_, Some(p), Some(t)) => format!(
                    " -> {p} established, {} bytes to send ({} never sent), {} bytes received",
                    t.send_queue.len(),
                    t.unsent,
                    t.recv_queue.len()
                ),
                (_, Some(p), None) => format!(" -> {p}"),
                _ => String::new(),
            };
            format!("{proto} socket:[{}] {}{state}", s.ino, i.local)
        }
    }
}

fn memfd_name(p: &ProcessState, ino: u64) -> String {
    match p.memfds.iter().find(|m| m.ino == ino) {
        Some(m) => format!("memfd:{} ({} bytes, seals {:#x})", m.name, m.size, m.seals),
        None => format!("memfd inode {ino}"),
    }
}
