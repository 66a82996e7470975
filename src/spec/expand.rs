//! From a pipeline file to the expanded list of stage instances: includes and templates
//! merged, the profile applied, matrices expanded, params normalized by their kind,
//! inputs bound to upstream instances.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::doc::{InputDoc, MatrixAxisDoc, PipelineDoc, StageDoc};
use super::error::SpecError;
use super::locate::SourceMap;
use crate::data::schema::Task;
use crate::stages::contract::{self, ContractError, InputContract, TaskName};
use crate::stages::StageRegistry;

/// A reference from an input to one upstream instance (optionally a path inside its output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    /// Index into [`Pipeline::instances`].
    pub instance: usize,
    /// `sub/path` of `stage.sub/path`.
    pub sub: Option<String>,
}

/// One runnable stage: a YAML stage, or one cell of its matrix.
#[derive(Debug, Clone)]
pub struct StageInstance {
    /// `train` or, for a matrix cell, `train[fold=3,head=cls]`.
    pub name: String,
    /// The stage name in the YAML.
    pub base: String,
    pub kind: String,
    pub version: u32,
    pub uses_backend: bool,
    /// Params normalized by the kind (defaults filled in, canonical JSON).
    pub params: serde_json::Value,
    /// Matrix coordinates of this cell.
    pub coords: BTreeMap<String, serde_json::Value>,
    /// Input name -> bound upstream instances.
    pub inputs: BTreeMap<String, Vec<InputRef>>,
    /// Extra content fingerprint (e.g. of a local `path:` source), part of the key.
    pub fingerprint: Option<String>,
    /// Workspace folder that receives a copy of the output (`publish:`).
    pub publish: Option<PathBuf>,
    /// What a cluster job of this cell asks for (`resources:`); not part of the key.
    pub resources: super::Resources,
    /// Where the stage is defined (for messages).
    pub file: PathBuf,
    pub line: usize,
}

/// An expanded pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub file: PathBuf,
    pub profile: Option<String>,
    pub description: Option<String>,
    pub instances: Vec<StageInstance>,
    /// Names of the profiles the file defines.
    pub profiles: Vec<String>,
}

impl Pipeline {
    /// Indices of the instances of YAML stage `base`, the instance named exactly `name`,
    /// or the cells of `base[k=v,...]` whose coordinates match the (partial) filters.
    pub fn select(&self, name: &str) -> Vec<usize> {
        let target = InputTarget::parse(name).ok().filter(|t| t.sub.is_none());
        self.instances
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.base == name
                    || s.name == name
                    || target.as_ref().is_some_and(|t| {
                        !t.filters.is_empty() && t.up == s.base && t.admits(&s.coords)
                    })
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// An input reference as written: `stage`, `stage.sub/path`, or with coordinate filters
/// `stage[head=sll_att,seed=1]` (optionally followed by `.sub/path`): only the upstream
/// cells whose coordinates print as those values are bound.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InputTarget {
    up: String,
    filters: Vec<(String, String)>,
    sub: Option<String>,
}

impl InputTarget {
    fn parse(r: &str) -> Result<InputTarget, String> {
        let bad = |why: &str| format!("input reference `{r}`: {why}");
        let (up, filters, rest) = match r.find(['[', '.']) {
            Some(i) if r.as_bytes()[i] == b'[' => {
                let close = r[i..]
                    .find(']')
                    .map(|j| i + j)
                    .ok_or_else(|| bad("`[` without `]`"))?;
                let mut filters = Vec::new();
                for part in r[i + 1..close].split(',') {
                    let (k, v) = part
                        .split_once('=')
                        .ok_or_else(|| bad("write coordinate filters as `[name=value,...]`"))?;
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
                    .ok_or_else(|| bad("expected `.sub/path` after `]`"))?
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
    fn admits(&self, coords: &Coords) -> bool {
        self.filters
            .iter()
            .all(|(k, v)| coords.get(k).is_some_and(|c| coord_text(c) == *v))
    }
}

/// A parsed file with its source map.
struct Loaded {
    doc: PipelineDoc,
    map: SourceMap,
}

fn read_doc(path: &Path) -> Result<Loaded, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new(path, 0, 0, format!("cannot read pipeline file: {e}")))?;
    let map = SourceMap::scan(path, &text);
    if let Some(e) = map.repeated_name(&["stages", "templates", "profiles"]) {
        return Err(e);
    }
    let doc: PipelineDoc = serde_yaml::from_str(&text).map_err(|e| {
        let (line, col) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        SpecError::new(path, line, col, describe_yaml_error(&e))
    })?;
    Ok(Loaded { doc, map })
}

/// serde_yaml's message without its trailing " at line X column Y" (we print our own). A
/// file that is not a YAML mapping (a text or data file passed by mistake) is said to be
/// that, without quoting its contents back.
fn describe_yaml_error(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    let msg = match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    if msg.starts_with("invalid type: ") && msg.ends_with("expected struct PipelineDoc") {
        let found = msg["invalid type: ".len()..]
            .split([' ', ','])
            .next()
            .unwrap_or("something else");
        return format!(
            "not a pipeline: the file is a YAML {found}, not a mapping with `stages:` \
             (is it the right file?)"
        );
    }
    msg
}

fn yaml_to_json(v: &serde_yaml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn key_str(k: &serde_yaml::Value) -> String {
    match k {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Compact text of a coordinate value for instance names: strings bare, others as JSON.
fn coord_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn valid_stage_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
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

type Coords = BTreeMap<String, serde_json::Value>;

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

/// The distinct `foreach` coordinate combinations among a stage's input cells (one empty
/// combination when the stage has no `foreach`).
fn follow_coords(
    name: &str,
    m: &MergedStage,
    instances: &[StageInstance],
    by_base: &BTreeMap<String, Vec<usize>>,
    map: &SourceMap,
) -> Result<Vec<Coords>, SpecError> {
    if m.doc.foreach.is_empty() {
        return Ok(vec![Coords::new()]);
    }
    let mut combos: Vec<Coords> = Vec::new();
    // the combinations seen, as text, so that keeping them distinct is not quadratic
    let mut seen: std::collections::HashSet<Vec<String>> = std::collections::HashSet::new();
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
                        .map(|a| (a.clone(), c[a].clone()))
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

/// Template + stage, merged; where each piece was written.
struct MergedStage {
    doc: StageDoc,
    /// Shared, not copied: a source map is as large as its file.
    map_of_template: Option<Rc<SourceMap>>,
}

/// The most stage instances a pipeline may expand to unless raised ([`set_max_cells`]).
pub const DEFAULT_MAX_CELLS: u64 = 1_000_000;

static MAX_CELLS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_CELLS);

/// Raises (or lowers) the instance limit of [`load_pipeline`] for this process (`--max-cells`).
pub fn set_max_cells(limit: u64) {
    MAX_CELLS.store(limit, std::sync::atomic::Ordering::Relaxed);
}

fn max_cells() -> u64 {
    MAX_CELLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Loads `path`, applies `profile`, expands and validates everything.
pub fn load_pipeline(
    path: &Path,
    profile: Option<&str>,
    registry: &StageRegistry,
) -> Result<Pipeline, SpecError> {
    let Loaded { mut doc, map } = read_doc(path)?;
    let map = Rc::new(map);
    if doc.stages.is_empty() {
        return Err(map.error(
            &["stages"],
            "the pipeline defines no stages (an empty file, or `stages:` with nothing under it)",
        ));
    }

    // Includes: their templates and profiles join ours (a name defined twice is an error).
    let mut template_maps: BTreeMap<String, Rc<SourceMap>> = doc
        .templates
        .keys()
        .map(|k| (k.clone(), Rc::clone(&map)))
        .collect();
    let base_dir = path.parent().unwrap_or(Path::new("."));
    for (i, inc) in doc.include.clone().iter().enumerate() {
        let inc_path = base_dir.join(inc);
        let idx = i.to_string();
        if !inc_path.is_file() {
            return Err(map.error(
                &["include", &idx],
                format!("included file `{}` does not exist", inc_path.display()),
            ));
        }
        let loaded = read_doc(&inc_path)?;
        let inc_map = Rc::new(loaded.map);
        if !loaded.doc.stages.is_empty() {
            return Err(inc_map.error(
                &["stages"],
                "an included file may define `templates:` and `profiles:` only, not `stages:`",
            ));
        }
        for (name, t) in loaded.doc.templates {
            if doc.templates.contains_key(&name) {
                return Err(inc_map.error(
                    &["templates", &name],
                    format!("template `{name}` is defined twice"),
                ));
            }
            template_maps.insert(name.clone(), Rc::clone(&inc_map));
            doc.templates.insert(name, t);
        }
        for (name, p) in loaded.doc.profiles {
            let entry = doc.profiles.entry(name).or_default();
            for (stage, overrides) in p {
                entry.entry(stage).or_insert(overrides);
            }
        }
    }

    // Stage definitions with templates merged.
    let mut merged: BTreeMap<String, MergedStage> = BTreeMap::new();
    for (name, mut out) in std::mem::take(&mut doc.stages) {
        if !valid_stage_name(&name) {
            return Err(map.error(
                &["stages", &name],
                format!("stage name `{name}` may use only letters, digits, `_` and `-`"),
            ));
        }
        let mut map_of_template = None;
        if let Some(t) = &out.template {
            let Some(tpl) = doc.templates.get(t) else {
                let known: Vec<&String> = doc.templates.keys().collect();
                return Err(map.error(
                    &["stages", &name, "template"],
                    format!("unknown template `{t}` (defined: {known:?})"),
                ));
            };
            map_of_template = template_maps.get(t).cloned();
            out.kind = out.kind.take().or_else(|| tpl.kind.clone());
            let mut params = tpl.params.clone();
            for (k, v) in std::mem::take(&mut out.params) {
                params.insert(k, v);
            }
            out.params = params;
            let mut inputs = tpl.inputs.clone();
            inputs.append(&mut out.inputs);
            out.inputs = inputs;
            let mut matrix = tpl.matrix.clone();
            matrix.append(&mut out.matrix);
            out.matrix = matrix;
            out.publish = out.publish.take().or_else(|| tpl.publish.clone());
            out.resources = match (&tpl.resources, out.resources.take()) {
                (Some(t), Some(o)) => Some(t.overlaid(&o)),
                (t, o) => o.or_else(|| t.clone()),
            };
            if out.foreach.is_empty() {
                out.foreach = tpl.foreach.clone();
            }
        }
        merged.insert(
            name,
            MergedStage {
                doc: out,
                map_of_template,
            },
        );
    }

    // Kinds.
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    for (name, m) in &merged {
        let Some(kind) = m.doc.kind.clone() else {
            return Err(map.error(
                &["stages", name],
                format!("stage `{name}` has no `kind:` (nor a template that gives one)"),
            ));
        };
        if registry.get(&kind).is_none() {
            let at = ["stages", name.as_str(), "kind"];
            let known: Vec<&str> = registry.kinds().collect();
            return Err(map.error(
                &at,
                format!(
                    "unknown stage kind `{kind}`; known kinds: {}",
                    known.join(", ")
                ),
            ));
        }
        kinds.insert(name.clone(), kind);
    }

    // Profile.
    if let Some(p) = profile {
        let Some(overrides) = doc.profiles.get(p) else {
            let known: Vec<&String> = doc.profiles.keys().collect();
            return Err(SpecError::new(
                path,
                map.locate(&["profiles"]).0,
                1,
                format!("profile `{p}` is not defined in this pipeline (defined: {known:?})"),
            ));
        };
        // `kind:KIND` overrides first, so that one naming a stage wins over its kind's.
        let ordered = overrides
            .iter()
            .filter(|(s, _)| s.starts_with("kind:"))
            .chain(overrides.iter().filter(|(s, _)| !s.starts_with("kind:")));
        for (selector, values) in ordered {
            let targets: Vec<String> = match selector.strip_prefix("kind:") {
                Some(kind) => kinds
                    .iter()
                    .filter(|(_, k)| k.as_str() == kind)
                    .map(|(n, _)| n.clone())
                    .collect(),
                None if merged.contains_key(selector) => vec![selector.clone()],
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
                let Some(m) = merged.get_mut(&target) else {
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
                        m.doc.resources = Some(base.overlaid(&over));
                    } else if key == "matrix" {
                        let axes: BTreeMap<String, MatrixAxisDoc> =
                            serde_yaml::from_value(v.clone()).map_err(|e| {
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
                        m.doc.params.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }

    // Matrix expansion and param normalization.
    let mut instances: Vec<StageInstance> = Vec::new();
    let mut by_base: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for name in expansion_order(&merged) {
        let name = &name;
        let m = &merged[name];
        let kind = &kinds[name];
        let Some(erased) = registry.get(kind) else {
            continue;
        };
        let mut base_params = serde_json::Map::new();
        for (k, v) in &m.doc.params {
            base_params.insert(key_str(k), yaml_to_json(v));
        }
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
        // Cartesian product over axes (sorted by axis name).
        let mut cells: Vec<BTreeMap<String, serde_json::Value>> = vec![BTreeMap::new()];
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
        // `foreach`: one cell per distinct combination of those coordinates upstream.
        let follow = follow_coords(name, m, &instances, &by_base, &map)?;
        let cells: Vec<(
            BTreeMap<String, serde_json::Value>,
            BTreeMap<String, serde_json::Value>,
        )> = cells
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
            // where a param error points: `params` then the param's dotted path
            let at_param = |root: &[&str], param: &str| -> Vec<String> {
                root.iter()
                    .map(|s| s.to_string())
                    .chain(
                        param
                            .split('.')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string),
                    )
                    .collect()
            };
            let normalized = erased.normalize(&params).map_err(|e| {
                let top = e.param.split('.').next().unwrap_or("");
                let axis_of = |param: &str| {
                    m.doc
                        .matrix
                        .keys()
                        .find(|a| a.as_str() == param || a.split('.').next() == Some(param))
                        .cloned()
                };
                let axis = axis_of(&e.param).or_else(|| axis_of(top));
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
                        let path = at_param(&["templates", template, "params"], &e.param);
                        tmap.error(&path.iter().map(String::as_str).collect::<Vec<_>>(), message)
                    }
                    _ => {
                        let path = at_param(&["stages", name, "params"], &e.param);
                        map.error(&path.iter().map(String::as_str).collect::<Vec<_>>(), message)
                    }
                }
            })?;
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
            by_base
                .entry(name.clone())
                .or_default()
                .push(instances.len());
            instances.push(StageInstance {
                name: inst_name,
                base: name.clone(),
                kind: kind.clone(),
                version: erased.version(),
                uses_backend: erased.uses_backend(),
                params: normalized,
                coords,
                inputs: BTreeMap::new(),
                fingerprint,
                publish,
                resources: m.doc.resources.clone().unwrap_or_default(),
                file: path.to_path_buf(),
                line,
            });
        }
    }

    // Inputs: bind each reference to the upstream instances whose shared coordinates agree.
    let mut groups = CellGroups::default();
    for i in 0..instances.len() {
        let base = instances[i].base.clone();
        let m = &merged[&base];
        let mut bound: BTreeMap<String, Vec<InputRef>> = BTreeMap::new();
        for (input, refs) in &m.doc.inputs {
            let refs: Vec<String> = match refs {
                InputDoc::One(r) => vec![r.clone()],
                InputDoc::Many(v) => v.clone(),
            };
            let mut out = Vec::new();
            for r in refs {
                let target = InputTarget::parse(&r)
                    .map_err(|message| map.error(&["stages", &base, "inputs", input], message))?;
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
                    .candidates(&up, candidates, &instances, me)
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
            bound.insert(input.clone(), out);
        }
        instances[i].inputs = bound;
    }

    check_contracts(&mut instances, &merged, &map, registry)?;

    Ok(Pipeline {
        file: path.to_path_buf(),
        profile: profile.map(str::to_string),
        description: doc.description,
        instances,
        profiles: doc.profiles.keys().cloned().collect(),
    })
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
        me: &Coords,
    ) -> Vec<usize> {
        let Some(&first) = cells.first() else {
            return Vec::new();
        };
        let shared: Vec<String> = instances[first]
            .coords
            .keys()
            .filter(|k| me.contains_key(*k))
            .cloned()
            .collect();
        if shared.is_empty() {
            return cells.to_vec();
        }
        let groups = self
            .by_axes
            .entry((up.to_string(), shared.clone()))
            .or_insert_with(|| {
                let axes: Vec<&String> = instances[first].coords.keys().collect();
                let uniform = cells
                    .iter()
                    .all(|&c| instances[c].coords.keys().eq(axes.iter().copied()));
                uniform.then(|| {
                    let mut groups = CellsByCoords::new();
                    for &c in cells {
                        let at = &instances[c].coords;
                        let values = shared.iter().map(|k| coord_key(&at[k])).collect();
                        groups.entry(values).or_default().push(c);
                    }
                    groups
                })
            });
        match groups {
            Some(groups) => {
                let values: Vec<String> = shared.iter().map(|k| coord_key(&me[k])).collect();
                groups.get(&values).cloned().unwrap_or_default()
            }
            None => cells.to_vec(),
        }
    }
}

/// A coordinate value as text that is equal exactly when the values are.
fn coord_key(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
            crate::hash::canonical_json(v)
        }
        other => other.to_string(),
    }
}

/// Every instance's inputs against its kind's contract ([`crate::stages::contract`]):
/// declared names, required inputs bound, one upstream result where the kind reads one, and
/// corpora and splits of the task the stage needs. Instances come in expansion order, so
/// an instance's inputs have their tasks worked out before it.
fn check_contracts(
    instances: &mut [StageInstance],
    merged: &BTreeMap<String, MergedStage>,
    map: &SourceMap,
    registry: &StageRegistry,
) -> Result<(), SpecError> {
    // per instance: the task of the corpus or split it writes, and the instance it came from
    // (pre-filled: with a cycle, which the graph reports next, an input can come later)
    let mut tasks: Vec<Option<(Task, usize)>> = vec![None; instances.len()];
    let mut names_checked: BTreeSet<String> = BTreeSet::new();
    // per base of a kind whose params name inputs: the inputs some cell names
    let mut named_used: BTreeMap<String, (InputContract, BTreeSet<String>)> = BTreeMap::new();
    for i in 0..instances.len() {
        select_named_inputs(&mut instances[i], merged, map, registry, &mut named_used)?;
        let inst = &instances[i];
        let base = inst.base.as_str();
        let at_input = |input: &str, e: ContractError| {
            map.error(
                &["stages", base, "inputs", input],
                format!("stage `{}`: {e}", inst.name),
            )
        };
        let Some(erased) = registry.get(&inst.kind) else {
            continue;
        };
        let contract = erased.inputs();
        if names_checked.insert(base.to_string()) {
            let written = merged[base].doc.inputs.keys().map(String::as_str);
            contract::check_names(erased.kind(), contract, written).map_err(|e| {
                let input = match &e {
                    ContractError::Unknown { name, .. } => name.clone(),
                    _ => String::new(),
                };
                at_input(&input, e)
            })?;
        }
        // each input's task (when every upstream result bound to it agrees) and origin
        let upstream: BTreeMap<&str, (Task, usize)> = inst
            .inputs
            .iter()
            .filter_map(|(input, refs)| {
                let first = tasks[refs.first()?.instance]?;
                refs.iter()
                    .all(|r| tasks[r.instance].map(|(t, _)| t) == Some(first.0))
                    .then_some((input.as_str(), first))
            })
            .collect();
        let names: Vec<&str> = inst.inputs.keys().map(String::as_str).collect();
        let facts = erased.tasks(&inst.params, &names, &|input| {
            upstream.get(input).map(|&(t, _)| t)
        });
        for (input, refs) in &inst.inputs {
            if let Some(spec) = contract.get(input) {
                let bound: Vec<String> = refs
                    .iter()
                    .map(|r| instances[r.instance].name.clone())
                    .collect();
                contract::check_arity(spec, &bound).map_err(|e| at_input(input, e))?;
            }
            let (Some(&needed), Some(&(found, origin))) =
                (facts.required.get(input), upstream.get(input.as_str()))
            else {
                continue;
            };
            if needed != found {
                let origin = &instances[origin];
                let why = match origin.params.get("format").and_then(|f| f.as_str()) {
                    Some(format) => format!("corpus `{}` has format `{format}`", origin.name),
                    None => format!("from `{}`", origin.name),
                };
                let upstream = refs
                    .first()
                    .map_or(String::new(), |r| instances[r.instance].name.clone());
                let e = ContractError::WrongTask {
                    name: input.clone(),
                    upstream,
                    found: TaskName(found),
                    needed: TaskName(needed),
                    why,
                };
                return Err(at_input(input, e));
            }
        }
        // a task passed through from an input keeps that input's origin (for the message)
        tasks[i] = facts.output.map(|task| {
            let origin = upstream
                .values()
                .find(|&&(t, _)| t == task)
                .map_or(i, |&(_, origin)| origin);
            (task, origin)
        });
    }
    for (base, (contract, used)) in named_used {
        let InputContract::DeclaredAndNamed {
            declared, by_param, ..
        } = contract
        else {
            continue;
        };
        let unused = merged[&base].doc.inputs.keys().find(|name| {
            !used.contains(*name) && !declared.iter().any(|s| s.name == name.as_str())
        });
        if let Some(name) = unused {
            let e = ContractError::NamedUnused {
                param: by_param,
                name: name.clone(),
            };
            return Err(map.error(
                &["stages", &base, "inputs", name],
                format!("stage `{base}`: {e}"),
            ));
        }
    }
    Ok(())
}

/// For a kind whose params name some of its inputs ([`InputContract::DeclaredAndNamed`]):
/// checks that every name is bound, then drops the inputs this cell's params do not name
/// (so they neither enter its key nor order it after their producers), recording which
/// inputs the stage's cells use.
fn select_named_inputs(
    inst: &mut StageInstance,
    merged: &BTreeMap<String, MergedStage>,
    map: &SourceMap,
    registry: &StageRegistry,
    named_used: &mut BTreeMap<String, (InputContract, BTreeSet<String>)>,
) -> Result<(), SpecError> {
    let Some(erased) = registry.get(&inst.kind) else {
        return Ok(());
    };
    let contract = erased.inputs();
    let InputContract::DeclaredAndNamed {
        declared, by_param, ..
    } = contract
    else {
        return Ok(());
    };
    let named = erased.named_inputs(&inst.params);
    let bound: Vec<&str> = merged[&inst.base]
        .doc
        .inputs
        .keys()
        .map(String::as_str)
        .collect();
    contract::check_named(contract, &named, &bound).map_err(|e| {
        map.error(
            &["stages", &inst.base, "params", by_param],
            format!("stage `{}`: {e}", inst.name),
        )
    })?;
    inst.inputs
        .retain(|name, _| named.contains(name) || declared.iter().any(|s| s.name == name));
    named_used
        .entry(inst.base.clone())
        .or_insert_with(|| (contract, BTreeSet::new()))
        .1
        .extend(named);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::StageRegistry;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn templates_from_includes_and_kind_profiles_merge() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "t.yaml",
            "templates:\n  echo:\n    kind: shell\n    params:\n      cmd: echo base\n      outs: [a]\nprofiles:\n  smoke:\n    \"kind:shell\":\n      cmd: echo smoke\n",
        );
        let p = write(
            dir.path(),
            "p.yaml",
            "include: [t.yaml]\nstages:\n  one:\n    template: echo\n  two:\n    template: echo\n    params:\n      outs: [b]\n",
        );
        let reg = StageRegistry::builtin();
        let plain = load_pipeline(&p, None, &reg).expect("loads");
        assert_eq!(plain.instances[0].params["cmd"], "echo base");
        assert_eq!(plain.instances[1].params["outs"][0], "b");
        let smoke = load_pipeline(&p, Some("smoke"), &reg).expect("loads");
        assert!(smoke
            .instances
            .iter()
            .all(|s| s.params["cmd"] == "echo smoke"));
    }

    #[test]
    fn named_variants_set_their_params_and_profiles_pick_some() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "p.yaml",
            "stages:\n  sub:\n    kind: shell\n    params: {cmd: echo base, outs: [a]}\n    matrix:\n      domain:\n        pg: {cmd: echo pg}\n        d: {cmd: echo d}\n  use:\n    kind: shell\n    params: {cmd: echo use, outs: [b]}\n    inputs: {up: sub}\n    foreach: [domain]\nprofiles:\n  small:\n    sub: {matrix: {domain: [d]}}\n  bad:\n    sub: {matrix: {domain: [x]}}\n",
        );
        let reg = StageRegistry::builtin();
        let all = load_pipeline(&p, None, &reg).expect("loads");
        let names: Vec<&str> = all.instances.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sub[domain=d]",
                "sub[domain=pg]",
                "use[domain=d]",
                "use[domain=pg]"
            ]
        );
        assert_eq!(all.instances[1].params["cmd"], "echo pg");
        assert!(all.instances[1].params.get("domain").is_none());
        assert_eq!(all.instances[3].inputs["up"][0].instance, 1);
        let small = load_pipeline(&p, Some("small"), &reg).expect("loads");
        let names: Vec<&str> = small.instances.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["sub[domain=d]", "use[domain=d]"]);
        let err = load_pipeline(&p, Some("bad"), &reg).expect_err("unknown variant");
        assert!(
            err.to_string().contains("no variant `x` (variants: d, pg)"),
            "{err}"
        );
    }

    #[test]
    fn an_input_can_pick_upstream_cells_by_coordinates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "p.yaml",
            "stages:\n  ft:\n    kind: shell\n    params: {cmd: echo, outs: [a]}\n    matrix: {env.HEAD: [cls, att], env.SEED: [1, 2]}\n  pick:\n    kind: shell\n    params: {cmd: echo, outs: [b]}\n    inputs: {up: \"ft[env.HEAD=att,env.SEED=2].a\"}\n  typo:\n    kind: shell\n    params: {cmd: echo, outs: [c]}\n    inputs: {up: \"ft[env.HEAD=att\"}\n",
        );
        let reg = StageRegistry::builtin();
        let err = load_pipeline(&p, None, &reg).expect_err("unclosed bracket");
        assert!(err.to_string().contains("`[` without `]`"), "{err}");
        let text = std::fs::read_to_string(&p).expect("read");
        std::fs::write(&p, text.replace("ft[env.HEAD=att\"", "ft[env.HEAD=cls]\"")).expect("write");
        let pl = load_pipeline(&p, None, &reg).expect("loads");
        let pick = pl.select("pick")[0];
        let bound = &pl.instances[pick].inputs["up"];
        assert_eq!(bound.len(), 1);
        assert_eq!(
            pl.instances[bound[0].instance].name,
            "ft[env.HEAD=att,env.SEED=2]"
        );
        assert_eq!(bound[0].sub.as_deref(), Some("a"));
        let typo = pl.select("typo")[0];
        assert_eq!(pl.instances[typo].inputs["up"].len(), 2);
        // `--only` takes the same partial filters.
        let seed2: Vec<&str> = pl
            .select("ft[env.SEED=2]")
            .into_iter()
            .map(|i| pl.instances[i].name.as_str())
            .collect();
        assert_eq!(
            seed2,
            ["ft[env.HEAD=cls,env.SEED=2]", "ft[env.HEAD=att,env.SEED=2]"]
        );
        assert!(pl.select("ft[env.SEED=9]").is_empty());
    }
}
