//! `pipe show`: where a cached stage's outputs are and what they hold, or one file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::args::PipelineArgs;
use super::cache_command::human_bytes;
use super::context::{load, one_instance, plan_for, CommandContext};
use crate::cache::Cache;
use crate::exec::{self, Status};
use crate::stages::StageRegistry;

/// The pipeline's `profiles` other than the target's (`None`: no profile) under which the
/// instance `name` is cached: a result that `show` cannot find under this profile is usually one that ran
/// under another, so the error can name it.
fn profiles_caching(
    target: &PipelineArgs,
    profiles: &[String],
    name: &str,
    cache: &Cache,
    device: &str,
    registry: &StageRegistry,
) -> Vec<Option<String>> {
    let others = profiles
        .iter()
        .cloned()
        .map(Some)
        .chain(std::iter::once(None))
        .filter(|p| *p != target.profile);
    others
        .filter(|profile| {
            let Ok(loaded) = load(&target.pipeline, profile.as_deref(), registry) else {
                return false;
            };
            let Some(i) = loaded
                .pipeline
                .instances
                .iter()
                .position(|inst| inst.name == name)
            else {
                return false;
            };
            plan_for(&loaded, cache, vec![name.to_string()], Vec::new(), device)
                .is_ok_and(|plan| plan.item(i).status == Status::Cached)
        })
        .collect()
}

/// Prints where a cached stage's outputs are and what they hold, or one of its files.
pub(super) fn show_command(
    root: &Path,
    target: &PipelineArgs,
    stage: &str,
    file: Option<&Path>,
    device: &str,
    registry: &StageRegistry,
) -> Result<ExitCode> {
    let ctx = CommandContext::reading(root, target, registry)?;
    let (loaded, cache) = (&ctx.loaded, &ctx.cache);
    let i = one_instance(loaded, &target.pipeline, stage)?;
    let name = &loaded.pipeline.instances[i].name;
    let plan = ctx.plan_everything(device)?;
    let item = plan.item(i);
    if item.status != Status::Cached {
        let elsewhere = profiles_caching(
            target,
            &loaded.pipeline.profiles,
            name,
            cache,
            device,
            registry,
        );
        let hint = match elsewhere.as_slice() {
            [] => String::new(),
            profiles => format!(
                "\nhint: it is cached under {}",
                profiles
                    .iter()
                    .map(|p| match p {
                        Some(p) => format!("`--profile {p}`"),
                        None => "no profile".to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let logs = exec::slurm::job_logs(root, &item.key)
            .map(|(dir, ids)| format!("\nits Slurm job logs: {} (jobs {ids})", dir.display()))
            .unwrap_or_default();
        bail!(
            "`{name}` is not cached (key {}); `pipe run` would run it: {}{hint}{logs}",
            item.key.short(),
            exec::reasons_text(&item.reasons)
        );
    }
    let dir = cache.materialize(&item.key)?;
    match file {
        Some(file) => {
            let path = dir.join(file);
            let bytes = std::fs::read(&path).with_context(|| {
                let files: Vec<String> = cache
                    .manifest(&item.key)
                    .map(|m| m.files.iter().map(|f| f.path.clone()).collect())
                    .unwrap_or_default();
                format!(
                    "`{name}` has no file {} (its files: {})",
                    file.display(),
                    files.join(", ")
                )
            })?;
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
        None => {
            println!("{name}  {}  {}", item.key.short(), dir.display());
            for f in &cache.manifest(&item.key)?.files {
                println!("  {:<40} {:>10}", f.path, human_bytes(f.size));
            }
            if let Some((dir, ids)) = exec::slurm::job_logs(root, &item.key) {
                println!("Slurm job logs: {} (jobs {ids})", dir.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
