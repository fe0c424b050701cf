//! Test support: the Kubernetes binaries (kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubectl) that `tests/harness.sh
//! setup` builds from `tests/k8s` at the version the provisioner pins, the
//! workspace's own binaries, and a guard that stops every process a test
//! started. Included with `#[path]`; the includer declares `mod venv`
//! (tests/support/venv.rs) beside this module. Tools missing: skip locally,
//! panic under CI=true.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use super::venv::required;

/// What the harness builds.
pub const TOOLS: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
];

/// The Kubernetes version the provisioner pins by default (`1.34.2`).
pub fn pinned_version() -> String {
    provisioner::spec::ClusterSpec::parse("name = \"kubecluster\"\n")
        .expect("the default spec parses")
        .pins
        .kubernetes
}

/// Where the binaries are: PKI_K8S_BIN (exported by the harness), else the
/// harness's cache folder for the pinned version.
pub fn bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PKI_K8S_BIN") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("PKI_K8S_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("kube-aws-pki/k8s"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kube-aws-pki/k8s"))
        })
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    cache.join(format!("v{}", pinned_version())).join("bin")
}

/// The folder of the Kubernetes binaries if all four are there and report
/// the pinned version, else None (skip) — panics under CI=true.
pub fn tools() -> Option<PathBuf> {
    let dir = bin_dir();
    let want = format!("v{}", pinned_version());
    for t in TOOLS {
        let bin = dir.join(t);
        let args: &[&str] = if t == "kubectl" {
            &["version", "--client"]
        } else {
            &["--version"]
        };
        let said = Command::new(&bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let why = match said {
            None => format!("{} is missing or does not run", bin.display()),
            Some(s) if !s.split_whitespace().any(|w| w == want) => {
                format!("{} is not {want}: {}", bin.display(), s.trim())
            }
            Some(_) => continue,
        };
        if required() {
            panic!("{why}: run tests/harness.sh setup (CI=true: tests never skip)");
        }
        eprintln!("SKIPPED: {why}; run tests/harness.sh setup");
        return None;
    }
    Some(dir)
}

/// Remove the caller's proxy settings (any case) and the variables `also`
/// names (given upper-cased) from what `cmd` inherits.
pub fn scrub_env(cmd: &mut Command, also: impl Fn(&str) -> bool) {
    for (k, _) in std::env::vars_os() {
        let upper = k.to_string_lossy().to_ascii_uppercase();
        if upper.ends_with("_PROXY") || also(&upper) {
            cmd.env_remove(&k);
        }
    }
}

/// The folder the workspace's binaries are built in (`target/debug`): this
/// test binary runs from its `deps/`.
pub fn workspace_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// A workspace binary (`provisioner`, `pki-server`, `node-client`); its
/// absence is a build defect, never a skip.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = workspace_bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: cargo build --workspace --bins",
        p.display()
    );
    p
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Processes a test started, each with its log: all SIGKILLed and reaped on
/// drop (also on panic, when the tail of each log is printed).
#[derive(Default)]
pub struct Procs {
    procs: Vec<(String, Child, PathBuf)>,
}

impl Procs {
    /// Start `cmd` as `name`, stdout and stderr to `log`.
    pub fn spawn(&mut self, name: &str, cmd: &mut Command, log: &Path) {
        let f = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        self.procs
            .push((name.to_string(), child, log.to_path_buf()));
    }

    /// Panic (with its log) if a process has exited.
    pub fn assert_running(&mut self) {
        for (name, child, log) in &mut self.procs {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "{name} exited: {st}; last lines of {}:\n{}",
                    log.display(),
                    last_lines(log, 60)
                );
            }
        }
    }

    /// Stop them all now (SIGKILL) and wait until they have exited.
    pub fn stop(&mut self) {
        for (_, child, _) in &mut self.procs {
            let _ = child.kill();
        }
        for (_, child, _) in &mut self.procs {
            let _ = child.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            for (name, _, log) in &self.procs {
                eprintln!(
                    "----- {name}, last lines of {} -----\n{}",
                    log.display(),
                    last_lines(log, 40)
                );
            }
        }
    }
}

/// The text of a `data:,` URL (percent-encoded, as Ignition files carry it).
pub fn data_url_text(url: &str) -> String {
    let body = url
        .strip_prefix("data:,")
        .unwrap_or_else(|| panic!("not a plain data URL: {url:.40}"));
    let b = body.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Poll `f` until it gives Some, panicking after `timeout` with `what` and
/// the last failure.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: not after {timeout:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}
