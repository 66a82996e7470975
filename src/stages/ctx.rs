//! What a running stage sees: its resolved inputs, where to write, progress, device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use indicatif::ProgressBar;

use super::StageError;
use crate::hash::StageKey;

/// One upstream artifact bound to an input: the output directory of one stage instance
/// (or a named file or folder inside it), read-only.
#[derive(Debug, Clone)]
pub struct InputArtifact {
    /// Expanded name of the upstream stage instance, e.g. `finetune[fold=3,head=cls]`.
    pub stage: String,
    /// Its stage key (`None` for a path handed to a stage run on its own, see
    /// [`StageCtx::standalone`]). Not hex text: a table reading 50,000 cells held 5 MB of
    /// it (#27).
    pub key: Option<StageKey>,
    /// Its matrix coordinates (empty when the upstream stage has no matrix): a sorted
    /// list, not a `BTreeMap`, whose first entry alone took 632 bytes (a table reading
    /// 50,000 cells held 32 MB of them, #27).
    pub coords: crate::pipeline::CellCoords,
    /// Path of the artifact (a directory, or a file/dir inside it for `stage.output`).
    pub path: PathBuf,
}

impl InputArtifact {
    /// Its key as hex (empty when it has none), as reports and job specs write it.
    pub fn key_hex(&self) -> String {
        self.key.as_ref().map(StageKey::hex).unwrap_or_default()
    }
}

/// Inputs by the name used in the YAML `inputs:` map. An input that refers to a matrix
/// family binds to every instance whose coordinates agree with this stage's own.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub by_name: BTreeMap<String, Vec<InputArtifact>>,
}

impl Inputs {
    /// The single artifact bound to `name` (error if absent or if it is a family).
    pub fn one(&self, name: &str) -> Result<&InputArtifact, StageError> {
        match self.by_name.get(name).map(Vec::as_slice) {
            Some([one]) => Ok(one),
            Some([]) | None => Err(StageError::Input {
                name: name.to_string(),
                message: "this stage needs it, but the pipeline does not bind it under `inputs:`"
                    .to_string(),
            }),
            Some(many) => Err(StageError::Input {
                name: name.to_string(),
                message: format!(
                    "expected one upstream stage, got a family of {} instances",
                    many.len()
                ),
            }),
        }
    }

    /// Path of the single artifact bound to `name`.
    pub fn path(&self, name: &str) -> Result<&Path, StageError> {
        self.one(name).map(|a| a.path.as_path())
    }

    /// All artifacts bound to `name` (a matrix family), in expansion order.
    pub fn all(&self, name: &str) -> Result<&[InputArtifact], StageError> {
        self.by_name
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| StageError::Input {
                name: name.to_string(),
                message: "this stage needs it, but the pipeline does not bind it under `inputs:`"
                    .to_string(),
            })
    }

    /// The single artifact bound to `name`, if the pipeline binds one.
    pub fn optional(&self, name: &str) -> Result<Option<&InputArtifact>, StageError> {
        if self.by_name.contains_key(name) {
            self.one(name).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Progress reporting handle: a live bar on a terminal, silent otherwise.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(bar: ProgressBar) -> Self {
        Progress { bar }
    }
    /// A handle that draws nothing (tests, `pipe stats`).
    pub fn hidden() -> Self {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }
    /// Total units of work (e.g. training steps), which turns on the bar and ETA.
    pub fn set_length(&self, len: u64) {
        self.bar.set_length(len);
    }
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }
    /// Short status text, e.g. `loss 0.412  37.1 seq/s`.
    pub fn set_message(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }
    /// A log line printed above the bars.
    pub fn println(&self, msg: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", msg.as_ref());
        } else {
            self.bar.println(msg.as_ref());
        }
    }
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }
}

/// Which run a stage belongs to, for provenance in its outputs (not part of the key).
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// The pipeline file as given on the command line.
    pub pipeline: String,
    pub profile: Option<String>,
    /// The training stages' precisions when any is not f32 (`bf16 (4 stages), f32 (2)`),
    /// for the report's provenance; see [`crate::report::provenance::precision_summary`].
    pub precision: Option<String>,
}

/// Everything a running stage may use. Created by the executor.
pub struct StageCtx {
    /// Expanded stage name (for messages).
    pub name: String,
    /// Stage key (hex).
    pub key: String,
    /// Matrix coordinates of this instance.
    pub coords: BTreeMap<String, serde_json::Value>,
    pub inputs: Inputs,
    /// Write outputs here; committed atomically to the cache on success.
    pub out_dir: PathBuf,
    /// Temporary files; deleted after the run.
    pub scratch: PathBuf,
    /// Survives a crash or kill; lets a rerun resume. Deleted after a successful commit.
    pub checkpoint_dir: PathBuf,
    pub progress: Progress,
    /// Compute device chosen at run time (`cpu`, `cuda:0`, `wgpu`).
    pub device: String,
    /// Set when the user interrupts the run; long loops should poll [`StageCtx::check_cancelled`].
    pub cancel: Arc<AtomicBool>,
    /// Pipeline and profile of this run (provenance only).
    pub run: RunInfo,
}

impl StageCtx {
    /// A context for running one stage outside a pipeline (tests, notebooks): each input
    /// bound to one path, `out/`, `scratch/` and `checkpoint/` created under `root`, no
    /// progress bar, the CPU device.
    pub fn standalone(name: &str, root: &Path, inputs: &[(&str, &Path)]) -> std::io::Result<Self> {
        let mut by_name = BTreeMap::new();
        for (input, path) in inputs {
            by_name
                .entry(input.to_string())
                .or_insert_with(Vec::new)
                .push(InputArtifact {
                    stage: format!("{input}-source"),
                    key: None,
                    coords: Default::default(),
                    path: path.to_path_buf(),
                });
        }
        for dir in ["out", "scratch", "checkpoint"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(StageCtx {
            name: name.to_string(),
            key: String::new(),
            coords: BTreeMap::new(),
            inputs: Inputs { by_name },
            out_dir: root.join("out"),
            scratch: root.join("scratch"),
            checkpoint_dir: root.join("checkpoint"),
            progress: Progress::hidden(),
            device: "cpu".into(),
            cancel: Arc::new(AtomicBool::new(false)),
            run: RunInfo::default(),
        })
    }

    /// `Err(Interrupted)` once the run has been cancelled.
    pub fn check_cancelled(&self) -> Result<(), StageError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(StageError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// What [`crate::train::fit`] needs of this stage to train on `device`: its checkpoint
    /// folder (a resumed run continues from there), its progress bar and its cancel flag.
    pub fn fit_env<'a>(&'a self, device: &'a burn::tensor::Device) -> crate::train::FitEnv<'a> {
        crate::train::FitEnv {
            device,
            checkpoint_dir: &self.checkpoint_dir,
            progress: &self.progress,
            cancel: &self.cancel,
        }
    }

    /// The device this run computes on (`--device`), and the same with autodiff, which a
    /// training stage builds its model on (see [`crate::model::device::train_device`]).
    pub fn devices(&self) -> Result<(burn::tensor::Device, burn::tensor::Device), StageError> {
        let device = crate::model::device::DeviceSpec::parse(&self.device)?.device()?;
        let train = crate::model::device::train_device(&device);
        Ok((device, train))
    }

    /// The `data` input read as a split: its folder (`fold-K/` with `fold`), labels file
    /// and label set (see [`crate::train::split_source`]).
    pub fn split_input(&self, fold: Option<u32>) -> Result<crate::train::SplitSource, StageError> {
        Ok(crate::train::split_source(self.inputs.path("data")?, fold)?)
    }

    /// Writes `value` as pretty JSON to `out_dir/name`.
    pub fn write_json<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<(), StageError> {
        let path = self.out_dir.join(name);
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| StageError::Failed(format!("serializing {name}: {e}")))?;
        std::fs::write(&path, text).map_err(|e| StageError::io(&path, e))
    }
}
