//! `finetune` with a scoring head on [CLS]: `regression` on a sentence-pair similarity
//! split (BIOSSES), `multilabel` on a multi-label document split (HoC).
//!
//! - `regression`: each pair is encoded `[CLS] a [SEP] b [SEP]` (segment ids 0 then 1),
//!   `ŷ = w·h_CLS + b`, mean squared error; the dev score per epoch is Pearson's r
//!   (`dev_pearson`); `predictions.jsonl` holds `{"id", "gold", "pred"}` with the numbers.
//! - `multilabel`: each document is `[CLS] text [SEP]`, **cut to `max_len` word pieces**
//!   (the rest of a longer abstract is not read); a sigmoid per label, binary cross-entropy
//!   averaged over the labels; label k is predicted where σ(z_k) > 0.5. Dev micro P/R/F1 per
//!   epoch; `predictions.jsonl` holds `{"id", "gold": [labels], "pred": [labels], "p":
//!   [σ(z_k) per label]}`.

use burn::module::Module;
use serde::Serialize;

use super::{save_with_head, FinetuneParams, History};
use crate::data::jsonl;
use crate::data::schema::{Document, LabelSet, Pair, Task, LABELS_FILE};
use crate::metrics::{correlation, multilabel};
use crate::model::device::{train_device, DeviceSpec};
use crate::model::heads::{HeadConfig, HeadKind};
use crate::model::{BertTokenizer, ModelError};
use crate::stages::training_checks::check_max_len_fits;
use crate::stages::{StageCtx, StageError};
use crate::train::classifier::initialize_params;
use crate::train::rng::with_backend_seed;
use crate::train::scores::{
    encode_document, encode_pair, predict_scores, sigmoid, ScoreLoss, ScoreObjective, ScoredUnit,
};
use crate::train::split_data::capped;
use crate::train::{
    fit, load_encoder, split_source, FitEnv, SequenceClassifier, SplitSource, TrainError,
};

/// The probability above which a label is predicted.
pub const THRESHOLD: f32 = 0.5;

/// `predictions.jsonl` line of a pair.
#[derive(Debug, Serialize)]
struct ScoreLine<'a> {
    id: &'a str,
    gold: f64,
    pred: f64,
}

/// `predictions.jsonl` line of a document.
#[derive(Debug, Serialize)]
struct LabelSetLine<'a> {
    id: &'a str,
    gold: &'a [String],
    pred: Vec<&'a str>,
    /// σ(z_k) per label, in `labels.json` order.
    p: Vec<f32>,
}

/// A split file read and encoded: ids, and gold scores or gold label indices.
struct ScoredSet {
    ids: Vec<String>,
    units: Vec<ScoredUnit>,
    /// Pairs: the score per unit.
    gold_scores: Vec<f64>,
    /// Documents: the label names and indices per unit.
    gold_labels: Vec<Vec<String>>,
    gold_indices: Vec<Vec<usize>>,
}

fn read_set(
    dir: &std::path::Path,
    name: &str,
    cap: Option<usize>,
    labels: &LabelSet,
    tokenizer: &BertTokenizer,
    max_len: usize,
) -> Result<Option<ScoredSet>, StageError> {
    let path = dir.join(format!("{name}.jsonl"));
    if !path.is_file() {
        return Ok(None);
    }
    let mut set = ScoredSet {
        ids: Vec::new(),
        units: Vec::new(),
        gold_scores: Vec::new(),
        gold_labels: Vec::new(),
        gold_indices: Vec::new(),
    };
    match labels.task {
        Task::Similarity => {
            for x in capped(jsonl::read::<Pair>(&path)?, cap) {
                set.units.push(encode_pair(
                    tokenizer,
                    &x.text_a,
                    &x.text_b,
                    max_len,
                    x.score as f32,
                )?);
                set.gold_scores.push(x.score);
                set.ids.push(x.id);
            }
        }
        Task::Multilabel => {
            for x in capped(jsonl::read::<Document>(&path)?, cap) {
                let indices = x
                    .labels
                    .iter()
                    .map(|l| {
                        labels.labels.iter().position(|k| k == l).ok_or_else(|| {
                            StageError::Input {
                                name: "data".into(),
                                message: format!(
                                    "{}: document `{}` has label `{l}`, which labels.json does not declare",
                                    path.display(),
                                    x.id
                                ),
                            }
                        })
                    })
                    .collect::<Result<Vec<usize>, _>>()?;
                set.units.push(encode_document(
                    tokenizer,
                    &x.text,
                    max_len,
                    &indices,
                    labels.labels.len(),
                )?);
                set.gold_indices.push(indices);
                set.gold_labels.push(x.labels);
                set.ids.push(x.id);
            }
        }
        task => {
            return Err(StageError::Input {
                name: "data".into(),
                message: format!("a scoring head does not read a {task:?} split"),
            })
        }
    }
    Ok(Some(set))
}

/// Label indices whose σ(z) exceeds [`THRESHOLD`].
fn above_threshold(logits: &[f32]) -> Vec<usize> {
    (0..logits.len())
        .filter(|&k| sigmoid(logits[k]) > THRESHOLD)
        .collect()
}

pub(super) fn run(ctx: &mut StageCtx, p: &FinetuneParams) -> Result<(), StageError> {
    let data_root = ctx.inputs.path("data")?.to_path_buf();
    let model_dir = ctx.inputs.path("model")?.to_path_buf();
    let SplitSource {
        dir: data_dir,
        labels_path,
        label_set,
    } = split_source(&data_root, p.fold)?;
    if label_set.task != p.head.task() {
        return Err(StageError::Input {
            name: "data".into(),
            message: format!(
                "head `{}` needs a {:?} split, this one is {:?}",
                p.head,
                p.head.task(),
                label_set.task
            ),
        });
    }
    let regression = p.head == HeadKind::Regression;
    let tokenizer = BertTokenizer::from_dir(&model_dir)?;
    let read = |name: &str, cap| read_set(&data_dir, name, cap, &label_set, &tokenizer, p.max_len);
    let required = |name: &str, set: Option<ScoredSet>| {
        set.ok_or_else(|| StageError::Input {
            name: "data".into(),
            message: format!("no {name}.jsonl in {}", data_dir.display()),
        })
    };
    let train = required("train", read("train", p.max_train)?)?;
    let dev = read("dev", p.max_eval)?;
    let test = required("test", read("test", p.max_eval)?)?;
    ctx.progress.println(format!(
        "{}: {} train, {} dev, {} test {}; head {}",
        ctx.name,
        train.units.len(),
        dev.as_ref().map_or(0, |d| d.units.len()),
        test.units.len(),
        if regression { "pairs" } else { "documents" },
        p.head
    ));

    let device = DeviceSpec::parse(&ctx.device)?.device()?;
    let train_dev = train_device(&device);
    let outputs = if regression {
        1
    } else {
        label_set.labels.len()
    };
    let (model, config, head_config) = with_backend_seed(&train_dev, p.seed, || {
        let (encoder, config) = load_encoder(p.init, p.tiny, &model_dir, &tokenizer, &train_dev)?;
        let head_config = HeadConfig {
            kind: p.head,
            hidden_size: config.hidden_size,
            num_layers: config.num_hidden_layers,
            num_attention_heads: config.num_attention_heads,
            num_labels: outputs,
            lstm_hidden: p.lstm_hidden,
            dropout: p.dropout,
        };
        let model = SequenceClassifier {
            encoder,
            head: head_config.init(&train_dev)?,
        };
        initialize_params(&model);
        Ok::<_, ModelError>((model, config, head_config))
    })?;
    check_max_len_fits(p.max_len, config.max_position_embeddings)?;
    let pad_id = tokenizer.pad_id();
    let cancel = ctx.cancel.clone();
    let env = FitEnv {
        device: &train_dev,
        checkpoint_dir: &ctx.checkpoint_dir,
        progress: &ctx.progress,
        cancel: &cancel,
    };
    let predict = |model: &SequenceClassifier, set: &ScoredSet| {
        predict_scores(model, &set.units, pad_id, p.batch_size, &device, &cancel)
    };
    let loss = if regression {
        ScoreLoss::Mse
    } else {
        ScoreLoss::BinaryCrossEntropy
    };
    let objective = ScoreObjective::new(&train.units, pad_id, loss);
    let fitted = fit(model, &objective, &p.settings(), &env, |model, record| {
        let last = record.epoch == p.epochs;
        let Some(dev) = dev.as_ref().filter(|_| p.eval_dev_each_epoch || last) else {
            return Ok(());
        };
        let out = predict(&model.valid(), dev)?;
        if regression {
            let pred: Vec<f64> = out.iter().map(|o| f64::from(o[0])).collect();
            // a constant prediction has no correlation: recorded as none
            record.dev_pearson = correlation::pearson(&pred, &dev.gold_scores).ok();
        } else {
            let pred: Vec<Vec<usize>> = out.iter().map(|o| above_threshold(o)).collect();
            let s = multilabel::score(label_set.labels.len(), &dev.gold_indices, &pred)
                .map_err(TrainError::from)?;
            record.dev_p = Some(s.micro.precision);
            record.dev_r = Some(s.micro.recall);
            record.dev_f1 = Some(s.micro.f1);
        }
        Ok(())
    })?;

    let out_dir = &ctx.out_dir;
    let predicted = predict(&fitted.model.valid(), &test)?;
    let path = out_dir.join("predictions.jsonl");
    if regression {
        let lines: Vec<ScoreLine> = test
            .ids
            .iter()
            .zip(&test.gold_scores)
            .zip(&predicted)
            .map(|((id, &gold), pred)| ScoreLine {
                id,
                gold,
                pred: f64::from(pred[0]),
            })
            .collect();
        jsonl::write(&path, &lines)?;
    } else {
        let lines: Vec<LabelSetLine> = test
            .ids
            .iter()
            .zip(&test.gold_labels)
            .zip(&predicted)
            .map(|((id, gold), logits)| LabelSetLine {
                id,
                gold,
                pred: above_threshold(logits)
                    .into_iter()
                    .map(|k| label_set.labels[k].as_str())
                    .collect(),
                p: logits.iter().map(|&z| sigmoid(z)).collect(),
            })
            .collect();
        jsonl::write(&path, &lines)?;
    }
    std::fs::copy(&labels_path, out_dir.join(LABELS_FILE))
        .map_err(|e| StageError::io(&labels_path, e))?;
    ctx.write_json(
        "history.json",
        &History {
            epochs: &fitted.history,
        },
    )?;
    let last = fitted.history.last();
    let train_seconds: f64 = fitted.history.iter().map(|r| r.seconds).sum();
    ctx.write_json(
        "metrics.json",
        &serde_json::json!({
            "head": p.head.name(),
            "dev_pearson": last.and_then(|r| r.dev_pearson),
            "dev_p": last.and_then(|r| r.dev_p),
            "dev_r": last.and_then(|r| r.dev_r),
            "dev_f1": last.and_then(|r| r.dev_f1),
            "train_seconds": train_seconds,
            "train_seq_per_s": (train.units.len() * fitted.history.len()) as f64
                / train_seconds.max(1e-9),
            "train_instances": train.units.len(),
            "test_instances": test.units.len(),
        }),
    )?;
    if p.save_model {
        let description = serde_json::json!({
            "head": head_config.kind.name(),
            "hidden_size": head_config.hidden_size,
            "num_labels": head_config.num_labels,
            "labels": label_set.labels,
            "threshold": (!regression).then_some(THRESHOLD),
        });
        save_with_head(
            &fitted.model.encoder,
            &config,
            fitted.model.head.clone(),
            &description,
            &model_dir,
            None,
            &out_dir.join("model"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_strictly_above_one_half() {
        // σ(0) = 0.5 is not above the threshold; σ(0.01) is
        assert_eq!(above_threshold(&[0.0, 0.01, -3.0, 4.0]), [1, 3]);
    }
}
