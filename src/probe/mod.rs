//! Edge probing with a scalar mix (Tenney et al. 2019; su2022 "Introduction of edge
//! probing", Fig. 4, and Fig. 1's last-layer knowledge `Δ^L`).
//!
//! The encoder is frozen. For l = 0..=L a probing classifier
//!
//! ```text
//! h_{i,l} = γ_l Σ_{k=0}^{l} α_l^k h_i^k        α_l = softmax([a^(0), …, a^(l)])
//! P^l     = MLP([h_{0,l}, h_{1,l}, …, h_{N,l}])
//! Δ^l     = F1(P^l) − F1(P^{l−1})              (test set, l = 1..=L)
//! ```
//!
//! is trained on the encoder's states of layers 0..=l (0 is the embeddings' output),
//! computed once ([`features`]). [`scalar_mix`] is the mix, [`classifier`] the MLP over
//! the zero-padded concatenation, [`training`] fits and applies one `P^l`, [`delta`]
//! computes `Δ^l`. The `probe` stage kind drives it; in a pipeline:
//!
//! ```yaml
//! stages:
//!   biobert:
//!     kind: fetch
//!     params: {source: "hf:dmis-lab/biobert-base-cased-v1.1"}
//!   ft_chemprot:
//!     kind: finetune
//!     inputs: {data: chemprot_split, model: biobert}
//!     params: {head: cls, save_model: true}
//!   probe_chemprot:
//!     kind: probe
//!     # the fine-tuned encoder inside finetune's output (`stage.sub/path`)
//!     inputs: {data: chemprot_split, model: ft_chemprot.model}
//!     params: {hidden: 1024, lr: 2.0e-5, epochs: 4, batch_size: 32, max_len: 128}
//! ```
//!
//! (The smoke profile adds `init: random, tiny: true` to probe a tiny random encoder.)

pub mod classifier;
pub mod delta;
pub mod features;
pub mod scalar_mix;
pub mod training;

use std::sync::atomic::AtomicBool;

use burn::tensor::Device;

use crate::stages::Progress;

pub use classifier::{ProbeClassifier, ProbeConfig};
pub use delta::{knowledge_deltas, LayerDelta};
pub use features::{extract, InstanceStates, LayerStates};
pub use scalar_mix::ScalarMix;
pub use training::{fit_probe, mix_weights, predict_probe, FittedProbe};

/// Where probing runs and reports.
pub struct ProbeEnv<'a> {
    /// Autodiff device for [`fit_probe`], plain device for [`extract`] and
    /// [`predict_probe`].
    pub device: &'a Device,
    pub progress: &'a Progress,
    pub cancel: &'a AtomicBool,
}
