//! The frozen encoder's states of every layer, computed once per instance and kept on the
//! host, so that each probing classifier `P^0 … P^L` trains on them without running BERT
//! again.
//!
//! **Memory**: f32 for every real token of every layer, `instances × (L+1) × tokens × d × 4`
//! bytes (padding is not stored). For BERT-base (L = 12, d = 768) at ~70 word pieces per
//! sentence that is ~2.8 MB per instance, so 10 000 training instances need ~28 GB: cap
//! the training set (`max_train`) on large corpora. MiniLM-L6 (d = 384) needs ~0.75 MB
//! per instance.

use burn::tensor::{Device, Tensor, TensorData};

use super::ProbeEnv;
use crate::model::BertModel;
use crate::train::batching::eval_batches;
use crate::train::concurrent_batches::map_batches;
use crate::train::{Batch, EncodedInstance, TrainError};

/// One instance's states: layer-major `[(L+1), len, d]`, real tokens only.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStates {
    /// Tokens, [CLS] and [SEP] included.
    pub len: usize,
    pub values: Vec<f32>,
}

/// The states `h^0 … h^L` of a set of instances (`h^0` is the embeddings' output).
#[derive(Debug, Clone)]
pub struct LayerStates {
    num_states: usize,
    hidden_size: usize,
    max_len: usize,
    instances: Vec<InstanceStates>,
}

impl LayerStates {
    /// Checks that every instance holds `num_states × len × hidden_size` values with
    /// `len ≤ max_len`.
    pub fn new(
        num_states: usize,
        hidden_size: usize,
        max_len: usize,
        instances: Vec<InstanceStates>,
    ) -> Result<Self, TrainError> {
        for (i, x) in instances.iter().enumerate() {
            if x.len > max_len || x.values.len() != num_states * x.len * hidden_size {
                return Err(TrainError::Invalid(format!(
                    "instance {i}: {} values for {} tokens (max_len {max_len}) × {num_states} \
                     layers × width {hidden_size}",
                    x.values.len(),
                    x.len
                )));
            }
        }
        Ok(LayerStates {
            num_states,
            hidden_size,
            max_len,
            instances,
        })
    }

    /// L + 1.
    pub fn num_states(&self) -> usize {
        self.num_states
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Tokens per padded sequence.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.instances
            .iter()
            .map(|x| x.values.len() * std::mem::size_of::<f32>())
            .sum()
    }

    /// The probe input for instances `indices` over layers `0..=top`:
    /// `[B, top+1, max_len, d]`, zero beyond each instance's tokens.
    pub fn batch(&self, indices: &[usize], top: usize, device: &Device) -> Tensor<4> {
        let (layers, t, d) = (top + 1, self.max_len, self.hidden_size);
        assert!(
            layers <= self.num_states,
            "layer {top} of {} states",
            self.num_states
        );
        let mut data = vec![0.0f32; indices.len() * layers * t * d];
        for (row, &i) in indices.iter().enumerate() {
            let x = &self.instances[i];
            let per_layer = x.len * d;
            for k in 0..layers {
                let to = (row * layers + k) * t * d;
                data[to..to + per_layer]
                    .copy_from_slice(&x.values[k * per_layer..(k + 1) * per_layer]);
            }
        }
        Tensor::from_data(TensorData::new(data, [indices.len(), layers, t, d]), device)
    }
}

/// Runs the frozen `encoder` (in inference mode on `env.device`) once over `instances`, in
/// length-sorted batches, and keeps every layer's states; the progress bar advances by one
/// per batch.
pub fn extract(
    encoder: &BertModel,
    instances: &[EncodedInstance],
    pad_id: u32,
    max_len: usize,
    batch_size: usize,
    env: &ProbeEnv,
) -> Result<LayerStates, TrainError> {
    let lengths: Vec<usize> = instances.iter().map(|x| x.ids.len()).collect();
    if let Some(too_long) = lengths.iter().find(|&&n| n > max_len) {
        return Err(TrainError::Invalid(format!(
            "an instance of {too_long} tokens exceeds max_len {max_len}"
        )));
    }
    let num_states = encoder.num_layers() + 1;
    let mut hidden_size = 0;
    let mut out: Vec<Option<InstanceStates>> = vec![None; instances.len()];
    let batches = eval_batches(&lengths, batch_size);
    // Per batch: d and each instance's real-token states (the padded batch is dropped
    // inside, so only what is kept accumulates).
    let encoded = map_batches(&batches, env.device, env.cancel, |indices| {
        let refs: Vec<&EncodedInstance> = indices.iter().map(|&i| &instances[i]).collect();
        let batch = Batch::new(&refs, pad_id, env.device);
        let output = encoder.forward(batch.input_ids, batch.attention_mask, false);
        // [B, L+1, T, d]
        let stacked = Tensor::stack::<4>(output.hidden_states, 1);
        let [_, _, tokens, d] = stacked.dims();
        let values = stacked
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| TrainError::Invalid(format!("reading hidden states: {e:?}")))?;
        let kept: Vec<InstanceStates> = indices
            .iter()
            .enumerate()
            .map(|(row, &i)| {
                let len = lengths[i];
                let mut kept = Vec::with_capacity(num_states * len * d);
                for k in 0..num_states {
                    let from = (row * num_states + k) * tokens * d;
                    kept.extend_from_slice(&values[from..from + len * d]);
                }
                InstanceStates { len, values: kept }
            })
            .collect();
        env.progress.inc(1);
        Ok((d, kept))
    })?;
    for (indices, (d, kept)) in batches.iter().zip(encoded) {
        hidden_size = d;
        for (&i, states) in indices.iter().zip(kept) {
            out[i] = Some(states);
        }
    }
    let instances = out
        .into_iter()
        .map(|x| x.ok_or_else(|| TrainError::Invalid("an instance was not encoded".into())))
        .collect::<Result<Vec<_>, _>>()?;
    LayerStates::new(num_states, hidden_size, max_len, instances)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    use crate::model::BertConfig;
    use crate::stages::Progress;
    use crate::train::rng::{with_backend_seed, SplitMix64};

    #[test]
    fn states_match_the_encoder_run_alone_and_skip_padding() {
        let device = Device::default();
        let config = BertConfig::tiny(40);
        let encoder = with_backend_seed(&device, 5, || BertModel::new(&config, &device));
        let mut rng = SplitMix64::new(2);
        let instances: Vec<EncodedInstance> = [7, 3, 5]
            .iter()
            .map(|&len| EncodedInstance {
                ids: (0..len).map(|_| 1 + rng.below(39) as u32).collect(),
                label: 0,
                entities: [0, 0],
            })
            .collect();
        let cancel = AtomicBool::new(false);
        let progress = Progress::hidden();
        let env = ProbeEnv {
            device: &device,
            progress: &progress,
            cancel: &cancel,
        };
        let states = extract(&encoder, &instances, 0, 8, 2, &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(states.num_states(), 3);
        assert_eq!((states.len(), states.hidden_size()), (3, 32));
        assert_eq!(states.bytes(), (7 + 3 + 5) * 3 * 32 * 4);
        for (i, x) in instances.iter().enumerate() {
            let alone = Batch::new(&[x], 0, &device);
            let output = encoder.forward(alone.input_ids, alone.attention_mask, false);
            let top: Vec<f32> = output.hidden_states[2]
                .clone()
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap_or_else(|e| panic!("{e:?}"));
            let batch: Vec<f32> = states
                .batch(&[i], 2, &device)
                .narrow(1, 2, 1)
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap_or_else(|e| panic!("{e:?}"));
            let real = x.ids.len() * 32;
            for (a, b) in top.iter().zip(&batch[..real]) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
            assert!(batch[real..].iter().all(|&v| v == 0.0), "padding zeroed");
        }
        let too_short = extract(&encoder, &instances, 0, 6, 2, &env);
        assert!(
            too_short.is_err(),
            "an instance longer than max_len is refused"
        );
    }
}
