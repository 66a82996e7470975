//! What `--only`, `--force`, `pipe show` and the cache's `push`/`pull --only` name: a YAML
//! stage (`eval_ddi`), one expanded cell by its full name (`ft[head=cls,seed=1]`), the cells
//! of a stage with some coordinates (`ft[seed=2]`), or stages by a `*` wildcard in the
//! stage name (`probe_*`, `eval_*[seed=3]`, as a shell glob or `dvc repro --glob`). Parsed
//! once per argument, then matched against every instance; a selection that matches
//! nothing says why ([`SelectionMiss`]).

use std::collections::BTreeSet;

use super::bind_inputs::{InputTarget, TargetSyntax};
use super::instance::{coord_text, Pipeline, StageInstance};

/// One parsed selector.
#[derive(Debug, Clone)]
pub(super) struct StageSelector<'a> {
    /// The argument as typed: a stage or an expanded cell's exact name.
    typed: &'a str,
    /// The stage-name part of `name[axis=value,...]`, with its coordinate filters (an
    /// error where the argument does not parse so).
    target: Result<InputTarget, TargetSyntax>,
    /// Whether the stage-name part holds a `*`.
    wildcard: bool,
}

impl<'a> StageSelector<'a> {
    pub(super) fn parse(typed: &'a str) -> StageSelector<'a> {
        let target = InputTarget::parse(typed);
        let wildcard = target.as_ref().is_ok_and(|t| t.up.contains('*'));
        StageSelector {
            typed,
            target,
            wildcard,
        }
    }

    pub(super) fn matches(&self, s: &StageInstance) -> bool {
        if *s.base == *self.typed || s.name == self.typed {
            return true;
        }
        // `stage.sub` names an output, not stages: such a target selects by exact name only
        let Some(t) = self.target.as_ref().ok().filter(|t| t.sub.is_none()) else {
            return false;
        };
        if !self.wildcard && t.filters.is_empty() {
            return false;
        }
        self.names_stage(t, &s.base) && t.admits(&s.coords)
    }

    /// Whether the stage-name part of `t` (a `*` pattern or a name) names stage `base`.
    fn names_stage(&self, t: &InputTarget, base: &str) -> bool {
        match self.wildcard {
            true => wildcard_matches(&t.up, base),
            false => t.up == base,
        }
    }

    /// Why nothing matched: not a selector's syntax, no such stage (with the nearest name,
    /// if one is a likely typo), or a stage whose cells have none with these coordinates.
    pub(super) fn miss(&self, p: &Pipeline) -> SelectionMiss {
        let t = match &self.target {
            Err(syntax) => return SelectionMiss::Syntax(*syntax),
            Ok(t) if t.sub.is_some() => return SelectionMiss::Output,
            Ok(t) => t,
        };
        let cells: Vec<&StageInstance> = p
            .instances
            .iter()
            .filter(|s| self.names_stage(t, &s.base))
            .collect();
        if cells.is_empty() || t.filters.is_empty() {
            let stages: BTreeSet<&str> = p.instances.iter().map(|s| &*s.base).collect();
            return SelectionMiss::NoStage {
                suggestion: (!self.wildcard)
                    .then(|| crate::spelling::nearest(&t.up, stages))
                    .flatten()
                    .map(str::to_string),
            };
        }
        let axes: BTreeSet<&str> = cells.iter().flat_map(|s| s.coords.keys()).collect();
        let unknown = t
            .filters
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| !axes.contains(k));
        if let Some(axis) = unknown {
            return SelectionMiss::NoAxis {
                axis: axis.to_string(),
                axes: axes.iter().map(|a| a.to_string()).collect(),
            };
        }
        // every axis exists: some value is not among its cells'
        let values = |axis: &str| -> BTreeSet<String> {
            cells
                .iter()
                .filter_map(|s| s.coords.get(axis).map(coord_text))
                .collect()
        };
        let (axis, value) = t
            .filters
            .iter()
            .find(|(k, v)| !values(k).contains(v))
            .or(t.filters.first())
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap_or_default();
        SelectionMiss::NoValue {
            values: values(&axis).into_iter().collect(),
            axis,
            value,
            with_others: t.filters.len() > 1,
        }
    }
}

/// Why a selector matched no stage, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectionMiss {
    /// The argument is not `stage[axis=value,...]`.
    Syntax(TargetSyntax),
    /// `stage.sub/path` names a stage's output, which is not a selection.
    Output,
    /// No stage has this name (or none matches the wildcard).
    NoStage { suggestion: Option<String> },
    /// The stage's cells have no coordinate `axis`.
    NoAxis { axis: String, axes: Vec<String> },
    /// No cell has `axis=value` (`with_others`: together with the other filters).
    NoValue {
        axis: String,
        value: String,
        values: Vec<String>,
        with_others: bool,
    },
}

impl std::fmt::Display for SelectionMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SelectionMiss::Syntax(why) => write!(f, "{why}"),
            SelectionMiss::Output => f.write_str(
                "`stage.sub/path` names a stage's output; select the stage, without `.sub/path`",
            ),
            SelectionMiss::NoStage { suggestion: None } => f.write_str("no stage has this name"),
            SelectionMiss::NoStage {
                suggestion: Some(s),
            } => write!(f, "no stage has this name; did you mean `{s}`?"),
            SelectionMiss::NoAxis { axis, axes } if axes.is_empty() => {
                write!(
                    f,
                    "its cells have no coordinate `{axis}` (it has no matrix)"
                )
            }
            SelectionMiss::NoAxis { axis, axes } => write!(
                f,
                "its cells have no coordinate `{axis}`; they have {}",
                quoted(axes)
            ),
            SelectionMiss::NoValue {
                axis,
                value,
                values,
                with_others,
            } => write!(
                f,
                "no cell has {axis}={value}{}; its {axis} values: {}",
                if *with_others {
                    " with the other coordinates given"
                } else {
                    ""
                },
                quoted(values)
            ),
        }
    }
}

fn quoted(names: &[String]) -> String {
    let all: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    all.join(", ")
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none
/// included) and every other character for itself.
fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // where the last `*` was and the text position it was last tried to end at
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star, start)) = backtrack {
            // let the last `*` swallow one more character
            pi = star + 1;
            ti = start + 1;
            backtrack = Some((star, start + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_like_a_shell_glob() {
        assert!(wildcard_matches("probe_*", "probe_ppi"));
        assert!(wildcard_matches("probe_*", "probe_"));
        assert!(!wildcard_matches("probe_*", "tuned_ppi"));
        assert!(wildcard_matches("*_ddi", "eval_ddi"));
        assert!(!wildcard_matches("*_ddi", "eval_ddi_sub"));
        assert!(wildcard_matches("eval_*_sub", "eval_ddi_sub"));
        assert!(wildcard_matches("*", "anything"));
        assert!(wildcard_matches("a*b*c", "aXbYbZc"));
        assert!(!wildcard_matches("a*b*c", "aXbYbZ"));
        assert!(wildcard_matches("ft", "ft"));
        assert!(!wildcard_matches("ft", "ft_ddi"));
    }
}
