//! How a reading command (`plan`, `show`, `report`, `cache ls`) uses a cache without ever
//! keeping a writer out: it takes no lock and opens no sled index; it reads the index
//! snapshot, and builds the views it needs in a folder of its own,
//! `tmp/reader-views-<pid>`, removed when it ends (or, when it was killed, by the next
//! process that finds that pid gone).

use std::fs;
use std::path::{Path, PathBuf};

use super::{io_err, CacheError};

/// The name prefix of a reader's private folder under `tmp/`.
const PREFIX: &str = "reader-views-";

/// A reader's private folder (views and scratch), removed on drop.
pub(super) struct ReaderDir {
    path: PathBuf,
}

impl ReaderDir {
    /// Creates `root/tmp/reader-views-<pid>`, first removing those of readers that died.
    pub(super) fn create(root: &Path) -> Result<Self, CacheError> {
        let tmp = root.join("tmp");
        remove_dead_readers(&tmp);
        let path = tmp.join(format!("{PREFIX}{}", std::process::id()));
        fs::create_dir_all(&path).map_err(io_err(&path))?;
        Ok(ReaderDir { path })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ReaderDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Whether `name` (an entry of `tmp/`) is the folder of a reader that is still running:
/// a writer cleaning `tmp/` leaves those alone.
pub(super) fn is_live_reader(name: &str) -> bool {
    reader_pid(name).is_some_and(process_alive)
}

fn reader_pid(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?.parse().ok()
}

/// Removes the folders of readers whose process is gone (killed before they cleaned up).
fn remove_dead_readers(tmp: &Path) {
    let Ok(rd) = fs::read_dir(tmp) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if reader_pid(&name).is_some_and(|pid| !process_alive(pid)) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Whether a process with this pid exists (a pid reused since only keeps a stale folder
/// a while longer).
pub(super) fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only asks whether `pid` exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// ` (pid N)` when the process named in `root/LOCK` is running (a writer writes its pid
/// there and empties it when it ends; a killed one leaves a pid that is gone).
pub(super) fn holder(root: &Path) -> Option<String> {
    let text = fs::read_to_string(root.join("LOCK")).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    process_alive(pid).then(|| format!(" (pid {pid})"))
}
