use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

fn cert(ca: Option<bool>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["pki.example".to_string()]).unwrap();
    p.is_ca = match ca {
        Some(true) => IsCa::Ca(BasicConstraints::Constrained(0)),
        Some(false) => IsCa::ExplicitNoCa,
        None => IsCa::NoCa,
    };
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// `check_ca_bundle(input)`: Ok(count) or an error containing `expected`.
fn check(input: &str, expected: Result<usize, &str>) {
    match (check_ca_bundle(input.as_bytes()), expected) {
        (Ok(n), Ok(m)) => assert_eq!(n, m, "{input}"),
        (Err(e), Err(want)) => assert!(e.contains(want), "{e:?} lacks {want:?}"),
        (got, want) => panic!("{got:?} != {want:?} for\n{input}"),
    }
}

#[test]
fn only_pem_ca_certificates_pass() {
    let (ca, ca_key) = cert(Some(true));
    let (ca2, _) = cert(Some(true));
    let (leaf, _) = cert(None);
    let (not_ca, _) = cert(Some(false));
    check(&ca, Ok(1));
    check(&format!("\n{ca}\n\n{ca2}"), Ok(2));
    check(&ca.replace('\n', "\r\n"), Ok(1));
    check("", Err("no certificate"));
    check("\n\n", Err("no certificate"));
    check(&leaf, Err("is not a CA"));
    check(&not_ca, Err("is not a CA"));
    check(&format!("{ca}{leaf}"), Err("certificate 2"));
    check(&format!("{ca}{ca_key}"), Err("private key"));
    check(&ca_key, Err("private key"));
    check(&format!("subject=CN x\n{ca}"), Err("text outside"));
    check(&format!("{ca}garbage"), Err("text outside"));
    check(
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        Err("is not a certificate"),
    );
    check(
        &ca.replace("-----END CERTIFICATE-----\n", ""),
        Err("not terminated"),
    );
    check(
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        Err("bad base64"),
    );
    check(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        Err("not an X.509 certificate"),
    );
    let big = format!("{ca}{}", "\n".repeat(MAX_BYTES));
    check(&big, Err("larger than"));
    assert!(check_ca_bundle(&[0xff, 0xfe]).is_err());
}

fn options(out: &Path) -> Options {
    Options {
        from: Location::parse("s3://demo-config/ca/pki-server-ca.pem").unwrap(),
        out: out.to_path_buf(),
        wait: Duration::ZERO,
        keep_existing: false,
    }
}

#[test]
fn install_writes_0644_once_and_refuses_without_touching_the_file() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("etc/kube-aws-pki/pki-ca.pem");
    let o = options(&out);
    let (ca, _) = cert(Some(true));
    assert_eq!(install(&o, ca.as_bytes()).unwrap(), Outcome::Written(1));
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert_eq!(install(&o, ca.as_bytes()).unwrap(), Outcome::Unchanged(1));
    let again = std::fs::metadata(&out).unwrap();
    assert_eq!(
        (again.ino(), again.mtime_nsec()),
        (meta.ino(), meta.mtime_nsec())
    );
    let (leaf, _) = cert(None);
    assert!(matches!(
        install(&o, leaf.as_bytes()),
        Err(FetchCaError::NotCa { .. })
    ));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), ca);
    assert_eq!(existing(&out), Some(1));
    // A new CA replaces the old one.
    let (ca2, _) = cert(Some(true));
    assert_eq!(install(&o, ca2.as_bytes()).unwrap(), Outcome::Written(1));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), ca2);
}
