//! Resumable training state. After each epoch, `epoch-K/` in the stage's checkpoint
//! directory (or, for a run checkpointed every N updates, `step-K/` after update K) holds the model (`model.bpk`), the optimizer state (`optimizer.bpk`, AdamW
//! moments keyed by parameter id; off the CPU `optimizer-flat.bpk` and `.json`, the flat
//! moments of [`super::flat_adamw`]) and `state.json` (epoch, update count, shuffling RNG,
//! history, settings). The directory is written under a temporary name and renamed, so a
//! run killed mid-write leaves the previous epoch's checkpoint intact.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::fit::{EpochRecord, TrainSettings, UpdateRecord};
use super::param_update::ParamUpdate;
use super::rng::SplitMix64;
use super::TrainError;

pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
pub const STATE_FILE: &str = "state.json";
const EPOCH_PREFIX: &str = "epoch-";
const STEP_PREFIX: &str = "step-";

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The settings of the run; a checkpoint only resumes a run with the same settings.
    pub settings: TrainSettings,
    pub epochs_done: usize,
    /// Updates done so far (the learning rate and the dropout seed are functions of it).
    pub step: usize,
    /// The shuffling generator after `epochs_done` epochs.
    pub shuffle_rng: SplitMix64,
    pub history: Vec<EpochRecord>,
    /// Every update so far, with `settings.record_updates`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<UpdateRecord>,
    /// The current epoch's running loss sum, in a checkpoint written mid-epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_loss_sum: Option<f32>,
    /// What the caller scored before the first update, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
}

/// Writes `epoch-K/` for `state.epochs_done = K` and removes older epochs.
pub fn save<M: Module + Clone>(
    dir: &Path,
    model: &M,
    optimizer: &ParamUpdate,
    state: &TrainState,
) -> Result<(), TrainError> {
    save_numbered(
        dir,
        EPOCH_PREFIX,
        state.epochs_done,
        model,
        optimizer,
        state,
    )
}

/// The newest complete checkpoint in `dir`, if any.
pub fn latest(dir: &Path) -> Result<Option<(PathBuf, TrainState)>, TrainError> {
    latest_numbered(dir, EPOCH_PREFIX)
}

/// Writes `step-K/` for `state.step = K` and removes older steps.
pub fn save_step<M: Module + Clone>(
    dir: &Path,
    model: &M,
    optimizer: &ParamUpdate,
    state: &TrainState,
) -> Result<(), TrainError> {
    save_numbered(dir, STEP_PREFIX, state.step, model, optimizer, state)
}

/// The newest complete `step-K/` checkpoint in `dir`, if any.
pub fn latest_step(dir: &Path) -> Result<Option<(PathBuf, TrainState)>, TrainError> {
    latest_numbered(dir, STEP_PREFIX)
}

/// Writes `{prefix}{number}/` (model, optimizer state and `state`, each synced to disk,
/// under a temporary name then renamed) and removes the older `{prefix}K/` folders.
pub fn save_numbered<M: Module + Clone, S: Serialize>(
    dir: &Path,
    prefix: &str,
    number: usize,
    model: &M,
    optimizer: &ParamUpdate,
    state: &S,
) -> Result<(), TrainError> {
    let name = format!("{prefix}{number}");
    let target = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    remove_dir_if_present(&tmp)?;
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let model_path = tmp.join(MODEL_FILE);
    model
        .clone()
        .save_file(&model_path)
        .map_err(|e| TrainError::checkpoint(&model_path, e))?;
    let optimizer_files = optimizer.save(&tmp)?;
    let state_path = tmp.join(STATE_FILE);
    let text =
        serde_json::to_string_pretty(state).map_err(|e| TrainError::checkpoint(&state_path, e))?;
    std::fs::write(&state_path, text).map_err(|e| TrainError::io(&state_path, e))?;
    for file in optimizer_files.iter().chain([&model_path, &state_path]) {
        sync_file(file)?;
    }
    remove_dir_if_present(&target)?;
    std::fs::rename(&tmp, &target).map_err(|e| TrainError::io(&target, e))?;
    for (k, path) in numbered_dirs(dir, prefix)? {
        if k != number {
            remove_dir_if_present(&path)?;
        }
    }
    Ok(())
}

/// The newest complete `{prefix}K/` checkpoint in `dir` and its state, if any.
pub fn latest_numbered<S: DeserializeOwned>(
    dir: &Path,
    prefix: &str,
) -> Result<Option<(PathBuf, S)>, TrainError> {
    let Some((_, path)) = numbered_dirs(dir, prefix)?
        .into_iter()
        .max_by_key(|(k, _)| *k)
    else {
        return Ok(None);
    };
    let state_path = path.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: S =
        serde_json::from_str(&text).map_err(|e| TrainError::checkpoint(&state_path, e))?;
    Ok(Some((path, state)))
}

/// The name of the newest complete checkpoint in `dir` (`epoch-K` or `step-K`), if any:
/// what a rerun of the stage resumes from (`pipe plan` says so).
pub fn newest_name(dir: &Path) -> Option<String> {
    [EPOCH_PREFIX, STEP_PREFIX]
        .into_iter()
        .flat_map(|prefix| numbered_dirs(dir, prefix).unwrap_or_default())
        .max_by_key(|(k, _)| *k)
        .and_then(|(_, path)| Some(path.file_name()?.to_string_lossy().into_owned()))
}

/// Loads the model weights saved in `path`, with their parameter ids (which the optimizer
/// state is keyed by).
pub fn restore_model<M: Module>(path: &Path, model: M) -> Result<M, TrainError> {
    let model_path = path.join(MODEL_FILE);
    model
        .try_load_file(&model_path)
        .map_err(|e| TrainError::checkpoint(&model_path, e))
}

/// Loads the optimizer state saved in `path` into `optimizer` (built for the restored model).
pub fn restore_optimizer(
    path: &Path,
    optimizer: ModuleOptimizer,
) -> Result<ModuleOptimizer, TrainError> {
    let optimizer_path = path.join(OPTIMIZER_FILE);
    optimizer
        .load(&optimizer_path)
        .map_err(|e| TrainError::checkpoint(&optimizer_path, e))
}

/// `(K, path)` of every complete `{prefix}K/` (one with its `state.json`).
fn numbered_dirs(dir: &Path, prefix: &str) -> Result<Vec<(usize, PathBuf)>, TrainError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(dir, e))?;
        let name = entry.file_name();
        let epoch = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|k| k.parse::<usize>().ok());
        if let Some(epoch) = epoch {
            if entry.path().join(STATE_FILE).is_file() {
                found.push((epoch, entry.path()));
            }
        }
    }
    Ok(found)
}

fn remove_dir_if_present(path: &Path) -> Result<(), TrainError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(TrainError::io(path, e)),
        _ => Ok(()),
    }
}

fn sync_file(path: &Path) -> Result<(), TrainError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(path, e))
}
