//! The params of a `corpus` stage: which format, which files, how labels and entity
//! mentions are read. Everything a user needs to add their own corpus in YAML.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::entity::Marker;
use super::schema::Task;
use super::DataError;

/// How a corpus is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// BLURB TSV: `sentence<TAB>label_id`, no header; needs `label2id`.
    BlurbTsv,
    /// Rebuilt DDI train: header, `pair_id<TAB>sentence<TAB>label` (label names).
    DdiReconstructedTsv,
    /// Official DDICorpus-2013 XML (a directory of `.xml`, or `ARCHIVE.zip#prefix/`).
    DdiXml,
    /// AIMed Pyysalo-format JSON lines (`test_k.json`), entity `_idx` spans.
    AimedJson,
    /// `aimed_protein_tagged.tsv`: header, `pair_id doc_id fold sentence label`.
    AimedTsv,
    /// CoNLL/IOB2 NER: `token<TAB>tag`, blank line between sentences.
    Conll,
    /// Any TSV, configured by `layout` and `entities`.
    Tsv,
    /// Any JSON lines, configured by `layout` and `entities`.
    Jsonl,
    /// Any JSON array of records (or an array under `layout.records`).
    Json,
    /// SemEval-2010 Task 8: 4-line records, `<e1>`/`<e2>` spans, directed labels.
    Semeval2010Task8,
    /// CoNLL-U dependency trees (plain or `.gz`), stored as sentences of `HEAD:DEPREL` tags.
    Conllu,
    /// Sentence pairs with a similarity score (BIOSSES), configured by `layout`
    /// (`text`, `text_b` or `pair_separator`, `strip_prefix`, `score`).
    PairTsv,
    /// Documents with a set of labels each (HoC), configured by `layout`
    /// (`text`, `label`, `label_separator`, `empty_label`).
    MultilabelTsv,
}

impl Format {
    /// The task this format's corpora are for.
    pub fn task(self) -> Task {
        match self {
            Format::Conll | Format::Conllu => Task::Ner,
            Format::PairTsv => Task::Similarity,
            Format::MultilabelTsv => Task::Multilabel,
            _ => Task::Relation,
        }
    }
}

/// One file: a path relative to the input directory, optionally with its own format
/// (e.g. DDI: BLURB dev/test plus a rebuilt train file in another layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FileSpec {
    Path(String),
    WithFormat { path: String, format: Format },
}

impl FileSpec {
    pub fn path(&self) -> &str {
        match self {
            FileSpec::Path(p) | FileSpec::WithFormat { path: p, .. } => p,
        }
    }
    /// This file's format, falling back to the corpus format.
    pub fn format(&self, default: Format) -> Format {
        match self {
            FileSpec::Path(_) => default,
            FileSpec::WithFormat { format, .. } => *format,
        }
    }
}

/// A column: a 0-based index or a header name (TSV), or a dotted field path (JSON,
/// e.g. `relation.0.relation_type`; numbers index arrays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Column {
    Index(usize),
    Name(String),
}

/// Where the fields of an instance are in a generic `tsv`/`jsonl`/`json` file. The
/// built-in formats fill these in; any field given here overrides the built-in one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// TSV: whether the first line is a header (default: true for `tsv`).
    #[serde(default)]
    pub header: Option<bool>,
    #[serde(default)]
    pub text: Option<Column>,
    #[serde(default)]
    pub label: Option<Column>,
    #[serde(default)]
    pub id: Option<Column>,
    #[serde(default)]
    pub doc_id: Option<Column>,
    #[serde(default)]
    pub split: Option<Column>,
    #[serde(default)]
    pub fold: Option<Column>,
    /// Regex with one capture group applied to the id; the capture becomes the id.
    #[serde(default)]
    pub id_pattern: Option<String>,
    /// Regex with one capture group applied to the id when there is no `doc_id` column;
    /// the capture becomes the document id (e.g. `^(.+)\.s\d+\.p\d+$` for DDI pair ids).
    #[serde(default)]
    pub doc_id_pattern: Option<String>,
    /// JSON: dotted path to the array of records (default: the top-level array).
    #[serde(default)]
    pub records: Option<String>,
    // The fields below joined after keys were in use: left out of the key while unset,
    // so corpora cached before them keep their keys.
    /// `pair_tsv`: the column of the second sentence, when the pair is in two columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_b: Option<Column>,
    /// `pair_tsv`: a literal separating the two sentences inside the `text` column
    /// (BIOSSES BLURB: ` s2: `).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_separator: Option<String>,
    /// `pair_tsv`: a literal every `text` starts with, removed (BIOSSES BLURB: `s1: `).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<String>,
    /// `pair_tsv`: the similarity score column (a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Column>,
    /// `multilabel_tsv`: the literal joining a document's labels in the `label` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_separator: Option<String>,
    /// `multilabel_tsv`: the `label` value that means "no label" (HoC BLURB: `10`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_label: Option<String>,
}

impl Layout {
    /// `self` with every unset field taken from `base`.
    pub fn over(&self, base: &Layout) -> Layout {
        Layout {
            header: self.header.or(base.header),
            text: self.text.clone().or_else(|| base.text.clone()),
            label: self.label.clone().or_else(|| base.label.clone()),
            id: self.id.clone().or_else(|| base.id.clone()),
            doc_id: self.doc_id.clone().or_else(|| base.doc_id.clone()),
            split: self.split.clone().or_else(|| base.split.clone()),
            fold: self.fold.clone().or_else(|| base.fold.clone()),
            id_pattern: self.id_pattern.clone().or_else(|| base.id_pattern.clone()),
            doc_id_pattern: self
                .doc_id_pattern
                .clone()
                .or_else(|| base.doc_id_pattern.clone()),
            records: self.records.clone().or_else(|| base.records.clone()),
            text_b: self.text_b.clone().or_else(|| base.text_b.clone()),
            pair_separator: self
                .pair_separator
                .clone()
                .or_else(|| base.pair_separator.clone()),
            strip_prefix: self
                .strip_prefix
                .clone()
                .or_else(|| base.strip_prefix.clone()),
            score: self.score.clone().or_else(|| base.score.clone()),
            label_separator: self
                .label_separator
                .clone()
                .or_else(|| base.label_separator.clone()),
            empty_label: self
                .empty_label
                .clone()
                .or_else(|| base.empty_label.clone()),
        }
    }
}

/// How the two entity mentions are marked in the source text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum EntityStyle {
    /// The text already carries the task's tags (`@GENE$`...): kept as is.
    Tagged,
    /// Inline markers, each replaced with its markers by its tag.
    Markers { markers: Vec<Marker> },
    /// JSON fields holding character spans: `[s, e]`, `[[s, e], ...]` (first start to last
    /// end) or `"s-e"` / `"s-e;c-d"` strings.
    Spans {
        e1: String,
        e2: String,
        /// Tag of entity 1 / entity 2 (default: the corpus `tag`).
        #[serde(default)]
        tag1: Option<String>,
        #[serde(default)]
        tag2: Option<String>,
        /// Whether span ends are inclusive (DDI `charOffset` style); default exclusive.
        #[serde(default)]
        end_inclusive: bool,
    },
}

/// Label ids: a `name<TAB>id` file (relative to the input) or an inline `{name: id}` map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelIds {
    File(String),
    Inline(BTreeMap<String, i64>),
}

/// Ids of instances moved from one split to another (e.g. BLURB's DDI dev pairs carved
/// out of the official training set). The file holds one id per line, as plain text or as
/// JSON objects with an `id` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveIds {
    pub file: String,
    /// Prefix removed from each listed id (BLURB's `dev_`).
    #[serde(default)]
    pub strip_prefix: Option<String>,
    #[serde(default = "default_from")]
    pub from: String,
    #[serde(default = "default_to")]
    pub to: String,
}

fn default_from() -> String {
    "train".into()
}
fn default_to() -> String {
    "dev".into()
}

/// What to do with a malformed line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop with an error naming file:line.
    #[default]
    Fail,
    /// Skip it, print a warning, and count it in `stats.json` (`_warnings.skipped`).
    Skip,
}

/// Params of a `corpus` stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    pub format: Format,
    /// Split name (`train`/`dev`/`test`) → file.
    #[serde(default)]
    pub files: BTreeMap<String, FileSpec>,
    /// Shipped cross-validation folds: fold k is the k-th file.
    #[serde(default)]
    pub folds: Vec<FileSpec>,
    /// One file holding everything (split/fold from its columns, if any).
    #[serde(default)]
    pub file: Option<FileSpec>,
    /// Declared label names in order (relation), or entity types (NER). Default: from the
    /// data (`label2id` order if given, else sorted, the negative label first).
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// The negative label (excluded by micro-averaged metrics).
    #[serde(default)]
    pub negative: Option<String>,
    /// Label ids, for formats whose label column holds ids (`blurb_tsv`).
    #[serde(default)]
    pub label2id: Option<LabelIds>,
    /// Renames labels (relation) or entity types (NER) after reading: `{old: new}`.
    #[serde(default)]
    pub rename_labels: BTreeMap<String, String>,
    /// Generic column/field layout (overrides the built-in layout of the format).
    #[serde(default)]
    pub layout: Layout,
    /// How mentions are marked (generic formats; default `tagged`).
    #[serde(default)]
    pub entities: Option<EntityStyle>,
    /// Tag replacing span-marked mentions (default `@PROTEIN$` for AIMed, `@DRUG$` for DDI).
    #[serde(default)]
    pub tag: Option<String>,
    /// Tag replacing the union of two overlapping mentions (default `@A-B$` from the tags).
    #[serde(default)]
    pub overlap_tag: Option<String>,
    /// Move listed ids from one split to another.
    #[serde(default)]
    pub move_ids: Option<MoveIds>,
    #[serde(default)]
    pub on_error: OnError,
    /// Keep only the first N units of each split/fold, in file order (smoke profiles).
    #[serde(default)]
    pub max_instances: Option<usize>,
}

/// The splits a unit may belong to.
pub const SPLITS: [&str; 3] = ["train", "dev", "test"];

fn param(param: &str, message: impl Into<String>) -> DataError {
    DataError::Param {
        param: param.into(),
        message: message.into(),
    }
}

/// A path inside the input directory: relative, no `..`. Anything else would read bytes
/// that are not part of the stage's inputs, so the cache key would not cover them.
pub fn check_inner_path(name: &str, path: &str) -> Result<(), DataError> {
    let p = Path::new(path.split('#').next().unwrap_or(path));
    let ok = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(())
    } else {
        Err(param(
            name,
            format!("`{path}` must be a relative path inside the input directory (no `..`, not absolute)"),
        ))
    }
}

fn check_regex(name: &str, pattern: &Option<String>) -> Result<(), DataError> {
    if let Some(p) = pattern {
        let re = regex::Regex::new(p).map_err(|e| param(name, e.to_string()))?;
        if re.captures_len() != 2 {
            return Err(param(
                name,
                format!("`{p}` must have exactly one capture group"),
            ));
        }
    }
    Ok(())
}

impl CorpusSpec {
    /// Plan-time checks: files named, paths inside the input, formats consistent.
    pub fn check(&self) -> Result<(), DataError> {
        let given = [
            !self.files.is_empty(),
            !self.folds.is_empty(),
            self.file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(param(
                "files",
                "give exactly one of `files` (split → file), `folds` (list) or `file`",
            ));
        }
        for split in self.files.keys() {
            if !SPLITS.contains(&split.as_str()) {
                return Err(param(
                    "files",
                    format!("unknown split `{split}` (expected train, dev or test)"),
                ));
            }
        }
        let all_files: Vec<&FileSpec> = self
            .files
            .values()
            .chain(self.folds.iter())
            .chain(self.file.iter())
            .collect();
        for f in &all_files {
            check_inner_path("files", f.path())?;
            let fmt = f.format(self.format);
            if fmt.task() != self.format.task() {
                return Err(param(
                    "files",
                    format!("`{}`: format {fmt:?} is for another task", f.path()),
                ));
            }
            if fmt == Format::BlurbTsv && self.label2id.is_none() {
                return Err(param(
                    "label2id",
                    "format blurb_tsv needs `label2id` (file or inline map)",
                ));
            }
            if matches!(fmt, Format::Tsv | Format::Jsonl | Format::Json)
                && (self.layout.text.is_none() || self.layout.label.is_none())
            {
                return Err(param(
                    "layout",
                    format!("format {fmt:?} needs `layout.text` and `layout.label`"),
                ));
            }
            if fmt == Format::PairTsv {
                let l = &self.layout;
                if l.text.is_none() || l.score.is_none() {
                    return Err(param(
                        "layout",
                        "format pair_tsv needs `layout.text` and `layout.score`",
                    ));
                }
                if l.text_b.is_some() == l.pair_separator.is_some() {
                    return Err(param(
                        "layout",
                        "format pair_tsv needs one of `layout.text_b` (a column) or \
                         `layout.pair_separator` (both sentences in `text`)",
                    ));
                }
                if l.pair_separator.as_deref() == Some("") {
                    return Err(param("layout.pair_separator", "must not be empty"));
                }
            }
            if fmt == Format::MultilabelTsv {
                let l = &self.layout;
                if l.text.is_none() || l.label.is_none() || l.label_separator.is_none() {
                    return Err(param(
                        "layout",
                        "format multilabel_tsv needs `layout.text`, `layout.label` and \
                         `layout.label_separator`",
                    ));
                }
                if l.label_separator.as_deref() == Some("") {
                    return Err(param("layout.label_separator", "must not be empty"));
                }
            }
            if !matches!(fmt, Format::DdiXml) && f.path().contains('#') {
                return Err(param(
                    "files",
                    format!("`{}`: `ARCHIVE#prefix` is only read by ddi_xml", f.path()),
                ));
            }
        }
        if let Some(LabelIds::File(p)) = &self.label2id {
            check_inner_path("label2id", p)?;
        }
        if let Some(m) = &self.move_ids {
            check_inner_path("move_ids", &m.file)?;
            for s in [&m.from, &m.to] {
                if !SPLITS.contains(&s.as_str()) {
                    return Err(param("move_ids", format!("unknown split `{s}`")));
                }
            }
        }
        if self.negative.is_some()
            && matches!(self.format.task(), Task::Similarity | Task::Multilabel)
        {
            return Err(param(
                "negative",
                format!("format {:?} has no negative label", self.format),
            ));
        }
        if let (Some(labels), Some(neg)) = (&self.labels, &self.negative) {
            if self.format.task() == Task::Relation && !labels.contains(neg) {
                return Err(param(
                    "negative",
                    format!("`{neg}` is not one of the declared labels {labels:?}"),
                ));
            }
        }
        if let Some(labels) = &self.labels {
            let mut seen = std::collections::BTreeSet::new();
            if let Some(dup) = labels.iter().find(|l| !seen.insert(*l)) {
                return Err(param("labels", format!("`{dup}` is declared twice")));
            }
        }
        check_regex("layout.id_pattern", &self.layout.id_pattern)?;
        check_regex("layout.doc_id_pattern", &self.layout.doc_id_pattern)?;
        if let Some(EntityStyle::Markers { markers }) = &self.entities {
            if markers.is_empty()
                || markers
                    .iter()
                    .any(|m| m.open.is_empty() || m.close.is_empty())
            {
                return Err(param(
                    "entities",
                    "markers need non-empty `open` and `close`",
                ));
            }
        }
        if self.max_instances == Some(0) {
            return Err(param("max_instances", "must be at least 1"));
        }
        Ok(())
    }
}
