//! Inference: predicted labels (and the head's α) for a set of instances.

use std::sync::atomic::AtomicBool;

use burn::prelude::*;

use super::batching::eval_batches;
use super::classifier::{Batch, EncodedInstance, SequenceClassifier};
use super::concurrent_batches::map_batches;
use super::TrainError;
use crate::metrics::{Confusion, Prf};

/// One instance's prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Index of the arg-max class.
    pub label: usize,
    /// The head's attention weights over this instance's tokens ([CLS] … [SEP]), for heads
    /// that have them and when asked for.
    pub alpha: Option<Vec<f32>>,
}

/// Predicts every instance, in input order. `model` should be in inference mode
/// (`model.valid()`) on `device`; batches are sorted by length to minimise padding, and on
/// the CPU several run at once (see [`super::concurrent_batches`]).
pub fn predict(
    model: &SequenceClassifier,
    instances: &[EncodedInstance],
    pad_id: u32,
    batch_size: usize,
    device: &Device,
    with_alpha: bool,
    cancel: &AtomicBool,
) -> Result<Vec<Prediction>, TrainError> {
    let lengths: Vec<usize> = instances.iter().map(|x| x.ids.len()).collect();
    let batches = eval_batches(&lengths, batch_size);
    // Per batch: arg-max labels and, when asked for, the head's α rows and their width.
    let results = map_batches(&batches, device, cancel, |indices| {
        let refs: Vec<&EncodedInstance> = indices.iter().map(|&i| &instances[i]).collect();
        let batch = Batch::new(&refs, pad_id, device);
        let result = model.forward(&batch)?;
        let labels = read_ints(result.logits.argmax(1))?;
        let alphas = match result.alpha.filter(|_| with_alpha) {
            Some(alpha) => {
                let [_, tokens] = alpha.dims();
                Some((read_floats(alpha)?, tokens))
            }
            None => None,
        };
        Ok((labels, alphas))
    })?;
    let mut out: Vec<Option<Prediction>> = vec![None; instances.len()];
    for (indices, (labels, alphas)) in batches.iter().zip(results) {
        for (row, &i) in indices.iter().enumerate() {
            let alpha = alphas.as_ref().map(|(values, tokens)| {
                let start = row * tokens;
                let width = lengths[i].min(*tokens);
                values[start..start + width].to_vec()
            });
            out[i] = Some(Prediction {
                label: labels[row] as usize,
                alpha,
            });
        }
    }
    out.into_iter()
        .map(|p| p.ok_or_else(|| TrainError::Invalid("an instance was not predicted".into())))
        .collect()
}

/// Micro P/R/F1 over the labels other than `negative` (see [`Confusion::micro`]).
pub fn micro_prf(
    labels: &[String],
    negative: Option<&str>,
    gold: &[usize],
    pred: &[usize],
) -> Result<Prf, TrainError> {
    let name = |i: usize| {
        labels
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| TrainError::Invalid(format!("label index {i} out of range")))
    };
    let pairs = gold
        .iter()
        .zip(pred)
        .map(|(&g, &p)| Ok((name(g)?, name(p)?)))
        .collect::<Result<Vec<_>, TrainError>>()?;
    Ok(Confusion::from_pairs(labels.to_vec(), pairs)?.micro(negative)?)
}

fn read_ints<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>, TrainError> {
    t.into_data()
        .try_into_vec_as::<i64>()
        .map_err(|e| TrainError::Invalid(format!("reading predictions: {e:?}")))
}

fn read_floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, TrainError> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| TrainError::Invalid(format!("reading attention weights: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::heads::HeadKind;
    use crate::model::BertConfig;
    use crate::train::rng::SplitMix64;

    /// A tiny random encoder with the `sll_att` head (α over each instance's tokens).
    fn model(device: &Device) -> SequenceClassifier {
        SequenceClassifier::random(&BertConfig::tiny(50), HeadKind::SllAtt, 5, 3, device)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn predictions_come_back_in_input_order() {
        let device = Device::flex();
        let model = model(&device);
        let mut rng = SplitMix64::new(9);
        // lengths deliberately unsorted, so sorted batches reorder the instances
        let instances: Vec<EncodedInstance> = [9, 3, 14, 5, 11, 3, 7, 16, 4, 12]
            .iter()
            .map(|&len| EncodedInstance {
                ids: (0..len).map(|_| 1 + rng.below(49) as u32).collect(),
                label: 0,
                entities: [0, 0],
            })
            .collect();
        let cancel = AtomicBool::new(false);
        let batched = predict(&model, &instances, 0, 4, &device, true, &cancel)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(batched.len(), instances.len());
        for (instance, got) in instances.iter().zip(&batched) {
            // each instance alone: no padding, no reordering
            let alone = predict(
                &model,
                std::slice::from_ref(instance),
                0,
                1,
                &device,
                true,
                &cancel,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let (want, have) = (
                alone[0].alpha.as_deref().unwrap_or_default(),
                got.alpha.as_deref().unwrap_or_default(),
            );
            assert_eq!(have.len(), instance.ids.len());
            assert_eq!(want.len(), have.len());
            for (a, b) in want.iter().zip(have) {
                assert!((a - b).abs() < 1e-5, "α {a} alone vs {b} in a batch");
            }
            assert_eq!(alone[0].label, got.label);
        }
    }
}
