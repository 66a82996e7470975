//! Mixed precision (`precision: f32 | bf16 | f16`), as PyTorch's `torch.autocast`: inside
//! [`autocast`] the encoder's matrix products (the Q, K, V, output and feed-forward
//! projections, QKᵀ and A·V) take their operands in the half type and hand back f32, so
//! the weights and the optimizer state stay f32 (the master copy) and everything between
//! the products — bias, GELU, the softmax and LayerNorm statistics, the residual stream —
//! runs in f32. The cast's gradient is cast back (burn's autodiff), so a weight's gradient
//! arrives in f32. On a GPU the half products run on tensor cores; on the CPU (`flex`) they
//! are rounded to the half type but computed no faster.
//!
//! f16's narrow range needs loss scaling while training ([`crate::train::LossScale`]);
//! bf16 has f32's range and needs none.
//!
//! Reference: Micikevicius et al. 2018, "Mixed Precision Training" (§3: f32 master weights,
//! loss scaling, f32 accumulation); PyTorch's autocast op lists
//! <https://pytorch.org/docs/2.9/amp.html#cuda-ops-that-can-autocast-to-float16>.

use std::cell::Cell;

use burn::nn::Linear;
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// The floating-point type of the encoder's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32 (the default, and the only sensible choice on a CPU).
    #[default]
    F32,
    /// Products in bfloat16: f32's exponent range, 8 bits of mantissa; no loss scaling.
    Bf16,
    /// Products in IEEE half: 11 bits of mantissa, range ±65,504; training scales the loss.
    F16,
}

impl Precision {
    /// `f32`: the behaviour of every result made before this setting existed (so the param
    /// is left out of stage keys at this value).
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// The half type products use, or `None` for f32.
    pub fn half(&self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::F16 => Some(FloatDType::F16),
        }
    }

    /// The name as written in YAML (`f32`, `bf16`, `f16`).
    pub fn name(&self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    static HALF: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// Runs `f` with the encoder's products in `precision` on this thread (nested scopes
/// restore the outer one on return or unwind).
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<FloatDType>);
    impl Drop for Restore {
        fn drop(&mut self) {
            HALF.with(|h| h.set(self.0));
        }
    }
    let _restore = Restore(HALF.with(|h| h.replace(precision.half())));
    f()
}

/// The half type of the [`autocast`] scope this thread is in, if any.
pub fn half_type() -> Option<FloatDType> {
    HALF.with(Cell::get)
}

/// `a · b` (batched over leading axes) with both operands in the scope's half type and the
/// product back in f32; plain `a.matmul(b)` outside a half scope.
pub fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    match half_type() {
        None => a.matmul(b),
        Some(half) => a.cast(half).matmul(b.cast(half)).cast(FloatDType::F32),
    }
}

/// `linear.forward(x)` for rows `x` `[N, d_in]`: x W in the scope's half type, + b in f32.
pub fn linear(linear: &Linear, x: Tensor<2>) -> Tensor<2> {
    if half_type().is_none() {
        return crate::model::fused::linear(linear, x);
    }
    let y = matmul(x, linear.weight.val());
    match &linear.bias {
        Some(bias) => crate::model::fused::add_bias(y, bias.val()),
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::{DType, Device, TensorData};

    fn device() -> Device {
        Device::default()
    }

    #[test]
    fn names_round_trip_and_f32_is_the_default() {
        for p in [Precision::F32, Precision::Bf16, Precision::F16] {
            let yaml = serde_yaml::to_string(&p).unwrap();
            assert_eq!(yaml.trim(), p.name());
            assert_eq!(serde_yaml::from_str::<Precision>(p.name()).unwrap(), p);
        }
        assert!(Precision::default().is_f32());
        let err = serde_yaml::from_str::<Precision>("fp16")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected one of `f32`, `bf16`, `f16`"),
            "{err}"
        );
    }

    #[test]
    fn scope_is_restored_after_nesting() {
        assert_eq!(half_type(), None);
        autocast(Precision::Bf16, || {
            assert_eq!(half_type(), Some(FloatDType::BF16));
            autocast(Precision::F32, || assert_eq!(half_type(), None));
            assert_eq!(half_type(), Some(FloatDType::BF16));
        });
        assert_eq!(half_type(), None);
    }

    #[test]
    fn half_products_are_rounded_operands_and_come_back_f32() {
        // 1 + 2⁻¹⁰ is exact in f16 (10 mantissa bits) but rounds to 1 in bf16 (7 bits).
        let a = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32 + 1.0 / 1024.0], [1, 1]),
            &device(),
        );
        let b = Tensor::<2>::from_data(TensorData::new(vec![1.0f32], [1, 1]), &device());
        let value = |p: Precision| {
            let y = autocast(p, || matmul(a.clone(), b.clone()));
            assert_eq!(y.dtype(), DType::F32);
            y.into_data().try_to_vec::<f32>().unwrap()[0]
        };
        assert_eq!(value(Precision::F32), 1.0 + 1.0 / 1024.0);
        assert_eq!(value(Precision::F16), 1.0 + 1.0 / 1024.0);
        assert_eq!(value(Precision::Bf16), 1.0);
    }

    #[test]
    fn half_linear_is_close_to_f32_and_its_weight_gradient_is_f32() {
        let device = device().autodiff();
        let layer = LinearConfig::new(16, 8).init(&device);
        let x = Tensor::<2>::random(
            [4, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let full = layer.forward(x.clone());
        let half = autocast(Precision::Bf16, || linear(&layer, x));
        let diff = (full - half.clone()).abs().max().into_scalar::<f32>();
        // bf16 keeps ~3 significant digits: 16 products of O(1) terms stay within 0.1
        assert!(diff > 0.0 && diff < 0.1, "{diff}");
        let grads = half.sum().backward();
        let g = layer.weight.grad(&grads).expect("weight gradient");
        assert_eq!(g.dtype(), DType::F32);
    }
}
