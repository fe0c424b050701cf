//! Token store: tokens are random and stored only as a keyed hash behind the
//! barrier, with an accessor (a public handle), TTL / explicit max TTL / period,
//! use counts, metadata, and parent/child links so revoking a token revokes its
//! children. Time is a parameter (`now`, Unix seconds).
//!
//! Storage (all through the barrier): `sys/token/salt`, `sys/token/id/<hash>`,
//! `sys/token/accessor/<accessor>` → hash, `sys/token/parent/<hash>/<child hash>`,
//! `sys/token/roles/<name>`.

use crate::storage::{self, Condition, Storage, StorageError, Update};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Revoked: set by compare-and-swap before anything of the token is
    /// deleted, so no concurrent write can bring it back; such an entry reads
    /// as absent and is finished off (deleted) by whoever sees it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
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

fn parse_entry(raw: &[u8]) -> Result<TokenEntry, StorageError> {
    serde_json::from_slice(raw)
        .map_err(|e| StorageError::Backend(format!("corrupt token entry: {e}")))
}

fn entry_key(h: &str) -> String {
    format!("{}{h}", storage::TOKEN_PREFIX)
}

/// Bumped (after the revocation mark is stored) by every revocation in this
/// process, whatever the path: API revoke, parent cascade, expiry on lookup,
/// tidy, last use. [`TokenCache`] drops everything it holds when this moves,
/// and never caches a lookup that overlapped a revocation.
static REVOCATIONS: AtomicU64 = AtomicU64::new(0);

fn revocations() -> u64 {
    REVOCATIONS.load(Ordering::SeqCst)
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
        revoked: false,
    };
    // The child link first: a parent revoked from here on finds it and
    // revokes this token with it.
    if let Some(p) = &t.parent {
        // Unconditional put is safe: the link's value is empty and only ever
        // created here or deleted; rewriting it changes nothing.
        barrier.put(&format!("{PARENT_PREFIX}{p}/{h}"), b"").await?;
    }
    let accessor_key = format!("{ACCESSOR_PREFIX}{}", entry.accessor);
    if !barrier
        .put_if(&entry_key(&h), &json(&entry)?, Condition::Absent)
        .await?
        || !barrier
            .put_if(&accessor_key, h.as_bytes(), Condition::Absent)
            .await?
    {
        // 192 random bits collided: refuse rather than overwrite.
        return Err(StorageError::Backend("token identifier collision".into()));
    }
    // A parent revoked while this token was being written may have missed the
    // link: if the parent is gone now, so is this token.
    if let Some(p) = &t.parent
        && !live(barrier, p).await?
    {
        revoke(barrier, &h).await?;
        return Err(StorageError::Backend(
            "the parent token was revoked while this token was created".into(),
        ));
    }
    Ok((token, entry))
}

/// Whether an entry is stored for `h` and not marked revoked (expiry aside).
async fn live(barrier: &dyn Storage, h: &str) -> Result<bool, StorageError> {
    match barrier.get(&entry_key(h)).await? {
        None => Ok(false),
        Some(e) => Ok(!parse_entry(&e.value)?.revoked),
    }
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
    let Some(e) = barrier.get(&entry_key(h)).await? else {
        return Ok(None);
    };
    let entry = parse_entry(&e.value)?;
    if entry.revoked || entry.expired(now) {
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
    /// [`REVOCATIONS`] when `entries` were last known to be current.
    revocations: u64,
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
        let revoked_before = revocations();
        let (cached_salt, epoch) = {
            let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
            let epoch = g.as_ref().map_or(0, |c| c.epoch);
            let current = |c: &&CacheInner| c.generation == generation;
            let salt = match g.as_ref().filter(current) {
                // A revocation since these entries were cached: use none of them.
                Some(c) if c.revocations != revoked_before => Some(c.salt.clone()),
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
                revocations: revoked_before,
                salt,
                entries: Default::default(),
            }),
        };
        let revoked_now = revocations();
        if c.revocations != revoked_now {
            c.entries.clear();
            c.revocations = revoked_now;
        }
        match &entry {
            // Cached only when no revocation and no clear overlapped the read.
            Some(e) if e.num_uses == 0 && c.epoch == epoch && revoked_now == revoked_before => {
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
            c.epoch += 1;
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

/// Count one use of a limited-use token, by compare-and-swap on the stored
/// entry: of any number of concurrent requests, exactly `num_uses` get `true`.
/// The last use revokes the token (the request that used it still proceeds,
/// as in Vault). `false`: the token is used up or revoked; refuse the request.
pub async fn spend_use(barrier: &dyn Storage, entry: &TokenEntry) -> Result<bool, StorageError> {
    if entry.num_uses == 0 {
        return Ok(true);
    }
    let spent = storage::update::<_, StorageError>(barrier, &entry_key(&entry.hash), |raw| {
        let Some(raw) = raw else {
            return Ok(Update::Keep(None));
        };
        let mut e = parse_entry(raw)?;
        match e.num_uses {
            _ if e.revoked => Ok(Update::Keep(None)),
            0 => Ok(Update::Keep(Some(false))),
            n => {
                e.num_uses = n - 1;
                let last = n == 1;
                e.revoked = last;
                Ok(Update::Write(json(&e)?, Some(last)))
            }
        }
    })
    .await?;
    match spent {
        None => Ok(false),
        Some(false) => Ok(true),
        Some(true) => {
            // This request took the last use and stored the revocation mark.
            REVOCATIONS.fetch_add(1, Ordering::SeqCst);
            revoke(barrier, &entry.hash).await?;
            Ok(true)
        }
    }
}

/// Renew: extend by `increment` (or the creation TTL), capped by the explicit
/// max TTL and the system maximum from creation; periodic tokens get their period.
/// Computed from the entry as stored now and written by compare-and-swap, so
/// a revocation or use that raced it is never undone.
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
    storage::update(barrier, &entry_key(&entry.hash), |raw| {
        let Some(raw) = raw else {
            return Err(TokenError::Denied);
        };
        let mut e = parse_entry(raw)?;
        if e.revoked || e.expired(now) {
            return Err(TokenError::Denied);
        }
        e.expire_time = Some(now + i64::try_from(renewal(&e, increment, now)?).unwrap_or(0));
        Ok(Update::Write(json(&e)?, e))
    })
    .await
}

/// How long a renewal at `now` extends `e` (seconds).
fn renewal(e: &TokenEntry, increment: Option<u64>, now: i64) -> Result<u64, TokenError> {
    if !e.renewable {
        return Err(TokenError::Bad("token is not renewable".into()));
    }
    let mut want = if e.period > 0 {
        e.period
    } else {
        increment.filter(|i| *i > 0).unwrap_or(e.creation_ttl)
    };
    let age = u64::try_from(now - e.creation_time).unwrap_or(0);
    if e.period == 0 {
        let cap = if e.explicit_max_ttl > 0 {
            e.explicit_max_ttl.min(SYSTEM_MAX_TTL)
        } else {
            SYSTEM_MAX_TTL
        };
        want = want.min(cap.saturating_sub(age));
    } else if e.explicit_max_ttl > 0 {
        want = want.min(e.explicit_max_ttl.saturating_sub(age));
    }
    Ok(want)
}

/// Revoke a token and, recursively, its children.
pub async fn revoke(barrier: &dyn Storage, h: &str) -> Result<(), StorageError> {
    // Mark first, top-down: from here on no request authenticates with any of
    // these tokens and no write can bring one back. Then delete, bottom-up.
    let mut stack = vec![h.to_string()];
    let mut order = Vec::new();
    while let Some(cur) = stack.pop() {
        mark_revoked(barrier, &cur).await?;
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

/// Store the revocation mark on `h`'s entry (compare-and-swap; a no-op when
/// absent or already marked), then tell every token cache.
async fn mark_revoked(barrier: &dyn Storage, h: &str) -> Result<(), StorageError> {
    storage::update::<_, StorageError>(barrier, &entry_key(h), |raw| {
        let Some(raw) = raw else {
            return Ok(Update::Keep(()));
        };
        let mut e = parse_entry(raw)?;
        if e.revoked {
            return Ok(Update::Keep(()));
        }
        e.revoked = true;
        Ok(Update::Write(json(&e)?, ()))
    })
    .await?;
    REVOCATIONS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Revoke a token but keep its children, which become orphans.
pub async fn revoke_orphan(barrier: &dyn Storage, h: &str) -> Result<(), StorageError> {
    mark_revoked(barrier, h).await?;
    for child in barrier.list(&format!("{PARENT_PREFIX}{h}/")).await? {
        storage::update(barrier, &entry_key(&child), |raw| {
            let Some(raw) = raw else {
                return Ok::<_, StorageError>(Update::Keep(()));
            };
            let mut e = parse_entry(raw)?;
            if e.revoked || e.parent.is_none() {
                return Ok(Update::Keep(()));
            }
            e.parent = None;
            e.orphan = true;
            Ok(Update::Write(json(&e)?, ()))
        })
        .await?;
        barrier
            .delete(&format!("{PARENT_PREFIX}{h}/{child}"))
            .await?;
    }
    delete_one(barrier, h).await
}

/// Delete a token's records. Only called once the entry is marked revoked
/// (or is gone), so no concurrent writer re-creates any of them: the deletes
/// are unconditional.
async fn delete_one(barrier: &dyn Storage, h: &str) -> Result<(), StorageError> {
    let key = entry_key(h);
    if let Some(e) = barrier.get(&key).await?
        && let Ok(entry) = parse_entry(&e.value)
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

/// Remove every expired token (and its children) and finish any revocation
/// that stopped half-way. Returns how many were removed.
pub async fn tidy(barrier: &dyn Storage, now: i64) -> Result<usize, StorageError> {
    let mut n = 0;
    for h in barrier.list(storage::TOKEN_PREFIX).await? {
        if h.ends_with('/') {
            continue;
        }
        if let Some(e) = barrier.get(&entry_key(&h)).await?
            && let Ok(entry) = parse_entry(&e.value)
            && (entry.expired(now) || entry.revoked)
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

/// Create or change a token role: `change` is applied to the stored role
/// (`None`: none yet) by compare-and-swap, so concurrent writers of different
/// fields never lose each other's update. Returns the role written.
pub async fn update_role<E>(
    barrier: &dyn Storage,
    name: &str,
    mut change: impl FnMut(Option<TokenRole>) -> Result<TokenRole, E>,
) -> Result<TokenRole, E>
where
    E: From<StorageError>,
{
    storage::update(barrier, &format!("{ROLE_PREFIX}{name}"), |raw| {
        let cur = match raw {
            None => None,
            Some(v) => Some(
                serde_json::from_slice(v)
                    .map_err(|e| StorageError::Backend(format!("corrupt token role: {e}")))?,
            ),
        };
        let next = change(cur)?;
        Ok(Update::Write(json(&next)?, next))
    })
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
        revoke_orphan(&s, &pe2.hash).await.unwrap();
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
            renew(&s, &pe, Some(5000), 40).await.unwrap().expire_time,
            Some(90),
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
