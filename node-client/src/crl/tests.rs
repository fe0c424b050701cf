use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use std::os::unix::fs::MetadataExt;
use time::OffsetDateTime;

/// A CA: its certificate (PEM) and what signs its CRLs.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(p, key),
    }
}

/// A CRL of `ca` numbered `n` revoking `serials` (DER).
fn crl(ca: &Ca, n: u64, serials: &[u64]) -> Vec<u8> {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::hours(1),
        crl_number: SerialNumber::from(n),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.issuer)
    .unwrap()
    .der()
    .to_vec()
}

fn identity(p: &Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

#[test]
fn rewritten_only_when_the_bytes_change_and_never_by_a_crl_that_fails_to_verify() {
    let etcd = ca("etcd-ca");
    let other = ca("etcd-ca"); // same name, another key
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("etcd-ca.crl");
    let install =
        |bytes: &[u8], ca: &str| super::install(&path, bytes, ca.as_bytes(), "etcd-ca.crt");

    let first = crl(&etcd, 1, &[]);
    assert_eq!(
        install(&first, &etcd.pem).unwrap(),
        Installed::Written(CrlInfo {
            revoked: 0,
            ..verify(&first, etcd.pem.as_bytes(), "x").unwrap().info
        })
    );
    assert_eq!(std::fs::read(&path).unwrap(), first);
    assert_eq!(
        std::fs::metadata(&path).unwrap().mode() & 0o777,
        0o644,
        "public data"
    );

    // The same bytes again (DER, or as PEM): the file is not touched.
    let before = identity(&path);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(matches!(
        install(&first, &etcd.pem),
        Ok(Installed::Unchanged(_))
    ));
    let pem = inspect::pem_encode("X509 CRL", &first);
    assert!(matches!(
        install(pem.as_bytes(), &etcd.pem),
        Ok(Installed::Unchanged(_))
    ));
    assert_eq!(identity(&path), before, "same inode and mtime");

    // A new CRL: replaced (a new file renamed over it), written as DER.
    let second = crl(&etcd, 2, &[0x1234]);
    let pem = inspect::pem_encode("X509 CRL", &second);
    let got = install(pem.as_bytes(), &etcd.pem).unwrap();
    assert!(
        matches!(&got, Installed::Written(i) if i.revoked == 1),
        "{got:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), second);
    assert_ne!(identity(&path).0, before.0);

    // Refused, the file kept as it was: signed by another key under the same
    // name, a flipped signature bit, trailing bytes, two CRLs, not a CRL,
    // nothing, and a CA file with no certificate.
    let kept = identity(&path);
    let mut flipped = crl(&etcd, 3, &[]);
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let mut trailing = crl(&etcd, 3, &[]);
    trailing.push(0);
    let two = format!(
        "{}{}",
        inspect::pem_encode("X509 CRL", &crl(&etcd, 3, &[])),
        inspect::pem_encode("X509 CRL", &crl(&etcd, 4, &[]))
    );
    let refused: Vec<(&str, Vec<u8>, &str)> = vec![
        ("another CA's key", crl(&other, 3, &[]), &etcd.pem),
        ("a flipped signature bit", flipped, &etcd.pem),
        ("trailing bytes", trailing, &etcd.pem),
        ("two CRLs", two.into_bytes(), &etcd.pem),
        ("a certificate", etcd.pem.clone().into_bytes(), &etcd.pem),
        ("garbage DER", vec![0x30, 0x03, 0x02, 0x01], &etcd.pem),
        ("nothing", vec![], &etcd.pem),
        (
            "no CA certificate",
            crl(&etcd, 3, &[]),
            "no certificate here",
        ),
    ];
    for (what, bytes, ca) in refused {
        let e = install(&bytes, ca).expect_err(what);
        match (what, &e) {
            ("another CA's key" | "a flipped signature bit", CrlError::NotSigned(f)) => {
                assert_eq!(f, "etcd-ca.crt")
            }
            ("no CA certificate", CrlError::Ca(_)) => {}
            (_, CrlError::Invalid(_)) => {}
            _ => panic!("{what}: {e:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), second, "{what}: file kept");
        assert_eq!(identity(&path), kept, "{what}: file not touched");
    }
    // Nothing but the CRL file is left in the folder (no temp files).
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["etcd-ca.crl"]);
}

#[test]
fn a_crl_is_checked_against_every_ca_of_the_bundle() {
    let root = ca("root");
    let mount = ca("etcd-ca");
    let bundle = format!("{}{}", root.pem, mount.pem);
    let v = verify(
        &crl(&mount, 7, &[1, 2, 3]),
        bundle.as_bytes(),
        "etcd-ca.crt",
    )
    .unwrap();
    assert_eq!(v.info.revoked, 3);
    assert!(v.info.next_update.unwrap() > v.info.this_update);
}

#[test]
fn a_leaf_certificate_does_not_vouch_for_a_crl() {
    // The key of a non-CA certificate signs a CRL: refused.
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["leaf".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "leaf");
    let pem = p.self_signed(&key).unwrap().pem();
    let leaf = Ca {
        pem,
        issuer: Issuer::new(p, key),
    };
    assert!(matches!(
        verify(&crl(&leaf, 1, &[]), leaf.pem.as_bytes(), "leaf.crt"),
        Err(CrlError::NotSigned(_))
    ));
}
