//! Trigger-word weights in positive vs negative instances (su2020 IV.E, Fig. 4): "for the
//! negative instances, small weights should be learned on trigger words since there is no
//! relationship between the entities".

use serde::{Deserialize, Serialize};

use super::ranking::StemTally;

/// Default trigger stems: the six of su2020 Fig. 4 (`associate`, `interact` for PPI;
/// `decrease`, `inhibit` for DDI; `stimulate`, `regulate` for ChemProt), then the trigger
/// words of the Fig. 2 / Fig. 3 examples (`activates`, `mediate`) and `bind` (Table V, PPI).
pub const PAPER_TRIGGERS: &[&str] = &[
    "associ", "interact", "decreas", "inhibit", "stimul", "regul", "activ", "mediat", "bind",
];

/// The mean weight of one trigger stem in positive and in negative instances (`None` where
/// it never occurs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerWeight {
    pub stem: String,
    pub positive_mean: Option<f64>,
    pub negative_mean: Option<f64>,
    pub positive_count: usize,
    pub negative_count: usize,
}

/// Looks each trigger stem up in the positive and the negative instances' tallies (built
/// the same way, e.g. with [`StemTally::add_near_entities`]).
pub fn trigger_weights(
    positive: &StemTally,
    negative: &StemTally,
    triggers: &[String],
) -> Vec<TriggerWeight> {
    triggers
        .iter()
        .map(|stem| {
            let pos = positive.get(stem);
            let neg = negative.get(stem);
            TriggerWeight {
                stem: stem.clone(),
                positive_mean: pos.as_ref().map(|w| w.mean_weight),
                negative_mean: neg.as_ref().map(|w| w.mean_weight),
                positive_count: pos.map_or(0, |w| w.count),
                negative_count: neg.map_or(0, |w| w.count),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::stem::porter_stem;
    use crate::analysis::words::merge_pieces;

    fn words(s: &str, alpha: &[f32]) -> Vec<crate::analysis::Word> {
        let tokens: Vec<String> = s.split_whitespace().map(String::from).collect();
        merge_pieces(&tokens, alpha).unwrap()
    }

    #[test]
    fn paper_triggers_are_the_stems_of_the_papers_words() {
        let words = [
            "associate",
            "interact",
            "decrease",
            "inhibit",
            "stimulate",
            "regulate",
            "activates",
            "mediate",
            "binding",
        ];
        let stems: Vec<String> = words.iter().map(|w| porter_stem(w)).collect();
        assert_eq!(stems, PAPER_TRIGGERS);
    }

    #[test]
    fn positive_and_negative_means_are_kept_apart() {
        let mut positive = StemTally::default();
        let mut negative = StemTally::default();
        positive.add_near_entities(
            &words(
                "[CLS] @ gene $ binds @ gene $ [SEP]",
                &[0.0, 0.1, 0.1, 0.0, 0.6, 0.1, 0.1, 0.0, 0.0],
            ),
            3,
        );
        positive.add_near_entities(
            &words(
                "[CLS] @ gene $ binding @ gene $ [SEP]",
                &[0.0, 0.1, 0.1, 0.0, 0.4, 0.1, 0.1, 0.0, 0.0],
            ),
            3,
        );
        negative.add_near_entities(
            &words(
                "[CLS] @ gene $ and @ gene $ bind [SEP]",
                &[0.0, 0.1, 0.1, 0.0, 0.3, 0.2, 0.1, 0.0, 0.2, 0.0],
            ),
            3,
        );
        let triggers = vec!["bind".to_string(), "inhibit".to_string()];
        let got = trigger_weights(&positive, &negative, &triggers);
        assert_eq!(got[0].stem, "bind");
        assert!((got[0].positive_mean.unwrap() - 0.5).abs() < 1e-6);
        assert_eq!(got[0].positive_count, 2);
        assert!((got[0].negative_mean.unwrap() - 0.2).abs() < 1e-6);
        assert_eq!(got[0].negative_count, 1);
        assert_eq!(
            got[1],
            TriggerWeight {
                stem: "inhibit".into(),
                positive_mean: None,
                negative_mean: None,
                positive_count: 0,
                negative_count: 0,
            }
        );
    }
}
