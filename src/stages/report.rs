//! `report`: renders a markdown report (plus SVG plots) from the results bound to its
//! inputs. Every input name binds a family of upstream instances (e.g. `results:
//! evaluate` → all its matrix instances); each becomes one [`ResultRow`] with that input
//! name, its stage, key, coordinates, `metrics.json`, `history.json` and `stats.json`.
//!
//! Params: `template` (a path relative to the working directory, or a file name under
//! `reports/templates/`, or `{inline: "..."}`), `references` (a references YAML path),
//! `title`, `vars` (more template variables), `output` (default `report.md`). The bytes of the template folder and of the
//! references file are part of the key, so editing either re-renders the report.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{InputArtifact, InputContract, Inputs, ParamError, Stage, StageCtx, StageError};
use crate::report::{
    render, Provenance, References, RenderedReport, ReportError, ResultRow, TemplateSource,
};

/// Where the default templates live, relative to the working directory.
pub const TEMPLATE_DIR: &str = "reports/templates";

/// Params of `report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    pub template: TemplateParam,
    /// Paper numbers to place beside ours (e.g. `reports/references.yaml`).
    #[serde(default)]
    pub references: Option<String>,
    /// Available to the template as `title`.
    #[serde(default)]
    pub title: Option<String>,
    /// More variables for the template (e.g. `seeds: 3` for the expected seeds per cell).
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, serde_json::Value>,
    /// File name of the markdown in the output.
    #[serde(default = "default_output")]
    pub output: String,
}

fn default_output() -> String {
    "report.md".to_string()
}

/// A template file, or inline template text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TemplateParam {
    Path(String),
    Inline { inline: String },
}

/// The template file a `template:` path names: as given (relative to the working
/// directory), else a bare file name under [`TEMPLATE_DIR`].
pub fn resolve_template(name: &str) -> Result<PathBuf, ParamError> {
    let given = PathBuf::from(name);
    if given.is_file() {
        return Ok(given);
    }
    let under = Path::new(TEMPLATE_DIR).join(name);
    if given.components().count() == 1 && under.is_file() {
        return Ok(under);
    }
    Err(ParamError::new(
        "template",
        format!("no template file `{name}` (looked at ./{name} and {TEMPLATE_DIR}/{name})"),
    ))
}

/// All result rows bound to a report's inputs, input by input.
pub fn rows_from_inputs(inputs: &Inputs) -> Result<Vec<ResultRow>, ReportError> {
    let mut rows = Vec::new();
    for (name, artifacts) in &inputs.by_name {
        for a in artifacts {
            rows.push(row_from_artifact(name, a)?);
        }
    }
    Ok(rows)
}

/// One result row from one bound artifact.
pub fn row_from_artifact(input: &str, a: &InputArtifact) -> Result<ResultRow, ReportError> {
    ResultRow::load(input, &a.stage, &a.key_hex(), a.coords.to_map(), &a.path)
}

/// Adds every file under `dir` (sorted, recursively) to `hasher`.
fn hash_tree(dir: &Path, hasher: &mut blake3::Hasher) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            hash_tree(&path, hasher)?;
        } else {
            hasher.update(path.to_string_lossy().as_bytes());
            hasher.update(&[0]);
            hasher.update(&std::fs::read(&path)?);
        }
    }
    Ok(())
}

/// The `report` stage kind.
pub struct ReportStage;

impl Stage for ReportStage {
    const KIND: &'static str = "report";
    const VERSION: u32 = 1;
    type Params = ReportParams;
    const INPUTS: InputContract = InputContract::Open;

    fn check(p: &ReportParams) -> Result<(), ParamError> {
        let plain =
            p.output.ends_with(".md") && !p.output.contains('/') && !p.output.starts_with('.');
        if !plain {
            return Err(ParamError::new(
                "output",
                format!("`{}`: use a plain file name ending in .md", p.output),
            ));
        }
        if let TemplateParam::Path(name) = &p.template {
            resolve_template(name)?;
        }
        if let Some(refs) = &p.references {
            References::load(Path::new(refs))
                .map_err(|e| ParamError::new("references", e.to_string()))?;
        }
        Ok(())
    }

    fn fingerprint(p: &ReportParams) -> Result<Option<String>, ParamError> {
        let mut hasher = blake3::Hasher::new();
        if let TemplateParam::Path(name) = &p.template {
            let file = resolve_template(name)?;
            let dir = file.parent().unwrap_or(Path::new("."));
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if dir == Path::new(".") {
                // A template in the working directory: hash the file alone.
                let bytes = std::fs::read(&file)
                    .map_err(|e| ParamError::new("template", format!("{name}: {e}")))?;
                hasher.update(&bytes);
            } else {
                hash_tree(dir, &mut hasher)
                    .map_err(|e| ParamError::new("template", format!("{}: {e}", dir.display())))?;
            }
        }
        if let Some(refs) = &p.references {
            let bytes = std::fs::read(refs)
                .map_err(|e| ParamError::new("references", format!("{refs}: {e}")))?;
            hasher.update(b"references\0");
            hasher.update(&bytes);
        }
        Ok(Some(hasher.finalize().to_hex().to_string()))
    }

    fn run(ctx: &mut StageCtx, p: &ReportParams) -> Result<(), StageError> {
        let provenance = Provenance::for_run(&ctx.run, &ctx.device);
        let rendered = render_report(ctx, p, &provenance)?;
        let missing = rendered.missing_results();
        if !missing.is_empty() {
            ctx.progress.println(format!(
                "{}: {} cell(s) without a result (shown as —)",
                ctx.name,
                missing.len()
            ));
        }
        Ok(())
    }
}

/// Renders the report of a `report` stage: rows from `ctx.inputs`, markdown to
/// `ctx.out_dir/<output>`, plots beside it. What the stage runs, and what `pipe report`
/// calls with the run's full provenance.
pub fn render_report(
    ctx: &StageCtx,
    p: &ReportParams,
    provenance: &Provenance,
) -> Result<RenderedReport, StageError> {
    let rows = rows_from_inputs(&ctx.inputs)?;
    let mut source = match &p.template {
        TemplateParam::Path(name) => TemplateSource::file(resolve_template(name)?),
        TemplateParam::Inline { inline } => {
            TemplateSource::inline(format!("{} (inline template)", ctx.name), inline.clone())
        }
    };
    for (name, value) in &p.vars {
        source = source.with_var(name.clone(), value.clone());
    }
    if let Some(title) = &p.title {
        source = source.with_var("title", serde_json::json!(title));
    }
    let references = match &p.references {
        Some(path) => References::load(Path::new(path))?,
        None => References::empty(),
    };
    let rendered = render(&source, &rows, &references, provenance, &ctx.out_dir)?;
    let path = ctx.out_dir.join(&p.output);
    std::fs::write(&path, &rendered.markdown).map_err(|e| StageError::io(&path, e))?;
    Ok(rendered)
}
