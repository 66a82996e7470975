//! The heads against hand-computed values and their unfused forms.

use burn::tensor::activation::softmax;
use burn::tensor::Distribution;

use super::lstm::{reverse_within_lengths, select_steps};
use super::*;

fn device() -> Device {
    Device::default()
}

/// `head` with its lazily drawn parameters drawn now (call under the generator lock).
fn touched(head: Head) -> Head {
    crate::train::classifier::initialize_params(&head);
    head
}

fn random3(dims: [usize; 3]) -> Tensor<3> {
    crate::train::rng::unseeded_draw(|| {
        Tensor::random(dims, Distribution::Normal(0.0, 1.0), &device())
    })
}

fn values2(t: Tensor<2>) -> Vec<Vec<f32>> {
    let [rows, cols] = t.dims();
    let flat: Vec<f32> = t.into_data().try_into_vec_as::<f32>().expect("f32 data");
    flat.chunks(cols).take(rows).map(|r| r.to_vec()).collect()
}

fn config(kind: HeadKind) -> HeadConfig {
    HeadConfig {
        kind,
        hidden_size: 8,
        num_layers: 3,
        num_attention_heads: 2,
        num_labels: 4,
        lstm_hidden: 5,
        dropout: 0.1,
    }
}

fn input(batch: usize, tokens: usize, lengths: Vec<usize>) -> HeadInput {
    let cfg = config(HeadKind::Cls);
    let hidden_states: Vec<Tensor<3>> = (0..=cfg.num_layers)
        .map(|_| random3([batch, tokens, cfg.hidden_size]))
        .collect();
    let attentions = (0..cfg.num_layers)
        .map(|_| {
            softmax(
                crate::train::rng::unseeded_draw(|| {
                    Tensor::<4>::random(
                        [batch, cfg.num_attention_heads, tokens, tokens],
                        Distribution::Normal(0.0, 1.0),
                        &device(),
                    )
                }),
                3,
            )
        })
        .collect();
    HeadInput {
        last_hidden_state: hidden_states[cfg.num_layers].clone(),
        hidden_states,
        attentions,
        entity_positions: lengths.iter().map(|&n| [1, n - 2]).collect(),
        lengths,
    }
}

#[test]
fn every_head_gives_batch_by_labels_logits() {
    for kind in HeadKind::ALL {
        let head = crate::train::rng::unseeded_draw(|| config(kind).init(&device()).map(touched))
            .expect("head");
        assert_eq!(head.kind(), kind);
        let out = head.forward(input(3, 7, vec![7, 4, 2])).expect("forward");
        assert_eq!(out.logits.dims(), [3, 4], "{kind}");
        let expect_alpha = kind.has_token_alpha() || kind == HeadKind::InterClsAtt;
        assert_eq!(out.alpha.is_some(), expect_alpha, "{kind}");
        if kind.has_token_alpha() {
            assert_eq!(out.alpha.map(|a| a.dims()), Some([3, 7]), "{kind}");
        }
    }
}

#[test]
fn head_names_round_trip_through_yaml_and_from_str() {
    for kind in HeadKind::ALL {
        assert_eq!(kind.name().parse::<HeadKind>().expect("parse"), kind);
        let yaml = serde_yaml::to_string(&kind).expect("yaml");
        assert_eq!(yaml.trim(), kind.name());
    }
    assert!("sll_gru".parse::<HeadKind>().is_err());
}

#[test]
fn attention_gives_padding_cls_and_sep_zero_weight() {
    let head =
        crate::train::rng::unseeded_draw(|| config(HeadKind::SllAtt).init(&device()).map(touched))
            .expect("head");
    // n = 6: [CLS] w1 w2 w3 w4 [SEP]; n = 3: [CLS] w1 [SEP] pad pad pad
    let out = head.forward(input(2, 6, vec![6, 3])).expect("forward");
    let alpha = values2(out.alpha.expect("alpha"));
    for (b, n) in [(0usize, 6usize), (1, 3)] {
        let row = &alpha[b];
        assert_eq!(row[0], 0.0, "[CLS] weight");
        assert_eq!(row[n - 1], 0.0, "[SEP] weight");
        for (t, &a) in row.iter().enumerate().skip(n) {
            assert_eq!(a, 0.0, "padding weight at {t}");
        }
        let real: f32 = row[1..n - 1].iter().sum();
        assert!((real - 1.0).abs() < 1e-5, "α sums to {real}");
        assert!(row[1..n - 1].iter().all(|&a| a > 0.0));
    }
    // a single word piece takes all the weight
    assert!((alpha[1][1] - 1.0).abs() < 1e-6);
}

#[test]
fn attention_summary_ignores_padding_values() {
    let attention = AdditiveAttention::new(8, &device());
    let h = random3([1, 5, 8]);
    let attend = word_piece_mask(&[4], 5, &device());
    let (o, _) = attention.forward(h.clone(), attend.clone());
    // change [CLS], [SEP] and the padded position: O must not move
    let noise = random3([1, 5, 8]).mul_scalar(100.0);
    let keep = Tensor::<3>::from_data(
        TensorData::new(
            (0..5)
                .flat_map(|t| {
                    std::iter::repeat_n(if (1..3).contains(&t) { 1.0f32 } else { 0.0 }, 8)
                })
                .collect::<Vec<f32>>(),
            [1, 5, 8],
        ),
        &device(),
    );
    let h2 = h.clone() + noise * (keep.ones_like() - keep);
    let (o2, _) = attention.forward(h2, attend);
    let diff: f32 = (o - o2).abs().max().into_scalar();
    assert!(diff < 1e-5, "O moved by {diff}");
}

#[test]
fn lstm_last_state_ignores_padding() {
    let lstm = crate::train::rng::unseeded_module(|| Lstm::new(4, 3, &device()));
    let full = random3([1, 6, 4]);
    // instance 0: all 6 steps; instance 1: the first 3 steps of the same sequence + junk
    let junk = random3([1, 3, 4]).mul_scalar(50.0);
    let short = Tensor::cat(vec![full.clone().slice(s![.., 0..3, ..]), junk], 1);
    let batch = Tensor::cat(vec![full.clone(), short.clone()], 0);
    let last = values2(lstm.last_states(batch, &[6, 3]));
    let alone6 = values2(lstm.last_states(full.clone(), &[6]));
    let alone3 = values2(lstm.last_states(full.clone().slice(s![.., 0..3, ..]), &[3]));
    for (a, b) in last[0].iter().zip(&alone6[0]) {
        assert!((a - b).abs() < 1e-5);
    }
    for (a, b) in last[1].iter().zip(&alone3[0]) {
        assert!((a - b).abs() < 1e-5);
    }
    // and it is not the state after running through the padding
    let through_padding = values2(select_steps(lstm.forward(short), &[5]));
    assert!(last[1]
        .iter()
        .zip(&through_padding[0])
        .any(|(a, b)| (a - b).abs() > 1e-4));
}

#[test]
fn backward_lstm_starts_at_each_instance_last_real_step() {
    let lstm = crate::train::rng::unseeded_module(|| Lstm::new(4, 3, &device()));
    let x = random3([1, 3, 4]);
    let junk = random3([1, 2, 4]).mul_scalar(50.0);
    let padded = Tensor::cat(vec![x.clone(), junk], 1);
    let backward_padded = values2(lstm.first_states_backward(padded, &[3]));
    // reading x_3, x_2, x_1 by hand
    let reversed = x.flip([1]);
    let by_hand = values2(lstm.last_states(reversed, &[3]));
    for (a, b) in backward_padded[0].iter().zip(&by_hand[0]) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn reverse_within_lengths_keeps_padding() {
    let x = Tensor::<3>::from_data(
        TensorData::new((0..8).map(|v| v as f32).collect::<Vec<_>>(), [2, 4, 1]),
        &device(),
    );
    let r: Vec<f32> = reverse_within_lengths(x, &[4, 2])
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32");
    assert_eq!(r, vec![3.0, 2.0, 1.0, 0.0, 5.0, 4.0, 6.0, 7.0]);
}

#[test]
fn sll_lstm_logits_ignore_sep_and_padding() {
    let mut cfg = config(HeadKind::SllBilstm);
    cfg.dropout = 0.0;
    let head = crate::train::rng::unseeded_draw(|| cfg.init(&device()).map(touched)).expect("head");
    let base = input(1, 6, vec![4]);
    let out = values2(head.forward(base.clone()).expect("forward").logits);
    // overwrite [SEP] (position 3) and padding (4, 5)
    let h = base.last_hidden_state.clone();
    let changed = Tensor::cat(
        vec![
            h.clone().slice(s![.., 0..3, ..]),
            random3([1, 3, 8]).mul_scalar(10.0),
        ],
        1,
    );
    let moved = HeadInput {
        last_hidden_state: changed,
        ..base
    };
    let out2 = values2(head.forward(moved).expect("forward").logits);
    for (a, b) in out[0].iter().zip(&out2[0]) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn pairwise_attention_picks_z_ij_of_every_layer_and_head() {
    let inp = input(2, 5, vec![5, 4]);
    let a = values2(pairwise_attention(&inp.attentions, &[1, 3], &[2, 0]));
    for (b, (i, j)) in [(0usize, (1usize, 2usize)), (1, (3, 0))] {
        for (l, z) in inp.attentions.iter().enumerate() {
            let z: Vec<f32> = z.clone().into_data().try_into_vec_as::<f32>().expect("f32");
            for h in 0..2 {
                let expected = z[((b * 2 + h) * 5 + i) * 5 + j];
                assert_eq!(a[b][l * 2 + h], expected);
            }
        }
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let head =
        crate::train::rng::unseeded_draw(|| config(HeadKind::Cls).init(&device()).map(touched))
            .expect("head");
    assert!(head.forward(input(2, 5, vec![5, 6])).is_err());
    let mut cfg = config(HeadKind::Cls);
    cfg.num_labels = 1;
    assert!(crate::train::rng::unseeded_draw(|| cfg.init(&device())).is_err());
}
