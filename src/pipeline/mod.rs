//! Pipeline files, from YAML to the expanded list of stage instances. [`load_pipeline`]
//! reads the file ([`SourceMap`]: its positions, scanned once) and runs the passes, one
//! file each, over one shared context: includes → templates → kinds → profile → matrix →
//! inputs bound → input contracts. Every error names file:line:col.

mod bind_inputs;
mod contracts;
mod doc;
mod error;
mod expanded_store;
mod include;
mod instance;
mod kind;
mod load;
mod locate;
mod matrix;
mod parse_in_pieces;
mod profile;
mod resources;
mod shared_text;
mod sorted_map;
mod stage_params;
mod stage_selector;
mod template;

pub use bind_inputs::TargetSyntax;
pub use doc::{InputDoc, MatrixAxisDoc, PipelineDoc, StageDoc};
pub use error::PipelineError;
pub use expanded_store::{ExpandedStore, STORE_FROM_INSTANCES};
pub use instance::{BoundInputs, CellCoords, InputRef, Pipeline, StageInstance, WorkspaceTies};
pub use load::{load_pipeline, load_pipeline_stored};
pub use locate::{Located, SourceMap};
pub use matrix::{set_max_cells, DEFAULT_MAX_CELLS};
pub use resources::Resources;
pub use stage_params::StageParams;
pub use stage_selector::SelectionMiss;
