//! Analysis of the SLL-Att head's attention weights α (su2020 IV.C–E, su2022 "Analysis of
//! attention weights in the SLL fine-tuning": Fig. 2, Table 8; su2020 Table V, Fig. 4).
//!
//! From a fine-tuned `sll_att*` model's test-set `attention.jsonl` ([`record`]): word pieces
//! are merged into words and entity tags are found ([`words`]), words are reduced to Porter
//! stems ([`stem`]), stems within a window of the entity mentions are ranked by mean α
//! ([`ranking`]), chosen trigger stems are compared between positive and negative
//! instances ([`triggers`], drawn by [`trigger_chart`]), and chosen sentences are drawn as
//! heat maps ([`heatmap`]).

pub mod arc_heatmap;
pub mod heatmap;
pub mod ranking;
pub mod record;
pub mod stem;
pub mod trigger_chart;
pub mod triggers;
pub mod words;

pub use arc_heatmap::ArcHeatmap;
pub use heatmap::{escape_markup, render_html, render_svg, HeatmapSentence};
pub use ranking::{rank_words, StemTally, StemWeight};
pub use record::{read_attention, AttentionRecord};
pub use stem::porter_stem;
pub use trigger_chart::render_trigger_svg;
pub use triggers::{trigger_weights, TriggerWeight};
pub use words::{merge_pieces, near_entities, Word, WordKind};

/// Why an attention analysis failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// One instance of `attention.jsonl` is unusable.
    #[error("instance `{id}`: {message}")]
    Instance { id: String, message: String },
}
