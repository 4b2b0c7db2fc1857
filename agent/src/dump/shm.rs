//! SysV shared memory (`shmget`/`shmat`): the segments a process has attached, from
//! `/proc/sysvipc/shm`, and their contents, read through the process's own mappings.

use std::fs::File;
use std::os::unix::fs::FileExt;

use nix::unistd::Pid;

use super::DumpError;
use crate::image::MAX_SYSV_SHM_BYTES;
use crate::proc;
use crate::state::{
    IPC_PID_OTHER, IpcNsState, IpcPermState, MemfdExtent, MsgQueueState, PAGE_SIZE, SemSetState,
    SysvMsgState, SysvShmState, VmaKind, VmaState,
};

/// `SHM_DEST` in `shm_perm.mode`: marked for removal.
const SHM_DEST: u32 = 0o1000;

/// Every segment the VMAs of `pid` attach, with the contents those VMAs show (zero pages left
/// out). The process is frozen: its memory is read through `/proc/PID/mem`.
pub fn collect_sysv(pid: Pid, vmas: &[VmaState]) -> Result<Vec<SysvShmState>, DumpError> {
    let ids: Vec<i32> = vmas
        .iter()
        .filter_map(|v| match v.kind {
            VmaKind::SysvShm { id } => Some(id),
            _ => None,
        })
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let all = proc::sysv_segments()?;
    let path = format!("/proc/{pid}/mem");
    let mem = File::open(&path).map_err(|source| proc::ProcError::Read {
        path: path.clone().into(),
        source,
    })?;
    let mut out: Vec<SysvShmState> = Vec::new();
    let mut bytes = 0usize;
    for id in ids {
        if out.iter().any(|s| s.id == id) {
            continue;
        }
        let info = all.iter().find(|s| s.id == id).ok_or_else(|| {
            DumpError::Unsupported(format!(
                "SysV shared memory id {id} is not in /proc/sysvipc/shm (another IPC namespace?)"
            ))
        })?;
        // Page by page, from the first VMA that shows it.
        let pages = info.size.div_ceil(PAGE_SIZE) as usize;
        let mut seen = vec![false; pages];
        let mut data: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut page = vec![0u8; PAGE_SIZE as usize];
        for v in vmas.iter().filter(|v| v.kind == VmaKind::SysvShm { id }) {
            for addr in (v.start..v.end).step_by(PAGE_SIZE as usize) {
                let off = v.pgoff + (addr - v.start);
                let Some(slot) = seen.get_mut((off / PAGE_SIZE) as usize) else {
                    continue;
                };
                if *slot {
                    continue;
                }
                *slot = true;
                mem.read_exact_at(&mut page, addr)
                    .map_err(|source| proc::ProcError::Read {
                        path: path.clone().into(),
                        source,
                    })?;
                if page.iter().all(|b| *b == 0) {
                    continue;
                }
                bytes += page.len();
                if bytes > MAX_SYSV_SHM_BYTES {
                    return Err(DumpError::Unsupported(format!(
                        "SysV shared memory id {id}: more than {MAX_SYSV_SHM_BYTES} bytes of SysV shared memory in one process is not supported yet"
                    )));
                }
                data.push((off, page.clone()));
            }
        }
        data.sort_by_key(|(off, _)| *off);
        let mut extents: Vec<MemfdExtent> = Vec::new();
        for (off, d) in data {
            match extents.last_mut() {
                Some(e) if e.offset + e.data.len() as u64 == off => e.data.extend_from_slice(&d),
                _ => extents.push(MemfdExtent {
                    offset: off,
                    data: d,
                }),
            }
        }
        // The last page may be partly beyond the segment.
        if let Some(e) = extents.last_mut() {
            let max = info.size.saturating_sub(e.offset) as usize;
            e.data.truncate(max);
        }
        out.push(SysvShmState {
            id,
            key: info.key,
            mode: info.perms & 0o777,
            size: info.size,
            uid: info.uid,
            gid: info.gid,
            cuid: info.cuid,
            cgid: info.cgid,
            removed: info.perms & SHM_DEST != 0,
            extents,
        });
    }
    Ok(out)
}

/// A process in an IPC namespace other than ferry's own (`unshare(CLONE_NEWIPC)`) is dumped
/// with that namespace when nothing else can see it: no other process is in it (its objects
/// would be theirs too, and two copies of them would part), every thread of the process is
/// (a thread may have joined another with `setns`), and it holds no POSIX message queue (not
/// carried yet). `in_tree`: the process is one of a dumped tree, whose namespaces are not
/// carried yet. In ferry's namespace, a process with `SEM_UNDO` adjustments is refused: they
/// are read only in a namespace of its own.
pub fn check_ipc_namespace(pid: Pid, in_tree: bool) -> Result<(), DumpError> {
    let raw = pid.as_raw();
    let Some(ns) = crate::ipcns::private_ns(raw) else {
        // SEM_UNDO adjustments in ferry's namespace are looked for under the freeze
        // ([`host_undo_sets`], [`refuse_host_undo`]).
        return Ok(());
    };
    let link = |p: String| std::fs::read_link(p).ok();
    let theirs = link(format!("/proc/{raw}/ns/ipc"));
    let held = || {
        ipc_objects_of(&ns)
            .map(|(msg, sem, shm)| {
                let n = |k: usize, one: &str, many: &str| {
                    format!("{k} {}", if k == 1 { one } else { many })
                };
                format!(
                    " holding {}, {} and {}",
                    n(msg, "SysV message queue", "SysV message queues"),
                    n(sem, "semaphore set", "semaphore sets"),
                    n(shm, "shared memory segment", "shared memory segments"),
                )
            })
            .unwrap_or_default()
    };
    if in_tree {
        return Err(DumpError::Unsupported(format!(
            "pid {raw}: a private IPC namespace (unshare CLONE_NEWIPC){} in a process tree \
             (--tree) is not supported yet (only a single process's)",
            held()
        )));
    }
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{raw}/task")) {
        for t in tasks.flatten() {
            let tid = t.file_name().to_string_lossy().into_owned();
            if link(format!("/proc/{raw}/task/{tid}/ns/ipc")) != theirs {
                return Err(DumpError::Unsupported(format!(
                    "thread {tid} of pid {raw} is in another IPC namespace than its process \
                     (setns): not supported"
                )));
            }
        }
    }
    if let Ok(all) = std::fs::read_dir("/proc") {
        for e in all.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(other) = name.parse::<i32>() else {
                continue;
            };
            if other != raw && link(format!("/proc/{other}/ns/ipc")) == theirs {
                return Err(DumpError::Unsupported(format!(
                    "a private IPC namespace (unshare CLONE_NEWIPC){} shared with pid {other}, \
                     which is not dumped: its SysV objects are that process's too",
                    held()
                )));
            }
        }
    }
    let queues = crate::ipcns::in_ns(&ns, crate::ipcns::mqueue_names)
        .map_err(|e| format!("join it: {e}"))
        .and_then(|r| r)
        .map_err(|e| {
            DumpError::Unsupported(format!(
                "pid {raw} is in a private IPC namespace whose POSIX message queues cannot be \
                 listed ({e})"
            ))
        })?;
    if !queues.is_empty() {
        return Err(DumpError::Unsupported(format!(
            "POSIX message queue{} /{} in the private IPC namespace of pid {raw}: not \
             supported yet",
            if queues.len() == 1 { "" } else { "s" },
            queues.join(", /")
        )));
    }
    Ok(())
}

/// The semaphore sets of ferry's own IPC namespace on which a process with `status` (whose
/// IPC namespace it is) may hold `SEM_UNDO` adjustments, with their values, for
/// [`probe_sem_undo`]; none when it has no undo list. A process holds an undo list as soon as
/// it has a second thread (`CLONE_SYSVSEM` makes one), so the list alone says nothing: only
/// the sets it may alter are asked (it needed that permission for the `semop`; a set whose
/// permissions were taken away from it since is not asked).
pub fn host_undo_sets(
    pid: Pid,
    status: &crate::proc::Status,
) -> Result<Vec<(i32, Vec<u32>)>, DumpError> {
    if !has_sem_undo(pid) {
        return Ok(Vec::new());
    }
    const CAP_IPC_OWNER: u64 = 1 << 15;
    let owner = status.caps[2] & CAP_IPC_OWNER != 0;
    let (euid, egid) = (status.uids[1], status.gids[1]);
    let may_alter = |p: &crate::ipcns::PermInfo| {
        let bits = if euid == p.uid || euid == p.cuid {
            p.perms >> 6
        } else if [p.gid, p.cgid]
            .iter()
            .any(|g| *g == egid || status.groups.contains(g))
        {
            p.perms >> 3
        } else {
            p.perms
        };
        owner || bits & 0o2 != 0
    };
    let text = crate::ipcns::read_sysvipc("sem").map_err(DumpError::Unsupported)?;
    let mut sets = Vec::new();
    let mut sems = 0;
    for s in crate::ipcns::parse_sem(&text)
        .into_iter()
        .filter(|s| may_alter(&s.perm))
    {
        let id = s.perm.id;
        let values = match crate::sys::sem_getall(id, s.nsems) {
            Ok(v) => v,
            // Removed meanwhile: nothing to hold.
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EIDRM) => continue,
            Err(e) => {
                return Err(DumpError::Unsupported(format!(
                    "semaphore set {id}: semctl(GETALL): {e}"
                )));
            }
        };
        sems += values.len();
        if sems > crate::dump::MAX_UNDO_PROBED {
            return Err(DumpError::Unsupported(format!(
                "pid {}: looking for its SEM_UNDO adjustments among more than {} semaphores \
                 of the host's IPC namespace is not supported",
                pid.as_raw(),
                crate::dump::MAX_UNDO_PROBED
            )));
        }
        sets.push((id, values.into_iter().map(u32::from).collect()));
    }
    Ok(sets)
}

/// Refuses a process in ferry's own IPC namespace with a `SEM_UNDO` adjustment other than 0
/// (`undo`, from [`probe_sem_undo`]): the sets stay on this host, the adjustments are not
/// carried.
pub fn refuse_host_undo(pid: Pid, undo: &[crate::state::SemUndoState]) -> Result<(), DumpError> {
    match undo.iter().find(|u| u.adj.iter().any(|a| *a != 0)) {
        Some(u) => Err(DumpError::Unsupported(format!(
            "pid {} has SysV semaphore undo adjustments (semop with SEM_UNDO) on semaphore set \
             {} of the host's IPC namespace ({:?}): they are carried only for a process in an \
             IPC namespace of its own (unshare CLONE_NEWIPC)",
            pid.as_raw(),
            u.id,
            u.adj
        ))),
        None => Ok(()),
    }
}

/// Whether `pid` has a list of SysV semaphore undo adjustments (it did a `semop` with
/// `SEM_UNDO`): `kcmp` compares its list with ferry's, which has none.
pub fn has_sem_undo(pid: Pid) -> bool {
    !crate::sys::same_kernel_object(pid, nix::unistd::getpid(), crate::sys::Kcmp::Sysvsem)
        .unwrap_or(true)
}

/// How many SysV message queues, semaphore sets and shared memory segments the IPC namespace
/// `ns` holds.
fn ipc_objects_of(ns: &File) -> Option<(usize, usize, usize)> {
    crate::ipcns::in_ns(ns, || {
        let count = |what: &str| {
            std::fs::read_to_string(format!("/proc/sysvipc/{what}"))
                .ok()
                .map(|t| t.lines().skip(1).filter(|l| !l.trim().is_empty()).count())
        };
        Some((count("msg")?, count("sem")?, count("shm")?))
    })
    .ok()
    .flatten()
}

/// Everything of the private IPC namespace `ns` of a process (`pid` as ferry sees it,
/// `ns_pid` as it sees itself): its sysctls, message queues with their messages (copied with
/// `MSG_COPY`, which leaves them queued), semaphore sets, and every shared memory segment
/// with its contents (attached read-only by ferry for the copy). The last pids of operations
/// are kept as the process sees them: none, itself, or another process.
pub fn collect_ipc_ns(
    ns: &File,
    pid: i32,
    ns_pid: i32,
) -> Result<(IpcNsState, Vec<SysvShmState>), DumpError> {
    let own = |p: i32| match p {
        0 => 0,
        p if p == pid => ns_pid,
        _ => IPC_PID_OTHER,
    };
    let read = move || -> Result<(IpcNsState, Vec<SysvShmState>), String> {
        let mut out = IpcNsState {
            sysctls: crate::ipcns::read_sysctls(),
            ..IpcNsState::default()
        };
        let perm = |p: &crate::ipcns::PermInfo| IpcPermState {
            id: p.id,
            key: p.key,
            mode: p.perms & 0o777,
            uid: p.uid,
            gid: p.gid,
            cuid: p.cuid,
            cgid: p.cgid,
        };
        let mut bytes = 0usize;
        for q in crate::ipcns::parse_msg(&crate::ipcns::read_sysvipc("msg")?) {
            let id = q.perm.id;
            let qbytes = crate::sys::msg_qbytes(id)
                .map_err(|e| format!("message queue {id}: msgctl(IPC_STAT): {e}"))?;
            let mut messages = Vec::new();
            for i in 0..q.qnum as usize {
                let (mtype, text) =
                    crate::sys::msg_copy(id, i, q.cbytes as usize).map_err(|e| {
                        format!("message queue {id}: message {i}: msgrcv(MSG_COPY): {e}")
                    })?;
                bytes += text.len();
                if bytes > crate::image::MAX_SYSV_MSG_BYTES {
                    return Err(format!(
                        "message queue {id}: more than {} bytes of queued SysV messages are not \
                         supported",
                        crate::image::MAX_SYSV_MSG_BYTES
                    ));
                }
                messages.push(SysvMsgState { mtype, text });
            }
            out.msg_queues.push(MsgQueueState {
                perm: perm(&q.perm),
                qbytes,
                lspid: own(q.lspid),
                lrpid: own(q.lrpid),
                messages,
            });
        }
        for s in crate::ipcns::parse_sem(&crate::ipcns::read_sysvipc("sem")?) {
            let id = s.perm.id;
            let values = crate::sys::sem_getall(id, s.nsems)
                .map_err(|e| format!("semaphore set {id}: semctl(GETALL): {e}"))?;
            let pids = (0..s.nsems)
                .map(|i| crate::sys::sem_getpid(id, i).map(own))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("semaphore set {id}: semctl(GETPID): {e}"))?;
            out.sem_sets.push(SemSetState {
                perm: perm(&s.perm),
                values: values.into_iter().map(u32::from).collect(),
                pids,
            });
        }
        let mut segs = Vec::new();
        let mut total = 0usize;
        for info in crate::proc::parse_sysvipc_shm(&crate::ipcns::read_sysvipc("shm")?) {
            let id = info.id;
            let data = crate::sys::shm_read(id, info.size as usize)
                .map_err(|e| format!("shared memory segment {id}: shmat: {e}"))?;
            let mut extents: Vec<MemfdExtent> = Vec::new();
            for (n, page) in data.chunks(PAGE_SIZE as usize).enumerate() {
                if page.iter().all(|b| *b == 0) {
                    continue;
                }
                total += page.len();
                if total > MAX_SYSV_SHM_BYTES {
                    return Err(format!(
                        "shared memory segment {id}: more than {MAX_SYSV_SHM_BYTES} bytes of \
                         SysV shared memory are not supported yet"
                    ));
                }
                let off = n as u64 * PAGE_SIZE;
                match extents.last_mut() {
                    Some(e) if e.offset + e.data.len() as u64 == off => {
                        e.data.extend_from_slice(page)
                    }
                    _ => extents.push(MemfdExtent {
                        offset: off,
                        data: page.to_vec(),
                    }),
                }
            }
            segs.push(SysvShmState {
                id,
                key: info.key,
                mode: info.perms & 0o777,
                size: info.size,
                uid: info.uid,
                gid: info.gid,
                cuid: info.cuid,
                cgid: info.cgid,
                removed: info.perms & SHM_DEST != 0,
                extents,
            });
        }
        Ok((out, segs))
    };
    crate::ipcns::in_ns(ns, read)
        .map_err(|e| format!("join it: {e}"))
        .and_then(|r| r)
        .map_err(|e| DumpError::Unsupported(format!("pid {pid}: its private IPC namespace: {e}")))
}

/// Runs one `semop(id, sops)` (`sembuf`s as number, operation, flags) in the process and
/// returns its raw result.
pub type SemopFn<'a> = dyn FnMut(i32, &[(u16, i16, i16)]) -> Result<i64, DumpError> + 'a;

/// `IPC_NOWAIT` and `SEM_UNDO` in a `sembuf`.
const IPC_NOWAIT: i16 = 0o4000;
const SEM_UNDO: i16 = 0x1000;

/// The `SEM_UNDO` adjustments (`semadj`) the process has on the semaphore sets `sets` (id and
/// values), which no interface shows: found by asking the process to run `semop`s that are
/// bound to fail. Within one `semop` on one semaphore the kernel applies the operations in
/// turn and undoes them all at the first that cannot go, so pairs that leave the value as it
/// is but move the adjustment (`+k` with `SEM_UNDO`, then `-k` without) followed by one that
/// cannot go (`-(value+1)`, `IPC_NOWAIT`) fail with `ERANGE` when the adjustment would leave
/// its range on the way, with `EAGAIN` otherwise, and change nothing either way: a binary
/// search over the range (-32768..=32767). `semop(id, sops)` runs one in the process and
/// returns its raw result.
pub fn probe_sem_undo(
    sets: &[(i32, Vec<u32>)],
    semop: &mut SemopFn<'_>,
) -> Result<Vec<crate::state::SemUndoState>, DumpError> {
    let mut out = Vec::new();
    for (id, values) in sets {
        let id = *id;
        let mut adj = Vec::with_capacity(values.len());
        for (num, &v) in values.iter().enumerate() {
            let v = v.min(32767) as i32;
            // Whether semadj < t.
            let mut below = |t: i32| -> Result<bool, DumpError> {
                let up_first = v <= 16383;
                let kmax = if up_first { 32767 - v } else { v };
                let mut left = if up_first { t + 32768 } else { 32768 - t };
                let mut ops = Vec::new();
                while left > 0 {
                    let k = left.min(kmax);
                    let (a, b) = if up_first { (k, -k) } else { (-k, k) };
                    ops.push((num as u16, a as i16, SEM_UNDO | IPC_NOWAIT));
                    ops.push((num as u16, b as i16, IPC_NOWAIT));
                    left -= k;
                }
                ops.push((num as u16, (-(v + 1)) as i16, IPC_NOWAIT));
                let r = semop(id, &ops)?;
                match -r as i32 {
                    libc::ERANGE => Ok(up_first),
                    libc::EAGAIN => Ok(!up_first),
                    _ => Err(DumpError::Unsupported(format!(
                        "semaphore set {id}: its SEM_UNDO adjustments cannot be read: semop \
                         gave {}",
                        if (-4095..0).contains(&r) {
                            nix::errno::Errno::from_raw(-r as i32).to_string()
                        } else {
                            format!("{r} (it went through)")
                        }
                    ))),
                }
            };
            // Most are 0: two probes say so.
            let a = if !below(0)? && below(1)? {
                0
            } else {
                let (mut lo, mut hi) = (-32768i32, 32768i32);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if below(mid)? {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                lo
            };
            adj.push(a);
        }
        if adj.iter().any(|a| *a != 0) {
            out.push(crate::state::SemUndoState { id, adj });
        }
    }
    Ok(out)
}
