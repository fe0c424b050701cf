//! In-process storage for tests and throwaway servers.

use super::{Condition, Entry, Result, Storage, content_version, validate_key, validate_prefix};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A sorted map behind a mutex.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStorage {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A poisoned lock only means another thread panicked mid-operation on a
        // plain map; the map itself is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        validate_key(key)?;
        Ok(self.lock().get(key).map(|v| Entry {
            version: content_version(v),
            value: v.clone(),
        }))
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        validate_key(key)?;
        self.lock().insert(key.to_string(), value.to_vec());
        Ok(())
    }

    async fn put_if(&self, key: &str, value: &[u8], cond: Condition) -> Result<bool> {
        validate_key(key)?;
        let mut map = self.lock();
        let ok = match (&cond, map.get(key)) {
            (Condition::Absent, None) => true,
            (Condition::Matches(v), Some(cur)) => content_version(cur) == *v,
            _ => false,
        };
        if ok {
            map.insert(key.to_string(), value.to_vec());
        }
        Ok(ok)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.lock().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let map = self.lock();
        let mut out: Vec<String> = Vec::new();
        for k in map.range(prefix.to_string()..) {
            let Some(rest) = k.0.strip_prefix(prefix) else {
                break;
            };
            let child = match rest.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => rest.to_string(),
            };
            if out.last() != Some(&child) {
                out.push(child);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn kind(&self) -> &'static str {
        "inmem"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        crate::storage::conformance::run(&MemoryStorage::default()).await;
    }
}
