//! Training: the encoder+head model, batching, the one optimization loop with checkpoints
//! ([`fit`], which fine-tuning, multi-task training, pre-training and probing drive through
//! their [`Objective`]s), and inference.

pub mod adamw;
pub mod batching;
pub mod checkpoint;
pub mod classifier;
pub mod clipping;
pub mod concurrent_batches;
pub mod encoder_init;
pub mod fit;
pub mod flat_adamw;
pub mod layer_decay;
pub mod loss_scale;
pub mod multitask;
pub mod param_update;
pub mod predict;
pub mod rng;
pub mod schedule;
pub mod scores;
pub mod split_data;
pub mod tagging;
pub mod word_pair;

use std::path::{Path, PathBuf};

pub use classifier::{Batch, EncodedInstance, SequenceClassifier};
pub use encoder_init::{load_encoder, Init};
pub use fit::{
    fit, fit_scoring_before, Checkpoints, ClassificationObjective, EpochRecord, FitEnv, Fitted,
    Objective, TrainSettings, UpdateRecord,
};
pub use loss_scale::LossScale;
pub use predict::{micro_prf, predict, Prediction};
pub use split_data::{
    read_split, read_tagged_split, split_source, SplitDataError, SplitInstance, SplitSentence,
    SplitSet, SplitSource, TaggedSet,
};
pub use tagging::{predict_tags, TaggingObjective, TokenTagger, WordWindow};

/// Why training or inference failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A checkpoint that cannot be written or read back.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("interrupted")]
    Interrupted,
}

impl TrainError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn checkpoint(path: &Path, message: impl std::fmt::Display) -> Self {
        TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}
