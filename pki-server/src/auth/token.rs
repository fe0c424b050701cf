//! Token store: tokens are random, stored only as a keyed hash behind the barrier.
//!
//! This is the minimum the seal lifecycle needs: the root token made by
//! `sys/init` and its lookup. Child tokens, TTLs and policies build on it.

use crate::storage::{self, Condition, Storage, StorageError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// What is stored for a token (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    /// Policies attached to the token.
    pub policies: Vec<String>,
    /// Accessor (a public handle for the token).
    pub accessor: String,
    /// Creation time, Unix seconds.
    pub creation_time: i64,
    /// Display name.
    pub display_name: String,
    /// Metadata set by a privileged creator or a login method (role templates read it).
    #[serde(default)]
    pub meta: std::collections::BTreeMap<String, String>,
}

impl TokenEntry {
    /// Whether the token carries the root policy.
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }
}

fn random(n: usize) -> Result<Zeroizing<Vec<u8>>, StorageError> {
    let mut b = Zeroizing::new(vec![0u8; n]);
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| StorageError::Backend("random generator failed".into()))?;
    Ok(b)
}

async fn salt(barrier: &dyn Storage) -> Result<Zeroizing<Vec<u8>>, StorageError> {
    if let Some(e) = barrier.get(storage::TOKEN_SALT).await? {
        return Ok(Zeroizing::new(e.value));
    }
    let fresh = random(32)?;
    if barrier
        .put_if(storage::TOKEN_SALT, &fresh, Condition::Absent)
        .await?
    {
        return Ok(fresh);
    }
    barrier
        .get(storage::TOKEN_SALT)
        .await?
        .map(|e| Zeroizing::new(e.value))
        .ok_or_else(|| StorageError::Backend("token salt vanished".into()))
}

fn hash(salt: &[u8], token: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, salt);
    hex::encode(ring::hmac::sign(&key, token.as_bytes()).as_ref())
}

/// Create a token with `policies`; returns the token (shown once) and its entry.
pub async fn create(
    barrier: &dyn Storage,
    policies: Vec<String>,
    display_name: &str,
    now: i64,
) -> Result<(Zeroizing<String>, TokenEntry), StorageError> {
    let token = Zeroizing::new(format!("hvs.{}", B64URL.encode(&random(24)?[..])));
    let entry = TokenEntry {
        policies,
        accessor: B64URL.encode(&random(18)?[..]),
        creation_time: now,
        display_name: display_name.to_string(),
        meta: Default::default(),
    };
    let key = format!(
        "{}{}",
        storage::TOKEN_PREFIX,
        hash(&salt(barrier).await?, &token)
    );
    let json = serde_json::to_vec(&entry).map_err(|e| StorageError::Backend(e.to_string()))?;
    barrier.put(&key, &json).await?;
    Ok((token, entry))
}

fn valid_shape(token: &str) -> bool {
    !token.is_empty() && token.len() <= 256
}

async fn read_entry(
    barrier: &dyn Storage,
    hashed: &str,
) -> Result<Option<TokenEntry>, StorageError> {
    let key = format!("{}{hashed}", storage::TOKEN_PREFIX);
    match barrier.get(&key).await? {
        None => Ok(None),
        Some(e) => serde_json::from_slice(&e.value)
            .map(Some)
            .map_err(|e| StorageError::Backend(format!("corrupt token entry: {e}"))),
    }
}

/// Look a token up; `None` if it does not exist.
pub async fn lookup(
    barrier: &dyn Storage,
    token: &str,
) -> Result<Option<TokenEntry>, StorageError> {
    if !valid_shape(token) {
        return Ok(None);
    }
    read_entry(barrier, &hash(&salt(barrier).await?, token)).await
}

/// Most token entries the cache holds before it starts over.
const CACHE_MAX: usize = 4096;

/// Token lookups cached for one unseal generation: the salt, and the entries of
/// tokens that were found, keyed by their keyed hash (never by the token).
///
/// Every authenticated request looks its token up; without the cache that is
/// two barrier reads (salt and entry: file reads plus decryption). Only tokens
/// that exist are cached, so unknown tokens cannot fill it. Tokens are never
/// changed or deleted after creation yet; whatever revokes or expires tokens
/// must also call [`TokenCache::forget`].
#[derive(Default)]
pub struct TokenCache {
    inner: std::sync::RwLock<Option<CacheInner>>,
}

struct CacheInner {
    generation: u64,
    salt: Zeroizing<Vec<u8>>,
    entries: std::collections::HashMap<String, TokenEntry>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("TokenCache")
            .field("generation", &g.as_ref().map(|c| c.generation))
            .field("entries", &g.as_ref().map_or(0, |c| c.entries.len()))
            .finish()
    }
}

impl TokenCache {
    /// [`lookup`], served from memory when this unseal `generation` has seen
    /// the token before.
    pub async fn lookup(
        &self,
        generation: u64,
        barrier: &dyn Storage,
        token: &str,
    ) -> Result<Option<TokenEntry>, StorageError> {
        if !valid_shape(token) {
            return Ok(None);
        }
        let cached_salt = {
            let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
            match g.as_ref().filter(|c| c.generation == generation) {
                Some(c) => {
                    if let Some(e) = c.entries.get(&hash(&c.salt, token)) {
                        return Ok(Some(e.clone()));
                    }
                    Some(c.salt.clone())
                }
                None => None,
            }
        };
        let salt = match cached_salt {
            Some(s) => s,
            None => salt(barrier).await?,
        };
        let hashed = hash(&salt, token);
        let entry = read_entry(barrier, &hashed).await?;
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let c = match g.take().filter(|c| c.generation == generation) {
            Some(c) => g.insert(c),
            None => g.insert(CacheInner {
                generation,
                salt,
                entries: Default::default(),
            }),
        };
        if let Some(e) = &entry {
            if c.entries.len() >= CACHE_MAX {
                c.entries.clear();
            }
            c.entries.insert(hashed, e.clone());
        }
        Ok(entry)
    }

    /// Drop everything (for token revocation, when it exists).
    pub fn forget(&self) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    #[tokio::test]
    async fn tokens_are_stored_hashed() {
        let s = MemoryStorage::default();
        let (tok, entry) = create(&s, vec!["root".into()], "root", 1).await.unwrap();
        assert!(tok.starts_with("hvs."));
        assert_eq!(lookup(&s, &tok).await.unwrap(), Some(entry));
        assert_eq!(lookup(&s, "hvs.nope").await.unwrap(), None);
        for k in s.list(storage::TOKEN_PREFIX).await.unwrap() {
            assert!(!k.contains(&tok[4..]));
        }
    }

    #[tokio::test]
    async fn cache_serves_known_tokens_per_generation_only() {
        let s = MemoryStorage::default();
        let (tok, entry) = create(&s, vec!["root".into()], "root", 1).await.unwrap();
        let cache = TokenCache::default();
        assert_eq!(
            cache.lookup(1, &s, &tok).await.unwrap(),
            Some(entry.clone())
        );
        assert_eq!(cache.lookup(1, &s, "hvs.nope").await.unwrap(), None);
        // Served from memory: the stored entry is gone, the cache still knows it.
        for k in s.list(storage::TOKEN_PREFIX).await.unwrap() {
            s.delete(&format!("{}{k}", storage::TOKEN_PREFIX))
                .await
                .unwrap();
        }
        assert_eq!(cache.lookup(1, &s, &tok).await.unwrap(), Some(entry));
        // A new unseal generation reads storage again.
        assert_eq!(cache.lookup(2, &s, &tok).await.unwrap(), None);
        assert_eq!(cache.lookup(2, &s, "").await.unwrap(), None);
        // Unknown tokens are not cached.
        let dbg = format!("{cache:?}");
        assert!(dbg.contains("entries: 0"), "{dbg}");
    }
}
