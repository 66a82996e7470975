//! `finetune` with a token head (`token`, `token_crf`): NER on a split of an IOB2 corpus.
//!
//! Outputs as for the sentence heads, with tag lists: `predictions.jsonl` holds
//! `{"id","gold":[tags],"pred":[tags]}` per test sentence (what `evaluate` scores
//! entity-level), `history.json` the dev entity-level P/R/F1 per epoch.

use std::path::Path;

use burn::module::Module;
use serde::Serialize;

use super::setup::{build_model, Splits};
use super::{save_with_head, write_labels_and_history, write_metrics, FinetuneParams};
use crate::data::jsonl;
use crate::data::schema::LabelSet;
use crate::model::heads::TokenHeadConfig;
use crate::model::{BertConfig, BertTokenizer};
use crate::stages::{StageCtx, StageError};
use crate::train::tagging::{entity_prf, join_windows};
use crate::train::{
    fit, predict_tags, read_tagged_split, SplitSource, TaggedSet, TaggingObjective, TokenTagger,
    TrainError,
};

/// `predictions.jsonl` line of a tagged sentence.
#[derive(Debug, Serialize)]
struct TaggedLine<'a> {
    id: &'a str,
    gold: Vec<&'a str>,
    pred: Vec<&'a str>,
}

pub(super) fn run(ctx: &mut StageCtx, p: &FinetuneParams) -> Result<(), StageError> {
    let model_dir = ctx.inputs.path("model")?.to_path_buf();
    let SplitSource {
        dir: data_dir,
        labels_path,
        label_set,
    } = ctx.split_input(p.fold)?;
    let tags = &label_set.labels;
    let tokenizer = BertTokenizer::from_dir(&model_dir)?;
    let Splits { train, dev, test } = Splits::read(&data_dir, p, |name, cap| {
        read_tagged_split(&data_dir, name, cap, tags, &tokenizer, p.max_len)
    })?;
    ctx.progress.println(format!(
        "{}: {} train, {} dev, {} test sentences ({} train windows); head {}",
        ctx.name,
        train.sentences.len(),
        dev.as_ref().map_or(0, |d| d.sentences.len()),
        test.sentences.len(),
        train.windows.len(),
        p.head
    ));

    let (device, train_dev) = ctx.devices()?;
    let (model, config, head_config) =
        build_model(p, &model_dir, &tokenizer, &train_dev, |encoder, config| {
            let head_config = TokenHeadConfig {
                kind: p.head,
                hidden_size: config.hidden_size,
                tags: tags.clone(),
                dropout: p.dropout,
                constraints: p.crf_constraints,
            };
            let model = TokenTagger {
                encoder,
                head: head_config.init(&train_dev)?,
            };
            Ok((model, head_config))
        })?;
    let pad_id = tokenizer.pad_id();
    let cancel = ctx.cancel.clone();
    let env = ctx.fit_env(&train_dev);
    let predict = |model: &TokenTagger, set: &TaggedSet| {
        let per_window = predict_tags(model, &set.windows, pad_id, p.batch_size, &device, &cancel)?;
        Ok::<_, TrainError>(join_windows(&set.windows, per_window, set.sentences.len()))
    };
    let objective = TaggingObjective::new(&train.windows, pad_id);
    let fitted = fit(model, &objective, &p.settings(), &env, |model, record| {
        let Some(dev) = dev.as_ref().filter(|_| p.scores_dev_after(record.epoch)) else {
            return Ok(());
        };
        let pred = predict(&model.valid(), dev)?;
        let prf = entity_prf(tags, &dev.gold, &pred)?;
        record.set_dev_prf(&prf);
        Ok(())
    })?;

    let predicted = predict(&fitted.model.valid(), &test)?;
    let names = |y: &[usize]| y.iter().map(|&t| tags[t].as_str()).collect::<Vec<_>>();
    let lines: Vec<TaggedLine> = test
        .sentences
        .iter()
        .zip(&test.gold)
        .zip(&predicted)
        .map(|((sentence, gold), pred)| TaggedLine {
            id: &sentence.id,
            gold: names(gold),
            pred: names(pred),
        })
        .collect();
    let out = &ctx.out_dir;
    jsonl::write(&out.join("predictions.jsonl"), &lines)?;
    write_labels_and_history(ctx, &labels_path, &fitted.history)?;
    write_metrics(
        ctx,
        p,
        &fitted.history,
        train.windows.len(),
        test.sentences.len(),
    )?;
    if p.save_model {
        save_tagger(
            &fitted.model,
            &head_config,
            &label_set,
            &config,
            &model_dir,
            &out.join("model"),
        )?;
    }
    Ok(())
}

/// `model/`: the encoder in Hugging Face's layout with the tokenizer, and the token head
/// (`head.bpk`, described by `head.json`).
fn save_tagger(
    model: &TokenTagger,
    head: &TokenHeadConfig,
    labels: &LabelSet,
    config: &BertConfig,
    from: &Path,
    dir: &Path,
) -> Result<(), StageError> {
    let description = serde_json::json!({
        "head": head.kind.name(),
        "hidden_size": head.hidden_size,
        "labels": labels.labels,
        "crf_constraints": head.constraints,
    });
    save_with_head(
        &model.encoder,
        config,
        model.head.clone(),
        &description,
        from,
        None,
        dir,
    )
}
