//! The executor seam: the scheduler ([`super::run_plan`]) decides what is ready; an
//! executor resolves a job's inputs, computes the stage instance into a staging folder,
//! commits its result ([`CommitSpec`]) and says when it is done. `local` computes on worker
//! threads of this process; `slurm` submits one batch job per instance and commits what
//! the job staged (see [`super::slurm`]).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use super::commit::CommitSpec;
use super::inputs::PendingInputs;
use super::slurm::SlurmOptions;
use crate::hash::StageKey;
use crate::pipeline::StageInstance;
use crate::stages::{ErasedStage, RunInfo, StageCtx};

/// Where stage instances are computed.
#[derive(Debug, Clone, Default)]
pub enum Executor {
    /// In threads of the `pipe run` process (`--jobs` at once).
    #[default]
    Local,
    /// One Slurm batch job per stage instance.
    Slurm(SlurmOptions),
}

/// One stage instance handed to an executor: everything needed to compute it.
pub struct Job<'a> {
    /// Index into the pipeline's instances.
    pub instance: usize,
    pub inst: &'a StageInstance,
    pub stage: &'a dyn ErasedStage,
    pub key: StageKey,
    /// Its inputs, resolved by the executor where it runs the job.
    pub inputs: PendingInputs<'a>,
    /// The stage's resumable state (kept across kills).
    pub checkpoint_dir: PathBuf,
    pub device: String,
    pub run: RunInfo,
    /// How to commit its result; the local executor does so on the worker thread.
    pub commit: Arc<CommitSpec<'a>>,
    /// The line that says it starts (`▶ name (kind): why`), shown by the executor when
    /// the job starts running (the local one may hold a job ready before a worker is free).
    pub start_line: String,
}

/// A job's result, committed to the cache by the executor that ran it.
#[derive(Debug)]
pub struct Committed {
    /// Seconds the stage itself ran.
    pub seconds: f64,
}

/// The outputs of a job that succeeded, waiting to be committed.
#[derive(Debug)]
pub struct Staged {
    /// The stage's output folder.
    pub out_dir: PathBuf,
    /// Seconds the stage itself ran.
    pub seconds: f64,
    /// Folder removed once the result is committed (or refused).
    pub cleanup: PathBuf,
    /// What the computing process says it wrote (relative path -> (blake3 hex, size)),
    /// checked against `out_dir` before the commit; `None` when it is this process.
    pub written: Option<BTreeMap<String, (String, u64)>>,
}

/// A job that ended.
#[derive(Debug)]
pub struct Finished {
    pub instance: usize,
    pub result: Result<Committed, String>,
    /// Its [`end_line`] is shown already: the local executor's worker shows it before it
    /// takes its next job, so that lines keep the order of events.
    pub reported: bool,
}

/// How a job's end is shown, whichever executor ran it: `✓ NAME (12.3s)`, `✗ NAME failed:
/// …`, or, once the run is `interrupted`, `■ NAME stopped by the interrupt` (what stopped
/// it is the interrupt, not a fault of the stage).
pub fn end_line(name: &str, result: &Result<Committed, String>, interrupted: bool) -> String {
    match result {
        Ok(done) => format!("✓ {name} ({:.1}s)", done.seconds),
        Err(_) if interrupted => format!("■ {name} stopped by the interrupt"),
        Err(error) => format!("✗ {name} failed: {error}"),
    }
}

/// An executor: starts jobs and reports them as they end.
pub trait StageExecutor<'a> {
    /// Jobs it runs at once.
    fn capacity(&self) -> usize;
    /// Starts computing `job` (an `Err` is that job's failure).
    fn start(&mut self, job: Job<'a>) -> Result<(), String>;
    /// Blocks until one started job ends; `None` when none is in flight.
    fn next_finished(&mut self) -> Result<Option<Finished>, super::run::RunError>;
    /// Whether the run was interrupted (Ctrl-C, SIGTERM): nothing more is started.
    fn interrupted(&self) -> bool {
        false
    }
}

/// Runs `stage` on a prepared context, turning a panic into an error message.
pub(crate) fn compute(
    stage: &dyn ErasedStage,
    ctx: &mut StageCtx,
    params: &serde_json::Value,
) -> Result<(), String> {
    if stage.uses_backend() {
        // a model's tensors are reused from the heap, not mapped afresh each step
        crate::allocator::tune_for_training();
    }
    match catch_unwind(AssertUnwindSafe(|| stage.run(ctx, params))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!(
            "stage panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}
