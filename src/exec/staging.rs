//! A job's staging folder (`cache/tmp/<key>-<pid>/`, holding `out/` and `scratch/`),
//! removed once its result is committed or refused.

use std::io::ErrorKind;
use std::path::Path;

/// Removes the staging folder `dir`.
///
/// A stage that leaves nothing behind (its outputs moved into the blob store, its scratch
/// files removed, as `shell` does) is removed with three `rmdir`s; anything else with a
/// full walk. The walk opens and reads every folder (about 35 system calls for a `shell`
/// stage's four), a fifth of what the engine does for a trivial stage (#27). `rmdir`
/// follows no link and removes only an empty folder, so the quick path cannot remove
/// anything outside `dir`.
pub(crate) fn remove_staging(dir: &Path) {
    let emptied = |sub: &str| match std::fs::remove_dir(dir.join(sub)) {
        Ok(()) => true,
        Err(e) => e.kind() == ErrorKind::NotFound,
    };
    let removed = emptied("out") && emptied("scratch") && std::fs::remove_dir(dir).is_ok();
    if !removed {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_folder_goes_and_so_does_one_with_files_left() {
        let root = tempfile::tempdir().unwrap();
        let quick = root.path().join("quick");
        std::fs::create_dir_all(quick.join("out")).unwrap();
        std::fs::create_dir_all(quick.join("scratch")).unwrap();
        remove_staging(&quick);
        assert!(!quick.exists());

        let left = root.path().join("left");
        std::fs::create_dir_all(left.join("out/sub")).unwrap();
        std::fs::create_dir_all(left.join("scratch/work")).unwrap();
        std::fs::write(left.join("scratch/work/kept.txt"), "x").unwrap();
        std::fs::write(left.join("stray"), "y").unwrap();
        remove_staging(&left);
        assert!(!left.exists());
    }

    #[test]
    fn a_link_in_it_is_removed_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        let dir = root.path().join("staging");
        std::fs::create_dir_all(dir.join("out")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("scratch")).unwrap();
        remove_staging(&dir);
        assert!(!dir.exists());
        assert!(
            outside.join("keep").is_dir(),
            "the link's target is left alone"
        );
    }
}
