//! What runs on each node role, rendered into that role's Ignition.
//!
//! - `etcd.rs`: the etcd release (checksum-verified), its data volume,
//!   membership from the etcd auto scaling group (`node-client etcd-join`)
//!   and the `etcd-member` unit.
//! - `control_plane.rs`: kube-apiserver, kube-controller-manager and
//!   kube-scheduler as static pods of the controllers' kubelet.
//! - `kubelet.rs`: containerd, the CNI plugins, the kubelet and its
//!   KubeletConfiguration, kube-proxy (controllers and workers).
//! - `addons.rs`: the RBAC bindings and add-on manifests the controllers apply.
//! - `static_pods.rs`: each static pod's template and unit (so reloads restart it).
//! - `updates.rs`: Flatcar's update strategy per role; SSH access.
//!
//! Every certificate path comes from `certs.rs` (node-client's own list) and
//! every address from the spec; `provisioner/tests/ignition.rs` cross-checks
//! both. Inputs: the spec (`spec.rs`) and the pins (`pins.rs`); the add-on
//! manifests are templates in `provisioner/templates/addons/`.

pub mod addons;
pub mod control_plane;
pub mod etcd;
pub mod kubelet;
pub mod static_pods;
pub mod updates;

use crate::ignition::{File, Filesystem, Unit};
use crate::spec::{ClusterSpec, Role};

/// Where downloaded release archives are kept before they are unpacked.
pub const DOWNLOADS: &str = "/opt/downloads";
/// Static pod manifests the kubelet runs.
pub const MANIFESTS: &str = "/etc/kubernetes/manifests";
/// Per-boot facts of the instance (node name, address), from the instance
/// metadata: `NODE_NAME`, `NODE_IP`, `NODE_IP_ARGS`.
pub const NODE_ENV: &str = "/run/kube-aws-pki/node.env";

/// The files, filesystems and units one role adds to its Ignition.
#[derive(Debug, Default)]
pub struct Parts {
    /// Files.
    pub files: Vec<File>,
    /// Filesystems.
    pub filesystems: Vec<Filesystem>,
    /// systemd units.
    pub units: Vec<Unit>,
}

impl Parts {
    fn extend(&mut self, other: Parts) {
        self.files.extend(other.files);
        self.filesystems.extend(other.filesystems);
        self.units.extend(other.units);
    }
}

/// Everything `role` runs besides node-client.
pub fn parts(spec: &ClusterSpec, role: Role) -> Parts {
    let mut p = Parts::default();
    match role {
        Role::PkiServer => {}
        Role::Etcd => p.extend(etcd::parts(spec)),
        Role::Controller => {
            p.extend(kubelet::parts(spec, role));
            p.extend(control_plane::parts(spec));
            p.extend(addons::parts(spec));
        }
        Role::Worker => p.extend(kubelet::parts(spec, role)),
    }
    p.extend(updates::parts(spec, role));
    p
}

/// A systemd unit file from sections of lines.
pub fn unit_text(sections: &[(&str, Vec<String>)]) -> String {
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

/// `&str` to `String`, for unit lines.
pub fn l(s: &str) -> String {
    s.to_string()
}

/// A long command line as a unit `ExecStart=` with one flag per continued line.
pub fn exec(program: &str, args: &[String]) -> String {
    let mut s = format!("ExecStart={program}");
    for a in args {
        s.push_str(" \\\n  ");
        s.push_str(a);
    }
    s
}

/// A oneshot that unpacks a release archive Ignition downloaded (and checked
/// against its SHA-256) into `dir`, once per `version` (a `.v<version>` marker).
/// `tar_args` follow `-C <dir>` (members, `--strip-components`).
pub fn unpack_unit(
    name: &str,
    description: &str,
    version: &str,
    archive: &str,
    dir: &str,
    tar_args: &str,
) -> Unit {
    Unit::static_unit(
        name,
        unit_text(&[
            (
                "Unit",
                vec![
                    format!("Description={description}"),
                    format!("ConditionPathExists=!{dir}/.v{version}"),
                ],
            ),
            (
                "Service",
                vec![
                    l("Type=oneshot"),
                    l("RemainAfterExit=true"),
                    format!("ExecStartPre=/usr/bin/mkdir -p {dir}"),
                    format!("ExecStart=/usr/bin/tar -xzf {archive} -C {dir} {tar_args}"),
                    format!("ExecStartPost=/usr/bin/touch {dir}/.v{version}"),
                ],
            ),
        ]),
    )
}

/// JSON text of a Kubernetes object or config (serde_json values always serialise).
pub fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}
