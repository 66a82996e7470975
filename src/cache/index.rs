//! The sled index: stage key -> entry, and (pipeline, stage name) -> what its last run
//! was made from (for `pipe plan`'s reasons). The process holding the cache also keeps a
//! JSON copy of both ([`IndexSnapshot`]) beside it, so that `plan`, `report` and `cache ls`
//! can read the cache while a long run holds it (sled allows one process at a time).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::snapshot_text::SnapshotText;
use super::stored_value::{
    as_json, decode_entry, decode_last_run, encode_entry, encode_last_run, last_run_records,
    ValueKind,
};
use super::{io_err, CacheError};
use crate::hash::{KeyMaterial, StageKey};

/// A committed stage result.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Entry {
    /// Blob hash of the [`Manifest`].
    pub manifest: String,
    /// Instance name when it was made (informational: keys do not depend on names).
    pub stage: String,
    pub kind: String,
    /// Seconds the stage took.
    pub seconds: f64,
    /// Total output bytes.
    pub bytes: u64,
    /// Unix time of the commit.
    pub created: u64,
    /// Pipeline file and profile that made it.
    pub pipeline: String,
    pub profile: Option<String>,
    /// Keys of the results it was computed from, so that `pipe cache verify` can find
    /// what was derived from a damaged result (empty for entries made before); written as
    /// hex. Held as keys, not hex text: a table over 50,000 cells made 5 MB of text at
    /// its commit (#27).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<StageKey>,
}

/// Files of one stage output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<ManifestFile>,
}

/// One output file: relative path, blob hash, size, and its blob's stamp at commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub hash: String,
    pub size: u64,
    /// `None` in manifests written before stamps (such files are always rehashed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<super::Stamp>,
}

/// What a stage's most recent run was made from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastRun {
    pub key: String,
    pub material: KeyMaterial,
    /// Input name -> upstream stage names, to say which input changed.
    pub input_stages: std::collections::BTreeMap<String, Vec<String>>,
}

impl LastRun {
    /// How the stored record of a run of `key` begins: records are written
    /// `{"key":"<hex>",...` (the field comes first), so most are told by these bytes
    /// alone; any other text is read in full.
    pub(super) fn written_head(key: &str) -> String {
        format!("{{\"key\":{}", serde_json::Value::from(key))
    }
}

/// A last run to record, borrowed from the plan and the pipeline: what a [`LastRun`]
/// reads back as, without its copies (a table reading 50,000 cells made 8 MB of hex keys
/// and names to record one, #27). Stored as [`LastRun`] is.
#[derive(Debug)]
pub struct LastRunOf<'a> {
    pub key: StageKey,
    pub kind: &'a str,
    pub version: u32,
    /// The params' canonical JSON text.
    pub params: &'a str,
    /// Input name (in order) -> the results bound to it.
    pub inputs: Vec<(&'a str, Vec<RecordedInput<'a>>)>,
    pub fingerprint: Option<&'a str>,
    pub backend: Option<&'a str>,
}

/// One result a recorded run was given.
#[derive(Debug, Clone, Copy)]
pub struct RecordedInput<'a> {
    pub key: StageKey,
    /// The file or folder of it bound (`stage.sub/path`), if not the whole output.
    pub sub: Option<&'a str>,
    /// The stage instance that made it.
    pub stage: &'a str,
}

/// The whole index as JSON: entries by key (hex) and last runs by `pipeline\0stage`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexSnapshot {
    /// The index's [`Index::generation`] when the snapshot was taken (0 before there was one).
    #[serde(default)]
    pub generation: u64,
    pub entries: std::collections::BTreeMap<String, Entry>,
    pub last_run: std::collections::BTreeMap<String, LastRun>,
}

/// The key of the change count in sled's default tree.
const GENERATION: &[u8] = b"generation";

/// The error for what sled said about the index at `path`: damage (corrupt data, a
/// format sled does not know) gets [`CacheError::IndexDamaged`] and its way out.
pub(super) fn index_error(path: &Path, e: sled::Error) -> CacheError {
    match e {
        sled::Error::Io(e) => CacheError::Index {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        sled::Error::Corruption { at, .. } => damaged(
            path,
            match at {
                Some(at) => format!("corrupt data at {at:?}"),
                None => "corrupt data".into(),
            },
        ),
        sled::Error::Unsupported(what) => damaged(path, what),
        sled::Error::ReportableBug(what) => damaged(path, what),
        sled::Error::CollectionNotFound(_) => damaged(path, "a tree is missing".into()),
    }
}

/// [`CacheError::IndexDamaged`] for the index at `path` (its blobs beside it).
fn damaged(path: &Path, detail: String) -> CacheError {
    CacheError::IndexDamaged {
        path: path.to_path_buf(),
        detail,
        blobs: path.with_file_name("blobs"),
    }
}

/// The snapshot that held the holder's index when it opened it. sled keeps every tree
/// node it reads in memory: a no-op run checks each cached result's entry, a run after an
/// edit asks of each cached stage whether its last run is current, and each snapshot
/// written after a run read the whole index back out of sled; at 100,000 results these
/// reads were 84, 33 and 91 MB of a run's peak (#27). So the holder reads the entries and
/// last runs it has not changed since from this snapshot (values read from its file and
/// dropped), and writes each later snapshot as this one less what it changed, plus what it
/// changed as sled has it now ([`Index::write_merged_snapshot`]).
pub(super) struct OpenedAs {
    path: PathBuf,
    /// The index generation at open, which the snapshot must hold.
    generation: u64,
    /// Its entries, scanned at the first read (`None`: unreadable, or not of
    /// `generation`: sled answers).
    scanned: std::sync::OnceLock<Option<SnapshotText>>,
    /// Its last runs, scanned apart at the first read of one (a no-op run reads none).
    last_runs: std::sync::OnceLock<Option<SnapshotText>>,
    changes: std::sync::Mutex<Changes>,
}

/// What this process changed in the index since it opened it (each noted before its
/// change, under the change lock): sled answers for these.
#[derive(Default)]
struct Changes {
    entries: std::collections::HashSet<StageKey>,
    /// By `pipeline\0stage`.
    last_runs: std::collections::HashSet<String>,
    /// Too many to keep track of (most of a large index, as in a cold run): sled answers
    /// for everything.
    given_up: bool,
}

impl Changes {
    /// Below this many changes the sets are kept whatever the index's size.
    const ALWAYS_KEPT: usize = 4096;

    fn len(&self) -> usize {
        self.entries.len() + self.last_runs.len()
    }
}

impl OpenedAs {
    fn changes(&self) -> std::sync::MutexGuard<'_, Changes> {
        self.changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The snapshot's entries, scanned at the first read.
    fn snapshot(&self) -> Option<&SnapshotText> {
        self.scanned_once(&self.scanned, SnapshotText::scan_entries)
    }

    /// The snapshot's last runs, scanned at the first read of one.
    fn last_runs(&self) -> Option<&SnapshotText> {
        self.scanned_once(&self.last_runs, SnapshotText::scan_last_runs)
    }

    /// `cell`, scanned from the snapshot's file by `scan` the first time; `None` where
    /// the file no longer scans or no longer holds [`OpenedAs::generation`].
    fn scanned_once<'a>(
        &self,
        cell: &'a std::sync::OnceLock<Option<SnapshotText>>,
        scan: fn(std::fs::File) -> Result<SnapshotText, super::snapshot_text::ScanError>,
    ) -> Option<&'a SnapshotText> {
        cell.get_or_init(|| {
            let file = std::fs::File::open(&self.path).ok()?;
            scan(file)
                .ok()
                .filter(|s| s.generation() == self.generation)
        })
        .as_ref()
    }

    /// Whether what `changed` looks for is as the snapshot has it: this process has not
    /// changed it, nor given up keeping track.
    fn unchanged(&self, changed: impl FnOnce(&Changes) -> bool) -> bool {
        let changes = self.changes();
        !changes.given_up && !changed(&changes)
    }

    /// Notes a change; past a quarter of the index (results and last runs alike) gives
    /// up keeping track, which frees the sets.
    fn note(&self, change: impl FnOnce(&mut Changes)) {
        let mut changes = self.changes();
        if changes.given_up {
            return;
        }
        change(&mut changes);
        if changes.len() > Changes::ALWAYS_KEPT {
            let results = self.snapshot().map_or(0, |s| s.entry_count());
            // last runs about as many as results
            if changes.len() > results / 2 {
                *changes = Changes {
                    given_up: true,
                    ..Changes::default()
                };
            }
        }
    }
}

/// Writes `"name":value` to a snapshot's text (`path` names it in an error), after a comma
/// where `any` member came before it; the stored value is listed as JSON, and one that does
/// not decode is left out, as a full parse of the snapshot would leave it out.
fn write_member(
    out: &mut impl std::io::Write,
    path: &Path,
    any: &mut bool,
    name: &str,
    (value, kind): (&[u8], ValueKind),
) -> Result<(), CacheError> {
    let Some(value) = as_json(value, kind) else {
        return Ok(());
    };
    if std::mem::replace(any, true) {
        out.write_all(b",").map_err(io_err(path))?;
    }
    serde_json::to_writer(&mut *out, name).map_err(|e| io_err(path)(e.into()))?;
    out.write_all(b":").map_err(io_err(path))?;
    value.write_to(out).map_err(io_err(path))
}

/// Cloning is cheap (sled trees are shared handles): the snapshot writer thread keeps one.
#[derive(Clone)]
pub(super) struct Index {
    path: PathBuf,
    store: Store,
    /// Held across each change (its generation bump and the change itself) and across
    /// the reading of a snapshot, so that a snapshot that says generation N holds every
    /// change up to N — never a bump whose change it missed.
    changing: std::sync::Arc<std::sync::Mutex<()>>,
}

#[derive(Clone)]
enum Store {
    /// The live index of the process that holds the cache.
    Sled {
        db: sled::Db,
        entries: sled::Tree,
        last: sled::Tree,
        /// The snapshot it was opened with, read for what this process has not changed
        /// (see [`Index::read_unchanged_from`]).
        opened_as: Option<std::sync::Arc<OpenedAs>>,
    },
    /// Another process holds the cache: its last snapshot, read only.
    Snapshot(SnapshotText),
}

impl Index {
    pub(super) fn open(path: &Path) -> Result<Self, CacheError> {
        // sled may panic on some damaged files instead of saying so
        let opened = std::panic::catch_unwind(|| -> Result<Self, sled::Error> {
            let db = sled::Config::new().path(path).flush_every_ms(None).open()?;
            let entries = db.open_tree("entries")?;
            let last = db.open_tree("last_run")?;
            Ok(Index {
                path: path.to_path_buf(),
                store: Store::Sled {
                    db,
                    entries,
                    last,
                    opened_as: None,
                },
                changing: Default::default(),
            })
        });
        match opened {
            Ok(Ok(index)) => Ok(index),
            Ok(Err(e)) => Err(index_error(path, e)),
            Err(panic) => Err(damaged(
                path,
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "sled failed to read it".into()),
            )),
        }
    }

    /// Has the entries and last runs this process has not changed read from the snapshot
    /// at `snapshot`, which holds the index as it is now, at `generation` (the caller found
    /// it so; each scan checks again). Its lists are the same as sled's: values that would
    /// not parse were left out of it, and are taken for absent (their stage runs again).
    pub(super) fn read_unchanged_from(&mut self, snapshot: &Path, generation: u64) {
        if let Store::Sled { opened_as, .. } = &mut self.store {
            *opened_as = Some(std::sync::Arc::new(OpenedAs {
                path: snapshot.to_path_buf(),
                generation,
                scanned: Default::default(),
                last_runs: Default::default(),
                changes: Default::default(),
            }));
        }
    }

    /// The snapshot that still lists the entry of `key` as it is, if any (see
    /// [`OpenedAs`]).
    fn unchanged_snapshot(&self, key: &StageKey) -> Option<&SnapshotText> {
        let opened = self.opened_as()?;
        opened
            .unchanged(|c| c.entries.contains(key))
            .then(|| opened.snapshot())
            .flatten()
    }

    /// The snapshot that still holds the last run at `at` as it is, if any.
    fn unchanged_last_runs(&self, at: &str) -> Option<&SnapshotText> {
        let opened = self.opened_as()?;
        opened
            .unchanged(|c| c.last_runs.contains(at))
            .then(|| opened.last_runs())
            .flatten()
    }

    fn opened_as(&self) -> Option<&OpenedAs> {
        match &self.store {
            Store::Sled {
                opened_as: Some(opened),
                ..
            } => Some(opened),
            _ => None,
        }
    }

    /// A read-only index over `snapshot` (read from `path`).
    pub(super) fn from_snapshot(path: &Path, snapshot: SnapshotText) -> Self {
        Index {
            path: path.to_path_buf(),
            store: Store::Snapshot(snapshot),
            changing: Default::default(),
        }
    }

    /// Writes everything in the index to `out` as the JSON text of an [`IndexSnapshot`];
    /// returns the generation it holds (`path` names `out` in an error). The stored values
    /// are JSON already: they are copied into the text as they are (each checked to be
    /// one JSON value; one that is not is left out, as a full parse left it out), not
    /// parsed and written again — at 100,000 results that round trip cost seconds and a
    /// gigabyte. The text is streamed, never held whole (78 MB at 100,000 results, #27).
    pub(super) fn write_snapshot_json(
        &self,
        out: &mut impl std::io::Write,
        path: &Path,
    ) -> Result<u64, CacheError> {
        let (entries, last) = match &self.store {
            Store::Snapshot(s) => {
                let snapshot = s.to_snapshot();
                serde_json::to_writer(&mut *out, &snapshot).map_err(|e| io_err(path)(e.into()))?;
                return Ok(snapshot.generation);
            }
            Store::Sled { entries, last, .. } => (entries, last),
        };
        if let Some(generation) = self.write_merged_snapshot(out, path)? {
            return Ok(generation);
        }
        // The generation first, under the change lock, but not the read: a commit or a
        // last-run record made while the entries are read is not held up (at 100,000
        // results a read takes long enough to stall every worker for a tenth of a cold
        // run, #27). Such a change may or may not be in the text; it leaves the index's
        // generation above the one written here, so this snapshot is never taken for
        // current. An entry listed is safe to hand a reader: its record and blobs were
        // made durable before it was inserted.
        let generation = {
            let _no_change_meanwhile = self.change_lock();
            self.generation()?
        };
        write!(out, "{{\"generation\":{generation},\"entries\":{{").map_err(io_err(path))?;
        let mut any = false;
        for kv in entries.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Ok(bytes) = <[u8; 32]>::try_from(k.as_ref()) else {
                continue;
            };
            write_member(
                out,
                path,
                &mut any,
                &StageKey(bytes).hex(),
                (&v, ValueKind::Entry),
            )?;
        }
        out.write_all(b"},\"last_run\":{").map_err(io_err(path))?;
        let mut any = false;
        for kv in last.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Ok(at) = std::str::from_utf8(&k) else {
                continue;
            };
            write_member(out, path, &mut any, at, (&v, ValueKind::LastRun))?;
        }
        out.write_all(b"}}").map_err(io_err(path))?;
        Ok(generation)
    }

    /// [`Index::write_snapshot_json`] from the snapshot the holder opened with and what it
    /// changed since (see [`OpenedAs`]); `None` where that is not known (the caller then
    /// reads the whole index from sled).
    fn write_merged_snapshot(
        &self,
        out: &mut impl std::io::Write,
        path: &Path,
    ) -> Result<Option<u64>, CacheError> {
        let Store::Sled {
            entries,
            last,
            opened_as: Some(opened),
            ..
        } = &self.store
        else {
            return Ok(None);
        };
        let Some(base) = opened.snapshot() else {
            return Ok(None);
        };
        // every change the generation counts is in the sets (both are taken under the
        // change lock); a later one may or may not be in the text, as below
        let (generation, mut changed_entries, mut changed_last) = {
            let _no_change_meanwhile = self.change_lock();
            let changes = opened.changes();
            if changes.given_up {
                return Ok(None);
            }
            let changed_entries: Vec<StageKey> = changes.entries.iter().copied().collect();
            let changed_last: Vec<String> = changes.last_runs.iter().cloned().collect();
            (self.generation()?, changed_entries, changed_last)
        };
        changed_entries.sort_unstable();
        changed_last.sort_unstable();
        // a text that no longer scans (its file cut since the open) is not copied: sled
        // gives the whole index instead
        let Ok(kept) = base.kept_members(
            |k| changed_entries.binary_search(k).is_ok(),
            |at| {
                changed_last
                    .binary_search_by(|c| c.as_str().cmp(at))
                    .is_ok()
            },
        ) else {
            return Ok(None);
        };
        write!(out, "{{\"generation\":{generation},\"entries\":{{").map_err(io_err(path))?;
        let mut any = kept.copy_entries(base, out).map_err(io_err(path))?;
        for key in &changed_entries {
            if let Some(v) = entries.get(key.0).map_err(|e| self.err(e))? {
                write_member(out, path, &mut any, &key.hex(), (&v, ValueKind::Entry))?;
            }
        }
        out.write_all(b"},\"last_run\":{").map_err(io_err(path))?;
        let mut any = kept.copy_last_runs(base, out).map_err(io_err(path))?;
        for at in &changed_last {
            if let Some(v) = last.get(at.as_bytes()).map_err(|e| self.err(e))? {
                write_member(out, path, &mut any, at, (&v, ValueKind::LastRun))?;
            }
        }
        out.write_all(b"}}").map_err(io_err(path))?;
        Ok(Some(generation))
    }

    pub(super) fn read_only(&self) -> CacheError {
        CacheError::ReadOnly {
            path: self.path.clone(),
        }
    }

    fn err(&self, source: sled::Error) -> CacheError {
        index_error(&self.path, source)
    }

    pub(super) fn flush(&self) -> Result<(), CacheError> {
        match &self.store {
            Store::Sled { db, .. } => db.flush().map(|_| ()).map_err(|e| self.err(e)),
            Store::Snapshot(_) => Ok(()),
        }
    }

    pub(super) fn contains(&self, key: &StageKey) -> Result<bool, CacheError> {
        if let Some(s) = self.unchanged_snapshot(key) {
            return Ok(s.contains(key));
        }
        match &self.store {
            Store::Sled { entries, .. } => entries.contains_key(key.0).map_err(|e| self.err(e)),
            Store::Snapshot(s) => Ok(s.contains(key)),
        }
    }

    pub(super) fn entry(&self, key: &StageKey) -> Result<Option<Entry>, CacheError> {
        let entries = match (&self.store, self.unchanged_snapshot(key)) {
            (Store::Sled { entries, .. }, None) => entries,
            (Store::Snapshot(s), _) | (_, Some(s)) => {
                return s.entry(key).map_err(|e| CacheError::Corrupt {
                    key: key.hex(),
                    message: format!("index entry unreadable: {e}"),
                })
            }
        };
        match entries.get(key.0).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => decode_entry(&v).map(Some).map_err(|e| CacheError::Corrupt {
                key: key.hex(),
                message: format!("index entry unreadable: {e}"),
            }),
        }
    }

    pub(super) fn entries(&self) -> Result<Vec<(StageKey, Entry)>, CacheError> {
        let entries = match &self.store {
            Store::Sled { entries, .. } => entries,
            Store::Snapshot(s) => return Ok(s.entries()),
        };
        let mut out = Vec::new();
        for kv in entries.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Ok(bytes) = <[u8; 32]>::try_from(k.as_ref()) else {
                continue;
            };
            if let Ok(entry) = decode_entry(&v) {
                out.push((StageKey(bytes), entry));
            }
        }
        Ok(out)
    }

    /// How many times the index has changed (0 for an index from before the count): a
    /// snapshot that holds the same number holds the same index, so opening the cache
    /// neither rewrites nor rechecks it. Bumped *before* each change, so a crash between
    /// the two leaves a count ahead of every snapshot, never behind; a log that sled read
    /// only up to some damage has lost its later bumps with its later changes.
    pub(super) fn generation(&self) -> Result<u64, CacheError> {
        match &self.store {
            Store::Sled { db, .. } => Ok(db
                .get(GENERATION)
                .map_err(|e| self.err(e))?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map_or(0, u64::from_be_bytes)),
            Store::Snapshot(s) => Ok(s.generation()),
        }
    }

    /// Held while the index changes (see [`Index::changing`]).
    fn change_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Has sled answer for the entry of `key` from now on (see [`OpenedAs`]); the caller
    /// holds the change lock, before the change.
    fn note_change(&self, key: &StageKey) {
        if let Some(opened) = self.opened_as() {
            opened.note(|c| {
                c.entries.insert(*key);
            });
        }
    }

    /// [`Index::note_change`] for the last-run record at `at`.
    fn note_last_run_change(&self, at: &str) {
        if let Some(opened) = self.opened_as() {
            opened.note(|c| {
                c.last_runs.insert(at.to_string());
            });
        }
    }

    /// Counts one more change of the index (see [`Index::generation`]); the caller holds
    /// [`Index::change_lock`] until the change is made.
    fn bump_generation(&self) -> Result<(), CacheError> {
        let Store::Sled { db, .. } = &self.store else {
            return Err(self.read_only());
        };
        db.update_and_fetch(GENERATION, |old| {
            let n = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map_or(0, u64::from_be_bytes);
            Some((n + 1).to_be_bytes().to_vec())
        })
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// One atomic insert, then a flush: the commit point of a stage.
    pub(super) fn insert_entry(&self, key: &StageKey, entry: &Entry) -> Result<(), CacheError> {
        let Store::Sled { entries, .. } = &self.store else {
            return Err(self.read_only());
        };
        let bytes = encode_entry(entry);
        {
            let _changing = self.change_lock();
            self.bump_generation()?;
            self.note_change(key);
            entries.insert(key.0, bytes).map_err(|e| self.err(e))?;
        }
        // Not flushed here: the entry's record (written and fsynced before) is what makes
        // the commit durable. sled is flushed before each snapshot write and when the cache
        // closes; after a kill, `Cache::open` puts back the recorded entries sled lost. A
        // flush a commit cost a tenth of a cold run of trivial stages (#27).
        Ok(())
    }

    pub(super) fn remove(&self, key: &StageKey) -> Result<(), CacheError> {
        let Store::Sled { entries, .. } = &self.store else {
            return Err(self.read_only());
        };
        let _changing = self.change_lock();
        self.bump_generation()?;
        self.note_change(key);
        entries.remove(key.0).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn last_key(pipeline: &str, stage: &str) -> String {
        format!("{pipeline}\0{stage}")
    }

    pub(super) fn last_run(
        &self,
        pipeline: &str,
        stage: &str,
    ) -> Result<Option<LastRun>, CacheError> {
        let key = Self::last_key(pipeline, stage);
        if let Some(s) = self.unchanged_last_runs(&key) {
            return Ok(s.last_run(&key));
        }
        match &self.store {
            Store::Sled { last, .. } => Ok(last
                .get(key.as_bytes())
                .map_err(|e| self.err(e))?
                .and_then(|v| decode_last_run(&v).ok())),
            Store::Snapshot(s) => Ok(s.last_run(&key)),
        }
    }

    /// Whether the last run of `stage` recorded `key` (hex), without reading the rest of
    /// the record: a no-op run asks this of every cached stage.
    pub(super) fn last_run_is(
        &self,
        pipeline: &str,
        stage: &str,
        key: &str,
    ) -> Result<bool, CacheError> {
        let at = Self::last_key(pipeline, stage);
        let last = match (&self.store, self.unchanged_last_runs(&at)) {
            (Store::Sled { last, .. }, None) => last,
            (Store::Snapshot(s), _) | (_, Some(s)) => return Ok(s.last_run_is(&at, key)),
        };
        let Some(v) = last.get(at.as_bytes()).map_err(|e| self.err(e))? else {
            return Ok(false);
        };
        Ok(last_run_records(&v, key))
    }

    pub(super) fn set_last_run(
        &self,
        pipeline: &str,
        stage: &str,
        run: &LastRun,
    ) -> Result<(), CacheError> {
        self.set_last_run_value(pipeline, stage, encode_last_run(run))
    }

    /// Records a last run given as its stored value.
    pub(super) fn set_last_run_value(
        &self,
        pipeline: &str,
        stage: &str,
        bytes: Vec<u8>,
    ) -> Result<(), CacheError> {
        let Store::Sled { last, .. } = &self.store else {
            return Err(self.read_only());
        };
        let at = Self::last_key(pipeline, stage);
        let _changing = self.change_lock();
        self.bump_generation()?;
        self.note_last_run_change(&at);
        // a record changes: the pipeline's digest no longer vouches for its records
        if let Store::Sled { db, .. } = &self.store {
            db.remove(Self::digest_key(pipeline))
                .map_err(|e| self.err(e))?;
        }
        last.insert(at.as_bytes(), bytes).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn digest_key(pipeline: &str) -> Vec<u8> {
        format!("last-runs-digest\0{pipeline}").into_bytes()
    }

    /// The digest that vouches for the last-run records of `pipeline` (see
    /// [`super::Cache::last_runs_vouched`]); removed by every change to one of them.
    pub(super) fn last_runs_digest(&self, pipeline: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match &self.store {
            Store::Sled { db, .. } => Ok(db
                .get(Self::digest_key(pipeline))
                .map_err(|e| self.err(e))?
                .map(|v| v.to_vec())),
            Store::Snapshot(_) => Ok(None),
        }
    }

    pub(super) fn set_last_runs_digest(
        &self,
        pipeline: &str,
        digest: &[u8],
    ) -> Result<(), CacheError> {
        let Store::Sled { db, .. } = &self.store else {
            return Err(self.read_only());
        };
        db.insert(Self::digest_key(pipeline), digest)
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_text_holds_every_entry_and_last_run_as_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Index::open(&dir.path().join("index")).expect("opens");
        let key = StageKey([3; 32]);
        let entry = Entry {
            stage: "a \"quoted\" [seed=1]".into(),
            seconds: 2.5,
            ..Entry::default()
        };
        index.insert_entry(&key, &entry).expect("insert");
        let run = LastRun {
            key: key.hex(),
            material: KeyMaterial {
                kind: "shell".into(),
                version: 1,
                params: serde_json::json!({"cmd": "echo"}),
                inputs: Default::default(),
                fingerprint: None,
                backend: None,
            },
            input_stages: Default::default(),
        };
        index.set_last_run("/p.yaml", "a", &run).expect("last run");
        let mut text = Vec::new();
        let generation = index
            .write_snapshot_json(&mut text, Path::new("snapshot"))
            .expect("snapshot");
        assert_eq!(generation, 2, "two changes counted");
        let read: IndexSnapshot = serde_json::from_slice(&text).expect("valid JSON");
        assert_eq!(read.generation, 2);
        assert_eq!(read.entries[&key.hex()].stage, entry.stage);
        assert_eq!(read.last_run["/p.yaml\0a"], run);
    }

    #[test]
    fn json_values_an_earlier_build_stored_are_read_and_snapshotted_beside_binary_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Index::open(&dir.path().join("index")).expect("opens");
        let Store::Sled { entries, last, .. } = &index.store else {
            panic!("a holder's index is sled's");
        };
        let (old, new) = (StageKey([1; 32]), StageKey([2; 32]));
        let entry = |stage: &str| Entry {
            manifest: StageKey([9; 32]).hex(),
            stage: stage.into(),
            inputs: vec![old],
            ..Entry::default()
        };
        // as builds before the binary form wrote them
        let json = serde_json::to_vec(&entry("old")).expect("json");
        entries.insert(old.0, json).expect("insert");
        let at = Index::last_key("/p.yaml", "old");
        let run = run_of(&old, "echo old");
        last.insert(at.as_bytes(), serde_json::to_vec(&run).expect("json"))
            .expect("insert");
        index.insert_entry(&new, &entry("new")).expect("insert");
        index
            .set_last_run("/p.yaml", "new", &run_of(&new, "echo new"))
            .expect("last run");

        assert_eq!(
            index.entry(&old).expect("reads").expect("there").stage,
            "old"
        );
        assert_eq!(
            index.entry(&new).expect("reads").expect("there").inputs,
            vec![old]
        );
        assert_eq!(index.last_run("/p.yaml", "old").expect("reads"), Some(run));
        assert!(index
            .last_run_is("/p.yaml", "old", &old.hex())
            .expect("reads"));
        assert!(index
            .last_run_is("/p.yaml", "new", &new.hex())
            .expect("reads"));
        assert!(!index
            .last_run_is("/p.yaml", "new", &old.hex())
            .expect("reads"));
        let snapshot = full_snapshot(&index);
        assert_eq!(snapshot.entries[&old.hex()].stage, "old");
        assert_eq!(
            snapshot.entries[&new.hex()].manifest,
            StageKey([9; 32]).hex()
        );
        assert_eq!(snapshot.last_run["/p.yaml\0new"], run_of(&new, "echo new"));
    }

    /// The index as a snapshot written from sled alone.
    fn full_snapshot(index: &Index) -> IndexSnapshot {
        let mut whole = index.clone();
        if let Store::Sled { opened_as, .. } = &mut whole.store {
            *opened_as = None;
        }
        let mut text = Vec::new();
        whole
            .write_snapshot_json(&mut text, Path::new("full"))
            .expect("snapshot");
        serde_json::from_slice(&text).expect("valid JSON")
    }

    fn run_of(key: &StageKey, cmd: &str) -> LastRun {
        LastRun {
            key: key.hex(),
            material: KeyMaterial {
                kind: "shell".into(),
                version: 1,
                params: serde_json::json!({ "cmd": cmd }),
                inputs: Default::default(),
                fingerprint: None,
                backend: None,
            },
            input_stages: Default::default(),
        }
    }

    #[test]
    fn the_holder_reads_unchanged_entries_from_its_opening_snapshot_and_writes_the_next_one_from_it(
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index");
        let snapshot = dir.path().join("index-snapshot.json");
        let entry = |stage: &str| Entry {
            stage: stage.into(),
            ..Entry::default()
        };
        let keys: Vec<StageKey> = (0..6u8).map(|i| StageKey([i; 32])).collect();
        let generation = {
            let index = Index::open(&path).expect("opens");
            for (i, key) in keys.iter().enumerate() {
                index
                    .insert_entry(key, &entry(&format!("s{i}")))
                    .expect("insert");
                index
                    .set_last_run("/p.yaml", &format!("s{i}"), &run_of(key, "echo"))
                    .expect("last run");
            }
            let mut out = std::fs::File::create(&snapshot).expect("create");
            let generation = index
                .write_snapshot_json(&mut out, &snapshot)
                .expect("written");
            index.flush().expect("flush");
            generation
        };
        let mut index = Index::open(&path).expect("reopens");
        index.read_unchanged_from(&snapshot, generation);
        assert!(
            index.unchanged_snapshot(&keys[0]).is_some(),
            "read from the snapshot"
        );
        assert_eq!(
            index.entry(&keys[0]).expect("reads").expect("there").stage,
            "s0"
        );
        // changes: one entry replaced, one removed, one added, a last run rewritten
        index
            .insert_entry(&keys[1], &entry("s1 again"))
            .expect("insert");
        index.remove(&keys[2]).expect("remove");
        let added = StageKey([9; 32]);
        index.insert_entry(&added, &entry("new")).expect("insert");
        index
            .set_last_run("/p.yaml", "s3", &run_of(&keys[3], "echo again"))
            .expect("last run");
        assert!(index.unchanged_snapshot(&keys[1]).is_none(), "sled answers");
        assert_eq!(
            index.entry(&keys[1]).expect("reads").expect("there").stage,
            "s1 again"
        );
        assert!(!index.contains(&keys[2]).expect("reads"));
        assert!(index.contains(&added).expect("reads"));
        assert!(index.contains(&keys[4]).expect("reads"));
        assert!(
            index.unchanged_last_runs("/p.yaml\0s4").is_some(),
            "read from the snapshot"
        );
        assert!(index
            .last_run_is("/p.yaml", "s4", &keys[4].hex())
            .expect("reads"));
        assert!(!index
            .last_run_is("/p.yaml", "s4", &keys[5].hex())
            .expect("reads"));
        assert_eq!(
            index.last_run("/p.yaml", "s4").expect("reads"),
            Some(run_of(&keys[4], "echo"))
        );
        assert!(
            index.unchanged_last_runs("/p.yaml\0s3").is_none(),
            "sled answers"
        );
        assert_eq!(
            index.last_run("/p.yaml", "s3").expect("reads"),
            Some(run_of(&keys[3], "echo again"))
        );
        let mut text = Vec::new();
        let written = index
            .write_snapshot_json(&mut text, Path::new("merged"))
            .expect("merged snapshot");
        assert_eq!(written, generation + 4);
        let merged: IndexSnapshot = serde_json::from_slice(&text).expect("valid JSON");
        let whole = full_snapshot(&index);
        assert_eq!(
            serde_json::to_value(&merged).expect("json"),
            serde_json::to_value(&whole).expect("json"),
            "the merged snapshot is the one sled would give"
        );
        assert_eq!(merged.entries.len(), 6);
        assert_eq!(
            merged.last_run["/p.yaml\0s3"].material.params["cmd"],
            "echo again"
        );
        // past what it keeps track of (a cold run's worth), sled answers for everything
        for i in 0..=Changes::ALWAYS_KEPT as u32 {
            let mut bytes = [0xab; 32];
            bytes[..4].copy_from_slice(&i.to_be_bytes());
            index
                .insert_entry(&StageKey(bytes), &entry("bulk"))
                .expect("insert");
        }
        assert!(index.unchanged_snapshot(&keys[4]).is_none(), "given up");
        assert!(index.contains(&keys[4]).expect("reads"));
        let mut text = Vec::new();
        index
            .write_snapshot_json(&mut text, Path::new("whole"))
            .expect("snapshot");
        let after: IndexSnapshot = serde_json::from_slice(&text).expect("valid JSON");
        assert_eq!(after.entries.len(), 6 + Changes::ALWAYS_KEPT + 1);
    }
}
