//! The cache: a content-addressed blob store plus a sled index from stage keys to
//! manifests. One `pipe` process holds it at a time (an exclusive lock file).
//!
//! Commit protocol (crash-safe at any instant): every output file is moved (or written
//! through a temp file) into `blobs/<aa>/<blake3>`; then the manifest (itself a blob) is
//! stored; then the entry's record file (`entries/`, what `pipe cache rebuild-index`
//! rebuilds a damaged index from); then one `syncfs`, shared by the commits that wait
//! for it together ([`durable`]); then ONE sled insert maps the key to the manifest. A
//! run killed before the record is written leaves only unreferenced blobs (removed by
//! `pipe cache gc`), never a half entry. sled is flushed before each snapshot write
//! (within moments of a commit) and when the cache closes, not at every commit: the next
//! holder after a killed one finds the records whose inserts sled lost and puts them
//! back, each verified ([`Cache::open`]).
//!
//! Commands that only read (`plan`, `show`, `report`, `cache ls`) never take the lock:
//! [`Cache::open_for_reading`] reads `index-snapshot.json`, which the holder rewrites
//! (tmp + rename) within moments of every change of the index, at once before it deletes
//! any blob, and when it closes; a reader sees the index as of that file. The holder
//! itself reads what it has not changed from the snapshot it opened with, and writes each
//! later one from it (see `index::OpenedAs`).

mod blob;
mod durable;
mod index;
mod reader;
mod rebuild;
mod record;
mod remote;
mod snapshot_text;
mod stamp;
mod stored_value;
mod verify;

pub use blob::{hash_file, with_parent, BlobStore, StoredFile};
pub use index::{Entry, IndexSnapshot, LastRun, LastRunOf, Manifest, ManifestFile, RecordedInput};
use rebuild::verify_candidate;
pub use rebuild::{Rebuilt, Skipped};
pub use remote::{Pulled, Pushed, Remote, RemoteDamage};
pub use stamp::{Damage, Stamp, ALWAYS_HASH_UP_TO};
pub use verify::{Corruption, CorruptionCause};

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

use crate::hash::StageKey;

/// Errors of the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "the cache {dir} is in use by another pipe process{holder}; wait for it to finish \
         or choose another cache with --cache / PIPE_CACHE"
    )]
    Busy { dir: PathBuf, holder: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache index {path}: {detail}")]
    Index { path: PathBuf, detail: String },
    #[error(
        "the cache index {path} is damaged ({detail}). The results themselves are kept in \
         {blobs}: run `pipe cache rebuild-index` to rebuild the index from every result \
         whose files still verify (or remove the cache folder to start afresh)"
    )]
    IndexDamaged {
        path: PathBuf,
        detail: String,
        blobs: PathBuf,
    },
    #[error(
        "the cache index {path} is open read-only (another pipe process holds the cache); \
         this command needs to change it"
    )]
    ReadOnly { path: PathBuf },
    #[error(
        "the output `{file}` is a symbolic link (to {}); pipe stores regular files only and \
         never follows links: copy the file into the output instead",
        target.display()
    )]
    LinkInOutput { file: String, target: PathBuf },
    #[error(
        "the output `{file}` is not a regular file (a socket, FIFO or device); pipe stores \
         regular files only"
    )]
    NotAFile { file: String },
    #[error("corrupt cache entry {key}: {message} (run `pipe cache verify`)")]
    Corrupt { key: String, message: String },
    #[error(transparent)]
    Damaged(Box<DamagedResult>),
}

/// A committed result one of whose files is not what was committed.
#[derive(Debug, thiserror::Error)]
#[error(
    "the cached output of `{stage}` ({key}) is damaged: its file {file} ({path}): {damage}; \
     `pipe run` computes it again"
)]
pub struct DamagedResult {
    pub stage: String,
    /// The result's key (short hex).
    pub key: String,
    /// The file, as the stage wrote it.
    pub file: String,
    /// Where it was checked (its blob, or its view).
    pub path: PathBuf,
    pub damage: Damage,
}

impl CacheError {
    /// Whether this says a committed result cannot be used as it is (a damaged or missing
    /// file, manifest or entry): running its stage again repairs it.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            CacheError::Damaged { .. } | CacheError::Corrupt { .. }
        )
    }
}

/// A file's identity on its file system (device and inode): a view's file is its blob
/// when both have the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    inode: u64,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            inode: meta.ino(),
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open cache directory: locked by this process, or (see [`Cache::open_for_reading`])
/// read from the snapshot of the process that holds it.
pub struct Cache {
    root: PathBuf,
    blobs: BlobStore,
    /// The holder's background rewriter of the snapshot (`None` for a reader). Declared
    /// before `index` and `lock`: fields drop in order, so its thread (which holds an index
    /// handle) is joined before the index closes and the lock is released.
    snapshot: Option<SnapshotWriter>,
    index: index::Index,
    /// `None` for a reader (which takes no lock).
    lock: Option<File>,
    /// Who holds the cache, for a reader while a writer does (e.g. ` (pid 42)`).
    held_by: Option<String>,
    /// A reader's private folder for views and scratch (`None` for the holder).
    reader: Option<reader::ReaderDir>,
    /// One file per committed entry, for `pipe cache rebuild-index`.
    records: record::Records,
    /// Entries removed since the last flush, whose records go once the removal is durable
    /// (a record must outlive its entry, never the reverse).
    unrecorded: std::sync::Mutex<Vec<StageKey>>,
    /// Where commits wait for their files to be on disk (`None` for a reader).
    sync_point: Option<durable::SyncPoint>,
    /// Held while a view is looked at or built, one lock for each sixteenth of the keys:
    /// workers resolve their stages' inputs side by side, and stages of a fan-out read
    /// the same result (#27).
    view_builds: [std::sync::Mutex<()>; 16],
}

/// Writes the snapshot when a reader asks for it (`snapshot-wanted` beside it, see
/// [`request_snapshot`]) and the index changed since the last one, and at close; not on
/// every change: rewriting a 100,000-entry index after each few commits took a tenth of
/// a core through a whole cold run, for readers that mostly never came (#27). sled is
/// flushed every [`SnapshotWriter::FLUSH_EVERY`] while commits come, so that after a kill
/// the next open puts back only the last moments' results from their records, and its
/// garbage collected then ([`collect_sled_garbage`]).
struct SnapshotWriter {
    /// The index changed since the snapshot on disk was written.
    dirty: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The index changed since sled was last flushed.
    unflushed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The index generation the snapshot on disk holds ([`NONE_WRITTEN`] when unknown).
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Frees the node versions sled replaced: it defers each free until no thread can still
/// read it (crossbeam's epochs), and runs a few deferred batches only every 128th
/// operation of a thread. A cold run's inserts made them faster than that: a 100,000-cell
/// matrix peaked at 202-211 MiB, not 190, once the snapshot writes (whose reads of every
/// entry had collected them) stopped (#27). Each call collects up to 64 x 8 batches of 64;
/// called beside each sled flush (every 300 ms while commits come), it keeps the peak at
/// 190 MiB at no measurable cost; every 50 ms it measured ~10% more of pipe's CPU.
fn collect_sled_garbage() {
    for _ in 0..64 {
        sled::pin().flush();
    }
}

/// [`SnapshotWriter::written`] before any snapshot is known to hold the index.
const NONE_WRITTEN: u64 = u64::MAX;

impl SnapshotWriter {
    /// How often the thread looks for a reader's request (one `stat`).
    const TICK: std::time::Duration = std::time::Duration::from_millis(50);
    /// How often sled is flushed while the index changes.
    const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(300);

    fn start(index: index::Index, root: PathBuf, written: u64) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let dirty = Arc::new(AtomicBool::new(false));
        let unflushed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(written));
        let (d, u, s, w) = (
            dirty.clone(),
            unflushed.clone(),
            stop.clone(),
            written.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("pipe-index-snapshot".into())
            .spawn(move || {
                let wanted = root.join(SNAPSHOT_WANTED);
                let mut flushed_at = std::time::Instant::now();
                while !s.load(Ordering::Acquire) {
                    // woken early on drop
                    std::thread::park_timeout(Self::TICK);
                    // best effort, both: sled is flushed again at close, and a reader
                    // without a fresh snapshot reads the last one
                    if wanted.exists() {
                        if d.swap(false, Ordering::AcqRel) {
                            if write_snapshot(&index, &root, &w).is_err() {
                                // tried again at the next request and at close
                                d.store(true, Ordering::Release);
                            }
                            flushed_at = std::time::Instant::now();
                        }
                        let _ = fs::remove_file(&wanted);
                    }
                    if flushed_at.elapsed() >= Self::FLUSH_EVERY && u.swap(false, Ordering::AcqRel)
                    {
                        collect_sled_garbage();
                        let _ = index.flush();
                        flushed_at = std::time::Instant::now();
                    }
                }
            })
            .ok();
        SnapshotWriter {
            dirty,
            unflushed,
            stop,
            written,
            thread,
        }
    }

    fn mark_dirty(&self) {
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
        self.unflushed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for Cache {
    /// The holder leaves a snapshot of its last changes for readers and empties `LOCK`
    /// (a reader takes a pid there for a running holder).
    fn drop(&mut self) {
        let Some(lock) = &self.lock else { return };
        // what the last snapshot write did not flush (last-run records, late commits)
        if self.index.flush().is_err() {
            // keep the pid in LOCK: the next holder puts back what sled lost
            return;
        }
        if let Some(writer) = &self.snapshot {
            if writer
                .dirty
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                let _ = write_snapshot(&self.index, &self.root, &writer.written);
            }
        }
        let _ = lock.set_len(0);
    }
}

/// The cache's lock, held.
struct HeldLock {
    file: File,
    /// The last holder did not close the cache (killed, or its machine went down): its
    /// pid was still in `LOCK`. Its last commits may be in their records but not in sled.
    after_unclean_exit: bool,
}

/// Takes the exclusive lock of the cache at `root` (creating the folder), writing this
/// process's pid into it; [`CacheError::Busy`] at once when another process holds it.
fn take_lock(root: &Path) -> Result<HeldLock, CacheError> {
    fs::create_dir_all(root).map_err(io_err(root))?;
    let lock_path = root.join("LOCK");
    let mut lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    match lock.try_lock_exclusive() {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            let holder = fs::read_to_string(&lock_path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            return Err(CacheError::Busy {
                dir: root.to_path_buf(),
                holder,
            });
        }
    }
    // a clean close empties the file (see `Drop for Cache`)
    let after_unclean_exit = lock.metadata().map_err(io_err(&lock_path))?.len() > 0;
    lock.set_len(0).map_err(io_err(&lock_path))?;
    write!(lock, "{}", std::process::id()).map_err(io_err(&lock_path))?;
    Ok(HeldLock {
        file: lock,
        after_unclean_exit,
    })
}

/// After a holder that did not close: puts back into the index each recorded result that
/// sled lost (committed after its last flush, or removed by a `gc` killed before it
/// removed the records), if its manifest and files verify; a record that does not verify
/// is removed, as `rebuild-index` does. Reads only the records the index lacks.
fn put_back_unflushed_commits(
    index: &index::Index,
    records: &record::Records,
    blobs: &BlobStore,
) -> Result<(), CacheError> {
    let lost = records.matching(|key| !index.contains(key).unwrap_or(true));
    if lost.is_empty() {
        return Ok(());
    }
    for (key, entry) in lost {
        match verify_candidate(blobs, &entry) {
            Ok(()) => index.insert_entry(&key, &entry)?,
            Err(_) => records.remove(&key)?,
        }
    }
    index.flush()
}

/// Refuses an index that lacks results its last snapshot lists: sled reads a damaged log
/// only up to the damage and says nothing, so that is how a damaged index shows (the
/// snapshot is kept for `pipe cache rebuild-index`, not overwritten).
fn check_against_snapshot(index: &index::Index, root: &Path) -> Result<(), CacheError> {
    let Ok(text) = fs::read(root.join(SNAPSHOT_FILE)) else {
        return Ok(());
    };
    let Ok(snapshot) = serde_json::from_slice::<IndexSnapshot>(&text) else {
        return Ok(());
    };
    let mut lost = 0;
    for hex in snapshot.entries.keys() {
        if let Some(key) = StageKey::from_hex(hex) {
            if !index.contains(&key)? {
                lost += 1;
            }
        }
    }
    if lost == 0 {
        return Ok(());
    }
    Err(CacheError::IndexDamaged {
        path: root.join("index"),
        detail: format!(
            "it lacks {lost} of the {} results that its last snapshot lists",
            snapshot.entries.len()
        ),
        blobs: root.join("blobs"),
    })
}

/// Serializes snapshot writes in this process: a background write that read the index
/// before a removal must not land after the removal's own write.
static SNAPSHOT_WRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes `index`'s snapshot to `root/index-snapshot.json` (tmp + rename), then its
/// generation to `index-snapshot.generation`; nothing when the snapshot on disk already
/// holds this generation (`written`).
fn write_snapshot(
    index: &index::Index,
    root: &Path,
    written: &std::sync::atomic::AtomicU64,
) -> Result<(), CacheError> {
    use std::sync::atomic::Ordering;
    let _one_at_a_time = SNAPSHOT_WRITE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if index.generation()? == written.load(Ordering::Acquire) {
        return Ok(());
    }
    // a snapshot lists what sled holds durably (an open checks the index against it), and
    // at most the commits made while it is read, whose records are durable (an open after
    // a kill puts them back into sled before that check)
    index.flush()?;
    let generation = replace_file_with(root, SNAPSHOT_FILE, |out, path| {
        index.write_snapshot_json(out, path)
    })?;
    replace_file(root, GENERATION_FILE, generation.to_string().as_bytes())?;
    written.store(generation, Ordering::Release);
    Ok(())
}

/// Writes `root/name` as a whole (a temp file renamed over it).
fn replace_file(root: &Path, name: &str, contents: &[u8]) -> Result<(), CacheError> {
    replace_file_with(root, name, |out, path| {
        out.write_all(contents).map_err(io_err(path))
    })
}

/// Writes `root/name` as a whole with `write` (streamed into a temp file, buffered, then
/// renamed over it); returns what `write` returns.
fn replace_file_with<T>(
    root: &Path,
    name: &str,
    write: impl FnOnce(&mut std::io::BufWriter<File>, &Path) -> Result<T, CacheError>,
) -> Result<T, CacheError> {
    use std::io::Write;
    let path = root.join(name);
    let tmp = root.join(format!(
        ".{name}.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut out =
        std::io::BufWriter::with_capacity(1 << 16, File::create(&tmp).map_err(io_err(&tmp))?);
    let written = write(&mut out, &tmp).and_then(|value| {
        out.flush().map_err(io_err(&tmp))?;
        Ok(value)
    });
    drop(out);
    match written {
        Ok(value) => {
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
            Ok(value)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The generation of the index that `index-snapshot.json` holds (`None` when unknown).
fn snapshot_generation(root: &Path) -> Option<u64> {
    fs::read_to_string(root.join(GENERATION_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Beside the snapshot: the index generation it holds, read at open without parsing it.
const GENERATION_FILE: &str = "index-snapshot.generation";

/// The JSON copy of the index that readers use while another process holds the cache.
const SNAPSHOT_FILE: &str = "index-snapshot.json";

/// A reader's request to the running holder for a fresh [`SNAPSHOT_FILE`]: made by the
/// reader, removed by the holder once the snapshot holds its index.
const SNAPSHOT_WANTED: &str = "snapshot-wanted";

/// The longest a reader waits for the holder's snapshot (a holder of a `pipe` from before
/// snapshots on request never answers; the reader then reads the last one written).
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks the process holding the cache at `root` for a snapshot of its index as it is now
/// and waits until it is written, the holder ends, or [`SNAPSHOT_WAIT`] passes. A reader
/// that may not write there reads the last snapshot at once.
fn request_snapshot(root: &Path) {
    let wanted = root.join(SNAPSHOT_WANTED);
    if File::create(&wanted).is_err() {
        return;
    }
    let asked = std::time::Instant::now();
    let mut polls = 0u32;
    while wanted.exists() && asked.elapsed() < SNAPSHOT_WAIT {
        std::thread::sleep(std::time::Duration::from_millis(10));
        polls += 1;
        // a holder killed meanwhile never answers
        if polls.is_multiple_of(10) && reader::holder(root).is_none() {
            break;
        }
    }
}

/// Makes `dir` an empty folder: made first, looked at only when it is there already
/// (one call where nothing is in the way, not two), its parents made only when missing.
fn fresh_dir(dir: &Path) -> Result<(), CacheError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::remove_dir_all(dir).map_err(io_err(dir))?;
            fs::create_dir(dir).map_err(io_err(dir))
        }
        Err(_) => fs::create_dir_all(dir).map_err(io_err(dir)),
    }
}

/// What [`Cache::gc`] removed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub entries_removed: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
}

impl Cache {
    /// Opens (creating if needed) the cache at `root` and takes its lock; a second
    /// process gets [`CacheError::Busy`] at once.
    pub fn open(root: &Path) -> Result<Self, CacheError> {
        let HeldLock {
            file: lock,
            after_unclean_exit,
        } = take_lock(root)?;
        let blobs = BlobStore::new(root.join("blobs"))?;
        let records = record::Records::new(root);
        let opened = index::Index::open(&root.join("index")).and_then(|index| {
            if after_unclean_exit {
                // first, so that the check below does not take a commit whose insert the
                // kill lost, or a removal whose snapshot it kept, for damage
                put_back_unflushed_commits(&index, &records, &blobs)?;
            }
            // a snapshot of this very index needs neither the check nor a rewrite: the
            // common case, and at 100,000 entries both cost more than the rest of a
            // no-op run
            let generation = index.generation()?;
            let snapshot_current =
                snapshot_generation(root) == Some(generation) && root.join(SNAPSHOT_FILE).is_file();
            if !snapshot_current {
                check_against_snapshot(&index, root)?;
            }
            Ok((index, generation, snapshot_current))
        });
        let (mut index, generation, snapshot_current) = match opened {
            Ok(opened) => opened,
            // sled's log torn by the kill: every result is still in its record and blobs
            Err(CacheError::IndexDamaged { detail, .. }) if after_unclean_exit => {
                let _ = lock.set_len(0);
                drop(lock);
                return Cache::rebuild_after_kill(root, &detail);
            }
            Err(e) => return Err(e),
        };
        for dir in ["tmp", "views", "checkpoints"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        // Leftovers of killed runs of this (now locked) cache are garbage; the folders of
        // readers still running are theirs.
        let tmp = root.join("tmp");
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                if !reader::is_live_reader(&e.file_name().to_string_lossy()) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let written = if snapshot_current {
            generation
        } else {
            let written = std::sync::atomic::AtomicU64::new(NONE_WRITTEN);
            write_snapshot(&index, root, &written)?;
            written.into_inner()
        };
        // the snapshot on disk is this very index: what this process does not change is
        // read from it, not from sled (which keeps every node it reads in memory)
        if written == generation {
            index.read_unchanged_from(&root.join(SNAPSHOT_FILE), generation);
        }
        let snapshot = SnapshotWriter::start(index.clone(), root.to_path_buf(), written);
        let cache = Cache {
            root: root.to_path_buf(),
            blobs,
            index,
            lock: Some(lock),
            held_by: None,
            reader: None,
            records,
            unrecorded: Default::default(),
            snapshot: Some(snapshot),
            sync_point: Some(durable::SyncPoint::open(root).map_err(io_err(root))?),
            view_builds: Default::default(),
        };
        Ok(cache)
    }

    /// The index a killed holder left damaged, rebuilt from the records at once (what
    /// `pipe cache rebuild-index` does), saying so on stderr.
    fn rebuild_after_kill(root: &Path, detail: &str) -> Result<Self, CacheError> {
        eprintln!(
            "note: the cache index {} was left damaged ({detail}) by a pipe process that \
             was killed; rebuilding it from the results' records",
            root.join("index").display()
        );
        let (cache, rebuilt) = Cache::rebuild_index(root)?;
        eprintln!(
            "note: {} results recovered, {} left out (their files no longer verify); the \
             old index is kept in {}",
            rebuilt.recovered,
            rebuilt.skipped.len(),
            rebuilt
                .old_index
                .as_deref()
                .map_or_else(|| "-".into(), |p| p.display().to_string())
        );
        Ok(cache)
    }

    /// Returns once every file this thread wrote to the cache is on disk.
    pub(super) fn wait_durable(&self) -> Result<(), CacheError> {
        match &self.sync_point {
            Some(point) => point.wait_durable().map_err(io_err(&self.root)),
            None => Err(self.index.read_only()),
        }
    }

    /// Opens the cache for commands that only read it (`plan`, `report`, `show`,
    /// `cache ls`) without taking its lock, so a reader never keeps a writer out: the index
    /// is the snapshot the last holder wrote, or the one the running holder writes when
    /// asked ([`request_snapshot`]); the views it builds live in its
    /// own `tmp/reader-views-<pid>`, removed when the returned value drops.
    pub fn open_for_reading(root: &Path) -> Result<Self, CacheError> {
        let path = root.join(SNAPSHOT_FILE);
        // a pid in LOCK: a holder is running, or the last one was killed and its last
        // commits may be missing from the snapshot (the open below puts them back)
        let holder_or_killed = fs::metadata(root.join("LOCK")).is_ok_and(|m| m.len() > 0);
        if (!path.is_file() && root.join("index").exists()) || holder_or_killed {
            // a cache last written before snapshots existed, or left by a killed holder:
            // have the snapshot written (a running holder answers Busy at once, and is
            // asked for it)
            match Cache::open(root) {
                Ok(holder) => drop(holder),
                Err(CacheError::Busy { .. }) => request_snapshot(root),
                // a reader that may not write the lock file reads the snapshot as it is
                Err(CacheError::Io { .. }) if path.is_file() => {}
                Err(e) => return Err(e),
            }
        }
        let snapshot = match File::open(&path) {
            Ok(file) => {
                snapshot_text::SnapshotText::scan(file).map_err(|e| CacheError::Corrupt {
                    key: SNAPSHOT_FILE.into(),
                    message: e.to_string(),
                })?
            }
            // nothing was ever committed here
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(CacheError::Io { path, source: e }),
        };
        Ok(Cache {
            root: root.to_path_buf(),
            blobs: BlobStore::new(root.join("blobs"))?,
            index: index::Index::from_snapshot(&path, snapshot),
            lock: None,
            held_by: reader::holder(root),
            reader: Some(reader::ReaderDir::create(root)?),
            records: record::Records::new(root),
            unrecorded: Default::default(),
            snapshot: None,
            sync_point: None,
            view_builds: Default::default(),
        })
    }

    /// `Ok` when this process holds the cache's lock, so may compute and store results;
    /// for a reader (opened without it) the error a command that must store one gives:
    /// the cache is busy, held by the process named if known.
    pub fn require_lock(&self) -> Result<(), CacheError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(CacheError::Busy {
                dir: self.root.clone(),
                holder: self.held_by.clone().unwrap_or_default(),
            }),
        }
    }

    /// For a snapshot read, a line for people saying so (else `None`).
    pub fn snapshot_note(&self) -> Option<String> {
        self.held_by.as_ref().map(|holder| {
            format!(
                "note: the cache {} is in use by another pipe process{holder}; reading the \
                 results it had committed when it wrote its index for this command",
                self.root.display()
            )
        })
    }

    /// Tells the snapshot writer that the index changed.
    fn index_changed(&self) {
        if let Some(writer) = &self.snapshot {
            writer.mark_dirty();
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Whether `key` has a committed entry.
    pub fn contains(&self, key: &StageKey) -> Result<bool, CacheError> {
        self.index.contains(key)
    }

    pub fn entry(&self, key: &StageKey) -> Result<Option<Entry>, CacheError> {
        self.index.entry(key)
    }

    /// All entries, by key.
    pub fn entries(&self) -> Result<Vec<(StageKey, Entry)>, CacheError> {
        self.index.entries()
    }

    /// Where this process keeps its scratch folders: `tmp/` for the holder, the reader's
    /// own folder for a reader.
    fn scratch_root(&self) -> PathBuf {
        match &self.reader {
            Some(reader) => reader.path().join(".tmp"),
            None => self.root.join("tmp"),
        }
    }

    /// A fresh private directory for one run of `key` (removed on drop of the cache
    /// or at the next open).
    pub fn tmp_dir(&self, key: &StageKey) -> Result<PathBuf, CacheError> {
        let dir = self
            .scratch_root()
            .join(format!("{}-{}", key.short(), std::process::id()));
        fresh_dir(&dir)?;
        Ok(dir)
    }

    /// The resumable-state directory of `key` (kept across crashes), made if missing.
    pub fn checkpoint_dir(&self, key: &StageKey) -> Result<PathBuf, CacheError> {
        let dir = self.checkpoint_path(key);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    /// Where [`Self::checkpoint_dir`] of `key` is, without making it.
    pub fn checkpoint_path(&self, key: &StageKey) -> PathBuf {
        self.root.join("checkpoints").join(key.hex())
    }

    /// Stores every file under `out_dir` and records `key` -> manifest atomically.
    /// `out_dir` is a staging folder of this cache, removed after: its files are moved
    /// into the blob store where they can be.
    pub fn commit(
        &self,
        key: &StageKey,
        out_dir: &Path,
        mut entry: Entry,
    ) -> Result<Entry, CacheError> {
        let mut files = Vec::new();
        collect_files(out_dir, out_dir, &mut files)?;
        files.sort();
        let mut manifest = Manifest { files: Vec::new() };
        for rel in files {
            let path = out_dir.join(&rel);
            let (hash, size, stamp) = self.blobs.put_staged_file(&path)?;
            manifest.files.push(ManifestFile {
                path: rel_string(&rel),
                hash,
                size,
                stamp: Some(stamp),
            });
        }
        let text = serde_json::to_vec(&manifest).unwrap_or_default();
        let (manifest_hash, _) = self.blobs.put_bytes(&text)?;
        entry.manifest = manifest_hash;
        entry.bytes = manifest.files.iter().map(|f| f.size).sum();
        self.records.write(key, &entry)?;
        self.wait_durable()?;
        // not held up while a snapshot is written (see `write_snapshot`)
        self.index.insert_entry(key, &entry)?;
        self.index_changed();
        // A recommit of a key (`--force`) may change its files: drop the stale view.
        let _ = fs::remove_file(
            self.root
                .join("views")
                .join(format!("{}.complete", key.hex())),
        );
        let view = self.root.join("views").join(key.hex());
        if view.exists() {
            fs::remove_dir_all(&view).map_err(io_err(&view))?;
        }
        let ck = self.root.join("checkpoints").join(key.hex());
        if ck.exists() {
            let _ = fs::remove_dir_all(ck);
        }
        Ok(entry)
    }

    /// The manifest of a committed entry (verified against its hash).
    pub fn manifest(&self, key: &StageKey) -> Result<Manifest, CacheError> {
        let entry = self.index.entry(key)?.ok_or_else(|| CacheError::Corrupt {
            key: key.hex(),
            message: "no such entry".into(),
        })?;
        self.manifest_of(key, &entry)
    }

    /// The manifest `entry` (of `key`) names, its blob verified.
    fn manifest_of(&self, key: &StageKey, entry: &Entry) -> Result<Manifest, CacheError> {
        let bytes = self
            .blobs
            .read_verified(&entry.manifest)
            .map_err(|m| CacheError::Corrupt {
                key: key.hex(),
                message: m,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
            key: key.hex(),
            message: format!("manifest unreadable: {e}"),
        })
    }

    /// A read-only directory holding the outputs of `key` (hard links into the blob
    /// store), built once and reused, checked before it is handed out: every file must
    /// still be what was committed (see [`stamp`]), else [`CacheError::Damaged`]. A reader
    /// builds its own views in its own folder (the holder's `views/` stay the holder's).
    pub fn materialize(&self, key: &StageKey) -> Result<PathBuf, CacheError> {
        let (entry, manifest, blobs) = self.checked(key)?;
        let view = self.build_view(key, &manifest, false)?;
        if self.view_mismatch(&view, &manifest, &blobs).is_ok() {
            return Ok(view);
        }
        // the blobs are right, the view is not (changed or removed in place): rebuilt
        let view = self.build_view(key, &manifest, true)?;
        self.view_mismatch(&view, &manifest, &blobs)
            .map_err(|(f, path, damage)| damaged(&entry, key, f, path, damage))?;
        Ok(view)
    }

    /// Checks that the result of `key` is still what was committed (its entry, manifest
    /// and every blob; see [`stamp`]), without building its view.
    pub fn check(&self, key: &StageKey) -> Result<(), CacheError> {
        self.checked(key).map(|_| ())
    }

    /// The entry and manifest of `key`, every blob checked, and each file's blob as the
    /// check found it.
    fn checked(&self, key: &StageKey) -> Result<(Entry, Manifest, Vec<FileId>), CacheError> {
        let entry = self.index.entry(key)?.ok_or_else(|| CacheError::Corrupt {
            key: key.hex(),
            message: "no such entry".into(),
        })?;
        let manifest = self.manifest_of(key, &entry)?;
        let mut blobs = Vec::with_capacity(manifest.files.len());
        for f in &manifest.files {
            let blob = self.blobs.path(&f.hash);
            let meta = stamp::check(&blob, &f.hash, f.size, f.stamp.as_ref())
                .map_err(|d| damaged(&entry, key, f, blob, d))?;
            blobs.push(FileId::of(&meta));
        }
        Ok((entry, manifest, blobs))
    }

    /// The first file of `view` that is not its (checked) blob (`blobs`, by file): the
    /// same inode, or the same content for a copy.
    fn view_mismatch<'m>(
        &self,
        view: &Path,
        manifest: &'m Manifest,
        blobs: &[FileId],
    ) -> Result<(), (&'m ManifestFile, PathBuf, Damage)> {
        for (f, blob) in manifest.files.iter().zip(blobs) {
            let path = view.join(&f.path);
            let same_inode = fs::metadata(&path).is_ok_and(|v| FileId::of(&v) == *blob);
            if !same_inode {
                stamp::check(&path, &f.hash, f.size, None).map_err(|d| (f, path, d))?;
            }
        }
        Ok(())
    }

    /// The lock held while the view of `key` is built or removed.
    fn view_lock(&self, key: &StageKey) -> std::sync::MutexGuard<'_, ()> {
        self.view_builds[usize::from(key.0[0]) % self.view_builds.len()]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The view folder of `key` (built from `manifest` unless a complete one exists and
    /// `rebuild` is false).
    fn build_view(
        &self,
        key: &StageKey,
        manifest: &Manifest,
        rebuild: bool,
    ) -> Result<PathBuf, CacheError> {
        let views = match &self.reader {
            None => self.root.join("views"),
            Some(reader) => reader.path().to_path_buf(),
        };
        let view = views.join(key.hex());
        let complete = views.join(format!("{}.complete", key.hex()));
        // one builder of a view at a time (they share its staging folder and its place)
        let _building = self.view_lock(key);
        let was_complete = complete.exists();
        if !rebuild && was_complete && view.is_dir() {
            return Ok(view);
        }
        if was_complete {
            let _ = fs::remove_file(&complete);
        }
        // Each step is tried first and repaired only where it fails: a stage reading 50,000
        // results builds 50,000 views, and the checks made up half the calls (#27).
        let staging =
            self.scratch_root()
                .join(format!("view-{}-{}", key.short(), std::process::id()));
        fresh_dir(&staging)?;
        for f in &manifest.files {
            let dest = staging.join(&f.path);
            if f.path.contains('/') {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
            }
            let src = self.blobs.path(&f.hash);
            if fs::hard_link(&src, &dest).is_err() {
                fs::copy(&src, &dest).map_err(io_err(&src))?;
            }
        }
        if fs::rename(&staging, &view).is_err() {
            // an earlier view in the way (a rename replaces an empty folder only), or the
            // views folder removed
            if view.exists() {
                fs::remove_dir_all(&view).map_err(io_err(&view))?;
            } else {
                fs::create_dir_all(&views).map_err(io_err(&views))?;
            }
            fs::rename(&staging, &view).map_err(io_err(&view))?;
        }
        fs::write(&complete, b"").map_err(io_err(&complete))?;
        Ok(view)
    }

    /// What the last run of a stage (by pipeline and instance name) was made from.
    pub fn last_run(&self, pipeline: &str, stage: &str) -> Result<Option<LastRun>, CacheError> {
        self.index.last_run(pipeline, stage)
    }

    /// Whether the last run of `stage` made `key` (hex): the no-op run's question for
    /// every cached stage, answered without reading the whole record.
    pub fn last_run_is(&self, pipeline: &str, stage: &str, key: &str) -> Result<bool, CacheError> {
        self.index.last_run_is(pipeline, stage, key)
    }

    /// Whether every last-run record of `pipeline` that `digest` sums (its stages' names
    /// and keys, [`last_runs_digest`]) is as it says: written after a run left all of
    /// them current, removed by any change to one. A no-op run of 100,000 stages asks
    /// this once instead of reading each record (#27).
    ///
    /// The digest is stored with the index's generation: any change to the index since
    /// (by any `pipe`, also one from before digests, which does not remove them) voids it.
    pub fn last_runs_vouched(&self, pipeline: &str, digest: &[u8; 32]) -> Result<bool, CacheError> {
        let Some(stored) = self.index.last_runs_digest(pipeline)? else {
            return Ok(false);
        };
        Ok(stored == self.vouching(digest)?)
    }

    /// Records that the last runs of `pipeline` are those `digest` sums (every one was
    /// checked or written by this run).
    pub fn vouch_last_runs(&self, pipeline: &str, digest: &[u8; 32]) -> Result<(), CacheError> {
        let value = self.vouching(digest)?;
        self.index.set_last_runs_digest(pipeline, &value)
    }

    /// `digest` followed by the index's generation now.
    fn vouching(&self, digest: &[u8; 32]) -> Result<Vec<u8>, CacheError> {
        let mut value = digest.to_vec();
        value.extend_from_slice(&self.index.generation()?.to_be_bytes());
        Ok(value)
    }

    pub fn record_last_run(
        &self,
        pipeline: &str,
        stage: &str,
        run: &LastRunOf,
    ) -> Result<(), CacheError> {
        self.index
            .set_last_run_value(pipeline, stage, stored_value::encode_last_run_of(run))
    }

    /// Makes the index durable (recorded last runs, commits and removals since the last
    /// snapshot write), writes the snapshot if the index changed, then removes the
    /// records of removed entries, whose removal is now durable.
    ///
    /// Killed between the index flush and the snapshot write, the snapshot on disk may
    /// list removed entries: the next open puts back the ones whose records and files are
    /// still there before it checks the index against the snapshot.
    pub fn flush(&self) -> Result<(), CacheError> {
        if let Some(writer) = &self.snapshot {
            write_snapshot(&self.index, &self.root, &writer.written)?;
        }
        self.index.flush()?;
        let removed = std::mem::take(
            &mut *self
                .unrecorded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for key in removed {
            // unless it was committed again since
            if !self.index.contains(&key)? {
                self.records.remove(&key)?;
            }
        }
        Ok(())
    }

    /// Drops an entry (and its view); its record goes at the next [`Cache::flush`], its
    /// blobs at the next gc.
    pub fn remove(&self, key: &StageKey) -> Result<(), CacheError> {
        self.index.remove(key)?;
        self.unrecorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(*key);
        self.index_changed();
        let view = self.root.join("views").join(key.hex());
        // not while a worker builds it
        let _removing = self.view_lock(key);
        let _ = fs::remove_file(
            self.root
                .join("views")
                .join(format!("{}.complete", key.hex())),
        );
        if view.exists() {
            fs::remove_dir_all(&view).map_err(io_err(&view))?;
        }
        Ok(())
    }

    /// Removes every entry not in `keep`, then every blob no remaining entry uses, and
    /// leftover temp files. Killed at any moment, it leaves no entry whose blobs are gone:
    /// the removals are flushed (index and snapshot) before the first blob is deleted.
    pub fn gc(&self, keep: &BTreeSet<StageKey>) -> Result<GcReport, CacheError> {
        let mut report = GcReport::default();
        let mut referenced: BTreeSet<String> = BTreeSet::new();
        for (key, entry) in self.entries()? {
            let manifest = match keep.contains(&key) {
                true => self.manifest(&key).ok(),
                false => None,
            };
            match manifest {
                Some(m) => {
                    referenced.insert(entry.manifest.clone());
                    referenced.extend(m.files.into_iter().map(|f| f.hash));
                }
                // not kept, or kept but its manifest is gone: its blobs may go
                None => {
                    self.remove(&key)?;
                    report.entries_removed += 1;
                }
            }
        }
        // the commit point of gc: from here on no entry names a blob that is deleted
        self.flush()?;
        for file in self.blobs.list()? {
            if !referenced.contains(&file.name) {
                self.blobs.delete_file(&file.path)?;
                report.blobs_removed += 1;
                report.bytes_freed += file.size;
            }
        }
        report.bytes_freed += self.records.remove_leftovers();
        let ck_root = self.root.join("checkpoints");
        if let Ok(rd) = fs::read_dir(&ck_root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if StageKey::from_hex(&name).is_none_or(|k| !keep.contains(&k)) {
                    report.bytes_freed += dir_size(&e.path());
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(report)
    }

    /// Total bytes per entry key, from manifests.
    pub fn sizes(&self) -> Result<BTreeMap<StageKey, u64>, CacheError> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|(k, e)| (k, e.bytes))
            .collect())
    }
}

/// The digest of a set of last-run records: each stage's name and key, in the order
/// given (see [`Cache::last_runs_vouched`]).
pub fn last_runs_digest<'a>(records: impl Iterator<Item = (&'a str, &'a StageKey)>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for (stage, key) in records {
        h.update(stage.as_bytes());
        h.update(&[0]);
        h.update(&key.0);
    }
    *h.finalize().as_bytes()
}

/// The error for the file `f` of `key`'s result, found at `path`.
fn damaged(
    entry: &Entry,
    key: &StageKey,
    f: &ManifestFile,
    path: PathBuf,
    damage: Damage,
) -> CacheError {
    CacheError::Damaged(Box::new(DamagedResult {
        stage: entry.stage.clone(),
        key: key.short(),
        file: f.path.clone(),
        path,
        damage,
    }))
}

fn rel_string(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Every regular file under `dir`, relative to `root`. A symbolic link is refused, never
/// followed: a link to `.` would copy the folder into itself, one to `/` walk the file
/// system, and one into the blob store would commit whatever it points at later.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CacheError> {
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let path = e.path();
        let ft = e.file_type().map_err(io_err(&path))?;
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        if ft.is_dir() {
            collect_files(root, &path, out)?;
        } else if ft.is_file() {
            out.push(rel);
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err(&path))?;
            return Err(CacheError::LinkInOutput {
                file: rel_string(&rel),
                target,
            });
        } else {
            return Err(CacheError::NotAFile {
                file: rel_string(&rel),
            });
        }
    }
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            // the entry's own type: a link to a folder is not walked
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                total += dir_size(&path);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}
