//! Audit: every request and response on record with secrets HMAC'd; a device
//! that cannot write fails the request closed and nothing is issued.

use crate::harness::TestApp;
use pki_server::storage::Storage;
use serde_json::{Value, json};

async fn cert_count(app: &TestApp) -> usize {
    let barrier = app.state.seal.barrier().unwrap();
    let table = app.state.mounts(&barrier).await.unwrap();
    let (m, _) = table.route("pki/ca").unwrap();
    barrier
        .list(&format!("{}certs/", m.storage_prefix()))
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn requests_are_audited_with_secrets_hashed_and_failures_close() {
    let app = TestApp::new();
    let root = app.init_unsealed().await;
    let t = Some(root.as_str());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let r = app
        .call(
            "PUT",
            "/v1/sys/audit/file",
            t,
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(
        app.call(
            "PUT",
            "/v1/sys/audit/file",
            t,
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}}))
        )
        .await
        .status,
        400,
        "duplicate path"
    );
    assert_eq!(
        app.call("PUT", "/v1/sys/audit/x", t, Some(json!({"type": "socket"})))
            .await
            .status,
        400
    );
    assert_eq!(
        app.call(
            "PUT",
            "/v1/sys/audit/y",
            t,
            Some(json!({"type": "file", "options": {"file_path": "/nonexistent-dir/a.log"}}))
        )
        .await
        .status,
        400,
        "a device that cannot open is refused"
    );
    let listed = app.call("GET", "/v1/sys/audit", t, None).await;
    assert_eq!(listed.body["data"]["file/"]["type"], "file");

    app.call(
        "POST",
        "/v1/sys/mounts/pki",
        t,
        Some(json!({"type": "pki", "config": {"max_lease_ttl": "8760h"}})),
    )
    .await;
    app.call(
        "POST",
        "/v1/pki/root/generate/internal",
        t,
        Some(json!({"common_name": "ca", "key_type": "ec"})),
    )
    .await;
    app.call(
        "POST",
        "/v1/pki/roles/web",
        t,
        Some(json!({"allow_any_name": true, "key_type": "ec"})),
    )
    .await;
    let r = app
        .call(
            "POST",
            "/v1/pki/issue/web",
            t,
            Some(json!({"common_name": "secret-host.example.com"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let key = r.body["data"]["private_key"].as_str().unwrap();
    let key_line: String = key.lines().nth(1).unwrap().to_string();

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let issue: Vec<&Value> = lines
        .iter()
        .filter(|l| l["request"]["path"] == "pki/issue/web")
        .collect();
    assert_eq!(issue.len(), 2, "one request and one response line");
    assert_eq!(
        (issue[0]["type"].as_str(), issue[1]["type"].as_str()),
        (Some("request"), Some("response"))
    );
    assert_eq!(issue[0]["request"]["id"], issue[1]["request"]["id"]);
    assert_eq!(issue[0]["request"]["operation"], "update");
    for secret in [root.as_str(), key_line.as_str(), "secret-host.example.com"] {
        assert!(!text.contains(secret), "a secret reached the audit log");
    }
    assert!(
        issue[1]["response"]["data"]["private_key"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    // sys/audit-hash gives the same HMAC as the log.
    let h = app
        .call(
            "POST",
            "/v1/sys/audit-hash/file",
            t,
            Some(json!({"input": root})),
        )
        .await;
    assert_eq!(h.body["data"]["hash"], issue[0]["auth"]["client_token"]);

    // Only root or sudo may manage audit devices.
    app.call("PUT", "/v1/sys/policies/acl/issuer", t, Some(json!({"policy": "path \"pki/issue/*\" { capabilities = [\"update\"] }\npath \"sys/audit/*\" { capabilities = [\"update\", \"delete\"] }"}))).await;
    let c = app
        .call(
            "POST",
            "/v1/auth/token/create",
            t,
            Some(json!({"policies": ["issuer"]})),
        )
        .await;
    let issuer = c.body["auth"]["client_token"].as_str().unwrap().to_string();
    assert_eq!(
        app.call("DELETE", "/v1/sys/audit/file", Some(&issuer), None)
            .await
            .status,
        403,
        "sudo required"
    );

    // Fail closed: with only a device that cannot write, nothing is issued.
    assert_eq!(
        app.call(
            "PUT",
            "/v1/sys/audit/full",
            t,
            Some(json!({"type": "file", "options": {"file_path": "/dev/full"}}))
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.call(
            "POST",
            "/v1/pki/issue/web",
            Some(&issuer),
            Some(json!({"common_name": "a.example.com"}))
        )
        .await
        .status,
        200,
        "one working device is enough"
    );
    assert_eq!(
        app.call("DELETE", "/v1/sys/audit/file", t, None)
            .await
            .status,
        204
    );
    let before = cert_count(&app).await;
    let r = app
        .call(
            "POST",
            "/v1/pki/issue/web",
            Some(&issuer),
            Some(json!({"common_name": "b.example.com"})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["errors"][0].as_str()),
        (500, Some("internal error"))
    );
    assert_eq!(cert_count(&app).await, before, "nothing issued");
}

/// Refused requests (no token, an invalid token, an ACL denial) are on record
/// with the path and the error, the token only as an HMAC; and a body whose
/// audit entry would be huge is refused (413) before any handler, its entry
/// written without the body (before: refusals left no trace, and a 1 MiB
/// login of short strings wrote tens of MB per device).
#[tokio::test]
async fn refusals_are_audited_and_audit_amplification_is_refused() {
    let app = TestApp::new();
    let root = app.init_unsealed().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let r = app
        .call(
            "PUT",
            "/v1/sys/audit/file",
            Some(&root),
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .call(
            "PUT",
            "/v1/sys/policies/acl/none",
            Some(&root),
            Some(json!({"policy": "path \"x\" { capabilities = [\"read\"] }"})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&root),
            Some(json!({"policies": ["none"]})),
        )
        .await;
    let weak = r.body["auth"]["client_token"].as_str().unwrap().to_string();
    let bogus = "hvs.not-a-real-token-0123456789";
    for (token, path) in [
        (None, "sys/mounts"),
        (Some(bogus), "sys/mounts"),
        (Some(weak.as_str()), "sys/policies/acl/none"),
    ] {
        let r = app.call("GET", &format!("/v1/{path}"), token, None).await;
        assert_eq!(r.status, 403, "{path}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(bogus) && !text.contains(&weak),
        "a token in clear in the audit log"
    );
    let entries: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refused: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            e["type"] == "response"
                && e["error"]
                    .as_str()
                    .is_some_and(|x| x.contains("permission denied") || x.contains("invalid token"))
        })
        .collect();
    assert_eq!(refused.len(), 3, "refusals on record: {refused:#?}");
    for e in &refused {
        let tok = e["auth"]["client_token"].as_str().unwrap();
        assert!(tok.is_empty() || tok.starts_with("hmac-sha256:"), "{e}");
    }

    // A body (within the request limit, 64 KiB here) of short strings:
    // refused before the handler.
    let many: Vec<&str> = vec!["a"; 12_000];
    let before = std::fs::metadata(&log).unwrap().len();
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&root),
            Some(json!({"policies": many})),
        )
        .await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    let grown = std::fs::metadata(&log).unwrap().len() - before;
    assert!(
        grown < 16 * 1024,
        "the refused request wrote {grown} bytes of audit log"
    );
    let r = app
        .call("LIST", "/v1/auth/token/accessors", Some(&root), None)
        .await;
    assert_eq!(
        r.body["data"]["keys"].as_array().unwrap().len(),
        2,
        "a refused request created a token"
    );
}
