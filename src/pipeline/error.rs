//! Errors in a pipeline file, each pointing at file:line:col.

use std::path::PathBuf;

/// A mistake in a pipeline file (or one it includes), with where it is (line 0: the file
/// as a whole, e.g. one that cannot be read, shown without a line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}", .file.display(), Position(*.line, *.col), .message)]
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

/// `:line:col`, or nothing for line 0 (the whole file).
struct Position(usize, usize);

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position(0, _) => Ok(()),
            Position(line, col) => write!(f, ":{line}:{col}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PipelineError;

    #[test]
    fn a_whole_file_error_has_no_line() {
        let at = PipelineError::new("p.yaml", 3, 5, "bad");
        assert_eq!(at.to_string(), "p.yaml:3:5: bad");
        let whole = PipelineError::new("p.yaml", 0, 0, "cannot read");
        assert_eq!(whole.to_string(), "p.yaml: cannot read");
    }
}
