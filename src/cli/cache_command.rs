//! `pipe cache ls | verify | gc | rebuild-index` (and `push | pull`: [`super::cache_remote`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::args::CacheAction;
use super::cache_remote::{pull_command, push_command, PullOptions, PushOptions};
use super::context::{load, open_for_reading, plan_for};
use super::exit::Exit;
use crate::cache::{Cache, CorruptionCause};
use crate::stages::StageRegistry;

pub(super) fn cache_command(
    root: &Path,
    action: CacheAction,
    registry: &StageRegistry,
) -> Result<ExitCode> {
    match action {
        CacheAction::Ls => {
            let cache = open_for_reading(root)?;
            let mut entries = cache.entries()?;
            entries.sort_by(|a, b| a.1.stage.cmp(&b.1.stage));
            let mut total = 0u64;
            // columns as wide as their longest entry (a grid's cell names run long)
            let stage_w = entries.iter().map(|(_, e)| e.stage.chars().count()).max();
            let kind_w = entries.iter().map(|(_, e)| e.kind.chars().count()).max();
            let (stage_w, kind_w) = (stage_w.unwrap_or(0).max(5), kind_w.unwrap_or(0).max(4));
            if !entries.is_empty() {
                println!(
                    "{:<12}  {:<stage_w$}  {:<kind_w$}  {:>10}  {:>8}",
                    "key", "stage", "kind", "size", "took"
                );
            }
            for (key, e) in &entries {
                total += e.bytes;
                println!(
                    "{}  {:<stage_w$}  {:<kind_w$}  {:>10}  {:>7.1}s",
                    key.short(),
                    e.stage,
                    e.kind,
                    human_bytes(e.bytes),
                    e.seconds
                );
            }
            println!("{} entries, {}", entries.len(), human_bytes(total));
        }
        CacheAction::Verify => {
            let problems = Cache::open(root)?.verify()?;
            if problems.is_empty() {
                println!("cache OK: every blob matches its hash");
            } else {
                let (mut files, mut derived) = (0, 0);
                for p in &problems {
                    let key = p.key.get(..12).unwrap_or(&p.key);
                    match &p.cause {
                        CorruptionCause::File { file, message } => {
                            files += 1;
                            println!(
                                "corrupt: {} ({key}) file {file}: {message}; entry dropped, \
                                 it will rerun",
                                p.stage
                            );
                        }
                        CorruptionCause::DerivedFrom { stage, key: from } => {
                            derived += 1;
                            println!(
                                "derived: {} ({key}) was computed from the damaged output of \
                                 `{stage}` ({}); entry dropped, it will rerun",
                                p.stage,
                                from.get(..12).unwrap_or(from)
                            );
                        }
                    }
                }
                println!("{files} corrupt file(s) found, {derived} result(s) derived from them");
                return Ok(Exit::StageFailed.code());
            }
        }
        CacheAction::RebuildIndex => return super::cache_rebuild::rebuild_index_command(root),
        CacheAction::Push {
            target,
            to,
            only,
            max_size,
            results,
        } => {
            let opts = PushOptions {
                target: &target,
                to: &to,
                only,
                max_size,
                device: &results.device,
            };
            return push_command(root, opts, registry);
        }
        CacheAction::Pull {
            target,
            from,
            only,
            results,
        } => {
            let opts = PullOptions {
                target: &target,
                from: &from,
                only,
                device: &results.device,
            };
            return pull_command(root, opts, registry);
        }
        CacheAction::Gc {
            pipelines,
            profile,
            device,
        } => {
            let cache = Cache::open(root)?;
            if pipelines.is_empty() {
                bail!("name the pipelines whose results to keep: pipe cache gc PIPELINE.yaml...");
            }
            let mut keep = BTreeSet::new();
            for path in &pipelines {
                let base = load(path, None, registry)?;
                let profiles: Vec<Option<String>> = if profile.is_empty() {
                    std::iter::once(None)
                        .chain(base.pipeline.profiles.iter().cloned().map(Some))
                        .collect()
                } else {
                    profile.iter().cloned().map(Some).collect()
                };
                for prof in profiles {
                    let loaded = load(path, prof.as_deref(), registry)
                        .with_context(|| format!("loading {}", path.display()))?;
                    let plan = plan_for(&loaded, &cache, Vec::new(), Vec::new(), &device)?;
                    keep.extend(plan.items.iter().map(|it| it.key));
                }
            }
            let report = cache.gc(&keep)?;
            let expansions = crate::pipeline::ExpandedStore::in_cache(cache.root()).clear();
            let (logs, log_bytes) = crate::exec::slurm::remove_job_logs(cache.root(), &keep);
            let logs = match logs {
                0 => String::new(),
                n => format!(" and the Slurm job logs of {n} stages"),
            };
            println!(
                "removed {} entries and {} blobs{logs}, freed {}",
                report.entries_removed,
                report.blobs_removed,
                human_bytes(report.bytes_freed + log_bytes + expansions)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `1.2 MiB`
pub(super) fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
