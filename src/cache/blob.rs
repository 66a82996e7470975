//! Content-addressed blob store: `blobs/<first 2 hex>/<blake3 hex>`, read-only files.
//! Identical outputs are stored once. Writes here are made durable by the commit's wait
//! at the cache's [`super::durable::SyncPoint`], not one fsync each.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::stamp::{self, Stamp};
use super::{io_err, CacheError};

/// Directory of blobs named by their blake3 hash.
pub struct BlobStore {
    dir: PathBuf,
}

/// Streams a file through blake3; returns (hex hash, size).
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    hash_open_file(&mut f, len)
}

/// [`hash_file`] of a file already open, `len` bytes long by its metadata.
pub(super) fn hash_open_file(f: &mut File, len: u64) -> std::io::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    // most outputs are small: read them whole, not into a zeroed 1 MiB buffer each (that
    // memset was a quarter of a no-op run over 100,000 cached results)
    if len <= SMALL_FILE {
        let mut bytes = Vec::with_capacity(len as usize + 1);
        // through `take`: File's own read_to_end asks for the size again (a stat and a
        // seek a file, at every check of every small blob)
        (&mut *f).take(len + 1).read_to_end(&mut bytes)?;
        hasher.update(&bytes);
        size = bytes.len() as u64;
        if size <= len {
            return Ok((hasher.finalize().to_hex().to_string(), size));
        }
        // it grew since its size was read: the rest is streamed
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// Files up to this size are hashed from one read of the whole file.
const SMALL_FILE: u64 = 1 << 16;

impl BlobStore {
    pub fn new(dir: PathBuf) -> Result<Self, CacheError> {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(BlobStore { dir })
    }

    /// The store at `dir`, which is not made here (a results remote's, read before
    /// anything is written to it).
    pub(super) fn at(dir: PathBuf) -> Self {
        BlobStore { dir }
    }

    /// Where the blob `hash` lives (it may not exist).
    pub fn path(&self, hash: &str) -> PathBuf {
        let prefix = hash.get(..2).unwrap_or("00");
        self.dir.join(prefix).join(hash)
    }

    /// Stores the file `src` of the cache's own staging area; returns its hash, size and
    /// the stored blob's [`Stamp`]. The file itself is moved in (made read-only, renamed)
    /// when nothing else links to it and it lies on the store's file system; else a copy
    /// is stored. Not yet durable: the commit waits at the cache's sync point. Content
    /// already present is not rewritten, unless the stored copy no longer matches its
    /// hash (then it is replaced).
    pub fn put_staged_file(&self, src: &Path) -> Result<(String, u64, Stamp), CacheError> {
        use std::os::unix::fs::MetadataExt;
        let mut file = File::open(src).map_err(io_err(src))?;
        let meta = file.metadata().map_err(io_err(src))?;
        let (hash, size) = hash_open_file(&mut file, meta.len()).map_err(io_err(src))?;
        let dest = self.path(&hash);
        if let Some(stored) = self.holds(&dest, &hash, size) {
            return Ok((hash, size, Stamp::of(&stored)));
        }
        // a second link (`ln` of a user's file, or of an input's blob) shares the inode:
        // making it read-only and moving it would reach the other name too
        if meta.nlink() == 1 {
            let mut perms = meta.permissions();
            perms.set_readonly(true);
            file.set_permissions(perms).map_err(io_err(src))?;
            match with_parent(&dest, || fs::rename(src, &dest)) {
                Ok(()) => {
                    // inode and mtime: neither the mode change nor the rename moves them
                    return Ok((hash, size, Stamp::of(&meta)));
                }
                // another file system: copied below
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
                Err(e) => return Err(io_err(&dest)(e)),
            }
        }
        // the handle that hashed it, read again from the start
        let stored = self.install(&dest, |tmp| {
            std::io::Seek::rewind(&mut file)?;
            std::io::copy(&mut file, tmp).map(|_| ())
        })?;
        let meta = stored.metadata().map_err(io_err(&dest))?;
        Ok((hash, size, Stamp::of(&meta)))
    }

    /// Stores `bytes`; returns (hash, size).
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(String, u64), CacheError> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        let dest = self.path(&hash);
        if self.holds(&dest, &hash, bytes.len() as u64).is_none() {
            self.install(&dest, |tmp| tmp.write_all(bytes))?;
        }
        Ok((hash, bytes.len() as u64))
    }

    /// `dest`'s metadata when it exists and holds the content `hash` (rehashed: a
    /// damaged copy must not be stamped anew by the commit that finds it).
    pub(super) fn holds(&self, dest: &Path, hash: &str, size: u64) -> Option<fs::Metadata> {
        stamp::check(dest, hash, size, None).ok()
    }

    /// Writes through a temp file created read-only (its one handle still writes) and
    /// renames it into place; returns that handle (for the stamp where one is wanted). When
    /// `write` fails the temp file is removed and `dest` left as it was.
    pub(super) fn install(
        &self,
        dest: &Path,
        write: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<File, CacheError> {
        use std::os::unix::fs::OpenOptionsExt;
        let parent = dest.parent().unwrap_or(&self.dir);
        // unique per install: two threads of one run may store the same content at once
        // (two stages that wrote the same bytes)
        static INSTALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = parent.join(format!(
            ".tmp-{}-{}-{}",
            std::process::id(),
            INSTALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let mut file = with_parent(&tmp, || {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&tmp)
        })
        .map_err(io_err(&tmp))?;
        if let Err(e) = write(&mut file) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        fs::rename(&tmp, dest).map_err(io_err(dest))?;
        Ok(file)
    }

    /// Reads a blob and checks its hash.
    pub fn read_verified(&self, hash: &str) -> Result<Vec<u8>, String> {
        let path = self.path(hash);
        // through `take`, as in `hash_open_file`: `fs::read` asks for the size first (a
        // stat more at every read of a manifest)
        let mut bytes = Vec::with_capacity(8 * 1024);
        File::open(&path)
            .and_then(|f| f.take(u64::MAX).read_to_end(&mut bytes))
            .map_err(|e| format!("blob {hash} unreadable: {e}"))?;
        let actual = blake3::hash(&bytes).to_hex().to_string();
        if actual != hash {
            return Err(format!(
                "blob {hash} is corrupt (content hashes to {actual})"
            ));
        }
        Ok(bytes)
    }

    /// Rehashes a blob: `Err(description)` when missing or corrupt.
    pub fn check(&self, hash: &str) -> Result<(), String> {
        let path = self.path(hash);
        match hash_file(&path) {
            Ok((actual, _)) if actual == hash => Ok(()),
            Ok((actual, _)) => Err(format!("content hashes to {actual}, expected {hash}")),
            Err(e) => Err(format!("unreadable: {e}")),
        }
    }

    pub fn delete(&self, hash: &str) -> Result<(), CacheError> {
        let path = self.path(hash);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::Io { path, source: e }),
        }
    }

    /// Removes one file of the store by its path (a leftover temp file has no hash).
    pub fn delete_file(&self, path: &Path) -> Result<(), CacheError> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    /// Every file of the store: blobs, and temp files left by killed runs.
    pub fn list(&self) -> Result<Vec<StoredFile>, CacheError> {
        let mut out = Vec::new();
        for sub in fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .flatten()
        {
            if !sub.path().is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path())
                .map_err(io_err(&sub.path()))?
                .flatten()
            {
                let name = f.file_name().to_string_lossy().to_string();
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(StoredFile {
                    name,
                    path: f.path(),
                    size,
                });
            }
        }
        Ok(out)
    }
}

/// Runs `op`, which makes `path`; when its folder is missing, makes the folder and runs
/// it again. The folders (`blobs/<aa>`, `entries/<aa>`, a stage's output folder) exist
/// nearly always: asking first would cost two system calls a file.
pub fn with_parent<T>(
    path: &Path,
    mut op: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    match op() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            op()
        }
        other => other,
    }
}

/// One file in the blob store's folders.
#[derive(Debug, Clone)]
pub struct StoredFile {
    /// The blob's hash, or a temp file's name (`.tmp-…`).
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_staged_file_is_moved_in_and_a_linked_one_copied() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().join("blobs")).unwrap();
        let staged = dir.path().join("o");
        fs::write(&staged, "alpha\n").unwrap();
        let inode = fs::metadata(&staged).unwrap().ino();
        let (hash, size, stamp) = store.put_staged_file(&staged).unwrap();
        assert_eq!(hash, blake3::hash(b"alpha\n").to_hex().to_string());
        assert_eq!(size, 6);
        let blob = store.path(&hash);
        let meta = fs::metadata(&blob).unwrap();
        // moved: the same inode, now read-only, and gone from the staging folder
        assert_eq!((meta.ino(), stamp), (inode, Stamp::of(&meta)));
        assert_eq!(meta.permissions().mode() & 0o222, 0);
        assert!(!staged.exists());

        // a file with a second name (a user's file linked in) is copied: the other name
        // keeps its mode and stays out of the store
        let users = dir.path().join("users.txt");
        fs::write(&users, "beta\n").unwrap();
        fs::hard_link(&users, &staged).unwrap();
        let (hash, _, _) = store.put_staged_file(&staged).unwrap();
        let blob = fs::metadata(store.path(&hash)).unwrap();
        let theirs = fs::metadata(&users).unwrap();
        assert_ne!(blob.ino(), theirs.ino());
        assert_ne!(theirs.permissions().mode() & 0o200, 0);
        assert_eq!(blob.permissions().mode() & 0o222, 0);
        assert_eq!(fs::read(store.path(&hash)).unwrap(), b"beta\n");
    }

    #[test]
    fn bytes_are_stored_read_only_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().join("blobs")).unwrap();
        let (hash, size) = store.put_bytes(b"{}").unwrap();
        assert_eq!(size, 2);
        assert_eq!(store.read_verified(&hash).unwrap(), b"{}");
        let mode = fs::metadata(store.path(&hash))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o222, 0);
        assert_eq!(store.put_bytes(b"{}").unwrap().0, hash);
    }
}
