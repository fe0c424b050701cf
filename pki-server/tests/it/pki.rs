//! The PKI engine over the API: mount, root CA, roles, issue, sign, refusals,
//! revoke + CRL, LIST certs, tidy; certificates checked with openssl.

use crate::harness::TestApp;
use serde_json::{Value, json};
use std::process::Command;

const MOUNT: &str = "/v1/kubecluster/pki/etcd-member";

async fn setup() -> (TestApp, String) {
    let app = TestApp::new();
    let token = app.init_unsealed().await;
    let t = Some(token.as_str());
    let r = app
        .call(
            "POST",
            "/v1/sys/mounts/kubecluster/pki/etcd-member",
            t,
            Some(json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = app.call("POST", &format!("{MOUNT}/config/urls"), t, Some(json!({"issuing_certificates": "https://pki.internal:8200/v1/kubecluster/pki/etcd-member/ca", "crl_distribution_points": ["https://pki.internal:8200/v1/kubecluster/pki/etcd-member/crl"]}))).await;
    // The write answers with the stored config, as Vault 1.12+ and OpenBao do.
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["data"]["issuing_certificates"],
        json!(["https://pki.internal:8200/v1/kubecluster/pki/etcd-member/ca"])
    );
    let r = app.call("POST", &format!("{MOUNT}/root/generate/internal"), t, Some(json!({"common_name": "etcd-ca", "key_type": "ec", "key_bits": "256", "ttl": "87600h"}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for k in [
        "certificate",
        "issuing_ca",
        "serial_number",
        "expiration",
        "issuer_id",
    ] {
        assert!(r.body["data"].get(k).is_some(), "root/generate lacks {k}");
    }
    assert!(
        r.body["data"].get("private_key").is_none(),
        "internal keeps the key"
    );
    let r = app
        .call("POST", &format!("{MOUNT}/roles/member"), t, Some(json!({"allowed_domains": "cluster.local", "allow_subdomains": "true", "allow_bare_domains": false, "allow_ip_sans": true, "allow_wildcard_certificates": false, "key_type": "ec", "key_bits": 256, "ttl": "720h", "max_ttl": "2160h", "organization": "etcd", "name": "member"})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    (app, token)
}

fn write(dir: &std::path::Path, name: &str, content: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn issued_certificate_verifies_and_carries_exactly_what_was_asked() {
    let (app, token) = setup().await;
    let t = Some(token.as_str());
    let r = app
        .call("POST", &format!("{MOUNT}/issue/member"), t, Some(json!({"common_name": "etcd-0.cluster.local", "alt_names": "etcd-0.cluster.local,etcd.cluster.local", "ip_sans": "127.0.0.1", "ttl": "24h"})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let d = &r.body["data"];
    for k in [
        "certificate",
        "issuing_ca",
        "ca_chain",
        "private_key",
        "private_key_type",
        "serial_number",
        "expiration",
    ] {
        assert!(d.get(k).is_some(), "issue lacks {k}");
    }
    assert_eq!(d["private_key_type"], "ec");
    assert!(d["expiration"].is_i64());
    assert!(
        d["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", d["issuing_ca"].as_str().unwrap());
    let cert = write(dir.path(), "cert.pem", d["certificate"].as_str().unwrap());
    let key = write(dir.path(), "key.pem", d["private_key"].as_str().unwrap());
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-purpose",
        "sslserver",
        cert.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-purpose",
        "sslclient",
        cert.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let (_, text) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
    assert!(
        text.contains("DNS:etcd-0.cluster.local")
            && text.contains("DNS:etcd.cluster.local")
            && text.contains("IP Address:127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication")
            && text.contains("TLS Web Client Authentication"),
        "{text}"
    );
    assert!(
        text.contains(
            "CA Issuers - URI:https://pki.internal:8200/v1/kubecluster/pki/etcd-member/ca"
        ),
        "AIA: {text}"
    );
    assert!(
        text.contains("URI:https://pki.internal:8200/v1/kubecluster/pki/etcd-member/crl"),
        "CRL DP: {text}"
    );
    assert!(text.contains("O = etcd"), "{text}");
    // The private key matches the certificate.
    let (_, pk1) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    let (_, pk2) = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert_eq!(pk1, pk2);
    // Validity is 24h (+30s backdating).
    let (_, dates) = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-startdate",
        "-enddate",
    ]);
    assert!(dates.contains("notAfter"), "{dates}");
    let exp = d["expiration"].as_i64().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (exp - now - 86_400).abs() < 60,
        "expiration {exp} vs now {now}"
    );
    // notBefore is backdated by the role's not_before_duration (30s).
    let nb = d["not_before"].as_i64().unwrap();
    assert!((now - 30 - nb).abs() < 60, "not_before {nb} vs now {now}");

    // The certificate is stored and listed; ca/pem is served raw without a token.
    let serial = d["serial_number"].as_str().unwrap();
    let l = app.call("LIST", &format!("{MOUNT}/certs"), t, None).await;
    assert!(
        l.body["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == serial)
    );
    let c = app
        .call("GET", &format!("{MOUNT}/cert/{serial}"), None, None)
        .await;
    assert_eq!(
        c.body["data"]["certificate"].as_str().unwrap().trim(),
        d["certificate"].as_str().unwrap().trim()
    );
    assert_eq!(c.body["data"]["revocation_time"], 0);
    let ca_pem = app
        .call("GET", &format!("{MOUNT}/ca/pem"), None, None)
        .await;
    assert_eq!(ca_pem.status, 200);
    assert_eq!(
        ca_pem.content_type.as_deref(),
        Some("application/pem-certificate-chain")
    );
    assert_eq!(
        String::from_utf8(ca_pem.raw).unwrap().trim(),
        d["issuing_ca"].as_str().unwrap().trim()
    );
}

#[tokio::test]
async fn role_refuses_names_it_does_not_allow_and_stores_nothing() {
    let (app, token) = setup().await;
    let t = Some(token.as_str());
    let cases: &[(Value, &str)] = &[
        (
            json!({"common_name": "evil.com"}),
            "common name evil.com not allowed by this role",
        ),
        (
            json!({"common_name": "cluster.local"}),
            "common name cluster.local not allowed by this role",
        ),
        (
            json!({"common_name": "*.cluster.local"}),
            "common name *.cluster.local not allowed by this role",
        ),
        (
            json!({"common_name": "a.cluster.local", "alt_names": "evil.com"}),
            "subject alternate name evil.com not allowed by this role",
        ),
        (
            json!({"common_name": "a.cluster.local", "uri_sans": "spiffe://cluster.local/x"}),
            "URI Subject Alternative Names are not allowed in this role, but were provided via the API",
        ),
        (
            json!({"common_name": ""}),
            "the common_name field is required",
        ),
    ];
    for (body, msg) in cases {
        let r = app
            .call(
                "POST",
                &format!("{MOUNT}/issue/member"),
                t,
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        let got = r.body["errors"][0].as_str().unwrap_or_default();
        assert!(got.starts_with(msg), "{body}: got {got:?}, want {msg:?}");
    }
    // IP SANs refused once the role forbids them.
    let r = app.call("POST", &format!("{MOUNT}/roles/noip"), t, Some(json!({"allowed_domains": ["cluster.local"], "allow_subdomains": true, "allow_ip_sans": false, "key_type": "ec"}))).await;
    assert_eq!(r.status, 200);
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/issue/noip"),
            t,
            Some(json!({"common_name": "a.cluster.local", "ip_sans": "10.0.0.1"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("IP Subject Alternative Names are not allowed in this role"),
        "{:?}",
        r.body
    );
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/issue/nope"),
            t,
            Some(json!({"common_name": "a.cluster.local"})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["errors"][0].as_str()),
        (400, Some("unknown role: nope"))
    );
    // Nothing was stored by any refusal: the root is the only certificate.
    let l = app.call("LIST", &format!("{MOUNT}/certs"), t, None).await;
    assert_eq!(l.status, 200, "{:?}", l.body);
    assert_eq!(l.body["data"]["keys"].as_array().unwrap().len(), 1);
    let root_serial = l.body["data"]["keys"][0].as_str().unwrap();
    let by_serial = app
        .call("GET", &format!("{MOUNT}/cert/{root_serial}"), None, None)
        .await;
    let ca = app
        .call("GET", &format!("{MOUNT}/cert/ca"), None, None)
        .await;
    assert_eq!(
        by_serial.body["data"]["certificate"]
            .as_str()
            .map(str::trim),
        ca.body["data"]["certificate"].as_str().map(str::trim)
    );
    // Without a token: 403; with a bad one: 403.
    assert_eq!(
        app.call(
            "POST",
            &format!("{MOUNT}/issue/member"),
            None,
            Some(json!({"common_name": "a.cluster.local"}))
        )
        .await
        .status,
        403
    );
}

#[tokio::test]
async fn role_read_returns_every_field_and_ttl_is_capped_with_a_warning() {
    let (app, token) = setup().await;
    let t = Some(token.as_str());
    let r = app
        .call("GET", &format!("{MOUNT}/roles/member"), t, None)
        .await;
    let d = r.body["data"].as_object().unwrap();
    for k in [
        "allow_any_name",
        "allow_bare_domains",
        "allow_glob_domains",
        "allow_ip_sans",
        "allow_localhost",
        "allow_subdomains",
        "allow_token_displayname",
        "allow_wildcard_certificates",
        "allowed_domains",
        "allowed_domains_template",
        "allowed_other_sans",
        "allowed_serial_numbers",
        "allowed_uri_sans",
        "allowed_uri_sans_template",
        "allowed_user_ids",
        "basic_constraints_valid_for_non_ca",
        "client_flag",
        "cn_validations",
        "code_signing_flag",
        "country",
        "email_protection_flag",
        "enforce_hostnames",
        "ext_key_usage",
        "ext_key_usage_oids",
        "generate_lease",
        "issuer_ref",
        "key_bits",
        "key_type",
        "key_usage",
        "locality",
        "max_ttl",
        "no_store",
        "not_after",
        "not_before_duration",
        "organization",
        "ou",
        "policy_identifiers",
        "postal_code",
        "province",
        "require_cn",
        "server_flag",
        "signature_bits",
        "street_address",
        "ttl",
        "use_csr_common_name",
        "use_csr_sans",
        "use_pss",
    ] {
        assert!(d.contains_key(k), "role read lacks {k}");
    }
    assert_eq!(
        (d["ttl"].as_u64(), d["max_ttl"].as_u64()),
        (Some(2_592_000), Some(7_776_000))
    );
    assert_eq!(d["allowed_domains"], json!(["cluster.local"]));
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/issue/member"),
            t,
            Some(json!({"common_name": "a.cluster.local", "ttl": "8760h"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let w = r.body["warnings"][0].as_str().unwrap();
    assert!(w.contains("maxTTL"), "{w}");
    let exp = r.body["data"]["expiration"].as_i64().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((exp - now - 7_776_000).abs() < 60);
    // A TTL beyond the CA's expiry is refused.
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/roles/long"),
            t,
            Some(json!({"allow_any_name": true, "key_type": "ec", "max_ttl": "900000h"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/issue/long"),
            t,
            Some(json!({"common_name": "x", "ttl": "800000h"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("cannot satisfy request, as TTL would result in notAfter"),
        "{:?}",
        r.body
    );
    // Bad role writes are refused and change nothing.
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/roles/member"),
            t,
            Some(json!({"ttl": "10h", "max_ttl": "1h"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        app.call("GET", &format!("{MOUNT}/roles/member"), t, None)
            .await
            .body["data"]["ttl"],
        2_592_000
    );
    let l = app.call("LIST", &format!("{MOUNT}/roles"), t, None).await;
    assert_eq!(l.body["data"]["keys"], json!(["long", "member"]));
    assert_eq!(
        app.call("DELETE", &format!("{MOUNT}/roles/long"), t, None)
            .await
            .status,
        204
    );
    assert_eq!(
        app.call("GET", &format!("{MOUNT}/roles/long"), t, None)
            .await
            .status,
        404
    );
}

fn csr_pem(cn: &str, sans: &[&str]) -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    (p.serialize_request(&key).unwrap().pem().unwrap(), key)
}

#[tokio::test]
async fn sign_checks_the_csr_and_applies_the_role() {
    let (app, token) = setup().await;
    let t = Some(token.as_str());
    let (csr, key) = csr_pem("etcd-1.cluster.local", &["etcd-1.cluster.local"]);
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/sign/member"),
            t,
            Some(json!({"csr": csr, "ttl": "1h"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body["data"].get("private_key").is_none(),
        "the key never leaves the requester"
    );
    let pem = r.body["data"]["certificate"].as_str().unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        cert.public_key().raw,
        &rcgen::PublicKeyData::subject_public_key_info(&key)[..]
    );
    assert_eq!(r.body["warnings"], Value::Null, "{:?}", r.body);
    // The role takes the CN from the CSR (use_csr_common_name defaults to
    // true): a common_name in the request is ignored, with Vault's warning.
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/sign/member"),
            t,
            Some(json!({"csr": csr, "common_name": "other.cluster.local"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["warnings"],
        json!([
            "the common_name field was provided but the role is set with \"use_csr_common_name\" set to true"
        ])
    );
    // A CSR for a name the role forbids.
    let (bad, _) = csr_pem("evil.com", &["evil.com"]);
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/sign/member"),
            t,
            Some(json!({"csr": bad})),
        )
        .await;
    assert_eq!(r.status, 400);
    // A CSR whose signature does not verify: flip a byte inside the signature.
    let (good, _) = csr_pem("etcd-2.cluster.local", &["etcd-2.cluster.local"]);
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(good.as_bytes())
        .map(|c: rustls::pki_types::CertificateSigningRequestDer| c.as_ref().to_vec())
        .unwrap();
    let mut tampered = der.clone();
    let n = tampered.len();
    tampered[n - 5] ^= 0x01;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&tampered);
    let tampered_pem =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n");
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/sign/member"),
            t,
            Some(json!({"csr": tampered_pem})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    // use_csr_sans=false: names come from the request and the role still applies.
    app.call("POST", &format!("{MOUNT}/roles/nocsr"), t, Some(json!({"allowed_domains": "cluster.local", "allow_subdomains": true, "use_csr_sans": false, "use_csr_common_name": false, "key_type": "ec"}))).await;
    let (csr, _) = csr_pem("a.cluster.local", &["a.cluster.local"]);
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/sign/nocsr"),
            t,
            Some(json!({"csr": csr, "common_name": "b.cluster.local", "alt_names": "evil.com"})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/sign/nocsr"),
            t,
            Some(json!({"csr": csr, "common_name": "b.cluster.local"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        app.call("POST", &format!("{MOUNT}/sign/member"), t, Some(json!({})))
            .await
            .body["errors"][0],
        "\"csr\" is empty"
    );
}

#[tokio::test]
async fn revoke_puts_the_serial_in_a_signed_crl_and_tidy_keeps_live_certs() {
    let (app, token) = setup().await;
    let t = Some(token.as_str());
    let mut serials = Vec::new();
    for i in 0..3 {
        let r = app
            .call(
                "POST",
                &format!("{MOUNT}/issue/member"),
                t,
                Some(json!({"common_name": format!("n{i}.cluster.local")})),
            )
            .await;
        serials.push(
            r.body["data"]["serial_number"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/revoke"),
            t,
            Some(json!({"serial_number": serials[1]})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rt = r.body["data"]["revocation_time"].as_i64().unwrap();
    // Idempotent: the original time comes back.
    let again = app
        .call(
            "POST",
            &format!("{MOUNT}/revoke"),
            t,
            Some(json!({"serial_number": serials[1].replace(':', "-")})),
        )
        .await;
    assert_eq!(again.body["data"]["revocation_time"].as_i64(), Some(rt));
    assert_eq!(
        app.call("POST", &format!("{MOUNT}/revoke"), t, Some(json!({})))
            .await
            .status,
        400
    );
    assert_eq!(
        app.call(
            "POST",
            &format!("{MOUNT}/revoke"),
            t,
            Some(json!({"serial_number": "00:11"}))
        )
        .await
        .status,
        400
    );

    // The CRL (DER, no token) lists exactly the revoked serial and verifies against the CA.
    let crl = app.call("GET", &format!("{MOUNT}/crl"), None, None).await;
    assert_eq!(crl.content_type.as_deref(), Some("application/pkix-crl"));
    let (_, parsed) = <x509_parser::revocation_list::CertificateRevocationList as x509_parser::prelude::FromDer<_>>::from_der(&crl.raw).unwrap();
    let listed: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| {
            pki_server::pki::SerialNumber::from_bytes(r.raw_serial())
                .unwrap()
                .colon_hex()
        })
        .collect();
    assert_eq!(listed, vec![serials[1].clone()]);
    let ca = app.call("GET", &format!("{MOUNT}/ca"), None, None).await;
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca.raw).unwrap();
    parsed
        .verify_signature(ca_cert.public_key())
        .expect("CRL signature verifies");
    let c = app
        .call("GET", &format!("{MOUNT}/cert/{}", serials[1]), None, None)
        .await;
    assert_eq!(c.body["data"]["revocation_time"].as_i64(), Some(rt));
    assert_eq!(
        app.call("GET", &format!("{MOUNT}/crl/rotate"), t, None)
            .await
            .body["data"]["success"],
        true
    );
    let pem = app
        .call("GET", &format!("{MOUNT}/crl/pem"), None, None)
        .await;
    assert!(
        String::from_utf8(pem.raw)
            .unwrap()
            .starts_with("-----BEGIN X509 CRL-----")
    );

    // Tidy keeps unexpired certificates; LIST still shows all three and the root.
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/tidy"),
            t,
            Some(
                json!({"tidy_cert_store": true, "tidy_revoked_certs": true, "safety_buffer": "1s"}),
            ),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["data"], Value::Null, "{:?}", r.body);
    assert_eq!(r.body["warnings"].as_array().map(Vec::len), Some(1));
    assert!(
        r.body["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("Tidy operation successfully started")
    );
    let l = app.call("LIST", &format!("{MOUNT}/certs"), t, None).await;
    assert_eq!(l.body["data"]["keys"].as_array().unwrap().len(), 4);
    assert_eq!(
        app.call("LIST", &format!("{MOUNT}/certs/revoked"), t, None)
            .await
            .body["data"]["keys"],
        json!([serials[1]])
    );
}

#[tokio::test]
async fn tidy_removes_records_expired_past_the_safety_buffer_and_keeps_the_rest() {
    let (app, token) = setup().await;
    let t = Some(token.as_str());
    let short = app
        .call(
            "POST",
            &format!("{MOUNT}/issue/member"),
            t,
            Some(json!({"common_name": "short.cluster.local", "ttl": "1h"})),
        )
        .await;
    let short_revoked = app
        .call(
            "POST",
            &format!("{MOUNT}/issue/member"),
            t,
            Some(json!({"common_name": "gone.cluster.local", "ttl": "1h"})),
        )
        .await;
    let long = app
        .call(
            "POST",
            &format!("{MOUNT}/issue/member"),
            t,
            Some(json!({"common_name": "long.cluster.local", "ttl": "720h"})),
        )
        .await;
    let serial = |r: &crate::harness::Resp| {
        r.body["data"]["serial_number"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (s_short, s_rev, s_long) = (serial(&short), serial(&short_revoked), serial(&long));
    assert_eq!(
        app.call(
            "POST",
            &format!("{MOUNT}/revoke"),
            t,
            Some(json!({"serial_number": s_rev}))
        )
        .await
        .status,
        200
    );

    // Tidy as if two days had passed: the 1h certificates are 47h past expiry,
    // beyond a 24h safety buffer; the 720h one is still valid. Time is a parameter.
    let barrier = app.state.seal.barrier().unwrap();
    let table = app.state.mounts(&barrier).await.unwrap();
    let (mount, _) = table.route("kubecluster/pki/etcd-member/tidy").unwrap();
    let cache = app
        .state
        .cache
        .engines
        .state(&mount.uuid, app.state.seal.generation());
    let engine = pki_server::engine::Engine::new(barrier.as_ref(), mount, cache);
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    // A safety buffer longer than the time since expiry keeps everything.
    assert_eq!(
        engine
            .tidy(true, true, std::time::Duration::from_secs(72 * 3600), later)
            .await
            .unwrap(),
        (0, 0)
    );
    assert_eq!(
        engine
            .tidy(true, true, std::time::Duration::from_secs(24 * 3600), later)
            .await
            .unwrap(),
        (2, 1)
    );

    let l = app.call("LIST", &format!("{MOUNT}/certs"), t, None).await;
    // What is left: the long-lived certificate and the CA's own (stored as in Vault).
    let ca_serial = app
        .call("GET", &format!("{MOUNT}/cert/ca"), None, None)
        .await;
    let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(
        ca_serial.body["data"]["certificate"]
            .as_str()
            .unwrap()
            .as_bytes(),
    )
    .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
    .unwrap();
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let ca_serial = pki_server::pki::SerialNumber::from_bytes(ca_cert.raw_serial()).unwrap();
    let mut want = vec![s_long.clone(), ca_serial.colon_hex()];
    want.sort();
    assert_eq!(l.body["data"]["keys"], json!(want));
    assert_eq!(
        app.call("GET", &format!("{MOUNT}/cert/{s_short}"), None, None)
            .await
            .status,
        404
    );
    assert_eq!(
        app.call("LIST", &format!("{MOUNT}/certs/revoked"), t, None)
            .await
            .status,
        404
    );
    // The CRL was rebuilt without the tidied revocation.
    let crl = app.call("GET", &format!("{MOUNT}/crl"), None, None).await;
    let (_, parsed) = <x509_parser::revocation_list::CertificateRevocationList as x509_parser::prelude::FromDer<_>>::from_der(&crl.raw).unwrap();
    assert_eq!(parsed.iter_revoked_certificates().count(), 0);
}

#[tokio::test]
async fn config_crl_write_answers_with_the_config_and_refuses_what_it_cannot_do() {
    let (app, token) = setup().await;
    let t = Some(token.as_str());
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/config/crl"),
            t,
            Some(json!({"expiry": "48h"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["data"]["expiry"], "48h0m0s");
    assert_eq!(r.body["data"]["allow_expired_cert_revocation"], false);
    let read = app
        .call("GET", &format!("{MOUNT}/config/crl"), t, None)
        .await;
    assert_eq!(read.body["data"], r.body["data"]);
    for refused in [
        json!({"auto_rebuild": true}),
        json!({"allow_expired_cert_revocation": true}),
    ] {
        let r = app
            .call("POST", &format!("{MOUNT}/config/crl"), t, Some(refused))
            .await;
        assert_eq!(r.status, 400, "{:?}", r.body);
    }
}

#[tokio::test]
async fn intermediate_flow_answers_with_vaults_shapes_and_aia_warnings() {
    let (app, token) = setup().await;
    let t = Some(token.as_str());
    let r = app
        .call(
            "POST",
            "/v1/sys/mounts/inter",
            t,
            Some(json!({"type": "pki"})),
        )
        .await;
    assert_eq!(r.status, 204);
    // No config/urls on the new mount: the CSR answer warns, as Vault's does.
    let r = app
        .call(
            "POST",
            "/v1/inter/intermediate/generate/internal",
            t,
            Some(json!({"common_name": "inter", "key_type": "ec"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let w = r.body["warnings"][0].as_str().unwrap();
    assert!(
        w.contains("(AIA)") && w.ends_with("for the root mount."),
        "{w}"
    );
    let csr = r.body["data"]["csr"].as_str().unwrap().to_string();
    // The root mount has URLs: no AIA warning on the signed CA.
    let r = app
        .call(
            "POST",
            &format!("{MOUNT}/root/sign-intermediate"),
            t,
            Some(json!({"csr": csr, "common_name": "inter", "ttl": "8760h"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["warnings"], Value::Null, "{:?}", r.body);
    let cert = r.body["data"]["certificate"].as_str().unwrap().to_string();
    let r = app
        .call(
            "POST",
            "/v1/inter/intermediate/set-signed",
            t,
            Some(json!({"certificate": cert})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let d = &r.body["data"];
    assert_eq!(d["imported_issuers"].as_array().map(Vec::len), Some(1));
    for k in ["imported_keys", "existing_issuers", "existing_keys"] {
        assert_eq!(d[k], Value::Null, "{k}: {d:?}");
    }
    assert!(d["mapping"].is_object());
    assert!(
        r.body["warnings"][0].as_str().unwrap().contains("(AIA)"),
        "{:?}",
        r.body
    );
}
