//! The RBAC bindings and add-ons the controllers apply: CoreDNS on the
//! cluster DNS address, flannel (the pod network), metrics-server and, when a
//! role updates with coordinated reboots, the Flatcar update operator.
//!
//! The manifests are templates in `provisioner/templates/addons/` (upstream's,
//! trimmed; sources in each file's header) filled from the spec and the pins.
//! Each object becomes one file and one server-side apply (`PATCH` with
//! `application/apply-patch+yaml`) at its REST path, so applying is
//! idempotent and needs no kubectl. `kube-aws-pki-addons.service` runs it on
//! every controller at boot, once the local apiserver is ready.
//!
//! Identity: controllers hold no admin certificate (the profile keeps
//! `admin` for operators and issues no `system:masters` certificate at all). The apply
//! authenticates with the controller's front-proxy client certificate, which
//! kube-apiserver trusts to assert a user and groups (`--requestheader-*`),
//! as `kube-aws-pki:addons` in `system:masters`: a power the controller
//! already has by holding that certificate and the service-account signing
//! key, used for nothing but these manifests and visible in the audit log.

use super::{Parts, l, unit_text};
use crate::certs;
use crate::ignition::{File, Unit};
use crate::spec::{ClusterSpec, UpdateStrategy};

/// Where the per-object files and their index go.
pub const DIR: &str = "/etc/kubernetes/addons";
/// The apply script.
pub const SCRIPT: &str = "/opt/kube-aws-pki/apply-addons.sh";
/// The user the apply asserts.
pub const USER: &str = "kube-aws-pki:addons";
/// The query of every apply: one field manager, conflicts resolved for it.
pub const APPLY_QUERY: &str = "fieldManager=kube-aws-pki&force=true";
/// The headers that assert [`USER`] in `system:masters` (requestheader
/// authentication, honoured only with the front-proxy client certificate).
pub const HEADERS: [(&str, &str); 2] = [
    ("X-Remote-User", USER),
    ("X-Remote-Group", "system:masters"),
];

/// The templates, in apply order.
pub const TEMPLATES: [(&str, &str); 5] = [
    ("rbac", include_str!("../../../templates/addons/rbac.yaml")),
    (
        "coredns",
        include_str!("../../../templates/addons/coredns.yaml"),
    ),
    (
        "flannel",
        include_str!("../../../templates/addons/flannel.yaml"),
    ),
    (
        "metrics-server",
        include_str!("../../../templates/addons/metrics-server.yaml"),
    ),
    (
        "update-operator",
        include_str!("../../../templates/addons/update-operator.yaml"),
    ),
];

/// One Kubernetes object of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, if any.
    pub namespace: Option<String>,
    /// The YAML document.
    pub text: String,
}

impl Object {
    /// The object's REST path, or None for a kind this module does not know
    /// (the tests require every object to have one).
    pub fn rest_path(&self) -> Option<String> {
        let (plural, namespaced) = match self.kind.as_str() {
            "Namespace" => ("namespaces", false),
            "ServiceAccount" => ("serviceaccounts", true),
            "ConfigMap" => ("configmaps", true),
            "Service" => ("services", true),
            "ClusterRole" => ("clusterroles", false),
            "ClusterRoleBinding" => ("clusterrolebindings", false),
            "Role" => ("roles", true),
            "RoleBinding" => ("rolebindings", true),
            "Deployment" => ("deployments", true),
            "DaemonSet" => ("daemonsets", true),
            "APIService" => ("apiservices", false),
            _ => return None,
        };
        let base = if self.api_version.contains('/') {
            format!("/apis/{}", self.api_version)
        } else {
            format!("/api/{}", self.api_version)
        };
        match (namespaced, &self.namespace) {
            (true, Some(ns)) => Some(format!("{base}/namespaces/{ns}/{plural}/{}", self.name)),
            (false, None) => Some(format!("{base}/{plural}/{}", self.name)),
            _ => None,
        }
    }
}

fn scalar(line: &str, key: &str) -> Option<String> {
    let v = line.strip_prefix(key)?.strip_prefix(':')?.trim();
    Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
}

/// Split a multi-document manifest into its objects, reading `apiVersion`,
/// `kind` and `metadata.name/namespace` from the document's top level.
pub fn split(manifest: &str) -> Vec<Object> {
    let mut out = Vec::new();
    for doc in manifest.split("\n---\n") {
        let (mut api_version, mut kind, mut name, mut namespace) = (None, None, None, None);
        let mut in_metadata = false;
        for line in doc.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if !line.starts_with(' ') {
                in_metadata = line.starts_with("metadata:");
                api_version = api_version.or_else(|| scalar(line, "apiVersion"));
                kind = kind.or_else(|| scalar(line, "kind"));
            } else if in_metadata && !line.starts_with("   ") {
                name = name.or_else(|| scalar(&line[2..], "name"));
                namespace = namespace.or_else(|| scalar(&line[2..], "namespace"));
            }
        }
        if let (Some(api_version), Some(kind), Some(name)) = (api_version, kind, name) {
            out.push(Object {
                api_version,
                kind,
                name,
                namespace,
                // Top-level comments (the templates' source notes) stay in
                // the repository, not on the nodes.
                text: doc
                    .lines()
                    .filter(|l| !l.starts_with('#') && *l != "---")
                    .collect::<Vec<_>>()
                    .join("\n")
                    .trim()
                    .to_string()
                    + "\n",
            });
        }
    }
    out
}

/// The template variables.
pub fn vars(spec: &ClusterSpec) -> Vec<(&'static str, String)> {
    let p = &spec.pins;
    vec![
        ("cluster_dns", spec.cluster_dns.to_string()),
        ("cluster_domain", spec.cluster_domain.clone()),
        ("pod_cidr", spec.pod_cidr.to_string()),
        ("coredns_version", p.coredns.clone()),
        ("flannel_version", p.flannel.clone()),
        ("flannel_cni_plugin_version", p.flannel_cni_plugin.clone()),
        ("metrics_server_version", p.metrics_server.clone()),
        ("fluo_version", p.update_operator.clone()),
        (
            "coordinated_roles",
            serde_json::to_string(
                &spec
                    .updates
                    .iter()
                    .filter(|(_, s)| **s == UpdateStrategy::Coordinated)
                    .map(|(r, _)| r.name())
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_default(),
        ),
    ]
}

/// The rendered manifests this cluster applies, in order.
pub fn manifests(spec: &ClusterSpec) -> Vec<(&'static str, String)> {
    let coordinated = spec
        .updates
        .values()
        .any(|s| *s == UpdateStrategy::Coordinated);
    TEMPLATES
        .iter()
        .filter(|(name, _)| *name != "update-operator" || coordinated)
        .map(|(name, t)| {
            let mut text = t.to_string();
            for (k, v) in vars(spec) {
                text = text.replace(&format!("{{{{{k}}}}}"), &v);
            }
            (*name, text)
        })
        .collect()
}

/// Every object, with its file name under [`DIR`], in apply order.
pub fn objects(spec: &ClusterSpec) -> Vec<(String, Object)> {
    let mut out = Vec::new();
    for (addon, text) in manifests(spec) {
        for o in split(&text) {
            let file = format!(
                "{:02}-{addon}-{}-{}.yaml",
                out.len(),
                o.kind.to_ascii_lowercase(),
                o.name.replace(':', "-")
            );
            out.push((file, o));
        }
    }
    out
}

/// The apply script.
pub fn script() -> String {
    let p = certs::path;
    let h0 = format!("{}: {}", HEADERS[0].0, HEADERS[0].1);
    let h1 = format!("{}: {}", HEADERS[1].0, HEADERS[1].1);
    format!(
        r#"#!/bin/bash
# Server-side apply of every add-on object listed in {DIR}/index, as {USER}
# (front-proxy identity, see provisioner/src/node/addons.rs). Idempotent.
set -euo pipefail
api=https://127.0.0.1:6443
tls=(--cacert {ca} --cert {cert} --key {key})
until curl -fsS --cacert {ca} -o /dev/null "$api/readyz"; do
  echo "waiting for the local kube-apiserver"; sleep 5
done
while read -r path file; do
  curl -fsS "${{tls[@]}}" -X PATCH \
    -H '{h0}' -H '{h1}' \
    -H 'Content-Type: application/apply-patch+yaml' \
    --data-binary @"{DIR}/$file" -o /dev/null \
    "$api$path?{APPLY_QUERY}"
  echo "applied $file"
done < {DIR}/index
"#,
        ca = p("ca.crt"),
        cert = p("front-proxy-client.crt"),
        key = p("front-proxy-client.key"),
    )
}

/// The controller's add-on parts.
pub fn parts(spec: &ClusterSpec) -> Parts {
    let mut files = Vec::new();
    let mut index = String::new();
    for (file, o) in objects(spec) {
        // Objects of kinds without a path are refused by the tests; skip
        // rather than apply somewhere wrong.
        let Some(path) = o.rest_path() else { continue };
        index.push_str(&format!("{path} {file}\n"));
        files.push(File::text(&format!("{DIR}/{file}"), 0o644, &o.text));
    }
    files.push(File::text(&format!("{DIR}/index"), 0o644, &index));
    files.push(File::text(SCRIPT, 0o755, &script()));
    Parts {
        files,
        filesystems: vec![],
        units: vec![Unit::new(
            "kube-aws-pki-addons.service",
            unit_text(&[
                (
                    "Unit",
                    vec![
                        l(
                            "Description=apply the cluster's RBAC bindings and add-ons (server-side apply)",
                        ),
                        // Wants: a kubelet restart (every renewal) must not
                        // re-run the apply.
                        l("Wants=kubelet.service"),
                        l("After=kubelet.service"),
                    ],
                ),
                (
                    "Service",
                    vec![
                        l("Type=oneshot"),
                        l("RemainAfterExit=true"),
                        format!("ExecStart={SCRIPT}"),
                        l("Restart=on-failure"),
                        l("RestartSec=15"),
                    ],
                ),
                ("Install", vec![l("WantedBy=multi-user.target")]),
            ]),
        )],
    }
}
