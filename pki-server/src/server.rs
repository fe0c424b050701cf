//! Running the server: storage and seal from the config, the accept loop (TLS by
//! rustls with a handshake timeout, HTTP/1.1 and HTTP/2), auto-unseal retries,
//! and graceful shutdown on SIGTERM/SIGINT.

use crate::config::{Limits, ServerConfig, TlsMode};
use crate::seal::{InitRequest, Kms, Seal};
use crate::state::AppState;
use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const AUTO_UNSEAL_RETRY: Duration = Duration::from_secs(10);

/// Build the app state (storage, seal) for a config.
pub async fn build_state(cfg: &ServerConfig) -> anyhow::Result<AppState> {
    let storage = cfg.storage.open().await.context("opening storage")?;
    let kms = match &cfg.kms_key_id {
        Some(id) => Some(Kms::new(&crate::aws::sdk_config().await, id)),
        None => None,
    };
    Ok(AppState::new(
        Arc::new(Seal::new(storage, kms)),
        cfg.api.clone(),
    ))
}

/// What `--dev` prints once it has initialised and unsealed.
#[allow(missing_debug_implementations)] // secrets: no Debug on purpose
pub struct DevCredentials {
    /// Unseal key (hex).
    pub unseal_key: zeroize::Zeroizing<String>,
    /// Root token.
    pub root_token: zeroize::Zeroizing<String>,
}

/// Dev mode: initialise with one share (if new) and unseal.
pub async fn dev_init(
    state: &AppState,
    key_file: &std::path::Path,
) -> anyhow::Result<Option<DevCredentials>> {
    let st = state.seal.status().await?;
    if !st.initialized {
        let req = InitRequest {
            secret_shares: Some(1),
            secret_threshold: Some(1),
            ..Default::default()
        };
        let out = state.seal.init(req, &state.settings.cluster_name).await?;
        let key = out.keys.first().context("init returned no key")?;
        let hexkey = zeroize::Zeroizing::new(hex::encode(&key[..]));
        // The dev key is kept beside the dev storage so a restarted dev server can unseal.
        crate::tls::write_atomic(key_file, hexkey.as_bytes(), 0o600)?;
        state.seal.unseal(Some(&hexkey), false).await?;
        return Ok(Some(DevCredentials {
            unseal_key: hexkey,
            root_token: out.root_token,
        }));
    }
    if st.sealed {
        let key = zeroize::Zeroizing::new(
            std::fs::read_to_string(key_file)
                .with_context(|| format!("reading {}", key_file.display()))?,
        );
        state.seal.unseal(Some(key.trim()), false).await?;
    }
    Ok(None)
}

/// Try KMS auto-unseal now and then every few seconds while sealed, until it
/// works or the server is sealed on purpose (a manual seal stops the retries).
pub fn spawn_auto_unseal(seal: Arc<Seal>) {
    tokio::spawn(async move {
        if !seal.is_auto().await {
            return;
        }
        loop {
            match seal.auto_unseal().await {
                Ok(true) => {
                    tracing::info!("auto-unsealed with KMS");
                    return;
                }
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "auto-unseal failed; staying sealed, will retry")
                }
            }
            tokio::time::sleep(AUTO_UNSEAL_RETRY).await;
        }
    });
}

/// Every hour, while unsealed, remove expired tokens (lookups also revoke an
/// expired token when they meet it; this catches the ones nobody presents).
pub fn spawn_token_tidy(seal: Arc<Seal>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            if let Some(barrier) = seal.barrier() {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                match crate::auth::token::tidy(barrier.as_ref(), now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "expired tokens removed"),
                    Err(e) => tracing::warn!(error = %e, "token tidy failed"),
                }
            }
        }
    });
}

/// The rustls config for the configured TLS mode (None for plain HTTP).
pub fn tls_config(cfg: &ServerConfig) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    Ok(match &cfg.tls {
        TlsMode::Files { cert, key } => Some(crate::tls::server_config(cert, key)?),
        TlsMode::Dir(dir, sans) => Some(crate::tls::from_dir(dir, cfg.listen, sans)?),
        TlsMode::Disabled => None,
    })
}

/// Serve `app` on `listener` until `shutdown` resolves, then drain connections.
///
/// Every connection is bounded ([`Limits`]): at most `max_connections` at once,
/// counted from accept so TLS handshakes count too (the rest wait in the listen
/// backlog); a TLS handshake within 10 s; a first request within
/// `header_read_timeout`, and after a request the next one within
/// `idle_timeout` (HTTP/1.1: within `header_read_timeout`, hyper's header
/// timer). Only requests count as activity: bytes that never make a request
/// (a trickled header, HTTP/2 PINGs, WINDOW_UPDATEs) do not keep a connection
/// open. A body declared larger than `max_request_bytes` is refused with 413
/// before it is read. HTTP/2 is chosen by ALPN, never by sniffing bytes a slow
/// client trickles, with at most `http2_max_streams` streams.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
        // A slot first, then accept: while every slot is taken, new
        // connections wait in the kernel's listen backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let limits = limits.clone();
        let app = app.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                Some(acc) => {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(stream));
                    let tls = tokio::select! {
                        r = handshake => match r {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        },
                        _ = stopping.wait_for(|s| *s) => return,
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    serve_connection(TokioIo::new(tls), app, h2, &limits, stopping, peer).await;
                }
                None => {
                    serve_connection(TokioIo::new(stream), app, false, &limits, stopping, peer)
                        .await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it is gone: all slots back = all closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
    Ok(())
}

/// One connection, HTTP/1.1 or (by ALPN) HTTP/2, until it ends, goes quiet
/// for too long, or the server shuts down; then closed gracefully (GOAWAY on
/// HTTP/2), and dropped if the client does not let it close in time.
async fn serve_connection<I>(
    io: TokioIo<I>,
    app: axum::Router,
    h2: bool,
    limits: &Limits,
    stopping: tokio::sync::watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let svc = bounded_service(app, activity.clone(), limits.max_request_bytes);
    let result = if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_streams)
            .max_header_list_size(MAX_HEADER_BYTES)
            // Finds dead peers while a request is in flight; a PING answered
            // is no activity (see `Activity`).
            .keep_alive_interval(Some(limits.idle_timeout / 2))
            .keep_alive_timeout(limits.header_read_timeout);
        drive(b.serve_connection(io, svc), &activity, limits, stopping).await
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(MAX_HEADER_BYTES as usize)
            .keep_alive(true);
        drive(b.serve_connection(io, svc), &activity, limits, stopping).await
    };
    match result {
        Ok(Closed::Done) => {}
        Ok(Closed::Quiet) => tracing::debug!(%peer, "connection closed: no request in time"),
        Ok(Closed::Dropped) => tracing::debug!(%peer, "connection dropped: did not close in time"),
        Err(e) => tracing::debug!(%peer, error = %e, "connection error"),
    }
}

/// Largest request head: HTTP/1.1 read buffer and HTTP/2 header list.
const MAX_HEADER_BYTES: u32 = 64 * 1024;

/// How a connection ended.
enum Closed {
    /// By itself: the client closed it, or after a graceful shutdown.
    Done,
    /// Closed by the server: no request within its timeout.
    Quiet,
    /// Dropped: it did not finish closing in time.
    Dropped,
}

/// Drive `conn` to its end; if it stays without a request in flight past its
/// deadline, or the server stops, shut it down gracefully, waiting at most
/// `header_read_timeout` for that.
async fn drive<C>(
    conn: C,
    activity: &Activity,
    limits: &Limits,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<Closed, C::Error>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    tokio::pin!(conn);
    let why = tokio::select! {
        r = conn.as_mut() => return r.map(|()| Closed::Done),
        () = activity.quiet(limits) => Closed::Quiet,
        _ = stopping.wait_for(|s| *s) => Closed::Done,
    };
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(limits.header_read_timeout, conn).await {
        Ok(r) => r.map(|()| why),
        Err(_) => Ok(Closed::Dropped),
    }
}

/// The app behind a connection's bounds: counts requests in flight for the
/// connection's [`Activity`], and refuses a declared body over the limit
/// before reading it (a body that grows past it while being read is the
/// API's to refuse, also with 413).
fn bounded_service(
    app: axum::Router,
    activity: Activity,
    max_request_bytes: usize,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>
             + Send
             + 'static,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let busy = activity.busy();
        let app = app.clone();
        async move {
            let _busy = busy;
            if let Some(refusal) = declared_too_large(req.headers(), max_request_bytes) {
                return Ok(refusal);
            }
            tower::ServiceExt::oneshot(app, req).await
        }
    })
}

/// 413 for a `Content-Length` over the limit (the API's own refusal, words
/// and headers, as when a body grows past the limit).
fn declared_too_large(
    headers: &axum::http::HeaderMap,
    limit: usize,
) -> Option<axum::response::Response> {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let declared: u64 = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if declared <= u64::try_from(limit).unwrap_or(u64::MAX) {
        return None;
    }
    let mut resp = crate::api::error::ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body too large: the limit is {limit} bytes"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(resp)
}

/// Requests in flight on one connection, and since when it has had none.
/// Only requests count: bytes that never make a request do not.
#[derive(Clone)]
struct Activity(Arc<tokio::sync::watch::Sender<Quiet>>);

#[derive(Clone, Copy)]
struct Quiet {
    in_flight: usize,
    /// When `in_flight` last became 0 (or the connection was accepted).
    since: tokio::time::Instant,
    /// Whether a request has been served: then the idle timeout applies,
    /// before it the header timeout.
    served: bool,
}

impl Activity {
    fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(Quiet {
            in_flight: 0,
            since: tokio::time::Instant::now(),
            served: false,
        })))
    }

    /// A request has begun; it ends when the guard is dropped.
    fn busy(&self) -> Busy {
        self.0.send_modify(|q| q.in_flight += 1);
        Busy(self.0.clone())
    }

    /// Resolves once no request has been in flight for the connection's
    /// deadline: `header_read_timeout` before the first request,
    /// `idle_timeout` after one.
    async fn quiet(&self, limits: &Limits) {
        let mut rx = self.0.subscribe();
        loop {
            let q = *rx.borrow_and_update();
            let deadline = if q.in_flight > 0 {
                None
            } else if q.served {
                q.since.checked_add(limits.idle_timeout)
            } else {
                q.since.checked_add(limits.header_read_timeout)
            };
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => return,
                // The sender lives as long as `self`: changed() cannot fail here.
                Ok(()) = rx.changed() => {}
                else => std::future::pending::<()>().await,
            }
        }
    }
}

/// A request in flight (see [`Activity::busy`]).
struct Busy(Arc<tokio::sync::watch::Sender<Quiet>>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|q| {
            q.in_flight = q.in_flight.saturating_sub(1);
            if q.in_flight == 0 {
                q.since = tokio::time::Instant::now();
                q.served = true;
            }
        });
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives in
/// between is kept rather than killing the process (the default action).
/// Call it from within the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind)
            .map_err(|e| tracing::warn!(error = %e, "cannot listen for {name}"))
            .ok()
    };
    let term = listen(SignalKind::terminate(), "SIGTERM");
    let int = listen(SignalKind::interrupt(), "SIGINT");
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(term) => {},
            () = wait(int) => {},
        }
        tracing::info!("shutting down");
    }
}
