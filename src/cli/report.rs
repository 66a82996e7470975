//! `pipe report` and `pipe diff`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::args::PipelineArgs;
use crate::stages::StageRegistry;

pub(super) fn report_command(
    _cache: &Path,
    _target: &PipelineArgs,
    _output: Option<&Path>,
    _registry: &StageRegistry,
) -> Result<ExitCode> {
    bail!("`pipe report` is not implemented yet")
}

pub(super) fn diff_command(
    _cache: &Path,
    _pipeline: &Path,
    _a: &str,
    _b: &str,
    _registry: &StageRegistry,
) -> Result<ExitCode> {
    bail!("`pipe diff` is not implemented yet")
}
