//! GELU, LayerNorm, the masked softmax, attention and a linear layer's bias as one autodiff
//! node each on any backend, their forward and backward passes composed from the backend's
//! primitive ops (for the GPU backends, where pipe has no kernels of its own); and attention
//! for inference from the same ops.
//!
//! burn's autodiff of the same formulas records a node per elementary op and differentiates
//! each one: every broadcast's gradient is a reduction, a division's gradient three ops, a
//! head split's gradient a copy. Written out by hand the backward passes are short: GELU's
//! 7 ops, LayerNorm's 11, the softmax's 4, attention's 13 with its softmax and dropout.
//! Measured on an H200 (README, "On a GPU", session 28) that took a MiniLM backward pass
//! from 831 kernels to 483 but not its time: the step is bound by the GPU, and half of the
//! backward pass's GPU time was cubecl's reductions across rows for the bias and LayerNorm
//! gradients, which here run as products instead ([`column_sums`]).
//!
//! Each function returns `Err(inputs)` unchanged unless its tensors are f32 tensors of
//! backend `B`, tracked (training) or plain ([`attention`]); a constant mask may be either.

// Each `Err` hands the (large) tensors back, unchanged, for the reference form.
#![allow(clippy::result_large_err)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor, TensorMetadata};
use burn::tensor::{DType, Distribution, FloatDType, Shape, Tensor};

use super::flex::{AttentionInputs, LayerNormInputs};
use super::node;

/// A float tensor of `B` under autodiff.
type Tracked<B> = FloatTensor<Autodiff<B>>;

/// `x` as a tracked f32 tensor of `B`, if it is one.
fn tracked<B: Backend, const D: usize>(x: &Tensor<D>) -> Option<Tracked<B>>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    if x.dtype() != DType::F32 || !x.device().is_autodiff() {
        return None;
    }
    x.clone().try_into_primitive::<Autodiff<B>>().ok()
}

/// The f32 tensor of `B` under `x`, without its autodiff graph (a constant such as a mask).
fn constant<B: Backend, const D: usize>(x: &Tensor<D>) -> Option<FloatTensor<B>>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    if x.dtype() != DType::F32 {
        return None;
    }
    if x.device().is_autodiff() {
        tracked::<B, D>(x).map(|t| t.into_primitive())
    } else {
        x.clone().try_into_primitive::<B>().ok()
    }
}

/// Σ over the rows of a `[N, d]` tensor, as `[d]`: the product 1ᵀX with a row of ones.
/// cubecl reduces across rows with one thread per column, each reading all N rows in turn:
/// at N = 4,096 (32 × 128 tokens) ~290 µs a reduction on an H200, some 16 ms of a MiniLM
/// backward pass spent on bias and LayerNorm gradients (README, "On a GPU"); the product
/// spreads the rows over the whole GPU.
fn column_sums<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let shape = x.shape();
    let (n, d) = (shape[0], shape[1]);
    let ones = B::float_ones(Shape::new([1, n]), &x.device(), FloatDType::F32);
    B::float_reshape(B::float_matmul(ones, x), Shape::new([d]))
}

// ---------------------------------------------------------------- bias

/// Whether `x` is a tracked f32 tensor of `B`: what the one-node forms take.
pub fn takes<B: Backend, const D: usize>(x: &Tensor<D>) -> bool
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    tracked::<B, D>(x).is_some()
}

/// y + b over the rows of a tracked `[N, d]` tensor y, b `[d]` (a linear layer's bias), one
/// node: ∂L/∂y passes through and ∂L/∂b = 1ᵀ ∂L/∂y is a product ([`column_sums`]).
pub fn add_bias<B: Backend>(
    y: Tensor<2>,
    bias: Tensor<1>,
) -> Result<Tensor<2>, (Tensor<2>, Tensor<1>)>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    let (Some(yt), Some(bt)) = (tracked::<B, 2>(&y), tracked::<B, 1>(&bias)) else {
        return Err((y, bias));
    };
    let d = bt.primitive().shape()[0];
    let b_row = B::float_reshape(bt.primitive().clone(), Shape::new([1, d]));
    let out = B::float_add(yt.primitive().clone(), b_row);
    let tracked = BiasBackward
        .prepare::<NoCheckpointing>([yt.node(), bt.node()])
        .compute_bound()
        .stateless(out);
    Ok(Tensor::from_primitive::<Autodiff<B>>(tracked))
}

#[derive(Debug)]
struct BiasBackward;

impl<B: Backend> Backward<B, 2> for BiasBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [y_node, b_node] = ops.parents;
        if let Some(node) = b_node {
            grads.register::<B>(node.id, column_sums::<B>(dy.clone()));
        }
        if let Some(node) = y_node {
            grads.register::<B>(node.id, dy);
        }
    }
}

// ---------------------------------------------------------------- GELU

/// GELU(x) = x Φ(x) with the exact (erf) Φ on a tracked f32 tensor of `B`, one node whose
/// backward pass is Φ(x) + x φ(x) (7 ops, where autodiff of the erf form takes 10).
pub fn gelu<B: Backend, const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    let Some(xt) = tracked::<B, D>(&x) else {
        return Err(x);
    };
    let input = xt.primitive().clone();
    // Φ(x) = ½(1 + erf(x/√2))
    let erf = B::float_erf(B::float_mul_scalar(
        input.clone(),
        std::f64::consts::FRAC_1_SQRT_2.into(),
    ));
    let phi = B::float_mul_scalar(B::float_add_scalar(erf, 1.0.into()), 0.5.into());
    let y = B::float_mul(input.clone(), phi.clone());
    let tracked = node::with_backward(GeluBackward, [xt.node()], (input, phi), y);
    Ok(Tensor::from_primitive::<Autodiff<B>>(tracked))
}

#[derive(Debug)]
struct GeluBackward;

impl<B: Backend> Backward<B, 1> for GeluBackward {
    /// x and Φ(x).
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, phi) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dy| {
            // φ(x) = exp(−x²/2)/√(2π); ∂y/∂x = Φ(x) + x φ(x)
            let half_square =
                B::float_mul_scalar(B::float_mul(x.clone(), x.clone()), (-0.5).into());
            let density = B::float_mul_scalar(
                B::float_exp(half_square),
                (1.0 / (2.0 * std::f64::consts::PI).sqrt()).into(),
            );
            let slope = B::float_add(phi, B::float_mul(x, density));
            B::float_mul(dy, slope)
        });
    }
}

// ---------------------------------------------------------------- LayerNorm

/// γ ⊙ (x − μ)/√(σ² + ε) + β over the last axis of a tracked f32 tensor of `B`, one node.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
) -> Result<Tensor<D>, LayerNormInputs<D>>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    let (Some(xt), Some(gt), Some(bt)) = (
        tracked::<B, D>(&x),
        tracked::<B, 1>(&gamma),
        beta.as_ref().and_then(tracked::<B, 1>),
    ) else {
        return Err((x, gamma, beta));
    };
    Ok(Tensor::from_primitive::<Autodiff<B>>(layer_norm_tracked(
        xt, gt, bt, epsilon,
    )))
}

/// `[1, …, 1, d]`: a `[d]` vector shaped to broadcast over rows of rank `rank`.
fn row_shape(rank: usize, d: usize) -> Shape {
    let mut dims = vec![1; rank];
    dims[rank - 1] = d;
    Shape::from(dims)
}

fn layer_norm_tracked<B: Backend>(
    x: Tracked<B>,
    gamma: Tracked<B>,
    beta: Tracked<B>,
    epsilon: f64,
) -> Tracked<B> {
    let input = x.primitive().clone();
    let shape = input.shape();
    let last = shape.num_dims() - 1;
    let row = row_shape(shape.num_dims(), shape[last]);
    let gamma_row = B::float_reshape(gamma.primitive().clone(), row.clone());
    let beta_row = B::float_reshape(beta.primitive().clone(), row);
    let mu = B::float_mean_dim(input.clone(), last);
    let centred = B::float_sub(input, mu);
    let variance = B::float_mean_dim(B::float_mul(centred.clone(), centred.clone()), last);
    // 1/σ = (σ² + ε)^(−1/2)
    let inv_std =
        B::float_powf_scalar(B::float_add_scalar(variance, epsilon.into()), (-0.5).into());
    let x_hat = B::float_mul(centred, inv_std.clone());
    let y = B::float_add(B::float_mul(x_hat.clone(), gamma_row.clone()), beta_row);
    node::with_backward(
        LayerNormBackward,
        [x.node(), gamma.node(), beta.node()],
        LayerNormState {
            x_hat,
            inv_std,
            gamma_row,
        },
        y,
    )
}

#[derive(Debug, Clone)]
struct LayerNormState<T> {
    /// x̂ = (x − μ)/σ.
    x_hat: T,
    /// 1/σ per row, `[…, 1]`.
    inv_std: T,
    /// γ shaped `[1, …, 1, d]`.
    gamma_row: T,
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: Backend> Backward<B, 3> for LayerNormBackward {
    type State = LayerNormState<FloatTensor<B>>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let LayerNormState {
            x_hat,
            inv_std,
            gamma_row,
        } = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let shape = x_hat.shape();
        let last = shape.num_dims() - 1;
        let d = shape[last];
        let rows = shape.num_elements() / d.max(1);
        let column_sums =
            |t: FloatTensor<B>| column_sums::<B>(B::float_reshape(t, Shape::new([rows, d])));
        let [x_node, gamma_node, beta_node] = ops.parents;
        if let Some(node) = gamma_node {
            // ∂L/∂γ = Σ_rows dy ⊙ x̂
            let d_gamma = column_sums(B::float_mul(dy.clone(), x_hat.clone()));
            grads.register::<B>(node.id, d_gamma);
        }
        if let Some(node) = beta_node {
            grads.register::<B>(node.id, column_sums(dy.clone()));
        }
        if let Some(node) = x_node {
            // ∂L/∂x = (1/σ)(g − mean(g) − x̂ · mean(g ⊙ x̂)) with g = dy ⊙ γ
            let g = B::float_mul(dy, gamma_row);
            let mean_g = B::float_mean_dim(g.clone(), last);
            let mean_g_x_hat = B::float_mean_dim(B::float_mul(g.clone(), x_hat.clone()), last);
            let centred = B::float_sub(B::float_sub(g, mean_g), B::float_mul(x_hat, mean_g_x_hat));
            grads.register::<B>(node.id, B::float_mul(centred, inv_std));
        }
    }
}

// ---------------------------------------------------------------- masked softmax

/// softmax(S + M) over the last axis, S `[B, h, T, T]` tracked, M a constant; one node.
pub fn masked_softmax<B: Backend>(
    scores: Tensor<4>,
    mask: Tensor<4>,
) -> Result<Tensor<4>, (Tensor<4>, Tensor<4>)>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    let (Some(s), Some(m)) = (tracked::<B, 4>(&scores), constant::<B, 4>(&mask)) else {
        return Err((scores, mask));
    };
    let p = softmax_forward::<B>(s.primitive().clone(), m);
    let tracked = node::with_backward(SoftmaxBackward, [s.node()], p.clone(), p);
    Ok(Tensor::from_primitive::<Autodiff<B>>(tracked))
}

/// P = softmax(S + M) over the last axis, shifted by the row maximum.
fn softmax_forward<B: Backend>(s: FloatTensor<B>, m: FloatTensor<B>) -> FloatTensor<B> {
    let z = B::float_add(s, m);
    let last = z.shape().num_dims() - 1;
    let max = B::float_max_dim(z.clone(), last);
    let e = B::float_exp(B::float_sub(z, max));
    let sum = B::float_sum_dim(e.clone(), last);
    B::float_div(e, sum)
}

/// ∂L/∂S = P ⊙ (∂L/∂P − Σ_j ∂L/∂P_j P_j).
fn softmax_backward<B: Backend>(p: FloatTensor<B>, dp: FloatTensor<B>) -> FloatTensor<B> {
    let last = p.shape().num_dims() - 1;
    let row_dot = B::float_sum_dim(B::float_mul(dp.clone(), p.clone()), last);
    B::float_mul(p, B::float_sub(dp, row_dot))
}

#[derive(Debug)]
struct SoftmaxBackward;

impl<B: Backend> Backward<B, 1> for SoftmaxBackward {
    /// P.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let p = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dp| {
            softmax_backward::<B>(p, dp)
        });
    }
}

// ---------------------------------------------------------------- attention (inference)

/// `x` as a plain (untracked) f32 tensor of `B`, if it is one.
fn plain<B: Backend, const D: usize>(x: &Tensor<D>) -> Option<FloatTensor<B>>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    if x.dtype() != DType::F32 || x.device().is_autodiff() {
        return None;
    }
    x.clone().try_into_primitive::<B>().ok()
}

/// O_h = softmax(Q_h K_hᵀ/√d_k + M) V_h for plain `[B, T, d]` f32 projections of `B` and h
/// heads, from the same ops as the training form's forward pass: on cubecl burn's own
/// attention spent ~170 µs on each of several elementwise passes over the scores at 32 ×
/// 128 on an H200, where the training form's passes took 20–30 µs (README, "On a GPU").
pub fn attention<B: Backend>(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask: Tensor<4>,
    heads: usize,
) -> Result<Tensor<3>, AttentionInputs>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    let parts = (
        HeadsShape::of(&q, &k, &v, heads),
        plain::<B, 3>(&q),
        plain::<B, 3>(&k),
        plain::<B, 3>(&v),
        plain::<B, 4>(&mask),
    );
    let (Some(shape), Some(q_p), Some(k_p), Some(v_p), Some(m)) = parts else {
        return Err((q, k, v, mask));
    };
    let (_, _, p) = shape.probabilities::<B>(q_p, k_p, m);
    let context = B::float_matmul(p, shape.split::<B>(v_p));
    Ok(Tensor::from_primitive::<B>(shape.merge::<B>(context)))
}

// ---------------------------------------------------------------- attention (training)

/// O_h = dropout(softmax(Q_h K_hᵀ/√d_k + M)) V_h for `[B, T, d]` tracked projections and h
/// heads, as one node; the dropout mask is drawn from `B`'s generator exactly as burn's
/// `Dropout` draws it (one Bernoulli(1 − p) tensor of the probabilities' shape).
pub fn training_attention<B: Backend>(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask: Tensor<4>,
    heads: usize,
    p_drop: f64,
) -> Result<Tensor<3>, AttentionInputs>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    let parts = (
        HeadsShape::of(&q, &k, &v, heads).filter(|_| (0.0..1.0).contains(&p_drop)),
        tracked::<B, 3>(&q),
        tracked::<B, 3>(&k),
        tracked::<B, 3>(&v),
        constant::<B, 4>(&mask),
    );
    let (Some(heads_shape), Some(qt), Some(kt), Some(vt), Some(m)) = parts else {
        return Err((q, k, v, mask));
    };
    let (q_scaled, k_h, p) =
        heads_shape.probabilities::<B>(qt.primitive().clone(), kt.primitive().clone(), m);
    let v_h = heads_shape.split::<B>(vt.primitive().clone());
    // as burn's Dropout: Z ~ Bernoulli(1 − p), then (P ⊙ Z) · 1/(1 − p); kept as Z/(1 − p)
    let keep_scaled = (p_drop > 0.0).then(|| {
        let p_keep = 1.0 - p_drop;
        let z = B::float_random(
            p.shape(),
            Distribution::Bernoulli(p_keep),
            &p.device(),
            FloatDType::F32,
        );
        B::float_mul_scalar(z, (1.0 / p_keep).into())
    });
    let p_dropped = match &keep_scaled {
        Some(keep) => B::float_mul(p.clone(), keep.clone()),
        None => p.clone(),
    };
    let context = B::float_matmul(p_dropped.clone(), v_h.clone());
    let out = heads_shape.merge::<B>(context);
    let tracked = node::with_backward(
        AttentionBackward,
        [qt.node(), kt.node(), vt.node()],
        AttentionState {
            q_scaled,
            k_h,
            v_h,
            p,
            keep_scaled,
            p_dropped,
            heads_shape,
        },
        out,
    );
    Ok(Tensor::from_primitive::<Autodiff<B>>(tracked))
}

/// The sizes of a multi-head split: B sequences of T tokens, h heads of width d_k.
#[derive(Debug, Clone, Copy)]
struct HeadsShape {
    b: usize,
    t: usize,
    h: usize,
    d_k: usize,
}

impl HeadsShape {
    /// The split of `[B, T, d]` projections into h heads, if they agree and h divides d.
    fn of(q: &Tensor<3>, k: &Tensor<3>, v: &Tensor<3>, h: usize) -> Option<Self> {
        let [b, t, d] = q.dims();
        let usable = h > 0 && d % h == 0 && k.dims() == [b, t, d] && v.dims() == [b, t, d];
        usable.then_some(HeadsShape {
            b,
            t,
            h,
            d_k: d / h,
        })
    }

    /// 1/√d_k.
    fn scale(self) -> f64 {
        1.0 / (self.d_k as f64).sqrt()
    }

    /// Q/√d_k and K split into heads, and P = softmax(Q Kᵀ/√d_k + M), from `[B, T, d]` Q
    /// and K. Q is scaled before the product: cheaper than scaling the T × T scores.
    fn probabilities<B: Backend>(
        self,
        q: FloatTensor<B>,
        k: FloatTensor<B>,
        mask: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        let q_scaled = B::float_mul_scalar(self.split::<B>(q), self.scale().into());
        let k_h = self.split::<B>(k);
        let scores = B::float_matmul(q_scaled.clone(), B::float_swap_dims(k_h.clone(), 2, 3));
        (q_scaled, k_h, softmax_forward::<B>(scores, mask))
    }

    /// `[B, T, h·d_k]` -> `[B, h, T, d_k]` (a strided view).
    fn split<B: Backend>(self, x: FloatTensor<B>) -> FloatTensor<B> {
        let x = B::float_reshape(x, Shape::new([self.b, self.t, self.h, self.d_k]));
        B::float_swap_dims(x, 1, 2)
    }

    /// `[B, h, T, d_k]` -> `[B, T, h·d_k]`.
    fn merge<B: Backend>(self, x: FloatTensor<B>) -> FloatTensor<B> {
        let x = B::float_swap_dims(x, 1, 2);
        B::float_reshape(x, Shape::new([self.b, self.t, self.h * self.d_k]))
    }
}

/// What the backward pass of [`training_attention`] reads, `[B, h, T, ·]` each.
#[derive(Debug, Clone)]
struct AttentionState<T> {
    /// Q/√d_k.
    q_scaled: T,
    k_h: T,
    v_h: T,
    /// P = softmax(Q Kᵀ/√d_k + M).
    p: T,
    /// Z/(1 − p), `None` without dropout.
    keep_scaled: Option<T>,
    /// P ⊙ Z/(1 − p).
    p_dropped: T,
    heads_shape: HeadsShape,
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: Backend> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<FloatTensor<B>>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let shape = s.heads_shape;
        let d_out = shape.split::<B>(grads.consume::<B>(&ops.node));
        let [q_node, k_node, v_node] = ops.parents;
        if let Some(node) = v_node {
            // ∂L/∂V = P̃ᵀ ∂L/∂O, P̃ the dropped-out probabilities
            let dv = B::float_matmul(B::float_swap_dims(s.p_dropped, 2, 3), d_out.clone());
            grads.register::<B>(node.id, shape.merge::<B>(dv));
        }
        if q_node.is_none() && k_node.is_none() {
            return;
        }
        let d_p_dropped = B::float_matmul(d_out, B::float_swap_dims(s.v_h, 2, 3));
        let d_p = match s.keep_scaled {
            Some(keep) => B::float_mul(d_p_dropped, keep),
            None => d_p_dropped,
        };
        let d_scores = softmax_backward::<B>(s.p, d_p);
        if let Some(node) = q_node {
            // S = (Q/√d_k) Kᵀ: ∂L/∂Q = (∂L/∂S K)/√d_k
            let dq = B::float_mul_scalar(
                B::float_matmul(d_scores.clone(), s.k_h),
                shape.scale().into(),
            );
            grads.register::<B>(node.id, shape.merge::<B>(dq));
        }
        if let Some(node) = k_node {
            // ∂L/∂K = ∂L/∂Sᵀ (Q/√d_k)
            let dk = B::float_matmul(B::float_swap_dims(d_scores, 2, 3), s.q_scaled);
            grads.register::<B>(node.id, shape.merge::<B>(dk));
        }
    }
}
