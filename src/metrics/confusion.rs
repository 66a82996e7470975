//! Confusion matrix over a declared label set, and the scores read from it.

use serde::{Deserialize, Serialize};

use super::{MetricsError, Prf};

/// Counts of (gold, predicted) label pairs; `counts[g][p]` = instances of gold label
/// `labels[g]` predicted as `labels[p]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    labels: Vec<String>,
    counts: Vec<Vec<u64>>,
}

/// One class scored one-vs-rest, with its gold count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    #[serde(flatten)]
    pub prf: Prf,
    /// Gold instances of this class.
    pub support: u64,
}

impl Confusion {
    /// An empty matrix over `labels` (each label once).
    pub fn new(labels: Vec<String>) -> Result<Confusion, MetricsError> {
        for (i, label) in labels.iter().enumerate() {
            if labels[..i].contains(label) {
                return Err(MetricsError::DuplicateLabel(label.clone()));
            }
        }
        let n = labels.len();
        Ok(Confusion {
            labels,
            counts: vec![vec![0; n]; n],
        })
    }

    /// A matrix filled from `(gold, pred)` pairs.
    pub fn from_pairs<'a>(
        labels: Vec<String>,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Confusion, MetricsError> {
        let mut c = Confusion::new(labels)?;
        for (gold, pred) in pairs {
            c.add(gold, pred)?;
        }
        Ok(c)
    }

    /// Counts one instance.
    pub fn add(&mut self, gold: &str, pred: &str) -> Result<(), MetricsError> {
        let g = self.index(gold)?;
        let p = self.index(pred)?;
        self.counts[g][p] += 1;
        Ok(())
    }

    /// Position of `label` in the label set.
    pub fn index(&self, label: &str) -> Result<usize, MetricsError> {
        self.labels
            .iter()
            .position(|l| l == label)
            .ok_or_else(|| MetricsError::UnknownLabel {
                label: label.to_string(),
                known: self.labels.join(", "),
            })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Rows are gold labels, columns predicted labels, in [`Confusion::labels`] order.
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// Number of instances counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Label `label` one-vs-rest: TP = C[l][l], FP = column sum − TP, FN = row sum − TP.
    pub fn class(&self, label: &str) -> Result<ClassScore, MetricsError> {
        self.index(label).map(|l| self.score_at(l))
    }

    /// Every label scored one-vs-rest, in label order.
    pub fn per_class(&self) -> Vec<(String, ClassScore)> {
        (0..self.labels.len())
            .map(|l| (self.labels[l].clone(), self.score_at(l)))
            .collect()
    }

    fn score_at(&self, l: usize) -> ClassScore {
        let tp = self.counts[l][l];
        let predicted: u64 = self.counts.iter().map(|row| row[l]).sum();
        let support: u64 = self.counts[l].iter().sum();
        ClassScore {
            prf: Prf::from_counts(tp, predicted - tp, support - tp),
            support,
        }
    }

    /// Micro P/R/F1 over the non-negative classes:
    /// TP = pred = gold ≠ negative; FP = pred ≠ negative and pred ≠ gold;
    /// FN = gold ≠ negative and pred ≠ gold. A wrong non-negative prediction for a
    /// non-negative gold counts once as FP and once as FN. With no negative label this is
    /// micro-averaging over all classes (P = R = F1 = accuracy).
    pub fn micro(&self, negative: Option<&str>) -> Result<Prf, MetricsError> {
        let neg = negative.map(|n| self.index(n)).transpose()?;
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for (g, row) in self.counts.iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                if g == p {
                    if Some(g) != neg {
                        tp += n;
                    }
                    continue;
                }
                if Some(p) != neg {
                    fp += n;
                }
                if Some(g) != neg {
                    fn_ += n;
                }
            }
        }
        Ok(Prf::from_counts(tp, fp, fn_))
    }

    /// P/R/F1 of the positive class of a binary task (PPI): the class scored one-vs-rest.
    pub fn binary(&self, positive: &str) -> Result<Prf, MetricsError> {
        self.class(positive).map(|c| c.prf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// A 3-class task with negative `false` (DDI-like), counted by hand:
    ///
    /// | gold \ pred | false | effect | int |
    /// |---|---|---|---|
    /// | false  | 5 | 1 | 0 |
    /// | effect | 2 | 3 | 1 |
    /// | int    | 0 | 1 | 2 |
    fn ddi_like() -> Confusion {
        let mut pairs = Vec::new();
        let cells = [
            ("false", "false", 5),
            ("false", "effect", 1),
            ("effect", "false", 2),
            ("effect", "effect", 3),
            ("effect", "int", 1),
            ("int", "effect", 1),
            ("int", "int", 2),
        ];
        for (g, p, n) in cells {
            for _ in 0..n {
                pairs.push((g, p));
            }
        }
        Confusion::from_pairs(labels(&["false", "effect", "int"]), pairs).unwrap()
    }

    #[test]
    fn micro_over_non_negative_classes_matches_hand_count() {
        let c = ddi_like();
        assert_eq!(c.total(), 15);
        let m = c.micro(Some("false")).unwrap();
        // TP: effect→effect 3 + int→int 2 = 5.
        // FP: pred ≠ false and ≠ gold: false→effect 1, effect→int 1, int→effect 1 = 3.
        // FN: gold ≠ false and ≠ pred: effect→false 2, effect→int 1, int→effect 1 = 4.
        assert_eq!((m.tp, m.fp, m.fn_), (5, 3, 4));
        assert_eq!(m.precision, 5.0 / 8.0);
        assert_eq!(m.recall, 5.0 / 9.0);
        assert!((m.f1 - 10.0 / 17.0).abs() < 1e-15);
    }

    #[test]
    fn micro_without_negative_is_accuracy() {
        let m = ddi_like().micro(None).unwrap();
        assert_eq!(m.precision, 10.0 / 15.0);
        assert_eq!(m.recall, 10.0 / 15.0);
        assert!((m.f1 - 10.0 / 15.0).abs() < 1e-15);
    }

    #[test]
    fn per_class_is_one_vs_rest() {
        let per = ddi_like().per_class();
        let effect = per.iter().find(|(l, _)| l == "effect").unwrap().1;
        // effect: TP 3; predicted effect 1+3+1 = 5 → FP 2; gold effect 6 → FN 3.
        assert_eq!((effect.prf.tp, effect.prf.fp, effect.prf.fn_), (3, 2, 3));
        assert_eq!(effect.support, 6);
        assert_eq!(effect.prf.precision, 0.6);
        assert_eq!(effect.prf.recall, 0.5);
        let names: Vec<&str> = per.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(names, ["false", "effect", "int"]);
    }

    #[test]
    fn binary_positive_class() {
        // PPI-like: gold/pred pairs of a 2-class task.
        let pairs = [
            ("pos", "pos"),
            ("pos", "pos"),
            ("pos", "neg"),
            ("neg", "pos"),
            ("neg", "neg"),
            ("neg", "neg"),
        ];
        let c = Confusion::from_pairs(labels(&["neg", "pos"]), pairs).unwrap();
        let b = c.binary("pos").unwrap();
        assert_eq!((b.tp, b.fp, b.fn_), (2, 1, 1));
        assert_eq!(b.precision, 2.0 / 3.0);
        // With two labels, micro over non-negative classes is the positive class.
        assert_eq!(c.micro(Some("neg")).unwrap(), b);
    }

    #[test]
    fn nothing_predicted_positive_gives_zero_not_nan() {
        let pairs = [("pos", "neg"), ("pos", "neg"), ("neg", "neg")];
        let c = Confusion::from_pairs(labels(&["neg", "pos"]), pairs).unwrap();
        let b = c.binary("pos").unwrap();
        assert_eq!((b.precision, b.recall, b.f1), (0.0, 0.0, 0.0));
        assert_eq!((b.tp, b.fp, b.fn_), (0, 0, 2));
        let m = c.micro(Some("neg")).unwrap();
        assert_eq!(m.f1, 0.0);
    }

    #[test]
    fn unknown_and_duplicate_labels_are_errors() {
        let mut c = Confusion::new(labels(&["a", "b"])).unwrap();
        let err = c.add("a", "z").unwrap_err().to_string();
        assert!(err.contains("`z`") && err.contains("a, b"), "{err}");
        assert!(Confusion::new(labels(&["a", "a"])).is_err());
        assert!(c.micro(Some("nope")).is_err());
    }
}
