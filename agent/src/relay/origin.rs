//! PLACEHOLDER (migrate branch) with the agreed signatures, until the relay branch lands:
//! the relay helper's implementation replaces this file.

use std::path::Path;

use ferry_proto::v1::RelayEndpoint;

use crate::daemon::NodeRef;
use crate::dump::Held;

/// Why relaying failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Not built yet.
    #[error("relay not available: {0}")]
    Unavailable(String),
}

/// The descriptors to relay, duplicated into the agent.
#[derive(Debug, Default)]
pub struct Plan {}

impl Plan {
    /// Takes the agent's own duplicates of the fds to relay.
    pub fn capture(_held: &Held) -> Result<Plan, RelayError> {
        Ok(Plan {})
    }

    /// The endpoints for the transfer header.
    pub fn endpoints(&self) -> Vec<RelayEndpoint> {
        Vec::new()
    }
}

/// The commit point: the original becomes the stub. PLACEHOLDER: ends the original instead.
pub fn become_stub(
    held: &Held,
    _plan: &Plan,
    _migration_id: &str,
    _socket: &Path,
) -> Result<(), RelayError> {
    let pid = held.tasks()[0].tracee.pid();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| RelayError::Unavailable(format!("kill {pid}: {e}")))
}

/// Starts relaying for a committed migration. PLACEHOLDER: does nothing.
pub fn start(
    _node: NodeRef,
    _plan: Plan,
    _stub_pid: i32,
    _migration_id: String,
    _channel: tonic::transport::Channel,
) {
}
