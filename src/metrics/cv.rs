//! Cross-validation aggregates: P/R/F1 averaged over folds (the authors' convention:
//! F1 is the mean of the fold F1s, not 2PR/(P+R) of the mean P and R) beside the scores of
//! the pooled predictions of all folds (counts added).

use serde::{Deserialize, Serialize};

use super::{MeanStd, MetricsError, Prf};

/// Mean ± std of precision, recall and F1 over folds or seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrfSpread {
    pub precision: MeanStd,
    pub recall: MeanStd,
    pub f1: MeanStd,
}

impl PrfSpread {
    /// Spread of the given scores; `None` for an empty slice.
    pub fn of(scores: &[Prf]) -> Option<PrfSpread> {
        let pick = |f: fn(&Prf) -> f64| MeanStd::of(&scores.iter().map(f).collect::<Vec<_>>());
        Some(PrfSpread {
            precision: pick(|s| s.precision)?,
            recall: pick(|s| s.recall)?,
            f1: pick(|s| s.f1)?,
        })
    }
}

/// One fold's scores and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldScore {
    /// The fold's matrix coordinates (e.g. `{"fold": 3}`).
    pub coords: std::collections::BTreeMap<String, serde_json::Value>,
    /// Upstream stage instance and key.
    pub stage: String,
    pub key: String,
    #[serde(flatten)]
    pub prf: Prf,
}

/// Mean over folds (reported first), sample std over folds, and pooled scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvSummary {
    pub mean: Prf3,
    pub std: Std3,
    pub pooled: Prf,
    pub per_fold: Vec<FoldScore>,
    pub n_folds: usize,
}

/// P, R, F1 without counts (a mean of fractions has none).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prf3 {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Sample std of P, R, F1 over folds; `None` with fewer than two folds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Std3 {
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

impl CvSummary {
    /// Aggregates the folds' scores; error when there are none.
    pub fn of(per_fold: Vec<FoldScore>) -> Result<CvSummary, MetricsError> {
        let scores: Vec<Prf> = per_fold.iter().map(|f| f.prf).collect();
        let spread = PrfSpread::of(&scores)
            .ok_or_else(|| MetricsError::Empty("cross-validation over zero folds".to_string()))?;
        let pooled = scores
            .iter()
            .fold(Prf::from_counts(0, 0, 0), |acc, s| acc.pooled_with(s));
        Ok(CvSummary {
            mean: Prf3 {
                precision: spread.precision.mean,
                recall: spread.recall.mean,
                f1: spread.f1.mean,
            },
            std: Std3 {
                precision: spread.precision.std,
                recall: spread.recall.std,
                f1: spread.f1.std,
            },
            pooled,
            n_folds: per_fold.len(),
            per_fold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(i: i64, tp: u64, fp: u64, fn_: u64) -> FoldScore {
        FoldScore {
            coords: [("fold".to_string(), serde_json::json!(i))].into(),
            stage: format!("evaluate[fold={i}]"),
            key: format!("k{i}"),
            prf: Prf::from_counts(tp, fp, fn_),
        }
    }

    #[test]
    fn mean_over_folds_differs_from_pooled() {
        // Fold 0: TP 1, FP 0, FN 1 → P 1, R .5, F1 2/3.
        // Fold 1: TP 3, FP 3, FN 1 → P .5, R .75, F1 6/10 = .6.
        let s = CvSummary::of(vec![fold(0, 1, 0, 1), fold(1, 3, 3, 1)]).unwrap();
        assert_eq!(s.mean.precision, 0.75);
        assert_eq!(s.mean.recall, 0.625);
        assert!((s.mean.f1 - (2.0 / 3.0 + 0.6) / 2.0).abs() < 1e-15);
        // std of {1, .5} = sqrt(((.25)^2 * 2) / 1) = .353553...
        assert!((s.std.precision.unwrap() - 0.125f64.sqrt()).abs() < 1e-12);
        // Pooled: TP 4, FP 3, FN 2 → P 4/7, R 4/6, F1 8/13.
        assert_eq!((s.pooled.tp, s.pooled.fp, s.pooled.fn_), (4, 3, 2));
        assert_eq!(s.pooled.precision, 4.0 / 7.0);
        assert!((s.pooled.f1 - 8.0 / 13.0).abs() < 1e-15);
        // The authors' F1 is the mean of the fold F1s, not 2PR/(P+R) of the means.
        let f1_of_means = 2.0 * 0.75 * 0.625 / (0.75 + 0.625);
        assert!((s.mean.f1 - f1_of_means).abs() > 1e-3);
        assert_eq!(s.n_folds, 2);
    }

    #[test]
    fn zero_folds_is_an_error() {
        assert!(CvSummary::of(vec![]).is_err());
    }
}
