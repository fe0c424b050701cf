//! The real kube-apiserver on the certificates of `provisioner apply --local`
//! (issue #16, first step). The local target does not start the control plane
//! yet, so this test does what it will do: kube-apiserver's command and flags
//! come from the controller's rendered static-pod manifest (the template
//! `/etc/kubernetes/static-pods/kube-apiserver.json` in the controller's
//! Ignition, `@ETCD_SERVERS@` filled in as the node's `static-pod` script
//! does), with paths remapped to controller-0's folder and addresses to
//! loopback, on the local etcd members (client-cert auth on).
//!
//! Proves: /readyz answers 200 over TLS verified with the kubernetes CA read
//! from pki-server; the served certificate carries every name in-cluster
//! clients use; the front-proxy identity applies the rendered RBAC add-on
//! by server-side apply, as the controllers' add-on unit does; then the
//! operator's admin kubeconfig from node-client passes `kubectl auth can-i
//! '*' '*'`. The binaries come from `tests/harness.sh setup` (PKI_K8S_BIN).

#[path = "../support/venv.rs"]
mod venv;

#[path = "../support/k8s.rs"]
mod k8s;

use provisioner::spec::{ClusterSpec, Role};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// controller-0's address in the local target (`provisioner::local::nodes`).
const CONTROLLER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);

fn show(o: &Output) -> String {
    format!(
        "status={:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn provisioner(args: &[&str]) -> Output {
    Command::new(k8s::workspace_bin("provisioner"))
        .args(args)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .unwrap()
}

/// `provisioner destroy --local` on drop (after the test's own processes,
/// which are declared later and so dropped first).
struct Destroy(PathBuf);

impl Drop for Destroy {
    fn drop(&mut self) {
        if self.0.exists() {
            let o = provisioner(&["destroy", "--local", self.0.to_str().unwrap()]);
            if !o.status.success() {
                eprintln!("destroy --local failed: {}", show(&o));
            }
        }
    }
}

/// `port` on `ip` if free, else any free port there.
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

/// A file of the controller's rendered Ignition, as text.
fn ignition_file(files: &[provisioner::ignition::File], path: &str) -> String {
    let f = files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("the controller's Ignition has no {path}"));
    k8s::data_url_text(&f.contents.source)
}

/// kube-apiserver's command line from the rendered manifest, for controller-0
/// on this machine: credential paths into `pki`, the audit policy and log
/// into `work`, the etcd servers filled in, the listener on `CONTROLLER_IP:port`.
fn apiserver_command(
    manifest: &Value,
    bin: &Path,
    pki: &Path,
    work: &Path,
    etcd_servers: &str,
    port: u16,
) -> Command {
    use provisioner::node::control_plane::{AUDIT_DIR, AUDIT_POLICY, ETCD_SERVERS_MARK};
    let c = &manifest["spec"]["containers"][0];
    let command: Vec<&str> = c["command"]
        .as_array()
        .expect("the manifest's container has a command")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(command, ["kube-apiserver"], "{c}");
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("the manifest's container has args")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let pki_dir = provisioner::certs::DIR;
    let mut cmd = Command::new(bin.join("kube-apiserver"));
    for a in &args {
        let (flag, value) = a
            .split_once('=')
            .unwrap_or_else(|| panic!("manifest arg without a value: {a}"));
        let value = match flag {
            "--secure-port" => {
                assert_eq!(value, "6443", "{a}");
                port.to_string()
            }
            "--bind-address" => {
                assert_eq!(value, "0.0.0.0", "{a}");
                CONTROLLER_IP.to_string()
            }
            "--etcd-servers" => {
                assert_eq!(value, ETCD_SERVERS_MARK, "{a}");
                etcd_servers.to_string()
            }
            "--audit-policy-file" => {
                assert_eq!(value, AUDIT_POLICY, "{a}");
                work.join("audit-policy.json").display().to_string()
            }
            "--audit-log-path" => {
                let rest = value
                    .strip_prefix(AUDIT_DIR)
                    .unwrap_or_else(|| panic!("{a} is not under {AUDIT_DIR}"));
                format!("{}{rest}", work.join("audit").display())
            }
            _ => match value.strip_prefix(pki_dir) {
                Some(rest) => format!("{}{rest}", pki.display()),
                None => {
                    assert!(
                        !value.starts_with('/'),
                        "{a}: a path this test does not remap"
                    );
                    value.to_string()
                }
            },
        };
        cmd.arg(format!("{flag}={value}"));
    }
    // The one flag added: with a loopback bind address the apiserver would
    // look for a default route to advertise; this machine need not have one.
    cmd.arg(format!("--advertise-address={CONTROLLER_IP}"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_ascii_uppercase();
        if k.ends_with("_PROXY") || k == "KUBECONFIG" {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// `kubectl --kubeconfig conf args...`.
fn kubectl(bin: &Path, conf: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin.join("kubectl"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_ascii_uppercase();
        if k.ends_with("_PROXY") {
            cmd.env_remove(&k);
        }
    }
    cmd.arg("--kubeconfig")
        .arg(conf)
        .arg("--request-timeout=10s")
        .args(args)
        .output()
        .unwrap()
}

/// A copy of a node-client kubeconfig (JSON) pointed at `server`, still
/// verifying the certificate for the name it named (`tls-server-name`).
fn remap_kubeconfig(src: &Path, dst: &Path, server: &str) -> String {
    let mut conf: Value = serde_json::from_slice(&std::fs::read(src).unwrap()).unwrap();
    let cluster = &mut conf["clusters"][0]["cluster"];
    let named = cluster["server"].as_str().unwrap().to_string();
    let host = named
        .strip_prefix("https://")
        .and_then(|h| h.split(':').next())
        .unwrap_or_else(|| panic!("{}: server {named}", src.display()))
        .to_string();
    cluster["server"] = Value::from(server);
    cluster["tls-server-name"] = Value::from(host.clone());
    std::fs::write(dst, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_runs_on_the_local_targets_certificates() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provisioner_bin = k8s::workspace_bin("provisioner");
    for b in ["pki-server", "node-client"] {
        k8s::workspace_bin(b);
    }
    let Some(bin) = k8s::tools() else { return };
    // etcd (Debian's etcd-server) is what the local target runs the etcd
    // members with; without it apply --local starts none.
    for tool in ["etcd", "etcdctl"] {
        let found = Command::new(tool)
            .arg(if tool == "etcd" {
                "--version"
            } else {
                "version"
            })
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                !k8s::required(),
                "{tool} is missing: apt-get install etcd-server etcd-client (CI=true: tests never skip)"
            );
            eprintln!("SKIPPED: {tool} not found; apt-get install etcd-server etcd-client");
            return;
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let work = tmp.path().join("k8s");
    std::fs::create_dir_all(work.join("audit")).unwrap();
    let _destroy = Destroy(dir.clone());
    // Declared after `_destroy`: dropped (killed) first.
    let mut procs = k8s::Procs::default();

    let o = Command::new(&provisioner_bin)
        .args(["apply", "--local", dir.to_str().unwrap()])
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "apply --local: {}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("smoke test passed"),
        "{}",
        show(&o)
    );

    // --- the controller's rendered manifest and files ---
    let spec = ClusterSpec::parse("name = \"kubecluster\"\n").unwrap();
    let ign = provisioner::ignition::config(&spec, Role::Controller);
    let files = &ign.storage.files;
    let manifest: Value = serde_json::from_str(&ignition_file(
        files,
        &format!(
            "{}/kube-apiserver.json",
            provisioner::node::static_pods::TEMPLATES
        ),
    ))
    .unwrap();
    std::fs::write(
        work.join("audit-policy.json"),
        ignition_file(files, provisioner::node::control_plane::AUDIT_POLICY),
    )
    .unwrap();

    let pki = dir.join("nodes/controller-0/pki");
    // The local target's etcd members (`provisioner::local`: 127.0.0.11-13:2379).
    let etcd_servers = (11..=13)
        .map(|i| format!("https://127.0.0.{i}:2379"))
        .collect::<Vec<_>>()
        .join(",");
    let port = port_on(CONTROLLER_IP, 6443);
    let mut cmd = apiserver_command(&manifest, &bin, &pki, &work, &etcd_servers, port);
    let cmdline = format!("{cmd:?}");
    procs.spawn("kube-apiserver", &mut cmd, &work.join("kube-apiserver.log"));

    // --- the kubernetes CA, from pki-server (not from node-client's files) ---
    let addr = std::fs::read_to_string(dir.join("pki/addr")).unwrap();
    let pki_ca = std::fs::read(dir.join("pki/tls/ca.pem")).unwrap();
    let vault = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pki_ca).unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let r = vault
        .get(format!(
            "{}/v1/kubecluster/pki/kube-apiserver/ca/pem",
            addr.trim()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let k8s_ca = r.bytes().await.unwrap().to_vec();
    assert!(
        String::from_utf8_lossy(&k8s_ca).contains("BEGIN CERTIFICATE"),
        "{}",
        String::from_utf8_lossy(&k8s_ca)
    );

    // --- /readyz over TLS verified with that CA, by every in-cluster name ---
    let api_dns = provisioner::ignition::api_dns(&spec);
    let svc_dns = format!("kubernetes.default.svc.{}", spec.cluster_domain);
    let listen = SocketAddr::from((CONTROLLER_IP, port));
    let client = |name: &str| {
        reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&k8s_ca).unwrap())
            .resolve(name, listen)
            .tls_info(true)
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let api = client(&api_dns);
    let deadline = Instant::now() + Duration::from_secs(120);
    let served = loop {
        procs.assert_running();
        let r = api
            .get(format!("https://{api_dns}:{port}/readyz"))
            .send()
            .await;
        let why = match r {
            Ok(r) if r.status() == 200 => {
                let der = r
                    .extensions()
                    .get::<reqwest::tls::TlsInfo>()
                    .and_then(|t| t.peer_certificate())
                    .expect("the TLS peer certificate")
                    .to_vec();
                assert_eq!(r.text().await.unwrap(), "ok");
                break der;
            }
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => format!("{e:?}"),
        };
        assert!(
            Instant::now() < deadline,
            "kube-apiserver not ready after 120 s: {why}\ncommand: {cmdline}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let info = node_client::inspect::cert_info_der(&served).unwrap();
    // The service IP: the first address of the service CIDR.
    let svc_ip = IpAddr::V4(Ipv4Addr::from(u32::from(spec.service_cidr.network()) + 1));
    for name in [&svc_dns, &api_dns] {
        assert!(info.dns_names.contains(name), "{name}: {info:?}");
    }
    assert!(info.ip_addresses.contains(&svc_ip), "{svc_ip}: {info:?}");
    assert_eq!(
        served,
        node_client::inspect::pem_blocks(
            &std::fs::read(pki.join("apiserver.crt")).unwrap(),
            "CERTIFICATE"
        )[0],
        "the apiserver serves node-client's apiserver.crt"
    );
    // Its etcd check passes: the members (client-cert auth on) accept the
    // apiserver's etcd client certificate, and hold what it wrote.
    let r = api
        .get(format!("https://{api_dns}:{port}/readyz?verbose"))
        .send()
        .await
        .unwrap();
    let verbose = r.text().await.unwrap();
    assert!(verbose.contains("[+]etcd ok"), "{verbose}");
    let etcdctl = |cert: bool| {
        let mut c = Command::new("etcdctl");
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_ascii_uppercase();
            if k.starts_with("ETCD") || k.ends_with("_PROXY") {
                c.env_remove(&k);
            }
        }
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={etcd_servers}"))
            .arg(format!("--cacert={}", pki.join("etcd-ca.crt").display()))
            .args(["--dial-timeout=3s", "--command-timeout=5s"]);
        if cert {
            c.arg(format!(
                "--cert={}",
                pki.join("apiserver-etcd-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                pki.join("apiserver-etcd-client.key").display()
            ));
        }
        c.args(["get", "/registry/namespaces/kube-system", "--keys-only"])
            .output()
            .unwrap()
    };
    let o = etcdctl(true);
    assert!(
        o.status.success()
            && String::from_utf8_lossy(&o.stdout).contains("/registry/namespaces/kube-system"),
        "etcdctl with apiserver-etcd-client: {}",
        show(&o)
    );
    let o = etcdctl(false);
    assert!(
        !o.status.success(),
        "etcd answered a client without a certificate: {}",
        show(&o)
    );
    // The same verification succeeds under the in-cluster service name.
    let r = client(&svc_dns)
        .get(format!("https://{svc_dns}:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // --- the admin kubeconfig, before any binding: authenticated, no rights ---
    let admin = work.join("admin.conf");
    let named = remap_kubeconfig(
        &dir.join("nodes/operator-0/pki/admin.conf"),
        &admin,
        &format!("https://{listen}"),
    );
    assert_eq!(named, api_dns, "admin.conf names the API's DNS name");
    let o = kubectl(&bin, &admin, &["auth", "whoami", "-o", "json"]);
    assert!(o.status.success(), "kubectl auth whoami: {}", show(&o));
    let who: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"], "kubernetes-admin",
        "{who}"
    );
    let o = kubectl(&bin, &admin, &["auth", "can-i", "*", "*"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "no",
        "before the RBAC add-on: {}",
        show(&o)
    );

    // --- the RBAC add-on, applied as the controllers' add-on unit does ---
    // (front-proxy client certificate asserting kube-aws-pki:addons in
    // system:masters, server-side apply of each rendered object)
    let fp_pem = [
        std::fs::read(pki.join("front-proxy-client.crt")).unwrap(),
        std::fs::read(pki.join("front-proxy-client.key")).unwrap(),
    ]
    .concat();
    let front_proxy = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&k8s_ca).unwrap())
        .identity(reqwest::Identity::from_pem(&fp_pem).unwrap())
        .resolve(&api_dns, listen)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let index = ignition_file(files, &format!("{}/index", provisioner::node::addons::DIR));
    let mut applied = 0;
    for line in index.lines() {
        let (path, file) = line.split_once(' ').unwrap();
        if !file.contains("-rbac-") {
            continue; // the other add-ons need nodes (issue #16, item 4)
        }
        let body = ignition_file(files, &format!("{}/{file}", provisioner::node::addons::DIR));
        let r = front_proxy
            .patch(format!(
                "https://{api_dns}:{port}{path}?fieldManager=kube-aws-pki&force=true"
            ))
            .header("X-Remote-User", provisioner::node::addons::USER)
            .header("X-Remote-Group", "system:masters")
            .header("Content-Type", "application/apply-patch+yaml")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "apply {file} at {path}: {status} {text}"
        );
        applied += 1;
    }
    assert!(applied >= 1, "no RBAC objects in {index}");

    // --- now the operator is cluster-admin ---
    let o = kubectl(&bin, &admin, &["auth", "can-i", "*", "*"]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "yes",
        "kubectl auth can-i '*' '*' with the admin kubeconfig: {}",
        show(&o)
    );

    procs.assert_running();
    procs.stop();
    drop(procs);
    let o = provisioner(&["destroy", "--local", dir.to_str().unwrap()]);
    assert!(o.status.success(), "destroy --local: {}", show(&o));
    assert!(!dir.exists());
}
