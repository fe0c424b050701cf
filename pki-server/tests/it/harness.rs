//! Test harness: the app in-process, the real binary as a child process,
//! moto's server for S3/KMS and OpenBao (`tests/support/bao.rs`), started
//! here; under CI=true a missing moto or bao fails.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use pki_server::seal::Seal;
use pki_server::storage::{DynStorage, MemoryStorage};
use pki_server::{ApiSettings, AppState};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

#[path = "../../../tests/support/bao.rs"]
mod bao;
#[path = "../../../tests/support/venv.rs"]
mod venv;
pub use bao::{Bao, required, venv_tool};

/// The app over a storage, driven without sockets.
pub struct TestApp {
    pub state: AppState,
    pub router: axum::Router,
}

pub struct Resp {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl TestApp {
    pub fn new() -> Self {
        Self::with_storage(Arc::new(MemoryStorage::default()))
    }

    pub fn with_storage(storage: DynStorage) -> Self {
        let state = AppState::new(
            Arc::new(Seal::new(storage, None)),
            ApiSettings {
                max_request_bytes: 64 * 1024,
                ..Default::default()
            },
        );
        let router = pki_server::router(state.clone());
        Self { state, router }
    }

    pub async fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Vec<u8>) -> Resp {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path);
        if let Some(t) = token {
            b = b.header("X-Vault-Token", t);
        }
        let resp = self
            .router
            .clone()
            .oneshot(b.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let raw = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Resp {
            status,
            content_type,
            body,
            raw,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, path, token, bytes).await
    }

    /// Init with 5/3 and return (hex shares, base64 shares, root token).
    pub async fn init(&self) -> (Vec<String>, Vec<String>, String) {
        let r = self
            .call(
                "PUT",
                "/v1/sys/init",
                None,
                Some(serde_json::json!({"secret_shares": 5, "secret_threshold": 3})),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let strs = |k: &str| {
            r.body[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        (
            strs("keys"),
            strs("keys_base64"),
            r.body["root_token"].as_str().unwrap().to_string(),
        )
    }

    /// Init and unseal; returns the root token.
    pub async fn init_unsealed(&self) -> String {
        let (keys, _, token) = self.init().await;
        for k in &keys[..3] {
            self.call(
                "PUT",
                "/v1/sys/unseal",
                None,
                Some(serde_json::json!({"key": k})),
            )
            .await;
        }
        assert!(self.state.seal.barrier().is_some());
        token
    }
}

#[path = "../../../tests/support/aws.rs"]
pub mod aws;
use aws::wait_port;
pub use aws::{Moto, free_port};

impl Moto {
    /// SDK config pointing at this moto (set in code: no process env changes).
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        pki_server::aws::loader()
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let sdk = self.sdk().await;
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        )
    }
}

/// The real pki-server binary as a child process, SIGKILLed on drop.
pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
    pub tls_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ServerProcess {
    /// Start `pki-server server` on a free port with TLS in `tls_dir`.
    pub fn start(
        storage: &str,
        tls_dir: &Path,
        extra: &[&str],
        env: Vec<(String, String)>,
    ) -> Self {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "server".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--storage".into(),
            storage.into(),
            "--tls-dir".into(),
            tls_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = tls_dir.with_extension("log");
        let mut s = Self {
            child: spawn(&args, &env, &log),
            port,
            tls_dir: tls_dir.to_path_buf(),
            args,
            env,
        };
        wait_port(port, &mut s.child, "pki-server");
        s
    }

    /// SIGKILL, then start again with the same arguments.
    pub fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = spawn(&self.args, &self.env, &self.log());
        wait_port(self.port, &mut self.child, "pki-server");
    }

    /// The server's stderr (all runs appended).
    pub fn log(&self) -> PathBuf {
        self.tls_dir.with_extension("log")
    }

    pub fn addr(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn ca(&self) -> PathBuf {
        self.tls_dir.join("ca.pem")
    }

    /// An HTTPS client that trusts only the listener CA.
    pub fn client(&self) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pem = std::fs::read(self.ca()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .build()
            .unwrap()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.client().request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}/v1/{path}", self.addr()),
        );
        if let Some(t) = token {
            r = r.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Poll seal-status until `sealed == want` or time out.
    pub async fn wait_sealed(&self, want: bool, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (_, v) = self.call("GET", "sys/seal-status", None, None).await;
            if v["sealed"].as_bool() == Some(want) || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn spawn(args: &[String], env: &[(String, String)], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_pki-server"))
        .args(args)
        .envs(env.iter().cloned())
        .env("RUST_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn pki-server")
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run one of the differential scripts in tests/python against the pki-server
/// binary and OpenBao; returns its JSON report (None: skipped outside CI).
/// Panics with the script's stderr when any check failed.
pub fn run_compat_script(script: &str) -> Option<Value> {
    let (python, bao) = (venv_tool("python")?, venv_tool("bao")?);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/python")
        .join(script);
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(python)
        .arg(path)
        .args(["--pki-server", env!("CARGO_BIN_EXE_pki-server")])
        .arg("--bao")
        .arg(bao)
        .arg("--workdir")
        .arg(work.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stderr}");
    assert!(stderr.contains(" 0 failed"), "{stderr}");
    Some(serde_json::from_slice(&out.stdout).expect("a JSON report"))
}
