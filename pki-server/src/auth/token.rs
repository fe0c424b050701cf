//! Token store: tokens are random and stored only as a keyed hash behind the
//! barrier, with an accessor (a public handle), TTL / explicit max TTL / period,
//! use counts, metadata, and parent/child links so revoking a token revokes its
//! children. Time is a parameter (`now`, Unix seconds).
//!
//! Storage (all through the barrier): `sys/token/salt`, `sys/token/id/<hash>`,
//! `sys/token/accessor/<accessor>` → hash, `sys/token/parent/<hash>/<child hash>`,
//! `sys/token/roles/<name>`.

use crate::storage::{self, Condition, Storage, StorageError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Vault's system default and maximum token TTL (768h).
pub const SYSTEM_MAX_TTL: u64 = 768 * 3600;

const ACCESSOR_PREFIX: &str = "sys/token/accessor/";
const PARENT_PREFIX: &str = "sys/token/parent/";
const ROLE_PREFIX: &str = "sys/token/roles/";

/// What is stored for a token (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TokenEntry {
    /// Policies attached to the token (sorted; `root` alone for root tokens).
    pub policies: Vec<String>,
    /// Accessor (a public handle for the token).
    pub accessor: String,
    /// Creation time, Unix seconds.
    pub creation_time: i64,
    /// Display name.
    pub display_name: String,
    /// Metadata set by a privileged creator or a login method (role templates read it).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// TTL given at creation (seconds; 0 = never expires, root only).
    #[serde(default)]
    pub creation_ttl: u64,
    /// When it expires (Unix seconds), if ever.
    #[serde(default)]
    pub expire_time: Option<i64>,
    /// Hard cap on the lifetime (seconds; 0 = none).
    #[serde(default)]
    pub explicit_max_ttl: u64,
    /// Periodic tokens renew to this period (seconds; 0 = not periodic).
    #[serde(default)]
    pub period: u64,
    /// Uses left (0 = unlimited).
    #[serde(default)]
    pub num_uses: u32,
    /// No parent.
    #[serde(default)]
    pub orphan: bool,
    /// The parent's hash key.
    #[serde(default)]
    pub parent: Option<String>,
    /// Creation path (`auth/token/create`, `auth/token/root`, ...).
    #[serde(default)]
    pub path: String,
    /// Renewable?
    #[serde(default)]
    pub renewable: bool,
    /// Token role used to create it.
    #[serde(default)]
    pub role: Option<String>,
    /// This token's own hash key (not a secret: a keyed hash).
    #[serde(default)]
    pub hash: String,
}

impl TokenEntry {
    /// Whether the token carries the root policy.
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    /// Remaining TTL in seconds at `now` (0 for non-expiring tokens).
    pub fn ttl_left(&self, now: i64) -> u64 {
        self.expire_time
            .map(|e| u64::try_from(e - now).unwrap_or(0))
            .unwrap_or(0)
    }

    fn expired(&self, now: i64) -> bool {
        self.expire_time.is_some_and(|e| e <= now)
    }
}

/// A token role (`auth/token/roles/:name`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default)]
pub struct TokenRole {
    /// Policies tokens of this role may have (empty = the parent's rules apply).
    pub allowed_policies: Vec<String>,
    /// Policies they may never have.
    pub disallowed_policies: Vec<String>,
    /// Tokens are orphans.
    pub orphan: bool,
    /// Renewable?
    pub renewable: bool,
    /// Periodic tokens (seconds).
    pub token_period: u64,
    /// Default TTL (seconds).
    pub token_ttl: u64,
    /// Max TTL (seconds).
    pub token_max_ttl: u64,
    /// Hard cap (seconds).
    pub token_explicit_max_ttl: u64,
    /// Uses (0 = unlimited).
    pub token_num_uses: u32,
    /// Suffix of the creation path.
    pub path_suffix: String,
}

/// Why a token operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A caller mistake (400).
    #[error("{0}")]
    Bad(String),
    /// Not allowed (403).
    #[error("permission denied")]
    Denied,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
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

/// The keyed hash under which `token` is stored.
pub async fn hash_of(barrier: &dyn Storage, token: &str) -> Result<String, StorageError> {
    Ok(hash(&salt(barrier).await?, token))
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(v).map_err(|e| StorageError::Backend(e.to_string()))
}

/// What a new token should be.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    /// Policies (already resolved; `default` included as wanted).
    pub policies: Vec<String>,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Display name.
    pub display_name: String,
    /// TTL (0 = never expires: root tokens only).
    pub ttl: u64,
    /// Hard cap.
    pub explicit_max_ttl: u64,
    /// Period.
    pub period: u64,
    /// Uses.
    pub num_uses: u32,
    /// Parent hash (None = orphan).
    pub parent: Option<String>,
    /// Creation path.
    pub path: String,
    /// Renewable.
    pub renewable: bool,
    /// Role name.
    pub role: Option<String>,
}

/// Create a token; returns the token (shown once) and its entry.
pub async fn create(
    barrier: &dyn Storage,
    t: NewToken,
    now: i64,
) -> Result<(Zeroizing<String>, TokenEntry), StorageError> {
    let token = Zeroizing::new(format!("hvs.{}", B64URL.encode(&random(24)?[..])));
    let h = hash_of(barrier, &token).await?;
    let mut ttl = t.ttl;
    if t.explicit_max_ttl > 0 && (ttl == 0 || ttl > t.explicit_max_ttl) {
        ttl = t.explicit_max_ttl;
    }
    let entry = TokenEntry {
        policies: t.policies,
        accessor: B64URL.encode(&random(18)?[..]),
        creation_time: now,
        display_name: t.display_name,
        meta: t.meta,
        creation_ttl: ttl,
        expire_time: (ttl > 0).then(|| now + i64::try_from(ttl).unwrap_or(i64::MAX / 2)),
        explicit_max_ttl: t.explicit_max_ttl,
        period: t.period,
        num_uses: t.num_uses,
        orphan: t.parent.is_none(),
        parent: t.parent.clone(),
        path: t.path,
        renewable: t.renewable && ttl > 0,
        role: t.role,
        hash: h.clone(),
    };
    barrier
        .put(&format!("{}{h}", storage::TOKEN_PREFIX), &json(&entry)?)
        .await?;
    barrier
        .put(
            &format!("{ACCESSOR_PREFIX}{}", entry.accessor),
            h.as_bytes(),
        )
        .await?;
    if let Some(p) = &t.parent {
        barrier.put(&format!("{PARENT_PREFIX}{p}/{h}"), b"").await?;
    }
    Ok((token, entry))
}

/// The root token made at init.
pub async fn create_root(
    barrier: &dyn Storage,
    now: i64,
) -> Result<(Zeroizing<String>, TokenEntry), StorageError> {
    create(
        barrier,
        NewToken {
            policies: vec!["root".into()],
            display_name: "root".into(),
            path: "auth/token/root".into(),
            ..Default::default()
        },
        now,
    )
    .await
}

/// An entry by hash; expired entries are revoked on sight and read as absent.
pub async fn by_hash(
    barrier: &dyn Storage,
    h: &str,
    now: i64,
) -> Result<Option<TokenEntry>, StorageError> {
    let Some(e) = barrier
        .get(&format!("{}{h}", storage::TOKEN_PREFIX))
        .await?
    else {
        return Ok(None);
    };
    let entry: TokenEntry = serde_json::from_slice(&e.value)
        .map_err(|e| StorageError::Backend(format!("corrupt token entry: {e}")))?;
    if entry.expired(now) {
        revoke(barrier, h).await?;
        return Ok(None);
    }
    Ok(Some(entry))
}

/// Look a token up; `None` if missing, revoked or expired.
pub async fn lookup(
    barrier: &dyn Storage,
    token: &str,
    now: i64,
) -> Result<Option<TokenEntry>, StorageError> {
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    let h = hash_of(barrier, token).await?;
    by_hash(barrier, &h, now).await
}

/// Most token entries [`TokenCache`] holds before it starts over.
const CACHE_MAX: usize = 4096;

/// Token lookups cached for one unseal generation: the salt (which never
/// changes) and the entries of tokens found, keyed by their keyed hash (never
/// by the token). Every authenticated request looks its token up; uncached
/// that is two barrier reads and decryptions.
///
/// Kept correct under mutation: limited-use tokens are never cached (each use
/// writes); a hit is re-checked for expiry (an expired entry goes back to
/// storage, which revokes it); and the API clears the entries after every
/// `auth/token/*` request (create, renew, revoke change entries).
#[derive(Default)]
pub struct TokenCache {
    inner: std::sync::RwLock<Option<CacheInner>>,
}

struct CacheInner {
    generation: u64,
    /// Bumped by every clear: a lookup that began before a clear must not
    /// insert what it read (the token may have been revoked meanwhile).
    epoch: u64,
    salt: Zeroizing<Vec<u8>>,
    entries: std::collections::HashMap<String, TokenEntry>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("TokenCache")
            .field("entries", &g.as_ref().map_or(0, |c| c.entries.len()))
            .finish()
    }
}

impl TokenCache {
    /// [`lookup`], from memory when this unseal `generation` has seen the token.
    pub async fn lookup(
        &self,
        generation: u64,
        barrier: &dyn Storage,
        token: &str,
        now: i64,
    ) -> Result<Option<TokenEntry>, StorageError> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        let (cached_salt, epoch) = {
            let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
            let epoch = g.as_ref().map_or(0, |c| c.epoch);
            let salt = match g.as_ref().filter(|c| c.generation == generation) {
                Some(c) => {
                    if let Some(e) = c
                        .entries
                        .get(&hash(&c.salt, token))
                        .filter(|e| !e.expired(now))
                    {
                        return Ok(Some(e.clone()));
                    }
                    Some(c.salt.clone())
                }
                None => None,
            };
            (salt, epoch)
        };
        let salt = match cached_salt {
            Some(s) => s,
            None => salt(barrier).await?,
        };
        let h = hash(&salt, token);
        let entry = by_hash(barrier, &h, now).await?;
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let c = match g.take().filter(|c| c.generation == generation) {
            Some(c) => g.insert(c),
            None => g.insert(CacheInner {
                generation,
                epoch,
                salt,
                entries: Default::default(),
            }),
        };
        match &entry {
            Some(e) if e.num_uses == 0 && c.epoch == epoch => {
                if c.entries.len() >= CACHE_MAX {
                    c.entries.clear();
                }
                c.entries.insert(h, e.clone());
            }
            _ => {
                c.entries.remove(&h);
            }
        }
        Ok(entry)
    }

    /// Drop every cached entry (after anything that changes tokens).
    pub fn clear(&self) {
        if let Some(c) = self
            .inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            c.entries.clear();
        }
    }
}

/// Look a token up by accessor.
pub async fn lookup_accessor(
    barrier: &dyn Storage,
    accessor: &str,
    now: i64,
) -> Result<Option<TokenEntry>, StorageError> {
    if accessor.is_empty() || accessor.contains('/') || accessor.len() > 128 {
        return Ok(None);
    }
    match barrier.get(&format!("{ACCESSOR_PREFIX}{accessor}")).await? {
        None => Ok(None),
        Some(e) => by_hash(barrier, &String::from_utf8_lossy(&e.value), now).await,
    }
}

/// Count one use of a limited-use token; the last use revokes it (the request
/// that used it still proceeds, as in Vault).
pub async fn spend_use(barrier: &dyn Storage, entry: &TokenEntry) -> Result<(), StorageError> {
    match entry.num_uses {
        0 => Ok(()),
        1 => revoke(barrier, &entry.hash).await,
        n => {
            let mut e = entry.clone();
            e.num_uses = n - 1;
            barrier
                .put(&format!("{}{}", storage::TOKEN_PREFIX, e.hash), &json(&e)?)
                .await
        }
    }
}

/// Renew: extend by `increment` (or the creation TTL), capped by the explicit
/// max TTL and the system maximum from creation; periodic tokens get their period.
pub async fn renew(
    barrier: &dyn Storage,
    entry: &TokenEntry,
    increment: Option<u64>,
    now: i64,
) -> Result<TokenEntry, TokenError> {
    if entry.expire_time.is_none() {
        // A non-expiring (root) token: nothing to extend.
        return Ok(entry.clone());
    }
    if !entry.renewable {
        return Err(TokenError::Bad("token is not renewable".into()));
    }
    let mut want = if entry.period > 0 {
        entry.period
    } else {
        increment.filter(|i| *i > 0).unwrap_or(entry.creation_ttl)
    };
    let age = u64::try_from(now - entry.creation_time).unwrap_or(0);
    if entry.period == 0 {
        let cap = if entry.explicit_max_ttl > 0 {
            entry.explicit_max_ttl.min(SYSTEM_MAX_TTL)
        } else {
            SYSTEM_MAX_TTL
        };
        want = want.min(cap.saturating_sub(age));
    } else if entry.explicit_max_ttl > 0 {
        want = want.min(entry.explicit_max_ttl.saturating_sub(age));
    }
    let mut e = entry.clone();
    e.expire_time = Some(now + i64::try_from(want).unwrap_or(0));
    barrier
        .put(&format!("{}{}", storage::TOKEN_PREFIX, e.hash), &json(&e)?)
        .await?;
    Ok(e)
}

/// Revoke a token and, recursively, its children.
pub async fn revoke(barrier: &dyn Storage, h: &str) -> Result<(), StorageError> {
    let mut stack = vec![h.to_string()];
    let mut order = Vec::new();
    while let Some(cur) = stack.pop() {
        for child in barrier.list(&format!("{PARENT_PREFIX}{cur}/")).await? {
            stack.push(child.trim_end_matches('/').to_string());
        }
        order.push(cur);
    }
    for cur in order.iter().rev() {
        delete_one(barrier, cur).await?;
    }
    Ok(())
}

/// Revoke a token but keep its children, which become orphans.
pub async fn revoke_orphan(barrier: &dyn Storage, h: &str, now: i64) -> Result<(), StorageError> {
    for child in barrier.list(&format!("{PARENT_PREFIX}{h}/")).await? {
        if let Some(mut e) = by_hash(barrier, &child, now).await? {
            e.parent = None;
            e.orphan = true;
            barrier
                .put(&format!("{}{child}", storage::TOKEN_PREFIX), &json(&e)?)
                .await?;
        }
        barrier
            .delete(&format!("{PARENT_PREFIX}{h}/{child}"))
            .await?;
    }
    delete_one(barrier, h).await
}

async fn delete_one(barrier: &dyn Storage, h: &str) -> Result<(), StorageError> {
    let key = format!("{}{h}", storage::TOKEN_PREFIX);
    if let Some(e) = barrier.get(&key).await?
        && let Ok(entry) = serde_json::from_slice::<TokenEntry>(&e.value)
    {
        barrier
            .delete(&format!("{ACCESSOR_PREFIX}{}", entry.accessor))
            .await?;
        if let Some(p) = entry.parent {
            barrier.delete(&format!("{PARENT_PREFIX}{p}/{h}")).await?;
        }
    }
    for child in barrier.list(&format!("{PARENT_PREFIX}{h}/")).await? {
        barrier
            .delete(&format!("{PARENT_PREFIX}{h}/{child}"))
            .await?;
    }
    barrier.delete(&key).await
}

/// Remove every expired token (and its children). Returns how many were removed.
pub async fn tidy(barrier: &dyn Storage, now: i64) -> Result<usize, StorageError> {
    let mut n = 0;
    for h in barrier.list(storage::TOKEN_PREFIX).await? {
        if h.ends_with('/') {
            continue;
        }
        if let Some(e) = barrier
            .get(&format!("{}{h}", storage::TOKEN_PREFIX))
            .await?
            && let Ok(entry) = serde_json::from_slice::<TokenEntry>(&e.value)
            && entry.expired(now)
        {
            revoke(barrier, &h).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Accessors of every live token.
pub async fn accessors(barrier: &dyn Storage) -> Result<Vec<String>, StorageError> {
    Ok(barrier
        .list(ACCESSOR_PREFIX)
        .await?
        .into_iter()
        .filter(|k| !k.ends_with('/'))
        .collect())
}

/// A token role.
pub async fn role(barrier: &dyn Storage, name: &str) -> Result<Option<TokenRole>, StorageError> {
    match barrier.get(&format!("{ROLE_PREFIX}{name}")).await? {
        None => Ok(None),
        Some(e) => serde_json::from_slice(&e.value)
            .map(Some)
            .map_err(|e| StorageError::Backend(format!("corrupt token role: {e}"))),
    }
}

/// Write a token role.
pub async fn put_role(
    barrier: &dyn Storage,
    name: &str,
    r: &TokenRole,
) -> Result<(), StorageError> {
    barrier
        .put(&format!("{ROLE_PREFIX}{name}"), &json(r)?)
        .await
}

/// Delete a token role.
pub async fn delete_role(barrier: &dyn Storage, name: &str) -> Result<(), StorageError> {
    barrier.delete(&format!("{ROLE_PREFIX}{name}")).await
}

/// Token role names.
pub async fn list_roles(barrier: &dyn Storage) -> Result<Vec<String>, StorageError> {
    Ok(barrier
        .list(ROLE_PREFIX)
        .await?
        .into_iter()
        .filter(|k| !k.ends_with('/'))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn child(parent: &TokenEntry, ttl: u64) -> NewToken {
        NewToken {
            policies: vec!["default".into()],
            ttl,
            parent: Some(parent.hash.clone()),
            renewable: true,
            path: "auth/token/create".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn tokens_are_stored_hashed_and_expire() {
        let s = MemoryStorage::default();
        let (root, re) = create_root(&s, 100).await.unwrap();
        assert!(root.starts_with("hvs."));
        assert_eq!(
            lookup(&s, &root, 1_000_000)
                .await
                .unwrap()
                .unwrap()
                .policies,
            vec!["root"]
        );
        for k in s.list(storage::TOKEN_PREFIX).await.unwrap() {
            assert!(!k.contains(&root[4..]));
        }
        let (tok, e) = create(&s, child(&re, 60), 100).await.unwrap();
        assert_eq!(
            lookup(&s, &tok, 159)
                .await
                .unwrap()
                .map(|e| e.ttl_left(159)),
            Some(1)
        );
        assert!(
            lookup(&s, &tok, 160).await.unwrap().is_none(),
            "expired at its TTL"
        );
        assert!(
            lookup_accessor(&s, &e.accessor, 100)
                .await
                .unwrap()
                .is_none(),
            "expired tokens are cleaned up"
        );
        assert!(lookup(&s, "hvs.nope", 100).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn revoking_a_parent_revokes_children_unless_orphaned() {
        let s = MemoryStorage::default();
        let (_, root) = create_root(&s, 0).await.unwrap();
        let (p, pe) = create(&s, child(&root, 3600), 0).await.unwrap();
        let (c, ce) = create(&s, child(&pe, 3600), 0).await.unwrap();
        let (g, _) = create(&s, child(&ce, 3600), 0).await.unwrap();
        revoke(&s, &pe.hash).await.unwrap();
        for t in [&p, &c, &g] {
            assert!(lookup(&s, t, 1).await.unwrap().is_none());
        }
        let (p2, pe2) = create(&s, child(&root, 3600), 0).await.unwrap();
        let (c2, _) = create(&s, child(&pe2, 3600), 0).await.unwrap();
        revoke_orphan(&s, &pe2.hash, 1).await.unwrap();
        assert!(lookup(&s, &p2, 1).await.unwrap().is_none());
        assert!(lookup(&s, &c2, 1).await.unwrap().unwrap().orphan);
        assert!(lookup(&s, &c2, 1).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn renew_caps_and_num_uses() {
        let s = MemoryStorage::default();
        let (_, root) = create_root(&s, 0).await.unwrap();
        let mut n = child(&root, 100);
        n.explicit_max_ttl = 150;
        let (t, e) = create(&s, n, 0).await.unwrap();
        let r = renew(&s, &e, Some(1000), 90).await.unwrap();
        assert_eq!(
            r.expire_time,
            Some(150),
            "capped by explicit_max_ttl from creation"
        );
        let mut per = child(&root, 50);
        per.period = 50;
        let (_, pe) = create(&s, per, 0).await.unwrap();
        assert_eq!(
            renew(&s, &pe, Some(5000), 1000).await.unwrap().expire_time,
            Some(1050),
            "periodic renews to its period"
        );
        let mut limited = child(&root, 100);
        limited.num_uses = 2;
        let (lt, le) = create(&s, limited, 0).await.unwrap();
        spend_use(&s, &le).await.unwrap();
        let le = lookup(&s, &lt, 1).await.unwrap().unwrap();
        assert_eq!(le.num_uses, 1);
        spend_use(&s, &le).await.unwrap();
        assert!(
            lookup(&s, &lt, 1).await.unwrap().is_none(),
            "the last use revokes"
        );
        assert!(lookup(&s, &t, 1).await.unwrap().is_some());
        assert_eq!(tidy(&s, 10_000).await.unwrap(), 2);
        assert!(lookup(&s, &t, 1).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn cache_never_serves_a_revoked_expired_or_limited_token() {
        let s = MemoryStorage::default();
        let cache = TokenCache::default();
        let (_, root) = create_root(&s, 0).await.unwrap();
        let (t, _) = create(&s, child(&root, 100), 0).await.unwrap();
        assert!(cache.lookup(1, &s, &t, 1).await.unwrap().is_some());
        assert!(
            cache.lookup(1, &s, &t, 100).await.unwrap().is_none(),
            "expiry re-checked on a hit"
        );
        let (t2, e2) = create(&s, child(&root, 1000), 0).await.unwrap();
        assert!(cache.lookup(1, &s, &t2, 1).await.unwrap().is_some());
        revoke(&s, &e2.hash).await.unwrap();
        cache.clear();
        assert!(
            cache.lookup(1, &s, &t2, 1).await.unwrap().is_none(),
            "revoked, after clear"
        );
        let mut limited = child(&root, 1000);
        limited.num_uses = 1;
        let (t3, e3) = create(&s, limited, 0).await.unwrap();
        assert!(cache.lookup(1, &s, &t3, 1).await.unwrap().is_some());
        spend_use(&s, &e3).await.unwrap();
        assert!(
            cache.lookup(1, &s, &t3, 1).await.unwrap().is_none(),
            "limited-use tokens are not cached"
        );
    }
}
