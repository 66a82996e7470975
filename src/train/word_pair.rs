//! Word-pair training (Meng et al. 2019): dependency arcs of a sentence, or the entity pair
//! of a relation instance, scored by a [`WordPairHead`] over every ordered pair of nodes.
//!
//! - **Units.** A [`PairUnit`] is `[CLS] pieces… [SEP]` and its nodes: for a tree, node 0
//!   is [CLS] (the root) and node `w` the first piece of word `w`; for a relation
//!   instance, the first pieces of the two nominals (the words after the `@…$` tags, which
//!   are taken out of the text: the encoder reads the plain sentence).
//! - **Loss.** Trees: every pair is NONE (label 0) or a relation; the arc score of `h → d`
//!   is `s(h, d) = log Σ_{k≥1} e^{S_{h,d,k}} − S_{h,d,0}` (log-odds of "an arc"). Each word
//!   is trained with its gold head: `−log softmax_h s(h, d)[h*] − log softmax_{k≥1}
//!   S_{h*,d,k}[r*]` (head selection, then its relation), averaged over words. Relation
//!   instances: cross-entropy of `S_{i,j}` (`i`, `j` the first and second nominal).
//! - **Decoding.** Each word's best head (`argmax_h s(h, d)`, the paper's training-time
//!   tree) and, for `decode: mst`, the maximum spanning arborescence over `log softmax_h`
//!   with one root ([`crate::model::arborescence`]); the relation of an arc is
//!   `argmax_{k≥1} S_{h,d,k}`.
//! - **Frozen encoder** (`freeze_encoder`, the paper's "fea:" rows): the encoder runs once
//!   per unit ([`FrozenFeatures`]), its node states and pair attention are kept on the host,
//!   and only the head trains ([`FrozenPairObjective`]).

use std::sync::atomic::AtomicBool;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::batching::eval_batches;
use super::classifier::{cross_entropy, entity_tags};
use super::fit::Objective;
use super::layer_decay::LayerDepths;
use super::TrainError;
use crate::model::arborescence::max_spanning_tree;
use crate::model::heads::{node_states, pair_attention, WordPairHead};
use crate::model::{BertModel, BertTokenizer, ModelError};

/// Added to the arc scores of impossible heads (padding, self) before the softmax.
const MASKED_SCORE: f32 = -1.0e30;

/// What a unit is trained and scored against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairTarget {
    /// A tree: for word `w` (node `w + 1`), its gold head node (`None` when the head was cut
    /// off by `max_len`) and relation label (`1..K`; 0 is NONE).
    Arcs {
        heads: Vec<Option<usize>>,
        labels: Vec<usize>,
    },
    /// The label of the pair (node 0, node 1).
    Pair(usize),
}

/// One sentence (or relation instance) as the pair classifier reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairUnit {
    pub ids: Vec<u32>,
    /// Token position of each node.
    pub nodes: Vec<usize>,
    pub target: PairTarget,
    /// Words of the sentence (trees; words past `max_len` have no node).
    pub words: usize,
}

/// A tree unit: `[CLS]` as the root node, then each word's first piece while the pieces
/// fit in `max_len` (a word longer than the room left keeps its first pieces).
/// `heads[w]` is 0 for the root or the 1-based head word; `labels[w]` ∈ `1..K`.
pub fn tree_unit(
    pieces: &[Vec<u32>],
    heads: &[usize],
    labels: &[usize],
    [cls, sep]: [u32; 2],
    max_len: usize,
) -> PairUnit {
    let budget = max_len.saturating_sub(2).max(1);
    let mut ids = vec![cls];
    let mut nodes = vec![0];
    for word in pieces {
        let room = budget + 1 - ids.len();
        if room == 0 {
            break;
        }
        nodes.push(ids.len());
        ids.extend_from_slice(&word[..word.len().min(room)]);
    }
    ids.push(sep);
    let kept = nodes.len() - 1;
    let heads = heads[..kept]
        .iter()
        .map(|&h| (h <= kept).then_some(h))
        .collect();
    PairUnit {
        ids,
        nodes,
        target: PairTarget::Arcs {
            heads,
            labels: labels[..kept].to_vec(),
        },
        words: pieces.len(),
    }
}

/// A relation unit from a tagged sentence (`… @E1$ configuration of … @E2$ elements`): the
/// tags are taken out, the words split on whitespace, and the nodes are the first pieces
/// of the words right after the first and second tag (see [`pair_window`] for sentences
/// longer than `max_len`). `None` when the text has fewer than two tags or a tag ends it.
pub fn relation_unit(
    text: &str,
    label: usize,
    tokenizer: &BertTokenizer,
    max_len: usize,
) -> Result<Option<PairUnit>, ModelError> {
    let mut spaced = String::with_capacity(text.len() + 8);
    let mut at = 0;
    let tags = entity_tags(text);
    for &(s, e) in &tags {
        spaced.push_str(&text[at..s]);
        spaced.push(' ');
        spaced.push_str(&text[s..e]);
        spaced.push(' ');
        at = e;
    }
    spaced.push_str(&text[at..]);
    let tag_names: Vec<&str> = tags.iter().map(|&(s, e)| &text[s..e]).collect();
    let mut words: Vec<String> = Vec::new();
    let mut marked: Vec<usize> = Vec::new();
    let mut pending = 0;
    for token in spaced.split_whitespace() {
        if pending < tag_names.len() && token == tag_names[pending] {
            marked.push(words.len());
            pending += 1;
        } else {
            words.push(token.to_string());
        }
    }
    if marked.len() < 2 || marked.iter().any(|&w| w >= words.len()) {
        return Ok(None);
    }
    let pieces = tokenizer.encode_words(&words)?;
    let (ids, nodes) = pair_window(
        &pieces,
        [marked[0], marked[1]],
        [tokenizer.cls_id(), tokenizer.sep_id()],
        max_len,
    );
    Ok(Some(PairUnit {
        ids,
        nodes: nodes.to_vec(),
        target: PairTarget::Pair(label),
        words: words.len(),
    }))
}

/// `[CLS] pieces… [SEP]` of at most `max_len` pieces holding the words `pair` (and the
/// first pieces of each): the sentence from its first word when it fits, else from the
/// first word that lets the second of the pair in; a pair further apart than a window
/// puts the second node on the window's last piece. Returns the pieces and the pair's
/// first-piece positions.
pub fn pair_window(
    pieces: &[Vec<u32>],
    pair: [usize; 2],
    [cls, sep]: [u32; 2],
    max_len: usize,
) -> (Vec<u32>, [usize; 2]) {
    let budget = max_len.saturating_sub(2).max(1);
    let (first, last) = (pair[0].min(pair[1]), pair[0].max(pair[1]));
    // pieces needed from word `start` up to the first piece of `last`
    let need =
        |start: usize| -> usize { pieces[start..last].iter().map(Vec::len).sum::<usize>() + 1 };
    let mut start = 0;
    while start < first && need(start) > budget {
        start += 1;
    }
    let mut ids = vec![cls];
    let mut starts = vec![None; pieces.len()];
    for (w, word) in pieces.iter().enumerate().skip(start) {
        let room = (budget + 1).saturating_sub(ids.len());
        if room == 0 {
            break;
        }
        starts[w] = Some(ids.len());
        ids.extend_from_slice(&word[..word.len().min(room)]);
    }
    let end = ids.len() - 1;
    ids.push(sep);
    let node = |w: usize| starts[w].unwrap_or(end);
    (ids, [node(pair[0]), node(pair[1])])
}

/// A padded batch of units: pieces, masks, and where the nodes are.
pub struct PairBatch {
    pub input_ids: Tensor<2, Int>,
    pub attention_mask: Tensor<2, Int>,
    /// `[B·N]`: `b·T + position` of each node, padding nodes at `b·T`.
    pub flat_index: Tensor<1, Int>,
    /// `N`: the most nodes of any unit.
    pub n: usize,
}

impl PairBatch {
    /// Pads `units` with `pad_id` to the longest of them (or `length` if longer).
    pub fn new(units: &[&PairUnit], pad_id: u32, length: usize, device: &Device) -> Self {
        let b = units.len();
        let t = units
            .iter()
            .map(|u| u.ids.len())
            .max()
            .unwrap_or(0)
            .max(length);
        let n = units.iter().map(|u| u.nodes.len()).max().unwrap_or(1);
        let mut ids = vec![i64::from(pad_id); b * t];
        let mut mask = vec![0i64; b * t];
        let mut flat = Vec::with_capacity(b * n);
        for (row, unit) in units.iter().enumerate() {
            for (k, &id) in unit.ids.iter().enumerate() {
                ids[row * t + k] = i64::from(id);
                mask[row * t + k] = 1;
            }
            let base = (row * t) as i64;
            flat.extend(unit.nodes.iter().map(|&p| base + p as i64));
            flat.extend(std::iter::repeat_n(base, n - unit.nodes.len()));
        }
        PairBatch {
            input_ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
            flat_index: Tensor::from_data(TensorData::new(flat, [b * n]), device),
            n,
        }
    }
}

/// BERT encoder with a word-pair head (fine-tuning).
#[derive(Module, Debug)]
pub struct WordPairModel {
    pub encoder: BertModel,
    pub head: WordPairHead,
}

impl WordPairModel {
    /// `S`: `[B, N, N, K]` for the batch.
    pub fn scores(&self, batch: &PairBatch) -> Result<Tensor<4>, ModelError> {
        let (x, g) = encode_nodes(&self.encoder, self.head.reads_attention(), batch);
        self.head.scores(x, g)
    }
}

/// The nodes' last-layer states `[B, N, H]` and, when asked, their pair attention
/// `[B, N, N, L·A]`.
fn encode_nodes(
    encoder: &BertModel,
    with_attention: bool,
    batch: &PairBatch,
) -> (Tensor<3>, Option<Tensor<4>>) {
    let out = encoder.forward(
        batch.input_ids.clone(),
        batch.attention_mask.clone(),
        with_attention,
    );
    let g =
        with_attention.then(|| pair_attention(&out.attentions, batch.flat_index.clone(), batch.n));
    let x = node_states(out.last_hidden_state, batch.flat_index.clone(), batch.n);
    (x, g)
}

/// The mean loss of `units` given their scores `s` (`[B, N, N, K]`); see the module doc.
pub fn pair_loss(s: Tensor<4>, units: &[&PairUnit]) -> Result<Tensor<1>, TrainError> {
    let [b, n, _, k] = s.dims();
    let device = s.device();
    if units
        .iter()
        .all(|u| matches!(u.target, PairTarget::Pair(_)))
    {
        let logits = s.slice(s![.., 0..1, 1..2, ..]).reshape([b, k]);
        let labels: Vec<i64> = units
            .iter()
            .map(|u| match u.target {
                PairTarget::Pair(y) => y as i64,
                PairTarget::Arcs { .. } => 0,
            })
            .collect();
        return Ok(cross_entropy(
            logits,
            Tensor::from_data(TensorData::new(labels, [b]), &device),
        ));
    }
    // trees: gold head node, relation and weight (1 for a scored word) of each node d
    let mut gold_head = vec![0i64; b * n];
    let mut gold_label = vec![0i64; b * n];
    let mut weight = vec![0f32; b * n];
    for (row, unit) in units.iter().enumerate() {
        let PairTarget::Arcs { heads, labels } = &unit.target else {
            return Err(TrainError::Invalid(
                "a batch mixes trees and relation pairs".into(),
            ));
        };
        for (w, (h, &r)) in heads.iter().zip(labels).enumerate() {
            if let (Some(h), true) = (h, r >= 1 && r < k) {
                let d = row * n + w + 1;
                gold_head[d] = *h as i64;
                gold_label[d] = r as i64 - 1;
                weight[d] = 1.0;
            }
        }
    }
    let words: f32 = weight.iter().sum();
    if words == 0.0 {
        return Err(TrainError::Invalid("a batch without a scored word".into()));
    }
    let arc = arc_scores(s.clone(), &node_counts(units), &device); // [B, d, h]
    let log_p_head = log_softmax(arc, 2);
    let heads_t = Tensor::<1, Int>::from_data(TensorData::new(gold_head, [b * n]), &device);
    let picked_head = log_p_head.gather(2, heads_t.clone().reshape([b, n, 1]));
    // S at (h*, d): [B, d, h, K] gathered at h* → [B, N, K−1] over the relations
    let at_gold = s
        .swap_dims(1, 2)
        .gather(2, heads_t.reshape([b, n, 1, 1]).repeat_dim(3, k))
        .reshape([b, n, k])
        .slice(s![.., .., 1..k]);
    let log_p_label = log_softmax(at_gold, 2);
    let labels_t = Tensor::<1, Int>::from_data(TensorData::new(gold_label, [b * n]), &device);
    let picked_label = log_p_label.gather(2, labels_t.reshape([b, n, 1]));
    let w = Tensor::<1>::from_data(TensorData::new(weight, [b * n]), &device).reshape([b, n, 1]);
    let total = (picked_head + picked_label) * w;
    Ok(total.sum().neg().div_scalar(words))
}

/// Nodes of each unit.
fn node_counts(units: &[&PairUnit]) -> Vec<usize> {
    units.iter().map(|u| u.nodes.len()).collect()
}

/// `s(h, d)` as `[B, d, h]`, with `MASKED_SCORE` added where `h` is padding or `h = d`.
fn arc_scores(s: Tensor<4>, counts: &[usize], device: &Device) -> Tensor<3> {
    let [b, n, _, k] = s.dims();
    let none = s.clone().slice(s![.., .., .., 0..1]);
    let rel = s.slice(s![.., .., .., 1..k]);
    let m = rel.clone().max_dim(3).detach();
    let lse = (rel - m.clone()).exp().sum_dim(3).log() + m;
    let arc = (lse - none).reshape([b, n, n]).swap_dims(1, 2); // [b, d, h]
    let mut mask = vec![0f32; b * n * n];
    for (row, &count) in counts.iter().enumerate() {
        for d in 0..n {
            for h in 0..n {
                if h >= count || h == d {
                    mask[(row * n + d) * n + h] = MASKED_SCORE;
                }
            }
        }
    }
    arc + Tensor::<1>::from_data(TensorData::new(mask, [b * n * n]), device).reshape([b, n, n])
}

/// Sentence classification with a fine-tuned encoder: [`pair_loss`] of a
/// [`WordPairModel`].
pub struct WordPairObjective<'a> {
    train: &'a [PairUnit],
    lengths: Vec<usize>,
    pad_id: u32,
}

impl<'a> WordPairObjective<'a> {
    pub fn new(train: &'a [PairUnit], pad_id: u32) -> Self {
        WordPairObjective {
            train,
            lengths: train.iter().map(|x| x.ids.len()).collect(),
            pad_id,
        }
    }
}

impl Objective for WordPairObjective<'_> {
    type Model = WordPairModel;

    fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    fn layer_depths(&self, model: &WordPairModel) -> LayerDepths {
        LayerDepths::of_encoder(&model.encoder)
    }

    fn batch_loss(
        &self,
        model: &WordPairModel,
        batch: &[usize],
        pad_to: usize,
        device: &Device,
    ) -> Result<Vec<Tensor<1>>, TrainError> {
        let refs: Vec<&PairUnit> = batch.iter().map(|&i| &self.train[i]).collect();
        let b = PairBatch::new(&refs, self.pad_id, pad_to, device);
        Ok(vec![pair_loss(model.scores(&b)?, &refs)?])
    }
}

/// One unit's frozen-encoder features: node states `[N, H]` and pair attention
/// `[N, N, L·A]` (empty for `emb`), on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct FrozenFeatures {
    pub n: usize,
    pub x: Vec<f32>,
    pub g: Vec<f32>,
}

/// Runs the (inference-mode) encoder once over every unit and keeps each unit's features.
pub fn frozen_features(
    encoder: &BertModel,
    with_attention: bool,
    units: &[PairUnit],
    pad_id: u32,
    batch_size: usize,
    device: &Device,
    cancel: &AtomicBool,
) -> Result<Vec<FrozenFeatures>, TrainError> {
    let lengths: Vec<usize> = units.iter().map(|u| u.ids.len()).collect();
    let mut out: Vec<Option<FrozenFeatures>> = vec![None; units.len()];
    for indices in eval_batches(&lengths, batch_size) {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(TrainError::Interrupted);
        }
        let refs: Vec<&PairUnit> = indices.iter().map(|&i| &units[i]).collect();
        let batch = PairBatch::new(&refs, pad_id, 0, device);
        let (x, g) = encode_nodes(encoder, with_attention, &batch);
        let [_, n, h] = x.dims();
        let x: Vec<f32> = to_vec(x)?;
        let (g, la) = match g {
            Some(g) => {
                let la = g.dims()[3];
                (to_vec(g)?, la)
            }
            None => (Vec::new(), 0),
        };
        for (row, &i) in indices.iter().enumerate() {
            let m = units[i].nodes.len();
            let mut gx = Vec::with_capacity(m * m * la);
            for a in 0..m {
                let start = ((row * n + a) * n) * la;
                gx.extend_from_slice(&g[start..start + m * la]);
            }
            out[i] = Some(FrozenFeatures {
                n: m,
                x: x[row * n * h..(row * n + m) * h].to_vec(),
                g: gx,
            });
        }
    }
    out.into_iter()
        .map(|f| f.ok_or_else(|| TrainError::Invalid("a unit was not encoded".into())))
        .collect()
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, TrainError> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| TrainError::Invalid(format!("reading a tensor: {e:?}")))
}

/// `[B, N, H]` and `[B, N, N, L·A]` of the frozen features of `units`, zero-padded.
fn padded_features(
    features: &[&FrozenFeatures],
    hidden: usize,
    attention: usize,
    device: &Device,
) -> (Tensor<3>, Option<Tensor<4>>) {
    let b = features.len();
    let n = features.iter().map(|f| f.n).max().unwrap_or(1);
    let mut x = vec![0f32; b * n * hidden];
    let mut g = vec![
        0f32;
        if attention > 0 {
            b * n * n * attention
        } else {
            0
        }
    ];
    for (row, f) in features.iter().enumerate() {
        x[row * n * hidden..(row * n + f.n) * hidden].copy_from_slice(&f.x);
        if attention > 0 {
            for a in 0..f.n {
                let to = ((row * n + a) * n) * attention;
                let from = a * f.n * attention;
                g[to..to + f.n * attention].copy_from_slice(&f.g[from..from + f.n * attention]);
            }
        }
    }
    let x = Tensor::from_data(TensorData::new(x, [b, n, hidden]), device);
    let g = (attention > 0)
        .then(|| Tensor::from_data(TensorData::new(g, [b, n, n, attention]), device));
    (x, g)
}

/// The head alone on frozen features (the paper's feature-based rows).
pub struct FrozenPairObjective<'a> {
    train: &'a [PairUnit],
    features: &'a [FrozenFeatures],
    lengths: Vec<usize>,
    hidden: usize,
    attention: usize,
}

impl<'a> FrozenPairObjective<'a> {
    /// `hidden` is `H`, `attention` is `L·A` (0 for `emb`).
    pub fn new(
        train: &'a [PairUnit],
        features: &'a [FrozenFeatures],
        hidden: usize,
        attention: usize,
    ) -> Self {
        FrozenPairObjective {
            train,
            features,
            lengths: train.iter().map(|x| x.ids.len()).collect(),
            hidden,
            attention,
        }
    }
}

impl Objective for FrozenPairObjective<'_> {
    type Model = WordPairHead;

    fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    fn batch_loss(
        &self,
        head: &WordPairHead,
        batch: &[usize],
        _pad_to: usize,
        device: &Device,
    ) -> Result<Vec<Tensor<1>>, TrainError> {
        let refs: Vec<&PairUnit> = batch.iter().map(|&i| &self.train[i]).collect();
        let feats: Vec<&FrozenFeatures> = batch.iter().map(|&i| &self.features[i]).collect();
        let (x, g) = padded_features(&feats, self.hidden, self.attention, device);
        Ok(vec![pair_loss(head.scores(x, g)?, &refs)?])
    }
}

/// A unit's prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum PairPrediction {
    /// Per word of the sentence: (head, relation label ≥ 1) by best head and by MST;
    /// `None` for words cut off by `max_len`.
    Arcs {
        best: Vec<Option<(usize, usize)>>,
        mst: Vec<Option<(usize, usize)>>,
    },
    /// The pair's label.
    Pair(usize),
}

/// Where a prediction's scores come from: the fine-tuned model, or the head on frozen
/// features.
pub enum Scorer<'a> {
    FineTuned(&'a WordPairModel),
    Frozen {
        head: &'a WordPairHead,
        features: &'a [FrozenFeatures],
        hidden: usize,
        attention: usize,
    },
}

/// Predictions of every unit, in input order. The model should be in inference mode.
pub fn predict_pairs(
    scorer: &Scorer,
    units: &[PairUnit],
    pad_id: u32,
    batch_size: usize,
    device: &Device,
    cancel: &AtomicBool,
) -> Result<Vec<PairPrediction>, TrainError> {
    let lengths: Vec<usize> = units.iter().map(|u| u.ids.len()).collect();
    let mut out: Vec<Option<PairPrediction>> = vec![None; units.len()];
    for indices in eval_batches(&lengths, batch_size) {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(TrainError::Interrupted);
        }
        let refs: Vec<&PairUnit> = indices.iter().map(|&i| &units[i]).collect();
        let s = match scorer {
            Scorer::FineTuned(model) => model.scores(&PairBatch::new(&refs, pad_id, 0, device))?,
            Scorer::Frozen {
                head,
                features,
                hidden,
                attention,
            } => {
                let feats: Vec<&FrozenFeatures> = indices.iter().map(|&i| &features[i]).collect();
                let (x, g) = padded_features(&feats, *hidden, *attention, device);
                head.scores(x, g)?
            }
        };
        for (row, prediction) in decode(s, &refs)?.into_iter().enumerate() {
            out[indices[row]] = Some(prediction);
        }
    }
    out.into_iter()
        .map(|p| p.ok_or_else(|| TrainError::Invalid("a unit was not predicted".into())))
        .collect()
}

/// Decodes a batch's scores (see the module doc).
fn decode(s: Tensor<4>, units: &[&PairUnit]) -> Result<Vec<PairPrediction>, TrainError> {
    let [b, n, _, k] = s.dims();
    if units
        .iter()
        .all(|u| matches!(u.target, PairTarget::Pair(_)))
    {
        let logits = s.slice(s![.., 0..1, 1..2, ..]).reshape([b, k]);
        let best: Vec<i64> = logits
            .argmax(1)
            .into_data()
            .try_into_vec_as::<i64>()
            .map_err(|e| TrainError::Invalid(format!("{e:?}")))?;
        return Ok(best
            .into_iter()
            .map(|y| PairPrediction::Pair(y as usize))
            .collect());
    }
    let device = s.device();
    let labels: Vec<i64> = s
        .clone()
        .slice(s![.., .., .., 1..k])
        .argmax(3)
        .into_data()
        .try_into_vec_as::<i64>()
        .map_err(|e| TrainError::Invalid(format!("{e:?}")))?;
    let log_p = to_vec(log_softmax(arc_scores(s, &node_counts(units), &device), 2))?;
    let mut out = Vec::with_capacity(b);
    for (row, unit) in units.iter().enumerate() {
        let m = unit.nodes.len();
        let at = |d: usize, h: usize| f64::from(log_p[(row * n + d) * n + h]);
        let label = |h: usize, d: usize| labels[(row * n + h) * n + d] as usize + 1;
        let mut best = vec![None; unit.words];
        for (d, slot) in best.iter_mut().enumerate().take(m - 1) {
            let d = d + 1;
            let h = (0..m)
                .filter(|&h| h != d)
                .max_by(|&x, &y| at(d, x).total_cmp(&at(d, y)))
                .unwrap_or(0);
            *slot = Some((h, label(h, d)));
        }
        let score: Vec<Vec<f64>> = (0..m)
            .map(|h| {
                (0..m)
                    .map(|d| {
                        if h == d || d == 0 {
                            f64::NEG_INFINITY
                        } else {
                            at(d, h)
                        }
                    })
                    .collect()
            })
            .collect();
        let tree = max_spanning_tree(&score);
        let mut mst = vec![None; unit.words];
        for d in 1..m {
            mst[d - 1] = Some((tree[d], label(tree[d], d)));
        }
        out.push(PairPrediction::Arcs { best, mst });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_window_slides_to_hold_both_words() {
        let pieces: Vec<Vec<u32>> = (1..=6).map(|i| vec![i]).collect();
        // the whole sentence fits
        let (ids, nodes) = pair_window(&pieces, [1, 4], [101, 102], 16);
        assert_eq!((ids.len(), nodes), (8, [2, 5]));
        // 3 pieces a window: it starts at the first of the pair
        let (ids, nodes) = pair_window(&pieces, [2, 4], [101, 102], 5);
        assert_eq!(ids, vec![101, 3, 4, 5, 102]);
        assert_eq!(nodes, [1, 3]);
        // too far apart: the second lands on the window's last piece
        let (ids, nodes) = pair_window(&pieces, [0, 5], [101, 102], 5);
        assert_eq!(ids, vec![101, 1, 2, 3, 102]);
        assert_eq!(nodes, [1, 3]);
    }

    #[test]
    fn tree_units_cut_at_max_len_and_lose_heads_past_the_cut() {
        let pieces = vec![vec![11], vec![12, 13], vec![14], vec![15]];
        // heads: 1 → 2, 2 → root, 3 → 2, 4 → 3
        let unit = tree_unit(&pieces, &[2, 0, 2, 3], &[1, 2, 3, 4], [101, 102], 6);
        // 4 pieces fit: words 1–3 (the third word is its first piece)
        assert_eq!(unit.ids, vec![101, 11, 12, 13, 14, 102]);
        assert_eq!(unit.nodes, vec![0, 1, 2, 4]);
        let PairTarget::Arcs { heads, labels } = &unit.target else {
            panic!("a tree")
        };
        assert_eq!(heads, &vec![Some(2), Some(0), Some(2)]);
        assert_eq!(labels, &vec![1, 2, 3]);
        assert_eq!(unit.words, 4);
    }
}
