//! The masked-language-model head of BERT (Hugging Face's `BertLMPredictionHead`) and the
//! encoder with it:
//!
//! ```text
//! t = LN(act(h W_t + b_t))          (transform: dense, activation, LayerNorm)
//! logits = t W_wordᵀ + b            (decoder tied to the word embeddings, own bias)
//! ```
//!
//! Its weights come from a checkpoint's `cls.predictions.*` tensors when it has them
//! (BERT, BioBERT, PubMedBERT checkpoints do), else are initialised as BERT's.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::store::{
    FloatCastAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore,
};
use burn::tensor::activation::{gelu, gelu_approximate, relu};
use burn::tensor::{DType, Device, Int, Tensor};

use super::nsp_head::NspHead;
use crate::model::checkpoint::WEIGHT_FILES;
use crate::model::{BertConfig, BertModel, HiddenAct, ModelError};

/// Checkpoint keys of the head -> its module paths.
const HEAD_RENAMES: [(&str, &str); 2] = [
    (r"^cls\.predictions\.", ""),
    (r"(^|\.)LayerNorm\.", "${1}layer_norm."),
];

/// The transform before the decoder.
#[derive(Module, Debug)]
pub struct MlmTransform {
    /// W_t `[d, d]`.
    pub dense: Linear,
    /// The configured activation (GELU for BERT).
    #[module(skip)]
    pub act: HiddenAct,
    pub layer_norm: LayerNorm,
}

/// The MLM head; the decoder weight is the encoder's word-embedding table.
#[derive(Module, Debug)]
pub struct MlmHead {
    pub transform: MlmTransform,
    /// b `[vocab]`.
    pub bias: Param<Tensor<1>>,
}

impl MlmHead {
    /// BERT's initialisation: W_t ~ N(0, initializer_range²), biases 0, γ = 1, β = 0.
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        let d = config.hidden_size;
        MlmHead {
            transform: MlmTransform {
                dense: LinearConfig::new(d, d)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: config.initializer_range,
                    })
                    .init(device),
                act: config.hidden_act,
                layer_norm: LayerNormConfig::new(d)
                    .with_epsilon(config.layer_norm_eps)
                    .init(device),
            },
            bias: Param::from_tensor(Tensor::zeros([config.vocab_size], device)),
        }
    }

    /// Logits `[M, vocab]` for hidden states `h: [M, d]`, with `word_embeddings: [vocab, d]`.
    pub fn forward(&self, h: Tensor<2>, word_embeddings: Tensor<2>) -> Tensor<2> {
        let t = self.transform.dense.forward(h);
        let t = match self.transform.act {
            HiddenAct::Gelu => gelu(t),
            HiddenAct::GeluTanh => gelu_approximate(t),
            HiddenAct::Relu => relu(t),
        };
        let t = self.transform.layer_norm.forward(t);
        t.matmul(word_embeddings.transpose()) + self.bias.val().unsqueeze::<2>()
    }

    /// Fills the head from `cls.predictions.*` in the weights file of `dir`. Returns
    /// whether the checkpoint had them (`false`: the head is left as it was); a checkpoint
    /// with only some of them is an error.
    pub fn load_pretrained(&mut self, dir: &Path) -> Result<bool, ModelError> {
        load_head(self, dir, &HEAD_RENAMES, "the MLM head")
    }
}

/// Fills `head` from the tensors of the weights file in `dir` that `renames` map onto its
/// module paths. `Ok(false)`: the file has none of them (or there is no file) and the head
/// is left as it was; a file with only some of them is an error naming `what`.
pub(super) fn load_head<M: ModuleSnapshot>(
    head: &mut M,
    dir: &Path,
    renames: &[(&str, &str)],
    what: &str,
) -> Result<bool, ModelError> {
    let Some(path) = WEIGHT_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
    else {
        return Ok(false);
    };
    let remap = KeyRemapper::from_patterns(renames.to_vec()).unwrap_or_default();
    let fail = |message: String| ModelError::Weights {
        path: path.clone(),
        message,
    };
    let result = if path.extension().is_some_and(|e| e == "safetensors") {
        let adapter = PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32));
        let mut store = SafetensorsStore::from_file(&path)
            .remap(remap)
            .with_from_adapter(adapter)
            .allow_partial(true);
        head.load_from(&mut store)
            .map_err(|e| fail(e.to_string()))?
    } else {
        let mut store = PytorchStore::from_file(&path)
            .remap(remap)
            .map_indices_contiguous(false)
            .allow_partial(true);
        head.load_from(&mut store)
            .map_err(|e| fail(e.to_string()))?
    };
    if !result.errors.is_empty() {
        return Err(fail(result.to_string()));
    }
    match (result.applied.is_empty(), result.missing.is_empty()) {
        (true, _) => Ok(false),
        (false, true) => Ok(true),
        (false, false) => Err(fail(format!("{what} is only partly there: {result}"))),
    }
}

/// The encoder with its MLM head and, when next-sentence prediction is on, the NSP head.
#[derive(Module, Debug)]
pub struct MaskedLm {
    pub encoder: BertModel,
    pub head: MlmHead,
    pub nsp: Option<NspHead>,
}

/// What [`MaskedLm::forward`] predicts.
pub struct PretrainingLogits {
    /// `[M, vocab]` at the predicted positions.
    pub mlm: Tensor<2>,
    /// `[B, 2]` (is next, not next) when the model has an NSP head.
    pub nsp: Option<Tensor<2>>,
}

impl MaskedLm {
    /// MLM logits at `positions` (flat indices `b·T + t` into the padded batch `[B, T]`):
    /// only the predicted positions go through the head; NSP logits from `[CLS]`.
    /// `token_type_ids` `None` means segment 0 everywhere.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        attention_mask: Tensor<2, Int>,
        positions: Tensor<1, Int>,
    ) -> PretrainingLogits {
        let [b, t] = input_ids.dims();
        let h = self
            .encoder
            .forward_with_token_types(input_ids, token_type_ids, attention_mask, false)
            .last_hidden_state;
        let d = h.dims()[2];
        let nsp = self.nsp.as_ref().map(|head| {
            let h_cls = h.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
            head.forward(h_cls)
        });
        let picked = h.reshape([b * t, d]).select(0, positions);
        let table = self.encoder.embeddings.word_embeddings.weight.val();
        PretrainingLogits {
            mlm: self.head.forward(picked, table),
            nsp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_patterns_compile() {
        assert!(KeyRemapper::from_patterns(HEAD_RENAMES.to_vec()).is_ok());
    }
}
