//! The AWS target against moto.

use crate::harness::{Moto, NEWEST_FLATCAR};
use aws_sdk_ec2::types::Filter;
use base64::Engine;
use provisioner::Provisioner;
use provisioner::model::Group;
use provisioner::plan::Action;
use provisioner::spec::Role;
use std::collections::BTreeSet;

const SPEC: &str = "name = \"demo\"\nregion = \"us-east-1\"\nssh_cidrs = [\"192.0.2.0/24\"]\n[tags]\nteam = \"pki\"\n";
const OWNER: &str = "kubernetes.io/cluster/demo";

fn owned() -> Filter {
    Filter::builder()
        .name(format!("tag:{OWNER}"))
        .values("owned")
        .build()
}

/// Number of resources of each EC2 kind tagged as owned by the cluster.
async fn owned_ec2(p: &Provisioner) -> Vec<(&'static str, usize)> {
    let ec2 = &p.aws.ec2;
    let vpcs = ec2
        .describe_vpcs()
        .filters(owned())
        .send()
        .await
        .unwrap()
        .vpcs()
        .len();
    let subnets = ec2
        .describe_subnets()
        .filters(owned())
        .send()
        .await
        .unwrap()
        .subnets()
        .len();
    let igws = ec2
        .describe_internet_gateways()
        .filters(owned())
        .send()
        .await
        .unwrap()
        .internet_gateways()
        .len();
    let eips = ec2
        .describe_addresses()
        .filters(owned())
        .send()
        .await
        .unwrap()
        .addresses()
        .len();
    let nats = ec2
        .describe_nat_gateways()
        .filter(owned())
        .send()
        .await
        .unwrap()
        .nat_gateways()
        .iter()
        .filter(|n| n.state().map(|s| s.as_str()) != Some("deleted"))
        .count();
    let rts = ec2
        .describe_route_tables()
        .filters(owned())
        .send()
        .await
        .unwrap()
        .route_tables()
        .len();
    let sgs = ec2
        .describe_security_groups()
        .filters(owned())
        .send()
        .await
        .unwrap()
        .security_groups()
        .len();
    let lts = ec2
        .describe_launch_templates()
        .filters(owned())
        .send()
        .await
        .unwrap()
        .launch_templates()
        .len();
    vec![
        ("vpc", vpcs),
        ("subnet", subnets),
        ("igw", igws),
        ("eip", eips),
        ("nat", nats),
        ("route table", rts),
        ("security group", sgs),
        ("launch template", lts),
    ]
}

const FULL_EC2: [(&str, usize); 8] = [
    ("vpc", 1),
    ("subnet", 15),
    ("igw", 1),
    ("eip", 1),
    ("nat", 1),
    ("route table", 2),
    ("security group", 4),
    ("launch template", 4),
];

fn ingress(
    g: &aws_sdk_ec2::types::SecurityGroup,
    names: &std::collections::BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in g.ip_permissions() {
        let port = format!(
            "{}:{}",
            p.ip_protocol().unwrap_or_default(),
            p.from_port().unwrap_or(-1)
        );
        for r in p.ip_ranges() {
            out.insert(format!("{port} from {}", r.cidr_ip().unwrap_or_default()));
        }
        for u in p.user_id_group_pairs() {
            let id = u.group_id().unwrap_or_default();
            out.insert(format!(
                "{port} from {}",
                names.get(id).cloned().unwrap_or(id.to_string())
            ));
        }
    }
    out
}

async fn check_everything_applied(p: &Provisioner) {
    assert_eq!(owned_ec2(p).await, FULL_EC2.to_vec());
    let ec2 = &p.aws.ec2;
    // VPC and subnets: CIDRs from the spec, one subnet per role per AZ.
    let vpc = ec2.describe_vpcs().filters(owned()).send().await.unwrap();
    assert_eq!(vpc.vpcs()[0].cidr_block(), Some("10.240.0.0/16"));
    let subnets = ec2
        .describe_subnets()
        .filters(owned())
        .send()
        .await
        .unwrap();
    let mut cidrs: Vec<String> = subnets
        .subnets()
        .iter()
        .map(|s| s.cidr_block().unwrap().to_string())
        .collect();
    cidrs.sort();
    let mut want: Vec<String> = (0..5)
        .flat_map(|t| (0..3).map(move |a| (t, a)))
        .map(|(t, a)| p.spec.subnet_cidr(t, a).to_string())
        .collect();
    want.sort();
    assert_eq!(cidrs, want);
    assert!(cidrs.contains(&"10.240.0.0/21".to_string()), "{cidrs:?}");
    let azs: BTreeSet<&str> = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.availability_zone())
        .collect();
    assert_eq!(azs.len(), 3);
    for s in subnets.subnets() {
        let tag = |k: &str| {
            s.tags()
                .iter()
                .find(|t| t.key() == Some(k))
                .and_then(|t| t.value())
                .map(str::to_string)
        };
        assert_eq!(tag("kube-aws-pki:component").as_deref(), Some("vpc"));
        assert_eq!(
            tag("team").as_deref(),
            Some("pki"),
            "extra tags on every resource"
        );
        let public = tag("kube-aws-pki:resource")
            .unwrap()
            .starts_with("subnet/lb/");
        assert_eq!(
            s.map_public_ip_on_launch(),
            Some(public),
            "private topology: only lb subnets are public"
        );
    }
    // Security groups: least-open rules.
    let sgs = ec2
        .describe_security_groups()
        .filters(owned())
        .send()
        .await
        .unwrap();
    let names: std::collections::BTreeMap<String, String> = sgs
        .security_groups()
        .iter()
        .map(|g| {
            (
                g.group_id().unwrap().to_string(),
                g.group_name().unwrap().to_string(),
            )
        })
        .collect();
    let rules = |name: &str| {
        let g = sgs
            .security_groups()
            .iter()
            .find(|g| g.group_name() == Some(name))
            .expect(name);
        ingress(g, &names)
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        rules("demo-etcd"),
        set(&[
            "tcp:2379 from demo-controller",
            "tcp:2379 from demo-etcd",
            "tcp:2380 from demo-etcd",
            "tcp:22 from 192.0.2.0/24"
        ])
    );
    assert_eq!(
        rules("demo-pki-server"),
        set(&["tcp:8200 from 10.240.0.0/16", "tcp:22 from 192.0.2.0/24"])
    );
    for g in sgs.security_groups() {
        for r in ingress(g, &names) {
            assert!(
                !(r.starts_with("tcp:22 ") && r.ends_with("0.0.0.0/0")),
                "SSH open to the world: {r}"
            );
        }
    }
    // Launch templates: Flatcar image, IMDSv2, encrypted volume, Ignition user data.
    for role in Role::ALL {
        let name = format!("demo-{}", role.name());
        let v = ec2
            .describe_launch_template_versions()
            .launch_template_name(&name)
            .versions("$Default")
            .send()
            .await
            .unwrap();
        let data = v.launch_template_versions()[0]
            .launch_template_data()
            .unwrap();
        assert_eq!(
            data.image_id(),
            Some(NEWEST_FLATCAR),
            "{name}: newest stable x86_64 Flatcar"
        );
        assert_eq!(
            data.metadata_options()
                .unwrap()
                .http_tokens()
                .unwrap()
                .as_str(),
            "required",
            "{name}"
        );
        let ebs = data.block_device_mappings()[0].ebs().unwrap();
        assert_eq!(ebs.encrypted(), Some(true), "{name}");
        assert_eq!(
            ebs.volume_size(),
            Some(p.spec.role(role).volume_gb),
            "{name}"
        );
        assert_eq!(
            data.instance_type().unwrap().as_str(),
            p.spec.role(role).instance_type,
            "{name}"
        );
        assert_eq!(
            data.iam_instance_profile().unwrap().name(),
            Some(name.as_str())
        );
        let ud = base64::engine::general_purpose::STANDARD
            .decode(data.user_data().unwrap())
            .unwrap();
        let ign: serde_json::Value = serde_json::from_slice(&ud).unwrap();
        assert!(
            ign["ignition"]["version"]
                .as_str()
                .unwrap()
                .starts_with("3."),
            "{name}"
        );
        // The user data points at the role's full config in the config
        // bucket, pinned by its SHA-256: fetch it as Ignition would.
        let replace = &ign["ignition"]["config"]["replace"];
        let key = provisioner::ignition::config_key(&p.spec, role);
        assert!(
            key.starts_with(&format!("ignition/{}-", role.name())),
            "{key}"
        );
        assert_eq!(
            replace["source"],
            format!("s3://kube-aws-pki-demo-config/{key}"),
            "{name}"
        );
        let full = p
            .aws
            .s3
            .get_object()
            .bucket("kube-aws-pki-demo-config")
            .key(&key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(
            replace["verification"]["hash"],
            format!("sha256-{}", provisioner::sha256_hex(&full)),
            "{name}: the pointer pins the uploaded config"
        );
        // etcd members get their data volume.
        let data_volume = data
            .block_device_mappings()
            .iter()
            .find(|b| b.device_name() == Some("/dev/xvdb"))
            .and_then(|b| b.ebs());
        assert_eq!(
            data_volume.and_then(|e| e.volume_size()),
            (role == Role::Etcd).then_some(p.spec.etcd_data_volume_gb),
            "{name}"
        );
        assert!(data_volume.is_none_or(|e| e.encrypted() == Some(true)));
        let ud = full.to_vec();
        let text = String::from_utf8(ud).unwrap();
        if role == Role::PkiServer {
            assert!(
                text.contains("--kms-key-id alias/demo-pki-unseal"),
                "{name}"
            );
            assert!(
                text.contains("--storage s3://kube-aws-pki-demo-pki/pki"),
                "{name}"
            );
        } else {
            assert!(
                text.contains("node-client fetch-cert --role ${NODE_ROLE}"),
                "{name}"
            );
            assert!(
                text.contains(&format!("NODE_ROLE={}%0A", role.name())),
                "{name}"
            );
        }
    }
    // Auto scaling groups: sizes from the spec, spread over the role's subnets.
    let groups = p
        .aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("demo-pki-server")
        .auto_scaling_group_names("demo-etcd")
        .auto_scaling_group_names("demo-controller")
        .auto_scaling_group_names("demo-worker")
        .send()
        .await
        .unwrap();
    assert_eq!(groups.auto_scaling_groups().len(), 4);
    for g in groups.auto_scaling_groups() {
        let name = g.auto_scaling_group_name().unwrap();
        let role = Role::from_name(name.trim_start_matches("demo-")).unwrap();
        let r = p.spec.role(role);
        assert_eq!(
            (g.min_size(), g.max_size(), g.desired_capacity()),
            (Some(r.min), Some(r.max), Some(r.desired)),
            "{name}"
        );
        assert_eq!(
            g.vpc_zone_identifier().unwrap().split(',').count(),
            3,
            "{name}"
        );
        assert!(g.tags().iter().any(|t| t.key() == Some(OWNER)
            && t.value() == Some("owned")
            && t.propagate_at_launch() == Some(true)));
        // pki-server behind its internal NLB; controllers behind the public
        // API NLB and the internal one the private `api.` record names.
        let tgs = g.target_group_arns().len();
        let want = match role {
            Role::PkiServer => 1,
            Role::Controller => 2,
            _ => 0,
        };
        assert_eq!(tgs, want, "{name}");
    }
    // Buckets: versioning, encryption, public access blocked.
    for b in [
        "kube-aws-pki-demo-pki",
        "kube-aws-pki-demo-config",
        "kube-aws-pki-demo-logs",
    ] {
        let v = p
            .aws
            .s3
            .get_bucket_versioning()
            .bucket(b)
            .send()
            .await
            .unwrap();
        assert_eq!(v.status().map(|s| s.as_str()), Some("Enabled"), "{b}");
        let pab = p
            .aws
            .s3
            .get_public_access_block()
            .bucket(b)
            .send()
            .await
            .unwrap();
        assert_eq!(
            pab.public_access_block_configuration()
                .unwrap()
                .block_public_policy(),
            Some(true),
            "{b}"
        );
        p.aws
            .s3
            .get_bucket_encryption()
            .bucket(b)
            .send()
            .await
            .unwrap();
    }
    // IAM: pki-server may use its bucket and the key; nodes may not.
    let pki_policy = p
        .aws
        .iam
        .get_role_policy()
        .role_name("demo-pki-server")
        .policy_name("cluster")
        .send()
        .await
        .unwrap();
    let doc = provisioner::aws::policy_json(pki_policy.policy_document());
    let text = doc.to_string();
    assert!(
        text.contains("arn:aws:s3:::kube-aws-pki-demo-pki/*") && text.contains("arn:aws:kms:"),
        "{text}"
    );
    let worker = p
        .aws
        .iam
        .get_role_policy()
        .role_name("demo-worker")
        .policy_name("cluster")
        .send()
        .await
        .unwrap();
    let text = provisioner::aws::policy_json(worker.policy_document()).to_string();
    assert!(
        !text.contains("kms") && !text.contains("demo-pki/"),
        "{text}"
    );
    // Load balancers: internal pki NLB with an HTTPS health check on /v1/sys/health:8200.
    let tg = p
        .aws
        .elb
        .describe_target_groups()
        .names("demo-pki")
        .send()
        .await
        .unwrap();
    let tg = &tg.target_groups()[0];
    assert_eq!(
        (tg.port(), tg.health_check_path(), tg.health_check_port()),
        (Some(8200), Some("/v1/sys/health"), Some("8200"))
    );
    let lbs = p
        .aws
        .elb
        .describe_load_balancers()
        .names("demo-pki")
        .names("demo-api")
        .send()
        .await
        .unwrap();
    let scheme = |n: &str| {
        lbs.load_balancers()
            .iter()
            .find(|l| l.load_balancer_name() == Some(n))
            .unwrap()
            .scheme()
            .unwrap()
            .as_str()
            .to_string()
    };
    assert_eq!(scheme("demo-pki"), "internal");
    assert_eq!(scheme("demo-api"), "internet-facing");
    // Route53: private zone with pki and api records.
    let zones = p
        .aws
        .r53
        .list_hosted_zones_by_name()
        .dns_name("demo.cluster.internal.")
        .send()
        .await
        .unwrap();
    let zone = zones
        .hosted_zones()
        .iter()
        .find(|z| z.name() == "demo.cluster.internal.")
        .unwrap();
    assert!(zone.config().unwrap().private_zone());
    let sets = p
        .aws
        .r53
        .list_resource_record_sets()
        .hosted_zone_id(zone.id())
        .send()
        .await
        .unwrap();
    let names: BTreeSet<&str> = sets
        .resource_record_sets()
        .iter()
        .filter(|s| s.r#type().as_str() == "A")
        .map(|s| s.name())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["api.demo.cluster.internal.", "pki.demo.cluster.internal."])
    );
    // The private API name is the internal NLB: nodes never leave the VPC.
    let lbs = p.aws.elb.describe_load_balancers().send().await.unwrap();
    let internal_api = lbs
        .load_balancers()
        .iter()
        .find(|l| l.load_balancer_name() == Some("demo-api-int"))
        .expect("internal API load balancer");
    assert_eq!(internal_api.scheme().map(|s| s.as_str()), Some("internal"));
    let api = sets
        .resource_record_sets()
        .iter()
        .find(|s| s.name() == "api.demo.cluster.internal.")
        .unwrap();
    assert_eq!(
        api.alias_target()
            .unwrap()
            .dns_name()
            .trim_end_matches('.')
            .to_ascii_lowercase(),
        internal_api.dns_name().unwrap().to_ascii_lowercase()
    );
    // The config bucket holds what nodes install at first boot: the binaries
    // and the profile, each with the SHA-256 plan compares.
    for key in [
        "bin/node-client",
        "bin/pki-server",
        "policies/profile.toml",
        "policies/acl/worker.hcl",
    ] {
        let o = p
            .aws
            .s3
            .get_object()
            .bucket("kube-aws-pki-demo-config")
            .key(key)
            .send()
            .await
            .unwrap();
        let sha = o
            .metadata()
            .and_then(|m| m.get("sha256"))
            .cloned()
            .unwrap_or_default();
        let body = o.body.collect().await.unwrap().into_bytes();
        assert_eq!(sha, provisioner::sha256_hex(&body), "{key}");
    }
    // KMS key for auto-unseal.
    let aliases = p.aws.kms.list_aliases().send().await.unwrap();
    assert!(
        aliases
            .aliases()
            .iter()
            .any(|a| a.alias_name() == Some("alias/demo-pki-unseal"))
    );
}

#[tokio::test]
async fn apply_creates_everything_and_a_second_apply_makes_no_mutating_call() {
    let Some(moto) = Moto::start() else { return };
    let p = moto.provisioner(SPEC).await;
    let first = p.plan(&[]).await.unwrap();
    assert!(first.changes.iter().all(|c| c.action == Action::Create));
    assert_eq!(p.aws.recorder.mutations(), 0, "plan writes nothing");
    let applied = p.apply(&[]).await.unwrap();
    assert_eq!(applied.changes.len(), first.changes.len());
    check_everything_applied(&p).await;

    p.aws.recorder.reset();
    let again = p.apply(&[]).await.unwrap();
    assert!(again.is_empty(), "second apply planned changes:\n{again}");
    assert_eq!(
        p.aws.recorder.mutations(),
        0,
        "second apply sent {:?}",
        p.aws.recorder.log()
    );
    let plan = p.plan(&[]).await.unwrap();
    assert!(plan.is_empty(), "plan after apply:\n{plan}");
}

#[tokio::test]
async fn cloudtrail_option_is_one_trail_into_the_logs_bucket_and_destroy_removes_it() {
    let Some(moto) = Moto::start() else { return };
    let p = moto
        .provisioner(&format!("{SPEC}[access]\ncloudtrail = true\n"))
        .await;
    p.apply(&[]).await.unwrap();
    let trails = p
        .aws
        .cloudtrail
        .describe_trails()
        .trail_name_list("demo-trail")
        .send()
        .await
        .unwrap();
    let t = &trails.trail_list()[0];
    assert_eq!(t.s3_bucket_name(), Some("kube-aws-pki-demo-logs"));
    assert_eq!(t.s3_key_prefix(), Some("cloudtrail"));
    assert_eq!(t.is_multi_region_trail(), Some(true));
    assert_eq!(t.log_file_validation_enabled(), Some(true));
    let status = p
        .aws
        .cloudtrail
        .get_trail_status()
        .name("demo-trail")
        .send()
        .await
        .unwrap();
    assert_eq!(status.is_logging(), Some(true));
    // CloudTrail may write only its own prefix of the logs bucket.
    let policy = p
        .aws
        .s3
        .get_bucket_policy()
        .bucket("kube-aws-pki-demo-logs")
        .send()
        .await
        .unwrap();
    let policy: serde_json::Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
    let write = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "CloudTrailWrite")
        .unwrap();
    assert!(
        write["Resource"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:s3:::kube-aws-pki-demo-logs/cloudtrail/AWSLogs/"),
        "{write}"
    );
    assert!(
        write["Condition"]["StringEquals"]["aws:SourceArn"]
            .as_str()
            .unwrap()
            .ends_with(":trail/demo-trail")
    );
    // Idempotent, and a trail we did not make is never touched.
    p.aws.recorder.reset();
    assert!(p.apply(&[]).await.unwrap().is_empty());
    assert_eq!(p.aws.recorder.mutations(), 0, "{:?}", p.aws.recorder.log());
    p.destroy().await.unwrap();
    let left = p.aws.cloudtrail.describe_trails().send().await.unwrap();
    assert!(
        !left
            .trail_list()
            .iter()
            .any(|t| t.name() == Some("demo-trail")),
        "trail left after destroy"
    );
}

#[tokio::test]
async fn changing_worker_desired_is_exactly_one_change_and_one_call() {
    let Some(moto) = Moto::start() else { return };
    let p = moto.provisioner(SPEC).await;
    p.apply(&[]).await.unwrap();
    let changed = moto
        .provisioner(&format!("{SPEC}[roles.worker]\ndesired = 4\n"))
        .await;
    let plan = changed.plan(&[]).await.unwrap();
    let got: Vec<(&str, &Action)> = plan
        .changes
        .iter()
        .map(|c| (c.key.as_str(), &c.action))
        .collect();
    assert_eq!(
        got,
        vec![("asg/worker", &Action::Update(vec!["desired".to_string()]))]
    );
    changed.apply(&[]).await.unwrap();
    let calls: Vec<String> = changed
        .aws
        .recorder
        .log()
        .into_iter()
        .filter(|c| !c.ends_with(".PutObject")) // the state lock: taken and released
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].ends_with("UpdateAutoScalingGroup"), "{calls:?}");
    let g = changed
        .aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("demo-worker")
        .send()
        .await
        .unwrap();
    assert_eq!(g.auto_scaling_groups()[0].desired_capacity(), Some(4));
    assert!(changed.plan(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_new_node_client_build_is_exactly_one_upload() {
    let Some(moto) = Moto::start() else { return };
    let p = moto.provisioner(SPEC).await;
    p.apply(&[]).await.unwrap();
    std::fs::write(
        moto.artifacts().join("node-client"),
        "#!/bin/sh\necho a newer build\n",
    )
    .unwrap();
    let plan = p.plan(&[]).await.unwrap();
    let got: Vec<(&str, &Action)> = plan
        .changes
        .iter()
        .map(|c| (c.key.as_str(), &c.action))
        .collect();
    assert_eq!(
        got,
        vec![(
            "object/bin/node-client",
            &Action::Update(vec!["sha256".to_string()])
        )]
    );
    p.aws.recorder.reset();
    p.apply(&[]).await.unwrap();
    let calls = p.aws.recorder.log();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls.iter().all(|c| c.ends_with(".PutObject")),
        "lock, upload, release: {calls:?}"
    );
    assert!(p.plan(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn only_applies_the_named_groups() {
    let Some(moto) = Moto::start() else { return };
    let p = moto.provisioner(SPEC).await;
    p.apply(&[Group::S3, Group::Kms]).await.unwrap();
    let plan = p.plan(&[]).await.unwrap();
    assert!(plan.changes.iter().all(|c| c.action == Action::Create));
    assert!(
        !plan
            .changes
            .iter()
            .any(|c| c.key.starts_with("bucket/") || c.key.starts_with("kms/")),
        "{plan}"
    );
    assert!(plan.changes.iter().any(|c| c.key == "vpc"));
    assert!(p.plan(&[Group::S3]).await.unwrap().is_empty());
}

/// Nothing the cluster owned is left: EC2 resources tagged as owned, auto
/// scaling groups, load balancers, target groups, IAM roles and instance
/// profiles, buckets, hosted zones, the trail; its KMS key is pending deletion.
async fn check_everything_destroyed(p: &Provisioner) {
    let none: Vec<(&str, usize)> = FULL_EC2.iter().map(|(k, _)| (*k, 0)).collect();
    assert_eq!(owned_ec2(p).await, none);
    let groups = p
        .aws
        .asg
        .describe_auto_scaling_groups()
        .send()
        .await
        .unwrap();
    assert!(groups.auto_scaling_groups().is_empty());
    assert!(
        p.aws
            .elb
            .describe_load_balancers()
            .send()
            .await
            .unwrap()
            .load_balancers()
            .is_empty()
    );
    assert!(
        p.aws
            .elb
            .describe_target_groups()
            .send()
            .await
            .unwrap()
            .target_groups()
            .is_empty()
    );
    let roles = p.aws.iam.list_roles().send().await.unwrap();
    assert!(
        !roles
            .roles()
            .iter()
            .any(|r| r.role_name().starts_with("demo-"))
    );
    assert!(
        p.aws
            .iam
            .list_instance_profiles()
            .send()
            .await
            .unwrap()
            .instance_profiles()
            .is_empty()
    );
    let buckets = p.aws.s3.list_buckets().send().await.unwrap();
    let ours: Vec<&str> = buckets
        .buckets()
        .iter()
        .filter_map(|b| b.name())
        .filter(|n| n.starts_with("kube-aws-pki-demo-"))
        .collect();
    assert!(ours.is_empty(), "buckets left: {ours:?}");
    let zones = p.aws.r53.list_hosted_zones().send().await.unwrap();
    assert!(zones.hosted_zones().is_empty());
    let aliases = p.aws.kms.list_aliases().send().await.unwrap();
    assert!(
        !aliases
            .aliases()
            .iter()
            .any(|a| a.alias_name() == Some("alias/demo-pki-unseal"))
    );
    for k in p.aws.kms.list_keys().send().await.unwrap().keys() {
        let tags = p
            .aws
            .kms
            .list_resource_tags()
            .key_id(k.key_id().unwrap())
            .send()
            .await
            .unwrap();
        if !tags
            .tags()
            .iter()
            .any(|t| t.tag_key() == "kubernetes.io/cluster/demo")
        {
            continue; // not ours (moto's default EBS key)
        }
        let d = p
            .aws
            .kms
            .describe_key()
            .key_id(k.key_id().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            d.key_metadata().unwrap().key_state().unwrap().as_str(),
            "PendingDeletion",
            "a live key is left: {d:?}"
        );
    }
    let trails = p.aws.cloudtrail.describe_trails().send().await.unwrap();
    assert!(
        !trails
            .trail_list()
            .iter()
            .any(|t| t.name() == Some("demo-trail")),
        "trail left after destroy"
    );
}

#[tokio::test]
async fn destroy_leaves_nothing_tagged_owned() {
    let Some(moto) = Moto::start() else { return };
    let p = moto.provisioner(SPEC).await;
    // Someone else's bucket and VPC in the same account are never touched.
    p.aws
        .s3
        .create_bucket()
        .bucket("not-ours")
        .send()
        .await
        .unwrap();
    let foreign = p
        .aws
        .ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap();
    let foreign = foreign.vpc().unwrap().vpc_id().unwrap().to_string();
    p.apply(&[]).await.unwrap();
    p.destroy().await.unwrap();
    check_everything_destroyed(&p).await;
    let buckets = p.aws.s3.list_buckets().send().await.unwrap();
    let names: Vec<&str> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, vec!["not-ours"]);
    let vpcs = p
        .aws
        .ec2
        .describe_vpcs()
        .vpc_ids(&foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 1, "the foreign VPC survives");
    // Nothing left: a second destroy has nothing to do, a plan creates everything again.
    assert!(p.destroy().await.unwrap().is_empty());
    assert!(
        p.plan(&[])
            .await
            .unwrap()
            .changes
            .iter()
            .all(|c| c.action == Action::Create)
    );
}

/// A destroy that meets a security group already gone (deleted by a delete
/// the SDK retried after it had succeeded, or by anyone after the destroy
/// observed it) counts it as deleted and removes everything else.
#[tokio::test]
async fn destroy_counts_a_security_group_already_gone_as_deleted() {
    let Some(moto) = Moto::start() else { return };
    let p = moto.provisioner(SPEC).await;
    p.apply(&[]).await.unwrap();
    let (desired, observed) = p.model().await.unwrap();
    let worker = observed.by_key["sg/worker"].id.clone();
    p.aws
        .ec2
        .delete_security_group()
        .group_id(&worker)
        .send()
        .await
        .unwrap();
    let plan = provisioner::plan::destroy(&observed.by_key, &[], &desired);
    assert!(plan.changes.iter().any(|c| c.key == "sg/worker"), "{plan}");
    let exec = provisioner::apply::Executor::new(&p.aws, &p.spec, &observed, &desired);
    exec.run(&plan).await.unwrap();
    check_everything_destroyed(&p).await;
    assert!(p.destroy().await.unwrap().is_empty());
}

/// The same for every kind: a destroy run over an observation of a cluster
/// that another destroy has since removed finds every resource gone, and
/// succeeds.
#[tokio::test]
async fn destroy_counts_every_kind_already_gone_as_deleted() {
    let Some(moto) = Moto::start() else { return };
    let p = moto
        .provisioner(&format!("{SPEC}[access]\ncloudtrail = true\n"))
        .await;
    p.apply(&[]).await.unwrap();
    let (desired, observed) = p.model().await.unwrap();
    p.destroy().await.unwrap();
    check_everything_destroyed(&p).await;
    let plan = provisioner::plan::destroy(&observed.by_key, &[], &desired);
    let kinds: BTreeSet<String> = plan
        .changes
        .iter()
        .map(|c| format!("{:?}", c.kind))
        .collect();
    assert!(kinds.len() >= 20, "every kind is deleted again: {kinds:?}");
    let mut exec = provisioner::apply::Executor::new(&p.aws, &p.spec, &observed, &desired);
    exec.patience = std::time::Duration::from_secs(30);
    exec.run(&plan).await.unwrap();
    check_everything_destroyed(&p).await;
}

#[tokio::test]
async fn an_apply_cut_off_midway_converges_when_run_again() {
    let Some(moto) = Moto::start() else { return };
    let p = moto.provisioner(SPEC).await;
    // Many runs, each cut off after a few mutating calls (a varying budget, so
    // the cuts land between the steps of every multi-call resource), each
    // leaving its lock behind as a dead process would; every run resumes.
    let budgets = [3, 12, 7, 20, 9, 15, 5, 25];
    let mut cut_runs = 0;
    for (i, budget) in budgets.iter().cycle().enumerate() {
        assert!(i < 100, "apply never converged");
        p.aws.recorder.fail_after(Some(*budget));
        let r = p.apply(&[]).await;
        p.aws.recorder.fail_after(None);
        let Err(e) = r else { break };
        assert!(
            format!("{e:#}").contains("injected failure"),
            "run {i}: {e:#}"
        );
        cut_runs += 1;
        // A run cut off after taking the lock could not release it (its writes
        // failed too), as if the process had died: the next apply refuses until unlock.
        if i == 5 {
            let e = p
                .apply(&[])
                .await
                .expect_err("the dead run's lock refuses the next apply");
            assert!(
                format!("{e:#}").contains("locked by another provisioner"),
                "{e:#}"
            );
        }
        p.unlock().await.unwrap();
    }
    assert!(cut_runs >= 5, "only {cut_runs} cut-off runs");
    p.apply(&[]).await.unwrap();
    check_everything_applied(&p).await;
    let plan = p.plan(&[]).await.unwrap();
    assert!(plan.is_empty(), "plan after the resumed apply:\n{plan}");
}

/// The lock is a conditional put (`If-None-Match: *`); S3 makes that atomic,
/// so of two racing provisioners one wins. moto checks the condition and
/// stores the object later without a lock, so a race there can let both
/// through: this test takes the lock and tries again one after the other,
/// which moto does enforce.
#[tokio::test]
async fn a_held_lock_refuses_a_second_attempt() {
    let Some(moto) = Moto::start() else { return };
    let p = moto.provisioner(SPEC).await;
    p.apply(&[Group::S3]).await.unwrap();
    let bucket = "kube-aws-pki-demo-config";
    let held = provisioner::state::acquire(&p.aws, bucket)
        .await
        .expect("the first attempt takes the lock");
    let e = provisioner::state::acquire(&p.aws, bucket)
        .await
        .expect_err("held");
    assert!(
        format!("{e:#}").contains("locked by another provisioner"),
        "{e:#}"
    );
    let e = p.apply(&[]).await.expect_err("apply waits for nobody");
    assert!(format!("{e:#}").contains("locked"), "{e:#}");
    held.release(&p.aws, None).await.unwrap();
    provisioner::state::acquire(&p.aws, bucket)
        .await
        .unwrap()
        .release(&p.aws, None)
        .await
        .unwrap();
}
