//! Migration: the two-sided state machine that moves a process to another host with exactly
//! one copy running whatever fails. See docs/migration.md.
//!
//! - [`origin::migrate`]: the origin's side, driven by the local API.
//! - [`dest`]: the destination's answers to the peer API.
//! - [`records`]: what both remember, durably, before each step.
//! - [`resolve`]: what a restarted agent does with the migrations it took part in.
//! - `tree`: `--tree`, a process with all its descendants (both sides).

pub mod dest;
pub mod lazy;
pub mod live;
pub mod negotiate;
pub mod origin;
pub mod records;
mod tree;

use std::sync::OnceLock;

use crate::daemon::NodeRef;

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
/// `restore::mm::late_madvise_fault`).
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

/// On agent start: resolves every migration left unfinished by a previous run (rule 3 of
/// docs/migration.md), in the background, retrying until the peers answer.
pub fn resolve(node: NodeRef) {
    let records = match node.store.list() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %chain(&e), "cannot read the migration records");
            return;
        }
    };
    for rec in records {
        if records::is_final(&rec.state) {
            if rec.role != "destination" && rec.state == "done" {
                origin::resume_relay(node.clone(), &rec);
            }
            continue;
        }
        tracing::info!(migration = %rec.migration_id, role = %rec.role, state = %rec.state, "resolving");
        let node = node.clone();
        if rec.role == "destination" {
            tokio::spawn(dest::resolve_record(node, rec));
        } else {
            tokio::spawn(origin::resolve_record(node, rec));
        }
    }
}
