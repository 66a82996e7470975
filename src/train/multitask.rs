//! Multi-task training (Peng et al. 2020 §2.4, after MT-DNN): one encoder shared by
//! several tasks, one head per task. Every batch comes from one task; its loss is that
//! task's head loss; the encoder is updated by all of them.
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

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::batching::train_batches;
use super::classifier::{classify, cross_entropy, Batch, EncodedInstance};
use super::fit::{Objective, TrainSettings};
use super::rng::SplitMix64;
use super::tagging::{tag_emissions, TaggedBatch, WordWindow};
use super::TrainError;
use crate::model::heads::{Head, TokenHead};
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

/// One task's head: a sentence head (classification) or a token head (tagging).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum TaskHead {
    Sentence(Head),
    Token(TokenHead),
}

/// The shared encoder and the heads, in task order.
#[derive(Module, Debug)]
pub struct MultiTaskModel {
    pub encoder: BertModel,
    pub heads: Vec<TaskHead>,
}

/// One task's training units.
#[derive(Debug, Clone, Copy)]
pub enum TaskUnits<'a> {
    Sentence(&'a [EncodedInstance]),
    Token(&'a [WordWindow]),
}

impl TaskUnits<'_> {
    fn lengths(&self) -> Vec<usize> {
        match self {
            TaskUnits::Sentence(units) => units.iter().map(|x| x.ids.len()).collect(),
            TaskUnits::Token(units) => units.iter().map(|x| x.ids.len()).collect(),
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
    ) -> Result<Tensor<1>, TrainError> {
        let Some(&first) = batch.first() else {
            return Err(TrainError::Invalid("an empty batch".into()));
        };
        let t = self.task_of(first);
        let local = batch.iter().map(|&i| i - self.offsets[t]);
        match (self.tasks[t], &model.heads[t]) {
            (TaskUnits::Sentence(units), TaskHead::Sentence(head)) => {
                let refs: Vec<&EncodedInstance> = local.map(|i| &units[i]).collect();
                let batch = Batch::padded_to(&refs, self.pad_id, pad_to, device);
                let out = classify(&model.encoder, head, &batch)?;
                Ok(cross_entropy(out.logits, batch.labels))
            }
            (TaskUnits::Token(units), TaskHead::Token(head)) => {
                let refs: Vec<&WordWindow> = local.map(|i| &units[i]).collect();
                let batch = TaggedBatch::padded_to(&refs, self.pad_id, pad_to, device);
                let e = tag_emissions(&model.encoder, head, &batch);
                Ok(head.loss(e, &batch.words, &batch.tags))
            }
            _ => Err(TrainError::Invalid(format!(
                "task {t}: its head does not fit its units"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
