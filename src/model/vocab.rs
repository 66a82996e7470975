//! A vocabulary grown by added tokens (issue #4): the tags that replace entity mentions
//! (`@GENE$`, `@CHEMICAL$`, …) become one word piece each instead of `@`, `gene`, `$`, once
//! [`BertTokenizer::add_tokens`](super::BertTokenizer::add_tokens) has added them and the
//! word-embedding matrix W_word has a row for every new id.
//!
//! New rows are drawn from N(0, σ²) with σ = `initializer_range`, BERT's initialisation of
//! every embedding table (Devlin et al., 2019; Hugging Face's `_init_weights`, which
//! `resize_token_embeddings` applied to new rows before transformers 4.46). The other
//! common choice, the mean of the existing rows, would start every added tag at the same
//! vector; independent draws keep the tags apart from the first step, and they depend only
//! on the run's seed.

use burn::tensor::{Distribution, Tensor};

use super::bert::{BertConfig, BertModel};

/// `model` with W_word grown to `vocab_size` rows, and its config with that `vocab_size`.
/// The existing rows are kept exactly; each new row is drawn from N(0, σ²), σ =
/// `config.initializer_range`, by the backend's generator (seed it with
/// [`with_backend_seed`](crate::train::rng::with_backend_seed) for reproducible runs).
/// Nothing changes when the matrix already has `vocab_size` rows or more.
pub fn grow_word_embeddings(
    mut model: BertModel,
    config: &BertConfig,
    vocab_size: usize,
) -> (BertModel, BertConfig) {
    let mut config = config.clone();
    let [rows, d] = model.embeddings.word_embeddings.weight.dims();
    if vocab_size <= rows {
        return (model, config);
    }
    let device = model.embeddings.word_embeddings.weight.device();
    let sigma = config.initializer_range;
    let new_rows: Tensor<2> = Tensor::random(
        [vocab_size - rows, d],
        Distribution::Normal(0.0, sigma),
        &device,
    );
    let w_word = model.embeddings.word_embeddings.weight;
    // W_word' = [W_word; new rows], a fresh leaf that records gradients on autodiff devices.
    let trainable = device.is_autodiff();
    model.embeddings.word_embeddings.weight = w_word.map(|w| {
        let grown = Tensor::cat(vec![w, new_rows], 0).detach();
        if trainable {
            grown.require_grad()
        } else {
            grown
        }
    });
    config.vocab_size = vocab_size;
    (model, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BertInput, BertTokenizer};
    use burn::tensor::Device;

    /// A small BERT `vocab.txt` (special tokens first, as in every BERT vocabulary).
    const VOCAB: &[&str] = &[
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "@",
        "$",
        "-",
        ".",
        "(",
        ")",
        "gene",
        "chemical",
        "anti",
        "inhibitors",
        "of",
        "the",
        "bind",
        "##s",
        "and",
        "therapies",
    ];

    const TAGS: [&str; 2] = ["@GENE$", "@CHEMICAL$"];

    fn tokenizer_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("vocab.txt"), VOCAB.join("\n")).expect("vocab.txt");
        dir
    }

    fn tags() -> Vec<String> {
        TAGS.iter().map(|t| t.to_string()).collect()
    }

    fn rows(tensor: Tensor<2>) -> Vec<Vec<f32>> {
        let [_, d] = tensor.dims();
        let values = tensor.into_data().try_into_vec::<f32>().expect("f32 rows");
        values.chunks(d).map(<[f32]>::to_vec).collect()
    }

    #[test]
    fn added_tags_are_one_token_each_and_other_text_is_unchanged() {
        let dir = tokenizer_dir();
        let split = BertTokenizer::from_dir(dir.path()).expect("tokenizer");
        let mut added = split.clone();
        let ids = added.add_tokens(&tags()).expect("add tags");
        let v = VOCAB.len() as u32;
        assert_eq!(ids, [v, v + 1], "new ids follow the vocabulary");
        assert_eq!(added.id_bound(), VOCAB.len() + 2);
        assert_eq!(split.id_bound(), VOCAB.len());

        // Default: the vocabulary splits a tag into pieces.
        let pieces = split.encode("@GENE$", 16).expect("encode").tokens;
        assert_eq!(pieces, ["[CLS]", "@", "gene", "$", "[SEP]"]);
        let one = added.encode("@GENE$", 16).expect("encode");
        assert_eq!(one.ids, [split.cls_id(), v, split.sep_id()]);

        let text = "@GENE$ inhibitors bind @CHEMICAL$ and anti-@GENE$ therapies.";
        let a = split.encode(text, 64).expect("encode");
        let b = added.encode(text, 64).expect("encode");
        assert_eq!(
            b.tokens,
            [
                "[CLS]",
                "@GENE$",
                "inhibitors",
                "bind",
                "@CHEMICAL$",
                "and",
                "anti",
                "-",
                "@GENE$",
                "therapies",
                ".",
                "[SEP]"
            ]
        );
        assert_eq!(a.len(), b.len() + 3 * 2, "each tag was 3 pieces, now 1");
        // Each tag is a word of its own, spanning exactly the tag in the text.
        let (start, end) = b.offsets[4];
        assert_eq!(&text[start..end], "@CHEMICAL$");
        assert!(b.word_ids[4].is_some());

        // Text without tags encodes the same both ways.
        let plain = "the gene binds (anti-chemical) inhibitors.";
        assert_eq!(
            split.encode(plain, 64).expect("encode"),
            added.encode(plain, 64).expect("encode")
        );
        assert!(added.add_tokens(&["two words".to_string()]).is_err());
    }

    #[test]
    fn growing_keeps_old_rows_and_draws_new_ones_at_bert_scale() {
        let device = Device::flex();
        let _seeded = crate::train::rng::hold_backend_seed(&device, 11);
        let v = VOCAB.len();
        let config = BertConfig::tiny(v);
        let model = BertModel::new(&config, &device);
        let before = rows(model.embeddings.word_embeddings.weight.val());
        let k = 40;
        let (grown, grown_config) = grow_word_embeddings(model, &config, v + k);
        assert_eq!(grown_config.vocab_size, v + k);
        let after = rows(grown.embeddings.word_embeddings.weight.val());
        assert_eq!(after.len(), v + k);
        assert_eq!(&after[..v], &before[..], "existing rows kept exactly");
        let new: Vec<f32> = after[v..].iter().flatten().copied().collect();
        let n = new.len() as f32;
        let mean = new.iter().sum::<f32>() / n;
        let std = (new.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
        let sigma = config.initializer_range as f32;
        // 40 × 32 draws: the sample std is within a few percent of σ.
        assert!((std / sigma - 1.0).abs() < 0.1, "std {std} vs σ {sigma}");
        assert!(mean.abs() < 0.1 * sigma, "mean {mean}");
        // Growing to fewer rows changes nothing.
        let (same, same_config) = grow_word_embeddings(grown, &grown_config, v);
        assert_eq!(same_config.vocab_size, v + k);
        assert_eq!(rows(same.embeddings.word_embeddings.weight.val()), after);
    }

    #[test]
    fn added_rows_learn_and_survive_save_and_load() {
        let dir = tokenizer_dir();
        let mut tokenizer = BertTokenizer::from_dir(dir.path()).expect("tokenizer");
        tokenizer.add_tokens(&tags()).expect("add tags");
        let device = Device::flex().autodiff();
        let _seeded = crate::train::rng::hold_backend_seed(&device, 3);
        let config = BertConfig::tiny(VOCAB.len());
        let (model, config) = grow_word_embeddings(
            BertModel::new(&config, &device),
            &config,
            tokenizer.id_bound(),
        );
        let text = "@GENE$ binds @CHEMICAL$.";
        let encoding = tokenizer.encode(text, 32).expect("encode");
        let input =
            BertInput::from_encodings(std::slice::from_ref(&encoding), tokenizer.pad_id(), &device)
                .expect("input");
        let output = model.forward(input.input_ids, input.attention_mask, false);
        let grads = output.last_hidden_state.powf_scalar(2.0).sum().backward();
        let grad = model
            .embeddings
            .word_embeddings
            .weight
            .grad(&grads)
            .expect("W_word records gradients after growing");
        let grad = rows(grad);
        assert_eq!(grad.len(), VOCAB.len() + 2);
        let gene = tokenizer.token_id("@GENE$").expect("added") as usize;
        assert!(grad[gene].iter().any(|g| *g != 0.0), "the tag's row learns");
        let unused = VOCAB
            .iter()
            .position(|t| *t == "therapies")
            .expect("in vocab");
        assert!(grad[unused].iter().all(|g| *g == 0.0));

        // A saved model directory reloads with the grown vocabulary on both sides.
        let saved = tempfile::tempdir().expect("temp dir");
        model.save(&config, saved.path()).expect("save weights");
        tokenizer.save(saved.path()).expect("save tokenizer");
        let reloaded_tokenizer = BertTokenizer::from_dir(saved.path()).expect("reload tokenizer");
        assert_eq!(
            reloaded_tokenizer.encode(text, 32).expect("encode").ids,
            encoding.ids
        );
        let (reloaded, reloaded_config) =
            BertModel::load(saved.path(), &Device::flex()).expect("reload weights");
        assert_eq!(reloaded_config.vocab_size, VOCAB.len() + 2);
        assert_eq!(
            rows(reloaded.embeddings.word_embeddings.weight.val()),
            rows(model.embeddings.word_embeddings.weight.val())
        );
    }
}
