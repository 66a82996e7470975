//! Fine-tuning heads: map the encoder's outputs for one batch to class logits.
//!
//! Every head ends in the softmax layer of Su et al. (su2020 III.B; su2022 "Refined
//! fine-tuning"): `p = softmax(W_f h + b_f)`; the heads differ in how they build `h`:
//!
//! | `head:` | `h` |
//! |---|---|
//! | `cls` | `h^L_CLS` |
//! | `sll_lstm` | `h^L_CLS ⊕ LSTM(h^L_1..h^L_N)` (last state) |
//! | `sll_bilstm` | `h^L_CLS ⊕ (→LSTM last ⊕ ←LSTM first)` |
//! | `sll_att` | `h^L_CLS ⊕ O`, `α = softmax(h^L K)`, `O = Σ α_i h^L_i` |
//! | `sll_att_nocls` | `O` |
//! | `sll_lstm_nocls` | `O = LSTM(h^L_1..h^L_N)` |
//! | `inter_cls_lstm` | `LSTM(h^1_CLS..h^L_CLS)` (last state; Song et al. 2020, su2020 Table IV) |
//! | `inter_cls_att` | `Σ_l α_l h^l_CLS`, `α = softmax(h_CLS K)` over layers |
//! | `pairwise_att` | `C = T_i ∘ T_j ∘ a^{i,j} ∘ a^{j,i}` (Meng et al. eq. 4–5) |
//!
//! `h^L_1..h^L_N` are the states of the real word pieces between [CLS] and [SEP]: the [SEP]
//! state and padding never enter a summary. The classifier input `h` gets dropout.

use std::fmt;
use std::str::FromStr;

use burn::module::Initializer;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use super::bert::token_rows;
use super::fused;
use super::ModelError;

/// Standard deviation of BERT's truncated-normal initializer, used for `W_f` and `K`.
const BERT_INIT_STD: f64 = 0.02;

/// Added to the scores of masked positions before the softmax: exp underflows to exactly 0.
const MASKED_SCORE: f32 = -1.0e30;

/// The fine-tuning head, by its YAML name (`head:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// Softmax layer on `h^L_CLS`.
    #[default]
    Cls,
    /// LSTM over the last layer, concatenated with `h^L_CLS`.
    SllLstm,
    /// biLSTM over the last layer, concatenated with `h^L_CLS`.
    SllBilstm,
    /// Additive attention over the last layer, concatenated with `h^L_CLS`.
    SllAtt,
    /// Additive attention over the last layer, without `h^L_CLS`.
    SllAttNocls,
    /// LSTM over the last layer, without `h^L_CLS`.
    SllLstmNocls,
    /// LSTM over the [CLS] states of layers 1..L.
    InterClsLstm,
    /// Attention over the [CLS] states of layers 1..L.
    InterClsAtt,
    /// Meng et al.'s pair-wise attention features of the two entities.
    PairwiseAtt,
}

impl HeadKind {
    /// Every head, in the order of the papers' tables.
    pub const ALL: [HeadKind; 9] = [
        HeadKind::Cls,
        HeadKind::SllLstm,
        HeadKind::SllBilstm,
        HeadKind::SllAtt,
        HeadKind::SllAttNocls,
        HeadKind::SllLstmNocls,
        HeadKind::InterClsLstm,
        HeadKind::InterClsAtt,
        HeadKind::PairwiseAtt,
    ];

    /// The YAML name.
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::Cls => "cls",
            HeadKind::SllLstm => "sll_lstm",
            HeadKind::SllBilstm => "sll_bilstm",
            HeadKind::SllAtt => "sll_att",
            HeadKind::SllAttNocls => "sll_att_nocls",
            HeadKind::SllLstmNocls => "sll_lstm_nocls",
            HeadKind::InterClsLstm => "inter_cls_lstm",
            HeadKind::InterClsAtt => "inter_cls_att",
            HeadKind::PairwiseAtt => "pairwise_att",
        }
    }

    /// Whether the head reads the encoder's attention probabilities.
    pub fn needs_attentions(self) -> bool {
        self == HeadKind::PairwiseAtt
    }

    /// Whether the head reads the [CLS] state of every layer.
    pub fn needs_all_layers(self) -> bool {
        matches!(self, HeadKind::InterClsLstm | HeadKind::InterClsAtt)
    }

    /// Whether the head reads the two entity positions.
    pub fn needs_entities(self) -> bool {
        self == HeadKind::PairwiseAtt
    }

    /// Whether the head has attention weights α over the tokens of the last layer.
    pub fn has_token_alpha(self) -> bool {
        matches!(self, HeadKind::SllAtt | HeadKind::SllAttNocls)
    }
}

impl fmt::Display for HeadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HeadKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HeadKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = HeadKind::ALL.iter().map(|k| k.name()).collect();
                ModelError::Invalid(format!(
                    "unknown head `{s}`; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// Sizes a head is built for.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadConfig {
    pub kind: HeadKind,
    /// `H`: encoder hidden size.
    pub hidden_size: usize,
    /// `L`: encoder layers.
    pub num_layers: usize,
    /// Attention heads per layer (Meng et al.'s `H`; here `A` to keep `H` for the hidden size).
    pub num_attention_heads: usize,
    /// `C`: number of classes.
    pub num_labels: usize,
    /// LSTM hidden size (768 in su2022).
    pub lstm_hidden: usize,
    /// Dropout probability on the classifier input `h`.
    pub dropout: f64,
}

impl HeadConfig {
    /// Dimension of the classifier input `h`.
    pub fn classifier_input_size(&self) -> usize {
        let h = self.hidden_size;
        match self.kind {
            HeadKind::Cls | HeadKind::SllAttNocls | HeadKind::InterClsAtt => h,
            HeadKind::SllLstm => h + self.lstm_hidden,
            HeadKind::SllBilstm => h + 2 * self.lstm_hidden,
            HeadKind::SllAtt => 2 * h,
            HeadKind::SllLstmNocls | HeadKind::InterClsLstm => self.lstm_hidden,
            // C ∈ R^{2M + L·H·2} (Meng et al. eq. 5)
            HeadKind::PairwiseAtt => 2 * h + 2 * self.num_layers * self.num_attention_heads,
        }
    }

    /// Builds the head with freshly initialized parameters.
    pub fn init(&self, device: &Device) -> Result<Head, ModelError> {
        if self.num_labels < 2 {
            return Err(ModelError::Invalid(format!(
                "a classification head needs at least 2 labels, got {}",
                self.num_labels
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Invalid(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        let classifier = SoftmaxLayer::new(
            self.classifier_input_size(),
            self.num_labels,
            self.dropout,
            device,
        );
        let h = self.hidden_size;
        let head = match self.kind {
            HeadKind::Cls => Head::Cls(ClsHead { classifier }),
            HeadKind::SllLstm | HeadKind::SllLstmNocls => Head::SllLstm(SllLstmHead {
                forward_lstm: Lstm::new(h, self.lstm_hidden, device),
                backward_lstm: None,
                with_cls: self.kind == HeadKind::SllLstm,
                classifier,
            }),
            HeadKind::SllBilstm => Head::SllLstm(SllLstmHead {
                forward_lstm: Lstm::new(h, self.lstm_hidden, device),
                backward_lstm: Some(Lstm::new(h, self.lstm_hidden, device)),
                with_cls: true,
                classifier,
            }),
            HeadKind::SllAtt | HeadKind::SllAttNocls => Head::SllAtt(SllAttHead {
                attention: AdditiveAttention::new(h, device),
                with_cls: self.kind == HeadKind::SllAtt,
                classifier,
            }),
            HeadKind::InterClsLstm => Head::InterClsLstm(InterClsLstmHead {
                lstm: Lstm::new(h, self.lstm_hidden, device),
                classifier,
            }),
            HeadKind::InterClsAtt => Head::InterClsAtt(InterClsAttHead {
                attention: AdditiveAttention::new(h, device),
                classifier,
            }),
            HeadKind::PairwiseAtt => Head::PairwiseAtt(PairwiseAttHead { classifier }),
        };
        Ok(head)
    }
}

/// What a head reads from the encoder for one batch of `B` instances padded to `T` tokens.
#[derive(Debug, Clone)]
pub struct HeadInput {
    /// `h^L`: last-layer states, `[B, T, H]`.
    pub last_hidden_state: Tensor<3>,
    /// `h^0..h^L`: embedding output and every layer's states, each `[B, T, H]`
    /// (read by `inter_cls_*`; may be empty for other heads).
    pub hidden_states: Vec<Tensor<3>>,
    /// `z^l`: every layer's attention probabilities, each `[B, A, T, T]`
    /// (read by `pairwise_att`; may be empty for other heads).
    pub attentions: Vec<Tensor<4>>,
    /// Real tokens per instance, [CLS] and [SEP] included: `n_b = N_b + 2`.
    pub lengths: Vec<usize>,
    /// Token positions `(i, j)` of the two entities per instance (read by `pairwise_att`).
    pub entity_positions: Vec<[usize; 2]>,
}

/// A head's result for one batch.
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// `W_f h + b_f`, `[B, C]` (the softmax is in the loss / the argmax).
    pub logits: Tensor<2>,
    /// Attention weights, when the head has them: `[B, T]` over the tokens for `sll_att*`
    /// (0 at [CLS], [SEP] and padding), `[B, L]` over the layers for `inter_cls_att`.
    pub alpha: Option<Tensor<2>>,
}

/// A fine-tuning head; build one with [`HeadConfig::init`].
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Head {
    Cls(ClsHead),
    SllLstm(SllLstmHead),
    SllAtt(SllAttHead),
    InterClsLstm(InterClsLstmHead),
    InterClsAtt(InterClsAttHead),
    PairwiseAtt(PairwiseAttHead),
}

impl Head {
    /// Which head this is.
    pub fn kind(&self) -> HeadKind {
        match self {
            Head::Cls(_) => HeadKind::Cls,
            Head::SllLstm(head) => match (head.backward_lstm.is_some(), head.with_cls) {
                (true, _) => HeadKind::SllBilstm,
                (false, true) => HeadKind::SllLstm,
                (false, false) => HeadKind::SllLstmNocls,
            },
            Head::SllAtt(head) if head.with_cls => HeadKind::SllAtt,
            Head::SllAtt(_) => HeadKind::SllAttNocls,
            Head::InterClsLstm(_) => HeadKind::InterClsLstm,
            Head::InterClsAtt(_) => HeadKind::InterClsAtt,
            Head::PairwiseAtt(_) => HeadKind::PairwiseAtt,
        }
    }

    /// Logits (and α where the head has it) for one batch.
    pub fn forward(&self, input: HeadInput) -> Result<HeadOutput, ModelError> {
        check_input(&input)?;
        match self {
            Head::Cls(head) => Ok(head.forward(input)),
            Head::SllLstm(head) => Ok(head.forward(input)),
            Head::SllAtt(head) => Ok(head.forward(input)),
            Head::InterClsLstm(head) => head.forward(input),
            Head::InterClsAtt(head) => head.forward(input),
            Head::PairwiseAtt(head) => head.forward(input),
        }
    }
}

fn check_input(input: &HeadInput) -> Result<(), ModelError> {
    let [batch, tokens, _] = input.last_hidden_state.dims();
    if input.lengths.len() != batch {
        return Err(ModelError::Invalid(format!(
            "head input: {} lengths for a batch of {batch}",
            input.lengths.len()
        )));
    }
    if let Some(bad) = input.lengths.iter().find(|&&n| n < 2 || n > tokens) {
        return Err(ModelError::Invalid(format!(
            "head input: length {bad} outside [2, {tokens}] (each instance has [CLS] and [SEP])"
        )));
    }
    Ok(())
}

/// `p = softmax(W_f h + b_f)` with dropout on `h`; returns the logits `W_f h + b_f`.
#[derive(Module, Debug)]
pub struct SoftmaxLayer {
    dropout: Dropout,
    /// `W_f ∈ R^{C×|h|}`, `b_f ∈ R^C`.
    w_f: Linear,
}

impl SoftmaxLayer {
    fn new(d_input: usize, num_labels: usize, dropout: f64, device: &Device) -> Self {
        SoftmaxLayer {
            dropout: DropoutConfig::new(dropout).init(),
            w_f: LinearConfig::new(d_input, num_labels)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: BERT_INIT_STD,
                })
                .init(device),
        }
    }

    fn forward(&self, h: Tensor<2>) -> Tensor<2> {
        self.w_f
            .forward(crate::model::fused::dropout(&self.dropout, h))
    }
}

/// Additive attention of su2020 III.B / su2022: `[α_i] = softmax(h K)`, `O = Σ_i α_i h_i`,
/// `K ∈ R^{H×1}`. Masked positions get `α_i = 0` exactly.
#[derive(Module, Debug)]
pub struct AdditiveAttention {
    /// `K ∈ R^{H×1}`.
    k: Linear,
}

impl AdditiveAttention {
    fn new(hidden_size: usize, device: &Device) -> Self {
        AdditiveAttention {
            k: LinearConfig::new(hidden_size, 1)
                .with_bias(false)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: BERT_INIT_STD,
                })
                .init(device),
        }
    }

    /// `h`: `[B, T, H]`; `attend`: `[B, T]`, true where a position may get weight.
    /// Returns `(O [B, H], α [B, T])`.
    pub fn forward(&self, h: Tensor<3>, attend: Tensor<2, Bool>) -> (Tensor<2>, Tensor<2>) {
        let [batch, tokens, hidden] = h.dims();
        // h K: [B, T, 1] -> [B, T]
        let scores: Tensor<2> = token_rows(&self.k, h.clone()).reshape([batch, tokens]);
        let scores = scores.mask_fill(attend.bool_not(), MASKED_SCORE);
        // [α_i] = softmax(h K)
        let alpha = softmax(scores, 1);
        // O = Σ_i α_i h_i: [B, 1, T] x [B, T, H] -> [B, 1, H]
        let o = alpha
            .clone()
            .unsqueeze_dim::<3>(1)
            .matmul(h)
            .reshape([batch, hidden]);
        (o, alpha)
    }
}

/// One-direction LSTM (Hochreiter & Schmidhuber 1997), gates in the order (i, f, g, o):
///
/// `[i; f; g; o] = W_ih x_t + b + W_hh h_{t-1}`,
/// `c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)`, `h_t = σ(o) ⊙ tanh(c_t)`.
///
/// `W_ih x_t` is computed for all `t` in one product before the recurrence.
#[derive(Module, Debug)]
pub struct Lstm {
    /// `W_ih ∈ R^{4d×d_in}` and `b ∈ R^{4d}`.
    w_ih: Linear,
    /// `W_hh ∈ R^{4d×d}`.
    w_hh: Linear,
    d_hidden: usize,
}

impl Lstm {
    /// An LSTM with PyTorch's initialization, `U(-1/√d, 1/√d)`.
    pub fn new(d_input: usize, d_hidden: usize, device: &Device) -> Self {
        let bound = 1.0 / (d_hidden as f64).sqrt();
        let init = Initializer::Uniform {
            min: -bound,
            max: bound,
        };
        Lstm {
            w_ih: LinearConfig::new(d_input, 4 * d_hidden)
                .with_initializer(init.clone())
                .init(device),
            w_hh: LinearConfig::new(d_hidden, 4 * d_hidden)
                .with_bias(false)
                .with_initializer(init)
                .init(device),
            d_hidden,
        }
    }

    /// Hidden states `h_1..h_T` for `x: [B, T, d_in]`, from zero initial state: `[B, T, d]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // W_ih x_t + b for every t at once: [B, T, 4d]
        let x_proj = token_rows(&self.w_ih, x);
        // the recurrence, with W_hh as burn's Linear stores it: [d, 4d], h W_hh
        fused::lstm(x_proj, self.w_hh.weight.val())
    }

    /// The state after each instance's last real step: `h_{n_b}` for `x: [B, T, d_in]`,
    /// where instance `b` has `n_b ≥ 1` real steps followed by padding. `[B, d]`.
    ///
    /// Padding comes after the real steps, so it never reaches `h_{n_b}`; the recurrence
    /// runs only up to `max_b n_b`.
    pub fn last_states(&self, x: Tensor<3>, lengths: &[usize]) -> Tensor<2> {
        let steps = lengths.iter().copied().max().unwrap_or(1).max(1);
        let x = x.slice(s![.., 0..steps, ..]);
        let states = self.forward(x);
        select_steps(
            states,
            &lengths.iter().map(|&n| n.max(1) - 1).collect::<Vec<_>>(),
        )
    }

    /// The backward direction's state at the first real step, `←h_1`, for `x: [B, T, d_in]`
    /// with `n_b` real steps each: the LSTM reads `x_{n_b}, …, x_1` (padding excluded).
    pub fn first_states_backward(&self, x: Tensor<3>, lengths: &[usize]) -> Tensor<2> {
        self.last_states(reverse_within_lengths(x, lengths), lengths)
    }
}

/// Rows `x[b, t_b, :]` of `x: [B, T, D]`, one step per instance: `[B, D]`.
fn select_steps(x: Tensor<3>, steps: &[usize]) -> Tensor<2> {
    let [batch, tokens, dim] = x.dims();
    let device = x.device();
    let flat: Tensor<2> = x.reshape([batch * tokens, dim]);
    let rows: Vec<i64> = steps
        .iter()
        .enumerate()
        .map(|(b, &t)| (b * tokens + t) as i64)
        .collect();
    flat.select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(rows, [batch]), &device),
    )
}

/// Reverses each instance's first `n_b` steps of `x: [B, T, D]` in place; padding stays put.
fn reverse_within_lengths(x: Tensor<3>, lengths: &[usize]) -> Tensor<3> {
    let [batch, tokens, dim] = x.dims();
    let device = x.device();
    let mut order = Vec::with_capacity(batch * tokens * dim);
    for &n in lengths {
        let n = n.min(tokens);
        for t in 0..tokens {
            let source = if t < n { n - 1 - t } else { t };
            order.extend(std::iter::repeat_n(source as i64, dim));
        }
    }
    let index = Tensor::<3, Int>::from_data(TensorData::new(order, [batch, tokens, dim]), &device);
    x.gather(1, index)
}

/// `[B, T]` mask of `h_1..h_N`: true at positions `1..=N_b` (not [CLS], [SEP] or padding).
fn word_piece_mask(lengths: &[usize], tokens: usize, device: &Device) -> Tensor<2, Bool> {
    let mut values = Vec::with_capacity(lengths.len() * tokens);
    for &n in lengths {
        // n = N + 2: [CLS] at 0, h_1..h_N at 1..=N, [SEP] at N + 1
        values.extend((0..tokens).map(|t| t >= 1 && t + 1 < n));
    }
    Tensor::from_data(TensorData::new(values, [lengths.len(), tokens]), device)
}

/// `h^L_CLS`: the state at position 0, `[B, H]`.
fn cls_state(h: Tensor<3>) -> Tensor<2> {
    let [batch, _, hidden] = h.dims();
    h.slice(s![.., 0..1, ..]).reshape([batch, hidden])
}

/// `cls`: `p = softmax(W_f h^L_CLS + b_f)`.
#[derive(Module, Debug)]
pub struct ClsHead {
    classifier: SoftmaxLayer,
}

impl ClsHead {
    fn forward(&self, input: HeadInput) -> HeadOutput {
        HeadOutput {
            logits: self.classifier.forward(cls_state(input.last_hidden_state)),
            alpha: None,
        }
    }
}

/// `sll_lstm`, `sll_bilstm`, `sll_lstm_nocls` (su2022 "Refined fine-tuning", step 1):
/// `O = LSTM(h^L_i)` or `O = LSTM(→h^L_i) ⊕ LSTM(←h^L_i)`, `i = 1..N`; `h = h^L_CLS ⊕ O` or `O`.
#[derive(Module, Debug)]
pub struct SllLstmHead {
    forward_lstm: Lstm,
    /// Present for the biLSTM.
    backward_lstm: Option<Lstm>,
    with_cls: bool,
    classifier: SoftmaxLayer,
}

impl SllLstmHead {
    fn forward(&self, input: HeadInput) -> HeadOutput {
        let h_l = input.last_hidden_state;
        let [_, tokens, _] = h_l.dims();
        // h^L_1..h^L_N: drop [CLS]; [SEP] and padding lie beyond each N_b.
        let words = h_l.clone().slice(s![.., 1..tokens, ..]);
        let n: Vec<usize> = input.lengths.iter().map(|&len| len - 2).collect();
        let mut parts = Vec::with_capacity(3);
        if self.with_cls {
            parts.push(cls_state(h_l));
        }
        // last unit of the forward direction
        parts.push(self.forward_lstm.last_states(words.clone(), &n));
        if let Some(backward) = &self.backward_lstm {
            // first unit of the backward direction
            parts.push(backward.first_states_backward(words, &n));
        }
        // h = h^L_CLS ⊕ O
        let h = Tensor::cat(parts, 1);
        HeadOutput {
            logits: self.classifier.forward(h),
            alpha: None,
        }
    }
}

/// `sll_att`, `sll_att_nocls` (su2020 III.B.2): `[α_i] = softmax(h^L K)`, `O = Σ_{i=1}^N α_i h^L_i`;
/// `h = h^L_CLS ⊕ O` or `O`.
#[derive(Module, Debug)]
pub struct SllAttHead {
    attention: AdditiveAttention,
    with_cls: bool,
    classifier: SoftmaxLayer,
}

impl SllAttHead {
    fn forward(&self, input: HeadInput) -> HeadOutput {
        let h_l = input.last_hidden_state;
        let [_, tokens, _] = h_l.dims();
        let attend = word_piece_mask(&input.lengths, tokens, &h_l.device());
        let (o, alpha) = self.attention.forward(h_l.clone(), attend);
        let h = if self.with_cls {
            // h = h^L_CLS ⊕ O
            Tensor::cat(vec![cls_state(h_l), o], 1)
        } else {
            o
        };
        HeadOutput {
            logits: self.classifier.forward(h),
            alpha: Some(alpha),
        }
    }
}

/// The sequence `h^1_CLS..h^L_CLS`, `[B, L, H]` (the embedding output `h^0` is left out: its
/// [CLS] state is the same for every input).
fn layer_cls_states(hidden_states: &[Tensor<3>]) -> Result<Tensor<3>, ModelError> {
    if hidden_states.len() < 2 {
        return Err(ModelError::Invalid(format!(
            "inter_cls heads need the states of every layer (h^0..h^L); got {}",
            hidden_states.len()
        )));
    }
    let cls: Vec<Tensor<2>> = hidden_states[1..]
        .iter()
        .map(|h| cls_state(h.clone()))
        .collect();
    Ok(Tensor::stack(cls, 1))
}

/// `inter_cls_lstm` (Song et al. 2020 as used in su2020 Table IV): `h = LSTM(h^1_CLS..h^L_CLS)`,
/// last state.
#[derive(Module, Debug)]
pub struct InterClsLstmHead {
    lstm: Lstm,
    classifier: SoftmaxLayer,
}

impl InterClsLstmHead {
    fn forward(&self, input: HeadInput) -> Result<HeadOutput, ModelError> {
        let cls = layer_cls_states(&input.hidden_states)?;
        let [batch, layers, _] = cls.dims();
        let h = self.lstm.last_states(cls, &vec![layers; batch]);
        Ok(HeadOutput {
            logits: self.classifier.forward(h),
            alpha: None,
        })
    }
}

/// `inter_cls_att`: `[α_l] = softmax(h_CLS K)`, `h = Σ_{l=1}^L α_l h^l_CLS`.
#[derive(Module, Debug)]
pub struct InterClsAttHead {
    attention: AdditiveAttention,
    classifier: SoftmaxLayer,
}

impl InterClsAttHead {
    fn forward(&self, input: HeadInput) -> Result<HeadOutput, ModelError> {
        let cls = layer_cls_states(&input.hidden_states)?;
        let [batch, layers, _] = cls.dims();
        let every_layer = Tensor::<2, Bool>::from_data(
            TensorData::new(vec![true; batch * layers], [batch, layers]),
            &cls.device(),
        );
        let (h, alpha) = self.attention.forward(cls, every_layer);
        Ok(HeadOutput {
            logits: self.classifier.forward(h),
            alpha: Some(alpha),
        })
    }
}

/// `pairwise_att` (Meng et al. 3.1–3.2): `C = T_i ∘ T_j ∘ a^{i,j} ∘ a^{j,i}` (eq. 5), with
/// `a^{i,j} = (z^{1,1}_{i,j}, …, z^{L,A}_{i,j})` (eq. 4), classified by `W ∈ R^{K×(2M+2LA)}`.
#[derive(Module, Debug)]
pub struct PairwiseAttHead {
    classifier: SoftmaxLayer,
}

impl PairwiseAttHead {
    fn forward(&self, input: HeadInput) -> Result<HeadOutput, ModelError> {
        let t = input.last_hidden_state;
        let [batch, tokens, _] = t.dims();
        if input.attentions.is_empty() {
            return Err(ModelError::Invalid(
                "pairwise_att needs the attention probabilities of every layer".into(),
            ));
        }
        if input.entity_positions.len() != batch {
            return Err(ModelError::Invalid(format!(
                "pairwise_att: {} entity pairs for a batch of {batch}",
                input.entity_positions.len()
            )));
        }
        if let Some(bad) = input
            .entity_positions
            .iter()
            .find(|p| p[0] >= tokens || p[1] >= tokens)
        {
            return Err(ModelError::Invalid(format!(
                "pairwise_att: entity position {bad:?} outside {tokens} tokens"
            )));
        }
        let i: Vec<usize> = input.entity_positions.iter().map(|p| p[0]).collect();
        let j: Vec<usize> = input.entity_positions.iter().map(|p| p[1]).collect();
        let t_i = select_steps(t.clone(), &i);
        let t_j = select_steps(t, &j);
        let a_ij = pairwise_attention(&input.attentions, &i, &j);
        let a_ji = pairwise_attention(&input.attentions, &j, &i);
        // C = T_i ∘ T_j ∘ a^{i,j} ∘ a^{j,i}
        let c = Tensor::cat(vec![t_i, t_j, a_ij, a_ji], 1);
        Ok(HeadOutput {
            logits: self.classifier.forward(c),
            alpha: None,
        })
    }
}

/// `a^{i,j}` (Meng et al. eq. 4): `z^{l,h}_{i_b, j_b}` for every layer `l` and head `h`,
/// layer-major, `[B, L·A]`.
pub fn pairwise_attention(attentions: &[Tensor<4>], i: &[usize], j: &[usize]) -> Tensor<2> {
    let per_layer: Vec<Tensor<2>> = attentions
        .iter()
        .map(|z| {
            let [batch, heads, tokens, _] = z.dims();
            let device = z.device();
            // rows i_b: [B, A, 1, T]
            let row_index: Vec<i64> = i
                .iter()
                .flat_map(|&i_b| std::iter::repeat_n(i_b as i64, heads * tokens))
                .collect();
            let rows = z.clone().gather(
                2,
                Tensor::<4, Int>::from_data(
                    TensorData::new(row_index, [batch, heads, 1, tokens]),
                    &device,
                ),
            );
            // columns j_b: [B, A, 1, 1]
            let col_index: Vec<i64> = j
                .iter()
                .flat_map(|&j_b| std::iter::repeat_n(j_b as i64, heads))
                .collect();
            rows.gather(
                3,
                Tensor::<4, Int>::from_data(
                    TensorData::new(col_index, [batch, heads, 1, 1]),
                    &device,
                ),
            )
            .reshape([batch, heads])
        })
        .collect();
    Tensor::cat(per_layer, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn device() -> Device {
        Device::default()
    }

    /// `head` with its lazily drawn parameters drawn now (call under the generator lock).
    fn touched(head: Head) -> Head {
        crate::train::classifier::initialize_params(&head);
        head
    }

    fn random3(dims: [usize; 3]) -> Tensor<3> {
        crate::train::rng::unseeded_draw(|| {
            Tensor::random(dims, Distribution::Normal(0.0, 1.0), &device())
        })
    }

    fn values2(t: Tensor<2>) -> Vec<Vec<f32>> {
        let [rows, cols] = t.dims();
        let flat: Vec<f32> = t.into_data().try_into_vec_as::<f32>().expect("f32 data");
        flat.chunks(cols).take(rows).map(|r| r.to_vec()).collect()
    }

    fn config(kind: HeadKind) -> HeadConfig {
        HeadConfig {
            kind,
            hidden_size: 8,
            num_layers: 3,
            num_attention_heads: 2,
            num_labels: 4,
            lstm_hidden: 5,
            dropout: 0.1,
        }
    }

    fn input(batch: usize, tokens: usize, lengths: Vec<usize>) -> HeadInput {
        let cfg = config(HeadKind::Cls);
        let hidden_states: Vec<Tensor<3>> = (0..=cfg.num_layers)
            .map(|_| random3([batch, tokens, cfg.hidden_size]))
            .collect();
        let attentions = (0..cfg.num_layers)
            .map(|_| {
                softmax(
                    crate::train::rng::unseeded_draw(|| {
                        Tensor::<4>::random(
                            [batch, cfg.num_attention_heads, tokens, tokens],
                            Distribution::Normal(0.0, 1.0),
                            &device(),
                        )
                    }),
                    3,
                )
            })
            .collect();
        HeadInput {
            last_hidden_state: hidden_states[cfg.num_layers].clone(),
            hidden_states,
            attentions,
            entity_positions: lengths.iter().map(|&n| [1, n - 2]).collect(),
            lengths,
        }
    }

    #[test]
    fn every_head_gives_batch_by_labels_logits() {
        for kind in HeadKind::ALL {
            let head =
                crate::train::rng::unseeded_draw(|| config(kind).init(&device()).map(touched))
                    .expect("head");
            assert_eq!(head.kind(), kind);
            let out = head.forward(input(3, 7, vec![7, 4, 2])).expect("forward");
            assert_eq!(out.logits.dims(), [3, 4], "{kind}");
            let expect_alpha = kind.has_token_alpha() || kind == HeadKind::InterClsAtt;
            assert_eq!(out.alpha.is_some(), expect_alpha, "{kind}");
            if kind.has_token_alpha() {
                assert_eq!(out.alpha.map(|a| a.dims()), Some([3, 7]), "{kind}");
            }
        }
    }

    #[test]
    fn head_names_round_trip_through_yaml_and_from_str() {
        for kind in HeadKind::ALL {
            assert_eq!(kind.name().parse::<HeadKind>().expect("parse"), kind);
            let yaml = serde_yaml::to_string(&kind).expect("yaml");
            assert_eq!(yaml.trim(), kind.name());
        }
        assert!("sll_gru".parse::<HeadKind>().is_err());
    }

    #[test]
    fn attention_gives_padding_cls_and_sep_zero_weight() {
        let head = crate::train::rng::unseeded_draw(|| {
            config(HeadKind::SllAtt).init(&device()).map(touched)
        })
        .expect("head");
        // n = 6: [CLS] w1 w2 w3 w4 [SEP]; n = 3: [CLS] w1 [SEP] pad pad pad
        let out = head.forward(input(2, 6, vec![6, 3])).expect("forward");
        let alpha = values2(out.alpha.expect("alpha"));
        for (b, n) in [(0usize, 6usize), (1, 3)] {
            let row = &alpha[b];
            assert_eq!(row[0], 0.0, "[CLS] weight");
            assert_eq!(row[n - 1], 0.0, "[SEP] weight");
            for (t, &a) in row.iter().enumerate().skip(n) {
                assert_eq!(a, 0.0, "padding weight at {t}");
            }
            let real: f32 = row[1..n - 1].iter().sum();
            assert!((real - 1.0).abs() < 1e-5, "α sums to {real}");
            assert!(row[1..n - 1].iter().all(|&a| a > 0.0));
        }
        // a single word piece takes all the weight
        assert!((alpha[1][1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn attention_summary_ignores_padding_values() {
        let attention = AdditiveAttention::new(8, &device());
        let h = random3([1, 5, 8]);
        let attend = word_piece_mask(&[4], 5, &device());
        let (o, _) = attention.forward(h.clone(), attend.clone());
        // change [CLS], [SEP] and the padded position: O must not move
        let noise = random3([1, 5, 8]).mul_scalar(100.0);
        let keep = Tensor::<3>::from_data(
            TensorData::new(
                (0..5)
                    .flat_map(|t| {
                        std::iter::repeat_n(if (1..3).contains(&t) { 1.0f32 } else { 0.0 }, 8)
                    })
                    .collect::<Vec<f32>>(),
                [1, 5, 8],
            ),
            &device(),
        );
        let h2 = h.clone() + noise * (keep.ones_like() - keep);
        let (o2, _) = attention.forward(h2, attend);
        let diff: f32 = (o - o2).abs().max().into_scalar();
        assert!(diff < 1e-5, "O moved by {diff}");
    }

    #[test]
    fn lstm_last_state_ignores_padding() {
        let lstm = crate::train::rng::unseeded_module(|| Lstm::new(4, 3, &device()));
        let full = random3([1, 6, 4]);
        // instance 0: all 6 steps; instance 1: the first 3 steps of the same sequence + junk
        let junk = random3([1, 3, 4]).mul_scalar(50.0);
        let short = Tensor::cat(vec![full.clone().slice(s![.., 0..3, ..]), junk], 1);
        let batch = Tensor::cat(vec![full.clone(), short.clone()], 0);
        let last = values2(lstm.last_states(batch, &[6, 3]));
        let alone6 = values2(lstm.last_states(full.clone(), &[6]));
        let alone3 = values2(lstm.last_states(full.clone().slice(s![.., 0..3, ..]), &[3]));
        for (a, b) in last[0].iter().zip(&alone6[0]) {
            assert!((a - b).abs() < 1e-5);
        }
        for (a, b) in last[1].iter().zip(&alone3[0]) {
            assert!((a - b).abs() < 1e-5);
        }
        // and it is not the state after running through the padding
        let through_padding = values2(select_steps(lstm.forward(short), &[5]));
        assert!(last[1]
            .iter()
            .zip(&through_padding[0])
            .any(|(a, b)| (a - b).abs() > 1e-4));
    }

    #[test]
    fn backward_lstm_starts_at_each_instance_last_real_step() {
        let lstm = crate::train::rng::unseeded_module(|| Lstm::new(4, 3, &device()));
        let x = random3([1, 3, 4]);
        let junk = random3([1, 2, 4]).mul_scalar(50.0);
        let padded = Tensor::cat(vec![x.clone(), junk], 1);
        let backward_padded = values2(lstm.first_states_backward(padded, &[3]));
        // reading x_3, x_2, x_1 by hand
        let reversed = x.flip([1]);
        let by_hand = values2(lstm.last_states(reversed, &[3]));
        for (a, b) in backward_padded[0].iter().zip(&by_hand[0]) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn reverse_within_lengths_keeps_padding() {
        let x = Tensor::<3>::from_data(
            TensorData::new((0..8).map(|v| v as f32).collect::<Vec<_>>(), [2, 4, 1]),
            &device(),
        );
        let r: Vec<f32> = reverse_within_lengths(x, &[4, 2])
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32");
        assert_eq!(r, vec![3.0, 2.0, 1.0, 0.0, 5.0, 4.0, 6.0, 7.0]);
    }

    #[test]
    fn sll_lstm_logits_ignore_sep_and_padding() {
        let mut cfg = config(HeadKind::SllBilstm);
        cfg.dropout = 0.0;
        let head =
            crate::train::rng::unseeded_draw(|| cfg.init(&device()).map(touched)).expect("head");
        let base = input(1, 6, vec![4]);
        let out = values2(head.forward(base.clone()).expect("forward").logits);
        // overwrite [SEP] (position 3) and padding (4, 5)
        let h = base.last_hidden_state.clone();
        let changed = Tensor::cat(
            vec![
                h.clone().slice(s![.., 0..3, ..]),
                random3([1, 3, 8]).mul_scalar(10.0),
            ],
            1,
        );
        let moved = HeadInput {
            last_hidden_state: changed,
            ..base
        };
        let out2 = values2(head.forward(moved).expect("forward").logits);
        for (a, b) in out[0].iter().zip(&out2[0]) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn pairwise_attention_picks_z_ij_of_every_layer_and_head() {
        let inp = input(2, 5, vec![5, 4]);
        let a = values2(pairwise_attention(&inp.attentions, &[1, 3], &[2, 0]));
        for (b, (i, j)) in [(0usize, (1usize, 2usize)), (1, (3, 0))] {
            for (l, z) in inp.attentions.iter().enumerate() {
                let z: Vec<f32> = z.clone().into_data().try_into_vec_as::<f32>().expect("f32");
                for h in 0..2 {
                    let expected = z[((b * 2 + h) * 5 + i) * 5 + j];
                    assert_eq!(a[b][l * 2 + h], expected);
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let head =
            crate::train::rng::unseeded_draw(|| config(HeadKind::Cls).init(&device()).map(touched))
                .expect("head");
        assert!(head.forward(input(2, 5, vec![5, 6])).is_err());
        let mut cfg = config(HeadKind::Cls);
        cfg.num_labels = 1;
        assert!(crate::train::rng::unseeded_draw(|| cfg.init(&device())).is_err());
    }
}
