//! `evaluate`: scores a fine-tuning stage's predictions the way the papers do.
//!
//! Input `predictions`: a finetune output directory with `predictions.jsonl` (one line per
//! test instance: `{"id", "gold", "pred"}`; for NER `gold`/`pred` are tag lists),
//! `labels.json` (`{"task": "relation"|"ner", "labels": [...], "negative": name|null}`) and
//! optionally `history.json` (copied to the output so reports can plot it).
//!
//! Writes `metrics.json` (fractions 0..1): `average`, `negative`, `positive`, `precision`,
//! `recall`, `f1`, `tp`, `fp`, `fn`, `n`, `per_class` (label or entity type → P/R/F1, counts,
//! support), `confusion` (`{"unit": "instance"|"token", "labels", "counts"}`, rows gold,
//! columns predicted); and `per_class.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::data::schema::{LabelSet, Task, LABELS_FILE};
use crate::metrics::{ClassScore, Confusion, NerCounts, Prf};
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

fn bad_line(path: &Path, line: usize, message: impl std::fmt::Display) -> StageError {
    StageError::Failed(format!("{}:{line}: {message}", path.display()))
}

fn read_text(path: &Path) -> Result<String, StageError> {
    std::fs::read_to_string(path).map_err(|e| StageError::io(path, e))
}

/// Reads `labels.json` of a fine-tuning output directory.
pub fn read_labels(dir: &Path) -> Result<LabelSet, StageError> {
    let path = dir.join(LABELS_FILE);
    let labels: LabelSet = serde_json::from_str(&read_text(&path)?)
        .map_err(|e| StageError::Failed(format!("{}: {e}", path.display())))?;
    if let Some(neg) = &labels.negative {
        if labels.task == Task::Relation && !labels.labels.contains(neg) {
            return Err(StageError::Failed(format!(
                "{}: negative label `{neg}` is not among the labels",
                path.display()
            )));
        }
    }
    Ok(labels)
}

/// The averaging that applies: the param if given, else the default for the label set.
fn choose_average(labels: &LabelSet, p: &EvaluateParams) -> Result<Average, StageError> {
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
        (task, avg) => Err(ParamError::new(
            "average",
            format!("`{avg:?}` does not apply to a {task:?} task (labels.json)").to_lowercase(),
        )
        .into()),
    }
}

/// The positive label of a binary evaluation.
fn choose_positive(labels: &LabelSet, p: &EvaluateParams) -> Result<String, StageError> {
    if let Some(pos) = &p.positive {
        if !labels.labels.contains(pos) {
            return Err(ParamError::new(
                "positive",
                format!("`{pos}` is not a label ({})", labels.labels.join(", ")),
            )
            .into());
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
        _ => Err(ParamError::new(
            "positive",
            "binary averaging needs `positive:` (labels.json has no single non-negative label)",
        )
        .into()),
    }
}

/// Scores the predictions in a fine-tuning output directory.
pub fn evaluate_dir(dir: &Path, p: &EvaluateParams) -> Result<Evaluation, StageError> {
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
        return Err(StageError::Failed(format!(
            "{}: no predictions to evaluate",
            path.display()
        )));
    }
    Ok(eval)
}

fn evaluate_ner(
    path: &Path,
    lines: impl Iterator<Item = Result<(usize, Value), StageError>>,
) -> Result<Evaluation, StageError> {
    let mut counts = NerCounts::new();
    let mut token_pairs: Vec<(String, String)> = Vec::new();
    for item in lines {
        let (line, v) = item?;
        let tags = |name: &str| -> Result<Vec<String>, StageError> {
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
pub fn copy_if_present(from: &Path, to: &Path, name: &str) -> Result<Option<PathBuf>, StageError> {
    let src = from.join(name);
    if !src.is_file() {
        return Ok(None);
    }
    let dst = to.join(name);
    std::fs::copy(&src, &dst).map_err(|e| StageError::io(&src, e))?;
    Ok(Some(dst))
}

/// The `evaluate` stage kind.
pub struct EvaluateStage;

impl Stage for EvaluateStage {
    const KIND: &'static str = "evaluate";
    const VERSION: u32 = 1;
    type Params = EvaluateParams;
    const INPUTS: InputContract = InputContract::Declared(&[InputSpec::one(
        "predictions",
        "a fine-tuning's output (`predictions.jsonl`)",
    )]);

    fn check(p: &EvaluateParams) -> Result<(), ParamError> {
        if p.positive.is_some() && p.average.is_some_and(|a| a != Average::Binary) {
            return Err(ParamError::new(
                "positive",
                "only applies with `average: binary`",
            ));
        }
        Ok(())
    }

    fn run(ctx: &mut StageCtx, p: &EvaluateParams) -> Result<(), StageError> {
        let dir = ctx.inputs.path("predictions")?.to_path_buf();
        let eval = evaluate_dir(&dir, p)?;
        ctx.write_json("metrics.json", &eval.to_json())?;
        let md_path = ctx.out_dir.join("per_class.md");
        std::fs::write(&md_path, eval.to_markdown(&ctx.name))
            .map_err(|e| StageError::io(&md_path, e))?;
        copy_if_present(&dir, &ctx.out_dir, "history.json")?;
        copy_if_present(&dir, &ctx.out_dir, LABELS_FILE)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/report/predictions")
            .join(name)
    }

    #[test]
    fn ddi_like_micro_by_hand() {
        // The 15 predictions of metrics::confusion's hand-counted DDI-like table.
        let e = evaluate_dir(&fixture("ddi_small"), &EvaluateParams::default()).unwrap();
        assert_eq!(e.average, Average::Micro);
        assert_eq!(e.n, 15);
        assert_eq!((e.scores.tp, e.scores.fp, e.scores.fn_), (5, 3, 4));
        assert_eq!(e.scores.precision, 5.0 / 8.0);
        let j = e.to_json();
        assert_eq!(j["per_class"]["effect"]["support"], 6);
        assert_eq!(j["confusion"]["counts"][1], json!([2, 3, 1]));
        assert_eq!(j["fn"], 4);
        let md = e.to_markdown("evaluate");
        assert!(md.contains("| false (negative) |"), "{md}");
        assert!(
            md.contains("| **Micro** | **62.5** | **55.6** | **58.8** | 5 | 3 | 4 | |"),
            "{md}"
        );
    }

    #[test]
    fn ppi_like_binary_default_and_no_positive_predicted() {
        // 2 labels with a negative → binary on the other label; nothing predicted positive.
        let e = evaluate_dir(&fixture("ppi_none_positive"), &EvaluateParams::default()).unwrap();
        assert_eq!(e.average, Average::Binary);
        assert_eq!(e.positive.as_deref(), Some("positive"));
        assert_eq!(
            (e.scores.precision, e.scores.recall, e.scores.f1),
            (0.0, 0.0, 0.0)
        );
        assert_eq!((e.scores.tp, e.scores.fp, e.scores.fn_), (0, 0, 2));
        // Micro over the non-negative classes is the same thing here.
        let micro = EvaluateParams {
            average: Some(Average::Micro),
            positive: None,
        };
        assert_eq!(
            evaluate_dir(&fixture("ppi_none_positive"), &micro)
                .unwrap()
                .scores,
            e.scores
        );
    }

    #[test]
    fn ner_entity_level() {
        let e = evaluate_dir(&fixture("ner_small"), &EvaluateParams::default()).unwrap();
        assert_eq!(e.average, Average::Ner);
        assert_eq!(e.n, 2);
        // Same two sentences as metrics::ner's hand count: gold 3, predicted 4, correct 1.
        assert_eq!((e.scores.tp, e.scores.fp, e.scores.fn_), (1, 3, 2));
        assert_eq!(e.to_json()["confusion"]["unit"], "token");
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let err = evaluate_dir(&fixture("bad_label"), &EvaluateParams::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("predictions.jsonl:3:") && text.contains("`mechanism`"),
            "{text}"
        );
        let wrong = EvaluateParams {
            average: Some(Average::Ner),
            positive: None,
        };
        assert!(evaluate_dir(&fixture("ddi_small"), &wrong).is_err());
    }
}
