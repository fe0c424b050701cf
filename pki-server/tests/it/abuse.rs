//! Abuse regressions (issue #15), in-process: re-initialisation over a live or
//! orphaned store, Vault CLI init on a Shamir seal, `not_after` past the
//! role's max_ttl, percent-encoded paths (hvac's `read_certificate`),
//! email-form names, ACL parameter constraints, and a privileged caller's
//! period capped by the token role.

use crate::harness::TestApp;
use pki_server::storage::{DynStorage, MemoryStorage, Storage};
use serde_json::json;
use std::sync::Arc;

const M: &str = "/v1/kube/pki";

async fn pki(app: &TestApp, root: &str) {
    let t = Some(root);
    let r = app
        .call(
            "POST",
            "/v1/sys/mounts/kube/pki",
            t,
            Some(json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = app
        .call(
            "POST",
            &format!("{M}/root/generate/internal"),
            t,
            Some(json!({"common_name": "ca", "key_type": "ec", "ttl": "87600h"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .call("POST", &format!("{M}/roles/node"), t, Some(json!({"allowed_domains": "node-1", "allow_bare_domains": true, "enforce_hostnames": false, "key_type": "ec", "max_ttl": "1h", "cn_validations": ["hostname"]})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn init_is_refused_while_unsealed_and_over_existing_data() {
    let mem = Arc::new(MemoryStorage::default());
    let app = TestApp::with_storage(mem.clone() as DynStorage);
    let root = app.init_unsealed().await;
    // Delete the seal configuration (what an attacker with bucket access
    // would do) while the server is unsealed: init still refuses.
    mem.delete("core/seal-config").await.unwrap();
    mem.delete("core/keyring").await.unwrap();
    let r = app
        .call(
            "PUT",
            "/v1/sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["errors"][0]
            .as_str()
            .unwrap()
            .contains("already initialized"),
        "{:?}",
        r.body
    );
    // The live barrier is untouched: the root token still works.
    let r = app
        .call("GET", "/v1/auth/token/lookup-self", Some(&root), None)
        .await;
    assert_eq!(r.status, 200);

    // A fresh server on the same store (sealed): data without a seal
    // configuration is never initialised over, and seal-status says why.
    let fresh = TestApp::with_storage(mem.clone() as DynStorage);
    let before = mem.list("core/").await.unwrap();
    let r = fresh
        .call(
            "PUT",
            "/v1/sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["errors"][0]
            .as_str()
            .unwrap()
            .contains("restore core/seal-config"),
        "{:?}",
        r.body
    );
    assert_eq!(
        mem.list("core/").await.unwrap(),
        before,
        "a refused init wrote something"
    );
    let s = fresh.call("GET", "/v1/sys/seal-status", None, None).await;
    assert_eq!(s.body["initialized"], false);
    assert!(
        s.body["warnings"]
            .to_string()
            .contains("no seal configuration"),
        "{:?}",
        s.body
    );
}

#[tokio::test]
async fn vault_cli_init_with_zero_recovery_fields_works_on_shamir() {
    // `bao operator init` always sends recovery_shares/threshold 0.
    let app = TestApp::new();
    let r = app
        .call("PUT", "/v1/sys/init", None, Some(json!({"secret_shares": 3, "secret_threshold": 2, "recovery_shares": 0, "recovery_threshold": 0, "stored_shares": 0, "pgp_keys": null, "root_token_pgp_key": ""})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["keys"].as_array().unwrap().len(), 3);
    // Non-zero recovery fields on Shamir stay refused.
    let app = TestApp::new();
    let r = app
        .call(
            "PUT",
            "/v1/sys/init",
            None,
            Some(json!({"secret_shares": 3, "secret_threshold": 2, "recovery_shares": 1})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
}

#[tokio::test]
async fn not_after_past_the_roles_max_ttl_is_refused() {
    let app = TestApp::new();
    let root = app.init_unsealed().await;
    pki(&app, &root).await;
    let issue = format!("{M}/issue/node");
    let r = app
        .call(
            "POST",
            &issue,
            Some(&root),
            Some(json!({"common_name": "node-1", "not_after": "2035-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let e = r.body["errors"][0].as_str().unwrap();
    assert!(e.contains("max_ttl") && e.contains("1h"), "{e}");
    // Within the limit: issued with exactly that notAfter.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::minutes(30);
    let soon = soon.replace_nanosecond(0).unwrap();
    let text = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = app
        .call(
            "POST",
            &issue,
            Some(&root),
            Some(json!({"common_name": "node-1", "not_after": text})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["data"]["expiration"], soon.unix_timestamp());
    // ttl keeps Vault's cap-with-warning.
    let r = app
        .call(
            "POST",
            &issue,
            Some(&root),
            Some(json!({"common_name": "node-1", "ttl": "87600h"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body["warnings"].to_string().contains("maxTTL"),
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn percent_encoded_paths_route_like_vault() {
    let app = TestApp::new();
    let root = app.init_unsealed().await;
    pki(&app, &root).await;
    let r = app
        .call(
            "POST",
            &format!("{M}/issue/node"),
            Some(&root),
            Some(json!({"common_name": "node-1"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let serial = r.body["data"]["serial_number"]
        .as_str()
        .unwrap()
        .to_string();
    // hvac's read_certificate: GET <mount>/cert/<serial> with ':' as %3A.
    let enc = serial.replace(':', "%3A");
    let r = app
        .call("GET", &format!("{M}/cert/{enc}"), None, None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body["data"]["certificate"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    // The ACL sees the decoded path too: a policy on the plain path governs
    // its encoded spelling, and a deny cannot be dodged by encoding.
    let policy = r#"
        path "kube/pki/issue/*" { capabilities = ["update"] }
        path "kube/pki/issue/node" { capabilities = ["deny"] }
    "#;
    let r = app
        .call(
            "PUT",
            "/v1/sys/policies/acl/p",
            Some(&root),
            Some(json!({"policy": policy})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&root),
            Some(json!({"policies": ["p"]})),
        )
        .await;
    let tok = r.body["auth"]["client_token"].as_str().unwrap().to_string();
    for p in [
        format!("{M}/issue/node"),
        format!("{M}/issue/%6Eode"),
        "/v1/kube%2Fpki/issue/node".to_string(),
    ] {
        let r = app
            .call(
                "POST",
                &p,
                Some(&tok),
                Some(json!({"common_name": "node-1"})),
            )
            .await;
        assert_eq!(r.status, 403, "{p}: {:?}", r.body);
    }
    // Malformed escapes: 400, in Vault's error shape.
    let r = app.call("GET", &format!("{M}/cert/%zz"), None, None).await;
    assert_eq!(r.status, 400);
    assert!(r.body["errors"].is_array());
}

#[tokio::test]
async fn email_form_names_are_refused_by_hostname_only_roles() {
    let app = TestApp::new();
    let root = app.init_unsealed().await;
    pki(&app, &root).await;
    for body in [
        json!({"common_name": "x@node-1"}),
        json!({"common_name": "node-1", "alt_names": "x@node-1"}),
    ] {
        let r = app
            .call(
                "POST",
                &format!("{M}/issue/node"),
                Some(&root),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
    }
}

#[tokio::test]
async fn acl_parameter_constraints_are_enforced_before_the_handler() {
    let app = TestApp::new();
    let root = app.init_unsealed().await;
    pki(&app, &root).await;
    let policy = r#"
        path "kube/pki/issue/node" {
          capabilities = ["update"]
          denied_parameters = { "not_after" = [] }
          allowed_parameters = { "common_name" = ["node-1"], "ttl" = [] }
        }
        path "kube/pki/roles/node" {
          capabilities = ["update"]
          required_parameters = ["max_ttl"]
        }
    "#;
    let r = app
        .call(
            "PUT",
            "/v1/sys/policies/acl/c",
            Some(&root),
            Some(json!({"policy": policy})),
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&root),
            Some(json!({"policies": ["c"]})),
        )
        .await;
    let tok = r.body["auth"]["client_token"].as_str().unwrap().to_string();
    let issue = format!("{M}/issue/node");
    let certs_before = app
        .call("LIST", &format!("{M}/certs"), Some(&root), None)
        .await
        .body["data"]["keys"]
        .clone();
    for (body, want) in [
        (
            json!({"common_name": "node-1", "not_after": "2030-01-01T00:00:00Z"}),
            403,
        ),
        (json!({"common_name": "node-1", "alt_names": "node-1"}), 403),
        (json!({"common_name": "other"}), 403),
        (json!({"common_name": "node-1", "ttl": "10m"}), 200),
    ] {
        let r = app
            .call("POST", &issue, Some(&tok), Some(body.clone()))
            .await;
        assert_eq!(r.status, want, "{body}: {:?}", r.body);
    }
    let certs_after = app
        .call("LIST", &format!("{M}/certs"), Some(&root), None)
        .await
        .body["data"]["keys"]
        .clone();
    assert_eq!(
        certs_after.as_array().unwrap().len(),
        certs_before.as_array().unwrap().len() + 1,
        "a refused request issued"
    );
    let r = app
        .call(
            "POST",
            &format!("{M}/roles/node"),
            Some(&tok),
            Some(json!({"allowed_domains": "x"})),
        )
        .await;
    assert_eq!(r.status, 403, "required_parameters: {:?}", r.body);
}

#[tokio::test]
async fn a_privileged_callers_period_is_capped_by_the_token_role() {
    let app = TestApp::new();
    let root = app.init_unsealed().await;
    let r = app
        .call(
            "POST",
            "/v1/auth/token/roles/node",
            Some(&root),
            Some(json!({"token_period": "72h", "token_explicit_max_ttl": "100h"})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create/node",
            Some(&root),
            Some(json!({"period": "87600h", "explicit_max_ttl": "87600h"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let tok = r.body["auth"]["client_token"].as_str().unwrap().to_string();
    let me = app
        .call("GET", "/v1/auth/token/lookup-self", Some(&tok), None)
        .await;
    assert_eq!(me.body["data"]["period"], 72 * 3600, "{:?}", me.body);
    assert_eq!(
        me.body["data"]["explicit_max_ttl"],
        100 * 3600,
        "{:?}",
        me.body
    );
    // Without a role: never past the system maximum (768h).
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&root),
            Some(json!({"period": "87600h"})),
        )
        .await;
    let tok = r.body["auth"]["client_token"].as_str().unwrap().to_string();
    let me = app
        .call("GET", "/v1/auth/token/lookup-self", Some(&tok), None)
        .await;
    assert_eq!(me.body["data"]["period"], 768 * 3600, "{:?}", me.body);
}

/// The server rebuilds a CRL by itself before its nextUpdate (before, the
/// stored CRL went stale unless someone asked for a rotation).
#[tokio::test]
async fn crls_are_rebuilt_before_they_expire() {
    use x509_parser::prelude::FromDer as _;
    use x509_parser::revocation_list::CertificateRevocationList;
    let app = TestApp::new();
    let root = app.init_unsealed().await;
    pki(&app, &root).await;
    let r = app
        .call(
            "POST",
            &format!("{M}/config/crl"),
            Some(&root),
            Some(json!({"expiry": "90s"})),
        )
        .await;
    assert!(r.status == 200 || r.status == 204, "{:?}", r.body);
    let r = app
        .call("GET", &format!("{M}/crl/rotate"), Some(&root), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let crl = |raw: Vec<u8>| {
        let (_, c) = CertificateRevocationList::from_der(&raw).unwrap();
        (
            c.crl_number().unwrap().to_string(),
            c.next_update().unwrap().timestamp(),
        )
    };
    let first = crl(app.call("GET", &format!("{M}/crl"), None, None).await.raw);
    let now = time::OffsetDateTime::now_utc();
    // Plenty of life left: nothing to do.
    assert_eq!(
        pki_server::maintenance::tick(&app.state, now)
            .await
            .unwrap(),
        0
    );
    // A third or less of its life left: rebuilt, with a later nextUpdate.
    let later = now + time::Duration::seconds(70);
    assert_eq!(
        pki_server::maintenance::tick(&app.state, later)
            .await
            .unwrap(),
        1
    );
    let second = crl(app.call("GET", &format!("{M}/crl"), None, None).await.raw);
    assert_ne!(first.0, second.0, "the CRL number did not move");
    assert!(second.1 > first.1, "{first:?} {second:?}");
}
