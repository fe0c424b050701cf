//! `root/generate/:type`, `root/sign-intermediate`, `DELETE root`.

use super::{format, issued_data, list_or_empty, not_after, private_key_format, update_only};
use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::engine::Engine;
use crate::pki::{
    CaRequest, KeyType, PrivateKey, SerialNumber, SignIntermediateRequest, SubjectFields,
    generate_root, sign_intermediate as sign_ca,
};
use serde_json::json;

/// The parameters of root/intermediate generation and sign-intermediate.
pub fn ca_request(req: &Request, exported: bool) -> Result<CaRequest, ApiError> {
    let d = &req.data;
    let common_name = params::string(d, "common_name")?.unwrap_or("").to_string();
    let max_path_length = params::int(d, "max_path_length")?.unwrap_or(-1);
    Ok(CaRequest {
        common_name,
        alt_names: list_or_empty(req, "alt_names")?,
        ip_sans: list_or_empty(req, "ip_sans")?,
        uri_sans: list_or_empty(req, "uri_sans")?,
        other_sans: list_or_empty(req, "other_sans")?,
        ttl: params::duration(d, "ttl")?.filter(|t| !t.is_zero()),
        not_after: not_after(req)?,
        not_before_duration: params::duration(d, "not_before_duration")?
            .unwrap_or(std::time::Duration::from_secs(30)),
        signature_bits: params::int(d, "signature_bits")?
            .and_then(|b| u32::try_from(b).ok())
            .unwrap_or(0),
        max_path_length: i32::try_from(max_path_length)
            .map_err(|_| ApiError::bad_request("max_path_length is out of range"))?,
        exclude_cn_from_sans: params::boolean(d, "exclude_cn_from_sans")?.unwrap_or(false),
        permitted_dns_domains: list_or_empty(req, "permitted_dns_domains")?,
        subject: SubjectFields {
            organization: list_or_empty(req, "organization")?,
            ou: list_or_empty(req, "ou")?,
            country: list_or_empty(req, "country")?,
            locality: list_or_empty(req, "locality")?,
            province: list_or_empty(req, "province")?,
            street_address: list_or_empty(req, "street_address")?,
            postal_code: list_or_empty(req, "postal_code")?,
        },
        exported,
        format: format(req)?,
        private_key_format: private_key_format(req)?,
        add_basic_constraints: params::boolean(d, "add_basic_constraints")?.unwrap_or(false),
    })
}

/// The key type of a CA request (`key_type`, `key_bits`; Vault's default rsa 2048).
pub fn ca_key_type(req: &Request) -> Result<KeyType, ApiError> {
    let kt = params::string(&req.data, "key_type")?
        .filter(|s| !s.is_empty())
        .unwrap_or("rsa");
    let bits = params::int(&req.data, "key_bits")?.unwrap_or(0);
    let bits =
        u32::try_from(bits).map_err(|_| ApiError::bad_request("key_bits is out of range"))?;
    Ok(KeyType::from_vault(kt, bits)?)
}

/// `POST root/generate/:type` (internal, exported; existing reuses the mount's key).
pub async fn generate(engine: &Engine<'_>, kind: &str, req: &Request) -> Result<Reply, ApiError> {
    update_only(req)?;
    let exported = kind == "generate/exported";
    let ca = ca_request(req, exported)?;
    if ca.common_name.is_empty() {
        return Err(ApiError::bad_request("the common_name field is required"));
    }
    let key = if kind == "generate/existing" {
        match engine.issuer().await? {
            Some(i) => PrivateKey::from_pem(
                &i.key()
                    .encode(crate::pki::PrivateKeyFormat::Pkcs8, crate::pki::Format::Pem)?,
            )?,
            None => {
                return Err(ApiError::bad_request(
                    "no existing key to use: generate a root first",
                ));
            }
        }
    } else {
        let kt = ca_key_type(req)?;
        tokio::task::spawn_blocking(move || PrivateKey::generate(kt))
            .await
            .map_err(ApiError::internal)??
    };
    let urls = engine.urls().await?;
    let ctx = super::context(engine, &urls);
    let serial = SerialNumber::generate()?;
    let root = generate_root(&ctx, &ca, key, &serial)?;
    let mut data = issued_data(&root.issued);
    data.remove("ca_chain");
    let issuer_id = uuid::Uuid::new_v4().to_string();
    data.insert("issuer_id".into(), json!(issuer_id));
    data.insert("issuer_name".into(), json!(""));
    data.insert("key_id".into(), json!(uuid::Uuid::new_v4().to_string()));
    data.insert("key_name".into(), json!(""));
    let warnings = root.issued.warnings.clone();
    let der = root.issued.der.clone();
    engine.set_issuer(root.issuer).await?;
    // As Vault: the root is also stored under its serial, so `LIST certs` and
    // `cert/<serial>` find it. Serials are random 159-bit numbers; a taken one
    // would keep the stored certificate (create-if-absent).
    engine.store_cert(&serial, &der).await?;
    tracing::info!(serial = %serial.colon_hex(), "root CA generated");
    Ok(Reply::data_with_warnings(data, warnings))
}

/// `POST root/sign-intermediate`: sign a CA CSR with this mount's CA.
pub async fn sign_intermediate(engine: &Engine<'_>, req: &Request) -> Result<Reply, ApiError> {
    update_only(req)?;
    let csr = super::csr(req)?;
    let issuer = engine.require_issuer().await?;
    let urls = engine.urls().await?;
    let ctx = super::context(engine, &urls);
    let r = SignIntermediateRequest {
        ca: ca_request(req, false)?,
        use_csr_values: params::boolean(&req.data, "use_csr_values")?.unwrap_or(false),
    };
    let serial = SerialNumber::generate()?;
    let issued = sign_ca(&ctx, &issuer, &csr, &r, &serial)?;
    engine.store_cert(&serial, &issued.der).await?;
    let mut warnings = issued.warnings.clone();
    // As Vault: the signed CA carries no AIA URLs when config/urls is empty.
    if urls.is_empty() {
        warnings.push(crate::pki::issuer::AIA_WARNING.to_string());
    }
    Ok(Reply::data_with_warnings(issued_data(&issued), warnings))
}

/// `DELETE root`: remove the mount's CA and key.
pub async fn delete(engine: &Engine<'_>, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::Delete {
        return Err(ApiError::unsupported_operation());
    }
    engine.delete_issuer().await?;
    Ok(Reply::NoContent)
}
