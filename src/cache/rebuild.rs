//! `pipe cache rebuild-index`: a new sled index from every result whose manifest and
//! files still verify. Candidates come from the entry records (`entries/`, one per
//! commit), the old index where it still opens, and the last index snapshot; the old index
//! is kept aside as `index.damaged-<unix time>`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::stamp;
use super::{
    index, io_err, record, take_lock, BlobStore, Cache, CacheError, Entry, IndexSnapshot, Manifest,
};
use crate::hash::StageKey;

/// What [`Cache::rebuild_index`] did.
#[derive(Debug, Clone, Default)]
pub struct Rebuilt {
    /// Results now in the new index.
    pub recovered: usize,
    /// Candidates left out, with why.
    pub skipped: Vec<Skipped>,
    /// Where the old index was moved (`None` when there was none).
    pub old_index: Option<PathBuf>,
}

/// A result that could not be recovered.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub key: String,
    pub stage: String,
    pub why: String,
}

impl Cache {
    /// Rebuilds the index of the cache at `root` (taking its lock) from every result
    /// whose manifest and files verify (each file rehashed); returns the open cache.
    pub fn rebuild_index(root: &Path) -> Result<(Cache, Rebuilt), CacheError> {
        let lock = take_lock(root)?.file;
        let index_dir = root.join("index");
        let mut candidates: BTreeMap<StageKey, Entry> = BTreeMap::new();
        let snapshot = read_snapshot(&root.join(super::SNAPSHOT_FILE));
        for (hex, entry) in &snapshot.entries {
            if let Some(key) = StageKey::from_hex(hex) {
                candidates.insert(key, entry.clone());
            }
        }
        if index_dir.exists() {
            // what the old index still says, where it opens at all
            if let Ok(entries) = index::Index::open(&index_dir).and_then(|old| old.entries()) {
                candidates.extend(entries);
            }
        }
        candidates.extend(record::Records::new(root).all());
        let mut rebuilt = Rebuilt::default();
        let snapshot_file = root.join(super::SNAPSHOT_FILE);
        if index_dir.exists() || snapshot_file.exists() {
            let aside = root.join(format!("index.damaged-{}", unix_now()));
            if index_dir.exists() {
                fs::rename(&index_dir, &aside).map_err(io_err(&index_dir))?;
            }
            fs::create_dir_all(&aside).map_err(io_err(&aside))?;
            // the snapshot goes with it: the new index starts empty
            let _ = fs::remove_file(root.join(super::GENERATION_FILE));
            if snapshot_file.exists() {
                let kept = aside.join(super::SNAPSHOT_FILE);
                fs::rename(&snapshot_file, &kept).map_err(io_err(&snapshot_file))?;
            }
            rebuilt.old_index = Some(aside);
        }
        // released as a clean close is: the open below must not take this for a killed
        // holder (the candidates above already hold every record)
        let _ = lock.set_len(0);
        drop(lock);
        let cache = Cache::open(root)?;
        for (key, entry) in candidates {
            match verify_candidate(&cache.blobs, &entry) {
                Ok(()) => {
                    cache.records.write(&key, &entry)?;
                    cache.index.insert_entry(&key, &entry)?;
                    rebuilt.recovered += 1;
                }
                Err(why) => {
                    cache.records.remove(&key)?;
                    rebuilt.skipped.push(Skipped {
                        key: key.hex(),
                        stage: entry.stage.clone(),
                        why,
                    });
                }
            }
        }
        // the records just written, on disk before the index that they back is flushed
        cache.wait_durable()?;
        for (at, run) in &snapshot.last_run {
            if let Some((pipeline, stage)) = at.split_once('\0') {
                cache.index.set_last_run(pipeline, stage, run)?;
            }
        }
        cache.index_changed();
        cache.flush()?;
        Ok((cache, rebuilt))
    }
}

/// Whether `entry`'s manifest and every file it lists verify (rehashed).
pub(super) fn verify_candidate(blobs: &BlobStore, entry: &Entry) -> Result<(), String> {
    let bytes = blobs
        .read_verified(&entry.manifest)
        .map_err(|e| format!("manifest: {e}"))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("manifest unreadable: {e}"))?;
    for f in &manifest.files {
        stamp::check(&blobs.path(&f.hash), &f.hash, f.size, None)
            .map_err(|d| format!("file {}: {d}", f.path))?;
    }
    Ok(())
}

/// The last snapshot of the index (empty when there is none or it does not parse).
fn read_snapshot(path: &Path) -> IndexSnapshot {
    fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
