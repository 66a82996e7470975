//! How `fit` turns gradients into new parameters: unscale (f16), clip to the global norm,
//! AdamW. On the CPU burn's per-parameter optimizer with pipe's fused kernel
//! ([`super::adamw`]); on other devices, where every tensor op is a kernel launch, one
//! update over all parameters at once ([`FlatAdamW`]).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;

use super::checkpoint;
use super::fit::{adamw, ADAM_EPSILON};
use super::flat_adamw::FlatAdamW;
use super::layer_decay::{step_by_rate, ParamRates};
use super::{LossScale, TrainError};

/// The optimizer of a run, chosen by its device.
pub enum ParamUpdate {
    /// burn's `ModuleOptimizer`: one AdamW state per parameter (the CPU).
    PerParameter {
        optimizer: ModuleOptimizer,
        weight_decay: f64,
    },
    /// One AdamW update over the parameters as one vector (GPUs).
    Flat(Box<FlatAdamW>),
}

impl ParamUpdate {
    /// AdamW with weight decay λ for `model` on `device`: flat off the CPU unless
    /// `per_parameter` (an objective whose updates train different parts of the model).
    pub fn new<M: Module>(
        model: &M,
        weight_decay: f64,
        device: &Device,
        per_parameter: bool,
    ) -> Self {
        let cpu = device.clone().inner() == Device::flex();
        if cpu || per_parameter {
            ParamUpdate::PerParameter {
                optimizer: adamw(model, weight_decay),
                weight_decay,
            }
        } else {
            ParamUpdate::Flat(Box::new(FlatAdamW::new(model, weight_decay, ADAM_EPSILON)))
        }
    }

    /// One update of `model` with `grads`: returns the model and whether the update was
    /// applied (f16 skips one whose gradients overflowed).
    pub fn update<M: Module>(
        &mut self,
        lr: f64,
        rates: &ParamRates,
        model: M,
        grads: GradientsParams,
        loss_scale: &mut LossScale,
        max_norm: f64,
    ) -> Result<(M, bool), TrainError> {
        match self {
            ParamUpdate::PerParameter { optimizer, .. } => {
                let Some(grads) = loss_scale.unscale_and_clip(&model, grads, max_norm) else {
                    return Ok((model, false));
                };
                let model = match rates.is_uniform() {
                    true => optimizer.step(lr, model, grads),
                    false => step_by_rate(optimizer, lr, rates, model, grads),
                };
                Ok((model, true))
            }
            ParamUpdate::Flat(flat) => flat.step(lr, rates, model, grads, max_norm, loss_scale),
        }
    }

    /// Writes the optimizer state into the checkpoint folder `dir`; returns the files.
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
        match self {
            ParamUpdate::PerParameter { optimizer, .. } => {
                let path = dir.join(checkpoint::OPTIMIZER_FILE);
                optimizer
                    .save(&path)
                    .map_err(|e| TrainError::checkpoint(&path, e))?;
                Ok(vec![path])
            }
            ParamUpdate::Flat(flat) => flat.save(dir),
        }
    }

    /// This optimizer with the state saved in the checkpoint folder `dir`, for `model` as
    /// restored from it (the per-parameter state is keyed by its parameter ids).
    pub fn restore<M: Module>(
        self,
        dir: &Path,
        model: &M,
        device: &Device,
    ) -> Result<Self, TrainError> {
        match self {
            ParamUpdate::PerParameter { weight_decay, .. } => {
                let optimizer = checkpoint::restore_optimizer(dir, adamw(model, weight_decay))?;
                Ok(ParamUpdate::PerParameter {
                    optimizer,
                    weight_decay,
                })
            }
            ParamUpdate::Flat(flat) => Ok(ParamUpdate::Flat(Box::new(flat.restore(dir, device)?))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::{train_device, DeviceSpec};
    use burn::nn::LinearConfig;

    #[test]
    fn the_cpu_keeps_the_per_parameter_optimizer() {
        // `fit` trains on the autodiff twin of the device `--device cpu` names
        let cpu = DeviceSpec::parse("cpu")
            .and_then(|spec| spec.device())
            .unwrap_or_else(|e| panic!("{e}"));
        let device = train_device(&cpu);
        let model = LinearConfig::new(3, 2).init(&device);
        for per_parameter in [false, true] {
            let update = ParamUpdate::new(&model, 0.01, &device, per_parameter);
            assert!(matches!(update, ParamUpdate::PerParameter { .. }));
        }
    }
}
