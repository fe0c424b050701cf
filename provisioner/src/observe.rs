//! Read what exists: EC2 resources by the cluster's owner tag (so orphans and
//! a lost state are found), everything with a fixed name by that name. Only
//! Describe/List/Get calls. The result has the shape `Resource::props` has.

use crate::aws::{Clients, code, err, policy_json};
use crate::model::{Desired, Kind, Known, Resource, Rule, Source, TAG_KEY, owner_tag};
use crate::plan::Observed;
use anyhow::Context;
use base64::Engine;
use serde_json::json;
use std::collections::BTreeMap;

/// Everything observed, by key, and the id → key map of EC2 resources.
#[derive(Debug, Default, Clone)]
pub struct World {
    /// Observed resources by key.
    pub by_key: BTreeMap<String, Observed>,
    /// AWS id (subnet, SG, gateway, target group ARN...) → key.
    pub id_to_key: BTreeMap<String, String>,
}

impl World {
    /// Attributes of every observed resource (id, arn, dns...), for references.
    pub fn known(&self) -> Known {
        self.by_key
            .iter()
            .map(|(k, o)| {
                let mut a = o.attrs.clone();
                a.insert("id".into(), o.id.clone());
                (k.clone(), a)
            })
            .collect()
    }

    fn key_of(&self, id: &str) -> String {
        self.id_to_key
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("(foreign {id})"))
    }

    fn insert(&mut self, o: Observed) {
        self.id_to_key.insert(o.id.clone(), o.key.clone());
        if let Some(arn) = o.attrs.get("arn") {
            self.id_to_key.insert(arn.clone(), o.key.clone());
        }
        self.by_key.insert(o.key.clone(), o);
    }
}

fn ec2_tag(tags: &[aws_sdk_ec2::types::Tag], key: &str) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value().map(str::to_string))
}

fn owner_filter(cluster: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{}", owner_tag(cluster)))
        .values("owned")
        .build()
}

fn obs(key: String, kind: Kind, id: String, owned: bool) -> Observed {
    Observed {
        key,
        kind,
        id,
        owned,
        adoptable: false,
        props: BTreeMap::new(),
        attrs: BTreeMap::new(),
    }
}

/// Canonical text of EC2 ingress permissions, as `Rule::canonical` writes it.
fn ingress(perms: &[aws_sdk_ec2::types::IpPermission], world: &World) -> Vec<String> {
    let mut out = Vec::new();
    for p in perms {
        let protocol = p.ip_protocol().unwrap_or("-1").to_string();
        let (from, to) = if protocol == "-1" {
            (-1, -1)
        } else {
            (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1))
        };
        for r in p.ip_ranges() {
            if let Some(c) = r.cidr_ip() {
                out.push(
                    Rule {
                        protocol: protocol.clone(),
                        from,
                        to,
                        source: Source::Cidr(c.to_string()),
                    }
                    .canonical(),
                );
            }
        }
        for g in p.user_id_group_pairs() {
            if let Some(id) = g.group_id() {
                out.push(
                    Rule {
                        protocol: protocol.clone(),
                        from,
                        to,
                        source: Source::Group(world.key_of(id)),
                    }
                    .canonical(),
                );
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The comment our private zones carry, so an untagged one (an apply cut off
/// between create and tag) is recognised.
pub fn zone_comment(owned_tag: &str) -> String {
    format!("private zone of {owned_tag}")
}

/// Observe the cluster's resources.
pub async fn observe(aws: &Clients, cluster: &str, desired: &[Resource]) -> anyhow::Result<World> {
    let mut w = World::default();
    observe_ec2(aws, cluster, &mut w).await?;
    let owned_tag = owner_tag(cluster);
    for r in desired {
        match &r.desired {
            Desired::Bucket { name, .. } => {
                observe_bucket(aws, &owned_tag, r, name, &mut w).await?
            }
            Desired::KmsKey { alias } => observe_kms(aws, &owned_tag, r, alias, &mut w).await?,
            Desired::IamRole { name, .. } => observe_role(aws, &owned_tag, r, name, &mut w).await?,
            Desired::InstanceProfile { name } => {
                observe_profile(aws, &owned_tag, r, name, &mut w).await?
            }
            Desired::Object { bucket, key, .. } => {
                observe_object(aws, r, bucket, key, &mut w).await?
            }
            Desired::Trail { name, .. } => observe_trail(aws, &owned_tag, r, name, &mut w).await?,
            _ => {}
        }
    }
    // Target groups before load balancers, listeners after both.
    for r in desired {
        if let Desired::TargetGroup { name, .. } = &r.desired {
            observe_tg(aws, &owned_tag, r, name, &mut w).await?;
        }
    }
    for r in desired {
        if let Desired::LoadBalancer { name, .. } = &r.desired {
            observe_lb(aws, &owned_tag, r, name, &mut w).await?;
        }
    }
    for r in desired {
        if let Desired::Listener { lb, port, .. } = &r.desired {
            observe_listener(aws, r, lb, *port, &mut w).await?;
        }
    }
    for r in desired {
        if let Desired::HostedZone { name } = &r.desired {
            observe_zone(aws, &owned_tag, r, name, &mut w).await?;
        }
    }
    for r in desired {
        if let Desired::Record { name, .. } = &r.desired {
            observe_record(aws, r, name, &mut w).await?;
        }
    }
    for r in desired {
        if let Desired::LaunchTemplate { name, .. } = &r.desired {
            observe_lt(aws, &owned_tag, r, name, &mut w).await?;
        }
    }
    let names: Vec<(String, String)> = desired
        .iter()
        .filter_map(|r| match &r.desired {
            Desired::AutoScalingGroup { name, .. } => Some((r.key.clone(), name.clone())),
            _ => None,
        })
        .collect();
    observe_asgs(aws, &owned_tag, &names, &mut w).await?;
    Ok(w)
}

async fn observe_ec2(aws: &Clients, cluster: &str, w: &mut World) -> anyhow::Result<()> {
    let f = || owner_filter(cluster);
    let ec2 = &aws.ec2;
    let vpcs = ec2
        .describe_vpcs()
        .filters(f())
        .send()
        .await
        .map_err(err)
        .context("while describing VPCs")?;
    for v in vpcs.vpcs() {
        let (Some(id), Some(key)) = (v.vpc_id(), ec2_tag(v.tags(), TAG_KEY)) else {
            continue;
        };
        let mut o = obs(key, Kind::Vpc, id.into(), true);
        o.props
            .insert("cidr".into(), json!(v.cidr_block().unwrap_or_default()));
        use aws_sdk_ec2::types::VpcAttributeName;
        let support = ec2
            .describe_vpc_attribute()
            .vpc_id(id)
            .attribute(VpcAttributeName::EnableDnsSupport)
            .send()
            .await
            .map_err(err)?;
        let hostnames = ec2
            .describe_vpc_attribute()
            .vpc_id(id)
            .attribute(VpcAttributeName::EnableDnsHostnames)
            .send()
            .await
            .map_err(err)?;
        let on = support
            .enable_dns_support()
            .and_then(|a| a.value())
            .unwrap_or(false)
            && hostnames
                .enable_dns_hostnames()
                .and_then(|a| a.value())
                .unwrap_or(false);
        o.props.insert("dns".into(), json!(on));
        w.insert(o);
    }
    let subnets = ec2
        .describe_subnets()
        .filters(f())
        .send()
        .await
        .map_err(err)
        .context("while describing subnets")?;
    for s in subnets.subnets() {
        let (Some(id), Some(key)) = (s.subnet_id(), ec2_tag(s.tags(), TAG_KEY)) else {
            continue;
        };
        let mut o = obs(key, Kind::Subnet, id.into(), true);
        o.props
            .insert("cidr".into(), json!(s.cidr_block().unwrap_or_default()));
        o.props.insert(
            "az".into(),
            json!(s.availability_zone().unwrap_or_default()),
        );
        o.props.insert(
            "public".into(),
            json!(s.map_public_ip_on_launch().unwrap_or(false)),
        );
        w.insert(o);
    }
    let igws = ec2
        .describe_internet_gateways()
        .filters(f())
        .send()
        .await
        .map_err(err)
        .context("while describing internet gateways")?;
    for g in igws.internet_gateways() {
        let (Some(id), Some(key)) = (g.internet_gateway_id(), ec2_tag(g.tags(), TAG_KEY)) else {
            continue;
        };
        let mut o = obs(key, Kind::InternetGateway, id.into(), true);
        let attached: Vec<String> = g
            .attachments()
            .iter()
            .filter_map(|a| a.vpc_id().map(str::to_string))
            .collect();
        o.props
            .insert("attached".into(), json!(!attached.is_empty()));
        o.attrs.insert("vpcs".into(), attached.join(","));
        w.insert(o);
    }
    let eips = ec2
        .describe_addresses()
        .filters(f())
        .send()
        .await
        .map_err(err)
        .context("while describing addresses")?;
    for a in eips.addresses() {
        let (Some(id), Some(key)) = (a.allocation_id(), ec2_tag(a.tags(), TAG_KEY)) else {
            continue;
        };
        w.insert(obs(key, Kind::ElasticIp, id.into(), true));
    }
    let nats = ec2
        .describe_nat_gateways()
        .filter(f())
        .send()
        .await
        .map_err(err)
        .context("while describing NAT gateways")?;
    for n in nats.nat_gateways() {
        let state = n
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if state == "deleted" || state == "deleting" || state == "failed" {
            continue;
        }
        let (Some(id), Some(key)) = (n.nat_gateway_id(), ec2_tag(n.tags(), TAG_KEY)) else {
            continue;
        };
        let mut o = obs(key, Kind::NatGateway, id.into(), true);
        o.props.insert(
            "subnet".into(),
            json!(w.key_of(n.subnet_id().unwrap_or_default())),
        );
        w.insert(o);
    }
    let sgs = ec2
        .describe_security_groups()
        .filters(f())
        .send()
        .await
        .map_err(err)
        .context("while describing security groups")?;
    for g in sgs.security_groups() {
        let (Some(id), Some(key)) = (g.group_id(), ec2_tag(g.tags(), TAG_KEY)) else {
            continue;
        };
        w.insert(obs(key, Kind::SecurityGroup, id.into(), true));
    }
    // Rules after all groups are known, so SG sources map to keys.
    for g in sgs.security_groups() {
        let Some(key) = ec2_tag(g.tags(), TAG_KEY) else {
            continue;
        };
        let rules = ingress(g.ip_permissions(), w);
        if let Some(o) = w.by_key.get_mut(&key) {
            o.props.insert("ingress".into(), json!(rules));
        }
    }
    let rts = ec2
        .describe_route_tables()
        .filters(f())
        .send()
        .await
        .map_err(err)
        .context("while describing route tables")?;
    for t in rts.route_tables() {
        let (Some(id), Some(key)) = (t.route_table_id(), ec2_tag(t.tags(), TAG_KEY)) else {
            continue;
        };
        let mut o = obs(key, Kind::RouteTable, id.into(), true);
        let target = t
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
            .and_then(|r| r.nat_gateway_id().or(r.gateway_id()))
            .map(|id| w.key_of(id))
            .unwrap_or_default();
        o.props.insert("default_route".into(), json!(target));
        let mut subnets = Vec::new();
        let mut assocs = Vec::new();
        for a in t.associations() {
            if let (Some(s), Some(aid)) = (a.subnet_id(), a.route_table_association_id()) {
                subnets.push(w.key_of(s));
                assocs.push(aid.to_string());
            }
        }
        subnets.sort();
        o.props.insert("subnets".into(), json!(subnets));
        o.attrs.insert("associations".into(), assocs.join(","));
        w.insert(o);
    }
    Ok(())
}

/// An object in one of our buckets, with the SHA-256 we stored in its metadata.
async fn observe_trail(
    aws: &Clients,
    owned_tag: &str,
    r: &Resource,
    name: &str,
    w: &mut World,
) -> anyhow::Result<()> {
    let d = aws
        .cloudtrail
        .describe_trails()
        .trail_name_list(name)
        .send()
        .await
        .map_err(err)
        .context("while describing CloudTrail trails")?;
    let Some(t) = d.trail_list().iter().find(|t| t.name() == Some(name)) else {
        return Ok(());
    };
    let arn = t.trail_arn().unwrap_or_default().to_string();
    let tags = aws
        .cloudtrail
        .list_tags()
        .resource_id_list(&arn)
        .send()
        .await
        .map_err(err)?;
    let owned = tags.resource_tag_list().iter().any(|rt| {
        rt.tags_list()
            .iter()
            .any(|t| t.key() == owned_tag && t.value() == Some("owned"))
    });
    let status = aws
        .cloudtrail
        .get_trail_status()
        .name(name)
        .send()
        .await
        .map_err(err)?;
    let mut o = obs(r.key.clone(), Kind::Trail, name.into(), owned);
    o.props.insert(
        "bucket".into(),
        json!(t.s3_bucket_name().unwrap_or_default()),
    );
    o.props.insert(
        "prefix".into(),
        json!(t.s3_key_prefix().unwrap_or_default()),
    );
    o.props.insert(
        "multi_region".into(),
        json!(t.is_multi_region_trail().unwrap_or(false)),
    );
    o.props.insert(
        "log_file_validation".into(),
        json!(t.log_file_validation_enabled().unwrap_or(false)),
    );
    o.props.insert(
        "logging".into(),
        json!(status.is_logging().unwrap_or(false)),
    );
    o.attrs.insert("arn".into(), arn);
    w.insert(o);
    Ok(())
}

async fn observe_object(
    aws: &Clients,
    r: &Resource,
    bucket: &str,
    key: &str,
    w: &mut World,
) -> anyhow::Result<()> {
    let head = match aws.s3.head_object().bucket(bucket).key(key).send().await {
        Ok(h) => h,
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => return Ok(()),
        Err(e) => return Err(err(e)).with_context(|| format!("while reading s3://{bucket}/{key}")),
    };
    let mut o = obs(r.key.clone(), Kind::Object, key.into(), true);
    let sha = head
        .metadata()
        .and_then(|m| m.get("sha256"))
        .cloned()
        .unwrap_or_default();
    o.props.insert("sha256".into(), json!(sha));
    o.attrs.insert("bucket".into(), bucket.into());
    w.insert(o);
    Ok(())
}

async fn observe_bucket(
    aws: &Clients,
    owned_tag: &str,
    r: &Resource,
    name: &str,
    w: &mut World,
) -> anyhow::Result<()> {
    let (owned, untagged) = match aws.s3.get_bucket_tagging().bucket(name).send().await {
        Ok(t) => (
            t.tag_set()
                .iter()
                .any(|t| t.key() == owned_tag && t.value() == "owned"),
            t.tag_set().is_empty(),
        ),
        Err(e) => match code(&e).as_deref() {
            Some("NoSuchBucket") => return Ok(()),
            Some("NoSuchTagSet") | Some("NoSuchTagSetError") => (false, true),
            _ => {
                return Err(err(e))
                    .with_context(|| format!("while reading the tags of bucket {name}"));
            }
        },
    };
    let mut o = obs(r.key.clone(), Kind::Bucket, name.into(), owned);
    o.adoptable = untagged;
    o.props.insert("tagged".into(), json!(owned));
    let v = aws
        .s3
        .get_bucket_versioning()
        .bucket(name)
        .send()
        .await
        .map_err(err)?;
    o.props.insert(
        "versioning".into(),
        json!(v.status().map(|s| s.as_str()).unwrap_or("")),
    );
    let enc = match aws.s3.get_bucket_encryption().bucket(name).send().await {
        Ok(e) => e
            .server_side_encryption_configuration()
            .and_then(|c| c.rules().first())
            .and_then(|r| r.apply_server_side_encryption_by_default())
            .map(|d| d.sse_algorithm().as_str().to_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    o.props.insert("encryption".into(), json!(enc));
    let pab = match aws.s3.get_public_access_block().bucket(name).send().await {
        Ok(p) => p.public_access_block_configuration().is_some_and(|c| {
            c.block_public_acls() == Some(true)
                && c.ignore_public_acls() == Some(true)
                && c.block_public_policy() == Some(true)
                && c.restrict_public_buckets() == Some(true)
        }),
        Err(_) => false,
    };
    o.props.insert("public_access_block".into(), json!(pab));
    w.insert(o);
    Ok(())
}

async fn observe_kms(
    aws: &Clients,
    owned_tag: &str,
    r: &Resource,
    alias: &str,
    w: &mut World,
) -> anyhow::Result<()> {
    let mut marker = None;
    let mut target = None;
    loop {
        let page = aws
            .kms
            .list_aliases()
            .set_marker(marker.clone())
            .send()
            .await
            .map_err(err)
            .context("while listing KMS aliases")?;
        if let Some(a) = page
            .aliases()
            .iter()
            .find(|a| a.alias_name() == Some(alias))
        {
            target = a.target_key_id().map(str::to_string);
            break;
        }
        marker = page.next_marker().map(str::to_string);
        if !page.truncated() || marker.is_none() {
            break;
        }
    }
    let has_alias = target.is_some();
    let key_id = match target {
        Some(k) => k,
        // A cut-off apply may have made the key but not its alias: find it by tags.
        None => match kms_by_tag(aws, owned_tag, &r.key).await? {
            Some(k) => k,
            None => return Ok(()),
        },
    };
    let d = aws
        .kms
        .describe_key()
        .key_id(&key_id)
        .send()
        .await
        .map_err(err)?;
    let Some(meta) = d.key_metadata() else {
        return Ok(());
    };
    if meta.key_state().map(|s| s.as_str()) == Some("PendingDeletion") {
        return Ok(());
    }
    let tags = aws
        .kms
        .list_resource_tags()
        .key_id(&key_id)
        .send()
        .await
        .map_err(err)?;
    let owned = tags
        .tags()
        .iter()
        .any(|t| t.tag_key() == owned_tag && t.tag_value() == "owned");
    let mut o = obs(r.key.clone(), Kind::KmsKey, key_id.clone(), owned);
    o.props.insert("enabled".into(), json!(meta.enabled()));
    o.props.insert("alias".into(), json!(has_alias));
    let rotation = aws
        .kms
        .get_key_rotation_status()
        .key_id(&key_id)
        .send()
        .await
        .map(|r| r.key_rotation_enabled())
        .unwrap_or(false);
    o.props.insert("rotation".into(), json!(rotation));
    o.attrs
        .insert("arn".into(), meta.arn().unwrap_or_default().to_string());
    if has_alias {
        o.attrs.insert("alias".into(), alias.to_string());
    }
    w.insert(o);
    Ok(())
}

async fn kms_by_tag(aws: &Clients, owned_tag: &str, key: &str) -> anyhow::Result<Option<String>> {
    let mut marker = None;
    loop {
        let page = aws
            .kms
            .list_keys()
            .set_marker(marker.clone())
            .send()
            .await
            .map_err(err)
            .context("while listing KMS keys")?;
        for k in page.keys() {
            let Some(id) = k.key_id() else { continue };
            let Ok(tags) = aws.kms.list_resource_tags().key_id(id).send().await else {
                continue;
            };
            let has = |k: &str, v: &str| {
                tags.tags()
                    .iter()
                    .any(|t| t.tag_key() == k && t.tag_value() == v)
            };
            if has(owned_tag, "owned") && has(TAG_KEY, key) {
                let d = aws
                    .kms
                    .describe_key()
                    .key_id(id)
                    .send()
                    .await
                    .map_err(err)?;
                if d.key_metadata()
                    .and_then(|m| m.key_state())
                    .map(|s| s.as_str())
                    != Some("PendingDeletion")
                {
                    return Ok(Some(id.to_string()));
                }
            }
        }
        marker = page.next_marker().map(str::to_string);
        if !page.truncated() || marker.is_none() {
            return Ok(None);
        }
    }
}

async fn observe_role(
    aws: &Clients,
    owned_tag: &str,
    r: &Resource,
    name: &str,
    w: &mut World,
) -> anyhow::Result<()> {
    let role = match aws.iam.get_role().role_name(name).send().await {
        Ok(r) => r,
        Err(e) if code(&e).as_deref() == Some("NoSuchEntity") => return Ok(()),
        Err(e) => return Err(err(e)).with_context(|| format!("while reading IAM role {name}")),
    };
    let Some(role) = role.role() else {
        return Ok(());
    };
    let owned = role
        .tags()
        .iter()
        .any(|t| t.key() == owned_tag && t.value() == "owned");
    let mut o = obs(r.key.clone(), Kind::IamRole, name.into(), owned);
    o.props.insert(
        "trust".into(),
        policy_json(role.assume_role_policy_document().unwrap_or_default()),
    );
    let policy = match aws
        .iam
        .get_role_policy()
        .role_name(name)
        .policy_name("cluster")
        .send()
        .await
    {
        Ok(p) => policy_json(p.policy_document()),
        Err(_) => serde_json::Value::Null,
    };
    o.props.insert("policy".into(), policy);
    o.attrs.insert("arn".into(), role.arn().to_string());
    w.insert(o);
    Ok(())
}

async fn observe_profile(
    aws: &Clients,
    owned_tag: &str,
    r: &Resource,
    name: &str,
    w: &mut World,
) -> anyhow::Result<()> {
    let p = match aws
        .iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
    {
        Ok(p) => p,
        Err(e) if code(&e).as_deref() == Some("NoSuchEntity") => return Ok(()),
        Err(e) => {
            return Err(err(e)).with_context(|| format!("while reading instance profile {name}"));
        }
    };
    let Some(p) = p.instance_profile() else {
        return Ok(());
    };
    let owned = p
        .tags()
        .iter()
        .any(|t| t.key() == owned_tag && t.value() == "owned");
    let mut o = obs(r.key.clone(), Kind::InstanceProfile, name.into(), owned);
    let role = p
        .roles()
        .first()
        .map(|r| r.role_name().to_string())
        .unwrap_or_default();
    o.props.insert("role".into(), json!(role));
    o.attrs.insert("arn".into(), p.arn().to_string());
    w.insert(o);
    Ok(())
}

async fn elb_owned(aws: &Clients, owned_tag: &str, arn: &str) -> anyhow::Result<bool> {
    let t = aws
        .elb
        .describe_tags()
        .resource_arns(arn)
        .send()
        .await
        .map_err(err)?;
    Ok(t.tag_descriptions()
        .iter()
        .flat_map(|d| d.tags())
        .any(|t| t.key() == Some(owned_tag) && t.value() == Some("owned")))
}

async fn observe_tg(
    aws: &Clients,
    owned_tag: &str,
    r: &Resource,
    name: &str,
    w: &mut World,
) -> anyhow::Result<()> {
    let tgs = match aws.elb.describe_target_groups().names(name).send().await {
        Ok(t) => t,
        Err(e) if code(&e).as_deref() == Some("TargetGroupNotFound") => return Ok(()),
        Err(e) => return Err(err(e)).with_context(|| format!("while reading target group {name}")),
    };
    let Some(tg) = tgs.target_groups().first() else {
        return Ok(());
    };
    let arn = tg.target_group_arn().unwrap_or_default().to_string();
    let owned = elb_owned(aws, owned_tag, &arn).await?;
    let mut o = obs(r.key.clone(), Kind::TargetGroup, arn.clone(), owned);
    o.props
        .insert("port".into(), json!(tg.port().unwrap_or_default()));
    let hc = match tg.health_check_protocol().map(|p| p.as_str()) {
        Some("HTTPS") | Some("HTTP") => tg.health_check_path().unwrap_or_default().to_string(),
        _ => "tcp".to_string(),
    };
    o.props.insert("health_check".into(), json!(hc));
    o.attrs.insert("arn".into(), arn);
    w.insert(o);
    Ok(())
}

async fn observe_lb(
    aws: &Clients,
    owned_tag: &str,
    r: &Resource,
    name: &str,
    w: &mut World,
) -> anyhow::Result<()> {
    let lbs = match aws.elb.describe_load_balancers().names(name).send().await {
        Ok(t) => t,
        Err(e) if code(&e).as_deref() == Some("LoadBalancerNotFound") => return Ok(()),
        Err(e) => {
            return Err(err(e)).with_context(|| format!("while reading load balancer {name}"));
        }
    };
    let Some(lb) = lbs.load_balancers().first() else {
        return Ok(());
    };
    let arn = lb.load_balancer_arn().unwrap_or_default().to_string();
    let owned = elb_owned(aws, owned_tag, &arn).await?;
    let mut o = obs(r.key.clone(), Kind::LoadBalancer, arn.clone(), owned);
    o.props.insert(
        "internal".into(),
        json!(lb.scheme().map(|s| s.as_str()) == Some("internal")),
    );
    let mut subnets: Vec<String> = lb
        .availability_zones()
        .iter()
        .filter_map(|z| z.subnet_id())
        .map(|s| w.key_of(s))
        .collect();
    subnets.sort();
    o.props.insert("subnets".into(), json!(subnets));
    o.attrs.insert("arn".into(), arn);
    o.attrs
        .insert("dns".into(), lb.dns_name().unwrap_or_default().to_string());
    o.attrs.insert(
        "zone_id".into(),
        lb.canonical_hosted_zone_id()
            .unwrap_or_default()
            .to_string(),
    );
    w.insert(o);
    Ok(())
}

async fn observe_listener(
    aws: &Clients,
    r: &Resource,
    lb: &str,
    port: i32,
    w: &mut World,
) -> anyhow::Result<()> {
    let Some(lb_obs) = w.by_key.get(lb) else {
        return Ok(());
    };
    let (lb_arn, owned) = (lb_obs.id.clone(), lb_obs.owned);
    let ls = aws
        .elb
        .describe_listeners()
        .load_balancer_arn(&lb_arn)
        .send()
        .await
        .map_err(err)?;
    let Some(l) = ls.listeners().iter().find(|l| l.port() == Some(port)) else {
        return Ok(());
    };
    let arn = l.listener_arn().unwrap_or_default().to_string();
    let mut o = obs(r.key.clone(), Kind::Listener, arn, owned);
    o.props.insert("port".into(), json!(port));
    let tg = l
        .default_actions()
        .first()
        .and_then(|a| a.target_group_arn())
        .map(|t| w.key_of(t))
        .unwrap_or_default();
    o.props.insert("target_group".into(), json!(tg));
    w.insert(o);
    Ok(())
}

async fn observe_zone(
    aws: &Clients,
    owned_tag: &str,
    r: &Resource,
    name: &str,
    w: &mut World,
) -> anyhow::Result<()> {
    let fqdn = format!("{name}.");
    let zones = aws
        .r53
        .list_hosted_zones_by_name()
        .dns_name(&fqdn)
        .send()
        .await
        .map_err(err)
        .context("while listing hosted zones")?;
    let Some(z) = zones
        .hosted_zones()
        .iter()
        .find(|z| z.name() == fqdn && z.config().is_some_and(|c| c.private_zone()))
    else {
        return Ok(());
    };
    let id = z.id().trim_start_matches("/hostedzone/").to_string();
    let tags = aws
        .r53
        .list_tags_for_resource()
        .resource_type(aws_sdk_route53::types::TagResourceType::Hostedzone)
        .resource_id(&id)
        .send()
        .await
        .map_err(err)?;
    let tag_list = tags
        .resource_tag_set()
        .map(|s| s.tags().to_vec())
        .unwrap_or_default();
    let owned = tag_list
        .iter()
        .any(|t| t.key() == Some(owned_tag) && t.value() == Some("owned"));
    let marked = z.config().and_then(|c| c.comment()) == Some(zone_comment(owned_tag).as_str());
    let mut o = obs(r.key.clone(), Kind::HostedZone, id, owned);
    o.adoptable = tag_list.is_empty() && marked;
    o.props.insert("private".into(), json!(true));
    o.props.insert("tagged".into(), json!(owned));
    w.insert(o);
    Ok(())
}

async fn observe_record(
    aws: &Clients,
    r: &Resource,
    name: &str,
    w: &mut World,
) -> anyhow::Result<()> {
    let Some(zone) = w.by_key.get("zone") else {
        return Ok(());
    };
    let (zone_id, owned) = (zone.id.clone(), zone.owned);
    let fqdn = format!("{name}.");
    let sets = aws
        .r53
        .list_resource_record_sets()
        .hosted_zone_id(&zone_id)
        .start_record_name(&fqdn)
        .start_record_type(aws_sdk_route53::types::RrType::A)
        .send()
        .await
        .map_err(err)?;
    let Some(rr) = sets
        .resource_record_sets()
        .iter()
        .find(|s| s.name() == fqdn && s.r#type().as_str() == "A")
    else {
        return Ok(());
    };
    let mut o = obs(r.key.clone(), Kind::Record, fqdn, owned);
    let (dns, hz) = rr
        .alias_target()
        .map(|a| (a.dns_name().to_string(), a.hosted_zone_id().to_string()))
        .unwrap_or_default();
    o.props.insert(
        "alias".into(),
        json!(dns.trim_end_matches('.').to_ascii_lowercase()),
    );
    o.attrs.insert("alias_dns".into(), dns);
    o.attrs.insert("alias_zone".into(), hz);
    o.attrs.insert("zone".into(), zone_id);
    w.insert(o);
    Ok(())
}

async fn observe_lt(
    aws: &Clients,
    owned_tag: &str,
    r: &Resource,
    name: &str,
    w: &mut World,
) -> anyhow::Result<()> {
    let lts = aws
        .ec2
        .describe_launch_templates()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("launch-template-name")
                .values(name)
                .build(),
        )
        .send()
        .await
        .map_err(err)
        .with_context(|| format!("while reading launch template {name}"))?;
    let Some(lt) = lts.launch_templates().first() else {
        return Ok(());
    };
    let id = lt.launch_template_id().unwrap_or_default().to_string();
    let owned = lt
        .tags()
        .iter()
        .any(|t| t.key() == Some(owned_tag) && t.value() == Some("owned"));
    let version = lt.default_version_number().unwrap_or(1);
    let mut o = obs(r.key.clone(), Kind::LaunchTemplate, id.clone(), owned);
    let vs = aws
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&id)
        .versions(version.to_string())
        .send()
        .await
        .map_err(err)?;
    if let Some(data) = vs
        .launch_template_versions()
        .first()
        .and_then(|v| v.launch_template_data())
    {
        o.props
            .insert("image".into(), json!(data.image_id().unwrap_or_default()));
        o.props.insert(
            "instance_type".into(),
            json!(data.instance_type().map(|t| t.as_str()).unwrap_or_default()),
        );
        let ebs = data.block_device_mappings().first().and_then(|b| b.ebs());
        o.props.insert(
            "volume_gb".into(),
            json!(ebs.and_then(|e| e.volume_size()).unwrap_or_default()),
        );
        let data_gb = data
            .block_device_mappings()
            .iter()
            .find(|b| b.device_name() == Some(crate::ignition::node::etcd::DATA_DEVICE))
            .and_then(|b| b.ebs())
            .and_then(|e| e.volume_size());
        o.props.insert("data_volume_gb".into(), json!(data_gb));
        o.props.insert(
            "encrypted".into(),
            json!(ebs.and_then(|e| e.encrypted()).unwrap_or(false)),
        );
        o.props.insert(
            "http_tokens".into(),
            json!(
                data.metadata_options()
                    .and_then(|m| m.http_tokens())
                    .map(|t| t.as_str())
                    .unwrap_or_default()
            ),
        );
        let ud = data
            .user_data()
            .and_then(|u| base64::engine::general_purpose::STANDARD.decode(u).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        o.props.insert("user_data".into(), json!(ud));
        o.attrs.insert(
            "image".into(),
            data.image_id().unwrap_or_default().to_string(),
        );
    }
    o.attrs.insert("version".into(), version.to_string());
    w.insert(o);
    Ok(())
}

async fn observe_asgs(
    aws: &Clients,
    owned_tag: &str,
    names: &[(String, String)],
    w: &mut World,
) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let out = aws
        .asg
        .describe_auto_scaling_groups()
        .set_auto_scaling_group_names(Some(names.iter().map(|(_, n)| n.clone()).collect()))
        .send()
        .await
        .map_err(err)
        .context("while describing auto scaling groups")?;
    for g in out.auto_scaling_groups() {
        let name = g.auto_scaling_group_name().unwrap_or_default();
        let Some((key, _)) = names.iter().find(|(_, n)| n == name) else {
            continue;
        };
        if g.status().is_some_and(|s| s.contains("Delete")) {
            continue;
        }
        let owned = g
            .tags()
            .iter()
            .any(|t| t.key() == Some(owned_tag) && t.value() == Some("owned"));
        let mut o = obs(key.clone(), Kind::AutoScalingGroup, name.to_string(), owned);
        o.props
            .insert("min".into(), json!(g.min_size().unwrap_or_default()));
        o.props
            .insert("max".into(), json!(g.max_size().unwrap_or_default()));
        o.props.insert(
            "desired".into(),
            json!(g.desired_capacity().unwrap_or_default()),
        );
        let mut subnets: Vec<String> = g
            .vpc_zone_identifier()
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| w.key_of(s.trim()))
            .collect();
        subnets.sort();
        o.props.insert("subnets".into(), json!(subnets));
        let mut tgs: Vec<String> = g.target_group_arns().iter().map(|a| w.key_of(a)).collect();
        tgs.sort();
        o.props.insert("target_groups".into(), json!(tgs));
        w.insert(o);
    }
    Ok(())
}

/// The launch templates' current AMIs (pinned so a new Flatcar release does
/// not roll the cluster by surprise).
pub fn pinned_images(world: &World) -> BTreeMap<String, String> {
    world
        .by_key
        .iter()
        .filter(|(_, o)| o.kind == Kind::LaunchTemplate)
        .filter_map(|(k, o)| o.attrs.get("image").map(|i| (k.clone(), i.clone())))
        .collect()
}
