//! Relays between the stub on the origin and the migrated process: stdio, ttys, TCP, UDP,
//! signals and the exit status.

pub mod dest;

/// The relays this agent runs.
#[derive(Debug, Default)]
pub struct Registry {}

pub mod origin;
