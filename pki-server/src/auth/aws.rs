//! Vault's AWS auth method, IAM flavour: a client signs an STS
//! `GetCallerIdentity` request with its AWS credentials and hands it, unsent,
//! to the server; the server checks what it is allowed to forward, forwards it
//! to STS (which checks the signature), and reads the caller's ARN from the
//! answer. For an instance profile the ARN's session name is the instance id:
//! the server looks the instance up in EC2 and puts its node name, address,
//! zone and tags into the token's metadata.
//!
//! What the server checks before forwarding (so a signed request meant for
//! another server, another action or another endpoint is useless here): the
//! method is POST; the URL is the configured STS endpoint (no query); the body
//! is exactly `Action=GetCallerIdentity&Version=2011-06-15`; the
//! `X-Vault-AWS-IAM-Server-ID` header, when a server id is configured, is
//! present, equal to it and listed in the signature's `SignedHeaders`.
//!
//! Not here: the EC2 (PKCS#7 identity document) method, IAM `GetRole` lookups
//! (role ARNs are matched without their IAM path), cross-account STS roles.

use super::{Login, TokenParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default STS endpoint (Vault's).
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.amazonaws.com";
/// The header binding a signed request to one server.
pub const SERVER_ID_HEADER: &str = "x-vault-aws-iam-server-id";
/// The only body accepted.
pub const GET_CALLER_IDENTITY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
/// Instance tag copied to metadata key `role`.
pub const ROLE_TAG: &str = "kube-aws-pki/role";
/// Instance tag copied to metadata key `cluster`.
pub const CLUSTER_TAG: &str = "kube-aws-pki/cluster";
/// Largest STS answer read.
const MAX_STS_RESPONSE: usize = 64 * 1024;

/// `auth/<mount>/config/client`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AwsConfig {
    /// STS endpoint logins must be signed for (default [`DEFAULT_STS_ENDPOINT`]).
    pub sts_endpoint: String,
    /// STS region (informational; the signature's scope names the region).
    pub sts_region: String,
    /// Required value of `X-Vault-AWS-IAM-Server-ID` (empty = not required).
    pub iam_server_id_header_value: String,
    /// EC2 endpoint override for instance lookups (tests: moto).
    pub ec2_endpoint: String,
    /// Access key for the server's own EC2 calls (empty = the default chain).
    pub access_key: String,
    /// Its secret key (never read back).
    pub secret_key: String,
}

impl std::fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsConfig")
            .field("sts_endpoint", &self.sts_endpoint)
            .field("ec2_endpoint", &self.ec2_endpoint)
            .finish_non_exhaustive()
    }
}

impl AwsConfig {
    /// The STS endpoint as a URL.
    pub fn sts_url(&self) -> Result<reqwest::Url, AwsError> {
        let e = if self.sts_endpoint.is_empty() {
            DEFAULT_STS_ENDPOINT
        } else {
            &self.sts_endpoint
        };
        let u = reqwest::Url::parse(e)
            .map_err(|_| AwsError::Bad(format!("invalid sts_endpoint {e:?}")))?;
        if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none() {
            return Err(AwsError::Bad(format!("invalid sts_endpoint {e:?}")));
        }
        Ok(u)
    }

    /// Check a configuration before it is stored.
    pub fn validate(&self) -> Result<(), AwsError> {
        self.sts_url()?;
        if !self.ec2_endpoint.is_empty() {
            reqwest::Url::parse(&self.ec2_endpoint)
                .map_err(|_| AwsError::Bad("invalid ec2_endpoint".into()))?;
        }
        if self.access_key.is_empty() != self.secret_key.is_empty() {
            return Err(AwsError::Bad(
                "access_key and secret_key must be set together".into(),
            ));
        }
        Ok(())
    }
}

/// `auth/<mount>/role/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AwsRole {
    /// Only `iam`.
    pub auth_type: String,
    /// ARNs (with `*` globs) the caller's canonical ARN must match.
    pub bound_iam_principal_arn: Vec<String>,
    /// Accounts the caller must belong to (empty = any).
    pub bound_account_id: Vec<String>,
    /// `ec2_instance`: the caller must be an instance profile of a running instance.
    pub inferred_entity_type: String,
    /// Region of that instance.
    pub inferred_aws_region: String,
    /// Token settings.
    #[serde(flatten)]
    pub token: TokenParams,
}

impl Default for AwsRole {
    fn default() -> Self {
        Self {
            auth_type: "iam".into(),
            bound_iam_principal_arn: Vec::new(),
            bound_account_id: Vec::new(),
            inferred_entity_type: String::new(),
            inferred_aws_region: String::new(),
            token: TokenParams::default(),
        }
    }
}

impl AwsRole {
    /// Vault's rules for an IAM role, plus ours (no root policy).
    pub fn validate(&self) -> Result<(), AwsError> {
        if self.auth_type != "iam" {
            return Err(AwsError::Bad(format!(
                "unsupported auth_type {:?}: only \"iam\" is supported",
                self.auth_type
            )));
        }
        if self.bound_iam_principal_arn.is_empty() {
            return Err(AwsError::Bad(
                "at least one bound parameter should be specified on the role: bound_iam_principal_arn".into(),
            ));
        }
        for a in &self.bound_iam_principal_arn {
            if a != "*" && !a.starts_with("arn:") {
                return Err(AwsError::Bad(format!(
                    "invalid bound_iam_principal_arn {a:?}"
                )));
            }
        }
        if !matches!(self.inferred_entity_type.as_str(), "" | "ec2_instance") {
            return Err(AwsError::Bad(format!(
                "invalid inferred_entity_type {:?}",
                self.inferred_entity_type
            )));
        }
        if self.token.token_policies.iter().any(|p| p == "root") {
            return Err(AwsError::Bad(
                "a login role may not grant the root policy".into(),
            ));
        }
        Ok(())
    }
}

/// Why a login was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AwsError {
    /// A malformed or disallowed request (400).
    #[error("{0}")]
    Bad(String),
    /// The identity is not allowed by the role (403).
    #[error("{0}")]
    Denied(String),
    /// A server-side failure (500; detail logged).
    #[error("{0}")]
    Internal(String),
}

/// The unsent, signed request a client hands over (already base64-decoded).
#[derive(Clone, Default)]
pub struct IamRequest {
    /// HTTP method.
    pub method: String,
    /// URL.
    pub url: String,
    /// Body.
    pub body: String,
    /// Headers (name, value); a name may repeat.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for IamRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers carry the signature and session token.
        f.debug_struct("IamRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl IamRequest {
    /// Values of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The `SignedHeaders` of a SigV4 `Authorization` header, lower-cased.
fn signed_headers(authorization: &str) -> Option<Vec<String>> {
    let rest = authorization.strip_prefix("AWS4-HMAC-SHA256")?;
    rest.split(',').map(str::trim).find_map(|part| {
        part.strip_prefix("SignedHeaders=").map(|h| {
            h.split(';')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect()
        })
    })
}

/// Everything the server checks before forwarding a login request.
pub fn check_request(config: &AwsConfig, req: &IamRequest) -> Result<reqwest::Url, AwsError> {
    if req.method != "POST" {
        return Err(AwsError::Bad(format!(
            "invalid iam_http_request_method {:?}: only POST is supported",
            req.method
        )));
    }
    let want = config.sts_url()?;
    let got = reqwest::Url::parse(&req.url)
        .map_err(|_| AwsError::Bad("error parsing iam_request_url".into()))?;
    let same_endpoint = got.scheme() == want.scheme()
        && got.host_str() == want.host_str()
        && got.port_or_known_default() == want.port_or_known_default()
        && got.username().is_empty()
        && got.password().is_none();
    if !same_endpoint
        || !matches!(got.path(), "/" | "")
        || got.query().is_some()
        || got.fragment().is_some()
    {
        return Err(AwsError::Bad(format!(
            "iam_request_url must be the configured STS endpoint {}",
            want.as_str().trim_end_matches('/')
        )));
    }
    let mut params: Vec<&str> = req.body.split('&').collect();
    params.sort_unstable();
    if params != ["Action=GetCallerIdentity", "Version=2011-06-15"] {
        return Err(AwsError::Bad(format!(
            "iam_request_body must be {GET_CALLER_IDENTITY:?}"
        )));
    }
    let auth = req.header("authorization");
    let [auth] = auth.as_slice() else {
        return Err(AwsError::Bad(
            "missing or repeated Authorization header".into(),
        ));
    };
    let signed = signed_headers(auth).ok_or_else(|| {
        AwsError::Bad("the Authorization header is not an AWS4-HMAC-SHA256 signature".into())
    })?;
    if !config.iam_server_id_header_value.is_empty() {
        let ids = req.header(SERVER_ID_HEADER);
        match ids.as_slice() {
            [] => {
                return Err(AwsError::Bad(
                    "missing header \"X-Vault-AWS-IAM-Server-ID\"".into(),
                ));
            }
            [id] if *id == config.iam_server_id_header_value => {}
            [_] => {
                return Err(AwsError::Bad(
                    "X-Vault-AWS-IAM-Server-ID does not match this server".into(),
                ));
            }
            _ => {
                return Err(AwsError::Bad(
                    "repeated X-Vault-AWS-IAM-Server-ID header".into(),
                ));
            }
        }
        if !signed.iter().any(|h| h == SERVER_ID_HEADER) {
            return Err(AwsError::Bad("vault header wasn't signed".into()));
        }
    }
    Ok(got)
}

/// The caller as STS names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The ARN STS returned.
    pub arn: String,
    /// The account.
    pub account: String,
    /// The unique id (`AROA...:session`).
    pub user_id: String,
}

/// An ARN split the way Vault's `parseIamArn` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `arn:<partition>:iam::<account>:<type>/<name>` (no IAM path).
    pub canonical: String,
    /// The account.
    pub account: String,
    /// `user`, `role` or `assumed-role`.
    pub kind: String,
    /// The session name of an assumed role.
    pub session: Option<String>,
}

/// Parse a caller ARN from STS.
pub fn parse_arn(arn: &str) -> Result<Principal, AwsError> {
    let bad = || AwsError::Bad(format!("unrecognised caller ARN {arn:?}"));
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [a, partition, service, _region, account, resource] = parts.as_slice() else {
        return Err(bad());
    };
    if *a != "arn" || partition.is_empty() || account.is_empty() {
        return Err(bad());
    }
    let segs: Vec<&str> = resource.split('/').collect();
    match (*service, segs.as_slice()) {
        ("sts", ["assumed-role", role, session]) => Ok(Principal {
            canonical: format!("arn:{partition}:iam::{account}:role/{role}"),
            account: account.to_string(),
            kind: "assumed-role".into(),
            session: Some(session.to_string()),
        }),
        ("iam", [kind @ ("user" | "role"), .., name]) if !name.is_empty() => Ok(Principal {
            canonical: format!("arn:{partition}:iam::{account}:{kind}/{name}"),
            account: account.to_string(),
            kind: kind.to_string(),
            session: None,
        }),
        _ => Err(bad()),
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = si;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether `s` looks like an EC2 instance id.
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-")
        .is_some_and(|h| (8..=17).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The text of the first `<tag>` element in `xml` (no entities allowed).
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml.get(start..)?.find(&close)?;
    let v = xml.get(start..start + len)?.trim();
    (!v.contains('&') && !v.contains('<')).then_some(v)
}

/// Parse STS's `GetCallerIdentityResponse`.
pub fn parse_caller(xml: &str) -> Result<Caller, AwsError> {
    let bad = || AwsError::Bad("error parsing STS response".into());
    let result = xml_text_block(xml, "GetCallerIdentityResult").ok_or_else(bad)?;
    Ok(Caller {
        arn: xml_text(result, "Arn").ok_or_else(bad)?.to_string(),
        account: xml_text(result, "Account").ok_or_else(bad)?.to_string(),
        user_id: xml_text(result, "UserId").unwrap_or("").to_string(),
    })
}

fn xml_text_block<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml.get(start..)?.find(&close)?;
    xml.get(start..start + len)
}

/// Forward the checked request to STS and read the caller.
pub async fn call_sts(url: reqwest::Url, req: &IamRequest) -> Result<Caller, AwsError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AwsError::Internal(format!("http client: {e}")))?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &req.headers {
        let lk = k.to_ascii_lowercase();
        if matches!(
            lk.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            continue;
        }
        let name = reqwest::header::HeaderName::from_bytes(lk.as_bytes())
            .map_err(|_| AwsError::Bad(format!("invalid header name {k:?}")))?;
        let value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| AwsError::Bad(format!("invalid value for header {k:?}")))?;
        headers.append(name, value);
    }
    let resp = client
        .post(url)
        .headers(headers)
        .body(req.body.clone())
        .send()
        .await
        .map_err(|e| {
            AwsError::Bad(format!(
                "error making upstream request: {}",
                without_url(&e)
            ))
        })?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| AwsError::Bad(format!("error reading STS response: {}", without_url(&e))))?;
    if !status.is_success() {
        return Err(AwsError::Denied(format!(
            "error making upstream request: received error code {} from STS",
            status.as_u16()
        )));
    }
    let text = std::str::from_utf8(
        bytes
            .get(..MAX_STS_RESPONSE.min(bytes.len()))
            .unwrap_or(&[]),
    )
    .map_err(|_| AwsError::Bad("error parsing STS response".into()))?;
    parse_caller(text)
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<sts>");
    }
    s
}

/// What EC2 says about an instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instance {
    /// `running`, `stopped`, `terminated`, ...
    pub state: String,
    /// Private DNS name (the node name).
    pub private_dns_name: String,
    /// Private IPv4 address.
    pub private_ip: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Owning account.
    pub owner: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// Look an instance up with the server's own credentials.
pub async fn describe_instance(
    config: &AwsConfig,
    region: &str,
    id: &str,
) -> Result<Option<Instance>, AwsError> {
    let ec2 = ec2_client(config, region).await;
    describe_with(&ec2, id).await
}

/// One EC2 client per region, endpoint and credentials, made once and reused
/// by every login (building one loads configuration and credentials).
async fn ec2_client(config: &AwsConfig, region: &str) -> aws_sdk_ec2::Client {
    type Clients = std::sync::Mutex<std::collections::HashMap<String, aws_sdk_ec2::Client>>;
    static CLIENTS: std::sync::OnceLock<Clients> = std::sync::OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    // The key names the secret key only through a hash.
    let secret = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        config.secret_key.as_bytes(),
    ));
    let key = format!(
        "{region}|{}|{}|{secret}",
        config.ec2_endpoint, config.access_key
    );
    if let Some(c) = clients.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return c.clone();
    }
    let mut loader = crate::aws::loader().region(aws_config::Region::new(region.to_string()));
    if !config.ec2_endpoint.is_empty() {
        loader = loader.endpoint_url(&config.ec2_endpoint);
    }
    if !config.access_key.is_empty() {
        loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
            config.access_key.clone(),
            config.secret_key.clone(),
            None,
            None,
            "auth-aws-config",
        ));
    }
    let client = aws_sdk_ec2::Client::new(&loader.load().await);
    let mut g = clients.lock().unwrap_or_else(|p| p.into_inner());
    if g.len() >= 64 {
        g.clear();
    }
    g.insert(key, client.clone());
    client
}

async fn describe_with(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<Option<Instance>, AwsError> {
    let out = match ec2.describe_instances().instance_ids(id).send().await {
        Ok(o) => o,
        Err(e) => {
            let code = e.as_service_error().and_then(|s| {
                use aws_sdk_ec2::error::ProvideErrorMetadata as _;
                s.code().map(String::from)
            });
            if code
                .as_deref()
                .is_some_and(|c| c.starts_with("InvalidInstanceID"))
            {
                return Ok(None);
            }
            return Err(AwsError::Internal(format!(
                "DescribeInstances: {}",
                aws_sdk_ec2::error::DisplayErrorContext(&e)
            )));
        }
    };
    for r in out.reservations() {
        for i in r.instances() {
            if i.instance_id() != Some(id) {
                continue;
            }
            return Ok(Some(Instance {
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                private_dns_name: i.private_dns_name().unwrap_or("").to_string(),
                private_ip: i.private_ip_address().unwrap_or("").to_string(),
                availability_zone: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or("")
                    .to_string(),
                owner: r.owner_id().unwrap_or("").to_string(),
                tags: i
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect(),
            }));
        }
    }
    Ok(None)
}

/// The checks that need nothing but the verified caller: its account and
/// ARN against the role. Made before any EC2 call, so a caller from any
/// other account or principal never makes the server talk to EC2.
pub fn authorize_principal(
    role: &AwsRole,
    caller: &Caller,
    principal: &Principal,
) -> Result<(), AwsError> {
    if !role.bound_account_id.is_empty() && !role.bound_account_id.contains(&principal.account) {
        return Err(AwsError::Denied(format!(
            "account {:?} is not bound to the role",
            principal.account
        )));
    }
    if !role
        .bound_iam_principal_arn
        .iter()
        .any(|p| glob(p, &principal.canonical))
    {
        return Err(AwsError::Denied(format!(
            "IAM Principal {:?} does not belong to the role",
            caller.arn
        )));
    }
    Ok(())
}

/// The one answer for an instance that is missing, not running, of another
/// account or without a private name: nothing tells these cases apart.
pub fn no_such_instance(id: &str, account: &str) -> AwsError {
    AwsError::Denied(format!(
        "instance {id} is not a running instance of account {account}"
    ))
}

/// Check a caller against a role (pure: the instance, if any, already looked up).
pub fn authorize(
    role: &AwsRole,
    caller: &Caller,
    principal: &Principal,
    instance: Option<(&str, &str, &Instance)>,
) -> Result<Login, AwsError> {
    authorize_principal(role, caller, principal)?;
    let mut meta = BTreeMap::new();
    meta.insert("auth_type".into(), "iam".into());
    meta.insert("client_arn".into(), caller.arn.clone());
    meta.insert("canonical_arn".into(), principal.canonical.clone());
    meta.insert("client_user_id".into(), caller.user_id.clone());
    meta.insert("account_id".into(), principal.account.clone());
    let display = match &principal.session {
        Some(s) => format!("aws-{s}"),
        None => format!(
            "aws-{}",
            principal.canonical.rsplit('/').next().unwrap_or("")
        ),
    };
    match instance {
        Some((id, region, i)) => {
            if i.state != "running"
                || (!i.owner.is_empty() && i.owner != principal.account)
                || i.private_dns_name.is_empty()
            {
                return Err(no_such_instance(id, &principal.account));
            }
            meta.insert("inferred_entity_type".into(), "ec2_instance".into());
            meta.insert("inferred_entity_id".into(), id.to_string());
            meta.insert("inferred_aws_region".into(), region.to_string());
            meta.insert("instance_id".into(), id.to_string());
            meta.insert("node_name".into(), i.private_dns_name.clone());
            meta.insert("private_ip".into(), i.private_ip.clone());
            meta.insert("availability_zone".into(), i.availability_zone.clone());
            if let Some(r) = i.tags.get(ROLE_TAG) {
                meta.insert("role".into(), r.clone());
            }
            if let Some(c) = i.tags.get(CLUSTER_TAG) {
                meta.insert("cluster".into(), c.clone());
            }
        }
        None if role.inferred_entity_type == "ec2_instance" => {
            return Err(AwsError::Denied(
                "the role requires an EC2 instance, but the caller is not an instance profile session"
                    .into(),
            ));
        }
        None => {}
    }
    Ok(Login {
        display_name: display,
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(url: &str, body: &str, headers: &[(&str, &str)]) -> IamRequest {
        IamRequest {
            method: "POST".into(),
            url: url.into(),
            body: body.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date;x-vault-aws-iam-server-id, Signature=00";

    #[test]
    fn request_checks() {
        let cfg = AwsConfig {
            iam_server_id_header_value: "pki.example".into(),
            ..Default::default()
        };
        let ok = req(
            "https://sts.amazonaws.com/",
            GET_CALLER_IDENTITY,
            &[
                ("Authorization", AUTH),
                ("X-Vault-AWS-IAM-Server-ID", "pki.example"),
            ],
        );
        assert!(check_request(&cfg, &ok).is_ok());
        let mut r = ok.clone();
        r.body = "Version=2011-06-15&Action=GetCallerIdentity".into();
        assert!(check_request(&cfg, &r).is_ok(), "order does not matter");
        for (what, r) in [
            (
                "method",
                IamRequest {
                    method: "GET".into(),
                    ..ok.clone()
                },
            ),
            (
                "host",
                IamRequest {
                    url: "https://evil.example/".into(),
                    ..ok.clone()
                },
            ),
            (
                "scheme",
                IamRequest {
                    url: "http://sts.amazonaws.com/".into(),
                    ..ok.clone()
                },
            ),
            (
                "query",
                IamRequest {
                    url: "https://sts.amazonaws.com/?Action=AssumeRole".into(),
                    ..ok.clone()
                },
            ),
            (
                "userinfo",
                IamRequest {
                    url: "https://x@sts.amazonaws.com/".into(),
                    ..ok.clone()
                },
            ),
            (
                "body",
                IamRequest {
                    body: "Action=GetCallerIdentity&Version=2011-06-15&X=1".into(),
                    ..ok.clone()
                },
            ),
            (
                "action",
                IamRequest {
                    body: "Action=AssumeRole&Version=2011-06-15".into(),
                    ..ok.clone()
                },
            ),
            (
                "no id",
                req(
                    "https://sts.amazonaws.com/",
                    GET_CALLER_IDENTITY,
                    &[("Authorization", AUTH)],
                ),
            ),
            (
                "other id",
                req(
                    "https://sts.amazonaws.com/",
                    GET_CALLER_IDENTITY,
                    &[
                        ("Authorization", AUTH),
                        ("x-vault-aws-iam-server-id", "other"),
                    ],
                ),
            ),
            (
                "unsigned id",
                req(
                    "https://sts.amazonaws.com/",
                    GET_CALLER_IDENTITY,
                    &[
                        (
                            "Authorization",
                            &AUTH.replace(";x-vault-aws-iam-server-id", ""),
                        ),
                        ("x-vault-aws-iam-server-id", "pki.example"),
                    ],
                ),
            ),
            (
                "no auth",
                req(
                    "https://sts.amazonaws.com/",
                    GET_CALLER_IDENTITY,
                    &[("x-vault-aws-iam-server-id", "pki.example")],
                ),
            ),
        ] {
            assert!(check_request(&cfg, &r).is_err(), "{what} should be refused");
        }
    }

    #[test]
    fn arns_and_globs() {
        let p =
            parse_arn("arn:aws:sts::123456789012:assumed-role/worker/i-0123456789abcdef0").unwrap();
        assert_eq!(p.canonical, "arn:aws:iam::123456789012:role/worker");
        assert_eq!(p.session.as_deref(), Some("i-0123456789abcdef0"));
        let u = parse_arn("arn:aws:iam::123456789012:user/path/alice").unwrap();
        assert_eq!(u.canonical, "arn:aws:iam::123456789012:user/alice");
        for bad in [
            "",
            "arn:aws",
            "arn:aws:s3:::bucket",
            "arn:aws:sts::1:assumed-role/x",
        ] {
            assert!(parse_arn(bad).is_err(), "{bad}");
        }
        assert!(glob(
            "arn:aws:iam::*:role/k8s-*",
            "arn:aws:iam::1:role/k8s-worker"
        ));
        assert!(!glob(
            "arn:aws:iam::*:role/k8s-*",
            "arn:aws:iam::1:role/other"
        ));
        assert!(glob("*", "anything"));
        assert!(!glob("arn:aws:iam::1:role/a", "arn:aws:iam::1:role/ab"));
        assert!(is_instance_id("i-0123456789abcdef0"));
        assert!(is_instance_id("i-12345678"));
        assert!(!is_instance_id("i-xyz"));
        assert!(!is_instance_id("session"));
    }

    #[test]
    fn sts_answer_parses() {
        let xml = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult><Arn>arn:aws:sts::123456789012:assumed-role/w/i-1234567890abcdef0</Arn><UserId>AROA:i-1</UserId><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>"#;
        let c = parse_caller(xml).unwrap();
        assert_eq!(c.account, "123456789012");
        assert!(parse_caller("<x/>").is_err());
    }
}
