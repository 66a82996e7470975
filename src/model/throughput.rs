//! Encoder throughput on synthetic batches of a fixed shape: inference (one forward pass)
//! and training (forward, backward through every layer, one AdamW update).
//!
//! The training loss is mean(H_L²), a stand-in for a head's loss: it makes backward run
//! through the whole encoder, which is what dominates a fine-tuning step.

use std::path::Path;
use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::bert::{BertConfig, BertModel};
use super::ModelError;

/// Shape and length of a throughput run.
#[derive(Debug, Clone, Copy)]
pub struct ThroughputSettings {
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence (no padding).
    pub seq_len: usize,
    /// Timed steps (the median is reported).
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
}

impl Default for ThroughputSettings {
    /// Batch 32 × 128 tokens, 5 timed steps after 1 warm-up step.
    fn default() -> Self {
        ThroughputSettings {
            batch: 32,
            seq_len: 128,
            steps: 5,
            warmup: 1,
        }
    }
}

/// Timings of one mode.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    /// `inference` or `train`.
    pub mode: &'static str,
    /// Median seconds per step.
    pub median_step_s: f64,
    /// Sequences per second at the median step time.
    pub sequences_per_s: f64,
    /// Every timed step, in seconds.
    pub step_s: Vec<f64>,
}

impl Throughput {
    fn from_times(mode: &'static str, mut step_s: Vec<f64>, batch: usize) -> Self {
        let mut sorted = step_s.clone();
        sorted.sort_by(f64::total_cmp);
        let median_step_s = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
        step_s.shrink_to_fit();
        Throughput {
            mode,
            median_step_s,
            sequences_per_s: batch as f64 / median_step_s,
            step_s,
        }
    }
}

/// A full batch of deterministic pseudo-random ids in `[1000, vocab)` (or `[1, vocab)` for
/// small vocabularies) with `[CLS]`-like id first; no padding.
fn synthetic_ids(config: &BertConfig, s: ThroughputSettings, device: &Device) -> Tensor<2, Int> {
    let low = if config.vocab_size > 2000 { 1000 } else { 1 };
    let span = (config.vocab_size - low).max(1) as u64;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let ids: Vec<i64> = (0..s.batch * s.seq_len)
        .map(|_| {
            // xorshift64*: reproducible without a RNG dependency.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (low as u64 + state.wrapping_mul(0x2545_F491_4F6C_DD1D) % span) as i64
        })
        .collect();
    Tensor::from_data(TensorData::new(ids, [s.batch, s.seq_len]), device)
}

fn check(config: &BertConfig, s: ThroughputSettings) -> Result<(), ModelError> {
    if s.batch == 0 || s.seq_len == 0 || s.steps == 0 {
        return Err(ModelError::Invalid(
            "throughput: batch, seq_len and steps must be positive".into(),
        ));
    }
    if s.seq_len > config.max_position_embeddings {
        return Err(ModelError::Invalid(format!(
            "throughput: seq_len {} exceeds max_position_embeddings {}",
            s.seq_len, config.max_position_embeddings
        )));
    }
    Ok(())
}

fn load(
    model_dir: Option<&Path>,
    config: &BertConfig,
    device: &Device,
) -> Result<BertModel, ModelError> {
    match model_dir {
        Some(dir) => Ok(BertModel::load(dir, device)?.0),
        None => Ok(BertModel::new(config, device)),
    }
}

/// Times inference and training steps of the encoder in `model_dir` (or, without one, a
/// random encoder of `config`) on `device` (a plain device; training runs on its autodiff
/// twin).
pub fn bench_throughput(
    model_dir: Option<&Path>,
    config: &BertConfig,
    device: &Device,
    settings: ThroughputSettings,
) -> Result<Vec<Throughput>, ModelError> {
    crate::allocator::tune_for_training(); // the allocator as training runs with it
    let config = match model_dir {
        Some(dir) => BertConfig::from_file(&dir.join("config.json"))?,
        None => config.clone(),
    };
    check(&config, settings)?;
    let read = |e: burn::tensor::DataError| ModelError::Invalid(format!("{e:?}"));

    let inference = {
        let model = load(model_dir, &config, device)?;
        let ids = synthetic_ids(&config, settings, device);
        let mask = Tensor::<2, Int>::ones([settings.batch, settings.seq_len], device);
        let mut times = Vec::with_capacity(settings.steps);
        for step in 0..settings.warmup + settings.steps {
            let start = Instant::now();
            let out = model.forward(ids.clone(), mask.clone(), false);
            out.last_hidden_state
                .into_data()
                .try_into_vec::<f32>()
                .map_err(read)?;
            if step >= settings.warmup {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        Throughput::from_times("inference", times, settings.batch)
    };

    let train = {
        let train_device = device.clone().autodiff();
        let mut model = load(model_dir, &config, &train_device)?;
        let mut optimizer = AdamWConfig::new().init();
        let ids = synthetic_ids(&config, settings, &train_device);
        let mask = Tensor::<2, Int>::ones([settings.batch, settings.seq_len], &train_device);
        let mut times = Vec::with_capacity(settings.steps);
        for step in 0..settings.warmup + settings.steps {
            let start = Instant::now();
            let out = model.forward(ids.clone(), mask.clone(), false);
            let loss = out.last_hidden_state.powf_scalar(2.0).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(2e-5, model, grads);
            // Wait for the update to be materialised before stopping the clock.
            let probe = model.embeddings.layer_norm.gamma.val();
            probe.into_data().try_into_vec::<f32>().map_err(read)?;
            if step >= settings.warmup {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        Throughput::from_times("train", times, settings.batch)
    };
    Ok(vec![inference, train])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_encoder_reports_positive_throughput() {
        let settings = ThroughputSettings {
            batch: 2,
            seq_len: 8,
            steps: 2,
            warmup: 0,
        };
        let report = bench_throughput(None, &BertConfig::tiny(60), &Device::flex(), settings)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.len(), 2);
        for mode in &report {
            assert_eq!(mode.step_s.len(), 2);
            assert!(mode.median_step_s > 0.0 && mode.sequences_per_s.is_finite());
        }
        let bad = ThroughputSettings {
            seq_len: 10_000,
            ..settings
        };
        assert!(bench_throughput(None, &BertConfig::tiny(60), &Device::flex(), bad).is_err());
    }
}
