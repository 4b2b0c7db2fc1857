//! Relays between the stub on the origin and the migrated process: stdio, ttys, TCP, UDP,
//! signals and the exit status.
//!
//! On the origin the original process became `ferry-stub` (same PID, parent, session,
//! terminal, descriptors); ferryd holds its own duplicates of the relayed descriptors
//! ([`origin::Plan`]) and pumps their bytes over the `Peer.Relay` stream. On the destination
//! the restored process holds local endpoints of the same kind ([`dest::Endpoints`]), whose
//! other ends ferryd pumps. See docs/relay.md.

mod away;
pub mod dest;
pub mod failover;
mod journal;
mod ledger;
pub mod origin;
mod pump;
mod stub;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;

pub use away::GIVE_UP_DEFAULT;
pub use stub::{LOST_EXIT_CODE, StubCommand, stub_socket_path};

/// What a relayed descriptor is, as the `kind` of a `RelayEndpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A terminal: bytes both ways, window size.
    Tty,
    /// The process reads (a stdin pipe, file or socket).
    Read,
    /// The process writes (a stdout/stderr pipe, file or socket).
    Write,
    /// An established TCP connection.
    Tcp,
    /// A listening TCP socket: each connection accepted on the origin becomes a channel.
    TcpListen,
    /// A UDP socket: datagrams with their peer addresses.
    Udp,
}

impl Kind {
    /// The name in `RelayEndpoint.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tty => "tty",
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Tcp => "tcp",
            Kind::TcpListen => "tcp-listen",
            Kind::Udp => "udp",
        }
    }

    /// Parses `RelayEndpoint.kind`.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "tty" => Kind::Tty,
            "read" => Kind::Read,
            "write" => Kind::Write,
            "tcp" => Kind::Tcp,
            "tcp-listen" => Kind::TcpListen,
            "udp" => Kind::Udp,
            _ => return None,
        })
    }
}

/// Why a relay step failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A system call on a descriptor failed.
    #[error("fd {fd}: {what}")]
    Fd {
        /// The descriptor number in the process.
        fd: i32,
        /// Which step.
        what: String,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// Some other operation failed.
    #[error("{what}")]
    Io {
        /// Which step.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Tracing the frozen process failed.
    #[error(transparent)]
    Ptrace(#[from] crate::ptrace::PtraceError),
    /// The stub cannot be made.
    #[error("{0}")]
    Stub(String),
    /// The injected `execve` of the stub failed; the original is intact.
    #[error("execve of {path} in pid {pid} failed")]
    Exec {
        /// The stub's path.
        path: String,
        /// The process.
        pid: i32,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// A relay endpoint from the peer is not understood.
    #[error("relay endpoint {channel}: {why}")]
    BadEndpoint {
        /// Its channel.
        channel: u32,
        /// Why.
        why: String,
    },
    /// The relay stream failed.
    #[error("relay stream")]
    Rpc(#[source] tonic::Status),
}

impl RelayError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RelayError {
        let what = what.into();
        move |source| RelayError::Io { what, source }
    }
}

/// The relays this agent runs: on the origin, the stubs it expects to hear from; on the
/// destination, the endpoints of copies waiting for their origin's `Relay` stream.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    /// Origin: a relay's copy was restored elsewhere ([`failover::Relocation`]).
    moved: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Origin: migration id → the relay waiting for its stub.
    stubs: HashMap<String, stub::Expected>,
    /// Destination: migration id → the copy, its endpoints and its exit status.
    dests: HashMap<String, dest::HeldCopy>,
    /// Origin: relay id → what its streams sent and received (kept across streams; with
    /// `journals`, on disk too: a restarted agent goes on in the same session).
    ledgers: HashMap<String, Arc<ledger::Ledger>>,
    /// Origin: where the ledgers' journals are kept (ferryd: `$FERRY_STATE_DIR/ledgers`).
    journals: Option<PathBuf>,
    /// Whether the stub socket is served.
    stub_socket: Option<PathBuf>,
    /// Origin: relay id → its destination's newest checkpoint notice.
    checkpoints: HashMap<String, ferry_proto::v1::RelayCheckpoint>,
    /// Origin: relay id → where its copy was restored after a failover, for its next stream.
    relocations: HashMap<String, failover::Relocation>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Destination: the copy `pid` of migration `migration_id` was restored with `endpoints`
    /// substituted; they wait here for the origin's `Relay` stream (and stay for the next
    /// one if a stream breaks). ferryd's copies of the process's ends are closed now (the
    /// process holds them), so that ends of stream are seen. The copy is reaped from now on
    /// (it is ferryd's child), relay or not; its exit status waits for a relay.
    pub fn hold_dest(&self, migration_id: &str, pid: i32, mut endpoints: dest::Endpoints) {
        endpoints.release_process_side();
        self.lock().dests.insert(
            migration_id.to_string(),
            dest::HeldCopy::new(pid, endpoints),
        );
    }

    /// Destination: [`Registry::hold_dest`] for the root of a migrated tree: its exit status
    /// goes out once every member's (`after`, each `Some` once that member ended) is known
    /// too, so that the root's stub on the origin ends with the whole job.
    pub fn hold_dest_after(
        &self,
        migration_id: &str,
        pid: i32,
        mut endpoints: dest::Endpoints,
        after: Vec<tokio::sync::watch::Receiver<Option<ferry_proto::v1::ExitStatus>>>,
    ) {
        endpoints.release_process_side();
        self.lock().dests.insert(
            migration_id.to_string(),
            dest::HeldCopy::new_after(pid, endpoints, after),
        );
    }

    /// Destination: [`Registry::hold_dest`] for a member of a migrated tree other than its
    /// root (`relay_id`: [`member_id`]); its end is learnt by [`dest::watch_member`].
    pub fn hold_dest_member(&self, relay_id: &str, pid: i32, mut endpoints: dest::Endpoints) {
        endpoints.release_process_side();
        self.lock().dests.insert(
            relay_id.to_string(),
            dest::HeldCopy::new_member(pid, endpoints),
        );
    }

    /// Destination: takes what [`Registry::hold_dest`] kept.
    pub fn take_dest(&self, migration_id: &str) -> Option<(i32, dest::Endpoints)> {
        self.lock()
            .dests
            .remove(migration_id)
            .map(dest::HeldCopy::into_parts)
    }

    /// Destination: whether the copy of `migration_id` is held here (and reaped here).
    pub fn holds_dest(&self, migration_id: &str) -> bool {
        self.lock().dests.contains_key(migration_id)
    }

    /// Origin: the ledgers of relays are kept in journals in `dir` from now on, and one
    /// found there (left by a previous run of the agent) is taken back.
    pub fn keep_ledgers_in(&self, dir: PathBuf) {
        self.lock().journals = Some(dir);
    }

    /// Origin: the ledger of relay `id` (a new session the first time, unless a journal of
    /// it was left by a previous run of the agent).
    fn origin_ledger(&self, id: &str) -> Arc<ledger::Ledger> {
        let mut inner = self.lock();
        let dir = inner.journals.clone();
        inner
            .ledgers
            .entry(id.to_string())
            .or_insert_with(|| match dir {
                Some(d) => ledger::Ledger::persistent(&journal::path(&d, id)),
                None => ledger::Ledger::fresh(),
            })
            .clone()
    }

    /// Origin: the relay `id` ended for good: its ledger (and journal) go.
    fn drop_ledger(&self, id: &str) {
        let mut inner = self.lock();
        inner.checkpoints.remove(id);
        inner.relocations.remove(id);
        if let Some(l) = inner.ledgers.remove(id) {
            l.discard();
        } else if let Some(d) = &inner.journals {
            // Never taken back in this run (the relay ended without a stream).
            let _ = std::fs::remove_file(journal::path(d, id));
        }
    }

    /// Origin: the migration ids whose stubs this agent is relaying.
    pub fn relaying(&self) -> Vec<String> {
        self.lock().stubs.keys().cloned().collect()
    }
}

/// The relay id of a member (other than the root) of a tree migrated by `migration_id`:
/// `MIGRATION_ID.PID`, with the member's PID on the origin. Its stub says it in `HELLO`, its
/// relay stream names it, and the origin's `relays` table keys its endpoints with it.
pub fn member_id(migration_id: &str, origin_pid: i32) -> String {
    format!("{migration_id}.{origin_pid}")
}

/// The migration a relay id ([`member_id`], or a migration id itself) belongs to.
pub fn migration_of(relay_id: &str) -> &str {
    relay_id.split('.').next().unwrap_or(relay_id)
}

/// `ferry-stub` next to this executable (or next to its directory, for test binaries in
/// `target/*/deps`); `FERRY_STUB` overrides.
pub fn stub_path() -> Result<PathBuf, RelayError> {
    if let Some(p) = std::env::var_os("FERRY_STUB") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(RelayError::io("find this executable"))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let p = d.join("ferry-stub");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(RelayError::Stub(format!(
        "ferry-stub is not next to {} (set FERRY_STUB)",
        exe.display()
    )))
}
