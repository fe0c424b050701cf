//! `sys/health` (GET, HEAD) and `sys/leader`: unauthenticated, never enveloped.

use crate::VERSION;
use crate::api::error::ApiError;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::state::AppState;
use axum::http::StatusCode;
use serde_json::json;

fn code(req: &Request, name: &str, default: u16) -> Result<StatusCode, ApiError> {
    let Some(v) = req.query.get(name) else {
        return Ok(StatusCode::from_u16(default).unwrap_or(StatusCode::OK));
    };
    let n: u16 = v.parse().map_err(|_| {
        ApiError::bad_request(format!("unable to parse {name}: {v:?} is not an integer"))
    })?;
    StatusCode::from_u16(n).map_err(|_| ApiError::bad_request(format!("invalid {name}: {n}")))
}

/// `GET|HEAD sys/health` with Vault's status codes and `*code` overrides.
pub async fn health(state: &AppState, req: &Request) -> Result<Reply, ApiError> {
    if !matches!(req.op, Operation::Read | Operation::Head) {
        return Err(ApiError::unsupported_operation());
    }
    let st = state.seal.status().await?;
    // Validate every override even if unused, as Vault does.
    let active = code(req, "activecode", 200)?;
    let sealed = code(req, "sealedcode", 503)?;
    let uninit = code(req, "uninitcode", 501)?;
    for other in [
        "standbycode",
        "drsecondarycode",
        "performancestandbycode",
        "removedcode",
        "haunhealthycode",
    ] {
        code(req, other, 200)?;
    }
    let status = if !st.initialized {
        uninit
    } else if st.sealed {
        sealed
    } else {
        active
    };
    if req.op == Operation::Head {
        return Ok(Reply::Empty(status));
    }
    // Sealed or uninitialised, Vault and OpenBao report standby and unknown
    // replication modes: nothing is known until the barrier opens.
    let active_node = st.initialized && !st.sealed;
    let mode = if active_node { "disabled" } else { "unknown" };
    let mut body = json!({
        "initialized": st.initialized,
        "sealed": st.sealed,
        "standby": !active_node,
        "performance_standby": false,
        "replication_performance_mode": mode,
        "replication_dr_mode": mode,
        "server_time_utc": time::OffsetDateTime::now_utc().unix_timestamp(),
        "version": VERSION,
        "enterprise": false,
        "echo_duration_ms": 0,
        "clock_skew_ms": 0,
    });
    if let Some(c) = &st.cluster {
        body["cluster_name"] = json!(c.cluster_name);
        body["cluster_id"] = json!(c.cluster_id);
    }
    Ok(Reply::Plain(status, body))
}

/// `GET sys/leader` (after the sealed check: a sealed server answers 503).
pub async fn leader(_state: &AppState, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::Read {
        return Err(ApiError::unsupported_operation());
    }
    Ok(Reply::Plain(
        StatusCode::OK,
        json!({
            "ha_enabled": false,
            "is_self": false,
            "active_time": "0001-01-01T00:00:00Z",
            "leader_address": "",
            "leader_cluster_address": "",
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        }),
    ))
}
