//! Continued MLM (and NSP) training as an [`Objective`] of the shared loop
//! ([`crate::train::fit`]): AdamW (no decay on 1-D parameters) with linear warm-up and
//! decay, gradient accumulation to an effective batch of `batch_size · grad_accum`,
//! global-norm clipping, and a checkpoint every `checkpoint_every` updates that a rerun
//! resumes from. The run is one "epoch" of `steps` updates over an endless stream of
//! sequences: passes over the training data, each in its own shuffled order.
//!
//! Determinism: which sequences update `u` sees, how they are masked and the dropout masks
//! are all functions of `(seed, u)`, so a resumed run computes the updates of one that never
//! stopped; held-out masks depend on nothing but the sequence, so "before" and "after"
//! scores (and runs with other seeds) are measured on the same predictions.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::masking::{mask, MaskVocab, Masked, Masking};
use super::mlm_head::MaskedLm;
use super::nsp_head::{IS_NEXT, NOT_NEXT};
use crate::model::Encoding;
use crate::model::Precision;
use crate::stages::Progress;
use crate::train::classifier::cross_entropy;
use crate::train::concurrent_batches::map_batches;
use crate::train::fit::{fit_scoring_before, Checkpoints, FitEnv, Objective, UpdateRecord};
use crate::train::layer_decay::LayerDepths;
use crate::train::rng::SplitMix64;
use crate::train::{TrainError, TrainSettings};

/// Generator streams: passes' shuffles, training masks (per sequence drawn), dropout (per
/// micro-batch); held-out masks use their own fixed seed.
const SHUFFLE_STREAM: u64 = 0;
const MASK_STREAM: u64 = 1 << 40;
const DROPOUT_STREAM: u64 = 2 << 40;
const HELD_OUT_MASK_SEED: u64 = 0x5EED_0F4E_1D00_0077;

/// One training or held-out sequence: `[CLS] pieces… [SEP]`, or a sentence pair
/// `[CLS] A [SEP] B [SEP]` for next-sentence prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub ids: Vec<u32>,
    /// `None` for special tokens; equal ids for the pieces of one word.
    pub word_ids: Vec<Option<u32>>,
    /// Index of the first piece of segment B (token type 1 from there on); `None`: one
    /// segment.
    pub segment_b: Option<usize>,
    /// For a pair: whether B follows A in the document.
    pub is_next: Option<bool>,
}

/// Cuts the encoding of a whole document (`[CLS] … [SEP]`, untruncated) into sequences of
/// at most `max_len` pieces, each wrapped in `[CLS]` … `[SEP]`, cutting between words
/// (a word longer than a whole sequence is cut).
pub fn chunk(encoding: &Encoding, max_len: usize, cls: u32, sep: u32) -> Vec<Sequence> {
    let n = encoding.ids.len();
    let body = if n >= 2 { 1..n - 1 } else { 0..0 };
    let capacity = max_len.saturating_sub(2).max(1);
    let mut sequences = Vec::new();
    let mut start = body.start;
    while start < body.end {
        let mut stop = (start + capacity).min(body.end);
        if stop < body.end {
            let word = encoding.word_ids[stop];
            let mut cut = stop;
            while cut > start && word.is_some() && encoding.word_ids[cut - 1] == word {
                cut -= 1;
            }
            if cut > start {
                stop = cut;
            }
        }
        let mut ids = vec![cls];
        ids.extend_from_slice(&encoding.ids[start..stop]);
        ids.push(sep);
        let mut word_ids = vec![None];
        word_ids.extend_from_slice(&encoding.word_ids[start..stop]);
        word_ids.push(None);
        sequences.push(Sequence {
            ids,
            word_ids,
            segment_b: None,
            is_next: None,
        });
        start = stop;
    }
    sequences
}

/// Optimisation settings (the `pretrain` params of the same names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlmSettings {
    /// Optimizer updates.
    pub steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    /// Fraction of the updates spent warming up.
    pub warmup: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub seed: u64,
    pub masking: Masking,
    pub checkpoint_every: usize,
    /// Next-sentence prediction beside the MLM (the sequences are sentence pairs).
    #[serde(default)]
    pub nsp: bool,
    /// The type of the encoder's matrix products (f16 scales the loss).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// The first updates train only the heads, the encoder frozen.
    #[serde(default, skip_serializing_if = "crate::train::fit::is_zero")]
    pub head_warmup: usize,
}

/// One update in `history.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based update index.
    pub step: usize,
    /// Mean MLM loss over the update's micro-batches.
    pub loss: f64,
    /// Mean NSP loss over the update's micro-batches (with `nsp`); the update minimises
    /// the sum of both, as BERT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsp_loss: Option<f64>,
    pub lr: f64,
    /// An update of the `head_warmup`: the encoder was frozen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub heads_only: bool,
}

/// MLM scores on held-out sequences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlmScores {
    /// Mean cross-entropy over the predicted pieces (nats).
    pub loss: f64,
    /// Share of predicted pieces whose argmax is the original piece.
    pub accuracy: f64,
    pub predicted_tokens: usize,
    pub sequences: usize,
    /// Share of sentence pairs whose is-next label is predicted (with `nsp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsp_accuracy: Option<f64>,
}

/// The outcome of a run besides the model.
#[derive(Debug, Clone, PartialEq)]
pub struct MlmState {
    /// Updates done.
    pub step: usize,
    pub history: Vec<StepRecord>,
    /// Held-out scores of the model before training.
    pub before: Option<MlmScores>,
}

/// Where training runs and reports.
pub struct MlmEnv<'a> {
    /// Autodiff device the model lives on.
    pub device: &'a Device,
    pub checkpoint_dir: &'a Path,
    pub progress: &'a Progress,
    pub cancel: &'a AtomicBool,
    pub vocab: MaskVocab,
    pub pad_id: u32,
}

/// A padded, masked batch.
struct MlmBatch {
    input_ids: Tensor<2, Int>,
    /// Segment ids, when the batch holds sentence pairs.
    token_type_ids: Option<Tensor<2, Int>>,
    attention_mask: Tensor<2, Int>,
    /// Flat indices `b·T + t` of the predicted pieces.
    positions: Tensor<1, Int>,
    labels: Tensor<1, Int>,
    predicted: usize,
    /// [`IS_NEXT`] / [`NOT_NEXT`] per row, when the batch holds sentence pairs.
    nsp_labels: Option<Tensor<1, Int>>,
}

fn make_batch(
    masked: &[Masked],
    sequences: &[&Sequence],
    pad_id: u32,
    device: &Device,
) -> Option<MlmBatch> {
    let batch = masked.len();
    let longest = masked.iter().map(|m| m.input_ids.len()).max().unwrap_or(0);
    let mut ids = vec![i64::from(pad_id); batch * longest];
    let mut attention = vec![0i64; batch * longest];
    let mut positions = Vec::new();
    let mut labels = Vec::new();
    for (row, m) in masked.iter().enumerate() {
        for (i, &id) in m.input_ids.iter().enumerate() {
            ids[row * longest + i] = i64::from(id);
            attention[row * longest + i] = 1;
        }
        for (i, label) in m.positions() {
            positions.push((row * longest + i) as i64);
            labels.push(i64::from(label));
        }
    }
    let predicted = labels.len();
    if predicted == 0 {
        return None;
    }
    let token_type_ids = sequences.iter().any(|s| s.segment_b.is_some()).then(|| {
        let mut types = vec![0i64; batch * longest];
        for (row, s) in sequences.iter().enumerate() {
            if let Some(b) = s.segment_b {
                for t in types[row * longest + b..row * longest + s.ids.len()].iter_mut() {
                    *t = 1;
                }
            }
        }
        Tensor::from_data(TensorData::new(types, [batch, longest]), device)
    });
    let nsp_labels = sequences.iter().all(|s| s.is_next.is_some()).then(|| {
        let labels: Vec<i64> = sequences
            .iter()
            .map(|s| match s.is_next {
                Some(false) => NOT_NEXT,
                _ => IS_NEXT,
            })
            .collect();
        Tensor::from_data(TensorData::new(labels, [batch]), device)
    });
    Some(MlmBatch {
        input_ids: Tensor::from_data(TensorData::new(ids, [batch, longest]), device),
        token_type_ids,
        nsp_labels,
        attention_mask: Tensor::from_data(TensorData::new(attention, [batch, longest]), device),
        positions: Tensor::from_data(TensorData::new(positions, [predicted]), device),
        labels: Tensor::from_data(TensorData::new(labels, [predicted]), device),
        predicted,
    })
}

/// How held-out sequences are masked and batched.
#[derive(Debug, Clone, Copy)]
pub struct HeldOutSettings {
    pub masking: Masking,
    pub batch_size: usize,
    pub vocab: MaskVocab,
    pub pad_id: u32,
}

/// Masked-token loss and accuracy of `model` (an inference model on `device`) on `held_out`,
/// with masks fixed by the sequence index alone.
pub fn evaluate(
    model: &MaskedLm,
    held_out: &[Sequence],
    settings: HeldOutSettings,
    device: &Device,
    cancel: &AtomicBool,
) -> Result<MlmScores, TrainError> {
    let HeldOutSettings {
        masking,
        batch_size,
        vocab: env_vocab,
        pad_id,
    } = settings;
    let indices: Vec<usize> = (0..held_out.len()).collect();
    let batches: Vec<Vec<usize>> = indices
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    // Per batch: Σ −log p of the masked pieces, hits, pieces, NSP hits and pairs.
    let per_batch = map_batches(&batches, device, cancel, |group| {
        let masked: Vec<Masked> = group
            .iter()
            .map(|&index| {
                let mut rng = SplitMix64::stream(HELD_OUT_MASK_SEED, index as u64);
                mask(
                    &held_out[index].ids,
                    &held_out[index].word_ids,
                    masking,
                    env_vocab,
                    &mut rng,
                )
            })
            .collect();
        let sequences: Vec<&Sequence> = group.iter().map(|&i| &held_out[i]).collect();
        let Some(batch) = make_batch(&masked, &sequences, pad_id, device) else {
            return Ok(None);
        };
        let out = model.forward(
            batch.input_ids,
            batch.token_type_ids,
            batch.attention_mask,
            batch.positions,
        );
        let nsp = match (out.nsp, batch.nsp_labels) {
            (Some(nsp_logits), Some(nsp_labels)) => {
                let pairs = nsp_labels.dims()[0];
                let hits = nsp_logits
                    .argmax(1)
                    .reshape([pairs])
                    .equal(nsp_labels)
                    .int()
                    .sum()
                    .into_scalar::<i64>();
                (hits, pairs)
            }
            _ => (0, 0),
        };
        let logits = out.mlm;
        let n = batch.predicted;
        let log_p = log_softmax(logits.clone(), 1);
        let picked: Tensor<2> = log_p.gather(1, batch.labels.clone().reshape([n, 1]));
        let neg_log_p = -f64::from(picked.sum().into_scalar::<f32>());
        let hits = logits
            .argmax(1)
            .reshape([n])
            .equal(batch.labels)
            .int()
            .sum()
            .into_scalar::<i64>();
        Ok(Some((neg_log_p, hits, n, nsp)))
    })?;
    let (mut loss_sum, mut correct, mut predicted) = (0.0f64, 0i64, 0usize);
    let (mut nsp_correct, mut nsp_pairs) = (0i64, 0usize);
    for (neg_log_p, hits, n, (nsp_hits, pairs)) in per_batch.into_iter().flatten() {
        loss_sum += neg_log_p;
        correct += hits;
        predicted += n;
        nsp_correct += nsp_hits;
        nsp_pairs += pairs;
    }
    if predicted == 0 {
        return Err(TrainError::Invalid(
            "no held-out pieces to predict".to_string(),
        ));
    }
    Ok(MlmScores {
        loss: loss_sum / predicted as f64,
        accuracy: correct as f64 / predicted as f64,
        predicted_tokens: predicted,
        sequences: held_out.len(),
        nsp_accuracy: (nsp_pairs > 0).then(|| nsp_correct as f64 / nsp_pairs as f64),
    })
}

/// Which training sequence is the `k`-th drawn: passes over the data, each in its own
/// shuffled order.
struct Order {
    n: usize,
    seed: u64,
    pass: usize,
    permutation: Vec<usize>,
}

impl Order {
    fn new(n: usize, seed: u64) -> Self {
        Order {
            n,
            seed,
            pass: usize::MAX,
            permutation: Vec::new(),
        }
    }

    fn at(&mut self, k: usize) -> usize {
        let pass = k / self.n;
        if pass != self.pass {
            self.permutation = (0..self.n).collect();
            SplitMix64::stream(self.seed, SHUFFLE_STREAM + pass as u64)
                .shuffle(&mut self.permutation);
            self.pass = pass;
        }
        self.permutation[k % self.n]
    }
}

/// Masked-language modelling (with `nsp`, plus next-sentence prediction) on a stream of
/// training sequences. A batch is a range of draw indices `k`: the `k`-th sequence drawn
/// ([`Order`]), masked from stream `MASK_STREAM + k`.
pub struct MlmObjective<'a> {
    train: &'a [Sequence],
    lengths: Vec<usize>,
    /// Which sequence each draw is; a cache of the current pass's order.
    order: RefCell<Order>,
    settings: &'a MlmSettings,
    vocab: MaskVocab,
    pad_id: u32,
}

impl<'a> MlmObjective<'a> {
    pub fn new(
        train: &'a [Sequence],
        settings: &'a MlmSettings,
        vocab: MaskVocab,
        pad_id: u32,
    ) -> Self {
        MlmObjective {
            train,
            lengths: train.iter().map(|s| s.ids.len()).collect(),
            order: RefCell::new(Order::new(train.len(), settings.seed)),
            settings,
            vocab,
            pad_id,
        }
    }
}

impl Objective for MlmObjective<'_> {
    type Model = MaskedLm;
    const DROPOUT_STREAM: u64 = DROPOUT_STREAM;

    fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// The encoder under the MLM (and NSP) heads.
    fn layer_depths(&self, model: &MaskedLm) -> LayerDepths {
        LayerDepths::of_encoder(&model.encoder)
    }

    /// `steps · grad_accum` batches, all in the one epoch.
    fn batches_per_epoch(&self, _batch_size: usize) -> usize {
        self.settings.steps * self.settings.grad_accum
    }

    /// Batch `m` holds the draws `m · batch_size ..< (m + 1) · batch_size`.
    fn epoch_batches(&self, settings: &TrainSettings, _rng: &mut SplitMix64) -> Vec<Vec<usize>> {
        let size = settings.batch_size;
        (0..self.batches_per_epoch(size))
            .map(|m| (m * size..(m + 1) * size).collect())
            .collect()
    }

    fn batch_loss(
        &self,
        model: &MaskedLm,
        draws: &[usize],
        _pad_to: usize,
        device: &Device,
    ) -> Result<Vec<Tensor<1>>, TrainError> {
        let sequences: Vec<&Sequence> = {
            let mut order = self.order.borrow_mut();
            draws.iter().map(|&k| &self.train[order.at(k)]).collect()
        };
        let masked: Vec<Masked> = sequences
            .iter()
            .zip(draws)
            .map(|(s, &k)| {
                let mut rng = SplitMix64::stream(self.settings.seed, MASK_STREAM + k as u64);
                mask(
                    &s.ids,
                    &s.word_ids,
                    self.settings.masking,
                    self.vocab,
                    &mut rng,
                )
            })
            .collect();
        let Some(batch) = make_batch(&masked, &sequences, self.pad_id, device) else {
            return Ok(Vec::new());
        };
        let out = model.forward(
            batch.input_ids,
            batch.token_type_ids,
            batch.attention_mask,
            batch.positions,
        );
        // L_MLM = −(1/M) Σ log p(x_i | x̃) over the M masked pieces
        let mut terms = vec![cross_entropy(out.mlm, batch.labels)];
        // BERT's pre-training loss: L_MLM + L_NSP
        if let (Some(logits), Some(labels)) = (out.nsp, batch.nsp_labels) {
            terms.push(cross_entropy(logits, labels));
        }
        Ok(terms)
    }
}

/// Trains `model` for `settings.steps` updates on `train`, resuming from the newest
/// checkpoint in `env.checkpoint_dir`. `before` scores the untrained model (called only when
/// starting afresh; its result is kept in the checkpoints).
pub fn train_mlm(
    model: MaskedLm,
    train: &[Sequence],
    settings: &MlmSettings,
    env: &MlmEnv,
    before: impl FnOnce(&MaskedLm) -> Result<MlmScores, TrainError>,
) -> Result<(MaskedLm, MlmState), TrainError> {
    let objective = MlmObjective::new(train, settings, env.vocab, env.pad_id);
    let train_settings = TrainSettings {
        lr: settings.lr,
        epochs: 1,
        batch_size: settings.batch_size,
        warmup: settings.warmup,
        weight_decay: settings.weight_decay,
        grad_clip: settings.grad_clip,
        seed: settings.seed,
        bucketing: true,
        layer_decay: 1.0,
        grad_accum: settings.grad_accum,
        checkpoints: Checkpoints::EveryUpdates(settings.checkpoint_every),
        record_updates: true,
        precision: settings.precision,
        frozen_encoder_updates: settings.head_warmup,
    };
    let fit_env = FitEnv {
        device: env.device,
        checkpoint_dir: env.checkpoint_dir,
        progress: env.progress,
        cancel: env.cancel,
    };
    let score = |model: &MaskedLm| {
        let scores = before(model)?;
        serde_json::to_value(scores)
            .map(Some)
            .map_err(|e| TrainError::Invalid(format!("held-out scores: {e}")))
    };
    let fitted = fit_scoring_before(
        model,
        &objective,
        &train_settings,
        &fit_env,
        score,
        |_, _| Ok(()),
    )?;
    let before = fitted
        .before
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| TrainError::Invalid(format!("held-out scores in the checkpoint: {e}")))?;
    let history = fitted.updates.into_iter().map(StepRecord::from).collect();
    Ok((
        fitted.model,
        MlmState {
            step: fitted.steps,
            history,
            before,
        },
    ))
}

impl From<UpdateRecord> for StepRecord {
    /// The loss terms are `L_MLM` and, with `nsp`, `L_NSP`.
    fn from(u: UpdateRecord) -> Self {
        StepRecord {
            step: u.step,
            loss: u.losses.first().copied().unwrap_or(f64::NAN),
            nsp_loss: u.losses.get(1).copied(),
            lr: u.lr,
            heads_only: u.heads_only,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoding(words: &[usize]) -> Encoding {
        // words[k] = number of pieces of word k
        let mut ids = vec![101];
        let mut word_ids = vec![None];
        for (w, &pieces) in words.iter().enumerate() {
            for p in 0..pieces {
                ids.push((1000 + 10 * w + p) as u32);
                word_ids.push(Some(w as u32));
            }
        }
        ids.push(102);
        word_ids.push(None);
        let n = ids.len();
        Encoding {
            ids,
            tokens: vec![String::new(); n],
            word_ids,
            offsets: vec![(0, 0); n],
        }
    }

    #[test]
    fn chunks_cut_between_words_and_keep_every_piece() {
        let e = encoding(&[1, 2, 3, 1, 2, 1, 1, 3]);
        let chunks = chunk(&e, 6, 101, 102);
        let mut pieces = Vec::new();
        for c in &chunks {
            assert!(c.ids.len() <= 6);
            assert_eq!((c.ids[0], c.ids[c.ids.len() - 1]), (101, 102));
            assert_eq!((c.word_ids[0], c.word_ids[c.ids.len() - 1]), (None, None));
            pieces.extend_from_slice(&c.ids[1..c.ids.len() - 1]);
        }
        assert_eq!(pieces, e.ids[1..e.ids.len() - 1]);
        // no word is split: the first piece of each chunk starts a word
        for c in &chunks[1..] {
            let w = c.word_ids[1];
            let first = e.word_ids.iter().position(|x| *x == w);
            let at = e.ids.iter().position(|&id| id == c.ids[1]);
            assert_eq!(first, at);
        }
        // a word longer than a sequence is cut rather than lost
        let long = chunk(&encoding(&[7]), 5, 101, 102);
        assert_eq!(long.iter().map(|c| c.ids.len() - 2).sum::<usize>(), 7);
    }
}
