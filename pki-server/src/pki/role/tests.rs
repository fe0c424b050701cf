use super::*;

fn meta(pairs: &[(&str, &str)]) -> TemplateMetadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A role allowing only subdomains of cluster.local; `tweak` adjusts it.
fn cluster_role(tweak: impl FnOnce(&mut Role)) -> Role {
    let mut r = Role {
        allowed_domains: vec!["cluster.local".into()],
        allow_subdomains: true,
        allow_localhost: false,
        ..Role::default()
    };
    tweak(&mut r);
    r.validate().unwrap();
    r
}

/// Table check: each `(name, allowed)` against `role.name_allowed`.
fn check(role: &Role, m: &TemplateMetadata, table: &[(&str, bool)]) {
    for (name, expected) in table {
        assert_eq!(
            role.name_allowed(name, m),
            *expected,
            "name {name:?} with {role:#?}"
        );
    }
}

#[test]
fn subdomain_role_denies_everything_else_by_default() {
    let none = TemplateMetadata::new();
    check(
        &cluster_role(|_| {}),
        &none,
        &[
            ("api.cluster.local", true),
            ("a.b.cluster.local", true),
            ("API.Cluster.Local", true),
            ("*.cluster.local", true),
            ("cluster.local", false),
            ("evil.com", false),
            ("cluster.local.evil.com", false),
            ("evilcluster.local", false),
            ("localhost", false),
            ("", false),
            ("x.cluster.local@", false),
            ("bad_name.cluster.local", false),
            ("*.*.cluster.local", false),
            ("a.*.cluster.local", false),
            ("héllo.cluster.local", false),
            ("user@cluster.local", false),
            ("user@x.cluster.local", true),
            // Vault checks only the domain of an email, not its local part.
            ("*@x.cluster.local", true),
            ("a@*.cluster.local", false),
        ],
    );
    check(
        &cluster_role(|r| r.allow_bare_domains = true),
        &none,
        &[("cluster.local", true)],
    );
    check(
        &cluster_role(|r| r.allow_wildcard_certificates = false),
        &none,
        &[("*.cluster.local", false), ("api.cluster.local", true)],
    );
    check(
        &cluster_role(|r| r.allow_subdomains = false),
        &none,
        &[("api.cluster.local", false), ("*.cluster.local", false)],
    );
}

#[test]
fn wildcard_labels_follow_rfc6125() {
    let none = TemplateMetadata::new();
    check(
        &cluster_role(|_| {}),
        &none,
        &[
            ("f*o.cluster.local", true),
            ("*o.cluster.local", true),
            ("f*.cluster.local", true),
            ("-*.cluster.local", false),
            ("*", false),
        ],
    );
    // Without enforce_hostnames the label syntax is not checked, but the
    // single-wildcard, left-most-label rule still is.
    check(
        &cluster_role(|r| r.enforce_hostnames = false),
        &none,
        &[("-*.cluster.local", true), ("a.*.cluster.local", false)],
    );
}

#[test]
fn allow_any_name_still_enforces_hostnames_and_wildcard_ban() {
    let none = TemplateMetadata::new();
    let any = Role {
        allow_any_name: true,
        ..Role::default()
    };
    check(
        &any,
        &none,
        &[
            ("anything.example", true),
            ("bad..name", false),
            ("under_score.example", false),
            ("*.ok.example", true),
        ],
    );
    let any_no_wild = Role {
        allow_any_name: true,
        allow_wildcard_certificates: false,
        ..Role::default()
    };
    check(&any_no_wild, &none, &[("*.ok.example", false)]);
    let any_free = Role {
        allow_any_name: true,
        enforce_hostnames: false,
        ..Role::default()
    };
    check(
        &any_free,
        &none,
        &[("under_score.example", true), ("system:kube-proxy", true)],
    );
}

#[test]
fn localhost_rules() {
    let none = TemplateMetadata::new();
    let r = Role::default();
    check(
        &r,
        &none,
        &[
            ("localhost", true),
            ("localdomain", true),
            ("a.localhost", false),
            ("root@localhost", true),
        ],
    );
    let sub = Role {
        allow_subdomains: true,
        ..Role::default()
    };
    check(
        &sub,
        &none,
        &[
            ("a.localhost", true),
            ("*.localdomain", true),
            ("xlocalhost", false),
        ],
    );
    let off = Role {
        allow_localhost: false,
        ..Role::default()
    };
    check(&off, &none, &[("localhost", false)]);
}

#[test]
fn glob_domains() {
    let none = TemplateMetadata::new();
    let r = Role {
        allowed_domains: vec!["*.example.com".into(), "ip-*.ec2.internal".into()],
        allow_glob_domains: true,
        ..Role::default()
    };
    check(
        &r,
        &none,
        &[
            ("a.example.com", true),
            ("a.b.example.com", true),
            ("A.EXAMPLE.COM", true),
            ("example.com", false),
            ("a.example.com.evil", false),
            ("ip-10-0-0-1.ec2.internal", true),
            ("ip-.ec2.internal", false), // label ending in '-' fails hostname syntax
            ("i-123.ec2.internal", false),
        ],
    );
    let no_glob = Role {
        allow_glob_domains: false,
        ..r
    };
    check(&no_glob, &none, &[("a.example.com", false)]);
}

#[test]
fn go_glob_semantics() {
    for (p, s, want) in [
        ("", "", true),
        ("", "a", false),
        ("*", "anything", true),
        ("abc", "abc", true),
        ("abc", "abcd", false),
        ("a*c", "abbbc", true),
        ("a*c", "abcd", false),
        ("*c", "abc", true),
        ("a*", "abc", true),
        ("a*b*c", "a-b-c", true),
        ("a*b*c", "a-c-b", false),
        (
            "spiffe://cluster.local/ns/*/sa/*",
            "spiffe://cluster.local/ns/x/sa/y",
            true,
        ),
    ] {
        assert_eq!(glob(p, s), want, "glob({p:?}, {s:?})");
    }
}

#[test]
fn templates_pin_node_identity() {
    // The kubelet client role: CN system:node:<name>, not a hostname.
    let r = Role {
        allowed_domains: vec!["system:node:{{identity.entity.metadata.node_name}}".into()],
        allowed_domains_template: true,
        allow_bare_domains: true,
        enforce_hostnames: false,
        allow_localhost: false,
        organization: vec!["system:nodes".into()],
        ..Role::default()
    };
    let node_a = meta(&[("node_name", "ip-10-0-0-1.ec2.internal")]);
    check(
        &r,
        &node_a,
        &[
            ("system:node:ip-10-0-0-1.ec2.internal", true),
            ("system:node:ip-10-0-0-2.ec2.internal", false),
            ("system:node:{{identity.entity.metadata.node_name}}", false),
            ("ip-10-0-0-1.ec2.internal", false),
        ],
    );
    r.check_common_name("system:node:ip-10-0-0-1.ec2.internal", &node_a)
        .unwrap();
    // No metadata: the template does not resolve and nothing matches.
    let none = TemplateMetadata::new();
    check(
        &r,
        &none,
        &[("system:node:{{identity.entity.metadata.node_name}}", false)],
    );
    // A metadata value cannot smuggle a glob.
    let globby = Role {
        allow_glob_domains: true,
        ..r.clone()
    };
    check(
        &globby,
        &meta(&[("node_name", "*")]),
        &[("system:node:anything", false)],
    );
    // Templating off: the entry is a literal.
    let literal = Role {
        allowed_domains_template: false,
        ..r
    };
    check(
        &literal,
        &node_a,
        &[("system:node:ip-10-0-0-1.ec2.internal", false)],
    );
}

#[test]
fn template_resolution() {
    let m = meta(&[("node_name", "n1"), ("zone", "z")]);
    assert_eq!(
        resolve(
            "{{identity.entity.metadata.node_name}}.{{ identity.entity.metadata.zone }}",
            true,
            &m
        )
        .as_deref(),
        Some("n1.z")
    );
    assert_eq!(
        resolve("{{identity.entity.metadata.missing}}", true, &m),
        None
    );
    assert_eq!(resolve("{{identity.entity.name}}", true, &m), None);
    assert_eq!(
        resolve("{{identity.entity.metadata.node_name", true, &m),
        None
    );
    assert_eq!(resolve("plain", true, &m).as_deref(), Some("plain"));
}

#[test]
fn common_name_validations() {
    let none = TemplateMetadata::new();
    let r = Role {
        allow_any_name: true,
        ..Role::default()
    };
    r.check_common_name("a@example.com", &none).unwrap();
    let host_only = Role {
        cn_validations: vec!["hostname".into()],
        ..r.clone()
    };
    let e = host_only
        .check_common_name("a@example.com", &none)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "common name a@example.com not allowed by this role"
    );
    let disabled = Role {
        cn_validations: vec!["disabled".into()],
        allow_any_name: false,
        ..Role::default()
    };
    disabled
        .check_common_name("Anything at all!", &none)
        .unwrap();
    let e = cluster_role(|_| {})
        .check_common_name("evil.com", &none)
        .unwrap_err();
    assert!(
        matches!(e, PkiError::NameNotAllowed { kind: NameKind::CommonName, ref name } if name == "evil.com")
    );
}

#[test]
fn san_lists_name_the_first_refused_value() {
    let none = TemplateMetadata::new();
    let r = cluster_role(|_| {});
    let e = r
        .check_dns_names(
            &["a.cluster.local".into(), "evil.com".into(), "x.evil".into()],
            &none,
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "subject alternate name evil.com not allowed by this role"
    );
    let e = r.check_emails(&["me@evil.com".into()], &none).unwrap_err();
    assert_eq!(
        e.to_string(),
        "email address me@evil.com not allowed by this role"
    );
}

#[test]
fn ip_and_uri_sans() {
    let none = TemplateMetadata::new();
    let ips: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    cluster_role(|_| {})
        .check_ip_sans(&ips, SanSource::Api)
        .unwrap();
    let no_ip = cluster_role(|r| r.allow_ip_sans = false);
    assert_eq!(
        no_ip
            .check_ip_sans(&ips, SanSource::Api)
            .unwrap_err()
            .to_string(),
        "IP Subject Alternative Names are not allowed in this role, but was provided [10.0.0.1 ::1]"
    );
    no_ip.check_ip_sans(&[], SanSource::Api).unwrap();

    let uri = |s: &str| vec![s.to_string()];
    let e = cluster_role(|_| {})
        .check_uri_sans(&uri("spiffe://cluster.local/x"), SanSource::Csr, &none)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "URI Subject Alternative Names are not allowed in this role, but were provided via CSR"
    );
    let r = cluster_role(|r| r.allowed_uri_sans = vec!["spiffe://cluster.local/ns/*".into()]);
    r.check_uri_sans(
        &uri("spiffe://cluster.local/ns/a/sa/b"),
        SanSource::Api,
        &none,
    )
    .unwrap();
    let e = r
        .check_uri_sans(&uri("spiffe://evil/ns/a"), SanSource::Api, &none)
        .unwrap_err();
    assert!(
        matches!(e, PkiError::NameNotAllowed { kind: NameKind::UriSan(SanSource::Api), ref name } if name == "spiffe://evil/ns/a")
    );
    assert_eq!(
        e.to_string(),
        "URI Subject Alternative Names were provided via the API which are not valid for this role"
    );
    let templ = cluster_role(|r| {
        r.allowed_uri_sans =
            vec!["spiffe://cluster.local/node/{{identity.entity.metadata.node_name}}".into()];
        r.allowed_uri_sans_template = true;
    });
    let m = meta(&[("node_name", "n1")]);
    templ
        .check_uri_sans(&uri("spiffe://cluster.local/node/n1"), SanSource::Api, &m)
        .unwrap();
    assert!(
        templ
            .check_uri_sans(&uri("spiffe://cluster.local/node/n2"), SanSource::Api, &m)
            .is_err()
    );
}

#[test]
fn validate_normalises_and_refuses() {
    let mut r = Role {
        key_bits: 0,
        ..Role::default()
    };
    r.validate().unwrap();
    assert_eq!(r.key_bits, 2048);
    let mut ec = Role {
        key_type: "ec".into(),
        key_bits: 0,
        ..Role::default()
    };
    ec.validate().unwrap();
    assert_eq!(ec.key_bits, 256);
    let mut any = Role {
        key_type: "any".into(),
        key_bits: 4096,
        ..Role::default()
    };
    any.validate().unwrap();
    assert_eq!((any.key_bits, any.key_spec().unwrap()), (0, KeySpec::Any));
    let mut empty_cn = Role {
        cn_validations: vec![],
        ..Role::default()
    };
    empty_cn.validate().unwrap();
    assert_eq!(empty_cn.cn_validations, vec!["email", "hostname"]);

    for (tweak, msg) in [
        (
            Box::new(|r: &mut Role| {
                r.ttl = Duration::from_secs(10);
                r.max_ttl = Duration::from_secs(5)
            }) as Box<dyn Fn(&mut Role)>,
            r#""ttl" value must be less than "max_ttl" value"#,
        ),
        (
            Box::new(|r: &mut Role| r.key_usage = vec!["Nope".into()]),
            "unknown key usage \"Nope\"",
        ),
        (
            Box::new(|r: &mut Role| r.ext_key_usage = vec!["Bogus".into()]),
            "unknown extended key usage \"Bogus\"",
        ),
        (
            Box::new(|r: &mut Role| r.ext_key_usage_oids = vec!["1.x".into()]),
            "\"1.x\" could not be parsed as a valid oid for an extended key usage",
        ),
        (
            Box::new(|r: &mut Role| r.cn_validations = vec!["disabled".into(), "email".into()]),
            "cn_validations value incorrect",
        ),
        (
            Box::new(|r: &mut Role| r.key_bits = 1024),
            "unsupported bit length for RSA key: 1024",
        ),
        (
            Box::new(|r: &mut Role| r.key_type = "dsa".into()),
            "unknown key type: dsa",
        ),
        (
            Box::new(|r: &mut Role| r.use_pss = true),
            "use_pss is not supported by this server",
        ),
    ] {
        let mut r = Role::default();
        tweak(&mut r);
        assert_eq!(r.validate().unwrap_err().to_string(), msg);
    }
}

#[test]
fn key_usages_and_ekus() {
    let r = Role {
        key_usage: vec![
            "digitalsignature".into(),
            "KeyUsageKeyEncipherment".into(),
            "".into(),
        ],
        server_flag: true,
        client_flag: false,
        ext_key_usage: vec!["CodeSigning".into(), "ServerAuth".into()],
        ext_key_usage_oids: vec!["1.3.6.1.4.1.99999.1".into()],
        ..Role::default()
    };
    assert_eq!(
        r.key_usages().unwrap(),
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment
        ]
    );
    assert_eq!(
        r.ext_key_usages().unwrap(),
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::CodeSigning,
            ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 4, 1, 99999, 1]),
        ]
    );
    assert_eq!(parse_oid("2.999.1"), Some(vec![2, 999, 1]));
    assert_eq!(parse_oid("1.40"), None);
    assert_eq!(parse_oid("3.1"), None);
    assert_eq!(parse_oid("1"), None);
}

#[test]
fn defaults_are_vaults_and_survive_storage() {
    let r = Role::default();
    assert!(r.allow_localhost && r.allow_ip_sans && r.enforce_hostnames);
    assert!(
        r.server_flag && r.client_flag && r.use_csr_common_name && r.use_csr_sans && r.require_cn
    );
    assert!(r.allow_wildcard_certificates && !r.allow_any_name && !r.generate_lease && !r.no_store);
    assert_eq!(r.not_before_duration, Duration::from_secs(30));
    assert_eq!(
        (r.key_type.as_str(), r.key_bits, r.signature_bits),
        ("rsa", 0, 0)
    );
    let mut v = r.clone();
    v.validate().unwrap();
    assert_eq!(v.key_bits, 2048);
    assert_eq!(r.issuer_ref, "default");
    // Stored roles missing newer fields load with defaults.
    let partial: Role = serde_json::from_str(r#"{"allowed_domains":["x"],"ttl":60}"#).unwrap();
    assert_eq!(partial.ttl, Duration::from_secs(60));
    assert!(partial.allow_localhost);
    let back: Role = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn hostname_syntax() {
    for (n, ok) in [
        ("a", true),
        ("a.b", true),
        ("a-b.c", true),
        ("a.b.", true),
        ("*.a.b", true),
        ("-a.b", false),
        ("a-.b", false),
        ("a..b", false),
        (".a", false),
        ("a_b", false),
        (&"a".repeat(64), false),
        (&"a".repeat(63), true),
    ] {
        assert_eq!(is_hostname(n), ok, "{n:?}");
    }
}
