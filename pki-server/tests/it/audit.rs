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
