//! Why the destination refused or failed a call of the origin, one type per phase, like the
//! origin's (`error.rs`): the negotiation ([`NegotiateError`]), the transfer and restore
//! ([`ReceiveError`]), the decision (Commit, Abort, Query: [`DecideError`]). They become a
//! `tonic::Status` in one place only: the `From` impl of [`DestError`]; the gRPC code tells
//! the origin how to react (fix the request, retry, or that the copy is gone).

use tonic::{Code, Status};

use super::records::RecordsError;
use crate::transport::error_chain;

/// `Peer.Negotiate` refused.
#[derive(Debug, thiserror::Error)]
pub enum NegotiateError {
    /// Not a short token of letters, digits and dashes.
    #[error("bad migration id")]
    BadId,
    /// More files than may be negotiated.
    #[error("{n} files: at most {max} may be negotiated")]
    TooManyFiles {
        /// Asked.
        n: usize,
        /// Allowed.
        max: usize,
    },
    /// A file that is not a plain absolute path.
    #[error("file {0:?}: not a plain absolute path")]
    BadPath(String),
    /// This agent has a record of that migration already.
    #[error("migration {0} exists")]
    Exists(String),
    /// Another peer negotiates that id.
    #[error("migration {0} is being negotiated by another peer")]
    OtherPeer(String),
    /// The check's task failed.
    #[error("negotiation: {0}")]
    Task(String),
}

/// `Peer.Transfer` failed: nothing runs here (the half-built copy was ended); or
/// `Peer.Lazy` (post-copy's page stream) refused.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// Not a short token of letters, digits and dashes.
    #[error("bad migration id")]
    BadId,
    /// This agent has a record of that migration already.
    #[error("migration {0} exists")]
    Exists(String),
    /// The stream does not begin with its header or pre-copied pages.
    #[error("a transfer begins with its header (or pre-copied pages)")]
    BadStart,
    /// A message of pre-copied pages is malformed (the text says how).
    #[error("{0}")]
    BadPages(String),
    /// The thread that writes the pre-copied pages failed.
    #[error("pre-copied pages: {0}")]
    Precopy(String),
    /// A shipped file's path is not a plain absolute path.
    #[error("bad shipped path {0}")]
    BadShippedPath(String),
    /// A shipped file could not be written.
    #[error("shipped file {path}: {error}")]
    Shipped {
        /// Its path on the origin.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
    /// The stream broke (its status as the transport gave it).
    #[error("{}", .0.message())]
    Stream(Status),
    /// The origin aborted while the image arrived.
    #[error("aborted by the origin")]
    AbortedByOrigin,
    /// The restore (or the stream under it) failed.
    #[error("restore on the destination failed: {0}")]
    Restore(String),
    /// A task or thread of this agent failed (the text says which).
    #[error("{0}")]
    Task(String),
    /// `Peer.Lazy` without its first message.
    #[error("empty page stream")]
    EmptyPageStream,
    /// `Peer.Lazy` for a migration with no copy armed for its pages.
    #[error("migration {0}: no copy waits for its pages")]
    NoCopyWaiting(String),
}

/// `Peer.Commit`, `Peer.Abort` or `Peer.Query` refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No record of that migration.
    #[error("no migration {0}")]
    NoMigration(String),
    /// No record of that migration of that peer (another peer's is not told about).
    #[error("no migration {id} of {peer}")]
    NotOfPeer {
        /// The migration.
        id: String,
        /// The caller.
        peer: String,
    },
    /// The migration is another peer's.
    #[error("migration {id} is not one of {peer}'s")]
    NotYours {
        /// The migration.
        id: String,
        /// The caller.
        peer: String,
    },
    /// The held copy is gone (killed from outside).
    #[error("the held copy is gone")]
    CopyGone,
    /// The copy could not be let go.
    #[error("SIGCONT {pid}: {error}")]
    Resume {
        /// The copy.
        pid: i32,
        /// Why.
        error: nix::errno::Errno,
    },
    /// Commit of a migration aborted here.
    #[error("migration {id} was aborted: {detail}")]
    WasAborted {
        /// The migration.
        id: String,
        /// Its record's detail.
        detail: String,
    },
    /// Commit of a migration whose copy was lost here.
    #[error("migration {id} lost its copy: {detail}")]
    WasLost {
        /// The migration.
        id: String,
        /// Its record's detail.
        detail: String,
    },
    /// Commit of a migration that is not prepared.
    #[error("migration {id} is {state}, not prepared")]
    NotPrepared {
        /// The migration.
        id: String,
        /// Its state.
        state: String,
    },
    /// Abort of a copy that runs.
    #[error("migration {id} is {state}: the copy runs and is the only one")]
    Running {
        /// The migration.
        id: String,
        /// Its state.
        state: String,
    },
}

/// A call of the origin that the destination refused or failed, in whichever phase.
#[derive(Debug, thiserror::Error)]
pub enum DestError {
    /// `Peer.Negotiate`.
    #[error(transparent)]
    Negotiate(#[from] NegotiateError),
    /// `Peer.Transfer`.
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    /// `Peer.Commit`, `Peer.Abort`, `Peer.Query`.
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// The records could not be read or written: nothing goes on without them.
    #[error("migration records: {}", error_chain(.0))]
    Records(#[from] RecordsError),
}

impl DestError {
    /// The gRPC code the origin gets.
    pub fn code(&self) -> Code {
        use {DecideError as D, NegotiateError as N, ReceiveError as R};
        match self {
            Self::Negotiate(e) => match e {
                N::BadId | N::TooManyFiles { .. } | N::BadPath(_) => Code::InvalidArgument,
                N::Exists(_) | N::OtherPeer(_) => Code::AlreadyExists,
                N::Task(_) => Code::Internal,
            },
            Self::Receive(e) => match e {
                R::BadId
                | R::BadStart
                | R::BadPages(_)
                | R::BadShippedPath(_)
                | R::EmptyPageStream => Code::InvalidArgument,
                R::NoCopyWaiting(_) => Code::FailedPrecondition,
                R::Exists(_) => Code::AlreadyExists,
                R::Precopy(_) | R::AbortedByOrigin | R::Restore(_) => Code::Aborted,
                R::Stream(s) => s.code(),
                R::Shipped { .. } | R::Task(_) => Code::Internal,
            },
            Self::Decide(e) => match e {
                D::NoMigration(_) | D::NotOfPeer { .. } => Code::NotFound,
                D::NotYours { .. } => Code::PermissionDenied,
                D::CopyGone
                | D::WasAborted { .. }
                | D::WasLost { .. }
                | D::NotPrepared { .. }
                | D::Running { .. } => Code::FailedPrecondition,
                D::Resume { .. } => Code::Internal,
            },
            Self::Records(_) => Code::Internal,
        }
    }
}

/// The one place a destination error becomes a gRPC status.
impl From<DestError> for Status {
    fn from(e: DestError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<NegotiateError> for Status {
    fn from(e: NegotiateError) -> Self {
        DestError::from(e).into()
    }
}

impl From<ReceiveError> for Status {
    fn from(e: ReceiveError) -> Self {
        DestError::from(e).into()
    }
}

impl From<DecideError> for Status {
    fn from(e: DecideError) -> Self {
        DestError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_texts_the_origin_sees() {
        let cases: Vec<(DestError, Code, &str)> = vec![
            (
                NegotiateError::BadId.into(),
                Code::InvalidArgument,
                "bad migration id",
            ),
            (
                NegotiateError::Exists("m1".into()).into(),
                Code::AlreadyExists,
                "migration m1 exists",
            ),
            (
                ReceiveError::Restore("no memory".into()).into(),
                Code::Aborted,
                "restore on the destination failed: no memory",
            ),
            (
                ReceiveError::Stream(Status::deadline_exceeded("idle")).into(),
                Code::DeadlineExceeded,
                "idle",
            ),
            (
                DecideError::CopyGone.into(),
                Code::FailedPrecondition,
                "the held copy is gone",
            ),
            (
                DecideError::WasLost {
                    id: "m2".into(),
                    detail: "lazy migration lost its origin".into(),
                }
                .into(),
                Code::FailedPrecondition,
                "migration m2 lost its copy: lazy migration lost its origin",
            ),
            (
                DecideError::NotOfPeer {
                    id: "m3".into(),
                    peer: "h1".into(),
                }
                .into(),
                Code::NotFound,
                "no migration m3 of h1",
            ),
            (
                DecideError::Running {
                    id: "m4".into(),
                    state: "done".into(),
                }
                .into(),
                Code::FailedPrecondition,
                "migration m4 is done: the copy runs and is the only one",
            ),
        ];
        for (e, code, text) in cases {
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (code, text));
        }
    }
}
