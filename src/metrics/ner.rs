//! Entity-level NER scores over IOB2 tag sequences, conlleval style: an entity counts as
//! correct only when its type, first and last token all match a gold entity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MetricsError, Prf};

/// One entity mention: tokens `start..end` (end exclusive) of type `kind`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entity {
    pub kind: String,
    pub start: usize,
    pub end: usize,
}

/// The entities of one tag sequence.
///
/// Tags are `O`, `B-TYPE`, `I-TYPE` (IOB2), or bare `B` / `I` (untyped, type `""`). As in
/// conlleval, an `I-TYPE` that does not continue an entity of the same type starts a new
/// one (so IOB1-style input is read the way conlleval reads it). Anything else is an error.
pub fn entities<S: AsRef<str>>(tags: &[S]) -> Result<Vec<Entity>, MetricsError> {
    let mut found = Vec::new();
    let mut open: Option<(String, usize)> = None;
    for (i, tag) in tags.iter().enumerate() {
        let tag = tag.as_ref();
        let (prefix, kind) = match tag.split_once('-') {
            Some((p, k)) => (p, k),
            None => (tag, ""),
        };
        match prefix {
            "O" if kind.is_empty() => close(&mut open, i, &mut found),
            "B" => {
                close(&mut open, i, &mut found);
                open = Some((kind.to_string(), i));
            }
            "I" => {
                if open.as_ref().is_some_and(|(k, _)| k == kind) {
                    continue;
                }
                close(&mut open, i, &mut found);
                open = Some((kind.to_string(), i));
            }
            _ => {
                return Err(MetricsError::BadTag {
                    tag: tag.to_string(),
                    position: i,
                })
            }
        }
    }
    close(&mut open, tags.len(), &mut found);
    Ok(found)
}

fn close(open: &mut Option<(String, usize)>, end: usize, found: &mut Vec<Entity>) {
    if let Some((kind, start)) = open.take() {
        found.push(Entity { kind, start, end });
    }
}

/// Running entity counts over many sentences, overall and per entity type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NerCounts {
    /// type → (correct, predicted, gold)
    per_type: BTreeMap<String, (u64, u64, u64)>,
    sentences: u64,
}

impl NerCounts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one sentence's gold and predicted tags (same length).
    pub fn add<S: AsRef<str>>(&mut self, gold: &[S], pred: &[S]) -> Result<(), MetricsError> {
        if gold.len() != pred.len() {
            return Err(MetricsError::LengthMismatch {
                gold: gold.len(),
                pred: pred.len(),
            });
        }
        let gold = entities(gold)?;
        let pred = entities(pred)?;
        for e in &gold {
            self.per_type.entry(e.kind.clone()).or_default().2 += 1;
        }
        for e in &pred {
            let entry = self.per_type.entry(e.kind.clone()).or_default();
            entry.1 += 1;
            if gold.contains(e) {
                entry.0 += 1;
            }
        }
        self.sentences += 1;
        Ok(())
    }

    /// Sentences counted.
    pub fn sentences(&self) -> u64 {
        self.sentences
    }

    /// Entity-level P/R/F1 over all types: TP = exact matches, FP = predicted − TP,
    /// FN = gold − TP.
    pub fn overall(&self) -> Prf {
        let (c, p, g) = self
            .per_type
            .values()
            .fold((0, 0, 0), |acc, v| (acc.0 + v.0, acc.1 + v.1, acc.2 + v.2));
        Prf::from_counts(c, p - c, g - c)
    }

    /// Entity-level P/R/F1 of each type, with its number of gold entities.
    pub fn per_type(&self) -> Vec<(String, super::ClassScore)> {
        self.per_type
            .iter()
            .map(|(kind, &(c, p, g))| {
                let score = super::ClassScore {
                    prf: Prf::from_counts(c, p - c, g - c),
                    support: g,
                };
                (kind.clone(), score)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(kind: &str, start: usize, end: usize) -> Entity {
        Entity {
            kind: kind.to_string(),
            start,
            end,
        }
    }

    #[test]
    fn iob2_spans() {
        let tags = ["B-Chem", "I-Chem", "O", "B-Dis", "B-Dis", "I-Dis", "O"];
        assert_eq!(
            entities(&tags).unwrap(),
            vec![ent("Chem", 0, 2), ent("Dis", 3, 4), ent("Dis", 4, 6)]
        );
    }

    #[test]
    fn stray_inside_tag_starts_an_entity_like_conlleval() {
        let tags = ["O", "I-Chem", "I-Chem", "I-Dis", "B"];
        assert_eq!(
            entities(&tags).unwrap(),
            vec![ent("Chem", 1, 3), ent("Dis", 3, 4), ent("", 4, 5)]
        );
    }

    #[test]
    fn bad_tags_are_errors() {
        let err = entities(&["O", "X-Chem"]).unwrap_err().to_string();
        assert!(
            err.contains("X-Chem") && err.contains("position 1"),
            "{err}"
        );
        assert!(entities(&["O-foo"]).is_err());
    }

    #[test]
    fn entity_level_scores_by_hand() {
        let mut counts = NerCounts::new();
        // Sentence 1: gold Chem[0,2) Dis[3,4); pred Chem[0,1) (boundary wrong) Dis[3,4) (correct).
        counts
            .add(
                &["B-Chem", "I-Chem", "O", "B-Dis"],
                &["B-Chem", "O", "O", "B-Dis"],
            )
            .unwrap();
        // Sentence 2: gold Chem[1,2); pred Dis[1,2) (type wrong) and Chem[3,4) (spurious).
        counts
            .add(&["O", "B-Chem", "O", "O"], &["O", "B-Dis", "O", "B-Chem"])
            .unwrap();
        let all = counts.overall();
        // Gold 3, predicted 4, correct 1.
        assert_eq!((all.tp, all.fp, all.fn_), (1, 3, 2));
        assert_eq!(all.precision, 0.25);
        assert_eq!(all.recall, 1.0 / 3.0);
        assert!((all.f1 - 2.0 / 7.0).abs() < 1e-15);
        let per: BTreeMap<_, _> = counts.per_type().into_iter().collect();
        // Chem: gold 2, pred 2, correct 0. Dis: gold 1, pred 2, correct 1.
        assert_eq!(per["Chem"].prf.f1, 0.0);
        assert_eq!(per["Chem"].support, 2);
        assert_eq!(per["Dis"].prf.precision, 0.5);
        assert_eq!(per["Dis"].prf.recall, 1.0);
        assert_eq!(counts.sentences(), 2);
    }

    #[test]
    fn no_predicted_entities_gives_zero() {
        let mut counts = NerCounts::new();
        counts.add(&["B-Chem", "O"], &["O", "O"]).unwrap();
        let all = counts.overall();
        assert_eq!((all.precision, all.recall, all.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut counts = NerCounts::new();
        assert!(counts.add(&["O", "O"], &["O"]).is_err());
    }
}
