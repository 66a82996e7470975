//! Token heads for NER: a score per tag for every word, read at the word's first word
//! piece (Peng et al. 2020 §2.3, "BERT for NER": a linear layer per token over the last
//! layer), then either a per-word softmax (`token`) or a linear-chain CRF over the words
//! (`token_crf`, the decoder of MTL-LS and Lample et al. 2016).
//!
//! For a sentence of `W` words whose first pieces sit at positions `f_1..f_W`:
//!
//! ```text
//! E[w, ·] = W_t dropout(h^L_{f_w}) + b_t          E ∈ R^{W×K}
//! token:      loss = −(1/Σ_b W_b) Σ_b Σ_w log softmax(E_b[w])[y_w],   ŷ_w = argmax E[w]
//! token_crf:  loss = (1/B) Σ_b −log p(y_b | E_b),                     ŷ = Viterbi(E)
//! ```
//!
//! The other pieces of a word get no label and no loss, as in BERT's own NER recipe.

use burn::module::Initializer;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::{HeadKind, BERT_INIT_STD};
use crate::model::crf::{CrfConstraints, LinearChainCrf};
use crate::model::ModelError;

/// `crf_constraints:` of a `token_crf` head: which tag transitions the CRF may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionConstraints {
    /// Every transition is learned.
    #[default]
    None,
    /// IOB2: `O → I-X` and `B-Y / I-Y → I-X` (Y ≠ X) are forbidden.
    Bio,
}

impl TransitionConstraints {
    /// `none`, the default (left out of cache keys).
    pub fn is_none(&self) -> bool {
        *self == TransitionConstraints::None
    }
}

/// Sizes and options a token head is built for.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenHeadConfig {
    /// `token` or `token_crf`.
    pub kind: HeadKind,
    /// `H`: encoder hidden size.
    pub hidden_size: usize,
    /// The tag names (`K` of them), in label order.
    pub tags: Vec<String>,
    /// Dropout on each word's state before `W_t`.
    pub dropout: f64,
    /// With `token_crf`: the transitions the CRF may take.
    pub constraints: TransitionConstraints,
}

impl TokenHeadConfig {
    /// Builds the head: `W_t` from BERT's initializer, a CRF (zero scores) for `token_crf`.
    pub fn init(&self, device: &Device) -> Result<TokenHead, ModelError> {
        if !self.kind.is_token() {
            return Err(ModelError::Invalid(format!(
                "`{}` is not a token head (token, token_crf)",
                self.kind
            )));
        }
        if self.tags.len() < 2 {
            return Err(ModelError::Invalid(format!(
                "a token head needs at least 2 tags, got {}",
                self.tags.len()
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Invalid(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        let crf = match self.kind {
            HeadKind::TokenCrf => {
                let crf = LinearChainCrf::new(self.tags.len(), device);
                Some(if self.constraints == TransitionConstraints::Bio {
                    crf.with_constraints(CrfConstraints::Bio {
                        tags: self.tags.clone(),
                    })?
                } else {
                    crf
                })
            }
            _ => None,
        };
        Ok(TokenHead {
            dropout: DropoutConfig::new(self.dropout).init(),
            w_t: LinearConfig::new(self.hidden_size, self.tags.len())
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: BERT_INIT_STD,
                })
                .init(device),
            crf,
        })
    }
}

/// Where each word starts in a padded batch of `B` sequences of `T` pieces.
#[derive(Debug, Clone)]
pub struct WordStarts {
    /// `[B·W]`: `b·T + f_w` for word `w` of sequence `b`, padding rows pointing at `b·T`.
    pub flat_index: Tensor<1, Int>,
    /// `W`: the most words of any sequence in the batch.
    pub width: usize,
    /// `W_b`: words of each sequence (each ≥ 1).
    pub counts: Vec<usize>,
}

impl WordStarts {
    /// From each sequence's first-piece positions, for sequences padded to `tokens` pieces.
    pub fn new(starts: &[&[usize]], tokens: usize, device: &Device) -> Self {
        let width = starts.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut flat = Vec::with_capacity(starts.len() * width);
        for (b, s) in starts.iter().enumerate() {
            let row = (b * tokens) as i64;
            flat.extend(s.iter().map(|&f| row + f as i64));
            flat.extend(std::iter::repeat_n(row, width - s.len()));
        }
        WordStarts {
            flat_index: Tensor::from_data(TensorData::new(flat, [starts.len() * width]), device),
            width,
            counts: starts.iter().map(|s| s.len()).collect(),
        }
    }

    /// `[B, W]` mask, 1.0 at real words.
    fn mask(&self, device: &Device) -> Tensor<2> {
        let values: Vec<f32> = self
            .counts
            .iter()
            .flat_map(|&n| (0..self.width).map(move |w| if w < n { 1.0 } else { 0.0 }))
            .collect();
        Tensor::from_data(
            TensorData::new(values, [self.counts.len(), self.width]),
            device,
        )
    }
}

/// A token head; build one with [`TokenHeadConfig::init`].
#[derive(Module, Debug)]
pub struct TokenHead {
    dropout: Dropout,
    /// `W_t ∈ R^{K×H}`, `b_t ∈ R^K`.
    w_t: Linear,
    /// The CRF of `token_crf`.
    crf: Option<LinearChainCrf>,
}

impl TokenHead {
    /// Which head this is.
    pub fn kind(&self) -> HeadKind {
        if self.crf.is_some() {
            HeadKind::TokenCrf
        } else {
            HeadKind::Token
        }
    }

    /// `E`: `[B, W, K]` tag scores of every word, from the last layer `h^L: [B, T, H]`.
    pub fn emissions(&self, h: Tensor<3>, words: &WordStarts) -> Tensor<3> {
        let [batch, tokens, hidden] = h.dims();
        let h_f = h
            .reshape([batch * tokens, hidden])
            .select(0, words.flat_index.clone());
        let e = self
            .w_t
            .forward(crate::model::fused::dropout(&self.dropout, h_f));
        let [_, k] = e.dims();
        e.reshape([batch, words.width, k])
    }

    /// The training loss of gold tags `y` (one index per real word of each sequence).
    pub fn loss(&self, emissions: Tensor<3>, words: &WordStarts, y: &[Vec<usize>]) -> Tensor<1> {
        match &self.crf {
            Some(crf) => crf.neg_log_likelihood(emissions, y, &words.counts),
            None => {
                let [batch, width, k] = emissions.dims();
                let device = emissions.device();
                let gold: Vec<i64> = y
                    .iter()
                    .flat_map(|tags| (0..width).map(move |w| tags.get(w).map_or(0, |&t| t as i64)))
                    .collect();
                let gold =
                    Tensor::<2, Int>::from_data(TensorData::new(gold, [batch * width, 1]), &device);
                let log_p = log_softmax(emissions.reshape([batch * width, k]), 1);
                let picked = log_p.gather(1, gold).reshape([batch, width]);
                let real: usize = words.counts.iter().sum();
                (picked * words.mask(&device)).sum().neg() / real.max(1) as f32
            }
        }
    }

    /// The predicted tag of every real word of each sequence.
    pub fn decode(&self, emissions: Tensor<3>, words: &WordStarts) -> Vec<Vec<usize>> {
        match &self.crf {
            Some(crf) => crf.viterbi(emissions, &words.counts),
            None => {
                let [batch, width, _] = emissions.dims();
                let best: Vec<i64> = emissions.argmax(2).into_data().iter::<i64>().collect();
                (0..batch)
                    .map(|b| {
                        best[b * width..b * width + words.counts[b]]
                            .iter()
                            .map(|&t| t as usize)
                            .collect()
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    /// A `token` head whose `W_t` is the 2×2 identity and `b_t = 0`: `E` is the gathered
    /// states themselves.
    fn identity_head(device: &Device) -> TokenHead {
        let mut head = TokenHeadConfig {
            kind: HeadKind::Token,
            hidden_size: 2,
            tags: vec!["O".into(), "B-X".into()],
            dropout: 0.0,
            constraints: TransitionConstraints::None,
        }
        .init(device)
        .unwrap_or_else(|e| panic!("{e}"));
        head.w_t.weight =
            Param::from_tensor(Tensor::from_data([[1.0f32, 0.0], [0.0, 1.0]], device));
        head.w_t.bias = Some(Param::from_tensor(Tensor::zeros([2], device)));
        head
    }

    fn read(t: Tensor<3>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    #[test]
    fn emissions_read_each_words_first_piece() {
        let device = Device::default();
        let head = identity_head(&device);
        // h[b, t] = (10 b + t, −(10 b + t)), 2 sequences of 4 pieces
        let values: Vec<f32> = (0..2)
            .flat_map(|b| (0..4).flat_map(move |t| [(10 * b + t) as f32, -((10 * b + t) as f32)]))
            .collect();
        let h = Tensor::<3>::from_data(TensorData::new(values, [2, 4, 2]), &device);
        let words = WordStarts::new(&[&[1, 2], &[1]], 4, &device);
        assert_eq!((words.width, words.counts.clone()), (2, vec![2, 1]));
        let e = head.emissions(h, &words);
        assert_eq!(e.dims(), [2, 2, 2]);
        // sequence 1's padding row reads its piece 0 (masked later)
        assert_eq!(
            read(e),
            vec![1.0, -1.0, 2.0, -2.0, 11.0, -11.0, 10.0, -10.0]
        );
    }

    #[test]
    fn token_loss_is_the_mean_word_cross_entropy_without_padding() {
        let device = Device::default();
        let head = identity_head(&device);
        let e = Tensor::<3>::from_data(
            [[[2.0f32, 0.0], [0.0, 1.0]], [[0.5, 0.5], [9.0, -9.0]]],
            &device,
        );
        let words = WordStarts::new(&[&[1, 2], &[1]], 4, &device);
        let y = vec![vec![0, 1], vec![1]];
        let loss: f32 = head.loss(e.clone(), &words, &y).into_scalar();
        let nll = |s: [f32; 2], k: usize| -(s[k].exp() / (s[0].exp() + s[1].exp())).ln();
        let expected = (nll([2.0, 0.0], 0) + nll([0.0, 1.0], 1) + nll([0.5, 0.5], 1)) / 3.0;
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
        // the padded word's scores (9, −9) neither enter the loss nor the prediction
        assert_eq!(head.decode(e, &words), vec![vec![0, 1], vec![0]]);
    }
}
