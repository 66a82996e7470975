//! The sled index: stage key -> entry, and (pipeline, stage name) -> what its last run
//! was made from (for `pipe plan`'s reasons).

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
}

/// Files of one stage output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<ManifestFile>,
}

/// One output file: relative path, blob hash, size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub hash: String,
    pub size: u64,
}

/// What a stage's most recent run was made from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastRun {
    pub key: String,
    pub material: KeyMaterial,
    /// Input name -> upstream stage names, to say which input changed.
    pub input_stages: std::collections::BTreeMap<String, Vec<String>>,
}

pub(super) struct Index {
    path: PathBuf,
    db: sled::Db,
    entries: sled::Tree,
    last: sled::Tree,
}

impl Index {
    pub(super) fn open(path: &Path) -> Result<Self, CacheError> {
        let err = |source| CacheError::Index {
            path: path.to_path_buf(),
            source,
        };
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .open()
            .map_err(err)?;
        let entries = db.open_tree("entries").map_err(err)?;
        let last = db.open_tree("last_run").map_err(err)?;
        Ok(Index {
            path: path.to_path_buf(),
            db,
            entries,
            last,
        })
    }

    fn err(&self, source: sled::Error) -> CacheError {
        CacheError::Index {
            path: self.path.clone(),
            source,
        }
    }

    pub(super) fn flush(&self) -> Result<(), CacheError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    pub(super) fn contains(&self, key: &StageKey) -> Result<bool, CacheError> {
        self.entries.contains_key(key.0).map_err(|e| self.err(e))
    }

    pub(super) fn entry(&self, key: &StageKey) -> Result<Option<Entry>, CacheError> {
        match self.entries.get(key.0).map_err(|e| self.err(e))? {
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
        let mut out = Vec::new();
        for kv in self.entries.iter() {
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
        let bytes = serde_json::to_vec(entry).unwrap_or_default();
        self.entries.insert(key.0, bytes).map_err(|e| self.err(e))?;
        self.flush()
    }

    pub(super) fn remove(&self, key: &StageKey) -> Result<(), CacheError> {
        self.entries.remove(key.0).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn last_key(pipeline: &str, stage: &str) -> Vec<u8> {
        format!("{pipeline}\0{stage}").into_bytes()
    }

    pub(super) fn last_run(
        &self,
        pipeline: &str,
        stage: &str,
    ) -> Result<Option<LastRun>, CacheError> {
        Ok(self
            .last
            .get(Self::last_key(pipeline, stage))
            .map_err(|e| self.err(e))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    pub(super) fn set_last_run(
        &self,
        pipeline: &str,
        stage: &str,
        run: &LastRun,
    ) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(run).unwrap_or_default();
        self.last
            .insert(Self::last_key(pipeline, stage), bytes)
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
