//! Pipeline files: the YAML schema, includes and templates, profiles, matrix expansion,
//! and validation errors that name file:line:col.

mod doc;
mod error;
mod expand;
mod locate;
mod resources;

pub use doc::{InputDoc, MatrixAxisDoc, PipelineDoc, StageDoc};
pub use error::SpecError;
pub use expand::{
    load_pipeline, set_max_cells, InputRef, Pipeline, StageInstance, DEFAULT_MAX_CELLS,
};
pub use locate::{Located, SourceMap};
pub use resources::Resources;
