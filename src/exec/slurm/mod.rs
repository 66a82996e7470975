//! The `slurm` executor: each ready stage instance is one batch job (`sbatch`) that runs
//! `pipe exec-stage SPEC` on a node. The controller (the `pipe run` holding the cache's
//! sled index) writes the spec and a staging folder under `<cache>/slurm/jobs/`, watches
//! for the worker's `result.json` (and `squeue` for jobs that end without one), then
//! checks the staged files against the worker's hashes and commits them as a local run
//! does. Logs: `<cache>/slurm/logs/<key>/<job id>.log`. Journal of submitted jobs:
//! `<cache>/slurm/journal.jsonl` (see [`journal`]).
//!
//! The cache folder must be on a file system every node shares, at the same path.

mod journal;
mod tools;
mod wire;
mod worker;

pub use tools::resource_flags;
pub use worker::{exec_stage, WorkerError, EXIT_CACHE_NOT_VISIBLE};

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use journal::{Journal, Line, Submitted};
use wire::{result_path, spec_path, SpecInput, WorkerResult, WorkerSpec, SPEC_FORMAT};

use super::commit::CommitSpec;
use super::executor::{Finished, Job, StageExecutor, Staged};
use super::run::RunError;
use super::ui::RunUi;
use crate::cache::Cache;
use crate::pipeline::Pipeline;
use crate::stages::Inputs;

/// How to use the cluster.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Jobs in flight at once (pending or running).
    pub max_jobs: usize,
    /// The `pipe` the jobs run [default: this executable, which the nodes must see at
    /// the same path].
    pub worker_bin: Option<PathBuf>,
    /// How often the staging folders are looked at for results.
    pub poll: Duration,
    /// How often `squeue` is asked about jobs that end without a result.
    pub squeue_every: Duration,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            max_jobs: 100,
            worker_bin: None,
            poll: Duration::from_millis(20),
            squeue_every: Duration::from_secs(2),
        }
    }
}

/// An error of the slurm executor that stops the run.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("{tool}: {detail}")]
    Tool { tool: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "job {job} of `{stage}` could not see the cache folder {cache} ({detail}): it must be \
         on a file system every node shares, at the same path (see README, \"On a cluster\"); \
         the run stops"
    )]
    CacheNotShared {
        job: String,
        stage: String,
        cache: PathBuf,
        detail: String,
    },
    #[error("the worker executable {0} does not exist (set it with --worker-bin)")]
    WorkerBin(PathBuf),
}

/// The folder of the Slurm job logs of `key` under the cache at `root`, and the ids of
/// its jobs (`12, 15`), when a job ever computed it.
pub fn job_logs(root: &Path, key: &crate::hash::StageKey) -> Option<(PathBuf, String)> {
    let dir = root.join("slurm").join("logs").join(key.hex());
    let mut ids: Vec<u64> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    (!ids.is_empty()).then(|| (dir, ids.join(", ")))
}

/// Removes the Slurm job logs of every key not in `keep` (what `pipe cache gc` keeps):
/// the logs of a result that is gone, or of a stage no pipeline names any more. Returns
/// the folders removed and their bytes.
pub fn remove_job_logs(
    root: &Path,
    keep: &std::collections::BTreeSet<crate::hash::StageKey>,
) -> (usize, u64) {
    let (mut removed, mut bytes) = (0, 0);
    let Ok(dirs) = std::fs::read_dir(root.join("slurm").join("logs")) else {
        return (0, 0);
    };
    for dir in dirs.flatten() {
        let name = dir.file_name().to_string_lossy().to_string();
        if crate::hash::StageKey::from_hex(&name).is_some_and(|k| keep.contains(&k)) {
            continue;
        }
        let size: u64 = std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum();
        if std::fs::remove_dir_all(dir.path()).is_ok() {
            removed += 1;
            bytes += size;
        }
    }
    (removed, bytes)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SlurmError + '_ {
    move |source| SlurmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A job this controller waits for.
struct Flight<'a> {
    instance: usize,
    key: String,
    stage: String,
    staging: PathBuf,
    log: PathBuf,
    /// How its staged result is committed once it is there.
    commit: Arc<CommitSpec<'a>>,
}

/// Submits one batch job per stage instance and reports them as they end.
pub struct SlurmExecutor<'u> {
    opts: SlurmOptions,
    cache: PathBuf,
    jobs_dir: PathBuf,
    logs_dir: PathBuf,
    worker_bin: PathBuf,
    cwd: PathBuf,
    journal: Journal,
    /// Jobs an earlier controller submitted and did not see end, by key.
    reattach: BTreeMap<String, Submitted>,
    in_flight: BTreeMap<String, Flight<'u>>,
    ended: VecDeque<Finished>,
    ui: &'u RunUi,
    /// Where the staged results are committed (`cache` is its folder).
    results: &'u Cache,
    interrupts: super::interrupts::Interrupts,
    interrupted: bool,
    last_squeue: Instant,
    counter: usize,
    submitted: usize,
    reattached: usize,
    /// Time spent in `sbatch` calls.
    sbatch_time: Duration,
}

impl<'u> SlurmExecutor<'u> {
    /// Checks that Slurm answers, opens the journal next to `cache`'s results, and catches
    /// SIGINT/SIGTERM (to cancel this run's jobs) until it drops.
    pub fn new(
        opts: &SlurmOptions,
        cache: &'u Cache,
        _pipeline: &Pipeline,
        ui: &'u RunUi,
    ) -> Result<Self, SlurmError> {
        tools::check_available()?;
        let worker_bin = match &opts.worker_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe().map_err(io(Path::new("pipe")))?,
        };
        let worker_bin = std::path::absolute(&worker_bin).unwrap_or(worker_bin);
        if !worker_bin.is_file() {
            return Err(SlurmError::WorkerBin(worker_bin));
        }
        let root = cache.root().to_path_buf();
        let base = root.join("slurm");
        let jobs_dir = base.join("jobs");
        let logs_dir = base.join("logs");
        for dir in [&jobs_dir, &logs_dir] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let (journal, reattach) = Journal::open(&base.join("journal.jsonl"))?;
        // Staging folders of jobs no journal line keeps open are leftovers.
        let keep: Vec<&PathBuf> = reattach.values().map(|s| &s.staging).collect();
        if let Ok(rd) = std::fs::read_dir(&jobs_dir) {
            for e in rd.flatten() {
                if !keep.contains(&&e.path()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let cwd = std::env::current_dir().map_err(io(Path::new(".")))?;
        Ok(SlurmExecutor {
            opts: opts.clone(),
            cache: root,
            jobs_dir,
            logs_dir,
            worker_bin,
            cwd,
            journal,
            reattach,
            in_flight: BTreeMap::new(),
            ended: VecDeque::new(),
            ui,
            results: cache,
            interrupts: super::interrupts::Interrupts::catch(),
            interrupted: false,
            last_squeue: Instant::now(),
            counter: 0,
            submitted: 0,
            reattached: 0,
            sbatch_time: Duration::ZERO,
        })
    }

    /// Says how many jobs this run submitted and re-attached to.
    pub fn finish(self) -> Result<(), SlurmError> {
        let per_sbatch = match self.submitted {
            0 => String::new(),
            n => format!(
                " (sbatch {:.1} ms each)",
                self.sbatch_time.as_secs_f64() * 1e3 / n as f64
            ),
        };
        self.ui.line(&format!(
            "slurm: submitted {} jobs{per_sbatch}, re-attached to {}",
            self.submitted, self.reattached
        ));
        Ok(())
    }

    /// Takes over a job an earlier controller submitted for `key`, when it still runs or
    /// left a result.
    fn try_reattach(
        &mut self,
        instance: usize,
        key: &str,
        commit: &Arc<CommitSpec<'u>>,
    ) -> Result<bool, SlurmError> {
        let Some(prev) = self.reattach.remove(key) else {
            return Ok(false);
        };
        let alive = result_path(&prev.staging).exists()
            || tools::squeue(&[&prev.job])?
                .get(&prev.job)
                .is_some_and(|s| !tools::is_terminal(s));
        if !alive {
            self.journal.append(&Line::Ended {
                job: prev.job.clone(),
            })?;
            let _ = std::fs::remove_dir_all(&prev.staging);
            return Ok(false);
        }
        self.ui.line(&format!(
            "↺ {}: re-attached to job {} (submitted by an earlier run)",
            prev.stage, prev.job
        ));
        self.reattached += 1;
        self.in_flight.insert(
            prev.job.clone(),
            Flight {
                instance,
                key: prev.key,
                stage: prev.stage,
                staging: prev.staging,
                log: prev.log,
                commit: commit.clone(),
            },
        );
        Ok(true)
    }

    fn submit(&mut self, job: &Job<'u>, inputs: &Inputs) -> Result<(), SlurmError> {
        let key = job.key.hex();
        self.counter += 1;
        let staging = self.jobs_dir.join(format!(
            "{}-{}-{}",
            job.key.short(),
            std::process::id(),
            self.counter
        ));
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let spec = WorkerSpec {
            format: SPEC_FORMAT,
            cache: self.cache.clone(),
            stage: job.inst.name.clone(),
            kind: job.inst.kind.to_string(),
            key: key.clone(),
            coords: job.inst.coords.to_map(),
            params: job.inst.params.parsed().into_owned(),
            inputs: inputs
                .by_name
                .iter()
                .map(|(name, arts)| {
                    let arts = arts
                        .iter()
                        .map(|a| SpecInput {
                            stage: a.stage.clone(),
                            key: a.key_hex(),
                            coords: a.coords.to_map(),
                            path: a.path.clone(),
                        })
                        .collect();
                    (name.clone(), arts)
                })
                .collect(),
            staging: staging.clone(),
            checkpoint_dir: job.checkpoint_dir.clone(),
            device: job.device.clone(),
            pipeline: job.run.pipeline.clone(),
            profile: job.run.profile.clone(),
            precision: job.run.precision.clone(),
        };
        let spec_file = spec_path(&staging);
        let text = serde_json::to_vec_pretty(&spec).unwrap_or_default();
        std::fs::write(&spec_file, text).map_err(io(&spec_file))?;
        let script = staging.join("job.sh");
        let body = format!(
            "#!/bin/sh\n# pipe: {} (key {key})\nexec {} exec-stage {}\n",
            job.inst.name.replace('\n', " "),
            tools::sh_quote(&self.worker_bin.to_string_lossy()),
            tools::sh_quote(&spec_file.to_string_lossy()),
        );
        std::fs::write(&script, body).map_err(io(&script))?;
        let log_dir = self.logs_dir.join(&key);
        std::fs::create_dir_all(&log_dir).map_err(io(&log_dir))?;
        let name = format!("pipe:{}", job.inst.name);
        let t0 = Instant::now();
        let id = tools::sbatch(&tools::Submission {
            name: &name,
            script: &script,
            output: &log_dir.join("%j.log"),
            chdir: &self.cwd,
            resources: job.inst.resources(),
        })?;
        self.sbatch_time += t0.elapsed();
        let log = log_dir.join(format!("{id}.log"));
        self.journal.append(&Line::Submitted(Submitted {
            job: id.clone(),
            key: key.clone(),
            stage: job.inst.name.clone(),
            staging: staging.clone(),
            log: log.clone(),
        }))?;
        self.ui.line(&format!(
            "  {} → job {id} (log {})",
            job.inst.name,
            log.display()
        ));
        self.submitted += 1;
        self.in_flight.insert(
            id,
            Flight {
                instance: job.instance,
                key,
                stage: job.inst.name.clone(),
                staging,
                log,
                commit: job.commit.clone(),
            },
        );
        Ok(())
    }

    /// The outcome of a job whose `result.json` is there.
    fn collect(&mut self, id: &str, f: Flight) -> Result<Finished, SlurmError> {
        self.journal.append(&Line::Ended { job: id.into() })?;
        let path = result_path(&f.staging);
        let parsed: Result<WorkerResult, String> = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_slice(&t).map_err(|e| e.to_string()));
        let result = match parsed {
            Err(e) => Err(format!(
                "job {id}: unreadable result {}: {e}",
                path.display()
            )),
            Ok(r) if r.key != f.key => Err(format!(
                "job {id} computed key {} but {} was expected (not committed)",
                r.key, f.key
            )),
            Ok(r) => match r.error {
                Some(error) => Err(format!("{error} (job {id}, log {})", f.log.display())),
                // committed here, once the staged files are checked against what the job
                // says it wrote (the commit removes the staging folder)
                None => f.commit.commit(
                    self.results,
                    &Staged {
                        out_dir: f.staging.join("out"),
                        seconds: r.seconds,
                        cleanup: f.staging.clone(),
                        written: Some(r.files),
                    },
                ),
            },
        };
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&f.staging);
        }
        Ok(Finished {
            instance: f.instance,
            result,
            reported: false,
        })
    }

    /// The outcome of a job that ended without a result (cancelled, killed, timed out, or
    /// a node that does not see the cache).
    fn vanished(&mut self, id: &str, f: Flight) -> Result<Finished, SlurmError> {
        self.journal.append(&Line::Ended { job: id.into() })?;
        let _ = std::fs::remove_dir_all(&f.staging);
        let (state, exit) = tools::job_state(id).unwrap_or_else(|| ("ENDED".into(), "?".into()));
        let log_tail = std::fs::read_to_string(&f.log).ok().map(|log| {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(4)..].join(" | ")
        });
        let not_visible = exit.starts_with(&format!("{EXIT_CACHE_NOT_VISIBLE}:"));
        if state != "CANCELLED" && (not_visible || log_tail.is_none()) {
            return Err(SlurmError::CacheNotShared {
                job: id.into(),
                stage: f.stage,
                cache: self.cache.clone(),
                detail: match log_tail {
                    Some(tail) => tail,
                    None => format!(
                        "it ended {state} without writing its log {}",
                        f.log.display()
                    ),
                },
            });
        }
        Ok(Finished {
            instance: f.instance,
            result: Err(format!(
                "job {id} ended {state} (exit {exit}) without a result; log {}{}",
                f.log.display(),
                log_tail.map(|t| format!(": {t}")).unwrap_or_default()
            )),
            reported: false,
        })
    }

    /// Cancels every job in flight (they end as failures).
    fn cancel_all(&mut self, why: &str) {
        let ids: Vec<String> = self.in_flight.keys().cloned().collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let cancelled = tools::scancel(&refs);
        if !ids.is_empty() {
            self.ui.line(&format!(
                "{why}: scancel {}{}",
                ids.join(" "),
                cancelled
                    .err()
                    .map(|e| format!(" failed: {e}"))
                    .unwrap_or_default()
            ));
        }
        for id in ids {
            if let Some(f) = self.in_flight.remove(&id) {
                let _ = self.journal.append(&Line::Ended { job: id.clone() });
                self.ended.push_back(Finished {
                    instance: f.instance,
                    result: Err(format!("job {id} cancelled ({why})")),
                    reported: false,
                });
            }
        }
    }
}

impl<'a> StageExecutor<'a> for SlurmExecutor<'a> {
    fn capacity(&self) -> usize {
        self.opts.max_jobs.max(1)
    }

    fn start(&mut self, mut job: Job<'a>) -> Result<(), String> {
        // views the batch job reads from the shared cache
        let inputs = job
            .inputs
            .resolve(self.results)
            .map_err(|e| e.to_string())?;
        self.ui.line(&job.start_line);
        let key = job.key.hex();
        match self.try_reattach(job.instance, &key, &job.commit) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(e.to_string()),
        }
        self.submit(&job, &inputs).map_err(|e| e.to_string())
    }

    fn next_finished(&mut self) -> Result<Option<Finished>, RunError> {
        loop {
            if let Some(f) = self.ended.pop_front() {
                return Ok(Some(f));
            }
            if self.in_flight.is_empty() {
                return Ok(None);
            }
            if !self.interrupted && self.interrupts.received() {
                self.interrupted = true;
                self.cancel_all("interrupted");
                continue;
            }
            let with_result = self
                .in_flight
                .iter()
                .find(|(_, f)| result_path(&f.staging).exists())
                .map(|(id, _)| id.clone());
            if let Some(id) = with_result {
                if let Some(f) = self.in_flight.remove(&id) {
                    return Ok(Some(self.collect(&id, f)?));
                }
            }
            if self.last_squeue.elapsed() >= self.opts.squeue_every {
                self.last_squeue = Instant::now();
                let ids: Vec<&str> = self.in_flight.keys().map(String::as_str).collect();
                let states = tools::squeue(&ids)?;
                let gone: Vec<String> = self
                    .in_flight
                    .keys()
                    .filter(|id| states.get(*id).is_none_or(|s| tools::is_terminal(s)))
                    .cloned()
                    .collect();
                for id in gone {
                    let Some(f) = self.in_flight.remove(&id) else {
                        continue;
                    };
                    // it may have written its result since we looked
                    let finished = match result_path(&f.staging).exists() {
                        true => self.collect(&id, f)?,
                        false => self.vanished(&id, f)?,
                    };
                    self.ended.push_back(finished);
                }
                continue;
            }
            std::thread::sleep(self.opts.poll);
        }
    }

    fn interrupted(&self) -> bool {
        self.interrupted || self.interrupts.received()
    }
}

impl Drop for SlurmExecutor<'_> {
    /// A run that stops on an error cancels the jobs it still waits for.
    fn drop(&mut self) {
        if !self.in_flight.is_empty() {
            self.cancel_all("the run stopped");
        }
    }
}
