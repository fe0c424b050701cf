//! Authentication and authorisation: the token store and ACL policies.
//!
//! Policies are stored as text behind the barrier at `sys/policy/<name>`; the
//! built-in `default` policy applies until an operator rewrites it; `root` is
//! implicit and allows everything.
//!
//! Login methods (`auth/<mount>/login`) live in `jwt` (Vault's JWT method, with
//! signatures checked by `jws`) and `aws` (Vault's IAM method); `methods` is
//! their mount table. A login proves an identity ([`Login`]) and the role's
//! [`TokenParams`] turn it into a new token.

pub mod aws;
pub mod jws;
pub mod jwt;
pub mod methods;
pub mod policy;
pub mod token;

use crate::storage::{Storage, StorageError};
use policy::{Caps, DEFAULT_POLICY};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Token settings shared by every login role (Vault's `tokenutil` fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenParams {
    /// Policies of tokens issued by the role.
    pub token_policies: Vec<String>,
    /// Default TTL (seconds; 0 = the system default, 768h).
    pub token_ttl: u64,
    /// Maximum lifetime (seconds; 0 = the system maximum).
    pub token_max_ttl: u64,
    /// Periodic tokens (seconds; 0 = not periodic).
    pub token_period: u64,
    /// Leave out the `default` policy.
    pub token_no_default_policy: bool,
}

/// What a successful login proved: the role it used and the identity's
/// metadata (role templates pin certificate names to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// Display name of the token (`<method>-<user>`).
    pub display_name: String,
    /// Token metadata.
    pub meta: BTreeMap<String, String>,
}

impl TokenParams {
    /// The token a login with these settings gets (an orphan: a login has no parent).
    pub fn new_token(&self, login: Login, path: &str) -> token::NewToken {
        let mut policies = self.token_policies.clone();
        if !self.token_no_default_policy {
            policies.push("default".into());
        }
        policies.retain(|p| p != "root");
        policies.sort();
        policies.dedup();
        let cap = match self.token_max_ttl {
            0 => token::SYSTEM_MAX_TTL,
            m => m.min(token::SYSTEM_MAX_TTL),
        };
        let ttl = if self.token_period > 0 {
            self.token_period
        } else if self.token_ttl > 0 {
            self.token_ttl.min(cap)
        } else {
            cap
        };
        token::NewToken {
            policies,
            meta: login.meta,
            display_name: login.display_name,
            ttl,
            explicit_max_ttl: self.token_max_ttl,
            period: self.token_period,
            num_uses: 0,
            parent: None,
            path: path.to_string(),
            renewable: true,
            role: None,
        }
    }
}

const POLICY_PREFIX: &str = "sys/policy/";

/// The text of policy `name`, if it exists.
pub async fn policy_text(
    barrier: &dyn Storage,
    name: &str,
) -> Result<Option<String>, StorageError> {
    match barrier.get(&format!("{POLICY_PREFIX}{name}")).await? {
        Some(e) => Ok(Some(String::from_utf8_lossy(&e.value).into_owned())),
        None if name == "default" => Ok(Some(DEFAULT_POLICY.trim_start().to_string())),
        None => Ok(None),
    }
}

/// Store policy `name` (already parsed and checked by the caller).
pub async fn put_policy(barrier: &dyn Storage, name: &str, text: &str) -> Result<(), StorageError> {
    // Unconditional put is safe: a policy write replaces the whole text
    // (Vault's semantics; nothing stored is merged in), and the caller drops
    // every cached parse after it.
    barrier
        .put(&format!("{POLICY_PREFIX}{name}"), text.as_bytes())
        .await
}

/// Delete policy `name`.
pub async fn delete_policy(barrier: &dyn Storage, name: &str) -> Result<(), StorageError> {
    barrier.delete(&format!("{POLICY_PREFIX}{name}")).await
}

/// Every policy name, `default` and `root` included, sorted.
pub async fn list_policies(barrier: &dyn Storage) -> Result<Vec<String>, StorageError> {
    let mut names: Vec<String> = barrier
        .list(POLICY_PREFIX)
        .await?
        .into_iter()
        .filter(|k| !k.ends_with('/'))
        .collect();
    names.push("default".into());
    names.push("root".into());
    names.sort();
    names.dedup();
    Ok(names)
}

/// Vault's root-protected paths: the token also needs `sudo` on them.
pub fn needs_sudo(path: &str, delete: bool) -> bool {
    matches!(
        path,
        "sys/audit"
            | "sys/rotate"
            | "sys/seal"
            | "auth/token/accessors"
            | "auth/token/revoke-orphan"
    ) || path.starts_with("sys/audit/")
        || path.starts_with("sys/auth/")
        || path.starts_with("sys/raw")
        || path.ends_with("/root/sign-self-issued")
        || (delete && path.ends_with("/root"))
}

/// The capability an operation needs.
pub fn needed(op_is_read: bool, op_is_list: bool, op_is_delete: bool) -> Caps {
    if op_is_list {
        Caps::LIST
    } else if op_is_read {
        Caps::READ
    } else if op_is_delete {
        Caps::DELETE
    } else {
        Caps::UPDATE
    }
}
