//! Reports: minijinja templates and SVG plots rendered to markdown.
//!
//! [`render`] turns result rows (one per upstream stage instance, see [`ResultRow`]),
//! paper numbers ([`References`], `reports/references.yaml`) and [`Provenance`] into a
//! markdown report with SVG plots; [`diff_metrics`] compares two runs' rows for `pipe diff`.

pub mod cells;
pub mod diff;
pub mod paired;
pub mod plot;
pub mod provenance;
pub mod references;
pub mod render;
pub mod rows;
pub mod transfer_graph;

use std::path::PathBuf;

pub use cells::{Footnote, NoteKind};
pub use diff::{diff_metrics, render_diff_markdown, MetricChange};
pub use provenance::Provenance;
pub use references::{RefLookup, References};
pub use render::{render, RenderedReport, TemplateOrigin, TemplateSource};
pub use rows::ResultRow;

/// Errors rendering a report; template errors name the template file and line.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// An unreadable `metrics.json` / `history.json` / `stats.json`.
    #[error("{path}: not valid JSON: {message}")]
    Json { path: PathBuf, message: String },
    /// A template that does not parse or fails while rendering.
    #[error("{file}{}: {message}{}", line.map(|l| format!(":{l}")).unwrap_or_default(),
            snippet.as_ref().map(|s| format!("\n    | {}", s.trim_end())).unwrap_or_default())]
    Template {
        /// The template file (or inline template name).
        file: String,
        line: Option<usize>,
        message: String,
        /// The offending template line.
        snippet: Option<String>,
    },
    /// A references YAML that does not parse.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    References {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// A plot that could not be drawn.
    #[error("plot {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}

impl ReportError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }
}
