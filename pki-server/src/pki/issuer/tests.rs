use super::*;
use crate::pki::issue::{MountTtl, UrlsConfig};
use crate::pki::keys::{EcCurve, KeyType, PrivateKeyFormat, RsaBits};
use crate::pki::testutil::*;
use crate::pki::{IssueRequest, Role, issue};
use std::time::Duration;
use x509_parser::extensions::ParsedExtension;

fn ca_req(cn: &str) -> CaRequest {
    CaRequest {
        common_name: cn.into(),
        ttl: Some(Duration::from_secs(365 * 86_400)),
        ..CaRequest::default()
    }
}

#[test]
fn root_generation_follows_vaults_parameters() {
    let clock = clock();
    let u = UrlsConfig::default();
    let c = ctx(&clock, &u);
    let serial = SerialNumber::generate().unwrap();
    let req = CaRequest {
        exported: true,
        alt_names: vec!["ca.example".into()],
        permitted_dns_domains: vec!["cluster.local".into()],
        max_path_length: 1,
        subject: issue::SubjectFields {
            organization: vec!["Example".into()],
            country: vec!["FR".into()],
            ..Default::default()
        },
        ..ca_req("Example Root")
    };
    let g = generate_root(&c, &req, rsa_key(), &serial).unwrap();
    let x = parse_cert(g.issuer.certificate_der());
    assert_signed_by(g.issuer.certificate_der(), g.issuer.certificate_der());
    assert!(g.issuer.is_root());
    assert_eq!(g.issuer.serial_number(), &serial);
    assert_eq!(g.issued.serial_number, serial);
    assert_eq!(x.validity().not_before.timestamp(), NOW - 30);
    assert_eq!(x.validity().not_after.timestamp(), NOW + 365 * 86_400);
    assert_eq!(g.issued.expiration, NOW + 365 * 86_400);
    assert_eq!(x.subject().to_string(), "C=FR, O=Example, CN=Example Root");
    let bc = x.basic_constraints().unwrap().unwrap().value.clone();
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(1));
    assert_eq!(
        x.key_usage().unwrap().unwrap().value.to_string(),
        "Key Cert Sign, CRL Sign"
    );
    assert!(g.issuer.subject_key_id().is_some());
    assert!(
        x.iter_extensions()
            .any(|e| matches!(e.parsed_extension(), ParsedExtension::NameConstraints(_)))
    );
    assert_eq!(g.issued.certificate, g.issuer.certificate_pem());
    assert_eq!(g.issued.issuing_ca, g.issuer.certificate_pem());
    assert_eq!(g.issued.private_key_type, Some("rsa"));
    assert!(
        g.issued
            .private_key
            .as_deref()
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    assert_eq!(g.issued.warnings, [AIA_WARNING]);
    assert!(format!("{:?}", g.issuer).contains("redacted"));

    // internal: no key in the response; URLs configured: no warning.
    let u = urls();
    let g = generate_root(
        &ctx(&clock, &u),
        &ca_req("Internal Root"),
        key(KeyType::Ec(EcCurve::P256)),
        &serial,
    )
    .unwrap();
    assert!(g.issued.private_key.is_none() && g.issued.warnings.is_empty());
    assert_eq!(g.issuer.path_len(), None);

    // Over the mount max: capped with a warning.
    let capped = MountContext {
        ttl: MountTtl {
            default_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(3600),
        },
        ..ctx(&clock, &u)
    };
    let g = generate_root(&capped, &ca_req("Capped"), key(KeyType::Ed25519), &serial).unwrap();
    assert_eq!(g.issued.expiration, NOW + 3600);
    assert_eq!(g.issued.warnings.len(), 1);

    // Refusals.
    let err = generate_root(&c, &ca_req(""), key(KeyType::Ed25519), &serial).unwrap_err();
    assert_eq!(err.to_string(), "the common_name field is required");
    let both = CaRequest {
        not_after: Some(OffsetDateTime::UNIX_EPOCH),
        ..ca_req("x")
    };
    assert!(matches!(
        generate_root(&c, &both, key(KeyType::Ed25519), &serial),
        Err(PkiError::TtlAndNotAfter)
    ));
}

/// root → sign-intermediate → set-signed → issue under the intermediate,
/// verified by OpenSSL with the intermediate as untrusted chain.
#[test]
fn intermediate_lifecycle() {
    let clock = clock();
    let u = urls();
    let c = ctx(&clock, &u);
    let root = root_with(KeyType::Rsa(RsaBits::B2048), |r| {
        r.ttl = Some(Duration::from_secs(10 * 365 * 86_400))
    });

    let int_key = key(KeyType::Ec(EcCurve::P384));
    let csr_req = CaRequest {
        exported: true,
        private_key_format: PrivateKeyFormat::Pkcs8,
        ..ca_req("Test Intermediate")
    };
    let pending = generate_intermediate_csr(&csr_req, &int_key).unwrap();
    assert!(
        pending
            .csr
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
    );
    assert!(
        pending
            .private_key
            .as_deref()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert_eq!(pending.private_key_type, "ec");
    let csr = ParsedCsr::from_pem(&pending.csr).unwrap();
    assert_eq!(csr.common_name(), Some("Test Intermediate"));

    let sreq = SignIntermediateRequest {
        use_csr_values: true,
        ca: ca_req("ignored"),
    };
    let signed =
        sign_intermediate(&c, &root, &csr, &sreq, &SerialNumber::generate().unwrap()).unwrap();
    assert_signed_by(&signed.der, root.certificate_der());
    let x = parse_cert(&signed.der);
    assert_eq!(x.subject().to_string(), "CN=Test Intermediate");
    assert!(x.basic_constraints().unwrap().unwrap().value.ca);
    assert_eq!(signed.ca_chain, [root.certificate_pem()]);

    // Wrong key: refused.
    let bundle = format!("{}\n{}", signed.certificate, signed.issuing_ca);
    let other = key(KeyType::Ec(EcCurve::P384));
    assert!(matches!(
        Issuer::set_signed(other, &bundle),
        Err(PkiError::KeyMismatch)
    ));

    let int = Issuer::set_signed(int_key, &bundle).unwrap();
    assert!(!int.is_root());
    assert_eq!(int.parents().len(), 1);
    assert_eq!(int.ca_chain(false).len(), 2);
    assert_eq!(int.ca_chain(true).len(), 1);
    assert_eq!(
        int.not_after(),
        parse_cert(&signed.der).validity().not_after.to_datetime()
    );

    let mut role = Role {
        allowed_domains: vec!["cluster.local".into()],
        allow_subdomains: true,
        key_type: "ec".into(),
        ..Role::default()
    };
    role.validate().unwrap();
    let leaf = issue(
        &c,
        &int,
        &role,
        &IssueRequest {
            common_name: "a.cluster.local".into(),
            ..IssueRequest::default()
        },
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    assert_eq!(
        leaf.ca_chain,
        [int.certificate_pem(), root.certificate_pem()]
    );
    assert_signed_by(&leaf.der, int.certificate_der());
    openssl_verify(
        &leaf.certificate,
        root.certificate_pem(),
        &[int.certificate_pem()],
        Some("sslserver"),
    );
    let trimmed = issue(
        &c,
        &int,
        &role,
        &IssueRequest {
            common_name: "a.cluster.local".into(),
            remove_roots_from_chain: true,
            ..IssueRequest::default()
        },
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    assert_eq!(trimmed.ca_chain, [int.certificate_pem()]);

    // Reloading from stored parts gives the same issuer.
    let again = Issuer::from_parts(
        int.certificate_pem(),
        int.key().clone(),
        &[root.certificate_pem().to_string()],
    )
    .unwrap();
    assert_eq!(again.ca_chain(false), int.ca_chain(false));
}

#[test]
fn path_length_and_non_ca_refusals() {
    let clock = clock();
    let u = urls();
    let c = ctx(&clock, &u);
    let root0 = root_with(KeyType::Ec(EcCurve::P256), |r| r.max_path_length = 0);
    let int_key = key(KeyType::Ec(EcCurve::P256));
    let csr = ParsedCsr::from_pem(
        &generate_intermediate_csr(&ca_req("Int"), &int_key)
            .unwrap()
            .csr,
    )
    .unwrap();
    let sreq = SignIntermediateRequest {
        ca: ca_req("Int"),
        use_csr_values: false,
    };
    let err =
        sign_intermediate(&c, &root0, &csr, &sreq, &SerialNumber::generate().unwrap()).unwrap_err();
    assert!(err.to_string().contains("max path length of zero"), "{err}");

    // Path length is inherited minus one.
    let root2 = root_with(KeyType::Ec(EcCurve::P256), |r| r.max_path_length = 2);
    let signed =
        sign_intermediate(&c, &root2, &csr, &sreq, &SerialNumber::generate().unwrap()).unwrap();
    let bc = parse_cert(&signed.der)
        .basic_constraints()
        .unwrap()
        .unwrap()
        .value
        .clone();
    assert_eq!(bc.path_len_constraint, Some(1));

    // A leaf cannot become an issuer.
    let mut role = Role {
        allow_any_name: true,
        key_type: "ec".into(),
        ..Role::default()
    };
    role.validate().unwrap();
    let leaf_key = key(KeyType::Ec(EcCurve::P256));
    let leaf = crate::pki::issue_with_key(
        &c,
        &root2,
        &role,
        &IssueRequest {
            common_name: "x.example".into(),
            ..IssueRequest::default()
        },
        &SerialNumber::generate().unwrap(),
        &leaf_key,
    )
    .unwrap();
    let err = Issuer::from_parts(&leaf.certificate, leaf_key, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the given certificate is not marked for CA use and cannot be used with this backend"
    );
}

#[test]
fn a_4096_bit_rsa_root_works() {
    let clock = clock();
    let u = urls();
    let k = PrivateKey::generate(KeyType::Rsa(RsaBits::B4096)).unwrap();
    let g = generate_root(
        &ctx(&clock, &u),
        &ca_req("Big Root"),
        k,
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    assert_eq!(
        parse_cert(g.issuer.certificate_der())
            .public_key()
            .parsed()
            .unwrap()
            .key_size(),
        4096
    );
    assert_signed_by(g.issuer.certificate_der(), g.issuer.certificate_der());
}
