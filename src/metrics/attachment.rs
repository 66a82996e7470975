//! Attachment scores of dependency trees: UAS (share of words with the right head) and LAS
//! (right head and right relation), over every word — **punctuation included** (the CoNLL
//! 2018 shared task convention; the CoNLL-X scorer left punctuation out).

use serde::Serialize;

/// Counts over a set of sentences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AttachmentCounts {
    pub words: u64,
    /// Words whose predicted head is the gold head.
    pub heads: u64,
    /// Words whose predicted head and relation are the gold ones.
    pub labelled: u64,
}

/// One word's arc: head (0 = root) and relation.
pub type Arc<'a> = (usize, &'a str);

impl AttachmentCounts {
    /// Adds one sentence; `pred` shorter than `gold` counts the missing words as wrong.
    pub fn add(&mut self, gold: &[Arc], pred: &[Arc]) {
        for (w, g) in gold.iter().enumerate() {
            self.words += 1;
            if let Some(p) = pred.get(w) {
                if p.0 == g.0 {
                    self.heads += 1;
                    if p.1 == g.1 {
                        self.labelled += 1;
                    }
                }
            }
        }
    }

    /// Unlabelled attachment score (0 without words).
    pub fn uas(&self) -> f64 {
        ratio(self.heads, self.words)
    }

    /// Labelled attachment score (0 without words).
    pub fn las(&self) -> f64 {
        ratio(self.labelled, self.words)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uas_and_las_by_hand() {
        let mut c = AttachmentCounts::default();
        // 3 words: heads right for words 1 and 3, relation right for word 1 only
        c.add(
            &[(2, "nsubj"), (0, "root"), (2, "punct")],
            &[(2, "nsubj"), (3, "root"), (2, "obj")],
        );
        // 2 words, one prediction missing
        c.add(&[(0, "root"), (1, "obj")], &[(0, "root")]);
        assert_eq!((c.words, c.heads, c.labelled), (5, 3, 2));
        assert!((c.uas() - 0.6).abs() < 1e-12);
        assert!((c.las() - 0.4).abs() < 1e-12);
        assert_eq!(AttachmentCounts::default().uas(), 0.0);
    }
}
