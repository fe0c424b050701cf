//! The cluster spec: one TOML file, parsed and validated before any AWS call.
//!
//! `ClusterSpec::parse` is the only constructor; every refusal names the field
//! (`roles.worker.desired`, `pod_cidr`, ...). It does not talk to AWS: the AMI
//! lookup and everything observed live in `aws.rs`.

pub mod pins;

/// Prefix of our own tag keys.
pub const TAG_PREFIX: &str = "kube-aws-pki:";

use ipnet::Ipv4Net;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A node role: one launch template, one auto scaling group, one subnet per AZ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The CA service.
    PkiServer,
    /// etcd members.
    Etcd,
    /// Kubernetes control plane.
    Controller,
    /// Kubernetes workers.
    Worker,
}

impl Role {
    /// Every role, in dependency order.
    pub const ALL: [Role; 4] = [Role::PkiServer, Role::Etcd, Role::Controller, Role::Worker];

    /// The name used in the spec, resource names and `node-client --role`.
    pub fn name(self) -> &'static str {
        match self {
            Role::PkiServer => "pki-server",
            Role::Etcd => "etcd",
            Role::Controller => "controller",
            Role::Worker => "worker",
        }
    }

    /// Parse a role name.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// (min, max, desired, instance type, root volume GiB) from the issue.
    fn defaults(self) -> (i32, i32, i32, &'static str, i32) {
        match self {
            Role::PkiServer => (1, 1, 1, "t3.small", 20),
            Role::Etcd => (3, 3, 3, "t3.medium", 30),
            Role::Controller => (3, 3, 3, "t3.medium", 30),
            Role::Worker => (1, 5, 2, "t3.large", 50),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Public subnets only, or private node subnets behind one NAT gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// Every subnet routes to the internet gateway; instances get public IPs.
    Public,
    /// Node subnets route through a NAT gateway; only load balancer subnets are public.
    Private,
}

/// A role's group size and instance shape, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    /// Auto scaling group minimum.
    pub min: i32,
    /// Auto scaling group maximum.
    pub max: i32,
    /// Auto scaling group desired capacity.
    pub desired: i32,
    /// EC2 instance type.
    pub instance_type: String,
    /// Root volume size in GiB (gp3, encrypted).
    pub volume_gb: i32,
}

/// The validated cluster spec.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Cluster name: resource names and the `kubernetes.io/cluster/<name>` tag.
    pub name: String,
    /// AWS region (empty: the SDK's standard settings decide).
    pub region: Option<String>,
    /// Number of availability zones used.
    pub az_count: usize,
    /// VPC CIDR.
    pub vpc_cidr: Ipv4Net,
    /// Kubernetes service CIDR.
    pub service_cidr: Ipv4Net,
    /// Pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// Cluster DNS address (inside the service CIDR).
    pub cluster_dns: Ipv4Addr,
    /// Kubernetes version.
    pub kubernetes_version: String,
    /// etcd version.
    pub etcd_version: String,
    /// CIDRs allowed to SSH to nodes (none by default).
    pub ssh_cidrs: Vec<Ipv4Net>,
    /// CIDRs allowed to reach the public API load balancer.
    pub api_cidrs: Vec<Ipv4Net>,
    /// Private Route53 zone for the pki-server and api-server records.
    pub private_zone: String,
    /// Public or private subnets.
    pub topology: Topology,
    /// Prefix of the three bucket names (globally unique on AWS).
    pub bucket_prefix: String,
    /// A fixed AMI, or None to look up the newest Flatcar image.
    pub ami_id: Option<String>,
    /// Where the node-client and pki-server binaries uploaded to the config
    /// bucket are (default: the folder of the provisioner binary).
    pub artifacts_dir: Option<std::path::PathBuf>,
    /// Flatcar channel for the lookup.
    pub flatcar_channel: String,
    /// Owner account of the Flatcar images.
    pub ami_owner: String,
    /// Per-role sizes, one per [`Role`].
    pub roles: BTreeMap<Role, RoleSpec>,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// Pinned versions and SHA-256 checksums of everything nodes download.
    pub pins: crate::spec::pins::Pins,
    /// Flatcar update strategy per node role (not pki-server).
    pub updates: BTreeMap<Role, UpdateStrategy>,
    /// SSH access to nodes.
    pub ssh: SshAccess,
    /// Local folder of the per-role SSH key pairs (`ssh = "per-role"`).
    pub ssh_dir: Option<std::path::PathBuf>,
    /// The per-role OpenSSH public keys, once `ssh::load_or_create` ran.
    pub ssh_keys: BTreeMap<Role, String>,
    /// A CloudTrail trail into the logs bucket.
    pub cloudtrail: bool,
    /// Size of the etcd data volume in GiB (a second EBS volume on etcd nodes).
    pub etcd_data_volume_gb: i32,
    /// Extra tags on every resource.
    pub tags: BTreeMap<String, String>,
}

/// How a role's Flatcar nodes take OS updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateStrategy {
    /// Download updates; reboot one node at a time, drained first, through
    /// the Flatcar update operator (controllers and workers only).
    Coordinated,
    /// Download updates; never reboot by itself (an operator reboots or
    /// replaces the node).
    Off,
    /// Reboot as soon as an update is installed.
    Reboot,
    /// No updates at all.
    Disabled,
}

impl UpdateStrategy {
    /// The name used in the spec.
    pub fn name(self) -> &'static str {
        match self {
            UpdateStrategy::Coordinated => "coordinated",
            UpdateStrategy::Off => "off",
            UpdateStrategy::Reboot => "reboot",
            UpdateStrategy::Disabled => "disabled",
        }
    }
}

/// SSH access to nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SshAccess {
    /// No key anywhere and sshd masked (the default).
    None,
    /// One Ed25519 key pair per role, made and kept in `ssh_dir`.
    PerRole,
}

/// A spec refusal: the field and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// The file is not valid TOML or has an unknown or mistyped field.
    #[error("cluster spec: {0}")]
    Syntax(String),
    /// A field has an invalid value.
    #[error("cluster spec field `{field}`: {reason}")]
    Field {
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    region: Option<String>,
    #[serde(default = "default_az_count")]
    az_count: usize,
    #[serde(default = "default_vpc")]
    vpc_cidr: String,
    #[serde(default = "default_service")]
    service_cidr: String,
    #[serde(default = "default_pod")]
    pod_cidr: String,
    #[serde(default = "default_dns")]
    cluster_dns: String,
    #[serde(default = "default_k8s")]
    kubernetes_version: String,
    #[serde(default = "default_etcd")]
    etcd_version: String,
    #[serde(default)]
    ssh_cidrs: Vec<String>,
    #[serde(default = "default_api_cidrs")]
    api_cidrs: Vec<String>,
    private_zone: Option<String>,
    #[serde(default = "default_topology")]
    topology: Topology,
    bucket_prefix: Option<String>,
    artifacts_dir: Option<std::path::PathBuf>,
    #[serde(default)]
    ami: RawAmi,
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default = "default_domain")]
    cluster_domain: String,
    #[serde(default)]
    versions: crate::spec::pins::RawVersions,
    #[serde(default)]
    checksums: BTreeMap<String, String>,
    #[serde(default)]
    updates: BTreeMap<String, UpdateStrategy>,
    #[serde(default)]
    access: RawAccess,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    ssh: Option<SshAccess>,
    ssh_dir: Option<std::path::PathBuf>,
    #[serde(default)]
    cloudtrail: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmi {
    id: Option<String>,
    channel: Option<String>,
    owner: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    min: Option<i32>,
    max: Option<i32>,
    desired: Option<i32>,
    instance_type: Option<String>,
    volume_gb: Option<i32>,
    data_volume_gb: Option<i32>,
}

fn default_az_count() -> usize {
    3
}
fn default_vpc() -> String {
    "10.240.0.0/16".into()
}
fn default_service() -> String {
    "10.32.0.0/24".into()
}
fn default_pod() -> String {
    "10.200.0.0/16".into()
}
fn default_dns() -> String {
    "10.32.0.10".into()
}
fn default_k8s() -> String {
    "1.34.2".into()
}
fn default_etcd() -> String {
    "3.6.6".into()
}
fn default_domain() -> String {
    "cluster.local".into()
}
fn default_api_cidrs() -> Vec<String> {
    vec!["0.0.0.0/0".into()]
}
fn default_topology() -> Topology {
    Topology::Private
}

/// The owner account of the Flatcar Container Linux AMIs.
pub const FLATCAR_OWNER: &str = "075585003325";

fn cidr(name: &str, value: &str) -> Result<Ipv4Net, SpecError> {
    let net: Ipv4Net = value
        .parse()
        .map_err(|_| field(name, format!("{value:?} is not an IPv4 CIDR")))?;
    if net.trunc() != net {
        return Err(field(
            name,
            format!(
                "{value:?} has host bits set (did you mean {}?)",
                net.trunc()
            ),
        ));
    }
    Ok(net)
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=20).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.last() != Some(&b'-')
        && !name.contains("--")
}

fn valid_bucket_prefix(p: &str) -> bool {
    let b = p.as_bytes();
    (3..=50).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.last() != Some(&b'-')
}

impl ClusterSpec {
    /// The first host address of the service CIDR: the `kubernetes`
    /// Service's cluster IP (a SAN of the apiserver's certificate).
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        self.service_cidr
            .hosts()
            .next()
            .unwrap_or_else(|| self.service_cidr.network())
    }

    /// Parse and validate a spec file's text.
    pub fn parse(text: &str) -> Result<ClusterSpec, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| SpecError::Syntax(e.to_string()))?;
        Self::validate(raw)
    }

    fn validate(raw: RawSpec) -> Result<ClusterSpec, SpecError> {
        if !valid_name(&raw.name) {
            return Err(field(
                "name",
                format!(
                    "{:?} must be 1-20 characters of a-z, 0-9 and single '-', starting with a letter and not ending with '-'",
                    raw.name
                ),
            ));
        }
        if let Some(r) = &raw.region
            && (r.is_empty()
                || !r
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'))
        {
            return Err(field("region", format!("{r:?} is not a region name")));
        }
        if !(1..=6).contains(&raw.az_count) {
            return Err(field(
                "az_count",
                format!("{} is not in 1..=6", raw.az_count),
            ));
        }
        let vpc = cidr("vpc_cidr", &raw.vpc_cidr)?;
        if !(16..=22).contains(&vpc.prefix_len()) {
            return Err(field(
                "vpc_cidr",
                format!("prefix /{} must be between /16 and /22", vpc.prefix_len()),
            ));
        }
        let service = cidr("service_cidr", &raw.service_cidr)?;
        let pod = cidr("pod_cidr", &raw.pod_cidr)?;
        if overlaps(&service, &vpc) {
            return Err(field(
                "service_cidr",
                format!("{service} overlaps vpc_cidr {vpc}"),
            ));
        }
        if overlaps(&pod, &vpc) {
            return Err(field("pod_cidr", format!("{pod} overlaps vpc_cidr {vpc}")));
        }
        if overlaps(&pod, &service) {
            return Err(field(
                "pod_cidr",
                format!("{pod} overlaps service_cidr {service}"),
            ));
        }
        let dns: Ipv4Addr = raw.cluster_dns.parse().map_err(|_| {
            field(
                "cluster_dns",
                format!("{:?} is not an IPv4 address", raw.cluster_dns),
            )
        })?;
        if !service.contains(&dns) || dns == service.network() || dns == service.broadcast() {
            return Err(field(
                "cluster_dns",
                format!("{dns} is not a host address inside service_cidr {service}"),
            ));
        }
        for (name, v) in [
            ("kubernetes_version", &raw.kubernetes_version),
            ("etcd_version", &raw.etcd_version),
        ] {
            let parts: Vec<&str> = v.trim_start_matches('v').split('.').collect();
            if parts.len() != 3
                || parts
                    .iter()
                    .any(|p| p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()))
            {
                return Err(field(name, format!("{v:?} is not a version like 1.2.3")));
            }
        }
        let ssh_cidrs = raw
            .ssh_cidrs
            .iter()
            .enumerate()
            .map(|(i, c)| cidr(&format!("ssh_cidrs[{i}]"), c))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, c) in ssh_cidrs.iter().enumerate() {
            if c.prefix_len() == 0 {
                return Err(field(
                    format!("ssh_cidrs[{i}]"),
                    "SSH from 0.0.0.0/0 is refused; name your operator network",
                ));
            }
        }
        let api_cidrs = raw
            .api_cidrs
            .iter()
            .enumerate()
            .map(|(i, c)| cidr(&format!("api_cidrs[{i}]"), c))
            .collect::<Result<Vec<_>, _>>()?;
        let private_zone = raw
            .private_zone
            .unwrap_or_else(|| format!("{}.cluster.internal", raw.name));
        let zone_ok = !private_zone.is_empty()
            && private_zone.len() <= 200
            && private_zone.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            });
        if !zone_ok {
            return Err(field(
                "private_zone",
                format!("{private_zone:?} is not a DNS name"),
            ));
        }
        let bucket_prefix = raw
            .bucket_prefix
            .unwrap_or_else(|| format!("kube-aws-pki-{}", raw.name));
        if !valid_bucket_prefix(&bucket_prefix) {
            return Err(field(
                "bucket_prefix",
                format!("{bucket_prefix:?} must be 3-50 characters of a-z, 0-9 and '-'"),
            ));
        }
        if let Some(id) = &raw.ami.id
            && !(id.starts_with("ami-") && id.len() > 4)
        {
            return Err(field("ami.id", format!("{id:?} is not an AMI id")));
        }
        let mut roles = BTreeMap::new();
        for name in raw.roles.keys() {
            if Role::from_name(name).is_none() {
                return Err(field(
                    format!("roles.{name}"),
                    "unknown role (known: pki-server, etcd, controller, worker)",
                ));
            }
        }
        for role in Role::ALL {
            let r = raw.roles.get(role.name());
            let (dmin, dmax, ddes, dtype, dvol) = role.defaults();
            let f = |n: &str| format!("roles.{}.{n}", role.name());
            let min = r.and_then(|r| r.min).unwrap_or(dmin);
            let max = r.and_then(|r| r.max).unwrap_or(dmax);
            let desired = r.and_then(|r| r.desired).unwrap_or(ddes);
            if min < 0 {
                return Err(field(f("min"), format!("{min} is negative")));
            }
            if max < min || max > 100 {
                return Err(field(
                    f("max"),
                    format!("{max} is not in min..=100 ({min}..=100)"),
                ));
            }
            if !(min..=max).contains(&desired) {
                return Err(field(
                    f("desired"),
                    format!("{desired} is outside min..max ({min}..{max})"),
                ));
            }
            if role == Role::PkiServer && max > 1 {
                return Err(field(f("max"), "pki-server runs as one instance (max 1)"));
            }
            let instance_type = r
                .and_then(|r| r.instance_type.clone())
                .unwrap_or_else(|| dtype.to_string());
            if instance_type.split('.').count() != 2 || instance_type.split('.').any(str::is_empty)
            {
                return Err(field(
                    f("instance_type"),
                    format!("{instance_type:?} is not an instance type"),
                ));
            }
            let volume_gb = r.and_then(|r| r.volume_gb).unwrap_or(dvol);
            if !(8..=16384).contains(&volume_gb) {
                return Err(field(
                    f("volume_gb"),
                    format!("{volume_gb} is not in 8..=16384"),
                ));
            }
            roles.insert(
                role,
                RoleSpec {
                    min,
                    max,
                    desired,
                    instance_type,
                    volume_gb,
                },
            );
        }
        for k in raw.tags.keys() {
            if k.is_empty()
                || k.len() > 127
                || k.starts_with("aws:")
                || k.starts_with("kubernetes.io/cluster/")
                || k.starts_with(TAG_PREFIX)
            {
                return Err(field(format!("tags.{k}"), "reserved or invalid tag key"));
            }
        }
        let domain_ok = raw.cluster_domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        });
        if !domain_ok || raw.cluster_domain.len() > 200 {
            return Err(field(
                "cluster_domain",
                format!("{:?} is not a DNS domain", raw.cluster_domain),
            ));
        }
        let kubernetes_version = raw.kubernetes_version.trim_start_matches('v').to_string();
        let etcd_version = raw.etcd_version.trim_start_matches('v').to_string();
        let pins = crate::spec::pins::Pins::resolve(
            &kubernetes_version,
            &etcd_version,
            &raw.versions,
            &raw.checksums,
        )?;
        let mut updates = BTreeMap::new();
        for name in raw.updates.keys() {
            match Role::from_name(name) {
                Some(Role::PkiServer) | None => {
                    return Err(field(
                        format!("updates.{name}"),
                        "not a node role (etcd, controller, worker)",
                    ));
                }
                Some(_) => {}
            }
        }
        for role in [Role::Etcd, Role::Controller, Role::Worker] {
            let default = if role == Role::Etcd {
                UpdateStrategy::Off
            } else {
                UpdateStrategy::Coordinated
            };
            let s = raw.updates.get(role.name()).copied().unwrap_or(default);
            if role == Role::Etcd && s == UpdateStrategy::Coordinated {
                return Err(field(
                    "updates.etcd",
                    "etcd nodes run no kubelet, so the update operator cannot drain them; use off, reboot or disabled",
                ));
            }
            updates.insert(role, s);
        }
        let etcd_data_volume_gb = raw
            .roles
            .get("etcd")
            .and_then(|r| r.data_volume_gb)
            .unwrap_or(20);
        if !(1..=16384).contains(&etcd_data_volume_gb) {
            return Err(field(
                "roles.etcd.data_volume_gb",
                format!("{etcd_data_volume_gb} is not in 1..=16384"),
            ));
        }
        for (name, r) in &raw.roles {
            if name != "etcd" && r.data_volume_gb.is_some() {
                return Err(field(
                    format!("roles.{name}.data_volume_gb"),
                    "only etcd nodes have a data volume",
                ));
            }
        }
        Ok(ClusterSpec {
            cluster_domain: raw.cluster_domain,
            pins,
            updates,
            ssh: raw.access.ssh.unwrap_or(SshAccess::None),
            ssh_dir: raw.access.ssh_dir,
            ssh_keys: BTreeMap::new(),
            cloudtrail: raw.access.cloudtrail,
            etcd_data_volume_gb,
            name: raw.name,
            region: raw.region,
            az_count: raw.az_count,
            vpc_cidr: vpc,
            service_cidr: service,
            pod_cidr: pod,
            cluster_dns: dns,
            kubernetes_version,
            etcd_version,
            ssh_cidrs,
            api_cidrs,
            private_zone,
            topology: raw.topology,
            bucket_prefix,
            artifacts_dir: raw.artifacts_dir,
            ami_id: raw.ami.id,
            flatcar_channel: raw.ami.channel.unwrap_or_else(|| "stable".into()),
            ami_owner: raw.ami.owner.unwrap_or_else(|| FLATCAR_OWNER.into()),
            roles,
            tags: raw.tags,
        })
    }

    /// The update strategy of a node role (`Off` for pki-server, which has none).
    pub fn update_strategy(&self, role: Role) -> UpdateStrategy {
        self.updates
            .get(&role)
            .copied()
            .unwrap_or(UpdateStrategy::Off)
    }

    /// The size and shape of one role (always present after validation).
    pub fn role(&self, role: Role) -> &RoleSpec {
        // Validation inserts every role of Role::ALL.
        &self.roles[&role]
    }

    /// The subnet of `tier` (0 = load balancers/NAT, 1.. = roles) in AZ `az`:
    /// the VPC split into 32 equal parts, slot `tier * 6 + az`.
    pub fn subnet_cidr(&self, tier: usize, az: usize) -> Ipv4Net {
        let prefix = self.vpc_cidr.prefix_len() + 5;
        let size = 1u32 << (32 - prefix);
        let base = u32::from(self.vpc_cidr.network());
        let slot = (tier * 6 + az) as u32;
        // prefix <= 27 by validation (vpc /16../22), slot < 32: always valid.
        Ipv4Net::new(Ipv4Addr::from(base + slot * size), prefix).unwrap_or(self.vpc_cidr)
    }
}

#[cfg(test)]
mod tests;
