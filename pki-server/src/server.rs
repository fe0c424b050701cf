//! Running the server: storage and seal from the config, the accept loop (TLS by
//! rustls with a handshake timeout, HTTP/1.1 and HTTP/2), auto-unseal retries,
//! and graceful shutdown on SIGTERM/SIGINT.

use crate::config::{ServerConfig, TlsMode};
use crate::seal::{InitRequest, Kms, Seal};
use crate::state::AppState;
use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
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
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
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
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
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
                    let conn = builder
                        .serve_connection(TokioIo::new(tls), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection error");
                    }
                }
                None => {
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection error");
                    }
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
