//! One function per subcommand.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::args::{BenchWhat, CacheAction, Cli, Command, DagFormatArg, ExecutorArg, PipelineArgs};
use super::exit::Exit;
use crate::cache::{Cache, CorruptionCause};
use crate::exec::{self, Plan, PlanOptions, RunOptions, StageOutcome, Status};
use crate::graph::{self, DagFormat, StageGraph};
use crate::pipeline::{load_pipeline, Pipeline};
use crate::stages::StageRegistry;

/// A loaded pipeline with its graph.
pub(super) struct Loaded {
    pub pipeline: Pipeline,
    pub graph: StageGraph,
}

pub(super) fn load(path: &Path, profile: Option<&str>, registry: &StageRegistry) -> Result<Loaded> {
    let pipeline = load_pipeline(path, profile, registry)?;
    let graph = StageGraph::build(&pipeline)?;
    Ok(Loaded { pipeline, graph })
}

/// Loads the pipeline under each profile not selected, so that a mistake in one is found
/// by any `plan`, not only when that profile is next used.
fn check_other_profiles(
    loaded: &Loaded,
    target: &PipelineArgs,
    registry: &StageRegistry,
) -> Result<()> {
    for profile in &loaded.pipeline.profiles {
        if target.profile.as_deref() == Some(profile.as_str()) {
            continue;
        }
        load_pipeline(&target.pipeline, Some(profile), registry)
            .with_context(|| format!("profile `{profile}` (checked though not selected)"))?;
    }
    Ok(())
}

/// The plan of the stages `only` selects (all when empty), `force`d ones rerun, keyed for
/// the backend of `device` (what `run` and `plan` show and execute).
fn plan_for(
    loaded: &Loaded,
    cache: &Cache,
    only: Vec<String>,
    force: Vec<String>,
    device: &str,
) -> Result<Plan> {
    Ok(exec::plan(
        &loaded.pipeline,
        &loaded.graph,
        cache,
        &PlanOptions {
            only,
            force,
            backend: backend_for(device)?,
        },
    )?)
}

/// The plan of every stage for the backend of `device`, nothing forced or deselected
/// (what `report`, `show`, `diff`, `encode` and `bench` read the cache with).
pub(super) fn plan_everything(loaded: &Loaded, cache: &Cache, device: &str) -> Result<Plan> {
    plan_for(loaded, cache, Vec::new(), Vec::new(), device)
}

/// Runs `plan` on the CPU without progress output (for commands that need a result
/// before they can show it: `stats`, `encode`, `bench`).
pub(super) fn run_quietly(
    loaded: &Loaded,
    plan: &Plan,
    cache: &Cache,
    registry: &StageRegistry,
) -> Result<exec::RunSummary> {
    Ok(exec::run_plan(
        &loaded.pipeline,
        &loaded.graph,
        plan,
        cache,
        registry,
        &RunOptions {
            jobs: num_cpus::get(),
            device: "cpu".into(),
            quiet: true,
            executor: exec::Executor::Local,
        },
    )?)
}

/// `pipe exec-stage SPEC` (inside a Slurm job): 0 when the stage succeeded, 1 when it
/// failed (its error is in the result the controller reads), 3 when this node cannot see
/// the cache folder, 4 for any other error.
fn exec_stage_command(spec: &Path, registry: &StageRegistry) -> ExitCode {
    match exec::slurm::exec_stage(spec, registry) {
        Ok(true) => Exit::Success.code(),
        Ok(false) => Exit::StageFailed.code(),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_status() as u8)
        }
    }
}

/// Backend name that enters keys of backend-dependent stages.
pub(super) fn backend_for(device: &str) -> Result<String> {
    Ok(crate::model::device::DeviceSpec::parse(device)?
        .backend_name()
        .to_string())
}

pub(super) fn dispatch(cli: Cli) -> Result<ExitCode> {
    let registry = StageRegistry::builtin();
    match cli.command {
        Command::Run {
            target,
            jobs,
            only,
            force,
            device,
            quiet,
            executor,
            max_jobs,
            worker_bin,
        } => {
            let loaded = load(&target.pipeline, target.profile.as_deref(), &registry)?;
            let cache = Cache::open(&cli.cache)?;
            let plan = plan_for(&loaded, &cache, only, force, &device)?;
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
                &loaded.pipeline,
                &loaded.graph,
                &plan,
                &cache,
                &registry,
                &opts,
            )?;
            publish(&loaded.pipeline, &plan, &cache, &summary)?;
            println!("{}", summary.line());
            for (name, outcome) in &summary.outcomes {
                if let exec::StageOutcome::Failed { error } = outcome {
                    println!("failed: {name}: {error}");
                }
            }
            Ok(if summary.failed() > 0 {
                Exit::StageFailed.code()
            } else {
                Exit::Success.code()
            })
        }
        Command::ExecStage { spec } => Ok(exec_stage_command(&spec, &registry)),
        Command::Plan {
            target,
            json,
            summary,
            only,
            force,
            device,
        } => {
            let loaded = load(&target.pipeline, target.profile.as_deref(), &registry)?;
            check_other_profiles(&loaded, &target, &registry)?;
            let cache = open_for_reading(&cli.cache)?;
            let plan = plan_for(&loaded, &cache, only, force, &device)?;
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Dag { target, format } => {
            let loaded = load(&target.pipeline, target.profile.as_deref(), &registry)?;
            let format = match format {
                DagFormatArg::Mermaid => DagFormat::Mermaid,
                DagFormatArg::Dot => DagFormat::Dot,
            };
            print!("{}", graph::draw(&loaded.pipeline, &loaded.graph, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache { action } => cache_command(&cli.cache, action, &registry),
        Command::Kinds => {
            for k in registry.kinds() {
                let inputs = registry.get(k).map(|e| e.inputs().describe());
                println!("{k:<20} inputs: {}", inputs.unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats {
            target,
            stage,
            json,
        } => stats_command(&cli.cache, &target, &stage, json, &registry),
        Command::Show {
            target,
            stage,
            file,
            results,
        } => show_command(
            &cli.cache,
            &target,
            &stage,
            file.as_deref(),
            &results.device,
            &registry,
        ),
        Command::Report {
            target,
            output,
            results,
        } => super::report::report_command(
            &cli.cache,
            &target,
            output.as_deref(),
            &results.device,
            &registry,
        ),
        Command::Diff {
            pipeline,
            a,
            b,
            results,
        } => super::report::diff_command(&cli.cache, &pipeline, &a, &b, &results.device, &registry),
        Command::Encode {
            model,
            json,
            device,
            text,
        } => {
            if !json {
                bail!("only --json output is supported: pass --json");
            }
            super::encode::encode_command(&cli.cache, &model, &text, &device)
        }
        Command::Bench { what } => match what {
            BenchWhat::Engine {
                stages,
                shape,
                cold,
                json,
                repeat,
                dir,
                tools,
                exe,
            } => super::bench_engine::bench_engine(&super::bench_engine::EngineBench {
                stages,
                shape,
                cold,
                json,
                repeat,
                dir,
                tools,
                exe,
            }),
            BenchWhat::Train {
                model,
                warmup,
                steps,
                json,
                device,
            } => super::bench_train::bench_train(model.as_deref(), warmup, steps, json, &device),
            BenchWhat::Epoch {
                model,
                data,
                examples,
                json,
            } => super::bench_train::bench_epoch(&model, &data, examples, json),
        },
    }
}

/// Copies the outputs of stages with `publish:` into the workspace (after they ran or
/// were found cached), replacing what an earlier run published there.
fn publish(p: &Pipeline, plan: &Plan, cache: &Cache, summary: &exec::RunSummary) -> Result<()> {
    for (i, inst) in p.instances.iter().enumerate() {
        let Some(dest) = &inst.publish else { continue };
        let done = matches!(
            summary.outcomes.get(&inst.name),
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
    for it in &plan.items {
        if it.status == Status::NotSelected {
            continue;
        }
        let inst = &p.instances[it.instance];
        let at = match rows.iter().position(|r| r.stage == inst.base) {
            Some(at) => at,
            None => {
                rows.push(StageCells {
                    stage: &inst.base,
                    kind: &inst.kind,
                    cached: 0,
                    to_run: 0,
                });
                rows.len() - 1
            }
        };
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
    out.push_str(&format!("{to_run} to run, {cached} cached\n"));
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
    let (mut run, mut cached, mut not_selected) = (0, 0, 0);
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
        };
        out.push_str(&format!(
            "{status:<7} {:<width$}  {:<12} {}  {reason}\n",
            inst.name,
            inst.kind,
            it.key.short(),
        ));
    }
    out.push_str(&format!("{run} to run, {cached} cached"));
    if not_selected > 0 {
        out.push_str(&format!(" ({not_selected} not selected by --only)"));
    }
    out.push('\n');
    out
}

/// Opens the cache for a command that only reads it, saying so when another process
/// holds it and its snapshot is read instead.
pub(super) fn open_for_reading(root: &Path) -> Result<Cache> {
    let cache = Cache::open_for_reading(root)?;
    if let Some(note) = cache.snapshot_note() {
        eprintln!("{note}");
    }
    Ok(cache)
}

fn cache_command(root: &Path, action: CacheAction, registry: &StageRegistry) -> Result<ExitCode> {
    match action {
        CacheAction::Ls => {
            let cache = open_for_reading(root)?;
            let mut entries = cache.entries()?;
            entries.sort_by(|a, b| a.1.stage.cmp(&b.1.stage));
            let mut total = 0u64;
            for (key, e) in &entries {
                total += e.bytes;
                println!(
                    "{}  {:<40} {:<12} {:>10}  {:>7.1}s",
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
            let (logs, log_bytes) = crate::exec::slurm::remove_job_logs(cache.root(), &keep);
            let logs = match logs {
                0 => String::new(),
                n => format!(" and the Slurm job logs of {n} stages"),
            };
            println!(
                "removed {} entries and {} blobs{logs}, freed {}",
                report.entries_removed,
                report.blobs_removed,
                human_bytes(report.bytes_freed + log_bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The one instance `stage` names (an error naming the choices when it names none or a
/// whole matrix).
fn one_instance(loaded: &Loaded, pipeline: &Path, stage: &str) -> Result<usize> {
    let instances = loaded.pipeline.select(stage);
    match instances.as_slice() {
        &[i] => Ok(i),
        [] => bail!("no stage named `{stage}` in {}", pipeline.display()),
        [first, ..] => bail!(
            "`{stage}` is a matrix of {} stages: name one, e.g. `{}`",
            instances.len(),
            loaded.pipeline.instances[*first].name
        ),
    }
}

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
fn show_command(
    root: &Path,
    target: &PipelineArgs,
    stage: &str,
    file: Option<&Path>,
    device: &str,
    registry: &StageRegistry,
) -> Result<ExitCode> {
    let loaded = load(&target.pipeline, target.profile.as_deref(), registry)?;
    let i = one_instance(&loaded, &target.pipeline, stage)?;
    let name = &loaded.pipeline.instances[i].name;
    let cache = open_for_reading(root)?;
    let plan = plan_everything(&loaded, &cache, device)?;
    let item = plan.item(i);
    if item.status != Status::Cached {
        let elsewhere = profiles_caching(
            target,
            &loaded.pipeline.profiles,
            name,
            &cache,
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

/// Runs (if needed) the stage `stage` and prints the statistics its output carries.
fn stats_command(
    root: &Path,
    target: &PipelineArgs,
    stage: &str,
    json: bool,
    registry: &StageRegistry,
) -> Result<ExitCode> {
    let loaded = load(&target.pipeline, target.profile.as_deref(), registry)?;
    let i = one_instance(&loaded, &target.pipeline, stage)?;
    let cache = Cache::open(root)?;
    let only = vec![loaded.pipeline.instances[i].name.clone()];
    let plan = plan_for(&loaded, &cache, only, Vec::new(), "cpu")?;
    if plan.item(i).status == Status::Run {
        let summary = run_quietly(&loaded, &plan, &cache, registry)?;
        if summary.failed() > 0 {
            // the stage's own error (or an upstream one's): what the user must fix
            let errors: Vec<String> = summary
                .outcomes
                .iter()
                .filter_map(|(name, outcome)| match outcome {
                    StageOutcome::Failed { error } => Some(format!("`{name}`: {error}")),
                    _ => None,
                })
                .collect();
            eprintln!("error: stage `{stage}` failed: {}", errors.join("; "));
            return Ok(Exit::StageFailed.code());
        }
    }
    let dir = cache.materialize(&plan.item(i).key)?;
    let stats = crate::data::stats_of(&dir)
        .with_context(|| format!("stage `{stage}` has no corpus statistics"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats.counts_json())?);
    } else {
        print!("{stats}");
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
