//! Word pieces → words, and the entity mentions among them.
//!
//! A piece that starts with `##` continues the word before it; a word's weight is the sum
//! of its pieces' α (the attention mass the head put on the word, so a word split into
//! several pieces is not diluted). An entity tag (`@PROTEIN$`, `@CHEMICAL-GENE$`, …),
//! which the tokenizer splits into `@`, `chemical`, `-`, `gene`, `$`, becomes one
//! [`WordKind::Entity`] word whose weight is the sum over all its pieces.

use super::AnalysisError;

/// What a word is, for windowing and ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordKind {
    /// `[CLS]`, `[SEP]`, `[PAD]`, …: not part of the sentence.
    Special,
    /// An entity tag such as `@GENE$`.
    Entity,
    /// No letter or digit (the tokenizer splits punctuation into words of its own); not
    /// counted as a word in the entity window.
    Punctuation,
    /// Any other word.
    Text,
}

/// One word of an instance and the attention on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    /// The word as the tokenizer spelled it (lower case for uncased vocabularies); entity
    /// tags are spelled `@TYPE$`.
    pub text: String,
    /// Sum of α over the word's pieces.
    pub weight: f64,
    pub kind: WordKind,
}

impl Word {
    /// Whether the word may be ranked: text with at least one letter (numbers, punctuation,
    /// entity tags and special tokens are not).
    pub fn is_rankable(&self) -> bool {
        self.kind == WordKind::Text && self.text.chars().any(char::is_alphabetic)
    }
}

/// Pieces an entity tag may span between `@` and `$` (`chem`, `##ical` merged, `-`, `gene`
/// make three words; a longer run is not a tag).
const MAX_TAG_WORDS: usize = 7;

/// Merges word pieces and their α into words (see the module doc), with entity tags joined.
pub fn merge_pieces(tokens: &[String], alpha: &[f32]) -> Result<Vec<Word>, AnalysisError> {
    if tokens.len() != alpha.len() {
        return Err(AnalysisError::Instance {
            id: String::new(),
            message: format!("{} tokens but {} weights α", tokens.len(), alpha.len()),
        });
    }
    let mut words: Vec<Word> = Vec::with_capacity(tokens.len());
    for (piece, &a) in tokens.iter().zip(alpha) {
        let weight = f64::from(a);
        if let Some(rest) = piece.strip_prefix("##").filter(|r| !r.is_empty()) {
            if let Some(last) = words.last_mut().filter(|w| w.kind != WordKind::Special) {
                last.text.push_str(rest);
                last.weight += weight;
                continue;
            }
        }
        let kind = if is_special(piece) {
            WordKind::Special
        } else {
            WordKind::Text
        };
        words.push(Word {
            text: piece.clone(),
            weight,
            kind,
        });
    }
    for word in &mut words {
        if word.kind == WordKind::Text && !word.text.chars().any(char::is_alphanumeric) {
            word.kind = WordKind::Punctuation;
        }
    }
    Ok(join_entity_tags(words))
}

/// `[CLS]`, `[SEP]`, `[PAD]`, `[MASK]`, `[UNK]`-style tokens.
fn is_special(piece: &str) -> bool {
    piece.len() > 2
        && piece.starts_with('[')
        && piece.ends_with(']')
        && piece[1..piece.len() - 1]
            .chars()
            .all(|c| c.is_ascii_uppercase())
}

/// Replaces each run `@`, name words, `$` by one entity word `@NAME$`. A name is letters,
/// digits, `-` and `_`, starting with a letter.
fn join_entity_tags(words: Vec<Word>) -> Vec<Word> {
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if let Some(end) = tag_end(&words, i) {
            let name: String = words[i + 1..end].iter().map(|w| w.text.as_str()).collect();
            out.push(Word {
                text: format!("@{}$", name.to_uppercase()),
                weight: words[i..=end].iter().map(|w| w.weight).sum(),
                kind: WordKind::Entity,
            });
            i = end + 1;
        } else {
            out.push(words[i].clone());
            i += 1;
        }
    }
    out
}

/// The index of the `$` closing an entity tag that opens with `@` at `start`, if it does.
fn tag_end(words: &[Word], start: usize) -> Option<usize> {
    if words[start].text != "@" {
        return None;
    }
    let first = words.get(start + 1)?;
    if !first.text.starts_with(|c: char| c.is_alphabetic()) {
        return None;
    }
    let is_name = |w: &Word| {
        w.kind != WordKind::Special
            && w.text
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    };
    (start + 2..words.len().min(start + 2 + MAX_TAG_WORDS))
        .take_while(|&j| words[j].text == "$" || is_name(&words[j]))
        .find(|&j| words[j].text == "$")
        .filter(|&j| words[start + 1..j].iter().all(is_name))
}

/// For each word, whether it is a [`WordKind::Text`] word at most `window` words from an
/// entity mention (either side; punctuation and special tokens are not counted as words).
pub fn near_entities(words: &[Word], window: usize) -> Vec<bool> {
    // position of each counted word (text or entity) in the sentence without punctuation
    let mut position = vec![None; words.len()];
    let mut entities = Vec::new();
    let mut next = 0usize;
    for (i, w) in words.iter().enumerate() {
        if matches!(w.kind, WordKind::Text | WordKind::Entity) {
            position[i] = Some(next);
            if w.kind == WordKind::Entity {
                entities.push(next);
            }
            next += 1;
        }
    }
    words
        .iter()
        .zip(&position)
        .map(|(w, p)| match (w.kind, p) {
            (WordKind::Text, Some(p)) => entities.iter().any(|e| e.abs_diff(*p) <= window),
            _ => false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn continuation_pieces_join_the_previous_word_and_add_their_weights() {
        let tokens = pieces("[CLS] est ##ram ##ust ##ine binds . [SEP]");
        let alpha = [0.0, 0.1, 0.2, 0.05, 0.05, 0.4, 0.2, 0.0];
        let words = merge_pieces(&tokens, &alpha).unwrap();
        let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, ["[CLS]", "estramustine", "binds", ".", "[SEP]"]);
        let kinds: Vec<WordKind> = words.iter().map(|w| w.kind).collect();
        use WordKind::*;
        assert_eq!(kinds, [Special, Text, Text, Punctuation, Special]);
        // 0.1 + 0.2 + 0.05 + 0.05 in f32 → f64
        assert!((words[1].weight - 0.4).abs() < 1e-6, "{}", words[1].weight);
        assert!((words[2].weight - 0.4).abs() < 1e-6);
    }

    #[test]
    fn entity_tags_become_one_word_with_the_weight_of_all_their_pieces() {
        let tokens = pieces("[CLS] @ che ##m - gene $ inhibits @ gene $ . @ 3 $ [SEP]");
        let alpha = [
            0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.3, 0.1, 0.1, 0.1, 0.09, 0.01, 0.02, 0.07,
            0.0,
        ];
        let words = merge_pieces(&tokens, &alpha).unwrap();
        let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        // `@ 3 $` is no tag: a name starts with a letter
        assert_eq!(
            texts,
            [
                "[CLS]",
                "@CHEM-GENE$",
                "inhibits",
                "@GENE$",
                ".",
                "@",
                "3",
                "$",
                "[SEP]"
            ]
        );
        assert_eq!(words[1].kind, WordKind::Entity);
        assert!((words[1].weight - 0.21).abs() < 1e-6, "{}", words[1].weight);
        assert!((words[3].weight - 0.3).abs() < 1e-6);
        assert_eq!(words[5].kind, WordKind::Punctuation);
        assert_eq!(words[6].kind, WordKind::Text);
        assert!(!words[6].is_rankable());
        assert!(words[2].is_rankable() && !words[1].is_rankable());
    }

    #[test]
    fn an_unclosed_tag_stays_words() {
        // truncated at max_len: `@ gene` with no `$`
        let tokens = pieces("[CLS] binds @ gene [SEP]");
        let words = merge_pieces(&tokens, &[0.0, 0.5, 0.25, 0.25, 0.0]).unwrap();
        assert!(words.iter().all(|w| w.kind != WordKind::Entity));
    }

    #[test]
    fn mismatched_lengths_are_an_error() {
        let tokens = pieces("[CLS] a [SEP]");
        assert!(merge_pieces(&tokens, &[0.0, 1.0]).is_err());
    }

    #[test]
    fn the_window_counts_words_not_punctuation_on_both_sides() {
        // words:  a b , c @GENE$ d e ( f ) g h
        // counted positions: a0 b1 c2 E3 d4 e5 f6 g7 h8
        let tokens = pieces("[CLS] a b , c @ gene $ d e ( f ) g h [SEP]");
        let alpha = vec![0.0f32; tokens.len()];
        let words = merge_pieces(&tokens, &alpha).unwrap();
        let near = near_entities(&words, 3);
        let picked: Vec<&str> = words
            .iter()
            .zip(&near)
            .filter(|(_, n)| **n)
            .map(|(w, _)| w.text.as_str())
            .collect();
        assert_eq!(picked, ["a", "b", "c", "d", "e", "f"]);
        let one: Vec<&str> = words
            .iter()
            .zip(near_entities(&words, 1))
            .filter(|(_, n)| *n)
            .map(|(w, _)| w.text.as_str())
            .collect();
        assert_eq!(one, ["c", "d"]);
    }
}
