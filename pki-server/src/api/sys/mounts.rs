//! `sys/mounts`: list, enable, disable and tune secrets engines.

use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::mounts::{MountConfig, MountEntry, MountError, MountTable, normalize};
use crate::seal::Barrier;
use crate::state::AppState;
use crate::storage::Storage;
use serde_json::{Map, Value, json};

fn entry_json(m: &MountEntry) -> Value {
    json!({
        "accessor": m.accessor,
        "config": {
            "default_lease_ttl": m.config.default_lease_ttl,
            "max_lease_ttl": m.config.max_lease_ttl,
            "force_no_cache": false,
        },
        // Vault and OpenBao label every builtin engine "supported".
        "deprecation_status": "supported",
        "description": m.description,
        "external_entropy_access": false,
        "local": m.local,
        "seal_wrap": m.seal_wrap,
        "options": m.options,
        "plugin_version": "",
        "running_plugin_version": "",
        "running_sha256": "",
        "type": m.kind,
        "uuid": m.uuid,
    })
}

fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn duration_secs(v: Option<&Value>, key: &str) -> Result<Option<u64>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let mut m = Map::new();
    m.insert(key.to_string(), v.clone());
    Ok(params::duration(&m, key)?.map(|d| d.as_secs()))
}

/// Dispatch `sys/mounts` and `sys/mounts/<path>[/tune]`.
pub async fn handle(state: &AppState, barrier: &Barrier, req: &Request) -> Result<Reply, ApiError> {
    let rest = req.path.strip_prefix("sys/mounts").unwrap_or("");
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return match req.op {
            Operation::Read => list(state, barrier).await,
            _ => Err(ApiError::unsupported_operation()),
        };
    }
    if let Some(path) = rest.strip_suffix("/tune") {
        return tune(state, barrier, path, req).await;
    }
    match req.op {
        Operation::Read => {
            let table = state.mounts(barrier).await?;
            let m = table.get(rest).ok_or_else(|| {
                ApiError::bad_request(MountError::NotMounted(normalize(rest)).to_string())
            })?;
            match entry_json(m) {
                Value::Object(o) => Ok(Reply::sys_data(o)),
                _ => Err(ApiError::internal("mount entry is not an object")),
            }
        }
        Operation::Update => enable(state, barrier, rest, req).await,
        Operation::Delete => disable(state, barrier, rest).await,
        _ => Err(ApiError::unsupported_operation()),
    }
}

async fn list(state: &AppState, barrier: &Barrier) -> Result<Reply, ApiError> {
    let table = state.mounts(barrier).await?;
    let data: Map<String, Value> = table
        .entries
        .iter()
        .map(|m| (m.path.clone(), entry_json(m)))
        .collect();
    Ok(Reply::sys_data(data))
}

async fn enable(
    state: &AppState,
    barrier: &Barrier,
    path: &str,
    req: &Request,
) -> Result<Reply, ApiError> {
    let kind = params::string(&req.data, "type")?
        .ok_or_else(|| ApiError::bad_request("missing 'type'"))?
        .to_string();
    let config = req.data.get("config").cloned().unwrap_or(Value::Null);
    let cfg = config.as_object();
    let options = params::string_map(&req.data, "options");
    let entry = MountEntry {
        path: normalize(path),
        kind,
        description: params::string(&req.data, "description")?
            .unwrap_or("")
            .to_string(),
        uuid: random_id(),
        accessor: format!("pki_{}", &random_id()[..8]),
        config: MountConfig {
            default_lease_ttl: duration_secs(
                cfg.and_then(|c| c.get("default_lease_ttl")),
                "default_lease_ttl",
            )?
            .unwrap_or(0),
            max_lease_ttl: duration_secs(
                cfg.and_then(|c| c.get("max_lease_ttl")),
                "max_lease_ttl",
            )?
            .unwrap_or(0),
        },
        options,
        local: params::boolean(&req.data, "local")?.unwrap_or(false),
        seal_wrap: params::boolean(&req.data, "seal_wrap")?.unwrap_or(false),
    };
    state
        .update_mounts(barrier, |t: &mut MountTable| t.add(entry.clone()))
        .await?;
    tracing::info!(path = %entry.path, kind = %entry.kind, "mounted");
    Ok(Reply::NoContent)
}

async fn disable(state: &AppState, barrier: &Barrier, path: &str) -> Result<Reply, ApiError> {
    let mut removed = None;
    state
        .update_mounts(barrier, |t: &mut MountTable| {
            removed = t.remove(path);
            Ok(())
        })
        .await?;
    if let Some(m) = removed {
        delete_prefix(barrier, &m.storage_prefix()).await?;
        tracing::info!(path = %m.path, "unmounted");
    }
    Ok(Reply::NoContent)
}

/// Delete every key below `prefix` (a mount's data after unmount).
async fn delete_prefix(barrier: &Barrier, prefix: &str) -> Result<(), ApiError> {
    let mut stack = vec![prefix.to_string()];
    while let Some(p) = stack.pop() {
        for k in barrier.list(&p).await? {
            let full = format!("{p}{k}");
            if k.ends_with('/') {
                stack.push(full);
            } else {
                barrier.delete(&full).await?;
            }
        }
    }
    Ok(())
}

async fn tune(
    state: &AppState,
    barrier: &Barrier,
    path: &str,
    req: &Request,
) -> Result<Reply, ApiError> {
    match req.op {
        Operation::Read => {
            let table = state.mounts(barrier).await?;
            let m = table.get(path).ok_or_else(|| {
                ApiError::bad_request(MountError::NotMounted(normalize(path)).to_string())
            })?;
            let mut d = Map::new();
            d.insert(
                "default_lease_ttl".into(),
                json!(m.config.default_lease_ttl),
            );
            d.insert("max_lease_ttl".into(), json!(m.config.max_lease_ttl));
            d.insert("force_no_cache".into(), json!(false));
            d.insert("description".into(), json!(m.description));
            d.insert("options".into(), json!(m.options));
            Ok(Reply::sys_data(d))
        }
        Operation::Update => {
            let dflt = duration_secs(req.data.get("default_lease_ttl"), "default_lease_ttl")?;
            let max = duration_secs(req.data.get("max_lease_ttl"), "max_lease_ttl")?;
            let desc = params::string(&req.data, "description")?.map(String::from);
            let p = normalize(path);
            state
                .update_mounts(barrier, |t: &mut MountTable| {
                    let m = t
                        .entries
                        .iter_mut()
                        .find(|m| m.path == p)
                        .ok_or_else(|| MountError::NotMounted(p.clone()))?;
                    if let Some(d) = dflt {
                        m.config.default_lease_ttl = d;
                    }
                    if let Some(x) = max {
                        m.config.max_lease_ttl = x;
                    }
                    if let Some(d) = &desc {
                        m.description = d.clone();
                    }
                    Ok(())
                })
                .await?;
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}
