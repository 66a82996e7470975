//! The journal of submitted jobs (`<cache>/slurm/journal.jsonl`): one line when a job is
//! submitted, one when its result is committed or refused. A controller killed and
//! restarted reads the jobs still open and re-attaches to them instead of submitting the
//! same stages twice.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SlurmError;

/// One line of the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Line {
    Submitted(Submitted),
    Ended { job: String },
}

/// A submitted job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitted {
    pub job: String,
    /// Stage key (hex).
    pub key: String,
    pub stage: String,
    pub staging: PathBuf,
    pub log: PathBuf,
}

/// The open journal of one controller.
pub struct Journal {
    path: PathBuf,
    file: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SlurmError + '_ {
    move |source| SlurmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// Opens the journal at `path`: returns the jobs a previous controller left open (by
    /// key) and rewrites the file with only those.
    pub fn open(path: &Path) -> Result<(Journal, BTreeMap<String, Submitted>), SlurmError> {
        let mut open: BTreeMap<String, Submitted> = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                // a line cut by a kill is ignored
                match serde_json::from_str::<Line>(line) {
                    Ok(Line::Submitted(s)) => {
                        open.insert(s.job.clone(), s);
                    }
                    Ok(Line::Ended { job }) => {
                        open.remove(&job);
                    }
                    Err(_) => {}
                }
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let tmp = path.with_extension("jsonl.tmp");
        let mut text = String::new();
        for s in open.values() {
            text.push_str(&serde_json::to_string(&Line::Submitted(s.clone())).unwrap_or_default());
            text.push('\n');
        }
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io(path))?;
        let by_key = open.into_values().map(|s| (s.key.clone(), s)).collect();
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
            },
            by_key,
        ))
    }

    /// Appends a line, durably.
    pub fn append(&mut self, line: &Line) -> Result<(), SlurmError> {
        let mut text = serde_json::to_string(line).unwrap_or_default();
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jobs_not_ended_are_reopened() {
        let dir = std::env::temp_dir().join(format!("pipe-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("journal.jsonl");
        let sub = |job: &str, key: &str| {
            Line::Submitted(Submitted {
                job: job.into(),
                key: key.into(),
                stage: format!("s{job}"),
                staging: dir.join(job),
                log: dir.join(format!("{job}.log")),
            })
        };
        {
            let (mut j, open) = Journal::open(&path).unwrap();
            assert!(open.is_empty());
            j.append(&sub("1", "aa")).unwrap();
            j.append(&sub("2", "bb")).unwrap();
            j.append(&Line::Ended { job: "1".into() }).unwrap();
        }
        // a line cut short by a kill
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"event\":\"submi")
            .unwrap();
        let (_, open) = Journal::open(&path).unwrap();
        assert_eq!(open.keys().collect::<Vec<_>>(), ["bb"]);
        assert_eq!(open["bb"].job, "2");
        let (_, again) = Journal::open(&path).unwrap();
        assert_eq!(again.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
