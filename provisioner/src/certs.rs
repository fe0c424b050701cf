//! The certificate, key, CA and kubeconfig paths the rendered units name.
//!
//! node-client owns the list: what each role gets is `[[node_certs]]` in
//! `policies/profile.toml`, built into node-client. This module only joins
//! those file names to the folder node-client writes; the test
//! `every_unit_cert_path_is_a_node_client_file` (ignition.rs) checks that
//! every path a unit names is one node-client writes for that role.

use crate::spec::Role;

/// The folder node-client writes into, flat (its `--out` default).
pub const DIR: &str = node_client::units::PKI_DIR;

/// `DIR/name`.
pub fn path(name: &str) -> String {
    format!("{DIR}/{name}")
}

/// Every path node-client writes for `role` (none for pki-server).
pub fn paths(role: Role) -> anyhow::Result<Vec<String>> {
    if role == Role::PkiServer {
        return Ok(vec![]);
    }
    let profile = node_client::profile::Profile::embedded()?;
    Ok(profile
        .files(role.name())?
        .iter()
        .map(|f| path(f))
        .collect())
}
