//! Maps YAML key paths (`stages.train.params.lr`) to line:col, so that errors found after
//! parsing (unknown kind, cycle, missing input) still point into the file.
//!
//! serde_yaml gives positions only for syntax and schema errors, so this scans the block
//! structure of the text: indentation defines nesting. Flow-style maps are located at
//! their parent key, which is still the right line. A file's top two levels are scanned
//! when it is read ([`super::load`]), the rest at most once more, at the first error that
//! points below them; every lookup is one hash-map probe per path prefix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Key path -> (line, col), both 1-based.
///
/// A path is kept as a 128-bit hash of its keys, not as the keys themselves: a file of
/// 100,000 stages has about 700,000 keys, and a `Vec<String>` each made scanning and
/// freeing the map a fifth of `pipe plan` (#27). Two different paths share a hash with
/// odds of about 2^-100 at that size.
///
/// Only the top two levels (`stages`, `stages.train`: what a load looks up for every
/// stage) are located when the file is read; the deeper keys, wanted only for an error's
/// position, are scanned from the kept text at the first such lookup. Scanned eagerly,
/// they were 26 MB of a 100,000-stage file's load, twice the file (#27).
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    pub file: PathBuf,
    text: Box<str>,
    /// The keys of the top two levels.
    shallow: HashMap<PathHash, (u32, u32)>,
    /// Every key, scanned at the first lookup below the top two levels.
    deep: OnceLock<HashMap<PathHash, (u32, u32)>>,
    /// Names written a second time directly under a top-level key (`stages: {a, a}`):
    /// section, name, the first line and the second position.
    repeated: Vec<RepeatedName>,
}

/// Keys this many levels down, or fewer, are located when a file is read.
const SHALLOW_DEPTH: usize = 2;

#[derive(Debug, Clone)]
struct RepeatedName {
    section: String,
    name: String,
    first_line: u32,
    at: (u32, u32),
}

/// The hash of a key path, built one key at a time (a path's hash from its parent's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct PathHash(u64, u64);

impl PathHash {
    /// The path `self` followed by `key`.
    fn child(self, key: &str) -> PathHash {
        use std::hash::{Hash, Hasher};
        let half = |salt: u64, parent: u64| {
            // `DefaultHasher::new()` has fixed keys: the same hash in every process
            let mut h = std::hash::DefaultHasher::new();
            h.write_u64(salt);
            h.write_u64(parent);
            key.hash(&mut h);
            h.finish()
        };
        PathHash(
            half(0x9e37_79b9_7f4a_7c15, self.0),
            half(0x6a09_e667_f3bc_c909, self.1),
        )
    }

    fn of(path: &[&str]) -> PathHash {
        path.iter().fold(PathHash::default(), |h, k| h.child(k))
    }
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
pub(super) fn leading_key(rest: &str) -> Option<&str> {
    if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = rest[1..].find(q)? + 1;
        let after = rest[end + 1..].trim_start();
        return after.starts_with(':').then(|| &rest[1..end]);
    }
    // a byte search: `str::find(char)` costs a call per candidate, a tenth of the scan
    let colon = rest.bytes().position(|b| b == b':')?;
    let after = &rest[colon + 1..];
    if !(after.is_empty() || after.starts_with(' ') || after.starts_with('\t')) {
        return None;
    }
    let key = rest[..colon].trim_end();
    (!key.is_empty() && !key.contains(' ') && !key.starts_with('{') && !key.starts_with('['))
        .then_some(key)
}

impl SourceMap {
    /// Scans `text` (the contents of `file`), which the map keeps ([`SourceMap::text`]).
    pub fn scan(file: &Path, text: impl Into<Box<str>>) -> Self {
        let text: Box<str> = text.into();
        let mut repeated = Vec::new();
        let shallow = scan_positions(&text, SHALLOW_DEPTH, Some(&mut repeated));
        SourceMap {
            file: file.to_path_buf(),
            text,
            shallow,
            deep: OnceLock::new(),
            repeated,
        }
    }

    /// The text the positions are of.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The positions of keys `depth` levels down: the top levels' as scanned, the deeper
    /// ones scanned now the first time.
    fn positions(&self, depth: usize) -> &HashMap<PathHash, (u32, u32)> {
        if depth <= SHALLOW_DEPTH {
            return &self.shallow;
        }
        self.deep
            .get_or_init(|| scan_positions(&self.text, usize::MAX, None))
    }

    /// The first name written twice directly under one of `sections` (e.g. a second stage
    /// `a:` under `stages:`), as an error at the second one. Only names one level down are
    /// checked: deeper, a block scalar's lines (a shell script) could look like keys.
    pub fn repeated_name(&self, sections: &[&str]) -> Option<super::PipelineError> {
        let r = self
            .repeated
            .iter()
            .find(|r| sections.contains(&r.section.as_str()))?;
        Some(super::PipelineError::new(
            &self.file,
            r.at.0 as usize,
            r.at.1 as usize,
            format!(
                "{}: `{}` is defined twice (first at line {}; the second would silently \
                 replace it)",
                r.section, r.name, r.first_line
            ),
        ))
    }

    /// Position of `path`, or of its nearest located ancestor, or 1:1.
    pub fn locate(&self, path: &[&str]) -> (usize, usize) {
        let positions = self.positions(path.len());
        let mut found = (1, 1);
        let mut hash = PathHash::default();
        for key in path {
            hash = hash.child(key);
            match positions.get(&hash) {
                Some(&(line, col)) => found = (line as usize, col as usize),
                // keys are only located below a located parent
                None => break,
            }
        }
        found
    }

    /// Whether exactly `path` was found.
    pub fn contains(&self, path: &[&str]) -> bool {
        self.positions(path.len()).contains_key(&PathHash::of(path))
    }

    /// A [`super::PipelineError`] at `path`.
    pub fn error(&self, path: &[&str], message: impl Into<String>) -> super::PipelineError {
        let (line, col) = self.locate(path);
        super::PipelineError::new(&self.file, line, col, message)
    }
}

/// The position of every key of `text` at most `max_depth` levels down (1: top-level
/// keys); with `repeated`, the names written twice directly under a top-level key too.
fn scan_positions(
    text: &str,
    max_depth: usize,
    mut repeated: Option<&mut Vec<RepeatedName>>,
) -> HashMap<PathHash, (u32, u32)> {
    let mut positions: HashMap<PathHash, (u32, u32)> = HashMap::new();
    // the open keys: indent, path hash, key
    let mut stack: Vec<(usize, PathHash, &str)> = Vec::new();
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
        while stack.last().is_some_and(|(ind, _, _)| *ind >= indent) {
            stack.pop();
        }
        if stack.len() >= max_depth {
            continue;
        }
        if let Some(key) = leading_key(rest) {
            let parent = stack.last().map_or(PathHash::default(), |(_, h, _)| *h);
            let path = parent.child(key);
            let at = (line_number(i + 1), line_number(indent + 1));
            match positions.entry(path) {
                std::collections::hash_map::Entry::Occupied(seen) => {
                    if let (Some(repeated), [(_, _, section)]) =
                        (repeated.as_deref_mut(), stack.as_slice())
                    {
                        repeated.push(RepeatedName {
                            section: section.to_string(),
                            name: key.to_string(),
                            first_line: seen.get().0,
                            at,
                        });
                    }
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(at);
                }
            }
            stack.push((indent, path, key));
        }
    }
    positions
}

/// A line or column number as stored (files past 4 billion lines are not pipelines).
fn line_number(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
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
    fn keys_below_the_top_two_levels_are_scanned_at_the_first_lookup_of_one() {
        let text = "stages:\n  train:\n    kind: finetune\n    params:\n      lr: 2e-5\n";
        let sm = SourceMap::scan(Path::new("p.yaml"), text);
        assert_eq!(sm.locate(&["stages", "train"]), (2, 3));
        assert!(sm.contains(&["stages", "train"]));
        assert!(sm.deep.get().is_none(), "a stage's line needs no deep scan");
        assert!(!sm
            .shallow
            .contains_key(&PathHash::of(&["stages", "train", "kind"])));
        assert_eq!(sm.locate(&["stages", "train", "params", "lr"]), (5, 7));
        assert!(sm.deep.get().is_some());
        assert_eq!(sm.text(), text);
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
