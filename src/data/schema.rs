//! The instance schema every corpus is parsed into, and `labels.json`.
//!
//! Relation extraction: one [`Instance`] per candidate pair, written as JSON lines to
//! `instances.jsonl`. NER: one [`Sentence`] per sentence, written to `sentences.jsonl`.

use serde::{Deserialize, Serialize};

/// File names a corpus (and a split) directory holds.
pub const INSTANCES_FILE: &str = "instances.jsonl";
pub const SENTENCES_FILE: &str = "sentences.jsonl";
pub const PAIRS_FILE: &str = "pairs.jsonl";
pub const DOCUMENTS_FILE: &str = "documents.jsonl";
pub const LABELS_FILE: &str = "labels.json";
pub const STATS_FILE: &str = "stats.json";

/// One relation candidate: a sentence whose two entity mentions are replaced by the
/// task's tags (`@PROTEIN$`, `@DRUG$`, `@CHEMICAL$`/`@GENE$`, overlapping → `@A-B$`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub doc_id: Option<String>,
    pub text: String,
    /// Label name (as in `labels.json`).
    pub label: String,
    /// `train` / `dev` / `test`, or `None` when the corpus ships folds or nothing.
    pub split: Option<String>,
    /// Shipped or assigned cross-validation fold, if any.
    pub fold: Option<u32>,
}

/// One NER sentence: tokens with IOB2 tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sentence {
    pub id: String,
    pub doc_id: Option<String>,
    pub tokens: Vec<String>,
    pub tags: Vec<String>,
    pub split: Option<String>,
    pub fold: Option<u32>,
}

/// One sentence pair with a real-valued similarity score (BIOSSES: 0–4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub id: String,
    pub doc_id: Option<String>,
    pub text_a: String,
    pub text_b: String,
    pub score: f64,
    pub split: Option<String>,
    pub fold: Option<u32>,
}

/// One document with any number of labels, possibly none (HoC's hallmarks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    pub doc_id: Option<String>,
    pub text: String,
    /// Label names (as in `labels.json`), in declared order, no repeats.
    pub labels: Vec<String>,
    pub split: Option<String>,
    pub fold: Option<u32>,
}

/// Which task a corpus is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Relation,
    Ner,
    /// Sentence-pair similarity: a real score per [`Pair`].
    Similarity,
    /// Document classification with a set of labels per [`Document`].
    Multilabel,
}

impl Task {
    /// The JSON-lines file holding this task's units in a corpus directory.
    pub fn units_file(self) -> &'static str {
        match self {
            Task::Relation => INSTANCES_FILE,
            Task::Ner => SENTENCES_FILE,
            Task::Similarity => PAIRS_FILE,
            Task::Multilabel => DOCUMENTS_FILE,
        }
    }
}

/// `labels.json`: the ordered label names (relation, multilabel) or IOB2 tag set (NER),
/// and the negative label that micro-averaged metrics exclude (similarity: no labels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSet {
    pub task: Task,
    pub labels: Vec<String>,
    pub negative: Option<String>,
}

/// What splitting and statistics need to know of a unit (an [`Instance`], [`Sentence`],
/// [`Pair`] or [`Document`]).
pub trait Unit: Serialize + serde::de::DeserializeOwned + Clone {
    fn id(&self) -> &str;
    fn doc_id(&self) -> Option<&str>;
    fn split(&self) -> Option<&str>;
    fn fold(&self) -> Option<u32>;
    fn set_split(&mut self, split: Option<String>);
    fn set_fold(&mut self, fold: Option<u32>);
    /// Counted keys for statistics: the label (relation) or one entry per mention type
    /// (NER, one per `B-` tag).
    fn stat_keys(&self) -> Vec<&str>;
}

/// The accessors of the fields every unit type shares (`id`, `doc_id`, `split`, `fold`),
/// written once: each `impl Unit` adds only what it counts.
macro_rules! unit_placement {
    () => {
        fn id(&self) -> &str {
            &self.id
        }
        fn doc_id(&self) -> Option<&str> {
            self.doc_id.as_deref()
        }
        fn split(&self) -> Option<&str> {
            self.split.as_deref()
        }
        fn fold(&self) -> Option<u32> {
            self.fold
        }
        fn set_split(&mut self, split: Option<String>) {
            self.split = split;
        }
        fn set_fold(&mut self, fold: Option<u32>) {
            self.fold = fold;
        }
    };
}

impl Unit for Instance {
    unit_placement!();
    fn stat_keys(&self) -> Vec<&str> {
        vec![self.label.as_str()]
    }
}

impl Unit for Sentence {
    unit_placement!();
    fn stat_keys(&self) -> Vec<&str> {
        self.tags
            .iter()
            .filter_map(|t| t.strip_prefix("B-"))
            .collect()
    }
}

impl Unit for Pair {
    unit_placement!();
    /// Pairs are counted as one column, `pairs`.
    fn stat_keys(&self) -> Vec<&str> {
        vec![PAIRS_KEY]
    }
}

/// The statistics column of a similarity corpus (pairs per group).
pub const PAIRS_KEY: &str = "pairs";

impl Unit for Document {
    unit_placement!();
    /// One entry per label the document carries (documents are counted apart).
    fn stat_keys(&self) -> Vec<&str> {
        self.labels.iter().map(String::as_str).collect()
    }
}

/// The statistics group of a unit: its split, else `fold-K`, else `all`.
pub fn group_of<U: Unit>(unit: &U) -> String {
    match (unit.split(), unit.fold()) {
        (Some(s), _) => s.to_string(),
        (None, Some(k)) => format!("fold-{k}"),
        (None, None) => "all".to_string(),
    }
}
