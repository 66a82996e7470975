//! A small but complete training run: the first losses of a fine-tuning, for tests that
//! compare how they are computed (fused kernels or reference forms, one SIMD level or
//! another, one CPU or another).

use burn::optim::GradientsParams;
use burn::prelude::*;

use pipe::model::device::train_device;
use pipe::model::heads::HeadKind;
use pipe::model::BertConfig;
use pipe::train::classifier::{cross_entropy, Batch, EncodedInstance};
use pipe::train::clipping::clip_global_norm;
use pipe::train::fit::adamw;
use pipe::train::rng::{with_backend_seed, SplitMix64};
use pipe::train::SequenceClassifier;

/// Updates in [`first_losses`].
pub const STEPS: usize = 20;
const BATCH: usize = 8;
const LABELS: usize = 3;

/// 64 instances of 4–31 word pieces whose label depends on their pieces.
fn instances(vocab: usize) -> Vec<EncodedInstance> {
    let mut rng = SplitMix64::new(9);
    (0..64)
        .map(|_| {
            let len = 4 + rng.below(28);
            let ids: Vec<u32> = (0..len).map(|_| 1 + rng.below(vocab - 1) as u32).collect();
            let label = ids.iter().map(|&i| i as usize).sum::<usize>() % LABELS;
            EncodedInstance {
                ids,
                label,
                entities: [0, 0],
            }
        })
        .collect()
}

/// The losses of `STEPS` updates (forward, cross-entropy, backward, clipping, AdamW), every
/// batch padded to the longest instance as `fit` does without bucketing.
pub fn first_losses() -> Vec<f32> {
    let device = train_device(&Device::flex());
    let config = BertConfig {
        hidden_size: 64,
        num_attention_heads: 4,
        intermediate_size: 128,
        ..BertConfig::tiny(120)
    };
    let mut model = SequenceClassifier::random(&config, HeadKind::Cls, LABELS, 1, &device).unwrap();
    let mut optimizer = adamw(&model, 0.01);
    let data = instances(config.vocab_size);
    let longest = data.iter().map(|x| x.ids.len()).max().unwrap();
    let mut order = SplitMix64::new(3);
    (0..STEPS)
        .map(|step| {
            let refs: Vec<&EncodedInstance> =
                (0..BATCH).map(|_| &data[order.below(data.len())]).collect();
            let batch = Batch::padded_to(&refs, 0, longest, &device);
            let out =
                with_backend_seed(&device, 100 + step as u64, || model.forward(&batch)).unwrap();
            let loss = cross_entropy(out.logits, batch.labels);
            let value: f32 = loss.clone().inner().into_scalar();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let (grads, _) = clip_global_norm(&model, grads, 1.0);
            model = optimizer.step(1e-3, model.clone(), grads);
            value
        })
        .collect()
}
