//! The command-line front end: each subcommand loads what it needs from the library and
//! prints for people (or JSON). Errors get their context here, at the edge.

mod args;
mod bench;
mod bench_engine;
mod bench_machine;
mod bench_multitask;
mod bench_train;
mod cache_command;
mod cache_rebuild;
mod cache_remote;
mod context;
mod dispatch;
mod encode;
mod exec_stage;
mod exit;
mod plan;
mod report;
mod run;
mod show;
mod stats;

pub use args::{
    BenchWhat, CacheAction, Cli, Command, DagFormatArg, EngineShape, PipelineArgs, ResultsDevice,
};
pub use exit::{Exit, EXIT_CODES_HELP};

use std::process::ExitCode;

/// Runs one parsed command line; prints errors; returns the process exit code.
pub fn main(mut cli: Cli) -> ExitCode {
    exit_quietly_on_closed_pipe();
    crate::allocator::tune_for_engine();
    // Stages run in scratch folders of their own: every path they are given ($PIPE_OUT,
    // $PIPE_IN_*) must be absolute, so the cache's is made absolute once, here.
    if let Ok(cache) = std::path::absolute(&cli.cache) {
        cli.cache = cache;
    }
    // A bad PIPE_SIMD is refused before anything runs (the kernels themselves would only
    // ignore it).
    if let Err(e) = crate::model::fused::SimdLevel::requested() {
        eprintln!("error: {e}");
        return Exit::BadInput.code();
    }
    crate::pipeline::set_max_cells(cli.max_cells);
    match dispatch::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::of(&e).code()
        }
    }
}

/// `pipe show … | head` should end like any Unix tool when the reader goes away, not
/// panic in `println!`: Rust ignores SIGPIPE by default, so restore the default action.
fn exit_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any thread is spawned; setting a signal's
    // disposition to the default has no other effect on the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
