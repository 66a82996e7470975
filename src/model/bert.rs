//! The BERT encoder (Devlin et al., 2019) as burn modules, laid out like Hugging Face's
//! `BertModel` so that its checkpoints map field by field (see [`super::checkpoint`]).
//!
//! For input ids x₁..x_T the embeddings are E = LN(W_word[x] + W_pos[0..T] + W_type[0]),
//! and each of the L layers computes
//!
//! ```text
//! A = softmax(Q Kᵀ / √d_k + M)          (scaled dot-product attention, M = mask bias)
//! H' = LN(H + (A V) W_o)                 (attention output, residual, LayerNorm)
//! H'' = LN(H' + act(H' W_i) W_out)       (feed-forward, residual, LayerNorm)
//! ```
//!
//! with padding excluded through the additive bias M (0 for tokens, a large negative number
//! for padding), so padded keys get exactly zero attention probability.

use std::path::Path;

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::tensor::activation::{gelu_approximate, relu};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::tokenizer::Encoding;
use super::{checkpoint, fused, precision, ModelError};

/// The additive attention bias on padded key positions. exp(-10⁴ + s) underflows to exactly
/// 0 in f32 for any realistic score s, and the value is still representable in f16.
pub const MASK_BIAS: f32 = -1.0e4;

/// The architecture of a BERT checkpoint, read from Hugging Face's `config.json` (keys this
/// encoder does not use are ignored).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Number of word pieces.
    pub vocab_size: usize,
    /// Width d of every hidden state.
    pub hidden_size: usize,
    /// Number of encoder layers L.
    pub num_hidden_layers: usize,
    /// Number of attention heads per layer (divides `hidden_size`).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward layer.
    #[serde(default)]
    pub hidden_act: HiddenAct,
    /// Number of learned positions (the longest input).
    pub max_position_embeddings: usize,
    /// Number of segment (token type) embeddings.
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// ε of every LayerNorm.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Dropout on embeddings and on each sub-layer's output, during training.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities, during training.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Id of the padding token (`null` in some configs reads as 0).
    #[serde(default, deserialize_with = "null_as_zero")]
    pub pad_token_id: u32,
    /// Standard deviation of the normal random initialisation.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Only `absolute` (learned positions) is implemented.
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    /// Hugging Face's model type; only `bert` is accepted.
    #[serde(default = "default_model_type")]
    pub model_type: String,
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.unwrap_or(0))
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_position_embedding_type() -> String {
    "absolute".to_string()
}
fn default_model_type() -> String {
    "bert".to_string()
}

/// The feed-forward activation, named as in Hugging Face configs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HiddenAct {
    /// GELU with the exact erf (`gelu`).
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
}

impl HiddenAct {
    fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            HiddenAct::Gelu => fused::gelu(x),
            HiddenAct::GeluTanh => gelu_approximate(x),
            HiddenAct::Relu => relu(x),
        }
    }
}

impl BertConfig {
    /// Reads and checks a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.check().map_err(|message| ModelError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// A tiny random-init configuration for smoke tests: 2 layers, hidden 32, 2 heads.
    pub fn tiny(vocab_size: usize) -> Self {
        BertConfig {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 64,
            hidden_act: HiddenAct::Gelu,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            pad_token_id: 0,
            initializer_range: 0.02,
            position_embedding_type: default_position_embedding_type(),
            model_type: default_model_type(),
        }
    }

    /// Checks that the configuration describes an encoder this module implements.
    pub fn check(&self) -> Result<(), String> {
        if self.model_type != "bert" {
            return Err(format!(
                "model_type `{}` is not `bert`; only BERT checkpoints are supported",
                self.model_type
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type `{}` is not implemented (only `absolute`)",
                self.position_embedding_type
            ));
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} {p} is not in [0, 1)"));
            }
        }
        Ok(())
    }

    /// Width d_k of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Padded model input for a batch: ids and the 1/0 attention mask, both `[batch, T]`.
#[derive(Debug, Clone)]
pub struct BertInput {
    /// Word-piece ids, padded with the pad id.
    pub input_ids: Tensor<2, Int>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor<2, Int>,
}

impl BertInput {
    /// Pads `encodings` on the right to the longest one.
    pub fn from_encodings(
        encodings: &[Encoding],
        pad_id: u32,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let batch = encodings.len();
        let longest = encodings.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if batch == 0 || longest == 0 {
            return Err(ModelError::Invalid("cannot encode an empty batch".into()));
        }
        let mut ids = vec![i64::from(pad_id); batch * longest];
        let mut mask = vec![0i64; batch * longest];
        for (row, encoding) in encodings.iter().enumerate() {
            let start = row * longest;
            for (i, &id) in encoding.ids.iter().enumerate() {
                ids[start + i] = i64::from(id);
                mask[start + i] = 1;
            }
        }
        Ok(BertInput {
            input_ids: Tensor::from_data(TensorData::new(ids, [batch, longest]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, [batch, longest]), device),
        })
    }
}

/// What the encoder returns.
#[derive(Debug, Clone)]
pub struct BertOutput {
    /// The last layer's states `[batch, T, hidden]`.
    pub last_hidden_state: Tensor<3>,
    /// L+1 tensors `[batch, T, hidden]`: `[0]` is the embeddings' output, `[l]` layer l's.
    pub hidden_states: Vec<Tensor<3>>,
    /// L tensors `[batch, heads, T, T]` of attention probabilities (rows sum to 1 over
    /// the keys; padded keys get 0); empty unless requested.
    pub attentions: Vec<Tensor<4>>,
}

/// Word, position and segment embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// W_word `[vocab, d]`.
    pub word_embeddings: Embedding,
    /// W_pos `[max_positions, d]`.
    pub position_embeddings: Embedding,
    /// W_type `[type_vocab, d]`.
    pub token_type_embeddings: Embedding,
    /// LayerNorm over the sum.
    pub layer_norm: LayerNorm,
    /// Dropout on the result.
    pub dropout: Dropout,
    /// ε of the LayerNorm.
    #[module(skip)]
    pub layer_norm_eps: f64,
}

impl BertEmbeddings {
    fn new(config: &BertConfig, device: &Device) -> Self {
        let init = normal_init(config);
        let table = |n: usize| {
            EmbeddingConfig::new(n, config.hidden_size)
                .with_initializer(init.clone())
                .init(device)
        };
        BertEmbeddings {
            word_embeddings: table(config.vocab_size),
            position_embeddings: table(config.max_position_embeddings),
            token_type_embeddings: table(config.type_vocab_size),
            layer_norm: layer_norm(config, device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
            layer_norm_eps: config.layer_norm_eps,
        }
    }

    /// E = LN(W_word[x] + W_pos[0..T] + W_type[s]); segment 0 for every token when
    /// `token_type_ids` is `None`.
    fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let [_, t] = input_ids.dims();
        let [max_positions, _] = self.position_embeddings.weight.dims();
        assert!(
            t <= max_positions,
            "input of {t} tokens exceeds max_position_embeddings {max_positions}; truncate it"
        );
        let words = self.word_embeddings.forward(input_ids);
        // Positions 0..T broadcast over the batch: [1, T, d].
        let positions = self
            .position_embeddings
            .weight
            .val()
            .narrow(0, 0, t)
            .unsqueeze::<3>();
        let summed = match token_type_ids {
            Some(types) => words + self.token_type_embeddings.forward(types) + positions,
            None => {
                // Segment 0 for all tokens: one row broadcast over batch and time, [1, 1, d].
                let segment = self
                    .token_type_embeddings
                    .weight
                    .val()
                    .narrow(0, 0, 1)
                    .unsqueeze::<3>();
                words + (positions + segment)
            }
        };
        let normalized = fused::layer_norm(&self.layer_norm, self.layer_norm_eps, summed);
        fused::dropout(&self.dropout, normalized)
    }
}

/// Multi-head scaled dot-product self-attention (Q, K, V projections).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// W_q.
    pub query: Linear,
    /// W_k.
    pub key: Linear,
    /// W_v.
    pub value: Linear,
    /// Dropout on the attention probabilities.
    pub dropout: Dropout,
    /// Number of heads h.
    pub n_heads: usize,
    /// Width of one head d_k = d / h.
    pub d_head: usize,
}

impl BertSelfAttention {
    fn new(config: &BertConfig, device: &Device) -> Self {
        let d = config.hidden_size;
        BertSelfAttention {
            query: linear(config, d, d, device),
            key: linear(config, d, d, device),
            value: linear(config, d, d, device),
            dropout: DropoutConfig::new(config.attention_probs_dropout_prob).init(),
            n_heads: config.num_attention_heads,
            d_head: config.head_size(),
        }
    }

    /// `[B, T, d]` -> `[B, h, T, d_k]`.
    fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, t, _] = x.dims();
        x.reshape([b, t, self.n_heads, self.d_head]).swap_dims(1, 2)
    }

    /// Whether dropout on the probabilities would change them (training on autodiff).
    fn dropout_active(&self, x: &Tensor<3>) -> bool {
        self.dropout.prob > 0.0 && self.dropout.training.is_enabled() && x.device().is_autodiff()
    }

    /// Returns the context `[B, T, d]` and, when asked, the probabilities `[B, h, T, T]`.
    ///
    /// `bias` is the additive mask M `[B, 1, T, T]` (or `[B, 1, 1, T]`).
    fn forward(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        output_attentions: bool,
    ) -> (Tensor<3>, Option<Tensor<4>>) {
        let [b, t, d] = x.dims();
        let q = token_rows(&self.query, x.clone());
        let k = token_rows(&self.key, x.clone());
        let v = token_rows(&self.value, x.clone());
        if !output_attentions {
            // The same maths in one fused kernel, the heads read and written in place.
            let context = if self.dropout_active(&x) {
                fused::training_attention(q, k, v, bias, self.n_heads, &self.dropout)
            } else {
                fused::attention(q, k, v, bias, self.n_heads)
            };
            return (context, None);
        }
        let (q, k, v) = (
            self.split_heads(q),
            self.split_heads(k),
            self.split_heads(v),
        );
        // A = softmax(Q Kᵀ / √d_k + M), dropout on A, then A V.
        // Scaling Q ([B, h, T, d_k]) is cheaper than scaling the T×T scores.
        let scale = 1.0 / (self.d_head as f64).sqrt();
        let scores = precision::matmul(q.mul_scalar(scale), k.swap_dims(2, 3));
        let probs = fused::masked_softmax(scores, bias);
        let context = precision::matmul(fused::dropout(&self.dropout, probs.clone()), v);
        let context = context.swap_dims(1, 2).reshape([b, t, d]);
        (context, output_attentions.then_some(probs))
    }
}

/// `linear.forward(x)` over the B·T token rows of `x` `[B, T, d]` as one `[B·T, d]`
/// matrix product (burn keeps `[B, T, d]` inputs batched: B products of T rows, each
/// packing the whole weight again), in the [`precision::autocast`] scope's type.
pub(crate) fn token_rows(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let y = precision::linear(linear, x.reshape([b * t, d]));
    let out = y.dims()[1];
    y.reshape([b, t, out])
}

/// Dense projection, dropout, residual and LayerNorm: LN(x + dropout(y W + b)).
#[derive(Module, Debug)]
pub struct BertResidualOutput {
    /// The projection back to width d.
    pub dense: Linear,
    /// LayerNorm after the residual sum.
    pub layer_norm: LayerNorm,
    /// Dropout on the projection.
    pub dropout: Dropout,
    /// ε of the LayerNorm.
    #[module(skip)]
    pub layer_norm_eps: f64,
}

impl BertResidualOutput {
    fn new(config: &BertConfig, d_in: usize, device: &Device) -> Self {
        BertResidualOutput {
            dense: linear(config, d_in, config.hidden_size, device),
            layer_norm: layer_norm(config, device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
            layer_norm_eps: config.layer_norm_eps,
        }
    }

    fn forward(&self, y: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let projected = fused::dropout(&self.dropout, token_rows(&self.dense, y));
        fused::layer_norm(&self.layer_norm, self.layer_norm_eps, projected + residual)
    }
}

/// Self-attention with its output projection (HF `attention.self` and `attention.output`).
#[derive(Module, Debug)]
pub struct BertAttention {
    /// Q, K, V and the attention itself (HF `attention.self`).
    pub self_attention: BertSelfAttention,
    /// W_o, residual and LayerNorm (HF `attention.output`).
    pub output: BertResidualOutput,
}

/// The feed-forward expansion act(x W_i + b_i).
#[derive(Module, Debug)]
pub struct BertIntermediate {
    /// W_i `[d, d_ff]`.
    pub dense: Linear,
    /// The activation.
    #[module(skip)]
    pub act: HiddenAct,
}

/// One encoder layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Self-attention sub-layer.
    pub attention: BertAttention,
    /// Feed-forward expansion.
    pub intermediate: BertIntermediate,
    /// Feed-forward projection, residual and LayerNorm.
    pub output: BertResidualOutput,
}

impl BertLayer {
    fn new(config: &BertConfig, device: &Device) -> Self {
        BertLayer {
            attention: BertAttention {
                self_attention: BertSelfAttention::new(config, device),
                output: BertResidualOutput::new(config, config.hidden_size, device),
            },
            intermediate: BertIntermediate {
                dense: linear(config, config.hidden_size, config.intermediate_size, device),
                act: config.hidden_act,
            },
            output: BertResidualOutput::new(config, config.intermediate_size, device),
        }
    }

    fn forward(
        &self,
        h: Tensor<3>,
        bias: Tensor<4>,
        output_attentions: bool,
    ) -> (Tensor<3>, Option<Tensor<4>>) {
        let (context, probs) =
            self.attention
                .self_attention
                .forward(h.clone(), bias, output_attentions);
        let h1 = self.attention.output.forward(context, h);
        let expanded = self
            .intermediate
            .act
            .apply(token_rows(&self.intermediate.dense, h1.clone()));
        (self.output.forward(expanded, h1), probs)
    }
}

/// The stack of encoder layers (HF `encoder`).
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// Layers 1..L (HF `encoder.layer.{i}`).
    pub layer: Vec<BertLayer>,
}

/// The BERT encoder without pooler or pre-training heads.
#[derive(Module, Debug)]
pub struct BertModel {
    /// Input embeddings.
    pub embeddings: BertEmbeddings,
    /// Encoder layers.
    pub encoder: BertEncoder,
}

impl BertModel {
    /// A randomly initialised encoder (weights ~ N(0, initializer_range²), biases 0,
    /// LayerNorm γ = 1, β = 0, as in BERT).
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        BertModel {
            embeddings: BertEmbeddings::new(config, device),
            encoder: BertEncoder {
                layer: (0..config.num_hidden_layers)
                    .map(|_| BertLayer::new(config, device))
                    .collect(),
            },
        }
    }

    /// Loads a Hugging Face BERT directory: `config.json` plus `model.safetensors` (or
    /// `pytorch_model.bin`). Key prefixes `bert.` and pooler/pre-training heads are ignored.
    pub fn load(dir: &Path, device: &Device) -> Result<(Self, BertConfig), ModelError> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let mut model = BertModel::new(&config, device);
        checkpoint::load_weights(&mut model, dir)?;
        Ok((model, config))
    }

    /// Writes `model.safetensors` and `config.json` in Hugging Face's layout into `dir`.
    pub fn save(&self, config: &BertConfig, dir: &Path) -> Result<(), ModelError> {
        checkpoint::save(self, config, dir)
    }

    /// Number of layers L.
    pub fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }

    /// Encodes a padded batch: `input_ids` and `attention_mask` (1 token, 0 padding) are
    /// `[batch, T]`, T at most `max_position_embeddings`. Every token has segment 0.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        output_attentions: bool,
    ) -> BertOutput {
        self.forward_with_token_types(input_ids, None, attention_mask, output_attentions)
    }

    /// [`forward`](Self::forward) with explicit segment ids `[batch, T]` (sentence pairs).
    pub fn forward_with_token_types(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        attention_mask: Tensor<2, Int>,
        output_attentions: bool,
    ) -> BertOutput {
        let bias = mask_bias(attention_mask);
        let mut h = self.embeddings.forward(input_ids, token_type_ids);
        let mut hidden_states = Vec::with_capacity(self.num_layers() + 1);
        let mut attentions = Vec::new();
        hidden_states.push(h.clone());
        for layer in &self.encoder.layer {
            let (next, probs) = layer.forward(h, bias.clone(), output_attentions);
            h = next;
            hidden_states.push(h.clone());
            attentions.extend(probs);
        }
        BertOutput {
            last_hidden_state: h,
            hidden_states,
            attentions,
        }
    }
}

/// The additive mask M `[B, 1, T, T]`: 0 where the key is a token, [`MASK_BIAS`] where it
/// is padding. Built once per batch (full query rows, so fused kernels need no per-layer
/// broadcast copy).
fn mask_bias(attention_mask: Tensor<2, Int>) -> Tensor<4> {
    let [b, t] = attention_mask.dims();
    let padding = attention_mask.float().neg().add_scalar(1.0);
    padding
        .mul_scalar(MASK_BIAS)
        .reshape([b, 1, 1, t])
        .repeat_dim(2, t)
}

fn normal_init(config: &BertConfig) -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: config.initializer_range,
    }
}

/// A dense layer initialised as BERT does: weights N(0, σ²), bias 0.
fn linear(config: &BertConfig, d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_initializer(normal_init(config))
        .init(device);
    layer.bias = Some(Initializer::Zeros.init([d_out], device));
    layer
}

fn layer_norm(config: &BertConfig, device: &Device) -> LayerNorm {
    LayerNormConfig::new(config.hidden_size)
        .with_epsilon(config.layer_norm_eps)
        .init(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(rows: &[&[i64]], device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
        let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut flat = vec![0i64; rows.len() * t];
        let mut mask = vec![0i64; rows.len() * t];
        for (i, row) in rows.iter().enumerate() {
            flat[i * t..i * t + row.len()].copy_from_slice(row);
            mask[i * t..i * t + row.len()]
                .iter_mut()
                .for_each(|m| *m = 1);
        }
        (
            Tensor::from_data(TensorData::new(flat, [rows.len(), t]), device),
            Tensor::from_data(TensorData::new(mask, [rows.len(), t]), device),
        )
    }

    fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        tensor.into_data().try_into_vec::<f32>().unwrap()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    const LONG: &[i64] = &[2, 17, 5, 44, 9, 3];
    const SHORT: &[i64] = &[2, 8, 3];

    #[test]
    fn tiny_model_shapes_and_masked_attention() {
        let device = Device::flex();
        let _seeded = crate::train::rng::hold_backend_seed(&device, 7);
        let config = BertConfig::tiny(50);
        let model = BertModel::new(&config, &device);
        let (input_ids, mask) = ids(&[LONG, SHORT], &device);
        let out = model.forward(input_ids, mask, true);

        assert_eq!(out.last_hidden_state.dims(), [2, 6, 32]);
        assert_eq!(out.hidden_states.len(), config.num_hidden_layers + 1);
        assert!(out.hidden_states.iter().all(|h| h.dims() == [2, 6, 32]));
        assert_eq!(out.attentions.len(), config.num_hidden_layers);
        for probs in &out.attentions {
            assert_eq!(probs.dims(), [2, 2, 6, 6]);
            let p = values(probs.clone());
            for (row, len) in [(0usize, LONG.len()), (1, SHORT.len())] {
                for head in 0..2 {
                    for query in 0..6 {
                        let at = ((row * 2 + head) * 6 + query) * 6;
                        let weights = &p[at..at + 6];
                        // Padded keys get exactly zero, the rest sums to one.
                        assert!(weights[len..].iter().all(|&w| w == 0.0), "{weights:?}");
                        let sum: f32 = weights[..len].iter().sum();
                        assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}");
                    }
                }
            }
        }
        assert_eq!(
            values(out.last_hidden_state),
            values(out.hidden_states[config.num_hidden_layers].clone())
        );
    }

    #[test]
    fn padding_does_not_change_real_tokens() {
        let device = Device::flex();
        let _seeded = crate::train::rng::hold_backend_seed(&device, 11);
        let model = BertModel::new(&BertConfig::tiny(50), &device);
        let (batch_ids, batch_mask) = ids(&[LONG, SHORT], &device);
        let (alone_ids, alone_mask) = ids(&[SHORT], &device);
        let batched = model
            .forward(batch_ids, batch_mask, false)
            .last_hidden_state;
        let alone = model
            .forward(alone_ids, alone_mask, false)
            .last_hidden_state;
        let row = values(batched.slice([1..2, 0..SHORT.len()]));
        assert!(max_abs_diff(&row, &values(alone)) < 1e-5);
    }

    #[test]
    fn fused_and_explicit_attention_agree() {
        let device = Device::flex();
        let _seeded = crate::train::rng::hold_backend_seed(&device, 3);
        let model = BertModel::new(&BertConfig::tiny(50), &device);
        let (input_ids, mask) = ids(&[LONG, SHORT], &device);
        let fused = model.forward(input_ids.clone(), mask.clone(), false);
        let explicit = model.forward(input_ids, mask, true);
        assert!(fused.attentions.is_empty());
        let d = max_abs_diff(
            &values(fused.last_hidden_state),
            &values(explicit.last_hidden_state),
        );
        assert!(d < 1e-5, "max abs diff {d}");
    }

    #[test]
    fn trains_with_dropout_on_autodiff_and_is_deterministic_in_valid_mode() {
        let device = Device::flex().autodiff();
        let _seeded = crate::train::rng::hold_backend_seed(&device, 5);
        let model = BertModel::new(&BertConfig::tiny(50), &device);
        let (input_ids, mask) = ids(&[LONG, SHORT], &device);
        let a = model.forward(input_ids.clone(), mask.clone(), false);
        let b = model.forward(input_ids.clone(), mask.clone(), false);
        // Dropout is active while training: two passes differ.
        let (va, vb) = (
            values(a.last_hidden_state.clone()),
            values(b.last_hidden_state),
        );
        assert!(max_abs_diff(&va, &vb) > 1e-4);
        // Gradients reach the embeddings and the attention projections.
        let grads = a.last_hidden_state.powf_scalar(2.0).sum().backward();
        let layer = &model.encoder.layer[0];
        assert!(model
            .embeddings
            .word_embeddings
            .weight
            .grad(&grads)
            .is_some());
        assert!(layer
            .attention
            .self_attention
            .query
            .weight
            .grad(&grads)
            .is_some());
        // In validation mode the output is deterministic.
        let eval = model.valid();
        let (eval_ids, eval_mask) = ids(&[LONG, SHORT], &Device::flex());
        let c = values(
            eval.forward(eval_ids.clone(), eval_mask.clone(), false)
                .last_hidden_state,
        );
        let d = values(eval.forward(eval_ids, eval_mask, false).last_hidden_state);
        assert_eq!(c, d);
    }

    #[test]
    fn config_reads_hf_json_and_rejects_what_it_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let base = r#""vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072,
            "max_position_embeddings": 512, "some_unknown_key": [1, 2]"#;
        std::fs::write(&path, format!(r#"{{{base}, "pad_token_id": null}}"#)).unwrap();
        let config = BertConfig::from_file(&path).unwrap();
        assert_eq!(config.hidden_act, HiddenAct::Gelu);
        assert_eq!(config.layer_norm_eps, 1e-12);
        assert_eq!(config.pad_token_id, 0);
        assert_eq!(config.head_size(), 64);

        std::fs::write(&path, format!(r#"{{{base}, "hidden_act": "gelu_new"}}"#)).unwrap();
        assert_eq!(
            BertConfig::from_file(&path).unwrap().hidden_act,
            HiddenAct::GeluTanh
        );
        for bad in [
            r#""hidden_act": "swish""#,
            r#""position_embedding_type": "relative_key""#,
            r#""model_type": "roberta""#,
        ] {
            std::fs::write(&path, format!("{{{base}, {bad}}}")).unwrap();
            let message = BertConfig::from_file(&path).unwrap_err().to_string();
            assert!(message.contains("config.json"), "{message}");
        }
        let odd = base.replace(
            r#""num_attention_heads": 12"#,
            r#""num_attention_heads": 7"#,
        );
        std::fs::write(&path, format!("{{{odd}}}")).unwrap();
        let message = BertConfig::from_file(&path).unwrap_err().to_string();
        assert!(message.contains("multiple"), "{message}");
    }
}
