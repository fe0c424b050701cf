//! The trust-root rules are one: pki-server's `publish-ca` and node-client's
//! `fetch-ca` accept and refuse exactly the same CA bundles, and parse
//! `s3://BUCKET/KEY` the same way (issue #20: the two copies had drifted).
//! Both now call the `policies` crate; this table keeps it so.

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

fn cert(ca: Option<bool>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["pki.example".to_string()]).unwrap();
    p.is_ca = match ca {
        Some(true) => IsCa::Ca(BasicConstraints::Unconstrained),
        Some(false) => IsCa::ExplicitNoCa,
        None => IsCa::NoCa,
    };
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

#[test]
fn publish_ca_and_fetch_ca_accept_and_refuse_the_same_bundles() {
    let (ca, ca_key) = cert(Some(true));
    let (ca2, _) = cert(Some(true));
    let (leaf, _) = cert(None);
    let (not_ca, _) = cert(Some(false));
    let inputs: Vec<(String, bool)> = vec![
        (ca.clone(), true),
        (format!("\n{ca}\n{ca2}"), true),
        (ca.replace('\n', "\r\n"), true),
        (String::new(), false),
        (leaf.clone(), false),
        (not_ca, false),
        (format!("{ca}{leaf}"), false),
        (format!("{ca}{ca_key}"), false),
        (ca_key, false),
        (format!("junk\n{ca}"), false),
        (ca.replace("-----END CERTIFICATE-----\n", ""), false),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
            false,
        ),
        (format!("{ca}{}", "\n".repeat(1 << 20)), false),
    ];
    for (input, ok) in &inputs {
        let published = pki_server::publish::check_ca_bundle(input.as_bytes());
        let fetched = node_client::fetch_ca::check_ca_bundle(input.as_bytes());
        assert_eq!(published, fetched, "{input:.80}");
        assert_eq!(published.is_ok(), *ok, "{input:.80}: {published:?}");
    }
}

#[test]
fn both_sides_parse_s3_locations_the_same_way() {
    for (s, ok) in [
        ("s3://demo-config/ca/pki-server-ca.pem", true),
        ("s3://a.b-c/k", true),
        ("s3://-b/k", false),
        ("s3://b-/k", false),
        ("s3://bucket/a/../b", false),
        ("s3://bucket/a/./b", false),
        ("s3://bucket/a//b", false),
        ("s3://bucket/", false),
        ("s3://Bucket/k", false),
        ("s3://bu/k", false),
        ("bucket/k", false),
        ("s3://bucket/k y", false),
    ] {
        let published = pki_server::publish::Location::parse(s);
        let fetched = node_client::aws::s3::Location::parse(s);
        assert_eq!(published, fetched, "{s}");
        assert_eq!(published.is_ok(), ok, "{s}: {published:?}");
    }
}
