//! The official score of SemEval-2010 Task 8 (scorer v1.2, evaluation (iii)): the
//! macro-averaged F1 over the nine relations, `Other` ignored, in the (9+1)-way setting
//! with directionality taken into account.
//!
//! Per relation R (direction dropped: `Cause-Effect(e1,e2)` → `Cause-Effect`):
//! - correct(R) = instances whose gold relation is R and whose prediction equals the gold
//!   label exactly (a prediction of R in the wrong direction is wrong: the scorer's
//!   `xDIRx`);
//! - proposed(R) = instances predicted as R in either direction (v1.2 counts the
//!   wrong-direction ones here: the fix to (iii)'s precision);
//! - actual(R) = instances whose gold relation is R;
//! - P = correct/proposed, R = correct/actual (0 when the denominator is 0),
//!   F1 = 2PR/(P+R) (0 when P + R = 0).
//!
//! The macro P, R and F1 are the means of the per-relation values over the relations of
//! the answer key, `Other` excluded (the scorer counts the distinct labels of the key).

use std::collections::BTreeSet;

use serde::Serialize;

/// The label of pairs in none of the relations.
pub const OTHER: &str = "Other";

/// One relation's counts and scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelationScore {
    pub relation: String,
    pub correct: u64,
    pub proposed: u64,
    pub actual: u64,
    /// Predicted R with the gold relation R in the other direction.
    pub wrong_direction: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// The official macro scores and the per-relation rows behind them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SemevalScore {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub relations: Vec<RelationScore>,
}

/// `Cause-Effect(e1,e2)` → `Cause-Effect`; `Other` stays `Other`.
pub fn undirected(label: &str) -> &str {
    label
        .strip_suffix("(e1,e2)")
        .or_else(|| label.strip_suffix("(e2,e1)"))
        .unwrap_or(label)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The official score of `pred` against `gold` (directed labels, one per instance).
pub fn official_score(gold: &[&str], pred: &[&str]) -> SemevalScore {
    let relations: BTreeSet<&str> = gold
        .iter()
        .map(|g| undirected(g))
        .filter(|r| *r != OTHER)
        .collect();
    let rows: Vec<RelationScore> = relations
        .iter()
        .map(|&r| {
            let mut row = RelationScore {
                relation: r.to_string(),
                correct: 0,
                proposed: 0,
                actual: 0,
                wrong_direction: 0,
                precision: 0.0,
                recall: 0.0,
                f1: 0.0,
            };
            for (g, p) in gold.iter().zip(pred) {
                let (gr, pr) = (undirected(g), undirected(p));
                if gr == r {
                    row.actual += 1;
                    if g == p {
                        row.correct += 1;
                    } else if pr == r {
                        row.wrong_direction += 1;
                    }
                }
                if pr == r {
                    row.proposed += 1;
                }
            }
            row.precision = ratio(row.correct, row.proposed);
            row.recall = ratio(row.correct, row.actual);
            let sum = row.precision + row.recall;
            row.f1 = if sum > 0.0 {
                2.0 * row.precision * row.recall / sum
            } else {
                0.0
            };
            row
        })
        .collect();
    let n = rows.len().max(1) as f64;
    SemevalScore {
        precision: rows.iter().map(|r| r.precision).sum::<f64>() / n,
        recall: rows.iter().map(|r| r.recall).sum::<f64>() / n,
        f1: rows.iter().map(|r| r.f1).sum::<f64>() / n,
        relations: rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CE12: &str = "Cause-Effect(e1,e2)";
    const CE21: &str = "Cause-Effect(e2,e1)";
    const CW12: &str = "Component-Whole(e1,e2)";

    fn row<'a>(s: &'a SemevalScore, r: &str) -> &'a RelationScore {
        s.relations
            .iter()
            .find(|x| x.relation == r)
            .unwrap_or_else(|| panic!("no row {r}"))
    }

    #[test]
    fn direction_counts_and_other_is_ignored() {
        // gold:  CE12 CE12 CE21 CW12 Other Other
        // pred:  CE12 CE21 CE21 Other CW12 Other
        let gold = [CE12, CE12, CE21, CW12, OTHER, OTHER];
        let pred = [CE12, CE21, CE21, OTHER, CW12, OTHER];
        let s = official_score(&gold, &pred);
        // Cause-Effect: actual 3, correct 2 (one wrong direction), proposed 3
        let ce = row(&s, "Cause-Effect");
        assert_eq!((ce.correct, ce.proposed, ce.actual), (2, 3, 3));
        assert_eq!(ce.wrong_direction, 1);
        assert!((ce.f1 - 2.0 / 3.0).abs() < 1e-12);
        // Component-Whole: actual 1, proposed 1 (on an Other), correct 0
        let cw = row(&s, "Component-Whole");
        assert_eq!((cw.correct, cw.proposed, cw.actual), (0, 1, 1));
        assert_eq!(cw.f1, 0.0);
        // two relations in the key, Other not among them: macro = mean
        assert_eq!(s.relations.len(), 2);
        assert!((s.f1 - (2.0 / 3.0 + 0.0) / 2.0).abs() < 1e-12);
        assert!((s.precision - (2.0 / 3.0) / 2.0).abs() < 1e-12);
        // the correct Other never counts
        let all_other = official_score(&[OTHER, CE12], &[OTHER, OTHER]);
        assert_eq!((all_other.precision, all_other.f1), (0.0, 0.0));
    }

    #[test]
    fn a_perfect_answer_scores_one_and_a_swapped_direction_zero() {
        let gold = [CE12, CE21, CW12, OTHER];
        assert_eq!(official_score(&gold, &gold).f1, 1.0);
        // every relation in the right relation but the wrong direction: nothing correct,
        // yet proposed, so precision 0 (v1.2), not undefined
        let swapped = [CE21, CE12, "Component-Whole(e2,e1)", OTHER];
        let s = official_score(&gold, &swapped);
        assert_eq!(s.f1, 0.0);
        assert_eq!(row(&s, "Cause-Effect").proposed, 2);
        assert_eq!(row(&s, "Cause-Effect").wrong_direction, 2);
    }

    #[test]
    fn macro_is_not_micro() {
        // relation A: 1 of 1 right; relation B: 1 of 3 right, with 1 proposed
        let gold = ["A(e1,e2)", "B(e1,e2)", "B(e1,e2)", "B(e1,e2)"];
        let pred = ["A(e1,e2)", "B(e1,e2)", OTHER, OTHER];
        let s = official_score(&gold, &pred);
        // F1(A) = 1, F1(B) = 2·1·(1/3)/(4/3) = 0.5; macro 0.75; micro would be 2·2/(2+4) = 0.667
        assert!((s.f1 - 0.75).abs() < 1e-12, "{}", s.f1);
        assert!((s.recall - (1.0 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
    }
}
