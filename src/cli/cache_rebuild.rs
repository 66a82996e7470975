//! `pipe cache rebuild-index`: a damaged index rebuilt from the results themselves.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::cache::Cache;

/// Rebuilds the index of the cache at `root`; prints what was recovered and what was not.
pub(super) fn rebuild_index_command(root: &Path) -> Result<ExitCode> {
    let (_cache, rebuilt) = Cache::rebuild_index(root)?;
    if let Some(old) = &rebuilt.old_index {
        println!("the old index is kept at {}", old.display());
    }
    for s in &rebuilt.skipped {
        println!(
            "not recovered: {} ({}): {}",
            s.stage,
            s.key.get(..12).unwrap_or(&s.key),
            s.why
        );
    }
    println!(
        "recovered {} result(s), {} not recovered (their stages will run again)",
        rebuilt.recovered,
        rebuilt.skipped.len()
    );
    Ok(ExitCode::SUCCESS)
}
