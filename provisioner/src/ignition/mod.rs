//! User data: one Ignition spec 3 config per role, built from serde structs.
//!
//! Flatcar runs Ignition once, on first boot. The config installs node-client
//! (and pki-server on its role) from the cluster's config bucket, writes their
//! systemd units, and orders `node-client fetch-cert --role <role>` before the
//! etcd and Kubernetes units. The Kubernetes units are minimal (issue #9 fleshes
//! them out); every certificate path they name comes from `certs.rs`.
//! No secret is ever placed here: user data is readable through IMDS.

pub mod node;

use crate::ignition::node::{l, unit_text};
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
    /// Users (the `core` user's SSH keys, when SSH is on).
    #[serde(skip_serializing_if = "Passwd::is_empty")]
    pub passwd: Passwd,
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
    /// The config to fetch and use instead of this one (user data pointers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigRef>,
}

/// `ignition.config`: replace this config with a fetched one.
#[derive(Debug, Serialize)]
pub struct ConfigRef {
    /// The replacement.
    pub replace: Contents,
}

/// The `passwd` section.
#[derive(Debug, Default, Serialize)]
pub struct Passwd {
    /// Users.
    pub users: Vec<User>,
}

impl Passwd {
    fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// One user.
#[derive(Debug, Serialize)]
pub struct User {
    /// Login name.
    pub name: String,
    /// OpenSSH public keys.
    #[serde(rename = "sshAuthorizedKeys")]
    pub ssh_authorized_keys: Vec<String>,
}

/// The `storage` section.
#[derive(Debug, Serialize)]
pub struct Storage {
    /// Filesystems to create (the etcd data volume).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filesystems: Vec<Filesystem>,
    /// Files to write.
    pub files: Vec<File>,
}

/// A filesystem Ignition creates on a block device (kept if it already has one).
#[derive(Debug, Serialize)]
pub struct Filesystem {
    /// Block device.
    pub device: String,
    /// `ext4`.
    pub format: String,
    /// Filesystem label (mounted by label).
    pub label: String,
    /// Never wipe an existing filesystem.
    #[serde(rename = "wipeFilesystem")]
    pub wipe_filesystem: bool,
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

/// File contents by URL (`data:`, `s3://` or `https://`).
#[derive(Debug, Serialize)]
pub struct Contents {
    /// Source URL.
    pub source: String,
    /// The hash Ignition checks before writing (every `https://` download).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// `contents.verification`.
#[derive(Debug, Serialize)]
pub struct Verification {
    /// `sha256-<hex>`.
    pub hash: String,
}

impl Contents {
    /// Contents from a URL Ignition trusts by its transport (data:, s3://).
    pub fn url(source: String) -> Contents {
        Contents {
            source,
            verification: None,
        }
    }

    /// Contents downloaded and checked against a SHA-256.
    pub fn verified(source: String, sha256: &str) -> Contents {
        Contents {
            source,
            verification: Some(Verification {
                hash: format!("sha256-{sha256}"),
            }),
        }
    }
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
    /// Mask it (a unit of the image that must not run).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mask: bool,
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
    /// An enabled unit with its file text.
    pub fn new(name: &str, contents: String) -> Unit {
        Unit {
            name: name.into(),
            enabled: true,
            mask: false,
            contents: Some(contents),
            dropins: vec![],
        }
    }

    /// A unit that runs only when another pulls it in (no `[Install]`).
    pub fn static_unit(name: &str, contents: String) -> Unit {
        Unit {
            enabled: false,
            ..Unit::new(name, contents)
        }
    }

    /// A masked unit of the image.
    pub fn masked(name: &str) -> Unit {
        Unit {
            name: name.into(),
            enabled: false,
            mask: true,
            contents: None,
            dropins: vec![],
        }
    }

    /// Only a drop-in for a unit the image ships.
    pub fn dropin(name: &str, dropin: &str, contents: String) -> Unit {
        Unit {
            name: name.into(),
            enabled: false,
            mask: false,
            contents: None,
            dropins: vec![Dropin {
                name: dropin.into(),
                contents,
            }],
        }
    }
}

impl File {
    /// A text file carried in the config as a `data:` URL.
    pub fn text(path: &str, mode: u32, text: &str) -> File {
        File {
            path: path.into(),
            mode,
            overwrite: true,
            contents: Contents::url(data_url(text)),
        }
    }

    /// A file downloaded at first boot and checked against its pinned SHA-256.
    pub fn download(path: &str, mode: u32, d: &crate::spec::pins::Download) -> File {
        File {
            path: path.into(),
            mode,
            overwrite: true,
            contents: Contents::verified(d.url.clone(), &d.sha256),
        }
    }

    /// A file from the cluster's config bucket (read with the instance role).
    pub fn s3(path: &str, mode: u32, bucket: &str, key: &str) -> File {
        File {
            path: path.into(),
            mode,
            overwrite: true,
            contents: Contents::url(format!("s3://{bucket}/{key}")),
        }
    }
}

/// Where nodes keep the pki-server listener CA (node-client's VAULT_CACERT).
pub const PKI_CA: &str = node_client::units::CA_FILE;
/// The config bucket key pki-server publishes its listener CA under (the
/// IAM policies name it: `policies/iam/*.json`).
pub const CA_KEY: &str = "ca/pki-server-ca.pem";
/// Per-boot facts of the instance (node name, address) for node-client.
pub const NODE_ENV: &str = crate::ignition::node::NODE_ENV;

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

/// The text of a `data:,` URL made by [`data_url`]; None for another URL
/// or a malformed escape.
pub fn data_text(source: &str) -> Option<String> {
    let b = source.strip_prefix("data:,")?.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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

/// `s3://<config bucket>/ca/pki-server-ca.pem`: where pki-server publishes
/// its listener CA (`pki-server publish-ca`) and nodes fetch it
/// (`node-client fetch-ca`).
pub fn ca_object(spec: &ClusterSpec) -> String {
    let (_, config_bucket, _) = buckets(spec);
    format!("s3://{config_bucket}/{CA_KEY}")
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

/// The profile variables that name this cluster's API and service network:
/// node-client puts them in certificate requests and kubeconfigs
/// (`NODE_CLIENT_VARS`), pki-server's roles allow them (`apply-profile --var`).
/// Both sides must get the same values.
pub fn cluster_vars(spec: &ClusterSpec) -> Vec<(&'static str, String)> {
    vec![
        ("api_dns", api_dns(spec)),
        ("cluster_domain", spec.cluster_domain.clone()),
        (
            "kubernetes_service_ip",
            spec.kubernetes_service_ip().to_string(),
        ),
    ]
}

/// `apply-profile` variables that tie the profile to this cluster.
fn profile_vars(spec: &ClusterSpec) -> String {
    let mut v = format!("--var aws_iam_server_id={}", aws_server_id(spec));
    for (k, val) in cluster_vars(spec) {
        v.push_str(&format!(" --var {k}={val}"));
    }
    if let Some(r) = &spec.region {
        v.push_str(&format!(" --var aws_region={r}"));
    }
    v
}

/// The Ignition config of `role`.
pub fn config(spec: &ClusterSpec, role: Role) -> Config {
    let (pki_bucket, config_bucket, _) = buckets(spec);
    let mut files = vec![File::s3(
        node_client::units::BINARY_PATH,
        0o755,
        &config_bucket,
        "bin/node-client",
    )];
    if role != Role::PkiServer {
        // Settings shared by every node of the role; the per-instance ones
        // (node name, address) come from NODE_ENV, written at boot from the
        // instance metadata by node-client-node-env.service.
        files.push(File::text(
            node_client::units::ENV_FILE,
            0o644,
            &format!(
                "VAULT_ADDR=https://{}:8200\nVAULT_CACERT={PKI_CA}\nNODE_ROLE={}\nKUBE_AWS_PKI_CLUSTER={}\nNODE_CLIENT_AUTH=aws\nNODE_CLIENT_AWS_SERVER_ID={}\nNODE_CLIENT_VARS={}\n",
                pki_dns(spec),
                role.name(),
                spec.name,
                aws_server_id(spec),
                cluster_vars(spec)
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ));
    }
    let mut units = Vec::new();
    if role == Role::PkiServer {
        let mut policies = vec!["profile.toml".to_string()];
        policies.extend(policies::ACL.iter().map(|(r, _)| format!("acl/{r}.hcl")));
        for p in policies {
            files.push(File::s3(
                &format!("/etc/pki-server/policies/{p}"),
                0o644,
                &config_bucket,
                &format!("policies/{p}"),
            ));
        }
        files.push(File::s3(
            "/opt/bin/pki-server",
            0o755,
            &config_bucket,
            "bin/pki-server",
        ));
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
                        // pki-server caps its own connections below this.
                        l("LimitNOFILE=65536"),
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
                        format!(
                            "ExecStart=/opt/bin/pki-server publish-ca --cert /var/lib/pki-server/tls/ca.pem --to {}",
                            ca_object(spec)
                        ),
                        l("Restart=on-failure"),
                        l("RestartSec=10"),
                    ],
                ),
                ("Install", vec![l("WantedBy=multi-user.target")]),
            ]),
        ));
    } else {
        // No ConditionPathExists: fetch-ca runs at every boot, so a CA that
        // pki-server re-published (a replaced instance) is picked up; an
        // unchanged one is not rewritten, and an S3 outage keeps the file.
        units.push(Unit::new(
            "node-client-ca.service",
            unit_text(&[
                (
                    "Unit",
                    vec![
                        l("Description=fetch the pki-server listener CA that node-client trusts"),
                        l("Wants=network-online.target"),
                        l("After=network-online.target"),
                    ],
                ),
                (
                    "Service",
                    vec![
                        l("Type=oneshot"),
                        l("RemainAfterExit=true"),
                        format!(
                            "ExecStart={} fetch-ca --from {} --out {PKI_CA} --keep-existing",
                            node_client::units::BINARY_PATH,
                            ca_object(spec)
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
                            "ExecStart=/bin/sh -c 'printf \"NODE_NAME=%%s\\nNODE_IP=%%s\\nNODE_IP_ARGS=--ip %%s\\n\" \"$COREOS_EC2_HOSTNAME\" \"$COREOS_EC2_IPV4_LOCAL\" \"$COREOS_EC2_IPV4_LOCAL\" > {NODE_ENV}'"
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
                mask: false,
                contents: Some(text.into()),
                dropins: vec![dropin()],
            });
        }
    }
    let parts = crate::ignition::node::parts(spec, role);
    files.extend(parts.files);
    units.extend(parts.units);
    Config {
        ignition: Ignition {
            version: VERSION.into(),
            config: None,
        },
        passwd: Passwd {
            users: crate::ignition::node::updates::users(spec, role),
        },
        storage: Storage {
            filesystems: parts.filesystems,
            files,
        },
        systemd: Systemd { units },
    }
}

/// The full Ignition config of `role` as JSON: uploaded to the config bucket
/// as [`config_key`], which the user data points at.
pub fn render(spec: &ClusterSpec, role: Role) -> String {
    // Serialising plain structs of strings, bools and integers cannot fail.
    serde_json::to_string(&config(spec, role)).unwrap_or_default()
}

/// The config bucket key of a role's full Ignition config, named by its
/// content: a new config is a new object, so instances of an older launch
/// template version (or an apply cut off before the launch templates) still
/// find the config their user data pins.
pub fn config_key(spec: &ClusterSpec, role: Role) -> String {
    let sha = crate::sha256_hex(render(spec, role).as_bytes());
    format!("ignition/{}-{}.json", role.name(), &sha[..16])
}

/// The user data of `role`: a pointer to the full config in the config
/// bucket, pinned by its SHA-256 (EC2 user data is limited to 16 KiB; the
/// full config with the add-on manifests is larger). A changed config
/// changes this text, so the launch template gets a new version.
pub fn user_data(spec: &ClusterSpec, role: Role) -> String {
    let full = render(spec, role);
    let (_, config_bucket, _) = buckets(spec);
    let pointer = Config {
        ignition: Ignition {
            version: VERSION.into(),
            config: Some(ConfigRef {
                replace: Contents::verified(
                    format!("s3://{config_bucket}/{}", config_key(spec, role)),
                    &crate::sha256_hex(full.as_bytes()),
                ),
            }),
        },
        passwd: Passwd::default(),
        storage: Storage {
            filesystems: vec![],
            files: vec![],
        },
        systemd: Systemd { units: vec![] },
    };
    serde_json::to_string(&pointer).unwrap_or_default()
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

    /// Every `certs::DIR/...` path in a text.
    pub(crate) fn pki_paths(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find(crate::certs::DIR) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || "._/-".contains(c)))
                .unwrap_or(tail.len());
            out.push(tail[..end].trim_end_matches('/').to_string());
            rest = &tail[end..];
        }
        out
    }

    #[test]
    fn every_cert_path_in_units_and_files_is_a_node_client_file() {
        let spec = spec();
        for role in Role::ALL {
            let known = crate::certs::paths(role).expect("node-client's profile");
            let config = config(&spec, role);
            let mut texts: Vec<(String, String)> = config
                .systemd
                .units
                .iter()
                .map(|u| {
                    (
                        u.name.clone(),
                        u.contents.clone().unwrap_or_default()
                            + &u.dropins
                                .iter()
                                .map(|d| d.contents.as_str())
                                .collect::<String>(),
                    )
                })
                .collect();
            for f in &config.storage.files {
                if f.contents.source.starts_with("data:,") {
                    let text = data_text(&f.contents.source).expect("a valid data URL");
                    texts.push((f.path.clone(), text));
                }
            }
            let mut seen = 0;
            for (name, text) in texts {
                for path in pki_paths(&text) {
                    seen += 1;
                    if path == crate::certs::DIR {
                        continue; // the folder itself (a mount, --out)
                    }
                    assert!(
                        known.contains(&path),
                        "{role}: {name} names {path}, not a node-client file"
                    );
                }
            }
            if role != Role::PkiServer {
                assert!(seen > 3, "{role}: the check saw only {seen} paths");
            }
        }
    }

    #[test]
    fn pki_server_may_hold_65536_open_files() {
        let config = config(&spec(), Role::PkiServer);
        let unit = config
            .systemd
            .units
            .iter()
            .find(|u| u.name == "pki-server.service")
            .expect("pki-server.service");
        let text = unit.contents.as_deref().expect("contents");
        let service: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "[Service]")
            .take_while(|l| !l.is_empty())
            .collect();
        assert!(service.contains(&"LimitNOFILE=65536"), "{text}");
    }

    #[test]
    fn user_data_is_a_pointer_pinned_to_the_full_config() {
        let spec = spec();
        for role in Role::ALL {
            let ud: serde_json::Value =
                serde_json::from_str(&user_data(&spec, role)).expect("json");
            let replace = &ud["ignition"]["config"]["replace"];
            assert_eq!(
                replace["source"],
                format!("s3://{}/{}", buckets(&spec).1, config_key(&spec, role))
            );
            assert_eq!(
                replace["verification"]["hash"],
                format!(
                    "sha256-{}",
                    crate::sha256_hex(render(&spec, role).as_bytes())
                )
            );
            assert!(user_data(&spec, role).len() < 1024);
        }
    }

    #[test]
    fn data_url_escapes_newlines_and_spaces() {
        assert_eq!(data_url("A=b c\n"), "data:,A=b%20c%0A");
        assert_eq!(
            data_text(&data_url("A=b c\n%")).as_deref(),
            Some("A=b c\n%")
        );
        assert_eq!(data_text("data:,bad%4"), None);
        assert_eq!(data_text("s3://bucket/key"), None);
    }
}
