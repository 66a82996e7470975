//! Heads over the [CLS] state of every layer (Song et al. 2020, su2020 Table IV):
//! `inter_cls_lstm`, `inter_cls_att`.

use burn::prelude::*;

use super::super::ModelError;
use super::attention::AdditiveAttention;
use super::lstm::Lstm;
use super::{cls_state, HeadInput, HeadOutput, SoftmaxLayer};

/// The sequence `h^1_CLS..h^L_CLS`, `[B, L, H]` (the embedding output `h^0` is left out: its
/// [CLS] state is the same for every input).
pub(super) fn layer_cls_states(hidden_states: &[Tensor<3>]) -> Result<Tensor<3>, ModelError> {
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
    pub(super) lstm: Lstm,
    pub(super) classifier: SoftmaxLayer,
}

impl InterClsLstmHead {
    pub(super) fn forward(&self, input: HeadInput) -> Result<HeadOutput, ModelError> {
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
    pub(super) attention: AdditiveAttention,
    pub(super) classifier: SoftmaxLayer,
}

impl InterClsAttHead {
    pub(super) fn forward(&self, input: HeadInput) -> Result<HeadOutput, ModelError> {
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
