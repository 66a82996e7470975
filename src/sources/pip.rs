//! `pip:` sources: the wheel is fetched with the machine's own
//! `python3 -m pip download --no-deps --only-binary=:all:`, so its registry settings
//! (index URL, proxy, certificates) apply.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::SourceError;

/// Downloads the wheel of `name==version` into `dir` and returns its path.
pub fn download_wheel(name: &str, version: &str, dir: &Path) -> Result<PathBuf, SourceError> {
    std::fs::create_dir_all(dir).map_err(|e| SourceError::io(dir, e))?;
    let spec = format!("{name}=={version}");
    let python = "python3";
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(dir)
        .arg(&spec)
        .output()
        .map_err(|e| SourceError::Command {
            command: format!("{python} -m pip download {spec}"),
            status: format!("could not start: {e}"),
            stderr_tail: String::new(),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        return Err(SourceError::Command {
            command: format!("{python} -m pip download --no-deps {spec}"),
            status: output.status.to_string(),
            stderr_tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let mut wheels: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| SourceError::io(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| super::mirror::is_wheel_of(n, name, version))
        })
        .collect();
    wheels.sort();
    wheels.into_iter().next().ok_or_else(|| {
        SourceError::Invalid(format!(
            "pip download {spec} produced no wheel of that name and version in {}",
            dir.display()
        ))
    })
}
