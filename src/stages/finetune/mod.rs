//! `finetune`: fine-tunes a BERT checkpoint with one of the papers' heads on a relation
//! classification split, and predicts its test set.
//!
//! Inputs: `data`, a `split` output (`train.jsonl`, `dev.jsonl`, `test.jsonl`, or
//! `fold-K/…` with param `fold: K`, and `labels.json`); `model`, a Hugging Face BERT
//! directory (`config.json`, weights, `tokenizer.json` or `vocab.txt`).
//!
//! Outputs: `predictions.jsonl` (test set, `{"id","gold","pred"}`), `labels.json`,
//! `history.json` (per epoch: loss, dev P/R/F1, time, throughput), `metrics.json` (last
//! dev scores and throughput), `attention.jsonl` for `sll_att*` heads (test α per token),
//! and `model/` when `save_model: true`. The model tested is the one after the last epoch.

use std::path::Path;

use burn::module::Module;
use serde::{Deserialize, Serialize};

mod scores;
mod sentence;
mod setup;
mod tagging;
mod word_pair;

use super::training_checks::{
    check_caps, check_dropout, check_layer_decay, check_optimizer_params, check_positive,
    check_tiny, OptimizerParams,
};
use super::training_defaults;
use super::{InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::data::schema::{Task, LABELS_FILE};
use crate::model::checkpoint::copy_tokenizer_files;
use crate::model::heads::{HeadConfig, HeadKind, PairFeatures, TransitionConstraints};
use crate::model::precision::{autocast, Precision};
use crate::model::{BertConfig, BertModel, BertTokenizer};
use crate::train::{Checkpoints, EpochRecord, Init, TrainError, TrainSettings};

/// Params of `finetune`; defaults are the papers' (su2020 III.D, su2022 "Experiment setup").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneParams {
    #[serde(default)]
    pub head: HeadKind,
    /// With `head: word_pair`: `emb` (`T_i ⊕ T_j`) or `emb_att` (with `a^{i,j} ⊕ a^{j,i}`).
    /// (Left out of the key at its default, like `bucketing`.)
    #[serde(default, skip_serializing_if = "is_default_features")]
    pub features: PairFeatures,
    /// With `head: word_pair`: train only the pair classifier on the frozen encoder.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub freeze_encoder: bool,
    #[serde(default = "training_defaults::lr")]
    pub lr: f64,
    #[serde(default = "training_defaults::batch_size")]
    pub batch_size: usize,
    /// Word pieces per instance, [CLS] and [SEP] included.
    #[serde(default = "training_defaults::max_len")]
    pub max_len: usize,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Fraction of the updates spent in linear warm-up.
    #[serde(default = "training_defaults::warmup")]
    pub warmup: f64,
    #[serde(default = "training_defaults::weight_decay")]
    pub weight_decay: f64,
    /// Dropout on the classifier input `h` (the encoder keeps its config's dropout).
    #[serde(default = "training_defaults::dropout")]
    pub dropout: f64,
    /// Max global gradient norm; 0 turns clipping off.
    #[serde(default = "training_defaults::grad_clip")]
    pub grad_clip: f64,
    #[serde(default = "training_defaults::seed")]
    pub seed: u64,
    /// Use `fold-K/` of the split.
    #[serde(default)]
    pub fold: Option<u32>,
    /// Hidden size of the LSTM heads (768 in su2022).
    #[serde(default = "training_defaults::lstm_hidden")]
    pub lstm_hidden: usize,
    /// Use at most this many training instances (a fixed, seed-independent subset).
    #[serde(default)]
    pub max_train: Option<usize>,
    /// Use at most this many dev and test instances each.
    #[serde(default)]
    pub max_eval: Option<usize>,
    #[serde(default)]
    pub init: Init,
    /// With `init: random`: the tiny smoke-test encoder, with the tokenizer's vocabulary.
    #[serde(default)]
    pub tiny: bool,
    /// Score the dev set after every epoch (else only after the last).
    #[serde(default = "training_defaults::yes")]
    pub eval_dev_each_epoch: bool,
    /// Write the fine-tuned model to `model/` (large).
    #[serde(default)]
    pub save_model: bool,
    /// Length-bucketed training batches, each padded to its own longest instance; `false`
    /// pads every batch to the longest training instance (`max_len` once any instance was
    /// truncated). Evaluation always sorts by length and restores the input order.
    /// (Left out of the key at its default, so results cached before this param existed
    /// stay valid: the default is the behaviour they were made with.)
    #[serde(
        default = "training_defaults::yes",
        skip_serializing_if = "training_defaults::is_yes"
    )]
    pub bucketing: bool,
    /// Entity tags (`@GENE$`, `@CHEMICAL$`, …): `split` into word pieces by the vocabulary,
    /// as in the papers, or `add`ed to it as one new token each (see [`crate::model::vocab`]).
    /// (Left out of the key at its default, like `bucketing`.)
    #[serde(default, skip_serializing_if = "EntityTokens::is_split")]
    pub entity_tokens: EntityTokens,
    /// With `entity_tokens: add`: the tags to add; empty adds every `@…$` tag found in the
    /// split's train, dev and test texts (in sorted order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entity_tags: Vec<String>,
    /// With `head: token_crf`: `bio` forbids the transitions IOB2 never makes (`O → I-X`,
    /// `B-Y → I-X`); `none` learns every transition. (Left out of the key at its default.)
    #[serde(default, skip_serializing_if = "TransitionConstraints::is_none")]
    pub crf_constraints: TransitionConstraints,
    /// Layer-wise learning-rate decay ξ in (0, 1]: encoder layer l of n learns at
    /// lr·ξ^(n−l), the embeddings at lr·ξ^n, the heads at lr (MTL-LS: 0.9). (Left out of
    /// the key at its default, 1: none.)
    #[serde(
        default = "training_defaults::layer_decay",
        skip_serializing_if = "training_defaults::is_no_layer_decay"
    )]
    pub layer_decay: f64,
    /// The first `head_warmup` updates train only the head, the encoder frozen (LP-FT:
    /// Kumar et al. 2022, "Fine-tuning can distort pretrained features"); as many as the
    /// run has: a linear probe of the frozen encoder. (Left out of the key at 0.)
    #[serde(default, skip_serializing_if = "crate::train::fit::is_zero")]
    pub head_warmup: usize,
    /// The type of the encoder's matrix products: `f32`, `bf16` or `f16` (mixed
    /// precision with f32 master weights, see [`crate::model::precision`]; f16 scales the
    /// loss). (Left out of the key at its default, f32.)
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// How entity tags reach the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityTokens {
    /// Word pieces of the vocabulary (`@`, `gene`, `$`), as the papers do.
    #[default]
    Split,
    /// One added token per tag, with a new row of W_word (N(0, σ²), BERT's initialisation).
    Add,
}

impl EntityTokens {
    /// `split` is the behaviour every earlier result was made with.
    fn is_split(&self) -> bool {
        *self == EntityTokens::Split
    }
}

fn is_default_features(f: &PairFeatures) -> bool {
    *f == PairFeatures::default()
}

fn default_epochs() -> usize {
    10
}

impl FinetuneParams {
    /// The sentence-level head these params describe (a classifier or a scoring head) on
    /// an encoder shaped by `config`, with `num_labels` outputs.
    fn head_config(&self, config: &BertConfig, num_labels: usize) -> HeadConfig {
        HeadConfig {
            lstm_hidden: self.lstm_hidden,
            dropout: self.dropout,
            ..HeadConfig::on_encoder(self.head, config, num_labels)
        }
    }

    /// Whether the dev set is scored after `epoch` (1-based): every epoch, or only the
    /// last with `eval_dev_each_epoch: false`.
    fn scores_dev_after(&self, epoch: usize) -> bool {
        crate::train::fit::scores_dev_after(self.eval_dev_each_epoch, epoch, self.epochs)
    }

    fn settings(&self) -> TrainSettings {
        TrainSettings {
            lr: self.lr,
            epochs: self.epochs,
            batch_size: self.batch_size,
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            seed: self.seed,
            bucketing: self.bucketing,
            layer_decay: self.layer_decay,
            grad_accum: 1,
            checkpoints: Checkpoints::EveryEpoch,
            record_updates: false,
            precision: self.precision,
            frozen_encoder_updates: self.head_warmup,
        }
    }
}

/// The `finetune` stage kind.
pub struct FinetuneStage;

impl Stage for FinetuneStage {
    const KIND: &'static str = "finetune";
    const VERSION: u32 = 1;
    const USES_BACKEND: bool = true;
    type Params = FinetuneParams;
    const INPUTS: InputContract = InputContract::Declared(&[
        InputSpec::one(
            "data",
            "a split of a relation corpus, NER for token heads, sentence pairs for \
             `regression`, multi-label documents for `multilabel`",
        ),
        InputSpec::one("model", "a BERT checkpoint directory"),
    ]);

    fn required_task(p: &FinetuneParams, input: &str) -> Option<Task> {
        // sentence heads classify an entity pair of a sentence; token heads tag words;
        // word_pair reads trees or relation instances
        (input == "data" && p.head != HeadKind::WordPair).then_some(p.head.task())
    }

    fn check(p: &FinetuneParams) -> Result<(), ParamError> {
        check_positive(&[
            ("batch_size", p.batch_size),
            ("epochs", p.epochs),
            ("lstm_hidden", p.lstm_hidden),
        ])?;
        check_optimizer_params(&OptimizerParams {
            lr: p.lr,
            max_len: p.max_len,
            min_max_len: 3,
            warmup: p.warmup,
            weight_decay: p.weight_decay,
            grad_clip: p.grad_clip,
        })?;
        check_dropout(p.dropout)?;
        check_layer_decay(p.layer_decay)?;
        check_tiny(p.tiny, p.init)?;
        if !p.entity_tags.is_empty() && p.entity_tokens != EntityTokens::Add {
            return Err(ParamError::new("entity_tags", "needs `entity_tokens: add`"));
        }
        if let Some(bad) = p
            .entity_tags
            .iter()
            .find(|t| t.is_empty() || t.chars().any(char::is_whitespace))
        {
            return Err(ParamError::new(
                "entity_tags",
                format!("`{bad}` is empty or contains whitespace"),
            ));
        }
        if (p.head.is_token() || p.head.is_scoring()) && p.entity_tokens != EntityTokens::Split {
            return Err(ParamError::new(
                "entity_tokens",
                format!("applies to relation heads, not `{}`", p.head),
            ));
        }
        if !p.crf_constraints.is_none() && p.head != HeadKind::TokenCrf {
            return Err(ParamError::new(
                "crf_constraints",
                format!("needs `head: token_crf`, not `{}`", p.head),
            ));
        }
        check_caps(p.max_train, p.max_eval)?;
        let word_pair = p.head == HeadKind::WordPair;
        if !word_pair && (p.freeze_encoder || !is_default_features(&p.features)) {
            return Err(ParamError::new(
                if p.freeze_encoder {
                    "freeze_encoder"
                } else {
                    "features"
                },
                format!("needs `head: word_pair`, not `{}`", p.head),
            ));
        }
        if word_pair && p.save_model {
            return Err(ParamError::new(
                "save_model",
                "not implemented for `head: word_pair`",
            ));
        }
        Ok(())
    }

    fn run(ctx: &mut StageCtx, p: &FinetuneParams) -> Result<(), StageError> {
        // training and every scoring pass of the stage in its precision
        autocast(p.precision, || run(ctx, p))
    }
}

impl From<TrainError> for StageError {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Interrupted => StageError::Interrupted,
            TrainError::Model(e) => StageError::Model(e),
            TrainError::Io { path, source } => StageError::Io { path, source },
            other => StageError::Failed(other.to_string()),
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct History<'a> {
    pub(super) epochs: &'a [EpochRecord],
}

fn run(ctx: &mut StageCtx, p: &FinetuneParams) -> Result<(), StageError> {
    if p.head.is_token() {
        return tagging::run(ctx, p);
    }
    if p.head == HeadKind::WordPair {
        return word_pair::run(ctx, p);
    }
    if p.head.is_scoring() {
        return scores::run(ctx, p);
    }
    sentence::run(ctx, p)
}

/// A fine-tuned model's folder, whatever its head: the encoder and tokenizer files as the
/// checkpoint it came `from` (or the `grown` tokenizer), `head.bpk` and `head.json`.
fn save_with_head<H: Module>(
    encoder: &BertModel,
    config: &BertConfig,
    head: H,
    description: &serde_json::Value,
    from: &Path,
    grown: Option<&BertTokenizer>,
    dir: &Path,
) -> Result<(), StageError> {
    encoder.save(config, dir)?;
    copy_tokenizer_files(from, dir)?;
    if let Some(tokenizer) = grown {
        tokenizer.save(dir)?;
    }
    let head_path = dir.join("head.bpk");
    head.save_file(&head_path)
        .map_err(|e| StageError::Failed(format!("{}: {e}", head_path.display())))?;
    let path = dir.join("head.json");
    let text = serde_json::to_string_pretty(description)
        .map_err(|e| StageError::Failed(format!("{}: {e}", path.display())))?;
    std::fs::write(&path, text).map_err(|e| StageError::io(&path, e))
}

/// `labels.json` (the split's, copied from `labels_path`) and `history.json` (one record an
/// epoch): what every head writes beside its predictions.
fn write_labels_and_history(
    ctx: &StageCtx,
    labels_path: &Path,
    history: &[EpochRecord],
) -> Result<(), StageError> {
    std::fs::copy(labels_path, ctx.out_dir.join(LABELS_FILE))
        .map_err(|e| StageError::io(labels_path, e))?;
    ctx.write_json("history.json", &History { epochs: history })
}

/// `metrics.json`: the last epoch's dev scores, training time and throughput, and how many
/// training units (instances or NER windows) and test units the run had.
fn write_metrics(
    ctx: &StageCtx,
    p: &FinetuneParams,
    history: &[EpochRecord],
    train_units: usize,
    test_units: usize,
) -> Result<(), StageError> {
    let last = history.last();
    let train_seconds: f64 = history.iter().map(|r| r.seconds).sum();
    ctx.write_json(
        "metrics.json",
        &serde_json::json!({
            "head": p.head.name(),
            "dev_p": last.and_then(|r| r.dev_p),
            "dev_r": last.and_then(|r| r.dev_r),
            "dev_f1": last.and_then(|r| r.dev_f1),
            "train_seconds": train_seconds,
            "train_seq_per_s": (train_units * history.len()) as f64 / train_seconds.max(1e-9),
            "train_instances": train_units,
            "test_instances": test_units,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::split_data::capped;
    use crate::train::SplitInstance;

    fn instance(id: &str) -> SplitInstance {
        SplitInstance {
            id: id.into(),
            text: String::new(),
            label: "x".into(),
        }
    }

    #[test]
    fn params_default_to_the_papers() {
        let p: FinetuneParams = serde_json::from_value(serde_json::json!({})).expect("defaults");
        assert_eq!(p.head, HeadKind::Cls);
        assert_eq!(
            (p.lr, p.batch_size, p.max_len, p.epochs),
            (2e-5, 32, 128, 10)
        );
        assert_eq!(p.lstm_hidden, 768);
        assert!(p.bucketing);
        assert!(FinetuneStage::check(&p).is_ok());
        let bad: Result<FinetuneParams, _> =
            serde_json::from_value(serde_json::json!({"head": "sll_gru"}));
        assert!(bad.is_err());
        let unknown: Result<FinetuneParams, _> =
            serde_json::from_value(serde_json::json!({"learning_rate": 1e-3}));
        assert!(unknown.is_err());
        let tiny_pretrained: FinetuneParams =
            serde_json::from_value(serde_json::json!({"tiny": true})).expect("parse");
        assert_eq!(
            FinetuneStage::check(&tiny_pretrained).map_err(|e| e.param),
            Err("tiny".to_string())
        );
    }

    #[test]
    fn entity_tokens_default_to_split_and_stay_out_of_the_key() {
        let p: FinetuneParams = serde_json::from_value(serde_json::json!({})).expect("defaults");
        assert_eq!(p.entity_tokens, EntityTokens::Split);
        let key = serde_json::to_value(&p).expect("serialize");
        assert!(key.get("entity_tokens").is_none() && key.get("entity_tags").is_none());
        let add: FinetuneParams = serde_json::from_value(serde_json::json!({
            "entity_tokens": "add", "entity_tags": ["@GENE$", "@CHEMICAL$"]
        }))
        .expect("parse");
        assert!(FinetuneStage::check(&add).is_ok());
        let key = serde_json::to_value(&add).expect("serialize");
        assert_eq!(key["entity_tokens"], "add");
        assert_eq!(key["entity_tags"][1], "@CHEMICAL$");
        let tags_without_add: FinetuneParams =
            serde_json::from_value(serde_json::json!({"entity_tags": ["@GENE$"]})).expect("parse");
        assert_eq!(
            FinetuneStage::check(&tags_without_add).map_err(|e| e.param),
            Err("entity_tags".to_string())
        );
    }

    #[test]
    fn caps_keep_a_fixed_subset_in_file_order() {
        let all: Vec<SplitInstance> = (0..50).map(|i| instance(&format!("i{i}"))).collect();
        let a: Vec<String> = capped(all.clone(), Some(10))
            .into_iter()
            .map(|x| x.id)
            .collect();
        let mut reversed = all.clone();
        reversed.reverse();
        let mut b: Vec<String> = capped(reversed, Some(10))
            .into_iter()
            .map(|x| x.id)
            .collect();
        assert_eq!(a.len(), 10);
        b.reverse();
        assert_eq!(a, b, "same ids whatever the file order");
        let positions: Vec<usize> = a
            .iter()
            .map(|id| all.iter().position(|x| &x.id == id).expect("kept id"))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(
            positions,
            (0..10).collect::<Vec<_>>(),
            "not simply the first 10"
        );
        assert_eq!(capped(all, None).len(), 50);
    }
}
