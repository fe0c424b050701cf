//! etcd nodes: the pinned etcd release, its data volume, membership from the
//! etcd auto scaling group, and the `etcd-member` unit.
//!
//! Boot order: node-client-fetch (certificates) → etcd-install (unpack the
//! checksum-verified release) and var-lib-etcd.mount (the data volume) →
//! etcd-join (`node-client etcd-join --discover aws`: bootstraps a new cluster
//! from the group's instances, or removes members whose instances are gone and
//! adds this one) → etcd-member. etcd-join writes `ETCD_NAME`,
//! `ETCD_INITIAL_CLUSTER[_STATE|_TOKEN]` and the advertise URLs to
//! [`MEMBERSHIP_ENV`], which etcd reads as its own environment; the unit's
//! command line carries only what never changes: TLS files (the etcd CA's
//! CRL among them, [`CRL_FILE`]) and listen URLs.

use super::{DOWNLOADS, NODE_ENV, Parts, exec, l, unit_text, unpack_unit};
use crate::certs;
use crate::ignition::{File, Filesystem, Unit};
use crate::spec::ClusterSpec;

/// Where the etcd binaries are unpacked.
pub const BIN_DIR: &str = "/opt/etcd";
/// The data directory, on its own volume.
pub const DATA_DIR: &str = "/var/lib/etcd";
/// The block device of the data volume (the launch template's second volume;
/// Flatcar links NVMe EBS volumes to their `/dev/xvd*` names).
pub const DATA_DEVICE: &str = "/dev/xvdb";
/// Its filesystem label.
pub const DATA_LABEL: &str = "etcd-data";
/// The membership etcd-join decided.
pub const MEMBERSHIP_ENV: &str = "/run/kube-aws-pki/etcd.env";
/// The etcd CA's CRL, which node-client keeps current (the etcd member
/// entry's `crl_file`, DER). etcd reads it at every new client and peer
/// connection, so a rewritten file takes effect without a restart.
pub const CRL_FILE: &str = "etcd-ca.crl";
/// Metrics (plain HTTP) on loopback only.
pub const METRICS_URL: &str = "http://127.0.0.1:2381";

/// The `etcd-member.service` text.
pub fn member_unit() -> String {
    let p = certs::path;
    unit_text(&[
        (
            "Unit",
            vec![
                l("Description=etcd member (client and peer TLS with client certificates)"),
                l("Requires=etcd-join.service var-lib-etcd.mount"),
                l("After=etcd-join.service var-lib-etcd.mount"),
            ],
        ),
        (
            "Service",
            vec![
                l("Type=notify"),
                format!("EnvironmentFile={NODE_ENV}"),
                format!("EnvironmentFile={MEMBERSHIP_ENV}"),
                format!("Environment=ETCD_DATA_DIR={DATA_DIR}"),
                format!("Environment=ETCD_LISTEN_METRICS_URLS={METRICS_URL}"),
                exec(
                    &format!("{BIN_DIR}/etcd"),
                    &[
                        l("--listen-client-urls=https://${NODE_IP}:2379"),
                        l("--listen-peer-urls=https://${NODE_IP}:2380"),
                        format!("--cert-file={}", p("etcd-member.crt")),
                        format!("--key-file={}", p("etcd-member.key")),
                        format!("--trusted-ca-file={}", p("etcd-ca.crt")),
                        l("--client-cert-auth"),
                        format!("--client-crl-file={}", p(CRL_FILE)),
                        format!("--peer-cert-file={}", p("etcd-member.crt")),
                        format!("--peer-key-file={}", p("etcd-member.key")),
                        format!("--peer-trusted-ca-file={}", p("etcd-ca.crt")),
                        l("--peer-client-cert-auth"),
                        format!("--peer-crl-file={}", p(CRL_FILE)),
                        l("--auto-compaction-mode=periodic"),
                        l("--auto-compaction-retention=1h"),
                    ],
                ),
                l("Restart=always"),
                l("RestartSec=5"),
                l("LimitNOFILE=65536"),
                l("TimeoutStartSec=300"),
                l("NoNewPrivileges=true"),
                l("ProtectSystem=strict"),
                format!("ReadWritePaths={DATA_DIR}"),
                l("ProtectHome=true"),
                l("PrivateTmp=true"),
            ],
        ),
        ("Install", vec![l("WantedBy=multi-user.target")]),
    ])
}

/// The etcd node's parts.
pub fn parts(spec: &ClusterSpec) -> Parts {
    let pins = &spec.pins;
    let tarball = format!("{DOWNLOADS}/{}", pins.etcd_tarball.key);
    let top = pins.etcd_tarball.key.trim_end_matches(".tar.gz");
    let p = certs::path;
    Parts {
        files: vec![File::download(&tarball, 0o644, &pins.etcd_tarball)],
        filesystems: vec![Filesystem {
            device: DATA_DEVICE.into(),
            format: "ext4".into(),
            label: DATA_LABEL.into(),
            wipe_filesystem: false,
        }],
        units: vec![
            unpack_unit(
                "etcd-install.service",
                &format!(
                    "unpack etcd v{} (verified by Ignition against its SHA-256)",
                    pins.etcd
                ),
                &pins.etcd,
                &tarball,
                BIN_DIR,
                &format!("--strip-components=1 --no-same-owner {top}/etcd {top}/etcdctl"),
            ),
            Unit::new(
                "var-lib-etcd.mount",
                unit_text(&[
                    ("Unit", vec![l("Description=etcd data volume")]),
                    (
                        "Mount",
                        vec![
                            format!("What=/dev/disk/by-label/{DATA_LABEL}"),
                            format!("Where={DATA_DIR}"),
                            l("Type=ext4"),
                            l("Options=noatime"),
                        ],
                    ),
                    ("Install", vec![l("RequiredBy=etcd-member.service")]),
                ]),
            ),
            Unit::static_unit(
                "etcd-join.service",
                unit_text(&[
                    (
                        "Unit",
                        vec![
                            l("Description=etcd membership from the etcd auto scaling group"),
                            l(
                                "Requires=node-client-fetch.service etcd-install.service var-lib-etcd.mount",
                            ),
                            l(
                                "After=node-client-fetch.service etcd-install.service var-lib-etcd.mount",
                            ),
                        ],
                    ),
                    (
                        "Service",
                        vec![
                            l("Type=oneshot"),
                            l("RemainAfterExit=true"),
                            format!("EnvironmentFile={NODE_ENV}"),
                            format!("EnvironmentFile={}", node_client::units::ENV_FILE),
                            l("EnvironmentFile=/run/metadata/flatcar"),
                            exec(
                                node_client::units::BINARY_PATH,
                                &[
                                    l("etcd-join"),
                                    l("--discover aws"),
                                    l("--instance-id ${COREOS_EC2_INSTANCE_ID}"),
                                    l("--name ${NODE_NAME}"),
                                    l("--ip ${NODE_IP}"),
                                    format!("--cluster-token {}", spec.name),
                                    format!("--data-dir {DATA_DIR}"),
                                    format!("--etcdctl {BIN_DIR}/etcdctl"),
                                    format!("--cacert {}", p("etcd-ca.crt")),
                                    format!("--cert {}", p("etcd-member.crt")),
                                    format!("--key {}", p("etcd-member.key")),
                                    format!("--out {MEMBERSHIP_ENV}"),
                                ],
                            ),
                            // A wait that ran out (AWS, slow peers) is tried again.
                            l("Restart=on-failure"),
                            l("RestartSec=30"),
                        ],
                    ),
                ]),
            ),
            Unit::new("etcd-member.service", member_unit()),
        ],
    }
}
