//! Shared by the node-client integration tests (`fetch_cert.rs` against
//! pki-server, `openbao.rs` against OpenBao): running the binary, and what a
//! `fetch-cert` run must have written for each node role — whichever server
//! issued it.

#![allow(dead_code)]

use node_client::inspect::{self, CertInfo};
use node_client::profile::Profile;
use serde_json::Value;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The binary with `VAULT_ADDR`, `VAULT_CACERT` and the token file set, and
/// every other `VAULT_*` of the caller's environment removed.
pub fn node_client(addr: &str, ca: &Path, token: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_node-client"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("VAULT_") {
            c.env_remove(k);
        }
    }
    c.env("VAULT_ADDR", addr)
        .env("VAULT_CACERT", ca)
        .env("NODE_CLIENT_TOKEN_FILE", token)
        .env_remove("NODE_CLIENT_LOG")
        .args(args)
        .stdin(Stdio::null());
    c
}

/// Run to completion off the async runtime (an in-process server runs on it).
pub async fn output(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

pub fn show(o: &Output) -> String {
    format!(
        "status={:?} stdout={} stderr={}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `token` in a new 0600 file `path`.
pub fn write_token(path: &Path, token: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, token.as_bytes()).unwrap();
}

/// The visible names in `dir` (not the versioned folder and its link).
pub fn visible(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with(".."))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

pub fn info(dir: &Path, name: &str) -> CertInfo {
    inspect::cert_info(&std::fs::read(dir.join(name)).unwrap())
        .unwrap_or_else(|| panic!("{name} does not parse"))
}

pub fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

/// `fetch-cert --role R --node-name N --out DIR` and `extra`.
pub fn args<'a>(role: &'a str, node: &'a str, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "fetch-cert",
        "--role",
        role,
        "--node-name",
        node,
        "--out",
        out.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    a
}

/// Exactly `node-client files --role R` is in `dir`.
pub fn assert_files(dir: &Path, role: &str) {
    assert_eq!(
        visible(dir),
        Profile::embedded().unwrap().files(role).unwrap(),
        "{role} in {}",
        dir.display()
    );
}

/// Keys and kubeconfigs 0600, the rest 0644; every key matches its certificate.
pub fn assert_modes(dir: &Path) {
    for n in visible(dir) {
        let want = if n.ends_with(".key") || n.ends_with(".conf") {
            0o600
        } else {
            0o644
        };
        assert_eq!(mode(&dir.join(&n)), want, "{n}");
        if let Some(stem) = n.strip_suffix(".crt")
            && dir.join(format!("{stem}.key")).exists()
        {
            assert!(
                inspect::key_matches(
                    &std::fs::read(dir.join(&n)).unwrap(),
                    &std::fs::read(dir.join(format!("{stem}.key"))).unwrap()
                ),
                "{n} and its key"
            );
        }
    }
}

/// An etcd member `node` on `ip`: its files, modes, names and EKUs.
pub fn assert_etcd(out: &Path, node: &str, ip: &str) {
    assert_files(out, "etcd");
    assert_modes(out);
    let m = info(out, "etcd-member.crt");
    assert_eq!(m.common_name, node);
    assert_eq!(m.dns_names, [node, "localhost"]);
    assert_eq!(m.ip_addresses, ips(&[ip, "127.0.0.1"]));
    assert_eq!(m.ext_key_usage, ["serverAuth", "clientAuth"]);
    assert_eq!(m.issuer, "etcd-ca");
    let hc = info(out, "etcd-healthcheck-client.crt");
    assert_eq!(
        (hc.common_name.as_str(), hc.ext_key_usage.as_slice()),
        (
            "kube-etcd-healthcheck-client",
            &["clientAuth".to_string()][..]
        )
    );
    assert_eq!(info(out, "etcd-ca.crt").common_name, "etcd-ca");
    // The mount's CRL as etcd reads it (DER), signed by that CA.
    let crl = std::fs::read(out.join("etcd-ca.crl")).unwrap();
    assert_eq!(crl.first(), Some(&0x30), "etcd-ca.crl is DER");
    node_client::crl::verify(
        &crl,
        &std::fs::read(out.join("etcd-ca.crt")).unwrap(),
        "etcd-ca.crt",
    )
    .unwrap();
}

/// A controller `node` on `ip`: its files, modes, every certificate's names,
/// issuer and EKU, `sa.pub` holding `sa.crt`'s key, the kubeconfigs and CA
/// files. Returns the apiserver certificate.
pub fn assert_controller(out: &Path, node: &str, ip: &str) -> CertInfo {
    assert_files(out, "controller");
    assert_modes(out);
    let api = info(out, "apiserver.crt");
    assert_eq!(api.common_name, "kube-apiserver");
    assert_eq!(
        api.dns_names,
        [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "api.kubecluster.cluster.internal",
            node
        ]
    );
    assert_eq!(api.ip_addresses, ips(&["10.32.0.1", ip, "127.0.0.1"]));
    assert_eq!(api.ext_key_usage, ["serverAuth"]);
    assert_eq!(api.issuer, "kubernetes");
    let kubelet_cn = format!("system:node:{node}");
    let expect = [
        (
            "apiserver-etcd-client.crt",
            "kube-apiserver-etcd-client",
            "etcd-ca",
            vec![],
        ),
        (
            "apiserver-kubelet-client.crt",
            "kube-apiserver-kubelet-client",
            "kubernetes",
            vec![],
        ),
        (
            "controller-manager.crt",
            "system:kube-controller-manager",
            "kubernetes",
            vec![],
        ),
        (
            "scheduler.crt",
            "system:kube-scheduler",
            "kubernetes",
            vec![],
        ),
        (
            "kubelet-client.crt",
            kubelet_cn.as_str(),
            "kubernetes",
            vec!["system:nodes"],
        ),
        ("kube-proxy.crt", "system:kube-proxy", "kubernetes", vec![]),
        (
            "front-proxy-client.crt",
            "front-proxy-client",
            "front-proxy-ca",
            vec![],
        ),
    ];
    for (file, cn, issuer, org) in expect {
        let i = info(out, file);
        assert_eq!(i.common_name, cn, "{file}");
        assert_eq!(i.issuer, issuer, "{file}");
        assert_eq!(i.organization, org, "{file}");
        assert_eq!(i.ext_key_usage, ["clientAuth"], "{file}");
        assert!(
            i.dns_names.is_empty() && i.ip_addresses.is_empty(),
            "{file}: {i:?}"
        );
    }
    let serving = info(out, "kubelet.crt");
    assert_eq!(serving.common_name, kubelet_cn);
    assert_eq!(serving.dns_names, [node]);
    let sa = info(out, "sa.crt");
    assert!(sa.ext_key_usage.is_empty(), "a signing key has no EKU");
    assert!(
        sa_pub(out).contains(&inspect::pem_encode("PUBLIC KEY", &sa.spki)),
        "sa.pub holds sa.crt's key"
    );
    // The kubeconfigs name the files in place.
    let kc: Value =
        serde_json::from_slice(&std::fs::read(out.join("controller-manager.conf")).unwrap())
            .unwrap();
    let user = &kc["users"][0]["user"];
    assert_eq!(
        user["client-certificate"],
        out.join("controller-manager.crt").display().to_string()
    );
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://127.0.0.1:6443"
    );
    // Each CA file is its mount's CA.
    for (ca, cn) in [
        ("ca.crt", "kubernetes"),
        ("etcd-ca.crt", "etcd-ca"),
        ("front-proxy-ca.crt", "front-proxy-ca"),
    ] {
        assert_eq!(info(out, ca).common_name, cn);
    }
    api
}

/// `sa.pub` in `out`.
pub fn sa_pub(out: &Path) -> String {
    std::fs::read_to_string(out.join("sa.pub")).unwrap()
}

/// A worker `node`: its files, modes, the serving certificate (the node
/// name, no IP) and the kubeconfig's server.
pub fn assert_worker(out: &Path, node: &str) {
    assert_files(out, "worker");
    assert_modes(out);
    for f in ["kubelet-client.crt", "kubelet.crt"] {
        assert_eq!(info(out, f).common_name, format!("system:node:{node}"));
    }
    assert_eq!(
        info(out, "kubelet-client.crt").organization,
        ["system:nodes"]
    );
    let serving = info(out, "kubelet.crt");
    assert_eq!(serving.dns_names, [node]);
    assert!(serving.ip_addresses.is_empty(), "the role cannot pin IPs");
    assert_eq!(serving.ext_key_usage, ["serverAuth"]);
    assert_eq!(info(out, "kube-proxy.crt").common_name, "system:kube-proxy");
    assert_eq!(info(out, "ca.crt").common_name, "kubernetes");
    let kc: Value =
        serde_json::from_slice(&std::fs::read(out.join("kubelet.conf")).unwrap()).unwrap();
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://api.kubecluster.cluster.internal:6443"
    );
}

/// `status --json` on a worker's directory: its certificates, in order,
/// each with more than an hour left.
pub fn assert_worker_status_json(o: &Output) {
    assert!(o.status.success(), "{}", show(o));
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    let files: Vec<&str> = st
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "ca.crt",
            "kube-proxy.crt",
            "kubelet-client.crt",
            "kubelet.crt"
        ]
    );
    for e in st.as_array().unwrap() {
        assert!(e["remaining_seconds"].as_i64().unwrap() > 3600, "{e}");
    }
}

/// A refused run: exit 3, the server's refusal printed, nothing written.
pub fn assert_refused(o: &Output, out: &Path, what: &str) {
    assert_eq!(o.status.code(), Some(3), "{what}: {}", show(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("permission denied") || err.contains("not allowed by this role"),
        "{what}: {err}"
    );
    assert!(visible(out).is_empty(), "{what} wrote {:?}", visible(out));
}
