//! Real etcd (Debian's etcd-server 3.4) on certificates from pki-server: a
//! 3-member cluster on 127.0.0.11-13 with peer and client TLS and
//! `--client-cert-auth`. etcdctl with a client certificate from the
//! etcd-member mount writes on one member and reads on another; without a
//! client certificate, or with one from the kube-apiserver mount (same name,
//! other CA), it is refused and nothing is written.

use crate::harness::{TestApp, required};
use serde_json::{Value, json};
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ETCD_MOUNT: &str = "kubecluster/pki/etcd-member";
const APISERVER_MOUNT: &str = "kubecluster/pki/kube-apiserver";
/// The client name both mounts issue: only the CA tells them apart.
const CLIENT_CN: &str = "kube-apiserver-etcd-client";

/// etcd, etcdctl and openssl on PATH, or false (skip) — panics under CI=true.
fn tools_present() -> bool {
    for (tool, version) in [
        ("etcd", "--version"),
        ("etcdctl", "version"),
        ("openssl", "version"),
    ] {
        let found = Command::new(tool)
            .arg(version)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if required() {
                panic!(
                    "{tool} is missing: apt-get install etcd-server etcd-client openssl (CI=true: tests never skip)"
                );
            }
            eprintln!("SKIPPED: {tool} not found; apt-get install etcd-server etcd-client");
            return false;
        }
    }
    true
}

/// Environment variables that would change how etcd/etcdctl behave here:
/// ETCD_*/ETCDCTL_* settings and proxies (gRPC honours HTTPS_PROXY).
fn scrub_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        let upper = k.to_ascii_uppercase();
        if upper.starts_with("ETCD") || upper.ends_with("_PROXY") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok={} stdout={:?} stderr={:?}",
            self.ok, self.stdout, self.stderr
        )
    }
}

/// Run a command, killing it after `timeout` (then `ok` is false).
fn run(cmd: &mut Command, timeout: Duration) -> Out {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = err.join().unwrap();
    if status.is_none() {
        stderr.push_str(&format!("\n[killed after {timeout:?}]"));
    }
    Out {
        ok: status.is_some_and(|s| s.success()),
        stdout: out.join().unwrap(),
        stderr,
    }
}

/// Write a secret-ish file with mode 0600.
fn write_private(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .unwrap();
    std::io::Write::write_all(&mut f, content.as_bytes()).unwrap();
    p
}

/// `port` on `ip` if nobody listens there, else a free port on `ip`.
fn port_on(ip: Ipv4Addr, port: u16) -> u16 {
    if TcpListener::bind((ip, port)).is_ok() {
        return port;
    }
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

struct Member {
    name: String,
    client_url: String,
    log: PathBuf,
    child: Child,
}

/// The etcd processes: SIGKILLed and reaped on drop (also on panic, when the
/// tail of each member's log is printed).
struct Cluster {
    members: Vec<Member>,
}

impl Cluster {
    /// Panic if a member has exited (e.g. its port was taken meanwhile).
    fn assert_running(&mut self) {
        for m in &mut self.members {
            if let Some(st) = m.child.try_wait().unwrap() {
                panic!("{} exited: {st}", m.name);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.child.kill();
        }
        for m in &mut self.members {
            let _ = m.child.wait();
        }
        if std::thread::panicking() {
            for m in &self.members {
                eprintln!(
                    "----- {} ({}), last lines of {} -----\n{}",
                    m.name,
                    m.client_url,
                    m.log.display(),
                    last_lines(&m.log, 40)
                );
            }
        }
    }
}

/// Client TLS material for etcdctl: the CA it trusts and an optional client pair.
struct ClientTls<'a> {
    cacert: &'a Path,
    cert: Option<(&'a Path, &'a Path)>,
}

fn etcdctl(endpoints: &str, tls: &ClientTls, args: &[&str], dial: u64, command: u64) -> Out {
    let mut cmd = Command::new("etcdctl");
    scrub_env(&mut cmd)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--dial-timeout={dial}s"))
        .arg(format!("--command-timeout={command}s"))
        .arg(format!("--cacert={}", tls.cacert.display()));
    if let Some((cert, key)) = tls.cert {
        cmd.arg(format!("--cert={}", cert.display()))
            .arg(format!("--key={}", key.display()));
    }
    cmd.args(args);
    run(&mut cmd, Duration::from_secs(dial + command + 5))
}

async fn ok(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let r = app
        .call("POST", &format!("/v1/{path}"), Some(token), Some(body))
        .await;
    assert!(r.status.is_success(), "{path}: {} {:?}", r.status, r.body);
    r.body
}

/// A PKI mount with its own EC P-256 root.
async fn mount_with_root(app: &TestApp, token: &str, mount: &str, cn: &str) {
    ok(
        app,
        token,
        &format!("sys/mounts/{mount}"),
        json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}),
    )
    .await;
    ok(
        app,
        token,
        &format!("{mount}/root/generate/internal"),
        json!({"common_name": cn, "key_type": "ec", "key_bits": 256, "ttl": "87600h"}),
    )
    .await;
}

/// The client role: one bare name, clientAuth only.
async fn client_role(app: &TestApp, token: &str, mount: &str) {
    ok(
        app,
        token,
        &format!("{mount}/roles/client"),
        json!({
            "allowed_domains": CLIENT_CN, "allow_bare_domains": true, "allow_subdomains": false,
            "allow_localhost": false, "allow_ip_sans": false,
            "server_flag": false, "client_flag": true,
            "key_type": "ec", "key_bits": 256, "ttl": "24h", "max_ttl": "720h",
        }),
    )
    .await;
}

/// Issue from `mount`/`role`; write cert + key (0600) as `<stem>.crt/.key`.
async fn issue(
    app: &TestApp,
    token: &str,
    mount: &str,
    role: &str,
    body: Value,
    dir: &Path,
    stem: &str,
) -> (PathBuf, PathBuf) {
    let r = ok(app, token, &format!("{mount}/issue/{role}"), body).await;
    let d = &r["data"];
    assert_eq!(d["private_key_type"], "ec", "{r}");
    (
        write_private(
            dir,
            &format!("{stem}.crt"),
            d["certificate"].as_str().unwrap(),
        ),
        write_private(
            dir,
            &format!("{stem}.key"),
            d["private_key"].as_str().unwrap(),
        ),
    )
}

/// The mount's CA from `/ca/pem`, fetched without a token.
async fn ca_pem(app: &TestApp, mount: &str, dir: &Path, name: &str) -> PathBuf {
    let r = app
        .call("GET", &format!("/v1/{mount}/ca/pem"), None, None)
        .await;
    assert_eq!(r.status, 200, "{mount}/ca/pem: {:?}", r.body);
    let pem = String::from_utf8(r.raw).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    write_private(dir, name, &pem)
}

fn openssl_verify(ca: &Path, purpose: &str, cert: &Path) -> Out {
    run(
        Command::new("openssl").args([
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            "-purpose",
            purpose,
            cert.to_str().unwrap(),
        ]),
        Duration::from_secs(10),
    )
}

#[tokio::test]
async fn three_member_tls_cluster_on_etcd_member_certificates() {
    if !tools_present() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();

    // --- pki-server in-process: two mounts, two different CAs. ---
    let app = TestApp::new();
    let token = app.init_unsealed().await;
    let token = token.as_str();
    mount_with_root(&app, token, ETCD_MOUNT, "etcd-ca").await;
    mount_with_root(&app, token, APISERVER_MOUNT, "kube-apiserver-ca").await;
    ok(
        &app,
        token,
        &format!("{ETCD_MOUNT}/roles/member"),
        json!({
            "allowed_domains": "etcd.cluster.local", "allow_subdomains": true,
            "allow_bare_domains": false, "allow_ip_sans": true, "allow_localhost": true,
            "server_flag": true, "client_flag": true,
            "key_type": "ec", "key_bits": 256, "ttl": "24h", "max_ttl": "720h",
        }),
    )
    .await;
    client_role(&app, token, ETCD_MOUNT).await;
    client_role(&app, token, APISERVER_MOUNT).await;

    let etcd_ca = ca_pem(&app, ETCD_MOUNT, &tls, "etcd-ca.crt").await;
    let apiserver_ca = ca_pem(&app, APISERVER_MOUNT, &tls, "kube-apiserver-ca.crt").await;
    assert_ne!(
        std::fs::read(&etcd_ca).unwrap(),
        std::fs::read(&apiserver_ca).unwrap(),
        "the two mounts must have different CAs"
    );

    // --- Member certificates: one IP each on loopback. ---
    // Peers dial each other from 127.0.0.1 (the kernel's source address for
    // all of 127.0.0.0/8), and etcd matches a peer's client certificate SANs
    // against the connection's source address (IP SANs, else reverse/forward
    // DNS of the DNS SANs), so 127.0.0.1 is an IP SAN too: no DNS involved.
    let ips: Vec<Ipv4Addr> = (0..3).map(|i| Ipv4Addr::new(127, 0, 0, 11 + i)).collect();
    let mut pairs = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let name = format!("etcd-{i}");
        let pair = issue(
            &app,
            token,
            ETCD_MOUNT,
            "member",
            json!({
                "common_name": format!("{name}.etcd.cluster.local"),
                "ip_sans": format!("{ip},127.0.0.1"),
                "ttl": "24h",
            }),
            &tls,
            &name,
        )
        .await;
        // Each member's certificate chains to the etcd-member CA, for both
        // roles it plays, and not to the kube-apiserver CA.
        for purpose in ["sslserver", "sslclient"] {
            let v = openssl_verify(&etcd_ca, purpose, &pair.0);
            assert!(v.ok && v.stdout.contains(": OK"), "{name} {purpose}: {v}");
        }
        let v = openssl_verify(&apiserver_ca, "sslserver", &pair.0);
        assert!(
            !v.ok,
            "{name} must not verify against kube-apiserver's CA: {v}"
        );
        pairs.push(pair);
    }
    let client = issue(
        &app,
        token,
        ETCD_MOUNT,
        "client",
        json!({"common_name": CLIENT_CN}),
        &tls,
        "etcd-client",
    )
    .await;
    let v = openssl_verify(&etcd_ca, "sslclient", &client.0);
    assert!(v.ok, "etcd client: {v}");
    let foreign = issue(
        &app,
        token,
        APISERVER_MOUNT,
        "client",
        json!({"common_name": CLIENT_CN}),
        &tls,
        "kube-apiserver-client",
    )
    .await;
    let v = openssl_verify(&apiserver_ca, "sslclient", &foreign.0);
    assert!(v.ok, "kube-apiserver client: {v}");
    let v = openssl_verify(&etcd_ca, "sslclient", &foreign.0);
    assert!(!v.ok, "kube-apiserver client vs etcd CA: {v}");

    // --- Three etcd members. ---
    let ports: Vec<(u16, u16)> = ips
        .iter()
        .map(|ip| (port_on(*ip, 2379), port_on(*ip, 2380)))
        .collect();
    let client_urls: Vec<String> = ips
        .iter()
        .zip(&ports)
        .map(|(ip, (c, _))| format!("https://{ip}:{c}"))
        .collect();
    let peer_urls: Vec<String> = ips
        .iter()
        .zip(&ports)
        .map(|(ip, (_, p))| format!("https://{ip}:{p}"))
        .collect();
    let initial_cluster = peer_urls
        .iter()
        .enumerate()
        .map(|(i, u)| format!("etcd-{i}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    let cluster_token = format!("pki-it-{}", std::process::id());
    let mut cluster = Cluster {
        members: Vec::new(),
    };
    for i in 0..3 {
        let name = format!("etcd-{i}");
        let log = dir.path().join(format!("{name}.log"));
        let logf = std::fs::File::create(&log).unwrap();
        let (cert, key) = &pairs[i];
        let mut cmd = Command::new("etcd");
        scrub_env(&mut cmd)
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(dir.path().join(format!("{name}.etcd")))
            .args(["--listen-client-urls", &client_urls[i]])
            .args(["--advertise-client-urls", &client_urls[i]])
            .args(["--listen-peer-urls", &peer_urls[i]])
            .args(["--initial-advertise-peer-urls", &peer_urls[i]])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &cluster_token])
            .arg("--cert-file")
            .arg(cert)
            .arg("--key-file")
            .arg(key)
            .arg("--trusted-ca-file")
            .arg(&etcd_ca)
            .arg("--client-cert-auth")
            .arg("--peer-cert-file")
            .arg(cert)
            .arg("--peer-key-file")
            .arg(key)
            .arg("--peer-trusted-ca-file")
            .arg(&etcd_ca)
            .arg("--peer-client-cert-auth")
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let child = cmd.spawn().expect("spawn etcd");
        cluster.members.push(Member {
            name,
            client_url: client_urls[i].clone(),
            log,
            child,
        });
    }

    let good = ClientTls {
        cacert: &etcd_ca,
        cert: Some((&client.0, &client.1)),
    };
    let all = client_urls.join(",");

    // --- Wait until every member reports healthy. ---
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        cluster.assert_running();
        let h = etcdctl(
            &client_urls[0],
            &good,
            &["endpoint", "health", "--cluster"],
            2,
            3,
        );
        // etcdctl 3.4 reports health on stderr.
        let said = format!("{}{}", h.stdout, h.stderr);
        if h.ok
            && client_urls
                .iter()
                .all(|u| said.contains(&format!("{u} is healthy")))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cluster not healthy after 30s: {h}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let healthy_after = started.elapsed();
    let members = etcdctl(&all, &good, &["member", "list"], 3, 5);
    assert!(members.ok, "{members}");
    assert_eq!(
        members
            .stdout
            .lines()
            .filter(|l| l.contains("started"))
            .count(),
        3,
        "{members}"
    );

    // --- Write on etcd-0, read on etcd-2 (linearizable read). ---
    let put = etcdctl(
        &client_urls[0],
        &good,
        &["put", "/pki-it/k", "v-from-etcd-0"],
        3,
        5,
    );
    assert!(put.ok && put.stdout.trim() == "OK", "put: {put}");
    let get = etcdctl(
        &client_urls[2],
        &good,
        &["get", "/pki-it/k", "--print-value-only"],
        3,
        5,
    );
    assert!(get.ok, "get: {get}");
    assert_eq!(get.stdout.trim(), "v-from-etcd-0", "{get}");

    // --- Refusals against etcd-1: no client certificate (write and read);
    // a kube-apiserver-mount certificate (same CN, other CA). In parallel:
    // each waits out its dial timeout. ---
    let no_cert = ClientTls {
        cacert: &etcd_ca,
        cert: None,
    };
    let wrong_ca = ClientTls {
        cacert: &etcd_ca,
        cert: Some((&foreign.0, &foreign.1)),
    };
    let attempts: [(&str, &ClientTls, &[&str]); 3] = [
        (
            "no certificate, put",
            &no_cert,
            &["put", "/pki-it/refused-no-cert", "x"],
        ),
        ("no certificate, get", &no_cert, &["get", "/pki-it/k"]),
        (
            "kube-apiserver certificate, put",
            &wrong_ca,
            &["put", "/pki-it/refused-apiserver", "x"],
        ),
    ];
    let url1 = &client_urls[1];
    let refused: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> = attempts
            .iter()
            .map(|(_, tls, args)| s.spawn(move || etcdctl(url1, tls, args, 2, 3)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((what, _, _), out) in attempts.iter().zip(&refused) {
        assert!(!out.ok, "{what} was accepted: {out}");
        assert!(!out.stdout.contains("v-from-etcd-0"), "{what}: {out}");
    }
    // The member refused the handshakes (it is up, and says why).
    cluster.assert_running();
    let log1 = std::fs::read_to_string(&cluster.members[1].log).unwrap();
    for why in [
        "client didn't provide a certificate",
        "failed to verify client certificate: x509: certificate signed by unknown authority",
    ] {
        assert!(
            log1.lines()
                .any(|l| l.contains("rejected connection") && l.contains(why)),
            "etcd-1 logged no rejected connection for {why:?}"
        );
    }
    // Nothing was written; the good client still works through etcd-1.
    let keys = etcdctl(
        &client_urls[1],
        &good,
        &["get", "/pki-it/", "--prefix", "--keys-only"],
        3,
        5,
    );
    assert!(keys.ok, "{keys}");
    let keys: Vec<&str> = keys.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(keys, ["/pki-it/k"], "only the good client's key exists");

    eprintln!(
        "etcd cluster healthy {healthy_after:?} after the test started; done in {:?}",
        started.elapsed()
    );
}
