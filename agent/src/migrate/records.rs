//! Migration records in an embedded transactional store, written before each step they guard.

/// The store.
#[derive(Debug, Default)]
pub struct Store {}
