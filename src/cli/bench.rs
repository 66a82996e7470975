//! `pipe bench engine --tools`: the same generated DAG as a Snakefile and a dvc.yaml (the
//! same commands, one rule or stage per pipe stage), timed with those tools' command lines
//! where they are installed, beside pipe's figures.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;

use super::bench_engine::{measure, Dag, Step};

/// One timed step of another tool.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ToolFigures {
    pub tool: &'static str,
    /// The tool's command, e.g. `snakemake -n`.
    pub command: String,
    /// The pipe step it compares with.
    pub beside: &'static str,
    pub seconds: f64,
    pub peak_rss_kib: u64,
}

/// The equivalent Snakefile: one rule per stage, `out/<stage>` files.
fn snakefile(dag: &Dag) -> String {
    let mut s = String::from("rule all:\n    input:\n");
    for node in &dag.nodes {
        let _ = writeln!(s, "        \"out/{}\",", node.name);
    }
    for node in &dag.nodes {
        let _ = writeln!(s, "\nrule {}:", node.name);
        if !node.parents.is_empty() {
            s.push_str("    input:\n");
            for &p in &node.parents {
                let _ = writeln!(s, "        \"out/{}\",", dag.nodes[p].name);
            }
        }
        let _ = writeln!(
            s,
            "    output: \"out/{}\"\n    shell: \"echo {} > {{output}}\"",
            node.name, node.text
        );
    }
    s
}

/// The equivalent dvc.yaml.
fn dvc_yaml(dag: &Dag) -> String {
    let mut y = String::from("stages:\n");
    for node in &dag.nodes {
        let _ = writeln!(
            y,
            "  {}:\n    cmd: echo {} > out/{}",
            node.name, node.text, node.name
        );
        if !node.parents.is_empty() {
            let deps: Vec<String> = node
                .parents
                .iter()
                .map(|&p| format!("out/{}", dag.nodes[p].name))
                .collect();
            let _ = writeln!(y, "    deps: [{}]", deps.join(", "));
        }
        let _ = writeln!(y, "    outs: [out/{}]", node.name);
    }
    y
}

/// Whether `program --version` runs.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Times `steps` (pipe step it compares with, program, arguments) of one tool in `dir`.
fn time_tool(
    tool: &'static str,
    dir: &Path,
    steps: &[(&'static str, &str, &[&str])],
) -> Result<Vec<ToolFigures>> {
    let mut out = Vec::new();
    for &(beside, program, args) in steps {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(dir);
        let m = measure(&mut cmd, dir).with_context(|| format!("{tool}: {program}"))?;
        out.push(ToolFigures {
            tool,
            command: format!("{program} {}", args.join(" ")),
            beside,
            seconds: m.seconds,
            peak_rss_kib: m.peak_rss_kib,
        });
    }
    Ok(out)
}

/// Snakemake and dvc on `dag` in `dir`, each skipped (with a line) where not installed.
pub(super) fn compare_tools(
    dag: &Dag,
    dir: &Path,
    pipe_steps: &[Step],
    json: bool,
) -> Result<Vec<ToolFigures>> {
    let mut all = Vec::new();
    let cores = format!("-c{}", num_cpus::get());
    if installed("snakemake") {
        let sm = dir.join("snakemake");
        let _ = std::fs::remove_dir_all(&sm);
        std::fs::create_dir_all(sm.join("out"))?;
        std::fs::write(sm.join("Snakefile"), snakefile(dag))?;
        all.extend(time_tool(
            "snakemake",
            &sm,
            &[
                ("cold run", "snakemake", &[cores.as_str(), "-q"]),
                ("no-op run", "snakemake", &[cores.as_str(), "-q"]),
                ("plan", "snakemake", &["-n", "-q"]),
            ],
        )?);
    } else if !json {
        println!("snakemake: not installed (pip install snakemake), skipped");
    }
    if installed("dvc") && installed("git") {
        let dvc = dir.join("dvc");
        let _ = std::fs::remove_dir_all(&dvc);
        std::fs::create_dir_all(dvc.join("out"))?;
        std::fs::write(dvc.join("dvc.yaml"), dvc_yaml(dag))?;
        time_tool(
            "dvc",
            &dvc,
            &[
                ("init", "git", &["init", "-q"]),
                ("init", "dvc", &["init", "-q"]),
            ],
        )?;
        all.extend(time_tool(
            "dvc",
            &dvc,
            &[
                ("cold run", "dvc", &["repro", "-q"]),
                ("no-op run", "dvc", &["repro", "-q"]),
                ("plan", "dvc", &["status", "-q"]),
            ],
        )?);
    } else if !json {
        println!("dvc: not installed (pip install dvc), skipped");
    }
    if !json {
        for t in &all {
            let ours = pipe_steps.iter().find(|s| s.step == t.beside);
            let ratio = ours.map_or(String::new(), |s| {
                format!("  pipe {:.1}x faster", t.seconds / s.seconds.max(1e-9))
            });
            println!(
                "{:<10} {:<22} {:>9.3} s  peak RSS {:>7.1} MiB{ratio}",
                t.tool,
                t.command,
                t.seconds,
                t.peak_rss_kib as f64 / 1024.0
            );
        }
    }
    Ok(all)
}
