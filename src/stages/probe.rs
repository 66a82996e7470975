//! `probe`: edge probing of a frozen BERT encoder with a scalar mix over layers 0..=l, for
//! every l, and the knowledge each layer adds, `Δ^l = F1(P^l) − F1(P^{l−1})` (su2022
//! Fig. 1 shows `Δ^L` per task). See [`crate::probe`] for the model and a pipeline example.
//!
//! Inputs: `data`, a `split` output (`train.jsonl`, `test.jsonl`, `labels.json`, or
//! `fold-K/…` with param `fold: K`); `model`, a Hugging Face BERT directory (a `fetch` or
//! `pretrain` output, or `finetune_stage.model` for a fine-tuned encoder).
//!
//! Outputs: `layer-L/predictions.jsonl` and `layer-L/labels.json` per probed layer (test
//! set, `{"id","gold","pred"}`, so `evaluate` can read `probe_stage.layer-L`);
//! `metrics.json` with `layers` (`layer`, P/R/F1 and counts as `evaluate` scores them, the
//! learned `alpha` over layers 0..=l and `gamma`, training loss per epoch), `delta`
//! (`Δ^l` for l ≥ 1), `delta_last` (`Δ^L`), `alpha_last` (α of `P^L`) and the averaging
//! used (micro over the non-negative labels; binary for a 2-label task); and `probe.md`.
//!
//! The encoder's states of all layers are kept in memory for the training set (see
//! [`crate::probe::features`] for the size); `max_train` caps it. Each finished `P^l` is
//! checkpointed, so an interrupted run recomputes only the states and the missing layers.

use std::fmt::Write as _;
use std::path::Path;

use burn::module::Module;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::training_checks::{
    check_caps, check_max_len_fits, check_non_negative, check_optimizer_params, check_positive,
    check_tiny, OptimizerParams,
};
use super::training_defaults;
use super::{InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::data::jsonl;
use crate::data::schema::{Task, LABELS_FILE};
use crate::metrics::evaluation::{evaluate_dir, EvaluateParams, Evaluation};
use crate::model::precision::{autocast, Precision};
use crate::model::BertTokenizer;
use crate::probe::{
    extract, fit_probe, knowledge_deltas, mix_weights, predict_probe, LayerDelta, ProbeConfig,
    ProbeEnv,
};
use crate::report::cells::{percent, signed_points};
use crate::train::rng::with_backend_seed;
use crate::train::{load_encoder, read_split, Init, SplitSet, SplitSource};
use crate::train::{Checkpoints, TrainSettings};

/// Params of `probe`; defaults are su2022's ("Experiment setup": a two-layer perceptron
/// with 1024 hidden units, lr 2e-5, 4 epochs; max_len 128 and batch 32 as its BioBERT
/// fine-tuning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeParams {
    /// The l of the classifiers `P^l` to train (0 = embeddings only); default 0..=L.
    #[serde(default)]
    pub layers: Option<Vec<usize>>,
    /// Hidden units of the probing MLP.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    #[serde(default = "training_defaults::lr")]
    pub lr: f64,
    /// Learning rate of the scalar mix (`α`, `γ`); default `lr`. The paper gives one rate;
    /// with few updates a mix at a fine-tuning rate barely leaves uniform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix_lr: Option<f64>,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "training_defaults::batch_size")]
    pub batch_size: usize,
    /// Tokens of the zero-padded sequence the MLP reads, [CLS] and [SEP] included.
    #[serde(default = "training_defaults::max_len")]
    pub max_len: usize,
    /// Fraction of the updates spent in linear warm-up.
    #[serde(default = "training_defaults::warmup")]
    pub warmup: f64,
    #[serde(default = "training_defaults::weight_decay")]
    pub weight_decay: f64,
    /// Max global gradient norm; 0 turns clipping off.
    #[serde(default = "training_defaults::grad_clip")]
    pub grad_clip: f64,
    #[serde(default = "training_defaults::seed")]
    pub seed: u64,
    /// Use `fold-K/` of the split.
    #[serde(default)]
    pub fold: Option<u32>,
    /// Use at most this many training instances (the same subset as `finetune`'s).
    #[serde(default)]
    pub max_train: Option<usize>,
    /// Use at most this many test instances.
    #[serde(default)]
    pub max_eval: Option<usize>,
    #[serde(default)]
    pub init: Init,
    /// With `init: random`: the tiny smoke-test encoder, with the tokenizer's vocabulary.
    #[serde(default)]
    pub tiny: bool,
    /// The type of the encoder's matrix products: `f32`, `bf16` or `f16` (mixed
    /// precision with f32 master weights, see [`crate::model::precision`]; the probe's own
    /// MLP trains in f32 either way). (Left out of the key at its default, f32.)
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

fn default_hidden() -> usize {
    1024
}
fn default_epochs() -> usize {
    4
}

impl ProbeParams {
    fn settings(&self) -> TrainSettings {
        TrainSettings {
            lr: self.lr,
            epochs: self.epochs,
            batch_size: self.batch_size,
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            seed: self.seed,
            bucketing: false,
            layer_decay: 1.0,
            grad_accum: 1,
            // the stage keeps each trained P^l instead (`probe-layer-l.json`)
            checkpoints: Checkpoints::Never,
            record_updates: false,
            // `precision` is the encoder's, whose passes compute the states; the probe's
            // own small MLP trains in f32
            precision: Precision::F32,
            frozen_encoder_updates: 0,
        }
    }

    /// The probed layers in increasing order, each in 0..=`num_layers`.
    fn layers(&self, num_layers: usize) -> Result<Vec<usize>, ParamError> {
        let mut layers = self
            .layers
            .clone()
            .unwrap_or_else(|| (0..=num_layers).collect());
        layers.sort_unstable();
        layers.dedup();
        if let Some(bad) = layers.iter().find(|&&l| l > num_layers) {
            return Err(ParamError::new(
                "layers",
                format!("layer {bad} of an encoder with {num_layers} layers (0..={num_layers})"),
            ));
        }
        Ok(layers)
    }
}

/// The `probe` stage kind.
pub struct ProbeStage;

impl Stage for ProbeStage {
    const KIND: &'static str = "probe";
    const VERSION: u32 = 1;
    const USES_BACKEND: bool = true;
    type Params = ProbeParams;
    const INPUTS: InputContract = InputContract::Declared(&[
        InputSpec::one("data", "a split of a relation corpus"),
        InputSpec::one("model", "a BERT checkpoint directory"),
    ]);

    fn required_task(_: &ProbeParams, input: &str) -> Option<Task> {
        // every head so far classifies an entity pair of a sentence
        (input == "data").then_some(Task::Relation)
    }

    fn check(p: &ProbeParams) -> Result<(), ParamError> {
        check_positive(&[
            ("hidden", p.hidden),
            ("epochs", p.epochs),
            ("batch_size", p.batch_size),
        ])?;
        check_optimizer_params(&OptimizerParams {
            lr: p.lr,
            max_len: p.max_len,
            min_max_len: 3,
            warmup: p.warmup,
            weight_decay: p.weight_decay,
            grad_clip: p.grad_clip,
        })?;
        if let Some(mix_lr) = p.mix_lr {
            check_non_negative("mix_lr", mix_lr)?;
        }
        if p.layers.as_ref().is_some_and(Vec::is_empty) {
            return Err(ParamError::new(
                "layers",
                "an empty list probes nothing; leave it out to probe every layer",
            ));
        }
        check_tiny(p.tiny, p.init)?;
        check_caps(p.max_train, p.max_eval)?;
        Ok(())
    }

    fn run(ctx: &mut StageCtx, p: &ProbeParams) -> Result<(), StageError> {
        // training and every scoring pass of the stage in its precision
        autocast(p.precision, || run(ctx, p))
    }
}

/// One trained `P^l`: what the checkpoint keeps and `metrics.json` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerProbe {
    layer: usize,
    /// `α_l` over layers 0..=l.
    alpha: Vec<f32>,
    gamma: f32,
    /// Mean training loss per epoch.
    train_loss: Vec<f64>,
    train_seconds: f64,
    /// Predicted label index per test instance, in file order.
    pred: Vec<usize>,
}

/// `predictions.jsonl` line.
#[derive(Debug, Serialize)]
struct PredictionLine<'a> {
    id: &'a str,
    gold: &'a str,
    pred: &'a str,
}

fn run(ctx: &mut StageCtx, p: &ProbeParams) -> Result<(), StageError> {
    let model_dir = ctx.inputs.path("model")?.to_path_buf();
    let SplitSource {
        dir: data_dir,
        labels_path,
        label_set,
    } = ctx.split_input(p.fold)?;
    let tokenizer = BertTokenizer::from_dir(&model_dir)?;
    let read = |name: &str, cap: Option<usize>| {
        read_split(
            &data_dir,
            name,
            cap,
            &label_set.labels,
            &tokenizer,
            p.max_len,
        )?
        .ok_or_else(|| StageError::Input {
            name: "data".into(),
            message: format!("no {name}.jsonl in {}", data_dir.display()),
        })
    };
    let train = read("train", p.max_train)?;
    let test = read("test", p.max_eval)?;

    let (device, train_dev) = ctx.devices()?;
    let (encoder, config) = with_backend_seed(&device, p.seed, || {
        load_encoder(p.init, p.tiny, &model_dir, &tokenizer, &device)
    })?;
    check_max_len_fits(p.max_len, config.max_position_embeddings)?;
    let num_layers = config.num_hidden_layers;
    let layers = p.layers(num_layers)?;
    ctx.progress.println(format!(
        "{}: {} train, {} test instances; probing layers {:?} of {num_layers}",
        ctx.name,
        train.encoded.len(),
        test.encoded.len(),
        layers
    ));

    // h^0 … h^L of every instance, once
    let cancel = ctx.cancel.clone();
    let env = ProbeEnv {
        device: &device,
        progress: &ctx.progress,
        cancel: &cancel,
    };
    let batches = |n: usize| n.div_ceil(p.batch_size) as u64;
    ctx.progress
        .set_length(batches(train.encoded.len()) + batches(test.encoded.len()));
    ctx.progress.set_message("encoding (frozen encoder)");
    let pad_id = tokenizer.pad_id();
    let extract_start = std::time::Instant::now();
    let train_states = extract(
        &encoder,
        &train.encoded,
        pad_id,
        p.max_len,
        p.batch_size,
        &env,
    )?;
    let test_states = extract(
        &encoder,
        &test.encoded,
        pad_id,
        p.max_len,
        p.batch_size,
        &env,
    )?;
    let extract_seconds = extract_start.elapsed().as_secs_f64();
    drop(encoder);
    let feature_bytes = train_states.bytes() + test_states.bytes();
    ctx.progress.println(format!(
        "{}: states of {} layers kept: {:.1} MB, {extract_seconds:.1}s",
        ctx.name,
        num_layers + 1,
        feature_bytes as f64 / 1e6
    ));

    let train_env = ProbeEnv {
        device: &train_dev,
        ..env
    };
    // the progress bar counts the updates of the probe in training
    let settings = p.settings();
    let gold = train.gold();
    let mut probes = Vec::with_capacity(layers.len());
    for &l in &layers {
        ctx.check_cancelled()?;
        let checkpoint = ctx.checkpoint_dir.join(format!("probe-layer-{l}.json"));
        let saved = read_checkpoint(&checkpoint, l, test.encoded.len());
        let probe = match saved {
            Some(probe) => {
                ctx.progress.println(format!(
                    "{}: P^{l} taken from {}",
                    ctx.name,
                    checkpoint.display()
                ));
                probe
            }
            None => {
                let probe_config = ProbeConfig {
                    layers: l + 1,
                    max_len: p.max_len,
                    hidden_size: train_states.hidden_size(),
                    mlp_hidden: p.hidden,
                    num_labels: label_set.labels.len(),
                };
                let fitted = fit_probe(
                    &probe_config,
                    &train_states,
                    &gold,
                    &settings,
                    p.mix_lr.unwrap_or(p.lr),
                    &train_env,
                )?;
                let valid = fitted.model.valid();
                let pred = predict_probe(&valid, &test_states, p.batch_size, &env)?;
                let (alpha, gamma) = mix_weights(&valid)?;
                let probe = LayerProbe {
                    layer: l,
                    alpha,
                    gamma,
                    train_loss: fitted.epoch_losses,
                    train_seconds: fitted.seconds,
                    pred,
                };
                jsonl::write_json(&checkpoint, &probe)?;
                ctx.progress.println(format!(
                    "{}: P^{l} trained: loss per epoch {:.4?}, {:.1}s",
                    ctx.name, probe.train_loss, probe.train_seconds
                ));
                probe
            }
        };
        probes.push(probe);
    }

    let mut scored = Vec::with_capacity(probes.len());
    for probe in probes {
        let dir = ctx.out_dir.join(format!("layer-{}", probe.layer));
        write_predictions(&dir, &test, &label_set.labels, &probe.pred, &labels_path)?;
        let eval = evaluate_dir(&dir, &EvaluateParams::default())?;
        scored.push((probe, eval));
    }
    let f1: Vec<(usize, f64)> = scored
        .iter()
        .map(|(probe, eval)| (probe.layer, eval.scores.f1))
        .collect();
    let deltas = knowledge_deltas(&f1);
    let delta_last = deltas
        .iter()
        .find(|d| d.layer == num_layers)
        .map(|d| d.delta_f1);
    let alpha_last = scored
        .iter()
        .find(|(probe, _)| probe.layer == num_layers)
        .map(|(probe, _)| probe.alpha.clone());
    let first = scored.first().map(|(_, eval)| eval);
    let layer_rows: Vec<serde_json::Value> = scored
        .iter()
        .map(|(probe, eval)| {
            json!({
                "layer": probe.layer,
                "precision": eval.scores.precision,
                "recall": eval.scores.recall,
                "f1": eval.scores.f1,
                "tp": eval.scores.tp,
                "fp": eval.scores.fp,
                "fn": eval.scores.fn_,
                "alpha": probe.alpha,
                "gamma": probe.gamma,
                "train_loss": probe.train_loss,
                "train_seconds": probe.train_seconds,
            })
        })
        .collect();
    ctx.write_json(
        "metrics.json",
        &json!({
            "average": first.map(|e| e.average),
            "negative": first.and_then(|e| e.negative.clone()),
            "positive": first.and_then(|e| e.positive.clone()),
            "num_layers": num_layers,
            "layers": layer_rows,
            "delta": deltas,
            "delta_last": delta_last,
            "alpha_last": alpha_last,
            "train_instances": train.encoded.len(),
            "test_instances": test.encoded.len(),
            "max_len": p.max_len,
            "hidden": p.hidden,
            "state_bytes": feature_bytes,
            "extract_seconds": extract_seconds,
        }),
    )?;
    let md_path = ctx.out_dir.join("probe.md");
    std::fs::write(&md_path, markdown(&ctx.name, &scored, &deltas, num_layers))
        .map_err(|e| StageError::io(&md_path, e))?;
    Ok(())
}

/// A checkpointed `P^l` of this run, if there is a readable one for `n_test` instances.
fn read_checkpoint(path: &Path, layer: usize, n_test: usize) -> Option<LayerProbe> {
    if !path.is_file() {
        return None;
    }
    jsonl::read_json::<LayerProbe>(path)
        .ok()
        .filter(|probe| probe.layer == layer && probe.pred.len() == n_test)
}

/// `dir/predictions.jsonl` (test set) and `dir/labels.json`, as `finetune` writes them.
fn write_predictions(
    dir: &Path,
    test: &SplitSet,
    labels: &[String],
    pred: &[usize],
    labels_path: &Path,
) -> Result<(), StageError> {
    std::fs::create_dir_all(dir).map_err(|e| StageError::io(dir, e))?;
    let name = |i: usize| {
        labels
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| StageError::Failed(format!("predicted label index {i} out of range")))
    };
    let lines = test
        .instances
        .iter()
        .zip(&test.encoded)
        .zip(pred)
        .map(|((instance, encoded), &p)| {
            Ok(PredictionLine {
                id: &instance.id,
                gold: name(encoded.label)?,
                pred: name(p)?,
            })
        })
        .collect::<Result<Vec<_>, StageError>>()?;
    jsonl::write(&dir.join("predictions.jsonl"), &lines)?;
    std::fs::copy(labels_path, dir.join(LABELS_FILE))
        .map_err(|e| StageError::io(labels_path, e))?;
    Ok(())
}

/// `probe.md`: F1 and Δ per layer and the learned layer weights.
fn markdown(
    title: &str,
    scored: &[(LayerProbe, Evaluation)],
    deltas: &[LayerDelta],
    num_layers: usize,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Probing: {title}\n");
    let _ = writeln!(
        s,
        "Probing classifier P^l over the scalar mix of layers 0..l (0 = embeddings) of a \
         frozen {num_layers}-layer encoder; test-set scores. Δ^l = F1(P^l) − F1(P^(l−1)), \
         in points.\n"
    );
    let _ = writeln!(s, "| l | P | R | F1 | Δ^l | γ | α (layers 0..l) |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for (probe, eval) in scored {
        let delta = deltas
            .iter()
            .find(|d| d.layer == probe.layer)
            .map_or("—".to_string(), |d| signed_points(100.0 * d.delta_f1));
        let alpha: Vec<String> = probe.alpha.iter().map(|a| format!("{a:.3}")).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {delta} | {:.3} | {} |",
            probe.layer,
            percent(eval.scores.precision, 1),
            percent(eval.scores.recall, 1),
            percent(eval.scores.f1, 1),
            probe.gamma,
            alpha.join(" ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_default_to_the_paper_and_are_checked() {
        let p: ProbeParams = serde_json::from_value(json!({})).expect("defaults");
        assert_eq!(
            (p.hidden, p.lr, p.epochs, p.batch_size, p.max_len),
            (1024, 2e-5, 4, 32, 128)
        );
        assert!(ProbeStage::check(&p).is_ok());
        assert_eq!(p.layers(6).expect("all"), (0..=6).collect::<Vec<_>>());
        let some: ProbeParams =
            serde_json::from_value(json!({"layers": [6, 5, 5]})).expect("parse");
        assert_eq!(some.layers(6).expect("sorted"), vec![5, 6]);
        assert_eq!(some.layers(4).map_err(|e| e.param), Err("layers".into()));
        let unknown: Result<ProbeParams, _> = serde_json::from_value(json!({"mlp_hidden": 8}));
        assert!(unknown.is_err());
        for (bad, param) in [
            (json!({"tiny": true}), "tiny"),
            (json!({"layers": []}), "layers"),
            (json!({"hidden": 0}), "hidden"),
            (json!({"max_len": 2}), "max_len"),
        ] {
            let p: ProbeParams = serde_json::from_value(bad).expect("parse");
            assert_eq!(
                ProbeStage::check(&p).map_err(|e| e.param),
                Err(param.into())
            );
        }
    }
}
