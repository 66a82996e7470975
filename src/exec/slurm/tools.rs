//! Calls to Slurm's command-line tools (`sbatch`, `squeue`, `scontrol`, `scancel`), and
//! `resources:` as `sbatch` flags.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use super::SlurmError;
use crate::pipeline::Resources;

/// Job states after which a job never runs again (`squeue -t all`).
const TERMINAL: &[&str] = &[
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
    "REVOKED",
    "SPECIAL_EXIT",
];

/// Whether a job in `state` has ended.
pub fn is_terminal(state: &str) -> bool {
    TERMINAL.contains(&state)
}

fn run(tool: &str, cmd: &mut Command) -> Result<String, SlurmError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SlurmError::Tool {
            tool: tool.into(),
            detail: match source.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "not found on PATH: --executor slurm needs Slurm's commands \
                     (scripts/slurm-local.sh sets up a one-machine cluster): {source}"
                ),
                _ => source.to_string(),
            },
        })?;
    if !out.status.success() {
        return Err(SlurmError::Tool {
            tool: tool.into(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// `sbatch` flags for `resources`.
pub fn resource_flags(r: &Resources) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(n) = r.cpus {
        flags.push(format!("--cpus-per-task={n}"));
    }
    if let Some(m) = &r.mem {
        flags.push(format!("--mem={m}"));
    }
    if let Some(n) = r.gpus {
        flags.push(format!("--gres=gpu:{n}"));
    }
    if let Some(t) = &r.time {
        flags.push(format!("--time={t}"));
    }
    if let Some(p) = &r.partition {
        flags.push(format!("--partition={p}"));
    }
    flags.extend(r.extra.iter().cloned());
    flags
}

/// What one job is submitted with.
pub struct Submission<'a> {
    /// `pipe:<stage cell>`.
    pub name: &'a str,
    pub script: &'a Path,
    /// The job's log (`%j` is the job id).
    pub output: &'a Path,
    /// Working directory of the job (the controller's).
    pub chdir: &'a Path,
    pub resources: &'a Resources,
}

/// Submits a batch job; returns its id.
pub fn sbatch(s: &Submission) -> Result<String, SlurmError> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable")
        .arg(format!("--job-name={}", s.name))
        .arg(format!("--output={}", s.output.display()))
        .arg(format!("--chdir={}", s.chdir.display()))
        .arg("--export=ALL")
        .args(resource_flags(s.resources))
        .arg(s.script);
    let out = run("sbatch", &mut cmd)?;
    // `--parsable`: `id` or `id;cluster`
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SlurmError::Tool {
            tool: "sbatch".into(),
            detail: format!("unexpected output `{}`", out.trim()),
        });
    }
    Ok(id)
}

/// The states of those of `ids` Slurm still knows (a job it has forgotten is absent).
pub fn squeue(ids: &[&str]) -> Result<BTreeMap<String, String>, SlurmError> {
    let mut states = BTreeMap::new();
    if ids.is_empty() {
        return Ok(states);
    }
    let out = run(
        "squeue",
        Command::new("squeue")
            .args(["-h", "-t", "all", "-o", "%i %T", "-j"])
            .arg(ids.join(",")),
    );
    let out = match out {
        Ok(out) => out,
        // every id forgotten: squeue refuses the list
        Err(SlurmError::Tool { detail, .. }) if detail.contains("Invalid job id") => {
            return Ok(states)
        }
        Err(e) => return Err(e),
    };
    for line in out.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(id), Some(state)) = (parts.next(), parts.next()) {
            states.insert(id.to_string(), state.to_string());
        }
    }
    Ok(states)
}

/// `JobState` and `ExitCode` of a job Slurm still knows (`scontrol show job`).
pub fn job_state(id: &str) -> Option<(String, String)> {
    let out = run(
        "scontrol",
        Command::new("scontrol").args(["show", "job", "-o", id]),
    )
    .ok()?;
    let field = |name: &str| {
        out.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .map(str::to_string)
    };
    Some((field("JobState=")?, field("ExitCode=").unwrap_or_default()))
}

/// Cancels jobs (best effort: a job that already ended is not an error).
pub fn scancel(ids: &[&str]) -> Result<(), SlurmError> {
    if ids.is_empty() {
        return Ok(());
    }
    run("scancel", Command::new("scancel").args(ids)).map(|_| ())
}

/// Checks that `sbatch` answers (before anything is submitted).
pub fn check_available() -> Result<(), SlurmError> {
    run("sbatch", Command::new("sbatch").arg("--version")).map(|_| ())
}

/// `text` quoted for `sh`.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_become_sbatch_flags() {
        let r: Resources = serde_yaml::from_str(
            "{cpus: 8, mem: 32G, gpus: 1, time: \"04:00:00\", partition: gpu, extra: [--qos=high]}",
        )
        .unwrap();
        assert_eq!(
            resource_flags(&r),
            [
                "--cpus-per-task=8",
                "--mem=32G",
                "--gres=gpu:1",
                "--time=04:00:00",
                "--partition=gpu",
                "--qos=high"
            ]
        );
        assert!(resource_flags(&Resources::default()).is_empty());
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b c"), r"'a'\''b c'");
    }
}
