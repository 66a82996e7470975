//! Multi-task training (Peng et al. 2020 §2.4, after MT-DNN): one encoder shared by
//! several tasks, one head per task. Every batch comes from one task; its loss is that
//! task's head loss (cross-entropy of a classification head, a token head's loss, the MSE
//! of a `regression` head, the binary cross-entropy of a `multilabel` head); the encoder is
//! updated by all of them.
//!
//! Which task each update draws from ([`Sampling`]):
//! - `proportional` (MT-DNN, Peng): every batch of every task once per epoch, the batches
//!   of all tasks shuffled together — a task is drawn in proportion to its batches;
//! - `uniform`: each update picks a task with equal probability;
//! - `temperature`: with probability ∝ `n_t^{1/T}` (`n_t` batches of task `t`), between
//!   proportional (T = 1) and uniform (T → ∞).
//!
//! An epoch has as many updates as the tasks have batches together, whatever the sampling;
//! a task drawn more often than it has batches starts over on a fresh shuffle.

use std::borrow::Cow;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::batching::train_batches;
use super::classifier::{classify, cross_entropy, Batch, EncodedInstance};
use super::fit::{Objective, TrainSettings};
use super::layer_decay::LayerDepths;
use super::rng::SplitMix64;
use super::scores::{head_scores, ScoreLoss, ScoredBatch, ScoredUnit};
use super::tagging::{tag_emissions, TaggedBatch, WordWindow};
use super::TrainError;
use crate::model::bert::BertEncoder;
use crate::model::heads::{Head, TokenHead};
use crate::model::slicing::stack;
use crate::model::BertModel;

/// How updates are spread over the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    #[default]
    Proportional,
    Uniform,
    Temperature,
}

/// One task's head: a sentence head (classification, or a scoring head on [CLS]:
/// `regression`, `multilabel`) or a token head (tagging).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum TaskHead {
    Sentence(Head),
    Token(TokenHead),
}

/// The shared encoder and the heads, in task order.
#[derive(Module, Debug)]
pub struct MultiTaskModel {
    /// The shared encoder: all layers, or with layer slicing (MTL-LS) the embeddings and
    /// the lower k layers only.
    pub encoder: BertModel,
    /// With layer slicing, each task's own upper layers k+1..n (see
    /// [`crate::model::slicing`]); empty without.
    pub uppers: Vec<BertEncoder>,
    pub heads: Vec<TaskHead>,
}

impl MultiTaskModel {
    /// Every task shares the whole encoder (MT-BERT, MTL-XC).
    pub fn shared(encoder: BertModel, heads: Vec<TaskHead>) -> Self {
        MultiTaskModel {
            encoder,
            uppers: Vec::new(),
            heads,
        }
    }

    /// The encoder task `t` runs: the shared one, or the shared lower layers under the
    /// task's own upper layers.
    pub fn task_encoder(&self, t: usize) -> Cow<'_, BertModel> {
        match self.uppers.get(t) {
            Some(upper) => Cow::Owned(stack(&self.encoder, upper)),
            None => Cow::Borrowed(&self.encoder),
        }
    }

    /// Depths for layer-wise learning-rate decay: a task's upper layer k+j counts as
    /// encoder layer k+j whichever task owns it.
    pub fn layer_depths(&self) -> LayerDepths {
        let k = self.encoder.num_layers();
        let n = k + self.uppers.first().map_or(0, |u| u.layer.len());
        let mut depths = LayerDepths::new(n);
        depths.add(&self.encoder.embeddings, 0);
        for (i, layer) in self.encoder.encoder.layer.iter().enumerate() {
            depths.add(layer, i + 1);
        }
        for upper in &self.uppers {
            for (j, layer) in upper.layer.iter().enumerate() {
                depths.add(layer, k + j + 1);
            }
        }
        depths
    }
}

/// One task's training units.
#[derive(Debug, Clone, Copy)]
pub enum TaskUnits<'a> {
    Sentence(&'a [EncodedInstance]),
    Token(&'a [WordWindow]),
    /// Pairs or documents of a scoring head, and the loss its outputs take.
    Scored(&'a [ScoredUnit], ScoreLoss),
}

impl TaskUnits<'_> {
    fn lengths(&self) -> Vec<usize> {
        match self {
            TaskUnits::Sentence(units) => units.iter().map(|x| x.ids.len()).collect(),
            TaskUnits::Token(units) => units.iter().map(|x| x.ids.len()).collect(),
            TaskUnits::Scored(units, _) => units.iter().map(|x| x.ids.len()).collect(),
        }
    }
}

/// The multi-task objective: units of all tasks numbered one after the other (task `t`'s
/// unit `i` is `offsets[t] + i`), each batch from one task.
pub struct MultiTaskObjective<'a> {
    tasks: Vec<TaskUnits<'a>>,
    /// Where each task's units start in the joint numbering, and one past the last.
    offsets: Vec<usize>,
    lengths: Vec<usize>,
    pad_id: u32,
    sampling: Sampling,
    /// `T` of [`Sampling::Temperature`].
    temperature: f64,
}

impl<'a> MultiTaskObjective<'a> {
    pub fn new(
        tasks: Vec<TaskUnits<'a>>,
        pad_id: u32,
        sampling: Sampling,
        temperature: f64,
    ) -> Self {
        let mut offsets = vec![0];
        let mut lengths = Vec::new();
        for task in &tasks {
            lengths.extend(task.lengths());
            offsets.push(lengths.len());
        }
        MultiTaskObjective {
            tasks,
            offsets,
            lengths,
            pad_id,
            sampling,
            temperature,
        }
    }

    fn task_len(&self, t: usize) -> usize {
        self.offsets[t + 1] - self.offsets[t]
    }

    /// The task a joint unit index belongs to.
    fn task_of(&self, unit: usize) -> usize {
        self.offsets.partition_point(|&o| o <= unit) - 1
    }

    /// Task `t`'s batches for one pass over it, in joint numbering.
    fn task_batches(
        &self,
        t: usize,
        settings: &TrainSettings,
        rng: &mut SplitMix64,
    ) -> Vec<Vec<usize>> {
        let range = self.offsets[t]..self.offsets[t + 1];
        train_batches(&self.lengths[range], settings.batch_size, rng)
            .into_iter()
            .map(|b| b.into_iter().map(|i| i + self.offsets[t]).collect())
            .collect()
    }

    /// The probability of drawing each task per update.
    fn task_weights(&self, batch_size: usize) -> Vec<f64> {
        let batches = (0..self.tasks.len()).map(|t| self.task_len(t).div_ceil(batch_size) as f64);
        let weights: Vec<f64> = match self.sampling {
            Sampling::Proportional => batches.collect(),
            Sampling::Uniform => batches.map(|_| 1.0).collect(),
            Sampling::Temperature => batches.map(|n| n.powf(1.0 / self.temperature)).collect(),
        };
        let total: f64 = weights.iter().sum();
        weights.into_iter().map(|w| w / total).collect()
    }
}

impl Objective for MultiTaskObjective<'_> {
    // each batch is one task's: the other heads get no gradient
    const UPDATES_TRAIN_PARTS_IN_TURN: bool = true;
    type Model = MultiTaskModel;

    fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    fn batches_per_epoch(&self, batch_size: usize) -> usize {
        (0..self.tasks.len())
            .map(|t| self.task_len(t).div_ceil(batch_size))
            .sum()
    }

    fn epoch_batches(&self, settings: &TrainSettings, rng: &mut SplitMix64) -> Vec<Vec<usize>> {
        let per_task: Vec<Vec<Vec<usize>>> = (0..self.tasks.len())
            .map(|t| self.task_batches(t, settings, rng))
            .collect();
        if self.sampling == Sampling::Proportional {
            let mut all: Vec<Vec<usize>> = per_task.into_iter().flatten().collect();
            rng.shuffle(&mut all);
            return all;
        }
        let weights = self.task_weights(settings.batch_size);
        let updates = self.batches_per_epoch(settings.batch_size);
        let mut queues: Vec<std::vec::IntoIter<Vec<usize>>> =
            per_task.into_iter().map(Vec::into_iter).collect();
        let mut out = Vec::with_capacity(updates);
        for _ in 0..updates {
            // inverse-CDF draw of a task
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let mut t = 0;
            let mut cumulative = weights[0];
            while u >= cumulative && t + 1 < weights.len() {
                t += 1;
                cumulative += weights[t];
            }
            let batch = match queues[t].next() {
                Some(b) => b,
                None => {
                    queues[t] = self.task_batches(t, settings, rng).into_iter();
                    queues[t].next().unwrap_or_default()
                }
            };
            out.push(batch);
        }
        out
    }

    fn batch_loss(
        &self,
        model: &MultiTaskModel,
        batch: &[usize],
        pad_to: usize,
        device: &Device,
    ) -> Result<Vec<Tensor<1>>, TrainError> {
        let Some(&first) = batch.first() else {
            return Err(TrainError::Invalid("an empty batch".into()));
        };
        let t = self.task_of(first);
        let local = batch.iter().map(|&i| i - self.offsets[t]);
        match (self.tasks[t], &model.heads[t]) {
            (TaskUnits::Sentence(units), TaskHead::Sentence(head)) => {
                let refs: Vec<&EncodedInstance> = local.map(|i| &units[i]).collect();
                let batch = Batch::padded_to(&refs, self.pad_id, pad_to, device);
                let out = classify(&model.task_encoder(t), head, &batch)?;
                Ok(vec![cross_entropy(out.logits, batch.labels)])
            }
            (TaskUnits::Token(units), TaskHead::Token(head)) => {
                let refs: Vec<&WordWindow> = local.map(|i| &units[i]).collect();
                let batch = TaggedBatch::padded_to(&refs, self.pad_id, pad_to, device);
                let e = tag_emissions(&model.task_encoder(t), head, &batch);
                Ok(vec![head.loss(e, &batch.words, &batch.tags)])
            }
            (TaskUnits::Scored(units, loss), TaskHead::Sentence(head)) => {
                let refs: Vec<&ScoredUnit> = local.map(|i| &units[i]).collect();
                let batch = ScoredBatch::padded_to(&refs, self.pad_id, pad_to, device);
                let out = head_scores(&model.task_encoder(t), head, &batch)?;
                Ok(vec![loss.loss(out, batch.targets)])
            }
            _ => Err(TrainError::Invalid(format!(
                "task {t}: its head does not fit its units"
            ))),
        }
    }

    fn layer_depths(&self, model: &MultiTaskModel) -> LayerDepths {
        model.layer_depths()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::fit::Checkpoints;

    fn units(n: usize, len: usize) -> Vec<EncodedInstance> {
        (0..n)
            .map(|_| EncodedInstance {
                ids: vec![1; len],
                label: 0,
                entities: [0, 0],
            })
            .collect()
    }

    fn settings(batch_size: usize) -> TrainSettings {
        TrainSettings {
            lr: 1e-3,
            epochs: 1,
            batch_size,
            warmup: 0.0,
            weight_decay: 0.0,
            grad_clip: 0.0,
            seed: 1,
            bucketing: true,
            layer_decay: 1.0,
            grad_accum: 1,
            checkpoints: Checkpoints::EveryEpoch,
            record_updates: false,
            precision: crate::model::Precision::F32,
            frozen_encoder_updates: 0,
        }
    }

    /// Every parameter value of `module`, in visiting order.
    fn values<M: burn::module::Module>(module: &M) -> Vec<f32> {
        use burn::module::{ModuleVisitor, Param};
        struct Values(Vec<f32>);
        impl ModuleVisitor for Values {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let data = param.val().into_data();
                self.0
                    .extend(data.try_to_vec::<f32>().unwrap_or_else(|e| panic!("{e:?}")));
            }
        }
        let mut v = Values(Vec::new());
        module.visit(&mut v);
        v.0
    }

    fn first_id<M: burn::module::Module>(module: &M) -> burn::module::ParamId {
        use burn::module::{ModuleVisitor, Param, ParamId};
        struct First(Option<ParamId>);
        impl ModuleVisitor for First {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.get_or_insert(param.id);
            }
        }
        let mut f = First(None);
        module.visit(&mut f);
        f.0.unwrap_or_else(|| panic!("a module without parameters"))
    }

    /// A 2-layer model sliced at `k` for two sentence tasks, after one update on a batch
    /// of task 0.
    fn sliced_after_one_step(k: usize) -> (MultiTaskModel, MultiTaskModel) {
        use crate::model::device::train_device;
        use crate::model::heads::{HeadConfig, HeadKind};
        use crate::model::slicing::slice;
        use crate::model::BertConfig;
        use crate::train::classifier::initialize_params;
        use crate::train::fit::adamw;
        use crate::train::rng::with_backend_seed;
        use burn::optim::GradientsParams;

        let device = train_device(&Device::flex());
        let config = BertConfig::tiny(30);
        let model = with_backend_seed(&device, 7, || {
            let encoder = BertModel::new(&config, &device);
            let (lower, uppers) =
                slice(encoder.clone(), &encoder, k, 2).unwrap_or_else(|e| panic!("{e}"));
            let head = || {
                HeadConfig {
                    dropout: 0.0,
                    ..HeadConfig::on_encoder(HeadKind::Cls, &config, 2)
                }
                .init(&device)
                .map(TaskHead::Sentence)
                .unwrap_or_else(|e| panic!("{e}"))
            };
            let model = MultiTaskModel {
                encoder: lower,
                uppers,
                heads: vec![head(), head()],
            };
            initialize_params(&model);
            model
        });
        let a: Vec<EncodedInstance> = (0..4)
            .map(|i| EncodedInstance {
                ids: vec![2, 5 + i, 7, 3],
                label: (i % 2) as usize,
                entities: [0, 0],
            })
            .collect();
        let objective = MultiTaskObjective::new(
            vec![TaskUnits::Sentence(&a), TaskUnits::Sentence(&a)],
            0,
            Sampling::Proportional,
            1.0,
        );
        let loss = objective
            .batch_loss(&model, &[0, 1, 2, 3], 0, &device)
            .unwrap_or_else(|e| panic!("{e}"))
            .pop()
            .unwrap_or_else(|| panic!("one loss term"));
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut optimizer = adamw(&model, 0.0);
        let after = optimizer.step(1e-2, model.clone(), grads);
        (model, after)
    }

    #[test]
    fn scoring_tasks_train_the_shared_encoder_and_only_their_own_head() {
        use crate::model::device::train_device;
        use crate::model::heads::{HeadConfig, HeadKind};
        use crate::model::BertConfig;
        use crate::train::classifier::initialize_params;
        use crate::train::fit::adamw;
        use crate::train::rng::with_backend_seed;
        use burn::optim::GradientsParams;

        let device = train_device(&Device::flex());
        let config = BertConfig::tiny(30);
        let model = with_backend_seed(&device, 3, || {
            let head = |kind, num_labels| {
                HeadConfig {
                    dropout: 0.0,
                    ..HeadConfig::on_encoder(kind, &config, num_labels)
                }
                .init(&device)
                .map(TaskHead::Sentence)
                .unwrap_or_else(|e| panic!("{e}"))
            };
            let model = MultiTaskModel::shared(
                BertModel::new(&config, &device),
                vec![
                    head(HeadKind::Cls, 2),
                    head(HeadKind::Regression, 1),
                    head(HeadKind::Multilabel, 3),
                ],
            );
            initialize_params(&model);
            model
        });
        let cls = units(4, 5);
        // pairs `[CLS] a [SEP] b [SEP]` with segment ids 0/1, and documents
        let pairs: Vec<ScoredUnit> = (0..4)
            .map(|i| ScoredUnit {
                ids: vec![2, 5 + i, 3, 9, 3],
                token_types: vec![0, 0, 0, 1, 1],
                targets: vec![i as f32],
            })
            .collect();
        let docs: Vec<ScoredUnit> = (0..4)
            .map(|i| ScoredUnit {
                ids: vec![2, 7 + i, 8, 3],
                token_types: vec![0; 4],
                targets: vec![1.0, 0.0, (i % 2) as f32],
            })
            .collect();
        let objective = MultiTaskObjective::new(
            vec![
                TaskUnits::Sentence(&cls),
                TaskUnits::Scored(&pairs, ScoreLoss::Mse),
                TaskUnits::Scored(&docs, ScoreLoss::BinaryCrossEntropy),
            ],
            0,
            Sampling::Proportional,
            1.0,
        );
        let loss = |batch: &[usize]| {
            objective
                .batch_loss(&model, batch, 0, &device)
                .unwrap_or_else(|e| panic!("{e}"))
                .pop()
                .unwrap_or_else(|| panic!("one loss term"))
        };
        for batch in [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]] {
            let l: f32 = loss(&batch).into_scalar();
            assert!(l.is_finite() && l > 0.0, "{batch:?}: {l}");
        }
        // one update on the regression task
        let grads = GradientsParams::from_grads(loss(&[4, 5, 6, 7]).backward(), &model);
        let after = adamw(&model, 0.0).step(1e-2, model.clone(), grads);
        assert_ne!(values(&model.encoder), values(&after.encoder));
        assert_ne!(values(&model.heads[1]), values(&after.heads[1]));
        assert_eq!(values(&model.heads[2]), values(&after.heads[2]));
    }

    #[test]
    fn sliced_tasks_share_the_lower_layers_and_own_the_upper_ones() {
        let (before, after) = sliced_after_one_step(1);
        let (t0, t1) = (after.task_encoder(0), after.task_encoder(1));
        // one step of task 0: the shared layer moved, and is the same in both tasks
        assert_eq!(values(&t0.encoder.layer[0]), values(&t1.encoder.layer[0]));
        assert_ne!(
            values(&before.encoder.encoder.layer[0]),
            values(&after.encoder.encoder.layer[0])
        );
        // the upper layers started equal (copies of one checkpoint) and only task 0's moved
        let (b0, b1) = (before.task_encoder(0), before.task_encoder(1));
        assert_eq!(values(&b0.encoder.layer[1]), values(&b1.encoder.layer[1]));
        assert_ne!(values(&t0.encoder.layer[1]), values(&t1.encoder.layer[1]));
        assert_eq!(values(&b1.encoder.layer[1]), values(&t1.encoder.layer[1]));
        // layer-wise decay counts a task's upper layer as layer 2 of 2, the shared one as 1
        let depths = after.layer_depths();
        assert_eq!(depths.factor(first_id(&after.uppers[1].layer[0]), 0.5), 1.0);
        assert_eq!(
            depths.factor(first_id(&after.encoder.encoder.layer[0]), 0.5),
            0.5
        );
        assert_eq!(
            depths.factor(first_id(&after.encoder.embeddings), 0.5),
            0.25
        );
    }

    #[test]
    fn slicing_rate_zero_shares_only_the_embeddings() {
        let (_, after) = sliced_after_one_step(0);
        let (t0, t1) = (after.task_encoder(0), after.task_encoder(1));
        assert_eq!(values(&t0.embeddings), values(&t1.embeddings));
        for l in 0..2 {
            assert_ne!(values(&t0.encoder.layer[l]), values(&t1.encoder.layer[l]));
        }
    }

    #[test]
    fn proportional_sampling_takes_every_batch_once_each_from_one_task() {
        let (a, b) = (units(10, 5), units(25, 7));
        let objective = MultiTaskObjective::new(
            vec![TaskUnits::Sentence(&a), TaskUnits::Sentence(&b)],
            0,
            Sampling::Proportional,
            1.0,
        );
        let s = settings(4);
        assert_eq!(objective.batches_per_epoch(4), 3 + 7);
        let batches = objective.epoch_batches(&s, &mut SplitMix64::new(3));
        assert_eq!(batches.len(), 10);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..35).collect::<Vec<_>>());
        for batch in &batches {
            let task = objective.task_of(batch[0]);
            assert!(batch.iter().all(|&i| objective.task_of(i) == task));
        }
        // the tasks are interleaved, not one after the other
        let order: Vec<usize> = batches.iter().map(|b| objective.task_of(b[0])).collect();
        assert!(
            order.windows(2).filter(|w| w[0] != w[1]).count() > 1,
            "{order:?}"
        );
    }

    #[test]
    fn uniform_sampling_draws_the_small_task_as_often_as_the_large_one() {
        let (a, b) = (units(8, 5), units(392, 5));
        let objective = MultiTaskObjective::new(
            vec![TaskUnits::Sentence(&a), TaskUnits::Sentence(&b)],
            0,
            Sampling::Uniform,
            1.0,
        );
        let batches = objective.epoch_batches(&settings(4), &mut SplitMix64::new(5));
        assert_eq!(batches.len(), 2 + 98);
        let small = batches
            .iter()
            .filter(|b| objective.task_of(b[0]) == 0)
            .count();
        // 100 draws at p = 1/2: far from the 2 % a proportional draw would give
        assert!((30..=70).contains(&small), "{small}");
        assert_eq!(objective.task_weights(4), vec![0.5, 0.5]);
        let t2 = MultiTaskObjective::new(
            vec![TaskUnits::Sentence(&a), TaskUnits::Sentence(&b)],
            0,
            Sampling::Temperature,
            2.0,
        );
        // n^{1/2}: 2^{1/2} against 98^{1/2}
        let w = t2.task_weights(4);
        let expected = 2f64.sqrt() / (2f64.sqrt() + 98f64.sqrt());
        assert!((w[0] - expected).abs() < 1e-12, "{w:?}");
    }
}
