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

use super::{InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::data::schema::LABELS_FILE;
use crate::metrics::evaluation::{copy_if_present, evaluate_dir, Average, EvaluateParams};
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
