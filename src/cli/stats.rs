//! `pipe stats`: runs a corpus or split stage if needed and prints its counts (a cached
//! one reads while another process holds the cache).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::args::PipelineArgs;
use super::context::{one_instance, run_quietly, CommandContext};
use super::exit::Exit;
use crate::exec::{StageOutcome, Status};
use crate::stages::StageRegistry;

/// Runs (if needed) the stage `stage` and prints the statistics its output carries.
pub(super) fn stats_command(
    root: &Path,
    target: &PipelineArgs,
    stage: &str,
    json: bool,
    registry: &StageRegistry,
) -> Result<ExitCode> {
    // a cached result reads while another process runs the cache; only a missing one waits
    let ctx = CommandContext::running_or_reading(root, target, registry)?;
    let i = one_instance(&ctx.loaded, &target.pipeline, stage)?;
    let only = vec![ctx.loaded.pipeline.instances[i].name.clone()];
    let plan = ctx.plan(only, Vec::new(), "cpu")?;
    if plan.item(i).status == Status::Run {
        ctx.cache
            .require_lock()
            .with_context(|| format!("`{stage}` is not cached, so `pipe stats` must run it"))?;
        let summary = run_quietly(&ctx.loaded, &plan, &ctx.cache, registry)?;
        if summary.failed() > 0 {
            // the stage's own error (or an upstream one's): what the user must fix
            let instances = &ctx.loaded.pipeline.instances;
            let errors: Vec<String> = summary
                .outcomes
                .iter()
                .zip(instances)
                .filter_map(|(outcome, inst)| match outcome {
                    Some(StageOutcome::Failed { error }) => {
                        Some(format!("`{}`: {error}", inst.name))
                    }
                    _ => None,
                })
                .collect();
            eprintln!("error: stage `{stage}` failed: {}", errors.join("; "));
            return Ok(Exit::StageFailed.code());
        }
    }
    let dir = ctx.cache.materialize(&plan.item(i).key)?;
    let stats = crate::data::stats_of(&dir)
        .with_context(|| format!("stage `{stage}` has no corpus statistics"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats.counts_json())?);
    } else {
        print!("{stats}");
    }
    Ok(ExitCode::SUCCESS)
}
