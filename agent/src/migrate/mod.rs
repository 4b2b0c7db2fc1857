//! Migration: the two-sided state machine that moves a process to another host with exactly
//! one copy running whatever fails. See docs/migration.md.
//!
//! - [`origin::migrate`]: the origin's side, driven by the local API.
//! - [`dest`]: the destination's answers to the peer API.
//! - [`state`]: the states of each side; [`error`]: the errors of each phase, turned into a
//!   gRPC status in one place; [`version`]: the protocol version and its rule.
//! - [`records`]: what both remember, durably, before each step.
//! - [`resolve`]: what a restarted agent does with the migrations it took part in.
//! - `tree`: `--tree`, a process with all its descendants (both sides); `tree_live`: its
//!   pre-copy rounds (every member tracked) and the destination's staging of their pages.

pub mod dest;
pub mod dest_error;
pub mod error;
mod final_stop;
pub mod keepmm;
pub mod lazy;
pub mod live;
pub mod negotiate;
pub mod origin;
pub mod records;
pub mod state;
mod tree;
mod tree_live;
mod urgent;
pub mod version;

use std::sync::OnceLock;

use state::{OriginState, Role, State};

use crate::node::NodeRef;

/// An error and its causes, outermost first, on one line.
pub use crate::transport::error_chain as chain;

/// The start time of a process (field 22 of `/proc/PID/stat`, clock ticks since boot): with
/// the PID, it names one process for good.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = crate::proc::read(pid, "stat").ok()?;
    crate::proc::parse_stat(&stat).ok().map(|s| s.start_time)
}

/// Whether the test fault `name` is enabled: `FERRY_FAULT` (read once), comma-separated.
/// The faults: `dest-exit-mid-stream`, `corrupt-chunk`, `restore-fail`,
/// `origin-exit-after-commit`, `origin-exit-before-commit`, `pause-mid-stream`,
/// `pause-before-freeze`, `restore-late-madvise` (any restore, see
/// `restore::mm::late_madvise_fault`), `protocol-version-next`, `protocol-version-none` (see
/// [`version::announced`]).
pub fn fault(name: &str) -> bool {
    static FAULTS: OnceLock<Vec<String>> = OnceLock::new();
    FAULTS
        .get_or_init(|| {
            std::env::var("FERRY_FAULT")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|f| f == name)
}

/// On agent start: resolves every migration left unfinished by a previous run
/// (docs/migration.md, "Records"), in the background, retrying until the peers answer.
pub fn resolve(node: NodeRef) {
    let records = match node.store.list() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %chain(&e), "cannot read the migration records");
            return;
        }
    };
    for rec in records {
        let state = State::of(&rec);
        // A lazy copy's `done` is not final while its pages were still arriving.
        if state.is_some_and(State::is_final) && !lazy::unfinished_dest(&rec) {
            if state == Some(State::Origin(OriginState::Done)) {
                origin::resume_relay(node.clone(), &rec);
            }
            continue;
        }
        tracing::info!(migration = %rec.migration_id, role = %rec.role, state = %rec.state, "resolving");
        let node = node.clone();
        match Role::of(&rec) {
            Role::Destination => {
                tokio::spawn(dest::resolve_record(node, rec));
            }
            Role::Origin => {
                tokio::spawn(origin::resolve_record(node, rec));
            }
        }
    }
}
