//! The `pipe` command: parses arguments and hands them to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    pipe::cli::main(pipe::cli::Cli::parse())
}
