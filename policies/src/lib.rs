//! What pki-server, node-client and the provisioner must agree on, in one
//! place (docs/decisions/0005-policies-crate.md):
//!
//! - the security profile and the policy files of this folder, embedded at
//!   build time ([`PROFILE`], [`ACL`], [`mod@iam`]);
//! - which bytes may become a trust root ([`ca_bundle::check`]): pki-server's
//!   `publish-ca` publishes, and node-client's `fetch-ca` installs, only what
//!   it accepts;
//! - the `s3://BUCKET/KEY` syntax both sides parse ([`s3::Location`]).
//!
//! Pure: no I/O, no AWS SDK, no HTTP.

pub mod ca_bundle;
pub mod s3;

/// `profile.toml`: PKI mounts and roles, ACL policies, token roles, login
/// methods and what each node role gets (`[[node_certs]]`).
pub const PROFILE: &str = include_str!("../profile.toml");

/// The ACL policies `profile.toml` names, as (name, HCL text).
pub const ACL: [(&str, &str); 4] = [
    ("etcd", include_str!("../acl/etcd.hcl")),
    ("controller", include_str!("../acl/controller.hcl")),
    ("worker", include_str!("../acl/worker.hcl")),
    ("operator", include_str!("../acl/operator.hcl")),
];

/// The IAM policy templates of the machine roles (`iam/*.json`).
pub mod iam {
    /// pki-server's.
    pub const PKI_SERVER: &str = include_str!("../iam/pki-server.json");
    /// etcd members'.
    pub const ETCD: &str = include_str!("../iam/etcd.json");
    /// Controllers'.
    pub const CONTROLLER: &str = include_str!("../iam/controller.json");
    /// Workers'.
    pub const WORKER: &str = include_str!("../iam/worker.json");
    /// All of them, by file name.
    pub const ALL: [(&str, &str); 4] = [
        ("pki-server", PKI_SERVER),
        ("etcd", ETCD),
        ("controller", CONTROLLER),
        ("worker", WORKER),
    ];
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_policy_file_of_the_folder_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let names = |sub: &str, ext: &str| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(dir.join(sub))
                .unwrap()
                .flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(ext))
                        .map(str::to_string)
                })
                .collect();
            v.sort();
            v
        };
        let mut acl: Vec<String> = super::ACL.iter().map(|(n, _)| n.to_string()).collect();
        acl.sort();
        assert_eq!(names("acl", ".hcl"), acl);
        let mut iam: Vec<String> = super::iam::ALL.iter().map(|(n, _)| n.to_string()).collect();
        iam.sort();
        assert_eq!(names("iam", ".json"), iam);
        for (name, text) in super::ACL {
            assert!(
                super::PROFILE.contains(&format!("\"{name}\"")),
                "profile.toml does not name the policy {name}"
            );
            assert!(!text.trim().is_empty());
        }
    }
}
