//! The few Vault API calls node-client makes, with its own request and response
//! types (it must work against Vault and OpenBao too, so it depends on the wire
//! format, not on pki-server's code).
//!
//! Availability: an unreachable server, a sealed one (503) or any 5xx is
//! retried with capped exponential backoff and full jitter until the deadline,
//! logging what it waits for; a 4xx is final and carries the server's message.
//! TLS trusts only the CA it is given; verification is never skipped.

use crate::schedule::backoff_ms;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused (4xx): final.
    #[error("server refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's `errors`, joined.
        message: String,
    },
    /// The server stayed unavailable until the deadline.
    #[error("gave up after {waited:?}: {last}")]
    Unavailable {
        /// How long we tried.
        waited: Duration,
        /// The last failure.
        last: String,
    },
    /// Local configuration (CA file, address).
    #[error("{0}")]
    Config(String),
    /// An answer larger than the caller accepts.
    #[error("the answer to {path} is larger than {limit} bytes")]
    TooLarge {
        /// The path asked.
        path: String,
        /// The limit.
        limit: usize,
    },
}

/// A certificate as `issue` / `sign` return it.
#[derive(Clone, Deserialize)]
pub struct Issued {
    /// PEM certificate.
    pub certificate: String,
    /// PEM issuing CA.
    pub issuing_ca: String,
    /// The chain above the certificate.
    #[serde(default)]
    pub ca_chain: Vec<String>,
    /// Colon-hex serial.
    pub serial_number: String,
    /// notAfter, Unix seconds.
    pub expiration: i64,
    /// The key (`issue` only).
    #[serde(default)]
    pub private_key: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("serial_number", &self.serial_number)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// Whether `addr` is an `http://` URL whose host is a loopback address: an IP
/// in 127.0.0.0/8, `::1`, or exactly `localhost`. Decided on the parsed URL,
/// so `http://localhost.evil/` or `http://127.0.0.1@evil/` is not loopback.
fn is_loopback_http(addr: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(addr) else {
        return false;
    };
    if url.scheme() != "http" {
        return false;
    }
    // The parser has already normalised the host: IPv4 in dotted form,
    // IPv6 in brackets, names in lower case.
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost",
    }
}

/// A configured client.
pub struct Client {
    http: reqwest::Client,
    addr: String,
    token: Zeroizing<String>,
    /// How long to keep retrying an unavailable server.
    pub deadline: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `addr` trusting only `ca_pem` (https), with `token`.
    pub fn new(
        addr: &str,
        ca_pem: Option<&[u8]>,
        token: Zeroizing<String>,
    ) -> Result<Self, ClientError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let addr = addr.trim_end_matches('/').to_string();
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("node-client/", env!("CARGO_PKG_VERSION")));
        if addr.starts_with("https://") {
            let pem = ca_pem.ok_or_else(|| {
                ClientError::Config(
                    "an https address needs the server's CA (VAULT_CACERT or --ca-cert)".into(),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Config(format!("bad CA bundle: {e}")))?;
            b = b.tls_certs_only(certs);
        } else if !is_loopback_http(&addr) {
            return Err(ClientError::Config(
                "plain http is only for a loopback address (127.0.0.0/8, ::1, localhost)".into(),
            ));
        }
        let http = b.build().map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Self {
            http,
            addr,
            token,
            deadline: Duration::from_secs(300),
        })
    }

    /// `method /v1/path` with retries; the `data` (or `auth`) of the answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}/v1/{path}", self.addr))
                .header("X-Vault-Request", "true");
            // A login has no token yet.
            if !self.token.is_empty() {
                req = req.header("X-Vault-Token", self.token.as_str());
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let last = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    if (200..300).contains(&status) {
                        return Ok(v);
                    }
                    let message = errors(&v);
                    if (400..500).contains(&status) && status != 429 {
                        return Err(ClientError::Refused { status, message });
                    }
                    format!("server answered {status}: {message}")
                }
                Err(e) => format!("cannot reach {}: {e}", self.addr),
            };
            retry_wait(start, attempt, self.deadline, last).await?;
            attempt = attempt.saturating_add(1);
        }
    }

    /// `GET /v1/<path>` without a token (the PKI `ca` and `crl` paths need
    /// none): the raw body of a 2xx answer, at most `limit` bytes. Retried
    /// like [`Client::call`], until `deadline`.
    pub async fn read_raw(
        &self,
        path: &str,
        limit: usize,
        deadline: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            let req = self
                .http
                .get(format!("{}/v1/{path}", self.addr))
                .header("X-Vault-Request", "true");
            let last = match req.send().await {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    if (200..300).contains(&status) {
                        let mut body = Vec::new();
                        let read = loop {
                            match resp.chunk().await {
                                Ok(Some(c)) if body.len() + c.len() > limit => {
                                    return Err(ClientError::TooLarge {
                                        path: path.to_string(),
                                        limit,
                                    });
                                }
                                Ok(Some(c)) => body.extend_from_slice(&c),
                                Ok(None) => break Ok(body),
                                Err(e) => break Err(e),
                            }
                        };
                        match read {
                            Ok(body) => return Ok(body),
                            Err(e) => format!("reading the answer from {}: {e}", self.addr),
                        }
                    } else if (400..500).contains(&status) && status != 429 {
                        let v: Value = resp.json().await.unwrap_or(Value::Null);
                        return Err(ClientError::Refused {
                            status,
                            message: errors(&v),
                        });
                    } else {
                        format!("server answered {status}")
                    }
                }
                Err(e) => format!("cannot reach {}: {e}", self.addr),
            };
            retry_wait(start, attempt, deadline, last).await?;
            attempt = attempt.saturating_add(1);
        }
    }

    /// `POST <mount>/sign/<role>` with a CSR and the other request
    /// parameters (`common_name`, `alt_names`, `ip_sans`, `ttl`, ...).
    pub async fn sign(
        &self,
        mount: &str,
        role: &str,
        csr_pem: &str,
        params: &Value,
    ) -> Result<Issued, ClientError> {
        let mut body = match params {
            Value::Object(_) => params.clone(),
            _ => json!({}),
        };
        body["csr"] = json!(csr_pem);
        self.issued(&format!("{mount}/sign/{role}"), &body).await
    }

    /// `LIST <path>`: the `keys` (empty when the server has none: 404).
    pub async fn list(&self, path: &str) -> Result<Vec<String>, ClientError> {
        let list =
            reqwest::Method::from_bytes(b"LIST").map_err(|e| ClientError::Config(e.to_string()))?;
        match self.call(list, path, None).await {
            Ok(v) => Ok(v["data"]["keys"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()),
            Err(ClientError::Refused { status: 404, .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// `GET <path>`: the whole answer.
    pub async fn read(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Use another token from now on (after a login or a token-file change).
    pub fn set_token(&mut self, token: Zeroizing<String>) {
        self.token = token;
    }

    /// `POST <mount>/issue/<role>` (the server makes the key).
    pub async fn issue(
        &self,
        mount: &str,
        role: &str,
        body: &Value,
    ) -> Result<Issued, ClientError> {
        self.issued(&format!("{mount}/issue/{role}"), body).await
    }

    async fn issued(&self, path: &str, body: &Value) -> Result<Issued, ClientError> {
        let v = self.call(reqwest::Method::POST, path, Some(body)).await?;
        serde_json::from_value(v["data"].clone())
            .map_err(|e| ClientError::Config(format!("unexpected answer from {path}: {e}")))
    }

    /// `POST auth/<mount>/login` (no token sent); the whole answer (`auth`).
    pub async fn login(&self, mount: &str, body: &Value) -> Result<Value, ClientError> {
        let anonymous = Self {
            http: self.http.clone(),
            addr: self.addr.clone(),
            token: Zeroizing::new(String::new()),
            deadline: self.deadline,
        };
        anonymous
            .call(
                reqwest::Method::POST,
                &format!("auth/{mount}/login"),
                Some(body),
            )
            .await
    }

    /// `POST auth/token/renew-self`; returns the new TTL in seconds.
    pub async fn renew_self(&self) -> Result<u64, ClientError> {
        let v = self
            .call(
                reqwest::Method::POST,
                "auth/token/renew-self",
                Some(&json!({})),
            )
            .await?;
        Ok(v["auth"]["lease_duration"].as_u64().unwrap_or(0))
    }
}

/// The `errors` of a Vault error answer, joined.
fn errors(v: &Value) -> String {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// Wait before the next attempt (capped exponential backoff with full
/// jitter, logged), or give up once `deadline` has passed since `start`.
async fn retry_wait(
    start: Instant,
    attempt: u32,
    deadline: Duration,
    last: String,
) -> Result<(), ClientError> {
    let waited = start.elapsed();
    if waited >= deadline {
        return Err(ClientError::Unavailable { waited, last });
    }
    let wait = Duration::from_millis(backoff_ms(
        attempt,
        250,
        10_000,
        crate::schedule::rand_unit(),
    ))
    .min(deadline.saturating_sub(waited));
    tracing::warn!(%last, retry_in = ?wait, "waiting for pki-server");
    tokio::time::sleep(wait).await;
    Ok(())
}

/// A fresh key pair and a CSR for it (the key never leaves the node).
pub fn csr(
    common_name: &str,
    dns: &[String],
    ips: &[std::net::IpAddr],
) -> Result<(String, Zeroizing<String>), ClientError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    for d in dns {
        p.subject_alt_names
            .push(rcgen::SanType::DnsName(d.clone().try_into().map_err(
                |e: rcgen::Error| ClientError::Config(format!("bad DNS name {d:?}: {e}")),
            )?));
    }
    for ip in ips {
        p.subject_alt_names.push(rcgen::SanType::IpAddress(*ip));
    }
    let csr = p
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| ClientError::Config(e.to_string()))?;
    Ok((csr, Zeroizing::new(key.serialize_pem())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_carries_the_names_and_verifies() {
        let (csr, key) = csr(
            "etcd-0",
            &["etcd-0.cluster.local".into()],
            &["127.0.0.11".parse().unwrap()],
        )
        .unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(csr.as_bytes())
            .map(|c: rustls::pki_types::CertificateSigningRequestDer| c.as_ref().to_vec())
            .unwrap();
        let (_, req) = <x509_parser::certification_request::X509CertificationRequest as x509_parser::prelude::FromDer<_>>::from_der(&der).unwrap();
        req.verify_signature().unwrap();
    }

    #[test]
    fn https_needs_a_ca_and_plain_http_only_on_loopback() {
        assert!(Client::new("https://pki:8200", None, Zeroizing::new("t".into())).is_err());
        assert!(Client::new("http://10.0.0.1:8200", None, Zeroizing::new("t".into())).is_err());
        assert!(Client::new("http://127.0.0.1:8200", None, Zeroizing::new("t".into())).is_ok());
    }

    /// `addr` if `Client::new` takes it without a CA and `allowed` is false,
    /// or refuses it and `allowed` is true.
    fn check(addr: &str, allowed: bool) -> Option<String> {
        let got = Client::new(addr, None, Zeroizing::new("t".into()));
        (got.is_ok() != allowed).then(|| match got {
            Ok(_) => format!("{addr} taken"),
            Err(e) => format!("{addr} refused: {e}"),
        })
    }

    #[test]
    fn plain_http_only_when_the_host_is_loopback() {
        let wrong: Vec<String> = [
            ("http://127.0.0.1:8200", true),
            ("http://127.1.2.3:8200", true),
            ("http://127.0.0.1", true),
            ("http://[::1]:8200", true),
            ("http://localhost:8200", true),
            ("http://LOCALHOST:8200/", true),
            ("http://localhost.evil/", false),
            ("http://localhost.evil:8200", false),
            ("http://localhostevil/", false),
            ("http://127.0.0.1.evil.com/", false),
            ("http://127.evil.com/", false),
            ("http://127.0.0.1@evil.com/", false),
            ("http://localhost@evil/", false),
            ("http://user@evil/", false),
            ("http://10.0.0.1/", false),
            ("http://[::2]:8200", false),
            ("http://[::ffff:10.0.0.1]/", false),
            ("http://evil/", false),
            ("ftp://127.0.0.1/", false),
            ("127.0.0.1:8200", false),
            ("not a url", false),
        ]
        .into_iter()
        .filter_map(|(addr, allowed)| check(addr, allowed))
        .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
