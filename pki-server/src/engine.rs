//! The PKI secrets engine: the CA core ([`crate::pki`]) bound to one mount's
//! storage. No HTTP here: `api/pki/*` parses requests, calls these methods, and
//! shapes the answers.
//!
//! Layout under the mount's prefix `logical/<uuid>/` (all through the barrier):
//! `config/issuer` (certificate, parents, key), `config/pending-key` (an
//! intermediate key waiting for `set-signed`), `config/urls`, `config/crl`,
//! `role/<name>`, `certs/<serial>` (DER), `revoked/<serial>`, `crl/current`.
//! The issuer, roles and URLs are cached in memory per unseal generation.

use crate::mounts::MountEntry;
use crate::pki::{
    Crl, Issuer, MountTtl, PkiError, PrivateKey, RevokedCert, Role, SerialNumber, UrlsConfig,
    build_crl,
};
use crate::storage::{Condition, Storage, StorageError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer as _;

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The CA core refused or failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Something the caller asked for does not exist (404 with no message).
    #[error("not found")]
    NotFound,
    /// A caller mistake with a message (400).
    #[error("{0}")]
    Bad(String),
    /// Stored data could not be read back (500).
    #[error("corrupt stored data at {0}")]
    Corrupt(String),
}

type Result<T> = std::result::Result<T, EngineError>;

/// Vault's system default and maximum lease TTL (768h), used when a mount's
/// `default_lease_ttl` / `max_lease_ttl` are unset: tune the mount for longer CAs.
pub const SYSTEM_DEFAULT_TTL: u64 = 768 * 3600;

/// `config/crl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlConfig {
    /// CRL lifetime (seconds).
    pub expiry: u64,
    /// Publish an empty CRL.
    pub disable: bool,
}

impl Default for CrlConfig {
    fn default() -> Self {
        Self {
            expiry: crate::pki::DEFAULT_CRL_EXPIRY.as_secs(),
            disable: false,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredIssuer {
    certificate: String,
    parents: Vec<String>,
    key: String,
}

#[derive(Serialize, Deserialize)]
struct StoredUrls {
    issuing_certificates: Vec<String>,
    crl_distribution_points: Vec<String>,
    ocsp_servers: Vec<String>,
}

/// A revocation record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revocation {
    /// Unix seconds.
    pub revocation_time: i64,
    /// The certificate's notAfter, Unix seconds (for tidy).
    pub not_after: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredCrl {
    number: u64,
    der: String,
}

/// In-memory state of one mount, valid for one unseal generation.
#[derive(Debug, Default)]
pub struct MountState {
    issuer: RwLock<Option<Arc<Issuer>>>,
    roles: RwLock<HashMap<String, Arc<Role>>>,
    urls: RwLock<Option<Arc<UrlsConfig>>>,
    /// Bumped (under the cache's lock) by every write of a cached value: a
    /// read that began before a write never caches what it read.
    epoch: std::sync::atomic::AtomicU64,
    /// Serialises revocation and CRL rebuilds on this mount.
    crl_lock: tokio::sync::Mutex<()>,
}

impl MountState {
    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// After a write: no reader that began before it may cache what it read.
    fn bump(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Per-mount states, tagged with the seal generation they were built under.
#[derive(Debug, Default)]
pub struct EngineCache {
    states: RwLock<(u64, HashMap<String, Arc<MountState>>)>,
}

impl EngineCache {
    /// The state of mount `uuid` for `generation` (a new one after a re-unseal).
    pub fn state(&self, uuid: &str, generation: u64) -> Arc<MountState> {
        if let Some(s) = {
            let g = self.states.read().unwrap_or_else(|p| p.into_inner());
            (g.0 == generation)
                .then(|| g.1.get(uuid).cloned())
                .flatten()
        } {
            return s;
        }
        let mut g = self.states.write().unwrap_or_else(|p| p.into_inner());
        if g.0 != generation {
            *g = (generation, HashMap::new());
        }
        g.1.entry(uuid.to_string()).or_default().clone()
    }
}

/// One mount's PKI engine for the duration of a request.
pub struct Engine<'a> {
    store: &'a dyn Storage,
    prefix: String,
    state: Arc<MountState>,
    /// The mount's TTL settings.
    pub ttl: MountTtl,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| EngineError::Corrupt(e.to_string()))
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

impl<'a> Engine<'a> {
    /// The engine of `mount` over the barrier.
    pub fn new(store: &'a dyn Storage, mount: &MountEntry, state: Arc<MountState>) -> Self {
        Self {
            store,
            prefix: mount.storage_prefix(),
            state,
            // Zero means "the system default", which is 768h in Vault for both.
            ttl: MountTtl {
                default_ttl: Duration::from_secs(match mount.config.default_lease_ttl {
                    0 => SYSTEM_DEFAULT_TTL,
                    n => n,
                }),
                max_ttl: Duration::from_secs(match mount.config.max_lease_ttl {
                    0 => SYSTEM_DEFAULT_TTL,
                    n => n,
                }),
            },
        }
    }

    fn key(&self, k: &str) -> String {
        format!("{}{}", self.prefix, k)
    }

    async fn read<T: for<'de> Deserialize<'de>>(&self, k: &str) -> Result<Option<T>> {
        match self.store.get(&self.key(k)).await? {
            None => Ok(None),
            Some(e) => serde_json::from_slice(&e.value)
                .map(Some)
                .map_err(|_| EngineError::Corrupt(k.to_string())),
        }
    }

    // ---- issuer ---------------------------------------------------------

    /// The mount's CA, if one was generated or set.
    pub async fn issuer(&self) -> Result<Option<Arc<Issuer>>> {
        if let Some(i) = self
            .state
            .issuer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(Some(i));
        }
        let epoch = self.state.epoch();
        let Some(s) = self.read::<StoredIssuer>("config/issuer").await? else {
            return Ok(None);
        };
        let key = PrivateKey::from_pem(&s.key)?;
        let issuer = Arc::new(Issuer::from_parts(&s.certificate, key, &s.parents)?);
        let mut g = self.state.issuer.write().unwrap_or_else(|p| p.into_inner());
        if self.state.epoch() == epoch {
            *g = Some(issuer.clone());
        }
        Ok(Some(issuer))
    }

    /// The CA, or Vault's error when there is none.
    pub async fn require_issuer(&self) -> Result<Arc<Issuer>> {
        self.issuer()
            .await?
            .ok_or_else(|| EngineError::Bad("no default issuer currently configured".into()))
    }

    /// Store `issuer` as the mount's CA (replacing any).
    pub async fn set_issuer(&self, issuer: Issuer) -> Result<Arc<Issuer>> {
        let key = issuer
            .key()
            .encode(crate::pki::PrivateKeyFormat::Pkcs8, crate::pki::Format::Pem)?;
        let s = StoredIssuer {
            certificate: issuer.certificate_pem().to_string(),
            parents: issuer
                .parents()
                .iter()
                .map(|c| c.encode(crate::pki::Format::Pem))
                .collect(),
            key: key.to_string(),
        };
        let bytes = zeroize::Zeroizing::new(json(&s)?);
        drop(s);
        // Unconditional put is safe: the whole CA replaces the whole CA (the
        // request carries all of it; nothing is merged), and every cache of
        // it is dropped below, so no reader keeps a replaced CA.
        self.store.put(&self.key("config/issuer"), &bytes).await?;
        self.invalidate_issuer();
        Ok(Arc::new(issuer))
    }

    /// Remove the CA and any pending intermediate key (`DELETE root`).
    pub async fn delete_issuer(&self) -> Result<()> {
        self.store.delete(&self.key("config/issuer")).await?;
        self.store.delete(&self.key("config/pending-key")).await?;
        self.store.delete(&self.key("crl/current")).await?;
        self.invalidate_issuer();
        Ok(())
    }

    fn invalidate_issuer(&self) {
        let mut g = self.state.issuer.write().unwrap_or_else(|p| p.into_inner());
        self.state.bump();
        *g = None;
    }

    /// Keep the key of an intermediate CSR until `set-signed`.
    pub async fn set_pending_key(&self, key: &PrivateKey) -> Result<()> {
        let pem = key.encode(crate::pki::PrivateKeyFormat::Pkcs8, crate::pki::Format::Pem)?;
        // Unconditional put is safe: a new intermediate CSR replaces the
        // pending key as a whole (Vault: the latest CSR is the one to sign).
        self.store
            .put(&self.key("config/pending-key"), pem.as_bytes())
            .await?;
        Ok(())
    }

    /// The pending intermediate key.
    pub async fn pending_key(&self) -> Result<Option<PrivateKey>> {
        match self.store.get(&self.key("config/pending-key")).await? {
            None => Ok(None),
            Some(e) => {
                let pem = zeroize::Zeroizing::new(
                    String::from_utf8(e.value)
                        .map_err(|_| EngineError::Corrupt("config/pending-key".into()))?,
                );
                Ok(Some(PrivateKey::from_pem(&pem)?))
            }
        }
    }

    /// Drop the pending key once used.
    pub async fn clear_pending_key(&self) -> Result<()> {
        Ok(self.store.delete(&self.key("config/pending-key")).await?)
    }

    // ---- config ---------------------------------------------------------

    /// `config/urls`.
    pub async fn urls(&self) -> Result<Arc<UrlsConfig>> {
        if let Some(u) = self
            .state
            .urls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(u);
        }
        let epoch = self.state.epoch();
        let u = Arc::new(match self.read::<StoredUrls>("config/urls").await? {
            None => UrlsConfig::default(),
            Some(s) => UrlsConfig {
                issuing_certificates: s.issuing_certificates,
                crl_distribution_points: s.crl_distribution_points,
                ocsp_servers: s.ocsp_servers,
            },
        });
        let mut g = self.state.urls.write().unwrap_or_else(|p| p.into_inner());
        if self.state.epoch() == epoch {
            *g = Some(u.clone());
        }
        Ok(u)
    }

    /// Write `config/urls`.
    pub async fn set_urls(&self, u: UrlsConfig) -> Result<()> {
        let s = StoredUrls {
            issuing_certificates: u.issuing_certificates.clone(),
            crl_distribution_points: u.crl_distribution_points.clone(),
            ocsp_servers: u.ocsp_servers.clone(),
        };
        // Unconditional put is safe: `config/urls` is replaced as a whole by
        // each write (Vault's semantics); the cache is dropped after it.
        self.store.put(&self.key("config/urls"), &json(&s)?).await?;
        drop(u);
        let mut g = self.state.urls.write().unwrap_or_else(|p| p.into_inner());
        self.state.bump();
        *g = None;
        Ok(())
    }

    /// `config/crl`.
    pub async fn crl_config(&self) -> Result<CrlConfig> {
        Ok(self.read("config/crl").await?.unwrap_or_default())
    }

    /// Write `config/crl`.
    pub async fn set_crl_config(&self, c: &CrlConfig) -> Result<()> {
        // Unconditional put is safe: `config/crl` is replaced as a whole.
        Ok(self.store.put(&self.key("config/crl"), &json(c)?).await?)
    }

    // ---- roles ----------------------------------------------------------

    /// A role, or `None`.
    pub async fn role(&self, name: &str) -> Result<Option<Arc<Role>>> {
        if let Some(r) = self
            .state
            .roles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(Some(r.clone()));
        }
        let epoch = self.state.epoch();
        let Some(role) = self.read::<Role>(&format!("role/{name}")).await? else {
            return Ok(None);
        };
        let role = Arc::new(role);
        let mut g = self.state.roles.write().unwrap_or_else(|p| p.into_inner());
        if self.state.epoch() == epoch {
            g.insert(name.to_string(), role.clone());
        }
        Ok(Some(role))
    }

    /// Write a role (already validated).
    pub async fn put_role(&self, name: &str, role: Role) -> Result<()> {
        // Unconditional put is safe: a role write replaces the whole role
        // (Vault's `roles/:name` update; nothing stored is merged in), so
        // racing writers cannot lose part of each other's update; the cached
        // copy is dropped after the write.
        self.store
            .put(&self.key(&format!("role/{name}")), &json(&role)?)
            .await?;
        self.invalidate_role(name);
        Ok(())
    }

    fn invalidate_role(&self, name: &str) {
        let mut g = self.state.roles.write().unwrap_or_else(|p| p.into_inner());
        self.state.bump();
        g.remove(name);
    }

    /// Delete a role.
    pub async fn delete_role(&self, name: &str) -> Result<()> {
        self.store
            .delete(&self.key(&format!("role/{name}")))
            .await?;
        self.invalidate_role(name);
        Ok(())
    }

    /// Role names.
    pub async fn list_roles(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .list(&self.key("role/"))
            .await?
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .collect())
    }

    // ---- certificates ---------------------------------------------------

    /// Store an issued certificate under a fresh serial; `false` if the serial
    /// is already taken (the caller re-issues with another).
    pub async fn store_cert(&self, serial: &SerialNumber, der: &[u8]) -> Result<bool> {
        Ok(self
            .store
            .put_if(
                &self.key(&format!("certs/{}", serial.storage_key())),
                der,
                Condition::Absent,
            )
            .await?)
    }

    /// A stored certificate's DER.
    pub async fn cert(&self, serial: &SerialNumber) -> Result<Option<Vec<u8>>> {
        Ok(self
            .store
            .get(&self.key(&format!("certs/{}", serial.storage_key())))
            .await?
            .map(|e| e.value))
    }

    /// Stored serials, colon-hex, sorted.
    pub async fn list_certs(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .store
            .list(&self.key("certs/"))
            .await?
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .map(|k| k.replace('-', ":"))
            .collect();
        out.sort();
        Ok(out)
    }

    /// A revocation record.
    pub async fn revocation(&self, serial: &SerialNumber) -> Result<Option<Revocation>> {
        self.read(&format!("revoked/{}", serial.storage_key()))
            .await
    }

    /// Revoke a stored certificate and rebuild the CRL. Returns the record
    /// (the original one if it was already revoked) and warnings.
    pub async fn revoke(
        &self,
        serial: &SerialNumber,
        now: OffsetDateTime,
    ) -> Result<(Option<Revocation>, Vec<String>)> {
        let issuer = self.require_issuer().await?;
        if issuer.serial_number() == serial {
            return Err(EngineError::Bad(
                "adding issuer to its own CRL is not allowed".into(),
            ));
        }
        let _g = self.state.crl_lock.lock().await;
        if let Some(r) = self.revocation(serial).await? {
            return Ok((Some(r), Vec::new()));
        }
        let der = self.cert(serial).await?.ok_or_else(|| {
            EngineError::Bad(format!(
                "certificate with serial {} not found.",
                serial.colon_hex()
            ))
        })?;
        let not_after = x509_parser::parse_x509_certificate(&der)
            .map(|(_, c)| c.validity().not_after.timestamp())
            .map_err(|_| EngineError::Corrupt(format!("certs/{}", serial.storage_key())))?;
        if not_after < unix(now) + 2 {
            return Ok((
                None,
                vec![format!(
                    "certificate with serial {} already expired; refusing to add to CRL",
                    serial.colon_hex()
                )],
            ));
        }
        let rec = Revocation {
            revocation_time: unix(now),
            not_after,
        };
        // Create-if-absent: a certificate is revoked once; a racing revoke
        // (here or on another server) keeps the first revocation time.
        let key = self.key(&format!("revoked/{}", serial.storage_key()));
        if !self
            .store
            .put_if(&key, &json(&rec)?, Condition::Absent)
            .await?
            && let Some(first) = self.revocation(serial).await?
        {
            self.rebuild_crl_locked(&issuer, now).await?;
            return Ok((Some(first), Vec::new()));
        }
        self.rebuild_crl_locked(&issuer, now).await?;
        Ok((Some(rec), Vec::new()))
    }

    async fn revoked_list(&self) -> Result<Vec<(String, Revocation)>> {
        let mut out = Vec::new();
        for k in self.store.list(&self.key("revoked/")).await? {
            if k.ends_with('/') {
                continue;
            }
            if let Some(r) = self.read::<Revocation>(&format!("revoked/{k}")).await? {
                out.push((k, r));
            }
        }
        Ok(out)
    }

    /// Revoked serials, colon-hex.
    pub async fn list_revoked(&self) -> Result<Vec<String>> {
        Ok(self
            .revoked_list()
            .await?
            .into_iter()
            .map(|(k, _)| k.replace('-', ":"))
            .collect())
    }

    /// Build the next CRL and store it by compare-and-swap on the CRL read:
    /// a server that lost the race reads the revocations again, so the CRL
    /// stored last always lists every revocation stored before it.
    async fn rebuild_crl_locked(&self, issuer: &Issuer, now: OffsetDateTime) -> Result<Crl> {
        let key = self.key("crl/current");
        for _ in 0..crate::storage::CAS_TRIES {
            let current = self.store.get(&key).await?;
            let number = match &current {
                None => 1,
                Some(e) => {
                    serde_json::from_slice::<StoredCrl>(&e.value)
                        .map_err(|_| EngineError::Corrupt("crl/current".into()))?
                        .number
                        + 1
                }
            };
            let crl = self.build_crl(issuer, number, now).await?;
            let stored = StoredCrl {
                number,
                der: B64.encode(&crl.der),
            };
            let cond = match current {
                None => Condition::Absent,
                Some(e) => Condition::Matches(e.version),
            };
            if self.store.put_if(&key, &json(&stored)?, cond).await? {
                return Ok(crl);
            }
        }
        Err(StorageError::Contended(key).into())
    }

    async fn build_crl(&self, issuer: &Issuer, number: u64, now: OffsetDateTime) -> Result<Crl> {
        let cfg = self.crl_config().await?;
        let revoked = if cfg.disable {
            Vec::new()
        } else {
            let mut v = Vec::new();
            for (k, r) in self.revoked_list().await? {
                v.push(RevokedCert {
                    serial: SerialNumber::parse(&k)?,
                    revocation_time: OffsetDateTime::from_unix_timestamp(r.revocation_time)
                        .map_err(|_| EngineError::Corrupt(format!("revoked/{k}")))?,
                });
            }
            v
        };
        Ok(build_crl(
            issuer,
            &revoked,
            number,
            now,
            Duration::from_secs(cfg.expiry),
        )?)
    }

    /// Rebuild the CRL now (`crl/rotate`).
    pub async fn rotate_crl(&self, now: OffsetDateTime) -> Result<Crl> {
        let issuer = self.require_issuer().await?;
        let _g = self.state.crl_lock.lock().await;
        self.rebuild_crl_locked(&issuer, now).await
    }

    /// The current CRL DER, building the first one if needed; `None` without a CA.
    pub async fn crl_der(&self, now: OffsetDateTime) -> Result<Option<Vec<u8>>> {
        if let Some(c) = self.read::<StoredCrl>("crl/current").await? {
            return B64
                .decode(c.der)
                .map(Some)
                .map_err(|_| EngineError::Corrupt("crl/current".into()));
        }
        match self.issuer().await? {
            None => Ok(None),
            Some(issuer) => {
                let _g = self.state.crl_lock.lock().await;
                Ok(Some(self.rebuild_crl_locked(&issuer, now).await?.der))
            }
        }
    }

    /// Rebuild the CRL when a third or less of its lifetime is left (or none
    /// was built yet), so a published CRL never passes its nextUpdate while
    /// the server runs. Returns whether it rebuilt.
    pub async fn refresh_crl_if_due(&self, now: OffsetDateTime) -> Result<bool> {
        let Some(issuer) = self.issuer().await? else {
            return Ok(false);
        };
        let expiry = self.crl_config().await?.expiry;
        if let Some(c) = self.read::<StoredCrl>("crl/current").await? {
            let der = B64
                .decode(c.der)
                .map_err(|_| EngineError::Corrupt("crl/current".into()))?;
            let next = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
                .ok()
                .and_then(|(_, crl)| crl.next_update())
                .map(|t| t.timestamp());
            let margin = i64::try_from(expiry / 3).unwrap_or(i64::MAX);
            if next.is_some_and(|n| n - unix(now) > margin) {
                return Ok(false);
            }
        }
        let _g = self.state.crl_lock.lock().await;
        self.rebuild_crl_locked(&issuer, now).await?;
        Ok(true)
    }

    /// Tidy: delete certificates (and revocation records) whose notAfter is
    /// more than `safety_buffer` in the past. Returns (certs, revocations) removed.
    pub async fn tidy(
        &self,
        cert_store: bool,
        revoked: bool,
        safety_buffer: Duration,
        now: OffsetDateTime,
    ) -> Result<(usize, usize)> {
        let cutoff = unix(now) - i64::try_from(safety_buffer.as_secs()).unwrap_or(i64::MAX);
        let mut certs_removed = 0;
        let mut revoked_removed = 0;
        let _g = self.state.crl_lock.lock().await;
        if cert_store {
            for k in self.store.list(&self.key("certs/")).await? {
                if k.ends_with('/') {
                    continue;
                }
                let path = self.key(&format!("certs/{k}"));
                let Some(e) = self.store.get(&path).await? else {
                    continue;
                };
                let expired = match x509_parser::parse_x509_certificate(&e.value) {
                    Ok((_, c)) => c.validity().not_after.timestamp() < cutoff,
                    Err(_) => false,
                };
                // A revoked certificate stays while its revocation record does.
                if expired
                    && (revoked
                        || self
                            .read::<Revocation>(&format!("revoked/{k}"))
                            .await?
                            .is_none())
                {
                    self.store.delete(&path).await?;
                    certs_removed += 1;
                }
            }
        }
        if revoked {
            for (k, r) in self.revoked_list().await? {
                if r.not_after < cutoff {
                    self.store
                        .delete(&self.key(&format!("revoked/{k}")))
                        .await?;
                    revoked_removed += 1;
                }
            }
            if revoked_removed > 0
                && let Some(issuer) = self.issuer().await?
            {
                self.rebuild_crl_locked(&issuer, now).await?;
            }
        }
        Ok((certs_removed, revoked_removed))
    }
}
