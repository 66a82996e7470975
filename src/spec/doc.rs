//! The YAML schema of a pipeline file, as written by users (before expansion).

use std::collections::BTreeMap;

use serde::Deserialize;

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
    #[serde(default)]
    pub templates: BTreeMap<String, StageDoc>,
    /// Stage name -> definition.
    #[serde(default)]
    pub stages: BTreeMap<String, StageDoc>,
    /// Profile name -> (stage name or `kind:KIND`) -> param overrides (and `matrix:`).
    #[serde(default)]
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
    pub inputs: BTreeMap<String, InputDoc>,
    /// Param -> values; the stage is expanded into the cartesian product.
    #[serde(default)]
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
}

/// An input binding: one reference or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InputDoc {
    One(String),
    Many(Vec<String>),
}

/// Values of one matrix axis: a list, `{range: N}` / `{range: [A, B]}`, or named variants
/// (`{pg: {query: "Protein OR Gene"}, d: {query: Drug}}`): the coordinate is the variant's
/// name and its params are set on the cell, as DVC's `foreach` over a dict.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
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
