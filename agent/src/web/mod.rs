//! The agent's web page and `/metrics` (issue 12, docs/offload.md "The web page"): HTTPS on
//! `web = "ADDR:PORT"` of ferryd's configuration, with the node's certificate.
//!
//! - `GET /metrics`: the metrics ([`crate::metrics`]), no login.
//! - `GET /login`, `POST /login`: a token from `ferry web token` makes a session (cookie
//!   `__Host-ferry_session`: HttpOnly, Secure, SameSite=Strict, Path=/).
//! - `GET /`: the session user's managed processes on every host (the columns of `ferry ps`,
//!   through the same call `ferry ps` makes), the hosts with their load (`Load`), the recent
//!   migrations of this agent, and forms to kill or move a process.
//! - `POST /kill`, `POST /move`, `POST /logout`: need the session and its CSRF token (a hidden
//!   field of every form); without a session 401, with a wrong CSRF token 403.
//!
//! Pages are rendered here on the server ([`pages`]); the one script (`/app.js`) only reloads
//! the page now and then. Every answer forbids framing and caching, and the page's content
//! security policy allows only its own script.

pub mod auth;
pub mod pages;
pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use ferry_proto::v1::{KillRequest, OffloadRequest};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::node::NodeRef;
use crate::transport::PeerCred;

pub use auth::Auth;

/// The session cookie's name (`__Host-`: the browser keeps it only when Secure, for this
/// host, Path=/).
pub const COOKIE: &str = "__Host-ferry_session";
/// How long a TLS handshake and a request's headers may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 256;
/// The largest request body read (forms are small).
const MAX_BODY: usize = 16 * 1024;
/// How long a move from the page may take before the page says it goes on in the background.
const MOVE_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Web {
    node: NodeRef,
}

/// The web listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The node's certificate or key cannot serve HTTPS.
    #[error("the web page's TLS configuration")]
    Tls(#[source] rustls::Error),
    /// The address could not be bound.
    #[error("listen on {addr} for the web page")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr` and serves the web page and `/metrics` there over HTTPS with `tls` until the
/// returned task is aborted (which ends every connection with it).
pub async fn start(
    node: NodeRef,
    addr: SocketAddr,
    tls: rustls::ServerConfig,
) -> Result<tokio::task::JoinHandle<()>, WebError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Listen { addr, source })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let app = router(node);
    Ok(tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            while conns.try_join_next().is_some() {}
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%e, "web: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if conns.len() >= MAX_CONNECTIONS {
                tracing::warn!(%peer, "web: too many connections, closing a new one");
                continue;
            }
            let acceptor = acceptor.clone();
            let app = app.clone();
            conns.spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, %e, "web: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let mut builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HANDSHAKE_TIMEOUT);
                if let Err(e) = builder
                    .http1_only()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%peer, %e, "web: connection ended");
                }
            });
        }
    }))
}

/// The routes.
fn router(node: NodeRef) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/kill", post(kill))
        .route("/move", post(move_to))
        .route("/metrics", get(metrics))
        .route("/app.js", get(script))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(Web { node })
}

async fn secure_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    set(h, "cache-control", "no-store");
    set(h, "strict-transport-security", "max-age=31536000");
    r
}

/// The session id in the request's cookies.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })
}

/// The request's live session and its id.
fn session(w: &Web, headers: &HeaderMap) -> Option<(String, auth::Session)> {
    let id = session_id(headers)?;
    let s = w.node.web.session(&id)?;
    Some((id, s))
}

/// The fields of an `application/x-www-form-urlencoded` body.
fn form(body: &[u8]) -> std::collections::HashMap<String, String> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| char::from(c).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Whether a POST may come from where it says: a browser names the page's origin in
/// `Origin`, which must then be this very site (`https://` and the `Host` it asked for).
/// Without `Origin` (not a browser, or an old one) the session and CSRF token decide alone.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(o), Some(h)) => o.strip_prefix("https://") == Some(h),
        _ => false,
    }
}

/// An action's session, checked: the session (401 without one), the origin and its CSRF
/// token in the form (403 when it is missing or wrong).
#[allow(clippy::result_large_err)]
fn authorize_post(
    w: &Web,
    headers: &HeaderMap,
    fields: &std::collections::HashMap<String, String>,
) -> Result<(String, auth::Session), Response> {
    let Some((id, s)) = session(w, headers) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "401: not logged in (log in at /login)\n",
        )
            .into_response());
    };
    if !same_origin(headers) {
        tracing::warn!(uid = s.user.uid, "web: a POST from another origin");
        return Err((StatusCode::FORBIDDEN, "403: from another origin\n").into_response());
    }
    if !fields.get("csrf").is_some_and(|c| s.csrf_ok(c)) {
        tracing::warn!(
            uid = s.user.uid,
            "web: a POST without the session's CSRF token"
        );
        return Err((StatusCode::FORBIDDEN, "403: missing or wrong CSRF token\n").into_response());
    }
    Ok((id, s))
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn index(State(w): State<Web>, headers: HeaderMap) -> Response {
    let Some((id, s)) = session(&w, &headers) else {
        return Redirect::to("/login").into_response();
    };
    let flash = w.node.web.take_flash(&id);
    html(pages::index(&w.node, &s, flash.as_deref()).await)
}

async fn login_page(State(w): State<Web>, headers: HeaderMap) -> Response {
    if session(&w, &headers).is_some() {
        return Redirect::to("/").into_response();
    }
    html(pages::login(&w.node.config.name, None))
}

async fn login(State(w): State<Web>, headers: HeaderMap, body: Bytes) -> Response {
    if body.len() > MAX_BODY {
        return (StatusCode::PAYLOAD_TOO_LARGE, "too large\n").into_response();
    }
    // Another site may not log a browser in (to a session of its choosing).
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "403: from another origin\n").into_response();
    }
    let fields = form(&body);
    let token = fields.get("token").map(String::as_str).unwrap_or("");
    match w.node.web.login(token) {
        Some((id, s)) => {
            tracing::info!(uid = s.user.uid, "web: logged in");
            let cookie = format!(
                "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
                auth::SESSION_TTL.as_secs()
            );
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/".to_string()),
                    (header::SET_COOKIE, cookie),
                ],
            )
                .into_response()
        }
        None => {
            tracing::warn!("web: a login with a wrong token");
            // A little wait makes guessing slower still (tokens are 256 random bits anyway).
            tokio::time::sleep(Duration::from_millis(200)).await;
            (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                pages::login(&w.node.config.name, Some("Wrong token.")),
            )
                .into_response()
        }
    }
}

async fn logout(State(w): State<Web>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    let (id, _) = match authorize_post(&w, &headers, &fields) {
        Ok(x) => x,
        Err(r) => return r,
    };
    w.node.web.logout(&id);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_string()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"),
            ),
        ],
    )
        .into_response()
}

async fn kill(State(w): State<Web>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    let (sid, s) = match authorize_post(&w, &headers, &fields) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let id = fields.get("id").cloned().unwrap_or_default();
    let signal = match fields.get("signal").map(String::as_str) {
        Some("KILL") => libc::SIGKILL,
        _ => libc::SIGTERM,
    };
    let msg = match crate::managed::local::kill(
        &w.node,
        s.user,
        KillRequest {
            id: id.clone(),
            signal,
        },
    )
    .await
    {
        Ok(r) => format!(
            "Sent {} to {id} (pid {} on {}).",
            if signal == libc::SIGKILL {
                "SIGKILL"
            } else {
                "SIGTERM"
            },
            r.pid,
            r.host
        ),
        Err(st) => format!("Could not kill {id}: {}", st.message()),
    };
    tracing::info!(uid = s.user.uid, %id, "web: kill");
    w.node.web.set_flash(&sid, msg);
    Redirect::to("/").into_response()
}

async fn move_to(State(w): State<Web>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    let (sid, s) = match authorize_post(&w, &headers, &fields) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let id = fields.get("id").cloned().unwrap_or_default();
    let to = fields.get("to").cloned().unwrap_or_default();
    tracing::info!(uid = s.user.uid, %id, %to, "web: move");
    let msg = move_job(&w.node, s.user, &id, &to).await;
    w.node.web.set_flash(&sid, msg);
    Redirect::to("/").into_response()
}

/// Moves managed process `id` of `user` to `to` (a peer, or `auto`); what happened, in a
/// sentence.
async fn move_job(node: &NodeRef, user: PeerCred, id: &str, to: &str) -> String {
    use ferry_proto::v1::migrate_event::Event;
    let auto = to == "auto";
    if !auto && !node.peers.peers().contains_key(to) {
        return format!("Could not move {id}: {to:?} is not a peer of this host.");
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(crate::managed::local::offload(
        node.clone(),
        user,
        OffloadRequest {
            id: id.to_string(),
            to: if auto { String::new() } else { to.to_string() },
            auto,
            compress: String::new(),
            ..Default::default()
        },
        tx,
    ));
    let wait = async {
        let mut outcome = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                Ok(ferry_proto::v1::MigrateEvent {
                    event: Some(Event::Done(sum)),
                }) => outcome = Some(Ok(sum)),
                Err(st) => outcome = Some(Err(st)),
                Ok(_) => {}
            }
        }
        outcome
    };
    match tokio::time::timeout(MOVE_WAIT, wait).await {
        Ok(Some(Ok(sum))) => {
            let host = node
                .managed
                .get(id, user.uid, user.is_root())
                .map(|e| e.runs_on)
                .unwrap_or_default();
            format!(
                "Moved {id} to {host} (pid {} there), stopped for {} ms.",
                sum.remote_pid,
                sum.frozen_us / 1000
            )
        }
        Ok(Some(Err(st))) => format!("Could not move {id}: {}", st.message()),
        Ok(None) => format!("Could not move {id}: the move ended without an answer."),
        Err(_) => format!("Moving {id} takes long: it goes on; see the list."),
    }
}

async fn metrics(State(w): State<Web>) -> Response {
    let node = w.node.clone();
    let counts = tokio::task::spawn_blocking(move || pages::managed_counts(&node))
        .await
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(&counts),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::SCRIPT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let f = form("csrf=ab%2Fc&id=k3f9&to=auto&x=a+b&bad=%zz&end=%4&u=%é".as_bytes());
        assert_eq!(f["csrf"], "ab/c");
        assert_eq!(f["id"], "k3f9");
        assert_eq!(f["x"], "a b");
        assert_eq!(f["bad"], "%zz");
        assert_eq!(f["end"], "%4");
        assert_eq!(f["u"], "%é");
        assert!(form(b"").is_empty());
    }

    #[test]
    fn origins() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h));
        h.insert(header::HOST, HeaderValue::from_static("h1:7443"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://h1:7443"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://h1:7443"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-ferry_session=abc; b=2"),
        );
        assert_eq!(session_id(&h).as_deref(), Some("abc"));
        assert_eq!(session_id(&HeaderMap::new()), None);
    }
}
