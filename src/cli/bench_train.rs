//! `pipe bench train` and `pipe bench epoch`: training and inference speed of the project's
//! MiniLM classifier (BERT encoder + the `cls` head) on the default CPU backend (or the
//! `--device` given), beside PyTorch on the same machine and device when `torch` and
//! `transformers` import. Benchmarks that print figures, not timed tests.
//!
//! `train` times the fine-tuning step of `train::fit` (forward, cross-entropy, backward,
//! global-norm clipping, AdamW) on full synthetic batches of fixed shapes; `epoch` runs
//! `train::fit` for one epoch over real ChemProt sentences with and without length
//! bucketing. Inference is timed as the evaluate stage runs it: `train::predict` over several
//! batches.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::Serialize;

use super::args::TrainBenchOpts;
use super::bench_machine::MachineFigures;
use crate::model::device::{train_device, DeviceSpec};
use crate::model::fused;
use crate::model::heads::{HeadConfig, HeadKind};
use crate::model::precision::{autocast, Precision};
use crate::model::{BertConfig, BertModel, BertTokenizer, HiddenAct, ModelError};
use crate::stages::Progress;
use crate::train::classifier::{cross_entropy, initialize_params};
use crate::train::layer_decay::ParamRates;
use crate::train::param_update::ParamUpdate;
use crate::train::rng::{with_backend_seed, SplitMix64};
use crate::train::{
    fit, predict, Batch, Checkpoints, ClassificationObjective, EncodedInstance, EpochRecord,
    FitEnv, LossScale, Objective, SequenceClassifier, TrainSettings,
};

/// The PyTorch side of `bench train` (run with `python -c`).
const TORCH_SCRIPT: &str = include_str!("../../scripts/bench_train_torch.py");
/// The shapes (batch × tokens) the ignored A/B benchmark test times.
#[cfg(test)]
const SHAPES: [(usize, usize); 2] = [(32, 128), (32, 64)];
/// Classes of the benchmark head (ChemProt's six).
const NUM_LABELS: usize = 6;
/// The finetune defaults the step runs with.
pub(super) const LR: f64 = 2e-5;
pub(super) const WEIGHT_DECAY: f64 = 0.01;
pub(super) const GRAD_CLIP: f64 = 1.0;
pub(super) const BATCH_SIZE: usize = 32;
pub(super) const MAX_LEN: usize = 128;
/// Batches per timed inference pass of pipe: the evaluate stage's `predict` runs two side
/// by side on two cores, so one batch alone would not show its speed.
const INFER_BATCHES: usize = 4;
/// Where `bench epoch` reads ChemProt (BLURB's `text<TAB>label`), relative to the cwd.
pub(super) const DEFAULT_EPOCH_DATA: &str = "../shared/data/chemprot/blurb/train_blurb.tsv";

/// all-MiniLM-L6-v2's encoder shape (the weights do not change the speed).
fn minilm_l6_config() -> BertConfig {
    BertConfig {
        vocab_size: 30522,
        hidden_size: 384,
        num_hidden_layers: 6,
        num_attention_heads: 12,
        intermediate_size: 1536,
        hidden_act: HiddenAct::Gelu,
        ..BertConfig::tiny(30522)
    }
}

/// BERT-base's encoder shape (BioBERT's, the papers' `paper` profiles), with BioBERT's
/// cased vocabulary.
fn bert_base_config() -> BertConfig {
    BertConfig {
        vocab_size: 28996,
        hidden_size: 768,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        intermediate_size: 3072,
        hidden_act: HiddenAct::Gelu,
        ..BertConfig::tiny(28996)
    }
}

/// The shape of `bench train`'s random encoder (without `--model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RandomEncoder {
    /// all-MiniLM-L6-v2's: 6 layers, hidden 384 (the CPU profiles' model).
    Minilm,
    /// BERT-base's: 12 layers, hidden 768 (BioBERT; the `paper` profiles' model).
    BertBase,
}

impl RandomEncoder {
    fn config(self) -> BertConfig {
        match self {
            RandomEncoder::Minilm => minilm_l6_config(),
            RandomEncoder::BertBase => bert_base_config(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            RandomEncoder::Minilm => "MiniLM-L6",
            RandomEncoder::BertBase => "BERT-base",
        }
    }
}

/// The classifier: the checkpoint in `model_dir` (or a random MiniLM-L6) + a `cls` head.
pub(super) fn classifier(
    model_dir: Option<&Path>,
    num_labels: usize,
    device: &Device,
) -> Result<(SequenceClassifier, BertConfig), ModelError> {
    classifier_of(model_dir, RandomEncoder::Minilm, num_labels, device)
}

/// The classifier: the checkpoint in `model_dir` (or a random `encoder`) + a `cls` head.
fn classifier_of(
    model_dir: Option<&Path>,
    encoder: RandomEncoder,
    num_labels: usize,
    device: &Device,
) -> Result<(SequenceClassifier, BertConfig), ModelError> {
    let Some(dir) = model_dir else {
        let config = encoder.config();
        let model = SequenceClassifier::random(&config, HeadKind::Cls, num_labels, 1, device)?;
        return Ok((model, config));
    };
    with_backend_seed(device, 1, || {
        let (encoder, config) = BertModel::load(dir, device)?;
        let head = HeadConfig::on_encoder(HeadKind::Cls, &config, num_labels).init(device)?;
        let model = SequenceClassifier { encoder, head };
        initialize_params(&model);
        Ok((model, config))
    })
}

/// `batch` full-length instances of pseudo-random word pieces (no padding).
fn synthetic_instances(batch: usize, seq_len: usize, vocab: usize) -> Vec<EncodedInstance> {
    let mut rng = SplitMix64::new(17);
    let low = if vocab > 2000 { 1000 } else { 1 };
    (0..batch)
        .map(|b| EncodedInstance {
            ids: (0..seq_len)
                .map(|_| (low + rng.below(vocab - low)) as u32)
                .collect(),
            label: b % NUM_LABELS,
            entities: [0, 0],
        })
        .collect()
}

/// Peak resident set of this process (`VmHWM`), MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets `VmHWM` to the current resident set (Linux `clear_refs` 5), so each shape
/// reports its own peak; where that is refused the figure is the process's peak so far.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub(super) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median seconds per training step and per inference pass of one shape on one device.
struct RustTiming {
    train_s: f64,
    infer_s: f64,
    peak_rss_mib: Option<f64>,
    peak_is_per_shape: bool,
    phases: Option<StepPhases>,
}

fn time_pipe(
    opts: &TrainBenchOpts,
    device: &Device,
    (batch_size, seq_len): (usize, usize),
) -> Result<RustTiming> {
    let (warmup, steps, precision) = (opts.warmup, opts.steps, Precision::from(opts.precision));
    let model_dir = opts.model.as_deref();
    let peak_is_per_shape = reset_peak_rss();
    let train_dev = train_device(device);
    let (mut model, config) = classifier_of(model_dir, opts.encoder, NUM_LABELS, &train_dev)?;
    if seq_len > config.max_position_embeddings {
        bail!(
            "{seq_len} tokens exceed the model's {}",
            config.max_position_embeddings
        );
    }
    let instances = synthetic_instances(batch_size, seq_len, config.vocab_size);
    let refs: Vec<&EncodedInstance> = instances.iter().collect();
    // the optimizer `fit` uses on this device (flat off the CPU)
    let mut optimizer = ParamUpdate::new(&model, WEIGHT_DECAY, &train_dev, false);
    let rates = ParamRates::default();
    let batch = Batch::new(&refs, config.pad_token_id, &train_dev);
    let mut train_times = Vec::with_capacity(steps);
    // the step `fit` takes: f16 scales the loss, unscales the gradients and reads their norm
    let mut loss_scale = LossScale::for_precision(precision);
    let mut phases = opts.phases.then(|| PhaseClock::new(&train_dev, steps));
    for step in 0..warmup + steps {
        let start = Instant::now();
        let timed = step >= warmup;
        let mut mark = |phase: Phase| match phases.as_mut().filter(|_| timed) {
            Some(clock) => clock.mark(phase),
            None => Ok(()),
        };
        mark(Phase::Start)?;
        let out = with_backend_seed(&train_dev, step as u64, || model.forward(&batch))?;
        let loss = cross_entropy(out.logits, batch.labels.clone());
        let value = loss.clone().inner();
        mark(Phase::Forward)?;
        let grads = GradientsParams::from_grads(loss_scale.scaled(loss).backward(), &model);
        mark(Phase::Backward)?;
        (model, _) = optimizer.update(LR, &rates, model, grads, &mut loss_scale, GRAD_CLIP)?;
        mark(Phase::Update)?;
        // the backend runs ops eagerly; reading the loss makes sure the step is done
        let _: f32 = value.into_scalar();
        if timed {
            train_times.push(start.elapsed().as_secs_f64());
        } else {
            // on a GPU the warm-up steps compile and tune kernels: say how long they take
            eprintln!(
                "{batch_size}x{seq_len} warm-up step {}: {:.1} s",
                step + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    // Inference as the evaluate stage runs it: `predict` over INFER_BATCHES batches (side
    // by side on the CPU, see `train::concurrent_batches`), timed per batch.
    let valid = model.valid();
    let eval_set = synthetic_instances(batch_size * INFER_BATCHES, seq_len, config.vocab_size);
    let cancel = AtomicBool::new(false);
    let mut infer_times = Vec::with_capacity(steps);
    for step in 0..warmup + steps {
        let start = Instant::now();
        let predictions = predict(
            &valid,
            &eval_set,
            config.pad_token_id,
            batch_size,
            device,
            false,
            &cancel,
        )?;
        if predictions.len() != eval_set.len() {
            bail!(
                "{} predictions for {} instances",
                predictions.len(),
                eval_set.len()
            );
        }
        if step >= warmup {
            infer_times.push(start.elapsed().as_secs_f64() / INFER_BATCHES as f64);
        }
    }
    Ok(RustTiming {
        train_s: median(train_times),
        infer_s: median(infer_times),
        peak_rss_mib: peak_rss_mib(),
        peak_is_per_shape,
        phases: phases.map(PhaseClock::medians),
    })
}

/// A part of the training step that `--phases` times on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Forward,
    Backward,
    /// Clipping and the AdamW step.
    Update,
}

/// Median seconds of each part of the step, the device synchronised after each part (so
/// their sum exceeds the step's time by the waits the synchronisation adds).
#[derive(Debug, Clone, Serialize)]
struct StepPhases {
    forward_and_loss_s: f64,
    backward_s: f64,
    /// Clipping and AdamW.
    update_s: f64,
}

/// `--phases`: synchronises the device at each [`Phase`] mark and keeps the time since the
/// previous mark.
struct PhaseClock {
    device: Device,
    last: Instant,
    /// Seconds of each phase after `Start`, in step order.
    seconds: [Vec<f64>; 3],
}

impl PhaseClock {
    fn new(device: &Device, steps: usize) -> Self {
        PhaseClock {
            device: device.clone(),
            last: Instant::now(),
            seconds: std::array::from_fn(|_| Vec::with_capacity(steps)),
        }
    }

    fn mark(&mut self, phase: Phase) -> Result<()> {
        sync(&self.device)?;
        let now = Instant::now();
        let slot = match phase {
            Phase::Start => None,
            Phase::Forward => Some(0),
            Phase::Backward => Some(1),
            Phase::Update => Some(2),
        };
        if let Some(slot) = slot {
            self.seconds[slot].push((now - self.last).as_secs_f64());
        }
        self.last = now;
        Ok(())
    }

    fn medians(self) -> StepPhases {
        let [forward, backward, update] = self.seconds;
        StepPhases {
            forward_and_loss_s: median(forward),
            backward_s: median(backward),
            update_s: median(update),
        }
    }
}

/// Microseconds per small elementwise op (`x + 1` on 384 floats) on `device`, the device
/// synchronised once at the end: on a GPU the cost of a kernel launch, which bounds a step
/// made of thousands of small ops.
fn launch_cost_us(device: &Device) -> Result<f64> {
    const OPS: usize = 2000;
    let mut x = Tensor::<1>::zeros([384], device);
    for _ in 0..100 {
        x = x.add_scalar(1.0);
    }
    sync(device)?;
    let start = Instant::now();
    for _ in 0..OPS {
        x = x.add_scalar(1.0);
    }
    sync(device)?;
    Ok(start.elapsed().as_secs_f64() * 1e6 / OPS as f64)
}

/// Waits for everything queued on `device` to finish.
fn sync(device: &Device) -> Result<()> {
    device
        .sync()
        .map_err(|e| anyhow::anyhow!("synchronising the device: {e:?}"))
}

/// The interpreter that imports `torch` and `transformers`: `PIPE_TORCH_PYTHON`, else
/// `python3`; `None` when the import fails.
fn torch_python() -> Option<String> {
    let python = std::env::var("PIPE_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-c", "import torch, transformers"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    status.success().then_some(python)
}

/// What the PyTorch script prints for one shape.
#[derive(Debug, serde::Deserialize)]
struct TorchTiming {
    train_s_per_step: f64,
    infer_s_per_step: f64,
    /// With automatic mixed precision (`torch.autocast`), when asked for.
    #[serde(default)]
    amp_train_s_per_step: Option<f64>,
    #[serde(default)]
    amp_infer_s_per_step: Option<f64>,
    torch_version: String,
    threads: usize,
}

fn time_torch(
    python: &str,
    model_source: &str,
    torch_device: &str,
    (batch, seq_len): (usize, usize),
    warmup: usize,
    steps: usize,
    amp: Option<&str>,
) -> Result<TorchTiming> {
    let output = Command::new(python)
        .arg("-c")
        .arg(TORCH_SCRIPT)
        .arg(model_source)
        .arg(format!("{batch}x{seq_len}"))
        .arg(warmup.to_string())
        .arg(steps.to_string())
        .arg(NUM_LABELS.to_string())
        .arg(torch_device)
        .arg(amp.unwrap_or("none"))
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {python}"))?;
    if !output.status.success() {
        bail!("the PyTorch benchmark failed ({})", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the PyTorch benchmark printed no result")?;
    serde_json::from_str(line).context("reading the PyTorch benchmark's result")
}

/// One shape of `bench train --json`.
#[derive(Debug, Serialize)]
struct TrainFigures {
    backend: &'static str,
    device: String,
    /// pipe's `--precision`.
    precision: &'static str,
    /// `--reference-kernels`: burn's reference forms instead of pipe's kernels.
    reference_kernels: bool,
    batch: usize,
    seq_len: usize,
    train_s_per_step: f64,
    train_seq_per_s: f64,
    infer_s_per_step: f64,
    infer_seq_per_s: f64,
    peak_rss_mib: Option<f64>,
    torch_train_s_per_step: Option<f64>,
    torch_train_seq_per_s: Option<f64>,
    torch_infer_s_per_step: Option<f64>,
    torch_infer_seq_per_s: Option<f64>,
    /// pipe's throughput over PyTorch's (> 1: pipe is faster).
    train_vs_torch: Option<f64>,
    infer_vs_torch: Option<f64>,
    /// PyTorch with AMP (`torch.autocast` in `torch_amp_dtype`), on a GPU.
    torch_amp_dtype: Option<&'static str>,
    torch_amp_train_seq_per_s: Option<f64>,
    torch_amp_infer_seq_per_s: Option<f64>,
    train_vs_torch_amp: Option<f64>,
    infer_vs_torch_amp: Option<f64>,
    torch_version: Option<String>,
    warmup_steps: usize,
    timed_steps: usize,
    /// `--phases`: each part of pipe's step timed on its own.
    phases: Option<StepPhases>,
    /// `--phases`: microseconds per small elementwise op on the device.
    small_op_us: Option<f64>,
}

/// `32x128,32x64` as (batch, sequence length) pairs.
fn parse_shapes(text: &str) -> Result<Vec<(usize, usize)>> {
    text.split(',')
        .map(|shape| {
            let parsed = shape
                .trim()
                .split_once('x')
                .and_then(|(b, t)| Some((b.parse().ok()?, t.parse().ok()?)))
                .filter(|&(b, t): &(usize, usize)| b > 0 && t > 0);
            parsed.with_context(|| format!("--shapes: `{shape}` is not BATCHxSEQ (e.g. 32x128)"))
        })
        .collect()
}

/// `pipe bench train`.
pub(super) fn bench_train(opts: &TrainBenchOpts) -> Result<ExitCode> {
    let (warmup, steps, json, precision) = (
        opts.warmup,
        opts.steps,
        opts.json,
        Precision::from(opts.precision),
    );
    let (model_dir, device) = (opts.model.as_deref(), opts.device.as_str());
    let shapes = parse_shapes(&opts.shapes)?;
    crate::allocator::tune_for_training(); // as `fit` does, so that the step is timed alike
    if steps == 0 {
        bail!("--steps must be positive");
    }
    let spec = DeviceSpec::parse(device)?;
    let burn_device = spec.device()?;
    // PyTorch on the same GPU; on the CPU for every CPU backend of pipe.
    let torch_device = match spec {
        DeviceSpec::Cuda(index) => format!("cuda:{index}"),
        _ => "cpu".to_string(),
    };
    // AMP is PyTorch's GPU recipe; on the CPU it is only timed f32
    let torch_amp = matches!(spec, DeviceSpec::Cuda(_)).then_some(match precision {
        Precision::F16 => "float16",
        _ => "bfloat16",
    });
    let python = torch_python();
    let model_source = match model_dir {
        Some(dir) => dir.display().to_string(),
        None => serde_json::to_string(&opts.encoder.config())?,
    };
    if !json {
        println!(
            "train benchmark: {} + cls head ({NUM_LABELS} labels), backend {} on {device} \
             ({} cores), PyTorch on {torch_device}; step = forward + backward + clip + AdamW; \
             infer = pipe's evaluation loop over {INFER_BATCHES} batches (per batch), PyTorch's \
             forward in inference mode; median of {steps} steps after {warmup} warm-up; pipe \
             and PyTorch alternate shape by shape; pipe's products in {precision}{amp}{kernels}",
            model_dir.map_or(format!("{} (random init)", opts.encoder.name()), |d| d
                .display()
                .to_string()),
            spec.backend_name(),
            num_cpus::get(),
            amp = torch_amp.map_or(String::new(), |dtype| format!(
                "; PyTorch in f32 and with AMP ({dtype})"
            )),
            kernels = match opts.reference_kernels {
                true => "; pipe with burn's reference forms (--reference-kernels)",
                false => "",
            },
        );
        if python.is_none() {
            println!(
                "PyTorch: not available (`python3 -c \"import torch, transformers\"` failed; \
                 set PIPE_TORCH_PYTHON to another interpreter)"
            );
        }
    }
    let machine = MachineFigures::measure();
    if !json {
        println!("{}", machine.summary());
    }
    let launch_us = match opts.phases {
        true => Some(launch_cost_us(&burn_device)?),
        false => None,
    };
    if let (Some(us), false) = (launch_us, json) {
        println!("one small elementwise op (x + 1 on 384 floats): {us:.1} µs");
    }
    let mut figures = Vec::new();
    for shape in shapes {
        // the whole step, and `predict`, in the precision's autocast scope
        let time = || autocast(precision, || time_pipe(opts, &burn_device, shape));
        let pipe = match opts.reference_kernels {
            true => fused::with_reference_kernels(time),
            false => time(),
        }?;
        let torch = match &python {
            Some(python) => Some(time_torch(
                python,
                &model_source,
                &torch_device,
                shape,
                warmup,
                steps,
                torch_amp,
            )?),
            None => None,
        };
        let amp_train = torch.as_ref().and_then(|t| t.amp_train_s_per_step);
        let amp_infer = torch.as_ref().and_then(|t| t.amp_infer_s_per_step);
        let (batch, seq_len) = shape;
        let per_s = |s: f64| batch as f64 / s;
        let f = TrainFigures {
            backend: spec.backend_name(),
            device: device.to_string(),
            precision: precision.name(),
            reference_kernels: opts.reference_kernels,
            batch,
            seq_len,
            train_s_per_step: pipe.train_s,
            train_seq_per_s: per_s(pipe.train_s),
            infer_s_per_step: pipe.infer_s,
            infer_seq_per_s: per_s(pipe.infer_s),
            peak_rss_mib: pipe.peak_rss_mib,
            torch_train_s_per_step: torch.as_ref().map(|t| t.train_s_per_step),
            torch_train_seq_per_s: torch.as_ref().map(|t| per_s(t.train_s_per_step)),
            torch_infer_s_per_step: torch.as_ref().map(|t| t.infer_s_per_step),
            torch_infer_seq_per_s: torch.as_ref().map(|t| per_s(t.infer_s_per_step)),
            train_vs_torch: torch.as_ref().map(|t| t.train_s_per_step / pipe.train_s),
            infer_vs_torch: torch.as_ref().map(|t| t.infer_s_per_step / pipe.infer_s),
            torch_amp_dtype: amp_train.and(torch_amp),
            torch_amp_train_seq_per_s: amp_train.map(per_s),
            torch_amp_infer_seq_per_s: amp_infer.map(per_s),
            train_vs_torch_amp: amp_train.map(|s| s / pipe.train_s),
            infer_vs_torch_amp: amp_infer.map(|s| s / pipe.infer_s),
            torch_version: torch.as_ref().map(|t| t.torch_version.clone()),
            warmup_steps: warmup,
            timed_steps: steps,
            phases: pipe.phases.clone(),
            small_op_us: launch_us,
        };
        if !json {
            let rss = match (f.peak_rss_mib, pipe.peak_is_per_shape) {
                (Some(mib), true) => format!("{mib:.0} MiB"),
                (Some(mib), false) => format!("{mib:.0} MiB (process peak so far)"),
                (None, _) => "n/a".to_string(),
            };
            println!(
                "{batch}x{seq_len:<4} pipe   train {:.3} s/step {:>6.1} seq/s   infer {:.3} s {:>6.1} \
                 seq/s   peak RSS {rss}",
                f.train_s_per_step, f.train_seq_per_s, f.infer_s_per_step, f.infer_seq_per_s
            );
            if let Some(p) = &f.phases {
                println!(
                    "{batch}x{seq_len:<4} pipe   phases: forward + loss {:.4} s   backward {:.4} s   \
                     clip + AdamW {:.4} s",
                    p.forward_and_loss_s, p.backward_s, p.update_s
                );
            }
            if let Some(t) = &torch {
                println!(
                    "{batch}x{seq_len:<4} torch  train {:.3} s/step {:>6.1} seq/s   infer {:.3} s {:>6.1} \
                     seq/s   (torch {}, {} threads)",
                    t.train_s_per_step,
                    per_s(t.train_s_per_step),
                    t.infer_s_per_step,
                    per_s(t.infer_s_per_step),
                    t.torch_version,
                    t.threads
                );
                println!(
                    "{batch}x{seq_len:<4} pipe/torch  train {:.2}x   infer {:.2}x",
                    f.train_vs_torch.unwrap_or(f64::NAN),
                    f.infer_vs_torch.unwrap_or(f64::NAN)
                );
                if let (Some(train), Some(infer), Some(dtype)) = (
                    f.torch_amp_train_seq_per_s,
                    f.torch_amp_infer_seq_per_s,
                    f.torch_amp_dtype,
                ) {
                    println!(
                        "{batch}x{seq_len:<4} torch AMP ({dtype})  train {train:>6.1} seq/s   \
                         infer {infer:>6.1} seq/s",
                    );
                    println!(
                        "{batch}x{seq_len:<4} pipe/torch AMP  train {:.2}x   infer {:.2}x",
                        f.train_vs_torch_amp.unwrap_or(f64::NAN),
                        f.infer_vs_torch_amp.unwrap_or(f64::NAN)
                    );
                }
            }
        }
        figures.push(f);
    }
    if json {
        let report = serde_json::json!({ "machine": machine, "shapes": figures });
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Sentences and label indices (labels sorted as strings) from a BLURB TSV: the last column
/// is the label, the one before it the sentence (ChemProt's `text<TAB>label`, DDI's
/// `pair_id<TAB>sentence<TAB>label`); a first line whose last column is `label` is a header.
pub(super) fn read_tsv(
    path: &Path,
    limit: Option<usize>,
) -> Result<(Vec<String>, Vec<usize>, usize)> {
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "{} (pass --data FILE: a `text<TAB>label` file)",
            path.display()
        )
    })?;
    let mut rows = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        if limit.is_some_and(|l| rows.len() >= l) {
            break;
        }
        let line = line.with_context(|| format!("{}:{}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut columns = line.rsplit('\t');
        let (Some(label), Some(text)) = (columns.next(), columns.next()) else {
            bail!("{}:{}: expected `text<TAB>label`", path.display(), n + 1);
        };
        if n == 0 && label.trim() == "label" {
            continue;
        }
        rows.push((text.to_string(), label.trim().to_string()));
    }
    if rows.is_empty() {
        bail!("{}: no examples", path.display());
    }
    let mut labels: Vec<String> = rows.iter().map(|(_, l)| l.clone()).collect();
    labels.sort();
    labels.dedup();
    let index = |l: &str| labels.iter().position(|x| x == l).unwrap_or(0);
    let gold = rows.iter().map(|(_, l)| index(l)).collect();
    let num_labels = labels.len().max(2);
    Ok((rows.into_iter().map(|(t, _)| t).collect(), gold, num_labels))
}

/// The first `limit` examples of a BLURB TSV ([`read_tsv`]) encoded for the classifier,
/// and the number of labels.
pub(super) fn encoded_tsv(
    path: &Path,
    limit: Option<usize>,
    tokenizer: &BertTokenizer,
) -> Result<(Vec<EncodedInstance>, usize)> {
    let (texts, gold, num_labels) = read_tsv(path, limit)?;
    let mut train = Vec::with_capacity(texts.len());
    for (text, &label) in texts.iter().zip(&gold) {
        let encoding = tokenizer.encode(text, MAX_LEN)?;
        train.push(EncodedInstance::new(text, &encoding, label));
    }
    Ok((train, num_labels))
}

/// Trains `model` one epoch on `objective` with the finetune defaults above, checkpoints in
/// `scratch` (removed after); the epoch's record.
pub(super) fn one_epoch<O: Objective>(
    model: O::Model,
    objective: &O,
    bucketing: bool,
    device: &Device,
    scratch: &Path,
) -> Result<EpochRecord> {
    let settings = TrainSettings {
        lr: LR,
        epochs: 1,
        batch_size: BATCH_SIZE,
        warmup: 0.1,
        weight_decay: WEIGHT_DECAY,
        grad_clip: GRAD_CLIP,
        seed: 1,
        bucketing,
        layer_decay: 1.0,
        grad_accum: 1,
        checkpoints: Checkpoints::EveryEpoch,
        record_updates: false,
        precision: Precision::F32,
        frozen_encoder_updates: 0,
    };
    std::fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let cancel = AtomicBool::new(false);
    let progress = Progress::hidden();
    let env = FitEnv {
        device,
        checkpoint_dir: scratch,
        progress: &progress,
        cancel: &cancel,
    };
    let result = fit(model, objective, &settings, &env, |_, _| Ok(()));
    let _ = std::fs::remove_dir_all(scratch);
    let mut fitted = result?;
    fitted.history.pop().context("the epoch left no record")
}

/// One arm of `bench epoch`.
#[derive(Debug, Serialize)]
struct EpochFigures {
    seconds: f64,
    seq_per_s: f64,
    train_loss: f64,
}

/// `pipe bench epoch`.
pub(super) fn bench_epoch(
    model_dir: &Path,
    data: &Path,
    examples: Option<usize>,
    json: bool,
) -> Result<ExitCode> {
    let tokenizer = BertTokenizer::from_dir(model_dir)?;
    let (train, num_labels) = encoded_tsv(data, examples, &tokenizer)?;
    let lengths: Vec<usize> = train.iter().map(|x| x.ids.len()).collect();
    let real_tokens: usize = lengths.iter().sum();
    let mean_len = real_tokens as f64 / lengths.len() as f64;
    let longest = lengths.iter().copied().max().unwrap_or(0);
    if !json {
        println!(
            "epoch benchmark: {} examples of {} (mean {mean_len:.1} word pieces, longest {longest}, \
             max_len {MAX_LEN}), {} + cls head, batch {BATCH_SIZE}, backend flex, {} cores",
            train.len(),
            data.display(),
            model_dir.display(),
            num_cpus::get()
        );
    }
    let scratch = std::env::temp_dir().join(format!("pipe-bench-epoch-{}", std::process::id()));
    let mut arms = Vec::new();
    for (name, bucketing) in [("bucketed", true), ("padded", false)] {
        let device = train_device(&Device::flex());
        let (model, _) = classifier(Some(model_dir), num_labels, &device)?;
        let objective = ClassificationObjective::new(&train, tokenizer.pad_id());
        let record = one_epoch(model, &objective, bucketing, &device, &scratch.join(name))?;
        let arm = EpochFigures {
            seconds: record.seconds,
            seq_per_s: record.seq_per_s,
            train_loss: record.train_loss,
        };
        if !json {
            println!(
                "{name:<9} {:>8.1} s  {:>6.1} seq/s  (loss {:.4})",
                arm.seconds, arm.seq_per_s, arm.train_loss
            );
        }
        arms.push(arm);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let speedup = arms[1].seconds / arms[0].seconds;
    if json {
        let figures = serde_json::json!({
            "backend": "flex",
            "examples": train.len(),
            "batch": BATCH_SIZE,
            "max_len": MAX_LEN,
            "mean_len": mean_len,
            "bucketed_seconds": arms[0].seconds,
            "bucketed_seq_per_s": arms[0].seq_per_s,
            "padded_seconds": arms[1].seconds,
            "padded_seq_per_s": arms[1].seq_per_s,
            "speedup": speedup,
        });
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!("bucketing is {speedup:.2}x faster than fixed padding to {longest}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A/B timings of the fused kernels against their reference forms, interleaved in one
/// process so that load from other processes falls on both arms alike. Figures, not
/// assertions: run with
/// `cargo test --release --lib cli::bench_train -- --ignored --nocapture --test-threads 1`.
#[cfg(test)]
mod ab {
    use super::*;
    use crate::model::fused;
    use crate::train::fit::adamw;
    use burn::tensor::Distribution;

    /// Repetitions of each arm (`PIPE_AB_REPS`, default 5).
    fn reps() -> usize {
        std::env::var("PIPE_AB_REPS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(5)
    }

    fn load() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    /// Times `run` alternately with fused kernels and with reference forms; prints medians.
    fn ab(name: &str, reps: usize, mut run: impl FnMut()) {
        run();
        fused::with_reference_kernels(&mut run);
        let (mut fused_s, mut reference_s) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let start = Instant::now();
            run();
            fused_s.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            fused::with_reference_kernels(&mut run);
            reference_s.push(start.elapsed().as_secs_f64());
        }
        let (f, r) = (median(fused_s), median(reference_s));
        println!(
            "{name:<34} reference {:>9.2} ms  fused {:>9.2} ms  speed-up {:.2}x  (load {})",
            r * 1e3,
            f * 1e3,
            r / f,
            load()
        );
    }

    #[test]
    #[ignore = "benchmark: prints timings"]
    fn fused_ops_at_minilm_shapes() {
        let device = Device::flex();
        let ad = train_device(&device);
        let reps = reps() * 4;
        let (b, h, t, d, ff) = (32, 12, 128, 384, 1536);
        let lengths: Vec<usize> = (0..b).map(|i| 40 + (i * 11) % 89).collect();
        let bias: Vec<f32> = lengths
            .iter()
            .flat_map(|&len| (0..t).map(move |i| if i < len { 0.0 } else { -1.0e4 }))
            .collect();
        let mask = |dev: &Device| {
            Tensor::<4>::from_data(TensorData::new(bias.clone(), [b, 1, 1, t]), dev)
                .repeat_dim(2, t)
        };
        let normal = |shape: [usize; 3], dev: &Device| {
            Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), dev)
        };
        let scores = Tensor::<4>::random([b, h, t, t], Distribution::Normal(0.0, 2.0), &device);
        let ln = burn::nn::LayerNormConfig::new(d)
            .with_epsilon(1e-12)
            .init(&device);
        let ln_ad = burn::nn::LayerNormConfig::new(d)
            .with_epsilon(1e-12)
            .init(&ad);

        let x = normal([b, t, ff], &device);
        ab("gelu forward [32,128,1536]", reps, || {
            let _ = fused::gelu(x.clone()).into_data();
        });
        let x_ad = normal([b, t, ff], &ad).require_grad();
        ab("gelu fwd+bwd (autodiff)", reps, || {
            let _ = fused::gelu(x_ad.clone()).sum().backward();
        });
        let m = mask(&device);
        ab("masked softmax forward [32,12,128²]", reps, || {
            let _ = fused::masked_softmax(scores.clone(), m.clone()).into_data();
        });
        let s_ad = Tensor::<4>::from_data(scores.to_data(), &ad).require_grad();
        let m_ad = mask(&ad);
        let w_ad = Tensor::<4>::random([b, h, t, t], Distribution::Default, &ad);
        ab("masked softmax fwd+bwd (autodiff)", reps, || {
            let p = fused::masked_softmax(s_ad.clone(), m_ad.clone());
            let _ = (p * w_ad.clone()).sum().backward();
        });
        for t in [t, t / 2] {
            let [q, k, v] = [0, 1, 2].map(|_| normal([b, t, d], &device));
            let m = mask(&device).slice([0..b, 0..1, 0..1, 0..t]);
            ab(
                &format!("attention forward [32,{t},384] h=12"),
                reps,
                || {
                    let _ =
                        fused::attention(q.clone(), k.clone(), v.clone(), m.clone(), h).into_data();
                },
            );
        }
        // the SLL heads' LSTM (hidden 768, as the finetune default) over [32, 64, 384]
        let lstm = crate::model::heads::Lstm::new(d, 768, &ad);
        let x_lstm = normal([b, t / 2, d], &ad).require_grad();
        ab("lstm fwd+bwd [32,64,384] -> 768", reps, || {
            let _ = lstm.forward(x_lstm.clone()).sum().backward();
        });
        let hidden = normal([b, t, d], &device);
        ab("layer norm forward [32,128,384]", reps, || {
            let _ = fused::layer_norm(&ln, 1e-12, hidden.clone()).into_data();
        });
        let hidden_ad = normal([b, t, d], &ad).require_grad();
        let w3 = normal([b, t, d], &ad);
        ab("layer norm fwd+bwd (autodiff)", reps, || {
            let y = fused::layer_norm(&ln_ad, 1e-12, hidden_ad.clone());
            let _ = (y * w3.clone()).sum().backward();
        });
    }

    #[test]
    #[ignore = "benchmark: prints timings"]
    fn training_step_and_inference() {
        let device = Device::flex();
        let train_dev = train_device(&device);
        let reps = reps();
        for (batch_size, seq_len) in SHAPES {
            let (mut model, config) = classifier(None, NUM_LABELS, &train_dev).unwrap();
            let instances = synthetic_instances(batch_size, seq_len, config.vocab_size);
            let refs: Vec<&EncodedInstance> = instances.iter().collect();
            let mut optimizer = adamw(&model, WEIGHT_DECAY);
            let batch = Batch::new(&refs, config.pad_token_id, &train_dev);
            let mut step = 0u64;
            ab(&format!("train step {batch_size}x{seq_len}"), reps, || {
                let taken = model.clone();
                let out = with_backend_seed(&train_dev, step, || taken.forward(&batch)).unwrap();
                let loss = cross_entropy(out.logits, batch.labels.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &taken);
                let (grads, _) = crate::train::clipping::clip_global_norm(&taken, grads, GRAD_CLIP);
                model = optimizer.step(LR, taken, grads);
                step += 1;
            });
            let valid = model.valid();
            let batch = Batch::new(&refs, config.pad_token_id, &device);
            ab(&format!("inference {batch_size}x{seq_len}"), reps, || {
                let out = valid.forward(&batch).unwrap();
                let _ = out.logits.into_data();
            });
        }
    }
}

#[cfg(test)]
mod tsv_tests {
    use super::read_tsv;

    #[test]
    fn reads_label_last_and_skips_a_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chemprot = dir.path().join("c.tsv");
        std::fs::write(&chemprot, "a @GENE$ b\tCPR:3\nc d\tfalse\n\ne f\tCPR:3\n").expect("w");
        let (texts, gold, n) = read_tsv(&chemprot, None).expect("reads");
        assert_eq!(texts, ["a @GENE$ b", "c d", "e f"]);
        assert_eq!((gold, n), (vec![0, 1, 0], 2));
        let ddi = dir.path().join("d.tsv");
        std::fs::write(
            &ddi,
            "pair_id\tsentence\tlabel\np0\tx y\tDDI-false\np1\tz\tDDI-int\n",
        )
        .expect("w");
        let (texts, gold, _) = read_tsv(&ddi, Some(1)).expect("reads");
        assert_eq!((texts, gold), (vec!["x y".to_string()], vec![0]));
        let bad = dir.path().join("b.tsv");
        std::fs::write(&bad, "no tab here\n").expect("w");
        let e = read_tsv(&bad, None).expect_err("refused").to_string();
        assert!(e.contains("b.tsv:1"), "{e}");
    }
}

#[cfg(test)]
mod shape_tests {
    #[test]
    fn shapes_are_batch_by_length_pairs() {
        assert_eq!(
            super::parse_shapes("32x128, 8x64").unwrap(),
            vec![(32, 128), (8, 64)]
        );
        for bad in ["32", "32x", "0x128", "32x128,", "axb"] {
            let err = super::parse_shapes(bad).unwrap_err().to_string();
            assert!(err.contains("is not BATCHxSEQ"), "{bad}: {err}");
        }
    }
}
