//! Who the etcd peers are.
//!
//! - `static`: the `--peers name=ip,...` list; a bootstrap needs all of them.
//! - `aws`: the auto scaling group of this instance
//!   (`DescribeAutoScalingInstances`), the group's desired capacity and its
//!   `InService`/`Pending*` instances (`DescribeAutoScalingGroups`), and each
//!   instance's private IP and private DNS name (`DescribeInstances`); the
//!   DNS name is the node name, as in the kubelet and etcd certificates.
//!
//! The AWS calls are Query API POSTs (no service SDK: they are three calls)
//! signed and sent by [`crate::aws::Aws`]: credentials and region from the
//! SDK's standard chain, endpoints from `AWS_ENDPOINT_URL_AUTO_SCALING` /
//! `AWS_ENDPOINT_URL_EC2`, then `AWS_ENDPOINT_URL`, then the regional default.
//! `NextToken` is followed.

use super::plan::Peer;
use crate::aws::xml::{self, Element};
use crate::aws::{Aws, AwsError, Flavour, Request, encode};
use std::net::IpAddr;

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

/// The Auto Scaling and EC2 Query API calls of discovery, signed by
/// [`crate::aws`].
#[derive(Debug)]
pub struct AwsDiscovery {
    aws: Aws,
    autoscaling: String,
    ec2: String,
}

impl From<AwsError> for DiscoverError {
    fn from(e: AwsError) -> Self {
        match e {
            AwsError::Config(m) => Self::Config(m),
            AwsError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl AwsDiscovery {
    /// Credentials and region from the standard chain; endpoints from the environment.
    pub async fn load() -> Result<Self, DiscoverError> {
        let aws = Aws::load().await?;
        let autoscaling = aws.endpoint("AWS_ENDPOINT_URL_AUTO_SCALING", "autoscaling")?;
        let ec2 = aws.endpoint("AWS_ENDPOINT_URL_EC2", "ec2")?;
        Ok(Self {
            aws,
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
            .map(|(k, v)| format!("{}={}", encode(&k, false), encode(&v, false)))
            .collect::<Vec<_>>()
            .join("&");
        let req = Request {
            method: "POST",
            url,
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
            body: body.as_bytes(),
        };
        let resp = self
            .aws
            .send(&action, service, Flavour::Standard, &req)
            .await?;
        let status = resp.status;
        let text = String::from_utf8_lossy(&resp.body);
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
}
