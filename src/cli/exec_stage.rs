//! `pipe exec-stage` (hidden): one stage instance inside a Slurm job.

use std::path::Path;
use std::process::ExitCode;

use super::exit::Exit;
use crate::exec;
use crate::stages::StageRegistry;

/// `pipe exec-stage SPEC` (inside a Slurm job): 0 when the stage succeeded, 1 when it
/// failed (its error is in the result the controller reads), 3 when this node cannot see
/// the cache folder, 4 for any other error.
pub(super) fn exec_stage_command(spec: &Path, registry: &StageRegistry) -> ExitCode {
    match exec::slurm::exec_stage(spec, registry) {
        Ok(true) => Exit::Success.code(),
        Ok(false) => Exit::StageFailed.code(),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_status() as u8)
        }
    }
}
