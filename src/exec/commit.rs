//! Committing a computed stage: its inputs checked again (a stage must not have changed
//! them), its staged outputs checked against what the computing process says it wrote,
//! then stored atomically ([`Cache::commit`]) and the staging folder removed. The local
//! executor commits on the worker thread that computed the stage, so commits run side by
//! side; the Slurm executor commits what a job staged when it collects it.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use super::executor::{Committed, Staged};
use super::plan::Plan;
use super::run::list_files;
use crate::cache::{Cache, Entry};
use crate::hash::StageKey;
use crate::pipeline::Pipeline;

/// One result a stage was given, for the check after it ran.
#[derive(Debug)]
struct InputResult<'a> {
    /// The input it is bound under.
    input: &'a str,
    /// The stage instance that made it.
    producer: &'a str,
    key: StageKey,
}

/// What committing one stage instance's result needs, prepared by the scheduler when it
/// starts the job.
///
/// The results the stage was given are read from the pipeline and the plan, borrowed, when
/// the commit checks them: a list of them made for each job held 3.2 MB for a table
/// reading 50,000 cells (#27). What the key was made from is not kept here either: it is
/// made from the plan for the last-run record once the result is committed.
pub struct CommitSpec<'a> {
    p: &'a Pipeline,
    plan: &'a Plan,
    instance: usize,
    /// The entry to store, but for what the commit fills in (manifest, size, time, and
    /// the input keys).
    entry: Entry,
}

impl<'a> CommitSpec<'a> {
    /// The commit of instance `i` of `p` under `plan`.
    pub fn new(p: &'a Pipeline, plan: &'a Plan, i: usize) -> Self {
        let inst = &p.instances[i];
        let entry = Entry {
            manifest: String::new(),
            stage: inst.name.clone(),
            kind: inst.kind.to_string(),
            seconds: 0.0,
            bytes: 0,
            created: 0,
            pipeline: p.file.to_string_lossy().to_string(),
            profile: p.profile.clone(),
            inputs: Vec::new(),
        };
        CommitSpec {
            p,
            plan,
            instance: i,
            entry,
        }
    }

    /// The results the stage was given, by input.
    fn inputs(&self) -> impl Iterator<Item = InputResult<'a>> + '_ {
        let (p, plan) = (self.p, self.plan);
        p.instances[self.instance]
            .inputs
            .iter()
            .flat_map(move |(name, refs)| {
                refs.iter().map(move |r| InputResult {
                    input: name,
                    producer: p.instances[r.instance].name.as_str(),
                    key: plan.item(r.instance).key,
                })
            })
    }

    /// Checks the inputs and the staged outputs, stores them, records the run as the
    /// stage's last in this pipeline, and removes the staging folder (whatever the
    /// outcome).
    pub fn commit(&self, cache: &Cache, staged: &Staged) -> Result<Committed, String> {
        let result = self
            .inputs_unchanged(cache)
            .map_err(|e| e.to_string())
            .and_then(|()| check_staged(staged))
            .and_then(|()| {
                let entry = Entry {
                    seconds: staged.seconds,
                    created: now_unix(),
                    inputs: input_keys(self.inputs()),
                    ..self.entry.clone()
                };
                let (p, plan, i) = (self.p, self.plan, self.instance);
                cache
                    .commit(&plan.item(i).key, &staged.out_dir, entry)
                    .map_err(|e| format!("committing outputs: {e}"))?;
                // here, not on the scheduler's thread: its record is as much file work
                // as a commit's smaller parts (#27)
                cache
                    .record_last_run(
                        &plan.pipeline_id,
                        &p.instances[i].name,
                        &plan.last_run(p, i),
                    )
                    .map_err(|e| format!("recording its run: {e}"))?;
                Ok(Committed {
                    seconds: staged.seconds,
                })
            });
        super::staging::remove_staging(&staged.cleanup);
        result
    }

    /// Checks, after a stage ran, that every input it was given is still what was
    /// committed.
    ///
    /// Stages read their inputs as hard links to the stored blobs (no copy, whatever their
    /// size); a command running as root, or one that makes a file writable first, could
    /// change a blob in place, and with it every result that shares that blob. The check
    /// costs what the check before the run did (stamps; blobs up to 64 KiB rehashed). A
    /// changed input's result is dropped, so its producer runs again, and the stage's own
    /// output is refused.
    fn inputs_unchanged(&self, cache: &Cache) -> Result<(), InputChanged> {
        for InputResult {
            input,
            producer,
            key,
        } in self.inputs()
        {
            if let Err(e) = cache.check(&key) {
                if e.is_damage() {
                    let _ = cache.remove(&key);
                    let (input, producer) = (input.to_string(), producer.to_string());
                    return Err(match e {
                        crate::cache::CacheError::Damaged(d) => InputChanged::File {
                            input,
                            producer,
                            file: d.file,
                            damage: d.damage,
                        },
                        source => InputChanged::Entry {
                            input,
                            producer,
                            source,
                        },
                    });
                }
            }
        }
        Ok(())
    }
}

/// The keys (sorted, each once) of the results a stage is computed from.
fn input_keys<'a>(inputs: impl Iterator<Item = InputResult<'a>>) -> Vec<StageKey> {
    let mut keys: Vec<StageKey> = inputs.map(|r| r.key).collect();
    // the bytes' order is their hex text's order
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A stage that changed one of its inputs while it ran (#22 item 2).
#[derive(Debug, thiserror::Error)]
pub enum InputChanged {
    #[error(
        "it changed its input `{input}` while it ran (file {file} of `{producer}`: {damage}); \
         inputs are read-only: nothing is committed, and `{producer}` runs again at the next run"
    )]
    File {
        input: String,
        producer: String,
        file: String,
        damage: crate::cache::Damage,
    },
    #[error(
        "its input `{input}` (the output of `{producer}`) is gone from the cache after it ran \
         ({source}): nothing is committed, and `{producer}` runs again at the next run"
    )]
    Entry {
        input: String,
        producer: String,
        source: crate::cache::CacheError,
    },
}

/// Refuses a staged output that is not what the process that computed it says it wrote
/// (a file missing, added, or changed since: a half-copied folder on a shared file system).
fn check_staged(staged: &Staged) -> Result<(), String> {
    let Some(written) = &staged.written else {
        return Ok(());
    };
    let mut found = Vec::new();
    list_files(&staged.out_dir, &staged.out_dir, &mut found).map_err(|e| {
        format!(
            "reading the staged outputs {}: {e}",
            staged.out_dir.display()
        )
    })?;
    let found: BTreeSet<String> = found.into_iter().collect();
    if let Some(rel) = written.keys().find(|rel| !found.contains(*rel)) {
        return Err(format!(
            "the staged output lacks `{rel}`, which the job wrote (not committed)"
        ));
    }
    for rel in &found {
        let Some((hash, size)) = written.get(rel) else {
            return Err(format!(
                "the staged output has `{rel}`, which the job did not write (not committed)"
            ));
        };
        let path = staged.out_dir.join(rel);
        let (h, s) = crate::cache::hash_file(&path)
            .map_err(|e| format!("reading the staged output {}: {e}", path.display()))?;
        if &h != hash || s != *size {
            return Err(format!(
                "the staged output `{rel}` is not what the job wrote ({s} bytes, blake3 \
                 {}…, the job wrote {size} bytes, {}…; not committed)",
                h.get(..12).unwrap_or(&h),
                hash.get(..12).unwrap_or(hash)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn staged_with(dir: &std::path::Path, files: &[(&str, &str)]) -> Staged {
        let out_dir = dir.join("out");
        std::fs::create_dir_all(out_dir.join("sub")).unwrap();
        let mut written = BTreeMap::new();
        for (rel, text) in files {
            std::fs::write(out_dir.join(rel), text).unwrap();
            let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
            written.insert(rel.to_string(), (hash, text.len() as u64));
        }
        Staged {
            out_dir,
            seconds: 0.0,
            cleanup: dir.to_path_buf(),
            written: Some(written),
        }
    }

    #[test]
    fn a_staged_output_is_committed_only_as_the_job_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let staged = staged_with(dir.path(), &[("a", "alpha"), ("sub/b", "beta")]);
        assert_eq!(check_staged(&staged), Ok(()));
        // changed after the job wrote it (a half-copied file)
        std::fs::write(staged.out_dir.join("sub/b"), "be").unwrap();
        let err = check_staged(&staged).unwrap_err();
        assert!(err.contains("`sub/b` is not what the job wrote"), "{err}");
        std::fs::write(staged.out_dir.join("sub/b"), "beta").unwrap();
        // a file the job did not write, then one missing
        std::fs::write(staged.out_dir.join("extra"), "x").unwrap();
        assert!(check_staged(&staged).unwrap_err().contains("`extra`"));
        std::fs::remove_file(staged.out_dir.join("extra")).unwrap();
        std::fs::remove_file(staged.out_dir.join("a")).unwrap();
        assert!(check_staged(&staged).unwrap_err().contains("lacks `a`"));
    }
}
