//! The YAML schema of a pipeline file, as written by users (before expansion).

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A YAML mapping into a `BTreeMap` that refuses a key written twice: serde's own map
/// impl keeps the last one silently, so a second stage `a:` would replace the first.
pub(super) fn unique_keys<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueKeys<V>(PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueKeys<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!(
                        "`{key}` is defined twice (the second would silently replace the first)"
                    )));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            // `stages:` with nothing under it
            Ok(BTreeMap::new())
        }
    }
    deserializer.deserialize_map(UniqueKeys(PhantomData))
}

/// A pipeline file: `stages:` plus optional `include:`, `templates:`, `profiles:`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PipelineDoc {
    /// Free text shown by `pipe plan`.
    #[serde(default)]
    pub description: Option<String>,
    /// Files (relative to this file) whose `templates:` and `profiles:` are merged in.
    #[serde(default)]
    pub include: Vec<String>,
    /// Reusable stage definitions that stages name with `template:`.
    #[serde(default, deserialize_with = "unique_keys")]
    pub templates: BTreeMap<String, StageDoc>,
    /// Stage name -> definition. Boxed, so that the passes that move the stages into maps
    /// of their own (pieces put together, templates merged) move a pointer, not 200 bytes:
    /// the maps' nodes are made on one thread and the freed ones stay with the parsing
    /// threads, 22 MB a move at 100,000 stages (#27).
    #[serde(default, deserialize_with = "unique_keys")]
    pub stages: BTreeMap<String, Box<StageDoc>>,
    /// Profile name -> its overrides (and the profile it extends).
    #[serde(default, deserialize_with = "unique_keys")]
    pub profiles: BTreeMap<String, ProfileDoc>,
}

/// One profile as written: (stage name or `kind:KIND`) -> param overrides (and `matrix:`,
/// `resources:`), after those of the profile it `extends:`, if any. A probe of one setting
/// is then one line (`lr_probe: {extends: cpu, "kind:finetune": {lr: 2.0e-4}}`), not a copy
/// of `cpu` that drifts from it.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(
    expecting = "a profile: a mapping from stage names (or `kind:KIND`) to param overrides, \
                 with an optional `extends:`"
)]
pub struct ProfileDoc {
    /// The profile whose overrides apply first (so that this one's win).
    #[serde(default)]
    pub extends: Option<String>,
    #[serde(flatten)]
    pub overrides: BTreeMap<String, serde_yaml::Mapping>,
}

/// One stage (or template) as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a stage: a mapping with `kind:` (or `template:`), `params:`, `inputs:`, ..."
)]
pub struct StageDoc {
    #[serde(default)]
    pub kind: Option<String>,
    /// Name of a template whose kind, params, inputs and matrix this stage starts from.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub params: ParamsDoc,
    /// Input name -> upstream stage (`stage`, `stage.sub/path`) or a list of them.
    #[serde(default, deserialize_with = "unique_sorted_keys")]
    pub inputs: InputDocs,
    /// Param -> values; the stage is expanded into the cartesian product.
    #[serde(default, deserialize_with = "unique_keys")]
    pub matrix: BTreeMap<String, MatrixAxisDoc>,
    /// Coordinates to follow from the inputs: the stage is expanded once per distinct
    /// combination of these coordinates among its inputs' matrix cells (e.g. an
    /// `evaluate` per `[head, seed]` of a fine-tuning matrix). They are not params.
    #[serde(default)]
    pub foreach: Vec<String>,
    /// Workspace folder (relative to the current directory) that receives a copy of the
    /// stage's output after each run, e.g. `reports/quickstart` for a report.
    #[serde(default)]
    pub publish: Option<String>,
    /// What each cell asks a cluster scheduler for (`--executor slurm`); not in the key.
    /// Boxed: most stages set none, and 112 bytes inline in each of 100,000 stages was a
    /// tenth of a loaded file's memory (#27).
    #[serde(default)]
    pub resources: Option<Box<super::Resources>>,
}

/// A stage's (or template's) `params:`, kept from the parse on as the JSON text of the
/// map they become (keys as text, values as JSON; what expansion reads): a YAML mapping
/// of two params took about 900 bytes (its hash table, 80-byte values, a string each),
/// most of a file's memory while it is loaded (90 MB at 100,000 stages, #27).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamsDoc(Box<str>);

impl ParamsDoc {
    /// The params as a JSON map (empty when none were written).
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        if self.0.is_empty() {
            return serde_json::Map::new();
        }
        // written by `from_map`, so it parses
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    fn from_map(map: &serde_json::Map<String, serde_json::Value>) -> ParamsDoc {
        if map.is_empty() {
            return ParamsDoc::default();
        }
        ParamsDoc(
            serde_json::to_string(map)
                .unwrap_or_default()
                .into_boxed_str(),
        )
    }

    /// Whether param `key` is written.
    pub fn contains_key(&self, key: &str) -> bool {
        self.to_map().contains_key(key)
    }

    /// Sets param `key` (a profile's override).
    pub fn insert(&mut self, key: &serde_yaml::Value, value: &serde_yaml::Value) {
        let mut map = self.to_map();
        map.insert(key_str(key), yaml_to_json(value));
        *self = ParamsDoc::from_map(&map);
    }

    /// These params laid over `under`'s (a stage's own over its template's).
    pub fn over(self, under: &ParamsDoc) -> ParamsDoc {
        let mut map = under.to_map();
        map.extend(self.to_map());
        ParamsDoc::from_map(&map)
    }
}

/// A YAML mapping, converted as expansion reads params (keys by [`key_str`], values by
/// [`yaml_to_json`]).
impl<'de> Deserialize<'de> for ParamsDoc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mapping = serde_yaml::Mapping::deserialize(deserializer)?;
        let map = mapping
            .iter()
            .map(|(k, v)| (key_str(k), yaml_to_json(v)))
            .collect();
        Ok(ParamsDoc::from_map(&map))
    }
}

/// A stage's `inputs:`, input name -> binding, sorted by name (read through
/// [`unique_keys`]: a name written twice is refused).
pub type InputDocs = super::sorted_map::SortedMap<InputDoc>;

/// [`unique_keys`] into a [`SortedMap`](super::sorted_map::SortedMap).
fn unique_sorted_keys<'de, D, V>(
    deserializer: D,
) -> Result<super::sorted_map::SortedMap<V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    unique_keys(deserializer).map(Into::into)
}

/// An input binding: one reference or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "an input is an upstream stage (`stage`, `stage.sub/path`, `stage[axis=value]`) or a list of them"
)]
pub enum InputDoc {
    One(String),
    Many(Vec<String>),
}

/// Values of one matrix axis: a list, `{range: N}` / `{range: [A, B]}`, or named variants
/// (`{pg: {query: "Protein OR Gene"}, d: {query: Drug}}`): the coordinate is the variant's
/// name and its params are set on the cell, as DVC's `foreach` over a dict.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a matrix axis is a list of values, `{range: N}` or `{range: [A, B]}` with \
                 integers (not `1e9`: write 1000000000), or named variants `{name: {param: value}}`"
)]
pub enum MatrixAxisDoc {
    Values(Vec<serde_yaml::Value>),
    Range { range: RangeDoc },
    Variants(BTreeMap<String, serde_yaml::Mapping>),
}

/// `range: N` (0..N) or `range: [A, B]` (A..B, B exclusive).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RangeDoc {
    Count(i64),
    Bounds([i64; 2]),
}

impl MatrixAxisDoc {
    /// How many values the axis has, counted without making them (a range can be huge).
    pub fn len(&self) -> u128 {
        match self {
            MatrixAxisDoc::Values(v) => v.len() as u128,
            MatrixAxisDoc::Range { range } => {
                let (a, b) = match range {
                    RangeDoc::Count(n) => (0, *n),
                    RangeDoc::Bounds([a, b]) => (*a, *b),
                };
                (i128::from(b) - i128::from(a)).max(0) as u128
            }
            MatrixAxisDoc::Variants(v) => v.len() as u128,
        }
    }

    /// Whether the axis has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The axis values as YAML values.
    pub fn values(&self) -> Vec<serde_yaml::Value> {
        match self {
            MatrixAxisDoc::Values(v) => v.clone(),
            MatrixAxisDoc::Range { range } => {
                let (a, b) = match range {
                    RangeDoc::Count(n) => (0, *n),
                    RangeDoc::Bounds([a, b]) => (*a, *b),
                };
                (a..b)
                    .map(|i| serde_yaml::Value::Number(i.into()))
                    .collect()
            }
            MatrixAxisDoc::Variants(v) => v
                .keys()
                .map(|k| serde_yaml::Value::String(k.clone()))
                .collect(),
        }
    }

    /// The params of variant `name` of a named-variants axis (`None` for other axes).
    pub fn variant_params(&self, name: &serde_yaml::Value) -> Option<&serde_yaml::Mapping> {
        match (self, name) {
            (MatrixAxisDoc::Variants(v), serde_yaml::Value::String(n)) => v.get(n),
            _ => None,
        }
    }
}

/// A YAML value as JSON (what params and coordinates are once expanded).
pub(super) fn yaml_to_json(v: &serde_yaml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// A YAML mapping key as text (a string bare, anything else as YAML).
pub(super) fn key_str(k: &serde_yaml::Value) -> String {
    match k {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(yaml: &str) -> ParamsDoc {
        serde_yaml::from_str::<StageDoc>(yaml)
            .expect("parses")
            .params
    }

    #[test]
    fn params_are_kept_as_the_map_expansion_reads() {
        let p = params("params: {lr: 2.0e-5, outs: [o], 3: three, on: true}");
        let map = p.to_map();
        assert_eq!(map["lr"], serde_json::json!(2.0e-5));
        assert_eq!(map["outs"], serde_json::json!(["o"]));
        // a key that is not a string is kept as its YAML text
        assert_eq!(map["3"], "three");
        assert_eq!(map["on"], true);
        assert!(p.contains_key("lr") && !p.contains_key("epochs"));
        assert!(params("kind: shell").to_map().is_empty());
        // `params: 5` is refused as before
        assert!(serde_yaml::from_str::<StageDoc>("params: 5").is_err());
    }

    #[test]
    fn a_stages_params_lie_over_its_templates_and_a_profile_sets_one() {
        let template = params("params: {lr: 1, epochs: 3}");
        let mut own = params("params: {lr: 2, seed: 7}").over(&template);
        assert_eq!(
            serde_json::Value::Object(own.to_map()),
            serde_json::json!({"lr": 2, "epochs": 3, "seed": 7})
        );
        own.insert(&"epochs".into(), &serde_yaml::Value::from(1));
        assert_eq!(own.to_map()["epochs"], 1);
    }
}
