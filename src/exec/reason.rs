//! Why a stage must run — typed, rendered for people (like cargo's `DirtyReason`).

use std::fmt;

use serde::Serialize;

/// One reason a stage is not a cache hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunReason {
    /// Never run before (under this stage name) and not in the cache.
    New,
    /// `--force` named it or one of its ancestors.
    Forced,
    ParamChanged {
        param: String,
        from: serde_json::Value,
        to: serde_json::Value,
    },
    ParamAdded {
        param: String,
        value: serde_json::Value,
    },
    ParamRemoved {
        param: String,
    },
    /// An input now resolves to different upstream results: `changed` names the upstream
    /// stages whose result is new or changed (not every stage the input reads: a table
    /// over 50,000 cells, one of them changed, names that one), `removed` those it no
    /// longer reads.
    InputChanged {
        input: String,
        changed: Vec<String>,
        removed: Vec<String>,
    },
    InputAdded {
        input: String,
    },
    InputRemoved {
        input: String,
    },
    KindChanged {
        from: String,
        to: String,
    },
    VersionBumped {
        kind: String,
        from: u32,
        to: u32,
    },
    /// The content of a local source changed.
    SourceChanged,
    BackendChanged {
        from: String,
        to: String,
    },
    /// Same key as the last run, but its cached result is gone (gc, or dropped by verify).
    OutputMissing,
    /// Not a cause but what the run will do: an earlier run of this key (interrupted or
    /// killed) left a training checkpoint, which it continues from.
    Resumes {
        checkpoint: String,
    },
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Up to three names, then how many more: one line of `pipe plan` stays one line.
fn few_names(names: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

impl fmt::Display for RunReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunReason::New => write!(f, "new"),
            RunReason::Forced => write!(f, "forced"),
            RunReason::ParamChanged { param, from, to } => write!(
                f,
                "param `{param}` changed {} → {}",
                value_text(from),
                value_text(to)
            ),
            RunReason::ParamAdded { param, value } => {
                write!(f, "param `{param}` added ({})", value_text(value))
            }
            RunReason::ParamRemoved { param } => write!(f, "param `{param}` removed"),
            RunReason::InputChanged {
                input,
                changed,
                removed,
            } => {
                write!(f, "input `{input}` changed")?;
                let mut parts = Vec::new();
                if !changed.is_empty() {
                    parts.push(few_names(changed));
                }
                if !removed.is_empty() {
                    parts.push(format!("no longer {}", few_names(removed)));
                }
                if !parts.is_empty() {
                    write!(f, " ({})", parts.join("; "))?;
                }
                Ok(())
            }
            RunReason::InputAdded { input } => write!(f, "input `{input}` added"),
            RunReason::InputRemoved { input } => write!(f, "input `{input}` removed"),
            RunReason::KindChanged { from, to } => write!(f, "kind changed {from} → {to}"),
            RunReason::VersionBumped { kind, from, to } => {
                write!(f, "kind `{kind}` version bumped {from} → {to}")
            }
            RunReason::SourceChanged => write!(f, "source content changed"),
            RunReason::BackendChanged { from, to } => write!(f, "backend changed {from} → {to}"),
            RunReason::OutputMissing => write!(f, "cached output was removed (gc or verify)"),
            RunReason::Resumes { checkpoint } => {
                write!(f, "resumes from its checkpoint `{checkpoint}`")
            }
        }
    }
}

/// A stage's reasons, as a slice. The lone reasons most stages have (new, forced, none)
/// are kept without an allocation: a cold run of 100,000 stages held 10 MB of one-reason
/// lists (#27).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reasons(ReasonList);

#[derive(Debug, Clone, PartialEq, Default)]
enum ReasonList {
    #[default]
    None,
    New,
    Forced,
    Several(Vec<RunReason>),
}

static NEW: [RunReason; 1] = [RunReason::New];
static FORCED: [RunReason; 1] = [RunReason::Forced];

impl From<Vec<RunReason>> for Reasons {
    fn from(reasons: Vec<RunReason>) -> Self {
        Reasons(match reasons.as_slice() {
            [] => ReasonList::None,
            [RunReason::New] => ReasonList::New,
            [RunReason::Forced] => ReasonList::Forced,
            _ => ReasonList::Several(reasons),
        })
    }
}

impl std::ops::Deref for Reasons {
    type Target = [RunReason];

    fn deref(&self) -> &[RunReason] {
        match &self.0 {
            ReasonList::None => &[],
            ReasonList::New => &NEW,
            ReasonList::Forced => &FORCED,
            ReasonList::Several(reasons) => reasons,
        }
    }
}

impl Serialize for Reasons {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

/// Joins reasons for one line of `pipe plan`.
pub fn reasons_text(reasons: &[RunReason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(changed: &[&str], removed: &[&str]) -> String {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect();
        RunReason::InputChanged {
            input: "up".into(),
            changed: names(changed),
            removed: names(removed),
        }
        .to_string()
    }

    #[test]
    fn lone_reasons_read_back_as_they_were_given() {
        for reasons in [
            vec![],
            vec![RunReason::New],
            vec![RunReason::Forced],
            vec![RunReason::SourceChanged, RunReason::New],
        ] {
            let kept = Reasons::from(reasons.clone());
            assert_eq!(*kept, *reasons);
            assert_eq!(
                serde_json::to_value(&kept).unwrap(),
                serde_json::to_value(&reasons).unwrap()
            );
        }
    }

    #[test]
    fn a_changed_input_names_a_few_upstream_stages_and_counts_the_rest() {
        assert_eq!(changed(&["b"], &[]), "input `up` changed (b)");
        assert_eq!(
            changed(&["a", "b", "c", "d", "e"], &[]),
            "input `up` changed (a, b, c and 2 more)"
        );
        assert_eq!(
            changed(&["a"], &["x", "y"]),
            "input `up` changed (a; no longer x, y)"
        );
        assert_eq!(changed(&[], &[]), "input `up` changed");
    }
}
