//! `sys/init`: GET reports whether the server is initialised; PUT/POST initialises
//! it and returns the shares and the root token, once.

use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::seal::InitRequest;
use crate::state::AppState;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

/// Handle `sys/init`.
pub async fn handle(state: &AppState, req: &Request) -> Result<Reply, ApiError> {
    match req.op {
        Operation::Read => {
            let st = state.seal.status().await?;
            Ok(Reply::Plain(
                StatusCode::OK,
                json!({ "initialized": st.initialized }),
            ))
        }
        Operation::Update => {
            if params::list(&req.data, "pgp_keys")?.is_some_and(|k| !k.is_empty())
                || params::string(&req.data, "root_token_pgp_key")?.is_some_and(|k| !k.is_empty())
                || params::list(&req.data, "recovery_pgp_keys")?.is_some_and(|k| !k.is_empty())
            {
                return Err(ApiError::bad_request(
                    "PGP-encrypted shares are not supported by this server",
                ));
            }
            let r = InitRequest {
                secret_shares: params::count(&req.data, "secret_shares")?,
                secret_threshold: params::count(&req.data, "secret_threshold")?,
                recovery_shares: params::count(&req.data, "recovery_shares")?,
                recovery_threshold: params::count(&req.data, "recovery_threshold")?,
            };
            let out = state.seal.init(r, &state.settings.cluster_name).await?;
            tracing::info!("server initialised");
            let hexes = |v: &[zeroize::Zeroizing<Vec<u8>>]| {
                v.iter().map(|k| hex::encode(&k[..])).collect::<Vec<_>>()
            };
            let b64s = |v: &[zeroize::Zeroizing<Vec<u8>>]| {
                v.iter().map(|k| B64.encode(&k[..])).collect::<Vec<_>>()
            };
            let mut body = json!({
                "keys": hexes(&out.keys),
                "keys_base64": b64s(&out.keys),
                "root_token": out.root_token.as_str(),
            });
            if !out.recovery_keys.is_empty() {
                body["recovery_keys"] = json!(hexes(&out.recovery_keys));
                body["recovery_keys_base64"] = json!(b64s(&out.recovery_keys));
            }
            Ok(Reply::Plain(StatusCode::OK, body))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}
