//! Tokens and ACL policies over the API: policy CRUD, ACL enforcement on PKI
//! paths, child tokens, revocation, use counts, token roles, and identity
//! templates that pin a kubelet certificate to the calling token's node name.

use crate::harness::TestApp;
use serde_json::{Value, json};

const M: &str = "/v1/kube/pki";

async fn setup() -> (TestApp, String) {
    let app = TestApp::new();
    let root = app.init_unsealed().await;
    let t = Some(root.as_str());
    assert_eq!(
        app.call(
            "POST",
            "/v1/sys/mounts/kube/pki",
            t,
            Some(json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}))
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.call(
            "POST",
            &format!("{M}/root/generate/internal"),
            t,
            Some(json!({"common_name": "kubernetes", "key_type": "ec"}))
        )
        .await
        .status,
        200
    );
    let r = app
        .call("POST", &format!("{M}/roles/kubelet"), t, Some(json!({"allowed_domains": "system:node:{{identity.entity.metadata.node_name}}", "allowed_domains_template": true, "allow_bare_domains": true, "enforce_hostnames": false, "organization": "system:nodes", "server_flag": false, "client_flag": true, "key_type": "ec", "allow_ip_sans": false})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app.call("POST", &format!("{M}/roles/apiserver"), t, Some(json!({"allowed_domains": "kube-apiserver", "allow_bare_domains": true, "enforce_hostnames": false, "key_type": "ec"}))).await;
    assert_eq!(r.status, 200);
    let policy = r#"
        path "kube/pki/issue/kubelet" { capabilities = ["update"] }
        path "kube/pki/roles/*" { capabilities = ["deny"] }
    "#;
    assert_eq!(
        app.call(
            "PUT",
            "/v1/sys/policies/acl/worker",
            t,
            Some(json!({"policy": policy}))
        )
        .await
        .status,
        204
    );
    (app, root)
}

async fn token(app: &TestApp, caller: &str, body: Value) -> (String, Value) {
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(caller),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{body}: {:?}", r.body);
    let auth = r.body["auth"].clone();
    for k in [
        "client_token",
        "accessor",
        "policies",
        "token_policies",
        "lease_duration",
        "renewable",
        "entity_id",
        "token_type",
        "orphan",
    ] {
        assert!(auth.get(k).is_some(), "auth block lacks {k}");
    }
    assert!(r.body["data"].is_null());
    (auth["client_token"].as_str().unwrap().to_string(), auth)
}

#[tokio::test]
async fn policies_crud_and_errors() {
    let (app, root) = setup().await;
    let t = Some(root.as_str());
    let r = app
        .call("GET", "/v1/sys/policies/acl/worker", t, None)
        .await;
    assert!(
        r.body["data"]["policy"]
            .as_str()
            .unwrap()
            .contains("kube/pki/issue/kubelet")
    );
    let l = app.call("LIST", "/v1/sys/policies/acl", t, None).await;
    assert_eq!(l.body["data"]["keys"], json!(["default", "root", "worker"]));
    let legacy = app.call("GET", "/v1/sys/policy", t, None).await;
    assert_eq!(
        legacy.body["policies"],
        json!(["default", "root", "worker"]),
        "top-level copy"
    );
    let bad = app
        .call(
            "PUT",
            "/v1/sys/policies/acl/x",
            t,
            Some(json!({"policy": "path \"a\" { capabilities = [\"fly\"] }"})),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("failed to parse policy")
    );
    assert_eq!(
        app.call("GET", "/v1/sys/policies/acl/x", t, None)
            .await
            .status,
        404,
        "nothing written"
    );
    assert_eq!(
        app.call(
            "PUT",
            "/v1/sys/policies/acl/root",
            t,
            Some(json!({"policy": "path \"a\" {}"}))
        )
        .await
        .status,
        400
    );
    assert_eq!(
        app.call("DELETE", "/v1/sys/policies/acl/default", t, None)
            .await
            .status,
        400
    );
    assert_eq!(
        app.call("PUT", "/v1/sys/policies/acl/empty", t, Some(json!({})))
            .await
            .status,
        400
    );
    let r = app
        .call(
            "PUT",
            "/v1/sys/policy/Legacy",
            t,
            Some(json!({"rules": "path \"a/*\" { policy = \"read\" }"})),
        )
        .await;
    assert_eq!(r.status, 200, "warnings come back with a 200");
    assert_eq!(
        app.call("GET", "/v1/sys/policy/legacy", t, None).await.body["data"]["name"],
        "legacy"
    );
    assert_eq!(
        app.call("DELETE", "/v1/sys/policy/legacy", t, None)
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn acl_gates_every_request_and_templates_pin_the_node_name() {
    let (app, root) = setup().await;
    let (worker, auth) = token(
        &app,
        &root,
        json!({"policies": ["worker"], "meta": {"node_name": "worker-1"}, "ttl": "1h"}),
    )
    .await;
    assert_eq!(auth["policies"], json!(["default", "worker"]));
    assert_eq!(auth["metadata"]["node_name"], "worker-1");
    let w = Some(worker.as_str());
    // Its own kubelet certificate: allowed.
    let r = app
        .call(
            "POST",
            &format!("{M}/issue/kubelet"),
            w,
            Some(json!({"common_name": "system:node:worker-1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Another node's name, the apiserver role, roles, mounts, policies: refused.
    let r = app
        .call(
            "POST",
            &format!("{M}/issue/kubelet"),
            w,
            Some(json!({"common_name": "system:node:worker-2"})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["errors"][0].as_str()),
        (
            400,
            Some("common name system:node:worker-2 not allowed by this role")
        )
    );
    for (m, p, b) in [
        (
            "POST",
            format!("{M}/issue/apiserver"),
            Some(json!({"common_name": "kube-apiserver"})),
        ),
        (
            "POST",
            format!("{M}/roles/kubelet"),
            Some(json!({"allow_any_name": true})),
        ),
        ("GET", format!("{M}/roles/kubelet"), None),
        ("GET", "/v1/sys/mounts".to_string(), None),
        (
            "PUT",
            "/v1/sys/policies/acl/worker".to_string(),
            Some(json!({"policy": "path \"*\" { capabilities = [\"sudo\"] }"})),
        ),
        ("PUT", "/v1/sys/seal".to_string(), None),
        ("PUT", "/v1/sys/rotate".to_string(), None),
    ] {
        let r = app.call(m, &p, w, b).await;
        assert_eq!(r.status, 403, "{m} {p}");
        assert_eq!(r.body["errors"], json!(["permission denied"]));
    }
    assert!(app.state.seal.barrier().is_some(), "nothing was sealed");
    // The default policy: lookup-self and capabilities-self.
    let me = app.call("GET", "/v1/auth/token/lookup-self", w, None).await;
    assert_eq!(me.status, 200);
    for k in [
        "accessor",
        "creation_time",
        "creation_ttl",
        "display_name",
        "entity_id",
        "explicit_max_ttl",
        "id",
        "num_uses",
        "orphan",
        "path",
        "policies",
        "ttl",
    ] {
        assert!(me.body["data"].get(k).is_some(), "lookup lacks {k}");
    }
    assert_eq!(me.body["data"]["meta"]["node_name"], "worker-1");
    let caps = app
        .call(
            "POST",
            "/v1/sys/capabilities-self",
            w,
            Some(json!({"paths": ["kube/pki/issue/kubelet", "kube/pki/roles/x", "sys/mounts"]})),
        )
        .await;
    assert_eq!(
        caps.body["data"]["kube/pki/issue/kubelet"],
        json!(["update"])
    );
    assert_eq!(caps.body["data"]["kube/pki/roles/x"], json!(["deny"]));
    assert_eq!(caps.body["data"]["sys/mounts"], json!(["deny"]));

    // The worker policy has no rule for auth/token/create: it cannot mint tokens at all.
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create",
            w,
            Some(json!({"policies": ["worker"], "meta": {"node_name": "worker-2"}})),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
}

#[tokio::test]
async fn child_tokens_uses_revocation_and_roles() {
    let (app, root) = setup().await;
    let rt = Some(root.as_str());
    let creator_policy = r#"
        path "auth/token/create" { capabilities = ["update"] }
        path "kube/pki/issue/kubelet" { capabilities = ["update"] }
    "#;
    app.call(
        "PUT",
        "/v1/sys/policies/acl/creator",
        rt,
        Some(json!({"policy": creator_policy})),
    )
    .await;
    let (parent, _) = token(
        &app,
        &root,
        json!({"policies": ["creator"], "meta": {"node_name": "n1"}}),
    )
    .await;
    // A child with a policy the parent lacks: refused.
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&parent),
            Some(json!({"policies": ["worker"]})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["errors"][0].as_str()),
        (400, Some("child policies must be subset of parent"))
    );
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&parent),
            Some(json!({"policies": ["creator"], "meta": {"node_name": "n2"}})),
        )
        .await;
    assert_eq!(r.status, 400, "metadata needs root or sudo");
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&parent),
            Some(json!({"no_parent": true})),
        )
        .await;
    assert_eq!(r.status, 400, "orphans need root or sudo");
    let (child, cauth) = token(&app, &parent, json!({"num_uses": 2})).await;
    assert_eq!(cauth["metadata"]["node_name"], "n1", "inherited");
    assert_eq!(cauth["policies"], json!(["creator", "default"]));
    // num_uses: two uses, then the token is gone.
    for _ in 0..2 {
        assert_eq!(
            app.call("GET", "/v1/auth/token/lookup-self", Some(&child), None)
                .await
                .status,
            200
        );
    }
    let r = app
        .call("GET", "/v1/auth/token/lookup-self", Some(&child), None)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["errors"].clone()),
        (403, json!(["permission denied", "invalid token"]))
    );
    // Revoking the parent revokes its children.
    let (child2, _) = token(&app, &parent, json!({})).await;
    assert_eq!(
        app.call(
            "POST",
            "/v1/auth/token/revoke",
            rt,
            Some(json!({"token": parent}))
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.call("GET", "/v1/auth/token/lookup-self", Some(&child2), None)
            .await
            .status,
        403
    );
    assert_eq!(
        app.call("GET", "/v1/auth/token/lookup-self", Some(&parent), None)
            .await
            .status,
        403
    );
    // lookup of a bad token: 403 bad token.
    let r = app
        .call(
            "POST",
            "/v1/auth/token/lookup",
            rt,
            Some(json!({"token": "hvs.nope"})),
        )
        .await;
    assert_eq!(r.status, 403);

    // Token roles bound the policies a role's tokens may carry.
    let r = app
        .call(
            "POST",
            "/v1/auth/token/roles/nodes",
            rt,
            Some(json!({"allowed_policies": ["worker"], "orphan": true, "token_period": "24h"})),
        )
        .await;
    assert_eq!(r.status, 204);
    let role = app
        .call("GET", "/v1/auth/token/roles/nodes", rt, None)
        .await;
    for k in [
        "allowed_policies",
        "disallowed_policies",
        "explicit_max_ttl",
        "name",
        "orphan",
        "path_suffix",
        "period",
        "renewable",
        "token_explicit_max_ttl",
        "token_period",
        "token_type",
    ] {
        assert!(role.body["data"].get(k).is_some(), "token role lacks {k}");
    }
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create/nodes",
            rt,
            Some(json!({"policies": ["creator"]})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["errors"][0]
            .as_str()
            .unwrap()
            .contains("must be subset of the role's allowed policies")
    );
    let r = app
        .call(
            "POST",
            "/v1/auth/token/create/nodes",
            rt,
            Some(json!({"meta": {"node_name": "w9"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (
            r.body["auth"]["orphan"].as_bool(),
            r.body["auth"]["policies"].clone()
        ),
        (Some(true), json!(["default", "worker"]))
    );
    let nt = r.body["auth"]["client_token"].as_str().unwrap().to_string();
    let acc = r.body["auth"]["accessor"].as_str().unwrap().to_string();
    let look = app
        .call(
            "POST",
            "/v1/auth/token/lookup-accessor",
            rt,
            Some(json!({"accessor": acc})),
        )
        .await;
    assert_eq!(
        (
            look.body["data"]["id"].as_str(),
            look.body["data"]["period"].as_u64()
        ),
        (Some(""), Some(86_400))
    );
    // renew-self comes with the default policy; a periodic token renews to its period.
    let renewed = app
        .call(
            "POST",
            "/v1/auth/token/renew-self",
            Some(&nt),
            Some(json!({"increment": "1h"})),
        )
        .await;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    assert_eq!(renewed.body["auth"]["lease_duration"], 86_400);
    // revoke-accessor, then the token is gone.
    assert_eq!(
        app.call(
            "POST",
            "/v1/auth/token/revoke-accessor",
            rt,
            Some(json!({"accessor": acc}))
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.call("GET", "/v1/auth/token/lookup-self", Some(&nt), None)
            .await
            .status,
        403
    );
}
