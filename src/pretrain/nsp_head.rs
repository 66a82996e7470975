//! The next-sentence-prediction head of BERT (Hugging Face's `BertPooler` and
//! `BertOnlyNSPHead`):
//!
//! ```text
//! p = tanh(h_[CLS] W_p + b_p)        (pooler)
//! logits = p W_s + b_s               (seq_relationship: is next / not next)
//! ```
//!
//! The pooler comes from a checkpoint's `pooler.dense.*` (or `bert.pooler.dense.*`) and the
//! classifier from `cls.seq_relationship.*` where it has them (BERT and BioBERT have both;
//! all-MiniLM-L6-v2 only the pooler); what is missing is initialised as BERT's.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::mlm_head::load_head;
use crate::model::{BertConfig, ModelError};

/// Label of a pair whose second segment follows the first (Hugging Face's convention:
/// index 0 is "is next").
pub const IS_NEXT: i64 = 0;
/// Label of a pair whose second segment comes from another document.
pub const NOT_NEXT: i64 = 1;

const POOLER_RENAMES: [(&str, &str); 1] = [(r"^(bert\.)?pooler\.dense\.", "")];
const CLASSIFIER_RENAMES: [(&str, &str); 1] = [(r"^cls\.seq_relationship\.", "")];

/// Pooler and two-way classifier over `h_[CLS]`.
#[derive(Module, Debug)]
pub struct NspHead {
    /// W_p `[d, d]`, b_p.
    pub pooler: Linear,
    /// W_s `[d, 2]`, b_s.
    pub seq_relationship: Linear,
}

/// Which parts of the head came from the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NspLoaded {
    pub pooler: bool,
    pub classifier: bool,
}

impl NspHead {
    /// BERT's initialisation: weights ~ N(0, initializer_range²), biases 0.
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        let d = config.hidden_size;
        let init = || Initializer::Normal {
            mean: 0.0,
            std: config.initializer_range,
        };
        NspHead {
            pooler: LinearConfig::new(d, d)
                .with_initializer(init())
                .init(device),
            seq_relationship: LinearConfig::new(d, 2)
                .with_initializer(init())
                .init(device),
        }
    }

    /// Logits `[B, 2]` from the `[CLS]` states `h_cls: [B, d]`.
    pub fn forward(&self, h_cls: Tensor<2>) -> Tensor<2> {
        let p = self.pooler.forward(h_cls).tanh();
        self.seq_relationship.forward(p)
    }

    /// Fills the pooler and the classifier from the weights file of `dir` where it has them.
    pub fn load_pretrained(&mut self, dir: &Path) -> Result<NspLoaded, ModelError> {
        Ok(NspLoaded {
            pooler: load_head(&mut self.pooler, dir, &POOLER_RENAMES, "the pooler")?,
            classifier: load_head(
                &mut self.seq_relationship,
                dir,
                &CLASSIFIER_RENAMES,
                "the NSP classifier",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::store::KeyRemapper;

    #[test]
    fn rename_patterns_compile() {
        assert!(KeyRemapper::from_patterns(POOLER_RENAMES.to_vec()).is_ok());
        assert!(KeyRemapper::from_patterns(CLASSIFIER_RENAMES.to_vec()).is_ok());
    }
}
