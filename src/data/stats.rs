//! Corpus statistics: units per split (or fold, or split file) and label, stored as
//! `stats.json` next to the data and shown by `pipe stats`.
//!
//! On disk: `{group: {label: count}}` where a group is a split (`train`), a shipped fold
//! (`fold-3`) or a file of a split stage (`fold-3/train`). Relation corpora count
//! instances per label (every declared label appears, zeros included); NER corpora count
//! mentions (`B-` tags) per entity type. Keys starting with `_` are not groups:
//! `_sentences` and `_tokens` (NER, per group; multilabel corpora count documents in
//! `_sentences` and labels carried in the rows; similarity corpora count `pairs`) and `_warnings` (counted warnings, e.g.
//! `skipped` malformed lines).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use super::schema::{LabelSet, Task, Unit, LABELS_FILE, STATS_FILE};
use super::{jsonl, DataError};

/// Group → label (or entity type) → count.
pub type Counts = BTreeMap<String, BTreeMap<String, u64>>;

/// Statistics of a corpus or split directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// From `labels.json` when the directory has one.
    pub task: Option<Task>,
    pub counts: Counts,
    /// NER: sentences and tokens per group.
    pub sentences: BTreeMap<String, u64>,
    pub tokens: BTreeMap<String, u64>,
    /// Counted warnings (`skipped`, ...).
    pub warnings: BTreeMap<String, u64>,
    /// Column order for display: relation labels, or NER entity types.
    pub label_order: Vec<String>,
}

/// Entity types of an IOB2 tag set, in order (`O, B-X, I-X, B-Y, ...` → `X, Y`).
pub fn entity_types(labels: &LabelSet) -> Vec<String> {
    labels
        .labels
        .iter()
        .filter_map(|t| t.strip_prefix("B-"))
        .map(str::to_string)
        .collect()
}

fn label_order(labels: &LabelSet) -> Vec<String> {
    match labels.task {
        Task::Relation | Task::Multilabel => labels.labels.clone(),
        Task::Ner => entity_types(labels),
        Task::Similarity => vec![super::schema::PAIRS_KEY.to_string()],
    }
}

/// Whether a task's units are counted apart from their label counts (`_sentences`): NER
/// sentences (counts are mentions) and multilabel documents (counts are labels carried).
fn counts_units_apart(task: Task) -> bool {
    matches!(task, Task::Ner | Task::Multilabel)
}

impl Stats {
    /// Counts `units` by `group_of(unit)` and label.
    pub fn count<U: Unit>(
        units: &[U],
        group_of: impl Fn(&U) -> String,
        labels: &LabelSet,
        warnings: BTreeMap<String, u64>,
        tokens_of: impl Fn(&U) -> u64,
    ) -> Stats {
        let order = label_order(labels);
        let mut stats = Stats {
            task: Some(labels.task),
            warnings,
            label_order: order.clone(),
            ..Stats::default()
        };
        for u in units {
            let group = group_of(u);
            let row = stats
                .counts
                .entry(group.clone())
                .or_insert_with(|| order.iter().map(|l| (l.clone(), 0)).collect());
            for key in u.stat_keys() {
                *row.entry(key.to_string()).or_insert(0) += 1;
            }
            if counts_units_apart(labels.task) {
                *stats.sentences.entry(group.clone()).or_insert(0) += 1;
            }
            if labels.task == Task::Ner {
                *stats.tokens.entry(group).or_insert(0) += tokens_of(u);
            }
        }
        stats
    }

    /// Units in `group` (instances; NER: sentences; multilabel: documents).
    pub fn total(&self, group: &str) -> u64 {
        match self.task {
            Some(task) if counts_units_apart(task) => {
                self.sentences.get(group).copied().unwrap_or(0)
            }
            _ => self.counts.get(group).map_or(0, |row| row.values().sum()),
        }
    }

    /// Groups in display order: train, dev, test, then folds by number.
    pub fn groups(&self) -> Vec<&String> {
        let mut g: Vec<&String> = self.counts.keys().chain(self.sentences.keys()).collect();
        g.sort_by_key(|name| group_rank(name));
        g.dedup();
        g
    }

    /// The JSON form `{group: {label: count}}` (what `pipe stats --json` prints).
    pub fn counts_json(&self) -> Value {
        serde_json::to_value(&self.counts).unwrap_or(Value::Null)
    }

    /// The `stats.json` form (counts plus `_`-prefixed extras).
    pub fn to_json(&self) -> Value {
        let mut m = match self.counts_json() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let mut extra = |key: &str, map: &BTreeMap<String, u64>| {
            if !map.is_empty() {
                m.insert(
                    key.to_string(),
                    serde_json::to_value(map).unwrap_or(Value::Null),
                );
            }
        };
        extra("_sentences", &self.sentences);
        extra("_tokens", &self.tokens);
        extra("_warnings", &self.warnings);
        Value::Object(m)
    }

    /// Parses the `stats.json` form.
    pub fn from_json(value: &Value) -> Result<Stats, String> {
        let obj = value.as_object().ok_or("stats.json is not an object")?;
        let mut stats = Stats::default();
        for (key, v) in obj {
            let row: BTreeMap<String, u64> =
                serde_json::from_value(v.clone()).map_err(|e| format!("`{key}`: {e}"))?;
            match key.as_str() {
                "_sentences" => stats.sentences = row,
                "_tokens" => stats.tokens = row,
                "_warnings" => stats.warnings = row,
                k if k.starts_with('_') => {}
                _ => {
                    stats.counts.insert(key.clone(), row);
                }
            }
        }
        Ok(stats)
    }

    /// Writes `stats.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), DataError> {
        jsonl::write_json(&dir.join(STATS_FILE), &self.to_json())
    }
}

/// Sort key: train, dev, test first, then `fold-N` by N (with its files in the same
/// order), then anything else by name.
fn group_rank(name: &str) -> (u32, u64, u32, String) {
    let role = |s: &str| match s {
        "train" => 0,
        "dev" => 1,
        "test" => 2,
        _ => 3,
    };
    if let Some(rest) = name.strip_prefix("fold-") {
        let (num, file) = rest.split_once('/').unwrap_or((rest, ""));
        if let Ok(n) = num.parse::<u64>() {
            return (1, n, role(file), name.to_string());
        }
    }
    (
        if role(name) < 3 { 0 } else { 2 },
        0,
        role(name),
        name.to_string(),
    )
}

/// Reads the statistics of a corpus or split stage output directory (`stats.json`, and
/// `labels.json` for the task and label order).
pub fn stats_of(dir: &Path) -> Result<Stats, DataError> {
    let path = dir.join(STATS_FILE);
    if !path.is_file() {
        return Err(DataError::Invalid(format!(
            "{}: no {STATS_FILE} (not the output of a corpus or split stage)",
            dir.display()
        )));
    }
    let value: Value = jsonl::read_json(&path)?;
    let mut stats = Stats::from_json(&value)
        .map_err(|m| DataError::Invalid(format!("{}: {m}", path.display())))?;
    let labels_path = dir.join(LABELS_FILE);
    if labels_path.is_file() {
        let labels: LabelSet = jsonl::read_json(&labels_path)?;
        stats.task = Some(labels.task);
        stats.label_order = label_order(&labels);
    } else if !stats.sentences.is_empty() {
        stats.task = Some(Task::Ner);
    }
    if stats.label_order.is_empty() {
        let mut all: Vec<String> = stats
            .counts
            .values()
            .flat_map(|r| r.keys().cloned())
            .collect();
        all.sort();
        all.dedup();
        stats.label_order = all;
    }
    Ok(stats)
}

impl fmt::Display for Stats {
    /// A plain-text table: one row per group (and a total row), one column per label.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ner = self.task == Some(Task::Ner);
        let documents = self.task == Some(Task::Multilabel);
        let mut header: Vec<String> = vec!["split".into()];
        if ner {
            header.extend(["sentences".into(), "tokens".into()]);
        } else if documents {
            header.push("documents".into());
        } else {
            header.push("total".into());
        }
        header.extend(self.label_order.iter().cloned());
        let groups = self.groups();
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut sum = vec![0u64; header.len() - 1];
        for g in &groups {
            let mut cells: Vec<u64> = Vec::new();
            if ner {
                cells.push(self.sentences.get(*g).copied().unwrap_or(0));
                cells.push(self.tokens.get(*g).copied().unwrap_or(0));
            } else if documents {
                cells.push(self.sentences.get(*g).copied().unwrap_or(0));
            } else {
                cells.push(self.total(g));
            }
            let row = self.counts.get(*g);
            cells.extend(
                self.label_order
                    .iter()
                    .map(|l| row.and_then(|r| r.get(l)).copied().unwrap_or(0)),
            );
            for (s, c) in sum.iter_mut().zip(&cells) {
                *s += c;
            }
            let mut r = vec![(*g).clone()];
            r.extend(cells.iter().map(u64::to_string));
            rows.push(r);
        }
        // A total row only where groups are disjoint (not for fold-k/train files).
        if groups.len() > 1 && !groups.iter().any(|g| g.contains('/')) {
            let mut r = vec!["total".to_string()];
            r.extend(sum.iter().map(u64::to_string));
            rows.push(r);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        format!("{c:<w$}", w = widths[i])
                    } else {
                        format!("{c:>w$}", w = widths[i])
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        writeln!(f, "{}", line(&header))?;
        for r in &rows {
            writeln!(f, "{}", line(r))?;
        }
        for (k, v) in &self.warnings {
            writeln!(f, "warning: {k}: {v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_extras_apart() {
        let v = serde_json::json!({
            "train": {"a": 2, "b": 1}, "test": {"a": 1, "b": 0},
            "_warnings": {"skipped": 3}
        });
        let s = Stats::from_json(&v).unwrap();
        assert_eq!(s.counts.len(), 2);
        assert_eq!(s.warnings["skipped"], 3);
        assert_eq!(s.to_json(), v);
        assert_eq!(s.total("train"), 3);
    }

    #[test]
    fn groups_in_reading_order() {
        let mut s = Stats::default();
        for g in [
            "test",
            "fold-10/test",
            "fold-2/train",
            "fold-2/test",
            "train",
            "dev",
        ] {
            s.counts.insert(g.into(), BTreeMap::new());
        }
        let order: Vec<&str> = s.groups().into_iter().map(String::as_str).collect();
        assert_eq!(
            order,
            [
                "train",
                "dev",
                "test",
                "fold-2/train",
                "fold-2/test",
                "fold-10/test"
            ]
        );
    }

    #[test]
    fn table_has_a_total_row() {
        let v = serde_json::json!({"train": {"neg": 3, "pos": 1}, "test": {"neg": 1, "pos": 1}});
        let mut s = Stats::from_json(&v).unwrap();
        s.label_order = vec!["neg".into(), "pos".into()];
        let table = s.to_string();
        let last = table.lines().last().unwrap();
        assert_eq!(
            last.split_whitespace().collect::<Vec<_>>(),
            ["total", "6", "4", "2"]
        );
    }
}
