//! Evaluation metrics: P/R/F1 (micro over non-negative classes, binary), Pearson and
//! Spearman correlations, multi-label micro / example-based / macro F1, mean ± std, and
//! the Student's t tail a paired test over seeds reads.
//!
//! Everything here is a pure function of labels or counts; the `evaluate` and
//! `cv_aggregate` stages read files and call into it.
//!
//! **Zero denominators** (one rule everywhere, the same as scikit-learn's
//! `zero_division=0` and conlleval):
//! - precision = TP / (TP + FP), and **0** when nothing was predicted positive (TP + FP = 0);
//! - recall = TP / (TP + FN), and **0** when there is no gold positive (TP + FN = 0);
//! - F1 = 2·TP / (2·TP + FP + FN) (= 2PR / (P + R)), and **0** when TP = FP = FN = 0.
//!
//! Spread over seeds or folds is the **sample** standard deviation (n − 1 in the
//! denominator); it is undefined (`None`) for fewer than two values.

pub mod attachment;
pub mod confusion;
pub mod correlation;
pub mod cv;
pub mod evaluation;
pub mod multilabel;
pub mod ner;
pub mod prf;
pub mod semeval;
pub mod spread;
pub mod student_t;

pub use confusion::{ClassScore, Confusion};
pub use cv::{CvSummary, FoldScore, PrfSpread};
pub use ner::{entities, Entity, NerCounts};
pub use prf::Prf;
pub use spread::MeanStd;

/// A label or tag sequence that the metrics cannot score.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A label that is not in the declared label set.
    #[error("unknown label `{label}` (labels: {known})")]
    UnknownLabel { label: String, known: String },
    /// The same label declared twice.
    #[error("label `{0}` is declared twice")]
    DuplicateLabel(String),
    /// A NER tag that is neither `O` nor `B-TYPE` / `I-TYPE`.
    #[error("tag `{tag}` at position {position} is not IOB2 (`O`, `B-TYPE`, `I-TYPE`)")]
    BadTag { tag: String, position: usize },
    /// Gold and predicted tag sequences of different lengths.
    #[error("{gold} gold tags but {pred} predicted tags")]
    LengthMismatch { gold: usize, pred: usize },
    /// An aggregate over nothing.
    #[error("{0}")]
    Empty(String),
}
