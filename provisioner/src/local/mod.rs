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
pub mod kubelet;

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

/// The `iss` of the JWTs the local target mints (the profile's `jwt_issuer`).
pub const JWT_ISSUER: &str = "https://jwt.local.kube-aws-pki";
/// How long a minted login JWT is valid (seconds).
pub const JWT_LIFETIME: i64 = 300;

/// The `aud` of the local target's JWTs (the profile's `jwt_audience`).
pub fn jwt_audience(cluster: &str) -> String {
    format!("kube-aws-pki:{cluster}")
}

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1,
/// BIT STRING of 66 bytes), followed by the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn pem(label: &str, der: &[u8]) -> String {
    let b = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(text: &str, label: &str) -> anyhow::Result<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, r)| r.split_once(&end))
        .map(|(b, _)| b)
        .with_context(|| format!("not a PEM {label}"))?;
    let b64: String = body.split_whitespace().collect();
    Ok(B64.decode(b64)?)
}

/// The local target's JWT signing key: an ES256 (P-256) key kept in
/// `dir/signing.key` (PKCS#8 PEM, 0600), made on first use; its public key
/// is written to `dir/signing.pub`.
pub struct JwtSigner {
    key: ring::signature::EcdsaKeyPair,
    /// The public key, SubjectPublicKeyInfo PEM.
    pub public_pem: String,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner").finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// Load the key from `dir`, or create it there.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        mkdir_private(dir)?;
        let key_file = dir.join("signing.key");
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = if key_file.exists() {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&key_file)
                    .with_context(|| format!("reading {}", key_file.display()))?,
            );
            zeroize::Zeroizing::new(
                unpem(&text, "PRIVATE KEY").with_context(|| format!("{}", key_file.display()))?,
            )
        } else {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| anyhow::anyhow!("generating the JWT signing key failed"))?;
            let der = zeroize::Zeroizing::new(doc.as_ref().to_vec());
            let text = zeroize::Zeroizing::new(pem("PRIVATE KEY", &der));
            write_private(&key_file, text.as_bytes())?;
            der
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| anyhow::anyhow!("{}: not a P-256 PKCS#8 key", key_file.display()))?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let public_pem = pem("PUBLIC KEY", &spki);
        write_private(&dir.join("signing.pub"), public_pem.as_bytes())?;
        Ok(Self { key, public_pem })
    }

    /// A compact ES256 JWT over `claims`.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let input = format!(
            "{}.{}",
            B64URL.encode(json!({"alg": "ES256", "typ": "JWT"}).to_string()),
            B64URL.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing a JWT failed"))?;
        Ok(format!("{input}.{}", B64URL.encode(sig.as_ref())))
    }

    /// The login JWT of `node` in `cluster`, valid from `now` for [`JWT_LIFETIME`].
    pub fn node_jwt(&self, cluster: &str, node: &LocalNode, now: i64) -> anyhow::Result<String> {
        self.sign(&json!({
            "iss": JWT_ISSUER,
            "aud": jwt_audience(cluster),
            "sub": node.name,
            "node_name": node.name,
            "kube-aws-pki/role": node.role,
            "iat": now,
            "nbf": now - 5,
            "exp": now + JWT_LIFETIME,
        }))
    }
}

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

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn mkdir_private(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// A program beside this binary, or on PATH.
fn program(name: &str, bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = bin_dir {
        dirs.push(d.to_path_buf());
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(d) = exe.parent()
    {
        dirs.push(d.to_path_buf());
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} not found beside provisioner or on PATH (cargo build --workspace --bins)"
            )
        })
}

fn on_path(name: &str) -> bool {
    program(name, None).is_ok()
}

/// Start `cmd` detached (own process group, output to `log`), pid in `pid_file`.
fn spawn_detached(cmd: &mut Command, log: &Path, pid_file: &Path) -> anyhow::Result<u32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id();
    // "PID START": a later run signals only this process, not one that got
    // the pid after a reboot.
    let start = start_time(pid).unwrap_or(0);
    write_private(pid_file, format!("{pid} {start}").as_bytes())?;
    Ok(pid)
}

/// Remove the caller's proxy settings (any case: `https_proxy` too), and the
/// variables `also` names, from what `cmd` inherits: local processes talk to
/// each other on loopback and by local names only.
fn scrub_env(cmd: &mut Command, also: impl Fn(&str) -> bool) {
    for (k, _) in std::env::vars_os() {
        let upper = k.to_string_lossy().to_ascii_uppercase();
        if upper.ends_with("_PROXY") || also(&upper) {
            cmd.env_remove(&k);
        }
    }
}

/// Field 22 of `/proc/PID/stat`: the process's start time (clock ticks since
/// boot). With the pid it names one process for as long as the machine runs.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
}

/// The pid and start time in `pid_file`, if the process they name still runs.
fn recorded(pid_file: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let mut words = text.split_whitespace();
    let pid: u32 = words.next()?.parse().ok()?;
    let start: u64 = words.next()?.parse().ok()?;
    (alive(pid) && start_time(pid) == Some(start)).then_some(pid)
}

/// Whether the process in `pid_file` that this run started still runs (it
/// may not have exec'd its program yet: `our_pid` is for signalling).
fn pid_alive(pid_file: &Path) -> bool {
    recorded(pid_file).is_some()
}

/// The pid in `pid_file` if that very process (same start time) still runs
/// `program`.
fn our_pid(pid_file: &Path, program: &str) -> Option<u32> {
    let pid = recorded(pid_file)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next()?;
    let base = Path::new(std::str::from_utf8(argv0).ok()?).file_name()?;
    (base == program).then_some(pid)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Api {
    http: reqwest::Client,
    addr: String,
}

impl Api {
    fn new(addr: &str, ca: &Path) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            addr: addr.to_string(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut r = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr));
        if let Some(t) = token {
            r = r.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }
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

    // --- pki-server ---
    let pki = dir.join("pki");
    mkdir_private(&pki)?;
    let addr_file = pki.join("addr");
    let addr = match (
        our_pid(&pki.join("pki-server.pid"), "pki-server"),
        std::fs::read_to_string(&addr_file),
    ) {
        (Some(pid), Ok(addr)) => {
            step(&format!(
                "pki-server already running (pid {pid}) at {}",
                addr.trim()
            ));
            addr.trim().to_string()
        }
        _ => {
            let port = free_port()?;
            let pid = spawn_detached(
                Command::new(&pki_server)
                    .arg("server")
                    .args(["--listen", &format!("127.0.0.1:{port}")])
                    .arg("--storage")
                    .arg(format!("file:{}", pki.join("data").display()))
                    .arg("--tls-dir")
                    .arg(pki.join("tls"))
                    .env("RUST_LOG", "info"),
                &pki.join("server.log"),
                &pki.join("pki-server.pid"),
            )?;
            let addr = format!("https://127.0.0.1:{port}");
            write_private(&addr_file, addr.as_bytes())?;
            step(&format!("started pki-server (pid {pid}) at {addr}"));
            addr
        }
    };
    let ca = pki.join("tls/ca.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    let api = loop {
        if ca.exists()
            && let Ok(api) = Api::new(&addr, &ca)
            && api
                .call(reqwest::Method::GET, "sys/seal-status", None, None)
                .await
                .is_ok()
        {
            break api;
        }
        ensure!(
            Instant::now() < deadline,
            "pki-server did not answer within 30s; see {}",
            pki.join("server.log").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // --- init and unseal ---
    let keys_file = dir.join("unseal-keys.json");
    let (_, status) = api
        .call(reqwest::Method::GET, "sys/seal-status", None, None)
        .await?;
    if status["initialized"] == false {
        let (s, init) = api
            .call(
                reqwest::Method::PUT,
                "sys/init",
                None,
                Some(json!({"secret_shares": 5, "secret_threshold": 3})),
            )
            .await?;
        ensure!(s == 200, "sys/init answered {s}");
        let saved = json!({"keys": init["keys"], "root_token": init["root_token"]});
        write_private(&keys_file, serde_json::to_string_pretty(&saved)?.as_bytes())?;
        step("initialised pki-server: 5 unseal shares, threshold 3");
        eprintln!(
            "WARNING: the unseal shares and the root token are in {} (0600). This is for trying \
             it out on one machine; a real cluster keeps shares apart (docs/operations.md).",
            keys_file.display()
        );
    }
    let saved: Value = serde_json::from_slice(
        &std::fs::read(&keys_file).with_context(|| format!("reading {}", keys_file.display()))?,
    )?;
    let root = saved["root_token"]
        .as_str()
        .context("no root token saved")?
        .to_string();
    let (_, status) = api
        .call(reqwest::Method::GET, "sys/seal-status", None, None)
        .await?;
    if status["sealed"] == true {
        for k in saved["keys"].as_array().into_iter().flatten().take(3) {
            api.call(
                reqwest::Method::PUT,
                "sys/unseal",
                None,
                Some(json!({"key": k})),
            )
            .await?;
        }
        let (_, status) = api
            .call(reqwest::Method::GET, "sys/seal-status", None, None)
            .await?;
        ensure!(status["sealed"] == false, "pki-server is still sealed");
        step("unsealed pki-server");
    }

    // --- profile ---
    let policies = dir.join("policies");
    mkdir_private(&policies.join("acl"))?;
    write_private(&policies.join("profile.toml"), PROFILE.as_bytes())?;
    for (name, text) in ACL {
        write_private(&policies.join(format!("acl/{name}.hcl")), text.as_bytes())?;
    }
    let signer = JwtSigner::load_or_create(&dir.join("jwt"))?;
    let out = Command::new(&pki_server)
        .arg("apply-profile")
        .arg("--dir")
        .arg(&policies)
        .args(["--cluster", &o.cluster])
        .arg("--jwt-pubkey")
        .arg(dir.join("jwt/signing.pub"))
        .args(["--var", &format!("jwt_issuer={JWT_ISSUER}")])
        .args([
            "--var",
            &format!("jwt_audience={}", jwt_audience(&o.cluster)),
        ])
        .env("VAULT_ADDR", &addr)
        .env("VAULT_CACERT", &ca)
        .env("VAULT_TOKEN", &root)
        .output()?;
    ensure!(
        out.status.success(),
        "apply-profile failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    step("applied the profile (policies/profile.toml), auth/jwt keyed to DIR/jwt/signing.pub");

    // --- certificates for every node ---
    let all = nodes(o.workers);
    for n in &all {
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
        let mut cmd = Command::new(&node_client);
        cmd.arg("fetch-cert")
            .args(["--role", n.role, "--node-name", &n.name])
            .args(["--ip", &n.ip.to_string()])
            .arg("--out")
            .arg(home.join("pki"))
            .args(["--cluster", &o.cluster, "--deadline", "30", "--no-reload"])
            .env("VAULT_ADDR", &addr)
            .env("VAULT_CACERT", &ca)
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

    // --- etcd ---
    if !(on_path("etcd") && on_path("etcdctl")) {
        println!(
            "etcd is not installed here (apt-get install etcd-server etcd-client): no etcd cluster started"
        );
        return Ok(());
    }
    let members: Vec<&LocalNode> = all.iter().filter(|n| n.role == "etcd").collect();
    let ports: Vec<(u16, u16)> = members.iter().map(|_| (2379, 2380)).collect();
    // etcd runs from the etcd nodes' own rendered unit: the same command line,
    // environment and membership step (`node-client etcd-join`, here with the
    // peers listed instead of read from the auto scaling group).
    let spec = crate::spec::ClusterSpec::parse(&format!("name = \"{}\"\n", o.cluster))
        .context("the local cluster name is not a valid cluster name")?;
    // The unit exactly as the etcd role's Ignition carries it.
    let unit = crate::ignition::config(&spec, crate::spec::Role::Etcd)
        .systemd
        .units
        .into_iter()
        .find(|u| u.name == "etcd-member.service")
        .and_then(|u| u.contents)
        .context("the etcd role's Ignition has no etcd-member.service")?;
    let peers = members
        .iter()
        .map(|n| format!("{}={}", n.name, n.ip))
        .collect::<Vec<_>>()
        .join(",");
    for n in &members {
        let home = dir.join("nodes").join(&n.name);
        let pid_file = home.join("etcd.pid");
        if let Some(pid) = our_pid(&pid_file, "etcd") {
            step(&format!("{}: etcd already running (pid {pid})", n.name));
            continue;
        }
        let pki = home.join("pki");
        let data = home.join("etcd-data");
        let ip = n.ip.to_string();
        let membership = home.join("etcd.env");
        let out = Command::new(&node_client)
            .arg("etcd-join")
            .args(["--discover", "static", "--peers", &peers])
            .args(["--name", &n.name, "--ip", &ip])
            .args(["--cluster-token", &format!("{}-local", spec.name)])
            .arg("--data-dir")
            .arg(&data)
            .args(["--etcdctl", "etcdctl", "--wait", "5"])
            .arg("--cacert")
            .arg(pki.join("etcd-ca.crt"))
            .arg("--cert")
            .arg(pki.join("etcd-member.crt"))
            .arg("--key")
            .arg(pki.join("etcd-member.key"))
            .arg("--out")
            .arg(&membership)
            .output()
            .context("running node-client etcd-join")?;
        ensure!(
            out.status.success(),
            "node-client etcd-join for {}: {}",
            n.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let node_env = vec![
            ("NODE_NAME".to_string(), n.name.clone()),
            ("NODE_IP".to_string(), ip.clone()),
        ];
        let mut cmd = etcd_from_unit(&unit, node_env, &membership, &pki, &data, &ip)?;
        let pid = spawn_detached(&mut cmd, &home.join("etcd.log"), &pid_file)?;
        step(&format!(
            "{}: started etcd (pid {pid}) at https://{}:2379 from the rendered etcd-member.service",
            n.name, n.ip
        ));
    }

    // --- smoke test ---
    let ctl = dir.join("nodes/controller-0/pki");
    let endpoints = members
        .iter()
        .zip(&ports)
        .map(|(n, (c, _))| format!("https://{}:{c}", n.ip))
        .collect::<Vec<_>>()
        .join(",");
    let etcdctl = |args: &[&str]| {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--cacert={}", ctl.join("etcd-ca.crt").display()))
            .arg(format!(
                "--cert={}",
                ctl.join("apiserver-etcd-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                ctl.join("apiserver-etcd-client.key").display()
            ))
            .args(["--dial-timeout=2s", "--command-timeout=3s"])
            .args(args);
        c.output()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = etcdctl(&["endpoint", "health"])?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && said.matches("is healthy").count() == members.len() {
            println!(
                "smoke test: etcdctl endpoint health (controller-0's apiserver-etcd-client certificate)"
            );
            for l in said.lines() {
                println!("  {l}");
            }
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "smoke test failed: etcd not healthy after 60s: {said}\nlogs: {}/nodes/etcd-*/etcd.log",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

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

/// The etcd command of the rendered `etcd-member.service`, for one local
/// member: the unit's paths remapped into the member's folder (`/etc/kubernetes/pki`
/// → `pki`, `/var/lib/etcd` → `data`, `/opt/etcd/etcd` → the `etcd` on PATH),
/// the node env and the membership file as the unit reads them. The one
/// value changed: three members share this host's loopback, so each serves
/// metrics on its own loopback address instead of 127.0.0.1.
pub fn etcd_from_unit(
    unit: &str,
    node_env: Vec<(String, String)>,
    membership: &Path,
    pki: &Path,
    data: &Path,
    ip: &str,
) -> anyhow::Result<Command> {
    use crate::ignition::node::{NODE_ENV, etcd};
    let svc = crate::unit_exec::parse(unit)?;
    let mut env: std::collections::BTreeMap<String, String> = Default::default();
    for f in &svc.environment_files {
        let vars = match f.as_str() {
            NODE_ENV => node_env.clone(),
            etcd::MEMBERSHIP_ENV => crate::unit_exec::read_env_file(membership)?,
            other => {
                bail!("etcd-member.service reads {other}, which the local target does not remap")
            }
        };
        env.extend(vars);
    }
    env.extend(svc.environment.iter().cloned());
    let remap = |v: &str| -> String {
        if let Some(rest) = v.strip_prefix(crate::certs::DIR) {
            return format!("{}{rest}", pki.display());
        }
        if let Some(rest) = v.strip_prefix(etcd::DATA_DIR) {
            return format!("{}{rest}", data.display());
        }
        v.to_string()
    };
    for v in env.values_mut() {
        *v = remap(v);
    }
    ensure!(
        env.get("ETCD_LISTEN_METRICS_URLS").map(String::as_str) == Some(etcd::METRICS_URL),
        "etcd-member.service must serve metrics on {} only",
        etcd::METRICS_URL
    );
    env.insert(
        "ETCD_LISTEN_METRICS_URLS".into(),
        format!("http://{ip}:2381"),
    );
    let argv = crate::unit_exec::expand(&svc.exec_start, &env)?;
    let Some((program, args)) = argv.split_first() else {
        bail!("etcd-member.service has an empty ExecStart");
    };
    ensure!(
        program == &format!("{}/etcd", etcd::BIN_DIR),
        "etcd-member.service runs {program}, not etcd"
    );
    let mut cmd = Command::new("etcd");
    scrub_env(&mut cmd, |k| k.starts_with("ETCD"));
    for a in args {
        if let Some((flag, value)) = a.split_once('=') {
            cmd.arg(format!("{flag}={}", remap(value)));
        } else {
            cmd.arg(remap(a));
        }
    }
    cmd.envs(env.iter().filter(|(k, _)| k.starts_with("ETCD_")));
    cmd.args(["--logger", "zap", "--log-outputs", "stderr"]);
    Ok(cmd)
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

/// SIGTERM to each process of `pid_files` still running its program;
/// SIGKILL after 10 s; returns once all have exited.
fn stop(pid_files: &[(PathBuf, &str)]) -> anyhow::Result<()> {
    let mut pids = Vec::new();
    for (f, prog) in pid_files {
        if let Some(pid) = our_pid(f, prog) {
            signal(pid, rustix::process::Signal::TERM);
            pids.push((pid, *prog));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|(p, _)| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (pid, prog) in &pids {
        if alive(*pid) {
            signal(*pid, rustix::process::Signal::KILL);
            println!("killed {prog} (pid {pid}): still running 10 s after SIGTERM");
        } else {
            println!("stopped {prog} (pid {pid})");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|(p, _)| alive(*p)) {
        ensure!(
            Instant::now() < deadline,
            "processes did not exit: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}
