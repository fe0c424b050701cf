//! Revocation: CRL building. Which serials are revoked, and when, is the
//! storage layer's knowledge (`revoked/<serial>`); this module only turns that
//! list into a signed X.509 v2 CRL with CRL Number and AKI, as Vault does on
//! every revocation and on `crl/rotate`.

use super::error::{PkiError, Result};
use super::issuer::Issuer;
use super::keys::Format;
use super::serial::SerialNumber;
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams};
use std::time::Duration;
use time::OffsetDateTime;

/// Vault's default CRL lifetime (`config/crl` `expiry`): 72 hours.
pub const DEFAULT_CRL_EXPIRY: Duration = Duration::from_secs(72 * 3600);

/// A revoked certificate as the CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCert {
    /// Its serial.
    pub serial: SerialNumber,
    /// When it was revoked.
    pub revocation_time: OffsetDateTime,
}

/// A signed CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    /// DER (`crl`, `application/pkix-crl`).
    pub der: Vec<u8>,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// The CRL number.
    pub number: u64,
}

impl Crl {
    /// PEM (`X509 CRL`), no trailing newline: `crl/pem`, `cert/crl`.
    pub fn pem(&self) -> String {
        Format::Pem.encode("X509 CRL", &self.der)
    }
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Build and sign `issuer`'s complete CRL. An empty `revoked` gives a valid
/// empty CRL (Vault's `config/crl disable=true` answer). `crl_number` must grow
/// with every CRL the issuer publishes; the caller keeps the counter.
pub fn build_crl(
    issuer: &Issuer,
    revoked: &[RevokedCert],
    crl_number: u64,
    now: OffsetDateTime,
    next_update_after: Duration,
) -> Result<Crl> {
    let this_update = whole_seconds(now);
    let next = time::Duration::try_from(next_update_after)
        .ok()
        .filter(|d| d.is_positive())
        .ok_or_else(|| PkiError::bad("CRL expiry must be positive"))?;
    let next_update = this_update
        .checked_add(next)
        .ok_or_else(|| PkiError::bad("CRL expiry is too large"))?;
    let key_identifier_method = match issuer.subject_key_id() {
        Some(id) => KeyIdMethod::PreSpecified(id.to_vec()),
        None => KeyIdMethod::Sha256,
    };
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: rcgen::SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|r| RevokedCertParams {
                serial_number: r.serial.to_rcgen(),
                revocation_time: whole_seconds(r.revocation_time),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method,
    };
    let signer = issuer.signer(0)?;
    let crl = params.signed_by(&signer).map_err(PkiError::crypto)?;
    Ok(Crl {
        der: crl.der().to_vec(),
        this_update,
        next_update,
        number: crl_number,
    })
}

#[cfg(test)]
mod tests;
