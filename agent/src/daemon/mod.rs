//! `ferryd`, the agent every host runs: the local API on a Unix socket (the `ferry` command of
//! this host) and the peer API over mutual TLS (the agents of the other hosts).
//!
//! [`serve`] is the whole life of an agent: check the TLS files, bind both sockets, tell
//! systemd it is ready (and keep its watchdog fed), serve until asked to stop, then stop
//! gracefully.

pub mod local;
pub mod peer;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1::agent_server::AgentServer;
use ferry_proto::v1::peer_server::PeerServer;
use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use crate::node::{Config, Node, NodeRef, config};

use crate::transport::local::{BindLocalError, bind_local};
use crate::transport::{self, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, TlsMaterial};

/// How long a stopping agent waits for open calls to finish before it exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// `serve` failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS files are missing, partial or unreadable.
    #[error("TLS configuration in {}", dir.display())]
    Tls {
        /// `tls_dir`.
        dir: PathBuf,
        /// Which file and why.
        #[source]
        source: transport::TlsConfigError,
    },
    /// The certificate or key could not be used by the TLS stack.
    #[error("load the TLS identity {}", dir.join(format!("{name}.pem")).display())]
    Identity {
        /// `tls_dir`.
        dir: PathBuf,
        /// The node name.
        name: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// `listen` is not an address.
    #[error("listen address {listen:?}")]
    ListenAddr {
        /// The configured value.
        listen: String,
        /// Why.
        #[source]
        source: std::net::AddrParseError,
    },
    /// The peer API address could not be bound.
    #[error("listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The local socket could not be bound.
    #[error(transparent)]
    BindLocal(#[from] BindLocalError),
    /// The migration records store could not be opened.
    #[error(transparent)]
    Records(#[from] crate::migrate::records::RecordsError),
    /// The managed processes store could not be opened.
    #[error(transparent)]
    Managed(#[from] crate::managed::StoreError),
    /// The web page's token store could not be opened.
    #[error(transparent)]
    WebStore(#[from] crate::web::auth::AuthStoreError),
    /// The web page could not start.
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    /// A server ended with an error.
    #[error("the {api} API server failed")]
    Server {
        /// "peer" or "local".
        api: &'static str,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A server task panicked.
    #[error("the {api} API server stopped unexpectedly")]
    Crashed {
        /// "peer" or "local".
        api: &'static str,
    },
}

/// Runs the agent until `shutdown` resolves, then stops gracefully (open calls get
/// [`SHUTDOWN_GRACE`]) and removes the local socket.
///
/// Sends `READY=1` to systemd once both sockets are bound (nothing happens without
/// `NOTIFY_SOCKET`), `WATCHDOG=1` every half `WATCHDOG_USEC` while running, and `STOPPING=1` when
/// asked to stop.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    crate::metrics::init();
    // Refuse a missing or partial TLS configuration before binding anything.
    let tls =
        TlsMaterial::load(&config.tls_dir, &config.name).map_err(|source| ServeError::Tls {
            dir: config.tls_dir.clone(),
            source,
        })?;
    for warning in tls.warnings(&config.tls_dir, &config.name) {
        tracing::warn!("{warning}");
    }
    let peer_builder = Server::builder()
        .tls_config(tls.server_config())
        .map_err(|source| ServeError::Identity {
            dir: config.tls_dir.clone(),
            name: config.name.clone(),
            source,
        })?;

    let web_tls = match config.web {
        Some(_) => Some(tls.web_server_config().map_err(crate::web::WebError::Tls)?),
        None => None,
    };
    let addr = config
        .listen_addr()
        .map_err(|source| ServeError::ListenAddr {
            listen: config.listen.clone(),
            source,
        })?;
    // The stores open before the sockets are bound: an agent that accepts connections has them
    // (a caller that waits for the socket, as the test hosts do, never races their opening).
    let store = crate::migrate::records::Store::open_default()?;
    let managed = crate::managed::Managed::open(&crate::node::state_dir())?;
    let web = crate::web::Auth::open(&crate::node::state_dir())?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    let incoming = TcpIncoming::from(tcp).with_nodelay(Some(true));
    let unix = bind_local(&config.socket)?;
    let socket_path = config.socket.clone();
    // From here on, however serve ends (a failed start included), the sockets it made go.
    let _sockets = RemoveSockets(socket_path.clone());

    let mut node = Node::new(config, tls);
    node.store = store;
    node.managed = managed;
    node.web = web;
    node.relays
        .keep_ledgers_in(crate::node::state_dir().join("ledgers"));
    let node: NodeRef = Arc::new(node);
    let web_task = match (node.config.web_addr(), web_tls) {
        (Some(web), Some(web_tls)) => Some(crate::web::start(node.clone(), web, web_tls).await?),
        _ => None,
    };
    crate::managed::start(node.clone());
    crate::cluster::start(node.clone());
    crate::policy::supervisor::start(node.clone());
    crate::lease::run::start(node.clone());
    // Migrations a previous run left unfinished, resolved in the background.
    crate::migrate::resolve(node.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let peer_server = peer_builder
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(PeerServer::new(peer::PeerService::new(node.clone())))
        .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
    let local_server = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(AgentServer::new(local::LocalService::new(node.clone())))
        .serve_with_incoming_shutdown(UnixListenerStream::new(unix), stopped(stop_rx.clone()));
    let mut peer_task = tokio::spawn(peer_server);
    let mut local_task = tokio::spawn(local_server);

    tracing::info!(
        name = %node.config.name,
        listen = %addr,
        socket = %socket_path.display(),
        web = ?node.config.web,
        peers = ?node.peers.peers().keys().collect::<Vec<_>>(),
        "ferryd ready"
    );
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!(
            "serving {} on {addr} and {}",
            node.config.name,
            socket_path.display()
        )),
    ]);
    let watchdog = tokio::spawn(feed_watchdog());

    let result = tokio::select! {
        () = shutdown => {
            tracing::info!("stopping");
            Ok(())
        }
        res = &mut peer_task => server_result("peer", res),
        res = &mut local_task => server_result("local", res),
    };
    notify(&[NotifyState::Stopping]);
    watchdog.abort();
    if let Some(web) = &web_task {
        web.abort();
    }
    let _ = stop_tx.send(true);
    let drain = async {
        if !peer_task.is_finished() {
            let _ = (&mut peer_task).await;
        }
        if !local_task.is_finished() {
            let _ = (&mut local_task).await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "calls still open at shutdown: ending them");
        peer_task.abort();
        local_task.abort();
    }
    result
}

/// Removes the local socket and the relay stubs' socket beside it when dropped: ferryd made
/// both (the stub socket once a relay needed it) and no one else uses them once it stops.
/// Running stubs reconnect to the socket a restarted agent makes.
struct RemoveSockets(PathBuf);

impl Drop for RemoveSockets {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(crate::relay::stub_socket_path(&self.0));
    }
}

fn server_result(
    api: &'static str,
    res: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ServeError::Server { api, source }),
        Err(_) => Err(ServeError::Crashed { api }),
    }
}

/// Sends a state to systemd; without `NOTIFY_SOCKET` this does nothing.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!(%err, "cannot notify systemd");
    }
}

/// While systemd's watchdog is on (`WATCHDOG_USEC`), pings it at half the interval. The pings
/// come from the runtime, so a wedged runtime gets the agent restarted.
async fn feed_watchdog() {
    let Some(usec) = watchdog_usec() else {
        return;
    };
    let period = Duration::from_micros(usec / 2).max(Duration::from_millis(10));
    tracing::debug!(?period, "feeding the systemd watchdog");
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        notify(&[NotifyState::Watchdog]);
    }
}

/// `WATCHDOG_USEC` when the watchdog is meant for this process: as `sd_watchdog_enabled(3)`,
/// `WATCHDOG_PID` must be ours when it is set (systemd always sets it), and may be absent.
fn watchdog_usec() -> Option<u64> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?.parse::<u64>().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then_some(usec)
}
