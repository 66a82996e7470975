//! The corpus-level "global attention weight" of a word (su2020 IV.D, su2022 Table 8): the
//! mean α of the word's Porter stem over its occurrences within `window` words of an entity
//! mention in the positive instances; the top stems by that mean.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stem::porter_stem;
use super::words::{near_entities, Word};

/// The mean α of one stem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StemWeight {
    pub stem: String,
    /// Mean over the counted occurrences of the word weights (sum of α over pieces).
    pub mean_weight: f64,
    /// Counted occurrences.
    pub count: usize,
    /// The stem's most frequent surface form (for reading `activ` as `activates`).
    pub example: String,
}

/// Running sums of word weights per stem.
#[derive(Debug, Clone, Default)]
pub struct StemTally {
    stems: BTreeMap<String, Tally>,
}

#[derive(Debug, Clone, Default)]
struct Tally {
    sum: f64,
    count: usize,
    forms: BTreeMap<String, usize>,
}

impl StemTally {
    /// Counts one occurrence of `word` under its Porter stem.
    pub fn add(&mut self, word: &Word) {
        let tally = self.stems.entry(porter_stem(&word.text)).or_default();
        tally.sum += word.weight;
        tally.count += 1;
        *tally.forms.entry(word.text.to_lowercase()).or_default() += 1;
    }

    /// Counts every rankable word of one sentence that lies within `window` words of an
    /// entity mention.
    pub fn add_near_entities(&mut self, words: &[Word], window: usize) {
        for (word, near) in words.iter().zip(near_entities(words, window)) {
            if near && word.is_rankable() {
                self.add(word);
            }
        }
    }

    /// The mean weight of `stem`, if it was counted at all.
    pub fn get(&self, stem: &str) -> Option<StemWeight> {
        self.stems.get(stem).map(|t| weight_of(stem, t))
    }

    /// The `k` stems of highest mean weight among those counted at least `min_count` times;
    /// ties go to the more frequent stem, then alphabetically.
    pub fn top(&self, k: usize, min_count: usize) -> Vec<StemWeight> {
        let mut ranked: Vec<StemWeight> = self
            .stems
            .iter()
            .filter(|(_, t)| t.count >= min_count)
            .map(|(stem, t)| weight_of(stem, t))
            .collect();
        ranked.sort_by(|a, b| {
            b.mean_weight
                .total_cmp(&a.mean_weight)
                .then(b.count.cmp(&a.count))
                .then_with(|| a.stem.cmp(&b.stem))
        });
        ranked.truncate(k);
        ranked
    }

    /// Number of occurrences counted, all stems together.
    pub fn total_count(&self) -> usize {
        self.stems.values().map(|t| t.count).sum()
    }

    /// Number of distinct stems counted.
    pub fn len(&self) -> usize {
        self.stems.len()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.stems.is_empty()
    }
}

fn weight_of(stem: &str, t: &Tally) -> StemWeight {
    // most frequent form; ties to the alphabetically first (BTreeMap order, max_by keeps last)
    let example = t
        .forms
        .iter()
        .rev()
        .max_by_key(|(_, n)| **n)
        .map(|(form, _)| form.clone())
        .unwrap_or_default();
    StemWeight {
        stem: stem.to_string(),
        mean_weight: t.sum / t.count as f64,
        count: t.count,
        example,
    }
}

/// The `top_k` stems by mean weight within `window` words of an entity, over `sentences`
/// (the positive instances' words), among stems seen at least `min_count` times.
pub fn rank_words<'a>(
    sentences: impl IntoIterator<Item = &'a [Word]>,
    window: usize,
    min_count: usize,
    top_k: usize,
) -> Vec<StemWeight> {
    let mut tally = StemTally::default();
    for words in sentences {
        tally.add_near_entities(words, window);
    }
    tally.top(top_k, min_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::record::read_attention;
    use crate::analysis::words::merge_pieces;

    /// Three positive instances and one negative; α chosen so the means are easy by hand.
    const ATTENTION: &str = r###"{"id":"a","gold":"CPR:4","pred":"CPR:4","tokens":["[CLS]","@","chemical","$","inhibits","@","gene","$","in","rats","[SEP]"],"alpha":[0.0,0.05,0.05,0.0,0.4,0.1,0.1,0.0,0.1,0.2,0.0]}
{"id":"b","gold":"CPR:4","pred":"0","tokens":["[CLS]","the","inhibition","of","@","gene","$","by","@","chemical","$","was","seen","in","many","rats","[SEP]"],"alpha":[0.0,0.02,0.2,0.03,0.1,0.1,0.0,0.05,0.1,0.1,0.0,0.05,0.05,0.05,0.05,0.1,0.0]}
{"id":"c","gold":"CPR:3","pred":"CPR:3","tokens":["[CLS]","@","gene","$","acti","##vates","@","chemical","$",".","[SEP]"],"alpha":[0.0,0.1,0.1,0.0,0.3,0.2,0.1,0.1,0.0,0.1,0.0]}
{"id":"d","gold":"0","pred":"0","tokens":["[CLS]","@","gene","$","inhibits","@","chemical","$","[SEP]"],"alpha":[0.0,0.1,0.1,0.0,0.9,0.1,0.1,0.0,0.0]}
"###;

    #[test]
    fn ranks_stems_by_mean_weight_near_entities_in_positive_instances() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attention.jsonl");
        std::fs::write(&path, ATTENTION).unwrap();
        let records = read_attention(&path).unwrap();
        let sentences: Vec<Vec<Word>> = records
            .iter()
            .filter(|r| r.is_positive(Some("0")))
            .map(|r| merge_pieces(&r.tokens, &r.alpha).unwrap())
            .collect();
        let top = rank_words(sentences.iter().map(Vec::as_slice), 3, 1, 10);
        // Within 3 words of an entity (punctuation not counted):
        //   a: inhibits 0.4, in 0.1, rats 0.2
        //   b: the 0.02, inhibition 0.2, of 0.03, by 0.05, was 0.05, seen 0.05, in 0.05
        //      (many, rats: 4 and 5 words after the entity, out)
        //   c: activates 0.3 + 0.2 = 0.5
        // inhibit: (0.4 + 0.2) / 2 = 0.3; the negative instance d (0.9) is not counted.
        let got: Vec<(&str, f64, usize)> = top
            .iter()
            .map(|w| (w.stem.as_str(), w.mean_weight, w.count))
            .collect();
        let expect = [
            ("activ", 0.5, 1),
            ("inhibit", 0.3, 2),
            ("rat", 0.2, 1),
            ("in", 0.075, 2),
            // equal means and counts: alphabetical
            ("by", 0.05, 1),
            ("seen", 0.05, 1),
            ("wa", 0.05, 1),
            ("of", 0.03, 1),
            ("the", 0.02, 1),
        ];
        assert_eq!(got.len(), expect.len(), "{got:?}");
        for ((stem, mean, count), (want_stem, want_mean, want_count)) in got.iter().zip(expect) {
            assert_eq!((*stem, *count), (want_stem, want_count), "{got:?}");
            assert!(
                (mean - want_mean).abs() < 1e-6,
                "{stem}: {mean} vs {want_mean}"
            );
        }
        assert_eq!(top[0].example, "activates");

        // min_count drops the stems seen once
        let frequent = rank_words(sentences.iter().map(Vec::as_slice), 3, 2, 10);
        let stems: Vec<&str> = frequent.iter().map(|w| w.stem.as_str()).collect();
        assert_eq!(stems, ["inhibit", "in"]);
        // top_k cuts the list
        assert_eq!(
            rank_words(sentences.iter().map(Vec::as_slice), 3, 1, 2).len(),
            2
        );
    }
}
