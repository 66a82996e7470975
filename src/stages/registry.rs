//! Registry of stage kinds: maps the YAML `kind:` to an object-safe view of a [`Stage`].

use std::collections::BTreeMap;
use std::marker::PhantomData;

use super::{InputContract, ParamError, Stage, StageCtx, StageError};
use crate::data::schema::Task;

/// What a stage says about the tasks of corpora and splits, read from its params.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFacts {
    /// The task of the corpus or split it writes ([`Stage::output_task`]).
    pub output: Option<Task>,
    /// Input name → the task its corpus or split must be for ([`Stage::required_task`]).
    pub required: BTreeMap<String, Task>,
}

/// Object-safe view of a stage kind, used by planner and executor.
pub trait ErasedStage: Send + Sync {
    fn kind(&self) -> &'static str;
    fn version(&self) -> u32;
    fn uses_backend(&self) -> bool;
    /// Parses `params` into the kind's typed params (defaults filled in, unknown params
    /// rejected), runs its checks, and returns the canonical JSON that enters the key.
    fn normalize(&self, params: &serde_json::Value) -> Result<serde_json::Value, ParamError>;
    /// Plan-time content fingerprint (see [`Stage::fingerprint`]).
    fn fingerprint(&self, params: &serde_json::Value) -> Result<Option<String>, ParamError>;
    /// Runs the stage with params previously returned by [`ErasedStage::normalize`].
    fn run(&self, ctx: &mut StageCtx, params: &serde_json::Value) -> Result<(), StageError>;
    /// The inputs the kind reads (see [`Stage::INPUTS`]).
    fn inputs(&self) -> InputContract;
    /// [`Stage::named_inputs`] of these (normalized) params.
    fn named_inputs(&self, params: &serde_json::Value) -> Vec<String>;
    /// [`Stage::output_task`] and [`Stage::required_task`] of each of `inputs`, with the
    /// params (as [`ErasedStage::normalize`] returned them) parsed once.
    fn tasks(
        &self,
        params: &serde_json::Value,
        inputs: &[&str],
        input_task: &dyn Fn(&str) -> Option<Task>,
    ) -> TaskFacts;
}

struct Erased<S: Stage>(PhantomData<fn() -> S>);

/// Parses a kind's params; an error names the param it is about as a dotted path
/// (`env.SEED`, `label2id`): the one serde was reading, or a missing field under it.
fn parse_params<P: serde::de::DeserializeOwned>(
    params: &serde_json::Value,
) -> Result<P, ParamError> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let at = e.path().to_string();
        let message = e.inner().to_string();
        // serde names an unknown or missing field in backticks, one level below the path
        let field = message.split('`').nth(1).filter(|_| {
            message.starts_with("unknown field") || message.starts_with("missing field")
        });
        // (the path already ends at an unknown field, not yet at a missing one)
        let param = match (at.as_str(), field) {
            (".", Some(field)) => field.to_string(),
            (".", None) => String::new(),
            (at, Some(field)) if at.rsplit('.').next() != Some(field) => format!("{at}.{field}"),
            (at, _) => at.to_string(),
        };
        ParamError { param, message }
    })
}

impl<S: Stage> ErasedStage for Erased<S> {
    fn kind(&self) -> &'static str {
        S::KIND
    }
    fn version(&self) -> u32 {
        S::VERSION
    }
    fn uses_backend(&self) -> bool {
        S::USES_BACKEND
    }
    fn normalize(&self, params: &serde_json::Value) -> Result<serde_json::Value, ParamError> {
        let typed: S::Params = parse_params(params)?;
        S::check(&typed)?;
        serde_json::to_value(&typed).map_err(|e| ParamError::new("", e.to_string()))
    }
    fn fingerprint(&self, params: &serde_json::Value) -> Result<Option<String>, ParamError> {
        let typed: S::Params = parse_params(params)?;
        S::fingerprint(&typed)
    }
    fn run(&self, ctx: &mut StageCtx, params: &serde_json::Value) -> Result<(), StageError> {
        let typed: S::Params = parse_params(params)?;
        S::run(ctx, &typed)
    }
    fn inputs(&self) -> InputContract {
        S::INPUTS
    }
    fn named_inputs(&self, params: &serde_json::Value) -> Vec<String> {
        if !matches!(S::INPUTS, InputContract::DeclaredAndNamed { .. }) {
            return Vec::new();
        }
        serde_json::from_value::<S::Params>(params.clone())
            .map(|typed| S::named_inputs(&typed))
            .unwrap_or_default()
    }
    fn tasks(
        &self,
        params: &serde_json::Value,
        inputs: &[&str],
        input_task: &dyn Fn(&str) -> Option<Task>,
    ) -> TaskFacts {
        // open kinds (`shell`, `report`) write nothing whose task is known; skipping them
        // keeps a 100,000-stage shell pipeline from parsing its params again
        if S::INPUTS == InputContract::Open {
            return TaskFacts::default();
        }
        let Ok(typed) = serde_json::from_value::<S::Params>(params.clone()) else {
            return TaskFacts::default();
        };
        TaskFacts {
            output: S::output_task(&typed, input_task),
            required: inputs
                .iter()
                .filter_map(|&input| Some((input.to_string(), S::required_task(&typed, input)?)))
                .collect(),
        }
    }
}

/// All stage kinds this build of `pipe` can run.
pub struct StageRegistry {
    kinds: BTreeMap<&'static str, Box<dyn ErasedStage>>,
}

impl StageRegistry {
    /// An empty registry (tests); see [`StageRegistry::builtin`].
    pub fn empty() -> Self {
        StageRegistry {
            kinds: BTreeMap::new(),
        }
    }

    /// Every kind shipped with `pipe`.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        r.register::<super::shell::ShellStage>();
        r.register::<super::evaluate::EvaluateStage>();
        r.register::<super::cv_aggregate::CvAggregateStage>();
        r.register::<super::report::ReportStage>();
        r.register::<super::fetch::FetchStage>();
        r.register::<super::corpus::CorpusStage>();
        r.register::<super::split::SplitStage>();
        r.register::<super::finetune::FinetuneStage>();
        r.register::<super::multitask::MultitaskStage>();
        r.register::<super::subdomain_corpus::SubdomainCorpusStage>();
        r.register::<super::pretrain::PretrainStage>();
        r.register::<super::attention_analysis::AttentionAnalysisStage>();
        r.register::<super::probe::ProbeStage>();
        r.register::<super::summary::SummaryStage>();
        r
    }

    pub fn register<S: Stage>(&mut self) {
        self.kinds
            .insert(S::KIND, Box::new(Erased::<S>(PhantomData)));
    }

    pub fn get(&self, kind: &str) -> Option<&dyn ErasedStage> {
        self.kinds.get(kind).map(|b| b.as_ref())
    }

    /// Names of the registered kinds, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}
