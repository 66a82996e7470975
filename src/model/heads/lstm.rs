//! The LSTM heads (su2022 "Refined fine-tuning", step 1): `sll_lstm`, `sll_bilstm`,
//! `sll_lstm_nocls`, and the LSTM they run (the fused recurrence of `model::fused`).

use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::super::bert::token_rows;
use super::super::fused;
use super::{cls_state, HeadInput, HeadOutput, SoftmaxLayer};

/// One-direction LSTM (Hochreiter & Schmidhuber 1997), gates in the order (i, f, g, o):
///
/// `[i; f; g; o] = W_ih x_t + b + W_hh h_{t-1}`,
/// `c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)`, `h_t = σ(o) ⊙ tanh(c_t)`.
///
/// `W_ih x_t` is computed for all `t` in one product before the recurrence.
#[derive(Module, Debug)]
pub struct Lstm {
    /// `W_ih ∈ R^{4d×d_in}` and `b ∈ R^{4d}`.
    pub(super) w_ih: Linear,
    /// `W_hh ∈ R^{4d×d}`.
    pub(super) w_hh: Linear,
    pub(super) d_hidden: usize,
}

impl Lstm {
    /// An LSTM with PyTorch's initialization, `U(-1/√d, 1/√d)`.
    pub fn new(d_input: usize, d_hidden: usize, device: &Device) -> Self {
        let bound = 1.0 / (d_hidden as f64).sqrt();
        let init = Initializer::Uniform {
            min: -bound,
            max: bound,
        };
        Lstm {
            w_ih: LinearConfig::new(d_input, 4 * d_hidden)
                .with_initializer(init.clone())
                .init(device),
            w_hh: LinearConfig::new(d_hidden, 4 * d_hidden)
                .with_bias(false)
                .with_initializer(init)
                .init(device),
            d_hidden,
        }
    }

    /// Hidden states `h_1..h_T` for `x: [B, T, d_in]`, from zero initial state: `[B, T, d]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // W_ih x_t + b for every t at once: [B, T, 4d]
        let x_proj = token_rows(&self.w_ih, x);
        // the recurrence, with W_hh as burn's Linear stores it: [d, 4d], h W_hh
        fused::lstm(x_proj, self.w_hh.weight.val())
    }

    /// The state after each instance's last real step: `h_{n_b}` for `x: [B, T, d_in]`,
    /// where instance `b` has `n_b ≥ 1` real steps followed by padding. `[B, d]`.
    ///
    /// Padding comes after the real steps, so it never reaches `h_{n_b}`; the recurrence
    /// runs only up to `max_b n_b`.
    pub fn last_states(&self, x: Tensor<3>, lengths: &[usize]) -> Tensor<2> {
        let steps = lengths.iter().copied().max().unwrap_or(1).max(1);
        let x = x.slice(s![.., 0..steps, ..]);
        let states = self.forward(x);
        select_steps(
            states,
            &lengths.iter().map(|&n| n.max(1) - 1).collect::<Vec<_>>(),
        )
    }

    /// The backward direction's state at the first real step, `←h_1`, for `x: [B, T, d_in]`
    /// with `n_b` real steps each: the LSTM reads `x_{n_b}, …, x_1` (padding excluded).
    pub fn first_states_backward(&self, x: Tensor<3>, lengths: &[usize]) -> Tensor<2> {
        self.last_states(reverse_within_lengths(x, lengths), lengths)
    }
}

/// Rows `x[b, t_b, :]` of `x: [B, T, D]`, one step per instance: `[B, D]`.
pub(super) fn select_steps(x: Tensor<3>, steps: &[usize]) -> Tensor<2> {
    let [batch, tokens, dim] = x.dims();
    let device = x.device();
    let flat: Tensor<2> = x.reshape([batch * tokens, dim]);
    let rows: Vec<i64> = steps
        .iter()
        .enumerate()
        .map(|(b, &t)| (b * tokens + t) as i64)
        .collect();
    flat.select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(rows, [batch]), &device),
    )
}

/// Reverses each instance's first `n_b` steps of `x: [B, T, D]` in place; padding stays put.
pub(super) fn reverse_within_lengths(x: Tensor<3>, lengths: &[usize]) -> Tensor<3> {
    let [batch, tokens, dim] = x.dims();
    let device = x.device();
    let mut order = Vec::with_capacity(batch * tokens * dim);
    for &n in lengths {
        let n = n.min(tokens);
        for t in 0..tokens {
            let source = if t < n { n - 1 - t } else { t };
            order.extend(std::iter::repeat_n(source as i64, dim));
        }
    }
    let index = Tensor::<3, Int>::from_data(TensorData::new(order, [batch, tokens, dim]), &device);
    x.gather(1, index)
}

/// `sll_lstm`, `sll_bilstm`, `sll_lstm_nocls` (su2022 "Refined fine-tuning", step 1):
/// `O = LSTM(h^L_i)` or `O = LSTM(→h^L_i) ⊕ LSTM(←h^L_i)`, `i = 1..N`; `h = h^L_CLS ⊕ O` or `O`.
#[derive(Module, Debug)]
pub struct SllLstmHead {
    pub(super) forward_lstm: Lstm,
    /// Present for the biLSTM.
    pub(super) backward_lstm: Option<Lstm>,
    pub(super) with_cls: bool,
    pub(super) classifier: SoftmaxLayer,
}

impl SllLstmHead {
    pub(super) fn forward(&self, input: HeadInput) -> HeadOutput {
        let h_l = input.last_hidden_state;
        let [_, tokens, _] = h_l.dims();
        // h^L_1..h^L_N: drop [CLS]; [SEP] and padding lie beyond each N_b.
        let words = h_l.clone().slice(s![.., 1..tokens, ..]);
        let n: Vec<usize> = input.lengths.iter().map(|&len| len - 2).collect();
        let mut parts = Vec::with_capacity(3);
        if self.with_cls {
            parts.push(cls_state(h_l));
        }
        // last unit of the forward direction
        parts.push(self.forward_lstm.last_states(words.clone(), &n));
        if let Some(backward) = &self.backward_lstm {
            // first unit of the backward direction
            parts.push(backward.first_states_backward(words, &n));
        }
        // h = h^L_CLS ⊕ O
        let h = Tensor::cat(parts, 1);
        HeadOutput {
            logits: self.classifier.forward(h),
            alpha: None,
        }
    }
}
