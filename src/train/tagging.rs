//! NER fine-tuning: a sentence's words cut into windows of word pieces, the encoder with a
//! token head, the tagging loss as an [`Objective`] and prediction joined back per sentence.
//!
//! A sentence longer than `max_len` pieces is split at word boundaries into consecutive
//! windows (Peng et al. split NER sentences longer than 30 words); each window is a
//! training unit, and its predicted tags are joined back in order before scoring.

use std::sync::atomic::AtomicBool;

use burn::prelude::*;

use super::batching::eval_batches;
use super::concurrent_batches::map_batches;
use super::fit::Objective;
use super::layer_decay::LayerDepths;
use super::TrainError;
use crate::metrics::{NerCounts, Prf};
use crate::model::heads::{TokenHead, WordStarts};
use crate::model::{BertModel, ModelError};

/// One window of a sentence: `[CLS] pieces… [SEP]`, where each of its words starts, and
/// the words' gold tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordWindow {
    pub ids: Vec<u32>,
    /// Position of each word's first piece in `ids` (≥ 1).
    pub starts: Vec<usize>,
    /// Gold tag index of each word.
    pub tags: Vec<usize>,
    /// The sentence this window is from (index in its split file).
    pub sentence: usize,
}

/// Cuts sentence `sentence` (the word pieces of each word, and each word's tag) into
/// windows of at most `max_len` pieces with `[CLS]` and `[SEP]`, breaking only between
/// words, and not inside an entity where it can: a window ends before the last word that
/// does not continue an entity (`continues[w]`: word `w`'s tag is `I-…`) rather than
/// start with an `I-` tag, which a CRF under BIO constraints cannot begin with. A word
/// longer than a whole window keeps its first pieces. No words, no windows.
pub fn word_windows(
    sentence: usize,
    pieces: &[Vec<u32>],
    tags: &[usize],
    continues: &[bool],
    [cls, sep]: [u32; 2],
    max_len: usize,
) -> Vec<WordWindow> {
    let budget = max_len.saturating_sub(2).max(1);
    let n = pieces.len().min(tags.len());
    let width = |w: usize| pieces[w].len().min(budget);
    let mut windows = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = start;
        let mut used = 0;
        while end < n && used + width(end) <= budget {
            used += width(end);
            end += 1;
        }
        if end < n && continues.get(end).copied().unwrap_or(false) {
            if let Some(b) = (start + 1..end)
                .rev()
                .find(|&b| !continues.get(b).copied().unwrap_or(false))
            {
                end = b;
            }
        }
        let mut window = WordWindow {
            ids: vec![cls],
            starts: Vec::with_capacity(end - start),
            tags: tags[start..end].to_vec(),
            sentence,
        };
        for w in start..end {
            window.starts.push(window.ids.len());
            window.ids.extend_from_slice(&pieces[w][..width(w)]);
        }
        window.ids.push(sep);
        windows.push(window);
        start = end;
    }
    windows
}

/// Each sentence's predicted tags: the windows' predictions (`predicted[k]` for
/// `windows[k]`) joined in order; a sentence without windows gets none.
pub fn join_windows(
    windows: &[WordWindow],
    predicted: Vec<Vec<usize>>,
    sentences: usize,
) -> Vec<Vec<usize>> {
    let mut joined = vec![Vec::new(); sentences];
    for (window, tags) in windows.iter().zip(predicted) {
        joined[window.sentence].extend(tags);
    }
    joined
}

/// Entity-level (conlleval) micro P/R/F1 of predicted against gold tag indices (`tags`
/// names them), as `evaluate` scores NER predictions.
pub fn entity_prf(
    tags: &[String],
    gold: &[Vec<usize>],
    pred: &[Vec<usize>],
) -> Result<Prf, TrainError> {
    let names = |y: &Vec<usize>| y.iter().map(|&t| tags[t].as_str()).collect::<Vec<_>>();
    let mut counts = NerCounts::new();
    for (g, p) in gold.iter().zip(pred) {
        counts.add(&names(g), &names(p))?;
    }
    Ok(counts.overall())
}

/// A padded batch of windows on one device.
#[derive(Debug, Clone)]
pub struct TaggedBatch {
    /// `[B, T]`.
    pub input_ids: Tensor<2, Int>,
    /// `[B, T]`: 1 for pieces, 0 for padding.
    pub attention_mask: Tensor<2, Int>,
    pub words: WordStarts,
    /// Gold tags of each window's words.
    pub tags: Vec<Vec<usize>>,
}

impl TaggedBatch {
    /// Pads `windows` on the right with `pad_id` to `length` pieces, or to the longest of
    /// them where that is longer.
    pub fn padded_to(windows: &[&WordWindow], pad_id: u32, length: usize, device: &Device) -> Self {
        let batch = windows.len();
        let longest = windows
            .iter()
            .map(|x| x.ids.len())
            .max()
            .unwrap_or(0)
            .max(length);
        let mut ids = vec![i64::from(pad_id); batch * longest];
        let mut mask = vec![0i64; batch * longest];
        for (row, window) in windows.iter().enumerate() {
            for (t, &id) in window.ids.iter().enumerate() {
                ids[row * longest + t] = i64::from(id);
                mask[row * longest + t] = 1;
            }
        }
        let starts: Vec<&[usize]> = windows.iter().map(|x| x.starts.as_slice()).collect();
        TaggedBatch {
            input_ids: Tensor::from_data(TensorData::new(ids, [batch, longest]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, [batch, longest]), device),
            words: WordStarts::new(&starts, longest, device),
            tags: windows.iter().map(|x| x.tags.clone()).collect(),
        }
    }
}

/// BERT encoder with a token head.
#[derive(Module, Debug)]
pub struct TokenTagger {
    pub encoder: BertModel,
    pub head: TokenHead,
}

impl TokenTagger {
    /// `E`: `[B, W, K]` tag scores of every word of the batch.
    pub fn emissions(&self, batch: &TaggedBatch) -> Tensor<3> {
        let out =
            self.encoder
                .forward(batch.input_ids.clone(), batch.attention_mask.clone(), false);
        self.head.emissions(out.last_hidden_state, &batch.words)
    }
}

/// `E`: `[B, W, K]`, `batch` encoded by `encoder` and scored by `head` (a multi-task
/// model shares one encoder between several heads).
pub fn tag_emissions(encoder: &BertModel, head: &TokenHead, batch: &TaggedBatch) -> Tensor<3> {
    let out = encoder.forward(batch.input_ids.clone(), batch.attention_mask.clone(), false);
    head.emissions(out.last_hidden_state, &batch.words)
}

/// Tagging: the token head's loss (per-word cross-entropy or the CRF's −log-likelihood).
pub struct TaggingObjective<'a> {
    train: &'a [WordWindow],
    lengths: Vec<usize>,
    pad_id: u32,
}

impl<'a> TaggingObjective<'a> {
    pub fn new(train: &'a [WordWindow], pad_id: u32) -> Self {
        TaggingObjective {
            train,
            lengths: train.iter().map(|x| x.ids.len()).collect(),
            pad_id,
        }
    }
}

impl Objective for TaggingObjective<'_> {
    type Model = TokenTagger;

    fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    fn batch_loss(
        &self,
        model: &TokenTagger,
        batch: &[usize],
        pad_to: usize,
        device: &Device,
    ) -> Result<Vec<Tensor<1>>, TrainError> {
        let refs: Vec<&WordWindow> = batch.iter().map(|&i| &self.train[i]).collect();
        let batch = TaggedBatch::padded_to(&refs, self.pad_id, pad_to, device);
        let e = model.emissions(&batch);
        Ok(vec![model.head.loss(e, &batch.words, &batch.tags)])
    }

    fn layer_depths(&self, model: &TokenTagger) -> LayerDepths {
        LayerDepths::of_encoder(&model.encoder)
    }
}

/// The predicted tags of every window, in input order (batches sorted by length, several
/// at once on the CPU, as [`super::predict`]). `model` should be in inference mode.
pub fn predict_tags(
    model: &TokenTagger,
    windows: &[WordWindow],
    pad_id: u32,
    batch_size: usize,
    device: &Device,
    cancel: &AtomicBool,
) -> Result<Vec<Vec<usize>>, TrainError> {
    let lengths: Vec<usize> = windows.iter().map(|x| x.ids.len()).collect();
    let batches = eval_batches(&lengths, batch_size);
    let results = map_batches(&batches, device, cancel, |indices| {
        let refs: Vec<&WordWindow> = indices.iter().map(|&i| &windows[i]).collect();
        let batch = TaggedBatch::padded_to(&refs, pad_id, 0, device);
        let e = model.emissions(&batch);
        Ok(model.head.decode(e, &batch.words))
    })?;
    let mut out: Vec<Option<Vec<usize>>> = vec![None; windows.len()];
    for (indices, tags) in batches.iter().zip(results) {
        for (&i, t) in indices.iter().zip(tags) {
            out[i] = Some(t);
        }
    }
    out.into_iter()
        .map(|t| {
            t.ok_or_else(|| {
                TrainError::Model(ModelError::Invalid("a window was not predicted".into()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(lens: &[usize]) -> Vec<Vec<u32>> {
        let mut next = 10;
        lens.iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        next += 1;
                        next
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_short_sentence_is_one_window() {
        let p = pieces(&[1, 2, 1]);
        let w = word_windows(4, &p, &[0, 1, 2], &[false; 3], [101, 102], 16);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].ids, vec![101, 11, 12, 13, 14, 102]);
        assert_eq!(w[0].starts, vec![1, 2, 4]);
        assert_eq!(w[0].tags, vec![0, 1, 2]);
        assert_eq!(w[0].sentence, 4);
    }

    #[test]
    fn long_sentences_split_between_words_and_join_back() {
        // max_len 6: 4 pieces per window
        let p = pieces(&[2, 2, 3, 1, 5]);
        let tags = [1, 2, 3, 4, 5];
        let w = word_windows(0, &p, &tags, &[false; 5], [101, 102], 6);
        let words: Vec<Vec<usize>> = w.iter().map(|x| x.tags.clone()).collect();
        assert_eq!(words, vec![vec![1, 2], vec![3, 4], vec![5]]);
        assert!(w.iter().all(|x| x.ids.len() <= 6 && x.ids[0] == 101));
        // the 5-piece word keeps its first 4 pieces
        assert_eq!(w[2].ids, vec![101, 19, 20, 21, 22, 102]);
        let joined = join_windows(&w, words, 2);
        assert_eq!(joined, vec![vec![1, 2, 3, 4, 5], vec![]]);
        assert!(word_windows(0, &[], &[], &[], [101, 102], 6).is_empty());
    }

    #[test]
    fn windows_do_not_break_inside_an_entity_where_they_can() {
        // O B I I O with one piece each, 4 pieces per window: not [O B I I] [O]… but
        // a break before B
        let p = pieces(&[1, 1, 1, 1, 1]);
        let continues = [false, false, true, true, false];
        let w = word_windows(0, &p, &[0, 1, 2, 2, 0], &continues, [101, 102], 5);
        let words: Vec<Vec<usize>> = w.iter().map(|x| x.tags.clone()).collect();
        assert_eq!(words, vec![vec![0], vec![1, 2, 2], vec![0]]);
        // an entity longer than a window is cut after all
        let long = word_windows(
            0,
            &p,
            &[1, 2, 2, 2, 2],
            &[false, true, true, true, true],
            [101, 102],
            5,
        );
        let words: Vec<Vec<usize>> = long.iter().map(|x| x.tags.clone()).collect();
        assert_eq!(words, vec![vec![1, 2, 2], vec![2, 2]]);
    }
}
