//! A pki-server in-process on a real TLS listener (loopback, port chosen by the OS).

use pki_server::cli::ServerArgs;
use pki_server::config::ServerConfig;
use serde_json::Value;

pub struct Server {
    pub addr: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(dir: &std::path::Path) -> Self {
        Self::start_on(dir, 0).await
    }

    /// Start on a given loopback port (0: any).
    pub async fn start_on(dir: &std::path::Path, port: u16) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let args = ServerArgs {
            listen: Some(format!("127.0.0.1:{port}").parse().unwrap()),
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
            pki_server::server::serve(
                listener,
                tls,
                pki_server::router(state),
                Default::default(),
                async {
                    let _ = rx.await;
                },
            )
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

    pub async fn call(
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

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}
