//! Pass 5, matrix: takes the merged stages with their kinds (and profile applied) and
//! produces the stage instances: each stage's matrix expanded into the cartesian product
//! of its axes (named variants set their params), `foreach` cells from the inputs'
//! coordinates, params normalized by the kind (a param error names the param and points
//! at its value), fingerprints, instance names. The cells are counted against
//! `--max-cells` before any is made.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::bind_inputs::InputTarget;
use super::doc::{key_str, yaml_to_json, InputDoc, MatrixAxisDoc};
use super::error::PipelineError;
use super::instance::{coord_key, coord_text, Coords, StageInstance};
use super::load::Context;
use super::locate::SourceMap;
use super::shared_text::shared;
use super::template::MergedStage;
use crate::stages::ParamError;

/// The most stage instances a pipeline may expand to unless raised ([`set_max_cells`]).
pub const DEFAULT_MAX_CELLS: u64 = 1_000_000;

static MAX_CELLS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_CELLS);

/// Raises (or lowers) the instance limit of [`super::load_pipeline`] for this process
/// (`--max-cells`).
pub fn set_max_cells(limit: u64) {
    MAX_CELLS.store(limit, Ordering::Relaxed);
}

pub(super) fn max_cells() -> u64 {
    MAX_CELLS.load(Ordering::Relaxed)
}

/// Fills `cx.instances` (in expansion order: every stage after the stages it reads) and
/// `cx.by_base`; inputs are bound by the next pass.
pub(super) fn expand(cx: &mut Context) -> Result<(), PipelineError> {
    let Context {
        registry,
        map,
        stages: merged,
        instances,
        by_base,
        ..
    } = cx;
    for name in expansion_order(merged) {
        let name = &name;
        let m = &merged[name];
        // set for every stage by the kinds pass
        let Some(kind) = &m.doc.kind else {
            continue;
        };
        let Some(erased) = registry.get(kind) else {
            continue;
        };
        let base_params = m.doc.params.to_map();
        // Count the cells before making them: a mistyped range must not exhaust memory.
        let stage_cells = m
            .doc
            .matrix
            .values()
            .fold(1u128, |n, axis| n.saturating_mul(axis.len()));
        let limit = max_cells();
        if (instances.len() as u128).saturating_add(stage_cells) > u128::from(limit) {
            let sizes: Vec<String> = m
                .doc
                .matrix
                .iter()
                .map(|(axis, values)| format!("{axis}: {}", values.len()))
                .collect();
            return Err(map.error(
                &["stages", name, "matrix"],
                format!(
                    "stage `{name}` expands to {stage_cells} cells ({}), and the pipeline would \
                     pass {limit} stage instances; raise the limit with --max-cells if it is meant",
                    sizes.join(" × ")
                ),
            ));
        }
        let cells = product(name, m, &base_params, map)?;
        // `foreach`: one cell per distinct combination of those coordinates upstream.
        let follow = follow_coords(name, m, instances, by_base, map)?;
        let cells: Vec<(Coords, Coords)> = cells
            .into_iter()
            .flat_map(|c| follow.iter().map(move |f| (c.clone(), f.clone())))
            .collect();
        let (line, _) = map.locate(&["stages", name]);
        if let Some(dir) = &m.doc.publish {
            if dir.is_empty() || dir.starts_with('/') || dir.split('/').any(|c| c == "..") {
                return Err(map.error(
                    &["stages", name, "publish"],
                    format!("publish folder `{dir}` must be relative, without `..`"),
                ));
            }
        }
        let cells_len = cells.len();
        // room for every cell at once: grown by doubling, the vector of a 50,000-cell stage
        // held a third more than it needed (#27)
        instances.reserve(cells_len);
        let cells_of_stage = by_base.entry(name.clone()).or_default();
        cells_of_stage.reserve(cells_len);
        // one text for every cell's stage name and kind
        let (shared_base, shared_kind) = (shared(name), shared(kind));
        for (axes, followed) in cells {
            let mut params = base_params.clone();
            for (k, v) in &axes {
                let variant = m.doc.matrix.get(k).and_then(|axis| {
                    let name = serde_yaml::to_value(v).ok()?;
                    axis.variant_params(&name)
                });
                match variant {
                    Some(variant) => {
                        for (pk, pv) in variant {
                            set_param(&mut params, &key_str(pk), yaml_to_json(pv));
                        }
                    }
                    None => set_param(&mut params, k, v.clone()),
                }
            }
            let mut coords = axes;
            coords.extend(followed);
            let params = serde_json::Value::Object(params);
            let normalized = erased
                .normalize(&params)
                .map_err(|e| param_error(name, kind, m, map, &e))?;
            let fingerprint = erased.fingerprint(&normalized).map_err(|e| {
                let path = at_param(&["stages", name, "params"], &e.param);
                map.error(
                    &path.iter().map(String::as_str).collect::<Vec<_>>(),
                    format!("stage `{name}` (kind `{kind}`): {e}"),
                )
            })?;
            let inst_name = if coords.is_empty() {
                name.clone()
            } else {
                let parts: Vec<String> = coords
                    .iter()
                    .map(|(k, v)| format!("{k}={}", coord_text(v)))
                    .collect();
                format!("{name}[{}]", parts.join(","))
            };
            let publish = m.doc.publish.as_ref().map(|dir| {
                if cells_len > 1 {
                    PathBuf::from(dir).join(&inst_name)
                } else {
                    PathBuf::from(dir)
                }
            });
            cells_of_stage.push(instances.len());
            instances.push(StageInstance {
                name: inst_name,
                base: shared_base.clone(),
                kind: shared_kind.clone(),
                version: erased.version(),
                uses_backend: erased.uses_backend(),
                params: super::StageParams::new(normalized),
                coords: coords.into(),
                inputs: Default::default(),
                workspace: super::WorkspaceTies::boxed(fingerprint, publish),
                resources: m.doc.resources.as_ref().filter(|r| !r.is_unset()).cloned(),
                line,
            });
        }
        // the params live on in each instance; the document's copy is not read again
        if let Some(m) = merged.get_mut(name) {
            m.doc.params = Default::default();
        }
    }
    Ok(())
}

/// The cartesian product of stage `name`'s matrix axes (sorted by axis name); an empty
/// axis, or a plain axis that is also a param, is an error.
fn product(
    name: &str,
    m: &MergedStage,
    base_params: &serde_json::Map<String, serde_json::Value>,
    map: &SourceMap,
) -> Result<Vec<Coords>, PipelineError> {
    let mut cells: Vec<Coords> = vec![Coords::new()];
    for (axis, values_doc) in &m.doc.matrix {
        let values = values_doc.values();
        if values.is_empty() {
            return Err(map.error(
                &["stages", name, "matrix", axis],
                format!("matrix axis `{axis}` has no values"),
            ));
        }
        let named = matches!(values_doc, MatrixAxisDoc::Variants(_));
        if !named && base_params.contains_key(axis.as_str()) {
            return Err(map.error(
                &["stages", name, "matrix", axis],
                format!("`{axis}` is both a param and a matrix axis of stage `{name}`"),
            ));
        }
        cells = cells
            .into_iter()
            .flat_map(|cell| {
                values.iter().map(move |v| {
                    let mut c = cell.clone();
                    c.insert(axis.clone(), yaml_to_json(v));
                    c
                })
            })
            .collect();
    }
    Ok(cells)
}

/// Where a param error points: `root` then the param's dotted path.
fn at_param(root: &[&str], param: &str) -> Vec<String> {
    root.iter()
        .map(|s| s.to_string())
        .chain(
            param
                .split('.')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        )
        .collect()
}

/// A param the kind refused, at the value that set it: the matrix axis over a param the
/// kind lacks, the template's params when the stage does not set it, else the stage's.
fn param_error(
    name: &str,
    kind: &str,
    m: &MergedStage,
    map: &SourceMap,
    e: &ParamError,
) -> PipelineError {
    let param = e.param.as_str();
    let top = param.split('.').next().unwrap_or("");
    let axis_of = |param: &str| {
        m.doc
            .matrix
            .keys()
            .find(|a| a.as_str() == param || a.split('.').next() == Some(param))
            .cloned()
    };
    let axis = axis_of(param).or_else(|| axis_of(top));
    if let Some(axis) = axis.filter(|_| !m.doc.params.contains_key(top)) {
        return map.error(
            &["stages", name, "matrix", &axis],
            format!(
                "matrix over param `{axis}`, which stage kind `{kind}` does not have ({})",
                e.message
            ),
        );
    }
    let on_template = !m.doc.params.contains_key(top) && m.map_of_template.is_some();
    let message = format!("stage `{name}` (kind `{kind}`): {e}");
    match (&m.map_of_template, on_template) {
        (Some(tmap), true) => {
            let template = m.doc.template.as_deref().unwrap_or("");
            let path = at_param(&["templates", template, "params"], param);
            tmap.error(
                &path.iter().map(String::as_str).collect::<Vec<_>>(),
                message,
            )
        }
        _ => {
            let path = at_param(&["stages", name, "params"], param);
            map.error(
                &path.iter().map(String::as_str).collect::<Vec<_>>(),
                message,
            )
        }
    }
}

/// Sets param `path` (`a` or nested `a.b`) to `value`.
fn set_param(
    params: &mut serde_json::Map<String, serde_json::Value>,
    path: &str,
    value: serde_json::Value,
) {
    match path.split_once('.') {
        None => {
            params.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let slot = params
                .entry(head.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !slot.is_object() {
                *slot = serde_json::Value::Object(Default::default());
            }
            if let Some(inner) = slot.as_object_mut() {
                set_param(inner, rest, value);
            }
        }
    }
}

/// Stage names ordered so that every stage comes after the stages its inputs name
/// (needed to expand `foreach`): by depth (the longest path of inputs above a stage), then
/// by name; stages in a cycle, or below one, come last in name order (the graph reports
/// the cycle). Linear in stages and references (Kahn's algorithm).
fn expansion_order(merged: &BTreeMap<String, MergedStage>) -> Vec<String> {
    let names: Vec<&String> = merged.keys().collect();
    let position: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    // distinct upstream stages of each stage, and the readers of each stage
    let mut waiting: Vec<usize> = vec![0; names.len()];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (i, m) in merged.values().enumerate() {
        let mut ups: Vec<usize> = m
            .doc
            .inputs
            .values()
            .flat_map(|i| match i {
                InputDoc::One(r) => std::slice::from_ref(r),
                InputDoc::Many(v) => v.as_slice(),
            })
            .filter_map(|r| InputTarget::parse(r).ok())
            .filter_map(|t| position.get(t.up.as_str()).copied())
            .collect();
        ups.sort_unstable();
        ups.dedup();
        waiting[i] = ups.len();
        for u in ups {
            readers[u].push(i);
        }
    }
    let mut depth: Vec<Option<usize>> = vec![None; names.len()];
    let mut ready: Vec<usize> = (0..names.len()).filter(|&i| waiting[i] == 0).collect();
    for &i in &ready {
        depth[i] = Some(0);
    }
    while let Some(u) = ready.pop() {
        let below = depth[u].map_or(0, |d| d + 1);
        for &r in &readers[u] {
            depth[r] = Some(depth[r].map_or(below, |d| d.max(below)));
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.push(r);
            }
        }
    }
    // a stage still waiting is in or below a cycle: last
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by_key(|&i| match depth[i] {
        Some(d) if waiting[i] == 0 => (0, d),
        _ => (1, 0),
    });
    order.into_iter().map(|i| names[i].clone()).collect()
}

/// The distinct `foreach` coordinate combinations among a stage's input cells (one empty
/// combination when the stage has no `foreach`).
fn follow_coords(
    name: &str,
    m: &MergedStage,
    instances: &[StageInstance],
    by_base: &BTreeMap<String, Vec<usize>>,
    map: &SourceMap,
) -> Result<Vec<Coords>, PipelineError> {
    if m.doc.foreach.is_empty() {
        return Ok(vec![Coords::new()]);
    }
    let mut combos: Vec<Coords> = Vec::new();
    // the combinations seen, as text, so that keeping them distinct is not quadratic
    let mut seen: HashSet<Vec<String>> = HashSet::new();
    for refs in m.doc.inputs.values() {
        let refs = match refs {
            InputDoc::One(r) => vec![r.clone()],
            InputDoc::Many(v) => v.clone(),
        };
        for r in refs {
            let Ok(target) = InputTarget::parse(&r) else {
                continue;
            };
            for &i in by_base
                .get(&target.up)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let c = &instances[i].coords;
                if target.admits(c) && m.doc.foreach.iter().all(|a| c.contains_key(a)) {
                    let combo: Coords = m
                        .doc
                        .foreach
                        .iter()
                        .map(|a| (a.clone(), c[a.as_str()].clone()))
                        .collect();
                    if seen.insert(combo.values().map(coord_key).collect()) {
                        combos.push(combo);
                    }
                }
            }
        }
    }
    if combos.is_empty() {
        return Err(map.error(
            &["stages", name, "foreach"],
            format!(
                "stage `{name}` has `foreach: {:?}`, but none of its inputs is a matrix with \
                 those coordinates",
                m.doc.foreach
            ),
        ));
    }
    Ok(combos)
}
