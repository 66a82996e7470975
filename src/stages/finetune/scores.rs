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

use super::setup::{build_model, Splits};
use super::{save_with_head, write_labels_and_history, FinetuneParams};
use crate::model::heads::HeadKind;
use crate::model::BertTokenizer;
use crate::stages::{StageCtx, StageError};
use crate::train::scores::{
    head_outputs, predict_scores, score_set, write_predictions, ScoreLoss, ScoreObjective,
    SetScores, THRESHOLD,
};
use crate::train::split_data::{read_scored_split, ScoredSet};
use crate::train::{fit, SequenceClassifier, SplitSource};

pub(super) fn run(ctx: &mut StageCtx, p: &FinetuneParams) -> Result<(), StageError> {
    let model_dir = ctx.inputs.path("model")?.to_path_buf();
    let SplitSource {
        dir: data_dir,
        labels_path,
        label_set,
    } = ctx.split_input(p.fold)?;
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
    let Splits { train, dev, test } = Splits::read(&data_dir, p, |name, cap| {
        read_scored_split(&data_dir, name, cap, &label_set, &tokenizer, p.max_len)
    })?;
    ctx.progress.println(format!(
        "{}: {} train, {} dev, {} test {}; head {}",
        ctx.name,
        train.units.len(),
        dev.as_ref().map_or(0, |d| d.units.len()),
        test.units.len(),
        if regression { "pairs" } else { "documents" },
        p.head
    ));

    let (device, train_dev) = ctx.devices()?;
    let outputs = head_outputs(p.head, label_set.labels.len());
    let (model, config, head_config) =
        build_model(p, &model_dir, &tokenizer, &train_dev, |encoder, config| {
            let head_config = p.head_config(config, outputs);
            let model = SequenceClassifier {
                encoder,
                head: head_config.init(&train_dev)?,
            };
            Ok((model, head_config))
        })?;
    let pad_id = tokenizer.pad_id();
    let cancel = ctx.cancel.clone();
    let env = ctx.fit_env(&train_dev);
    let predict = |model: &SequenceClassifier, set: &ScoredSet| {
        predict_scores(model, &set.units, pad_id, p.batch_size, &device, &cancel)
    };
    let loss = ScoreLoss::of(p.head)
        .ok_or_else(|| StageError::Failed(format!("`{}` is not a scoring head", p.head)))?;
    let objective = ScoreObjective::new(&train.units, pad_id, loss);
    let fitted = fit(model, &objective, &p.settings(), &env, |model, record| {
        let Some(dev) = dev.as_ref().filter(|_| p.scores_dev_after(record.epoch)) else {
            return Ok(());
        };
        let out = predict(&model.valid(), dev)?;
        match score_set(dev, &out, label_set.labels.len())? {
            // a constant prediction has no correlation: recorded as none
            SetScores::Similarity { pearson, .. } => record.dev_pearson = pearson,
            SetScores::Multilabel(s) => record.set_dev_prf(&s.micro),
        }
        Ok(())
    })?;

    let out_dir = &ctx.out_dir;
    let predicted = predict(&fitted.model.valid(), &test)?;
    write_predictions(
        &out_dir.join("predictions.jsonl"),
        &test,
        &predicted,
        &label_set.labels,
    )?;
    write_labels_and_history(ctx, &labels_path, &fitted.history)?;
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
