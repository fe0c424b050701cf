//! Concurrency and abuse regressions (issue #15): revocation beats racing
//! renewals on every revocation path, use counts are exact under load, and
//! concurrent writers of one token role never lose an update. In-process on
//! a multi-threaded runtime, so racing requests really overlap.

use crate::harness::TestApp;
use pki_server::storage::{self, Condition, Entry, MemoryStorage, Storage};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Memory storage with a network's latency on every call (as S3 has), so a
/// read and the write that follows it are far enough apart to be raced.
#[derive(Debug, Default)]
struct Slow(MemoryStorage);

async fn latency() {
    tokio::time::sleep(std::time::Duration::from_micros(300)).await;
}

#[async_trait::async_trait]
impl Storage for Slow {
    async fn get(&self, key: &str) -> storage::Result<Option<Entry>> {
        latency().await;
        self.0.get(key).await
    }
    async fn put(&self, key: &str, value: &[u8]) -> storage::Result<()> {
        latency().await;
        self.0.put(key, value).await
    }
    async fn put_if(&self, key: &str, value: &[u8], cond: Condition) -> storage::Result<bool> {
        latency().await;
        self.0.put_if(key, value, cond).await
    }
    async fn delete(&self, key: &str) -> storage::Result<()> {
        latency().await;
        self.0.delete(key).await
    }
    async fn list(&self, prefix: &str) -> storage::Result<Vec<String>> {
        latency().await;
        self.0.list(prefix).await
    }
    fn kind(&self) -> &'static str {
        "slow"
    }
}

async fn root_app() -> (Arc<TestApp>, String) {
    let app = TestApp::with_storage(Arc::new(Slow::default()));
    let root = app.init_unsealed().await;
    (Arc::new(app), root)
}

async fn create(app: &TestApp, caller: &str, path: &str, body: Value) -> (String, String) {
    let r = app.call("POST", path, Some(caller), Some(body)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    (
        r.body["auth"]["client_token"].as_str().unwrap().to_string(),
        r.body["auth"]["accessor"].as_str().unwrap().to_string(),
    )
}

/// How a trial revokes the token under attack.
#[derive(Clone, Copy, Debug)]
enum Path {
    Accessor,
    Token,
    TokenSelf,
    Orphan,
    Parent,
}

/// Revocation racing 32 `renew-self` loops: afterwards the token is dead for
/// good (lookup-self 403, its accessor unknown), every time. Before the
/// compare-and-swap token store, renewals wrote the entry back after the
/// revoke had deleted it and the token lived on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_beats_racing_renewals_on_every_path() {
    const LOOPS: usize = 32;
    const TRIALS: usize = 40; // per path: 200 in all
    let (app, root) = root_app().await;
    let r = app
        .call(
            "PUT",
            "/v1/sys/policies/acl/creator",
            Some(&root),
            Some(json!({"policy": "path \"auth/token/create\" { capabilities = [\"update\"] }"})),
        )
        .await;
    assert_eq!(r.status, 204);
    let mut alive = Vec::new();
    for path in [
        Path::Accessor,
        Path::Token,
        Path::TokenSelf,
        Path::Orphan,
        Path::Parent,
    ] {
        for trial in 0..TRIALS {
            // The victim: periodic (renewable forever); under Parent, a child
            // of a token that is revoked instead.
            let (parent, _) = create(
                &app,
                &root,
                "/v1/auth/token/create",
                json!({"period": "1h", "policies": ["default", "creator"]}),
            )
            .await;
            let (tok, acc) = match path {
                Path::Parent => {
                    create(
                        &app,
                        &parent,
                        "/v1/auth/token/create",
                        json!({"ttl": "1h", "policies": ["default"]}),
                    )
                    .await
                }
                _ => {
                    create(
                        &app,
                        &root,
                        "/v1/auth/token/create",
                        json!({"period": "1h", "policies": ["default"]}),
                    )
                    .await
                }
            };
            let stop = Arc::new(AtomicBool::new(false));
            let mut loops = Vec::new();
            for _ in 0..LOOPS {
                let (app, tok, stop) = (app.clone(), tok.clone(), stop.clone());
                loops.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        app.call(
                            "POST",
                            "/v1/auth/token/renew-self",
                            Some(&tok),
                            Some(json!({})),
                        )
                        .await;
                    }
                }));
            }
            tokio::task::yield_now().await;
            let (caller, p, body) = match path {
                Path::Accessor => (root.as_str(), "revoke-accessor", json!({"accessor": acc})),
                Path::Token => (root.as_str(), "revoke", json!({"token": tok})),
                Path::TokenSelf => (tok.as_str(), "revoke-self", json!({})),
                Path::Orphan => (root.as_str(), "revoke-orphan", json!({"token": tok})),
                Path::Parent => (root.as_str(), "revoke", json!({"token": parent})),
            };
            let r = app
                .call(
                    "POST",
                    &format!("/v1/auth/token/{p}"),
                    Some(caller),
                    Some(body),
                )
                .await;
            assert_eq!(r.status, 204, "{path:?}: {:?}", r.body);
            // Renewals go on a little after the revocation answered.
            for _ in 0..LOOPS {
                tokio::task::yield_now().await;
            }
            stop.store(true, Ordering::Relaxed);
            for l in loops {
                l.await.unwrap();
            }
            let me = app
                .call("GET", "/v1/auth/token/lookup-self", Some(&tok), None)
                .await;
            let by_acc = app
                .call(
                    "POST",
                    "/v1/auth/token/lookup-accessor",
                    Some(&root),
                    Some(json!({"accessor": acc})),
                )
                .await;
            if me.status != 403 || by_acc.status == 200 {
                alive.push(format!(
                    "{path:?} trial {trial}: lookup-self {} lookup-accessor {}",
                    me.status, by_acc.status
                ));
            }
        }
    }
    assert!(
        alive.is_empty(),
        "tokens alive after revocation: {alive:#?}"
    );
}

/// A token with `num_uses = N` under 64 concurrent requests succeeds exactly
/// N times (before: 8 of 16, or all 16, for N = 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn use_counts_are_exact_under_concurrency() {
    let (app, root) = root_app().await;
    for n in [1u32, 3, 10] {
        let (tok, _) = create(
            &app,
            &root,
            "/v1/auth/token/create",
            json!({"num_uses": n, "policies": ["default"]}),
        )
        .await;
        let mut calls = Vec::new();
        for _ in 0..64 {
            let (app, tok) = (app.clone(), tok.clone());
            calls.push(tokio::spawn(async move {
                app.call("GET", "/v1/auth/token/lookup-self", Some(&tok), None)
                    .await
                    .status
            }));
        }
        let mut ok = 0;
        for c in calls {
            match c.await.unwrap().as_u16() {
                200 => ok += 1,
                403 => {}
                s => panic!("unexpected status {s}"),
            }
        }
        assert_eq!(
            ok, n,
            "num_uses={n}: {ok} of 64 concurrent requests succeeded"
        );
    }
}

/// Ten writers each set one field of the same token role at once: every
/// field lands (a write changes only the fields it names, by compare-and-swap).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_token_role_writes_never_lose_an_update() {
    let (app, root) = root_app().await;
    let fields = [
        ("allowed_policies", json!(["p1"]), json!(["p1"])),
        ("disallowed_policies", json!(["p2"]), json!(["p2"])),
        ("orphan", json!(true), json!(true)),
        ("renewable", json!(false), json!(false)),
        ("path_suffix", json!("sfx"), json!("sfx")),
        ("token_ttl", json!("1h"), json!(3600)),
        ("token_max_ttl", json!("2h"), json!(7200)),
        ("token_explicit_max_ttl", json!("3h"), json!(10800)),
        ("token_period", json!("4h"), json!(14400)),
        ("token_num_uses", json!(7), json!(7)),
    ];
    for round in 0..10 {
        let role = format!("/v1/auth/token/roles/r{round}");
        let mut writers = Vec::new();
        for (k, v, _) in fields.clone() {
            let (app, root, role) = (app.clone(), root.clone(), role.clone());
            writers.push(tokio::spawn(async move {
                app.call("POST", &role, Some(&root), Some(json!({ k: v })))
                    .await
                    .status
            }));
        }
        for w in writers {
            assert_eq!(w.await.unwrap(), 204);
        }
        let r = app.call("GET", &role, Some(&root), None).await;
        for (k, _, want) in &fields {
            assert_eq!(
                &r.body["data"][*k], want,
                "round {round}: {k} lost: {:?}",
                r.body
            );
        }
    }
}
