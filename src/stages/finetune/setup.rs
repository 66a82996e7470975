//! What every `finetune` head does before it trains: read the train, dev and test splits
//! of its `data` input, and build its model on the checkpoint's encoder under the run's
//! seed.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;

use super::FinetuneParams;
use crate::model::{BertConfig, BertModel, BertTokenizer, ModelError};
use crate::stages::training_checks::check_max_len_fits;
use crate::stages::StageError;
use crate::train::classifier::initialize_params;
use crate::train::load_encoder;
use crate::train::rng::with_backend_seed;

/// The splits a fine-tuning reads: it trains on `train`, scores each epoch on `dev` (when
/// the split has one) and predicts `test`.
pub(super) struct Splits<S> {
    pub train: S,
    pub dev: Option<S>,
    pub test: S,
}

impl<S> Splits<S> {
    /// `train` (at most `max_train` units), `dev` and `test` (at most `max_eval`), each as
    /// `read` makes it from `data_dir` (`None` when its file is not there).
    pub fn read<E>(
        data_dir: &Path,
        p: &FinetuneParams,
        read: impl Fn(&str, Option<usize>) -> Result<Option<S>, E>,
    ) -> Result<Self, StageError>
    where
        StageError: From<E>,
    {
        let required = |name: &str, set: Option<S>| {
            set.ok_or_else(|| StageError::Input {
                name: "data".into(),
                message: format!("no {name}.jsonl in {}", data_dir.display()),
            })
        };
        Ok(Splits {
            train: required("train", read("train", p.max_train)?)?,
            dev: read("dev", p.max_eval)?,
            test: required("test", read("test", p.max_eval)?)?,
        })
    }
}

/// A model built by `attach` on the encoder `p.init` names (the checkpoint in
/// `model_dir`, or a random one), with every parameter drawn from the backend's generator
/// seeded with `p.seed` (so a seed names one initialisation), and `p.max_len` checked
/// against its position embeddings. `attach` adds the head and may change the encoder
/// and its config (grown word embeddings); returns the model, the config and the head's
/// description.
pub(super) fn build_model<M: Module, H>(
    p: &FinetuneParams,
    model_dir: &Path,
    tokenizer: &BertTokenizer,
    device: &Device,
    attach: impl FnOnce(BertModel, &mut BertConfig) -> Result<(M, H), ModelError>,
) -> Result<(M, BertConfig, H), StageError> {
    let (model, config, head) = with_backend_seed(device, p.seed, || {
        let (encoder, mut config) = load_encoder(p.init, p.tiny, model_dir, tokenizer, device)?;
        let (model, head) = attach(encoder, &mut config)?;
        initialize_params(&model);
        Ok::<_, ModelError>((model, config, head))
    })?;
    check_max_len_fits(p.max_len, config.max_position_embeddings)?;
    Ok((model, config, head))
}
