//! Content hashes that pin sources (blake3, hex).
//!
//! - A file: blake3 of its bytes (what `b3sum FILE` prints).
//! - A directory: blake3 of the text `pipe-tree-v1\n` followed, for every regular file
//!   below it (symlinks followed; empty directories ignored) in byte order of its
//!   `/`-separated relative path, by the line `RELATIVE_PATH\0FILE_BLAKE3_HEX\n`.
//!   So the hash depends only on relative paths and file contents, not on timestamps,
//!   permissions or the directory's location.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::SourceError;

/// Deepest directory nesting followed (guards against symlink loops).
const MAX_DEPTH: usize = 64;

/// blake3 of a file's bytes, hex.
pub fn file_hash(path: &Path) -> Result<String, SourceError> {
    let mut f = File::open(path).map_err(|e| SourceError::io(path, e))?;
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut f, &mut h).map_err(|e| SourceError::io(path, e))?;
    Ok(h.finalize().to_hex().to_string())
}

/// Regular files below `root`, as (`/`-separated relative path, absolute path), sorted.
pub fn files_below(root: &Path) -> Result<Vec<(String, PathBuf)>, SourceError> {
    fn walk(
        dir: &Path,
        rel: &str,
        depth: usize,
        out: &mut Vec<(String, PathBuf)>,
    ) -> Result<(), SourceError> {
        if depth > MAX_DEPTH {
            return Err(SourceError::Invalid(format!(
                "{}: directories nested deeper than {MAX_DEPTH} (a symlink loop?)",
                dir.display()
            )));
        }
        for entry in std::fs::read_dir(dir).map_err(|e| SourceError::io(dir, e))? {
            let entry = entry.map_err(|e| SourceError::io(dir, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| {
                SourceError::Invalid(format!("{}: file name is not UTF-8", path.display()))
            })?;
            let rel_path = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::metadata(&path).map_err(|e| SourceError::io(&path, e))?;
            if meta.is_dir() {
                walk(&path, &rel_path, depth + 1, out)?;
            } else if meta.is_file() {
                out.push((rel_path, path));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, "", 0, &mut out)?;
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// The tree hash of a directory (see the module doc).
pub fn dir_hash(root: &Path) -> Result<String, SourceError> {
    let mut h = blake3::Hasher::new();
    h.update(b"pipe-tree-v1\n");
    for (rel, path) in files_below(root)? {
        h.update(rel.as_bytes());
        h.update(b"\0");
        h.update(file_hash(&path)?.as_bytes());
        h.update(b"\n");
    }
    Ok(h.finalize().to_hex().to_string())
}

/// The content hash of a file or directory.
pub fn content_hash(path: &Path) -> Result<String, SourceError> {
    let meta = std::fs::metadata(path).map_err(|e| SourceError::io(path, e))?;
    if meta.is_dir() {
        dir_hash(path)
    } else {
        file_hash(path)
    }
}

/// Checks a pin: `Ok` if `expected` is `None` or equals `actual`.
pub fn verify(what: &str, expected: Option<&str>, actual: &str) -> Result<(), SourceError> {
    match expected {
        Some(e) if !e.eq_ignore_ascii_case(actual) => Err(SourceError::PinMismatch {
            what: what.to_string(),
            expected: e.to_string(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Checks that `pin` looks like a blake3 hex digest.
pub fn check_pin(pin: &str) -> Result<(), String> {
    if pin.len() == 64 && pin.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("`{pin}` is not a blake3 digest (64 hex digits)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_hash_depends_on_paths_and_contents_only() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for root in [a.path(), b.path()] {
            std::fs::create_dir_all(root.join("sub/empty")).unwrap();
            std::fs::write(root.join("x.txt"), "x").unwrap();
            std::fs::write(root.join("sub/y.txt"), "y").unwrap();
        }
        std::fs::create_dir_all(b.path().join("another_empty_dir")).unwrap();
        assert_eq!(dir_hash(a.path()).unwrap(), dir_hash(b.path()).unwrap());
        std::fs::write(b.path().join("sub/y.txt"), "y2").unwrap();
        assert_ne!(dir_hash(a.path()).unwrap(), dir_hash(b.path()).unwrap());
        std::fs::write(b.path().join("sub/y.txt"), "y").unwrap();
        std::fs::rename(b.path().join("x.txt"), b.path().join("z.txt")).unwrap();
        assert_ne!(dir_hash(a.path()).unwrap(), dir_hash(b.path()).unwrap());
    }

    #[test]
    fn file_hash_is_b3sum_of_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            file_hash(&p).unwrap(),
            blake3::hash(b"abc").to_hex().to_string()
        );
    }

    #[test]
    fn the_tree_hash_is_the_documented_formula() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("b")).unwrap();
        std::fs::write(d.path().join("b/c"), "2").unwrap();
        std::fs::write(d.path().join("a"), "1").unwrap();
        let hex = |s: &str| blake3::hash(s.as_bytes()).to_hex().to_string();
        let text = format!("pipe-tree-v1\na\0{}\nb/c\0{}\n", hex("1"), hex("2"));
        assert_eq!(dir_hash(d.path()).unwrap(), hex(&text));
    }
}
