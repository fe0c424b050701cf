//! ACL policies in Vault's language, and the decision for one request.
//!
//! A policy is HCL (parsed with hcl-rs) or JSON: `path "<pattern>" {
//! capabilities = [...] }` or the legacy `policy = "read|write|deny|sudo"`.
//! Patterns: exact; a trailing `*` for a prefix; `+` for exactly one segment.
//! Rules of several policies on one pattern are merged (union; `deny` wins).
//! An exact rule beats globs; among globs only the single highest-priority
//! matching rule applies (Vault's ordering). No match denies.
//!
//! Parameter constraints (`allowed_parameters`, `denied_parameters`,
//! `required_parameters`) are enforced on the request body as Vault does
//! ([`Acl::parameters_allowed`]). Accepted and not enforced: wrapping TTL
//! bounds and control groups.

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
    pub rules: BTreeMap<String, Rule>,
}

/// Parameter name → the values allowed (or denied); an empty list: any value.
pub type ParamValues = BTreeMap<String, Vec<serde_json::Value>>;

/// What one path pattern grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// The capabilities.
    pub caps: Caps,
    /// `allowed_parameters` (names lower-cased; `*`: any other parameter).
    pub allowed: ParamValues,
    /// `denied_parameters` (names lower-cased; `*`: every parameter).
    pub denied: ParamValues,
    /// `required_parameters`.
    pub required: Vec<String>,
}

impl Rule {
    /// Vault's `mergePermissions`: capabilities are united; allowed and denied
    /// value lists are united per parameter, an empty list (any value) winning
    /// in `allowed` and in `denied`; required parameters are united.
    fn merge(&mut self, o: &Rule) {
        self.caps = self.caps.union(o.caps);
        for (mine, theirs) in [
            (&mut self.allowed, &o.allowed),
            (&mut self.denied, &o.denied),
        ] {
            if mine.is_empty() {
                mine.clone_from(theirs);
                continue;
            }
            for (k, vs) in theirs {
                match mine.get_mut(k) {
                    None => {
                        mine.insert(k.clone(), vs.clone());
                    }
                    Some(cur) if cur.is_empty() || vs.is_empty() => cur.clear(),
                    Some(cur) => cur.extend(vs.iter().cloned()),
                }
            }
        }
        for r in &o.required {
            if !self.required.contains(r) {
                self.required.push(r.clone());
            }
        }
    }
}

fn param_values(v: &serde_json::Value, key: &str) -> Result<ParamValues, PolicyError> {
    let obj = v
        .as_object()
        .ok_or_else(|| PolicyError(format!("{key} must be a map of parameter to values")))?;
    let mut out = ParamValues::new();
    for (name, vals) in obj {
        let vals = match vals {
            serde_json::Value::Array(a) => a.clone(),
            serde_json::Value::Null => Vec::new(),
            other => vec![other.clone()],
        };
        out.entry(name.to_ascii_lowercase())
            .or_default()
            .extend(vals);
    }
    Ok(out)
}

fn required_list(v: &serde_json::Value) -> Result<Vec<String>, PolicyError> {
    let list: Vec<String> = serde_json::from_value(v.clone())
        .map_err(|_| PolicyError("required_parameters must be a list of strings".into()))?;
    Ok(list.into_iter().map(|p| p.to_ascii_lowercase()).collect())
}

/// Apply one constraint attribute (already as JSON) to `rule`.
fn constraint(rule: &mut Rule, key: &str, v: &serde_json::Value) -> Result<(), PolicyError> {
    match key {
        "allowed_parameters" => rule.allowed = param_values(v, key)?,
        "denied_parameters" => rule.denied = param_values(v, key)?,
        "required_parameters" => rule.required = required_list(v)?,
        _ => {}
    }
    Ok(())
}

/// Vault's `valueInParameterList`: an empty list holds every value; a string
/// entry with a leading and/or trailing `*` is a glob. A list value: in an
/// allowed list when every element is, in a denied list when any element is.
fn value_in_list(v: &serde_json::Value, list: &[serde_json::Value], denied: bool) -> bool {
    if list.is_empty() {
        return true;
    }
    if let serde_json::Value::Array(items) = v {
        let one = |i: &serde_json::Value| value_in_list(i, list, denied);
        return if denied {
            items.iter().any(one)
        } else {
            items.iter().all(one)
        };
    }
    list.iter().any(|entry| match (entry, v) {
        (serde_json::Value::String(pat), serde_json::Value::String(val)) => glob_value(pat, val),
        // Parameters are read loosely (`"1"` and `1`, `"true"` and `true` are
        // one value to the handler), so they are compared loosely here too.
        (a, b) => a == b || loose_eq(a, b),
    })
}

/// Values compared as the handler reads them: `"1"` and `1`, `"true"` and
/// `true` are one parameter value.
fn loose_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    matches!((text(a), text(b)), (Some(x), Some(y)) if x == y)
}

/// Vault's `GlobbedStringsMatch`: `*x*`, `*x` and `x*`; shorter than two
/// characters (a lone `*` too) only itself.
fn glob_value(pat: &str, v: &str) -> bool {
    if pat.len() < 2 {
        return v == pat;
    }
    match (pat.strip_prefix('*'), pat.strip_suffix('*')) {
        (Some(_), Some(_)) => v.contains(&pat[1..pat.len() - 1]),
        (Some(suffix), None) => v.ends_with(suffix),
        (None, Some(prefix)) => v.starts_with(prefix),
        (None, None) => v == pat,
    }
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
        let mut rules: BTreeMap<String, Rule> = BTreeMap::new();
        let mut add = |pattern: &str, rule: Rule| -> Result<(), PolicyError> {
            let p = check_pattern(pattern)?;
            rules.entry(p).or_default().merge(&rule);
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
                add(pattern, rule_json(body)?)?;
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
                let mut rule = Rule::default();
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
                        k
                        @ ("allowed_parameters" | "denied_parameters" | "required_parameters") => {
                            let v = hcl_json(attr.expr()).map_err(|e| {
                                PolicyError(format!("{k} in path {:?}: {}", label.as_str(), e.0))
                            })?;
                            constraint(&mut rule, k, &v)?;
                        }
                        "min_wrapping_ttl" | "max_wrapping_ttl" | "control_group" => {}
                        other => {
                            return Err(PolicyError(format!(
                                "invalid key {other:?} in path {:?}",
                                label.as_str()
                            )));
                        }
                    }
                }
                rule.caps = caps;
                add(label.as_str(), rule)?;
            }
        }
        Ok(Policy { rules })
    }
}

/// An HCL literal (string, number, bool, null, list, object) as JSON.
fn hcl_json(e: &hcl::Expression) -> Result<serde_json::Value, PolicyError> {
    use hcl::{Expression as E, ObjectKey};
    Ok(match e {
        E::Null => serde_json::Value::Null,
        E::Bool(b) => serde_json::Value::Bool(*b),
        E::Number(n) => serde_json::to_value(n).map_err(|e| PolicyError(e.to_string()))?,
        E::String(s) => serde_json::Value::String(s.clone()),
        E::Array(items) => {
            serde_json::Value::Array(items.iter().map(hcl_json).collect::<Result<_, _>>()?)
        }
        E::Object(obj) => {
            let mut m = serde_json::Map::new();
            for (k, v) in obj {
                let key = match k {
                    ObjectKey::Identifier(id) => id.to_string(),
                    ObjectKey::Expression(E::String(s)) => s.clone(),
                    _ => return Err(PolicyError("keys must be names or strings".into())),
                };
                m.insert(key, hcl_json(v)?);
            }
            serde_json::Value::Object(m)
        }
        _ => return Err(PolicyError("only literal values are allowed".into())),
    })
}

fn rule_json(body: &serde_json::Value) -> Result<Rule, PolicyError> {
    let mut rule = Rule::default();
    for k in [
        "allowed_parameters",
        "denied_parameters",
        "required_parameters",
    ] {
        if let Some(v) = body.get(k) {
            constraint(&mut rule, k, v)?;
        }
    }
    rule.caps = rule_caps_json(body)?;
    Ok(rule)
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
    exact: BTreeMap<String, Rule>,
    globs: Vec<(String, Rule)>,
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
        let mut merged: BTreeMap<String, Rule> = BTreeMap::new();
        for p in policies {
            for (pat, rule) in &p.rules {
                merged.entry(pat.clone()).or_default().merge(rule);
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
        self.rule(path).map(|r| r.caps).unwrap_or_default()
    }

    /// Vault's parameter check (`AllowOperation`) of a request body against
    /// the rule that decides `path`: required parameters present; with
    /// `denied_parameters` `*`, no parameter at all; no parameter whose value
    /// is denied; with `allowed_parameters`, only those (or any, with `*`),
    /// each with an allowed value. Reads, lists and deletes carry no body.
    pub fn parameters_allowed(
        &self,
        path: &str,
        data: &serde_json::Map<String, serde_json::Value>,
    ) -> bool {
        if self.root {
            return true;
        }
        let Some(r) = self.rule(path) else {
            return false;
        };
        let has = |k: &str| data.keys().any(|d| d.eq_ignore_ascii_case(k));
        if !r.required.iter().all(|k| has(k)) {
            return false;
        }
        if data.is_empty() {
            return true;
        }
        if !r.denied.is_empty() {
            if r.denied.contains_key("*") {
                return false;
            }
            let denied = data.iter().any(|(k, v)| {
                r.denied
                    .get(&k.to_ascii_lowercase())
                    .is_some_and(|list| value_in_list(v, list, true))
            });
            if denied {
                return false;
            }
        }
        let allow_all = r.allowed.contains_key("*");
        if r.allowed.is_empty() || (allow_all && r.allowed.len() == 1) {
            return true;
        }
        data.iter()
            .all(|(k, v)| match r.allowed.get(&k.to_ascii_lowercase()) {
                None => allow_all,
                Some(list) => value_in_list(v, list, false),
            })
    }

    /// The rule that decides `path`: exact first, else the highest-priority glob.
    fn rule(&self, path: &str) -> Option<&Rule> {
        if let Some(r) = self.exact.get(path) {
            return Some(r);
        }
        if let Some(r) = path.strip_suffix('/').and_then(|p| self.exact.get(p)) {
            return Some(r);
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
            .map(|(_, r)| r)
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
    use serde_json::json;

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

    /// Vault's documented examples (docs: policies, "Parameter constraints").
    #[test]
    fn parameter_constraints_like_vault() {
        let cases: &[(&str, serde_json::Value, bool)] = &[
            // allowed_parameters with values: only those keys, only those values.
            (
                r#"allowed_parameters = { "bar" = ["zip", "zap"] }"#,
                json!({"bar": "zip"}),
                true,
            ),
            (
                r#"allowed_parameters = { "bar" = ["zip", "zap"] }"#,
                json!({"bar": "zap"}),
                true,
            ),
            (
                r#"allowed_parameters = { "bar" = ["zip", "zap"] }"#,
                json!({"bar": "zop"}),
                false,
            ),
            (
                r#"allowed_parameters = { "bar" = ["zip", "zap"] }"#,
                json!({"bar": "zip", "baz": "1"}),
                false,
            ),
            (
                r#"allowed_parameters = { "bar" = ["zip", "zap"] }"#,
                json!({}),
                true,
            ),
            // An empty list: any value of that key, and no other key.
            (
                r#"allowed_parameters = { "bar" = [] }"#,
                json!({"bar": "anything"}),
                true,
            ),
            (
                r#"allowed_parameters = { "bar" = [] }"#,
                json!({"baz": "x"}),
                false,
            ),
            // "*": any other key; the listed ones still constrained.
            (
                r#"allowed_parameters = { "*" = [], "foo" = ["bar"] }"#,
                json!({"foo": "bar", "x": 1}),
                true,
            ),
            (
                r#"allowed_parameters = { "*" = [], "foo" = ["bar"] }"#,
                json!({"foo": "baz"}),
                false,
            ),
            (
                r#"allowed_parameters = { "*" = [] }"#,
                json!({"anything": "at all"}),
                true,
            ),
            // Globs on string values: prefix, suffix, contains.
            (
                r#"allowed_parameters = { "bar" = ["zip-*", "*-zap", "*-zop-*"] }"#,
                json!({"bar": "zip-1"}),
                true,
            ),
            (
                r#"allowed_parameters = { "bar" = ["zip-*", "*-zap", "*-zop-*"] }"#,
                json!({"bar": "1-zap"}),
                true,
            ),
            (
                r#"allowed_parameters = { "bar" = ["zip-*", "*-zap", "*-zop-*"] }"#,
                json!({"bar": "a-zop-b"}),
                true,
            ),
            (
                r#"allowed_parameters = { "bar" = ["zip-*", "*-zap", "*-zop-*"] }"#,
                json!({"bar": "zap"}),
                false,
            ),
            // A lone "*" value is not a glob (GlobbedStringsMatch).
            (
                r#"allowed_parameters = { "bar" = ["*"] }"#,
                json!({"bar": "x"}),
                false,
            ),
            // denied_parameters: the listed values (or every value) refused.
            (
                r#"denied_parameters = { "bar" = ["zip", "zap"] }"#,
                json!({"bar": "zip"}),
                false,
            ),
            (
                r#"denied_parameters = { "bar" = ["zip", "zap"] }"#,
                json!({"bar": "zop", "baz": 1}),
                true,
            ),
            (
                r#"denied_parameters = { "bar" = [] }"#,
                json!({"bar": "any"}),
                false,
            ),
            (
                r#"denied_parameters = { "*" = [] }"#,
                json!({"x": 1}),
                false,
            ),
            (r#"denied_parameters = { "*" = [] }"#, json!({}), true),
            // Case-insensitive names; loose values; lists element by element.
            (
                r#"denied_parameters = { "Not_After" = [] }"#,
                json!({"not_after": "2035-01-01T00:00:00Z"}),
                false,
            ),
            (
                r#"denied_parameters = { "exclude_cn_from_sans" = [true] }"#,
                json!({"exclude_cn_from_sans": "true"}),
                false,
            ),
            (
                r#"denied_parameters = { "alt_names" = ["*.evil"] }"#,
                json!({"alt_names": ["ok", "a.evil"]}),
                false,
            ),
            (
                r#"allowed_parameters = { "alt_names" = ["*.ok"] }"#,
                json!({"alt_names": ["a.ok", "a.evil"]}),
                false,
            ),
            (
                r#"allowed_parameters = { "alt_names" = ["*.ok"] }"#,
                json!({"alt_names": ["a.ok", "b.ok"]}),
                true,
            ),
            // denied beats allowed.
            (
                r#"allowed_parameters = { "*" = [] }
                denied_parameters = { "ttl" = [] }"#,
                json!({"ttl": "1h"}),
                false,
            ),
            // required_parameters: each must be present.
            (
                r#"required_parameters = ["bar", "baz"]"#,
                json!({"bar": 1, "baz": 2}),
                true,
            ),
            (
                r#"required_parameters = ["bar", "baz"]"#,
                json!({"bar": 1}),
                false,
            ),
            (r#"required_parameters = ["bar"]"#, json!({}), false),
        ];
        for (body, data, want) in cases {
            let text = format!("path \"p\" {{\n  capabilities = [\"update\"]\n  {body}\n}}");
            let a = acl(&[&text]);
            let data = data.as_object().unwrap();
            assert_eq!(
                a.parameters_allowed("p", data),
                *want,
                "{body} with {data:?}"
            );
            // The same policy in JSON gives the same answer.
            let hcl_rule = &Policy::parse(&text).unwrap().rules["p"];
            let mut j = serde_json::Map::new();
            j.insert("capabilities".into(), json!(["update"]));
            if !hcl_rule.allowed.is_empty() {
                j.insert("allowed_parameters".into(), json!(hcl_rule.allowed));
            }
            if !hcl_rule.denied.is_empty() {
                j.insert("denied_parameters".into(), json!(hcl_rule.denied));
            }
            if !hcl_rule.required.is_empty() {
                j.insert("required_parameters".into(), json!(hcl_rule.required));
            }
            let jtext = json!({"path": {"p": j}}).to_string();
            assert_eq!(
                Policy::parse(&jtext).unwrap().rules["p"],
                *hcl_rule,
                "{jtext}"
            );
        }
        // Root and paths without constraints: everything.
        let none = acl(&[r#"path "p" { capabilities = ["update"] }"#]);
        assert!(none.parameters_allowed("p", json!({"x": 1}).as_object().unwrap()));
        assert!(Acl::new(&[], true).parameters_allowed("p", json!({"x": 1}).as_object().unwrap()));
        // Two policies on one path merge: values united, an empty list wins.
        let merged = acl(&[
            "path \"p\" {\n capabilities = [\"update\"]\n allowed_parameters = { \"a\" = [\"1\"] }\n}",
            "path \"p\" {\n capabilities = [\"update\"]\n allowed_parameters = { \"a\" = [\"2\"], \"b\" = [] }\n}",
        ]);
        for (data, want) in [
            (json!({"a": "1"}), true),
            (json!({"a": "2", "b": "x"}), true),
            (json!({"a": "3"}), false),
        ] {
            assert_eq!(
                merged.parameters_allowed("p", data.as_object().unwrap()),
                want,
                "{data}"
            );
        }
    }
}
