//! User data: one Ignition spec 3 config per role, built from serde structs.
//!
//! Flatcar runs Ignition once, on first boot. The config installs node-client
//! (and pki-server on its role) from the cluster's config bucket, writes their
//! systemd units, and orders `node-client fetch-cert --role <role>` before the
//! etcd and Kubernetes units. The Kubernetes units are minimal (issue #9 fleshes
//! them out); every certificate path they name comes from `certs.rs`.
//! No secret is ever placed here: user data is readable through IMDS.

use crate::certs;
use crate::spec::{ClusterSpec, Role};
use serde::Serialize;

/// The Ignition spec version emitted.
pub const VERSION: &str = "3.4.0";

/// An Ignition config (the subset we emit).
#[derive(Debug, Serialize)]
pub struct Config {
    /// `ignition.version`.
    pub ignition: Ignition,
    /// Files.
    pub storage: Storage,
    /// systemd units.
    pub systemd: Systemd,
}

/// The `ignition` section.
#[derive(Debug, Serialize)]
pub struct Ignition {
    /// Spec version.
    pub version: String,
}

/// The `storage` section.
#[derive(Debug, Serialize)]
pub struct Storage {
    /// Files to write.
    pub files: Vec<File>,
}

/// One file.
#[derive(Debug, Serialize)]
pub struct File {
    /// Absolute path.
    pub path: String,
    /// Octal permissions as a decimal number (Ignition's encoding).
    pub mode: u32,
    /// Replace a file shipped in the image.
    pub overwrite: bool,
    /// Where the content comes from.
    pub contents: Contents,
}

/// File contents by URL (`data:` or `s3://`).
#[derive(Debug, Serialize)]
pub struct Contents {
    /// Source URL.
    pub source: String,
}

/// The `systemd` section.
#[derive(Debug, Serialize)]
pub struct Systemd {
    /// Units.
    pub units: Vec<Unit>,
}

/// One systemd unit.
#[derive(Debug, Serialize)]
pub struct Unit {
    /// Unit name.
    pub name: String,
    /// Enable it.
    pub enabled: bool,
    /// Unit file text.
    pub contents: String,
}

/// Percent-encode a text file into a `data:` URL (RFC 2397).
fn data_url(text: &str) -> String {
    let mut out = String::from("data:,");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/=:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A systemd unit file from sections of `key=value` lines.
fn unit_text(sections: &[(&str, Vec<String>)]) -> String {
    let mut s = String::new();
    for (name, lines) in sections {
        s.push_str(&format!("[{name}]\n"));
        for l in lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push('\n');
    }
    s
}

fn l(s: &str) -> String {
    s.to_string()
}

/// DNS name of the pki-server record.
pub fn pki_dns(spec: &ClusterSpec) -> String {
    format!("pki.{}", spec.private_zone)
}

/// DNS name of the api-server record.
pub fn api_dns(spec: &ClusterSpec) -> String {
    format!("api.{}", spec.private_zone)
}

/// Names of the three buckets: (pki storage, config, logs).
pub fn buckets(spec: &ClusterSpec) -> (String, String, String) {
    let p = &spec.bucket_prefix;
    (
        format!("{p}-pki"),
        format!("{p}-config"),
        format!("{p}-logs"),
    )
}

/// The KMS alias for pki-server auto-unseal.
pub fn kms_alias(spec: &ClusterSpec) -> String {
    format!("alias/{}-pki-unseal", spec.name)
}

/// The `X-Vault-AWS-IAM-Server-ID` value: pki-server's DNS name. The profile's
/// auth/aws config requires it (`profile_vars`) and nodes sign it (`login_args`).
pub fn aws_server_id(spec: &ClusterSpec) -> String {
    pki_dns(spec)
}

/// `apply-profile` variables that tie the profile's auth/aws config to this cluster.
fn profile_vars(spec: &ClusterSpec) -> String {
    let mut v = format!("--var aws_iam_server_id={}", aws_server_id(spec));
    if let Some(r) = &spec.region {
        v.push_str(&format!(" --var aws_region={r}"));
    }
    v
}

/// How a node logs in: IAM login with its instance profile (no token on the node).
fn login_args(spec: &ClusterSpec) -> String {
    format!("--auth aws --aws-server-id {}", aws_server_id(spec))
}

/// The Ignition config of `role`.
pub fn config(spec: &ClusterSpec, role: Role) -> Config {
    let (pki_bucket, config_bucket, _) = buckets(spec);
    let mut files = vec![
        File {
            path: "/opt/bin/node-client".into(),
            mode: 0o755,
            overwrite: true,
            contents: Contents {
                source: format!("s3://{config_bucket}/bin/node-client"),
            },
        },
        File {
            path: "/etc/node-client/env".into(),
            mode: 0o644,
            overwrite: true,
            contents: Contents {
                source: data_url(&format!(
                    "VAULT_ADDR=https://{}:8200\nVAULT_CACERT=/etc/node-client/pki-ca.pem\nNODE_CLIENT_CERT_DIR={}\nNODE_CLIENT_CLUSTER={}\n",
                    pki_dns(spec),
                    certs::DIR,
                    spec.name
                )),
            },
        },
    ];
    let mut units = Vec::new();
    if role == Role::PkiServer {
        files.push(File {
            path: "/opt/bin/pki-server".into(),
            mode: 0o755,
            overwrite: true,
            contents: Contents {
                source: format!("s3://{config_bucket}/bin/pki-server"),
            },
        });
        units.push(Unit {
            name: "pki-server.service".into(),
            enabled: true,
            contents: unit_text(&[
                ("Unit", vec![l("Description=pki-server (S3 storage, KMS auto-unseal)"), l("Wants=network-online.target"), l("After=network-online.target")]),
                (
                    "Service",
                    vec![
                        format!(
                            "ExecStart=/opt/bin/pki-server server --listen 0.0.0.0:8200 --storage s3://{pki_bucket}/pki --kms-key-id {} --tls-dir /var/lib/pki-server/tls --tls-san {} --cluster-name {}",
                            kms_alias(spec),
                            pki_dns(spec),
                            spec.name
                        ),
                        l("Restart=always"),
                        l("RestartSec=5"),
                    ],
                ),
                ("Install", vec![l("WantedBy=multi-user.target")]),
            ]),
        });
        units.push(Unit {
            name: "pki-server-profile.service".into(),
            enabled: true,
            contents: unit_text(&[
                (
                    "Unit",
                    vec![
                        l("Description=apply the cluster security profile once an operator has initialised pki-server"),
                        l("After=pki-server.service"),
                        l("Requires=pki-server.service"),
                        l("ConditionPathExists=/etc/pki-server/profile-token"),
                    ],
                ),
                (
                    "Service",
                    vec![
                        l("Type=oneshot"),
                        l("Environment=VAULT_ADDR=https://127.0.0.1:8200 VAULT_CACERT=/var/lib/pki-server/tls/ca.pem"),
                        format!(
                            "ExecStart=/bin/sh -c 'VAULT_TOKEN=$(cat /etc/pki-server/profile-token) exec /opt/bin/pki-server apply-profile --dir /etc/pki-server/policies --cluster {} {}'",
                            spec.name,
                            profile_vars(spec)
                        ),
                        l("Restart=on-failure"),
                        l("RestartSec=10"),
                    ],
                ),
                ("Install", vec![l("WantedBy=multi-user.target")]),
            ]),
        });
        units.push(Unit {
            name: "pki-server-publish-ca.service".into(),
            enabled: true,
            contents: unit_text(&[
                ("Unit", vec![l("Description=publish the listener CA certificate for nodes to trust"), l("After=pki-server.service"), l("Requires=pki-server.service")]),
                (
                    "Service",
                    vec![
                        l("Type=oneshot"),
                        l("ExecStartPre=/bin/sh -c 'until test -s /var/lib/pki-server/tls/ca.pem; do sleep 2; done'"),
                        format!(
                            "ExecStart=/usr/bin/docker run --rm --net host -v /var/lib/pki-server/tls:/tls:ro public.ecr.aws/aws-cli/aws-cli s3 cp /tls/ca.pem s3://{config_bucket}/ca/pki-server-ca.pem"
                        ),
                        l("Restart=on-failure"),
                        l("RestartSec=10"),
                    ],
                ),
                ("Install", vec![l("WantedBy=multi-user.target")]),
            ]),
        });
    } else {
        units.push(Unit {
            name: "node-client-ca.service".into(),
            enabled: true,
            contents: unit_text(&[
                ("Unit", vec![l("Description=fetch the pki-server listener CA"), l("Wants=network-online.target"), l("After=network-online.target"), l("ConditionPathExists=!/etc/node-client/pki-ca.pem")]),
                (
                    "Service",
                    vec![
                        l("Type=oneshot"),
                        l("RemainAfterExit=true"),
                        format!(
                            "ExecStart=/usr/bin/docker run --rm --net host -v /etc/node-client:/out public.ecr.aws/aws-cli/aws-cli s3 cp s3://{config_bucket}/ca/pki-server-ca.pem /out/pki-ca.pem"
                        ),
                        l("Restart=on-failure"),
                        l("RestartSec=10"),
                    ],
                ),
                ("Install", vec![l("WantedBy=multi-user.target")]),
            ]),
        });
        units.push(Unit {
            name: "node-client-fetch.service".into(),
            enabled: true,
            contents: unit_text(&[
                (
                    "Unit",
                    vec![
                        l("Description=fetch this node's certificates"),
                        l("After=node-client-ca.service"),
                        l("Requires=node-client-ca.service"),
                    ],
                ),
                (
                    "Service",
                    vec![
                        l("Type=oneshot"),
                        l("RemainAfterExit=true"),
                        l("EnvironmentFile=/etc/node-client/env"),
                        format!(
                            "ExecStart=/opt/bin/node-client fetch-cert --role {} {}",
                            role.name(),
                            login_args(spec)
                        ),
                        l("Restart=on-failure"),
                        l("RestartSec=10"),
                    ],
                ),
                ("Install", vec![l("WantedBy=multi-user.target")]),
            ]),
        });
        units.push(Unit {
            name: "node-client-renew.service".into(),
            enabled: true,
            contents: unit_text(&[
                (
                    "Unit",
                    vec![
                        l("Description=renew this node's certificates"),
                        l("After=node-client-fetch.service"),
                        l("Requires=node-client-fetch.service"),
                    ],
                ),
                (
                    "Service",
                    vec![
                        l("EnvironmentFile=/etc/node-client/env"),
                        format!(
                            "ExecStart=/opt/bin/node-client renew --role {} {}",
                            role.name(),
                            login_args(spec)
                        ),
                        l("Restart=always"),
                        l("RestartSec=30"),
                    ],
                ),
                ("Install", vec![l("WantedBy=multi-user.target")]),
            ]),
        });
    }
    units.extend(role_units(spec, role));
    Config {
        ignition: Ignition {
            version: VERSION.into(),
        },
        storage: Storage { files },
        systemd: Systemd { units },
    }
}

/// A unit that needs the certificates: ordered after node-client-fetch.
fn cert_unit(name: &str, description: &str, exec: String) -> Unit {
    Unit {
        name: name.into(),
        enabled: true,
        contents: unit_text(&[
            (
                "Unit",
                vec![
                    format!("Description={description}"),
                    l("After=node-client-fetch.service"),
                    l("Requires=node-client-fetch.service"),
                ],
            ),
            (
                "Service",
                vec![exec, l("Restart=always"), l("RestartSec=5")],
            ),
            ("Install", vec![l("WantedBy=multi-user.target")]),
        ]),
    }
}

fn role_units(spec: &ClusterSpec, role: Role) -> Vec<Unit> {
    let pki = certs::DIR;
    match role {
        Role::PkiServer => vec![],
        Role::Etcd => {
            let m = certs::ETCD_MEMBER;
            vec![cert_unit(
                "etcd-member.service",
                "etcd member",
                format!(
                    "ExecStart=/usr/bin/docker run --rm --name etcd --net host -v {pki}:{pki}:ro -v /var/lib/etcd:/var/lib/etcd quay.io/coreos/etcd:v{} etcd --data-dir /var/lib/etcd --cert-file {} --key-file {} --trusted-ca-file {} --client-cert-auth --peer-cert-file {} --peer-key-file {} --peer-trusted-ca-file {} --peer-client-cert-auth --listen-client-urls https://0.0.0.0:2379 --listen-peer-urls https://0.0.0.0:2380",
                    spec.etcd_version,
                    m.cert(),
                    m.key(),
                    m.ca(),
                    m.cert(),
                    m.key(),
                    m.ca()
                ),
            )]
        }
        Role::Controller => {
            let (e, a, k, f) = (
                certs::APISERVER_ETCD_CLIENT,
                certs::APISERVER,
                certs::APISERVER_KUBELET_CLIENT,
                certs::FRONT_PROXY_CLIENT,
            );
            vec![cert_unit(
                "kube-apiserver.service",
                "Kubernetes API server (minimal; issue #9)",
                format!(
                    "ExecStart=/usr/bin/docker run --rm --name kube-apiserver --net host -v {pki}:{pki}:ro registry.k8s.io/kube-apiserver:v{} kube-apiserver --secure-port 6443 --service-cluster-ip-range {} --etcd-cafile {} --etcd-certfile {} --etcd-keyfile {} --tls-cert-file {} --tls-private-key-file {} --client-ca-file {} --kubelet-client-certificate {} --kubelet-client-key {} --proxy-client-cert-file {} --proxy-client-key-file {} --requestheader-client-ca-file {}",
                    spec.kubernetes_version,
                    spec.service_cidr,
                    e.ca(),
                    e.cert(),
                    e.key(),
                    a.cert(),
                    a.key(),
                    a.ca(),
                    k.cert(),
                    k.key(),
                    f.cert(),
                    f.key(),
                    f.ca()
                ),
            )]
        }
        Role::Worker => {
            let (c, s) = (certs::KUBELET_CLIENT, certs::KUBELET_SERVING);
            vec![cert_unit(
                "kubelet.service",
                "Kubernetes node agent (minimal; issue #9)",
                format!(
                    "ExecStart=/opt/bin/kubelet --tls-cert-file {} --tls-private-key-file {} --client-ca-file {} --cluster-dns {} --kubeconfig /etc/kubernetes/kubelet.conf",
                    s.cert(),
                    s.key(),
                    c.ca(),
                    spec.cluster_dns
                ),
            )]
        }
    }
}

/// The JSON user data of `role` (before base64).
pub fn render(spec: &ClusterSpec, role: Role) -> String {
    // Serialising plain structs of strings, bools and integers cannot fail.
    serde_json::to_string(&config(spec, role)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClusterSpec {
        ClusterSpec::parse("name = \"demo\"\n").expect("spec")
    }

    #[test]
    fn every_role_renders_ignition_3_json_with_fetch_before_role_units() {
        let spec = spec();
        for role in Role::ALL {
            let text = render(&spec, role);
            assert!(text.len() < 16 * 1024, "{role}: user data over 16 KiB");
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            let version = v["ignition"]["version"].as_str().expect("version");
            assert!(
                version.starts_with("3.") && version.ends_with(".0"),
                "{version}"
            );
            let units = v["systemd"]["units"].as_array().expect("units");
            if role != Role::PkiServer {
                let fetch = units
                    .iter()
                    .find(|u| u["name"] == "node-client-fetch.service")
                    .expect("fetch unit");
                let text = fetch["contents"].as_str().expect("contents");
                assert!(
                    text.contains(&format!(
                        "node-client fetch-cert --role {} --auth aws --aws-server-id pki.",
                        role.name()
                    )),
                    "{text}"
                );
                assert!(!text.contains("token"), "{text}");
            } else {
                let profile = units
                    .iter()
                    .find(|u| u["name"] == "pki-server-profile.service")
                    .expect("profile unit");
                let text = profile["contents"].as_str().expect("contents");
                assert!(
                    text.contains(&format!("--var aws_iam_server_id={}", aws_server_id(&spec))),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn every_unit_cert_path_is_a_node_client_file() {
        let spec = spec();
        for role in Role::ALL {
            let known = certs::paths(role);
            for unit in config(&spec, role).systemd.units {
                for word in unit.contents.split_whitespace() {
                    if let Some(i) = word.find(certs::DIR) {
                        let path = &word[i..];
                        if path == certs::DIR || path.starts_with(&format!("{}:", certs::DIR)) {
                            continue; // the folder mount itself
                        }
                        assert!(
                            known.iter().any(|k| k == path),
                            "{role}: {} names {path}, not a node-client file",
                            unit.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn data_url_escapes_newlines_and_spaces() {
        assert_eq!(data_url("A=b c\n"), "data:,A=b%20c%0A");
    }
}
