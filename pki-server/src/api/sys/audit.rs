//! `sys/audit` (list, enable, disable a file device) and `sys/audit-hash/:path`.

use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::audit::{self, AuditError, Device};
use crate::seal::Barrier;
use crate::state::AppState;
use serde_json::{Map, Value, json};

fn audit_err(e: AuditError) -> ApiError {
    match e {
        AuditError::Bad(m) => ApiError::bad_request(m),
        other => ApiError::internal(other),
    }
}

/// `sys/audit[/:path]`.
pub async fn handle(state: &AppState, barrier: &Barrier, req: &Request) -> Result<Reply, ApiError> {
    let path = req
        .path
        .strip_prefix("sys/audit")
        .unwrap_or("")
        .trim_start_matches('/');
    let devices = audit::load(barrier).await?;
    if path.is_empty() {
        if req.op != Operation::Read {
            return Err(ApiError::unsupported_operation());
        }
        let data: Map<String, Value> = devices
            .iter()
            .map(|d| (d.path.clone(), json!({"type": d.kind, "description": d.description, "options": d.options, "local": false, "path": d.path})))
            .collect();
        return Ok(Reply::sys_data(data));
    }
    let key = format!("{}/", path.trim_matches('/'));
    match req.op {
        Operation::Update => {
            if devices.iter().any(|d| d.path == key) {
                return Err(ApiError::bad_request(format!("path already in use: {key}")));
            }
            let kind = params::string(&req.data, "type")?.unwrap_or("");
            let options = params::string_map(&req.data, "options");
            let desc = params::string(&req.data, "description")?.unwrap_or("");
            let dev = Device::new(&key, kind, desc, options).map_err(audit_err)?;
            audit::update(barrier, |devices| {
                if devices.iter().any(|d| d.path == key) {
                    return Err(ApiError::bad_request(format!("path already in use: {key}")));
                }
                devices.push(dev.clone());
                Ok(())
            })
            .await?;
            state.invalidate_audit();
            tracing::info!(path = %key, "audit device enabled");
            Ok(Reply::NoContent)
        }
        Operation::Delete => {
            audit::update::<ApiError>(barrier, |devices| {
                devices.retain(|d| d.path != key);
                Ok(())
            })
            .await?;
            state.invalidate_audit();
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `POST sys/audit-hash/:path` with `input`.
pub async fn hash(barrier: &Barrier, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::Update {
        return Err(ApiError::unsupported_operation());
    }
    let path = req.path.strip_prefix("sys/audit-hash/").unwrap_or("");
    let key = format!("{}/", path.trim_matches('/'));
    let input = params::string(&req.data, "input")?
        .ok_or_else(|| ApiError::bad_request("the \"input\" parameter is required"))?;
    let devices = audit::load(barrier).await?;
    let d = devices
        .iter()
        .find(|d| d.path == key)
        .ok_or_else(|| ApiError::bad_request(format!("unknown audit backend {key}")))?;
    let mut m = Map::new();
    m.insert("hash".into(), json!(d.hmac(input)));
    Ok(Reply::sys_data(m))
}
