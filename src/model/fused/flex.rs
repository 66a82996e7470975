//! The fused kernels as burn operations on the `flex` CPU backend, with and without
//! autodiff, through burn's backend-extension API (`Tensor::try_into_primitive` /
//! `from_primitive`, and `burn-autodiff`'s `Backward` for the hand-written gradients).
//!
//! Each function returns `Err(inputs)` unchanged when the tensors are not f32 on `flex`
//! (another backend, another dtype, a checkpointing autodiff), and the caller then runs the
//! reference form.

// Each `Err` hands the (large) tensors back, unchanged, for the reference form.
#![allow(clippy::result_large_err)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::TensorMetadata;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Shape, Tensor, TensorData};

use super::kernels::{self, MaskLayout};
use super::node;

/// `flex` under autodiff (no gradient checkpointing, the training device's default).
type Tracked = Autodiff<Flex>;
type TrackedTensor = FloatTensor<Tracked>;

/// Where a float tensor lives, as far as the fused kernels care.
enum Placed<const D: usize> {
    /// A plain `flex` f32 tensor (inference).
    Flex(FlexTensor),
    /// A `flex` f32 tensor under autodiff (training).
    Tracked(TrackedTensor),
    /// Anything else: the reference form handles it.
    Other(Tensor<D>),
}

fn place<const D: usize>(x: Tensor<D>) -> Placed<D> {
    if x.dtype() != DType::F32 {
        return Placed::Other(x);
    }
    if x.device().is_autodiff() {
        match x.clone().try_into_primitive::<Tracked>() {
            Ok(t) => Placed::Tracked(t),
            Err(_) => Placed::Other(x),
        }
    } else {
        match x.clone().try_into_primitive::<Flex>() {
            Ok(t) => Placed::Flex(t),
            Err(_) => Placed::Other(x),
        }
    }
}

/// Whether `x` is an f32 tensor on `flex` (with or without autodiff).
pub(super) fn is_flex_f32<const D: usize>(x: &Tensor<D>) -> bool {
    !matches!(place(x.clone()), Placed::Other(_))
}

/// The `flex` tensor under `x` without its autodiff graph (a constant input such as a mask).
fn constant<const D: usize>(x: &Tensor<D>) -> Option<FlexTensor> {
    if x.dtype() != DType::F32 {
        return None;
    }
    if x.device().is_autodiff() {
        x.clone()
            .try_into_primitive::<Tracked>()
            .ok()
            .map(|t| t.into_primitive())
    } else {
        x.clone().try_into_primitive::<Flex>().ok()
    }
}

/// The values of `t` as a contiguous f32 slice (copying only when `t` is a strided view).
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("fused kernels read contiguous f32 tensors")
}

fn from_vec(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// An elementwise kernel `out = f(a)` into a fresh tensor of `a`'s shape.
fn map(a: &FlexTensor, f: impl FnOnce(&[f32], &mut [f32])) -> FlexTensor {
    let mut out = vec![0.0f32; a.layout().num_elements()];
    f(values(a), &mut out);
    from_vec(out, a.shape())
}

// ---------------------------------------------------------------- GELU

pub fn gelu<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    match place(x) {
        Placed::Flex(x) => Ok(Tensor::from_primitive::<Flex>(gelu_forward(&contiguous(x)))),
        Placed::Tracked(x) => Ok(Tensor::from_primitive::<Tracked>(gelu_tracked(x))),
        Placed::Other(x) => Err(x),
    }
}

fn gelu_forward(x: &FlexTensor) -> FlexTensor {
    map(x, kernels::gelu)
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    /// The input x.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
            let dy = contiguous(dy);
            map(&x, |x, dx| kernels::gelu_backward(x, values(&dy), dx))
        });
    }
}

fn gelu_tracked(x: TrackedTensor) -> TrackedTensor {
    let input = contiguous(x.primitive().clone());
    let y = gelu_forward(&input);
    node::with_backward(GeluBackward, [x.node()], input, y)
}

// ---------------------------------------------------------------- masked softmax

pub fn masked_softmax(
    scores: Tensor<4>,
    mask: Tensor<4>,
) -> Result<Tensor<4>, (Tensor<4>, Tensor<4>)> {
    let [b, h, tq, tk] = scores.dims();
    let [mb, mh, mq, mk] = mask.dims();
    let fits = mb == b && mh == 1 && (mq == tq || mq == 1) && mk == tk;
    let Some(m) = constant(&mask).filter(|_| fits) else {
        return Err((scores, mask));
    };
    let layout = MaskLayout {
        heads: h,
        queries: tq,
        mask_queries: mq,
        keys: tk,
    };
    let m = contiguous(m);
    match place(scores) {
        Placed::Flex(s) => Ok(Tensor::from_primitive::<Flex>(softmax_forward(
            &contiguous(s),
            &m,
            layout,
        ))),
        Placed::Tracked(s) => Ok(Tensor::from_primitive::<Tracked>(softmax_tracked(
            s, &m, layout,
        ))),
        Placed::Other(s) => Err((s, mask)),
    }
}

fn softmax_forward(s: &FlexTensor, m: &FlexTensor, layout: MaskLayout) -> FlexTensor {
    map(s, |s, p| kernels::masked_softmax(s, values(m), layout, p))
}

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    /// The output p and the row length.
    type State = (FlexTensor, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (p, keys) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |dp| {
            let dp = contiguous(dp);
            map(&p, |p, ds| {
                kernels::softmax_backward(p, values(&dp), keys, ds)
            })
        });
    }
}

fn softmax_tracked(s: TrackedTensor, m: &FlexTensor, layout: MaskLayout) -> TrackedTensor {
    let p = softmax_forward(&contiguous(s.primitive().clone()), m, layout);
    node::with_backward(SoftmaxBackward, [s.node()], (p.clone(), layout.keys), p)
}

// ---------------------------------------------------------------- LayerNorm

/// The inputs of [`layer_norm`], handed back when the fused path does not apply.
pub type LayerNormInputs<const D: usize> = (Tensor<D>, Tensor<1>, Option<Tensor<1>>);

pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
) -> Result<Tensor<D>, LayerNormInputs<D>> {
    let all_tracked = x.device().is_autodiff()
        && gamma.device().is_autodiff()
        && beta.as_ref().is_none_or(|b| b.device().is_autodiff());
    // without autodiff, flex's own fused LayerNorm is faster (it saves no x̂ for a backward
    // pass); a beta-less LayerNorm is rare: the reference form serves both
    let Some(beta_tensor) = beta.clone().filter(|_| all_tracked) else {
        return Err((x, gamma, beta));
    };
    match (place(x), place(gamma), place(beta_tensor)) {
        (Placed::Tracked(x), Placed::Tracked(g), Placed::Tracked(b)) => Ok(
            Tensor::from_primitive::<Tracked>(layer_norm_tracked(x, g, b, epsilon)),
        ),
        (x, g, _) => Err((unplace(x), unplace(g), beta)),
    }
}

fn unplace<const D: usize>(p: Placed<D>) -> Tensor<D> {
    match p {
        Placed::Flex(t) => Tensor::from_primitive::<Flex>(t),
        Placed::Tracked(t) => Tensor::from_primitive::<Tracked>(t),
        Placed::Other(t) => t,
    }
}

/// y, x̂ and 1/σ per row.
fn layer_norm_forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
) -> (FlexTensor, FlexTensor, Vec<f32>) {
    let n = x.layout().num_elements();
    let d = gamma.layout().num_elements();
    let mut y = vec![0.0f32; n];
    let mut x_hat = vec![0.0f32; n];
    let mut inv_std = vec![0.0f32; n / d.max(1)];
    kernels::layer_norm(
        values(x),
        values(gamma),
        Some(values(beta)),
        epsilon as f32,
        &mut y,
        &mut x_hat,
        &mut inv_std,
    );
    (from_vec(y, x.shape()), from_vec(x_hat, x.shape()), inv_std)
}

#[derive(Debug, Clone)]
struct LayerNormState {
    x_hat: FlexTensor,
    inv_std: std::sync::Arc<Vec<f32>>,
    gamma: FlexTensor,
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = LayerNormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let state = ops.state;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let mut dx = vec![0.0f32; state.x_hat.layout().num_elements()];
        let (d_gamma, d_beta) = kernels::layer_norm_backward(
            values(&state.x_hat),
            &state.inv_std,
            values(&state.gamma),
            values(&dy),
            &mut dx,
        );
        let [x_node, gamma_node, beta_node] = ops.parents;
        let d = d_gamma.len();
        if let Some(node) = x_node {
            grads.register::<Flex>(node.id, from_vec(dx, state.x_hat.shape()));
        }
        if let Some(node) = gamma_node {
            grads.register::<Flex>(node.id, from_vec(d_gamma, Shape::new([d])));
        }
        if let Some(node) = beta_node {
            grads.register::<Flex>(node.id, from_vec(d_beta, Shape::new([d])));
        }
    }
}

fn layer_norm_tracked(
    x: TrackedTensor,
    gamma: TrackedTensor,
    beta: TrackedTensor,
    epsilon: f64,
) -> TrackedTensor {
    let g = contiguous(gamma.primitive().clone());
    let (y, x_hat, inv_std) = layer_norm_forward(
        &contiguous(x.primitive().clone()),
        &g,
        &contiguous(beta.primitive().clone()),
        epsilon,
    );
    node::with_backward(
        LayerNormBackward,
        [x.node(), gamma.node(), beta.node()],
        LayerNormState {
            x_hat,
            inv_std: std::sync::Arc::new(inv_std),
            gamma: g,
        },
        y,
    )
}

// ---------------------------------------------------------------- attention (inference)

/// The inputs of [`attention`], handed back when the fused path does not apply.
pub type AttentionInputs = (Tensor<3>, Tensor<3>, Tensor<3>, Tensor<4>);

/// The layout of an attention over `[B, T, d]` projections with `heads` heads and the
/// additive mask `[B, 1, T, T]` or `[B, 1, 1, T]`; `None` when the shapes do not fit it.
fn attention_layout(
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    mask: &Tensor<4>,
    heads: usize,
) -> Option<kernels::AttentionLayout> {
    let [b, t, d] = q.dims();
    let [mb, mh, mq, mk] = mask.dims();
    let fits = heads > 0
        && d % heads == 0
        && k.dims() == q.dims()
        && v.dims() == q.dims()
        && mb == b
        && mh == 1
        && (mq == t || mq == 1)
        && mk == t;
    fits.then_some(kernels::AttentionLayout {
        batch: b,
        tokens: t,
        heads,
        d_head: d / heads,
        mask_queries: mq,
    })
}

/// Multi-head attention over `[B, T, d]` projections on plain `flex` (no autodiff: the
/// kernel keeps no probabilities for a backward pass).
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask: Tensor<4>,
    heads: usize,
) -> Result<Tensor<3>, AttentionInputs> {
    let [b, t, d] = q.dims();
    let layout = attention_layout(&q, &k, &v, &mask, heads);
    // under autodiff `place` answers `Tracked`, so only plain `flex` passes below
    let (Some(layout), Some(m)) = (layout, constant(&mask)) else {
        return Err((q, k, v, mask));
    };
    let (Placed::Flex(qf), Placed::Flex(kf), Placed::Flex(vf)) =
        (place(q.clone()), place(k.clone()), place(v.clone()))
    else {
        return Err((q, k, v, mask));
    };
    let (qf, kf, vf, m) = (
        contiguous(qf),
        contiguous(kf),
        contiguous(vf),
        contiguous(m),
    );
    let mut out = vec![0.0f32; b * t * d];
    kernels::attention(
        values(&qf),
        values(&kf),
        values(&vf),
        values(&m),
        layout,
        &mut out,
    );
    Ok(Tensor::from_primitive::<Flex>(from_vec(
        out,
        Shape::new([b, t, d]),
    )))
}

/// Attention while training (dropout on the probabilities), under autodiff: the forward
/// pass of [`kernels::attention_train`] and its hand-written backward pass, instead of
/// burn's graph of head splits, batched products, softmax, dropout and merges.
/// `Err` (inputs unchanged, nothing drawn) unless q, k and v are tracked `flex` f32 and the
/// dropout mask can be drawn from the seeded stream ([`super::dropout::draw_mask`], the mask
/// burn's `Dropout` would draw there).
pub fn training_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask: Tensor<4>,
    heads: usize,
    p_drop: f64,
) -> Result<Tensor<3>, AttentionInputs> {
    let [b, t, d] = q.dims();
    let layout = attention_layout(&q, &k, &v, &mask, heads)
        .filter(|_| (0.0..1.0).contains(&p_drop) && super::dropout::in_seeded_scope());
    let (Some(layout), Some(m)) = (layout, constant(&mask)) else {
        return Err((q, k, v, mask));
    };
    let (Placed::Tracked(qt), Placed::Tracked(kt), Placed::Tracked(vt)) =
        (place(q.clone()), place(k.clone()), place(v.clone()))
    else {
        return Err((q, k, v, mask));
    };
    let p_keep = 1.0 - p_drop;
    let Some(keep) = super::dropout::draw_mask(b * heads * t * t, p_keep) else {
        return Err((q, k, v, mask));
    };
    let mut state = AttentionState {
        q: contiguous(qt.primitive().clone()),
        k: contiguous(kt.primitive().clone()),
        v: contiguous(vt.primitive().clone()),
        probs: vec![0.0f32; b * heads * t * t],
        keep,
        // as burn's Dropout: the scalar 1/(1 − p) in f64, applied as an f32 element
        keep_scale: (1.0 / p_keep) as f32,
        layout,
    };
    let mut out = vec![0.0f32; b * t * d];
    kernels::attention_train(
        values(&state.q),
        values(&state.k),
        values(&state.v),
        values(&contiguous(m)),
        &state.keep,
        state.keep_scale,
        layout,
        &mut state.probs,
        &mut out,
    );
    let out = from_vec(out, Shape::new([b, t, d]));
    let tracked = node::with_backward(
        AttentionBackward,
        [qt.node(), kt.node(), vt.node()],
        state,
        out,
    );
    Ok(Tensor::from_primitive::<Tracked>(tracked))
}

/// What the backward pass of [`training_attention`] reads.
#[derive(Debug, Clone)]
struct AttentionState {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    /// P = softmax(S + M), `[B, h, T, T]`.
    probs: Vec<f32>,
    /// The dropout mask Z (0/1), `[B, h, T, T]`.
    keep: Vec<f32>,
    keep_scale: f32,
    layout: kernels::AttentionLayout,
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 3> for AttentionBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let d_out = contiguous(grads.consume::<Flex>(&ops.node));
        let n = values(&s.q).len();
        let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        kernels::attention_backward(
            values(&s.q),
            values(&s.k),
            values(&s.v),
            &s.probs,
            &s.keep,
            s.keep_scale,
            values(&d_out),
            s.layout,
            &mut dq,
            &mut dk,
            &mut dv,
        );
        let shape = s.q.shape();
        for (node, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, from_vec(grad, shape.clone()));
            }
        }
    }
}

// ---------------------------------------------------------------- LSTM recurrence

/// The inputs of [`lstm`], handed back when the fused path does not apply.
pub type LstmInputs = (Tensor<3>, Tensor<2>);

/// The LSTM recurrence over `x_proj [B, T, 4d]` (W_ih x_t + b) with `w_hh [d, 4d]`:
/// states `[B, T, d]`, on plain `flex` or under autodiff (both inputs alike).
pub fn lstm(x_proj: Tensor<3>, w_hh: Tensor<2>) -> Result<Tensor<3>, LstmInputs> {
    let [_, _, g4] = x_proj.dims();
    let [d, n] = w_hh.dims();
    if n != g4 || g4 != 4 * d || d == 0 {
        return Err((x_proj, w_hh));
    }
    match (place(x_proj), place(w_hh)) {
        (Placed::Flex(x), Placed::Flex(w)) => {
            let w = contiguous(w);
            let run = lstm_run(&contiguous(x), &w);
            Ok(Tensor::from_primitive::<Flex>(run.states))
        }
        (Placed::Tracked(x), Placed::Tracked(w)) => {
            Ok(Tensor::from_primitive::<Tracked>(lstm_tracked(x, w)))
        }
        (x, w) => Err((unplace(x), unplace(w))),
    }
}

/// What the forward pass keeps for the backward pass, time-major.
#[derive(Debug, Clone)]
struct LstmState {
    /// Activated gates (i, f, g̃, o) `[T, B, 4d]`.
    gates: std::sync::Arc<Vec<f32>>,
    /// c_t `[T, B, d]`.
    cells: std::sync::Arc<Vec<f32>>,
    /// h_t `[T, B, d]`.
    states: std::sync::Arc<Vec<f32>>,
    w_hh: FlexTensor,
    shape: kernels::LstmShape,
}

struct LstmRun {
    /// h_1..h_T `[B, T, d]`.
    states: FlexTensor,
    saved: LstmState,
}

fn lstm_run(x_proj: &FlexTensor, w_hh: &FlexTensor) -> LstmRun {
    let dims = x_proj.shape();
    let (b, t, g4) = (dims[0], dims[1], dims[2]);
    let shape = kernels::LstmShape {
        batch: b,
        steps: t,
        hidden: g4 / 4,
    };
    let d = shape.hidden;
    let mut gates = vec![0.0f32; t * b * g4];
    kernels::swap_leading(values(x_proj), b, t, g4, &mut gates);
    let mut cells = vec![0.0f32; t * b * d];
    let mut states = vec![0.0f32; t * b * d];
    kernels::lstm_forward(&mut gates, values(w_hh), shape, &mut cells, &mut states);
    let mut out = vec![0.0f32; b * t * d];
    kernels::swap_leading(&states, t, b, d, &mut out);
    LstmRun {
        states: from_vec(out, Shape::new([b, t, d])),
        saved: LstmState {
            gates: std::sync::Arc::new(gates),
            cells: std::sync::Arc::new(cells),
            states: std::sync::Arc::new(states),
            w_hh: w_hh.clone(),
            shape,
        },
    }
}

#[derive(Debug)]
struct LstmBackward;

impl Backward<Flex, 2> for LstmBackward {
    type State = LstmState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let kernels::LstmShape {
            batch: b,
            steps: t,
            hidden: d,
        } = s.shape;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let mut d_states = vec![0.0f32; t * b * d];
        kernels::swap_leading(values(&dy), b, t, d, &mut d_states);
        let mut d_gates = vec![0.0f32; t * b * 4 * d];
        let mut d_w_hh = vec![0.0f32; d * 4 * d];
        kernels::lstm_backward(
            &d_states,
            &s.gates,
            &s.cells,
            &s.states,
            values(&s.w_hh),
            s.shape,
            &mut d_gates,
            &mut d_w_hh,
        );
        let [x_node, w_node] = ops.parents;
        if let Some(node) = x_node {
            let mut dx = vec![0.0f32; b * t * 4 * d];
            kernels::swap_leading(&d_gates, t, b, 4 * d, &mut dx);
            grads.register::<Flex>(node.id, from_vec(dx, Shape::new([b, t, 4 * d])));
        }
        if let Some(node) = w_node {
            grads.register::<Flex>(node.id, from_vec(d_w_hh, Shape::new([d, 4 * d])));
        }
    }
}

fn lstm_tracked(x_proj: TrackedTensor, w_hh: TrackedTensor) -> TrackedTensor {
    let run = lstm_run(
        &contiguous(x_proj.primitive().clone()),
        &contiguous(w_hh.primitive().clone()),
    );
    node::with_backward(
        LstmBackward,
        [x_proj.node(), w_hh.node()],
        run.saved,
        run.states,
    )
}

// ---------------------------------------------------------------- AdamW

/// Whether `x` is a plain (untracked) f32 `flex` tensor; the check places a clone, which
/// it drops, so `x` keeps its reference count.
fn is_plain_flex_f32<const D: usize>(x: &Tensor<D>) -> bool {
    matches!(place(x.clone()), Placed::Flex(_))
}

/// `x` as a contiguous tensor that this code alone holds, so its storage can be written in
/// place: `x` itself when it already is one, else a copy of its values.
fn exclusive(x: FlexTensor) -> FlexTensor {
    let n = x.layout().num_elements();
    let whole = x.layout().contiguous_offsets() == Some((0, n))
        && x.bytes().len() == n * std::mem::size_of::<f32>();
    if whole && x.is_unique() {
        x
    } else {
        let shape = x.shape();
        from_vec(values(&contiguous(x)).to_vec(), shape)
    }
}

/// The parameter, gradient and moments (m, v) of one AdamW update, as the caller gave them.
pub type AdamWInputs<const D: usize> = (Tensor<D>, Tensor<D>, Option<(Tensor<D>, Tensor<D>)>);

/// One AdamW update of θ with gradient g and moments (m, v) (none at t = 1) on plain `flex`
/// f32 tensors, in one pass ([`kernels::adamw`]); returns (θ, m, v) updated. θ and the
/// moments are written in place when nothing else holds them.
pub fn adamw<const D: usize>(
    theta: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
    scalars: kernels::AdamWScalars,
) -> Result<(Tensor<D>, Tensor<D>, Tensor<D>), AdamWInputs<D>> {
    let all_flex = is_plain_flex_f32(&theta)
        && is_plain_flex_f32(&grad)
        && moments
            .as_ref()
            .is_none_or(|(m, v)| is_plain_flex_f32(m) && is_plain_flex_f32(v));
    if !all_flex || moments.is_none() != scalars.first {
        return Err((theta, grad, moments));
    }
    let primitive = |x: Tensor<D>| {
        x.try_into_primitive::<Flex>()
            .expect("checked to be a flex tensor above")
    };
    let shape = theta.shape();
    let mut theta = exclusive(primitive(theta));
    let grad = contiguous(primitive(grad));
    let (mut m, mut v) = match moments {
        Some((m, v)) => (exclusive(primitive(m)), exclusive(primitive(v))),
        None => (
            FlexTensor::zeros(shape.clone(), DType::F32),
            FlexTensor::zeros(shape, DType::F32),
        ),
    };
    kernels::adamw(
        theta.storage_mut::<f32>(),
        values(&grad),
        m.storage_mut::<f32>(),
        v.storage_mut::<f32>(),
        scalars,
    );
    Ok((
        Tensor::from_primitive::<Flex>(theta),
        Tensor::from_primitive::<Flex>(m),
        Tensor::from_primitive::<Flex>(v),
    ))
}
