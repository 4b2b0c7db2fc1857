//! The destination side of a migration.

/// Copies restored here and held stopped until their origin commits.
#[derive(Debug, Default)]
pub struct Copies {}
