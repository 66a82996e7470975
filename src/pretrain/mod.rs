//! Sub-domain pre-training (su2022, "Improving pre-training using sub-domain data"):
//! selecting abstracts by a PubMed-style query or by annotated entity types, and continued
//! masked-language-model training of a BERT checkpoint on them.

pub mod documents;
pub mod masking;
pub mod mlm_head;
pub mod nsp_head;
pub mod pairs;
pub mod query;
pub mod training;
