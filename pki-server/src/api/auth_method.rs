//! `auth/<mount>/*` for enabled login methods: routing to `auth_jwt` or
//! `auth_aws`, the token settings every role shares, role storage, and turning
//! a proven [`Login`] into a token with Vault's auth answer.
//!
//! `auth/<mount>/login` is the only unauthenticated path here (dispatch sends
//! it without a token, still audited); configuration and roles need a token
//! with the usual ACL capabilities on their paths.

use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::auth::methods::{AuthMount, AuthTable};
use crate::auth::{Login, TokenParams, token};
use crate::seal::Barrier;
use crate::storage::Storage;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// The enabled method serving `path` (`auth/...`), and the rest of the path.
pub async fn find(barrier: &Barrier, path: &str) -> Result<Option<(AuthMount, String)>, ApiError> {
    let below = path.strip_prefix("auth/").unwrap_or(path);
    let (table, _) = AuthTable::load(barrier).await?;
    Ok(table
        .route(below)
        .map(|(m, rest)| (m.clone(), rest.to_string())))
}

/// Whether a request is a login (unauthenticated).
pub fn is_login(rest: &str, op: Operation) -> bool {
    rest == "login" && op == Operation::Update
}

/// A login: run the method's check, then issue the token.
pub async fn login(barrier: &Barrier, m: &AuthMount, req: &Request) -> Result<Reply, ApiError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (login, params) = match m.kind.as_str() {
        "jwt" => super::auth_jwt::login(barrier, m, req, now).await?,
        "aws" => super::auth_aws::login(barrier, m, req).await?,
        _ => return Err(ApiError::unsupported_path(&req.path)),
    };
    issue(barrier, m, login, &params, now).await
}

async fn issue(
    barrier: &Barrier,
    m: &AuthMount,
    login: Login,
    params: &TokenParams,
    now: i64,
) -> Result<Reply, ApiError> {
    let path = format!("auth/{}login", m.path);
    let (client_token, entry) = token::create(barrier, params.new_token(login, &path), now).await?;
    let mut auth = super::auth_token::auth_block(&client_token, &entry, now);
    if let Value::Object(a) = &mut auth {
        a.insert("orphan".into(), json!(true));
    }
    tracing::info!(mount = %m.path, accessor = %entry.accessor, "login");
    Ok(Reply::Auth(auth, Vec::new()))
}

/// Dispatch an authenticated request below an enabled method.
pub async fn handle(
    barrier: &Barrier,
    m: &AuthMount,
    rest: &str,
    req: &Request,
) -> Result<Reply, ApiError> {
    match m.kind.as_str() {
        "jwt" => super::auth_jwt::handle(barrier, m, rest, req).await,
        "aws" => super::auth_aws::handle(barrier, m, rest, req).await,
        _ => Err(ApiError::unsupported_path(&req.path)),
    }
}

/// Read a stored JSON value of a method.
pub async fn get<T: DeserializeOwned>(
    barrier: &Barrier,
    m: &AuthMount,
    key: &str,
) -> Result<Option<T>, ApiError> {
    match barrier.get(&format!("{}{key}", m.storage_prefix())).await? {
        None => Ok(None),
        Some(e) => serde_json::from_slice(&e.value)
            .map(Some)
            .map_err(|e| ApiError::internal(format!("corrupt auth entry {key}: {e}"))),
    }
}

/// Store a JSON value of a method.
pub async fn put<T: Serialize>(
    barrier: &Barrier,
    m: &AuthMount,
    key: &str,
    v: &T,
) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(v).map_err(ApiError::internal)?;
    // Unconditional put is safe: a method's config or role is written whole
    // by each request (Vault's update of these paths replaces the object).
    barrier
        .put(&format!("{}{key}", m.storage_prefix()), &bytes)
        .await?;
    Ok(())
}

/// A role name from a path segment.
pub fn role_name(name: &str) -> Result<&str, ApiError> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err(ApiError::bad_request(format!("invalid role name {name:?}")));
    }
    Ok(name)
}

/// `role/` LIST and `role/<name>` read, write, delete, generic over the role type.
pub async fn roles<R>(
    barrier: &Barrier,
    m: &AuthMount,
    name: &str,
    req: &Request,
    apply: impl FnOnce(&mut R, &Map<String, Value>) -> Result<(), ApiError>,
    show: impl FnOnce(&R) -> Map<String, Value>,
) -> Result<Reply, ApiError>
where
    R: Serialize + DeserializeOwned + Default,
{
    if name.is_empty() {
        if req.op != Operation::List {
            return Err(ApiError::unsupported_operation());
        }
        let keys: Vec<String> = barrier
            .list(&format!("{}role/", m.storage_prefix()))
            .await?
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .collect();
        if keys.is_empty() {
            return Err(ApiError::not_found());
        }
        let mut d = Map::new();
        d.insert("keys".into(), json!(keys));
        return Ok(Reply::data(d));
    }
    let name = role_name(name)?;
    let key = format!("role/{name}");
    match req.op {
        Operation::Read => {
            let r: R = get(barrier, m, &key)
                .await?
                .ok_or_else(ApiError::not_found)?;
            Ok(Reply::data(show(&r)))
        }
        Operation::Update => {
            let mut r: R = get(barrier, m, &key).await?.unwrap_or_default();
            apply(&mut r, &req.data)?;
            put(barrier, m, &key, &r).await?;
            Ok(Reply::NoContent)
        }
        Operation::Delete => {
            barrier
                .delete(&format!("{}{key}", m.storage_prefix()))
                .await?;
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn secs(d: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    Ok(params::duration(d, key)?.map(|d| d.as_secs()))
}

/// Apply Vault's token fields (and their legacy names) to `t`.
pub fn apply_token_params(t: &mut TokenParams, d: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(p) = params::list(d, "token_policies")?.or(params::list(d, "policies")?) {
        t.token_policies = p
            .into_iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
    }
    if let Some(v) = secs(d, "token_ttl")?.or(secs(d, "ttl")?) {
        t.token_ttl = v;
    }
    if let Some(v) = secs(d, "token_max_ttl")?.or(secs(d, "max_ttl")?) {
        t.token_max_ttl = v;
    }
    if let Some(v) = secs(d, "token_period")?.or(secs(d, "period")?) {
        t.token_period = v;
    }
    if let Some(v) = params::boolean(d, "token_no_default_policy")? {
        t.token_no_default_policy = v;
    }
    if t.token_max_ttl > 0 && t.token_ttl > t.token_max_ttl {
        return Err(ApiError::bad_request(
            "\"token_ttl\" value must be less than \"token_max_ttl\" value",
        ));
    }
    Ok(())
}

/// Vault's token fields for a role read.
pub fn show_token_params(t: &TokenParams, d: &mut Map<String, Value>) {
    d.insert("token_policies".into(), json!(t.token_policies));
    d.insert("policies".into(), json!(t.token_policies));
    d.insert("token_ttl".into(), json!(t.token_ttl));
    d.insert("token_max_ttl".into(), json!(t.token_max_ttl));
    d.insert("token_period".into(), json!(t.token_period));
    d.insert(
        "token_no_default_policy".into(),
        json!(t.token_no_default_policy),
    );
    d.insert("token_type".into(), json!("default"));
    d.insert("token_explicit_max_ttl".into(), json!(0));
    d.insert("token_num_uses".into(), json!(0));
    d.insert("token_bound_cidrs".into(), json!([]));
}
