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
    /// An input now resolves to a different upstream result.
    InputChanged {
        input: String,
        upstream: Vec<String>,
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
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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
            RunReason::InputChanged { input, upstream } => {
                write!(f, "input `{input}` changed ({})", upstream.join(", "))
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
        }
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
