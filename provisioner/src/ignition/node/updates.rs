//! Flatcar OS updates per role, and SSH access.
//!
//! Flatcar's update-engine installs a new OS image in the passive partition;
//! a reboot activates it. Per role (`[updates]` in the spec):
//! - `coordinated` (controllers and workers by default): locksmithd is masked
//!   and the Flatcar update operator (an add-on) drains and reboots one node
//!   at a time;
//! - `off` (etcd by default): updates are downloaded, nothing reboots by
//!   itself: the operator reboots or replaces the member (docs/cluster.md);
//! - `reboot`: reboot as soon as an update is installed;
//! - `disabled`: no update server at all.
//!
//! SSH: with `ssh = "none"` (the default) sshd is masked and no key is set;
//! with `per-role`, the role's public key is the `core` user's only key.

use super::Parts;
use crate::ignition::{File, Unit, User};
use crate::spec::{ClusterSpec, Role, SshAccess, UpdateStrategy};

/// Flatcar's update configuration file.
pub const UPDATE_CONF: &str = "/etc/flatcar/update.conf";

/// The update.conf text for a strategy.
pub fn update_conf(spec: &ClusterSpec, s: UpdateStrategy) -> String {
    let group = &spec.flatcar_channel;
    match s {
        UpdateStrategy::Coordinated | UpdateStrategy::Off => {
            format!("GROUP={group}\nREBOOT_STRATEGY=off\n")
        }
        UpdateStrategy::Reboot => format!("GROUP={group}\nREBOOT_STRATEGY=reboot\n"),
        UpdateStrategy::Disabled => {
            format!("GROUP={group}\nSERVER=disabled\nREBOOT_STRATEGY=off\n")
        }
    }
}

/// The update and access parts of a role.
pub fn parts(spec: &ClusterSpec, role: Role) -> Parts {
    let mut p = Parts::default();
    if role != Role::PkiServer {
        let s = spec.update_strategy(role);
        p.files
            .push(File::text(UPDATE_CONF, 0o644, &update_conf(spec, s)));
        match s {
            UpdateStrategy::Coordinated | UpdateStrategy::Off => {
                p.units.push(Unit::masked("locksmithd.service"));
            }
            UpdateStrategy::Disabled => {
                p.units.push(Unit::masked("locksmithd.service"));
                p.units.push(Unit::masked("update-engine.service"));
            }
            UpdateStrategy::Reboot => {}
        }
    }
    if spec.ssh == SshAccess::None {
        p.units.push(Unit::masked("sshd.socket"));
        p.units.push(Unit::masked("sshd.service"));
    }
    p
}

/// The `core` user's SSH keys: the role's public key with `ssh = "per-role"`
/// (loaded by `ssh::load_or_create` into the spec), none otherwise.
pub fn users(spec: &ClusterSpec, role: Role) -> Vec<User> {
    match (spec.ssh, spec.ssh_keys.get(&role)) {
        (SshAccess::PerRole, Some(key)) => vec![User {
            name: "core".into(),
            ssh_authorized_keys: vec![key.clone()],
        }],
        _ => vec![],
    }
}
