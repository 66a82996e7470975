//! `pipe encode`: encodes a text with a BERT checkpoint and prints its states as JSON.
//! A remote checkpoint is fetched through a one-stage pipeline, so it lands in (and is
//! reused from) the cache like any `fetch` stage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::context::{load, plan_everything, run_quietly};
use crate::cache::Cache;
use crate::exec::{self, Status};
use crate::model::device::DeviceSpec;
use crate::stages::StageRegistry;

/// The checkpoint directory for `source` (local dirs as they are; others via the cache).
fn checkpoint_dir(cache_root: &Path, source: &str) -> Result<PathBuf> {
    if let Some(local) = source.strip_prefix("path:") {
        return Ok(PathBuf::from(local));
    }
    let registry = StageRegistry::builtin();
    let dir = std::env::temp_dir().join(format!("pipe-encode-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("encode.yaml");
    let quoted = serde_json::to_string(source)?;
    std::fs::write(
        &file,
        format!("stages:\n  model:\n    kind: fetch\n    params:\n      source: {quoted}\n"),
    )?;
    let loaded = load(&file, None, &registry)?;
    let cache = Cache::open(cache_root)?;
    let plan = plan_everything(&loaded, &cache, "cpu")?;
    if plan.items[0].status == Status::Run {
        let summary = run_quietly(&loaded, &plan, &cache, &registry)?;
        if summary.failed() > 0 {
            let why = summary
                .outcomes
                .iter()
                .flatten()
                .find_map(|o| match o {
                    exec::StageOutcome::Failed { error } => Some(error.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            bail!("fetching {source}: {why}");
        }
    }
    let view = cache.materialize(&plan.items[0].key)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(view)
}

pub(super) fn encode_command(
    cache: &Path,
    model: &str,
    text: &str,
    device: &str,
) -> Result<ExitCode> {
    let device = DeviceSpec::parse(device)?;
    let dir = checkpoint_dir(cache, model)?;
    let value = crate::model::encode_json(&dir, text, device)
        .with_context(|| format!("encoding with the checkpoint in {}", dir.display()))?;
    println!("{}", serde_json::to_string(&value)?);
    Ok(ExitCode::SUCCESS)
}
