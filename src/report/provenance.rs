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
}

impl Provenance {
    /// Provenance of a run of `pipeline` with `profile` on `device` (e.g. `cpu`, `cuda:0`),
    /// rendered by this build of `pipe`.
    pub fn for_run(pipeline: &str, profile: Option<&str>, device: &str) -> Provenance {
        Provenance {
            pipeline: pipeline.to_string(),
            profile: profile.map(str::to_string),
            pipe_commit: Self::pipe_commit_of_this_build(),
            backend: format!("{} / {device}", crate::model::backend_name(device)),
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
