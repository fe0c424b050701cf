//! Unauthenticated fetches (`ca`, `ca/pem`, `ca_chain`, `crl`, `crl/pem`,
//! `cert/:serial`, `cert/ca`, `cert/ca_chain`, `cert/crl`, raw forms) and the
//! `LIST certs` / `LIST certs/revoked` listings.

use super::CLOCK;
use crate::api::error::ApiError;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::engine::Engine;
use crate::pki::{Clock, Format, SerialNumber};
use serde_json::{Map, json};

fn pem(label: &str, der: &[u8]) -> String {
    Format::Pem.encode(label, der)
}

/// The GET fetch paths.
pub async fn handle(engine: &Engine<'_>, rest: &str, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::Read {
        return Err(ApiError::unsupported_operation());
    }
    let issuer = engine.issuer().await?;
    let chain_pem = || -> String {
        issuer
            .as_ref()
            .map(|i| {
                std::iter::once(i.certificate_pem().trim_end().to_string())
                    .chain(i.parents().iter().map(|p| p.encode(Format::Pem)))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    Ok(match rest {
        "ca" => Reply::Raw {
            content_type: "application/pkix-cert",
            body: issuer
                .as_ref()
                .map(|i| i.certificate_der().to_vec())
                .unwrap_or_default(),
        },
        "ca/pem" => Reply::Raw {
            content_type: "application/pem-certificate-chain",
            body: issuer
                .as_ref()
                .map(|i| i.certificate_pem().trim_end().as_bytes().to_vec())
                .unwrap_or_default(),
        },
        "ca_chain" => Reply::Raw {
            content_type: "application/pkix-cert",
            body: chain_pem().into_bytes(),
        },
        "crl" => Reply::Raw {
            content_type: "application/pkix-crl",
            body: engine.crl_der(CLOCK.now()).await?.unwrap_or_default(),
        },
        "crl/pem" => Reply::Raw {
            content_type: "application/x-pem-file",
            body: engine
                .crl_der(CLOCK.now())
                .await?
                .map(|d| pem("X509 CRL", &d).into_bytes())
                .unwrap_or_default(),
        },
        "cert/ca" | "cert/ca_chain" => {
            let i = issuer.as_ref().ok_or_else(ApiError::not_found)?;
            let mut d = Map::new();
            d.insert("certificate".into(), json!(i.certificate_pem().trim_end()));
            d.insert("ca_chain".into(), json!(chain_pem()));
            d.insert("revocation_time".into(), json!(0));
            d.insert("revocation_time_rfc3339".into(), json!(""));
            Reply::data(d)
        }
        "cert/crl" => {
            let der = engine
                .crl_der(CLOCK.now())
                .await?
                .ok_or_else(ApiError::not_found)?;
            let mut d = Map::new();
            d.insert("certificate".into(), json!(pem("X509 CRL", &der)));
            d.insert("revocation_time".into(), json!(0));
            d.insert("revocation_time_rfc3339".into(), json!(""));
            Reply::data(d)
        }
        other => {
            let rest = other
                .strip_prefix("cert/")
                .ok_or_else(|| ApiError::unsupported_path(other))?;
            let (serial, raw) = match rest.split_once('/') {
                None => (rest, None),
                Some((s, "raw")) => (s, Some(false)),
                Some((s, "raw/pem")) => (s, Some(true)),
                Some(_) => return Err(ApiError::unsupported_path(other)),
            };
            let serial = SerialNumber::parse(serial).map_err(|_| ApiError::not_found())?;
            let der = engine
                .cert(&serial)
                .await?
                .ok_or_else(ApiError::not_found)?;
            match raw {
                Some(false) => Reply::Raw {
                    content_type: "application/pkix-cert",
                    body: der,
                },
                Some(true) => Reply::Raw {
                    content_type: "application/pem-certificate-chain",
                    body: pem("CERTIFICATE", &der).into_bytes(),
                },
                None => {
                    let rev = engine.revocation(&serial).await?;
                    let mut d = Map::new();
                    d.insert("certificate".into(), json!(pem("CERTIFICATE", &der)));
                    d.insert("ca_chain".into(), json!(chain_pem()));
                    let t = rev.as_ref().map(|r| r.revocation_time).unwrap_or(0);
                    d.insert("revocation_time".into(), json!(t));
                    let rfc = match rev {
                        Some(r) => time::OffsetDateTime::from_unix_timestamp(r.revocation_time)
                            .ok()
                            .and_then(|t| {
                                t.format(&time::format_description::well_known::Rfc3339)
                                    .ok()
                            })
                            .unwrap_or_default(),
                        None => String::new(),
                    };
                    d.insert("revocation_time_rfc3339".into(), json!(rfc));
                    Reply::data(d)
                }
            }
        }
    })
}

fn keys_reply(keys: Vec<String>) -> Result<Reply, ApiError> {
    if keys.is_empty() {
        return Err(ApiError::not_found());
    }
    let mut d = Map::new();
    d.insert("keys".into(), json!(keys));
    Ok(Reply::data(d))
}

/// `LIST certs`.
pub async fn list_certs(engine: &Engine<'_>, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::List {
        return Err(ApiError::unsupported_operation());
    }
    keys_reply(engine.list_certs().await?)
}

/// `LIST certs/revoked`.
pub async fn list_revoked(engine: &Engine<'_>, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::List {
        return Err(ApiError::unsupported_operation());
    }
    keys_reply(engine.list_revoked().await?)
}
