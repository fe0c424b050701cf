//! `revoke` and `crl/rotate`.

use super::{CLOCK, update_only};
use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::engine::Engine;
use crate::pki::{Clock, SerialNumber};
use serde_json::{Map, json};
use time::format_description::well_known::Rfc3339;

/// `POST revoke` with `serial_number` or `certificate`.
pub async fn revoke(engine: &Engine<'_>, req: &Request) -> Result<Reply, ApiError> {
    update_only(req)?;
    let serial = params::string(&req.data, "serial_number")?.filter(|s| !s.is_empty());
    let cert = params::string(&req.data, "certificate")?.filter(|s| !s.is_empty());
    let serial = match (serial, cert) {
        (None, None) => {
            return Err(ApiError::bad_request(
                "The serial number or certificate to revoke must be provided.",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Must provide either the certificate or the serial to revoke; not both.",
            ));
        }
        (Some(s), None) => SerialNumber::parse(s)?,
        (None, Some(pem)) => {
            let der = rustls_pki_der(pem).ok_or_else(|| {
                ApiError::bad_request("could not parse the certificate to revoke")
            })?;
            let (_, c) = x509_parser::parse_x509_certificate(&der)
                .map_err(|_| ApiError::bad_request("could not parse the certificate to revoke"))?;
            let serial = SerialNumber::from_bytes(c.raw_serial())?;
            // Only a certificate this mount issued (and stored) can be revoked by PEM.
            match engine.cert(&serial).await? {
                Some(stored) if stored == der => serial,
                _ => {
                    return Err(ApiError::bad_request(
                        "certificate was not issued by this mount",
                    ));
                }
            }
        }
    };
    let now = CLOCK.now();
    let (rec, warnings) = engine.revoke(&serial, now).await?;
    let Some(rec) = rec else {
        return Ok(Reply::data_with_warnings(Map::new(), warnings));
    };
    tracing::info!(serial = %serial.colon_hex(), "certificate revoked");
    let mut d = Map::new();
    d.insert("revocation_time".into(), json!(rec.revocation_time));
    let t = time::OffsetDateTime::from_unix_timestamp(rec.revocation_time)
        .map_err(ApiError::internal)?;
    d.insert(
        "revocation_time_rfc3339".into(),
        json!(t.format(&Rfc3339).map_err(ApiError::internal)?),
    );
    d.insert("state".into(), json!("revoked"));
    Ok(Reply::data_with_warnings(d, warnings))
}

fn rustls_pki_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}

/// `GET crl/rotate`: rebuild the CRL now.
pub async fn rotate(engine: &Engine<'_>, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::Read {
        return Err(ApiError::unsupported_operation());
    }
    engine.rotate_crl(CLOCK.now()).await?;
    let mut d = Map::new();
    d.insert("success".into(), json!(true));
    Ok(Reply::data(d))
}
