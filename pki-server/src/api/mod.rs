//! The HTTP API: the only module that knows HTTP, axum and Vault's JSON shapes.
//!
//! Every request goes through [`handle`]: read the body (size-limited), parse it
//! into a [`request::Request`], answer the unauthenticated sys paths, refuse
//! everything else while sealed (503), check the token (403), then route by path
//! family. Handlers stay thin; the seal, storage and CA code do the work.
//! `auth/<method>/login` needs no token (it is how a token is obtained) but is
//! audited like every other request.

pub mod auth_aws;
pub mod auth_jwt;
pub mod auth_method;
pub mod auth_token;
pub mod error;
pub mod params;
pub mod pki;
pub mod request;
pub mod response;
pub mod sys;

use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use error::ApiError;
use request::{Operation, Request};
use response::Reply;

/// How long a request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The axum app: one handler for every path.
pub fn router(state: AppState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<AppState>, req: axum::http::Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let limit = state.settings.max_request_bytes;
    // A body that trickles in is cut off: the whole body within BODY_TIMEOUT.
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await;
    let mut resp = match read {
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
        Ok(Err(_)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large: the limit is {limit} bytes"),
        )
        .into_response(),
        Ok(Ok(bytes)) => {
            match Request::parse(
                &parts.method,
                parts.uri.path(),
                parts.uri.query(),
                &parts.headers,
                &bytes,
            ) {
                Err(e) => e.into_response(),
                Ok(r) => match dispatch(&state, r).await {
                    Ok(reply) => reply.into_response(),
                    Err(e) => e.into_response(),
                },
            }
        }
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn dispatch(state: &AppState, mut req: Request) -> Result<Reply, ApiError> {
    // Unauthenticated, and answered whether sealed or not.
    match req.path.as_str() {
        "sys/init" => return sys::init::handle(state, &req).await,
        "sys/seal-status" => return sys::seal::status(state, &req).await,
        "sys/unseal" => return sys::seal::unseal(state, &req).await,
        "sys/health" => return sys::health::health(state, &req).await,
        _ => {}
    }
    // Sealing a sealed server is a no-op success (as in Vault and OpenBao): no
    // token can be checked while sealed, and there is nothing left to protect.
    if req.path == "sys/seal" && req.op == Operation::Update && state.seal.barrier().is_none() {
        return Ok(Reply::NoContent);
    }
    let barrier = state.seal.barrier().ok_or_else(ApiError::sealed)?;
    if req.op == Operation::Head {
        return Err(ApiError::unsupported_operation());
    }
    if req.path == "sys/leader" {
        return sys::health::leader(state, &req).await;
    }
    // The mount table, read once: a path outside sys/ and auth/ goes to a mount.
    let table = if is_system_path(&req.path) {
        None
    } else {
        Some(state.mounts(&barrier).await?)
    };
    // PKI fetches that need no token (ca, crl, cert/<serial>).
    if let Some(t) = &table
        && let Some((m, rest)) = t.route(&req.path)
        && pki::is_unauthenticated(rest, req.op)
    {
        let caller = crate::audit::Caller::default();
        return audited(
            state,
            &barrier,
            &req,
            &caller,
            mount(state, &barrier, m, rest, &req),
        )
        .await;
    }

    // Logins to enabled auth methods (jwt, aws): no token, still audited.
    let method = if req.path.starts_with("auth/") && !req.path.starts_with("auth/token/") {
        auth_method::find(&barrier, &req.path).await?
    } else {
        None
    };
    if let Some((m, rest)) = &method
        && auth_method::is_login(rest, req.op)
    {
        let caller = crate::audit::Caller::default();
        return audited(
            state,
            &barrier,
            &req,
            &caller,
            auth_method::login(&barrier, m, &req),
        )
        .await;
    }

    let (entry, acl) = match authorize(state, &barrier, &req).await {
        Ok(v) => v,
        Err(e) => {
            // Refusals are audited too (Vault does): path, operation, the
            // presented token as an HMAC, and the error.
            let caller = crate::audit::Caller {
                token: req.token.clone(),
                ..Default::default()
            };
            return audited(state, &barrier, &req, &caller, async { Err(e) }).await;
        }
    };
    let token = req.token.clone().unwrap_or_default();
    req.metadata = entry.meta.clone();
    let caller = crate::audit::Caller {
        token: Some(token.clone()),
        accessor: entry.accessor.clone(),
        display_name: entry.display_name.clone(),
        policies: entry.policies.clone(),
        metadata: entry.meta.clone(),
    };
    let result = audited(
        state,
        &barrier,
        &req,
        &caller,
        route(
            state,
            &barrier,
            Lookups {
                table: table.as_deref(),
                method: method.as_ref(),
            },
            &req,
            &entry,
            &token,
            &acl,
        ),
    )
    .await;
    if req.path.starts_with("auth/token/") {
        // Create, renew and revoke change token entries: drop the cached ones.
        state.cache.tokens.clear();
    }
    result
}

/// Write the request entry, run `handler`, write the response entry. With
/// devices enabled and none able to write, the request fails (500) — before
/// the handler runs for the request entry, so nothing is issued. A request
/// whose entry would be too large is refused (413) before the handler, and
/// audited without its body. Entries are hashed and written on blocking
/// threads, never on the async workers.
async fn audited(
    state: &AppState,
    barrier: &crate::seal::Barrier,
    req: &Request,
    caller: &crate::audit::Caller,
    handler: impl std::future::Future<Output = Result<Reply, ApiError>>,
) -> Result<Reply, ApiError> {
    let devices = state.audit_devices(barrier).await?;
    if devices.is_empty() {
        return handler.await;
    }
    let limit = crate::audit::max_entry_bytes(state.settings.max_request_bytes);
    let too_large = crate::audit::estimated_entry_bytes(&req.data) > limit;
    let rec = std::sync::Arc::new(crate::audit::OwnedRecord {
        id: uuid::Uuid::new_v4().to_string(),
        operation: match req.op {
            Operation::Read | Operation::Head => "read",
            Operation::List => "list",
            Operation::Update => "update",
            Operation::Delete => "delete",
        },
        path: req.path.clone(),
        data: if too_large {
            Default::default()
        } else {
            req.data.clone()
        },
        caller: caller.clone(),
    });
    crate::audit::log_request_off_thread(devices.clone(), rec.clone())
        .await
        .map_err(ApiError::internal)?;
    let result = if too_large {
        Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request too large to audit: its audit entry would exceed {limit} bytes"),
        ))
    } else {
        handler.await
    };
    let (view, error) = match &result {
        Ok(r) => (r.audit_view(), String::new()),
        Err(e) => (serde_json::json!({}), e.errors.join("; ")),
    };
    crate::audit::log_response_off_thread(devices, rec, view, error)
        .await
        .map_err(ApiError::internal)?;
    result
}

/// Check the request's token and ACL (parameter constraints included) and
/// spend one use of a limited-use token: the token's entry and ACL, or the
/// refusal.
async fn authorize(
    state: &AppState,
    barrier: &crate::seal::Barrier,
    req: &Request,
) -> Result<(crate::auth::token::TokenEntry, crate::auth::policy::Acl), ApiError> {
    let token = req
        .token
        .as_deref()
        .ok_or_else(ApiError::permission_denied)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let entry = state
        .cache
        .tokens
        .lookup(state.seal.generation(), barrier, token, now)
        .await?
        .ok_or_else(ApiError::invalid_token)?;
    let acl = state.acl(barrier, &entry.policies).await?;
    if !acl.is_root() {
        let need = crate::auth::needed(
            req.op == Operation::Read,
            req.op == Operation::List,
            req.op == Operation::Delete,
        );
        let acl_path = if req.op == Operation::List {
            format!("{}/", req.path)
        } else {
            req.path.clone()
        };
        let caps = acl.capabilities(&acl_path);
        let sudo = crate::auth::needs_sudo(&req.path, req.op == Operation::Delete);
        if !caps.allows(need) || (sudo && !caps.allows(crate::auth::policy::Caps::SUDO)) {
            return Err(ApiError::permission_denied());
        }
        // allowed/denied/required_parameters, checked before any handler.
        if matches!(req.op, Operation::Read | Operation::Update)
            && !acl.parameters_allowed(&acl_path, &req.data)
        {
            return Err(ApiError::permission_denied());
        }
    }
    // A limited-use token is spent by compare-and-swap before the handler
    // runs: concurrent requests get exactly the uses it has left.
    if !crate::auth::token::spend_use(barrier, &entry).await? {
        return Err(ApiError::invalid_token());
    }
    Ok((entry, acl))
}

/// Whether a path is served by the server itself rather than by a mount.
fn is_system_path(p: &str) -> bool {
    p == "sys" || p.starts_with("sys/") || p.starts_with("auth/")
}

/// What dispatch looked up for routing: the mount table (for a path outside
/// sys/ and auth/) and the enabled auth method with the rest of the path (for
/// an auth/ path other than auth/token/).
struct Lookups<'a> {
    table: Option<&'a crate::mounts::MountTable>,
    method: Option<&'a (crate::auth::methods::AuthMount, String)>,
}

/// Route an authenticated, authorised request.
async fn route(
    state: &AppState,
    barrier: &std::sync::Arc<crate::seal::Barrier>,
    found: Lookups<'_>,
    req: &Request,
    entry: &crate::auth::token::TokenEntry,
    token: &str,
    acl: &crate::auth::policy::Acl,
) -> Result<Reply, ApiError> {
    match req.path.as_str() {
        "sys/seal" => sys::seal::seal(state, req).await,
        "sys/rotate" => sys::rotate::rotate(barrier, req).await,
        "sys/key-status" => sys::rotate::key_status(barrier, req).await,
        p if p == "sys/audit" || p.starts_with("sys/audit/") => {
            sys::audit::handle(state, barrier, req).await
        }
        p if p.starts_with("sys/audit-hash/") => sys::audit::hash(barrier, req).await,
        "sys/capabilities-self" => sys::policy::capabilities_self(acl, req).await,
        p if p == "sys/mounts" || p.starts_with("sys/mounts/") => {
            sys::mounts::handle(state, barrier, req).await
        }
        p if p == "sys/auth" || p.starts_with("sys/auth/") => {
            sys::auth::handle(state, barrier, req).await
        }
        p if p == "sys/policy"
            || p.starts_with("sys/policy/")
            || p == "sys/policies/acl"
            || p.starts_with("sys/policies/acl/") =>
        {
            sys::policy::handle(state, barrier, req).await
        }
        p if p.starts_with("auth/token/") => {
            auth_token::handle(barrier, req, entry, token, acl).await
        }
        p if p.starts_with("auth/") => match found.method {
            Some((m, rest)) => auth_method::handle(barrier, m, rest, req).await,
            None => Err(ApiError::unsupported_path(p)),
        },
        p => match found.table.and_then(|t| t.route(p)) {
            Some((m, rest)) => mount(state, barrier, m, rest, req).await,
            None => Err(ApiError::unsupported_path(p)),
        },
    }
}

/// A request routed to a mounted engine (only `pki` exists).
async fn mount(
    state: &AppState,
    barrier: &std::sync::Arc<crate::seal::Barrier>,
    m: &crate::mounts::MountEntry,
    rest: &str,
    req: &Request,
) -> Result<Reply, ApiError> {
    let cache = state.cache.engines.state(&m.uuid, state.seal.generation());
    let engine = crate::engine::Engine::new(barrier.as_ref(), m, cache);
    pki::handle(&engine, rest, req).await
}
