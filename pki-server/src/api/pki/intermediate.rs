//! `intermediate/generate/:type` and `intermediate/set-signed`: so an offline
//! root can sign this mount's CA.

use super::root::{ca_key_type, ca_request};
use super::update_only;
use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::Request;
use crate::api::response::Reply;
use crate::engine::Engine;
use crate::pki::issuer::AIA_WARNING;
use crate::pki::{Issuer, PrivateKey, generate_intermediate_csr};
use serde_json::{Map, Value, json};

/// `POST intermediate/generate/:type`: a CSR; the key stays here until set-signed.
pub async fn generate(engine: &Engine<'_>, kind: &str, req: &Request) -> Result<Reply, ApiError> {
    update_only(req)?;
    let ca = ca_request(req, kind == "generate/exported")?;
    if ca.common_name.is_empty() {
        return Err(ApiError::bad_request("the common_name field is required"));
    }
    let kt = ca_key_type(req)?;
    let key = tokio::task::spawn_blocking(move || PrivateKey::generate(kt))
        .await
        .map_err(ApiError::internal)??;
    let out = generate_intermediate_csr(&ca, &key)?;
    engine.set_pending_key(&key).await?;
    let mut warnings = Vec::new();
    if engine.urls().await?.is_empty() {
        warnings.push(format!("{AIA_WARNING} Since this certificate is an intermediate, it might be useful to regenerate this certificate after fixing this problem for the root mount."));
    }
    let mut d = Map::new();
    d.insert("csr".into(), json!(out.csr));
    d.insert("key_id".into(), json!(uuid::Uuid::new_v4().to_string()));
    if let Some(k) = &out.private_key {
        d.insert("private_key".into(), json!(k.as_str()));
        d.insert("private_key_type".into(), json!(out.private_key_type));
    }
    Ok(Reply::data_with_warnings(d, warnings))
}

/// `POST intermediate/set-signed`: install the signed certificate (with its chain).
pub async fn set_signed(engine: &Engine<'_>, req: &Request) -> Result<Reply, ApiError> {
    update_only(req)?;
    let bundle = params::string(&req.data, "certificate")?
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("no certificate provided in the \"certificate\" parameter")
        })?;
    let key = engine.pending_key().await?.ok_or_else(|| {
        ApiError::bad_request("no pending intermediate key: call intermediate/generate first")
    })?;
    let issuer = Issuer::set_signed(key, bundle)?;
    let serial = issuer.serial_number().colon_hex();
    engine.set_issuer(issuer).await?;
    engine.clear_pending_key().await?;
    let issuer_id = uuid::Uuid::new_v4().to_string();
    let mut d = Map::new();
    d.insert("imported_issuers".into(), json!([issuer_id.clone()]));
    // Vault sends its empty (nil) lists as null: the key was generated here,
    // not imported, and nothing existed before.
    d.insert("imported_keys".into(), Value::Null);
    d.insert("existing_issuers".into(), Value::Null);
    d.insert("existing_keys".into(), Value::Null);
    d.insert("mapping".into(), json!({ issuer_id: "" }));
    let mut warnings = Vec::new();
    if engine.urls().await?.is_empty() {
        warnings.push(AIA_WARNING.to_string());
    }
    tracing::info!(%serial, "intermediate CA installed");
    Ok(Reply::data_with_warnings(d, warnings))
}
