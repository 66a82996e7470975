//! The expanded pipeline, stored in the cache folder by the content of the files it was
//! loaded from, so that loading an unchanged large pipeline again reads one record
//! instead of parsing, expanding and binding every stage (at 100,000 stages that was
//! 1.6 s of a 3 s no-op run, #27; the record reads in a fraction of it).
//!
//! A record is used only when everything the expansion depends on is as it was: the text
//! of the pipeline file and of every included file (blake3), the profile, the working
//! folder (`deps:` and template paths are relative to it), the `--max-cells` limit, and
//! the `pipe` executable itself (its size and modification time: the stage kinds'
//! defaults and checks are compiled in). The one input outside the files' text is what a
//! kind reads at plan time from the file system (the content behind `path:` sources,
//! `deps:`, report templates): the instances with such a fingerprint are checked and
//! fingerprinted again at every load, as a fresh load would. Anything unexpected (a
//! record from another version, damaged, unreadable, a mismatch) is a miss: the pipeline
//! is loaded in full and the record rewritten. Small pipelines are not stored.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::instance::{Pipeline, StageInstance};
use crate::stages::StageRegistry;

/// Pipelines of fewer instances load in milliseconds: they are not stored.
pub const STORE_FROM_INSTANCES: usize = 1_000;

/// Bumped whenever the record's layout or the meaning of a stored field changes.
const FORMAT: u32 = 2;

/// A file the expansion was read from, by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SourceFile {
    pub path: PathBuf,
    pub blake3: String,
}

impl SourceFile {
    /// `path` as read, with the hash of the `text` that was parsed.
    pub(super) fn of(path: &Path, text: &str) -> SourceFile {
        SourceFile {
            path: path.to_path_buf(),
            blake3: blake3::hash(text.as_bytes()).to_hex().to_string(),
        }
    }

    fn unchanged(&self) -> bool {
        std::fs::read(&self.path)
            .is_ok_and(|bytes| blake3::hash(&bytes).to_hex().as_str() == self.blake3)
    }
}

/// The first line of a record: what must match before the body is read.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    /// The `pipe` executable that expanded it.
    build: String,
    max_cells: u64,
    profile: Option<String>,
    workdir: PathBuf,
    sources: Vec<SourceFile>,
    /// blake3 of the rest of the record: a damaged record is a miss, never a wrong
    /// pipeline (params are read back as the text they were written as).
    body_blake3: String,
}

/// The second line of a record: the pipeline as loaded, but its instances, which follow,
/// one a line (so that they decode on every core, into a vector of the right size).
#[derive(Serialize, Deserialize)]
struct Body {
    file: PathBuf,
    description: Option<String>,
    profiles: Vec<String>,
    instances: usize,
}

/// Where records live: `<cache>/expanded/`, one file per pipeline path, profile and
/// working folder (a changed pipeline replaces its record).
pub struct ExpandedStore {
    dir: PathBuf,
}

impl ExpandedStore {
    /// The store of the cache at `cache_root`.
    pub fn in_cache(cache_root: &Path) -> ExpandedStore {
        ExpandedStore {
            dir: cache_root.join("expanded"),
        }
    }

    /// Removes every record (`pipe cache gc`: they are rebuilt at the next load) and says
    /// how many bytes that freed.
    pub fn clear(&self) -> u64 {
        let Ok(records) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut freed = 0;
        for record in records.flatten() {
            let size = record.metadata().map_or(0, |m| m.len());
            if std::fs::remove_file(record.path()).is_ok() {
                freed += size;
            }
        }
        freed
    }

    fn record_path(&self, path: &Path, profile: Option<&str>, workdir: &Path) -> PathBuf {
        // the path as given: instances keep it for their messages
        let mut h = blake3::Hasher::new();
        h.update(path.as_os_str().as_encoded_bytes());
        h.update(&[0]);
        h.update(profile.unwrap_or("").as_bytes());
        h.update(&[0, u8::from(profile.is_some()), 0]);
        h.update(workdir.as_os_str().as_encoded_bytes());
        let hex = h.finalize().to_hex();
        self.dir.join(format!("{}.json", &hex[..32]))
    }

    fn header(
        profile: Option<&str>,
        workdir: PathBuf,
        sources: Vec<SourceFile>,
        body: &[u8],
    ) -> Option<Header> {
        Some(Header {
            format: FORMAT,
            build: build_stamp()?,
            max_cells: super::matrix::max_cells(),
            profile: profile.map(str::to_string),
            workdir,
            sources,
            body_blake3: body_hash(body),
        })
    }

    /// The stored expansion of `path` under `profile`, when its record holds exactly what
    /// loading it now would give; `None` otherwise (then load in full, and [`Self::put`]).
    pub fn get(
        &self,
        path: &Path,
        profile: Option<&str>,
        registry: &StageRegistry,
    ) -> Option<Pipeline> {
        let workdir = std::env::current_dir().ok()?;
        let bytes = std::fs::read(self.record_path(path, profile, &workdir)).ok()?;
        let cut = bytes.iter().position(|&b| b == b'\n')?;
        let stored: Header = serde_json::from_slice(&bytes[..cut]).ok()?;
        // the cheap comparisons first; the files and the body are hashed only after them
        let same_setting = stored.format == FORMAT
            && stored.build == build_stamp()?
            && stored.max_cells == super::matrix::max_cells()
            && stored.profile.as_deref() == profile
            && stored.workdir == workdir;
        let rest = &bytes[cut + 1..];
        if !same_setting
            || stored.sources.is_empty()
            || !stored.sources.iter().all(|s| s.unchanged())
            || stored.body_blake3 != body_hash(rest)
        {
            return None;
        }
        let cut = rest.iter().position(|&b| b == b'\n')?;
        let body: Body = serde_json::from_slice(&rest[..cut]).ok()?;
        if body.file != path {
            return None;
        }
        let instances = decode_lines(&rest[cut + 1..], body.instances)?;
        let mut pipeline = Pipeline {
            file: body.file,
            profile: profile.map(str::to_string),
            description: body.description,
            instances,
            profiles: body.profiles,
        };
        refresh_fingerprints(&mut pipeline, registry)?;
        Some(pipeline)
    }

    /// Stores `pipeline` (loaded from `sources` under its profile) when it is large enough
    /// to be worth it. Written to a temporary file and renamed: a reader sees the old
    /// record or the new one. Failing to store is not an error of the command.
    pub(super) fn put(&self, pipeline: &Pipeline, sources: Vec<SourceFile>) {
        if pipeline.instances.len() < STORE_FROM_INSTANCES {
            return;
        }
        let _ = self.try_put(pipeline, sources);
    }

    fn try_put(&self, pipeline: &Pipeline, sources: Vec<SourceFile>) -> Option<()> {
        let profile = pipeline.profile.as_deref();
        let mut body = Vec::with_capacity(pipeline.instances.len() * 256);
        serde_json::to_writer(
            &mut body,
            &BodyRef {
                file: &pipeline.file,
                description: &pipeline.description,
                profiles: &pipeline.profiles,
                instances: pipeline.instances.len(),
            },
        )
        .ok()?;
        for inst in &pipeline.instances {
            body.push(b'\n');
            serde_json::to_writer(&mut body, inst).ok()?;
        }
        body.push(b'\n');
        let header = Self::header(profile, std::env::current_dir().ok()?, sources, &body)?;
        let target = self.record_path(&pipeline.file, profile, &header.workdir);
        std::fs::create_dir_all(&self.dir).ok()?;
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            target.file_name()?.to_string_lossy(),
            std::process::id()
        ));
        let written = (|| -> std::io::Result<()> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            serde_json::to_writer(&mut out, &header)?;
            out.write_all(b"\n")?;
            out.write_all(&body)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return None;
        }
        std::fs::rename(&tmp, &target).ok()
    }
}

/// [`Body`] borrowed, for writing.
#[derive(Serialize)]
struct BodyRef<'a> {
    file: &'a PathBuf,
    description: &'a Option<String>,
    profiles: &'a [String],
    instances: usize,
}

/// `n` instances, one JSON object a line (the last line ends with a newline), decoded in
/// chunks on every core; `None` when the lines are not exactly `n` instances.
fn decode_lines(text: &[u8], n: usize) -> Option<Vec<StageInstance>> {
    use rayon::prelude::*;
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    // after the last newline: an empty piece, or a torn line from a damaged record
    let (last, lines) = lines.split_last()?;
    if !last.is_empty() || lines.len() != n {
        return None;
    }
    let mut decoded: Vec<Option<StageInstance>> = Vec::with_capacity(n);
    lines
        .par_iter()
        .map(|line| serde_json::from_slice(line).ok())
        .collect_into_vec(&mut decoded);
    decoded.into_iter().collect()
}

fn body_hash(body: &[u8]) -> String {
    blake3::hash(body).to_hex().to_string()
}

/// Identifies the running `pipe` build: its path, size and modification time. Any
/// rebuild or reinstall changes it, and with it every record's validity.
fn build_stamp() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::env::current_exe().ok()?;
    let meta = std::fs::metadata(&exe).ok()?;
    Some(format!(
        "{} {} {} {}.{}",
        env!("CARGO_PKG_VERSION"),
        exe.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

/// Checks and fingerprints again, as a fresh load does, every instance whose kind read
/// the file system at plan time (its fingerprint is `Some`; a kind's fingerprint is
/// `None` only when its params name no local content, see `Stage::fingerprint`). `None`
/// when one no longer passes its check: the full load then says where.
fn refresh_fingerprints(pipeline: &mut Pipeline, registry: &StageRegistry) -> Option<()> {
    use rayon::prelude::*;
    pipeline
        .instances
        .par_iter_mut()
        .filter(|inst| inst.fingerprint().is_some())
        .try_for_each(|inst| {
            let kind = registry.get(&inst.kind)?;
            let normalized = kind.normalize(&inst.params).ok()?;
            if inst.params != normalized {
                return None;
            }
            let fingerprint = kind.fingerprint(&normalized).ok()?;
            if let Some(ties) = inst.workspace.as_mut() {
                ties.fingerprint = fingerprint;
            }
            Some(())
        })
}
