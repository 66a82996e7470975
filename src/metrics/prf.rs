//! Precision, recall and F1 from true-positive, false-positive and false-negative counts.

use serde::{Deserialize, Serialize};

/// Precision, recall and F1 (fractions in 0..=1) together with the counts they come from.
///
/// Zero denominators give 0 (see the [module docs](super)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Prf {
    /// P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN); each 0 when its denominator is 0.
    pub fn from_counts(tp: u64, fp: u64, fn_: u64) -> Prf {
        Prf {
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            f1: ratio(2 * tp, 2 * tp + fp + fn_),
            tp,
            fp,
            fn_,
        }
    }

    /// The scores of the concatenation of two evaluations (counts added).
    pub fn pooled_with(&self, other: &Prf) -> Prf {
        Prf::from_counts(self.tp + other.tp, self.fp + other.fp, self.fn_ + other.fn_)
    }
}

/// `num / den`, or 0 when `den` is 0.
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_give_hand_computed_scores() {
        // TP 8, FP 2, FN 4: P = 8/10, R = 8/12, F1 = 16/22.
        let s = Prf::from_counts(8, 2, 4);
        assert_eq!(s.precision, 0.8);
        assert!((s.recall - 2.0 / 3.0).abs() < 1e-15);
        assert!((s.f1 - 16.0 / 22.0).abs() < 1e-15);
        // F1 is the harmonic mean of P and R.
        let harmonic = 2.0 * s.precision * s.recall / (s.precision + s.recall);
        assert!((s.f1 - harmonic).abs() < 1e-12);
    }

    #[test]
    fn no_predicted_positives_gives_zero_precision_and_f1() {
        let s = Prf::from_counts(0, 0, 5);
        assert_eq!((s.precision, s.recall, s.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn no_gold_positives_gives_zero_recall() {
        let s = Prf::from_counts(0, 3, 0);
        assert_eq!((s.precision, s.recall, s.f1), (0.0, 0.0, 0.0));
        let empty = Prf::from_counts(0, 0, 0);
        assert_eq!((empty.precision, empty.recall, empty.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn pooling_adds_counts_not_scores() {
        // Fold a: 1/1 correct (P = R = 1); fold b: 1 TP, 3 FP, 0 FN (P = .25, R = 1).
        let a = Prf::from_counts(1, 0, 0);
        let b = Prf::from_counts(1, 3, 0);
        let pooled = a.pooled_with(&b);
        assert_eq!((pooled.tp, pooled.fp, pooled.fn_), (2, 3, 0));
        assert_eq!(pooled.precision, 0.4);
        assert_eq!(pooled.recall, 1.0);
    }

    #[test]
    fn serializes_fn_under_its_name() {
        let v = serde_json::to_value(Prf::from_counts(1, 2, 3)).unwrap();
        assert_eq!(v["fn"], 3);
        assert_eq!(v["tp"], 1);
    }
}
