//! Test support: a real etcd cluster (Debian's etcd-server) on loopback
//! addresses, and etcdctl. Included with `#[path]` by the test crates that
//! need it. Tools missing: skip locally, panic under CI=true.

#![allow(dead_code)]

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// The includer declares `mod venv` (tests/support/venv.rs) beside this module.
#[allow(unused_imports)]
pub use super::venv::required;

/// etcd, etcdctl and openssl on PATH, or false (skip) — panics under CI=true.
pub fn tools_present() -> bool {
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

/// Drop ETCD*/ETCDCTL* settings and proxies (gRPC honours HTTPS_PROXY).
pub fn scrub_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        let upper = k.to_ascii_uppercase();
        if upper.starts_with("ETCD") || upper.ends_with("_PROXY") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// What a command did.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
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
pub fn run(cmd: &mut Command, timeout: Duration) -> Out {
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

/// `port` on `ip` if nobody listens there, else a free port on `ip`.
pub fn port_on(ip: Ipv4Addr, port: u16) -> u16 {
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

/// One member's TLS files (the same pair serves clients and peers), and the
/// CRL both listeners check connecting certificates against, if any.
pub struct MemberTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub crl: Option<PathBuf>,
}

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    log: PathBuf,
    child: Child,
}

/// etcd processes: SIGKILLed and reaped on drop (also on panic, when the
/// tail of each member's log is printed).
pub struct Cluster {
    members: Vec<Member>,
}

impl Cluster {
    /// Start members `etcd-<i>` on `ips[i]` with `tls[i]`, peer and client TLS
    /// and client-certificate authentication on both (with `--client-crl-file`
    /// and `--peer-crl-file` when `tls[i].crl` is set).
    pub fn start(dir: &Path, ips: &[Ipv4Addr], tls: &[MemberTls]) -> Self {
        let ports: Vec<(u16, u16)> = ips
            .iter()
            .map(|ip| (port_on(*ip, 2379), port_on(*ip, 2380)))
            .collect();
        let initial = ips
            .iter()
            .zip(&ports)
            .enumerate()
            .map(|(i, (ip, (_, p)))| format!("etcd-{i}=https://{ip}:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("pki-test-{}", std::process::id());
        let mut members = Vec::new();
        for (i, (ip, (cport, pport))) in ips.iter().zip(&ports).enumerate() {
            let name = format!("etcd-{i}");
            let client_url = format!("https://{ip}:{cport}");
            let peer_url = format!("https://{ip}:{pport}");
            let log = dir.join(format!("{name}.log"));
            let logf = std::fs::File::create(&log).unwrap();
            let t = &tls[i];
            let mut cmd = Command::new("etcd");
            scrub_env(&mut cmd)
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.join(format!("{name}.etcd")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth")
                .arg("--peer-cert-file")
                .arg(&t.cert)
                .arg("--peer-key-file")
                .arg(&t.key)
                .arg("--peer-trusted-ca-file")
                .arg(&t.ca)
                .arg("--peer-client-cert-auth");
            if let Some(crl) = &t.crl {
                cmd.arg("--client-crl-file")
                    .arg(crl)
                    .arg("--peer-crl-file")
                    .arg(crl);
            }
            cmd.args(["--logger", "zap", "--log-outputs", "stderr"])
                .stdin(Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf);
            let child = cmd.spawn().expect("spawn etcd");
            members.push(Member {
                name,
                client_url,
                peer_url,
                log,
                child,
            });
        }
        Self { members }
    }

    /// The members' client URLs.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The members' peer URLs.
    pub fn peer_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.peer_url.clone()).collect()
    }

    /// Panic if a member has exited.
    pub fn assert_running(&mut self) {
        for m in &mut self.members {
            if let Some(st) = m.child.try_wait().unwrap() {
                panic!("{} exited: {st}", m.name);
            }
        }
    }

    /// Wait until every member reports healthy through `client`.
    pub fn wait_healthy(&mut self, client: &ClientTls, timeout: Duration) {
        let urls = self.client_urls();
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            let h = etcdctl(&urls[0], client, &["endpoint", "health", "--cluster"], 2, 3);
            // etcdctl 3.4 reports health on stderr.
            let said = format!("{}{}", h.stdout, h.stderr);
            if h.ok
                && urls
                    .iter()
                    .all(|u| said.contains(&format!("{u} is healthy")))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not healthy after {timeout:?}: {h}"
            );
            std::thread::sleep(Duration::from_millis(200));
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

/// Client TLS material for etcdctl: the CA it trusts and an optional pair.
pub struct ClientTls<'a> {
    pub cacert: &'a Path,
    pub cert: Option<(&'a Path, &'a Path)>,
}

/// etcdctl (API v3) against `endpoints`.
pub fn etcdctl(endpoints: &str, tls: &ClientTls, args: &[&str], dial: u64, command: u64) -> Out {
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
