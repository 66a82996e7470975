//! Masked-language-model inputs (Devlin et al. 2019, §3.1 "Task #1: Masked LM"): 15% of
//! the word pieces are chosen for prediction; of those 80% become `[MASK]`, 10% a random
//! piece, 10% stay as they are. Special tokens (`[CLS]`, `[SEP]`, padding) are never
//! chosen. With whole-word masking (as PubMedBERT) the unit chosen is a word: all its
//! pieces are predicted together, and the 80/10/10 decision is drawn per piece.
//!
//! As in BERT's `create_pretraining_data.py`, the number of pieces to predict is
//! `max(1, round(0.15 · n))` over the n maskable pieces, and candidate units are taken in
//! random order, skipping a word that would overshoot the count.

use serde::{Deserialize, Serialize};

use crate::train::rng::SplitMix64;

/// Fraction of pieces chosen for prediction.
pub const MASK_RATE: f64 = 0.15;
/// Of the chosen pieces: replaced by `[MASK]` (80%), by a random piece (10%), kept (10%).
pub const REPLACE_WITH_MASK: f64 = 0.8;
pub const REPLACE_WITH_RANDOM: f64 = 0.1;

/// What is chosen as a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Masking {
    /// Single word pieces (BERT, BioBERT).
    #[default]
    Subword,
    /// Every piece of a chosen word (PubMedBERT).
    WholeWord,
}

/// The ids and vocabulary facts masking needs.
#[derive(Debug, Clone, Copy)]
pub struct MaskVocab {
    pub mask_id: u32,
    pub vocab_size: usize,
}

/// One masked sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    /// The model's input: the ids with chosen pieces replaced.
    pub input_ids: Vec<u32>,
    /// For each position, the original id when it is to be predicted.
    pub labels: Vec<Option<u32>>,
}

impl Masked {
    /// Positions to predict.
    pub fn positions(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.labels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|l| (i, l)))
    }
}

/// Units that may be chosen: groups of positions. `word_ids[i] = None` marks a special
/// token (never chosen); with [`Masking::WholeWord`] consecutive pieces with the same word
/// id form one unit.
pub fn candidate_units(word_ids: &[Option<u32>], masking: Masking) -> Vec<Vec<usize>> {
    let mut units: Vec<Vec<usize>> = Vec::new();
    let mut last_word = None;
    for (i, word) in word_ids.iter().enumerate() {
        let Some(word) = word else {
            last_word = None;
            continue;
        };
        match (masking, last_word, units.last_mut()) {
            (Masking::WholeWord, Some(previous), Some(unit)) if previous == *word => unit.push(i),
            _ => units.push(vec![i]),
        }
        last_word = Some(*word);
    }
    units
}

/// Masks `ids` (with `word_ids` from the tokenizer) drawing from `rng`.
pub fn mask(
    ids: &[u32],
    word_ids: &[Option<u32>],
    masking: Masking,
    vocab: MaskVocab,
    rng: &mut SplitMix64,
) -> Masked {
    let mut units = candidate_units(word_ids, masking);
    let maskable: usize = units.iter().map(Vec::len).sum();
    let mut input_ids = ids.to_vec();
    let mut labels = vec![None; ids.len()];
    if maskable == 0 {
        return Masked { input_ids, labels };
    }
    let target = ((maskable as f64 * MASK_RATE).round() as usize).max(1);
    rng.shuffle(&mut units);
    let mut chosen = 0;
    for unit in units {
        if chosen >= target {
            break;
        }
        if chosen + unit.len() > target {
            continue;
        }
        chosen += unit.len();
        for i in unit {
            labels[i] = Some(ids[i]);
            let u = unit_interval(rng);
            if u < REPLACE_WITH_MASK {
                input_ids[i] = vocab.mask_id;
            } else if u < REPLACE_WITH_MASK + REPLACE_WITH_RANDOM {
                input_ids[i] = rng.below(vocab.vocab_size) as u32;
            }
        }
    }
    Masked { input_ids, labels }
}

/// Uniform in [0, 1).
fn unit_interval(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: MaskVocab = MaskVocab {
        mask_id: 103,
        vocab_size: 30_000,
    };

    /// `[CLS] w0 w1a w1b w2 w3a w3b w3c … [SEP] [PAD]`: word k has 1 + k % 3 pieces.
    fn sequence(words: u32) -> (Vec<u32>, Vec<Option<u32>>) {
        let mut ids = vec![101];
        let mut word_ids = vec![None];
        for w in 0..words {
            for piece in 0..=(w % 3) {
                ids.push(1000 + 10 * w + piece);
                word_ids.push(Some(w));
            }
        }
        ids.extend([102, 0]);
        word_ids.extend([None, None]);
        (ids, word_ids)
    }

    #[test]
    fn whole_word_masking_masks_every_piece_of_chosen_words_only() {
        let (ids, word_ids) = sequence(40);
        let mut rng = SplitMix64::new(9);
        let mut partial_words_seen = false;
        for _ in 0..200 {
            let m = mask(&ids, &word_ids, Masking::WholeWord, VOCAB, &mut rng);
            let maskable = word_ids.iter().flatten().count();
            let target = (maskable as f64 * MASK_RATE).round() as usize;
            let chosen = m.positions().count();
            assert!(
                chosen <= target && chosen + 3 > target,
                "{chosen} vs {target}"
            );
            for w in 0..40 {
                let pieces: Vec<usize> =
                    (0..ids.len()).filter(|&i| word_ids[i] == Some(w)).collect();
                let n = pieces.iter().filter(|&&i| m.labels[i].is_some()).count();
                assert!(
                    n == 0 || n == pieces.len(),
                    "word {w}: {n} of {} pieces",
                    pieces.len()
                );
            }
            // subword masking, same sequence: some word is chosen only in part
            let s = mask(&ids, &word_ids, Masking::Subword, VOCAB, &mut rng);
            partial_words_seen |= (0..40).any(|w| {
                let pieces: Vec<usize> =
                    (0..ids.len()).filter(|&i| word_ids[i] == Some(w)).collect();
                let n = pieces.iter().filter(|&&i| s.labels[i].is_some()).count();
                n > 0 && n < pieces.len()
            });
        }
        assert!(
            partial_words_seen,
            "subword masking should split words sometimes"
        );
    }

    #[test]
    fn special_tokens_are_never_masked() {
        let (ids, word_ids) = sequence(6);
        let mut rng = SplitMix64::new(1);
        for masking in [Masking::Subword, Masking::WholeWord] {
            for _ in 0..2_000 {
                let m = mask(&ids, &word_ids, masking, VOCAB, &mut rng);
                for (i, word) in word_ids.iter().enumerate() {
                    if word.is_none() {
                        assert_eq!(m.labels[i], None);
                        assert_eq!(m.input_ids[i], ids[i]);
                    }
                }
                assert!(m.positions().count() >= 1);
            }
        }
        let none = mask(
            &[101, 102],
            &[None, None],
            Masking::Subword,
            VOCAB,
            &mut rng,
        );
        assert_eq!(none.positions().count(), 0);
    }

    #[test]
    fn chosen_pieces_split_80_10_10() {
        let (ids, word_ids) = sequence(60);
        let mut rng = SplitMix64::new(5);
        let (mut masked, mut random, mut kept, mut total) = (0usize, 0usize, 0usize, 0usize);
        for _ in 0..2_000 {
            let m = mask(&ids, &word_ids, Masking::WholeWord, VOCAB, &mut rng);
            for (i, original) in m.positions() {
                total += 1;
                if m.input_ids[i] == VOCAB.mask_id {
                    masked += 1;
                } else if m.input_ids[i] == original {
                    kept += 1; // (a random draw of the same id, p = 1/30000, counts here)
                } else {
                    random += 1;
                }
            }
        }
        let share = |n: usize| n as f64 / total as f64;
        assert_eq!(total, 2_000 * 18, "15% of 120 pieces per sequence");
        // binomial sd at n = 36k: ≤ 0.0021; tolerance 0.01 (about 5 sd)
        assert!((share(masked) - 0.8).abs() < 0.01, "{}", share(masked));
        assert!((share(random) - 0.1).abs() < 0.01, "{}", share(random));
        assert!((share(kept) - 0.1).abs() < 0.01, "{}", share(kept));
        let rate = total as f64 / (2_000.0 * word_ids.iter().flatten().count() as f64);
        assert!((rate - MASK_RATE).abs() < 0.01, "{rate}");
    }
}
