//! Planning and running: keys for every instance, what must run and why, and a
//! parallel scheduler that commits each result atomically.

mod plan;
mod reason;
mod run;
mod ui;

pub use plan::{plan, Plan, PlanItem, PlanOptions, Status};
pub use reason::{reasons_text, RunReason};
pub use run::{run_plan, RunOptions, RunSummary, StageOutcome};
