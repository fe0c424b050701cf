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

/// The Ignition spec version emitted. Flatcar reads 3.0 to 3.4; 3.3.0 is the
/// newest stable spec Debian's `ignition-validate` (Ignition 2.14) accepts, and
/// nothing emitted here needs a newer one (every field is in spec 3.0).
pub const VERSION: &str = "3.3.0";

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
    /// Unit file text (none: the unit ships in the image or elsewhere; only drop-ins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
    /// Drop-ins (`<name>.d/<dropin>`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropins: Vec<Dropin>,
}

/// A unit drop-in.
#[derive(Debug, Serialize)]
pub struct Dropin {
    /// File name, `*.conf`.
    pub name: String,
    /// Text.
    pub contents: String,
}

impl Unit {
    fn new(name: &str, contents: String) -> Unit {
        Unit {
            name: name.into(),
            enabled: true,
            contents: Some(contents),
            dropins: vec![],
        }
    }
}

/// Where nodes keep the pki-server listener CA (node-client's VAULT_CACERT).
pub const PKI_CA: &str = "/etc/kube-aws-pki/pki-ca.pem";
/// Per-boot facts of the instance (node name, address) for node-client.
pub const NODE_ENV: &str = "/run/kube-aws-pki/node.env";

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
/// auth/aws config requires it (`profile_vars`) and nodes sign it
/// (`NODE_CLIENT_AWS_SERVER_ID` in node-client's settings).
pub fn aws_server_id(spec: &ClusterSpec) -> String {
    pki_dns(spec)
}

/// `apply-profile` variables that tie the profile's auth/aws config to this cluster.
fn profile_vars(spec: &ClusterSpec) -> String {
    let mut v = format!(
        "--var aws_iam_server_id={} --var api_dns={}",
        aws_server_id(spec),
        api_dns(spec)
    );
    if let Some(r) = &spec.region {
        v.push_str(&format!(" --var aws_region={r}"));
    }
    v
}

/// The Ignition config of `role`.
pub fn config(spec: &ClusterSpec, role: Role) -> Config {
    let (pki_bucket, config_bucket, _) = buckets(spec);
    let mut files = vec![File {
        path: node_client::units::BINARY_PATH.into(),
        mode: 0o755,
        overwrite: true,
        contents: Contents {
            source: format!("s3://{config_bucket}/bin/node-client"),
        },
    }];
    if role != Role::PkiServer {
        // Settings shared by every node of the role; the per-instance ones
        // (node name, address) come from NODE_ENV, written at boot from the
        // instance metadata by node-client-node-env.service.
        files.push(File {
            path: node_client::units::ENV_FILE.into(),
            mode: 0o644,
            overwrite: true,
            contents: Contents {
                source: data_url(&format!(
                    "VAULT_ADDR=https://{}:8200\nVAULT_CACERT={PKI_CA}\nNODE_ROLE={}\nKUBE_AWS_PKI_CLUSTER={}\nNODE_CLIENT_AUTH=aws\nNODE_CLIENT_AWS_SERVER_ID={}\n",
                    pki_dns(spec),
                    role.name(),
                    spec.name,
                    aws_server_id(spec)
                )),
            },
        });
    }
    let mut units = Vec::new();
    if role == Role::PkiServer {
        let mut policies = vec!["profile.toml".to_string()];
        policies.extend(
            crate::local::ACL
                .iter()
                .map(|(r, _)| format!("acl/{r}.hcl")),
        );
        for p in policies {
            files.push(File {
                path: format!("/etc/pki-server/policies/{p}"),
                mode: 0o644,
                overwrite: true,
                contents: Contents {
                    source: format!("s3://{config_bucket}/policies/{p}"),
                },
            });
        }
        files.push(File {
            path: "/opt/bin/pki-server".into(),
            mode: 0o755,
            overwrite: true,
            contents: Contents {
                source: format!("s3://{config_bucket}/bin/pki-server"),
            },
        });
        units.push(Unit::new(
            "pki-server.service",
            unit_text(&[
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
        ));
        units.push(Unit::new(
            "pki-server-profile.service",
            unit_text(&[
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
        ));
        units.push(Unit::new(
            "pki-server-publish-ca.service",
            unit_text(&[
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
        ));
    } else {
        units.push(Unit::new(
            "node-client-ca.service",
            unit_text(&[
                ("Unit", vec![l("Description=fetch the pki-server listener CA that node-client trusts"), l("Wants=network-online.target"), l("After=network-online.target"), format!("ConditionPathExists=!{PKI_CA}")]),
                (
                    "Service",
                    vec![
                        l("Type=oneshot"),
                        l("RemainAfterExit=true"),
                        l("ExecStartPre=/usr/bin/mkdir -p /etc/kube-aws-pki"),
                        format!(
                            "ExecStart=/usr/bin/docker run --rm --net host -v /etc/kube-aws-pki:/out public.ecr.aws/aws-cli/aws-cli s3 cp s3://{config_bucket}/ca/pki-server-ca.pem /out/pki-ca.pem"
                        ),
                        l("Restart=on-failure"),
                        l("RestartSec=10"),
                    ],
                ),
                ("Install", vec![l("WantedBy=multi-user.target")]),
            ]),
        ));
        units.push(Unit::new(
            "node-client-node-env.service",
            unit_text(&[
                (
                    "Unit",
                    vec![
                        l("Description=this instance's node name and address for node-client"),
                        l("Requires=coreos-metadata.service"),
                        l("After=coreos-metadata.service"),
                    ],
                ),
                (
                    "Service",
                    vec![
                        l("Type=oneshot"),
                        l("RemainAfterExit=true"),
                        l("EnvironmentFile=/run/metadata/flatcar"),
                        l("ExecStartPre=/usr/bin/mkdir -p /run/kube-aws-pki"),
                        format!(
                            "ExecStart=/bin/sh -c 'printf \"NODE_NAME=%%s\\nNODE_IP_ARGS=--ip %%s\\n\" \"$COREOS_EC2_HOSTNAME\" \"$COREOS_EC2_IPV4_LOCAL\" > {NODE_ENV}'"
                        ),
                    ],
                ),
                ("Install", vec![l("WantedBy=multi-user.target")]),
            ]),
        ));
        // node-client's own units, as it ships them, with a drop-in that
        // orders them after the CA and the instance facts.
        let dropin = || Dropin {
            name: "10-cluster.conf".into(),
            contents: unit_text(&[
                (
                    "Unit",
                    vec![
                        l("Requires=node-client-ca.service node-client-node-env.service"),
                        l("After=node-client-ca.service node-client-node-env.service"),
                    ],
                ),
                ("Service", vec![format!("EnvironmentFile={NODE_ENV}")]),
            ]),
        };
        for (name, text) in [
            (
                "node-client-fetch.service",
                node_client::units::FETCH_SERVICE,
            ),
            (
                "node-client-renew.service",
                node_client::units::RENEW_SERVICE,
            ),
        ] {
            units.push(Unit {
                name: name.into(),
                enabled: true,
                contents: Some(text.into()),
                dropins: vec![dropin()],
            });
        }
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
    Unit::new(
        name,
        unit_text(&[
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
    )
}

fn role_units(spec: &ClusterSpec, role: Role) -> Vec<Unit> {
    let pki = certs::DIR;
    let p = certs::path;
    match role {
        Role::PkiServer => vec![],
        Role::Etcd => vec![cert_unit(
            "etcd-member.service",
            "etcd member",
            format!(
                "ExecStart=/usr/bin/docker run --rm --name etcd --net host -v {pki}:{pki}:ro -v /var/lib/etcd:/var/lib/etcd quay.io/coreos/etcd:v{} etcd --data-dir /var/lib/etcd --cert-file {} --key-file {} --trusted-ca-file {} --client-cert-auth --peer-cert-file {} --peer-key-file {} --peer-trusted-ca-file {} --peer-client-cert-auth --listen-client-urls https://0.0.0.0:2379 --listen-peer-urls https://0.0.0.0:2380",
                spec.etcd_version,
                p("etcd-member.crt"),
                p("etcd-member.key"),
                p("etcd-ca.crt"),
                p("etcd-member.crt"),
                p("etcd-member.key"),
                p("etcd-ca.crt"),
            ),
        )],
        Role::Controller => vec![cert_unit(
            "kube-apiserver.service",
            "Kubernetes API server (minimal; issue #9)",
            format!(
                "ExecStart=/usr/bin/docker run --rm --name kube-apiserver --net host -v {pki}:{pki}:ro registry.k8s.io/kube-apiserver:v{} kube-apiserver --secure-port 6443 --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --service-cluster-ip-range {} --etcd-cafile {} --etcd-certfile {} --etcd-keyfile {} --tls-cert-file {} --tls-private-key-file {} --client-ca-file {} --kubelet-client-certificate {} --kubelet-client-key {} --proxy-client-cert-file {} --proxy-client-key-file {} --requestheader-client-ca-file {}",
                spec.kubernetes_version,
                spec.service_cidr,
                p("etcd-ca.crt"),
                p("apiserver-etcd-client.crt"),
                p("apiserver-etcd-client.key"),
                p("apiserver.crt"),
                p("apiserver.key"),
                p("ca.crt"),
                p("apiserver-kubelet-client.crt"),
                p("apiserver-kubelet-client.key"),
                p("front-proxy-client.crt"),
                p("front-proxy-client.key"),
                p("front-proxy-ca.crt"),
            ),
        )],
        Role::Worker => vec![cert_unit(
            "kubelet.service",
            "Kubernetes node agent (minimal; issue #9)",
            format!(
                "ExecStart=/opt/bin/kubelet --anonymous-auth=false --authorization-mode=Webhook --tls-cert-file {} --tls-private-key-file {} --client-ca-file {} --cluster-dns {} --kubeconfig {}",
                p("kubelet.crt"),
                p("kubelet.key"),
                p("ca.crt"),
                spec.cluster_dns,
                p("kubelet.conf"),
            ),
        )],
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
                assert!(
                    fetch["contents"]
                        .as_str()
                        .expect("contents")
                        .contains("node-client fetch-cert --role ${NODE_ROLE}")
                );
                let env = v["storage"]["files"]
                    .as_array()
                    .expect("files")
                    .iter()
                    .find(|f| f["path"] == node_client::units::ENV_FILE)
                    .expect("node-client env file");
                assert!(
                    env["contents"]["source"]
                        .as_str()
                        .expect("source")
                        .contains(&format!("NODE_ROLE={}%0A", role.name()))
                );
            }
        }
    }

    #[test]
    fn every_unit_cert_path_is_a_node_client_file() {
        let spec = spec();
        for role in Role::ALL {
            let known = certs::paths(role).expect("node-client's profile");
            for unit in config(&spec, role).systemd.units {
                let text = unit.contents.clone().unwrap_or_default()
                    + &unit
                        .dropins
                        .iter()
                        .map(|d| d.contents.as_str())
                        .collect::<String>();
                for word in text.split_whitespace() {
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
