//! The reference (unfused) forms of [`super`]'s kernels, composed of burn's own ops: what
//! the encoder computed before the fused kernels, and what other backends still run.

use burn::tensor::activation::softmax;
use burn::tensor::module::attention as scaled_dot_product;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::Tensor;

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
    let split = |x: Tensor<3>| x.reshape([b, t, heads, d / heads]).swap_dims(1, 2);
    let context = scaled_dot_product(
        split(q),
        split(k),
        split(v),
        None,
        Some(mask),
        AttentionModuleOptions::default(),
    );
    context.swap_dims(1, 2).reshape([b, t, d])
}
