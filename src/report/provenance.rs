//! Where a report's numbers come from: pipeline, profile, `pipe` commit, backend, and the
//! stage key of every result (so a reader can rerun exactly that cell).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::ResultRow;

/// Run-level provenance printed at the end of every report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Pipeline file, as given on the command line.
    pub pipeline: String,
    /// Profile name (`None`: no profile).
    pub profile: Option<String>,
    /// Git commit of the `pipe` build that rendered the report.
    pub pipe_commit: String,
    /// Compute backend and device of the results (e.g. `flex / cpu`).
    pub backend: String,
    /// The training stages' precisions, when any is not f32 (see [`precision_summary`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

/// Stage kinds whose `precision` param sets the type of the encoder's matrix products.
const TRAINING_KINDS: [&str; 4] = ["finetune", "multitask", "pretrain", "probe"];

/// How many training stages of `instances` run in each precision (`bf16 (4 stages), f32
/// (2 stages)`), or `None` when every one runs in f32 (what every result made before the
/// setting existed used, so their reports stay as they were).
pub fn precision_summary(instances: &[crate::pipeline::StageInstance]) -> Option<String> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for inst in instances
        .iter()
        .filter(|i| TRAINING_KINDS.contains(&&*i.kind))
    {
        let precision = inst
            .params
            .get("precision")
            .and_then(|v| v.as_str())
            .unwrap_or("f32");
        *counts.entry(precision.to_string()).or_default() += 1;
    }
    if counts.keys().all(|p| p == "f32") {
        return None;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(p, n)| format!("{p} ({n} stage{})", if *n == 1 { "" } else { "s" }))
        .collect();
    Some(parts.join(", "))
}

impl Provenance {
    /// Provenance of the run `run` on `device` (e.g. `cpu`, `cuda:0`), rendered by this
    /// build of `pipe`.
    pub fn for_run(run: &crate::stages::RunInfo, device: &str) -> Provenance {
        Provenance {
            pipeline: run.pipeline.clone(),
            profile: run.profile.clone(),
            pipe_commit: Self::pipe_commit_of_this_build(),
            backend: format!("{} / {device}", crate::model::backend_name(device)),
            precision: run.precision.clone(),
        }
    }

    /// The git commit of this build of `pipe`: `PIPE_GIT_COMMIT` at compile time if the
    /// build set it, else `git describe --always --dirty` in the source tree it was built
    /// from, else `unknown`.
    pub fn pipe_commit_of_this_build() -> String {
        if let Some(commit) = option_env!("PIPE_GIT_COMMIT") {
            return commit.to_string();
        }
        let described = std::process::Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR")])
            .args(["describe", "--always", "--dirty", "--abbrev=12"])
            .output();
        match described {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
            _ => format!("unknown (pipe {})", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The provenance section: run facts, then each result's stage and key.
    pub fn section(&self, rows: &[ResultRow]) -> String {
        let mut s = String::new();
        let profile = self.profile.as_deref().unwrap_or("(none)");
        let _ = writeln!(s, "## Provenance\n");
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| pipeline | `{}` |", self.pipeline);
        let _ = writeln!(s, "| profile | `{profile}` |");
        let _ = writeln!(s, "| pipe commit | `{}` |", self.pipe_commit);
        let _ = writeln!(s, "| backend / device | {} |", self.backend);
        if let Some(precision) = &self.precision {
            let _ = writeln!(
                s,
                "| precision of the encoder's products | {precision} (mixed: f32 weights) |"
            );
        }
        let _ = writeln!(s, "| results | {} |", rows.len());
        if rows.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "\n<details><summary>Stage key of each result \
             (rerun one with <code>pipe run {} --only STAGE</code>)</summary>\n",
            self.pipeline
        );
        let _ = writeln!(s, "| input | stage | key |\n|---|---|---|");
        for r in rows {
            let _ = writeln!(s, "| {} | `{}` | `{}` |", r.input, r.stage, r.key);
        }
        let _ = writeln!(s, "\n</details>");
        s
    }
}
