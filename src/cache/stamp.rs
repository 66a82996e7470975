//! Cheap checks that a stored file is still what was committed, before anything reads it.
//!
//! At commit each output file's blob gets a [`Stamp`] (its inode and modification time,
//! beside the size the manifest already holds). Before a result is used (as a stage's
//! input, shown, published, rendered) every file is checked: a missing file or a changed
//! size is damage at once; a blob of at most [`ALWAYS_HASH_UP_TO`] bytes, or one whose
//! stamp changed, is rehashed with blake3; a larger blob whose stamp still matches is
//! taken as committed (a write in place changes its mtime; only `pipe cache verify`
//! rehashes everything).

use std::fs::Metadata;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::blob::hash_open_file;

/// Blobs up to this size are rehashed at every use, whatever their stamp says.
pub const ALWAYS_HASH_UP_TO: u64 = 64 * 1024;

/// What identifies a blob file as the one written at commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub inode: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
}

impl Stamp {
    /// The stamp of a file as it is now.
    pub fn of(meta: &Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            inode: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// Why a stored file is not what was committed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Damage {
    #[error("it is missing")]
    Missing,
    #[error("it cannot be read: {0}")]
    Unreadable(String),
    #[error("its size is {actual} bytes, {expected} were committed")]
    SizeChanged { expected: u64, actual: u64 },
    #[error("its content hashes to {actual}, {expected} was committed")]
    ContentChanged { expected: String, actual: String },
}

impl Damage {
    /// Whether the file is there with other content (a missing or unreadable file
    /// cannot have been read by anything derived from it).
    pub fn is_wrong_content(&self) -> bool {
        matches!(
            self,
            Damage::SizeChanged { .. } | Damage::ContentChanged { .. }
        )
    }
}

/// Checks the file at `path` against what was committed: its blake3 `hash`, `size` and
/// `stamp` (`None` for results committed before stamps: always rehashed). Returns its
/// metadata as read for the check (a caller comparing inodes need not read it again).
pub fn check(
    path: &Path,
    hash: &str,
    size: u64,
    stamp: Option<&Stamp>,
) -> Result<Metadata, Damage> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Damage::Missing),
        Err(e) => return Err(Damage::Unreadable(e.to_string())),
    };
    if meta.len() != size {
        return Err(Damage::SizeChanged {
            expected: size,
            actual: meta.len(),
        });
    }
    if size > ALWAYS_HASH_UP_TO && stamp == Some(&Stamp::of(&meta)) {
        return Ok(meta);
    }
    // hashed by the size just read (a file that grew since is read to its end)
    match std::fs::File::open(path).and_then(|mut f| hash_open_file(&mut f, size)) {
        Ok((actual, _)) if actual == hash => Ok(meta),
        Ok((actual, _)) => Err(Damage::ContentChanged {
            expected: hash.to_string(),
            actual,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Damage::Missing),
        Err(e) => Err(Damage::Unreadable(e.to_string())),
    }
}
