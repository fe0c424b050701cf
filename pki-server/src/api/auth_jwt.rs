//! `auth/<jwt mount>/`: `config`, `role/<name>`, `login` (Vault's JWT method).

use crate::api::auth_method::{self, apply_token_params, show_token_params};
use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::auth::jwt::{self, JwtConfig, JwtRole};
use crate::auth::methods::AuthMount;
use crate::auth::{Login, TokenParams};
use crate::seal::Barrier;
use serde_json::{Map, Value, json};

/// Dispatch an authenticated request.
pub async fn handle(
    barrier: &Barrier,
    m: &AuthMount,
    rest: &str,
    req: &Request,
) -> Result<Reply, ApiError> {
    match rest {
        "config" => config(barrier, m, req).await,
        "role" => auth_method::roles(barrier, m, "", req, apply_role, show_role).await,
        r if r.starts_with("role/") => {
            let name = r.strip_prefix("role/").unwrap_or("");
            auth_method::roles(barrier, m, name, req, apply_role, show_role).await
        }
        "login" => Err(ApiError::unsupported_operation()),
        _ => Err(ApiError::unsupported_path(&req.path)),
    }
}

async fn config(barrier: &Barrier, m: &AuthMount, req: &Request) -> Result<Reply, ApiError> {
    match req.op {
        Operation::Read => {
            let c: JwtConfig = auth_method::get(barrier, m, "config")
                .await?
                .ok_or_else(ApiError::not_found)?;
            let mut d = Map::new();
            d.insert(
                "jwt_validation_pubkeys".into(),
                json!(c.jwt_validation_pubkeys),
            );
            d.insert("bound_issuer".into(), json!(c.bound_issuer));
            d.insert("jwt_supported_algs".into(), json!(c.jwt_supported_algs));
            d.insert("default_role".into(), json!(c.default_role));
            d.insert("jwks_url".into(), json!(""));
            d.insert("oidc_discovery_url".into(), json!(""));
            Ok(Reply::data(d))
        }
        Operation::Update => {
            let d = &req.data;
            for unsupported in [
                "jwks_url",
                "oidc_discovery_url",
                "jwks_pairs",
                "oidc_client_id",
            ] {
                if params::string(d, unsupported)
                    .ok()
                    .flatten()
                    .is_some_and(|s| !s.is_empty())
                    || matches!(d.get(unsupported), Some(Value::Array(a)) if !a.is_empty())
                {
                    return Err(ApiError::bad_request(format!(
                        "{unsupported} is not supported by this server: configure jwt_validation_pubkeys"
                    )));
                }
            }
            let mut c: JwtConfig = auth_method::get(barrier, m, "config")
                .await?
                .unwrap_or_default();
            if let Some(k) = params::list(d, "jwt_validation_pubkeys")? {
                c.jwt_validation_pubkeys = k;
            }
            if let Some(i) = params::string(d, "bound_issuer")? {
                c.bound_issuer = i.to_string();
            }
            if let Some(a) = params::list(d, "jwt_supported_algs")? {
                c.jwt_supported_algs = a;
            }
            if let Some(r) = params::string(d, "default_role")? {
                c.default_role = r.to_string();
            }
            c.validate().map_err(ApiError::bad_request)?;
            auth_method::put(barrier, m, "config", &c).await?;
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// A leeway: seconds, a duration string, or -1 (no check).
fn leeway(d: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match params::int(d, key) {
        Ok(v) => Ok(v),
        Err(_) => {
            Ok(params::duration(d, key)?.map(|x| i64::try_from(x.as_secs()).unwrap_or(i64::MAX)))
        }
    }
}

fn apply_role(r: &mut JwtRole, d: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(t) = params::string(d, "role_type")? {
        r.role_type = t.to_string();
    }
    if let Some(a) = params::list(d, "bound_audiences")? {
        r.bound_audiences = a;
    }
    if let Some(s) = params::string(d, "bound_subject")? {
        r.bound_subject = s.to_string();
    }
    match d.get("bound_claims") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => r.bound_claims = o.clone(),
        Some(_) => return Err(ApiError::bad_request("bound_claims must be a map")),
    }
    if let Some(t) = params::string(d, "bound_claims_type")?
        && !t.is_empty()
        && t != "string"
    {
        return Err(ApiError::bad_request(
            "bound_claims_type: only \"string\" is supported",
        ));
    }
    match d.get("claim_mappings") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            r.claim_mappings = o
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(ApiError::bad_request(
                        "claim_mappings values must be strings",
                    )),
                })
                .collect::<Result<_, _>>()?;
        }
        Some(_) => return Err(ApiError::bad_request("claim_mappings must be a map")),
    }
    if let Some(u) = params::string(d, "user_claim")? {
        r.user_claim = u.to_string();
    }
    if let Some(v) = leeway(d, "expiration_leeway")? {
        r.expiration_leeway = v;
    }
    if let Some(v) = leeway(d, "not_before_leeway")? {
        r.not_before_leeway = v;
    }
    if let Some(v) = leeway(d, "clock_skew_leeway")? {
        r.clock_skew_leeway = v;
    }
    apply_token_params(&mut r.token, d)?;
    r.validate().map_err(ApiError::bad_request)
}

fn show_role(r: &JwtRole) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("role_type".into(), json!(r.role_type));
    d.insert("bound_audiences".into(), json!(r.bound_audiences));
    d.insert("bound_subject".into(), json!(r.bound_subject));
    d.insert("bound_claims".into(), Value::Object(r.bound_claims.clone()));
    d.insert("bound_claims_type".into(), json!("string"));
    d.insert("claim_mappings".into(), json!(r.claim_mappings));
    d.insert("user_claim".into(), json!(r.user_claim));
    d.insert("expiration_leeway".into(), json!(r.expiration_leeway));
    d.insert("not_before_leeway".into(), json!(r.not_before_leeway));
    d.insert("clock_skew_leeway".into(), json!(r.clock_skew_leeway));
    show_token_params(&r.token, &mut d);
    d
}

/// `login`: check the JWT against the role; the identity and the role's token settings.
pub async fn login(
    barrier: &Barrier,
    m: &AuthMount,
    req: &Request,
    now: i64,
) -> Result<(Login, TokenParams), ApiError> {
    let token = params::string(&req.data, "jwt")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing jwt"))?;
    let config: JwtConfig = auth_method::get(barrier, m, "config")
        .await?
        .ok_or_else(|| ApiError::bad_request("could not load configuration"))?;
    let role_name = match params::string(&req.data, "role")? {
        Some(r) if !r.is_empty() => r.to_string(),
        _ if !config.default_role.is_empty() => config.default_role.clone(),
        _ => return Err(ApiError::bad_request("missing role")),
    };
    let role: JwtRole = auth_method::get(
        barrier,
        m,
        &format!("role/{}", auth_method::role_name(&role_name)?),
    )
    .await?
    .ok_or_else(|| ApiError::bad_request(format!("role {role_name:?} could not be found")))?;
    let keys = config
        .keys()
        .map_err(|e| ApiError::internal(format!("stored jwt keys do not parse: {e}")))?;
    let login = jwt::login(&config, &keys, &role_name, &role, token, now)?;
    Ok((login, role.token))
}
