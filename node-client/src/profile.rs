//! What each node role gets: the `[[node_certs]]` of `policies/profile.toml`,
//! the same file pki-server's profile is applied from (one place says what
//! each role gets; `pki-server apply-profile` checks that these entries list
//! exactly each node role's certificates).
//!
//! The profile is embedded at build time, so a node needs no copy of it;
//! `--profile FILE` reads another one.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `policies/profile.toml` as built into this binary.
pub const EMBEDDED: &str = policies::PROFILE;

/// The default output directory on a node.
pub const DEFAULT_PKI_DIR: &str = "/etc/kubernetes/pki";

/// Why a profile or a role cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The TOML does not parse.
    #[error("profile: {0}")]
    Parse(String),
    /// No such node role.
    #[error("unknown node role {0:?} (the profile has: {1})")]
    UnknownRole(String, String),
    /// A template names a variable nobody defined.
    #[error("{0}: unknown variable in {1:?}")]
    Unresolved(String, String),
    /// A name that cannot go into a certificate or a file name.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    node_certs: Vec<NodeCert>,
}

/// The CA bundle a kubeconfig names when its entry sets no `ca_file`.
pub const DEFAULT_CA_FILE: &str = "ca.crt";

/// A kubeconfig written beside a client certificate.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigSpec {
    /// File name in the output directory.
    pub file: String,
    /// The API server URL.
    pub server: String,
}

/// One `[[node_certs]]` entry, as written (templates unresolved).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCert {
    /// Node role that fetches it.
    pub node_role: String,
    /// `mount/role` under `<cluster>/pki/`.
    pub cert: String,
    /// Base file name.
    pub file: String,
    /// Where the issuing CA goes.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Requested common name.
    pub common_name: String,
    /// Requested DNS SANs.
    #[serde(default)]
    pub alt_names: Vec<String>,
    /// Requested IP SANs (`{{node_ips}}` expands to every node address).
    #[serde(default)]
    pub ip_sans: Vec<String>,
    /// A kubeconfig using this certificate.
    #[serde(default)]
    pub kubeconfig: Option<KubeconfigSpec>,
    /// Write the public keys of the mount's valid certificates here.
    #[serde(default)]
    pub public_key_bundle: Option<String>,
    /// Keep the mount's CRL (DER) in this file, refreshed by every run and
    /// verified against `ca_file` first (etcd's `--client-crl-file`).
    #[serde(default)]
    pub crl_file: Option<String>,
    /// Run after the certificate changed.
    #[serde(default)]
    pub reload: Option<String>,
    /// Key file owner (name or number).
    #[serde(default)]
    pub owner: Option<String>,
    /// Key file group (name or number).
    #[serde(default)]
    pub group: Option<String>,
    /// Key file mode (default 0600).
    #[serde(default)]
    pub key_mode: Option<u32>,
}

impl NodeCert {
    /// The files its kubeconfig names (CA bundle, certificate, key), if it
    /// writes one: a process reading the kubeconfig needs exactly these.
    pub fn kubeconfig_refs(&self) -> Option<(&str, [String; 3])> {
        let k = self.kubeconfig.as_ref()?;
        let ca = self.ca_file.as_deref().unwrap_or(DEFAULT_CA_FILE);
        Some((
            k.file.as_str(),
            [
                ca.to_string(),
                format!("{}.crt", self.file),
                format!("{}.key", self.file),
            ],
        ))
    }
}

/// The parsed profile.
#[derive(Debug, Clone)]
pub struct Profile {
    vars: BTreeMap<String, String>,
    certs: Vec<NodeCert>,
}

/// Who this node is.
#[derive(Debug, Clone)]
pub struct Node {
    /// Cluster name (mounts live under `<cluster>/pki/`).
    pub cluster: String,
    /// Node name (must equal the `node_name` the token carries).
    pub name: String,
    /// Node addresses.
    pub ips: Vec<IpAddr>,
    /// Output directory (absolute), for kubeconfig paths.
    pub pki_dir: String,
}

/// One certificate to request, templates resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `mount/role` as in the profile.
    pub cert: String,
    /// Mount path: `<cluster>/pki/<mount>`.
    pub mount: String,
    /// PKI role name.
    pub role: String,
    /// Base file name.
    pub file: String,
    /// CA bundle file.
    pub ca_file: Option<String>,
    /// Common name.
    pub common_name: String,
    /// DNS SANs.
    pub alt_names: Vec<String>,
    /// IP SANs.
    pub ip_sans: Vec<IpAddr>,
    /// Kubeconfig (server resolved).
    pub kubeconfig: Option<KubeconfigSpec>,
    /// Public-key bundle file.
    pub public_key_bundle: Option<String>,
    /// The mount's CRL file (written apart from the certificate set).
    pub crl_file: Option<String>,
    /// Reload command.
    pub reload: Option<String>,
    /// Key owner.
    pub owner: Option<String>,
    /// Key group.
    pub group: Option<String>,
    /// Key mode.
    pub key_mode: u32,
}

impl Request {
    /// `<file>.crt`.
    pub fn cert_file(&self) -> String {
        format!("{}.crt", self.file)
    }
    /// `<file>.key`.
    pub fn key_file(&self) -> String {
        format!("{}.key", self.file)
    }
}

fn valid_file(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Profile {
    /// The profile built into this binary.
    pub fn embedded() -> Result<Self, ProfileError> {
        Self::parse(EMBEDDED)
    }

    /// Parse a profile text.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let f: File = toml::from_str(text).map_err(|e| ProfileError::Parse(e.to_string()))?;
        if f.node_certs.is_empty() {
            return Err(ProfileError::Parse(
                "no [[node_certs]]: this profile does not say what nodes fetch".into(),
            ));
        }
        for c in &f.node_certs {
            if !valid_file(&c.file) {
                return Err(ProfileError::Invalid(format!(
                    "node_certs {}: bad file name {:?}",
                    c.cert, c.file
                )));
            }
        }
        check_crl_files(&f.node_certs)?;
        Ok(Self {
            vars: f.vars,
            certs: f.node_certs,
        })
    }

    /// Override a profile variable (`{{name}}`), as apply-profile's `--var` does.
    pub fn set_var(&mut self, name: &str, value: &str) {
        self.vars.insert(name.to_string(), value.to_string());
    }

    /// Set a variable the profile declares (`--var`); an unknown name is
    /// refused, so a typo cannot silently leave the default in place.
    pub fn override_var(&mut self, name: &str, value: &str) -> Result<(), ProfileError> {
        if !self.vars.contains_key(name) {
            return Err(ProfileError::Invalid(format!(
                "--var {name}: the profile has no such variable (it has {})",
                self.vars.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        self.set_var(name, value);
        Ok(())
    }

    /// Node roles that have certificates, in profile order.
    pub fn roles(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.certs {
            if !out.contains(&c.node_role) {
                out.push(c.node_role.clone());
            }
        }
        out
    }

    /// The entries of one node role, unresolved.
    pub fn entries(&self, role: &str) -> Vec<&NodeCert> {
        self.certs.iter().filter(|c| c.node_role == role).collect()
    }

    /// Every `[[node_certs]]` entry (the provisioner checks their reload
    /// commands name units the role runs).
    pub fn node_certs(&self) -> &[NodeCert] {
        &self.certs
    }

    /// Every file node-client writes for `role` (certificates, keys, CA
    /// bundles, kubeconfigs, public-key bundles), sorted. The provisioner's
    /// units may name only these.
    pub fn files(&self, role: &str) -> Result<Vec<String>, ProfileError> {
        let entries = self.entries(role);
        if entries.is_empty() {
            return Err(ProfileError::UnknownRole(
                role.to_string(),
                self.roles().join(", "),
            ));
        }
        let mut out = std::collections::BTreeSet::new();
        for c in entries {
            out.insert(format!("{}.crt", c.file));
            out.insert(format!("{}.key", c.file));
            out.extend(c.ca_file.clone());
            out.extend(c.kubeconfig.as_ref().map(|k| k.file.clone()));
            out.extend(c.public_key_bundle.clone());
            out.extend(c.crl_file.clone());
        }
        Ok(out.into_iter().collect())
    }

    /// The requests of `role` for `node`, templates resolved.
    pub fn requests(&self, role: &str, node: &Node) -> Result<Vec<Request>, ProfileError> {
        let entries = self.entries(role);
        if entries.is_empty() {
            return Err(ProfileError::UnknownRole(
                role.to_string(),
                self.roles().join(", "),
            ));
        }
        let mut out = Vec::new();
        for c in entries {
            let ctx = &c.cert;
            let sub = |s: &str| self.subst(s, node, ctx);
            let (mount, prole) = c.cert.split_once('/').ok_or_else(|| {
                ProfileError::Invalid(format!("node_certs: {ctx:?} is not mount/role"))
            })?;
            let mut ip_sans = Vec::new();
            for ip in &c.ip_sans {
                if ip == "{{node_ips}}" {
                    ip_sans.extend(node.ips.iter().copied());
                    continue;
                }
                let v = sub(ip)?;
                let parsed: IpAddr = v.parse().map_err(|_| {
                    ProfileError::Invalid(format!("{ctx}: {v:?} is not an IP address"))
                })?;
                ip_sans.push(parsed);
            }
            dedup(&mut ip_sans);
            let mut alt_names = c
                .alt_names
                .iter()
                .map(|s| sub(s))
                .collect::<Result<Vec<_>, _>>()?;
            dedup(&mut alt_names);
            let kubeconfig = match &c.kubeconfig {
                Some(k) => Some(KubeconfigSpec {
                    file: k.file.clone(),
                    server: sub(&k.server)?,
                }),
                None => None,
            };
            for f in [&c.ca_file, &c.public_key_bundle, &c.crl_file]
                .into_iter()
                .flatten()
                .chain(kubeconfig.as_ref().map(|k| &k.file))
            {
                if !valid_file(f) {
                    return Err(ProfileError::Invalid(format!("{ctx}: bad file name {f:?}")));
                }
            }
            out.push(Request {
                cert: c.cert.clone(),
                mount: format!("{}/pki/{mount}", node.cluster),
                role: prole.to_string(),
                file: c.file.clone(),
                ca_file: c.ca_file.clone(),
                common_name: sub(&c.common_name)?,
                alt_names,
                ip_sans,
                kubeconfig,
                public_key_bundle: c.public_key_bundle.clone(),
                crl_file: c.crl_file.clone(),
                reload: c.reload.clone().filter(|r| !r.trim().is_empty()),
                owner: c.owner.clone(),
                group: c.group.clone(),
                key_mode: c.key_mode.unwrap_or(0o600),
            });
        }
        Ok(out)
    }

    /// Replace `{{node_name}}`, `{{cluster}}`, `{{pki_dir}}` and the vars
    /// (which may themselves use `{{cluster}}`); anything left is an error.
    fn subst(&self, s: &str, node: &Node, ctx: &str) -> Result<String, ProfileError> {
        let mut out = s.to_string();
        for (k, v) in &self.vars {
            out = out.replace(&format!("{{{{{k}}}}}"), v);
        }
        out = out
            .replace("{{node_name}}", &node.name)
            .replace("{{cluster}}", &node.cluster)
            .replace("{{pki_dir}}", &node.pki_dir);
        if out.contains("{{") {
            return Err(ProfileError::Unresolved(ctx.to_string(), s.to_string()));
        }
        Ok(out)
    }
}

/// A `crl_file` is written on its own, beside the certificate set, so per
/// node role it must not be a name of the set, needs the `ca_file` it is
/// verified against, and belongs to one mount.
fn check_crl_files(certs: &[NodeCert]) -> Result<(), ProfileError> {
    let mount = |c: &NodeCert| c.cert.split_once('/').map_or("", |(m, _)| m).to_string();
    for c in certs {
        let Some(crl) = &c.crl_file else { continue };
        let bad = |why: &str| {
            Err(ProfileError::Invalid(format!(
                "node_certs {}: crl_file {crl:?} {why}",
                c.cert
            )))
        };
        if !valid_file(crl) {
            return bad("is not a valid file name");
        }
        if c.ca_file.is_none() {
            return bad("needs a ca_file to verify the CRL against");
        }
        for o in certs.iter().filter(|o| o.node_role == c.node_role) {
            let set = [format!("{}.crt", o.file), format!("{}.key", o.file)];
            let named = set
                .iter()
                .chain(o.ca_file.iter())
                .chain(o.public_key_bundle.iter())
                .chain(o.kubeconfig.as_ref().map(|k| &k.file))
                .any(|n| n == crl);
            if named {
                return bad(&format!("is also a file of {}", o.cert));
            }
            if o.crl_file.as_ref() == Some(crl) && mount(o) != mount(c) {
                return bad(&format!("is also the CRL file of {}", o.cert));
            }
        }
    }
    Ok(())
}

fn dedup<T: PartialEq>(v: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(v.len());
    for x in v.drain(..) {
        if !seen.contains(&x) {
            seen.push(x);
        }
    }
    *v = seen;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            cluster: "kc".into(),
            name: "worker-1".into(),
            ips: vec!["10.240.1.5".parse().unwrap()],
            pki_dir: "/etc/kubernetes/pki".into(),
        }
    }

    #[test]
    fn the_embedded_profile_resolves_for_every_role() {
        let p = Profile::embedded().unwrap();
        assert_eq!(p.roles(), ["etcd", "controller", "worker", "operator"]);
        for r in p.roles() {
            assert!(!p.requests(&r, &node()).unwrap().is_empty());
        }
        let w = p.requests("worker", &node()).unwrap();
        assert_eq!(w.len(), 3);
        let serving = w.iter().find(|r| r.file == "kubelet").unwrap();
        assert_eq!(serving.common_name, "system:node:worker-1");
        assert_eq!(serving.alt_names, ["worker-1"]);
        assert!(serving.ip_sans.is_empty(), "the role cannot pin IPs");
        assert_eq!(serving.mount, "kc/pki/kube-apiserver");
        let member = p.requests("etcd", &node()).unwrap();
        assert_eq!(
            member[0].ip_sans,
            [
                "10.240.1.5".parse::<IpAddr>().unwrap(),
                "127.0.0.1".parse().unwrap()
            ]
        );
        let kc = w.iter().find(|r| r.file == "kube-proxy").unwrap();
        assert_eq!(
            kc.kubeconfig.as_ref().unwrap().server,
            "https://api.kc.cluster.internal:6443"
        );
        let api = p.requests("controller", &node()).unwrap();
        let api = api.iter().find(|r| r.file == "apiserver").unwrap();
        assert_eq!(api.ip_sans[0], "10.32.0.1".parse::<IpAddr>().unwrap());
        assert!(
            api.alt_names
                .contains(&"kubernetes.default.svc.cluster.local".to_string())
        );
    }

    #[test]
    fn a_worker_writes_no_controller_or_etcd_file() {
        let p = Profile::embedded().unwrap();
        let w = p.files("worker").unwrap();
        assert_eq!(
            w,
            [
                "ca.crt",
                "kube-proxy.conf",
                "kube-proxy.crt",
                "kube-proxy.key",
                "kubelet-client.crt",
                "kubelet-client.key",
                "kubelet.conf",
                "kubelet.crt",
                "kubelet.key"
            ]
        );
        assert!(matches!(
            p.files("nobody"),
            Err(ProfileError::UnknownRole(..))
        ));
    }

    #[test]
    fn an_etcd_member_keeps_the_etcd_crl_and_nobody_else_does() {
        let p = Profile::embedded().unwrap();
        let crls = |role: &str| {
            p.requests(role, &node())
                .unwrap()
                .into_iter()
                .filter_map(|r| r.crl_file.map(|f| (r.mount, f)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            crls("etcd"),
            [("kc/pki/etcd-member".to_string(), "etcd-ca.crl".to_string())]
        );
        assert!(
            p.files("etcd")
                .unwrap()
                .contains(&"etcd-ca.crl".to_string())
        );
        for role in ["controller", "worker", "operator"] {
            assert!(crls(role).is_empty(), "{role}");
        }
    }

    #[test]
    fn a_crl_file_needs_a_ca_file_and_a_name_of_its_own() {
        let base = r#"
[[node_certs]]
node_role = "e"
cert = "m/member"
file = "member"
ca_file = "ca.crt"
crl_file = "ca.crl"
common_name = "x"
"#;
        let p = Profile::parse(base).unwrap();
        assert_eq!(
            p.files("e").unwrap(),
            ["ca.crl", "ca.crt", "member.crt", "member.key"]
        );
        let other = |crl: &str| {
            format!(
                "{base}\n[[node_certs]]\nnode_role = \"e\"\ncert = \"{crl}\"\nfile = \"o\"\nca_file = \"o.crt\"\ncrl_file = \"ca.crl\"\ncommon_name = \"y\"\n"
            )
        };
        // Another entry of the same mount may name the same file.
        assert!(Profile::parse(&other("m/client")).is_ok());
        for (bad, why) in [
            (
                base.replace("ca_file = \"ca.crt\"\n", ""),
                "needs a ca_file",
            ),
            (
                base.replace("\"ca.crl\"", "\"ca.crt\""),
                "is also a file of m/member",
            ),
            (
                base.replace("\"ca.crl\"", "\"member.key\""),
                "is also a file of m/member",
            ),
            (
                base.replace("\"ca.crl\"", "\"../x\""),
                "is not a valid file name",
            ),
            (other("n/client"), "is also the CRL file of"),
        ] {
            let e = Profile::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn unknown_variables_and_bad_names_are_refused() {
        let base = r#"
[[node_certs]]
node_role = "w"
cert = "m/r"
file = "f"
common_name = "{{nope}}"
"#;
        let p = Profile::parse(base).unwrap();
        assert!(matches!(
            p.requests("w", &node()),
            Err(ProfileError::Unresolved(..))
        ));
        let bad = base.replace("file = \"f\"", "file = \"../f\"");
        assert!(Profile::parse(&bad).is_err());
        let bad_ip = base
            .replace("{{nope}}", "x")
            .replace("common_name", "ip_sans = [\"nope\"]\ncommon_name");
        assert!(
            Profile::parse(&bad_ip)
                .unwrap()
                .requests("w", &node())
                .is_err()
        );
    }
}
