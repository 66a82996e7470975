//! `pipe bench engine`: engine overhead on a generated pipeline of cheap `shell` stages
//! (fan-out, fan-in, 5 levels deep). Prints figures; it is a benchmark, not a test.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};

use super::commands::{load, plan_everything, run_quietly};
use crate::cache::Cache;
use crate::exec;
use crate::stages::StageRegistry;

/// Level sizes for `n` stages: 1 root, fan-out to 1% and 9%, the bulk, then a 10% fan-in.
fn levels(n: usize) -> [usize; 5] {
    let l1 = (n / 100).max(1);
    let l2 = (n * 9 / 100).max(1);
    let l4 = (n / 10).max(1);
    let l3 = n.saturating_sub(1 + l1 + l2 + l4).max(1);
    [1, l1, l2, l3, l4]
}

/// Writes the generated pipeline (and `leaf_tag` into one leaf's command).
fn write_pipeline(path: &Path, n: usize, leaf_tag: &str) -> Result<()> {
    let sizes = levels(n);
    let mut y = String::from("stages:\n");
    let name = |l: usize, i: usize| format!("l{l}_{i}");
    for (l, &size) in sizes.iter().enumerate() {
        for i in 0..size {
            let tag = if l == 4 && i == 0 { leaf_tag } else { "" };
            writeln!(y, "  {}:\n    kind: shell", name(l, i))?;
            writeln!(
                y,
                "    params:\n      cmd: \"echo {l}-{i}{tag} > o\"\n      outs: [o]"
            )?;
            if l > 0 {
                let parents: Vec<String> = if l == 4 {
                    // Fan-in: each reads 8 stages of level 3.
                    (0..8).map(|k| name(3, (i * 8 + k) % sizes[3])).collect()
                } else {
                    vec![name(l - 1, i % sizes[l - 1])]
                };
                writeln!(y, "    inputs:\n      up: [{}]", parents.join(", "))?;
            }
        }
    }
    std::fs::write(path, y).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

struct Timing {
    seconds: f64,
    ran: usize,
    cached: usize,
}

fn run_once(
    file: &Path,
    cache_dir: &Path,
    registry: &StageRegistry,
    plan_only: bool,
) -> Result<Timing> {
    let t0 = Instant::now();
    let loaded = load(file, None, registry)?;
    let cache = Cache::open(cache_dir)?;
    let plan = plan_everything(&loaded, &cache, "cpu")?;
    if plan_only {
        let ran = plan
            .items
            .iter()
            .filter(|i| i.status == exec::Status::Run)
            .count();
        return Ok(Timing {
            seconds: t0.elapsed().as_secs_f64(),
            ran,
            cached: plan.items.len() - ran,
        });
    }
    let summary = run_quietly(&loaded, &plan, &cache, registry)?;
    Ok(Timing {
        seconds: t0.elapsed().as_secs_f64(),
        ran: summary.ran(),
        cached: summary.cached(),
    })
}

/// Times `cmd` in `dir`, returning seconds (None if it fails to start or exits nonzero).
fn time_command(dir: &Path, cmd: &str) -> Option<f64> {
    let t0 = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| t0.elapsed().as_secs_f64())
}

/// The equivalent dvc.yaml (same DAG, same commands).
fn write_dvc(dir: &Path, n: usize) -> Result<()> {
    let sizes = levels(n);
    let mut y = String::from("stages:\n");
    let name = |l: usize, i: usize| format!("l{l}_{i}");
    for (l, &size) in sizes.iter().enumerate() {
        for i in 0..size {
            let me = name(l, i);
            let deps: Vec<String> = match l {
                0 => vec![],
                4 => (0..8)
                    .map(|k| format!("out/{}", name(3, (i * 8 + k) % sizes[3])))
                    .collect(),
                _ => vec![format!("out/{}", name(l - 1, i % sizes[l - 1]))],
            };
            writeln!(y, "  {me}:\n    cmd: echo {l}-{i} > out/{me}")?;
            if !deps.is_empty() {
                writeln!(y, "    deps: [{}]", deps.join(", "))?;
            }
            writeln!(y, "    outs: [out/{me}]")?;
        }
    }
    std::fs::create_dir_all(dir.join("out"))?;
    std::fs::write(dir.join("dvc.yaml"), y)?;
    Ok(())
}

pub(super) fn bench_engine(n: usize, dvc: bool) -> Result<ExitCode> {
    let registry = StageRegistry::builtin();
    let dir: PathBuf = std::env::temp_dir().join(format!("pipe-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("bench.yaml");
    let cache_dir = dir.join("cache");
    write_pipeline(&file, n, "")?;
    println!(
        "engine benchmark: {n} shell stages, levels {:?}, {} cores",
        levels(n),
        num_cpus::get()
    );

    let cold = run_once(&file, &cache_dir, &registry, false)?;
    println!(
        "cold run            {:>8.3} s   (ran {}, cached {})",
        cold.seconds, cold.ran, cold.cached
    );
    let noop = run_once(&file, &cache_dir, &registry, false)?;
    println!(
        "no-op rerun         {:>8.3} s   (ran {}, cached {})  target < 0.3 s",
        noop.seconds, noop.ran, noop.cached
    );
    let plan = run_once(&file, &cache_dir, &registry, true)?;
    println!(
        "plan                {:>8.3} s   (to run {}, cached {})  target < 0.3 s",
        plan.seconds, plan.ran, plan.cached
    );
    write_pipeline(&file, n, " changed")?;
    let (cold_pipe, noop_pipe, plan_pipe) = (cold.seconds, noop.seconds, plan.seconds);
    let leaf = run_once(&file, &cache_dir, &registry, false)?;
    println!(
        "leaf param change   {:>8.3} s   (ran {}, cached {})",
        leaf.seconds, leaf.ran, leaf.cached
    );

    if dvc {
        let dvc_dir = dir.join("dvc");
        std::fs::create_dir_all(&dvc_dir)?;
        write_dvc(&dvc_dir, n)?;
        let init = time_command(&dvc_dir, "git init -q && dvc init -q");
        if init.is_none() {
            println!("dvc: not available (pip install dvc), skipped");
        } else {
            let cold = time_command(&dvc_dir, "dvc repro -q");
            let noop = time_command(&dvc_dir, "dvc repro -q");
            let status = time_command(&dvc_dir, "dvc status -q");
            let show = |label: &str, d: Option<f64>, ours: f64| match d {
                Some(s) => println!(
                    "dvc {label:<16}{s:>8.3} s   pipe is {:.1}x faster",
                    s / ours.max(1e-9)
                ),
                None => println!("dvc {label:<16}  failed"),
            };
            show("cold repro", cold, cold_pipe);
            show("no-op repro", noop, noop_pipe);
            show("status", status, plan_pipe);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}
