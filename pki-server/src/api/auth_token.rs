//! `auth/token/*`: create (plain, orphan, by role), lookup, renew, revoke, roles, tidy.
//!
//! Rules beyond Vault's, for node identity: only a root or sudo caller may set
//! `meta` (role templates pin certificate names to it); a child created by
//! anyone else inherits its parent's metadata, so it can never claim another
//! identity.

use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::auth::policy::{Acl, Caps};
use crate::auth::token::{self, NewToken, SYSTEM_MAX_TTL, TokenEntry, TokenRole};
use crate::seal::Barrier;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(t: i64) -> Value {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn secs(d: Option<std::time::Duration>) -> Option<u64> {
    d.map(|d| d.as_secs())
}

/// The `auth` block of a token answer.
pub(crate) fn auth_block(token: &str, e: &TokenEntry, now: i64) -> Value {
    let token_policies: Vec<&String> = e.policies.iter().collect();
    json!({
        "client_token": token,
        "accessor": e.accessor,
        "policies": e.policies,
        "token_policies": token_policies,
        "metadata": if e.meta.is_empty() { Value::Null } else { json!(e.meta) },
        "lease_duration": e.ttl_left(now),
        "renewable": e.renewable,
        "entity_id": "",
        "token_type": "service",
        "orphan": e.orphan,
        "mfa_requirement": null,
        "num_uses": e.num_uses,
    })
}

/// The `data` of a lookup (`id` empty when looked up by accessor).
fn lookup_data(id: &str, e: &TokenEntry, now: i64) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("accessor".into(), json!(e.accessor));
    d.insert("creation_time".into(), json!(e.creation_time));
    d.insert("creation_ttl".into(), json!(e.creation_ttl));
    d.insert("display_name".into(), json!(e.display_name));
    d.insert("entity_id".into(), json!(""));
    d.insert(
        "expire_time".into(),
        e.expire_time.map(rfc3339).unwrap_or(Value::Null),
    );
    d.insert("explicit_max_ttl".into(), json!(e.explicit_max_ttl));
    d.insert("id".into(), json!(id));
    d.insert("issue_time".into(), rfc3339(e.creation_time));
    d.insert(
        "meta".into(),
        if e.meta.is_empty() {
            Value::Null
        } else {
            json!(e.meta)
        },
    );
    d.insert("num_uses".into(), json!(e.num_uses));
    d.insert("orphan".into(), json!(e.orphan));
    d.insert("path".into(), json!(e.path));
    d.insert("policies".into(), json!(e.policies));
    if !e.is_root() {
        d.insert("renewable".into(), json!(e.renewable));
    }
    d.insert("ttl".into(), json!(e.ttl_left(now)));
    d.insert("type".into(), json!("service"));
    if e.period > 0 {
        d.insert("period".into(), json!(e.period));
    }
    if let Some(r) = &e.role {
        d.insert("role".into(), json!(r));
    }
    d
}

fn meta_param(req: &Request) -> Result<BTreeMap<String, String>, ApiError> {
    match req.data.get("meta") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::bad_request("meta values must be strings")),
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request("meta must be a map of strings")),
    }
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() {
        "token".into()
    } else {
        format!("token-{s}")
    }
}

/// Dispatch `auth/token/<rest>`.
pub async fn handle(
    barrier: &Barrier,
    req: &Request,
    caller: &TokenEntry,
    caller_token: &str,
    acl: &Acl,
) -> Result<Reply, ApiError> {
    let rest = req.path.strip_prefix("auth/token/").unwrap_or("");
    let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let now = now();
    let upd = req.op == Operation::Update;
    match (head, tail) {
        ("create", "") if upd => create(barrier, req, caller, acl, None, false, now).await,
        ("create-orphan", "") if upd => create(barrier, req, caller, acl, None, true, now).await,
        ("create", role) if upd && !role.contains('/') => {
            create(barrier, req, caller, acl, Some(role), false, now).await
        }
        ("lookup-self", "") if matches!(req.op, Operation::Read | Operation::Update) => {
            Ok(Reply::data(lookup_data(caller_token, caller, now)))
        }
        ("lookup", "") if matches!(req.op, Operation::Read | Operation::Update) => {
            let t = params::string(&req.data, "token")?
                .or(req.query.get("token").map(String::as_str))
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::bad_request("missing token to lookup"))?;
            let e = token::lookup(barrier, t, now)
                .await?
                .ok_or_else(|| ApiError::new(axum::http::StatusCode::FORBIDDEN, "bad token"))?;
            Ok(Reply::data(lookup_data(t, &e, now)))
        }
        ("lookup-accessor", "") if upd => {
            let a = params::string(&req.data, "accessor")?.unwrap_or("");
            let e = token::lookup_accessor(barrier, a, now)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
            Ok(Reply::data(lookup_data("", &e, now)))
        }
        ("renew-self", "") if upd => renew(barrier, req, caller_token, caller, now).await,
        ("renew", "") if upd => {
            let t = params::string(&req.data, "token")?
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::bad_request("missing token"))?;
            let e = token::lookup(barrier, t, now)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid token"))?;
            renew(barrier, req, t, &e, now).await
        }
        ("revoke-self", "") if upd => {
            token::revoke(barrier, &caller.hash).await?;
            Ok(Reply::NoContent)
        }
        ("revoke", "") | ("revoke-orphan", "") if upd => {
            let t = params::string(&req.data, "token")?
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::bad_request("missing token"))?;
            // Revoking a token that does not exist is a no-op, as in Vault.
            if let Some(e) = token::lookup(barrier, t, now).await? {
                if head == "revoke" {
                    token::revoke(barrier, &e.hash).await?;
                } else {
                    token::revoke_orphan(barrier, &e.hash).await?;
                }
            }
            Ok(Reply::NoContent)
        }
        ("revoke-accessor", "") if upd => {
            let a = params::string(&req.data, "accessor")?.unwrap_or("");
            if let Some(e) = token::lookup_accessor(barrier, a, now).await? {
                token::revoke(barrier, &e.hash).await?;
            }
            Ok(Reply::NoContent)
        }
        ("accessors", "") if req.op == Operation::List => keys(token::accessors(barrier).await?),
        ("roles", "") if req.op == Operation::List => keys(token::list_roles(barrier).await?),
        ("roles", name) if !name.contains('/') && !name.is_empty() => {
            roles(barrier, name, req).await
        }
        ("tidy", "") if upd => {
            let n = token::tidy(barrier, now).await?;
            tracing::info!(removed = n, "token tidy finished");
            Ok(Reply::Status(
                axum::http::StatusCode::ACCEPTED,
                Box::new(Reply::data_with_warnings(Map::new(), vec!["Tidy operation successfully started. Any information from the operation will be printed to Vault's server logs.".into()])),
            ))
        }
        _ if matches!(
            head,
            "create"
                | "create-orphan"
                | "lookup"
                | "lookup-self"
                | "lookup-accessor"
                | "renew"
                | "renew-self"
                | "revoke"
                | "revoke-self"
                | "revoke-accessor"
                | "revoke-orphan"
                | "accessors"
                | "roles"
                | "tidy"
        ) =>
        {
            Err(ApiError::unsupported_operation())
        }
        _ => Err(ApiError::unsupported_path(&req.path)),
    }
}

fn keys(k: Vec<String>) -> Result<Reply, ApiError> {
    if k.is_empty() {
        return Err(ApiError::not_found());
    }
    let mut d = Map::new();
    d.insert("keys".into(), json!(k));
    Ok(Reply::data(d))
}

async fn renew(
    barrier: &Barrier,
    req: &Request,
    token: &str,
    e: &TokenEntry,
    now: i64,
) -> Result<Reply, ApiError> {
    let inc = secs(params::duration(&req.data, "increment")?);
    let e = token::renew(barrier, e, inc, now)
        .await
        .map_err(token_err)?;
    Ok(Reply::Auth(auth_block(token, &e, now), Vec::new()))
}

fn token_err(e: token::TokenError) -> ApiError {
    match e {
        token::TokenError::Bad(m) => ApiError::bad_request(m),
        token::TokenError::Denied => ApiError::permission_denied(),
        token::TokenError::Storage(s) => s.into(),
    }
}

async fn create(
    barrier: &Barrier,
    req: &Request,
    caller: &TokenEntry,
    acl: &Acl,
    role_name: Option<&str>,
    orphan_path: bool,
    now: i64,
) -> Result<Reply, ApiError> {
    let d = &req.data;
    let privileged = caller.is_root() || acl.capabilities("auth/token/create").allows(Caps::SUDO);
    let role: Option<TokenRole> = match role_name {
        None => None,
        Some(n) => Some(
            token::role(barrier, n)
                .await?
                .ok_or_else(|| ApiError::bad_request("unknown role name"))?,
        ),
    };
    if params::string(d, "id")?.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "custom token ids are not supported by this server",
        ));
    }
    let no_parent = params::boolean(d, "no_parent")?.unwrap_or(false);
    if no_parent && !privileged {
        return Err(ApiError::bad_request(
            "root or sudo privileges required to create orphan token",
        ));
    }
    let orphan = orphan_path || no_parent || role.as_ref().is_some_and(|r| r.orphan);

    let requested = params::list(d, "policies")?.filter(|p| !p.is_empty());
    let no_default = params::boolean(d, "no_default_policy")?.unwrap_or(false);
    let mut policies: Vec<String> = match (&requested, &role) {
        (Some(p), _) => p.iter().map(|s| s.trim().to_ascii_lowercase()).collect(),
        (None, Some(r)) if !r.allowed_policies.is_empty() => r.allowed_policies.clone(),
        (None, _) => caller.policies.clone(),
    };
    policies.retain(|p| !p.is_empty());
    let parent_is_root = caller.is_root();
    if let Some(r) = &role {
        if !r.allowed_policies.is_empty() {
            let outside: Vec<&String> = policies
                .iter()
                .filter(|p| *p != "default" && !r.allowed_policies.contains(p))
                .collect();
            if !outside.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "token policies ({}) must be subset of the role's allowed policies ({})",
                    policies.join(", "),
                    r.allowed_policies.join(", ")
                )));
            }
        }
        if let Some(p) = policies.iter().find(|p| r.disallowed_policies.contains(p)) {
            return Err(ApiError::bad_request(format!(
                "token policy \"{p}\" is disallowed by this role"
            )));
        }
    }
    let role_grants = role
        .as_ref()
        .is_some_and(|r| !r.allowed_policies.is_empty());
    if !parent_is_root
        && !role_grants
        && policies
            .iter()
            .any(|p| p != "default" && !caller.policies.contains(p))
    {
        return Err(ApiError::bad_request(
            "child policies must be subset of parent",
        ));
    }
    if policies.iter().any(|p| p == "root") && !parent_is_root {
        return Err(ApiError::bad_request(
            "root policy cannot be granted by a non-root token",
        ));
    }
    let is_root_token = policies.iter().any(|p| p == "root");
    if is_root_token {
        policies = vec!["root".into()];
    } else if !no_default && !policies.iter().any(|p| p == "default") {
        policies.push("default".into());
    }
    policies.sort();
    policies.dedup();

    let meta = meta_param(req)?;
    let meta = if meta.is_empty() {
        if privileged {
            BTreeMap::new()
        } else {
            caller.meta.clone()
        }
    } else if privileged {
        meta
    } else {
        return Err(ApiError::bad_request(
            "setting token metadata requires root or sudo privileges",
        ));
    };

    let period = secs(params::duration(d, "period")?).filter(|p| *p > 0);
    if period.is_some() && !privileged {
        return Err(ApiError::bad_request(
            "root or sudo privileges required to create periodic token",
        ));
    }
    // What the caller asks for never reaches past the token role (or, with
    // no role, the system maximum), however privileged the caller is.
    let nonzero = |v: u64| (v > 0).then_some(v);
    let period_cap = role
        .as_ref()
        .and_then(|r| nonzero(r.token_period).or(nonzero(r.token_max_ttl)))
        .unwrap_or(SYSTEM_MAX_TTL);
    let period = period
        .map(|p| p.min(period_cap))
        .or(role.as_ref().map(|r| r.token_period).filter(|p| *p > 0))
        .unwrap_or(0);
    let role_explicit = role
        .as_ref()
        .and_then(|r| nonzero(r.token_explicit_max_ttl));
    let explicit_max_ttl = match (
        secs(params::duration(d, "explicit_max_ttl")?),
        role_explicit,
    ) {
        (Some(asked), Some(cap)) if asked == 0 || asked > cap => cap,
        (Some(asked), _) => asked,
        (None, cap) => cap.unwrap_or(0),
    };
    let mut ttl = secs(params::duration(d, "ttl")?.filter(|t| !t.is_zero()))
        .or(role.as_ref().map(|r| r.token_ttl).filter(|t| *t > 0))
        .unwrap_or(if is_root_token { 0 } else { SYSTEM_MAX_TTL });
    if period > 0 {
        ttl = period;
    }
    let max = role
        .as_ref()
        .map(|r| r.token_max_ttl)
        .filter(|m| *m > 0)
        .unwrap_or(SYSTEM_MAX_TTL);
    if ttl > max && !is_root_token {
        ttl = max;
    }
    if is_root_token && ttl == 0 && caller.expire_time.is_some() {
        return Err(ApiError::bad_request(
            "expiring root tokens cannot create non-expiring root tokens",
        ));
    }
    let num_uses = match params::int(d, "num_uses")? {
        Some(n) if n < 0 => return Err(ApiError::bad_request("number of uses cannot be negative")),
        Some(n) => u32::try_from(n).map_err(|_| ApiError::bad_request("num_uses is too large"))?,
        None => role.as_ref().map(|r| r.token_num_uses).unwrap_or(0),
    };
    let renewable = params::boolean(d, "renewable")?
        .unwrap_or(role.as_ref().map(|r| r.renewable).unwrap_or(true));
    let path = match (role_name, orphan_path) {
        (Some(r), _) => format!("auth/token/create/{r}"),
        (None, true) => "auth/token/create-orphan".into(),
        (None, false) => "auth/token/create".into(),
    };
    let display = params::string(d, "display_name")?.unwrap_or("");
    let (tok, entry) = token::create(
        barrier,
        NewToken {
            policies,
            meta,
            display_name: sanitize(display),
            ttl,
            explicit_max_ttl,
            period,
            num_uses,
            parent: (!orphan).then(|| caller.hash.clone()),
            path,
            renewable,
            role: role_name.map(String::from),
        },
        now,
    )
    .await?;
    Ok(Reply::Auth(auth_block(&tok, &entry, now), Vec::new()))
}

async fn roles(barrier: &Barrier, name: &str, req: &Request) -> Result<Reply, ApiError> {
    match req.op {
        Operation::Read => {
            let r = token::role(barrier, name)
                .await?
                .ok_or_else(ApiError::not_found)?;
            let mut d = Map::new();
            d.insert("name".into(), json!(name));
            d.insert("allowed_policies".into(), json!(r.allowed_policies));
            d.insert("disallowed_policies".into(), json!(r.disallowed_policies));
            d.insert("allowed_policies_glob".into(), json!([]));
            d.insert("disallowed_policies_glob".into(), json!([]));
            d.insert("orphan".into(), json!(r.orphan));
            d.insert("renewable".into(), json!(r.renewable));
            d.insert("path_suffix".into(), json!(r.path_suffix));
            d.insert("period".into(), json!(r.token_period));
            d.insert("token_period".into(), json!(r.token_period));
            d.insert("explicit_max_ttl".into(), json!(r.token_explicit_max_ttl));
            d.insert(
                "token_explicit_max_ttl".into(),
                json!(r.token_explicit_max_ttl),
            );
            d.insert("token_ttl".into(), json!(r.token_ttl));
            d.insert("token_max_ttl".into(), json!(r.token_max_ttl));
            d.insert("token_num_uses".into(), json!(r.token_num_uses));
            d.insert("token_type".into(), json!("default-service"));
            d.insert("token_no_default_policy".into(), json!(false));
            d.insert("token_bound_cidrs".into(), json!([]));
            d.insert("allowed_entity_aliases".into(), json!([]));
            Ok(Reply::data(d))
        }
        Operation::Update => {
            let d = &req.data;
            let dur =
                |k: &str| -> Result<Option<u64>, ApiError> { Ok(secs(params::duration(d, k)?)) };
            // Fields not given keep their stored value (Vault's update), so
            // two writers of different fields both land (compare-and-swap).
            let allowed = params::list(d, "allowed_policies")?;
            let disallowed = params::list(d, "disallowed_policies")?;
            let orphan = params::boolean(d, "orphan")?;
            let renewable = params::boolean(d, "renewable")?;
            let period = dur("token_period")?.or(dur("period")?);
            let ttl = dur("token_ttl")?;
            let max_ttl = dur("token_max_ttl")?;
            let explicit = dur("token_explicit_max_ttl")?.or(dur("explicit_max_ttl")?);
            let num_uses =
                match params::int(d, "token_num_uses")? {
                    Some(n) => Some(u32::try_from(n).map_err(|_| {
                        ApiError::bad_request("token_num_uses must be non-negative")
                    })?),
                    None => None,
                };
            let suffix = params::string(d, "path_suffix")?.map(str::to_string);
            token::update_role(barrier, name, |cur| {
                let mut r = cur.unwrap_or(TokenRole {
                    renewable: true,
                    ..Default::default()
                });
                let set = |f: &mut u64, v: Option<u64>| *f = v.unwrap_or(*f);
                if let Some(v) = &allowed {
                    r.allowed_policies = v.clone();
                }
                if let Some(v) = &disallowed {
                    r.disallowed_policies = v.clone();
                }
                r.orphan = orphan.unwrap_or(r.orphan);
                r.renewable = renewable.unwrap_or(r.renewable);
                set(&mut r.token_period, period);
                set(&mut r.token_ttl, ttl);
                set(&mut r.token_max_ttl, max_ttl);
                set(&mut r.token_explicit_max_ttl, explicit);
                r.token_num_uses = num_uses.unwrap_or(r.token_num_uses);
                if let Some(v) = &suffix {
                    r.path_suffix = v.clone();
                }
                if r.token_max_ttl > 0 && r.token_ttl > r.token_max_ttl {
                    return Err(ApiError::bad_request(
                        "\"token_ttl\" value must be less than \"token_max_ttl\" value",
                    ));
                }
                Ok(r)
            })
            .await?;
            Ok(Reply::NoContent)
        }
        Operation::Delete => {
            token::delete_role(barrier, name).await?;
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}
