//! The plan: every instance's key, and whether it is cached or must run (and why).
//! Computed before anything runs, from content only.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;

use super::reason::{reasons_text, Reasons, RunReason};
use crate::cache::{Cache, CacheError, LastRun, LastRunOf, RecordedInput};
use crate::graph::StageGraph;
use crate::hash::{KeyMaterial, KeyParts, ParamsText, StageKey};
use crate::pipeline::Pipeline;

/// Status of one instance in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Cached,
    Run,
    /// Outside `--only`'s selection.
    NotSelected,
    /// Not cached, but selected only as an input of `--only`'s stages, and every stage
    /// that would read it is cached: nothing asked for needs it, so it does not run (a
    /// pulled evaluation does not fetch its fine-tuning again, as Bazel skips the inputs
    /// of an action whose output is a cache hit).
    NotNeeded,
}

/// One line of the plan.
///
/// What the key was made from ([`Plan::material`]) and the upstream names
/// ([`Plan::input_stages`]) are rebuilt from the pipeline when asked for, not kept: a
/// no-op run of 100,000 cached stages needs neither, and a copy of every stage's params
/// was most of the plan's memory (#27).
#[derive(Debug, Clone)]
pub struct PlanItem {
    pub instance: usize,
    pub key: StageKey,
    pub status: Status,
    pub reasons: Reasons,
}

/// Keys and statuses for a whole pipeline, in topological order.
pub struct Plan {
    pub items: Vec<PlanItem>,
    /// instance index -> position in `items`.
    pub by_instance: Vec<usize>,
    /// Canonical pipeline path used to record last runs.
    pub pipeline_id: String,
    /// The backend the keys of backend-dependent stages were made with.
    backend: String,
}

/// Selection and forcing.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Stage names (base or expanded); empty = everything.
    pub only: Vec<String>,
    pub force: Vec<String>,
    /// Backend name for stages whose results depend on it.
    pub backend: String,
}

/// An error making the plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("`{selector}` selects no stage in this pipeline: {why}")]
    UnknownStage {
        selector: String,
        why: crate::pipeline::SelectionMiss,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl Plan {
    pub fn item(&self, instance: usize) -> &PlanItem {
        &self.items[self.by_instance[instance]]
    }

    /// What the key of `instance` was made from (its params, its inputs' keys, ...).
    pub fn material(&self, p: &Pipeline, instance: usize) -> KeyMaterial {
        material_of(p, instance, &self.backend, |up| self.item(up).key.hex())
    }

    /// The upstream instance names of each input of `instance` (for reasons and
    /// provenance).
    pub fn input_stages(&self, p: &Pipeline, instance: usize) -> BTreeMap<String, Vec<String>> {
        input_stages_of(p, instance)
    }

    /// The last run to record for `instance` once its result is there: what
    /// [`Plan::material`] and [`Plan::input_stages`] read back as, borrowed.
    pub fn last_run<'a>(&'a self, p: &'a Pipeline, instance: usize) -> LastRunOf<'a> {
        let inst = &p.instances[instance];
        LastRunOf {
            key: self.item(instance).key,
            kind: &inst.kind,
            version: inst.version,
            params: inst.params.canonical(),
            inputs: inst
                .inputs
                .iter()
                .map(|(name, refs)| {
                    let bound = refs
                        .iter()
                        .map(|r| RecordedInput {
                            key: self.item(r.instance).key,
                            sub: r.sub.as_deref(),
                            stage: &p.instances[r.instance].name,
                        })
                        .collect();
                    (name, bound)
                })
                .collect(),
            fingerprint: inst.fingerprint(),
            backend: inst.uses_backend.then_some(self.backend.as_str()),
        }
    }

    /// `(stage, key, status, reason)` rows for `pipe plan --json`.
    pub fn to_json(&self, p: &Pipeline) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .items
            .iter()
            .map(|it| {
                let inst = &p.instances[it.instance];
                serde_json::json!({
                    "stage": inst.name,
                    "kind": inst.kind,
                    "key": it.key.hex(),
                    "status": it.status,
                    "reason": if it.status == Status::Run { reasons_text(&it.reasons) } else { String::new() },
                    "reasons": it.reasons,
                })
            })
            .collect();
        serde_json::Value::Array(rows)
    }
}

fn resolve(p: &Pipeline, names: &[String]) -> Result<Vec<usize>, PlanError> {
    let mut out = Vec::new();
    for n in names {
        let sel = p.select(n);
        if sel.is_empty() {
            return Err(PlanError::UnknownStage {
                selector: n.clone(),
                why: p.selection_miss(n),
            });
        }
        out.extend(sel);
    }
    Ok(out)
}

/// Computes keys and statuses. `cache` is read only.
pub fn plan(
    p: &Pipeline,
    g: &StageGraph,
    cache: &Cache,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    let pipeline_id = std::fs::canonicalize(&p.file)
        .unwrap_or_else(|_| p.file.clone())
        .to_string_lossy()
        .to_string();
    let n = p.instances.len();
    let targets = resolve(p, &opts.only)?;
    let mut selected = vec![opts.only.is_empty(); n];
    if !opts.only.is_empty() {
        for i in g.with_ancestors(&targets) {
            selected[i] = true;
        }
    }
    let forced: BTreeSet<usize> = g.with_descendants(&resolve(p, &opts.force)?);

    // each key's hex text, made once and cloned into every reader's material
    let mut hex_keys: Vec<String> = vec![String::new(); n];
    // (instance, key) in topological order
    let mut keyed: Vec<(usize, StageKey)> = Vec::with_capacity(n);
    for &i in g.topo_order() {
        let key = material_key(p, i, &opts.backend, |up| &hex_keys[up]);
        hex_keys[i] = key.hex();
        keyed.push((i, key));
    }
    // the index lookups, independent of each other, on every core
    let cached: Vec<bool> = keyed
        .par_iter()
        .map(|(i, key)| {
            if selected[*i] && !forced.contains(i) {
                cache.contains(key)
            } else {
                Ok(false)
            }
        })
        .collect::<Result<_, _>>()?;
    let needed = if opts.only.is_empty() {
        // every stage is asked for
        vec![true; n]
    } else {
        let mut cached_by_instance = vec![false; n];
        for ((i, _), &c) in keyed.iter().zip(&cached) {
            cached_by_instance[*i] = c;
        }
        needed_by_targets(g, &targets, |i| {
            selected[i] && (forced.contains(&i) || !cached_by_instance[i])
        })
    };
    let mut items: Vec<PlanItem> = Vec::with_capacity(n);
    let mut by_instance = vec![0usize; n];
    for ((i, key), cached) in keyed.into_iter().zip(cached) {
        let inst = &p.instances[i];
        let (status, mut reasons) = if !selected[i] {
            (Status::NotSelected, Vec::new())
        } else if forced.contains(&i) {
            (Status::Run, vec![RunReason::Forced])
        } else if cached {
            (Status::Cached, Vec::new())
        } else if !needed[i] {
            (Status::NotNeeded, Vec::new())
        } else {
            let last = cache.last_run(&pipeline_id, &inst.name)?;
            let material = material_of(p, i, &opts.backend, |up| hex_keys[up].clone());
            (
                Status::Run,
                why(&key, &material, &input_stages_of(p, i), last.as_ref()),
            )
        };
        if status == Status::Run && inst.uses_backend {
            let dir = cache.checkpoint_path(&key);
            if let Some(checkpoint) = crate::train::checkpoint::newest_name(&dir) {
                reasons.push(RunReason::Resumes { checkpoint });
            }
        }
        by_instance[i] = items.len();
        items.push(PlanItem {
            instance: i,
            key,
            status,
            reasons: reasons.into(),
        });
    }
    Ok(Plan {
        items,
        by_instance,
        pipeline_id,
        backend: opts.backend.clone(),
    })
}

/// Which instances a run needs: each of `targets`, and each input of a needed instance
/// that `runs_if_needed` (walked from the sinks up, so that a cached target needs nothing
/// above it).
fn needed_by_targets(
    g: &StageGraph,
    targets: &[usize],
    runs_if_needed: impl Fn(usize) -> bool,
) -> Vec<bool> {
    let mut needed = vec![false; g.topo_order().len()];
    for &t in targets {
        needed[t] = true;
    }
    for &i in g.topo_order().iter().rev() {
        if needed[i] && runs_if_needed(i) {
            for up in g.parents(i) {
                needed[up] = true;
            }
        }
    }
    needed
}

/// Each input of `instance` -> the keys it reads: the upstream key (`hex_key` of the
/// upstream instance), with `/sub/path` appended for `stage.sub/path`.
fn input_keys_of<K: AsRef<str>>(
    p: &Pipeline,
    instance: usize,
    hex_key: impl Fn(usize) -> K,
) -> BTreeMap<String, Vec<String>> {
    p.instances[instance]
        .inputs
        .iter()
        .map(|(name, refs)| {
            let keys = refs
                .iter()
                .map(|r| {
                    let up = hex_key(r.instance);
                    match &r.sub {
                        Some(sub) => format!("{}/{sub}", up.as_ref()),
                        None => up.as_ref().to_string(),
                    }
                })
                .collect();
            (name.to_string(), keys)
        })
        .collect()
}

/// The material of `instance`, its inputs' keys from `hex_key`.
fn material_of<K: AsRef<str>>(
    p: &Pipeline,
    instance: usize,
    backend: &str,
    hex_key: impl Fn(usize) -> K,
) -> KeyMaterial {
    let inst = &p.instances[instance];
    KeyMaterial {
        kind: inst.kind.to_string(),
        version: inst.version,
        params: inst.params.parsed().into_owned(),
        inputs: input_keys_of(p, instance, hex_key),
        fingerprint: inst.fingerprint().map(String::from),
        backend: inst.uses_backend.then(|| backend.to_string()),
    }
}

/// The key of `instance` without copying its params: the same bytes hashed as
/// [`KeyMaterial::key`] of [`material_of`] (a test holds them equal).
fn material_key<K: AsRef<str>>(
    p: &Pipeline,
    instance: usize,
    backend: &str,
    hex_key: impl Fn(usize) -> K,
) -> StageKey {
    let inst = &p.instances[instance];
    KeyParts {
        kind: &inst.kind,
        version: inst.version,
        params: ParamsText::Canonical(inst.params.canonical()),
        inputs: &input_keys_of(p, instance, hex_key),
        fingerprint: inst.fingerprint(),
        backend: inst.uses_backend.then_some(backend),
    }
    .key()
}

/// Upstream instance names per input of `instance`.
fn input_stages_of(p: &Pipeline, instance: usize) -> BTreeMap<String, Vec<String>> {
    p.instances[instance]
        .inputs
        .iter()
        .map(|(name, refs)| {
            let names = refs
                .iter()
                .map(|r| p.instances[r.instance].name.clone())
                .collect();
            (name.to_string(), names)
        })
        .collect()
}

/// Which upstream stages of one input give a new or changed result (`now_keys` beside
/// `now_stages`, by name against the last run's), and which it no longer reads. A last
/// run without stage names (or with lists of another length) is compared by position.
fn upstream_changes(
    now_keys: &[String],
    now_stages: &[String],
    old_keys: &[String],
    old_stages: &[String],
) -> (Vec<String>, Vec<String>) {
    let name = |stages: &[String], i: usize| {
        stages
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("#{}", i + 1))
    };
    if old_stages.len() != old_keys.len() || now_stages.len() != now_keys.len() {
        let changed = (0..now_keys.len())
            .filter(|&i| old_keys.get(i) != Some(&now_keys[i]))
            .map(|i| name(now_stages, i))
            .collect();
        let removed = (now_keys.len()..old_keys.len())
            .map(|i| name(old_stages, i))
            .collect();
        return (changed, removed);
    }
    let before: HashMap<&str, &str> = old_stages
        .iter()
        .map(String::as_str)
        .zip(old_keys.iter().map(String::as_str))
        .collect();
    let changed = now_stages
        .iter()
        .zip(now_keys)
        .filter(|(stage, key)| before.get(stage.as_str()) != Some(&key.as_str()))
        .map(|(stage, _)| stage.clone())
        .collect();
    let now: HashSet<&str> = now_stages.iter().map(String::as_str).collect();
    let removed = old_stages
        .iter()
        .filter(|stage| !now.contains(stage.as_str()))
        .cloned()
        .collect();
    (changed, removed)
}

/// Compares what a stage is made from now with its last run.
fn why(
    key: &StageKey,
    now: &KeyMaterial,
    now_stages: &BTreeMap<String, Vec<String>>,
    last: Option<&LastRun>,
) -> Vec<RunReason> {
    let Some(last) = last else {
        return vec![RunReason::New];
    };
    if last.key == key.hex() {
        return vec![RunReason::OutputMissing];
    }
    let before = &last.material;
    let mut reasons = Vec::new();
    if before.kind != now.kind {
        reasons.push(RunReason::KindChanged {
            from: before.kind.clone(),
            to: now.kind.clone(),
        });
    } else if before.version != now.version {
        reasons.push(RunReason::VersionBumped {
            kind: now.kind.clone(),
            from: before.version,
            to: now.version,
        });
    }
    let empty = serde_json::Map::new();
    let old = before.params.as_object().unwrap_or(&empty);
    let new = now.params.as_object().unwrap_or(&empty);
    for (k, v) in new {
        match old.get(k) {
            Some(o) if o != v => reasons.push(RunReason::ParamChanged {
                param: k.clone(),
                from: o.clone(),
                to: v.clone(),
            }),
            None => reasons.push(RunReason::ParamAdded {
                param: k.clone(),
                value: v.clone(),
            }),
            _ => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        reasons.push(RunReason::ParamRemoved { param: k.clone() });
    }
    for (name, ks) in &now.inputs {
        match before.inputs.get(name) {
            None => reasons.push(RunReason::InputAdded {
                input: name.clone(),
            }),
            Some(old) if old != ks => {
                let (changed, removed) = upstream_changes(
                    ks,
                    now_stages.get(name).map_or(&[][..], Vec::as_slice),
                    old,
                    last.input_stages.get(name).map_or(&[][..], Vec::as_slice),
                );
                reasons.push(RunReason::InputChanged {
                    input: name.clone(),
                    changed,
                    removed,
                })
            }
            _ => {}
        }
    }
    for name in before
        .inputs
        .keys()
        .filter(|n| !now.inputs.contains_key(*n))
    {
        reasons.push(RunReason::InputRemoved {
            input: name.clone(),
        });
    }
    if before.fingerprint != now.fingerprint {
        reasons.push(RunReason::SourceChanged);
    }
    if before.backend != now.backend {
        reasons.push(RunReason::BackendChanged {
            from: before.backend.clone().unwrap_or_else(|| "-".into()),
            to: now.backend.clone().unwrap_or_else(|| "-".into()),
        });
    }
    if reasons.is_empty() {
        reasons.push(RunReason::New);
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::StageRegistry;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_changed_input_names_the_upstream_stages_whose_result_changed() {
        // one cell of three changed, one gone, one new
        let (changed, removed) = upstream_changes(
            &names(&["k1", "k2*", "k4"]),
            &names(&["t[1]", "t[2]", "t[4]"]),
            &names(&["k1", "k2", "k3"]),
            &names(&["t[1]", "t[2]", "t[3]"]),
        );
        assert_eq!(changed, names(&["t[2]", "t[4]"]));
        assert_eq!(removed, names(&["t[3]"]));
        // a record without stage names: by position
        let (changed, removed) = upstream_changes(
            &names(&["k1", "k2*"]),
            &names(&["a", "b"]),
            &names(&["k1", "k2", "k3"]),
            &[],
        );
        assert_eq!(changed, names(&["b"]));
        assert_eq!(removed, names(&["#3"]));
    }

    /// A two-seed matrix `a` and a stage `b` reading one file of each cell (`up`) and
    /// every cell whole (`all`), loaded from a file in `dir`.
    fn matrix_and_reader(dir: &std::path::Path) -> Pipeline {
        let path = dir.join("p.yaml");
        std::fs::write(
            &path,
            "stages:\n  a:\n    kind: shell\n    params: {cmd: echo, outs: [o/x], env: {N: 2e-5}}\n    matrix: {env.SEED: [1, 2]}\n  b:\n    kind: shell\n    params: {cmd: cat, outs: [p]}\n    inputs: {up: a.o/x, all: [a]}\n",
        )
        .expect("write");
        crate::pipeline::load_pipeline(&path, None, &StageRegistry::builtin()).expect("loads")
    }

    #[test]
    fn what_a_cached_target_reads_is_not_needed_and_what_a_running_one_reads_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = matrix_and_reader(dir.path());
        let g = StageGraph::build(&p).expect("acyclic");
        let b = p.select("b");
        let a = p.select("a");
        let needed_of = |targets: &[usize], running: &[usize]| -> Vec<String> {
            let needed = needed_by_targets(&g, targets, |i| running.contains(&i));
            (0..p.instances.len())
                .filter(|&i| needed[i])
                .map(|i| p.instances[i].name.clone())
                .collect()
        };
        // `b` cached: neither cell of `a` is needed, whether cached or not
        assert_eq!(needed_of(&b, &a), vec!["b".to_string()]);
        // `b` runs: it needs both cells
        assert_eq!(needed_of(&b, &[b[0]]).len(), 3);
        // one cell asked for: the other and the reader are not
        assert_eq!(needed_of(&a[..1], &a), vec![p.instances[a[0]].name.clone()]);
    }

    #[test]
    fn the_key_hashed_in_place_is_the_key_of_the_material() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = matrix_and_reader(dir.path());
        let mut hex: Vec<String> = vec![String::new(); p.instances.len()];
        let g = StageGraph::build(&p).expect("acyclic");
        for &i in g.topo_order() {
            for backend in ["flex", "cuda"] {
                let material = material_of(&p, i, backend, |up| hex[up].clone());
                assert_eq!(
                    material_key(&p, i, backend, |up| &hex[up]),
                    material.key(),
                    "{}",
                    p.instances[i].name
                );
            }
            hex[i] = material_key(&p, i, "flex", |up| &hex[up]).hex();
        }
        let b = p.select("b")[0];
        let material = material_of(&p, b, "flex", |up| hex[up].clone());
        assert!(material.inputs["up"][0].ends_with("/o/x"));
        assert_eq!(material.inputs["all"].len(), 2);
    }

    #[test]
    fn a_recorded_last_run_reads_back_as_the_material_and_upstream_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = matrix_and_reader(dir.path());
        // as a training kind's: its key and record name the backend
        let b = p.select("b")[0];
        p.instances[b].uses_backend = true;
        let g = StageGraph::build(&p).expect("acyclic");
        let cache = Cache::open(&dir.path().join("cache")).expect("cache");
        let opts = PlanOptions {
            backend: "flex".into(),
            ..PlanOptions::default()
        };
        let plan = plan(&p, &g, &cache, &opts).expect("plans");
        for it in &plan.items {
            let name = &p.instances[it.instance].name;
            cache
                .record_last_run(&plan.pipeline_id, name, &plan.last_run(&p, it.instance))
                .expect("records");
            let expected = LastRun {
                key: it.key.hex(),
                material: plan.material(&p, it.instance),
                input_stages: plan.input_stages(&p, it.instance),
            };
            let read = cache.last_run(&plan.pipeline_id, name).expect("reads");
            assert_eq!(read.as_ref(), Some(&expected), "{name}");
        }
        let read = cache.last_run(&plan.pipeline_id, "b").expect("reads");
        let material = read.expect("recorded").material;
        assert_eq!(material.backend.as_deref(), Some("flex"));
        assert!(material.inputs["up"][0].ends_with("/o/x"));
    }
}
