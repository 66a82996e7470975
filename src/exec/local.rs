//! The `local` executor: each stage instance runs in a thread of this process, in a
//! private temp folder of the cache, up to `--jobs` at once.

use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::thread::Scope;
use std::time::Instant;

use super::executor::{compute, Finished, Job, StageExecutor, Staged};
use super::run::RunError;
use super::ui::RunUi;
use crate::cache::Cache;
use crate::stages::{Progress, StageCtx, StageError};

/// Runs jobs in scoped threads.
pub struct LocalExecutor<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    cache: &'env Cache,
    ui: &'env RunUi,
    jobs: usize,
    cancel: Arc<AtomicBool>,
    tx: mpsc::Sender<Finished>,
    rx: mpsc::Receiver<Finished>,
    in_flight: usize,
}

impl<'scope, 'env> LocalExecutor<'scope, 'env> {
    /// Up to `jobs` stages at once, in threads of `scope`.
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
            in_flight: 0,
        }
    }
}

impl<'scope, 'env> StageExecutor<'env> for LocalExecutor<'scope, 'env> {
    fn capacity(&self) -> usize {
        self.jobs
    }

    fn start(&mut self, job: Job<'env>) -> Result<(), String> {
        let tmp = self.cache.tmp_dir(&job.key).map_err(|e| e.to_string())?;
        let bar = self.ui.stage_bar(&job.inst.name);
        let tx = self.tx.clone();
        let cancel = self.cancel.clone();
        let cache = self.cache;
        self.in_flight += 1;
        self.scope.spawn(move || {
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
                    cancel,
                    run: job.run,
                };
                result = compute(job.stage, &mut ctx, &job.inst.params);
            }
            bar.finish_and_clear();
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            let seconds = t0.elapsed().as_secs_f64();
            // committed here, beside the other workers, not one at a time by the scheduler
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
            let _ = tx.send(Finished {
                instance: job.instance,
                result,
            });
        });
        Ok(())
    }

    fn next_finished(&mut self) -> Result<Option<Finished>, RunError> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        let done = self.rx.recv().ok();
        self.in_flight -= 1;
        Ok(done)
    }
}
