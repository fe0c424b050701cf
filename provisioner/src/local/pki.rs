//! The local pki-server: started with file storage, initialised and
//! unsealed (the shares kept in DIR, 0600, with a warning), the profile
//! applied with the local JWT key.

use super::*;

pub(super) struct Api {
    http: reqwest::Client,
    addr: String,
}

impl Api {
    pub(super) fn new(addr: &str, ca: &Path) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            addr: addr.to_string(),
        })
    }

    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut r = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr));
        if let Some(t) = token {
            r = r.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }
}

/// pki-server with file storage under `dir/pki` (started if not running),
/// initialised and unsealed, the profile applied: its address and listener CA.
pub(super) async fn start_pki(
    dir: &Path,
    o: &LocalOptions,
    pki_server: &Path,
) -> anyhow::Result<(String, PathBuf)> {
    // --- pki-server ---
    let pki = dir.join("pki");
    mkdir_private(&pki)?;
    let addr_file = pki.join("addr");
    let addr = match (
        our_pid(&pki.join("pki-server.pid"), "pki-server"),
        std::fs::read_to_string(&addr_file),
    ) {
        (Some(pid), Ok(addr)) => {
            step(&format!(
                "pki-server already running (pid {pid}) at {}",
                addr.trim()
            ));
            addr.trim().to_string()
        }
        _ => {
            let port = free_port()?;
            let pid = spawn_detached(
                Command::new(pki_server)
                    .arg("server")
                    .args(["--listen", &format!("127.0.0.1:{port}")])
                    .arg("--storage")
                    .arg(format!("file:{}", pki.join("data").display()))
                    .arg("--tls-dir")
                    .arg(pki.join("tls"))
                    .env("RUST_LOG", "info"),
                &pki.join("server.log"),
                &pki.join("pki-server.pid"),
            )?;
            let addr = format!("https://127.0.0.1:{port}");
            write_private(&addr_file, addr.as_bytes())?;
            step(&format!("started pki-server (pid {pid}) at {addr}"));
            addr
        }
    };
    let ca = pki.join("tls/ca.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    let api = loop {
        if ca.exists()
            && let Ok(api) = Api::new(&addr, &ca)
            && api
                .call(reqwest::Method::GET, "sys/seal-status", None, None)
                .await
                .is_ok()
        {
            break api;
        }
        ensure!(
            Instant::now() < deadline,
            "pki-server did not answer within 30s; see {}",
            pki.join("server.log").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // --- init and unseal ---
    let keys_file = dir.join("unseal-keys.json");
    let (_, status) = api
        .call(reqwest::Method::GET, "sys/seal-status", None, None)
        .await?;
    if status["initialized"] == false {
        let (s, init) = api
            .call(
                reqwest::Method::PUT,
                "sys/init",
                None,
                Some(json!({"secret_shares": 5, "secret_threshold": 3})),
            )
            .await?;
        ensure!(s == 200, "sys/init answered {s}");
        let saved = json!({"keys": init["keys"], "root_token": init["root_token"]});
        write_private(&keys_file, serde_json::to_string_pretty(&saved)?.as_bytes())?;
        step("initialised pki-server: 5 unseal shares, threshold 3");
        eprintln!(
            "WARNING: the unseal shares and the root token are in {} (0600). This is for trying \
             it out on one machine; a real cluster keeps shares apart (docs/operations.md).",
            keys_file.display()
        );
    }
    let saved: Value = serde_json::from_slice(
        &std::fs::read(&keys_file).with_context(|| format!("reading {}", keys_file.display()))?,
    )?;
    let root = saved["root_token"]
        .as_str()
        .context("no root token saved")?
        .to_string();
    let (_, status) = api
        .call(reqwest::Method::GET, "sys/seal-status", None, None)
        .await?;
    if status["sealed"] == true {
        for k in saved["keys"].as_array().into_iter().flatten().take(3) {
            api.call(
                reqwest::Method::PUT,
                "sys/unseal",
                None,
                Some(json!({"key": k})),
            )
            .await?;
        }
        let (_, status) = api
            .call(reqwest::Method::GET, "sys/seal-status", None, None)
            .await?;
        ensure!(status["sealed"] == false, "pki-server is still sealed");
        step("unsealed pki-server");
    }

    // --- profile ---
    let policies = dir.join("policies");
    mkdir_private(&policies.join("acl"))?;
    write_private(&policies.join("profile.toml"), PROFILE.as_bytes())?;
    for (name, text) in ACL {
        write_private(&policies.join(format!("acl/{name}.hcl")), text.as_bytes())?;
    }
    // Makes the key (once) and DIR/jwt/signing.pub, which auth/jwt trusts.
    JwtSigner::load_or_create(&dir.join("jwt"))?;
    let out = Command::new(pki_server)
        .arg("apply-profile")
        .arg("--dir")
        .arg(&policies)
        .args(["--cluster", &o.cluster])
        .arg("--jwt-pubkey")
        .arg(dir.join("jwt/signing.pub"))
        .args(["--var", &format!("jwt_issuer={JWT_ISSUER}")])
        .args([
            "--var",
            &format!("jwt_audience={}", jwt_audience(&o.cluster)),
        ])
        .env("VAULT_ADDR", &addr)
        .env("VAULT_CACERT", &ca)
        .env("VAULT_TOKEN", &root)
        .output()?;
    ensure!(
        out.status.success(),
        "apply-profile failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    step("applied the profile (policies/profile.toml), auth/jwt keyed to DIR/jwt/signing.pub");
    Ok((addr, ca))
}
