//! File storage, the embedded default: one file per key below a directory.
//!
//! Key `a/b/c` lives at `DIR/a/b/_c` (the `_` keeps values and folders apart, as
//! Vault's file backend does). Every write is a temp file in the same folder,
//! fsynced, renamed over the target (or hard-linked for create-if-absent, which
//! fails atomically if the target exists), then the folder is fsynced. Files are
//! 0600 and folders 0700. Compare-and-swap is serialised inside this process;
//! one server owns a directory.

use super::{
    Condition, Entry, Result, Storage, StorageError, content_version, validate_key, validate_prefix,
};
use async_trait::async_trait;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Storage in a local directory.
#[derive(Debug, Clone)]
pub struct FileStorage {
    root: Arc<PathBuf>,
    /// Serialises conditional writes so read-compare-rename is atomic in-process.
    cas: Arc<tokio::sync::Mutex<()>>,
}

impl FileStorage {
    /// Open (creating if needed, mode 0700) the storage directory.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            root: Arc::new(root.to_path_buf()),
            cas: Arc::default(),
        })
    }

    fn path_of(&self, key: &str) -> PathBuf {
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let mut p = self.root.join(dir);
        p.push(format!("_{name}"));
        p
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StorageError::Backend(format!("file storage task failed: {e}")))?
            .map_err(StorageError::from)
    }
}

fn read_opt(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `value` to a fresh temp file next to `target`, fsynced; returns its path.
fn write_temp(target: &Path, value: &[u8]) -> std::io::Result<PathBuf> {
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other("storage path has no parent"))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut rnd = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut rnd)
        .map_err(|_| std::io::Error::other("no randomness"))?;
    let tmp = dir.join(format!(".tmp-{}", hex::encode(rnd)));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let res = f.write_all(value).and_then(|_| f.sync_all());
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

fn put_sync(target: &Path, value: &[u8]) -> std::io::Result<()> {
    let tmp = write_temp(target, value)?;
    if let Err(e) = fs::rename(&tmp, target) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(target.parent().unwrap_or(Path::new(".")))
}

fn create_sync(target: &Path, value: &[u8]) -> std::io::Result<bool> {
    let tmp = write_temp(target, value)?;
    let res = fs::hard_link(&tmp, target);
    let _ = fs::remove_file(&tmp);
    match res {
        Ok(()) => {
            sync_dir(target.parent().unwrap_or(Path::new(".")))?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Storage for FileStorage {
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        validate_key(key)?;
        let path = self.path_of(key);
        let v = Self::blocking(move || read_opt(&path)).await?;
        Ok(v.map(|value| Entry {
            version: content_version(&value),
            value,
        }))
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        validate_key(key)?;
        let path = self.path_of(key);
        let value = value.to_vec();
        // Hold the CAS lock so an unconditional put cannot interleave with a
        // conditional one's compare and rename.
        let _g = self.cas.lock().await;
        Self::blocking(move || put_sync(&path, &value)).await
    }

    async fn put_if(&self, key: &str, value: &[u8], cond: Condition) -> Result<bool> {
        validate_key(key)?;
        let path = self.path_of(key);
        let value = value.to_vec();
        let _g = self.cas.lock().await;
        Self::blocking(move || match cond {
            Condition::Absent => create_sync(&path, &value),
            Condition::Matches(v) => match read_opt(&path)? {
                Some(cur) if content_version(&cur) == v => put_sync(&path, &value).map(|_| true),
                _ => Ok(false),
            },
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let path = self.path_of(key);
        let _g = self.cas.lock().await;
        Self::blocking(move || match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
                Ok(())
            }
            Err(e) => Err(e),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let dir = self.root.join(prefix.trim_end_matches('/'));
        Self::blocking(move || {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut out = Vec::new();
            for ent in rd {
                let ent = ent?;
                let name = ent.file_name().to_string_lossy().into_owned();
                if let Some(key) = name.strip_prefix('_') {
                    out.push(key.to_string());
                } else if ent.file_type()?.is_dir() && !dir_is_empty(&ent.path())? {
                    out.push(format!("{name}/"));
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

/// A folder whose values were all deleted is not listed (as in Vault).
fn dir_is_empty(dir: &Path) -> std::io::Result<bool> {
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('_') || (ent.file_type()?.is_dir() && !dir_is_empty(&ent.path())?) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        crate::storage::conformance::run(&FileStorage::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn files_are_private_and_no_temp_files_remain() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::open(dir.path()).unwrap();
        s.put("core/keyring", b"x").await.unwrap();
        assert!(
            s.put_if("core/keyring", b"y", Condition::Absent)
                .await
                .is_ok()
        );
        let file = dir.path().join("core/_keyring");
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(dir.path().join("core"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let names: Vec<_> = fs::read_dir(dir.path().join("core"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["_keyring".to_string()]);
    }
}
