//! `node-client etcd-join` end to end:
//! - `--discover aws` against moto: an auto scaling group of 3 (VPC, subnet,
//!   launch template), no etcd answering → `state=new` with the three
//!   instances' private DNS names and IPs as moto reports them; an instance in
//!   no group is a configuration error (exit 2);
//! - `--discover static` with real etcd on 127.0.0.21-24 and certificates
//!   from pki-server (`fetch-cert --role etcd`): three members bootstrap from
//!   the written environment alone (plus TLS and listen flags, as the unit
//!   runs etcd), a rerun on a running member changes nothing, and after
//!   member 3 dies with its disk a replacement under another name removes the
//!   dead member, adds itself, starts with `state=existing`, and the cluster
//!   is three healthy started members again;
//! - issue #16 on 127.0.0.41-43: the slow member (two members of a new
//!   cluster of three start, the third joins 5 s after they are healthy)
//!   changes no membership, starts under its initial-cluster entry and the
//!   cluster is three healthy started members;
//! - issue #16 on 127.0.0.51-53: the lost member (killed, disk gone, same
//!   name and address) removes its stale entry, adds itself (`existing`,
//!   a new member ID), moves an earlier life's data aside instead of
//!   deleting it, and the cluster converges to three healthy started members.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/aws.rs"]
mod aws;
#[path = "../../tests/support/etcd.rs"]
mod etcd;
#[path = "../../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;
mod support;
#[path = "../../tests/support/venv.rs"]
mod venv;

use harness::Server;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{args, assert_etcd, node_client, output, show};

const CLUSTER: &str = "kubecluster";

/// The binary with a clean environment for etcd-join: no ETCD*/ETCDCTL*,
/// proxies, NODE_CLIENT_ETCD_* or instance id from the caller.
fn etcd_join(extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_node-client"));
    etcd::scrub_env(&mut c);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("NODE_CLIENT_") || k.starts_with("AWS_") || k == "COREOS_EC2_INSTANCE_ID" {
            c.env_remove(&k);
        }
    }
    c.arg("etcd-join").args(extra).stdin(Stdio::null());
    c
}

fn env_file(p: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

// ------------------------------------------------------------------ AWS

fn all_tags<'a>(text: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    text.split(&open)
        .skip(1)
        .map(|s| s.split(&format!("</{tag}>")).next().unwrap())
        .collect()
}

/// A Query API call to moto as its administrator; the answer.
async fn api(endpoint: &str, service: &str, version: &str, p: Vec<(&str, String)>) -> String {
    let mut all = vec![("Version", version.to_string())];
    all.extend(p);
    let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    aws::query(endpoint, &aws::Creds::admin(), service, &refs).await
}

#[tokio::test]
async fn aws_discovery_bootstraps_from_the_auto_scaling_group() {
    let Some(moto) = aws::Moto::start() else {
        return;
    };
    let e = moto.endpoint.as_str();
    let ec2 = |p: Vec<(&'static str, String)>| api(e, "ec2", "2016-11-15", p);
    let vpc = ec2(vec![
        ("Action", "CreateVpc".into()),
        ("CidrBlock", "10.0.0.0/16".into()),
    ])
    .await;
    let vpc = aws::xml(&vpc, "vpcId").to_string();
    let subnet = ec2(vec![
        ("Action", "CreateSubnet".into()),
        ("VpcId", vpc),
        ("CidrBlock", "10.0.1.0/24".into()),
        ("AvailabilityZone", "us-east-1a".into()),
    ])
    .await;
    let subnet = aws::xml(&subnet, "subnetId").to_string();
    ec2(vec![
        ("Action", "CreateLaunchTemplate".into()),
        ("LaunchTemplateName", "etcd".into()),
        ("LaunchTemplateData.ImageId", "ami-03cf127a".into()),
        ("LaunchTemplateData.InstanceType", "t3.micro".into()),
    ])
    .await;
    let asg = |p: &[(&'static str, &str)]| {
        let p = p.iter().map(|(k, v)| (*k, v.to_string())).collect();
        api(e, "autoscaling", "2011-01-01", p)
    };
    asg(&[
        ("Action", "CreateAutoScalingGroup"),
        ("AutoScalingGroupName", "kubecluster-etcd"),
        ("LaunchTemplate.LaunchTemplateName", "etcd"),
        ("LaunchTemplate.Version", "$Latest"),
        ("MinSize", "3"),
        ("MaxSize", "3"),
        ("DesiredCapacity", "3"),
        ("VPCZoneIdentifier", &subnet),
    ])
    .await;
    let groups = asg(&[
        ("Action", "DescribeAutoScalingGroups"),
        ("AutoScalingGroupNames.member.1", "kubecluster-etcd"),
    ])
    .await;
    let ids: Vec<String> = all_tags(&groups, "InstanceId")
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 3, "{groups}");
    // Names and addresses as moto reports them.
    let mut want = Vec::new();
    for id in &ids {
        let d = ec2(vec![
            ("Action", "DescribeInstances".into()),
            ("InstanceId.1", id.clone()),
        ])
        .await;
        want.push((
            aws::xml(&d, "privateDnsName").to_string(),
            aws::xml(&d, "privateIpAddress").to_string(),
            id.clone(),
        ));
    }
    want.sort();
    let (me_name, me_ip, me_id) = want[1].clone();

    let dir = tempfile::tempdir().unwrap();
    // etcdctl is never reached: /bin/false stands for peers that do not answer.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["etcd".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    for f in ["ca.crt", "member.crt"] {
        std::fs::write(dir.path().join(f), cert.pem()).unwrap();
    }
    std::fs::write(dir.path().join("member.key"), key.serialize_pem()).unwrap();
    let out = dir.path().join("run/etcd.env");
    let base = |id: &str| {
        let mut c = etcd_join(&[
            "--discover",
            "aws",
            "--instance-id",
            id,
            "--name",
            &me_name,
            "--ip",
            &me_ip,
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--cluster-token",
            CLUSTER,
            "--wait",
            "5",
            "--etcdctl",
            "/bin/false",
            "--cacert",
            dir.path().join("ca.crt").to_str().unwrap(),
            "--cert",
            dir.path().join("member.crt").to_str().unwrap(),
            "--key",
            dir.path().join("member.key").to_str().unwrap(),
        ]);
        c.envs(moto.env());
        c
    };
    let o = output(base(&me_id)).await;
    assert!(o.status.success(), "{}", show(&o));
    let env = env_file(&out);
    let cluster = want
        .iter()
        .map(|(n, ip, _)| format!("{n}=https://{ip}:2380"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        env,
        BTreeMap::from(
            [
                ("ETCD_NAME", me_name.clone()),
                ("ETCD_INITIAL_CLUSTER", cluster),
                ("ETCD_INITIAL_CLUSTER_STATE", "new".into()),
                ("ETCD_INITIAL_CLUSTER_TOKEN", CLUSTER.into()),
                (
                    "ETCD_INITIAL_ADVERTISE_PEER_URLS",
                    format!("https://{me_ip}:2380")
                ),
                (
                    "ETCD_ADVERTISE_CLIENT_URLS",
                    format!("https://{me_ip}:2379")
                ),
            ]
            .map(|(k, v)| (k.to_string(), v))
        )
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing touched the data dir"
    );

    // A controller's view: the same group's client URLs for kube-apiserver.
    let servers = dir.path().join("run/etcd-servers.env");
    let mut c = Command::new(env!("CARGO_BIN_EXE_node-client"));
    c.args([
        "etcd-endpoints",
        "--asg",
        "kubecluster-etcd",
        "--wait",
        "5",
        "--out",
    ])
    .arg(&servers)
    .envs(moto.env());
    let o = output(c).await;
    assert!(o.status.success(), "{}", show(&o));
    let mut by_name = want.clone();
    by_name.sort();
    assert_eq!(
        env_file(&servers),
        BTreeMap::from([(
            "ETCD_SERVERS".to_string(),
            by_name
                .iter()
                .map(|(_, ip, _)| format!("https://{ip}:2379"))
                .collect::<Vec<_>>()
                .join(",")
        )])
    );
    // An unknown group: nothing written, a clear error.
    let missing = dir.path().join("run/none.env");
    let mut c = Command::new(env!("CARGO_BIN_EXE_node-client"));
    c.args([
        "etcd-endpoints",
        "--asg",
        "no-such-group",
        "--wait",
        "1",
        "--out",
    ])
    .arg(&missing)
    .envs(moto.env());
    let o = output(c).await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(!missing.exists());

    // An instance in no auto scaling group: configuration error, no file.
    std::fs::remove_file(&out).unwrap();
    let o = output(base("i-00000000000000000")).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no auto scaling group"),
        "{}",
        show(&o)
    );
    assert!(!out.exists());
}

// ----------------------------------------------------------------- etcd

/// A running pki-server with the profile applied; the root token.
struct Pki {
    srv: Server,
    root: String,
    dir: tempfile::TempDir,
}

impl Pki {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(dir.path()).await;
        let (s, init) = srv
            .call(
                reqwest::Method::PUT,
                "sys/init",
                None,
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await;
        assert_eq!(s, 200, "{init}");
        let root = init["root_token"].as_str().unwrap().to_string();
        let key = init["keys"][0].as_str().unwrap();
        let (s, v) = srv
            .call(
                reqwest::Method::PUT,
                "sys/unseal",
                None,
                Some(json!({"key": key})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let ca = dir.path().join("tls/ca.pem");
        let c = pki_server::client::Client::new(&pki_server::cli::ClientArgs {
            address: srv.addr.clone(),
            ca_cert: Some(ca),
        })
        .unwrap()
        .with_token(zeroize::Zeroizing::new(root.clone()));
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let steps = pki_server::profile::Profile::load(&policies)
            .unwrap()
            .plan(CLUSTER, &BTreeMap::new())
            .unwrap();
        pki_server::commands::apply_steps(&c, &steps).await.unwrap();
        Self { srv, root, dir }
    }

    /// `fetch-cert --role etcd` for `node` on `ip` into `out`.
    async fn etcd_certs(&self, node: &str, ip: &str, out: &Path) {
        let (s, v) = self
            .srv
            .call(
                reqwest::Method::POST,
                &format!("auth/token/create/{CLUSTER}-etcd"),
                Some(&self.root),
                Some(json!({"meta": {"node_name": node}})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let tok = self.dir.path().join(format!("token-{node}"));
        support::write_token(&tok, v["auth"]["client_token"].as_str().unwrap());
        let ca = self.dir.path().join("tls/ca.pem");
        let o = output(node_client(
            &self.srv.addr,
            &ca,
            &tok,
            &args("etcd", node, out, &["--ip", ip]),
        ))
        .await;
        assert!(o.status.success(), "{node}: {}", show(&o));
        assert_etcd(out, node, ip);
    }
}

/// One etcd node of the test: its name, address, certificates and files.
struct Node {
    name: String,
    ip: Ipv4Addr,
    pki: PathBuf,
    data: PathBuf,
    env: PathBuf,
    log: PathBuf,
}

impl Node {
    fn new(root: &Path, name: &str, ip: Ipv4Addr) -> Self {
        Self {
            name: name.into(),
            ip,
            pki: root.join(name).join("pki"),
            data: root.join(name).join("data"),
            env: root.join(name).join("run/etcd.env"),
            log: root.join(format!("{name}.log")),
        }
    }

    fn client_url(&self) -> String {
        format!("https://{}:2379", self.ip)
    }

    fn tls(&self) -> etcd::ClientTls<'static> {
        let leak = |p: PathBuf| -> &'static Path { Box::leak(p.into_boxed_path()) };
        etcd::ClientTls {
            cacert: leak(self.pki.join("etcd-ca.crt")),
            cert: Some((
                leak(self.pki.join("etcd-member.crt")),
                leak(self.pki.join("etcd-member.key")),
            )),
        }
    }

    /// `etcd-join --discover static --peers <peers>` as the unit runs it.
    async fn join(&self, peers: &str) -> Output {
        let p = |x: &Path| x.to_str().unwrap().to_string();
        let ip = self.ip.to_string();
        let argv: Vec<String> = [
            "--discover",
            "static",
            "--peers",
            peers,
            "--name",
            &self.name,
            "--ip",
            &ip,
            "--data-dir",
            &p(&self.data),
            "--out",
            &p(&self.env),
            "--cluster-token",
            CLUSTER,
            "--wait",
            "20",
            "--dial-timeout-ms",
            "1000",
            "--cacert",
            &p(&self.pki.join("etcd-ca.crt")),
            "--cert",
            &p(&self.pki.join("etcd-member.crt")),
            "--key",
            &p(&self.pki.join("etcd-member.key")),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        output(etcd_join(&refs)).await
    }

    /// etcd with ONLY the environment file plus TLS and listen flags.
    fn start(&self) -> Etcd {
        let logf = std::fs::File::create(&self.log).unwrap();
        let mut cmd = Command::new("etcd");
        etcd::scrub_env(&mut cmd).envs(env_file(&self.env));
        let cert = self.pki.join("etcd-member.crt");
        let key = self.pki.join("etcd-member.key");
        let ca = self.pki.join("etcd-ca.crt");
        cmd.arg("--data-dir")
            .arg(&self.data)
            .args(["--listen-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &format!("https://{}:2380", self.ip)])
            .arg("--cert-file")
            .arg(&cert)
            .arg("--key-file")
            .arg(&key)
            .arg("--trusted-ca-file")
            .arg(&ca)
            .arg("--client-cert-auth")
            .arg("--peer-cert-file")
            .arg(&cert)
            .arg("--peer-key-file")
            .arg(&key)
            .arg("--peer-trusted-ca-file")
            .arg(&ca)
            .arg("--peer-client-cert-auth")
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        Etcd {
            name: self.name.clone(),
            log: self.log.clone(),
            child: Some(cmd.spawn().expect("spawn etcd")),
        }
    }
}

/// A running etcd: SIGKILLed and reaped on drop (its log tail printed on panic).
struct Etcd {
    name: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Some(st) = c.try_wait().unwrap()
        {
            panic!("{} exited: {st}", self.name);
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "----- {} ({}) -----\n{}",
                self.name,
                self.log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

/// Wait until every URL in `urls` reports healthy.
fn wait_healthy(
    procs: &mut [&mut Etcd],
    urls: &[String],
    tls: &etcd::ClientTls,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let endpoints = urls.join(",");
    loop {
        for p in procs.iter_mut() {
            p.assert_running();
        }
        let h = etcd::etcdctl(&endpoints, tls, &["endpoint", "health"], 2, 3);
        // etcdctl 3.4 reports health on stderr.
        let said = format!("{}{}", h.stdout, h.stderr);
        if h.ok
            && urls
                .iter()
                .all(|u| said.contains(&format!("{u} is healthy")))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not healthy after {timeout:?}: {h}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// (name, peer URLs) of each member, sorted.
fn members(url: &str, tls: &etcd::ClientTls) -> Vec<(String, Vec<String>)> {
    let o = etcd::etcdctl(url, tls, &["member", "list", "-w", "json"], 2, 5);
    assert!(o.ok, "{o}");
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    let mut m: Vec<(String, Vec<String>)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["peerURLs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    m.sort();
    m
}

fn expect_env(n: &Node, state: &str, cluster: &[&Node]) -> BTreeMap<String, String> {
    let initial = cluster
        .iter()
        .map(|c| format!("{}=https://{}:2380", c.name, c.ip))
        .collect::<Vec<_>>()
        .join(",");
    [
        ("ETCD_NAME", n.name.clone()),
        ("ETCD_INITIAL_CLUSTER", initial),
        ("ETCD_INITIAL_CLUSTER_STATE", state.into()),
        ("ETCD_INITIAL_CLUSTER_TOKEN", CLUSTER.into()),
        (
            "ETCD_INITIAL_ADVERTISE_PEER_URLS",
            format!("https://{}:2380", n.ip),
        ),
        ("ETCD_ADVERTISE_CLIENT_URLS", n.client_url()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_bootstrap_then_replacement_of_a_dead_member() {
    if !etcd::tools_present() {
        return;
    }
    let pki = Pki::start().await;
    let root = pki.dir.path().join("nodes");
    let ip = |i: u8| Ipv4Addr::new(127, 0, 0, i);
    let a = Node::new(&root, "etcd-a", ip(21));
    let b = Node::new(&root, "etcd-b", ip(22));
    let c = Node::new(&root, "etcd-c", ip(23));
    let d = Node::new(&root, "etcd-d", ip(24));
    for n in [&a, &b, &c, &d] {
        pki.etcd_certs(&n.name, &n.ip.to_string(), &n.pki).await;
    }
    let peers = |ns: &[&Node]| {
        ns.iter()
            .map(|n| format!("{}={}", n.name, n.ip))
            .collect::<Vec<_>>()
            .join(",")
    };

    // Bootstrap: nobody answers, every peer is listed: state=new, same list everywhere.
    let first = peers(&[&c, &a, &b]);
    for n in [&a, &b, &c] {
        let o = n.join(&first).await;
        assert!(o.status.success(), "{}: {}", n.name, show(&o));
        assert_eq!(env_file(&n.env), expect_env(n, "new", &[&a, &b, &c]));
    }
    let mut pa = a.start();
    let mut pb = b.start();
    let mut pc = c.start();
    let tls = a.tls();
    let urls = |ns: &[&Node]| ns.iter().map(|n| n.client_url()).collect::<Vec<_>>();
    tokio::task::block_in_place(|| {
        wait_healthy(
            &mut [&mut pa, &mut pb, &mut pc],
            &urls(&[&a, &b, &c]),
            &tls,
            Duration::from_secs(60),
        )
    });
    let put = etcd::etcdctl(&a.client_url(), &tls, &["put", "/k", "v1"], 2, 5);
    assert!(put.ok, "{put}");

    // A rerun on a running member with its data changes nothing.
    let before = members(&a.client_url(), &tls);
    assert_eq!(before.len(), 3);
    let o = a.join(&first).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(env_file(&a.env), expect_env(&a, "existing", &[&a, &b, &c]));
    assert_eq!(members(&a.client_url(), &tls), before);
    assert!(!root.join("etcd-a/data").read_dir().unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("member.stale")
    }));

    // etcd-c dies with its disk; etcd-d replaces it on another address.
    pc.kill();
    std::fs::remove_dir_all(&c.data).unwrap();
    let o = d.join(&peers(&[&a, &b, &d])).await;
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("removing a member"), "{}", show(&o));
    assert!(err.contains("adding this node"), "{}", show(&o));
    assert_eq!(env_file(&d.env), expect_env(&d, "existing", &[&a, &b, &d]));
    // etcd-c is gone, etcd-d is added but not started yet.
    assert_eq!(
        members(&a.client_url(), &tls),
        vec![
            (String::new(), vec!["https://127.0.0.24:2380".to_string()]),
            ("etcd-a".into(), vec!["https://127.0.0.21:2380".into()]),
            ("etcd-b".into(), vec!["https://127.0.0.22:2380".into()]),
        ]
    );
    let mut pd = d.start();
    tokio::task::block_in_place(|| {
        wait_healthy(
            &mut [&mut pa, &mut pb, &mut pd],
            &urls(&[&a, &b, &d]),
            &tls,
            Duration::from_secs(60),
        )
    });
    // Exactly three started members, the new one among them; it has the data.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = members(&d.client_url(), &d.tls());
        let want = vec![
            (
                "etcd-a".to_string(),
                vec!["https://127.0.0.21:2380".to_string()],
            ),
            ("etcd-b".into(), vec!["https://127.0.0.22:2380".into()]),
            ("etcd-d".into(), vec!["https://127.0.0.24:2380".into()]),
        ];
        if m == want {
            break;
        }
        assert!(Instant::now() < deadline, "members: {m:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let get = etcd::etcdctl(
        &d.client_url(),
        &d.tls(),
        &["get", "/k", "--print-value-only"],
        2,
        5,
    );
    assert!(get.ok && get.stdout.trim() == "v1", "{get}");
    drop((pa, pb, pd));
}

/// One entry of `member list`: (peer URLs, name, ID, started).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    peer_urls: Vec<String>,
    name: String,
    id: u64,
    /// It published client URLs: it has run.
    started: bool,
}

/// Every member with its ID and whether it has started, sorted by peer URL.
fn member_table(url: &str, tls: &etcd::ClientTls) -> Vec<Entry> {
    let o = etcd::etcdctl(url, tls, &["member", "list", "-w", "json"], 2, 5);
    assert!(o.ok, "{o}");
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    let mut m: Vec<Entry> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Entry {
            peer_urls: m["peerURLs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().to_string())
                .collect(),
            name: m["name"].as_str().unwrap_or("").to_string(),
            id: m["ID"].as_u64().unwrap(),
            started: m["clientURLs"].as_array().is_some_and(|c| !c.is_empty()),
        })
        .collect();
    m.sort_by(|a, b| a.peer_urls.cmp(&b.peer_urls));
    m
}

/// Wait until the member list is exactly `nodes`, each started under its name.
fn wait_all_started(url: &str, tls: &etcd::ClientTls, nodes: &[&Node]) -> Vec<Entry> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = member_table(url, tls);
        let ok = m.len() == nodes.len()
            && nodes.iter().all(|n| {
                m.iter().any(|e| {
                    e.started
                        && e.name == n.name
                        && e.peer_urls == vec![format!("https://{}:2380", n.ip)]
                })
            });
        if ok {
            return m;
        }
        assert!(Instant::now() < deadline, "members: {m:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The entry of `n` in a member table.
fn entry<'a>(m: &'a [Entry], n: &Node) -> &'a Entry {
    let url = format!("https://{}:2380", n.ip);
    m.iter()
        .find(|e| e.peer_urls.contains(&url))
        .unwrap_or_else(|| panic!("{} is not a member: {m:?}", n.name))
}

fn peer_list(ns: &[&Node]) -> String {
    ns.iter()
        .map(|n| format!("{}={}", n.name, n.ip))
        .collect::<Vec<_>>()
        .join(",")
}

/// etcd-a, etcd-b and etcd-c on 127.0.0.`first`.., each with its etcd
/// certificates from `pki`.
async fn three_members(pki: &Pki, first: u8) -> [Node; 3] {
    let root = pki.dir.path().join("nodes");
    let node = |name: &str, i: u8| Node::new(&root, name, Ipv4Addr::new(127, 0, 0, first + i));
    let [a, b, c] = [node("etcd-a", 0), node("etcd-b", 1), node("etcd-c", 2)];
    for n in [&a, &b, &c] {
        pki.etcd_certs(&n.name, &n.ip.to_string(), &n.pki).await;
    }
    [a, b, c]
}

/// Issue #16: the slow member. Two members of a new cluster of three start
/// (with quorum), the third joins seconds later: it removes and adds nothing,
/// starts under the entry the initial cluster gave it, and the cluster is
/// three healthy started members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_member_joins_the_forming_cluster_without_changing_membership() {
    if !etcd::tools_present() {
        return;
    }
    let pki = Pki::start().await;
    let [a, b, c] = three_members(&pki, 41).await;
    let peers = peer_list(&[&a, &b, &c]);
    let urls = |ns: &[&Node]| ns.iter().map(|n| n.client_url()).collect::<Vec<_>>();
    let tls = a.tls();

    // etcd-a and etcd-b: nobody answers yet, a new cluster of all three.
    for n in [&a, &b] {
        let o = n.join(&peers).await;
        assert!(o.status.success(), "{}: {}", n.name, show(&o));
        assert_eq!(env_file(&n.env), expect_env(n, "new", &[&a, &b, &c]));
    }
    let mut pa = a.start();
    let mut pb = b.start();
    tokio::task::block_in_place(|| {
        wait_healthy(
            &mut [&mut pa, &mut pb],
            &urls(&[&a, &b]),
            &tls,
            Duration::from_secs(60),
        )
    });
    // etcd-c is seconds late.
    let healthy_at = Instant::now();
    while healthy_at.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pa.assert_running();
        pb.assert_running();
    }
    let put = etcd::etcdctl(&a.client_url(), &tls, &["put", "/k", "v1"], 2, 5);
    assert!(put.ok, "{put}");
    // The forming cluster: a and b started, c listed by name, never started.
    let before = member_table(&a.client_url(), &tls);
    assert_eq!(before.len(), 3, "{before:?}");
    for n in [&a, &b] {
        let e = entry(&before, n);
        assert!(e.started && e.name == n.name, "{before:?}");
    }
    let ec = entry(&before, &c);
    assert!(!ec.started, "etcd-c has not run: {before:?}");
    assert_eq!(ec.name, "etcd-c", "{before:?}");

    let o = c.join(&peers).await;
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("removing a member"), "{}", show(&o));
    assert!(!err.contains("adding this node"), "{}", show(&o));
    assert!(!err.contains("moved aside"), "{}", show(&o));
    // Its own entry of the initial cluster, the same list the others started
    // with; etcd-join writes `existing` since a cluster answered (etcd
    // fetches the membership from the peers and takes that entry's ID).
    assert_eq!(env_file(&c.env), expect_env(&c, "existing", &[&a, &b, &c]));
    assert_eq!(member_table(&a.client_url(), &tls), before);

    let mut pc = c.start();
    tokio::task::block_in_place(|| {
        wait_healthy(
            &mut [&mut pa, &mut pb, &mut pc],
            &urls(&[&a, &b, &c]),
            &tls,
            Duration::from_secs(60),
        )
    });
    let after =
        tokio::task::block_in_place(|| wait_all_started(&c.client_url(), &c.tls(), &[&a, &b, &c]));
    // The same three IDs: nobody was removed or added.
    let ids = |m: &[Entry]| m.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before), "{before:?} -> {after:?}");
    let get = etcd::etcdctl(
        &c.client_url(),
        &c.tls(),
        &["get", "/k", "--print-value-only"],
        2,
        5,
    );
    assert!(get.ok && get.stdout.trim() == "v1", "{get}");
    drop((pa, pb, pc));
}

/// Issue #16: the lost member. etcd-c of a healthy cluster loses its disk
/// and comes back under the same name and address: etcd-join removes its
/// stale entry and adds it anew (`existing`); data of its earlier life that
/// turns up before it starts is moved aside, never deleted; it starts with
/// a new member ID and the cluster is three healthy started members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_member_is_replaced_under_its_own_name() {
    if !etcd::tools_present() {
        return;
    }
    let pki = Pki::start().await;
    let [a, b, c] = three_members(&pki, 51).await;
    let peers = peer_list(&[&a, &b, &c]);
    let urls = |ns: &[&Node]| ns.iter().map(|n| n.client_url()).collect::<Vec<_>>();
    let tls = a.tls();
    for n in [&a, &b, &c] {
        let o = n.join(&peers).await;
        assert!(o.status.success(), "{}: {}", n.name, show(&o));
        assert_eq!(env_file(&n.env), expect_env(n, "new", &[&a, &b, &c]));
    }
    let mut pa = a.start();
    let mut pb = b.start();
    let mut pc = c.start();
    tokio::task::block_in_place(|| {
        wait_healthy(
            &mut [&mut pa, &mut pb, &mut pc],
            &urls(&[&a, &b, &c]),
            &tls,
            Duration::from_secs(60),
        )
    });
    let before =
        tokio::task::block_in_place(|| wait_all_started(&a.client_url(), &tls, &[&a, &b, &c]));
    let old_id = entry(&before, &c).id;
    let put = etcd::etcdctl(&a.client_url(), &tls, &["put", "/k", "v1"], 2, 5);
    assert!(put.ok, "{put}");

    // etcd-c dies and its disk is lost (kept aside here, to come back later).
    pc.kill();
    let old_disk = pki.dir.path().join("nodes/etcd-c-old-disk");
    std::fs::rename(&c.data, &old_disk).unwrap();
    assert!(old_disk.join("member/wal").is_dir());

    let o = c.join(&peers).await;
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("removing a member"), "{}", show(&o));
    assert!(err.contains("adding this node"), "{}", show(&o));
    assert_eq!(env_file(&c.env), expect_env(&c, "existing", &[&a, &b, &c]));
    let added = member_table(&a.client_url(), &tls);
    assert_eq!(added.len(), 3, "{added:?}");
    for n in [&a, &b] {
        assert_eq!(entry(&added, n), entry(&before, n), "{added:?}");
    }
    let new_c = entry(&added, &c).clone();
    assert_ne!(new_c.id, old_id, "{added:?}");
    assert!(!new_c.started && new_c.name.is_empty(), "{added:?}");

    // The old disk turns up before etcd-c starts: its data is another
    // member's (the removed one). A rerun moves it aside, deletes nothing,
    // and changes no membership.
    std::fs::rename(&old_disk, &c.data).unwrap();
    let o = c.join(&peers).await;
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("moved aside"), "{}", show(&o));
    assert!(!err.contains("removing a member"), "{}", show(&o));
    assert!(!err.contains("adding this node"), "{}", show(&o));
    assert_eq!(env_file(&c.env), expect_env(&c, "existing", &[&a, &b, &c]));
    assert_eq!(member_table(&a.client_url(), &tls), added);
    assert!(!c.data.join("member").exists());
    let stale: Vec<PathBuf> = std::fs::read_dir(&c.data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("member.stale-")
        })
        .collect();
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert!(stale[0].join("wal").is_dir(), "{stale:?}");

    let mut pc = c.start();
    tokio::task::block_in_place(|| {
        wait_healthy(
            &mut [&mut pa, &mut pb, &mut pc],
            &urls(&[&a, &b, &c]),
            &tls,
            Duration::from_secs(60),
        )
    });
    let after =
        tokio::task::block_in_place(|| wait_all_started(&c.client_url(), &c.tls(), &[&a, &b, &c]));
    assert_eq!(entry(&after, &c).id, new_c.id, "{after:?}");
    assert_ne!(entry(&after, &c).id, old_id, "{after:?}");
    for n in [&a, &b] {
        assert_eq!(entry(&after, n).id, entry(&before, n).id, "{after:?}");
    }
    let get = etcd::etcdctl(
        &c.client_url(),
        &c.tls(),
        &["get", "/k", "--print-value-only"],
        2,
        5,
    );
    assert!(get.ok && get.stdout.trim() == "v1", "{get}");
    assert!(stale[0].join("wal").is_dir(), "the old data is still there");
    drop((pa, pb, pc));
}
