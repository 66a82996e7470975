//! The reference (unfused) forms of [`super`]'s kernels, composed of burn's own ops: what
//! the encoder computed before the fused kernels, and what other backends still run.

use burn::tensor::activation::sigmoid;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention as scaled_dot_product;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{s, FloatDType, Tensor};

use crate::model::precision;

/// GELU with the exact erf: burn's `gelu`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::gelu(x)
}

/// softmax(S + M) over the last axis, M broadcast over heads (and queries).
pub fn masked_softmax(scores: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
    softmax(scores + mask, 3)
}

/// burn's `LayerNorm::forward`.
pub fn layer_norm<const D: usize>(layer_norm: &burn::nn::LayerNorm, x: Tensor<D>) -> Tensor<D> {
    layer_norm.forward(x)
}

/// Multi-head attention with burn's `attention` (scaled dot product, additive mask): the
/// heads split to `[B, h, T, d_k]` and merged back to `[B, T, d]`.
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask: Tensor<4>,
    heads: usize,
) -> Tensor<3> {
    let [b, t, d] = q.dims();
    // in an autocast scope Q, K, V and M enter the kernel in the half type (its softmax
    // statistics are the kernel's own business) and the context comes back f32
    let half = precision::half_type();
    let in_half = |x: Tensor<4>| match half {
        Some(half) => x.cast(half),
        None => x,
    };
    let split = |x: Tensor<3>| in_half(x.reshape([b, t, heads, d / heads]).swap_dims(1, 2));
    let context = scaled_dot_product(
        split(q),
        split(k),
        split(v),
        None,
        Some(in_half(mask)),
        AttentionModuleOptions::default(),
    );
    let context = if half.is_some() {
        context.cast(FloatDType::F32)
    } else {
        context
    };
    context.swap_dims(1, 2).reshape([b, t, d])
}

/// Multi-head attention while training, as the encoder computed it before the fused
/// kernel: the heads split to `[B, h, T, d_k]`, A = softmax(Q Kᵀ/√d_k + M) (Q scaled first:
/// cheaper than scaling the T × T scores), dropout on A, A V, the heads merged back. The
/// softmax and dropout are [`super`]'s (fused unless inside `with_reference_kernels`).
pub fn training_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask: Tensor<4>,
    heads: usize,
    dropout: &burn::nn::Dropout,
) -> Tensor<3> {
    let [b, t, d] = q.dims();
    let split = |x: Tensor<3>| x.reshape([b, t, heads, d / heads]).swap_dims(1, 2);
    let scale = 1.0 / ((d / heads) as f64).sqrt();
    // the products in the autocast scope's type (f32 outside one), the softmax in f32
    let scores = precision::matmul(split(q).mul_scalar(scale), split(k).swap_dims(2, 3));
    let probs = super::masked_softmax(scores, mask);
    let context = precision::matmul(super::dropout(dropout, probs), split(v));
    context.swap_dims(1, 2).reshape([b, t, d])
}

/// The LSTM recurrence from zero state with burn's ops, one step at a time (gates in the
/// order i, f, g, o; `x_proj [B, T, 4d]` = W_ih x_t + b, `w_hh [d, 4d]`): states `[B, T, d]`.
pub fn lstm(x_proj: Tensor<3>, w_hh: Tensor<2>) -> Tensor<3> {
    let [batch, steps, _] = x_proj.dims();
    let [d, _] = w_hh.dims();
    let device = x_proj.device();
    let mut h = Tensor::<2>::zeros([batch, d], &device);
    let mut c = Tensor::<2>::zeros([batch, d], &device);
    let mut states = Vec::with_capacity(steps);
    // Slicing in two levels (blocks of ~√T steps, then steps): the gradient of a slice is
    // a zero tensor of the sliced tensor's full size, so T slices of x_proj would cost
    // O(T²) memory traffic in the backward pass; this costs O(T^1.5).
    let block = (steps as f64).sqrt().ceil().max(1.0) as usize;
    for start in (0..steps).step_by(block) {
        let end = (start + block).min(steps);
        let x_block = x_proj.clone().slice(s![.., start..end, ..]);
        for t in 0..end - start {
            let x_t: Tensor<2> = x_block.clone().slice(s![.., t, ..]).reshape([batch, 4 * d]);
            let gates = x_t + h.matmul(w_hh.clone());
            let [i, f, g, o] = [0, 1, 2, 3].map(|k| gates.clone().narrow(1, k * d, d));
            c = sigmoid(f) * c + sigmoid(i) * g.tanh();
            h = sigmoid(o) * c.clone().tanh();
            states.push(h.clone());
        }
    }
    Tensor::stack(states, 1)
}
