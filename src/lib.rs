//! `pipe`: declarative, content-hashed, cached pipelines for transformer experiments
//! on biomedical text. A YAML file describes a DAG of stages; each stage's output is
//! stored under a key derived from everything that determines it, so reruns only
//! recompute what changed. `ARCHITECTURE.md` describes the layers and the data flow.

pub mod allocator;
pub mod analysis;
pub mod cache;
pub mod cli;
pub mod data;
pub mod exec;
pub mod graph;
pub mod hash;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod pretrain;
pub mod probe;
pub mod report;
pub mod sources;
pub mod spelling;
pub mod stages;
pub mod timings;
pub mod train;
