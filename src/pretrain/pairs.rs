//! Sentence pairs for next-sentence prediction (BERT §3.1, "Task #2"): for each document,
//! consecutive sentences are packed into a chunk of about `max_len − 3` pieces; the chunk
//! is cut at a random sentence boundary into segment A and, half of the time, the rest of
//! the chunk is segment B ("is next"), otherwise B is a run of sentences from another
//! document ("not next") and the unused sentences of the chunk go back into the stream.
//! The sequence is `[CLS] A [SEP] B [SEP]`, token type 0 up to the first `[SEP]`, 1 after.
//!
//! As Google's `create_pretraining_data.py`, minus its short-sequence sampling; the pairs
//! are drawn once per run from a seed, so every epoch sees the same pairs.

use super::training::Sequence;
use crate::model::Encoding;
use crate::train::rng::SplitMix64;

/// A sentence's word pieces without `[CLS]`/`[SEP]`, with the tokenizer's word ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentence {
    pub ids: Vec<u32>,
    pub word_ids: Vec<Option<u32>>,
}

impl Sentence {
    /// The pieces of an encoding of one sentence (its `[CLS]` and `[SEP]` dropped).
    pub fn from_encoding(encoding: &Encoding) -> Self {
        let n = encoding.ids.len();
        let body = if n >= 2 { 1..n - 1 } else { 0..0 };
        Sentence {
            ids: encoding.ids[body.clone()].to_vec(),
            word_ids: encoding.word_ids[body].to_vec(),
        }
    }
}

/// Abbreviations after which a full stop does not end a sentence.
const ABBREVIATIONS: [&str; 12] = [
    "e.g.", "i.e.", "et al.", "vs.", "Fig.", "Figs.", "ca.", "approx.", "Dr.", "No.", "cf.",
    "resp.",
];

/// Splits an abstract into sentences: after `.`, `!` or `?` followed by white space and an
/// upper-case letter, a digit or an opening bracket, unless the full stop ends an
/// abbreviation (`e.g.`, `et al.`, …) or a single capital initial (`J.`).
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (k, &(at, c)) in chars.iter().enumerate() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let Some(&(_, space)) = chars.get(k + 1) else {
            continue;
        };
        let next = chars[k + 1..].iter().find(|(_, ch)| !ch.is_whitespace());
        let Some(&(next_at, next)) = next else {
            continue;
        };
        if !space.is_whitespace() || !(next.is_uppercase() || next.is_ascii_digit() || next == '(')
        {
            continue;
        }
        let sentence = &text[start..at + c.len_utf8()];
        if c == '.' && ends_in_abbreviation(sentence) {
            continue;
        }
        out.push(sentence.trim());
        start = next_at;
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out.retain(|s| !s.is_empty());
    out
}

fn ends_in_abbreviation(sentence: &str) -> bool {
    if ABBREVIATIONS.iter().any(|a| sentence.ends_with(a)) {
        return true;
    }
    // "J." or "(A." — a lone capital initial
    let mut tail = sentence.chars().rev().skip(1);
    match (tail.next(), tail.next()) {
        (Some(initial), before) => {
            initial.is_uppercase() && before.is_none_or(|b| b.is_whitespace() || b == '(')
        }
        _ => false,
    }
}

/// Special token ids and the length budget of a pair.
#[derive(Debug, Clone, Copy)]
pub struct PairSettings {
    pub max_len: usize,
    pub cls: u32,
    pub sep: u32,
    pub seed: u64,
}

/// Builds NSP pairs from `documents` (each a list of sentences); documents with no
/// sentence are skipped. With a single document every pair is "is next".
pub fn nsp_pairs(documents: &[Vec<Sentence>], settings: PairSettings) -> Vec<Sequence> {
    let target = settings.max_len.saturating_sub(3).max(2);
    let non_empty: Vec<usize> = (0..documents.len())
        .filter(|&d| documents[d].iter().any(|s| !s.ids.is_empty()))
        .collect();
    let mut out = Vec::new();
    for (position, &d) in non_empty.iter().enumerate() {
        let doc = &documents[d];
        let mut rng = SplitMix64::stream(settings.seed, d as u64);
        let mut chunk: Vec<&Sentence> = Vec::new();
        let mut length = 0;
        let mut i = 0;
        while i < doc.len() {
            chunk.push(&doc[i]);
            length += doc[i].ids.len();
            if i + 1 == doc.len() || length >= target {
                if !chunk.is_empty() {
                    let a_end = if chunk.len() >= 2 {
                        1 + rng.below(chunk.len() - 1)
                    } else {
                        1
                    };
                    let a: Vec<&Sentence> = chunk[..a_end].to_vec();
                    let a_len: usize = a.iter().map(|s| s.ids.len()).sum();
                    let random_next =
                        non_empty.len() > 1 && (chunk.len() == 1 || rng.below(2) == 0);
                    let (b, is_next) = if random_next {
                        // another document: a position among the others, skipping this one
                        let mut other = rng.below(non_empty.len() - 1);
                        if other >= position {
                            other += 1;
                        }
                        let other_doc = &documents[non_empty[other]];
                        let b_target = target.saturating_sub(a_len).max(1);
                        let mut b = Vec::new();
                        let mut b_len = 0;
                        for s in &other_doc[rng.below(other_doc.len())..] {
                            b.push(s);
                            b_len += s.ids.len();
                            if b_len >= b_target {
                                break;
                            }
                        }
                        // the chunk's unused sentences go back into the stream
                        i -= chunk.len() - a_end;
                        (b, false)
                    } else {
                        (chunk[a_end..].to_vec(), true)
                    };
                    if let Some(pair) = pack(&a, &b, is_next, target, settings) {
                        out.push(pair);
                    }
                }
                chunk.clear();
                length = 0;
            }
            i += 1;
        }
    }
    out
}

/// `[CLS] A [SEP] B [SEP]`, the longer segment trimmed from its end until the pieces fit
/// `target`; `None` when A or B is empty.
fn pack(
    a: &[&Sentence],
    b: &[&Sentence],
    is_next: bool,
    target: usize,
    settings: PairSettings,
) -> Option<Sequence> {
    let join = |segment: &[&Sentence], first_word: u32| {
        let mut ids = Vec::new();
        let mut word_ids = Vec::new();
        let mut offset = first_word;
        for s in segment {
            ids.extend_from_slice(&s.ids);
            let mut last = offset;
            for w in &s.word_ids {
                word_ids.push(w.map(|w| {
                    last = last.max(offset + w + 1);
                    offset + w
                }));
            }
            offset = last;
        }
        (ids, word_ids, offset)
    };
    let (mut a_ids, mut a_words, next_word) = join(a, 0);
    let (mut b_ids, mut b_words, _) = join(b, next_word);
    while a_ids.len() + b_ids.len() > target {
        if a_ids.len() >= b_ids.len() {
            a_ids.pop();
            a_words.pop();
        } else {
            b_ids.pop();
            b_words.pop();
        }
    }
    if a_ids.is_empty() || b_ids.is_empty() {
        return None;
    }
    let mut ids = vec![settings.cls];
    ids.extend(a_ids);
    ids.push(settings.sep);
    let segment_b = ids.len();
    ids.extend(b_ids);
    ids.push(settings.sep);
    let mut word_ids = vec![None];
    word_ids.extend(a_words);
    word_ids.push(None);
    word_ids.extend(b_words);
    word_ids.push(None);
    Some(Sequence {
        ids,
        word_ids,
        segment_b: Some(segment_b),
        is_next: Some(is_next),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_at_stops_but_not_after_abbreviations_or_initials() {
        let text = "Aspirin inhibits COX-1 (e.g. in platelets). It was studied by Smith et al. \
                    In 2001 J. Doe found more! Does it work? (Yes.) 3 trials.";
        assert_eq!(
            sentences(text),
            vec![
                "Aspirin inhibits COX-1 (e.g. in platelets).",
                "It was studied by Smith et al. In 2001 J. Doe found more!",
                "Does it work?",
                "(Yes.) 3 trials."
            ]
        );
        assert_eq!(sentences("no stop at all"), vec!["no stop at all"]);
        assert!(sentences("   ").is_empty());
        assert_eq!(
            sentences("p < 0.05 was found."),
            vec!["p < 0.05 was found."]
        );
    }

    /// Document `d`, sentence `s` has `len` pieces with ids `1000·(d+1) + 10·s + k`, one
    /// word per piece.
    fn corpus(lengths: &[&[usize]]) -> Vec<Vec<Sentence>> {
        lengths
            .iter()
            .enumerate()
            .map(|(d, doc)| {
                doc.iter()
                    .enumerate()
                    .map(|(s, &len)| Sentence {
                        ids: (0..len)
                            .map(|k| (1000 * (d + 1) + 10 * s + k) as u32)
                            .collect(),
                        word_ids: (0..len).map(|k| Some(k as u32)).collect(),
                    })
                    .collect()
            })
            .collect()
    }

    const SETTINGS: PairSettings = PairSettings {
        max_len: 16,
        cls: 101,
        sep: 102,
        seed: 7,
    };

    fn doc_of(id: u32) -> u32 {
        id / 1000 - 1
    }

    #[test]
    fn pairs_are_well_formed_and_is_next_pairs_are_consecutive() {
        let docs = corpus(&[
            &[4, 3, 5, 2, 6, 3, 4],
            &[5, 5, 5, 5],
            &[3, 3, 3, 3, 3, 3],
            &[7, 2, 4],
        ]);
        let pairs = nsp_pairs(&docs, SETTINGS);
        assert!(pairs.len() >= 6, "{}", pairs.len());
        let (mut next, mut random) = (0, 0);
        for p in &pairs {
            assert!(p.ids.len() <= SETTINGS.max_len);
            assert_eq!(p.ids[0], 101);
            assert_eq!(p.ids[p.ids.len() - 1], 102);
            let b = p.segment_b.expect("segment b");
            assert_eq!(p.ids[b - 1], 102);
            assert_eq!(p.ids.iter().filter(|&&id| id == 102).count(), 2);
            let (a_ids, b_ids) = (&p.ids[1..b - 1], &p.ids[b..p.ids.len() - 1]);
            assert!(!a_ids.is_empty() && !b_ids.is_empty());
            // A comes from one document, in order
            assert!(a_ids.windows(2).all(|w| w[0] < w[1]));
            assert!(a_ids.iter().all(|&id| doc_of(id) == doc_of(a_ids[0])));
            // word ids: None exactly at the specials, increasing across A then B
            let words: Vec<u32> = p.word_ids.iter().flatten().copied().collect();
            assert_eq!(words.len(), p.ids.len() - 3);
            assert!(words.windows(2).all(|w| w[0] < w[1]));
            if p.is_next == Some(true) {
                next += 1;
                // B continues A in the same document
                assert_eq!(doc_of(b_ids[0]), doc_of(a_ids[0]));
                assert!(b_ids[0] > a_ids[a_ids.len() - 1]);
            } else {
                random += 1;
                assert_ne!(doc_of(b_ids[0]), doc_of(a_ids[0]));
            }
        }
        assert!(next > 0 && random > 0, "{next} is-next, {random} random");
        assert_eq!(pairs, nsp_pairs(&docs, SETTINGS), "deterministic per seed");
        assert_ne!(
            pairs,
            nsp_pairs(
                &docs,
                PairSettings {
                    seed: 8,
                    ..SETTINGS
                }
            ),
            "another seed draws other pairs"
        );
    }

    #[test]
    fn half_the_pairs_are_random_over_many_documents() {
        let lengths: Vec<Vec<usize>> = (0..200).map(|d| vec![3 + d % 4; 6]).collect();
        let refs: Vec<&[usize]> = lengths.iter().map(Vec::as_slice).collect();
        let pairs = nsp_pairs(&corpus(&refs), SETTINGS);
        let random = pairs.iter().filter(|p| p.is_next == Some(false)).count();
        let share = random as f64 / pairs.len() as f64;
        assert!((0.4..0.6).contains(&share), "{share} of {}", pairs.len());
    }

    #[test]
    fn one_document_gives_only_is_next_pairs() {
        let pairs = nsp_pairs(&corpus(&[&[4, 4, 4, 4, 4, 4]]), SETTINGS);
        assert!(!pairs.is_empty());
        assert!(pairs.iter().all(|p| p.is_next == Some(true)));
    }
}
