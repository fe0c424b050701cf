//! Mirrors the README's "Walk-through" section: a server with file storage and
//! its own listener CA, initialised, unsealed with three of five shares,
//! rotated, sealed — over real TLS on a loopback port.

use crate::harness::Server;
use serde_json::json;

#[tokio::test]
async fn readme_walkthrough() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    assert_eq!(srv.call(Method::GET, "sys/health", None, None).await.0, 501);
    let (s, init) = srv
        .call(
            Method::PUT,
            "sys/init",
            None,
            Some(json!({"secret_shares": 5, "secret_threshold": 3})),
        )
        .await;
    assert_eq!(s, 200);
    let token = init["root_token"].as_str().unwrap().to_string();
    for k in &init["keys_base64"].as_array().unwrap()[..3] {
        srv.call(Method::PUT, "sys/unseal", None, Some(json!({"key": k})))
            .await;
    }
    let (s, health) = srv.call(Method::GET, "sys/health", None, None).await;
    assert_eq!((s, health["sealed"].as_bool()), (200, Some(false)));
    assert_eq!(
        srv.call(Method::PUT, "sys/rotate", Some(&token), None)
            .await
            .0,
        204
    );
    assert_eq!(
        srv.call(Method::GET, "sys/key-status", Some(&token), None)
            .await
            .1["data"]["term"],
        2
    );
    assert_eq!(
        srv.call(Method::PUT, "sys/seal", Some(&token), None)
            .await
            .0,
        204
    );
    assert_eq!(
        srv.call(Method::GET, "sys/seal-status", None, None).await.1["sealed"],
        true
    );
    srv.stop().await;

    // A restart over the same directory keeps the listener CA and the data.
    let ca_before = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
    let srv = Server::start(dir.path()).await;
    assert_eq!(
        std::fs::read(dir.path().join("tls/ca.pem")).unwrap(),
        ca_before
    );
    let st = srv.call(Method::GET, "sys/seal-status", None, None).await.1;
    assert_eq!(
        (st["initialized"].as_bool(), st["sealed"].as_bool()),
        (Some(true), Some(true))
    );
    srv.stop().await;
}
