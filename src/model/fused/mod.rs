//! Fused CPU kernels for the encoder's memory-bound steps: GELU, the masked softmax of
//! attention and LayerNorm, each one pass forward and one pass backward instead of burn's
//! chain of elementwise ops (and, under autodiff, a graph node per op); and the SLL heads'
//! LSTM recurrence, one kernel for all steps instead of a dozen graph nodes per step; and the
//! AdamW update, one pass per parameter instead of fifteen tensor ops.
//!
//! Dropout keeps burn's arithmetic (x ⊙ m · 1/(1 − p)); only its mask is drawn faster, from
//! the same generator stream, in parallel ([`dropout`], [`SeededStream`]). A fused
//! apply-and-rescale measured no faster.
//!
//! Every function here has a reference form in [`reference`] built from burn's own ops; the
//! fused kernel runs for f32 tensors on the `flex` CPU backend (with or without autodiff) and
//! the reference form everywhere else, or on this thread inside [`with_reference_kernels`].
//! Tests hold each kernel to its reference form.

// the one-node forms serve the GPU backends; the CPU build compiles them for their tests
#[cfg(any(test, feature = "cuda", feature = "wgpu"))]
mod composed;
mod dropout;
mod flex;
mod kernels;
mod node;
pub mod reference;
pub mod simd;

pub use dropout::SeededStream;
pub use flex::AdamWInputs;
pub use kernels::AdamWScalars;
pub use simd::{SimdLevel, SimdLevelError};

use std::cell::Cell;

use burn::nn::{Dropout, LayerNorm, Linear};
use burn::tensor::{Tensor, TensorData};

thread_local! {
    static REFERENCE_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the reference forms instead of the fused kernels on this thread (for A/B
/// benchmarks and parity tests); a gradient is computed by the form its forward pass used.
pub fn with_reference_kernels<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            REFERENCE_ONLY.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(REFERENCE_ONLY.with(|r| r.replace(true)));
    f()
}

fn fused_enabled() -> bool {
    !REFERENCE_ONLY.with(Cell::get)
}

/// The backend whose tracked tensors take [`composed`]'s one-node forms: the cubecl backend
/// behind both `cuda` and `wgpu`.
#[cfg(feature = "cuda")]
type Gpu = burn::backend::Cuda;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
type Gpu = burn::backend::Wgpu;

/// Whether `x` takes the GPU backends' one-node forms ([`composed`]): a tracked f32 tensor of
/// the cubecl backend in a `cuda` or `wgpu` build, outside [`with_reference_kernels`]. For
/// tests that must know they test those forms, not a fallback.
pub fn gpu_forms_apply<const D: usize>(x: &Tensor<D>) -> bool {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if fused_enabled() {
        return composed::takes::<Gpu, D>(x);
    }
    let _ = x;
    false
}

/// GELU(x) = x Φ(x) with the exact (erf) Φ.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fused_enabled() {
        return reference::gelu(x);
    }
    flex::gelu(x).unwrap_or_else(|x| {
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        let x = match composed::gelu::<Gpu, D>(x) {
            Ok(y) => return y,
            Err(x) => x,
        };
        erf_gelu(x)
    })
}

/// GELU composed from erf, x · ½(1 + erf(x/√2)), for the backends without pipe's kernel:
/// burn's own `gelu` computes the exact forward but its default backward is the derivative
/// of the tanh approximation (`gelu_backward`, off by up to 3e-3 on a GPU), while autodiff
/// of this form gives the exact Φ(x) + x φ(x). Fusion makes it one kernel each way.
fn erf_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let phi = x
        .clone()
        .div_scalar(std::f64::consts::SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    x * phi
}

/// `dropout.forward(x)`: x ⊙ m / (1 − p) with m ~ Bernoulli(1 − p) per element, while
/// training on an autodiff device. On `flex` inside a seeded scope ([`SeededStream`]) the
/// mask is the one burn's generator would draw, computed in parallel; elsewhere it is
/// burn's own `Dropout`.
pub fn dropout<const D: usize>(dropout: &Dropout, x: Tensor<D>) -> Tensor<D> {
    if !dropout.training.is_enabled() || !x.device().is_autodiff() || dropout.prob == 0.0 {
        return x;
    }
    if !fused_enabled() || !flex::is_flex_f32(&x) {
        return dropout.forward(x);
    }
    let p_keep = 1.0 - dropout.prob;
    let shape = x.shape();
    let Some(mask) = dropout::draw_mask(shape.num_elements(), p_keep) else {
        return dropout.forward(x);
    };
    let m: Tensor<D> = Tensor::from_data(TensorData::new(mask, shape), &x.device());
    // as burn's Dropout::forward: (x ⊙ m) · 1/(1 − p)
    (x * m) * (1.0 / p_keep)
}

/// softmax(S + M) over the last axis: attention scores S `[B, h, T, T]` and the additive
/// padding mask M `[B, 1, T, T]` or `[B, 1, 1, T]`, a constant (no gradient reaches it).
pub fn masked_softmax(scores: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
    if !fused_enabled() {
        return reference::masked_softmax(scores, mask);
    }
    let fallback = |(scores, mask)| {
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        let (scores, mask) = match composed::masked_softmax::<Gpu>(scores, mask) {
            Ok(p) => return p,
            Err(inputs) => inputs,
        };
        reference::masked_softmax(scores, mask)
    };
    flex::masked_softmax(scores, mask).unwrap_or_else(fallback)
}

/// Multi-head attention for inference: `[B, T, d]` query, key and value projections, the
/// additive mask M `[B, 1, T, T]` or `[B, 1, 1, T]` and the number of heads h; returns the
/// heads' outputs side by side, `[B, T, d]`:
/// O_h = softmax(Q_h K_hᵀ / √d_k + M) V_h with d_k = d / h.
///
/// On plain `flex` f32 one kernel computes each (sequence, head) in cache, reading and
/// writing the heads in place; elsewhere (autodiff included) it is burn's `attention`.
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask: Tensor<4>,
    heads: usize,
) -> Tensor<3> {
    if !fused_enabled() {
        return reference::attention(q, k, v, mask, heads);
    }
    let fallback = |(q, k, v, mask)| {
        // in an autocast scope the reference form runs the products in the half type
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        let (q, k, v, mask) = match crate::model::precision::half_type() {
            None => match composed::attention::<Gpu>(q, k, v, mask, heads) {
                Ok(context) => return context,
                Err(inputs) => inputs,
            },
            Some(_) => (q, k, v, mask),
        };
        reference::attention(q, k, v, mask, heads)
    };
    flex::attention(q, k, v, mask, heads).unwrap_or_else(fallback)
}

/// Multi-head attention while training, with dropout on the probabilities: `[B, T, d]`
/// projections, the additive mask M, h heads; O_h = dropout(softmax(Q_h K_hᵀ/√d_k + M)) V_h.
///
/// On tracked `flex` f32 inside a seeded scope one kernel per (sequence, head) runs it in
/// place, and one more its backward pass, with the dropout mask burn's `Dropout` would draw;
/// elsewhere the heads are split and burn's ops (with the fused softmax and dropout mask)
/// run, as [`reference::training_attention`].
pub fn training_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask: Tensor<4>,
    heads: usize,
    dropout: &Dropout,
) -> Tensor<3> {
    if !fused_enabled() {
        return reference::training_attention(q, k, v, mask, heads, dropout);
    }
    let fallback = |(q, k, v, mask)| {
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        let (q, k, v, mask) =
            match composed::training_attention::<Gpu>(q, k, v, mask, heads, dropout.prob) {
                Ok(context) => return context,
                Err(inputs) => inputs,
            };
        reference::training_attention(q, k, v, mask, heads, dropout)
    };
    flex::training_attention(q, k, v, mask, heads, dropout.prob).unwrap_or_else(fallback)
}

/// The LSTM recurrence from zero state: `x_proj [B, T, 4d]` holds W_ih x_t + b for every
/// step, `w_hh [d, 4d]` is the recurrent weight in burn's `Linear` layout (h W_hh); returns
/// h_1..h_T `[B, T, d]` with gates in the order (i, f, g, o):
/// c_t = σ(f) ⊙ c_{t−1} + σ(i) ⊙ tanh(g), h_t = σ(o) ⊙ tanh(c_t).
///
/// On `flex` f32 (with or without autodiff) one kernel runs the whole recurrence and its
/// backward pass through time (one gemm per step each way, the W_hh gradient as a single
/// product); elsewhere burn's ops step by step.
pub fn lstm(x_proj: Tensor<3>, w_hh: Tensor<2>) -> Tensor<3> {
    if !fused_enabled() {
        return reference::lstm(x_proj, w_hh);
    }
    flex::lstm(x_proj, w_hh).unwrap_or_else(|(x_proj, w_hh)| reference::lstm(x_proj, w_hh))
}

/// `linear.forward(x)` for `[N, d_in]` rows: while training on a GPU x W through burn and
/// the bias as [`add_bias`]; elsewhere burn's `Linear`.
pub fn linear(linear: &Linear, x: Tensor<2>) -> Tensor<2> {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(bias) =
        (linear.bias.as_ref()).filter(|_| fused_enabled() && composed::takes::<Gpu, 2>(&x))
    {
        return add_bias(x.matmul(linear.weight.val()), bias.val());
    }
    linear.forward(x)
}

/// y + b over the rows of `y` `[N, d]`: while training on a GPU one node whose gradient for b
/// (the column sums of ∂L/∂y) is a product, not cubecl's reduction across rows
/// ([`composed::add_bias`]); elsewhere burn's broadcast add.
pub fn add_bias(y: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    let (y, bias) = match fused_enabled() {
        true => match composed::add_bias::<Gpu>(y, bias) {
            Ok(out) => return out,
            Err(inputs) => inputs,
        },
        false => (y, bias),
    };
    y + bias.unsqueeze::<2>()
}

/// `layer_norm.forward(x)` = γ ⊙ (x − μ)/√(σ² + ε) + β over the last axis, with the module's
/// ε passed as `epsilon` (burn keeps it private).
pub fn layer_norm<const D: usize>(layer_norm: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    if !fused_enabled() {
        return reference::layer_norm(layer_norm, x);
    }
    let gamma = layer_norm.gamma.val();
    let beta = layer_norm.beta.as_ref().map(|b| b.val());
    flex::layer_norm(x, gamma, beta, epsilon).unwrap_or_else(|(x, gamma, beta)| {
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        let (x, gamma, beta) = match composed::layer_norm::<Gpu, D>(x, gamma, beta, epsilon) {
            Ok(y) => return y,
            Err(inputs) => inputs,
        };
        burn::tensor::module::layer_norm(x, gamma, beta, epsilon)
    })
}

/// One AdamW update of θ with gradient g and moments (m, v) (`None` at t = 1), returning
/// (θ, m, v) updated: on plain `flex` f32 tensors one pass over memory, bit-identical to
/// burn's `AdamW::step`; elsewhere (or inside [`with_reference_kernels`]) `Err` hands the
/// inputs back for burn's own step.
#[allow(clippy::result_large_err)] // the `Err` hands the tensors back, unchanged
pub fn adamw<const D: usize>(
    theta: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
    scalars: AdamWScalars,
) -> Result<(Tensor<D>, Tensor<D>, Tensor<D>), AdamWInputs<D>> {
    if !fused_enabled() {
        return Err((theta, grad, moments));
    }
    flex::adamw(theta, grad, moments, scalars)
}

#[cfg(test)]
mod tests;
