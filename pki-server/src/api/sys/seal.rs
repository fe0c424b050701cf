//! `sys/seal-status`, `sys/unseal` (unauthenticated) and `sys/seal` (root).

use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::seal::SealStatus;
use crate::state::AppState;
use crate::{BUILD_DATE, VERSION};
use axum::http::StatusCode;
use serde_json::{Value, json};

/// The seal-status body (also the body of every unseal answer).
pub fn status_json(st: &SealStatus) -> Value {
    let mut v = json!({
        "type": st.kind.as_str(),
        "initialized": st.initialized,
        "sealed": st.sealed,
        "t": st.t,
        "n": st.n,
        "progress": st.progress,
        "nonce": st.nonce,
        "version": VERSION,
        "build_date": BUILD_DATE,
        "migration": false,
        "recovery_seal": st.kind == crate::seal::SealKind::Awskms,
        "storage_type": st.storage_type,
    });
    if let Some(c) = &st.cluster {
        v["cluster_name"] = json!(c.cluster_name);
        v["cluster_id"] = json!(c.cluster_id);
    }
    if let Some(w) = &st.warning {
        v["warnings"] = json!([w]);
    }
    v
}

/// `GET sys/seal-status`.
pub async fn status(state: &AppState, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::Read {
        return Err(ApiError::unsupported_operation());
    }
    let st = state.seal.status().await?;
    Ok(Reply::Plain(StatusCode::OK, status_json(&st)))
}

/// `PUT sys/unseal`: `key` (hex or base64), `reset`; `migrate` is ignored.
pub async fn unseal(state: &AppState, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::Update {
        return Err(ApiError::unsupported_operation());
    }
    let reset = params::boolean(&req.data, "reset")?.unwrap_or(false);
    let key = params::string(&req.data, "key")?.filter(|k| !k.is_empty());
    let st = state.seal.unseal(key, reset).await?;
    if !st.sealed && key.is_some() {
        tracing::info!("server unsealed");
    }
    Ok(Reply::Plain(StatusCode::OK, status_json(&st)))
}

/// `PUT sys/seal` (root token).
pub async fn seal(state: &AppState, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::Update {
        return Err(ApiError::unsupported_operation());
    }
    state.seal.seal().await?;
    tracing::info!("server sealed by request");
    Ok(Reply::NoContent)
}
