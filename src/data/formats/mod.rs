//! Corpus file formats. Each reader turns one file into raw records (relation) or
//! sentences (NER); a malformed line becomes an `Err` naming file:line, so the caller can
//! stop or skip-and-count it (`on_error`).

pub mod conll;
pub mod conllu;
pub mod ddi_xml;
pub mod documents;
pub mod json;
pub mod pairs;
pub mod rows;
pub mod semeval;
pub mod tsv;

use std::collections::BTreeMap;

use super::corpus_spec::{EntityStyle, Layout};
use super::DataError;

/// One relation record as read, before label mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// 1-based line (or record) number in the file, for messages and generated ids.
    pub line: usize,
    pub id: Option<String>,
    pub doc_id: Option<String>,
    /// Sentence with the two mentions already replaced by tags.
    pub text: String,
    /// Label as written in the file (a name or an id).
    pub label: String,
    pub split: Option<String>,
    pub fold: Option<u32>,
}

/// What a relation reader returns: records or per-line errors, plus counted warnings.
#[derive(Debug, Default)]
pub struct ReadOutput {
    pub records: Vec<Result<RawRecord, DataError>>,
    pub warnings: BTreeMap<String, u64>,
}

/// How mentions are turned into tags while reading.
#[derive(Debug, Clone)]
pub struct Tagging {
    pub style: EntityStyle,
    /// Default tag for span-marked mentions.
    pub tag: String,
    /// Explicit overlap tag, if the user gave one.
    pub overlap_tag: Option<String>,
}

/// Everything a relation reader needs besides the file.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    pub layout: Layout,
    pub tagging: Tagging,
}

/// A `file:line: message` error.
/// Why a line holding a NUL byte is refused (no corpus text has one; a binary or damaged
/// file does, and it would pass into the tokenizer unseen).
pub const NUL_IN_TEXT: &str = "a NUL byte in the line (a binary or damaged file?)";

pub fn line_error(file: &str, line: usize, message: impl Into<String>) -> DataError {
    DataError::Line {
        file: file.to_string(),
        line,
        message: message.into(),
    }
}

/// Parses a fold value (`3`, `"3"`).
pub fn parse_fold(raw: &str) -> Result<u32, String> {
    raw.trim()
        .parse::<u32>()
        .map_err(|_| format!("fold `{raw}` is not a non-negative integer"))
}

/// Checks a split value.
pub fn parse_split(raw: &str) -> Result<String, String> {
    if super::corpus_spec::SPLITS.contains(&raw) {
        Ok(raw.to_string())
    } else {
        Err(format!("split `{raw}` is not one of train, dev, test"))
    }
}
