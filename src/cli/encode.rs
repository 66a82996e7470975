//! `pipe encode`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

pub(super) fn encode_command(_cache: &Path, _model: &str, _text: &str) -> Result<ExitCode> {
    bail!("`pipe encode` is not implemented yet")
}
