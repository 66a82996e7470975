//! Maps YAML key paths (`stages.train.params.lr`) to line:col, so that errors found after
//! parsing (unknown kind, cycle, missing input) still point into the file.
//!
//! serde_yaml gives positions only for syntax and schema errors, so this scans the block
//! structure of the text: indentation defines nesting. Flow-style maps are located at
//! their parent key, which is still the right line. Each file is scanned once, when it is
//! read ([`super::load`]); every later lookup is one hash-map probe per path prefix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Key path -> (line, col), both 1-based.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    pub file: PathBuf,
    positions: HashMap<Vec<String>, (usize, usize)>,
    /// Keys written a second time under the same parent: the path and the second position.
    repeated: Vec<(Vec<String>, (usize, usize))>,
}

/// A value with the place it was written.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

/// The key at the start of a block-style mapping line, unquoted.
fn leading_key(rest: &str) -> Option<&str> {
    if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = rest[1..].find(q)? + 1;
        let after = rest[end + 1..].trim_start();
        return after.starts_with(':').then(|| &rest[1..end]);
    }
    let colon = rest.find(':')?;
    let after = &rest[colon + 1..];
    if !(after.is_empty() || after.starts_with(' ') || after.starts_with('\t')) {
        return None;
    }
    let key = rest[..colon].trim_end();
    (!key.is_empty() && !key.contains(' ') && !key.starts_with('{') && !key.starts_with('['))
        .then_some(key)
}

impl SourceMap {
    /// Scans `text` (the contents of `file`).
    pub fn scan(file: &Path, text: &str) -> Self {
        let mut positions = HashMap::new();
        let mut repeated = Vec::new();
        let mut stack: Vec<(usize, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                continue;
            }
            let mut indent = raw.len() - trimmed.len();
            let mut rest = trimmed;
            // `- key: value` starts a mapping inside a list item.
            while let Some(item) = rest.strip_prefix("- ") {
                indent += 2;
                rest = item.trim_start();
            }
            while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
                stack.pop();
            }
            if let Some(key) = leading_key(rest) {
                let mut path: Vec<String> = stack.iter().map(|(_, k)| k.clone()).collect();
                path.push(key.to_string());
                let at = (i + 1, indent + 1);
                match positions.entry(path) {
                    std::collections::hash_map::Entry::Occupied(seen) => {
                        repeated.push((seen.key().clone(), at));
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(at);
                    }
                }
                stack.push((indent, key.to_string()));
            }
        }
        SourceMap {
            file: file.to_path_buf(),
            positions,
            repeated,
        }
    }

    /// The first name written twice directly under one of `sections` (e.g. a second stage
    /// `a:` under `stages:`), as an error at the second one. Only names one level down are
    /// checked: deeper, a block scalar's lines (a shell script) could look like keys.
    pub fn repeated_name(&self, sections: &[&str]) -> Option<super::PipelineError> {
        let (path, (line, col)) = self
            .repeated
            .iter()
            .find(|(path, _)| path.len() == 2 && sections.contains(&path[0].as_str()))?;
        let (first, _) = self.positions.get(path).copied().unwrap_or((0, 0));
        Some(super::PipelineError::new(
            &self.file,
            *line,
            *col,
            format!(
                "{}: `{}` is defined twice (first at line {first}; the second would silently \
                 replace it)",
                path[0], path[1]
            ),
        ))
    }

    /// Position of `path`, or of its nearest located ancestor, or 1:1.
    pub fn locate(&self, path: &[&str]) -> (usize, usize) {
        let mut owned: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        while !owned.is_empty() {
            if let Some(pos) = self.positions.get(&owned) {
                return *pos;
            }
            owned.pop();
        }
        (1, 1)
    }

    /// Whether exactly `path` was found.
    pub fn contains(&self, path: &[&str]) -> bool {
        let owned: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.positions.contains_key(&owned)
    }

    /// A [`super::PipelineError`] at `path`.
    pub fn error(&self, path: &[&str], message: impl Into<String>) -> super::PipelineError {
        let (line, col) = self.locate(path);
        super::PipelineError::new(&self.file, line, col, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_with_line_and_column() {
        let text = "stages:\n  train:\n    kind: finetune\n    params:\n      lr: 2e-5\n  eval:\n    kind: evaluate\n";
        let sm = SourceMap::scan(Path::new("p.yaml"), text);
        assert_eq!(sm.locate(&["stages", "train", "params", "lr"]), (5, 7));
        assert_eq!(sm.locate(&["stages", "eval", "kind"]), (7, 5));
        // Unknown leaf falls back to its parent.
        assert_eq!(sm.locate(&["stages", "eval", "params", "x"]), (6, 3));
    }

    #[test]
    fn quoted_keys_and_list_items() {
        let text =
            "profiles:\n  smoke:\n    \"kind:finetune\":\n      epochs: 1\ninclude:\n  - a.yaml\n";
        let sm = SourceMap::scan(Path::new("p.yaml"), text);
        assert_eq!(
            sm.locate(&["profiles", "smoke", "kind:finetune", "epochs"]),
            (4, 7)
        );
        assert_eq!(sm.locate(&["include"]), (5, 1));
    }
}
