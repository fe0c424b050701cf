//! Who the etcd peers are.
//!
//! - `static`: the `--peers name=ip,...` list; a bootstrap needs all of them.
//! - `aws`: the auto scaling group of this instance
//!   (`DescribeAutoScalingInstances`), the group's desired capacity and its
//!   `InService`/`Pending*` instances (`DescribeAutoScalingGroups`), and each
//!   instance's private IP and private DNS name (`DescribeInstances`); the
//!   DNS name is the node name, as in the kubelet and etcd certificates.
//!
//! The AWS calls are Query API POSTs signed with SigV4 (no service SDK: they
//! are three calls), credentials and region from the SDK's standard chain,
//! endpoints from `AWS_ENDPOINT_URL_AUTO_SCALING` / `AWS_ENDPOINT_URL_EC2`,
//! then `AWS_ENDPOINT_URL`, then the regional default. `NextToken` is followed.

use super::plan::Peer;
use super::xml::{self, Element};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Auto Scaling Query API version.
pub const AUTOSCALING_VERSION: &str = "2011-01-01";
/// EC2 Query API version.
pub const EC2_VERSION: &str = "2016-11-15";

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// Local: a bad `--peers` list, no region, no credentials, not in a group.
    #[error("{0}")]
    Config(String),
    /// AWS refused (4xx other than throttling): final.
    #[error("{action} refused ({status}): {code}: {message}")]
    Refused {
        /// The API action.
        action: String,
        /// HTTP status.
        status: u16,
        /// AWS error code.
        code: String,
        /// AWS error message.
        message: String,
    },
    /// AWS unreachable, throttling or 5xx: worth retrying.
    #[error("{0}")]
    Unavailable(String),
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The peers with an address, sorted by name.
    pub peers: Vec<Peer>,
    /// How many peers a bootstrap waits for.
    pub expected: usize,
}

/// Parse `name=ip,name=ip,...` (every peer, this node included).
pub fn parse_static(list: &str) -> Result<Discovered, DiscoverError> {
    let mut peers = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, ip) = item
            .split_once('=')
            .ok_or_else(|| DiscoverError::Config(format!("--peers: {item:?} is not name=ip")))?;
        let ip: IpAddr = ip.trim().parse().map_err(|_| {
            DiscoverError::Config(format!("--peers: {ip:?} in {item:?} is not an IP address"))
        })?;
        let name = name.trim();
        super::check_name("--peers name", name).map_err(DiscoverError::Config)?;
        peers.push(Peer {
            name: name.to_string(),
            ip,
        });
    }
    if peers.is_empty() {
        return Err(DiscoverError::Config(
            "--discover static needs --peers name=ip,...".into(),
        ));
    }
    peers.sort();
    for w in peers.windows(2) {
        if w[0].name == w[1].name {
            return Err(DiscoverError::Config(format!(
                "--peers lists {} twice",
                w[0].name
            )));
        }
    }
    if let Some(dup) = peers
        .iter()
        .enumerate()
        .find(|(i, p)| peers[i + 1..].iter().any(|q| q.ip == p.ip))
    {
        return Err(DiscoverError::Config(format!(
            "--peers lists {} twice",
            dup.1.ip
        )));
    }
    let expected = peers.len();
    Ok(Discovered { peers, expected })
}

/// A signed Query API client for Auto Scaling and EC2.
pub struct Aws {
    http: reqwest::Client,
    sdk: aws_config::SdkConfig,
    region: String,
    autoscaling: String,
    ec2: String,
}

impl std::fmt::Debug for Aws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aws")
            .field("region", &self.region)
            .field("autoscaling", &self.autoscaling)
            .field("ec2", &self.ec2)
            .finish_non_exhaustive()
    }
}

/// The endpoint of a service: its own variable, the SDK's endpoint URL
/// (`AWS_ENDPOINT_URL`), else `https://<prefix>.<region>.amazonaws.com[.cn]`.
fn endpoint(var: &str, sdk: Option<&str>, prefix: &str, region: &str) -> String {
    let env = std::env::var(var).ok().filter(|v| !v.is_empty());
    let e = env.or_else(|| sdk.map(str::to_string)).unwrap_or_else(|| {
        let suffix = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        format!("https://{prefix}.{region}.{suffix}")
    });
    if e.ends_with('/') { e } else { format!("{e}/") }
}

/// `application/x-www-form-urlencoded` value (RFC 3986 unreserved kept).
fn form(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Aws {
    /// Credentials and region from the standard chain; endpoints from the environment.
    pub async fn load() -> Result<Self, DiscoverError> {
        use aws_smithy_http_client::{Builder, tls};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .load()
            .await;
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            DiscoverError::Config("no AWS region (AWS_REGION or the instance's)".into())
        })?;
        let autoscaling = endpoint(
            "AWS_ENDPOINT_URL_AUTO_SCALING",
            sdk.endpoint_url(),
            "autoscaling",
            &region,
        );
        let ec2 = endpoint("AWS_ENDPOINT_URL_EC2", sdk.endpoint_url(), "ec2", &region);
        for u in [&autoscaling, &ec2] {
            let ok = reqwest::Url::parse(u)
                .is_ok_and(|p| matches!(p.scheme(), "https" | "http") && p.host_str().is_some());
            if !ok {
                return Err(DiscoverError::Config(format!("invalid AWS endpoint {u:?}")));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("node-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DiscoverError::Config(e.to_string()))?;
        Ok(Self {
            http,
            sdk,
            region,
            autoscaling,
            ec2,
        })
    }

    /// One signed Query API call; the answer's root element.
    async fn call(
        &self,
        service: &str,
        params: &[(String, String)],
    ) -> Result<Element, DiscoverError> {
        use aws_credential_types::provider::ProvideCredentials as _;
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let (url, version) = match service {
            "autoscaling" => (&self.autoscaling, AUTOSCALING_VERSION),
            _ => (&self.ec2, EC2_VERSION),
        };
        let action = params
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let body = std::iter::once(("Version".to_string(), version.to_string()))
            .chain(params.iter().cloned())
            .map(|(k, v)| format!("{}={}", form(&k), form(&v)))
            .collect::<Vec<_>>()
            .join("&");
        let provider = self
            .sdk
            .credentials_provider()
            .ok_or_else(|| DiscoverError::Config("no AWS credentials provider".into()))?;
        let creds = provider.provide_credentials().await.map_err(|e| {
            DiscoverError::Config(format!(
                "no AWS credentials (environment, profile or instance metadata): {e}"
            ))
        })?;
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| DiscoverError::Config(format!("endpoint {url}: {e}")))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(DiscoverError::Config(format!("endpoint {url} has no host"))),
        };
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            (
                "content-type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            ),
        ];
        let identity = creds.into();
        let signing = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| DiscoverError::Config(format!("signing parameters: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| DiscoverError::Config(format!("signing: {e}")))?;
        let (instructions, _) = sign(signable, &signing)
            .map_err(|e| DiscoverError::Config(format!("signing: {e}")))?
            .into_parts();
        for (k, v) in instructions.headers() {
            headers.push((k.to_string(), v.to_string()));
        }
        let mut req = self.http.post(url.as_str()).body(body);
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| DiscoverError::Unavailable(format!("{action} at {url}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| DiscoverError::Unavailable(format!("{action} at {url}: {e}")))?;
        let root = xml::parse(&text);
        if (200..300).contains(&status) {
            return root.map_err(|e| DiscoverError::Unavailable(format!("{action}: {e}")));
        }
        // <ErrorResponse><Error><Code> (Auto Scaling), <Response><Errors><Error><Code> (EC2).
        let (code, message) = root
            .ok()
            .and_then(|r| {
                let e = r.at(&["Error"]).or_else(|| r.at(&["Errors", "Error"]))?;
                Some((
                    e.text_at(&["Code"]).unwrap_or("").to_string(),
                    e.text_at(&["Message"]).unwrap_or("").to_string(),
                ))
            })
            .unwrap_or_default();
        let throttled = matches!(
            code.as_str(),
            "Throttling" | "ThrottlingException" | "RequestLimitExceeded"
        );
        if (400..500).contains(&status) && !throttled {
            return Err(DiscoverError::Refused {
                action,
                status,
                code,
                message,
            });
        }
        Err(DiscoverError::Unavailable(format!(
            "{action}: {status} {code} {message}"
        )))
    }

    /// `call` repeated with each answer's `NextToken` (at `token_path`).
    async fn pages(
        &self,
        service: &str,
        params: &[(String, String)],
        token_path: &[&str],
    ) -> Result<Vec<Element>, DiscoverError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut p = params.to_vec();
            if let Some(t) = &next {
                p.push(("NextToken".into(), t.clone()));
            }
            let page = self.call(service, &p).await?;
            next = page.text_at(token_path).map(str::to_string);
            out.push(page);
            if next.is_none() || out.len() >= 100 {
                return Ok(out);
            }
        }
    }

    /// The peers in the auto scaling group of `instance_id`.
    pub async fn peers(&self, instance_id: &str) -> Result<Discovered, DiscoverError> {
        let p = |kv: &[(&str, &str)]| -> Vec<(String, String)> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let r = self
            .call(
                "autoscaling",
                &p(&[
                    ("Action", "DescribeAutoScalingInstances"),
                    ("InstanceIds.member.1", instance_id),
                ]),
            )
            .await?;
        let group = r
            .text_at(&[
                "DescribeAutoScalingInstancesResult",
                "AutoScalingInstances",
                "member",
                "AutoScalingGroupName",
            ])
            .ok_or_else(|| {
                DiscoverError::Config(format!(
                    "instance {instance_id} is in no auto scaling group"
                ))
            })?
            .to_string();
        self.group_peers(&group).await
    }

    /// The peers in the auto scaling group `group`.
    pub async fn group_peers(&self, group: &str) -> Result<Discovered, DiscoverError> {
        let p = |kv: &[(&str, &str)]| -> Vec<(String, String)> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let pages = self
            .pages(
                "autoscaling",
                &p(&[
                    ("Action", "DescribeAutoScalingGroups"),
                    ("AutoScalingGroupNames.member.1", group),
                ]),
                &["DescribeAutoScalingGroupsResult", "NextToken"],
            )
            .await?;
        let (expected, ids) = group_instances(&pages, group)?;
        tracing::debug!(%group, expected, instances = ?ids, "auto scaling group");
        let mut peers = Vec::new();
        // DescribeInstances takes a bounded id list: ask in chunks.
        for chunk in ids.chunks(100) {
            let mut params = p(&[("Action", "DescribeInstances")]);
            for (i, id) in chunk.iter().enumerate() {
                params.push((format!("InstanceId.{}", i + 1), id.clone()));
            }
            let pages = self.pages("ec2", &params, &["nextToken"]).await?;
            peers.extend(instance_peers(&pages));
        }
        peers.sort();
        peers.dedup();
        Ok(Discovered { peers, expected })
    }
}

/// The group's desired capacity and its live instances (InService, Pending*).
pub fn group_instances(
    pages: &[Element],
    group: &str,
) -> Result<(usize, Vec<String>), DiscoverError> {
    let g = pages
        .iter()
        .filter_map(|p| p.at(&["DescribeAutoScalingGroupsResult", "AutoScalingGroups"]))
        .flat_map(|gs| gs.all("member"))
        .find(|g| g.text_at(&["AutoScalingGroupName"]) == Some(group))
        .ok_or_else(|| DiscoverError::Config(format!("auto scaling group {group} not found")))?;
    let expected = g
        .text_at(&["DesiredCapacity"])
        .and_then(|d| d.parse::<usize>().ok())
        .ok_or_else(|| {
            DiscoverError::Unavailable(format!("group {group}: no DesiredCapacity in the answer"))
        })?;
    let mut ids: Vec<String> = g
        .at(&["Instances"])
        .into_iter()
        .flat_map(|i| i.all("member"))
        .filter(|m| {
            m.text_at(&["LifecycleState"])
                .is_some_and(|s| s == "InService" || s.starts_with("Pending"))
        })
        .filter_map(|m| m.text_at(&["InstanceId"]).map(str::to_string))
        .collect();
    ids.sort();
    ids.dedup();
    Ok((expected, ids))
}

/// The instances that have a private IP and DNS name, as peers.
pub fn instance_peers(pages: &[Element]) -> Vec<Peer> {
    pages
        .iter()
        .filter_map(|p| p.child("reservationSet"))
        .flat_map(|rs| rs.all("item"))
        .filter_map(|r| r.child("instancesSet"))
        .flat_map(|is| is.all("item"))
        .filter(|i| {
            !matches!(
                i.text_at(&["instanceState", "name"]),
                Some("shutting-down" | "terminated" | "stopping" | "stopped")
            )
        })
        .filter_map(|i| {
            let name = i.text_at(&["privateDnsName"])?;
            let ip = i.text_at(&["privateIpAddress"])?.parse().ok()?;
            Some(Peer {
                name: name.to_string(),
                ip,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_peers_parse_sorted_and_refuse_duplicates() {
        let d = parse_static("b=10.0.0.2, a=10.0.0.1").unwrap();
        assert_eq!(d.expected, 2);
        assert_eq!(d.peers[0].name, "a");
        for bad in [
            "",
            "a",
            "a=x",
            "a=10.0.0.1,a=10.0.0.2",
            "a=10.0.0.1,b=10.0.0.1",
            "a b=10.0.0.1",
        ] {
            assert!(parse_static(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_and_instances_from_query_answers() {
        let g = xml::parse(
            r#"<DescribeAutoScalingGroupsResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">
<DescribeAutoScalingGroupsResult><AutoScalingGroups><member>
<AutoScalingGroupName>etcd</AutoScalingGroupName><DesiredCapacity>3</DesiredCapacity>
<Instances>
<member><InstanceId>i-b</InstanceId><LifecycleState>InService</LifecycleState></member>
<member><InstanceId>i-a</InstanceId><LifecycleState>Pending:Wait</LifecycleState></member>
<member><InstanceId>i-c</InstanceId><LifecycleState>Terminating</LifecycleState></member>
</Instances></member></AutoScalingGroups></DescribeAutoScalingGroupsResult>
</DescribeAutoScalingGroupsResponse>"#,
        )
        .unwrap();
        assert_eq!(
            group_instances(std::slice::from_ref(&g), "etcd").unwrap(),
            (3, vec!["i-a".to_string(), "i-b".to_string()])
        );
        assert!(group_instances(&[g], "other").is_err());
        let i = xml::parse(
            r#"<DescribeInstancesResponse><reservationSet><item><instancesSet>
<item><instanceId>i-a</instanceId><instanceState><name>running</name></instanceState>
<privateDnsName>ip-10-0-0-1.ec2.internal</privateDnsName><privateIpAddress>10.0.0.1</privateIpAddress></item>
<item><instanceId>i-b</instanceId><instanceState><name>pending</name></instanceState><privateDnsName/></item>
<item><instanceId>i-c</instanceId><instanceState><name>terminated</name></instanceState>
<privateDnsName>ip-10-0-0-3.ec2.internal</privateDnsName><privateIpAddress>10.0.0.3</privateIpAddress></item>
</instancesSet></item></reservationSet></DescribeInstancesResponse>"#,
        )
        .unwrap();
        assert_eq!(
            instance_peers(&[i]),
            [Peer {
                name: "ip-10-0-0-1.ec2.internal".into(),
                ip: "10.0.0.1".parse().unwrap()
            }]
        );
    }

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
        assert_eq!(form("a b/="), "a%20b%2F%3D");
    }
}
