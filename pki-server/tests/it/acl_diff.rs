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

/// Parameter constraints (`allowed_parameters`, `denied_parameters`,
/// `required_parameters`, Vault's documented forms) refuse exactly the
/// requests OpenBao refuses: for each body, both servers answer 403 or
/// neither does.
#[tokio::test]
async fn parameter_constraints_agree_with_openbao() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: String, token: String, body: Value| {
        let http = http.clone();
        let addr = bao.addr.clone();
        async move {
            let r = http
                .request(method, format!("{addr}/v1/{path}"))
                .header("X-Vault-Token", token)
                .json(&body)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    let app = TestApp::new();
    let root = app.init_unsealed().await;
    let policy = r#"
        path "pki/issue/r" {
          capabilities = ["update"]
          allowed_parameters = {
            "common_name" = ["a.example.com", "x-*"]
            "ttl" = []
            "alt_names" = []
          }
          denied_parameters = {
            "ttl" = ["720h"]
          }
        }
        path "pki/roles/r" {
          capabilities = ["update"]
          required_parameters = ["max_ttl"]
        }
        path "pki/roles/open" {
          capabilities = ["update"]
          denied_parameters = {
            "*" = []
          }
        }
    "#;
    let setup: Vec<(reqwest::Method, &str, Value)> = vec![
        (
            reqwest::Method::POST,
            "sys/mounts/pki",
            json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}),
        ),
        (
            reqwest::Method::POST,
            "pki/root/generate/internal",
            json!({"common_name": "ca", "key_type": "ec", "ttl": "8760h"}),
        ),
        (
            reqwest::Method::POST,
            "pki/roles/r",
            json!({"allowed_domains": "example.com", "allow_subdomains": true, "allow_any_name": true, "key_type": "ec"}),
        ),
        (
            reqwest::Method::PUT,
            "sys/policies/acl/params",
            json!({"policy": policy}),
        ),
    ];
    for (m, p, b) in setup {
        let r = app
            .call(
                m.as_str(),
                &format!("/v1/{p}"),
                Some(&root),
                Some(b.clone()),
            )
            .await;
        assert!(r.status.is_success(), "ours {p}: {:?}", r.body);
        let s = send(m, p.to_string(), "root".into(), b).await;
        assert!((200..300).contains(&s), "bao {p}: {s}");
    }
    let ours = app
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&root),
            Some(json!({"policies": ["params"]})),
        )
        .await;
    let our_tok = ours.body["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let theirs = http
        .post(format!("{}/v1/auth/token/create", bao.addr))
        .header("X-Vault-Token", "root")
        .json(&json!({"policies": ["params"]}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let bao_tok = theirs["auth"]["client_token"].as_str().unwrap().to_string();
    let cases: Vec<(&str, Value)> = vec![
        ("pki/issue/r", json!({"common_name": "a.example.com"})),
        ("pki/issue/r", json!({"common_name": "x-1.example.com"})),
        ("pki/issue/r", json!({"common_name": "b.example.com"})),
        (
            "pki/issue/r",
            json!({"common_name": "a.example.com", "ttl": "1h"}),
        ),
        (
            "pki/issue/r",
            json!({"common_name": "a.example.com", "ttl": "720h"}),
        ),
        (
            "pki/issue/r",
            json!({"common_name": "a.example.com", "not_after": "2030-01-01T00:00:00Z"}),
        ),
        (
            "pki/issue/r",
            json!({"common_name": "a.example.com", "alt_names": "x.example.com"}),
        ),
        ("pki/issue/r", json!({})),
        ("pki/roles/r", json!({"allowed_domains": "example.com"})),
        (
            "pki/roles/r",
            json!({"allowed_domains": "example.com", "max_ttl": "1h"}),
        ),
        ("pki/roles/open", json!({"allowed_domains": "example.com"})),
        ("pki/roles/open", json!({})),
    ];
    let (total, mut refused) = (cases.len(), 0);
    for (path, body) in cases {
        let mine = app
            .call(
                "POST",
                &format!("/v1/{path}"),
                Some(&our_tok),
                Some(body.clone()),
            )
            .await
            .status
            .as_u16();
        let other = send(
            reqwest::Method::POST,
            path.to_string(),
            bao_tok.clone(),
            body.clone(),
        )
        .await;
        assert_eq!(
            mine == 403,
            other == 403,
            "{path} {body}: pki-server {mine}, OpenBao {other}"
        );
        refused += usize::from(mine == 403);
    }
    // Both kinds of answer were exercised.
    assert!(
        refused >= 5 && refused < total,
        "{refused} of {total} refused"
    );
}
