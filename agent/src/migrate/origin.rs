//! The origin side of a migration.
//!
//! Placeholder with the agreed signature: the migrate work replaces it.

use ferry_proto::v1::{MigrateEvent, MigrateRequest};
use tokio::sync::mpsc;
use tonic::Status;

use crate::daemon::NodeRef;

/// Runs one migration requested on the local API, reporting progress and the end on `tx`.
pub async fn migrate(
    node: NodeRef,
    req: MigrateRequest,
    tx: mpsc::Sender<Result<MigrateEvent, Status>>,
) {
    let _ = (node, req);
    let _ = tx
        .send(Err(Status::unimplemented("migration is not built yet")))
        .await;
}
