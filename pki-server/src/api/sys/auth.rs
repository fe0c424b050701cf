//! `sys/auth`: list, enable and disable login methods (`jwt`, `aws`).
//!
//! Disabling a method deletes its configuration and roles and revokes every
//! token it issued, as Vault does.

use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::auth::methods::{AuthMount, AuthTable};
use crate::auth::token;
use crate::seal::Barrier;
use crate::state::AppState;
use crate::storage::Storage;
use serde_json::{Map, Value, json};

fn entry_json(path: &str, kind: &str, description: &str, accessor: &str, uuid: &str) -> Value {
    json!({
        "accessor": accessor,
        "config": {
            "default_lease_ttl": 0,
            "max_lease_ttl": 0,
            "force_no_cache": false,
            "token_type": "default-service",
        },
        "deprecation_status": "supported",
        "description": description,
        "external_entropy_access": false,
        "local": false,
        "seal_wrap": false,
        "options": null,
        "plugin_version": "",
        "running_plugin_version": "",
        "running_sha256": "",
        "type": kind,
        "uuid": uuid,
        "path": path,
    })
}

/// Dispatch `sys/auth` and `sys/auth/<path>`.
pub async fn handle(state: &AppState, barrier: &Barrier, req: &Request) -> Result<Reply, ApiError> {
    let rest = req
        .path
        .strip_prefix("sys/auth")
        .unwrap_or("")
        .trim_start_matches('/');
    if rest.is_empty() {
        return match req.op {
            Operation::Read => list(barrier).await,
            _ => Err(ApiError::unsupported_operation()),
        };
    }
    match req.op {
        Operation::Read => {
            let (t, _) = AuthTable::load(barrier).await?;
            let p = crate::mounts::normalize(rest);
            let m = t
                .entries
                .iter()
                .find(|m| m.path == p)
                .ok_or_else(|| ApiError::bad_request(format!("No auth engine at {p}")))?;
            match entry_json(&m.path, &m.kind, &m.description, &m.accessor, &m.uuid) {
                Value::Object(o) => Ok(Reply::sys_data(o)),
                _ => Err(ApiError::internal("auth entry is not an object")),
            }
        }
        Operation::Update => enable(barrier, rest, req).await,
        Operation::Delete => disable(state, barrier, rest).await,
        _ => Err(ApiError::unsupported_operation()),
    }
}

async fn list(barrier: &Barrier) -> Result<Reply, ApiError> {
    let (t, _) = AuthTable::load(barrier).await?;
    let mut data = Map::new();
    data.insert(
        "token/".into(),
        entry_json(
            "token/",
            "token",
            "token based credentials",
            "auth_token",
            "",
        ),
    );
    for m in &t.entries {
        data.insert(
            m.path.clone(),
            entry_json(&m.path, &m.kind, &m.description, &m.accessor, &m.uuid),
        );
    }
    Ok(Reply::sys_data(data))
}

async fn enable(barrier: &Barrier, path: &str, req: &Request) -> Result<Reply, ApiError> {
    let kind = params::string(&req.data, "type")?
        .ok_or_else(|| ApiError::bad_request("missing 'type'"))?
        .to_string();
    let uuid = uuid::Uuid::new_v4().to_string();
    let entry = AuthMount {
        path: crate::mounts::normalize(path),
        accessor: format!("auth_{kind}_{}", &uuid[..8]),
        kind,
        description: params::string(&req.data, "description")?
            .unwrap_or("")
            .to_string(),
        uuid,
    };
    AuthTable::update(barrier, |t| t.add(entry.clone())).await?;
    tracing::info!(path = %entry.path, kind = %entry.kind, "auth method enabled");
    Ok(Reply::NoContent)
}

async fn disable(state: &AppState, barrier: &Barrier, path: &str) -> Result<Reply, ApiError> {
    let removed = AuthTable::update(barrier, |t| Ok(t.remove(path))).await?;
    let Some(m) = removed else {
        return Ok(Reply::NoContent);
    };
    // Revoke what the method issued: tokens whose creation path is below it.
    let login_prefix = format!("auth/{}", m.path);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for a in token::accessors(barrier).await? {
        if let Some(e) = token::lookup_accessor(barrier, &a, now).await?
            && e.path.starts_with(&login_prefix)
        {
            token::revoke(barrier, &e.hash).await?;
        }
    }
    state.cache.tokens.clear();
    let prefix = m.storage_prefix();
    let mut stack = vec![prefix];
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
    tracing::info!(path = %m.path, "auth method disabled");
    Ok(Reply::NoContent)
}
