//! The model being fine-tuned: BERT encoder + head, its padded batches and its loss.

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::rng::with_backend_seed;
use crate::model::heads::{Head, HeadConfig, HeadInput, HeadKind, HeadOutput};
use crate::model::tokenizer::Encoding;
use crate::model::{BertConfig, BertModel, ModelError};

/// One tokenized instance: `[CLS] pieces… [SEP]`, its label index and entity positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedInstance {
    pub ids: Vec<u32>,
    pub label: usize,
    /// Token positions of the first word piece of the two entity tags (see
    /// [`entity_token_positions`]).
    pub entities: [usize; 2],
}

impl EncodedInstance {
    pub fn new(text: &str, encoding: &Encoding, label: usize) -> Self {
        EncodedInstance {
            ids: encoding.ids.clone(),
            label,
            entities: entity_token_positions(text, encoding),
        }
    }
}

/// Byte spans of the entity tags in `text`: `@` + letters, digits, `-` or `_` + `$`
/// (`@CHEMICAL$`, `@GENE$`, `@CHEM-GENE$`, `@DRUG$`, `@PROTEIN$`).
pub fn entity_tags(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'@' {
            let mut j = i + 1;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || b"-_".contains(&bytes[j]))
            {
                j += 1;
            }
            if j > i + 1 && j < bytes.len() && bytes[j] == b'$' {
                tags.push((i, j + 1));
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    tags
}

/// Meng et al.'s entity positions `(i, j)`: the first word piece of the first and second
/// entity tag. One tag only (overlapping mentions, `@CHEM-GENE$`) gives `(i, i)`; a tag cut
/// off by `max_len` falls back to the other one, and no tag at all to `[CLS]` (0).
pub fn entity_token_positions(text: &str, encoding: &Encoding) -> [usize; 2] {
    let first_piece = |(start, end): (usize, usize)| {
        (0..encoding.len()).find(|&k| {
            encoding.word_ids.get(k).copied().flatten().is_some()
                && encoding
                    .offsets
                    .get(k)
                    .is_some_and(|&(s, _)| s >= start && s < end)
        })
    };
    let found: Vec<usize> = entity_tags(text)
        .into_iter()
        .filter_map(first_piece)
        .collect();
    match found.as_slice() {
        [] => [0, 0],
        [i] => [*i, *i],
        [i, j, ..] => [*i, *j],
    }
}

/// A padded batch on one device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, T]`, `T` = the longest instance of this batch.
    pub input_ids: Tensor<2, Int>,
    /// `[B, T]`: 1 for tokens, 0 for padding.
    pub attention_mask: Tensor<2, Int>,
    /// Tokens per instance, [CLS] and [SEP] included.
    pub lengths: Vec<usize>,
    pub entity_positions: Vec<[usize; 2]>,
    /// `[B]` gold label indices.
    pub labels: Tensor<1, Int>,
}

impl Batch {
    /// Pads `instances` on the right with `pad_id` to the longest of them.
    pub fn new(instances: &[&EncodedInstance], pad_id: u32, device: &Device) -> Batch {
        Batch::padded_to(instances, pad_id, 0, device)
    }

    /// Pads `instances` on the right with `pad_id` to `length` tokens, or to the longest of
    /// them where that is longer (fixed padding, as without length bucketing).
    pub fn padded_to(
        instances: &[&EncodedInstance],
        pad_id: u32,
        length: usize,
        device: &Device,
    ) -> Batch {
        let batch = instances.len();
        let longest = instances
            .iter()
            .map(|x| x.ids.len())
            .max()
            .unwrap_or(0)
            .max(length);
        let mut ids = vec![i64::from(pad_id); batch * longest];
        let mut mask = vec![0i64; batch * longest];
        for (row, instance) in instances.iter().enumerate() {
            for (t, &id) in instance.ids.iter().enumerate() {
                ids[row * longest + t] = i64::from(id);
                mask[row * longest + t] = 1;
            }
        }
        let labels: Vec<i64> = instances.iter().map(|x| x.label as i64).collect();
        Batch {
            input_ids: Tensor::from_data(TensorData::new(ids, [batch, longest]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, [batch, longest]), device),
            lengths: instances.iter().map(|x| x.ids.len()).collect(),
            entity_positions: instances.iter().map(|x| x.entities).collect(),
            labels: Tensor::from_data(TensorData::new(labels, [batch]), device),
        }
    }
}

/// BERT encoder with a fine-tuning head.
#[derive(Module, Debug)]
pub struct SequenceClassifier {
    pub encoder: BertModel,
    pub head: Head,
}

impl SequenceClassifier {
    /// A randomly initialized encoder of shape `config` with a fresh `head` over
    /// `num_labels` labels, every parameter drawn under `seed`: the same model each call
    /// (the models of tests and `pipe bench train`).
    pub fn random(
        config: &BertConfig,
        head: HeadKind,
        num_labels: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        with_backend_seed(device, seed, || {
            let head = HeadConfig::on_encoder(head, config, num_labels).init(device)?;
            let model = SequenceClassifier {
                encoder: BertModel::new(config, device),
                head,
            };
            initialize_params(&model);
            Ok(model)
        })
    }

    /// Encodes the batch and applies the head (asking the encoder for attention
    /// probabilities only when the head reads them).
    pub fn forward(&self, batch: &Batch) -> Result<HeadOutput, ModelError> {
        classify(&self.encoder, &self.head, batch)
    }

    /// Which head this model carries.
    pub fn head_kind(&self) -> HeadKind {
        self.head.kind()
    }
}

/// Encodes `batch` with `encoder` and applies `head` (asking the encoder for attention
/// probabilities only when the head reads them). A multi-task model shares one encoder
/// between several heads.
pub fn classify(encoder: &BertModel, head: &Head, batch: &Batch) -> Result<HeadOutput, ModelError> {
    let head_kind = head.kind();
    let out = encoder.forward(
        batch.input_ids.clone(),
        batch.attention_mask.clone(),
        head_kind.needs_attentions(),
    );
    head.forward(HeadInput {
        last_hidden_state: out.last_hidden_state,
        hidden_states: if head_kind.needs_all_layers() {
            out.hidden_states
        } else {
            Vec::new()
        },
        attentions: out.attentions,
        lengths: batch.lengths.clone(),
        entity_positions: batch.entity_positions.clone(),
    })
}

/// Initializes every lazily initialized parameter of `model` now (burn draws a parameter's
/// initial value on first use), so that the draws happen under the caller's seed.
pub fn initialize_params<M: Module>(model: &M) {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Touch);
}

/// Mean cross-entropy `−(1/B) Σ_b log p_b[y_b]` of `logits: [B, C]` against `labels: [B]`.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let log_p = log_softmax(logits, 1);
    let picked: Tensor<2> = log_p.gather(1, labels.reshape([batch, 1]));
    picked.mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoding(text: &str, pieces: &[(&str, usize, usize)]) -> Encoding {
        let mut tokens = vec!["[CLS]".to_string()];
        let mut offsets = vec![(0, 0)];
        let mut word_ids = vec![None];
        for (k, (piece, s, e)) in pieces.iter().enumerate() {
            tokens.push(piece.to_string());
            offsets.push((*s, *e));
            word_ids.push(Some(k as u32));
        }
        tokens.push("[SEP]".into());
        offsets.push((0, 0));
        word_ids.push(None);
        let _ = text;
        Encoding {
            ids: (0..tokens.len() as u32).collect(),
            tokens,
            word_ids,
            offsets,
        }
    }

    #[test]
    fn finds_tags_and_their_first_piece() {
        let text = "@CHEMICAL$ inhibits @GENE$.";
        assert_eq!(entity_tags(text), vec![(0, 10), (20, 26)]);
        let enc = encoding(
            text,
            &[
                ("@", 0, 1),
                ("chemical", 1, 9),
                ("$", 9, 10),
                ("inhibits", 11, 19),
                ("@", 20, 21),
                ("gene", 21, 25),
                ("$", 25, 26),
                (".", 26, 27),
            ],
        );
        // the tag at byte 0 is not confused with [CLS]'s (0, 0) offset
        assert_eq!(entity_token_positions(text, &enc), [1, 5]);
    }

    #[test]
    fn one_tag_or_none() {
        assert_eq!(entity_tags("x @CHEM-GENE$ y"), vec![(2, 13)]);
        assert!(entity_tags("mail@host and $5").is_empty());
        let enc = encoding("no tags", &[("no", 0, 2), ("tags", 3, 7)]);
        assert_eq!(entity_token_positions("no tags", &enc), [0, 0]);
    }

    #[test]
    fn batch_pads_to_its_longest_instance() {
        let a = EncodedInstance {
            ids: vec![101, 7, 8, 102],
            label: 1,
            entities: [1, 2],
        };
        let b = EncodedInstance {
            ids: vec![101, 9, 102],
            label: 0,
            entities: [1, 1],
        };
        let batch = Batch::new(&[&a, &b], 0, &Device::default());
        assert_eq!(batch.input_ids.dims(), [2, 4]);
        let ids: Vec<i64> = batch
            .input_ids
            .into_data()
            .try_into_vec_as::<i64>()
            .expect("ids");
        assert_eq!(ids, vec![101, 7, 8, 102, 101, 9, 102, 0]);
        let mask: Vec<i64> = batch
            .attention_mask
            .into_data()
            .try_into_vec_as::<i64>()
            .expect("mask");
        assert_eq!(mask, vec![1, 1, 1, 1, 1, 1, 1, 0]);
        assert_eq!(batch.lengths, vec![4, 3]);
    }

    #[test]
    fn fixed_padding_masks_the_extra_positions() {
        let a = EncodedInstance {
            ids: vec![101, 7, 102],
            label: 0,
            entities: [0, 0],
        };
        let batch = Batch::padded_to(&[&a], 0, 5, &Device::default());
        assert_eq!(batch.input_ids.dims(), [1, 5]);
        let mask: Vec<i64> = batch
            .attention_mask
            .into_data()
            .try_into_vec_as::<i64>()
            .expect("mask");
        assert_eq!(mask, vec![1, 1, 1, 0, 0]);
        assert_eq!(batch.lengths, vec![3]);
        // never shorter than the longest instance
        let short = Batch::padded_to(&[&a], 0, 2, &Device::default());
        assert_eq!(short.input_ids.dims(), [1, 3]);
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let device = Device::default();
        let logits = Tensor::<2>::from_data([[2.0f32, 0.0, 0.0], [0.0, 0.0, 0.0]], &device);
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &device);
        let loss: f32 = cross_entropy(logits, labels).into_scalar();
        let p0 = (2.0f32).exp() / ((2.0f32).exp() + 2.0);
        let expected = -(p0.ln() + (1.0f32 / 3.0).ln()) / 2.0;
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    }
}
