//! Errors in a pipeline file, each pointing at file:line:col.

use std::path::PathBuf;

/// A mistake in a pipeline file (or one it includes), with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {}", .file.display(), .line, .col, .message)]
pub struct PipelineError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl PipelineError {
    pub fn new(
        file: impl Into<PathBuf>,
        line: usize,
        col: usize,
        message: impl Into<String>,
    ) -> Self {
        PipelineError {
            file: file.into(),
            line,
            col,
            message: message.into(),
        }
    }
}
