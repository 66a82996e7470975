//! Sources: where bytes come from (`path:`, `https:`, `pip:`, `hf:`), pinned by blake3,
//! looked up in mirrors first, unpacked safely.
//!
//! - [`Source`]: parsing of source strings;
//! - [`fingerprint`]: the plan-time content hash of a `path:` source (part of the key);
//! - [`fetch`]: obtain the bytes (mirror → local path / download / pip / hf), verify the pin;
//! - [`place`]: unpack (optionally), take a sub-path, copy into an output directory.
//!
//! A pin (`blake3`) is the content hash of what the source names, before unpacking: the
//! bytes of a downloaded file or wheel, or the [`tree_hash`] of a directory (a `path:`
//! directory, or the files of an `hf:` source at their repository paths).

pub mod download;
pub mod hf;
pub mod mirror;
pub mod pip;
pub mod source;
#[cfg(test)]
mod tests;
pub mod tree_hash;
pub mod unpack;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use indicatif::ProgressBar;

pub use mirror::Mirrors;
pub use source::Source;

/// Errors resolving, verifying or unpacking a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("bad source `{spec}`: {message}")]
    Parse { spec: String, message: String },
    #[error(
        "blake3 mismatch for {what}: expected {expected}, actual {actual} (nothing was written)"
    )]
    PinMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("`{command}` failed ({status}){}", if stderr_tail.is_empty() { String::new() } else { format!("; stderr tail:\n{stderr_tail}") })]
    Command {
        command: String,
        status: String,
        stderr_tail: String,
    },
    #[error("{}: refusing entry `{entry}`: {reason}", archive.display())]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("interrupted")]
    Cancelled,
}

impl SourceError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SourceError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The plan-time fingerprint of a source string: for `path:` sources, the content hash of
/// the file or directory it names (see [`tree_hash`]), so editing a local file changes the
/// stage key; `None` for remote sources, whose identity is the source string and its pin.
pub fn fingerprint(source: &str) -> Result<Option<String>, SourceError> {
    match source.parse::<Source>()? {
        Source::Path(p) => {
            if !p.exists() {
                return Err(SourceError::Invalid(format!(
                    "{source}: {} does not exist",
                    p.display()
                )));
            }
            tree_hash::content_hash(&p).map(Some)
        }
        _ => Ok(None),
    }
}

/// What a fetch needs besides the source.
pub struct FetchEnv<'a> {
    pub mirrors: &'a Mirrors,
    /// Temporary space for downloads and unpacking (deleted by the caller).
    pub scratch: &'a Path,
    pub progress: &'a ProgressBar,
    pub cancel: &'a AtomicBool,
}

/// The verified bytes of a source, not yet placed.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// A file or directory; read only (it may be the user's own file or a mirror file).
    pub path: PathBuf,
    /// File name to give it when placed (for a file).
    pub name: String,
    /// Its content hash (equal to the pin when pinned).
    pub hash: String,
    /// Where it came from, for the log (`mirror …`, `local …`, `downloaded …`).
    pub origin: String,
    /// Path inside the unpacked archive that the source itself names (`pip:…#path`).
    pub inner: Option<String>,
    /// Warnings worth printing (skipped mirror files, ...).
    pub notes: Vec<String>,
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "source".to_string())
}

/// Obtains the bytes `source` names: from a mirror first (by file name, verified by the
/// pin), else locally / by download / by `pip download` / from Hugging Face. A pin
/// mismatch is an error naming both hashes.
pub fn fetch(source: &Source, pin: Option<&str>, env: &FetchEnv) -> Result<Fetched, SourceError> {
    let mut notes = Vec::new();
    let what = source.to_string();
    match source {
        Source::Path(p) => {
            if !p.exists() {
                return Err(SourceError::Invalid(format!(
                    "{what}: {} does not exist",
                    p.display()
                )));
            }
            let hash = tree_hash::content_hash(p)?;
            tree_hash::verify(&what, pin, &hash)?;
            Ok(Fetched {
                path: p.clone(),
                name: name_of(p),
                hash,
                origin: format!("local {}", p.display()),
                inner: None,
                notes,
            })
        }
        Source::Url(url) => {
            let name = source::url_file_name(url)
                .ok_or_else(|| SourceError::Parse {
                    spec: url.clone(),
                    message: "URL names no file".into(),
                })?
                .to_string();
            if let Some(hit) = env.mirrors.find_named(&name, pin, &mut notes)? {
                let hash = match hit.hash {
                    Some(h) => h,
                    None => tree_hash::file_hash(&hit.path)?,
                };
                return Ok(Fetched {
                    origin: format!("mirror {}", hit.path.display()),
                    path: hit.path,
                    name,
                    hash,
                    inner: None,
                    notes,
                });
            }
            let dir = env.scratch.join("download");
            std::fs::create_dir_all(&dir).map_err(|e| SourceError::io(&dir, e))?;
            let dest = dir.join(&name);
            download::download(url, &dest, None, env.progress, env.cancel)?;
            let hash = tree_hash::file_hash(&dest)?;
            tree_hash::verify(&what, pin, &hash)?;
            Ok(Fetched {
                path: dest,
                name,
                hash,
                origin: format!("downloaded {url}"),
                inner: None,
                notes,
            })
        }
        Source::Pip {
            name,
            version,
            subpath,
        } => {
            let matches = |n: &str| mirror::is_wheel_of(n, name, version);
            let wheel = match env.mirrors.find(&matches, pin, &mut notes)? {
                Some(hit) => hit.path,
                None => {
                    env.progress
                        .set_message(format!("pip download {name}=={version}"));
                    pip::download_wheel(name, version, &env.scratch.join("pip"))?
                }
            };
            let hash = tree_hash::file_hash(&wheel)?;
            tree_hash::verify(&what, pin, &hash)?;
            Ok(Fetched {
                name: name_of(&wheel),
                origin: format!("wheel {}", wheel.display()),
                path: wheel,
                hash,
                inner: subpath.clone(),
                notes,
            })
        }
        Source::Hf {
            repo,
            revision,
            files,
        } => {
            let endpoint = hf::endpoint();
            let token = std::env::var(download::HF_TOKEN_ENV)
                .ok()
                .filter(|t| !t.is_empty());
            let files = if files.is_empty() {
                hf::parse_listing(&download::get_text(
                    &hf::listing_url(&endpoint, repo, revision),
                    token.as_deref(),
                )?)?
            } else {
                files.clone()
            };
            let dir = env.scratch.join("hf");
            for file in &files {
                let dest = dir.join(file);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| SourceError::io(parent, e))?;
                }
                let base = file.rsplit('/').next().unwrap_or(file);
                match env.mirrors.find_named(base, None, &mut notes)? {
                    Some(hit) => {
                        std::fs::copy(&hit.path, &dest).map_err(|e| SourceError::io(&dest, e))?;
                        notes.push(format!("{file}: from mirror {}", hit.path.display()));
                    }
                    None => download::download(
                        &hf::resolve_url(&endpoint, repo, revision, file),
                        &dest,
                        token.as_deref(),
                        env.progress,
                        env.cancel,
                    )?,
                }
            }
            let hash = tree_hash::dir_hash(&dir)?;
            tree_hash::verify(&what, pin, &hash)?;
            Ok(Fetched {
                path: dir,
                name: repo.replace('/', "--"),
                hash,
                origin: format!("{endpoint}/{repo}@{revision}"),
                inner: None,
                notes,
            })
        }
    }
}

/// How to place fetched bytes.
#[derive(Debug, Clone, Default)]
pub struct Placement<'a> {
    /// Unpack an archive: `Some(true)` always (error if not an archive), `Some(false)`
    /// never, `None` automatically for `.zip`, `.whl`, `.tar.gz`, `.tgz`.
    pub unpack: Option<bool>,
    /// Path inside the (unpacked) result to keep instead of the whole.
    pub subpath: Option<&'a str>,
    /// What an archive may expand to.
    pub limits: unpack::UnpackLimits,
}

/// Places `fetched` into `out_dir`: a file is copied to `out_dir/NAME`; a directory's
/// contents (or an unpacked archive's) are copied into `out_dir`. With a sub-path (the
/// source's `#path`, then `placement.subpath`), only that file or directory is placed.
pub fn place(
    fetched: &Fetched,
    placement: &Placement,
    out_dir: &Path,
    scratch: &Path,
) -> Result<(), SourceError> {
    let is_file = fetched.path.is_file();
    let kind = if is_file {
        unpack::kind_of(&fetched.name)
    } else {
        None
    };
    let do_unpack = match (placement.unpack, kind) {
        (Some(true), None) if is_file => {
            return Err(SourceError::Invalid(format!(
                "unpack: true, but `{}` is not a .zip, .whl, .tar.gz or .tgz archive",
                fetched.name
            )))
        }
        (Some(true), _) => is_file,
        (Some(false), _) => false,
        (None, k) => k.is_some(),
    };
    if fetched.inner.is_some() && !do_unpack {
        return Err(SourceError::Invalid(
            "a path inside the package needs it unpacked (unpack: false was given)".into(),
        ));
    }
    let mut root = match (do_unpack, kind) {
        (true, Some(k)) => {
            let target = scratch.join("unpacked");
            if target.exists() {
                std::fs::remove_dir_all(&target).map_err(|e| SourceError::io(&target, e))?;
            }
            unpack::unpack_within(&fetched.path, k, &target, &placement.limits)?;
            target
        }
        _ => fetched.path.clone(),
    };
    for sub in fetched
        .inner
        .iter()
        .map(String::as_str)
        .chain(placement.subpath)
    {
        let clean = sub.trim_matches('/');
        if clean.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(SourceError::Invalid(format!(
                "subpath `{sub}` must be relative without `..`"
            )));
        }
        root = root.join(clean);
        if !root.exists() {
            return Err(SourceError::Invalid(format!(
                "`{sub}` does not exist in {}",
                fetched.origin
            )));
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|e| SourceError::io(out_dir, e))?;
    if root.is_file() {
        let name = if root == fetched.path {
            fetched.name.clone()
        } else {
            name_of(&root)
        };
        let dest = out_dir.join(name);
        std::fs::copy(&root, &dest).map_err(|e| SourceError::io(&dest, e))?;
    } else {
        for (rel, path) in tree_hash::files_below(&root)? {
            let dest = out_dir.join(&rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| SourceError::io(parent, e))?;
            }
            std::fs::copy(&path, &dest).map_err(|e| SourceError::io(&dest, e))?;
        }
    }
    Ok(())
}
