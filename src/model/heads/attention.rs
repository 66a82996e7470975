//! The additive-attention heads (su2020 III.B.2): `sll_att`, `sll_att_nocls`.

use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use super::super::bert::token_rows;
use super::{cls_state, word_piece_mask, HeadInput, HeadOutput, SoftmaxLayer};
use super::{BERT_INIT_STD, MASKED_SCORE};

/// Additive attention of su2020 III.B / su2022: `[α_i] = softmax(h K)`, `O = Σ_i α_i h_i`,
/// `K ∈ R^{H×1}`. Masked positions get `α_i = 0` exactly.
#[derive(Module, Debug)]
pub struct AdditiveAttention {
    /// `K ∈ R^{H×1}`.
    pub(super) k: Linear,
}

impl AdditiveAttention {
    pub(super) fn new(hidden_size: usize, device: &Device) -> Self {
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

/// `sll_att`, `sll_att_nocls` (su2020 III.B.2): `[α_i] = softmax(h^L K)`, `O = Σ_{i=1}^N α_i h^L_i`;
/// `h = h^L_CLS ⊕ O` or `O`.
#[derive(Module, Debug)]
pub struct SllAttHead {
    pub(super) attention: AdditiveAttention,
    pub(super) with_cls: bool,
    pub(super) classifier: SoftmaxLayer,
}

impl SllAttHead {
    pub(super) fn forward(&self, input: HeadInput) -> HeadOutput {
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
