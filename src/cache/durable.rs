//! Group commit: one `syncfs(2)` of the cache's file system makes durable everything
//! written before it, blobs, manifests, records and the renames that put them in place.
//!
//! A commit used to fsync each file and its folder (six fsyncs a result); on ext4 each
//! fsync is a journal commit of its own, and a run of many quick stages was bound by them
//! (#27). Now a commit writes its files, then waits at [`SyncPoint::wait_durable`]: the
//! first waiter runs one `syncfs` for everybody who arrived before it started, the others
//! wait for it (as databases group their log flushes). Only then is the result inserted
//! into the index. A crash before the sync leaves at most a record whose files are not
//! all there; every record is verified before it is put back into an index.

use std::fs::File;
use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError};

/// Where commits wait for their files to be on disk.
pub(super) struct SyncPoint {
    /// The cache's root folder: `syncfs` syncs the file system it lies on.
    root: File,
    state: Mutex<SyncState>,
    synced: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Tickets handed out: a waiter takes one after its writes.
    issued: u64,
    /// Every ticket up to this one is durable.
    durable_through: u64,
    /// A sync is running.
    syncing: bool,
}

impl SyncPoint {
    /// The sync point of the file system `root` lies on.
    pub(super) fn open(root: &Path) -> std::io::Result<Self> {
        Ok(SyncPoint {
            root: File::open(root)?,
            state: Mutex::new(SyncState::default()),
            synced: Condvar::new(),
        })
    }

    /// Returns once everything this thread wrote before the call is on disk.
    pub(super) fn wait_durable(&self) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.issued += 1;
        let ticket = state.issued;
        loop {
            if state.durable_through >= ticket {
                return Ok(());
            }
            if !state.syncing {
                // lead: this sync starts after every ticket issued so far was written
                state.syncing = true;
                let covers = state.issued;
                drop(state);
                let outcome = sync_file_system(&self.root);
                state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.syncing = false;
                if outcome.is_ok() {
                    state.durable_through = state.durable_through.max(covers);
                }
                self.synced.notify_all();
                // a failed sync: the others lead their own attempt and see their error
                outcome?;
                continue;
            }
            state = self
                .synced
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(target_os = "linux")]
fn sync_file_system(dir: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `syncfs` only reads the descriptor, which `dir` keeps open.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_file_system(_dir: &File) -> std::io::Result<()> {
    // SAFETY: `sync` has no preconditions.
    unsafe { libc::sync() };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_waiter_returns_after_a_sync_that_started_after_it_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let point = std::sync::Arc::new(SyncPoint::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let point = point.clone();
                let path = dir.path().join(format!("f{i}"));
                std::thread::spawn(move || {
                    for round in 0..20 {
                        std::fs::write(&path, format!("{round}")).unwrap();
                        point.wait_durable().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let state = point.state.lock().unwrap();
        assert_eq!(state.issued, 160);
        assert_eq!(state.durable_through, 160);
        assert!(!state.syncing);
    }
}
