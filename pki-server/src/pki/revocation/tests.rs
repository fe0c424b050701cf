use super::*;
use crate::pki::keys::{EcCurve, KeyType, RsaBits};
use crate::pki::testutil::*;
use std::io::Write;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

fn at(s: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(s).unwrap()
}

#[test]
fn crl_lists_revoked_serials_and_verifies_against_the_ca() {
    for kt in [
        KeyType::Ec(EcCurve::P256),
        KeyType::Rsa(RsaBits::B2048),
        KeyType::Ed25519,
    ] {
        let ca = root_with(kt, |_| {});
        let revoked: Vec<RevokedCert> = (0..3)
            .map(|i| RevokedCert {
                // The first has its top bit set, so DER adds a 0x00 sign octet (CI once
                // drew such a serial at random and the comparison below was wrong).
                serial: if i == 0 {
                    SerialNumber::from_bytes(&[0xcc; 19]).unwrap()
                } else {
                    SerialNumber::generate().unwrap()
                },
                revocation_time: at(NOW - 100 * i),
            })
            .collect();
        let crl = build_crl(&ca, &revoked, 7, at(NOW), DEFAULT_CRL_EXPIRY).unwrap();
        assert_eq!(
            (crl.number, crl.this_update, crl.next_update),
            (7, at(NOW), at(NOW + 72 * 3600))
        );

        let (_, parsed) = CertificateRevocationList::from_der(&crl.der).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(ca.certificate_der()).unwrap();
        parsed
            .verify_signature(ca_cert.public_key())
            .expect("CRL signature verifies");
        assert_eq!(parsed.issuer(), ca_cert.subject());
        assert_eq!(
            parsed.crl_number().map(|n| n.to_string()),
            Some("7".to_string())
        );
        let listed: Vec<(Vec<u8>, i64)> = parsed
            .iter_revoked_certificates()
            .map(|r| {
                // DER prefixes 0x00 when the top bit is set; SerialNumber keeps the minimal form.
                let serial = SerialNumber::from_bytes(r.raw_serial()).unwrap();
                (serial.as_bytes().to_vec(), r.revocation_date.timestamp())
            })
            .collect();
        let expected: Vec<(Vec<u8>, i64)> = revoked
            .iter()
            .map(|r| {
                (
                    r.serial.as_bytes().to_vec(),
                    r.revocation_time.unix_timestamp(),
                )
            })
            .collect();
        assert_eq!(listed, expected);

        // OpenSSL agrees.
        let mut crl_f = tempfile::NamedTempFile::new().unwrap();
        crl_f.write_all(crl.pem().as_bytes()).unwrap();
        let mut ca_f = tempfile::NamedTempFile::new().unwrap();
        ca_f.write_all(ca.certificate_pem().as_bytes()).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["crl", "-noout", "-in"])
            .arg(crl_f.path())
            .arg("-CAfile")
            .arg(ca_f.path())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("verify OK"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn empty_crl_and_bad_expiry() {
    let ca = root();
    let crl = build_crl(&ca, &[], 1, at(NOW), Duration::from_secs(60)).unwrap();
    let (_, parsed) = CertificateRevocationList::from_der(&crl.der).unwrap();
    assert_eq!(parsed.iter_revoked_certificates().count(), 0);
    assert!(crl.pem().starts_with("-----BEGIN X509 CRL-----"));
    assert!(build_crl(&ca, &[], 2, at(NOW), Duration::ZERO).is_err());
}
