//! Where node-client writes each role's certificates, as the rendered units
//! reference them.
//!
//! This is the ONE list the provisioner uses for certificate paths: every
//! path a unit in `ignition.rs` names comes from `files(role)`. node-client
//! writes a role's files flat into [`DIR`]; once its own list (the
//! `[[node_certs]]` section of `policies/profile.toml`) lands, the cross-check
//! test `every_unit_cert_path_is_a_node_client_file` compares the two.

use crate::spec::Role;

/// The folder node-client writes into, flat.
pub const DIR: &str = "/etc/kubernetes/pki";

/// One certificate node-client fetches: `<name>.crt`, `<name>.key` and the
/// issuing CA `<ca>.crt`, all in [`DIR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertFile {
    /// Base name of the certificate and key files.
    pub name: &'static str,
    /// Base name of the CA certificate file (the PKI mount).
    pub ca: &'static str,
}

impl CertFile {
    /// Path of the certificate.
    pub fn cert(&self) -> String {
        format!("{DIR}/{}.crt", self.name)
    }
    /// Path of the private key.
    pub fn key(&self) -> String {
        format!("{DIR}/{}.key", self.name)
    }
    /// Path of the issuing CA certificate.
    pub fn ca(&self) -> String {
        format!("{DIR}/{}.crt", self.ca)
    }
}

const fn c(name: &'static str, ca: &'static str) -> CertFile {
    CertFile { name, ca }
}

/// etcd member: peer and server certificate, and a health-check client.
pub const ETCD_MEMBER: CertFile = c("etcd-member", "etcd-ca");
/// etcd health check client.
pub const ETCD_HEALTHCHECK: CertFile = c("etcd-healthcheck-client", "etcd-ca");
/// kube-apiserver's client certificate towards etcd.
pub const APISERVER_ETCD_CLIENT: CertFile = c("apiserver-etcd-client", "etcd-ca");
/// kube-apiserver serving certificate.
pub const APISERVER: CertFile = c("apiserver", "kube-apiserver-ca");
/// kube-apiserver's client certificate towards kubelets.
pub const APISERVER_KUBELET_CLIENT: CertFile = c("apiserver-kubelet-client", "kube-apiserver-ca");
/// kubelet client certificate.
pub const KUBELET_CLIENT: CertFile = c("kubelet-client", "kube-apiserver-ca");
/// kubelet serving certificate.
pub const KUBELET_SERVING: CertFile = c("kubelet-serving", "kube-apiserver-ca");
/// kube-proxy client certificate.
pub const KUBE_PROXY: CertFile = c("kube-proxy", "kube-apiserver-ca");
/// Front proxy (aggregation layer) client certificate.
pub const FRONT_PROXY_CLIENT: CertFile = c("front-proxy-client", "front-proxy-ca");

/// Every certificate node-client fetches for `role` (pki-server fetches none).
pub fn files(role: Role) -> &'static [CertFile] {
    match role {
        Role::PkiServer => &[],
        Role::Etcd => &[ETCD_MEMBER, ETCD_HEALTHCHECK],
        Role::Controller => &[
            APISERVER_ETCD_CLIENT,
            ETCD_HEALTHCHECK,
            APISERVER,
            APISERVER_KUBELET_CLIENT,
            KUBELET_CLIENT,
            KUBELET_SERVING,
            KUBE_PROXY,
            FRONT_PROXY_CLIENT,
        ],
        Role::Worker => &[KUBELET_CLIENT, KUBELET_SERVING, KUBE_PROXY],
    }
}

/// Every path (cert, key, CA) node-client writes for `role`.
pub fn paths(role: Role) -> Vec<String> {
    let mut v: Vec<String> = files(role)
        .iter()
        .flat_map(|f| [f.cert(), f.key(), f.ca()])
        .collect();
    v.sort();
    v.dedup();
    v
}
