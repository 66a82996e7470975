//! Planning and running: keys for every instance, what must run and why, and a
//! scheduler that hands ready stages to an executor (`local` threads or `slurm` jobs)
//! and commits each result atomically.

mod commit;
mod executor;
mod inputs;
mod interrupts;
mod local;
mod plan;
mod reason;
mod run;
pub mod slurm;
mod staging;
mod ui;
mod waiting;

pub use executor::{Executor, Finished, Job, StageExecutor, Staged};
pub use plan::{plan, Plan, PlanItem, PlanOptions, Status};
pub use reason::{reasons_text, Reasons, RunReason};
pub use run::{run_plan, RunError, RunOptions, RunSummary, StageOutcome};
