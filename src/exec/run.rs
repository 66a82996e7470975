//! The scheduler: runs the plan's `Run` stages, independent ones in parallel up to
//! `jobs`, each in a private temp dir, committing each result atomically. A failure
//! skips only its descendants; independent branches go on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::plan::{Plan, Status};
use super::ui::RunUi;
use crate::cache::{Cache, Entry, LastRun};
use crate::graph::StageGraph;
use crate::spec::Pipeline;
use crate::stages::{InputArtifact, Inputs, Progress, StageCtx, StageError, StageRegistry};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages run at once.
    pub jobs: usize,
    /// Device string handed to stages (`cpu`, `cuda:0`, `wgpu`).
    pub device: String,
    /// No progress bars.
    pub quiet: bool,
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
}

/// End-of-run summary.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Instance name -> outcome.
    pub outcomes: BTreeMap<String, StageOutcome>,
    pub wall_seconds: f64,
}

impl RunSummary {
    fn count(&self, f: impl Fn(&StageOutcome) -> bool) -> usize {
        self.outcomes.values().filter(|o| f(o)).count()
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
    /// `ran 3, cached 12, failed 0, skipped 0 in 4.2s`
    pub fn line(&self) -> String {
        format!(
            "ran {}, cached {}, failed {}, skipped {} in {:.1}s",
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
}

struct Done {
    instance: usize,
    result: Result<f64, String>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs every `Run` item of `plan`.
pub fn run_plan(
    p: &Pipeline,
    g: &StageGraph,
    plan: &Plan,
    cache: &Cache,
    registry: &StageRegistry,
    opts: &RunOptions,
) -> Result<RunSummary, RunError> {
    let start = Instant::now();
    let ui = RunUi::new(opts.quiet);
    let cancel = Arc::new(AtomicBool::new(false));
    let mut outcomes: BTreeMap<usize, StageOutcome> = BTreeMap::new();
    let damaged = drop_damaged_results(plan, cache, &ui)?;
    let runs =
        |it: &&super::plan::PlanItem| it.status == Status::Run || damaged.contains(&it.instance);
    let to_run: BTreeSet<usize> = plan
        .items
        .iter()
        .filter(runs)
        .map(|it| it.instance)
        .collect();
    for it in plan.items.iter().filter(|it| !runs(it)) {
        match it.status {
            Status::Cached => {
                outcomes.insert(it.instance, StageOutcome::Cached);
            }
            Status::NotSelected => {
                outcomes.insert(it.instance, StageOutcome::NotSelected);
            }
            Status::Run => {}
        }
    }
    // Parents that must run first, per stage to run.
    let mut waiting_on: BTreeMap<usize, BTreeSet<usize>> = to_run
        .iter()
        .map(|&i| {
            let ps = g
                .parents(i)
                .into_iter()
                .filter(|u| to_run.contains(u))
                .collect();
            (i, ps)
        })
        .collect();
    // Instances that compute an earlier instance's key (the same checkpoint fetched under
    // two names, a cell shared by two tables): only the first runs; each twin waits for it
    // and then finds the result in the cache.
    let mut twin_of: BTreeMap<usize, usize> = BTreeMap::new();
    let mut first_with_key = BTreeMap::new();
    for it in plan.items.iter().filter(runs) {
        match first_with_key.get(&it.key) {
            Some(&primary) => {
                twin_of.insert(it.instance, primary);
                if let Some(ps) = waiting_on.get_mut(&it.instance) {
                    ps.insert(primary);
                }
            }
            None => {
                first_with_key.insert(it.key, it.instance);
            }
        }
    }
    let mut ready: VecDeque<usize> = plan
        .items
        .iter()
        .map(|it| it.instance)
        .filter(|i| waiting_on.get(i).is_some_and(BTreeSet::is_empty))
        .collect();
    for i in &ready {
        waiting_on.remove(i);
    }
    let jobs = opts.jobs.max(1);
    let (tx, rx) = mpsc::channel::<Done>();
    let mut running = 0usize;

    std::thread::scope(|scope| -> Result<(), RunError> {
        loop {
            while running < jobs {
                let Some(i) = ready.pop_front() else { break };
                let inst = &p.instances[i];
                let item = plan.item(i);
                if let Some(&primary) = twin_of.get(&i) {
                    if cache.contains(&item.key)? {
                        ui.line(&format!(
                            "✓ {} (same key as {}: its result)",
                            inst.name, p.instances[primary].name
                        ));
                        outcomes.insert(i, StageOutcome::Cached);
                        release_children(&mut waiting_on, &mut ready, i);
                        continue;
                    }
                }
                // Resolve inputs now (their producers are committed).
                let inputs = match resolve_inputs(p, plan, cache, i) {
                    Ok(inputs) => inputs,
                    Err(e) => {
                        let _ = tx.send(Done {
                            instance: i,
                            result: Err(e.to_string()),
                        });
                        running += 1;
                        continue;
                    }
                };
                let Some(stage) = registry.get(&inst.kind) else {
                    let _ = tx.send(Done {
                        instance: i,
                        result: Err(format!("stage kind `{}` is not implemented", inst.kind)),
                    });
                    running += 1;
                    continue;
                };
                let tmp = cache.tmp_dir(&item.key)?;
                let checkpoint_dir = cache.checkpoint_dir(&item.key)?;
                let bar = ui.stage_bar(&inst.name);
                let reasons = match damaged.contains(&i) {
                    true => "its cached output was damaged".to_string(),
                    false => super::reason::reasons_text(&item.reasons),
                };
                ui.line(&format!("▶ {} ({}): {}", inst.name, inst.kind, reasons));
                let tx = tx.clone();
                let cancel = cancel.clone();
                let device = opts.device.clone();
                let key = item.key;
                running += 1;
                scope.spawn(move || {
                    let t0 = Instant::now();
                    let out_dir = tmp.join("out");
                    let scratch = tmp.join("scratch");
                    let mut result = std::fs::create_dir_all(&out_dir)
                        .and_then(|_| std::fs::create_dir_all(&scratch))
                        .map_err(|e| StageError::io(&tmp, e).to_string());
                    if result.is_ok() {
                        let mut ctx = StageCtx {
                            name: inst.name.clone(),
                            key: key.hex(),
                            coords: inst.coords.clone(),
                            inputs,
                            out_dir: out_dir.clone(),
                            scratch,
                            checkpoint_dir,
                            progress: Progress::new(bar.clone()),
                            device,
                            cancel,
                            run: crate::stages::RunInfo {
                                pipeline: p.file.display().to_string(),
                                profile: p.profile.clone(),
                            },
                        };
                        result = match catch_unwind(AssertUnwindSafe(|| {
                            stage.run(&mut ctx, &inst.params)
                        })) {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(panic) => Err(format!(
                                "stage panicked: {}",
                                panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default()
                            )),
                        };
                    }
                    bar.finish_and_clear();
                    let seconds = t0.elapsed().as_secs_f64();
                    let _ = tx.send(Done {
                        instance: i,
                        result: result.map(|_| seconds),
                    });
                });
            }
            if running == 0 {
                break;
            }
            let Ok(done) = rx.recv() else { break };
            running -= 1;
            let i = done.instance;
            let inst = &p.instances[i];
            let item = plan.item(i);
            let tmp = cache.root().join("tmp").join(format!(
                "{}-{}",
                item.key.short(),
                std::process::id()
            ));
            let committed = done.result.and_then(|seconds| {
                let entry = Entry {
                    manifest: String::new(),
                    stage: inst.name.clone(),
                    kind: inst.kind.clone(),
                    seconds,
                    bytes: 0,
                    created: now_unix(),
                    pipeline: p.file.to_string_lossy().to_string(),
                    profile: p.profile.clone(),
                    inputs: input_keys(&item.material),
                };
                cache
                    .commit(&item.key, &tmp.join("out"), entry)
                    .map(|_| seconds)
                    .map_err(|e| format!("committing outputs: {e}"))
            });
            let _ = std::fs::remove_dir_all(&tmp);
            match committed {
                Ok(seconds) => {
                    ui.line(&format!("✓ {} ({:.1}s)", inst.name, seconds));
                    outcomes.insert(i, StageOutcome::Ran { seconds });
                    cache.record_last_run(
                        &plan.pipeline_id,
                        &inst.name,
                        &LastRun {
                            key: item.key.hex(),
                            material: item.material.clone(),
                            input_stages: item.input_stages.clone(),
                        },
                    )?;
                    release_children(&mut waiting_on, &mut ready, i);
                }
                Err(error) => {
                    ui.line(&format!("✗ {} failed: {}", inst.name, error));
                    outcomes.insert(i, StageOutcome::Failed { error });
                    let mut failed = vec![i];
                    failed.extend(twin_of.iter().filter(|(_, &p)| p == i).map(|(&t, _)| t));
                    for d in g.with_descendants(&failed) {
                        if d != i && waiting_on.remove(&d).is_some() {
                            ui.line(&format!(
                                "⊘ {} skipped (upstream {} failed)",
                                p.instances[d].name, inst.name
                            ));
                            outcomes.insert(
                                d,
                                StageOutcome::Skipped {
                                    because: inst.name.clone(),
                                },
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    })?;

    // Cached stages were "run" in this pipeline too: their last-run record moves on.
    for it in &plan.items {
        if it.status == Status::Cached && !damaged.contains(&it.instance) {
            let inst = &p.instances[it.instance];
            let prev = cache.last_run(&plan.pipeline_id, &inst.name)?;
            if prev.as_ref().is_none_or(|r| r.key != it.key.hex()) {
                cache.record_last_run(
                    &plan.pipeline_id,
                    &inst.name,
                    &LastRun {
                        key: it.key.hex(),
                        material: it.material.clone(),
                        input_stages: it.input_stages.clone(),
                    },
                )?;
            }
        }
    }
    cache.flush()?;

    Ok(RunSummary {
        outcomes: outcomes
            .into_iter()
            .map(|(i, o)| (p.instances[i].name.clone(), o))
            .collect(),
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Checks every cached result of the plan before anything is served or read: a damaged
/// or missing one is dropped from the cache (said on a line) and its stage runs again.
fn drop_damaged_results(
    plan: &Plan,
    cache: &Cache,
    ui: &RunUi,
) -> Result<BTreeSet<usize>, RunError> {
    let mut damaged = BTreeSet::new();
    for it in plan.items.iter().filter(|it| it.status == Status::Cached) {
        match cache.check(&it.key) {
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

/// The keys (hex) of the results a stage is computed from.
fn input_keys(material: &crate::hash::KeyMaterial) -> Vec<String> {
    let keys: BTreeSet<String> = material
        .inputs
        .values()
        .flatten()
        .filter_map(|k| k.get(..64).map(str::to_string))
        .collect();
    keys.into_iter().collect()
}

/// Moves the stages that waited only on `done` to `ready`.
fn release_children(
    waiting_on: &mut BTreeMap<usize, BTreeSet<usize>>,
    ready: &mut VecDeque<usize>,
    done: usize,
) {
    let children: Vec<usize> = waiting_on
        .iter_mut()
        .filter_map(|(c, ps)| (ps.remove(&done) && ps.is_empty()).then_some(*c))
        .collect();
    for c in children {
        waiting_on.remove(&c);
        ready.push_back(c);
    }
}

/// Materializes the inputs of instance `i` from the cache.
pub fn resolve_inputs(
    p: &Pipeline,
    plan: &Plan,
    cache: &Cache,
    i: usize,
) -> Result<Inputs, StageError> {
    let inst = &p.instances[i];
    let mut by_name: BTreeMap<String, Vec<InputArtifact>> = BTreeMap::new();
    for (name, refs) in &inst.inputs {
        let mut arts = Vec::new();
        for r in refs {
            let up = &p.instances[r.instance];
            let key = plan.item(r.instance).key;
            let view = cache.materialize(&key).map_err(|e| {
                if e.is_damage() {
                    // nothing is computed from it; the next run computes it again
                    let _ = cache.remove(&key);
                }
                StageError::Input {
                    name: name.clone(),
                    message: format!("output of `{}` unavailable: {e}", up.name),
                }
            })?;
            let path: PathBuf = match &r.sub {
                Some(sub) => {
                    let path = view.join(sub);
                    if !path.exists() {
                        return Err(StageError::Input {
                            name: name.clone(),
                            message: format!(
                                "`{}.{sub}` does not exist in the output of `{}`",
                                up.base, up.name
                            ),
                        });
                    }
                    path
                }
                None => view,
            };
            arts.push(InputArtifact {
                stage: up.name.clone(),
                key: key.hex(),
                coords: up.coords.clone(),
                path,
            });
        }
        by_name.insert(name.clone(), arts);
    }
    Ok(Inputs { by_name })
}
