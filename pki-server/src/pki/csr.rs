//! Certificate signing requests: parsed, signature-verified, or nothing.
//!
//! [`ParsedCsr`] is built only from a CSR whose self-signature verifies
//! (x509-parser with ring). It exposes the subject CN, the SANs of the
//! extension request and the public key; it never exposes the requested key
//! usages, EKUs or basic constraints: the CA decides those (a CSR asking for
//! `CA:TRUE` gets a leaf anyway).

use super::error::{PkiError, Result};
use super::keys::KeyType;
use super::pem;
use std::net::IpAddr;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// The public key algorithm of a CSR, as Vault reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsrKey {
    /// `rsa`, `ec` or `ed25519`.
    pub key_type: &'static str,
    /// Modulus or curve size in bits (0 for Ed25519).
    pub bits: u32,
}

impl CsrKey {
    /// The matching [`KeyType`], if we support it.
    pub fn key_type(&self) -> Option<KeyType> {
        KeyType::from_vault(self.key_type, self.bits).ok()
    }
}

/// A CSR whose signature verified.
#[derive(Debug, Clone)]
pub struct ParsedCsr {
    der: Vec<u8>,
    common_name: Option<String>,
    subject: Vec<(Vec<u64>, String)>,
    dns_names: Vec<String>,
    emails: Vec<String>,
    ip_sans: Vec<IpAddr>,
    uri_sans: Vec<String>,
    other_sans: usize,
    spki: Vec<u8>,
    key: CsrKey,
}

fn invalid(msg: impl std::fmt::Display) -> PkiError {
    PkiError::InvalidCsr(format!("certificate request could not be parsed: {msg}"))
}

impl ParsedCsr {
    /// Parse a PEM `CERTIFICATE REQUEST` (or `NEW CERTIFICATE REQUEST`).
    pub fn from_pem(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Err(PkiError::bad("\"csr\" is empty"));
        }
        let blocks = pem::decode_all(text).map_err(invalid)?;
        let der = blocks
            .into_iter()
            .find(|b| b.label == "CERTIFICATE REQUEST" || b.label == "NEW CERTIFICATE REQUEST")
            .map(|b| b.der)
            .ok_or_else(|| invalid("no CERTIFICATE REQUEST block"))?;
        Self::from_der(&der)
    }

    /// Parse DER and verify the signature.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let (rest, csr) = X509CertificationRequest::from_der(der).map_err(invalid)?;
        if !rest.is_empty() {
            return Err(invalid("trailing data"));
        }
        csr.verify_signature().map_err(|_| {
            PkiError::InvalidCsr("certificate request signature is invalid".to_string())
        })?;
        let info = &csr.certification_request_info;
        let common_name = match info.subject.iter_common_name().next() {
            Some(cn) => Some(cn.as_str().map_err(invalid)?.to_string()),
            None => None,
        };
        let mut subject = Vec::new();
        for attr in info.subject.iter_attributes() {
            let arcs: Vec<u64> = attr
                .attr_type()
                .iter()
                .map(|it| it.collect())
                .ok_or_else(|| invalid("subject attribute OID too large"))?;
            let value = attr
                .as_str()
                .map_err(|_| invalid("unsupported subject attribute encoding"))?;
            subject.push((arcs, value.to_string()));
        }
        let mut out = ParsedCsr {
            der: der.to_vec(),
            common_name,
            subject,
            dns_names: Vec::new(),
            emails: Vec::new(),
            ip_sans: Vec::new(),
            uri_sans: Vec::new(),
            other_sans: 0,
            spki: info.subject_pki.raw.to_vec(),
            key: key_of(&info.subject_pki)?,
        };
        for ext in csr.requested_extensions().into_iter().flatten() {
            let ParsedExtension::SubjectAlternativeName(san) = ext else {
                continue;
            };
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => out.dns_names.push(d.to_string()),
                    GeneralName::RFC822Name(e) => out.emails.push(e.to_string()),
                    GeneralName::URI(u) => out.uri_sans.push(u.to_string()),
                    GeneralName::IPAddress(b) => out.ip_sans.push(ip_from(b)?),
                    _ => out.other_sans += 1,
                }
            }
        }
        Ok(out)
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject CN, if any.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// Every subject attribute in order, as (OID arcs, value).
    pub fn subject(&self) -> &[(Vec<u64>, String)] {
        &self.subject
    }

    /// Requested DNS SANs.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// Requested email SANs.
    pub fn emails(&self) -> &[String] {
        &self.emails
    }

    /// Requested IP SANs.
    pub fn ip_sans(&self) -> &[IpAddr] {
        &self.ip_sans
    }

    /// Requested URI SANs.
    pub fn uri_sans(&self) -> &[String] {
        &self.uri_sans
    }

    /// How many SANs of other kinds (otherName, directoryName, ...) it asks for.
    pub fn other_san_count(&self) -> usize {
        self.other_sans
    }

    /// The public key's type and size.
    pub fn key(&self) -> CsrKey {
        self.key
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The public key in rcgen's form, for signing.
    pub(crate) fn public_key(&self) -> Result<rcgen::SubjectPublicKeyInfo> {
        rcgen::SubjectPublicKeyInfo::from_der(&self.spki).map_err(|_| {
            PkiError::InvalidCsr(format!(
                "unsupported public key in certificate request ({} {} bits)",
                self.key.key_type, self.key.bits
            ))
        })
    }
}

fn ip_from(b: &[u8]) -> Result<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        return Ok(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(b)
        .map(IpAddr::from)
        .map_err(|_| invalid("malformed IP address SAN"))
}

fn key_of(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<CsrKey> {
    let oid = spki.algorithm.algorithm.to_id_string();
    if oid == "1.3.101.112" {
        return Ok(CsrKey {
            key_type: "ed25519",
            bits: 0,
        });
    }
    match spki.parsed().map_err(invalid)? {
        PublicKey::RSA(rsa) => {
            let bits = u32::try_from(rsa.key_size()).unwrap_or(0);
            Ok(CsrKey {
                key_type: "rsa",
                bits,
            })
        }
        PublicKey::EC(_) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            let bits = match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => 256,
                Some("1.3.132.0.34") => 384,
                Some("1.3.132.0.35") => 521,
                Some("1.3.132.0.33") => 224,
                _ => 0,
            };
            Ok(CsrKey {
                key_type: "ec",
                bits,
            })
        }
        _ => Ok(CsrKey {
            key_type: "unknown",
            bits: 0,
        }),
    }
}

#[cfg(test)]
mod tests;
