//! Test support: OpenBao (`bao server -dev`, from the test venv that
//! `tests/harness.sh setup` makes) on a loopback port, killed on drop.
//! Included with `#[path]` by the test crates that need it (pki-server's
//! `tests/it/harness.rs`, node-client's `tests/openbao.rs`).
//! Tools missing: skip locally, panic under CI=true.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// The includer declares `mod venv` (tests/support/venv.rs) beside this module.
#[allow(unused_imports)]
pub use super::venv::{free_port, required, venv, venv_tool};

/// `bao server -dev` (OpenBao) on a loopback port with root token `root`,
/// killed on drop. None: skipped outside CI when bao is missing.
pub struct Bao {
    child: Child,
    /// `http://127.0.0.1:PORT`, or the TLS listener's `https://` address.
    pub addr: String,
    /// The CA of the TLS listener (`start_tls` only).
    pub ca: Option<PathBuf>,
    _home: tempfile::TempDir,
}

impl Bao {
    /// Dev mode only: plain http.
    pub async fn start() -> Option<Self> {
        let port = free_port();
        Self::spawn(&[], format!("http://127.0.0.1:{port}"), port, None).await
    }

    /// Dev mode plus a TLS listener on 127.0.0.1 (`addr` is https), its
    /// certificate made by pki-server's listener TLS code in `dir` (CA in
    /// `dir/ca.pem`). The plain dev listener stays, unused.
    pub async fn start_tls(dir: &Path) -> Option<Self> {
        let port = free_port();
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        std::fs::create_dir_all(dir).unwrap();
        pki_server::tls::ensure_dir(dir, listen, &[]).unwrap();
        let config = dir.join("listener.hcl");
        std::fs::write(
            &config,
            format!(
                "listener \"tcp\" {{\n  address = \"{listen}\"\n  \
                 tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n}}\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            ),
        )
        .unwrap();
        Self::spawn(
            &[format!("-config={}", config.display())],
            format!("https://127.0.0.1:{port}"),
            free_port(),
            Some(dir.join(pki_server::tls::CA_FILE)),
        )
        .await
    }

    async fn spawn(
        extra: &[String],
        addr: String,
        dev_port: u16,
        ca: Option<PathBuf>,
    ) -> Option<Self> {
        let bao = venv_tool("bao")?;
        let home = tempfile::tempdir().unwrap();
        let mut b = Bao {
            child: Command::new(bao)
                .args([
                    "server".to_string(),
                    "-dev".to_string(),
                    "-dev-root-token-id=root".to_string(),
                    format!("-dev-listen-address=127.0.0.1:{dev_port}"),
                ])
                .args(extra)
                .env("HOME", home.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            addr,
            ca,
            _home: home,
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = b.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/v1/sys/health", b.addr)).send().await
                && r.status() == 200
            {
                return Some(b);
            }
            assert!(Instant::now() < deadline, "bao did not come up");
            assert!(b.child.try_wait().unwrap().is_none(), "bao exited");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client for `addr` (trusting only the listener CA when there is one).
    pub fn client(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder();
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).unwrap();
            b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
        }
        b.build().unwrap()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
