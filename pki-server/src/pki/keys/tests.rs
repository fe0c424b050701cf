use super::*;
use std::io::Write;
use std::process::Command;

/// Run `openssl <args> -in <pem file>` and return its stdout, or panic with stderr.
pub(crate) fn openssl_reads(args: &[&str], pem: &str) -> String {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(pem.as_bytes()).unwrap();
    let path = f.path().to_str().unwrap().to_string();
    let out = Command::new("openssl")
        .args(args)
        .args(["-in", &path])
        .output()
        .expect("openssl is installed at /usr/bin/openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}\n{pem}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn key_type_from_vault_applies_defaults() {
    fn check(t: &str, bits: u32, expected: Option<KeyType>) {
        assert_eq!(KeyType::from_vault(t, bits).ok(), expected, "{t}/{bits}");
    }
    check("rsa", 0, Some(KeyType::Rsa(RsaBits::B2048)));
    check("rsa", 3072, Some(KeyType::Rsa(RsaBits::B3072)));
    check("rsa", 4096, Some(KeyType::Rsa(RsaBits::B4096)));
    check("rsa", 1024, None);
    check("rsa", 8192, None);
    check("ec", 0, Some(KeyType::Ec(EcCurve::P256)));
    check("ec", 384, Some(KeyType::Ec(EcCurve::P384)));
    check("ec", 521, None);
    check("ed25519", 0, Some(KeyType::Ed25519));
    check("any", 0, None);
    check("dsa", 0, None);
    assert_eq!(KeyType::Rsa(RsaBits::B2048).bits(), 2048);
    assert_eq!(KeyType::Ed25519.bits(), 0);
}

#[test]
fn formats_parse() {
    assert_eq!(Format::parse("").unwrap(), Format::Pem);
    assert_eq!(Format::parse("pem_bundle").unwrap(), Format::PemBundle);
    assert!(matches!(Format::parse("p12"), Err(PkiError::BadFormat)));
    assert_eq!(
        PrivateKeyFormat::parse("pkcs8").unwrap(),
        PrivateKeyFormat::Pkcs8
    );
    assert!(PrivateKeyFormat::parse("jwk").is_err());
}

/// Every key type in every output format is readable by OpenSSL, carries the
/// right PEM label, and loads back into the same key.
#[test]
fn private_keys_are_readable_by_openssl_and_round_trip() {
    let cases = [
        (
            KeyType::Rsa(RsaBits::B2048),
            PrivateKeyFormat::Der,
            "RSA PRIVATE KEY",
            "rsa",
        ),
        (
            KeyType::Rsa(RsaBits::B2048),
            PrivateKeyFormat::Pkcs8,
            "PRIVATE KEY",
            "pkey",
        ),
        (
            KeyType::Ec(EcCurve::P256),
            PrivateKeyFormat::Der,
            "EC PRIVATE KEY",
            "ec",
        ),
        (
            KeyType::Ec(EcCurve::P384),
            PrivateKeyFormat::Der,
            "EC PRIVATE KEY",
            "ec",
        ),
        (
            KeyType::Ec(EcCurve::P256),
            PrivateKeyFormat::Pkcs8,
            "PRIVATE KEY",
            "pkey",
        ),
        (
            KeyType::Ed25519,
            PrivateKeyFormat::Der,
            "PRIVATE KEY",
            "pkey",
        ),
        (
            KeyType::Ed25519,
            PrivateKeyFormat::Pkcs8,
            "PRIVATE KEY",
            "pkey",
        ),
    ];
    let mut rsa = None;
    for (kt, kf, label, tool) in cases {
        let key = match (kt, &rsa) {
            (KeyType::Rsa(_), Some(k)) => PrivateKey::clone(k),
            _ => PrivateKey::generate(kt).unwrap(),
        };
        if matches!(kt, KeyType::Rsa(_)) {
            rsa = Some(key.clone());
        }
        assert_eq!(key.key_type(), kt);
        let pem = key.encode(kf, Format::Pem).unwrap();
        assert!(
            pem.starts_with(&format!("-----BEGIN {label}-----\n")),
            "{kt:?} {kf:?}: {}",
            &pem[..40]
        );
        let text = openssl_reads(&[tool, "-noout", "-text"], &pem);
        if let KeyType::Ec(curve) = kt
            && kf == PrivateKeyFormat::Der
        {
            let name = if curve == EcCurve::P256 {
                "prime256v1"
            } else {
                "secp384r1"
            };
            assert!(text.contains(&format!("ASN1 OID: {name}")), "{text}");
        }
        let back = PrivateKey::from_pem(&pem).unwrap();
        assert_eq!(back.key_type(), kt);
        assert_eq!(
            back.public_key_spki().unwrap(),
            key.public_key_spki().unwrap()
        );
        // der format is the base64 of the same DER.
        let b64 = key.encode(kf, Format::Der).unwrap();
        let (_, der) = key.to_der(kf).unwrap();
        assert_eq!(B64.decode(b64.as_bytes()).unwrap(), *der);
    }
}

#[test]
fn rsa_pkcs1_is_checked_consistent_by_openssl() {
    let key = PrivateKey::generate(KeyType::Rsa(RsaBits::B2048)).unwrap();
    let pem = key.encode(PrivateKeyFormat::Der, Format::Pem).unwrap();
    let out = openssl_reads(&["rsa", "-check", "-noout"], &pem);
    assert!(out.contains("RSA key ok"), "{out}");
    assert_eq!(
        PrivateKey::from_pkcs8_der(key.pkcs8_der())
            .unwrap()
            .key_type(),
        key.key_type()
    );
}

#[test]
fn debug_never_prints_key_material() {
    let key = PrivateKey::generate(KeyType::Ec(EcCurve::P256)).unwrap();
    let dbg = format!("{key:?}");
    assert!(dbg.contains("redacted"));
    assert!(!dbg.contains(&hex::encode(&key.pkcs8_der()[..16])));
}

#[test]
fn garbage_keys_are_refused() {
    assert!(PrivateKey::from_pkcs8_der(b"not a key").is_err());
    assert!(PrivateKey::from_pem("no pem here").is_err());
    let bogus = pem::encode("EC PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x01]);
    assert!(PrivateKey::from_pem(&bogus).is_err());
}

#[test]
fn signature_algorithms_follow_signature_bits() {
    let rsa = KeyType::Rsa(RsaBits::B2048);
    assert_eq!(rsa.signature_algorithm(0).unwrap(), &rcgen::PKCS_RSA_SHA256);
    assert_eq!(
        rsa.signature_algorithm(512).unwrap(),
        &rcgen::PKCS_RSA_SHA512
    );
    assert!(rsa.signature_algorithm(224).is_err());
    let p384 = KeyType::Ec(EcCurve::P384);
    assert_eq!(
        p384.signature_algorithm(0).unwrap(),
        &rcgen::PKCS_ECDSA_P384_SHA384
    );
    assert!(p384.signature_algorithm(256).is_err());
}

#[test]
fn public_key_without_ring_matches_ring() {
    use rcgen::PublicKeyData as _;
    for kt in [
        KeyType::Ec(EcCurve::P256),
        KeyType::Ec(EcCurve::P384),
        KeyType::Ed25519,
    ] {
        let k = PrivateKey::generate(kt).unwrap();
        let fast = k.public_key().unwrap();
        assert_eq!(
            fast.subject_public_key_info(),
            k.public_key_spki().unwrap(),
            "{kt:?}"
        );
        assert_eq!(fast.der_bytes(), k.public_key_raw().unwrap().as_slice());
        // The same after a round trip through SEC1 PEM.
        let pem = k.encode(PrivateKeyFormat::Der, Format::Pem).unwrap();
        let back = PrivateKey::from_pem(&pem).unwrap();
        assert_eq!(
            back.public_key().unwrap().subject_public_key_info(),
            k.public_key_spki().unwrap()
        );
    }
}
