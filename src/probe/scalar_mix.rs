//! The scalar mix of layers 0..=l (Peters et al. 2018, as used for probing by Tenney et al.
//! 2019 and su2022 "Introduction of edge probing"):
//!
//! ```text
//! h_{i,l} = γ_l Σ_{k=0}^{l} α_l^k h_i^k,    α_l = softmax([a^(0), …, a^(l)])
//! ```
//!
//! with the logits `a` and the scale `γ_l` learned jointly with the probing classifier.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

/// `γ_l` and the logits of `α_l` for one probing classifier over layers `0..=l`.
#[derive(Module, Debug)]
pub struct ScalarMix {
    /// Logits `[a^(0), …, a^(l)]` of the layer weights `α_l` (`l + 1` values).
    pub alpha: Param<Tensor<1>>,
    /// The scale `γ_l` (one value).
    pub gamma: Param<Tensor<1>>,
}

impl ScalarMix {
    /// A mix over `layers` layers starting as their plain mean: all logits 0 (α uniform),
    /// `γ = 1`.
    pub fn new(layers: usize, device: &Device) -> Self {
        ScalarMix {
            alpha: Param::from_tensor(Tensor::zeros([layers.max(1)], device)),
            gamma: Param::from_tensor(Tensor::ones([1], device)),
        }
    }

    /// Number of layers mixed (`l + 1`).
    pub fn layers(&self) -> usize {
        self.alpha.dims()[0]
    }

    /// `α_l = softmax(a)`, `[l + 1]`.
    pub fn weights(&self) -> Tensor<1> {
        softmax(self.alpha.val(), 0)
    }

    /// `h_{i,l} = γ_l Σ_k α_l^k h_i^k` for `h: [B, l+1, T, d]` (layer k at index k);
    /// returns `[B, T, d]`. Zero rows (padding) stay zero.
    pub fn forward(&self, h: Tensor<4>) -> Tensor<3> {
        let [batch, layers, tokens, hidden] = h.dims();
        assert_eq!(
            layers,
            self.layers(),
            "scalar mix over {} layers given {layers}",
            self.layers()
        );
        // γ α_l^k as one [1, l+1, 1, 1] factor broadcast over batch, tokens and width
        let scaled = self.weights() * self.gamma.val();
        let mixed = (h * scaled.reshape([1, layers, 1, 1])).sum_dim(1);
        mixed.reshape([batch, tokens, hidden])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data()
            .try_into_vec_as::<f32>()
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn weights_are_a_softmax_and_gamma_scales_the_mix() {
        let device = Device::default();
        let logits = [0.3f32, -1.2, 2.0];
        let mix = ScalarMix {
            alpha: Param::from_tensor(Tensor::from_data(logits, &device)),
            gamma: Param::from_tensor(Tensor::from_data([2.5f32], &device)),
        };
        let alpha = values(mix.weights());
        let z: f32 = logits.iter().map(|a| a.exp()).sum();
        for (a, logit) in alpha.iter().zip(logits) {
            assert!((a - logit.exp() / z).abs() < 1e-6, "{alpha:?}");
        }
        assert!((alpha.iter().sum::<f32>() - 1.0).abs() < 1e-6);

        // B = 1, three layers, T = 2, d = 2; layer k holds (k + 1) · base, token 1 is padding
        let base = [1.0f32, -2.0, 0.0, 0.0];
        let h: Vec<f32> = (0..3)
            .flat_map(|k| base.map(|x| x * (k + 1) as f32))
            .collect();
        let h = Tensor::<4>::from_data(TensorData::new(h, [1, 3, 2, 2]), &device);
        let mixed = values(mix.forward(h));
        let factor: f32 = 2.5
            * alpha
                .iter()
                .enumerate()
                .map(|(k, a)| a * (k + 1) as f32)
                .sum::<f32>();
        let want = base.map(|x| x * factor);
        for (m, w) in mixed.iter().zip(want) {
            assert!((m - w).abs() < 1e-5, "{mixed:?} vs {want:?}");
        }
        assert_eq!(&mixed[2..], &[0.0, 0.0], "padding stays zero");
    }

    #[test]
    fn a_fresh_mix_is_the_plain_mean() {
        let device = Device::default();
        let mix = ScalarMix::new(4, &device);
        assert_eq!(mix.layers(), 4);
        assert_eq!(values(mix.weights()), vec![0.25; 4]);
        assert_eq!(values(mix.gamma.val()), vec![1.0]);
    }
}
