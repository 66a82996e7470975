//! Layer-wise learning-rate decay (Chai et al. 2022, MTL-LS §"Experimental settings":
//! "the layer attenuation strategy is used to reduce the learning rate of each layer, i.e.
//! lr[n−1] = lr[n]·decay_rate", decay_rate = 0.9).
//!
//! With ξ the decay and n encoder layers, encoder layer l (1-based) learns at lr·ξ^(n−l),
//! the embeddings (l = 0) at lr·ξ^n, and everything above the encoder (heads, CRFs) at lr.
//! The lower a layer, the less it moves: the shared, general encoding is preserved.
//!
//! burn's optimizer takes one learning rate per step, so an update with decay is one
//! optimizer step per depth ([`ParamRates`], [`step_by_rate`]), each given only that depth's gradients (a parameter without a
//! gradient is left untouched, its Adam moments included).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use crate::model::BertModel;

/// The depth of each encoder parameter: 0 for the embeddings, l for encoder layer l.
/// Parameters not recorded (heads) are above the encoder.
#[derive(Debug, Clone, Default)]
pub struct LayerDepths {
    depth: HashMap<ParamId, usize>,
    /// n, the number of encoder layers.
    layers: usize,
}

impl LayerDepths {
    /// No parameter recorded, `layers` encoder layers.
    pub fn new(layers: usize) -> Self {
        LayerDepths {
            depth: HashMap::new(),
            layers,
        }
    }

    /// The embeddings at depth 0 and encoder layer `i` (0-based) at depth `i + 1`.
    pub fn of_encoder(encoder: &BertModel) -> Self {
        let mut depths = LayerDepths::new(encoder.num_layers());
        depths.add(&encoder.embeddings, 0);
        for (i, layer) in encoder.encoder.layer.iter().enumerate() {
            depths.add(layer, i + 1);
        }
        depths
    }

    /// Records every parameter of `module` at `depth`.
    pub fn add<M: Module>(&mut self, module: &M, depth: usize) {
        struct Record<'a>(&'a mut HashMap<ParamId, usize>, usize);
        impl ModuleVisitor for Record<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.insert(param.id, self.1);
            }
        }
        module.visit(&mut Record(&mut self.depth, depth));
    }

    /// Whether no parameter is recorded.
    pub fn is_empty(&self) -> bool {
        self.depth.is_empty()
    }

    /// The learning-rate factor of parameter `id`: ξ^(n − depth), 1 above the encoder.
    pub fn factor(&self, id: ParamId, decay: f64) -> f64 {
        match self.depth.get(&id) {
            Some(&d) => decay.powi(self.layers.saturating_sub(d) as i32),
            None => 1.0,
        }
    }

    /// `model` with its recorded (encoder) parameters tracked by autodiff or not. While
    /// they are not, the backward pass stops at the encoder's output: no encoder gradient
    /// is computed, and an update leaves the encoder, and its AdamW moments, as they are.
    pub fn set_encoder_trainable<M: Module>(&self, model: M, trainable: bool) -> M {
        struct Track<'a>(&'a HashMap<ParamId, usize>, bool);
        impl ModuleMapper for Track<'_> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                match self.0.contains_key(&param.id) {
                    true => param.set_require_grad(self.1),
                    false => param,
                }
            }
        }
        model.map(&mut Track(&self.depth, trainable))
    }

    /// The group (0 = above the encoder and layer n, … n = embeddings) of parameter `id`.
    fn group(&self, id: ParamId) -> usize {
        self.depth
            .get(&id)
            .map_or(0, |&d| self.layers.saturating_sub(d))
    }
}

/// Learning-rate factors by parameter: the parameters of group `g` step at `lr · factor_g`;
/// group 0 (factor 1 unless set) holds every parameter not placed in another. Layer-wise
/// decay is one such grouping ([`ParamRates::of_layers`]), a probe's scalar mix at its own
/// rate another.
#[derive(Debug, Clone)]
pub struct ParamRates {
    group: HashMap<ParamId, usize>,
    factors: Vec<f64>,
}

impl Default for ParamRates {
    /// Every parameter at the scheduled rate.
    fn default() -> Self {
        ParamRates {
            group: HashMap::new(),
            factors: vec![1.0],
        }
    }
}

impl ParamRates {
    /// Layer-wise decay ξ: group `g` (0 = above the encoder and layer n, … n = the
    /// embeddings) at ξ^g.
    pub fn of_layers(depths: &LayerDepths, decay: f64) -> Self {
        ParamRates {
            group: depths
                .depth
                .keys()
                .map(|&id| (id, depths.group(id)))
                .collect(),
            factors: (0..=depths.layers).map(|g| decay.powi(g as i32)).collect(),
        }
    }

    /// These rates with every parameter of `module` in a new group at `factor`.
    pub fn with_group<M: Module>(mut self, module: &M, factor: f64) -> Self {
        let g = self.factors.len();
        self.factors.push(factor);
        struct Record<'a>(&'a mut HashMap<ParamId, usize>, usize);
        impl ModuleVisitor for Record<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.insert(param.id, self.1);
            }
        }
        module.visit(&mut Record(&mut self.group, g));
        self
    }

    /// The group of parameter `id`: 0 for one placed in none.
    fn group_of(&self, id: ParamId) -> usize {
        self.group.get(&id).copied().unwrap_or(0)
    }

    /// The rate factor of parameter `id`.
    pub fn factor(&self, id: ParamId) -> f64 {
        self.factors.get(self.group_of(id)).copied().unwrap_or(1.0)
    }

    /// Whether every parameter steps at the scheduled rate (one optimizer step suffices).
    pub fn is_uniform(&self) -> bool {
        self.factors.iter().all(|&f| f == 1.0)
    }

    /// Whether any parameter has a group of its own.
    pub fn is_grouped(&self) -> bool {
        self.factors.len() > 1
    }
}

/// One optimizer update of `model` with layer-wise rates: the parameters at group `g`
/// (ξ^g) step at `lr · ξ^g`.
pub fn step_by_layer<M: Module>(
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    decay: f64,
    depths: &LayerDepths,
    model: M,
    grads: GradientsParams,
) -> M {
    step_by_rate(
        optimizer,
        lr,
        &ParamRates::of_layers(depths, decay),
        model,
        grads,
    )
}

/// One optimizer update of `model` with per-group rates: one optimizer step per group,
/// given only that group's gradients, at `lr · factor_g` (group 0 first).
pub fn step_by_rate<M: Module>(
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    rates: &ParamRates,
    model: M,
    grads: GradientsParams,
) -> M {
    let mut split = Split {
        rates,
        from: grads,
        groups: rates
            .factors
            .iter()
            .map(|_| GradientsParams::new())
            .collect(),
    };
    model.visit(&mut split);
    let mut model = model;
    for (grads, factor) in split.groups.into_iter().zip(&rates.factors) {
        if grads.is_empty() {
            continue;
        }
        model = optimizer.step(lr * factor, model, grads);
    }
    model
}

/// Moves each parameter's gradient into its group's set.
struct Split<'a> {
    rates: &'a ParamRates,
    from: GradientsParams,
    groups: Vec<GradientsParams>,
}

impl ModuleVisitor for Split<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.from.remove::<D>(param.id) {
            let group = self.rates.group_of(param.id);
            self.groups[group].register::<D>(param.id, g);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::device::train_device;
    use crate::model::BertConfig;
    use crate::train::fit::adamw;
    use crate::train::rng::with_backend_seed;

    /// The largest |Δθ| of a module's parameters between two versions of it.
    pub(crate) fn max_change<M: Module>(before: &M, after: &M) -> f64 {
        struct Values(Vec<Vec<f32>>);
        impl ModuleVisitor for Values {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let data = param.val().into_data();
                self.0
                    .push(data.try_to_vec::<f32>().unwrap_or_else(|e| panic!("{e:?}")));
            }
        }
        let (mut a, mut b) = (Values(Vec::new()), Values(Vec::new()));
        before.visit(&mut a);
        after.visit(&mut b);
        a.0.iter()
            .zip(&b.0)
            .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| f64::from((p - q).abs())))
            .fold(0.0, f64::max)
    }

    #[test]
    fn factors_follow_the_papers_rule() {
        let device = train_device(&Device::flex());
        let config = BertConfig::tiny(30);
        let encoder = BertModel::new(&config, &device);
        let depths = LayerDepths::of_encoder(&encoder);
        let id = |m: &dyn Fn(&mut Vec<ParamId>)| {
            let mut ids = Vec::new();
            m(&mut ids);
            ids[0]
        };
        struct Ids<'a>(&'a mut Vec<ParamId>);
        impl ModuleVisitor for Ids<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(param.id);
            }
        }
        let embedding = id(&|v| encoder.embeddings.visit(&mut Ids(v)));
        let layer1 = id(&|v| encoder.encoder.layer[0].visit(&mut Ids(v)));
        let layer2 = id(&|v| encoder.encoder.layer[1].visit(&mut Ids(v)));
        // n = 2: layer 2 at lr, layer 1 at 0.9 lr, the embeddings at 0.81 lr
        assert_eq!(depths.factor(layer2, 0.9), 1.0);
        assert!((depths.factor(layer1, 0.9) - 0.9).abs() < 1e-12);
        assert!((depths.factor(embedding, 0.9) - 0.81).abs() < 1e-12);
        assert_eq!(depths.factor(ParamId::new(), 0.9), 1.0);
    }

    /// Adam's first step moves every weight with a gradient by about lr (|m̂ / √v̂| = 1), so
    /// the largest change of each layer reads its learning rate back from the optimizer.
    #[test]
    fn one_step_moves_each_layer_at_its_rate() {
        let device = train_device(&Device::flex());
        let config = BertConfig::tiny(30);
        let encoder = with_backend_seed(&device, 3, || BertModel::new(&config, &device));
        let depths = LayerDepths::of_encoder(&encoder);
        let ids = Tensor::<2, Int>::from_data([[2, 5, 7, 9, 3]], &device);
        let mask = Tensor::<2, Int>::ones([1, 5], &device);
        let out = encoder.forward(ids, mask, false);
        // a fixed, uneven weighting (Σ h² would be constant under the last LayerNorm)
        let h = config.hidden_size;
        let w = Tensor::<1, Int>::arange(0..(5 * h) as i64, &device)
            .float()
            .sin()
            .reshape([1, 5, h]);
        let loss = out.last_hidden_state.mul(w).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &encoder);
        let mut optimizer = adamw(&encoder, 0.0);
        let lr = 1e-2;
        let after = step_by_layer(&mut optimizer, lr, 0.5, &depths, encoder.clone(), grads);
        let moved = |l: usize| max_change(&encoder.encoder.layer[l], &after.encoder.layer[l]);
        let top = moved(1);
        let below = moved(0);
        let emb = max_change(&encoder.embeddings, &after.embeddings);
        assert!((top / lr - 1.0).abs() < 0.05, "layer 2 moved {top}");
        assert!(
            (below / (0.5 * lr) - 1.0).abs() < 0.05,
            "layer 1 moved {below}"
        );
        assert!(
            (emb / (0.25 * lr) - 1.0).abs() < 0.05,
            "embeddings moved {emb}"
        );
    }
}
