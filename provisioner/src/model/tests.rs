use super::*;

fn env() -> Env {
    Env {
        azs: vec![
            "us-east-1a".into(),
            "us-east-1b".into(),
            "us-east-1c".into(),
            "us-east-1d".into(),
        ],
        images: Role::ALL
            .iter()
            .map(|r| (*r, "ami-12345678".to_string()))
            .collect(),
        artifacts: vec![],
    }
}

fn actions_of(st: &Value) -> Vec<&str> {
    match &st["Action"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
        _ => vec![],
    }
}

#[test]
fn every_iam_policy_parses_and_has_no_wildcard_action() {
    for role in Role::ALL {
        let v: Value = serde_json::from_str(policy_template(role)).expect("policy json");
        for st in v["Statement"].as_array().expect("statements") {
            let actions: Vec<&str> = match &st["Action"] {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
                other => panic!("{role}: Action {other}"),
            };
            for a in actions {
                assert!(!a.contains('*'), "{role}: wildcard action {a}");
            }
            let resources = serde_json::to_string(&st["Resource"]).expect("json");
            // Describe* calls have no resource-level permissions: pki-server's
            // auth/aws names a node from its instance, and etcd members and
            // controllers find the etcd members from the etcd group (all read-only).
            let read_only = match role {
                Role::PkiServer => actions_of(st) == ["ec2:DescribeInstances"],
                Role::Etcd | Role::Controller => {
                    actions_of(st)
                        == [
                            "autoscaling:DescribeAutoScalingInstances",
                            "autoscaling:DescribeAutoScalingGroups",
                            "ec2:DescribeInstances",
                        ]
                }
                Role::Worker => false,
            };
            if !read_only {
                assert_ne!(resources, "\"*\"", "{role}: Resource *");
            }
        }
    }
}

#[test]
fn only_pki_server_may_use_the_kms_key_and_the_pki_bucket() {
    for role in Role::ALL {
        let text = policy_template(role);
        let uses = text.contains("${kms_key_arn}") || text.contains("${pki_bucket}");
        assert_eq!(uses, role == Role::PkiServer, "{role}");
    }
}

#[test]
fn private_topology_has_nat_and_a_private_route_table() {
    let spec = ClusterSpec::parse("name = \"demo\"\n").expect("spec");
    let d = desired(&spec, &env()).expect("model");
    let keys: Vec<&str> = d.iter().map(|r| r.key.as_str()).collect();
    for k in [
        "vpc",
        "igw",
        "nat",
        "eip/nat",
        "rtb/private",
        "rtb/public",
        "zone",
        "lb/pki",
        "record/api",
        "asg/worker",
    ] {
        assert!(keys.contains(&k), "{k} missing");
    }
    assert_eq!(d.iter().filter(|r| r.kind == Kind::Subnet).count(), 15);
    let s = ClusterSpec::parse("name = \"demo\"\ntopology = \"public\"\n").expect("spec");
    let d = desired(&s, &env()).expect("model");
    assert!(!d.iter().any(|r| r.kind == Kind::NatGateway));
}

#[test]
fn etcd_accepts_clients_only_from_controllers_and_itself() {
    let spec = ClusterSpec::parse("name = \"demo\"\n").expect("spec");
    let d = desired(&spec, &env()).expect("model");
    let etcd = d.iter().find(|r| r.key == "sg/etcd").expect("sg");
    let p = etcd.props(&spec, &Known::new());
    assert_eq!(
        p["ingress"],
        json!([
            "tcp 2379..2379 sg:sg/controller",
            "tcp 2379..2379 sg:sg/etcd",
            "tcp 2380..2380 sg:sg/etcd"
        ])
    );
    let all: String = d
        .iter()
        .filter(|r| r.kind == Kind::SecurityGroup)
        .map(|r| r.props(&spec, &Known::new())["ingress"].to_string())
        .collect();
    assert!(!all.contains("tcp 22..22"), "no SSH rule by default");
}

#[test]
fn rule_text_round_trips() {
    for r in [
        Rule {
            protocol: "tcp".into(),
            from: 22,
            to: 22,
            source: Source::Cidr("192.0.2.0/24".into()),
        },
        Rule {
            protocol: "-1".into(),
            from: -1,
            to: -1,
            source: Source::Group("sg/worker".into()),
        },
    ] {
        assert_eq!(Rule::parse(&r.canonical()), Some(r));
    }
}
