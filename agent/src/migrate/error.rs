//! Why a migration failed, one type per phase (docs/migration.md, "States"): before anything
//! is frozen ([`NegotiateError`]), while the image streams ([`TransferError`]), at the commit
//! point ([`CommitError`]). They become a `tonic::Status` in one place only: the `From`
//! impl of [`MigrateError`] (the gRPC code says how the caller may react: retry, fix the
//! request, or that the process is lost).

use tonic::{Code, Status};

use super::records::RecordsError;
use crate::transport::error_chain;

/// Before anything is frozen: the request, the process, the destination's answer. The
/// process was never touched.
#[derive(Debug, thiserror::Error)]
pub enum NegotiateError {
    /// Not a PID that can move.
    #[error("bad pid {0}")]
    BadPid(i32),
    /// The destination named is this host.
    #[error("{to} is this host: pid {pid} already runs here (name another peer of [peers])")]
    ThisHost {
        /// The name given.
        to: String,
        /// The process.
        pid: i32,
    },
    /// `--compress` names no codec.
    #[error("--compress {0}: expected auto, zstd, lz4 or none")]
    BadCodec(String),
    /// `--lazy` with a mode it cannot be combined with.
    #[error("--lazy is a mode of its own: not with --tree or --stop-and-copy")]
    LazyWith,
    /// No such process.
    #[error("no process {0}")]
    NoProcess(i32),
    /// The process is a relay stub: what it relays for runs elsewhere.
    #[error("pid {pid} is a relay stub{elsewhere}; migrate it there")]
    Stub {
        /// The stub.
        pid: i32,
        /// " of migration ID: the process runs on HOST as pid N", when known.
        elsewhere: String,
    },
    /// The process has children and `--tree` was not given (the text names them).
    #[error("{0}")]
    Children(String),
    /// No peer of that name (the text says why).
    #[error("{0}")]
    UnknownPeer(String),
    /// The destination did not answer the negotiation.
    #[error("{to} at {addr}: negotiation: {detail}")]
    Unreachable {
        /// The peer.
        to: String,
        /// Its address.
        addr: String,
        /// What the call said.
        detail: String,
    },
    /// The destination speaks another version of the migration protocol.
    #[error("{0}")]
    Version(String),
    /// The destination cannot run the process (kernel, CPU features, vDSO).
    #[error("{to} cannot run pid {pid}:\n  {}", problems.join("\n  "))]
    Incompatible {
        /// The peer.
        to: String,
        /// The process.
        pid: i32,
        /// One line per problem.
        problems: Vec<String>,
    },
    /// Files differ on the destination and `--ship-files` was not given.
    #[error(
        "files missing or different on {to} (--ship-files sends them along):\n  {}",
        lines.join("\n  ")
    )]
    FilesDiffer {
        /// The peer.
        to: String,
        /// One line per file.
        lines: Vec<String>,
    },
    /// Directories differ on the destination: only files can be shipped.
    #[error(
        "directories missing or different on {to} (only files can be shipped):\n  {}",
        lines.join("\n  ")
    )]
    Unshippable {
        /// The peer.
        to: String,
        /// One line per directory.
        lines: Vec<String>,
    },
    /// A task of this agent failed (the text says which).
    #[error("{0}")]
    Internal(String),
}

/// From the freeze to the copy held stopped on the destination. The original was given back
/// (thawed) or never frozen; the destination discards its copy.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Refused or failed once frozen, before anything went out (the text says why).
    #[error("{0}")]
    Refused(String),
    /// A live migration's pre-copy rounds failed; the process was never stopped.
    #[error("live migration failed, pid {pid} goes on here: {why}")]
    Precopy {
        /// The process.
        pid: i32,
        /// Why.
        why: String,
    },
    /// The stream or the destination's restore failed.
    #[error("migration failed, pid {pid} goes on here: {why}")]
    Failed {
        /// The process.
        pid: i32,
        /// Why.
        why: String,
    },
    /// The tracer thread could not start, or said something out of turn.
    #[error("{0}")]
    Tracer(String),
}

/// At and after the commit point.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The stub could not be injected: the original was given back, the copy is discarded.
    #[error("the stub could not be injected, pid {pid} goes on here: {why}")]
    StubFailed {
        /// The process.
        pid: i32,
        /// Why.
        why: String,
    },
    /// The tracer ended without a word before the execve: the original was given back.
    #[error("{0}")]
    Tracer(String),
    /// Past the point of no return, the destination says its copy is gone: the process is
    /// lost.
    #[error("{0}")]
    Lost(String),
}

/// A migration that failed, in whichever phase.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Before the freeze.
    #[error(transparent)]
    Negotiate(#[from] NegotiateError),
    /// Between freeze and the copy held on the destination.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// At or after the commit point.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// The records could not be written: nothing goes on without them.
    #[error("migration records: {}", error_chain(.0))]
    Records(#[from] RecordsError),
    /// Post-copy's commit (`migrate/lazy.rs`), which still says its outcome as a status.
    #[error("{}", .0.message())]
    Lazy(Status),
}

impl MigrateError {
    /// The gRPC code the caller gets.
    pub fn code(&self) -> Code {
        use NegotiateError as N;
        match self {
            Self::Negotiate(e) => match e {
                N::BadPid(_)
                | N::ThisHost { .. }
                | N::BadCodec(_)
                | N::LazyWith
                | N::UnknownPeer(_) => Code::InvalidArgument,
                N::NoProcess(_) => Code::NotFound,
                N::Stub { .. }
                | N::Children(_)
                | N::Version(_)
                | N::Incompatible { .. }
                | N::FilesDiffer { .. }
                | N::Unshippable { .. } => Code::FailedPrecondition,
                N::Unreachable { .. } => Code::Unavailable,
                N::Internal(_) => Code::Internal,
            },
            Self::Transfer(e) => match e {
                TransferError::Refused(_) => Code::FailedPrecondition,
                TransferError::Precopy { .. } | TransferError::Failed { .. } => Code::Aborted,
                TransferError::Tracer(_) => Code::Internal,
            },
            Self::Commit(e) => match e {
                CommitError::StubFailed { .. } => Code::Aborted,
                CommitError::Tracer(_) => Code::Internal,
                CommitError::Lost(_) => Code::DataLoss,
            },
            Self::Records(_) => Code::Internal,
            Self::Lazy(s) => s.code(),
        }
    }
}

/// The one place a migration error becomes a gRPC status.
impl From<MigrateError> for Status {
    fn from(e: MigrateError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_texts() {
        let s = Status::from(MigrateError::from(NegotiateError::BadPid(1)));
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "bad pid 1")
        );
        let s = Status::from(MigrateError::from(NegotiateError::Incompatible {
            to: "h2".into(),
            pid: 7,
            problems: vec!["kernel".into(), "vdso".into()],
        }));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "h2 cannot run pid 7:\n  kernel\n  vdso");
        let s = Status::from(MigrateError::from(TransferError::Failed {
            pid: 7,
            why: "h2: gone".into(),
        }));
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::Aborted,
                "migration failed, pid 7 goes on here: h2: gone"
            )
        );
        let s = Status::from(MigrateError::from(CommitError::Lost("gone".into())));
        assert_eq!(s.code(), Code::DataLoss);
    }
}
