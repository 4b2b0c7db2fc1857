//! The peer API (`ferry.v1.Peer`) over mutual TLS.
//!
//! The TLS layer has already refused any caller without a certificate of the cluster CA; every
//! RPC then takes the caller's name from that certificate, refuses it unless the name is in
//! this agent's `[peers]` table ([`PeerService::authorize`]: a certificate of the cluster CA
//! alone admits no one), and hands it, with the message, to the migration or relay code.
//! `Sink` (raw link throughput) is answered here.

use ferry_proto::v1::peer_server::Peer;
use ferry_proto::v1::{
    AbortReply, AppliedReply, CommitReply, HostingReply, HostingRequest, ListManagedReply,
    LoadReply, LoadRequest, ManagedKillReply, ManagedKillRequest, ManagedLimitsRequest,
    ManagedProcess, ManagedRequest, MigrationRecord, MigrationRef, MovedOn, MovedReply,
    NegotiateReply, NegotiateRequest, ProcStatsReply, ProcStatsRequest, RelayFrame, SignalReply,
    SignalRequest, SinkChunk, SinkReply, TransferChunk, TransferReply,
};
use tonic::{Request, Response, Status, Streaming};

use crate::migrate::dest;
use crate::node::NodeRef;
use crate::transport::peer_name;

/// The `Peer` service.
#[derive(Debug)]
pub struct PeerService {
    node: NodeRef,
}

impl PeerService {
    /// The service of `node`.
    pub fn new(node: NodeRef) -> Self {
        Self { node }
    }

    /// The caller's name, if this agent admits it: its certificate (verified against the
    /// cluster CA by the TLS layer) must name a host of the `[peers]` table. Anyone else gets
    /// `permission denied`, before the request is looked at.
    fn authorize<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let peer = peer_name(request)?;
        if !self.node.config.peers.contains_key(&peer) {
            tracing::warn!(%peer, "peer API call refused: not in [peers]");
            return Err(Status::permission_denied(format!(
                "permission denied: {peer} is not a peer of {} (not in its [peers] table)",
                self.node.config.name
            )));
        }
        Ok(peer)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn negotiate(
        &self,
        request: Request<NegotiateRequest>,
    ) -> Result<Response<NegotiateReply>, Status> {
        let peer = self.authorize(&request)?;
        dest::negotiate(&self.node, &peer, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn transfer(
        &self,
        request: Request<Streaming<TransferChunk>>,
    ) -> Result<Response<TransferReply>, Status> {
        let peer = self.authorize(&request)?;
        dest::transfer(&self.node, &peer, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn commit(
        &self,
        request: Request<MigrationRef>,
    ) -> Result<Response<CommitReply>, Status> {
        let peer = self.authorize(&request)?;
        dest::commit(&self.node, &peer, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn abort(&self, request: Request<MigrationRef>) -> Result<Response<AbortReply>, Status> {
        let peer = self.authorize(&request)?;
        dest::abort(&self.node, &peer, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn applied(
        &self,
        request: Request<MigrationRef>,
    ) -> Result<Response<AppliedReply>, Status> {
        let peer = self.authorize(&request)?;
        dest::applied(&self.node, &peer, request.into_inner())
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn query(
        &self,
        request: Request<MigrationRef>,
    ) -> Result<Response<MigrationRecord>, Status> {
        let peer = self.authorize(&request)?;
        dest::query(&self.node, &peer, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn moved(&self, request: Request<MovedOn>) -> Result<Response<MovedReply>, Status> {
        let peer = peer_name(&request)?;
        crate::migrate::origin::moved(&self.node, &peer, request.into_inner())
            .await
            .map(Response::new)
    }

    type LazyStream = crate::migrate::lazy::WantStream;

    async fn lazy(
        &self,
        request: Request<Streaming<ferry_proto::v1::LazyPages>>,
    ) -> Result<Response<Self::LazyStream>, Status> {
        let peer = self.authorize(&request)?;
        crate::migrate::lazy::serve_dest(&self.node, &peer, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn replica(
        &self,
        request: Request<Streaming<ferry_proto::v1::ReplicaChunk>>,
    ) -> Result<Response<ferry_proto::v1::ReplicaReply>, Status> {
        let peer = self.authorize(&request)?;
        crate::replica::holder::serve(&self.node, &peer, request.into_inner())
            .await
            .map(Response::new)
    }

    type RelayStream = crate::relay::dest::Frames;

    async fn relay(
        &self,
        request: Request<Streaming<RelayFrame>>,
    ) -> Result<Response<Self::RelayStream>, Status> {
        let peer = self.authorize(&request)?;
        crate::relay::dest::relay(&self.node, &peer, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn sink(
        &self,
        request: Request<Streaming<SinkChunk>>,
    ) -> Result<Response<SinkReply>, Status> {
        let peer = self.authorize(&request)?;
        let mut stream = request.into_inner();
        let mut bytes: u64 = 0;
        while let Some(chunk) = stream.message().await? {
            bytes += chunk.data.len() as u64;
        }
        tracing::debug!(%peer, bytes, "sink");
        Ok(Response::new(SinkReply { bytes }))
    }

    // Managed processes: agent/src/managed/peer.rs.

    async fn load(&self, request: Request<LoadRequest>) -> Result<Response<LoadReply>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(crate::managed::peer::load(&self.node).await))
    }

    async fn managed(
        &self,
        request: Request<ManagedRequest>,
    ) -> Result<Response<ListManagedReply>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(
            crate::managed::peer::managed(&self.node, request.into_inner()).await,
        ))
    }

    async fn proc_stats(
        &self,
        request: Request<ProcStatsRequest>,
    ) -> Result<Response<ProcStatsReply>, Status> {
        self.authorize(&request)?;
        crate::managed::peer::proc_stats(&self.node, request.into_inner()).map(Response::new)
    }

    async fn hosting(
        &self,
        request: Request<HostingRequest>,
    ) -> Result<Response<HostingReply>, Status> {
        let peer = self.authorize(&request)?;
        crate::managed::peer::hosting(&self.node, &peer, request.into_inner()).map(Response::new)
    }

    async fn signal(
        &self,
        request: Request<SignalRequest>,
    ) -> Result<Response<SignalReply>, Status> {
        self.authorize(&request)?;
        crate::managed::peer::signal(&self.node, request.into_inner()).map(Response::new)
    }

    async fn managed_kill(
        &self,
        request: Request<ManagedKillRequest>,
    ) -> Result<Response<ManagedKillReply>, Status> {
        self.authorize(&request)?;
        crate::managed::peer::managed_kill(&self.node, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn managed_limits(
        &self,
        request: Request<ManagedLimitsRequest>,
    ) -> Result<Response<ManagedProcess>, Status> {
        self.authorize(&request)?;
        crate::managed::peer::managed_limits(&self.node, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn lease(
        &self,
        request: Request<ferry_proto::v1::LeaseRequest>,
    ) -> Result<Response<ferry_proto::v1::LeaseReply>, Status> {
        let peer = self.authorize(&request)?;
        crate::lease::run::serve(&self.node, &peer, request.into_inner()).map(Response::new)
    }

    async fn relay_moved(
        &self,
        request: Request<ferry_proto::v1::RelayMovedRequest>,
    ) -> Result<Response<ferry_proto::v1::RelayMovedReply>, Status> {
        let peer = self.authorize(&request)?;
        crate::migrate::origin::relay_moved(&self.node, &peer, request.into_inner())
            .await
            .map(Response::new)
    }
}
