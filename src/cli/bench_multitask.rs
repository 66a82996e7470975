//! `pipe bench multitask`: whether one `multitask` epoch over two tasks costs no more than
//! the two `finetune` epochs it replaces (issue #20). Both arms run `train::fit` with the
//! same settings on the same real sentences: arm "finetune" trains one classifier per task
//! for an epoch, arm "multitask" trains one shared encoder with a head per task for an
//! epoch over both (proportional sampling: every batch of both tasks once). The updates are
//! the same in number and shape, so the ratio shows what the multi-task machinery costs:
//! the task lookup per batch, the heads, the shuffled interleaving of two tasks' lengths.
//!
//! The arms alternate within each repetition so that load from other processes falls on
//! both alike; the median of each arm is reported.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::bench_train::{classifier, encoded_tsv, median, one_epoch, BATCH_SIZE, MAX_LEN};
use crate::model::device::train_device;
use crate::model::BertTokenizer;
use crate::train::multitask::{MultiTaskModel, MultiTaskObjective, Sampling, TaskHead, TaskUnits};
use crate::train::{ClassificationObjective, EncodedInstance};
use burn::prelude::*;

/// The two tasks `bench multitask` reads by default, relative to the cwd: ChemProt and DDI
/// (BLURB's TSVs), the relation pair of Peng et al.'s grid.
pub(super) const DEFAULT_TASKS: [&str; 2] = [
    "../shared/data/chemprot/blurb/train_blurb.tsv",
    "../shared/data/ddi/blurb/train_reconstructed.tsv",
];

/// One task's encoded training sentences.
struct Task {
    name: String,
    train: Vec<EncodedInstance>,
    num_labels: usize,
}

/// The figures `bench multitask` prints.
#[derive(Debug, Serialize)]
struct MultitaskFigures {
    backend: &'static str,
    cores: usize,
    batch: usize,
    max_len: usize,
    examples_per_task: Vec<usize>,
    repetitions: usize,
    /// Median seconds of each task's `finetune` epoch.
    finetune_seconds: Vec<f64>,
    /// Median seconds of the `multitask` epoch over all tasks.
    multitask_seconds: f64,
    /// `multitask_seconds / Σ finetune_seconds` (≤ 1: the multi-task epoch costs no more).
    ratio: f64,
}

/// `pipe bench multitask`.
pub(super) fn bench_multitask(
    model_dir: &Path,
    data: &[PathBuf],
    examples: usize,
    repetitions: usize,
    json: bool,
) -> Result<ExitCode> {
    if data.len() < 2 {
        bail!("--data: give at least two tasks (one file each), e.g. ChemProt and DDI");
    }
    let repetitions = repetitions.max(1);
    let tokenizer = BertTokenizer::from_dir(model_dir)?;
    let mut tasks = Vec::new();
    for path in data {
        let (train, num_labels) = encoded_tsv(path, Some(examples), &tokenizer)?;
        // `chemprot/blurb/train_blurb.tsv` → `chemprot`: the corpus, not the file
        let name = path
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .map_or_else(
                || path.display().to_string(),
                |s| s.to_string_lossy().to_string(),
            );
        tasks.push(Task {
            name,
            train,
            num_labels,
        });
    }
    if !json {
        let sizes: Vec<String> = tasks
            .iter()
            .map(|t| format!("{} {}", t.name, t.train.len()))
            .collect();
        println!(
            "multitask benchmark: {} + cls heads, {} sentences, batch {BATCH_SIZE}, max_len \
             {MAX_LEN}, length-bucketed, backend flex, {} cores, {repetitions} repetition(s)",
            model_dir.display(),
            sizes.join(", "),
            num_cpus::get()
        );
    }
    let device = train_device(&Device::flex());
    let scratch = std::env::temp_dir().join(format!("pipe-bench-mt-{}", std::process::id()));
    let pad_id = tokenizer.pad_id();
    let mut single: Vec<Vec<f64>> = vec![Vec::new(); tasks.len()];
    let mut multi = Vec::new();
    for rep in 0..repetitions {
        // alternate which arm goes first, so a slow spell hits both
        let multitask_first = rep % 2 == 1;
        let mut run_multitask = || -> Result<()> {
            // each classifier draws its head under seed 1, as the `finetune` arm's do
            let mut encoder = None;
            let mut heads = Vec::new();
            for task in &tasks {
                let (c, _) = classifier(Some(model_dir), task.num_labels, &device)?;
                encoder.get_or_insert(c.encoder);
                heads.push(TaskHead::Sentence(c.head));
            }
            let model = MultiTaskModel::shared(encoder.context("no task")?, heads);
            let units = tasks
                .iter()
                .map(|t| TaskUnits::Sentence(&t.train))
                .collect();
            let objective = MultiTaskObjective::new(units, pad_id, Sampling::Proportional, 1.0);
            let seconds =
                one_epoch(model, &objective, true, &device, &scratch.join("multitask"))?.seconds;
            if !json {
                println!(
                    "  rep {}: multitask {:<12} {seconds:>8.1} s",
                    rep + 1,
                    "all tasks"
                );
            }
            multi.push(seconds);
            Ok(())
        };
        if multitask_first {
            run_multitask()?;
        }
        for (i, task) in tasks.iter().enumerate() {
            let (model, _) = classifier(Some(model_dir), task.num_labels, &device)?;
            let objective = ClassificationObjective::new(&task.train, pad_id);
            let seconds =
                one_epoch(model, &objective, true, &device, &scratch.join(&task.name))?.seconds;
            if !json {
                println!(
                    "  rep {}: finetune {:<12} {seconds:>8.1} s",
                    rep + 1,
                    task.name
                );
            }
            single[i].push(seconds);
        }
        if !multitask_first {
            run_multitask()?;
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let finetune_seconds: Vec<f64> = single.into_iter().map(median).collect();
    let multitask_seconds = median(multi);
    let total: f64 = finetune_seconds.iter().sum();
    let figures = MultitaskFigures {
        backend: "flex",
        cores: num_cpus::get(),
        batch: BATCH_SIZE,
        max_len: MAX_LEN,
        examples_per_task: tasks.iter().map(|t| t.train.len()).collect(),
        repetitions,
        ratio: multitask_seconds / total.max(1e-9),
        finetune_seconds,
        multitask_seconds,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!(
            "finetune epochs, one per task: {total:.1} s in all; one multitask epoch over them: \
             {:.1} s; ratio {:.3} ({})",
            figures.multitask_seconds,
            figures.ratio,
            if figures.ratio <= 1.0 {
                "the multi-task epoch costs no more"
            } else {
                "the multi-task epoch costs more"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
