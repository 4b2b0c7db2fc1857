//! The local API (`ferry.v1.Agent`) on the Unix socket, authorized by `SO_PEERCRED`.
//!
//! Root may migrate any process; any other user only what the kernel would let that user
//! ptrace without `CAP_SYS_PTRACE` (`ptrace_may_access`): processes that are entirely theirs
//! (every thread's real, effective, saved and filesystem uid the caller's uid and gids the
//! caller's gid) and dumpable (a set-user-ID or set-group-ID program, or one that called
//! `prctl(PR_SET_DUMPABLE, 0)`, is refused). Everything else is refused with "permission
//! denied". Listing the migration records is open to every caller.

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

use crate::node::NodeRef;
/// Moved to [`crate::node::access`] (used below the daemon too); the old path still works.
pub use crate::node::authorize_migrate;
use crate::transport;

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
