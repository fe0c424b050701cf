//! PKI mounts: routes `/v1/<mount>/...` to one handler per Vault path family
//! (mirroring Vault's `path_*.go`). Handlers parse, call [`crate::engine`] and
//! the CA core, and shape Vault's answers.

pub mod config;
pub mod fetch;
pub mod intermediate;
pub mod issue_sign;
pub mod revoke;
pub mod roles;
pub mod root;
pub mod tidy;

use super::error::ApiError;
use super::params;
use super::request::{Operation, Request};
use super::response::Reply;
use crate::engine::Engine;
use crate::pki::{Format, IssueRequest, PrivateKeyFormat, SystemClock};
use serde_json::{Map, Value, json};

/// Paths under a PKI mount that need no token (Vault's unauthenticated set).
pub fn is_unauthenticated(rest: &str, op: Operation) -> bool {
    op == Operation::Read
        && (matches!(
            rest,
            "ca" | "ca/pem"
                | "ca_chain"
                | "crl"
                | "crl/pem"
                | "cert/ca"
                | "cert/ca_chain"
                | "cert/crl"
        ) || (rest.starts_with("cert/") && !rest.contains("..")))
}

/// The clock the API uses (the core takes it injected).
pub static CLOCK: SystemClock = SystemClock;

/// Dispatch a request whose path routed to a PKI mount; `rest` is the path
/// below the mount.
pub async fn handle(engine: &Engine<'_>, rest: &str, req: &Request) -> Result<Reply, ApiError> {
    let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
    match (head, tail) {
        ("root", "generate/internal" | "generate/exported" | "generate/existing") => {
            root::generate(engine, tail, req).await
        }
        ("root", "sign-intermediate") => root::sign_intermediate(engine, req).await,
        ("root", "") => root::delete(engine, req).await,
        ("intermediate", "generate/internal" | "generate/exported") => {
            intermediate::generate(engine, tail, req).await
        }
        ("intermediate", "set-signed") => intermediate::set_signed(engine, req).await,
        ("config", "urls") => config::urls(engine, req).await,
        ("config", "crl") => config::crl(engine, req).await,
        ("roles", "") => roles::list(engine, req).await,
        ("roles", name) if !name.contains('/') => roles::handle(engine, name, req).await,
        ("issue", role) if !role.is_empty() && !role.contains('/') => {
            issue_sign::issue(engine, role, req).await
        }
        ("sign", role) if !role.is_empty() && !role.contains('/') => {
            issue_sign::sign(engine, role, req).await
        }
        ("sign-verbatim", role) if !role.contains('/') => {
            issue_sign::sign_verbatim(engine, role, req).await
        }
        ("revoke", "") => revoke::revoke(engine, req).await,
        ("crl", "rotate") => revoke::rotate(engine, req).await,
        ("ca" | "ca_chain" | "crl", _) | ("cert", _) => fetch::handle(engine, rest, req).await,
        ("certs", "") => fetch::list_certs(engine, req).await,
        ("certs", "revoked") => fetch::list_revoked(engine, req).await,
        ("tidy", "") => tidy::tidy(engine, req).await,
        _ => Err(ApiError::unsupported_path(rest)),
    }
}

/// The mount context the CA core takes: the mount's TTLs, its URLs, the clock.
pub fn context<'a>(
    engine: &Engine<'_>,
    urls: &'a crate::pki::UrlsConfig,
) -> crate::pki::MountContext<'a> {
    crate::pki::MountContext {
        ttl: engine.ttl,
        urls,
        clock: &CLOCK,
    }
}

/// The request's `csr`, parsed and signature-checked.
pub fn csr(req: &Request) -> Result<crate::pki::ParsedCsr, ApiError> {
    let pem = params::string(&req.data, "csr")?
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("\"csr\" is empty"))?;
    Ok(crate::pki::ParsedCsr::from_pem(pem)?)
}

/// Require a write.
pub fn update_only(req: &Request) -> Result<(), ApiError> {
    if req.op == Operation::Update {
        Ok(())
    } else {
        Err(ApiError::unsupported_operation())
    }
}

/// `format`, default pem.
pub fn format(req: &Request) -> Result<Format, ApiError> {
    Ok(match params::string(&req.data, "format")? {
        None | Some("") => Format::Pem,
        Some(f) => Format::parse(f)?,
    })
}

/// `private_key_format`, default der.
pub fn private_key_format(req: &Request) -> Result<PrivateKeyFormat, ApiError> {
    Ok(match params::string(&req.data, "private_key_format")? {
        None | Some("") => PrivateKeyFormat::Der,
        Some(f) => PrivateKeyFormat::parse(f)?,
    })
}

/// A list parameter or empty.
pub fn list_or_empty(req: &Request, key: &str) -> Result<Vec<String>, ApiError> {
    Ok(params::list(&req.data, key)?.unwrap_or_default())
}

/// `not_after` as RFC 3339.
pub fn not_after(req: &Request) -> Result<Option<time::OffsetDateTime>, ApiError> {
    match params::string(&req.data, "not_after")? {
        None | Some("") => Ok(None),
        Some(s) => Ok(Some(crate::pki::role::parse_rfc3339(s)?)),
    }
}

/// The request fields shared by issue and sign.
pub fn issue_request(req: &Request) -> Result<IssueRequest, ApiError> {
    Ok(IssueRequest {
        common_name: params::string(&req.data, "common_name")?
            .unwrap_or("")
            .to_string(),
        alt_names: list_or_empty(req, "alt_names")?,
        ip_sans: list_or_empty(req, "ip_sans")?,
        uri_sans: list_or_empty(req, "uri_sans")?,
        other_sans: list_or_empty(req, "other_sans")?,
        ttl: params::duration(&req.data, "ttl")?.filter(|d| !d.is_zero()),
        not_after: not_after(req)?,
        exclude_cn_from_sans: params::boolean(&req.data, "exclude_cn_from_sans")?.unwrap_or(false),
        format: format(req)?,
        private_key_format: private_key_format(req)?,
        remove_roots_from_chain: params::boolean(&req.data, "remove_roots_from_chain")?
            .unwrap_or(false),
        user_ids: list_or_empty(req, "user_ids")?,
        key_type: params::string(&req.data, "key_type")?.map(String::from),
        key_bits: params::int(&req.data, "key_bits")?.and_then(|b| u32::try_from(b).ok()),
        metadata: req.metadata.clone(),
    })
}

/// Vault's response fields for an issued certificate.
pub fn issued_data(i: &crate::pki::Issued) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("certificate".into(), json!(i.certificate));
    d.insert("issuing_ca".into(), json!(i.issuing_ca));
    if !i.ca_chain.is_empty() {
        d.insert("ca_chain".into(), json!(i.ca_chain));
    }
    d.insert("serial_number".into(), json!(i.serial_number.colon_hex()));
    // OpenBao sends notBefore next to expiration (Unix seconds).
    if let Ok((_, c)) = x509_parser::parse_x509_certificate(&i.der) {
        d.insert(
            "not_before".into(),
            json!(c.validity().not_before.timestamp()),
        );
    }
    d.insert("expiration".into(), json!(i.expiration));
    if let (Some(k), Some(t)) = (&i.private_key, i.private_key_type) {
        d.insert("private_key".into(), json!(k.as_str()));
        d.insert("private_key_type".into(), json!(t));
    }
    d
}
