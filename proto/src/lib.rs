//! Generated protobuf types. No hand-written logic lives here.

/// The image manifest schema, `ferry.image.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod image {
    /// Version 1 of the manifest.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ferry.image.v1.rs"));
    }
}
