//! Property tests of what node-client reads back from disk and from the
//! server: certificates, keys and PEM (`inspect`), and the kubeconfigs it
//! writes (`fetch::kubeconfig`). The stable-toolchain stand-in for fuzzing
//! (issue #15 item 13), run by the normal `cargo test` with fixed case counts.
//!
//! node-client parses no kubeconfig: it writes them, and `fetch::needs` only
//! checks that the file is there. What is tested for kubeconfigs is that any
//! names and paths come back out of the written JSON unchanged (no
//! injection through a common name, cluster name or folder).

use crate::fetch::kubeconfig;
use crate::inspect::{cert_info, cert_info_der, key_matches, key_spki, pem_blocks, pem_encode};
use crate::profile::{KubeconfigSpec, Node, Request};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use std::net::IpAddr;
use std::sync::OnceLock;

/// A bounded run: `cases` cases, no failure files in the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Keys made once: P-256, P-384, Ed25519 (the types node-client reads).
fn keys() -> &'static [KeyPair; 3] {
    static KEYS: OnceLock<[KeyPair; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256"),
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384"),
            KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519"),
        ]
    })
}

/// What a generated certificate holds.
#[derive(Debug, Clone)]
struct Made {
    key: usize,
    cn: String,
    orgs: Vec<String>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    serial: Vec<u8>,
    not_before: i64,
    lifetime: i64,
}

fn made() -> impl Strategy<Value = Made> {
    (
        0..3usize,
        "\\PC{1,24}",
        prop::collection::vec("[a-zA-Z0-9 :-]{1,12}", 0..2),
        prop::collection::vec("[a-z0-9][a-z0-9.-]{0,20}", 0..4),
        prop::collection::vec(any::<IpAddr>(), 0..4),
        prop::collection::vec(any::<u8>(), 1..=20),
        0i64..4_000_000_000,
        1i64..400_000_000,
    )
        .prop_map(
            |(key, cn, orgs, dns, ips, serial, not_before, lifetime)| Made {
                key,
                cn,
                orgs,
                dns,
                ips,
                serial,
                not_before,
                lifetime,
            },
        )
}

fn pem_of(m: &Made) -> String {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, m.cn.as_str());
    // rcgen keeps one value per attribute type: at most one organisation.
    if let Some(o) = m.orgs.first() {
        p.distinguished_name
            .push(DnType::OrganizationName, o.as_str());
    }
    for d in &m.dns {
        p.subject_alt_names
            .push(SanType::DnsName(d.clone().try_into().expect("IA5 name")));
    }
    for ip in &m.ips {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&m.serial));
    p.not_before = time::OffsetDateTime::from_unix_timestamp(m.not_before).expect("in range");
    p.not_after =
        time::OffsetDateTime::from_unix_timestamp(m.not_before + m.lifetime).expect("in range");
    p.self_signed(&keys()[m.key]).expect("certificate").pem()
}

/// Vault's serial form: colon-hex without DER's leading zero octets.
fn serial_text(serial: &[u8]) -> String {
    serial
        .iter()
        .skip_while(|&&b| b == 0)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

proptest! {
    #![proptest_config(config(1000))]

    /// Arbitrary bytes, and PEM-shaped text, never panic in any reader;
    /// random bytes are no certificate and no key, and match nothing.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        text in prop::collection::vec(
            select(&[
                "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----",
                "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----",
                "MIIB", "AAAA", "=", "\n", "\u{0}", "é", "-----",
            ][..]),
            0..10,
        ),
    ) {
        let text = text.concat();
        for input in [&bytes[..], text.as_bytes()] {
            let _ = pem_blocks(input, "CERTIFICATE");
            prop_assert!(cert_info_der(input).is_none());
            prop_assert!(key_spki(input).is_none());
            prop_assert!(!key_matches(input, input));
        }
        prop_assert!(cert_info(&bytes).is_none());
        let wrapped = pem_encode("CERTIFICATE", &bytes);
        prop_assert!(cert_info(wrapped.as_bytes()).is_none());
        prop_assert!(key_spki(pem_encode("PRIVATE KEY", &bytes).as_bytes()).is_none());
    }

    /// PEM round-trips: any DER under any label comes back byte for byte,
    /// with other text around it; and every block still found in that text
    /// with random bytes overwritten re-encodes and decodes to itself.
    #[test]
    fn pem_round_trips(
        der in prop::collection::vec(any::<u8>(), 0..300),
        label in "[A-Z][A-Z0-9 ]{0,20}[A-Z0-9]",
        junk in "[a-z \n]{0,16}",
        noise in prop::collection::vec((any::<Index>(), any::<u8>()), 0..6),
    ) {
        let pem = format!("{junk}{}{junk}{}", pem_encode(&label, &der), pem_encode(&label, &[1, 2]));
        prop_assert_eq!(pem_blocks(pem.as_bytes(), &label), vec![der.clone(), vec![1u8, 2]]);
        let mut damaged = pem.into_bytes();
        for (at, b) in &noise {
            let i = at.index(damaged.len());
            damaged[i] = *b;
        }
        for block in pem_blocks(&damaged, &label) {
            prop_assert_eq!(pem_blocks(pem_encode(&label, &block).as_bytes(), &label), vec![block]);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// A certificate reads back with exactly its names, addresses, serial
    /// (Vault's colon form) and validity; its key matches it, the other
    /// keys do not.
    #[test]
    fn a_certificate_reads_back_what_it_holds(m in made()) {
        let pem = pem_of(&m);
        let info = cert_info(pem.as_bytes()).expect("a certificate");
        prop_assert_eq!(&info.common_name, &m.cn);
        prop_assert_eq!(&info.issuer, &m.cn);
        prop_assert_eq!(&info.organization, &m.orgs.iter().take(1).cloned().collect::<Vec<_>>());
        prop_assert_eq!(&info.dns_names, &m.dns);
        prop_assert_eq!(&info.ip_addresses, &m.ips);
        prop_assert_eq!(&info.serial, &serial_text(&m.serial));
        prop_assert_eq!(info.not_before, m.not_before);
        prop_assert_eq!(info.not_after, m.not_before + m.lifetime);
        for (i, k) in keys().iter().enumerate() {
            prop_assert_eq!(key_matches(pem.as_bytes(), k.serialize_pem().as_bytes()), i == m.key);
        }
    }

    /// A certificate with bytes flipped, truncated or extended never panics
    /// a reader, and never makes a key match that is not the key of what
    /// the certificate (as read) says: `key_matches` holds only if the
    /// SubjectPublicKeyInfo read from the damaged certificate is exactly
    /// that key's.
    #[test]
    fn a_damaged_certificate_never_matches_a_wrong_key(
        m in made(),
        flips in prop::collection::vec((any::<Index>(), 1..=255u8), 1..=3),
        cut in any::<Index>(),
    ) {
        let pem = pem_of(&m);
        let der = pem_blocks(pem.as_bytes(), "CERTIFICATE").remove(0);
        let mut bad = der.clone();
        for (at, mask) in &flips {
            bad[at.index(der.len())] ^= mask;
        }
        for damaged in [bad, der[..cut.index(der.len())].to_vec()] {
            let info = cert_info_der(&damaged);
            let text = pem_encode("CERTIFICATE", &damaged);
            for k in keys() {
                if key_matches(text.as_bytes(), k.serialize_pem().as_bytes()) {
                    let spki = rcgen::PublicKeyData::subject_public_key_info(k);
                    prop_assert_eq!(info.as_ref().map(|i| &i.spki), Some(&spki));
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// A kubeconfig written for any cluster name, common name, folder,
    /// file names and server URL is JSON that gives each of them back
    /// unchanged in its place (quotes, backslashes and newlines included).
    #[test]
    fn a_kubeconfig_gives_back_its_names(
        cluster in "\\PC{1,20}",
        cn in "\\PC{1,20}",
        dir in "/[a-z0-9 \"\\\\_.-]{1,20}",
        file in "[a-z0-9_.-]{1,12}",
        ca in prop::option::of("[a-z0-9_.-]{1,12}"),
        server in "\\PC{1,30}",
    ) {
        let node = Node { cluster: cluster.clone(), name: "n".into(), ips: vec![], pki_dir: dir.clone() };
        let req = Request {
            cert: "m/r".into(),
            mount: "c/pki/m".into(),
            role: "r".into(),
            file: file.clone(),
            ca_file: ca.clone(),
            common_name: cn.clone(),
            alt_names: vec![],
            ip_sans: vec![],
            kubeconfig: Some(KubeconfigSpec { file: "k.conf".into(), server: server.clone() }),
            public_key_bundle: None,
            crl_file: None,
            reload: None,
            owner: None,
            group: None,
            key_mode: 0o600,
        };
        let text = kubeconfig(&node, &req, &server);
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let at = |p: &str| std::path::Path::new(&dir).join(p).display().to_string();
        prop_assert_eq!(&v["clusters"][0]["name"], &serde_json::json!(cluster));
        prop_assert_eq!(&v["clusters"][0]["cluster"]["server"], &serde_json::json!(server));
        prop_assert_eq!(
            &v["clusters"][0]["cluster"]["certificate-authority"],
            &serde_json::json!(at(ca.as_deref().unwrap_or("ca.crt")))
        );
        prop_assert_eq!(&v["users"][0]["name"], &serde_json::json!(cn));
        prop_assert_eq!(&v["users"][0]["user"]["client-certificate"], &serde_json::json!(at(&format!("{file}.crt"))));
        prop_assert_eq!(&v["users"][0]["user"]["client-key"], &serde_json::json!(at(&format!("{file}.key"))));
        prop_assert_eq!(&v["contexts"][0]["context"]["cluster"], &serde_json::json!(cluster));
        prop_assert_eq!(&v["contexts"][0]["context"]["user"], &serde_json::json!(cn));
    }
}
