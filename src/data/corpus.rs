//! Building a corpus: read every file of a [`CorpusSpec`] in its format, map labels,
//! replace mentions by tags, and write `instances.jsonl` (or `sentences.jsonl`),
//! `labels.json` and `stats.json`.
//!
//! `max_instances: N` keeps the first N units of each split (or fold) in file order —
//! deterministic and independent of any seed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use regex::Regex;

use super::corpus_spec::{
    Column, CorpusSpec, EntityStyle, FileSpec, Format, LabelIds, Layout, OnError,
};
use super::formats::conll::{self, RawSentence};
use super::formats::json::{self, Shape};
use super::formats::{
    conllu, ddi_xml, documents, line_error, pairs, semeval, tsv, RawRecord, ReadConfig, ReadOutput,
    Tagging, NUL_IN_TEXT,
};
use super::schema::{
    group_of, Document, Instance, LabelSet, Pair, Sentence, Task, Unit, LABELS_FILE,
};
use super::stats::Stats;
use super::{entity, jsonl, DataError};

/// Warning key counting skipped malformed lines (`on_error: skip`).
pub const SKIPPED: &str = "skipped";

/// The units of a corpus.
#[derive(Debug, Clone, PartialEq)]
pub enum Units {
    Relation(Vec<Instance>),
    Ner(Vec<Sentence>),
    Similarity(Vec<Pair>),
    Multilabel(Vec<Document>),
}

impl Units {
    /// How many units belong to `split`.
    fn in_split(&self, split: &str) -> usize {
        fn count<U: Unit>(units: &[U], split: &str) -> usize {
            units.iter().filter(|u| u.split() == Some(split)).count()
        }
        match self {
            Units::Relation(u) => count(u, split),
            Units::Ner(u) => count(u, split),
            Units::Similarity(u) => count(u, split),
            Units::Multilabel(u) => count(u, split),
        }
    }
}

/// A parsed corpus, ready to write.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub labels: LabelSet,
    pub units: Units,
    /// Counted warnings (also stored in `stats.json`).
    pub warnings: BTreeMap<String, u64>,
    /// Human-readable warnings to print (first skipped lines, ...).
    pub notes: Vec<String>,
}

impl Corpus {
    pub fn stats(&self) -> Stats {
        match &self.units {
            Units::Relation(u) => {
                Stats::count(u, group_of, &self.labels, self.warnings.clone(), |_| 0)
            }
            Units::Ner(u) => Stats::count(u, group_of, &self.labels, self.warnings.clone(), |s| {
                s.tokens.len() as u64
            }),
            Units::Similarity(u) => {
                Stats::count(u, group_of, &self.labels, self.warnings.clone(), |_| 0)
            }
            Units::Multilabel(u) => {
                Stats::count(u, group_of, &self.labels, self.warnings.clone(), |_| 0)
            }
        }
    }

    /// Writes the units file, `labels.json` and `stats.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), DataError> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let units_path = dir.join(self.labels.task.units_file());
        match &self.units {
            Units::Relation(u) => jsonl::write(&units_path, u)?,
            Units::Ner(u) => jsonl::write(&units_path, u)?,
            Units::Similarity(u) => jsonl::write(&units_path, u)?,
            Units::Multilabel(u) => jsonl::write(&units_path, u)?,
        }
        jsonl::write_json(&dir.join(LABELS_FILE), &self.labels)?;
        self.stats().write(dir)
    }
}

/// Built-in layout, tag and entity style of each format.
fn preset(format: Format) -> (Layout, Option<EntityStyle>, Option<&'static str>) {
    let name = |s: &str| Some(Column::Name(s.into()));
    match format {
        Format::BlurbTsv => (
            Layout {
                header: Some(false),
                text: Some(Column::Index(0)),
                label: Some(Column::Index(1)),
                ..Layout::default()
            },
            Some(EntityStyle::Tagged),
            None,
        ),
        Format::DdiReconstructedTsv => (
            Layout {
                header: Some(true),
                id: name("pair_id"),
                text: name("sentence"),
                label: name("label"),
                doc_id_pattern: Some(r"^(.+)\.s\d+\.p\d+$".into()),
                ..Layout::default()
            },
            Some(EntityStyle::Tagged),
            None,
        ),
        Format::AimedTsv => (
            Layout {
                header: Some(true),
                id: name("pair_id"),
                doc_id: name("doc_id"),
                fold: name("fold"),
                text: name("sentence"),
                label: name("label"),
                ..Layout::default()
            },
            Some(EntityStyle::Tagged),
            None,
        ),
        Format::AimedJson => (
            Layout {
                id: name("id"),
                // `AIMed.d193.s1641_AIMed.d193.s1641.p0` → pair id `AIMed.d193.s1641.p0`
                id_pattern: Some(r"^[^_]+_(.+)$".into()),
                // → document `AIMed.d193`
                doc_id_pattern: Some(r"^(.+?)\.s\d+".into()),
                text: name("text"),
                label: name("relation.0.relation_type"),
                ..Layout::default()
            },
            Some(EntityStyle::Spans {
                e1: "relation.0.entity_1_idx".into(),
                e2: "relation.0.entity_2_idx".into(),
                tag1: None,
                tag2: None,
                end_inclusive: false,
            }),
            Some("@PROTEIN$"),
        ),
        Format::DdiXml => (Layout::default(), None, Some("@DRUG$")),
        Format::Tsv => (
            Layout {
                header: Some(true),
                ..Layout::default()
            },
            None,
            None,
        ),
        Format::Jsonl
        | Format::Json
        | Format::Conll
        | Format::Conllu
        | Format::PairTsv
        | Format::MultilabelTsv => (Layout::default(), None, None),
        Format::Semeval2010Task8 => (Layout::default(), Some(EntityStyle::Tagged), None),
    }
}

/// Default negative label of a format (`None`: the YAML must name it if there is one).
fn preset_negative(format: Format) -> Option<&'static str> {
    match format {
        Format::AimedJson | Format::AimedTsv => Some("negative"),
        Format::DdiXml => Some(ddi_xml::NEGATIVE),
        Format::Semeval2010Task8 => Some(semeval::OTHER),
        _ => None,
    }
}

/// One file to read, with the split or fold it holds (if the spec says so).
struct Job<'a> {
    file: &'a FileSpec,
    split: Option<String>,
    fold: Option<u32>,
    /// Name used in generated ids: the split, `fold-K`, or `all`.
    group: String,
}

fn jobs(spec: &CorpusSpec) -> Vec<Job<'_>> {
    let mut jobs: Vec<Job> = Vec::new();
    // Splits in reading order, not alphabetical.
    for split in super::corpus_spec::SPLITS {
        if let Some(f) = spec.files.get(split) {
            jobs.push(Job {
                file: f,
                split: Some(split.into()),
                fold: None,
                group: split.into(),
            });
        }
    }
    for (k, f) in spec.folds.iter().enumerate() {
        jobs.push(Job {
            file: f,
            split: None,
            fold: Some(k as u32),
            group: format!("fold-{k}"),
        });
    }
    if let Some(f) = &spec.file {
        jobs.push(Job {
            file: f,
            split: None,
            fold: None,
            group: "all".into(),
        });
    }
    jobs
}

/// Collects per-line errors according to `on_error`.
struct ErrorPolicy {
    on_error: OnError,
    skipped: u64,
    notes: Vec<String>,
}

impl ErrorPolicy {
    /// `Ok(Some(x))` for good units, `Ok(None)` for a skipped line, `Err` to stop.
    fn take<T>(&mut self, r: Result<T, DataError>) -> Result<Option<T>, DataError> {
        match r {
            Ok(x) => Ok(Some(x)),
            Err(e @ DataError::Line { .. }) if self.on_error == OnError::Skip => {
                self.skipped += 1;
                if self.notes.len() < 5 {
                    self.notes.push(format!("skipped malformed line: {e}"));
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Reads the corpus described by `spec` from the directory `input`.
pub fn build(spec: &CorpusSpec, input: &Path) -> Result<Corpus, DataError> {
    spec.check()?;
    let mut policy = ErrorPolicy {
        on_error: spec.on_error,
        skipped: 0,
        notes: Vec::new(),
    };
    let mut corpus = match spec.format.task() {
        Task::Relation => build_relation(spec, input, &mut policy)?,
        Task::Ner if spec.format == Format::Conllu => build_trees(spec, input, &mut policy)?,
        Task::Ner => build_ner(spec, input, &mut policy)?,
        Task::Similarity => build_pairs(spec, input, &mut policy)?,
        Task::Multilabel => build_documents(spec, input, &mut policy)?,
    };
    // A split file that yields nothing would make the split vanish downstream (no dev set,
    // no test set): say so here, where the file is named.
    for (split, file) in &spec.files {
        if corpus.units.in_split(split) == 0 {
            let why = if policy.skipped > 0 {
                format!(
                    "{} malformed line(s) were skipped (on_error: skip), its every line among them",
                    policy.skipped
                )
            } else {
                "the file holds none".to_string()
            };
            return Err(DataError::Invalid(format!(
                "{}: split `{split}` has no {}: {why}",
                file.path(),
                match spec.format.task() {
                    Task::Relation => "instances",
                    Task::Ner => "sentences",
                    Task::Similarity => "pairs",
                    Task::Multilabel => "documents",
                }
            )));
        }
    }
    if policy.skipped > 0 {
        corpus.warnings.insert(SKIPPED.into(), policy.skipped);
        corpus.notes.insert(
            0,
            format!(
                "{} malformed line(s) skipped (on_error: skip)",
                policy.skipped
            ),
        );
        corpus.notes.extend(policy.notes);
    }
    Ok(corpus)
}

fn read_label_ids(
    spec: &CorpusSpec,
    input: &Path,
) -> Result<Option<Vec<(String, i64)>>, DataError> {
    let Some(ids) = &spec.label2id else {
        return Ok(None);
    };
    let mut pairs: Vec<(String, i64)> = match ids {
        LabelIds::Inline(m) => m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        LabelIds::File(p) => {
            let path = input.join(p);
            let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let (name, id) = line
                    .split_once('\t')
                    .ok_or_else(|| line_error(p, i + 1, "expected `label<TAB>id`"))?;
                let id = id
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| line_error(p, i + 1, format!("id `{id}` is not an integer")))?;
                out.push((name.to_string(), id));
            }
            out
        }
    };
    pairs.sort_by_key(|(_, id)| *id);
    let mut seen = HashSet::new();
    if let Some((_, dup)) = pairs.iter().find(|(_, id)| !seen.insert(*id)) {
        return Err(DataError::Param {
            param: "label2id".into(),
            message: format!("id {dup} is given twice"),
        });
    }
    Ok(Some(pairs))
}

fn compile(pattern: &Option<String>) -> Result<Option<Regex>, DataError> {
    pattern
        .as_deref()
        .map(|p| {
            Regex::new(p).map_err(|e| DataError::Param {
                param: "layout".into(),
                message: e.to_string(),
            })
        })
        .transpose()
}

fn capture(re: &Regex, s: &str) -> Option<String> {
    re.captures(s)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_string())
}

fn read_file(
    job: &Job,
    spec: &CorpusSpec,
    input: &Path,
) -> Result<(ReadOutput, Format), DataError> {
    let format = job.file.format(spec.format);
    let (base, style, tag) = preset(format);
    let config = ReadConfig {
        layout: spec.layout.over(&base),
        tagging: Tagging {
            style: spec
                .entities
                .clone()
                .or(style)
                .unwrap_or(EntityStyle::Tagged),
            tag: spec
                .tag
                .clone()
                .or(tag.map(str::to_string))
                .unwrap_or_else(|| "@ENTITY$".into()),
            overlap_tag: spec.overlap_tag.clone(),
        },
    };
    let rel = job.file.path();
    let path = input.join(rel);
    let out = match format {
        Format::BlurbTsv | Format::DdiReconstructedTsv | Format::AimedTsv | Format::Tsv => {
            tsv::read(&path, rel, &config)?
        }
        Format::AimedJson | Format::Jsonl => json::read(&path, rel, Shape::Lines, &config)?,
        Format::Json => json::read(&path, rel, Shape::Array, &config)?,
        Format::DdiXml => ddi_xml::read(input, rel, &config.tagging)?,
        Format::Semeval2010Task8 => semeval::read(&path, rel, &config)?,
        Format::Conll | Format::Conllu | Format::PairTsv | Format::MultilabelTsv => {
            return Err(DataError::Invalid(format!(
                "{rel}: {format:?} is not a relation format"
            )))
        }
    };
    Ok((out, format))
}

fn build_relation(
    spec: &CorpusSpec,
    input: &Path,
    policy: &mut ErrorPolicy,
) -> Result<Corpus, DataError> {
    let label_ids = read_label_ids(spec, input)?;
    let rename = |name: &str| {
        spec.rename_labels
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    };
    let id_to_name: HashMap<String, String> = label_ids
        .iter()
        .flatten()
        .map(|(name, id)| (id.to_string(), rename(name)))
        .collect();
    // The declared label set, in order: YAML `labels`, else label2id, else the format's own.
    let declared: Option<Vec<String>> = spec.labels.clone().or_else(|| {
        label_ids
            .as_ref()
            .map(|p| p.iter().map(|(n, _)| rename(n)).collect())
            .or_else(|| {
                (spec.format == Format::DdiXml)
                    .then(|| ddi_xml::LABELS.iter().map(|l| rename(l)).collect())
            })
    });
    let declared_set: Option<BTreeSet<&String>> = declared.as_ref().map(|d| d.iter().collect());
    let mut warnings: BTreeMap<String, u64> = BTreeMap::new();
    let mut instances: Vec<Instance> = Vec::new();
    let mut seen_ids: HashMap<String, String> = HashMap::new();
    for job in jobs(spec) {
        let (out, format) = read_file(&job, spec, input)?;
        for (k, v) in out.warnings {
            *warnings.entry(k).or_insert(0) += v;
        }
        let layout = spec.layout.over(&preset(format).0);
        let id_re = compile(&layout.id_pattern)?;
        let doc_re = compile(&layout.doc_id_pattern)?;
        let ids_are_numeric = format == Format::BlurbTsv
            || (label_ids.is_some()
                && matches!(format, Format::Tsv | Format::Jsonl | Format::Json));
        let rel = job.file.path();
        for rec in out.records {
            // any format (a JSON `\u0000` too): a NUL byte is never corpus text
            let rec = rec.and_then(|r| match r.text.contains('\0') {
                true => Err(line_error(rel, r.line, NUL_IN_TEXT)),
                false => Ok(r),
            });
            let Some(rec) = policy.take(rec)? else {
                continue;
            };
            let line = rec.line;
            let made = make_instance(
                rec,
                &job,
                rel,
                ids_are_numeric,
                &id_to_name,
                &rename,
                &declared_set,
                &id_re,
                &doc_re,
            );
            let Some(inst) = policy.take(made)? else {
                continue;
            };
            let at = format!("{rel}:{line}");
            if let Some(first) = seen_ids.insert(inst.id.clone(), at.clone()) {
                return Err(DataError::Invalid(format!(
                    "duplicate id `{}` (in {first} and {at})",
                    inst.id
                )));
            }
            instances.push(inst);
        }
    }
    if let Some(m) = &spec.move_ids {
        move_ids(&mut instances, m, input)?;
    }
    limit(&mut instances, spec.max_instances);
    let labels = match declared {
        Some(d) => d,
        None => {
            let mut found: Vec<String> = instances
                .iter()
                .map(|i| i.label.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let neg = spec
                .negative
                .clone()
                .or(preset_negative(spec.format).map(rename));
            if let Some(pos) = neg.and_then(|n| found.iter().position(|l| *l == n)) {
                let n = found.remove(pos);
                found.insert(0, n);
            }
            found
        }
    };
    let negative = spec
        .negative
        .clone()
        .or_else(|| preset_negative(spec.format).map(rename));
    if let Some(n) = &negative {
        if !labels.contains(n) {
            return Err(DataError::Param {
                param: "negative".into(),
                message: format!("`{n}` is not one of the labels {labels:?}"),
            });
        }
    }
    Ok(Corpus {
        labels: LabelSet {
            task: Task::Relation,
            labels,
            negative,
        },
        units: Units::Relation(instances),
        notes: warnings.iter().map(|(k, v)| format!("{k}: {v}")).collect(),
        warnings,
    })
}

#[allow(clippy::too_many_arguments)]
fn make_instance(
    rec: RawRecord,
    job: &Job,
    file: &str,
    ids_are_numeric: bool,
    id_to_name: &HashMap<String, String>,
    rename: &dyn Fn(&str) -> String,
    declared: &Option<BTreeSet<&String>>,
    id_re: &Option<Regex>,
    doc_re: &Option<Regex>,
) -> Result<Instance, DataError> {
    let err = |m: String| line_error(file, rec.line, m);
    let label = if ids_are_numeric {
        id_to_name
            .get(rec.label.trim())
            .cloned()
            .ok_or_else(|| err(format!("label id `{}` is not in label2id", rec.label)))?
    } else {
        rename(&rec.label)
    };
    if let Some(d) = declared {
        if !d.contains(&label) {
            let names: Vec<&String> = d.iter().copied().collect();
            return Err(err(format!(
                "label `{label}` is not one of the declared labels {names:?}"
            )));
        }
    }
    let id = match (rec.id, id_re) {
        (Some(raw), Some(re)) => capture(re, &raw).ok_or_else(|| {
            err(format!(
                "id `{raw}` does not match id_pattern `{}`",
                re.as_str()
            ))
        })?,
        (Some(raw), None) => raw,
        (None, _) => format!("{}-{}", job.group, rec.line),
    };
    let doc_id = match (rec.doc_id, doc_re) {
        (Some(d), _) => Some(d),
        (None, Some(re)) => Some(capture(re, &id).ok_or_else(|| {
            err(format!(
                "id `{id}` does not match doc_id_pattern `{}`",
                re.as_str()
            ))
        })?),
        (None, None) => None,
    };
    Ok(Instance {
        id,
        doc_id,
        text: entity::flatten_whitespace(&rec.text),
        label,
        split: job.split.clone().or(rec.split),
        fold: job.fold.or(rec.fold),
    })
}

/// Moves the listed ids from split `from` to split `to`; every listed id must be found.
fn move_ids(
    instances: &mut [Instance],
    m: &super::corpus_spec::MoveIds,
    input: &Path,
) -> Result<(), DataError> {
    let path = input.join(&m.file);
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let mut ids: HashSet<String> = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let raw = if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| line_error(&m.file, i + 1, format!("not valid JSON: {e}")))?;
            v.get("id")
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| line_error(&m.file, i + 1, "no string `id` field"))?
        } else {
            line.to_string()
        };
        let id = match &m.strip_prefix {
            Some(p) => raw
                .strip_prefix(p.as_str())
                .map(str::to_string)
                .unwrap_or(raw),
            None => raw,
        };
        ids.insert(id);
    }
    let mut moved = HashSet::new();
    for inst in instances.iter_mut() {
        if inst.split.as_deref() == Some(m.from.as_str()) && ids.contains(&inst.id) {
            inst.split = Some(m.to.clone());
            moved.insert(inst.id.clone());
        }
    }
    let missing: Vec<&String> = ids.iter().filter(|id| !moved.contains(*id)).collect();
    if let Some(example) = missing.iter().min() {
        return Err(DataError::Invalid(format!(
            "move_ids: {} of the {} ids in {} are not in split `{}` (e.g. `{example}`)",
            missing.len(),
            ids.len(),
            m.file,
            m.from
        )));
    }
    Ok(())
}

/// Keeps the first `max` units of each group, in order.
fn limit<U: Unit>(units: &mut Vec<U>, max: Option<usize>) {
    let Some(max) = max else { return };
    let mut kept: HashMap<String, usize> = HashMap::new();
    units.retain(|u| {
        let n = kept.entry(group_of(u)).or_insert(0);
        *n += 1;
        *n <= max
    });
}

fn build_ner(
    spec: &CorpusSpec,
    input: &Path,
    policy: &mut ErrorPolicy,
) -> Result<Corpus, DataError> {
    let declared: Option<BTreeSet<&String>> = spec.labels.as_ref().map(|l| l.iter().collect());
    let mut sentences: Vec<Sentence> = Vec::new();
    for job in jobs(spec) {
        let rel = job.file.path();
        let path = input.join(rel);
        for raw in conll::read(&path, rel)? {
            let Some(raw) = policy.take(raw)? else {
                continue;
            };
            let made = make_sentence(raw, &job, rel, spec, &declared);
            if let Some(s) = policy.take(made)? {
                sentences.push(s);
            }
        }
    }
    limit(&mut sentences, spec.max_instances);
    let types: Vec<String> = match &spec.labels {
        Some(l) => l.clone(),
        None => sentences
            .iter()
            .flat_map(|s| {
                s.tags
                    .iter()
                    .filter_map(|t| t.strip_prefix("B-").map(str::to_string))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let mut labels = vec!["O".to_string()];
    for t in &types {
        labels.push(format!("B-{t}"));
        labels.push(format!("I-{t}"));
    }
    Ok(Corpus {
        labels: LabelSet {
            task: Task::Ner,
            labels,
            negative: Some("O".into()),
        },
        units: Units::Ner(sentences),
        warnings: BTreeMap::new(),
        notes: Vec::new(),
    })
}

/// CoNLL-U trees: each a [`Sentence`] whose tags are the words' arcs (`HEAD:DEPREL`);
/// `labels.json` lists the relations (DEPREL values, sorted), with no negative label.
fn build_trees(
    spec: &CorpusSpec,
    input: &Path,
    policy: &mut ErrorPolicy,
) -> Result<Corpus, DataError> {
    let mut sentences: Vec<Sentence> = Vec::new();
    for job in jobs(spec) {
        let rel = job.file.path();
        if job.file.format(spec.format) != Format::Conllu {
            return Err(DataError::Invalid(format!(
                "{rel}: a conllu corpus reads only conllu files"
            )));
        }
        for raw in conllu::read(&input.join(rel), rel)? {
            let Some(tree) = policy.take(raw)? else {
                continue;
            };
            let tags = tree
                .heads
                .iter()
                .zip(&tree.deprels)
                .map(|(&h, d)| conllu::arc_tag(h, spec.rename_labels.get(d).unwrap_or(d)))
                .collect();
            sentences.push(Sentence {
                id: tree
                    .sent_id
                    .unwrap_or_else(|| format!("{}-{}", job.group, tree.line)),
                doc_id: tree.doc_id,
                tokens: tree.words,
                tags,
                split: job.split.clone(),
                fold: job.fold,
            });
        }
    }
    limit(&mut sentences, spec.max_instances);
    let relations: Vec<String> = match &spec.labels {
        Some(l) => l.clone(),
        None => sentences
            .iter()
            .flat_map(|s| s.tags.iter())
            .filter_map(|t| conllu::parse_arc_tag(t).map(|(_, d)| d.to_string()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    Ok(Corpus {
        labels: LabelSet {
            task: Task::Ner,
            labels: relations,
            negative: None,
        },
        units: Units::Ner(sentences),
        warnings: BTreeMap::new(),
        notes: Vec::new(),
    })
}

fn make_sentence(
    raw: RawSentence,
    job: &Job,
    file: &str,
    spec: &CorpusSpec,
    declared: &Option<BTreeSet<&String>>,
) -> Result<Sentence, DataError> {
    let mut tags = Vec::with_capacity(raw.tags.len());
    for (i, tag) in raw.tags.iter().enumerate() {
        let renamed = match tag.split_once('-') {
            Some((bi, ty)) => {
                let ty = spec.rename_labels.get(ty).map_or(ty, String::as_str);
                if let Some(d) = declared {
                    if !d.contains(&ty.to_string()) {
                        let names: Vec<&String> = d.iter().copied().collect();
                        return Err(line_error(
                            file,
                            raw.line + i,
                            format!(
                                "entity type `{ty}` is not one of the declared types {names:?}"
                            ),
                        ));
                    }
                }
                format!("{bi}-{ty}")
            }
            None => tag.clone(),
        };
        tags.push(renamed);
    }
    Ok(Sentence {
        id: format!("{}-{}", job.group, raw.line),
        doc_id: raw.doc.map(|d| format!("{}-doc{d}", job.group)),
        tokens: raw.tokens,
        tags,
        split: job.split.clone(),
        fold: job.fold,
    })
}

/// The id of a unit: the `id` column, else `<group>-<line>`; a repeated id is an error
/// naming both places.
fn unit_id(
    raw: Option<String>,
    job: &Job,
    rel: &str,
    line: usize,
    seen: &mut HashMap<String, String>,
) -> Result<String, DataError> {
    let id = raw.unwrap_or_else(|| format!("{}-{line}", job.group));
    let at = format!("{rel}:{line}");
    if let Some(first) = seen.insert(id.clone(), at.clone()) {
        return Err(DataError::Invalid(format!(
            "duplicate id `{id}` (in {first} and {at})"
        )));
    }
    Ok(id)
}

/// Files of one task format only (a pair or document corpus reads no other format).
fn same_format(spec: &CorpusSpec, job: &Job) -> Result<(), DataError> {
    let format = job.file.format(spec.format);
    if format != spec.format {
        return Err(DataError::Invalid(format!(
            "{}: a {:?} corpus reads only {:?} files",
            job.file.path(),
            spec.format,
            spec.format
        )));
    }
    Ok(())
}

/// Sentence pairs with a score (`format: pair_tsv`); `labels.json` has no labels.
fn build_pairs(
    spec: &CorpusSpec,
    input: &Path,
    policy: &mut ErrorPolicy,
) -> Result<Corpus, DataError> {
    let layout = spec.layout.over(&preset(spec.format).0);
    let mut units: Vec<Pair> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for job in jobs(spec) {
        same_format(spec, &job)?;
        let rel = job.file.path();
        for raw in pairs::read(&input.join(rel), rel, &layout)? {
            let Some(raw) = policy.take(raw)? else {
                continue;
            };
            units.push(Pair {
                id: unit_id(raw.id, &job, rel, raw.line, &mut seen)?,
                doc_id: raw.doc_id,
                text_a: entity::flatten_whitespace(&raw.text_a),
                text_b: entity::flatten_whitespace(&raw.text_b),
                score: raw.score,
                split: job.split.clone(),
                fold: job.fold,
            });
        }
    }
    limit(&mut units, spec.max_instances);
    Ok(Corpus {
        labels: LabelSet {
            task: Task::Similarity,
            labels: Vec::new(),
            negative: None,
        },
        units: Units::Similarity(units),
        warnings: BTreeMap::new(),
        notes: Vec::new(),
    })
}

/// Documents with label sets (`format: multilabel_tsv`): label ids mapped by `label2id`
/// when given, renamed, checked against `labels:`; `labels.json` lists the labels (the
/// declared order, else `label2id`'s, else sorted), with no negative label.
fn build_documents(
    spec: &CorpusSpec,
    input: &Path,
    policy: &mut ErrorPolicy,
) -> Result<Corpus, DataError> {
    let layout = spec.layout.over(&preset(spec.format).0);
    let label_ids = read_label_ids(spec, input)?;
    let rename = |name: &str| {
        spec.rename_labels
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    };
    let id_to_name: Option<HashMap<String, String>> = label_ids.as_ref().map(|ids| {
        ids.iter()
            .map(|(name, id)| (id.to_string(), rename(name)))
            .collect()
    });
    let declared: Option<Vec<String>> = spec.labels.clone().or_else(|| {
        label_ids
            .as_ref()
            .map(|p| p.iter().map(|(n, _)| rename(n)).collect())
    });
    let mut units: Vec<Document> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for job in jobs(spec) {
        same_format(spec, &job)?;
        let rel = job.file.path();
        for raw in documents::read(&input.join(rel), rel, &layout)? {
            let Some(raw) = policy.take(raw)? else {
                continue;
            };
            let line = raw.line;
            let mapped: Result<Vec<String>, DataError> = raw
                .labels
                .iter()
                .map(|l| {
                    let name = match &id_to_name {
                        Some(ids) => ids.get(l).cloned().ok_or_else(|| {
                            line_error(rel, line, format!("label id `{l}` is not in label2id"))
                        })?,
                        None => rename(l),
                    };
                    match &declared {
                        Some(d) if !d.contains(&name) => Err(line_error(
                            rel,
                            line,
                            format!("label `{name}` is not one of the declared labels {d:?}"),
                        )),
                        _ => Ok(name),
                    }
                })
                .collect();
            let Some(mut labels) = policy.take(mapped)? else {
                continue;
            };
            let mut unique = HashSet::new();
            labels.retain(|l| unique.insert(l.clone()));
            units.push(Document {
                id: unit_id(raw.id, &job, rel, line, &mut seen)?,
                doc_id: raw.doc_id,
                text: entity::flatten_whitespace(&raw.text),
                labels,
                split: job.split.clone(),
                fold: job.fold,
            });
        }
    }
    limit(&mut units, spec.max_instances);
    let labels = declared.unwrap_or_else(|| {
        units
            .iter()
            .flat_map(|d| d.labels.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    });
    // each document's labels in the declared order
    for d in &mut units {
        d.labels
            .sort_by_key(|l| labels.iter().position(|x| x == l).unwrap_or(usize::MAX));
    }
    Ok(Corpus {
        labels: LabelSet {
            task: Task::Multilabel,
            labels,
            negative: None,
        },
        units: Units::Multilabel(units),
        warnings: BTreeMap::new(),
        notes: Vec::new(),
    })
}
