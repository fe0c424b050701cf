//! Reading certificates and keys back: names, validity, and whether a key
//! belongs to a certificate (for idempotent runs and `status`).

use serde::Serialize;
use std::net::IpAddr;
use x509_parser::prelude::*;

/// What `status` shows of one certificate.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject common name.
    pub common_name: String,
    /// Subject organisations.
    pub organization: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// Issuer common name.
    pub issuer: String,
    /// Colon-hex serial.
    pub serial: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Extended key usages (serverAuth, clientAuth).
    pub ext_key_usage: Vec<String>,
    /// DER SubjectPublicKeyInfo.
    #[serde(skip)]
    pub spki: Vec<u8>,
}

/// The DER blocks of a PEM text with this label.
pub fn pem_blocks(pem: &[u8], label: &str) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(i) = rest.find(&begin) {
        let after = &rest[i + begin.len()..];
        let Some(j) = after.find(&end) else { break };
        let b64: String = after[..j].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64) {
            out.push(der);
        }
        rest = &after[j + end.len()..];
    }
    out
}

/// PEM-encode DER with a label.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The first certificate of a PEM text.
pub fn cert_info(pem: &[u8]) -> Option<CertInfo> {
    let der = pem_blocks(pem, "CERTIFICATE").into_iter().next()?;
    cert_info_der(&der)
}

/// A DER certificate.
pub fn cert_info_der(der: &[u8]) -> Option<CertInfo> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    let cn = |n: &X509Name| {
        n.iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for g in &san.value.general_names {
            match g {
                GeneralName::DNSName(d) => dns_names.push((*d).to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ip_addresses.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                    16 => ip_addresses.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let mut ext_key_usage = Vec::new();
    if let Ok(Some(e)) = c.extended_key_usage() {
        if e.value.server_auth {
            ext_key_usage.push("serverAuth".to_string());
        }
        if e.value.client_auth {
            ext_key_usage.push("clientAuth".to_string());
        }
    }
    Some(CertInfo {
        common_name: cn(c.subject()),
        organization: c
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_string)
            .collect(),
        dns_names,
        ip_addresses,
        issuer: cn(c.issuer()),
        // Vault's form (`big.Int.Bytes()`): DER's leading 0x00 sign octet dropped.
        serial: c
            .raw_serial()
            .iter()
            .skip_while(|&&b| b == 0)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        ext_key_usage,
        spki: c.public_key().raw.to_vec(),
    })
}

/// The DER SubjectPublicKeyInfo of a PKCS#8 PEM private key (EC P-256/P-384
/// or Ed25519), or None.
pub fn key_spki(key_pem: &[u8]) -> Option<Vec<u8>> {
    let kp = rcgen::KeyPair::from_pem(std::str::from_utf8(key_pem).ok()?).ok()?;
    Some(rcgen::PublicKeyData::subject_public_key_info(&kp))
}

/// Whether `key_pem` is the private key of the certificate `cert_pem`.
pub fn key_matches(cert_pem: &[u8], key_pem: &[u8]) -> bool {
    match (cert_info(cert_pem), key_spki(key_pem)) {
        (Some(c), Some(k)) => c.spki == k,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_rcgen_wrote() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "a");
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.9".parse().unwrap()));
        // Top bit set: DER writes 00:cc:01, Vault's serial_number is cc:01.
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0xcc, 0x01]));
        let cert = p.self_signed(&key).unwrap();
        let info = cert_info(cert.pem().as_bytes()).unwrap();
        assert_eq!(info.common_name, "a");
        assert_eq!(info.dns_names, ["a.example"]);
        assert_eq!(info.ip_addresses, ["127.0.0.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(info.serial, "cc:01");
        assert!(key_matches(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes()
        ));
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(!key_matches(
            cert.pem().as_bytes(),
            other.serialize_pem().as_bytes()
        ));
        assert!(cert_info(b"garbage").is_none());
        let round = pem_encode("CERTIFICATE", cert.der());
        assert_eq!(
            pem_blocks(round.as_bytes(), "CERTIFICATE")[0],
            cert.der().to_vec()
        );
    }
}
