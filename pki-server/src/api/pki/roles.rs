//! `roles/:name` (read, write, delete) and `LIST roles`.
//!
//! A write replaces the whole role (unset fields take Vault's defaults). Each
//! request value is coerced to the type the field has in the default role
//! (bool, integer, duration, list, string), so the CLI's all-strings bodies and
//! typed JSON both work; unknown keys are ignored with Vault's warning.

use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::engine::Engine;
use crate::pki::Role;
use serde_json::{Map, Value, json};

const DURATION_FIELDS: &[&str] = &["ttl", "max_ttl", "not_before_duration"];

fn role_json(r: &Role) -> Result<Map<String, Value>, ApiError> {
    match serde_json::to_value(r).map_err(ApiError::internal)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::internal("role did not serialise to an object")),
    }
}

/// Build a role from a write request over Vault's defaults.
pub fn parse_role(data: &Map<String, Value>) -> Result<(Role, Vec<String>), ApiError> {
    let defaults = role_json(&Role::default())?;
    let mut out = defaults.clone();
    let mut ignored = Vec::new();
    for (k, v) in data {
        let key = match k.as_str() {
            "lease" => "ttl",
            "lease_max" => "max_ttl",
            "allowed_base_domain" => "allowed_domains",
            "allow_base_domain" => "allow_bare_domains",
            other => other,
        };
        let Some(template) = defaults.get(key) else {
            if k != "name" {
                ignored.push(k.clone());
            }
            continue;
        };
        let mut one = Map::new();
        one.insert(key.to_string(), v.clone());
        let coerced = if DURATION_FIELDS.contains(&key) {
            json!(
                params::duration(&one, key)?
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            )
        } else {
            match template {
                Value::Bool(_) => json!(params::boolean(&one, key)?.unwrap_or(false)),
                Value::Number(_) => {
                    let n = params::int(&one, key)?.unwrap_or(0);
                    json!(
                        u32::try_from(n)
                            .map_err(|_| ApiError::bad_request(format!("{key} is out of range")))?
                    )
                }
                Value::Array(_) => json!(params::list(&one, key)?.unwrap_or_default()),
                _ => json!(params::string(&one, key)?.unwrap_or("")),
            }
        };
        out.insert(key.to_string(), coerced);
    }
    let mut role: Role = serde_json::from_value(Value::Object(out))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    role.validate()?;
    let mut warnings = Vec::new();
    if !ignored.is_empty() {
        ignored.sort();
        warnings.push(format!(
            "Endpoint ignored these unrecognized parameters: [{}]",
            ignored.join(" ")
        ));
    }
    if role.generate_lease {
        warnings.push("it is encouraged to disable generate_lease and rely on PKI's native capabilities when possible; no leases are created by this server".into());
    }
    Ok((role, warnings))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// `roles/:name`.
pub async fn handle(engine: &Engine<'_>, name: &str, req: &Request) -> Result<Reply, ApiError> {
    if !valid_name(name) {
        return Err(ApiError::bad_request(format!("invalid role name {name:?}")));
    }
    match req.op {
        Operation::Read => {
            let role = engine.role(name).await?.ok_or_else(ApiError::not_found)?;
            Ok(Reply::data(role_json(&role)?))
        }
        Operation::Update => {
            let (role, warnings) = parse_role(&req.data)?;
            let data = role_json(&role)?;
            engine.put_role(name, role).await?;
            Ok(Reply::data_with_warnings(data, warnings))
        }
        Operation::Delete => {
            engine.delete_role(name).await?;
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `LIST roles`.
pub async fn list(engine: &Engine<'_>, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::List {
        return Err(ApiError::unsupported_operation());
    }
    let keys = engine.list_roles().await?;
    if keys.is_empty() {
        return Err(ApiError::not_found());
    }
    let mut d = Map::new();
    d.insert("keys".into(), json!(keys));
    Ok(Reply::data(d))
}
