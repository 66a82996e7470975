//! The `local` executor: each stage instance runs on one of up to `--jobs` worker threads
//! of this process, in a private temp folder of the cache.
//!
//! The workers live for the whole run and take one job at a time through their own
//! channel: a thread started and ended for each stage cost, with its stack given back at
//! exit, TLB shootdowns across the cores (expensive interrupts in a VM), about a tenth of
//! a cold run of trivial stages (#27).

use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::thread::Scope;
use std::time::Instant;

use super::executor::{compute, Finished, Job, StageExecutor, Staged};
use super::run::RunError;
use super::ui::RunUi;
use crate::cache::Cache;
use crate::stages::{Progress, StageCtx, StageError};

/// Runs jobs on worker threads of `scope`.
pub struct LocalExecutor<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    cache: &'env Cache,
    ui: &'env RunUi,
    jobs: usize,
    cancel: Arc<AtomicBool>,
    /// Where workers report (with their number).
    tx: mpsc::Sender<(usize, Finished)>,
    rx: mpsc::Receiver<(usize, Finished)>,
    /// Each worker's job channel; dropping them ends the workers.
    workers: Vec<mpsc::Sender<Task<'env>>>,
    /// Workers waiting for a job.
    idle: Vec<usize>,
    in_flight: usize,
}

/// A job with what the scheduler prepared for it.
struct Task<'env> {
    job: Job<'env>,
    /// Its private folder in the cache.
    tmp: std::path::PathBuf,
    bar: indicatif::ProgressBar,
}

impl<'scope, 'env> LocalExecutor<'scope, 'env> {
    /// Up to `jobs` stages at once, on threads of `scope`.
    pub fn new(
        scope: &'scope Scope<'scope, 'env>,
        cache: &'env Cache,
        ui: &'env RunUi,
        jobs: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        LocalExecutor {
            scope,
            cache,
            ui,
            jobs: jobs.max(1),
            cancel: Arc::new(AtomicBool::new(false)),
            tx,
            rx,
            workers: Vec::new(),
            idle: Vec::new(),
            in_flight: 0,
        }
    }

    /// Starts worker number `workers.len()`.
    fn add_worker(&mut self) -> usize {
        let id = self.workers.len();
        let (job_tx, job_rx) = mpsc::channel::<Task<'env>>();
        let (tx, cancel, cache) = (self.tx.clone(), self.cancel.clone(), self.cache);
        self.scope.spawn(move || {
            for task in job_rx {
                let instance = task.job.instance;
                // a stage's own panic is caught by `compute`; this is for the commit's, so
                // that the scheduler is never left waiting for a worker that is gone
                let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_task(task, cache, &cancel)
                }))
                .unwrap_or_else(|_| Finished {
                    instance,
                    result: Err("the worker thread panicked while committing".into()),
                });
                if tx.send((id, finished)).is_err() {
                    return;
                }
            }
        });
        self.workers.push(job_tx);
        id
    }
}

/// Computes a job in its folder and commits its result, on the worker's thread (so
/// commits run side by side, not one at a time on the scheduler's).
fn run_task(task: Task<'_>, cache: &Cache, cancel: &Arc<AtomicBool>) -> Finished {
    let Task { job, tmp, bar } = task;
    let t0 = Instant::now();
    let out_dir = tmp.join("out");
    let scratch = tmp.join("scratch");
    let mut result = std::fs::create_dir_all(&out_dir)
        .and_then(|_| std::fs::create_dir_all(&scratch))
        .map_err(|e| StageError::io(&tmp, e).to_string());
    if result.is_ok() {
        let mut ctx = StageCtx {
            name: job.inst.name.clone(),
            key: job.key.hex(),
            coords: job.inst.coords.clone(),
            inputs: job.inputs,
            out_dir: out_dir.clone(),
            scratch,
            checkpoint_dir: job.checkpoint_dir,
            progress: Progress::new(bar.clone()),
            device: job.device,
            cancel: cancel.clone(),
            run: job.run,
        };
        result = compute(job.stage, &mut ctx, &job.inst.params);
    }
    bar.finish_and_clear();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let result = result.and_then(|()| {
        let staged = Staged {
            out_dir,
            seconds,
            cleanup: tmp,
            written: None,
            committed: false,
        };
        job.commit.commit(cache, &staged)?;
        Ok(Staged {
            committed: true,
            ..staged
        })
    });
    Finished {
        instance: job.instance,
        result,
    }
}

impl<'scope, 'env> StageExecutor<'env> for LocalExecutor<'scope, 'env> {
    fn capacity(&self) -> usize {
        self.jobs
    }

    fn start(&mut self, job: Job<'env>) -> Result<(), String> {
        let tmp = self.cache.tmp_dir(&job.key).map_err(|e| e.to_string())?;
        let bar = self.ui.stage_bar(&job.inst.name);
        let worker = match self.idle.pop() {
            Some(worker) => worker,
            None => self.add_worker(),
        };
        self.workers[worker]
            .send(Task { job, tmp, bar })
            .map_err(|_| "a worker thread ended early".to_string())?;
        self.in_flight += 1;
        Ok(())
    }

    fn next_finished(&mut self) -> Result<Option<Finished>, RunError> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        let done = self.rx.recv().ok().map(|(worker, finished)| {
            self.idle.push(worker);
            finished
        });
        self.in_flight -= 1;
        Ok(done)
    }
}
