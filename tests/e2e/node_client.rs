//! node-client's Vault client against a live pki-server over TLS: it waits out
//! a server that starts late and one that is sealed, signs a CSR whose key
//! never leaves the node, and treats a refusal as final.

use crate::harness::Server;
use node_client::client::{Client, ClientError, csr};
use serde_json::json;
use std::time::Duration;
use zeroize::Zeroizing;

async fn pki(srv: &Server, token: &str) {
    use reqwest::Method;
    let t = Some(token);
    srv.call(
        Method::POST,
        "sys/mounts/etcd",
        t,
        Some(json!({"type": "pki", "config": {"max_lease_ttl": "8760h"}})),
    )
    .await;
    srv.call(
        Method::POST,
        "etcd/root/generate/internal",
        t,
        Some(json!({"common_name": "etcd-ca", "key_type": "ec"})),
    )
    .await;
    let (s, _) = srv.call(Method::POST, "etcd/roles/member", t, Some(json!({"allowed_domains": "etcd.local", "allow_subdomains": true, "key_type": "ec"}))).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn client_waits_for_a_late_and_a_sealed_server_then_signs() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // First run: initialise, keep two shares, configure, then stop the server.
    let srv = Server::start_on(dir.path(), port).await;
    let (_, init) = srv
        .call(
            reqwest::Method::PUT,
            "sys/init",
            None,
            Some(json!({"secret_shares": 3, "secret_threshold": 2})),
        )
        .await;
    let token = init["root_token"].as_str().unwrap().to_string();
    let keys: Vec<String> = init["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for k in &keys[..2] {
        srv.call(
            reqwest::Method::PUT,
            "sys/unseal",
            None,
            Some(json!({"key": k})),
        )
        .await;
    }
    pki(&srv, &token).await;
    srv.stop().await;
    let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();

    // The server is down; it comes back 2 s later, sealed, and is unsealed 2 s after that.
    let mut client = Client::new(
        &format!("https://127.0.0.1:{port}"),
        Some(&ca),
        Zeroizing::new(token.clone()),
    )
    .unwrap();
    client.deadline = Duration::from_secs(30);
    let dir2 = dir.path().to_path_buf();
    let keys2 = keys.clone();
    let operator = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let srv = Server::start_on(&dir2, port).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for k in &keys2[..2] {
            srv.call(
                reqwest::Method::PUT,
                "sys/unseal",
                None,
                Some(json!({"key": k})),
            )
            .await;
        }
        srv
    });
    let (csr_pem, key) = csr(
        "etcd-0.etcd.local",
        &["etcd-0.etcd.local".into()],
        &["127.0.0.1".parse().unwrap()],
    )
    .unwrap();
    let started = std::time::Instant::now();
    let issued = client
        .sign(
            "etcd",
            "member",
            &csr_pem,
            &json!({"common_name": "etcd-0.etcd.local", "ttl": "1h"}),
        )
        .await
        .expect("signed once the server is back and unsealed");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "it waited for the server"
    );
    assert!(issued.private_key.is_none(), "sign never returns a key");
    assert!(
        issued
            .certificate
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    // The certificate is for our key.
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(issued.certificate.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
        .unwrap();
    let kp = rcgen::KeyPair::from_pem(&key).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
    assert!(
        der.windows(spki.len()).any(|w| w == &spki[..]),
        "certificate carries the node's public key"
    );

    // A refusal is final: no retries, the server's message.
    let (bad, _) = csr("evil.com", &["evil.com".into()], &[]).unwrap();
    let t0 = std::time::Instant::now();
    match client
        .sign("etcd", "member", &bad, &json!({"common_name": "evil.com"}))
        .await
    {
        Err(ClientError::Refused { status, message }) => {
            assert_eq!(status, 400);
            assert!(
                message.contains("common name evil.com not allowed by this role"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2));
    // renew-self on a non-expiring root token answers 0.
    assert_eq!(client.renew_self().await.unwrap(), 0);
    operator.await.unwrap().stop().await;
}
