//! Gradient clipping by the global norm over all parameters (as `clip_grad_norm_` and
//! BERT's `clip_by_global_norm`): `g ← g · min(1, c / ‖g‖)`, with `‖g‖` the L2 norm of the
//! concatenation of every parameter's gradient. burn's own clipping is per parameter.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// Added to the norm before dividing (as PyTorch).
pub(super) const NORM_EPS: f64 = 1e-6;

/// Scales `grads` so that their global L2 norm is at most `max_norm`; returns them with the
/// norm before clipping (a 1-element tensor; reading it forces a sync, so callers that only
/// clip need not). `max_norm <= 0` disables clipping.
pub fn clip_global_norm<M: Module>(
    model: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, Option<Tensor<1>>) {
    let mut squares = SquaredNorm {
        grads: &grads,
        total: None,
    };
    model.visit(&mut squares);
    let Some(total) = squares.total else {
        return (grads, None);
    };
    let norm = total.sqrt();
    if max_norm <= 0.0 {
        return (grads, Some(norm));
    }
    // min(1, c / (‖g‖ + ε))
    let scale = norm
        .clone()
        .add_scalar(NORM_EPS)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0);
    let mut scaler = Scale { grads, scale };
    model.visit(&mut scaler);
    (scaler.grads, Some(norm))
}

/// Multiplies every gradient by `factor` (f16 training divides out its loss scale so).
pub fn scale_grads<M: Module>(model: &M, grads: GradientsParams, factor: f64) -> GradientsParams {
    struct ByFactor {
        grads: GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for ByFactor {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads
                    .register::<D>(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut by = ByFactor { grads, factor };
    model.visit(&mut by);
    by.grads
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct Scale {
    grads: GradientsParams,
    scale: Tensor<1>,
}

impl ModuleVisitor for Scale {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let id: ParamId = param.id;
        if let Some(g) = self.grads.remove::<D>(id) {
            let scale: Tensor<D> = self.scale.clone().reshape([1; D]);
            self.grads.register::<D>(id, g * scale);
        }
    }
}

/// Ids of the parameters that get no weight decay: the 1-D ones (biases and LayerNorm
/// scales/shifts), as in BERT's optimizer.
pub fn no_decay_params<M: Module>(model: &M) -> Vec<ParamId> {
    struct OneDimensional(Vec<ParamId>);
    impl ModuleVisitor for OneDimensional {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D == 1 {
                self.0.push(param.id);
            }
        }
    }
    let mut found = OneDimensional(Vec::new());
    model.visit(&mut found);
    found.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    fn grads_of(layer: &Linear, scale: f32) -> GradientsParams {
        let device = layer.weight.val().device();
        let x = Tensor::<2>::ones([2, 3], &device).mul_scalar(scale);
        let loss = layer.forward(x).sum();
        GradientsParams::from_grads(loss.backward(), layer)
    }

    fn global_norm(layer: &Linear, grads: &GradientsParams) -> f32 {
        let weight: f32 = grads
            .get::<2>(layer.weight.id)
            .map_or(0.0, |g| g.square().sum().into_scalar());
        let bias: f32 = layer
            .bias
            .as_ref()
            .and_then(|b| grads.get::<1>(b.id))
            .map_or(0.0, |g| g.square().sum().into_scalar());
        (weight + bias).sqrt()
    }

    #[test]
    fn clips_the_global_norm_and_keeps_small_gradients() {
        let device = Device::default().autodiff();
        let layer: Linear =
            crate::train::rng::unseeded_module(|| LinearConfig::new(3, 4).init(&device));
        // d sum / dW = column sums of x (= 2·scale each), d/db = 2: norm = sqrt(12·(2s)² + 4·4)
        let grads = grads_of(&layer, 5.0);
        let before = global_norm(&layer, &grads);
        assert!(
            (before - (12.0f32 * 100.0 + 16.0).sqrt()).abs() < 1e-3,
            "{before}"
        );
        let (clipped, norm) = clip_global_norm(&layer, grads, 1.0);
        let norm: f32 = norm.expect("norm").into_scalar();
        assert!((norm - before).abs() < 1e-3);
        let after = global_norm(&layer, &clipped);
        assert!((after - 1.0).abs() < 1e-4, "{after}");

        let small = grads_of(&layer, 0.01);
        let before = global_norm(&layer, &small);
        let (kept, _) = clip_global_norm(&layer, small, 100.0);
        assert!((global_norm(&layer, &kept) - before).abs() < 1e-6);
    }

    #[test]
    fn biases_get_no_weight_decay() {
        let layer: Linear =
            crate::train::rng::unseeded_module(|| LinearConfig::new(3, 4).init(&Device::default()));
        let ids = no_decay_params(&layer);
        assert_eq!(ids, vec![layer.bias.as_ref().expect("bias").id]);
    }
}
