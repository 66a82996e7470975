//! `pretrain`: continued masked-language-model training of a BERT checkpoint on a
//! sub-domain corpus (su2022 "Sub-domain adaptation": 100K updates, max_len 128, lr 2e-5,
//! batch 192; subword masking for BioBERT, whole-word masking for PubMedBERT).
//!
//! Inputs: `model`, a Hugging Face BERT directory (its `cls.predictions.*` MLM head is
//! used when present); `corpus`, a `subdomain_corpus` output (`corpus.txt`, one document
//! per line) or such a file. Documents are cut into sequences of `max_len` pieces between
//! words; a fixed `held_out` fraction of documents (chosen by a hash of their text, so the
//! same for every seed) is kept for evaluation.
//!
//! Outputs: `model/` (`config.json`, `model.safetensors`, tokenizer files: loadable by
//! `finetune` and by `transformers`), `history.json` (MLM loss per update) and
//! `metrics.json` (held-out masked-token loss and accuracy before and after).
//!
//! With `nsp: true` the sequences are sentence pairs (`[CLS] A [SEP] B [SEP]`, B the next
//! sentences of the document half of the time, see [`crate::pretrain::pairs`]) and the
//! model also learns next-sentence prediction through the pooler (BERT's second
//! objective); `metrics.json` then adds the held-out NSP accuracy before and after. The
//! saved model is the encoder: the pooler and the NSP classifier are training aids here.

use std::path::PathBuf;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::training_checks::{check_optimizer_params, check_positive, check_tiny, OptimizerParams};
use super::{InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::model::checkpoint::copy_tokenizer_files;
use crate::model::precision::{autocast, Precision};
use crate::model::{BertConfig, BertModel, BertTokenizer, ModelError};
use crate::pretrain::masking::{MaskVocab, Masking};
use crate::pretrain::mlm_head::{MaskedLm, MlmHead};
use crate::pretrain::nsp_head::{NspHead, NspLoaded};
use crate::pretrain::pairs::{nsp_pairs, sentences, PairSettings, Sentence};
use crate::pretrain::training::{
    chunk, evaluate, train_mlm, HeldOutSettings, MlmEnv, MlmSettings, Sequence, StepRecord,
};
use crate::train::classifier::initialize_params;
use crate::train::rng::with_backend_seed;
use crate::train::Init;

/// Params of `pretrain`; defaults are su2022's sub-domain adaptation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainParams {
    /// Optimizer updates.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Sequences per forward pass.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Forward passes per update: the effective batch is `batch_size · grad_accum`.
    #[serde(default = "one")]
    pub grad_accum: usize,
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Fraction of the updates spent in linear warm-up.
    #[serde(default = "default_warmup")]
    pub warmup: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Max global gradient norm; 0 turns clipping off.
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
    #[serde(default)]
    pub masking: Masking,
    /// Next-sentence prediction beside the MLM (BERT's second objective, which su2022's
    /// sub-domain pre-training keeps): sequences become sentence pairs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nsp: bool,
    /// The first `head_warmup` of the `steps` updates train only the MLM and NSP heads, the
    /// encoder (embeddings included, so the tied decoder too) frozen. A checkpoint without
    /// an MLM head (a sentence-transformers model) otherwise starts from a random head whose
    /// gradients disturb the encoder it is meant to adapt. (Left out of the key at 0.)
    #[serde(default, skip_serializing_if = "crate::train::fit::is_zero")]
    pub head_warmup: usize,
    /// The type of the encoder's matrix products: `f32`, `bf16` or `f16` (mixed
    /// precision with f32 master weights, see [`crate::model::precision`]; f16 scales the
    /// loss). (Left out of the key at its default, f32.)
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    #[serde(default = "one_u64")]
    pub seed: u64,
    /// Fraction of documents held out to score the MLM before and after.
    #[serde(default = "default_held_out")]
    pub held_out: f64,
    /// Score at most this many held-out sequences.
    #[serde(default)]
    pub max_eval_sequences: Option<usize>,
    /// Updates between checkpoints.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    #[serde(default)]
    pub init: Init,
    /// With `init: random`: the tiny smoke-test encoder, with the tokenizer's vocabulary.
    #[serde(default)]
    pub tiny: bool,
}

fn default_steps() -> usize {
    100_000
}
fn default_batch_size() -> usize {
    32
}
fn one() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}
fn default_max_len() -> usize {
    128
}
fn default_lr() -> f64 {
    2e-5
}
fn default_warmup() -> f64 {
    0.01
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_grad_clip() -> f64 {
    1.0
}
fn default_held_out() -> f64 {
    0.05
}
fn default_checkpoint_every() -> usize {
    500
}

impl PretrainParams {
    fn settings(&self) -> MlmSettings {
        MlmSettings {
            steps: self.steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            lr: self.lr,
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            seed: self.seed,
            masking: self.masking,
            checkpoint_every: self.checkpoint_every,
            nsp: self.nsp,
            precision: self.precision,
            head_warmup: self.head_warmup,
        }
    }
}

/// The `pretrain` stage kind.
pub struct PretrainStage;

impl Stage for PretrainStage {
    const KIND: &'static str = "pretrain";
    const VERSION: u32 = 1;
    const USES_BACKEND: bool = true;
    type Params = PretrainParams;
    const INPUTS: InputContract = InputContract::Declared(&[
        InputSpec::one("model", "a BERT checkpoint directory"),
        InputSpec::one("corpus", "unlabeled text (`subdomain_corpus`)"),
    ]);

    fn check(p: &PretrainParams) -> Result<(), ParamError> {
        check_positive(&[
            ("steps", p.steps),
            ("batch_size", p.batch_size),
            ("grad_accum", p.grad_accum),
            ("checkpoint_every", p.checkpoint_every),
        ])?;
        // [CLS] + at least two pieces (one to mask) + [SEP]
        check_optimizer_params(&OptimizerParams {
            lr: p.lr,
            max_len: p.max_len,
            min_max_len: 4,
            warmup: p.warmup,
            weight_decay: p.weight_decay,
            grad_clip: p.grad_clip,
        })?;
        if !(p.held_out > 0.0 && p.held_out < 1.0) {
            return Err(ParamError::new(
                "held_out",
                format!("{} is outside (0, 1)", p.held_out),
            ));
        }
        check_tiny(p.tiny, p.init)?;
        if p.nsp && p.max_len < 5 {
            return Err(ParamError::new(
                "max_len",
                format!(
                    "{} leaves no room for a sentence pair ([CLS] A [SEP] B [SEP]); use at \
                     least 5 with `nsp`",
                    p.max_len
                ),
            ));
        }
        if p.head_warmup >= p.steps {
            return Err(ParamError::new(
                "head_warmup",
                format!(
                    "{} of {} steps: the encoder would never learn; use fewer than `steps`",
                    p.head_warmup, p.steps
                ),
            ));
        }
        if p.max_eval_sequences == Some(0) {
            return Err(ParamError::new("max_eval_sequences", "must be positive"));
        }
        Ok(())
    }

    fn run(ctx: &mut StageCtx, p: &PretrainParams) -> Result<(), StageError> {
        // training and every scoring pass of the stage in its precision
        autocast(p.precision, || run(ctx, p))
    }
}

/// Seed of the held-out sentence pairs (fixed, so every run is scored on the same pairs).
const HELD_OUT_PAIR_SEED: u64 = 0x5EED_0F4E_1D00_0078;

/// Whether a document is held out: the top `fraction` of documents by a hash of their text.
fn is_held_out(text: &str, fraction: f64) -> bool {
    let hash = blake3::hash(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first) as f64 / u64::MAX as f64) < fraction
}

#[derive(Debug, Serialize)]
struct History<'a> {
    steps: &'a [StepRecord],
}

fn run(ctx: &mut StageCtx, p: &PretrainParams) -> Result<(), StageError> {
    let model_dir = ctx.inputs.path("model")?.to_path_buf();
    let corpus_input = ctx.inputs.path("corpus")?.to_path_buf();
    let corpus_path: PathBuf = if corpus_input.is_dir() {
        corpus_input.join("corpus.txt")
    } else {
        corpus_input
    };
    let text = std::fs::read_to_string(&corpus_path).map_err(|e| StageError::Input {
        name: "corpus".into(),
        message: format!("{}: {e}", corpus_path.display()),
    })?;
    let tokenizer = BertTokenizer::from_dir(&model_dir)?;
    let (mut train, mut held_out) = (Vec::<Sequence>::new(), Vec::<Sequence>::new());
    let (mut train_sentences, mut held_sentences) = (Vec::new(), Vec::new());
    let (mut train_docs, mut held_docs) = (0usize, 0usize);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        ctx.check_cancelled()?;
        let held = is_held_out(line, p.held_out);
        if held {
            held_docs += 1;
        } else {
            train_docs += 1;
        }
        if p.nsp {
            let document = sentences(line)
                .into_iter()
                .map(|s| Ok(Sentence::from_encoding(&tokenizer.encode(s, usize::MAX)?)))
                .collect::<Result<Vec<_>, ModelError>>()?;
            if held {
                held_sentences.push(document);
            } else {
                train_sentences.push(document);
            }
        } else {
            let encoding = tokenizer.encode(line, usize::MAX)?;
            let pieces = chunk(&encoding, p.max_len, tokenizer.cls_id(), tokenizer.sep_id());
            if held {
                held_out.extend(pieces);
            } else {
                train.extend(pieces);
            }
        }
    }
    if p.nsp {
        let pairs = |documents: &[Vec<Sentence>], seed: u64| {
            nsp_pairs(
                documents,
                PairSettings {
                    max_len: p.max_len,
                    cls: tokenizer.cls_id(),
                    sep: tokenizer.sep_id(),
                    seed,
                },
            )
        };
        train = pairs(&train_sentences, p.seed);
        // held-out pairs are the same for every seed, as the held-out masks
        held_out = pairs(&held_sentences, HELD_OUT_PAIR_SEED);
    }
    if let Some(cap) = p.max_eval_sequences {
        held_out.truncate(cap);
    }
    if train.is_empty() || held_out.is_empty() {
        return Err(StageError::Input {
            name: "corpus".into(),
            message: format!(
                "{}: {train_docs} training and {held_docs} held-out documents; both must be \
                 non-empty (more text, or another `held_out`)",
                corpus_path.display()
            ),
        });
    }
    ctx.progress.println(format!(
        "{}: {} training {} ({train_docs} documents), {} held-out ({held_docs}); \
         effective batch {}",
        ctx.name,
        train.len(),
        if p.nsp { "sentence pairs" } else { "sequences" },
        held_out.len(),
        p.batch_size * p.grad_accum
    ));

    let (device, train_dev) = ctx.devices()?;
    let (model, config, head_loaded, nsp_loaded) = with_backend_seed(&train_dev, p.seed, || {
        let (encoder, config) = match (p.init, p.tiny) {
            (Init::Pretrained, _) => BertModel::load(&model_dir, &train_dev)?,
            (Init::Random, tiny) => {
                let config = if tiny {
                    BertConfig::tiny(tokenizer.vocab_size())
                } else {
                    BertConfig::from_file(&model_dir.join("config.json"))?
                };
                (BertModel::new(&config, &train_dev), config)
            }
        };
        let mut head = MlmHead::new(&config, &train_dev);
        let loaded = p.init == Init::Pretrained && head.load_pretrained(&model_dir)?;
        let mut nsp_loaded = None;
        let nsp = match p.nsp {
            true => {
                let mut nsp = NspHead::new(&config, &train_dev);
                if p.init == Init::Pretrained {
                    nsp_loaded = Some(nsp.load_pretrained(&model_dir)?);
                }
                Some(nsp)
            }
            false => None,
        };
        let model = MaskedLm { encoder, head, nsp };
        initialize_params(&model);
        Ok::<_, ModelError>((model, config, loaded, nsp_loaded))
    })?;
    if p.max_len > config.max_position_embeddings {
        return Err(ParamError::new(
            "max_len",
            format!(
                "{} exceeds the model's max_position_embeddings {}",
                p.max_len, config.max_position_embeddings
            ),
        )
        .into());
    }
    ctx.progress.println(format!(
        "{}: MLM head {}",
        ctx.name,
        if head_loaded {
            "from the checkpoint's cls.predictions"
        } else {
            "initialised (the checkpoint has none)"
        }
    ));
    if p.nsp {
        let from = |loaded: bool| {
            if loaded {
                "from the checkpoint"
            } else {
                "initialised"
            }
        };
        let loaded = nsp_loaded.unwrap_or(NspLoaded {
            pooler: false,
            classifier: false,
        });
        ctx.progress.println(format!(
            "{}: NSP pooler {}, NSP classifier {}",
            ctx.name,
            from(loaded.pooler),
            from(loaded.classifier)
        ));
    }
    let vocab = MaskVocab {
        mask_id: tokenizer.mask_id(),
        vocab_size: tokenizer.vocab_size().min(config.vocab_size),
    };
    let pad_id = tokenizer.pad_id();
    let cancel = ctx.cancel.clone();
    let score = |model: &MaskedLm| {
        evaluate(
            &model.valid(),
            &held_out,
            HeldOutSettings {
                masking: p.masking,
                batch_size: p.batch_size,
                vocab,
                pad_id,
            },
            &device,
            &cancel,
        )
    };
    let env = MlmEnv {
        device: &train_dev,
        checkpoint_dir: &ctx.checkpoint_dir,
        progress: &ctx.progress,
        cancel: &cancel,
        vocab,
        pad_id,
    };
    let start = std::time::Instant::now();
    let (model, state) = train_mlm(model, &train, &p.settings(), &env, score)?;
    let train_seconds = start.elapsed().as_secs_f64();
    let after = score(&model)?;
    let before = state
        .before
        .clone()
        .ok_or_else(|| StageError::Failed("training ended without a before score".into()))?;
    ctx.progress.println(format!(
        "{}: held-out masked-token accuracy {:.4} → {:.4}, loss {:.4} → {:.4}",
        ctx.name, before.accuracy, after.accuracy, before.loss, after.loss
    ));
    if let (Some(b), Some(a)) = (before.nsp_accuracy, after.nsp_accuracy) {
        ctx.progress.println(format!(
            "{}: held-out next-sentence accuracy {b:.4} → {a:.4}",
            ctx.name
        ));
    }

    let out_model = ctx.out_dir.join("model");
    model.encoder.valid().save(&config, &out_model)?;
    copy_tokenizer_files(&model_dir, &out_model)?;
    ctx.write_json(
        "history.json",
        &History {
            steps: &state.history,
        },
    )?;
    ctx.write_json(
        "metrics.json",
        &serde_json::json!({
            "held_out_accuracy_before": before.accuracy,
            "held_out_accuracy_after": after.accuracy,
            "held_out_loss_before": before.loss,
            "held_out_loss_after": after.loss,
            "held_out_predicted_tokens": after.predicted_tokens,
            "held_out_sequences": after.sequences,
            "held_out_documents": held_docs,
            "train_documents": train_docs,
            "train_sequences": train.len(),
            "steps": state.step,
            "effective_batch": p.batch_size * p.grad_accum,
            "masking": p.masking,
            "mlm_head_from_checkpoint": head_loaded,
            "nsp": p.nsp,
            "held_out_nsp_accuracy_before": before.nsp_accuracy,
            "held_out_nsp_accuracy_after": after.nsp_accuracy,
            "nsp_pooler_from_checkpoint": nsp_loaded.map(|l| l.pooler),
            "nsp_classifier_from_checkpoint": nsp_loaded.map(|l| l.classifier),
            "final_train_loss": state.history.last().map(|r| r.loss),
            "train_seconds": train_seconds,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_default_to_the_paper_and_are_checked() {
        let p: PretrainParams = serde_json::from_value(serde_json::json!({})).expect("defaults");
        assert_eq!((p.steps, p.max_len, p.lr), (100_000, 128, 2e-5));
        assert_eq!(p.masking, Masking::Subword);
        assert!(PretrainStage::check(&p).is_ok());
        let ww: PretrainParams =
            serde_json::from_value(serde_json::json!({"masking": "whole_word", "grad_accum": 6}))
                .expect("parse");
        assert_eq!(ww.masking, Masking::WholeWord);
        let bad = |v: serde_json::Value| {
            let p: PretrainParams = serde_json::from_value(v).expect("parse");
            PretrainStage::check(&p).map_err(|e| e.param)
        };
        assert_eq!(
            bad(serde_json::json!({"held_out": 0.0})),
            Err("held_out".into())
        );
        assert_eq!(
            bad(serde_json::json!({"grad_accum": 0})),
            Err("grad_accum".into())
        );
        assert_eq!(bad(serde_json::json!({"tiny": true})), Err("tiny".into()));
        assert_eq!(
            bad(serde_json::json!({"nsp": true, "max_len": 4})),
            Err("max_len".into())
        );
        assert!(bad(serde_json::json!({"nsp": true})).is_ok());
        assert_eq!(
            bad(serde_json::json!({"steps": 10, "head_warmup": 10})),
            Err("head_warmup".into())
        );
        assert!(bad(serde_json::json!({"steps": 10, "head_warmup": 9})).is_ok());
    }

    #[test]
    fn held_out_share_follows_the_fraction() {
        let held = (0..10_000)
            .filter(|i| is_held_out(&format!("document {i}"), 0.1))
            .count();
        assert!((800..1_200).contains(&held), "{held}");
    }
}
