//! The files a controller and a worker exchange through the shared cache folder: the
//! worker's spec (`spec.json`, written by the controller) and its result (`result.json`,
//! written last by the worker, tmp + rename, so its presence means the outputs are done).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Version of the spec format; a worker refuses another (a `pipe` of another build).
pub const SPEC_FORMAT: u32 = 1;

/// One stage instance to compute, as the controller planned it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub format: u32,
    /// The cache folder (absolute), which the worker must see.
    pub cache: PathBuf,
    /// Instance name (`ft[seed=1]`).
    pub stage: String,
    pub kind: String,
    /// Stage key (hex).
    pub key: String,
    pub coords: BTreeMap<String, serde_json::Value>,
    /// Normalized params.
    pub params: serde_json::Value,
    /// Input name -> read-only views of upstream results in the cache.
    pub inputs: BTreeMap<String, Vec<SpecInput>>,
    /// The job's staging folder: `out/`, `scratch/`, `result.json`.
    pub staging: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub device: String,
    pub pipeline: String,
    pub profile: Option<String>,
    /// [`crate::stages::RunInfo::precision`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

/// One upstream artifact of an input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecInput {
    pub stage: String,
    pub key: String,
    pub coords: BTreeMap<String, serde_json::Value>,
    pub path: PathBuf,
}

/// What a worker reports when its stage ended (either way).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerResult {
    /// The key it computed (hex).
    pub key: String,
    /// Why the stage failed; `None` when it succeeded.
    pub error: Option<String>,
    pub seconds: f64,
    /// Every output file: relative path -> (blake3 hex, size).
    pub files: BTreeMap<String, (String, u64)>,
    /// `$SLURM_JOB_ID` of the job it ran in.
    pub job: Option<String>,
    pub host: String,
}

impl WorkerSpec {
    pub fn out_dir(&self) -> PathBuf {
        self.staging.join("out")
    }
    pub fn scratch_dir(&self) -> PathBuf {
        self.staging.join("scratch")
    }
}

/// `result.json` of a staging folder.
pub fn result_path(staging: &Path) -> PathBuf {
    staging.join("result.json")
}

/// `spec.json` of a staging folder.
pub fn spec_path(staging: &Path) -> PathBuf {
    staging.join("spec.json")
}

/// This machine's host name (for messages).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this node".into())
}
