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
use ferry_agent::migrate::{negotiate, version};
use ferry_agent::transport::{Connector, TlsMaterial};
use ferry_proto::v1::peer_client::PeerClient;
use ferry_proto::v1::transfer_chunk::Part;
use ferry_proto::v1::{
    FileAnswer, FileCheck, FileVerdict, MigrationRef, NegotiateRequest, ProtocolVersion,
    RelayFrame, SinkChunk, TransferChunk, TransferHeader,
};
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
        Self::start_with_peers(dir, name, tls_dir, env, &[])
    }

    /// As [`Ferryd::start`], with a `[peers]` table.
    fn start_with_peers(
        dir: &Path,
        name: &str,
        tls_dir: &Path,
        env: &[(&str, &str)],
        peers: &[(&str, &str)],
    ) -> Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port());
        let config = write_config(dir, name, &addr, tls_dir, peers);
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

    // PEM armour around garbage: the file at fault is named, not the certificate.
    let saved_key = fs::read(dir.path().join("alpha.key.saved"))?;
    fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n",
    )?;
    let err = run()?;
    assert!(
        err.contains(&format!(
            "{} does not hold a usable private key",
            key.display()
        )),
        "{err}"
    );
    fs::write(&key, &saved_key)?;
    let ca = tls.join("ca.pem");
    let saved_ca = fs::read(&ca)?;
    fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )?;
    let err = run()?;
    assert!(
        err.contains(&format!(
            "{} does not hold a usable certificate",
            ca.display()
        )),
        "{err}"
    );
    fs::write(&ca, &saved_ca)?;
    // Another node's key beside this node's certificate.
    make_ca(&dir.path().join("other"), &["alpha"])?;
    fs::write(&key, fs::read(dir.path().join("other").join("alpha.key"))?)?;
    let err = run()?;
    assert!(
        err.contains(&format!(
            "{} is not the key of the certificate",
            key.display()
        )),
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

/// Dubious TLS files do not stop ferryd but are said at start: a key others may read, a
/// certificate that names another host, one the cluster CA did not sign.
#[test]
fn warns_about_dubious_tls_files() -> Result<()> {
    let dir = TempDir::new("ferryd-tls-warn")?;
    let tls = dir.path().join("tls");
    make_ca(&tls, &["alpha", "beta"])?;
    let key = tls.join("alpha.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644))?;
    let alpha = Ferryd::start(dir.path(), "alpha", &tls, &[])?;
    let log = alpha.log_text();
    assert!(
        log.contains(&format!(
            "TLS key {} is readable by others (mode 0644)",
            key.display()
        )),
        "{log}"
    );
    assert!(!log.contains("names beta"), "{log}");
    assert!(!log.contains("not signed"), "{log}");
    drop(alpha);

    // beta's certificate and key installed as alpha's; the CA of another cluster.
    let wrong = dir.path().join("wrong");
    fs::create_dir_all(&wrong)?;
    fs::copy(tls.join("beta.pem"), wrong.join("alpha.pem"))?;
    fs::copy(tls.join("beta.key"), wrong.join("alpha.key"))?;
    let other = dir.path().join("other-ca");
    make_ca(&other, &[])?;
    fs::copy(other.join("ca.pem"), wrong.join("ca.pem"))?;
    let alpha = Ferryd::start(dir.path(), "alpha", &wrong, &[])?;
    let log = alpha.log_text();
    assert!(
        log.contains(&format!(
            "TLS certificate {} names beta, not this host alpha",
            wrong.join("alpha.pem").display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "is not signed by the cluster CA {}",
            wrong.join("ca.pem").display()
        )),
        "{log}"
    );
    assert!(!log.contains("readable by others"), "{log}");
    Ok(())
}

/// A start that fails after the local socket was bound leaves no socket file.
#[test]
fn failed_start_leaves_no_socket() -> Result<()> {
    let dir = TempDir::new("ferryd-failed-start")?;
    let tls = dir.path().join("tls");
    make_ca(&tls, &["alpha"])?;
    let config = write_config(dir.path(), "alpha", "127.0.0.1:0", &tls, &[]);
    // The records store cannot be made under a regular file: ferryd fails after binding.
    let not_a_dir = dir.path().join("not-a-dir");
    fs::write(&not_a_dir, "")?;
    let out = Command::new(ferryd_bin())
        .arg("--config")
        .arg(&config)
        .env("FERRY_STATE_DIR", not_a_dir.join("state"))
        .stdin(Stdio::null())
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "ferryd ended with {}: {err}",
        out.status
    );
    assert!(err.contains("records store"), "{err}");
    let socket = dir.path().join("alpha").join("run").join("ferryd.sock");
    assert!(
        !socket.exists(),
        "the socket {} is left behind",
        socket.display()
    );
    Ok(())
}

/// A peer that does not answer is named with its address and the system's reason.
#[test]
fn unreachable_peer_is_named_with_address_and_errno() -> Result<()> {
    let dir = TempDir::new("ferryd-unreachable")?;
    let tls = dir.path().join("tls");
    make_ca(&tls, &["alpha"])?;
    // Nobody listens there.
    let beta = format!("127.0.0.1:{}", free_port());
    let alpha = Ferryd::start_with_peers(dir.path(), "alpha", &tls, &[], &[("beta", &beta)])?;
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-local-call"))
        .arg(&alpha.socket)
        .args(["migrate", "self", "beta"])
        .output()?;
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains(&format!("beta at {beta}: negotiation:"))
            && out.contains("Connection refused (os error 111)"),
        "{out}"
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
    // beta is alpha's peer (its address does not matter: alpha never dials it here).
    let alpha =
        Ferryd::start_with_peers(dir.path(), "alpha", &tls, &[], &[("beta", "127.0.0.1:1")])?;

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

/// A client channel to `server` (named `server_name`) presenting the certificate `name` of the
/// CA in `tls`.
fn channel_as(tls: &Path, name: &str, server: &Ferryd, server_name: &str) -> Result<Channel> {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(fs::read(tls.join("ca.pem"))?))
        .identity(Identity::from_pem(
            fs::read(tls.join(format!("{name}.pem")))?,
            fs::read(tls.join(format!("{name}.key")))?,
        ))
        .domain_name(server_name);
    Ok(raw_channel(&server.addr, config))
}

fn mref(id: &str) -> MigrationRef {
    MigrationRef {
        migration_id: id.to_owned(),
    }
}

/// A negotiation as the origin would send it from this host, about `files`.
fn negotiation(id: &str, files: Vec<FileCheck>) -> NegotiateRequest {
    NegotiateRequest {
        migration_id: id.to_owned(),
        kernel_release: negotiate::kernel_release(),
        xsave_features: negotiate::xsave_features(),
        vdso_sha256: negotiate::vdso_sha256(),
        files,
        protocol: Some(ProtocolVersion {
            major: version::PROTOCOL.major,
            minor: version::PROTOCOL.minor,
        }),
        premade: None,
    }
}

fn expect_code<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tonic::Status>,
    code: tonic::Code,
) -> tonic::Status {
    match result {
        Ok(v) => panic!("{what}: succeeded ({v:?}), expected {code:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            s
        }
    }
}

/// A certificate of the cluster CA is not enough: every peer RPC must come from a host of the
/// agent's `[peers]`. A listed peer's Negotiate learns per file only same / differs / missing,
/// and its Query sees only the migrations it took part in.
#[test]
fn peer_api_admits_only_listed_peers() -> Result<()> {
    let dir = TempDir::new("ferryd-peers")?;
    let tls = dir.path().join("tls");
    // mallory holds a genuine certificate of the cluster CA, but alpha does not list it.
    make_ca(&tls, &["alpha", "beta", "gamma", "mallory"])?;
    let alpha = Ferryd::start_with_peers(
        dir.path(),
        "alpha",
        &tls,
        &[],
        &[("beta", "127.0.0.1:1"), ("gamma", "127.0.0.1:2")],
    )?;
    // A file only root may read, whose size and contents a caller must not learn.
    let secret = dir.path().join("secret");
    fs::write(&secret, "hunter2\n")?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))?;
    let secret_path = secret.to_str().context("utf-8 path")?.to_owned();
    let probe = |size: u64, sha256: Vec<u8>| FileCheck {
        path: secret_path.clone(),
        size,
        sha256,
        ..Default::default()
    };

    block_on(async {
        let mallory_channel = channel_as(&tls, "mallory", &alpha, "alpha")?;
        let mallory = PeerClient::new(mallory_channel.clone());
        let denied = tonic::Code::PermissionDenied;
        let s = expect_code("mallory Sink", sink(mallory_channel, 1).await, denied);
        assert!(
            s.message().contains("mallory is not a peer of alpha"),
            "{s:?}"
        );
        expect_code(
            "mallory Negotiate",
            mallory
                .clone()
                .negotiate(negotiation("m-1", vec![probe(1, vec![0; 32])]))
                .await,
            denied,
        );
        expect_code(
            "mallory Query",
            mallory.clone().query(mref("m-1")).await,
            denied,
        );
        expect_code(
            "mallory Commit",
            mallory.clone().commit(mref("m-1")).await,
            denied,
        );
        expect_code(
            "mallory Abort",
            mallory.clone().abort(mref("m-1")).await,
            denied,
        );
        let header = TransferChunk {
            part: Some(Part::Header(TransferHeader {
                migration_id: "m-1".into(),
                ..Default::default()
            })),
        };
        expect_code(
            "mallory Transfer",
            mallory
                .clone()
                .transfer(tokio_stream::iter(vec![header.clone()]))
                .await,
            denied,
        );
        let frame = RelayFrame {
            migration_id: "m-1".into(),
            ..Default::default()
        };
        expect_code(
            "mallory Relay",
            mallory.clone().relay(tokio_stream::iter(vec![frame])).await,
            denied,
        );

        // A listed peer's negotiation: one verdict per file that is not the same, nothing of
        // this host's file.
        let mut beta = PeerClient::new(channel_as(&tls, "beta", &alpha, "alpha")?);
        let right = negotiate::sha256_file(&secret)?;
        let missing = dir.path().join("no-such-file");
        let reply = beta
            .negotiate(negotiation(
                "n-1",
                vec![
                    probe(1, vec![0; 32]),
                    FileCheck {
                        path: missing.to_str().context("utf-8")?.to_owned(),
                        size: 3,
                        sha256: vec![0; 32],
                        ..Default::default()
                    },
                    FileCheck {
                        path: dir.path().to_str().context("utf-8")?.to_owned(),
                        ..Default::default()
                    },
                ],
            ))
            .await?
            .into_inner();
        assert!(reply.problems.is_empty(), "{reply:?}");
        assert_eq!(
            reply.protocol.as_ref().map(|v| (v.major, v.minor)),
            Some((version::PROTOCOL.major, version::PROTOCOL.minor)),
            "the destination announces its protocol version"
        );
        // The compatibility rule: another major version, or none (an agent from before the
        // version), is refused by name; another minor version is not.
        for (id, theirs, refusal) in [
            ("v-1", None, Some("beta runs an older ferryd")),
            (
                "v-2",
                Some((version::PROTOCOL.major + 1, 0)),
                Some("beta speaks migration protocol 2.0"),
            ),
            ("v-3", Some((version::PROTOCOL.major, 7)), None),
        ] {
            let mut req = negotiation(id, Vec::new());
            req.protocol = theirs.map(|(major, minor)| ProtocolVersion { major, minor });
            let reply = beta.negotiate(req).await?.into_inner();
            match refusal {
                Some(text) => assert!(
                    reply
                        .problems
                        .first()
                        .is_some_and(|p| p.contains(text) && p.contains("same major version")),
                    "{id}: {reply:?}"
                ),
                None => assert!(reply.problems.is_empty(), "{id}: {reply:?}"),
            }
        }
        assert_eq!(
            reply.files,
            vec![
                FileAnswer {
                    path: secret_path.clone(),
                    verdict: FileVerdict::Differs as i32,
                },
                FileAnswer {
                    path: missing.to_str().context("utf-8")?.to_owned(),
                    verdict: FileVerdict::Missing as i32,
                },
            ],
        );
        // The right size but other contents: the same answer as the wrong size (which of the
        // two differed is not said).
        let reply = beta
            .negotiate(negotiation("n-2", vec![probe(8, vec![0; 32])]))
            .await?
            .into_inner();
        assert_eq!(reply.files.len(), 1, "{reply:?}");
        assert_eq!(reply.files[0].verdict, FileVerdict::Differs as i32);
        let reply = beta
            .negotiate(negotiation("n-3", vec![probe(8, right)]))
            .await?
            .into_inner();
        assert!(reply.files.is_empty(), "the identical file: {reply:?}");
        // Only plain absolute paths.
        expect_code(
            "relative path",
            beta.negotiate(negotiation(
                "n-4",
                vec![FileCheck {
                    path: "etc/passwd".into(),
                    ..Default::default()
                }],
            ))
            .await,
            tonic::Code::InvalidArgument,
        );

        // beta's transfer that brings no image leaves an aborted record of beta's.
        let result = beta
            .transfer(tokio_stream::iter(vec![TransferChunk {
                part: Some(Part::Header(TransferHeader {
                    migration_id: "q-1".into(),
                    ..Default::default()
                })),
            }]))
            .await;
        assert!(result.is_err(), "{result:?}");
        let rec = beta.query(mref("q-1")).await?.into_inner();
        assert_eq!((rec.peer.as_str(), rec.state.as_str()), ("beta", "aborted"));
        // gamma, listed too, took no part in it: it is unknown to gamma, and gamma cannot
        // negotiate, commit or abort under its id.
        let mut gamma = PeerClient::new(channel_as(&tls, "gamma", &alpha, "alpha")?);
        expect_code(
            "gamma Query",
            gamma.query(mref("q-1")).await,
            tonic::Code::NotFound,
        );
        expect_code(
            "gamma Negotiate of beta's id",
            gamma.negotiate(negotiation("q-1", Vec::new())).await,
            tonic::Code::AlreadyExists,
        );
        expect_code("gamma Commit", gamma.commit(mref("q-1")).await, denied);
        expect_code("gamma Abort", gamma.abort(mref("q-1")).await, denied);
        anyhow::Ok(())
    })?;
    let log = alpha.log_text();
    assert!(
        log.contains("not in [peers]") && log.contains("mallory"),
        "ferryd did not log the refused caller:\n{log}"
    );
    Ok(())
}

/// A process this test started, killed and reaped by PID on drop.
struct Reaped(Child);

impl Reaped {
    fn spawn(cmd: &mut Command) -> Result<Self> {
        Ok(Self(cmd.stdin(Stdio::null()).spawn()?))
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("pid fits i32")
    }

    /// Reads its stdout up to the line `line` (stdout must be piped).
    fn wait_line(&mut self, line: &str) -> Result<()> {
        use std::io::BufRead;
        let out = self.0.stdout.take().context("stdout not piped")?;
        let mut reader = std::io::BufReader::new(out);
        let mut got = String::new();
        reader.read_line(&mut got)?;
        ensure!(got.trim() == line, "expected {line:?}, got {got:?}");
        Ok(())
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        kill_and_reap(self.pid());
    }
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

    // nobody's own processes the kernel would not let nobody ptrace: one that made itself
    // non-dumpable, and one running with another group.
    let mut nondumpable = Reaped::spawn(
        Command::new("python3")
            .args([
                "-c",
                "import ctypes, time\n\
                 assert ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0\n\
                 print('ready', flush=True)\n\
                 time.sleep(60)\n",
            ])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(Stdio::piped()),
    )?;
    nondumpable.wait_line("ready")?;
    let out = call(NOBODY, &nondumpable.pid().to_string())?;
    assert!(
        out.starts_with("status PermissionDenied: permission denied") && out.contains("dumpable"),
        "nobody migrating its non-dumpable process: {out}"
    );
    let other_group = Reaped::spawn(Command::new("sleep").arg("60").uid(NOBODY).gid(0))?;
    let out = call(NOBODY, &other_group.pid().to_string())?;
    assert!(
        out.starts_with("status PermissionDenied: permission denied") && out.contains("group"),
        "nobody migrating its process of group 0: {out}"
    );
    // Root may migrate both.
    for p in [&nondumpable, &other_group] {
        let out = call(0, &p.pid().to_string())?;
        assert!(
            out.starts_with("status InvalidArgument: unknown peer \"beta\""),
            "root migrating pid {}: {out}",
            p.pid()
        );
    }

    // Root may ask for any process (a root one without children: the test process has
    // some, which refuses it before the peer is looked up, as the next call shows); a
    // missing one is reported as such.
    let mut rooted = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .context("start a root process")?;
    let out = call(0, &rooted.id().to_string());
    let _ = rooted.kill();
    let _ = rooted.wait();
    let out = out?;
    assert!(
        out.starts_with("status InvalidArgument: unknown peer \"beta\""),
        "root migrating a root process: {out}"
    );
    let out = call(0, &me)?;
    assert!(
        out.contains("has children") && out.contains("stay behind"),
        "root migrating a process with children: {out}"
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
    // The relay stubs' socket beside it, as a relay leaves it (made here: no migration runs).
    let _stub = std::os::unix::net::UnixListener::bind(ferry_agent::relay::stub_socket_path(
        &alpha.socket,
    ))?;

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
    let stub = ferry_agent::relay::stub_socket_path(&alpha.socket);
    assert!(
        !stub.exists(),
        "the stub socket {} is left behind",
        stub.display()
    );
    Ok(())
}
