//! The heads that score `h^L_CLS` with real numbers instead of one softmax class:
//! `regression` (sentence-pair similarity, `ŷ = w·h_CLS + b`, mean squared error) and
//! `multilabel` (`z = W_f h_CLS + b_f`, a sigmoid per label, binary cross-entropy). Their
//! encoded units (a pair as `[CLS] a [SEP] b [SEP]` with segment ids 0/1), padded batches,
//! losses, training objective, inference, dev/test scores and `predictions.jsonl` — what
//! `finetune` and `multitask` share.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use burn::prelude::*;
use serde::Serialize;

use super::batching::eval_batches;
use super::classifier::SequenceClassifier;
use super::concurrent_batches::map_batches;
use super::fit::Objective;
use super::layer_decay::LayerDepths;
use super::split_data::ScoredSet;
use super::TrainError;
use crate::data::jsonl;
use crate::data::schema::Task;
use crate::data::DataError;
use crate::metrics::multilabel::MultilabelScores;
use crate::metrics::{correlation, multilabel};
use crate::model::heads::{Head, HeadInput, HeadKind};
use crate::model::{BertModel, BertTokenizer, ModelError};

/// The probability above which a `multilabel` head predicts a label.
pub const THRESHOLD: f32 = 0.5;

/// One unit: its word pieces with [CLS]/[SEP], their segment ids and the targets (one
/// score, or one 0/1 per label).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredUnit {
    pub ids: Vec<u32>,
    /// 0 for `[CLS] a [SEP]`, 1 for `b [SEP]`; all 0 for a document.
    pub token_types: Vec<u32>,
    pub targets: Vec<f32>,
}

/// `[CLS] a [SEP] b [SEP]` in at most `max_len` pieces: while too long, the longer of the
/// two sentences loses its last piece (BERT's `longest_first` truncation).
pub fn encode_pair(
    tokenizer: &BertTokenizer,
    a: &str,
    b: &str,
    max_len: usize,
    target: f32,
) -> Result<ScoredUnit, ModelError> {
    if max_len < 5 {
        return Err(ModelError::Invalid(format!(
            "max_len {max_len} cannot hold a sentence pair ([CLS] a [SEP] b [SEP])"
        )));
    }
    let pieces = |text: &str| -> Result<Vec<u32>, ModelError> {
        // no truncation here: a text can never reach this many pieces
        let ids = tokenizer.encode(text, usize::MAX / 2)?.ids;
        Ok(ids[1..ids.len().saturating_sub(1).max(1)].to_vec())
    };
    let (mut pa, mut pb) = (pieces(a)?, pieces(b)?);
    while pa.len() + pb.len() > max_len - 3 {
        if pa.len() >= pb.len() {
            pa.pop();
        } else {
            pb.pop();
        }
    }
    let (cls, sep) = (tokenizer.cls_id(), tokenizer.sep_id());
    let mut ids = Vec::with_capacity(pa.len() + pb.len() + 3);
    ids.push(cls);
    ids.extend(&pa);
    ids.push(sep);
    let first = ids.len();
    ids.extend(&pb);
    ids.push(sep);
    let token_types = (0..ids.len()).map(|t| u32::from(t >= first)).collect();
    Ok(ScoredUnit {
        ids,
        token_types,
        targets: vec![target],
    })
}

/// `[CLS] text [SEP]`, cut to `max_len` pieces (the rest of a long document is not read),
/// with target 1 at each of `labels` (indices) and 0 elsewhere.
pub fn encode_document(
    tokenizer: &BertTokenizer,
    text: &str,
    max_len: usize,
    labels: &[usize],
    num_labels: usize,
) -> Result<ScoredUnit, ModelError> {
    let ids = tokenizer.encode(text, max_len)?.ids;
    let mut targets = vec![0.0; num_labels];
    for &k in labels {
        if let Some(t) = targets.get_mut(k) {
            *t = 1.0;
        }
    }
    Ok(ScoredUnit {
        token_types: vec![0; ids.len()],
        ids,
        targets,
    })
}

/// A padded batch of [`ScoredUnit`]s.
#[derive(Debug, Clone)]
pub struct ScoredBatch {
    /// `[B, T]`.
    pub input_ids: Tensor<2, Int>,
    /// `[B, T]` segment ids.
    pub token_type_ids: Tensor<2, Int>,
    /// `[B, T]`: 1 token, 0 padding.
    pub attention_mask: Tensor<2, Int>,
    pub lengths: Vec<usize>,
    /// `[B, K]` targets.
    pub targets: Tensor<2>,
}

impl ScoredBatch {
    /// Pads `units` on the right with `pad_id` to `length` tokens or their longest.
    pub fn padded_to(units: &[&ScoredUnit], pad_id: u32, length: usize, device: &Device) -> Self {
        let batch = units.len();
        let longest = units
            .iter()
            .map(|u| u.ids.len())
            .max()
            .unwrap_or(0)
            .max(length);
        let width = units.first().map_or(0, |u| u.targets.len());
        let mut ids = vec![i64::from(pad_id); batch * longest];
        let mut types = vec![0i64; batch * longest];
        let mut mask = vec![0i64; batch * longest];
        let mut targets: Vec<f32> = Vec::with_capacity(batch * width);
        for (row, u) in units.iter().enumerate() {
            for (t, (&id, &ty)) in u.ids.iter().zip(&u.token_types).enumerate() {
                ids[row * longest + t] = i64::from(id);
                types[row * longest + t] = i64::from(ty);
                mask[row * longest + t] = 1;
            }
            targets.extend(&u.targets);
        }
        let int = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [batch, longest]), device);
        ScoredBatch {
            input_ids: int(ids),
            token_type_ids: int(types),
            attention_mask: int(mask),
            lengths: units.iter().map(|u| u.ids.len()).collect(),
            targets: Tensor::from_data(TensorData::new(targets, [batch, width]), device),
        }
    }
}

/// The head's outputs `W_f h^L_CLS + b_f`, `[B, K]` (the segment ids reach the encoder).
pub fn scores(model: &SequenceClassifier, batch: &ScoredBatch) -> Result<Tensor<2>, ModelError> {
    head_scores(&model.encoder, &model.head, batch)
}

/// [`scores`] of `head` over `encoder` (a multi-task model's task encoder and head).
pub fn head_scores(
    encoder: &BertModel,
    head: &Head,
    batch: &ScoredBatch,
) -> Result<Tensor<2>, ModelError> {
    let out = encoder.forward_with_token_types(
        batch.input_ids.clone(),
        Some(batch.token_type_ids.clone()),
        batch.attention_mask.clone(),
        false,
    );
    let head = head.forward(HeadInput {
        last_hidden_state: out.last_hidden_state,
        hidden_states: Vec::new(),
        attentions: Vec::new(),
        lengths: batch.lengths.clone(),
        entity_positions: vec![[0, 0]; batch.lengths.len()],
    })?;
    Ok(head.logits)
}

/// Mean squared error `(1/B) Σ_b (ŷ_b − y_b)²` of `pred, gold: [B, 1]`.
pub fn mse(pred: Tensor<2>, gold: Tensor<2>) -> Tensor<1> {
    (pred - gold).powi_scalar(2).mean()
}

/// Binary cross-entropy of logits `z: [B, K]` against 0/1 targets `y`, averaged over the
/// labels and the batch: `−(1/BK) Σ [y log σ(z) + (1 − y) log(1 − σ(z))]`, computed as
/// `max(z, 0) − z·y + log(1 + e^{−|z|})` (the same value, without overflow).
pub fn binary_cross_entropy(z: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    let softplus_neg_abs = z.clone().abs().neg().exp().log1p();
    (z.clone().clamp_min(0.0) - z * y + softplus_neg_abs).mean()
}

/// Which loss a [`ScoreObjective`] minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreLoss {
    /// `regression`: [`mse`].
    Mse,
    /// `multilabel`: [`binary_cross_entropy`].
    BinaryCrossEntropy,
}

impl ScoreLoss {
    /// The loss of a scoring head; `None` for the other heads.
    pub fn of(head: HeadKind) -> Option<Self> {
        match head {
            HeadKind::Regression => Some(ScoreLoss::Mse),
            HeadKind::Multilabel => Some(ScoreLoss::BinaryCrossEntropy),
            _ => None,
        }
    }

    /// The loss of the head's outputs `out` against `targets`, both `[B, K]`.
    pub fn loss(self, out: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        match self {
            ScoreLoss::Mse => mse(out, targets),
            ScoreLoss::BinaryCrossEntropy => binary_cross_entropy(out, targets),
        }
    }
}

/// The outputs of a [CLS] head over a split with `num_labels` labels: 1 for `regression`,
/// one per label for the others (`multilabel`, the classification heads).
pub fn head_outputs(head: HeadKind, num_labels: usize) -> usize {
    if head == HeadKind::Regression {
        1
    } else {
        num_labels
    }
}

/// Training a [`SequenceClassifier`] whose head is `regression` or `multilabel`.
pub struct ScoreObjective<'a> {
    units: &'a [ScoredUnit],
    lengths: Vec<usize>,
    pad_id: u32,
    loss: ScoreLoss,
}

impl<'a> ScoreObjective<'a> {
    pub fn new(units: &'a [ScoredUnit], pad_id: u32, loss: ScoreLoss) -> Self {
        ScoreObjective {
            units,
            lengths: units.iter().map(|u| u.ids.len()).collect(),
            pad_id,
            loss,
        }
    }
}

impl Objective for ScoreObjective<'_> {
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
        let refs: Vec<&ScoredUnit> = batch.iter().map(|&i| &self.units[i]).collect();
        let batch = ScoredBatch::padded_to(&refs, self.pad_id, pad_to, device);
        let out = scores(model, &batch)?;
        Ok(vec![self.loss.loss(out, batch.targets)])
    }

    fn layer_depths(&self, model: &SequenceClassifier) -> LayerDepths {
        LayerDepths::of_encoder(&model.encoder)
    }
}

/// The head's raw outputs for every unit, in input order (`model` in inference mode on
/// `device`; batches sorted by length, several at once on the CPU).
pub fn predict_scores(
    model: &SequenceClassifier,
    units: &[ScoredUnit],
    pad_id: u32,
    batch_size: usize,
    device: &Device,
    cancel: &AtomicBool,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let lengths: Vec<usize> = units.iter().map(|u| u.ids.len()).collect();
    let batches = eval_batches(&lengths, batch_size);
    let results = map_batches(&batches, device, cancel, |indices| {
        let refs: Vec<&ScoredUnit> = indices.iter().map(|&i| &units[i]).collect();
        let batch = ScoredBatch::padded_to(&refs, pad_id, 0, device);
        let out = scores(model, &batch)?;
        let [_, width] = out.dims();
        let values = out
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| TrainError::Invalid(format!("reading scores: {e:?}")))?;
        Ok((values, width))
    })?;
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); units.len()];
    for (indices, (values, width)) in batches.iter().zip(results) {
        for (row, &i) in indices.iter().enumerate() {
            out[i] = values[row * width..(row + 1) * width].to_vec();
        }
    }
    Ok(out)
}

/// `σ(z) = 1 / (1 + e^{−z})`.
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Label indices whose σ(z_k) exceeds [`THRESHOLD`].
pub fn above_threshold(logits: &[f32]) -> Vec<usize> {
    (0..logits.len())
        .filter(|&k| sigmoid(logits[k]) > THRESHOLD)
        .collect()
}

/// A scoring head's outputs on a [`ScoredSet`], scored as `evaluate` scores its
/// predictions.
#[derive(Debug, Clone, PartialEq)]
pub enum SetScores {
    /// Pearson's r, Spearman's ρ and the MSE; `None` where undefined (a constant side,
    /// fewer than two pairs).
    Similarity {
        pearson: Option<f64>,
        spearman: Option<f64>,
        mse: Option<f64>,
    },
    /// Micro, example-based and macro F1 of the labels above [`THRESHOLD`].
    Multilabel(MultilabelScores),
}

impl SetScores {
    /// The dev score that selects a model: Pearson's r, or micro-F1.
    pub fn selection(&self) -> Option<f64> {
        match self {
            SetScores::Similarity { pearson, .. } => *pearson,
            SetScores::Multilabel(s) => Some(s.micro.f1),
        }
    }

    /// The scores under `evaluate`'s names (`pearson`, `spearman`, `mse`; `micro_f1`,
    /// `example_f1`, `macro_f1`, with the micro P/R/F1 also as `precision`, `recall`,
    /// `f1`).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let entries: Vec<(&str, Option<f64>)> = match self {
            SetScores::Similarity {
                pearson,
                spearman,
                mse,
            } => vec![
                ("pearson", *pearson),
                ("spearman", *spearman),
                ("mse", *mse),
            ],
            SetScores::Multilabel(s) => vec![
                ("precision", Some(s.micro.precision)),
                ("recall", Some(s.micro.recall)),
                ("f1", Some(s.micro.f1)),
                ("micro_f1", Some(s.micro.f1)),
                ("example_f1", Some(s.example_f1)),
                ("macro_f1", Some(s.macro_f1)),
            ],
        };
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect()
    }
}

/// Scores the head's outputs `out` (one row per unit of `set`) against its gold scores or
/// labels (`num_labels` of them).
pub fn score_set(
    set: &ScoredSet,
    out: &[Vec<f32>],
    num_labels: usize,
) -> Result<SetScores, TrainError> {
    match set.task {
        Task::Similarity => {
            let pred: Vec<f64> = out.iter().map(|o| f64::from(o[0])).collect();
            let gold = &set.gold_scores;
            Ok(SetScores::Similarity {
                pearson: correlation::pearson(&pred, gold).ok(),
                spearman: correlation::spearman(&pred, gold).ok(),
                mse: correlation::mse(&pred, gold).ok(),
            })
        }
        Task::Multilabel => {
            let pred: Vec<Vec<usize>> = out.iter().map(|o| above_threshold(o)).collect();
            Ok(SetScores::Multilabel(multilabel::score(
                num_labels,
                &set.gold_indices,
                &pred,
            )?))
        }
        task => Err(TrainError::Invalid(format!(
            "a scoring head does not score a {task:?} set"
        ))),
    }
}

/// `predictions.jsonl` line of a pair.
#[derive(Debug, Serialize)]
struct ScoreLine<'a> {
    id: &'a str,
    gold: f64,
    pred: f64,
}

/// `predictions.jsonl` line of a document.
#[derive(Debug, Serialize)]
struct LabelSetLine<'a> {
    id: &'a str,
    gold: &'a [String],
    pred: Vec<&'a str>,
    /// σ(z_k) per label, in `labels.json` order.
    p: Vec<f32>,
}

/// Writes `path` (`predictions.jsonl`, what `evaluate` reads) for the head's outputs `out`
/// on `set`: `{"id", "gold", "pred"}` with numbers for pairs; `{"id", "gold": [labels],
/// "pred": [labels], "p": [σ(z_k) per label]}` for documents (`labels` in `labels.json`
/// order).
pub fn write_predictions(
    path: &Path,
    set: &ScoredSet,
    out: &[Vec<f32>],
    labels: &[String],
) -> Result<(), DataError> {
    if set.task == Task::Similarity {
        let lines: Vec<ScoreLine> = set
            .ids
            .iter()
            .zip(&set.gold_scores)
            .zip(out)
            .map(|((id, &gold), pred)| ScoreLine {
                id,
                gold,
                pred: f64::from(pred[0]),
            })
            .collect();
        return jsonl::write(path, &lines);
    }
    let lines: Vec<LabelSetLine> = set
        .ids
        .iter()
        .zip(&set.gold_labels)
        .zip(out)
        .map(|((id, gold), logits)| LabelSetLine {
            id,
            gold,
            pred: above_threshold(logits)
                .into_iter()
                .filter_map(|k| labels.get(k).map(String::as_str))
                .collect(),
            p: logits.iter().map(|&z| sigmoid(z)).collect(),
        })
        .collect();
    jsonl::write(path, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_strictly_above_one_half() {
        // σ(0) = 0.5 is not above the threshold; σ(0.01) is
        assert_eq!(above_threshold(&[0.0, 0.01, -3.0, 4.0]), [1, 3]);
    }

    fn set(task: Task, gold_scores: Vec<f64>, gold_indices: Vec<Vec<usize>>) -> ScoredSet {
        ScoredSet {
            task,
            ids: Vec::new(),
            units: Vec::new(),
            gold_scores,
            gold_labels: Vec::new(),
            gold_indices,
        }
    }

    #[test]
    fn a_set_is_scored_as_evaluate_scores_its_predictions() {
        let pairs = set(Task::Similarity, vec![1.0, 2.0, 4.0], Vec::new());
        let s = score_set(&pairs, &[vec![1.0], vec![2.0], vec![3.0]], 0).expect("scores");
        let SetScores::Similarity { pearson, mse, .. } = &s else {
            panic!("{s:?}")
        };
        // r of (1, 2, 3) and (1, 2, 4): 3 / √(2 · 14/3)
        let r = 3.0 / (2.0f64 * 14.0 / 3.0).sqrt();
        assert!((pearson.expect("defined") - r).abs() < 1e-12);
        assert!((mse.expect("defined") - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.selection(), *pearson);
        assert_eq!(
            s.to_json().keys().collect::<Vec<_>>(),
            ["mse", "pearson", "spearman"]
        );
        // a constant prediction has no correlation
        let flat = score_set(&pairs, &[vec![1.0], vec![1.0], vec![1.0]], 0).expect("scores");
        assert_eq!(flat.selection(), None);

        // label 0 of document 0 above the threshold, nothing for document 1: all right
        let docs = set(Task::Multilabel, Vec::new(), vec![vec![0], vec![]]);
        let s = score_set(&docs, &[vec![2.0, -2.0], vec![-2.0, -2.0]], 2).expect("scores");
        assert_eq!(s.selection(), Some(1.0));
        let json = s.to_json();
        assert_eq!(json["example_f1"], 1.0);
        assert_eq!(json["f1"], json["micro_f1"]);
    }

    #[test]
    fn binary_cross_entropy_by_hand() {
        let device = Device::default();
        // z = [[0, 2], [−1, 3]], y = [[1, 0], [0, 1]]
        let z = Tensor::<2>::from_data([[0.0f32, 2.0], [-1.0, 3.0]], &device);
        let y = Tensor::<2>::from_data([[1.0f32, 0.0], [0.0, 1.0]], &device);
        let loss: f32 = binary_cross_entropy(z, y).into_scalar();
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        // −[log σ(0) + log(1 − σ(2)) + log(1 − σ(−1)) + log σ(3)] / 4
        let expected =
            -((s(0.0)).ln() + (1.0 - s(2.0)).ln() + (1.0 - s(-1.0)).ln() + s(3.0).ln()) / 4.0;
        assert!(
            (f64::from(loss) - expected).abs() < 1e-6,
            "{loss} vs {expected}"
        );
        // large logits stay finite: z = 100 against y = 0 costs 100
        let z = Tensor::<2>::from_data([[100.0f32]], &device);
        let y = Tensor::<2>::from_data([[0.0f32]], &device);
        let loss: f32 = binary_cross_entropy(z, y).into_scalar();
        assert!((loss - 100.0).abs() < 1e-4, "{loss}");
    }

    #[test]
    fn mse_by_hand() {
        let device = Device::default();
        let pred = Tensor::<2>::from_data([[1.0f32], [2.5], [0.0]], &device);
        let gold = Tensor::<2>::from_data([[2.0f32], [2.0], [0.0]], &device);
        let loss: f32 = mse(pred, gold).into_scalar();
        assert!((loss - 1.25 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn pair_batch_carries_segments_and_targets() {
        let a = ScoredUnit {
            ids: vec![101, 7, 102, 8, 9, 102],
            token_types: vec![0, 0, 0, 1, 1, 1],
            targets: vec![2.5],
        };
        let b = ScoredUnit {
            ids: vec![101, 7, 102, 8, 102],
            token_types: vec![0, 0, 0, 1, 1],
            targets: vec![0.5],
        };
        let batch = ScoredBatch::padded_to(&[&a, &b], 0, 0, &Device::default());
        let types: Vec<i64> = batch.token_type_ids.into_data().try_into_vec_as().unwrap();
        assert_eq!(types, [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0]);
        let t: Vec<f32> = batch.targets.into_data().try_into_vec_as().unwrap();
        assert_eq!(t, [2.5, 0.5]);
        assert_eq!(batch.lengths, [6, 5]);
    }
}
