//! The cluster profile (`policies/`): parsing, validation and the apply plan.
//!
//! `policies/profile.toml` lists the PKI mounts (one CA each) with their roles
//! in Vault's own role fields, and the node roles (etcd, controller, worker,
//! operator) with the certificates each may request; `policies/acl/<name>.hcl`
//! is the Vault ACL policy of node role `<name>`. `{{cluster}}` and the
//! `[vars]` are substituted at plan time; `{{identity.entity.metadata.node_name}}`
//! stays for the server to resolve from the calling token.
//!
//! Validation refuses a profile that would let a requester choose a CN or an
//! O, mixes server and client EKUs outside etcd, or whose ACL policies grant a
//! node role anything but the certificates listed for it (or anything
//! administrative). [`Profile::matrix_markdown`] renders the authorisation
//! matrix that docs/security.md carries.

use crate::auth::policy::{Acl, Caps, Policy};
use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// The identity template that pins a certificate to the caller's node name.
pub const NODE_NAME_TEMPLATE: &str = "{{identity.entity.metadata.node_name}}";

/// Role paths an ACL may grant for a certificate.
const CERT_OPS: [&str; 2] = ["issue", "sign"];

/// The whole profile as read from a directory.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Variables (`{{name}}`), with `{{cluster}}` inside them still unresolved.
    pub vars: BTreeMap<String, String>,
    /// PKI mounts, one CA each.
    pub mounts: Vec<Mount>,
    /// Node roles: one ACL policy and one token role each.
    pub node_roles: Vec<NodeRole>,
    /// ACL policy text by node-role name (from `acl/<name>.hcl`).
    pub acl: BTreeMap<String, String>,
    /// What node-client writes per node role (read by node-client; here only
    /// checked against `node_roles.certificates`).
    pub node_certs: Vec<NodeCert>,
    /// Login methods (`auth/aws`, `auth/jwt`) and their per-node-role roles.
    pub auth_methods: Vec<AuthMethod>,
}

/// The login methods a profile may configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    /// Vault's AWS method, IAM flavour.
    Aws,
    /// Vault's JWT method.
    Jwt,
}

impl AuthType {
    /// The type name for `sys/auth`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Aws => "aws",
            AuthType::Jwt => "jwt",
        }
    }

    /// The method's configuration path below its mount.
    pub fn config_path(self) -> &'static str {
        match self {
            AuthType::Aws => "config/client",
            AuthType::Jwt => "config",
        }
    }
}

/// One `[[auth_methods]]` entry: a login method mounted at `auth/<path>`,
/// with one login role per listed node role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthMethod {
    /// Method type.
    #[serde(rename = "type")]
    pub kind: AuthType,
    /// Mount path below `auth/`.
    pub path: String,
    /// Mount description.
    pub description: String,
    /// Node roles that log in here (one login role each, named like them).
    pub node_roles: Vec<String>,
    /// The method's configuration (jwt: the keys come from `--jwt-pubkey`).
    #[serde(default)]
    pub config: toml::Table,
    /// Login role fields, `{{node_role}}` replaced per node role.
    pub role: toml::Table,
}

/// The placeholder for the node role's name in login role fields.
pub const NODE_ROLE_VAR: &str = "{{node_role}}";

/// One `[[node_certs]]` entry: the fields this side checks; node-client reads
/// the rest (file names, request names, kubeconfigs).
#[derive(Debug, Clone, Deserialize)]
pub struct NodeCert {
    /// The node role that fetches it.
    pub node_role: String,
    /// `mount/role`.
    pub cert: String,
    /// Base name of the files (`<file>.crt`, `<file>.key`).
    pub file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    vars: BTreeMap<String, String>,
    mounts: Vec<Mount>,
    node_roles: Vec<NodeRole>,
    #[serde(default)]
    node_certs: Vec<NodeCert>,
    #[serde(default)]
    auth_methods: Vec<AuthMethod>,
}

/// A PKI mount `<cluster>/pki/<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Name under `<cluster>/pki/`.
    pub name: String,
    /// Mount description.
    pub description: String,
    /// Whether roles here may carry both serverAuth and clientAuth (etcd).
    #[serde(default)]
    pub dual_use: bool,
    /// Mount default lease TTL.
    pub default_lease_ttl: String,
    /// Mount max lease TTL (caps the CA and every role).
    pub max_lease_ttl: String,
    /// `root/generate/internal` parameters, used only when the mount has no CA.
    pub ca: toml::Table,
    /// PKI roles (certificate profiles).
    #[serde(default)]
    pub roles: Vec<PkiRole>,
}

/// What a certificate is for; must agree with the role's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Usage {
    /// serverAuth only.
    #[serde(rename = "server")]
    Server,
    /// clientAuth only.
    #[serde(rename = "client")]
    Client,
    /// Both (etcd members only).
    #[serde(rename = "server+client")]
    ServerClient,
    /// No EKU: a signing key (service-account tokens).
    #[serde(rename = "signing")]
    Signing,
}

impl Usage {
    /// (server_flag, client_flag).
    pub fn flags(self) -> (bool, bool) {
        match self {
            Usage::Server => (true, false),
            Usage::Client => (false, true),
            Usage::ServerClient => (true, true),
            Usage::Signing => (false, false),
        }
    }

    /// As written in the profile.
    pub fn as_str(self) -> &'static str {
        match self {
            Usage::Server => "server",
            Usage::Client => "client",
            Usage::ServerClient => "server+client",
            Usage::Signing => "signing",
        }
    }
}

/// A PKI role: `<mount>/roles/<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiRole {
    /// Role name.
    pub name: String,
    /// What the certificate is (for the matrix).
    pub certificate: String,
    /// EKU family.
    pub usage: Usage,
    /// Vault role fields, sent as they are (after substitution).
    pub fields: toml::Table,
}

impl PkiRole {
    /// Whether the role's names come from the caller's node name.
    pub fn node_bound(&self) -> bool {
        self.allowed_domains()
            .iter()
            .any(|d| d.contains("{{identity."))
    }

    /// The `allowed_domains` strings.
    pub fn allowed_domains(&self) -> Vec<String> {
        str_list(self.fields.get("allowed_domains"))
    }

    /// The `organization` strings.
    pub fn organization(&self) -> Vec<String> {
        str_list(self.fields.get("organization"))
    }
}

/// A node role: an ACL policy and a token role, `<cluster>-<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRole {
    /// Name (etcd, controller, worker, operator).
    pub name: String,
    /// Who holds it.
    pub description: String,
    /// Tokens carry meta `node_name`; may request node-bound certificates.
    pub node_bound: bool,
    /// `mount/role` certificates this role may request (and nothing else).
    pub certificates: Vec<String>,
    /// `auth/token/roles/<cluster>-<name>` fields (allowed_policies is added).
    pub token_role: toml::Table,
}

/// One idempotent API action.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Enable the mount if absent, tune it otherwise.
    Mount {
        /// Mount path.
        path: String,
        /// Description.
        description: String,
        /// default_lease_ttl / max_lease_ttl.
        config: Value,
    },
    /// Generate the root CA unless the mount has one.
    Ca {
        /// Mount path.
        mount: String,
        /// root/generate/internal body.
        body: Value,
    },
    /// Write a PKI role.
    Role {
        /// Mount path.
        mount: String,
        /// Role name.
        name: String,
        /// Role body.
        body: Value,
    },
    /// Write an ACL policy.
    Policy {
        /// Policy name.
        name: String,
        /// HCL text.
        text: String,
    },
    /// Write a token role.
    TokenRole {
        /// Token role name.
        name: String,
        /// Body.
        body: Value,
    },
    /// Enable a login method at `sys/auth/<path>` unless it is there.
    AuthMount {
        /// Mount path below `auth/`.
        path: String,
        /// Method type.
        kind: AuthType,
        /// Description.
        description: String,
    },
    /// Write a login method's configuration.
    AuthConfig {
        /// Mount path below `auth/`.
        mount: String,
        /// Configuration path below the mount.
        path: String,
        /// Body.
        body: Value,
    },
    /// Write a login role.
    AuthRole {
        /// Mount path below `auth/`.
        mount: String,
        /// Role name.
        name: String,
        /// Body.
        body: Value,
    },
}

impl Step {
    /// One line describing the step.
    pub fn describe(&self) -> String {
        match self {
            Step::Mount { path, .. } => format!("mount {path}"),
            Step::Ca { mount, .. } => format!("ca {mount}"),
            Step::Role { mount, name, .. } => format!("role {mount}/roles/{name}"),
            Step::Policy { name, .. } => format!("policy sys/policies/acl/{name}"),
            Step::TokenRole { name, .. } => format!("token role auth/token/roles/{name}"),
            Step::AuthMount { path, kind, .. } => {
                format!("auth method sys/auth/{path} ({})", kind.as_str())
            }
            Step::AuthConfig { mount, path, .. } => format!("auth config auth/{mount}/{path}"),
            Step::AuthRole { mount, name, .. } => format!("login role auth/{mount}/role/{name}"),
        }
    }

    /// The login method mount a step belongs to, if any.
    pub fn auth_mount(&self) -> Option<&str> {
        match self {
            Step::AuthMount { path, .. } => Some(path),
            Step::AuthConfig { mount, .. } | Step::AuthRole { mount, .. } => Some(mount),
            _ => None,
        }
    }
}

fn str_list(v: Option<&toml::Value>) -> Vec<String> {
    match v {
        Some(toml::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        Some(toml::Value::String(s)) => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// A cluster, mount, role or variable name: `[a-z0-9-]+`, not starting with `-`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Replace `{{cluster}}` and `{{var}}` (one level: vars may use `{{cluster}}`).
fn subst(s: &str, cluster: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), &v.replace("{{cluster}}", cluster));
    }
    out.replace("{{cluster}}", cluster)
}

fn subst_json(v: Value, cluster: &str, vars: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(subst(&s, cluster, vars)),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .map(|x| subst_json(x, cluster, vars))
                .collect(),
        ),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| (k, subst_json(x, cluster, vars)))
                .collect(),
        ),
        other => other,
    }
}

/// Replace `from` by `to` in every string (values and keys) of `v`.
fn replace_json(v: Value, from: &str, to: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace(from, to)),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| replace_json(x, from, to)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| (k.replace(from, to), replace_json(x, from, to)))
                .collect(),
        ),
        other => other,
    }
}

fn bool_field(role: &PkiRole, key: &str) -> Option<bool> {
    role.fields.get(key).and_then(toml::Value::as_bool)
}

impl Profile {
    /// Read `profile.toml` and every `acl/*.hcl` under `dir`, and validate
    /// what does not depend on the cluster name.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("profile.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, &read_acl_dir(&dir.join("acl"))?)
            .with_context(|| format!("in {}", dir.display()))
    }

    /// From the texts of `profile.toml` and the ACL policies.
    pub fn parse(profile: &str, acl: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        let f: ProfileFile = toml::from_str(profile).context("parsing profile.toml")?;
        let p = Profile {
            vars: f.vars,
            mounts: f.mounts,
            node_roles: f.node_roles,
            acl: acl.clone(),
            node_certs: f.node_certs,
            auth_methods: f.auth_methods,
        };
        p.validate()?;
        Ok(p)
    }

    /// The role `mount/role`.
    pub fn role(&self, cert: &str) -> Option<(&Mount, &PkiRole)> {
        let (m, r) = cert.split_once('/')?;
        let mount = self.mounts.iter().find(|x| x.name == m)?;
        Some((mount, mount.roles.iter().find(|x| x.name == r)?))
    }

    fn validate(&self) -> anyhow::Result<()> {
        for k in self.vars.keys() {
            ensure!(
                valid_name(k) && k != "cluster" && k != "identity",
                "bad variable name {k:?}"
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.mounts {
            ensure!(valid_name(&m.name), "bad mount name {:?}", m.name);
            ensure!(seen.insert(&m.name), "mount {} listed twice", m.name);
            ensure!(
                m.ca.get("common_name").and_then(|v| v.as_str()).is_some(),
                "mount {}: ca.common_name is required",
                m.name
            );
            let mut names = std::collections::BTreeSet::new();
            for r in &m.roles {
                ensure!(valid_name(&r.name), "bad role name {:?}", r.name);
                ensure!(names.insert(&r.name), "role {}/{} twice", m.name, r.name);
                validate_role(m, r).with_context(|| format!("role {}/{}", m.name, r.name))?;
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for n in &self.node_roles {
            ensure!(valid_name(&n.name), "bad node role name {:?}", n.name);
            ensure!(seen.insert(&n.name), "node role {} listed twice", n.name);
            ensure!(
                self.acl.contains_key(&n.name),
                "node role {}: acl/{}.hcl is missing",
                n.name,
                n.name
            );
            ensure!(
                !n.token_role.contains_key("allowed_policies"),
                "node role {}: token_role.allowed_policies is set by apply-profile",
                n.name
            );
            for c in &n.certificates {
                let (_, r) = self
                    .role(c)
                    .with_context(|| format!("node role {}: no certificate {c}", n.name))?;
                ensure!(
                    n.node_bound || !r.node_bound(),
                    "node role {}: {c} is node-bound but the role's tokens carry no node_name",
                    n.name
                );
            }
        }
        for name in self.acl.keys() {
            ensure!(
                self.node_roles.iter().any(|n| &n.name == name),
                "acl/{name}.hcl belongs to no node role"
            );
        }
        self.validate_node_certs()?;
        self.validate_auth_methods()
    }

    /// Login roles: known node roles, no policies of their own, node-bound
    /// node roles named from the proven identity, bindings that cannot be
    /// widened by a glob on the role name.
    fn validate_auth_methods(&self) -> anyhow::Result<()> {
        let mut paths = std::collections::BTreeSet::new();
        for a in &self.auth_methods {
            let what = format!("auth_methods {}", a.path);
            ensure!(
                valid_name(&a.path) && a.path != "token",
                "{what}: bad path {:?}",
                a.path
            );
            ensure!(paths.insert(&a.path), "{what}: listed twice");
            ensure!(!a.node_roles.is_empty(), "{what}: no node_roles");
            for k in ["token_policies", "policies"] {
                ensure!(
                    !a.role.contains_key(k),
                    "{what}: role.{k} is set by apply-profile (<cluster>-<node role>)"
                );
            }
            ensure!(
                !a.config.contains_key("jwt_validation_pubkeys")
                    && !a.config.contains_key("jwks_url")
                    && !a.config.contains_key("oidc_discovery_url"),
                "{what}: the keys come from apply-profile --jwt-pubkey, not the profile"
            );
            let mut seen = std::collections::BTreeSet::new();
            for n in &a.node_roles {
                ensure!(seen.insert(n), "{what}: node role {n} listed twice");
                let role = self
                    .node_roles
                    .iter()
                    .find(|r| &r.name == n)
                    .with_context(|| format!("{what}: unknown node role {n:?}"))?;
                if role.node_bound {
                    let named = match a.kind {
                        AuthType::Aws => {
                            a.role.get("inferred_entity_type").and_then(|v| v.as_str())
                                == Some("ec2_instance")
                        }
                        AuthType::Jwt => a
                            .role
                            .get("claim_mappings")
                            .and_then(|v| v.as_table())
                            .is_some_and(|t| t.values().any(|v| v.as_str() == Some("node_name"))),
                    };
                    ensure!(
                        named,
                        "{what}: node role {n} is node-bound, but the login does not set node_name \
                         from the proven identity"
                    );
                }
            }
            match a.kind {
                AuthType::Aws => {
                    let arns = str_list(a.role.get("bound_iam_principal_arn"));
                    ensure!(!arns.is_empty(), "{what}: bound_iam_principal_arn is empty");
                    for arn in &arns {
                        let name = arn.split_once(":role/").map(|(_, r)| r);
                        ensure!(
                            name.is_some_and(|r| !r.is_empty() && !r.contains('*')),
                            "{what}: bound_iam_principal_arn {arn:?} must name one IAM role \
                             (a glob may cover the account, never the role name)"
                        );
                    }
                }
                AuthType::Jwt => {
                    ensure!(
                        !str_list(a.role.get("bound_audiences")).is_empty(),
                        "{what}: bound_audiences is empty"
                    );
                    ensure!(
                        a.config
                            .get("bound_issuer")
                            .and_then(|v| v.as_str())
                            .is_some_and(|s| !s.is_empty()),
                        "{what}: config.bound_issuer is required"
                    );
                }
            }
        }
        Ok(())
    }

    /// `[[node_certs]]` (when present) lists exactly each node role's
    /// certificates, once each, with distinct file names per role.
    fn validate_node_certs(&self) -> anyhow::Result<()> {
        if self.node_certs.is_empty() {
            return Ok(());
        }
        for c in &self.node_certs {
            ensure!(
                self.node_roles.iter().any(|n| n.name == c.node_role),
                "node_certs: unknown node role {:?}",
                c.node_role
            );
            ensure!(
                valid_name(&c.file),
                "node_certs {}/{}: bad file name {:?}",
                c.node_role,
                c.cert,
                c.file
            );
        }
        for n in &self.node_roles {
            let mine: Vec<&NodeCert> = self
                .node_certs
                .iter()
                .filter(|c| c.node_role == n.name)
                .collect();
            let mut certs: Vec<&str> = mine.iter().map(|c| c.cert.as_str()).collect();
            let mut files: Vec<&str> = mine.iter().map(|c| c.file.as_str()).collect();
            certs.sort_unstable();
            files.sort_unstable();
            files.dedup();
            let mut want: Vec<&str> = n.certificates.iter().map(String::as_str).collect();
            want.sort_unstable();
            ensure!(
                certs == want,
                "node_certs for node role {} list {certs:?}, node_roles.certificates say {want:?}",
                n.name
            );
            ensure!(
                files.len() == mine.len(),
                "node_certs for node role {}: a file name is used twice",
                n.name
            );
        }
        Ok(())
    }

    /// The actions that apply this profile to `cluster`, after checking the
    /// substituted roles and every ACL policy against the node roles; jwt
    /// methods get no configuration (no keys).
    pub fn plan(
        &self,
        cluster: &str,
        overrides: &BTreeMap<String, String>,
    ) -> anyhow::Result<Vec<Step>> {
        self.plan_with_keys(cluster, overrides, &[])
    }

    /// [`Profile::plan`], and jwt methods configured with these PEM public keys
    /// (`jwt_validation_pubkeys`) when there are any.
    pub fn plan_with_keys(
        &self,
        cluster: &str,
        overrides: &BTreeMap<String, String>,
        jwt_pubkeys: &[String],
    ) -> anyhow::Result<Vec<Step>> {
        ensure!(
            valid_name(cluster) && !cluster.contains('_'),
            "bad cluster name {cluster:?}: use [a-z0-9-]"
        );
        let mut vars = self.vars.clone();
        for (k, v) in overrides {
            ensure!(vars.contains_key(k), "unknown variable {k:?}");
            vars.insert(k.clone(), v.clone());
        }
        let sub = |v: Value| subst_json(v, cluster, &vars);
        let mut steps = Vec::new();
        for m in &self.mounts {
            let path = format!("{cluster}/pki/{}", m.name);
            steps.push(Step::Mount {
                path: path.clone(),
                description: subst(&m.description, cluster, &vars),
                config: json!({
                    "default_lease_ttl": m.default_lease_ttl,
                    "max_lease_ttl": m.max_lease_ttl,
                }),
            });
            steps.push(Step::Ca {
                mount: path.clone(),
                body: sub(serde_json::to_value(&m.ca)?),
            });
            for r in &m.roles {
                let body = sub(serde_json::to_value(&r.fields)?);
                for d in body["allowed_domains"].as_array().into_iter().flatten() {
                    let d = d.as_str().unwrap_or_default();
                    ensure!(
                        !d.replace(NODE_NAME_TEMPLATE, "").contains("{{"),
                        "role {}/{}: unresolved template in {d:?}",
                        m.name,
                        r.name
                    );
                }
                steps.push(Step::Role {
                    mount: path.clone(),
                    name: r.name.clone(),
                    body,
                });
            }
        }
        for n in &self.node_roles {
            let text = self.acl.get(&n.name).map(String::as_str).unwrap_or("");
            let text = subst(text, cluster, &vars);
            self.check_acl(cluster, n, &text)
                .with_context(|| format!("acl/{}.hcl", n.name))?;
            steps.push(Step::Policy {
                name: format!("{cluster}-{}", n.name),
                text,
            });
        }
        for n in &self.node_roles {
            let mut body = sub(serde_json::to_value(&n.token_role)?);
            body["allowed_policies"] = json!([format!("{cluster}-{}", n.name)]);
            steps.push(Step::TokenRole {
                name: format!("{cluster}-{}", n.name),
                body,
            });
        }
        for a in &self.auth_methods {
            steps.push(Step::AuthMount {
                path: a.path.clone(),
                kind: a.kind,
                description: subst(&a.description, cluster, &vars),
            });
            let mut config = sub(serde_json::to_value(&a.config)?);
            let configure = match a.kind {
                AuthType::Aws => true,
                AuthType::Jwt if jwt_pubkeys.is_empty() => false,
                AuthType::Jwt => {
                    config["jwt_validation_pubkeys"] = json!(jwt_pubkeys);
                    true
                }
            };
            if configure {
                steps.push(Step::AuthConfig {
                    mount: a.path.clone(),
                    path: a.kind.config_path().to_string(),
                    body: config,
                });
            }
            for n in &a.node_roles {
                // `{{node_role}}` first (it is not a profile variable), then the rest.
                let mut body = sub(replace_json(
                    serde_json::to_value(&a.role)?,
                    NODE_ROLE_VAR,
                    n,
                ));
                ensure!(
                    !body.to_string().contains("{{"),
                    "auth_methods {}: unresolved template in the {n} role",
                    a.path
                );
                body["token_policies"] = json!([format!("{cluster}-{n}")]);
                steps.push(Step::AuthRole {
                    mount: a.path.clone(),
                    name: n.clone(),
                    body,
                });
            }
        }
        Ok(steps)
    }

    /// The policy grants `issue` on exactly the listed certificates, `sign` on
    /// no others, and no write anywhere administrative.
    fn check_acl(&self, cluster: &str, n: &NodeRole, text: &str) -> anyhow::Result<()> {
        let policy = Policy::parse(text).map_err(|e| anyhow::anyhow!("{}", e.0))?;
        let acl = Acl::new([&policy], false);
        let writes = |p: &str| {
            let c = acl.capabilities(p);
            [Caps::CREATE, Caps::UPDATE, Caps::DELETE, Caps::PATCH]
                .iter()
                .any(|w| c.allows(*w))
        };
        for m in &self.mounts {
            let base = format!("{cluster}/pki/{}", m.name);
            for r in &m.roles {
                let cert = format!("{}/{}", m.name, r.name);
                let listed = n.certificates.contains(&cert);
                let issue = acl
                    .capabilities(&format!("{base}/issue/{}", r.name))
                    .allows(Caps::UPDATE);
                ensure!(
                    issue == listed,
                    "{}: issue on {cert} is {} but the profile says {}",
                    n.name,
                    if issue { "granted" } else { "refused" },
                    if listed { "granted" } else { "refused" }
                );
                if !listed {
                    for op in CERT_OPS {
                        ensure!(
                            !writes(&format!("{base}/{op}/{}", r.name)),
                            "{}: {op} on {cert} is not in the profile",
                            n.name
                        );
                    }
                }
                for p in [
                    format!("{base}/roles/{}", r.name),
                    format!("{base}/sign-verbatim/{}", r.name),
                    format!("{base}/issuer/default/issue/{}", r.name),
                    format!("{base}/issuer/default/sign/{}", r.name),
                ] {
                    ensure!(!writes(&p), "{}: may write {p}", n.name);
                }
            }
            for rest in [
                "sign-verbatim",
                "root",
                "root/generate/internal",
                "root/generate/exported",
                "root/sign-intermediate",
                "root/sign-self-issued",
                "issuers/generate/root/internal",
                "intermediate/generate/internal",
                "intermediate/set-signed",
                "config/ca",
                "config/urls",
                "config/crl",
                "config/issuers",
                "issuers/import/bundle",
                "issuer/default",
                "keys/import",
                "tidy",
            ] {
                ensure!(
                    !writes(&format!("{base}/{rest}")),
                    "{}: may write {base}/{rest}",
                    n.name
                );
            }
        }
        for p in [
            "sys/mounts/x",
            "sys/mounts/x/tune",
            "sys/policies/acl/x",
            "sys/policy/x",
            "sys/audit/x",
            "sys/seal",
            "sys/rotate",
            "sys/remount",
            "auth/token/create",
            "auth/token/create-orphan",
            "auth/token/roles/x",
            "auth/token/revoke-orphan",
        ] {
            ensure!(!writes(p), "{}: may write {p}", n.name);
        }
        // No identity may mint another (operators included: a token with
        // a node's metadata would be that node).
        for other in &self.node_roles {
            let p = format!("auth/token/create/{cluster}-{}", other.name);
            ensure!(!writes(&p), "{}: may create {} tokens", n.name, other.name);
        }
        ensure!(
            !acl.capabilities("auth/token/create").allows(Caps::SUDO),
            "{}: sudo on auth/token/create",
            n.name
        );
        Ok(())
    }

    /// The authorisation matrix (markdown), rendered from the profile alone.
    pub fn matrix_markdown(&self) -> String {
        let display =
            |s: &str| subst(s, "<cluster>", &self.vars).replace(NODE_NAME_TEMPLATE, "<node>");
        let mut out = String::from(
            "| Certificate (`<cluster>/pki/…`) | What | Names (CN/SANs) | O | EKU | max TTL |",
        );
        let mut sep = String::from("|---|---|---|---|---|---|");
        for n in &self.node_roles {
            out.push_str(&format!(" {} |", n.name));
            sep.push_str("---|");
        }
        out.push('\n');
        out.push_str(&sep);
        out.push('\n');
        for m in &self.mounts {
            for r in &m.roles {
                let cert = format!("{}/{}", m.name, r.name);
                let names: Vec<String> = r
                    .allowed_domains()
                    .iter()
                    .map(|d| format!("`{}`", display(d)))
                    .collect();
                let mut names = names.join(", ");
                if bool_field(r, "allow_localhost") == Some(true)
                    && !r.allowed_domains().iter().any(|d| d == "localhost")
                {
                    names.push_str(", `localhost`");
                }
                if bool_field(r, "allow_ip_sans") == Some(true) {
                    names.push_str(", any IP");
                }
                let org = r.organization();
                let org = if org.is_empty() {
                    "–".to_string()
                } else {
                    org.iter()
                        .map(|o| format!("`{o}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let eku = match r.usage {
                    Usage::Server => "serverAuth",
                    Usage::Client => "clientAuth",
                    Usage::ServerClient => "serverAuth, clientAuth",
                    Usage::Signing => "none",
                };
                let ttl = r
                    .fields
                    .get("max_ttl")
                    .and_then(|v| v.as_str())
                    .unwrap_or("mount max");
                out.push_str(&format!(
                    "| `{cert}` | {} | {names} | {org} | {eku} | {ttl} |",
                    display(&r.certificate)
                ));
                for n in &self.node_roles {
                    let yes = n.certificates.contains(&cert);
                    out.push_str(match (yes, r.node_bound()) {
                        (true, true) => " ✔ own |",
                        (true, false) => " ✔ |",
                        (false, _) => " ✘ |",
                    });
                }
                out.push('\n');
            }
        }
        out
    }
}

fn read_acl_dir(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for e in entries {
        let p = e?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            bail!("{}: not a UTF-8 file name", p.display());
        };
        let Some(stem) = name.strip_suffix(".hcl") else {
            bail!("{}: only *.hcl policies belong in acl/", p.display());
        };
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        out.insert(stem.to_string(), text);
    }
    Ok(out)
}

/// Role-field rules: the role fixes CN and O; one EKU family.
fn validate_role(m: &Mount, r: &PkiRole) -> anyhow::Result<()> {
    let require = |key: &str, want: bool| -> anyhow::Result<()> {
        ensure!(
            bool_field(r, key) == Some(want),
            "{key} must be set to {want}"
        );
        Ok(())
    };
    let (server, client) = r.usage.flags();
    require("server_flag", server)?;
    require("client_flag", client)?;
    ensure!(
        r.usage != Usage::ServerClient || m.dual_use,
        "usage server+client is only for dual_use mounts (etcd)"
    );
    for (k, v) in [
        ("use_csr_common_name", false),
        ("use_csr_sans", false),
        ("allow_any_name", false),
        ("allow_glob_domains", false),
        ("allow_subdomains", false),
        ("allow_wildcard_certificates", false),
        ("allow_bare_domains", true),
        ("enforce_hostnames", false),
    ] {
        require(k, v)?;
    }
    for k in [
        "generate_lease",
        "no_store",
        "code_signing_flag",
        "email_protection_flag",
        "allowed_uri_sans_template",
        "basic_constraints_valid_for_non_ca",
    ] {
        ensure!(bool_field(r, k) != Some(true), "{k} must not be set");
    }
    for k in [
        "allowed_uri_sans",
        "allowed_other_sans",
        "ou",
        "ext_key_usage",
        "ext_key_usage_oids",
        "allowed_serial_numbers",
        "allowed_user_ids",
    ] {
        ensure!(str_list(r.fields.get(k)).is_empty(), "{k} must be empty");
    }
    ensure!(
        str_list(r.fields.get("cn_validations")) == ["hostname"],
        "cn_validations must be [\"hostname\"] (no email-form names)"
    );
    ensure!(
        matches!(r.fields.get("organization"), Some(toml::Value::Array(_))),
        "organization must be set on the role (an empty list for none)"
    );
    let domains = r.allowed_domains();
    ensure!(!domains.is_empty(), "allowed_domains is empty");
    for d in &domains {
        ensure!(
            !d.contains('*') && !d.contains(',') && !d.is_empty(),
            "allowed_domains entry {d:?}: no globs or lists"
        );
        let rest = d.replace(NODE_NAME_TEMPLATE, "");
        ensure!(
            !rest.contains("{{identity."),
            "allowed_domains entry {d:?}: only {NODE_NAME_TEMPLATE} may be templated"
        );
    }
    let templated = bool_field(r, "allowed_domains_template") == Some(true);
    ensure!(
        templated == r.node_bound(),
        "allowed_domains_template must be true exactly when a name is node-bound"
    );
    if bool_field(r, "allow_localhost") == Some(true) {
        ensure!(
            m.dual_use,
            "allow_localhost is only for etcd members (loopback listeners)"
        );
    } else {
        require("allow_localhost", false)?;
    }
    if r.usage == Usage::Client || r.usage == Usage::Signing {
        require("allow_ip_sans", false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = r#"
[[mounts]]
name = "m"
description = "d"
default_lease_ttl = "1h"
max_lease_ttl = "2h"
ca = { common_name = "ca" }
[[mounts.roles]]
name = "r"
certificate = "c"
usage = "client"
[mounts.roles.fields]
allowed_domains = ["system:kube-scheduler"]
allow_bare_domains = true
allow_subdomains = false
allow_localhost = false
allow_glob_domains = false
allow_wildcard_certificates = false
allow_any_name = false
enforce_hostnames = false
allow_ip_sans = false
server_flag = false
client_flag = true
organization = []
use_csr_common_name = false
use_csr_sans = false
cn_validations = ["hostname"]
[[node_roles]]
name = "worker"
description = "w"
node_bound = true
certificates = ["m/r"]
token_role = {}
"#;

    fn acl(text: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("worker".to_string(), text.to_string())])
    }

    const GOOD_ACL: &str = r#"path "{{cluster}}/pki/m/issue/r" { capabilities = ["update"] }"#;

    #[test]
    fn a_minimal_profile_plans() {
        let p = Profile::parse(ROLE, &acl(GOOD_ACL)).unwrap();
        let steps = p.plan("c1", &BTreeMap::new()).unwrap();
        assert_eq!(steps.len(), 5);
        assert!(
            matches!(&steps[3], Step::Policy { name, text } if name == "c1-worker" && text.contains("c1/pki/m/issue/r"))
        );
        assert!(p.plan("Bad/Name", &BTreeMap::new()).is_err());
    }

    #[test]
    fn requester_chosen_names_and_mixed_ekus_are_refused() {
        for (from, to) in [
            ("use_csr_common_name = false", "use_csr_common_name = true"),
            ("allow_any_name = false", "allow_any_name = true"),
            ("allow_subdomains = false", "allow_subdomains = true"),
            ("server_flag = false", "server_flag = true"),
            ("organization = []", "ou = [\"x\"]"),
            ("allow_ip_sans = false", "allow_ip_sans = true"),
            ("\"system:kube-scheduler\"", "\"{{identity.entity.id}}\""),
            ("usage = \"client\"", "usage = \"server+client\""),
        ] {
            let bad = ROLE.replace(from, to);
            assert_ne!(bad, ROLE);
            assert!(Profile::parse(&bad, &acl(GOOD_ACL)).is_err(), "{to}");
        }
    }

    #[test]
    fn acl_must_match_the_node_role() {
        let p = Profile::parse(ROLE, &acl("")).unwrap();
        let e = p.plan("c1", &BTreeMap::new()).unwrap_err();
        assert!(
            format!("{e:#}").contains("issue on m/r is refused"),
            "{e:#}"
        );
        for extra in [
            r#"path "{{cluster}}/pki/m/roles/r" { capabilities = ["update"] }"#,
            r#"path "{{cluster}}/pki/m/+/r" { capabilities = ["update"] }"#,
            r#"path "sys/*" { capabilities = ["update"] }"#,
        ] {
            let p = Profile::parse(ROLE, &acl(&format!("{GOOD_ACL}\n{extra}"))).unwrap();
            assert!(p.plan("c1", &BTreeMap::new()).is_err(), "{extra}");
        }
    }

    const AUTH: &str = r#"
[vars]
sid = "pki.{{cluster}}"
[[auth_methods]]
type = "aws"
path = "aws"
description = "d"
node_roles = ["worker"]
config = { iam_server_id_header_value = "{{sid}}" }
role = { auth_type = "iam", bound_iam_principal_arn = ["arn:aws:iam::*:role/{{cluster}}-{{node_role}}"], inferred_entity_type = "ec2_instance" }
[[auth_methods]]
type = "jwt"
path = "jwt"
description = "d"
node_roles = ["worker"]
config = { bound_issuer = "iss" }
role = { role_type = "jwt", bound_audiences = ["a"], user_claim = "sub", claim_mappings = { node_name = "node_name" } }
"#;

    #[test]
    fn login_roles_get_the_node_roles_policy_and_jwt_config_only_with_keys() {
        let text = format!("{}\n{ROLE}", AUTH);
        let p = Profile::parse(&text, &acl(GOOD_ACL)).unwrap();
        let steps = p.plan("c1", &BTreeMap::new()).unwrap();
        let role = steps
            .iter()
            .find_map(|s| match s {
                Step::AuthRole { mount, name, body } if mount == "aws" && name == "worker" => {
                    Some(body.clone())
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(
            role["bound_iam_principal_arn"],
            json!(["arn:aws:iam::*:role/c1-worker"])
        );
        assert_eq!(role["token_policies"], json!(["c1-worker"]));
        assert!(steps.iter().any(|s| matches!(s,
            Step::AuthConfig { mount, body, .. } if mount == "aws" && body["iam_server_id_header_value"] == "pki.c1")));
        let jwt_config = |steps: &[Step]| {
            steps
                .iter()
                .any(|s| matches!(s, Step::AuthConfig { mount, .. } if mount == "jwt"))
        };
        assert!(!jwt_config(&steps), "no keys, no jwt config");
        let steps = p
            .plan_with_keys("c1", &BTreeMap::new(), &["PEM".into()])
            .unwrap();
        assert!(jwt_config(&steps));

        for (from, to) in [
            ("{{cluster}}-{{node_role}}", "*"),
            (
                "inferred_entity_type = \"ec2_instance\"",
                "auth_type2 = \"x\"",
            ),
            (
                "claim_mappings = { node_name = \"node_name\" }",
                "user_claim2 = \"x\"",
            ),
            ("bound_audiences = [\"a\"]", "bound_audiences = []"),
            (
                "node_roles = [\"worker\"]\nconfig = { bound",
                "node_roles = [\"nobody\"]\nconfig = { bound",
            ),
            (
                "user_claim = \"sub\"",
                "user_claim = \"sub\", token_policies = [\"root\"]",
            ),
        ] {
            let bad = text.replace(from, to);
            assert_ne!(bad, text, "{from}");
            assert!(Profile::parse(&bad, &acl(GOOD_ACL)).is_err(), "{to}");
        }
    }
}
