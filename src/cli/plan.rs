//! `pipe plan`: every stage, its key, `run` or `cached` and why (or `--json`, `--summary`).

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::args::{PipelineArgs, PlanOpts};
use super::context::{load_beside, open_for_reading, plan_for, Loaded};
use crate::exec::{self, Plan, Status};
use crate::pipeline::{load_pipeline_stored, ExpandedStore, Pipeline};
use crate::stages::StageRegistry;

/// Prints the plan. Every profile of the pipeline is loaded too, so a mistake in one is
/// found by any `plan`.
pub(super) fn plan_command(
    cache_root: &Path,
    opts: PlanOpts,
    registry: &StageRegistry,
) -> Result<ExitCode> {
    let PlanOpts {
        target,
        json,
        summary,
        only,
        force,
        device,
    } = opts;
    let (loaded, cache) = load_beside(&target, registry, cache_root, || {
        open_for_reading(cache_root)
    })?;
    check_other_profiles(&loaded, &target, registry, cache_root)?;
    let plan = plan_for(&loaded, &cache, only, force, &device)?;
    crate::timings::mark("plan");
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan.to_json(&loaded.pipeline))?
        );
    } else if summary {
        print!("{}", render_plan_summary(&loaded.pipeline, &plan));
    } else {
        print!("{}", render_plan(&loaded.pipeline, &plan));
    }
    // the process exits next: freeing a pipeline of 100,000 stages and its plan one
    // allocation at a time cost a tenth of `plan` (#27)
    drop(cache);
    std::mem::forget(loaded);
    std::mem::forget(plan);
    crate::timings::mark("printed, cache closed");
    Ok(ExitCode::SUCCESS)
}

/// Loads the pipeline under each profile not selected, so that a mistake in one is found
/// by any `plan`, not only when that profile is next used.
fn check_other_profiles(
    loaded: &Loaded,
    target: &PipelineArgs,
    registry: &StageRegistry,
    cache_root: &Path,
) -> Result<()> {
    // through the cache's store, as the selected profile (an unchanged one reads back)
    let store = ExpandedStore::in_cache(cache_root);
    for profile in &loaded.pipeline.profiles {
        if target.profile.as_deref() == Some(profile.as_str()) {
            continue;
        }
        load_pipeline_stored(&target.pipeline, Some(profile), registry, &store)
            .with_context(|| format!("profile `{profile}` (checked though not selected)"))?;
    }
    Ok(())
}

/// One YAML stage in `pipe plan --summary`: how many of its cells are cached, how many
/// would run.
struct StageCells<'a> {
    stage: &'a str,
    kind: &'a str,
    cached: usize,
    to_run: usize,
}

/// The plan one line per YAML stage: how many of its cells are cached and how many would
/// run (`pipe plan --summary`, for watching a grid fill up across sessions).
pub(super) fn render_plan_summary(p: &Pipeline, plan: &Plan) -> String {
    // in plan (topological) order of each stage's first cell
    let mut rows: Vec<StageCells> = Vec::new();
    // row of each stage name: a grid of 100,000 one-cell stages has 100,000 rows
    let mut row_of: HashMap<&str, usize> = HashMap::new();
    let mut not_needed = 0;
    for it in &plan.items {
        if it.status == Status::NotNeeded {
            not_needed += 1;
        }
        if matches!(it.status, Status::NotSelected | Status::NotNeeded) {
            continue;
        }
        let inst = &p.instances[it.instance];
        let at = *row_of.entry(&*inst.base).or_insert_with(|| {
            rows.push(StageCells {
                stage: &inst.base,
                kind: &inst.kind,
                cached: 0,
                to_run: 0,
            });
            rows.len() - 1
        });
        if it.status == Status::Cached {
            rows[at].cached += 1;
        } else {
            rows[at].to_run += 1;
        }
    }
    let width = rows
        .iter()
        .map(|r| r.stage.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<width$}  {:<18} {:>5} {:>7} {:>7}\n",
        "stage", "kind", "cells", "cached", "to run"
    );
    for r in &rows {
        let done = if r.to_run == 0 { "  ✓" } else { "" };
        out.push_str(&format!(
            "{:<width$}  {:<18} {:>5} {:>7} {:>7}{done}\n",
            r.stage,
            r.kind,
            r.cached + r.to_run,
            r.cached,
            r.to_run
        ));
    }
    let cached: usize = rows.iter().map(|r| r.cached).sum();
    let to_run: usize = rows.iter().map(|r| r.to_run).sum();
    out.push_str(&format!("{to_run} to run, {cached} cached"));
    if not_needed > 0 {
        out.push_str(&format!(", {not_needed} not needed"));
    }
    out.push('\n');
    out
}

/// The human form of `pipe plan`.
pub(super) fn render_plan(p: &Pipeline, plan: &Plan) -> String {
    let width = p
        .instances
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = String::new();
    let (mut run, mut cached, mut not_selected, mut not_needed) = (0, 0, 0, 0);
    for it in &plan.items {
        let inst = &p.instances[it.instance];
        let (status, reason) = match it.status {
            Status::Cached => {
                cached += 1;
                ("cached", String::new())
            }
            Status::Run => {
                run += 1;
                ("run", exec::reasons_text(&it.reasons))
            }
            Status::NotSelected => {
                not_selected += 1;
                continue;
            }
            Status::NotNeeded => {
                not_needed += 1;
                ("skip", "not needed: what reads it is cached".to_string())
            }
        };
        out.push_str(&format!(
            "{status:<7} {:<width$}  {:<12} {}  {reason}\n",
            inst.name,
            inst.kind,
            it.key.short(),
        ));
    }
    out.push_str(&format!("{run} to run, {cached} cached"));
    if not_needed > 0 {
        out.push_str(&format!(", {not_needed} not needed"));
    }
    if not_selected > 0 {
        out.push_str(&format!(" ({not_selected} not selected by --only)"));
    }
    out.push('\n');
    out
}
