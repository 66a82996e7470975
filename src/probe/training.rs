//! Training and applying one probing classifier `P^l` on fixed encoder states, an
//! [`Objective`] of the shared loop ([`crate::train::fit`]): AdamW with linear warm-up and
//! decay and global-norm clipping, as fine-tuning (the encoder is not trained at all: only
//! `α_l`, `γ_l` and the MLP are parameters). A probe trains in seconds to minutes, and its
//! stage keeps each trained `P^l`: it writes no checkpoints of its own.
//!
//! Every `P^l` of a run starts from the same MLP weights (same seed; `α` starts uniform,
//! `γ = 1`) and sees the same batches, so `Δ^l = F1(P^l) − F1(P^{l−1})` reflects the
//! extra layer rather than the luck of an initialization.

use std::path::Path;
use std::sync::atomic::Ordering;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::classifier::{ProbeClassifier, ProbeConfig};
use super::features::LayerStates;
use super::ProbeEnv;
use crate::train::batching::shuffled_batches;
use crate::train::classifier::{cross_entropy, initialize_params};
use crate::train::fit::{fit, Checkpoints, FitEnv, Objective};
use crate::train::layer_decay::ParamRates;
use crate::train::rng::{with_backend_seed, SplitMix64};
use crate::train::{TrainError, TrainSettings};

/// Generator streams of a probe run.
const INIT_STREAM: u64 = 0;
const SHUFFLE_STREAM: u64 = 1;

/// A trained probe and its mean training loss per epoch.
pub struct FittedProbe {
    pub model: ProbeClassifier,
    pub epoch_losses: Vec<f64>,
    /// Training time.
    pub seconds: f64,
}

/// Cross-entropy of `P^l` on the gold labels of its instances' states; the scalar mix
/// learns at `mix_rate` times the MLP's rate.
struct ProbeObjective<'a> {
    states: &'a LayerStates,
    labels: &'a [usize],
    /// l: the probe mixes layers 0..=l.
    top: usize,
    /// Every instance is read as `max_len` states.
    lengths: Vec<usize>,
    mix_rate: f64,
}

impl Objective for ProbeObjective<'_> {
    type Model = ProbeClassifier;
    const SHUFFLE_STREAM: u64 = SHUFFLE_STREAM;

    fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// Shuffled batches: every instance has the same (padded) size.
    fn epoch_batches(&self, settings: &TrainSettings, rng: &mut SplitMix64) -> Vec<Vec<usize>> {
        shuffled_batches(self.states.len(), settings.batch_size, rng)
    }

    fn batch_loss(
        &self,
        model: &ProbeClassifier,
        batch: &[usize],
        _pad_to: usize,
        device: &Device,
    ) -> Result<Vec<Tensor<1>>, TrainError> {
        let h = self.states.batch(batch, self.top, device);
        let gold = label_tensor(batch, self.labels, device);
        Ok(vec![cross_entropy(model.forward(h), gold)])
    }

    fn param_rates(&self, model: &ProbeClassifier) -> ParamRates {
        ParamRates::default().with_group(&model.mix, self.mix_rate)
    }
}

/// Trains `P^l` (`config.layers = l + 1`) on `states` with gold `labels`; `env.device`
/// must have autodiff. The progress bar counts the probe's updates. The scalar mix (`α`,
/// `γ`) learns at `mix_lr` (through the same warm-up and decay, without weight decay), the
/// MLP at `settings.lr`: with few updates a mix at the MLP's small rate stays uniform.
pub fn fit_probe(
    config: &ProbeConfig,
    states: &LayerStates,
    labels: &[usize],
    settings: &TrainSettings,
    mix_lr: f64,
    env: &ProbeEnv,
) -> Result<FittedProbe, TrainError> {
    if states.is_empty() || states.len() != labels.len() {
        return Err(TrainError::Invalid(format!(
            "{} instances but {} labels",
            states.len(),
            labels.len()
        )));
    }
    if config.layers == 0 || config.layers > states.num_states() {
        return Err(TrainError::Invalid(format!(
            "a probe over {} layers of an encoder with {} states",
            config.layers,
            states.num_states()
        )));
    }
    let init_seed = SplitMix64::stream(settings.seed, INIT_STREAM).next_u64();
    let model = with_backend_seed(env.device, init_seed, || {
        let model = config.init(env.device);
        initialize_params(&model);
        model
    });
    let objective = ProbeObjective {
        states,
        labels,
        top: config.layers - 1,
        lengths: vec![states.max_len(); states.len()],
        mix_rate: mix_lr / settings.lr,
    };
    // no checkpoints: the caller keeps the trained probe
    let settings = TrainSettings {
        checkpoints: Checkpoints::Never,
        ..settings.clone()
    };
    let fit_env = FitEnv {
        device: env.device,
        checkpoint_dir: Path::new(""),
        progress: env.progress,
        cancel: env.cancel,
    };
    let fitted = fit(model, &objective, &settings, &fit_env, |_, _| Ok(()))?;
    Ok(FittedProbe {
        model: fitted.model,
        epoch_losses: fitted.history.iter().map(|r| r.train_loss).collect(),
        seconds: fitted.history.iter().map(|r| r.seconds).sum(),
    })
}

/// Arg-max class of every instance, in order; `model` in inference mode (`valid()`) on
/// `env.device`.
pub fn predict_probe(
    model: &ProbeClassifier,
    states: &LayerStates,
    batch_size: usize,
    env: &ProbeEnv,
) -> Result<Vec<usize>, TrainError> {
    let top = model.mix.layers() - 1;
    let all: Vec<usize> = (0..states.len()).collect();
    let mut out = Vec::with_capacity(states.len());
    for indices in all.chunks(batch_size.max(1)) {
        if env.cancel.load(Ordering::Relaxed) {
            return Err(TrainError::Interrupted);
        }
        let logits = model.forward(states.batch(indices, top, env.device));
        let labels = logits
            .argmax(1)
            .into_data()
            .try_into_vec_as::<i64>()
            .map_err(|e| TrainError::Invalid(format!("reading predictions: {e:?}")))?;
        out.extend(labels.into_iter().map(|l| l as usize));
    }
    Ok(out)
}

/// `α_l` and `γ_l` of a trained probe.
pub fn mix_weights(model: &ProbeClassifier) -> Result<(Vec<f32>, f32), TrainError> {
    let read = |t: Tensor<1>| {
        t.into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| TrainError::Invalid(format!("reading the scalar mix: {e:?}")))
    };
    let alpha = read(model.mix.weights())?;
    let gamma = read(model.mix.gamma.val())?;
    Ok((alpha, gamma.first().copied().unwrap_or(f32::NAN)))
}

fn label_tensor(indices: &[usize], labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let gold: Vec<i64> = indices.iter().map(|&i| labels[i] as i64).collect();
    Tensor::from_data(TensorData::new(gold, [indices.len()]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use std::sync::atomic::AtomicBool;

    use crate::model::device::train_device;
    use crate::probe::features::InstanceStates;
    use crate::stages::Progress;

    /// 3 layers × 3 tokens × width 4 of uniform noise, except that layer 2 carries the
    /// label at token 1, unit 0 (±2).
    fn states_with_the_label_in_layer_2(n: usize) -> (LayerStates, Vec<usize>) {
        let (layers, len, d) = (3, 3, 4);
        let mut rng = SplitMix64::new(17);
        let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let instances = labels
            .iter()
            .map(|&y| {
                let mut values: Vec<f32> = (0..layers * len * d)
                    .map(|_| rng.below(2001) as f32 / 1000.0 - 1.0)
                    .collect();
                values[(2 * len + 1) * d] = if y == 1 { 2.0 } else { -2.0 };
                InstanceStates { len, values }
            })
            .collect();
        let states = LayerStates::new(layers, d, 4, instances).unwrap_or_else(|e| panic!("{e}"));
        (states, labels)
    }

    #[test]
    fn the_mix_learns_which_layer_holds_the_label() {
        let device = Device::default();
        let train_dev = train_device(&device);
        let (progress, cancel) = (Progress::hidden(), AtomicBool::new(false));
        let env = ProbeEnv {
            device: &device,
            progress: &progress,
            cancel: &cancel,
        };
        let train_env = ProbeEnv {
            device: &train_dev,
            ..env
        };
        let (states, labels) = states_with_the_label_in_layer_2(64);
        let config = ProbeConfig {
            layers: 3,
            max_len: 4,
            hidden_size: 4,
            mlp_hidden: 16,
            num_labels: 2,
        };
        let settings = TrainSettings {
            lr: 1e-2,
            epochs: 30,
            batch_size: 16,
            warmup: 0.0,
            weight_decay: 0.0,
            grad_clip: 0.0,
            seed: 3,
            bucketing: false,
            layer_decay: 1.0,
            grad_accum: 1,
            checkpoints: Checkpoints::Never,
            record_updates: false,
            precision: crate::model::Precision::F32,
            frozen_encoder_updates: 0,
        };
        let fitted = fit_probe(&config, &states, &labels, &settings, 1e-2, &train_env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fitted.epoch_losses.len(), 30);
        let (first, last) = (fitted.epoch_losses[0], fitted.epoch_losses[29]);
        assert!(last < 0.5 * first, "loss {first} -> {last}");
        let valid = fitted.model.valid();
        let pred = predict_probe(&valid, &states, 7, &env).unwrap_or_else(|e| panic!("{e}"));
        let correct = pred.iter().zip(&labels).filter(|(p, y)| p == y).count();
        assert!(correct >= 60, "{correct}/64 training instances right");
        let (alpha, gamma) = mix_weights(&valid).unwrap_or_else(|e| panic!("{e}"));
        assert!((alpha.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(
            alpha[2] > alpha[0] && alpha[2] > alpha[1],
            "α {alpha:?} should favour layer 2"
        );
        assert!(gamma.is_finite());

        // the same seed gives the same probe
        let again = fit_probe(&config, &states, &labels, &settings, 1e-2, &train_env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.epoch_losses, fitted.epoch_losses);

        // the mix has its own rate: at 0 it stays the plain mean while the MLP learns
        let frozen_mix = fit_probe(&config, &states, &labels, &settings, 0.0, &train_env)
            .unwrap_or_else(|e| panic!("{e}"));
        let (alpha, gamma) =
            mix_weights(&frozen_mix.model.valid()).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            alpha.iter().all(|a| (a - 1.0 / 3.0).abs() < 1e-6),
            "{alpha:?}"
        );
        assert!((gamma - 1.0).abs() < 1e-6, "γ {gamma}");
        let losses = &frozen_mix.epoch_losses;
        assert!(losses[29] < losses[0], "{losses:?}");
    }
}
