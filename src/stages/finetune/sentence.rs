//! `finetune` with a sentence head (`cls`, `sll_*`, `inter_cls_*`, …): relation
//! classification of an entity pair in a sentence (su2020, su2022).
//!
//! Outputs: `predictions.jsonl` (`{"id","gold","pred"}` per test instance), `labels.json`,
//! `history.json`, `metrics.json`, `attention.jsonl` for the heads with a token α, and
//! `model/` with `save_model: true`.

use std::path::Path;

use burn::module::Module;
use serde::Serialize;

use super::setup::{build_model, Splits};
use super::{
    save_with_head, write_labels_and_history, write_metrics, EntityTokens, FinetuneParams,
};
use crate::data::jsonl;
use crate::data::schema::LabelSet;
use crate::model::heads::HeadConfig;
use crate::model::vocab::grow_word_embeddings;
use crate::model::{BertConfig, BertTokenizer};
use crate::stages::{StageCtx, StageError};
use crate::train::classifier::entity_tags;
use crate::train::{
    fit, micro_prf, predict, read_split, ClassificationObjective, SequenceClassifier,
    SplitInstance, SplitSource,
};

pub(super) fn run(ctx: &mut StageCtx, p: &FinetuneParams) -> Result<(), StageError> {
    let model_dir = ctx.inputs.path("model")?.to_path_buf();
    let SplitSource {
        dir: data_dir,
        labels_path,
        label_set,
    } = ctx.split_input(p.fold)?;

    let mut tokenizer = BertTokenizer::from_dir(&model_dir)?;
    if p.entity_tokens == EntityTokens::Add {
        let tags = match p.entity_tags.as_slice() {
            [] => split_entity_tags(&data_dir)?,
            declared => declared.to_vec(),
        };
        tokenizer.add_tokens(&tags)?;
        ctx.progress.println(format!(
            "{}: entity tags added as tokens: {}",
            ctx.name,
            tags.join(" ")
        ));
    }
    let tokenizer = tokenizer;
    let Splits { train, dev, test } = Splits::read(&data_dir, p, |name, cap| {
        read_split(
            &data_dir,
            name,
            cap,
            &label_set.labels,
            &tokenizer,
            p.max_len,
        )
    })?;
    ctx.progress.println(format!(
        "{}: {} train, {} dev, {} test instances; head {}",
        ctx.name,
        train.encoded.len(),
        dev.as_ref().map_or(0, |d| d.encoded.len()),
        test.encoded.len(),
        p.head
    ));

    let (device, train_dev) = ctx.devices()?;
    let (model, config, head_config) =
        build_model(p, &model_dir, &tokenizer, &train_dev, |encoder, config| {
            let encoder = match p.entity_tokens {
                EntityTokens::Split => encoder,
                EntityTokens::Add => {
                    let (grown, grown_config) =
                        grow_word_embeddings(encoder, config, tokenizer.id_bound());
                    *config = grown_config;
                    grown
                }
            };
            let head_config = p.head_config(config, label_set.labels.len());
            let model = SequenceClassifier {
                encoder,
                head: head_config.init(&train_dev)?,
            };
            Ok((model, head_config))
        })?;
    let pad_id = tokenizer.pad_id();
    let negative = label_set.negative.as_deref();
    let cancel = ctx.cancel.clone();
    let env = ctx.fit_env(&train_dev);
    let objective = ClassificationObjective::new(&train.encoded, pad_id);
    let fitted = fit(model, &objective, &p.settings(), &env, |model, record| {
        let Some(dev) = dev.as_ref().filter(|_| p.scores_dev_after(record.epoch)) else {
            return Ok(());
        };
        let valid = model.valid();
        let pred = predict(
            &valid,
            &dev.encoded,
            pad_id,
            p.batch_size,
            &device,
            false,
            &cancel,
        )?;
        let pred: Vec<usize> = pred.iter().map(|x| x.label).collect();
        let prf = micro_prf(&label_set.labels, negative, &dev.gold(), &pred)?;
        record.set_dev_prf(&prf);
        Ok(())
    })?;

    let valid = fitted.model.valid();
    let with_alpha = p.head.has_token_alpha();
    let predictions = predict(
        &valid,
        &test.encoded,
        pad_id,
        p.batch_size,
        &device,
        with_alpha,
        &cancel,
    )?;

    let out = &ctx.out_dir;
    let name_of = |i: usize| label_set.labels[i].as_str();
    let lines: Vec<PredictionLine> = test
        .instances
        .iter()
        .zip(&test.encoded)
        .zip(&predictions)
        .map(|((instance, encoded), pred)| PredictionLine {
            id: &instance.id,
            gold: name_of(encoded.label),
            pred: name_of(pred.label),
        })
        .collect();
    jsonl::write(&out.join("predictions.jsonl"), &lines)?;
    if with_alpha {
        let attention: Vec<AttentionLine> = lines
            .iter()
            .zip(&test.encodings)
            .zip(&predictions)
            .map(|((line, encoding), pred)| AttentionLine {
                id: line.id,
                gold: line.gold,
                pred: line.pred,
                tokens: &encoding.tokens,
                alpha: pred.alpha.as_deref().unwrap_or(&[]),
            })
            .collect();
        jsonl::write(&out.join("attention.jsonl"), &attention)?;
    }
    write_labels_and_history(ctx, &labels_path, &fitted.history)?;
    write_metrics(
        ctx,
        p,
        &fitted.history,
        train.encoded.len(),
        test.encoded.len(),
    )?;
    if p.save_model {
        save_model(
            &fitted.model,
            &config,
            &head_config,
            &label_set,
            &model_dir,
            (p.entity_tokens == EntityTokens::Add).then_some(&tokenizer),
            &out.join("model"),
        )?;
    }
    Ok(())
}

/// The distinct entity tags (`@…$`) in the texts of `dir`'s train, dev and test files,
/// sorted (so the added ids do not depend on file order).
fn split_entity_tags(dir: &Path) -> Result<Vec<String>, StageError> {
    let mut tags = std::collections::BTreeSet::new();
    for name in ["train", "dev", "test"] {
        let path = dir.join(format!("{name}.jsonl"));
        if !path.is_file() {
            continue;
        }
        for x in jsonl::read::<SplitInstance>(&path)? {
            tags.extend(
                entity_tags(&x.text)
                    .into_iter()
                    .map(|(s, e)| x.text[s..e].to_string()),
            );
        }
    }
    if tags.is_empty() {
        return Err(StageError::Input {
            name: "data".into(),
            message: format!(
                "{}: `entity_tokens: add` found no `@…$` entity tag in the texts",
                dir.display()
            ),
        });
    }
    Ok(tags.into_iter().collect())
}

/// `model/`: the encoder in Hugging Face's layout with the tokenizer, and the head
/// (`head.bpk`, described by `head.json`). A `grown` tokenizer (added entity tokens) is
/// written as `tokenizer.json` over the checkpoint's, so it matches the grown W_word.
fn save_model(
    model: &SequenceClassifier,
    config: &BertConfig,
    head: &HeadConfig,
    labels: &LabelSet,
    from: &Path,
    grown: Option<&BertTokenizer>,
    dir: &Path,
) -> Result<(), StageError> {
    let description = serde_json::json!({
        "head": head.kind.name(),
        "hidden_size": head.hidden_size,
        "num_layers": head.num_layers,
        "num_attention_heads": head.num_attention_heads,
        "num_labels": head.num_labels,
        "lstm_hidden": head.lstm_hidden,
        "labels": labels.labels,
        "negative": labels.negative,
    });
    save_with_head(
        &model.encoder,
        config,
        model.head.clone(),
        &description,
        from,
        grown,
        dir,
    )
}

/// `predictions.jsonl` line.
#[derive(Debug, Serialize)]
struct PredictionLine<'a> {
    id: &'a str,
    gold: &'a str,
    pred: &'a str,
}

/// `attention.jsonl` line: the head's α over the instance's word pieces.
#[derive(Debug, Serialize)]
struct AttentionLine<'a> {
    id: &'a str,
    gold: &'a str,
    pred: &'a str,
    tokens: &'a [String],
    alpha: &'a [f32],
}
