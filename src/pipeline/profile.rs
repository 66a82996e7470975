//! Pass 4, profile: takes the merged stages and the chosen profile, and overrides params,
//! matrix axes (a list of names keeps some named variants) and `resources` — `kind:KIND`
//! entries first, so that an entry naming a stage wins over its kind's. A profile that
//! `extends:` another applies after it, whole: what it says wins over anything the other
//! said, as if its entries were written below the other's in one file.

use std::collections::BTreeMap;

use super::doc::{key_str, MatrixAxisDoc};
use super::error::PipelineError;
use super::load::{describe_yaml_error, Context};

/// Applies profile `p` (after the profiles it extends) to `cx.stages`.
pub(super) fn apply(cx: &mut Context, p: &str) -> Result<(), PipelineError> {
    for name in lineage(cx, p)?.iter().rev() {
        apply_one(cx, name)?;
    }
    Ok(())
}

/// `p`, the profile it extends, that one's, …: every name defined, no cycle.
fn lineage(cx: &Context, p: &str) -> Result<Vec<String>, PipelineError> {
    let map = &cx.map;
    if !cx.doc.profiles.contains_key(p) {
        return Err(PipelineError::new(
            cx.path,
            map.locate(&["profiles"]).0,
            1,
            format!(
                "profile `{p}` is not defined in this pipeline{} (defined: {})",
                suggest(cx, p),
                defined(cx)
            ),
        ));
    }
    let mut chain = vec![p.to_string()];
    let mut current = p.to_string();
    while let Some(parent) = cx.doc.profiles[&current].extends.clone() {
        let at = ["profiles", current.as_str(), "extends"];
        if !cx.doc.profiles.contains_key(&parent) {
            return Err(map.error(
                &at,
                format!(
                    "profile `{current}` extends `{parent}`, which is not defined{} (defined: {})",
                    suggest(cx, &parent),
                    defined(cx)
                ),
            ));
        }
        if chain.contains(&parent) {
            return Err(map.error(
                &at,
                format!(
                    "profile `{current}` extends `{parent}`, which extends it back: {} -> {parent}",
                    chain.join(" -> ")
                ),
            ));
        }
        chain.push(parent.clone());
        current = parent;
    }
    Ok(chain)
}

/// The profiles the pipeline defines, for an error: `cpu, paper, smoke` (or `none`).
fn defined(cx: &Context) -> String {
    let names: Vec<&str> = cx.doc.profiles.keys().map(String::as_str).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// ` (did you mean `cpu`?)` when `typed` is one slip from a defined profile, else empty.
fn suggest(cx: &Context, typed: &str) -> String {
    crate::spelling::nearest(typed, cx.doc.profiles.keys().map(String::as_str))
        .map(|p| format!(" (did you mean `{p}`?)"))
        .unwrap_or_default()
}

/// Applies the entries written under profile `p` (not those of the profile it extends).
fn apply_one(cx: &mut Context, p: &str) -> Result<(), PipelineError> {
    let map = &cx.map;
    let overrides = &cx.doc.profiles[p].overrides;
    // `kind:KIND` overrides first, so that one naming a stage wins over its kind's.
    let ordered = overrides
        .iter()
        .filter(|(s, _)| s.starts_with("kind:"))
        .chain(overrides.iter().filter(|(s, _)| !s.starts_with("kind:")));
    for (selector, values) in ordered {
        let targets: Vec<String> = match selector.strip_prefix("kind:") {
            Some(kind) => cx
                .stages
                .iter()
                .filter(|(_, m)| m.doc.kind.as_deref() == Some(kind))
                .map(|(n, _)| n.clone())
                .collect(),
            None if cx.stages.contains_key(selector) => vec![selector.clone()],
            None => {
                return Err(map.error(
                    &["profiles", p, selector],
                    format!(
                        "profile `{p}` overrides stage `{selector}`, which is not defined \
                         (use a stage name or `kind:KIND`)"
                    ),
                ))
            }
        };
        for target in targets {
            let Some(m) = cx.stages.get_mut(&target) else {
                continue;
            };
            for (k, v) in values {
                let key = key_str(k);
                if key == "resources" {
                    let over: super::Resources =
                        serde_yaml::from_value(v.clone()).map_err(|e| {
                            map.error(
                                &["profiles", p, selector, "resources"],
                                format!("bad resources: {}", describe_yaml_error(&e)),
                            )
                        })?;
                    let base = m.doc.resources.take().unwrap_or_default();
                    m.doc.resources = Some(Box::new(base.overlaid(&over)));
                } else if key == "matrix" {
                    let axes: BTreeMap<String, MatrixAxisDoc> = serde_yaml::from_value(v.clone())
                        .map_err(|e| {
                        map.error(
                            &["profiles", p, selector, "matrix"],
                            format!("bad matrix override: {}", describe_yaml_error(&e)),
                        )
                    })?;
                    for (axis, values) in axes {
                        let chosen = select_variants(m.doc.matrix.get(&axis), values).map_err(
                            |message| {
                                map.error(&["profiles", p, selector, "matrix", &axis], message)
                            },
                        )?;
                        m.doc.matrix.insert(axis, chosen);
                    }
                } else {
                    if m.doc.matrix.contains_key(&key) {
                        return Err(map.error(
                            &["profiles", p, selector, &key],
                            format!(
                                "param `{key}` is a matrix axis of stage `{target}`; \
                                 override it under `matrix:`"
                            ),
                        ));
                    }
                    m.doc.params.insert(k, v);
                }
            }
        }
    }
    Ok(())
}

/// A profile's override of one matrix axis. Over a named-variants axis, a list of names
/// keeps those variants (`matrix: {domain: [cp]}`); anything else replaces the axis.
fn select_variants(
    current: Option<&MatrixAxisDoc>,
    override_doc: MatrixAxisDoc,
) -> Result<MatrixAxisDoc, String> {
    let (Some(MatrixAxisDoc::Variants(all)), MatrixAxisDoc::Values(names)) =
        (current, &override_doc)
    else {
        return Ok(override_doc);
    };
    let mut kept = BTreeMap::new();
    for name in names {
        let Some(text) = name.as_str() else {
            return Err(format!(
                "this axis has named variants ({}); list variant names to keep",
                all.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        let Some(params) = all.get(text) else {
            return Err(format!(
                "no variant `{text}` (variants: {})",
                all.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        kept.insert(text.to_string(), params.clone());
    }
    Ok(MatrixAxisDoc::Variants(kept))
}
