//! Corpora: formats, the instance schema, splits and folds, tokenization.
//!
//! - [`corpus_spec`]: the YAML params of a `corpus` stage ([`CorpusSpec`]);
//! - [`corpus`]: reading a corpus into [`Instance`]s / [`Sentence`]s ([`corpus::build`]);
//! - [`split`]: standard splits, shipped folds, document-grouped k-fold ([`split::split`]);
//! - [`stats`]: `stats.json` and its table ([`stats_of`]).

pub mod corpus;
pub mod corpus_spec;
pub mod entity;
pub mod formats;
pub mod jsonl;
pub mod schema;
pub mod shuffle;
pub mod split;
pub mod stats;
#[cfg(test)]
mod tests;

pub use corpus::{Corpus, Units};
pub use corpus_spec::CorpusSpec;
pub use schema::{Instance, LabelSet, Sentence, Task};
pub use split::SplitSpec;
pub use stats::{stats_of, Stats};

/// Errors reading or splitting a corpus; they name file:line where there is one.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{file}:{line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A param value that cannot work (found at plan time where possible).
    #[error("param `{param}`: {message}")]
    Param { param: String, message: String },
}

impl DataError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
