//! A small Vault API client for the `init`/`unseal`/`seal`/`status` subcommands.
//!
//! Configured like the vault CLI: VAULT_ADDR, VAULT_CACERT, VAULT_TOKEN. Over
//! https it trusts only the named CA; verification is never skipped.

use crate::cli::ClientArgs;
use anyhow::{Context, bail};
use serde_json::Value;
use zeroize::Zeroizing;

/// A configured client.
pub struct Client {
    http: reqwest::Client,
    addr: String,
    token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// An answer: status and parsed JSON body (Null when empty).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Value,
}

impl Answer {
    /// The body, or an error naming the server's messages.
    pub fn ok(self) -> anyhow::Result<Value> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        let msgs: Vec<String> = self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        bail!("server answered {}: {}", self.status, msgs.join("; "))
    }
}

impl Client {
    /// From flags/environment; the token from VAULT_TOKEN.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let addr = args.address.trim_end_matches('/').to_string();
        let mut b = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("pki-server/", env!("CARGO_PKG_VERSION")));
        if addr.starts_with("https://") {
            let path = args.ca_cert.as_ref().context(
                "an https address needs the server's CA: set VAULT_CACERT or pass --ca-cert \
                 (this client trusts only the CA you name and never skips verification)",
            )?;
            let pem =
                std::fs::read(path).with_context(|| format!("reading CA {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing CA {}", path.display()))?;
            b = b.tls_certs_only(certs);
        } else if !addr.starts_with("http://") {
            bail!("VAULT_ADDR must start with https:// or http://");
        }
        let token = std::env::var("VAULT_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Zeroizing::new);
        Ok(Self {
            http: b.build()?,
            addr,
            token,
        })
    }

    /// Use `token` instead of VAULT_TOKEN.
    pub fn with_token(mut self, token: Zeroizing<String>) -> Self {
        self.token = Some(token);
        self
    }

    /// Whether a token was configured (VAULT_TOKEN).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// GET `/v1/{path}` and return the status and the raw body (PEM endpoints).
    pub async fn get_raw(&self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut req = self.http.get(format!("{}/v1/{}", self.addr, path));
        if let Some(t) = &self.token {
            req = req.header("X-Vault-Token", t.as_str());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        let status = resp.status().as_u16();
        Ok((status, resp.bytes().await?.to_vec()))
    }

    /// Send a request to `/v1/{path}`.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{}", self.addr, path));
        if let Some(t) = &self.token {
            req = req.header("X-Vault-Token", t.as_str());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok(Answer { status, body })
    }
}
