//! Dynamic loss scaling for f16 training (Micikevicius et al. 2018, §3.2; the policy of
//! PyTorch's `GradScaler`): the loss is multiplied by S before the backward pass so that
//! small gradients do not flush to zero in f16, the gradients are divided by S before
//! clipping and the optimizer step, and an update whose gradients overflowed (a non-finite
//! norm) is skipped with S halved. After [`LossScale::GROWTH_INTERVAL`] clean updates in a
//! row S doubles again. bf16 and f32 train with S = 1 and never skip.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use super::clipping::{clip_global_norm, scale_grads};
use crate::model::Precision;

/// The current scale S and the run of clean updates since it last changed.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScale {
    scale: f64,
    clean_updates: usize,
    dynamic: bool,
}

impl LossScale {
    /// S at the first update (2¹⁶, as `GradScaler`).
    pub const INITIAL: f64 = 65_536.0;
    /// Clean updates in a row before S doubles.
    pub const GROWTH_INTERVAL: usize = 2_000;
    /// S never drops below this (an update that overflows even at S = 1 is still skipped).
    const MIN: f64 = 1.0;

    /// The scale for training in `precision`: dynamic for f16, a constant 1 otherwise.
    pub fn for_precision(precision: Precision) -> Self {
        let dynamic = precision == Precision::F16;
        LossScale {
            scale: if dynamic { Self::INITIAL } else { 1.0 },
            clean_updates: 0,
            dynamic,
        }
    }

    /// The factor S the loss is multiplied by before the backward pass.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The loss to call `backward` on: `loss` · S under f16, `loss` itself otherwise.
    pub fn scaled(&self, loss: Tensor<1>) -> Tensor<1> {
        if self.dynamic {
            loss.mul_scalar(self.scale)
        } else {
            loss
        }
    }

    /// An update's gradients (of the [`Self::scaled`] loss) divided by S and clipped to
    /// the global norm `max_norm` ([`clip_global_norm`]), or `None` when they overflowed:
    /// the update is skipped and S halved. Under f16 it reads the norm, waiting for the
    /// device (as `GradScaler`'s check does); otherwise it only clips.
    pub fn unscale_and_clip<M: Module>(
        &mut self,
        model: &M,
        grads: GradientsParams,
        max_norm: f64,
    ) -> Option<GradientsParams> {
        if !self.dynamic {
            return Some(clip_global_norm(model, grads, max_norm).0);
        }
        let grads = scale_grads(model, grads, 1.0 / self.scale);
        let (grads, norm) = clip_global_norm(model, grads, max_norm);
        let norm = norm.map_or(0.0, |n| f64::from(n.into_scalar::<f32>()));
        self.record(norm).then_some(grads)
    }

    /// Whether S changes with overflows (f16); bf16 and f32 keep S = 1.
    pub fn is_dynamic(&self) -> bool {
        self.dynamic
    }

    /// Records the outcome of an update whose gradients, unscaled, have norm `grad_norm`;
    /// returns whether the optimizer may step (the gradients are finite). After an overflow
    /// S halves; after a clean run it doubles.
    pub fn record(&mut self, grad_norm: f64) -> bool {
        if !self.dynamic {
            return true;
        }
        if !grad_norm.is_finite() {
            self.scale = (self.scale / 2.0).max(Self::MIN);
            self.clean_updates = 0;
            return false;
        }
        self.clean_updates += 1;
        if self.clean_updates == Self::GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.clean_updates = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_and_f32_never_scale_or_skip() {
        for p in [Precision::F32, Precision::Bf16] {
            let mut s = LossScale::for_precision(p);
            assert_eq!(s.scale(), 1.0);
            assert!(s.record(f64::INFINITY));
            assert_eq!(s.scale(), 1.0);
        }
    }

    #[test]
    fn f16_halves_on_overflow_and_doubles_after_a_clean_run() {
        let mut s = LossScale::for_precision(Precision::F16);
        assert_eq!(s.scale(), 65_536.0);
        assert!(!s.record(f64::NAN));
        assert!(!s.record(f64::INFINITY));
        assert_eq!(s.scale(), 16_384.0);
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            assert!(s.record(3.0));
        }
        assert_eq!(s.scale(), 16_384.0);
        assert!(s.record(3.0));
        assert_eq!(s.scale(), 32_768.0);
        // an overflow resets the run
        for _ in 0..10 {
            s.record(1.0);
        }
        s.record(f64::INFINITY);
        assert_eq!(s.scale(), 16_384.0);
    }

    #[test]
    fn the_scale_stops_at_one() {
        let mut s = LossScale::for_precision(Precision::F16);
        for _ in 0..40 {
            s.record(f64::INFINITY);
        }
        assert_eq!(s.scale(), 1.0);
    }
}
