//! Shared server state handed to every handler, and the caches that live only
//! while the server is unsealed (invalidated by the seal's generation counter).

use crate::auth::policy::{Acl, Policy};
use crate::mounts::{MountError, MountTable};
use crate::seal::{Barrier, Seal};
use crate::storage::Version;
use std::sync::{Arc, RwLock};

/// Settings the API needs at request time.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Cluster name given at init.
    pub cluster_name: String,
    /// Request bodies larger than this get 413.
    pub max_request_bytes: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            cluster_name: "pki-server".into(),
            max_request_bytes: 1024 * 1024,
        }
    }
}

type CachedTable = (u64, Arc<MountTable>, Option<Version>);

/// Decrypted state cached between requests; tagged with the seal generation
/// it was read under, so a seal/unseal cycle never serves stale data.
#[derive(Debug, Default)]
pub struct Cache {
    mounts: RwLock<Option<CachedTable>>,
    mount_writes: tokio::sync::Mutex<()>,
    /// Per-mount PKI state.
    pub engines: crate::engine::EngineCache,
    /// Enabled audit devices.
    audit: RwLock<Option<(u64, Arc<Vec<crate::audit::Device>>)>>,
    /// Token lookups.
    pub tokens: crate::auth::token::TokenCache,
    /// Parsed ACL policies by name.
    policies: RwLock<(u64, std::collections::HashMap<String, Arc<Policy>>)>,
    /// Bumped, under the cache's lock, by every invalidation of the audit or
    /// policy caches: a read that began before a write never caches what it
    /// read (it may be the value the write replaced).
    writes: std::sync::atomic::AtomicU64,
}

impl Cache {
    fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn bump(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// State for the axum app.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The seal (and, while unsealed, the barrier).
    pub seal: Arc<Seal>,
    /// API settings.
    pub settings: Arc<ApiSettings>,
    /// Caches of decrypted state.
    pub cache: Arc<Cache>,
}

impl AppState {
    /// State over a seal.
    pub fn new(seal: Arc<Seal>, settings: ApiSettings) -> Self {
        Self {
            seal,
            settings: Arc::new(settings),
            cache: Arc::default(),
        }
    }

    async fn load_mounts(&self, barrier: &Barrier) -> Result<CachedTable, MountError> {
        let generation = self.seal.generation();
        if let Some(c) = self
            .cache
            .mounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && c.0 == generation
        {
            return Ok(c.clone());
        }
        let (table, version) = MountTable::load(barrier).await?;
        let entry = (generation, Arc::new(table), version);
        *self.cache.mounts.write().unwrap_or_else(|p| p.into_inner()) = Some(entry.clone());
        Ok(entry)
    }

    /// The mount table (cached).
    pub async fn mounts(&self, barrier: &Barrier) -> Result<Arc<MountTable>, MountError> {
        Ok(self.load_mounts(barrier).await?.1)
    }

    /// The enabled audit devices (cached per unseal generation).
    pub async fn audit_devices(
        &self,
        barrier: &Barrier,
    ) -> Result<Arc<Vec<crate::audit::Device>>, crate::storage::StorageError> {
        let generation = self.seal.generation();
        if let Some((g, d)) = self
            .cache
            .audit
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && *g == generation
        {
            return Ok(d.clone());
        }
        let writes = self.cache.writes();
        let d = Arc::new(crate::audit::load(barrier).await?);
        let mut g = self.cache.audit.write().unwrap_or_else(|p| p.into_inner());
        if self.cache.writes() == writes {
            *g = Some((generation, d.clone()));
        }
        Ok(d)
    }

    /// Forget the cached audit devices (after enable or disable).
    pub fn invalidate_audit(&self) {
        let mut g = self.cache.audit.write().unwrap_or_else(|p| p.into_inner());
        self.cache.bump();
        *g = None;
    }

    /// Forget parsed policies (after a policy write or delete).
    pub fn invalidate_policies(&self) {
        let mut g = self
            .cache
            .policies
            .write()
            .unwrap_or_else(|p| p.into_inner());
        self.cache.bump();
        g.1.clear();
    }

    /// The ACL of a token's policies (cached parses; `root` allows everything;
    /// a policy that does not exist grants nothing).
    pub async fn acl(
        &self,
        barrier: &Barrier,
        names: &[String],
    ) -> Result<Acl, crate::storage::StorageError> {
        if names.iter().any(|n| n == "root") {
            return Ok(Acl::new([], true));
        }
        let generation = self.seal.generation();
        let mut parsed = Vec::with_capacity(names.len());
        for n in names {
            let cached = {
                let g = self
                    .cache
                    .policies
                    .read()
                    .unwrap_or_else(|p| p.into_inner());
                (g.0 == generation).then(|| g.1.get(n).cloned()).flatten()
            };
            let p = match cached {
                Some(p) => p,
                None => {
                    let writes = self.cache.writes();
                    let Some(text) = crate::auth::policy_text(barrier, n).await? else {
                        continue;
                    };
                    let p = match Policy::parse(&text) {
                        Ok(p) => Arc::new(p),
                        Err(e) => {
                            tracing::warn!(policy = %n, error = %e, "stored policy does not parse; it grants nothing");
                            continue;
                        }
                    };
                    let mut g = self
                        .cache
                        .policies
                        .write()
                        .unwrap_or_else(|p| p.into_inner());
                    if g.0 != generation {
                        *g = (generation, Default::default());
                    }
                    if self.cache.writes() == writes {
                        g.1.insert(n.clone(), p.clone());
                    }
                    p
                }
            };
            parsed.push(p);
        }
        Ok(Acl::new(parsed.iter().map(|p| p.as_ref()), false))
    }

    /// Change the mount table with `f` and persist it (compare-and-swap).
    pub async fn update_mounts(
        &self,
        barrier: &Barrier,
        f: impl FnOnce(&mut MountTable) -> Result<(), MountError>,
    ) -> Result<(), MountError> {
        let _w = self.cache.mount_writes.lock().await;
        // Re-read from storage under the write lock: another server may have written.
        let (table, version) = MountTable::load(barrier).await?;
        let mut next = table;
        f(&mut next)?;
        next.save(barrier, version).await?;
        *self.cache.mounts.write().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }
}
