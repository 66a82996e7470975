//! `pipe run`: plan, run what is not cached (locally or on Slurm), publish, summarize.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::args::{ExecutorArg, RunOpts};
use super::context::CommandContext;
use super::exit::Exit;
use crate::cache::Cache;
use crate::exec::{self, Plan, RunOptions, Status};
use crate::model::device::parse_device;
use crate::pipeline::Pipeline;
use crate::stages::StageRegistry;

/// Runs the pipeline; exit 1 when a stage failed.
pub(super) fn run_command(
    cache_root: &Path,
    opts: RunOpts,
    registry: &StageRegistry,
) -> Result<ExitCode> {
    let RunOpts {
        target,
        jobs,
        only,
        force,
        device,
        quiet,
        executor,
        max_jobs,
        worker_bin,
    } = opts;
    let ctx = CommandContext::running(cache_root, &target, registry)?;
    let plan = ctx.plan(only, force, &device)?;
    crate::timings::mark("plan");
    // A device this build or machine lacks fails every stage that trains: refuse it before
    // any starts (exit 2). On Slurm the device is the nodes' and `--worker-bin`'s.
    let runs_something = plan.items.iter().any(|item| item.status == Status::Run);
    if matches!(executor, ExecutorArg::Local) && runs_something {
        parse_device(&device)?;
    }
    let executor = match executor {
        ExecutorArg::Local => exec::Executor::Local,
        ExecutorArg::Slurm => exec::Executor::Slurm(exec::slurm::SlurmOptions {
            max_jobs,
            worker_bin,
            ..Default::default()
        }),
    };
    let opts = RunOptions {
        jobs: jobs.unwrap_or_else(num_cpus::get),
        device,
        quiet,
        executor,
    };
    let summary = exec::run_plan(
        &ctx.loaded.pipeline,
        &ctx.loaded.graph,
        &plan,
        &ctx.cache,
        registry,
        &opts,
    )?;
    publish(&ctx.loaded.pipeline, &plan, &ctx.cache, &summary)?;
    crate::timings::mark("publish");
    println!("{}", summary.line());
    for (outcome, inst) in summary.outcomes.iter().zip(&ctx.loaded.pipeline.instances) {
        if let Some(exec::StageOutcome::Failed { error }) = outcome {
            println!("failed: {}: {error}", inst.name);
        }
    }
    ctx.finish(plan);
    crate::timings::mark("cache closed");
    Ok(if summary.failed() > 0 {
        Exit::StageFailed.code()
    } else {
        Exit::Success.code()
    })
}

/// Copies the outputs of stages with `publish:` into the workspace (after they ran or
/// were found cached), replacing what an earlier run published there.
fn publish(p: &Pipeline, plan: &Plan, cache: &Cache, summary: &exec::RunSummary) -> Result<()> {
    for (i, inst) in p.instances.iter().enumerate() {
        let Some(dest) = inst.publish() else { continue };
        let done = matches!(
            summary.outcomes[i],
            Some(exec::StageOutcome::Ran { .. } | exec::StageOutcome::Cached)
        );
        if !done {
            continue;
        }
        let view = cache.materialize(&plan.item(i).key)?;
        copy_dir(&view, dest)
            .with_context(|| format!("publishing `{}` to {}", inst.name, dest.display()))?;
        println!("published {} → {}", inst.name, dest.display());
    }
    Ok(())
}

fn copy_dir(src: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dest.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to)?;
        } else {
            if to.exists() {
                std::fs::remove_file(&to)?;
            }
            std::fs::copy(e.path(), &to)?;
            // Blobs are read-only; the published copy belongs to the user.
            let mut perms = std::fs::metadata(&to)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&to, perms)?;
        }
    }
    Ok(())
}
