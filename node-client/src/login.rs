//! Machine identity logins: how a node gets its token without holding a
//! secret shared with other nodes (issue #8).
//!
//! - `aws` (Vault's IAM method): sign an STS `GetCallerIdentity` request with
//!   the instance's own credentials (the SDK's standard chain: environment,
//!   profile, IMDSv2), including the `X-Vault-AWS-IAM-Server-ID` header in the
//!   signature, and hand the unsent request to `auth/<mount>/login` the way
//!   `vault login -method=aws` and hvac do (every field base64). The server
//!   forwards it to STS and names the node from EC2's record of the instance.
//! - `jwt` (Vault's JWT method): send the JWT read from a file (re-read at every
//!   login, so whoever mints it can replace it) to `auth/<mount>/login`.
//!
//! Login requests go through [`Client::call`], so they are retried like every
//! other request (unreachable, sealed, 5xx) and a 4xx is final.
//! Nothing here logs or formats a credential, a signature, a JWT or a token.

use crate::client::{Client, ClientError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::SystemTime;
use zeroize::Zeroizing;

/// Vault's default STS endpoint (global, signed for us-east-1).
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.amazonaws.com";
/// The region the global STS endpoint is signed for.
pub const DEFAULT_STS_REGION: &str = "us-east-1";
/// The only request body auth/aws accepts.
pub const GET_CALLER_IDENTITY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
/// The header that binds a signed request to one server.
pub const SERVER_ID_HEADER: &str = "x-vault-aws-iam-server-id";

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Local: no credentials, unreadable JWT file, signing failed.
    #[error("{0}")]
    Config(String),
    /// The login request failed (refused: 4xx; unavailable).
    #[error("login at auth/{mount}/login: {source}")]
    Request {
        /// The auth mount.
        mount: String,
        /// What went wrong.
        source: ClientError,
    },
}

/// A login method and where to use it.
#[derive(Debug, Clone)]
pub struct Login {
    /// The auth mount (`aws`, `jwt`, ...).
    pub mount: String,
    /// The login role (`auth/<mount>/role/<role>`).
    pub role: String,
    /// The method's own settings.
    pub method: Method,
}

/// The login methods.
#[derive(Debug, Clone)]
pub enum Method {
    /// Vault's AWS IAM method.
    Aws(AwsLogin),
    /// Vault's JWT method.
    Jwt {
        /// The file holding the JWT (re-read at each login).
        file: PathBuf,
    },
}

/// Settings of an IAM login.
#[derive(Debug, Clone, Default)]
pub struct AwsLogin {
    /// `X-Vault-AWS-IAM-Server-ID` value (signed), when the server requires one.
    pub server_id: Option<String>,
    /// The STS endpoint to sign for; default: `AWS_ENDPOINT_URL_STS`, then the
    /// SDK's `AWS_ENDPOINT_URL`, then [`DEFAULT_STS_ENDPOINT`].
    pub sts_endpoint: Option<String>,
    /// The region to sign for; default: the SDK's region for an endpoint
    /// override, [`DEFAULT_STS_REGION`] for the global endpoint.
    pub sts_region: Option<String>,
}

/// The token a login returned.
pub struct Session {
    /// The token.
    pub token: Zeroizing<String>,
    /// Its TTL at login (seconds; 0 = never expires).
    pub ttl: u64,
    /// Whether renew-self may extend it.
    pub renewable: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("ttl", &self.ttl)
            .field("renewable", &self.renewable)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// Log in: build the method's body, `POST auth/<mount>/login`, return the token.
    pub async fn run(&self, c: &Client) -> Result<Session, LoginError> {
        let body = match &self.method {
            Method::Jwt { file } => {
                let jwt = Zeroizing::new(
                    std::fs::read_to_string(file)
                        .map_err(|e| {
                            LoginError::Config(format!("JWT file {}: {e}", file.display()))
                        })?
                        .trim()
                        .to_string(),
                );
                if jwt.is_empty() {
                    return Err(LoginError::Config(format!(
                        "JWT file {} is empty",
                        file.display()
                    )));
                }
                json!({"role": self.role, "jwt": jwt.as_str()})
            }
            Method::Aws(a) => {
                let (creds, url, region) = a.resolve().await?;
                iam_login_body(
                    &self.role,
                    &creds,
                    &url,
                    &region,
                    a.server_id.as_deref(),
                    SystemTime::now(),
                )?
            }
        };
        let v = c
            .login(&self.mount, &body)
            .await
            .map_err(|source| LoginError::Request {
                mount: self.mount.clone(),
                source,
            })?;
        let auth = &v["auth"];
        let token = auth["client_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                LoginError::Config(format!(
                    "auth/{}/login answered without a token",
                    self.mount
                ))
            })?;
        Ok(Session {
            token: Zeroizing::new(token.to_string()),
            ttl: auth["lease_duration"].as_u64().unwrap_or(0),
            renewable: auth["renewable"].as_bool().unwrap_or(false),
        })
    }
}

impl AwsLogin {
    /// Credentials from the standard chain, the STS URL and the signing region.
    async fn resolve(
        &self,
    ) -> Result<(aws_credential_types::Credentials, String, String), LoginError> {
        use aws_credential_types::provider::ProvideCredentials as _;
        let sdk = crate::aws::sdk_config().await;
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| LoginError::Config("no AWS credentials provider".into()))?;
        let creds = provider.provide_credentials().await.map_err(|e| {
            LoginError::Config(format!(
                "no AWS credentials (environment, profile or instance metadata): {}",
                crate::aws::error_chain(&e)
            ))
        })?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let endpoint = self
            .sts_endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_STS"))
            .or_else(|| sdk.endpoint_url().map(str::to_string));
        let (url, region) = match endpoint {
            None => (
                sts_url(DEFAULT_STS_ENDPOINT)?,
                self.sts_region
                    .clone()
                    .unwrap_or_else(|| DEFAULT_STS_REGION.into()),
            ),
            Some(e) => (
                sts_url(&e)?,
                self.sts_region
                    .clone()
                    .or_else(|| sdk.region().map(|r| r.to_string()))
                    .unwrap_or_else(|| DEFAULT_STS_REGION.into()),
            ),
        };
        Ok((creds, url, region))
    }
}

/// `endpoint` as the URL to sign: scheme and host, path `/`.
pub fn sts_url(endpoint: &str) -> Result<String, LoginError> {
    let u = reqwest::Url::parse(endpoint)
        .map_err(|_| LoginError::Config(format!("invalid STS endpoint {endpoint:?}")))?;
    if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none() || u.query().is_some() {
        return Err(LoginError::Config(format!(
            "invalid STS endpoint {endpoint:?}"
        )));
    }
    let s = u.as_str();
    Ok(if s.ends_with('/') {
        s.to_string()
    } else {
        format!("{s}/")
    })
}

/// The `auth/aws/login` body for `role`: a `GetCallerIdentity` POST to `url`
/// signed with `creds` for `region` at `time`, the server id header signed
/// too, every field base64 as Vault's CLI and hvac send them.
pub fn iam_login_body(
    role: &str,
    creds: &aws_credential_types::Credentials,
    url: &str,
    region: &str,
    server_id: Option<&str>,
    time: SystemTime,
) -> Result<Value, LoginError> {
    let mut extra = vec![(
        "content-type".to_string(),
        "application/x-www-form-urlencoded; charset=utf-8".to_string(),
    )];
    if let Some(id) = server_id.filter(|s| !s.is_empty()) {
        extra.push((SERVER_ID_HEADER.into(), id.to_string()));
    }
    let req = crate::aws::Request {
        method: "POST",
        url,
        headers: extra,
        body: GET_CALLER_IDENTITY.as_bytes(),
    };
    let headers = crate::aws::sign(
        creds,
        region,
        "sts",
        crate::aws::Flavour::Standard,
        time,
        &req,
    )
    .map_err(LoginError::Config)?;
    // Go's http.Header shape (what `vault login -method=aws` sends): lists.
    let mut map: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in headers {
        map.entry(k).or_default().push(v);
    }
    let headers_json = json!(map).to_string();
    Ok(json!({
        "role": role,
        "iam_http_request_method": "POST",
        "iam_request_url": B64.encode(url),
        "iam_request_body": B64.encode(GET_CALLER_IDENTITY),
        "iam_request_headers": B64.encode(headers_json),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(v: &Value, k: &str) -> String {
        String::from_utf8(B64.decode(v[k].as_str().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn iam_body_is_a_signed_get_caller_identity_with_the_server_id_signed() {
        let creds = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("session".into()),
            None,
            "t",
        );
        let v = iam_login_body(
            "worker",
            &creds,
            "https://sts.amazonaws.com/",
            "us-east-1",
            Some("pki.example"),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        assert_eq!(v["role"], "worker");
        assert_eq!(v["iam_http_request_method"], "POST");
        assert_eq!(decode(&v, "iam_request_url"), "https://sts.amazonaws.com/");
        assert_eq!(decode(&v, "iam_request_body"), GET_CALLER_IDENTITY);
        let h: Value = serde_json::from_str(&decode(&v, "iam_request_headers")).unwrap();
        assert_eq!(h[SERVER_ID_HEADER], json!(["pki.example"]));
        assert_eq!(h["x-amz-security-token"], json!(["session"]));
        let auth = h["authorization"][0].as_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/sts/aws4_request"
            ),
            "{auth}"
        );
        let signed = auth
            .split("SignedHeaders=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        assert!(signed.split(';').any(|s| s == SERVER_ID_HEADER), "{signed}");
        assert!(!auth.contains("secret"));
        // Without a server id, no such header.
        let v = iam_login_body(
            "worker",
            &creds,
            "https://sts.amazonaws.com/",
            "us-east-1",
            None,
            SystemTime::now(),
        )
        .unwrap();
        let h: Value = serde_json::from_str(&decode(&v, "iam_request_headers")).unwrap();
        assert!(h.get(SERVER_ID_HEADER).is_none());
    }

    #[test]
    fn sts_url_is_scheme_host_and_slash() {
        assert_eq!(
            sts_url("https://sts.amazonaws.com").unwrap(),
            "https://sts.amazonaws.com/"
        );
        assert_eq!(
            sts_url("http://127.0.0.1:5000").unwrap(),
            "http://127.0.0.1:5000/"
        );
        assert!(sts_url("ftp://x").is_err());
        assert!(sts_url("not a url").is_err());
    }
}
