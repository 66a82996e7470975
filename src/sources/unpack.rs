//! Safe unpacking of zip, wheel and tar.gz archives into a fresh directory.
//!
//! Refused, with an error naming the archive and the entry: an absolute path, a `..`
//! component, a backslash or NUL in a name, a symlink whose target leaves the directory,
//! any entry under a path that the archive itself makes a symlink (the classic way to
//! write outside through a link), a hard link to something not already unpacked, and
//! device or FIFO entries. Symlinks are created after all files.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::SourceError;

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

/// Whether symlink `link` (relative path) pointing at `target` stays inside the root.
fn link_stays_inside(link: &Path, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\\') {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> = link
        .parent()
        .map(|p| {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(x) => Some(x),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    for c in Path::new(target).components() {
        match c {
            Component::Normal(x) => depth.push(x),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
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
fn check_entries(archive: &Path, entries: &[(String, Entry)]) -> Result<Vec<PathBuf>, SourceError> {
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
            Entry::Symlink(t) if !link_stays_inside(rel, t) => {
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

fn write_stream(dest: &Path, reader: &mut dyn Read) -> Result<(), SourceError> {
    create_parent(dest)?;
    let mut out = File::create(dest).map_err(|e| SourceError::io(dest, e))?;
    std::io::copy(reader, &mut out).map_err(|e| SourceError::io(dest, e))?;
    Ok(())
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

fn unpack_zip(archive: &Path, target: &Path) -> Result<(), SourceError> {
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
    let rels = check_entries(archive, &entries)?;
    std::fs::create_dir_all(target).map_err(|e| SourceError::io(target, e))?;
    for (i, ((_, e), rel)) in entries.iter().zip(&rels).enumerate() {
        if let Entry::File = e {
            let mut file = zip.by_index(i).map_err(|e| bad(&e))?;
            write_stream(&target.join(rel), &mut file)?;
        }
    }
    finish(archive, &entries, &rels, target)
}

fn open_tar_gz(archive: &Path) -> Result<tar::Archive<flate2::read::GzDecoder<File>>, SourceError> {
    let f = File::open(archive).map_err(|e| SourceError::io(archive, e))?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(f)))
}

fn unpack_tar_gz(archive: &Path, target: &Path) -> Result<(), SourceError> {
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
    let rels = check_entries(archive, &entries)?;
    std::fs::create_dir_all(target).map_err(|e| SourceError::io(target, e))?;
    let mut tar = open_tar_gz(archive)?;
    for (entry, ((_, e), rel)) in tar
        .entries()
        .map_err(|e| bad(&e))?
        .zip(entries.iter().zip(&rels))
    {
        let mut entry = entry.map_err(|e| bad(&e))?;
        if let Entry::File = e {
            write_stream(&target.join(rel), &mut entry)?;
        }
    }
    finish(archive, &entries, &rels, target)
}

/// Unpacks `archive` into `target` (created if needed), refusing unsafe entries before
/// anything is written.
pub fn unpack(archive: &Path, kind: ArchiveKind, target: &Path) -> Result<(), SourceError> {
    match kind {
        ArchiveKind::Zip => unpack_zip(archive, target),
        ArchiveKind::TarGz => unpack_tar_gz(archive, target),
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
        assert!(link_stays_inside(Path::new("a/l"), "b"));
        assert!(link_stays_inside(Path::new("a/l"), "../b"));
        assert!(!link_stays_inside(Path::new("a/l"), "../../b"));
        assert!(!link_stays_inside(Path::new("l"), "/etc"));
        assert!(!link_stays_inside(Path::new("l"), ".."));
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of("x.WHL"), Some(ArchiveKind::Zip));
        assert_eq!(kind_of("x.tgz"), Some(ArchiveKind::TarGz));
        assert_eq!(kind_of("x.tar"), None);
    }
}
