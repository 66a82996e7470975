//! What loading produces: the expanded [`Pipeline`], its [`StageInstance`]s (a YAML stage
//! or one cell of its matrix) and their matrix coordinates.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::bind_inputs::InputTarget;

/// A reference from an input to one upstream instance (optionally a path inside its output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRef {
    /// Index into [`Pipeline::instances`].
    pub instance: usize,
    /// `sub/path` of `stage.sub/path`.
    pub sub: Option<String>,
}

/// An instance's inputs, name -> the upstream instances bound to it, in name order: a
/// map of the one or two entries a stage has, kept in a vector (a `BTreeMap` allocated a
/// 544-byte node for each, a fifth of a 100,000-stage pipeline's memory, #27).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "BTreeMap<String, Vec<InputRef>>",
    into = "BTreeMap<String, Vec<InputRef>>"
)]
pub struct BoundInputs(Vec<(String, Vec<InputRef>)>);

impl BoundInputs {
    fn at(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    /// The upstream instances bound to input `name`.
    pub fn get(&self, name: &str) -> Option<&Vec<InputRef>> {
        self.at(name).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.at(name).is_ok()
    }

    /// Binds `refs` to input `name` (replacing what was bound to it).
    pub fn insert(&mut self, name: String, refs: Vec<InputRef>) {
        match self.at(&name) {
            Ok(i) => self.0[i].1 = refs,
            Err(i) => self.0.insert(i, (name, refs)),
        }
    }

    /// Keeps the inputs `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut Vec<InputRef>) -> bool) {
        self.0.retain_mut(|(name, refs)| keep(name, refs));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(name, refs)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<InputRef>)> {
        self.0.iter().map(|(name, refs)| (name, refs))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(name, _)| name)
    }

    pub fn values(&self) -> impl Iterator<Item = &Vec<InputRef>> {
        self.0.iter().map(|(_, refs)| refs)
    }
}

impl<'a> IntoIterator for &'a BoundInputs {
    type Item = (&'a String, &'a Vec<InputRef>);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Vec<InputRef>)>,
        fn(&'a (String, Vec<InputRef>)) -> (&'a String, &'a Vec<InputRef>),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(name, refs)| (name, refs))
    }
}

impl std::ops::Index<&str> for BoundInputs {
    type Output = Vec<InputRef>;
    /// Panics when `name` is not bound, as a map's index does.
    fn index(&self, name: &str) -> &Vec<InputRef> {
        match self.get(name) {
            Some(refs) => refs,
            None => panic!("no input `{name}` is bound"),
        }
    }
}

impl From<BTreeMap<String, Vec<InputRef>>> for BoundInputs {
    fn from(map: BTreeMap<String, Vec<InputRef>>) -> Self {
        // a BTreeMap iterates in name order: already sorted
        BoundInputs(map.into_iter().collect())
    }
}

impl From<BoundInputs> for BTreeMap<String, Vec<InputRef>> {
    fn from(inputs: BoundInputs) -> Self {
        inputs.0.into_iter().collect()
    }
}

/// A cell's matrix coordinates, axis -> value, in axis order: a map of the one or two axes
/// a cell has, kept in a vector (a `BTreeMap` allocated a 632-byte node for each cell, a
/// quarter of a 100,000-cell matrix's memory, #27). [`CellCoords::to_map`] gives the map
/// that stages and reports are handed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Coords", into = "Coords")]
pub struct CellCoords(Vec<(String, serde_json::Value)>);

impl CellCoords {
    fn at(&self, axis: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(a, _)| a.as_str().cmp(axis))
    }

    /// The value on `axis`.
    pub fn get(&self, axis: &str) -> Option<&serde_json::Value> {
        self.at(axis).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, axis: &str) -> bool {
        self.at(axis).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(axis, value)` in axis order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &serde_json::Value)> {
        self.0.iter().map(|(axis, value)| (axis, value))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(axis, _)| axis)
    }

    /// The coordinates as a map.
    pub fn to_map(&self) -> BTreeMap<String, serde_json::Value> {
        self.0.iter().cloned().collect()
    }
}

impl std::ops::Index<&str> for CellCoords {
    type Output = serde_json::Value;
    /// Panics when the cell has no such axis, as a map's index does.
    fn index(&self, axis: &str) -> &serde_json::Value {
        match self.get(axis) {
            Some(value) => value,
            None => panic!("no matrix axis `{axis}` in this cell"),
        }
    }
}

impl From<Coords> for CellCoords {
    fn from(map: Coords) -> Self {
        // a BTreeMap iterates in axis order: already sorted
        CellCoords(map.into_iter().collect())
    }
}

impl From<CellCoords> for Coords {
    fn from(coords: CellCoords) -> Self {
        coords.0.into_iter().collect()
    }
}

/// One runnable stage: a YAML stage, or one cell of its matrix. Serialized only into the
/// cache's store of expanded pipelines (`expanded_store`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageInstance {
    /// `train` or, for a matrix cell, `train[fold=3,head=cls]`.
    pub name: String,
    /// The stage name in the YAML.
    pub base: String,
    pub kind: String,
    pub version: u32,
    pub uses_backend: bool,
    /// Params normalized by the kind (defaults filled in), kept as canonical JSON text.
    pub params: super::StageParams,
    /// Matrix coordinates of this cell.
    #[serde(default, skip_serializing_if = "CellCoords::is_empty")]
    pub coords: CellCoords,
    /// Input name -> bound upstream instances.
    #[serde(default, skip_serializing_if = "BoundInputs::is_empty")]
    pub inputs: BoundInputs,
    /// Extra content fingerprint (e.g. of a local `path:` source), part of the key.
    pub fingerprint: Option<String>,
    /// Workspace folder that receives a copy of the output (`publish:`).
    pub publish: Option<PathBuf>,
    /// What a cluster job of this cell asks for (`resources:`), `None` when nothing is set
    /// (most stages: 112 bytes in every instance otherwise); not part of the key. Read it
    /// with [`StageInstance::resources`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Box<super::Resources>>,
    /// The line of the pipeline file ([`Pipeline::file`]) where the stage is defined (for
    /// messages).
    pub line: usize,
}

impl StageInstance {
    /// What a cluster job of this cell asks for (the scheduler's defaults when unset).
    pub fn resources(&self) -> &super::Resources {
        static UNSET: super::Resources = super::Resources::UNSET;
        self.resources.as_deref().unwrap_or(&UNSET)
    }
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

/// Matrix coordinates of a cell: axis -> value.
pub(super) type Coords = BTreeMap<String, serde_json::Value>;

/// Compact text of a coordinate value for instance names: strings bare, others as JSON.
pub(super) fn coord_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A coordinate value as text that is equal exactly when the values are.
pub(super) fn coord_key(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
            crate::hash::canonical_json(v)
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(i: usize) -> Vec<InputRef> {
        vec![InputRef {
            instance: i,
            sub: None,
        }]
    }

    #[test]
    fn cell_coords_keep_axis_order_and_read_and_write_as_a_map() {
        let map: Coords = [
            ("seed".to_string(), serde_json::json!(2)),
            ("head".to_string(), serde_json::json!("cls")),
        ]
        .into();
        let coords = CellCoords::from(map.clone());
        assert_eq!(coords.keys().collect::<Vec<_>>(), ["head", "seed"]);
        assert_eq!(coords.get("seed"), Some(&serde_json::json!(2)));
        assert_eq!(coords["head"], "cls");
        assert!(coords.get("fold").is_none() && !coords.contains_key("fold"));
        assert_eq!(coords.to_map(), map);
        let json = serde_json::to_string(&coords).expect("serializes");
        assert_eq!(json, r#"{"head":"cls","seed":2}"#);
        let back: CellCoords = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, coords);
    }

    #[test]
    fn bound_inputs_keep_name_order_and_read_and_write_as_a_map() {
        let mut inputs = BoundInputs::default();
        inputs.insert("model".into(), refs(1));
        inputs.insert("data".into(), refs(2));
        inputs.insert("model".into(), refs(3));
        let names: Vec<&String> = inputs.keys().collect();
        assert_eq!(names, ["data", "model"]);
        assert_eq!(inputs["model"], refs(3));
        assert!(inputs.get("nope").is_none() && !inputs.contains_key("nope"));
        let json = serde_json::to_string(&inputs).expect("serializes");
        assert_eq!(
            json,
            r#"{"data":[{"instance":2,"sub":null}],"model":[{"instance":3,"sub":null}]}"#
        );
        let back: BoundInputs = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, inputs);
        inputs.retain(|name, _| name != "data");
        assert_eq!(inputs.len(), 1);
    }
}
