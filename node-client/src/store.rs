//! A directory whose files are replaced together, atomically.
//!
//! The scheme is kubelet's `AtomicWriter`: every version of the file set is
//! written into a fresh hidden folder (`..v-<random>`), each file fsynced with
//! its own mode, the folder fsynced; then a symlink `..data` is pointed at it by
//! renaming a new link over the old one (atomic), and the directory is fsynced.
//! The visible names (`DIR/etcd.pem`) are symlinks to `..data/etcd.pem`, made
//! once. A reader opening `DIR/etcd.pem` and `DIR/etcd-key.pem` therefore sees
//! either the old set or the new set, never a mix, and never a partial file,
//! whatever point the writer is killed at. The previous version is removed
//! after the switch; a leftover from a killed writer is removed by the next one.
//! A `..data` that names anything but one of the store's own version folders
//! (another path, a symlink, a name the store never makes) is refused before
//! anything is touched.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// The link that names the current version.
pub const DATA_LINK: &str = "..data";
const VERSION_PREFIX: &str = "..v-";

/// One file of a set.
#[derive(Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Name inside the directory (no `/`, not starting with `.`).
    pub name: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Permission bits (0600 for keys, 0644 for certificates).
    pub mode: u32,
    /// Owner and group to set (None: the writer's).
    pub owner: (Option<u32>, Option<u32>),
}

impl std::fmt::Debug for FileSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Contents may be a private key: never print them.
        write!(
            f,
            "FileSpec({}, {} bytes, {:o})",
            self.name,
            self.contents.len(),
            self.mode
        )
    }
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file name that would escape the directory or collide with our links.
    #[error("invalid file name {0:?}")]
    BadName(String),
    /// A visible name exists and is not our symlink (refuse to clobber it).
    #[error("{0} exists and is not managed by node-client")]
    Foreign(PathBuf),
    /// `..data` names something other than one of this store's own version
    /// folders (refuse to remove or replace what it names).
    #[error(
        "{link} points at {target:?}, which is not a version folder of this store; refusing to write (remove the link to start afresh)"
    )]
    ForeignData {
        /// The `..data` link.
        link: PathBuf,
        /// What it names.
        target: PathBuf,
    },
    /// I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 8];
    // A failing system RNG only makes the name less random; the time keeps it unique.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t as u64).to_le_bytes();
    }
    hex::encode(b)
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

fn check_name(n: &str) -> Result<(), StoreError> {
    if n.is_empty() || n.starts_with('.') || n.contains('/') || n.contains('\0') || n.len() > 200 {
        return Err(StoreError::BadName(n.to_string()));
    }
    Ok(())
}

/// Whether `name` is a version folder name this store makes: `..v-` and 16
/// lower-case hex digits (`random_suffix`).
fn is_version_name(name: &str) -> bool {
    name.strip_prefix(VERSION_PREFIX)
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The version folder `..data` names (None: no link yet), only if it is one
/// of this store's own: a bare name of the store's pattern that is a real
/// folder in `dir`, not a symlink. A name of the pattern that no longer
/// exists is accepted: it can only name `dir/<name>`, and nothing is left
/// to remove. Anything else is refused, before anything is touched.
fn previous_version(dir: &Path) -> Result<Option<String>, StoreError> {
    let data = dir.join(DATA_LINK);
    match fs::symlink_metadata(&data) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&data)(e)),
        Ok(m) if !m.file_type().is_symlink() => return Err(StoreError::Foreign(data)),
        Ok(_) => {}
    }
    let target = fs::read_link(&data).map_err(io(&data))?;
    let refuse = |target: PathBuf| StoreError::ForeignData {
        link: data.clone(),
        target,
    };
    let Some(name) = target.to_str().filter(|n| is_version_name(n)) else {
        return Err(refuse(target));
    };
    let folder = dir.join(name);
    match fs::symlink_metadata(&folder) {
        Ok(m) if m.file_type().is_dir() => Ok(Some(name.to_string())),
        Ok(_) => Err(refuse(target.clone())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Some(name.to_string())),
        Err(e) => Err(io(&folder)(e)),
    }
}

/// Replace the set of files in `dir` with `files`, atomically as a whole.
pub fn write_set(dir: &Path, files: &[FileSpec]) -> Result<(), StoreError> {
    for f in files {
        check_name(&f.name)?;
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    // Refuse to replace a plain file the operator put there.
    for f in files {
        let visible = dir.join(&f.name);
        match fs::symlink_metadata(&visible) {
            Ok(m) if !m.file_type().is_symlink() => return Err(StoreError::Foreign(visible)),
            _ => {}
        }
    }
    let previous = previous_version(dir)?;
    // Leftovers of a writer killed before its switch.
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let current = previous.as_deref() == Some(name.as_str());
            if (name.starts_with(VERSION_PREFIX) && !current) || name.starts_with("..tmp-") {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
    }

    let version = format!("{VERSION_PREFIX}{}", random_suffix());
    let vdir = dir.join(&version);
    fs::create_dir(&vdir).map_err(io(&vdir))?;
    fs::set_permissions(&vdir, fs::Permissions::from_mode(0o755)).map_err(io(&vdir))?;
    for f in files {
        let p = vdir.join(&f.name);
        let mut fh = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .open(&p)
            .map_err(io(&p))?;
        fh.write_all(&f.contents).map_err(io(&p))?;
        // The mode given at open is filtered by the umask: set it exactly.
        fh.set_permissions(fs::Permissions::from_mode(f.mode))
            .map_err(io(&p))?;
        if f.owner != (None, None) {
            std::os::unix::fs::fchown(&fh, f.owner.0, f.owner.1).map_err(io(&p))?;
        }
        fh.sync_all().map_err(io(&p))?;
    }
    fsync_dir(&vdir)?;

    // Switch: a new link renamed over ..data.
    let tmp_link = dir.join(format!("..tmp-{}", random_suffix()));
    symlink(&version, &tmp_link).map_err(io(&tmp_link))?;
    let data = dir.join(DATA_LINK);
    fs::rename(&tmp_link, &data).map_err(io(&data))?;
    fsync_dir(dir)?;

    // Visible names: symlinks into ..data, created once.
    for f in files {
        let visible = dir.join(&f.name);
        let target = Path::new(DATA_LINK).join(&f.name);
        match fs::read_link(&visible) {
            Ok(t) if t == target => {}
            Ok(_) | Err(_) => {
                let tmp = dir.join(format!("..tmp-{}", random_suffix()));
                symlink(&target, &tmp).map_err(io(&tmp))?;
                fs::rename(&tmp, &visible).map_err(io(&visible))?;
            }
        }
    }
    fsync_dir(dir)?;
    if let Some(old) = previous
        && old != version
    {
        match fs::remove_dir_all(dir.join(&old)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Io {
                    path: dir.join(old),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

/// Read the current contents of `name` in `dir`, if present.
pub fn read(dir: &Path, name: &str) -> Option<Vec<u8>> {
    fs::read(dir.join(name)).ok()
}

/// Replace the single file `path` with `contents`, mode 0644 (public data:
/// a CA certificate, an environment file): a temp file beside it, fsynced,
/// renamed over it, the directory fsynced. Creates the parent directory. A
/// reader sees the old or the new contents, never a partial file.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| StoreError::BadName(path.display().to_string()))?;
    let tmp = dir.join(format!(".{name}.tmp-{}", random_suffix()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        // The umask may have narrowed the mode.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_public_replaces_one_file_with_mode_0644_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/dir/ca.pem");
        write_public(&p, b"one").unwrap();
        write_public(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ca.pem"]);
    }

    fn spec(name: &str, contents: &str, mode: u32) -> FileSpec {
        FileSpec {
            name: name.into(),
            contents: contents.as_bytes().to_vec(),
            mode,
            owner: (None, None),
        }
    }

    #[test]
    fn sets_replace_together_with_their_modes() {
        let d = tempfile::tempdir().unwrap();
        write_set(
            d.path(),
            &[spec("cert.pem", "c1", 0o644), spec("key.pem", "k1", 0o600)],
        )
        .unwrap();
        assert_eq!(read(d.path(), "cert.pem").unwrap(), b"c1");
        let mode = |n: &str| fs::metadata(d.path().join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode("cert.pem"), mode("key.pem")), (0o644, 0o600));
        write_set(
            d.path(),
            &[spec("cert.pem", "c2", 0o644), spec("key.pem", "k2", 0o600)],
        )
        .unwrap();
        assert_eq!(
            (
                read(d.path(), "cert.pem").unwrap(),
                read(d.path(), "key.pem").unwrap()
            ),
            (b"c2".to_vec(), b"k2".to_vec())
        );
        // Only the current version, the link and the visible names remain.
        let mut names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.iter().any(|n| n.starts_with(VERSION_PREFIX)));
    }

    #[test]
    fn refuses_bad_names_and_foreign_files() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "..data"] {
            assert!(
                matches!(
                    write_set(d.path(), &[spec(bad, "x", 0o600)]),
                    Err(StoreError::BadName(_))
                ),
                "{bad}"
            );
        }
        fs::write(d.path().join("mine.pem"), "operator's").unwrap();
        assert!(matches!(
            write_set(d.path(), &[spec("mine.pem", "x", 0o600)]),
            Err(StoreError::Foreign(_))
        ));
        assert_eq!(fs::read(d.path().join("mine.pem")).unwrap(), b"operator's");
    }

    #[test]
    fn leftovers_of_a_killed_writer_are_cleaned_and_never_visible() {
        let d = tempfile::tempdir().unwrap();
        write_set(d.path(), &[spec("cert.pem", "old", 0o644)]).unwrap();
        // A writer killed after writing its version folder, before the switch.
        fs::create_dir(d.path().join("..v-dead")).unwrap();
        fs::write(d.path().join("..v-dead/cert.pem"), "half").unwrap();
        assert_eq!(read(d.path(), "cert.pem").unwrap(), b"old");
        write_set(d.path(), &[spec("cert.pem", "new", 0o644)]).unwrap();
        assert!(!d.path().join("..v-dead").exists());
        assert_eq!(read(d.path(), "cert.pem").unwrap(), b"new");
    }

    #[test]
    fn a_data_link_to_anything_but_its_own_version_folder_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep.txt"), "someone else's").unwrap();
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        write_set(&store, &[spec("cert.pem", "old", 0o644)]).unwrap();
        let own = fs::read_link(store.join(DATA_LINK)).unwrap();
        // A folder of the right name that is a symlink, and one with a name
        // the store never makes.
        symlink(outside.path(), store.join("..v-0123456789abcdef")).unwrap();
        fs::create_dir(store.join("..v-other")).unwrap();
        fs::create_dir(d.path().join("..v-0123456789abcdef")).unwrap();
        let targets = [
            outside.path().to_path_buf(),
            PathBuf::from("../..v-0123456789abcdef"),
            PathBuf::from("..v-0123456789abcdef"),
            PathBuf::from("..v-other"),
            PathBuf::from(".."),
            PathBuf::from("."),
            PathBuf::from("..v-0123456789ABCDEF"),
            PathBuf::from("..v-0123456789abcdef/"),
            PathBuf::from("./..v-0123456789abcdef"),
        ];
        for target in targets {
            let link = store.join(DATA_LINK);
            let _ = fs::remove_file(&link);
            symlink(&target, &link).unwrap();
            let before = fs::read_dir(&store).unwrap().count();
            let e = write_set(&store, &[spec("cert.pem", "new", 0o644)])
                .expect_err(&format!("{target:?} is refused"));
            assert!(
                matches!(&e, StoreError::ForeignData { target: t, .. } if *t == target),
                "{target:?}: {e}"
            );
            assert!(
                e.to_string().contains("not a version folder of this store"),
                "{e}"
            );
            assert_eq!(fs::read_link(&link).unwrap(), target, "the link is kept");
            assert_eq!(fs::read_dir(&store).unwrap().count(), before, "{target:?}");
        }
        assert_eq!(
            fs::read(outside.path().join("keep.txt")).unwrap(),
            b"someone else's"
        );
        assert!(d.path().join("..v-0123456789abcdef").is_dir());
        assert!(store.join("..v-other").is_dir());
        assert!(store.join(&own).is_dir(), "the last good version is kept");
        // A plain directory in the place of the link is refused too.
        fs::remove_file(store.join(DATA_LINK)).unwrap();
        fs::create_dir(store.join(DATA_LINK)).unwrap();
        let e = write_set(&store, &[spec("cert.pem", "new", 0o644)]).unwrap_err();
        assert!(matches!(e, StoreError::Foreign(_)), "{e}");
        assert!(store.join(&own).is_dir());
    }

    #[test]
    fn a_data_link_to_its_own_vanished_version_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        write_set(d.path(), &[spec("cert.pem", "old", 0o644)]).unwrap();
        let own = fs::read_link(d.path().join(DATA_LINK)).unwrap();
        fs::remove_dir_all(d.path().join(&own)).unwrap();
        write_set(d.path(), &[spec("cert.pem", "new", 0o644)]).unwrap();
        assert_eq!(read(d.path(), "cert.pem").unwrap(), b"new");
    }

    /// Not a test on its own: the child process of the kill test. It writes
    /// matching certificate/key pairs forever when STORE_WRITER_DIR is set.
    #[test]
    fn writer_child() {
        let Ok(dir) = std::env::var("STORE_WRITER_DIR") else {
            return;
        };
        let key_body = "K".repeat(4096);
        for i in 0u64.. {
            let files = [
                spec("cert.pem", &format!("cert-{i}"), 0o644),
                spec("key.pem", &format!("key-{i}-{key_body}"), 0o600),
            ];
            write_set(Path::new(&dir), &files).unwrap();
        }
    }

    #[test]
    fn sigkill_at_random_points_leaves_old_or_new_never_a_mix() {
        let d = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let key_body = "K".repeat(4096);
        let mut checked = 0;
        for round in 0..25u64 {
            let mut child = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "store::tests::writer_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("STORE_WRITER_DIR", d.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            if round == 0 {
                // The first set must land whatever the disk's fsync speed, so
                // every later kill has an old set to keep or replace.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while read(d.path(), "key.pem").is_none() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            } else {
                std::thread::sleep(std::time::Duration::from_millis(5 + (round * 7919) % 60));
            }
            child.kill().unwrap();
            child.wait().unwrap();
            let (Some(cert), Some(key)) = (read(d.path(), "cert.pem"), read(d.path(), "key.pem"))
            else {
                continue; // killed before its first switch: nothing visible yet, which is fine
            };
            let cert = String::from_utf8(cert).unwrap();
            let key = String::from_utf8(key).unwrap();
            let n = cert.strip_prefix("cert-").unwrap();
            assert_eq!(
                key,
                format!("key-{n}-{key_body}"),
                "a mixed or partial set after SIGKILL"
            );
            checked += 1;
        }
        assert_eq!(checked, 25, "the writer's first set never landed");
    }
}
