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
//! The token heads `token` and `token_crf` (NER) score every word instead; see [`token`].
//!
//! `h^L_1..h^L_N` are the states of the real word pieces between [CLS] and [SEP]: the [SEP]
//! state and padding never enter a summary. The classifier input `h` gets dropout.
//!
//! One file per family: `cls` and what every head shares here, `lstm.rs` (`sll_lstm*`),
//! `attention.rs` (`sll_att*`), `inter_cls.rs` (`inter_cls_*`), `pairwise.rs` (`pairwise_att`),
//! `token.rs` (`token`, `token_crf`).
//! A new head is a variant of [`HeadKind`], its module, and its arms in [`HeadConfig::init`]
//! and [`Head`].

use std::fmt;
use std::str::FromStr;

use burn::module::Initializer;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::ModelError;

mod attention;
mod inter_cls;
mod lstm;
mod pairwise;
#[cfg(test)]
mod tests;
mod token;
mod word_pair;

pub use attention::{AdditiveAttention, SllAttHead};
pub use inter_cls::{InterClsAttHead, InterClsLstmHead};
pub use lstm::{Lstm, SllLstmHead};
pub use pairwise::{pairwise_attention, PairwiseAttHead};
pub use token::{TokenHead, TokenHeadConfig, TransitionConstraints, WordStarts};
pub use word_pair::{node_states, pair_attention, PairFeatures, WordPairHead, WordPairHeadConfig};

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
    /// NER: a softmax over the tags of every word (Peng et al. 2020).
    Token,
    /// NER: a linear-chain CRF over the words' tag scores.
    TokenCrf,
    /// Meng et al.'s classifier of every ordered word pair (dependency arcs, or the entity
    /// pair of a relation instance); see [`WordPairHead`].
    WordPair,
    /// Sentence-pair similarity: `ŷ = w·h^L_CLS + b`, one real number, MSE loss.
    Regression,
    /// Several labels per document: `p_k = σ(W_f h^L_CLS + b_f)_k`, binary cross-entropy,
    /// label k predicted where `p_k > 0.5`.
    Multilabel,
}

impl HeadKind {
    /// Every sentence-level head (one label per instance), in the order of the papers'
    /// tables.
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

    /// Every token-level head (one tag per word).
    pub const TOKEN: [HeadKind; 2] = [HeadKind::Token, HeadKind::TokenCrf];

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
            HeadKind::Token => "token",
            HeadKind::TokenCrf => "token_crf",
            HeadKind::WordPair => "word_pair",
            HeadKind::Regression => "regression",
            HeadKind::Multilabel => "multilabel",
        }
    }

    /// Whether the head tags every word (NER) rather than labelling the instance.
    pub fn is_token(self) -> bool {
        matches!(self, HeadKind::Token | HeadKind::TokenCrf)
    }

    /// Whether the head outputs real scores of [CLS] (`regression`, `multilabel`) rather
    /// than one class of a softmax.
    pub fn is_scoring(self) -> bool {
        matches!(self, HeadKind::Regression | HeadKind::Multilabel)
    }

    /// The task type of the split this head trains on.
    pub fn task(self) -> crate::data::schema::Task {
        use crate::data::schema::Task;
        match self {
            _ if self.is_token() => Task::Ner,
            HeadKind::Regression => Task::Similarity,
            HeadKind::Multilabel => Task::Multilabel,
            _ => Task::Relation,
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
        let every = || {
            HeadKind::ALL.into_iter().chain(HeadKind::TOKEN).chain([
                HeadKind::WordPair,
                HeadKind::Regression,
                HeadKind::Multilabel,
            ])
        };
        every().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = every().map(|k| k.name()).collect();
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
    /// A `kind` head with `num_labels` outputs on an encoder shaped by `encoder` (its `H`,
    /// `L` and `A`); the LSTM hidden size is `H` (768 on BERT-base, as in su2022) and the
    /// dropout 0.1 (BERT's) until the caller sets them.
    pub fn on_encoder(kind: HeadKind, encoder: &super::BertConfig, num_labels: usize) -> Self {
        HeadConfig {
            kind,
            hidden_size: encoder.hidden_size,
            num_layers: encoder.num_hidden_layers,
            num_attention_heads: encoder.num_attention_heads,
            num_labels,
            lstm_hidden: encoder.hidden_size,
            dropout: 0.1,
        }
    }

    /// Dimension of the classifier input `h`.
    pub fn classifier_input_size(&self) -> usize {
        let h = self.hidden_size;
        match self.kind {
            HeadKind::Cls
            | HeadKind::SllAttNocls
            | HeadKind::InterClsAtt
            | HeadKind::Regression
            | HeadKind::Multilabel => h,
            HeadKind::SllLstm => h + self.lstm_hidden,
            HeadKind::SllBilstm => h + 2 * self.lstm_hidden,
            HeadKind::SllAtt => 2 * h,
            HeadKind::SllLstmNocls | HeadKind::InterClsLstm => self.lstm_hidden,
            // C ∈ R^{2M + L·H·2} (Meng et al. eq. 5)
            HeadKind::PairwiseAtt => 2 * h + 2 * self.num_layers * self.num_attention_heads,
            // a token head scores each word's state
            HeadKind::Token | HeadKind::TokenCrf => h,
            // C = T_i ⊕ T_j ⊕ a^{i,j} ⊕ a^{j,i}, as pairwise_att
            HeadKind::WordPair => 2 * h + 2 * self.num_layers * self.num_attention_heads,
        }
    }

    /// Builds the head with freshly initialized parameters.
    pub fn init(&self, device: &Device) -> Result<Head, ModelError> {
        let outputs_needed = match self.kind {
            HeadKind::Regression => 1,
            HeadKind::Multilabel => 1,
            _ => 2,
        };
        if self.kind == HeadKind::Regression && self.num_labels != 1 {
            return Err(ModelError::Invalid(format!(
                "the regression head has 1 output, not {}",
                self.num_labels
            )));
        }
        if self.num_labels < outputs_needed {
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
            HeadKind::Regression => Head::Regression(ClsHead { classifier }),
            HeadKind::Multilabel => Head::Multilabel(ClsHead { classifier }),
            HeadKind::Token | HeadKind::TokenCrf => {
                return Err(ModelError::Invalid(format!(
                    "`{}` tags words; build it with TokenHeadConfig",
                    self.kind
                )))
            }
            HeadKind::WordPair => {
                return Err(ModelError::Invalid(
                    "`word_pair` scores word pairs; build it with WordPairHeadConfig".into(),
                ))
            }
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
    /// `ŷ = w·h^L_CLS + b` (the [`ClsHead`] layer with one output).
    Regression(ClsHead),
    /// `z = W_f h^L_CLS + b_f`, one logit per label (sigmoid in the loss / the threshold).
    Multilabel(ClsHead),
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
            Head::Regression(_) => HeadKind::Regression,
            Head::Multilabel(_) => HeadKind::Multilabel,
        }
    }

    /// Logits (and α where the head has it) for one batch.
    pub fn forward(&self, input: HeadInput) -> Result<HeadOutput, ModelError> {
        check_input(&input)?;
        match self {
            Head::Cls(head) | Head::Regression(head) | Head::Multilabel(head) => {
                Ok(head.forward(input))
            }
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
/// (The `regression` and `multilabel` heads read the same `W_f h + b_f` as a score and as
/// per-label logits of sigmoids.)
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

/// `[B, T]` mask of `h_1..h_N`: true at positions `1..=N_b` (not [CLS], [SEP] or padding).
pub(super) fn word_piece_mask(
    lengths: &[usize],
    tokens: usize,
    device: &Device,
) -> Tensor<2, Bool> {
    let mut values = Vec::with_capacity(lengths.len() * tokens);
    for &n in lengths {
        // n = N + 2: [CLS] at 0, h_1..h_N at 1..=N, [SEP] at N + 1
        values.extend((0..tokens).map(|t| t >= 1 && t + 1 < n));
    }
    Tensor::from_data(TensorData::new(values, [lengths.len(), tokens]), device)
}

/// `h^L_CLS`: the state at position 0, `[B, H]`.
pub(super) fn cls_state(h: Tensor<3>) -> Tensor<2> {
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
