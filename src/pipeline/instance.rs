//! What loading produces: the expanded [`Pipeline`], its [`StageInstance`]s (a YAML stage
//! or one cell of its matrix) and their matrix coordinates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::sorted_map::SortedMap;

/// A reference from an input to one upstream instance (optionally a path inside its output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRef {
    /// Index into [`Pipeline::instances`].
    pub instance: usize,
    /// `sub/path` of `stage.sub/path`.
    pub sub: Option<String>,
}

/// An instance's inputs, name -> the upstream instances bound to it, in name order.
pub type BoundInputs = SortedMap<Vec<InputRef>>;

/// A cell's matrix coordinates, axis -> value, in axis order ([`SortedMap::to_map`] gives
/// the map that stages and reports are handed).
pub type CellCoords = SortedMap<serde_json::Value>;

/// One runnable stage: a YAML stage, or one cell of its matrix. Serialized only into the
/// cache's store of expanded pipelines (`expanded_store`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageInstance {
    /// `train` or, for a matrix cell, `train[fold=3,head=cls]`.
    pub name: String,
    /// The stage name in the YAML (one text shared by the stage's cells: a copy in each
    /// of 100,000 cells was 4 MB, #27).
    #[serde(deserialize_with = "super::shared_text::deserialize")]
    pub base: Arc<str>,
    /// Its kind (shared as `base` is).
    #[serde(deserialize_with = "super::shared_text::deserialize")]
    pub kind: Arc<str>,
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
    /// What ties it to the workspace outside the cache (`None` for most stages: 48 bytes
    /// in each of 100,000 cells otherwise, #27). Read it with [`StageInstance::fingerprint`]
    /// and [`StageInstance::publish`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Box<WorkspaceTies>>,
    /// What a cluster job of this cell asks for (`resources:`), `None` when nothing is set
    /// (most stages: 112 bytes in every instance otherwise); not part of the key. Read it
    /// with [`StageInstance::resources`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Box<super::Resources>>,
    /// The line of the pipeline file ([`Pipeline::file`]) where the stage is defined (for
    /// messages).
    pub line: usize,
}

/// A stage's ties to the workspace: content it reads from there and a folder it copies
/// its output to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceTies {
    /// Extra content fingerprint (e.g. of a local `path:` source), part of the key.
    pub fingerprint: Option<String>,
    /// Workspace folder that receives a copy of the output (`publish:`).
    pub publish: Option<PathBuf>,
}

impl WorkspaceTies {
    /// The ties of a stage with this `fingerprint` and `publish` folder, `None` when it
    /// has neither.
    pub fn boxed(fingerprint: Option<String>, publish: Option<PathBuf>) -> Option<Box<Self>> {
        (fingerprint.is_some() || publish.is_some()).then(|| {
            Box::new(WorkspaceTies {
                fingerprint,
                publish,
            })
        })
    }
}

impl StageInstance {
    /// Extra content fingerprint (e.g. of a local `path:` source), part of the key.
    pub fn fingerprint(&self) -> Option<&str> {
        self.workspace.as_ref()?.fingerprint.as_deref()
    }

    /// Workspace folder that receives a copy of the output (`publish:`).
    pub fn publish(&self) -> Option<&std::path::Path> {
        self.workspace.as_ref()?.publish.as_deref()
    }

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
    /// Indices of the instances a `--only`-style selector names: YAML stage `base`, the
    /// instance named exactly so, the cells of `base[k=v,...]` whose coordinates match the
    /// (partial) filters, or with a `*` in the stage name every stage it matches.
    pub fn select(&self, selector: &str) -> Vec<usize> {
        let selector = super::stage_selector::StageSelector::parse(selector);
        self.instances
            .iter()
            .enumerate()
            .filter(|(_, s)| selector.matches(s))
            .map(|(i, _)| i)
            .collect()
    }

    /// Why `selector` selects nothing (meaningful when [`Pipeline::select`] is empty).
    pub fn selection_miss(&self, selector: &str) -> super::SelectionMiss {
        super::stage_selector::StageSelector::parse(selector).miss(self)
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

    #[test]
    fn a_cell_without_workspace_ties_stays_small() {
        // a 100,000-cell matrix holds every instance at once: 8 bytes here are 0.8 MB (#27)
        assert!(WorkspaceTies::boxed(None, None).is_none());
        let size = std::mem::size_of::<StageInstance>();
        assert!(size <= 168, "StageInstance is {size} bytes");
    }

    #[test]
    fn cells_decoded_on_one_thread_share_their_stage_name_and_kind() {
        let cell = |i: usize| StageInstance {
            name: format!("train[I={i}]"),
            base: "train".into(),
            kind: "shell".into(),
            version: 1,
            uses_backend: false,
            params: super::super::StageParams::new(serde_json::json!({"cmd": "echo"})),
            coords: CellCoords::default(),
            inputs: BoundInputs::default(),
            workspace: None,
            resources: None,
            line: 3,
        };
        let decoded: Vec<StageInstance> = (0..3)
            .map(|i| serde_json::to_string(&cell(i)).expect("encodes"))
            .map(|line| serde_json::from_str(&line).expect("decodes"))
            .collect();
        assert_eq!(&*decoded[2].base, "train");
        assert_eq!(decoded[2].name, "train[I=2]");
        assert!(Arc::ptr_eq(&decoded[0].base, &decoded[2].base));
        assert!(Arc::ptr_eq(&decoded[0].kind, &decoded[1].kind));
    }
}
