//! Rendering a report: a minijinja template over result rows, paper references and
//! provenance, to markdown plus SVG plots.
//!
//! What templates get (see `reports/templates/README.md` for examples):
//! - globals `rows` (every result), `refs` (references.yaml), `provenance`, and any vars of
//!   the [`TemplateSource`] (e.g. `title`);
//! - `select(rows, **coords)` → the rows whose coordinates (or `input`, `stage`) match;
//! - `coord_values(rows, name)` → the distinct values of a coordinate, in row order;
//! - `cell(rows, metric="f1", over="seed", expect=N, **coords)` → our cell: mean ± sample
//!   std (percent, one decimal) of `metric` (a dotted path into metrics.json) over the
//!   matching rows, which may differ only in the `over` coordinates (an error otherwise, so
//!   a forgotten filter never averages heads together). No match renders "—" + footnote;
//!   fewer than `expect` results add a footnote. Attributes: `.mean .std .n .missing .values`;
//! - `reference(paper, table, row, task, metric)` → the paper's value as printed, or "—" +
//!   footnote when not printed / not recoverable;
//! - `delta(ours, theirs)` → ours − paper in percentage points ("+1.2"), "—" if either is missing;
//! - `paired(a, b, metric="f1", by="seed", metric_b=metric)` → `a − b` over the runs both
//!   selections have (paired by `by`; `metric_b` when `b` keeps the score elsewhere): "+2.7 ± 0.8 (higher in 3 of 3)", or "—" + footnote; attributes
//!   `.mean .std .n .higher .missing`;
//! - filters `pct` (fraction → "81.2"), `signed` (points → "+1.5", "−0.3"), `fixed(n)`
//!   (n decimals) and `thousands` (5834 → "5,834");
//! - `counts_table(stats)` → a markdown table of a `split → label → count` map;
//! - `history_plot(rows, file=..., metric="train_loss", percent=false, over=..., title=...,
//!   **coords)` (one line per varying coordinate combination, averaged per epoch over `over`),
//!   `line_plot(file, series, ...)`, `bar_chart(file, bars, ...)` → write an SVG next to the
//!   report and return its markdown image link;
//! - `transfer_graph(file, nodes, edges, title=...)` → the improves/hurts graph of a
//!   pairwise multi-task grid (`nodes`: `[key, label]` pairs; `edges`: `{from, to, mean,
//!   std, n}` with Δ as fractions over n seeds), an SVG next to the report, see
//!   [`super::transfer_graph`];
//! - `footnotes()` → the footnote definitions so far (the rest are appended at the end).
//!
//! Every report ends with the provenance section; rendering is strict (an undefined
//! variable is an error) and every error names the template file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};

use super::cells::{self, Footnote, Footnotes, NoteKind, OurCell, RefCell};
use super::paired::{PairedCell, PairedDifference};
use super::plot::{self, Bar, BarChart, LinePlot, Series};
use super::rows::{coord_text, same_value};
use super::transfer_graph::{transfer_graph, TransferGraph};
use super::{Provenance, References, ReportError, ResultRow};
use crate::metrics::MeanStd;

/// Where a template comes from, and variables it can use (e.g. `title`).
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSource {
    pub origin: TemplateOrigin,
    pub vars: BTreeMap<String, serde_json::Value>,
}

/// A template file (its folder is the search path for `include`), or inline text.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateOrigin {
    File(PathBuf),
    Inline { name: String, text: String },
}

impl TemplateSource {
    /// A template file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        TemplateSource {
            origin: TemplateOrigin::File(path.into()),
            vars: BTreeMap::new(),
        }
    }

    /// Inline template text; `name` is what errors call it.
    pub fn inline(name: impl Into<String>, text: impl Into<String>) -> Self {
        TemplateSource {
            origin: TemplateOrigin::Inline {
                name: name.into(),
                text: text.into(),
            },
            vars: BTreeMap::new(),
        }
    }

    /// Adds a variable the template can read.
    pub fn with_var(mut self, name: impl Into<String>, value: serde_json::Value) -> Self {
        self.vars.insert(name.into(), value);
        self
    }

    /// How errors name a template of this source (`name` as minijinja knows it).
    fn display_name(&self, name: Option<&str>) -> String {
        match &self.origin {
            TemplateOrigin::File(path) => match name {
                Some(n) => path.parent().unwrap_or(Path::new("")).join(n),
                None => path.clone(),
            }
            .display()
            .to_string(),
            TemplateOrigin::Inline { name: inline, .. } => name.unwrap_or(inline).to_string(),
        }
    }
}

/// A rendered report: the markdown, the plots written next to it, and its footnotes.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedReport {
    pub markdown: String,
    pub plots: Vec<PathBuf>,
    pub footnotes: Vec<Footnote>,
}

impl RenderedReport {
    /// The footnotes of cells without a result (stages not run / not cached).
    pub fn missing_results(&self) -> Vec<&str> {
        self.footnotes
            .iter()
            .filter(|n| n.kind == NoteKind::MissingResult)
            .map(|n| n.text.as_str())
            .collect()
    }
}

/// Renders `template` over `rows`; plots are written to `out_dir` (the folder the markdown
/// will be saved in, since it links them by file name). Returns the markdown, which ends
/// with the footnotes and the provenance section.
pub fn render(
    template: &TemplateSource,
    rows: &[ResultRow],
    references: &References,
    provenance: &Provenance,
    out_dir: &Path,
) -> Result<RenderedReport, ReportError> {
    std::fs::create_dir_all(out_dir).map_err(|e| ReportError::io(out_dir, e))?;
    let state = Arc::new(RenderState {
        references: references.clone(),
        notes: Arc::new(Footnotes::default()),
        out_dir: out_dir.to_path_buf(),
        plots: Mutex::new(Vec::new()),
    });
    let mut env = environment(&state);
    env.add_global(
        "rows",
        Value::from_object(RowSet(rows.to_vec(), Vec::new())),
    );
    env.add_global("refs", Value::from_serialize(references));
    env.add_global("provenance", Value::from_serialize(provenance));

    let as_error = |e: Error| template_error(&e, template);
    let name = match &template.origin {
        TemplateOrigin::File(path) => {
            if !path.is_file() {
                return Err(ReportError::Invalid(format!(
                    "template {}: no such file",
                    path.display()
                )));
            }
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            env.set_loader(minijinja::path_loader(dir));
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }
        TemplateOrigin::Inline { name, text } => {
            env.add_template_owned(name.clone(), text.clone())
                .map_err(as_error)?;
            name.clone()
        }
    };
    let tmpl = env.get_template(&name).map_err(as_error)?;
    let body = tmpl
        .render(Value::from_serialize(&template.vars))
        .map_err(as_error)?;

    let mut markdown = body.trim_end().to_string();
    markdown.push_str("\n\n");
    let remaining = state.notes.take_definitions();
    if !remaining.is_empty() {
        markdown.push_str(&remaining);
        markdown.push('\n');
    }
    markdown.push_str(&provenance.section(rows));
    let plots = state
        .plots
        .lock()
        .map(|p| p.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    Ok(RenderedReport {
        markdown,
        plots,
        footnotes: state.notes.all(),
    })
}

/// What template functions share during one render.
struct RenderState {
    references: References,
    notes: Arc<Footnotes>,
    out_dir: PathBuf,
    plots: Mutex<Vec<PathBuf>>,
}

impl RenderState {
    /// Writes one plot file `file` (a plain `name.svg`, each name once per report).
    fn write_plot(
        &self,
        file: &str,
        draw: impl FnOnce(&Path) -> Result<(), ReportError>,
    ) -> Result<(), Error> {
        let plain = file.ends_with(".svg")
            && !file.starts_with('.')
            && file
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !plain {
            return Err(invalid(format!(
                "plot file `{file}`: use a plain file name ending in .svg (letters, digits, _ - .)"
            )));
        }
        let path = self.out_dir.join(file);
        let mut plots = self.plots.lock().unwrap_or_else(|p| p.into_inner());
        if plots.contains(&path) {
            return Err(invalid(format!(
                "plot file `{file}` is written twice in this report"
            )));
        }
        draw(&path).map_err(|e| invalid(e.to_string()))?;
        plots.push(path);
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

/// A set of result rows, iterable in templates (each item a map with `input`, `stage`,
/// `key`, `coords`, `metrics`, `history`, `stats`), and the filters that selected it (so
/// footnotes can say which cell is missing).
#[derive(Debug)]
struct RowSet(Vec<ResultRow>, Vec<(String, serde_json::Value)>);

impl Object for RowSet {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let row = self.0.get(key.as_usize()?)?;
        Some(Value::from_serialize(row))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.0.len())
    }
}

/// The rows a template passed: a row set, or any list of row maps.
fn rows_arg(value: &Value) -> Result<Arc<RowSet>, Error> {
    if let Some(set) = value.downcast_object::<RowSet>() {
        return Ok(set);
    }
    serde_json::to_value(value)
        .and_then(serde_json::from_value::<Vec<ResultRow>>)
        .map(|rows| Arc::new(RowSet(rows, Vec::new())))
        .map_err(|e| {
            invalid(format!(
                "expected result rows (`rows` or `select(rows, ...)`), got {}: {e}",
                value.kind()
            ))
        })
}

/// Coordinate filters: every keyword argument except the `reserved` ones.
fn coord_filters(
    kwargs: &Kwargs,
    reserved: &[&str],
) -> Result<Vec<(String, serde_json::Value)>, Error> {
    let names: Vec<String> = kwargs
        .args()
        .filter(|k| !reserved.contains(k))
        .map(str::to_string)
        .collect();
    names
        .into_iter()
        .map(|name| {
            let v: Value = kwargs.get(&name)?;
            let json =
                serde_json::to_value(&v).map_err(|e| invalid(format!("filter `{name}`: {e}")))?;
            Ok((name, json))
        })
        .collect()
}

/// `task=ddi, head=cls` (or `all results`).
fn describe(filters: &[(String, serde_json::Value)]) -> String {
    if filters.is_empty() {
        return "all results".to_string();
    }
    filters
        .iter()
        .map(|(k, v)| format!("{k}={}", coord_text(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names whose values differ among `rows` (coordinates and `input`), with their values.
fn varying(rows: &[&ResultRow]) -> Vec<(String, Vec<serde_json::Value>)> {
    let mut names: Vec<String> = vec!["input".to_string()];
    for r in rows {
        for k in r.coords.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let mut seen: Vec<serde_json::Value> = Vec::new();
            for r in rows {
                let v = r.field(&name);
                if !seen.iter().any(|s| same_value(s, &v)) {
                    seen.push(v);
                }
            }
            (seen.len() > 1).then_some((name, seen))
        })
        .collect()
}

/// The `over` argument: a name or a list of names (default `seed`).
fn over_arg(kwargs: &Kwargs) -> Result<Vec<String>, Error> {
    let v: Option<Value> = kwargs.get("over")?;
    match v {
        None => Ok(vec!["seed".to_string()]),
        Some(v) if v.as_str().is_some() => Ok(vec![v.to_string()]),
        Some(v) => v
            .try_iter()?
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid("`over` takes a coordinate name or a list of names"))
            })
            .collect(),
    }
}

/// `values(rows, metric="f1")`: the metric of each row that has it, for a template's
/// own tests (a task that stayed at the all-negative prior: every value 0).
fn metric_values(rows: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let set = rows_arg(&rows)?;
    let metric: String = kwargs
        .get::<Option<String>>("metric")?
        .unwrap_or_else(|| "f1".to_string());
    kwargs.assert_all_used()?;
    let values: Vec<f64> = set.0.iter().filter_map(|r| r.metric(&metric)).collect();
    Ok(Value::from(values))
}

fn cell(state: &RenderState, rows: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let set = rows_arg(&rows)?;
    let metric: String = kwargs
        .get::<Option<String>>("metric")?
        .unwrap_or_else(|| "f1".to_string());
    let over = over_arg(&kwargs)?;
    let expect: Option<usize> = kwargs.get("expect")?;
    let filters = coord_filters(&kwargs, &["metric", "over", "expect"])?;
    kwargs.assert_all_used()?;

    let matched: Vec<&ResultRow> = set.0.iter().filter(|r| r.matches(&filters)).collect();
    let mut described = set.1.clone();
    described.extend(filters.iter().cloned());
    let what = format!("`{}`", describe(&described));
    if let Some((name, values)) = varying(&matched)
        .into_iter()
        .find(|(name, _)| !over.contains(name))
    {
        let values: Vec<String> = values.iter().map(coord_text).collect();
        return Err(invalid(format!(
            "cell {what} matches results that differ in `{name}` ({}): add {name}=... \
             or aggregate over it with over=[...\"{name}\"]",
            values.join(", ")
        )));
    }
    let values: Vec<f64> = matched.iter().filter_map(|r| r.metric(&metric)).collect();
    let mut remarks = Vec::new();
    if !values.is_empty() && values.len() < matched.len() {
        remarks.push((
            NoteKind::Incomplete,
            format!(
                "Mean over {} of {} results for {what} ({metric}): the others have no `{metric}`.",
                values.len(),
                matched.len()
            ),
        ));
    } else if let Some(want) = expect.filter(|&want| !values.is_empty() && values.len() < want) {
        remarks.push((
            NoteKind::Incomplete,
            format!(
                "Mean over {} of {want} expected results for {what}: the others have not run.",
                values.len()
            ),
        ));
    }
    if let Some(text) = no_positive_predictions(&matched, &metric, &what) {
        remarks.push((NoteKind::Other, text));
    }
    Ok(Value::from_object(OurCell {
        spread: MeanStd::of(&values),
        values,
        what,
        metric,
        matched: matched.len(),
        remarks,
        notes: state.notes.clone(),
    }))
}

/// `embed(rows, "heatmap.svg", alt="...")`: copies file `file` of the one matched result's
/// artifact (e.g. an `attention_analysis` heat map) next to the report and returns a
/// markdown image (`.svg`, `.png`) or link to it; "—" with a footnote when no result has
/// run. The copy is named after the stage instance, so several results can embed one file
/// name.
fn embed(state: &RenderState, rows: Value, file: String, kwargs: Kwargs) -> Result<Value, Error> {
    let set = rows_arg(&rows)?;
    let alt: Option<String> = kwargs.get("alt")?;
    let filters = coord_filters(&kwargs, &["alt"])?;
    kwargs.assert_all_used()?;
    let matched: Vec<&ResultRow> = set.0.iter().filter(|r| r.matches(&filters)).collect();
    let mut described = set.1.clone();
    described.extend(filters.iter().cloned());
    let what = format!("`{}`", describe(&described));
    if file.is_empty() || file.starts_with('/') || file.split('/').any(|p| p == "..") {
        return Err(invalid(format!(
            "embed: `{file}` must be a relative path inside the result"
        )));
    }
    let row = match matched.as_slice() {
        [] => {
            let why = format!("No result for {what}: not run yet.");
            return Ok(Value::from(cells::missing(
                &state.notes,
                NoteKind::MissingResult,
                &why,
            )));
        }
        [row] => *row,
        more => {
            return Err(invalid(format!(
                "embed {what} matches {} results; add coordinates to pick one",
                more.len()
            )))
        }
    };
    let Some(source) = row
        .dir
        .as_ref()
        .map(|d| d.join(&file))
        .filter(|p| p.is_file())
    else {
        let why = format!("{what} ({}) has no file `{file}`.", row.stage);
        return Ok(Value::from(cells::missing(
            &state.notes,
            NoteKind::Other,
            &why,
        )));
    };
    let stem: String = row
        .stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let flat: String = file.replace('/', "_");
    let name = format!("{}-{flat}", stem.trim_matches('_'));
    let target = state.out_dir.join(&name);
    std::fs::copy(&source, &target)
        .map_err(|e| invalid(format!("embed: copying {}: {e}", source.display())))?;
    {
        let mut plots = state.plots.lock().unwrap_or_else(|p| p.into_inner());
        if !plots.contains(&target) {
            plots.push(target);
        }
    }
    let alt = alt.unwrap_or_else(|| format!("{file} of {}", row.stage));
    let image = [".svg", ".png", ".jpg"].iter().any(|x| name.ends_with(x));
    Ok(Value::from(if image {
        format!("![{alt}]({name})")
    } else {
        format!("[{alt}]({name})")
    }))
}

/// A note when a precision or F1 of 0 comes from nothing predicted positive (P is then 0
/// by definition): counted from the `tp`/`fp` next to the metric, or from `per_fold`.
fn no_positive_predictions(rows: &[&ResultRow], metric: &str, what: &str) -> Option<String> {
    let (prefix, last) = match metric.rsplit_once('.') {
        Some((prefix, last)) => (format!("{prefix}."), last),
        None => (String::new(), metric),
    };
    if !matches!(last, "precision" | "f1") {
        return None;
    }
    let none_predicted = |v: &serde_json::Value| {
        let count = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        matches!((count("tp"), count("fp")), (Some(0), Some(0)))
    };
    let (mut results, mut folds) = (0, 0);
    for r in rows {
        let at = |p: &str| r.metric(&format!("{prefix}{p}"));
        if at("tp") == Some(0.0) && at("fp") == Some(0.0) {
            results += 1;
        } else if prefix.is_empty() {
            if let Some(list) = r.metrics.get("per_fold").and_then(|f| f.as_array()) {
                folds += list.iter().filter(|f| none_predicted(f)).count();
            }
        }
    }
    if results > 0 {
        Some(format!(
            "Nothing was predicted positive in {results} of {} results for {what}: \
             precision (and so F1) is 0 there by definition.",
            rows.len()
        ))
    } else if folds > 0 {
        Some(format!(
            "Nothing was predicted positive in {folds} fold(s) of the results for {what}: \
             precision (and so F1) is 0 there by definition."
        ))
    } else {
        None
    }
}

fn reference(state: &RenderState, args: &[Value]) -> Result<Value, Error> {
    let [paper, table, row, task, metric] = args else {
        return Err(invalid(
            "reference(paper, table, row, task, metric) takes five arguments",
        ));
    };
    let text = |v: &Value| v.to_string();
    let lookup = state
        .references
        .lookup(
            &text(paper),
            &text(table),
            &text(row),
            &text(task),
            &text(metric),
        )
        .map_err(|e| invalid(e.to_string()))?;
    Ok(Value::from_object(RefCell {
        lookup,
        notes: state.notes.clone(),
    }))
}

fn delta(ours: &Value, theirs: &Value) -> Result<String, Error> {
    let ours = ours
        .downcast_object_ref::<OurCell>()
        .ok_or_else(|| invalid("delta(ours, theirs): `ours` must come from cell(...)"))?;
    let theirs = theirs
        .downcast_object_ref::<RefCell>()
        .ok_or_else(|| invalid("delta(ours, theirs): `theirs` must come from reference(...)"))?;
    Ok(cells::delta(ours, theirs))
}

/// `paired(a, b, metric="f1", by="seed")`: see [`super::paired`].
fn paired(state: &RenderState, a: Value, b: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let (a, b) = (rows_arg(&a)?, rows_arg(&b)?);
    let metric: String = kwargs
        .get::<Option<String>>("metric")?
        .unwrap_or_else(|| "f1".to_string());
    let metric_b: String = kwargs
        .get::<Option<String>>("metric_b")?
        .unwrap_or_else(|| metric.clone());
    let by: String = kwargs
        .get::<Option<String>>("by")?
        .unwrap_or_else(|| "seed".to_string());
    kwargs.assert_all_used()?;
    let (a, b): (Vec<&ResultRow>, Vec<&ResultRow>) = (a.0.iter().collect(), b.0.iter().collect());
    let difference = PairedDifference::of_metrics(&a, &b, &by, [&metric, &metric_b])
        .map_err(|e| invalid(e.to_string()))?;
    Ok(Value::from_object(PairedCell {
        difference,
        notes: state.notes.clone(),
    }))
}

/// `signed`: a number of percentage points with its sign, one decimal ("+1.5", "−0.3").
fn signed(value: &Value) -> Result<String, Error> {
    f64::try_from(value.clone())
        .map(cells::signed_points)
        .map_err(|_| invalid(format!("signed: expected a number, got {}", value.kind())))
}

fn pct(state: &RenderState, value: &Value, decimals: Option<usize>) -> Result<String, Error> {
    if let Some(cell) = value.downcast_object_ref::<OurCell>() {
        return Ok(cell.text());
    }
    if value.is_undefined() || value.is_none() {
        return Ok(cells::missing(
            &state.notes,
            NoteKind::Other,
            "Not available: the result has no such value.",
        ));
    }
    let n = f64::try_from(value.clone())
        .map_err(|_| invalid(format!("pct: expected a number, got {}", value.kind())))?;
    Ok(cells::percent(n, decimals.unwrap_or(1)))
}

/// `{{ x | fixed(3) }}`: a number with that many decimals (`| signed` for a signed
/// difference).
fn fixed(value: Value, decimals: usize) -> Result<String, Error> {
    let n = f64::try_from(value.clone())
        .map_err(|_| invalid(format!("fixed: expected a number, got {}", value.kind())))?;
    Ok(cells::no_negative_zero(format!("{n:.decimals$}")))
}

fn thousands(value: &Value) -> Result<String, Error> {
    let n = i64::try_from(value.clone())
        .map_err(|_| invalid(format!("thousands: expected an integer, got {value}")))?;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    Ok(if n < 0 { format!("-{out}") } else { out })
}

fn coord_values(rows: Value, name: String) -> Result<Value, Error> {
    let set = rows_arg(&rows)?;
    let mut seen: Vec<serde_json::Value> = Vec::new();
    for r in &set.0 {
        let v = r.field(&name);
        if !v.is_null() && !seen.iter().any(|s| same_value(s, &v)) {
            seen.push(v);
        }
    }
    Ok(Value::from_serialize(&seen))
}

fn history_plot(state: &RenderState, rows: Value, kwargs: Kwargs) -> Result<String, Error> {
    let set = rows_arg(&rows)?;
    let file: String = kwargs.get("file")?;
    let metric: String = kwargs
        .get::<Option<String>>("metric")?
        .unwrap_or_else(|| "train_loss".to_string());
    let percent: bool = kwargs.get::<Option<bool>>("percent")?.unwrap_or(false);
    let title: Option<String> = kwargs.get("title")?;
    let over: Vec<String> = match kwargs.get::<Option<Value>>("over")? {
        None => Vec::new(),
        Some(_) => over_arg(&kwargs)?,
    };
    let filters = coord_filters(&kwargs, &["file", "metric", "percent", "title", "over"])?;
    kwargs.assert_all_used()?;
    let mut described = set.1.clone();
    described.extend(filters.iter().cloned());

    let matched: Vec<&ResultRow> = set
        .0
        .iter()
        .filter(|r| r.matches(&filters) && r.history.is_some())
        .collect();
    // One series per combination of the coordinates that vary (except `over`, which is
    // averaged per epoch).
    let naming: Vec<String> = varying(&matched)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !over.contains(n))
        .collect();
    let mut groups: Vec<(String, Vec<&ResultRow>)> = Vec::new();
    for r in &matched {
        let name = if naming.is_empty() {
            if over.is_empty() {
                r.stage.clone()
            } else {
                describe(&described)
            }
        } else {
            naming
                .iter()
                .map(|n| format!("{n}={}", coord_text(&r.field(n))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match groups.iter_mut().find(|(g, _)| *g == name) {
            Some((_, members)) => members.push(r),
            None => groups.push((name, vec![r])),
        }
    }
    let scale = if percent { 100.0 } else { 1.0 };
    let series: Vec<Series> = groups
        .into_iter()
        .map(|(name, members)| {
            let mut by_epoch: Vec<(f64, Vec<f64>)> = Vec::new();
            for r in members {
                for (x, y) in epochs(r, &metric) {
                    match by_epoch.iter_mut().find(|(e, _)| *e == x) {
                        Some((_, ys)) => ys.push(y),
                        None => by_epoch.push((x, vec![y])),
                    }
                }
            }
            by_epoch.sort_by(|a, b| a.0.total_cmp(&b.0));
            let name = if over.is_empty() {
                name
            } else {
                format!("{name} (mean over {})", over.join(", "))
            };
            Series {
                name,
                points: by_epoch
                    .into_iter()
                    .map(|(x, ys)| (x, scale * ys.iter().sum::<f64>() / ys.len() as f64))
                    .collect(),
            }
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    let title = title.unwrap_or_else(|| format!("{metric}: {}", describe(&described)));
    if series.is_empty() {
        let (kind, why) = if matched.is_empty() {
            (
                NoteKind::MissingResult,
                format!(
                    "No training history for `{}`: its stages have not run \
                     (or are not in this cache).",
                    describe(&described)
                ),
            )
        } else {
            (
                NoteKind::Other,
                format!(
                    "The training histories of `{}` record no `{metric}` (e.g. no dev set).",
                    describe(&described)
                ),
            )
        };
        return Ok(cells::missing(&state.notes, kind, &why));
    }
    let plot = LinePlot {
        title: title.clone(),
        x_label: "epoch".to_string(),
        y_label: if percent {
            format!("{metric} (%)")
        } else {
            metric.clone()
        },
        series,
    };
    state.write_plot(&file, |path| plot::line_plot(path, &plot))?;
    Ok(format!("![{title}]({file})"))
}

/// A markdown table of a `split → label → count` map (e.g. a corpus `stats.json`):
/// one row per label, one column per split, with totals. Keys starting with `_` (notes
/// such as `_sentences`, `_warnings`) are not splits and are left out.
fn counts_table(stats: Value) -> Result<String, Error> {
    let all: BTreeMap<String, serde_json::Value> = from_template("counts_table", &stats)?;
    let mut map: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (group, counts) in all.into_iter().filter(|(k, _)| !k.starts_with('_')) {
        let counts = serde_json::from_value(counts)
            .map_err(|e| invalid(format!("counts_table: split `{group}`: {e}")))?;
        map.insert(group, counts);
    }
    // train, dev, test first (as papers print them), then other groups in natural order
    // (fold-2 before fold-10).
    let rank = |split: &str| match split {
        "train" => 0,
        "dev" | "devel" | "validation" => 1,
        "test" => 2,
        _ => 3,
    };
    let natural = |s: &str| {
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        let text: String = s.chars().filter(|c| !c.is_ascii_digit()).collect();
        (text, digits.parse::<u64>().unwrap_or(0), s.to_string())
    };
    let mut splits: Vec<&String> = map.keys().collect();
    splits.sort_by_key(|s| (rank(s), natural(s)));
    let mut labels: Vec<&String> = map.values().flat_map(|m| m.keys()).collect();
    labels.sort();
    labels.dedup();
    let mut s = format!(
        "| label | {} | total |\n|---|{}---|\n",
        splits
            .iter()
            .map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(splits.len())
    );
    let fmt = |n: u64| thousands(&Value::from(n)).unwrap_or_else(|_| n.to_string());
    for label in &labels {
        let counts: Vec<u64> = splits
            .iter()
            .map(|sp| map[*sp].get(*label).copied().unwrap_or(0))
            .collect();
        let cells: Vec<String> = counts.iter().map(|&n| fmt(n)).collect();
        s.push_str(&format!(
            "| {label} | {} | {} |\n",
            cells.join(" | "),
            fmt(counts.iter().sum())
        ));
    }
    let totals: Vec<u64> = splits.iter().map(|sp| map[*sp].values().sum()).collect();
    s.push_str(&format!(
        "| **total** | {} | **{}** |\n",
        totals
            .iter()
            .map(|&n| fmt(n))
            .collect::<Vec<_>>()
            .join(" | "),
        fmt(totals.iter().sum())
    ));
    Ok(s)
}

/// `(epoch, value)` of `metric` in a row's history.json.
fn epochs(row: &ResultRow, metric: &str) -> Vec<(f64, f64)> {
    let Some(list) = row
        .history
        .as_ref()
        .and_then(|h| h.get("epochs"))
        .and_then(|e| e.as_array())
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| Some((e.get("epoch")?.as_f64()?, e.get(metric)?.as_f64()?)))
        .collect()
}

/// A series as templates write it: `{name, x: [...], y: [...]}` or `{name, points: [[x, y]]}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesArg {
    #[serde(default)]
    name: String,
    #[serde(default)]
    x: Vec<f64>,
    #[serde(default)]
    y: Vec<f64>,
    #[serde(default)]
    points: Vec<(f64, f64)>,
}

fn from_template<T: serde::de::DeserializeOwned>(what: &str, value: &Value) -> Result<T, Error> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| invalid(format!("{what}: {e}")))
}

fn line_plot_fn(
    state: &RenderState,
    file: String,
    series: Value,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let title: String = kwargs.get::<Option<String>>("title")?.unwrap_or_default();
    let x_label: String = kwargs.get::<Option<String>>("x_label")?.unwrap_or_default();
    let y_label: String = kwargs.get::<Option<String>>("y_label")?.unwrap_or_default();
    kwargs.assert_all_used()?;
    let args: Vec<SeriesArg> = from_template("line_plot series", &series)?;
    let mut plot_series = Vec::new();
    for s in args {
        if s.x.len() != s.y.len() {
            return Err(invalid(format!(
                "line_plot series `{}`: {} x values but {} y values",
                s.name,
                s.x.len(),
                s.y.len()
            )));
        }
        let mut points = s.points;
        points.extend(s.x.into_iter().zip(s.y));
        plot_series.push(Series {
            name: s.name,
            points,
        });
    }
    let plot = LinePlot {
        title: title.clone(),
        x_label,
        y_label,
        series: plot_series,
    };
    state.write_plot(&file, |path| plot::line_plot(path, &plot))?;
    Ok(format!("![{title}]({file})"))
}

fn bar_chart_fn(
    state: &RenderState,
    file: String,
    bars: Value,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let title: String = kwargs.get::<Option<String>>("title")?.unwrap_or_default();
    let y_label: String = kwargs.get::<Option<String>>("y_label")?.unwrap_or_default();
    kwargs.assert_all_used()?;
    let bars: Vec<Bar> = from_template("bar_chart bars", &bars)?;
    let chart = BarChart {
        title: title.clone(),
        y_label,
        bars,
    };
    state.write_plot(&file, |path| plot::bar_chart(path, &chart))?;
    Ok(format!("![{title}]({file})"))
}

fn transfer_graph_fn(
    state: &RenderState,
    file: String,
    nodes: Value,
    edges: Value,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let title: String = kwargs.get::<Option<String>>("title")?.unwrap_or_default();
    kwargs.assert_all_used()?;
    let graph = TransferGraph {
        title: title.clone(),
        nodes: from_template("transfer_graph nodes", &nodes)?,
        edges: from_template("transfer_graph edges", &edges)?,
    };
    state.write_plot(&file, |path| transfer_graph(path, &graph))?;
    Ok(format!("![{title}]({file})"))
}

/// The environment with every report function and filter.
fn environment(state: &Arc<RenderState>) -> Environment<'static> {
    let mut env = Environment::new();
    // Keeps the template source in errors (release builds turn it off by default), so an
    // error can quote the offending line.
    env.set_debug(true);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);

    env.add_function("select", |rows: Value, kwargs: Kwargs| {
        let set = rows_arg(&rows)?;
        let filters = coord_filters(&kwargs, &[])?;
        kwargs.assert_all_used()?;
        let picked: Vec<ResultRow> = set
            .0
            .iter()
            .filter(|r| r.matches(&filters))
            .cloned()
            .collect();
        let mut selected_by = set.1.clone();
        selected_by.extend(filters);
        Ok::<_, Error>(Value::from_object(RowSet(picked, selected_by)))
    });
    env.add_function("coord_values", coord_values);
    env.add_function("values", metric_values);
    let s = state.clone();
    env.add_function("cell", move |rows: Value, kwargs: Kwargs| {
        cell(&s, rows, kwargs)
    });
    let s = state.clone();
    env.add_function("reference", move |args: minijinja::value::Rest<Value>| {
        reference(&s, &args)
    });
    env.add_function("delta", |ours: Value, theirs: Value| delta(&ours, &theirs));
    let s = state.clone();
    env.add_function("paired", move |a: Value, b: Value, kwargs: Kwargs| {
        paired(&s, a, b, kwargs)
    });
    env.add_filter("signed", |v: Value| signed(&v));
    let s = state.clone();
    env.add_filter("pct", move |v: Value, decimals: Option<usize>| {
        pct(&s, &v, decimals)
    });
    env.add_filter("thousands", |v: Value| thousands(&v));
    env.add_filter("fixed", fixed);
    env.add_function("counts_table", counts_table);
    let s = state.clone();
    env.add_function("history_plot", move |rows: Value, kwargs: Kwargs| {
        history_plot(&s, rows, kwargs)
    });
    let s = state.clone();
    env.add_function(
        "line_plot",
        move |file: String, series: Value, kwargs: Kwargs| line_plot_fn(&s, file, series, kwargs),
    );
    let s = state.clone();
    env.add_function(
        "bar_chart",
        move |file: String, bars: Value, kwargs: Kwargs| bar_chart_fn(&s, file, bars, kwargs),
    );
    let s = state.clone();
    env.add_function(
        "transfer_graph",
        move |file: String, nodes: Value, edges: Value, kwargs: Kwargs| {
            transfer_graph_fn(&s, file, nodes, edges, kwargs)
        },
    );
    let s = state.clone();
    env.add_function("footnotes", move || s.notes.take_definitions());
    let s = state.clone();
    env.add_function("embed", move |rows: Value, file: String, kwargs: Kwargs| {
        embed(&s, rows, file, kwargs)
    });
    env
}

/// A minijinja error as a [`ReportError::Template`] naming the template file and line. An
/// error inside an included template names the included file (where the mistake is) and
/// says where it was included from.
fn template_error(e: &Error, source: &TemplateSource) -> ReportError {
    // The chain of template errors, outermost first (an include wraps the inner error).
    let mut chain: Vec<&Error> = vec![e];
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        match c.downcast_ref::<Error>() {
            Some(inner) => chain.push(inner),
            None => break,
        }
        cause = c.source();
    }
    let innermost = chain
        .iter()
        .rev()
        .find(|err| err.line().is_some())
        .copied()
        .unwrap_or(e);
    let mut message = innermost.kind().to_string();
    if let Some(detail) = innermost.detail() {
        message = format!("{message}: {detail}");
    }
    // Non-template causes (e.g. an I/O error) after the template errors.
    let mut cause = std::error::Error::source(innermost);
    while let Some(c) = cause {
        if c.downcast_ref::<Error>().is_none() {
            message = format!("{message}: {c}");
        }
        cause = c.source();
    }
    for outer in chain
        .iter()
        .take_while(|err| !std::ptr::eq(**err, innermost))
    {
        if let (Some(name), Some(line)) = (outer.name(), outer.line()) {
            message = format!(
                "{message} (included from {}:{line})",
                source.display_name(Some(name))
            );
        }
    }
    let line = innermost.line();
    let snippet = match (line, innermost.template_source()) {
        (Some(n), Some(text)) => text.lines().nth(n.saturating_sub(1)).map(str::to_string),
        _ => None,
    };
    ReportError::Template {
        file: source.display_name(innermost.name()),
        line,
        message,
        snippet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(task: &str, head: &str, seed: i64, f1: f64) -> ResultRow {
        ResultRow {
            input: "results".into(),
            stage: format!("evaluate[head={head},seed={seed},task={task}]"),
            key: format!("key-{task}-{head}-{seed}"),
            coords: [
                ("task".to_string(), json!(task)),
                ("head".to_string(), json!(head)),
                ("seed".to_string(), json!(seed)),
            ]
            .into(),
            metrics: json!({"f1": f1, "precision": f1, "recall": f1}),
            history: None,
            stats: None,
            dir: None,
        }
    }

    fn render_inline(text: &str, rows: &[ResultRow]) -> Result<RenderedReport, ReportError> {
        let dir = tempfile::tempdir().map_err(|e| ReportError::io("tmp", e))?;
        render(
            &TemplateSource::inline("t.md.j2", text),
            rows,
            &References::empty(),
            &Provenance::default(),
            dir.path(),
        )
    }

    #[test]
    fn cell_averages_over_seeds_only() {
        let rows = [
            row("ddi", "cls", 1, 0.80),
            row("ddi", "cls", 2, 0.82),
            row("ddi", "sll_att", 1, 0.90),
        ];
        let out = render_inline(
            "{{ cell(rows, task='ddi', head='cls') }}|{{ cell(rows, task='ddi', head='cls').n }}",
            &rows,
        )
        .unwrap();
        assert!(
            out.markdown.starts_with("81.0 ± 1.4|2\n"),
            "{}",
            out.markdown
        );
        let err = render_inline("{{ cell(rows, task='ddi') }}", &rows).unwrap_err();
        assert!(err.to_string().contains("differ in `head`"), "{err}");
        let both = render_inline(
            "{{ cell(rows, task='ddi', over=['seed', 'head']).n }}",
            &rows,
        )
        .unwrap();
        assert!(both.markdown.starts_with('3'));
    }

    #[test]
    fn missing_and_incomplete_cells_get_footnotes() {
        let rows = [row("ddi", "cls", 1, 0.80)];
        let out = render_inline(
            "a {{ cell(rows, task='ppi', head='cls') }} b {{ cell(rows, task='ddi', head='cls', expect=3) }}",
            &rows,
        )
        .unwrap();
        assert!(
            out.markdown.starts_with("a —[^1] b 80.0[^2]\n"),
            "{}",
            out.markdown
        );
        assert!(out
            .markdown
            .contains("[^1]: No result for `head=cls, task=ppi`: its stage"));
        assert!(out
            .markdown
            .contains("[^2]: Mean over 1 of 3 expected results"));
        assert_eq!(out.missing_results().len(), 1);
    }

    #[test]
    fn zero_from_no_positive_predictions_is_explained() {
        let mut none = row("ppi", "cls", 1, 0.0);
        none.metrics =
            json!({"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 5});
        let rows = [none, row("ppi", "cls", 2, 0.5)];
        let out = render_inline(
            "{{ cell(rows, head='cls', metric='precision') }} {{ cell(rows, head='cls', metric='recall') }}",
            &rows,
        )
        .unwrap();
        assert!(
            out.markdown.starts_with("25.0 ± 35.4[^1] 25.0 ± 35.4\n"),
            "{}",
            out.markdown
        );
        assert!(out
            .markdown
            .contains("[^1]: Nothing was predicted positive in 1 of 2 results for `head=cls`"));
    }

    #[test]
    fn filters_and_helpers() {
        let rows = [row("ddi", "cls", 1, 0.8), row("ppi", "cls", 1, 0.7)];
        let out = render_inline(
            "{{ 0.81234 | pct }} {{ 5834 | thousands }} {{ coord_values(rows, 'task') | join(',') }} {{ select(rows, task='ppi') | length }} {{ -3.06 | signed }} {{ 1.5 | signed }} {{ -0.01 | signed }} {{ 2 | fixed(2) }}",
            &rows,
        )
        .unwrap();
        assert!(
            out.markdown
                .starts_with("81.2 5,834 ddi,ppi 1 −3.1 +1.5 0.0 2.00\n"),
            "{}",
            out.markdown
        );
    }

    #[test]
    fn undefined_names_are_errors_with_a_line() {
        let err = render_inline("ok\n{{ nope }}\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("t.md.j2:2:"), "{text}");
    }

    #[test]
    fn plot_names_are_checked() {
        let err = render_inline(
            "{{ line_plot('../x.svg', [{'name': 'a', 'x': [1], 'y': [2]}]) }}",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("plain file name"), "{err}");
    }
}
