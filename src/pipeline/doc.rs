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
    /// Stage name -> definition.
    #[serde(default, deserialize_with = "unique_keys")]
    pub stages: BTreeMap<String, StageDoc>,
    /// Profile name -> (stage name or `kind:KIND`) -> param overrides (and `matrix:`).
    #[serde(default, deserialize_with = "unique_keys")]
    pub profiles: BTreeMap<String, BTreeMap<String, serde_yaml::Mapping>>,
}

/// One stage (or template) as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StageDoc {
    #[serde(default)]
    pub kind: Option<String>,
    /// Name of a template whose kind, params, inputs and matrix this stage starts from.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub params: serde_yaml::Mapping,
    /// Input name -> upstream stage (`stage`, `stage.sub/path`) or a list of them.
    #[serde(default)]
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
    #[serde(default)]
    pub resources: Option<super::Resources>,
}

/// A stage's `inputs:`, input name -> binding, sorted by name: a list, not a `BTreeMap`,
/// whose first node has room for eleven inputs (632 bytes) where most stages bind one (63
/// MB over a file of 100,000 stages, #27).
#[derive(Debug, Clone, Default)]
pub struct InputDocs(Vec<(String, InputDoc)>);

impl InputDocs {
    pub fn keys(&self) -> impl Iterator<Item = &String> + Clone {
        self.0.iter().map(|(name, _)| name)
    }

    pub fn values(&self) -> impl Iterator<Item = &InputDoc> + Clone {
        self.0.iter().map(|(_, doc)| doc)
    }

    /// `over`'s bindings laid over these (a stage's own inputs over its template's).
    pub fn overlay(&mut self, over: InputDocs) {
        for (name, doc) in over.0 {
            match self.0.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
                Ok(at) => self.0[at].1 = doc,
                Err(at) => self.0.insert(at, (name, doc)),
            }
        }
    }
}

/// The bindings, by input name.
impl<'a> IntoIterator for &'a InputDocs {
    type Item = (&'a String, &'a InputDoc);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, InputDoc)>,
        fn(&'a (String, InputDoc)) -> (&'a String, &'a InputDoc),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(name, doc)| (name, doc))
    }
}

/// A mapping whose every name is unique (a name written twice is refused, as elsewhere).
impl<'de> Deserialize<'de> for InputDocs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map: BTreeMap<String, InputDoc> = unique_keys(deserializer)?;
        Ok(InputDocs(map.into_iter().collect()))
    }
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
