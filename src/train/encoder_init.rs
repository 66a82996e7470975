//! How a training stage's encoder starts: the checkpoint's weights, or BERT's random
//! initialisation in the checkpoint's shape (or the tiny smoke-test shape).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::{BertConfig, BertModel, BertTokenizer, ModelError};

/// How the encoder's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// The checkpoint's weights.
    #[default]
    Pretrained,
    /// Random weights (BERT's initializer) in the checkpoint's shape, or in
    /// [`BertConfig::tiny`] with `tiny: true`.
    Random,
}

/// The encoder as `init` says: the checkpoint in `model_dir`, or random weights in its
/// shape (in [`BertConfig::tiny`] with the tokenizer's vocabulary when `tiny`). Random
/// draws come from the backend's generator: call it under
/// [`with_backend_seed`](crate::train::rng::with_backend_seed).
pub fn load_encoder(
    init: Init,
    tiny: bool,
    model_dir: &Path,
    tokenizer: &BertTokenizer,
    device: &burn::tensor::Device,
) -> Result<(BertModel, BertConfig), ModelError> {
    match init {
        Init::Pretrained => BertModel::load(model_dir, device),
        Init::Random => {
            let config = if tiny {
                BertConfig::tiny(tokenizer.vocab_size())
            } else {
                BertConfig::from_file(&model_dir.join("config.json"))?
            };
            Ok((BertModel::new(&config, device), config))
        }
    }
}
