//! The file storage's write-ahead log: one fdatasync shared by every writer
//! waiting at the same time (group commit), instead of two fsyncs per write.
//!
//! A write appends one record (put or delete, key, value) to the current
//! segment and returns once an fdatasync that began after the append
//! succeeded. The first writer to find no fdatasync running runs one (the
//! leader) for everyone appended so far; the writers that append meanwhile
//! wait on a condition variable, and the next of them to wake leads the next
//! round. Only then does [`super::file`] change the key's file, without fsync:
//! after a crash, replaying the log redoes it.
//!
//! Segments live in the folder `_` of the storage root (`_/wal-<id>`, hex id),
//! a name no key can take (the key segment `_` is refused), files 0600. A
//! segment starts with a header (magic, 8 random bytes); a record is
//! `len u32 | crc32(nonce | body) u32 | body`, `body = op u8 | key len u16 |
//! key | value`, little endian. The nonce in the CRC means stale bytes of an
//! older segment that reappear after a crash (freed blocks) never pass for
//! records. Replay stops at a segment's first short or CRC-bad record: a torn
//! tail, never an acknowledged write (every acknowledged record was covered by
//! an fdatasync of everything before it).
//!
//! Checkpoint: when the segment passes `segment_max`, the leader makes the
//! tail durable, starts the next segment and hands the old one to a thread
//! that waits until every write logged in it has changed its file, runs
//! `syncfs` on the storage's file system, then deletes the segment (oldest
//! first, fsyncing the folder after each, so an older segment never outlives
//! a newer one). Dropping the storage checkpoints everything. Opening replays
//! every segment in order (each record is an idempotent rewrite or delete),
//! syncs, deletes them, and starts a new one.
//!
//! One process owns a storage folder: `open` takes an exclusive `flock` on
//! `_` and fails if another handle holds it. An fdatasync that fails poisons
//! the log (every later write fails until the server restarts and replays),
//! since after a failed fsync Linux may have dropped the dirty pages.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// The log's folder below the storage root; the key segment `_` is invalid.
pub(super) const DIR: &str = "_";
/// A segment is closed and checkpointed once it is this long.
pub(super) const SEGMENT_MAX: u64 = 64 << 20;
const MAGIC: &[u8; 8] = b"pkiwal1\n";
const HEADER: usize = 16;
const FRAME: usize = 8;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// One logged change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record<'a> {
    Put { key: &'a str, value: &'a [u8] },
    Delete { key: &'a str },
}

impl Record<'_> {
    /// The framed record for a segment with `nonce`.
    fn encode(&self, nonce: &[u8; 8]) -> std::io::Result<Vec<u8>> {
        let (op, key, value): (u8, &str, &[u8]) = match self {
            Record::Put { key, value } => (OP_PUT, key, value),
            Record::Delete { key } => (OP_DELETE, key, &[]),
        };
        let key_len = u16::try_from(key.len())
            .map_err(|_| std::io::Error::other("storage key too long for the log"))?;
        let body_len = 3 + key.len() + value.len();
        let len = u32::try_from(body_len)
            .map_err(|_| std::io::Error::other("value too large for the log"))?;
        let mut out = Vec::with_capacity(FRAME + body_len);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(op);
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(value);
        let crc = crc(nonce, &out[FRAME..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    fn decode(body: &[u8]) -> Option<Record<'_>> {
        let (&op, rest) = body.split_first()?;
        let (len, rest) = rest.split_at_checked(2)?;
        let key_len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let (key, value) = rest.split_at_checked(key_len)?;
        let key = std::str::from_utf8(key).ok()?;
        super::validate_key(key).ok()?;
        match op {
            OP_PUT => Some(Record::Put { key, value }),
            OP_DELETE if value.is_empty() => Some(Record::Delete { key }),
            _ => None,
        }
    }
}

fn crc(nonce: &[u8; 8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(nonce);
    h.update(body);
    h.finalize()
}

/// The records of one segment's bytes, and the offset of the first bad one
/// (a torn tail) if the segment does not end cleanly.
fn parse(buf: &[u8]) -> (Vec<Record<'_>>, Option<usize>) {
    let mut out = Vec::new();
    let Some(nonce) = buf
        .strip_prefix(MAGIC.as_slice())
        .and_then(|r| r.first_chunk::<8>())
    else {
        // Not even a header: a segment whose creation was cut short.
        return (out, (!buf.is_empty()).then_some(0));
    };
    let mut at = HEADER;
    while at < buf.len() {
        let record = buf[at..].split_first_chunk::<FRAME>().and_then(|(f, r)| {
            let len = u32::from_le_bytes([f[0], f[1], f[2], f[3]]) as usize;
            let sum = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
            let body = r.get(..len)?;
            if len == 0 || crc(nonce, body) != sum {
                return None;
            }
            Record::decode(body).map(|rec| (rec, FRAME + len))
        });
        match record {
            Some((rec, n)) => {
                out.push(rec);
                at += n;
            }
            None => return (out, Some(at)),
        }
    }
    (out, None)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Make every file of the storage's file system durable.
fn sync_fs(root: &Path) -> std::io::Result<()> {
    rustix::fs::syncfs(File::open(root)?)?;
    Ok(())
}

fn segment_name(id: u64) -> String {
    format!("wal-{id:016x}")
}

fn segment_id(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("wal-")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// One log file.
#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    file: File,
    nonce: [u8; 8],
    /// Writes logged here whose file change has not finished.
    pending: Mutex<usize>,
    idle: Condvar,
}

impl Segment {
    /// Create segment `id` in `dir`: header written and durable, entry too.
    fn create(dir: &Path, id: u64) -> std::io::Result<Self> {
        let path = dir.join(segment_name(id));
        let mut nonce = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| std::io::Error::other("no randomness"))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&nonce);
        let res = file
            .write_all_at(&header, 0)
            .and_then(|_| file.sync_all())
            .and_then(|_| sync_dir(dir));
        if let Err(e) = res {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(Self {
            id,
            path,
            file,
            nonce,
            pending: Mutex::new(0),
            idle: Condvar::new(),
        })
    }

    /// Block until every write logged here has changed its file.
    fn wait_applied(&self) {
        let mut n = lock(&self.pending);
        while *n > 0 {
            n = self.idle.wait(n).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A write that is durable in the log and now changes its file; drop it
/// when done (the segment is not checkpointed before).
#[derive(Debug)]
pub(super) struct Applying(Arc<Segment>);

impl Applying {
    fn new(seg: Arc<Segment>) -> Self {
        *lock(&seg.pending) += 1;
        Self(seg)
    }
}

impl Drop for Applying {
    fn drop(&mut self) {
        let mut n = lock(&self.0.pending);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.0.idle.notify_all();
        }
    }
}

#[derive(Debug)]
struct State {
    seg: Arc<Segment>,
    /// Bytes in `seg`.
    len: u64,
    /// Records appended (all segments), and how many of them are durable.
    appended: u64,
    synced: u64,
    /// A leader's fdatasync is running.
    syncing: bool,
    /// Set by a failed fdatasync: nothing is written any more.
    failed: Option<String>,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    dir: PathBuf,
    segment_max: u64,
    state: Mutex<State>,
    /// Signalled when a round ends.
    round: Condvar,
    /// Closed segments, oldest first, waiting for their checkpoint.
    closed: Mutex<VecDeque<Arc<Segment>>>,
    /// Held while checkpointing, so segments go strictly oldest first.
    checkpointing: Mutex<()>,
    syncs: AtomicU64,
    checkpoints: AtomicU64,
}

/// The write-ahead log of one storage folder.
#[derive(Debug)]
pub(super) struct Wal {
    shared: Arc<Shared>,
    /// The open `_` folder, holding the exclusive flock.
    _owner: File,
    /// Tests: drop without the final checkpoint, as a crash would.
    #[cfg(test)]
    crashed: std::sync::atomic::AtomicBool,
}

impl Wal {
    /// Open the log of the storage at `root`: replay (through `apply`, in
    /// order) whatever an earlier run left, make it durable, start afresh.
    pub(super) fn open(
        root: &Path,
        segment_max: u64,
        mut apply: impl FnMut(&Record<'_>) -> std::io::Result<()>,
    ) -> std::io::Result<Self> {
        let dir = root.join(DIR);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => sync_dir(root)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        let owner = File::open(&dir)?;
        rustix::fs::flock(&owner, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                if e == rustix::io::Errno::WOULDBLOCK {
                    std::io::Error::new(
                        ErrorKind::ResourceBusy,
                        format!(
                            "storage folder {} is in use by another server",
                            root.display()
                        ),
                    )
                } else {
                    e.into()
                }
            },
        )?;
        let mut ids = Vec::new();
        for ent in fs::read_dir(&dir)? {
            if let Some(id) = segment_id(&ent?.file_name().to_string_lossy()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        for &id in &ids {
            let path = dir.join(segment_name(id));
            let buf = fs::read(&path)?;
            let (records, torn) = parse(&buf);
            for r in &records {
                apply(r)?;
            }
            tracing::info!(segment = %path.display(), records = records.len(), "replayed the write-ahead log");
            if let Some(at) = torn {
                tracing::warn!(segment = %path.display(), offset = at, "ignored a torn write-ahead log tail (writes that never returned)");
            }
        }
        if !ids.is_empty() {
            sync_fs(root)?;
            // Oldest first, each deletion durable before the next.
            for &id in &ids {
                fs::remove_file(dir.join(segment_name(id)))?;
                sync_dir(&dir)?;
            }
        }
        let seg = Segment::create(&dir, ids.last().map_or(1, |id| id + 1))?;
        Ok(Self {
            shared: Arc::new(Shared {
                root: root.to_path_buf(),
                dir,
                segment_max,
                state: Mutex::new(State {
                    seg: Arc::new(seg),
                    len: HEADER as u64,
                    appended: 0,
                    synced: 0,
                    syncing: false,
                    failed: None,
                }),
                round: Condvar::new(),
                closed: Mutex::default(),
                checkpointing: Mutex::default(),
                syncs: AtomicU64::new(0),
                checkpoints: AtomicU64::new(0),
            }),
            _owner: owner,
            #[cfg(test)]
            crashed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Append `rec` and block until it is durable (group commit). Keep the
    /// result until the key's file is changed.
    pub(super) fn commit(&self, rec: &Record<'_>) -> std::io::Result<Applying> {
        let sh = &self.shared;
        let mut st = lock(&sh.state);
        if let Some(e) = &st.failed {
            return Err(std::io::Error::other(e.clone()));
        }
        let frame = rec.encode(&st.seg.nonce)?;
        if let Err(e) = st.seg.file.write_all_at(&frame, st.len) {
            // Cut off whatever part was written; if even that fails, stop.
            if let Err(e2) = st.seg.file.set_len(st.len) {
                st.failed = Some(format!("write-ahead log append failed: {e}; {e2}"));
            }
            return Err(e);
        }
        st.len += frame.len() as u64;
        st.appended += 1;
        let seq = st.appended;
        let applying = Applying::new(st.seg.clone());
        loop {
            if st.synced >= seq {
                return Ok(applying);
            }
            if let Some(e) = &st.failed {
                return Err(std::io::Error::other(e.clone()));
            }
            if st.syncing {
                st = sh.round.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead a round for everything appended so far.
            st.syncing = true;
            let target = st.appended;
            let seg = st.seg.clone();
            drop(st);
            let res = seg.file.sync_data();
            sh.syncs.fetch_add(1, Ordering::Relaxed);
            st = lock(&sh.state);
            st.syncing = false;
            match res {
                Ok(()) => {
                    st.synced = st.synced.max(target);
                    if st.len >= sh.segment_max {
                        rotate(sh, &mut st);
                    }
                }
                Err(e) => st.failed = Some(format!("write-ahead log fsync failed: {e}")),
            }
            sh.round.notify_all();
        }
    }

    /// fdatasync rounds run since open.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Segments checkpointed (made durable in the files and deleted) since open.
    #[cfg(test)]
    pub(super) fn checkpoints(&self) -> u64 {
        self.shared.checkpoints.load(Ordering::Relaxed)
    }

    /// Drop without the final checkpoint, as a crash would.
    #[cfg(test)]
    pub(super) fn crash(&self) {
        self.crashed.store(true, Ordering::Relaxed);
    }
}

/// Close the current segment (after making all of it durable) and start the
/// next; a thread checkpoints the closed one. Called with the state locked.
fn rotate(sh: &Arc<Shared>, st: &mut State) {
    if st.appended > st.synced {
        // Appended while the leader synced: still in the old segment.
        if let Err(e) = st.seg.file.sync_data() {
            st.failed = Some(format!("write-ahead log fsync failed: {e}"));
            return;
        }
        st.synced = st.appended;
    }
    let new = match Segment::create(&sh.dir, st.seg.id + 1) {
        Ok(s) => s,
        Err(e) => {
            // Keep appending to the old one; the next round tries again.
            tracing::warn!(error = %e, "could not start a new write-ahead log segment");
            return;
        }
    };
    let old = std::mem::replace(&mut st.seg, Arc::new(new));
    st.len = HEADER as u64;
    lock(&sh.closed).push_back(old);
    let sh = sh.clone();
    let spawned = std::thread::Builder::new()
        .name("wal-checkpoint".into())
        .spawn(move || {
            if let Err(e) = checkpoint(&sh) {
                tracing::error!(error = %e, "write-ahead log checkpoint failed; the log is kept");
            }
        });
    if let Err(e) = spawned {
        // The segment stays queued for the next checkpoint.
        tracing::warn!(error = %e, "could not start a write-ahead log checkpoint");
    }
}

/// Checkpoint the closed segments, oldest first: once every write logged in
/// one has changed its file, make the file system durable and delete it.
fn checkpoint(sh: &Shared) -> std::io::Result<()> {
    let _one_at_a_time = lock(&sh.checkpointing);
    loop {
        let Some(seg) = lock(&sh.closed).front().cloned() else {
            return Ok(());
        };
        seg.wait_applied();
        sync_fs(&sh.root)?;
        match fs::remove_file(&seg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sync_dir(&sh.dir)?;
        lock(&sh.closed).pop_front();
        sh.checkpoints.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Wal {
    /// Clean shutdown: every handle is gone, so every logged write has
    /// changed its file; checkpoint all segments (the log folder ends empty).
    fn drop(&mut self) {
        #[cfg(test)]
        if self.crashed.load(Ordering::Relaxed) {
            return;
        }
        let sh = &self.shared;
        let current = {
            let st = lock(&sh.state);
            if st.failed.is_some() {
                return; // keep the log for replay
            }
            st.seg.clone()
        };
        lock(&sh.closed).push_back(current);
        if let Err(e) = checkpoint(sh) {
            tracing::error!(error = %e, "write-ahead log checkpoint at close failed; the log is kept");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_or_foreign_tail_is_cut() {
        let nonce = [7u8; 8];
        let mut seg = Vec::from(MAGIC.as_slice());
        seg.extend_from_slice(&nonce);
        let recs = [
            Record::Put {
                key: "certs/a",
                value: b"\x00\x01ciphertext",
            },
            Record::Delete { key: "certs/b" },
            Record::Put {
                key: "k",
                value: b"",
            },
        ];
        for r in &recs {
            seg.extend_from_slice(&r.encode(&nonce).unwrap());
        }
        let whole = seg.len();
        let (got, torn) = parse(&seg);
        assert_eq!(got, recs);
        assert_eq!(torn, None);

        // Every cut inside the last record drops exactly that record.
        let last = recs[2].encode(&nonce).unwrap().len();
        for cut in whole - last + 1..whole {
            let (got, torn) = parse(&seg[..cut]);
            assert_eq!(got, recs[..2], "cut at {cut}");
            assert_eq!(torn, Some(whole - last));
        }
        // A flipped bit fails the CRC.
        let mut bad = seg.clone();
        bad[whole - 1] ^= 1;
        assert_eq!(parse(&bad).0, recs[..2]);
        // A record of another segment (other nonce) is not taken.
        let mut stale = seg[..whole - last].to_vec();
        stale.extend_from_slice(&recs[2].encode(&[8u8; 8]).unwrap());
        assert_eq!(parse(&stale), (recs[..2].to_vec(), Some(whole - last)));
        // Zeros (a preallocated or lost block) end the log.
        let mut zeros = seg.clone();
        zeros.extend_from_slice(&[0; 64]);
        assert_eq!(parse(&zeros), (recs.to_vec(), Some(whole)));
        // No header, no records.
        assert_eq!(parse(&seg[..10]), (vec![], Some(0)));
        assert_eq!(parse(&[]), (vec![], None));
    }

    #[test]
    fn invalid_keys_in_the_log_end_the_replay() {
        let nonce = [1u8; 8];
        let mut seg = Vec::from(MAGIC.as_slice());
        seg.extend_from_slice(&nonce);
        seg.extend_from_slice(
            &Record::Put {
                key: "../escape",
                value: b"x",
            }
            .encode(&nonce)
            .unwrap(),
        );
        assert_eq!(parse(&seg), (vec![], Some(HEADER)));
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_id(&segment_name(0x2a)), Some(0x2a));
        for other in ["wal-", "wal-xyz", "x", "wal-0000000000000001.tmp"] {
            assert_eq!(segment_id(other), None, "{other}");
        }
    }
}
