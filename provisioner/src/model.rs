//! The desired state: every AWS resource of a cluster, derived from the spec.
//!
//! `desired(spec, env)` is pure. Each [`Resource`] has a stable key
//! (`subnet/etcd/1`), the group `--only` selects it by, a typed [`Desired`]
//! body the executor builds requests from, and `props()`: the fields `plan`
//! compares with what AWS reports. References to other resources are by key;
//! the one attribute only known after creation (the KMS key ARN in the
//! pki-server policy) is resolved from what was observed or created.

use crate::ignition;
use crate::spec::{ClusterSpec, Role, Topology};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub use crate::spec::TAG_PREFIX;
/// Tag naming the component (`vpc`, `etcd`, ...).
pub const TAG_COMPONENT: &str = "kube-aws-pki:component";
/// Tag holding the resource key, so a lost state can be rebuilt from tags.
pub const TAG_KEY: &str = "kube-aws-pki:resource";

/// The ownership tag key of a cluster.
pub fn owner_tag(cluster: &str) -> String {
    format!("kubernetes.io/cluster/{cluster}")
}

/// Resource kinds, in creation order (`level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// VPC.
    Vpc,
    /// S3 bucket.
    Bucket,
    /// KMS key and alias.
    KmsKey,
    /// Elastic IP for the NAT gateway.
    ElasticIp,
    /// Subnet.
    Subnet,
    /// Internet gateway, attached.
    InternetGateway,
    /// Security group and its ingress rules.
    SecurityGroup,
    /// Route53 private hosted zone.
    HostedZone,
    /// IAM role with its inline policy.
    IamRole,
    /// NAT gateway.
    NatGateway,
    /// IAM instance profile.
    InstanceProfile,
    /// ELBv2 target group.
    TargetGroup,
    /// ELBv2 load balancer.
    LoadBalancer,
    /// Route table with its default route and associations.
    RouteTable,
    /// ELBv2 listener.
    Listener,
    /// Route53 alias record.
    Record,
    /// EC2 launch template.
    LaunchTemplate,
    /// Auto scaling group.
    AutoScalingGroup,
    /// An object in the config bucket (binaries, policies) nodes fetch at boot.
    Object,
    /// A CloudTrail trail into the logs bucket (`[access] cloudtrail = true`).
    Trail,
}

impl Kind {
    /// Creation level: everything a resource needs has a lower level.
    pub fn level(self) -> u8 {
        match self {
            Kind::Vpc | Kind::Bucket | Kind::KmsKey | Kind::ElasticIp => 0,
            Kind::Subnet
            | Kind::InternetGateway
            | Kind::SecurityGroup
            | Kind::HostedZone
            | Kind::IamRole
            | Kind::Object => 1,
            Kind::NatGateway | Kind::InstanceProfile | Kind::TargetGroup | Kind::LoadBalancer => 2,
            Kind::RouteTable | Kind::Listener | Kind::Record | Kind::Trail => 3,
            Kind::LaunchTemplate => 4,
            Kind::AutoScalingGroup => 5,
        }
    }
}

/// `--only` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Network: VPC, subnets, gateways, routes, security groups, private zone.
    Vpc,
    /// Buckets.
    S3,
    /// Roles and instance profiles.
    Iam,
    /// The auto-unseal key.
    Kms,
    /// pki-server: its load balancer, record, launch template and group.
    Pki,
    /// etcd.
    Etcd,
    /// Controllers and the API load balancer.
    Controller,
    /// Workers.
    Worker,
}

impl Group {
    /// Every group.
    pub const ALL: [Group; 8] = [
        Group::Vpc,
        Group::S3,
        Group::Iam,
        Group::Kms,
        Group::Pki,
        Group::Etcd,
        Group::Controller,
        Group::Worker,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Group::Vpc => "vpc",
            Group::S3 => "s3",
            Group::Iam => "iam",
            Group::Kms => "kms",
            Group::Pki => "pki",
            Group::Etcd => "etcd",
            Group::Controller => "controller",
            Group::Worker => "worker",
        }
    }

    /// Parse a name.
    pub fn from_name(s: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.name() == s)
    }

    fn of(role: Role) -> Group {
        match role {
            Role::PkiServer => Group::Pki,
            Role::Etcd => Group::Etcd,
            Role::Controller => Group::Controller,
            Role::Worker => Group::Worker,
        }
    }
}

/// One security group ingress rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    /// `tcp`, `udp` or `-1` (all).
    pub protocol: String,
    /// First port.
    pub from: i32,
    /// Last port.
    pub to: i32,
    /// Who may connect.
    pub source: Source,
}

/// A rule's source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// An IPv4 CIDR.
    Cidr(String),
    /// Another of our security groups, by key.
    Group(String),
}

impl Rule {
    /// Canonical text, as plan compares and prints it.
    pub fn canonical(&self) -> String {
        let src = match &self.source {
            Source::Cidr(c) => format!("cidr:{c}"),
            Source::Group(k) => format!("sg:{k}"),
        };
        format!("{} {}..{} {src}", self.protocol, self.from, self.to)
    }
}

/// The trail's resource key.
pub const TRAIL: &str = "trail";
/// Where the trail writes in the logs bucket.
pub const TRAIL_PREFIX: &str = "cloudtrail";

/// The trail's name.
pub fn trail_name(spec: &ClusterSpec) -> String {
    format!("{}-trail", spec.name)
}

/// What a bucket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketPurpose {
    /// pki-server storage.
    Pki,
    /// Config, binaries, the published CA and the state/lock object.
    Config,
    /// Logs.
    Logs,
}

/// The typed body of a resource: what the executor creates.
#[derive(Debug, Clone)]
pub enum Desired {
    /// VPC.
    Vpc {
        /// CIDR.
        cidr: String,
    },
    /// Subnet.
    Subnet {
        /// CIDR.
        cidr: String,
        /// Availability zone.
        az: String,
        /// Map public IPs on launch.
        public: bool,
    },
    /// Internet gateway.
    InternetGateway,
    /// Elastic IP.
    ElasticIp,
    /// NAT gateway in a public subnet.
    NatGateway {
        /// Subnet key.
        subnet: String,
        /// Elastic IP key.
        eip: String,
    },
    /// Route table.
    RouteTable {
        /// Key of the default route's target (IGW or NAT).
        target: String,
        /// Associated subnet keys.
        subnets: Vec<String>,
    },
    /// Security group.
    SecurityGroup {
        /// Group name.
        name: String,
        /// Ingress rules.
        rules: Vec<Rule>,
    },
    /// S3 bucket.
    Bucket {
        /// Bucket name.
        name: String,
        /// Purpose.
        purpose: BucketPurpose,
    },
    /// KMS key with alias.
    KmsKey {
        /// `alias/...`.
        alias: String,
    },
    /// IAM role with one inline policy.
    IamRole {
        /// Role name.
        name: String,
        /// Policy template (from `policies/iam/<role>.json`).
        policy: Value,
    },
    /// Instance profile holding one role.
    InstanceProfile {
        /// Profile (and role) name.
        name: String,
    },
    /// Target group.
    TargetGroup {
        /// Name.
        name: String,
        /// Port.
        port: i32,
        /// Health check path (HTTPS), or None for a TCP check.
        health_path: Option<String>,
    },
    /// Network load balancer.
    LoadBalancer {
        /// Name.
        name: String,
        /// Internal or internet-facing.
        internal: bool,
        /// Subnet keys.
        subnets: Vec<String>,
    },
    /// TCP listener forwarding to a target group.
    Listener {
        /// Load balancer key.
        lb: String,
        /// Target group key.
        tg: String,
        /// Port.
        port: i32,
    },
    /// Private hosted zone.
    HostedZone {
        /// Zone name.
        name: String,
    },
    /// Alias A record to a load balancer.
    Record {
        /// Fully qualified name.
        name: String,
        /// Load balancer key.
        lb: String,
    },
    /// Launch template.
    LaunchTemplate {
        /// Name.
        name: String,
        /// Role.
        role: Role,
        /// AMI.
        image: String,
        /// Instance type.
        instance_type: String,
        /// Root volume GiB.
        volume_gb: i32,
        /// Data volume GiB (`/dev/xvdb`; etcd only).
        data_volume_gb: Option<i32>,
        /// Ignition JSON.
        user_data: String,
    },
    /// A CloudTrail trail.
    Trail {
        /// Trail name.
        name: String,
        /// The logs bucket.
        bucket: String,
        /// Key prefix in the bucket.
        prefix: String,
    },
    /// An object in the config bucket.
    Object {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// Where the bytes come from.
        body: ArtifactBody,
        /// Hex SHA-256 of the bytes (kept in the object's metadata).
        sha256: String,
    },
    /// Auto scaling group.
    AutoScalingGroup {
        /// Name (also the launch template's).
        name: String,
        /// Min.
        min: i32,
        /// Max.
        max: i32,
        /// Desired.
        desired: i32,
        /// Subnet keys.
        subnets: Vec<String>,
        /// Target group keys.
        target_groups: Vec<String>,
    },
}

/// One resource of the desired state.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Stable key, also in the `kube-aws-pki:resource` tag.
    pub key: String,
    /// Kind.
    pub kind: Kind,
    /// `--only` group.
    pub group: Group,
    /// Component tag value.
    pub component: String,
    /// Body.
    pub desired: Desired,
}

/// What plan compares: field → JSON value.
pub type Props = BTreeMap<String, Value>;

/// Attributes known about existing resources (key → attribute → value), for
/// the references only known after creation.
pub type Known = BTreeMap<String, BTreeMap<String, String>>;

/// Placeholder for an attribute of a resource not created yet.
pub const AFTER_APPLY: &str = "(known after apply)";

/// Inputs read from AWS before the model can be built.
#[derive(Debug, Clone)]
pub struct Env {
    /// Availability zone names, as many as the spec uses.
    pub azs: Vec<String>,
    /// The AMI per role (pinned from the existing launch template, or looked up).
    pub images: BTreeMap<Role, String>,
    /// What the config bucket must hold.
    pub artifacts: Vec<Artifact>,
}

/// A file nodes download from the config bucket at first boot.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Object key (`bin/node-client`, `policies/profile.toml`).
    pub key: String,
    /// Where the bytes come from.
    pub body: ArtifactBody,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
}

/// The bytes of an artifact.
#[derive(Debug, Clone)]
pub enum ArtifactBody {
    /// A file (a binary), read when uploaded.
    File(std::path::PathBuf),
    /// Text built into or rendered by the provisioner.
    Text(String),
}

/// Replace `${var}` in every string of a JSON document.
pub fn substitute(v: &Value, vars: &BTreeMap<&str, String>) -> Value {
    match v {
        Value::String(s) => {
            let mut s = s.clone();
            for (k, val) in vars {
                s = s.replace(&format!("${{{k}}}"), val);
            }
            Value::String(s)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, vars)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute(x, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The IAM policy templates, one per role, kept in `policies/iam/`.
pub fn policy_template(role: Role) -> &'static str {
    match role {
        Role::PkiServer => policies::iam::PKI_SERVER,
        Role::Etcd => policies::iam::ETCD,
        Role::Controller => policies::iam::CONTROLLER,
        Role::Worker => policies::iam::WORKER,
    }
}

/// The EC2 trust policy of every node role.
pub fn trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    })
}

impl Resource {
    /// The fields plan compares, with references resolved from `known`.
    pub fn props(&self, spec: &ClusterSpec, known: &Known) -> Props {
        let mut p = Props::new();
        let mut set = |k: &str, v: Value| {
            p.insert(k.to_string(), v);
        };
        match &self.desired {
            Desired::Vpc { cidr } => {
                set("cidr", json!(cidr));
                set("dns", json!(true));
            }
            Desired::Subnet { cidr, az, public } => {
                set("cidr", json!(cidr));
                set("az", json!(az));
                set("public", json!(public));
            }
            Desired::InternetGateway => set("attached", json!(true)),
            Desired::ElasticIp => {}
            Desired::NatGateway { subnet, .. } => set("subnet", json!(subnet)),
            Desired::RouteTable { target, subnets } => {
                set("default_route", json!(target));
                let mut s = subnets.clone();
                s.sort();
                set("subnets", json!(s));
            }
            Desired::SecurityGroup { rules, .. } => {
                let mut r: Vec<String> = rules.iter().map(Rule::canonical).collect();
                r.sort();
                r.dedup();
                set("ingress", json!(r));
            }
            Desired::Bucket { .. } => {
                set("versioning", json!("Enabled"));
                set("encryption", json!("AES256"));
                set("public_access_block", json!(true));
                set("tagged", json!(true));
            }
            Desired::Trail { bucket, prefix, .. } => {
                set("bucket", json!(bucket));
                set("prefix", json!(prefix));
                set("multi_region", json!(true));
                set("log_file_validation", json!(true));
                set("logging", json!(true));
            }
            Desired::KmsKey { .. } => {
                set("enabled", json!(true));
                set("alias", json!(true));
                set("rotation", json!(true));
            }
            Desired::IamRole { policy, .. } => {
                set("trust", trust_policy());
                set("policy", render_policy(spec, policy, known));
            }
            Desired::InstanceProfile { name } => set("role", json!(name)),
            Desired::TargetGroup {
                port, health_path, ..
            } => {
                set("port", json!(port));
                set(
                    "health_check",
                    json!(health_path.as_deref().unwrap_or("tcp")),
                );
            }
            Desired::LoadBalancer {
                internal, subnets, ..
            } => {
                set("internal", json!(internal));
                let mut s = subnets.clone();
                s.sort();
                set("subnets", json!(s));
            }
            Desired::Listener { tg, port, .. } => {
                set("port", json!(port));
                set("target_group", json!(tg));
            }
            Desired::HostedZone { .. } => {
                set("private", json!(true));
                set("tagged", json!(true));
            }
            Desired::Record { lb, .. } => {
                let dns = known
                    .get(lb)
                    .and_then(|a| a.get("dns"))
                    .cloned()
                    .unwrap_or_else(|| AFTER_APPLY.to_string());
                set(
                    "alias",
                    json!(dns.trim_end_matches('.').to_ascii_lowercase()),
                );
            }
            Desired::LaunchTemplate {
                image,
                instance_type,
                volume_gb,
                data_volume_gb,
                user_data,
                ..
            } => {
                set("image", json!(image));
                set("instance_type", json!(instance_type));
                set("volume_gb", json!(volume_gb));
                set("data_volume_gb", json!(data_volume_gb));
                set("encrypted", json!(true));
                set("http_tokens", json!("required"));
                set("user_data", json!(user_data));
            }
            Desired::Object { sha256, .. } => set("sha256", json!(sha256)),
            Desired::AutoScalingGroup {
                min,
                max,
                desired,
                subnets,
                target_groups,
                ..
            } => {
                set("min", json!(min));
                set("max", json!(max));
                set("desired", json!(desired));
                let mut s = subnets.clone();
                s.sort();
                set("subnets", json!(s));
                let mut t = target_groups.clone();
                t.sort();
                set("target_groups", json!(t));
            }
        }
        p
    }

    /// Fields that apply can change in place (others need a replace).
    pub fn updatable(&self, field: &str) -> bool {
        match self.kind {
            Kind::Subnet => field == "public",
            Kind::Vpc => field == "dns",
            Kind::InternetGateway => field == "attached",
            Kind::HostedZone => field == "tagged",
            Kind::RouteTable
            | Kind::SecurityGroup
            | Kind::Bucket
            | Kind::KmsKey
            | Kind::IamRole => true,
            Kind::Record | Kind::LaunchTemplate => true,
            Kind::AutoScalingGroup => true,
            Kind::Object => true,
            Kind::Trail => true,
            Kind::InstanceProfile => true,
            _ => false,
        }
    }
}

/// The IAM policy of a role with its variables filled in.
pub fn render_policy(spec: &ClusterSpec, template: &Value, known: &Known) -> Value {
    let (pki, config, logs) = ignition::buckets(spec);
    let kms = known
        .get(KMS_KEY)
        .and_then(|a| a.get("arn"))
        .cloned()
        .unwrap_or_else(|| AFTER_APPLY.to_string());
    let vars: BTreeMap<&str, String> = [
        ("pki_bucket", pki),
        ("config_bucket", config),
        ("logs_bucket", logs),
        ("kms_key_arn", kms),
        ("cluster", spec.name.clone()),
    ]
    .into_iter()
    .collect();
    substitute(template, &vars)
}

/// Key of the VPC.
pub const VPC: &str = "vpc";
/// Key of the KMS key.
pub const KMS_KEY: &str = "kms/pki-unseal";
/// Key of the config bucket (it holds the state object).
pub const CONFIG_BUCKET: &str = "bucket/config";

fn subnet_key(tier: &str, az: usize) -> String {
    format!("subnet/{tier}/{az}")
}

fn sg_key(role: Role) -> String {
    format!("sg/{}", role.name())
}

/// Every resource of the cluster.
pub fn desired(spec: &ClusterSpec, env: &Env) -> Result<Vec<Resource>, String> {
    let n = &spec.name;
    let mut out = Vec::new();
    let mut add = |key: String, kind: Kind, group: Group, component: &str, desired: Desired| {
        out.push(Resource {
            key,
            kind,
            group,
            component: component.to_string(),
            desired,
        });
    };
    let private = spec.topology == Topology::Private;
    let azs = &env.azs;
    if azs.len() < spec.az_count {
        return Err(format!(
            "az_count is {} but the region has {} availability zones",
            spec.az_count,
            azs.len()
        ));
    }
    add(
        VPC.into(),
        Kind::Vpc,
        Group::Vpc,
        "vpc",
        Desired::Vpc {
            cidr: spec.vpc_cidr.to_string(),
        },
    );
    // Tier 0: load balancers and NAT (always public); tiers 1..=4: one per role.
    let tiers: Vec<(usize, String, bool)> = std::iter::once((0, "lb".to_string(), true))
        .chain(
            Role::ALL
                .iter()
                .enumerate()
                .map(|(i, r)| (i + 1, r.name().to_string(), !private)),
        )
        .collect();
    for (tier, name, public) in &tiers {
        for (i, az) in azs.iter().take(spec.az_count).enumerate() {
            add(
                subnet_key(name, i),
                Kind::Subnet,
                Group::Vpc,
                "vpc",
                Desired::Subnet {
                    cidr: spec.subnet_cidr(*tier, i).to_string(),
                    az: az.clone(),
                    public: *public,
                },
            );
        }
    }
    let subnets_of = |tier: &str| {
        (0..spec.az_count)
            .map(|i| subnet_key(tier, i))
            .collect::<Vec<_>>()
    };
    add(
        "igw".into(),
        Kind::InternetGateway,
        Group::Vpc,
        "vpc",
        Desired::InternetGateway,
    );
    let mut public_subnets = subnets_of("lb");
    if private {
        add(
            "eip/nat".into(),
            Kind::ElasticIp,
            Group::Vpc,
            "vpc",
            Desired::ElasticIp,
        );
        add(
            "nat".into(),
            Kind::NatGateway,
            Group::Vpc,
            "vpc",
            Desired::NatGateway {
                subnet: subnet_key("lb", 0),
                eip: "eip/nat".into(),
            },
        );
        let private_subnets: Vec<String> = Role::ALL
            .iter()
            .flat_map(|r| subnets_of(r.name()))
            .collect();
        add(
            "rtb/private".into(),
            Kind::RouteTable,
            Group::Vpc,
            "vpc",
            Desired::RouteTable {
                target: "nat".into(),
                subnets: private_subnets,
            },
        );
    } else {
        public_subnets.extend(Role::ALL.iter().flat_map(|r| subnets_of(r.name())));
    }
    add(
        "rtb/public".into(),
        Kind::RouteTable,
        Group::Vpc,
        "vpc",
        Desired::RouteTable {
            target: "igw".into(),
            subnets: public_subnets,
        },
    );
    // Security groups: least open; SG-to-SG where a role talks to a role.
    let vpc = spec.vpc_cidr.to_string();
    let tcp = |port: i32, source: Source| Rule {
        protocol: "tcp".into(),
        from: port,
        to: port,
        source,
    };
    for role in Role::ALL {
        let mut rules = match role {
            Role::PkiServer => vec![tcp(8200, Source::Cidr(vpc.clone()))],
            Role::Etcd => vec![
                tcp(2379, Source::Group(sg_key(Role::Controller))),
                tcp(2379, Source::Group(sg_key(Role::Etcd))),
                tcp(2380, Source::Group(sg_key(Role::Etcd))),
            ],
            Role::Controller => {
                let udp = |port: i32, source: Source| Rule {
                    protocol: "udp".into(),
                    from: port,
                    to: port,
                    source,
                };
                let mut r = vec![
                    tcp(6443, Source::Cidr(vpc.clone())),
                    // The kubelet API: the apiserver and metrics-server (which
                    // runs on workers) scrape every kubelet.
                    tcp(10250, Source::Group(sg_key(Role::Controller))),
                    tcp(10250, Source::Group(sg_key(Role::Worker))),
                    // flannel's VXLAN: the pod network reaches the DaemonSet
                    // pods on controllers, and the apiserver reaches pods.
                    udp(8472, Source::Group(sg_key(Role::Controller))),
                    udp(8472, Source::Group(sg_key(Role::Worker))),
                ];
                r.extend(
                    spec.api_cidrs
                        .iter()
                        .map(|c| tcp(6443, Source::Cidr(c.to_string()))),
                );
                r
            }
            Role::Worker => vec![
                tcp(10250, Source::Group(sg_key(Role::Controller))),
                Rule {
                    protocol: "-1".into(),
                    from: -1,
                    to: -1,
                    source: Source::Group(sg_key(Role::Worker)),
                },
                Rule {
                    protocol: "-1".into(),
                    from: -1,
                    to: -1,
                    source: Source::Group(sg_key(Role::Controller)),
                },
            ],
        };
        rules.extend(
            spec.ssh_cidrs
                .iter()
                .map(|c| tcp(22, Source::Cidr(c.to_string()))),
        );
        add(
            sg_key(role),
            Kind::SecurityGroup,
            Group::Vpc,
            role.name(),
            Desired::SecurityGroup {
                name: format!("{n}-{}", role.name()),
                rules,
            },
        );
    }
    add(
        "zone".into(),
        Kind::HostedZone,
        Group::Vpc,
        "dns",
        Desired::HostedZone {
            name: spec.private_zone.clone(),
        },
    );
    let (pki_b, config_b, logs_b) = ignition::buckets(spec);
    if spec.cloudtrail {
        add(
            TRAIL.into(),
            Kind::Trail,
            Group::S3,
            "audit",
            Desired::Trail {
                name: trail_name(spec),
                bucket: logs_b.clone(),
                prefix: TRAIL_PREFIX.into(),
            },
        );
    }
    for (key, name, purpose) in [
        ("bucket/pki", pki_b, BucketPurpose::Pki),
        (CONFIG_BUCKET, config_b, BucketPurpose::Config),
        ("bucket/logs", logs_b, BucketPurpose::Logs),
    ] {
        add(
            key.into(),
            Kind::Bucket,
            Group::S3,
            "s3",
            Desired::Bucket { name, purpose },
        );
    }
    add(
        KMS_KEY.into(),
        Kind::KmsKey,
        Group::Kms,
        "kms",
        Desired::KmsKey {
            alias: ignition::kms_alias(spec),
        },
    );
    for role in Role::ALL {
        let policy: Value = serde_json::from_str(policy_template(role))
            .map_err(|e| format!("policies/iam/{}.json: {e}", role.name()))?;
        let name = format!("{n}-{}", role.name());
        add(
            format!("iam/role/{}", role.name()),
            Kind::IamRole,
            Group::Iam,
            "iam",
            Desired::IamRole {
                name: name.clone(),
                policy,
            },
        );
        add(
            format!("iam/profile/{}", role.name()),
            Kind::InstanceProfile,
            Group::Iam,
            "iam",
            Desired::InstanceProfile { name },
        );
    }
    // pki-server: internal NLB on 8200, HTTPS health check on /v1/sys/health.
    add(
        "tg/pki".into(),
        Kind::TargetGroup,
        Group::Pki,
        "pki-server",
        Desired::TargetGroup {
            name: format!("{n}-pki"),
            port: 8200,
            health_path: Some("/v1/sys/health".into()),
        },
    );
    add(
        "lb/pki".into(),
        Kind::LoadBalancer,
        Group::Pki,
        "pki-server",
        Desired::LoadBalancer {
            name: format!("{n}-pki"),
            internal: true,
            subnets: subnets_of("lb"),
        },
    );
    add(
        "listener/pki".into(),
        Kind::Listener,
        Group::Pki,
        "pki-server",
        Desired::Listener {
            lb: "lb/pki".into(),
            tg: "tg/pki".into(),
            port: 8200,
        },
    );
    add(
        "record/pki".into(),
        Kind::Record,
        Group::Pki,
        "dns",
        Desired::Record {
            name: ignition::pki_dns(spec),
            lb: "lb/pki".into(),
        },
    );
    // API: public NLB on 6443 (operators, from `api_cidrs`).
    add(
        "tg/api".into(),
        Kind::TargetGroup,
        Group::Controller,
        "controller",
        Desired::TargetGroup {
            name: format!("{n}-api"),
            port: 6443,
            health_path: None,
        },
    );
    add(
        "lb/api".into(),
        Kind::LoadBalancer,
        Group::Controller,
        "controller",
        Desired::LoadBalancer {
            name: format!("{n}-api"),
            internal: false,
            subnets: subnets_of("lb"),
        },
    );
    add(
        "listener/api".into(),
        Kind::Listener,
        Group::Controller,
        "controller",
        Desired::Listener {
            lb: "lb/api".into(),
            tg: "tg/api".into(),
            port: 6443,
        },
    );
    // API inside the VPC: an internal NLB for the private record, so nodes
    // (kubelets, kube-proxy, node-client's kubeconfigs) reach the API without
    // leaving the VPC and whatever `api_cidrs` says.
    add(
        "tg/api-internal".into(),
        Kind::TargetGroup,
        Group::Controller,
        "controller",
        Desired::TargetGroup {
            name: format!("{n}-api-int"),
            port: 6443,
            health_path: None,
        },
    );
    add(
        "lb/api-internal".into(),
        Kind::LoadBalancer,
        Group::Controller,
        "controller",
        Desired::LoadBalancer {
            name: format!("{n}-api-int"),
            internal: true,
            subnets: subnets_of("lb"),
        },
    );
    add(
        "listener/api-internal".into(),
        Kind::Listener,
        Group::Controller,
        "controller",
        Desired::Listener {
            lb: "lb/api-internal".into(),
            tg: "tg/api-internal".into(),
            port: 6443,
        },
    );
    add(
        "record/api".into(),
        Kind::Record,
        Group::Controller,
        "dns",
        Desired::Record {
            name: ignition::api_dns(spec),
            lb: "lb/api-internal".into(),
        },
    );
    for role in Role::ALL {
        let r = spec.role(role);
        let name = format!("{n}-{}", role.name());
        let image = env
            .images
            .get(&role)
            .cloned()
            .ok_or_else(|| format!("no AMI for role {role}"))?;
        add(
            format!("lt/{}", role.name()),
            Kind::LaunchTemplate,
            Group::of(role),
            role.name(),
            Desired::LaunchTemplate {
                name: name.clone(),
                role,
                image,
                instance_type: r.instance_type.clone(),
                volume_gb: r.volume_gb,
                data_volume_gb: (role == Role::Etcd).then_some(spec.etcd_data_volume_gb),
                user_data: ignition::user_data(spec, role),
            },
        );
        let target_groups = match role {
            Role::PkiServer => vec!["tg/pki".to_string()],
            Role::Controller => vec!["tg/api".to_string(), "tg/api-internal".to_string()],
            _ => vec![],
        };
        add(
            format!("asg/{}", role.name()),
            Kind::AutoScalingGroup,
            Group::of(role),
            role.name(),
            Desired::AutoScalingGroup {
                name,
                min: r.min,
                max: r.max,
                desired: r.desired,
                subnets: subnets_of(role.name()),
                target_groups,
            },
        );
    }
    let (_, config_bucket, _) = ignition::buckets(spec);
    for a in &env.artifacts {
        add(
            format!("object/{}", a.key),
            Kind::Object,
            Group::S3,
            "config",
            Desired::Object {
                bucket: config_bucket.clone(),
                key: a.key.clone(),
                body: a.body.clone(),
                sha256: a.sha256.clone(),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
