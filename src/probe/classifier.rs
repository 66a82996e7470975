//! The probing classifier of su2022 (Fig. 4): `P^l = MLP([h_{0,l}, h_{1,l}, …, h_{N,l}])`,
//! a two-layer perceptron over the concatenation, in position order, of the scalar-mixed
//! token states (see [`ScalarMix`]) of a sequence padded with zeros to `max_len` tokens.
//!
//! The hidden layer has `tanh` units, as the MLP probes of edge probing (Tenney et al.
//! 2019); su2022 gives only its width (1024).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::scalar_mix::ScalarMix;

/// Shape of one probing classifier `P^l`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Layers mixed: `l + 1` (the embedding output and layers 1..=l).
    pub layers: usize,
    /// Tokens per (zero-padded) sequence, N + 1 = `max_len`.
    pub max_len: usize,
    /// Width d of the encoder's states.
    pub hidden_size: usize,
    /// Units of the perceptron's hidden layer (1024 in su2022).
    pub mlp_hidden: usize,
    /// Classes C.
    pub num_labels: usize,
}

impl ProbeConfig {
    /// Width of the MLP input: `max_len · d`.
    pub fn input_size(&self) -> usize {
        self.max_len * self.hidden_size
    }

    /// A fresh classifier (α uniform, γ = 1, the linear layers with burn's default
    /// initializer; call under a seed).
    pub fn init(&self, device: &Device) -> ProbeClassifier {
        ProbeClassifier {
            mix: ScalarMix::new(self.layers, device),
            w_1: LinearConfig::new(self.input_size(), self.mlp_hidden).init(device),
            w_2: LinearConfig::new(self.mlp_hidden, self.num_labels).init(device),
        }
    }
}

/// `P^l`: scalar mix, concatenation, `W_2 tanh(W_1 x + b_1) + b_2`.
#[derive(Module, Debug)]
pub struct ProbeClassifier {
    pub mix: ScalarMix,
    /// `W_1 ∈ R^{1024×(max_len·d)}`, `b_1`.
    pub w_1: Linear,
    /// `W_2 ∈ R^{C×1024}`, `b_2`.
    pub w_2: Linear,
}

impl ProbeClassifier {
    /// The MLP input `[h_{0,l}, …, h_{N,l}]` for `h: [B, l+1, max_len, d]`: `[B, max_len·d]`,
    /// token 0's mixed state first.
    pub fn concatenated(&self, h: Tensor<4>) -> Tensor<2> {
        let [batch, _, tokens, hidden] = h.dims();
        self.mix.forward(h).reshape([batch, tokens * hidden])
    }

    /// Logits `[B, C]` for `h: [B, l+1, max_len, d]` (padding rows zero).
    pub fn forward(&self, h: Tensor<4>) -> Tensor<2> {
        let x = self.concatenated(h);
        self.w_2.forward(self.w_1.forward(x).tanh())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::features::{InstanceStates, LayerStates};

    #[test]
    fn mlp_input_is_the_mixed_tokens_in_position_order_with_zero_padding() {
        let device = Device::default();
        let (layers, max_len, d) = (2, 4, 3);
        // two instances of 3 and 2 tokens; state of layer k, token t, unit j = 100k + 10t + j
        let instance = |len: usize| InstanceStates {
            len,
            values: (0..layers)
                .flat_map(|k| {
                    (0..len).flat_map(move |t| (0..d).map(move |j| (100 * k + 10 * t + j) as f32))
                })
                .collect(),
        };
        let states = LayerStates::new(layers, d, max_len, vec![instance(3), instance(2)])
            .unwrap_or_else(|e| panic!("{e}"));
        let config = ProbeConfig {
            layers,
            max_len,
            hidden_size: d,
            mlp_hidden: 5,
            num_labels: 2,
        };
        let probe = crate::train::rng::unseeded_module(|| config.init(&device));
        let x = probe.concatenated(states.batch(&[0, 1], layers - 1, &device));
        assert_eq!(x.dims(), [2, max_len * d]);
        let x: Vec<f32> = x
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap_or_else(|e| panic!("{e:?}"));
        // α = (½, ½), γ = 1: token t, unit j of the mix is 50 + 10t + j
        for (row, len) in [(0, 3), (1, 2)] {
            for t in 0..max_len {
                for j in 0..d {
                    let want = if t < len {
                        (50 + 10 * t + j) as f32
                    } else {
                        0.0
                    };
                    let got = x[row * max_len * d + t * d + j];
                    assert!(
                        (got - want).abs() < 1e-4,
                        "row {row} t {t} j {j}: {got} vs {want}"
                    );
                }
            }
        }
        let logits = probe.forward(states.batch(&[1], layers - 1, &device));
        assert_eq!(logits.dims(), [1, 2]);
    }
}
