//! `issue/:role`, `sign/:role`, `sign-verbatim[/:role]`.
//!
//! The certificate is stored (unless the role says `no_store`) with a
//! create-if-absent put on its serial before it is returned, so a serial is
//! never handed out twice and a returned certificate is durable.

use super::{CLOCK, format, issue_request, issued_data, list_or_empty, not_after, update_only};
use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::Request;
use crate::api::response::Reply;
use crate::engine::Engine;
use crate::pki::{Issued, KeyType, MountContext, Role, SerialNumber, VerbatimRequest};
use std::sync::Arc;

async fn role(engine: &Engine<'_>, name: &str) -> Result<Arc<Role>, ApiError> {
    engine
        .role(name)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("unknown role: {name}")))
}

/// Sign with fresh serials until one is free (a collision is a 2^-159 event),
/// storing the result unless `no_store`.
async fn sign_and_store(
    engine: &Engine<'_>,
    no_store: bool,
    first_warnings: Vec<String>,
    mut f: impl FnMut(&SerialNumber) -> Result<Issued, ApiError>,
) -> Result<Reply, ApiError> {
    for _ in 0..3 {
        let serial = SerialNumber::generate()?;
        let issued = f(&serial)?;
        if no_store || engine.store_cert(&serial, &issued.der).await? {
            let mut warnings = first_warnings;
            warnings.extend(issued.warnings.iter().cloned());
            return Ok(Reply::data_with_warnings(issued_data(&issued), warnings));
        }
    }
    Err(ApiError::internal("could not find a free serial number"))
}

/// Vault's warnings for request fields a CSR-signing path ignores because the
/// role takes them from the CSR (`use_csr_common_name`, `use_csr_sans`).
fn ignored_field_warnings(
    req: &Request,
    use_csr_common_name: bool,
    use_csr_sans: bool,
) -> Result<Vec<String>, ApiError> {
    let mut w = Vec::new();
    if use_csr_common_name
        && params::string(&req.data, "common_name")?.is_some_and(|c| !c.is_empty())
    {
        w.push(
            "the common_name field was provided but the role is set with \"use_csr_common_name\" set to true"
                .to_string(),
        );
    }
    if use_csr_sans && !list_or_empty(req, "alt_names")?.is_empty() {
        w.push(
            "the alt_names field was provided but the role is set with \"use_csr_sans\" set to true"
                .to_string(),
        );
    }
    Ok(w)
}

/// Whether `issue` will generate an RSA key (or cannot tell: then it is
/// treated as one, and the issue call reports the error).
fn generates_rsa(role: &Role, ir: &crate::pki::IssueRequest) -> bool {
    !matches!(
        crate::pki::issue::issue_key_type(role, ir),
        Ok((KeyType::Ec(_) | KeyType::Ed25519, _))
    )
}

/// `POST issue/:role`: a key pair and certificate made here.
pub async fn issue(engine: &Engine<'_>, name: &str, req: &Request) -> Result<Reply, ApiError> {
    update_only(req)?;
    let role = role(engine, name).await?;
    let ir = issue_request(req)?;
    let issuer = engine.require_issuer().await?;
    let urls = engine.urls().await?;
    let ttl = engine.ttl;
    let rsa = generates_rsa(&role, &ir);
    for _ in 0..3 {
        let serial = SerialNumber::generate()?;
        let (issuer, urls, r, ir, s) = (
            issuer.clone(),
            urls.clone(),
            role.clone(),
            ir.clone(),
            serial.clone(),
        );
        let work = move || {
            let ctx = MountContext {
                ttl,
                urls: &urls,
                clock: &CLOCK,
            };
            crate::pki::issue(&ctx, &issuer, &r, &ir, &s)
        };
        // RSA key generation takes tens to hundreds of milliseconds of CPU: keep
        // it off the async workers. A whole EC or Ed25519 issue is ~0.1 ms, about
        // what the hop to the blocking pool and back costs, so it runs inline.
        let issued = if rsa {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(ApiError::internal)??
        } else {
            work()?
        };
        if role.no_store || engine.store_cert(&serial, &issued.der).await? {
            let warnings = issued.warnings.clone();
            return Ok(Reply::data_with_warnings(issued_data(&issued), warnings));
        }
    }
    Err(ApiError::internal("could not find a free serial number"))
}

/// `POST sign/:role`: sign the requester's CSR; the key never leaves it.
pub async fn sign(engine: &Engine<'_>, name: &str, req: &Request) -> Result<Reply, ApiError> {
    update_only(req)?;
    let role = role(engine, name).await?;
    let csr = super::csr(req)?;
    let ir = issue_request(req)?;
    let issuer = engine.require_issuer().await?;
    let urls = engine.urls().await?;
    let ctx = super::context(engine, &urls);
    let warnings = ignored_field_warnings(req, role.use_csr_common_name, role.use_csr_sans)?;
    sign_and_store(engine, role.no_store, warnings, |serial| {
        Ok(crate::pki::sign(&ctx, &issuer, &role, &csr, &ir, serial)?)
    })
    .await
}

/// `POST sign-verbatim[/:role]`: subject and SANs from the CSR, unchecked.
pub async fn sign_verbatim(
    engine: &Engine<'_>,
    name: &str,
    req: &Request,
) -> Result<Reply, ApiError> {
    update_only(req)?;
    let role = if name.is_empty() {
        None
    } else {
        Some(role(engine, name).await?)
    };
    let csr = super::csr(req)?;
    let d = &req.data;
    let mut vr = VerbatimRequest {
        ext_key_usage: list_or_empty(req, "ext_key_usage")?,
        ext_key_usage_oids: list_or_empty(req, "ext_key_usage_oids")?,
        ttl: params::duration(d, "ttl")?.filter(|t| !t.is_zero()),
        not_after: not_after(req)?,
        format: format(req)?,
        signature_bits: params::int(d, "signature_bits")?
            .and_then(|b| u32::try_from(b).ok())
            .unwrap_or(0),
        remove_roots_from_chain: params::boolean(d, "remove_roots_from_chain")?.unwrap_or(false),
        basic_constraints_valid_for_non_ca: params::boolean(
            d,
            "basic_constraints_valid_for_non_ca",
        )?
        .unwrap_or(false),
        ..VerbatimRequest::default()
    };
    if let Some(ku) = params::list(d, "key_usage")? {
        vr.key_usage = ku;
    }
    let issuer = engine.require_issuer().await?;
    let urls = engine.urls().await?;
    let ctx = super::context(engine, &urls);
    let no_store = role.as_ref().is_some_and(|r| r.no_store);
    // Vault signs verbatim with a role that takes the subject and SANs from
    // the CSR, so it warns about both fields the same way.
    let warnings = ignored_field_warnings(req, true, true)?;
    sign_and_store(engine, no_store, warnings, |serial| {
        Ok(crate::pki::sign_verbatim(
            &ctx,
            &issuer,
            role.as_deref(),
            &csr,
            &vr,
            serial,
        )?)
    })
    .await
}
