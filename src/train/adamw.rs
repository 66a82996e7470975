//! AdamW (Loshchilov & Hutter 2019, Algorithm 2) as burn's `AdamW` computes it, with the
//! update of each parameter fused into one pass on the CPU backend
//! ([`crate::model::fused::adamw`]): burn's form is a chain of about fifteen tensor ops per
//! parameter, each a pass over memory, which at small batches took a third of a MiniLM step.
//! Elsewhere (a GPU) the step is burn's own.
//!
//! The state is burn's `AdamWState`, so `optimizer.bpk` checkpoints are the same files, and
//! the fused update is bit-identical to burn's (tests below hold it to that).

use burn::optim::{AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

use crate::model::fused::{self, AdamWScalars};

/// β₁ and β₂: burn's and BERT's defaults.
const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.999;

/// AdamW with decoupled weight decay λ and stability term ε.
#[derive(Clone)]
pub struct FusedAdamW {
    weight_decay: f32,
    epsilon: f32,
    /// burn's optimizer with the same settings, for tensors the fused kernel does not take.
    reference: AdamW,
}

impl FusedAdamW {
    pub fn new(weight_decay: f32, epsilon: f32) -> Self {
        let reference = AdamWConfig::new()
            .with_beta_1(BETA_1)
            .with_beta_2(BETA_2)
            .with_weight_decay(weight_decay)
            .with_epsilon(epsilon)
            .build();
        FusedAdamW {
            weight_decay,
            epsilon,
            reference,
        }
    }

    /// The scalars of update t, converted to f32 where burn's tensor ops convert them.
    fn scalars(&self, lr: LearningRate, t: usize) -> AdamWScalars {
        let decay_rate = lr * self.weight_decay as f64;
        let t = t as i32;
        AdamWScalars {
            beta_1: BETA_1,
            one_minus_beta_1: 1.0 - BETA_1,
            beta_2: BETA_2,
            one_minus_beta_2: 1.0 - BETA_2,
            correction_1: 1f32 - BETA_1.powi(t),
            correction_2: 1f32 - BETA_2.powi(t),
            epsilon: self.epsilon,
            decay_keep: (decay_rate != 0.0).then_some((1.0 - decay_rate) as f32),
            lr: lr as f32,
            first: t == 1,
        }
    }
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        // burn's AdamW counts t from 1 and keeps no max of v here (no AMSGrad)
        let (t, moments) = match state {
            Some(s) if s.momentum.max_moment_2.is_none() => (
                s.momentum.time + 1,
                Some((s.momentum.moment_1, s.momentum.moment_2)),
            ),
            Some(s) => return self.reference.step(lr, tensor, grad, Some(s)),
            None => (1, None),
        };
        match fused::adamw(tensor, grad, moments, self.scalars(lr, t)) {
            Ok((theta, m, v)) => {
                let momentum = AdaptiveMomentumState::new(t, m, v);
                (theta, Some(AdamWState::new(momentum)))
            }
            Err((tensor, grad, moments)) => {
                let state =
                    moments.map(|(m, v)| AdamWState::new(AdaptiveMomentumState::new(t - 1, m, v)));
                self.reference.step(lr, tensor, grad, state)
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdamW::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    fn bits<const D: usize>(x: &Tensor<D>) -> Vec<u32> {
        x.to_data()
            .try_into_vec::<f32>()
            .unwrap_or_else(|e| panic!("{e:?}"))
            .into_iter()
            .map(f32::to_bits)
            .collect()
    }

    /// Runs `steps` updates with burn's AdamW and with the fused one from the same θ and
    /// gradients (a few exact zeros and negative zeros among them) and compares every bit
    /// of θ, m and v after each.
    fn same_as_burn(weight_decay: f32, steps: usize) {
        let device = Device::flex();
        let fused = FusedAdamW::new(weight_decay, 1e-6);
        let burn = fused.reference.clone();
        let shape = [37, 53];
        let mut theta = Tensor::<2>::random(shape, Distribution::Normal(0.0, 0.05), &device);
        let mut theta_burn = theta.clone();
        let (mut state, mut state_burn) = (None, None);
        // the fused kernel takes these tensors (else both sides would be burn's)
        let probe = Tensor::<2>::zeros(shape, &device);
        let taken = fused::adamw(theta.clone(), probe, None, fused.scalars(1e-3, 1));
        assert!(taken.is_ok(), "the fused AdamW declined flex f32 tensors");
        for step in 0..steps {
            let mut g: Vec<f32> =
                Tensor::<2>::random(shape, Distribution::Normal(0.0, 1e-3), &device)
                    .into_data()
                    .try_into_vec()
                    .unwrap_or_else(|e| panic!("{e:?}"));
            g[step] = 0.0;
            g[step + 1] = -0.0;
            let grad = Tensor::<2>::from_data(TensorData::new(g, shape), &device);
            let lr = 2e-5 * (1.0 + step as f64);
            (theta, state) = fused.step(lr, theta, grad.clone(), state);
            (theta_burn, state_burn) = burn.step(lr, theta_burn, grad, state_burn);
            let (s, b) = (
                state.as_ref().map(|s| &s.momentum),
                state_burn.as_ref().map(|s| &s.momentum),
            );
            let (s, b) = (s.expect("a state"), b.expect("a state"));
            assert_eq!(s.time, b.time, "t at step {step}");
            assert_eq!(bits(&theta), bits(&theta_burn), "θ at step {step}");
            assert_eq!(bits(&s.moment_1), bits(&b.moment_1), "m at step {step}");
            assert_eq!(bits(&s.moment_2), bits(&b.moment_2), "v at step {step}");
        }
    }

    #[test]
    fn fused_update_is_bit_identical_to_burns_adamw() {
        same_as_burn(0.01, 5);
    }

    #[test]
    fn fused_update_without_weight_decay_is_bit_identical_too() {
        same_as_burn(0.0, 3);
    }

    #[test]
    fn the_reference_kernels_switch_gives_burns_step() {
        let device = Device::flex();
        let fused = FusedAdamW::new(0.01, 1e-6);
        let theta = Tensor::<1>::random([64], Distribution::Default, &device);
        let grad = Tensor::<1>::random([64], Distribution::Default, &device);
        let (a, _) = fused.step(1e-3, theta.clone(), grad.clone(), None);
        let (b, _) = fused::with_reference_kernels(|| fused.step(1e-3, theta, grad, None));
        assert_eq!(bits(&a), bits(&b));
    }
}
