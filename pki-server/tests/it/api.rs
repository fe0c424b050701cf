//! The HTTP API in-process: seal lifecycle, Vault error shapes, health codes, rotation.

use crate::harness::TestApp;
use serde_json::json;

#[tokio::test]
async fn sealed_server_answers_503_everywhere_but_unauthenticated_sys() {
    let app = TestApp::new();
    for (m, p) in [
        ("GET", "/v1/sys/key-status"),
        ("PUT", "/v1/sys/rotate"),
        ("GET", "/v1/sys/leader"),
        ("GET", "/v1/anything/else"),
        ("GET", "/v1/sys/seal"),
    ] {
        let r = app.call(m, p, None, None).await;
        assert_eq!(r.status, 503, "{m} {p}");
        assert_eq!(r.body, json!({"errors": ["Vault is sealed"]}), "{m} {p}");
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(
        app.call("GET", "/v1/sys/init", None, None).await.body,
        json!({"initialized": false})
    );
    assert_eq!(
        app.call("GET", "/v1/sys/health", None, None).await.status,
        501
    );
    let r = app
        .call(
            "PUT",
            "/v1/sys/unseal",
            None,
            Some(json!({"key": "00".repeat(33)})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["errors"][0].as_str()),
        (400, Some("Vault is not initialized"))
    );
}

#[tokio::test]
async fn init_unseal_seal_over_the_api() {
    let app = TestApp::new();
    let (keys, keys_b64, token) = app.init().await;
    assert_eq!((keys.len(), keys_b64.len()), (5, 5));
    assert!(keys.iter().all(|k| k.len() == 66), "33-byte shares in hex");
    let again = app.call("PUT", "/v1/sys/init", None, Some(json!({}))).await;
    assert_eq!(
        (again.status.as_u16(), again.body["errors"][0].as_str()),
        (400, Some("Vault is already initialized"))
    );

    let st = app
        .call("GET", "/v1/sys/seal-status", None, None)
        .await
        .body;
    assert_eq!(
        (
            st["sealed"].as_bool(),
            st["t"].as_u64(),
            st["n"].as_u64(),
            st["progress"].as_u64()
        ),
        (Some(true), Some(3), Some(5), Some(0))
    );
    assert_eq!(st["type"], "shamir");
    let v = st["version"].as_str().unwrap();
    assert!(
        v.split('+')
            .next()
            .unwrap()
            .split('.')
            .all(|p| p.parse::<u32>().is_ok()),
        "semver {v}"
    );

    // hex, then base64, the same share twice (ignored), then a third: unsealed.
    let unseal = |k: String| {
        let app = &app;
        async move {
            app.call(
                "PUT",
                "/v1/sys/unseal",
                None,
                Some(json!({"key": k, "migrate": false})),
            )
            .await
        }
    };
    assert_eq!(unseal(keys[0].clone()).await.body["progress"], 1);
    let r = unseal(keys_b64[1].clone()).await;
    assert_eq!(r.body["progress"], 2);
    assert_eq!(
        unseal(keys[1].clone()).await.body["progress"],
        2,
        "same share twice does not count"
    );
    let r = unseal(keys[4].clone()).await;
    assert_eq!(
        (
            r.status.as_u16(),
            r.body["sealed"].as_bool(),
            r.body["progress"].as_u64()
        ),
        (200, Some(false), Some(0))
    );
    assert!(r.body["cluster_id"].is_string());
    // Unsealing an unsealed server answers the status.
    assert_eq!(unseal(keys[2].clone()).await.status, 200);
    let reset = app
        .call("PUT", "/v1/sys/unseal", None, Some(json!({"reset": true})))
        .await;
    assert_eq!(
        (reset.status.as_u16(), reset.body["errors"][0].as_str()),
        (400, Some("vault is unsealed"))
    );

    let h = app.call("GET", "/v1/sys/health", None, None).await;
    assert_eq!(h.status, 200);
    for k in [
        "initialized",
        "sealed",
        "standby",
        "performance_standby",
        "replication_performance_mode",
        "replication_dr_mode",
        "server_time_utc",
        "version",
    ] {
        assert!(h.body.get(k).is_some(), "health lacks {k}");
    }
    assert_eq!(
        app.call("GET", "/v1/sys/leader", None, None).await.body["ha_enabled"],
        false
    );

    // Seal needs a token; an unknown token is 403 with Vault's two errors.
    assert_eq!(
        app.call("PUT", "/v1/sys/seal", None, None).await.status,
        403
    );
    let bad = app
        .call("PUT", "/v1/sys/seal", Some("hvs.bogus"), None)
        .await;
    assert_eq!(
        bad.body,
        json!({"errors": ["permission denied", "invalid token"]})
    );
    assert!(
        app.state.seal.barrier().is_some(),
        "nothing sealed by a bad token"
    );
    assert_eq!(
        app.call("PUT", "/v1/sys/seal", Some(&token), None)
            .await
            .status,
        204
    );
    assert_eq!(
        app.call("GET", "/v1/sys/health", None, None).await.status,
        503
    );
    assert_eq!(
        app.call("GET", "/v1/sys/key-status", Some(&token), None)
            .await
            .status,
        503
    );
    // Sealing again is a no-op 204, as in Vault and OpenBao.
    assert_eq!(
        app.call("PUT", "/v1/sys/seal", None, None).await.status,
        204
    );
    let h = app.call("GET", "/v1/sys/health", None, None).await.body;
    assert_eq!(
        (h["standby"].as_bool(), h["replication_dr_mode"].as_str()),
        (Some(true), Some("unknown"))
    );
}

#[tokio::test]
async fn wrong_share_is_400_after_threshold_and_progress_resets() {
    let app = TestApp::new();
    let (keys, _, _) = app.init().await;
    let other = TestApp::new();
    let (other_keys, _, _) = other.init().await;
    app.call("PUT", "/v1/sys/unseal", None, Some(json!({"key": keys[0]})))
        .await;
    app.call("PUT", "/v1/sys/unseal", None, Some(json!({"key": keys[1]})))
        .await;
    let r = app
        .call(
            "PUT",
            "/v1/sys/unseal",
            None,
            Some(json!({"key": other_keys[0]})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["errors"][0].as_str()),
        (400, Some("unseal failed, invalid key"))
    );
    let st = app
        .call("GET", "/v1/sys/seal-status", None, None)
        .await
        .body;
    assert_eq!(
        (st["sealed"].as_bool(), st["progress"].as_u64()),
        (Some(true), Some(0))
    );
    // Two good shares are still not enough; reset clears progress.
    app.call("PUT", "/v1/sys/unseal", None, Some(json!({"key": keys[0]})))
        .await;
    app.call("PUT", "/v1/sys/unseal", None, Some(json!({"key": keys[1]})))
        .await;
    assert_eq!(
        app.call("GET", "/v1/sys/seal-status", None, None)
            .await
            .body["sealed"],
        true
    );
    let r = app
        .call(
            "PUT",
            "/v1/sys/unseal",
            None,
            Some(json!({"reset": "true"})),
        )
        .await;
    assert_eq!(r.body["progress"], 0);
    for bad in [json!({"key": "zz"}), json!({}), json!({"key": 5})] {
        assert_eq!(
            app.call("PUT", "/v1/sys/unseal", None, Some(bad.clone()))
                .await
                .status,
            400,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn bad_requests_get_vault_errors_and_change_nothing() {
    let app = TestApp::new();
    // Malformed JSON and non-object bodies: 400, nothing initialised.
    for body in [
        &b"{"[..],
        b"[1,2]",
        b"\"x\"",
        b"{\"secret_shares\": \"many\"}",
    ] {
        let r = app.raw("PUT", "/v1/sys/init", None, body.to_vec()).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
        assert!(r.body["errors"][0].is_string());
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    // Bad seal configurations.
    for body in [
        json!({"secret_shares": 3, "secret_threshold": 4}),
        json!({"secret_shares": 5, "secret_threshold": 1}),
        json!({"secret_shares": 300}),
        json!({"recovery_shares": 3}),
        json!({"pgp_keys": ["abc"]}),
    ] {
        let r = app
            .call("PUT", "/v1/sys/init", None, Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}");
    }
    // Oversized body: 413.
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(100 * 1024));
    let r = app.raw("PUT", "/v1/sys/init", None, big.into_bytes()).await;
    assert_eq!(r.status, 413);
    assert!(r.body["errors"][0].as_str().unwrap().contains("too large"));
    // Wrong methods: 405.
    for (m, p) in [
        ("DELETE", "/v1/sys/init"),
        ("GET", "/v1/sys/unseal"),
        ("PATCH", "/v1/sys/init"),
        ("PUT", "/v1/sys/seal-status"),
        ("PUT", "/v1/sys/health"),
    ] {
        let r = app.call(m, p, None, None).await;
        assert_eq!(r.status, 405, "{m} {p}");
        assert!(r.body["errors"].is_array());
    }
    // Not under /v1: 404.
    assert_eq!(
        app.call("GET", "/v2/sys/init", None, None).await.status,
        404
    );
    assert_eq!(
        app.call("GET", "/v1/sys/init", None, None).await.body["initialized"],
        false,
        "nothing was written"
    );
    assert!(app.state.seal.storage().list("").await.unwrap().is_empty());

    // Unsealed: unknown paths are 403 without a token, 404 with the root token.
    let token = app.init_unsealed().await;
    assert_eq!(
        app.call("GET", "/v1/no/such/path", None, None).await.status,
        403
    );
    let r = app
        .call("GET", "/v1/no/such/path", Some(&token), None)
        .await;
    assert_eq!(r.status, 404);
    assert!(
        r.body["errors"][0]
            .as_str()
            .unwrap()
            .contains("unsupported path")
    );
    assert_eq!(
        app.call("GET", "/v1/sys/seal", Some(&token), None)
            .await
            .status,
        405
    );
    assert_eq!(
        app.call("DELETE", "/v1/sys/rotate", Some(&token), None)
            .await
            .status,
        405
    );
    // Every response says no-store.
    let r = app.router.clone();
    let resp = tower::ServiceExt::oneshot(
        r,
        axum::http::Request::get("/v1/sys/health")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn health_codes_and_overrides() {
    let app = TestApp::new();
    let code = |q: &'static str| {
        let app = &app;
        async move {
            app.call("GET", &format!("/v1/sys/health{q}"), None, None)
                .await
                .status
                .as_u16()
        }
    };
    assert_eq!(code("").await, 501);
    assert_eq!(code("?uninitcode=299").await, 299);
    assert_eq!(code("?uninitcode=abc").await, 400);
    assert_eq!(
        app.call("HEAD", "/v1/sys/health", None, None)
            .await
            .raw
            .len(),
        0
    );
    app.init().await;
    assert_eq!(code("").await, 503);
    assert_eq!(code("?sealedcode=299&uninitcode=299&standbycode=299&drsecondarycode=299&performancestandbycode=299").await, 299);
    let r = app
        .call("GET", "/v1/sys/health?sealedcode=299", None, None)
        .await;
    assert_eq!(
        r.body["sealed"], true,
        "the body is the status JSON whatever the code"
    );
    assert_eq!(
        app.call("HEAD", "/v1/sys/health", None, None).await.status,
        503
    );
    let app2 = TestApp::new();
    app2.init_unsealed().await;
    assert_eq!(
        app2.call("GET", "/v1/sys/health?activecode=204", None, None)
            .await
            .status,
        204
    );
    assert_eq!(
        app2.call("HEAD", "/v1/sys/health", None, None).await.status,
        200
    );
}

#[tokio::test]
async fn rotate_adds_a_term_and_key_status_reports_it() {
    let app = TestApp::new();
    let token = app.init_unsealed().await;
    let ks = app
        .call("GET", "/v1/sys/key-status", Some(&token), None)
        .await;
    assert_eq!(ks.status, 200);
    assert_eq!(ks.body["data"]["term"], 1);
    assert_eq!(ks.body["term"], 1, "sys paths copy data to the top level");
    for k in ["request_id", "lease_id", "renewable", "lease_duration"] {
        assert!(ks.body.get(k).is_some(), "envelope lacks {k}");
    }
    assert_eq!(
        app.call("PUT", "/v1/sys/rotate", Some(&token), None)
            .await
            .status,
        204
    );
    assert_eq!(
        app.call("GET", "/v1/sys/key-status", Some(&token), None)
            .await
            .body["data"]["term"],
        2
    );
    // The root token (written under term 1) still opens.
    assert_eq!(
        app.call("POST", "/v1/sys/rotate", Some(&token), None)
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn mounts_enable_list_tune_disable() {
    let app = TestApp::new();
    let token = app.init_unsealed().await;
    let t = Some(token.as_str());
    let r = app
        .call("POST", "/v1/sys/mounts/kubecluster/pki/etcd-member", t, Some(json!({"type": "pki", "description": "etcd CA", "config": {"max_lease_ttl": "87600h", "default_lease_ttl": null}, "local": false, "seal_wrap": false, "options": null, "plugin_name": null})))
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let again = app
        .call(
            "POST",
            "/v1/sys/mounts/kubecluster/pki/etcd-member/",
            t,
            Some(json!({"type": "pki"})),
        )
        .await;
    assert_eq!(
        (again.status.as_u16(), again.body["errors"][0].as_str()),
        (
            400,
            Some("path is already in use at kubecluster/pki/etcd-member/")
        )
    );
    assert_eq!(
        app.call(
            "POST",
            "/v1/sys/mounts/kubecluster",
            t,
            Some(json!({"type": "pki"}))
        )
        .await
        .status,
        400,
        "overlap"
    );
    assert_eq!(
        app.call("POST", "/v1/sys/mounts/x", t, Some(json!({"type": "kv"})))
            .await
            .status,
        400,
        "unknown type"
    );
    assert_eq!(
        app.call(
            "POST",
            "/v1/sys/mounts/sys/x",
            t,
            Some(json!({"type": "pki"}))
        )
        .await
        .status,
        400,
        "reserved"
    );
    assert_eq!(
        app.call(
            "POST",
            "/v1/sys/mounts/x",
            t,
            Some(json!({"type": "pki", "config": {"max_lease_ttl": "forever"}}))
        )
        .await
        .status,
        400,
        "bad duration"
    );

    let l = app.call("GET", "/v1/sys/mounts", t, None).await;
    assert_eq!(l.status, 200);
    let m = &l.body["data"]["kubecluster/pki/etcd-member/"];
    assert_eq!(
        (
            m["type"].as_str(),
            m["config"]["max_lease_ttl"].as_u64(),
            m["description"].as_str()
        ),
        (Some("pki"), Some(315_360_000), Some("etcd CA"))
    );
    for k in [
        "accessor",
        "uuid",
        "local",
        "seal_wrap",
        "external_entropy_access",
    ] {
        assert!(m.get(k).is_some(), "mount entry lacks {k}");
    }
    assert!(
        l.body["kubecluster/pki/etcd-member/"].is_object(),
        "top-level copy"
    );
    assert_eq!(
        l.body["data"].as_object().unwrap().len(),
        1,
        "nothing else was mounted"
    );

    assert_eq!(
        app.call(
            "POST",
            "/v1/sys/mounts/kubecluster/pki/etcd-member/tune",
            t,
            Some(json!({"default_lease_ttl": "720h"}))
        )
        .await
        .status,
        204
    );
    let tune = app
        .call(
            "GET",
            "/v1/sys/mounts/kubecluster/pki/etcd-member/tune",
            t,
            None,
        )
        .await;
    assert_eq!(tune.body["data"]["default_lease_ttl"], 2_592_000);
    let one = app
        .call("GET", "/v1/sys/mounts/kubecluster/pki/etcd-member", t, None)
        .await;
    assert_eq!(one.body["data"]["type"], "pki");
    let missing = app.call("GET", "/v1/sys/mounts/nope", t, None).await;
    assert_eq!(
        (missing.status.as_u16(), missing.body["errors"][0].as_str()),
        (400, Some("No secret engine mount at nope/"))
    );

    // The table is behind the barrier and survives a seal/unseal cycle (cache invalidated).
    assert_eq!(
        app.call(
            "DELETE",
            "/v1/sys/mounts/kubecluster/pki/etcd-member",
            t,
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.call("GET", "/v1/sys/mounts", t, None).await.body["data"],
        json!({})
    );
    assert_eq!(
        app.call("DELETE", "/v1/sys/mounts/never", t, None)
            .await
            .status,
        204
    );
}
