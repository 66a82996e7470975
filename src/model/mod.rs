//! burn modules: BERT encoder, fine-tuning heads, CRF, MLM head, probing classifier.
//!
//! The encoder side lives in [`bert`] (the network), [`checkpoint`] (Hugging Face
//! directory layout on disk), [`tokenizer`] (WordPiece), [`vocab`] (added tokens' embedding
//! rows) and [`device`] (backend choice).

pub mod arborescence;
pub mod bert;
pub mod checkpoint;
pub mod crf;
pub mod device;
pub mod fused;
pub mod heads;
pub mod precision;
pub mod slicing;
pub mod throughput;
pub mod tokenizer;
pub mod vocab;

use std::path::{Path, PathBuf};

pub use bert::{BertConfig, BertInput, BertModel, BertOutput, HiddenAct};
pub use device::{backend_name, parse_device, DeviceSpec};
pub use precision::Precision;
pub use throughput::{bench_throughput, Throughput, ThroughputSettings};
pub use tokenizer::{BertTokenizer, Encoding};

/// Errors loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `config.json` is unreadable or describes something this encoder does not implement.
    #[error("{path}: bad BERT config: {message}")]
    Config { path: PathBuf, message: String },
    /// The weights file is unreadable or does not fit the configured architecture.
    #[error("{path}: cannot load weights: {message}")]
    Weights { path: PathBuf, message: String },
    /// Writing a checkpoint failed.
    #[error("{path}: cannot save weights: {message}")]
    Save { path: PathBuf, message: String },
    /// The tokenizer files are unreadable, or tokenization failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A device string that names no known backend, or one not compiled in.
    #[error("device `{device}`: {message}")]
    Device { device: String, message: String },
}

impl ModelError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What `pipe encode --model SOURCE --json TEXT` prints: the word pieces of `text`
/// (with `[CLS]` and `[SEP]`), the last layer's hidden states (tokens × hidden) and the
/// number of layers, computed on the CPU backend from the checkpoint in `model_dir`.
pub fn encode_json(
    model_dir: &Path,
    text: &str,
    device: DeviceSpec,
) -> Result<serde_json::Value, ModelError> {
    let device = device.device()?;
    let tokenizer = BertTokenizer::from_dir(model_dir)?;
    let (model, config) = BertModel::load(model_dir, &device)?;
    let encoding = tokenizer.encode(text, config.max_position_embeddings)?;
    let input =
        BertInput::from_encodings(std::slice::from_ref(&encoding), tokenizer.pad_id(), &device)?;
    let output = model.forward(input.input_ids, input.attention_mask, false);
    let [_, tokens, hidden] = output.last_hidden_state.dims();
    let values = output
        .last_hidden_state
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Invalid(format!("reading hidden states: {e:?}")))?;
    let rows: Vec<&[f32]> = values.chunks(hidden).take(tokens).collect();
    Ok(serde_json::json!({
        "tokens": encoding.tokens,
        "last_hidden_state": rows,
        "layers": config.num_hidden_layers,
    }))
}
