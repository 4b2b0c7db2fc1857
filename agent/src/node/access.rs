//! Who may migrate which process: the kernel's own ptrace rule (`ptrace_may_access`) without
//! `CAP_SYS_PTRACE`, checked by the local API when a request comes and again by the tracer
//! once the process is frozen (both `daemon` and `migrate` use it: it lives below them).

use std::fs;

use tonic::Status;

use crate::transport::PeerCred;

/// May `caller` migrate process `pid`? Root: any process but this agent. Others: what the
/// kernel's own rule (`ptrace_may_access`) would let them trace without `CAP_SYS_PTRACE`: every
/// thread's real, effective, saved and filesystem uid the caller's uid, its real, effective,
/// saved and filesystem gid the caller's gid, and the process dumpable (not after a
/// set-user-ID or set-group-ID exec, nor a `prctl(PR_SET_DUMPABLE, 0)`).
pub fn authorize_migrate(caller: PeerCred, pid: i32) -> Result<(), Status> {
    if pid <= 0 {
        return Err(Status::invalid_argument(format!("invalid pid {pid}")));
    }
    if u32::try_from(pid).is_ok_and(|p| p == std::process::id()) {
        return Err(Status::invalid_argument(format!(
            "pid {pid} is ferryd itself"
        )));
    }
    let main = task_creds(&format!("/proc/{pid}"))
        .ok_or_else(|| Status::not_found(format!("no process {pid}")))?;
    if caller.is_root() {
        return Ok(());
    }
    let denied = |why: String| {
        Err(Status::permission_denied(format!(
            "permission denied: {why}"
        )))
    };
    let [real, ..] = main.uids;
    if real != caller.uid {
        return denied(format!(
            "process {pid} belongs to uid {real}, not to you (uid {})",
            caller.uid
        ));
    }
    // Every thread: a thread may have changed its own credentials (setresuid(2) acts per
    // thread at the system call level), and freezing traces them all.
    let mut tasks = vec![(pid, main)];
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
            else {
                continue;
            };
            if tid == pid {
                continue;
            }
            // A thread that ended meanwhile is no obstacle.
            if let Some(c) = task_creds(&format!("/proc/{pid}/task/{tid}")) {
                tasks.push((tid, c));
            }
        }
    }
    for (tid, c) in tasks {
        let who = if tid == pid {
            format!("process {pid}")
        } else {
            format!("thread {tid} of process {pid}")
        };
        let [_, effective, saved, fsuid] = c.uids;
        if c.uids.iter().any(|&u| u != caller.uid) {
            return denied(format!(
                "{who} runs with other user ids than yours (uid {}: real {}, effective {effective}, \
                 saved {saved}, filesystem {fsuid}; set-user-ID?)",
                caller.uid, c.uids[0]
            ));
        }
        let [rgid, egid, sgid, fsgid] = c.gids;
        if c.gids.iter().any(|&g| g != caller.gid) {
            return denied(format!(
                "{who} runs with other group ids than yours (gid {}: real {rgid}, effective \
                 {egid}, saved {sgid}, filesystem {fsgid}; set-group-ID?)",
                caller.gid
            ));
        }
        if !c.dumpable {
            return denied(format!(
                "{who} is not dumpable (it ran a set-user-ID or set-group-ID program, changed \
                 its credentials, or called prctl(PR_SET_DUMPABLE, 0)): the kernel lets only \
                 a tracer with CAP_SYS_PTRACE at it"
            ));
        }
    }
    Ok(())
}

/// The credentials of one task, from its `/proc` directory.
#[derive(Debug, Clone, Copy)]
struct TaskCreds {
    /// Real, effective, saved and filesystem uid.
    uids: [u32; 4],
    /// Real, effective, saved and filesystem gid.
    gids: [u32; 4],
    /// Whether the task's memory is dumpable for its own user (`SUID_DUMP_USER`).
    dumpable: bool,
}

/// Uids, gids and dumpability of the task whose `/proc` directory is `dir`.
///
/// The kernel shows no task's dumpable flag directly, but gives the files inside a task's
/// directory the owner "root of the task's user namespace" instead of its effective uid and
/// gid when it is not dumpable (`task_dump_owner`), and refreshes that owner at each lookup.
/// So `status` is opened (a fresh lookup) and its owner compared with the effective ids read
/// from it.
fn task_creds(dir: &str) -> Option<TaskCreds> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut f = fs::File::open(format!("{dir}/status")).ok()?;
    let meta = f.metadata().ok()?;
    let mut status = String::new();
    f.read_to_string(&mut status).ok()?;
    let ids = |key: &str| -> Option<[u32; 4]> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        let mut fields = line.split_whitespace().map(|f| f.parse::<u32>().ok());
        let mut out = [0; 4];
        for id in &mut out {
            *id = fields.next()??;
        }
        Some(out)
    };
    let uids = ids("Uid:")?;
    let gids = ids("Gid:")?;
    Some(TaskCreds {
        uids,
        gids,
        dumpable: meta.uid() == uids[1] && meta.gid() == gids[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> PeerCred {
        PeerCred {
            uid,
            gid: uid,
            pid: None,
        }
    }

    /// A process of this test's user (not this process: that one counts as "ferryd itself").
    struct Child(std::process::Child);

    impl Child {
        fn start() -> Self {
            Self(
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap(),
            )
        }
        fn pid(&self) -> i32 {
            i32::try_from(self.0.id()).unwrap()
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn own_process_and_root() {
        let child = Child::start();
        let my_uid = nix::unistd::getuid().as_raw();
        authorize_migrate(user(my_uid), child.pid()).unwrap();
        authorize_migrate(user(0), child.pid()).unwrap();
    }

    #[test]
    fn others_are_denied() {
        let child = Child::start();
        let my_uid = nix::unistd::getuid().as_raw();
        let err = authorize_migrate(user(my_uid.wrapping_add(4242)), child.pid()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().starts_with("permission denied"), "{err:?}");
        let me = i32::try_from(std::process::id()).unwrap();
        let err = authorize_migrate(user(0), me).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = authorize_migrate(user(1000), 0).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = authorize_migrate(user(0), i32::MAX).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
}
