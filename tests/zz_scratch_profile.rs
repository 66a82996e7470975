//! TEMPORARY scratch profile (not to be committed).
use std::time::Instant;
use burn::optim::GradientsParams;
use burn::prelude::*;
use pipe::model::device::train_device;
use pipe::model::heads::{HeadConfig, HeadKind};
use pipe::model::{BertModel, BertTokenizer};
use pipe::train::batching::{padding_ratio, train_batches};
use pipe::train::classifier::{cross_entropy, Batch, EncodedInstance, SequenceClassifier};
use pipe::train::clipping::clip_global_norm;
use pipe::train::rng::SplitMix64;

#[test]
fn profile() {
    let dir = std::path::PathBuf::from(std::env::var("PIPE_TEST_MODEL_DIR").unwrap());
    let tok = BertTokenizer::from_dir(&dir).unwrap();
    let text = std::fs::read_to_string("../shared/data/chemprot/blurb/train_blurb.tsv").unwrap();
    let inst: Vec<EncodedInstance> = text.lines().map(|l| { let (t, _) = l.split_once('\t').unwrap(); EncodedInstance::new(t, &tok.encode(t, 128).unwrap(), 0) }).collect();
    let lengths: Vec<usize> = inst.iter().map(|x| x.ids.len()).collect();
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
    let b = train_batches(&lengths, 32, &mut SplitMix64::new(1));
    println!("n {} mean len {mean:.1}, padded/real bucketed {:.3}, vs pad-to-128 {:.3}", lengths.len(), padding_ratio(&lengths, &b), 128.0 / mean);
    let device = train_device(&Device::flex());
    let (encoder, config) = BertModel::load(&dir, &device).unwrap();
    let head = HeadConfig { kind: HeadKind::Cls, hidden_size: 384, num_layers: 6, num_attention_heads: 12, num_labels: 6, lstm_hidden: 768, dropout: 0.1 }.init(&device).unwrap();
    let _ = config;
    let mut model = SequenceClassifier { encoder, head };
    let mut opt = burn::optim::AdamWConfig::new().init();
    for t in [64usize, 128] {
        let x: Vec<EncodedInstance> = (0..32).map(|i| EncodedInstance { ids: (0..t as u32).map(|k| 1000 + k + i).collect(), label: 1, entities: [1, 2] }).collect();
        let refs: Vec<&EncodedInstance> = x.iter().collect();
        let batch = Batch::new(&refs, 0, &device);
        for rep in 0..3 {
            let t0 = Instant::now();
            let out = model.forward(&batch).unwrap();
            let loss = cross_entropy(out.logits, batch.labels.clone());
            let _ = loss.clone().inner().into_scalar::<f32>();
            let t1 = Instant::now();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let t2 = Instant::now();
            let (grads, _) = clip_global_norm(&model, grads, 1.0);
            let t3 = Instant::now();
            model = opt.step(1e-5, model, grads);
            let _ = model.head.kind();
            let t4 = Instant::now();
            println!("T={t} rep {rep}: fwd {:.2}s bwd {:.2}s clip {:.3}s step {:.3}s total {:.2}s", (t1-t0).as_secs_f64(), (t2-t1).as_secs_f64(), (t3-t2).as_secs_f64(), (t4-t3).as_secs_f64(), (t4-t0).as_secs_f64());
        }
    }
}
