use super::*;
use crate::pki::keys::{EcCurve, PrivateKey, RsaBits};
use crate::pki::testutil::rsa_key;
use rcgen::{CertificateParams, DistinguishedName, DnType, SanType};

fn csr_pem(key: &PrivateKey, cn: Option<&str>, sans: Vec<SanType>) -> String {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    if let Some(cn) = cn {
        p.distinguished_name.push(DnType::OrganizationName, "o1");
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    p.subject_alt_names = sans;
    p.serialize_request(&key.key_pair(0).unwrap())
        .unwrap()
        .pem()
        .unwrap()
}

#[test]
fn extracts_names_and_key() {
    let key = PrivateKey::generate(KeyType::Ec(EcCurve::P384)).unwrap();
    let pem = csr_pem(
        &key,
        Some("node.cluster.local"),
        vec![
            SanType::DnsName("a.cluster.local".try_into().unwrap()),
            SanType::Rfc822Name("me@cluster.local".try_into().unwrap()),
            SanType::IpAddress("10.0.0.1".parse().unwrap()),
            SanType::IpAddress("fe80::1".parse().unwrap()),
            SanType::URI("spiffe://cluster.local/x".try_into().unwrap()),
        ],
    );
    let csr = ParsedCsr::from_pem(&pem).unwrap();
    assert_eq!(csr.common_name(), Some("node.cluster.local"));
    assert_eq!(csr.dns_names(), ["a.cluster.local"]);
    assert_eq!(csr.emails(), ["me@cluster.local"]);
    assert_eq!(
        csr.ip_sans(),
        [
            "10.0.0.1".parse::<IpAddr>().unwrap(),
            "fe80::1".parse().unwrap()
        ]
    );
    assert_eq!(csr.uri_sans(), ["spiffe://cluster.local/x"]);
    assert_eq!(csr.other_san_count(), 0);
    assert_eq!(
        csr.key(),
        CsrKey {
            key_type: "ec",
            bits: 384
        }
    );
    assert_eq!(csr.key().key_type(), Some(KeyType::Ec(EcCurve::P384)));
    assert_eq!(csr.spki_der(), key.public_key_spki().unwrap().as_slice());
    assert_eq!(csr.subject()[0], (vec![2, 5, 4, 10], "o1".to_string()));
    csr.public_key().unwrap();

    let rsa = ParsedCsr::from_pem(&csr_pem(&rsa_key(), None, vec![])).unwrap();
    assert_eq!(rsa.common_name(), None);
    assert_eq!(rsa.key().key_type(), Some(KeyType::Rsa(RsaBits::B2048)));
    let ed = ParsedCsr::from_pem(&csr_pem(
        &PrivateKey::generate(KeyType::Ed25519).unwrap(),
        Some("x"),
        vec![],
    ))
    .unwrap();
    assert_eq!(
        ed.key(),
        CsrKey {
            key_type: "ed25519",
            bits: 0
        }
    );
}

#[test]
fn a_csr_whose_signature_does_not_verify_does_not_exist() {
    let key = PrivateKey::generate(KeyType::Ec(EcCurve::P256)).unwrap();
    let pem = csr_pem(&key, Some("a.example"), vec![]);
    let mut der = ParsedCsr::from_pem(&pem).unwrap().der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01; // corrupt the signature
    let err = ParsedCsr::from_der(&der).unwrap_err();
    assert_eq!(err.to_string(), "certificate request signature is invalid");
    assert!(err.is_user_error());
    // Tamper with the subject instead: same answer.
    let mut der = ParsedCsr::from_pem(&pem).unwrap().der().to_vec();
    let pos = der.windows(9).position(|w| w == b"a.example").unwrap();
    der[pos] = b'b';
    assert!(matches!(
        ParsedCsr::from_der(&der),
        Err(PkiError::InvalidCsr(_))
    ));
}

#[test]
fn garbage_is_refused() {
    assert_eq!(
        ParsedCsr::from_pem("").unwrap_err().to_string(),
        "\"csr\" is empty"
    );
    assert!(ParsedCsr::from_pem("hello").is_err());
    assert!(ParsedCsr::from_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
    let cert_pem = crate::pki::pem::encode("CERTIFICATE", &[0x30, 0x00]);
    assert!(ParsedCsr::from_pem(&cert_pem).is_err());
}
