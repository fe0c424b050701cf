//! `tidy`: remove expired certificates and revocation records.

use super::{CLOCK, update_only};
use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::Request;
use crate::api::response::Reply;
use crate::engine::Engine;
use crate::pki::Clock;
use axum::http::StatusCode;

/// `POST tidy`. Runs to completion before answering (stores here are small
/// enough); answers 202 with Vault's warning and `data: null`, as Vault does.
pub async fn tidy(engine: &Engine<'_>, req: &Request) -> Result<Reply, ApiError> {
    update_only(req)?;
    let cert_store = params::boolean(&req.data, "tidy_cert_store")?.unwrap_or(false);
    let revoked = params::boolean(&req.data, "tidy_revoked_certs")?.unwrap_or(false);
    let buffer = params::duration(&req.data, "safety_buffer")?
        .unwrap_or(std::time::Duration::from_secs(72 * 3600));
    // One warning, as Vault: either the start notice or "no targets".
    let warning = if !cert_store && !revoked {
        "No targets to tidy; specify tidy_cert_store=true or tidy_revoked_certs=true to start a tidy operation."
    } else {
        "Tidy operation successfully started. Any information from the operation will be printed to Vault's server logs."
    };
    if cert_store || revoked {
        let (c, r) = engine
            .tidy(cert_store, revoked, buffer, CLOCK.now())
            .await?;
        tracing::info!(
            cert_store_deleted_count = c,
            revoked_cert_deleted_count = r,
            "tidy finished"
        );
    }
    // Vault's tidy response has no data: `data` is null.
    Ok(Reply::Status(
        StatusCode::ACCEPTED,
        Box::new(Reply::Warnings(vec![warning.to_string()])),
    ))
}
