//! The reference (unfused) forms of [`super`]'s kernels, composed of burn's own ops: what
//! the encoder computed before the fused kernels, and what other backends still run.

use burn::tensor::activation::softmax;
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
