//! Authentication and authorisation: the token store and ACL policies.
//!
//! Policies are stored as text behind the barrier at `sys/policy/<name>`; the
//! built-in `default` policy applies until an operator rewrites it; `root` is
//! implicit and allows everything.

pub mod policy;
pub mod token;

use crate::storage::{Storage, StorageError};
use policy::{Caps, DEFAULT_POLICY};

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
