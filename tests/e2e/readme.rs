//! Mirrors the README's "Walk-through" section: a server with file storage and
//! its own listener CA, initialised, unsealed with three of five shares,
//! rotated, sealed — over real TLS on a loopback port.

use pki_server::cli::ServerArgs;
use pki_server::config::ServerConfig;
use serde_json::{Value, json};

struct Server {
    addr: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(dir: &std::path::Path) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let args = ServerArgs {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            storage: Some(format!("file:{}", dir.join("data").display())),
            tls_dir: Some(dir.join("tls")),
            ..Default::default()
        };
        let cfg = ServerConfig::from_args(&args, None).unwrap();
        let tls = pki_server::server::tls_config(&cfg).unwrap();
        let state = pki_server::server::build_state(&cfg).await.unwrap();
        let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            pki_server::server::serve(listener, tls, pki_server::router(state), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let ca = std::fs::read(dir.join("tls/ca.pem")).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
            .build()
            .unwrap();
        // The certificate names localhost and 127.0.0.1: both verify.
        Self {
            addr: format!("https://localhost:{port}"),
            client,
            stop: Some(tx),
            task,
        }
    }

    async fn call(
        &self,
        m: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.client.request(m, format!("{}/v1/{path}", self.addr));
        if let Some(t) = token {
            r = r.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let s = resp.status().as_u16();
        (
            s,
            serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

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
