//! The certificate, key, CA and kubeconfig paths the rendered units name.
//!
//! node-client owns the list: what each role gets is `[[node_certs]]` in
//! `policies/profile.toml`, built into node-client. This module only joins
//! those file names to the folder node-client writes; the test
//! `every_unit_cert_path_is_a_node_client_file` (ignition.rs) checks that
//! every path a unit names is one node-client writes for that role.

use crate::spec::Role;
use node_client::profile::Profile;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::LazyLock;

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

/// node-client's built-in profile: a constant of the binary, parsed by
/// node-client's own tests, so a failure here is a build defect.
static PROFILE: LazyLock<Profile> =
    LazyLock::new(|| Profile::embedded().expect("node-client's embedded profile parses"));

/// The credential files a process needs that is given `paths`: each path in
/// `DIR`, and for a kubeconfig node-client writes, the CA bundle,
/// certificate and key it names. Sorted, without repeats.
pub fn needed_files<S: AsRef<str>>(paths: impl IntoIterator<Item = S>) -> Vec<String> {
    let mut out = BTreeSet::new();
    for p in paths {
        let Some(name) = p
            .as_ref()
            .strip_prefix(DIR)
            .and_then(|n| n.strip_prefix('/'))
        else {
            continue;
        };
        out.insert(path(name));
        for c in PROFILE.node_certs() {
            if let Some((file, refs)) = c.kubeconfig_refs()
                && file == name
            {
                out.extend(refs.iter().map(|r| path(r)));
            }
        }
    }
    out.into_iter().collect()
}

/// The paths in `DIR` that command-line flags name (`--flag=/etc/kubernetes/pki/x`).
pub fn flag_paths(args: &[String]) -> Vec<String> {
    args.iter()
        .filter_map(|a| a.split_once('=').map(|(_, v)| v))
        .filter(|v| v.starts_with(&format!("{DIR}/")))
        .map(str::to_string)
        .collect()
}

/// Read-only hostPath volumes and mounts for exactly `files` (each at its
/// own path), instead of the whole folder: a pod sees only its own keys.
pub fn pod_mounts(files: &[String]) -> (Vec<Value>, Vec<Value>) {
    files
        .iter()
        .map(|f| {
            let name = format!(
                "pki-{}",
                f.rsplit('/')
                    .next()
                    .unwrap_or(f)
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
            );
            (
                json!({"name": name, "hostPath": {"path": f, "type": "File"}}),
                json!({"name": name, "mountPath": f, "readOnly": true}),
            )
        })
        .unzip()
}
