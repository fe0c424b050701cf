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
//! one (see [`DirSync`]); they wait without holding a thread. No fsync is
//! skipped or deferred past the return of a write. One server owns a directory.

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
use std::sync::{Arc, Mutex, PoisonError};

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
type Outcome = std::result::Result<(), (ErrorKind, String)>;
/// One folder fsync: writers subscribe, the syncing thread publishes the outcome.
type Round = tokio::sync::watch::Sender<Option<Outcome>>;
/// How a folder is fsynced (tests inject failures and delays).
type SyncFn = Arc<dyn Fn(&Path) -> std::io::Result<()> + Send + Sync>;

/// Group commit of one folder's fsyncs.
///
/// A writer calls [`DirSyncs::join`] on its blocking thread after its rename
/// or link. It joins the *next* round, one whose fsync has not started, so that
/// fsync covers its change. If no fsync of the folder is running it runs the
/// round itself, right there; otherwise it waits for the round's outcome
/// without holding a thread, and the thread that ends the running fsync starts
/// the waiting round on the blocking pool (then keeps running rounds while
/// writers keep joining them). So with N
/// writers in flight there are about N / (writers per round) fsyncs instead of
/// N, and each writer still returns only after an fsync that began after its
/// change succeeded (or with that fsync's error).
#[derive(Debug, Default)]
struct DirSync {
    state: Mutex<DirState>,
}

#[derive(Debug, Default)]
struct DirState {
    /// A thread is running this folder's rounds.
    syncing: bool,
    /// The round that has not started yet (the one new writers join).
    next: Option<Arc<Round>>,
    /// fsyncs done.
    syncs: u64,
}

impl DirSync {
    fn lock(&self) -> std::sync::MutexGuard<'_, DirState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called on a blocking thread right after the change: join the next
    /// round, and run it here and now if no fsync of the folder is running (no
    /// hand-off at low concurrency). Otherwise return the round to wait for.
    fn join(self: &Arc<Self>, dir: &Path, run: &SyncFn) -> Joined {
        let (mut outcome, lead) = {
            let mut st = self.lock();
            let rx = st
                .next
                .get_or_insert_with(|| Arc::new(tokio::sync::watch::channel(None).0))
                .subscribe();
            let lead = if st.syncing {
                None
            } else {
                st.syncing = true;
                st.next.take()
            };
            (rx, lead)
        };
        match lead {
            Some(round) => {
                let res = run(dir).map_err(|e| (e.kind(), e.to_string()));
                round.send_replace(Some(res));
                // Writers that joined meanwhile get a thread of their own.
                if let Some(next) = self.finish_round() {
                    self.run_rounds(next, dir, run);
                }
                Joined::Done(outcome_of(outcome.borrow_and_update().clone()))
            }
            None => Joined::Wait(outcome),
        }
    }

    /// After a round: count it, and take the next one if writers wait (else
    /// stop syncing).
    fn finish_round(&self) -> Option<Arc<Round>> {
        let mut st = self.lock();
        st.syncs += 1;
        let next = st.next.take();
        st.syncing = next.is_some();
        next
    }

    /// Run `first` and the rounds after it on the blocking pool until nobody waits.
    fn run_rounds(self: &Arc<Self>, first: Arc<Round>, dir: &Path, run: &SyncFn) {
        let (me, dir, run) = (self.clone(), dir.to_path_buf(), run.clone());
        tokio::task::spawn_blocking(move || {
            let mut round = first;
            loop {
                let res = run(&dir).map_err(|e| (e.kind(), e.to_string()));
                round.send_replace(Some(res));
                match me.finish_round() {
                    Some(r) => round = r,
                    None => return,
                }
            }
        });
    }
}

/// What [`DirSync::join`] left to do.
enum Joined {
    /// This thread ran the fsync: its outcome.
    Done(std::io::Result<()>),
    /// An fsync was running: wait for the next round's outcome.
    Wait(tokio::sync::watch::Receiver<Option<Outcome>>),
}

impl Joined {
    async fn wait(self) -> std::io::Result<()> {
        match self {
            Joined::Done(r) => r,
            Joined::Wait(mut rx) => match rx.wait_for(Option::is_some).await {
                Ok(v) => outcome_of(v.clone()),
                Err(_) => Err(std::io::Error::other("folder fsync abandoned")),
            },
        }
    }
}

fn outcome_of(o: Option<Outcome>) -> std::io::Result<()> {
    match o {
        Some(Ok(())) => Ok(()),
        Some(Err((kind, msg))) => Err(std::io::Error::new(kind, msg)),
        None => Err(std::io::Error::other("folder fsync did not run")),
    }
}

/// One [`DirSync`] per folder.
struct DirSyncs {
    dirs: Mutex<HashMap<PathBuf, Arc<DirSync>>>,
    run: SyncFn,
}

impl Default for DirSyncs {
    fn default() -> Self {
        Self {
            dirs: Mutex::default(),
            run: Arc::new(sync_dir),
        }
    }
}

impl std::fmt::Debug for DirSyncs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirSyncs").finish_non_exhaustive()
    }
}

impl DirSyncs {
    /// On a blocking thread, right after changing an entry in `dir`: start
    /// making it durable (group commit); `.wait()` on the result.
    fn join(&self, dir: &Path) -> Joined {
        let ds = self
            .dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(dir.to_path_buf())
            .or_default()
            .clone();
        ds.join(dir, &self.run)
    }

    #[cfg(test)]
    fn total(&self) -> u64 {
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|d| d.lock().syncs)
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

/// Write `value` over `target` (the caller then syncs the folder).
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

/// Create `target` with `value` unless it exists; `false` if it did (the
/// caller then syncs the folder if it was created).
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
        let path = self.path_of(key);
        let dir = parent(&path).to_path_buf();
        let value = value.to_vec();
        // Hold the key's lock so an unconditional put cannot interleave with a
        // conditional one's compare and rename.
        let dirs = self.dirs.clone();
        let _g = self.lock_of(key).lock().await;
        Self::blocking(move || {
            put_file(&path, &value)?;
            Ok(dirs.join(&dir))
        })
        .await?
        .wait()
        .await
        .map_err(StorageError::from)
    }

    async fn put_if(&self, key: &str, value: &[u8], cond: Condition) -> Result<bool> {
        validate_key(key)?;
        let path = self.path_of(key);
        let dir = parent(&path).to_path_buf();
        let value = value.to_vec();
        let dirs = self.dirs.clone();
        let _g = self.lock_of(key).lock().await;
        let joined = Self::blocking(move || {
            let written = match cond {
                Condition::Absent => create_file(&path, &value)?,
                Condition::Matches(v) => match read_opt(&path)? {
                    Some(cur) if content_version(&cur) == v => {
                        put_file(&path, &value)?;
                        true
                    }
                    _ => false,
                },
            };
            Ok(written.then(|| dirs.join(&dir)))
        })
        .await?;
        match joined {
            Some(j) => {
                j.wait().await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let path = self.path_of(key);
        let dir = parent(&path).to_path_buf();
        let dirs = self.dirs.clone();
        let _g = self.lock_of(key).lock().await;
        let joined = Self::blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(Some(dirs.join(&dir))),
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
                Ok(None)
            }
            Err(e) => Err(e),
        })
        .await?;
        if let Some(j) = joined {
            j.wait().await?;
        }
        Ok(())
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_arriving_during_an_fsync_share_the_next_one() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        // The first fsync blocks until released; the second one fails.
        let run: SyncFn = {
            let calls = calls.clone();
            Arc::new(move |_: &Path| match calls.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    let _ = gate.lock().unwrap().recv();
                    Ok(())
                }
                1 => Err(std::io::Error::other("disk gone")),
                _ => Ok(()),
            })
        };
        let dirs = Arc::new(DirSyncs {
            dirs: Mutex::default(),
            run,
        });
        let dir = Path::new("/nowhere");
        let ds = dirs
            .dirs
            .lock()
            .unwrap()
            .entry(dir.to_path_buf())
            .or_default()
            .clone();
        let spawn = || {
            let dirs = dirs.clone();
            tokio::spawn(async move {
                let j = tokio::task::spawn_blocking(move || dirs.join(Path::new("/nowhere")))
                    .await
                    .unwrap();
                j.wait().await
            })
        };
        let leader = spawn();
        while !ds.lock().syncing {
            tokio::task::yield_now().await;
        }
        let followers: Vec<_> = (0..8).map(|_| spawn()).collect();
        while ds.lock().next.as_ref().map_or(0, |r| r.receiver_count()) < 8 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        assert!(leader.await.unwrap().is_ok());
        for f in followers {
            let err = f.await.unwrap().unwrap_err();
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
        assert_eq!(dirs.total(), 2);
        // A later writer gets a fresh round.
        assert!(spawn().await.unwrap().is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(!ds.lock().syncing);
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
