//! The local target's kubelet: worker-0's kubelet, started from worker-0's
//! *rendered* `kubelet.service` and KubeletConfiguration on the files
//! node-client wrote for it, with its own containerd (Debian's containerd and
//! runc) configured from the rendered `/etc/containerd/config.toml`.
//!
//! No registry is reachable here: the images (the pause sandbox image and a
//! busybox image) are OCI archives that `tests/harness.sh setup` builds beside
//! the Kubernetes binaries (`*.oci.tar`) and that are imported into this
//! containerd; pods must use `imagePullPolicy: Never`.
//!
//! What differs from a node, and why (everything else is the rendered file):
//! - paths: credentials → `nodes/worker-0/pki`; the kubelet's root, static
//!   pods, containerd's root, state and socket → under `nodes/worker-0`;
//! - the kubeconfig: a copy whose server is the local apiserver
//!   (`https://127.0.0.21:6443`), still verifying the name it named
//!   (`tls-server-name`);
//! - cgroups: `cgroupfs` in the kubelet and containerd (`SystemdCgroup =
//!   false`): no systemd runs the processes here;
//! - containerd `restrict_oom_score_adj = true`: a sandboxed machine may lack
//!   CAP_SYS_RESOURCE, and runc then fails to set a pod's negative OOM score;
//! - no `--node-ip`: the kubelet refuses a loopback one; the apiserver
//!   reaches it by its name (the rendered `--kubelet-preferred-address-types=
//!   Hostname`), resolved through a hosts file of its own (`Layout::hosts`);
//! - no CNI configuration (the nodes' flannel runs as pods from a registry):
//!   the node stays NotReady for the pod network and only `hostNetwork` pods
//!   run; the kubelet listens on the node's loopback address;
//! - disk: eviction and image garbage collection on disk usage are off (the
//!   disk is this machine's, not the node's).

use super::{LocalNode, control_plane::Layout, mkdir_private, write_private};
use crate::certs;
use crate::ignition::node::{NODE_ENV, kubelet};
use crate::ignition::{self, File};
use crate::spec::{ClusterSpec, Role};
use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The sandbox image the local containerd runs pods with (the archive
/// `pause.oci.tar` carries this name).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.1";
/// The node whose kubelet runs.
pub const NODE: &str = "worker-0";
/// Debian's CNI plugin folder (containernetworking-plugins), if installed.
const CNI_BIN: &str = "/usr/lib/cni";

/// What the kubelet needs on this machine.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The kubelet binary.
    pub kubelet: PathBuf,
    /// containerd.
    pub containerd: PathBuf,
    /// containerd's `ctr`.
    pub ctr: PathBuf,
    /// The image archives to import.
    pub images: Vec<PathBuf>,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The kubelet at `version` in `bin`, containerd, ctr and runc on PATH, the
/// image archives in `bin`, and root. Err is one line saying what is missing.
pub fn find(bin: &Path, version: &str) -> Result<Tools, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("the kubelet and containerd need root".into());
    }
    let kubelet = bin.join("kubelet");
    let said = Command::new(&kubelet)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !said.split_whitespace().any(|w| w == format!("v{version}")) {
        return Err(format!(
            "no kubelet v{version} in {} (tests/harness.sh setup builds it)",
            bin.display()
        ));
    }
    let mut found = Vec::new();
    for t in ["containerd", "ctr", "runc"] {
        found
            .push(on_path(t).ok_or_else(|| {
                format!("{t} is not installed (apt-get install containerd runc)")
            })?);
    }
    let mut images: Vec<PathBuf> = std::fs::read_dir(bin)
        .map_err(|e| format!("{}: {e}", bin.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".oci.tar"))
        .collect();
    images.sort();
    if !images.iter().any(|p| p.ends_with("pause.oci.tar")) {
        return Err(format!(
            "no pause image archive (pause.oci.tar) in {} (tests/harness.sh setup builds it)",
            bin.display()
        ));
    }
    Ok(Tools {
        kubelet,
        containerd: found.remove(0),
        ctr: found.remove(0),
        images,
    })
}

/// worker-0's local layout.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `nodes/worker-0`.
    pub home: PathBuf,
    /// containerd's socket.
    pub socket: PathBuf,
}

impl Paths {
    /// The layout under `home`.
    pub fn new(home: &Path) -> Self {
        Self {
            home: home.to_path_buf(),
            socket: home.join("containerd.sock"),
        }
    }
    fn pki(&self) -> PathBuf {
        self.home.join("pki")
    }
    fn work(&self) -> PathBuf {
        self.home.join("k8s")
    }
    /// The kubelet's static pod folder.
    pub fn manifests(&self) -> PathBuf {
        self.home.join("manifests")
    }
}

fn set(t: &mut toml::Table, path: &[&str], v: toml::Value) {
    let (last, parents) = path.split_last().expect("a non-empty path");
    let mut cur = t;
    for p in parents {
        cur = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .expect("a table on the way");
    }
    cur.insert(last.to_string(), v);
}

/// containerd's configuration for this machine, from the rendered one.
pub fn containerd_config(rendered: &str, p: &Paths) -> anyhow::Result<String> {
    let mut t: toml::Table = toml::from_str(rendered).context("the rendered containerd config")?;
    let s = |p: &Path| toml::Value::String(p.display().to_string());
    set(&mut t, &["root"], s(&p.home.join("containerd/root")));
    set(&mut t, &["state"], s(&p.home.join("containerd/state")));
    set(&mut t, &["grpc", "address"], s(&p.socket));
    set(
        &mut t,
        &["ttrpc", "address"],
        s(&p.home.join("containerd.sock.ttrpc")),
    );
    const CRI: &str = "io.containerd.grpc.v1.cri";
    set(
        &mut t,
        &["plugins", "io.containerd.internal.v1.opt", "path"],
        s(&p.home.join("containerd/opt")),
    );
    set(
        &mut t,
        &["plugins", CRI, "sandbox_image"],
        toml::Value::String(PAUSE_IMAGE.into()),
    );
    set(
        &mut t,
        &["plugins", CRI, "restrict_oom_score_adj"],
        toml::Value::Boolean(true),
    );
    let runc = ["plugins", CRI, "containerd", "runtimes", "runc", "options"];
    let mut path = runc.to_vec();
    path.push("SystemdCgroup");
    set(&mut t, &path, toml::Value::Boolean(false));
    set(
        &mut t,
        &["plugins", CRI, "cni", "bin_dir"],
        toml::Value::String(CNI_BIN.into()),
    );
    set(
        &mut t,
        &["plugins", CRI, "cni", "conf_dir"],
        s(&p.home.join("cni")),
    );
    Ok(toml::to_string(&t)?)
}

/// The KubeletConfiguration for this machine, from the rendered one.
pub fn kubelet_config(rendered: &Value, p: &Paths, ip: Ipv4Addr) -> anyhow::Result<Value> {
    let mut c = rendered.clone();
    let pki = |v: &Value| -> anyhow::Result<Value> {
        let v = v.as_str().context("a path that is not a string")?;
        let rest = v
            .strip_prefix(certs::DIR)
            .with_context(|| format!("{v} is not a credential of node-client's"))?;
        Ok(Value::from(format!("{}{rest}", p.pki().display())))
    };
    c["authentication"]["x509"]["clientCAFile"] =
        pki(&c["authentication"]["x509"]["clientCAFile"])?;
    c["tlsCertFile"] = pki(&c["tlsCertFile"])?;
    c["tlsPrivateKeyFile"] = pki(&c["tlsPrivateKeyFile"])?;
    ensure!(
        c["staticPodPath"] == crate::ignition::node::MANIFESTS,
        "the rendered staticPodPath is {}",
        c["staticPodPath"]
    );
    c["staticPodPath"] = Value::from(p.manifests().display().to_string());
    c["containerRuntimeEndpoint"] = Value::from(format!("unix://{}", p.socket.display()));
    c["cgroupDriver"] = Value::from("cgroupfs");
    c["resolvConf"] = Value::from("/etc/resolv.conf");
    c["address"] = Value::from(ip.to_string());
    c["healthzBindAddress"] = Value::from(ip.to_string());
    c["evictionHard"] = json!({"memory.available": "100Mi"});
    c["imageGCHighThresholdPercent"] = Value::from(100);
    c["imageGCLowThresholdPercent"] = Value::from(99);
    // Every path left must have been remapped.
    for (k, v) in c.as_object().into_iter().flatten() {
        if let Some(s) = v.as_str() {
            ensure!(
                !s.starts_with('/')
                    || s.starts_with(&p.home.display().to_string())
                    || s == "/etc/resolv.conf",
                "the KubeletConfiguration's {k} = {s} is a path the local target does not remap"
            );
        }
    }
    Ok(c)
}

/// A node-client kubeconfig pointed at the local apiserver `api`, still
/// verifying the name its server named.
fn remote_kubeconfig(src: &Path, dst: &Path, api: &str) -> anyhow::Result<()> {
    let mut conf: Value = serde_json::from_slice(
        &std::fs::read(src).with_context(|| format!("reading {}", src.display()))?,
    )
    .with_context(|| format!("{} is not a JSON kubeconfig", src.display()))?;
    for c in conf["clusters"].as_array_mut().into_iter().flatten() {
        let server = c["cluster"]["server"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let host = server
            .strip_prefix("https://")
            .and_then(|h| h.rsplit_once(':'))
            .map(|(h, _)| h.to_string())
            .with_context(|| format!("{}: server {server}", src.display()))?;
        c["cluster"]["server"] = Value::from(api);
        c["cluster"]["tls-server-name"] = Value::from(host);
    }
    write_private(dst, &serde_json::to_vec_pretty(&conf)?)
}

/// The kubelet's command line from the rendered unit.
pub fn kubelet_command(
    unit: &str,
    node: &LocalNode,
    p: &Paths,
    tools: &Tools,
    api: &str,
    config: &Value,
) -> anyhow::Result<Command> {
    let svc = crate::unit_exec::parse(unit)?;
    let mut env: std::collections::BTreeMap<String, String> = Default::default();
    for f in &svc.environment_files {
        ensure!(
            f == NODE_ENV,
            "kubelet.service reads {f}, which the local target does not remap"
        );
        env.insert("NODE_NAME".into(), node.name.clone());
        env.insert("NODE_IP".into(), node.ip.to_string());
    }
    env.extend(svc.environment.iter().cloned());
    let argv = crate::unit_exec::expand(&svc.exec_start, &env)?;
    let Some((program, args)) = argv.split_first() else {
        bail!("kubelet.service has an empty ExecStart");
    };
    ensure!(
        program.ends_with("/kubelet"),
        "kubelet.service runs {program}, not the kubelet"
    );
    let mut cmd = Command::new(&tools.kubelet);
    for a in args {
        let (flag, value) = a
            .split_once('=')
            .with_context(|| format!("kubelet.service: an argument without a value: {a}"))?;
        let value = match flag {
            "--config" => {
                ensure!(value == kubelet::KUBELET_CONFIG, "{a}");
                let dst = p.work().join("kubelet.json");
                write_private(&dst, &serde_json::to_vec_pretty(config)?)?;
                dst.display().to_string()
            }
            "--kubeconfig" => {
                let name = value
                    .strip_prefix(certs::DIR)
                    .with_context(|| format!("{a} is not node-client's"))?
                    .trim_start_matches('/');
                let dst = p.work().join(name);
                remote_kubeconfig(&p.pki().join(name), &dst, api)?;
                dst.display().to_string()
            }
            // The kubelet refuses a loopback node IP (and then publishes no
            // address at all): here it takes none, and the apiserver reaches
            // it by name (Layout::hosts).
            "--node-ip" => continue,
            _ => {
                ensure!(
                    !value.starts_with('/'),
                    "kubelet.service: {a} is a path the local target does not remap"
                );
                value.to_string()
            }
        };
        cmd.arg(format!("{flag}={value}"));
    }
    cmd.arg(format!("--root-dir={}", p.home.join("kubelet").display()));
    super::scrub_env(&mut cmd, |k| k == "KUBECONFIG");
    Ok(cmd)
}

/// `ctr` on the local containerd, in the kubelet's namespace.
pub fn ctr(tools: &Tools, p: &Paths, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new(&tools.ctr)
        .arg("--address")
        .arg(&p.socket)
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .with_context(|| format!("running ctr {args:?}"))
}

/// Start containerd (if not running) and import the images.
pub async fn start_containerd(
    spec: &ClusterSpec,
    files: &[File],
    tools: &Tools,
    p: &Paths,
) -> anyhow::Result<()> {
    let pid_file = p.home.join("containerd.pid");
    for d in ["containerd", "cni", "manifests", "kubelet", "k8s"] {
        mkdir_private(&p.home.join(d))?;
    }
    let _ = spec;
    if super::our_pid(&pid_file, "containerd").is_none() {
        let rendered = text(files, kubelet::CONTAINERD_CONFIG)?;
        let config = p.home.join("containerd/config.toml");
        write_private(&config, containerd_config(&rendered, p)?.as_bytes())?;
        let _ = std::fs::remove_file(&p.socket);
        let mut cmd = Command::new(&tools.containerd);
        cmd.arg("--config").arg(&config);
        let pid = super::spawn_detached(&mut cmd, &p.home.join("containerd.log"), &pid_file)?;
        super::step(&format!(
            "{NODE}: started containerd (pid {pid}) from the rendered {}",
            kubelet::CONTAINERD_CONFIG
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if p.socket.exists() && ctr(tools, p, &["version"]).is_ok_and(|o| o.status.success()) {
            break;
        }
        ensure!(
            super::our_pid(&pid_file, "containerd").is_some(),
            "containerd exited; see {}",
            p.home.join("containerd.log").display()
        );
        ensure!(
            Instant::now() < deadline,
            "containerd did not answer within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for image in &tools.images {
        let o = ctr(
            tools,
            p,
            &["images", "import", &image.display().to_string()],
        )?;
        ensure!(
            o.status.success(),
            "ctr images import {}: {}",
            image.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

fn text(files: &[File], path: &str) -> anyhow::Result<String> {
    let f = files
        .iter()
        .find(|f| f.path == path)
        .with_context(|| format!("the worker's Ignition has no {path}"))?;
    ignition::data_text(&f.contents.source)
        .with_context(|| format!("{path} is not carried as text in the Ignition"))
}

/// Start worker-0's containerd and kubelet (if not running).
pub async fn start(
    spec: &ClusterSpec,
    node: &LocalNode,
    tools: &Tools,
    p: &Paths,
    cp: &Layout,
) -> anyhow::Result<()> {
    let ign = ignition::config(spec, Role::Worker);
    let files = &ign.storage.files;
    start_containerd(spec, files, tools, p).await?;
    let pid_file = p.home.join("kubelet.pid");
    if let Some(pid) = super::our_pid(&pid_file, "kubelet") {
        super::step(&format!("{NODE}: kubelet already running (pid {pid})"));
        return Ok(());
    }
    let unit = ign
        .systemd
        .units
        .iter()
        .find(|u| u.name == "kubelet.service")
        .and_then(|u| u.contents.clone())
        .context("the worker's Ignition has no kubelet.service")?;
    let rendered: Value = serde_json::from_str(&text(files, kubelet::KUBELET_CONFIG)?)?;
    let config = kubelet_config(&rendered, p, node.ip)?;
    let api = format!("https://{}:6443", cp.ip);
    let mut cmd = kubelet_command(&unit, node, p, tools, &api, &config)?;
    save_sysctls(&p.home)?;
    let pid = super::spawn_detached(&mut cmd, &p.work().join("kubelet.log"), &pid_file)?;
    super::step(&format!(
        "{NODE}: started the kubelet (pid {pid}) from the rendered kubelet.service and {}",
        kubelet::KUBELET_CONFIG
    ));
    Ok(())
}

/// Stop the pods' containers of worker-0's containerd (tasks killed and
/// deleted), so that nothing is left running once containerd stops.
pub fn stop_pods(home: &Path) {
    let p = Paths::new(home);
    let Some(ctr_bin) = on_path("ctr") else {
        return;
    };
    if !p.socket.exists() {
        return;
    }
    let tools = Tools {
        kubelet: PathBuf::new(),
        containerd: PathBuf::new(),
        ctr: ctr_bin,
        images: vec![],
    };
    let Ok(o) = ctr(&tools, &p, &["tasks", "ls", "-q"]) else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    for id in &ids {
        let _ = ctr(
            &tools,
            &p,
            &["tasks", "kill", "--all", "--signal", "SIGKILL", id],
        );
    }
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ctr(&tools, &p, &["tasks", "delete", "--force", id])
                .is_ok_and(|o| o.status.success())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = ctr(&tools, &p, &["containers", "delete", id]);
    }
}

/// The containerd shims serving `home`'s containerd (they outlive it).
pub fn shims(home: &Path) -> Vec<u32> {
    let needle = Paths::new(home).socket.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args.first().is_some_and(|a| {
            a.rsplit('/')
                .next()
                .is_some_and(|b| b.starts_with("containerd-shim"))
        });
        if is_shim && args.iter().any(|a| a.starts_with(&needle)) {
            out.push(pid);
        }
    }
    out
}

/// The longest unix socket path Linux accepts (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Whether a socket the kubelet or containerd makes under `home` would be
/// longer than [`MAX_SOCKET_PATH`].
pub fn too_long(home: &Path) -> bool {
    [
        "kubelet/device-plugins/kubelet.sock",
        "kubelet/plugins_registry/x.sock",
        "containerd.sock.ttrpc",
    ]
    .iter()
    .any(|s| home.join(s).as_os_str().len() > MAX_SOCKET_PATH)
}

/// The kernel settings the kubelet changes at start (its
/// `protectKernelDefaults: false` path): saved before it first starts, put
/// back by `destroy`, so this machine keeps its own.
const TUNABLES: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

fn saved_sysctls(home: &Path) -> PathBuf {
    home.join("sysctl.saved")
}

/// Save [`TUNABLES`] once (a second apply keeps the first values).
fn save_sysctls(home: &Path) -> anyhow::Result<()> {
    let file = saved_sysctls(home);
    if file.exists() {
        return Ok(());
    }
    let mut text = String::new();
    for t in TUNABLES {
        if let Ok(v) = std::fs::read_to_string(Path::new("/proc/sys").join(t)) {
            text.push_str(&format!("{t} {}\n", v.trim()));
        }
    }
    write_private(&file, text.as_bytes())
}

/// Put back what [`save_sysctls`] saved; say what could not be.
pub fn restore_sysctls(home: &Path) {
    let Ok(text) = std::fs::read_to_string(saved_sysctls(home)) else {
        return;
    };
    for line in text.lines() {
        let Some((t, v)) = line.split_once(' ') else {
            continue;
        };
        if !TUNABLES.contains(&t) {
            continue;
        }
        let path = Path::new("/proc/sys").join(t);
        if std::fs::read_to_string(&path).is_ok_and(|now| now.trim() == v) {
            continue;
        }
        let name = t.replace('/', ".");
        match std::fs::write(&path, v) {
            Ok(()) => println!("restored {name} = {v} (the kubelet had changed it)"),
            Err(e) => eprintln!("could not restore {name} = {v}: {e}"),
        }
    }
}

/// Decode mountinfo's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| {
            d.iter()
                .all(|c| (b'0'..=b'3').contains(&d[0]) && (b'0'..=b'7').contains(c))
        });
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or under `dir`, deepest first (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker_files() -> (ClusterSpec, Vec<File>) {
        let spec = ClusterSpec::parse("name = \"kubecluster\"\n").unwrap();
        let files = ignition::config(&spec, Role::Worker).storage.files;
        (spec, files)
    }

    #[test]
    fn containerd_config_keeps_the_rendered_one_and_moves_every_path_here() {
        let (_, files) = worker_files();
        let p = Paths::new(Path::new("/tmp/x/nodes/worker-0"));
        let text =
            containerd_config(&text(&files, kubelet::CONTAINERD_CONFIG).unwrap(), &p).unwrap();
        let t: toml::Table = toml::from_str(&text).unwrap();
        let cri = &t["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(t["version"].as_integer(), Some(2));
        assert_eq!(cri["sandbox_image"].as_str(), Some(PAUSE_IMAGE));
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(
            cri["containerd"]["runtimes"]["runc"]["runtime_type"].as_str(),
            Some("io.containerd.runc.v2"),
            "kept from the rendered config"
        );
        assert_eq!(
            cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
            Some(false)
        );
        assert_eq!(
            t["grpc"]["address"].as_str(),
            Some("/tmp/x/nodes/worker-0/containerd.sock")
        );
        for key in ["root", "state"] {
            assert!(
                t[key]
                    .as_str()
                    .unwrap()
                    .starts_with("/tmp/x/nodes/worker-0/"),
                "{key}"
            );
        }
    }

    #[test]
    fn mountinfo_escapes_decode() {
        assert_eq!(unescape(r"/tmp/a\040b\011c\134d"), "/tmp/a b\tc\\d");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn kubelet_config_remaps_every_path_and_address() {
        let (_, files) = worker_files();
        let rendered: Value =
            serde_json::from_str(&text(&files, kubelet::KUBELET_CONFIG).unwrap()).unwrap();
        let p = Paths::new(Path::new("/tmp/x/nodes/worker-0"));
        let c = kubelet_config(&rendered, &p, Ipv4Addr::new(127, 0, 0, 31)).unwrap();
        assert_eq!(c["tlsCertFile"], "/tmp/x/nodes/worker-0/pki/kubelet.crt");
        assert_eq!(
            c["authentication"]["x509"]["clientCAFile"],
            "/tmp/x/nodes/worker-0/pki/ca.crt"
        );
        assert_eq!(c["staticPodPath"], "/tmp/x/nodes/worker-0/manifests");
        assert_eq!(
            c["containerRuntimeEndpoint"],
            "unix:///tmp/x/nodes/worker-0/containerd.sock"
        );
        assert_eq!(c["address"], "127.0.0.31");
        assert_eq!(c["cgroupDriver"], "cgroupfs");
        // Security settings stay as rendered.
        for k in [
            "authentication",
            "authorization",
            "readOnlyPort",
            "rotateCertificates",
        ] {
            if k != "authentication" {
                assert_eq!(c[k], rendered[k], "{k}");
            }
        }
        assert_eq!(
            c["authentication"]["anonymous"],
            rendered["authentication"]["anonymous"]
        );
        assert_eq!(
            c["authentication"]["webhook"],
            rendered["authentication"]["webhook"]
        );
    }
}
