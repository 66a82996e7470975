//! `pipe exec-stage SPEC`: what runs inside a Slurm job. It computes one stage instance
//! from the spec the controller wrote into the staging folder, then writes `result.json`
//! (the list of files and their hashes, or the error). It never opens the cache's sled
//! index: it only reads input views and writes its staging and checkpoint folders; the
//! controller verifies and commits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use super::wire::{host_name, result_path, WorkerResult, WorkerSpec, SPEC_FORMAT};
use crate::exec::executor::compute;
use crate::stages::{InputArtifact, Inputs, Progress, RunInfo, StageCtx, StageRegistry};

/// Exit status of a worker that cannot see the cache folder (the controller says why).
pub const EXIT_CACHE_NOT_VISIBLE: i32 = 3;

/// Why a worker could not even run its stage.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "{host} cannot see {path}: the cache folder must be on a file system that every node \
         of the cluster shares (NFS, Lustre, GPFS...), at the same path as on the machine that \
         runs `pipe run --executor slurm`"
    )]
    NotVisible { host: String, path: PathBuf },
    #[error("{path}: {message}")]
    Spec { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl WorkerError {
    /// The process exit status for this error.
    pub fn exit_status(&self) -> i32 {
        match self {
            WorkerError::NotVisible { .. } => EXIT_CACHE_NOT_VISIBLE,
            _ => 4,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn not_visible(path: &Path) -> WorkerError {
    WorkerError::NotVisible {
        host: host_name(),
        path: path.to_path_buf(),
    }
}

/// Computes the stage `spec_path` describes; `Ok(true)` when it succeeded, `Ok(false)` when
/// the stage failed (both written to `result.json`).
pub fn exec_stage(spec_path: &Path, registry: &StageRegistry) -> Result<bool, WorkerError> {
    let text = match std::fs::read(spec_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_visible(spec_path)),
        Err(e) => return Err(io(spec_path)(e)),
    };
    let spec: WorkerSpec = serde_json::from_slice(&text).map_err(|e| WorkerError::Spec {
        path: spec_path.to_path_buf(),
        message: e.to_string(),
    })?;
    if spec.format != SPEC_FORMAT {
        return Err(WorkerError::Spec {
            path: spec_path.to_path_buf(),
            message: format!(
                "spec format {} but this pipe reads format {SPEC_FORMAT}: the nodes run another \
                 build of pipe than the controller (see --worker-bin)",
                spec.format
            ),
        });
    }
    if !spec.cache.join("blobs").is_dir() {
        return Err(not_visible(&spec.cache));
    }
    let mut by_name: BTreeMap<String, Vec<InputArtifact>> = BTreeMap::new();
    for (name, arts) in &spec.inputs {
        for a in arts {
            if !a.path.exists() {
                return Err(not_visible(&a.path));
            }
            by_name
                .entry(name.clone())
                .or_default()
                .push(InputArtifact {
                    stage: a.stage.clone(),
                    // the spec writes a key's hex, or nothing for none
                    key: crate::hash::StageKey::from_hex(&a.key),
                    coords: a.coords.clone().into(),
                    path: a.path.clone(),
                });
        }
    }
    // A requeued job starts again from an empty output (its checkpoints are kept).
    let out_dir = spec.out_dir();
    let scratch = spec.scratch_dir();
    for dir in [&out_dir, &scratch] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::create_dir_all(&spec.checkpoint_dir).map_err(io(&spec.checkpoint_dir))?;
    // scancel's signals reach a shell stage's command through the job's processes
    crate::stages::shell::share_process_group();
    let t0 = Instant::now();
    let outcome = match registry.get(&spec.kind) {
        None => Err(format!(
            "stage kind `{}` is not implemented in this build of pipe",
            spec.kind
        )),
        Some(stage) => {
            let mut ctx = StageCtx {
                name: spec.stage.clone(),
                key: spec.key.clone(),
                coords: spec.coords.clone(),
                inputs: Inputs { by_name },
                out_dir: out_dir.clone(),
                scratch: scratch.clone(),
                checkpoint_dir: spec.checkpoint_dir.clone(),
                progress: Progress::hidden(),
                device: spec.device.clone(),
                cancel: Arc::new(AtomicBool::new(false)),
                run: RunInfo {
                    pipeline: spec.pipeline.clone(),
                    profile: spec.profile.clone(),
                    precision: spec.precision.clone(),
                },
            };
            compute(stage, &mut ctx, &spec.params)
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&scratch);
    let mut files = BTreeMap::new();
    let error = match outcome {
        Ok(()) => hash_outputs(&out_dir, &mut files).err(),
        Err(e) => Some(e),
    };
    if let Some(e) = &error {
        eprintln!("pipe exec-stage: {} failed: {e}", spec.stage);
    }
    let result = WorkerResult {
        key: spec.key.clone(),
        error: error.clone(),
        seconds,
        files,
        job: std::env::var("SLURM_JOB_ID").ok(),
        host: host_name(),
    };
    write_result(&spec.staging, &result)?;
    Ok(error.is_none())
}

/// Hashes every output file (what the controller checks before it commits).
fn hash_outputs(out_dir: &Path, files: &mut BTreeMap<String, (String, u64)>) -> Result<(), String> {
    let mut rels = Vec::new();
    crate::exec::run::list_files(out_dir, out_dir, &mut rels)
        .map_err(|e| format!("listing outputs in {}: {e}", out_dir.display()))?;
    for rel in rels {
        let path = out_dir.join(&rel);
        if let Ok(target) = std::fs::read_link(&path) {
            return Err(crate::cache::CacheError::LinkInOutput { file: rel, target }.to_string());
        }
        let (hash, size) = crate::cache::hash_file(&path)
            .map_err(|e| format!("hashing {}: {e}", path.display()))?;
        files.insert(rel, (hash, size));
    }
    Ok(())
}

/// Writes `result.json` last, durably (tmp, fsync, rename).
fn write_result(staging: &Path, result: &WorkerResult) -> Result<(), WorkerError> {
    use std::io::Write;
    let path = result_path(staging);
    let tmp = staging.join(".result.json.tmp");
    let text = serde_json::to_vec_pretty(result).unwrap_or_default();
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&text).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_the_node_cannot_see_is_refused_with_why() {
        let registry = StageRegistry::builtin();
        let missing = std::env::temp_dir().join(format!(
            "pipe-no-such-cache-{}/slurm/jobs/x/spec.json",
            std::process::id()
        ));
        let err = exec_stage(&missing, &registry).unwrap_err();
        assert_eq!(err.exit_status(), EXIT_CACHE_NOT_VISIBLE);
        assert!(err.to_string().contains("file system that every node"));
    }
}
