//! `attention.jsonl`, written by `finetune` for `sll_att*` heads: one line per test instance.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::words::{merge_pieces, Word};
use super::AnalysisError;
use crate::data::jsonl;

/// The file name `finetune` writes the test set's α to.
pub const ATTENTION_FILE: &str = "attention.jsonl";

/// One test instance: its word pieces (`[CLS] … [SEP]`, as the tokenizer produced them)
/// and the head's α, one weight per piece (`α = 0` on `[CLS]` and `[SEP]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionRecord {
    pub id: String,
    pub gold: String,
    pub pred: String,
    pub tokens: Vec<String>,
    pub alpha: Vec<f32>,
}

impl AttentionRecord {
    /// Whether the gold label is a relation, i.e. not the `negative` label (every instance
    /// is positive when there is no negative label).
    pub fn is_positive(&self, negative: Option<&str>) -> bool {
        negative != Some(self.gold.as_str())
    }

    /// Whether the model predicted the gold label.
    pub fn is_correct(&self) -> bool {
        self.gold == self.pred
    }

    /// The instance's words with their weights (see [`merge_pieces`]).
    pub fn words(&self) -> Result<Vec<Word>, AnalysisError> {
        if self.alpha.is_empty() {
            return Err(AnalysisError::Instance {
                id: self.id.clone(),
                message: "no attention weights α (not an sll_att head?)".into(),
            });
        }
        merge_pieces(&self.tokens, &self.alpha).map_err(|e| match e {
            AnalysisError::Instance { message, .. } => AnalysisError::Instance {
                id: self.id.clone(),
                message,
            },
            other => other,
        })
    }
}

/// Reads `attention.jsonl` (errors name the file and line).
pub fn read_attention(path: &Path) -> Result<Vec<AttentionRecord>, AnalysisError> {
    Ok(jsonl::read(path)?)
}
