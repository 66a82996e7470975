//! One file per committed result, `entries/<aa>/<key hex>.json` (the [`Entry`]: its
//! manifest's blob hash and what made it), written (tmp, rename) and synced just before the
//! index insert that commits it. With the blobs, these files hold everything the sled
//! index holds about results, so `pipe cache rebuild-index` can rebuild a damaged index.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{io_err, CacheError, Entry};
use crate::hash::StageKey;

/// The folder of entry records.
pub(super) struct Records {
    dir: PathBuf,
}

impl Records {
    pub(super) fn new(root: &Path) -> Self {
        Records {
            dir: root.join("entries"),
        }
    }

    fn path(&self, key: &StageKey) -> PathBuf {
        let hex = key.hex();
        self.dir.join(&hex[..2]).join(format!("{hex}.json"))
    }

    /// Writes the record of `key` (tmp, rename: never half a record), durable at the
    /// commit's wait at the cache's sync point.
    pub(super) fn write(&self, key: &StageKey, entry: &Entry) -> Result<(), CacheError> {
        self.write_with(key, entry, false)
    }

    /// [`Self::write`], synced before its rename (a results remote has no sync point).
    pub(super) fn write_synced(&self, key: &StageKey, entry: &Entry) -> Result<(), CacheError> {
        self.write_with(key, entry, true)
    }

    fn write_with(&self, key: &StageKey, entry: &Entry, sync: bool) -> Result<(), CacheError> {
        let path = self.path(key);
        let parent = path.parent().unwrap_or(&self.dir);
        let tmp = parent.join(format!(".tmp-{}-{}", std::process::id(), key.hex()));
        let f = super::with_parent(&tmp, || File::create(&tmp)).map_err(io_err(&tmp))?;
        // streamed: a table over 50,000 cells records 3.4 MB of input keys (#27)
        let mut out = std::io::BufWriter::new(f);
        serde_json::to_writer(&mut out, entry)
            .map_err(std::io::Error::from)
            .and_then(|()| out.flush())
            .and_then(|()| match sync {
                true => out.get_ref().sync_all(),
                false => Ok(()),
            })
            .map_err(io_err(&tmp))?;
        drop(out);
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// The record of `key`: `Ok(None)` when there is none, `Err((path, why))` when it
    /// does not read.
    pub(super) fn read(&self, key: &StageKey) -> Result<Option<Entry>, (PathBuf, String)> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| (path, e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err((path, e.to_string())),
        }
    }

    /// Removes the record of `key` (no error when there is none).
    pub(super) fn remove(&self, key: &StageKey) -> Result<(), CacheError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::Io { path, source: e }),
        }
    }

    /// Removes the temp files of records whose commit was killed before its rename
    /// (`entries/<aa>/.tmp-…`); returns the bytes freed. Only for the holder of the
    /// cache's lock, when none of its own commits runs (`gc`).
    pub(super) fn remove_leftovers(&self) -> u64 {
        let mut freed = 0;
        for f in self.files() {
            if !f.file_name().to_string_lossy().starts_with(".tmp-") {
                continue;
            }
            let size = f.metadata().map_or(0, |m| m.len());
            if fs::remove_file(f.path()).is_ok() {
                freed += size;
            }
        }
        freed
    }

    /// Every file in the record folders (`entries/<aa>/`), temp files included; folders
    /// that cannot be read are passed over.
    fn files(&self) -> impl Iterator<Item = fs::DirEntry> {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|sub| fs::read_dir(sub.path()).ok())
            .flat_map(|files| files.flatten())
    }

    /// Every readable record (unreadable ones, e.g. half-written temp files, are skipped).
    pub(super) fn all(&self) -> Vec<(StageKey, Entry)> {
        self.matching(|_| true)
    }

    /// The readable records of the keys `wanted` accepts (only those files are read).
    pub(super) fn matching(
        &self,
        mut wanted: impl FnMut(&StageKey) -> bool,
    ) -> Vec<(StageKey, Entry)> {
        let mut out = Vec::new();
        for f in self.files() {
            let name = f.file_name();
            let Some(key) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(StageKey::from_hex)
            else {
                continue;
            };
            if !wanted(&key) {
                continue;
            }
            let entry = fs::read(f.path())
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok());
            if let Some(entry) = entry {
                out.push((key, entry));
            }
        }
        out
    }
}
