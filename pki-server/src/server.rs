//! Running the server: storage and seal from the config, the accept loop (TLS by
//! rustls with a handshake timeout, HTTP/1.1 and HTTP/2), auto-unseal retries,
//! and graceful shutdown on SIGTERM/SIGINT.

use crate::config::{Limits, ServerConfig, TlsMode};
use crate::seal::{InitRequest, Kms, Seal};
use crate::state::AppState;
use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
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
/// Every connection is bounded ([`Limits`]): at most `max_connections` at once
/// (the rest wait in the listen backlog), a TLS handshake within 10 s, request
/// headers within `header_read_timeout`, no connection idle longer than
/// `idle_timeout`, at most `http2_max_streams` streams per HTTP/2 connection.
/// HTTP/2 is chosen by ALPN, never by sniffing bytes a slow client trickles.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
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
        let svc = TowerToHyperService::new(app.clone());
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Activity::new();
            match acceptor {
                Some(acc) => {
                    let tls =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let io = TokioIo::new(Tracked::new(tls, activity.clone()));
                    serve_connection(io, svc, h2, &limits, activity, watcher, peer).await;
                }
                None => {
                    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
                    serve_connection(io, svc, false, &limits, activity, watcher, peer).await;
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
    Ok(())
}

/// One connection, HTTP/1.1 or (by ALPN) HTTP/2, closed when idle too long.
async fn serve_connection<I, S>(
    io: TokioIo<I>,
    svc: S,
    h2: bool,
    limits: &Limits,
    activity: Activity,
    watcher: hyper_util::server::graceful::Watcher,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let idle = limits.idle_timeout;
    let result = if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_streams)
            .max_header_list_size(64 * 1024)
            .keep_alive_interval(Some(idle / 2))
            .keep_alive_timeout(limits.header_read_timeout);
        let conn = watcher.watch(b.serve_connection(io, svc));
        until_idle(conn, &activity, idle).await
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(64 * 1024)
            .keep_alive(true);
        let conn = watcher.watch(b.serve_connection(io, svc));
        until_idle(conn, &activity, idle).await
    };
    match result {
        Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection error"),
        None => tracing::debug!(%peer, "idle connection closed"),
        Some(Ok(())) => {}
    }
}

/// Drive `conn` until it ends, or until no byte has moved for `idle`.
async fn until_idle<F, E>(conn: F, activity: &Activity, idle: Duration) -> Option<Result<(), E>>
where
    F: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    loop {
        let quiet_for = activity.quiet_for();
        if quiet_for >= idle {
            return None;
        }
        tokio::select! {
            r = &mut conn => return Some(r),
            () = tokio::time::sleep(idle - quiet_for) => {}
        }
    }
}

/// When a connection last moved a byte either way.
#[derive(Clone)]
struct Activity {
    start: std::time::Instant,
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: std::time::Instant::now(),
            last_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// An IO that records its activity.
struct Tracked<T> {
    inner: T,
    activity: Activity,
}

impl<T> Tracked<T> {
    fn new(inner: T, activity: Activity) -> Self {
        activity.touch();
        Self { inner, activity }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
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
