use super::*;
use crate::pki::FixedClock;
use crate::pki::error::NameKind;
use crate::pki::keys::{EcCurve, RsaBits};
use crate::pki::testutil::*;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::X509Certificate;

fn cluster_role(tweak: impl FnOnce(&mut Role)) -> Role {
    let mut r = Role {
        allowed_domains: vec!["cluster.local".into()],
        allow_subdomains: true,
        key_type: "ec".into(),
        key_bits: 256,
        organization: vec!["example".into()],
        ..Role::default()
    };
    tweak(&mut r);
    r.validate().unwrap();
    r
}

fn req(cn: &str) -> IssueRequest {
    IssueRequest {
        common_name: cn.into(),
        ..IssueRequest::default()
    }
}

fn sans(c: &X509Certificate<'_>) -> Vec<String> {
    let Some(ext) = c.subject_alternative_name().unwrap() else {
        return vec![];
    };
    ext.value
        .general_names
        .iter()
        .map(|g| match g {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::RFC822Name(e) => format!("email:{e}"),
            GeneralName::URI(u) => format!("URI:{u}"),
            GeneralName::IPAddress(b) => match b.len() {
                4 => format!(
                    "IP:{}",
                    std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap())
                ),
                _ => format!(
                    "IP:{}",
                    std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap())
                ),
            },
            other => format!("{other:?}"),
        })
        .collect()
}

fn ekus(c: &X509Certificate<'_>) -> Vec<&'static str> {
    let Some(e) = c.extended_key_usage().unwrap() else {
        return vec![];
    };
    let e = &e.value;
    [
        (e.server_auth, "serverAuth"),
        (e.client_auth, "clientAuth"),
        (e.code_signing, "codeSigning"),
        (e.email_protection, "emailProtection"),
    ]
    .into_iter()
    .filter_map(|(on, n)| on.then_some(n))
    .collect()
}

fn key_usage(c: &X509Certificate<'_>) -> String {
    c.key_usage()
        .unwrap()
        .map(|k| k.value.to_string())
        .unwrap_or_default()
}

fn subject(c: &X509Certificate<'_>) -> String {
    c.subject().to_string()
}

fn ski(c: &X509Certificate<'_>) -> Option<Vec<u8>> {
    c.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn aki(c: &X509Certificate<'_>) -> Option<Vec<u8>> {
    c.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(k) => {
                k.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

fn aia(c: &X509Certificate<'_>) -> Vec<String> {
    c.iter_extensions()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(a) => Some(
                a.accessdescs
                    .iter()
                    .map(|d| format!("{} {:?}", d.access_method.to_id_string(), d.access_location))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

fn crl_dps(c: &X509Certificate<'_>) -> Vec<String> {
    c.iter_extensions()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::CRLDistributionPoints(d) => Some(format!("{:?}", d.points)),
            _ => None,
        })
        .collect()
}

#[test]
fn issued_certificate_carries_exactly_what_was_asked_and_chains_to_its_ca() {
    let clock = clock();
    let u = urls();
    let ca = root();
    let role = cluster_role(|_| {});
    let serial = SerialNumber::generate().unwrap();
    let r = IssueRequest {
        alt_names: vec!["b.cluster.local".into(), "ops@x.cluster.local".into()],
        ip_sans: vec!["10.0.0.1".into(), "::1".into()],
        ttl: Some(Duration::from_secs(3600)),
        ..req("api.cluster.local")
    };
    let out = issue(&ctx(&clock, &u), &ca, &role, &r, &serial).unwrap();
    assert_eq!(out.serial_number, serial);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(out.issuing_ca, ca.certificate_pem());
    assert_eq!(out.ca_chain, vec![ca.certificate_pem().to_string()]);
    assert_eq!(out.expiration, NOW + 3600);
    assert_eq!(out.private_key_type, Some("ec"));
    assert!(
        out.certificate.starts_with("-----BEGIN CERTIFICATE-----\n")
            && !out.certificate.ends_with('\n')
    );

    let c = parse_cert(&out.der);
    assert_signed_by(&out.der, ca.certificate_der());
    openssl_verify(
        &out.certificate,
        ca.certificate_pem(),
        &[],
        Some("sslserver"),
    );
    assert_eq!(
        sans(&c),
        [
            "DNS:api.cluster.local",
            "DNS:b.cluster.local",
            "email:ops@x.cluster.local",
            "IP:10.0.0.1",
            "IP:::1"
        ]
    );
    assert_eq!(subject(&c), "O=example, CN=api.cluster.local");
    assert_eq!(
        key_usage(&c),
        "Digital Signature, Key Encipherment, Key Agreement"
    );
    assert_eq!(ekus(&c), ["serverAuth", "clientAuth"]);
    assert!(
        c.basic_constraints().unwrap().is_none(),
        "no basic constraints by default"
    );
    assert_eq!(c.validity().not_before.timestamp(), NOW - 30);
    assert_eq!(c.validity().not_after.timestamp(), NOW + 3600);
    assert_eq!(SerialNumber::from_bytes(c.raw_serial()).unwrap(), serial);
    assert_eq!(aki(&c), ca.subject_key_id().map(<[u8]>::to_vec));
    assert!(ski(&c).is_some_and(|s| s.len() == 20));
    let aia = aia(&c);
    assert_eq!(aia.len(), 1);
    assert!(
        aia[0].starts_with("1.3.6.1.5.5.7.48.2") && aia[0].contains("http://pki.example/v1/pki/ca"),
        "{aia:?}"
    );
    let dps = crl_dps(&c);
    assert!(
        dps.len() == 1 && dps[0].contains("http://pki.example/v1/pki/crl"),
        "{dps:?}"
    );

    // The returned private key belongs to the certificate.
    let key = PrivateKey::from_pem(out.private_key.as_deref().unwrap()).unwrap();
    assert_eq!(
        c.public_key().raw,
        key.public_key_spki().unwrap().as_slice()
    );
    assert!(format!("{out:?}").contains("<redacted>"));
}

#[test]
fn every_key_type_issues_and_its_key_matches() {
    let clock = clock();
    let u = urls();
    for (ca_type, leaf_type, bits) in [
        (KeyType::Rsa(RsaBits::B2048), "rsa", 2048),
        (KeyType::Ec(EcCurve::P384), "ec", 256),
        (KeyType::Ec(EcCurve::P256), "ec", 384),
        (KeyType::Ed25519, "ed25519", 0),
        (KeyType::Ec(EcCurve::P256), "rsa", 2048),
    ] {
        let ca = root_with(ca_type, |_| {});
        let role = cluster_role(|r| {
            r.key_type = leaf_type.into();
            r.key_bits = bits;
        });
        let kt = KeyType::from_vault(leaf_type, bits).unwrap();
        let key = key(kt);
        let serial = SerialNumber::generate().unwrap();
        let r = IssueRequest {
            private_key_format: PrivateKeyFormat::Pkcs8,
            ..req("x.cluster.local")
        };
        let out = issue_with_key(&ctx(&clock, &u), &ca, &role, &r, &serial, &key).unwrap();
        assert_eq!(out.private_key_type, Some(leaf_type));
        assert_signed_by(&out.der, ca.certificate_der());
        openssl_verify(&out.certificate, ca.certificate_pem(), &[], None);
        let c = parse_cert(&out.der);
        assert_eq!(
            c.public_key().raw,
            key.public_key_spki().unwrap().as_slice()
        );
        assert!(
            out.private_key
                .as_deref()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }
    // issue() generates the key itself (EC here; RSA covered by keys tests).
    let ca = root();
    let out = issue(
        &ctx(&clock, &u),
        &ca,
        &cluster_role(|_| {}),
        &req("y.cluster.local"),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    let key = PrivateKey::from_pem(out.private_key.as_deref().unwrap()).unwrap();
    assert!(
        out.private_key
            .as_deref()
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    assert_eq!(
        parse_cert(&out.der).public_key().raw,
        key.public_key_spki().unwrap().as_slice()
    );
}

/// One table of (role tweak, request, expected refusal).
#[test]
fn role_refusals_name_the_rejected_value() {
    let clock = clock();
    let u = urls();
    let ca = root();
    type Tweak = fn(&mut Role);
    let none: Tweak = |_| {};
    let cases: Vec<(Tweak, IssueRequest, &str)> = vec![
        (
            none,
            req("evil.com"),
            "common name evil.com not allowed by this role",
        ),
        (
            none,
            req("cluster.local"),
            "common name cluster.local not allowed by this role",
        ),
        (
            |r| r.allow_wildcard_certificates = false,
            req("*.cluster.local"),
            "common name *.cluster.local not allowed by this role",
        ),
        (
            none,
            IssueRequest {
                alt_names: vec!["evil.com".into()],
                ..req("a.cluster.local")
            },
            "subject alternate name evil.com not allowed by this role",
        ),
        (
            none,
            IssueRequest {
                alt_names: vec!["not a name".into()],
                ..req("a.cluster.local")
            },
            "subject alternate name not a name not allowed by this role",
        ),
        (
            none,
            IssueRequest {
                alt_names: vec!["me@evil.com".into()],
                ..req("a.cluster.local")
            },
            "email address me@evil.com not allowed by this role",
        ),
        (
            |r| r.allow_ip_sans = false,
            IssueRequest {
                ip_sans: vec!["10.0.0.1".into()],
                ..req("a.cluster.local")
            },
            "IP Subject Alternative Names are not allowed in this role, but was provided [10.0.0.1]",
        ),
        (
            none,
            IssueRequest {
                ip_sans: vec!["10.0.0".into()],
                ..req("a.cluster.local")
            },
            "the value \"10.0.0\" is not a valid IP address",
        ),
        (
            none,
            IssueRequest {
                uri_sans: vec!["spiffe://cluster.local/x".into()],
                ..req("a.cluster.local")
            },
            "URI Subject Alternative Names are not allowed in this role, but were provided via the API",
        ),
        (
            |r| r.allowed_uri_sans = vec!["spiffe://cluster.local/*".into()],
            IssueRequest {
                uri_sans: vec!["spiffe://evil/x".into()],
                ..req("a.cluster.local")
            },
            "URI Subject Alternative Names were provided via the API which are not valid for this role",
        ),
        (
            none,
            req(""),
            "the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false",
        ),
        (
            none,
            IssueRequest {
                other_sans: vec!["1.2.3;UTF8:x".into()],
                ..req("a.cluster.local")
            },
            "other_sans are not supported by this server",
        ),
        (
            none,
            IssueRequest {
                ttl: Some(Duration::from_secs(60)),
                not_after: Some(OffsetDateTime::UNIX_EPOCH),
                ..req("a.cluster.local")
            },
            "Either ttl or not_after should be provided. Both should not be provided in the same request.",
        ),
        (
            |r| {
                r.key_type = "any".into();
                r.key_bits = 0
            },
            req("a.cluster.local"),
            "role key type \"any\" not allowed for issuing certificates without providing key_type and/or key_bits request parameters",
        ),
    ];
    for (tweak, r, expected) in cases {
        let role = cluster_role(tweak);
        let err = issue(
            &ctx(&clock, &u),
            &ca,
            &role,
            &r,
            &SerialNumber::generate().unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), expected);
        assert!(err.is_user_error());
    }
    // The typed error carries the value for logs.
    let err = issue(
        &ctx(&clock, &u),
        &ca,
        &cluster_role(none),
        &req("evil.com"),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(err, PkiError::NameNotAllowed { kind: NameKind::CommonName, ref name } if name == "evil.com")
    );
}

#[test]
fn allowed_variants_issue() {
    let clock = clock();
    let u = urls();
    let ca = root();
    for (tweak, cn) in [
        (
            (|r: &mut Role| r.allow_bare_domains = true) as fn(&mut Role),
            "cluster.local",
        ),
        (|_| {}, "*.cluster.local"),
        (|_| {}, "localhost"),
        (
            |r| {
                r.allowed_domains = vec!["*.svc.cluster.local".into()];
                r.allow_glob_domains = true;
                r.allow_subdomains = false
            },
            "a.b.svc.cluster.local",
        ),
    ] {
        let role = cluster_role(tweak);
        let out = issue(
            &ctx(&clock, &u),
            &ca,
            &role,
            &req(cn),
            &SerialNumber::generate().unwrap(),
        )
        .unwrap();
        assert_eq!(sans(&parse_cert(&out.der)), [format!("DNS:{cn}")]);
    }
}

#[test]
fn ttl_is_capped_with_a_warning_and_refused_past_the_ca() {
    let clock = clock();
    let u = urls();
    let ca = root_with(KeyType::Ec(EcCurve::P256), |r| {
        r.ttl = Some(Duration::from_secs(100 * 86_400))
    });
    let role = cluster_role(|r| {
        r.ttl = Duration::from_secs(3600);
        r.max_ttl = Duration::from_secs(72 * 3600);
    });
    let c = ctx(&clock, &u);
    // Role default.
    let out = issue(
        &c,
        &ca,
        &role,
        &req("a.cluster.local"),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    assert_eq!(out.expiration, NOW + 3600);
    // Over the role max: capped, with Vault's warning.
    let r = IssueRequest {
        ttl: Some(Duration::from_secs(768 * 3600)),
        ..req("a.cluster.local")
    };
    let out = issue(&c, &ca, &role, &r, &SerialNumber::generate().unwrap()).unwrap();
    assert_eq!(out.expiration, NOW + 72 * 3600);
    assert_eq!(
        out.warnings,
        [r#"TTL "768h0m0s" is longer than permitted maxTTL "72h0m0s", so maxTTL is being used"#]
    );
    // Mount default and mount max apply when the role has none.
    let plain = cluster_role(|_| {});
    let mount = MountContext {
        ttl: MountTtl {
            default_ttl: Duration::from_secs(7200),
            max_ttl: Duration::from_secs(86_400),
        },
        ..c
    };
    let out = issue(
        &mount,
        &ca,
        &plain,
        &req("a.cluster.local"),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    assert_eq!(out.expiration, NOW + 7200);
    let out = issue(
        &mount,
        &ca,
        &plain,
        &IssueRequest {
            ttl: Some(Duration::from_secs(2 * 86_400)),
            ..req("a.cluster.local")
        },
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    assert_eq!((out.expiration, out.warnings.len()), (NOW + 86_400, 1));
    // Nothing set anywhere: 30 days.
    let out = issue(
        &c,
        &ca,
        &plain,
        &req("a.cluster.local"),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    assert_eq!(out.expiration, NOW + 30 * 86_400);
    // Past the CA's notAfter: refused with Vault's message.
    let r = IssueRequest {
        ttl: Some(Duration::from_secs(200 * 86_400)),
        ..req("a.cluster.local")
    };
    let err = issue(&c, &ca, &plain, &r, &SerialNumber::generate().unwrap()).unwrap_err();
    assert!(matches!(err, PkiError::TtlPastCaExpiry { .. }));
    assert_eq!(
        err.to_string(),
        "cannot satisfy request, as TTL would result in notAfter of 2024-06-01T22:13:20Z that is beyond the expiration of the CA certificate at 2024-02-22T22:13:20Z"
    );
    // Explicit not_after, and a later clock.
    let at = OffsetDateTime::from_unix_timestamp(NOW + 5000).unwrap();
    let out = issue(
        &c,
        &ca,
        &plain,
        &IssueRequest {
            not_after: Some(at),
            ..req("a.cluster.local")
        },
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    assert_eq!(out.expiration, NOW + 5000);
    let later = FixedClock::at_unix(NOW + 1000);
    let out = issue(
        &ctx(&later, &u),
        &ca,
        &role,
        &req("a.cluster.local"),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    assert_eq!(
        parse_cert(&out.der).validity().not_before.timestamp(),
        NOW + 1000 - 30
    );
}

/// The kubelet client profile from k8s-pki-profile.md §7.2: node-bound CN via
/// a template, O from the role, clientAuth only, no SANs.
#[test]
fn kubelet_client_profile_pins_the_node_name() {
    let clock = clock();
    let u = urls();
    let ca = root();
    let role = cluster_role(|r| {
        r.allowed_domains = vec!["system:node:{{identity.entity.metadata.node_name}}".into()];
        r.allowed_domains_template = true;
        r.allow_bare_domains = true;
        r.allow_subdomains = false;
        r.allow_localhost = false;
        r.enforce_hostnames = false;
        r.server_flag = false;
        r.organization = vec!["system:nodes".into()];
        r.key_usage = vec!["DigitalSignature".into(), "KeyEncipherment".into()];
        r.use_csr_common_name = false;
        r.use_csr_sans = false;
    });
    let meta: TemplateMetadata = [(
        "node_name".to_string(),
        "i-0abc.eu-west-1.compute.internal".to_string(),
    )]
    .into();
    let r = IssueRequest {
        metadata: meta.clone(),
        ..req("system:node:i-0abc.eu-west-1.compute.internal")
    };
    let out = issue(
        &ctx(&clock, &u),
        &ca,
        &role,
        &r,
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    let c = parse_cert(&out.der);
    assert_eq!(
        subject(&c),
        "O=system:nodes, CN=system:node:i-0abc.eu-west-1.compute.internal"
    );
    assert!(
        sans(&c).is_empty(),
        "a non-hostname CN is not copied into the SANs"
    );
    assert_eq!(ekus(&c), ["clientAuth"]);
    openssl_verify(
        &out.certificate,
        ca.certificate_pem(),
        &[],
        Some("sslclient"),
    );
    // Another node's name is refused.
    let other = IssueRequest {
        metadata: meta,
        ..req("system:node:i-0def.eu-west-1.compute.internal")
    };
    let err = issue(
        &ctx(&clock, &u),
        &ca,
        &role,
        &other,
        &SerialNumber::generate().unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "common name system:node:i-0def.eu-west-1.compute.internal not allowed by this role"
    );
    // No metadata: nothing is allowed.
    let err = issue(
        &ctx(&clock, &u),
        &ca,
        &role,
        &req("system:node:i-0abc.eu-west-1.compute.internal"),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, PkiError::NameNotAllowed { .. }));
}

fn csr_for(key: &PrivateKey, cn: &str, sans: &[SanType], ca: bool) -> ParsedCsr {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = sans.to_vec();
    if ca {
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let csr = p.serialize_request(&key.key_pair(0).unwrap()).unwrap();
    ParsedCsr::from_pem(&csr.pem().unwrap()).unwrap()
}

fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}

#[test]
fn sign_takes_names_from_the_csr_or_the_request_and_checks_both() {
    let clock = clock();
    let u = urls();
    let ca = root();
    let c = ctx(&clock, &u);
    let leaf_key = key(KeyType::Ec(EcCurve::P256));
    let csr = csr_for(
        &leaf_key,
        "csr.cluster.local",
        &[
            dns("x.cluster.local"),
            SanType::IpAddress("10.1.1.1".parse().unwrap()),
        ],
        true,
    );

    // use_csr_common_name + use_csr_sans (defaults).
    let role = cluster_role(|_| {});
    let out = sign(
        &c,
        &ca,
        &role,
        &csr,
        &req("ignored.cluster.local"),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    let cert = parse_cert(&out.der);
    assert_eq!(subject(&cert), "O=example, CN=csr.cluster.local");
    assert_eq!(
        sans(&cert),
        [
            "DNS:x.cluster.local",
            "DNS:csr.cluster.local",
            "IP:10.1.1.1"
        ]
    );
    assert!(
        cert.basic_constraints().unwrap().is_none(),
        "a CSR cannot ask for CA:TRUE"
    );
    assert_eq!(
        cert.public_key().raw,
        leaf_key.public_key_spki().unwrap().as_slice()
    );
    assert!(out.private_key.is_none() && out.private_key_type.is_none());
    assert_signed_by(&out.der, ca.certificate_der());

    // use_csr_sans=false: the CSR's SANs are ignored, the request's are checked.
    let role = cluster_role(|r| {
        r.use_csr_sans = false;
        r.use_csr_common_name = false;
    });
    let r = IssueRequest {
        alt_names: vec!["y.cluster.local".into()],
        ..req("req.cluster.local")
    };
    let out = sign(&c, &ca, &role, &csr, &r, &SerialNumber::generate().unwrap()).unwrap();
    assert_eq!(
        sans(&parse_cert(&out.der)),
        ["DNS:req.cluster.local", "DNS:y.cluster.local"]
    );
    let bad = IssueRequest {
        alt_names: vec!["evil.com".into()],
        ..req("req.cluster.local")
    };
    let err = sign(
        &c,
        &ca,
        &role,
        &csr,
        &bad,
        &SerialNumber::generate().unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "subject alternate name evil.com not allowed by this role"
    );

    // CSR names are checked too.
    let evil = csr_for(&leaf_key, "a.cluster.local", &[dns("evil.com")], false);
    let err = sign(
        &c,
        &ca,
        &cluster_role(|_| {}),
        &evil,
        &req(""),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "subject alternate name evil.com not allowed by this role"
    );
    let no_ip = cluster_role(|r| r.allow_ip_sans = false);
    let err = sign(
        &c,
        &ca,
        &no_ip,
        &csr,
        &req(""),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "IP Subject Alternative Names are not allowed in this role, but was provided some via CSR"
    );
}

#[test]
fn sign_checks_the_csr_key_against_the_role() {
    let clock = clock();
    let u = urls();
    let ca = root();
    let c = ctx(&clock, &u);
    let rsa_csr = csr_for(&rsa_key(), "a.cluster.local", &[], false);
    let err = sign(
        &c,
        &ca,
        &cluster_role(|_| {}),
        &rsa_csr,
        &req(""),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "role requires keys of type ec");
    let p256 = csr_for(
        &key(KeyType::Ec(EcCurve::P256)),
        "a.cluster.local",
        &[],
        false,
    );
    let p384_role = cluster_role(|r| r.key_bits = 384);
    let err = sign(
        &c,
        &ca,
        &p384_role,
        &p256,
        &req(""),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "role requires a minimum of a 384-bit key, but CSR's key is 256 bits"
    );
    let any = cluster_role(|r| r.key_type = "any".into());
    sign(
        &c,
        &ca,
        &any,
        &rsa_csr,
        &req(""),
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
}

#[test]
fn sign_verbatim_copies_the_csr_subject() {
    let clock = clock();
    let u = urls();
    let ca = root();
    let leaf_key = key(KeyType::Ed25519);
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    p.distinguished_name
        .push(DnType::CommonName, "anything goes");
    p.subject_alt_names = vec![dns("whatever.example")];
    let csr = p.serialize_request(&leaf_key.key_pair(0).unwrap()).unwrap();
    let csr = ParsedCsr::from_pem(&csr.pem().unwrap()).unwrap();
    let r = VerbatimRequest {
        ext_key_usage: vec!["ClientAuth".into()],
        ttl: Some(Duration::from_secs(600)),
        ..VerbatimRequest::default()
    };
    let out = sign_verbatim(
        &ctx(&clock, &u),
        &ca,
        None,
        &csr,
        &r,
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    let c = parse_cert(&out.der);
    assert_eq!(subject(&c), "O=system:masters, CN=anything goes");
    assert_eq!(sans(&c), ["DNS:whatever.example"]);
    assert_eq!(ekus(&c), ["clientAuth"]);
    assert_eq!(out.expiration, NOW + 600);
    assert_signed_by(&out.der, ca.certificate_der());
}

#[test]
fn output_formats() {
    let clock = clock();
    let u = urls();
    let ca = root();
    let role = cluster_role(|r| r.basic_constraints_valid_for_non_ca = true);
    let r = IssueRequest {
        format: Format::Der,
        ..req("a.cluster.local")
    };
    let out = issue(
        &ctx(&clock, &u),
        &ca,
        &role,
        &r,
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(b64.decode(&out.certificate).unwrap(), out.der);
    assert_eq!(b64.decode(&out.issuing_ca).unwrap(), ca.certificate_der());
    assert!(
        PrivateKey::from_pkcs8_der(&b64.decode(out.private_key.as_deref().unwrap()).unwrap())
            .is_err(),
        "der = SEC1, not PKCS#8"
    );
    let bc = parse_cert(&out.der)
        .basic_constraints()
        .unwrap()
        .unwrap()
        .value
        .clone();
    assert!(!bc.ca, "CA:FALSE with basic_constraints_valid_for_non_ca");
    assert!(ski(&parse_cert(&out.der)).is_some());

    let r = IssueRequest {
        format: Format::PemBundle,
        ..req("a.cluster.local")
    };
    let out = issue(
        &ctx(&clock, &u),
        &ca,
        &cluster_role(|_| {}),
        &r,
        &SerialNumber::generate().unwrap(),
    )
    .unwrap();
    let blocks = crate::pki::pem::decode_all(&out.certificate).unwrap();
    let labels: Vec<&str> = blocks.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["EC PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"]);
    assert_eq!(blocks[2].der, ca.certificate_der());
}
