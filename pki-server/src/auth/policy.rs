//! ACL policies in Vault's language, and the decision for one request.
//!
//! A policy is HCL (parsed with hcl-rs) or JSON: `path "<pattern>" {
//! capabilities = [...] }` or the legacy `policy = "read|write|deny|sudo"`.
//! Patterns: exact; a trailing `*` for a prefix; `+` for exactly one segment.
//! Rules of several policies on one pattern are merged (union; `deny` wins).
//! An exact rule beats globs; among globs only the single highest-priority
//! matching rule applies (Vault's ordering). No match denies.
//!
//! Not enforced (accepted and stored): `allowed_parameters`,
//! `denied_parameters`, `required_parameters`, wrapping TTL bounds.

use std::collections::BTreeMap;
use std::fmt;

/// A set of capabilities.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps(u16);

impl Caps {
    /// create
    pub const CREATE: Caps = Caps(1);
    /// read
    pub const READ: Caps = Caps(2);
    /// update
    pub const UPDATE: Caps = Caps(4);
    /// delete
    pub const DELETE: Caps = Caps(8);
    /// list
    pub const LIST: Caps = Caps(16);
    /// sudo
    pub const SUDO: Caps = Caps(32);
    /// deny (overrides everything)
    pub const DENY: Caps = Caps(64);
    /// patch
    pub const PATCH: Caps = Caps(128);

    const NAMES: [(&'static str, Caps); 8] = [
        ("create", Caps::CREATE),
        ("delete", Caps::DELETE),
        ("deny", Caps::DENY),
        ("list", Caps::LIST),
        ("patch", Caps::PATCH),
        ("read", Caps::READ),
        ("sudo", Caps::SUDO),
        ("update", Caps::UPDATE),
    ];

    /// Whether every capability in `other` is here (and no deny).
    pub fn allows(self, other: Caps) -> bool {
        self.0 & Caps::DENY.0 == 0 && self.0 & other.0 == other.0
    }

    fn union(self, other: Caps) -> Caps {
        let u = Caps(self.0 | other.0);
        if u.0 & Caps::DENY.0 != 0 {
            Caps::DENY
        } else {
            u
        }
    }

    fn from_name(n: &str) -> Option<Caps> {
        match n {
            // OpenBao's `scan` grants nothing here.
            "scan" => Some(Caps(0)),
            _ => Caps::NAMES
                .iter()
                .find(|(name, _)| *name == n)
                .map(|(_, c)| *c),
        }
    }

    /// Sorted capability names (`sys/capabilities-self`); `["deny"]` when empty.
    pub fn names(self) -> Vec<&'static str> {
        if self.0 == 0 || self.0 & Caps::DENY.0 != 0 {
            return vec!["deny"];
        }
        Caps::NAMES
            .iter()
            .filter(|(_, c)| self.0 & c.0 != 0)
            .map(|(n, _)| *n)
            .collect()
    }
}

impl fmt::Debug for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.names())
    }
}

/// A parse failure, with Vault's prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse policy: {0}")]
pub struct PolicyError(pub String);

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Rules by pattern (duplicates merged).
    pub rules: BTreeMap<String, Caps>,
}

fn legacy(p: &str) -> Result<Caps, PolicyError> {
    let c = |cs: &[Caps]| cs.iter().fold(Caps::default(), |a, b| a.union(*b));
    Ok(match p {
        "deny" => Caps::DENY,
        "read" => c(&[Caps::READ, Caps::LIST]),
        "write" => c(&[
            Caps::CREATE,
            Caps::READ,
            Caps::UPDATE,
            Caps::DELETE,
            Caps::LIST,
        ]),
        "sudo" => c(&[
            Caps::CREATE,
            Caps::READ,
            Caps::UPDATE,
            Caps::DELETE,
            Caps::LIST,
            Caps::SUDO,
        ]),
        other => return Err(PolicyError(format!("invalid policy {other:?}"))),
    })
}

fn caps_of(names: &[String]) -> Result<Caps, PolicyError> {
    let mut c = Caps::default();
    for n in names {
        c = c.union(
            Caps::from_name(n).ok_or_else(|| PolicyError(format!("invalid capability {n:?}")))?,
        );
    }
    Ok(c)
}

fn check_pattern(p: &str) -> Result<String, PolicyError> {
    let p = p.trim_start_matches('/').to_string();
    if p.contains("+*") {
        return Err(PolicyError(format!("path {p:?}: \"+*\" is invalid")));
    }
    if p.find('*').is_some_and(|i| i != p.len() - 1) {
        return Err(PolicyError(format!(
            "path {p:?}: \"*\" may only be the last character"
        )));
    }
    Ok(p)
}

impl Policy {
    /// Parse HCL or (when it starts with `{`) JSON policy text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut rules: BTreeMap<String, Caps> = BTreeMap::new();
        let mut add = |pattern: &str, caps: Caps| -> Result<(), PolicyError> {
            let p = check_pattern(pattern)?;
            let e = rules.entry(p).or_default();
            *e = e.union(caps);
            Ok(())
        };
        if text.trim_start().starts_with('{') {
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
            let paths = v
                .get("path")
                .and_then(|p| p.as_object())
                .ok_or_else(|| PolicyError("missing \"path\" object".into()))?;
            for (pattern, body) in paths {
                add(pattern, rule_caps_json(body)?)?;
            }
        } else {
            let body = hcl::parse(text).map_err(|e| PolicyError(e.to_string()))?;
            if let Some(a) = body.attributes().next() {
                return Err(PolicyError(format!(
                    "unexpected top-level attribute {:?}",
                    a.key()
                )));
            }
            for block in body.blocks() {
                if block.identifier() != "path" {
                    return Err(PolicyError(format!(
                        "unexpected block {:?}",
                        block.identifier()
                    )));
                }
                let [label] = block.labels() else {
                    return Err(PolicyError("a path block takes exactly one label".into()));
                };
                let mut caps = Caps::default();
                for attr in block.body().attributes() {
                    match attr.key() {
                        "capabilities" => {
                            let hcl::Expression::Array(items) = attr.expr() else {
                                return Err(PolicyError("capabilities must be a list".into()));
                            };
                            let names = items
                                .iter()
                                .map(|i| match i {
                                    hcl::Expression::String(s) => Ok(s.clone()),
                                    _ => Err(PolicyError("capabilities must be strings".into())),
                                })
                                .collect::<Result<Vec<_>, _>>()?;
                            caps = caps.union(caps_of(&names)?);
                        }
                        "policy" => match attr.expr() {
                            hcl::Expression::String(s) => caps = caps.union(legacy(s)?),
                            _ => return Err(PolicyError("policy must be a string".into())),
                        },
                        "allowed_parameters"
                        | "denied_parameters"
                        | "required_parameters"
                        | "min_wrapping_ttl"
                        | "max_wrapping_ttl"
                        | "control_group" => {}
                        other => {
                            return Err(PolicyError(format!(
                                "invalid key {other:?} in path {:?}",
                                label.as_str()
                            )));
                        }
                    }
                }
                add(label.as_str(), caps)?;
            }
        }
        Ok(Policy { rules })
    }
}

fn rule_caps_json(body: &serde_json::Value) -> Result<Caps, PolicyError> {
    let mut caps = Caps::default();
    if let Some(list) = body.get("capabilities") {
        let names: Vec<String> =
            serde_json::from_value(list.clone()).map_err(|e| PolicyError(e.to_string()))?;
        caps = caps.union(caps_of(&names)?);
    }
    if let Some(p) = body.get("policy").and_then(|p| p.as_str()) {
        caps = caps.union(legacy(p)?);
    }
    Ok(caps)
}

/// The merged rules of a token's policies.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    root: bool,
    exact: BTreeMap<String, Caps>,
    globs: Vec<(String, Caps)>,
}

/// Whether `pattern` (with `+` and trailing `*`) matches `path`.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let (pat, prefix) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    if !pat.contains('+') {
        return if prefix {
            path.starts_with(pat)
        } else {
            path == pat
        };
    }
    let ps: Vec<&str> = pat.split('/').collect();
    let ss: Vec<&str> = path.split('/').collect();
    if ss.len() < ps.len() || (!prefix && ss.len() != ps.len()) {
        return false;
    }
    let last = ps.len() - 1;
    for (i, p) in ps.iter().enumerate() {
        let s = ss[i];
        let ok = if *p == "+" {
            !s.is_empty() || (prefix && i == last)
        } else if prefix && i == last {
            s.starts_with(p)
        } else {
            s == *p
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Vault's ordering: is `a` lower priority than `b`?
fn lower_priority(a: &str, b: &str) -> bool {
    let first_wild = |p: &str| p.find(['+', '*']).unwrap_or(p.len());
    let (fa, fb) = (first_wild(a), first_wild(b));
    if fa != fb {
        return fa < fb;
    }
    let (sa, sb) = (a.ends_with('*'), b.ends_with('*'));
    if sa != sb {
        return sa;
    }
    let (pa, pb) = (a.matches('+').count(), b.matches('+').count());
    if pa != pb {
        return pa > pb;
    }
    if a.len() != b.len() {
        return a.len() < b.len();
    }
    a < b
}

impl Acl {
    /// The ACL of a token with `policies` (the `root` policy allows all).
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>, root: bool) -> Self {
        let mut merged: BTreeMap<String, Caps> = BTreeMap::new();
        for p in policies {
            for (pat, caps) in &p.rules {
                let e = merged.entry(pat.clone()).or_default();
                *e = e.union(*caps);
            }
        }
        let mut acl = Acl {
            root,
            ..Default::default()
        };
        for (pat, caps) in merged {
            if pat.contains('+') || pat.ends_with('*') {
                acl.globs.push((pat, caps));
            } else {
                acl.exact.insert(pat, caps);
            }
        }
        acl
    }

    /// The capabilities on `path` (for LIST, pass the path with a trailing `/`).
    pub fn capabilities(&self, path: &str) -> Caps {
        if self.root {
            return Caps(0x1ff & !Caps::DENY.0);
        }
        if let Some(c) = self.exact.get(path) {
            return *c;
        }
        if let Some(c) = path.strip_suffix('/').and_then(|p| self.exact.get(p)) {
            return *c;
        }
        self.globs
            .iter()
            .filter(|(p, _)| glob_match(p, path))
            .max_by(|(a, _), (b, _)| {
                if lower_priority(a, b) {
                    std::cmp::Ordering::Less
                } else if lower_priority(b, a) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }

    /// Whether the token is root.
    pub fn is_root(&self) -> bool {
        self.root
    }
}

/// The built-in `default` policy (Vault's, minus paths this server lacks).
pub const DEFAULT_POLICY: &str = r#"
# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(policies: &[&str]) -> Acl {
        let ps: Vec<Policy> = policies.iter().map(|p| Policy::parse(p).unwrap()).collect();
        Acl::new(&ps, false)
    }

    fn check(policies: &[&str], path: &str, want: &[&str]) {
        assert_eq!(acl(policies).capabilities(path).names(), want, "{path}");
    }

    #[test]
    fn patterns_match_like_vault() {
        for (pat, path, ok) in [
            ("pki/*", "pki/issue/x", true),
            ("pki/*", "pki/", true),
            ("pki/*", "pki", false),
            ("pki*", "pki-int/issue/x", true),
            ("pki/+/web", "pki/issue/web", true),
            ("pki/+/web", "pki/issue/web2", false),
            ("pki/+/web", "pki/a/b/web", false),
            ("+/pki/issue/*", "kube/pki/issue/worker", true),
            ("a/+/c/*", "a/b/c/d/e", true),
            ("a/+/c/*", "a/b/d/d", false),
            ("exact", "exact", true),
            ("exact", "exact/more", false),
        ] {
            assert_eq!(glob_match(pat, path), ok, "{pat} vs {path}");
        }
    }

    #[test]
    fn precedence_deny_and_merging() {
        let p1 = r#"
            path "pki/*" { capabilities = ["read", "list"] }
            path "pki/issue/+" { capabilities = ["update"] }
            path "pki/issue/admin" { capabilities = ["deny"] }
            # a comment
            path "secret/*" { policy = "write" }
        "#;
        check(&[p1], "pki/issue/worker", &["update"]);
        check(&[p1], "pki/issue/admin", &["deny"]);
        check(&[p1], "pki/ca", &["list", "read"]);
        check(&[p1], "other/path", &["deny"]);
        check(
            &[p1],
            "secret/x",
            &["create", "delete", "list", "read", "update"],
        );
        // Same pattern in two policies: union; deny wins.
        let p2 = r#"path "pki/issue/+" { capabilities = ["create"] }"#;
        check(&[p1, p2], "pki/issue/worker", &["create", "update"]);
        let p3 = r#"path "pki/*" { capabilities = ["deny"] }"#;
        check(&[p1, p3], "pki/ca", &["deny"]);
        // The most specific glob wins, with no union across patterns.
        check(&[p1, p3], "pki/issue/worker", &["update"]);
        // LIST carries a trailing slash; the exact rule without it still applies.
        let p4 = r#"path "pki/certs" { capabilities = ["list"] }"#;
        check(&[p4], "pki/certs/", &["list"]);
    }

    #[test]
    fn priority_order() {
        assert!(
            lower_priority("pki/*", "pki/issue/*"),
            "later first wildcard wins"
        );
        assert!(
            lower_priority("pki/issue*", "pki/issue"),
            "no star beats star"
        );
        assert!(lower_priority("a/+/+/d", "a/+/c/d"), "more + loses");
        assert!(lower_priority("a/+/+", "a/+/c"), "fewer + wins");
        assert!(lower_priority("ab*", "abc*"), "longer wins");
    }

    #[test]
    fn json_and_legacy_and_errors() {
        let j = r#"{"path": {"pki/sign/*": {"capabilities": ["update"]}, "pki/ca": {"policy": "read"}}}"#;
        check(&[j], "pki/sign/x", &["update"]);
        check(&[j], "pki/ca", &["list", "read"]);
        for bad in [
            r#"path "x" { capabilities = ["fly"] }"#,
            r#"path "x*y" { capabilities = ["read"] }"#,
            r#"path "a/+*" { capabilities = ["read"] }"#,
            r#"path "x" { capabilitiez = ["read"] }"#,
            r#"path "x" { policy = "everything" }"#,
            r#"user "x" { }"#,
            r#"path "x" {"#,
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
        assert!(Policy::parse(DEFAULT_POLICY).is_ok());
        assert!(
            Acl::new([], true)
                .capabilities("anything")
                .allows(Caps::SUDO)
        );
    }
}
