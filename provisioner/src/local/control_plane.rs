//! The local target's control plane: kube-apiserver, kube-controller-manager
//! and kube-scheduler, each started from the controller's *rendered*
//! static-pod manifest (the template the controller's Ignition carries under
//! [`static_pods::TEMPLATES`]) on the files node-client wrote for
//! controller-0.
//!
//! The pod is read, not re-derived: the program is the container's command,
//! the flags its args, and every path a flag names must lie under one of the
//! pod's own volume mounts, which says where it goes here:
//! - a credential file (hostPath under `/etc/kubernetes/pki`) → the node's
//!   `pki` folder; a kubeconfig among them → a copy in the node's `k8s`
//!   folder whose server `https://127.0.0.1:6443` becomes the node's own
//!   loopback address (the controller's "localhost" here is 127.0.0.21);
//! - a file the Ignition carries (the audit policy) → a copy in `k8s`;
//! - a `DirectoryOrCreate` folder (the audit log) → `k8s/<volume name>`.
//!
//! A path under no mount is an error: the manifest would fail on a node too.
//! Addresses: `--bind-address` (0.0.0.0 or 127.0.0.1) → the node's address;
//! the etcd servers marker → the local members. One flag is added:
//! kube-apiserver's `--advertise-address`, which it would otherwise look for
//! on a default route this machine need not have.
//!
//! The add-ons are applied as the controllers' `kube-aws-pki-addons.service`
//! does (server-side apply with the front-proxy identity, [`addons`]); the
//! objects that only work with running nodes (Deployments, DaemonSets and the
//! APIServices their pods serve) with `dryRun=All`, so the real apiserver
//! validates and admits every object and nothing waits for a kubelet.

use crate::ignition::node::{addons, control_plane, static_pods};
use crate::ignition::{self, File};
use crate::spec::{ClusterSpec, Role};
use anyhow::{Context, bail, ensure};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The control-plane components, in start order.
pub const COMPONENTS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The environment variable naming the folder of the Kubernetes binaries.
pub const BIN_ENV: &str = "PKI_K8S_BIN";

/// Where `tests/harness.sh setup` caches the binaries of `version`:
/// `$XDG_CACHE_HOME` (else `~/.cache`) `/kube-aws-pki/k8s/v<version>/bin`.
pub fn cache_dir(version: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(
        base.join("kube-aws-pki/k8s")
            .join(format!("v{version}"))
            .join("bin"),
    )
}

/// The folder holding the three components at `version`: `$PKI_K8S_BIN`,
/// the harness's cache, beside this binary, then `PATH`. Err is one line
/// saying what is missing or which version was found instead.
pub fn find_bins(version: &str) -> Result<PathBuf, String> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    dirs.extend(cache_dir(version));
    if let Ok(exe) = std::env::current_exe()
        && let Some(d) = exe.parent()
    {
        dirs.push(d.to_path_buf());
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let want = format!("v{version}");
    let mut wrong = None;
    for d in dirs {
        if !COMPONENTS.iter().all(|c| d.join(c).is_file()) {
            continue;
        }
        let said = Command::new(d.join(COMPONENTS[0]))
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if said.split_whitespace().any(|w| w == want) {
            return Ok(d);
        }
        wrong.get_or_insert(format!("{} says {said:?}", d.join(COMPONENTS[0]).display()));
    }
    Err(match wrong {
        Some(w) => format!("the Kubernetes binaries found are not {want} ({w})"),
        None => format!(
            "kube-apiserver, kube-controller-manager and kube-scheduler {want} are not installed \
             (tests/harness.sh setup builds them into {}; or set {BIN_ENV})",
            cache_dir(version).map_or_else(|| "~/.cache".into(), |d| d.display().to_string())
        ),
    })
}

/// One node's local layout.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Its loopback address.
    pub ip: Ipv4Addr,
    /// node-client's files (`/etc/kubernetes/pki` on a node).
    pub pki: PathBuf,
    /// Copies (kubeconfigs, Ignition files) and folders made here.
    pub work: PathBuf,
    /// The Kubernetes binaries.
    pub bin: PathBuf,
    /// The etcd client URLs for the servers marker.
    pub etcd_servers: String,
    /// A hosts file naming the local nodes, for the apiserver to reach
    /// kubelets by name (None: no kubelet runs, the apiserver runs as is).
    pub hosts: Option<PathBuf>,
}

/// The controller's rendered static-pod manifest of `component`.
pub fn manifest(files: &[File], component: &str) -> anyhow::Result<Value> {
    let text = ignition_text(
        files,
        &format!("{}/{component}.json", static_pods::TEMPLATES),
    )?;
    serde_json::from_str(&text).with_context(|| format!("the rendered {component} manifest"))
}

fn ignition_text(files: &[File], path: &str) -> anyhow::Result<String> {
    let f = files
        .iter()
        .find(|f| f.path == path)
        .with_context(|| format!("the controller's Ignition has no {path}"))?;
    ignition::data_text(&f.contents.source)
        .with_context(|| format!("{path} is not carried as text in the Ignition"))
}

fn strings(v: &Value, what: &str) -> anyhow::Result<Vec<String>> {
    v.as_array()
        .with_context(|| format!("the manifest's container has no {what}"))?
        .iter()
        .map(|s| s.as_str().map(str::to_string).context("not a string"))
        .collect()
}

/// Where a pod's mount path goes on this machine.
enum Target {
    Pki(String),
    Copy(String),
    Folder(PathBuf),
}

/// The pod's mounts (container path → what it is), from its volumes.
fn mounts(pod: &Value, files: &[File], l: &Layout) -> anyhow::Result<Vec<(String, Target)>> {
    let spec = &pod["spec"];
    let mut out = Vec::new();
    for m in spec["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = m["name"]
            .as_str()
            .context("a volume mount without a name")?;
        let at = m["mountPath"]
            .as_str()
            .context("a volume mount without a path")?;
        let vol = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .with_context(|| format!("mount {name} has no volume"))?;
        let host = vol["hostPath"]["path"]
            .as_str()
            .with_context(|| format!("volume {name} is not a hostPath"))?;
        ensure!(host == at, "volume {name}: {host} is mounted at {at}");
        let target = if let Some(rest) = host.strip_prefix(crate::certs::DIR) {
            Target::Pki(rest.trim_start_matches('/').to_string())
        } else if vol["hostPath"]["type"] == "DirectoryOrCreate" {
            let dir = l.work.join(name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Target::Folder(dir)
        } else {
            Target::Copy(ignition_text(files, host)?)
        };
        out.push((at.to_string(), target));
    }
    Ok(out)
}

/// A kubeconfig of node-client's, copied to `dst` with its server on the
/// node's own address instead of 127.0.0.1.
fn local_kubeconfig(src: &Path, dst: &Path, ip: Ipv4Addr) -> anyhow::Result<()> {
    let mut conf: Value = serde_json::from_slice(
        &std::fs::read(src).with_context(|| format!("reading {}", src.display()))?,
    )
    .with_context(|| format!("{} is not a JSON kubeconfig", src.display()))?;
    for c in conf["clusters"].as_array_mut().into_iter().flatten() {
        let server = c["cluster"]["server"].as_str().unwrap_or_default();
        let Some(rest) = server.strip_prefix("https://127.0.0.1:") else {
            bail!(
                "{}: server {server} is not this node's loopback",
                src.display()
            );
        };
        c["cluster"]["server"] = Value::from(format!("https://{ip}:{rest}"));
    }
    super::write_private(dst, &serde_json::to_vec_pretty(&conf)?)
}

/// The command line of a rendered static pod for this machine (module docs).
pub fn command(pod: &Value, files: &[File], l: &Layout) -> anyhow::Result<Command> {
    let c = &pod["spec"]["containers"][0];
    let program = match strings(&c["command"], "command")?.as_slice() {
        [p] if COMPONENTS.contains(&p.as_str()) => p.clone(),
        other => bail!("the manifest runs {other:?}, not a control-plane component"),
    };
    let mounts = mounts(pod, files, l)?;
    let mut argv = vec![l.bin.join(&program).display().to_string()];
    for a in strings(&c["args"], "args")? {
        let Some((flag, value)) = a.split_once('=') else {
            bail!("{program}: an argument without a value: {a}");
        };
        let value = if flag == "--bind-address" {
            ensure!(
                value == "0.0.0.0" || value == "127.0.0.1",
                "{program}: {a} is neither all addresses nor loopback"
            );
            l.ip.to_string()
        } else if value == control_plane::ETCD_SERVERS_MARK {
            l.etcd_servers.clone()
        } else if value.starts_with('/') {
            let (at, target) = mounts
                .iter()
                .filter(|(at, _)| value == at || value.starts_with(&format!("{at}/")))
                .max_by_key(|(at, _)| at.len())
                .with_context(|| format!("{program}: {a} names a path the pod does not mount"))?;
            let rest = &value[at.len()..];
            match target {
                Target::Pki(name) if flag.ends_with("kubeconfig") => {
                    let dst = l.work.join(name);
                    local_kubeconfig(&l.pki.join(name), &dst, l.ip)?;
                    dst.display().to_string()
                }
                Target::Pki(name) => format!("{}{rest}", l.pki.join(name).display()),
                Target::Copy(text) => {
                    let file = Path::new(at)
                        .file_name()
                        .with_context(|| format!("{at} has no file name"))?;
                    let dst = l.work.join(file);
                    super::write_private(&dst, text.as_bytes())?;
                    dst.display().to_string()
                }
                Target::Folder(dir) => format!("{}{rest}", dir.display()),
            }
        } else {
            value.to_string()
        };
        argv.push(format!("{flag}={value}"));
    }
    let mut cmd = match (&l.hosts, program.as_str()) {
        (Some(hosts), "kube-apiserver") => {
            argv.push(format!("--advertise-address={}", l.ip));
            // The apiserver reaches kubelets by node name (the rendered
            // --kubelet-preferred-address-types=Hostname); here the names
            // resolve through its own /etc/hosts, bound in a private mount
            // namespace: nothing of this machine's changes.
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
                .arg(hosts)
                .args(&argv);
            c
        }
        (None, "kube-apiserver") => {
            argv.push(format!("--advertise-address={}", l.ip));
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        _ => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    super::scrub_env(&mut cmd, |k| k == "KUBECONFIG");
    Ok(cmd)
}

/// Whether an add-on object is applied with `dryRun=All` here: it runs pods
/// (or is served by them), and the local target runs no kubelet.
pub fn needs_nodes(o: &addons::Object) -> bool {
    matches!(o.kind.as_str(), "Deployment" | "DaemonSet" | "APIService")
}

/// An HTTPS client trusting `ca` (PEM) with the identity in `cert`+`key`.
fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut b = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?)
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some((cert, key)) = identity {
        let id = zeroize::Zeroizing::new(
            [
                std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
                std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
            ]
            .concat(),
        );
        b = b.identity(reqwest::Identity::from_pem(&id)?);
    }
    Ok(b.build()?)
}

/// Poll `attempt` every 500 ms until it gives `Ok(value)`; `Err(why)` means
/// not yet. Gives up when `gone` names a process that has exited, or after
/// `timeout`; either error ends with the last `why`.
async fn poll<T>(
    waiting_for: &str,
    timeout: Duration,
    gone: impl Fn() -> Option<String>,
    mut attempt: impl AsyncFnMut() -> anyhow::Result<Result<T, String>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let why = match attempt().await? {
            Ok(v) => return Ok(v),
            Err(why) => why,
        };
        if let Some(gone) = gone() {
            bail!("{gone} exited while waiting for {waiting_for}: {why}");
        }
        ensure!(
            Instant::now() < deadline,
            "no {waiting_for} after {}s: {why}",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An HTTPS client with the operator's admin certificate (`operator_pki`).
fn admin_client(operator_pki: &Path) -> anyhow::Result<reqwest::Client> {
    client(
        &operator_pki.join("ca.crt"),
        Some((
            &operator_pki.join("admin.crt"),
            &operator_pki.join("admin.key"),
        )),
    )
}

/// Wait until the apiserver at `api` answers `/readyz` with 200.
pub async fn wait_ready(
    api: &str,
    ca: &Path,
    timeout: Duration,
    running: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let http = client(ca, None)?;
    let gone = || (!running()).then(|| "kube-apiserver".to_string());
    poll("kube-apiserver /readyz 200", timeout, gone, async || {
        Ok(match http.get(format!("{api}/readyz")).send().await {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(format!(
                "{}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Err(e) => Err(format!("{e}")),
        })
    })
    .await
}

/// Apply every add-on object to the apiserver at `api` as the controllers'
/// add-on unit does; those that need nodes with `dryRun=All`. Returns
/// (applied, dry-run) counts.
pub async fn apply_addons(
    spec: &ClusterSpec,
    api: &str,
    pki: &Path,
) -> anyhow::Result<(usize, usize)> {
    let http = client(
        &pki.join("ca.crt"),
        Some((
            &pki.join("front-proxy-client.crt"),
            &pki.join("front-proxy-client.key"),
        )),
    )?;
    let (mut applied, mut dry) = (0, 0);
    for (file, o) in addons::objects(spec) {
        let path = o
            .rest_path()
            .with_context(|| format!("{file}: no REST path for kind {}", o.kind))?;
        let dry_run = needs_nodes(&o);
        let mut url = format!("{api}{path}?{}", addons::APPLY_QUERY);
        if dry_run {
            url.push_str("&dryRun=All");
        }
        let mut req = http
            .patch(url)
            .header("Content-Type", "application/apply-patch+yaml")
            .body(o.text.clone());
        for (k, v) in addons::HEADERS {
            req = req.header(k, v);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("applying {file}"))?;
        let status = r.status();
        if !status.is_success() {
            bail!(
                "the apiserver refused add-on {file} ({path}): {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
        if dry_run { dry += 1 } else { applied += 1 }
    }
    Ok((applied, dry))
}

/// The holder of Lease `kube-system/name`, if any (admin identity).
pub async fn lease_holder(http: &reqwest::Client, api: &str, name: &str) -> Option<String> {
    let r = http
        .get(format!(
            "{api}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}"
        ))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    v["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Wait until kube-controller-manager and kube-scheduler hold their leader
/// leases, read with the operator's admin certificate.
pub async fn wait_leases(
    api: &str,
    operator_pki: &Path,
    timeout: Duration,
    running: impl Fn() -> Option<&'static str>,
) -> anyhow::Result<Vec<(String, String)>> {
    let http = admin_client(operator_pki)?;
    let gone = || running().map(str::to_string);
    poll(
        "controller-manager and scheduler leader leases",
        timeout,
        gone,
        async || {
            let mut held = Vec::new();
            for c in &COMPONENTS[1..] {
                if let Some(h) = lease_holder(&http, api, c).await {
                    held.push((c.to_string(), h));
                }
            }
            Ok(if held.len() == COMPONENTS.len() - 1 {
                Ok(held)
            } else {
                Err(format!("held: {held:?}"))
            })
        },
    )
    .await
}

/// Wait until Node `name` is registered; a one-line description of it
/// (its Ready condition and why), read with the operator's admin certificate.
pub async fn wait_node(
    api: &str,
    operator_pki: &Path,
    name: &str,
    timeout: Duration,
    running: impl Fn() -> bool,
) -> anyhow::Result<String> {
    let http = admin_client(operator_pki)?;
    let gone = || (!running()).then(|| format!("the kubelet of {name}"));
    poll(&format!("Node {name}"), timeout, gone, async || {
        let r = match http.get(format!("{api}/api/v1/nodes/{name}")).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => return Ok(Err(format!("{}", r.status()))),
            Err(e) => return Ok(Err(format!("{e}"))),
        };
        let v: Value = r.json().await?;
        Ok(v["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .map(|c| {
                format!(
                    "Node {name} registered by its kubelet: Ready={} ({})",
                    c["status"].as_str().unwrap_or("?"),
                    c["message"].as_str().unwrap_or("")
                )
            })
            .ok_or_else(|| "registered, no Ready condition yet".to_string()))
    })
    .await
}

/// The controller's rendered Ignition files.
pub fn controller_files(spec: &ClusterSpec) -> Vec<File> {
    ignition::config(spec, Role::Controller).storage.files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(dir: &Path) -> Layout {
        Layout {
            ip: Ipv4Addr::new(127, 0, 0, 21),
            pki: dir.join("pki"),
            work: dir.join("k8s"),
            bin: PathBuf::from("/k8s/bin"),
            etcd_servers: "https://127.0.0.11:2379".into(),
            hosts: None,
        }
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn every_component_runs_from_its_rendered_manifest_with_every_path_remapped() {
        let spec = ClusterSpec::parse("name = \"kubecluster\"\n").unwrap();
        let files = controller_files(&spec);
        let tmp = tempfile::tempdir().unwrap();
        let l = layout(tmp.path());
        std::fs::create_dir_all(&l.pki).unwrap();
        std::fs::create_dir_all(&l.work).unwrap();
        for conf in ["controller-manager.conf", "scheduler.conf"] {
            std::fs::write(
                l.pki.join(conf),
                r#"{"clusters":[{"name":"c","cluster":{"server":"https://127.0.0.1:6443"}}]}"#,
            )
            .unwrap();
        }
        for c in COMPONENTS {
            let pod = manifest(&files, c).unwrap();
            let cmd = command(&pod, &files, &l).unwrap();
            assert_eq!(cmd.get_program(), l.bin.join(c));
            let args = args(&cmd);
            for a in &args {
                let value = a.split_once('=').map_or("", |(_, v)| v);
                assert!(
                    !value.starts_with('/') || value.starts_with(&tmp.path().display().to_string()),
                    "{c}: {a} not remapped"
                );
                assert!(
                    !value.contains("0.0.0.0") && value != "127.0.0.1",
                    "{c}: {a}"
                );
                assert!(!value.contains('@'), "{c}: {a} still has a marker");
            }
            assert!(
                args.contains(&"--bind-address=127.0.0.21".to_string()),
                "{args:?}"
            );
        }
        let conf: Value =
            serde_json::from_slice(&std::fs::read(l.work.join("scheduler.conf")).unwrap()).unwrap();
        assert_eq!(
            conf["clusters"][0]["cluster"]["server"],
            "https://127.0.0.21:6443"
        );
        assert_eq!(
            std::fs::read_to_string(l.work.join("audit-policy.json")).unwrap(),
            ignition_text(&files, control_plane::AUDIT_POLICY).unwrap()
        );
        assert!(l.work.join("audit-log").is_dir());
    }

    #[test]
    fn a_path_the_pod_does_not_mount_is_refused() {
        let spec = ClusterSpec::parse("name = \"kubecluster\"\n").unwrap();
        let files = controller_files(&spec);
        let tmp = tempfile::tempdir().unwrap();
        let l = layout(tmp.path());
        std::fs::create_dir_all(&l.pki).unwrap();
        std::fs::create_dir_all(&l.work).unwrap();
        std::fs::write(
            l.pki.join("scheduler.conf"),
            r#"{"clusters":[{"name":"c","cluster":{"server":"https://127.0.0.1:6443"}}]}"#,
        )
        .unwrap();
        let mut pod = manifest(&files, "kube-scheduler").unwrap();
        pod["spec"]["containers"][0]["args"]
            .as_array_mut()
            .unwrap()
            .push(Value::from("--cert-dir=/var/lib/elsewhere"));
        let e = command(&pod, &files, &l).unwrap_err().to_string();
        assert!(e.contains("does not mount"), "{e}");
        let mut pod = manifest(&files, "kube-scheduler").unwrap();
        pod["spec"]["containers"][0]["command"] = serde_json::json!(["sh"]);
        assert!(command(&pod, &files, &l).is_err());
    }

    #[test]
    fn only_objects_that_run_pods_are_dry_run() {
        let spec = ClusterSpec::parse("name = \"kubecluster\"\n").unwrap();
        let objects = addons::objects(&spec);
        let dry: Vec<&str> = objects
            .iter()
            .filter(|(_, o)| needs_nodes(o))
            .map(|(_, o)| o.kind.as_str())
            .collect();
        assert!(
            dry.contains(&"Deployment") && dry.contains(&"DaemonSet"),
            "{dry:?}"
        );
        assert!(
            objects
                .iter()
                .any(|(_, o)| o.kind == "ClusterRoleBinding" && !needs_nodes(o))
        );
    }
}
