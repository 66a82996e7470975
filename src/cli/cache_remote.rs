//! `pipe cache push | pull`: a pipeline's results to and from a results remote
//! ([`crate::cache::Remote`]).

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::args::PipelineArgs;
use super::cache_command::human_bytes;
use super::context::CommandContext;
use super::exit::Exit;
use crate::cache::{Pulled, Pushed, Remote};
use crate::exec::Status;
use crate::pipeline::StageInstance;
use crate::stages::report::ReportStage;
use crate::stages::{Stage, StageRegistry};

/// What `pipe cache push` is asked to do.
pub(super) struct PushOptions<'a> {
    pub target: &'a PipelineArgs,
    pub to: &'a Path,
    pub only: Vec<String>,
    pub max_size: Option<u64>,
    pub device: &'a str,
}

/// What `pipe cache pull` is asked to do.
pub(super) struct PullOptions<'a> {
    pub target: &'a PipelineArgs,
    pub from: &'a Path,
    pub only: Vec<String>,
    pub device: &'a str,
}

/// Stage names of one outcome, for the summary (a few named, then a count).
#[derive(Default)]
struct Named {
    names: Vec<String>,
    bytes: u64,
}

impl Named {
    fn add(&mut self, name: &str, bytes: u64) {
        self.names.push(name.to_string());
        self.bytes += bytes;
    }

    /// Prints `  N {what}: a, b, c and 4 more` when there are any.
    fn say(&self, what: &str) {
        if !self.names.is_empty() {
            println!("  {} {what}: {}", self.names.len(), self.some());
        }
    }

    /// `a, b, c and 4 more`
    fn some(&self) -> String {
        const SHOWN: usize = 3;
        let mut text = self.names[..self.names.len().min(SHOWN)].join(", ");
        if self.names.len() > SHOWN {
            text += &format!(" and {} more", self.names.len() - SHOWN);
        }
        text
    }
}

/// `1 result`, `2 results`
fn results(n: usize) -> String {
    match n {
        1 => "1 result".into(),
        n => format!("{n} results"),
    }
}

pub(super) fn push_command(
    cache_root: &Path,
    opts: PushOptions,
    registry: &StageRegistry,
) -> Result<ExitCode> {
    let ctx = CommandContext::reading(cache_root, opts.target, registry)?;
    let plan = ctx.plan(opts.only, Vec::new(), opts.device)?;
    let remote = Remote::for_push(opts.to)?;
    let read_by_reports = read_by_reports(&ctx.loaded.pipeline.instances);
    let mut reports_lose = Named::default();
    let (mut copied, mut there) = (Named::default(), Named::default());
    let (mut over, mut absent) = (Named::default(), Named::default());
    let mut not_needed = Named::default();
    let mut damaged = 0;
    for item in &plan.items {
        let name = &ctx.loaded.pipeline.instances[item.instance].name;
        match item.status {
            Status::NotSelected => continue,
            Status::Run => {
                absent.add(name, 0);
                continue;
            }
            Status::NotNeeded => {
                not_needed.add(name, 0);
                continue;
            }
            Status::Cached => {}
        }
        match remote.push(&ctx.cache, &item.key, opts.max_size) {
            Ok(Pushed::Copied { bytes }) => {
                println!("pushed  {name} ({})", human_bytes(bytes));
                copied.add(name, bytes);
            }
            Ok(Pushed::AlreadyThere) => there.add(name, 0),
            Ok(Pushed::OverLimit { bytes }) => {
                over.add(&format!("{name} ({})", human_bytes(bytes)), bytes);
                if read_by_reports.contains(&item.instance) {
                    reports_lose.add(name, bytes);
                }
            }
            Ok(Pushed::NotCached) => absent.add(name, 0),
            Err(e) if e.is_damage() => {
                damaged += 1;
                println!("not pushed: {name}: {e}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!(
        "pushed {} ({}) to {}",
        results(copied.names.len()),
        human_bytes(copied.bytes),
        remote.root().display()
    );
    if !there.names.is_empty() {
        println!("  {} already there", there.names.len());
    }
    let limit = human_bytes(opts.max_size.unwrap_or(0));
    over.say(&format!("over --max-size {limit}, left out"));
    if !reports_lose.names.is_empty() {
        println!(
            "  hint: a report reads {} of them itself ({}), so a cache pulled from this \
             remote renders those rows as \"—\"; bind the report to a `summary` of each \
             (`kind: summary, inputs: {{of: STAGE}}`: its metrics, history and stats, a few KiB; \
             `params: {{files: [FIGURE]}}` adds a file the report embeds)",
            reports_lose.names.len(),
            reports_lose.some()
        );
    }
    absent.say("not cached here (run them first)");
    not_needed.say("not cached here, and not needed by the results that are");
    ctx.finish(plan);
    Ok(exit_code(damaged))
}

pub(super) fn pull_command(
    cache_root: &Path,
    opts: PullOptions,
    registry: &StageRegistry,
) -> Result<ExitCode> {
    let remote = Remote::for_pull(opts.from)?;
    let ctx = CommandContext::running(cache_root, opts.target, registry)?;
    let plan = ctx.plan(opts.only, Vec::new(), opts.device)?;
    let (mut copied, mut cached, mut missing) = (Named::default(), 0usize, Named::default());
    let mut damaged = 0;
    for item in &plan.items {
        let name = &ctx.loaded.pipeline.instances[item.instance].name;
        match item.status {
            Status::NotSelected => continue,
            Status::Cached => {
                cached += 1;
                continue;
            }
            // a pull copies what it can, needed by a run or not
            Status::Run | Status::NotNeeded => {}
        }
        match remote.pull(&ctx.cache, &item.key)? {
            Pulled::Copied { bytes } => {
                println!("pulled  {name} ({})", human_bytes(bytes));
                copied.add(name, bytes);
            }
            Pulled::AlreadyCached => cached += 1,
            Pulled::NotInRemote => missing.add(name, 0),
            Pulled::Damaged(why) => {
                damaged += 1;
                println!("not pulled: {name}: the remote's copy is damaged: {why}");
            }
        }
    }
    println!(
        "pulled {} ({}) from {}",
        results(copied.names.len()),
        human_bytes(copied.bytes),
        remote.root().display()
    );
    if cached > 0 {
        println!("  {cached} already cached");
    }
    missing.say("not in the remote (`pipe run` computes them)");
    ctx.finish(plan);
    Ok(exit_code(damaged))
}

/// The instances some `report` stage binds as an input.
fn read_by_reports(instances: &[StageInstance]) -> HashSet<usize> {
    instances
        .iter()
        .filter(|i| &*i.kind == ReportStage::KIND)
        .flat_map(|i| i.inputs.values().flatten().map(|input| input.instance))
        .collect()
}

/// Success, or [`Exit::StageFailed`] when `damaged` results were left out.
fn exit_code(damaged: usize) -> ExitCode {
    match damaged {
        0 => ExitCode::SUCCESS,
        _ => Exit::StageFailed.code(),
    }
}
