//! The pair-wise attention head of Meng et al. (2019): `pairwise_att`.

use burn::prelude::*;

use super::super::ModelError;
use super::lstm::select_steps;
use super::{HeadInput, HeadOutput, SoftmaxLayer};

/// `pairwise_att` (Meng et al. 3.1–3.2): `C = T_i ∘ T_j ∘ a^{i,j} ∘ a^{j,i}` (eq. 5), with
/// `a^{i,j} = (z^{1,1}_{i,j}, …, z^{L,A}_{i,j})` (eq. 4), classified by `W ∈ R^{K×(2M+2LA)}`.
#[derive(Module, Debug)]
pub struct PairwiseAttHead {
    pub(super) classifier: SoftmaxLayer,
}

impl PairwiseAttHead {
    pub(super) fn forward(&self, input: HeadInput) -> Result<HeadOutput, ModelError> {
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
