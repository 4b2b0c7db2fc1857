//! The local API (`ferry.v1.Agent`) on the Unix socket, authorized by `SO_PEERCRED`.
//!
//! Root may migrate any process; any other user only what the kernel would let that user
//! ptrace without `CAP_SYS_PTRACE` (`ptrace_may_access`): processes that are entirely theirs
//! (every thread's real, effective, saved and filesystem uid the caller's uid and gids the
//! caller's gid) and dumpable (a set-user-ID or set-group-ID program, or one that called
//! `prctl(PR_SET_DUMPABLE, 0)`, is refused). Everything else is refused with "permission
//! denied". Listing the migration records is open to every caller.

use std::fs;

use ferry_proto::v1::agent_server::Agent;
use ferry_proto::v1::{
    ExitedReply, ExitedRequest, HostsReply, HostsRequest, KillReply, KillRequest, LimitsRequest,
    ListManagedReply, ListManagedRequest, ListMigrationsReply, ListMigrationsRequest,
    ManagedProcess, MigrateEvent, MigrateRequest, OffloadRequest, OutputChunk, OutputRequest,
    RegisterRequest, SpawnRequest, WebTokenReply, WebTokenRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::NodeRef;
use crate::transport::{self, PeerCred};

/// How many progress events may wait for a slow CLI before the migration waits for it.
const EVENT_QUEUE: usize = 64;

/// The `Agent` service.
#[derive(Debug)]
pub struct LocalService {
    node: NodeRef,
}

impl LocalService {
    /// The service of `node`.
    pub fn new(node: NodeRef) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl Agent for LocalService {
    type MigrateStream = ReceiverStream<Result<MigrateEvent, Status>>;

    async fn migrate(
        &self,
        request: Request<MigrateRequest>,
    ) -> Result<Response<Self::MigrateStream>, Status> {
        let caller = transport::caller(&request)?;
        let req = request.into_inner();
        authorize_migrate(caller, req.pid)?;
        tracing::info!(
            pid = req.pid,
            to = %req.to,
            uid = caller.uid,
            caller_pid = ?caller.pid,
            "migration requested"
        );
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let as_user = (!caller.is_root()).then_some(caller);
        tokio::spawn(crate::migrate::origin::migrate(
            self.node.clone(),
            req,
            as_user,
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_migrations(
        &self,
        request: Request<ListMigrationsRequest>,
    ) -> Result<Response<ListMigrationsReply>, Status> {
        transport::caller(&request)?;
        let node = self.node.clone();
        // The store does blocking I/O.
        let records = tokio::task::spawn_blocking(move || node.store.list())
            .await
            .map_err(|_| Status::internal("listing the migration records failed"))?
            .map_err(|err| transport::internal_status(&err))?;
        Ok(Response::new(ListMigrationsReply { records }))
    }

    // Managed processes: agent/src/managed/local.rs.

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<ManagedProcess>, Status> {
        let caller = transport::caller(&request)?;
        crate::managed::local::register(&self.node, caller, request.into_inner()).map(Response::new)
    }

    async fn spawn(
        &self,
        request: Request<SpawnRequest>,
    ) -> Result<Response<ManagedProcess>, Status> {
        let caller = transport::caller(&request)?;
        crate::managed::local::spawn(&self.node, caller, request.into_inner()).map(Response::new)
    }

    type OffloadStream = ReceiverStream<Result<MigrateEvent, Status>>;

    async fn offload(
        &self,
        request: Request<OffloadRequest>,
    ) -> Result<Response<Self::OffloadStream>, Status> {
        let caller = transport::caller(&request)?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(crate::managed::local::offload(
            self.node.clone(),
            caller,
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn exited(
        &self,
        request: Request<ExitedRequest>,
    ) -> Result<Response<ExitedReply>, Status> {
        let caller = transport::caller(&request)?;
        crate::managed::local::exited(&self.node, caller, request.into_inner()).map(Response::new)
    }

    async fn list_managed(
        &self,
        request: Request<ListManagedRequest>,
    ) -> Result<Response<ListManagedReply>, Status> {
        let caller = transport::caller(&request)?;
        Ok(Response::new(
            crate::managed::local::list(&self.node, caller).await,
        ))
    }

    type OutputStream = ReceiverStream<Result<OutputChunk, Status>>;

    async fn output(
        &self,
        request: Request<OutputRequest>,
    ) -> Result<Response<Self::OutputStream>, Status> {
        let caller = transport::caller(&request)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(crate::managed::local::output(
            self.node.clone(),
            caller,
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<KillReply>, Status> {
        let caller = transport::caller(&request)?;
        crate::managed::local::kill(&self.node, caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn limits(
        &self,
        request: Request<LimitsRequest>,
    ) -> Result<Response<ManagedProcess>, Status> {
        let caller = transport::caller(&request)?;
        crate::managed::local::limits(&self.node, caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn web_token(
        &self,
        request: Request<WebTokenRequest>,
    ) -> Result<Response<WebTokenReply>, Status> {
        let caller = transport::caller(&request)?;
        let node = self.node.clone();
        // The store does blocking I/O.
        let token = tokio::task::spawn_blocking(move || node.web.new_token(caller))
            .await
            .map_err(|_| Status::internal("making a web token failed"))?
            .map_err(|why| Status::internal(format!("make a web token: {why}")))?;
        tracing::info!(uid = caller.uid, "web token made");
        let url = self
            .node
            .config
            .web_addr()
            .map(|a| format!("https://{}:{}/", self.node.config.name, a.port()))
            .unwrap_or_default();
        Ok(Response::new(WebTokenReply {
            token,
            uid: caller.uid,
            url,
        }))
    }

    async fn hosts(&self, request: Request<HostsRequest>) -> Result<Response<HostsReply>, Status> {
        transport::caller(&request)?;
        Ok(Response::new(crate::cluster::local::hosts(&self.node)))
    }
}

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
