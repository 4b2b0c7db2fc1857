//! A process's own IPC namespace (`unshare(CLONE_NEWIPC)`), as the dump reads it and the
//! restore fills it: `/proc/sysvipc/*` and the IPC sysctls show the namespace of the task
//! that reads them, so a thread of ours joins the namespace (`setns`, which moves that thread
//! only) for the purpose.

use std::fs::File;

use nix::errno::Errno;
use nix::sched::CloneFlags;

use crate::image::IPC_SYSCTLS;

/// Runs `f` on a thread of ours that has joined the IPC namespace `ns` (a `/proc/PID/ns/ipc`
/// file).
pub fn in_ns<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> Result<T, Errno> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns, CloneFlags::CLONE_NEWIPC)?;
            Ok(f())
        })
        .join()
        .unwrap_or(Err(Errno::EIO))
    })
}

/// The IPC namespace of `pid` when it is not ours: its `/proc/PID/ns/ipc`, open.
pub fn private_ns(pid: i32) -> Option<File> {
    let ns = |p: &str| std::fs::read_link(p).ok();
    let theirs = ns(&format!("/proc/{pid}/ns/ipc"))?;
    if Some(&theirs) == ns("/proc/self/ns/ipc").as_ref() {
        return None;
    }
    File::open(format!("/proc/{pid}/ns/ipc")).ok()
}

/// What the SysV objects of every kind show in `/proc/sysvipc/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermInfo {
    /// Key.
    pub key: i32,
    /// Id.
    pub id: i32,
    /// Mode (permission bits and kind-specific flags).
    pub perms: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Creator uid.
    pub cuid: u32,
    /// Creator gid.
    pub cgid: u32,
}

/// One line of `/proc/sysvipc/msg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgInfo {
    /// Id, key, owners.
    pub perm: PermInfo,
    /// Messages queued.
    pub qnum: u64,
    /// Bytes queued.
    pub cbytes: u64,
    /// Last sender and receiver, in the reader's PID namespace.
    pub lspid: i32,
    /// See `lspid`.
    pub lrpid: i32,
}

/// One line of `/proc/sysvipc/sem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemInfo {
    /// Id, key, owners.
    pub perm: PermInfo,
    /// Semaphores in the set.
    pub nsems: usize,
}

/// Parses `/proc/sysvipc/msg` (key msqid perms cbytes qnum lspid lrpid uid gid cuid cgid …).
pub fn parse_msg(text: &str) -> Vec<MsgInfo> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f.get(i)?.parse::<i64>().ok();
            Some(MsgInfo {
                perm: PermInfo {
                    key: n(0)? as i32,
                    id: n(1)? as i32,
                    perms: u32::from_str_radix(f.get(2)?, 8).ok()?,
                    uid: n(7)? as u32,
                    gid: n(8)? as u32,
                    cuid: n(9)? as u32,
                    cgid: n(10)? as u32,
                },
                cbytes: n(3)? as u64,
                qnum: n(4)? as u64,
                lspid: n(5)? as i32,
                lrpid: n(6)? as i32,
            })
        })
        .collect()
}

/// Parses `/proc/sysvipc/sem` (key semid perms nsems uid gid cuid cgid otime ctime).
pub fn parse_sem(text: &str) -> Vec<SemInfo> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f.get(i)?.parse::<i64>().ok();
            Some(SemInfo {
                perm: PermInfo {
                    key: n(0)? as i32,
                    id: n(1)? as i32,
                    perms: u32::from_str_radix(f.get(2)?, 8).ok()?,
                    uid: n(4)? as u32,
                    gid: n(5)? as u32,
                    cuid: n(6)? as u32,
                    cgid: n(7)? as u32,
                },
                nsems: usize::try_from(n(3)?).ok()?,
            })
        })
        .collect()
}

/// `/proc/sysvipc/{what}` of the caller's namespace.
pub fn read_sysvipc(what: &str) -> Result<String, String> {
    let path = format!("/proc/sysvipc/{what}");
    std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))
}

/// The IPC sysctls of the caller's namespace that this kernel has, with their text.
pub fn read_sysctls() -> Vec<(String, String)> {
    IPC_SYSCTLS
        .iter()
        .filter_map(|name| {
            let v = std::fs::read_to_string(format!("/proc/sys/{name}")).ok()?;
            Some((
                name.to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            ))
        })
        .collect()
}

/// Sets IPC sysctls in the caller's namespace (names checked against [`IPC_SYSCTLS`] by the
/// image's validation); one the kernel does not have is an error naming it.
pub fn write_sysctls(sysctls: &[(String, String)]) -> Result<(), String> {
    for (name, value) in sysctls {
        if !IPC_SYSCTLS.contains(&name.as_str()) {
            return Err(format!("{name} is not a sysctl of an IPC namespace"));
        }
        let path = format!("/proc/sys/{name}");
        std::fs::write(&path, value).map_err(|e| format!("set {path} to {value}: {e}"))?;
    }
    Ok(())
}

/// Sets `/proc/sys/kernel/{kind}_next_id` (`msg`, `sem`, `shm`) in the caller's namespace:
/// the next object of that kind made gets `id`.
pub fn set_next_id(kind: &str, id: i32) -> Result<(), String> {
    let path = format!("/proc/sys/kernel/{kind}_next_id");
    std::fs::write(&path, id.to_string()).map_err(|e| format!("set {path} to {id}: {e}"))
}

/// The names of the POSIX message queues of the caller's IPC namespace: its `mqueue`
/// filesystem, mounted for the purpose in a mount namespace of this thread alone (made
/// private first, so nothing propagates out).
pub fn mqueue_names() -> Result<Vec<String>, String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWNS) to look at its mqueue filesystem: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make the mounts private: {e}"))?;
    let at = "/tmp";
    mount(
        Some("mqueue"),
        at,
        Some("mqueue"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("mount its mqueue filesystem: {e}"))?;
    let names = std::fs::read_dir(at)
        .map_err(|e| format!("list its mqueue filesystem: {e}"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        });
    let _ = umount2(at, MntFlags::MNT_DETACH);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysvipc_msg_and_sem() {
        let m = parse_msg(
            "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n\
             1181907251          0   600         400          4  4242     0     0     0     0     0 1733400000          0 1733400000\n",
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].perm.key, 0x4672_7933);
        assert_eq!(m[0].perm.perms, 0o600);
        assert_eq!(
            (m[0].cbytes, m[0].qnum, m[0].lspid, m[0].lrpid),
            (400, 4, 4242, 0)
        );
        let s = parse_sem(
            "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n\
             1181907250      32768   640          3  1000   100     0     0 1733400000 1733400000\n",
        );
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].perm.id, s[0].nsems, s[0].perm.uid, s[0].perm.gid),
            (32768, 3, 1000, 100)
        );
        assert_eq!(s[0].perm.perms, 0o640);
    }
}
