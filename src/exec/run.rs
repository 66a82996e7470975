//! The scheduler: runs the plan's `Run` stages, independent ones in parallel up to what
//! the executor takes at once, each in a staging folder, committing each result atomically. A failure
//! skips only its descendants; independent branches go on.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::commit::CommitSpec;
use super::executor::{end_line, Committed, Executor, Finished, Job, StageExecutor};
use super::inputs::PendingInputs;
use super::local::LocalExecutor;
use super::plan::{Plan, PlanItem, Status};
use super::slurm::SlurmExecutor;
use super::ui::RunUi;
use super::waiting::Waiting;
use crate::cache::{Cache, CacheError};
use crate::graph::StageGraph;
use crate::hash::StageKey;
use crate::pipeline::Pipeline;
use crate::stages::StageRegistry;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages run at once.
    pub jobs: usize,
    /// Device string handed to stages (`cpu`, `cuda:0`, `wgpu`).
    pub device: String,
    /// No progress bars.
    pub quiet: bool,
    /// Where stages are computed (`local` threads, or `slurm` jobs).
    pub executor: Executor,
}

/// What happened to one instance.
#[derive(Debug, Clone, PartialEq)]
pub enum StageOutcome {
    Ran {
        seconds: f64,
    },
    Cached,
    Failed {
        error: String,
    },
    /// Not run because an upstream stage failed.
    Skipped {
        because: String,
    },
    NotSelected,
    /// Not run: only cached stages read it ([`Status::NotNeeded`]).
    NotNeeded,
}

/// End-of-run summary.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Outcome by instance (index into [`Pipeline::instances`]); `None` for one the run
    /// never reached. Not a map by name: 100,000 names copied took 11 MB at the end of
    /// every run (#27).
    pub outcomes: Vec<Option<StageOutcome>>,
    pub wall_seconds: f64,
}

impl RunSummary {
    fn count(&self, f: impl Fn(&StageOutcome) -> bool) -> usize {
        self.outcomes.iter().flatten().filter(|o| f(o)).count()
    }
    pub fn ran(&self) -> usize {
        self.count(|o| matches!(o, StageOutcome::Ran { .. }))
    }
    pub fn cached(&self) -> usize {
        self.count(|o| matches!(o, StageOutcome::Cached))
    }
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, StageOutcome::Failed { .. }))
    }
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, StageOutcome::Skipped { .. }))
    }
    pub fn not_needed(&self) -> usize {
        self.count(|o| matches!(o, StageOutcome::NotNeeded))
    }
    /// `ran 3, cached 12, failed 0, skipped 0 in 4.2s` (and `, 2 not needed` before
    /// ` in` when a stage was left out for that)
    pub fn line(&self) -> String {
        let not_needed = match self.not_needed() {
            0 => String::new(),
            k => format!(", {k} not needed"),
        };
        format!(
            "ran {}, cached {}, failed {}, skipped {}{not_needed} in {:.1}s",
            self.ran(),
            self.cached(),
            self.failed(),
            self.skipped(),
            self.wall_seconds
        )
    }
}

/// An error that stops the whole run (not a stage failure).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Slurm(#[from] super::slurm::SlurmError),
    #[error(
        "interrupted: the stages that were running stopped (on Slurm: their jobs cancelled); \
         every result finished before is cached, and the next `pipe run` goes on from there"
    )]
    Interrupted,
}

/// Runs every `Run` item of `plan`, with the executor `opts.executor` names.
pub fn run_plan(
    p: &Pipeline,
    g: &StageGraph,
    plan: &Plan,
    cache: &Cache,
    registry: &StageRegistry,
    opts: &RunOptions,
) -> Result<RunSummary, RunError> {
    let ui = RunUi::new(opts.quiet);
    match &opts.executor {
        Executor::Local => std::thread::scope(|scope| {
            let mut local = LocalExecutor::new(scope, cache, &ui, opts.jobs);
            schedule(p, g, plan, cache, registry, opts, &ui, &mut local)
        }),
        Executor::Slurm(slurm) => {
            let mut slurm = SlurmExecutor::new(slurm, cache, p, &ui)?;
            let summary = schedule(p, g, plan, cache, registry, opts, &ui, &mut slurm);
            slurm.finish()?;
            summary
        }
    }
}

/// The scheduler: hands ready stages to `executor` (as many as it takes at once), commits
/// each result as it ends, and skips the descendants of a failure.
#[allow(clippy::too_many_arguments)]
fn schedule<'a>(
    p: &'a Pipeline,
    g: &StageGraph,
    plan: &'a Plan,
    cache: &Cache,
    registry: &'a StageRegistry,
    opts: &RunOptions,
    ui: &RunUi,
    executor: &mut dyn StageExecutor<'a>,
) -> Result<RunSummary, RunError> {
    let start = Instant::now();
    // by instance: a map of 100,000 outcomes took 7.8 MB (#27)
    let mut outcomes: Vec<Option<StageOutcome>> = vec![None; p.instances.len()];
    let damaged = with_inputs_not_needed(drop_damaged_results(plan, cache, ui)?, g, plan);
    crate::timings::mark("run: cached results checked");
    let runs =
        |it: &&super::plan::PlanItem| it.status == Status::Run || damaged.contains(&it.instance);
    let mut runs_flag = vec![false; p.instances.len()];
    for it in plan.items.iter().filter(runs) {
        runs_flag[it.instance] = true;
    }
    ui.start_run(runs_flag.iter().filter(|&&r| r).count());
    // for a report's provenance; read only when a report runs (it parses the params of
    // every training stage)
    let precision = (0..p.instances.len())
        .any(|i| runs_flag[i] && &*p.instances[i].kind == "report")
        .then(|| crate::report::provenance::precision_summary(&p.instances))
        .flatten();
    for it in plan.items.iter().filter(|it| !runs(it)) {
        match it.status {
            Status::Cached => {
                outcomes[it.instance] = Some(StageOutcome::Cached);
            }
            Status::NotSelected => {
                outcomes[it.instance] = Some(StageOutcome::NotSelected);
            }
            Status::NotNeeded => {
                outcomes[it.instance] = Some(StageOutcome::NotNeeded);
            }
            Status::Run => {}
        }
    }
    // What each stage to run waits for: its parents that run too.
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for it in plan.items.iter().filter(runs) {
        let child = it.instance;
        edges.extend(
            g.parents(child)
                .into_iter()
                .filter(|&u| runs_flag[u])
                .map(|u| (u as u32, child as u32)),
        );
    }
    // Instances that compute an earlier instance's key (the same checkpoint fetched under
    // two names, a cell shared by two tables): only the first runs; each twin waits for it
    // and then finds the result in the cache.
    let mut twin_of: BTreeMap<usize, usize> = BTreeMap::new();
    {
        let mut first_with_key: HashMap<StageKey, usize> = HashMap::new();
        for it in plan.items.iter().filter(runs) {
            match first_with_key.get(&it.key) {
                Some(&primary) => {
                    twin_of.insert(it.instance, primary);
                    edges.push((primary as u32, it.instance as u32));
                }
                None => {
                    first_with_key.insert(it.key, it.instance);
                }
            }
        }
    }
    let (mut waiting, mut ready) = Waiting::new(
        p.instances.len(),
        edges,
        plan.items.iter().map(|it| it.instance),
        &runs_flag,
    );
    let jobs = executor.capacity().max(1);
    // Jobs that failed before they could start (inputs unavailable, kind not built).
    let mut failed_to_start: VecDeque<Finished> = VecDeque::new();
    let mut running = 0usize;

    loop {
        while running < jobs && !executor.interrupted() {
            let Some(i) = ready.pop_front() else { break };
            let inst = &p.instances[i];
            let item = plan.item(i);
            if let Some(&primary) = twin_of.get(&i) {
                if cache.contains(&item.key)? {
                    ui.stage_ended(&format!(
                        "✓ {} (same key as {}: its result)",
                        inst.name, p.instances[primary].name
                    ));
                    outcomes[i] = Some(StageOutcome::Cached);
                    waiting.release(i, &mut ready);
                    continue;
                }
            }
            running += 1;
            let inputs = match PendingInputs::of(p, plan, cache, i) {
                Ok(inputs) => inputs,
                Err(e) => {
                    failed_to_start.push_back(Finished {
                        instance: i,
                        result: Err(e.to_string()),
                        reported: false,
                    });
                    continue;
                }
            };
            let Some(stage) = registry.get(&inst.kind) else {
                failed_to_start.push_back(Finished {
                    instance: i,
                    result: Err(format!("stage kind `{}` is not implemented", inst.kind)),
                    reported: false,
                });
                continue;
            };
            let reasons = match damaged.contains(&i) {
                true => "its cached output was damaged".to_string(),
                false => super::reason::reasons_text(&item.reasons),
            };
            let start_line = format!("▶ {} ({}): {}", inst.name, inst.kind, reasons);
            let spec = Arc::new(CommitSpec::new(p, plan, i));
            let job = Job {
                instance: i,
                inst,
                stage,
                key: item.key,
                // resolved where the job runs (their producers are committed)
                inputs,
                // only the training kinds keep resumable state: a folder made for every
                // other stage would cost a mkdir now and a removal at its commit
                checkpoint_dir: if inst.uses_backend {
                    cache.checkpoint_dir(&item.key)?
                } else {
                    cache.checkpoint_path(&item.key)
                },
                device: opts.device.clone(),
                run: crate::stages::RunInfo {
                    pipeline: p.file.display().to_string(),
                    profile: p.profile.clone(),
                    precision: precision.clone(),
                },
                commit: spec,
                start_line,
            };
            if let Err(error) = executor.start(job) {
                failed_to_start.push_back(Finished {
                    instance: i,
                    result: Err(error),
                    reported: false,
                });
            }
        }
        if running == 0 {
            break;
        }
        let done = match failed_to_start.pop_front() {
            Some(done) => done,
            None => match executor.next_finished()? {
                Some(done) => done,
                None => break,
            },
        };
        running -= 1;
        let i = done.instance;
        let inst = &p.instances[i];
        // after an interrupt the run ends here: the stages it stopped are not failures,
        // and what waited on them is not "skipped"
        let stopping = executor.interrupted();
        if !done.reported {
            ui.stage_ended(&end_line(&inst.name, &done.result, stopping));
        }
        // committed by the executor that ran it
        match done.result {
            Ok(Committed { seconds }) => {
                // its last run recorded with its commit
                outcomes[i] = Some(StageOutcome::Ran { seconds });
                waiting.release(i, &mut ready);
            }
            Err(error) => {
                outcomes[i] = Some(StageOutcome::Failed { error });
                let mut failed = vec![i];
                failed.extend(twin_of.iter().filter(|(_, &p)| p == i).map(|(&t, _)| t));
                for d in g.with_descendants(&failed) {
                    if d != i && waiting.cancel(d) {
                        if !stopping {
                            ui.stage_ended(&format!(
                                "⊘ {} skipped (upstream {} failed)",
                                p.instances[d].name, inst.name
                            ));
                        }
                        outcomes[d] = Some(StageOutcome::Skipped {
                            because: inst.name.clone(),
                        });
                    }
                }
            }
        }
    }
    crate::timings::mark("run: stages run");
    if executor.interrupted() {
        cache.flush()?;
        return Err(RunError::Interrupted);
    }

    // Cached stages were "run" in this pipeline too: their last-run record moves on.
    // When every stage was cached and the digest of the records a run last left current
    // is this plan's, none is behind: one lookup instead of one a stage (#27). Otherwise
    // which records are behind is looked up on every core; the few behind are written
    // in order.
    let digest = crate::cache::last_runs_digest(
        plan.items
            .iter()
            .map(|it| (p.instances[it.instance].name.as_str(), &it.key)),
    );
    let all_cached = damaged.is_empty() && plan.items.iter().all(|it| it.status == Status::Cached);
    let vouched = all_cached && cache.last_runs_vouched(&plan.pipeline_id, &digest)?;
    let behind: Vec<&super::plan::PlanItem> = if vouched {
        Vec::new()
    } else {
        use rayon::prelude::*;
        plan.items
            .par_iter()
            .filter(|it| it.status == Status::Cached && !damaged.contains(&it.instance))
            .map(|it| {
                let name = &p.instances[it.instance].name;
                cache
                    .last_run_is(&plan.pipeline_id, name, &it.key.hex())
                    .map(|current| (!current).then_some(it))
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect()
    };
    for it in behind {
        cache.record_last_run(
            &plan.pipeline_id,
            &p.instances[it.instance].name,
            &plan.last_run(p, it.instance),
        )?;
    }
    // every record now current: each stage ran (and was recorded) or was cached (and
    // swept above); a twin served by its primary's result was not recorded
    let all_current = plan.items.iter().all(|it| match &outcomes[it.instance] {
        Some(StageOutcome::Ran { .. }) => true,
        Some(StageOutcome::Cached) => it.status == Status::Cached,
        _ => false,
    });
    if all_current && !vouched {
        cache.vouch_last_runs(&plan.pipeline_id, &digest)?;
    }
    cache.flush()?;
    crate::timings::mark("run: last runs recorded");

    Ok(RunSummary {
        outcomes,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Every file under `dir` (links to files followed), as `/`-separated paths relative to
/// `root`: what a commit stores.
pub(crate) fn list_files(
    root: &std::path::Path,
    dir: &std::path::Path,
    out: &mut Vec<String>,
) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        // the entry's own type: links are listed, never walked (commit refuses them)
        if e.file_type()?.is_dir() {
            list_files(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

/// Checks every cached result of the plan before anything is served or read: a damaged
/// or missing one is dropped from the cache (said on a line) and its stage runs again.
/// `damaged` and the inputs it needs again: a damaged result runs again, so what the plan
/// left out as not needed above it ([`Status::NotNeeded`]) runs too.
fn with_inputs_not_needed(
    mut damaged: BTreeSet<usize>,
    g: &StageGraph,
    plan: &Plan,
) -> BTreeSet<usize> {
    let mut stack: Vec<usize> = damaged.iter().copied().collect();
    while let Some(i) = stack.pop() {
        for up in g.parents(i) {
            if plan.item(up).status == Status::NotNeeded && damaged.insert(up) {
                stack.push(up);
            }
        }
    }
    damaged
}

fn drop_damaged_results(
    plan: &Plan,
    cache: &Cache,
    ui: &RunUi,
) -> Result<BTreeSet<usize>, RunError> {
    use rayon::prelude::*;
    let mut damaged = BTreeSet::new();
    // checked on every core (each is a few small reads and hashes), acted on in order
    let checks: Vec<(&PlanItem, Result<(), CacheError>)> = plan
        .items
        .par_iter()
        .filter(|it| it.status == Status::Cached)
        .map(|it| (it, cache.check(&it.key)))
        .collect();
    for (it, check) in checks {
        match check {
            Ok(()) => {}
            Err(e) if e.is_damage() => {
                ui.line(&format!("⟳ {e}"));
                cache.remove(&it.key)?;
                damaged.insert(it.instance);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !damaged.is_empty() {
        cache.flush()?;
    }
    Ok(damaged)
}
