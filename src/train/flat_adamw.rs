//! AdamW over every parameter at once, for devices where each tensor op is a kernel launch.
//!
//! On a GPU burn runs each tensor op as its own kernel, and launching one costs the host
//! about 11 µs (H200, burn's cubecl CUDA backend, `pipe bench train --phases`). burn's AdamW
//! is about fifteen ops for each of MiniLM's ~100 parameters, and the global-norm clipping
//! several more each: together 29 ms of a 74 ms step, more than the forward pass. Here the
//! gradients are copied into one flat vector g (one copy per parameter), clipping and the
//! AdamW update are a couple of dozen ops on the flat vectors, and each parameter is then a
//! view into the flat θ — the multi-tensor update PyTorch's `foreach`/`fused` AdamW does.
//!
//! The maths is burn's `AdamW` with decoupled weight decay (Loshchilov & Hutter 2019,
//! Algorithm 2) and [`super::clipping`]'s global norm, with two differences of form: one
//! step count t for all parameters (burn keeps one each, equal whenever every parameter gets
//! a gradient at every update, which this optimizer checks), and θ(1 − ηλ) computed as
//! θ − θ·ηλ. On the CPU `fit` keeps burn's per-parameter form ([`super::adamw`]), whose
//! fused kernel is bit-identical to burn's; tests hold the two to each other.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

use super::clipping::{no_decay_params, NORM_EPS};
use super::layer_decay::ParamRates;
use super::{LossScale, TrainError};

/// β₁ and β₂, as [`super::adamw`].
const BETA_1: f64 = 0.9;
const BETA_2: f64 = 0.999;
/// Each parameter starts and ends at a multiple of this many elements in the flat vectors
/// (512 bytes in f32), so that a parameter is a view of θ, not a copy: burn's cubecl
/// backends slice without copying only where the bytes before and after the slice are both
/// multiples of the device's memory alignment (512 on CUDA, cubecl-cuda's `mem_alignment`).
const ALIGN: usize = 128;
/// The checkpoint file of the flat moments m and v.
pub const STATE_FILE: &str = "optimizer-flat.bpk";
/// Beside it, their length and t.
pub const STATE_INFO_FILE: &str = "optimizer-flat.json";

/// Where one parameter lies in the flat vectors.
#[derive(Debug)]
struct Segment {
    id: ParamId,
    offset: usize,
    len: usize,
}

/// The flat layout and the per-element constants, fixed at the first update.
#[derive(Debug)]
struct Layout {
    segments: Vec<Segment>,
    len: usize,
    /// 1 where the parameter decays (λ applies), 0 for biases and LayerNorm.
    decays: Tensor<1>,
    /// The learning-rate factor of each element's group (layer-wise decay), when not all 1.
    rates: Option<Tensor<1>>,
}

/// AdamW's state over the flat vectors: θ (the parameters, which the model's parameters are
/// views of), the moments m and v, and the update count t.
#[derive(Debug)]
pub struct FlatAdamW {
    weight_decay: f64,
    epsilon: f64,
    no_decay: HashSet<ParamId>,
    layout: Option<Layout>,
    theta: Option<Tensor<1>>,
    /// m and v: none before the first update (unless restored from a checkpoint, when their
    /// length is checked against the layout at the first update).
    moments: Option<(Tensor<1>, Tensor<1>)>,
    t: usize,
}

/// The flat moments as a module, so they are saved and loaded as the model is (burnpack).
#[derive(Module, Debug)]
struct FlatMoments {
    m: Param<Tensor<1>>,
    v: Param<Tensor<1>>,
}

/// [`STATE_INFO_FILE`]: what loading the moments needs to know first, and t.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct FlatInfo {
    len: usize,
    t: usize,
}

impl FlatAdamW {
    /// AdamW with weight decay λ on every parameter of `model` except the 1-D ones (as
    /// [`super::fit::adamw`]), and stability term ε.
    pub fn new<M: Module>(model: &M, weight_decay: f64, epsilon: f32) -> Self {
        FlatAdamW {
            weight_decay,
            epsilon: f64::from(epsilon),
            no_decay: no_decay_params(model).into_iter().collect(),
            layout: None,
            theta: None,
            moments: None,
            t: 0,
        }
    }

    /// One update: divides the gradients by the loss scale (f16), clips them to global norm
    /// `max_norm` (none when ≤ 0), then the AdamW step at learning rate `lr · rate` for each
    /// parameter's group in `rates`; returns the model with its parameters replaced by views
    /// of the new θ, and whether the update was applied (f16 skips one whose gradients
    /// overflowed, as [`LossScale`] says).
    pub fn step<M: Module>(
        &mut self,
        lr: f64,
        rates: &ParamRates,
        model: M,
        grads: GradientsParams,
        max_norm: f64,
        loss_scale: &mut LossScale,
    ) -> Result<(M, bool), TrainError> {
        if self.layout.is_none() {
            self.start(&model, &grads, rates)?;
        }
        let layout = self.layout.as_ref().expect("laid out above");
        let device = layout.decays.device();
        let mut g = gather(&model, grads, layout, &device)?;
        let theta = self.theta.take().expect("θ is set with the layout");
        if loss_scale.is_dynamic() {
            g = g.div_scalar(loss_scale.scale());
        }
        let mut g_squared = g.clone() * g.clone();
        let norm = g_squared.clone().sum().sqrt();
        if loss_scale.is_dynamic() {
            // f16: the norm is read on the host, an overflow skips the update
            let norm: f32 = norm.clone().into_scalar();
            if !loss_scale.record(f64::from(norm)) {
                self.theta = Some(theta);
                return Ok((model, false));
            }
        }

        // clipping: g ← g · min(1, c / (‖g‖ + ε)), the norm not read on the host
        let g = if max_norm > 0.0 {
            let scale = norm
                .add_scalar(NORM_EPS)
                .recip()
                .mul_scalar(max_norm)
                .clamp_max(1.0);
            g_squared = g_squared * (scale.clone() * scale.clone());
            g * scale
        } else {
            g
        };

        // m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g²
        self.t += 1;
        let (m, v) = match self.moments.take() {
            Some((m, v)) => (
                m.mul_scalar(BETA_1) + g.mul_scalar(1.0 - BETA_1),
                v.mul_scalar(BETA_2) + g_squared.mul_scalar(1.0 - BETA_2),
            ),
            None => (
                g.mul_scalar(1.0 - BETA_1),
                g_squared.mul_scalar(1.0 - BETA_2),
            ),
        };
        // Δ = (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
        let t = self.t as i32;
        let delta = m.clone().div_scalar(1.0 - BETA_1.powi(t))
            / v.clone()
                .div_scalar(1.0 - BETA_2.powi(t))
                .sqrt()
                .add_scalar(self.epsilon);
        // θ ← θ − θ·ηλ·[decays] − η·Δ, with η = lr · the element's rate
        let step = match &layout.rates {
            Some(rates) => delta * rates.clone().mul_scalar(lr),
            None => delta.mul_scalar(lr),
        };
        let decay = match &layout.rates {
            Some(rates) => layout.decays.clone() * rates.clone(),
            None => layout.decays.clone(),
        };
        let theta = if self.weight_decay != 0.0 {
            theta.clone() - theta * decay.mul_scalar(lr * self.weight_decay) - step
        } else {
            theta - step
        };
        self.moments = Some((m, v));
        let model = scatter(model, &theta, layout);
        self.theta = Some(theta);
        Ok((model, true))
    }

    /// Lays out the parameters that have gradients at the first update and gathers θ.
    fn start<M: Module>(
        &mut self,
        model: &M,
        grads: &GradientsParams,
        rates: &ParamRates,
    ) -> Result<(), TrainError> {
        struct Plan<'a> {
            grads: &'a GradientsParams,
            no_decay: &'a HashSet<ParamId>,
            rates: &'a ParamRates,
            segments: Vec<Segment>,
            values: Vec<(usize, Tensor<1>)>,
            decays: Vec<f32>,
            factors: Vec<f32>,
            len: usize,
        }
        impl ModuleVisitor for Plan<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if self.grads.get::<D>(param.id).is_none() {
                    return; // frozen: not optimised
                }
                let value = param.val().inner();
                let len = value.shape().num_elements();
                let offset = self.len;
                let padded = len.div_ceil(ALIGN) * ALIGN;
                self.len += padded;
                let decays = if self.no_decay.contains(&param.id) {
                    0.0
                } else {
                    1.0
                };
                let factor = self.rates.factor(param.id) as f32;
                self.decays
                    .extend((0..padded).map(|i| if i < len { decays } else { 0.0 }));
                self.factors.extend(std::iter::repeat_n(factor, padded));
                self.values.push((offset, value.reshape([len])));
                self.segments.push(Segment {
                    id: param.id,
                    offset,
                    len,
                });
            }
        }
        let mut plan = Plan {
            grads,
            no_decay: &self.no_decay,
            rates,
            segments: Vec::new(),
            values: Vec::new(),
            decays: Vec::new(),
            factors: Vec::new(),
            len: 0,
        };
        model.visit(&mut plan);
        let Some((_, first)) = plan.values.first() else {
            return Err(TrainError::Invalid("no parameter has a gradient".into()));
        };
        let device = first.device();
        let mut theta = Tensor::<1>::zeros([plan.len], &device);
        for (offset, value) in plan.values {
            let len = value.shape().num_elements();
            theta = theta.slice_assign(offset..offset + len, value);
        }
        let uniform = plan.factors.iter().all(|&f| f == 1.0);
        let layout = Layout {
            segments: plan.segments,
            len: plan.len,
            decays: Tensor::from_data(TensorData::new(plan.decays, [plan.len]), &device),
            rates: (!uniform)
                .then(|| Tensor::from_data(TensorData::new(plan.factors, [plan.len]), &device)),
        };
        if let Some((m, v)) = self.moments.take() {
            let saved = m.shape().num_elements();
            if saved != layout.len {
                return Err(TrainError::Invalid(format!(
                    "the checkpoint's optimizer state has {saved} elements, this model's \
                     parameters {}: remove the checkpoint to start over",
                    layout.len
                )));
            }
            self.moments = Some((m.to_device(&device), v.to_device(&device)));
        }
        self.theta = Some(theta);
        self.layout = Some(layout);
        Ok(())
    }

    /// Writes m and v to `dir/`[`STATE_FILE`], their length and t to [`STATE_INFO_FILE`];
    /// returns the files written.
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
        let Some((m, v)) = self.moments.clone() else {
            return Err(TrainError::Invalid(
                "no optimizer state to save before the first update".into(),
            ));
        };
        let info_path = dir.join(STATE_INFO_FILE);
        let info = FlatInfo {
            len: m.shape().num_elements(),
            t: self.t,
        };
        let text =
            serde_json::to_string(&info).map_err(|e| TrainError::checkpoint(&info_path, e))?;
        std::fs::write(&info_path, text).map_err(|e| TrainError::io(&info_path, e))?;
        let path = dir.join(STATE_FILE);
        let moments = FlatMoments {
            m: Param::from_tensor(m),
            v: Param::from_tensor(v),
        };
        moments
            .save_file(&path)
            .map_err(|e| TrainError::checkpoint(&path, e))?;
        Ok(vec![path, info_path])
    }

    /// Loads m, v and t saved by [`Self::save`] in `dir`; they take effect at the next update.
    pub fn restore(mut self, dir: &Path, device: &Device) -> Result<Self, TrainError> {
        let info_path = dir.join(STATE_INFO_FILE);
        if !info_path.is_file() {
            return Err(TrainError::Invalid(format!(
                "{}: no flat optimizer state (a checkpoint written on the CPU keeps a \
                 per-parameter one); resume on the kind of device that wrote it, or remove \
                 the checkpoint to start over",
                dir.display()
            )));
        }
        let text =
            std::fs::read_to_string(&info_path).map_err(|e| TrainError::io(&info_path, e))?;
        let info: FlatInfo =
            serde_json::from_str(&text).map_err(|e| TrainError::checkpoint(&info_path, e))?;
        let path = dir.join(STATE_FILE);
        // the moments live beside θ, off the autodiff graph
        let device = &device.clone().inner();
        let template = FlatMoments {
            m: Param::from_tensor(Tensor::zeros([info.len], device)),
            v: Param::from_tensor(Tensor::zeros([info.len], device)),
        };
        let moments = template
            .try_load_file(&path)
            .map_err(|e| TrainError::checkpoint(&path, e))?;
        self.t = info.t;
        self.moments = Some((moments.m.val(), moments.v.val()));
        Ok(self)
    }
}

/// g: every laid-out parameter's gradient at its offset (zero in the padding).
fn gather<M: Module>(
    model: &M,
    grads: GradientsParams,
    layout: &Layout,
    device: &Device,
) -> Result<Tensor<1>, TrainError> {
    struct Gather {
        grads: GradientsParams,
        found: HashMap<ParamId, Tensor<1>>,
    }
    impl ModuleVisitor for Gather {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                let len = g.shape().num_elements();
                self.found.insert(param.id, g.reshape([len]));
            }
        }
    }
    let mut gather = Gather {
        grads,
        found: HashMap::new(),
    };
    model.visit(&mut gather);
    let mut g = Tensor::<1>::zeros([layout.len], device);
    for segment in &layout.segments {
        let Some(grad) = gather.found.remove(&segment.id) else {
            return Err(TrainError::Invalid(format!(
                "flat AdamW: parameter {} got no gradient in this update (it had one in the \
                 first); an objective that trains parts of the model in turn needs the \
                 per-parameter optimizer",
                segment.id
            )));
        };
        g = g.slice_assign(segment.offset..segment.offset + segment.len, grad);
    }
    if let Some(id) = gather.found.keys().next() {
        return Err(TrainError::Invalid(format!(
            "flat AdamW: parameter {id} got a gradient it did not have at the first update"
        )));
    }
    Ok(g)
}

/// The model with each laid-out parameter replaced by its view of θ (same id, shape and
/// `require_grad`).
fn scatter<M: Module>(model: M, theta: &Tensor<1>, layout: &Layout) -> M {
    struct Scatter<'a> {
        theta: &'a Tensor<1>,
        at: HashMap<ParamId, &'a Segment>,
    }
    impl ModuleMapper for Scatter<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let Some(segment) = self.at.get(&param.id).copied() else {
                return param;
            };
            let (id, tensor, mapper) = param.consume();
            let shape = tensor.shape();
            let require_grad = tensor.is_require_grad();
            let autodiff = tensor.device().is_autodiff();
            let view: Tensor<D> = self
                .theta
                .clone()
                .slice(segment.offset..segment.offset + segment.len)
                .reshape(shape);
            let value = match autodiff {
                true => Tensor::from_inner(view).set_require_grad(require_grad),
                false => view,
            };
            Param::from_mapped_value(id, value, mapper)
        }
    }
    let mut scatter = Scatter {
        theta,
        at: layout.segments.iter().map(|s| (s.id, s)).collect(),
    };
    model.map(&mut scatter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Precision;
    use crate::train::clipping::clip_global_norm;
    use crate::train::fit::adamw;
    use crate::train::layer_decay::step_by_rate;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::ModuleOptimizer;
    use burn::tensor::Distribution;

    /// Two layers: their weights decay, their biases do not.
    #[derive(Module, Debug)]
    struct Tiny {
        a: Linear,
        b: Linear,
    }

    fn tiny(device: &Device) -> Tiny {
        Tiny {
            a: LinearConfig::new(7, 5).init(device),
            b: LinearConfig::new(5, 3).init(device),
        }
    }

    fn loss(model: &Tiny, x: &Tensor<2>, with_b: bool) -> Tensor<1> {
        let h = model.a.forward(x.clone()).tanh();
        let y = if with_b { model.b.forward(h) } else { h };
        y.powf_scalar(2.0).mean()
    }

    fn grads(model: &Tiny, x: &Tensor<2>) -> GradientsParams {
        GradientsParams::from_grads(loss(model, x, true).backward(), model)
    }

    fn values(model: &Tiny) -> Vec<f32> {
        let mut out = Vec::new();
        for layer in [&model.a, &model.b] {
            let bias = layer.bias.as_ref().map(|b| b.val().into_data());
            for data in [Some(layer.weight.val().into_data()), bias]
                .into_iter()
                .flatten()
            {
                out.extend(
                    data.try_into_vec::<f32>()
                        .unwrap_or_else(|e| panic!("{e:?}")),
                );
            }
        }
        out
    }

    fn assert_close(flat: &[f32], per: &[f32], what: &str) {
        assert_eq!(flat.len(), per.len());
        for (i, (a, b)) in flat.iter().zip(per).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                "{what}: element {i}: flat {a} vs per-parameter {b}"
            );
        }
    }

    /// `steps` updates of the same model by both optimizers, compared after each.
    fn compare(rates: impl Fn(&Tiny) -> ParamRates, max_norm: f64, steps: usize) {
        let device = Device::flex().autodiff();
        let mut flat_model = tiny(&device);
        let mut per_model = flat_model.clone();
        let mut flat = FlatAdamW::new(&flat_model, 0.01, 1e-6);
        let mut per: ModuleOptimizer = adamw(&per_model, 0.01);
        let mut scale = LossScale::for_precision(Precision::F32);
        for step in 0..steps {
            let x = Tensor::<2>::random([4, 7], Distribution::Normal(0.0, 3.0), &device);
            let lr = 1e-2 / (1 + step) as f64;
            let r = rates(&flat_model);
            let g = grads(&flat_model, &x);
            let (model, applied) = flat
                .step(lr, &r, flat_model, g, max_norm, &mut scale)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(applied);
            flat_model = model;
            let (g, norm) = clip_global_norm(&per_model, grads(&per_model, &x), max_norm);
            if max_norm > 0.0 {
                let norm: f32 = norm.expect("a norm").into_scalar();
                assert!(f64::from(norm) > max_norm, "clipping is exercised ({norm})");
            }
            per_model = match r.is_uniform() {
                true => per.step(lr, per_model, g),
                false => step_by_rate(&mut per, lr, &r, per_model, g),
            };
            assert_close(
                &values(&flat_model),
                &values(&per_model),
                &format!("step {step}"),
            );
        }
    }

    #[test]
    fn flat_adamw_matches_burns_per_parameter_adamw_with_clipping() {
        compare(|_| ParamRates::default(), 0.05, 4);
    }

    #[test]
    fn flat_adamw_matches_per_group_rates() {
        compare(|m| ParamRates::default().with_group(&m.b, 0.25), 0.0, 3);
    }

    /// One f32 update of `model` on input `x` at lr 1e-2, clipped to norm 1.
    fn update(flat: &mut FlatAdamW, model: &Tiny, x: &Tensor<2>) -> Tiny {
        let mut scale = LossScale::for_precision(Precision::F32);
        let rates = ParamRates::default();
        let g = grads(model, x);
        let (model, applied) = flat
            .step(1e-2, &rates, model.clone(), g, 1.0, &mut scale)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(applied);
        model
    }

    #[test]
    fn a_restored_state_continues_as_the_saved_one() {
        let device = Device::flex().autodiff();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut model = tiny(&device);
        let mut flat = FlatAdamW::new(&model, 0.01, 1e-6);
        let xs: Vec<Tensor<2>> = (0..3)
            .map(|_| Tensor::random([4, 7], Distribution::Default, &device))
            .collect();
        for x in &xs[..2] {
            model = update(&mut flat, &model, x);
        }
        flat.save(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let mut resumed = FlatAdamW::new(&model, 0.01, 1e-6)
            .restore(dir.path(), &device)
            .unwrap_or_else(|e| panic!("{e}"));
        let a = update(&mut flat, &model, &xs[2]);
        let b = update(&mut resumed, &model, &xs[2]);
        assert_eq!(values(&a), values(&b));
    }

    #[test]
    fn a_parameter_without_a_gradient_is_an_error_not_a_silent_update() {
        let device = Device::flex().autodiff();
        let model = tiny(&device);
        let mut flat = FlatAdamW::new(&model, 0.01, 1e-6);
        let x = Tensor::<2>::random([4, 7], Distribution::Default, &device);
        let model = update(&mut flat, &model, &x);
        let only_a = GradientsParams::from_grads(loss(&model, &x, false).backward(), &model);
        let mut scale = LossScale::for_precision(Precision::F32);
        let rates = ParamRates::default();
        let Err(err) = flat.step(1e-2, &rates, model.clone(), only_a, 1.0, &mut scale) else {
            panic!("b's parameters got no gradient, and the update went on");
        };
        assert!(err.to_string().contains("got no gradient"), "{err}");
        // the refused update left the state as it was: the next full one goes on
        update(&mut flat, &model, &x);
    }
}
