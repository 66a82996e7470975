//! The `local` executor: each stage instance runs on one of up to `--jobs` worker threads
//! of this process, in a private temp folder of the cache.
//!
//! The workers live for the whole run and take jobs, one at a time, from a queue the
//! scheduler keeps one job ahead: a thread started and ended for each stage cost, with
//! its stack given back at exit, TLB shootdowns across the cores (expensive interrupts in
//! a VM), and a worker that waited for the scheduler to prepare its next job sat idle a
//! few hundred µs a stage; together a quarter of a cold run of trivial stages (#27).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::thread::Scope;
use std::time::{Duration, Instant};

use super::executor::{compute, end_line, Committed, Finished, Job, StageExecutor, Staged};
use super::interrupts::Interrupts;
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
    /// Set on Ctrl-C or SIGTERM: each running stage stops at its next check (a training
    /// step, a batch; a shell command is stopped) and fails as interrupted.
    cancel: Arc<AtomicBool>,
    interrupts: Interrupts,
    tx: mpsc::Sender<Finished>,
    rx: mpsc::Receiver<Finished>,
    /// Jobs prepared for the workers, taken by whichever is free first.
    queue: Arc<JobQueue<'env>>,
    workers: usize,
    in_flight: usize,
}

/// The jobs waiting for a worker.
struct JobQueue<'env> {
    state: Mutex<QueueState<'env>>,
    /// Signalled when a job is queued or the run ends.
    changed: Condvar,
}

struct QueueState<'env> {
    tasks: VecDeque<Task<'env>>,
    /// Workers waiting for a job.
    idle: usize,
    /// The run is over: workers end once the queue is empty.
    closed: bool,
}

/// A job waiting for a worker.
struct Task<'env> {
    job: Job<'env>,
}

impl<'env> JobQueue<'env> {
    /// The next job, waiting for one; `None` once the run is over.
    fn take(&self) -> Option<Task<'env>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(task) = state.tasks.pop_front() {
                return Some(task);
            }
            if state.closed {
                return None;
            }
            state.idle += 1;
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
        }
    }
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
            interrupts: Interrupts::catch(),
            tx,
            rx,
            queue: Arc::new(JobQueue {
                state: Mutex::new(QueueState {
                    tasks: VecDeque::new(),
                    idle: 0,
                    closed: false,
                }),
                changed: Condvar::new(),
            }),
            workers: 0,
            in_flight: 0,
        }
    }

    /// Starts one more worker.
    fn add_worker(&mut self) {
        let (tx, cancel, cache, ui) = (self.tx.clone(), self.cancel.clone(), self.cache, self.ui);
        let queue = self.queue.clone();
        self.scope.spawn(move || {
            while let Some(task) = queue.take() {
                let instance = task.job.instance;
                // a stage's own panic is caught by `compute`; this is for the commit's, so
                // that the scheduler is never left waiting for a worker that is gone
                let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_task(task, cache, ui, &cancel)
                }))
                .unwrap_or_else(|_| Finished {
                    instance,
                    result: Err("the worker thread panicked while committing".into()),
                    reported: false,
                });
                if tx.send(finished).is_err() {
                    return;
                }
            }
        });
        self.workers += 1;
    }
}

impl Drop for LocalExecutor<'_, '_> {
    /// Ends the workers (the scope joins them).
    fn drop(&mut self) {
        let mut state = self
            .queue
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.closed = true;
        // jobs never taken (the run was interrupted) are dropped, not run
        state.tasks.clear();
        drop(state);
        self.queue.changed.notify_all();
    }
}

/// Runs a job on the worker's thread (so commits run side by side, not one at a time on
/// the scheduler's) and says how it ended.
fn run_task(task: Task<'_>, cache: &Cache, ui: &RunUi, cancel: &Arc<AtomicBool>) -> Finished {
    let Task { job } = task;
    let (instance, inst) = (job.instance, job.inst);
    if cancel.load(Ordering::SeqCst) {
        // queued before the interrupt (the one job beyond `--jobs`): never started, so
        // nothing to say of it
        return Finished {
            instance,
            result: Err("not started: the run was interrupted".into()),
            reported: true,
        };
    }
    let result = run_job(job, cache, ui, cancel);
    // shown here, before this worker takes its next job and shows that one's start; a
    // failure after the interrupt is the interrupt's (a training loop's check of the flag,
    // a shell command's SIGTERM), and the stage's checkpoints stay
    let interrupted = cancel.load(Ordering::SeqCst);
    ui.stage_ended(&end_line(&inst.name, &result, interrupted));
    Finished {
        instance,
        result,
        reported: true,
    }
}

/// Resolves a job's inputs, computes it in its private folder and commits its result.
fn run_job(
    mut job: Job<'_>,
    cache: &Cache,
    ui: &RunUi,
    cancel: &Arc<AtomicBool>,
) -> Result<Committed, String> {
    // its inputs' views and its private folder in the cache, made here: on the
    // scheduler's thread they were a quarter of its time a stage (#27)
    let inputs = job.inputs.resolve(cache).map_err(|e| e.to_string())?;
    let tmp = cache.tmp_dir(&job.key).map_err(|e| e.to_string())?;
    ui.line(&job.start_line);
    let bar = ui.stage_bar(&job.inst.name);
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
            coords: job.inst.coords.to_map(),
            inputs,
            out_dir: out_dir.clone(),
            scratch,
            checkpoint_dir: job.checkpoint_dir,
            progress: Progress::new(bar.clone()),
            device: job.device,
            cancel: cancel.clone(),
            run: job.run,
        };
        result = compute(job.stage, &mut ctx, &job.inst.params.parsed());
    }
    bar.finish_and_clear();
    if result.is_err() {
        super::staging::remove_staging(&tmp);
    }
    let seconds = t0.elapsed().as_secs_f64();
    result.and_then(|()| {
        let staged = Staged {
            out_dir,
            seconds,
            cleanup: tmp,
            written: None,
        };
        job.commit.commit(cache, &staged)
    })
}

impl<'scope, 'env> StageExecutor<'env> for LocalExecutor<'scope, 'env> {
    /// One job more than `--jobs`: it waits queued for the first worker that is free,
    /// which then starts it at once instead of waiting for the scheduler to hand one
    /// over (a gap of a few hundred µs a stage, a sixth of a cold run of trivial stages).
    /// At most `--jobs` run at any time.
    fn capacity(&self) -> usize {
        self.jobs + 1
    }

    fn start(&mut self, job: Job<'env>) -> Result<(), String> {
        let mut state = self
            .queue
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.tasks.push_back(Task { job });
        let needs_worker = state.tasks.len() > state.idle && self.workers < self.jobs;
        drop(state);
        self.queue.changed.notify_one();
        if needs_worker {
            self.add_worker();
        }
        self.in_flight += 1;
        Ok(())
    }

    fn next_finished(&mut self) -> Result<Option<Finished>, RunError> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        // waits in slices, so that a Ctrl-C during a long stage is seen at once
        loop {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(done) => {
                    self.in_flight -= 1;
                    return Ok(Some(done));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.stop_if_interrupted(),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.in_flight -= 1;
                    return Ok(None);
                }
            }
        }
    }

    fn interrupted(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.interrupts.received()
    }
}

impl LocalExecutor<'_, '_> {
    /// On the first Ctrl-C or SIGTERM: tells the running stages to stop and says so; a
    /// second one kills at once (the cache stays sound either way).
    fn stop_if_interrupted(&mut self) {
        if self.cancel.load(Ordering::Relaxed) || !self.interrupts.received() {
            return;
        }
        // the flag first: a shell stage registers its command, then reads the flag
        self.cancel.store(true, Ordering::SeqCst);
        crate::stages::shell::stop_running_commands();
        self.interrupts.release();
        self.ui.line(&format!(
            "interrupted: stopping the {} running stage(s); results already finished stay \
             cached (Ctrl-C again to stop at once)",
            self.in_flight.min(self.jobs)
        ));
    }
}
