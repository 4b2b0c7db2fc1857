//! The destination side of a relay.
//!
//! Placeholder with the agreed signature: the relay work replaces it.

use ferry_proto::v1::RelayFrame;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::daemon::NodeRef;

/// Peer.Relay: bytes, signals and the exit status between the stub on `peer` and the process
/// here.
pub async fn relay(
    _node: &NodeRef,
    _peer: &str,
    _stream: Streaming<RelayFrame>,
) -> Result<ReceiverStream<Result<RelayFrame, Status>>, Status> {
    Err(Status::unimplemented("the relay is not built yet"))
}
