use super::*;

/// Parse `extra` appended to a minimal spec; Ok(()) or the error text.
fn check(extra: &str, expected: Result<(), &str>) {
    let text = format!("name = \"demo\"\n{extra}");
    let got = ClusterSpec::parse(&text)
        .map(|_| ())
        .map_err(|e| e.to_string());
    match (got, expected) {
        (Ok(()), Ok(())) => {}
        (Err(e), Err(want)) => assert!(e.contains(want), "error {e:?} does not contain {want:?}"),
        (got, want) => panic!("{extra:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn defaults_follow_the_issue() {
    let s = ClusterSpec::parse("name = \"demo\"\n").expect("spec");
    assert_eq!(s.vpc_cidr.to_string(), "10.240.0.0/16");
    assert_eq!(s.service_cidr.to_string(), "10.32.0.0/24");
    assert_eq!(s.pod_cidr.to_string(), "10.200.0.0/16");
    assert_eq!(s.cluster_dns.to_string(), "10.32.0.10");
    assert_eq!(s.az_count, 3);
    assert_eq!(s.topology, Topology::Private);
    let sizes = |r| {
        let x = s.role(r);
        (x.min, x.max, x.desired)
    };
    assert_eq!(sizes(Role::PkiServer), (1, 1, 1));
    assert_eq!(sizes(Role::Etcd), (3, 3, 3));
    assert_eq!(sizes(Role::Controller), (3, 3, 3));
    assert_eq!(sizes(Role::Worker), (1, 5, 2));
    assert!(s.ssh_cidrs.is_empty(), "no SSH by default");
}

#[test]
fn invalid_specs_are_refused_naming_the_field() {
    check("", Ok(()));
    check(
        "[roles.worker]\ndesired = 7\n",
        Err("`roles.worker.desired`"),
    );
    check(
        "[roles.worker]\nmin = 3\nmax = 2\n",
        Err("`roles.worker.max`"),
    );
    check("[roles.bastion]\nmin = 1\n", Err("`roles.bastion`"));
    check("pod_cidr = \"10.240.128.0/17\"\n", Err("`pod_cidr`"));
    check("service_cidr = \"10.240.0.0/24\"\n", Err("`service_cidr`"));
    check("pod_cidr = \"10.32.0.0/16\"\n", Err("`pod_cidr`"));
    check("vpc_cidr = \"10.240.0.1/16\"\n", Err("`vpc_cidr`"));
    check("vpc_cidr = \"10.0.0.0/8\"\n", Err("`vpc_cidr`"));
    check("cluster_dns = \"10.33.0.10\"\n", Err("`cluster_dns`"));
    check("ssh_cidrs = [\"0.0.0.0/0\"]\n", Err("`ssh_cidrs[0]`"));
    check("ssh_cidrs = [\"192.0.2.0/24\"]\n", Ok(()));
    check("az_count = 0\n", Err("`az_count`"));
    check("topology = \"hybrid\"\n", Err("topology"));
    check("colour = \"blue\"\n", Err("colour"));
    check(
        "[roles.pki-server]\nmax = 2\ndesired = 2\n",
        Err("`roles.pki-server.max`"),
    );
    check(
        "[tags]\n\"kubernetes.io/cluster/x\" = \"owned\"\n",
        Err("`tags.kubernetes.io/cluster/x`"),
    );
    check("[ami]\nid = \"flatcar\"\n", Err("`ami.id`"));
    check(
        "kubernetes_version = \"latest\"\n",
        Err("`kubernetes_version`"),
    );
    // Versions without a built-in checksum need theirs.
    check(
        "kubernetes_version = \"1.35.0\"\n",
        Err("`checksums.kubelet-v1.35.0-linux-amd64`"),
    );
    check(
        "etcd_version = \"3.6.7\"\n",
        Err("`checksums.etcd-v3.6.7-linux-amd64.tar.gz`"),
    );
    check(
        "etcd_version = \"3.6.7\"\n[checksums]\n\"etcd-v3.6.7-linux-amd64.tar.gz\" = \"nothex\"\n",
        Err("`checksums.etcd-v3.6.7-linux-amd64.tar.gz`"),
    );
    check(
        &format!(
            "etcd_version = \"3.6.7\"\n[checksums]\n\"etcd-v3.6.7-linux-amd64.tar.gz\" = \"{}\"\n",
            "ab".repeat(32)
        ),
        Ok(()),
    );
    check(
        "[versions]\ncoredns = \"1.12 ; rm\"\n",
        Err("`versions.coredns`"),
    );
    check("[versions]\nhelm = \"3\"\n", Err("helm"));
    check("[updates]\netcd = \"coordinated\"\n", Err("`updates.etcd`"));
    check(
        "[updates]\npki-server = \"off\"\n",
        Err("`updates.pki-server`"),
    );
    check(
        "[updates]\nworker = \"sometimes\"\n",
        Err("unknown variant `sometimes`"),
    );
    check(
        "[updates]\nworker = \"reboot\"\netcd = \"disabled\"\n",
        Ok(()),
    );
    check("[access]\nssh = \"yes\"\n", Err("unknown variant `yes`"));
    check(
        "cluster_domain = \"Cluster.Local\"\n",
        Err("`cluster_domain`"),
    );
    check(
        "[roles.worker]\ndata_volume_gb = 10\n",
        Err("`roles.worker.data_volume_gb`"),
    );
    check(
        "[roles.etcd]\ndata_volume_gb = 0\n",
        Err("`roles.etcd.data_volume_gb`"),
    );
}

#[test]
fn node_defaults_pin_every_download_and_keep_etcd_from_rebooting() {
    let s = ClusterSpec::parse("name = \"demo\"\n").expect("spec");
    for d in s.pins.downloads() {
        assert!(d.url.starts_with("https://"), "{}", d.url);
        assert_eq!(d.sha256.len(), 64, "{}", d.key);
    }
    assert_eq!(s.update_strategy(Role::Etcd), UpdateStrategy::Off);
    assert_eq!(
        s.update_strategy(Role::Controller),
        UpdateStrategy::Coordinated
    );
    assert_eq!(s.update_strategy(Role::Worker), UpdateStrategy::Coordinated);
    assert_eq!(s.ssh, SshAccess::None);
    assert!(!s.cloudtrail);
    assert_eq!(s.etcd_data_volume_gb, 20);
    assert_eq!(s.cluster_domain, "cluster.local");
}

#[test]
fn bad_names_are_refused() {
    for name in [
        "",
        "Demo",
        "1demo",
        "demo-",
        "de--mo",
        "a-very-long-cluster-name-x",
        "demo_1",
    ] {
        let err = ClusterSpec::parse(&format!("name = {name:?}\n")).expect_err(name);
        assert!(err.to_string().contains("`name`"), "{name}: {err}");
    }
}

#[test]
fn subnets_do_not_overlap_and_stay_in_the_vpc() {
    let s = ClusterSpec::parse("name = \"demo\"\naz_count = 6\nvpc_cidr = \"10.1.0.0/22\"\n")
        .expect("spec");
    let mut all = Vec::new();
    for tier in 0..5 {
        for az in 0..6 {
            let c = s.subnet_cidr(tier, az);
            assert!(s.vpc_cidr.contains(&c), "{c}");
            assert_eq!(c.prefix_len(), 27);
            all.push(c);
        }
    }
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert!(!overlaps(a, b), "{a} overlaps {b}");
        }
    }
}

#[test]
fn the_example_spec_parses() {
    let s = ClusterSpec::parse(include_str!("../../../examples/cluster.toml")).expect("example");
    assert_eq!(s.name, "demo");
    assert_eq!(s.etcd_data_volume_gb, 20);
}
