//! A fine-tuning's predictions scored the way the papers do: the `evaluate` stage's
//! maths and file reading (the stage writes what this returns), also used by
//! `cv_aggregate` and `probe`.
//!
//! Reads a directory with `predictions.jsonl` (one line per test instance: `{"id", "gold",
//! "pred"}`; for NER `gold`/`pred` are tag lists) and `labels.json` (`{"task":
//! "relation"|"ner", "labels": [...], "negative": name|null}`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ClassScore, Confusion, MetricsError, NerCounts, Prf};
use crate::data::schema::{LabelSet, Task, LABELS_FILE};
use crate::report::cells::percent;

/// How the headline P/R/F1 is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Average {
    /// Micro over the non-negative classes (DDI, ChemProt).
    Micro,
    /// The positive class of a binary task (PPI).
    Binary,
    /// Entity-level exact match over IOB2 spans (conlleval).
    Ner,
}

/// Params of `evaluate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// Default from labels.json: `ner` for a NER task, `binary` for two labels one of
    /// which is the negative, else `micro`.
    #[serde(default)]
    pub average: Option<Average>,
    /// Positive label for `binary` (default: the label that is not the negative).
    #[serde(default)]
    pub positive: Option<String>,
}

/// The scores of one predictions file.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub average: Average,
    pub negative: Option<String>,
    pub positive: Option<String>,
    pub scores: Prf,
    /// Label (relation) or entity type (NER) → one-vs-rest scores.
    pub per_class: Vec<(String, ClassScore)>,
    /// Instance-level (relation) or token-level (NER) confusion.
    pub confusion: Confusion,
    /// Instances (relation) or sentences (NER).
    pub n: u64,
}

impl Evaluation {
    /// The `metrics.json` object.
    pub fn to_json(&self) -> Value {
        let per_class: serde_json::Map<String, Value> = self
            .per_class
            .iter()
            .map(|(label, score)| (label.clone(), json!(score)))
            .collect();
        let unit = match self.average {
            Average::Ner => "token",
            _ => "instance",
        };
        json!({
            "average": self.average,
            "negative": self.negative,
            "positive": self.positive,
            "precision": self.scores.precision,
            "recall": self.scores.recall,
            "f1": self.scores.f1,
            "tp": self.scores.tp,
            "fp": self.scores.fp,
            "fn": self.scores.fn_,
            "n": self.n,
            "per_class": per_class,
            "confusion": {
                "unit": unit,
                "labels": self.confusion.labels(),
                "counts": self.confusion.counts(),
            },
        })
    }

    /// `per_class.md`: the per-class table and the confusion matrix.
    pub fn to_markdown(&self, title: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Per-class scores: {title}\n");
        let how = match (self.average, &self.negative, &self.positive) {
            (Average::Micro, Some(neg), _) => {
                format!("micro over the non-negative classes (negative: `{neg}`)")
            }
            (Average::Micro, None, _) => "micro over all classes".to_string(),
            (Average::Binary, _, Some(pos)) => format!("positive class `{pos}`"),
            (Average::Binary, _, None) => "positive class".to_string(),
            (Average::Ner, _, _) => "entity-level exact match (conlleval)".to_string(),
        };
        let unit = if self.average == Average::Ner {
            "sentences"
        } else {
            "instances"
        };
        let _ = writeln!(s, "Headline: {how}; {} {unit}.\n", self.n);
        let _ = writeln!(s, "| class | P | R | F1 | TP | FP | FN | support |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for (label, c) in &self.per_class {
            let name = if Some(label) == self.negative.as_ref() {
                format!("{label} (negative)")
            } else {
                label.clone()
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {} | {} |",
                percent(c.prf.precision, 1),
                percent(c.prf.recall, 1),
                percent(c.prf.f1, 1),
                c.prf.tp,
                c.prf.fp,
                c.prf.fn_,
                c.support
            );
        }
        let h = &self.scores;
        let _ = writeln!(
            s,
            "| **{:?}** | **{}** | **{}** | **{}** | {} | {} | {} | |",
            self.average,
            percent(h.precision, 1),
            percent(h.recall, 1),
            percent(h.f1, 1),
            h.tp,
            h.fp,
            h.fn_
        );
        let labels = self.confusion.labels();
        let _ = writeln!(
            s,
            "\n## Confusion ({}; rows gold, columns predicted)\n",
            if self.average == Average::Ner {
                "tokens"
            } else {
                "instances"
            }
        );
        let _ = writeln!(s, "| gold \\ pred | {} |", labels.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(labels.len()));
        for (label, row) in labels.iter().zip(self.confusion.counts()) {
            let cells: Vec<String> = row.iter().map(u64::to_string).collect();
            let _ = writeln!(s, "| {label} | {} |", cells.join(" | "));
        }
        s
    }
}

fn bad_line(path: &Path, line: usize, message: impl std::fmt::Display) -> EvaluationError {
    EvaluationError::Invalid(format!("{}:{line}: {message}", path.display()))
}

fn read_text(path: &Path) -> Result<String, EvaluationError> {
    std::fs::read_to_string(path).map_err(|e| EvaluationError::io(path, e))
}

/// Reads `labels.json` of a fine-tuning output directory.
pub fn read_labels(dir: &Path) -> Result<LabelSet, EvaluationError> {
    let path = dir.join(LABELS_FILE);
    let labels: LabelSet = serde_json::from_str(&read_text(&path)?)
        .map_err(|e| EvaluationError::Invalid(format!("{}: {e}", path.display())))?;
    if let Some(neg) = &labels.negative {
        if labels.task == Task::Relation && !labels.labels.contains(neg) {
            return Err(EvaluationError::Invalid(format!(
                "{}: negative label `{neg}` is not among the labels",
                path.display()
            )));
        }
    }
    Ok(labels)
}

/// The averaging that applies: the param if given, else the default for the label set.
fn choose_average(labels: &LabelSet, p: &EvaluateParams) -> Result<Average, EvaluationError> {
    let default = match (labels.task, labels.labels.len(), &labels.negative) {
        (Task::Ner, _, _) => Average::Ner,
        (Task::Relation, 2, Some(_)) => Average::Binary,
        _ => Average::Micro,
    };
    let average = p.average.unwrap_or(default);
    match (labels.task, average) {
        (Task::Ner, Average::Ner) | (Task::Relation, Average::Micro | Average::Binary) => {
            Ok(average)
        }
        (task, avg) => Err(EvaluationError::param(
            "average",
            format!("`{avg:?}` does not apply to a {task:?} task (labels.json)").to_lowercase(),
        )),
    }
}

/// The positive label of a binary evaluation.
fn choose_positive(labels: &LabelSet, p: &EvaluateParams) -> Result<String, EvaluationError> {
    if let Some(pos) = &p.positive {
        if !labels.labels.contains(pos) {
            return Err(EvaluationError::param(
                "positive",
                format!("`{pos}` is not a label ({})", labels.labels.join(", ")),
            ));
        }
        return Ok(pos.clone());
    }
    let candidates: Vec<&String> = labels
        .labels
        .iter()
        .filter(|l| Some(*l) != labels.negative.as_ref())
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(EvaluationError::param(
            "positive",
            "binary averaging needs `positive:` (labels.json has no single non-negative label)",
        )),
    }
}

/// Scores the predictions in a fine-tuning output directory.
pub fn evaluate_dir(dir: &Path, p: &EvaluateParams) -> Result<Evaluation, EvaluationError> {
    let labels = read_labels(dir)?;
    let average = choose_average(&labels, p)?;
    let path = dir.join("predictions.jsonl");
    let text = read_text(&path)?;
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Value>(l)
                .map(|v| (i + 1, v))
                .map_err(|e| bad_line(&path, i + 1, e))
        });
    let eval = match average {
        Average::Ner => evaluate_ner(&path, lines)?,
        Average::Micro | Average::Binary => {
            let mut confusion = Confusion::new(labels.labels.clone())?;
            let mut n = 0u64;
            for item in lines {
                let (line, v) = item?;
                let field = |name: &str| {
                    v.get(name)
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad_line(&path, line, format!("no string `{name}`")))
                };
                confusion
                    .add(field("gold")?, field("pred")?)
                    .map_err(|e| bad_line(&path, line, e))?;
                n += 1;
            }
            let positive = if average == Average::Binary {
                Some(choose_positive(&labels, p)?)
            } else {
                None
            };
            let scores = match &positive {
                Some(pos) => confusion.binary(pos)?,
                None => confusion.micro(labels.negative.as_deref())?,
            };
            Evaluation {
                average,
                negative: labels.negative.clone(),
                positive,
                scores,
                per_class: confusion.per_class(),
                confusion,
                n,
            }
        }
    };
    if eval.n == 0 {
        return Err(EvaluationError::Invalid(format!(
            "{}: no predictions to evaluate",
            path.display()
        )));
    }
    Ok(eval)
}

fn evaluate_ner(
    path: &Path,
    lines: impl Iterator<Item = Result<(usize, Value), EvaluationError>>,
) -> Result<Evaluation, EvaluationError> {
    let mut counts = NerCounts::new();
    let mut token_pairs: Vec<(String, String)> = Vec::new();
    for item in lines {
        let (line, v) = item?;
        let tags = |name: &str| -> Result<Vec<String>, EvaluationError> {
            v.get(name)
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .map(|t| t.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| bad_line(path, line, format!("`{name}` is not a list of tags")))
        };
        let (gold, pred) = (tags("gold")?, tags("pred")?);
        counts
            .add(&gold, &pred)
            .map_err(|e| bad_line(path, line, e))?;
        token_pairs.extend(gold.into_iter().zip(pred));
    }
    let mut tags: Vec<String> = token_pairs
        .iter()
        .flat_map(|(g, p)| [g.clone(), p.clone()])
        .collect();
    tags.sort();
    tags.dedup();
    let confusion = Confusion::from_pairs(
        tags,
        token_pairs.iter().map(|(g, p)| (g.as_str(), p.as_str())),
    )?;
    Ok(Evaluation {
        average: Average::Ner,
        negative: None,
        positive: None,
        scores: counts.overall(),
        per_class: counts.per_type(),
        confusion,
        n: counts.sentences(),
    })
}

/// Copies `name` from `from` to `to` if it exists there.
pub fn copy_if_present(
    from: &Path,
    to: &Path,
    name: &str,
) -> Result<Option<PathBuf>, EvaluationError> {
    let src = from.join(name);
    if !src.is_file() {
        return Ok(None);
    }
    let dst = to.join(name);
    std::fs::copy(&src, &dst).map_err(|e| EvaluationError::io(&src, e))?;
    Ok(Some(dst))
}

/// Why a predictions directory could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// A param of the evaluation that does not fit the labels (as the stage's params say).
    #[error("param `{param}`: {message}")]
    Param { param: String, message: String },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

impl EvaluationError {
    fn param(param: &str, message: impl Into<String>) -> Self {
        EvaluationError::Param {
            param: param.to_string(),
            message: message.into(),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        EvaluationError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
