//! The barrier: a [`Storage`] that seals every value with the keyring's active key.
//!
//! The keyring holds the root key and one data key per term. It is itself sealed
//! by the root key at `core/keyring`. `rotate` adds a term; values written under
//! older terms keep opening with their own key, so nothing is rewritten.

use super::key::{CryptoError, Key, term_of};
use crate::storage::{self, Condition, DynStorage, Entry, Storage, StorageError};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// The root key and the data keys by term.
#[derive(Clone)]
pub struct Keyring {
    root: Key,
    terms: BTreeMap<u32, (Key, i64)>,
    active: u32,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("terms", &self.terms.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct KeyringWire {
    root_key: String,
    active_term: u32,
    keys: Vec<TermWire>,
}

#[derive(Serialize, Deserialize)]
struct TermWire {
    term: u32,
    value: String,
    install_time: i64,
}

impl Keyring {
    /// A new keyring with term 1.
    pub fn generate(root: Key, now: i64) -> Result<Self, CryptoError> {
        let mut terms = BTreeMap::new();
        terms.insert(1, (Key::generate()?, now));
        Ok(Self {
            root,
            terms,
            active: 1,
        })
    }

    /// The root key.
    pub fn root(&self) -> &Key {
        &self.root
    }

    /// The active term and its install time (Unix seconds).
    pub fn active(&self) -> (u32, i64) {
        let t = self
            .terms
            .get(&self.active)
            .map(|t| t.1)
            .unwrap_or_default();
        (self.active, t)
    }

    fn with_new_term(&self, now: i64) -> Result<Self, CryptoError> {
        let mut next = self.clone();
        let term = self.active + 1;
        next.terms.insert(term, (Key::generate()?, now));
        next.active = term;
        Ok(next)
    }

    /// Seal the keyring under its root key for storage at `core/keyring`.
    pub fn seal(&self) -> Result<Vec<u8>, CryptoError> {
        let wire = KeyringWire {
            root_key: B64.encode(self.root.expose()),
            active_term: self.active,
            keys: self
                .terms
                .iter()
                .map(|(term, (k, t))| TermWire {
                    term: *term,
                    value: B64.encode(k.expose()),
                    install_time: *t,
                })
                .collect(),
        };
        let json = Zeroizing::new(serde_json::to_vec(&wire).map_err(|_| CryptoError::KeyLength)?);
        zeroize_wire(wire);
        self.root.seal(0, storage::KEYRING, &json)
    }

    /// Open a sealed keyring with the root key.
    pub fn open(root: &Key, sealed: &[u8]) -> Result<Self, CryptoError> {
        let json = root.open(storage::KEYRING, sealed)?;
        let wire: KeyringWire = serde_json::from_slice(&json)
            .map_err(|_| CryptoError::Format(storage::KEYRING.to_string()))?;
        let decode = |s: &str| -> Result<Key, CryptoError> {
            let raw = Zeroizing::new(B64.decode(s).map_err(|_| CryptoError::KeyLength)?);
            Key::from_slice(&raw)
        };
        let stored_root = decode(&wire.root_key)?;
        if stored_root.expose() != root.expose() {
            return Err(CryptoError::Open(storage::KEYRING.to_string()));
        }
        let mut terms = BTreeMap::new();
        for t in &wire.keys {
            terms.insert(t.term, (decode(&t.value)?, t.install_time));
        }
        let active = wire.active_term;
        zeroize_wire(wire);
        if !terms.contains_key(&active) {
            return Err(CryptoError::Format(storage::KEYRING.to_string()));
        }
        Ok(Self {
            root: stored_root,
            terms,
            active,
        })
    }
}

fn zeroize_wire(mut w: KeyringWire) {
    use zeroize::Zeroize;
    w.root_key.zeroize();
    for t in &mut w.keys {
        t.value.zeroize();
    }
}

/// Key status for `sys/key-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// Active term.
    pub term: u32,
    /// When the active term was installed (Unix seconds).
    pub install_time: i64,
    /// Values sealed since this process unsealed.
    pub encryptions: u64,
}

/// Storage that encrypts every value. Exists only while unsealed.
pub struct Barrier {
    inner: DynStorage,
    keyring: RwLock<Arc<Keyring>>,
    encryptions: AtomicU64,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn crypto(e: CryptoError) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl Barrier {
    /// A barrier over `inner` with an opened keyring.
    pub fn new(inner: DynStorage, keyring: Keyring) -> Self {
        Self {
            inner,
            keyring: RwLock::new(Arc::new(keyring)),
            encryptions: AtomicU64::new(0),
        }
    }

    fn ring(&self) -> Arc<Keyring> {
        // The lock only guards an Arc swap; a poisoned lock still holds a valid keyring.
        self.keyring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The underlying storage (for the few values that are not barrier-sealed).
    pub fn inner(&self) -> &DynStorage {
        &self.inner
    }

    fn seal(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StorageError> {
        let ring = self.ring();
        let (term, _) = ring.active();
        let k = ring
            .terms
            .get(&term)
            .ok_or_else(|| StorageError::Backend("active key term missing".into()))?;
        self.encryptions.fetch_add(1, Ordering::Relaxed);
        k.0.seal(term, key, value).map_err(crypto)
    }

    fn open(&self, key: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StorageError> {
        let term = term_of(sealed).ok_or_else(|| crypto(CryptoError::Format(key.into())))?;
        let ring = self.ring();
        let k = ring.terms.get(&term).ok_or_else(|| {
            StorageError::Backend(format!("value at {key:?} names unknown key term {term}"))
        })?;
        k.0.open(key, sealed).map_err(crypto)
    }

    /// Add a new key term, persist the keyring, and use the new term for writes.
    /// The new ring is made from the keyring as stored and written by
    /// compare-and-swap: two rotations (here or on another server) never
    /// both add "the next term" with different keys, which would lose the
    /// values sealed under the overwritten one.
    pub async fn rotate(&self, now: i64) -> Result<KeyStatus, StorageError> {
        let mine = self.ring();
        let next =
            storage::update::<_, StorageError>(self.inner.as_ref(), storage::KEYRING, |raw| {
                let stored = match raw {
                    Some(raw) => Keyring::open(mine.root(), raw).map_err(crypto)?,
                    // Not stored yet (a barrier being set up): ours is the ring.
                    None => (*mine).clone(),
                };
                let next = stored.with_new_term(now).map_err(crypto)?;
                Ok(storage::Update::Write(next.seal().map_err(crypto)?, next))
            })
            .await?;
        *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(self.key_status())
    }

    /// The active term.
    pub fn key_status(&self) -> KeyStatus {
        let (term, install_time) = self.ring().active();
        KeyStatus {
            term,
            install_time,
            encryptions: self.encryptions.load(Ordering::Relaxed),
        }
    }

    #[cfg(test)]
    pub(crate) fn keyring(&self) -> Arc<Keyring> {
        self.ring()
    }
}

#[async_trait]
impl Storage for Barrier {
    async fn get(&self, key: &str) -> storage::Result<Option<Entry>> {
        match self.inner.get(key).await? {
            None => Ok(None),
            Some(e) => Ok(Some(Entry {
                value: self.open(key, &e.value)?.to_vec(),
                version: e.version,
            })),
        }
    }

    async fn put(&self, key: &str, value: &[u8]) -> storage::Result<()> {
        let sealed = self.seal(key, value)?;
        // Unconditional put is safe: the barrier's own `put` only seals what
        // its caller chose to write unconditionally (each such call is
        // justified where it is made).
        self.inner.put(key, &sealed).await
    }

    async fn put_if(&self, key: &str, value: &[u8], cond: Condition) -> storage::Result<bool> {
        let sealed = self.seal(key, value)?;
        self.inner.put_if(key, &sealed, cond).await
    }

    async fn delete(&self, key: &str) -> storage::Result<()> {
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> storage::Result<Vec<String>> {
        self.inner.list(prefix).await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn barrier() -> (Arc<MemoryStorage>, Barrier) {
        let mem = Arc::new(MemoryStorage::default());
        let ring = Keyring::generate(Key::generate().unwrap(), 0).unwrap();
        (mem.clone(), Barrier::new(mem, ring))
    }

    #[tokio::test]
    async fn barrier_passes_conformance() {
        let (_, b) = barrier();
        crate::storage::conformance::run(&b).await;
    }

    #[tokio::test]
    async fn stored_bytes_are_ciphertext() {
        let (mem, b) = barrier();
        b.put("x/y", b"plaintext-value").await.unwrap();
        let raw = mem.get("x/y").await.unwrap().unwrap().value;
        assert!(!raw.windows(15).any(|w| w == b"plaintext-value"));
        assert_eq!(
            b.get("x/y").await.unwrap().unwrap().value,
            b"plaintext-value"
        );
    }

    #[tokio::test]
    async fn value_moved_to_another_path_fails_to_open() {
        let (mem, b) = barrier();
        b.put("roles/a", b"secret").await.unwrap();
        let raw = mem.get("roles/a").await.unwrap().unwrap().value;
        mem.put("roles/b", &raw).await.unwrap();
        let err = b.get("roles/b").await.unwrap_err();
        assert!(err.to_string().contains("failed to decrypt"), "{err}");
    }

    #[tokio::test]
    async fn rotation_keeps_old_values_readable() {
        let (mem, b) = barrier();
        b.put("old", b"1").await.unwrap();
        let st = b.rotate(5).await.unwrap();
        assert_eq!((st.term, st.install_time), (2, 5));
        b.put("new", b"2").await.unwrap();
        assert_eq!(
            term_of(&mem.get("old").await.unwrap().unwrap().value),
            Some(1)
        );
        assert_eq!(
            term_of(&mem.get("new").await.unwrap().unwrap().value),
            Some(2)
        );
        assert_eq!(b.get("old").await.unwrap().unwrap().value, b"1");
        // The persisted keyring has both terms.
        let sealed = mem.get(storage::KEYRING).await.unwrap().unwrap().value;
        let ring = Keyring::open(b.keyring().root(), &sealed).unwrap();
        assert_eq!(ring.active().0, 2);
        assert_eq!(ring.terms.len(), 2);
        assert!(Keyring::open(&Key::generate().unwrap(), &sealed).is_err());
    }
}
