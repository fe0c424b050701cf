//! The mount table: which secrets engine serves which path prefix.
//!
//! Stored through the barrier at `core/mounts`; each mount's data lives under
//! `logical/<uuid>/`. Requests route to the longest matching mount prefix at any
//! depth (`kubecluster/pki/etcd-member/`). No HTTP here.

use crate::storage::{Condition, Storage, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Storage key of the mount table (behind the barrier).
pub const MOUNT_TABLE: &str = "core/mounts";

/// Engine types this server can mount.
pub const SUPPORTED_TYPES: &[&str] = &["pki"];

/// Prefixes nobody may mount at or under.
const RESERVED: &[&str] = &["sys/", "auth/", "cubbyhole/", "identity/"];

/// Lease settings of a mount (seconds; 0 = the system default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountConfig {
    /// Default TTL for what the mount issues.
    pub default_lease_ttl: u64,
    /// Maximum TTL for what the mount issues.
    pub max_lease_ttl: u64,
}

/// One mounted engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    /// Path with a trailing `/`.
    pub path: String,
    /// Engine type (`pki`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    pub description: String,
    /// Unique id; the mount's data lives under `logical/<uuid>/`.
    pub uuid: String,
    /// Public handle.
    pub accessor: String,
    /// Lease settings.
    pub config: MountConfig,
    /// Engine options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Vault's `local` flag (no replication here; kept for clients).
    #[serde(default)]
    pub local: bool,
    /// Vault's `seal_wrap` flag (everything is sealed here anyway).
    #[serde(default)]
    pub seal_wrap: bool,
}

impl MountEntry {
    /// The storage prefix of this mount's data.
    pub fn storage_prefix(&self) -> String {
        format!("logical/{}/", self.uuid)
    }
}

/// Why a mount operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Path conflicts with an existing mount (Vault's text).
    #[error("path is already in use at {0}")]
    InUse(String),
    /// Reserved or malformed path.
    #[error("cannot mount at {0:?}: {1}")]
    BadPath(String, &'static str),
    /// Engine type not available.
    #[error("plugin not found in the catalog: {0}")]
    UnknownType(String),
    /// No mount at that path.
    #[error("No secret engine mount at {0}")]
    NotMounted(String),
    /// Concurrent change to the table.
    #[error("the mount table changed concurrently; retry")]
    Conflict,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl MountError {
    /// Caller-caused (400) rather than server-side.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, MountError::Storage(_) | MountError::Conflict)
    }
}

/// Normalise a mount path: no leading slash, exactly one trailing slash.
pub fn normalize(path: &str) -> String {
    format!("{}/", path.trim_matches('/'))
}

/// The table of mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountTable {
    /// Entries, sorted by path.
    pub entries: Vec<MountEntry>,
}

impl MountTable {
    /// Read the table (empty if none was written).
    pub async fn load(
        barrier: &dyn Storage,
    ) -> Result<(Self, Option<crate::storage::Version>), MountError> {
        match barrier.get(MOUNT_TABLE).await? {
            None => Ok((Self::default(), None)),
            Some(e) => {
                let t = serde_json::from_slice(&e.value)
                    .map_err(|e| StorageError::Backend(format!("corrupt mount table: {e}")))?;
                Ok((t, Some(e.version)))
            }
        }
    }

    /// Write the table if it has not changed since `version` was read.
    pub async fn save(
        &self,
        barrier: &dyn Storage,
        version: Option<crate::storage::Version>,
    ) -> Result<(), MountError> {
        let json = serde_json::to_vec(self).map_err(|e| StorageError::Backend(e.to_string()))?;
        let cond = match version {
            None => Condition::Absent,
            Some(v) => Condition::Matches(v),
        };
        if barrier.put_if(MOUNT_TABLE, &json, cond).await? {
            Ok(())
        } else {
            Err(MountError::Conflict)
        }
    }

    /// The mount serving `path` (longest prefix) and the rest of the path.
    pub fn route<'a>(&self, path: &'a str) -> Option<(&MountEntry, &'a str)> {
        let with_slash = format!("{path}/");
        self.entries
            .iter()
            .filter(|m| with_slash.starts_with(&m.path))
            .max_by_key(|m| m.path.len())
            .map(|m| (m, path.get(m.path.len()..).unwrap_or("")))
    }

    /// The entry at exactly `path`.
    pub fn get(&self, path: &str) -> Option<&MountEntry> {
        let p = normalize(path);
        self.entries.iter().find(|m| m.path == p)
    }

    /// Add a mount; refuses reserved paths, overlaps and unknown types.
    pub fn add(&mut self, entry: MountEntry) -> Result<(), MountError> {
        let p = entry.path.clone();
        if p == "/" || p.split('/').any(|s| s == "." || s == "..") || p.contains("//") {
            return Err(MountError::BadPath(p, "invalid path"));
        }
        if RESERVED.iter().any(|r| p.starts_with(r)) {
            return Err(MountError::BadPath(p, "reserved path"));
        }
        if !SUPPORTED_TYPES.contains(&entry.kind.as_str()) {
            return Err(MountError::UnknownType(entry.kind));
        }
        if let Some(m) = self
            .entries
            .iter()
            .find(|m| m.path.starts_with(&p) || p.starts_with(&m.path))
        {
            return Err(MountError::InUse(m.path.clone()));
        }
        self.entries.push(entry);
        self.entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(())
    }

    /// Remove the mount at `path`, returning it.
    pub fn remove(&mut self, path: &str) -> Option<MountEntry> {
        let p = normalize(path);
        let i = self.entries.iter().position(|m| m.path == p)?;
        Some(self.entries.remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> MountEntry {
        MountEntry {
            path: normalize(path),
            kind: "pki".into(),
            description: String::new(),
            uuid: path.replace('/', "-"),
            accessor: format!("pki_{path}"),
            config: MountConfig::default(),
            options: BTreeMap::new(),
            local: false,
            seal_wrap: false,
        }
    }

    #[test]
    fn routes_to_the_longest_prefix_at_any_depth() {
        let mut t = MountTable::default();
        t.add(entry("kubecluster/pki/etcd-member")).unwrap();
        t.add(entry("kubecluster/pki/kube-apiserver")).unwrap();
        t.add(entry("pki")).unwrap();
        let (m, rest) = t.route("kubecluster/pki/etcd-member/issue/member").unwrap();
        assert_eq!(
            (m.path.as_str(), rest),
            ("kubecluster/pki/etcd-member/", "issue/member")
        );
        assert_eq!(t.route("kubecluster/pki/etcd-member").unwrap().1, "");
        assert_eq!(t.route("pki/ca/pem").unwrap().0.path, "pki/");
        assert!(t.route("pkix/ca").is_none());
        assert!(t.route("kubecluster/pki/other/x").is_none());
    }

    #[test]
    fn overlaps_reserved_paths_and_unknown_types_are_refused() {
        let mut t = MountTable::default();
        t.add(entry("a/b")).unwrap();
        assert!(matches!(t.add(entry("a/b")), Err(MountError::InUse(_))));
        assert!(matches!(t.add(entry("a")), Err(MountError::InUse(_))));
        assert!(matches!(t.add(entry("a/b/c")), Err(MountError::InUse(_))));
        assert!(t.add(entry("a/bc")).is_ok());
        assert!(matches!(
            t.add(entry("sys/x")),
            Err(MountError::BadPath(..))
        ));
        assert!(matches!(
            t.add(entry("auth/x")),
            Err(MountError::BadPath(..))
        ));
        let mut kv = entry("kv");
        kv.kind = "kv".into();
        assert!(matches!(t.add(kv), Err(MountError::UnknownType(_))));
        assert!(t.remove("a/b/").is_some());
        assert!(t.remove("a/b").is_none());
    }
}
