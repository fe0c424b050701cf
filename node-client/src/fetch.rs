//! Fetch a node role's certificates and write them as one set.
//!
//! A run looks at what is on disk first: a certificate whose key matches, whose
//! names are the ones the profile asks for and which is not yet at its renewal
//! point is kept; the others are requested (a fresh key and a CSR by default;
//! `issue` lets the server make the key). Every request must succeed before
//! anything is written, so a refused run leaves the directory as it was. The
//! whole set (certificates, keys, CA bundles, kubeconfigs, public-key bundle)
//! is then replaced atomically ([`crate::store`]) and each renewed
//! certificate's reload command runs once.

use crate::client::{Client, ClientError, Issued};
use crate::inspect::{self, CertInfo};
use crate::profile::{Node, Request};
use crate::schedule::renew_at;
use crate::store::{self, FileSpec, StoreError};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Output directory.
    pub out: PathBuf,
    /// Let the server generate keys (`issue/<role>`) instead of sending CSRs.
    pub issue: bool,
    /// Requested lifetime (the role's default when None).
    pub ttl: Option<String>,
    /// Request every certificate even when the ones on disk are good.
    pub force: bool,
    /// Renew at this fraction of the lifetime.
    pub fraction: f64,
    /// ± this fraction of the lifetime, per certificate.
    pub jitter: f64,
    /// Run reload commands (false: only report them).
    pub run_reload: bool,
}

impl Options {
    /// Defaults for `out`: sign, role TTLs, renew at 2/3 ± 5%.
    pub fn new(out: PathBuf) -> Self {
        Self {
            out,
            issue: false,
            ttl: None,
            force: false,
            fraction: 2.0 / 3.0,
            jitter: 0.05,
            run_reload: true,
        }
    }
}

/// Why a run failed, by step (the CLI maps these to exit codes).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server refused or stayed unavailable for one certificate.
    #[error("{cert}: {source}")]
    Request {
        /// `mount/role`.
        cert: String,
        /// What the client saw.
        source: ClientError,
    },
    /// Writing the files failed.
    #[error("writing certificates: {0}")]
    Write(#[from] StoreError),
    /// Local trouble: a key, an owner, an answer that makes no sense.
    #[error("{0}")]
    Local(String),
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Certificates (profile `mount/role`) requested this run.
    pub renewed: Vec<String>,
    /// Why each was requested.
    pub reasons: Vec<String>,
    /// Reload commands that failed (the files are written regardless).
    pub reload_failures: Vec<String>,
    /// Earliest renewal point of the set now on disk (Unix seconds).
    pub next_renewal: Option<i64>,
}

/// When `info` is due: its renewal point with a per-certificate jitter that is
/// stable across runs (derived from the serial).
pub fn due_at(info: &CertInfo, fraction: f64, jitter: f64) -> i64 {
    let h = ring::digest::digest(&ring::digest::SHA256, info.serial.as_bytes());
    let r = f64::from(u16::from_le_bytes([h.as_ref()[0], h.as_ref()[1]])) / 65536.0;
    renew_at(info.not_before, info.not_after, fraction, jitter, r)
}

/// Why `req` must be requested again, or None when the files on disk do.
pub fn needs(req: &Request, out: &Path, now: i64, opts: &Options) -> Option<String> {
    let Some(cert) = store::read(out, &req.cert_file()) else {
        return Some("no certificate".into());
    };
    let Some(key) = store::read(out, &req.key_file()).map(Zeroizing::new) else {
        return Some("no key".into());
    };
    let Some(info) = inspect::cert_info(&cert) else {
        return Some("certificate does not parse".into());
    };
    if !inspect::key_matches(&cert, &key) {
        return Some("key does not match the certificate".into());
    }
    if info.common_name != req.common_name
        || set(&info.dns_names) != set(&req.alt_names)
        || set(&info.ip_addresses) != set(&req.ip_sans)
    {
        return Some("names differ from the profile".into());
    }
    let at = due_at(&info, opts.fraction, opts.jitter);
    if now >= at {
        return Some(format!(
            "due for renewal (expires in {}s)",
            info.not_after - now
        ));
    }
    for f in [&req.ca_file, &req.public_key_bundle]
        .into_iter()
        .flatten()
        .chain(req.kubeconfig.as_ref().map(|k| &k.file))
    {
        if store::read(out, f).is_none() {
            return Some(format!("{f} missing"));
        }
    }
    None
}

fn set<T: Ord + Clone>(v: &[T]) -> BTreeSet<T> {
    v.iter().cloned().collect()
}

/// The current time, Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Got {
    cert: String,
    key: Zeroizing<String>,
    ca: String,
}

fn ca_bundle(i: &Issued) -> String {
    let mut seen = BTreeSet::new();
    let mut out = String::new();
    for pem in std::iter::once(&i.issuing_ca).chain(i.ca_chain.iter()) {
        let pem = pem.trim();
        if !pem.is_empty() && pem != i.certificate.trim() && seen.insert(pem.to_string()) {
            out.push_str(pem);
            out.push('\n');
        }
    }
    out
}

async fn obtain(client: &Client, req: &Request, opts: &Options) -> Result<Got, FetchError> {
    let mut params = json!({
        "common_name": req.common_name,
        "alt_names": req.alt_names.join(","),
        "ip_sans": req.ip_sans.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","),
        "exclude_cn_from_sans": true,
    });
    if let Some(t) = &opts.ttl {
        params["ttl"] = json!(t);
    }
    let wrap = |source| FetchError::Request {
        cert: req.cert.clone(),
        source,
    };
    let (issued, key) = if opts.issue {
        params["private_key_format"] = json!("pkcs8");
        let i = client
            .issue(&req.mount, &req.role, &params)
            .await
            .map_err(wrap)?;
        let key = i.private_key.clone().ok_or_else(|| {
            FetchError::Local(format!("{}: the server returned no private key", req.cert))
        })?;
        (i, key)
    } else {
        let (csr, key) =
            crate::client::csr(&req.common_name, &req.alt_names, &req.ip_sans).map_err(wrap)?;
        let i = client
            .sign(&req.mount, &req.role, &csr, &params)
            .await
            .map_err(wrap)?;
        (i, key)
    };
    if !inspect::key_matches(issued.certificate.as_bytes(), key.as_bytes()) {
        return Err(FetchError::Local(format!(
            "{}: the certificate returned is not for our key",
            req.cert
        )));
    }
    let ca = ca_bundle(&issued);
    let mut cert = issued.certificate.trim().to_string();
    cert.push('\n');
    Ok(Got { cert, key, ca })
}

/// The public keys of the mount's unexpired, unrevoked certificates named
/// like `req`, plus `own` (PEM `PUBLIC KEY` blocks, sorted).
async fn public_key_bundle(
    client: &Client,
    req: &Request,
    own: &str,
    now: i64,
) -> Result<String, FetchError> {
    let wrap = |source| FetchError::Request {
        cert: req.cert.clone(),
        source,
    };
    let revoked: BTreeSet<String> = client
        .list(&format!("{}/certs/revoked", req.mount))
        .await
        .map_err(wrap)?
        .into_iter()
        .collect();
    let mut keys = BTreeSet::new();
    if let Some(i) = inspect::cert_info(own.as_bytes()) {
        keys.insert(inspect::pem_encode("PUBLIC KEY", &i.spki));
    }
    for serial in client
        .list(&format!("{}/certs", req.mount))
        .await
        .map_err(wrap)?
    {
        if revoked.contains(&serial) {
            continue;
        }
        let v = client
            .read(&format!("{}/cert/{serial}", req.mount))
            .await
            .map_err(wrap)?;
        let Some(pem) = v["data"]["certificate"].as_str() else {
            continue;
        };
        if let Some(i) = inspect::cert_info(pem.as_bytes())
            && i.common_name == req.common_name
            && i.not_after > now
        {
            keys.insert(inspect::pem_encode("PUBLIC KEY", &i.spki));
        }
    }
    Ok(keys.into_iter().collect())
}

/// A kubeconfig (JSON, which every YAML reader accepts) that names the
/// certificate files in place, so renewals need no rewrite of it.
pub fn kubeconfig(node: &Node, req: &Request, server: &str) -> String {
    let dir = Path::new(&node.pki_dir);
    let path = |f: &str| dir.join(f).display().to_string();
    let user = req.common_name.clone();
    let v = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": node.cluster, "cluster": {
            "server": server,
            "certificate-authority": path(req.ca_file.as_deref().unwrap_or(crate::profile::DEFAULT_CA_FILE)),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate": path(&req.cert_file()),
            "client-key": path(&req.key_file()),
        }}],
        "contexts": [{"name": "default", "context": {"cluster": node.cluster, "user": user}}],
        "current-context": "default",
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// A user or group name (or number) from /etc/passwd or /etc/group.
fn resolve(db: &str, name: &str) -> Result<u32, FetchError> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let text =
        std::fs::read_to_string(db).map_err(|e| FetchError::Local(format!("reading {db}: {e}")))?;
    text.lines()
        .filter_map(|l| {
            let mut it = l.split(':');
            Some((it.next()?, it.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, id)| id.parse().ok())
        .ok_or_else(|| FetchError::Local(format!("no such {db} entry: {name:?}")))
}

fn owner(req: &Request) -> Result<(Option<u32>, Option<u32>), FetchError> {
    Ok((
        req.owner
            .as_deref()
            .map(|o| resolve("/etc/passwd", o))
            .transpose()?,
        req.group
            .as_deref()
            .map(|g| resolve("/etc/group", g))
            .transpose()?,
    ))
}

fn file(
    name: &str,
    contents: impl Into<Vec<u8>>,
    mode: u32,
    own: (Option<u32>, Option<u32>),
) -> FileSpec {
    FileSpec {
        name: name.to_string(),
        contents: contents.into(),
        mode,
        owner: own,
    }
}

/// One run over the role's requests.
pub async fn run(
    client: &Client,
    node: &Node,
    reqs: &[Request],
    opts: &Options,
) -> Result<Outcome, FetchError> {
    let now = now();
    let mut outcome = Outcome::default();
    let mut due = Vec::new();
    for r in reqs {
        let why = if opts.force {
            Some("--force".to_string())
        } else {
            needs(r, &opts.out, now, opts)
        };
        if let Some(why) = why {
            outcome.reasons.push(format!("{}: {why}", r.cert));
            // Reload only what a running service may have been using.
            let replaced = store::read(&opts.out, &r.cert_file()).is_some();
            due.push((r, replaced));
        }
    }
    if due.is_empty() {
        outcome.next_renewal = next_renewal(reqs, &opts.out, opts);
        return Ok(outcome);
    }
    // Everything requested before anything is written.
    let mut got: BTreeMap<String, Got> = BTreeMap::new();
    for (r, _) in &due {
        tracing::info!(cert = %r.cert, mount = %r.mount, "requesting");
        got.insert(r.file.clone(), obtain(client, r, opts).await?);
    }
    let mut files: Vec<FileSpec> = Vec::new();
    let mut cas: BTreeMap<String, (bool, String)> = BTreeMap::new();
    for r in reqs {
        let own = owner(r)?;
        let (cert, key, ca, fresh) = match got.get(&r.file) {
            Some(g) => (
                g.cert.clone(),
                g.key.as_bytes().to_vec(),
                Some(g.ca.clone()),
                true,
            ),
            None => {
                let read = |n: &str| {
                    store::read(&opts.out, n)
                        .ok_or_else(|| FetchError::Local(format!("{n} vanished during the run")))
                };
                let cert = String::from_utf8_lossy(&read(&r.cert_file())?).into_owned();
                let ca = r
                    .ca_file
                    .as_deref()
                    .and_then(|f| store::read(&opts.out, f))
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
                (cert, read(&r.key_file())?, ca, false)
            }
        };
        if let (Some(f), Some(ca)) = (&r.ca_file, ca) {
            let e = cas.entry(f.clone()).or_insert((fresh, ca.clone()));
            if fresh && !e.0 {
                *e = (true, ca);
            }
        }
        if let Some(k) = &r.kubeconfig {
            files.push(file(&k.file, kubeconfig(node, r, &k.server), 0o600, own));
        }
        if let Some(b) = &r.public_key_bundle {
            let bundle = public_key_bundle(client, r, &cert, now).await?;
            files.push(file(b, bundle, 0o644, (None, None)));
        }
        files.push(file(&r.cert_file(), cert, 0o644, (None, None)));
        files.push(file(&r.key_file(), key, r.key_mode, own));
    }
    for (name, (_, ca)) in cas {
        files.push(file(&name, ca, 0o644, (None, None)));
    }
    store::write_set(&opts.out, &files)?;
    // Key material in `files` is dropped here; zero it first.
    for f in &mut files {
        zeroize::Zeroize::zeroize(&mut f.contents);
    }
    let mut ran = BTreeSet::new();
    for (r, replaced) in &due {
        outcome.renewed.push(r.cert.clone());
        if let Some(cmd) = &r.reload
            && *replaced
            && ran.insert(cmd.clone())
        {
            if !opts.run_reload {
                continue;
            }
            if let Err(e) = reload(cmd).await {
                tracing::warn!(command = %cmd, error = %e, "reload failed");
                outcome.reload_failures.push(format!("{cmd}: {e}"));
            }
        }
    }
    outcome.next_renewal = next_renewal(reqs, &opts.out, opts);
    Ok(outcome)
}

/// The earliest renewal point of the certificates on disk.
pub fn next_renewal(reqs: &[Request], out: &Path, opts: &Options) -> Option<i64> {
    reqs.iter()
        .filter_map(|r| store::read(out, &r.cert_file()))
        .filter_map(|c| inspect::cert_info(&c))
        .map(|i| due_at(&i, opts.fraction, opts.jitter))
        .min()
}

/// Run `cmd` with `sh -c`, two minutes at most.
pub async fn reload(cmd: &str) -> Result<(), String> {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(120), child).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("exited with {s}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 120s".into()),
    }
}
