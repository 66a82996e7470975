//! The fine-tuning loop: AdamW with linear warm-up and decay, global-norm gradient
//! clipping, length-bucketed batches, a checkpoint after every epoch and resumption from
//! the newest one.
//!
//! Determinism: the shuffling generator is checkpointed, the learning rate is a function
//! of the update index, and the backend's generator (dropout) is re-seeded before every
//! update from `(seed, update index)`. A run resumed from epoch K therefore computes the
//! same updates as one that never stopped.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::ParamGroup;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::batching::{shuffled_batches, train_batches};
use super::checkpoint::{self, TrainState};
use super::classifier::{cross_entropy, Batch, EncodedInstance, SequenceClassifier};
use super::clipping::{clip_global_norm, no_decay_params};
use super::layer_decay::{step_by_layer, LayerDepths};
use super::rng::{with_backend_seed, SplitMix64};
use super::schedule::LinearWarmupDecay;
use super::TrainError;
use crate::stages::Progress;

/// AdamW's ε, as BERT's optimizer.
const ADAM_EPSILON: f32 = 1e-6;
/// Stream of the shuffling generator; dropout streams are `DROPOUT_STREAM + update index`.
const SHUFFLE_STREAM: u64 = 0;
const DROPOUT_STREAM: u64 = 1 << 32;
/// Updates between reads of the running loss (each read waits for the device).
const LOSS_READ_EVERY: usize = 10;

/// Optimization settings (the `finetune` params of the same names).
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
}

fn layer_decay_default() -> f64 {
    1.0
}

fn bucketing_default() -> bool {
    true
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
}

/// Where a fit runs and reports.
pub struct FitEnv<'a> {
    /// Training device (autodiff); the model must live on it.
    pub device: &'a Device,
    pub checkpoint_dir: &'a Path,
    pub progress: &'a Progress,
    pub cancel: &'a AtomicBool,
}

/// The trained model and its per-epoch history.
pub struct Fitted<M> {
    pub model: M,
    pub history: Vec<EpochRecord>,
    /// The epoch a checkpoint let this run start after, if any.
    pub resumed_after_epoch: Option<usize>,
}

/// What [`fit`] optimizes: the model type, the training units and the loss of a batch of
/// them. Fine-tuning a classifier, tagging tokens and multi-task training are objectives;
/// the loop, the optimizer, clipping, the schedule, checkpoints and progress are [`fit`]'s.
pub trait Objective {
    /// The model being trained (on the autodiff device).
    type Model: Module + Clone;

    /// Tokens of each training unit, [CLS] and [SEP] included (the length buckets' key).
    fn lengths(&self) -> &[usize];

    /// The mean loss of the units `batch` (indices into [`Self::lengths`]), every sequence
    /// padded to at least `pad_to` tokens (0: to the batch's longest).
    fn batch_loss(
        &self,
        model: &Self::Model,
        batch: &[usize],
        pad_to: usize,
        device: &Device,
    ) -> Result<Tensor<1>, TrainError>;

    /// The depth of each encoder parameter, for layer-wise learning-rate decay (empty:
    /// the objective does not support it).
    fn layer_depths(&self, _model: &Self::Model) -> LayerDepths {
        LayerDepths::default()
    }

    /// Updates in one epoch (the schedule's length is known before the first batch).
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
    ) -> Result<Tensor<1>, TrainError> {
        let refs: Vec<&EncodedInstance> = batch.iter().map(|&i| &self.train[i]).collect();
        let batch = Batch::padded_to(&refs, self.pad_id, pad_to, device);
        let out = model.forward(&batch)?;
        Ok(cross_entropy(out.logits, batch.labels))
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
    mut after_epoch: impl FnMut(&O::Model, &mut EpochRecord) -> Result<(), TrainError>,
) -> Result<Fitted<O::Model>, TrainError> {
    let lengths = objective.lengths();
    check_settings(settings, lengths.len())?;
    // without bucketing every batch is padded to the longest instance (max_len once any
    // instance was truncated)
    let fixed_length = if settings.bucketing {
        0
    } else {
        lengths.iter().copied().max().unwrap_or(0)
    };
    let steps_per_epoch = objective.batches_per_epoch(settings.batch_size);
    let total_steps = steps_per_epoch * settings.epochs;
    let schedule = LinearWarmupDecay::new(settings.lr, settings.warmup, total_steps);

    let mut model = model;
    let mut optimizer = adamw(&model, settings.weight_decay);
    let mut state = TrainState {
        settings: settings.clone(),
        epochs_done: 0,
        step: 0,
        shuffle_rng: SplitMix64::stream(settings.seed, SHUFFLE_STREAM),
        history: Vec::new(),
    };
    let mut resumed_after_epoch = None;
    if let Some((path, saved)) = checkpoint::latest(env.checkpoint_dir)? {
        if saved.settings != *settings {
            return Err(TrainError::Invalid(format!(
                "{}: checkpoint of a run with other settings ({:?}); remove it to start over",
                path.display(),
                saved.settings
            )));
        }
        model = checkpoint::restore_model(&path, model)?;
        // the no-decay group matches parameters by id, and the ids come from the checkpoint
        optimizer = checkpoint::restore_optimizer(&path, adamw(&model, settings.weight_decay))?;
        resumed_after_epoch = Some(saved.epochs_done);
        env.progress.println(format!(
            "resuming after epoch {}/{} from {}",
            saved.epochs_done,
            settings.epochs,
            path.display()
        ));
        state = saved;
    }

    let depths = objective.layer_depths(&model);
    if settings.layer_decay != 1.0 && depths.is_empty() {
        return Err(TrainError::Invalid(
            "layer_decay: this training objective has no encoder layers to decay".into(),
        ));
    }

    env.progress.set_length(total_steps as u64);
    env.progress.set_position(state.step as u64);
    let run_start = Instant::now();
    let steps_at_start = state.step;
    while state.epochs_done < settings.epochs {
        let epoch = state.epochs_done + 1;
        let mut rng = state.shuffle_rng;
        let batches = objective.epoch_batches(settings, &mut rng);
        let epoch_start = Instant::now();
        let mut loss_sum: Option<Tensor<1>> = None;
        let mut shown_loss = f64::NAN;
        for (b, indices) in batches.iter().enumerate() {
            if env.cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Interrupted);
            }
            // dropout masks are drawn during the forward pass
            let dropout_seed =
                SplitMix64::stream(settings.seed, DROPOUT_STREAM + state.step as u64).next_u64();
            let loss = with_backend_seed(env.device, dropout_seed, || {
                objective.batch_loss(&model, indices, fixed_length, env.device)
            })?;
            let detached = loss.clone().inner();
            loss_sum = Some(match loss_sum.take() {
                Some(sum) => sum + detached,
                None => detached,
            });
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let (grads, _) = clip_global_norm(&model, grads, settings.grad_clip);
            let lr = schedule.lr(state.step);
            model = if settings.layer_decay == 1.0 {
                optimizer.step(lr, model, grads)
            } else {
                step_by_layer(
                    &mut optimizer,
                    lr,
                    settings.layer_decay,
                    &depths,
                    model,
                    grads,
                )
            };
            state.step += 1;
            env.progress.set_position(state.step as u64);
            if (b + 1) % LOSS_READ_EVERY == 0 || b + 1 == batches.len() {
                if let Some(sum) = &loss_sum {
                    shown_loss = f64::from(sum.clone().into_scalar::<f32>()) / (b + 1) as f64;
                }
                let done = state.step - steps_at_start;
                let per_step = run_start.elapsed().as_secs_f64() / done.max(1) as f64;
                let seq_per_s =
                    refs_seen(&batches[..=b]) as f64 / epoch_start.elapsed().as_secs_f64();
                env.progress.set_message(format!(
                    "epoch {epoch}/{}  loss {shown_loss:.4}  {seq_per_s:.1} seq/s  ETA {}",
                    settings.epochs,
                    format_duration(per_step * (total_steps - state.step) as f64)
                ));
            }
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
            seq_per_s: refs_seen(&batches) as f64 / seconds,
        };
        after_epoch(&model, &mut record)?;
        env.progress.println(epoch_line(&record, settings.epochs));
        state.history.push(record);
        state.epochs_done = epoch;
        state.shuffle_rng = rng;
        checkpoint::save(env.checkpoint_dir, &model, &optimizer, &state)?;
    }
    Ok(Fitted {
        model,
        history: state.history,
        resumed_after_epoch,
    })
}

/// AdamW with decoupled weight decay on every parameter except the 1-D ones (biases,
/// LayerNorm, a probe's `α` and `γ`), as BERT's optimizer.
pub fn adamw<M: Module>(model: &M, weight_decay: f64) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_weight_decay(weight_decay as f32)
        .with_epsilon(ADAM_EPSILON)
        .init()
        .with_group(
            ParamGroup::from_ids(no_decay_params(model)),
            AdamWConfig::new()
                .with_weight_decay(0.0)
                .with_epsilon(ADAM_EPSILON)
                .build(),
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
    if !(s.layer_decay > 0.0 && s.layer_decay <= 1.0) {
        return bad(format!("layer_decay {} must be in (0, 1]", s.layer_decay));
    }
    Ok(())
}

fn refs_seen(batches: &[Vec<usize>]) -> usize {
    batches.iter().map(Vec::len).sum()
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
    use crate::model::heads::{HeadConfig, HeadKind};
    use crate::model::{BertConfig, BertModel};
    use crate::train::classifier::initialize_params;

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
        let device = train_device(&Device::flex());
        let config = BertConfig::tiny(60);
        let model = with_backend_seed(&device, 1, || {
            let head = HeadConfig {
                kind: HeadKind::Cls,
                hidden_size: config.hidden_size,
                num_layers: config.num_hidden_layers,
                num_attention_heads: config.num_attention_heads,
                num_labels: 3,
                lstm_hidden: 8,
                dropout: 0.1,
            }
            .init(&device)
            .unwrap_or_else(|e| panic!("{e}"));
            let model = SequenceClassifier {
                encoder: BertModel::new(&config, &device),
                head,
            };
            initialize_params(&model);
            model
        });
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let settings = TrainSettings {
            lr: 1e-3,
            epochs: 4,
            batch_size: 8,
            warmup: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 7,
            bucketing,
            layer_decay: 1.0,
        };
        let cancel = AtomicBool::new(false);
        let progress = Progress::hidden();
        let env = FitEnv {
            device: &device,
            checkpoint_dir: dir.path(),
            progress: &progress,
            cancel: &cancel,
        };
        let train = instances();
        let objective = ClassificationObjective::new(&train, 0);
        let fitted = fit(model, &objective, &settings, &env, |_, _| Ok(()))
            .unwrap_or_else(|e| panic!("{e}"));
        fitted.history.iter().map(|r| r.train_loss).collect()
    }

    /// Pins the losses of the loop as it was before the trainer became generic: a change
    /// here changes every cached fine-tuning result (bump the kinds' versions then).
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
