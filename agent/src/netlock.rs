//! The network lock. Between the end of a dumped process and its restore, its established TCP
//! connections live only in the image: no socket holds their ports, so the kernel would answer
//! a peer's next segment with RST and the peer would drop the connection. Before the process
//! is ended, the dump installs an nftables table that drops every segment a peer sends to one
//! of those connections (the peer retransmits later); the restore deletes it once the restored
//! sockets hold the ports again, just before they leave repair mode.
//!
//! One table per process, named after its connections (`ferry_lock_` and 16 hex digits of a
//! digest of their address pairs), so the restore finds it from the image alone. A restore
//! that fails leaves the lock in place for another try; `nft delete table inet NAME` removes
//! it by hand. The lock is made with the `nft` program (Debian's `nftables`), in the process's
//! network namespace (through `nsenter` when it is not the dumper's).

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use nix::unistd::Pid;

use crate::state::{FdKind, ProcessState, SocketKind};

/// The mark (`SO_MARK`) of the segments a restore writes itself to set a connection's FINs
/// again (`restore::tcp_fin`): the lock lets them through.
pub const MARK: i32 = 0x6665_7279;

/// Installing or removing the network lock failed.
#[derive(Debug, thiserror::Error)]
pub enum NetLockError {
    /// `nft` is not installed.
    #[error(
        "established TCP connections need a network lock between dump and restore (else a peer \
         writing meanwhile gets RST), which needs the `nft` program (Debian package nftables)"
    )]
    NoNft,
    /// `nft` failed.
    #[error("network lock: `nft` failed: {0}")]
    Nft(String),
}

/// The established TCP connections of a process: (local, peer).
pub fn connections(state: &ProcessState) -> Vec<(SocketAddr, SocketAddr)> {
    let mut out: Vec<(SocketAddr, SocketAddr)> = state
        .fds
        .iter()
        .filter_map(|f| match &f.kind {
            FdKind::Socket(s) => match &s.kind {
                // Not one waiting in an accept queue of the process: the restore makes it
                // again by a handshake on this host, which the lock must let through.
                SocketKind::Inet(i) if i.tcp.as_ref().is_some_and(|t| t.unaccepted.is_none()) => {
                    Some((i.local, i.peer?))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The lock table's name for these connections.
pub fn table_name(conns: &[(SocketAddr, SocketAddr)]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (local, peer) in conns {
        ctx.update(format!("{local}>{peer};").as_bytes());
    }
    let d = ctx.finish();
    let hex: String = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("ferry_lock_{hex}")
}

/// The nftables ruleset of the lock: segments from each peer to its connection are dropped,
/// before connection tracking (`raw` priority), except those marked [`MARK`] (a restore's
/// own).
fn ruleset(name: &str, conns: &[(SocketAddr, SocketAddr)]) -> String {
    let mut rules = format!("    meta mark {MARK:#x} accept\n");
    for (local, peer) in conns {
        let ip = if peer.is_ipv4() { "ip" } else { "ip6" };
        rules.push_str(&format!(
            "    {ip} saddr {} tcp sport {} {ip} daddr {} tcp dport {} drop\n",
            peer.ip(),
            peer.port(),
            local.ip(),
            local.port()
        ));
    }
    format!(
        "table inet {name} {{\n  chain input {{\n    type filter hook input priority raw; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// Installs the lock for the connections of `state` (a process `pid` about to be ended) in
/// its network namespace. Returns the table's name, or `None` when it has no connection.
pub fn lock(pid: Pid, state: &ProcessState) -> Result<Option<String>, NetLockError> {
    let conns = connections(state);
    if conns.is_empty() {
        return Ok(None);
    }
    let name = table_name(&conns);
    // A table of that name left by an earlier dump of the same connections is replaced.
    let _ = nft(Some(pid), &format!("delete table inet {name}\n"));
    nft(Some(pid), &ruleset(&name, &conns))?;
    tracing::debug!(table = %name, connections = conns.len(), "network locked");
    Ok(Some(name))
}

/// Removes the lock of `state`'s connections from this network namespace, if there is one.
pub fn unlock(state: &ProcessState) -> Result<(), NetLockError> {
    let conns = connections(state);
    if conns.is_empty() {
        return Ok(());
    }
    let name = table_name(&conns);
    match nft(None, &format!("delete table inet {name}\n")) {
        // Nothing to remove: no lock was made here (or `nft` is not even installed).
        Err(NetLockError::NoNft) => Ok(()),
        Err(NetLockError::Nft(msg)) if msg.contains("No such file or directory") => Ok(()),
        Err(e) => Err(e),
        Ok(()) => {
            tracing::debug!(table = %name, "network unlocked");
            Ok(())
        }
    }
}

/// Runs `nft -f -` with `script`, in the network namespace of `pid` when it is not ours.
fn nft(pid: Option<Pid>, script: &str) -> Result<(), NetLockError> {
    let other_ns = pid.filter(|p| {
        let ns =
            |path: String| std::fs::metadata(path).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        ns(format!("/proc/{p}/ns/net")).ok() != ns("/proc/self/ns/net".into()).ok()
    });
    let mut cmd = match other_ns {
        Some(p) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{p}/ns/net")).arg("nft");
            c
        }
        None => Command::new("nft"),
    };
    let mut child = match cmd
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NetLockError::NoNft),
        Err(e) => return Err(NetLockError::Nft(e.to_string())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NetLockError::Nft(format!("write its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetLockError::Nft(e.to_string()))?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr);
    // nsenter found, nft not: exit 127 with "No such file or directory" naming nft.
    if out.status.code() == Some(127) {
        return Err(NetLockError::NoNft);
    }
    Err(NetLockError::Nft(
        msg.lines()
            .find(|l| l.starts_with("Error"))
            .unwrap_or(msg.trim())
            .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_rules_follow_the_connections() {
        let a: SocketAddr = "127.0.0.1:6379".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let c: SocketAddr = "[::1]:80".parse().unwrap();
        let d: SocketAddr = "[::1]:5555".parse().unwrap();
        let one = table_name(&[(a, b)]);
        assert!(
            one.starts_with("ferry_lock_") && one.len() == 11 + 16,
            "{one}"
        );
        assert_ne!(one, table_name(&[(a, b), (c, d)]));
        assert_eq!(one, table_name(&[(a, b)]));
        let r = ruleset(&one, &[(a, b), (c, d)]);
        assert!(
            r.contains("ip saddr 127.0.0.1 tcp sport 40000 ip daddr 127.0.0.1 tcp dport 6379 drop"),
            "{r}"
        );
        assert!(
            r.contains("ip6 saddr ::1 tcp sport 5555 ip6 daddr ::1 tcp dport 80 drop"),
            "{r}"
        );
        assert!(r.contains("meta mark 0x66657279 accept"), "{r}");
    }
}
