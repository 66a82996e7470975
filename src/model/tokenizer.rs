//! BERT WordPiece tokenization through the `tokenizers` crate.
//!
//! A checkpoint directory's `tokenizer.json` is used as it is (its own truncation and
//! padding settings are switched off: callers choose `max_len`, and batches are padded by
//! [`super::BertInput`]). Without it, `vocab.txt` is wrapped in the standard BERT pipeline
//! (BertNormalizer with `do_lower_case` from `tokenizer_config.json`, BertPreTokenizer,
//! WordPiece, `[CLS] … [SEP]`), as Hugging Face's `BertTokenizerFast` does.

use std::path::Path;

use serde::Deserialize;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, PostProcessor, Tokenizer, TruncationDirection};

use super::ModelError;

/// The tokenization of one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Word-piece ids, `[CLS] … [SEP]`, at most `max_len` of them.
    pub ids: Vec<u32>,
    /// The word pieces themselves.
    pub tokens: Vec<String>,
    /// For each token, the index of the whitespace/punctuation-split word it came from;
    /// `None` for `[CLS]` and `[SEP]` (for whole-word masking and NER labels).
    pub word_ids: Vec<Option<u32>>,
    /// For each token, its byte span in the input text (`(0, 0)` for special tokens).
    pub offsets: Vec<(usize, usize)>,
}

impl Encoding {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The special-token names of a checkpoint.
#[derive(Debug, Deserialize)]
struct TokenizerConfig {
    #[serde(default = "yes")]
    do_lower_case: bool,
    #[serde(default)]
    strip_accents: Option<bool>,
    #[serde(default = "yes")]
    tokenize_chinese_chars: bool,
}

fn yes() -> bool {
    true
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            do_lower_case: true,
            strip_accents: None,
            tokenize_chinese_chars: true,
        }
    }
}

/// A BERT WordPiece tokenizer with its special-token ids.
#[derive(Debug, Clone)]
pub struct BertTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    cls_id: u32,
    sep_id: u32,
    mask_id: u32,
    unk_id: u32,
    /// Tokens the post-processor adds to one sequence (2 for `[CLS] … [SEP]`).
    added: usize,
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl BertTokenizer {
    /// Loads `tokenizer.json` from `dir`, else builds the BERT pipeline from `vocab.txt`.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        let mut inner = if json.is_file() {
            Tokenizer::from_file(&json)
                .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", json.display())))?
        } else if vocab.is_file() {
            from_vocab(&vocab, &read_tokenizer_config(dir)?)?
        } else {
            return Err(ModelError::Tokenizer(format!(
                "{}: neither tokenizer.json nor vocab.txt found",
                dir.display()
            )));
        };
        inner.with_truncation(None).map_err(tok_err)?;
        inner.with_padding(None);
        Self::from_tokenizer(inner)
    }

    fn from_tokenizer(inner: Tokenizer) -> Result<Self, ModelError> {
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| ModelError::Tokenizer(format!("vocabulary has no `{token}`")))
        };
        let added = inner
            .get_post_processor()
            .map(|p| p.added_tokens(false))
            .unwrap_or(0);
        Ok(BertTokenizer {
            pad_id: id("[PAD]")?,
            cls_id: id("[CLS]")?,
            sep_id: id("[SEP]")?,
            mask_id: id("[MASK]")?,
            unk_id: id("[UNK]")?,
            added,
            inner,
        })
    }

    /// Tokenizes `text` into `[CLS] pieces… [SEP]`, keeping the first `max_len - 2` pieces.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Encoding, ModelError> {
        if max_len <= self.added {
            return Err(ModelError::Tokenizer(format!(
                "max_len {max_len} leaves no room for text beside {} special tokens",
                self.added
            )));
        }
        let mut raw = self.inner.encode(text, false).map_err(tok_err)?;
        raw.truncate(max_len - self.added, 0, TruncationDirection::Right);
        let full = self.inner.post_process(raw, None, true).map_err(tok_err)?;
        Ok(Encoding {
            ids: full.get_ids().to_vec(),
            tokens: full.get_tokens().to_vec(),
            word_ids: full.get_word_ids().to_vec(),
            offsets: full.get_offsets().to_vec(),
        })
    }

    /// The word pieces of each word of a pre-tokenized sentence (no special tokens, no
    /// truncation). A word the vocabulary cannot spell at all gets `[UNK]`, so every word
    /// has a first piece to carry its tag.
    pub fn encode_words(&self, words: &[String]) -> Result<Vec<Vec<u32>>, ModelError> {
        let raw = self.inner.encode(words, false).map_err(tok_err)?;
        let mut pieces = vec![Vec::new(); words.len()];
        for (&id, word) in raw.get_ids().iter().zip(raw.get_word_ids()) {
            if let Some(w) = word.and_then(|w| pieces.get_mut(w as usize)) {
                w.push(id);
            }
        }
        for w in pieces.iter_mut().filter(|w| w.is_empty()) {
            w.push(self.unk_id);
        }
        Ok(pieces)
    }

    /// [`encode`](Self::encode) for each text.
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        max_len: usize,
    ) -> Result<Vec<Encoding>, ModelError> {
        texts
            .iter()
            .map(|text| self.encode(text.as_ref(), max_len))
            .collect()
    }

    /// Adds each of `tokens` as one unsplittable token, matched in the raw text before
    /// normalization (so lower-casing cannot touch it) and kept as a word of its own; a
    /// token the vocabulary lacks gets the next free id after it. Returns the tokens' ids,
    /// in order.
    pub fn add_tokens(&mut self, tokens: &[String]) -> Result<Vec<u32>, ModelError> {
        if let Some(bad) = tokens
            .iter()
            .find(|t| t.is_empty() || t.chars().any(char::is_whitespace))
        {
            return Err(ModelError::Tokenizer(format!(
                "cannot add `{bad}`: a token must be non-empty and without whitespace"
            )));
        }
        let added: Vec<AddedToken> = tokens
            .iter()
            .map(|t| AddedToken::from(t.as_str(), false).normalized(false))
            .collect();
        self.inner.add_tokens(&added);
        tokens
            .iter()
            .map(|t| {
                self.inner
                    .token_to_id(t)
                    .ok_or_else(|| ModelError::Tokenizer(format!("`{t}` was not added")))
            })
            .collect()
    }

    /// Writes the whole tokenizer, added tokens included, as `dir/tokenizer.json` (which
    /// [`from_dir`](Self::from_dir) and `transformers` read before `vocab.txt`).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join("tokenizer.json");
        self.inner
            .save(&path, true)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// One more than the largest id (the rows a word-embedding matrix needs).
    pub fn id_bound(&self) -> usize {
        self.inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&id| id as usize + 1)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token of an id, if any.
    pub fn id_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of `[CLS]`.
    pub fn cls_id(&self) -> u32 {
        self.cls_id
    }

    /// Id of `[SEP]`.
    pub fn sep_id(&self) -> u32 {
        self.sep_id
    }

    /// Id of `[MASK]`.
    pub fn mask_id(&self) -> u32 {
        self.mask_id
    }

    /// Id of `[UNK]`.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }
}

fn read_tokenizer_config(dir: &Path) -> Result<TokenizerConfig, ModelError> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(TokenizerConfig::default());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))
}

/// The standard BERT pipeline around a `vocab.txt`.
fn from_vocab(vocab: &Path, config: &TokenizerConfig) -> Result<Tokenizer, ModelError> {
    let vocab_str = vocab
        .to_str()
        .ok_or_else(|| ModelError::Tokenizer(format!("{}: path is not UTF-8", vocab.display())))?;
    let model = WordPiece::from_file(vocab_str)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", vocab.display())))?;
    let cls = model_id(&model, "[CLS]")?;
    let sep = model_id(&model, "[SEP]")?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            config.tokenize_chinese_chars,
            config.strip_accents,
            config.do_lower_case,
        )))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )))
        .with_decoder(Some(WordPieceDecoder::default()));
    let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .into_iter()
        .map(|t| AddedToken::from(t, true))
        .collect();
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}

fn model_id(model: &WordPiece, token: &str) -> Result<u32, ModelError> {
    use tokenizers::Model;
    model
        .token_to_id(token)
        .ok_or_else(|| ModelError::Tokenizer(format!("vocab.txt has no `{token}`")))
}
