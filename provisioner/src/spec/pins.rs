//! Pinned versions and the SHA-256 of everything a node downloads.
//!
//! Nodes download the kubelet and kubectl binaries, the etcd release and the
//! CNI plugins at first boot; Ignition verifies each against the checksum
//! pinned here before writing it (`contents.verification.hash`), so a changed
//! or truncated download stops the boot instead of running. The container
//! images of the control plane and the add-ons are pinned by version tag.
//!
//! The built-in table (`KNOWN`) covers the default versions; a spec choosing
//! another version names its checksum under `[checksums]`, by download name
//! (`kubelet-v1.34.2-linux-amd64`), or is refused.

use crate::spec::SpecError;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Versions of what runs on the nodes, besides Kubernetes and etcd (which have
/// their own spec fields). `[versions]` in the spec.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVersions {
    coredns: Option<String>,
    metrics_server: Option<String>,
    flannel: Option<String>,
    flannel_cni_plugin: Option<String>,
    cni_plugins: Option<String>,
    update_operator: Option<String>,
}

/// The SHA-256 of each default download, from the projects' published
/// checksums. kubelet, kubectl and the CNI plugins as kubespray pins them
/// (`roles/kubespray_defaults/vars/main/checksums.yml`); etcd 3.6.6 from the
/// release's SHA256SUMS (kubespray has no 3.6 entry). docs/cluster.md.
const KNOWN: &[(&str, &str)] = &[
    (
        "kubelet-v1.34.2-linux-amd64",
        "9c5e717b774ee9b9285ce47e7d2150c29e84837eb19a7eaa24b60b1543c9d58f",
    ),
    (
        "kubectl-v1.34.2-linux-amd64",
        "9591f3d75e1581f3f7392e6ad119aab2f28ae7d6c6e083dc5d22469667f27253",
    ),
    (
        "etcd-v3.6.6-linux-amd64.tar.gz",
        "887afaa4a99f22d802ccdfbe65730a5e79aa5c9ce2c8799c67e9d804c50ecedb",
    ),
    (
        "cni-plugins-linux-amd64-v1.8.0.tgz",
        "ab3bda535f9d90766cccc90d3dddb5482003dd744d7f22bcf98186bf8eea8be6",
    ),
];

/// Default versions.
const DEFAULTS: [(&str, &str); 6] = [
    ("coredns", "1.12.1"),
    ("metrics_server", "0.8.0"),
    ("flannel", "0.27.4"),
    ("flannel_cni_plugin", "1.8.0-flannel1"),
    ("cni_plugins", "1.8.0"),
    ("update_operator", "0.9.0"),
];

/// One verified download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// Name used in `[checksums]` (`kubelet-v1.34.2-linux-amd64`).
    pub key: String,
    /// HTTPS URL.
    pub url: String,
    /// Hex SHA-256.
    pub sha256: String,
}

/// The resolved pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    /// Kubernetes (control-plane images, kubelet, kubectl, kube-proxy).
    pub kubernetes: String,
    /// etcd.
    pub etcd: String,
    /// CoreDNS image.
    pub coredns: String,
    /// metrics-server image.
    pub metrics_server: String,
    /// flannel image.
    pub flannel: String,
    /// flannel's CNI plugin image.
    pub flannel_cni_plugin: String,
    /// CNI reference plugins release.
    pub cni_plugins: String,
    /// Flatcar update operator images.
    pub update_operator: String,
    /// `/opt/bin/kubelet`.
    pub kubelet: Download,
    /// `/opt/bin/kubectl`.
    pub kubectl: Download,
    /// The etcd release tarball.
    pub etcd_tarball: Download,
    /// The CNI plugins tarball.
    pub cni_tarball: Download,
}

fn version_ok(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 40
        && v.as_bytes()[0].is_ascii_digit()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
}

impl Pins {
    /// Resolve the versions and checksums of a spec.
    pub fn resolve(
        kubernetes: &str,
        etcd: &str,
        raw: &RawVersions,
        checksums: &BTreeMap<String, String>,
    ) -> Result<Pins, SpecError> {
        let chosen = |name: &str, v: &Option<String>| -> Result<String, SpecError> {
            let d = DEFAULTS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .unwrap_or_default();
            let v = v.clone().unwrap_or_else(|| d.to_string());
            let v = v.trim_start_matches('v').to_string();
            if !version_ok(&v) {
                return Err(SpecError::Field {
                    field: format!("versions.{name}"),
                    reason: format!("{v:?} is not a version"),
                });
            }
            Ok(v)
        };
        for (k, v) in checksums {
            if v.len() != 64 || !v.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(SpecError::Field {
                    field: format!("checksums.{k}"),
                    reason: "not a hex SHA-256 (64 hex digits)".into(),
                });
            }
        }
        let download = |key: String, url: String| -> Result<Download, SpecError> {
            let sha = checksums
                .get(&key)
                .map(|s| s.to_ascii_lowercase())
                .or_else(|| {
                    KNOWN
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, s)| s.to_string())
                })
                .ok_or_else(|| SpecError::Field {
                    field: format!("checksums.{key}"),
                    reason: format!(
                        "no built-in SHA-256 for this version: add the published checksum of {url}"
                    ),
                })?;
            Ok(Download {
                key,
                url,
                sha256: sha,
            })
        };
        let cni_plugins = chosen("cni_plugins", &raw.cni_plugins)?;
        Ok(Pins {
            kubelet: download(
                format!("kubelet-v{kubernetes}-linux-amd64"),
                format!("https://dl.k8s.io/release/v{kubernetes}/bin/linux/amd64/kubelet"),
            )?,
            kubectl: download(
                format!("kubectl-v{kubernetes}-linux-amd64"),
                format!("https://dl.k8s.io/release/v{kubernetes}/bin/linux/amd64/kubectl"),
            )?,
            etcd_tarball: download(
                format!("etcd-v{etcd}-linux-amd64.tar.gz"),
                format!(
                    "https://github.com/etcd-io/etcd/releases/download/v{etcd}/etcd-v{etcd}-linux-amd64.tar.gz"
                ),
            )?,
            cni_tarball: download(
                format!("cni-plugins-linux-amd64-v{cni_plugins}.tgz"),
                format!(
                    "https://github.com/containernetworking/plugins/releases/download/v{cni_plugins}/cni-plugins-linux-amd64-v{cni_plugins}.tgz"
                ),
            )?,
            kubernetes: kubernetes.to_string(),
            etcd: etcd.to_string(),
            coredns: chosen("coredns", &raw.coredns)?,
            metrics_server: chosen("metrics_server", &raw.metrics_server)?,
            flannel: chosen("flannel", &raw.flannel)?,
            flannel_cni_plugin: chosen("flannel_cni_plugin", &raw.flannel_cni_plugin)?,
            update_operator: chosen("update_operator", &raw.update_operator)?,
            cni_plugins,
        })
    }

    /// Every download, for tests and docs.
    pub fn downloads(&self) -> [&Download; 4] {
        [
            &self.kubelet,
            &self.kubectl,
            &self.etcd_tarball,
            &self.cni_tarball,
        ]
    }
}
