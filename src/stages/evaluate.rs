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
//!
//! Two headlines of the word-pair tasks (Meng et al. 2019) read their own predictions:
//! - `average: semeval2010`: SemEval-2010 Task 8's official score (macro-F1 over the nine
//!   relations, `Other` ignored, direction counted; [`crate::metrics::semeval`]): metrics
//!   `precision`, `recall`, `f1` (macro) and `per_relation`;
//! - `average: attachment`: dependency trees (`gold`/`pred`/`pred_mst` lists of
//!   `HEAD:DEPREL`): metrics `uas`, `las` over every word, **punctuation included**
//!   ([`crate::metrics::attachment`]); `decode: mst` scores the maximum-spanning-tree
//!   decoding (`pred_mst`), the default each word's best head (`pred`).
//!
//! Two more task types choose their headline from `labels.json` (or `average:`):
//! - `similarity` (a `regression` fine-tuning; `gold`/`pred` numbers): `pearson` (the
//!   headline, as BLUE and Peng et al. report BIOSSES), `spearman` (ties get their average
//!   rank) and `mse` ([`crate::metrics::correlation`]);
//! - `multilabel` (`gold`/`pred` label lists): `micro_f1` (with `micro_precision`,
//!   `micro_recall`), `example_f1` (per-document F1 averaged; a document with no gold and
//!   no predicted label scores 1) and `macro_f1`, `per_label`
//!   ([`crate::metrics::multilabel`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::data::formats::conllu::parse_arc_tag;
use crate::data::jsonl;
use crate::data::schema::{Task, LABELS_FILE};
use crate::metrics::attachment::AttachmentCounts;
use crate::metrics::evaluation::{copy_if_present, evaluate_dir, Average, EvaluateParams};
use crate::metrics::semeval::{official_score, OTHER};
use crate::metrics::{correlation, multilabel};

/// The `evaluate` stage kind.
pub struct EvaluateStage;

/// How the headline is computed: [`Average`]'s three, or a word-pair task's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Headline {
    Micro,
    Binary,
    Ner,
    /// SemEval-2010 Task 8's official macro-F1.
    Semeval2010,
    /// UAS and LAS of dependency trees.
    Attachment,
    /// Sentence-pair similarity: Pearson's r (headline), Spearman's ρ, MSE.
    Similarity,
    /// Multi-label documents: micro-F1, example-based F1, macro-F1.
    Multilabel,
}

/// Which decoding of a tree `average: attachment` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArcDecoding {
    /// Each word's highest-scoring head (`pred`).
    BestHead,
    /// The maximum spanning tree with one root (`pred_mst`).
    Mst,
}

/// Params of `evaluate` (the same key as [`EvaluateParams`] for its headlines).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateStageParams {
    /// Default from labels.json (see [`EvaluateParams`]).
    #[serde(default)]
    pub average: Option<Headline>,
    #[serde(default)]
    pub positive: Option<String>,
    /// With `average: attachment` (default `best_head`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<ArcDecoding>,
}

impl EvaluateStageParams {
    /// The params of the classification headlines, `None` for a word-pair headline.
    fn classification(&self) -> Option<EvaluateParams> {
        let average = match self.average {
            None => None,
            Some(Headline::Micro) => Some(Average::Micro),
            Some(Headline::Binary) => Some(Average::Binary),
            Some(Headline::Ner) => Some(Average::Ner),
            Some(
                Headline::Semeval2010
                | Headline::Attachment
                | Headline::Similarity
                | Headline::Multilabel,
            ) => return None,
        };
        Some(EvaluateParams {
            average,
            positive: self.positive.clone(),
        })
    }
}

/// A `predictions.jsonl` line of a relation instance.
#[derive(Debug, Deserialize)]
struct LabelLine {
    gold: String,
    pred: String,
}

/// A `predictions.jsonl` line of a tree.
#[derive(Debug, Deserialize)]
struct TreeLine {
    gold: Vec<String>,
    pred: Vec<String>,
    #[serde(default)]
    pred_mst: Option<Vec<String>>,
}

/// A `predictions.jsonl` line of a sentence pair.
#[derive(Debug, Deserialize)]
struct ScoreLine {
    gold: f64,
    pred: f64,
}

/// A `predictions.jsonl` line of a multi-label document.
#[derive(Debug, Deserialize)]
struct LabelSetLine {
    gold: Vec<String>,
    pred: Vec<String>,
}

fn metrics_error(path: &Path, e: impl std::fmt::Display) -> StageError {
    StageError::Input {
        name: "predictions".into(),
        message: format!("{}: {e}", path.display()),
    }
}

/// Pearson's r, Spearman's ρ and the MSE of `dir/predictions.jsonl`.
fn similarity_metrics(dir: &Path) -> Result<(serde_json::Value, String), StageError> {
    let path = dir.join("predictions.jsonl");
    let lines: Vec<ScoreLine> = jsonl::read(&path)?;
    let gold: Vec<f64> = lines.iter().map(|l| l.gold).collect();
    let pred: Vec<f64> = lines.iter().map(|l| l.pred).collect();
    let pearson = correlation::pearson(&pred, &gold).map_err(|e| metrics_error(&path, e))?;
    let spearman = correlation::spearman(&pred, &gold).map_err(|e| metrics_error(&path, e))?;
    let mse = correlation::mse(&pred, &gold).map_err(|e| metrics_error(&path, e))?;
    let md = format!(
        "Headline: Pearson's r between predicted and gold similarity over {} pairs.\n\n\
         | Pearson | Spearman | MSE |\n|---|---|---|\n| {pearson:.4} | {spearman:.4} | {mse:.4} |\n",
        lines.len()
    );
    let json = serde_json::json!({
        "average": Headline::Similarity,
        "pearson": pearson,
        "spearman": spearman,
        "mse": mse,
        "n": lines.len(),
    });
    Ok((json, md))
}

/// Micro-F1, example-based F1 and macro-F1 of `dir/predictions.jsonl`.
fn multilabel_metrics(dir: &Path) -> Result<(serde_json::Value, String), StageError> {
    let labels = crate::metrics::evaluation::read_labels(dir)?;
    let path = dir.join("predictions.jsonl");
    let lines: Vec<LabelSetLine> = jsonl::read(&path)?;
    let index = |set: &[String], line: usize| -> Result<Vec<usize>, StageError> {
        set.iter()
            .map(|l| {
                labels.labels.iter().position(|k| k == l).ok_or_else(|| {
                    metrics_error(
                        &path,
                        format!("line {line}: label `{l}` is not in labels.json"),
                    )
                })
            })
            .collect()
    };
    let mut gold = Vec::with_capacity(lines.len());
    let mut pred = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        gold.push(index(&l.gold, i + 1)?);
        pred.push(index(&l.pred, i + 1)?);
    }
    let s = multilabel::score(labels.labels.len(), &gold, &pred)
        .map_err(|e| metrics_error(&path, e))?;
    let mut md = format!(
        "Headline: multi-label scores over {} documents (a label predicted where its sigmoid \
         exceeds 0.5). Example-based F1 averages each document's F1; a document with no gold \
         and no predicted label scores 1.\n\n| micro-F1 | example-based F1 | macro-F1 |\n\
         |---|---|---|\n| {:.1} | {:.1} | {:.1} |\n\n| label | P | R | F1 | support |\n|---|---|---|---|---|\n",
        s.n,
        100.0 * s.micro.f1,
        100.0 * s.example_f1,
        100.0 * s.macro_f1
    );
    let mut per_label = serde_json::Map::new();
    for (name, c) in labels.labels.iter().zip(&s.per_label) {
        md.push_str(&format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {} |\n",
            100.0 * c.prf.precision,
            100.0 * c.prf.recall,
            100.0 * c.prf.f1,
            c.support
        ));
        per_label.insert(
            name.clone(),
            serde_json::to_value(c).unwrap_or(serde_json::Value::Null),
        );
    }
    let json = serde_json::json!({
        "average": Headline::Multilabel,
        "micro_f1": s.micro.f1,
        "micro_precision": s.micro.precision,
        "micro_recall": s.micro.recall,
        "tp": s.micro.tp,
        "fp": s.micro.fp,
        "fn": s.micro.fn_,
        "example_f1": s.example_f1,
        "macro_f1": s.macro_f1,
        "n": s.n,
        "per_label": per_label,
    });
    Ok((json, md))
}

/// The headline a `labels.json` task implies when `average:` is not given (`None`: the
/// classification headlines' own default).
fn task_headline(dir: &Path) -> Result<Option<Headline>, StageError> {
    let labels = crate::metrics::evaluation::read_labels(dir)?;
    Ok(match labels.task {
        Task::Similarity => Some(Headline::Similarity),
        Task::Multilabel => Some(Headline::Multilabel),
        Task::Relation | Task::Ner => None,
    })
}

/// SemEval-2010 Task 8's official score of `dir/predictions.jsonl`.
fn semeval_metrics(dir: &Path) -> Result<(serde_json::Value, String), StageError> {
    let lines: Vec<LabelLine> = jsonl::read(&dir.join("predictions.jsonl"))?;
    let gold: Vec<&str> = lines.iter().map(|l| l.gold.as_str()).collect();
    let pred: Vec<&str> = lines.iter().map(|l| l.pred.as_str()).collect();
    let score = official_score(&gold, &pred);
    let mut md = String::from(
        "Headline: SemEval-2010 Task 8 official score, macro-F1 over the relations of the key, \
         `Other` ignored, direction counted.\n\n| relation | P | R | F1 | correct | proposed | actual | wrong direction |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in &score.relations {
        md.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |\n",
            r.relation,
            100.0 * r.precision,
            100.0 * r.recall,
            100.0 * r.f1,
            r.correct,
            r.proposed,
            r.actual,
            r.wrong_direction
        ));
    }
    md.push_str(&format!(
        "| **Macro** | **{:.1}** | **{:.1}** | **{:.1}** | | | | |\n",
        100.0 * score.precision,
        100.0 * score.recall,
        100.0 * score.f1
    ));
    let json = serde_json::json!({
        "average": Headline::Semeval2010,
        "negative": OTHER,
        "precision": score.precision,
        "recall": score.recall,
        "f1": score.f1,
        "n": lines.len(),
        "per_relation": score.relations,
    });
    Ok((json, md))
}

/// UAS and LAS of `dir/predictions.jsonl` (punctuation included).
fn attachment_metrics(
    dir: &Path,
    decode: ArcDecoding,
) -> Result<(serde_json::Value, String), StageError> {
    let path = dir.join("predictions.jsonl");
    let lines: Vec<TreeLine> = jsonl::read(&path)?;
    let mut counts = AttachmentCounts::default();
    for (i, line) in lines.iter().enumerate() {
        let pred = match decode {
            ArcDecoding::BestHead => &line.pred,
            ArcDecoding::Mst => line.pred_mst.as_ref().ok_or_else(|| StageError::Input {
                name: "predictions".into(),
                message: format!(
                    "{}:{}: no `pred_mst` for `decode: mst`",
                    path.display(),
                    i + 1
                ),
            })?,
        };
        let gold = line
            .gold
            .iter()
            .map(|t| parse_arc_tag(t))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| StageError::Input {
                name: "predictions".into(),
                message: format!(
                    "{}:{}: a gold arc is not `HEAD:DEPREL`",
                    path.display(),
                    i + 1
                ),
            })?;
        // a word without a prediction (`_`) counts as wrong
        let pred: Vec<(usize, &str)> = pred
            .iter()
            .map(|t| parse_arc_tag(t).unwrap_or((usize::MAX, "_")))
            .collect();
        counts.add(&gold, &pred);
    }
    let md = format!(
        "Headline: attachment scores over {} words of {} sentences, punctuation included \
         ({} decoding).\n\n| UAS | LAS |\n|---|---|\n| {:.1} | {:.1} |\n",
        counts.words,
        lines.len(),
        match decode {
            ArcDecoding::BestHead => "best head",
            ArcDecoding::Mst => "maximum spanning tree",
        },
        100.0 * counts.uas(),
        100.0 * counts.las()
    );
    let json = serde_json::json!({
        "average": Headline::Attachment,
        "decode": decode,
        "uas": counts.uas(),
        "las": counts.las(),
        "words": counts.words,
        "n": lines.len(),
        "punctuation": "included",
    });
    Ok((json, md))
}

impl Stage for EvaluateStage {
    const KIND: &'static str = "evaluate";
    const VERSION: u32 = 1;
    type Params = EvaluateStageParams;
    const INPUTS: InputContract = InputContract::Declared(&[InputSpec::one(
        "predictions",
        "a fine-tuning's output (`predictions.jsonl`)",
    )]);

    fn check(p: &EvaluateStageParams) -> Result<(), ParamError> {
        if p.decode.is_some() && p.average != Some(Headline::Attachment) {
            return Err(ParamError::new(
                "decode",
                "only applies with `average: attachment`",
            ));
        }
        if p.positive.is_some() && p.average.is_some_and(|a| a != Headline::Binary) {
            return Err(ParamError::new(
                "positive",
                "only applies with `average: binary`",
            ));
        }
        Ok(())
    }

    fn run(ctx: &mut StageCtx, p: &EvaluateStageParams) -> Result<(), StageError> {
        let dir = ctx.inputs.path("predictions")?.to_path_buf();
        let implied = match p.average {
            Some(_) => None,
            None => task_headline(&dir)?,
        };
        let (json, md) = match (implied, p.classification(), p.average) {
            (Some(Headline::Similarity), _, _) | (None, None, Some(Headline::Similarity)) => {
                similarity_metrics(&dir)?
            }
            (Some(Headline::Multilabel), _, _) | (None, None, Some(Headline::Multilabel)) => {
                multilabel_metrics(&dir)?
            }
            (_, Some(params), _) => {
                let eval = evaluate_dir(&dir, &params)?;
                (eval.to_json(), eval.to_markdown(&ctx.name))
            }
            (_, None, Some(Headline::Attachment)) => {
                attachment_metrics(&dir, p.decode.unwrap_or(ArcDecoding::BestHead))?
            }
            (_, None, _) => semeval_metrics(&dir)?,
        };
        ctx.write_json("metrics.json", &json)?;
        let md_path = ctx.out_dir.join("per_class.md");
        std::fs::write(&md_path, md).map_err(|e| StageError::io(&md_path, e))?;
        copy_if_present(&dir, &ctx.out_dir, "history.json")?;
        copy_if_present(&dir, &ctx.out_dir, LABELS_FILE)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::json;

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
