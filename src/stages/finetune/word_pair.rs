//! `finetune` with `head: word_pair` (Meng et al. 2019): every ordered word pair of a
//! sentence classified as NONE or a relation — dependency parsing on a split of a `conllu`
//! corpus — or the one entity pair of a relation instance (SemEval-2010 Task 8).
//!
//! Params read here: `features` (`emb`: `T_i ⊕ T_j`; `emb_att`: with `a^{i,j} ⊕ a^{j,i}`)
//! and `freeze_encoder` (train only the pair classifier on the frozen encoder's features,
//! computed once per sentence: the paper's "fea:" rows).
//!
//! Outputs: `predictions.jsonl` — trees: `{"id", "gold": [arcs], "pred": [arcs],
//! "pred_mst": [arcs]}` with arcs `HEAD:DEPREL` per word (`pred` each word's best head,
//! `pred_mst` the maximum spanning tree with one root; `_` for a word past `max_len`);
//! relations: `{"id", "gold", "pred"}` — and `labels.json`, `history.json` (dev UAS/LAS or
//! micro P/R/F1 per epoch), `metrics.json`.

use std::path::Path;

use burn::module::Module;
use burn::prelude::Device;
use serde::Serialize;

use super::setup::{build_model, Splits};
use super::{write_labels_and_history, write_metrics, FinetuneParams};
use crate::analysis::ArcHeatmap;
use crate::data::formats::conllu::{arc_tag, parse_arc_tag};
use crate::data::jsonl;
use crate::data::schema::Task;
use crate::metrics::attachment::AttachmentCounts;
use crate::model::heads::{PairFeatures, WordPairHeadConfig};
use crate::model::BertModel;
use crate::model::BertTokenizer;
use crate::stages::{StageCtx, StageError};
use crate::train::split_data::read_capped;
use crate::train::word_pair::{
    frozen_features, predict_pairs, relation_unit, tree_unit, FrozenPairObjective, PairPrediction,
    PairTarget, PairUnit, Scorer, WordPairModel, WordPairObjective,
};
use crate::train::{
    fit, micro_prf, EpochRecord, SplitInstance, SplitSentence, SplitSource, TrainError,
};

/// The heat map of one parsed test sentence, beside the predictions.
pub const ARCS_HEATMAP_FILE: &str = "arcs_heatmap.svg";

/// The label of a pair that is no arc (index 0 of a tree's pair labels).
const NONE: &str = "NONE";

/// A split file read as pair units: the ids, the gold values as written, and the units.
#[derive(Default)]
struct PairSet {
    ids: Vec<String>,
    /// Trees: each word's `HEAD:DEPREL`; relations: the label (one entry).
    gold: Vec<Vec<String>>,
    units: Vec<PairUnit>,
    /// Trees: each sentence's words (for the heat map); relations: empty.
    words: Vec<Vec<String>>,
}

/// `predictions.jsonl` line of a tree.
#[derive(Debug, Serialize)]
struct TreeLine<'a> {
    id: &'a str,
    gold: &'a [String],
    pred: Vec<String>,
    pred_mst: Vec<String>,
}

/// `predictions.jsonl` line of a relation instance.
#[derive(Debug, Serialize)]
struct PairLine<'a> {
    id: &'a str,
    gold: &'a str,
    pred: &'a str,
}

fn read_trees(
    dir: &Path,
    name: &str,
    cap: Option<usize>,
    relations: &[String],
    tokenizer: &BertTokenizer,
    max_len: usize,
) -> Result<Option<PairSet>, StageError> {
    let Some((path, sentences)) = read_capped::<SplitSentence>(dir, name, cap)? else {
        return Ok(None);
    };
    let mut set = PairSet::default();
    for s in sentences {
        let bad = |m: String| StageError::Input {
            name: "data".into(),
            message: format!("{}: sentence `{}`: {m}", path.display(), s.id),
        };
        if s.tokens.len() != s.tags.len() || s.tokens.is_empty() {
            return Err(bad(format!(
                "{} words but {} arcs",
                s.tokens.len(),
                s.tags.len()
            )));
        }
        let mut heads = Vec::with_capacity(s.tags.len());
        let mut labels = Vec::with_capacity(s.tags.len());
        for tag in &s.tags {
            let (h, rel) = parse_arc_tag(tag)
                .ok_or_else(|| bad(format!("`{tag}` is not an arc `HEAD:DEPREL`")))?;
            let r = relations
                .iter()
                .position(|x| x == rel)
                .ok_or_else(|| bad(format!("relation `{rel}` is not in labels.json")))?;
            heads.push(h);
            labels.push(r + 1);
        }
        let pieces = tokenizer.encode_words(&s.tokens)?;
        set.units.push(tree_unit(
            &pieces,
            &heads,
            &labels,
            [tokenizer.cls_id(), tokenizer.sep_id()],
            max_len,
        ));
        set.ids.push(s.id);
        set.gold.push(s.tags);
        set.words.push(s.tokens);
    }
    Ok(Some(set))
}

fn read_pairs(
    dir: &Path,
    name: &str,
    cap: Option<usize>,
    labels: &[String],
    tokenizer: &BertTokenizer,
    max_len: usize,
) -> Result<Option<PairSet>, StageError> {
    let Some((path, instances)) = read_capped::<SplitInstance>(dir, name, cap)? else {
        return Ok(None);
    };
    let mut set = PairSet::default();
    for x in instances {
        let bad = |m: String| StageError::Input {
            name: "data".into(),
            message: format!("{}: instance `{}`: {m}", path.display(), x.id),
        };
        let y = labels
            .iter()
            .position(|l| *l == x.label)
            .ok_or_else(|| bad(format!("label `{}` is not in labels.json", x.label)))?;
        let unit = relation_unit(&x.text, y, tokenizer, max_len)?.ok_or_else(|| {
            bad(format!(
                "no two `@…$` entity tags followed by a word within max_len {max_len}"
            ))
        })?;
        set.units.push(unit);
        set.ids.push(x.id);
        set.gold.push(vec![x.label]);
    }
    Ok(Some(set))
}

/// Sentences of this many words make a readable heat map.
const HEATMAP_WORDS: std::ops::RangeInclusive<usize> = 5..=15;

/// The attention matrix of the first test sentence of [`HEATMAP_WORDS`] words whose
/// every word fits `max_len`, with its gold and predicted heads (see [`ArcHeatmap`]);
/// `None` when no sentence qualifies.
fn arc_heatmap(
    encoder: &BertModel,
    set: &PairSet,
    predicted: &[PairPrediction],
    pad_id: u32,
    device: &Device,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Option<ArcHeatmap>, TrainError> {
    let chosen = set
        .units
        .iter()
        .position(|u| HEATMAP_WORDS.contains(&u.words) && u.nodes.len() == u.words + 1);
    let Some(i) = chosen else {
        return Ok(None);
    };
    let unit = &set.units[i];
    let features = frozen_features(
        encoder,
        true,
        std::slice::from_ref(unit),
        pad_id,
        1,
        device,
        cancel,
    )?;
    let Some(f) = features.first() else {
        return Ok(None);
    };
    let m = f.n;
    // every layer's and head's a^{i,j} of node pair (i, j), layer-major
    let la = f.g.len() / (m * m).max(1);
    let weights = (1..m)
        .map(|d| {
            (0..m)
                .map(|h| {
                    let at = (d * m + h) * la;
                    let a = &f.g[at..at + la];
                    a.iter().map(|&x| f64::from(x)).sum::<f64>() / la.max(1) as f64
                })
                .collect()
        })
        .collect();
    let gold = match &unit.target {
        PairTarget::Arcs { heads, .. } => heads.clone(),
        PairTarget::Pair(_) => return Ok(None),
    };
    let predicted = match predicted.get(i) {
        Some(PairPrediction::Arcs { best, .. }) => best.iter().map(|a| a.map(|(h, _)| h)).collect(),
        _ => vec![None; gold.len()],
    };
    Ok(Some(ArcHeatmap {
        caption: format!(
            "test sentence {} (attention: mean over every layer and head)",
            set.ids[i]
        ),
        words: set.words.get(i).cloned().unwrap_or_default(),
        weights,
        gold,
        predicted,
    }))
}

/// An arc as written in the predictions (`_` for a word without a prediction).
fn arc_names(arcs: &[Option<(usize, usize)>], pair_labels: &[String]) -> Vec<String> {
    arcs.iter()
        .map(|a| match a {
            Some((h, r)) => arc_tag(*h, &pair_labels[*r]),
            None => "_".to_string(),
        })
        .collect()
}

/// UAS and LAS of `pred` (best heads or MST) against the gold arcs.
fn attachment(gold: &[Vec<String>], pred: &[Vec<String>]) -> AttachmentCounts {
    let mut counts = AttachmentCounts::default();
    for (g, p) in gold.iter().zip(pred) {
        let g: Vec<(usize, &str)> = g.iter().filter_map(|t| parse_arc_tag(t)).collect();
        let p: Vec<(usize, &str)> = p
            .iter()
            .map(|t| parse_arc_tag(t).unwrap_or((usize::MAX, "_")))
            .collect();
        counts.add(&g, &p);
    }
    counts
}

pub(super) fn run(ctx: &mut StageCtx, p: &FinetuneParams) -> Result<(), StageError> {
    let model_dir = ctx.inputs.path("model")?.to_path_buf();
    let SplitSource {
        dir: data_dir,
        labels_path,
        label_set,
    } = ctx.split_input(p.fold)?;
    let trees = label_set.task == Task::Ner;
    // pair labels: NONE and the relations (trees), or the relation labels
    let pair_labels: Vec<String> = if trees {
        std::iter::once(NONE.to_string())
            .chain(label_set.labels.iter().cloned())
            .collect()
    } else {
        label_set.labels.clone()
    };
    let tokenizer = BertTokenizer::from_dir(&model_dir)?;
    let Splits { train, dev, test } = Splits::read(&data_dir, p, |name, cap| {
        let read = if trees { read_trees } else { read_pairs };
        read(
            &data_dir,
            name,
            cap,
            &label_set.labels,
            &tokenizer,
            p.max_len,
        )
    })?;
    ctx.progress.println(format!(
        "{}: {} train, {} dev, {} test {}; head word_pair ({}{})",
        ctx.name,
        train.units.len(),
        dev.as_ref().map_or(0, |d| d.units.len()),
        test.units.len(),
        if trees { "sentences" } else { "instances" },
        p.features.name(),
        if p.freeze_encoder {
            ", frozen encoder"
        } else {
            ""
        },
    ));

    let (device, train_dev) = ctx.devices()?;
    let (model, _config, head_config) =
        build_model(p, &model_dir, &tokenizer, &train_dev, |encoder, config| {
            let head_config = WordPairHeadConfig {
                features: p.features,
                hidden_size: config.hidden_size,
                num_layers: config.num_hidden_layers,
                num_attention_heads: config.num_attention_heads,
                num_labels: pair_labels.len(),
                dropout: p.dropout,
            };
            let model = WordPairModel {
                encoder,
                head: head_config.init(&train_dev)?,
            };
            Ok((model, head_config))
        })?;
    let pad_id = tokenizer.pad_id();
    let cancel = ctx.cancel.clone();
    let env = ctx.fit_env(&train_dev);
    let hidden = head_config.hidden_size;
    let attention = head_config.attention_size();
    let with_attention = p.features == PairFeatures::EmbAtt;

    // dev scores of an epoch: UAS/LAS (best heads) for trees, micro P/R/F1 for relations
    let score_dev = |set: &PairSet,
                     predicted: &[PairPrediction],
                     record: &mut EpochRecord|
     -> Result<(), TrainError> {
        if trees {
            let pred: Vec<Vec<String>> = predicted
                .iter()
                .map(|x| match x {
                    PairPrediction::Arcs { best, .. } => arc_names(best, &pair_labels),
                    PairPrediction::Pair(_) => Vec::new(),
                })
                .collect();
            let counts = attachment(&set.gold, &pred);
            record.dev_tasks.insert("uas".into(), counts.uas());
            record.dev_tasks.insert("las".into(), counts.las());
        } else {
            let gold: Vec<usize> = set
                .units
                .iter()
                .map(|u| match u.target {
                    PairTarget::Pair(y) => y,
                    PairTarget::Arcs { .. } => 0,
                })
                .collect();
            let pred: Vec<usize> = predicted
                .iter()
                .map(|x| match x {
                    PairPrediction::Pair(y) => *y,
                    PairPrediction::Arcs { .. } => 0,
                })
                .collect();
            let prf = micro_prf(
                &label_set.labels,
                label_set.negative.as_deref(),
                &gold,
                &pred,
            )?;
            record.set_dev_prf(&prf);
        }
        Ok(())
    };
    let wants_dev = |record: &EpochRecord| p.scores_dev_after(record.epoch);

    let (history, predicted, heatmap) = if p.freeze_encoder {
        // the paper's feature-based rows: the encoder runs once per unit
        let encoder = model.encoder.valid();
        let features = |set: &PairSet| {
            frozen_features(
                &encoder,
                with_attention,
                &set.units,
                pad_id,
                p.batch_size,
                &device,
                &cancel,
            )
        };
        let train_features = features(&train)?;
        let dev_features = dev.as_ref().map(features).transpose()?;
        let test_features = features(&test)?;
        ctx.progress.println(format!(
            "{}: frozen encoder features of {} units computed once",
            ctx.name,
            train.units.len() + dev.as_ref().map_or(0, |d| d.units.len()) + test.units.len()
        ));
        let objective = FrozenPairObjective::new(&train.units, &train_features, hidden, attention);
        let fitted = fit(
            model.head,
            &objective,
            &p.settings(),
            &env,
            |head, record| {
                let (Some(dev), Some(feats)) = (dev.as_ref(), dev_features.as_ref()) else {
                    return Ok(());
                };
                if !wants_dev(record) {
                    return Ok(());
                }
                let valid = head.valid();
                let scorer = Scorer::Frozen {
                    head: &valid,
                    features: feats,
                    hidden,
                    attention,
                };
                let predicted =
                    predict_pairs(&scorer, &dev.units, pad_id, p.batch_size, &device, &cancel)?;
                score_dev(dev, &predicted, record)
            },
        )?;
        let valid = fitted.model.valid();
        let scorer = Scorer::Frozen {
            head: &valid,
            features: &test_features,
            hidden,
            attention,
        };
        let predicted =
            predict_pairs(&scorer, &test.units, pad_id, p.batch_size, &device, &cancel)?;
        let heatmap = match trees {
            true => arc_heatmap(&encoder, &test, &predicted, pad_id, &device, &cancel)?,
            false => None,
        };
        (fitted.history, predicted, heatmap)
    } else {
        let objective = WordPairObjective::new(&train.units, pad_id);
        let fitted = fit(model, &objective, &p.settings(), &env, |model, record| {
            let Some(dev) = dev.as_ref().filter(|_| wants_dev(record)) else {
                return Ok(());
            };
            let valid = model.valid();
            let predicted = predict_pairs(
                &Scorer::FineTuned(&valid),
                &dev.units,
                pad_id,
                p.batch_size,
                &device,
                &cancel,
            )?;
            score_dev(dev, &predicted, record)
        })?;
        let valid = fitted.model.valid();
        let predicted = predict_pairs(
            &Scorer::FineTuned(&valid),
            &test.units,
            pad_id,
            p.batch_size,
            &device,
            &cancel,
        )?;
        let heatmap = match trees {
            true => arc_heatmap(&valid.encoder, &test, &predicted, pad_id, &device, &cancel)?,
            false => None,
        };
        (fitted.history, predicted, heatmap)
    };

    let out = &ctx.out_dir;
    if let Some(map) = heatmap {
        let path = out.join(ARCS_HEATMAP_FILE);
        std::fs::write(&path, map.svg()).map_err(|e| StageError::io(&path, e))?;
    }
    let path = out.join("predictions.jsonl");
    if trees {
        let lines: Vec<TreeLine> = test
            .ids
            .iter()
            .zip(&test.gold)
            .zip(&predicted)
            .map(|((id, gold), pred)| match pred {
                PairPrediction::Arcs { best, mst } => TreeLine {
                    id,
                    gold,
                    pred: arc_names(best, &pair_labels),
                    pred_mst: arc_names(mst, &pair_labels),
                },
                PairPrediction::Pair(_) => TreeLine {
                    id,
                    gold,
                    pred: Vec::new(),
                    pred_mst: Vec::new(),
                },
            })
            .collect();
        jsonl::write(&path, &lines)?;
    } else {
        let lines: Vec<PairLine> = test
            .ids
            .iter()
            .zip(&test.gold)
            .zip(&predicted)
            .map(|((id, gold), pred)| PairLine {
                id,
                gold: gold.first().map_or("", String::as_str),
                pred: match pred {
                    PairPrediction::Pair(y) => pair_labels[*y].as_str(),
                    PairPrediction::Arcs { .. } => "",
                },
            })
            .collect();
        jsonl::write(&path, &lines)?;
    }
    write_labels_and_history(ctx, &labels_path, &history)?;
    write_metrics(ctx, p, &history, train.units.len(), test.units.len())
}
