//! Training and applying one probing classifier `P^l` on fixed encoder states: AdamW with
//! linear warm-up and decay and global-norm clipping, as fine-tuning (the encoder is not
//! trained at all: only `α_l`, `γ_l` and the MLP are parameters).
//!
//! Every `P^l` of a run starts from the same MLP weights (same seed; `α` starts uniform,
//! `γ = 1`) and sees the same batches, so `Δ^l = F1(P^l) − F1(P^{l−1})` reflects the
//! extra layer rather than the luck of an initialization.

use std::sync::atomic::Ordering;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};

use super::classifier::{ProbeClassifier, ProbeConfig};
use super::features::LayerStates;
use super::ProbeEnv;
use crate::train::batching::shuffled_batches;
use crate::train::classifier::{cross_entropy, initialize_params};
use crate::train::clipping::clip_global_norm;
use crate::train::fit::adamw;
use crate::train::rng::{with_backend_seed, SplitMix64};
use crate::train::schedule::LinearWarmupDecay;
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

/// Trains `P^l` (`config.layers = l + 1`) on `states` with gold `labels`; `env.device`
/// must have autodiff. The progress bar advances by one per update. The scalar mix (`α`,
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
    if settings.batch_size == 0 || settings.epochs == 0 {
        return Err(TrainError::Invalid(
            "batch_size and epochs must be positive".into(),
        ));
    }
    let top = config.layers - 1;
    let init_seed = SplitMix64::stream(settings.seed, INIT_STREAM).next_u64();
    let mut model = with_backend_seed(env.device, init_seed, || {
        let model = config.init(env.device);
        initialize_params(&model);
        model
    });
    let mut optimizer = adamw(&model, settings.weight_decay);
    let mut mix_optimizer = adamw(&model.mix, 0.0);
    let mix_ids = [model.mix.alpha.id, model.mix.gamma.id];
    let steps_per_epoch = states.len().div_ceil(settings.batch_size);
    let schedule = LinearWarmupDecay::new(
        settings.lr,
        settings.warmup,
        steps_per_epoch * settings.epochs,
    );
    let mut rng = SplitMix64::stream(settings.seed, SHUFFLE_STREAM);
    let mut step = 0;
    let mut epoch_losses = Vec::with_capacity(settings.epochs);
    let start = Instant::now();
    for epoch in 1..=settings.epochs {
        let mut loss_sum: Option<Tensor<1>> = None;
        let batches = shuffled_batches(states.len(), settings.batch_size, &mut rng);
        for indices in &batches {
            if env.cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Interrupted);
            }
            let h = states.batch(indices, top, env.device);
            let gold = label_tensor(indices, labels, env.device);
            let loss = cross_entropy(model.forward(h), gold);
            let detached = loss.clone().inner();
            loss_sum = Some(match loss_sum.take() {
                Some(sum) => sum + detached,
                None => detached,
            });
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let (mut grads, _) = clip_global_norm(&model, grads, settings.grad_clip);
            let mut mix_grads = GradientsParams::new();
            for id in mix_ids {
                if let Some(g) = grads.remove::<1>(id) {
                    mix_grads.register(id, g);
                }
            }
            let lr = schedule.lr(step);
            model = optimizer.step(lr, model, grads);
            model.mix = mix_optimizer.step(lr * mix_lr / settings.lr, model.mix, mix_grads);
            step += 1;
            env.progress.inc(1);
        }
        let mean = loss_sum.map_or(f64::NAN, |sum| {
            f64::from(sum.into_scalar::<f32>()) / batches.len() as f64
        });
        env.progress.set_message(format!(
            "P^{top}  epoch {epoch}/{}  loss {mean:.4}",
            settings.epochs
        ));
        epoch_losses.push(mean);
    }
    Ok(FittedProbe {
        model,
        epoch_losses,
        seconds: start.elapsed().as_secs_f64(),
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

fn label_tensor(
    indices: &[usize],
    labels: &[usize],
    device: &burn::tensor::Device,
) -> Tensor<1, Int> {
    let gold: Vec<i64> = indices.iter().map(|&i| labels[i] as i64).collect();
    Tensor::from_data(TensorData::new(gold, [indices.len()]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use std::sync::atomic::AtomicBool;

    use burn::tensor::Device;

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
