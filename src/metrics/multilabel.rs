//! Multi-label document classification scores (HoC): each document has a gold label set
//! `Y_i` and a predicted set `Z_i` (labels whose sigmoid exceeds 0.5).
//!
//! - **micro-F1**: TP, FP, FN summed over every (document, label) decision, then
//!   `2TP / (2TP + FP + FN)`;
//! - **example-based F1** (BLUE's HoC metric, Peng et al. 2019; Godbole & Sarawagi 2004):
//!   `(1/n) Σ_i 2|Y_i ∩ Z_i| / (|Y_i| + |Z_i|)`. A document with no gold label and no
//!   predicted label (`Y_i = Z_i = ∅`) scores **1**: the prediction is exactly right. This
//!   is the convention of the multi-label literature's example-based measures (Mulan's
//!   `ExampleBasedFMeasure`, Tsoumakas et al.); BLUE's `eval_hoc.py` divides by `|Y_i|` and
//!   so leaves the case undefined, and scikit-learn's `average="samples"` returns its
//!   `zero_division` value there. An empty gold set with a non-empty prediction scores 0;
//! - **macro-F1**: the mean over the labels of each label's F1 (BLURB's HoC metric), a
//!   label with TP = FP = FN = 0 scoring 0 (the crate's one zero rule, see [`super`]).

use super::{ClassScore, MetricsError, Prf};

/// The scores of a set of documents.
#[derive(Debug, Clone, PartialEq)]
pub struct MultilabelScores {
    /// Micro P/R/F1 over every (document, label) decision.
    pub micro: Prf,
    /// Mean per-document F1 (empty/empty = 1).
    pub example_f1: f64,
    /// Mean of the per-label F1s.
    pub macro_f1: f64,
    /// Each label's one-vs-rest scores, in label order.
    pub per_label: Vec<ClassScore>,
    /// Documents.
    pub n: usize,
}

/// `2|Y ∩ Z| / (|Y| + |Z|)`, and 1 when both sets are empty. `gold` and `pred` are label
/// indices without repeats.
pub fn example_f1(gold: &[usize], pred: &[usize]) -> f64 {
    if gold.is_empty() && pred.is_empty() {
        return 1.0;
    }
    let common = gold.iter().filter(|g| pred.contains(g)).count();
    2.0 * common as f64 / (gold.len() + pred.len()) as f64
}

/// Scores documents over `num_labels` labels: `gold[i]` and `pred[i]` are the label indices
/// of document i.
pub fn score(
    num_labels: usize,
    gold: &[Vec<usize>],
    pred: &[Vec<usize>],
) -> Result<MultilabelScores, MetricsError> {
    if gold.len() != pred.len() {
        return Err(MetricsError::LengthMismatch {
            gold: gold.len(),
            pred: pred.len(),
        });
    }
    if gold.is_empty() {
        return Err(MetricsError::Empty("no documents to score".into()));
    }
    let mut counts = vec![(0u64, 0u64, 0u64, 0u64); num_labels]; // tp, fp, fn, support
    let mut example_sum = 0.0;
    for (g, p) in gold.iter().zip(pred) {
        for &k in g.iter().chain(p) {
            if k >= num_labels {
                return Err(MetricsError::Empty(format!(
                    "label index {k} out of range for {num_labels} labels"
                )));
            }
        }
        for (k, c) in counts.iter_mut().enumerate() {
            let (in_g, in_p) = (g.contains(&k), p.contains(&k));
            match (in_g, in_p) {
                (true, true) => c.0 += 1,
                (false, true) => c.1 += 1,
                (true, false) => c.2 += 1,
                (false, false) => {}
            }
            if in_g {
                c.3 += 1;
            }
        }
        example_sum += example_f1(g, p);
    }
    let per_label: Vec<ClassScore> = counts
        .iter()
        .map(|&(tp, fp, fn_, support)| ClassScore {
            prf: Prf::from_counts(tp, fp, fn_),
            support,
        })
        .collect();
    let (tp, fp, fn_) = counts
        .iter()
        .fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
    let macro_f1 = if num_labels == 0 {
        0.0
    } else {
        per_label.iter().map(|s| s.prf.f1).sum::<f64>() / num_labels as f64
    };
    Ok(MultilabelScores {
        micro: Prf::from_counts(tp, fp, fn_),
        example_f1: example_sum / gold.len() as f64,
        macro_f1,
        per_label,
        n: gold.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_documents_by_hand() {
        // labels 0, 1, 2
        // doc 1: Y = {0, 1}, Z = {0}    → F = 2·1/(2+1) = 2/3
        // doc 2: Y = {2},    Z = {1, 2} → F = 2·1/(1+2) = 2/3
        // doc 3: Y = ∅,      Z = ∅      → F = 1 (empty/empty)
        // example F1 = (2/3 + 2/3 + 1)/3 = 7/9
        // label 0: tp 1 → F1 1; label 1: fp 1 (doc 2), fn 1 (doc 1) → F1 0;
        // label 2: tp 1 → F1 1; macro = 2/3
        // micro: tp 2, fp 1, fn 1 → P = R = F1 = 2/3
        let gold = vec![vec![0, 1], vec![2], vec![]];
        let pred = vec![vec![0], vec![1, 2], vec![]];
        let s = score(3, &gold, &pred).unwrap();
        assert!((s.example_f1 - 7.0 / 9.0).abs() < 1e-12, "{}", s.example_f1);
        assert!((s.macro_f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((s.micro.tp, s.micro.fp, s.micro.fn_), (2, 1, 1));
        assert!((s.micro.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            s.per_label.iter().map(|c| c.support).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        assert_eq!(s.n, 3);
    }

    #[test]
    fn empty_gold_with_a_prediction_scores_zero() {
        assert_eq!(example_f1(&[], &[1]), 0.0);
        assert_eq!(example_f1(&[], &[]), 1.0);
        assert_eq!(example_f1(&[0, 1], &[0, 1]), 1.0);
        assert!(score(2, &[vec![0]], &[vec![5]]).is_err());
        assert!(score(2, &[], &[]).is_err());
    }
}
