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
