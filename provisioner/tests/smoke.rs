//! `provisioner smoke-test` against a stand-in Kubernetes API server.
//!
//! No real cluster can run here (no network to image registries), so each
//! test starts an HTTPS server on 127.0.0.1 that requires a client
//! certificate from its own CA (rcgen) and answers exactly the calls the
//! smoke test makes, in Kubernetes' JSON shapes: `/readyz`, a NodeList, pod
//! create/get/log/delete with the pod going Pending → Running → Succeeded
//! across polls and busybox-style nslookup output. The real binary runs with
//! a kubeconfig in the form node-client writes (file paths). The run against
//! a real cluster is documented in docs/provisioner.md, not run here.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// busybox 1.36 `nslookup kubernetes.default.svc.cluster.local`.
const GOOD_LOG: &str = "Server:\t\t10.32.0.10\nAddress:\t10.32.0.10:53\n\n\nName:\tkubernetes.default.svc.cluster.local\nAddress: 10.32.0.1\n\n";

/// The lookup reached the DNS server but got no answer: the server's own
/// 10.32.0.10 must not pass for the Service's 10.32.0.1.
const NXDOMAIN_LOG: &str = "Server:\t\t10.32.0.10\nAddress:\t10.32.0.10:53\n\n** server can't find kubernetes.default.svc.cluster.local: NXDOMAIN\n\n";

/// What the stand-in cluster looks like.
#[derive(Debug, Clone)]
struct Scenario {
    /// (name, role, Ready) per node.
    nodes: Vec<(&'static str, &'static str, bool)>,
    /// The pod's log.
    log: &'static str,
    /// The pod's final phase.
    phase: &'static str,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            nodes: vec![
                ("ip-10-240-16-10", "controller", true),
                ("ip-10-240-17-10", "controller", true),
                ("ip-10-240-18-10", "controller", true),
                ("ip-10-240-24-10", "worker", true),
                ("ip-10-240-25-10", "worker", true),
            ],
            log: GOOD_LOG,
            phase: "Succeeded",
        }
    }
}

/// What the server saw.
#[derive(Debug, Default)]
struct Seen {
    /// "METHOD path" in order.
    requests: Vec<String>,
    /// Pod bodies POSTed.
    created: Vec<Value>,
    /// Pod names DELETEd.
    deleted: Vec<String>,
    /// GETs of the pod so far.
    polls: usize,
}

#[derive(Debug, Clone)]
struct Cluster {
    scenario: Scenario,
    seen: Arc<Mutex<Seen>>,
}

impl Cluster {
    fn note(&self, what: String) {
        self.seen.lock().unwrap().requests.push(what);
    }
}

fn pod_object(body: &Value, phase: &str, node: Option<&str>) -> Value {
    let mut pod = body.clone();
    pod["metadata"]["uid"] = json!("7d5f0c52-0000-4000-8000-000000000001");
    pod["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    if let Some(n) = node {
        pod["spec"]["nodeName"] = json!(n);
    }
    pod["status"] = json!({"phase": phase, "qosClass": "Burstable"});
    pod
}

async fn readyz(State(c): State<Cluster>) -> &'static str {
    c.note("GET /readyz".into());
    "ok"
}

async fn nodes(State(c): State<Cluster>) -> axum::Json<Value> {
    c.note("GET /api/v1/nodes".into());
    let items: Vec<Value> = c
        .scenario
        .nodes
        .iter()
        .map(|(name, role, ready)| {
            json!({
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name,
                    "kube-aws-pki.io/role": role,
                }},
                "status": {"conditions": [
                    {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                    {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
                    {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
                    if *ready {
                        json!({"type": "Ready", "status": "True", "reason": "KubeletReady"})
                    } else {
                        json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                               "message": "Kubelet stopped posting node status."})
                    },
                ]},
            })
        })
        .collect();
    axum::Json(json!({
        "kind": "NodeList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "1234"},
        "items": items,
    }))
}

async fn create_pod(
    State(c): State<Cluster>,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    c.note("POST /api/v1/namespaces/default/pods".into());
    c.seen.lock().unwrap().created.push(body.clone());
    (
        StatusCode::CREATED,
        axum::Json(pod_object(&body, "Pending", None)),
    )
}

fn not_found(name: &str) -> (StatusCode, axum::Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("pods \"{name}\" not found"), "reason": "NotFound", "code": 404,
        })),
    )
}

fn created(c: &Cluster, name: &str) -> Option<Value> {
    let seen = c.seen.lock().unwrap();
    seen.created
        .iter()
        .find(|p| p["metadata"]["name"] == name)
        .filter(|_| !seen.deleted.iter().any(|d| d == name))
        .cloned()
}

async fn get_pod(
    State(c): State<Cluster>,
    Path(name): Path<String>,
) -> (StatusCode, axum::Json<Value>) {
    c.note(format!("GET /api/v1/namespaces/default/pods/{name}"));
    let Some(body) = created(&c, &name) else {
        return not_found(&name);
    };
    let polls = {
        let mut seen = c.seen.lock().unwrap();
        seen.polls += 1;
        seen.polls
    };
    let pod = match polls {
        1 => pod_object(&body, "Pending", None),
        2 => pod_object(&body, "Running", Some("ip-10-240-24-10")),
        _ => pod_object(&body, c.scenario.phase, Some("ip-10-240-24-10")),
    };
    (StatusCode::OK, axum::Json(pod))
}

async fn delete_pod(
    State(c): State<Cluster>,
    Path(name): Path<String>,
) -> (StatusCode, axum::Json<Value>) {
    c.note(format!("DELETE /api/v1/namespaces/default/pods/{name}"));
    let Some(body) = created(&c, &name) else {
        return not_found(&name);
    };
    c.seen.lock().unwrap().deleted.push(name);
    (
        StatusCode::OK,
        axum::Json(pod_object(&body, c.scenario.phase, Some("ip-10-240-24-10"))),
    )
}

async fn pod_log(
    State(c): State<Cluster>,
    Path(name): Path<String>,
) -> Result<&'static str, (StatusCode, axum::Json<Value>)> {
    c.note(format!("GET /api/v1/namespaces/default/pods/{name}/log"));
    created(&c, &name).ok_or_else(|| not_found(&name))?;
    Ok(c.scenario.log)
}

/// A CA and a certificate it signed (for 127.0.0.1 or a client name).
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        Pki {
            ca: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// (certificate PEM, key PEM).
    fn leaf(&self, cn: &str, server: bool) -> (String, String) {
        let sans = if server {
            vec!["127.0.0.1".to_string()]
        } else {
            vec![]
        };
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if !server {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, "kubeadm:cluster-admins");
        }
        p.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Start the stand-in API server: TLS with a certificate from `pki` for
/// 127.0.0.1, client certificates from `pki` required. Returns its URL.
async fn serve(pki: &Pki, cluster: Cluster) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert, key) = pki.leaf("kube-apiserver", true);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![
                CertificateDer::from_pem_slice(cert.as_bytes()).unwrap(),
                pki.ca.der().clone(),
            ],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = Router::new()
        .route("/readyz", get(readyz))
        .route("/api/v1/nodes", get(nodes))
        .route(
            "/api/v1/namespaces/default/pods",
            axum::routing::post(create_pod),
        )
        .route(
            "/api/v1/namespaces/default/pods/{name}",
            get(get_pod).delete(delete_pod),
        )
        .route("/api/v1/namespaces/default/pods/{name}/log", get(pod_log))
        .with_state(cluster);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let svc = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                // A client without an acceptable certificate ends here.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    format!("https://{addr}")
}

/// Write the admin credentials and the kubeconfig node-client writes for the
/// operator role (`node_client::fetch::kubeconfig`: file paths) into `dir`.
fn write_kubeconfig(dir: &std::path::Path, server: &str, ca_pem: &str, cert: &str, key: &str) {
    let node = node_client::profile::Node {
        cluster: "demo".into(),
        name: "alice".into(),
        ips: vec![],
        pki_dir: dir.display().to_string(),
    };
    let reqs = node_client::profile::Profile::embedded()
        .unwrap()
        .requests("operator", &node)
        .unwrap();
    let req = reqs.iter().find(|r| r.kubeconfig.is_some()).unwrap();
    std::fs::write(dir.join(req.ca_file.as_deref().unwrap_or("ca.crt")), ca_pem).unwrap();
    std::fs::write(dir.join(req.cert_file()), cert).unwrap();
    std::fs::write(dir.join(req.key_file()), key).unwrap();
    std::fs::write(
        dir.join("admin.conf"),
        node_client::fetch::kubeconfig(&node, req, server),
    )
    .unwrap();
}

/// Default spec: 3 controllers and 2 workers desired, service CIDR
/// 10.32.0.0/24, cluster domain cluster.local.
const SPEC: &str = "name = \"demo\"\n";

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    seen: Seen,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Client {
    /// Credentials from the server's CA.
    Good,
    /// A client certificate from another CA.
    ForeignCert,
    /// The kubeconfig trusts another CA than the server's.
    ForeignCa,
    /// No kubeconfig at all (the default path under an empty HOME).
    Missing,
}

async fn run(scenario: Scenario, client: Client) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let pki = Pki::new("cluster");
    let other = Pki::new("other");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = serve(
        &pki,
        Cluster {
            scenario,
            seen: seen.clone(),
        },
    )
    .await;
    let spec = dir.path().join("cluster.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let kube = dir.path().join("kube");
    std::fs::create_dir(&kube).unwrap();
    let (cert, key) = match client {
        Client::ForeignCert => other.leaf("kubernetes-admin", false),
        _ => pki.leaf("kubernetes-admin", false),
    };
    let ca = match client {
        Client::ForeignCa => other.ca.pem(),
        _ => pki.ca.pem(),
    };
    write_kubeconfig(&kube, &server, &ca, &cert, &key);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"));
    cmd.arg("--spec").arg(&spec).arg("smoke-test");
    if client != Client::Missing {
        cmd.arg("--kubeconfig").arg(kube.join("admin.conf"));
    }
    let out = cmd
        .args(["--timeout", "20"])
        .env("HOME", &home)
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // Shown when a test fails (or with --nocapture).
    println!(
        "--- {client:?} stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        seen,
    }
}

/// Each marker appears in `text`, in this order.
fn assert_in_order(text: &str, markers: &[&str]) {
    let mut at = 0;
    for m in markers {
        match text[at..].find(m) {
            Some(i) => at += i + m.len(),
            None => panic!("{m:?} missing (or out of order) in:\n{text}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_cluster_passes_every_step_and_the_pod_is_deleted() {
    let r = run(Scenario::default(), Client::Good).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_in_order(
        &r.stdout,
        &[
            "[1/5] API health: GET /readyz ... ok",
            "[2/5] Nodes: GET /api/v1/nodes ... 5/5 Ready, 5 expected",
            "ip-10-240-16-10",
            "controller",
            "ip-10-240-25-10",
            "worker",
            "[3/5] Test pod: default/kube-aws-pki-smoke-",
            "nslookup kubernetes.default.svc.cluster.local",
            "Succeeded on node ip-10-240-24-10",
            "[4/5] DNS: kubernetes.default.svc.cluster.local resolves to 10.32.0.1 ... ok",
            "[5/5] Cleanup: DELETE pod default/kube-aws-pki-smoke-",
            "deleted",
            "smoke test passed",
        ],
    );
    let seen = &r.seen;
    assert_eq!(seen.created.len(), 1);
    let pod = &seen.created[0];
    let name = pod["metadata"]["name"].as_str().unwrap();
    let suffix = name.strip_prefix("kube-aws-pki-smoke-").unwrap();
    assert!(
        suffix.len() == 8 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    assert_eq!(seen.deleted, [name]);
    assert!(seen.polls >= 3, "phase seen only {} times", seen.polls);
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["runAsUser"], 65534);
    let c = &spec["containers"][0];
    assert_eq!(
        c["image"],
        "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"
    );
    assert_eq!(
        c["command"],
        json!([
            "nslookup",
            "-type=a",
            "kubernetes.default.svc.cluster.local"
        ])
    );
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    // The log is read after the pod finished, the delete comes last.
    let log = seen
        .requests
        .iter()
        .position(|q| q.ends_with("/log"))
        .unwrap();
    assert!(
        seen.requests[log + 1].starts_with("DELETE "),
        "{:?}",
        seen.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_not_ready_fails_step_2_naming_it_and_creates_no_pod() {
    let mut s = Scenario::default();
    s.nodes[4].2 = false;
    let r = run(s, Client::Good).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("[2/5] Nodes: GET /api/v1/nodes ... FAILED"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("step 2/5 (nodes) failed: not Ready: ip-10-240-25-10"),
        "{}",
        r.stderr
    );
    assert!(r.seen.created.is_empty());
    assert!(!r.stdout.contains("[3/5]"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("[5/5] Cleanup ... nothing to delete (no pod was created)"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_nodes_than_the_spec_wants_fail_step_2() {
    let mut s = Scenario::default();
    s.nodes.truncate(4);
    let r = run(s, Client::Good).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("4 nodes registered, the spec wants 5 (controllers 3 + workers 2)"),
        "{}",
        r.stderr
    );
    assert!(r.seen.created.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_without_the_service_ip_fails_the_dns_step_and_the_pod_is_still_deleted() {
    let s = Scenario {
        log: NXDOMAIN_LOG,
        phase: "Failed",
        ..Scenario::default()
    };
    let r = run(s, Client::Good).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert_in_order(
        &r.stdout,
        &[
            "[3/5] Test pod",
            "Failed on node ip-10-240-24-10",
            "[4/5] DNS: kubernetes.default.svc.cluster.local resolves to 10.32.0.1 ... FAILED",
            "[5/5] Cleanup: DELETE pod",
            "deleted",
        ],
    );
    assert!(
        r.stderr.contains("step 4/5 (DNS) failed")
            && r.stderr
                .contains("did not resolve kubernetes.default.svc.cluster.local to 10.32.0.1")
            && r.stderr.contains("NXDOMAIN"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("smoke test passed"));
    assert_eq!(r.seen.created.len(), 1);
    assert_eq!(r.seen.deleted.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused_with_a_tls_error() {
    let r = run(Scenario::default(), Client::ForeignCert).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("step 1/5 (API health) failed"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("TLS with the API server failed"),
        "{}",
        r.stderr
    );
    assert!(r.seen.requests.is_empty(), "{:?}", r.seen.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_server_refuses_a_client_without_a_certificate() {
    let pki = Pki::new("cluster");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = serve(
        &pki,
        Cluster {
            scenario: Scenario::default(),
            seen: seen.clone(),
        },
    )
    .await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let e = http
        .get(format!("{server}/readyz"))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("CertificateRequired"), "{e:?}");
    assert!(seen.lock().unwrap().requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused_with_a_tls_error() {
    let r = run(Scenario::default(), Client::ForeignCa).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("TLS with the API server failed"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("UnknownIssuer"), "{}", r.stderr);
    assert!(r.seen.requests.is_empty(), "{:?}", r.seen.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_kubeconfig_is_exit_2_naming_the_default_path() {
    let r = run(Scenario::default(), Client::Missing).await;
    assert_eq!(r.code, Some(2), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains(".kube/kube-aws-pki/demo/admin.conf (write it with `provisioner kubeconfig`"),
        "{}",
        r.stderr
    );
    assert!(r.seen.requests.is_empty());
}
