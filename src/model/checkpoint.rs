//! Hugging Face BERT directories on disk: `config.json` + `model.safetensors` (or
//! `pytorch_model.bin`), mapped onto [`BertModel`]'s fields.
//!
//! The module tree mirrors HF's names except for two Rust spellings, renamed on the way
//! in and out: `LayerNorm` <-> `layer_norm` and `attention.self` <-> `attention.self_attention`.
//! PyTorch's `Linear` weights are `[out, in]` and burn's `[in, out]`, and LayerNorm's
//! `weight`/`bias` are burn's `gamma`/`beta`; burn-store's PyTorch adapters convert both.
//! A `bert.` prefix (checkpoints saved from `BertFor*` classes) is stripped, and tensors the
//! encoder has no place for (pooler, `cls.*` heads, `position_ids`) are ignored; a tensor
//! the encoder needs but the file lacks is an error.

use std::path::Path;

use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot,
    PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use burn::tensor::DType;

use super::bert::{BertConfig, BertModel};
use super::ModelError;

/// Weights file names, in the order they are looked for.
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// Tokenizer files copied beside a saved model so the directory is complete.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Checkpoint key patterns -> burn module paths.
const LOAD_RENAMES: [(&str, &str); 3] = [
    (r"^bert\.", ""),
    (r"(^|\.)LayerNorm\.", "${1}layer_norm."),
    (r"\.attention\.self\.", ".attention.self_attention."),
];

/// burn module paths -> Hugging Face keys.
const SAVE_RENAMES: [(&str, &str); 2] = [
    (r"(^|\.)layer_norm\.", "${1}LayerNorm."),
    (r"\.attention\.self_attention\.", ".attention.self."),
];

fn remapper(renames: &[(&str, &str)]) -> KeyRemapper {
    // The patterns are constants of this module, checked by the tests below.
    KeyRemapper::from_patterns(renames.to_vec()).unwrap_or_default()
}

/// Fills `model` with the weights in `dir` (`model.safetensors`, else `pytorch_model.bin`).
pub fn load_weights(model: &mut BertModel, dir: &Path) -> Result<(), ModelError> {
    let Some(path) = WEIGHT_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
    else {
        return Err(ModelError::Weights {
            path: dir.to_path_buf(),
            message: format!("none of {} found", WEIGHT_FILES.join(", ")),
        });
    };
    let fail = |message: String| ModelError::Weights {
        path: path.clone(),
        message,
    };
    let result = if path.extension().is_some_and(|e| e == "safetensors") {
        let adapter = PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32));
        let mut store = SafetensorsStore::from_file(&path)
            .remap(remapper(&LOAD_RENAMES))
            .with_from_adapter(adapter);
        model
            .load_from(&mut store)
            .map_err(|e| fail(e.to_string()))?
    } else {
        let mut store = PytorchStore::from_file(&path)
            .remap(remapper(&LOAD_RENAMES))
            .map_indices_contiguous(false);
        model
            .load_from(&mut store)
            .map_err(|e| fail(e.to_string()))?
    };
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(fail(result.to_string()));
    }
    Ok(())
}

/// Writes `model.safetensors` and `config.json` into `dir` (created if needed) in the
/// layout Hugging Face `transformers` loads with `BertModel.from_pretrained(dir)`.
pub fn save(model: &BertModel, config: &BertConfig, dir: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let weights = dir.join(WEIGHT_FILES[0]);
    let mut store = SafetensorsStore::from_file(&weights)
        .remap(remapper(&SAVE_RENAMES))
        .with_to_adapter(BurnToPyTorchAdapter)
        // transformers refuses safetensors files whose `format` is not `pt`.
        .metadata("format", "pt")
        .overwrite(true);
    model.save_into(&mut store).map_err(|e| ModelError::Save {
        path: weights.clone(),
        message: e.to_string(),
    })?;

    let mut json = serde_json::to_value(config).map_err(|e| ModelError::Invalid(e.to_string()))?;
    if let Some(object) = json.as_object_mut() {
        object.insert("architectures".into(), serde_json::json!(["BertModel"]));
    }
    let config_path = dir.join("config.json");
    let text =
        serde_json::to_string_pretty(&json).map_err(|e| ModelError::Invalid(e.to_string()))?;
    std::fs::write(&config_path, text).map_err(|e| ModelError::io(&config_path, e))
}

/// Copies the tokenizer files present in `from` into `to`, so a saved model directory
/// can be loaded on its own (by `pipe` and by `transformers`).
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(to).map_err(|e| ModelError::io(to, e))?;
    for name in TOKENIZER_FILES {
        let source = from.join(name);
        if source.is_file() {
            std::fs::copy(&source, to.join(name)).map_err(|e| ModelError::io(&source, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_patterns_compile() {
        assert!(KeyRemapper::from_patterns(LOAD_RENAMES.to_vec()).is_ok());
        assert!(KeyRemapper::from_patterns(SAVE_RENAMES.to_vec()).is_ok());
    }
}

#[cfg(test)]
mod roundtrip_tests {
    use super::*;
    use burn::tensor::{Device, Int, Tensor, TensorData};

    fn output(model: &BertModel, device: &Device) -> Vec<f32> {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 9, 4, 3], [1, 4]), device);
        let mask = Tensor::<2, Int>::ones([1, 4], device);
        model
            .forward(ids, mask, false)
            .last_hidden_state
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn tiny_model_saves_in_hf_layout_and_reloads() {
        let device = Device::flex();
        let _seeded = crate::train::rng::hold_backend_seed(&device, 21);
        let config = BertConfig::tiny(40);
        let model = BertModel::new(&config, &device);
        let dir = tempfile::tempdir().unwrap();
        model.save(&config, dir.path()).unwrap();

        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
        // HF names, PyTorch [out, in] Linear layout.
        assert_eq!(
            header["encoder.layer.1.intermediate.dense.weight"]["shape"],
            serde_json::json!([64, 32])
        );
        assert!(header["encoder.layer.0.attention.self.query.bias"].is_object());
        assert!(header["encoder.layer.0.attention.output.LayerNorm.weight"].is_object());
        assert!(header["embeddings.LayerNorm.bias"].is_object());

        let (reloaded, reconfig) = BertModel::load(dir.path(), &device).unwrap();
        assert_eq!(reconfig, config);
        assert_eq!(output(&model, &device), output(&reloaded, &device));
    }

    #[test]
    fn missing_weights_are_an_error_naming_them() {
        let device = Device::flex();
        let config = BertConfig::tiny(40);
        let dir = tempfile::tempdir().unwrap();
        crate::train::rng::unseeded_module(|| BertModel::new(&config, &device))
            .save(&config, dir.path())
            .unwrap();
        let deeper = BertConfig {
            num_hidden_layers: 3,
            ..config
        };
        let mut model = crate::train::rng::unseeded_module(|| BertModel::new(&deeper, &device));
        let message = load_weights(&mut model, dir.path())
            .unwrap_err()
            .to_string();
        assert!(message.contains("encoder.layer.2"), "{message}");

        let empty = tempfile::tempdir().unwrap();
        let message = load_weights(&mut model, empty.path())
            .unwrap_err()
            .to_string();
        assert!(message.contains("model.safetensors"), "{message}");
    }
}
