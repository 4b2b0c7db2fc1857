//! The local API (`ferry.v1.Agent`) on the Unix socket, authorized by `SO_PEERCRED`.
//!
//! Root may migrate any process; any other user only processes that are entirely theirs (real,
//! effective, saved and filesystem uid all the caller's: a set-user-ID program someone else owns
//! is refused, as the kernel would refuse that user's ptrace of it). Everything else is refused
//! with "permission denied". Listing the migration records is open to every caller.

use std::fs;

use ferry_proto::v1::agent_server::Agent;
use ferry_proto::v1::{ListMigrationsReply, ListMigrationsRequest, MigrateEvent, MigrateRequest};
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
        tokio::spawn(crate::migrate::origin::migrate(self.node.clone(), req, tx));
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
}

/// May `caller` migrate process `pid`? Root: any process but this agent. Others: only a
/// process whose every uid is theirs.
pub fn authorize_migrate(caller: PeerCred, pid: i32) -> Result<(), Status> {
    if pid <= 0 {
        return Err(Status::invalid_argument(format!("invalid pid {pid}")));
    }
    if u32::try_from(pid).is_ok_and(|p| p == std::process::id()) {
        return Err(Status::invalid_argument(format!(
            "pid {pid} is ferryd itself"
        )));
    }
    let uids = process_uids(pid).ok_or_else(|| Status::not_found(format!("no process {pid}")))?;
    if caller.is_root() {
        return Ok(());
    }
    let [real, effective, saved, fs] = uids;
    if real != caller.uid {
        return Err(Status::permission_denied(format!(
            "permission denied: process {pid} belongs to uid {real}, not to you (uid {})",
            caller.uid
        )));
    }
    if [effective, saved, fs].iter().any(|&u| u != caller.uid) {
        return Err(Status::permission_denied(format!(
            "permission denied: process {pid} runs set-user-ID (effective uid {effective})"
        )));
    }
    Ok(())
}

/// Real, effective, saved and filesystem uid of `pid`, from `/proc/PID/status`.
fn process_uids(pid: i32) -> Option<[u32; 4]> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut fields = line.split_whitespace().map(|f| f.parse::<u32>().ok());
    let mut uids = [0; 4];
    for uid in &mut uids {
        *uid = fields.next()??;
    }
    Some(uids)
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
