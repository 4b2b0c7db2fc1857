//! The local Unix socket: bound with mode 0666 so that every user's `ferry` command can reach
//! it; what a caller may do is decided per request from its `SO_PEERCRED`.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

/// `bind_local` failed.
#[derive(Debug, thiserror::Error)]
pub enum BindLocalError {
    /// The socket's directory could not be created.
    #[error("create the socket directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another agent answers on the socket.
    #[error("another ferryd is listening on {}", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Something that is not a socket has the socket's path.
    #[error("{} exists and is not a socket", path.display())]
    NotSocket {
        /// The path.
        path: PathBuf,
    },
    /// A stale socket could not be removed.
    #[error("remove the stale socket {}", path.display())]
    RemoveStale {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// bind(2) failed.
    #[error("bind the local socket {}", path.display())]
    Bind {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// chmod failed.
    #[error("make the local socket {} reachable by every user", path.display())]
    Chmod {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Binds the local API socket at `path`: creates its directory, replaces a stale socket left by
/// a dead agent (but refuses when a live one answers), and sets mode 0666.
pub fn bind_local(path: &Path) -> Result<UnixListener, BindLocalError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| BindLocalError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BindLocalError::InUse {
                    path: path.to_path_buf(),
                });
            }
            fs::remove_file(path).map_err(|source| BindLocalError::RemoveStale {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(BindLocalError::NotSocket {
                path: path.to_path_buf(),
            });
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|source| BindLocalError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    // Authorization is per request (SO_PEERCRED), so the socket itself is open to all.
    fs::set_permissions(path, fs::Permissions::from_mode(0o666)).map_err(|source| {
        BindLocalError::Chmod {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

/// Who is calling on the local socket, from `SO_PEERCRED` (taken by the kernel at connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Effective uid of the caller.
    pub uid: u32,
    /// Effective gid of the caller.
    pub gid: u32,
    /// The caller's PID, when the kernel could give it (it may be in another PID namespace).
    pub pid: Option<i32>,
}

impl PeerCred {
    /// True for uid 0.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// The credentials of the caller of a local API request. Fails with `unauthenticated` when the
/// request did not come over the Unix socket.
pub fn caller<T>(request: &Request<T>) -> Result<PeerCred, Status> {
    let cred = request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .ok_or_else(|| Status::unauthenticated("the caller's credentials are unknown"))?;
    Ok(PeerCred {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}
