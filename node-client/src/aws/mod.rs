//! AWS without a service SDK: one SigV4 signer and one HTTP client.
//!
//! node-client calls AWS in a few small ways: Auto Scaling and EC2 Query API
//! POSTs (`etcd-join` discovery, [`crate::etcd::discover`]), an S3 GetObject
//! (`fetch-ca`, [`s3`]), and one request it signs but never sends (the STS
//! `GetCallerIdentity` of `--auth aws`, [`crate::login`]). All of them are
//! signed by [`sign`]. The SDK is used only for the standard credential chain
//! (environment, profile, IMDSv2) and the region, over a rustls-on-ring HTTPS
//! client (the SDK's own would bring aws-lc).
//!
//! Endpoints: the service's own variable (`AWS_ENDPOINT_URL_S3`, ...), then
//! the SDK's endpoint URL (`AWS_ENDPOINT_URL`), then
//! `https://<prefix>.<region>.amazonaws.com[.cn]/`.
//!
//! This module reads no answer: callers interpret the status and body.
//! Nothing here logs or formats a credential or a signature.

pub mod s3;
pub mod xml;

use std::time::{Duration, SystemTime};

/// The largest answer body read (bigger answers are an error).
pub const MAX_BODY: usize = 16 << 20;

/// Why a request could not be made or answered.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// Local: no region, no credentials, an invalid endpoint, signing failed.
    #[error("{0}")]
    Config(String),
    /// No answer: connection refused or reset, timeout, a truncated body.
    #[error("{0}")]
    Unavailable(String),
}

/// The SDK configuration (credentials and region from the standard chain)
/// with a rustls-on-ring HTTPS client.
pub async fn sdk_config() -> aws_config::SdkConfig {
    use aws_smithy_http_client::{Builder, tls};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await
}

/// The endpoint of a service: its own variable `var`, the SDK's endpoint URL
/// (`AWS_ENDPOINT_URL`), else `https://<prefix>.<region>.amazonaws.com[.cn]`;
/// always ending in `/`.
pub fn endpoint(var: &str, sdk: Option<&str>, prefix: &str, region: &str) -> String {
    let env = std::env::var(var).ok().filter(|v| !v.is_empty());
    let e = env
        .or_else(|| sdk.map(str::to_string))
        .unwrap_or_else(|| format!("https://{prefix}.{region}.{}", dns_suffix(region)));
    if e.ends_with('/') { e } else { format!("{e}/") }
}

/// `amazonaws.com`, or `amazonaws.com.cn` in the China regions.
pub fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// Percent-encoding of everything but RFC 3986's unreserved characters
/// (form values, query values); `keep_slash` keeps `/` (S3 object keys).
pub fn encode(s: &str, keep_slash: bool) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b'/' if keep_slash => "/".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `scheme://host[:port]` of `url` as the `host` header: host, and the port
/// when it is not the scheme's default.
fn host_header(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(format!("URL {url:?}: not http(s)"));
    }
    match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => Ok(format!("{h}:{p}")),
        (Some(h), None) => Ok(h.to_string()),
        (None, _) => Err(format!("URL {url:?} has no host")),
    }
}

/// Whether `url` is an http(s) URL with a host (endpoint validation).
pub fn valid_endpoint(url: &str) -> bool {
    host_header(url).is_ok()
}

/// A request to sign (and send).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The full URL, already percent-encoded as it is sent.
    pub url: &'a str,
    /// Headers besides `host`, signed and sent (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: &'a [u8],
}

/// How a service wants requests signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// The default SigV4 rules (Query APIs, STS).
    Standard,
    /// S3's: the `x-amz-content-sha256` header, the path signed as sent
    /// (single percent-encoding, no normalisation).
    S3,
}

/// Sign `req` for `service` in `region` at `time`: every header to send,
/// `host` first and the signature headers (`authorization`, `x-amz-date`,
/// the session token, S3's payload hash) last.
pub fn sign(
    creds: &aws_credential_types::Credentials,
    region: &str,
    service: &str,
    flavour: Flavour,
    time: SystemTime,
    req: &Request<'_>,
) -> Result<Vec<(String, String)>, String> {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode, sign as sigv4,
    };
    let mut headers = vec![("host".to_string(), host_header(req.url)?)];
    headers.extend(req.headers.iter().cloned());
    let mut settings = SigningSettings::default();
    if flavour == Flavour::S3 {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let identity = creds.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let signable = SignableRequest::new(
        req.method,
        req.url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(req.body),
    )
    .map_err(|e| format!("signing: {e}"))?;
    let (instructions, _) = sigv4(signable, &params)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    for (k, v) in instructions.headers() {
        headers.push((k.to_string(), v.to_string()));
    }
    Ok(headers)
}

/// An answer: status and body (at most [`MAX_BODY`] bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// A signing HTTP client: credentials and region from the standard chain.
pub struct Aws {
    http: reqwest::Client,
    sdk: aws_config::SdkConfig,
    region: String,
}

impl std::fmt::Debug for Aws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aws")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Aws {
    /// Region and credential chain from the SDK's standard settings.
    pub async fn load() -> Result<Self, AwsError> {
        let sdk = sdk_config().await;
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            AwsError::Config("no AWS region (AWS_REGION or the instance's)".into())
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("node-client/", env!("CARGO_PKG_VERSION")))
            // A signed request is never re-sent elsewhere: a redirect would
            // carry the x-amz-* headers (session token) to another host and
            // fail its signature there anyway. Redirects are answers.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AwsError::Config(e.to_string()))?;
        Ok(Self { http, sdk, region })
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Whether an endpoint URL is set for every service (`AWS_ENDPOINT_URL`
    /// or the profile's `endpoint_url`).
    pub fn sdk_endpoint(&self) -> Option<&str> {
        self.sdk.endpoint_url()
    }

    /// The endpoint of a service (see [`endpoint`]), validated.
    pub fn endpoint(&self, var: &str, prefix: &str) -> Result<String, AwsError> {
        let e = endpoint(var, self.sdk.endpoint_url(), prefix, &self.region);
        if valid_endpoint(&e) {
            Ok(e)
        } else {
            Err(AwsError::Config(format!("invalid AWS endpoint {e:?}")))
        }
    }

    /// Credentials from the chain, fetched at each call (instance credentials rotate).
    async fn credentials(&self) -> Result<aws_credential_types::Credentials, AwsError> {
        use aws_credential_types::provider::ProvideCredentials as _;
        let provider = self
            .sdk
            .credentials_provider()
            .ok_or_else(|| AwsError::Config("no AWS credentials provider".into()))?;
        provider.provide_credentials().await.map_err(|e| {
            AwsError::Config(format!(
                "no AWS credentials (environment, profile or instance metadata): {}",
                error_chain(&e)
            ))
        })
    }

    /// Sign `req` for `service` and send it; the answer, whatever its status.
    /// `what` names the call in errors.
    pub async fn send(
        &self,
        what: &str,
        service: &str,
        flavour: Flavour,
        req: &Request<'_>,
    ) -> Result<Response, AwsError> {
        let creds = self.credentials().await?;
        let headers = sign(
            &creds,
            &self.region,
            service,
            flavour,
            SystemTime::now(),
            req,
        )
        .map_err(AwsError::Config)?;
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|e| AwsError::Config(format!("method {}: {e}", req.method)))?;
        let mut r = self.http.request(method, req.url).body(req.body.to_vec());
        // reqwest writes the host header from the URL, as it was signed.
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            r = r.header(k, v);
        }
        let unavailable = |e: reqwest::Error| {
            AwsError::Unavailable(format!("{what} at {}: {}", req.url, error_chain(&e)))
        };
        let mut resp = r.send().await.map_err(unavailable)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unavailable)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(AwsError::Unavailable(format!(
                    "{what}: the answer is larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, body })
    }
}

/// An error with its causes (none of the SDK's or reqwest's carries a secret).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_default_to_the_region() {
        assert_eq!(
            endpoint("NODE_CLIENT_TEST_UNSET_VAR", None, "ec2", "eu-west-1"),
            "https://ec2.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            endpoint(
                "NODE_CLIENT_TEST_UNSET_VAR",
                None,
                "autoscaling",
                "cn-north-1"
            ),
            "https://autoscaling.cn-north-1.amazonaws.com.cn/"
        );
        assert_eq!(
            endpoint(
                "NODE_CLIENT_TEST_UNSET_VAR",
                Some("http://127.0.0.1:5000"),
                "ec2",
                "x"
            ),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(encode("a b/=", false), "a%20b%2F%3D");
        assert_eq!(encode("ca/pki ca.pem", true), "ca/pki%20ca.pem");
    }

    fn creds() -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test")
    }

    fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn s3_requests_carry_the_payload_hash_and_standard_ones_do_not() {
        let req = Request {
            method: "GET",
            url: "http://127.0.0.1:5000/bucket/ca/pki-server-ca.pem",
            headers: vec![],
            body: b"",
        };
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s3 = sign(&creds(), "us-east-1", "s3", Flavour::S3, t, &req).unwrap();
        assert_eq!(header(&s3, "host"), Some("127.0.0.1:5000"));
        // SHA-256 of the empty body.
        assert_eq!(
            header(&s3, "x-amz-content-sha256"),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let auth = header(&s3, "authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="),
            "{auth}"
        );
        assert!(!auth.contains("secret"));
        let std = sign(&creds(), "us-east-1", "ec2", Flavour::Standard, t, &req).unwrap();
        assert_eq!(header(&std, "x-amz-content-sha256"), None);
        assert!(
            header(&std, "authorization")
                .unwrap()
                .contains("SignedHeaders=host;x-amz-date,")
        );
    }

    #[test]
    fn signing_refuses_urls_without_a_host() {
        let req = Request {
            method: "GET",
            url: "file:///etc/passwd",
            headers: vec![],
            body: b"",
        };
        assert!(
            sign(
                &creds(),
                "us-east-1",
                "s3",
                Flavour::S3,
                SystemTime::now(),
                &req
            )
            .is_err()
        );
        assert!(!valid_endpoint("not a url"));
        assert!(valid_endpoint("https://s3.eu-west-1.amazonaws.com/"));
    }
}
