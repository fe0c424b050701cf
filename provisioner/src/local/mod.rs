//! The local target: the whole flow on one machine, no AWS.
//!
//! `provisioner apply --local DIR` starts pki-server with file storage under
//! DIR, initialises and unseals it (the shares go to `DIR/unseal-keys.json`,
//! 0600, with a warning: this is for trying it out), creates an ES256 signing
//! key (`DIR/jwt/signing.key`, 0600) and applies the profile with its public
//! key as the `auth/jwt` key, mints one short-lived JWT per node
//! (`DIR/nodes/<name>/login.jwt`, 0600: sub and `node_name` = the node name,
//! its node role, this cluster's issuer and audience, valid for five
//! minutes), and runs `node-client fetch-cert --auth jwt` for every node into
//! `DIR/nodes/<role>-<n>/pki`: no node token is ever written. Where etcd is
//! installed, it then starts a
//! 3-member etcd cluster on 127.0.0.11-13 with those certificates and checks
//! it with the controller's etcd client certificate. `destroy --local DIR`
//! stops every process it started and removes DIR.
//!
//! Processes are started in their own process group with their pid in
//! `<name>.pid`; destroy only signals a pid whose command line is still the
//! program it started. DIR holds a marker file, and destroy refuses a
//! directory without it.

pub mod control_plane;
mod etcd;
mod jwt;
pub mod kubelet;
mod pki;
mod process;

pub use etcd::etcd_from_unit;
use etcd::start_etcd;
pub use jwt::{JWT_ISSUER, JWT_LIFETIME, JwtSigner, jwt_audience};
use pki::start_pki;
use process::{
    free_port, mkdir_private, on_path, our_pid, pid_alive, program, scrub_env, signal,
    spawn_detached, stop, write_private,
};

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The file that marks a directory as made by `apply --local`.
pub const MARKER: &str = ".kube-aws-pki-local";

/// The profile applied to the local pki-server, and uploaded for the AWS
/// target's pki-server (`policies/`, built in).
pub const PROFILE: &str = policies::PROFILE;
pub use policies::ACL;

/// What the local cluster looks like.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Cluster name (mounts under `<cluster>/pki/`).
    pub cluster: String,
    /// Where pki-server and node-client are (default: beside this binary, then PATH).
    pub bin_dir: Option<PathBuf>,
    /// Number of workers.
    pub workers: usize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            cluster: "kubecluster".into(),
            bin_dir: None,
            workers: 2,
        }
    }
}

/// One local node: role, index, name, address.
#[derive(Debug, Clone)]
pub struct LocalNode {
    /// Node role.
    pub role: &'static str,
    /// `<role>-<n>`.
    pub name: String,
    /// Its loopback address.
    pub ip: Ipv4Addr,
}

/// The nodes of a local cluster: 3 etcd (127.0.0.11-13), 1 controller
/// (127.0.0.21), workers (127.0.0.31-), one operator.
pub fn nodes(workers: usize) -> Vec<LocalNode> {
    let mut v = Vec::new();
    for i in 0..3u8 {
        v.push(LocalNode {
            role: "etcd",
            name: format!("etcd-{i}"),
            ip: Ipv4Addr::new(127, 0, 0, 11 + i),
        });
    }
    v.push(LocalNode {
        role: "controller",
        name: "controller-0".into(),
        ip: Ipv4Addr::new(127, 0, 0, 21),
    });
    for i in 0..workers.min(50) as u8 {
        v.push(LocalNode {
            role: "worker",
            name: format!("worker-{i}"),
            ip: Ipv4Addr::new(127, 0, 0, 31 + i),
        });
    }
    v.push(LocalNode {
        role: "operator",
        name: "operator-0".into(),
        ip: Ipv4Addr::new(127, 0, 0, 1),
    });
    v
}

fn step(msg: &str) {
    println!("==> {msg}");
}

/// Bring the local cluster up in `dir` (idempotent: a second run reuses what
/// runs). On failure, what was started keeps running and the error says how
/// to remove it.
pub async fn apply(dir: &Path, o: &LocalOptions) -> anyhow::Result<()> {
    let r = apply_inner(dir, o).await;
    if r.is_err() && dir.join(MARKER).exists() {
        eprintln!(
            "apply --local failed; logs are under {d}. Stop everything it started and remove \
             the folder with: provisioner destroy --local {d}",
            d = dir.display()
        );
    }
    r
}

async fn apply_inner(dir: &Path, o: &LocalOptions) -> anyhow::Result<()> {
    if dir.exists() && !dir.join(MARKER).exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        ensure!(
            empty,
            "{} exists and was not made by `provisioner apply --local`; choose another directory",
            dir.display()
        );
    }
    mkdir_private(dir)?;
    // The real path: mount points and processes' command lines name it.
    let dir =
        &std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    write_private(&dir.join(MARKER), b"kube-aws-pki local cluster\n")?;
    let pki_server = program("pki-server", o.bin_dir.as_deref())?;
    let node_client = program("node-client", o.bin_dir.as_deref())?;

    let (addr, ca) = start_pki(dir, o, &pki_server).await?;
    let all = nodes(o.workers);
    fetch_node_certs(dir, o, &node_client, &addr, &ca, &all).await?;
    let spec = crate::spec::ClusterSpec::parse(&format!("name = \"{}\"\n", o.cluster))
        .context("the local cluster name is not a valid cluster name")?;
    let Some(endpoints) = start_etcd(dir, &spec, &node_client, &all).await? else {
        return Ok(());
    };

    // --- control plane ---
    let controller = all
        .iter()
        .find(|n| n.role == "controller")
        .context("the local cluster has no controller")?;
    match control_plane::find_bins(&spec.pins.kubernetes) {
        Err(why) => println!("{why}: no control plane started"),
        Ok(bin) => start_control_plane(dir, o, &spec, controller, bin, endpoints.clone()).await?,
    }
    println!(
        "smoke test passed. pki-server: {addr} (CA {}); tear down with `provisioner destroy --local {}`",
        ca.display(),
        dir.display()
    );
    Ok(())
}

/// `node-client fetch-cert --auth jwt` for every node, each with a fresh
/// five-minute JWT.
async fn fetch_node_certs(
    dir: &Path,
    o: &LocalOptions,
    node_client: &Path,
    addr: &str,
    ca: &Path,
    all: &[LocalNode],
) -> anyhow::Result<()> {
    let signer = JwtSigner::load_or_create(&dir.join("jwt"))?;
    // --- certificates for every node ---
    for n in all {
        let home = dir.join("nodes").join(&n.name);
        mkdir_private(&home)?;
        // Earlier versions left a node token here: no static token stays on disk.
        let _ = std::fs::remove_file(home.join("token"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let jwt_file = home.join("login.jwt");
        write_private(&jwt_file, signer.node_jwt(&o.cluster, n, now)?.as_bytes())?;
        let mut cmd = Command::new(node_client);
        cmd.arg("fetch-cert")
            .args(["--role", n.role, "--node-name", &n.name])
            .args(["--ip", &n.ip.to_string()])
            .arg("--out")
            .arg(home.join("pki"))
            .args(["--cluster", &o.cluster, "--deadline", "30", "--no-reload"])
            .env("VAULT_ADDR", addr)
            .env("VAULT_CACERT", ca)
            .arg("--auth")
            .arg("jwt")
            .arg("--jwt-file")
            .arg(&jwt_file)
            .env_remove("NODE_CLIENT_TOKEN_FILE")
            .env_remove("NODE_CLIENT_AUTH")
            .env_remove("NODE_CLIENT_AUTH_MOUNT")
            .env_remove("NODE_CLIENT_AUTH_ROLE")
            .env_remove("VAULT_TOKEN");
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        ensure!(
            out.status.success(),
            "node-client fetch-cert --role {} for {}: {}",
            n.role,
            n.name,
            String::from_utf8_lossy(&out.stderr)
        );
        step(&format!(
            "{}: {}",
            n.name,
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(())
}

/// kube-apiserver, then the add-ons, then controller-manager and scheduler,
/// from the controller's rendered manifests ([`control_plane`]); checked by
/// `/readyz` and by the leader leases the other two take.
async fn start_control_plane(
    dir: &Path,
    o: &LocalOptions,
    spec: &crate::spec::ClusterSpec,
    node: &LocalNode,
    bin: PathBuf,
    etcd_servers: String,
) -> anyhow::Result<()> {
    use control_plane::COMPONENTS;
    let home = dir.join("nodes").join(&node.name);
    let kubelet_tools = kubelet::find(&bin, &spec.pins.kubernetes);
    let work = home.join("k8s");
    mkdir_private(&work)?;
    let hosts = match &kubelet_tools {
        Ok(_) => {
            let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            text.push_str("\n# kube-aws-pki local target: the nodes' names\n");
            for n in nodes(o.workers) {
                text.push_str(&format!("{} {}\n", n.ip, n.name));
            }
            let hosts = work.join("hosts");
            write_private(&hosts, text.as_bytes())?;
            std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o644))?;
            Some(hosts)
        }
        Err(_) => None,
    };
    let l = control_plane::Layout {
        ip: node.ip,
        pki: home.join("pki"),
        work,
        bin,
        etcd_servers,
        hosts,
    };
    let files = control_plane::controller_files(spec);
    let api = format!("https://{}:6443", node.ip);
    let pid_file = |c: &str| home.join(format!("{c}.pid"));
    for c in COMPONENTS {
        let log = l.work.join(format!("{c}.log"));
        if let Some(pid) = our_pid(&pid_file(c), c) {
            step(&format!("{}: {c} already running (pid {pid})", node.name));
        } else {
            let pod = control_plane::manifest(&files, c)?;
            let mut cmd = control_plane::command(&pod, &files, &l)?;
            let pid = spawn_detached(&mut cmd, &log, &pid_file(c))?;
            step(&format!(
                "{}: started {c} (pid {pid}) from the rendered static pod {}/{c}.json",
                node.name,
                crate::ignition::node::static_pods::TEMPLATES
            ));
        }
        if c == "kube-apiserver" {
            control_plane::wait_ready(
                &api,
                &l.pki.join("ca.crt"),
                Duration::from_secs(180),
                || pid_alive(&pid_file(c)),
            )
            .await
            .with_context(|| format!("see {}", log.display()))?;
            println!("smoke test: {api}/readyz ok (TLS verified with the kubernetes CA)");
            let (applied, dry) = control_plane::apply_addons(spec, &api, &l.pki).await?;
            step(&format!(
                "applied {applied} add-on objects by server-side apply; {dry} that run pods \
                 with dryRun=All (no kubelet runs here)"
            ));
        }
    }
    let held = control_plane::wait_leases(
        &api,
        &dir.join("nodes/operator-0/pki"),
        Duration::from_secs(120),
        || {
            COMPONENTS[1..]
                .iter()
                .copied()
                .find(|c| !pid_alive(&pid_file(c)))
        },
    )
    .await
    .with_context(|| format!("see {}/*.log", l.work.display()))?;
    for (lease, holder) in held {
        println!("smoke test: kube-system lease {lease} held by {holder}");
    }
    // --- worker-0's kubelet, where it can run ---
    let worker = nodes(o.workers)
        .into_iter()
        .find(|n| n.name == kubelet::NODE)
        .context("the local cluster has no worker-0")?;
    match kubelet_tools {
        Err(why) => println!("{why}: no kubelet started"),
        Ok(_) if kubelet::too_long(&dir.join("nodes").join(&worker.name)) => println!(
            "{} is too long for the kubelet's unix sockets (at most {} bytes): no kubelet started",
            dir.display(),
            kubelet::MAX_SOCKET_PATH
        ),
        Ok(tools) => {
            let p = kubelet::Paths::new(&dir.join("nodes").join(&worker.name));
            kubelet::start(spec, &worker, &tools, &p, &l).await?;
            let node = control_plane::wait_node(
                &api,
                &dir.join("nodes/operator-0/pki"),
                &worker.name,
                Duration::from_secs(120),
                || pid_alive(&p.home.join("kubelet.pid")),
            )
            .await
            .with_context(|| format!("see {}/k8s/kubelet.log", p.home.display()))?;
            println!("smoke test: {node}");
        }
    }
    smoke_test(
        dir,
        o,
        Duration::from_secs(crate::smoke::DEFAULT_TIMEOUT_SECS),
        crate::smoke::DEFAULT_IMAGE.into(),
    )
    .await?;
    println!(
        "control plane up at {api}; an admin kubeconfig: provisioner kubeconfig --local {}",
        dir.display()
    );
    Ok(())
}

/// `provisioner kubeconfig --local DIR`: an admin kubeconfig for the local
/// control plane, as an operator gets one: operator-0 logs in with a fresh
/// JWT (`auth/jwt`, role `operator`) and `kubeconfig::write` asks for a new
/// short-lived admin certificate; the server is the controller's address.
/// Written to `out` (default `DIR/kubeconfig`); returns the kubeconfig's path.
pub async fn kubeconfig(
    dir: &Path,
    o: &LocalOptions,
    out: Option<PathBuf>,
    ttl: Option<String>,
) -> anyhow::Result<PathBuf> {
    ensure!(
        dir.join(MARKER).exists(),
        "{} is not a local cluster (run `provisioner apply --local {}` first)",
        dir.display(),
        dir.display()
    );
    // The real path: mount points and processes' command lines name it.
    let dir =
        &std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let addr = std::fs::read_to_string(dir.join("pki/addr"))
        .context("the local pki-server's address (pki/addr) is missing")?;
    let ca = dir.join("pki/tls/ca.pem");
    let ca_pem = std::fs::read(&ca).with_context(|| format!("reading {}", ca.display()))?;
    ensure!(
        dir.join("jwt/signing.key").exists(),
        "the local JWT signing key is missing"
    );
    let signer = JwtSigner::load_or_create(&dir.join("jwt"))?;
    let all = nodes(o.workers);
    let (Some(operator), Some(controller)) = (
        all.iter().find(|n| n.role == "operator"),
        all.iter().find(|n| n.role == "controller"),
    ) else {
        bail!("the local cluster has no operator or no controller");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let home = dir.join("nodes").join(&operator.name);
    mkdir_private(&home)?;
    let jwt_file = home.join("login.jwt");
    write_private(
        &jwt_file,
        signer.node_jwt(&o.cluster, operator, now)?.as_bytes(),
    )?;
    let anonymous = node_client::client::Client::new(
        addr.trim(),
        Some(&ca_pem),
        zeroize::Zeroizing::new(String::new()),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let login = node_client::login::Login {
        mount: "jwt".into(),
        role: operator.role.into(),
        method: node_client::login::Method::Jwt { file: jwt_file },
    };
    let session = login
        .run(&anonymous)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = crate::spec::ClusterSpec::parse(&format!("name = \"{}\"\n", o.cluster))?;
    let opts = crate::kubeconfig::KubeconfigOptions {
        addr: Some(addr.trim().to_string()),
        ca_cert: Some(ca),
        token: session.token,
        name: operator.name.clone(),
        ttl,
        out: out.unwrap_or_else(|| dir.join("kubeconfig")),
        api_host: Some(controller.ip.to_string()),
    };
    crate::kubeconfig::write(&spec, &opts).await
}

/// Why the local target's smoke test skips the kubelet steps.
pub const NO_KUBELETS: &str = "the local target runs no kubelet";
/// Why, with worker-0's kubelet running, it still skips them.
pub const NO_POD_NETWORK: &str =
    "the local target has no pod network (its kubelet runs hostNetwork pods only)";

/// `provisioner smoke-test --local DIR`: `smoke::run` with a fresh admin
/// kubeconfig from [`kubeconfig`], the steps that need a kubelet skipped.
pub async fn smoke_test(
    dir: &Path,
    o: &LocalOptions,
    timeout: Duration,
    image: String,
) -> anyhow::Result<()> {
    let kubeconfig = kubeconfig(dir, o, None, None).await?;
    let spec = crate::spec::ClusterSpec::parse(&format!("name = \"{}\"\n", o.cluster))?;
    let so = crate::smoke::SmokeOptions {
        kubeconfig,
        timeout,
        image,
        no_pods: Some(
            if our_pid(
                &dir.join("nodes").join(kubelet::NODE).join("kubelet.pid"),
                "kubelet",
            )
            .is_some()
            {
                NO_POD_NETWORK
            } else {
                NO_KUBELETS
            }
            .into(),
        ),
    };
    crate::smoke::run(&spec, &so).await?;
    Ok(())
}

/// Stop what `apply --local` started in `dir` and remove it.
pub fn destroy(given: &Path) -> anyhow::Result<()> {
    if !given.exists() {
        println!("{} does not exist: nothing to do", given.display());
        return Ok(());
    }
    // The real path: mount points are listed by it, and a symlink to the
    // folder is removed after the folder itself.
    let dir =
        &std::fs::canonicalize(given).with_context(|| format!("resolving {}", given.display()))?;
    ensure!(
        dir.join(MARKER).exists(),
        "{} was not made by `provisioner apply --local` (no {MARKER}); refusing to remove it",
        dir.display()
    );
    // Stopped in tiers, clients before what they use, each tier SIGTERM,
    // SIGKILL after 10 s, and gone before the next is signalled: kubelets,
    // controller-manager and scheduler; the pods' containers, then containerd
    // and its shims; the apiserver; etcd; pki-server.
    let homes: Vec<PathBuf> = std::fs::read_dir(dir.join("nodes"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let pid_files = |names: &[&'static str]| -> Vec<(PathBuf, &'static str)> {
        homes
            .iter()
            .flat_map(|h| names.iter().map(move |n| (h.join(format!("{n}.pid")), *n)))
            .collect()
    };
    stop(&pid_files(&[
        "kubelet",
        "kube-controller-manager",
        "kube-scheduler",
    ]))?;
    for h in &homes {
        kubelet::restore_sysctls(h);
        kubelet::stop_pods(h);
    }
    stop(&pid_files(&["containerd"]))?;
    for h in &homes {
        for pid in kubelet::shims(h) {
            signal(pid, rustix::process::Signal::KILL);
            println!("killed a containerd shim of {} (pid {pid})", h.display());
        }
    }
    stop(&pid_files(&["kube-apiserver"]))?;
    stop(&pid_files(&["etcd"]))?;
    stop(&[(dir.join("pki/pki-server.pid"), "pki-server")])?;
    // What the kubelet and containerd mounted under the folder goes first:
    // removing the folder must never reach through a mount.
    for m in kubelet::mounts_under(dir) {
        rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH)
            .with_context(|| format!("unmounting {}", m.display()))?;
        println!("unmounted {}", m.display());
    }
    ensure!(
        kubelet::mounts_under(dir).is_empty(),
        "mounts remain under {}; not removing it",
        dir.display()
    );
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    if given.is_symlink() {
        std::fs::remove_file(given).with_context(|| format!("removing {}", given.display()))?;
    }
    println!("removed {}", dir.display());
    Ok(())
}
