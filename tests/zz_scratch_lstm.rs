//! TEMPORARY scratch (not to be committed).
use std::time::Instant;
use burn::prelude::*;
use burn::tensor::Distribution;
use pipe::model::device::train_device;
use pipe::model::heads::{HeadConfig, HeadInput, HeadKind};

#[test]
fn lstm_head_time() {
    let device = train_device(&Device::flex());
    for kind in [HeadKind::Cls, HeadKind::SllLstm, HeadKind::SllBilstm] {
        let head = HeadConfig { kind, hidden_size: 384, num_layers: 6, num_attention_heads: 12, num_labels: 6, lstm_hidden: 768, dropout: 0.1 }.init(&device).unwrap();
        for rep in 0..3 {
            let h = Tensor::<3>::random([32, 66, 384], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let t0 = Instant::now();
            let out = head.forward(HeadInput { last_hidden_state: h.clone(), hidden_states: vec![], attentions: vec![], lengths: (0..32).map(|i| 40 + i % 27).collect(), entity_positions: vec![[1, 2]; 32] }).unwrap();
            let loss = out.logits.sum();
            let _ = loss.clone().inner().into_scalar::<f32>();
            let t1 = Instant::now();
            let g = loss.backward();
            let _ = h.grad(&g).unwrap().sum().into_scalar::<f32>();
            let t2 = Instant::now();
            println!("{kind} rep {rep}: fwd {:.3}s bwd {:.3}s", (t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64());
        }
    }
}
