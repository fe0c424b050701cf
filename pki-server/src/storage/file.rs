//! File storage, the embedded default: one file per key below a directory,
//! made durable by a write-ahead log.
//!
//! Key `a/b/c` lives at `DIR/a/b/_c` (the `_` keeps values and folders apart, as
//! Vault's file backend does). A write first appends a record to the log in
//! `DIR/_/` and waits until it is durable: one fdatasync shared by every
//! writer waiting at the same time (group commit, see [`super::wal`]). Then it
//! changes the key's file *without* fsync: a temp file renamed over the
//! target, or for create-if-absent an unnamed `O_TMPFILE` file hard-linked
//! into place (named temp file as fallback). Files are 0600, folders 0700. A
//! write returns only after both, so a write that returned is durable (in the
//! log, which a restart replays) and visible to reads (in the file).
//! Checkpoints (`syncfs`, then the segment is deleted) keep the log short.
//!
//! Concurrency: writes of the same key are serialised inside this process (a
//! striped lock), so compare-and-swap's read-compare-log-rename is atomic and a
//! key's log records are in the order of its file changes; writes of different
//! keys run in parallel. One server owns a directory: opening takes an
//! exclusive lock on it.

use super::wal::{self, Record, Wal};
use super::{
    Condition, Entry, Result, Storage, StorageError, content_version, validate_key, validate_prefix,
};
use async_trait::async_trait;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Number of per-key write locks (keys hash onto them).
const KEY_LOCKS: usize = 64;

/// Storage in a local directory.
#[derive(Debug, Clone)]
pub struct FileStorage {
    root: Arc<PathBuf>,
    /// Serialise writes of one key so read-compare-log-rename is atomic in-process.
    locks: Arc<[tokio::sync::Mutex<()>]>,
    wal: Arc<Wal>,
}

impl FileStorage {
    /// Open (creating if needed, mode 0700) the storage directory, replaying
    /// the write-ahead log an earlier run left. Fails if another handle (in
    /// this or another process) has it open.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        Self::open_with(root, wal::SEGMENT_MAX)
    }

    fn open_with(root: &Path, segment_max: u64) -> std::io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        let wal = Wal::open(root, segment_max, |rec| replay(root, rec))?;
        Ok(Self {
            root: Arc::new(root.to_path_buf()),
            locks: (0..KEY_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            wal: Arc::new(wal),
        })
    }

    fn path_of(&self, key: &str) -> PathBuf {
        path_of(&self.root, key)
    }

    /// The write lock of `key`.
    fn lock_of(&self, key: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.locks[(h.finish() % self.locks.len() as u64) as usize]
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

fn path_of(root: &Path, key: &str) -> PathBuf {
    let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
    let mut p = root.join(dir);
    p.push(format!("_{name}"));
    p
}

/// Redo one logged change (opening after a crash): idempotent.
fn replay(root: &Path, rec: &Record<'_>) -> std::io::Result<()> {
    match rec {
        Record::Put { key, value } => put_file(&path_of(root, key), value),
        Record::Delete { key } => remove_opt(&path_of(root, key)).map(|_| ()),
    }
}

/// Remove `path`; `false` if it was not there.
fn remove_opt(path: &Path) -> std::io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn exists(path: &Path) -> std::io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
            Ok(false)
        }
        Err(e) => Err(e),
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

fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("."))
}

/// Create `dir` (0700) if missing (durable at the next checkpoint; until
/// then the log can recreate it).
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Write `value` to a fresh temp file next to `target` (no fsync: the log
/// holds the value until the next checkpoint); returns its path.
fn write_temp(target: &Path, value: &[u8]) -> std::io::Result<PathBuf> {
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other("storage path has no parent"))?;
    ensure_dir(dir)?;
    let mut rnd = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut rnd)
        .map_err(|_| std::io::Error::other("no randomness"))?;
    let tmp = dir.join(format!(".tmp-{}", hex::encode(rnd)));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    if let Err(e) = f.write_all(value) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Write `value` over `target`, atomically for readers.
fn put_file(target: &Path, value: &[u8]) -> std::io::Result<()> {
    let tmp = write_temp(target, value)?;
    if let Err(e) = fs::rename(&tmp, target) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Set once O_TMPFILE or the /proc link turned out not to work here.
static NO_TMPFILE: AtomicBool = AtomicBool::new(false);

/// Create-if-absent through an unnamed file: `open(dir, O_TMPFILE)`, write,
/// then `linkat` it into place (fails atomically if the target exists).
/// Compared with a named temp file this spares the folder two entry changes
/// (create and unlink of the temp name) under its lock, and leaves nothing
/// behind after a crash. `None`: not supported here, use a named temp file.
fn create_unnamed(target: &Path, value: &[u8]) -> std::io::Result<Option<bool>> {
    use rustix::fs::{AtFlags, CWD, Mode, OFlags};
    use rustix::io::Errno;
    use std::os::fd::AsRawFd;
    if NO_TMPFILE.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let unsupported = || {
        NO_TMPFILE.store(true, Ordering::Relaxed);
        Ok(None)
    };
    let fd = match rustix::fs::open(
        parent(target),
        OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => fd,
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => return unsupported(),
        Err(e) => return Err(e.into()),
    };
    let mut f = File::from(fd);
    f.write_all(value)?;
    // Linking an O_TMPFILE file by descriptor needs /proc (AT_EMPTY_PATH needs
    // CAP_DAC_READ_SEARCH).
    let by_fd = format!("/proc/self/fd/{}", f.as_raw_fd());
    match rustix::fs::linkat(CWD, by_fd.as_str(), CWD, target, AtFlags::SYMLINK_FOLLOW) {
        Ok(()) => Ok(Some(true)),
        Err(Errno::EXIST) => Ok(Some(false)),
        Err(Errno::NOENT | Errno::XDEV | Errno::PERM) if !Path::new("/proc/self/fd").is_dir() => {
            unsupported()
        }
        Err(e) => Err(e.into()),
    }
}

/// Create `target` with `value` unless it exists; `false` if it did.
fn create_file(target: &Path, value: &[u8]) -> std::io::Result<bool> {
    ensure_dir(parent(target))?;
    if let Some(created) = create_unnamed(target, value)? {
        return Ok(created);
    }
    let tmp = write_temp(target, value)?;
    let res = fs::hard_link(&tmp, target);
    let _ = fs::remove_file(&tmp);
    match res {
        Ok(()) => Ok(true),
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
        let (path, wal, key_owned, value) = (
            self.path_of(key),
            self.wal.clone(),
            key.to_string(),
            value.to_vec(),
        );
        // Hold the key's lock so an unconditional put cannot interleave with a
        // conditional one's compare, log and rename.
        let _g = self.lock_of(key).lock().await;
        Self::blocking(move || {
            let applying = wal.commit(&Record::Put {
                key: &key_owned,
                value: &value,
            })?;
            put_file(&path, &value)?;
            drop(applying);
            Ok(())
        })
        .await
    }

    async fn put_if(&self, key: &str, value: &[u8], cond: Condition) -> Result<bool> {
        validate_key(key)?;
        let (path, wal, key_owned, value) = (
            self.path_of(key),
            self.wal.clone(),
            key.to_string(),
            value.to_vec(),
        );
        let _g = self.lock_of(key).lock().await;
        Self::blocking(move || {
            let holds = match &cond {
                Condition::Absent => !exists(&path)?,
                Condition::Matches(v) => {
                    read_opt(&path)?.is_some_and(|cur| content_version(&cur) == *v)
                }
            };
            if !holds {
                return Ok(false);
            }
            let applying = wal.commit(&Record::Put {
                key: &key_owned,
                value: &value,
            })?;
            // Under the key's lock the condition still holds; if another
            // process created the file anyway, the logged value wins as it
            // will on replay.
            let created = matches!(cond, Condition::Absent) && create_file(&path, &value)?;
            if !created {
                put_file(&path, &value)?;
            }
            drop(applying);
            Ok(true)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let (path, wal, key_owned) = (self.path_of(key), self.wal.clone(), key.to_string());
        let _g = self.lock_of(key).lock().await;
        Self::blocking(move || {
            if !exists(&path)? {
                return Ok(());
            }
            let applying = wal.commit(&Record::Delete { key: &key_owned })?;
            remove_opt(&path)?;
            drop(applying);
            Ok(())
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
                    // `_` alone is the write-ahead log's folder, never a key.
                    if !key.is_empty() {
                        out.push(key.to_string());
                    }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_to_one_folder_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("certs/{i:04}");
                assert!(
                    s.put_if(&key, &i.to_be_bytes(), Condition::Absent)
                        .await
                        .unwrap()
                );
                s.put(&format!("other/{i:04}"), b"x").await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for i in 0..64u32 {
            let e = s.get(&format!("certs/{i:04}")).await.unwrap().unwrap();
            assert_eq!(e.value, i.to_be_bytes());
        }
        assert_eq!(s.list("certs/").await.unwrap().len(), 64);
        let syncs = s.wal.syncs();
        assert!(
            (1..=128).contains(&syncs),
            "{syncs} log fsyncs for 128 writes"
        );
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
        // Create-if-absent (the unnamed-file path) also makes 0600 files.
        assert!(s.put_if("certs/a", b"z", Condition::Absent).await.unwrap());
        let mode = fs::metadata(dir.path().join("certs/_a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(s.get("certs/a").await.unwrap().unwrap().value, b"z");
        let names: Vec<_> = fs::read_dir(dir.path().join("certs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["_a".to_string()]);
    }

    fn segments(root: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = fs::read_dir(root.join(wal::DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_writes_survive_a_crash_that_lost_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::open(dir.path()).unwrap();
        s.put("core/keyring", b"old").await.unwrap();
        s.put("certs/gone", b"to delete").await.unwrap();
        drop(s); // clean close: all of that is checkpointed
        let s = FileStorage::open(dir.path()).unwrap();
        for i in 0..20u32 {
            assert!(
                s.put_if(
                    &format!("certs/{i:02}"),
                    &i.to_be_bytes(),
                    Condition::Absent
                )
                .await
                .unwrap()
            );
        }
        s.put("core/keyring", b"new").await.unwrap();
        s.delete("certs/gone").await.unwrap();
        s.wal.crash();
        drop(s);
        // Power loss: none of the unsynced file changes reached the disk.
        fs::write(dir.path().join("core/_keyring"), b"old").unwrap();
        for i in 0..20u32 {
            fs::remove_file(dir.path().join(format!("certs/_{i:02}"))).unwrap();
        }
        fs::write(dir.path().join("certs/_gone"), b"to delete").unwrap();
        assert_eq!(segments(dir.path()).len(), 1, "the log is still there");

        let s = FileStorage::open(dir.path()).unwrap();
        for i in 0..20u32 {
            let e = s.get(&format!("certs/{i:02}")).await.unwrap();
            assert_eq!(e.map(|e| e.value), Some(i.to_be_bytes().to_vec()), "{i}");
        }
        assert_eq!(s.get("core/keyring").await.unwrap().unwrap().value, b"new");
        assert!(s.get("certs/gone").await.unwrap().is_none());
        assert_eq!(s.list("certs/").await.unwrap().len(), 20);
        // Replayed, synced and removed: only the fresh segment is left.
        assert_eq!(segments(dir.path()).len(), 1);
        assert_eq!(fs::metadata(&segments(dir.path())[0]).unwrap().len(), 16);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_log_tail_is_ignored_and_the_rest_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::open(dir.path()).unwrap();
        s.put("a/one", b"1").await.unwrap();
        s.put("a/two", b"2").await.unwrap();
        s.wal.crash();
        drop(s);
        let seg = segments(dir.path()).pop().unwrap();
        let intact = fs::read(&seg).unwrap();
        for tail in [
            // half a record header
            vec![9u8, 0, 0],
            // a whole frame whose CRC is wrong
            {
                let mut f = vec![6u8, 0, 0, 0, 1, 2, 3, 4];
                f.extend_from_slice(&[1, 1, 0, b'x', 0, 0]);
                f
            },
            // a length running past the end
            vec![255u8, 255, 0, 0, 0, 0, 0, 0, 1],
        ] {
            fs::remove_dir_all(dir.path().join("a")).unwrap();
            let mut torn = intact.clone();
            torn.extend_from_slice(&tail);
            fs::write(&seg, &torn).unwrap();
            let s = FileStorage::open(dir.path()).unwrap();
            assert_eq!(s.get("a/one").await.unwrap().unwrap().value, b"1");
            assert_eq!(s.get("a/two").await.unwrap().unwrap().value, b"2");
            assert!(s.get("x").await.unwrap().is_none());
            s.wal.crash();
            drop(s);
            // Put the crashed segment back for the next tail.
            for p in segments(dir.path()) {
                fs::remove_file(p).unwrap();
            }
        }
        // A record cut in the middle: the writes before it are kept.
        fs::remove_dir_all(dir.path().join("a")).unwrap();
        fs::write(&seg, &intact[..intact.len() - 1]).unwrap();
        let s = FileStorage::open(dir.path()).unwrap();
        assert_eq!(s.get("a/one").await.unwrap().unwrap().value, b"1");
        assert!(
            s.get("a/two").await.unwrap().is_none(),
            "torn record dropped"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_rotate_segments_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::open_with(dir.path(), 4096).unwrap();
        let value = vec![0xa5u8; 700];
        let mut tasks = Vec::new();
        for t in 0..8u32 {
            let (s, value) = (s.clone(), value.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..25u32 {
                    s.put(&format!("k/{t}-{i}"), &value).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while s.wal.checkpoints() < 10 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            s.wal.checkpoints() >= 10,
            "{} checkpoints",
            s.wal.checkpoints()
        );
        assert!(
            segments(dir.path()).len() < 10,
            "checkpointed segments are deleted"
        );
        drop(s);
        assert!(
            segments(dir.path()).is_empty(),
            "a clean close empties the log"
        );
        let s = FileStorage::open(dir.path()).unwrap();
        assert_eq!(s.list("k/").await.unwrap().len(), 200);
        assert_eq!(s.get("k/7-24").await.unwrap().unwrap().value, value);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sixteen_concurrent_creates_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::open(dir.path()).unwrap();
        for round in 0..10 {
            let key = format!("certs/race-{round}");
            let tasks: Vec<_> = (0..16u8)
                .map(|i| {
                    let (s, key) = (s.clone(), key.clone());
                    tokio::spawn(async move { (i, s.put_if(&key, &[i], Condition::Absent).await) })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tasks {
                let (i, won) = t.await.unwrap();
                if won.unwrap() {
                    winners.push(i);
                }
            }
            assert_eq!(winners.len(), 1, "{winners:?}");
            assert_eq!(s.get(&key).await.unwrap().unwrap().value, vec![winners[0]]);
        }
    }

    #[tokio::test]
    async fn the_log_is_private_and_holds_values_only_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::open(dir.path()).unwrap();
        let value = b"\x01\x02opaque-ciphertext-canary\xff";
        s.put("logical/x/canary", value).await.unwrap();
        s.wal.crash();
        let log = segments(dir.path()).pop().unwrap();
        drop(s);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(wal::DIR)), 0o700);
        assert_eq!(mode(&log), 0o600);
        let bytes = fs::read(&log).unwrap();
        let key = b"logical/x/canary";
        // header 16 + frame 8 + op 1 + key length 2 + key + value, nothing else
        assert_eq!(bytes.len(), 16 + 8 + 3 + key.len() + value.len());
        assert!(bytes.ends_with(value), "the value exactly as given");
        assert_eq!(bytes.windows(value.len()).filter(|w| w == value).count(), 1);
    }

    #[tokio::test]
    async fn a_second_handle_on_the_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStorage::open(dir.path()).unwrap();
        let err = FileStorage::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        a.put("k", b"v").await.unwrap();
        drop(a);
        let b = FileStorage::open(dir.path()).unwrap();
        assert_eq!(b.get("k").await.unwrap().unwrap().value, b"v");
        assert!(
            b.list("").await.unwrap() == vec!["k".to_string()],
            "the log is not a key"
        );
    }

    /// The child side of `acknowledged_writes_survive_sigkill`: 8 writers
    /// log each operation's intent, do it, then log its acknowledgement.
    fn sigkill_child(root: &Path, acks: &Path, round: u32) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = FileStorage::open(root).unwrap();
            let acks = Arc::new(std::sync::Mutex::new(
                OpenOptions::new().append(true).open(acks).unwrap(),
            ));
            let line = |acks: &std::sync::Mutex<File>, l: String| {
                acks.lock().unwrap().write_all(l.as_bytes()).unwrap();
            };
            let tasks: Vec<_> = (0..8u32)
                .map(|t| {
                    let (s, acks) = (s.clone(), acks.clone());
                    tokio::spawn(async move {
                        for i in 0u32.. {
                            let (op, key, value) = match i % 4 {
                                // overwrite an earlier key of this writer
                                2 => ("P", format!("r/{t}/{}", i / 2), format!("{round}.{i}")),
                                3 => ("D", format!("r/{t}/{}", i / 3), String::new()),
                                _ => ("C", format!("r/{t}/{round}-{i}"), format!("{round}.{i}")),
                            };
                            line(&acks, format!("{t} {op} {key} {value}\n"));
                            match op {
                                "P" => s.put(&key, value.as_bytes()).await.unwrap(),
                                "D" => s.delete(&key).await.unwrap(),
                                _ => assert!(
                                    s.put_if(&key, value.as_bytes(), Condition::Absent)
                                        .await
                                        .unwrap()
                                ),
                            }
                            line(&acks, format!("{t} A\n"));
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        });
    }

    #[test]
    fn acknowledged_writes_survive_sigkill() {
        use std::collections::HashMap;
        use std::process::{Command, Stdio};
        if let (Ok(root), Ok(acks), Ok(round)) = (
            std::env::var("PKI_WAL_CHILD_ROOT"),
            std::env::var("PKI_WAL_CHILD_ACKS"),
            std::env::var("PKI_WAL_CHILD_ROUND"),
        ) {
            sigkill_child(Path::new(&root), Path::new(&acks), round.parse().unwrap());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let acks = dir.path().join("acks");
        fs::write(&acks, b"").unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut total_acked = 0;
        for round in 0..6u32 {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "storage::file::tests::acknowledged_writes_survive_sigkill",
                    "--test-threads=1",
                ])
                .env("PKI_WAL_CHILD_ROOT", &root)
                .env("PKI_WAL_CHILD_ACKS", &acks)
                .env("PKI_WAL_CHILD_ROUND", round.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Kill it somewhere between 80 and 400 ms in (after it has written).
            let jitter = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                % 320;
            std::thread::sleep(std::time::Duration::from_millis(80 + u64::from(jitter)));
            child.kill().unwrap();
            child.wait().unwrap();

            // Expected state: every acknowledged operation; a writer's last,
            // unacknowledged operation may or may not have happened.
            let text = fs::read_to_string(&acks).unwrap();
            let mut want: HashMap<String, Option<String>> = HashMap::new();
            let mut intent: HashMap<String, (String, Option<String>)> = HashMap::new();
            let mut acked = 0;
            for l in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                let f: Vec<&str> = l.trim_end_matches('\n').splitn(4, ' ').collect();
                match f[..] {
                    [t, "A"] => {
                        let (k, v) = intent.remove(t).unwrap();
                        want.insert(k, v);
                        acked += 1;
                    }
                    [t, "X"] => {
                        intent.remove(t);
                    }
                    [t, "D", k, _] => {
                        intent.insert(t.into(), (k.into(), None));
                    }
                    [t, _, k, v] => {
                        intent.insert(t.into(), (k.into(), Some(v.into())));
                    }
                    _ => panic!("bad ack line {l:?}"),
                }
            }
            assert!(
                acked > total_acked,
                "round {round}: the child acknowledged writes"
            );
            total_acked = acked;
            let s = FileStorage::open(&root).unwrap();
            rt.block_on(async {
                for (k, v) in &want {
                    let got = s
                        .get(k)
                        .await
                        .unwrap()
                        .map(|e| String::from_utf8(e.value).unwrap());
                    let in_flight = intent.values().any(|(ik, iv)| ik == k && *iv == got);
                    assert!(
                        got == *v || in_flight,
                        "round {round}: {k} is {got:?}, acknowledged {v:?}"
                    );
                }
            });
            // Settle the in-flight operations as they turned out, so the
            // next round's expectation is exact.
            let mut settle = String::new();
            for (t, (k, v)) in intent {
                let got = rt
                    .block_on(s.get(&k))
                    .unwrap()
                    .map(|e| String::from_utf8(e.value).unwrap());
                settle.push_str(&format!("{t} {}\n", if got == v { "A" } else { "X" }));
            }
            OpenOptions::new()
                .append(true)
                .open(&acks)
                .unwrap()
                .write_all(settle.as_bytes())
                .unwrap();
            // Alternate a clean close and a crash-like close before the next child.
            if round % 2 == 1 {
                s.wal.crash();
            }
            drop(s);
        }
        assert!(total_acked > 100, "only {total_acked} acknowledged writes");
    }
}
