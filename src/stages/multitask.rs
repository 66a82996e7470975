//! `multitask`: one BERT encoder fine-tuned on several tasks at once, one head per task
//! (Peng et al. 2020's MT-BERT; the multi-task stage of the pairwise-MTL grid).
//!
//! Inputs: `model`, a BERT checkpoint directory, and one split per task, each bound under
//! the task's name; param `tasks` maps those names to their heads:
//!
//! ```yaml
//! mt:
//!   kind: multitask
//!   inputs: {model: bert, chemprot: chemprot_split, bc5cdr_chem: chem_split}
//!   params:
//!     tasks: {chemprot: {head: cls}, bc5cdr_chem: {head: token}}
//!     sampling: proportional
//! ```
//!
//! Heads: the sentence classification heads (`cls`, …) on relation splits, `token` /
//! `token_crf` on NER splits, and the scoring heads on [CLS] as `finetune` trains them:
//! `regression` on a sentence-pair split (`[CLS] a [SEP] b [SEP]`, segment ids 0/1, MSE;
//! dev Pearson) and `multilabel` on a multi-label split (a sigmoid per label, binary
//! cross-entropy; dev micro-F1). `word_pair` is `finetune`'s only.
//!
//! A matrix cell whose `tasks` name fewer splits than `inputs:` binds drops the others (the
//! pairwise grid binds every split once and picks two per cell).
//!
//! Layer slicing (Chai et al. 2022's MTL-LS): `slicing: 0.5` shares the embeddings and the
//! lower k = round(0.5·n) layers, taken from the optional input `shared_from` (an MTL-XC
//! stage's `model`), and gives each task its own upper layers from `model`; the heads
//! start fresh. `layer_decay: 0.9` lowers each layer's learning rate by 0.9 per layer down.
//! A sliced stage writes `slicing.json` (what is shared, from where) instead of `model/`.
//!
//! Outputs: `model/`, the shared encoder in Hugging Face layout with the tokenizer (so it
//! feeds `finetune`, `probe` and `encode` like any checkpoint: Peng's MT-Fine-Tune; left
//! out with `save_model: false`);
//! `tasks/<name>/` per task with `predictions.jsonl` and `labels.json` (what `evaluate`
//! reads: bind `mt.tasks/<name>`), `head.bpk` and `metrics.json` (test P/R/F1 as `evaluate`
//! computes them, last dev F1; a `regression` task's test `pearson`, `spearman`, `mse` and
//! `dev_pearson`, a `multilabel` task's micro P/R/F1, `example_f1`, `macro_f1`);
//! `history.json` (per epoch: loss, each task's dev score) and `metrics.json` (every
//! task's under `tasks.<name>`, for reports).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::training_checks::{
    check_caps, check_dropout, check_layer_decay, check_max_len_fits, check_optimizer_params,
    check_positive, check_tiny, OptimizerParams,
};
use super::training_defaults;
use super::{InputArtifact, InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::data::jsonl;
use crate::data::schema::{LabelSet, Task, LABELS_FILE};
use crate::metrics::Prf;
use crate::model::checkpoint::copy_tokenizer_files;
use crate::model::heads::{HeadConfig, HeadKind, TokenHeadConfig, TransitionConstraints};
use crate::model::precision::{autocast, Precision};
use crate::model::slicing::{shared_layers, slice};
use crate::model::{BertConfig, BertModel, BertTokenizer, ModelError};
use crate::train::classifier::initialize_params;
use crate::train::multitask::{MultiTaskModel, MultiTaskObjective, Sampling, TaskHead, TaskUnits};
use crate::train::rng::with_backend_seed;
use crate::train::scores::{head_outputs, predict_scores, score_set, write_predictions, ScoreLoss};
use crate::train::split_data::{read_scored_split, ScoredSet};
use crate::train::tagging::{entity_prf, join_windows};
use crate::train::{
    fit, load_encoder, micro_prf, predict, predict_tags, read_split, read_tagged_split,
    split_source, Checkpoints, Init, SequenceClassifier, SplitSet, SplitSource, TaggedSet,
    TokenTagger, TrainError, TrainSettings,
};

/// One task of a `multitask` stage: its head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskParams {
    #[serde(default)]
    pub head: HeadKind,
    /// With `head: token_crf`: `bio` or `none` (see `finetune`).
    #[serde(default, skip_serializing_if = "TransitionConstraints::is_none")]
    pub crf_constraints: TransitionConstraints,
}

/// The tasks of a family input `data`: one per upstream cell, named by its coordinate
/// `coordinate`, all with the same head. A data set joins the multi-task model by joining
/// the upstream matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyParams {
    /// The matrix coordinate of the `data` cells that names each task (e.g. `dataset`).
    pub coordinate: String,
    #[serde(default)]
    pub head: HeadKind,
    #[serde(default, skip_serializing_if = "TransitionConstraints::is_none")]
    pub crf_constraints: TransitionConstraints,
}

/// Params of `multitask`; the optimizer's are `finetune`'s, with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultitaskParams {
    /// Input name → its head. Every name must be bound under `inputs:`.
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskParams>,
    /// The tasks of the family input `data` (beside or instead of `tasks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<FamilyParams>,
    #[serde(default)]
    pub sampling: Sampling,
    /// `T` of `sampling: temperature`.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default = "training_defaults::lr")]
    pub lr: f64,
    #[serde(default = "training_defaults::batch_size")]
    pub batch_size: usize,
    #[serde(default = "training_defaults::max_len")]
    pub max_len: usize,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "training_defaults::warmup")]
    pub warmup: f64,
    #[serde(default = "training_defaults::weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "training_defaults::dropout")]
    pub dropout: f64,
    #[serde(default = "training_defaults::grad_clip")]
    pub grad_clip: f64,
    #[serde(default = "training_defaults::seed")]
    pub seed: u64,
    #[serde(default = "training_defaults::lstm_hidden")]
    pub lstm_hidden: usize,
    /// At most this many training units per task (a fixed, seed-independent subset).
    #[serde(default)]
    pub max_train: Option<usize>,
    /// At most this many dev and test units per task.
    #[serde(default)]
    pub max_eval: Option<usize>,
    #[serde(default)]
    pub init: Init,
    #[serde(default)]
    pub tiny: bool,
    /// Score every task's dev set after every epoch (else only after the last).
    #[serde(default = "training_defaults::yes")]
    pub eval_dev_each_epoch: bool,
    #[serde(default = "training_defaults::yes")]
    pub bucketing: bool,
    /// Write the shared encoder to `model/` (what MT-Fine-Tune reads; large). `false` for
    /// a model nothing trains further (a cell of the pairwise grid): its result is then
    /// its scores and heads only, small enough for a results remote's `--max-size`. (Left
    /// out of the key at its default, true.)
    #[serde(
        default = "training_defaults::yes",
        skip_serializing_if = "training_defaults::is_yes"
    )]
    pub save_model: bool,
    /// Layer slicing (MTL-LS) at this rate in [0, 1]: the embeddings and the lower
    /// k = round(rate·n) encoder layers are shared (from input `shared_from`, else from
    /// `model`), each task has its own copy of the upper layers (from `model`). Without it
    /// every task shares the whole encoder. (Left out of the key when absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slicing: Option<f64>,
    /// Layer-wise learning-rate decay ξ in (0, 1]: encoder layer l of n learns at
    /// lr·ξ^(n−l), the embeddings at lr·ξ^n, the heads at lr (MTL-LS: 0.9). (Left out of
    /// the key at its default, 1: none.)
    #[serde(
        default = "training_defaults::layer_decay",
        skip_serializing_if = "training_defaults::is_no_layer_decay"
    )]
    pub layer_decay: f64,
    /// The type of the encoder's matrix products: `f32`, `bf16` or `f16` (mixed
    /// precision with f32 master weights, see [`crate::model::precision`]; f16 scales the
    /// loss). (Left out of the key at its default, f32.)
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

fn default_temperature() -> f64 {
    2.0
}
/// Fewer than `finetune`'s 10: each epoch already passes over every task's data.
fn default_epochs() -> usize {
    3
}

impl MultitaskParams {
    /// Whether every task's dev set is scored after `epoch` (1-based).
    fn scores_dev_after(&self, epoch: usize) -> bool {
        crate::train::fit::scores_dev_after(self.eval_dev_each_epoch, epoch, self.epochs)
    }

    fn settings(&self) -> TrainSettings {
        TrainSettings {
            lr: self.lr,
            epochs: self.epochs,
            batch_size: self.batch_size,
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            seed: self.seed,
            bucketing: self.bucketing,
            layer_decay: self.layer_decay,
            grad_accum: 1,
            checkpoints: Checkpoints::EveryEpoch,
            record_updates: false,
            precision: self.precision,
            frozen_encoder_updates: 0,
        }
    }
}

/// The `multitask` stage kind.
pub struct MultitaskStage;

impl Stage for MultitaskStage {
    const KIND: &'static str = "multitask";
    const VERSION: u32 = 1;
    const USES_BACKEND: bool = true;
    type Params = MultitaskParams;
    const INPUTS: InputContract = InputContract::DeclaredAndNamed {
        declared: &[
            InputSpec::one("model", "a BERT checkpoint directory"),
            InputSpec::optional_many(
                "data",
                "a family of splits, one task per cell, named by its `family.coordinate`",
            ),
            InputSpec::optional_one(
                "shared_from",
                "with `slicing`: the encoder whose embeddings and lower layers are shared \
                 (an MTL-XC stage's `model`)",
            ),
        ],
        by_param: "tasks",
        expects: "a split of the task's corpus",
    };

    fn named_inputs(p: &MultitaskParams) -> Vec<String> {
        p.tasks.keys().cloned().collect()
    }

    fn required_task(p: &MultitaskParams, input: &str) -> Option<Task> {
        match (input, &p.family) {
            ("data", Some(family)) => Some(family.head.task()),
            _ => p.tasks.get(input).map(|t| t.head.task()),
        }
    }

    fn check(p: &MultitaskParams) -> Result<(), ParamError> {
        if p.tasks.is_empty() && p.family.is_none() {
            return Err(ParamError::new(
                "tasks",
                "names no task (and no `family` takes them from input `data`)",
            ));
        }
        let heads = p
            .tasks
            .iter()
            .map(|(name, t)| (format!("tasks.{name}"), t.head, t.crf_constraints))
            .chain(
                p.family
                    .iter()
                    .map(|f| ("family".to_string(), f.head, f.crf_constraints)),
            );
        for (at, head, constraints) in heads {
            if head == HeadKind::WordPair {
                return Err(ParamError::new(
                    format!("{at}.head"),
                    format!(
                        "`{head}` is a `finetune` head; multitask trains the sentence \
                         classification, scoring (`regression`, `multilabel`) and token heads"
                    ),
                ));
            }
            if !constraints.is_none() && head != HeadKind::TokenCrf {
                return Err(ParamError::new(
                    format!("{at}.crf_constraints"),
                    format!("needs `head: token_crf`, not `{head}`"),
                ));
            }
        }
        check_positive(&[
            ("batch_size", p.batch_size),
            ("epochs", p.epochs),
            ("lstm_hidden", p.lstm_hidden),
        ])?;
        check_optimizer_params(&OptimizerParams {
            lr: p.lr,
            max_len: p.max_len,
            min_max_len: 3,
            warmup: p.warmup,
            weight_decay: p.weight_decay,
            grad_clip: p.grad_clip,
        })?;
        check_dropout(p.dropout)?;
        check_layer_decay(p.layer_decay)?;
        check_layer_decay(p.layer_decay)?;
        if !(p.temperature > 0.0 && p.temperature.is_finite()) {
            return Err(ParamError::new(
                "temperature",
                format!("{} is not a positive number", p.temperature),
            ));
        }
        if let Some(rate) = p.slicing {
            if !(0.0..=1.0).contains(&rate) {
                return Err(ParamError::new(
                    "slicing",
                    format!("{rate} is outside [0, 1]"),
                ));
            }
        }
        check_tiny(p.tiny, p.init)?;
        check_caps(p.max_train, p.max_eval)
    }

    fn run(ctx: &mut StageCtx, p: &MultitaskParams) -> Result<(), StageError> {
        // training and every scoring pass of the stage in its precision
        autocast(p.precision, || run(ctx, p))
    }
}

/// One task's data, read for its head.
enum TaskData {
    Sentence {
        train: SplitSet,
        dev: Option<SplitSet>,
        test: SplitSet,
    },
    Token {
        train: TaggedSet,
        dev: Option<TaggedSet>,
        test: TaggedSet,
    },
    /// `regression` or `multilabel`.
    Scored {
        train: ScoredSet,
        dev: Option<ScoredSet>,
        test: ScoredSet,
        loss: ScoreLoss,
    },
}

/// One task as the run holds it.
struct TaskRun {
    name: String,
    params: TaskParams,
    labels_path: PathBuf,
    label_set: LabelSet,
    data: TaskData,
}

fn run(ctx: &mut StageCtx, p: &MultitaskParams) -> Result<(), StageError> {
    let model_dir = ctx.inputs.path("model")?.to_path_buf();
    let tokenizer = BertTokenizer::from_dir(&model_dir)?;
    let mut tasks = Vec::with_capacity(p.tasks.len());
    for (name, params) in &p.tasks {
        let root = ctx.inputs.path(name)?.to_path_buf();
        tasks.push(read_task(p, name, &root, params, &tokenizer)?);
    }
    if let Some(family) = &p.family {
        let params = TaskParams {
            head: family.head,
            crf_constraints: family.crf_constraints,
        };
        for cell in ctx.inputs.all("data")? {
            let name = family_task_name(family, cell)?;
            if tasks.iter().any(|t: &TaskRun| t.name == name) {
                return Err(StageError::Input {
                    name: "data".into(),
                    message: format!("two tasks are called `{name}` ({})", cell.stage),
                });
            }
            tasks.push(read_task(p, &name, &cell.path, &params, &tokenizer)?);
        }
    }
    for task in &tasks {
        let (train, dev, test) = match &task.data {
            TaskData::Sentence { train, dev, test } => (
                train.encoded.len(),
                dev.as_ref().map_or(0, |d| d.encoded.len()),
                test.encoded.len(),
            ),
            TaskData::Token { train, dev, test } => (
                train.windows.len(),
                dev.as_ref().map_or(0, |d| d.sentences.len()),
                test.sentences.len(),
            ),
            TaskData::Scored {
                train, dev, test, ..
            } => (
                train.units.len(),
                dev.as_ref().map_or(0, |d| d.units.len()),
                test.units.len(),
            ),
        };
        ctx.progress.println(format!(
            "{}: task {} ({}): {train} train, {dev} dev, {test} test",
            ctx.name, task.name, task.params.head
        ));
    }

    let (device, train_dev) = ctx.devices()?;
    let shared_from = ctx.inputs.optional("shared_from")?.map(|a| a.path.clone());
    if shared_from.is_some() && p.slicing.is_none() {
        return Err(StageError::Input {
            name: "shared_from".into(),
            message: "is bound but `slicing` is not set: without slicing every layer is shared \
                      and comes from `model`"
                .into(),
        });
    }
    let (model, config) = with_backend_seed(&train_dev, p.seed, || {
        let (encoder, config) = load_encoder(p.init, p.tiny, &model_dir, &tokenizer, &train_dev)?;
        let heads = tasks
            .iter()
            .map(|task| task_head(p, task, &config, &train_dev))
            .collect::<Result<Vec<_>, _>>()?;
        let model = match p.slicing {
            None => MultiTaskModel::shared(encoder, heads),
            Some(rate) => {
                let k = shared_layers(rate, config.num_hidden_layers);
                let shared = match &shared_from {
                    Some(dir) => load_shared(dir, &config, &train_dev)?,
                    None => encoder.clone(),
                };
                let (lower, uppers) = slice(shared, &encoder, k, tasks.len())?;
                MultiTaskModel {
                    encoder: lower,
                    uppers,
                    heads,
                }
            }
        };
        initialize_params(&model);
        Ok::<_, ModelError>((model, config))
    })?;
    let layering = p.slicing.map(|rate| Layering {
        rate,
        k: shared_layers(rate, config.num_hidden_layers),
        n: config.num_hidden_layers,
        shared_from: if shared_from.is_some() {
            "shared_from"
        } else {
            "model"
        },
    });
    if let Some(l) = &layering {
        ctx.progress
            .println(format!("{}: {}", ctx.name, l.describe()));
    }
    check_max_len_fits(p.max_len, config.max_position_embeddings)?;
    let pad_id = tokenizer.pad_id();
    let cancel = ctx.cancel.clone();
    let env = ctx.fit_env(&train_dev);
    let units: Vec<TaskUnits> = tasks
        .iter()
        .map(|task| match &task.data {
            TaskData::Sentence { train, .. } => TaskUnits::Sentence(&train.encoded),
            TaskData::Token { train, .. } => TaskUnits::Token(&train.windows),
            TaskData::Scored { train, loss, .. } => TaskUnits::Scored(&train.units, *loss),
        })
        .collect();
    let objective = MultiTaskObjective::new(units, pad_id, p.sampling, p.temperature);
    let scorer = Scorer {
        pad_id,
        batch_size: p.batch_size,
        device: &device,
        cancel: &cancel,
    };
    let fitted = fit(model, &objective, &p.settings(), &env, |model, record| {
        if !p.scores_dev_after(record.epoch) {
            return Ok(());
        }
        let valid = model.valid();
        for (k, task) in tasks.iter().enumerate() {
            if let Some(score) = scorer.dev_score(&valid, k, task)? {
                record.dev_tasks.insert(task.name.clone(), score);
            }
        }
        Ok(())
    })?;

    // test predictions, per task
    let out = ctx.out_dir.clone();
    let valid = fitted.model.valid();
    let mut per_task = serde_json::Map::new();
    for (k, task) in tasks.iter().enumerate() {
        let dir = out.join("tasks").join(&task.name);
        std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
        let test = scorer.write_test_predictions(&valid, k, task, &dir)?;
        std::fs::copy(&task.labels_path, dir.join(LABELS_FILE))
            .map_err(|e| StageError::io(&task.labels_path, e))?;
        let head_path = dir.join("head.bpk");
        valid.heads[k]
            .clone()
            .save_file(&head_path)
            .map_err(|e| StageError::Failed(format!("{}: {e}", head_path.display())))?;
        let dev_score = fitted
            .history
            .last()
            .and_then(|r| r.dev_tasks.get(&task.name).copied());
        // the dev score that selects a model, under `finetune`'s name
        let dev_key = if task.params.head == HeadKind::Regression {
            "dev_pearson"
        } else {
            "dev_f1"
        };
        let mut metrics = test;
        metrics.insert("head".into(), task.params.head.name().into());
        metrics.insert(
            "entity_types".into(),
            serde_json::json!(entity_types(&task.label_set.labels)),
        );
        metrics.insert(dev_key.into(), serde_json::json!(dev_score));
        let metrics = serde_json::Value::Object(metrics);
        write_json(&dir.join("metrics.json"), &metrics)?;
        per_task.insert(task.name.clone(), metrics);
    }
    ctx.write_json(
        "history.json",
        &serde_json::json!({ "epochs": fitted.history }),
    )?;
    let train_seconds: f64 = fitted.history.iter().map(|r| r.seconds).sum();
    let units: usize = objective_units(&tasks);
    ctx.write_json(
        "metrics.json",
        &serde_json::json!({
            "tasks": per_task,
            "sampling": p.sampling,
            "slicing": layering.as_ref().map(Layering::to_json),
            "train_seconds": train_seconds,
            "train_seq_per_s": (units * fitted.history.len()) as f64 / train_seconds.max(1e-9),
            "train_instances": units,
        }),
    )?;
    match &layering {
        None if !p.save_model => Ok(()),
        // no single encoder to write: each task's is the shared lower layers under its own
        None => save_encoder(
            &fitted.model.encoder,
            &config,
            &model_dir,
            &out.join("model"),
        ),
        Some(l) => ctx.write_json("slicing.json", &l.to_json()),
    }
}

/// Where a sliced model's layers come from (written to `slicing.json` and the metrics).
struct Layering {
    rate: f64,
    /// Shared layers.
    k: usize,
    /// Encoder layers.
    n: usize,
    /// The input the embeddings and the shared layers come from.
    shared_from: &'static str,
}

impl Layering {
    fn describe(&self) -> String {
        let layers = |from: usize, to: usize| match to.checked_sub(from) {
            None => "no encoder layer".to_string(),
            Some(0) => format!("layer {from}"),
            Some(_) => format!("layers {from}..{to}"),
        };
        format!(
            "slicing rate {}: embeddings and {} shared (from `{}`), {} per task (from `model`)",
            self.rate,
            layers(1, self.k),
            self.shared_from,
            layers(self.k + 1, self.n),
        )
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "rate": self.rate,
            "shared_layers": self.k,
            "layers": self.n,
            "shared": "embeddings and the lower shared_layers encoder layers",
            "shared_from": self.shared_from,
            "task_layers_from": "model",
            "heads": "one per task, fresh",
        })
    }
}

/// The encoder of `shared_from`, which must have the pre-trained one's shape.
fn load_shared(
    dir: &Path,
    config: &BertConfig,
    device: &burn::prelude::Device,
) -> Result<BertModel, ModelError> {
    let (shared, shared_config) = BertModel::load(dir, device)?;
    let shape = |c: &BertConfig| {
        (
            c.vocab_size,
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
        )
    };
    if shape(&shared_config) != shape(config) {
        return Err(ModelError::Invalid(format!(
            "shared_from {}: vocabulary, hidden size, layers, heads {:?} differ from `model`'s {:?}",
            dir.display(),
            shape(&shared_config),
            shape(config)
        )));
    }
    Ok(shared)
}

/// The entity types of an IOB tag set (`B-X` → `X`), in tag order: what label
/// unification across the data sets of one class maps (empty for other tasks).
fn entity_types(labels: &[String]) -> Vec<&str> {
    labels.iter().filter_map(|l| l.strip_prefix("B-")).collect()
}

/// Training units over all tasks.
fn objective_units(tasks: &[TaskRun]) -> usize {
    tasks
        .iter()
        .map(|t| match &t.data {
            TaskData::Sentence { train, .. } => train.encoded.len(),
            TaskData::Token { train, .. } => train.windows.len(),
            TaskData::Scored { train, .. } => train.units.len(),
        })
        .sum()
}

/// The task name of a `data` cell: its `family.coordinate` value.
fn family_task_name(family: &FamilyParams, cell: &InputArtifact) -> Result<String, StageError> {
    match cell.coords.get(&family.coordinate) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(StageError::Input {
            name: "data".into(),
            message: format!(
                "{} has no coordinate `{}` to name its task (family.coordinate)",
                cell.stage, family.coordinate
            ),
        }),
    }
}

fn read_task(
    p: &MultitaskParams,
    name: &str,
    root: &Path,
    params: &TaskParams,
    tokenizer: &BertTokenizer,
) -> Result<TaskRun, StageError> {
    let SplitSource {
        dir,
        labels_path,
        label_set,
    } = split_source(root, None)?;
    let missing = |file: &str| StageError::Input {
        name: name.to_string(),
        message: format!("no {file}.jsonl in {}", dir.display()),
    };
    let data = if let Some(loss) = ScoreLoss::of(params.head) {
        let read =
            |file: &str, cap| read_scored_split(&dir, file, cap, &label_set, tokenizer, p.max_len);
        TaskData::Scored {
            train: read("train", p.max_train)?.ok_or_else(|| missing("train"))?,
            dev: read("dev", p.max_eval)?,
            test: read("test", p.max_eval)?.ok_or_else(|| missing("test"))?,
            loss,
        }
    } else if params.head.is_token() {
        let read = |file: &str, cap| {
            read_tagged_split(&dir, file, cap, &label_set.labels, tokenizer, p.max_len)
        };
        TaskData::Token {
            train: read("train", p.max_train)?.ok_or_else(|| missing("train"))?,
            dev: read("dev", p.max_eval)?,
            test: read("test", p.max_eval)?.ok_or_else(|| missing("test"))?,
        }
    } else {
        let read =
            |file: &str, cap| read_split(&dir, file, cap, &label_set.labels, tokenizer, p.max_len);
        TaskData::Sentence {
            train: read("train", p.max_train)?.ok_or_else(|| missing("train"))?,
            dev: read("dev", p.max_eval)?,
            test: read("test", p.max_eval)?.ok_or_else(|| missing("test"))?,
        }
    };
    Ok(TaskRun {
        name: name.to_string(),
        params: params.clone(),
        labels_path,
        label_set,
        data,
    })
}

fn task_head(
    p: &MultitaskParams,
    task: &TaskRun,
    config: &BertConfig,
    device: &burn::prelude::Device,
) -> Result<TaskHead, ModelError> {
    if task.params.head.is_token() {
        let head = TokenHeadConfig {
            kind: task.params.head,
            hidden_size: config.hidden_size,
            tags: task.label_set.labels.clone(),
            dropout: p.dropout,
            constraints: task.params.crf_constraints,
        };
        return Ok(TaskHead::Token(head.init(device)?));
    }
    let num_labels = head_outputs(task.params.head, task.label_set.labels.len());
    let head = HeadConfig {
        lstm_hidden: p.lstm_hidden,
        dropout: p.dropout,
        ..HeadConfig::on_encoder(task.params.head, config, num_labels)
    };
    Ok(TaskHead::Sentence(head.init(device)?))
}

/// Predicts one task with the shared encoder and the task's head.
struct Scorer<'a> {
    pad_id: u32,
    batch_size: usize,
    device: &'a burn::prelude::Device,
    cancel: &'a std::sync::atomic::AtomicBool,
}

impl Scorer<'_> {
    /// Predicted labels of `set` by task `k`'s sentence head.
    fn classify(
        &self,
        model: &MultiTaskModel,
        k: usize,
        set: &SplitSet,
    ) -> Result<Vec<usize>, TrainError> {
        let TaskHead::Sentence(head) = &model.heads[k] else {
            return Err(TrainError::Invalid(format!(
                "task {k} has no sentence head"
            )));
        };
        let classifier = SequenceClassifier {
            encoder: model.task_encoder(k).into_owned(),
            head: head.clone(),
        };
        let pred = predict(
            &classifier,
            &set.encoded,
            self.pad_id,
            self.batch_size,
            self.device,
            false,
            self.cancel,
        )?;
        Ok(pred.into_iter().map(|x| x.label).collect())
    }

    /// The raw outputs of task `k`'s scoring head for every unit of `set`.
    fn score(
        &self,
        model: &MultiTaskModel,
        k: usize,
        set: &ScoredSet,
    ) -> Result<Vec<Vec<f32>>, TrainError> {
        let TaskHead::Sentence(head) = &model.heads[k] else {
            return Err(TrainError::Invalid(format!("task {k} has no scoring head")));
        };
        let scorer = SequenceClassifier {
            encoder: model.task_encoder(k).into_owned(),
            head: head.clone(),
        };
        predict_scores(
            &scorer,
            &set.units,
            self.pad_id,
            self.batch_size,
            self.device,
            self.cancel,
        )
    }

    /// Predicted tags of every sentence of `set` by task `k`'s token head.
    fn tag(
        &self,
        model: &MultiTaskModel,
        k: usize,
        set: &TaggedSet,
    ) -> Result<Vec<Vec<usize>>, TrainError> {
        let TaskHead::Token(head) = &model.heads[k] else {
            return Err(TrainError::Invalid(format!("task {k} has no token head")));
        };
        let tagger = TokenTagger {
            encoder: model.task_encoder(k).into_owned(),
            head: head.clone(),
        };
        let per_window = predict_tags(
            &tagger,
            &set.windows,
            self.pad_id,
            self.batch_size,
            self.device,
            self.cancel,
        )?;
        Ok(join_windows(&set.windows, per_window, set.sentences.len()))
    }

    /// Task `k`'s dev score: F1 (micro over the non-negative labels, entity-level for NER,
    /// micro over the labels for `multilabel`) or Pearson's r (`regression`; none when the
    /// predictions are constant), as `finetune` selects by.
    fn dev_score(
        &self,
        model: &MultiTaskModel,
        k: usize,
        task: &TaskRun,
    ) -> Result<Option<f64>, TrainError> {
        let labels = &task.label_set.labels;
        match &task.data {
            TaskData::Sentence { dev: Some(dev), .. } => {
                let pred = self.classify(model, k, dev)?;
                let prf = micro_prf(
                    labels,
                    task.label_set.negative.as_deref(),
                    &dev.gold(),
                    &pred,
                )?;
                Ok(Some(prf.f1))
            }
            TaskData::Token { dev: Some(dev), .. } => {
                let pred = self.tag(model, k, dev)?;
                Ok(Some(entity_prf(labels, &dev.gold, &pred)?.f1))
            }
            TaskData::Scored { dev: Some(dev), .. } => {
                let out = self.score(model, k, dev)?;
                Ok(score_set(dev, &out, labels.len())?.selection())
            }
            _ => Ok(None),
        }
    }

    /// `predictions.jsonl` of task `k`'s test set in `dir`, as `finetune` writes it, and
    /// the test scores `evaluate` gives them (P/R/F1 micro over the non-negative labels or
    /// entity-level for NER; a scoring head's under `evaluate`'s names).
    fn write_test_predictions(
        &self,
        model: &MultiTaskModel,
        k: usize,
        task: &TaskRun,
        dir: &Path,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StageError> {
        let labels = &task.label_set.labels;
        let path = dir.join("predictions.jsonl");
        match &task.data {
            TaskData::Sentence { test, .. } => {
                let pred = self.classify(model, k, test)?;
                let lines: Vec<serde_json::Value> = test
                    .instances
                    .iter()
                    .zip(&test.encoded)
                    .zip(&pred)
                    .map(|((x, e), &y)| serde_json::json!({"id": x.id, "gold": labels[e.label], "pred": labels[y]}))
                    .collect();
                jsonl::write(&path, &lines)?;
                Ok(prf_json(&micro_prf(
                    labels,
                    task.label_set.negative.as_deref(),
                    &test.gold(),
                    &pred,
                )?))
            }
            TaskData::Token { test, .. } => {
                let pred = self.tag(model, k, test)?;
                let names =
                    |y: &Vec<usize>| y.iter().map(|&t| labels[t].as_str()).collect::<Vec<_>>();
                let lines: Vec<serde_json::Value> = test
                    .sentences
                    .iter()
                    .zip(&test.gold)
                    .zip(&pred)
                    .map(|((x, g), p)| serde_json::json!({"id": x.id, "gold": names(g), "pred": names(p)}))
                    .collect();
                jsonl::write(&path, &lines)?;
                Ok(prf_json(&entity_prf(labels, &test.gold, &pred)?))
            }
            TaskData::Scored { test, .. } => {
                let out = self.score(model, k, test)?;
                write_predictions(&path, test, &out, labels)?;
                Ok(score_set(test, &out, labels.len())?.to_json())
            }
        }
    }
}

/// Test `precision`, `recall`, `f1`.
fn prf_json(prf: &Prf) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("precision".into(), prf.precision.into());
    m.insert("recall".into(), prf.recall.into());
    m.insert("f1".into(), prf.f1.into());
    m
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), StageError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| StageError::Failed(format!("{}: {e}", path.display())))?;
    std::fs::write(path, text).map_err(|e| StageError::io(path, e))
}

/// `model/`: the shared encoder in Hugging Face's layout with the tokenizer files.
fn save_encoder(
    encoder: &BertModel,
    config: &BertConfig,
    from: &Path,
    dir: &Path,
) -> Result<(), StageError> {
    encoder.save(config, dir)?;
    copy_tokenizer_files(from, dir)?;
    Ok(())
}
