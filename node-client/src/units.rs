//! The systemd units the provisioner places on nodes (`systemd/` in this
//! crate): a oneshot that fetches before the etcd and Kubernetes units, and
//! a service that keeps renewing. Both read
//! `/etc/kube-aws-pki/node-client.env` (VAULT_ADDR, VAULT_CACERT,
//! NODE_CLIENT_TOKEN_FILE, NODE_ROLE, NODE_NAME, NODE_IP_ARGS,
//! KUBE_AWS_PKI_CLUSTER).

/// `node-client-fetch.service`.
pub const FETCH_SERVICE: &str = include_str!("../systemd/node-client-fetch.service");
/// `node-client-renew.service`.
pub const RENEW_SERVICE: &str = include_str!("../systemd/node-client-renew.service");
/// Where the units expect the binary.
pub const BINARY_PATH: &str = "/opt/bin/node-client";
/// Where the units expect their settings.
pub const ENV_FILE: &str = "/etc/kube-aws-pki/node-client.env";
/// Where `fetch-ca` writes pki-server's CA certificate (VAULT_CACERT).
pub const CA_FILE: &str = "/etc/kube-aws-pki/pki-ca.pem";
/// The directory the units write to.
pub const PKI_DIR: &str = crate::profile::DEFAULT_PKI_DIR;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_name_the_binary_the_env_file_and_the_pki_dir() {
        for u in [FETCH_SERVICE, RENEW_SERVICE] {
            assert!(u.contains(BINARY_PATH));
            assert!(u.contains(ENV_FILE));
            assert!(u.contains(&format!("--out {PKI_DIR}")));
        }
        assert!(FETCH_SERVICE.contains("Type=oneshot"));
        assert!(FETCH_SERVICE.contains("Before=etcd-member.service"));
        assert!(RENEW_SERVICE.contains("renew --watch"));
    }
}
