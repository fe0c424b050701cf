//! File storage, the embedded default: one file per key below a directory.
//!
//! Key `a/b/c` lives at `DIR/a/b/_c` (the `_` keeps values and folders apart, as
//! Vault's file backend does). Every write is a temp file in the same folder,
//! fsynced, renamed over the target (or hard-linked for create-if-absent, which
//! fails atomically if the target exists; the temp file is an unnamed O_TMPFILE
//! one where the file system has them), then the folder is fsynced; a folder
//! created for the write has its own entry fsynced too. Files are 0600 and
//! folders 0700. A write returns only once all of that is on disk.
//!
//! Concurrency: writes of the same key are serialised inside this process (a
//! striped lock), so compare-and-swap's read-compare-rename is atomic; writes
//! of different keys run in parallel. Their folder fsyncs are group-committed:
//! a writer waits for one fsync of its folder that *started after* its rename
//! or link, and the writers that arrive while one fsync runs all share the next
//! one (see [`DirSync`]). No fsync is skipped or deferred past the return of a
//! write. One server owns a directory.

use super::{
    Condition, Entry, Result, Storage, StorageError, content_version, validate_key, validate_prefix,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

/// Number of per-key write locks (keys hash onto them).
const KEY_LOCKS: usize = 64;

/// Storage in a local directory.
#[derive(Debug, Clone)]
pub struct FileStorage {
    root: Arc<PathBuf>,
    /// Serialise writes of one key so read-compare-rename is atomic in-process.
    locks: Arc<[tokio::sync::Mutex<()>]>,
    /// Group commit of folder fsyncs.
    dirs: Arc<DirSyncs>,
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
            locks: (0..KEY_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            dirs: Arc::default(),
        })
    }

    fn path_of(&self, key: &str) -> PathBuf {
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let mut p = self.root.join(dir);
        p.push(format!("_{name}"));
        p
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

    /// Folder fsyncs done since open (for tests of the group commit).
    #[cfg(test)]
    fn dir_syncs(&self) -> u64 {
        self.dirs.total()
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

fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("."))
}

/// The outcome of one folder fsync, shared by every writer that waited for it.
type Round = OnceLock<std::result::Result<(), (ErrorKind, String)>>;

/// Group commit of one folder's fsyncs.
///
/// A writer calls [`DirSync::sync`] after its rename or link. It joins the
/// *next* round, one whose fsync has not started, so that fsync covers its
/// change. If no fsync is running it runs the round itself; otherwise it waits,
/// and when the running fsync ends one waiter runs the next round for everyone
/// who joined it. So with N writers in flight there are about N / (writers per
/// fsync) fsyncs instead of N, and each writer still returns only after an
/// fsync that began after its change succeeded (or with that fsync's error).
#[derive(Debug, Default)]
struct DirSync {
    state: Mutex<DirState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct DirState {
    /// An fsync of this folder is running.
    syncing: bool,
    /// The round that has not started yet (the one new writers join).
    next: Option<Arc<Round>>,
    /// Writers waiting (tests use it to line up rounds).
    waiting: usize,
    /// fsyncs done.
    syncs: u64,
}

impl DirSync {
    /// Wait for an fsync (`run`) that started after this call.
    fn sync(&self, run: impl Fn() -> std::io::Result<()>) -> std::io::Result<()> {
        let lock = || self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut st = lock();
        let round = st.next.get_or_insert_with(Default::default).clone();
        loop {
            if let Some(res) = round.get() {
                return res
                    .clone()
                    .map_err(|(kind, msg)| std::io::Error::new(kind, msg));
            }
            if !st.syncing {
                // Nobody is syncing and our round is unresolved, so nobody took
                // it: it is still `next`. Run it for everyone who joined.
                debug_assert!(st.next.as_ref().is_some_and(|n| Arc::ptr_eq(n, &round)));
                st.next = None;
                st.syncing = true;
                drop(st);
                let res = run().map_err(|e| (e.kind(), e.to_string()));
                let _ = round.set(res);
                st = lock();
                st.syncing = false;
                st.syncs += 1;
                self.changed.notify_all();
            } else {
                st.waiting += 1;
                st = self
                    .changed
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
                st.waiting -= 1;
            }
        }
    }
}

/// One [`DirSync`] per folder.
#[derive(Debug, Default)]
struct DirSyncs {
    dirs: Mutex<HashMap<PathBuf, Arc<DirSync>>>,
}

impl DirSyncs {
    /// Make the entries changed in `dir` so far durable (group commit).
    fn sync(&self, dir: &Path) -> std::io::Result<()> {
        let ds = self
            .dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(dir.to_path_buf())
            .or_default()
            .clone();
        ds.sync(|| sync_dir(dir))
    }

    #[cfg(test)]
    fn total(&self) -> u64 {
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|d| d.state.lock().unwrap_or_else(PoisonError::into_inner).syncs)
            .sum()
    }
}

/// Create `dir` (0700) if missing, and make each new folder's entry durable.
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(q) => p = q,
            None => break,
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    for m in missing.iter().rev() {
        sync_dir(parent(m))?;
    }
    Ok(())
}

/// Write `value` to a fresh temp file next to `target`, fsynced; returns its path.
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
    let res = f.write_all(value).and_then(|_| f.sync_all());
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

fn put_sync(dirs: &DirSyncs, target: &Path, value: &[u8]) -> std::io::Result<()> {
    let tmp = write_temp(target, value)?;
    if let Err(e) = fs::rename(&tmp, target) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    dirs.sync(parent(target))
}

/// Set once O_TMPFILE or the /proc link turned out not to work here.
static NO_TMPFILE: AtomicBool = AtomicBool::new(false);

/// Create-if-absent through an unnamed file: `open(dir, O_TMPFILE)`, write,
/// fsync, then `linkat` it into place (fails atomically if the target exists).
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
    f.sync_all()?;
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

fn create_sync(dirs: &DirSyncs, target: &Path, value: &[u8]) -> std::io::Result<bool> {
    ensure_dir(parent(target))?;
    if let Some(created) = create_unnamed(target, value)? {
        if created {
            dirs.sync(parent(target))?;
        }
        return Ok(created);
    }
    let tmp = write_temp(target, value)?;
    let res = fs::hard_link(&tmp, target);
    let _ = fs::remove_file(&tmp);
    match res {
        Ok(()) => {
            dirs.sync(parent(target))?;
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
        let dirs = self.dirs.clone();
        // Hold the key's lock so an unconditional put cannot interleave with a
        // conditional one's compare and rename.
        let _g = self.lock_of(key).lock().await;
        Self::blocking(move || put_sync(&dirs, &path, &value)).await
    }

    async fn put_if(&self, key: &str, value: &[u8], cond: Condition) -> Result<bool> {
        validate_key(key)?;
        let path = self.path_of(key);
        let value = value.to_vec();
        let dirs = self.dirs.clone();
        let _g = self.lock_of(key).lock().await;
        Self::blocking(move || match cond {
            Condition::Absent => create_sync(&dirs, &path, &value),
            Condition::Matches(v) => match read_opt(&path)? {
                Some(cur) if content_version(&cur) == v => {
                    put_sync(&dirs, &path, &value).map(|_| true)
                }
                _ => Ok(false),
            },
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let path = self.path_of(key);
        let dirs = self.dirs.clone();
        let _g = self.lock_of(key).lock().await;
        Self::blocking(move || match fs::remove_file(&path) {
            Ok(()) => dirs.sync(parent(&path)),
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

    #[test]
    fn writers_arriving_during_an_fsync_share_the_next_one() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ds = Arc::new(DirSync::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        // The first fsync blocks until released; the second one fails.
        let run = {
            let calls = calls.clone();
            Arc::new(move || -> std::io::Result<()> {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => {
                        let _ = gate.lock().unwrap().recv();
                        Ok(())
                    }
                    1 => Err(std::io::Error::other("disk gone")),
                    _ => Ok(()),
                }
            })
        };
        let state = |ds: &DirSync| {
            let st = ds.state.lock().unwrap();
            (st.syncing, st.waiting)
        };
        let spawn = |ds: &Arc<DirSync>| {
            let (ds, run) = (ds.clone(), run.clone());
            std::thread::spawn(move || ds.sync(|| run()))
        };
        let leader = spawn(&ds);
        while !state(&ds).0 {
            std::thread::yield_now();
        }
        let followers: Vec<_> = (0..8).map(|_| spawn(&ds)).collect();
        while state(&ds).1 < 8 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        assert!(leader.join().unwrap().is_ok());
        for f in followers {
            let err = f.join().unwrap().unwrap_err();
            assert_eq!(
                err.to_string(),
                "disk gone",
                "every writer of a failed round fails"
            );
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "8 followers shared one fsync"
        );
        assert_eq!(ds.state.lock().unwrap().syncs, 2);
        // A later writer gets a fresh round.
        assert!(ds.sync(|| run()).is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
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
        let syncs = s.dir_syncs();
        assert!(
            (2..=128).contains(&syncs),
            "{syncs} folder fsyncs for 128 writes"
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
}
