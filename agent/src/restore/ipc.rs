//! A private IPC namespace made again: the new task leaves the restorer's namespace for a new
//! one (`unshare(CLONE_NEWIPC)`) before anything else of the image is built, a thread of
//! ferry that joins it sets its sysctls and, before each object, the id the next one gets
//! (`/proc/sys/kernel/{msg,sem}_next_id`), and the task itself makes the objects (so that the
//! kernel records it as their creator and last user): message queues filled in order,
//! semaphore sets with their values and the process's own `SEM_UNDO` adjustments. Shared
//! memory segments are made by [`super::shm::SharedMemory`] in the same namespace.

use std::fs::File;

use nix::errno::Errno;

use super::RestoreError;
use super::inject::Injector;
use crate::state::{IpcNsState, IpcPermState, MsgQueueState, ProcessState, SemSetState};

const IPC_NOWAIT: u64 = 0o4000;
const SEM_UNDO: i16 = 0x1000;
const SETVAL: u64 = 16;

fn ipc_err(what: impl Into<String>) -> RestoreError {
    RestoreError::Layout(format!("private IPC namespace: {}", what.into()))
}

/// Runs `f` in the namespace `ns` on a thread of ours.
pub fn in_ns<T: Send>(
    ns: &File,
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, RestoreError> {
    crate::ipcns::in_ns(ns, f)
        .map_err(|e| ipc_err(format!("join it: {e}")))?
        .map_err(ipc_err)
}

/// Moves the task into a new IPC namespace and fills it as `state.ipc_ns` says; returns the
/// namespace (`/proc/TASK/ns/ipc`), for the shared memory segments.
pub fn make(inj: &Injector<'_>, state: &ProcessState) -> Result<Option<File>, RestoreError> {
    let Some(ns_state) = &state.ipc_ns else {
        return Ok(None);
    };
    inj.call(
        "unshare(CLONE_NEWIPC)",
        libc::SYS_unshare,
        [libc::CLONE_NEWIPC as u64, 0, 0, 0, 0, 0],
    )?;
    let path = format!("/proc/{}/ns/ipc", inj.tracee().pid());
    let ns = File::open(&path).map_err(|source| RestoreError::Io {
        what: format!("open {path}"),
        source,
    })?;
    let sysctls = ns_state.sysctls.clone();
    in_ns(&ns, move || crate::ipcns::write_sysctls(&sysctls))?;
    fill(inj, &ns, state.pid, ns_state)?;
    Ok(Some(ns))
}

fn fill(inj: &Injector<'_>, ns: &File, own: i32, s: &IpcNsState) -> Result<(), RestoreError> {
    // One buffer in the task for the largest message (its type, then its text).
    let largest = s
        .msg_queues
        .iter()
        .flat_map(|q| &q.messages)
        .map(|m| m.text.len())
        .max()
        .unwrap_or(0);
    let buf_len = (8 + largest as u64).div_ceil(4096) * 4096;
    let buf = inj.call(
        "mmap",
        libc::SYS_mmap,
        [
            0,
            buf_len,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    )?;
    let result = (|| {
        for q in &s.msg_queues {
            make_queue(inj, ns, own, q, buf)
                .map_err(|e| ipc_err(format!("message queue {}: {e}", q.perm.id)))?;
        }
        for set in &s.sem_sets {
            let undo = s.sem_undo.iter().find(|u| u.id == set.perm.id);
            make_sem_set(inj, ns, set, undo.map(|u| u.adj.as_slice()))
                .map_err(|e| ipc_err(format!("semaphore set {}: {e}", set.perm.id)))?;
        }
        Ok(())
    })();
    inj.call("munmap", libc::SYS_munmap, [buf, buf_len, 0, 0, 0, 0])?;
    result
}

/// Makes an object with `get` (`msgget`, `semget`, `shmget` with its arguments) run by the
/// task as its creator (`cuid`/`cgid` as effective ids for the call, root again after), with
/// the id the image says.
pub fn create_as(
    inj: &Injector<'_>,
    perm: &IpcPermState,
    get: &dyn Fn() -> Result<Result<u64, Errno>, crate::ptrace::PtraceError>,
) -> Result<i32, String> {
    let set_ids = |gid: u32, uid: u32| -> Result<(), String> {
        inj.call(
            "setresgid",
            libc::SYS_setresgid,
            [u64::MAX, u64::from(gid), u64::MAX, 0, 0, 0],
        )
        .map_err(|e| e.to_string())?;
        inj.call(
            "setresuid",
            libc::SYS_setresuid,
            [u64::MAX, u64::from(uid), u64::MAX, 0, 0, 0],
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    };
    let euid = inj
        .call("geteuid", libc::SYS_geteuid, [0; 6])
        .map_err(|e| e.to_string())? as u32;
    let egid = inj
        .call("getegid", libc::SYS_getegid, [0; 6])
        .map_err(|e| e.to_string())? as u32;
    let switch = perm.cuid != euid || perm.cgid != egid;
    if switch {
        set_ids(perm.cgid, perm.cuid)?;
    }
    let got = get();
    if switch {
        // The uid first: back to root, which may set the gid again.
        inj.call(
            "setresuid",
            libc::SYS_setresuid,
            [u64::MAX, u64::from(euid), u64::MAX, 0, 0, 0],
        )
        .map_err(|e| e.to_string())?;
        inj.call(
            "setresgid",
            libc::SYS_setresgid,
            [u64::MAX, u64::from(egid), u64::MAX, 0, 0, 0],
        )
        .map_err(|e| e.to_string())?;
    }
    let id = match got.map_err(|e| e.to_string())? {
        Ok(id) => id as i32,
        Err(Errno::EEXIST) => return Err(format!("key {:#x} is taken", perm.key)),
        Err(e) => return Err(format!("make it: {e}")),
    };
    if id != perm.id {
        return Err(format!("the kernel gave id {id}"));
    }
    Ok(id)
}

/// `struct ipc64_perm` as `IPC_SET` reads it: uid (offset 4), gid (8), mode (20), in a
/// buffer of `len` bytes (the whole `*id64_ds`).
fn set_buffer(perm: &IpcPermState, len: usize) -> Vec<u8> {
    let mut ds = vec![0u8; len];
    ds[4..8].copy_from_slice(&perm.uid.to_le_bytes());
    ds[8..12].copy_from_slice(&perm.gid.to_le_bytes());
    ds[20..24].copy_from_slice(&perm.mode.to_le_bytes());
    ds
}

fn make_queue(
    inj: &Injector<'_>,
    ns: &File,
    own: i32,
    q: &MsgQueueState,
    buf: u64,
) -> Result<(), String> {
    let id = q.perm.id;
    in_ns(ns, move || crate::ipcns::set_next_id("msg", id)).map_err(|e| e.to_string())?;
    let flags = (libc::IPC_CREAT | libc::IPC_EXCL) as u64 | u64::from(q.perm.mode);
    create_as(inj, &q.perm, &|| {
        inj.call_raw(
            libc::SYS_msgget,
            [q.perm.key as u32 as u64, flags, 0, 0, 0, 0],
        )
    })?;
    // Owner, mode and size limit before the messages: the limit may be above the default.
    let mut ds = set_buffer(&q.perm, std::mem::size_of::<libc::msqid_ds>().max(120));
    let at = std::mem::offset_of!(libc::msqid_ds, msg_qbytes);
    ds[at..at + 8].copy_from_slice(&q.qbytes.to_le_bytes());
    let dsp = inj.put(4096, &ds).map_err(|e| e.to_string())?;
    inj.call(
        "msgctl(IPC_SET)",
        libc::SYS_msgctl,
        [id as u64, libc::IPC_SET as u64, dsp, 0, 0, 0],
    )
    .map_err(|e| e.to_string())?;
    let t = inj.tracee();
    // The last receiver was the process itself: one message to itself and back, first.
    if q.lrpid == own || (q.lspid == own && q.messages.is_empty()) {
        t.write_mem(buf, &1i64.to_le_bytes())
            .map_err(|e| e.to_string())?;
        inj.call(
            "msgsnd",
            libc::SYS_msgsnd,
            [id as u64, buf, 0, IPC_NOWAIT, 0, 0],
        )
        .map_err(|e| e.to_string())?;
        inj.call(
            "msgrcv",
            libc::SYS_msgrcv,
            [id as u64, buf, 0, 0, IPC_NOWAIT, 0],
        )
        .map_err(|e| e.to_string())?;
    }
    for (i, m) in q.messages.iter().enumerate() {
        let mut data = Vec::with_capacity(8 + m.text.len());
        data.extend_from_slice(&m.mtype.to_le_bytes());
        data.extend_from_slice(&m.text);
        t.write_mem(buf, &data).map_err(|e| e.to_string())?;
        inj.call(
            "msgsnd",
            libc::SYS_msgsnd,
            [id as u64, buf, m.text.len() as u64, IPC_NOWAIT, 0, 0],
        )
        .map_err(|e| format!("message {i} ({} bytes): {e}", m.text.len()))?;
    }
    Ok(())
}

fn make_sem_set(
    inj: &Injector<'_>,
    ns: &File,
    s: &SemSetState,
    undo: Option<&[i32]>,
) -> Result<(), String> {
    let id = s.perm.id;
    in_ns(ns, move || crate::ipcns::set_next_id("sem", id)).map_err(|e| e.to_string())?;
    let flags = (libc::IPC_CREAT | libc::IPC_EXCL) as u64 | u64::from(s.perm.mode);
    create_as(inj, &s.perm, &|| {
        inj.call_raw(
            libc::SYS_semget,
            [
                s.perm.key as u32 as u64,
                s.values.len() as u64,
                flags,
                0,
                0,
                0,
            ],
        )
    })?;
    let dsp = inj
        .put(4096, &set_buffer(&s.perm, 128))
        .map_err(|e| e.to_string())?;
    inj.call(
        "semctl(IPC_SET)",
        libc::SYS_semctl,
        [id as u64, 0, libc::IPC_SET as u64, dsp, 0, 0],
    )
    .map_err(|e| e.to_string())?;
    // Each value that was ever set, by the task: it becomes the last to operate on it.
    for (num, (&v, &pid)) in s.values.iter().zip(&s.pids).enumerate() {
        if v != 0 || pid != 0 {
            inj.call(
                "semctl(SETVAL)",
                libc::SYS_semctl,
                [id as u64, num as u64, SETVAL, u64::from(v), 0, 0],
            )
            .map_err(|e| format!("semaphore {num}: {e}"))?;
        }
    }
    // The adjustments: pairs of operations that leave the value as it is and move the
    // adjustment by k (SETVAL clears adjustments, so they come after the values).
    for (num, (&a, &v)) in undo.unwrap_or(&[]).iter().zip(&s.values).enumerate() {
        let v = v.min(32767) as i32;
        let up_first = v <= 16383;
        let kmax = if up_first { 32767 - v } else { v };
        let mut left = a.abs();
        while left > 0 {
            let k = left.min(kmax);
            // semadj moves by -op of each SEM_UNDO operation.
            let pair: [(i32, i16); 2] = match (up_first, a < 0) {
                (true, true) => [(k, SEM_UNDO), (-k, 0)],
                (true, false) => [(k, 0), (-k, SEM_UNDO)],
                (false, true) => [(-k, 0), (k, SEM_UNDO)],
                (false, false) => [(-k, SEM_UNDO), (k, 0)],
            };
            let sops: Vec<u8> = pair
                .iter()
                .flat_map(|&(op, flg)| {
                    let mut b = [0u8; 6];
                    b[0..2].copy_from_slice(&(num as u16).to_le_bytes());
                    b[2..4].copy_from_slice(&(op as i16).to_le_bytes());
                    b[4..6].copy_from_slice(&(flg | IPC_NOWAIT as i16).to_le_bytes());
                    b
                })
                .collect();
            let at = inj.put(4096, &sops).map_err(|e| e.to_string())?;
            inj.call(
                "semop(SEM_UNDO)",
                libc::SYS_semop,
                [id as u64, at, 2, 0, 0, 0],
            )
            .map_err(|e| format!("semaphore {num}: its SEM_UNDO adjustment: {e}"))?;
            left -= k;
        }
    }
    Ok(())
}
