//! The seal: the only code that ever holds the root key.
//!
//! States: uninitialised → sealed (collecting shares) → unsealed (a [`Barrier`]).
//! `sys/init` makes a root key and a keyring, wraps the root key with a random
//! unseal key that is split into Shamir shares (or with AWS KMS for auto-unseal,
//! plus recovery shares), and writes only ciphertext. Unsealing reverses that.

pub mod barrier;
pub mod key;
pub mod kms;
pub mod shamir;

pub use barrier::{Barrier, KeyStatus, Keyring};
pub use key::Key;
pub use kms::Kms;

use crate::storage::{self, Condition, DynStorage, StorageError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// How the root key is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SealKind {
    /// Unseal key split into shares held by operators.
    Shamir,
    /// Root key wrapped by AWS KMS; recovery shares for break-glass.
    Awskms,
}

impl SealKind {
    /// Vault's name for the seal type.
    pub fn as_str(self) -> &'static str {
        match self {
            SealKind::Shamir => "shamir",
            SealKind::Awskms => "awskms",
        }
    }
}

/// The seal configuration, stored in clear at `core/seal-config`: no secret in it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealConfig {
    /// Seal type.
    #[serde(rename = "type")]
    pub kind: SealKind,
    /// Unseal shares (Shamir) or recovery shares (awskms).
    pub shares: usize,
    /// Shares needed.
    pub threshold: usize,
    /// KMS key for awskms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

/// Why a seal operation failed. User-caused variants first.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Operation needs an initialised server.
    #[error("Vault is not initialized")]
    NotInitialized,
    /// Init on an initialised server.
    #[error("Vault is already initialized")]
    AlreadyInitialized,
    /// Init over a store that already holds data but lost its seal configuration.
    #[error(
        "storage already holds data ({0}) but no seal configuration (core/seal-config): \
         refusing to initialise over it; restore core/seal-config from a backup"
    )]
    DataWithoutSealConfig(String),
    /// Bad shares/threshold.
    #[error("invalid seal configuration: {0}")]
    InvalidConfig(String),
    /// The combined shares did not open the root key.
    #[error("unseal failed, invalid key")]
    InvalidKey,
    /// The key is neither hex nor base64.
    #[error("'key' must be a valid hex or base64 string")]
    KeyEncoding,
    /// Neither key nor reset.
    #[error("'key' must be specified in request body as JSON, or 'reset' set to true")]
    MissingKey,
    /// Reset on an unsealed server.
    #[error("vault is unsealed")]
    AlreadyUnsealed,
    /// The operation needs an unsealed server.
    #[error("Vault is sealed")]
    Sealed,
    /// KMS failed (not a secret: names the key and the AWS error).
    #[error("{0}")]
    Kms(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Stored seal data is unreadable.
    #[error("corrupt seal data: {0}")]
    Corrupt(String),
}

impl SealError {
    /// Whether the caller caused the error (400) rather than the server.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            SealError::Sealed | SealError::Kms(_) | SealError::Storage(_) | SealError::Corrupt(_)
        )
    }
}

impl From<key::CryptoError> for SealError {
    fn from(e: key::CryptoError) -> Self {
        SealError::Corrupt(e.to_string())
    }
}

/// What `sys/init` asks for.
#[derive(Debug, Clone, Default)]
pub struct InitRequest {
    /// Unseal shares (Shamir).
    pub secret_shares: Option<usize>,
    /// Unseal threshold (Shamir).
    pub secret_threshold: Option<usize>,
    /// Recovery shares (awskms).
    pub recovery_shares: Option<usize>,
    /// Recovery threshold (awskms).
    pub recovery_threshold: Option<usize>,
}

/// What `sys/init` returns, once.
pub struct InitResult {
    /// Unseal shares (empty for awskms).
    pub keys: Vec<Zeroizing<Vec<u8>>>,
    /// Recovery shares (awskms only).
    pub recovery_keys: Vec<Zeroizing<Vec<u8>>>,
    /// The root token.
    pub root_token: Zeroizing<String>,
}

impl std::fmt::Debug for InitResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitResult(<redacted>)")
    }
}

/// Seal status, as `sys/seal-status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealStatus {
    /// Seal type.
    pub kind: SealKind,
    /// Initialised?
    pub initialized: bool,
    /// Sealed?
    pub sealed: bool,
    /// Threshold.
    pub t: usize,
    /// Shares.
    pub n: usize,
    /// Shares received so far.
    pub progress: usize,
    /// Id of the unseal attempt in progress, or empty.
    pub nonce: String,
    /// Storage kind.
    pub storage_type: &'static str,
    /// Cluster name and id (unsealed only).
    pub cluster: Option<ClusterInfo>,
    /// Why auto-unseal has not happened.
    pub warning: Option<String>,
}

/// Cluster name and id, made at init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Name.
    pub cluster_name: String,
    /// Id (UUID).
    pub cluster_id: String,
}

#[derive(Default)]
struct Progress {
    parts: Vec<Zeroizing<Vec<u8>>>,
    nonce: String,
}

/// The seal and, while unsealed, the barrier.
pub struct Seal {
    storage: DynStorage,
    kms: Option<Kms>,
    /// Serialises init/unseal/seal transitions.
    transition: tokio::sync::Mutex<Progress>,
    unsealed: RwLock<Option<(Arc<Barrier>, ClusterInfo)>>,
    /// Incremented at every unseal: caches of decrypted data carry it.
    generation: std::sync::atomic::AtomicU64,
    auto_unseal_error: RwLock<Option<String>>,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("storage", &self.storage)
            .field("kms", &self.kms.as_ref().map(|k| k.key_id().to_string()))
            .finish_non_exhaustive()
    }
}

fn share_count(v: Option<usize>, default: usize, what: &str) -> Result<usize, SealError> {
    let n = v.unwrap_or(default);
    if n == 0 || n > 255 {
        return Err(SealError::InvalidConfig(format!(
            "{what} must be between 1 and 255"
        )));
    }
    Ok(n)
}

fn check_shares(shares: usize, threshold: usize) -> Result<(), SealError> {
    if threshold > shares {
        return Err(SealError::InvalidConfig(
            "threshold cannot be larger than shares".into(),
        ));
    }
    if shares > 1 && threshold < 2 {
        return Err(SealError::InvalidConfig(
            "threshold must be greater than one for multiple shares".into(),
        ));
    }
    if shares == 1 && threshold != 1 {
        return Err(SealError::InvalidConfig(
            "threshold must be one for a single share".into(),
        ));
    }
    Ok(())
}

/// Split `secret` into `shares` (a single share is the secret itself, as in Vault).
fn make_shares(
    secret: &Key,
    shares: usize,
    threshold: usize,
) -> Result<Vec<Zeroizing<Vec<u8>>>, SealError> {
    if shares == 1 {
        return Ok(vec![Zeroizing::new(secret.expose().to_vec())]);
    }
    shamir::split(secret.expose(), shares, threshold)
        .map_err(|e| SealError::InvalidConfig(e.to_string()))
}

/// Decode an unseal key given as hex or base64 (hex first, as Vault does).
pub fn decode_key(s: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let s = s.trim();
    if let Ok(b) = hex::decode(s)
        && (16..=33).contains(&b.len())
    {
        return Ok(Zeroizing::new(b));
    }
    match B64.decode(s) {
        Ok(b) if (16..=33).contains(&b.len()) => Ok(Zeroizing::new(b)),
        _ => Err(SealError::KeyEncoding),
    }
}

/// Constant-time equality (shares are secrets).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[derive(Serialize, Deserialize)]
struct KmsWrapped {
    kms_key_id: String,
    ciphertext: String,
}

impl Seal {
    /// A seal over `storage`; `kms` enables auto-unseal for a new server and
    /// overrides the key id recorded by an existing awskms seal.
    pub fn new(storage: DynStorage, kms: Option<Kms>) -> Self {
        Self {
            storage,
            kms,
            transition: tokio::sync::Mutex::new(Progress::default()),
            unsealed: RwLock::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            auto_unseal_error: RwLock::new(None),
        }
    }

    /// The physical storage (ciphertext only).
    pub fn storage(&self) -> &DynStorage {
        &self.storage
    }

    async fn config(&self) -> Result<Option<SealConfig>, SealError> {
        match self.storage.get(storage::SEAL_CONFIG).await? {
            None => Ok(None),
            Some(e) => serde_json::from_slice(&e.value)
                .map(Some)
                .map_err(|e| SealError::Corrupt(format!("seal config: {e}"))),
        }
    }

    /// The first stored key that shows this storage already holds a server's
    /// data (anything under `core/`, `sys/`, `logical/` or `auth/`). Such a
    /// store is never initialised over: with its seal configuration gone it
    /// stays sealed and says why, and only a restore brings it back.
    pub async fn existing_data(&self) -> Result<Option<String>, SealError> {
        for prefix in ["core/", "sys/", "logical/", "auth/"] {
            if let Some(k) = self.storage.list(prefix).await?.into_iter().next() {
                return Ok(Some(format!("{prefix}{k}")));
            }
        }
        Ok(None)
    }

    /// The barrier, if unsealed.
    pub fn barrier(&self) -> Option<Arc<Barrier>> {
        self.unsealed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(b, _)| b.clone())
    }

    /// Cluster info, if unsealed.
    pub fn cluster(&self) -> Option<ClusterInfo> {
        self.unsealed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, c)| c.clone())
    }

    /// Changes at every unseal and seal; caches compare it.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_unsealed(&self, v: Option<(Arc<Barrier>, ClusterInfo)>) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        *self.unsealed.write().unwrap_or_else(|p| p.into_inner()) = v;
    }

    fn set_warning(&self, w: Option<String>) {
        *self
            .auto_unseal_error
            .write()
            .unwrap_or_else(|p| p.into_inner()) = w;
    }

    /// The current status.
    pub async fn status(&self) -> Result<SealStatus, SealError> {
        let cfg = self.config().await?;
        // Data without a seal configuration: say why this store stays sealed.
        let orphaned = match (&cfg, self.cluster()) {
            (None, None) => self
                .existing_data()
                .await?
                .map(|k| SealError::DataWithoutSealConfig(k).to_string()),
            _ => None,
        };
        let progress = self.transition.lock().await;
        let cluster = self.cluster();
        Ok(SealStatus {
            kind: cfg
                .as_ref()
                .map(|c| c.kind)
                .unwrap_or(if self.kms.is_some() {
                    SealKind::Awskms
                } else {
                    SealKind::Shamir
                }),
            initialized: cfg.is_some(),
            sealed: cluster.is_none(),
            t: cfg.as_ref().map(|c| c.threshold).unwrap_or(0),
            n: cfg.as_ref().map(|c| c.shares).unwrap_or(0),
            progress: if cluster.is_some() {
                0
            } else {
                progress.parts.len()
            },
            nonce: if cluster.is_some() {
                String::new()
            } else {
                progress.nonce.clone()
            },
            storage_type: self.storage.kind(),
            cluster,
            warning: orphaned.or_else(|| {
                self.auto_unseal_error
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            }),
        })
    }

    /// Initialise: make the root key and keyring, wrap them, make the root token.
    /// A Shamir seal stays sealed afterwards (as in Vault); an awskms seal unseals.
    pub async fn init(
        &self,
        req: InitRequest,
        cluster_name: &str,
    ) -> Result<InitResult, SealError> {
        let mut progress = self.transition.lock().await;
        if self.cluster().is_some() || self.config().await?.is_some() {
            return Err(SealError::AlreadyInitialized);
        }
        if let Some(found) = self.existing_data().await? {
            return Err(SealError::DataWithoutSealConfig(found));
        }
        let (cfg, keys, recovery) = match &self.kms {
            None => {
                // Vault's CLI always sends `recovery_*: 0`: zero means absent.
                let given = |v: Option<usize>| v.is_some_and(|n| n > 0);
                if given(req.recovery_shares) || given(req.recovery_threshold) {
                    return Err(SealError::InvalidConfig(
                        "parameters recovery_shares,recovery_threshold not applicable to seal type shamir".into(),
                    ));
                }
                let n = share_count(req.secret_shares, 5, "shares")?;
                let t = share_count(req.secret_threshold, 3, "threshold")?;
                check_shares(n, t)?;
                (
                    SealConfig {
                        kind: SealKind::Shamir,
                        shares: n,
                        threshold: t,
                        kms_key_id: None,
                    },
                    true,
                    false,
                )
            }
            Some(kms) => {
                let n = share_count(req.recovery_shares, 5, "recovery shares")?;
                let t = share_count(req.recovery_threshold, 3, "recovery threshold")?;
                check_shares(n, t)?;
                (
                    SealConfig {
                        kind: SealKind::Awskms,
                        shares: n,
                        threshold: t,
                        kms_key_id: Some(kms.key_id().to_string()),
                    },
                    false,
                    true,
                )
            }
        };

        let root = Key::generate()?;
        let ring = Keyring::generate(root.clone(), now())?;
        // The share secret: the Shamir unseal key, or the awskms recovery key.
        let share_secret = Key::generate()?;
        let shares = make_shares(&share_secret, cfg.shares, cfg.threshold)?;

        // The keyring is written create-if-absent: a concurrent init (another
        // server on the same bucket) cannot overwrite the one that wins.
        if !self
            .storage
            .put_if(storage::KEYRING, &ring.seal()?, Condition::Absent)
            .await?
        {
            return Err(SealError::Corrupt(
                "core/keyring exists without core/seal-config: another init is running or a \
                 previous init did not complete (remove core/keyring from storage to retry)"
                    .into(),
            ));
        }
        match &self.kms {
            None => {
                let wrapped = share_secret.seal(0, storage::ROOT_KEY_WRAPPED, root.expose())?;
                self.create(storage::ROOT_KEY_WRAPPED, &wrapped).await?;
            }
            Some(kms) => {
                let blob = kms.wrap(root.expose()).await.map_err(SealError::Kms)?;
                let w = KmsWrapped {
                    kms_key_id: kms.key_id().to_string(),
                    ciphertext: B64.encode(blob),
                };
                let json = serde_json::to_vec(&w).map_err(|e| SealError::Corrupt(e.to_string()))?;
                self.create(storage::ROOT_KEY_WRAPPED, &json).await?;
                let rec = share_secret.seal(0, storage::ROOT_KEY_RECOVERY, root.expose())?;
                self.create(storage::ROOT_KEY_RECOVERY, &rec).await?;
            }
        }

        let barrier = Arc::new(Barrier::new(self.storage.clone(), ring));
        let cluster = ClusterInfo {
            cluster_name: cluster_name.to_string(),
            cluster_id: uuid(),
        };
        let cj = serde_json::to_vec(&cluster).map_err(|e| SealError::Corrupt(e.to_string()))?;
        use crate::storage::Storage as _;
        if !barrier
            .put_if(storage::CLUSTER_INFO, &cj, Condition::Absent)
            .await?
        {
            return Err(SealError::Corrupt(format!(
                "{} exists during init: storage is shared with another server",
                storage::CLUSTER_INFO
            )));
        }
        let (root_token, _) = crate::auth::token::create_root(barrier.as_ref(), now()).await?;

        // Commit point: the seal config, written only if no concurrent init won.
        let cfg_json = serde_json::to_vec(&cfg).map_err(|e| SealError::Corrupt(e.to_string()))?;
        if !self
            .storage
            .put_if(storage::SEAL_CONFIG, &cfg_json, Condition::Absent)
            .await?
        {
            return Err(SealError::AlreadyInitialized);
        }
        *progress = Progress::default();
        if recovery {
            self.set_unsealed(Some((barrier, cluster)));
        }
        Ok(InitResult {
            keys: if keys { shares.clone() } else { Vec::new() },
            recovery_keys: if recovery { shares } else { Vec::new() },
            root_token,
        })
    }

    /// Create-if-absent for init's objects: only the init that created the
    /// keyring gets here, so finding one of them already there means the
    /// storage is not ours alone; refuse rather than overwrite.
    async fn create(&self, key: &str, value: &[u8]) -> Result<(), SealError> {
        if self.storage.put_if(key, value, Condition::Absent).await? {
            Ok(())
        } else {
            Err(SealError::Corrupt(format!(
                "{key} exists during init: storage is shared with another server"
            )))
        }
    }

    /// Submit one share (or reset). Combines when the threshold is reached.
    pub async fn unseal(&self, key: Option<&str>, reset: bool) -> Result<SealStatus, SealError> {
        {
            let mut progress = self.transition.lock().await;
            let cfg = self.config().await?.ok_or(SealError::NotInitialized)?;
            if reset {
                if self.barrier().is_some() {
                    return Err(SealError::AlreadyUnsealed);
                }
                *progress = Progress::default();
            } else {
                let key = key.ok_or(SealError::MissingKey)?;
                let part = decode_key(key)?;
                if self.barrier().is_none() {
                    // A share already given in this attempt is ignored (progress unchanged).
                    if !progress.parts.iter().any(|p| same_bytes(p, &part)) {
                        if progress.parts.is_empty() {
                            progress.nonce = uuid();
                        }
                        progress.parts.push(part);
                    }
                    if progress.parts.len() >= cfg.threshold {
                        let parts = std::mem::take(&mut *progress);
                        self.try_unseal_with_shares(&cfg, &parts.parts).await?;
                    }
                }
            }
        }
        self.status().await
    }

    async fn try_unseal_with_shares(
        &self,
        cfg: &SealConfig,
        parts: &[Zeroizing<Vec<u8>>],
    ) -> Result<(), SealError> {
        let secret = if cfg.shares == 1 {
            parts
                .first()
                .map(|p| Zeroizing::new(p.to_vec()))
                .ok_or(SealError::InvalidKey)?
        } else {
            let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
            shamir::combine(&refs).map_err(|_| SealError::InvalidKey)?
        };
        let share_key = Key::from_slice(&secret).map_err(|_| SealError::InvalidKey)?;
        let path = match cfg.kind {
            SealKind::Shamir => storage::ROOT_KEY_WRAPPED,
            SealKind::Awskms => storage::ROOT_KEY_RECOVERY,
        };
        let wrapped = self
            .storage
            .get(path)
            .await?
            .ok_or_else(|| SealError::Corrupt("wrapped root key missing".into()))?;
        let root = share_key
            .open(path, &wrapped.value)
            .map_err(|_| SealError::InvalidKey)?;
        self.finish_unseal(Key::from_slice(&root)?).await
    }

    async fn finish_unseal(&self, root: Key) -> Result<(), SealError> {
        let sealed_ring = self
            .storage
            .get(storage::KEYRING)
            .await?
            .ok_or_else(|| SealError::Corrupt("keyring missing".into()))?;
        let ring = Keyring::open(&root, &sealed_ring.value)?;
        let barrier = Arc::new(Barrier::new(self.storage.clone(), ring));
        use crate::storage::Storage as _;
        let cluster: ClusterInfo = match barrier.get(storage::CLUSTER_INFO).await? {
            Some(e) => {
                serde_json::from_slice(&e.value).map_err(|e| SealError::Corrupt(e.to_string()))?
            }
            None => return Err(SealError::Corrupt("cluster info missing".into())),
        };
        self.set_warning(None);
        self.set_unsealed(Some((barrier, cluster)));
        Ok(())
    }

    /// Auto-unseal with KMS (awskms seals only). On failure the server stays
    /// sealed and the reason is kept for seal-status and health.
    pub async fn auto_unseal(&self) -> Result<bool, SealError> {
        let _progress = self.transition.lock().await;
        if self.barrier().is_some() {
            return Ok(true);
        }
        let Some(cfg) = self.config().await? else {
            return Ok(false);
        };
        if cfg.kind != SealKind::Awskms {
            return Ok(false);
        }
        let res = self.kms_unseal(&cfg).await;
        if let Err(e) = &res {
            self.set_warning(Some(format!("auto-unseal failed: {e}")));
        }
        res.map(|_| true)
    }

    async fn kms_unseal(&self, cfg: &SealConfig) -> Result<(), SealError> {
        let wrapped = self
            .storage
            .get(storage::ROOT_KEY_WRAPPED)
            .await?
            .ok_or_else(|| SealError::Corrupt("wrapped root key missing".into()))?;
        let w: KmsWrapped = serde_json::from_slice(&wrapped.value)
            .map_err(|e| SealError::Corrupt(format!("kms-wrapped root key: {e}")))?;
        let blob = B64
            .decode(&w.ciphertext)
            .map_err(|e| SealError::Corrupt(format!("kms-wrapped root key: {e}")))?;
        let kms = match &self.kms {
            Some(k) => k.clone(),
            None => {
                let key_id = cfg.kms_key_id.clone().unwrap_or(w.kms_key_id);
                Kms::new(&crate::aws::sdk_config().await, &key_id)
            }
        };
        let root = kms.unwrap_key(&blob).await.map_err(SealError::Kms)?;
        self.finish_unseal(Key::from_slice(&root)?).await
    }

    /// Seal: drop the barrier (and with it every key in memory).
    pub async fn seal(&self) -> Result<(), SealError> {
        let mut progress = self.transition.lock().await;
        *progress = Progress::default();
        self.set_unsealed(None);
        Ok(())
    }

    /// Whether this server was started with a KMS seal or has one stored.
    pub async fn is_auto(&self) -> bool {
        self.kms.is_some()
            || matches!(self.config().await, Ok(Some(c)) if c.kind == SealKind::Awskms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStorage, Storage};

    fn seal() -> (Arc<MemoryStorage>, Seal) {
        let mem = Arc::new(MemoryStorage::default());
        (mem.clone(), Seal::new(mem, None))
    }

    fn hexes(r: &InitResult) -> Vec<String> {
        r.keys.iter().map(|k| hex::encode(&k[..])).collect()
    }

    #[tokio::test]
    async fn init_unseal_lifecycle() {
        let (_, s) = seal();
        assert!(!s.status().await.unwrap().initialized);
        assert!(matches!(
            s.unseal(Some("00"), false).await,
            Err(SealError::NotInitialized)
        ));
        let r = s.init(InitRequest::default(), "c").await.unwrap();
        assert_eq!(r.keys.len(), 5);
        assert!(matches!(
            s.init(InitRequest::default(), "c").await,
            Err(SealError::AlreadyInitialized)
        ));
        let st = s.status().await.unwrap();
        assert!(st.initialized && st.sealed && st.t == 3 && st.n == 5);
        let k = hexes(&r);
        assert_eq!(s.unseal(Some(&k[0]), false).await.unwrap().progress, 1);
        assert_eq!(
            s.unseal(Some(&k[0]), false).await.unwrap().progress,
            1,
            "duplicate ignored"
        );
        assert_eq!(
            s.unseal(Some(&B64.encode(&r.keys[3][..])), false)
                .await
                .unwrap()
                .progress,
            2
        );
        let st = s.unseal(Some(&k[4]), false).await.unwrap();
        assert!(!st.sealed && st.progress == 0);
        let tok = r.root_token.clone();
        let b = s.barrier().unwrap();
        assert!(
            crate::auth::token::lookup(b.as_ref(), &tok, now())
                .await
                .unwrap()
                .unwrap()
                .is_root()
        );
        assert!(matches!(
            s.unseal(None, true).await,
            Err(SealError::AlreadyUnsealed)
        ));
        s.seal().await.unwrap();
        assert!(s.barrier().is_none());
    }

    #[tokio::test]
    async fn wrong_share_fails_at_threshold_and_resets() {
        let (_, s) = seal();
        let r = s.init(InitRequest::default(), "c").await.unwrap();
        let other = seal().1.init(InitRequest::default(), "c").await.unwrap();
        let k = hexes(&r);
        s.unseal(Some(&k[0]), false).await.unwrap();
        s.unseal(Some(&k[1]), false).await.unwrap();
        let bad = hex::encode(&other.keys[0][..]);
        assert!(matches!(
            s.unseal(Some(&bad), false).await,
            Err(SealError::InvalidKey)
        ));
        assert_eq!(s.status().await.unwrap().progress, 0);
        s.unseal(Some(&k[0]), false).await.unwrap();
        assert_eq!(s.unseal(None, true).await.unwrap().progress, 0);
        assert!(matches!(
            s.unseal(Some("zz"), false).await,
            Err(SealError::KeyEncoding)
        ));
        assert!(matches!(
            s.unseal(None, false).await,
            Err(SealError::MissingKey)
        ));
    }

    #[tokio::test]
    async fn single_share_is_the_key() {
        let (_, s) = seal();
        let r = s
            .init(
                InitRequest {
                    secret_shares: Some(1),
                    secret_threshold: Some(1),
                    ..Default::default()
                },
                "c",
            )
            .await
            .unwrap();
        assert_eq!(r.keys[0].len(), 32);
        assert!(
            !s.unseal(Some(&hex::encode(&r.keys[0][..])), false)
                .await
                .unwrap()
                .sealed
        );
    }

    #[tokio::test]
    async fn bad_configs_are_refused_and_write_nothing() {
        for (n, t) in [(3, 4), (5, 1), (0, 0), (256, 3), (1, 2)] {
            let (mem, s) = seal();
            let req = InitRequest {
                secret_shares: Some(n),
                secret_threshold: Some(t),
                ..Default::default()
            };
            assert!(
                matches!(s.init(req, "c").await, Err(SealError::InvalidConfig(_))),
                "{n}/{t}"
            );
            assert!(mem.list("").await.unwrap().is_empty());
        }
    }

    #[test]
    fn keys_decode_from_hex_or_base64() {
        let raw = [7u8; 33];
        assert_eq!(&decode_key(&hex::encode(raw)).unwrap()[..], &raw);
        assert_eq!(&decode_key(&B64.encode(raw)).unwrap()[..], &raw);
        assert!(decode_key("not a key").is_err());
        assert!(decode_key(&hex::encode([1u8; 8])).is_err());
    }
}
