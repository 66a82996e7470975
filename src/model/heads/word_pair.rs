//! Meng et al.'s word-pair classifier over **every ordered pair** of a sentence's nodes
//! (`head: word_pair`): dependency arcs, or one entity pair.
//!
//! For nodes `i`, `j` (a word's first piece, or [CLS] as the parser's root):
//!
//! ```text
//! C_{i,j} = T_i ⊕ T_j ⊕ a^{i,j} ⊕ a^{j,i}        (eq. 5; `features: emb` keeps T_i ⊕ T_j)
//! a^{i,j} = (z^{1,1}_{i,j}, …, z^{L,A}_{i,j})       (eq. 4: every layer and head)
//! S_{i,j} = W C_{i,j} + b                           (one linear layer, K labels)
//! ```
//!
//! Cost: `C` is never materialised. `W` is split into its four column blocks
//! `W = [W_1 W_2 W_3 W_4]`, so `S_{i,j} = W_1 T_i + W_2 T_j + W_3 a^{i,j} + W_4 a^{j,i} + b`:
//! two `[B·N, H] × [H, K]` products for the states and two `[B·N², L·A] × [L·A, K]`
//! products for the attention, broadcast over all `N²` pairs — `O(B·N·H·K + B·N²·L·A·K)`
//! in four batched matrix products, no loop over pairs (materialising `C` would need
//! `B·N²·(2H + 2LA)` floats).

use burn::module::Initializer;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::BERT_INIT_STD;
use crate::model::ModelError;

/// Which features the pair classifier reads (`features:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairFeatures {
    /// `T_i ⊕ T_j`: the last-layer states of the two words.
    Emb,
    /// `T_i ⊕ T_j ⊕ a^{i,j} ⊕ a^{j,i}`: with the attention of every layer and head.
    #[default]
    EmbAtt,
}

impl PairFeatures {
    /// The YAML name.
    pub fn name(self) -> &'static str {
        match self {
            PairFeatures::Emb => "emb",
            PairFeatures::EmbAtt => "emb_att",
        }
    }
}

/// Sizes of a [`WordPairHead`].
#[derive(Debug, Clone, PartialEq)]
pub struct WordPairHeadConfig {
    pub features: PairFeatures,
    /// `H`.
    pub hidden_size: usize,
    /// `L`.
    pub num_layers: usize,
    /// `A`: attention heads per layer.
    pub num_attention_heads: usize,
    /// `K`: labels of a pair.
    pub num_labels: usize,
    /// Dropout on the features.
    pub dropout: f64,
}

impl WordPairHeadConfig {
    /// `L·A`: attention values per direction (0 for `emb`).
    pub fn attention_size(&self) -> usize {
        match self.features {
            PairFeatures::Emb => 0,
            PairFeatures::EmbAtt => self.num_layers * self.num_attention_heads,
        }
    }

    /// `|C| = 2H (+ 2LA)`.
    pub fn classifier_input_size(&self) -> usize {
        2 * self.hidden_size + 2 * self.attention_size()
    }

    /// A freshly initialised head (`W ~ N(0, 0.02²)`, `b = 0`).
    pub fn init(&self, device: &Device) -> Result<WordPairHead, ModelError> {
        if self.num_labels < 2 {
            return Err(ModelError::Invalid(format!(
                "word_pair needs at least 2 labels, got {}",
                self.num_labels
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Invalid(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        Ok(WordPairHead {
            dropout: DropoutConfig::new(self.dropout).init(),
            w: LinearConfig::new(self.classifier_input_size(), self.num_labels)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: BERT_INIT_STD,
                })
                .init(device),
            hidden_size: self.hidden_size,
            attention_size: self.attention_size(),
        })
    }
}

/// `S = W C + b` over every ordered pair of nodes; build with [`WordPairHeadConfig::init`].
#[derive(Module, Debug)]
pub struct WordPairHead {
    dropout: Dropout,
    /// `W ∈ R^{|C|×K}` (burn's layout: input × output), `b ∈ R^K`.
    w: Linear,
    hidden_size: usize,
    /// `L·A`, 0 for `features: emb`.
    attention_size: usize,
}

impl WordPairHead {
    /// Whether the head reads the attention probabilities.
    pub fn reads_attention(&self) -> bool {
        self.attention_size > 0
    }

    /// `S`: `[B, N, N, K]`, `S[b, i, j]` the label scores of the pair `(i, j)`, from the
    /// nodes' states `x = T` (`[B, N, H]`) and, with `emb_att`, `g[b, i, j] = a^{i,j}`
    /// (`[B, N, N, L·A]`, from [`pair_attention`]).
    pub fn scores(&self, x: Tensor<3>, g: Option<Tensor<4>>) -> Result<Tensor<4>, ModelError> {
        let [batch, n, hidden] = x.dims();
        if hidden != self.hidden_size {
            return Err(ModelError::Invalid(format!(
                "word_pair: states of width {hidden}, head built for {}",
                self.hidden_size
            )));
        }
        let weight = self.w.weight.val(); // [|C|, K]
        let [_, k] = weight.dims();
        let h = self.hidden_size;
        let x = crate::model::fused::dropout(&self.dropout, x).reshape([batch * n, h]);
        // W_1 T_i and W_2 T_j: [B, N, K] each
        let u = x
            .clone()
            .matmul(weight.clone().slice(s![0..h, ..]))
            .reshape([batch, n, 1, k]);
        let v = x
            .matmul(weight.clone().slice(s![h..2 * h, ..]))
            .reshape([batch, 1, n, k]);
        let mut s = u + v;
        if self.attention_size > 0 {
            let la = self.attention_size;
            let g = g.ok_or_else(|| {
                ModelError::Invalid("word_pair with emb_att needs the attention features".into())
            })?;
            let dims = g.dims();
            if dims != [batch, n, n, la] {
                return Err(ModelError::Invalid(format!(
                    "word_pair: attention features {dims:?}, expected {:?}",
                    [batch, n, n, la]
                )));
            }
            let g = crate::model::fused::dropout(&self.dropout, g);
            let w3 = weight.clone().slice(s![2 * h..2 * h + la, ..]);
            let w4 = weight.slice(s![2 * h + la..2 * h + 2 * la, ..]);
            // W_3 a^{i,j}
            let forward = g.clone().reshape([batch * n * n, la]).matmul(w3);
            // W_4 a^{j,i}: the same features with i and j swapped
            let backward = g.swap_dims(1, 2).reshape([batch * n * n, la]).matmul(w4);
            s = s + (forward + backward).reshape([batch, n, n, k]);
        }
        if let Some(b) = &self.w.bias {
            s = s + b.val().reshape([1, 1, 1, k]);
        }
        Ok(s)
    }
}

/// The nodes' states `[B, N, H]` from the last layer `t` (`[B, T, H]`), at `flat_index`
/// (`[B·N]`, entries `b·T + position`).
pub fn node_states(t: Tensor<3>, flat_index: Tensor<1, Int>, n: usize) -> Tensor<3> {
    let [batch, tokens, hidden] = t.dims();
    t.reshape([batch * tokens, hidden])
        .select(0, flat_index)
        .reshape([batch, n, hidden])
}

/// `g[b, i, j] = a^{i,j}` (eq. 4) for the nodes at `flat_index` (`[B·N]`, entries
/// `b·T + position`): `z^{l,h}` of every layer (`[B, A, T, T]` each), layer-major,
/// `[B, N, N, L·A]`. Two row selections per layer, no loop over pairs.
pub fn pair_attention(attentions: &[Tensor<4>], flat_index: Tensor<1, Int>, n: usize) -> Tensor<4> {
    let per_layer: Vec<Tensor<4>> = attentions
        .iter()
        .map(|z| {
            let [batch, heads, tokens, _] = z.dims();
            // queries i: [B, T_q, A, T_k] → rows of the nodes → [B·N, A·T_k]
            let rows = z
                .clone()
                .swap_dims(1, 2)
                .reshape([batch * tokens, heads * tokens])
                .select(0, flat_index.clone());
            // keys j: [B, T_k, N_i, A] → rows of the nodes → [B, N_j, N_i, A]
            let cols = rows
                .reshape([batch, n, heads, tokens])
                .permute([0, 3, 1, 2])
                .reshape([batch * tokens, n * heads])
                .select(0, flat_index.clone())
                .reshape([batch, n, n, heads]);
            // [b, j, i, a] → [b, i, j, a]
            cols.swap_dims(1, 2)
        })
        .collect();
    Tensor::cat(per_layer, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `S` from the decomposed product equals `W C + b` with `C` built pair by pair.
    #[test]
    fn scores_equal_the_linear_layer_on_the_concatenation() {
        let device = Device::flex();
        let (b, t, h, layers, heads, k) = (2, 6, 4, 2, 3, 5);
        let config = WordPairHeadConfig {
            features: PairFeatures::EmbAtt,
            hidden_size: h,
            num_layers: layers,
            num_attention_heads: heads,
            num_labels: k,
            dropout: 0.0,
        };
        let head = config.init(&device).unwrap_or_else(|e| panic!("{e}"));
        let last: Tensor<3> =
            Tensor::random([b, t, h], burn::tensor::Distribution::Default, &device);
        let z: Vec<Tensor<4>> = (0..layers)
            .map(|_| {
                Tensor::random(
                    [b, heads, t, t],
                    burn::tensor::Distribution::Default,
                    &device,
                )
            })
            .collect();
        // nodes: sequence 0 at positions 0, 2, 5; sequence 1 at 0, 1, 3
        let nodes = [[0usize, 2, 5], [0, 1, 3]];
        let n = 3;
        let flat: Vec<i64> = nodes
            .iter()
            .enumerate()
            .flat_map(|(bi, p)| p.iter().map(move |&x| (bi * t + x) as i64))
            .collect();
        let flat = Tensor::<1, Int>::from_data(TensorData::new(flat, [b * n]), &device);
        let x = node_states(last.clone(), flat.clone(), n);
        let g = pair_attention(&z, flat, n);
        let s = head.scores(x, Some(g)).unwrap_or_else(|e| panic!("{e}"));
        let s: Vec<f32> = s
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap_or_else(|e| panic!("{e:?}"));
        let last: Vec<f32> = last
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap_or_else(|e| panic!("{e:?}"));
        let z: Vec<Vec<f32>> = z
            .into_iter()
            .map(|x| {
                x.into_data()
                    .try_into_vec_as::<f32>()
                    .unwrap_or_else(|e| panic!("{e:?}"))
            })
            .collect();
        let w: Vec<f32> = head
            .w
            .weight
            .val()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap_or_else(|e| panic!("{e:?}"));
        let bias: Vec<f32> = head
            .w
            .bias
            .as_ref()
            .map(|x| {
                x.val()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .unwrap_or_else(|e| panic!("{e:?}"))
            })
            .unwrap_or_else(|| vec![0.0; k]);
        let d = 2 * h + 2 * layers * heads;
        for bi in 0..b {
            for (i, &pi) in nodes[bi].iter().enumerate() {
                for (j, &pj) in nodes[bi].iter().enumerate() {
                    let mut c = Vec::with_capacity(d);
                    c.extend_from_slice(&last[(bi * t + pi) * h..(bi * t + pi + 1) * h]);
                    c.extend_from_slice(&last[(bi * t + pj) * h..(bi * t + pj + 1) * h]);
                    for (q, kk) in [(pi, pj), (pj, pi)] {
                        for zl in &z {
                            for a in 0..heads {
                                c.push(zl[((bi * heads + a) * t + q) * t + kk]);
                            }
                        }
                    }
                    for label in 0..k {
                        let want: f32 =
                            bias[label] + (0..d).map(|f| c[f] * w[f * k + label]).sum::<f32>();
                        let got = s[((bi * n + i) * n + j) * k + label];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "({bi},{i},{j},{label}) {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// The cost of scoring all pairs (MiniLM sizes: H 384, L·A 72, K 52; a batch of 16
    /// sentences of 40 nodes): the batched product against `W C` built pair by pair.
    /// Run with `cargo test --release --lib pair_scoring_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing, not a check"]
    fn pair_scoring_cost() {
        let device = Device::flex();
        let (b, n, h, layers, heads, k) = (16, 40, 384, 6, 12, 52);
        let config = WordPairHeadConfig {
            features: PairFeatures::EmbAtt,
            hidden_size: h,
            num_layers: layers,
            num_attention_heads: heads,
            num_labels: k,
            dropout: 0.0,
        };
        let head = config.init(&device).unwrap_or_else(|e| panic!("{e}"));
        let x: Tensor<3> = Tensor::random([b, n, h], burn::tensor::Distribution::Default, &device);
        let g: Tensor<4> = Tensor::random(
            [b, n, n, layers * heads],
            burn::tensor::Distribution::Default,
            &device,
        );
        let start = std::time::Instant::now();
        let reps = 5;
        for _ in 0..reps {
            let s = head
                .scores(x.clone(), Some(g.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            let _ = s.into_data();
        }
        let batched = start.elapsed().as_secs_f64() / reps as f64;
        // one sentence's pairs one at a time: C_{i,j} built and multiplied by W
        let w = head.w.weight.val();
        let start = std::time::Instant::now();
        let xs = x.clone().slice(s![0..1, .., ..]).reshape([n, h]);
        let gs = g
            .clone()
            .slice(s![0..1, .., .., ..])
            .reshape([n, n, layers * heads]);
        for i in 0..n {
            for j in 0..n {
                let c = Tensor::cat(
                    vec![
                        xs.clone().slice(s![i..i + 1, ..]),
                        xs.clone().slice(s![j..j + 1, ..]),
                        gs.clone()
                            .slice(s![i..i + 1, j..j + 1, ..])
                            .reshape([1, layers * heads]),
                        gs.clone()
                            .slice(s![j..j + 1, i..i + 1, ..])
                            .reshape([1, layers * heads]),
                    ],
                    1,
                );
                let _ = c.matmul(w.clone()).into_data();
            }
        }
        let looped = start.elapsed().as_secs_f64() * b as f64;
        println!(
            "all {} pairs of {b} sentences × {n} nodes: batched {:.1} ms, a loop over pairs {:.0} ms ({:.0}× slower)",
            b * n * n,
            1e3 * batched,
            1e3 * looped,
            looped / batched
        );
    }
}
