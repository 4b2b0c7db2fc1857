//! The destination side of a migration.

/// Copies restored here and held stopped until their origin commits.
#[derive(Debug, Default)]
pub struct Copies {}

// Placeholders with the agreed signatures: the migrate work replaces them.

use ferry_proto::v1::{
    AbortReply, CommitReply, MigrationRecord, MigrationRef, NegotiateReply, NegotiateRequest,
    TransferChunk, TransferReply,
};
use tonic::{Status, Streaming};

use crate::daemon::NodeRef;

fn not_built() -> Status {
    Status::unimplemented("receiving migrations is not built yet")
}

/// Peer.Negotiate: can this host run the process `peer` describes?
pub async fn negotiate(
    _node: &NodeRef,
    _peer: &str,
    _req: NegotiateRequest,
) -> Result<NegotiateReply, Status> {
    Err(not_built())
}

/// Peer.Transfer: receive and restore the image, leaving the copy stopped.
pub async fn transfer(
    _node: &NodeRef,
    _peer: &str,
    _stream: Streaming<TransferChunk>,
) -> Result<TransferReply, Status> {
    Err(not_built())
}

/// Peer.Commit: let the copy run.
pub async fn commit(
    _node: &NodeRef,
    _peer: &str,
    _req: MigrationRef,
) -> Result<CommitReply, Status> {
    Err(not_built())
}

/// Peer.Abort: discard the copy.
pub async fn abort(_node: &NodeRef, _peer: &str, _req: MigrationRef) -> Result<AbortReply, Status> {
    Err(not_built())
}

/// Peer.Query: this host's record of a migration.
pub async fn query(
    _node: &NodeRef,
    _peer: &str,
    _req: MigrationRef,
) -> Result<MigrationRecord, Status> {
    Err(not_built())
}
