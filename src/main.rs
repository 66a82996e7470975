//! The `pipe` command: parses arguments and hands them to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    pipe::allocator::tune_for_training();
    pipe::cli::main(pipe::cli::Cli::parse())
}
