//! The node-client binary against a live pki-server (in-process, TLS on
//! loopback) with the cluster profile from policies/ applied:
//! - each role's fetch-cert writes exactly its files, with the expected
//!   subjects, SANs, EKUs and modes; a second run changes nothing;
//! - a worker asking for controller or etcd certificates, or another node's,
//!   is refused (exit 3) and nothing is written;
//! - three `fetch-cert --role etcd` runs make a real 3-member etcd cluster
//!   (peer + client TLS, client-cert auth) that the controller's etcd client
//!   certificate writes to and reads from, and a worker's cannot reach;
//!   with 30-second certificates `renew --watch` replaces them before expiry,
//!   runs the reload command, and etcd keeps serving past the first expiry;
//! - a server that is down at start, and then sealed, is waited out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/etcd.rs"]
mod etcd;
#[path = "../../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;
mod support;

use harness::Server;
use node_client::inspect;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const CLUSTER: &str = "kubecluster";

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// A running server with the profile applied; the root token.
struct Setup {
    srv: Server,
    root: String,
    keys: Vec<String>,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Self {
        Self::on_port(0).await
    }

    async fn on_port(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start_on(dir.path(), port).await;
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
        let keys: Vec<String> = init["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        let me = Self {
            srv,
            root,
            keys,
            dir,
        };
        me.unseal().await;
        let args = pki_server::cli::ClientArgs {
            address: me.srv.addr.clone(),
            ca_cert: Some(me.ca()),
        };
        let c = pki_server::client::Client::new(&args)
            .unwrap()
            .with_token(zeroize::Zeroizing::new(me.root.clone()));
        let steps = pki_server::profile::Profile::load(&policies())
            .unwrap()
            .plan(CLUSTER, &BTreeMap::new())
            .unwrap();
        pki_server::commands::apply_steps(&c, &steps).await.unwrap();
        me
    }

    async fn unseal(&self) {
        for k in &self.keys {
            let (s, v) = self
                .srv
                .call(
                    reqwest::Method::PUT,
                    "sys/unseal",
                    None,
                    Some(json!({"key": k})),
                )
                .await;
            assert_eq!(s, 200, "{v}");
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// A token of node role `role` for `node`, in a 0600 file.
    async fn token_file(&self, role: &str, node: &str) -> PathBuf {
        let (s, v) = self
            .srv
            .call(
                reqwest::Method::POST,
                &format!("auth/token/create/{CLUSTER}-{role}"),
                Some(&self.root),
                Some(json!({"meta": {"node_name": node}})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let p = self.dir.path().join(format!("token-{role}-{node}"));
        write_token(&p, v["auth"]["client_token"].as_str().unwrap());
        p
    }

    fn cmd(&self, token: &Path, args: &[&str]) -> Command {
        node_client(&self.srv.addr, &self.ca(), token, args)
    }
}

#[tokio::test]
async fn each_role_writes_exactly_its_files() {
    let s = Setup::new().await;
    let root = s.dir.path().join("nodes");

    // etcd member etcd-0 on 127.0.0.11.
    let out = root.join("etcd-0");
    let tok = s.token_file("etcd", "etcd-0").await;
    let o = output(s.cmd(&tok, &args("etcd", "etcd-0", &out, &["--ip", "127.0.0.11"]))).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_etcd(&out, "etcd-0", "127.0.0.11");

    // Controller ctl-1 on 10.240.0.10.
    let out = root.join("ctl-1");
    let tok = s.token_file("controller", "ctl-1").await;
    let o = output(s.cmd(
        &tok,
        &args("controller", "ctl-1", &out, &["--ip", "10.240.0.10"]),
    ))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    let api = assert_controller(&out, "ctl-1", "10.240.0.10");

    // Idempotent: a second run writes nothing; --force replaces the set.
    let data = std::fs::read_link(out.join("..data")).unwrap();
    let o = output(s.cmd(
        &tok,
        &args("controller", "ctl-1", &out, &["--ip", "10.240.0.10"]),
    ))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to do"),
        "{}",
        show(&o)
    );
    assert_eq!(std::fs::read_link(out.join("..data")).unwrap(), data);
    let o = output(s.cmd(
        &tok,
        &args(
            "controller",
            "ctl-1",
            &out,
            &["--ip", "10.240.0.10", "--force", "--no-reload"],
        ),
    ))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    assert_ne!(std::fs::read_link(out.join("..data")).unwrap(), data);
    assert_ne!(info(&out, "apiserver.crt").serial, api.serial);
    // Another signer now exists: the bundle holds both keys.
    let bundle = sa_pub(&out);
    assert_eq!(bundle.matches("BEGIN PUBLIC KEY").count(), 2, "{bundle}");

    // Worker worker-1 on 10.240.1.5.
    let out = root.join("worker-1");
    let tok = s.token_file("worker", "worker-1").await;
    let o = output(s.cmd(
        &tok,
        &args("worker", "worker-1", &out, &["--ip", "10.240.1.5"]),
    ))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    assert_worker(&out, "worker-1");

    // status lists what is there.
    let o = output(s.cmd(&tok, &["status", "--json", "--out", out.to_str().unwrap()])).await;
    assert_worker_status_json(&o);
    let o = output(s.cmd(&tok, &["status", "--out", out.to_str().unwrap()])).await;
    assert!(String::from_utf8_lossy(&o.stdout).contains("system:node:worker-1"));

    // --issue: the server makes the keys; same files.
    let out = root.join("worker-1-issue");
    let o = output(s.cmd(&tok, &args("worker", "worker-1", &out, &["--issue"]))).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_worker(&out, "worker-1");
}

#[tokio::test]
async fn a_worker_is_refused_other_roles_and_other_nodes_and_nothing_is_written() {
    let s = Setup::new().await;
    let tok = s.token_file("worker", "worker-1").await;
    for (role, node) in [
        ("controller", "worker-1"),
        ("etcd", "worker-1"),
        ("operator", "worker-1"),
        ("worker", "worker-2"),
    ] {
        let out = s.dir.path().join(format!("{role}-{node}"));
        let o = output(s.cmd(&tok, &args(role, node, &out, &[]))).await;
        assert_refused(&o, &out, &format!("{role}/{node}"));
    }
    // Configuration errors are exit 2 and name the problem.
    let out = s.dir.path().join("x");
    let o = output(s.cmd(&tok, &args("nobody", "worker-1", &out, &[]))).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown node role"));
    let o = output(node_client(
        &s.srv.addr,
        &s.dir.path().join("no-such-ca.pem"),
        &tok,
        &args("worker", "worker-1", &out, &[]),
    ))
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(visible(&out).is_empty());
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_on_fetched_certificates_keeps_serving_across_renewal() {
    if !etcd::tools_present() {
        return;
    }
    let s = Setup::new().await;
    let nodes = s.dir.path().join("nodes");
    // A profile whose etcd member certificate reloads by writing a marker.
    let marker = s.dir.path().join("reloaded");
    let text = std::fs::read_to_string(policies().join("profile.toml")).unwrap();
    let text = text.replacen(
        "file = \"etcd-member\"\n",
        &format!(
            "file = \"etcd-member\"\nreload = \"echo $NODE >> {}\"\n",
            marker.display()
        ),
        1,
    );
    assert!(text.contains("reload = \"echo $NODE"));
    let profile = s.dir.path().join("profile.toml");
    std::fs::write(&profile, text).unwrap();
    let profile_s = profile.to_str().unwrap().to_string();

    let member_ips: Vec<Ipv4Addr> = (0..3).map(|i| Ipv4Addr::new(127, 0, 0, 11 + i)).collect();
    let mut tls = Vec::new();
    let mut tokens = Vec::new();
    for (i, ip) in member_ips.iter().enumerate() {
        let name = format!("etcd-{i}");
        let out = nodes.join(&name);
        let tok = s.token_file("etcd", &name).await;
        let ip = ip.to_string();
        let o = output(s.cmd(
            &tok,
            &args(
                "etcd",
                &name,
                &out,
                &["--ip", &ip, "--ttl", "30s", "--profile", &profile_s],
            ),
        ))
        .await;
        assert!(o.status.success(), "{name}: {}", show(&o));
        let m = info(&out, "etcd-member.crt");
        assert!(
            m.not_after - m.not_before <= 60,
            "30-second certificates: {m:?}"
        );
        tls.push(etcd::MemberTls {
            cert: out.join("etcd-member.crt"),
            key: out.join("etcd-member.key"),
            ca: out.join("etcd-ca.crt"),
        });
        tokens.push(tok);
    }
    let ctl = nodes.join("ctl-1");
    let tok = s.token_file("controller", "ctl-1").await;
    let o = output(s.cmd(&tok, &args("controller", "ctl-1", &ctl, &[]))).await;
    assert!(o.status.success(), "{}", show(&o));
    let wrk = nodes.join("worker-1");
    let wtok = s.token_file("worker", "worker-1").await;
    let o = output(s.cmd(&wtok, &args("worker", "worker-1", &wrk, &[]))).await;
    assert!(o.status.success(), "{}", show(&o));

    let first_serials: Vec<String> = (0..3)
        .map(|i| info(&nodes.join(format!("etcd-{i}")), "etcd-member.crt").serial)
        .collect();
    let first_expiry = info(&nodes.join("etcd-0"), "etcd-member.crt").not_after;

    // Renewers for the three members, started before etcd.
    let mut renewers = Vec::new();
    for (i, ip) in member_ips.iter().enumerate() {
        let name = format!("etcd-{i}");
        let out = nodes.join(&name);
        let ip = ip.to_string();
        let mut c = s.cmd(
            &tokens[i],
            &[
                "renew",
                "--watch",
                "--role",
                "etcd",
                "--node-name",
                &name,
                "--out",
                out.to_str().unwrap(),
                "--ip",
                &ip,
                "--ttl",
                "30s",
                "--profile",
                &profile_s,
                "--interval",
                "2",
            ],
        );
        c.env("NODE", &name)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(s.dir.path().join(format!("renew-{name}.log"))).unwrap());
        renewers.push(KillOnDrop(c.spawn().unwrap()));
    }

    let result = tokio::task::spawn_blocking({
        let dir = s.dir.path().to_path_buf();
        let ctl = ctl.clone();
        let wrk = wrk.clone();
        let nodes = nodes.clone();
        let marker = marker.clone();
        move || {
            let mut cluster = etcd::Cluster::start(&dir, &member_ips, &tls);
            let ca = ctl.join("etcd-ca.crt");
            let (cc, ck) = (
                ctl.join("apiserver-etcd-client.crt"),
                ctl.join("apiserver-etcd-client.key"),
            );
            let good = etcd::ClientTls {
                cacert: &ca,
                cert: Some((&cc, &ck)),
            };
            cluster.wait_healthy(&good, Duration::from_secs(30));
            let urls = cluster.client_urls();
            let put = etcd::etcdctl(&urls[0], &good, &["put", "/registry/k", "v1"], 3, 5);
            assert!(put.ok, "{put}");
            let get = etcd::etcdctl(
                &urls[2],
                &good,
                &["get", "/registry/k", "--print-value-only"],
                3,
                5,
            );
            assert!(get.ok && get.stdout.trim() == "v1", "{get}");

            // A worker's client certificate (kubernetes CA) cannot connect.
            let (wc, wk) = (
                wrk.join("kubelet-client.crt"),
                wrk.join("kubelet-client.key"),
            );
            let bad = etcd::ClientTls {
                cacert: &ca,
                cert: Some((&wc, &wk)),
            };
            let get = etcd::etcdctl(&urls[0], &bad, &["get", "/registry/k"], 2, 3);
            assert!(!get.ok, "a worker's certificate must be refused: {get}");

            // Renewal: every member's certificate is replaced before it
            // expires, and the reload command ran for each.
            wait_for(
                "renewal of all three members",
                Duration::from_secs(40),
                || {
                    cluster.assert_running();
                    (0..3).all(|i| {
                        let p = nodes.join(format!("etcd-{i}"));
                        inspect::cert_info(
                            &std::fs::read(p.join("etcd-member.crt")).unwrap_or_default(),
                        )
                        .is_some_and(|c| c.serial != first_serials[i])
                    })
                },
            );
            let renewed_at = fetch_now();
            assert!(renewed_at < first_expiry, "renewed before expiry");
            let said = std::fs::read_to_string(&marker).unwrap_or_default();
            for i in 0..3 {
                assert!(
                    said.contains(&format!("etcd-{i}")),
                    "reload ran for etcd-{i}: {said:?}"
                );
            }
            // Past the first certificates' expiry, etcd still serves new
            // connections: it picked up the renewed files.
            while fetch_now() <= first_expiry + 1 {
                std::thread::sleep(Duration::from_millis(250));
            }
            cluster.wait_healthy(&good, Duration::from_secs(15));
            let put = etcd::etcdctl(&urls[1], &good, &["put", "/registry/k", "v2"], 3, 5);
            assert!(put.ok, "{put}");
            let get = etcd::etcdctl(
                &urls[0],
                &good,
                &["get", "/registry/k", "--print-value-only"],
                3,
                5,
            );
            assert!(get.ok && get.stdout.trim() == "v2", "{get}");
        }
    })
    .await;
    drop(renewers);
    if let Err(e) = result {
        for i in 0..3 {
            let log = s.dir.path().join(format!("renew-etcd-{i}.log"));
            eprintln!(
                "--- renew etcd-{i} ---\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::panic::resume_unwind(e.into_panic());
    }
}

fn fetch_now() -> i64 {
    node_client::fetch::now()
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_waits_for_a_server_that_starts_late_and_sealed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Setup::on_port(port).await;
    let tok = s.token_file("worker", "worker-1").await;
    let Setup { srv, keys, dir, .. } = s;
    let addr = srv.addr.clone();
    srv.stop().await;

    let out = dir.path().join("out");
    let ca = dir.path().join("tls/ca.pem");
    let mut c = node_client(&addr, &ca, &tok, &args("worker", "worker-1", &out, &[]));
    c.args(["--deadline", "60"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let child = c.spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The server comes back sealed; it is unsealed three seconds later.
    let srv = Server::start_on(dir.path(), port).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for k in &keys {
        let (st, _) = srv
            .call(
                reqwest::Method::PUT,
                "sys/unseal",
                None,
                Some(json!({"key": k})),
            )
            .await;
        assert_eq!(st, 200);
    }
    let o = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(started.elapsed() >= Duration::from_secs(13));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("waiting for pki-server"),
        "it said what it waits for: {err}"
    );
    assert!(
        err.contains("503") || err.contains("sealed"),
        "it saw the sealed server: {err}"
    );
    assert_eq!(
        info(&out, "kubelet-client.crt").common_name,
        "system:node:worker-1"
    );
    srv.stop().await;
}
