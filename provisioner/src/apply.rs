//! Execute a plan: the create, update and delete calls of every kind.
//!
//! Changes run level by level (`Kind::level`); the changes of one level run
//! concurrently. Every created resource is tagged at creation. Deletes retry
//! `DependencyViolation` (and similar "still in use" answers) with backoff;
//! a delete that finds its resource already gone is done (`aws::unless_gone`).
//! A failure stops after the level in flight; what was done stays done and is
//! found again by the next plan, so a re-run converges.

use crate::aws::{Clients, code, err, unless_gone};
use crate::ignition;
use crate::model::{
    AFTER_APPLY, ArtifactBody, BucketPurpose, Desired, Kind, Known, Resource, Rule, Source,
    TAG_COMPONENT, TAG_KEY, owner_tag, render_policy, trust_policy,
};
use crate::observe::World;
use crate::plan::{Action, Change, Plan};
use crate::spec::ClusterSpec;
use anyhow::{Context, anyhow, bail};
use base64::Engine;
use futures_util::future::join_all;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Executes changes against AWS.
#[derive(Debug)]
pub struct Executor<'a> {
    aws: &'a Clients,
    spec: &'a ClusterSpec,
    world: &'a World,
    desired: BTreeMap<String, Resource>,
    known: Mutex<Known>,
    /// Longest wait for a resource that must settle (deletes, NAT gateways).
    pub patience: Duration,
    progress: Progress,
}

/// Progress per resource on stderr: on a terminal a counter and a status
/// line redrawn in place, finished resources kept as lines; otherwise plain lines.
#[derive(Debug)]
struct Progress {
    tty: bool,
    total: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Progress {
            tty: std::io::stderr().is_terminal(),
            total: 0.into(),
            done: 0.into(),
        }
    }

    /// A step started (`finished` false) or a resource finished.
    fn line(&self, line: &str, finished: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        if !self.tty {
            eprintln!("{line}");
            return;
        }
        let done = if finished {
            self.done.fetch_add(1, SeqCst) + 1
        } else {
            self.done.load(SeqCst)
        };
        let total = self.total.load(SeqCst);
        if finished {
            eprintln!("\r\x1b[K[{done}/{total}]{line}");
        } else {
            eprint!("\r\x1b[K[{done}/{total}]{line}");
        }
    }
}

impl<'a> Executor<'a> {
    /// An executor over what `world` observed.
    pub fn new(
        aws: &'a Clients,
        spec: &'a ClusterSpec,
        world: &'a World,
        desired: &[Resource],
    ) -> Self {
        Executor {
            aws,
            spec,
            world,
            desired: desired.iter().map(|r| (r.key.clone(), r.clone())).collect(),
            known: Mutex::new(world.known()),
            patience: Duration::from_secs(600),
            progress: Progress::new(),
        }
    }

    /// Run every change of `plan`, level by level.
    pub async fn run(&self, plan: &Plan) -> anyhow::Result<()> {
        self.progress
            .total
            .fetch_add(plan.changes.len(), std::sync::atomic::Ordering::SeqCst);
        for c in &plan.changes {
            if let Action::Replace(fields) = &c.action {
                bail!(
                    "{} needs a replace ({}): destroy it first, apply refuses to",
                    c.key,
                    fields.join(", ")
                );
            }
        }
        let mut levels: BTreeMap<(bool, i16), Vec<&Change>> = BTreeMap::new();
        for c in &plan.changes {
            let del = c.action == Action::Delete;
            let level = i16::from(c.kind.level());
            levels
                .entry((del, if del { -level } else { level }))
                .or_default()
                .push(c);
        }
        for (_, changes) in levels {
            let results = join_all(changes.iter().map(|c| self.one(c))).await;
            let mut failed = Vec::new();
            for (c, r) in changes.iter().zip(results) {
                if let Err(e) = r {
                    self.progress
                        .line(&format!("  failed   {}: {e:#}", c.key), true);
                    failed.push(format!("{}: {e:#}", c.key));
                }
            }
            if !failed.is_empty() {
                bail!(
                    "{} change(s) failed; re-run to resume: {}",
                    failed.len(),
                    failed.join("; ")
                );
            }
            self.run_rules(&changes)
                .await
                .context("while setting security group rules")?;
        }
        Ok(())
    }

    async fn one(&self, c: &Change) -> anyhow::Result<()> {
        match &c.action {
            Action::Create => {
                let r = self.resource(&c.key)?;
                self.progress.line(&format!("  creating {}", c.key), false);
                self.create(r)
                    .await
                    .with_context(|| format!("while creating {}", c.key))?;
                self.progress.line(&format!("  created  {}", c.key), true);
            }
            Action::Update(fields) => {
                let r = self.resource(&c.key)?;
                self.progress.line(
                    &format!("  updating {} ({})", c.key, fields.join(", ")),
                    false,
                );
                self.update(r, fields)
                    .await
                    .with_context(|| format!("while updating {}", c.key))?;
                self.progress.line(&format!("  updated  {}", c.key), true);
            }
            Action::Delete => {
                self.progress.line(&format!("  deleting {}", c.key), false);
                self.delete(&c.key)
                    .await
                    .with_context(|| format!("while deleting {}", c.key))?;
                self.progress.line(&format!("  deleted  {}", c.key), true);
            }
            Action::Replace(_) => bail!("replace is refused"),
        }
        Ok(())
    }

    fn resource(&self, key: &str) -> anyhow::Result<&Resource> {
        self.desired
            .get(key)
            .ok_or_else(|| anyhow!("{key} is not in the desired state"))
    }

    fn attr(&self, key: &str, attr: &str) -> anyhow::Result<String> {
        let k = self
            .known
            .lock()
            .map_err(|_| anyhow!("state lock poisoned"))?;
        k.get(key)
            .and_then(|a| a.get(attr))
            .cloned()
            .ok_or_else(|| anyhow!("{key} has no {attr} yet (was it created?)"))
    }

    fn id(&self, key: &str) -> anyhow::Result<String> {
        self.attr(key, "id")
    }

    fn remember(&self, key: &str, attrs: &[(&str, String)]) {
        if let Ok(mut k) = self.known.lock() {
            let e = k.entry(key.to_string()).or_default();
            for (a, v) in attrs {
                e.insert((*a).to_string(), v.clone());
            }
        }
    }

    fn known_snapshot(&self) -> Known {
        self.known.lock().map(|k| k.clone()).unwrap_or_default()
    }

    /// Tags of a resource: Name, owner, component, key, and the spec's extras.
    fn tags(&self, r: &Resource) -> Vec<(String, String)> {
        let mut t = vec![
            (
                "Name".to_string(),
                format!("{}-{}", self.spec.name, r.key.replace('/', "-")),
            ),
            (owner_tag(&self.spec.name), "owned".to_string()),
            (TAG_COMPONENT.to_string(), r.component.clone()),
            (TAG_KEY.to_string(), r.key.clone()),
        ];
        t.extend(self.spec.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        t
    }

    fn ec2_tags(
        &self,
        r: &Resource,
        rt: aws_sdk_ec2::types::ResourceType,
    ) -> aws_sdk_ec2::types::TagSpecification {
        let tags = self
            .tags(r)
            .into_iter()
            .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
            .collect();
        aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(rt)
            .set_tags(Some(tags))
            .build()
    }

    async fn create(&self, r: &Resource) -> anyhow::Result<()> {
        use aws_sdk_ec2::types::ResourceType as Rt;
        let ec2 = &self.aws.ec2;
        match &r.desired {
            Desired::Vpc { cidr } => {
                let v = ec2
                    .create_vpc()
                    .cidr_block(cidr)
                    .tag_specifications(self.ec2_tags(r, Rt::Vpc))
                    .send()
                    .await
                    .map_err(err)?;
                let id = v
                    .vpc()
                    .and_then(|v| v.vpc_id())
                    .ok_or_else(|| anyhow!("no VPC id"))?
                    .to_string();
                self.remember(&r.key, &[("id", id.clone())]);
                let on = aws_sdk_ec2::types::AttributeBooleanValue::builder()
                    .value(true)
                    .build();
                ec2.modify_vpc_attribute()
                    .vpc_id(&id)
                    .enable_dns_support(on.clone())
                    .send()
                    .await
                    .map_err(err)?;
                ec2.modify_vpc_attribute()
                    .vpc_id(&id)
                    .enable_dns_hostnames(on)
                    .send()
                    .await
                    .map_err(err)?;
            }
            Desired::Subnet { cidr, az, public } => {
                let vpc = self.id(crate::model::VPC)?;
                let s = ec2
                    .create_subnet()
                    .vpc_id(vpc)
                    .cidr_block(cidr)
                    .availability_zone(az)
                    .tag_specifications(self.ec2_tags(r, Rt::Subnet))
                    .send()
                    .await
                    .map_err(err)?;
                let id = s
                    .subnet()
                    .and_then(|s| s.subnet_id())
                    .ok_or_else(|| anyhow!("no subnet id"))?
                    .to_string();
                self.remember(&r.key, &[("id", id.clone())]);
                if *public {
                    self.subnet_public(&id, true).await?;
                }
            }
            Desired::InternetGateway => {
                let g = ec2
                    .create_internet_gateway()
                    .tag_specifications(self.ec2_tags(r, Rt::InternetGateway))
                    .send()
                    .await
                    .map_err(err)?;
                let id = g
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .ok_or_else(|| anyhow!("no gateway id"))?
                    .to_string();
                self.remember(&r.key, &[("id", id.clone())]);
                ec2.attach_internet_gateway()
                    .internet_gateway_id(id)
                    .vpc_id(self.id(crate::model::VPC)?)
                    .send()
                    .await
                    .map_err(err)?;
            }
            Desired::ElasticIp => {
                let a = ec2
                    .allocate_address()
                    .domain(aws_sdk_ec2::types::DomainType::Vpc)
                    .tag_specifications(self.ec2_tags(r, Rt::ElasticIp))
                    .send()
                    .await
                    .map_err(err)?;
                self.remember(
                    &r.key,
                    &[("id", a.allocation_id().unwrap_or_default().to_string())],
                );
            }
            Desired::NatGateway { subnet, eip } => {
                let n = ec2
                    .create_nat_gateway()
                    .subnet_id(self.id(subnet)?)
                    .allocation_id(self.id(eip)?)
                    .tag_specifications(self.ec2_tags(r, Rt::Natgateway))
                    .send()
                    .await
                    .map_err(err)?;
                let id = n
                    .nat_gateway()
                    .and_then(|n| n.nat_gateway_id())
                    .ok_or_else(|| anyhow!("no NAT id"))?
                    .to_string();
                self.remember(&r.key, &[("id", id.clone())]);
                self.wait_nat(&id, "available").await?;
            }
            Desired::RouteTable { target, subnets } => {
                let t = ec2
                    .create_route_table()
                    .vpc_id(self.id(crate::model::VPC)?)
                    .tag_specifications(self.ec2_tags(r, Rt::RouteTable))
                    .send()
                    .await
                    .map_err(err)?;
                let id = t
                    .route_table()
                    .and_then(|t| t.route_table_id())
                    .ok_or_else(|| anyhow!("no route table id"))?
                    .to_string();
                self.remember(&r.key, &[("id", id.clone())]);
                self.default_route(&id, target, false).await?;
                for s in subnets {
                    ec2.associate_route_table()
                        .route_table_id(&id)
                        .subnet_id(self.id(s)?)
                        .send()
                        .await
                        .map_err(err)?;
                }
            }
            Desired::SecurityGroup { name, .. } => {
                let g = ec2
                    .create_security_group()
                    .group_name(name)
                    .description(format!("{} {}", self.spec.name, r.component))
                    .vpc_id(self.id(crate::model::VPC)?)
                    .tag_specifications(self.ec2_tags(r, Rt::SecurityGroup))
                    .send()
                    .await
                    .map_err(err)?;
                self.remember(
                    &r.key,
                    &[("id", g.group_id().unwrap_or_default().to_string())],
                );
                // Rules come after every group of the level exists: see `run_rules`.
            }
            Desired::Bucket { name, purpose } => self.create_bucket(r, name, *purpose).await?,
            Desired::KmsKey { alias } => {
                let tags: Vec<_> = self
                    .tags(r)
                    .into_iter()
                    .map(|(k, v)| {
                        aws_sdk_kms::types::Tag::builder()
                            .tag_key(k)
                            .tag_value(v)
                            .build()
                    })
                    .collect::<Result<_, _>>()?;
                let k = self
                    .aws
                    .kms
                    .create_key()
                    .description(format!("{} pki-server auto-unseal", self.spec.name))
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(err)?;
                let meta = k.key_metadata().ok_or_else(|| anyhow!("no key metadata"))?;
                let id = meta.key_id().to_string();
                self.remember(
                    &r.key,
                    &[
                        ("id", id.clone()),
                        ("arn", meta.arn().unwrap_or_default().to_string()),
                    ],
                );
                self.aws
                    .kms
                    .create_alias()
                    .alias_name(alias)
                    .target_key_id(&id)
                    .send()
                    .await
                    .map_err(err)?;
                self.aws
                    .kms
                    .enable_key_rotation()
                    .key_id(&id)
                    .send()
                    .await
                    .map_err(err)?;
            }
            Desired::IamRole { name, policy } => {
                let tags: Vec<_> = self
                    .tags(r)
                    .into_iter()
                    .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build())
                    .collect::<Result<_, _>>()?;
                let role = self
                    .aws
                    .iam
                    .create_role()
                    .role_name(name)
                    .assume_role_policy_document(trust_policy().to_string())
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(err)?;
                self.remember(
                    &r.key,
                    &[
                        ("id", name.clone()),
                        (
                            "arn",
                            role.role().map(|r| r.arn().to_string()).unwrap_or_default(),
                        ),
                    ],
                );
                self.put_policy(name, policy).await?;
            }
            Desired::InstanceProfile { name } => {
                let tags: Vec<_> = self
                    .tags(r)
                    .into_iter()
                    .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build())
                    .collect::<Result<_, _>>()?;
                self.aws
                    .iam
                    .create_instance_profile()
                    .instance_profile_name(name)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(err)?;
                self.aws
                    .iam
                    .add_role_to_instance_profile()
                    .instance_profile_name(name)
                    .role_name(name)
                    .send()
                    .await
                    .map_err(err)?;
                self.remember(&r.key, &[("id", name.clone())]);
            }
            Desired::TargetGroup {
                name,
                port,
                health_path,
            } => {
                use aws_sdk_elasticloadbalancingv2::types::ProtocolEnum;
                let mut req = self
                    .aws
                    .elb
                    .create_target_group()
                    .name(name)
                    .protocol(ProtocolEnum::Tcp)
                    .port(*port)
                    .vpc_id(self.id(crate::model::VPC)?)
                    .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance)
                    .health_check_port(port.to_string())
                    .set_tags(Some(self.elb_tags(r)?));
                req = match health_path {
                    Some(p) => req
                        .health_check_protocol(ProtocolEnum::Https)
                        .health_check_path(p),
                    None => req.health_check_protocol(ProtocolEnum::Tcp),
                };
                let out = req.send().await.map_err(err)?;
                let arn = out
                    .target_groups()
                    .first()
                    .and_then(|t| t.target_group_arn())
                    .ok_or_else(|| anyhow!("no target group ARN"))?;
                self.remember(&r.key, &[("id", arn.to_string()), ("arn", arn.to_string())]);
            }
            Desired::LoadBalancer {
                name,
                internal,
                subnets,
            } => {
                use aws_sdk_elasticloadbalancingv2::types::{
                    LoadBalancerSchemeEnum, LoadBalancerTypeEnum,
                };
                let ids = subnets
                    .iter()
                    .map(|s| self.id(s))
                    .collect::<Result<Vec<_>, _>>()?;
                let out = self
                    .aws
                    .elb
                    .create_load_balancer()
                    .name(name)
                    .r#type(LoadBalancerTypeEnum::Network)
                    .scheme(if *internal {
                        LoadBalancerSchemeEnum::Internal
                    } else {
                        LoadBalancerSchemeEnum::InternetFacing
                    })
                    .set_subnets(Some(ids))
                    .set_tags(Some(self.elb_tags(r)?))
                    .send()
                    .await
                    .map_err(err)?;
                let lb = out
                    .load_balancers()
                    .first()
                    .ok_or_else(|| anyhow!("no load balancer returned"))?;
                let arn = lb.load_balancer_arn().unwrap_or_default().to_string();
                self.remember(
                    &r.key,
                    &[
                        ("id", arn.clone()),
                        ("arn", arn),
                        ("dns", lb.dns_name().unwrap_or_default().to_string()),
                        (
                            "zone_id",
                            lb.canonical_hosted_zone_id()
                                .unwrap_or_default()
                                .to_string(),
                        ),
                    ],
                );
            }
            Desired::Listener { lb, tg, port } => {
                use aws_sdk_elasticloadbalancingv2::types::{
                    Action as LbAction, ActionTypeEnum, ProtocolEnum,
                };
                let action = LbAction::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(self.id(tg)?)
                    .build();
                let out = self
                    .aws
                    .elb
                    .create_listener()
                    .load_balancer_arn(self.id(lb)?)
                    .protocol(ProtocolEnum::Tcp)
                    .port(*port)
                    .default_actions(action)
                    .send()
                    .await
                    .map_err(err)?;
                let arn = out
                    .listeners()
                    .first()
                    .and_then(|l| l.listener_arn())
                    .unwrap_or_default();
                self.remember(&r.key, &[("id", arn.to_string())]);
            }
            Desired::HostedZone { name } => {
                let vpc = aws_sdk_route53::types::Vpc::builder()
                    .vpc_id(self.id(crate::model::VPC)?)
                    .vpc_region(aws_sdk_route53::types::VpcRegion::from(
                        self.aws.region.as_str(),
                    ))
                    .build();
                let reference = format!(
                    "{}-{}",
                    self.spec.name,
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0)
                );
                let z = self
                    .aws
                    .r53
                    .create_hosted_zone()
                    .name(name)
                    .caller_reference(reference)
                    .vpc(vpc)
                    .hosted_zone_config(
                        aws_sdk_route53::types::HostedZoneConfig::builder()
                            .private_zone(true)
                            .comment(crate::observe::zone_comment(&owner_tag(&self.spec.name)))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(err)?;
                let id = z
                    .hosted_zone()
                    .map(|z| z.id().trim_start_matches("/hostedzone/").to_string())
                    .ok_or_else(|| anyhow!("no zone id"))?;
                self.remember(&r.key, &[("id", id.clone())]);
                self.tag_zone(r, &id).await?;
            }
            Desired::Record { name, lb } => self.upsert_record(name, lb).await?,
            Desired::LaunchTemplate { name, .. } => {
                let data = self.lt_data(r)?;
                let spec = aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(Rt::LaunchTemplate)
                    .set_tags(self.ec2_tags(r, Rt::LaunchTemplate).tags.clone())
                    .build();
                let out = ec2
                    .create_launch_template()
                    .launch_template_name(name)
                    .launch_template_data(data)
                    .tag_specifications(spec)
                    .send()
                    .await
                    .map_err(err)?;
                let id = out
                    .launch_template()
                    .and_then(|l| l.launch_template_id())
                    .unwrap_or_default();
                self.remember(&r.key, &[("id", id.to_string())]);
            }
            Desired::Trail {
                name,
                bucket,
                prefix,
            } => {
                self.trail_bucket_policy(name, bucket, prefix).await?;
                let tags = self
                    .tags(r)
                    .into_iter()
                    .map(|(k, v)| {
                        aws_sdk_cloudtrail::types::Tag::builder()
                            .key(k)
                            .value(v)
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let t = self
                    .aws
                    .cloudtrail
                    .create_trail()
                    .name(name)
                    .s3_bucket_name(bucket)
                    .s3_key_prefix(prefix)
                    .is_multi_region_trail(true)
                    .include_global_service_events(true)
                    .enable_log_file_validation(true)
                    .set_tags_list(Some(tags))
                    .send()
                    .await
                    .map_err(err)?;
                self.aws
                    .cloudtrail
                    .start_logging()
                    .name(name)
                    .send()
                    .await
                    .map_err(err)?;
                self.remember(
                    &r.key,
                    &[
                        ("id", name.clone()),
                        ("arn", t.trail_arn().unwrap_or_default().to_string()),
                    ],
                );
            }
            Desired::Object {
                bucket,
                key,
                body,
                sha256,
            } => self.put_object(bucket, key, body, sha256).await?,
            Desired::AutoScalingGroup {
                name,
                min,
                max,
                desired,
                subnets,
                target_groups,
            } => {
                let ids = subnets
                    .iter()
                    .map(|s| self.id(s))
                    .collect::<Result<Vec<_>, _>>()?;
                let tgs = target_groups
                    .iter()
                    .map(|t| self.id(t))
                    .collect::<Result<Vec<_>, _>>()?;
                let tags: Vec<_> = self
                    .tags(r)
                    .into_iter()
                    .map(|(k, v)| {
                        aws_sdk_autoscaling::types::Tag::builder()
                            .key(k)
                            .value(v)
                            .propagate_at_launch(true)
                            .resource_id(name)
                            .resource_type("auto-scaling-group")
                            .build()
                    })
                    .collect();
                self.aws
                    .asg
                    .create_auto_scaling_group()
                    .auto_scaling_group_name(name)
                    .launch_template(
                        aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                            .launch_template_name(name)
                            .version("$Default")
                            .build(),
                    )
                    .min_size(*min)
                    .max_size(*max)
                    .desired_capacity(*desired)
                    .vpc_zone_identifier(ids.join(","))
                    .set_target_group_arns(if tgs.is_empty() { None } else { Some(tgs) })
                    .health_check_grace_period(300)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(err)?;
                self.remember(&r.key, &[("id", name.clone())]);
            }
        }
        Ok(())
    }

    async fn tag_zone(&self, r: &Resource, id: &str) -> anyhow::Result<()> {
        let tags: Vec<_> = self
            .tags(r)
            .into_iter()
            .map(|(k, v)| {
                aws_sdk_route53::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
            })
            .collect();
        self.aws
            .r53
            .change_tags_for_resource()
            .resource_type(aws_sdk_route53::types::TagResourceType::Hostedzone)
            .resource_id(id)
            .set_add_tags(Some(tags))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn tag_bucket(&self, r: &Resource, name: &str) -> anyhow::Result<()> {
        let tags: Vec<_> = self
            .tags(r)
            .into_iter()
            .map(|(k, v)| aws_sdk_s3::types::Tag::builder().key(k).value(v).build())
            .collect::<Result<_, _>>()?;
        self.aws
            .s3
            .put_bucket_tagging()
            .bucket(name)
            .tagging(
                aws_sdk_s3::types::Tagging::builder()
                    .set_tag_set(Some(tags))
                    .build()?,
            )
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    fn elb_tags(
        &self,
        r: &Resource,
    ) -> anyhow::Result<Vec<aws_sdk_elasticloadbalancingv2::types::Tag>> {
        Ok(self
            .tags(r)
            .into_iter()
            .map(|(k, v)| {
                aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
            })
            .collect())
    }

    async fn subnet_public(&self, id: &str, public: bool) -> anyhow::Result<()> {
        self.aws
            .ec2
            .modify_subnet_attribute()
            .subnet_id(id)
            .map_public_ip_on_launch(
                aws_sdk_ec2::types::AttributeBooleanValue::builder()
                    .value(public)
                    .build(),
            )
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn default_route(&self, table: &str, target: &str, replace: bool) -> anyhow::Result<()> {
        let id = self.id(target)?;
        let ec2 = &self.aws.ec2;
        if replace {
            let req = ec2
                .replace_route()
                .route_table_id(table)
                .destination_cidr_block("0.0.0.0/0");
            let req = if id.starts_with("nat-") {
                req.nat_gateway_id(id)
            } else {
                req.gateway_id(id)
            };
            match req.send().await {
                Ok(_) => return Ok(()),
                Err(e) if code(&e).as_deref() == Some("InvalidRoute.NotFound") => {}
                Err(e) => return Err(err(e)),
            }
            let id = self.id(target)?;
            let req = ec2
                .create_route()
                .route_table_id(table)
                .destination_cidr_block("0.0.0.0/0");
            let req = if id.starts_with("nat-") {
                req.nat_gateway_id(id)
            } else {
                req.gateway_id(id)
            };
            req.send().await.map_err(err)?;
        } else {
            let req = ec2
                .create_route()
                .route_table_id(table)
                .destination_cidr_block("0.0.0.0/0");
            let req = if id.starts_with("nat-") {
                req.nat_gateway_id(id)
            } else {
                req.gateway_id(id)
            };
            req.send().await.map_err(err)?;
        }
        Ok(())
    }

    fn permission(&self, rule: &Rule) -> anyhow::Result<aws_sdk_ec2::types::IpPermission> {
        let mut p = aws_sdk_ec2::types::IpPermission::builder().ip_protocol(&rule.protocol);
        if rule.protocol != "-1" {
            p = p.from_port(rule.from).to_port(rule.to);
        }
        p = match &rule.source {
            Source::Cidr(c) => {
                p.ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip(c).build())
            }
            Source::Group(k) => p.user_id_group_pairs(
                aws_sdk_ec2::types::UserIdGroupPair::builder()
                    .group_id(self.id(k)?)
                    .build(),
            ),
        };
        Ok(p.build())
    }

    /// Make the ingress rules of the security groups among `changes` match
    /// (after the whole level ran, so groups can name each other).
    async fn run_rules(&self, changes: &[&Change]) -> anyhow::Result<()> {
        for c in changes {
            if c.kind != Kind::SecurityGroup || c.action == Action::Delete {
                continue;
            }
            let r = self.resource(&c.key)?;
            let Desired::SecurityGroup { rules, .. } = &r.desired else {
                continue;
            };
            let have: Vec<String> = self
                .world
                .by_key
                .get(&c.key)
                .and_then(|o| o.props.get("ingress"))
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let id = self.id(&c.key)?;
            let want: Vec<&Rule> = rules.iter().collect();
            let add: Vec<_> = want
                .iter()
                .filter(|r| !have.contains(&r.canonical()))
                .map(|r| self.permission(r))
                .collect::<Result<_, _>>()?;
            let extra: Vec<Rule> = have
                .iter()
                .filter(|h| !want.iter().any(|r| &r.canonical() == *h))
                .filter_map(|h| Rule::parse(h))
                .collect();
            let remove: Vec<_> = extra
                .iter()
                .map(|r| self.permission(r))
                .collect::<Result<_, _>>()?;
            if !remove.is_empty() {
                self.aws
                    .ec2
                    .revoke_security_group_ingress()
                    .group_id(&id)
                    .set_ip_permissions(Some(remove))
                    .send()
                    .await
                    .map_err(err)?;
            }
            if !add.is_empty() {
                self.aws
                    .ec2
                    .authorize_security_group_ingress()
                    .group_id(&id)
                    .set_ip_permissions(Some(add))
                    .send()
                    .await
                    .map_err(err)?;
                self.progress.line(&format!("  rules    {}", c.key), false);
            }
        }
        Ok(())
    }

    async fn create_bucket(
        &self,
        r: &Resource,
        name: &str,
        _purpose: BucketPurpose,
    ) -> anyhow::Result<()> {
        let s3 = &self.aws.s3;
        let mut req = s3.create_bucket().bucket(name);
        if self.aws.region != "us-east-1" {
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        self.aws.region.as_str(),
                    ))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if code(&e).as_deref() == Some("BucketAlreadyOwnedByYou") => {}
            Err(e) => return Err(err(e)),
        }
        self.tag_bucket(r, name).await?;
        self.bucket_settings(name).await?;
        self.remember(&r.key, &[("id", name.to_string())]);
        Ok(())
    }

    /// The logs bucket policy that lets CloudTrail write this trail's files
    /// (and only them) under `prefix/AWSLogs/<account>/`.
    async fn trail_bucket_policy(
        &self,
        name: &str,
        bucket: &str,
        prefix: &str,
    ) -> anyhow::Result<()> {
        // The account: from a role this apply made or found (level 1).
        let known = self.known_snapshot();
        let account = known
            .values()
            .filter_map(|a| a.get("arn"))
            .find_map(|arn| arn.strip_prefix("arn:aws:iam::"))
            .and_then(|rest| rest.split(':').next())
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .context("the AWS account is not known yet (no IAM role observed)")?;
        let source = format!(
            "arn:aws:cloudtrail:{}:{account}:trail/{name}",
            self.aws.region
        );
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "CloudTrailAclCheck",
                    "Effect": "Allow",
                    "Principal": {"Service": "cloudtrail.amazonaws.com"},
                    "Action": "s3:GetBucketAcl",
                    "Resource": format!("arn:aws:s3:::{bucket}"),
                    "Condition": {"StringEquals": {"aws:SourceArn": source}}
                },
                {
                    "Sid": "CloudTrailWrite",
                    "Effect": "Allow",
                    "Principal": {"Service": "cloudtrail.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": format!("arn:aws:s3:::{bucket}/{prefix}/AWSLogs/{account}/*"),
                    "Condition": {"StringEquals": {
                        "s3:x-amz-acl": "bucket-owner-full-control",
                        "aws:SourceArn": source
                    }}
                },
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}}
                }
            ]
        });
        self.aws
            .s3
            .put_bucket_policy()
            .bucket(bucket)
            .policy(policy.to_string())
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn bucket_settings(&self, name: &str) -> anyhow::Result<()> {
        use aws_sdk_s3::types::*;
        let s3 = &self.aws.s3;
        s3.put_public_access_block()
            .bucket(name)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(err)?;
        s3.put_bucket_versioning()
            .bucket(name)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(err)?;
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(ServerSideEncryption::Aes256)
                    .build()?,
            )
            .build();
        s3.put_bucket_encryption()
            .bucket(name)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(rule)
                    .build()?,
            )
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn put_policy(&self, role: &str, template: &serde_json::Value) -> anyhow::Result<()> {
        let doc = render_policy(self.spec, template, &self.known_snapshot());
        if doc.to_string().contains(AFTER_APPLY) {
            bail!("the policy of {role} refers to a resource not created yet");
        }
        self.aws
            .iam
            .put_role_policy()
            .role_name(role)
            .policy_name("cluster")
            .policy_document(doc.to_string())
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn upsert_record(&self, name: &str, lb: &str) -> anyhow::Result<()> {
        use aws_sdk_route53::types::*;
        let alias = AliasTarget::builder()
            .dns_name(self.attr(lb, "dns")?)
            .hosted_zone_id(self.attr(lb, "zone_id")?)
            .evaluate_target_health(false)
            .build()?;
        let set = ResourceRecordSet::builder()
            .name(name)
            .r#type(RrType::A)
            .alias_target(alias)
            .build()?;
        let change = aws_sdk_route53::types::Change::builder()
            .action(ChangeAction::Upsert)
            .resource_record_set(set)
            .build()?;
        self.aws
            .r53
            .change_resource_record_sets()
            .hosted_zone_id(self.id("zone")?)
            .change_batch(ChangeBatch::builder().changes(change).build()?)
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    fn lt_data(
        &self,
        r: &Resource,
    ) -> anyhow::Result<aws_sdk_ec2::types::RequestLaunchTemplateData> {
        use aws_sdk_ec2::types::*;
        let Desired::LaunchTemplate {
            name,
            role,
            image,
            instance_type,
            volume_gb,
            data_volume_gb,
            user_data,
        } = &r.desired
        else {
            bail!("{} is not a launch template", r.key);
        };
        let sg = self.id(&format!("sg/{}", role.name()))?;
        let instance_tags = |rt: ResourceType| {
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(rt)
                .set_tags(self.ec2_tags(r, ResourceType::Instance).tags.clone())
                .build()
        };
        let volume = |device: &str, gb: i32| {
            LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name(device)
                .ebs(
                    LaunchTemplateEbsBlockDeviceRequest::builder()
                        .volume_size(gb)
                        .volume_type(VolumeType::Gp3)
                        .encrypted(true)
                        .delete_on_termination(true)
                        .build(),
                )
                .build()
        };
        let mut volumes = vec![volume("/dev/xvda", *volume_gb)];
        if let Some(gb) = data_volume_gb {
            volumes.push(volume(crate::ignition::node::etcd::DATA_DEVICE, *gb));
        }
        Ok(RequestLaunchTemplateData::builder()
            .image_id(image)
            .instance_type(InstanceType::from(instance_type.as_str()))
            .iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(name)
                    .build(),
            )
            .security_group_ids(sg)
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .set_block_device_mappings(Some(volumes))
            .user_data(base64::engine::general_purpose::STANDARD.encode(user_data))
            .tag_specifications(instance_tags(ResourceType::Instance))
            .tag_specifications(instance_tags(ResourceType::Volume))
            .build())
    }

    async fn update(&self, r: &Resource, fields: &[String]) -> anyhow::Result<()> {
        let has = |f: &str| fields.iter().any(|x| x == f);
        match &r.desired {
            Desired::Subnet { public, .. } => {
                self.subnet_public(&self.id(&r.key)?, *public).await?
            }
            Desired::InternetGateway => {
                self.aws
                    .ec2
                    .attach_internet_gateway()
                    .internet_gateway_id(self.id(&r.key)?)
                    .vpc_id(self.id(crate::model::VPC)?)
                    .send()
                    .await
                    .map_err(err)?;
            }
            Desired::RouteTable { target, subnets } => {
                let id = self.id(&r.key)?;
                if has("default_route") {
                    // Replace a route that exists (pointing elsewhere); create a missing one.
                    let exists = self
                        .world
                        .by_key
                        .get(&r.key)
                        .and_then(|o| o.props.get("default_route"))
                        .and_then(|v| v.as_str())
                        .is_some_and(|t| !t.is_empty());
                    self.default_route(&id, target, exists).await?;
                }
                if has("subnets") {
                    let have: Vec<String> = self
                        .world
                        .by_key
                        .get(&r.key)
                        .and_then(|o| o.props.get("subnets"))
                        .and_then(|v| serde_json::from_value(v.clone()).ok())
                        .unwrap_or_default();
                    for s in subnets.iter().filter(|s| !have.contains(s)) {
                        self.aws
                            .ec2
                            .associate_route_table()
                            .route_table_id(&id)
                            .subnet_id(self.id(s)?)
                            .send()
                            .await
                            .map_err(err)?;
                    }
                }
            }
            Desired::SecurityGroup { .. } => {} // `run_rules`
            Desired::Vpc { .. } => {
                let id = self.id(&r.key)?;
                let on = aws_sdk_ec2::types::AttributeBooleanValue::builder()
                    .value(true)
                    .build();
                self.aws
                    .ec2
                    .modify_vpc_attribute()
                    .vpc_id(&id)
                    .enable_dns_support(on.clone())
                    .send()
                    .await
                    .map_err(err)?;
                self.aws
                    .ec2
                    .modify_vpc_attribute()
                    .vpc_id(&id)
                    .enable_dns_hostnames(on)
                    .send()
                    .await
                    .map_err(err)?;
            }
            Desired::HostedZone { .. } => self.tag_zone(r, &self.id(&r.key)?).await?,
            Desired::Bucket { name, .. } => {
                if has("tagged") {
                    self.tag_bucket(r, name).await?;
                }
                if fields.iter().any(|f| f != "tagged") {
                    self.bucket_settings(name).await?;
                }
            }
            Desired::KmsKey { alias } => {
                let id = self.id(&r.key)?;
                if has("enabled") {
                    self.aws
                        .kms
                        .enable_key()
                        .key_id(&id)
                        .send()
                        .await
                        .map_err(err)?;
                }
                if has("alias") {
                    self.aws
                        .kms
                        .create_alias()
                        .alias_name(alias)
                        .target_key_id(&id)
                        .send()
                        .await
                        .map_err(err)?;
                }
                if has("rotation") {
                    self.aws
                        .kms
                        .enable_key_rotation()
                        .key_id(&id)
                        .send()
                        .await
                        .map_err(err)?;
                }
            }
            Desired::IamRole { name, policy } => {
                if has("trust") {
                    self.aws
                        .iam
                        .update_assume_role_policy()
                        .role_name(name)
                        .policy_document(trust_policy().to_string())
                        .send()
                        .await
                        .map_err(err)?;
                }
                if has("policy") {
                    self.put_policy(name, policy).await?;
                }
            }
            Desired::InstanceProfile { name } => {
                self.aws
                    .iam
                    .add_role_to_instance_profile()
                    .instance_profile_name(name)
                    .role_name(name)
                    .send()
                    .await
                    .map_err(err)?;
            }
            Desired::Record { name, lb } => self.upsert_record(name, lb).await?,
            Desired::LaunchTemplate { .. } => {
                let id = self.id(&r.key)?;
                let out = self
                    .aws
                    .ec2
                    .create_launch_template_version()
                    .launch_template_id(&id)
                    .launch_template_data(self.lt_data(r)?)
                    .send()
                    .await
                    .map_err(err)?;
                let v = out
                    .launch_template_version()
                    .and_then(|v| v.version_number())
                    .ok_or_else(|| anyhow!("no version number"))?;
                self.aws
                    .ec2
                    .modify_launch_template()
                    .launch_template_id(&id)
                    .default_version(v.to_string())
                    .send()
                    .await
                    .map_err(err)?;
            }
            Desired::Trail {
                name,
                bucket,
                prefix,
            } => {
                if fields.iter().any(|f| f != "logging") {
                    self.trail_bucket_policy(name, bucket, prefix).await?;
                    self.aws
                        .cloudtrail
                        .update_trail()
                        .name(name)
                        .s3_bucket_name(bucket)
                        .s3_key_prefix(prefix)
                        .is_multi_region_trail(true)
                        .include_global_service_events(true)
                        .enable_log_file_validation(true)
                        .send()
                        .await
                        .map_err(err)?;
                }
                self.aws
                    .cloudtrail
                    .start_logging()
                    .name(name)
                    .send()
                    .await
                    .map_err(err)?;
            }
            Desired::Object {
                bucket,
                key,
                body,
                sha256,
            } => self.put_object(bucket, key, body, sha256).await?,
            Desired::AutoScalingGroup {
                name,
                min,
                max,
                desired,
                subnets,
                target_groups,
            } => {
                if has("min") || has("max") || has("desired") || has("subnets") {
                    let mut req = self
                        .aws
                        .asg
                        .update_auto_scaling_group()
                        .auto_scaling_group_name(name);
                    if has("min") {
                        req = req.min_size(*min);
                    }
                    if has("max") {
                        req = req.max_size(*max);
                    }
                    if has("desired") {
                        req = req.desired_capacity(*desired);
                    }
                    if has("subnets") {
                        let ids = subnets
                            .iter()
                            .map(|s| self.id(s))
                            .collect::<Result<Vec<_>, _>>()?;
                        req = req.vpc_zone_identifier(ids.join(","));
                    }
                    req.send().await.map_err(err)?;
                }
                if has("target_groups") && !target_groups.is_empty() {
                    let tgs = target_groups
                        .iter()
                        .map(|t| self.id(t))
                        .collect::<Result<Vec<_>, _>>()?;
                    self.aws
                        .asg
                        .attach_load_balancer_target_groups()
                        .auto_scaling_group_name(name)
                        .set_target_group_arns(Some(tgs))
                        .send()
                        .await
                        .map_err(err)?;
                }
            }
            _ => bail!("{} cannot be updated in place", r.key),
        }
        Ok(())
    }

    async fn wait_nat(&self, id: &str, state: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            // A NAT gateway EC2 no longer knows (NatGatewayNotFound) is deleted.
            let out = unless_gone(
                self.aws
                    .ec2
                    .describe_nat_gateways()
                    .nat_gateway_ids(id)
                    .send()
                    .await,
            )?;
            let now = out
                .as_ref()
                .and_then(|o| o.nat_gateways().first())
                .and_then(|n| n.state())
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "deleted".into());
            if now == state {
                return Ok(());
            }
            if now == "failed" {
                bail!("NAT gateway {id} failed");
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "NAT gateway {id} is {now}, not {state}, after {:?}",
                    self.patience
                );
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let o = self
            .world
            .by_key
            .get(key)
            .ok_or_else(|| anyhow!("{key} was not observed"))?;
        if !o.owned {
            bail!("{key} is not owned by this cluster; not deleting it");
        }
        let id = o.id.clone();
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut pause = Duration::from_millis(500);
        loop {
            match self.delete_once(o.kind, key, &id).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let text = format!("{e:#}");
                    let retry = [
                        "DependencyViolation",
                        "ResourceInUse",
                        "in use",
                        "DeleteConflict",
                        "has a dependent object",
                        "ScalingActivityInProgress",
                    ]
                    .iter()
                    .any(|s| text.contains(s));
                    if !retry || tokio::time::Instant::now() > deadline {
                        return Err(e);
                    }
                    self.progress.line(
                        &format!("  waiting  {key}: still in use, retrying in {pause:?}"),
                        false,
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(15));
                }
            }
        }
    }

    /// One attempt at deleting `key`. Every step that finds what it removes
    /// already gone goes on (an earlier attempt, the SDK's own retry of a
    /// call that succeeded, or anyone else may have removed it); the last
    /// step, the delete of the resource itself, is done when the resource is
    /// gone. A not-found answer of an earlier step never ends the delete: it
    /// may be about something else (a rule naming a group already deleted).
    async fn delete_once(&self, kind: Kind, key: &str, id: &str) -> anyhow::Result<()> {
        let ec2 = &self.aws.ec2;
        let o = self.world.by_key.get(key);
        let attr = |a: &str| o.and_then(|o| o.attrs.get(a)).cloned().unwrap_or_default();
        match kind {
            Kind::AutoScalingGroup => {
                // Asked first: moto answers the delete of a missing group with a server error.
                if !self.asg_exists(id).await? {
                    return Ok(());
                }
                unless_gone(
                    self.aws
                        .asg
                        .delete_auto_scaling_group()
                        .auto_scaling_group_name(id)
                        .force_delete(true)
                        .send()
                        .await,
                )?;
                let deadline = tokio::time::Instant::now() + self.patience;
                while self.asg_exists(id).await? && tokio::time::Instant::now() <= deadline {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
            Kind::LaunchTemplate => {
                unless_gone(
                    ec2.delete_launch_template()
                        .launch_template_id(id)
                        .send()
                        .await,
                )?;
            }
            Kind::Record => {
                use aws_sdk_route53::types::*;
                let alias = AliasTarget::builder()
                    .dns_name(attr("alias_dns"))
                    .hosted_zone_id(attr("alias_zone"))
                    .evaluate_target_health(false)
                    .build()?;
                let set = ResourceRecordSet::builder()
                    .name(id)
                    .r#type(RrType::A)
                    .alias_target(alias)
                    .build()?;
                let change = aws_sdk_route53::types::Change::builder()
                    .action(ChangeAction::Delete)
                    .resource_record_set(set)
                    .build()?;
                unless_gone(
                    self.aws
                        .r53
                        .change_resource_record_sets()
                        .hosted_zone_id(attr("zone"))
                        .change_batch(ChangeBatch::builder().changes(change).build()?)
                        .send()
                        .await,
                )?;
            }
            Kind::Listener => {
                unless_gone(self.aws.elb.delete_listener().listener_arn(id).send().await)?;
            }
            Kind::RouteTable => {
                for a in attr("associations").split(',').filter(|a| !a.is_empty()) {
                    unless_gone(
                        ec2.disassociate_route_table()
                            .association_id(a)
                            .send()
                            .await,
                    )?;
                }
                unless_gone(ec2.delete_route_table().route_table_id(id).send().await)?;
            }
            Kind::LoadBalancer => {
                unless_gone(
                    self.aws
                        .elb
                        .delete_load_balancer()
                        .load_balancer_arn(id)
                        .send()
                        .await,
                )?;
            }
            Kind::TargetGroup => {
                unless_gone(
                    self.aws
                        .elb
                        .delete_target_group()
                        .target_group_arn(id)
                        .send()
                        .await,
                )?;
            }
            Kind::InstanceProfile => {
                let iam = &self.aws.iam;
                let p = unless_gone(
                    iam.get_instance_profile()
                        .instance_profile_name(id)
                        .send()
                        .await,
                )?;
                let roles: Vec<String> = p
                    .as_ref()
                    .and_then(|p| p.instance_profile())
                    .map(|p| {
                        p.roles()
                            .iter()
                            .map(|r| r.role_name().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                for role in roles {
                    unless_gone(
                        iam.remove_role_from_instance_profile()
                            .instance_profile_name(id)
                            .role_name(role)
                            .send()
                            .await,
                    )?;
                }
                unless_gone(
                    iam.delete_instance_profile()
                        .instance_profile_name(id)
                        .send()
                        .await,
                )?;
            }
            Kind::NatGateway => {
                if unless_gone(ec2.delete_nat_gateway().nat_gateway_id(id).send().await)?.is_some()
                {
                    self.wait_nat(id, "deleted").await?;
                }
            }
            Kind::IamRole => {
                let iam = &self.aws.iam;
                let policies = unless_gone(iam.list_role_policies().role_name(id).send().await)?
                    .map(|ps| ps.policy_names().to_vec())
                    .unwrap_or_default();
                for p in policies {
                    unless_gone(
                        iam.delete_role_policy()
                            .role_name(id)
                            .policy_name(p)
                            .send()
                            .await,
                    )?;
                }
                unless_gone(iam.delete_role().role_name(id).send().await)?;
            }
            Kind::HostedZone => {
                unless_gone(self.aws.r53.delete_hosted_zone().id(id).send().await)?;
            }
            Kind::SecurityGroup => {
                let perms: Vec<_> =
                    unless_gone(ec2.describe_security_groups().group_ids(id).send().await)?
                        .and_then(|g| {
                            g.security_groups()
                                .first()
                                .map(|g| g.ip_permissions().to_vec())
                        })
                        .unwrap_or_default();
                if !perms.is_empty() {
                    unless_gone(
                        ec2.revoke_security_group_ingress()
                            .group_id(id)
                            .set_ip_permissions(Some(perms))
                            .send()
                            .await,
                    )?;
                }
                unless_gone(ec2.delete_security_group().group_id(id).send().await)?;
            }
            Kind::InternetGateway => {
                for vpc in attr("vpcs").split(',').filter(|v| !v.is_empty()) {
                    match ec2
                        .detach_internet_gateway()
                        .internet_gateway_id(id)
                        .vpc_id(vpc)
                        .send()
                        .await
                    {
                        Err(e) if code(&e).as_deref() == Some("Gateway.NotAttached") => {}
                        r => {
                            unless_gone(r)?;
                        }
                    }
                }
                unless_gone(
                    ec2.delete_internet_gateway()
                        .internet_gateway_id(id)
                        .send()
                        .await,
                )?;
            }
            Kind::Subnet => {
                unless_gone(ec2.delete_subnet().subnet_id(id).send().await)?;
            }
            Kind::ElasticIp => {
                unless_gone(ec2.release_address().allocation_id(id).send().await)?;
            }
            Kind::Vpc => {
                unless_gone(ec2.delete_vpc().vpc_id(id).send().await)?;
            }
            Kind::KmsKey => {
                let kms = &self.aws.kms;
                let alias = attr("alias");
                if !alias.is_empty() {
                    unless_gone(kms.delete_alias().alias_name(alias).send().await)?;
                }
                let r = kms
                    .schedule_key_deletion()
                    .key_id(id)
                    .pending_window_in_days(7)
                    .send()
                    .await;
                // Scheduled before: KMS refuses to schedule it again.
                let scheduled_before = match &r {
                    Err(e) if code(e).as_deref() == Some("KMSInvalidStateException") => {
                        self.kms_pending_deletion(id).await?
                    }
                    _ => false,
                };
                if !scheduled_before {
                    unless_gone(r)?;
                }
            }
            Kind::Bucket => self.empty_and_delete_bucket(id).await?,
            Kind::Trail => {
                unless_gone(self.aws.cloudtrail.delete_trail().name(id).send().await)?;
            }
            Kind::Object => {
                // A versioned bucket keeps the old versions; deleting the bucket removes them.
                unless_gone(
                    self.aws
                        .s3
                        .delete_object()
                        .bucket(attr("bucket"))
                        .key(id)
                        .send()
                        .await,
                )?;
            }
        }
        Ok(())
    }

    /// Whether the auto scaling group `name` exists (still).
    async fn asg_exists(&self, name: &str) -> anyhow::Result<bool> {
        let g = self
            .aws
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(err)?;
        Ok(!g.auto_scaling_groups().is_empty())
    }

    /// Whether the KMS key `id` is gone or already scheduled for deletion.
    async fn kms_pending_deletion(&self, id: &str) -> anyhow::Result<bool> {
        let Some(d) = unless_gone(self.aws.kms.describe_key().key_id(id).send().await)? else {
            return Ok(true);
        };
        Ok(matches!(
            d.key_metadata().and_then(|m| m.key_state()),
            Some(
                aws_sdk_kms::types::KeyState::PendingDeletion
                    | aws_sdk_kms::types::KeyState::PendingReplicaDeletion
            )
        ))
    }

    /// Upload an artifact with its SHA-256 in the metadata (what plan compares).
    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: &ArtifactBody,
        sha256: &str,
    ) -> anyhow::Result<()> {
        let bytes = match body {
            ArtifactBody::File(path) => tokio::fs::read(path)
                .await
                .with_context(|| format!("while reading {}", path.display()))?,
            ArtifactBody::Text(t) => t.clone().into_bytes(),
        };
        let got = crate::sha256_hex(&bytes);
        if got != sha256 {
            bail!(
                "{key}: the file changed since plan (sha256 {got}, planned {sha256}); run apply again"
            );
        }
        self.aws
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .metadata("sha256", sha256)
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            .body(bytes.into())
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Delete every object version and delete marker, then the bucket.
    pub async fn empty_and_delete_bucket(&self, name: &str) -> anyhow::Result<()> {
        let s3 = &self.aws.s3;
        loop {
            let v = match s3.list_object_versions().bucket(name).send().await {
                Ok(v) => v,
                Err(e) if code(&e).as_deref() == Some("NoSuchBucket") => return Ok(()),
                Err(e) => return Err(err(e)),
            };
            let mut ids: Vec<(String, Option<String>)> = v
                .versions()
                .iter()
                .map(|o| {
                    (
                        o.key().unwrap_or_default().to_string(),
                        o.version_id().map(str::to_string),
                    )
                })
                .collect();
            ids.extend(v.delete_markers().iter().map(|o| {
                (
                    o.key().unwrap_or_default().to_string(),
                    o.version_id().map(str::to_string),
                )
            }));
            if ids.is_empty() {
                break;
            }
            for (k, vid) in ids {
                unless_gone(
                    s3.delete_object()
                        .bucket(name)
                        .key(k)
                        .set_version_id(vid)
                        .send()
                        .await,
                )?;
            }
        }
        unless_gone(s3.delete_bucket().bucket(name).send().await)?;
        Ok(())
    }
}

impl Rule {
    /// Parse `Rule::canonical` text back.
    pub fn parse(text: &str) -> Option<Rule> {
        let mut parts = text.splitn(3, ' ');
        let protocol = parts.next()?.to_string();
        let (from, to) = parts.next()?.split_once("..")?;
        let src = parts.next()?;
        let source = if let Some(c) = src.strip_prefix("cidr:") {
            Source::Cidr(c.to_string())
        } else {
            Source::Group(src.strip_prefix("sg:")?.to_string())
        };
        Some(Rule {
            protocol,
            from: from.parse().ok()?,
            to: to.parse().ok()?,
            source,
        })
    }
}

/// Used by `ignition` consumers of the executor's names.
pub fn pki_endpoint(spec: &ClusterSpec) -> String {
    format!("https://{}:8200", ignition::pki_dns(spec))
}
