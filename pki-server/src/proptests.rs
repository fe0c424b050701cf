//! Property tests of every parser of untrusted input: the stable-toolchain
//! stand-in for coverage-guided fuzzing (issue #15 item 13), run by the
//! normal `cargo test`.
//!
//! Each test has a fixed case count (`config`), and asserts more than "no
//! panic": garbage is refused with an error, an encoder's output parses back
//! to what was encoded, and a mutated valid input is either refused or read
//! as something consistent with the original. Failures are not persisted to
//! files: proptest prints the shrunk input, which then belongs in a unit test
//! beside the code it breaks.
//!
//! What is covered, by module: `pki::csr` (CSRs), `auth::policy` (HCL/JSON
//! policies and the ACL decision against a reference model of Vault's
//! rules), `api::request` and `api::params` (HTTP request decoding and
//! Vault's loose parameter types), `seal::shamir` (shares), `seal::key` and
//! `seal::Barrier` (sealed values), the file storage's write-ahead log replay
//! (through `FileStorage::open`), `auth::jws` (compact JWS), `auth::aws` (STS
//! answers and IAM login requests) and `pki::role` (name checks).
//!
//! Where a property found a difference from Vault or from the docs, a plain
//! test pins today's behaviour with a FIXME (`acl_differs_from_vault_*`,
//! `a_leading_double_slash_is_accepted`, `a_number_beyond_i64_saturates`).

use proptest::prelude::*;
use proptest::sample::{Index, select};
use std::collections::BTreeMap;

/// A bounded run: `cases` cases, no failure files in the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// PEM text of `der` under `label` (RFC 7468, 64 columns).
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One single-threaded runtime for the async storage calls of one test.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Text that looks like the input of the parser under test often enough to
/// get past its first checks: `tokens` joined with random separators, mixed
/// with arbitrary strings.
fn token_soup(tokens: &'static [&'static str], max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::collection::vec(
            (select(tokens), select(&[" ", "", "\n", "\t", "/", ","][..])),
            0..max
        )
        .prop_map(|v| v.into_iter().map(|(t, s)| format!("{t}{s}")).collect()),
        1 => any::<String>(),
    ]
    .boxed()
}

/// CSRs: `ParsedCsr::from_pem` and `from_der`.
mod csr {
    use super::*;
    use crate::pki::ParsedCsr;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
    use std::net::IpAddr;
    use std::sync::OnceLock;

    /// One P-256 and one Ed25519 key for every case (signing is the cheap part).
    fn keys() -> &'static [KeyPair; 2] {
        static KEYS: OnceLock<[KeyPair; 2]> = OnceLock::new();
        KEYS.get_or_init(|| {
            [
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key"),
                KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key"),
            ]
        })
    }

    /// What a CSR asks for, as generated.
    #[derive(Debug, Clone)]
    struct Asked {
        key: usize,
        /// (attribute, OID arcs, value), in order, each attribute once.
        subject: Vec<(DnType, Vec<u64>, String)>,
        dns: Vec<String>,
        emails: Vec<String>,
        ips: Vec<IpAddr>,
    }

    fn asked() -> impl Strategy<Value = Asked> {
        let attrs = vec![
            (DnType::CommonName, vec![2, 5, 4, 3]),
            (DnType::OrganizationName, vec![2, 5, 4, 10]),
            (DnType::OrganizationalUnitName, vec![2, 5, 4, 11]),
            (DnType::LocalityName, vec![2, 5, 4, 7]),
            (DnType::StateOrProvinceName, vec![2, 5, 4, 8]),
        ];
        (
            0..2usize,
            Just(attrs).prop_shuffle(),
            0..=5usize,
            prop::collection::vec("\\PC{1,24}", 5),
            prop::collection::vec("[a-z0-9][a-z0-9.-]{0,30}", 0..4),
            prop::collection::vec("[a-z0-9.]{1,10}@[a-z0-9.-]{1,20}", 0..3),
            prop::collection::vec(any::<IpAddr>(), 0..4),
        )
            .prop_map(|(key, attrs, n, values, dns, emails, ips)| Asked {
                key,
                subject: attrs
                    .into_iter()
                    .zip(values)
                    .take(n)
                    .map(|((t, oid), v)| (t, oid, v))
                    .collect(),
                dns,
                emails,
                ips,
            })
    }

    fn der_of(a: &Asked) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        for (t, _, v) in &a.subject {
            p.distinguished_name.push(t.clone(), v.as_str());
        }
        for d in &a.dns {
            p.subject_alt_names.push(SanType::DnsName(
                d.clone().try_into().expect("IA5 DNS name"),
            ));
        }
        for e in &a.emails {
            p.subject_alt_names.push(SanType::Rfc822Name(
                e.clone().try_into().expect("IA5 email"),
            ));
        }
        for ip in &a.ips {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        p.serialize_request(&keys()[a.key])
            .expect("CSR")
            .der()
            .to_vec()
    }

    /// What a parsed CSR says, for comparing two parses.
    #[derive(Debug, PartialEq)]
    struct View {
        common_name: Option<String>,
        subject: Vec<(Vec<u64>, String)>,
        dns: Vec<String>,
        emails: Vec<String>,
        ips: Vec<IpAddr>,
        uris: Vec<String>,
        other_sans: usize,
        spki: Vec<u8>,
        key: crate::pki::CsrKey,
    }

    fn view(c: &ParsedCsr) -> View {
        View {
            common_name: c.common_name().map(str::to_string),
            subject: c.subject().to_vec(),
            dns: c.dns_names().to_vec(),
            emails: c.emails().to_vec(),
            ips: c.ip_sans().to_vec(),
            uris: c.uri_sans().to_vec(),
            other_sans: c.other_san_count(),
            spki: c.spki_der().to_vec(),
            key: c.key(),
        }
    }

    proptest! {
        #![proptest_config(config(512))]

        /// A valid CSR (P-256 or Ed25519; random subject attributes in random
        /// order, DNS/email/IP SANs) parses back to exactly what it asked
        /// for, from DER and from PEM with text around the block.
        #[test]
        fn a_valid_csr_round_trips_its_subject_and_names(a in asked(), junk in "[a-z \n]{0,20}") {
            let der = der_of(&a);
            let csr = ParsedCsr::from_der(&der).expect("a valid CSR parses");
            let want: Vec<(Vec<u64>, String)> =
                a.subject.iter().map(|(_, oid, v)| (oid.clone(), v.clone())).collect();
            prop_assert_eq!(csr.subject(), &want[..]);
            let cn = a.subject.iter().find(|(t, _, _)| *t == DnType::CommonName);
            prop_assert_eq!(csr.common_name(), cn.map(|(_, _, v)| v.as_str()));
            prop_assert_eq!(csr.dns_names(), &a.dns[..]);
            prop_assert_eq!(csr.emails(), &a.emails[..]);
            prop_assert_eq!(csr.ip_sans(), &a.ips[..]);
            prop_assert_eq!(csr.other_san_count(), 0);
            let spki = rcgen::PublicKeyData::subject_public_key_info(&keys()[a.key]);
            prop_assert_eq!(csr.spki_der(), &spki[..]);
            prop_assert_eq!(csr.key().key_type, ["ec", "ed25519"][a.key]);
            let pem = pem("CERTIFICATE REQUEST", &der);
            let again = ParsedCsr::from_pem(&format!("{junk}{pem}{junk}")).expect("PEM parses");
            prop_assert_eq!(view(&again), view(&csr));
        }

        /// A valid CSR with one to four bits flipped is refused, or (when a
        /// flip lands where DER or the signature encoding has slack) parses
        /// to exactly what the original said: a flip never changes a name,
        /// a key or a subject attribute that passes the signature check.
        /// Truncated and extended CSRs are always refused.
        #[test]
        fn a_bit_flipped_csr_is_refused_or_unchanged(
            a in asked(),
            flips in prop::collection::vec((any::<Index>(), 0..8u8), 1..=4),
            cut in any::<Index>(),
            tail in prop::collection::vec(any::<u8>(), 1..8),
        ) {
            let der = der_of(&a);
            let original = view(&ParsedCsr::from_der(&der).expect("valid"));
            let mut bad = der.clone();
            for (at, bit) in &flips {
                bad[at.index(der.len())] ^= 1 << bit;
            }
            if bad != der && let Ok(c) = ParsedCsr::from_der(&bad) {
                prop_assert_eq!(view(&c), original, "a flipped CSR parsed differently");
            }
            prop_assert!(ParsedCsr::from_der(&der[..cut.index(der.len())]).is_err());
            let mut longer = der.clone();
            longer.extend_from_slice(&tail);
            prop_assert!(ParsedCsr::from_der(&longer).is_err());
        }

        /// Arbitrary bytes as DER, and arbitrary or PEM-shaped text, never
        /// panic and are refused (a random blob is not a signed CSR).
        #[test]
        fn random_bytes_and_text_are_refused(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            text in token_soup(&[
                "-----BEGIN CERTIFICATE REQUEST-----", "-----END CERTIFICATE REQUEST-----",
                "-----BEGIN NEW CERTIFICATE REQUEST-----", "-----BEGIN ", "-----",
                "MIIB", "AAAA", "====", "\n", "ZZ", "+/",
            ], 12),
        ) {
            prop_assert!(ParsedCsr::from_der(&bytes).is_err());
            prop_assert!(ParsedCsr::from_pem(&text).is_err());
            let wrapped = pem("CERTIFICATE REQUEST", &bytes);
            prop_assert!(ParsedCsr::from_pem(&wrapped).is_err());
        }
    }
}

/// ACL policies (`auth::policy`): parsing and the decision.
mod policy {
    use super::*;
    use crate::auth::policy::{Acl, Policy};

    /// Capability names in `Caps::names` order; bit `i` of a mask is `CAPS[i]`.
    const CAPS: [&str; 8] = [
        "create", "delete", "deny", "list", "patch", "read", "sudo", "update",
    ];
    const DENY: u8 = 1 << 2;

    /// What `Caps::names` says for a merged mask: `["deny"]` for deny or nothing.
    fn names(mask: u8) -> Vec<&'static str> {
        if mask == 0 || mask & DENY != 0 {
            return vec!["deny"];
        }
        (0..8)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| CAPS[i])
            .collect()
    }

    /// Vault's merge of two rules on one pattern: union, deny alone wins.
    fn merge(a: u8, b: u8) -> u8 {
        if (a | b) & DENY != 0 { DENY } else { a | b }
    }

    fn caps_list(mask: u8) -> String {
        (0..8)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| format!("\"{}\"", CAPS[i]))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn hcl(rules: &[(String, u8)]) -> String {
        rules
            .iter()
            .map(|(p, m)| {
                format!(
                    "path \"{p}\" {{\n  capabilities = [{}]\n}}\n",
                    caps_list(*m)
                )
            })
            .collect()
    }

    /// A valid pattern: 1-3 segments of `a`, `b`, `ab`, `+`, `x+y`, and no
    /// glob, a trailing `*` on the last segment, or a `*` segment; or `*`.
    fn pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            12 => (
                prop::collection::vec(select(&["a", "b", "ab", "+", "x+y"][..]), 1..=3),
                0..3u8,
            )
                .prop_map(|(segs, glob)| {
                    let p = segs.join("/");
                    match glob {
                        1 if !p.ends_with('+') => format!("{p}*"),
                        1 | 2 => format!("{p}/*"),
                        _ => p,
                    }
                }),
            1 => Just("*".to_string()),
        ]
    }

    /// A request path as the ACL sees it (a LIST path ends in `/`).
    fn acl_path() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(select(&["a", "b", "ab", "abc", "+", "x+y", "c"][..]), 1..=4),
            any::<bool>(),
        )
            .prop_map(|(segs, list)| {
                let p = segs.join("/");
                if list { format!("{p}/") } else { p }
            })
    }

    /// Which rules `decision` follows.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Dialect {
        /// Vault's, as `vault/acl.go` has them.
        Vault,
        /// Vault's with this server's two known differences (see
        /// `acl_differs_from_vault_*`): a `+` segment never matches an empty
        /// path segment, and the priority counts every `+` character of a
        /// pattern, not its `+` segments.
        Here,
    }

    /// Vault's decision (`vault/acl.go`: `AllowOperation` then
    /// `CheckAllowedFromNonExactPaths`), written out plainly: an exact rule
    /// on the path, or for a LIST path on the path without its `/`; else of
    /// the longest matching prefix rule and every matching `+` rule, the
    /// highest in Vault's order (first wildcard later; not a prefix; fewer
    /// `+` segments; longer; lexically greater). No rule: nothing (deny).
    fn decision(merged: &BTreeMap<String, u8>, path: &str, dialect: Dialect) -> u8 {
        let is_glob = |p: &str| p.contains('+') || p.ends_with('*');
        if let Some(m) = merged.get(path).filter(|_| !is_glob(path)) {
            return *m;
        }
        if let Some(bare) = path.strip_suffix('/')
            && let Some(m) = merged.get(bare).filter(|_| !is_glob(bare))
        {
            return *m;
        }
        // (first wildcard, is prefix, + segments, wcPath, mask)
        let mut found: Vec<(usize, bool, usize, String, u8)> = Vec::new();
        let longest_prefix = merged
            .iter()
            .filter(|(p, _)| !p.contains('+') && p.ends_with('*'))
            .map(|(p, m)| (&p[..p.len() - 1], *m))
            .filter(|(p, _)| path.starts_with(p))
            .max_by_key(|(p, _)| p.len());
        if let Some((p, m)) = longest_prefix {
            found.push((p.len(), true, 0, p.to_string(), m));
        }
        let parts: Vec<&str> = path.split('/').collect();
        'rules: for (full, m) in merged.iter().filter(|(p, _)| p.contains('+')) {
            let first = full.find('+').unwrap_or(0);
            let (wc, prefix) = match full.strip_suffix('*') {
                Some(p) => (p, true),
                None => (full.as_str(), false),
            };
            let segs: Vec<&str> = wc.split('/').collect();
            if parts.len() < segs.len() || (!prefix && parts.len() != segs.len()) {
                continue;
            }
            let mut plus = 0;
            for (i, s) in segs.iter().enumerate() {
                let ok = if *s == "+" {
                    plus += 1;
                    dialect == Dialect::Vault || !parts[i].is_empty()
                } else {
                    *s == parts[i] || (prefix && i == segs.len() - 1 && parts[i].starts_with(s))
                };
                if !ok {
                    continue 'rules;
                }
            }
            if dialect == Dialect::Here {
                plus = full.matches('+').count();
            }
            found.push((first, prefix, plus, wc.to_string(), *m));
        }
        found
            .into_iter()
            .max_by(|a, b| {
                a.0.cmp(&b.0)
                    .then(b.1.cmp(&a.1))
                    .then(b.2.cmp(&a.2))
                    .then(a.3.len().cmp(&b.3.len()))
                    .then(a.3.cmp(&b.3))
            })
            .map_or(0, |f| f.4)
    }

    fn acl_of(policies: &[&str]) -> Acl {
        let parsed: Vec<Policy> = policies
            .iter()
            .map(|p| Policy::parse(p).expect("policy"))
            .collect();
        Acl::new(&parsed, false)
    }

    /// FIXME: Vault's `+` matches any one segment, an empty one too, so a
    /// LIST path (`secret/`, an empty last segment) is decided by
    /// `secret/+`; here `+` needs a non-empty segment and `secret/*`
    /// decides: Vault denies this LIST, this server allows it.
    #[test]
    fn acl_differs_from_vault_on_a_plus_against_an_empty_segment() {
        let acl = acl_of(&[
            r#"path "secret/*" { capabilities = ["list"] }"#,
            r#"path "secret/+" { capabilities = ["deny"] }"#,
        ]);
        assert_eq!(acl.capabilities("secret/").names(), ["list"]);
        let mut merged = BTreeMap::new();
        merged.insert("secret/*".to_string(), 1 << 3);
        merged.insert("secret/+".to_string(), DENY);
        assert_eq!(
            names(decision(&merged, "secret/", Dialect::Vault)),
            ["deny"]
        );
        assert_eq!(names(decision(&merged, "secret/", Dialect::Here)), ["list"]);
    }

    /// FIXME: Vault ranks patterns with as many `+` *segments* lower;
    /// `lower_priority` counts every `+` character, so a literal `+`
    /// inside a segment (`x+y`) makes a longer, more specific pattern lose:
    /// Vault grants `create` here, this server `delete`.
    #[test]
    fn acl_differs_from_vault_on_a_literal_plus_inside_a_segment() {
        let acl = acl_of(&[
            r#"path "x+y/x+y*" { capabilities = ["create"] }"#,
            r#"path "x+y*" { capabilities = ["delete"] }"#,
        ]);
        assert_eq!(acl.capabilities("x+y/x+y").names(), ["delete"]);
        let mut merged = BTreeMap::new();
        merged.insert("x+y/x+y*".to_string(), 1);
        merged.insert("x+y*".to_string(), 1 << 1);
        assert_eq!(
            names(decision(&merged, "x+y/x+y", Dialect::Vault)),
            ["create"]
        );
        assert_eq!(
            names(decision(&merged, "x+y/x+y", Dialect::Here)),
            ["delete"]
        );
    }

    proptest! {
        #![proptest_config(config(2000))]

        /// Arbitrary text and HCL/JSON-shaped token soup never panic; what
        /// parses has only patterns the matcher understands (no leading
        /// `/`, `*` only last, no `+*`).
        #[test]
        fn arbitrary_text_never_panics_and_parsed_patterns_are_well_formed(
            text in token_soup(&[
                "path", "\"a/*\"", "\"+/b\"", "\"x\"", "{", "}", "[", "]", "=", ":",
                "capabilities", "\"read\"", "\"deny\"", "\"fly\"", "policy", "\"write\"",
                "allowed_parameters", "denied_parameters", "required_parameters",
                "{\"path\":", "null", "1", "true", "#", "//", "/*", "*/", "${x}", "<<EOF",
                "EOF", "\"\\u0000\"", "min_wrapping_ttl", "\"1s\"",
            ], 40),
        ) {
            if let Ok(p) = Policy::parse(&text) {
                for pat in p.rules.keys() {
                    prop_assert!(!pat.starts_with('/'), "{pat:?}");
                    prop_assert!(!pat.contains("+*"), "{pat:?}");
                    prop_assert!(pat.find('*').is_none_or(|i| i == pat.len() - 1), "{pat:?}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(config(1000))]

        /// Generated valid policies parse, in HCL (duplicate patterns merged:
        /// union, `deny` alone wins) and in JSON, to the same rules with the
        /// generated capabilities; a one-character mutation of the HCL is
        /// refused or parses to well-formed patterns.
        #[test]
        fn generated_policies_parse_in_hcl_and_json(
            rules in prop::collection::vec((pattern(), any::<u8>()), 1..8),
            at in any::<Index>(),
            ch in any::<char>(),
        ) {
            let text = hcl(&rules);
            let parsed = Policy::parse(&text).expect("a generated policy parses");
            let mut want: BTreeMap<String, u8> = BTreeMap::new();
            for (p, m) in &rules {
                let cur = want.get(p).copied();
                want.insert(p.clone(), cur.map_or(*m, |c| merge(c, *m)));
            }
            prop_assert_eq!(parsed.rules.len(), want.len());
            for (p, m) in &want {
                prop_assert_eq!(parsed.rules[p].caps.names(), names(*m), "{}", p);
            }
            let json = serde_json::json!({
                "path": want.iter().map(|(p, m)| {
                    let caps: Vec<&str> = (0..8).filter(|i| m & (1 << i) != 0).map(|i| CAPS[i]).collect();
                    (p.clone(), serde_json::json!({ "capabilities": caps }))
                }).collect::<serde_json::Map<_, _>>()
            });
            let from_json = Policy::parse(&json.to_string()).expect("JSON policy parses");
            prop_assert_eq!(&from_json, &parsed);

            let mut chars: Vec<char> = text.chars().collect();
            let i = at.index(chars.len());
            chars[i] = ch;
            let mutated: String = chars.into_iter().collect();
            if let Ok(p) = Policy::parse(&mutated) {
                for pat in p.rules.keys() {
                    prop_assert!(!pat.starts_with('/'), "{pat:?}");
                    prop_assert!(pat.find('*').is_none_or(|i| i == pat.len() - 1), "{pat:?}");
                    prop_assert!(!pat.contains("+*"), "{pat:?}");
                }
            }
        }

        /// `Acl::capabilities` agrees with a plain reference model of Vault's
        /// decision (`decision`) for random sets of policies (exact paths,
        /// trailing `*` globs, `+` segments, literal `+` in a segment,
        /// `deny`, the same pattern in several policies) and random request
        /// paths, LIST paths too; where the model with Vault's rules and
        /// with this server's two known differences disagree, the latter
        /// (pinned by the two FIXME tests above).
        #[test]
        fn acl_capabilities_match_the_vault_reference_model(
            policies in prop::collection::vec(
                prop::collection::vec((pattern(), any::<u8>()), 0..6), 1..=3),
            paths in prop::collection::vec(acl_path(), 8),
        ) {
            let parsed: Vec<Policy> = policies
                .iter()
                .map(|rules| Policy::parse(&hcl(rules)).expect("generated policy"))
                .collect();
            let acl = Acl::new(&parsed, false);
            let mut merged: BTreeMap<String, u8> = BTreeMap::new();
            for (p, m) in policies.iter().flatten() {
                let cur = merged.get(p).copied();
                merged.insert(p.clone(), cur.map_or(*m, |c| merge(c, *m)));
            }
            for path in &paths {
                // Vault's answer, except in the two cases pinned above.
                let vault = decision(&merged, path, Dialect::Vault);
                let here = decision(&merged, path, Dialect::Here);
                prop_assert_eq!(
                    acl.capabilities(path).names(),
                    names(here),
                    "path {:?} with rules {:?} (Vault: {:?})", path, merged, names(vault)
                );
            }
        }
    }
}

/// HTTP request decoding (`api::request::Request::parse`).
mod request {
    use super::*;
    use crate::api::request::{Operation, Request};
    use axum::http::{HeaderMap, Method, StatusCode};

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![
            4 => select(&["GET", "LIST", "PUT", "POST", "DELETE", "HEAD"][..]),
            1 => select(&["PATCH", "OPTIONS", "CONNECT", "TRACE", "get", "Put"][..]),
        ]
        .prop_map(|m| Method::from_bytes(m.as_bytes()).expect("a method token"))
    }

    /// Paths built from what decoding and the segment checks care about.
    fn raw_path() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::collection::vec(
                select(&[
                    "/", "a", "pki", "sys", "/", "issue", "/", "b", "x", "/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%25", "%",
                    "%0", "%00", "%0a", "%7f", "%c3%a9", "%ff", "%zz", "+", "%2B", " ", "é", "~",
                    "//", "%2e%2e", ".%2e", "v1", "%5c", "\\",
                ][..]),
                0..12,
            )
            .prop_map(|v| format!("/v1/{}", v.concat())),
            1 => any::<String>(),
            1 => "/v1/\\PC{0,30}",
        ]
    }

    /// Bytes of a request body: JSON-shaped or arbitrary.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            token_soup(
                &[
                    "{",
                    "}",
                    "[",
                    "]",
                    "\"a\"",
                    ":",
                    ",",
                    "null",
                    "1",
                    "-0",
                    "1e999",
                    "true",
                    "\"\\ud800\"",
                    " ",
                    "\"k\""
                ],
                16
            )
            .prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..64),
        ]
    }

    fn parse(
        m: &Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Request, StatusCode> {
        Request::parse(m, path, query, &HeaderMap::new(), body).map_err(|e| e.status)
    }

    /// JSON values up to a small depth.
    pub(super) fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// FIXME: `/v1//x` (or `/v1/%2Fx`) is accepted with the path `/x`:
    /// the `//` check looks only below `/v1/`, so a leading empty segment
    /// passes, contrary to docs/api-compat.md ("a decoded `//` gets 404").
    /// Harmless as far as found (no mount, sys or auth path starts with
    /// `/`, so it routes nowhere and ACL patterns never match it) but not
    /// the documented behaviour.
    #[test]
    fn a_leading_double_slash_is_accepted() {
        for raw in ["/v1//x", "/v1/%2Fx", "/v1/%2fsys/seal"] {
            let r = parse(&Method::GET, raw, None, b"").expect("accepted today");
            assert!(
                r.path.starts_with('/') && !r.path.starts_with("//"),
                "{raw}"
            );
        }
        assert_eq!(
            parse(&Method::GET, "/v1/a//x", None, b"").err(),
            Some(StatusCode::NOT_FOUND)
        );
    }

    proptest! {
        #![proptest_config(config(2000))]

        /// Any method, path, query and body: no panic; a refusal is 400,
        /// 404 or 405; an accepted path, once decoded, has no `.`/`..`
        /// segment, no `//`, no control character and no trailing `/`; the
        /// operation follows the method; only an update carries a body.
        #[test]
        fn arbitrary_requests_never_panic_and_accepted_paths_are_clean(
            m in method(),
            path in raw_path(),
            query in prop::option::of(token_soup(&["list=true", "list", "=", "&", "%", "+", "%41", "list=1"], 6)),
            body in body(),
        ) {
            match parse(&m, &path, query.as_deref(), &body) {
                Err(status) => prop_assert!(
                    [StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED]
                        .contains(&status),
                    "{status}"
                ),
                Ok(r) => {
                    let p = &r.path;
                    prop_assert!(!p.contains("//"), "{p:?} from {path:?}");
                    // Only a leading empty segment gets through (FIXME below).
                    prop_assert!(p.split('/').skip(1).all(|s| !s.is_empty()), "{p:?} from {path:?}");
                    prop_assert!(!p.split('/').any(|s| s == "." || s == ".."), "{p:?} from {path:?}");
                    prop_assert!(!p.ends_with('/'), "{p:?}");
                    prop_assert!(!p.chars().any(char::is_control), "{p:?}");
                    let want = match m.as_str() {
                        "GET" | "LIST" => [Operation::Read, Operation::List].as_slice(),
                        "PUT" | "POST" => &[Operation::Update],
                        "DELETE" => &[Operation::Delete],
                        "HEAD" => &[Operation::Head],
                        other => return Err(TestCaseError::fail(format!("{other} accepted"))),
                    };
                    prop_assert!(want.contains(&r.op), "{m} gave {:?}", r.op);
                    if m == Method::GET && r.op == Operation::List {
                        prop_assert!(query.as_deref().is_some_and(|q| q.contains("list")));
                    }
                    if r.op != Operation::Update {
                        prop_assert!(r.data.is_empty());
                    }
                    prop_assert!(r.data.values().all(|v| !v.is_null()));
                }
            }
        }

        /// Decoding is exactly once: a path of plain segments with any of its
        /// bytes percent-encoded (either hex case) reads as the plain path,
        /// and an encoded `%` stays a `%`.
        #[test]
        fn percent_encoded_paths_decode_once_to_the_plain_path(
            segs in prop::collection::vec("[a-zA-Z0-9_:+~-]{1,8}|[a-z]{1,3}%[0-9A-F]{2}", 1..5),
            encode in prop::collection::vec(any::<bool>(), 64),
            upper in any::<bool>(),
        ) {
            let plain = segs.join("/");
            let mut raw = String::from("/v1/");
            for (i, b) in plain.bytes().enumerate() {
                if encode[i % encode.len()] || b == b'%' {
                    raw.push_str(&if upper { format!("%{b:02X}") } else { format!("%{b:02x}") });
                } else {
                    raw.push(char::from(b));
                }
            }
            let r = parse(&Method::GET, &raw, None, b"").expect("an encoded plain path");
            prop_assert_eq!(r.path, plain);
        }

        /// A JSON object body reads as that object without its `null`
        /// fields (PUT and POST alike); any other JSON value, or JSON with
        /// trailing garbage, is refused with 400.
        #[test]
        fn json_bodies_read_as_their_object_without_nulls(v in json(), post in any::<bool>()) {
            let m = if post { Method::POST } else { Method::PUT };
            let text = serde_json::to_vec(&v).expect("JSON");
            let got = parse(&m, "/v1/x", None, &text);
            match &v {
                serde_json::Value::Object(_) => {
                    // serde_json reads floats back to the nearest double, not always the same one.
                    let Ok(serde_json::Value::Object(o)) = serde_json::from_slice::<serde_json::Value>(&text) else {
                        return Err(TestCaseError::fail("serde_json reads its own object"));
                    };
                    let want: serde_json::Map<_, _> =
                        o.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
                    prop_assert_eq!(got.expect("an object body").data, want);
                    let mut trailing = text.clone();
                    trailing.extend_from_slice(b" x");
                    prop_assert_eq!(parse(&m, "/v1/x", None, &trailing).err(), Some(StatusCode::BAD_REQUEST));
                }
                serde_json::Value::Null => prop_assert!(got.expect("a null body").data.is_empty()),
                _ => prop_assert_eq!(got.err(), Some(StatusCode::BAD_REQUEST)),
            }
        }
    }
}

/// Vault's loose parameter types (`api::params`).
mod params {
    use super::*;
    use crate::api::params;
    use serde_json::{Map, Value, json};

    fn one(v: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("k".into(), v);
        m
    }

    proptest! {
        #![proptest_config(config(2000))]

        /// Any JSON value for a parameter: every reader returns without
        /// panicking; a count is at most 65535; a list never holds an empty
        /// or untrimmed item from a comma string; a string map has one entry
        /// per object key.
        #[test]
        fn arbitrary_values_never_panic(v in request::json()) {
            let d = one(v.clone());
            let _ = params::int(&d, "k");
            let _ = params::duration(&d, "k");
            let _ = params::boolean(&d, "k");
            let _ = params::string(&d, "k");
            if let Ok(Some(n)) = params::count(&d, "k") {
                prop_assert!(n <= usize::from(u16::MAX));
            }
            if let (Value::String(_), Ok(Some(items))) = (&v, params::list(&d, "k")) {
                prop_assert!(items.iter().all(|i| !i.is_empty() && i.trim() == i));
            }
            let map = params::string_map(&d, "k");
            prop_assert_eq!(map.len(), v.as_object().map_or(0, Map::len));
        }

        /// Integers read exactly, as numbers or (padded) numeric strings;
        /// a fraction or a non-number is refused; a duration in seconds is
        /// that many seconds, and a negative one is refused; `true`/`false`
        /// in Vault's spellings read as such, anything else is refused.
        #[test]
        fn integers_durations_and_booleans_read_exactly(
            n in any::<i64>(),
            pad in "[ \t]{0,2}",
            frac in 1..1000u32,
            word in "[a-zA-Z0-9]{0,6}",
        ) {
            prop_assert_eq!(params::int(&one(json!(n)), "k").ok(), Some(Some(n)));
            prop_assert_eq!(params::int(&one(json!(format!("{pad}{n}{pad}"))), "k").ok(), Some(Some(n)));
            let fractional = n as f64 + f64::from(frac) / 1000.5;
            if fractional.fract() != 0.0 {
                prop_assert!(params::int(&one(json!(fractional)), "k").is_err());
            }
            prop_assert!(params::int(&one(json!([n])), "k").is_err());
            let d = params::duration(&one(json!(n)), "k");
            if n >= 0 {
                prop_assert_eq!(d.ok(), Some(Some(std::time::Duration::from_secs(n.unsigned_abs()))));
            } else {
                prop_assert!(d.is_err());
            }
            let lower = word.to_ascii_lowercase();
            let want = match lower.as_str() {
                "true" | "1" | "t" => Some(true),
                "false" | "0" | "f" | "" => Some(false),
                _ => None,
            };
            prop_assert_eq!(params::boolean(&one(json!(format!("{pad}{word}"))), "k").ok().flatten(), want);
        }

        /// A list round-trips as a JSON array of strings, and as a comma
        /// string (items trimmed, empty items dropped).
        #[test]
        fn lists_round_trip(items in prop::collection::vec("[^,]{0,8}", 0..6)) {
            prop_assert_eq!(params::list(&one(json!(items)), "k").ok(), Some(Some(items.clone())));
            let want: Vec<String> =
                items.iter().map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).collect();
            prop_assert_eq!(params::list(&one(json!(items.join(","))), "k").ok(), Some(Some(want)));
        }
    }

    /// FIXME: a JSON number beyond i64 reads as i64::MAX or i64::MIN (an `as`
    /// cast saturates) instead of being refused: `{"ttl": 1e300}` is a TTL
    /// of i64::MAX seconds (then capped by the role's max_ttl), and
    /// `{"key_bits": 1e19}` is i64::MAX bits (then refused as a bad size).
    /// Vault's weak decoding does not refuse it either.
    #[test]
    fn a_number_beyond_i64_saturates() {
        assert_eq!(
            params::int(&one(json!(1e300)), "k").ok(),
            Some(Some(i64::MAX))
        );
        assert_eq!(
            params::int(&one(json!(-1e300)), "k").ok(),
            Some(Some(i64::MIN))
        );
    }
}

/// Shamir shares (`seal::shamir`).
mod shamir {
    use super::*;
    use crate::seal::shamir::{combine, split};

    /// A secret, a (parts, threshold) configuration and a shuffle of the shares.
    fn setup() -> impl Strategy<Value = (Vec<u8>, usize, usize, Vec<usize>)> {
        (prop::collection::vec(any::<u8>(), 16..48), 2..=12usize).prop_flat_map(
            |(secret, parts)| {
                (
                    Just(secret),
                    Just(parts),
                    2..=parts,
                    Just((0..parts).collect::<Vec<_>>()).prop_shuffle(),
                )
            },
        )
    }

    proptest! {
        #![proptest_config(config(1000))]

        /// Any `threshold`-or-more subset of the shares, in any order,
        /// recovers the secret; `threshold - 1` shares do not (a 16-byte
        /// or longer secret: a wrong guess per byte is 255/256 likely), and
        /// a single share is refused. Shares are `secret + 1` bytes with
        /// distinct non-zero x values last.
        #[test]
        fn threshold_subsets_recover_and_smaller_ones_do_not(
            (secret, parts, threshold, order) in setup(),
            extra in any::<Index>(),
        ) {
            let shares = split(&secret, parts, threshold).expect("a valid configuration");
            prop_assert_eq!(shares.len(), parts);
            prop_assert!(shares.iter().all(|s| s.len() == secret.len() + 1));
            let mut xs: Vec<u8> = shares.iter().map(|s| s[secret.len()]).collect();
            xs.sort_unstable();
            xs.dedup();
            prop_assert_eq!(xs.len(), parts);
            prop_assert!(!xs.contains(&0));

            let k = threshold + extra.index(parts - threshold + 1);
            let pick: Vec<&[u8]> = order[..k].iter().map(|&i| &shares[i][..]).collect();
            prop_assert_eq!(&combine(&pick).expect("enough shares")[..], &secret[..]);
            let fewer: Vec<&[u8]> = order[..threshold - 1].iter().map(|&i| &shares[i][..]).collect();
            match combine(&fewer) {
                Ok(guess) => {
                    prop_assert!(fewer.len() >= 2);
                    prop_assert_ne!(&guess[..], &secret[..]);
                }
                Err(_) => prop_assert_eq!(fewer.len(), 1),
            }
        }

        /// Arbitrary share sets never panic; they are refused exactly when
        /// fewer than two, shorter than two bytes, of unequal lengths, or
        /// with a zero or repeated x value; otherwise the result is one
        /// byte shorter than a share.
        #[test]
        fn random_shares_never_panic(
            shares in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..6),
        ) {
            let refs: Vec<&[u8]> = shares.iter().map(Vec::as_slice).collect();
            let len = shares.first().map_or(0, Vec::len);
            let xs: Vec<u8> = shares.iter().filter_map(|s| s.last().copied()).collect();
            let mut distinct = xs.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let valid = shares.len() >= 2
                && len >= 2
                && shares.iter().all(|s| s.len() == len)
                && !xs.contains(&0)
                && distinct.len() == xs.len();
            match combine(&refs) {
                Ok(secret) => {
                    prop_assert!(valid);
                    prop_assert_eq!(secret.len(), len - 1);
                }
                Err(_) => prop_assert!(!valid),
            }
        }
    }
}

/// Sealed values (`seal::key::Key` and the `seal::Barrier` over storage).
mod barrier {
    use super::*;
    use crate::seal::key::{Key, term_of};
    use crate::seal::{Barrier, Keyring};
    use crate::storage::{MemoryStorage, Storage};
    use std::sync::{Arc, OnceLock};

    fn key() -> &'static Key {
        static K: OnceLock<Key> = OnceLock::new();
        K.get_or_init(|| Key::generate().expect("a key"))
    }

    const PATH: &str = "[a-z0-9]{1,6}(/[a-z0-9][a-z0-9_-]{0,5}){0,3}";

    proptest! {
        #![proptest_config(config(1000))]

        /// `Key::open` gives back exactly what was sealed, at the same path
        /// only. Any flipped byte after the 4-byte term, a truncation, an
        /// extension or another path is refused. The term itself is not
        /// authenticated at this layer (it is Vault's layout, and it only
        /// selects the key, which `Barrier` does): a flipped term byte opens
        /// to the same plaintext here, and is refused by the barrier test.
        #[test]
        fn a_sealed_value_opens_only_unchanged_at_its_path(
            term in any::<u32>(),
            path in PATH,
            other in PATH,
            plaintext in prop::collection::vec(any::<u8>(), 0..256),
            at in any::<Index>(),
            mask in 1..=255u8,
            cut in any::<Index>(),
            tail in prop::collection::vec(any::<u8>(), 1..4),
        ) {
            let k = key();
            let sealed = k.seal(term, &path, &plaintext).expect("seal");
            prop_assert_eq!(term_of(&sealed), Some(term));
            prop_assert_eq!(&k.open(&path, &sealed).expect("opens")[..], &plaintext[..]);
            if other != path {
                prop_assert!(k.open(&other, &sealed).is_err());
            }
            let i = at.index(sealed.len());
            let mut bad = sealed.clone();
            bad[i] ^= mask;
            match k.open(&path, &bad) {
                Ok(pt) => {
                    prop_assert!(i < 4, "a flip at byte {i} opened");
                    prop_assert_eq!(&pt[..], &plaintext[..]);
                }
                Err(_) => prop_assert!(i >= 4),
            }
            prop_assert!(k.open(&path, &sealed[..cut.index(sealed.len())]).is_err());
            let mut longer = sealed.clone();
            longer.extend_from_slice(&tail);
            prop_assert!(k.open(&path, &longer).is_err());
        }

        /// Arbitrary bytes never open and never panic (`term_of` neither).
        #[test]
        fn random_bytes_never_open(bytes in prop::collection::vec(any::<u8>(), 0..96), path in PATH) {
            let _ = term_of(&bytes);
            prop_assert!(key().open(&path, &bytes).is_err());
        }
    }

    proptest! {
        #![proptest_config(config(500))]

        /// Through the barrier (keyring rotated to four terms): a stored
        /// value with any one byte changed, the term bytes included, or
        /// copied to another key, fails to read; the unchanged value reads
        /// back.
        #[test]
        fn the_barrier_refuses_tampered_and_moved_values(
            path in PATH,
            other in PATH,
            value in prop::collection::vec(any::<u8>(), 0..128),
            at in any::<Index>(),
            mask in 1..=255u8,
        ) {
            let rt = runtime();
            rt.block_on(async {
                let inner = Arc::new(MemoryStorage::default());
                let ring = Keyring::generate(Key::generate().expect("root"), 0).expect("keyring");
                let barrier = Barrier::new(inner.clone(), ring);
                for now in 1..=3 {
                    barrier.rotate(now).await.expect("rotate");
                }
                barrier.put(&path, &value).await.expect("put");
                let got = barrier.get(&path).await.expect("get").expect("present");
                prop_assert_eq!(&got.value, &value);
                let raw = inner.get(&path).await.expect("raw").expect("present").value;
                prop_assert_eq!(term_of(&raw), Some(4));
                if other != path {
                    inner.put(&other, &raw).await.expect("raw put");
                    prop_assert!(barrier.get(&other).await.is_err(), "a moved value opened");
                }
                let mut bad = raw.clone();
                bad[at.index(raw.len())] ^= mask;
                inner.put(&path, &bad).await.expect("raw put");
                prop_assert!(barrier.get(&path).await.is_err(), "a tampered value opened");
                Ok(())
            })?;
        }
    }
}

/// The file storage's write-ahead log, replayed by `FileStorage::open`.
///
/// Segments are built here from the documented format (`storage/wal.rs`):
/// header `pkiwal1\n` + 8-byte nonce; records `len u32 | crc32(nonce |
/// body) u32 | body`, `body = op u8 | key len u16 | key | value`, LE.
mod wal {
    use super::*;
    use crate::storage::{FileStorage, Storage};

    const KEYS: [&str; 4] = ["a", "b/c", "certs/x", "d"];
    /// Keys a CRC-valid record may carry that replay must refuse.
    const BAD_KEYS: [&str; 5] = ["../escape", "_", "a//b", "/abs", ""];

    #[derive(Debug, Clone)]
    enum Op {
        Put(usize, Vec<u8>),
        Delete(usize),
        /// A put to an invalid key: a torn tail for replay.
        BadKey(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..KEYS.len(), prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(k, v)| Op::Put(k, v)),
            3 => (0..KEYS.len()).prop_map(Op::Delete),
            1 => (0..BAD_KEYS.len()).prop_map(Op::BadKey),
        ]
    }

    #[derive(Debug, Clone)]
    enum Damage {
        None,
        Truncate(Index),
        Flip(Index, u8),
        AppendGarbage(Vec<u8>),
        Random(Vec<u8>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            Just(Damage::None),
            any::<Index>().prop_map(Damage::Truncate),
            (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Damage::Flip(i, m)),
            prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::AppendGarbage),
            prop::collection::vec(any::<u8>(), 0..128).prop_map(Damage::Random),
        ]
    }

    fn record(nonce: &[u8; 8], key: &str, op: u8, value: &[u8]) -> Vec<u8> {
        let mut body = vec![op];
        body.extend_from_slice(&u16::try_from(key.len()).expect("short key").to_le_bytes());
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(value);
        let mut h = crc32fast::Hasher::new();
        h.update(nonce);
        h.update(&body);
        let mut out = u32::try_from(body.len())
            .expect("short body")
            .to_le_bytes()
            .to_vec();
        out.extend_from_slice(&h.finalize().to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// The segment bytes, and the end offset of each op's record.
    fn segment(nonce: &[u8; 8], ops: &[Op]) -> (Vec<u8>, Vec<usize>) {
        let mut seg = b"pkiwal1\n".to_vec();
        seg.extend_from_slice(nonce);
        let mut ends = Vec::new();
        for op in ops {
            let rec = match op {
                Op::Put(k, v) => record(nonce, KEYS[*k], 1, v),
                Op::Delete(k) => record(nonce, KEYS[*k], 2, b""),
                Op::BadKey(k) => record(nonce, BAD_KEYS[*k], 1, b"x"),
            };
            seg.extend_from_slice(&rec);
            ends.push(seg.len());
        }
        (seg, ends)
    }

    /// Damage `seg`; how many of its records replay must still apply.
    fn damaged(seg: &[u8], ends: &[usize], d: &Damage) -> (Vec<u8>, usize) {
        let intact = |limit: usize| ends.iter().take_while(|&&e| e <= limit).count();
        match d {
            Damage::None => (seg.to_vec(), ends.len()),
            Damage::Truncate(i) => {
                let n = i.index(seg.len() + 1);
                (seg[..n].to_vec(), if n < 16 { 0 } else { intact(n) })
            }
            Damage::Flip(i, m) => {
                let at = i.index(seg.len());
                let mut s = seg.to_vec();
                s[at] ^= m;
                // A flip in the header spoils the magic or the nonce (and so
                // every CRC); in a record, that record and all after it.
                (s, if at < 16 { 0 } else { intact(at) })
            }
            Damage::AppendGarbage(g) => {
                let mut s = seg.to_vec();
                s.extend_from_slice(g);
                (s, ends.len())
            }
            Damage::Random(r) => (r.clone(), 0),
        }
    }

    /// The store after replaying `ops`, stopping at the first bad key.
    fn model(state: &mut BTreeMap<&'static str, Vec<u8>>, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    state.insert(KEYS[*k], v.clone());
                }
                Op::Delete(k) => {
                    state.remove(KEYS[*k]);
                }
                Op::BadKey(_) => return,
            }
        }
    }

    proptest! {
        #![proptest_config(config(128))]

        /// Two segments, the older damaged (truncated, a byte flipped,
        /// garbage appended, or replaced by random bytes), the newer intact:
        /// opening never panics, succeeds, and leaves exactly the state of
        /// the older segment's records up to its first torn or invalid one,
        /// then all of the newer segment's (each segment is cut at its own
        /// torn tail). A record naming an invalid key (`../escape`, `_`,
        /// ...) ends the replay of its segment and writes nothing outside
        /// the storage folder.
        #[test]
        fn replay_applies_exactly_the_records_before_the_torn_tail(
            older in prop::collection::vec(op(), 0..10),
            newer in prop::collection::vec(op(), 0..4),
            d in damage(),
            nonces in any::<([u8; 8], [u8; 8])>(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().join("root");
            let log = root.join("_");
            std::fs::create_dir_all(&log).expect("log folder");
            let (seg, ends) = segment(&nonces.0, &older);
            let (seg, applied) = damaged(&seg, &ends, &d);
            std::fs::write(log.join("wal-0000000000000007"), &seg).expect("write");
            let (seg2, _) = segment(&nonces.1, &newer);
            std::fs::write(log.join("wal-0000000000000008"), &seg2).expect("write");

            let storage = FileStorage::open(&root).expect("opening replays the log");
            let mut want = BTreeMap::new();
            model(&mut want, &older[..applied]);
            model(&mut want, &newer);
            let rt = runtime();
            for k in KEYS {
                let got = rt.block_on(storage.get(k)).expect("get").map(|e| e.value);
                prop_assert_eq!(got.as_ref(), want.get(k), "key {} after {:?}", k, d);
            }
            prop_assert!(!dir.path().join("_escape").exists());
            prop_assert!(!dir.path().join("escape").exists());
        }
    }
}

/// Compact JWS (`auth::jws::verify`).
mod jws {
    use super::*;
    use crate::auth::jws::{JwsError, PublicKey, verify};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair};
    use std::sync::OnceLock;

    struct Signers {
        es256: EcdsaKeyPair,
        ed25519: Ed25519KeyPair,
        public: [PublicKey; 2],
        /// Keys that signed nothing here.
        others: Vec<PublicKey>,
    }

    fn public_of(pkcs8: &[u8]) -> PublicKey {
        let kp = rcgen::KeyPair::try_from(pkcs8).expect("rcgen reads the key");
        PublicKey::from_spki(&rcgen::PublicKeyData::subject_public_key_info(&kp))
            .expect("a supported key")
    }

    fn signers() -> &'static Signers {
        static S: OnceLock<Signers> = OnceLock::new();
        S.get_or_init(|| {
            let rng = ring::rand::SystemRandom::new();
            let ec = |rng: &ring::rand::SystemRandom| {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, rng)
                    .expect("P-256 key")
            };
            let ed = |rng: &ring::rand::SystemRandom| {
                Ed25519KeyPair::generate_pkcs8(rng).expect("Ed25519 key")
            };
            let (e1, d1, e2, d2) = (ec(&rng), ed(&rng), ec(&rng), ed(&rng));
            Signers {
                es256: EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    e1.as_ref(),
                    &rng,
                )
                .expect("P-256 key"),
                ed25519: Ed25519KeyPair::from_pkcs8(d1.as_ref()).expect("Ed25519 key"),
                public: [public_of(e1.as_ref()), public_of(d1.as_ref())],
                others: vec![public_of(e2.as_ref()), public_of(d2.as_ref())],
            }
        })
    }

    fn sign(which: usize, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let s = signers();
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let sig = if which == 0 {
            s.es256
                .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec()
        } else {
            s.ed25519.sign(input.as_bytes()).as_ref().to_vec()
        };
        format!("{input}.{}", B64URL.encode(sig))
    }

    fn claims() -> impl Strategy<Value = serde_json::Value> {
        prop::collection::btree_map(
            "[a-z_]{1,8}",
            prop_oneof![
                "\\PC{0,16}".prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<bool>().prop_map(serde_json::Value::from),
            ],
            0..6,
        )
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
    }

    const B64_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";

    proptest! {
        #![proptest_config(config(1000))]

        /// A token signed with ES256 or EdDSA verifies with its key and gives
        /// back its claims; with one character replaced (by another base64url
        /// character, `.`, `=`, `+`, `/` or a space), removed, or inserted,
        /// it never verifies; nor with only keys that did not sign it, nor
        /// when its algorithm is not allowed.
        #[test]
        fn a_changed_token_never_verifies(
            which in 0..2usize,
            c in claims(),
            at in any::<Index>(),
            pick in any::<Index>(),
        ) {
            let s = signers();
            let alg = ["ES256", "EdDSA"][which];
            let token = sign(which, &serde_json::json!({"alg": alg, "typ": "JWT"}), &c);
            let v = verify(&token, &s.public, &[]).expect("a signed token verifies");
            prop_assert_eq!(serde_json::Value::Object(v.claims), c);
            prop_assert_eq!(verify(&token, &s.others, &[]).err(), Some(JwsError::Signature));
            let other_alg = ["EdDSA", "ES256"][which].to_string();
            prop_assert!(verify(&token, &s.public, &[other_alg]).is_err());

            let chars: Vec<char> = token.chars().collect();
            let i = at.index(chars.len());
            let alphabet: Vec<char> = B64_CHARS.chars().filter(|&x| x != chars[i]).collect();
            let new = alphabet[pick.index(alphabet.len())];
            let mut replaced = chars.clone();
            replaced[i] = new;
            let mut removed = chars.clone();
            removed.remove(i);
            let mut inserted = chars.clone();
            inserted.insert(i, new);
            for t in [replaced, removed, inserted] {
                let t: String = t.into_iter().collect();
                prop_assert!(verify(&t, &s.public, &[]).is_err(), "{t}");
            }
        }

        /// Arbitrary text, and three base64url parts with any header (any or
        /// no `alg`: `none`, `HS256`, a supported one), never panic and
        /// never verify.
        #[test]
        fn arbitrary_tokens_never_verify(
            text in token_soup(&["eyJ", "hbGciOi", ".", "..", "=", "AAAA", "_-", "\u{0}"], 16),
            alg in prop::option::of(select(&["none", "HS256", "ES256", "EdDSA", "RS256", "ES384", ""][..])),
            extra in claims(),
            payload in prop::collection::vec(any::<u8>(), 0..64),
            sig in prop::collection::vec(any::<u8>(), 0..96),
        ) {
            let s = signers();
            prop_assert!(verify(&text, &s.public, &[]).is_err());
            let mut header = extra.as_object().cloned().unwrap_or_default();
            if let Some(a) = alg {
                header.insert("alg".into(), a.into());
            }
            let t = format!(
                "{}.{}.{}",
                B64URL.encode(serde_json::Value::Object(header).to_string()),
                B64URL.encode(&payload),
                B64URL.encode(&sig)
            );
            prop_assert!(verify(&t, &s.public, &[]).is_err());
        }
    }
}

/// auth/aws (`auth::aws::parse_caller`, `check_request`).
mod aws {
    use super::*;
    use crate::auth::aws::{AwsConfig, IamRequest, check_request, parse_caller};

    proptest! {
        #![proptest_config(config(1000))]

        /// Arbitrary and XML-shaped text never panics; what parses came from
        /// a `GetCallerIdentityResult` element, and its ARN and account hold
        /// no markup or entity.
        #[test]
        fn arbitrary_sts_answers_never_panic(
            xml in token_soup(&[
                "<GetCallerIdentityResult>", "</GetCallerIdentityResult>", "<Arn>", "</Arn>",
                "<Account>", "</Account>", "<UserId>", "</UserId>", "arn:aws:iam::1:role/x",
                "123456789012", "&amp;", "<", ">", "é", "<![CDATA[", "]]>",
            ], 16),
        ) {
            if let Ok(c) = parse_caller(&xml) {
                prop_assert!(xml.contains("<GetCallerIdentityResult>"));
                for v in [&c.arn, &c.account, &c.user_id] {
                    prop_assert!(!v.contains('<') && !v.contains('&'), "{v:?}");
                    prop_assert_eq!(v.trim(), v.as_str());
                }
                prop_assert!(xml.contains("<Account>") && xml.contains(&c.account));
                prop_assert!(xml.contains(&c.arn));
            }
        }

        /// An STS answer with any ARN, account and user id (padded with
        /// whitespace, elements in any order, extra elements around) reads
        /// back exactly; one whose ARN holds an entity is refused.
        #[test]
        fn sts_answers_round_trip(
            arn in "arn:aws[a-z-]{0,4}:(iam|sts)::[0-9]{12}:[a-zA-Z0-9/_+=,.@-]{1,40}",
            account in "[0-9]{12}",
            user in "[A-Z0-9:_.-]{0,24}",
            pad in "[ \n\t]{0,3}",
            order in Just(vec![0usize, 1, 2]).prop_shuffle(),
        ) {
            let els = [
                format!("<Arn>{pad}{arn}{pad}</Arn>"),
                format!("<Account>{pad}{account}</Account>"),
                format!("<UserId>{user}{pad}</UserId>"),
            ];
            let body: String = order.iter().map(|&i| els[i].as_str()).collect();
            let xml = format!(
                "<?xml version=\"1.0\"?><GetCallerIdentityResponse xmlns=\"x\">\
                 <GetCallerIdentityResult>{body}</GetCallerIdentityResult>\
                 <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>\
                 </GetCallerIdentityResponse>"
            );
            let c = parse_caller(&xml).expect("an STS answer");
            prop_assert_eq!(c.arn, arn.clone());
            prop_assert_eq!(c.account, account);
            prop_assert_eq!(c.user_id, user);
            let entity = xml.replace(&arn, &format!("{arn}&amp;x"));
            prop_assert!(parse_caller(&entity).is_err());
        }
    }

    /// Configured STS endpoints.
    const ENDPOINTS: [&str; 5] = [
        "",
        "https://sts.amazonaws.com",
        "https://sts.us-east-1.amazonaws.com/",
        "http://127.0.0.1:5000",
        "http://localhost:4566/",
    ];

    /// URL strings near and far from those endpoints.
    fn url() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => (
                select(&["https://", "http://", "HTTPS://", "ftp://", "", "https:/", "https:\\\\", "//"][..]),
                select(&["", "user@", "sts.amazonaws.com@", "a:b@", "@"][..]),
                select(&[
                    "sts.amazonaws.com", "STS.AmazonAWS.com", "sts.amazonaws.com.", "evil.com",
                    "sts.amazonaws.com.evil.com", "evil.com\\@sts.amazonaws.com", "127.0.0.1",
                    "127.1", "0x7f.0.0.1", "localhost", "[::1]", "sts.us-east-1.amazonaws.com",
                    "sts%2eamazonaws.com", "xn--sts-amazonaws-com", "",
                ][..]),
                select(&["", ":443", ":80", ":5000", ":4566", ":8443", ":0443", ":", ":65536"][..]),
                select(&["", "/", "/x", "//", "/%2e", "/.", "/..", "/?", "/#", "?a=b", "#f", "/?Action=x"][..]),
            )
                .prop_map(|(s, u, h, p, rest)| format!("{s}{u}{h}{p}{rest}")),
            1 => any::<String>(),
        ]
    }

    /// The configured endpoint's URL text with up to three edits: a
    /// dropped `/`, capitals, user info, another scheme or port, a path,
    /// query or fragment, a look-alike host.
    fn near(endpoint: &'static str) -> impl Strategy<Value = String> {
        let base = AwsConfig {
            sts_endpoint: endpoint.to_string(),
            ..AwsConfig::default()
        }
        .sts_url()
        .map(|u| u.to_string())
        .unwrap_or_default();
        prop::collection::vec(0..16usize, 0..=3).prop_map(move |edits| {
            let mut u = base.clone();
            for e in edits {
                let (scheme, rest) = u.split_once("://").unwrap_or(("", u.as_str()));
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                let (scheme, host, path) = (scheme.to_string(), host.to_string(), path.to_string());
                u = match e {
                    0 => u.trim_end_matches('/').to_string(),
                    1 => format!("{scheme}://{}/{path}", host.to_ascii_uppercase()),
                    2 => format!("{scheme}://user@{host}/{path}"),
                    3 => format!("{scheme}://a:b@{host}/{path}"),
                    4 => format!(
                        "{}://{host}/{path}",
                        if scheme == "https" { "http" } else { "https" }
                    ),
                    5 => format!("{scheme}://{host}:443/{path}"),
                    6 => format!("{scheme}://{host}:80/{path}"),
                    7 => format!("{scheme}://{host}:8443/{path}"),
                    8 => format!("{u}x"),
                    9 => format!("{u}?Action=AssumeRole"),
                    10 => format!("{u}#f"),
                    11 => format!("{scheme}://{host}.evil.com/{path}"),
                    12 => format!("{scheme}://{host}./{path}"),
                    13 => format!("{scheme}://evil.com\\@{host}/{path}"),
                    14 => format!("{scheme}://{host}/%2e/{path}"),
                    _ => format!("{scheme}://{host}/./{path}"),
                };
            }
            u
        })
    }

    fn signed(server_id: bool) -> String {
        let h = if server_id {
            "content-type;host;x-amz-date;x-vault-aws-iam-server-id"
        } else {
            "content-type;host;x-amz-date"
        };
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/sts/aws4_request, SignedHeaders={h}, Signature=00"
        )
    }

    proptest! {
        #![proptest_config(config(2000))]

        /// Whatever the method, URL, body and headers: no panic; an accepted
        /// request is a POST of exactly GetCallerIdentity, and the URL it
        /// will be forwarded to is the configured STS endpoint itself
        /// (same scheme, host and port, path `/`, no query, fragment or
        /// user info): a login never makes the server call another URL.
        #[test]
        fn check_request_never_accepts_another_url(
            (endpoint, u) in select(&ENDPOINTS[..]).prop_flat_map(|e| (Just(e), prop_oneof![3 => near(e), 1 => url()])),
            server_id in select(&["", "vault.example"][..]),
            method in prop_oneof![4 => Just("POST"), 1 => select(&["GET", "post", "POST ", ""][..])],
            body in prop_oneof![
                3 => select(&[
                    "Action=GetCallerIdentity&Version=2011-06-15",
                    "Version=2011-06-15&Action=GetCallerIdentity",
                ][..]),
                1 => select(&[
                    "Action=GetCallerIdentity&Version=2011-06-15&Action=AssumeRole",
                    "Action=AssumeRole&Version=2011-06-15", "", "Action=GetCallerIdentity",
                ][..]),
            ],
            auth in prop_oneof![4 => 1..3usize, 1 => Just(0usize), 1 => Just(3usize)],
            id_header in prop_oneof![
                3 => Just(Some("vault.example")),
                1 => prop::option::of(select(&["other", "VAULT.EXAMPLE"][..])),
            ],
        ) {
            let config = AwsConfig {
                sts_endpoint: endpoint.to_string(),
                iam_server_id_header_value: server_id.to_string(),
                ..AwsConfig::default()
            };
            let mut headers = Vec::new();
            match auth {
                1 => headers.push(("Authorization".to_string(), signed(true))),
                2 => headers.push(("authorization".to_string(), signed(false))),
                3 => {
                    headers.push(("Authorization".to_string(), signed(true)));
                    headers.push(("Authorization".to_string(), signed(true)));
                }
                _ => {}
            }
            if let Some(id) = id_header {
                headers.push(("X-Vault-AWS-IAM-Server-ID".to_string(), id.to_string()));
            }
            let req = IamRequest { method: method.into(), url: u.clone(), body: body.into(), headers };
            if let Ok(got) = check_request(&config, &req) {
                let mut want = config.sts_url().expect("a valid endpoint");
                want.set_path("/");
                prop_assert_eq!(got.as_str(), want.as_str(), "{} accepted", u);
                prop_assert_eq!(method, "POST");
                prop_assert!(body.starts_with("Action=GetCallerIdentity&") || body.starts_with("Version=2011-06-15&"));
                prop_assert!(body.len() == "Action=GetCallerIdentity&Version=2011-06-15".len());
                prop_assert!(auth == 1 || auth == 2);
                if !server_id.is_empty() {
                    prop_assert_eq!(id_header, Some(server_id));
                    prop_assert_eq!(auth, 1, "the server id header was not signed");
                }
            }
        }

        /// The configured endpoint itself (as configured, with or without
        /// its trailing `/`, host in capitals) with a well-formed request is
        /// accepted, so the property above is not vacuous.
        #[test]
        fn a_well_formed_login_is_accepted(endpoint in select(&ENDPOINTS[..]), slash in any::<bool>(), upper in any::<bool>()) {
            let config = AwsConfig { sts_endpoint: endpoint.to_string(), ..AwsConfig::default() };
            let mut u = config.sts_url().expect("valid").as_str().trim_end_matches('/').to_string();
            if slash {
                u.push('/');
            }
            if upper {
                u = u.replace("sts.", "STS.").replace("localhost", "LOCALHOST");
            }
            let req = IamRequest {
                method: "POST".into(),
                url: u.clone(),
                body: "Action=GetCallerIdentity&Version=2011-06-15".into(),
                headers: vec![("Authorization".into(), signed(false))],
            };
            prop_assert!(check_request(&config, &req).is_ok(), "{} refused", u);
        }
    }
}

/// PKI role name checks (`pki::role::Role::name_allowed` and friends).
mod role {
    use super::*;
    use crate::pki::Role;
    use crate::pki::role::TemplateMetadata;

    const LABELS: [&str; 8] = [
        "example", "com", "cluster", "local", "a", "svc", "k8s", "Example",
    ];

    fn domain() -> impl Strategy<Value = String> {
        prop::collection::vec(select(&LABELS[..]), 1..=3).prop_map(|v| v.join("."))
    }

    /// Names near the allowed domains (subdomains, look-alikes, wildcards,
    /// emails, trailing and leading dots, case) and random ones.
    fn name(domains: Vec<String>) -> impl Strategy<Value = String> {
        let forms = &[
            "{d}",
            "x.{d}",
            "a.b.{d}",
            "*.{d}",
            "x*.{d}",
            "*x.{d}",
            "*.*.{d}",
            "x{d}",
            "x-{d}",
            "{d}.evil",
            "{d}.",
            ".{d}",
            "..{d}",
            "user@{d}",
            "user@x.{d}",
            "a@b@{d}",
            "*@{d}",
            "x.{D}",
            "{D}",
            "-x.{d}",
            "x_y.{d}",
            "*",
            "localhost",
            "x.localhost",
            "{d}/x",
            "x.{d}@evil",
            "é.{d}",
            "x..{d}",
        ][..];
        prop_oneof![
            6 => (select(domains), select(forms)).prop_map(|(d, f)| {
                f.replace("{d}", &d).replace("{D}", &d.to_ascii_uppercase())
            }),
            2 => prop::collection::vec(select(&["example", "com", "evil", "x", "*", "local", "Com"][..]), 1..4)
                .prop_map(|v| v.join(".")),
            1 => "\\PC{0,20}",
        ]
    }

    /// The role under test and names to check against it.
    fn case() -> impl Strategy<Value = (Role, Vec<String>)> {
        (
            prop::collection::vec(domain(), 1..=3),
            any::<(bool, bool, bool, bool)>(),
        )
            .prop_flat_map(|(domains, (sub, bare, hostnames, wildcards))| {
                let role = Role {
                    allowed_domains: domains.clone(),
                    allow_subdomains: sub,
                    allow_bare_domains: bare,
                    enforce_hostnames: hostnames,
                    allow_wildcard_certificates: wildcards,
                    allow_localhost: false,
                    allow_glob_domains: false,
                    allow_any_name: false,
                    ..Role::default()
                };
                (Just(role), prop::collection::vec(name(domains), 1..8))
            })
    }

    /// Whether an allowed domain covers `name` as the rules promise: the
    /// host part (after `@` for an email) equals an allowed domain with
    /// `allow_bare_domains`, or ends with `.` + one with `allow_subdomains`
    /// (ASCII case-insensitive).
    fn covered(role: &Role, name: &str) -> bool {
        let host = name
            .split_once('@')
            .map_or(name, |(_, h)| h)
            .to_ascii_lowercase();
        role.allowed_domains.iter().any(|d| {
            let d = d.to_ascii_lowercase();
            (role.allow_bare_domains && host == d)
                || (role.allow_subdomains && host.ends_with(&format!(".{d}")))
        })
    }

    proptest! {
        #![proptest_config(config(2000))]

        /// Deny by default: with allowed domains (no globs, no localhost, no
        /// any-name), every name `name_allowed`, `check_common_name` or
        /// `check_dns_names` accepts is covered by an allowed domain (equal
        /// to one, with bare domains; below one, with subdomains); with both
        /// off nothing is accepted. And not vacuously: a plain subdomain of
        /// an allowed domain is accepted with subdomains, the domain itself
        /// with bare domains.
        #[test]
        fn accepted_names_are_always_within_the_allowed_domains((role, names) in case()) {
            let meta = TemplateMetadata::new();
            for n in &names {
                let allowed = role.name_allowed(n, &meta);
                if allowed {
                    prop_assert!(covered(&role, n), "{n:?} accepted by {:?}", role.allowed_domains);
                }
                if role.check_common_name(n, &meta).is_ok() {
                    prop_assert!(allowed && covered(&role, n), "CN {n:?}");
                }
            }
            if role.check_dns_names(&names, &meta).is_ok() {
                prop_assert!(names.iter().all(|n| covered(&role, n)), "{names:?}");
            }
            for d in &role.allowed_domains {
                prop_assert_eq!(role.name_allowed(&format!("node-1.{d}"), &meta), role.allow_subdomains, "below {}", d);
                prop_assert_eq!(role.name_allowed(d, &meta), role.allow_bare_domains || (
                    role.allow_subdomains && role.allowed_domains.iter().any(|o| d.to_ascii_lowercase().ends_with(&format!(".{}", o.to_ascii_lowercase())))
                ), "{}", d);
            }
        }
    }
}
