//! A results remote: a folder that holds results the way a cache does (one record a
//! result under `entries/<aa>/<key>.json`, content-addressed files under
//! `blobs/<aa>/<blake3>`) but with no index, no lock and no machine-specific stamps, so
//! that it can be a shared folder, an NFS mount or a folder committed to a git repository.
//! `pipe cache push` copies results into one, `pipe cache pull` copies back the ones a
//! pipeline needs (as `dvc push` / `dvc pull` do with a DVC remote).
//!
//! Keys name results by what made them, not where, so a result pulled into another cache
//! is found there by the same key. Every file is rehashed on its way in either direction:
//! a damaged copy is reported and left out, never stored. A remote is written as a cache
//! commits: the files first (each synced), then the record (synced, renamed into place),
//! so a push that is interrupted leaves only files no record names.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use super::record::Records;
use super::ALWAYS_HASH_UP_TO;
use super::{io_err, BlobStore, Cache, CacheError, Entry, Manifest, ManifestFile};
use crate::hash::StageKey;

/// A results remote (see the module doc).
pub struct Remote {
    root: PathBuf,
    blobs: BlobStore,
    records: Records,
}

/// What [`Remote::push`] did with one result.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// Copied; `bytes` of output files.
    Copied { bytes: u64 },
    /// The remote already holds it.
    AlreadyThere,
    /// Larger than the push's size limit: left out.
    OverLimit { bytes: u64 },
    /// Not in this cache (its stage has not run here).
    NotCached,
}

/// What [`Remote::pull`] did with one result.
#[derive(Debug, Clone, PartialEq)]
pub enum Pulled {
    /// Copied into the cache; `bytes` of output files.
    Copied { bytes: u64 },
    /// The cache already holds it.
    AlreadyCached,
    /// The remote does not hold it.
    NotInRemote,
    /// The remote's copy is damaged: nothing of it was stored.
    Damaged(RemoteDamage),
}

/// Why a remote's copy of a result was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteDamage {
    #[error("its record {path} does not read: {detail}")]
    Record { path: PathBuf, detail: String },
    #[error("its manifest: {0}")]
    Manifest(String),
    #[error("its file `{file}`: {detail}")]
    File { file: String, detail: String },
    #[error("its manifest names the file `{0}`, which would lie outside the result's folder")]
    UnsafePath(String),
}

impl Remote {
    /// The remote at `root` for pushing to (made if missing).
    pub fn for_push(root: &Path) -> Result<Self, CacheError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        Ok(Remote::at(root))
    }

    /// The remote at `root` for pulling from: it must exist.
    pub fn for_pull(root: &Path) -> Result<Self, CacheError> {
        if !root.join("entries").is_dir() && !root.join("blobs").is_dir() {
            return Err(CacheError::Io {
                path: root.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no results remote here (a folder with `entries/` and `blobs/`, made by \
                     `pipe cache push`)",
                ),
            });
        }
        Ok(Remote::at(root))
    }

    fn at(root: &Path) -> Self {
        Remote {
            root: root.to_path_buf(),
            blobs: BlobStore::at(root.join("blobs")),
            records: Records::new(root),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Copies the result of `key` from `cache` into the remote, unless it holds it already
    /// or its files total more than `limit` bytes. A file of the cache that does not hash
    /// to what was committed is an error ([`CacheError::is_damage`]): `pipe cache verify`.
    pub fn push(
        &self,
        cache: &Cache,
        key: &StageKey,
        limit: Option<u64>,
    ) -> Result<Pushed, CacheError> {
        let Some(entry) = cache.entry(key)? else {
            return Ok(Pushed::NotCached);
        };
        if self.holds_whole(key) {
            return Ok(Pushed::AlreadyThere);
        }
        if limit.is_some_and(|limit| entry.bytes > limit) {
            return Ok(Pushed::OverLimit { bytes: entry.bytes });
        }
        // a missing or changed file of this cache is named as damage (`pipe cache verify`)
        cache.check(key)?;
        let manifest = cache.manifest(key)?;
        let mut written = Vec::new();
        for f in &manifest.files {
            let from = cache.blobs().path(&f.hash);
            let stored = self.store_blob(&f.hash, f.size, |out| Ok(copy_hashing(&from, out)?));
            match stored {
                Ok(Some(file)) => written.push(file),
                Ok(None) => {}
                Err(BlobCopy::Io(e)) => return Err(e),
                Err(BlobCopy::Mismatch(detail)) => {
                    return Err(CacheError::Corrupt {
                        key: key.hex(),
                        message: format!(
                            "its file `{}` ({}) {detail}; `pipe cache verify` drops it",
                            f.path,
                            from.display()
                        ),
                    })
                }
            }
        }
        // the remote's manifest has no stamps: they name inodes of this machine
        let portable = Manifest {
            files: manifest
                .files
                .iter()
                .map(|f| ManifestFile {
                    stamp: None,
                    ..f.clone()
                })
                .collect(),
        };
        let text = serde_json::to_vec(&portable).unwrap_or_default();
        let hash = blake3::hash(&text).to_hex().to_string();
        let dest = self.blobs.path(&hash);
        if self.blobs.holds(&dest, &hash, text.len() as u64).is_none() {
            written.push(self.blobs.install(&dest, |tmp| tmp.write_all(&text))?);
        }
        for file in &written {
            file.sync_all().map_err(io_err(&self.root))?;
        }
        let record = Entry {
            manifest: hash,
            ..entry
        };
        self.records.write_synced(key, &record)?;
        Ok(Pushed::Copied {
            bytes: record.bytes,
        })
    }

    /// Copies the result of `key` from the remote into `cache` (which must be held: see
    /// [`Cache::open`]), each file rehashed on the way; a damaged copy is left out.
    pub fn pull(&self, cache: &Cache, key: &StageKey) -> Result<Pulled, CacheError> {
        if cache.contains(key)? {
            return Ok(Pulled::AlreadyCached);
        }
        let entry = match self.records.read(key) {
            Ok(Some(entry)) => entry,
            Ok(None) => return Ok(Pulled::NotInRemote),
            Err((path, detail)) => {
                return Ok(Pulled::Damaged(RemoteDamage::Record { path, detail }))
            }
        };
        let manifest = match self.manifest(&entry) {
            Ok(manifest) => manifest,
            Err(damage) => return Ok(Pulled::Damaged(damage)),
        };
        let staging = cache.tmp_dir(key)?;
        let copied = self.copy_files(&manifest, &staging);
        let outcome = match copied {
            Ok(()) => {
                let entry = cache.commit(key, &staging, entry)?;
                Pulled::Copied { bytes: entry.bytes }
            }
            Err(BlobCopy::Mismatch(damage)) => Pulled::Damaged(damage),
            Err(BlobCopy::Io(e)) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let _ = fs::remove_dir_all(&staging);
        Ok(outcome)
    }

    /// Whether the remote holds the result of `key` whole: its record, its manifest
    /// (verified), and each file: rehashed up to [`ALWAYS_HASH_UP_TO`] bytes (as the cache
    /// checks its own), larger ones by their size (a checkpoint is not reread at every
    /// push). A result the remote holds damaged or in part is pushed again.
    fn holds_whole(&self, key: &StageKey) -> bool {
        let Ok(Some(entry)) = self.records.read(key) else {
            return false;
        };
        let Ok(manifest) = self.manifest(&entry) else {
            return false;
        };
        manifest.files.iter().all(|f| {
            let path = self.blobs.path(&f.hash);
            if f.size <= ALWAYS_HASH_UP_TO {
                self.blobs.holds(&path, &f.hash, f.size).is_some()
            } else {
                fs::metadata(&path).is_ok_and(|m| m.len() == f.size)
            }
        })
    }

    /// The manifest `entry` names, its blob verified.
    fn manifest(&self, entry: &Entry) -> Result<Manifest, RemoteDamage> {
        let bytes = self
            .blobs
            .read_verified(&entry.manifest)
            .map_err(RemoteDamage::Manifest)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RemoteDamage::Manifest(format!("it does not parse: {e}")))
    }

    /// Every file of `manifest` copied from the remote's blobs into `staging` under its
    /// path, each rehashed.
    fn copy_files(
        &self,
        manifest: &Manifest,
        staging: &Path,
    ) -> Result<(), BlobCopy<RemoteDamage>> {
        for f in &manifest.files {
            let rel = safe_relative(&f.path)
                .ok_or_else(|| BlobCopy::Mismatch(RemoteDamage::UnsafePath(f.path.clone())))?;
            let to = staging.join(rel);
            let from = self.blobs.path(&f.hash);
            let damage = |detail: String| {
                BlobCopy::Mismatch(RemoteDamage::File {
                    file: f.path.clone(),
                    detail,
                })
            };
            let mut out = super::with_parent(&to, || File::create(&to))
                .map_err(|e| BlobCopy::Io(io_err(&to)(e)))?;
            let (hash, size) = match copy_hashing(&from, &mut out) {
                Ok(done) => done,
                Err(CopyFailed::Read(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(damage(format!("its blob {} is missing", from.display())))
                }
                Err(CopyFailed::Read(e)) => return Err(damage(format!("{}: {e}", from.display()))),
                // this cache's side (a full disk, say): not the remote's damage
                Err(CopyFailed::Write(e)) => return Err(BlobCopy::Io(io_err(&to)(e))),
            };
            if hash != f.hash || size != f.size {
                return Err(damage(format!(
                    "its blob {} holds {size} bytes hashing to {hash}; {} bytes hashing to {} \
                     were pushed (push it again from a cache that holds it)",
                    from.display(),
                    f.size,
                    f.hash
                )));
            }
        }
        Ok(())
    }

    /// Stores a blob of `hash` written by `write` unless the remote holds it intact
    /// already; returns the stored file (to sync) or `None` when it was there.
    fn store_blob(
        &self,
        hash: &str,
        size: u64,
        write: impl FnOnce(&mut File) -> std::io::Result<(String, u64)>,
    ) -> Result<Option<File>, BlobCopy<String>> {
        let dest = self.blobs.path(hash);
        if self.blobs.holds(&dest, hash, size).is_some() {
            return Ok(None);
        }
        let mut written = None;
        let stored = self.blobs.install(&dest, |tmp| {
            let done = write(tmp)?;
            if done.0 != hash {
                written = Some(done);
                return Err(std::io::Error::other("content changed while copied"));
            }
            Ok(())
        });
        match (stored, written) {
            (Ok(file), _) => Ok(Some(file)),
            (Err(_), Some((actual, n))) => Err(BlobCopy::Mismatch(format!(
                "holds {n} bytes hashing to {actual}, not the {size} bytes hashing to {hash} \
                 that were committed"
            ))),
            (Err(e), None) => Err(BlobCopy::Io(e)),
        }
    }
}

/// A copy that failed: on the file system, or because the content was not what it should
/// have been (`D` says how, for the side that reports it).
enum BlobCopy<D> {
    Io(CacheError),
    Mismatch(D),
}

/// A copy that stopped on one of its two sides.
enum CopyFailed {
    Read(std::io::Error),
    Write(std::io::Error),
}

impl From<CopyFailed> for std::io::Error {
    fn from(e: CopyFailed) -> Self {
        match e {
            CopyFailed::Read(e) | CopyFailed::Write(e) => e,
        }
    }
}

/// Copies the file at `from` to `out` through blake3; returns (hex hash, bytes copied).
fn copy_hashing(from: &Path, out: &mut impl Write) -> Result<(String, u64), CopyFailed> {
    let mut file = File::open(from).map_err(CopyFailed::Read)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(CopyFailed::Read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyFailed::Write)?;
        size += n as u64;
    }
    out.flush().map_err(CopyFailed::Write)?;
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// `path` as a relative path that stays inside its folder (`a/b.json`), or `None`
/// (absolute, `..`, empty): a remote is not trusted to write outside a result.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let normal = p.components().all(|c| matches!(c, Component::Normal(_)));
    (normal && p.components().next().is_some()).then(|| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::safe_relative;

    #[test]
    fn only_paths_inside_the_result_are_taken() {
        assert!(safe_relative("metrics.json").is_some());
        assert!(safe_relative("model/weights.bin").is_some());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
    }
}
