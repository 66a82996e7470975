//! The training loop of every stage that updates weights — fine-tuning, multi-task
//! training, continued pre-training (MLM/NSP) and probing: AdamW with linear warm-up and
//! decay, global-norm gradient clipping, optional gradient accumulation and per-group
//! learning rates (layer-wise decay, a probe's scalar mix), length-bucketed batches,
//! checkpoints (after every epoch, every N updates, or none) and resumption from the newest
//! one. What is trained on what is an [`Objective`].
//!
//! Determinism: the shuffling generator is checkpointed, the learning rate is a function
//! of the update index, and the backend's generator (dropout) is re-seeded before every
//! micro-batch from `(seed, micro-batch index)`. A run resumed from a checkpoint therefore
//! computes the same updates as one that never stopped.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::ParamGroup;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::adamw::FusedAdamW;
use super::batching::{shuffled_batches, train_batches};
use super::checkpoint::{self, TrainState};
use super::classifier::{cross_entropy, Batch, EncodedInstance, SequenceClassifier};
use super::clipping::no_decay_params;
use super::layer_decay::{LayerDepths, ParamRates};
use super::loss_scale::LossScale;
use super::param_update::ParamUpdate;
use super::rng::{with_backend_seed, SplitMix64};
use super::schedule::LinearWarmupDecay;
use super::TrainError;
use crate::model::precision::{self, Precision};
use crate::stages::Progress;

/// AdamW's ε, as BERT's optimizer.
pub(super) const ADAM_EPSILON: f32 = 1e-6;
/// Updates between reads of the running loss (each read waits for the device).
const LOSS_READ_EVERY: usize = 10;

/// Optimization settings (the `finetune` params of the same names; `pretrain` and `probe`
/// fill theirs in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub lr: f64,
    pub epochs: usize,
    pub batch_size: usize,
    /// Fraction of all updates spent warming up.
    pub warmup: f64,
    pub weight_decay: f64,
    /// Max global gradient norm; 0 disables clipping.
    pub grad_clip: f64,
    pub seed: u64,
    /// Length-bucketed batches, each padded to its own longest instance; `false`: shuffled
    /// batches all padded to the longest training instance (fixed padding).
    #[serde(default = "bucketing_default")]
    pub bucketing: bool,
    /// Layer-wise learning-rate decay ξ (1: none): encoder layer l of n learns at
    /// lr·ξ^(n−l), see [`super::layer_decay`].
    #[serde(default = "layer_decay_default")]
    pub layer_decay: f64,
    /// Batches per update: the mean loss of `grad_accum` batches of `batch_size` is one
    /// update's (an effective batch of `batch_size · grad_accum`).
    #[serde(default = "grad_accum_default", skip_serializing_if = "is_one")]
    pub grad_accum: usize,
    /// When checkpoints are written.
    #[serde(default, skip_serializing_if = "Checkpoints::is_every_epoch")]
    pub checkpoints: Checkpoints,
    /// Keep every update's loss terms and learning rate ([`Fitted::updates`]); each update
    /// then waits for the device to read its loss.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_updates: bool,
    /// The type of the encoder's matrix products ([`Precision`]): the forward passes of
    /// training and of the epochs' scoring run in its [`precision::autocast`] scope, and
    /// f16 scales the loss ([`LossScale`]).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// The first updates during which the encoder ([`Objective::layer_depths`]: the
    /// embeddings and the layers) is frozen and only what lies above it learns: a head new
    /// to the checkpoint warms up before its gradients reach the encoder (LP-FT, Kumar et
    /// al. 2022). All of them: the encoder never learns (a linear probe). Frozen means
    /// untracked by autodiff, so such an update skips the encoder's backward pass.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frozen_encoder_updates: usize,
}

fn layer_decay_default() -> f64 {
    1.0
}

fn bucketing_default() -> bool {
    true
}

fn grad_accum_default() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// When [`fit`] writes a checkpoint, and so whether it looks for one to resume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoints {
    /// After every epoch (`epoch-K/`).
    #[default]
    EveryEpoch,
    /// Every `n` updates and after every epoch (`step-K/`); a run resumed from one goes on
    /// mid-epoch.
    EveryUpdates(usize),
    /// Never: a run short enough to redo whole (a probe, whose stage keeps each result).
    Never,
}

impl Checkpoints {
    fn is_every_epoch(&self) -> bool {
        *self == Checkpoints::EveryEpoch
    }
}

/// One epoch in `history.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    pub dev_p: Option<f64>,
    pub dev_r: Option<f64>,
    pub dev_f1: Option<f64>,
    /// `regression`: Pearson's r on the dev set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_pearson: Option<f64>,
    /// Per task of a multi-task run: its dev score (F1, or Pearson for regression).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dev_tasks: BTreeMap<String, f64>,
    /// Training time of the epoch (evaluation excluded).
    pub seconds: f64,
    /// Training throughput, sequences per second.
    pub seq_per_s: f64,
    /// `precision: f16`: updates skipped because their gradients overflowed (each halved
    /// the loss scale, see [`LossScale`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_updates: usize,
}

impl EpochRecord {
    /// Records the dev set's precision, recall and F1.
    pub fn set_dev_prf(&mut self, prf: &crate::metrics::Prf) {
        self.dev_p = Some(prf.precision);
        self.dev_r = Some(prf.recall);
        self.dev_f1 = Some(prf.f1);
    }
}

/// Whether the dev set is scored after `epoch` (1-based) of `epochs`: after every epoch
/// with `each_epoch` (the training stages' `eval_dev_each_epoch`), else after the last.
pub fn scores_dev_after(each_epoch: bool, epoch: usize, epochs: usize) -> bool {
    each_epoch || epoch == epochs
}

/// `skip_serializing_if` for counts whose 0 is their default (kept out of keys and files).
pub(crate) fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One update, kept with [`TrainSettings::record_updates`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// 1-based update index.
    pub step: usize,
    /// Each term of the loss ([`Objective::batch_loss`]), its mean over the update's
    /// batches.
    pub losses: Vec<f64>,
    pub lr: f64,
    /// An update of the head warm-up: the encoder was frozen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub heads_only: bool,
}

/// Where a fit runs and reports.
pub struct FitEnv<'a> {
    /// Training device (autodiff); the model must live on it.
    pub device: &'a Device,
    /// Where checkpoints go (unused with [`Checkpoints::Never`]).
    pub checkpoint_dir: &'a Path,
    pub progress: &'a Progress,
    pub cancel: &'a AtomicBool,
}

/// The trained model and its history.
pub struct Fitted<M> {
    pub model: M,
    pub history: Vec<EpochRecord>,
    /// Every update, with [`TrainSettings::record_updates`].
    pub updates: Vec<UpdateRecord>,
    /// Updates done.
    pub steps: usize,
    /// What [`fit_scoring_before`]'s `before` scored (kept in the checkpoints).
    pub before: Option<serde_json::Value>,
    /// The epoch a checkpoint let this run start after, if any (with
    /// [`Checkpoints::EveryUpdates`], the last epoch completed before the checkpoint's update).
    pub resumed_after_epoch: Option<usize>,
}

/// What [`fit`] optimizes: the model type, the training units and the loss of a batch of
/// them. Fine-tuning a classifier, tagging tokens, multi-task training, masked-language
/// modelling and probing are objectives; the loop, the optimizer, clipping, the schedule,
/// checkpoints and progress are [`fit`]'s.
pub trait Objective {
    /// The model being trained (on the autodiff device).
    type Model: Module + Clone;

    /// Generator stream of the epoch shuffles.
    const SHUFFLE_STREAM: u64 = 0;
    /// Whether its updates train different parts of the model in turn (a multi-task
    /// objective's batches each reach one head): such a run keeps one AdamW state per
    /// parameter on every device (see [`ParamUpdate`]).
    const UPDATES_TRAIN_PARTS_IN_TURN: bool = false;
    /// Dropout of batch `m` (counted over the run) draws from stream `DROPOUT_STREAM + m`.
    /// (Objectives that had their own loop before keep their streams, so that their cached
    /// results stay valid.)
    const DROPOUT_STREAM: u64 = 1 << 32;

    /// Tokens of each training unit, [CLS] and [SEP] included (the length buckets' key).
    fn lengths(&self) -> &[usize];

    /// The loss of the units `batch` (indices into [`Self::lengths`], unless
    /// [`Self::epoch_batches`] says otherwise), every sequence padded to at least `pad_to`
    /// tokens (0: to the batch's longest), as the terms of a sum, each a mean over the
    /// batch (pre-training: `L_MLM`, `L_NSP`, as BERT; most objectives have one term). No
    /// term: the batch has nothing to learn from, and is skipped.
    fn batch_loss(
        &self,
        model: &Self::Model,
        batch: &[usize],
        pad_to: usize,
        device: &Device,
    ) -> Result<Vec<Tensor<1>>, TrainError>;

    /// The depth of each encoder parameter, for layer-wise learning-rate decay (empty:
    /// the objective does not support it).
    fn layer_depths(&self, _model: &Self::Model) -> LayerDepths {
        LayerDepths::default()
    }

    /// Parameters that learn at their own multiple of the scheduled rate (a probe's scalar
    /// mix); default: none. Not combined with layer-wise decay.
    fn param_rates(&self, _model: &Self::Model) -> ParamRates {
        ParamRates::default()
    }

    /// Batches in one epoch (the schedule's length is known before the first batch).
    fn batches_per_epoch(&self, batch_size: usize) -> usize {
        self.lengths().len().div_ceil(batch_size)
    }

    /// One epoch's batches, drawn from `rng`: length buckets, or shuffled batches without
    /// bucketing. Must yield [`Self::batches_per_epoch`] batches.
    fn epoch_batches(&self, settings: &TrainSettings, rng: &mut SplitMix64) -> Vec<Vec<usize>> {
        if settings.bucketing {
            train_batches(self.lengths(), settings.batch_size, rng)
        } else {
            shuffled_batches(self.lengths().len(), settings.batch_size, rng)
        }
    }
}

/// Sentence classification: cross-entropy of a [`SequenceClassifier`]'s logits.
pub struct ClassificationObjective<'a> {
    train: &'a [EncodedInstance],
    lengths: Vec<usize>,
    pad_id: u32,
}

impl<'a> ClassificationObjective<'a> {
    pub fn new(train: &'a [EncodedInstance], pad_id: u32) -> Self {
        ClassificationObjective {
            train,
            lengths: train.iter().map(|x| x.ids.len()).collect(),
            pad_id,
        }
    }
}

impl Objective for ClassificationObjective<'_> {
    type Model = SequenceClassifier;

    fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    fn batch_loss(
        &self,
        model: &SequenceClassifier,
        batch: &[usize],
        pad_to: usize,
        device: &Device,
    ) -> Result<Vec<Tensor<1>>, TrainError> {
        let refs: Vec<&EncodedInstance> = batch.iter().map(|&i| &self.train[i]).collect();
        let batch = Batch::padded_to(&refs, self.pad_id, pad_to, device);
        let out = model.forward(&batch)?;
        Ok(vec![cross_entropy(out.logits, batch.labels)])
    }

    fn layer_depths(&self, model: &SequenceClassifier) -> LayerDepths {
        LayerDepths::of_encoder(&model.encoder)
    }
}

/// Trains `model` on `objective`. After each epoch, `after_epoch` may evaluate the model
/// and fill the record's dev fields; then the checkpoint is written. Returns
/// [`TrainError::Interrupted`] as soon as `env.cancel` is set (the last checkpoint stays).
pub fn fit<O: Objective>(
    model: O::Model,
    objective: &O,
    settings: &TrainSettings,
    env: &FitEnv,
    after_epoch: impl FnMut(&O::Model, &mut EpochRecord) -> Result<(), TrainError>,
) -> Result<Fitted<O::Model>, TrainError> {
    fit_scoring_before(model, objective, settings, env, |_| Ok(None), after_epoch)
}

/// [`fit`], scoring the model with `before` ahead of its first update (pre-training's
/// held-out scores): called on a fresh start only, its result is kept in the checkpoints
/// and returned as [`Fitted::before`].
pub fn fit_scoring_before<O: Objective>(
    model: O::Model,
    objective: &O,
    settings: &TrainSettings,
    env: &FitEnv,
    before: impl FnOnce(&O::Model) -> Result<Option<serde_json::Value>, TrainError>,
    after_epoch: impl FnMut(&O::Model, &mut EpochRecord) -> Result<(), TrainError>,
) -> Result<Fitted<O::Model>, TrainError> {
    precision::autocast(settings.precision, || {
        fit_in_precision(model, objective, settings, env, before, after_epoch)
    })
}

/// [`fit_scoring_before`] inside its precision's autocast scope.
fn fit_in_precision<O: Objective>(
    model: O::Model,
    objective: &O,
    settings: &TrainSettings,
    env: &FitEnv,
    before: impl FnOnce(&O::Model) -> Result<Option<serde_json::Value>, TrainError>,
    mut after_epoch: impl FnMut(&O::Model, &mut EpochRecord) -> Result<(), TrainError>,
) -> Result<Fitted<O::Model>, TrainError> {
    crate::allocator::tune_for_training();
    let lengths = objective.lengths();
    check_settings(settings, lengths.len())?;
    // without bucketing every batch is padded to the longest instance (max_len once any
    // instance was truncated)
    let fixed_length = if settings.bucketing {
        0
    } else {
        lengths.iter().copied().max().unwrap_or(0)
    };
    let updates_per_epoch = objective
        .batches_per_epoch(settings.batch_size)
        .div_ceil(settings.grad_accum);
    let total_steps = updates_per_epoch * settings.epochs;
    let schedule = LinearWarmupDecay::new(settings.lr, settings.warmup, total_steps);
    if settings.frozen_encoder_updates > total_steps {
        return Err(TrainError::Invalid(format!(
            "head_warmup: {} updates with the encoder frozen, more than the run's {total_steps}",
            settings.frozen_encoder_updates
        )));
    }

    let mut model = model;
    let mut optimizer = ParamUpdate::new(
        &model,
        settings.weight_decay,
        env.device,
        // the flat update expects every parameter's gradient at every update
        O::UPDATES_TRAIN_PARTS_IN_TURN || settings.frozen_encoder_updates > 0,
    );
    let mut state = TrainState {
        settings: settings.clone(),
        epochs_done: 0,
        step: 0,
        shuffle_rng: SplitMix64::stream(settings.seed, O::SHUFFLE_STREAM),
        history: Vec::new(),
        updates: Vec::new(),
        epoch_loss_sum: None,
        before: None,
    };
    let mut resumed_after_epoch = None;
    let saved = match settings.checkpoints {
        Checkpoints::Never => None,
        Checkpoints::EveryEpoch => checkpoint::latest(env.checkpoint_dir)?,
        Checkpoints::EveryUpdates(_) => checkpoint::latest_step(env.checkpoint_dir)?,
    };
    if let Some((path, saved)) = saved {
        if saved.settings != *settings {
            return Err(TrainError::Invalid(format!(
                "{}: checkpoint of a run with other settings ({:?}); remove it to start over",
                path.display(),
                saved.settings
            )));
        }
        model = checkpoint::restore_model(&path, model)?;
        // the no-decay group matches parameters by id, and the ids come from the checkpoint
        optimizer = optimizer.restore(&path, &model, env.device)?;
        resumed_after_epoch = Some(saved.epochs_done);
        env.progress.println(format!(
            "resuming after update {}/{total_steps} (epoch {}/{}) from {}",
            saved.step,
            saved.epochs_done,
            settings.epochs,
            path.display()
        ));
        state = saved;
    }
    if state.step == 0 && state.before.is_none() {
        state.before = before(&model)?;
    }

    let depths = objective.layer_depths(&model);
    let rates = if settings.layer_decay == 1.0 {
        objective.param_rates(&model)
    } else if depths.is_empty() {
        return Err(TrainError::Invalid(
            "layer_decay: this training objective has no encoder layers to decay".into(),
        ));
    } else if objective.param_rates(&model).is_grouped() {
        return Err(TrainError::Invalid(
            "layer_decay: this training objective sets its own learning-rate groups".into(),
        ));
    } else {
        ParamRates::of_layers(&depths, settings.layer_decay)
    };
    if settings.frozen_encoder_updates > 0 && depths.is_empty() {
        return Err(TrainError::Invalid(
            "head_warmup: this training objective has no encoder to freeze".into(),
        ));
    }

    // the encoder is frozen (untracked) during the first `frozen_encoder_updates`
    let mut encoder_frozen = false;
    // not kept in checkpoints: a resumed f16 run starts again from the initial scale
    let mut loss_scale = LossScale::for_precision(settings.precision);
    env.progress.set_length(total_steps as u64);
    env.progress.set_position(state.step as u64);
    let run_start = Instant::now();
    let steps_at_start = state.step;
    while state.epochs_done < settings.epochs {
        let epoch = state.epochs_done + 1;
        let mut rng = state.shuffle_rng;
        let batches = objective.epoch_batches(settings, &mut rng);
        let updates: Vec<&[Vec<usize>]> = batches.chunks(settings.grad_accum).collect();
        // a checkpoint written mid-epoch resumes at its update
        let done_in_epoch = state.step - state.epochs_done * updates_per_epoch;
        let epoch_start = Instant::now();
        let mut loss_sum: Option<Tensor<1>> = None;
        let resumed_sum = state.epoch_loss_sum.take();
        let mut shown_loss = f64::NAN;
        let mut skipped_updates = 0;
        for (u, micro_batches) in updates.iter().enumerate().skip(done_in_epoch) {
            let heads_only = state.step < settings.frozen_encoder_updates;
            if heads_only != encoder_frozen {
                model = depths.set_encoder_trainable(model, !heads_only);
                encoder_frozen = heads_only;
            }
            let mut accumulator = GradientsAccumulator::<O::Model>::new();
            let mut single = None;
            let mut term_sums: Vec<Option<Tensor<1>>> = Vec::new();
            for (i, indices) in micro_batches.iter().enumerate() {
                if env.cancel.load(Ordering::Relaxed) {
                    return Err(TrainError::Interrupted);
                }
                // dropout masks are drawn during the forward pass
                let micro = (state.step * settings.grad_accum + i) as u64;
                let dropout_seed =
                    SplitMix64::stream(settings.seed, O::DROPOUT_STREAM + micro).next_u64();
                let terms = with_backend_seed(env.device, dropout_seed, || {
                    objective.batch_loss(&model, indices, fixed_length, env.device)
                })?;
                // the update's loss is the mean over its batches
                let scale = micro_batches.len();
                let mut loss: Option<Tensor<1>> = None;
                for (j, term) in terms.into_iter().enumerate() {
                    let term = if scale > 1 {
                        term.div_scalar(scale as f64)
                    } else {
                        term
                    };
                    if settings.record_updates {
                        if term_sums.len() <= j {
                            term_sums.resize(j + 1, None);
                        }
                        add_detached(&mut term_sums[j], &term);
                    }
                    loss = Some(match loss.take() {
                        Some(sum) => sum + term,
                        None => term,
                    });
                }
                let Some(loss) = loss else { continue };
                if loss_sum.is_none() {
                    if let Some(sum) = resumed_sum {
                        let device = loss.clone().inner().device();
                        loss_sum = Some(Tensor::from_data([sum], &device));
                    }
                }
                add_detached(&mut loss_sum, &loss);
                let grads = GradientsParams::from_grads(loss_scale.scaled(loss).backward(), &model);
                if micro_batches.len() == 1 {
                    single = Some(grads);
                } else {
                    accumulator.accumulate(&model, grads);
                }
            }
            let grads = single.unwrap_or_else(|| accumulator.grads());
            let lr = schedule.lr(state.step);
            // f16: an update whose gradients overflowed is skipped
            let (updated, applied) = optimizer.update(
                lr,
                &rates,
                model,
                grads,
                &mut loss_scale,
                settings.grad_clip,
            )?;
            model = updated;
            if !applied {
                skipped_updates += 1;
            }
            state.step += 1;
            env.progress.set_position(state.step as u64);
            let done = state.step - steps_at_start;
            let per_step = run_start.elapsed().as_secs_f64() / done.max(1) as f64;
            let eta = format_duration(per_step * (total_steps - state.step) as f64);
            if settings.record_updates {
                let losses: Vec<f64> = term_sums
                    .into_iter()
                    .map(|sum| sum.map_or(f64::NAN, |s| f64::from(s.into_scalar::<f32>())))
                    .collect();
                let shown: Vec<String> = losses.iter().map(|l| format!("{l:.4}")).collect();
                let phase = if heads_only { " (heads only)" } else { "" };
                env.progress.set_message(format!(
                    "update {}/{total_steps}{phase}  loss {}  ETA {eta}",
                    state.step,
                    shown.join(" + ")
                ));
                state.updates.push(UpdateRecord {
                    step: state.step,
                    losses,
                    lr,
                    heads_only,
                });
            } else if (u + 1) % LOSS_READ_EVERY == 0 || u + 1 == updates.len() {
                if let Some(sum) = &loss_sum {
                    shown_loss = f64::from(sum.clone().into_scalar::<f32>()) / (u + 1) as f64;
                }
                let seq_per_s =
                    refs_seen(&updates[..=u]) as f64 / epoch_start.elapsed().as_secs_f64();
                let phase = if heads_only { " (heads only)" } else { "" };
                env.progress.set_message(format!(
                    "epoch {epoch}/{}{phase}  loss {shown_loss:.4}  {seq_per_s:.1} seq/s  ETA {eta}",
                    settings.epochs,
                ));
            }
            if let Checkpoints::EveryUpdates(every) = settings.checkpoints {
                if state.step.is_multiple_of(every) && u + 1 < updates.len() {
                    state.epoch_loss_sum = match &loss_sum {
                        Some(sum) => Some(sum.clone().into_scalar::<f32>()),
                        None => resumed_sum,
                    };
                    checkpoint::save_step(env.checkpoint_dir, &model, &optimizer, &state)?;
                    state.epoch_loss_sum = None;
                }
            }
        }
        if let Some(sum) = &loss_sum {
            shown_loss = f64::from(sum.clone().into_scalar::<f32>()) / updates.len() as f64;
        }
        let seconds = epoch_start.elapsed().as_secs_f64();
        let mut record = EpochRecord {
            epoch,
            train_loss: shown_loss,
            dev_p: None,
            dev_r: None,
            dev_f1: None,
            dev_pearson: None,
            dev_tasks: BTreeMap::new(),
            seconds,
            seq_per_s: refs_seen(&updates[done_in_epoch..]) as f64 / seconds,
            skipped_updates,
        };
        after_epoch(&model, &mut record)?;
        if !settings.record_updates {
            env.progress.println(epoch_line(&record, settings.epochs));
        }
        state.history.push(record);
        state.epochs_done = epoch;
        state.shuffle_rng = rng;
        match settings.checkpoints {
            Checkpoints::EveryEpoch => {
                checkpoint::save(env.checkpoint_dir, &model, &optimizer, &state)?
            }
            Checkpoints::EveryUpdates(_) => {
                checkpoint::save_step(env.checkpoint_dir, &model, &optimizer, &state)?
            }
            Checkpoints::Never => {}
        }
    }
    if encoder_frozen {
        // a linear probe: hand the encoder back as it came, trainable
        model = depths.set_encoder_trainable(model, true);
    }
    Ok(Fitted {
        model,
        history: state.history,
        updates: state.updates,
        steps: state.step,
        before: state.before,
        resumed_after_epoch,
    })
}

/// Adds a loss's value (detached from the graph) to a running sum.
fn add_detached(sum: &mut Option<Tensor<1>>, loss: &Tensor<1>) {
    let value = loss.clone().inner();
    *sum = Some(match sum.take() {
        Some(s) => s + value,
        None => value,
    });
}

/// AdamW with decoupled weight decay on every parameter except the 1-D ones (biases,
/// LayerNorm, a probe's `α` and `γ`), as BERT's optimizer.
/// On the CPU each parameter's update is one fused pass, bit-identical to burn's
/// ([`super::adamw`]).
pub fn adamw<M: Module>(model: &M, weight_decay: f64) -> ModuleOptimizer {
    ModuleOptimizer::from(FusedAdamW::new(weight_decay as f32, ADAM_EPSILON)).with_group(
        ParamGroup::from_ids(no_decay_params(model)),
        FusedAdamW::new(0.0, ADAM_EPSILON),
        None,
    )
}

fn check_settings(s: &TrainSettings, n_train: usize) -> Result<(), TrainError> {
    let bad = |m: String| Err(TrainError::Invalid(m));
    if n_train == 0 {
        return bad("no training instances".into());
    }
    if s.batch_size == 0 || s.epochs == 0 {
        return bad(format!(
            "batch_size ({}) and epochs ({}) must be positive",
            s.batch_size, s.epochs
        ));
    }
    let lr_ok = s.lr > 0.0 && s.lr.is_finite();
    if !lr_ok || !(0.0..=1.0).contains(&s.warmup) {
        return bad(format!(
            "lr {} must be > 0 and warmup {} in [0, 1]",
            s.lr, s.warmup
        ));
    }
    if s.weight_decay < 0.0 || s.grad_clip < 0.0 {
        return bad("weight_decay and grad_clip must be ≥ 0".into());
    }
    if s.grad_accum == 0 || s.checkpoints == Checkpoints::EveryUpdates(0) {
        return bad("grad_accum and the updates between checkpoints must be positive".into());
    }
    if !(s.layer_decay > 0.0 && s.layer_decay <= 1.0) {
        return bad(format!("layer_decay {} must be in (0, 1]", s.layer_decay));
    }
    Ok(())
}

/// Units in `updates`' batches.
fn refs_seen(updates: &[&[Vec<usize>]]) -> usize {
    updates.iter().flat_map(|u| u.iter()).map(Vec::len).sum()
}

fn epoch_line(r: &EpochRecord, epochs: usize) -> String {
    let dev = match (r.dev_p, r.dev_r, r.dev_f1) {
        (Some(p), Some(rc), Some(f)) => format!(
            "  dev P {:.2} R {:.2} F1 {:.2}",
            100.0 * p,
            100.0 * rc,
            100.0 * f
        ),
        _ => match r.dev_pearson {
            Some(pearson) => format!("  dev Pearson {pearson:.4}"),
            None => String::new(),
        },
    };
    let tasks: String = r
        .dev_tasks
        .iter()
        .map(|(task, score)| format!("  {task} {:.2}", 100.0 * score))
        .collect();
    format!(
        "epoch {}/{epochs}  loss {:.4}{dev}{tasks}  {:.0}s  {:.1} seq/s",
        r.epoch, r.train_loss, r.seconds, r.seq_per_s
    )
}

/// `1h02m`, `3m05s`, `12s`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::train_device;
    use crate::model::heads::HeadKind;
    use crate::model::BertConfig;
    use crate::train::layer_decay::tests::max_change;

    /// 40 instances of 4–19 pieces whose label is a function of their pieces.
    fn instances() -> Vec<EncodedInstance> {
        let mut rng = SplitMix64::new(5);
        (0..40)
            .map(|_| {
                let len = 4 + rng.below(16);
                let ids: Vec<u32> = (0..len).map(|_| 1 + rng.below(59) as u32).collect();
                let label = ids.iter().map(|&i| i as usize).sum::<usize>() % 3;
                EncodedInstance {
                    ids,
                    label,
                    entities: [0, 0],
                }
            })
            .collect()
    }

    /// The mean training loss of each epoch of a 4-epoch, 20-update run.
    fn epoch_losses(bucketing: bool) -> Vec<f64> {
        let fitted = tiny_run(bucketing, Precision::F32, false);
        fitted.history.iter().map(|r| r.train_loss).collect()
    }

    /// Every update's loss of the same run with the encoder's products in `precision`.
    fn update_losses(precision: Precision) -> Vec<f64> {
        let fitted = tiny_run(true, precision, true);
        fitted.updates.iter().map(|u| u.losses[0]).collect()
    }

    /// Updates an f16 run skipped, epoch by epoch.
    fn f16_skips() -> Vec<usize> {
        let fitted = tiny_run(true, Precision::F16, true);
        fitted.history.iter().map(|r| r.skipped_updates).collect()
    }

    /// The 4-epoch, 20-update run of a tiny classifier on [`instances`].
    fn tiny_run(
        bucketing: bool,
        precision: Precision,
        record_updates: bool,
    ) -> Fitted<SequenceClassifier> {
        let settings = TrainSettings {
            bucketing,
            precision,
            record_updates,
            ..tiny_settings()
        };
        let device = train_device(&Device::flex());
        tiny_fit(tiny_classifier(&device), &settings, &device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The settings of [`tiny_run`]: 20 updates of batch 8.
    fn tiny_settings() -> TrainSettings {
        TrainSettings {
            lr: 1e-3,
            epochs: 4,
            batch_size: 8,
            warmup: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 7,
            bucketing: true,
            layer_decay: 1.0,
            grad_accum: 1,
            checkpoints: Checkpoints::EveryEpoch,
            record_updates: false,
            precision: Precision::F32,
            frozen_encoder_updates: 0,
        }
    }

    /// A tiny 3-class CLS classifier, the same each call.
    fn tiny_classifier(device: &Device) -> SequenceClassifier {
        SequenceClassifier::random(&BertConfig::tiny(60), HeadKind::Cls, 3, 1, device)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Trains `model` on [`instances`] with `settings`, from no checkpoint.
    fn tiny_fit(
        model: SequenceClassifier,
        settings: &TrainSettings,
        device: &Device,
    ) -> Result<Fitted<SequenceClassifier>, TrainError> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cancel = AtomicBool::new(false);
        let progress = Progress::hidden();
        let env = FitEnv {
            device,
            checkpoint_dir: dir.path(),
            progress: &progress,
            cancel: &cancel,
        };
        let train = instances();
        let objective = ClassificationObjective::new(&train, 0);
        fit(model, &objective, settings, &env, |_, _| Ok(()))
    }

    #[test]
    fn a_head_warmup_trains_the_head_alone_first() {
        let device = train_device(&Device::flex());
        let before = tiny_classifier(&device);
        let warmed = |frozen_encoder_updates| {
            let settings = TrainSettings {
                frozen_encoder_updates,
                ..tiny_settings()
            };
            tiny_fit(before.clone(), &settings, &device)
        };
        // all 20 updates with the encoder frozen: a linear probe
        let probe = warmed(20).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(max_change(&before.encoder, &probe.model.encoder), 0.0);
        assert!(max_change(&before.head, &probe.model.head) > 0.0);
        // and hands the encoder back trainable
        struct Tracked(bool);
        impl burn::module::ModuleVisitor for Tracked {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                self.0 &= param.is_require_grad();
            }
        }
        let mut tracked = Tracked(true);
        probe.model.encoder.visit(&mut tracked);
        assert!(tracked.0, "the probe's encoder came back frozen");
        // 5 of 20: the encoder learns afterwards, and the run differs from no warm-up
        let warm = warmed(5).unwrap_or_else(|e| panic!("{e}"));
        let plain = warmed(0).unwrap_or_else(|e| panic!("{e}"));
        assert!(max_change(&before.encoder, &warm.model.encoder) > 0.0);
        assert!(max_change(&plain.model.encoder, &warm.model.encoder) > 0.0);
        let Err(err) = warmed(21) else {
            panic!("21 frozen updates of 20 were accepted")
        };
        assert!(err.to_string().contains("head_warmup: 21"), "{err}");
    }

    /// Sets `cancel` once `after` batches were computed: a kill in the middle of an epoch.
    struct KilledAfter<'a> {
        inner: ClassificationObjective<'a>,
        calls: std::cell::Cell<usize>,
        after: usize,
        cancel: &'a AtomicBool,
    }

    impl Objective for KilledAfter<'_> {
        type Model = SequenceClassifier;

        fn lengths(&self) -> &[usize] {
            self.inner.lengths()
        }

        fn batch_loss(
            &self,
            model: &SequenceClassifier,
            batch: &[usize],
            pad_to: usize,
            device: &Device,
        ) -> Result<Vec<Tensor<1>>, TrainError> {
            self.calls.set(self.calls.get() + 1);
            if self.calls.get() == self.after {
                self.cancel.store(true, Ordering::Relaxed);
            }
            self.inner.batch_loss(model, batch, pad_to, device)
        }
    }

    /// A run checkpointed every 2 updates of 2 batches each, killed mid-epoch after
    /// `kill_after` batches (then resumed), or never.
    fn run_with_accumulation(dir: &Path, kill_after: Option<usize>) -> Fitted<SequenceClassifier> {
        let device = train_device(&Device::flex());
        let model = tiny_classifier(&device);
        let settings = TrainSettings {
            epochs: 2,
            grad_accum: 2,
            checkpoints: Checkpoints::EveryUpdates(2),
            record_updates: true,
            ..tiny_settings()
        };
        let cancel = AtomicBool::new(false);
        let progress = Progress::hidden();
        let env = FitEnv {
            device: &device,
            checkpoint_dir: dir,
            progress: &progress,
            cancel: &cancel,
        };
        let train = instances();
        let objective = KilledAfter {
            inner: ClassificationObjective::new(&train, 0),
            calls: std::cell::Cell::new(0),
            after: kill_after.unwrap_or(usize::MAX),
            cancel: &cancel,
        };
        match fit(model.clone(), &objective, &settings, &env, |_, _| Ok(())) {
            Ok(fitted) => fitted,
            Err(TrainError::Interrupted) => {
                cancel.store(false, Ordering::Relaxed);
                let objective = ClassificationObjective::new(&train, 0);
                fit(model, &objective, &settings, &env, |_, _| Ok(()))
                    .unwrap_or_else(|e| panic!("{e}"))
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// 40 instances in batches of 8, 2 per update: 3 updates an epoch (the last of one
    /// batch). Killed during update 5 (epoch 2), the run resumes from `step-4/`, in the
    /// middle of epoch 2, and ends as one that never stopped: same updates, same epoch
    /// losses.
    #[test]
    fn a_run_killed_mid_epoch_resumes_from_its_update_checkpoint() {
        let straight_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let straight = run_with_accumulation(straight_dir.path(), None);
        assert_eq!(straight.steps, 6);
        assert_eq!(straight.updates.len(), 6);
        let killed_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let resumed = run_with_accumulation(killed_dir.path(), Some(9));
        assert_eq!(resumed.resumed_after_epoch, Some(1));
        let losses = |f: &Fitted<SequenceClassifier>| {
            let updates: Vec<Vec<f64>> = f.updates.iter().map(|u| u.losses.clone()).collect();
            let epochs: Vec<f64> = f.history.iter().map(|r| r.train_loss).collect();
            (updates, epochs)
        };
        let ((ua, ea), (ub, eb)) = (losses(&straight), losses(&resumed));
        for (a, b) in ua
            .iter()
            .flatten()
            .zip(ub.iter().flatten())
            .chain(ea.iter().zip(&eb))
        {
            // through the checkpoint's JSON: last-digit rounding at most
            assert!((a - b).abs() < 1e-12, "{ua:?} {ea:?} vs {ub:?} {eb:?}");
        }
        assert_eq!((ua.len(), ea.len()), (ub.len(), eb.len()));
    }

    /// Pins the losses of the loop as it was before the trainer became generic: a change
    /// here changes every cached fine-tuning result (bump the kinds' versions then).
    /// Mixed precision held to f32 on the same run: each of the 20 updates' losses within
    /// 0.01 (of ~1.1; bf16 keeps 8 bits of mantissa, so the products differ from the 3rd
    /// digit), and not equal to it (the half products did run). f16 runs with its loss
    /// scale of 2¹⁶ and must not skip updates on gradients this small.
    #[test]
    fn half_precision_losses_follow_f32() {
        let f32_losses = update_losses(Precision::F32);
        assert_eq!(f32_losses.len(), 20);
        // gradients this small do not overflow f16 even at the initial scale of 2¹⁶
        assert_eq!(f16_skips(), vec![0; 4]);
        for precision in [Precision::Bf16, Precision::F16] {
            let half = update_losses(precision);
            assert_eq!(half.len(), 20, "{precision}");
            let worst = f32_losses
                .iter()
                .zip(&half)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 0.01, "{precision}: {half:?} vs {f32_losses:?}");
            assert!(worst > 0.0, "{precision}: identical to f32");
        }
    }

    #[test]
    fn losses_match_the_pinned_run() {
        let pinned: [(bool, [f64; 4]); 2] = [
            (
                true,
                [
                    1.0971651077270508,
                    1.0589948654174806,
                    1.0374042510986328,
                    1.024325180053711,
                ],
            ),
            (
                false,
                [
                    1.0851285934448243,
                    1.0538912773132325,
                    1.044054889678955,
                    1.0207921981811523,
                ],
            ),
        ];
        for (bucketing, expected) in pinned {
            let losses = epoch_losses(bucketing);
            for (got, want) in losses.iter().zip(expected) {
                assert!(
                    (got - want).abs() < 1e-6,
                    "bucketing {bucketing}: {losses:?} vs {expected:?}"
                );
            }
        }
    }
}
