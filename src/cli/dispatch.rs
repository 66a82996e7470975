//! The dispatcher: each subcommand's arguments to the function (one file each) that runs
//! it. `dag` and `kinds`, a few lines each, are here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::args::{BenchWhat, Cli, Command, DagFormatArg};
use super::context::load;
use crate::graph::{self, DagFormat};
use crate::report::diff::DiffSelection;
use crate::stages::StageRegistry;

/// Runs the command `cli` names.
pub(super) fn dispatch(cli: Cli) -> Result<ExitCode> {
    crate::timings::start();
    let registry = StageRegistry::builtin();
    match cli.command {
        Command::Run(opts) => super::run::run_command(&cli.cache, opts, &registry),
        Command::ExecStage { spec } => Ok(super::exec_stage::exec_stage_command(&spec, &registry)),
        Command::Plan(opts) => super::plan::plan_command(&cli.cache, opts, &registry),
        Command::Dag { target, format } => {
            let loaded = load(&target.pipeline, target.profile.as_deref(), &registry)?;
            let format = match format {
                DagFormatArg::Mermaid => DagFormat::Mermaid,
                DagFormatArg::Dot => DagFormat::Dot,
            };
            print!("{}", graph::draw(&loaded.pipeline, &loaded.graph, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache { action } => {
            super::cache_command::cache_command(&cli.cache, action, &registry)
        }
        Command::Kinds => {
            for k in registry.kinds() {
                let inputs = registry.get(k).map(|e| e.inputs().describe());
                println!("{k:<20} inputs: {}", inputs.unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats {
            target,
            stage,
            json,
        } => super::stats::stats_command(&cli.cache, &target, &stage, json, &registry),
        Command::Show {
            target,
            stage,
            file,
            results,
        } => super::show::show_command(
            &cli.cache,
            &target,
            &stage,
            file.as_deref(),
            &results.device,
            &registry,
        ),
        Command::Report {
            target,
            output,
            results,
        } => super::report::report_command(
            &cli.cache,
            &target,
            output.as_deref(),
            &results.device,
            &registry,
        ),
        Command::Diff {
            pipeline,
            a,
            b,
            inputs,
            metrics,
            over,
            results,
        } => {
            let options = super::report::DiffOptions {
                profiles: [a, b],
                selection: DiffSelection { inputs, metrics },
                over,
                device: results.device,
            };
            super::report::diff_command(&cli.cache, &pipeline, &options, &registry)
        }
        Command::Encode {
            model,
            json,
            device,
            text,
        } => {
            if !json {
                bail!("only --json output is supported: pass --json");
            }
            super::encode::encode_command(&cli.cache, &model, &text, &device)
        }
        Command::Bench { what } => match what {
            BenchWhat::Engine(opts) => super::bench_engine::bench_engine(&opts),
            BenchWhat::Train(opts) => super::bench_train::bench_train(&opts),
            BenchWhat::Epoch {
                model,
                data,
                examples,
                json,
            } => super::bench_train::bench_epoch(&model, &data, examples, json),
            BenchWhat::Multitask {
                model,
                data,
                examples,
                repeat,
                json,
            } => {
                let data = if data.is_empty() {
                    super::bench_multitask::DEFAULT_TASKS
                        .iter()
                        .map(PathBuf::from)
                        .collect()
                } else {
                    data
                };
                super::bench_multitask::bench_multitask(&model, &data, examples, repeat, json)
            }
        },
    }
}
