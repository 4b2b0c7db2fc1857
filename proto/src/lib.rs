//! Generated protobuf types and gRPC services. No hand-written logic lives here.

/// The image manifest schema, `ferry.image.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod image {
    /// Version 1 of the manifest.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ferry.image.v1.rs"));
    }
}

/// The local API (`Agent`, CLI → ferryd over a Unix socket) and the peer API (`Peer`,
/// agent ↔ agent over mutual TLS), `ferry.v1`.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/ferry.v1.rs"));
}
