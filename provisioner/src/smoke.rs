//! `provisioner smoke-test`: what can be checked of a built cluster from
//! outside it, with the admin kubeconfig `provisioner kubeconfig` writes.
//!
//! Five steps, each printed as it runs with its result:
//! 1. API health: `GET /readyz` answers 200 `ok`;
//! 2. nodes: at least the spec's controllers + workers (desired) registered,
//!    every one Ready;
//! 3. a test pod (restricted Pod Security level) that runs `nslookup
//!    kubernetes.default.svc.<cluster_domain>` is scheduled and finishes;
//! 4. DNS: the pod succeeded and its log shows the `kubernetes` Service
//!    resolved to the first host address of `service_cidr`;
//! 5. the pod is deleted, whatever happened before.
//!
//! Where no test pod can run (`apply --local`, `smoke-test --local`), the
//! Ready check and steps 3 and 4 are printed as skipped with the reason;
//! the node list must still be readable.
//!
//! HTTPS trusts only the kubeconfig's CA and authenticates with its client
//! certificate; nothing else (tokens, exec plugins, skipping verification)
//! is used.

use crate::spec::{ClusterSpec, Role};
use anyhow::{Context, anyhow, bail};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The test pod's image: Kubernetes' own e2e busybox.
pub const DEFAULT_IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1";

/// How long the test pod may take to finish, by default (seconds).
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// The namespace of the test pod.
const NAMESPACE: &str = "default";

/// The node label that names a node's role (the kubelet's `--node-labels`).
const ROLE_LABEL: &str = "kube-aws-pki.io/role";

/// Steps, for the `[n/5]` prefix.
const STEPS: usize = 5;

/// What `smoke-test` needs.
#[derive(Debug, Clone)]
pub struct SmokeOptions {
    /// The admin kubeconfig (JSON, as `provisioner kubeconfig` writes it).
    pub kubeconfig: PathBuf,
    /// How long the test pod may take from creation to a final phase.
    pub timeout: Duration,
    /// The test pod's image (must have busybox's `nslookup`).
    pub image: String,
    /// Why no test pod can run (the local target: no kubelet, or no pod
    /// network): the Ready check, the test pod and DNS are skipped with this
    /// reason; the rest runs.
    pub no_pods: Option<String>,
}

/// Why the smoke test did not pass; `main` turns it into the exit code.
#[derive(Debug, thiserror::Error)]
pub enum SmokeError {
    /// It could not start: no or unusable kubeconfig (exit 2).
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// A check failed (exit 1).
    #[error("step {step}/{STEPS} ({name}) failed: {reason:#}")]
    Check {
        /// The step number.
        step: usize,
        /// The step's title.
        name: &'static str,
        /// What went wrong.
        reason: anyhow::Error,
    },
}

/// The default kubeconfig: `admin.conf` in `provisioner kubeconfig`'s
/// default folder, `~/.kube/kube-aws-pki/<cluster>/`.
pub fn default_kubeconfig(cluster: &str) -> anyhow::Result<PathBuf> {
    Ok(crate::kubeconfig::default_out(cluster)?.join("admin.conf"))
}

/// The API server and credentials the current context of a kubeconfig names.
#[derive(Clone)]
pub struct ApiTarget {
    /// `https://host:port`, without a trailing slash.
    pub server: String,
    /// The CA certificate(s) to trust, PEM.
    pub ca_pem: Vec<u8>,
    /// Client certificate chain and key, PEM.
    pub identity_pem: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ApiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTarget")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KubeConfig {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    current_context: String,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: ClusterEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry {
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    user: UserEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct UserEntry {
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: ContextEntry,
}

#[derive(Deserialize)]
struct ContextEntry {
    cluster: String,
    user: String,
}

/// One credential of a kubeconfig: inline `<field>-data` (base64) or a file
/// path, relative paths taken from the kubeconfig's folder (as kubectl does).
fn material(
    dir: &Path,
    what: &str,
    path: Option<&Path>,
    data: Option<&str>,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    match (data, path) {
        (Some(d), _) => base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map(Zeroizing::new)
            .map_err(|e| anyhow!("{what}-data is not base64: {e}")),
        (None, Some(p)) => {
            let p = dir.join(p);
            std::fs::read(&p)
                .map(Zeroizing::new)
                .with_context(|| format!("cannot read {what} {}", p.display()))
        }
        (None, None) => bail!("no {what} or {what}-data"),
    }
}

/// Read a kubeconfig (JSON) and resolve its current context into the server,
/// the CA to trust and the client identity.
pub fn load_kubeconfig(path: &Path) -> anyhow::Result<ApiTarget> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the kubeconfig {} (write it with `provisioner kubeconfig`, or pass --kubeconfig)",
            path.display()
        )
    })?;
    if !text.trim_start().starts_with('{') {
        bail!(
            "{} is not a JSON kubeconfig; smoke-test reads the JSON form that `provisioner kubeconfig` and node-client write (YAML is not read; `kubectl config view --raw -o json` converts one)",
            path.display()
        );
    }
    let kc: KubeConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a kubeconfig", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == kc.current_context)
        .ok_or_else(|| {
            anyhow!(
                "{}: current-context {:?} names no context",
                path.display(),
                kc.current_context
            )
        })?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.context.cluster)
        .map(|c| &c.cluster)
        .ok_or_else(|| {
            anyhow!(
                "{}: context {:?} names cluster {:?}, which is not there",
                path.display(),
                ctx.name,
                ctx.context.cluster
            )
        })?;
    let user = kc
        .users
        .iter()
        .find(|u| u.name == ctx.context.user)
        .map(|u| &u.user)
        .ok_or_else(|| {
            anyhow!(
                "{}: context {:?} names user {:?}, which is not there",
                path.display(),
                ctx.name,
                ctx.context.user
            )
        })?;
    if cluster.insecure_skip_tls_verify {
        bail!(
            "{}: insecure-skip-tls-verify is set; smoke-test trusts only the kubeconfig's CA",
            path.display()
        );
    }
    if cluster.tls_server_name.is_some() {
        bail!(
            "{}: tls-server-name is not supported; point server at a name the API certificate carries",
            path.display()
        );
    }
    if !cluster.server.starts_with("https://") {
        bail!(
            "{}: server {:?} is not an https:// address",
            path.display(),
            cluster.server
        );
    }
    let ca = material(
        dir,
        "certificate-authority",
        cluster.certificate_authority.as_deref(),
        cluster.certificate_authority_data.as_deref(),
    )
    .with_context(|| format!("{}: cluster {:?}", path.display(), ctx.context.cluster))?;
    let who = || format!("{}: user {:?}", path.display(), ctx.context.user);
    let cert = material(
        dir,
        "client-certificate",
        user.client_certificate.as_deref(),
        user.client_certificate_data.as_deref(),
    )
    .with_context(|| {
        format!(
            "{} (smoke-test authenticates with a client certificate only)",
            who()
        )
    })?;
    let key = material(
        dir,
        "client-key",
        user.client_key.as_deref(),
        user.client_key_data.as_deref(),
    )
    .with_context(who)?;
    let mut identity = Zeroizing::new(Vec::with_capacity(cert.len() + key.len() + 1));
    identity.extend_from_slice(&cert);
    identity.push(b'\n');
    identity.extend_from_slice(&key);
    Ok(ApiTarget {
        server: cluster.server.trim_end_matches('/').to_string(),
        ca_pem: ca.to_vec(),
        identity_pem: identity,
    })
}

/// Whether nslookup's output answers `name` with `ip`: a line after the one
/// naming `name` carries `ip` as a whole word, so the DNS server's own
/// address (`Server: 10.32.0.10`) never counts for `10.32.0.1`.
pub fn lookup_answered(log: &str, name: &str, ip: Ipv4Addr) -> bool {
    let words = |l: &str| {
        l.split(|c: char| c.is_whitespace() || c == ',')
            .map(|w| w.trim_end_matches('.'))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let mut named = false;
    for line in log.lines() {
        let w = words(line);
        if w.iter().any(|w| w == name) {
            named = true;
        }
        if named && w.iter().any(|w| w.parse::<Ipv4Addr>().ok() == Some(ip)) {
            return true;
        }
    }
    false
}

/// The test pod: passes the restricted Pod Security level, runs once.
pub fn pod_manifest(name: &str, image: &str, lookup: &str, deadline: Duration) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": "kube-aws-pki-smoke",
                "app.kubernetes.io/managed-by": "provisioner",
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "activeDeadlineSeconds": deadline.as_secs().max(1),
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65534,
                "runAsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "nslookup",
                "image": image,
                // A records only: an unanswered AAAA query must not fail the step.
                "command": ["nslookup", "-type=a", lookup],
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"memory": "32Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                    "runAsNonRoot": true,
                    "runAsUser": 65534,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }],
        },
    })
}

/// One node as step 2 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// `metadata.name`.
    pub name: String,
    /// The `kube-aws-pki.io/role` label, `-` when missing.
    pub role: String,
    /// The Ready condition is `True`.
    pub ready: bool,
}

/// The nodes of a NodeList.
pub fn nodes(list: &Value) -> Vec<NodeState> {
    list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|n| NodeState {
            name: n["metadata"]["name"].as_str().unwrap_or("?").to_string(),
            role: n["metadata"]["labels"][ROLE_LABEL]
                .as_str()
                .unwrap_or("-")
                .to_string(),
            ready: n["status"]["conditions"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        })
        .collect()
}

/// An HTTPS client for one API server.
struct Api {
    http: reqwest::Client,
    target: std::sync::Arc<ApiTarget>,
}

/// The TLS error of one handshake and request of our own, if TLS is what
/// fails. With TLS 1.3 a server refuses a client certificate only after the
/// client has finished its handshake, and reqwest may then report the closed
/// connection ("connection was not ready") rather than the server's alert.
/// Same trust as the client: only the kubeconfig's CA, its client identity.
fn tls_diagnosis(t: &ApiTarget) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::Read;
    let url = reqwest::Url::parse(&t.server).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_or_known_default()?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&t.ca_pem) {
        roots.add(c.ok()?).ok()?;
    }
    let certs = CertificateDer::pem_slice_iter(&t.identity_pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_slice(&t.identity_pem).ok()?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .ok()?;
    let name = ServerName::try_from(host.to_string()).ok()?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()?
        .next()?;
    let mut sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    sock.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).ok()?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let request = format!(
        "GET /readyz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        url.authority()
    );
    let mut first = [0u8; 1];
    let err = match tls.write_all(request.as_bytes()) {
        Err(e) => e,
        Ok(()) => tls.read(&mut first).err()?,
    };
    err.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .map(ToString::to_string)
}

/// `message` of a Kubernetes Status answer, else the start of the body.
fn refusal(status: reqwest::StatusCode, body: &str) -> anyhow::Error {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().chars().take(500).collect());
    anyhow!("HTTP {status}: {message}")
}

impl Api {
    fn new(t: &ApiTarget) -> anyhow::Result<Api> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem_bundle(&t.ca_pem)
            .context("the kubeconfig's certificate authority is not PEM")?;
        if ca.is_empty() {
            bail!("the kubeconfig's certificate authority holds no certificate");
        }
        let id = reqwest::Identity::from_pem(&t.identity_pem)
            .context("the kubeconfig's client certificate and key are not usable PEM")?;
        let http = reqwest::Client::builder()
            .tls_certs_only(ca)
            .identity(id)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!(
                "provisioner-smoke-test/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .context("cannot build the HTTPS client")?;
        Ok(Api {
            http,
            target: std::sync::Arc::new(t.clone()),
        })
    }

    /// Send and read the body as text; transport errors name TLS when it is
    /// the cause.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, String)> {
        let url = format!("{}{path}", self.target.server);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                const TLS: &str = "TLS with the API server failed (the server must present a certificate from the kubeconfig's CA, and accept its client certificate)";
                let timeout = e.is_timeout();
                let e = anyhow::Error::new(e);
                let chain = format!("{e:#}").to_ascii_lowercase();
                if ["certificate", "alert", "handshake", "tls"]
                    .iter()
                    .any(|w| chain.contains(w))
                {
                    return Err(e.context(format!("{TLS}: {method} {url}")));
                }
                if !timeout {
                    let t = self.target.clone();
                    if let Ok(Some(cause)) =
                        tokio::task::spawn_blocking(move || tls_diagnosis(&t)).await
                    {
                        return Err(anyhow!("{cause}").context(format!("{TLS}: {method} {url}")));
                    }
                }
                return Err(e.context(format!("cannot reach the API server: {method} {url}")));
            }
        };
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        Ok((status, text))
    }

    /// A 2xx JSON answer, else the refusal.
    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, text) = self.send(method, path, body).await?;
        if !status.is_success() {
            return Err(refusal(status, &text));
        }
        serde_json::from_str(&text).context("the API server's answer is not JSON")
    }
}

/// Prints `[n/5] title ... ` and then the step's outcome.
struct Steps {
    n: usize,
}

impl Steps {
    fn start(&mut self, title: &str) {
        self.n += 1;
        print!("[{}/{STEPS}] {title} ... ", self.n);
        let _ = std::io::stdout().flush();
    }

    /// Print the outcome; wrap a failure with the step.
    fn finish<T>(
        &self,
        name: &'static str,
        r: anyhow::Result<(T, String)>,
    ) -> Result<T, SmokeError> {
        match r {
            Ok((v, line)) => {
                println!("{line}");
                Ok(v)
            }
            Err(reason) => {
                println!("FAILED");
                Err(SmokeError::Check {
                    step: self.n,
                    name,
                    reason,
                })
            }
        }
    }
}

/// Eight random hex digits for the pod name.
fn suffix() -> anyhow::Result<String> {
    let mut b = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| anyhow!("no randomness for the pod name"))?;
    Ok(hex::encode(b))
}

/// Run the five steps; prints each as it runs.
pub async fn run(spec: &ClusterSpec, o: &SmokeOptions) -> Result<(), SmokeError> {
    let target = load_kubeconfig(&o.kubeconfig).map_err(SmokeError::Config)?;
    let api = Api::new(&target)
        .with_context(|| o.kubeconfig.display().to_string())
        .map_err(SmokeError::Config)?;
    let name = format!(
        "kube-aws-pki-smoke-{}",
        suffix().map_err(SmokeError::Config)?
    );
    println!(
        "smoke test of cluster {} at {} ({})",
        spec.name,
        target.server,
        o.kubeconfig.display()
    );
    let mut steps = Steps { n: 0 };
    let mut created = false;
    let result = checks(spec, o, &api, &name, &mut steps, &mut created).await;
    // 5: always clean up what was created.
    steps.n = STEPS - 1;
    let cleanup = if created {
        steps.start(&format!("Cleanup: DELETE pod {NAMESPACE}/{name}"));
        delete_pod(&api, &name).await
    } else {
        steps.start("Cleanup");
        Ok(((), "nothing to delete (no pod was created)".to_string()))
    };
    let cleanup = steps.finish("cleanup", cleanup);
    result?;
    cleanup?;
    println!("smoke test passed");
    Ok(())
}

async fn delete_pod(api: &Api, name: &str) -> anyhow::Result<((), String)> {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}");
    let (status, text) = api.send(reqwest::Method::DELETE, &path, None).await?;
    if status.is_success() {
        Ok(((), "deleted".into()))
    } else if status == reqwest::StatusCode::NOT_FOUND {
        Ok(((), "not found (already gone)".into()))
    } else {
        Err(refusal(status, &text).context(format!(
            "delete it with: kubectl -n {NAMESPACE} delete pod {name}"
        )))
    }
}

/// Steps 1 to 4; `created` tells the cleanup whether a pod may exist.
async fn checks(
    spec: &ClusterSpec,
    o: &SmokeOptions,
    api: &Api,
    name: &str,
    steps: &mut Steps,
    created: &mut bool,
) -> Result<(), SmokeError> {
    use reqwest::Method;

    // 1: the API server is ready.
    steps.start("API health: GET /readyz");
    let r = async {
        let (status, text) = api.send(Method::GET, "/readyz", None).await?;
        if status != reqwest::StatusCode::OK || text.trim() != "ok" {
            bail!(
                "HTTP {status}: {}",
                text.trim().chars().take(500).collect::<String>()
            );
        }
        Ok(((), "ok".to_string()))
    }
    .await;
    steps.finish("API health", r)?;

    // 2: enough nodes, all Ready.
    let expected = [Role::Controller, Role::Worker]
        .iter()
        .map(|r| usize::try_from(spec.role(*r).desired).unwrap_or(0))
        .sum::<usize>();
    steps.start("Nodes: GET /api/v1/nodes");
    if let Some(why) = &o.no_pods {
        let r = async {
            let list = api.json(Method::GET, "/api/v1/nodes", None).await?;
            Ok((
                (),
                format!(
                    "{} registered; Ready not checked: {why}",
                    nodes(&list).len()
                ),
            ))
        }
        .await;
        steps.finish("nodes", r)?;
        for step in ["Test pod", "DNS"] {
            steps.start(step);
            println!("skipped: {why}");
        }
        return Ok(());
    }
    let r = async {
        let list = api.json(Method::GET, "/api/v1/nodes", None).await?;
        let nodes = nodes(&list);
        let ready = nodes.iter().filter(|n| n.ready).count();
        let mut report = format!("{ready}/{} Ready, {expected} expected", nodes.len());
        for n in &nodes {
            let state = if n.ready { "Ready" } else { "NotReady" };
            report.push_str(&format!("\n      {:<40} {:<12} {state}", n.name, n.role));
        }
        let not_ready: Vec<&str> = nodes
            .iter()
            .filter(|n| !n.ready)
            .map(|n| n.name.as_str())
            .collect();
        if !not_ready.is_empty() {
            bail!("not Ready: {}; nodes: {report}", not_ready.join(", "));
        }
        if nodes.len() < expected {
            bail!(
                "{} nodes registered, the spec wants {expected} (controllers {} + workers {}); nodes: {report}",
                nodes.len(),
                spec.role(Role::Controller).desired,
                spec.role(Role::Worker).desired
            );
        }
        Ok(((), report))
    }
    .await;
    steps.finish("nodes", r)?;

    // 3: a pod is scheduled and runs to the end.
    let lookup = format!("kubernetes.default.svc.{}", spec.cluster_domain);
    steps.start(&format!(
        "Test pod: {NAMESPACE}/{name} ({}, nslookup {lookup})",
        o.image
    ));
    let r = async {
        let manifest = pod_manifest(name, &o.image, &lookup, o.timeout);
        let sent = api
            .send(
                Method::POST,
                &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
                Some(&manifest),
            )
            .await;
        // Without an answer the pod may exist: clean up either way.
        *created = !matches!(&sent, Ok((status, _)) if !status.is_success());
        let (status, text) = sent.context("creating the pod")?;
        if !status.is_success() {
            return Err(refusal(status, &text).context("creating the pod"));
        }
        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}");
        let start = Instant::now();
        let mut wait = Duration::from_millis(250);
        loop {
            let pod = api.json(Method::GET, &path, None).await?;
            let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
            let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
            if phase == "Succeeded" || phase == "Failed" {
                return Ok((phase.to_string(), format!("{phase} on node {node}")));
            }
            if start.elapsed() >= o.timeout {
                bail!(
                    "still {phase} after {}s{}{}",
                    o.timeout.as_secs(),
                    if node.is_empty() {
                        " (not scheduled)".to_string()
                    } else {
                        format!(" on node {node}")
                    },
                    why_waiting(&pod)
                );
            }
            let sleep = wait.min(o.timeout.saturating_sub(start.elapsed()));
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            }
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
    .await;
    let phase = steps.finish("test pod", r)?;

    // 4: the pod resolved the kubernetes Service.
    let ip = spec.kubernetes_service_ip();
    steps.start(&format!("DNS: {lookup} resolves to {ip}"));
    let r = async {
        let (status, log) = api
            .send(
                Method::GET,
                &format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}/log"),
                None,
            )
            .await?;
        if !status.is_success() {
            return Err(refusal(status, &log).context("reading the pod's log"));
        }
        let shown = || {
            log.lines()
                .map(|l| format!("\n        | {l}"))
                .collect::<String>()
        };
        if !lookup_answered(&log, &lookup, ip) {
            bail!(
                "the pod ({phase}) did not resolve {lookup} to {ip}; its log:{}",
                shown()
            );
        }
        if phase != "Succeeded" {
            bail!(
                "nslookup ended {phase} although it printed {ip}; its log:{}",
                shown()
            );
        }
        Ok(((), "ok".to_string()))
    }
    .await;
    steps.finish("DNS", r)
}

/// Why a pod is still waiting: its unschedulable condition or the
/// container's waiting reason.
fn why_waiting(pod: &Value) -> String {
    let mut out = String::new();
    for c in pod["status"]["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if c["status"] == "False"
            && let Some(m) = c["message"].as_str()
        {
            out.push_str(&format!("; {}: {m}", c["type"].as_str().unwrap_or("?")));
        }
    }
    for s in pod["status"]["containerStatuses"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let w = &s["state"]["waiting"];
        if let Some(r) = w["reason"].as_str() {
            out.push_str(&format!("; {r}"));
            if let Some(m) = w["message"].as_str() {
                out.push_str(&format!(": {m}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSYBOX: &str = "Server:\t\t10.32.0.10\nAddress:\t10.32.0.10:53\n\n\nName:\tkubernetes.default.svc.cluster.local\nAddress: 10.32.0.1\n\n";

    #[test]
    fn lookup_answer_is_a_whole_address_after_the_name() {
        let ip = Ipv4Addr::new(10, 32, 0, 1);
        let name = "kubernetes.default.svc.cluster.local";
        for (log, want) in [
            (BUSYBOX, true),
            // Old busybox format.
            (
                "Server:    10.32.0.10\nAddress 1: 10.32.0.10 kube-dns.kube-system.svc.cluster.local\n\nName:      kubernetes.default.svc.cluster.local\nAddress 1: 10.32.0.1 kubernetes.default.svc.cluster.local\n",
                true,
            ),
            // The DNS server's 10.32.0.10 is not 10.32.0.1.
            (
                "Server:\t\t10.32.0.10\nAddress:\t10.32.0.10:53\n\n** server can't find kubernetes.default.svc.cluster.local: NXDOMAIN\n",
                false,
            ),
            // An address before the name does not count.
            (
                "Server: 10.32.0.1\nName: other.example\nAddress: 10.0.0.1\n",
                false,
            ),
            ("", false),
        ] {
            assert_eq!(lookup_answered(log, name, ip), want, "{log}");
        }
    }

    #[test]
    fn nodes_read_ready_and_role() {
        let list = json!({"items": [
            {"metadata": {"name": "a", "labels": {ROLE_LABEL: "worker"}},
             "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
            {"metadata": {"name": "c"}},
        ]});
        let n = nodes(&list);
        assert_eq!(
            n.iter()
                .map(|n| (n.name.as_str(), n.role.as_str(), n.ready))
                .collect::<Vec<_>>(),
            [("a", "worker", true), ("b", "-", false), ("c", "-", false)]
        );
    }

    #[test]
    fn pod_is_restricted() {
        let p = pod_manifest("p", DEFAULT_IMAGE, "x", Duration::from_secs(300));
        let c = &p["spec"]["containers"][0]["securityContext"];
        assert_eq!(c["allowPrivilegeEscalation"], false);
        assert_eq!(c["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(p["spec"]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(p["spec"]["securityContext"]["runAsUser"], 65534);
        assert_eq!(
            p["spec"]["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(p["spec"]["restartPolicy"], "Never");
    }

    /// A CA and a leaf it signed: (CA, leaf PEM, key PEM).
    fn pki(
        name: &str,
    ) -> (
        rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        String,
        String,
    ) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (ca, leaf.pem(), key.serialize_pem())
    }

    /// The diagnosis names the server's alert when it refuses the client
    /// certificate after a TLS 1.3 handshake, and finds nothing otherwise.
    #[test]
    fn tls_diagnosis_reads_the_servers_alert() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use std::io::Read;
        let (ca, cert, key) = pki("cluster");
        let (_other, other_cert, other_key) = pki("other");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = format!("https://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let mut sock = sock.unwrap();
                let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::Stream::new(&mut conn, &mut sock);
                let mut buf = [0u8; 512];
                if tls.read(&mut buf).is_ok() {
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
            }
        });
        let target = |id_cert: &str, id_key: &str| ApiTarget {
            server: server.clone(),
            ca_pem: ca.pem().into_bytes(),
            identity_pem: Zeroizing::new(format!("{id_cert}{id_key}").into_bytes()),
        };
        assert_eq!(tls_diagnosis(&target(&cert, &key)), None);
        let refused = tls_diagnosis(&target(&other_cert, &other_key)).unwrap();
        assert!(refused.contains("UnknownCA"), "{refused}");
    }

    #[test]
    fn kubeconfig_paths_are_relative_to_its_folder_and_data_is_base64() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "CA").unwrap();
        std::fs::write(dir.path().join("admin.crt"), "CERT").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("KEY");
        let conf = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://h:6443/", "certificate-authority": "ca.crt"}}],
            "users": [{"name": "u", "user": {"client-certificate": "admin.crt", "client-key-data": b64}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        });
        let path = dir.path().join("admin.conf");
        std::fs::write(&path, conf.to_string()).unwrap();
        let t = load_kubeconfig(&path).unwrap();
        assert_eq!(t.server, "https://h:6443");
        assert_eq!(t.ca_pem, b"CA");
        assert_eq!(t.identity_pem.as_slice(), b"CERT\nKEY");

        std::fs::write(&path, "apiVersion: v1\nkind: Config\n").unwrap();
        let e = load_kubeconfig(&path).unwrap_err().to_string();
        assert!(e.contains("not a JSON kubeconfig"), "{e}");

        let mut token = conf.clone();
        token["users"][0]["user"] = json!({"token": "t"});
        std::fs::write(&path, token.to_string()).unwrap();
        let e = format!("{:#}", load_kubeconfig(&path).unwrap_err());
        assert!(e.contains("client certificate only"), "{e}");
    }
}
