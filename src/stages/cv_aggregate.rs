//! `cv_aggregate`: cross-validation summary over a family of fold results.
//!
//! Input `folds`: every instance of an `evaluate` stage (its `metrics.json` with counts) or
//! of a `finetune` stage (its `predictions.jsonl`, scored here as `evaluate` would, with
//! this stage's `average` / `positive`) that differs only in the fold coordinate. Writes `metrics.json`:
//! - `precision`, `recall`, `f1`: the **mean over folds** (the authors' convention, reported
//!   first: F1 is the mean of the fold F1s), also under `mean`;
//! - `std`: sample std over folds;
//! - `pooled`: P/R/F1 of all folds' predictions together (counts added), with `tp/fp/fn`;
//! - `per_class`: pooled per-class scores (when every fold has them);
//! - `per_fold`: each fold's coordinates, stage, key and scores; `n_folds`, `n`;
//!
//! and `history.json` with the per-epoch mean over folds when every fold has a history
//! with the same epochs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{InputArtifact, InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::metrics::evaluation::{evaluate_dir, Average, EvaluateParams};
use crate::metrics::{CvSummary, FoldScore, Prf};
use crate::report::rows::{coord_text, same_value};

/// Params of `cv_aggregate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CvAggregateParams {
    /// The coordinate that tells folds apart; the folds must agree on every other one.
    #[serde(default = "fold_coord")]
    pub over: String,
    /// For folds given as finetune outputs: as `evaluate`'s `average`.
    #[serde(default)]
    pub average: Option<Average>,
    /// For folds given as finetune outputs: as `evaluate`'s `positive`.
    #[serde(default)]
    pub positive: Option<String>,
}

fn fold_coord() -> String {
    "fold".to_string()
}

impl Default for CvAggregateParams {
    fn default() -> Self {
        CvAggregateParams {
            over: fold_coord(),
            average: None,
            positive: None,
        }
    }
}

/// One fold's metrics: scored from its test predictions when it has them (a finetune
/// output, whose own metrics.json holds dev scores), else its metrics.json (an evaluate
/// output).
fn fold_metrics(a: &InputArtifact, p: &CvAggregateParams) -> Result<Value, StageError> {
    if a.path.join("predictions.jsonl").is_file() {
        let params = EvaluateParams {
            average: p.average,
            positive: p.positive.clone(),
        };
        return Ok(evaluate_dir(&a.path, &params)?.to_json());
    }
    let metrics = a.path.join("metrics.json");
    if metrics.is_file() {
        let text = std::fs::read_to_string(&metrics).map_err(|e| StageError::io(&metrics, e))?;
        return serde_json::from_str(&text)
            .map_err(|e| StageError::Failed(format!("{}: {e}", metrics.display())));
    }
    Err(StageError::Input {
        name: "folds".to_string(),
        message: format!(
            "{} ({}) has neither predictions.jsonl nor metrics.json",
            a.stage,
            a.path.display()
        ),
    })
}

fn counts(m: &Value, stage: &str) -> Result<Prf, StageError> {
    let count = |k: &str| {
        m.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| StageError::Input {
                name: "folds".to_string(),
                message: format!(
                    "{stage}: metrics.json has no count `{k}` (pooling needs tp/fp/fn: \
                 bind the folds to an `evaluate` or `finetune` stage)"
                ),
            })
    };
    Ok(Prf::from_counts(count("tp")?, count("fp")?, count("fn")?))
}

/// Checks that the folds differ in `over` only, with one instance per fold.
fn check_family(folds: &[InputArtifact], over: &str) -> Result<(), StageError> {
    let input_error = |message: String| StageError::Input {
        name: "folds".to_string(),
        message,
    };
    let Some(first) = folds.first() else {
        return Err(input_error("no fold instances are bound".to_string()));
    };
    let mut seen: Vec<&Value> = Vec::new();
    for f in folds {
        let Some(v) = f.coords.get(over) else {
            return Err(input_error(format!(
                "{} has no `{over}` coordinate (set `over:` to the coordinate that numbers the folds)",
                f.stage
            )));
        };
        if seen.iter().any(|s| same_value(s, v)) {
            return Err(input_error(format!(
                "two instances have {over}={}; the folds must differ in `{over}` only",
                coord_text(v)
            )));
        }
        seen.push(v);
        let names = first.coords.keys().chain(f.coords.keys());
        for name in names.filter(|n| *n != over) {
            let (a, b) = (first.coords.get(name), f.coords.get(name));
            let same = matches!((a, b), (Some(x), Some(y)) if same_value(x, y));
            if !same {
                return Err(input_error(format!(
                    "{} and {} differ in `{name}`, not only in `{over}`: \
                     give this stage the same matrix over `{name}`",
                    first.stage, f.stage
                )));
            }
        }
    }
    Ok(())
}

/// Pooled per-class scores: per-class counts added over folds (when every fold has them).
fn pooled_per_class(fold_metrics: &[Value]) -> Option<Value> {
    let mut pooled: BTreeMap<String, (Prf, u64)> = BTreeMap::new();
    for m in fold_metrics {
        for (label, c) in m.get("per_class")?.as_object()? {
            let prf = Prf::from_counts(
                c.get("tp")?.as_u64()?,
                c.get("fp")?.as_u64()?,
                c.get("fn")?.as_u64()?,
            );
            let support = c.get("support")?.as_u64()?;
            let entry = pooled
                .entry(label.clone())
                .or_insert((Prf::from_counts(0, 0, 0), 0));
            *entry = (entry.0.pooled_with(&prf), entry.1 + support);
        }
    }
    let map: serde_json::Map<String, Value> = pooled
        .into_iter()
        .map(|(label, (prf, support))| {
            let mut v = json!(prf);
            v["support"] = json!(support);
            (label, v)
        })
        .collect();
    Some(Value::Object(map))
}

/// Per-epoch mean of every numeric field over the folds' histories (same epochs in all).
fn mean_history(dirs: &[&Path]) -> Result<Option<Value>, StageError> {
    let mut histories = Vec::new();
    for dir in dirs {
        let path = dir.join("history.json");
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| StageError::io(&path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| StageError::Failed(format!("{}: {e}", path.display())))?;
        match v.get("epochs").and_then(Value::as_array) {
            Some(epochs) => histories.push(epochs.clone()),
            None => return Ok(None),
        }
    }
    let Some(first) = histories.first() else {
        return Ok(None);
    };
    let epoch_ids = |h: &Vec<Value>| {
        h.iter()
            .map(|e| e.get("epoch").cloned())
            .collect::<Vec<_>>()
    };
    if histories.iter().any(|h| epoch_ids(h) != epoch_ids(first)) {
        return Ok(None);
    }
    let n = histories.len() as f64;
    let mut epochs = Vec::new();
    for (i, e) in first.iter().enumerate() {
        let mut out = serde_json::Map::new();
        for (k, v) in e.as_object().into_iter().flatten() {
            if k == "epoch" {
                out.insert(k.clone(), v.clone());
                continue;
            }
            let values: Option<Vec<f64>> =
                histories.iter().map(|h| h[i].get(k)?.as_f64()).collect();
            if let Some(values) = values {
                out.insert(k.clone(), json!(values.iter().sum::<f64>() / n));
            }
        }
        epochs.push(Value::Object(out));
    }
    Ok(Some(json!({
        "aggregate": format!("mean over {} folds", histories.len()),
        "epochs": epochs,
    })))
}

/// The `cv_aggregate` stage kind.
pub struct CvAggregateStage;

impl Stage for CvAggregateStage {
    const KIND: &'static str = "cv_aggregate";
    const VERSION: u32 = 1;
    type Params = CvAggregateParams;
    const INPUTS: InputContract = InputContract::Declared(&[InputSpec::many(
        "folds",
        "the fold results (`evaluate` stages)",
    )]);

    fn check(p: &CvAggregateParams) -> Result<(), ParamError> {
        if p.over.trim().is_empty() {
            return Err(ParamError::new("over", "must name a coordinate"));
        }
        Ok(())
    }

    fn run(ctx: &mut StageCtx, p: &CvAggregateParams) -> Result<(), StageError> {
        let folds = ctx.inputs.all("folds")?.to_vec();
        check_family(&folds, &p.over)?;
        let mut per_fold = Vec::new();
        let mut all_metrics = Vec::new();
        let mut n_total = Some(0u64);
        let mut average: Option<Value> = None;
        for f in &folds {
            ctx.check_cancelled()?;
            let m = fold_metrics(f, p)?;
            let avg = m.get("average").cloned().unwrap_or(Value::Null);
            match &average {
                None => average = Some(avg),
                Some(a) if *a != avg => {
                    return Err(StageError::Input {
                        name: "folds".to_string(),
                        message: format!(
                            "{} was scored with average {avg}, the others with {a}",
                            f.stage
                        ),
                    })
                }
                Some(_) => {}
            }
            n_total = n_total
                .zip(m.get("n").and_then(Value::as_u64))
                .map(|(a, b)| a + b);
            per_fold.push(FoldScore {
                coords: f.coords.to_map(),
                stage: f.stage.clone(),
                key: f.key_hex(),
                prf: counts(&m, &f.stage)?,
            });
            all_metrics.push(m);
        }
        per_fold.sort_by(|a, b| {
            let key = |f: &FoldScore| f.coords.get(&p.over).and_then(Value::as_f64);
            key(a)
                .partial_cmp(&key(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let summary = CvSummary::of(per_fold)?;
        let mut out = json!({
            "average": average.unwrap_or(Value::Null),
            "precision": summary.mean.precision,
            "recall": summary.mean.recall,
            "f1": summary.mean.f1,
            "mean": summary.mean,
            "std": summary.std,
            "pooled": summary.pooled,
            "per_fold": summary.per_fold,
            "n_folds": summary.n_folds,
            "n": n_total,
        });
        if let Some(per_class) = pooled_per_class(&all_metrics) {
            out["per_class"] = per_class;
        }
        ctx.write_json("metrics.json", &out)?;
        let dirs: Vec<&Path> = folds.iter().map(|f| f.path.as_path()).collect();
        if let Some(history) = mean_history(&dirs)? {
            ctx.write_json("history.json", &history)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::{Inputs, Progress};
    use std::path::PathBuf;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn fold(i: i64, head: &str) -> InputArtifact {
        InputArtifact {
            stage: format!("finetune[fold={i},head={head}]"),
            key: Some(crate::hash::StageKey([i as u8; 32])),
            coords: [
                ("fold".to_string(), json!(i)),
                ("head".to_string(), json!(head)),
            ]
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into(),
            path: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("tests/fixtures/report/predictions/ppi_fold{i}")),
        }
    }

    fn ctx(folds: Vec<InputArtifact>, dir: &Path) -> StageCtx {
        StageCtx {
            name: "cv[head=cls]".into(),
            key: "k".into(),
            coords: BTreeMap::new(),
            inputs: Inputs {
                by_name: [("folds".to_string(), folds)].into(),
            },
            out_dir: dir.to_path_buf(),
            scratch: dir.join("scratch"),
            checkpoint_dir: dir.join("ckpt"),
            progress: Progress::hidden(),
            device: "cpu".into(),
            cancel: Arc::new(AtomicBool::new(false)),
            run: Default::default(),
        }
    }

    #[test]
    fn mean_over_folds_first_pooled_beside() {
        let dir = tempfile::tempdir().unwrap();
        // Given in reverse order: per_fold comes out sorted by fold.
        let mut c = ctx(vec![fold(1, "cls"), fold(0, "cls")], dir.path());
        CvAggregateStage::run(&mut c, &CvAggregateParams::default()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("metrics.json")).unwrap();
        let m: Value = serde_json::from_str(&text).unwrap();
        // Fold 0: TP 1 FP 0 FN 1 → P 1, R .5; fold 1: TP 3 FP 3 FN 1 → P .5, R .75.
        assert_eq!(m["precision"], 0.75);
        assert_eq!(m["recall"], 0.625);
        let f1_mean = (2.0 / 3.0 + 0.6) / 2.0;
        assert!((m["f1"].as_f64().unwrap() - f1_mean).abs() < 1e-12);
        assert_eq!(m["mean"]["f1"], m["f1"]);
        // Pooled: TP 4, FP 3, FN 2.
        assert_eq!(m["pooled"]["precision"], 4.0 / 7.0);
        assert_eq!(m["pooled"]["tp"], 4);
        assert_eq!(m["n_folds"], 2);
        assert_eq!(m["n"], 11);
        assert_eq!(m["average"], "binary");
        assert_eq!(m["per_fold"][0]["coords"]["fold"], 0);
        assert_eq!(m["per_class"]["positive"]["support"], 6);
        assert!((m["std"]["precision"].as_f64().unwrap() - 0.125f64.sqrt()).abs() < 1e-12);
        let h: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("history.json")).unwrap(),
        )
        .unwrap();
        assert!((h["epochs"][0]["train_loss"].as_f64().unwrap() - 0.7).abs() < 1e-12);
        assert!((h["epochs"][1]["dev_f1"].as_f64().unwrap() - 0.6).abs() < 1e-12);
    }

    #[test]
    fn evaluate_outputs_aggregate_like_predictions() {
        // through the registry, as the engine runs it (no stage imports another)
        let registry = crate::stages::StageRegistry::builtin();
        let evaluate = registry.get("evaluate").unwrap();
        let params = evaluate.normalize(&serde_json::json!({})).unwrap();
        let root = tempfile::tempdir().unwrap();
        // Run `evaluate` on each fold, then aggregate its outputs.
        let mut evaluated = Vec::new();
        for i in [0, 1] {
            let out = root.path().join(format!("eval{i}"));
            std::fs::create_dir_all(&out).unwrap();
            let mut c = ctx(vec![], &out);
            c.inputs.by_name = [("predictions".to_string(), vec![fold(i, "cls")])].into();
            evaluate.run(&mut c, &params).unwrap();
            assert!(out.join("history.json").is_file() && out.join("per_class.md").is_file());
            let mut a = fold(i, "cls");
            a.path = out;
            evaluated.push(a);
        }
        let via_evaluate = root.path().join("cv_eval");
        let direct = root.path().join("cv_direct");
        for d in [&via_evaluate, &direct] {
            std::fs::create_dir_all(d).unwrap();
        }
        CvAggregateStage::run(
            &mut ctx(evaluated, &via_evaluate),
            &CvAggregateParams::default(),
        )
        .unwrap();
        CvAggregateStage::run(
            &mut ctx(vec![fold(0, "cls"), fold(1, "cls")], &direct),
            &CvAggregateParams::default(),
        )
        .unwrap();
        let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        let (a, b): (Value, Value) = (
            serde_json::from_str(&read(&via_evaluate, "metrics.json")).unwrap(),
            serde_json::from_str(&read(&direct, "metrics.json")).unwrap(),
        );
        for k in [
            "precision",
            "recall",
            "f1",
            "pooled",
            "std",
            "per_class",
            "n",
        ] {
            assert_eq!(a[k], b[k], "{k}");
        }
        assert_eq!(
            read(&via_evaluate, "history.json"),
            read(&direct, "history.json")
        );
    }

    #[test]
    fn folds_must_differ_in_the_fold_coordinate_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ctx(vec![fold(0, "cls"), fold(1, "sll_att")], dir.path());
        let err = CvAggregateStage::run(&mut c, &CvAggregateParams::default()).unwrap_err();
        assert!(err.to_string().contains("differ in `head`"), "{err}");
        let mut c = ctx(vec![fold(0, "cls"), fold(0, "cls")], dir.path());
        let err = CvAggregateStage::run(&mut c, &CvAggregateParams::default()).unwrap_err();
        assert!(err.to_string().contains("fold=0"), "{err}");
        let p = CvAggregateParams {
            over: "split".into(),
            ..CvAggregateParams::default()
        };
        let mut c = ctx(vec![fold(0, "cls")], dir.path());
        let err = CvAggregateStage::run(&mut c, &p).unwrap_err();
        assert!(err.to_string().contains("no `split` coordinate"), "{err}");
    }
}
