//! Why a CA operation failed.
//!
//! [`PkiError`] splits user-caused failures (the HTTP layer answers 400 with the
//! `Display` text) from internal ones (500, detail logged). The user-facing texts
//! are Vault's own, verbatim, because clients and operators match on them; each
//! role refusal carries the rejected value in its fields even where Vault's text
//! does not print it (URI SANs).

use std::fmt;
use time::OffsetDateTime;

/// Which rule a refused name was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// The subject common name.
    CommonName,
    /// A DNS subject alternative name.
    AltName,
    /// An email subject alternative name.
    Email,
    /// IP SANs on a role with `allow_ip_sans=false`.
    IpSan(SanSource),
    /// URI SANs on a role with no `allowed_uri_sans`.
    UriSanNotAllowed(SanSource),
    /// A URI SAN that matches none of the role's `allowed_uri_sans`.
    UriSan(SanSource),
}

/// Where SANs came from: Vault words its IP/URI refusals differently for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanSource {
    /// Request parameters (`alt_names`, `ip_sans`, `uri_sans`).
    Api,
    /// The CSR's extension request (`use_csr_sans=true`).
    Csr,
}

impl SanSource {
    fn via(self) -> &'static str {
        match self {
            SanSource::Api => "via the API",
            SanSource::Csr => "via CSR",
        }
    }
}

/// A failed CA operation. Variants up to [`PkiError::Crypto`] are user-caused.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A name the role does not allow. For [`NameKind::IpSan`] from the API,
    /// `name` is the requested list in Go's `[a b]` form, as Vault prints it.
    #[error("{}", name_message(*kind, name))]
    NameNotAllowed {
        /// The rule that refused it.
        kind: NameKind,
        /// The rejected value.
        name: String,
    },
    /// No common name where the role requires one.
    #[error(
        "the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false"
    )]
    CommonNameRequired,
    /// The leaf would outlive its issuer (`leaf_not_after_behavior=err`).
    #[error(
        "cannot satisfy request, as TTL would result in notAfter of {} that is beyond the expiration of the CA certificate at {}",
        rfc3339_nano(*not_after),
        rfc3339_nano(*ca_not_after)
    )]
    TtlPastCaExpiry {
        /// The requested notAfter.
        not_after: OffsetDateTime,
        /// The issuer's notAfter.
        ca_not_after: OffsetDateTime,
    },
    /// Both `ttl` and `not_after`.
    #[error(
        "Either ttl or not_after should be provided. Both should not be provided in the same request."
    )]
    TtlAndNotAfter,
    /// A CSR that does not parse or whose signature does not verify.
    #[error("{0}")]
    InvalidCsr(String),
    /// A CSR key of a type the role refuses (`role requires keys of type rsa`).
    #[error("role requires keys of type {0}")]
    KeyTypeNotAllowed(String),
    /// A CSR key smaller than the role's `key_bits`.
    #[error("role requires a minimum of a {required}-bit key, but CSR's key is {actual} bits")]
    KeyTooSmall {
        /// The role's key_bits.
        required: u32,
        /// The CSR key's size.
        actual: u32,
    },
    /// `issue` on a role with `key_type=any` and no key_type in the request.
    #[error(
        "role key type \"any\" not allowed for issuing certificates without providing key_type and/or key_bits request parameters"
    )]
    AnyKeyTypeForIssue,
    /// An `ip_sans` entry that is not an IP address.
    #[error("the value {0:?} is not a valid IP address")]
    InvalidIp(String),
    /// A `uri_sans` entry that is not a URI.
    #[error("the provided URI Subject Alternative Name {0:?} is not a valid URI")]
    InvalidUri(String),
    /// A `format` other than pem, der, pem_bundle.
    #[error("the \"format\" path parameter must be \"pem\", \"der\", or \"pem_bundle\"")]
    BadFormat,
    /// A duration that does not parse.
    #[error("{0}")]
    InvalidDuration(String),
    /// A serial number that does not parse.
    #[error("invalid serial number {0:?}")]
    InvalidSerial(String),
    /// A certificate whose public key is not the one we hold.
    #[error("the certificate's public key does not match the pending private key")]
    KeyMismatch,
    /// Any other bad request parameter; the text names the parameter.
    #[error("{0}")]
    BadParameter(String),
    /// A cryptographic operation failed (internal).
    #[error("crypto error: {0}")]
    Crypto(String),
    /// Encoding or decoding of our own data failed (internal).
    #[error("encoding error: {0}")]
    Encoding(String),
}

impl PkiError {
    /// Whether the caller caused the error (HTTP 400) rather than the server (500).
    pub fn is_user_error(&self) -> bool {
        !matches!(self, PkiError::Crypto(_) | PkiError::Encoding(_))
    }

    /// A [`PkiError::BadParameter`].
    pub fn bad(msg: impl Into<String>) -> Self {
        PkiError::BadParameter(msg.into())
    }

    pub(crate) fn crypto(e: impl fmt::Display) -> Self {
        PkiError::Crypto(e.to_string())
    }

    pub(crate) fn encoding(e: impl fmt::Display) -> Self {
        PkiError::Encoding(e.to_string())
    }
}

/// Result of CA operations.
pub type Result<T> = std::result::Result<T, PkiError>;

fn name_message(kind: NameKind, name: &str) -> String {
    match kind {
        NameKind::CommonName => format!("common name {name} not allowed by this role"),
        NameKind::AltName => format!("subject alternate name {name} not allowed by this role"),
        NameKind::Email => format!("email address {name} not allowed by this role"),
        NameKind::IpSan(SanSource::Api) => format!(
            "IP Subject Alternative Names are not allowed in this role, but was provided {name}"
        ),
        NameKind::IpSan(SanSource::Csr) => {
            "IP Subject Alternative Names are not allowed in this role, but was provided some via CSR"
                .to_string()
        }
        NameKind::UriSanNotAllowed(src) => format!(
            "URI Subject Alternative Names are not allowed in this role, but were provided {}",
            src.via()
        ),
        NameKind::UriSan(src) => format!(
            "URI Subject Alternative Names were provided {} which are not valid for this role",
            src.via()
        ),
    }
}

/// Go's `time.RFC3339Nano` in UTC: fractional seconds without trailing zeros.
pub(crate) fn rfc3339_nano(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: PkiError, expected: &str) {
        assert_eq!(e.to_string(), expected);
    }

    #[test]
    fn messages_are_vaults() {
        check(
            PkiError::NameNotAllowed {
                kind: NameKind::CommonName,
                name: "evil.com".into(),
            },
            "common name evil.com not allowed by this role",
        );
        check(
            PkiError::NameNotAllowed {
                kind: NameKind::AltName,
                name: "x.evil.com".into(),
            },
            "subject alternate name x.evil.com not allowed by this role",
        );
        check(
            PkiError::NameNotAllowed {
                kind: NameKind::Email,
                name: "a@evil.com".into(),
            },
            "email address a@evil.com not allowed by this role",
        );
        check(
            PkiError::NameNotAllowed {
                kind: NameKind::IpSan(SanSource::Api),
                name: "[10.0.0.1]".into(),
            },
            "IP Subject Alternative Names are not allowed in this role, but was provided [10.0.0.1]",
        );
        check(
            PkiError::NameNotAllowed {
                kind: NameKind::IpSan(SanSource::Csr),
                name: "10.0.0.1".into(),
            },
            "IP Subject Alternative Names are not allowed in this role, but was provided some via CSR",
        );
        check(
            PkiError::NameNotAllowed {
                kind: NameKind::UriSanNotAllowed(SanSource::Api),
                name: "spiffe://x".into(),
            },
            "URI Subject Alternative Names are not allowed in this role, but were provided via the API",
        );
        check(
            PkiError::NameNotAllowed {
                kind: NameKind::UriSan(SanSource::Csr),
                name: "spiffe://x".into(),
            },
            "URI Subject Alternative Names were provided via CSR which are not valid for this role",
        );
        check(
            PkiError::InvalidIp("1.2.3".into()),
            "the value \"1.2.3\" is not a valid IP address",
        );
        let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
        check(
            PkiError::TtlPastCaExpiry {
                not_after: at(1_700_000_000),
                ca_not_after: at(1_600_000_000),
            },
            "cannot satisfy request, as TTL would result in notAfter of 2023-11-14T22:13:20Z that is beyond the expiration of the CA certificate at 2020-09-13T12:26:40Z",
        );
        assert!(!PkiError::Crypto("x".into()).is_user_error());
        assert!(PkiError::CommonNameRequired.is_user_error());
    }

    #[test]
    fn rfc3339_nano_trims_zeros() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_500_000_000).unwrap();
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.5Z");
    }
}
