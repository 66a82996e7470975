//! Pass 6, inputs: takes the expanded instances and binds each input reference
//! (`stage`, `stage.sub/path`, `stage[axis=value]`) to the upstream instances whose shared
//! matrix coordinates agree with the reader's own.

use std::collections::{BTreeSet, HashMap};

use super::doc::InputDoc;
use super::error::PipelineError;
use super::instance::{coord_key, coord_text, CellCoords, InputRef, StageInstance};
use super::load::Context;

/// An input reference as written: `stage`, `stage.sub/path`, or with coordinate filters
/// `stage[head=sll_att,seed=1]` (optionally followed by `.sub/path`): only the upstream
/// cells whose coordinates print as those values are bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InputTarget {
    pub up: String,
    pub filters: Vec<(String, String)>,
    pub sub: Option<String>,
}

/// Why a reference does not parse as `stage[axis=value,...].sub/path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetSyntax {
    #[error("`[` without `]`")]
    Unclosed,
    #[error("write coordinate filters as `[name=value,...]`")]
    BadFilter,
    #[error("expected `.sub/path` after `]`")]
    BadSub,
}

impl InputTarget {
    pub(super) fn parse(r: &str) -> Result<InputTarget, TargetSyntax> {
        let (up, filters, rest) = match r.find(['[', '.']) {
            Some(i) if r.as_bytes()[i] == b'[' => {
                let close = r[i..]
                    .find(']')
                    .map(|j| i + j)
                    .ok_or(TargetSyntax::Unclosed)?;
                let mut filters = Vec::new();
                for part in r[i + 1..close].split(',') {
                    let (k, v) = part.split_once('=').ok_or(TargetSyntax::BadFilter)?;
                    filters.push((k.trim().to_string(), v.trim().to_string()));
                }
                (&r[..i], filters, &r[close + 1..])
            }
            Some(i) => (&r[..i], Vec::new(), &r[i..]),
            None => (r, Vec::new(), ""),
        };
        let sub = match rest {
            "" => None,
            _ => Some(
                rest.strip_prefix('.')
                    .ok_or(TargetSyntax::BadSub)?
                    .to_string(),
            ),
        };
        Ok(InputTarget {
            up: up.to_string(),
            filters,
            sub,
        })
    }

    /// Whether an upstream cell's coordinates pass the filters.
    pub(super) fn admits(&self, coords: &CellCoords) -> bool {
        self.filters
            .iter()
            .all(|(k, v)| coords.get(k).is_some_and(|c| coord_text(c) == *v))
    }
}

/// Fills each instance's `inputs` in `cx.instances`.
pub(super) fn bind(cx: &mut Context) -> Result<(), PipelineError> {
    let Context {
        map,
        stages: merged,
        instances,
        by_base,
        ..
    } = cx;
    let mut groups = CellGroups::default();
    for i in 0..instances.len() {
        let base = instances[i].base.clone();
        let m = &merged[&*base];
        let mut bound = super::BoundInputs::default();
        for (input, refs) in &m.doc.inputs {
            let refs: Vec<String> = match refs {
                InputDoc::One(r) => vec![r.clone()],
                InputDoc::Many(v) => v.clone(),
            };
            let mut out = Vec::new();
            for r in refs {
                let target = InputTarget::parse(&r).map_err(|why| {
                    map.error(
                        &["stages", &base, "inputs", input],
                        format!("input reference `{r}`: {why}"),
                    )
                })?;
                let up = target.up.clone();
                let sub = target.sub.clone();
                let Some(candidates) = by_base.get(&up) else {
                    let known: BTreeSet<&String> = merged.keys().collect();
                    return Err(map.error(
                        &["stages", &base, "inputs", input],
                        format!(
                            "input `{input}` of stage `{base}` refers to stage `{up}`, which is \
                             not defined (stages: {known:?})"
                        ),
                    ));
                };
                if sub.as_deref().is_some_and(|s| {
                    s.is_empty() || s.starts_with('/') || s.split('/').any(|p| p == "..")
                }) {
                    return Err(map.error(
                        &["stages", &base, "inputs", input],
                        format!("input `{input}`: `{r}` must name a relative path inside `{up}`'s output"),
                    ));
                }
                let me = &instances[i].coords;
                let matching: Vec<usize> = groups
                    .candidates(&up, candidates, instances.as_slice(), me)
                    .into_iter()
                    .filter(|&c| {
                        let theirs = &instances[c].coords;
                        target.admits(theirs)
                            && theirs
                                .iter()
                                .all(|(k, v)| me.get(k).is_none_or(|mine| mine == v))
                    })
                    .collect();
                if matching.is_empty() {
                    return Err(map.error(
                        &["stages", &base, "inputs", input],
                        format!(
                            "input `{input}` of `{}`: no instance of `{up}` has matching matrix \
                             coordinates",
                            instances[i].name
                        ),
                    ));
                }
                out.extend(matching.into_iter().map(|instance| InputRef {
                    instance,
                    sub: sub.clone(),
                }));
            }
            // grown for the first ref to room for four: 96 bytes unused in each of
            // 100,000 cells that read one upstream cell (#27)
            out.shrink_to_fit();
            bound.insert(input, out);
        }
        instances[i].inputs = bound;
    }
    Ok(())
}

/// Upstream cells grouped by their coordinates on the axes a reader shares with them, so
/// that binding a matrix stage to another (cell `i` reads cell `i`) is linear in cells,
/// not cells × cells.
#[derive(Default)]
struct CellGroups {
    /// (upstream stage, shared axes) -> its cells by coordinate texts on those axes;
    /// `None` when the upstream cells do not all have the same axes.
    by_axes: HashMap<(String, Vec<String>), Option<CellsByCoords>>,
}

/// Coordinate texts on some axes -> the cells that have them, in order.
type CellsByCoords = HashMap<Vec<String>, Vec<usize>>;

impl CellGroups {
    /// The cells of `up` (`cells`, in order) that can agree with `me` on their shared
    /// axes: a superset of the matching ones, which the caller still checks exactly.
    fn candidates(
        &mut self,
        up: &str,
        cells: &[usize],
        instances: &[StageInstance],
        me: &CellCoords,
    ) -> Vec<usize> {
        let Some(&first) = cells.first() else {
            return Vec::new();
        };
        let shared: Vec<String> = instances[first]
            .coords
            .keys()
            .filter(|k| me.contains_key(k))
            .map(str::to_string)
            .collect();
        if shared.is_empty() {
            return cells.to_vec();
        }
        let groups = self
            .by_axes
            .entry((up.to_string(), shared.clone()))
            .or_insert_with(|| {
                let axes: Vec<&str> = instances[first].coords.keys().collect();
                let uniform = cells
                    .iter()
                    .all(|&c| instances[c].coords.keys().eq(axes.iter().copied()));
                uniform.then(|| {
                    let mut groups = CellsByCoords::new();
                    for &c in cells {
                        let at = &instances[c].coords;
                        let values = shared.iter().map(|k| coord_key(&at[k.as_str()])).collect();
                        groups.entry(values).or_default().push(c);
                    }
                    groups
                })
            });
        match groups {
            Some(groups) => {
                let values: Vec<String> =
                    shared.iter().map(|k| coord_key(&me[k.as_str()])).collect();
                groups.get(&values).cloned().unwrap_or_default()
            }
            None => cells.to_vec(),
        }
    }
}
