//! ferryd as a real process: configuration and TLS checks at start, mutual TLS on the peer API,
//! `SO_PEERCRED` authorization on the local API, and systemd notification.
//!
//! Each test runs its own ferryd processes on 127.0.0.1 (free ports picked per test) with
//! certificates made by `ferry ca` in a temporary directory; they are killed by PID when the
//! test ends, also when it fails.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_agent::transport::{Connector, TlsMaterial};
use ferry_proto::v1::peer_client::PeerClient;
use ferry_proto::v1::{NegotiateRequest, SinkChunk};
use ferry_tests::{TempDir, ferry_bin, kill_and_reap, require_root};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long ferryd may take to start or stop.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `ferryd`, built next to `ferry`.
fn ferryd_bin() -> PathBuf {
    let path = ferry_bin().with_file_name("ferryd");
    assert!(
        path.is_file(),
        "ferryd is missing at {}: build it first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// Runs `ferry ARGS`, failing with its output unless it succeeds.
fn ferry(args: &[&str]) -> Result<()> {
    let out = Command::new(ferry_bin()).args(args).output()?;
    ensure!(
        out.status.success(),
        "ferry {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A cluster CA in `dir` with certificates for `names`.
fn make_ca(dir: &Path, names: &[&str]) -> Result<()> {
    let d = dir.to_str().context("utf-8 temp path")?;
    ferry(&["ca", "init", "--dir", d])?;
    for name in names {
        ferry(&["ca", "issue", name, "--dir", d])?;
    }
    Ok(())
}

/// A TCP port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Writes a configuration for `name` into `dir/NAME.toml` and returns its path.
fn write_config(
    dir: &Path,
    name: &str,
    listen: &str,
    tls_dir: &Path,
    peers: &[(&str, &str)],
) -> PathBuf {
    let mut text = format!(
        "name = \"{name}\"\nlisten = \"{listen}\"\nsocket = \"{}\"\ntls_dir = \"{}\"\n\n[peers]\n",
        dir.join(name).join("run").join("ferryd.sock").display(),
        tls_dir.display()
    );
    for (peer, addr) in peers {
        text.push_str(&format!("{peer} = \"{addr}\"\n"));
    }
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, text).expect("write the configuration");
    path
}

/// A running ferryd, killed by PID on drop.
struct Ferryd {
    child: Child,
    /// Its fake systemd notification socket.
    notify: UnixDatagram,
    addr: String,
    socket: PathBuf,
    log: PathBuf,
}

impl Ferryd {
    /// Starts ferryd `name` listening on a free port, with certificates in `tls_dir`, and waits
    /// for its `READY=1`.
    fn start(dir: &Path, name: &str, tls_dir: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port());
        let config = write_config(dir, name, &addr, tls_dir, &[]);
        let notify_path = dir.join(format!("{name}.notify"));
        let _ = fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)?;
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(ferryd_bin())
            .arg("--config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("FERRY_LOG", "debug")
            // Each agent its own records store (two may run at once).
            .env("FERRY_STATE_DIR", dir.join(format!("state-{name}")))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("start ferryd")?;
        let mut daemon = Ferryd {
            child,
            notify,
            addr,
            socket: dir.join(name).join("run").join("ferryd.sock"),
            log,
        };
        daemon
            .wait_for_notification("READY=1")
            .with_context(|| format!("ferryd log:\n{}", daemon.log_text()))?;
        Ok(daemon)
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// Waits for a datagram on the notification socket containing the line `what`.
    fn wait_for_notification(&mut self, what: &str) -> Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            // Read before looking at the process: it may have sent `what` and then exited.
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if msg.lines().any(|l| l == what) {
                        return Ok(msg);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Some(status) = self.child.try_wait()? {
                        bail!("ferryd exited ({status}) without sending {what}");
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("no {what} from ferryd within {START_TIMEOUT:?}")
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Ferryd {
    fn drop(&mut self) {
        kill_and_reap(self.pid());
    }
}

/// Runs `f` on a fresh tokio runtime (with the ring provider installed for rustls).
fn block_on<T>(f: impl Future<Output = T>) -> T {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Sends `chunks` chunks of 64 KiB to the peer's Sink; returns the byte count it reports.
async fn sink(channel: Channel, chunks: usize) -> Result<u64, tonic::Status> {
    let data = vec![0xa5u8; 64 << 10];
    let stream = tokio_stream::iter((0..chunks).map(move |_| SinkChunk { data: data.clone() }));
    let reply = PeerClient::new(channel).sink(stream).await?;
    Ok(reply.into_inner().bytes)
}

async fn negotiate(channel: Channel) -> Result<(), tonic::Status> {
    PeerClient::new(channel)
        .negotiate(NegotiateRequest::default())
        .await
        .map(drop)
}

/// A hand-made client channel to `addr` expecting the server to be `server_name`.
fn raw_channel(addr: &str, tls: ClientTlsConfig) -> Channel {
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// Asserts that a call was refused by the TLS layer: an error, and not one from a handler.
fn assert_refused(what: &str, result: Result<impl std::fmt::Debug, tonic::Status>) {
    match result {
        Ok(v) => panic!("{what}: the call succeeded ({v:?}) but must be refused"),
        Err(status) => {
            println!("{what}: refused: {:?}: {}", status.code(), status.message());
            assert!(
                !matches!(
                    status.code(),
                    tonic::Code::Ok
                        | tonic::Code::Unimplemented
                        | tonic::Code::InvalidArgument
                        | tonic::Code::Unauthenticated
                ),
                "{what}: the call reached a handler ({status:?}) instead of failing in TLS"
            );
        }
    }
}

#[test]
fn refuses_missing_or_partial_tls() -> Result<()> {
    let dir = TempDir::new("ferryd-tls")?;
    let tls = dir.path().join("tls");
    let config = write_config(dir.path(), "alpha", "127.0.0.1:1", &tls, &[]);
    let run = || -> Result<String> {
        let out = Command::new(ferryd_bin())
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            out.status.code() == Some(1),
            "ferryd should refuse to start, but ended with {}",
            out.status
        );
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };

    // No TLS directory at all: the first file is named.
    let err = run()?;
    let ca = tls.join("ca.pem");
    assert!(
        err.contains(&format!("{} is missing", ca.display())),
        "{err}"
    );

    // A CA and a certificate without its key.
    make_ca(&tls, &["alpha"])?;
    let key = tls.join("alpha.key");
    fs::rename(&key, dir.path().join("alpha.key.saved"))?;
    let err = run()?;
    assert!(
        err.contains(&format!("{} is missing", key.display())),
        "{err}"
    );

    // A key file that holds no key.
    fs::write(&key, "not a key\n")?;
    let err = run()?;
    assert!(
        err.contains(&format!("{} holds no PEM private key", key.display())),
        "{err}"
    );

    // The certificate of another node only.
    fs::rename(dir.path().join("alpha.key.saved"), &key)?;
    fs::remove_file(tls.join("alpha.pem"))?;
    let err = run()?;
    assert!(
        err.contains(&format!("{} is missing", tls.join("alpha.pem").display())),
        "{err}"
    );
    Ok(())
}

#[test]
fn mutual_tls_refuses_strangers_and_accepts_peers() -> Result<()> {
    let dir = TempDir::new("ferryd-mtls")?;
    let tls = dir.path().join("tls");
    make_ca(&tls, &["alpha", "beta"])?;
    let other = dir.path().join("other-ca");
    make_ca(&other, &["beta"])?;
    let alpha = Ferryd::start(dir.path(), "alpha", &tls, &[])?;

    let ca = Certificate::from_pem(fs::read(tls.join("ca.pem"))?);
    let material = TlsMaterial::load(&tls, "beta")?;
    // beta's view of the cluster: alpha at its address, and "gamma" at alpha's address too
    // (a server whose certificate names another host).
    let peers = BTreeMap::from([
        ("alpha".to_owned(), alpha.addr.clone()),
        ("gamma".to_owned(), alpha.addr.clone()),
    ]);
    let connector = Connector::new(material, peers);

    block_on(async {
        // No client certificate.
        let no_cert = ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .domain_name("alpha");
        assert_refused(
            "no client certificate, Sink",
            sink(raw_channel(&alpha.addr, no_cert.clone()), 4).await,
        );
        assert_refused(
            "no client certificate, Negotiate",
            negotiate(raw_channel(&alpha.addr, no_cert)).await,
        );

        // A certificate of another CA (named like a real peer).
        let stranger = ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .identity(Identity::from_pem(
                fs::read(other.join("beta.pem"))?,
                fs::read(other.join("beta.key"))?,
            ))
            .domain_name("alpha");
        assert_refused(
            "another CA's certificate, Sink",
            sink(raw_channel(&alpha.addr, stranger.clone()), 4).await,
        );
        assert_refused(
            "another CA's certificate, Negotiate",
            negotiate(raw_channel(&alpha.addr, stranger)).await,
        );

        // The server at gamma's address presents alpha's certificate: the client refuses it.
        let gamma = connector.channel("gamma")?;
        assert_refused(
            "server naming another host, Sink",
            sink(gamma.clone(), 4).await,
        );
        assert_refused(
            "server naming another host, Negotiate",
            negotiate(gamma).await,
        );

        // An unknown peer name never gets a channel.
        let err = connector.channel("delta").unwrap_err();
        assert!(err.to_string().contains("unknown peer \"delta\""), "{err}");

        // The real peer: the Sink counts every byte, and Negotiate reaches its handler.
        let channel = connector.channel("alpha")?;
        let bytes = sink(channel.clone(), 16).await?;
        assert_eq!(bytes, 16 * (64 << 10));
        let status = negotiate(channel).await.unwrap_err();
        // An empty request reaches the handler, which judges it.
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("migration id"), "{status:?}");
        anyhow::Ok(())
    })?;

    // The server saw the caller's name from its certificate.
    let log = alpha.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("sink") && l.contains("peer=beta") && l.contains("bytes=1048576")),
        "ferryd did not log the sink from peer beta:\n{log}"
    );
    Ok(())
}

#[test]
fn local_api_authorizes_by_peer_credentials() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    const NOBODY: u32 = 65534;
    let dir = TempDir::new("ferryd-local")?;
    // The non-root caller must be able to reach the socket's directory.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let tls = dir.path().join("tls");
    make_ca(&tls, &["alpha"])?;
    let alpha = Ferryd::start(dir.path(), "alpha", &tls, &[])?;

    let mode = fs::metadata(&alpha.socket)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "the local socket's mode");

    let call = |uid: u32, pid: &str| -> Result<String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry-local-call"));
        cmd.arg(&alpha.socket).args(["migrate", pid, "beta"]);
        if uid != 0 {
            cmd.uid(uid).gid(uid);
        }
        let out = cmd.output()?;
        ensure!(
            out.status.success(),
            "ferry-local-call failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };

    // A root-owned process (this test) asked for by nobody.
    let me = std::process::id().to_string();
    let out = call(NOBODY, &me)?;
    assert!(
        out.starts_with("status PermissionDenied: permission denied"),
        "nobody migrating a root process: {out}"
    );
    let out = call(NOBODY, "1")?;
    assert!(
        out.starts_with("status PermissionDenied: permission denied"),
        "pid 1: {out}"
    );

    // Its own process passes authorization and reaches the migration, which finds no peer
    // "beta" in this agent's configuration.
    let out = call(NOBODY, "self")?;
    assert!(
        out.starts_with("status InvalidArgument: unknown peer \"beta\""),
        "nobody migrating itself: {out}"
    );

    // Root may ask for any process; a missing one is reported as such.
    let out = call(0, &me)?;
    assert!(
        out.starts_with("status InvalidArgument: unknown peer \"beta\""),
        "root migrating a root process: {out}"
    );
    let out = call(0, &i32::MAX.to_string())?;
    assert!(
        out.starts_with("status NotFound: no process"),
        "missing process: {out}"
    );
    Ok(())
}

#[test]
fn notifies_systemd_and_stops_gracefully() -> Result<()> {
    let dir = TempDir::new("ferryd-notify")?;
    let tls = dir.path().join("tls");
    make_ca(&tls, &["alpha"])?;
    // READY=1 is awaited by start; a 200 ms watchdog needs a ping every 100 ms.
    let mut alpha = Ferryd::start(dir.path(), "alpha", &tls, &[("WATCHDOG_USEC", "200000")])?;
    let start = Instant::now();
    alpha.wait_for_notification("WATCHDOG=1")?;
    alpha.wait_for_notification("WATCHDOG=1")?;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "two watchdog pings took {:?}",
        start.elapsed()
    );
    assert!(alpha.socket.exists());

    kill(Pid::from_raw(alpha.pid()), Signal::SIGTERM)?;
    alpha.wait_for_notification("STOPPING=1")?;
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = alpha.child.try_wait()? {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "ferryd did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        status.success(),
        "ferryd ended with {status} after SIGTERM:\n{}",
        alpha.log_text()
    );
    assert!(!alpha.socket.exists(), "the local socket is left behind");
    Ok(())
}
