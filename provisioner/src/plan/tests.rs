use super::*;
use crate::model::{Env, Known, desired};
use crate::spec::Role;

fn setup(extra: &str) -> (ClusterSpec, Vec<Resource>) {
    let spec = ClusterSpec::parse(&format!("name = \"demo\"\n{extra}")).expect("spec");
    let env = Env {
        azs: vec!["a".into(), "b".into(), "c".into()],
        images: Role::ALL
            .iter()
            .map(|r| (*r, "ami-1".to_string()))
            .collect(),
    };
    let d = desired(&spec, &env).expect("model");
    (spec, d)
}

/// What AWS would report after a perfect apply of `d`.
fn world(spec: &ClusterSpec, d: &[Resource]) -> BTreeMap<String, Observed> {
    d.iter()
        .map(|r| {
            let o = Observed {
                key: r.key.clone(),
                kind: r.kind,
                id: format!("id-{}", r.key),
                owned: true,
                adoptable: false,
                props: r.props(spec, &Known::new()),
                attrs: BTreeMap::new(),
            };
            (r.key.clone(), o)
        })
        .collect()
}

fn check(
    extra: &str,
    mutate: impl Fn(&mut BTreeMap<String, Observed>),
    expected: &[(&str, Action)],
) {
    let (spec, d) = setup(extra);
    let mut w = world(&spec, &d);
    mutate(&mut w);
    let plan = diff(&spec, &d, &w, &Known::new()).expect("plan");
    let got: Vec<(&str, Action)> = plan
        .changes
        .iter()
        .map(|c| (c.key.as_str(), c.action.clone()))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn nothing_to_do_when_aws_matches() {
    check("", |_| {}, &[]);
}

#[test]
fn changed_desired_capacity_is_one_update() {
    check(
        "[roles.worker]\ndesired = 3\n",
        |w| {
            w.get_mut("asg/worker")
                .expect("asg")
                .props
                .insert("desired".into(), serde_json::json!(2));
        },
        &[("asg/worker", Action::Update(vec!["desired".into()]))],
    );
}

#[test]
fn missing_resources_are_created_in_level_order() {
    check(
        "",
        |w| {
            w.remove("vpc");
            w.remove("asg/etcd");
        },
        &[("vpc", Action::Create), ("asg/etcd", Action::Create)],
    );
}

#[test]
fn changed_subnet_cidr_needs_a_replace_and_orphans_are_deleted() {
    check(
        "",
        |w| {
            w.get_mut("subnet/lb/0")
                .expect("subnet")
                .props
                .insert("cidr".into(), serde_json::json!("10.240.9.0/24"));
            let mut orphan = w["subnet/lb/0"].clone();
            orphan.key = "subnet/lb/5".into();
            w.insert(orphan.key.clone(), orphan);
        },
        &[
            ("subnet/lb/0", Action::Replace(vec!["cidr".into()])),
            ("subnet/lb/5", Action::Delete),
        ],
    );
}

#[test]
fn a_resource_not_owned_is_refused() {
    let (spec, d) = setup("");
    let mut w = world(&spec, &d);
    w.get_mut("bucket/pki").expect("bucket").owned = false;
    let e = diff(&spec, &d, &w, &Known::new()).expect_err("not owned");
    assert!(matches!(e, PlanError::NotOwned { ref key, .. } if key == "bucket/pki"));
}

#[test]
fn destroy_deletes_children_first_and_never_foreign_resources() {
    let (spec, d) = setup("");
    let mut w = world(&spec, &d);
    w.get_mut("bucket/logs").expect("bucket").owned = false;
    let p = destroy(&w, &[], &d);
    let keys: Vec<&str> = p.changes.iter().map(|c| c.key.as_str()).collect();
    assert!(!keys.contains(&"bucket/logs"));
    let pos = |k: &str| keys.iter().position(|x| *x == k).expect(k);
    assert!(pos("asg/worker") < pos("lt/worker"));
    assert!(pos("lt/worker") < pos("sg/worker"));
    assert!(pos("subnet/worker/0") < pos("vpc"));
    assert!(pos("nat") < pos("igw"));
}
