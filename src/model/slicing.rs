//! Layer slicing (Chai et al. 2022, MTL-LS, §"Hierarchical shared transfer learning" and
//! Fig. 2): the encoder is cut at layer k of n. The "underlying" part — the embedding
//! table and layers 1..k — is shared by every task and taken from the multi-task (MTL-XC)
//! model; the upper layers k+1..n are task-specific, one copy per task, initialised from
//! the pre-trained checkpoint. Slicing rate = k / n: 0 shares only the embeddings, 1 shares
//! the whole encoder.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;

use super::bert::{BertEncoder, BertModel};
use super::ModelError;

/// k, the shared layers of n at slicing rate `rate` in [0, 1]: round(rate · n), half away
/// from zero (n = 6: 0.25 → 2, 0.5 → 3, 0.75 → 5; n = 12: 3, 6, 9).
pub fn shared_layers(rate: f64, n: usize) -> usize {
    ((rate * n as f64).round() as usize).min(n)
}

/// The sliced encoder: `shared` keeps its embeddings and lower `k` layers (the part all
/// tasks use); each of `tasks` gets its own copy of `upper`'s layers k+1..n, with
/// parameters of its own (an update of one task's layers leaves the others').
pub fn slice(
    shared: BertModel,
    upper: &BertModel,
    k: usize,
    tasks: usize,
) -> Result<(BertModel, Vec<BertEncoder>), ModelError> {
    let n = upper.num_layers();
    if shared.num_layers() != n {
        return Err(ModelError::Invalid(format!(
            "the shared encoder has {} layers, the pre-trained one {n}",
            shared.num_layers()
        )));
    }
    if k > n {
        return Err(ModelError::Invalid(format!(
            "{k} shared layers of an encoder of {n}"
        )));
    }
    let mut lower = shared;
    lower.encoder.layer.truncate(k);
    let uppers = (0..tasks)
        .map(|_| BertEncoder {
            layer: upper.encoder.layer[k..]
                .iter()
                .map(|layer| with_own_params(layer.clone()))
                .collect(),
        })
        .collect();
    Ok((lower, uppers))
}

/// The encoder task `t` runs: `lower`'s embeddings and layers, then `upper`'s. The
/// parameters are `lower`'s and `upper`'s own (a clone shares them), so gradients reach
/// both.
pub fn stack(lower: &BertModel, upper: &BertEncoder) -> BertModel {
    let mut model = lower.clone();
    model.encoder.layer.extend(upper.layer.iter().cloned());
    model
}

/// `module` with the same values under new parameter ids: a copy the optimizer treats as
/// separate parameters (a plain clone keeps the ids, and with them one shared parameter).
pub fn with_own_params<M: Module>(module: M) -> M {
    struct NewIds;
    impl ModuleMapper for NewIds {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            Param::from_tensor(param.val().detach())
        }
    }
    module.map(&mut NewIds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_layers_round_the_rate() {
        let six: Vec<usize> = [0.0, 0.25, 0.5, 0.75, 1.0]
            .iter()
            .map(|&r| shared_layers(r, 6))
            .collect();
        assert_eq!(six, vec![0, 2, 3, 5, 6]);
        let twelve: Vec<usize> = [0.25, 0.5, 0.75]
            .iter()
            .map(|&r| shared_layers(r, 12))
            .collect();
        assert_eq!(twelve, vec![3, 6, 9]);
    }
}
