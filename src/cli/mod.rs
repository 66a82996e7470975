//! The command-line front end: each subcommand loads what it needs from the library and
//! prints for people (or JSON). Errors get their context here, at the edge.

mod args;
mod bench;
mod bench_train;
mod commands;
mod encode;
mod report;

pub use args::{BenchWhat, CacheAction, Cli, Command, DagFormatArg, PipelineArgs};

use std::process::ExitCode;

/// Runs one parsed command line; prints errors; returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
