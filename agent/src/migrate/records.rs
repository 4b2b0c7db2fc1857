//! Migration records in an embedded transactional store, written before each step they guard.

/// The store.
#[derive(Debug, Default)]
pub struct Store {}

// Placeholder with the agreed signature: the migrate work replaces it.

/// Reading the records failed.
#[derive(Debug, thiserror::Error)]
pub enum ListRecordsError {
    /// The store is not built yet.
    #[error("the migration records store is not built yet")]
    NotBuilt,
}

impl Store {
    /// Every record, origin and destination roles.
    pub fn list(&self) -> Result<Vec<ferry_proto::v1::MigrationRecord>, ListRecordsError> {
        Err(ListRecordsError::NotBuilt)
    }
}
