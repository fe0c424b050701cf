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
//! - etcd checking client and peer certificates against node-client's CRL
//!   file: a health-check client certificate revoked on the etcd-member
//!   mount is refused on new connections after one `renew` pass, and within
//!   one `--crl-interval` under `renew --watch`; the same CRL is not
//!   rewritten; a freshly issued certificate still works;
//! - a server that is down at start, and then sealed, is waited out;
//! - `--auth aws` against moto: an instance of the worker IAM role (instance
//!   profile, credentials from AssumeRole with the instance id as session
//!   name) logs in and gets its own kubelet certificates; asking for another
//!   node's name is refused (exit 3) and nothing is written;
//! - `--auth jwt`: a valid JWT logs in and pins the node name; an expired one
//!   is refused with exit 3.

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
use node_client::inspect;
use node_client::profile::Profile;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
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
            crl: Some(out.join("etcd-ca.crl")),
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
    // Every certificate each member has had, in order, seen by a watcher
    // that polls far faster than the renewers renew.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let dirs: Vec<PathBuf> = (0..3).map(|i| nodes.join(format!("etcd-{i}"))).collect();
        std::thread::spawn(move || {
            let mut seen: Vec<Vec<inspect::CertInfo>> = vec![Vec::new(); 3];
            loop {
                // One more poll after the stop: the caller stops as soon as it
                // saw the change, which this loop may not have polled yet.
                let last = stop.load(std::sync::atomic::Ordering::SeqCst);
                for (d, s) in dirs.iter().zip(seen.iter_mut()) {
                    let c = inspect::cert_info(
                        &std::fs::read(d.join("etcd-member.crt")).unwrap_or_default(),
                    );
                    if let Some(c) = c
                        && s.last().is_none_or(|l| l.serial != c.serial)
                    {
                        s.push(c);
                    }
                }
                if last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };

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
            // Judged by the certificates, not by when this loop saw them
            // (etcd's start-up may take longer than their lifetime): each
            // new one was issued (notBefore + the roles' 30 s backdate)
            // before the one it replaced expired.
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let seen = watcher.join().unwrap();
            for (i, certs) in seen.iter().enumerate() {
                assert!(certs.len() >= 2, "etcd-{i}: no renewal seen");
                assert_eq!(certs[0].serial, first_serials[i]);
                for w in certs.windows(2) {
                    assert!(
                        w[1].not_before + 30 < w[0].not_after,
                        "etcd-{i}: {} issued at {} after {} expired at {}",
                        w[1].serial,
                        w[1].not_before + 30,
                        w[0].serial,
                        w[0].not_after
                    );
                }
            }
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

/// An HTTP answer from etcd's peer listener at `url` (any status), or why
/// there was none, for a client presenting `cert` and `key`.
async fn peer_answer(url: &str, ca: &Path, cert: &Path, key: &Path) -> Result<u16, String> {
    let mut pem = std::fs::read(cert).unwrap();
    pem.push(b'\n');
    pem.extend(std::fs::read(key).unwrap());
    let id = reqwest::Identity::from_pem(&pem).unwrap();
    let cas = reqwest::Certificate::from_pem_bundle(&std::fs::read(ca).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .tls_certs_only(cas)
        .identity(id)
        // HTTP/1.1: etcd 3.4's peer port hands HTTP/2 to its gRPC server.
        .http1_only()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    c.get(format!("{url}/version"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// `endpoint health` on `url` alone with `cert`: healthy or not.
fn healthy(url: &str, ca: &Path, cert: &Path, key: &Path) -> etcd::Out {
    let tls = etcd::ClientTls {
        cacert: ca,
        cert: Some((cert, key)),
    };
    tokio::task::block_in_place(|| etcd::etcdctl(url, &tls, &["endpoint", "health"], 2, 2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_etcd_client_certificate_is_refused_after_one_crl_refresh() {
    if !etcd::tools_present() {
        return;
    }
    let s = Setup::new().await;
    let nodes = s.dir.path().join("nodes");
    let mount = format!("{CLUSTER}/pki/etcd-member");
    let member_ips: Vec<Ipv4Addr> = (0..3).map(|i| Ipv4Addr::new(127, 0, 0, 31 + i)).collect();
    let name = |i: usize| format!("etcd-{i}");
    let dir = |i: usize| nodes.join(name(i));
    let mut tls = Vec::new();
    let mut tokens = Vec::new();
    for (i, ip) in member_ips.iter().enumerate() {
        let tok = s.token_file("etcd", &name(i)).await;
        let ip = ip.to_string();
        let o = output(s.cmd(&tok, &args("etcd", &name(i), &dir(i), &["--ip", &ip]))).await;
        assert!(o.status.success(), "{}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(&format!(
                "wrote {} (CRL of {mount}, 0 revoked)",
                dir(i).join("etcd-ca.crl").display()
            )),
            "{}",
            show(&o)
        );
        tls.push(etcd::MemberTls {
            cert: dir(i).join("etcd-member.crt"),
            key: dir(i).join("etcd-member.key"),
            ca: dir(i).join("etcd-ca.crt"),
            crl: Some(dir(i).join("etcd-ca.crl")),
        });
        tokens.push(tok);
    }
    // One renew pass of member i (nothing is due but the CRL): its stdout.
    let renew_once = |i: usize| {
        let ip = member_ips[i].to_string();
        let out = dir(i).to_str().unwrap().to_string();
        let c = s.cmd(
            &tokens[i],
            &[
                "renew",
                "--role",
                "etcd",
                "--node-name",
                &name(i),
                "--out",
                &out,
                "--ip",
                &ip,
            ],
        );
        async move {
            let o = output(c).await;
            assert!(o.status.success(), "{}", show(&o));
            String::from_utf8_lossy(&o.stdout).into_owned()
        }
    };
    // etcd-1 runs the renewer as its unit does, refreshing the CRL every 3 s.
    let crl_interval = 3u64;
    let watch_log = s.dir.path().join("renew-etcd-1.log");
    let mut c = s.cmd(
        &tokens[1],
        &[
            "renew",
            "--watch",
            "--role",
            "etcd",
            "--node-name",
            &name(1),
            "--out",
            dir(1).to_str().unwrap(),
            "--ip",
            &member_ips[1].to_string(),
            "--crl-interval",
            &crl_interval.to_string(),
        ],
    );
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&watch_log).unwrap());
    let watcher = KillOnDrop(c.spawn().unwrap());

    let mut cluster = etcd::Cluster::start(s.dir.path(), &member_ips, &tls);
    let urls = cluster.client_urls();
    let ca = dir(0).join("etcd-ca.crt");
    let (hc, hk) = (
        dir(0).join("etcd-healthcheck-client.crt"),
        dir(0).join("etcd-healthcheck-client.key"),
    );
    let hc_tls = etcd::ClientTls {
        cacert: &ca,
        cert: Some((&hc, &hk)),
    };
    // The health-check client works on every member (peers talk through
    // their CRL-checking listener too).
    tokio::task::block_in_place(|| cluster.wait_healthy(&hc_tls, Duration::from_secs(30)));

    // Revoke it on the etcd-member mount. Meanwhile, watch etcd-1's CRL
    // file: how long until its renewer replaces it.
    let crl1 = dir(1).join("etcd-ca.crl");
    let before = std::fs::read(&crl1).unwrap();
    let serial = info(&dir(0), "etcd-healthcheck-client.crt").serial;
    let (st, v) = s
        .srv
        .call(
            reqwest::Method::POST,
            &format!("{mount}/revoke"),
            Some(&s.root),
            Some(json!({"serial_number": serial})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let rewritten = {
        let crl1 = crl1.clone();
        std::thread::spawn(move || {
            let revoked_at = Instant::now();
            while std::fs::read(&crl1).is_ok_and(|b| b == before) {
                if revoked_at.elapsed() > Duration::from_secs(60) {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(revoked_at.elapsed())
        })
    };

    // Until etcd-0's CRL file is refreshed, etcd-0 still lets it in: the
    // file is what etcd checks.
    let h = healthy(&urls[0], &ca, &hc, &hk);
    assert!(h.ok, "accepted before the refresh: {h}");

    // One renew pass on etcd-0 and etcd-2: the new CRL is written...
    for i in [0, 2] {
        let said = renew_once(i).await;
        assert!(
            said.contains(&format!(
                "wrote {} (CRL of {mount}, 1 revoked)",
                dir(i).join("etcd-ca.crl").display()
            )),
            "{said}"
        );
    }
    // ... and the very next connection with that certificate is refused,
    // on the client port and on the peer port alike.
    for i in [0, 2] {
        let h = healthy(&urls[i], &ca, &hc, &hk);
        assert!(!h.ok, "etcd-{i} must refuse the revoked certificate: {h}");
    }
    let peer0 = cluster.peer_urls()[0].clone();
    let answer = peer_answer(&peer0, &ca, &hc, &hk).await;
    assert!(answer.is_err(), "peer port of etcd-0: {answer:?}");

    // etcd-1, with nobody but its renewer: its CRL was replaced within one
    // CRL interval (and the time of one fetch), and it refuses the
    // certificate too.
    let took = tokio::task::block_in_place(|| rewritten.join().unwrap());
    let took = took.expect("etcd-1's renewer never wrote the new CRL");
    assert!(
        took <= Duration::from_secs(crl_interval + 3),
        "etcd-1's CRL replaced {took:?} after the revocation (interval {crl_interval} s)"
    );
    let h = healthy(&urls[1], &ca, &hc, &hk);
    assert!(!h.ok, "etcd-1 must refuse the revoked certificate: {h}");
    eprintln!("etcd-1's renewer wrote the new CRL {took:?} after the revocation");

    // A second pass changes nothing: the same bytes are not rewritten.
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let crl0 = dir(0).join("etcd-ca.crl");
    let inode = ino(&crl0);
    let said = renew_once(0).await;
    assert!(
        said.contains(&format!(
            "{} unchanged (CRL of {mount}, 1 revoked)",
            crl0.display()
        )),
        "{said}"
    );
    assert_eq!(ino(&crl0), inode);

    // A freshly issued health-check certificate works everywhere, on the
    // client and the peer ports; the members still form a healthy cluster.
    let (st, v) = s
        .srv
        .call(
            reqwest::Method::POST,
            &format!("{mount}/issue/healthcheck-client"),
            Some(&s.root),
            // As node-client asks: no DNS SAN, which etcd's peer listener
            // would check against the client's address.
            Some(json!({
                "common_name": "kube-etcd-healthcheck-client",
                "exclude_cn_from_sans": true,
            })),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let fresh = s.dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let (fc, fk) = (fresh.join("hc.crt"), fresh.join("hc.key"));
    std::fs::write(&fc, v["data"]["certificate"].as_str().unwrap()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&fk)
        .and_then(|mut f| {
            std::io::Write::write_all(
                &mut f,
                v["data"]["private_key"].as_str().unwrap().as_bytes(),
            )
        })
        .unwrap();
    let fresh_tls = etcd::ClientTls {
        cacert: &ca,
        cert: Some((&fc, &fk)),
    };
    tokio::task::block_in_place(|| cluster.wait_healthy(&fresh_tls, Duration::from_secs(15)));
    let answer = peer_answer(&peer0, &ca, &fc, &fk).await;
    assert!(answer.is_ok(), "peer port of etcd-0: {answer:?}");
    cluster.assert_running();
    drop(watcher);
    let log = std::fs::read_to_string(&watch_log).unwrap();
    assert!(log.contains("wrote the CRL"), "{log}");
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
    c.args(["--deadline", "90"]);
    // stderr to a file, so the test can see when the client noticed the seal.
    let log = dir.path().join("node-client.log");
    c.stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let started = Instant::now();
    let child = c.spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The server comes back sealed; it is unsealed once the client has seen that.
    let srv = Server::start_on(dir.path(), port).await;
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("503") || text.contains("sealed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client never saw the sealed server: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(o.status.success(), "{}\n{err}", show(&o));
    assert!(started.elapsed() >= Duration::from_secs(10));
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

// ------------------------------------------------------------ logins

/// node-client with no token at all: only a login can give it one.
fn login_cmd(s: &Setup, args: &[&str]) -> Command {
    let mut c = node_client(&s.srv.addr, &s.ca(), Path::new("/nonexistent"), args);
    c.env_remove("NODE_CLIENT_TOKEN_FILE");
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("AWS_") || k.starts_with("NODE_CLIENT_") {
            c.env_remove(k);
        }
    }
    c
}

#[tokio::test]
async fn aws_login_gets_the_instances_own_kubelet_certificates_and_nothing_else() {
    let Some(moto) = aws::Moto::start() else {
        return;
    };
    let m = moto.endpoint.as_str();
    let admin = aws::Creds::admin();
    // What the provisioner creates: role and instance profile <cluster>-worker,
    // instances tagged with the cluster and role.
    let name = format!("{CLUSTER}-worker");
    let role_arn = aws::create_role(m, &admin, &name).await;
    aws::create_instance_profile(m, &admin, &name).await;
    let tags = [
        ("kube-aws-pki/role", "worker"),
        ("kube-aws-pki/cluster", CLUSTER),
    ];
    let n1 = aws::instance(m, &admin, &name, &role_arn, &tags).await;
    let n2 = aws::instance(m, &admin, &name, &role_arn, &tags).await;
    assert_ne!(n1.dns, n2.dns);

    let s = Setup::new().await;
    // The profile enabled auth/aws with its roles; point it at moto.
    let (st, v) = s
        .srv
        .call(
            reqwest::Method::POST,
            "auth/aws/config/client",
            Some(&s.root),
            Some(json!({
                "sts_endpoint": m,
                "sts_region": "us-east-1",
                "endpoint": m,
                "access_key": "testing",
                "secret_key": "testing",
            })),
        )
        .await;
    assert_eq!(st, 204, "{v}");
    let server_id = "pki.kubecluster.cluster.internal"; // the profile's default
    let node = |n: &aws::Instance, node_name: &str, out: &Path, id: &str| {
        let mut c = login_cmd(
            &s,
            &args(
                "worker",
                node_name,
                out,
                &[
                    "--ip",
                    &n.ip,
                    "--auth",
                    "aws",
                    "--aws-server-id",
                    id,
                    "--deadline",
                    "20",
                ],
            ),
        );
        c.env("AWS_ACCESS_KEY_ID", &n.creds.access)
            .env("AWS_SECRET_ACCESS_KEY", &n.creds.secret)
            .env("AWS_SESSION_TOKEN", n.creds.session.as_deref().unwrap())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", m)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
        c
    };

    let root = s.dir.path().join("aws");
    let out = root.join("n1");
    let o = output(node(&n1, &n1.dns, &out, server_id)).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        visible(&out),
        Profile::embedded().unwrap().files("worker").unwrap()
    );
    let kc = info(&out, "kubelet-client.crt");
    assert_eq!(kc.common_name, format!("system:node:{}", n1.dns));
    let ks = info(&out, "kubelet.crt");
    assert_eq!(ks.common_name, format!("system:node:{}", n1.dns));
    assert_eq!(ks.dns_names, std::slice::from_ref(&n1.dns));
    // The role refuses IP SANs on kubelet serving certificates (docs/security.md).
    assert!(ks.ip_addresses.is_empty());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let secret = n1.creds.session.as_deref().unwrap();
    assert!(!stderr.contains(secret) && !stderr.contains(&n1.creds.secret));

    // The same instance asking for another node's name: refused, nothing written.
    let out = root.join("n1-as-n2");
    let o = output(node(&n1, &n2.dns, &out, server_id)).await;
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(visible(&out).is_empty(), "{:?}", visible(&out));
    // A login signed for another server: refused before anything is asked.
    let out = root.join("other-server");
    let o = output(node(&n2, &n2.dns, &out, "pki.elsewhere")).await;
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(visible(&out).is_empty());
}

/// An ES256 JWT signer for the jwt login tests.
struct JwtSigner {
    key: ring::signature::EcdsaKeyPair,
    pem: String,
}

impl JwtSigner {
    fn new() -> Self {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &kp.serialize_der(), &rng)
                .unwrap();
        Self {
            key,
            pem: kp.public_key_pem(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!(
            "{}.{}",
            b64.encode(json!({"alg": "ES256", "typ": "JWT"}).to_string()),
            b64.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64.encode(sig.as_ref()))
    }
}

#[tokio::test]
async fn jwt_login_pins_the_node_name_and_an_expired_token_is_refused() {
    let s = Setup::new().await;
    let signer = JwtSigner::new();
    // apply-profile again, now with the key: auth/jwt gets its configuration.
    let args_ = pki_server::cli::ClientArgs {
        address: s.srv.addr.clone(),
        ca_cert: Some(s.ca()),
    };
    let c = pki_server::client::Client::new(&args_)
        .unwrap()
        .with_token(zeroize::Zeroizing::new(s.root.clone()));
    let steps = pki_server::profile::Profile::load(&policies())
        .unwrap()
        .plan_with_keys(CLUSTER, &BTreeMap::new(), std::slice::from_ref(&signer.pem))
        .unwrap();
    let lines = pki_server::commands::apply_steps(&c, &steps).await.unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("auth config auth/jwt/config: written")),
        "{lines:?}"
    );
    let now = fetch_now();
    let claims = |node: &str, exp: i64| {
        json!({
            "iss": "https://jwt.kubecluster.cluster.internal",
            "aud": "kube-aws-pki:kubecluster",
            "sub": node,
            "node_name": node,
            "kube-aws-pki/role": "worker",
            "iat": now,
            "exp": exp,
        })
    };
    let jwt_file = |name: &str, jwt: &str| {
        let p = s.dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .unwrap();
        std::io::Write::write_all(&mut f, jwt.as_bytes()).unwrap();
        p
    };
    let root = s.dir.path().join("jwt");
    let good = jwt_file("w1.jwt", &signer.sign(&claims("worker-1", now + 300)));
    let run = |node: &str, out: &Path, file: &Path| {
        login_cmd(
            &s,
            &args(
                "worker",
                node,
                out,
                &[
                    "--auth",
                    "jwt",
                    "--jwt-file",
                    file.to_str().unwrap(),
                    "--deadline",
                    "20",
                ],
            ),
        )
    };

    let out = root.join("worker-1");
    let o = output(run("worker-1", &out, &good)).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        info(&out, "kubelet-client.crt").common_name,
        "system:node:worker-1"
    );
    assert_eq!(info(&out, "kubelet.crt").dns_names, ["worker-1"]);

    // The token is for worker-1: worker-2's name is refused.
    let out = root.join("worker-2");
    let o = output(run("worker-2", &out, &good)).await;
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(visible(&out).is_empty());

    // An expired JWT: the login is refused (exit 3), nothing written.
    let expired = jwt_file("expired.jwt", &signer.sign(&claims("worker-1", now - 3600)));
    let out = root.join("expired");
    let o = output(run("worker-1", &out, &expired)).await;
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(visible(&out).is_empty());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("auth/jwt/login"), "{stderr}");
    let jwt = std::fs::read_to_string(&expired).unwrap();
    assert!(!stderr.contains(jwt.trim()), "the JWT in an error message");
}
