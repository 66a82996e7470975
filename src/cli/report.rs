//! `pipe report` (render report stages from whatever is cached, running nothing) and
//! `pipe diff` (compare the metrics of two profiles).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::args::PipelineArgs;
use super::context::{load, plan_everything, Loaded};
use crate::cache::Cache;
use crate::exec::{Plan, Status};
use crate::report::diff::{diff_paired, render_paired_markdown, select_metrics, DiffSelection};
use crate::report::provenance::precision_summary;
use crate::report::{diff_metrics, render_diff_markdown, Provenance, ResultRow};
use crate::stages::report::render_report;
use crate::stages::{InputArtifact, Inputs, Progress, StageCtx, StageRegistry};

/// Inputs of instance `i` restricted to upstream results present in the cache, and the
/// names of those that are not.
fn cached_inputs(
    loaded: &Loaded,
    plan: &Plan,
    cache: &Cache,
    i: usize,
) -> Result<(Inputs, Vec<usize>)> {
    let p = &loaded.pipeline;
    let mut by_name: BTreeMap<String, Vec<InputArtifact>> = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, refs) in &p.instances[i].inputs {
        let mut arts = Vec::new();
        for r in refs {
            let up = &p.instances[r.instance];
            let item = plan.item(r.instance);
            if item.status != Status::Cached {
                missing.push(r.instance);
                continue;
            }
            let view = cache.materialize(&item.key)?;
            let path = match &r.sub {
                Some(sub) => view.join(sub),
                None => view,
            };
            arts.push(InputArtifact {
                stage: up.name.clone(),
                key: Some(item.key),
                coords: up.coords.clone(),
                path,
            });
        }
        by_name.insert(name.to_string(), arts);
    }
    Ok((Inputs { by_name }, missing))
}

pub(super) fn report_command(
    cache_root: &Path,
    target: &PipelineArgs,
    output: Option<&Path>,
    device: &str,
    registry: &StageRegistry,
) -> Result<ExitCode> {
    let super::context::CommandContext { loaded, cache } =
        super::context::CommandContext::reading(cache_root, target, registry)?;
    let plan = plan_everything(&loaded, &cache, device)?;
    let reports: Vec<usize> = (0..loaded.pipeline.instances.len())
        .filter(|&i| &*loaded.pipeline.instances[i].kind == "report")
        .collect();
    if reports.is_empty() {
        bail!(
            "{} has no stage of kind `report`",
            target.pipeline.display()
        );
    }
    for i in reports {
        let inst = &loaded.pipeline.instances[i];
        let (inputs, missing) = cached_inputs(&loaded, &plan, &cache, i)?;
        let dest: PathBuf = match (output, inst.publish()) {
            (Some(o), _) => o.to_path_buf(),
            (None, Some(p)) => p.to_path_buf(),
            (None, None) => PathBuf::from("reports").join(&inst.name),
        };
        std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
        let scratch = cache.tmp_dir(&plan.item(i).key)?;
        let ctx = StageCtx {
            name: inst.name.clone(),
            key: plan.item(i).key.hex(),
            coords: inst.coords.to_map(),
            inputs,
            out_dir: dest.clone(),
            scratch: scratch.clone(),
            checkpoint_dir: scratch.join("checkpoint"),
            progress: Progress::hidden(),
            device: device.into(),
            cancel: Arc::new(AtomicBool::new(false)),
            run: crate::stages::RunInfo {
                pipeline: target.pipeline.display().to_string(),
                profile: target.profile.clone(),
                precision: precision_summary(&loaded.pipeline.instances),
            },
        };
        let params: crate::stages::report::ReportParams =
            serde_json::from_value(inst.params.value().clone())
                .with_context(|| format!("params of `{}`", inst.name))?;
        let provenance = Provenance::for_run(&ctx.run, device);
        let result = render_report(&ctx, &params, &provenance);
        let _ = std::fs::remove_dir_all(&scratch);
        result.with_context(|| format!("rendering `{}`", inst.name))?;
        println!("rendered {} → {}", inst.name, dest.display());
        if !missing.is_empty() {
            print!("{}", missing_summary(&loaded, target, missing));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The results a report lacks, one line per stage (a grid's gaps are whole stages or
/// seeds, and 60 cell names on one line say less than their stages), with the command that
/// computes them.
fn missing_summary(loaded: &Loaded, target: &PipelineArgs, mut missing: Vec<usize>) -> String {
    use std::fmt::Write as _;
    missing.sort_unstable();
    missing.dedup();
    let instances = &loaded.pipeline.instances;
    // stage -> its missing cells, stages in pipeline order
    let mut stages: Vec<(&str, Vec<&str>)> = Vec::new();
    for &i in &missing {
        let (base, name) = (&*instances[i].base, instances[i].name.as_str());
        match stages.iter_mut().find(|(b, _)| *b == base) {
            Some((_, names)) => names.push(name),
            None => stages.push((base, vec![name])),
        }
    }
    let profile = target
        .profile
        .as_deref()
        .map(|p| format!(" -p {p}"))
        .unwrap_or_default();
    let mut out = format!(
        "{} result(s) not in the cache yet (their cells show \"—\"); \
         `pipe run {}{profile} --only STAGE` computes a stage's:\n",
        missing.len(),
        target.pipeline.display()
    );
    let width = stages.iter().map(|(b, _)| b.len()).max().unwrap_or(0);
    for (base, names) in &stages {
        let cells = match names.as_slice() {
            [one] if one == base => String::new(),
            few if few.len() <= 3 => few.join(", "),
            many => format!("{} cells, e.g. {}", many.len(), many[0]),
        };
        let line = format!("  {base:<width$}  {cells}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// Result rows of every cached `evaluate` / `cv_aggregate` instance of a profile.
fn rows_of(loaded: &Loaded, plan: &Plan, cache: &Cache) -> Result<Vec<ResultRow>> {
    let mut rows = Vec::new();
    for it in &plan.items {
        let inst = &loaded.pipeline.instances[it.instance];
        if it.status != Status::Cached || !matches!(&*inst.kind, "evaluate" | "cv_aggregate") {
            continue;
        }
        let dir = cache.materialize(&it.key)?;
        let metrics: serde_json::Value = match std::fs::read(dir.join("metrics.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: metrics.json", inst.name))?,
            Err(_) => continue,
        };
        rows.push(ResultRow {
            input: inst.base.to_string(),
            stage: inst.name.clone(),
            key: it.key.hex(),
            coords: inst.coords.to_map(),
            metrics,
            history: None,
            stats: None,
            dir: None,
        });
    }
    Ok(rows)
}

/// What `pipe diff` compares and shows.
pub(super) struct DiffOptions {
    /// Profiles A and B.
    pub profiles: [String; 2],
    pub selection: DiffSelection,
    /// The coordinate whose runs are taken together (`seed`).
    pub over: Option<String>,
    /// The device whose results are read.
    pub device: String,
}

pub(super) fn diff_command(
    cache_root: &Path,
    pipeline: &Path,
    options: &DiffOptions,
    registry: &StageRegistry,
) -> Result<ExitCode> {
    let cache = super::context::open_for_reading(cache_root)?;
    let mut sides = Vec::new();
    for profile in &options.profiles {
        let loaded = load(pipeline, Some(profile), registry)?;
        let plan = plan_everything(&loaded, &cache, &options.device)?;
        sides.push(rows_of(&loaded, &plan, &cache)?);
    }
    let [a, b] = &options.profiles;
    let (mut rows_b, mut rows_a) = (
        sides.pop().unwrap_or_default(),
        sides.pop().unwrap_or_default(),
    );
    if let Err(why) = options.selection.apply(&mut rows_a, &mut rows_b) {
        bail!("pipe diff: {why}");
    }
    let table = match &options.over {
        Some(over) => {
            let changes = diff_paired(&rows_a, &rows_b, over, &options.selection)?;
            render_paired_markdown(&changes, over, a, b)
        }
        None => {
            let changes = select_metrics(diff_metrics(&rows_a, &rows_b), &options.selection);
            render_diff_markdown(&changes, a, b)
        }
    };
    print!("{table}");
    Ok(ExitCode::SUCCESS)
}
