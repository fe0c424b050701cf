//! The ACL language against OpenBao: the same policies (Vault's documented
//! forms: globs, `+`, deny wins, most specific wins, the legacy shorthand)
//! give the same `sys/capabilities-self` answers on pki-server and OpenBao.

use crate::harness::{Bao, TestApp};
use serde_json::{Value, json};

const POLICIES: &[(&str, &str)] = &[
    (
        "globs",
        r#"
        path "secret/*" { capabilities = ["read", "list"] }
        path "secret/super-secret" { capabilities = ["deny"] }
        path "pki/issue/*" { capabilities = ["update"] }
        path "pki*" { capabilities = ["read"] }
    "#,
    ),
    (
        "plus",
        r#"
        path "kube/+/pki/issue/worker" { capabilities = ["update"] }
        path "kube/+/pki/*" { capabilities = ["read"] }
        path "a/+/c/*" { capabilities = ["create", "update"] }
    "#,
    ),
    (
        "legacy",
        r#"
        path "old/read/*" { policy = "read" }
        path "old/write/*" { policy = "write" }
        path "old/sudo/*" { policy = "sudo" }
        path "old/deny/*" { policy = "deny" }
    "#,
    ),
    (
        "overlap",
        r#"
        path "secret/*" { capabilities = ["create"] }
        path "pki/issue/admin" { capabilities = ["deny"] }
    "#,
    ),
];

const PATHS: &[&str] = &[
    "secret/foo",
    "secret/super-secret",
    "secret/",
    "pki/issue/worker",
    "pki/issue/admin",
    "pki/ca",
    "pki-int/ca",
    "kube/prod/pki/issue/worker",
    "kube/prod/pki/issue/admin",
    "kube/prod/pki/ca",
    "kube/prod/x/pki/ca",
    "a/b/c/d",
    "a/b/x/d",
    "old/read/x",
    "old/write/x",
    "old/sudo/x",
    "old/deny/x",
    "nothing/here",
    "sys/capabilities-self",
    "auth/token/lookup-self",
];

async fn bao_call(
    http: &reqwest::Client,
    addr: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let r = http
        .request(method, format!("{addr}/v1/{path}"))
        .header("X-Vault-Token", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(s.is_success(), "bao {path}: {s} {v}");
    v
}

fn sorted(v: &Value) -> Vec<String> {
    let mut c: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    c.sort();
    c
}

#[tokio::test]
async fn capabilities_self_agrees_with_openbao() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    let http = reqwest::Client::new();
    let app = TestApp::new();
    let root = app.init_unsealed().await;
    for (name, text) in POLICIES {
        assert_eq!(
            app.call(
                "PUT",
                &format!("/v1/sys/policies/acl/{name}"),
                Some(&root),
                Some(json!({"policy": text}))
            )
            .await
            .status,
            204
        );
        bao_call(
            &http,
            &bao.addr,
            "root",
            reqwest::Method::PUT,
            &format!("sys/policies/acl/{name}"),
            json!({"policy": text}),
        )
        .await;
    }
    // Each policy alone, and all together (merging across policies).
    let mut sets: Vec<Vec<&str>> = POLICIES.iter().map(|(n, _)| vec![*n]).collect();
    sets.push(POLICIES.iter().map(|(n, _)| *n).collect());
    let mut compared = 0;
    for set in sets {
        let ours = app
            .call(
                "POST",
                "/v1/auth/token/create",
                Some(&root),
                Some(json!({"policies": set})),
            )
            .await;
        let our_tok = ours.body["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_string();
        let theirs = bao_call(
            &http,
            &bao.addr,
            "root",
            reqwest::Method::POST,
            "auth/token/create",
            json!({"policies": set}),
        )
        .await;
        let bao_tok = theirs["auth"]["client_token"].as_str().unwrap().to_string();
        let mine = app
            .call(
                "POST",
                "/v1/sys/capabilities-self",
                Some(&our_tok),
                Some(json!({"paths": PATHS})),
            )
            .await;
        assert_eq!(mine.status, 200, "{:?}", mine.body);
        let other = bao_call(
            &http,
            &bao.addr,
            &bao_tok,
            reqwest::Method::POST,
            "sys/capabilities-self",
            json!({"paths": PATHS}),
        )
        .await;
        for p in PATHS {
            assert_eq!(
                sorted(&mine.body["data"][*p]),
                sorted(&other["data"][*p]),
                "policies {set:?}, path {p}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, PATHS.len() * (POLICIES.len() + 1));
}
