//! Test support: moto's server on loopback (from the test venv) and raw AWS
//! query-API calls signed with SigV4, to build IAM roles, instance profiles,
//! instances and AssumeRole sessions the way EC2 hands them to a node.
//! Included with `#[path]` by the test crates that need it. moto missing:
//! skip locally, panic under CI=true.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// The includer declares `mod venv` (tests/support/venv.rs) beside this module.
#[allow(unused_imports)]
pub use super::venv::{free_port, required, venv, venv_tool};

pub fn wait_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited early: {st}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port}");
}

/// moto's server on a loopback port, killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Option<Self> {
        let bin = venv_tool("moto_server")?;
        let port = free_port();
        let mut child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        wait_port(port, &mut child, "moto_server");
        Some(Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Environment for a child process using this moto.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// AWS credentials (moto accepts any; AssumeRole ones carry a session token).
#[derive(Clone)]
pub struct Creds {
    pub access: String,
    pub secret: String,
    pub session: Option<String>,
}

impl Creds {
    /// moto's default administrator.
    pub fn admin() -> Self {
        Self {
            access: "testing".into(),
            secret: "testing".into(),
            session: None,
        }
    }
}

/// Sign a POST with SigV4 for us-east-1; (headers to send, including the signature).
pub fn sigv4(
    creds: &Creds,
    service: &str,
    url: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let host = reqwest::Url::parse(url).unwrap();
    let host = match host.port() {
        Some(p) => format!("{}:{p}", host.host_str().unwrap()),
        None => host.host_str().unwrap().to_string(),
    };
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host),
        (
            "content-type".into(),
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        ),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let identity = aws_credential_types::Credentials::new(
        &creds.access,
        &creds.secret,
        creds.session.clone(),
        None,
        "test",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    for (k, v) in instructions.headers() {
        headers.push((k.to_string(), v.to_string()));
    }
    headers
}

/// An AWS query API call to `endpoint` (moto); the response XML.
pub async fn query(
    endpoint: &str,
    creds: &Creds,
    service: &str,
    params: &[(&str, &str)],
) -> String {
    let body: String = params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let url = format!("{endpoint}/");
    let headers = sigv4(creds, service, &url, &body, &[]);
    // reqwest is built without a provider: a test that reaches here first
    // in its process must install ring itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut req = reqwest::Client::new().post(&url).body(body.clone());
    for (k, v) in &headers {
        if k != "host" {
            req = req.header(k, v);
        }
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{service} {params:?}: {status} {text}");
    text
}

/// Percent-encoding for query parameters (RFC 3986 unreserved kept).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of the first `<tag>` in `text`.
pub fn xml<'a>(text: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("no {tag} in {text}"))
        + open.len();
    let end = text[start..].find(&format!("</{tag}>")).unwrap();
    &text[start..start + end]
}

/// An IAM role EC2 may assume (trust: ec2.amazonaws.com only); its ARN.
pub async fn create_role(endpoint: &str, admin: &Creds, name: &str) -> String {
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    .to_string();
    let created = query(
        endpoint,
        admin,
        "iam",
        &[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", name),
            ("AssumeRolePolicyDocument", &trust),
        ],
    )
    .await;
    xml(&created, "Arn").to_string()
}

/// An instance profile `name` holding the role `name`.
pub async fn create_instance_profile(endpoint: &str, admin: &Creds, name: &str) {
    for (action, extra) in [
        ("CreateInstanceProfile", None),
        ("AddRoleToInstanceProfile", Some(("RoleName", name))),
    ] {
        let mut p = vec![
            ("Action", action),
            ("Version", "2010-05-08"),
            ("InstanceProfileName", name),
        ];
        p.extend(extra);
        query(endpoint, admin, "iam", &p).await;
    }
}

/// Credentials of `role_arn` with session name `session` (AssumeRole).
pub async fn assume_role(endpoint: &str, admin: &Creds, role_arn: &str, session: &str) -> Creds {
    let assumed = query(
        endpoint,
        admin,
        "sts",
        &[
            ("Action", "AssumeRole"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn),
            ("RoleSessionName", session),
        ],
    )
    .await;
    Creds {
        access: xml(&assumed, "AccessKeyId").to_string(),
        secret: xml(&assumed, "SecretAccessKey").to_string(),
        session: Some(xml(&assumed, "SessionToken").to_string()),
    }
}

/// A running instance and the credentials EC2 would give it.
pub struct Instance {
    pub id: String,
    pub dns: String,
    pub ip: String,
    pub creds: Creds,
}

/// A running instance with instance profile `profile` and `tags`, and
/// credentials from AssumeRole on `role_arn` with the instance id as session
/// name (what EC2 gives the instance).
pub async fn instance(
    endpoint: &str,
    admin: &Creds,
    profile: &str,
    role_arn: &str,
    tags: &[(&str, &str)],
) -> Instance {
    let mut params: Vec<(String, String)> = [
        ("Action", "RunInstances"),
        ("Version", "2016-11-15"),
        ("ImageId", "ami-03cf127a"),
        ("MinCount", "1"),
        ("MaxCount", "1"),
        ("InstanceType", "t3.micro"),
        ("IamInstanceProfile.Name", profile),
        ("TagSpecification.1.ResourceType", "instance"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (i, (k, v)) in tags.iter().enumerate() {
        params.push((
            format!("TagSpecification.1.Tag.{}.Key", i + 1),
            k.to_string(),
        ));
        params.push((
            format!("TagSpecification.1.Tag.{}.Value", i + 1),
            v.to_string(),
        ));
    }
    let refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let run = query(endpoint, admin, "ec2", &refs).await;
    let id = xml(&run, "instanceId").to_string();
    let dns = xml(&run, "privateDnsName").to_string();
    let ip = xml(&run, "privateIpAddress").to_string();
    let creds = assume_role(endpoint, admin, role_arn, &id).await;
    Instance { id, dns, ip, creds }
}
