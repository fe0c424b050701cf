//! The auth method table: which login method (`jwt`, `aws`) serves which
//! `auth/<path>/`. Stored through the barrier at [`AUTH_TABLE`] like the
//! secrets mount table; each method's configuration and roles live under
//! `auth/<uuid>/`. The token method (`auth/token/`) is built in and not listed
//! here. No HTTP here.

use crate::storage::{Condition, Storage, StorageError};
use serde::{Deserialize, Serialize};

/// Storage key of the auth table (behind the barrier).
pub const AUTH_TABLE: &str = "core/auth";

/// Methods this server can enable.
pub const SUPPORTED_TYPES: &[&str] = &["jwt", "aws"];

/// One enabled auth method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthMount {
    /// Path below `auth/`, with a trailing `/` (`jwt/`, `kubernetes/nodes/`).
    pub path: String,
    /// Method type (`jwt` or `aws`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    pub description: String,
    /// Unique id; the method's data lives under `auth/<uuid>/`.
    pub uuid: String,
    /// Public handle.
    pub accessor: String,
}

impl AuthMount {
    /// The storage prefix of this method's configuration and roles.
    pub fn storage_prefix(&self) -> String {
        format!("auth/{}/", self.uuid)
    }
}

/// Why an auth table change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    /// Path conflicts with an enabled method.
    #[error("path is already in use at auth/{0}")]
    InUse(String),
    /// Reserved or malformed path.
    #[error("cannot enable an auth method at {0:?}: {1}")]
    BadPath(String, &'static str),
    /// Not a method this server has.
    #[error("plugin not found in the catalog: {0}")]
    UnknownType(String),
    /// Concurrent change.
    #[error("the auth table changed concurrently; retry")]
    Conflict,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl MethodError {
    /// Caller-caused (400) rather than server-side.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, MethodError::Storage(_) | MethodError::Conflict)
    }
}

/// The enabled auth methods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthTable {
    /// Entries, sorted by path.
    pub entries: Vec<AuthMount>,
}

impl AuthTable {
    /// Read the table (empty if none was written) and its version.
    pub async fn load(
        barrier: &dyn Storage,
    ) -> Result<(Self, Option<crate::storage::Version>), MethodError> {
        match barrier.get(AUTH_TABLE).await? {
            None => Ok((Self::default(), None)),
            Some(e) => {
                let t = serde_json::from_slice(&e.value)
                    .map_err(|e| StorageError::Backend(format!("corrupt auth table: {e}")))?;
                Ok((t, Some(e.version)))
            }
        }
    }

    /// Change the table with `f` and write it if nobody else did meanwhile.
    pub async fn update<T>(
        barrier: &dyn Storage,
        f: impl FnOnce(&mut Self) -> Result<T, MethodError>,
    ) -> Result<T, MethodError> {
        let (mut t, version) = Self::load(barrier).await?;
        let out = f(&mut t)?;
        let json = serde_json::to_vec(&t).map_err(|e| StorageError::Backend(e.to_string()))?;
        let cond = match version {
            None => Condition::Absent,
            Some(v) => Condition::Matches(v),
        };
        if barrier.put_if(AUTH_TABLE, &json, cond).await? {
            Ok(out)
        } else {
            Err(MethodError::Conflict)
        }
    }

    /// The method serving `auth/<path>` and the rest of the path.
    pub fn route<'a>(&self, path: &'a str) -> Option<(&AuthMount, &'a str)> {
        let with_slash = format!("{path}/");
        self.entries
            .iter()
            .filter(|m| with_slash.starts_with(&m.path))
            .max_by_key(|m| m.path.len())
            .map(|m| (m, path.get(m.path.len()..).unwrap_or("")))
    }

    /// Enable a method; refuses `token/`, overlaps and unknown types.
    pub fn add(&mut self, entry: AuthMount) -> Result<(), MethodError> {
        let p = entry.path.clone();
        if p == "/" || p.split('/').any(|s| s == "." || s == "..") || p.contains("//") {
            return Err(MethodError::BadPath(p, "invalid path"));
        }
        if p.starts_with("token/") {
            return Err(MethodError::BadPath(p, "reserved path"));
        }
        if !SUPPORTED_TYPES.contains(&entry.kind.as_str()) {
            return Err(MethodError::UnknownType(entry.kind));
        }
        if let Some(m) = self
            .entries
            .iter()
            .find(|m| m.path.starts_with(&p) || p.starts_with(&m.path))
        {
            return Err(MethodError::InUse(m.path.clone()));
        }
        self.entries.push(entry);
        self.entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(())
    }

    /// Disable the method at `path`, returning it.
    pub fn remove(&mut self, path: &str) -> Option<AuthMount> {
        let p = crate::mounts::normalize(path);
        let i = self.entries.iter().position(|m| m.path == p)?;
        Some(self.entries.remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: &str, kind: &str) -> AuthMount {
        AuthMount {
            path: crate::mounts::normalize(path),
            kind: kind.into(),
            description: String::new(),
            uuid: path.into(),
            accessor: String::new(),
        }
    }

    #[test]
    fn routes_by_prefix_and_refuses_overlaps_token_and_unknown_types() {
        let mut t = AuthTable::default();
        t.add(m("jwt", "jwt")).unwrap();
        t.add(m("aws", "aws")).unwrap();
        assert!(matches!(
            t.add(m("jwt/x", "jwt")),
            Err(MethodError::InUse(_))
        ));
        assert!(matches!(
            t.add(m("token", "jwt")),
            Err(MethodError::BadPath(..))
        ));
        assert!(matches!(
            t.add(m("ldap", "ldap")),
            Err(MethodError::UnknownType(_))
        ));
        let (e, rest) = t.route("jwt/role/a").unwrap();
        assert_eq!((e.path.as_str(), rest), ("jwt/", "role/a"));
        assert_eq!(t.route("jwt").unwrap().1, "");
        assert!(t.route("jwtx/login").is_none());
        assert!(t.remove("jwt").is_some());
        assert!(t.route("jwt/login").is_none());
    }
}
