//! Work the server does by itself while unsealed: CRLs are rebuilt before
//! their nextUpdate on every PKI mount, so what relying parties fetch is never
//! stale (Vault's `auto_rebuild`, always on here).

use crate::state::AppState;
use std::time::Duration;

/// How often [`run`] looks.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// One pass over every PKI mount: rebuild each CRL that is due. Returns how
/// many were rebuilt; does nothing while sealed.
pub async fn tick(state: &AppState, now: time::OffsetDateTime) -> anyhow::Result<usize> {
    let Some(barrier) = state.seal.barrier() else {
        return Ok(0);
    };
    let table = state.mounts(&barrier).await?;
    let mut rebuilt = 0;
    for m in table.entries.iter().filter(|m| m.kind == "pki") {
        let cache = state.cache.engines.state(&m.uuid, state.seal.generation());
        let engine = crate::engine::Engine::new(barrier.as_ref(), m, cache);
        match engine.refresh_crl_if_due(now).await {
            Ok(true) => {
                tracing::info!(mount = %m.path, "CRL rebuilt before its nextUpdate");
                rebuilt += 1;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(mount = %m.path, error = %e, "CRL rebuild failed"),
        }
    }
    Ok(rebuilt)
}

/// Run [`tick`] every `every`, for as long as the server runs.
pub async fn run(state: AppState, every: Duration) {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        t.tick().await;
        if let Err(e) = tick(&state, time::OffsetDateTime::now_utc()).await {
            tracing::warn!(error = %e, "maintenance pass failed");
        }
    }
}
