//! `split`: turns a corpus (input `corpus`) into training/evaluation files:
//! `train.jsonl`/`dev.jsonl`/`test.jsonl`, or `fold-K/{train,dev,test}.jsonl`, plus
//! `labels.json` and `stats.json`. Params: [`crate::data::SplitSpec`].

use super::{param_error, InputContract, InputSpec, ParamError, Stage, StageCtx, StageError};
use crate::data::schema::Task;
use crate::data::{split, SplitSpec};

/// Standard splits, shipped folds, or document-grouped k-fold.
pub struct SplitStage;

impl Stage for SplitStage {
    const KIND: &'static str = "split";
    const VERSION: u32 = 1;
    type Params = SplitSpec;
    const INPUTS: InputContract =
        InputContract::Declared(&[InputSpec::one("corpus", "a parsed corpus")]);

    fn output_task(_: &SplitSpec, input_task: &dyn Fn(&str) -> Option<Task>) -> Option<Task> {
        input_task("corpus")
    }

    fn check(p: &SplitSpec) -> Result<(), ParamError> {
        p.check().map_err(param_error)
    }

    fn run(ctx: &mut StageCtx, p: &SplitSpec) -> Result<(), StageError> {
        let corpus = ctx.inputs.path("corpus")?.to_path_buf();
        let (stats, notes) = split::split_dir(&corpus, p, &ctx.out_dir)?;
        for note in notes {
            ctx.progress.println(format!("{}: {note}", ctx.name));
        }
        ctx.write_json("metrics.json", &stats.to_json())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use crate::stages::{InputArtifact, Inputs, Progress, Stage, StageCtx, StageRegistry};

    use super::SplitStage;

    fn ctx(root: &Path, name: &str, inputs: &[(&str, &Path)]) -> StageCtx {
        let mut by_name = BTreeMap::new();
        for (input, path) in inputs {
            by_name.insert(
                input.to_string(),
                vec![InputArtifact {
                    stage: input.to_string(),
                    key: None,
                    coords: Default::default(),
                    path: path.to_path_buf(),
                }],
            );
        }
        let dir = root.join(name);
        for sub in ["out", "scratch", "checkpoint"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        StageCtx {
            name: name.into(),
            key: "k".into(),
            coords: BTreeMap::new(),
            inputs: Inputs { by_name },
            out_dir: dir.join("out"),
            scratch: dir.join("scratch"),
            checkpoint_dir: dir.join("checkpoint"),
            progress: Progress::hidden(),
            device: "cpu".into(),
            cancel: Arc::new(AtomicBool::new(false)),
            run: Default::default(),
        }
    }

    fn params<T: serde::de::DeserializeOwned>(kind: &str, yaml: &str) -> T {
        serde_json::from_value(normalized(kind, yaml)).unwrap()
    }

    /// Params through the registry, as the executor does: defaults filled, unknown params
    /// refused.
    fn normalized(kind: &str, yaml: &str) -> serde_json::Value {
        let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        StageRegistry::builtin()
            .get(kind)
            .unwrap()
            .normalize(&value)
            .unwrap()
    }

    /// Runs another kind through the registry (no stage module imports another).
    fn run_kind(kind: &str, ctx: &mut StageCtx, params: &serde_json::Value) -> Result<(), String> {
        StageRegistry::builtin()
            .get(kind)
            .unwrap()
            .run(ctx, params)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn fetch_corpus_split_chain_on_the_aimed_slice() {
        let root = tempfile::tempdir().unwrap();
        let aimed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpora/aimed");
        let source = format!("path:{}", aimed.display());
        let pin = crate::sources::fingerprint(&source).unwrap().unwrap();

        let mut fetch = ctx(root.path(), "fetch", &[]);
        let p = normalized("fetch", &format!("{{source: '{source}', blake3: {pin}}}"));
        let registry = StageRegistry::builtin();
        assert_eq!(
            registry
                .get("fetch")
                .unwrap()
                .fingerprint(&p)
                .unwrap()
                .as_deref(),
            Some(pin.as_str())
        );
        run_kind("fetch", &mut fetch, &p).unwrap();
        assert_eq!(
            crate::sources::tree_hash::dir_hash(&fetch.out_dir).unwrap(),
            pin
        );

        let mut corpus = ctx(root.path(), "corpus", &[("source", &fetch.out_dir)]);
        let folds: Vec<String> = (0..10).map(|k| format!("original/test_{k}.json")).collect();
        let cp = normalized(
            "corpus",
            &format!("{{format: aimed_json, folds: [{}]}}", folds.join(", ")),
        );
        run_kind("corpus", &mut corpus, &cp).unwrap();
        let stats = crate::data::stats_of(&corpus.out_dir).unwrap();
        assert_eq!(stats.groups().len(), 10);
        assert!(
            corpus.out_dir.join("instances.jsonl").is_file()
                && corpus.out_dir.join("metrics.json").is_file()
        );

        let mut split = ctx(root.path(), "split", &[("corpus", &corpus.out_dir)]);
        SplitStage::run(&mut split, &params("split", "method: shipped_folds")).unwrap();
        for k in 0..10 {
            for f in ["train.jsonl", "test.jsonl"] {
                assert!(split.out_dir.join(format!("fold-{k}/{f}")).is_file());
            }
        }
        let s = crate::data::stats_of(&split.out_dir).unwrap();
        assert_eq!(s.total("fold-3/test") + s.total("fold-3/train"), 60);
        assert!(split.out_dir.join("labels.json").is_file());
    }

    #[test]
    fn fetch_with_a_wrong_pin_writes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("label2id.tsv");
        std::fs::write(&file, "0\t0\n").unwrap();
        let mut fetch = ctx(root.path(), "fetch", &[]);
        let wrong = "a".repeat(64);
        let p = normalized(
            "fetch",
            &format!("{{source: 'path:{}', blake3: {wrong}}}", file.display()),
        );
        let err = run_kind("fetch", &mut fetch, &p).unwrap_err();
        assert!(
            err.contains(&format!(
                "expected {wrong}, actual {}",
                blake3::hash(b"0\t0\n").to_hex()
            )),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&fetch.out_dir).unwrap().count(), 0);
    }

    #[test]
    fn params_are_checked_at_plan_time() {
        let reg = StageRegistry::builtin();
        let normalize = |kind: &str, yaml: &str| {
            let v: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
            reg.get(kind)
                .unwrap()
                .normalize(&v)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(normalize("fetch", "{source: 'ftp://x/y'}")
            .unwrap_err()
            .contains("param `source`"));
        assert!(normalize("fetch", "{source: 'path:x', blake3: abc}")
            .unwrap_err()
            .contains("param `blake3`"));
        assert!(normalize("fetch", "{source: 'path:x', subpath: ../y}")
            .unwrap_err()
            .contains("param `subpath`"));
        assert!(normalize("fetch", "{source: 'path:x', unpak: true}")
            .unwrap_err()
            .contains("unpak"));
        assert!(
            normalize("corpus", "{format: blurb_tsv, files: {train: a.tsv}}")
                .unwrap_err()
                .contains("param `label2id`")
        );
        assert!(normalize("split", "{method: kfold}")
            .unwrap_err()
            .contains("param `k`"));
        assert!(normalize(
            "split",
            "{method: kfold, k: 10, seed: 1, dev_fraction: 0.1}"
        )
        .is_ok());
    }
}
