//! `cargo bench -p pki-server --bench issue`: pki-server against OpenBao, side
//! by side, in one run on one machine.
//!
//! What it does:
//! 1. Measures the single-core crypto ceiling in this process, before any
//!    server runs: ring P-256 key generation, key generation + one ECDSA
//!    signature, a full in-process issue with rcgen (key, X.509, CA signature
//!    and PEM), ECDSA verify + sign (the crypto of `sign`), and RSA-2048 key
//!    generation with RustCrypto `rsa` (the server's RSA key generator).
//! 2. Starts `pki-server server` (file storage, TLS from `--tls-dir`) and
//!    `bao server` (OpenBao, integrated raft storage, TLS with a listener
//!    certificate made here), both on 127.0.0.1 only.
//! 3. Initialises (1 share) and unseals both over HTTPS, mounts `pki` with
//!    `max_lease_ttl=87600h`, generates an EC P-256 root on each, writes roles
//!    `ec` (ec 256), `rsa` (rsa 2048) and `sign` (`key_type=any`), all
//!    `allow_any_name`, and makes one P-256 CSR for `sign`. Certificates are
//!    stored on both (`no_store` is false: the default).
//! 4. For each operation and concurrency, and for each server in turn: `conc`
//!    tokio tasks, each with its own HTTP/1.1 keep-alive client, post requests
//!    in a closed loop for the warm-up (not recorded, connections are made
//!    there) and then for the measured time. Requests that complete inside
//!    the window count; only non-error answers count, errors are reported.
//! 5. Prints markdown tables: per cell req/s, p50, p99, the server's CPU per
//!    request (from /proc), req/s per core (÷ the machine's cores), the ratio
//!    pki-server / OpenBao, and the CPU used by everything else during the
//!    cell (`bg`; for pki-server ~0.2 cores of it are the kernel writing its
//!    files, well above that the cell was disturbed); pki-server per core
//!    against the ceiling; the acceptance target; then the ceiling itself.
//!
//! Knobs (environment): `BENCH_SECS` measured seconds per cell [5],
//! `BENCH_WARMUP` seconds [1], `BENCH_CONC` ["1 4 16"], `BENCH_OPS`
//! ["issue-ec issue-rsa sign-ec"], `BENCH_CEILING_SECS` per ceiling line [2],
//! `BENCH_RSA_SECS` for RSA key generation [6], `BENCH_RSA_CELL_SECS` the
//! least measured seconds of an `issue-rsa` cell [15], `BENCH_CLIENT_THREADS` load
//! generator threads [number of cores], `BAO_BIN` (else
//! `$PKI_TEST_VENV/bin/bao`, `tests/.venv/bin/bao`, then `bao` on PATH),
//! `BENCH_NO_BAO=1` to run pki-server alone, `BENCH_PKI_STORAGE=memory` to
//! run it without durable storage (diagnosis only), `BENCH_DIR` parent of the
//! temporary directory [`target/tmp`], `BENCH_KEEP=1` to keep it (logs, data).
//!
//! Both servers keep their data in the temporary directory, on the same file
//! system. Before the servers start the bench times creating small files there
//! (`fs probe`): on ext4 without a journal, inode allocation skips inodes freed
//! in the last minutes one by one, so a mass deletion nearby (such as the
//! previous run's clean-up) makes every file creation slow for a while. The
//! bench marks its parent folder `chattr +T` so each run's folder lands in a
//! fresh block group; still, a probe far above ~50 µs per file means the run
//! measures that, not the server.

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOST: &str = "127.0.0.1";
const CN: &str = "host.example.com";
const PKI_SERVER: &str = "pki-server";
const OPENBAO: &str = "openbao";

// ------------------------------------------------------------------ settings

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    IssueEc,
    IssueRsa,
    SignEc,
}

impl Op {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "issue-ec" => Op::IssueEc,
            "issue-rsa" => Op::IssueRsa,
            "sign-ec" => Op::SignEc,
            _ => bail!("unknown op {s:?}: expected issue-ec, issue-rsa or sign-ec"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Op::IssueEc => "issue ec P-256",
            Op::IssueRsa => "issue rsa 2048",
            Op::SignEc => "sign P-256 CSR",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Op::IssueEc => "pki/issue/ec",
            Op::IssueRsa => "pki/issue/rsa",
            Op::SignEc => "pki/sign/sign",
        }
    }

    fn body(self, csr: &str) -> Value {
        match self {
            Op::IssueEc | Op::IssueRsa => json!({"common_name": CN, "ttl": "72h"}),
            Op::SignEc => json!({"common_name": CN, "ttl": "72h", "csr": csr}),
        }
    }
}

#[derive(Debug)]
struct Settings {
    secs: f64,
    warmup: f64,
    conc: Vec<usize>,
    ops: Vec<Op>,
    ceiling_secs: f64,
    rsa_secs: f64,
    rsa_cell_secs: f64,
    client_threads: usize,
    bao: Option<PathBuf>,
    keep: bool,
}

fn env_f64(name: &str, default: f64) -> Result<f64> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().with_context(|| format!("{name}={v:?}")),
        Err(_) => Ok(default),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn find_bao() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BAO_BIN") {
        return Some(PathBuf::from(p));
    }
    let venv = std::env::var_os("PKI_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/.venv"));
    let p = venv.join("bin/bao");
    if p.exists() {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("bao"))
            .find(|p| p.exists())
    })
}

impl Settings {
    fn from_env() -> Result<Self> {
        let conc = std::env::var("BENCH_CONC").unwrap_or_else(|_| "1 4 16".into());
        let ops =
            std::env::var("BENCH_OPS").unwrap_or_else(|_| "issue-ec issue-rsa sign-ec".into());
        let no_bao = std::env::var("BENCH_NO_BAO").is_ok_and(|v| v == "1");
        let bao = if no_bao { None } else { find_bao() };
        if !no_bao && bao.is_none() {
            bail!(
                "bao (OpenBao) not found: set BAO_BIN, run tests/harness.sh setup, or BENCH_NO_BAO=1"
            );
        }
        Ok(Self {
            secs: env_f64("BENCH_SECS", 5.0)?,
            warmup: env_f64("BENCH_WARMUP", 1.0)?,
            conc: conc
                .split_whitespace()
                .map(|c| c.parse().with_context(|| format!("BENCH_CONC: {c:?}")))
                .collect::<Result<_>>()?,
            ops: ops
                .split_whitespace()
                .map(Op::parse)
                .collect::<Result<_>>()?,
            ceiling_secs: env_f64("BENCH_CEILING_SECS", 2.0)?,
            rsa_secs: env_f64("BENCH_RSA_SECS", 6.0)?,
            rsa_cell_secs: env_f64("BENCH_RSA_CELL_SECS", 15.0)?,
            client_threads: env_f64("BENCH_CLIENT_THREADS", cores() as f64)?.max(1.0) as usize,
            bao,
            keep: std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1"),
        })
    }
}

// ------------------------------------------------------------- crypto ceiling

#[derive(Debug)]
struct CeilingLine {
    what: String,
    ops: u64,
    secs: f64,
    /// p50 / p99 per operation, ms (only for slow operations).
    pcts: Option<(f64, f64)>,
}

impl CeilingLine {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// Run `f` in a loop on this thread for `secs` (at least `min` times).
fn time_loop(
    what: &str,
    secs: f64,
    min: u64,
    record: bool,
    mut f: impl FnMut() -> Result<()>,
) -> Result<CeilingLine> {
    // Warm caches and lazy initialisation first.
    f()?;
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let mut n = 0u64;
    let mut each = Vec::new();
    while start.elapsed() < limit || n < min {
        let t = Instant::now();
        f()?;
        if record {
            each.push(t.elapsed().as_secs_f64() * 1e3);
        }
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let pcts = record.then(|| {
        each.sort_by(f64::total_cmp);
        (pct_f(&each, 50.0), pct_f(&each, 99.0))
    });
    Ok(CeilingLine {
        what: what.into(),
        ops: n,
        secs,
        pcts,
    })
}

fn pct_f(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Ceiling {
    lines: Vec<CeilingLine>,
    /// ops/s for the crypto of one `issue` ec (keygen + parse + one signature).
    ec_issue_crypto: f64,
    /// ops/s for a full in-process issue with rcgen.
    ec_issue_full: f64,
    /// ops/s for the crypto of one `sign` (verify + sign).
    ec_sign_crypto: f64,
    /// RSA-2048 keys/s.
    rsa_keygen: f64,
}

fn ceiling(s: &Settings) -> Result<Ceiling> {
    use ring::rand::SystemRandom;
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
        UnparsedPublicKey,
    };
    let rng = SystemRandom::new();
    let secs = s.ceiling_secs;
    let alg = &ECDSA_P256_SHA256_ASN1_SIGNING;
    // A TBSCertificate-sized message.
    let msg = vec![0x5au8; 420];
    let mut lines = Vec::new();

    lines.push(time_loop(
        "ring P-256 key generation",
        secs,
        1,
        false,
        || {
            EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| anyhow!("keygen"))?;
            Ok(())
        },
    )?);

    let ca_doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| anyhow!("keygen"))?;
    let ca = EcdsaKeyPair::from_pkcs8(alg, ca_doc.as_ref(), &rng).map_err(|_| anyhow!("ca"))?;
    lines.push(time_loop("ring P-256 ECDSA sign", secs, 1, false, || {
        ca.sign(&rng, &msg).map_err(|_| anyhow!("sign"))?;
        Ok(())
    })?);

    lines.push(time_loop(
        "issue crypto: P-256 keygen + load + 1 ECDSA sign (ring)",
        secs,
        1,
        false,
        || {
            let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| anyhow!("keygen"))?;
            let leaf =
                EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).map_err(|_| anyhow!("load"))?;
            std::hint::black_box(leaf.public_key().as_ref());
            ca.sign(&rng, &msg).map_err(|_| anyhow!("sign"))?;
            Ok(())
        },
    )?);
    let ec_issue_crypto = lines[2].per_sec();

    // A full issue in process with rcgen: key + X.509 (SAN, KU, EKU, SKI, AKI) + CA signature + PEM.
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ceiling CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let full = time_loop(
        "full issue in process: rcgen P-256 leaf + X.509 + sign + PEM",
        secs,
        1,
        false,
        || {
            let key = rcgen::KeyPair::generate()?;
            let mut p = rcgen::CertificateParams::new(vec![CN.to_string()])?;
            p.distinguished_name.push(rcgen::DnType::CommonName, CN);
            p.key_usages = vec![
                rcgen::KeyUsagePurpose::DigitalSignature,
                rcgen::KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            p.use_authority_key_identifier_extension = true;
            let cert = p.signed_by(&key, &issuer)?;
            std::hint::black_box((cert.pem(), key.serialize_pem()));
            Ok(())
        },
    )?;
    let ec_issue_full = full.per_sec();
    lines.push(full);

    let leaf_doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| anyhow!("keygen"))?;
    let leaf =
        EcdsaKeyPair::from_pkcs8(alg, leaf_doc.as_ref(), &rng).map_err(|_| anyhow!("load"))?;
    let csr_sig = leaf.sign(&rng, &msg).map_err(|_| anyhow!("sign"))?;
    let pubkey = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, leaf.public_key().as_ref());
    let verify_sign = time_loop(
        "sign crypto: P-256 verify (CSR) + 1 ECDSA sign (ring)",
        secs,
        1,
        false,
        || {
            pubkey
                .verify(&msg, csr_sig.as_ref())
                .map_err(|_| anyhow!("verify"))?;
            ca.sign(&rng, &msg).map_err(|_| anyhow!("sign"))?;
            Ok(())
        },
    )?;
    let ec_sign_crypto = verify_sign.per_sec();
    lines.push(verify_sign);

    let rsa_line = time_loop(
        "RSA-2048 key generation (RustCrypto rsa 0.10, release)",
        s.rsa_secs,
        8,
        true,
        || {
            std::hint::black_box(rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)?);
            Ok(())
        },
    )?;
    let rsa_keygen = rsa_line.per_sec();
    lines.push(rsa_line);

    // RSA signing in ring, with a key from the generator above.
    let rsa_key = {
        use rsa::pkcs8::EncodePrivateKey as _;
        let k = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)?;
        let der = k.to_pkcs8_der()?;
        ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes()).map_err(|e| anyhow!("{e}"))?
    };
    let mut sig = vec![0u8; rsa_key.public().modulus_len()];
    lines.push(time_loop(
        "RSA-2048 PKCS#1 v1.5 SHA-256 sign (ring)",
        secs,
        1,
        false,
        || {
            rsa_key
                .sign(&ring::signature::RSA_PKCS1_SHA256, &rng, &msg, &mut sig)
                .map_err(|_| anyhow!("rsa sign"))?;
            Ok(())
        },
    )?);

    Ok(Ceiling {
        lines,
        ec_issue_crypto,
        ec_issue_full,
        ec_sign_crypto,
        rsa_keygen,
    })
}

// -------------------------------------------------------------- processes

/// A child process killed (SIGKILL) and reaped on drop.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind((HOST, 0))?.local_addr()?.port())
}

/// A child's environment without Vault/OpenBao/AWS settings from ours.
fn clean_command(bin: &Path, log: &Path) -> Result<Command> {
    let out = std::fs::File::create(log)?;
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("VAULT_") || k.starts_with("BAO_") || k.starts_with("AWS_") {
            cmd.env_remove(&*k);
        }
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    Ok(cmd)
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

struct Server {
    name: &'static str,
    base: String,
    ca_pem: Vec<u8>,
    token: String,
    proc: Proc,
    log: PathBuf,
}

impl Server {
    fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    fn client(&self) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&self.ca_pem)?)
            .http1_only()
            .timeout(Duration::from_secs(120))
            .build()?)
    }

    async fn call(
        &self,
        c: &reqwest::Client,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut r = c.request(
            reqwest::Method::from_bytes(method.as_bytes())?,
            format!("{}/v1/{path}", self.base),
        );
        if !self.token.is_empty() {
            r = r.header("X-Vault-Token", &self.token);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Wait until the listener answers at all (any status).
    async fn wait_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.proc.child.try_wait()? {
                bail!("{} exited ({st}); log:\n{}", self.name, tail(&self.log));
            }
            if !self.ca_pem.is_empty()
                && let Ok(c) = self.client()
                && self.call(&c, "GET", "sys/seal-status", None).await.is_ok()
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{} not listening after 60 s; log:\n{}",
                self.name,
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Initialise with one share, unseal, wait until active, keep the root token.
    async fn init_unseal(&mut self) -> Result<()> {
        let c = self.client()?;
        let (s, v) = self
            .call(
                &c,
                "PUT",
                "sys/init",
                Some(&json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await?;
        ensure!(s == 200, "{}: sys/init {s}: {v}", self.name);
        let key = v["keys"][0]
            .as_str()
            .ok_or_else(|| anyhow!("{}: no unseal key", self.name))?
            .to_string();
        let token = v["root_token"]
            .as_str()
            .ok_or_else(|| anyhow!("{}: no root token", self.name))?
            .to_string();
        let (s, v) = self
            .call(&c, "PUT", "sys/unseal", Some(&json!({"key": key})))
            .await?;
        ensure!(
            s == 200 && v["sealed"] == false,
            "{}: unseal {s}: {v}",
            self.name
        );
        self.token = token;
        // OpenBao on raft is a standby until it elects itself leader.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (s, _) = self.call(&c, "GET", "sys/health", None).await?;
            if s == 200 {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{}: not active after 60 s (health {s})",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Mount, root CA and roles: the same requests on both servers.
    async fn setup_pki(&self) -> Result<()> {
        let c = self.client()?;
        let steps: [(&str, Value); 5] = [
            (
                "sys/mounts/pki",
                json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}),
            ),
            (
                "pki/root/generate/internal",
                json!({"common_name": "bench root", "key_type": "ec", "key_bits": 256, "ttl": "87600h"}),
            ),
            (
                "pki/roles/ec",
                json!({"allow_any_name": true, "key_type": "ec", "key_bits": 256, "ttl": "72h", "max_ttl": "72h"}),
            ),
            (
                "pki/roles/rsa",
                json!({"allow_any_name": true, "key_type": "rsa", "key_bits": 2048, "ttl": "72h", "max_ttl": "72h"}),
            ),
            (
                "pki/roles/sign",
                json!({"allow_any_name": true, "key_type": "any", "ttl": "72h", "max_ttl": "72h"}),
            ),
        ];
        for (path, body) in &steps {
            let (s, v) = self.call(&c, "POST", path, Some(body)).await?;
            ensure!(
                (200..300).contains(&s),
                "{}: POST {path} {s}: {v}",
                self.name
            );
        }
        Ok(())
    }

    /// One request of `op`, checked: 200, a certificate, the expected key type.
    async fn probe(&self, op: Op, csr: &str) -> Result<()> {
        let c = self.client()?;
        let (s, v) = self
            .call(&c, "POST", op.path(), Some(&op.body(csr)))
            .await?;
        ensure!(s == 200, "{}: {} {s}: {v}", self.name, op.path());
        let d = &v["data"];
        let cert = d["certificate"].as_str().unwrap_or_default();
        ensure!(
            cert.starts_with("-----BEGIN CERTIFICATE-----"),
            "{}: {} gave no certificate: {v}",
            self.name,
            op.path()
        );
        let want = match op {
            Op::IssueEc => Some("ec"),
            Op::IssueRsa => Some("rsa"),
            Op::SignEc => None,
        };
        ensure!(
            d["private_key_type"].as_str() == want,
            "{}: {}: private_key_type {} (want {want:?})",
            self.name,
            op.path(),
            d["private_key_type"]
        );
        Ok(())
    }
}

/// `--storage` for pki-server: `file:<dir>/data`, or `BENCH_PKI_STORAGE`
/// (`memory` shows what the rest of the request costs without durable storage;
/// it is not a fair comparison with OpenBao, which always stores).
fn storage_arg(data: &Path) -> String {
    std::env::var("BENCH_PKI_STORAGE").unwrap_or_else(|_| format!("file:{}", data.display()))
}

async fn start_pki_server(dir: &Path) -> Result<Server> {
    let port = free_port()?;
    let log = dir.join("pki-server.log");
    let tls = dir.join("tls");
    let data = dir.join("data");
    let child = clean_command(Path::new(env!("CARGO_BIN_EXE_pki-server")), &log)?
        .args(["server", "--listen", &format!("{HOST}:{port}")])
        .arg("--storage")
        .arg(storage_arg(&data))
        .arg("--tls-dir")
        .arg(&tls)
        .spawn()
        .context("starting pki-server")?;
    let mut s = Server {
        name: PKI_SERVER,
        base: format!("https://{HOST}:{port}"),
        ca_pem: Vec::new(),
        token: String::new(),
        proc: Proc { child },
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let ca = tls.join("ca.pem");
    while !std::fs::metadata(&ca).is_ok_and(|m| m.len() > 0) {
        if let Some(st) = s.proc.child.try_wait()? {
            bail!("pki-server exited ({st}); log:\n{}", tail(&s.log));
        }
        ensure!(Instant::now() < deadline, "pki-server wrote no ca.pem");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.ca_pem = std::fs::read(&ca)?;
    s.wait_listening().await?;
    Ok(s)
}

/// A listener CA and a certificate for 127.0.0.1 for OpenBao, made with rcgen.
fn bao_tls(dir: &Path) -> Result<(Vec<u8>, PathBuf, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir)?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench openbao listener CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let mut p = rcgen::CertificateParams::new(vec![HOST.to_string(), "localhost".to_string()])?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, HOST.to_string());
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = p.signed_by(&leaf_key, &ca)?;
    let cert = dir.join("leaf.pem");
    let key = dir.join("leaf.key");
    std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)?;
    std::io::Write::write_all(&mut f, leaf_key.serialize_pem().as_bytes())?;
    Ok((ca.pem().into_bytes(), cert, key))
}

async fn start_bao(bin: &Path, dir: &Path) -> Result<Server> {
    let d = dir.join("bao");
    let raft = d.join("raft");
    std::fs::create_dir_all(&raft)?;
    let (ca_pem, cert, key) = bao_tls(&d.join("tls"))?;
    let port = free_port()?;
    let mut cport = free_port()?;
    while cport == port {
        cport = free_port()?;
    }
    // A JSON string is a valid HCL string.
    let q = |p: &Path| serde_json::to_string(&p.display().to_string());
    let cfg = d.join("config.hcl");
    std::fs::write(
        &cfg,
        format!(
            r#"storage "raft" {{
  path    = {raft}
  node_id = "bench"
}}

listener "tcp" {{
  address         = "{HOST}:{port}"
  cluster_address = "{HOST}:{cport}"
  tls_cert_file   = {cert}
  tls_key_file    = {key}
}}

api_addr      = "https://{HOST}:{port}"
cluster_addr  = "https://{HOST}:{cport}"
disable_mlock = true
ui            = false
"#,
            raft = q(&raft)?,
            cert = q(&cert)?,
            key = q(&key)?,
        ),
    )?;
    let log = d.join("server.log");
    let child = clean_command(bin, &log)?
        .arg("server")
        .arg(format!("-config={}", cfg.display()))
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut s = Server {
        name: OPENBAO,
        base: format!("https://{HOST}:{port}"),
        ca_pem,
        token: String::new(),
        proc: Proc { child },
        log,
    };
    s.wait_listening().await?;
    Ok(s)
}

/// A P-256 CSR for `sign`.
fn make_csr() -> Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let mut p = rcgen::CertificateParams::new(vec![CN.to_string()])?;
    p.distinguished_name.push(rcgen::DnType::CommonName, CN);
    Ok(p.serialize_request(&key)?.pem()?)
}

/// Ask ext4 to place each run's directory in a fresh block group (the Orlov
/// allocator spreads the children of a `TOPDIR` folder, `chattr +T`), so the
/// inodes the previous run freed on clean-up do not slow this run's file
/// creations (see `fs_probe`). Best effort: other file systems ignore it.
fn spread_subdirs(dir: &Path) {
    use rustix::fs::{IFlags, ioctl_getflags, ioctl_setflags};
    if let Ok(f) = std::fs::File::open(dir)
        && let Ok(flags) = ioctl_getflags(&f)
        && !flags.contains(IFlags::TOPDIR)
    {
        let _ = ioctl_setflags(&f, flags | IFlags::TOPDIR);
    }
}

/// Mean µs to create (and write 1 KiB to) a new file next to the data
/// directories: a measure of the file system's state, not of any server.
fn fs_probe(dir: &Path) -> Result<f64> {
    let d = dir.join("fs-probe");
    std::fs::create_dir(&d)?;
    let n = 500;
    let start = Instant::now();
    for i in 0..n {
        std::fs::write(d.join(format!("f{i}")), [0u8; 1024])?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(n))
}

// ----------------------------------------------------------------- CPU use

/// Clock ticks per second for /proc (USER_HZ).
fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in ticks.
fn proc_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// Busy ticks of the whole machine (all cores).
fn machine_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    stat.lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            [0usize, 1, 2, 5, 6, 7]
                .iter()
                .filter_map(|&i| v.get(i))
                .sum()
        })
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy)]
struct CpuSnap {
    server: u64,
    me: u64,
    machine: u64,
}

fn snap(pid: u32) -> CpuSnap {
    CpuSnap {
        server: proc_ticks(&pid.to_string()),
        me: proc_ticks("self"),
        machine: machine_ticks(),
    }
}

// ------------------------------------------------------------------- load

#[derive(Debug)]
struct Cell {
    server: &'static str,
    op: Op,
    conc: usize,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    p50: f64,
    p99: f64,
    max: f64,
    server_cpu_s: f64,
    client_cpu_s: f64,
    bg_cores: f64,
}

impl Cell {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    fn cpu_ms_per_req(&self) -> f64 {
        self.server_cpu_s * 1e3 / self.ok.max(1) as f64
    }
}

struct Worker {
    lat_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

async fn worker(
    client: reqwest::Client,
    url: Arc<str>,
    token: Arc<str>,
    body: Arc<str>,
    measure_from: Instant,
    end: Instant,
) -> Worker {
    let mut w = Worker {
        lat_us: Vec::with_capacity(4096),
        errors: 0,
        first_error: None,
    };
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let res = client
            .post(&*url)
            .header("X-Vault-Token", &*token)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        let err = match res {
            Ok(resp) => {
                let status = resp.status();
                match resp.bytes().await {
                    Ok(_) if status == 200 => None,
                    Ok(b) => Some(format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&b[..b.len().min(300)])
                    )),
                    Err(e) => Some(e.to_string()),
                }
            }
            Err(e) => Some(e.to_string()),
        };
        let t1 = Instant::now();
        // Count what completes inside the window, whenever it started (slow
        // RSA requests straddle its edges); no new request starts after it.
        if t1 >= measure_from && t1 <= end {
            match err {
                None => w.lat_us.push((t1 - t0).as_micros() as u64),
                Some(e) => {
                    w.errors += 1;
                    w.first_error.get_or_insert(e);
                }
            }
        } else if err.is_some() {
            // Failing during warm-up: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    w
}

fn pct_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e3
}

async fn run_cell(
    s: &Settings,
    server: &Server,
    op: Op,
    conc: usize,
    csr: &str,
    tck: f64,
) -> Result<Cell> {
    let url: Arc<str> = format!("{}/v1/{}", server.base, op.path()).into();
    let token: Arc<str> = server.token.as_str().into();
    let body: Arc<str> = op.body(csr).to_string().into();
    let secs = if op == Op::IssueRsa {
        s.secs.max(s.rsa_cell_secs)
    } else {
        s.secs
    };
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(s.warmup);
    let end = measure_from + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(conc);
    for _ in 0..conc {
        tasks.push(tokio::spawn(worker(
            server.client()?,
            url.clone(),
            token.clone(),
            body.clone(),
            measure_from,
            end,
        )));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let c0 = snap(server.pid());
    tokio::time::sleep_until(end.into()).await;
    let c1 = snap(server.pid());
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let w = t.await?;
        lat.extend(w.lat_us);
        errors += w.errors;
        if first_error.is_none() {
            first_error = w.first_error;
        }
    }
    let secs = (end - measure_from).as_secs_f64();
    lat.sort_unstable();
    let server_cpu_s = (c1.server - c0.server) as f64 / tck;
    let client_cpu_s = (c1.me - c0.me) as f64 / tck;
    let machine_s = (c1.machine - c0.machine) as f64 / tck;
    Ok(Cell {
        server: server.name,
        op,
        conc,
        ok: lat.len() as u64,
        errors,
        first_error,
        secs,
        p50: pct_us(&lat, 50.0),
        p99: pct_us(&lat, 99.0),
        max: lat.last().map_or(f64::NAN, |&m| m as f64 / 1e3),
        server_cpu_s,
        client_cpu_s,
        bg_cores: ((machine_s - server_cpu_s - client_cpu_s) / secs).max(0.0),
    })
}

// ----------------------------------------------------------------- report

fn fmt_rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn fmt_ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn machine_info() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{} cores, \"{cpu}\", Linux {kernel}", cores())
}

fn version_of(bin: &Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn report_ceiling(c: &Ceiling) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Single-core crypto ceiling (this process, one thread, before the servers start)\n"
    );
    let _ = writeln!(out, "| measure | per second | per op |");
    let _ = writeln!(out, "| --- | ---: | ---: |");
    for l in &c.lines {
        let per = match l.pcts {
            Some((p50, p99)) => format!(
                "mean {} ms, p50 {} ms, p99 {} ms (n={})",
                fmt_ms(1e3 / l.per_sec()),
                fmt_ms(p50),
                fmt_ms(p99),
                l.ops
            ),
            None => format!("{:.1} µs", 1e6 / l.per_sec()),
        };
        let _ = writeln!(out, "| {} | {} | {per} |", l.what, fmt_rate(l.per_sec()));
    }
    out
}

fn report_cells(cells: &[Cell], ceiling: &Ceiling, cores: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Throughput and latency (closed loop, HTTP/1.1 keep-alive over TLS, certificates stored)\n"
    );
    let _ = writeln!(
        out,
        "| op | conc | server | req/s | p50 ms | p99 ms | max ms | errors | server CPU ms/req | req/s per core (÷{cores}) | ours / bao | bg cores |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in cells {
        let ratio = if c.server == PKI_SERVER {
            cells
                .iter()
                .find(|o| o.server == OPENBAO && o.op == c.op && o.conc == c.conc)
                .map(|o| format!("**{:.1}x**", c.rps() / o.rps()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {} | {ratio} | {:.2} |",
            c.op.name(),
            c.conc,
            c.server,
            fmt_rate(c.rps()),
            fmt_ms(c.p50),
            fmt_ms(c.p99),
            fmt_ms(c.max),
            c.errors,
            c.cpu_ms_per_req(),
            fmt_rate(c.rps() / cores as f64),
            c.bg_cores,
        );
    }
    let _ = writeln!(out);
    for c in cells.iter().filter(|c| c.errors > 0) {
        let _ = writeln!(
            out,
            "- {} {} conc {}: {} errors, first: {}",
            c.server,
            c.op.name(),
            c.conc,
            c.errors,
            c.first_error.as_deref().unwrap_or("")
        );
    }

    // Per-core figures against the ceiling.
    let _ = writeln!(out, "\n### pki-server per core against the ceiling\n");
    let _ = writeln!(
        out,
        "| op | conc | req/s per core (÷{cores}) | ÷ crypto ceiling | req per server-CPU-second | ÷ crypto ceiling | client cores |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for c in cells.iter().filter(|c| c.server == PKI_SERVER) {
        let ceil = match c.op {
            Op::IssueEc => ceiling.ec_issue_crypto,
            Op::IssueRsa => ceiling.rsa_keygen,
            Op::SignEc => ceiling.ec_sign_crypto,
        };
        let per_core = c.rps() / cores as f64;
        let per_cpu_s = 1e3 / c.cpu_ms_per_req();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} % | {} | {:.1} % | {:.2} |",
            c.op.name(),
            c.conc,
            fmt_rate(per_core),
            100.0 * per_core / ceil,
            fmt_rate(per_cpu_s),
            100.0 * per_cpu_s / ceil,
            c.client_cpu_s / c.secs,
        );
    }
    let _ = writeln!(
        out,
        "\nCeilings used: issue ec = keygen + load + 1 signature ({} /s), full in-process issue with rcgen {} /s; sign = verify + sign ({} /s); issue rsa = RSA-2048 keygen ({} /s).",
        fmt_rate(ceiling.ec_issue_crypto),
        fmt_rate(ceiling.ec_issue_full),
        fmt_rate(ceiling.ec_sign_crypto),
        fmt_rate(ceiling.rsa_keygen),
    );

    // The acceptance check.
    let ours = cells
        .iter()
        .find(|c| c.server == PKI_SERVER && c.op == Op::IssueEc && c.conc == 16);
    let bao = cells
        .iter()
        .find(|c| c.server == OPENBAO && c.op == Op::IssueEc && c.conc == 16);
    if let (Some(o), Some(b)) = (ours, bao) {
        let ratio = o.rps() / b.rps();
        let pass = ratio >= 5.0 && o.p99 < 10.0 && o.errors == 0;
        let _ = writeln!(
            out,
            "\nTarget (issue ec P-256, conc 16, stored): ratio {ratio:.1}x (want >= 5x), p99 {} ms (want < 10 ms): **{}**",
            fmt_ms(o.p99),
            if pass { "PASS" } else { "FAIL" }
        );
    }
    out
}

// ------------------------------------------------------------------- main

async fn run(s: Settings, dir: &Path, ceiling: Ceiling) -> Result<()> {
    let tck = clk_tck();
    eprintln!("# starting servers in {}", dir.display());
    let mut servers = vec![start_pki_server(dir).await?];
    if let Some(bin) = &s.bao {
        servers.push(start_bao(bin, dir).await?);
    }
    for srv in &mut servers {
        srv.init_unseal().await?;
        srv.setup_pki().await?;
    }
    let csr = make_csr()?;
    for srv in &servers {
        for &op in &s.ops {
            srv.probe(op, &csr).await?;
        }
    }
    let mut cells = Vec::new();
    for &op in &s.ops {
        for &conc in &s.conc {
            for srv in &servers {
                let c = run_cell(&s, srv, op, conc, &csr, tck).await?;
                eprintln!(
                    "# {:<10} {:<15} conc {:>2}: {:>8} req/s  p50 {:>7} ms  p99 {:>7} ms  errors {}  srv {:.3} ms CPU/req  bg {:.2}",
                    c.server,
                    c.op.name(),
                    c.conc,
                    fmt_rate(c.rps()),
                    fmt_ms(c.p50),
                    fmt_ms(c.p99),
                    c.errors,
                    c.cpu_ms_per_req(),
                    c.bg_cores
                );
                cells.push(c);
            }
        }
    }
    println!("{}", report_cells(&cells, &ceiling, cores()));
    println!("{}", report_ceiling(&ceiling));
    drop(servers);
    Ok(())
}

fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = Settings::from_env()?;
    let parent = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&parent)?;
    spread_subdirs(&parent);
    let dir = tempfile::Builder::new()
        .prefix("pki-bench-")
        .tempdir_in(&parent)
        .context("temp dir")?;
    let probe = fs_probe(dir.path())?;
    println!("## pki-server vs OpenBao: issue and sign\n");
    println!(
        "- date (UTC): {}",
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    println!("- machine: {}", machine_info());
    println!(
        "- pki-server: {} (release), storage {}",
        version_of(Path::new(env!("CARGO_BIN_EXE_pki-server")), "--version"),
        storage_arg(&dir.path().join("data"))
    );
    if let Some(b) = &s.bao {
        println!(
            "- OpenBao: {} ({}), storage raft",
            version_of(b, "version"),
            b.display()
        );
    }
    println!(
        "- fs probe: {probe:.1} µs per file create (500 files of 1 KiB, no fsync, in the data directory's parent)"
    );
    println!(
        "- cells: {} s measured ({} s for issue rsa) after {} s warm-up, counting requests that complete in the window; concurrency {:?}; load generator: this process, {} tokio threads, one reqwest HTTP/1.1 client per task",
        s.secs,
        s.secs.max(s.rsa_cell_secs),
        s.warmup,
        s.conc,
        s.client_threads
    );
    println!();
    eprintln!("# measuring the crypto ceiling (one thread)");
    let ceiling = ceiling(&s)?;
    let keep = s.keep;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.client_threads)
        .enable_all()
        .build()?;
    // On SIGINT/SIGTERM return an error, so the servers are killed on drop.
    let res = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run(s, dir.path(), ceiling) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            _ = term.recv() => Err(anyhow!("terminated")),
        }
    });
    if keep {
        let kept = dir.keep();
        eprintln!("# kept {}", kept.display());
    }
    res
}
