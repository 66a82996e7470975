//! The sled index: stage key -> entry, and (pipeline, stage name) -> what its last run
//! was made from (for `pipe plan`'s reasons). The process holding the cache also keeps a
//! JSON copy of both ([`IndexSnapshot`]) beside it, so that `plan`, `report` and `cache ls`
//! can read the cache while a long run holds it (sled allows one process at a time).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CacheError;
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
    /// Keys (hex) of the results it was computed from, so that `pipe cache verify` can
    /// find what was derived from a damaged result (empty for entries made before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
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

/// The whole index as JSON: entries by key (hex) and last runs by `pipeline\0stage`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexSnapshot {
    pub entries: std::collections::BTreeMap<String, Entry>,
    pub last_run: std::collections::BTreeMap<String, LastRun>,
}

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

/// Cloning is cheap (sled trees are shared handles): the snapshot writer thread keeps one.
#[derive(Clone)]
pub(super) struct Index {
    path: PathBuf,
    store: Store,
}

#[derive(Clone)]
enum Store {
    /// The live index of the process that holds the cache.
    Sled {
        db: sled::Db,
        entries: sled::Tree,
        last: sled::Tree,
    },
    /// Another process holds the cache: its last snapshot, read only.
    Snapshot(IndexSnapshot),
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
                store: Store::Sled { db, entries, last },
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

    /// A read-only index over `snapshot` (read from `path`).
    pub(super) fn from_snapshot(path: &Path, snapshot: IndexSnapshot) -> Self {
        Index {
            path: path.to_path_buf(),
            store: Store::Snapshot(snapshot),
        }
    }

    /// Everything in the index.
    pub(super) fn snapshot(&self) -> Result<IndexSnapshot, CacheError> {
        let last = match &self.store {
            Store::Snapshot(s) => return Ok(s.clone()),
            Store::Sled { last, .. } => last,
        };
        let mut out = IndexSnapshot::default();
        for (key, entry) in self.entries()? {
            out.entries.insert(key.hex(), entry);
        }
        for kv in last.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if let (Ok(k), Ok(run)) = (
                String::from_utf8(k.to_vec()),
                serde_json::from_slice::<LastRun>(&v),
            ) {
                out.last_run.insert(k, run);
            }
        }
        Ok(out)
    }

    fn read_only(&self) -> CacheError {
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
        match &self.store {
            Store::Sled { entries, .. } => entries.contains_key(key.0).map_err(|e| self.err(e)),
            Store::Snapshot(s) => Ok(s.entries.contains_key(&key.hex())),
        }
    }

    pub(super) fn entry(&self, key: &StageKey) -> Result<Option<Entry>, CacheError> {
        let entries = match &self.store {
            Store::Sled { entries, .. } => entries,
            Store::Snapshot(s) => return Ok(s.entries.get(&key.hex()).cloned()),
        };
        match entries.get(key.0).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| CacheError::Corrupt {
                    key: key.hex(),
                    message: format!("index entry unreadable: {e}"),
                }),
        }
    }

    pub(super) fn entries(&self) -> Result<Vec<(StageKey, Entry)>, CacheError> {
        let entries = match &self.store {
            Store::Sled { entries, .. } => entries,
            Store::Snapshot(s) => {
                return Ok(s
                    .entries
                    .iter()
                    .filter_map(|(k, e)| StageKey::from_hex(k).map(|k| (k, e.clone())))
                    .collect())
            }
        };
        let mut out = Vec::new();
        for kv in entries.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Ok(bytes) = <[u8; 32]>::try_from(k.as_ref()) else {
                continue;
            };
            if let Ok(entry) = serde_json::from_slice::<Entry>(&v) {
                out.push((StageKey(bytes), entry));
            }
        }
        Ok(out)
    }

    /// One atomic insert, then a flush: the commit point of a stage.
    pub(super) fn insert_entry(&self, key: &StageKey, entry: &Entry) -> Result<(), CacheError> {
        let Store::Sled { entries, .. } = &self.store else {
            return Err(self.read_only());
        };
        let bytes = serde_json::to_vec(entry).unwrap_or_default();
        entries.insert(key.0, bytes).map_err(|e| self.err(e))?;
        self.flush()
    }

    pub(super) fn remove(&self, key: &StageKey) -> Result<(), CacheError> {
        let Store::Sled { entries, .. } = &self.store else {
            return Err(self.read_only());
        };
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
        match &self.store {
            Store::Sled { last, .. } => Ok(last
                .get(key.as_bytes())
                .map_err(|e| self.err(e))?
                .and_then(|v| serde_json::from_slice(&v).ok())),
            Store::Snapshot(s) => Ok(s.last_run.get(&key).cloned()),
        }
    }

    pub(super) fn set_last_run(
        &self,
        pipeline: &str,
        stage: &str,
        run: &LastRun,
    ) -> Result<(), CacheError> {
        let Store::Sled { last, .. } = &self.store else {
            return Err(self.read_only());
        };
        let bytes = serde_json::to_vec(run).unwrap_or_default();
        last.insert(Self::last_key(pipeline, stage).as_bytes(), bytes)
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
