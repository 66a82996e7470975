//! Stage kinds: one module per kind, each implementing [`Stage`]. The executor knows
//! stages only through the object-safe [`ErasedStage`] view kept in the [`StageRegistry`].

pub mod attention_analysis;
pub mod contract;
pub mod corpus;
mod ctx;
pub mod cv_aggregate;
pub mod evaluate;
pub mod fetch;
pub mod finetune;
pub mod multitask;
pub mod pretrain;
pub mod probe;
mod registry;
pub mod report;
pub mod shell;
pub mod split;
pub mod subdomain_corpus;
pub mod summary;
pub mod training_checks;
pub mod training_defaults;

pub use contract::{Arity, ContractError, InputContract, InputSpec};
pub use ctx::{InputArtifact, Inputs, Progress, RunInfo, StageCtx};
pub use registry::{ErasedStage, StageRegistry, TaskFacts};

use serde::{de::DeserializeOwned, Serialize};

use crate::data::schema::Task;

/// A stage kind: typed params in, files written to [`StageCtx::out_dir`] out.
///
/// `KIND` is the YAML `kind:` value; bump `VERSION` whenever the kind's semantics change,
/// so that every key (and thus every cached result) of that kind is invalidated.
pub trait Stage: Send + Sync + 'static {
    /// The YAML value of `kind:`.
    const KIND: &'static str;
    /// Semantic version; part of every key of this kind.
    const VERSION: u32;
    /// Whether numeric results depend on the compute backend (then the backend name is
    /// part of the key so results from different backends are never mixed silently).
    const USES_BACKEND: bool = false;
    /// Typed params; use `#[serde(deny_unknown_fields)]` and serde defaults.
    type Params: DeserializeOwned + Serialize;
    /// The inputs this kind reads, checked when the pipeline is bound (names, which are
    /// required, one or a family); [`InputContract::Open`] takes any names.
    const INPUTS: InputContract;

    /// For a kind that writes a corpus or a split: the task it is for, from its params and
    /// the tasks of its inputs (`input_task(name)`); `None` when it writes neither or the
    /// task is unknown (a `shell` stage's output).
    fn output_task(
        _params: &Self::Params,
        _input_task: &dyn Fn(&str) -> Option<Task>,
    ) -> Option<Task> {
        None
    }

    /// With [`InputContract::DeclaredAndNamed`]: the input names these params list (a
    /// `multitask` stage's tasks), in order.
    fn named_inputs(_params: &Self::Params) -> Vec<String> {
        Vec::new()
    }

    /// The task the corpus or split bound to `input` must be for (a relation head cannot
    /// train on NER sentences); `None` takes any.
    fn required_task(_params: &Self::Params, _input: &str) -> Option<Task> {
        None
    }

    /// Range and consistency checks done at plan time (before anything runs). A check that
    /// reads a file must come with a `Some` [`Stage::fingerprint`], so that a stored
    /// expansion checks it again (`pipeline::ExpandedStore`).
    fn check(_params: &Self::Params) -> Result<(), ParamError> {
        Ok(())
    }

    /// Fingerprint of what determines the output beyond params and inputs (e.g. the bytes
    /// of a local `path:` source), computed at plan time; it becomes part of the key.
    /// `None` must depend on the params alone (no local content named): a stored
    /// expansion recomputes only the fingerprints that were `Some`.
    fn fingerprint(_params: &Self::Params) -> Result<Option<String>, ParamError> {
        Ok(None)
    }

    /// Runs the stage. Outputs are whatever it writes under `ctx.out_dir`; a `metrics.json`
    /// there is read by reports. It must not write anywhere else but `ctx.scratch` and
    /// `ctx.checkpoint_dir`.
    fn run(ctx: &mut StageCtx, params: &Self::Params) -> Result<(), StageError>;
}

/// A bad param value found at plan time.
#[derive(Debug, thiserror::Error)]
#[error("param `{param}`: {message}")]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

impl ParamError {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        ParamError {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// A plan-time check of the data layer (`DataError::Param`) as a [`ParamError`].
pub(crate) fn param_error(e: crate::data::DataError) -> ParamError {
    match e {
        crate::data::DataError::Param { param, message } => ParamError::new(param, message),
        other => ParamError::new("", other.to_string()),
    }
}

/// Why a stage run failed. Module errors convert into it with `?`.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("input `{name}`: {message}")]
    Input { name: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("command failed ({status}); stderr tail:\n{stderr_tail}")]
    Command { status: String, stderr_tail: String },
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Source(#[from] crate::sources::SourceError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Evaluation(#[from] crate::metrics::evaluation::EvaluationError),
    #[error("interrupted")]
    Interrupted,
}

/// A split that cannot be read for training is a problem with the `data` input.
impl From<crate::train::SplitDataError> for StageError {
    fn from(e: crate::train::SplitDataError) -> Self {
        StageError::Input {
            name: "data".into(),
            message: e.to_string(),
        }
    }
}

impl StageError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        StageError::Io {
            path: path.into(),
            source,
        }
    }
}
