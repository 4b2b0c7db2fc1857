//! The stub's side socket: `ferry-stub` connects to `<ferryd socket>.stub` (mode 0666) and
//! speaks a line protocol, authorized by `SO_PEERCRED`: the connecting PID must be the stub a
//! relay of this agent expects for that migration id.
//!
//! Stub → ferryd: `HELLO <migration id>` first, then `SIG <n>` for each signal it got.
//! ferryd → stub: `EXIT code <n>` or `EXIT signal <n>`: the remote process ended so;
//! `LOST <host>`: the process on that host is lost (its agent holds no copy of it any more,
//! or it could not be reached for too long): the stub exits with [`LOST_EXIT_CODE`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::Registry;
use super::RelayError;

/// The exit code of a stub whose process was lost (see `LOST` above); `ferry migrations`
/// on the origin shows the migration as `lost`.
pub const LOST_EXIT_CODE: i32 = 255;

/// The stub socket of the agent whose local socket is `socket`.
pub fn stub_socket_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_os_string();
    s.push(".stub");
    PathBuf::from(s)
}

/// A line of the stub protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StubCommand {
    /// `HELLO id`.
    Hello(String),
    /// `SIG n`.
    Signal(i32),
    /// `EXIT code n`.
    ExitCode(i32),
    /// `EXIT signal n`.
    ExitSignal(i32),
    /// `LOST host`.
    Lost(String),
}

impl StubCommand {
    /// The line, newline included.
    pub fn line(&self) -> String {
        match self {
            StubCommand::Hello(id) => format!("HELLO {id}\n"),
            StubCommand::Signal(n) => format!("SIG {n}\n"),
            StubCommand::ExitCode(n) => format!("EXIT code {n}\n"),
            StubCommand::ExitSignal(n) => format!("EXIT signal {n}\n"),
            StubCommand::Lost(host) => format!("LOST {host}\n"),
        }
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &str) -> Option<Self> {
        let mut w = line.split_ascii_whitespace();
        let cmd = match (w.next()?, w.next()?, w.next()) {
            ("HELLO", id, None) => StubCommand::Hello(id.to_string()),
            ("SIG", n, None) => StubCommand::Signal(n.parse().ok()?),
            ("LOST", host, None) => StubCommand::Lost(host.to_string()),
            ("EXIT", "code", Some(n)) => StubCommand::ExitCode(n.parse().ok()?),
            ("EXIT", "signal", Some(n)) => StubCommand::ExitSignal(n.parse().ok()?),
            _ => return None,
        };
        w.next().is_none().then_some(cmd)
    }
}

/// What the relay of one migration hears about its stub.
#[derive(Debug)]
pub enum StubEvent {
    /// The stub connected (authorized).
    Connected(UnixStream),
}

/// A stub a relay waits for.
#[derive(Debug)]
pub struct Expected {
    pub(super) pid: i32,
    pub(super) tx: mpsc::UnboundedSender<StubEvent>,
}

/// Starts serving the stub socket of `node` unless it is served already.
pub(super) fn ensure_listening(registry: &Registry, socket: &Path) -> Result<(), RelayError> {
    let path = stub_socket_path(socket);
    let mut inner = registry.lock();
    if inner.stub_socket.is_some() {
        return Ok(());
    }
    // A socket file left by an earlier ferryd.
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(RelayError::io(format!("bind {}", path.display())))?;
    // Stubs run as the users whose processes migrated.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .map_err(RelayError::io(format!("chmod {}", path.display())))?;
    inner.stub_socket = Some(path);
    let registry = registry.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((conn, _)) => {
                    let registry = registry.clone();
                    tokio::spawn(async move { admit(&registry, conn).await });
                }
                Err(e) => {
                    tracing::warn!(%e, "stub socket accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

/// Reads `HELLO id` and hands the connection to the relay expecting that stub, if the
/// connecting process is that stub.
async fn admit(registry: &Registry, mut conn: UnixStream) {
    let Some(pid) = conn.peer_cred().ok().and_then(|c| c.pid()) else {
        return;
    };
    let mut line = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut b = [0u8; 1];
        while line.len() < 512 {
            match conn.read(&mut b).await {
                Ok(1) if b[0] == b'\n' => return true,
                Ok(1) => line.push(b[0]),
                _ => return false,
            }
        }
        false
    })
    .await;
    if read != Ok(true) {
        return;
    }
    let Some(StubCommand::Hello(id)) = std::str::from_utf8(&line).ok().and_then(StubCommand::parse)
    else {
        return;
    };
    let inner = registry.lock();
    match inner.stubs.get(&id) {
        Some(e) if e.pid == pid => {
            let _ = e.tx.send(StubEvent::Connected(conn));
        }
        Some(e) => {
            tracing::warn!(migration = %id, pid, expected = e.pid, "stub connection from the wrong process refused");
        }
        None => {
            tracing::debug!(migration = %id, pid, "stub connection for no relay of ours");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StubCommand;

    #[test]
    fn lines_round_trip_and_junk_is_refused() {
        for c in [
            StubCommand::Hello("ab12".into()),
            StubCommand::Signal(10),
            StubCommand::ExitCode(7),
            StubCommand::ExitSignal(15),
            StubCommand::Lost("h2".into()),
        ] {
            let line = c.line();
            assert_eq!(StubCommand::parse(line.trim_end()), Some(c), "{line:?}");
        }
        for junk in ["LOST", "LOST h2 extra", "EXIT code x", "SIG", "BYE h2"] {
            assert_eq!(StubCommand::parse(junk), None, "{junk:?}");
        }
    }
}
