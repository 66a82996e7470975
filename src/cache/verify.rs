//! `pipe cache verify`: every blob rehashed; a result with a damaged file is dropped, and
//! so is every result computed from it after the damage could have been read.

use std::collections::{BTreeMap, BTreeSet};

use super::stamp::{self, Damage, Stamp};
use super::{Cache, CacheError};
use crate::hash::StageKey;

/// One dropped result found by [`Cache::verify`].
#[derive(Debug, Clone)]
pub struct Corruption {
    /// Its key (hex).
    pub key: String,
    pub stage: String,
    pub cause: CorruptionCause,
}

/// Why a result was dropped.
#[derive(Debug, Clone)]
pub enum CorruptionCause {
    /// One of its files (or its manifest: `(manifest)`) is damaged or missing.
    File { file: String, message: String },
    /// It was computed from the damaged result of `stage` (key `key`) at a time when that
    /// result could already have been wrong.
    DerivedFrom { stage: String, key: String },
}

/// When a result's content went wrong, as far as its files tell.
#[derive(Debug, Clone, Copy)]
enum Since {
    /// Unix seconds: the earliest mtime of a changed file whose stamp moved.
    Known(u64),
    /// A changed file kept its stamp (or had none): any time.
    Unknown,
}

impl Since {
    fn earlier(self, other: Since) -> Since {
        match (self, other) {
            (Since::Known(a), Since::Known(b)) => Since::Known(a.min(b)),
            _ => Since::Unknown,
        }
    }

    /// Whether a result committed at `created` (Unix seconds) may have read it damaged.
    fn may_have_been_read_at(self, created: u64) -> bool {
        match self {
            // a second of slack: commit times are whole seconds
            Since::Known(t) => created + 1 >= t,
            Since::Unknown => true,
        }
    }
}

impl Cache {
    /// Rehashes every blob that an entry references; damaged blobs are deleted and the
    /// entries that use them dropped, so those stages rerun. Results computed from a
    /// result whose content went wrong (found from the keys each entry records as its
    /// inputs) are dropped too, unless they were committed before the damage (a changed
    /// file's mtime says when; a blob that was only deleted cannot have been read).
    pub fn verify(&self) -> Result<Vec<Corruption>, CacheError> {
        let mut problems = Vec::new();
        let mut bad_blobs: BTreeMap<String, Damage> = BTreeMap::new();
        let mut good_blobs: BTreeSet<String> = BTreeSet::new();
        // key -> (stage, since when its content is wrong)
        let mut wrong: BTreeMap<StageKey, (String, Since)> = BTreeMap::new();
        let entries = self.entries()?;
        let mut dropped: BTreeSet<StageKey> = BTreeSet::new();
        for (key, entry) in &entries {
            let mut broken = Vec::new();
            let mut since: Option<Since> = None;
            match self.manifest(key) {
                Ok(m) => {
                    for f in &m.files {
                        if good_blobs.contains(&f.hash) {
                            continue;
                        }
                        let path = self.blobs.path(&f.hash);
                        let damage = match bad_blobs.get(&f.hash) {
                            Some(d) => d.clone(),
                            None => match stamp::check(&path, &f.hash, f.size, None) {
                                Ok(_) => {
                                    good_blobs.insert(f.hash.clone());
                                    continue;
                                }
                                Err(d) => {
                                    bad_blobs.insert(f.hash.clone(), d.clone());
                                    d
                                }
                            },
                        };
                        if damage.is_wrong_content() {
                            let now = std::fs::metadata(&path).ok().map(|m| Stamp::of(&m));
                            let file_since = match (now, f.stamp) {
                                (Some(now), Some(then)) if now != then => {
                                    Since::Known(now.mtime_ns.max(0) as u64 / 1_000_000_000)
                                }
                                _ => Since::Unknown,
                            };
                            since = Some(since.map_or(file_since, |s| s.earlier(file_since)));
                        }
                        broken.push((f.path.clone(), damage.to_string()));
                    }
                }
                Err(e) => broken.push(("(manifest)".into(), e.to_string())),
            }
            if broken.is_empty() {
                continue;
            }
            if let Some(since) = since {
                wrong.insert(*key, (entry.stage.clone(), since));
            }
            for (file, message) in broken {
                problems.push(Corruption {
                    key: key.hex(),
                    stage: entry.stage.clone(),
                    cause: CorruptionCause::File { file, message },
                });
            }
            dropped.insert(*key);
        }
        // what was computed from a wrong result, transitively
        loop {
            let mut found = false;
            for (key, entry) in &entries {
                if dropped.contains(key) {
                    continue;
                }
                let source = entry.inputs.iter().find_map(|input| {
                    wrong
                        .get(input)
                        .filter(|(_, since)| since.may_have_been_read_at(entry.created))
                        .map(|(stage, since)| (input.hex(), stage.clone(), *since))
                });
                if let Some((input, stage, since)) = source {
                    problems.push(Corruption {
                        key: key.hex(),
                        stage: entry.stage.clone(),
                        cause: CorruptionCause::DerivedFrom { stage, key: input },
                    });
                    wrong.insert(*key, (entry.stage.clone(), since));
                    dropped.insert(*key);
                    found = true;
                }
            }
            if !found {
                break;
            }
        }
        for key in &dropped {
            self.remove(key)?;
        }
        // the dropped entries are durable before their blobs go
        self.flush()?;
        for hash in bad_blobs.keys() {
            self.blobs.delete(hash)?;
        }
        Ok(problems)
    }
}
