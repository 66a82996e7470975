//! What every command starts from: the pipeline loaded under its profile, its graph,
//! and the cache, opened for reading (no lock: `plan`, `show`, `report`, `diff`) or for
//! running (the lock: `run`, `stats`, `encode`, `bench`); and the plans they make of it.

use std::path::Path;

use anyhow::{bail, Result};

use super::args::PipelineArgs;
use crate::cache::{Cache, CacheError};
use crate::exec::{self, Plan, PlanOptions, RunOptions};
use crate::graph::StageGraph;
use crate::pipeline::{load_pipeline, load_pipeline_stored, ExpandedStore, Pipeline};
use crate::stages::StageRegistry;

/// A loaded pipeline with its graph.
pub(super) struct Loaded {
    pub pipeline: Pipeline,
    pub graph: StageGraph,
}

/// Loads the pipeline at `path` under `profile` and builds its graph.
pub(super) fn load(path: &Path, profile: Option<&str>, registry: &StageRegistry) -> Result<Loaded> {
    with_graph(load_pipeline(path, profile, registry)?)
}

/// [`load`], through the store of expanded pipelines of the cache at `cache_root` (an
/// unchanged large pipeline is read back, not expanded again: [`ExpandedStore`]).
pub(super) fn load_stored(
    path: &Path,
    profile: Option<&str>,
    registry: &StageRegistry,
    cache_root: &Path,
) -> Result<Loaded> {
    let store = ExpandedStore::in_cache(cache_root);
    with_graph(load_pipeline_stored(path, profile, registry, &store)?)
}

fn with_graph(pipeline: Pipeline) -> Result<Loaded> {
    let graph = StageGraph::build(&pipeline)?;
    crate::timings::mark("graph");
    Ok(Loaded { pipeline, graph })
}

/// The pipeline of `target` loaded (through the cache's store of expanded pipelines) while
/// `open` opens its cache on another core: at 100,000 stages each took a few tenths of a
/// second (#27). Where `cache_root` does not exist yet, the pipeline loads first, so that
/// one that does not load leaves no new cache folder behind. A load error wins over the
/// cache's.
pub(super) fn load_beside<C: Send>(
    target: &PipelineArgs,
    registry: &StageRegistry,
    cache_root: &Path,
    open: impl FnOnce() -> Result<C> + Send,
) -> Result<(Loaded, C)> {
    let load_target = || {
        load_stored(
            &target.pipeline,
            target.profile.as_deref(),
            registry,
            cache_root,
        )
    };
    if !cache_root.exists() {
        // (a pipeline that loaded stores its expansion, and so makes the folder)
        let loaded = load_target()?;
        return Ok((loaded, open()?));
    }
    let (loaded, cache) = rayon::join(load_target, open);
    crate::timings::mark("cache opened (beside the load)");
    Ok((loaded?, cache?))
}

/// A loaded pipeline and the cache a command reads or runs it with.
pub(super) struct CommandContext {
    pub loaded: Loaded,
    pub cache: Cache,
}

impl CommandContext {
    /// Ends the command: the cache closes (its snapshot written, its lock released), and
    /// the pipeline is left to the process's exit, as is `plan`: freeing 100,000 stages
    /// one allocation at a time cost a tenth of a no-op run (#27).
    pub fn finish<T>(self, plan: T) {
        let CommandContext { loaded, cache } = self;
        drop(cache);
        std::mem::forget(loaded);
        std::mem::forget(plan);
    }

    /// For a command that only reads results: the cache without its lock (the holder's
    /// snapshot when another process runs; said on stderr).
    pub fn reading(
        cache_root: &Path,
        target: &PipelineArgs,
        registry: &StageRegistry,
    ) -> Result<Self> {
        let (loaded, cache) = load_beside(target, registry, cache_root, || {
            open_for_reading(cache_root)
        })?;
        Ok(CommandContext { loaded, cache })
    }

    /// For a command that may compute results: the cache with its lock.
    pub fn running(
        cache_root: &Path,
        target: &PipelineArgs,
        registry: &StageRegistry,
    ) -> Result<Self> {
        let (loaded, cache) = load_beside(target, registry, cache_root, || {
            Ok(Cache::open(cache_root)?)
        })?;
        Ok(CommandContext { loaded, cache })
    }

    /// For a command that computes a result only when it is missing (`stats`): the cache
    /// with its lock, or, while another process holds it, that process's snapshot (said
    /// on stderr), from which cached results still read. See [`Cache::require_lock`].
    pub fn running_or_reading(
        cache_root: &Path,
        target: &PipelineArgs,
        registry: &StageRegistry,
    ) -> Result<Self> {
        match Self::running(cache_root, target, registry) {
            Err(e) if matches!(e.downcast_ref(), Some(CacheError::Busy { .. })) => {
                Self::reading(cache_root, target, registry)
            }
            other => other,
        }
    }

    /// See [`plan_for`].
    pub fn plan(&self, only: Vec<String>, force: Vec<String>, device: &str) -> Result<Plan> {
        plan_for(&self.loaded, &self.cache, only, force, device)
    }

    /// See [`plan_everything`].
    pub fn plan_everything(&self, device: &str) -> Result<Plan> {
        plan_everything(&self.loaded, &self.cache, device)
    }
}

/// The plan of the stages `only` selects (all when empty), `force`d ones rerun, keyed for
/// the backend of `device` (what `run` and `plan` show and execute).
pub(super) fn plan_for(
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

/// Backend name that enters keys of backend-dependent stages.
pub(super) fn backend_for(device: &str) -> Result<String> {
    Ok(crate::model::device::DeviceSpec::parse(device)?
        .backend_name()
        .to_string())
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

/// The one instance `stage` names (an error naming the choices when it names none or a
/// whole matrix).
pub(super) fn one_instance(loaded: &Loaded, pipeline: &Path, stage: &str) -> Result<usize> {
    let instances = loaded.pipeline.select(stage);
    match instances.as_slice() {
        &[i] => Ok(i),
        [] => bail!(
            "`{stage}` selects no stage in {}: {}",
            pipeline.display(),
            loaded.pipeline.selection_miss(stage)
        ),
        [first, ..] => bail!(
            "`{stage}` is a matrix of {} stages: name one, e.g. `{}`",
            instances.len(),
            loaded.pipeline.instances[*first].name
        ),
    }
}
