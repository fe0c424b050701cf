//! Vault's JWT auth method: a mount's configuration (keys, issuer), its roles
//! (bindings, claim mappings, token settings) and the login check.
//!
//! A login passes only if the signature verifies with a configured key
//! ([`super::jws`]), the token is inside its validity window (Vault's default
//! leeways), its issuer is the configured one, its audience and subject are
//! the role's, and every bound claim matches. The role's `claim_mappings` copy
//! claims into the token's metadata, which PKI role templates
//! (`{{identity.entity.metadata.KEY}}`) then trust to pin certificate names.
//!
//! Not here: OIDC discovery, JWKS URLs, the OIDC (browser) flow, and
//! `bound_cidrs`. Time is a parameter (`now`, Unix seconds).

use super::jws::{self, JwsError, KeyError, PublicKey};
use super::{Login, TokenParams};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Vault's default `expiration_leeway` and `not_before_leeway` (seconds).
pub const DEFAULT_LEEWAY: i64 = 150;
/// Vault's default `clock_skew_leeway` (seconds).
pub const DEFAULT_CLOCK_SKEW: i64 = 60;

/// `auth/<mount>/config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JwtConfig {
    /// PEM public keys (or certificates) that may sign login tokens.
    pub jwt_validation_pubkeys: Vec<String>,
    /// Required `iss` (empty = any).
    pub bound_issuer: String,
    /// Algorithms accepted (empty = all of [`jws::SUPPORTED_ALGS`]).
    pub jwt_supported_algs: Vec<String>,
    /// Role used when a login names none.
    pub default_role: String,
}

impl JwtConfig {
    /// Check the configuration and parse its keys.
    pub fn keys(&self) -> Result<Vec<PublicKey>, KeyError> {
        let mut out = Vec::new();
        for pem in &self.jwt_validation_pubkeys {
            out.extend(PublicKey::from_pem(pem)?);
        }
        Ok(out)
    }

    /// Refuse configurations that could never verify anything or that name
    /// an algorithm we do not verify (HS*, `none`, ...).
    pub fn validate(&self) -> Result<(), String> {
        if self.jwt_validation_pubkeys.is_empty() {
            return Err("exactly one of 'jwt_validation_pubkeys', 'jwks_url' or 'oidc_discovery_url' must be set".into());
        }
        self.keys().map_err(|e| e.to_string())?;
        for a in &self.jwt_supported_algs {
            if !jws::SUPPORTED_ALGS.contains(&a.as_str()) {
                return Err(format!(
                    "invalid jwt_supported_algs: unsupported algorithm {a:?}"
                ));
            }
        }
        Ok(())
    }
}

/// `auth/<mount>/role/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JwtRole {
    /// Only `jwt`.
    pub role_type: String,
    /// `aud` must hold one of these.
    pub bound_audiences: Vec<String>,
    /// `sub` must equal this (empty = any).
    pub bound_subject: String,
    /// Claim (name or JSON pointer) → required value, or a list of allowed values.
    pub bound_claims: Map<String, Value>,
    /// Claim (name or JSON pointer) → token metadata key.
    pub claim_mappings: BTreeMap<String, String>,
    /// The claim naming the user (the token's display name).
    pub user_claim: String,
    /// Leeway after `exp` (seconds; -1 = do not check exp).
    pub expiration_leeway: i64,
    /// Leeway before `nbf` (seconds; -1 = do not check nbf).
    pub not_before_leeway: i64,
    /// Clock skew allowed on every time claim (seconds).
    pub clock_skew_leeway: i64,
    /// Token settings.
    #[serde(flatten)]
    pub token: TokenParams,
}

impl Default for JwtRole {
    fn default() -> Self {
        Self {
            role_type: "jwt".into(),
            bound_audiences: Vec::new(),
            bound_subject: String::new(),
            bound_claims: Map::new(),
            claim_mappings: BTreeMap::new(),
            user_claim: "sub".into(),
            expiration_leeway: DEFAULT_LEEWAY,
            not_before_leeway: DEFAULT_LEEWAY,
            clock_skew_leeway: DEFAULT_CLOCK_SKEW,
            token: TokenParams::default(),
        }
    }
}

/// Metadata key the login sets to the role name (claim mappings may not use it).
pub const ROLE_META_KEY: &str = "role";

impl JwtRole {
    /// Vault's rules for a role, plus ours: no root policy, no mapping onto `role`.
    pub fn validate(&self) -> Result<(), String> {
        if self.role_type != "jwt" {
            return Err(format!(
                "invalid 'role_type': {:?} (only \"jwt\" is supported)",
                self.role_type
            ));
        }
        if self.user_claim.is_empty() {
            return Err("a user claim must be defined on the role".into());
        }
        if self.bound_audiences.is_empty()
            && self.bound_subject.is_empty()
            && self.bound_claims.is_empty()
        {
            return Err(
                "must have at least one bound constraint when creating/updating a role".into(),
            );
        }
        for (k, v) in &self.bound_claims {
            let ok = match v {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => true,
                Value::Array(a) => a
                    .iter()
                    .all(|x| matches!(x, Value::String(_) | Value::Number(_) | Value::Bool(_))),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "bound_claims value for {k:?} must be a scalar or a list of scalars"
                ));
            }
        }
        let mut targets = std::collections::BTreeSet::new();
        for v in self.claim_mappings.values() {
            if v == ROLE_META_KEY {
                return Err(format!(
                    "metadata key {v:?} is reserved and may not be set via 'claim_mappings'"
                ));
            }
            if !targets.insert(v) {
                return Err(format!("multiple keys are mapped to metadata key {v:?}"));
            }
        }
        if self.token.token_policies.iter().any(|p| p == "root") {
            return Err("a login role may not grant the root policy".into());
        }
        Ok(())
    }
}

/// Why a login was refused. Messages never contain the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// The token is not a valid signed token, or is out of its validity window (400).
    #[error("error validating token: {0}")]
    Invalid(String),
    /// The token is valid but the role does not accept it (403).
    #[error("error validating claims: {0}")]
    Denied(String),
}

impl From<JwsError> for JwtError {
    fn from(e: JwsError) -> Self {
        JwtError::Invalid(e.to_string())
    }
}

/// A claim by name, or by JSON pointer when it starts with `/`.
fn claim<'a>(claims: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if key.starts_with('/') {
        let mut cur: Option<&Value> = None;
        for (i, seg) in key.split('/').skip(1).enumerate() {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            cur = if i == 0 {
                claims.get(&seg)
            } else {
                cur.and_then(|c| c.get(&seg))
            };
        }
        cur
    } else {
        claims.get(key)
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn time_claim(claims: &Map<String, Value>, key: &str) -> Result<Option<i64>, JwtError> {
    match claims.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| JwtError::Invalid(format!("{key} claim is not a number"))),
    }
}

/// Any of the values `got` (a scalar or a list) equals any of `want` (a scalar or a list).
fn any_match(got: &Value, want: &Value) -> bool {
    let wants: Vec<String> = match want {
        Value::Array(a) => a.iter().filter_map(scalar).collect(),
        v => scalar(v).into_iter().collect(),
    };
    let gots: Vec<String> = match got {
        Value::Array(a) => a.iter().filter_map(scalar).collect(),
        v => scalar(v).into_iter().collect(),
    };
    gots.iter().any(|g| wants.contains(g))
}

/// Check a login token for `role` and return the identity it proves.
pub fn login(
    config: &JwtConfig,
    keys: &[PublicKey],
    role_name: &str,
    role: &JwtRole,
    token: &str,
    now: i64,
) -> Result<Login, JwtError> {
    let v = jws::verify(token, keys, &config.jwt_supported_algs)?;
    let c = &v.claims;
    let skew = role.clock_skew_leeway.max(0);
    if role.expiration_leeway >= 0 {
        let exp = time_claim(c, "exp")?
            .ok_or_else(|| JwtError::Invalid("no exp claim: tokens must expire".into()))?;
        if now.saturating_sub(role.expiration_leeway.saturating_add(skew)) > exp {
            return Err(JwtError::Invalid("token is expired (exp)".into()));
        }
    }
    if role.not_before_leeway >= 0
        && let Some(nbf) = time_claim(c, "nbf")?
        && now.saturating_add(role.not_before_leeway.saturating_add(skew)) < nbf
    {
        return Err(JwtError::Invalid("token not valid yet (nbf)".into()));
    }
    if let Some(iat) = time_claim(c, "iat")?
        && now.saturating_add(skew) < iat
    {
        return Err(JwtError::Invalid("token issued in the future (iat)".into()));
    }
    if !config.bound_issuer.is_empty()
        && c.get("iss").and_then(Value::as_str) != Some(config.bound_issuer.as_str())
    {
        return Err(JwtError::Denied("invalid issuer (iss) claim".into()));
    }
    match (c.get("aud"), role.bound_audiences.is_empty()) {
        (Some(aud), false) => {
            if !any_match(aud, &Value::from(role.bound_audiences.clone())) {
                return Err(JwtError::Denied("invalid audience (aud) claim: audience claim does not match any expected audience".into()));
            }
        }
        (None, false) => {
            return Err(JwtError::Denied(
                "invalid audience (aud) claim: no aud claim".into(),
            ));
        }
        (Some(_), true) => {
            return Err(JwtError::Denied(
                "audience claim found in JWT but no audiences bound to the role".into(),
            ));
        }
        (None, true) => {}
    }
    if !role.bound_subject.is_empty()
        && c.get("sub").and_then(Value::as_str) != Some(role.bound_subject.as_str())
    {
        return Err(JwtError::Denied("invalid subject (sub) claim".into()));
    }
    for (k, want) in &role.bound_claims {
        let got = claim(c, k).ok_or_else(|| JwtError::Denied(format!("claim {k:?} is missing")))?;
        if !any_match(got, want) {
            return Err(JwtError::Denied(format!(
                "claim {k:?} does not match any associated bound claim values"
            )));
        }
    }
    let user = claim(c, &role.user_claim)
        .and_then(scalar)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            JwtError::Denied(format!("claim {:?} not found in token", role.user_claim))
        })?;
    let mut meta = BTreeMap::new();
    for (from, to) in &role.claim_mappings {
        if let Some(v) = claim(c, from) {
            let s = scalar(v).ok_or_else(|| {
                JwtError::Denied(format!("error converting claim {from:?} to string"))
            })?;
            meta.insert(to.clone(), s);
        }
    }
    meta.insert(ROLE_META_KEY.into(), role_name.to_string());
    Ok(Login {
        display_name: format!("jwt-{user}"),
        meta,
    })
}

#[cfg(test)]
mod tests;
